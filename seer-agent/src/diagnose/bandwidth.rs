//! Memory-bandwidth pressure without hardware counters, for public-cloud mode.
//!
//! Injecting contention cannot find a memory-bandwidth shortage on a small host: the
//! neighbour that streams already holds the CPUs an injected kernel would run on, and a kernel
//! there only takes turns with it (the total pressure stays the same). What can be measured is
//! how long a DRAM access takes from the culprit's CPU *while the neighbour streams*, against
//! the same access from a CPU where the neighbour is *displaced*: a reading thread on the
//! neighbour's CPU runs only while the neighbour does not, so memory is quiet from there. The
//! two readings are interleaved (a dependent random chase over 64 MiB, timed in the reading
//! thread's own CPU time, so that time-sharing does not count), so whatever else loads the
//! memory of the physical host at that moment (other tenants of a cloud VM move this VM's
//! DRAM latency between 80 and 160 ns here) weighs on both alike; their ratio says whether
//! something on this host's other CPUs is eating memory bandwidth that the culprit waits for.
//!
//! Measured on the 2-vCPU EPYC VM this was built on (2026-11-26), culprit's CPU over the
//! other, where the neighbour runs: first with a throwaway C version of the reading (not
//! kept): nothing 0.98-1.03, a spinning CPU hog 0.98-1.05, a cache hog (random reads over
//! 32 MiB) 0.98-1.04, the testbed's memory-bandwidth hog (1 MiB memsets streaming through
//! 64 MiB) 1.18-1.34. Then with this code (rerun: `cargo xtask eval diagnosis`, ratios in
//! `reports/diagnosis.json`; `cargo nextest run -p seer-tests --test diagnose told_apart
//! --no-capture` prints them for the bandwidth hog): run of 21:14 UTC, no fault, a blocking
//! bug, a load spike 0.95-1.12; a cache hog 0.99-1.11; the bandwidth hog 1.05-1.31 (8 of 10
//! readings >= 1.15); the told-apart test 1.05-1.70. Runs since 20:25 UTC without a hog
//! reached 1.14 once, hence [`RISE`]. Runs of 22:22 and 22:55 UTC (as shipped) and 22:31 UTC
//! (with a second reading for first readings of 1.07-1.15, tried and removed: it turned no
//! verdict): no hog 0.95-1.10, and once 1.44 (a control trial, no hog running: cause not
//! found); the bandwidth hog 1.01-1.49, misses at 1.14, 1.13, 1.12, 1.10, 1.02 and 1.01 (the
//! hog's pressure wavers). Single trials overlap at both ends; no threshold separates them
//! all on this VM.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::canary::{HugeBuf, chain, chase, thread_cpu_ns};
use crate::util::median;

/// Short of bandwidth: a DRAM access from the culprit's CPU takes at least this many times
/// one from a CPU where the neighbour is displaced (see the figures above).
pub const RISE: f64 = 1.15;
/// Bytes chased: more than any LLC a reading could hit in.
const BUF_BYTES: usize = 64 << 20;
/// Loads per chase (~1 ms at DRAM latency).
const STEPS: usize = 6000;
/// At most this many other CPUs are read (each costs a chase per round, none of it on the
/// culprit's CPU).
const MAX_OTHERS: usize = 3;

/// One interleaved reading.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BandwidthReading {
    pub culprit_cpu: usize,
    /// Median ns per DRAM access from the culprit's CPU.
    pub culprit_ns: f64,
    /// The other CPUs read, and the median ns per access from each.
    pub others: Vec<(usize, f64)>,
    /// culprit_ns over the lowest of the others.
    pub ratio: f64,
    pub rounds: u32,
    /// CPU time taken on the culprit's CPU (counted as injected time).
    pub culprit_cpu_ms: f64,
}

/// The 64 MiB chain, built once per reading (~1M lines shuffled; off the culprit's CPUs).
pub struct Meter {
    buf: HugeBuf,
    /// Where chases start: the line written first, long evicted by the 64 MiB written after it
    /// (starting at a line written last would find the next ones still cached).
    start: usize,
}

impl Default for Meter {
    fn default() -> Self {
        Meter::new()
    }
}

impl Meter {
    pub fn new() -> Meter {
        let (buf, start) = chain(BUF_BYTES, 0x5EE_D1A6);
        Meter { buf, start }
    }

    /// Builds a meter on a thread of its own at nice 0 (with the caller's CPU affinity); it
    /// arrives on the channel when ready, or never if building failed. Not lower: at nice 19
    /// beside a neighbour that streams on the same CPU it got ~2% of that CPU and took over 20
    /// s (the 0.3 s of work of a debug build).
    pub fn build_in_background() -> std::sync::mpsc::Receiver<Meter> {
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("seer-meter".into())
            .spawn(move || {
                let _ = super::nice_thread(0);
                let t0 = std::time::Instant::now();
                let m = Meter::new();
                log::debug!("memory meter built in {} ms", t0.elapsed().as_millis());
                let _ = tx.send(m);
            });
        if let Err(e) = spawned {
            log::warn!("memory meter not built: {e}");
        }
        rx
    }

