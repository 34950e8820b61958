//! What an alert says about an episode: `respond` fills it in, `alert` formats and delivers it.
use serde_json::Value;

/// What an alert says; `respond` fills it in.
#[derive(Clone, Debug, Default)]
pub struct AlertInfo {
    /// The service predicted (or found) to initiate the violation.
    pub culprit: String,
    /// The QoS it threatens, e.g. "nginx p99 62.1 ms > 50 ms over 1000 ms".
    pub qos: String,
    /// Diagnosed resource (`cpu_int`, `llc`, ...), or "unknown".
    pub resource: String,
    pub confidence: f64,
    /// enforce | recommend | dry-run.
    pub mode: String,
    /// The diagnosis record (JSON), if one finished.
    pub diagnosis: Option<Value>,
    /// What was done (enforce) or is recommended to the cluster manager.
    pub actions: Value,
    pub starts_ms: u64,
    /// Firing until then; resolved when it is in the past.
    pub ends_ms: u64,
    /// Whether the model saw it coming.
    pub origin: Origin,
}

/// Where an alert comes from.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Origin {
    /// The QoS broke and the labeller named the initiator (reactive path).
    #[default]
    Observed,
    /// The model alarmed on the culprit before the violation: its probability, horizon, and,
    /// once the violation began, how long before it the alarm fired.
    Predicted {
        probability: f32,
        horizon_ms: u64,
        lead_ms: Option<u64>,
        /// The culprit's channels that had departed from normal when the alarm fired.
        channels: String,
        model: String,
    },
}
