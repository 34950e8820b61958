//! The fault injector: one thread per scheduled fault applies it to its service (cgroup CPU
//! quota, HTB cap on the host's veth, blocking bug over the control socket, or a contention hog
//! in the service's cgroup), follows its onset shape every 50 ms, undoes it at its end, and
//! records when it really ran. Load spikes are applied by the generator; they are recorded here.
use std::{
    io::Write as _,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde::Serialize;

use crate::{
    cgroup::Layout,
    cmd::tc,
    plan::{HOST_IF, Plan},
    scenario::{Fault, FaultKind, Onset, Scenario},
    shape,
    spawn::{Placement, spawn},
    svc::ctl,
};

const TICK: Duration = Duration::from_millis(50);
/// Rate of the default HTB class (traffic other than the capped service's).
const OPEN_RATE: &str = "10gbit";

/// What the ground truth says about one fault.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    pub id: usize,
    pub kind: FaultKind,
    pub service: String,
    pub host: String,
    pub resource: &'static str,
    pub intensity: f64,
    pub unit: &'static str,
    pub onset: Onset,
    pub ramp_s: Option<f64>,
    pub burst_on_s: Option<f64>,
    pub burst_period_s: Option<f64>,
    /// Drawn at random (unannounced; nothing in the schedule precedes it).
    pub random: bool,
    /// Scenario times (seconds) from the schedule.
    pub start_s: f64,
    pub end_s: f64,
    /// When the injector actually applied and removed it (0 if it never did).
    pub applied_unix_ms: u64,
    pub removed_unix_ms: u64,
    pub error: Option<String>,
    /// Hogs: the CPUs the hog is pinned to (see `hog_placement`); the victim's cpuset.
    pub hog_cpus: Option<String>,
    pub victim_cpus: Option<String>,
}