    /// `rounds` rounds; in each, one chase on `culprit` then one on each of `others` (up to
    /// [`MAX_OTHERS`]), in a thread that moves between them. None without another CPU.
    pub fn read(&self, culprit: usize, others: &[usize], rounds: u32) -> Option<BandwidthReading> {
        let others: Vec<usize> = others
            .iter()
            .copied()
            .filter(|&c| c != culprit)
            .take(MAX_OTHERS)
            .collect();
        if others.is_empty() {
            return None;
        }
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut at = self.start;
                let mut mine = Vec::new();
                let mut theirs = vec![Vec::new(); others.len()];
                let mut mine_ns = 0u64;
                for _ in 0..rounds.max(1) {
                    super::pin_thread(&[culprit]);
                    let t0 = thread_cpu_ns();
                    mine.push(chase(&self.buf, STEPS, &mut at));
                    mine_ns += thread_cpu_ns().saturating_sub(t0);
                    for (i, &c) in others.iter().enumerate() {
                        super::pin_thread(&[c]);
                        theirs[i].push(chase(&self.buf, STEPS, &mut at));
                    }
                }
                let culprit_ns = median(&mut mine);
                let others: Vec<(usize, f64)> = others
                    .iter()
                    .zip(theirs.iter_mut())
                    .map(|(&c, v)| (c, median(v)))
                    .collect();
                let lowest = others.iter().map(|o| o.1).fold(f64::INFINITY, f64::min);
                BandwidthReading {
                    culprit_cpu: culprit,
                    culprit_ns,
                    ratio: if lowest > 0.0 && lowest.is_finite() {
                        culprit_ns / lowest
                    } else {
                        0.0
                    },
                    others,
                    rounds: rounds.max(1),
                    culprit_cpu_ms: mine_ns as f64 / 1e6,
                }
            })
            .join()
            .ok()
        })
    }
}

/// How long [`Meter::read`] with `rounds` rounds takes from the culprit's CPU, about.
pub fn cost(rounds: u32) -> Duration {
    Duration::from_micros(u64::from(rounds) * STEPS as u64 * 160 / 1000)
}

/// Some((why, strength)) when the reading says the culprit waits for memory bandwidth.
pub fn judge(r: &BandwidthReading) -> Option<(String, f64)> {
    let (cpu, ns) = r
        .others
        .iter()
        .copied()
        .min_by(|a, b| a.1.total_cmp(&b.1))?;
    (r.ratio >= RISE).then(|| {
        (
            format!(
                "a DRAM access from its CPU {} takes {:.0} ns, {:.2}x the {ns:.0} ns from CPU {cpu} where a reader displaces what runs there (>= {RISE:.2}x): something on the other CPUs streams memory",
                r.culprit_cpu, r.culprit_ns, r.ratio
            ),
            ((r.ratio - 1.0) * 3.0).clamp(0.3, 0.95),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(mine: f64, theirs: &[f64]) -> BandwidthReading {
        let lowest = theirs.iter().copied().fold(f64::INFINITY, f64::min);
        BandwidthReading {
            culprit_cpu: 0,
            culprit_ns: mine,
            others: theirs
                .iter()
                .enumerate()
                .map(|(i, &t)| (i + 1, t))
                .collect(),
            ratio: mine / lowest,
            rounds: 5,
            culprit_cpu_ms: 5.0,
        }
    }

    #[test]
    fn the_culprit_cpu_is_judged_against_a_cpu_where_the_neighbour_is_displaced() {
        // Measured (module doc): a bandwidth hog shows, a CPU or cache hog does not.
        let (why, strength) = judge(&reading(209.0, &[160.0])).expect("membw hog");
        assert!(why.contains("1.31x") && why.contains("CPU 1"), "{why}");
        assert!((strength - 0.92).abs() < 0.02, "{strength}");
        assert!(judge(&reading(167.0, &[158.0])).is_none(), "CPU hog");
        assert!(judge(&reading(157.0, &[151.0])).is_none(), "cache hog");
        // The lowest other CPU is the reference: the streamer is where reading is quietest.
        let r = reading(200.0, &[198.0, 160.0]);
        assert!(judge(&r).expect("second CPU").0.contains("CPU 2"));
        // Nothing to compare with: no verdict.
        assert!(judge(&BandwidthReading::default()).is_none());
    }

    #[test]
    fn a_reading_measures_both_cpus_or_says_it_cannot() {
        let m = Meter::new();
        assert!(m.read(0, &[0], 2).is_none(), "no other CPU");
        if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
            println!("SKIP (the rest): one CPU, nothing to read beside the culprit's");
            return;
        }
        let r = m.read(0, &[1], 2).expect("reading");
        assert!(r.culprit_ns > 0.5 && r.culprit_ns < 10_000.0, "{r:?}");
        assert_eq!(r.others.len(), 1);
        assert!(r.ratio > 0.2 && r.ratio < 5.0, "{r:?}");
        assert!(r.culprit_cpu_ms > 0.0, "{r:?}");
    }
}
