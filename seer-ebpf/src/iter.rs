//! Socket iterators: how queue gauges are read at no per-packet cost.
//!
//! - `iter/tcp` walks every TCP socket of the agent's network namespace (the whole established
//!   hash: a fixed ~1.5 ms here even with no sockets). The agent runs it at start and at each
//!   discovery round; it registers listeners and watched connections in `SOCKS`.
//! - `iter/bpf_sk_storage_map` over `SOCKS` visits only the registered sockets: this is the
//!   per-tick walk, costing per observed socket, not per hash bucket.
//!
//! Both write one `SockRecord` per listening socket and per connection whose local or remote
//! port is watched (receive queue, accept backlog, unacknowledged bytes, last-in / last-out).
use core::ffi::c_void;

use aya_ebpf::helpers::generated::{
    bpf_jiffies64, bpf_seq_write, bpf_skc_to_tcp_sock, bpf_sock_from_file,
};
use seer_common::{AF_INET, AF_INET6, SockRecord, TCP_LISTEN};

use crate::maps::{drops, load_btf, offset, port_slot, read_kernel, sock_state};

/// `struct bpf_iter__tcp { struct bpf_iter_meta *meta; struct sock_common *sk_common; uid_t uid; }`
/// and `struct bpf_iter_meta { struct seq_file *seq; ... }`: fixed by the iterator ABI.
#[repr(C)]
struct IterTcpCtx {
    meta: *const *mut c_void,
    sk_common: *mut c_void,
    uid: u32,
}

/// `struct bpf_iter__bpf_sk_storage_map { meta; struct bpf_map *map; struct sock *sk; void *value; }`
#[repr(C)]
struct IterSkStorageCtx {
    meta: *const *mut c_void,
    map: *mut c_void,
    sk: *mut c_void,
    value: *mut c_void,
}

/// `struct bpf_iter__task_file { meta; struct task_struct *task; u32 fd; struct file *file; }`
#[repr(C)]
struct IterTaskFileCtx {
    meta: *const *mut c_void,
    task: *mut c_void,
    fd: u32,
    file: *mut c_void,
}

const S_IFMT: u16 = 0o170000;
const S_IFSOCK: u16 = 0o140000;
const IPPROTO_TCP: u16 = 6;
const SOCK_STREAM: u16 = 1;

/// Writes the record of one socket (if it is one seer reports). Returns the `tcp_sock` when it
/// was reported, so the caller can register it.
#[inline(always)]
fn emit(meta: *const *mut c_void, skc: *mut c_void, uid: u32) -> Option<*const u8> {
    // SAFETY: `bpf_skc_to_tcp_sock` accepts any sock_common and returns NULL for sockets that
    // are not full TCP sockets (TIME_WAIT, NEW_SYN_RECV).
    let tp = unsafe { bpf_skc_to_tcp_sock(skc) } as *const u8;
    if tp.is_null() {
        return None;
    }
    // A typed `tcp_sock`: every field, and the socket -> file -> inode chain, is a direct load
    // rather than a `bpf_probe_read_kernel` call per field (those were most of the agent's CPU
    // with thousands of sockets).
    emit_tcp::<Direct>(meta, tp, uid, 0)
}

/// How a program reads a field: a direct load the verifier checks against the kernel's BTF
/// (the pointer's type is known), or a `bpf_probe_read_kernel` call (it is not).
trait Read {
    fn at<T: Copy>(base: *const u8, off: usize) -> T;
}

/// Direct load: a pointer from `bpf_skc_to_tcp_sock` / `bpf_sock_from_file` or a typed member.
struct Direct;
impl Read for Direct {
    #[inline(always)]
    fn at<T: Copy>(base: *const u8, off: usize) -> T {
        load_btf(base, off)
    }
}

/// A helper read per field, for pointers the verifier does not know the type of.
struct Probed;
impl Read for Probed {
    #[inline(always)]
    fn at<T: Copy>(base: *const u8, off: usize) -> T {
        read_kernel(base, off)
    }
}

