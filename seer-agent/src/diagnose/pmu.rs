//! Hardware counters: whether this host has them (mode selection), and in private mode the
//! culprit cgroup's cycles, instructions and LLC references/misses.
//!
//! Every perf_event_open goes through [`PerfSys`], so private-mode code is unit-tested with a
//! fake on hosts (like this VM) that have no PMU.
use std::{
    fs::File,
    io,
    os::fd::{AsRawFd as _, OwnedFd},
    path::Path,
    time::Duration,
};

use serde::{Deserialize, Serialize};

use super::{Method, Resource, signals::SignalSummary};

pub const PERF_TYPE_HARDWARE: u32 = 0;
pub const HW_CPU_CYCLES: u64 = 0;
pub const HW_INSTRUCTIONS: u64 = 1;
pub const HW_CACHE_REFERENCES: u64 = 2;
pub const HW_CACHE_MISSES: u64 = 3;
const PERF_FLAG_PID_CGROUP: u64 = 1 << 2;
const PERF_FLAG_FD_CLOEXEC: u64 = 1 << 3;

use crate::sys::perf::PerfEventAttr;

/// Where a counter counts: the calling process (detection) or a cgroup on one CPU.
#[derive(Clone, Copy, Debug)]
pub enum Scope<'a> {
    SelfProcess,
    Cgroup { dir: &'a File, cpu: i32 },
}

/// The one door to perf_event_open and counter reads.
pub trait PerfSys {
    fn open(&self, config: u64, scope: Scope<'_>) -> io::Result<OwnedFd>;
    fn read(&self, fd: &OwnedFd) -> io::Result<u64>;
}

/// The real kernel.
pub struct KernelPerf;

impl PerfSys for KernelPerf {
    fn open(&self, config: u64, scope: Scope<'_>) -> io::Result<OwnedFd> {
        let attr = PerfEventAttr {
            type_: PERF_TYPE_HARDWARE,
            size: std::mem::size_of::<PerfEventAttr>() as u32,
            config,
            flags: (1 << 5) | (1 << 6),
            ..PerfEventAttr::default()
        };
        let (pid, cpu, flags) = match scope {
            Scope::SelfProcess => (0, -1, PERF_FLAG_FD_CLOEXEC),
            Scope::Cgroup { dir, cpu } => (
                dir.as_raw_fd(),
                cpu,
                PERF_FLAG_FD_CLOEXEC | PERF_FLAG_PID_CGROUP,
            ),
        };
        crate::sys::perf::perf_event_open(&attr, pid, cpu, flags)
    }

    fn read(&self, fd: &OwnedFd) -> io::Result<u64> {
        let mut v = [0u8; 8];
        let n = nix::unistd::read(fd, &mut v).map_err(io::Error::from)?;
        if n != 8 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "short counter read",
            ));
        }
        Ok(u64::from_ne_bytes(v))
    }
}

/// Method selection, with the reason in words.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Detection {
    pub mode: Method,
    pub reason: String,
}

/// Private mode iff an instructions counter opens for this process.
pub fn detect(sys: &dyn PerfSys) -> Detection {
    match sys.open(HW_INSTRUCTIONS, Scope::SelfProcess) {
        Ok(_) => Detection {
            mode: Method::Private,
            reason: "perf_event_open(PERF_COUNT_HW_INSTRUCTIONS) works".into(),
        },
        Err(e) => Detection {
            mode: Method::PublicCloud,
            reason: format!(
                "no hardware counters: perf_event_open(PERF_COUNT_HW_INSTRUCTIONS) failed: {e}"
            ),
        },
    }
}

/// A cgroup's counters over one window, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    pub cycles: u64,
    pub instructions: u64,
    pub llc_refs: u64,
    pub llc_misses: u64,
    pub window_s: f64,
}

/// Counts `cgroup_dir`'s tasks on every CPU in `cpus` for `window`.
pub fn count_cgroup(
    sys: &dyn PerfSys,
    cgroup_dir: &Path,
    cpus: &[usize],
    window: Duration,
) -> io::Result<Counts> {
    let dir = File::open(cgroup_dir)?;
    let configs = [
        HW_CPU_CYCLES,
        HW_INSTRUCTIONS,
        HW_CACHE_REFERENCES,
        HW_CACHE_MISSES,
    ];
    let mut fds: Vec<(usize, OwnedFd)> = Vec::new();
    for &cpu in cpus {
        for (i, &c) in configs.iter().enumerate() {
            let scope = Scope::Cgroup {
                dir: &dir,
                cpu: cpu as i32,
            };
            fds.push((i, sys.open(c, scope)?));
        }
    }
    let mut before = [0u64; 4];
    for (i, fd) in &fds {
        before[*i] += sys.read(fd)?;
    }
    std::thread::sleep(window);
    let mut after = [0u64; 4];
    for (i, fd) in &fds {
        after[*i] += sys.read(fd)?;
    }
    let d = |i: usize| after[i].saturating_sub(before[i]);
    Ok(Counts {
        cycles: d(0),
        instructions: d(1),
        llc_refs: d(2),
        llc_misses: d(3),
        window_s: window.as_secs_f64(),
    })
}

