//! CPU for a service's cgroup ("resize the container"): CFS quota, weight and cpuset, on
//! cgroup v2 (`cpu.max`, `cpu.weight`, `cpuset.cpus`) or v1 (`cpu.cfs_quota_us` +
//! `cpu.cfs_period_us`, `cpu.shares`, `cpuset.cpus`) as on hybrid hosts like this one. Each
//! file's old value is journaled before the first write, so undo restores it.
//!
//! What a service has now ([`CpuBaseline`]): its quota, or, with none, the CPUs it uses (v2
//! `cpu.stat` usage_usec; v1 `cpuacct.usage` where cpuacct is mounted with cpu, else its
//! processes' CPU time), at most the CPUs it may run on.
use std::{
    io,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::journal::{Change, Journal, JournalError};

/// Where a service's CPU knobs live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuCgroup {
    /// cgroup v2: one directory with `cpu.*` (and `cpuset.*` if that controller is enabled).
    V2 { dir: PathBuf },
    /// cgroup v1: the `cpu` hierarchy's directory and, if any, the `cpuset` one.
    V1 {
        cpu: PathBuf,
        cpuset: Option<PathBuf>,
    },
}

/// One CPU action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuAction {
    /// At most `quota_us` of CPU time per `period_us` (CFS bandwidth).
    Quota { quota_us: u64, period_us: u64 },
    /// Relative weight, cgroup v2 scale 1..=10000 (default 100; v1 shares = weight * 1024 / 100).
    Weight(u32),
    /// Allowed CPUs, kernel list format ("0-1", "1").
    Cpus(String),
}

/// The smallest CFS quota the kernel takes, microseconds per period.
pub const MIN_QUOTA_US: u64 = 1000;

/// A service measured using less than this counts as using this much (CPUs): the base of its
/// steps, so that a service idle when first seen is not capped to nothing.
pub const MIN_USED_CPUS: f64 = 0.1;

/// A reading this old is long enough to measure a baseline from (a CFS period).
pub const MIN_SINCE: Duration = Duration::from_millis(100);

/// A cgroup's cumulative CPU counters at one moment ([`CpuCgroup::reading`]).
#[derive(Debug, Clone, Copy)]
pub struct CpuReading {
    pub at: Instant,
    /// CPU time used, microseconds.
    pub usage_us: u64,
    /// (periods, periods throttled, microseconds throttled), where the files have them.
    pub throttling: Option<(u64, u64, u64)>,
}

impl CpuReading {
    fn secs_since(&self, earlier: &CpuReading) -> f64 {
        self.at
            .saturating_duration_since(earlier.at)
            .as_secs_f64()
            .max(1e-3)
    }

    /// The CPUs used between `earlier` and this reading.
    pub fn used_since(&self, earlier: &CpuReading) -> f64 {
        self.usage_us.saturating_sub(earlier.usage_us) as f64 / 1e6 / self.secs_since(earlier)
    }

    /// The CPUs wanted between `earlier` and this reading: what was used plus the time the
    /// quota held the cgroup back. Throttled in most of the periods between them, it is held
    /// at its quota whatever it needs, and its need cannot be read under the squeeze: at least
    /// one CPU then (a raise must give it something it can run on; the escalation and the
    /// rollback bound the rest). Without throttling counters, unknown (`None`).
    pub fn wanted_since(&self, earlier: &CpuReading) -> Option<f64> {
        let used = self.used_since(earlier);
        let (Some((p1, n1, h1)), Some((p0, n0, h0))) = (self.throttling, earlier.throttling) else {
            return None;
        };
        let held_back = h1.saturating_sub(h0) as f64 / 1e6 / self.secs_since(earlier);
        let (periods, throttled) = (p1.saturating_sub(p0), n1.saturating_sub(n0));
        let held = throttled > 0 && 2 * throttled >= periods;
        let wanted = used + held_back;
        Some(if held { wanted.max(1.0) } else { wanted })
    }
}

/// The CFS bandwidth limit in a cgroup's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuLimit {
    /// Microseconds per period; `None` = no quota (v1 `-1`, v2 `max`).
    pub quota_us: Option<u64>,
    pub period_us: u64,
}

/// A service's CPU as seer found it before its first change: what its levels (percent) are of.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CpuBaseline {
    /// A CFS quota was set. `wanted`: the CPUs it would have used over a short window, what
    /// it used plus the time it was throttled (0 where unmeasured): a service squeezed under
    /// its need wants more than its quota, and raises start from that, not from the squeeze.
    Quota {
        quota_us: u64,
        period_us: u64,
        wanted: f64,
    },
    /// No quota: the CPUs it used over a short window (at most the CPUs it may run on).
    Unlimited { used: f64 },
}

