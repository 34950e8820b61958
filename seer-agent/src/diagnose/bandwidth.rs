//! Memory-bandwidth pressure without hardware counters, for public-cloud mode.
//!
//! Injecting contention cannot find a memory-bandwidth shortage on a small host: the
//! neighbour that streams already holds the CPUs an injected kernel would run on, and a kernel
//! there only time-shares with it (the total pressure stays the same). What can be measured is
//! what the culprit's CPU gets from memory now, with a few milliseconds of the culprit's CPU:
//! a dependent random chase over 64 MiB (loaded DRAM latency) and a sequential copy (read
//! bandwidth), both timed in the reading thread's own CPU time (time-sharing does not count).
//! Memory bandwidth is short when the DRAM latency is well over what this host's CPUs get when
//! memory is quiet ([`LATENCY_RISE`]); the read rate is reported beside it.
//!
//! "Quiet" comes from a calibration file (`/var/lib/seer/calibration.json` by default): the
//! best read rate and the lowest DRAM latency ever read on this host, merged after every
//! reading (`seer-agent diagnose --calibrate` takes one on purpose; the agent takes one when
//! it starts). Contention only lowers the rate and raises the latency, so the file converges
//! on the quiet figures; a calibration taken under contention makes the diagnosis miss a
//! shortage, never invent one.
//!
//! Measured on the 2-vCPU EPYC VM this was built on (2026-11-26, `seer-agent diagnose
//! --calibrate` in a debug build on CPU 0, the neighbour on CPU 1): quiet 17.5-18.4 GB/s and
//! 154-159 ns; beside a spinning CPU hog 18.5 GB/s, 149 ns, beside a cache hog 18.9 GB/s, 145
//! ns (no change); beside the testbed's memory-bandwidth hog (1 MiB memsets over 64 MiB) 9.5
//! GB/s and 221 ns.
use std::{
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use nix::sched::{CpuSet, sched_setaffinity};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::canary::{chain, chase, median, stream, thread_cpu_ns};

/// Where the calibration lives unless told otherwise.
pub const DEFAULT_CALIBRATION: &str = "/var/lib/seer/calibration.json";
/// Short of bandwidth: a DRAM access takes at least this many times the quiet one (in both of
/// two readings). Loaded latency is the signal: it climbs steeply as the memory controller
/// nears saturation (the loaded-latency curve tools like Intel's MLC draw), while one core's
/// read rate, bounded by its own outstanding misses, moves less (it is reported beside).
/// Set from the evaluation runs of 2026-11-26 ~21:05 UTC (`cargo xtask eval diagnosis`) and
/// the told-apart test: beside the memory-bandwidth hog 1.39-1.92x; without a hog (control, a
/// blocking bug, a load spike) up to 1.23x in single readings (someone else's traffic of a
/// moment); beside a cache hog 1.07-1.12x.
pub const LATENCY_RISE: f64 = 1.35;
/// Bytes chased and streamed: more than any LLC a reading could hit in.
const BUF_BYTES: usize = 64 << 20;

/// One reading on one CPU: medians over its rounds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    pub cpu: Option<usize>,
    /// ns per dependent load over the 64 MiB chain.
    pub dram_ns: f64,
    /// Sequential read rate, GB per CPU-second of the reading thread.
    pub stream_gb_s: f64,
    pub rounds: u32,
    /// CPU time the reading took (taken from the CPU it ran on).
    pub cpu_ms: f64,
}

impl Reading {
    /// The less contended of two readings (higher rate, lower latency): judged short only when
    /// both were, so that one moment of someone else's traffic does not decide.
    pub fn least_contended(&self, o: &Reading) -> Reading {
        Reading {
            cpu: self.cpu,
            dram_ns: self.dram_ns.min(o.dram_ns),
            stream_gb_s: self.stream_gb_s.max(o.stream_gb_s),
            rounds: self.rounds + o.rounds,
            cpu_ms: self.cpu_ms + o.cpu_ms,
        }
    }
}

