//! Prometheus text exposition at `/metrics`: every service's channels and the agent's own
//! health (ticks, tick duration, kernel-side drops). Rendered by the tick loop when a scrape
//! asks, between two ticks (never in a tick); served by [`super::server`].
use std::fmt::Write as _;

use seer_common::{
    Drops,
    sample::{CHANNEL_HELP, CHANNEL_NAMES, Sample},
};

use crate::discovery::Discovery;

/// Agent health figures exported beside the channels.
#[derive(Clone, Debug, Default)]
pub struct AgentStats {
    pub ticks: u64,
    pub last_tick_us: u64,
    pub max_tick_us: u64,
    pub sockets_seen: u64,
    pub drops: Drops,
    /// Trace store writer (None with --no-store).
    pub store: Option<seer_store::WriterStats>,
    /// QoS watch, diagnoses, actions and alerts (None without a QoS).
    pub respond: Option<crate::respond::RespondStats>,
    /// The model stage (None: no model, reactive only; the log says why).
    pub predict: Option<(crate::infer::Status, Option<crate::infer::Prediction>)>,
    /// Cluster mode's publisher (None: without --cluster).
    pub cluster: Option<ClusterStats>,
}

/// Cluster mode's publisher (`run --cluster`): what it did, for /metrics, the live table,
/// the JSON lines and the log.
#[derive(Clone, Debug, Default)]
pub struct ClusterStats {
    pub url: String,
    pub host: String,
    pub connected: bool,
    pub published: u64,
    pub dropped: u64,
    pub backlog: u64,
    pub last_error: Option<String>,
}

impl ClusterStats {
    /// One line for the live table.
    pub fn status_line(&self) -> String {
        format!(
            "cluster {} as {}: {}; {} published, {} in backlog, {} dropped{}",
            self.url,
            self.host,
            if self.connected {
                "publishing"
            } else {
                "UNREACHABLE, working alone"
            },
            self.published,
            self.backlog,
            self.dropped,
            self.last_error
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        )
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "url": self.url, "host": self.host, "connected": self.connected,
            "published": self.published, "dropped": self.dropped, "backlog": self.backlog,
            "last_error": self.last_error,
        })
    }
}

/// A label value as Prometheus' text format quotes it.
pub(crate) fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A channel's metric name in Prometheus' base units, and the factor from the channel's unit.
fn prom_name(channel: &str) -> (&str, f64) {
    match channel {
        "epoll_wait_ms" => ("epoll_wait_seconds", 1e-3),
        "latency_p50_us" => ("latency_p50_seconds", 1e-6),
        "latency_p99_us" => ("latency_p99_seconds", 1e-6),
        "cpu_run_ms" => ("cpu_run_seconds", 1e-3),
        "cpu_wait_ms" => ("cpu_wait_seconds", 1e-3),
        "cpu_throttled" => ("cpu_throttled_ratio", 1.0),
        other => (other, 1.0),
    }
}

