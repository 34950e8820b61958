//! Map keys and values shared by the eBPF programs (`seer-ebpf`) and the agent (`seer-agent`).
//!
//! Every type is `#[repr(C)]` with explicit padding so both sides agree byte for byte. This is
//! the one place where a map layout is defined; the `user` feature marks the types `aya::Pod`.
#![no_std]

pub mod sample;

/// Services the kernel side tracks at once. A service owns one slot; its ports and processes map
/// to that slot. Bounded by the per-CPU value size limit (32 KiB) of [`Counters`].
pub const MAX_SLOTS: usize = 256;

/// Value stored in `PORT_SLOT[port]` / `TGID_SLOT[tgid]` is `slot + 1`; 0 means "not watched".
pub const SLOT_NONE: u16 = 0;

/// Latency histogram: values below `1 << LAT_SUB_BITS` microseconds get one bucket each; above
/// that every power of two is split into `1 << LAT_SUB_BITS` linear sub-buckets (HDR style,
/// relative error <= 12.5 %). Values past 2^26 us (67 s) land in the last bucket.
pub const LAT_SUB_BITS: u32 = 3;
pub const LAT_MAX_OCTAVE: u32 = 26;
pub const LAT_BUCKETS: usize = ((LAT_MAX_OCTAVE - LAT_SUB_BITS + 2) << LAT_SUB_BITS) as usize;

/// Bucket index of a latency in microseconds.
#[inline(always)]
pub fn lat_bucket(us: u64) -> usize {
    let sub = 1u64 << LAT_SUB_BITS;
    if us < sub {
        return us as usize;
    }
    let mut octave = 63 - us.leading_zeros();
    let mut v = us;
    if octave > LAT_MAX_OCTAVE {
        octave = LAT_MAX_OCTAVE;
        v = (1u64 << (LAT_MAX_OCTAVE + 1)) - 1;
    }
    let s = (v >> (octave - LAT_SUB_BITS)) & (sub - 1);
    (((octave - LAT_SUB_BITS + 1) as u64) * sub + s) as usize
}

/// Largest latency (microseconds) that falls in `bucket`: percentiles report this value, as
/// HdrHistogram's "highest equivalent value" does, so a quantile never under-states a tail.
pub fn lat_bucket_upper_us(bucket: usize) -> u64 {
    let sub = 1usize << LAT_SUB_BITS;
    if bucket < sub {
        return bucket as u64;
    }
    let octave = (bucket / sub) as u32 + LAT_SUB_BITS - 1;
    let s = (bucket % sub) as u64;
    let width = 1u64 << (octave - LAT_SUB_BITS);
    (1u64 << octave) + (s + 1) * width - 1
}

/// Quantile from a histogram (counts per bucket): the upper bound of the bucket that holds it.
pub fn quantile_us(hist: &[u64; LAT_BUCKETS], q: f64) -> u64 {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return 0;
    }
    // ceil(total * q), at least 1 (no_std: no f64::ceil).
    let x = total as f64 * q;
    let mut rank = x as u64;
    if (rank as f64) < x {
        rank += 1;
    }
    let rank = rank.max(1);
    let mut seen = 0;
    for (b, &n) in hist.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return lat_bucket_upper_us(b);
        }
    }
    lat_bucket_upper_us(LAT_BUCKETS - 1)
}

/// Per-service counters, summed over CPUs by the agent. Monotonic: the agent takes deltas.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotCounters {
    /// TCP packets / bytes arriving on a watched interface for one of the service's ports
    /// (the opt-in tc ingress counter; by default the agent sums its sockets' `segs_in` and
    /// `bytes_received` instead, once per tick).
    pub nic_rx_pkts: u64,
    pub nic_rx_bytes: u64,
    /// `epoll_wait`/`epoll_pwait` calls returned, events handed to the app, and time blocked.
    pub epoll_calls: u64,
    pub epoll_events: u64,
    pub epoll_wait_ns: u64,
    /// Request turns on server-side connections: started (first bytes in after a reply),
    /// completed (first bytes out), aborted (connection closed while a turn was open).
    pub req_started: u64,
    pub req_completed: u64,
    pub req_aborted: u64,
}

/// The single entry of the per-CPU array `COUNTERS`: one [`SlotCounters`] per slot, so the agent
/// reads all services on all CPUs with one syscall per tick.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Counters {
    pub slots: [SlotCounters; MAX_SLOTS],
}