/// This host's quiet figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub stream_gb_s_peak: f64,
    pub dram_ns_min: f64,
    /// Readings merged so far.
    pub readings: u64,
    pub updated_unix_ms: u64,
}

/// The 64 MiB chain, built once per diagnosis (~1M lines shuffled; off the culprit's CPUs).
pub struct Meter {
    buf: super::canary::HugeBuf,
}

impl Default for Meter {
    fn default() -> Self {
        Meter::new()
    }
}

impl Meter {
    pub fn new() -> Meter {
        Meter {
            buf: chain(BUF_BYTES, 0x5EE_D1A6),
        }
    }

    /// Two readings of `rounds` rounds `gap` apart, [`Reading::least_contended`] of them.
    pub fn read_twice(&self, cpu: Option<usize>, rounds: u32, gap: std::time::Duration) -> Reading {
        let a = self.read(cpu, rounds);
        std::thread::sleep(gap);
        a.least_contended(&self.read(cpu, rounds))
    }

    /// `rounds` rounds (about 0.7 ms of CPU each) in a thread pinned to `cpu`.
    pub fn read(&self, cpu: Option<usize>, rounds: u32) -> Reading {
        std::thread::scope(|s| {
            s.spawn(|| {
                if let Some(c) = cpu {
                    let mut set = CpuSet::new();
                    if set.set(c).is_ok() {
                        let _ = sched_setaffinity(Pid::from_raw(0), &set);
                    }
                }
                let t0 = thread_cpu_ns();
                let (mut lat, mut rate, mut at) = (Vec::new(), Vec::new(), 0);
                let n = (4 << 20) / std::mem::size_of::<usize>();
                for i in 0..rounds.max(1) as usize {
                    lat.push(chase(&self.buf, 3000, &mut at));
                    let off = (i * n) % self.buf.len().saturating_sub(n).max(1);
                    rate.push(stream(&self.buf[off..(off + n).min(self.buf.len())]));
                }
                Reading {
                    cpu,
                    dram_ns: median(&mut lat),
                    stream_gb_s: median(&mut rate),
                    rounds: rounds.max(1),
                    cpu_ms: thread_cpu_ns().saturating_sub(t0) as f64 / 1e6,
                }
            })
            .join()
            .unwrap_or_default()
        })
    }
}