impl CpuBaseline {
    /// In CPUs: the quota, or what it used but at least [`MIN_USED_CPUS`].
    pub fn cpus(&self) -> f64 {
        match *self {
            CpuBaseline::Quota {
                quota_us,
                period_us,
                ..
            } => quota_us as f64 / period_us.max(1) as f64,
            CpuBaseline::Unlimited { used } => used.max(MIN_USED_CPUS),
        }
    }

    /// In CPUs, what raises (levels of 100% and more) are percent of: the quota, or what the
    /// service wanted when that was more (a quota squeezed to 1% of a CPU raised by 25% is
    /// still nothing it can run on); with no quota, as [`Self::cpus`].
    pub fn raise_base(&self) -> f64 {
        match *self {
            CpuBaseline::Quota { wanted, .. } => self.cpus().max(wanted),
            CpuBaseline::Unlimited { .. } => self.cpus(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error(
        "{path} does not exist: the cgroup is gone (the service exited?) or its controller is not mounted/enabled here"
    )]
    Gone { path: PathBuf },
    #[error("permission denied writing {path}: cgroup writes need root (or a delegated cgroup)")]
    PermissionDenied { path: PathBuf },
    #[error("the kernel refused {value:?} in {path} (EINVAL): check the value's range")]
    Invalid { path: PathBuf, value: String },
    #[error("{action} is not possible on {cgroup}: {why}")]
    Unsupported {
        action: String,
        cgroup: String,
        why: String,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no cgroup for pid {pid}: {why}")]
    NoCgroup { pid: u32, why: String },
    #[error("{path}: cannot parse {value:?}: {why}")]
    Parse {
        path: PathBuf,
        value: String,
        why: String,
    },
    #[error(transparent)]
    Journal(#[from] JournalError),
}

fn classify(op: &'static str, path: &Path, value: Option<&str>, e: io::Error) -> CgroupError {
    match e.raw_os_error() {
        Some(libc::ENOENT | libc::ENODEV) => CgroupError::Gone { path: path.into() },
        Some(libc::EACCES | libc::EPERM) => CgroupError::PermissionDenied { path: path.into() },
        Some(libc::EINVAL | libc::ERANGE) if value.is_some() => CgroupError::Invalid {
            path: path.into(),
            value: value.unwrap_or_default().into(),
        },
        _ => CgroupError::Io {
            op,
            path: path.into(),
            source: e,
        },
    }
}

pub fn read_knob(path: &Path) -> Result<String, CgroupError> {
    crate::sys::cgroupfs::read(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| classify("read", path, None, e))
}

pub fn write_knob(path: &Path, value: &str) -> Result<(), CgroupError> {
    crate::sys::cgroupfs::write(path, value).map_err(|e| classify("write", path, Some(value), e))
}

/// A cgroup file's number (surrounding whitespace ignored), or what was wrong with it.
fn parse_u64(path: &Path, v: &str) -> Result<u64, CgroupError> {
    v.trim()
        .parse()
        .map_err(|e: std::num::ParseIntError| CgroupError::Parse {
            path: path.into(),
            value: v.into(),
            why: e.to_string(),
        })
}

impl CpuCgroup {
    /// The cgroup(s) of `pid`, from /proc/PID/cgroup and the mounts in /proc/self/mountinfo.
    pub fn of_pid(pid: u32) -> Result<Self, CgroupError> {
        let no = |why: String| CgroupError::NoCgroup { pid, why };
        let cg = crate::sys::procfs::cgroup_file(pid)
            .map_err(|e| no(format!("/proc/{pid}/cgroup: {e} (the process exited?)")))?;
        let mounts = crate::sys::procfs::mountinfo()
            .map_err(|e| no(format!("/proc/self/mountinfo: {e}")))?;
        // mountinfo: id parent maj:min root mountpoint opts... - fstype source superopts
        let mount_of = |fstype: &str, ctrl: Option<&str>| -> Option<PathBuf> {
            mounts.lines().find_map(|l| {
                let (pre, post) = l.split_once(" - ")?;
                let mut post = post.split_whitespace();
                let ty = post.next()?;
                let superopts = post.nth(1).unwrap_or("");
                let ok = ty == fstype && ctrl.is_none_or(|c| superopts.split(',').any(|o| o == c));
                ok.then(|| PathBuf::from(pre.split_whitespace().nth(4).unwrap_or("")))
            })
        };
        let rel = |p: &str| p.trim_start_matches('/').to_string();
        let v1 = |c: &str| {
            let path = crate::sys::procfs::cgroup_path(&cg, Some(c))?;
            mount_of("cgroup", Some(c)).map(|m| m.join(rel(path)))
        };
        let (v1_cpu, v1_cpuset) = (v1("cpu"), v1("cpuset"));
        let v2 = crate::sys::procfs::cgroup_path(&cg, None)
            .and_then(|p| mount_of("cgroup2", None).map(|m| m.join(rel(p))));
        if let Some(cpu) = v1_cpu {
            return Ok(CpuCgroup::V1 {
                cpu,
                cpuset: v1_cpuset,
            });
        }
        match v2 {
            Some(dir) if dir.join("cpu.max").exists() => Ok(CpuCgroup::V2 { dir }),
            Some(dir) => Err(no(format!(
                "{} has no cpu controller (enable it in the parent's cgroup.subtree_control)",
                dir.display()
            ))),
            None => Err(no("neither a v1 cpu hierarchy nor a cgroup2 mount".into())),
        }
    }

    fn describe(&self) -> String {
        match self {
            CpuCgroup::V2 { dir } => format!("cgroup v2 {}", dir.display()),
            CpuCgroup::V1 { cpu, .. } => format!("cgroup v1 {}", cpu.display()),
        }
    }

    /// The (file, value) writes that carry out `action`, in order. A hierarchy's root cgroup
    /// is refused: its limits are the whole host's (and the kernel rejects most of them).
    pub fn writes(&self, action: &CpuAction) -> Result<Vec<(PathBuf, String)>, CgroupError> {
        let w = self.writes_anywhere(action)?;
        for (path, _) in &w {
            let dir = path.parent().unwrap_or(path);
            let is_cgroup = |d: &Path| d.join("cgroup.procs").exists();
            if is_cgroup(dir) && !dir.parent().is_some_and(is_cgroup) {
                return Err(CgroupError::Unsupported {
                    action: format!("{action:?}"),
                    cgroup: self.describe(),
                    why: format!(
                        "{} is a root cgroup (the whole host's): give the service a cgroup of its own (a systemd unit, a container)",
                        dir.display()
                    ),
                });
            }
        }
        Ok(w)
    }

    fn writes_anywhere(&self, action: &CpuAction) -> Result<Vec<(PathBuf, String)>, CgroupError> {
        Ok(match (self, action) {
            (
                CpuCgroup::V2 { dir },
                CpuAction::Quota {
                    quota_us,
                    period_us,
                },
            ) => {
                vec![(dir.join("cpu.max"), format!("{quota_us} {period_us}"))]
            }
            (CpuCgroup::V2 { dir }, CpuAction::Weight(w)) => {
                vec![(dir.join("cpu.weight"), w.to_string())]
            }
            (CpuCgroup::V2 { dir }, CpuAction::Cpus(c)) => {
                vec![(dir.join("cpuset.cpus"), c.clone())]
            }
            (
                CpuCgroup::V1 { cpu, .. },
                CpuAction::Quota {
                    quota_us,
                    period_us,
                },
            ) => vec![
                (cpu.join("cpu.cfs_period_us"), period_us.to_string()),
                (cpu.join("cpu.cfs_quota_us"), quota_us.to_string()),
            ],
            (CpuCgroup::V1 { cpu, .. }, CpuAction::Weight(w)) => {
                let shares = (u64::from(*w) * 1024 / 100).max(2);
                vec![(cpu.join("cpu.shares"), shares.to_string())]
            }
            (
                CpuCgroup::V1 {
                    cpuset: Some(s), ..
                },
                CpuAction::Cpus(c),
            ) => {
                vec![(s.join("cpuset.cpus"), c.clone())]
            }
            (CpuCgroup::V1 { cpuset: None, .. }, CpuAction::Cpus(_)) => {
                return Err(CgroupError::Unsupported {
                    action: format!("{action:?}"),
                    cgroup: self.describe(),
                    why: "the service is in no v1 cpuset hierarchy".into(),
                });
            }
        })
    }

    /// The CFS limit, each file read with `read` (the live file, or the value a journal kept).
    pub fn limit_with(
        &self,
        read: impl Fn(&Path) -> Result<String, CgroupError>,
    ) -> Result<CpuLimit, CgroupError> {
        match self {
            CpuCgroup::V2 { dir } => {
                let path = dir.join("cpu.max");
                let v = read(&path)?;
                let (q, p) = v.split_once(' ').ok_or_else(|| CgroupError::Parse {
                    path: path.clone(),
                    value: v.clone(),
                    why: "expected \"QUOTA PERIOD\"".into(),
                })?;
                Ok(CpuLimit {
                    quota_us: (q != "max").then(|| parse_u64(&path, q)).transpose()?,
                    period_us: parse_u64(&path, p)?,
                })
            }
            CpuCgroup::V1 { cpu, .. } => {
                let (qp, pp) = (cpu.join("cpu.cfs_quota_us"), cpu.join("cpu.cfs_period_us"));
                let q = read(&qp)?;
                Ok(CpuLimit {
                    quota_us: q
                        .parse::<i64>()
                        .map_err(|e| CgroupError::Parse {
                            path: qp.clone(),
                            value: q.clone(),
                            why: e.to_string(),
                        })?
                        .try_into()
                        .ok(),
                    period_us: parse_u64(&pp, &read(&pp)?)?,
                })
            }
        }
    }

    /// CPU time the cgroup's tasks (its descendants' included) have used, microseconds: v2
    /// `cpu.stat` usage_usec; v1 `cpuacct.usage` when cpuacct is mounted with cpu, else the
    /// CPU time of the processes in it now (one that exits between two readings is missed).
    pub fn usage_us(&self) -> Result<u64, CgroupError> {
        match self {
            CpuCgroup::V2 { dir } => {
                let path = dir.join("cpu.stat");
                let stat = read_knob(&path)?;
                let v = stat
                    .lines()
                    .find_map(|l| l.strip_prefix("usage_usec "))
                    .ok_or_else(|| CgroupError::Parse {
                        path: path.clone(),
                        value: stat.clone(),
                        why: "no usage_usec line".into(),
                    })?;
                parse_u64(&path, v)
            }
            CpuCgroup::V1 { cpu, .. } => {
                let acct = cpu.join("cpuacct.usage");
                if acct.exists() {
                    return Ok(parse_u64(&acct, &read_knob(&acct)?)? / 1000);
                }
                // SAFETY: sysconf has no preconditions.
                let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
                Ok(procs_below(cpu)?
                    .into_iter()
                    .filter_map(crate::sys::procfs::process_cpu_ticks)
                    .sum::<u64>()
                    * 1_000_000
                    / hz)
            }
        }
    }

    /// How the cgroup's CFS quota held it back, cumulative: (periods, periods throttled,
    /// microseconds throttled). v2 `cpu.stat` nr_periods, nr_throttled, throttled_usec; v1
    /// `cpu.stat` nr_periods, nr_throttled, throttled_time (ns). The time is summed over the
    /// CPUs' run queues and the kernel adds it when a queue is let run again (in jumps of a
    /// few hundred ms under a tight quota); the counts move every period.
    pub fn throttling(&self) -> Result<(u64, u64, u64), CgroupError> {
        use crate::sys::cgroupfs::{parse_cpu_stat_periods, parse_cpu_stat_throttled_ns};
        let path = match self {
            CpuCgroup::V2 { dir } => dir.join("cpu.stat"),
            CpuCgroup::V1 { cpu, .. } => cpu.join("cpu.stat"),
        };
        let stat = read_knob(&path)?;
        let missing = |why: &str| CgroupError::Parse {
            path: path.clone(),
            value: stat.clone(),
            why: why.into(),
        };
        let (periods, throttled) = parse_cpu_stat_periods(&stat)
            .ok_or_else(|| missing("no nr_periods and nr_throttled lines"))?;
        let ns = parse_cpu_stat_throttled_ns(&stat)
            .ok_or_else(|| missing("no throttled_time (v1) or throttled_usec (v2) line"))?;
        Ok((periods, throttled, ns / 1000))
    }

    /// The cgroup's cumulative CPU counters now: its usage and, where the files have them, how
    /// its quota held it back.
    pub fn reading(&self) -> Result<CpuReading, CgroupError> {
        Ok(CpuReading {
            at: Instant::now(),
            usage_us: self.usage_us()?,
            throttling: self.throttling().ok(),
        })
    }

    /// How many CPUs the service may run on: its cpuset, else its processes' affinity, else
    /// the host's online CPUs.
    pub fn allowed_cpus(&self) -> usize {
        use crate::diagnose::{session::host_cpus, target::parse_cpu_list};
        let count = |p: PathBuf| {
            read_knob(&p)
                .ok()
                .map(|v| parse_cpu_list(&v).len())
                .filter(|&n| n > 0)
        };
        let cpuset = match self {
            CpuCgroup::V2 { dir } => count(dir.join("cpuset.cpus.effective")),
            CpuCgroup::V1 { cpuset, .. } => cpuset.as_ref().and_then(|d| {
                count(d.join("cpuset.effective_cpus")).or_else(|| count(d.join("cpuset.cpus")))
            }),
        };
        let dir = match self {
            CpuCgroup::V2 { dir } => dir,
            CpuCgroup::V1 { cpu, .. } => cpu,
        };
        cpuset
            .or_else(|| {
                let mut cpus: Vec<usize> = procs_below(dir)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|pid| {
                        let s = crate::sys::procfs::status(pid)?;
                        s.lines()
                            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                            .map(parse_cpu_list)
                    })
                    .flatten()
                    .collect();
                cpus.sort_unstable();
                cpus.dedup();
                (!cpus.is_empty()).then_some(cpus.len())
            })
            .unwrap_or_else(host_cpus)
    }

    /// The CPUs the cgroup used over `window` (two readings of [`Self::usage_us`]).
    pub fn used_cpus(&self, window: Duration) -> Result<f64, CgroupError> {
        let r0 = self.reading()?;
        std::thread::sleep(window);
        Ok(self.reading()?.used_since(&r0))
    }

    /// What the service has now: its quota (read with `read`, as in [`Self::limit_with`]) and
    /// what it wanted, or with none what it used, at most the CPUs it may run on; measured
    /// from `since` (an earlier reading, at least [`MIN_SINCE`] old: no wait) or else over
    /// `window`.
    pub fn baseline_with(
        &self,
        read: impl Fn(&Path) -> Result<String, CgroupError>,
        since: Option<CpuReading>,
        window: Duration,
    ) -> Result<CpuBaseline, CgroupError> {
        let lim = self.limit_with(read)?;
        let measure = || -> Result<(CpuReading, CpuReading), CgroupError> {
            let r0 = match since {
                Some(r) => r,
                None => {
                    let r = self.reading()?;
                    std::thread::sleep(window);
                    r
                }
            };
            Ok((r0, self.reading()?))
        };
        let may = self.allowed_cpus() as f64;
        Ok(match lim.quota_us {
            Some(quota_us) => CpuBaseline::Quota {
                quota_us,
                period_us: lim.period_us,
                wanted: match measure() {
                    Ok((r0, r1)) => r1.wanted_since(&r0).map_or(0.0, |w| w.min(may)),
                    Err(e) => {
                        log::debug!("cgroup: what the service wants, unmeasured: {e}");
                        0.0
                    }
                },
            },
            None => {
                let (r0, r1) = measure()?;
                CpuBaseline::Unlimited {
                    used: r1.used_since(&r0).min(may),
                }
            }
        })
    }

    /// Applies `action`: each file's current value is journaled (first change only), then
    /// written. A failure part-way leaves the journal able to restore what was written.
    pub fn apply(
        &self,
        j: &mut Journal,
        service: &str,
        action: &CpuAction,
    ) -> Result<(), CgroupError> {
        for (path, value) in self.writes(action)? {
            let old = read_knob(&path)?;
            let id = j.record(
                service,
                Change::CgroupFile {
                    path: path.clone(),
                    old,
                    wrote: None,
                },
            )?;
            if let Err(e) = write_knob(&path, &value) {
                // Nothing was changed: the entry would only restore the value the file has.
                if let Some(id) = id {
                    j.forget(id)?;
                }
                return Err(e);
            }
            log::info!("cgroup: {service}: {} = {value}", path.display());
            // As the kernel keeps it (it may normalize what was written).
            let now = read_knob(&path).unwrap_or_else(|_| value.clone());
            j.note_written(&path, now.trim())?;
        }
        Ok(())
    }
}

/// The pids in cgroup `dir` and the cgroups below it (`cgroup.procs`).
fn procs_below(dir: &Path) -> Result<Vec<u32>, CgroupError> {
    let path = dir.join("cgroup.procs");
    let mut pids: Vec<u32> = read_knob(&path)?
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                pids.extend(procs_below(&e.path()).unwrap_or_default());
            }
        }
    }
    Ok(pids)
}

/// Undo of one journaled file: `Ok(false)` when the cgroup is gone, or when the file no longer
/// holds what seer wrote (`wrote`): someone else set it since, and their value stays.
pub fn restore(path: &Path, old: &str, wrote: Option<&str>) -> Result<bool, CgroupError> {
    if let Some(w) = wrote {
        match read_knob(path) {
            Ok(now) if now != w => {
                log::warn!(
                    "cgroup: {} holds {now:?}, not the {w:?} seer wrote: someone changed it since; left as they set it (seer would have restored {old:?})",
                    path.display()
                );
                return Ok(false);
            }
            Err(CgroupError::Gone { .. }) => return Ok(false),
            _ => {}
        }
    }
    match write_knob(path, old) {
        Ok(()) => Ok(true),
        Err(CgroupError::Gone { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}
