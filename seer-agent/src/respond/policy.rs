//! What to do about a predicted violation: (culprit, resource) -> bounded actions.
//!
//! - CPU: levels are percent of what each service had before seer (its quota, or the CPUs it
//!   used when it had none: the actuator reads it; raises of a throttled quota, of what the
//!   service wanted: `CpuBaseline::raise_base`). The culprit's quota grows one step (up to
//!   `max`); at its max, or when it has no quota to raise ([`Policy::cannot_grow`]), the
//!   busiest antagonist's quota shrinks one step, never below `floor`.
//! - LLC: the culprit gets one more exclusive L3 way (up to `max`).
//! - Memory bandwidth, network: the antagonists' MB cap / egress ceiling shrink one step, never
//!   below `floor` (a culprit cannot be given more than the whole resource).
//! - Rollback: once a culprit has had no alert for `hold`, everything done for it is reverted.
//! - Modes: `enforce` applies the actions, `recommend` hands them to the alert for the cluster
//!   manager, `dry-run` only logs them. The policy is pure: the caller applies (or not).
use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::config::RespondConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Control {
    Cpu,
    Llc,
    MemBw,
    Net,
}

pub use crate::config::Mode;

/// Bounds of one resource's knob, in its own unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Knob {
    /// Level when seer has done nothing (e.g. 100 % MB; 100 % of a service's own CPU).
    pub default: u32,
    /// Nobody is taken below this.
    pub floor: u32,
    /// Nobody is given more than this.
    pub max: u32,
    pub step: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyConfig {
    pub mode: Mode,
    /// CPU quota, percent of the service's CPU before seer (its quota, or what it used).
    pub cpu_pct: Knob,
    /// Exclusive L3 ways.
    pub llc_ways: Knob,
    /// Memory bandwidth cap, percent.
    pub mb_pct: Knob,
    /// Egress ceiling, Mbit/s.
    pub net_mbit: Knob,
    /// Healthy this long (no alert) -> roll back.
    pub hold: Duration,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self::from_config(&RespondConfig::default())
    }
}

impl PolicyConfig {
    /// The policy a `[respond]` config describes: its mode, hold time and floors; each knob's
    /// range and step are seer's.
    pub fn from_config(c: &RespondConfig) -> Self {
        PolicyConfig {
            mode: c.mode,
            cpu_pct: Knob {
                default: 100,
                floor: c.cpu_floor_pct,
                max: 200,
                step: 25,
            },
            llc_ways: Knob {
                default: 0,
                floor: 0,
                max: 8,
                step: 2,
            },
            mb_pct: Knob {
                default: 100,
                floor: c.mb_floor_pct,
                max: 100,
                step: 20,
            },
            net_mbit: Knob {
                default: 1000,
                floor: c.net_floor_mbit,
                max: 1000,
                step: 200,
            },
            hold: Duration::from_secs(c.hold_s),
        }
    }
}

/// One concrete action, as applied locally or carried by an alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Set `service`'s level of `resource` (unit per resource: % of its CPU before seer, ways,
    /// % MB, Mbit/s).
    Set {
        service: String,
        resource: Control,
        level: u32,
    },
    /// Put `service`'s `resource` back as it was before seer.
    Revert { service: String, resource: Control },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub mode: Mode,
    pub actions: Vec<Action>,
    /// Why nothing (more) could be done, when that is the case.
    pub note: Option<String>,
}

/// Time source (monotonic, since an arbitrary start), so tests can drive time.
pub trait Clock {
    fn now(&self) -> Duration;
}

pub struct SystemClock(std::time::Instant);

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock(std::time::Instant::now())
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

pub struct Policy<C: Clock> {
    pub cfg: PolicyConfig,
    clock: C,
    /// Levels seer has set: (service, resource) -> (level, culprit it was set for).
    levels: BTreeMap<(String, Control), (u32, String)>,
    /// Culprit -> time of its last alert.
    last_alert: BTreeMap<String, Duration>,
    /// Culprits found to have nothing to raise (no CPU quota), until rolled back.
    ungrowable: BTreeSet<(String, Control)>,
}