/// The record of the TCP socket `sk` if seer reports it (a listener, or a watched port at
/// either end): `S` reads its `struct sock` fields, `T` its `tcp_sock` fields, `inode` is
/// asked only for a socket that is reported.
#[inline(always)]
fn record<S: Read, T: Read>(
    sk: *const u8,
    inode: impl FnOnce() -> u64,
    uid: u32,
    tgid: u32,
) -> Option<SockRecord> {
    let state: u8 = S::at(sk, offset!(skc_state));
    let lport: u16 = S::at(sk, offset!(skc_num));
    let rport = u16::from_be(S::at::<u16>(sk, offset!(skc_dport)));
    if state != TCP_LISTEN && port_slot(lport).is_none() && port_slot(rport).is_none() {
        return None;
    }
    let listen = state == TCP_LISTEN;
    let rcv_nxt: u32 = T::at(sk, offset!(tcp_rcv_nxt));
    let copied: u32 = T::at(sk, offset!(tcp_copied_seq));
    let write_seq: u32 = T::at(sk, offset!(tcp_write_seq));
    let snd_una: u32 = T::at(sk, offset!(tcp_snd_una));
    Some(SockRecord {
        inode: inode(),
        bytes_received: T::at(sk, offset!(tcp_bytes_received)),
        bytes_sent: T::at(sk, offset!(tcp_bytes_sent)),
        rx_queue: if listen {
            0
        } else {
            rcv_nxt.wrapping_sub(copied)
        },
        tx_queue: if listen {
            0
        } else {
            write_seq.wrapping_sub(snd_una)
        },
        lrcvtime: T::at(sk, offset!(tcp_lrcvtime)),
        lsndtime: T::at(sk, offset!(tcp_lsndtime)),
        ack_backlog: S::at(sk, offset!(sk_ack_backlog)),
        max_ack_backlog: S::at(sk, offset!(sk_max_ack_backlog)),
        // SAFETY: reads the jiffies counter; no preconditions.
        now_jiffies: unsafe { bpf_jiffies64() } as u32,
        uid,
        segs_in: T::at(sk, offset!(tcp_segs_in)),
        lport,
        rport,
        state,
        family: S::at::<u16>(sk, offset!(skc_family)) as u8,
        _pad: [0; 2],
        tgid,
    })
}

/// The socket -> file -> inode chain read with `R`; 0 where a link is missing.
#[inline(always)]
fn inode_of<R: Read>(sk: *const u8) -> u64 {
    let socket: *const u8 = R::at(sk, offset!(sk_socket));
    if socket.is_null() {
        return 0;
    }
    let file: *const u8 = R::at(socket, offset!(socket_file));
    if file.is_null() {
        return 0;
    }
    file_inode::<R>(file)
}

/// A file's inode number read with `R`; 0 where it has none.
#[inline(always)]
fn file_inode<R: Read>(file: *const u8) -> u64 {
    let ino: *const u8 = R::at(file, offset!(file_f_inode));
    if ino.is_null() {
        return 0;
    }
    R::at(ino, offset!(inode_i_ino))
}

/// Whether `sk` (fields read with `R`) is a full TCP socket, with a `struct tcp_sock` behind
/// it: MPTCP's own socket has IPPROTO_MPTCP; a raw socket may say IPPROTO_TCP but is not
/// SOCK_STREAM.
#[inline(always)]
fn is_tcp_stream<R: Read>(sk: *const u8) -> bool {
    let family: u16 = R::at(sk, offset!(skc_family));
    let protocol: u16 = R::at(sk, offset!(sk_protocol));
    let kind: u16 = R::at(sk, offset!(sk_type));
    (family == AF_INET as u16 || family == AF_INET6 as u16)
        && protocol == IPPROTO_TCP
        && kind == SOCK_STREAM
}

/// Writes the record of the full TCP socket `tp` (fields read with `R`) if seer reports it;
/// returns `tp` when it did.
#[inline(always)]
fn emit_tcp<R: Read>(
    meta: *const *mut c_void,
    tp: *const u8,
    uid: u32,
    tgid: u32,
) -> Option<*const u8> {
    let rec = record::<R, R>(tp, || inode_of::<R>(tp), uid, tgid)?;
    write_record(meta, &rec);
    Some(tp)
}

