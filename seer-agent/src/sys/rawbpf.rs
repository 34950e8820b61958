//! The few bpf(2) commands aya 0.14 does not expose the way the sampler needs them: map reads
//! into a caller-owned buffer (no allocation per tick) and a TCP iterator link that can create a
//! fresh iterator instance every tick.
use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
};

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_ITER_CREATE: libc::c_long = 33;
const BPF_TRACE_ITER: u32 = 28;

/// `union bpf_attr`, large enough for every command used here (the kernel reads `size` bytes).
#[repr(C, align(8))]
struct Attr([u64; 8]);

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, initialised bpf_attr-sized buffer that outlives the call; the
    // pointers inside it (set by the callers) point to live buffers of the sizes the map expects.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut Attr,
            std::mem::size_of::<Attr>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn map_attr(fd: RawFd, key: *const u8, value: *const u8, flags: u64) -> Attr {
    let mut a = Attr([0; 8]);
    a.0[0] = fd as u32 as u64;
    a.0[1] = key as u64;
    a.0[2] = value as u64;
    a.0[3] = flags;
    a
}

/// Looks `key` up into `value`. Ok(false) when the key is absent.
///
/// # Safety
/// The kernel reads `key` for the map's key size and writes the map's value size into
/// `value` (times the number of possible CPUs, each rounded up to 8 bytes, for per-CPU maps)
/// without knowing the slices' lengths: `key` and `value` must be at least that long, or it
/// reads or writes past them.
pub unsafe fn lookup(map: BorrowedFd<'_>, key: &[u8], value: &mut [u8]) -> io::Result<bool> {
    let mut a = map_attr(map.as_raw_fd(), key.as_ptr(), value.as_mut_ptr(), 0);
    match bpf(BPF_MAP_LOOKUP_ELEM, &mut a) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Sets `key` to `value`.
///
/// # Safety
/// The kernel reads the map's key and value sizes from `key` and `value`: they must be at
/// least that long.
pub unsafe fn update(map: BorrowedFd<'_>, key: &[u8], value: &[u8]) -> io::Result<()> {
    let mut a = map_attr(map.as_raw_fd(), key.as_ptr(), value.as_ptr(), 0);
    bpf(BPF_MAP_UPDATE_ELEM, &mut a).map(drop)
}

/// Deletes `key`; Ok(false) when it was not there.
///
/// # Safety
/// The kernel reads the map's key size from `key`: it must be at least that long.
pub unsafe fn delete(map: BorrowedFd<'_>, key: &[u8]) -> io::Result<bool> {
    let mut a = map_attr(map.as_raw_fd(), key.as_ptr(), std::ptr::null(), 0);
    match bpf(BPF_MAP_DELETE_ELEM, &mut a) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The key after `key` (or the first key when `key` is None). Ok(false) at the end.
///
/// # Safety
/// The kernel reads the map's key size from `key` and writes as much into `next`: both must
/// be at least that long.
pub unsafe fn next_key(
    map: BorrowedFd<'_>,
    key: Option<&[u8]>,
    next: &mut [u8],
) -> io::Result<bool> {
    let k = key.map_or(std::ptr::null(), |k| k.as_ptr());
    let mut a = map_attr(map.as_raw_fd(), k, next.as_mut_ptr(), 0);
    match bpf(BPF_MAP_GET_NEXT_KEY, &mut a) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Links a loaded `iter/...` program; the link stays attached while the returned fd is open.
/// `map` is the map a map iterator (e.g. `bpf_sk_storage_map`) walks.
pub fn iter_link_create(prog: BorrowedFd<'_>, map: Option<BorrowedFd<'_>>) -> io::Result<OwnedFd> {
    let mut a = Attr([0; 8]);
    // union bpf_iter_link_info { struct { u32 map_fd; } map; ... }
    let info: [u32; 4] = [map.map_or(0, |m| m.as_raw_fd() as u32), 0, 0, 0];
    // struct { u32 prog_fd; u32 target_fd; u32 attach_type; u32 flags;
    //          u64 iter_info; u32 iter_info_len; ... }
    a.0[0] = prog.as_raw_fd() as u32 as u64;
    a.0[1] = BPF_TRACE_ITER as u64;
    if map.is_some() {
        a.0[2] = info.as_ptr() as u64;
        a.0[3] = std::mem::size_of_val(&info) as u64;
    }
    let fd = bpf(BPF_LINK_CREATE, &mut a)?;
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// An `iter/task_*` link that visits only the process `pid` (its threads and open files):
/// `bpf_iter_link_info.task.pid`, kernels 6.1 and later (older ones ignore it and visit every
/// process, so callers check the kernel's BTF first).
pub fn iter_link_create_task(prog: BorrowedFd<'_>, pid: u32) -> io::Result<OwnedFd> {
    let mut a = Attr([0; 8]);
    // union bpf_iter_link_info { ...; struct { u32 tid; u32 pid; u32 pid_fd; } task; } (16 bytes)
    let info: [u32; 4] = [0, pid, 0, 0];
    a.0[0] = prog.as_raw_fd() as u32 as u64;
    a.0[1] = BPF_TRACE_ITER as u64;
    a.0[2] = info.as_ptr() as u64;
    a.0[3] = std::mem::size_of_val(&info) as u64;
    let fd = bpf(BPF_LINK_CREATE, &mut a)?;
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// A fresh iterator instance: reading it to EOF runs the program over every object once.
pub fn iter_create(link: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let mut a = Attr([0; 8]);
    a.0[0] = link.as_raw_fd() as u32 as u64;
    let fd = bpf(BPF_ITER_CREATE, &mut a)?;
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Views a plain-old-data value as bytes.
pub fn bytes_of<T: aya::Pod>(v: &T) -> &[u8] {
    // SAFETY: T is Pod (no padding with undefined contents, any bit pattern valid).
    unsafe { std::slice::from_raw_parts(v as *const T as *const u8, std::mem::size_of::<T>()) }
}