impl<C: Clock> Policy<C> {
    pub fn new(cfg: PolicyConfig, clock: C) -> Self {
        Policy {
            cfg,
            clock,
            levels: BTreeMap::new(),
            last_alert: BTreeMap::new(),
            ungrowable: BTreeSet::new(),
        }
    }

    /// The actuator found nothing to raise for `service`'s `r` (a CPU raise of a service with
    /// no quota changed nothing): its level stays as it was before the step, and its next steps
    /// go to its antagonists, until it is rolled back.
    pub fn cannot_grow(&mut self, service: &str, r: Control) {
        let key = (service.to_string(), r);
        if self.levels.get(&key).is_some_and(|(_, c)| c == service) {
            self.levels.remove(&key);
        }
        self.ungrowable.insert(key);
    }

    fn knob(&self, r: Control) -> Knob {
        match r {
            Control::Cpu => self.cfg.cpu_pct,
            Control::Llc => self.cfg.llc_ways,
            Control::MemBw => self.cfg.mb_pct,
            Control::Net => self.cfg.net_mbit,
        }
    }

    /// Whether a level seer set for `service` is in effect (a diagnosis then must not inject
    /// next to it: it would measure the action, not the shortage).
    pub fn in_effect(&self, service: &str) -> bool {
        self.levels.keys().any(|(s, _)| s == service)
    }

    pub fn level(&self, service: &str, r: Control) -> u32 {
        self.levels
            .get(&(service.to_string(), r))
            .map_or(self.knob(r).default, |(l, _)| *l)
    }

    fn set(&mut self, service: &str, r: Control, level: u32, culprit: &str) -> Action {
        self.levels
            .insert((service.into(), r), (level, culprit.into()));
        Action::Set {
            service: service.into(),
            resource: r,
            level,
        }
    }

    /// Grows `service` one step; `None` at max, or with nothing to raise.
    fn grow(&mut self, service: &str, r: Control, culprit: &str) -> Option<Action> {
        let k = self.knob(r);
        let cur = self.level(service, r);
        let room = cur < k.max && !self.ungrowable.contains(&(service.to_string(), r));
        room.then(|| self.set(service, r, (cur + k.step).min(k.max), culprit))
    }

    /// Shrinks `service` one step; `None` at the floor.
    fn shrink(&mut self, service: &str, r: Control, culprit: &str) -> Option<Action> {
        let k = self.knob(r);
        let cur = self.level(service, r);
        (cur > k.floor)
            .then(|| self.set(service, r, cur.saturating_sub(k.step).max(k.floor), culprit))
    }

    /// A predicted violation: `culprit` is short of `resource`; `antagonists` share it,
    /// heaviest user first.
    pub fn on_alert(
        &mut self,
        culprit: &str,
        resource: Control,
        antagonists: &[String],
    ) -> Decision {
        self.last_alert.insert(culprit.into(), self.clock.now());
        let mut actions = Vec::new();
        match resource {
            Control::Cpu | Control::Llc => {
                if let Some(a) = self.grow(culprit, resource, culprit) {
                    actions.push(a);
                } else if resource == Control::Cpu
                    && let Some(a) = antagonists
                        .iter()
                        .filter(|s| s.as_str() != culprit)
                        .find_map(|s| self.shrink(s, resource, culprit))
                {
                    actions.push(a);
                }
            }
            Control::MemBw | Control::Net => {
                if let Some(a) = antagonists
                    .iter()
                    .filter(|s| s.as_str() != culprit)
                    .find_map(|s| self.shrink(s, resource, culprit))
                {
                    actions.push(a);
                }
            }
        }
        let note = actions.is_empty().then(|| {
            let own = if self.ungrowable.contains(&(culprit.to_string(), resource)) {
                "nothing to raise (no quota)"
            } else {
                "at its max"
            };
            format!(
                "{culprit}: no {resource:?} left to give: {own} and every antagonist at its floor"
            )
        });
        let d = Decision {
            mode: self.cfg.mode,
            actions,
            note,
        };
        match self.cfg.mode {
            Mode::DryRun => log::info!("policy (dry-run): would do {:?}", d.actions),
            Mode::Recommend => log::info!("policy: recommending {:?}", d.actions),
            Mode::Enforce => {}
        }
        d
    }