/// Per-slot request latency histogram (per-CPU array `LATENCY`, index = slot).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LatencyHist {
    pub buckets: [u32; LAT_BUCKETS],
}

/// A thread blocked in epoll_wait (hash `EPOLL_START`, key = pid_tgid): since when, which slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Turn {
    pub start_ns: u64,
    pub slot: u32,
    pub _pad: u32,
}

/// Per-socket state kept in socket-local storage (`SOCKS`): the open request turn of a
/// server-side connection. A socket that has this storage is also what the per-tick socket
/// iterator visits, so registering a socket here is what makes it observed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SockState {
    pub start_ns: u64,
    pub slot: u32,
    /// 1 while a turn is open (bytes in, no reply yet).
    pub open: u32,
}

/// A client connect() seen in `inet_sock_set_state` (hash `CONNECTS`): who dialled which
/// address and port. The address tells a local callee (a service on this host) from a remote
/// one that merely uses the same port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConnectKey {
    pub tgid: u32,
    /// Destination port, host byte order.
    pub dport: u16,
    /// `AF_INET` = 2 or `AF_INET6` = 10; 0 when the address could not be read.
    pub family: u8,
    pub _pad: u8,
    /// Destination address in network order: IPv4 in the first 4 bytes, IPv6 in all 16.
    pub daddr: [u8; 16],
}

pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;

/// Things the kernel side could not record, so a loss is counted instead of silent
/// (per-CPU array `DROPS`, one entry).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Drops {
    /// Socket storage (`SOCKS`) could not be had: a request turn went unrecorded.
    pub turns_full: u64,
    /// `CONNECTS` was full: a connect() went unrecorded.
    pub connects_full: u64,
    /// `EPOLL_START` was full: an epoll_wait's blocked time went unrecorded.
    pub epoll_full: u64,
    /// `bpf_seq_write` refused a socket record in the TCP iterator.
    pub iter_write: u64,
}

/// One TCP socket as the `iter/tcp` program writes it into the iterator's output.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SockRecord {
    /// Socket inode (`/proc/<pid>/fd/* -> socket:[inode]`): ties the socket to processes.
    pub inode: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// Bytes received but not yet read by the application (`rcv_nxt - copied_seq`).
    pub rx_queue: u32,
    /// Bytes written but not yet acknowledged (`write_seq - snd_una`).
    pub tx_queue: u32,
    /// Jiffies of the last data received / sent (`icsk_ack.lrcvtime`, `lsndtime`).
    pub lrcvtime: u32,
    pub lsndtime: u32,
    /// Listening sockets: connections waiting in accept() and the backlog limit.
    pub ack_backlog: u32,
    pub max_ack_backlog: u32,
    /// `jiffies` when the record was taken (low 32 bits).
    pub now_jiffies: u32,
    pub uid: u32,
    /// Segments received (`tcp_sock.segs_in`, RFC 4898 tcpEStatsPerfSegsIn; wraps): with
    /// `bytes_received`, NIC arrivals per service read once per tick instead of per packet.
    pub segs_in: u32,
    pub lport: u16,
    pub rport: u16,
    /// TCP state (`TCP_ESTABLISHED` = 1, `TCP_LISTEN` = 10, ...).
    pub state: u8,
    /// `AF_INET` = 2 or `AF_INET6` = 10.
    pub family: u8,
    pub _pad: [u8; 2],
    /// The process holding the socket, in the walks over processes' files (`iter/task_file`);
    /// 0 in the walks over sockets.
    pub tgid: u32,
}

pub const TCP_ESTABLISHED: u8 = 1;
pub const TCP_SYN_SENT: u8 = 2;
pub const TCP_CLOSE: u8 = 7;
pub const TCP_LISTEN: u8 = 10;