/// Reads the calibration at `path`; None when there is none yet. A file that cannot be read
/// or parsed is an error that says so (the diagnosis goes on without it).
pub fn load(path: &Path) -> Result<Option<Calibration>, String> {
    match std::fs::read_to_string(path) {
        Ok(t) => serde_json::from_str(&t).map(Some).map_err(|e| {
            format!(
                "{}: not a seer calibration ({e}); remove it and run `seer-agent diagnose --calibrate` on a quiet host",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// `cal` with `r` merged in: the best rate and the lowest latency seen.
pub fn merge(cal: Option<Calibration>, r: &Reading) -> Calibration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let usable = r.stream_gb_s > 0.0 && r.dram_ns > 0.0;
    match cal {
        Some(c) if usable => Calibration {
            stream_gb_s_peak: c.stream_gb_s_peak.max(r.stream_gb_s),
            dram_ns_min: if c.dram_ns_min > 0.0 {
                c.dram_ns_min.min(r.dram_ns)
            } else {
                r.dram_ns
            },
            readings: c.readings + 1,
            updated_unix_ms: now,
        },
        Some(c) => c,
        None => Calibration {
            stream_gb_s_peak: r.stream_gb_s,
            dram_ns_min: r.dram_ns,
            readings: u64::from(usable),
            updated_unix_ms: now,
        },
    }
}

/// Writes `cal` to `path` (through a temporary file, so a crash leaves the old one).
pub fn save(path: &Path, cal: &Calibration) -> Result<(), String> {
    if let Some(d) = path.parent()
        && !d.as_os_str().is_empty()
    {
        std::fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    let text = serde_json::to_string_pretty(cal).map_err(|e| e.to_string())?;
    std::fs::write(&tmp, text + "\n")
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Reads, merges and saves: what `--calibrate` and the agent's start do.
pub fn calibrate(path: &Path, r: &Reading) -> Result<Calibration, String> {
    let cal = merge(load(path)?, r);
    save(path, &cal)?;
    Ok(cal)
}

/// The reading against the quiet figures: Some((why, strength)) when memory bandwidth is short.
pub fn judge(r: &Reading, cal: &Calibration) -> Option<(String, f64)> {
    if cal.readings == 0 || cal.stream_gb_s_peak <= 0.0 || cal.dram_ns_min <= 0.0 {
        return None;
    }
    let share = r.stream_gb_s / cal.stream_gb_s_peak;
    let rise = r.dram_ns / cal.dram_ns_min;
    (rise >= LATENCY_RISE).then(|| {
        (
            format!(
                "a DRAM access from its CPU takes {:.0} ns, {rise:.2}x this host's quiet {:.0} ns (>= {LATENCY_RISE:.2}x), and it reads memory at {:.1} GB/s, {:.0}% of the quiet {:.1} GB/s",
                r.dram_ns,
                cal.dram_ns_min,
                r.stream_gb_s,
                share * 100.0,
                cal.stream_gb_s_peak,
            ),
            (rise - 1.0).clamp(0.3, 0.95),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(gb: f64, ns: f64) -> Reading {
        Reading {
            cpu: Some(0),
            dram_ns: ns,
            stream_gb_s: gb,
            rounds: 7,
            cpu_ms: 4.0,
        }
    }

    #[test]
    fn calibration_keeps_the_quiet_figures_and_judges_against_them() {
        let mut cal = merge(None, &reading(30.0, 140.0));
        // A contended reading does not spoil it; a quieter one improves it.
        cal = merge(Some(cal), &reading(20.0, 180.0));
        cal = merge(Some(cal), &reading(34.0, 126.0));
        assert_eq!((cal.stream_gb_s_peak, cal.dram_ns_min), (34.0, 126.0));
        assert_eq!(cal.readings, 3);
        // Measured figures (module doc): a bandwidth hog is short, the others are not.
        let (why, strength) = judge(&reading(20.2, 180.0), &cal).expect("membw hog");
        assert!(why.contains("1.43x"), "{why}");
        assert!((strength - 0.43).abs() < 0.01, "{strength}");
        assert!(judge(&reading(32.8, 127.0), &cal).is_none(), "CPU hog");
        assert!(judge(&reading(31.7, 132.0), &cal).is_none(), "cache hog");
        // A moment of someone else's traffic (1.27x) is not enough.
        assert!(judge(&reading(25.0, 160.0), &cal).is_none());
        // One contended moment of two is not a shortage.
        let both = reading(20.2, 180.0).least_contended(&reading(33.0, 130.0));
        assert!(judge(&both, &cal).is_none());
        assert_eq!(both.rounds, 14);
        // No calibration, nothing to judge against.
        assert!(judge(&reading(5.0, 500.0), &Calibration::default()).is_none());
    }

    #[test]
    fn calibration_file_round_trips_and_a_bad_one_says_what_to_do() {
        let dir = std::env::temp_dir().join(format!("seer-cal-{}", std::process::id()));
        let f = dir.join("sub/calibration.json");
        assert_eq!(load(&f), Ok(None));
        let c = calibrate(&f, &reading(30.0, 130.0)).expect("calibrate");
        assert_eq!(load(&f), Ok(Some(c)));
        std::fs::write(&f, "{ not json").expect("write");
        let e = load(&f).expect_err("bad file");
        assert!(e.contains("--calibrate"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_reading_measures_something() {
        let r = Meter::new().read(None, 3);
        assert!(r.dram_ns > 0.5 && r.dram_ns < 10_000.0, "{r:?}");
        assert!(r.stream_gb_s > 0.1, "{r:?}");
        assert_eq!(r.rounds, 3);
    }
}
