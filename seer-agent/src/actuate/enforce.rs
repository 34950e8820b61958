//! Carries out a policy [`Decision`]: in `enforce` mode through the [`Actuator`] (journaled,
//! undoable), in `recommend` and `dry-run` modes not at all: the actions come back for the
//! alert (recommend) or the log (dry-run).
//!
//! Units: CPU level = percent of the service's CPU before seer's first change to it (its
//! [`CpuBaseline`]: its quota, or with none the CPUs it used), carried out as a CFS quota;
//! LLC level = exclusive L3 ways; memory-bandwidth level = MBA percent; Net level = the ceiling
//! (Mbit/s) of the service's class in an installed HTB plan (a service with no class there gets
//! a clear failure).
//!
//! CPU steps start from what the service has. A service with no quota has nothing to raise:
//! its raise changes nothing ([`Outcome::Unchanged`], saying so). A cut below what a service
//! uses now is said in the outcome's note.
use std::{collections::BTreeMap, time::Duration};

use super::{
    Actuator,
    cgroup::{self, CpuAction, CpuBaseline, CpuCgroup, CpuReading, MIN_QUOTA_US, MIN_USED_CPUS},
    htb::{self, HtbClass, HtbPlan},
};
use crate::respond::policy::{Action, Control, Decision, Mode};
pub use crate::respond::policy::{Outcome, not_applied, nothing_raised};

/// Where one service's knobs are (from discovery: its cgroup and its pids).
#[derive(Debug, Clone, Default)]
pub struct ServiceKnobs {
    pub cpu: Option<CpuCgroup>,
    pub pids: Vec<u32>,
}

/// What carrying out one action did.
enum Done {
    Applied(Option<String>),
    Unchanged(String),
}

/// A number of CPUs for a note: 2.0, 1.25, 0.01 (two decimals, three below a tenth, trailing
/// zeros dropped but one).
fn cpus(x: f64) -> String {
    let s = if x >= 0.1 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    };
    let t = s.trim_end_matches('0');
    if t.ends_with('.') {
        format!("{t}0")
    } else {
        t.to_string()
    }
}

pub struct Enforcer {
    pub actuator: Actuator,
    pub targets: BTreeMap<String, ServiceKnobs>,
    /// CFS period for the quota of a service that had none.
    pub period_us: u64,
    /// How long a service's CPU use is measured (two readings this far apart).
    pub usage_window: Duration,
    /// HTB plans installed through the actuator, as installed (Revert goes back to these).
    pub plans: Vec<HtbPlan>,
    /// Each service's CPU before seer's first change to it, and the cgroup it was read from.
    baselines: BTreeMap<String, (CpuCgroup, CpuBaseline)>,
    /// CPU readings taken when a response for a service began ([`Self::watch_cgroup`]): its
    /// first step's baseline is measured from them instead of waiting `usage_window` on the
    /// tick thread.
    watched: BTreeMap<String, (CpuCgroup, CpuReading)>,
    /// CPU readings of raised services whose rollback is due ([`Self::keep_cpu`]), and those
    /// kept past their hold (said once in the log, not every recheck).
    due: BTreeMap<String, CpuReading>,
    kept: std::collections::BTreeSet<String>,
}

/// A raised CPU quota is kept past its hold while the service wants more than this share of
/// the quota it had before seer: giving that back would throttle it again (measured: a load
/// ramp against a capped api broke the QoS 300 ms after each rollback that met its peak).
pub const KEEP_USED_SHARE: f64 = 0.8;
/// How often a kept raise is looked at again.
pub const KEEP_RECHECK: Duration = Duration::from_secs(1);

impl Enforcer {
    /// The enforcer of `enforce` mode: opens the action journal (undoing what a crashed run
    /// left in force) and probes resctrl (without it, cache and memory-bandwidth actions fail
    /// and say so). Returns it and whether an undo of a previous run's change failed.
    pub fn open(journal: &std::path::Path) -> anyhow::Result<(Enforcer, bool)> {
        let rc = match super::resctrl::Resctrl::probe(std::path::Path::new(
            super::resctrl::DEFAULT_ROOT,
        )) {
            Ok(r) => Some(r),
            Err(e) => {
                log::info!(
                    "respond: CAT/MBA unavailable ({e}); cache and memory-bandwidth actions will fail, CPU and network work"
                );
                None
            }
        };
        let (act, rep) = Actuator::open(journal, rc).map_err(|e| {
            anyhow::anyhow!(
                "respond: opening the action journal {}: {e}",
                journal.display()
            )
        })?;
        if rep.restored + rep.gone > 0 || !rep.failed.is_empty() {
            log::warn!(
                "respond: undid what a previous run left: {} restored, {} already gone, {} failed",
                rep.restored,
                rep.gone,
                rep.failed.len()
            );
        }
        Ok((Enforcer::new(act), !rep.failed.is_empty()))
    }
}

