//! CPU work that costs what it says: spins until the thread has *run* for the given time, so a
//! CPU quota or a neighbour stretches it in wall time as it would a real computation.
use std::time::Duration;

/// CPU time consumed by the calling thread.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Burns `us` microseconds of this thread's CPU time.
pub fn spin_cpu(us: u64) {
    if us == 0 {
        return;
    }
    let end = thread_cpu_time() + Duration::from_micros(us);
    let mut x = 0u64;
    while thread_cpu_time() < end {
        for i in 0..64u64 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
        }
    }
    std::hint::black_box(x);
}
