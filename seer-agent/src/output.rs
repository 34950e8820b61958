//! What people and scripts see: one JSON object per tick, or a live table.
use std::{fmt::Write as _, io::Write as _};

use seer_common::sample::{CHANNEL_NAMES, Channel, Sample};
use serde_json::{Map, Value, json};

use crate::{discovery::Discovery, infer::Prediction};

/// `{"ts_ms":..,"services":[{"name":..,"pid":..,"ports":[..],<channels>..,"p":..}],"edges":[[from,to]],
/// "model":..}`. `p` is the probability that the service initiates a QoS violation within the
/// model's horizon (null without a model or before its first result); `model` names the model
/// (null: reactive only). The field names are an interface: scripts and tests read them.
pub fn tick_json(
    ts_ms: u64,
    d: &Discovery,
    samples: &[Sample],
    pred: Option<&Prediction>,
) -> Value {
    let services: Vec<Value> = d
        .services
        .iter()
        .zip(samples)
        .map(|(s, smp)| {
            let mut o = Map::new();
            o.insert("id".into(), json!(s.id.0));
            o.insert("name".into(), json!(s.name));
            o.insert("pid".into(), json!(s.pids.first().copied().unwrap_or(0)));
            o.insert("pids".into(), json!(s.pids));
            o.insert("ports".into(), json!(s.ports));
            o.insert("comm".into(), json!(s.comm));
            o.insert("cgroup".into(), json!(s.cgroup));
            o.insert("depth".into(), json!(s.depth));
            for (name, v) in CHANNEL_NAMES.iter().zip(smp.values.iter()) {
                o.insert((*name).into(), json!(v));
            }
            o.insert("p".into(), json!(pred.and_then(|p| p.of(s.id))));
            Value::Object(o)
        })
        .collect();
    let edges: Vec<Value> = d
        .edges
        .iter()
        .map(|&(a, b)| json!([d.name_of(a), d.name_of(b)]))
        .collect();
    let remote: Vec<Value> = d
        .remote_edges
        .iter()
        .map(|&(a, addr)| json!([d.name_of(a), addr.to_string()]))
        .collect();
    json!({
        "ts_ms": ts_ms,
        "services": services,
        "edges": edges,
        "remote_edges": remote,
        "model": pred.map(|p| p.model.clone()),
        "prediction_ts_ms": pred.map(|p| p.ts_ms),
        "infer_us": pred.map(|p| p.infer_us),
    })
}

/// Redraws the live table (ANSI: home + clear) on a terminal. With a model, the P column is
/// each service's probability of initiating a violation within the horizon; at or over the
/// threshold it is shown in bold red with a marker.
pub fn live_table(
    tick_ms: u64,
    d: &Discovery,
    samples: &[Sample],
    pred: Option<(&Prediction, f32)>,
    footer: &str,
) -> String {
    let per_s = 1000.0 / tick_ms as f32;
    let mut s = String::from("\x1b[H\x1b[2J");
    let _ = writeln!(
        s,
        "seer: {} services, {} call-graph edges, tick {} ms (rates per second; Ctrl-C detaches and exits)\n",
        d.services.len(),
        d.edges.len(),
        tick_ms
    );
    let _ = writeln!(
        s,
        "{:<22} {:>7} {:<14} {:>5} {:>9} {:>10} {:>7} {:>9} {:>6} {:>8} {:>8} {:>8} {:>6}",
        "SERVICE",
        "PID",
        "PORTS",
        "DEPTH",
        "RX_PKT/s",
        "RXQ_BYTES",
        "BACKLOG",
        "EPOLL_EV/s",
        "OUTST",
        "REQ/s",
        "P50_ms",
        "P99_ms",
        "P"
    );
    for (svc, smp) in d.services.iter().zip(samples) {
        let ports: Vec<String> = svc.ports.iter().map(u16::to_string).collect();
        let mut ports = ports.join(",");
        if ports.len() > 14 {
            ports.truncate(13);
            ports.push('+');
        }
        let p = match pred.and_then(|(p, thr)| p.of(svc.id).map(|v| (v, thr))) {
            Some((v, thr)) if v >= thr => format!("\x1b[1;31m{v:>5.2}!\x1b[0m"),
            Some((v, _)) => format!("{v:>6.2}"),
            None => format!("{:>6}", "-"),
        };
        let _ = writeln!(
            s,
            "{:<22} {:>7} {:<14} {:>5} {:>9.0} {:>10.0} {:>7.0} {:>9.0} {:>6.0} {:>8.0} {:>8.2} {:>8.2} {p}",
            truncate(&svc.name, 22),
            svc.pids.first().copied().unwrap_or(0),
            ports,
            svc.depth,
            smp.get(Channel::NicRxPkts) * per_s,
            smp.get(Channel::RxQueueBytes),
            smp.get(Channel::AcceptBacklog),
            smp.get(Channel::EpollEvents) * per_s,
            smp.get(Channel::Outstanding),
            smp.get(Channel::Requests) * per_s,
            smp.get(Channel::LatencyP50Us) / 1000.0,
            smp.get(Channel::LatencyP99Us) / 1000.0,
        );
    }
    if d.services.is_empty() {
        let _ = writeln!(
            s,
            "(no service with a listening socket on this host yet; to watch seer predict on a small \
             application with a slow fault: cargo xtask demo)"
        );
    }
    if let Some((p, thr)) = pred
        && let Some((id, v)) = p.top()
    {
        let mark = if v >= thr {
            "ALARM"
        } else {
            "below the threshold"
        };
        let _ = writeln!(
            s,
            "\nmodel {}: most likely initiator {} (p = {v:.2}, threshold {thr:.2}: {mark})",
            p.model,
            d.name_of(id)
        );
    }
    if !d.edges.is_empty() || !d.remote_edges.is_empty() {
        let _ = writeln!(s, "\ncall graph:");
        for &(a, b) in &d.edges {
            let _ = writeln!(s, "  {} -> {}", d.name_of(a), d.name_of(b));
        }
        for &(a, addr) in &d.remote_edges {
            let _ = writeln!(s, "  {} -> {addr} (another host)", d.name_of(a));
        }
    }
    let _ = writeln!(s, "\n{footer}");
    s
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).chain(['…']).collect()
    }
}

pub fn print_line(v: &Value) {
    let mut out = std::io::stdout().lock();
    // A closed stdout (a script that stopped reading) is not an error worth a panic.
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}
