//! The request rate at scenario time `t` (seconds; negative during warm-up).
use std::f64::consts::PI;

use crate::{
    scenario::{FaultKind, Load, Profile, Scenario},
    shape,
};

/// The profile's rate, without load spikes.
pub fn base_rate(l: &Load, t: f64) -> f64 {
    match l.profile.get_ref() {
        Profile::Constant => l.rps,
        Profile::Diurnal => {
            let a = l.amplitude.unwrap_or(0.0);
            let p = l.period_s.unwrap_or(60.0);
            l.rps * (1.0 + a * (2.0 * PI * t.max(0.0) / p).sin())
        }
        Profile::Spike => {
            let at = l.at_s.unwrap_or(f64::MAX);
            let d = l.duration_s.unwrap_or(0.0);
            if t >= at && t < at + d {
                l.peak_rps.unwrap_or(l.rps)
            } else {
                l.rps
            }
        }
    }
}

/// The profile's rate times every active load-spike fault's factor (shaped by its onset).
pub fn rate(sc: &Scenario, t: f64) -> f64 {
    let mut r = base_rate(&sc.load, t);
    for f in sc
        .faults
        .iter()
        .filter(|f| *f.kind.get_ref() == FaultKind::LoadSpike)
    {
        r *= 1.0 + (f.intensity - 1.0) * shape::level(f, t);
    }
    r.max(0.01)
}
