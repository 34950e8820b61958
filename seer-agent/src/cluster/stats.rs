//! The central's own `/metrics`: its role, the hosts it hears and how late, how long a cluster
//! tick takes to assemble and to predict, what it refused, and each service's probability.
use std::fmt::Write as _;

use crate::serve::metrics::esc;

#[derive(Clone, Debug, Default)]
pub struct CentralStats {
    pub leader: bool,
    pub term: u64,
    pub ticks: u64,
    /// Hosts heard since the start (kept until forgotten).
    pub hosts_heard: usize,
    pub hosts_in_tick: usize,
    /// Hosts of the last tick that repeated an earlier sample.
    pub late_hosts: usize,
    pub late_host_ticks: u64,
    pub services: usize,
    pub edges: usize,
    pub unresolved: usize,
    pub assembly_us: u64,
    pub max_assembly_us: u64,
    pub infer_us: u64,
    pub published: u64,
    pub alarms: u64,
    pub requests: u64,
    /// Messages refused, by reason.
    pub refused: Vec<(String, u64)>,
    /// (host, service, probability) of the newest result.
    pub probabilities: Vec<(String, String, f32)>,
}

const SCALARS: &[(&str, &str, &str)] = &[
    (
        "seer_central_leader",
        "gauge",
        "1 while this central holds the lease and publishes, 0 while it stands by.",
    ),
    (
        "seer_central_term",
        "gauge",
        "The lease's term while leading (0 while standing by).",
    ),
    (
        "seer_central_ticks_total",
        "counter",
        "Cluster ticks assembled.",
    ),
    (
        "seer_central_hosts",
        "gauge",
        "Hosts heard from and not forgotten.",
    ),
    (
        "seer_central_hosts_in_tick",
        "gauge",
        "Hosts in the newest cluster tick.",
    ),
    (
        "seer_central_late_hosts",
        "gauge",
        "Hosts of the newest cluster tick whose sample is a repeat (no message in time).",
    ),
    (
        "seer_central_late_host_ticks_total",
        "counter",
        "Host-ticks filled with a repeated sample.",
    ),
    (
        "seer_central_services",
        "gauge",
        "Services in the newest cluster tick.",
    ),
    (
        "seer_central_edges",
        "gauge",
        "Calls between services of the newest cluster tick, cross-host ones included.",
    ),
    (
        "seer_central_unresolved_remote_edges",
        "gauge",
        "Calls to addresses no host of the cluster listens on.",
    ),
    (
        "seer_central_assembly_seconds",
        "gauge",
        "Time to assemble the newest cluster tick.",
    ),
    (
        "seer_central_assembly_max_seconds",
        "gauge",
        "Longest cluster tick assembly since the start.",
    ),
    (
        "seer_central_inference_seconds",
        "gauge",
        "Inference time of the newest result.",
    ),
    (
        "seer_central_predictions_published_total",
        "counter",
        "Results published on seer.predictions (leader only).",
    ),
    (
        "seer_central_alarms_total",
        "counter",
        "Alarms of the alarm policy over the results.",
    ),
    (
        "seer_central_respond_requests_total",
        "counter",
        "Requests sent to a culprit's host to respond (leader only).",
    ),
];

pub fn render(st: &CentralStats) -> String {
    let values = [
        f64::from(u8::from(st.leader)),
        st.term as f64,
        st.ticks as f64,
        st.hosts_heard as f64,
        st.hosts_in_tick as f64,
        st.late_hosts as f64,
        st.late_host_ticks as f64,
        st.services as f64,
        st.edges as f64,
        st.unresolved as f64,
        st.assembly_us as f64 / 1e6,
        st.max_assembly_us as f64 / 1e6,
        st.infer_us as f64 / 1e6,
        st.published as f64,
        st.alarms as f64,
        st.requests as f64,
    ];
    let mut o = String::with_capacity(2048);
    for ((name, kind, help), v) in SCALARS.iter().zip(values) {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
    }
    let _ = writeln!(
        o,
        "# HELP seer_central_refused_messages_total Samples messages refused, by reason (each reason logged once).\n# TYPE seer_central_refused_messages_total counter"
    );
    for (why, n) in &st.refused {
        let _ = writeln!(
            o,
            "seer_central_refused_messages_total{{reason=\"{}\"}} {n}",
            esc(why)
        );
    }
    let _ = writeln!(
        o,
        "# HELP seer_central_probability Probability that the service initiates a QoS violation within the model's horizon (newest result).\n# TYPE seer_central_probability gauge"
    );
    for (host, svc, p) in &st.probabilities {
        let _ = writeln!(
            o,
            "seer_central_probability{{host=\"{}\",service=\"{}\"}} {p}",
            esc(host),
            esc(svc)
        );
    }
    o
}

