//! The calling thread's CPUs and priority (the diagnosis pins and renices its probe, kernels
//! and readers), and network namespace.

/// Pins the calling thread to `cpus` (best effort: a thread left unpinned still measures or
/// contends, only less precisely). The probe, the kernels and the memory readers all use it.
pub fn pin_thread(cpus: &[usize]) {
    let mut set = nix::sched::CpuSet::new();
    let mut any = false;
    for &c in cpus {
        any |= set.set(c).is_ok();
    }
    if any {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

/// Sets the calling thread's nice value (threads inherit their creator's: the kernels and
/// memory readers go back to 0 from the probe's -20).
pub fn nice_thread(nice: i32) -> std::io::Result<()> {
    // SAFETY: setpriority on the calling thread (who = 0); no memory involved.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Puts the calling thread in SCHED_FIFO at priority 1; false if refused.
pub fn realtime_thread() -> bool {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: sets this thread's (tid 0) policy from a valid sched_param.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0 }
}

/// Moves the calling thread into the network namespace at `path` (a `/run/netns/NAME` file).
pub fn enter_netns(path: &str) -> nix::Result<()> {
    let f = std::fs::File::open(path)
        .map_err(|e| nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::ENOENT)))?;
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
}

/// Segments the kernel has sent on a TCP socket (`TCP_INFO`'s `tcpi_segs_out`); 0 if it
/// cannot say.
pub fn tcp_segs_out(s: &std::net::TcpStream) -> u64 {
    use std::os::fd::AsRawFd as _;
    // SAFETY: getsockopt(TCP_INFO) into a zeroed tcp_info of the right size.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as u32;
        if libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            &mut info as *mut _ as *mut _,
            &mut len,
        ) != 0
        {
            return 0;
        }
        info.tcpi_segs_out as u64
    }
}
