//! The model in the running agent, for real: nginx -> memcached under open-loop load in a
//! network namespace, the agent with the shipped model (ONNX Runtime loaded from the library
//! the set-up installs). Every tick carries each service's probability; the trace store keeps
//! them, and replaying the store through the same inference (`seer-agent predict`) gives the
//! same numbers. A model whose card does not fit is refused with the reason, and the agent
//! goes on reacting only.
use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use seer_tests::{stack::Stack, *};

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn the_model_predicts_every_tick_and_a_replay_of_the_store_gives_the_same_numbers() {
    assert!(
        is_root(),
        "the integration tests run as root (cargo xtask test)"
    );
    println!("kernel {}", kernel());
    let net = NetPair::new();
    let _stack = Stack::start(&net.server, 8095, 11495, 1024);
    let mut agent =
        Agent::start_net_only(&net.server, 60, &["--iface", "lo", "--metrics-addr", "off"]);
    agent.wait_service("memcached", Duration::from_secs(30), |_| true);
    let load = in_ns(&net.client, || {
        loadgen::run("198.51.100.1:8095", "/", 300.0, Duration::from_secs(5), 8)
    });
    let status = agent.wait_exit(Duration::from_secs(60));
    let _ = load.join();
    assert!(status.success(), "agent: {status}\n{}", agent.proc.stderr());
    let ticks = agent.ticks();
    let with_p: Vec<_> = ticks.iter().filter(|t| t["model"].is_string()).collect();
    assert!(
        with_p.len() >= 40,
        "{} of {} ticks carry a prediction; agent log:\n{}",
        with_p.len(),
        ticks.len(),
        agent.proc.stderr()
    );
    for t in &with_p {
        for s in t["services"].as_array().expect("services") {
            let p = s["p"].as_f64();
            assert!(
                p.is_some_and(|p| (0.0..=1.0).contains(&p)),
                "service {} has p = {:?}",
                s["name"],
                s["p"]
            );
        }
    }
    let last = with_p.last().expect("a tick");
    assert!(service(last, "nginx").is_some() && service(last, "memcached").is_some());
    // The store kept them; the replay agrees.
    let q = Command::new(agent_bin())
        .args(["query", "--json", "--db"])
        .arg(&agent.db)
        .args(["predictions", "--from", "0", "-n", "1000"])
        .output()
        .expect("query");
    assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&q.stdout).expect("json");
    let stored = rows.as_array().map_or(0, Vec::len);
    assert!(stored >= 40, "{stored} predictions stored");
    let r = Command::new(agent_bin())
        .args(["predict", "--from", "0", "--db"])
        .arg(&agent.db)
        .output()
        .expect("predict");
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{err}");
    println!("{err}");
    let compared: u64 = err
        .split("; ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no comparison in {err:?}"));
    let diff: f64 = err
        .rsplit("max difference ")
        .next()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no difference in {err:?}"));
    assert!(compared >= 40, "{compared} ticks compared: {err}");
    assert!(
        diff <= 1e-5,
        "the replay differs from the agent by {diff}: {err}"
    );
}

#[test]
fn a_model_that_does_not_fit_is_refused_and_the_agent_goes_on_reacting() {
    assert!(
        is_root(),
        "the integration tests run as root (cargo xtask test)"
    );
    let dir = std::env::temp_dir().join(format!("seer-unfit-model-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    std::fs::copy(models.join("seer-graph-h100.onnx"), dir.join("m.onnx")).expect("copy");
    let card = std::fs::read_to_string(models.join("seer-graph-h100.json")).expect("card");
    std::fs::write(
        dir.join("m.json"),
        card.replace("\"outstanding\"", "\"in_flight\""),
    )
    .expect("card");
    let net = NetPair::new();
    let _stack = Stack::start(&net.server, 8096, 11496, 1024);
    let model = dir.join("m.onnx").display().to_string();
    let mut agent = Agent::start_net_only(
        &net.server,
        20,
        &["--iface", "lo", "--metrics-addr", "off", "--model", &model],
    );
    let t0 = Instant::now();
    let status = agent.wait_exit(Duration::from_secs(60));
    assert!(
        status.success(),
        "the agent must go on without the model: {status}"
    );
    let log = agent.proc.stderr();
    assert!(
        log.contains("does not fit")
            && log.contains("in_flight")
            && log.contains("reacting to violations only"),
        "the refusal must name the mismatch; log:\n{log}"
    );
    let ticks = agent.ticks();
    assert_eq!(ticks.len(), 20, "every tick printed ({:?})", t0.elapsed());
    assert!(ticks.iter().all(|t| t["model"].is_null()));
    let _ = std::fs::remove_dir_all(&dir);
}