/// Kernel struct offsets resolved from the running kernel's BTF at load time and passed to the
/// programs as the global `OFFSETS` (aya emits no CO-RE relocations). Byte offsets.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    // struct sock (struct sock_common is its first member, at offset 0)
    pub skc_family: u32,
    pub skc_state: u32,
    pub skc_num: u32,
    pub skc_dport: u32,
    pub sk_protocol: u32,
    pub sk_ack_backlog: u32,
    pub sk_max_ack_backlog: u32,
    pub sk_socket: u32,
    // struct socket -> struct file -> struct inode
    pub socket_file: u32,
    pub file_f_inode: u32,
    pub inode_i_ino: u32,
    // struct tcp_sock
    pub tcp_rcv_nxt: u32,
    pub tcp_copied_seq: u32,
    pub tcp_write_seq: u32,
    pub tcp_snd_una: u32,
    pub tcp_bytes_received: u32,
    pub tcp_bytes_sent: u32,
    pub tcp_lsndtime: u32,
    /// `inet_conn.icsk_ack.lrcvtime`, from the start of `struct tcp_sock`.
    pub tcp_lrcvtime: u32,
    /// `skc_daddr` (IPv4 peer) and `skc_v6_daddr` (IPv6 peer; 0 on a kernel without IPv6).
    pub skc_daddr: u32,
    pub skc_v6_daddr: u32,
    /// `sock.sk_type` (SOCK_STREAM = 1): a raw socket may carry IPPROTO_TCP too.
    pub sk_type: u32,
    // struct file -> struct socket -> struct sock, and the inode's mode (is it a socket?):
    // the path `iter/task_file` takes from a watched process's descriptors to its sockets.
    pub file_private_data: u32,
    pub inode_i_mode: u32,
    pub socket_sk: u32,
    /// `tcp_sock.segs_in`: segments received, for per-tick NIC arrivals.
    pub tcp_segs_in: u32,
    /// `task_struct.tgid`: which process holds a socket, in the walk over every process's
    /// files (discovery's socket owners).
    pub task_tgid: u32,
    pub _pad: u32,
}

impl KernelOffsets {
    /// All zero: what the eBPF object holds until the agent sets the global at load time.
    pub const ZERO: Self = Self {
        skc_family: 0,
        skc_state: 0,
        skc_num: 0,
        skc_dport: 0,
        sk_protocol: 0,
        sk_ack_backlog: 0,
        sk_max_ack_backlog: 0,
        sk_socket: 0,
        socket_file: 0,
        file_f_inode: 0,
        inode_i_ino: 0,
        tcp_rcv_nxt: 0,
        tcp_copied_seq: 0,
        tcp_write_seq: 0,
        tcp_snd_una: 0,
        tcp_bytes_received: 0,
        tcp_bytes_sent: 0,
        tcp_lsndtime: 0,
        tcp_lrcvtime: 0,
        skc_daddr: 0,
        skc_v6_daddr: 0,
        sk_type: 0,
        file_private_data: 0,
        inode_i_mode: 0,
        socket_sk: 0,
        tcp_segs_in: 0,
        task_tgid: 0,
        _pad: 0,
    };
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: every type below is #[repr(C)], Copy, made only of integers and arrays of
    // integers, with explicit padding fields: any bit pattern is a valid value.
    unsafe impl aya::Pod for SlotCounters {}
    unsafe impl aya::Pod for Counters {}
    unsafe impl aya::Pod for LatencyHist {}
    unsafe impl aya::Pod for Turn {}
    unsafe impl aya::Pod for SockState {}
    unsafe impl aya::Pod for ConnectKey {}
    unsafe impl aya::Pod for Drops {}
    unsafe impl aya::Pod for SockRecord {}
    unsafe impl aya::Pod for KernelOffsets {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_bounded() {
        let mut last = 0;
        for us in 0..(1u64 << 20) {
            let b = lat_bucket(us);
            assert!(b >= last, "bucket of {us} went back");
            assert!(b < LAT_BUCKETS);
            assert!(lat_bucket_upper_us(b) >= us, "upper bound below value {us}");
            last = b;
        }
        assert_eq!(lat_bucket(u64::MAX), LAT_BUCKETS - 1);
    }

    #[test]
    fn bucket_upper_bound_is_within_an_eighth() {
        for us in [9u64, 100, 1_000, 20_000, 20_100, 1_000_000] {
            let up = lat_bucket_upper_us(lat_bucket(us));
            assert!(up >= us && up <= us + us / 8 + 1, "{us} -> {up}");
        }
        assert_eq!(lat_bucket_upper_us(lat_bucket(20_100)), 20_479);
    }

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<SlotCounters>(), 64);
        assert_eq!(core::mem::size_of::<SockRecord>(), 72);
        assert_eq!(core::mem::size_of::<Turn>(), 16);
        assert_eq!(core::mem::size_of::<ConnectKey>(), 24);
        assert!(core::mem::size_of::<Counters>() <= 32 * 1024);
        assert_eq!(core::mem::size_of::<KernelOffsets>(), 28 * 4);
    }
}
