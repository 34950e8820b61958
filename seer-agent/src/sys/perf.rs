//! Hardware counters: `perf_event_open(2)`.
use std::{
    io,
    os::fd::{FromRawFd as _, OwnedFd},
};

/// `struct perf_event_attr` as of PERF_ATTR_SIZE_VER0 (64 bytes), which every kernel accepts.
#[repr(C)]
#[derive(Default)]
pub struct PerfEventAttr {
    pub type_: u32,
    pub size: u32,
    pub config: u64,
    pub sample_period: u64,
    pub sample_type: u64,
    pub read_format: u64,
    /// Bit flags: disabled (0), inherit (1), exclude_kernel (5), exclude_hv (6).
    pub flags: u64,
    pub wakeup_events: u32,
    pub bp_type: u32,
    pub config1: u64,
}

/// Opens a counter (`pid`: a process, or with PERF_FLAG_PID_CGROUP a cgroup directory's fd;
/// `cpu`: -1 for any).
pub fn perf_event_open(
    attr: &PerfEventAttr,
    pid: i32,
    cpu: i32,
    flags: u64,
) -> io::Result<OwnedFd> {
    // SAFETY: attr is a valid, initialized perf_event_attr whose size field matches its
    // layout; the other arguments are plain integers. The kernel does not keep the pointer.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr as *const PerfEventAttr,
            pid,
            cpu,
            -1i32,
            flags,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the syscall returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