pub fn resource(k: FaultKind) -> (&'static str, &'static str) {
    match k {
        FaultKind::CpuQuota => ("cpu", "cores"),
        FaultKind::NetBw => ("network", "Mbit/s"),
        FaultKind::Blocking => ("software", "us per request"),
        FaultKind::LoadSpike => ("load", "x rate"),
        FaultKind::CpuHog => ("cpu", "cores"),
        FaultKind::CacheHog => ("llc", "threads"),
        FaultKind::MembwHog => ("memory_bandwidth", "threads"),
        FaultKind::MemHog => ("memory_capacity", "MiB"),
        FaultKind::DiskHog => ("disk", "threads"),
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub struct Injector {
    threads: Vec<JoinHandle<FaultRecord>>,
    stop: Arc<AtomicBool>,
}

/// Where a fault acts, resolved from the plan.
#[derive(Clone)]
struct Target {
    netns: String,
    cgroup: String,
    port: u16,
    ctl: PathBuf,
}

impl Injector {
    /// Starts one thread per fault; scenario time 0 is `t0`.
    pub fn start(
        sc: &Scenario,
        plan: &Plan,
        layout: &Layout,
        t0: Instant,
        svc_bin: PathBuf,
    ) -> Injector {
        let stop = Arc::new(AtomicBool::new(false));
        let front = sc
            .front_end()
            .map(|s| s.name.get_ref().clone())
            .unwrap_or_default();
        let threads = sc
            .faults
            .iter()
            .enumerate()
            .map(|(id, f)| {
                let svc = f
                    .service
                    .as_ref()
                    .map(|s| s.get_ref().clone())
                    .unwrap_or_else(|| front.clone());
                let sp = plan.service(&svc);
                let (res, unit) = resource(*f.kind.get_ref());
                let rec = FaultRecord {
                    id,
                    kind: *f.kind.get_ref(),
                    host: sp.map(|s| s.host.clone()).unwrap_or_default(),
                    service: svc,
                    resource: res,
                    intensity: f.intensity,
                    unit,
                    onset: f.onset,
                    ramp_s: f.ramp_s,
                    burst_on_s: f.burst_on_s,
                    burst_period_s: f.burst_period_s,
                    random: f.random,
                    start_s: f.start_s,
                    end_s: f.start_s + f.duration_s,
                    applied_unix_ms: 0,
                    removed_unix_ms: 0,
                    error: None,
                    hog_cpus: None,
                    victim_cpus: sp.and_then(|s| s.cpus.clone()),
                };
                let target = sp.map(|s| Target {
                    netns: s.netns.clone(),
                    cgroup: s.cgroup.clone(),
                    port: s.addr.port(),
                    ctl: s.ctl.clone(),
                });
                let mut rec = rec;
                if let Some(tg) = &target
                    && is_hog(*f.kind.get_ref())
                {
                    rec.hog_cpus = hog_placement(*f.kind.get_ref(), tg, layout)
                        .0
                        .map(|c| crate::scenario::format_cpu_list(&c));
                }
                let (f, layout, stop, bin, dir) = (
                    f.clone(),
                    layout.clone(),
                    stop.clone(),
                    svc_bin.clone(),
                    plan.dir.clone(),
                );
                thread::spawn(move || {
                    let mut rec = rec;
                    if let Err(e) = inject(&f, target, &layout, t0, &stop, &bin, &dir, &mut rec) {
                        eprintln!("[fault {id}] {e}");
                        rec.error = Some(e);
                    }
                    rec
                })
            })
            .collect();
        Injector { threads, stop }
    }

    /// Stops (undoing active faults) and returns the records.
    pub fn finish(self) -> Vec<FaultRecord> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .into_iter()
            .filter_map(|t| t.join().ok())
            .collect()
    }
}

/// One fault's applied state.
enum Active {
    Quota,
    Net,
    Blocking,
    Hog(Child),
    /// A memory hog in the victim's cgroup with the cgroup's limit lowered under both, and the
    /// swap file the fault added (if the host had no swap).
    Squeeze {
        hog: Child,
        limit: (PathBuf, String),
        swap: Option<PathBuf>,
    },
    Nothing,
}

#[expect(clippy::too_many_arguments, reason = "one thread's whole context")]
fn inject(
    f: &Fault,
    target: Option<Target>,
    layout: &Layout,
    t0: Instant,
    stop: &AtomicBool,
    bin: &PathBuf,
    dir: &std::path::Path,
    rec: &mut FaultRecord,
) -> Result<(), String> {
    let kind = *f.kind.get_ref();
    let start = t0 + Duration::from_secs_f64(f.start_s);
    let end = start + Duration::from_secs_f64(f.duration_s);
    while Instant::now() < start {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        thread::sleep(TICK.min(start.saturating_duration_since(Instant::now())));
    }
    let tg = match (&target, kind) {
        (_, FaultKind::LoadSpike) => None,
        (Some(t), _) => Some(t.clone()),
        (None, _) => return Err("the fault's service is not in the plan".into()),
    };
    let mut active = Active::Nothing;
    let mut last = f64::NAN;
    let mut result = Ok(());
    rec.applied_unix_ms = unix_ms();
    println!(
        "[fault {}] {:?} on {} ({} {}, {:?}) starts",
        rec.id, kind, rec.service, f.intensity, rec.unit, f.onset
    );
    while Instant::now() < end && !stop.load(Ordering::Relaxed) {
        let t = f.start_s + (Instant::now() - start).as_secs_f64();
        let lvl = shape::level(f, t.min(f.start_s + f.duration_s - 1e-6));
        if (lvl - last).abs() > 1e-3 || last.is_nan() {
            if let Some(tg) = &tg
                && let Err(e) = apply(kind, f.intensity, lvl, tg, layout, bin, dir, &mut active)
            {
                result = Err(e);
                break;
            }
            last = lvl;
        }
        thread::sleep(TICK);
    }
    if let Some(tg) = &tg {
        undo(active, tg, layout);
    }
    rec.removed_unix_ms = unix_ms();
    println!("[fault {}] {:?} on {} ends", rec.id, kind, rec.service);
    result
}

/// Geometric interpolation from `from` (no fault) to `to` (full intensity).
fn towards(from: f64, to: f64, lvl: f64) -> f64 {
    (from.ln() * (1.0 - lvl) + to.ln() * lvl).exp()
}

#[expect(clippy::too_many_arguments, reason = "dispatch over every fault kind")]
fn apply(
    kind: FaultKind,
    intensity: f64,
    lvl: f64,
    tg: &Target,
    layout: &Layout,
    bin: &PathBuf,
    dir: &std::path::Path,
    active: &mut Active,
) -> Result<(), String> {
    match kind {
        FaultKind::CpuQuota => {
            let cores = (lvl > 0.0).then(|| towards(num_cpus(), intensity, lvl));
            layout
                .set_cpu_quota(&tg.cgroup, cores)
                .map_err(|e| e.to_string())?;
            *active = Active::Quota;
        }
        FaultKind::NetBw => {
            if !matches!(active, Active::Net) {
                net_setup(tg).map_err(|e| e.to_string())?;
                *active = Active::Net;
            }
            let rate = if lvl > 0.0 {
                format!("{:.3}mbit", towards(1000.0, intensity, lvl))
            } else {
                OPEN_RATE.to_string()
            };
            tc(
                &tg.netns,
                &[
                    "class", "change", "dev", HOST_IF, "parent", "1:", "classid", "1:10", "htb",
                    "rate", &rate, "ceil", &rate,
                ],
            )
            .map_err(|e| e.to_string())?;
        }
        FaultKind::Blocking => {
            let us = (intensity * lvl) as u64;
            ctl::send(&tg.ctl, &format!("block {us}"))
                .map_err(|e| format!("control socket {}: {e}", tg.ctl.display()))?;
            *active = Active::Blocking;
        }
        FaultKind::LoadSpike => {}
        FaultKind::MemHog => {
            if !matches!(active, Active::Squeeze { .. }) {
                *active = squeeze(intensity, tg, layout, bin, dir)?;
            }
            if let Active::Squeeze { hog, .. } = active
                && let Some(stdin) = hog.stdin.as_mut()
            {
                writeln!(stdin, "level {lvl}").map_err(|e| format!("hog stdin: {e}"))?;
            }
        }
        FaultKind::CpuHog | FaultKind::CacheHog | FaultKind::MembwHog | FaultKind::DiskHog => {
            if !matches!(active, Active::Hog(_)) {
                *active = Active::Hog(start_hog(kind, intensity, tg, layout, bin, dir)?);
            }
            if let Active::Hog(c) = active
                && let Some(stdin) = c.stdin.as_mut()
            {
                writeln!(stdin, "level {lvl}").map_err(|e| format!("hog stdin: {e}"))?;
            }
        }
    }
    Ok(())
}

fn num_cpus() -> f64 {
    std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
}

/// HTB on the host's veth: everything in class 1:1 (open), the service's replies (source port)
/// in class 1:10, whose rate the fault sets.
fn net_setup(tg: &Target) -> crate::error::Result<()> {
    let d = HOST_IF;
    let _ = tc(&tg.netns, &["qdisc", "del", "dev", d, "root"]);
    tc(
        &tg.netns,
        &[
            "qdisc", "add", "dev", d, "root", "handle", "1:", "htb", "default", "1",
        ],
    )?;
    tc(
        &tg.netns,
        &[
            "class", "add", "dev", d, "parent", "1:", "classid", "1:1", "htb", "rate", OPEN_RATE,
        ],
    )?;
    tc(
        &tg.netns,
        &[
            "class", "add", "dev", d, "parent", "1:", "classid", "1:10", "htb", "rate", OPEN_RATE,
        ],
    )?;
    let port = tg.port.to_string();
    tc(
        &tg.netns,
        &[
            "filter", "add", "dev", d, "parent", "1:", "protocol", "ip", "prio", "1", "u32",
            "match", "ip", "sport", &port, "0xffff", "flowid", "1:10",
        ],
    )?;
    Ok(())
}

/// A memory-capacity shortage, as a service meets it when its cgroup's limit is too small:
/// the limit is set to what the cgroup uses now plus half of the hog's `mib`, and the hog
/// keeps `mib * level` MiB touched in the victim's cgroup, so the kernel must page the
/// cgroup's memory (the victim's included) in and out of swap. A host without swap gets a swap
/// file for the fault's duration ([`crate::swap`]): without one the kernel could only
/// OOM-kill.
fn squeeze(
    mib: f64,
    tg: &Target,
    layout: &Layout,
    bin: &PathBuf,
    dir: &std::path::Path,
) -> Result<Active, String> {
    let base = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "seer-tb-".into());
    let used = layout.memory_usage(&tg.cgroup).ok_or_else(|| {
        format!(
            "cgroup {}: no memory controller to limit (a memory-capacity fault needs one)",
            tg.cgroup
        )
    })?;
    let swap = crate::swap::ensure(&base, mib as u64).map_err(|e| e.to_string())?;
    let limit = used + ((mib / 2.0) as u64) * (1 << 20);
    let was = match layout.set_memory_limit(&tg.cgroup, limit) {
        Ok(w) => w,
        Err(e) => {
            let _ = release(None, swap.as_deref());
            return Err(e.to_string());
        }
    };
    println!(
        "[fault] memory limit of {} set to {} MiB ({} MiB in use){}",
        tg.cgroup,
        limit >> 20,
        used >> 20,
        swap.as_ref()
            .map(|f| format!(", swap file {}", f.display()))
            .unwrap_or_default()
    );
    match start_hog(FaultKind::MemHog, mib, tg, layout, bin, dir) {
        Ok(hog) => Ok(Active::Squeeze {
            hog,
            limit: was,
            swap,
        }),
        Err(e) => {
            let _ = release(Some(&was), swap.as_deref());
            Err(e)
        }
    }
}

