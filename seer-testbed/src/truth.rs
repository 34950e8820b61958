//! Ground truth from a run: end-to-end p99 over a sliding window (requests grouped by their
//! scheduled send time), QoS violations (maximal stretches of windows above the target), and each
//! violation's initiating service and fault from the fault schedule.
use serde::{Deserialize, Serialize};

use crate::{
    faults::FaultRecord,
    load::records::{Record, Status},
    scenario::Qos,
};

#[derive(Debug, Clone, Serialize)]
pub struct Window {
    /// End of the window, scenario ms.
    pub t_ms: i64,
    pub n: usize,
    pub p99_us: u64,
    pub failed: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Violation {
    pub id: usize,
    /// First and last violating window ends, scenario ms, and as Unix ms.
    pub start_ms: i64,
    pub end_ms: i64,
    pub start_unix_ms: i64,
    pub end_unix_ms: i64,
    pub peak_p99_us: u64,
    /// The service whose fault initiated it, from the schedule (None: no fault explains it).
    pub initiator: Option<String>,
    pub fault_id: Option<usize>,
    pub fault_kind: Option<String>,
    pub resource: Option<String>,
    /// `step`, `ramp` or `bursts`: whether the violation gave warning (ramps) or not (steps).
    pub onset: Option<String>,
    /// Violation start minus fault start.
    pub lead_ms: Option<i64>,
    /// The initiating fault was unannounced (random start).
    pub random: Option<bool>,
}

/// Failed requests (timeouts, errors) count as infinitely slow: a QoS breach, not a gap.
fn effective_latency(r: &Record) -> u64 {
    if r.status == Status::Ok {
        r.latency_us
    } else {
        u64::MAX / 2
    }
}

/// p99 of requests sent in `(t - window, t]`, every `step`, over `[window, duration]`.
pub fn windows(recs: &[Record], qos: &Qos, duration_ms: i64) -> Vec<Window> {
    let w = qos.window_ms as i64 * 1000;
    let step = qos.step_ms as i64 * 1000;
    let mut out = Vec::new();
    let mut t = w.min(duration_ms * 1000);
    let mut buf = Vec::new();
    while t <= duration_ms * 1000 {
        let lo = recs.partition_point(|r| r.t_us <= t - w);
        let hi = recs.partition_point(|r| r.t_us <= t);
        buf.clear();
        buf.extend(recs[lo..hi].iter().map(effective_latency));
        buf.sort_unstable();
        let p99 = buf
            .get(((buf.len() as f64 * 0.99).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(0);
        out.push(Window {
            t_ms: t / 1000,
            n: buf.len(),
            p99_us: p99,
            failed: recs[lo..hi]
                .iter()
                .filter(|r| r.status != Status::Ok)
                .count(),
        });
        t += step;
    }
    out
}

/// The QoS the run is judged by: `qos` itself, or with `auto_x` its calibrated target (see
/// `Qos::auto_x`) from the judged windows ending before `first_fault_ms` (scenario time; at
/// least 10 of them, else the whole run's).
pub fn calibrate(qos: &Qos, ws: &[Window], first_fault_ms: Option<i64>) -> Qos {
    let Some(x) = qos.auto_x else {
        return qos.clone();
    };
    let judged = |w: &&Window| w.n >= qos.min_samples;
    let mut healthy: Vec<u64> = ws
        .iter()
        .filter(judged)
        .filter(|w| first_fault_ms.is_none_or(|f| w.t_ms <= f))
        .map(|w| w.p99_us)
        .collect();
    if healthy.len() < 10 {
        healthy = ws.iter().filter(judged).map(|w| w.p99_us).collect();
    }
    healthy.sort_unstable();
    let mut q = qos.clone();
    if let Some(&median) = healthy.get(healthy.len() / 2) {
        q.target_p99_ms = (x * median as f64 / 1000.0).max(qos.target_p99_ms);
    }
    q
}

/// Maximal runs of judged windows above the target; runs closer than one window merge.
pub fn violations(ws: &[Window], qos: &Qos, t0_unix_ms: i64) -> Vec<Violation> {
    let target = (qos.target_p99_ms * 1000.0) as u64;
    let mut out: Vec<Violation> = Vec::new();
    for w in ws.iter().filter(|w| w.n >= qos.min_samples) {
        if w.p99_us <= target {
            continue;
        }
        match out.last_mut() {
            Some(v) if w.t_ms - v.end_ms <= qos.window_ms as i64 => {
                v.end_ms = w.t_ms;
                v.end_unix_ms = t0_unix_ms + w.t_ms;
                v.peak_p99_us = v.peak_p99_us.max(w.p99_us);
            }
            _ => out.push(Violation {
                id: out.len(),
                start_ms: w.t_ms,
                end_ms: w.t_ms,
                start_unix_ms: t0_unix_ms + w.t_ms,
                end_unix_ms: t0_unix_ms + w.t_ms,
                peak_p99_us: w.p99_us,
                initiator: None,
                fault_id: None,
                fault_kind: None,
                resource: None,
                onset: None,
                lead_ms: None,
                random: None,
            }),
        }
    }
    out
}

/// How long after a fault ends its backlog may still hold the tail up.
pub const DRAIN_GRACE_MS: i64 = 3000;

/// Attributes each violation to the most recently started fault active at its start (or ended
/// less than a window plus `DRAIN_GRACE_MS` before it).
pub fn attribute(vs: &mut [Violation], faults: &[FaultRecord], qos: &Qos) {
    for v in vs.iter_mut() {
        let best = faults
            .iter()
            .filter(|f| {
                let s = (f.start_s * 1000.0) as i64;
                let e = (f.end_s * 1000.0) as i64 + qos.window_ms as i64 + DRAIN_GRACE_MS;
                s <= v.start_ms && v.start_ms <= e
            })
            .max_by(|a, b| a.start_s.total_cmp(&b.start_s));
        if let Some(f) = best {
            v.initiator = Some(f.service.clone());
            v.fault_id = Some(f.id);
            v.fault_kind = serde_json::to_value(f.kind)
                .ok()
                .and_then(|k| k.as_str().map(str::to_string));
            v.resource = Some(f.resource.to_string());
            v.onset = serde_json::to_value(f.onset)
                .ok()
                .and_then(|k| k.as_str().map(str::to_string));
            v.lead_ms = Some(v.start_ms - (f.start_s * 1000.0) as i64);
            v.random = Some(f.random);
        }
    }
}
