//! The one door to the kernel: BPF (load, attach, read maps), BTF, /proc, capabilities,
//! the seccomp filter, tracefs, hardware counters (`perf`), and the calling thread's CPUs,
//! priority and namespace (`thread`), rtnetlink (`netlink`), cgroupfs knobs (`cgroupfs`) and the
//! resctrl tree (`resctrlfs`, with its emulated twin in tests). What changes the host is decided
//! and journaled in `actuate`; the calls themselves are here.
//! Everything above this module works on plain data (`SockRecord`, `SlotCounters`, ...).
pub mod bpf;
pub mod btf;
pub mod caps;
pub mod cgroupfs;
pub mod netlink;
pub mod perf;
pub mod procfs;
pub mod rawbpf;
pub mod resctrlfs;
pub mod seccomp;
pub mod thread;
pub mod tracefs;

/// CPU time the calling thread has used, in nanoseconds (CLOCK_THREAD_CPUTIME_ID).
pub fn thread_cpu_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).map_or(0, |t| {
        t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
    })
}