    /// [`Self::on_tick_keeping`] keeping nothing.
    #[cfg(test)]
    pub fn on_tick(&mut self) -> Decision {
        self.on_tick_keeping(|_, _, _| None)
    }

    /// Called every tick: culprits healthy (no alert) for `hold` get everything done for them
    /// reverted, except what `keep(service, resource, level)` keeps: `Some(d)` (the service
    /// still wants what the step gave it) keeps that level and asks again after `d`.
    pub fn on_tick_keeping(
        &mut self,
        mut keep: impl FnMut(&str, Control, u32) -> Option<Duration>,
    ) -> Decision {
        let now = self.clock.now();
        let hold = self.cfg.hold;
        let healed: Vec<String> = self
            .last_alert
            .iter()
            .filter(|(_, t)| now.saturating_sub(**t) >= hold)
            .map(|(c, _)| c.clone())
            .collect();
        let mut actions = Vec::new();
        for c in healed {
            self.last_alert.remove(&c);
            let keys: Vec<((String, Control), u32)> = self
                .levels
                .iter()
                .filter(|(_, (_, culprit))| *culprit == c)
                .map(|(k, (level, _))| (k.clone(), *level))
                .collect();
            let mut again: Option<Duration> = None;
            for ((service, resource), level) in keys {
                if let Some(d) = keep(&service, resource, level) {
                    again = Some(again.map_or(d, |a| a.min(d)));
                    continue;
                }
                self.levels.remove(&(service.clone(), resource));
                actions.push(Action::Revert { service, resource });
            }
            match again {
                // Due again `d` from now: as if its last alert were `hold - d` ago.
                Some(d) => {
                    self.last_alert.insert(c, (now + d).saturating_sub(hold));
                }
                None => self.ungrowable.retain(|(s, _)| *s != c),
            }
        }
        Decision {
            mode: self.cfg.mode,
            actions,
            note: None,
        }
    }
}

/// What carrying out one action did (`enforce`), or what became of it (`recommend`,
/// `dry-run`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Applied {
        action: Action,
        /// What it did in the service's terms (e.g. "cuts burn from 2.0 to 1.5 CPUs").
        #[serde(skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    /// Nothing to do on the host: the action would change nothing (raising the CPU quota of a
    /// service that has none); the reason says why.
    Unchanged { action: Action, reason: String },
    /// Not applied: handed to the alert for the cluster manager.
    Recommended { action: Action },
    /// Not applied: logged only.
    DryRun { action: Action },
    /// Could not be applied; the reason says what was wrong and what to do.
    Failed { action: Action, error: String },
}

impl Outcome {
    pub fn action(&self) -> &Action {
        match self {
            Outcome::Applied { action, .. }
            | Outcome::Unchanged { action, .. }
            | Outcome::Recommended { action }
            | Outcome::DryRun { action }
            | Outcome::Failed { action, .. } => action,
        }
    }

    /// One line for people: what happened to the action, and why where it says.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Applied { action, note } => match note {
                Some(n) => format!("applied {action:?}: {n}"),
                None => format!("applied {action:?}"),
            },
            Outcome::Unchanged { action, reason } => {
                format!("{action:?} changes nothing: {reason}")
            }
            Outcome::Recommended { action } => format!("recommended {action:?}"),
            Outcome::DryRun { action } => format!("dry-run: would {action:?}"),
            Outcome::Failed { action, error } => format!("could not apply {action:?}: {error}"),
        }
    }
}

