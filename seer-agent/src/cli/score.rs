//! `seer-agent predict --dataset`'s scoring: the model report's metrics over a labelled run, as `models/seer_models/metrics.py` defines
//! them (that module's docstring is the definition; this is its port, and a test checks both
//! give the same figures on the same run): anticipated, culprit top-1, alarm episodes and
//! false alarms, lead time. Alarms follow the agent's own policy (`respond::alarm`), with its
//! default settings.
use crate::respond::alarm::{AlarmConfig, AlarmEvent, Alarms};
use seer_common::sample::ServiceId;

pub const WINDOW_MS: u64 = 1000;
pub const STEP_MS: u64 = 100;

/// A labelled violation of the testbed's ground truth.
#[derive(Clone, Debug)]
pub struct Violation {
    pub start_unix_ms: u64,
    pub end_unix_ms: u64,
    /// Index of the initiating service (None: no fault explains it).
    pub initiator: Option<usize>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scores {
    pub violations: usize,
    pub anticipated: usize,
    pub top1: usize,
    pub episodes: usize,
    pub false_episodes: usize,
    pub leads_ms: Vec<u64>,
}

impl Scores {
    fn pct(a: usize, b: usize) -> Option<f64> {
        (b > 0).then(|| 100.0 * a as f64 / b as f64)
    }
    pub fn anticipated_pct(&self) -> Option<f64> {
        Self::pct(self.anticipated, self.violations)
    }
    pub fn top1_pct(&self) -> Option<f64> {
        Self::pct(self.top1, self.violations)
    }
    pub fn precision_pct(&self) -> Option<f64> {
        Self::pct(self.episodes - self.false_episodes, self.episodes)
    }
    pub fn lead_ms_p50(&self) -> Option<f64> {
        let mut v = self.leads_ms.clone();
        v.sort_unstable();
        match v.len() {
            0 => None,
            n if n % 2 == 1 => Some(v[n / 2] as f64),
            n => Some((v[n / 2 - 1] + v[n / 2]) as f64 / 2.0),
        }
    }
}

/// The alarm as the agent raises it, per tick and service (`p` [T][N], ticks `ts_ms`).
pub fn alarms(p: &[Vec<f32>], ts_ms: &[u64], cfg: &AlarmConfig) -> Vec<Vec<bool>> {
    let n = p.first().map_or(0, Vec::len);
    let mut a = Alarms::default();
    let mut on = vec![false; n];
    let mut out = Vec::with_capacity(p.len());
    for (row, &ts) in p.iter().zip(ts_ms) {
        let ps: Vec<(ServiceId, f32)> = row
            .iter()
            .enumerate()
            .map(|(j, v)| (ServiceId(j as u32), *v))
            .collect();
        for ev in a.update(cfg, ts, &ps) {
            match ev {
                AlarmEvent::Fired { id, .. } => on[id.0 as usize] = true,
                AlarmEvent::Cleared { id, .. } => on[id.0 as usize] = false,
            }
        }
        out.push(on.clone());
    }
    out
}

/// Scores of one run: `p` [T][N] (ticks before `first_tick` are not judged), tick starts
/// `ts_ms`, tick length, horizon.
pub fn score_run(
    p: &[Vec<f32>],
    ts_ms: &[u64],
    tick_ms: u64,
    violations: &[Violation],
    cfg: &AlarmConfig,
    horizon_ms: u64,
    first_tick: usize,
) -> Scores {
    let e: Vec<u64> = ts_ms.iter().map(|t| t + tick_ms).collect();
    let mut q = p.to_vec();
    for row in q.iter_mut().take(first_tick) {
        row.iter_mut().for_each(|v| *v = 0.0);
    }
    let alarm = alarms(&q, &e, cfg);
    let mut s = Scores::default();
    if e.is_empty() {
        return s;
    }
    let e0 = e[first_tick.min(e.len() - 1)];
    for v in violations {
        let Some(j) = v.initiator else { continue };
        if (v.start_unix_ms as i64 - horizon_ms as i64 - WINDOW_MS as i64) < e0 as i64 {
            continue;
        }
        s.violations += 1;
        let lo = v.start_unix_ms.saturating_sub(horizon_ms + WINDOW_MS);
        // The alarm must fire (rise) inside the look window: one that rose long before and never
        // cleared foresaw nothing (and its episode is judged false where it rose).
        let rises = |i: usize| alarm[i][j] && (i == 0 || !alarm[i - 1][j]);
        let hit = (0..e.len()).find(|&i| e[i] >= lo && e[i] < v.start_unix_ms && rises(i));
        if let Some(i) = hit {
            s.anticipated += 1;
            s.leads_ms.push(v.start_unix_ms - e[i]);
        }
        if let Some(i) = (0..e.len()).rev().find(|&i| e[i] <= v.start_unix_ms) {
            // argmax, the first of equal maxima (numpy's).
            let mut best = 0;
            for (k, x) in p[i].iter().enumerate() {
                if *x > p[i][best] {
                    best = k;
                }
            }
            if best == j {
                s.top1 += 1;
            }
        }
    }
    for i in 0..e.len() {
        for (j, &on) in alarm[i].iter().enumerate() {
            let rising = on && (i == 0 || !alarm[i - 1][j]);
            if !rising {
                continue;
            }
            s.episodes += 1;
            let ok = violations.iter().any(|v| {
                v.initiator == Some(j)
                    && ((v.start_unix_ms <= e[i] && e[i] < v.end_unix_ms + STEP_MS)
                        || (e[i] < v.start_unix_ms
                            && v.start_unix_ms <= e[i] + horizon_ms + WINDOW_MS))
            });
            if !ok {
                s.false_episodes += 1;
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One service, 100 ms ticks from 0; a violation it initiates starts at 5 s.
    fn run_with(p: impl Fn(usize) -> f32) -> Scores {
        let ts: Vec<u64> = (0..60).map(|i| i * 100).collect();
        let p: Vec<Vec<f32>> = (0..60).map(|i| vec![p(i)]).collect();
        let v = [Violation {
            start_unix_ms: 5000,
            end_unix_ms: 5500,
            initiator: Some(0),
        }];
        let cfg = AlarmConfig {
            threshold: 0.5,
            ..AlarmConfig::agent_defaults()
        };
        score_run(&p, &ts, 100, &v, &cfg, 100, 0)
    }

    #[test]
    fn an_alarm_that_fires_in_the_look_window_anticipates() {
        // p high from tick 44 (e = 4.5 s): fires after the policy's consecutive ticks, < 5 s.
        let s = run_with(|i| if i >= 44 { 0.9 } else { 0.0 });
        assert_eq!((s.violations, s.anticipated), (1, 1), "{s:?}");
        assert!(s.leads_ms[0] > 0 && s.leads_ms[0] <= 1100, "{s:?}");
        assert_eq!(s.false_episodes, 0);
    }

    #[test]
    fn an_alarm_on_since_long_before_anticipates_nothing() {
        // p high from the first tick: the alarm rose 5 s before with nothing coming.
        let s = run_with(|_| 0.9);
        assert_eq!((s.violations, s.anticipated), (1, 0), "{s:?}");
        assert_eq!((s.episodes, s.false_episodes), (1, 1), "{s:?}");
    }
}