pub fn render(d: &Discovery, samples: &[Sample], st: &AgentStats) -> String {
    let mut o = String::with_capacity(4096);
    for (i, channel) in CHANNEL_NAMES.iter().enumerate() {
        let (name, scale) = prom_name(channel);
        let _ = writeln!(o, "# HELP seer_{name} {}", CHANNEL_HELP[i]);
        let _ = writeln!(o, "# TYPE seer_{name} gauge");
        for (s, smp) in d.services.iter().zip(samples) {
            let _ = writeln!(
                o,
                "seer_{name}{{service=\"{}\",id=\"{}\"}} {}",
                esc(&s.name),
                s.id.0,
                f64::from(smp.values[i]) * scale
            );
        }
    }
    let _ = writeln!(
        o,
        "# HELP seer_call_edge A call from one local service to another (1 while known)."
    );
    let _ = writeln!(o, "# TYPE seer_call_edge gauge");
    for &(a, b) in &d.edges {
        let _ = writeln!(
            o,
            "seer_call_edge{{from=\"{}\",to=\"{}\"}} 1",
            esc(d.name_of(a)),
            esc(d.name_of(b))
        );
    }
    let _ = writeln!(
        o,
        "# HELP seer_remote_call_edge A call from a local service to an address on another host (1 while known)."
    );
    let _ = writeln!(o, "# TYPE seer_remote_call_edge gauge");
    for &(a, addr) in &d.remote_edges {
        let _ = writeln!(
            o,
            "seer_remote_call_edge{{from=\"{}\",to=\"{addr}\"}} 1",
            esc(d.name_of(a))
        );
    }
    let mut scalar = |name: &str, kind: &str, v: f64| {
        let help = HELP
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("", |(_, h)| *h);
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
    };
    scalar("seer_agent_ticks_total", "counter", st.ticks as f64);
    scalar(
        "seer_agent_tick_seconds",
        "gauge",
        st.last_tick_us as f64 / 1e6,
    );
    scalar(
        "seer_agent_tick_max_seconds",
        "gauge",
        st.max_tick_us as f64 / 1e6,
    );
    scalar("seer_agent_services", "gauge", d.services.len() as f64);
    scalar(
        "seer_remote_edges_capped_total",
        "counter",
        d.remote_capped as f64,
    );
    scalar("seer_agent_sockets", "gauge", st.sockets_seen as f64);
    if let Some(w) = &st.store {
        scalar(
            "seer_store_ticks_written_total",
            "counter",
            w.ticks_written as f64,
        );
        scalar(
            "seer_store_ticks_dropped_total",
            "counter",
            w.ticks_dropped as f64,
        );
        scalar(
            "seer_store_write_errors_total",
            "counter",
            w.write_errors as f64,
        );
        scalar(
            "seer_store_disk_full_total",
            "counter",
            w.disk_full_events as f64,
        );
        scalar("seer_store_bytes", "gauge", w.bytes_on_disk as f64);
        scalar(
            "seer_store_last_write_seconds",
            "gauge",
            w.last_write_us as f64 / 1e6,
        );
    }
    if let Some(c) = &st.cluster {
        scalar(
            "seer_cluster_connected",
            "gauge",
            f64::from(u8::from(c.connected)),
        );
        scalar(
            "seer_cluster_published_total",
            "counter",
            c.published as f64,
        );
        scalar("seer_cluster_dropped_total", "counter", c.dropped as f64);
        scalar("seer_cluster_backlog", "gauge", c.backlog as f64);
    }
    if let Some(r) = &st.respond {
        scalar("seer_qos_p99_seconds", "gauge", r.qos_p99_us as f64 / 1e6);
        scalar(
            "seer_qos_violated",
            "gauge",
            f64::from(u8::from(r.qos_violated)),
        );
        scalar("seer_qos_violations_total", "counter", r.violations as f64);
        scalar("seer_diagnoses_total", "counter", r.diagnoses as f64);
        scalar(
            "seer_alerts_queued_total",
            "counter",
            r.alerts_queued as f64,
        );
        scalar(
            "seer_alerts_delivered_total",
            "counter",
            r.alerts_delivered as f64,
        );
        scalar("seer_alerts_pending", "gauge", r.alerts_pending as f64);
        scalar(
            "seer_alert_failures_total",
            "counter",
            r.alert_failures as f64,
        );
        scalar(
            "seer_alerts_rejected_total",
            "counter",
            r.alerts_rejected as f64,
        );
        scalar("seer_prediction_alarms_total", "counter", r.alarms as f64);
        let _ = writeln!(
            o,
            "# HELP seer_violations_by_prediction_total QoS violations, by whether a model alarm announced them (within the horizon plus one window).\n# TYPE seer_violations_by_prediction_total counter"
        );
        for (what, n) in [
            ("yes", r.violations_predicted),
            ("no", r.violations_unpredicted),
        ] {
            let _ = writeln!(
                o,
                "seer_violations_by_prediction_total{{predicted=\"{what}\"}} {n}"
            );
        }
        let _ = writeln!(
            o,
            "# HELP seer_prediction_agreement_total Predicted violations, by whether the labeller named the service the model alarmed on.\n# TYPE seer_prediction_agreement_total counter"
        );
        for (what, n) in [("yes", r.labeller_agreed), ("no", r.labeller_disagreed)] {
            let _ = writeln!(o, "seer_prediction_agreement_total{{agree=\"{what}\"}} {n}");
        }
        let _ = writeln!(o, "# HELP seer_actions_total Local actions, by outcome.");
        let _ = writeln!(o, "# TYPE seer_actions_total counter");
        for (what, n) in [
            ("applied", r.applied),
            ("unchanged", r.unchanged),
            ("failed", r.failed),
            ("recommended", r.recommended),
        ] {
            let _ = writeln!(o, "seer_actions_total{{outcome=\"{what}\"}} {n}");
        }
    }
    render_predict(&mut o, d, st);
    let _ = writeln!(
        o,
        "# HELP seer_kernel_drops_total Events the kernel side could not record (a full map), by map."
    );
    let _ = writeln!(o, "# TYPE seer_kernel_drops_total counter");
    for (what, n) in [
        ("turns_full", st.drops.turns_full),
        ("connects_full", st.drops.connects_full),
        ("epoll_full", st.drops.epoll_full),
        ("iter_write", st.drops.iter_write),
    ] {
        let _ = writeln!(o, "seer_kernel_drops_total{{what=\"{what}\"}} {n}");
    }
    o
}