/// The CPU cgroup of a service whose processes are `pids` (its first one's).
fn cpu_cgroup_of(name: &str, pids: &[u32]) -> Option<CpuCgroup> {
    pids.first().and_then(|&p| {
        CpuCgroup::of_pid(p)
            .map_err(|e| log::warn!("respond: {name}: {e}"))
            .ok()
    })
}

/// The responder's hands in `enforce` mode.
impl crate::respond::Hands for Enforcer {
    fn watch(&mut self, service: &str, pids: &[u32]) {
        if let Some(cg) = cpu_cgroup_of(service, pids) {
            self.watch_cgroup(service, cg);
        }
    }

    fn keep(&mut self, service: &str, resource: Control, level: u32) -> Option<Duration> {
        match resource {
            Control::Cpu => self.keep_cpu(service, level),
            _ => None,
        }
    }

    fn carry_out(&mut self, dec: &Decision, targets: &[(String, Vec<u32>)]) -> Vec<Outcome> {
        for (name, pids) in targets {
            let cpu = cpu_cgroup_of(name, pids);
            self.targets.insert(
                name.clone(),
                ServiceKnobs {
                    cpu,
                    pids: pids.clone(),
                },
            );
        }
        Enforcer::carry_out(self, dec)
    }

    fn undo_all(&mut self) {
        let rep = self.actuator.undo_all();
        log::info!(
            "respond: undid local actions: {} restored, {} already gone, {} failed",
            rep.restored,
            rep.gone,
            rep.failed.len()
        );
        for f in &rep.failed {
            log::error!("respond: could not undo: {f} (kept in the journal for the next start)");
        }
    }
}

impl Enforcer {
    pub fn new(actuator: Actuator) -> Self {
        Enforcer {
            actuator,
            targets: BTreeMap::new(),
            period_us: 100_000,
            usage_window: Duration::from_millis(200),
            plans: Vec::new(),
            baselines: BTreeMap::new(),
            watched: BTreeMap::new(),
            due: BTreeMap::new(),
            kept: Default::default(),
        }
    }

    /// Whether to keep `service`'s CPU raise (`level` > 100 of a quota it had before seer)
    /// now that its hold is over: `Some(wait)` to ask again after `wait`. What it wants (used
    /// plus throttled, [`CpuReading::wanted_since`]) is measured
    /// between two calls at least [`cgroup::MIN_SINCE`] apart, never by waiting on the tick
    /// thread: the first call takes a reading and asks to be called again a tick later. A
    /// service that had no quota, a cut (level <= 100) or an unreadable cgroup: rolled back.
    pub fn keep_cpu(&mut self, service: &str, level: u32) -> Option<Duration> {
        let (cg, pre_cpus) = match self.baselines.get(service) {
            Some((
                cg,
                CpuBaseline::Quota {
                    quota_us,
                    period_us,
                    ..
                },
            )) if level > 100 && *period_us > 0 => {
                (cg.clone(), *quota_us as f64 / *period_us as f64)
            }
            _ => {
                self.due.remove(service);
                return None;
            }
        };
        let now = match cg.reading() {
            Ok(r) => r,
            Err(e) => {
                log::debug!("actuate: {service}'s CPU before the rollback: {e}");
                self.due.remove(service);
                return None;
            }
        };
        let Some(before) = self.due.remove(service) else {
            self.due.insert(service.into(), now);
            return Some(cgroup::MIN_SINCE);
        };
        if before.at.elapsed() < cgroup::MIN_SINCE {
            self.due.insert(service.into(), before);
            return Some(cgroup::MIN_SINCE);
        }
        // What it wanted, not what it got: a quota that someone else squeezed again since
        // (here the testbed's next fault) leaves it using nothing while it is starved.
        let wanted = now
            .wanted_since(&before)
            .unwrap_or_else(|| now.used_since(&before));
        if wanted > KEEP_USED_SHARE * pre_cpus {
            let why = format!(
                "keeps {service}'s raised CPU quota past its hold: it wants {} CPUs, more than {:.0}% of the {} it had before seer",
                cpus(wanted),
                KEEP_USED_SHARE * 100.0,
                cpus(pre_cpus)
            );
            if self.kept.insert(service.into()) {
                log::info!("actuate: {why}");
            } else {
                log::debug!("actuate: {why}");
            }
            self.due.insert(service.into(), now);
            Some(KEEP_RECHECK)
        } else {
            if self.kept.remove(service) {
                log::info!(
                    "actuate: {service} wants {} CPUs, within the {} it had before seer: its raise is rolled back",
                    cpus(wanted),
                    cpus(pre_cpus)
                );
            }
            None
        }
    }

