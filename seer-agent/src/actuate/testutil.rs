//! Test helpers of the actuators (the temp directory is the crate's: `util::TempDir`).
pub use crate::util::TempDir;
use std::path::{Path, PathBuf};

/// A fake cgroup for one service's CPU: plain files in a temp directory, laid out as the kernel
/// does (v1: a `cpu` directory with `cpu.cfs_quota_us`, `cpu.cfs_period_us` and, cpu and
/// cpuacct co-mounted, `cpuacct.usage`, plus a `cpuset` directory; v2: one directory with
/// `cpu.max`, `cpu.stat` and `cpuset.cpus.effective`). A thread advances the usage counter as if
/// the service burned `burning` CPUs, until dropped.
pub struct FakeCpuCgroup {
    _dir: TempDir,
    pub cg: super::cgroup::CpuCgroup,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ticker: Option<std::thread::JoinHandle<()>>,
}

impl FakeCpuCgroup {
    /// v1: `quota` and `period` as the kernel shows them (`-1` = no quota); `cpus` the cpuset.
    pub fn v1(name: &str, quota: &str, period: &str, burning: f64, cpus: &str) -> Self {
        let dir = TempDir::new(name);
        let (cpu, cpuset) = (dir.path().join("cpu"), dir.path().join("cpuset"));
        for d in [&cpu, &cpuset] {
            std::fs::create_dir_all(d).expect("mkdir fake cgroup");
        }
        put(&cpu.join("cpu.cfs_quota_us"), quota);
        put(&cpu.join("cpu.cfs_period_us"), period);
        put(&cpuset.join("cpuset.cpus"), cpus);
        put(&cpuset.join("cpuset.effective_cpus"), cpus);
        let usage = cpu.join("cpuacct.usage");
        let cg = super::cgroup::CpuCgroup::V1 {
            cpu,
            cpuset: Some(cpuset),
        };
        Self::ticking(dir, cg, burning, move |us| {
            put(&usage, &(us * 1000).to_string())
        })
    }

    /// v2: `max` as the kernel shows `cpu.max` (`max 100000` = no quota).
    pub fn v2(name: &str, max: &str, burning: f64, cpus: &str) -> Self {
        Self::v2_throttled(name, max, burning, 0.0, cpus)
    }

    /// v2, its quota holding it back: `throttled` CPUs' worth of throttled time a second
    /// (`throttled_usec` in `cpu.stat`) beside the `burning` it uses.
    pub fn v2_throttled(name: &str, max: &str, burning: f64, throttled: f64, cpus: &str) -> Self {
        let dir = TempDir::new(name);
        let d = dir.path().join("svc");
        std::fs::create_dir_all(&d).expect("mkdir fake cgroup");
        put(&d.join("cpu.max"), max);
        put(&d.join("cpuset.cpus.effective"), cpus);
        let stat = d.join("cpu.stat");
        let cg = super::cgroup::CpuCgroup::V2 { dir: d };
        let held = throttled / burning.max(1e-9);
        Self::ticking(dir, cg, burning, move |us| {
            let t = (us as f64 * held) as u64;
            put(
                &stat,
                &format!(
                    "usage_usec {us}\nuser_usec {us}\nsystem_usec 0\nnr_periods {}\n\
                     nr_throttled 0\nthrottled_usec {t}\n",
                    us / 100_000
                ),
            )
        })
    }

    fn ticking(
        dir: TempDir,
        cg: super::cgroup::CpuCgroup,
        burning: f64,
        write: impl Fn(u64) + Send + 'static,
    ) -> Self {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let halt = stop.clone();
        // Some CPU time used before seer looks, as on a real host.
        let before = 5_000_000u64;
        write(before);
        let t0 = std::time::Instant::now();
        let ticker = std::thread::spawn(move || {
            // The counters are written from wall time: a writer the scheduler holds back leaves
            // them stale, and a loaded machine (the whole test suite on two cores) made a 200 ms
            // measurement read 40% low. At nice -20 (root; ignored otherwise) it runs when due.
            // SAFETY: setpriority on the calling thread (who = 0) touches no memory.
            unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -20) };
            while !halt.load(Ordering::Relaxed) {
                let used = t0.elapsed().as_secs_f64() * burning * 1e6;
                write(before + used as u64);
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        });
        FakeCpuCgroup {
            _dir: dir,
            cg,
            stop,
            ticker: Some(ticker),
        }
    }

    /// A knob's value, trimmed (`cpu.max` for v2; v1 file names are looked up in `cpu`).
    pub fn knob(&self, file: &str) -> String {
        let p = match &self.cg {
            super::cgroup::CpuCgroup::V1 { cpu, .. } => cpu.join(file),
            super::cgroup::CpuCgroup::V2 { dir } => dir.join(file),
        };
        std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
            .trim()
            .to_string()
    }

    /// The quota in effect, in CPUs; `None` when unlimited.
    pub fn quota_cpus(&self) -> Option<f64> {
        let (q, p) = match &self.cg {
            super::cgroup::CpuCgroup::V1 { .. } => (
                self.knob("cpu.cfs_quota_us"),
                self.knob("cpu.cfs_period_us"),
            ),
            super::cgroup::CpuCgroup::V2 { .. } => {
                let m = self.knob("cpu.max");
                let (q, p) = m.split_once(' ').expect("cpu.max: QUOTA PERIOD");
                (q.to_string(), p.to_string())
            }
        };
        if q == "-1" || q == "max" {
            return None;
        }
        let num = |s: &str| -> f64 { s.parse().unwrap_or_else(|e| panic!("{s:?}: {e}")) };
        Some(num(&q) / num(&p))
    }
}

impl Drop for FakeCpuCgroup {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
    }
}

/// Replaces a file's content at once (a reader never sees it half written, as with kernfs).
fn put(path: &Path, value: &str) {
    let name = path.file_name().expect("file name").to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, value).expect("write fake knob");
    std::fs::rename(&tmp, path).expect("rename fake knob");
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A throwaway v1 cpu cgroup, removed on drop (after moving its tasks out).
pub struct V1Cgroup(pub PathBuf);

impl V1Cgroup {
    pub fn new(name: &str) -> Option<Self> {
        let base = Path::new("/sys/fs/cgroup/cpu");
        if !base.join("cpu.cfs_quota_us").exists() || !is_root() {
            return None;
        }
        let p = base.join(format!("seer-test-{name}-{}", std::process::id()));
        let _ = std::fs::create_dir(&p);
        Some(V1Cgroup(p))
    }
}

impl Drop for V1Cgroup {
    fn drop(&mut self) {
        if let Ok(t) = std::fs::read_to_string(self.0.join("tasks")) {
            for pid in t.lines() {
                let _ = std::fs::write("/sys/fs/cgroup/cpu/tasks", pid);
            }
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// A process (a shell busy loop unless built otherwise), killed on drop.
pub struct Busy(pub std::process::Child);

impl Busy {
    /// A shell busy loop, moved into `cg`.
    pub fn loop_in(cg: &V1Cgroup) -> Self {
        let busy = Busy(
            std::process::Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .spawn()
                .expect("spawn busy loop"),
        );
        std::fs::write(cg.0.join("cgroup.procs"), busy.0.id().to_string())
            .expect("move busy loop into cgroup");
        busy
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