/// The model stage: whether it runs, which model, each service's probability, inference time.
fn render_predict(o: &mut String, d: &Discovery, st: &AgentStats) {
    let _ = writeln!(
        o,
        "# HELP seer_predict_enabled 1 while a model predicts; 0: reactive only (the log and `seer-agent doctor` say why).\n# TYPE seer_predict_enabled gauge\nseer_predict_enabled {}",
        u8::from(st.predict.as_ref().is_some_and(|(s, _)| s.model.is_some()))
    );
    let Some((status, latest)) = &st.predict else {
        return;
    };
    if let Some(m) = &status.model {
        let _ = writeln!(
            o,
            "# HELP seer_model_info The model in use (1).\n# TYPE seer_model_info gauge\nseer_model_info{{name=\"{}\",network=\"{}\",horizon_ms=\"{}\",threshold=\"{}\"}} 1",
            esc(&m.name),
            esc(&m.network),
            m.horizon_ms,
            m.threshold
        );
    }
    let _ = writeln!(
        o,
        "# HELP seer_predicted_initiator_probability Probability that the service initiates a QoS violation within the model's horizon.\n# TYPE seer_predicted_initiator_probability gauge"
    );
    if let Some(p) = latest {
        for s in &d.services {
            if let Some(v) = p.of(s.id) {
                let _ = writeln!(
                    o,
                    "seer_predicted_initiator_probability{{service=\"{}\",id=\"{}\"}} {v}",
                    esc(&s.name),
                    s.id.0
                );
            }
        }
    }
    let _ = writeln!(
        o,
        "# HELP seer_infer_seconds Time one inference took (ONNX Runtime, one thread).\n# TYPE seer_infer_seconds histogram"
    );
    let mut cum = 0;
    for (i, ub) in crate::infer::INFER_BUCKETS_US.iter().enumerate() {
        cum += status.infer_hist.get(i).copied().unwrap_or(0);
        let _ = writeln!(
            o,
            "seer_infer_seconds_bucket{{le=\"{}\"}} {cum}",
            *ub as f64 / 1e6
        );
    }
    cum += status.infer_hist.last().copied().unwrap_or(0);
    let _ = writeln!(o, "seer_infer_seconds_bucket{{le=\"+Inf\"}} {cum}");
    let _ = writeln!(
        o,
        "seer_infer_seconds_sum {}",
        status.infer_sum_us as f64 / 1e6
    );
    let _ = writeln!(o, "seer_infer_seconds_count {cum}");
    for (name, help, v) in [
        (
            "seer_infer_late_total",
            "Ticks not predicted because the previous inference was still running.",
            status.late,
        ),
        (
            "seer_infer_failures_total",
            "Inferences that failed.",
            status.failures,
        ),
        (
            "seer_model_reloads_total",
            "Times a replaced model file was loaded.",
            status.reloads,
        ),
        (
            "seer_model_reload_failures_total",
            "Replaced model files refused (the previous model stayed).",
            status.reload_failures,
        ),
        (
            "seer_predict_unfit_ticks_total",
            "Ticks whose service set the model cannot take (needs retraining).",
            status.unfit_ticks,
        ),
    ] {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
    }
}

/// HELP text of the agent's own metrics (one place, so none goes without).
const HELP: &[(&str, &str)] = &[
    (
        "seer_agent_ticks_total",
        "Ticks sampled since the agent started.",
    ),
    (
        "seer_agent_tick_seconds",
        "Time the last tick took (sampling, store hand-off, response).",
    ),
    (
        "seer_agent_tick_max_seconds",
        "Longest tick since the agent started.",
    ),
    ("seer_agent_services", "Services discovered on this host."),
    (
        "seer_remote_edges_capped_total",
        "Calls to other hosts not recorded: their caller already has the most kept.",
    ),
    (
        "seer_agent_sockets",
        "Sockets the last tick's walk visited.",
    ),
    (
        "seer_store_ticks_written_total",
        "Ticks written to the trace store.",
    ),
    (
        "seer_store_ticks_dropped_total",
        "Ticks the store's writer could not take (queue full).",
    ),
    (
        "seer_store_write_errors_total",
        "Failed writes to the trace store.",
    ),
    (
        "seer_store_disk_full_total",
        "Times the store's disk was full.",
    ),
    ("seer_store_bytes", "Size of the trace store file."),
    (
        "seer_cluster_connected",
        "1 while ticks reach NATS JetStream (run --cluster), 0 while the agent works alone.",
    ),
    (
        "seer_cluster_published_total",
        "Ticks the cluster stream acknowledged.",
    ),
    (
        "seer_cluster_dropped_total",
        "Ticks never sent to the cluster: the oldest of a full backlog while NATS was unreachable.",
    ),
    (
        "seer_cluster_backlog",
        "Ticks waiting to be sent to the cluster.",
    ),
    (
        "seer_store_last_write_seconds",
        "Time the store's last write took.",
    ),
    (
        "seer_qos_p99_seconds",
        "The QoS service's p99 latency over the window.",
    ),
    ("seer_qos_violated", "1 while the QoS target is violated."),
    ("seer_qos_violations_total", "QoS violations seen."),
    ("seer_diagnoses_total", "Diagnoses finished."),
    (
        "seer_prediction_alarms_total",
        "Alarms the model raised (a service about to initiate a violation).",
    ),
    (
        "seer_alerts_queued_total",
        "Alerts queued in the store's outbox.",
    ),
    (
        "seer_alerts_delivered_total",
        "Alerts every configured receiver accepted.",
    ),
    ("seer_alerts_pending", "Alerts waiting in the outbox."),
    (
        "seer_alert_failures_total",
        "Deliveries that failed and will be retried.",
    ),
    (
        "seer_alerts_rejected_total",
        "Alerts a receiver refused for good (kept aside in the store).",
    ),
];
