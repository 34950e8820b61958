//! The alarm policy over the model's probabilities (pure: no clock, no I/O).
//!
//! A service's alarm fires when its probability is at or over the threshold for `consecutive`
//! ticks in a row and it is not cooling down; it clears when the probability stays under
//! `hysteresis x threshold` for `consecutive` ticks. After it fires, a service cannot fire
//! again for `cooldown_ms` (one alarm per coming violation, not one per tick).
use std::collections::HashMap;

use seer_common::sample::ServiceId;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AlarmConfig {
    pub threshold: f32,
    pub consecutive: u32,
    pub hysteresis: f32,
    pub cooldown_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AlarmEvent {
    /// The alarm fired at `at_ms` with probability `p` (the highest of the run-up).
    Fired { id: ServiceId, at_ms: u64, p: f32 },
    /// It cleared; it had fired at `since_ms`.
    Cleared {
        id: ServiceId,
        at_ms: u64,
        since_ms: u64,
    },
}

impl AlarmConfig {
    /// `[predict]`'s defaults (config.rs), threshold 0.5 and 2 ticks in a row until a card
    /// says otherwise.
    pub fn agent_defaults() -> AlarmConfig {
        let d = crate::config::PredictConfig::default();
        AlarmConfig {
            threshold: d.threshold.unwrap_or(0.5),
            consecutive: d.consecutive.unwrap_or(2),
            hysteresis: d.hysteresis,
            cooldown_ms: d.cooldown_s * 1000,
        }
    }
}

#[derive(Default, Clone, Copy)]
struct State {
    above: u32,
    below: u32,
    peak: f32,
    /// Firing since.
    firing: Option<u64>,
    last_fired: Option<u64>,
}

#[derive(Default)]
pub struct Alarms {
    state: HashMap<ServiceId, State>,
}

impl Alarms {
    /// One tick's probabilities; returns what fired and what cleared.
    pub fn update(
        &mut self,
        cfg: &AlarmConfig,
        ts_ms: u64,
        p: &[(ServiceId, f32)],
    ) -> Vec<AlarmEvent> {
        let mut out = Vec::new();
        let k = cfg.consecutive.max(1);
        for &(id, v) in p {
            let s = self.state.entry(id).or_default();
            if v >= cfg.threshold {
                s.above += 1;
                s.below = 0;
                s.peak = s.peak.max(v);
            } else {
                s.above = 0;
                s.peak = 0.0;
                if v < cfg.threshold * cfg.hysteresis {
                    s.below += 1;
                }
            }
            match s.firing {
                None if s.above >= k => {
                    let cooling = s
                        .last_fired
                        .is_some_and(|t| ts_ms.saturating_sub(t) < cfg.cooldown_ms);
                    if !cooling {
                        s.firing = Some(ts_ms);
                        s.last_fired = Some(ts_ms);
                        out.push(AlarmEvent::Fired {
                            id,
                            at_ms: ts_ms,
                            p: s.peak,
                        });
                    }
                }
                Some(since) if s.below >= k => {
                    s.firing = None;
                    out.push(AlarmEvent::Cleared {
                        id,
                        at_ms: ts_ms,
                        since_ms: since,
                    });
                }
                _ => {}
            }
        }
        // Services no longer predicted (gone) clear.
        let live: std::collections::HashSet<ServiceId> = p.iter().map(|x| x.0).collect();
        self.state.retain(|id, s| {
            if live.contains(id) {
                return true;
            }
            if let Some(since) = s.firing {
                out.push(AlarmEvent::Cleared {
                    id: *id,
                    at_ms: ts_ms,
                    since_ms: since,
                });
            }
            false
        });
        out
    }

    /// Whether a service's alarm is firing.
    #[cfg(test)]
    pub fn firing(&self, id: ServiceId) -> Option<u64> {
        self.state.get(&id).and_then(|s| s.firing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: AlarmConfig = AlarmConfig {
        threshold: 0.5,
        consecutive: 2,
        hysteresis: 0.8,
        cooldown_ms: 1000,
    };

    fn run(alarms: &mut Alarms, ps: &[f32]) -> Vec<(u64, &'static str)> {
        run_with(&CFG, alarms, ps)
    }

    fn run_with(cfg: &AlarmConfig, alarms: &mut Alarms, ps: &[f32]) -> Vec<(u64, &'static str)> {
        let mut out = Vec::new();
        for (i, &p) in ps.iter().enumerate() {
            let ts = 100 * (i as u64 + 1);
            for e in alarms.update(cfg, ts, &[(ServiceId(1), p)]) {
                out.push(match e {
                    AlarmEvent::Fired { at_ms, .. } => (at_ms, "fired"),
                    AlarmEvent::Cleared { at_ms, .. } => (at_ms, "cleared"),
                });
            }
        }
        out
    }

    #[test]
    fn fires_after_k_ticks_over_and_clears_after_k_under_the_hysteresis() {
        let mut a = Alarms::default();
        // One tick over is noise; two fire. 0.45 is under the threshold but over 0.8 x 0.5:
        // it does not count towards clearing.
        let ev = run(&mut a, &[0.6, 0.1, 0.7, 0.9, 0.45, 0.45, 0.3, 0.2]);
        assert_eq!(ev, vec![(400, "fired"), (800, "cleared")]);
        // One tick in a row (a card may choose it; models/tests has the same case): fires on
        // the first tick over, clears on the first under the hysteresis.
        let one = AlarmConfig {
            consecutive: 1,
            ..CFG
        };
        let ev = run_with(
            &one,
            &mut Alarms::default(),
            &[0.6, 0.1, 0.7, 0.9, 0.45, 0.45, 0.3, 0.2],
        );
        // (0.7 at 300 ms is within the 1 s cooldown.)
        assert_eq!(ev, vec![(100, "fired"), (200, "cleared")]);
    }

    #[test]
    fn a_service_cools_down_after_it_fired() {
        let mut a = Alarms::default();
        // Fires at 200, clears at 400, over again at 500-600: within the 1 s cooldown.
        let ev = run(
            &mut a,
            &[0.9, 0.9, 0.1, 0.1, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9],
        );
        assert_eq!(ev, vec![(200, "fired"), (400, "cleared"), (1200, "fired")]);
    }

    #[test]
    fn a_service_that_disappears_clears() {
        let mut a = Alarms::default();
        a.update(&CFG, 100, &[(ServiceId(1), 0.9)]);
        a.update(&CFG, 200, &[(ServiceId(1), 0.9)]);
        assert_eq!(a.firing(ServiceId(1)), Some(200));
        let ev = a.update(&CFG, 300, &[(ServiceId(2), 0.1)]);
        assert_eq!(
            ev,
            vec![AlarmEvent::Cleared {
                id: ServiceId(1),
                at_ms: 300,
                since_ms: 200
            }]
        );
    }
}
