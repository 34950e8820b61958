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

/// A per-service buffer that requests walk (`work_kb`): so a neighbour that thrashes the LLC,
/// saturates memory bandwidth or squeezes memory slows the service the way it slows a real one
/// that touches megabytes per request.
pub struct WorkingSet {
    lines: Vec<std::sync::atomic::AtomicU64>,
}

/// Words per 64-byte cache line.
const LINE_WORDS: usize = 8;

impl WorkingSet {
    /// Allocates `kb` KiB and touches every page (resident from the start).
    pub fn new(kb: u64) -> Self {
        let words = (kb as usize * 1024 / 8).max(LINE_WORDS);
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let lines = (0..words)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                std::sync::atomic::AtomicU64::new(x)
            })
            .collect();
        Self { lines }
    }

    pub fn kb(&self) -> u64 {
        (self.lines.len() * 8 / 1024) as u64
    }

    /// Touches `kb` KiB worth of cache lines at random: each line's address depends on the
    /// value read from the previous one (a dependent chain, so every miss costs its full
    /// latency and the prefetcher cannot help), and each line is written back (dirty).
    pub fn touch(&self, kb: u64, seed: u64) -> u64 {
        use std::sync::atomic::Ordering::Relaxed;
        let n_lines = self.lines.len() / LINE_WORDS;
        if kb == 0 || n_lines == 0 {
            return 0;
        }
        let touches = kb as usize * 1024 / 64;
        let mut x = seed | 1;
        let mut acc = 0u64;
        for _ in 0..touches {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = ((x ^ acc) as usize % n_lines) * LINE_WORDS;
            let v = self.lines[i].load(Relaxed);
            self.lines[i].store(v.wrapping_add(1), Relaxed);
            acc = acc.wrapping_add(v);
        }
        std::hint::black_box(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn working_set_touches_what_it_says() {
        let ws = WorkingSet::new(1024);
        assert_eq!(ws.kb(), 1024);
        let before: u64 = ws
            .lines
            .iter()
            .map(|l| l.load(std::sync::atomic::Ordering::Relaxed))
            .fold(0, u64::wrapping_add);
        ws.touch(64, 42);
        let after: u64 = ws
            .lines
            .iter()
            .map(|l| l.load(std::sync::atomic::Ordering::Relaxed))
            .fold(0, u64::wrapping_add);
        // 64 KiB = 1024 line writes, each +1.
        assert_eq!(after.wrapping_sub(before), 1024);
        assert_eq!(ws.touch(0, 1), 0);
    }
}
