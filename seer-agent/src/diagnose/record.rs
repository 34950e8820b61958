//! The diagnosis record: what was decided, how sure, and the numbers that decided it.
use serde::{Deserialize, Serialize};

use super::{Method, Resource, probe::Protocol, search::Step, signals::SignalSummary};

/// One diagnosis, serializable so that it can be stored and attached to an alert.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub service: String,
    /// Unix ms when the diagnosis finished.
    pub ts_ms: u64,
    pub mode: Method,
    /// The resource the service is short of; `None` when nothing moved it (inconclusive).
    pub resource: Option<Resource>,
    /// 0..=1.
    pub confidence: f64,
    /// One sentence: which rule decided, or why nothing did.
    pub reason: String,
    pub evidence: Evidence,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Evidence {
    /// Median of the quiet windows' median latency (us), and its median absolute deviation.
    pub baseline_us: f64,
    pub noise_us: f64,
    /// Every injection, in the order it ran.
    pub steps: Vec<Step>,
    /// Total time microbenchmarks ran (ms); never above the budget.
    pub injected_ms: f64,
    pub budget_ms: f64,
    /// PMU-free signals over the quiet windows.
    pub signals: Option<SignalSummary>,
    /// Private mode: resource scores from the hardware counters, best first.
    pub pmu_scores: Vec<(Resource, f64)>,
    /// Public mode: what the latency probe spoke to (absent in records from before it).
    #[serde(default)]
    pub probe: Option<ProbeInfo>,
    /// With `--canary`: the memory-hierarchy canary on its CPUs (recorded, not decided on;
    /// see `canary`).
    #[serde(default)]
    pub canary: Option<super::canary::CanaryReading>,
    /// Public mode, when nothing else decided: DRAM latency from the culprit's CPU against
    /// CPUs where what runs is displaced (`bandwidth`).
    #[serde(default)]
    pub bandwidth: Option<super::bandwidth::BandwidthReading>,
    /// Public mode, when nothing else decided, memory bandwidth included: a working set twice
    /// the L2 walked on the culprit's CPU with its LLC siblings running and held (`llc`).
    #[serde(default)]
    pub llc: Option<super::llc::LlcReading>,
}

/// The latency probe of a public-mode diagnosis.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ProbeInfo {
    pub addr: String,
    pub protocol: Protocol,
    /// How the protocol was chosen: given, from its name and port, by asking.
    pub chosen: String,
}

impl Record {
    /// The testbed's resource name (`cpu`, `llc`, `memory_bandwidth`, ...), for evaluation.
    pub fn testbed_resource(&self) -> Option<&'static str> {
        self.resource.map(Resource::testbed_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_through_json() {
        let r = Record {
            service: "memcached".into(),
            ts_ms: 1,
            mode: Method::PublicCloud,
            resource: Some(Resource::MemoryBandwidth),
            confidence: 0.8,
            reason: "r".into(),
            evidence: Evidence {
                baseline_us: 10.0,
                steps: vec![Step {
                    resource: Resource::CpuInt,
                    intensity: 0.5,
                    window_us: 10_000,
                    requests: 3,
                    mean_us: 12.0,
                    p50_us: 11.0,
                    score: 1.2,
                    uncore: false,
                }],
                ..Evidence::default()
            },
        };
        let s = serde_json::to_string(&r).expect("serialize");
        assert!(s.contains("\"memory_bandwidth\""), "{s}");
        let back: Record = serde_json::from_str(&s).expect("parse");
        assert_eq!(back, r);
        assert_eq!(back.testbed_resource(), Some("memory_bandwidth"));
    }
}