    /// A response for `service` (in cgroup `cg`) begins: its CPU counters now, for its first
    /// step's baseline (no reading once it has one).
    pub fn watch_cgroup(&mut self, service: &str, cg: CpuCgroup) {
        if self.baselines.contains_key(service) {
            return;
        }
        match cg.reading() {
            Ok(r) => {
                self.watched.insert(service.into(), (cg, r));
            }
            Err(e) => log::debug!("actuate: {service}'s CPU counters: {e}"),
        }
    }

    pub fn carry_out(&mut self, d: &Decision) -> Vec<Outcome> {
        if d.mode != Mode::Enforce {
            return not_applied(d);
        }
        d.actions
            .iter()
            .map(|a| match self.apply(a) {
                Ok(Done::Applied(note)) => {
                    if let Some(n) = &note {
                        log::info!("actuate: {n}");
                    }
                    Outcome::Applied {
                        action: a.clone(),
                        note,
                    }
                }
                Ok(Done::Unchanged(reason)) => {
                    log::info!("actuate: {a:?} changes nothing: {reason}");
                    Outcome::Unchanged {
                        action: a.clone(),
                        reason,
                    }
                }
                Err(error) => {
                    log::warn!("actuate: {a:?} not applied: {error}");
                    Outcome::Failed {
                        action: a.clone(),
                        error,
                    }
                }
            })
            .collect()
    }

    fn apply(&mut self, a: &Action) -> Result<Done, String> {
        let applied = |r: Result<(), String>| r.map(|()| Done::Applied(None));
        match a {
            Action::Set {
                service,
                resource,
                level,
            } => applied(match resource {
                Control::Cpu => return self.set_cpu(service, *level),
                Control::Llc => {
                    let pids = self.target(service)?.pids;
                    self.actuator
                        .l3_ways(service, *level, &pids)
                        .map(drop)
                        .map_err(|e| e.to_string())
                }
                Control::MemBw => {
                    let pids = self.target(service)?.pids;
                    self.actuator
                        .mb(service, *level, &pids)
                        .map(drop)
                        .map_err(|e| e.to_string())
                }
                Control::Net => {
                    let (iface, mut class) = self.class_of(service)?;
                    class.ceil_bps = (u64::from(*level) * 1_000_000).max(8_000);
                    class.rate_bps = class.rate_bps.min(class.ceil_bps);
                    htb::change_class(&iface, &class).map_err(|e| e.to_string())
                }
            }),
            Action::Revert { service, resource } => applied({
                let rep = match resource {
                    Control::Cpu => {
                        // Back as it was; the next change starts from a fresh reading.
                        self.baselines.remove(service);
                        self.actuator.undo_cpu(service)
                    }
                    Control::Llc | Control::MemBw => self.actuator.release_resctrl(service),
                    Control::Net => {
                        let (iface, class) = self.class_of(service)?;
                        return applied(
                            htb::change_class(&iface, &class).map_err(|e| e.to_string()),
                        );
                    }
                };
                if rep.failed.is_empty() {
                    Ok(())
                } else {
                    Err(rep.failed.join("; "))
                }
            }),
        }
    }