/// Undoes what [`squeeze`] set up: the memory limit it replaced (file, text), then the swap
/// file it added; both are tried, the first error is returned.
fn release(
    limit: Option<&(PathBuf, String)>,
    swap: Option<&std::path::Path>,
) -> Result<(), String> {
    let restored = limit.map_or(Ok(()), |(f, t)| {
        crate::cgroup::restore_memory_limit(f, t).map_err(|e| e.to_string())
    });
    let off = swap.map_or(Ok(()), |f| crate::swap::off(f).map_err(|e| e.to_string()));
    restored.and(off)
}

fn start_hog(
    kind: FaultKind,
    intensity: f64,
    tg: &Target,
    layout: &Layout,
    bin: &PathBuf,
    dir: &std::path::Path,
) -> Result<Child, String> {
    let k = match kind {
        FaultKind::CpuHog => "cpu",
        FaultKind::CacheHog => "cache",
        FaultKind::MembwHog => "membw",
        FaultKind::MemHog => "mem",
        _ => "disk",
    };
    let mut cmd = Command::new(bin);
    cmd.args([
        "hog",
        "--kind",
        k,
        "--intensity",
        &intensity.to_string(),
        "--dir",
    ])
    .arg(dir)
    .stdin(Stdio::piped())
    .stdout(Stdio::null());
    let (cpus, cgroups) = hog_placement(kind, tg, layout);
    if let Some(cpus) = cpus {
        cmd.args(["--cpus", &crate::scenario::format_cpu_list(&cpus)]);
    }
    let p = Placement {
        netns: Some(tg.netns.clone()),
        cgroups,
        die_with_parent: true,
    };
    spawn(&mut cmd, &p).map_err(|e| e.to_string())
}