/// Rows of the live table: the services most likely to break the QoS first.
const TABLE_ROWS: usize = 25;

/// The central's live table (on a terminal, without --json): its role, the hosts, and the
/// services most likely to initiate a QoS violation, highest first.
pub fn live_table(name: &str, st: &CentralStats) -> String {
    let mut o = String::from("\x1b[H\x1b[2J");
    let role = if st.leader {
        format!("LEADER (term {})", st.term)
    } else {
        "standby".to_string()
    };
    let _ = writeln!(
        o,
        "seer central {name}: {role}; {} hosts ({} in the last tick, {} late), {} services, {} calls ({} unresolved); tick {} assembled in {:.2} ms, inference {:.2} ms\n",
        st.hosts_heard,
        st.hosts_in_tick,
        st.late_hosts,
        st.services,
        st.edges,
        st.unresolved,
        st.ticks,
        st.assembly_us as f64 / 1000.0,
        st.infer_us as f64 / 1000.0,
    );
    let _ = writeln!(o, "{:<24} {:<28} {:>6}", "HOST", "SERVICE", "P");
    let mut rows: Vec<&(String, String, f32)> = st.probabilities.iter().collect();
    rows.sort_by(|a, b| b.2.total_cmp(&a.2));
    for (host, svc, p) in rows.iter().take(TABLE_ROWS) {
        let _ = writeln!(o, "{host:<24} {svc:<28} {p:>6.3}");
    }
    if rows.len() > TABLE_ROWS {
        let _ = writeln!(o, "... and {} more", rows.len() - TABLE_ROWS);
    }
    let refused: u64 = st.refused.iter().map(|(_, n)| n).sum();
    let _ = writeln!(
        o,
        "\n{} predictions published, {} alarms, {} requests to hosts, {} messages refused",
        st.published, st.alarms, st.requests, refused
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_figure_has_its_help_and_labels_are_escaped() {
        let st = CentralStats {
            leader: true,
            term: 4,
            hosts_heard: 2,
            refused: vec![("decode".into(), 3)],
            probabilities: vec![("h\"1".into(), "nginx".into(), 0.5)],
            ..Default::default()
        };
        let m = render(&st);
        assert!(m.contains("seer_central_leader 1\n"), "{m}");
        assert!(m.contains("seer_central_term 4\n"), "{m}");
        assert!(m.contains("seer_central_hosts 2\n"), "{m}");
        assert!(
            m.contains("seer_central_refused_messages_total{reason=\"decode\"} 3"),
            "{m}"
        );
        assert!(
            m.contains("seer_central_probability{host=\"h\\\"1\",service=\"nginx\"} 0.5"),
            "{m}"
        );
        let helps = m.matches("# HELP ").count();
        assert_eq!(helps, SCALARS.len() + 2, "{m}");
    }

    #[test]
    fn the_live_table_lists_the_likeliest_culprits_first() {
        let st = CentralStats {
            leader: true,
            term: 2,
            probabilities: (0..30)
                .map(|i| ("h1".to_string(), format!("s{i}"), i as f32 / 100.0))
                .collect(),
            ..Default::default()
        };
        let t = live_table("c1", &st);
        assert!(t.contains("LEADER (term 2)"), "{t}");
        let s29 = t.find("s29").unwrap();
        let s28 = t.find("s28").unwrap();
        assert!(s29 < s28, "highest first:\n{t}");
        assert!(!t.contains(" s0 "), "only the top {TABLE_ROWS}:\n{t}");
        assert!(t.contains("... and 5 more"), "{t}");
    }
}