    /// `service`'s CPU at `level` percent of its baseline: a quota of that much of the quota
    /// it had, or of the CPUs it used when it had none. With no quota, a level of 100 or more
    /// has nothing to raise (seer's own cap, if any, is lifted instead).
    fn set_cpu(&mut self, service: &str, level: u32) -> Result<Done, String> {
        let cg = self
            .target(service)?
            .cpu
            .ok_or_else(|| format!("no cpu cgroup known for {service}"))?;
        let (base, measured) = self.baseline(service, &cg)?;
        let pct = f64::from(level) / 100.0;
        let (quota_us, period_us) = match base {
            CpuBaseline::Quota {
                quota_us,
                period_us,
                ..
            } if level < 100 => (
                (u128::from(quota_us) * u128::from(level) / 100) as u64,
                period_us,
            ),
            CpuBaseline::Quota { period_us, .. } => (
                (base.raise_base() * pct * period_us as f64) as u64,
                period_us,
            ),
            CpuBaseline::Unlimited { used } if level >= 100 => {
                if self.actuator.holds_cpu(service) {
                    let rep = self.actuator.undo_cpu(service);
                    if !rep.failed.is_empty() {
                        return Err(rep.failed.join("; "));
                    }
                    return Ok(Done::Applied(Some(format!(
                        "lifts {service}'s CPU quota: no quota again, as before seer (it used {} CPUs then)",
                        cpus(used)
                    ))));
                }
                return Ok(Done::Unchanged(format!(
                    "{service} has no CPU quota (unlimited): nothing to raise; it used {} CPUs",
                    cpus(used)
                )));
            }
            CpuBaseline::Unlimited { .. } => {
                let period_us = self.period_us;
                ((base.cpus() * pct * period_us as f64) as u64, period_us)
            }
        };
        let quota_us = quota_us.max(MIN_QUOTA_US);
        let new = quota_us as f64 / period_us.max(1) as f64;
        let of = match base {
            CpuBaseline::Quota { wanted, .. } if level >= 100 && wanted > base.cpus() => format!(
                "{level}% of the {} CPUs it wanted under its {}-CPU quota: what it used plus the time the quota held it back",
                cpus(wanted),
                cpus(base.cpus())
            ),
            CpuBaseline::Quota { .. } => format!("{level}% of its {}-CPU quota", cpus(base.cpus())),
            CpuBaseline::Unlimited { used } if used < MIN_USED_CPUS => format!(
                "{level}% of {MIN_USED_CPUS} CPUs, the least a step starts from: it used {} with no quota",
                cpus(used)
            ),
            CpuBaseline::Unlimited { used } => {
                format!("{level}% of the {} CPUs it used with no quota", cpus(used))
            }
        };
        let note = if level >= 100 {
            let may = cg.allowed_cpus();
            let room = if new > may as f64 {
                format!(" (it may run on {may} CPUs only)")
            } else {
                String::new()
            };
            // From the quota in effect now (an earlier step's, or the baseline).
            let now = cg.limit_with(cgroup::read_knob).ok().and_then(|l| {
                l.quota_us
                    .map(|q| cpus(q as f64 / l.period_us.max(1) as f64))
            });
            let now = now.unwrap_or_else(|| "no quota".into());
            format!(
                "raises {service}'s CPU quota from {now} to {} CPUs ({of}){room}",
                cpus(new)
            )
        } else {
            // What it uses now: the baseline's reading when just taken, else a fresh one.
            let used = match measured {
                Some(u) => u,
                None => cg.used_cpus(self.usage_window).map_err(|e| e.to_string())?,
            };
            let (used_s, new_s) = (cpus(used), cpus(new));
            if new < used {
                format!(
                    "cuts {service} from {used_s} to {new_s} CPUs ({of}): below what it uses now"
                )
            } else {
                format!("caps {service} at {new_s} CPUs ({of}); it uses {used_s} now")
            }
        };
        let q = CpuAction::Quota {
            quota_us,
            period_us,
        };
        self.actuator
            .cpu(service, &cg, &q)
            .map_err(|e| e.to_string())?;
        Ok(Done::Applied(Some(note)))
    }

    /// `service`'s CPU before seer's first change to it, taken once (read again only if its
    /// cgroup changed). Quota files seer already changed are read from the journal, which kept
    /// their values from before. Also the CPUs it used, when that was measured just now.
    fn baseline(
        &mut self,
        service: &str,
        cg: &CpuCgroup,
    ) -> Result<(CpuBaseline, Option<f64>), String> {
        if let Some((c, b)) = self.baselines.get(service)
            && c == cg
        {
            return Ok((*b, None));
        }
        // A reading from the response's start, if it is old enough to measure from.
        let since = self
            .watched
            .remove(service)
            .filter(|(c, r)| c == cg && r.at.elapsed() >= cgroup::MIN_SINCE)
            .map(|(_, r)| r);
        let act = &self.actuator;
        let b = cg
            .baseline_with(
                |p| match act.journaled_old(p) {
                    Some(v) => Ok(v),
                    None => cgroup::read_knob(p),
                },
                since,
                self.usage_window,
            )
            .map_err(|e| format!("reading {service}'s CPU before changing it: {e}"))?;
        let over = match since {
            Some(r) => format!(
                "the {:.1} s since its response began",
                r.at.elapsed().as_secs_f64()
            ),
            None => format!("{} ms", self.usage_window.as_millis()),
        };
        log::info!("actuate: {service}'s CPU before seer (measured over {over}): {b:?}");
        self.baselines.insert(service.into(), (cg.clone(), b));
        let measured = match b {
            CpuBaseline::Unlimited { used } => Some(used),
            CpuBaseline::Quota { .. } => None,
        };
        Ok((b, measured))
    }

