//! Fault onset shapes, shared by the injector and the load generator (load spikes): the level
//! (0 = no fault, 1 = full intensity) of a fault at scenario time `t` seconds.
use crate::scenario::{Fault, Onset};

pub fn level(f: &Fault, t: f64) -> f64 {
    let rel = t - f.start_s;
    if rel < 0.0 || rel >= f.duration_s {
        return 0.0;
    }
    match f.onset {
        Onset::Step => 1.0,
        Onset::Ramp => {
            let r = f.ramp_s.unwrap_or(1.0).max(1e-3);
            (rel / r).min(1.0)
        }
        Onset::Bursts => {
            let on = f.burst_on_s.unwrap_or(1.0);
            let period = f.burst_period_s.unwrap_or(2.0).max(1e-3);
            if rel % period < on { 1.0 } else { 0.0 }
        }
    }
}
