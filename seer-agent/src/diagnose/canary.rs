//! A canary for the memory hierarchy, for hosts without hardware counters: how long one load
//! takes from a working set that fits the private L2, one that fits the shared LLC, and one
//! that fits no cache (random pointer chases, timed in the canary thread's own CPU time, so
//! that time-sharing the CPU does not count), on the culprit's CPUs.
//!
//! The canary calibrates itself: on a quiet host an LLC-sized chase costs a small part of the
//! way from an L2 hit to a DRAM miss; when a neighbour thrashes the LLC, the LLC-sized chase
//! misses too and costs most of a DRAM access. `llc_pressure` = (t_llc - t_l2) / (t_dram -
//! t_l2) is that position, without needing to know what this host's latencies "should" be.
//! The DRAM chase's own latency rises with memory-bandwidth load (loaded latency), and the
//! streaming read rate (bytes per CPU-second) falls with it; both are reported, and only the
//! LLC position is self-calibrated.
//!
//! **Not used by the diagnosis**: on the 2-vCPU EPYC VM this was built on (32 MiB L3 per
//! `lscpu`, shared with other tenants), a 4 MiB chase in huge pages already pays ~70% of a DRAM
//! miss on a quiet host, and 85% with a quarter of the L3, the same as with a cache or memory
//! bandwidth hog running (`canary_readings` below prints it): the LLC this VM really gets is
//! too small and too shared for the canary to tell anything. Kept, with that measurement, for
//! hosts with a real LLC (a bare-metal or dedicated-core instance) to calibrate.
use std::{hint::black_box, time::Duration};

use serde::{Deserialize, Serialize};

use super::microbench::CacheSizes;

/// Median per-load latencies (ns) and what they say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CanaryReading {
    pub l2_ns: f64,
    pub llc_ns: f64,
    pub dram_ns: f64,
    /// (llc - l2) / (dram - l2), 0 = LLC hits like L2, 1 = LLC-sized set misses like DRAM.
    pub llc_pressure: f64,
    /// Sequential read rate over the DRAM-sized buffer, GB per CPU-second of the canary.
    pub stream_gb_s: f64,
    /// Rounds measured.
    pub rounds: u32,
}

/// Line-granular random cyclic chains (one `usize` "next" pointer per 64-byte line), in
/// transparent huge pages where the kernel gives them: with 4 KiB pages a random chase over
/// megabytes misses the TLB on most loads, and page walks, not the caches, would set the time.
pub struct Canary {
    l2: (HugeBuf, usize),
    llc: (HugeBuf, usize),
    dram: (HugeBuf, usize),
}

/// An anonymous mapping advised to use huge pages.
pub struct HugeBuf {
    ptr: *mut usize,
    len: usize,
    bytes: usize,
}

// SAFETY: HugeBuf owns its mapping exclusively, like a Vec.
unsafe impl Send for HugeBuf {}
// SAFETY: shared access is read-only (`Deref` to a slice).
unsafe impl Sync for HugeBuf {}

impl HugeBuf {
    fn new(words: usize) -> HugeBuf {
        const HUGE: usize = 2 << 20;
        let bytes = (words * std::mem::size_of::<usize>()).div_ceil(HUGE).max(1) * HUGE;
        // SAFETY: a fresh private anonymous mapping; checked for MAP_FAILED below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            // Out of address space is out of memory: fail like an allocation would.
            panic!("mmap of {bytes} bytes for the memory canary failed");
        }
        // SAFETY: advice on the mapping just made; failure only means small pages.
        unsafe { libc::madvise(p, bytes, libc::MADV_HUGEPAGE) };
        HugeBuf {
            ptr: p.cast(),
            len: words,
            bytes,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [usize] {
        // SAFETY: `len` words lie inside the mapping, which this value owns exclusively.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl std::ops::Deref for HugeBuf {
    type Target = [usize];
    fn deref(&self) -> &[usize] {
        // SAFETY: `len` words lie inside the mapping, alive as long as self.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for HugeBuf {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `new` made, once.
        unsafe { libc::munmap(self.ptr.cast(), self.bytes) };
    }
}

const LINE: usize = 64 / std::mem::size_of::<usize>();

/// A single random cycle through `bytes / 64` lines (Sattolo's algorithm), and the word where
/// a chase should start: the line written first, which the rest of the buffer, written after
/// it, has evicted (the chain visits lines in the order they were written).
pub(super) fn chain(bytes: usize, seed: u64) -> (HugeBuf, usize) {
    let lines = (bytes / 64).max(2);
    let mut order: Vec<usize> = (0..lines).collect();
    let mut x = seed | 1;
    for i in (1..lines).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let j = (x % i as u64) as usize;
        order.swap(i, j);
    }
    let mut buf = HugeBuf::new(lines * LINE);
    let v = buf.as_mut_slice();
    for w in 0..lines {
        let (a, b) = (order[w], order[(w + 1) % lines]);
        v[a * LINE] = b * LINE;
    }
    (buf, order[0] * LINE)
}

pub(super) fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec this function owns.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// ns per dependent load over `steps` steps of the chain, from `*at` (left where it stopped:
/// a reading that started at the same line every round would find its lines cached).
pub(super) fn chase(v: &[usize], steps: usize, at: &mut usize) -> f64 {
    let mut i = *at;
    // Warm the TLB and the path a little, untimed.
    for _ in 0..steps / 8 {
        i = v[i];
    }
    let t0 = thread_cpu_ns();
    for _ in 0..steps {
        i = v[i];
    }
    let t = thread_cpu_ns().saturating_sub(t0);
    *at = black_box(i);
    t as f64 / steps as f64
}

/// GB per CPU-second reading `v` once from start to end: copied 64 KiB at a time into a
/// scratch buffer that stays in the L1/L2 (`copy_from_slice` is the C library's memcpy, as
/// fast in a debug build as in a release one, where a loop over the words would not be).
fn stream(v: &[usize]) -> f64 {
    const CHUNK: usize = (64 << 10) / std::mem::size_of::<usize>();
    let mut scratch = vec![0usize; CHUNK];
    let t0 = thread_cpu_ns();
    for c in v.chunks(CHUNK) {
        scratch[..c.len()].copy_from_slice(c);
        black_box(&mut scratch);
    }
    let t = thread_cpu_ns().saturating_sub(t0).max(1);
    (std::mem::size_of_val(v) as f64) / t as f64
}

impl Canary {
    /// Buffers: a quarter of the L2, a quarter of the LLC, twice the LLC (at least 64 MiB).
    pub fn new(sizes: CacheSizes) -> Canary {
        Canary::with_llc_share(sizes, 4)
    }

