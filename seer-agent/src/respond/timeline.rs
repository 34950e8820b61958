//! The response's recent events, newest last, for the live view's timeline: violations and
//! recoveries, initiators named, alarms (the agent's model or the cluster's), diagnoses,
//! actions and rollbacks, alerts queued. Bounded: the page keeps what it has seen.
use std::collections::VecDeque;

use serde_json::{Value, json};

/// Events kept (the page receives them all with each snapshot).
pub const KEPT: usize = 64;

#[derive(Default)]
pub struct Timeline {
    events: VecDeque<Value>,
}

impl Timeline {
    /// `kind`: violation, recovered, initiator, alarm, diagnosis, action, rollback, alert;
    /// `service`: empty where the event is the application's (a violation).
    pub fn note(&mut self, ts_ms: u64, kind: &'static str, service: &str, text: String) {
        if self.events.len() >= KEPT {
            self.events.pop_front();
        }
        self.events
            .push_back(json!({"ts_ms": ts_ms, "kind": kind, "service": service, "text": text}));
    }

    pub fn recent(&self) -> Vec<Value> {
        self.events.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest() {
        let mut t = Timeline::default();
        for i in 0..(KEPT as u64 + 5) {
            t.note(i, "alarm", "s", format!("{i}"));
        }
        let r = t.recent();
        assert_eq!(r.len(), KEPT);
        assert_eq!(r[0]["ts_ms"], 5);
        assert_eq!(r[KEPT - 1]["kind"], "alarm");
    }
}
