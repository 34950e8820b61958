//! Per-service cgroups on cgroup v1 (one hierarchy per controller, as on this host's hybrid
//! mount) or v2 (one tree). On hybrid hosts the service also joins the (controller-less) v2 tree,
//! so the agent's cgroup ids (`bpf_get_current_cgroup_id`, socket cgroups) tell services apart.
use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::error::{Error, Result};

const PERIOD_US: u64 = 100_000;

#[derive(Debug, Clone)]
pub enum Layout {
    V1 {
        /// Mount points of the v1 hierarchies used: cpu first, then memory, blkio if present.
        cpu: PathBuf,
        others: Vec<PathBuf>,
        /// The v2 tree of a hybrid mount (no controllers, ids only).
        unified: Option<PathBuf>,
        /// The v1 cpuset hierarchy: services are pinned to CPUs there.
        cpuset: Option<PathBuf>,
    },
    V2 {
        root: PathBuf,
    },
}

impl Layout {
    /// Reads /proc/mounts. v1 wins when it has the cpu controller (hybrid hosts).
    pub fn detect() -> Result<Layout> {
        let mounts = fs::read_to_string("/proc/mounts")
            .map_err(|e| Error::io("cannot read", "/proc/mounts", e))?;
        let mut cpu = None;
        let mut others = Vec::new();
        let mut unified = None;
        let mut cpuset = None;
        for l in mounts.lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            let [_, mnt, ty, opts, ..] = f[..] else {
                continue;
            };
            if ty == "cgroup2" {
                unified = Some(PathBuf::from(mnt));
            } else if ty == "cgroup" {
                let opts: Vec<&str> = opts.split(',').collect();
                if opts.contains(&"cpu") {
                    cpu = Some(PathBuf::from(mnt));
                } else if opts.contains(&"cpuset") {
                    cpuset = Some(PathBuf::from(mnt));
                } else if ["memory", "blkio", "cpuacct"]
                    .iter()
                    .any(|c| opts.contains(c))
                {
                    others.push(PathBuf::from(mnt));
                }
            }
        }
        match (cpu, unified) {
            (Some(cpu), unified) => Ok(Layout::V1 {
                cpu,
                others,
                unified,
                cpuset,
            }),
            (None, Some(root)) => Ok(Layout::V2 { root }),
            (None, None) => Err(Error::Setup(
                "no cgroup hierarchy with the cpu controller is mounted (neither v1 nor v2)".into(),
            )),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Layout::V1 { .. } => "v1",
            Layout::V2 { .. } => "v2",
        }
    }

    /// Every hierarchy root the testbed creates cgroups in.
    pub fn roots(&self) -> Vec<PathBuf> {
        match self {
            Layout::V1 {
                cpu,
                others,
                unified,
                cpuset,
            } => {
                let mut v = vec![cpu.clone()];
                v.extend(others.iter().cloned());
                v.extend(cpuset.iter().cloned());
                v.extend(unified.iter().cloned());
                v
            }
            Layout::V2 { root } => vec![root.clone()],
        }
    }

    /// Creates `rel` (e.g. `seer-tb-1a2b/api`) in every hierarchy.
    pub fn create(&self, rel: &str) -> Result<()> {
        if let Layout::V2 { root } = self {
            // Controllers must be enabled on every level above the leaf.
            let mut dir = root.clone();
            for part in Path::new(rel).parent().into_iter().flat_map(|p| p.iter()) {
                enable_controllers(&dir);
                dir = dir.join(part);
                mkdir(&dir)?;
            }
            enable_controllers(&dir);
        }
        for r in self.roots() {
            let d = r.join(rel);
            fs::create_dir_all(&d).map_err(|e| Error::io("cannot create cgroup", &d, e))?;
        }
        // A new v1 cpuset has no CPUs and no memory nodes (nothing can join it): inherit them.
        if let Layout::V1 {
            cpuset: Some(root), ..
        } = self
        {
            let mut dir = root.clone();
            for part in Path::new(rel).iter() {
                let parent = dir.clone();
                dir = dir.join(part);
                for f in ["cpuset.mems", "cpuset.cpus"] {
                    let mine = fs::read_to_string(dir.join(f)).unwrap_or_default();
                    if mine.trim().is_empty() {
                        let theirs = fs::read_to_string(parent.join(f))
                            .map_err(|e| Error::io("cannot read", parent.join(f), e))?;
                        fs::write(dir.join(f), theirs.trim())
                            .map_err(|e| Error::io("cannot set", dir.join(f), e))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The `cpuset.cpus` file of `rel`, if this host has a cpuset controller for it.
    fn cpus_file(&self, rel: &str) -> Option<PathBuf> {
        let f = match self {
            Layout::V1 { cpuset, .. } => cpuset.as_ref()?.join(rel).join("cpuset.cpus"),
            Layout::V2 { root } => root.join(rel).join("cpuset.cpus"),
        };
        f.exists().then_some(f)
    }

    /// Whether services can be pinned with a cpuset here.
    pub fn has_cpuset(&self, rel: &str) -> bool {
        self.cpus_file(rel).is_some()
    }

    /// Pins `rel` to `cpus` (cpuset.cpus; v1 hierarchy or v2 tree).
    pub fn set_cpus(&self, rel: &str, cpus: &[usize]) -> Result<()> {
        let Some(f) = self.cpus_file(rel) else {
            return Err(Error::Setup(format!(
                "cgroup {rel}: no cpuset controller (v1 cpuset hierarchy or v2 cpuset.cpus)"
            )));
        };
        let list = crate::scenario::format_cpu_list(cpus);
        fs::write(&f, &list).map_err(|e| Error::io("cannot set the cpuset", f, e))
    }

    /// CPUs `rel` may run on: its effective cpuset, or None without a cpuset controller.
    pub fn cpus(&self, rel: &str) -> Option<Vec<usize>> {
        let f = self.cpus_file(rel)?;
        let eff = f.with_file_name(match self {
            Layout::V1 { .. } => "cpuset.effective_cpus",
            Layout::V2 { .. } => "cpuset.cpus.effective",
        });
        let text = fs::read_to_string(&eff)
            .ok()
            .filter(|t| !t.trim().is_empty())
            .or_else(|| fs::read_to_string(&f).ok())?;
        crate::scenario::parse_cpu_list(&text).ok()
    }

    /// The `cgroup.procs` files a process writes itself into to join `rel`.
    pub fn procs_files(&self, rel: &str) -> Vec<PathBuf> {
        self.roots()
            .iter()
            .map(|r| r.join(rel).join("cgroup.procs"))
            .collect()
    }

    /// [`Layout::procs_files`] without the v1 cpuset hierarchy: the process keeps its CPUs.
    pub fn procs_files_but_cpuset(&self, rel: &str) -> Vec<PathBuf> {
        let skip = match self {
            Layout::V1 { cpuset, .. } => cpuset.clone(),
            Layout::V2 { .. } => None,
        };
        self.roots()
            .iter()
            .filter(|r| Some(*r) != skip.as_ref())
            .map(|r| r.join(rel).join("cgroup.procs"))
            .collect()
    }

    /// Limits `rel` to `cores` of CPU time (None: unlimited).
    pub fn set_cpu_quota(&self, rel: &str, cores: Option<f64>) -> Result<()> {
        let quota = cores.map(|c| ((c * PERIOD_US as f64) as u64).max(1000));
        let (file, text) = match self {
            Layout::V1 { cpu, .. } => (
                cpu.join(rel).join("cpu.cfs_quota_us"),
                quota.map_or("-1".to_string(), |q| q.to_string()),
            ),
            Layout::V2 { root } => (
                root.join(rel).join("cpu.max"),
                format!(
                    "{} {PERIOD_US}",
                    quota.map_or("max".to_string(), |q| q.to_string())
                ),
            ),
        };
        if let Layout::V1 { cpu, .. } = self {
            let period = cpu.join(rel).join("cpu.cfs_period_us");
            fs::write(&period, PERIOD_US.to_string())
                .map_err(|e| Error::io("cannot set the CPU period", period, e))?;
        }
        fs::write(&file, text).map_err(|e| Error::io("cannot set the CPU quota", file, e))
    }

    /// The memory controller's usage and limit files: v1 or v2 names.
    fn memory_files(&self) -> (&'static str, &'static str) {
        match self {
            Layout::V1 { .. } => ("memory.usage_in_bytes", "memory.limit_in_bytes"),
            Layout::V2 { .. } => ("memory.current", "memory.max"),
        }
    }

    /// The directory holding `rel`'s memory controller files (v1 memory hierarchy or v2 tree).
    fn memory_dir(&self, rel: &str) -> Option<PathBuf> {
        let (_, limit) = self.memory_files();
        let d = match self {
            Layout::V1 { others, .. } => others
                .iter()
                .map(|r| r.join(rel))
                .find(|d| d.join(limit).exists())?,
            Layout::V2 { root } => root.join(rel),
        };
        d.join(limit).exists().then_some(d)
    }

    /// Memory charged to `rel` now, in bytes (v1 `memory.usage_in_bytes`, v2
    /// `memory.current`); None without a memory controller.
    pub fn memory_usage(&self, rel: &str) -> Option<u64> {
        let f = self.memory_dir(rel)?.join(self.memory_files().0);
        fs::read_to_string(f).ok()?.trim().parse().ok()
    }

    /// The memory limit file of `rel` and its text now (to restore it later).
    pub fn memory_limit(&self, rel: &str) -> Result<(PathBuf, String)> {
        let d = self.memory_dir(rel).ok_or_else(|| {
            Error::Setup(format!(
                "cgroup {rel}: no memory controller (v1 memory hierarchy or v2 memory.max)"
            ))
        })?;
        let f = d.join(self.memory_files().1);
        let text = fs::read_to_string(&f).map_err(|e| Error::io("cannot read", &f, e))?;
        Ok((f, text.trim().to_string()))
    }

    /// Limits `rel`'s memory to `bytes`; returns the previous limit's file and text, which
    /// [`restore_memory_limit`] writes back.
    pub fn set_memory_limit(&self, rel: &str, bytes: u64) -> Result<(PathBuf, String)> {
        let (f, was) = self.memory_limit(rel)?;
        fs::write(&f, bytes.to_string())
            .map_err(|e| Error::io("cannot set the memory limit", &f, e))?;
        Ok((f, was))
    }

    /// Test hook: the quota currently set on `rel`, in microseconds per period (None: unlimited).
    pub fn cpu_quota_us(&self, rel: &str) -> Option<u64> {
        let text = match self {
            Layout::V1 { cpu, .. } => fs::read_to_string(cpu.join(rel).join("cpu.cfs_quota_us")),
            Layout::V2 { root } => fs::read_to_string(root.join(rel).join("cpu.max")),
        }
        .ok()?;
        text.split_whitespace().next()?.parse().ok()
    }

    /// CPU time used by `rel` and below so far, in microseconds (None if not accounted).
    pub fn cpu_usage_us(&self, rel: &str) -> Option<u64> {
        match self {
            Layout::V1 { cpu, others, .. } => std::iter::once(cpu)
                .chain(others)
                .find_map(|r| fs::read_to_string(r.join(rel).join("cpuacct.usage")).ok())
                .and_then(|t| t.trim().parse::<u64>().ok())
                .map(|ns| ns / 1000),
            Layout::V2 { root } => fs::read_to_string(root.join(rel).join("cpu.stat"))
                .ok()?
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec "))
                .and_then(|v| v.trim().parse().ok()),
        }
    }

    /// Kills every process in `rel` and below, then removes the cgroups, in every hierarchy.
    pub fn remove_tree(&self, rel: &str) -> Result<()> {
        for r in self.roots() {
            let d = r.join(rel);
            if d.is_dir() {
                kill_and_remove(&d)?;
            }
        }
        Ok(())
    }

    /// Top-level cgroups whose name starts with `prefix`, in any hierarchy (`down`'s leftovers).
    pub fn find(&self, prefix: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .roots()
            .iter()
            .filter_map(|r| fs::read_dir(r).ok())
            .flatten()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with(prefix))
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

fn mkdir(d: &Path) -> Result<()> {
    match fs::create_dir(d) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::io("cannot create cgroup", d, e)),
    }
}

/// Best effort: a v2 tree may lack some controllers (e.g. io in a container).
fn enable_controllers(dir: &Path) {
    for c in ["+cpu", "+cpuset", "+memory", "+io"] {
        let _ = fs::write(dir.join("cgroup.subtree_control"), c);
    }
}

fn kill_and_remove(dir: &Path) -> Result<()> {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                kill_and_remove(&e.path())?;
            }
        }
    }
    let procs = dir.join("cgroup.procs");
    let t0 = Instant::now();
    loop {
        let pids = fs::read_to_string(&procs).unwrap_or_default();
        for p in pids.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            // SAFETY: kill has no memory preconditions; the pid was read from a cgroup the
            // testbed created, so it is one of the testbed's processes.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if t0.elapsed() > Duration::from_secs(5) => {
                return Err(Error::io(
                    "cannot remove cgroup (processes still in it?)",
                    dir,
                    e,
                ));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Writes back a limit [`Layout::set_memory_limit`] replaced. A v1 "unlimited" reads back as a
/// huge number that the kernel accepts again; a v2 one reads "max".
pub fn restore_memory_limit(file: &Path, text: &str) -> Result<()> {
    fs::write(file, text).map_err(|e| Error::io("cannot restore the memory limit", file, e))
}