    /// As [`Canary::new`] with the LLC-sized set `1/share` of the LLC.
    pub fn with_llc_share(sizes: CacheSizes, share: usize) -> Canary {
        Canary {
            l2: chain(sizes.l2 / 4, 0x1234_5678),
            llc: chain((sizes.llc / share.max(1)).max(sizes.l2 * 2), 0x8765_4321),
            dram: chain((sizes.llc * 2).max(64 << 20), 0xDEAD_BEEF),
        }
    }

    /// `rounds` interleaved readings on `cpu` (in a thread pinned there), medians; about
    /// 1 ms of CPU per round.
    pub fn read(&self, cpu: Option<usize>, rounds: u32) -> CanaryReading {
        std::thread::scope(|s| {
            s.spawn(|| {
                if let Some(c) = cpu {
                    super::pin_thread(&[c]);
                }
                let (mut a, mut b, mut c, mut d) = (vec![], vec![], vec![], vec![]);
                let (mut at_l2, mut at_llc, mut at_dram) = (self.l2.1, self.llc.1, self.dram.1);
                for _ in 0..rounds.max(1) {
                    a.push(chase(&self.l2.0, 20_000, &mut at_l2));
                    b.push(chase(&self.llc.0, 20_000, &mut at_llc));
                    c.push(chase(&self.dram.0, 5_000, &mut at_dram));
                    // A slice of the stream (4 MiB) per round keeps a round short.
                    let n = (4 << 20) / std::mem::size_of::<usize>();
                    let dram = &self.dram.0;
                    let off = (d.len() * n) % dram.len().saturating_sub(n).max(1);
                    d.push(stream(&dram[off..(off + n).min(dram.len())]));
                    std::thread::sleep(Duration::from_micros(200));
                }
                let (l2, llc, dram) = (
                    crate::util::median(&mut a),
                    crate::util::median(&mut b),
                    crate::util::median(&mut c),
                );
                CanaryReading {
                    l2_ns: l2,
                    llc_ns: llc,
                    dram_ns: dram,
                    llc_pressure: if dram > l2 {
                        ((llc - l2) / (dram - l2)).clamp(0.0, 1.5)
                    } else {
                        0.0
                    },
                    stream_gb_s: crate::util::median(&mut d),
                    rounds: rounds.max(1),
                }
            })
            .join()
            .unwrap_or_default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_is_one_cycle_through_every_line() {
        let (v, _) = chain(64 * 1000, 7);
        let v: &[usize] = &v;
        let mut seen = vec![false; 1000];
        let mut i = 0;
        for _ in 0..1000 {
            assert!(!seen[i / LINE], "line {} visited twice", i / LINE);
            seen[i / LINE] = true;
            i = v[i];
        }
        assert_eq!(i, 0, "back to the start after every line");
    }

    #[test]
    fn canary_orders_the_hierarchy() {
        let c = Canary::new(CacheSizes {
            l1d: 32 << 10,
            l2: 512 << 10,
            llc: 8 << 20,
        });
        let r = c.read(None, 3);
        assert!(r.l2_ns > 0.0 && r.dram_ns > r.l2_ns, "{r:?}");
        assert!(r.stream_gb_s > 0.0, "{r:?}");
    }
}
