//! Real stack: Debian's nginx proxying to memcached under wrk.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use seer_tests::{stack::Stack, *};

const T: Duration = Duration::from_secs(30);

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as f64
}

fn mean_in(ticks: &[serde_json::Value], name: &str, field: &str, from: f64, to: f64) -> f64 {
    let v: Vec<f64> = ticks
        .iter()
        .filter(|t| (from..to).contains(&t["ts_ms"].as_f64().unwrap_or(0.0)))
        .filter_map(|t| service(t, name))
        .map(|s| num(s, field))
        .collect();
    assert!(!v.is_empty(), "no ticks between {from} and {to}");
    v.iter().sum::<f64>() / v.len() as f64
}

#[test]
fn nginx_memcached_discovered_with_edge_and_queues_grow_with_load() {
    require_root!();
    let net = NetPair::new();
    let stack = Stack::start(&net.server, 8081, 11411, 16 * 1024);
    // The default configuration: NIC arrivals from the sockets, no per-packet program.
    let mut agent = Agent::start(&net.server, 120, &[]);
    agent.wait_service("nginx", T, |_| true);
    agent.wait_service("memcached", T, |_| true);

    let t0 = now_ms();
    let (low_rps, _) = stack.wrk(1, 1, 3);
    let t1 = now_ms();
    let (high_rps, _) = stack.wrk(1, 128, 3);
    let t2 = now_ms();
    std::thread::sleep(Duration::from_millis(300));
    let _ = agent.proc.child.kill();
    let _ = agent.wait_exit(T);
    let ticks = agent.ticks();
    let last = ticks.last().expect("ticks");

    let edges = last["edges"].as_array().expect("edges");
    assert!(
        edges.iter().any(|e| e[0] == "nginx" && e[1] == "memcached"),
        "edge nginx->memcached: {edges:?}"
    );
    let order: Vec<&str> = last["services"]
        .as_array()
        .expect("services")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    let (mi, ni) = (
        order.iter().position(|n| *n == "memcached"),
        order.iter().position(|n| *n == "nginx"),
    );
    assert!(mi < ni, "back end first: {order:?}");

    let low = mean_in(&ticks, "nginx", "outstanding", t0 + 500.0, t1);
    let high = mean_in(&ticks, "nginx", "outstanding", t1 + 500.0, t2);
    println!(
        "wrk -c1: {low_rps:.0} req/s, nginx outstanding {low:.2}; wrk -c128: {high_rps:.0} req/s, outstanding {high:.2}"
    );
    assert!(
        low <= 1.5,
        "one connection keeps at most one request outstanding: {low}"
    );
    assert!(
        high > 8.0 && high > 4.0 * low,
        "outstanding rises near saturation: {low} -> {high}"
    );
    let reqs = mean_in(&ticks, "memcached", "requests", t0 + 500.0, t2);
    assert!(reqs > 0.0, "memcached answered requests");
    let nic = mean_in(&ticks, "nginx", "nic_rx_pkts", t1 + 500.0, t2);
    assert!(nic > 0.0, "NIC arrivals at nginx's port");
}