#[inline(always)]
fn write_record(meta: *const *mut c_void, rec: &SockRecord) {
    // SAFETY: `meta` points at the iterator's bpf_iter_meta, whose first field is the seq_file.
    let seq = unsafe { *meta };
    // SAFETY: `rec` lives on the caller's stack for the duration of the call; the size is its own.
    let r = unsafe {
        bpf_seq_write(
            seq as *mut _,
            rec as *const SockRecord as *const c_void,
            core::mem::size_of::<SockRecord>() as u32,
        )
    };
    if r != 0
        && let Some(d) = drops()
    {
        d.iter_write += 1;
    }
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/tcp")]
pub fn seer_sock_iter(ctx: *mut c_void) -> i32 {
    // SAFETY: the kernel passes a `bpf_iter__tcp` context; its fields are read-only pointers.
    let ctx = unsafe { &*(ctx as *const IterTcpCtx) };
    if ctx.sk_common.is_null() {
        return 0; // the final call after the last socket
    }
    if let Some(tp) = emit(ctx.meta, ctx.sk_common, ctx.uid) {
        // Register it for the per-tick walk (a no-op when it already is).
        let _ = sock_state(tp, true);
    }
    0
}

/// The same walk without registering sockets, for kernels whose verifier refuses socket
/// storage in iterators (before 5.11): every tick then walks every socket.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/tcp")]
pub fn seer_sock_iter_plain(ctx: *mut c_void) -> i32 {
    // SAFETY: as in `seer_sock_iter`.
    let ctx = unsafe { &*(ctx as *const IterTcpCtx) };
    if !ctx.sk_common.is_null() {
        let _ = emit(ctx.meta, ctx.sk_common, ctx.uid);
    }
    0
}

/// Sockets held by processes: linked to every process, discovery's socket owners (which
/// process holds which listener and client socket, in place of reading every /proc/PID/fd);
/// linked to one watched process (`bpf_iter_link_info.task.pid`, 6.1+), the per-tick walk on
/// kernels that refuse map-element iterators (some 6.18 builds refuse every one with EPERM),
/// costing per descriptor of the watched processes, not per bucket of the host's established
/// hash. A socket shared by several processes (a listener inherited by workers) is reported
/// once per process: the agent keeps one record per inode.
///
/// Typed pointers (5.11+: `bpf_sock_from_file`): the socket comes from a helper that returns a
/// BTF-typed pointer, the file's inode and the `struct sock` fields are direct loads, and only
/// the tcp_sock fields are helper reads (the kernel marks a socket's `sk` untrusted, so it
/// cannot become a typed tcp_sock). `seer_file_iter_compat` is the same walk for older kernels.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task_file")]
pub fn seer_file_iter(ctx: *mut c_void) -> i32 {
    // SAFETY: the kernel passes a `bpf_iter__task_file` context; its fields are read-only.
    let ctx = unsafe { &*(ctx as *const IterTaskFileCtx) };
    let task = ctx.task as *const u8;
    if task.is_null() {
        return 0;
    }
    let tgid: u32 = load_btf(task, offset!(task_tgid));
    let file = ctx.file;
    if file.is_null() {
        return 0;
    }
    let _ = ctx.fd;
    // SAFETY: `file` is the iterator's (checked) file; the helper returns NULL for a file that
    // is not a socket.
    let socket = unsafe { bpf_sock_from_file(file as *mut _) } as *const u8;
    if socket.is_null() {
        return 0;
    }
    let sk: *const u8 = load_btf(socket, offset!(socket_sk));
    if sk.is_null() {
        return 0;
    }
    if !is_tcp_stream::<Direct>(sk) {
        return 0;
    }
    let file = file as *const u8;
    let Some(rec) = record::<Direct, Probed>(sk, || file_inode::<Direct>(file), 0, tgid) else {
        return 0;
    };
    write_record(ctx.meta, &rec);
    0
}

/// `seer_file_iter` for kernels without `bpf_sock_from_file` (5.10): every field, the file's
/// mode and private data included, is a helper read.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task_file")]
pub fn seer_file_iter_compat(ctx: *mut c_void) -> i32 {
    // SAFETY: the kernel passes a `bpf_iter__task_file` context; its fields are read-only.
    let ctx = unsafe { &*(ctx as *const IterTaskFileCtx) };
    // Each pointer checked on its own, then used: the verifier refuses arithmetic on a
    // pointer it has not seen checked (a combined `a || b` test lost that).
    let task = ctx.task as *const u8;
    if task.is_null() {
        return 0;
    }
    let tgid: u32 = read_kernel(task, offset!(task_tgid));
    let file = ctx.file as *const u8;
    if file.is_null() {
        return 0;
    }
    let _ = ctx.fd;
    let inode: *const u8 = read_kernel(file, offset!(file_f_inode));
    if inode.is_null() {
        return 0;
    }
    let mode: u16 = read_kernel(inode, offset!(inode_i_mode));
    if mode & S_IFMT != S_IFSOCK {
        return 0;
    }
    // A socket file's private data is its `struct socket`.
    let socket: *const u8 = read_kernel(file, offset!(file_private_data));
    if socket.is_null() {
        return 0;
    }
    let sk: *const u8 = read_kernel(socket, offset!(socket_sk));
    if sk.is_null() {
        return 0;
    }
    if !is_tcp_stream::<Probed>(sk) {
        return 0;
    }
    let Some(rec) =
        record::<Probed, Probed>(sk, || read_kernel(inode, offset!(inode_i_ino)), 0, tgid)
    else {
        return 0;
    };
    write_record(ctx.meta, &rec);
    0
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/bpf_sk_storage_map")]
pub fn seer_sk_iter(ctx: *mut c_void) -> i32 {
    // SAFETY: the kernel passes a `bpf_iter__bpf_sk_storage_map` context.
    let ctx = unsafe { &*(ctx as *const IterSkStorageCtx) };
    if ctx.sk.is_null() {
        return 0;
    }
    let _ = (ctx.map, ctx.value);
    let _ = emit(ctx.meta, ctx.sk, 0);
    0
}