/// The outcomes of a decision that nothing applies: `recommend` hands each action to the alert,
/// `dry-run` logs it; `enforce` with no actuator at hand fails each, saying so.
pub fn not_applied(d: &Decision) -> Vec<Outcome> {
    d.actions
        .iter()
        .map(|a| match d.mode {
            Mode::Recommend => Outcome::Recommended { action: a.clone() },
            Mode::DryRun => {
                log::info!("dry-run: would {a:?}");
                Outcome::DryRun { action: a.clone() }
            }
            Mode::Enforce => Outcome::Failed {
                action: a.clone(),
                error: "no actuator: the journal could not be opened".into(),
            },
        })
        .collect()
}

/// The resource whose raise of `culprit` found nothing to raise (an [`Outcome::Unchanged`]
/// set of it): tell the policy ([`Policy::cannot_grow`]) and take its next step, its
/// antagonists', at once.
///
pub fn nothing_raised(outcomes: &[Outcome], culprit: &str) -> Option<Control> {
    outcomes.iter().find_map(|o| match o {
        Outcome::Unchanged {
            action: Action::Set {
                service, resource, ..
            },
            ..
        } if service == culprit => Some(*resource),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    struct FakeClock(Cell<Duration>);
    impl Clock for &FakeClock {
        fn now(&self) -> Duration {
            self.0.get()
        }
    }

    fn policy(clock: &FakeClock) -> Policy<&FakeClock> {
        Policy::new(
            PolicyConfig {
                mode: Mode::Enforce,
                ..Default::default()
            },
            clock,
        )
    }

    fn level(d: &Decision) -> Vec<(String, u32)> {
        d.actions
            .iter()
            .filter_map(|a| match a {
                Action::Set { service, level, .. } => Some((service.clone(), *level)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn cpu_grows_in_bounded_steps_then_takes_from_antagonists_down_to_the_floor() {
        let clk = FakeClock(Cell::new(Duration::ZERO));
        let mut p = policy(&clk);
        let ants = vec!["batch".to_string()];
        let mut seen = Vec::new();
        for _ in 0..12 {
            seen.push(level(&p.on_alert("api", Control::Cpu, &ants)));
        }
        // 100 -> 125 -> 150 -> 175 -> 200 (max), then batch 100 -> 75 -> 50 -> 25 -> 20 (floor).
        assert_eq!(seen[0], vec![("api".into(), 125)]);
        assert_eq!(seen[3], vec![("api".into(), 200)]);
        assert_eq!(seen[4], vec![("batch".into(), 75)]);
        assert_eq!(seen[7], vec![("batch".into(), 20)]);
        assert!(seen[8].is_empty(), "nobody goes below the floor");
        let d = p.on_alert("api", Control::Cpu, &ants);
        assert!(
            d.note.as_deref().is_some_and(|n| n.contains("floor")),
            "{d:?}"
        );
        assert_eq!(p.level("batch", Control::Cpu), 20);
    }

    #[test]
    fn a_culprit_with_nothing_to_raise_goes_straight_to_its_antagonists() {
        let clk = FakeClock(Cell::new(Duration::ZERO));
        let mut p = policy(&clk);
        let ants = vec!["batch".to_string()];
        let d = p.on_alert("api", Control::Cpu, &ants);
        assert_eq!(level(&d), vec![("api".into(), 125)]);
        // The actuator found no quota to raise.
        p.cannot_grow("api", Control::Cpu);
        assert_eq!(p.level("api", Control::Cpu), 100, "nothing was changed");
        assert!(!p.in_effect("api"));
        let d = p.on_alert("api", Control::Cpu, &ants);
        assert_eq!(level(&d), vec![("batch".into(), 75)]);
        let d = p.on_alert("api", Control::Cpu, &[]);
        assert!(
            d.note
                .as_deref()
                .is_some_and(|n| n.contains("nothing to raise")),
            "{d:?}"
        );
        // Rolled back after the hold: batch reverted, api may be raised again later.
        clk.0.set(Duration::from_secs(31));
        assert_eq!(
            p.on_tick().actions,
            vec![Action::Revert {
                service: "batch".into(),
                resource: Control::Cpu
            }]
        );
        let d = p.on_alert("api", Control::Cpu, &ants);
        assert_eq!(level(&d), vec![("api".into(), 125)]);
    }

    /// A raise the culprit still uses is kept past the hold and looked at again later; once
    /// it no longer uses it, rolled back.
    #[test]
    fn a_raise_still_used_is_kept_past_the_hold_and_asked_about_again() {
        let clk = FakeClock(Cell::new(Duration::ZERO));
        let mut p = policy(&clk);
        p.on_alert("api", Control::Cpu, &[]);
        clk.0.set(Duration::from_secs(30));
        let mut asked = Vec::new();
        let d = p.on_tick_keeping(|s, r, l| {
            asked.push((s.to_string(), r, l));
            Some(Duration::from_secs(2))
        });
        assert!(d.actions.is_empty(), "kept: {d:?}");
        assert_eq!(asked, vec![("api".to_string(), Control::Cpu, 125)]);
        assert!(p.in_effect("api"));
        assert_eq!(p.level("api", Control::Cpu), 125);
        clk.0.set(Duration::from_millis(31_900));
        assert!(
            p.on_tick_keeping(|_, _, _| panic!("not due yet"))
                .actions
                .is_empty(),
            "asked again only after 2 s"
        );
        clk.0.set(Duration::from_secs(32));
        let d = p.on_tick_keeping(|_, _, _| None);
        assert_eq!(
            d.actions,
            vec![Action::Revert {
                service: "api".into(),
                resource: Control::Cpu
            }]
        );
        assert!(!p.in_effect("api"));
    }

    #[test]
    fn rollback_after_hold_of_health_only() {
        let clk = FakeClock(Cell::new(Duration::ZERO));
        let mut p = policy(&clk);
        let ants = vec!["bulk".to_string()];
        p.on_alert("web", Control::Net, &ants);
        assert_eq!(p.level("bulk", Control::Net), 800);
        clk.0.set(Duration::from_secs(20));
        p.on_alert("web", Control::Net, &ants); // still unhealthy at 20 s
        assert_eq!(p.level("bulk", Control::Net), 600);
        clk.0.set(Duration::from_secs(49));
        assert!(p.on_tick().actions.is_empty(), "29 s healthy < 30 s hold");
        clk.0.set(Duration::from_secs(50));
        let d = p.on_tick();
        assert_eq!(
            d.actions,
            vec![Action::Revert {
                service: "bulk".into(),
                resource: Control::Net
            }]
        );
        assert_eq!(p.level("bulk", Control::Net), 1000, "back to default");
        assert!(p.on_tick().actions.is_empty(), "reverted once");
    }

    #[test]
    fn recommend_and_dry_run_return_the_same_actions_with_their_mode() {
        let clk = FakeClock(Cell::new(Duration::ZERO));
        for mode in [Mode::Recommend, Mode::DryRun] {
            let mut p = Policy::new(
                PolicyConfig {
                    mode,
                    ..Default::default()
                },
                &clk,
            );
            let d = p.on_alert("db", Control::Llc, &[]);
            assert_eq!(d.mode, mode);
            assert_eq!(
                d.actions,
                vec![Action::Set {
                    service: "db".into(),
                    resource: Control::Llc,
                    level: 2
                }]
            );
            let json = serde_json::to_string(&d).expect("json");
            assert!(json.contains("\"action\":\"set\""), "{json}");
        }
    }

    #[test]
    fn membw_never_touches_the_culprit_itself() {
        let clk = FakeClock(Cell::new(Duration::ZERO));
        let mut p = policy(&clk);
        let d = p.on_alert("db", Control::MemBw, &["db".into(), "etl".into()]);
        assert_eq!(level(&d), vec![("etl".into(), 80)]);
    }
}