    fn target(&self, service: &str) -> Result<ServiceKnobs, String> {
        self.targets.get(service).cloned().ok_or_else(|| {
            format!("service {service} is not known (it exited, or discovery has not seen it)")
        })
    }
}

impl Enforcer {
    /// The interface and class (as installed) that shape `service`'s egress.
    fn class_of(&self, service: &str) -> Result<(String, HtbClass), String> {
        self.plans
            .iter()
            .find_map(|p| {
                let c = p.classes.iter().find(|c| c.service == service)?;
                Some((p.iface.clone(), c.clone()))
            })
            .ok_or_else(|| {
                format!("{service} has no HTB class (install a plan with `seer-agent act htb`)")
            })
    }
}

#[cfg(test)]
mod tests {
    use std::{cell::Cell, time::Duration};

    use super::*;
    use crate::actuate::{
        resctrl::Resctrl,
        resctrl_emu::Emulated,
        testutil::{TempDir, V1Cgroup},
    };
    use crate::respond::policy::{Clock, Policy, PolicyConfig};

    struct FakeClock(Cell<Duration>);
    impl Clock for &FakeClock {
        fn now(&self) -> Duration {
            self.0.get()
        }
    }

    fn knob(p: &std::path::Path) -> String {
        std::fs::read_to_string(p).expect("read").trim().to_string()
    }