/// What saturates one host (private mode needs these to turn counts into utilization).
#[derive(Clone, Copy, Debug)]
pub struct Peaks {
    /// Bytes/s the memory system sustains.
    pub mem_bw: f64,
}

/// Private-mode ranking: a utilization-like score per resource, best first. Scores near or
/// above 1 mean saturated.
pub fn rank(c: &Counts, s: &SignalSummary, peaks: Peaks) -> Vec<(Resource, f64)> {
    let w = c.window_s.max(1e-6);
    let ipc = c.instructions as f64 / (c.cycles.max(1) as f64);
    let miss_ratio = c.llc_misses as f64 / (c.llc_refs.max(1) as f64);
    let mpki = c.llc_misses as f64 * 1000.0 / (c.instructions.max(1) as f64);
    let membw = c.llc_misses as f64 * 64.0 / w / peaks.mem_bw.max(1.0);
    let mut v = vec![
        // CPU: waiting to run, or throttled, relative to running.
        (
            Resource::CpuInt,
            s.runq_wait_ratio.max(s.throttled_ratio) * 2.0,
        ),
        // Cache: most LLC references miss and the code misses often (a low IPC confirms),
        // unless the misses already saturate memory: then bandwidth is the shortage.
        (
            Resource::Llc,
            miss_ratio
                * (mpki / 10.0).min(1.0)
                * if ipc < 1.0 { 1.0 } else { 0.5 }
                * (1.0 - membw).max(0.0),
        ),
        (Resource::MemoryBandwidth, membw),
        (Resource::MemoryCapacity, s.psi_memory_some),
        (Resource::Network, s.net_drop_ratio * 10.0),
        (Resource::Disk, s.psi_io_some),
    ];
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    /// A fake kernel: counters either refuse to open (no PMU) or count up by fixed steps.
    struct FakePerf {
        works: bool,
        step: [u64; 4],
        reads: Cell<u64>,
    }

    impl PerfSys for FakePerf {
        fn open(&self, config: u64, _scope: Scope<'_>) -> io::Result<OwnedFd> {
            if !self.works {
                return Err(io::Error::from_raw_os_error(libc::ENOENT));
            }
            // Any real fd will do as a handle; encode the config in which file we open.
            let f = File::open("/dev/null")?;
            let _ = config;
            Ok(OwnedFd::from(f))
        }
        fn read(&self, _fd: &OwnedFd) -> io::Result<u64> {
            let n = self.reads.get();
            self.reads.set(n + 1);
            // Reads go (cpu, config) in order, twice: before and after.
            let config = (n % 4) as usize;
            let round = n / 4; // one CPU in the tests below: 4 counters per round
            Ok(self.step[config] * (round + 1))
        }
    }

    #[test]
    fn no_pmu_selects_public_cloud_mode() {
        let d = detect(&FakePerf {
            works: false,
            step: [0; 4],
            reads: Cell::new(0),
        });
        assert_eq!(d.mode, Method::PublicCloud);
        assert!(
            d.reason.contains("PERF_COUNT_HW_INSTRUCTIONS"),
            "{}",
            d.reason
        );
    }

    #[test]
    fn working_pmu_selects_private_mode_and_ranks_memory_bandwidth_first() {
        let sys = FakePerf {
            works: true,
            step: [0; 4],
            reads: Cell::new(0),
        };
        assert_eq!(detect(&sys).mode, Method::Private);
        // 1e9 cycles, 3e8 instructions (IPC 0.3), 1e7 of 1.2e7 LLC references miss in 0.1 s:
        // 6.4 GB/s against an 8 GB/s peak.
        let c = Counts {
            cycles: 1_000_000_000,
            instructions: 300_000_000,
            llc_refs: 12_000_000,
            llc_misses: 10_000_000,
            window_s: 0.1,
        };
        let r = rank(&c, &SignalSummary::default(), Peaks { mem_bw: 8e9 });
        assert_eq!(r[0].0, Resource::MemoryBandwidth, "{r:?}");
        assert!((r[0].1 - 0.8).abs() < 1e-9, "{r:?}");
        // Run-queue waits dominate when the cgroup waits to run more than it runs.
        let s = SignalSummary {
            runq_wait_ratio: 0.6,
            ..SignalSummary::default()
        };
        let r = rank(&Counts::default(), &s, Peaks { mem_bw: 8e9 });
        assert_eq!(r[0].0, Resource::CpuInt, "{r:?}");
    }

    #[test]
    fn counting_a_cgroup_sums_deltas_over_cpus() {
        let sys = FakePerf {
            works: true,
            step: [100, 50, 10, 5],
            reads: Cell::new(0),
        };
        let c = count_cgroup(&sys, Path::new("/"), &[0], Duration::from_millis(1)).expect("count");
        assert_eq!(
            (c.cycles, c.instructions, c.llc_refs, c.llc_misses),
            (100, 50, 10, 5)
        );
    }
}