/// Where a hog runs. A CPU hog joins every cgroup of the victim, its cpuset included, and is
/// pinned to the victim's CPUs: it competes for exactly the victim's cores. LLC and
/// memory-bandwidth hogs must run *beside* the victim on another core that shares the LLC and
/// the memory controller (on the same core they would mostly steal CPU time): they join the
/// victim's cgroups except the cpuset and are pinned to the other CPUs of the testbed (the
/// victim's own when it has them all). Memory-capacity and disk hogs stay in the victim's
/// cgroups, cpuset included.
fn is_hog(k: FaultKind) -> bool {
    matches!(
        k,
        FaultKind::CpuHog
            | FaultKind::CacheHog
            | FaultKind::MembwHog
            | FaultKind::MemHog
            | FaultKind::DiskHog
    )
}

fn hog_placement(
    kind: FaultKind,
    tg: &Target,
    layout: &Layout,
) -> (Option<Vec<usize>>, Vec<std::path::PathBuf>) {
    let victim = layout.cpus(&tg.cgroup);
    match kind {
        FaultKind::CacheHog | FaultKind::MembwHog => {
            let all = tg
                .cgroup
                .rsplit_once('/')
                .and_then(|(parent, _)| layout.cpus(parent));
            let others = match (&victim, all) {
                (Some(v), Some(a)) => {
                    let o: Vec<usize> = a.into_iter().filter(|c| !v.contains(c)).collect();
                    if o.is_empty() {
                        Some(v.clone())
                    } else {
                        Some(o)
                    }
                }
                _ => None,
            };
            (others, layout.procs_files_but_cpuset(&tg.cgroup))
        }
        _ => (victim, layout.procs_files(&tg.cgroup)),
    }
}

fn undo(active: Active, tg: &Target, layout: &Layout) {
    let r = match active {
        Active::Quota => layout
            .set_cpu_quota(&tg.cgroup, None)
            .map_err(|e| e.to_string()),
        Active::Net => tc(&tg.netns, &["qdisc", "del", "dev", HOST_IF, "root"])
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Active::Blocking => ctl::send(&tg.ctl, "block 0")
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Active::Hog(mut c) => {
            drop(c.stdin.take());
            let _ = c.kill();
            let _ = c.wait();
            Ok(())
        }
        Active::Squeeze {
            mut hog,
            limit,
            swap,
        } => {
            drop(hog.stdin.take());
            let _ = hog.kill();
            let _ = hog.wait();
            release(Some(&limit), swap.as_deref())
        }
        Active::Nothing => Ok(()),
    };
    if let Err(e) = r {
        eprintln!("warning: undoing a fault failed: {e} (`down` removes the namespaces anyway)");
    }
}