    #[test]
    fn enforce_applies_and_rolls_back_after_hold_recommend_touches_nothing() {
        let Some(cg) = V1Cgroup::new("enforce") else {
            println!("SKIP: needs root and a v1 cpu hierarchy at /sys/fs/cgroup/cpu");
            return;
        };
        // A service with a 1-CPU quota (steps are percent of what it has).
        let quota = cg.0.join("cpu.cfs_quota_us");
        std::fs::write(cg.0.join("cpu.cfs_period_us"), "100000").expect("period");
        std::fs::write(&quota, "100000").expect("quota");
        let before = knob(&quota);
        let emu = Emulated::new("enforce-rc", 0xfff, 2, 4);
        let root = emu.root();
        let r = Resctrl::probe_with(&root, Box::new(emu)).expect("probe");
        let d = TempDir::new("enforce-j");
        let (act, _) = Actuator::open(&d.path().join("j.json"), Some(r)).expect("actuator");
        let mut e = Enforcer::new(act);
        e.targets.insert(
            "api".into(),
            ServiceKnobs {
                cpu: Some(CpuCgroup::V1 {
                    cpu: cg.0.clone(),
                    cpuset: None,
                }),
                pids: vec![],
            },
        );
        let clk = FakeClock(Cell::new(Duration::ZERO));

        // recommend: the action comes back, the host is untouched.
        let mut rec = Policy::new(PolicyConfig::default(), &clk);
        let out = e.carry_out(&rec.on_alert("api", Control::Cpu, &[]));
        assert!(matches!(out[..], [Outcome::Recommended { .. }]), "{out:?}");
        assert_eq!(knob(&quota), before);

        // enforce: quota set, LLC ways given; then healthy for the hold -> both reverted.
        let mut p = Policy::new(
            PolicyConfig {
                mode: Mode::Enforce,
                ..Default::default()
            },
            &clk,
        );
        let out = e.carry_out(&p.on_alert("api", Control::Cpu, &[]));
        assert!(matches!(out[..], [Outcome::Applied { .. }]), "{out:?}");
        assert_eq!(knob(&quota), "125000", "125% of its 1-CPU quota per 100 ms");
        let out = e.carry_out(&p.on_alert("api", Control::Llc, &[]));
        assert!(matches!(out[..], [Outcome::Applied { .. }]), "{out:?}");
        assert!(knob(&root.join("seer-api/schemata")).contains("L3:0=c00"));
        clk.0.set(Duration::from_secs(31));
        let out = e.carry_out(&p.on_tick());
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(
            out.iter().all(|o| matches!(o, Outcome::Applied { .. })),
            "{out:?}"
        );
        assert_eq!(knob(&quota), before, "rolled back");
        assert!(!root.join("seer-api").exists());
        assert!(knob(&root.join("schemata")).contains("L3:0=fff"));

        // A service that is gone: a clear failure, nothing else touched.
        let out = e.carry_out(&p.on_alert("vanished", Control::Cpu, &[]));
        match &out[..] {
            [Outcome::Failed { error, .. }] => assert!(error.contains("not known"), "{error}"),
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    /// A throwaway network namespace with a veth pair a0/b0 inside, removed on drop.
    struct Netns(String);

    impl Netns {
        fn new() -> Option<Self> {
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } != 0 {
                return None;
            }
            let n = format!("seer-enf{}", std::process::id());
            let ok = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "ip netns add {n} && ip -n {n} link add a0 type veth peer name b0 && \
                     ip -n {n} link set a0 up && ip -n {n} link set b0 up"
                ))
                .status()
                .is_ok_and(|s| s.success());
            let ns = Netns(n);
            ok.then_some(ns)
        }
    }

    impl Drop for Netns {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &self.0])
                .status();
        }
    }

    fn tc_classes(ns: &str) -> String {
        let o = std::process::Command::new("ip")
            .args(["netns", "exec", ns, "tc", "class", "show", "dev", "a0"])
            .output()
            .expect("tc");
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    #[test]
    fn net_caps_an_antagonists_htb_ceiling_and_reverts_it() {
        let Some(ns) = Netns::new() else {
            println!("SKIP: needs root and network namespaces");
            return;
        };
        let name = ns.0.clone();
        // The actuator runs on a thread inside the namespace (setns is per thread).
        std::thread::spawn(move || {
            let f = std::fs::File::open(format!("/run/netns/{name}")).expect("open netns");
            // SAFETY: a valid namespace fd; CLONE_NEWNET switches only this thread.
            let rc =
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            let d = TempDir::new("enforce-net-j");
            let (mut act, _) = Actuator::open(&d.path().join("j.json"), None).expect("actuator");
            let plan = HtbPlan {
                iface: "a0".into(),
                link_bps: 1_000_000_000,
                classes: vec![HtbClass {
                    service: "bulk".into(),
                    minor: 0x10,
                    rate_bps: 100_000_000,
                    ceil_bps: 1_000_000_000,
                    prio: 7,
                    sports: vec![5001],
                }],
            };
            act.htb(&plan).expect("install plan");
            let mut e = Enforcer::new(act);
            e.plans.push(plan);
            let clk = FakeClock(Cell::new(Duration::ZERO));
            let mut p = Policy::new(
                PolicyConfig {
                    mode: Mode::Enforce,
                    ..Default::default()
                },
                &clk,
            );
            let ants = vec!["bulk".to_string()];
            for _ in 0..2 {
                let out = e.carry_out(&p.on_alert("web", Control::Net, &ants));
                assert!(matches!(out[..], [Outcome::Applied { .. }]), "{out:?}");
            }
            let capped = tc_classes(&name);
            assert!(
                capped.contains("rate 100Mbit ceil 600Mbit"),
                "two steps of 200: {capped}"
            );
            clk.0.set(Duration::from_secs(60));
            let out = e.carry_out(&p.on_tick());
            assert!(matches!(out[..], [Outcome::Applied { .. }]), "{out:?}");
            let back = tc_classes(&name);
            assert!(back.contains("rate 100Mbit ceil 1Gbit"), "reverted: {back}");
            // A service without a class is a clear failure.
            let out = e.carry_out(&p.on_alert("web", Control::Net, &["nobody".into()]));
            match &out[..] {
                [Outcome::Failed { error, .. }] => {
                    assert!(error.contains("no HTB class"), "{error}")
                }
                other => panic!("expected a failure, got {other:?}"),
            }
            let rep = e.actuator.undo_all();
            assert_eq!((rep.restored, rep.failed.len()), (1, 0), "{rep:?}");
        })
        .join()
        .expect("netns thread");
        assert!(
            !tc_classes(&ns.0).contains("5ee"),
            "undo removed seer's HTB"
        );
    }
}
