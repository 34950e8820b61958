//! The whole response, for real: nginx -> memcached under load in a network namespace, a CPU
//! fault on memcached (its v1 cgroup's CFS quota cut to 1% of a CPU), and the agent with a QoS
//! on nginx in enforce mode. The agent must see the violation, name memcached as initiator,
//! diagnose CPU, raise memcached's quota one step (journaled), and alert a real Alertmanager
//! that only comes up after the violation (the outbox keeps the alert meanwhile). On SIGTERM
//! the quota goes back to what it was before seer (the fault's), and the store holds the
//! violation, the diagnosis and the undone action.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use seer_tests::{stack::Stack, *};

const AM_PORT: u16 = 19093;

fn ns_sh(ns: &str, cmd: &str) -> String {
    sh(&format!("ip netns exec {ns} {cmd}"))
}

fn metric(ns: &str, name: &str) -> f64 {
    let body = ns_sh(
        ns,
        "sh -c 'curl -s --max-time 2 http://127.0.0.1:9464/metrics || true'",
    );
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1.0)
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

struct Cgroup(PathBuf);

impl Drop for Cgroup {
    fn drop(&mut self) {
        if let Ok(t) = std::fs::read_to_string(self.0.join("cgroup.procs")) {
            for pid in t.lines() {
                let _ = std::fs::write("/sys/fs/cgroup/cpu/cgroup.procs", pid);
            }
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn violation_is_diagnosed_acted_on_alerted_and_undone() {
    require_root!();
    if !Path::new("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").exists() {
        println!("SKIP: needs a v1 cpu hierarchy at /sys/fs/cgroup/cpu");
        return;
    }
    let am_bin = Path::new("/usr/bin/prometheus-alertmanager");
    assert!(
        am_bin.exists(),
        "prometheus-alertmanager is missing: run `cargo xtask setup`"
    );
    let net = NetPair::new();
    let ns = net.server.clone();
    let stack = Stack::start(&ns, 8091, 11491, 16 * 1024);
    let mc_pid = sh(&format!(
        "pgrep -f 'memcached -u root -l 127.0.0.1 -p 11491'"
    ))
    .trim()
    .lines()
    .next()
    .expect("memcached pid")
    .to_string();
    let cg = Cgroup(PathBuf::from(format!(
        "/sys/fs/cgroup/cpu/seer-respond-{}",
        std::process::id()
    )));
    std::fs::create_dir_all(&cg.0).expect("mkdir cgroup");
    std::fs::write(cg.0.join("cgroup.procs"), &mc_pid).expect("move memcached");
    let quota = || {
        std::fs::read_to_string(cg.0.join("cpu.cfs_quota_us"))
            .expect("quota")
            .trim()
            .to_string()
    };

    let dir = std::env::temp_dir().join(format!("seer-respond-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let journal = dir.join("actions.json");
    let conf = dir.join("seer.toml");
    std::fs::write(
        &conf,
        format!(
            "[[service]]\nname = \"memcached\"\ncomm = \"memcached\"\n\
             [qos]\nservice = \"nginx\"\np99_ms = 20\nwindow_ms = 1000\n\
             [respond]\nmode = \"enforce\"\ncooldown_s = 30\nhold_s = 600\njournal = \"{}\"\n\
             [alerts]\nalertmanager = \"http://127.0.0.1:{AM_PORT}\"\nretry_s = 1\n",
            journal.display()
        ),
    )
    .expect("config");
    let mut agent = Agent::start_net_only(
        &ns,
        100_000,
        &["--iface", "lo", "--config", &conf.display().to_string()],
    );
    agent.wait_service("memcached", Duration::from_secs(30), |_| true);
    agent.wait_service("nginx", Duration::from_secs(30), |_| true);

    // Open-loop load from the client namespace, over the veth: 800 requests/s on 32
    // connections, well below what the stack serves (the baseline is calm).
    let load = in_ns(&net.client, || {
        loadgen::run("198.51.100.1:8091", "/", 800.0, Duration::from_secs(20), 32)
    });
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        metric(&ns, "seer_qos_violations_total"),
        0.0,
        "healthy baseline"
    );

    // The fault: memcached gets 1% of a CPU (800 requests/s of 16 KiB need about 2%: measured
    // here, 1% still serves 400/s with only brief stalls).
    std::fs::write(cg.0.join("cpu.cfs_quota_us"), "1000").expect("fault");
    let t0 = Instant::now();
    while metric(&ns, "seer_qos_violations_total") < 1.0 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no violation seen: QoS p99 {} s; agent log:\n{}",
            metric(&ns, "seer_qos_p99_seconds"),
            agent.proc.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_for(
        "the diagnosis and the step",
        Duration::from_secs(20),
        || metric(&ns, "seer_alerts_queued_total") >= 1.0,
    );
    // Alertmanager is down so far: the alert waits in the outbox.
    wait_for("a failed delivery, kept", Duration::from_secs(10), || {
        metric(&ns, "seer_alert_failures_total") >= 1.0 && metric(&ns, "seer_alerts_pending") >= 1.0
    });
    assert_eq!(
        quota(),
        "125000",
        "enforce: memcached's quota raised one step (125%); agent log:\n{}\nmemcached's last ticks: {:?}",
        agent.proc.stderr(),
        agent
            .ticks()
            .iter()
            .rev()
            .take(30)
            .filter_map(|t| service(t, "memcached").map(|s| (
                num(s, "rx_queue_bytes"),
                num(s, "outstanding"),
                num(s, "latency_p99_us"),
                num(s, "requests")
            )))
            .collect::<Vec<_>>()
    );

    // Now the cluster manager comes up; the queued alert reaches it.
    let am_conf = dir.join("am.yml");
    std::fs::write(
        &am_conf,
        "route:\n  receiver: 'null'\nreceivers:\n  - name: 'null'\n",
    )
    .expect("am config");
    let _am = Proc::spawn(NetPair::cmd(
        &ns,
        am_bin,
        &[
            &format!("--config.file={}", am_conf.display()),
            &format!("--storage.path={}", dir.join("am").display()),
            &format!("--web.listen-address=127.0.0.1:{AM_PORT}"),
            "--cluster.listen-address=",
        ],
    ));
    let mut alerts = serde_json::Value::Null;
    wait_for("the alert in Alertmanager", Duration::from_secs(30), || {
        let body = ns_sh(
            &ns,
            &format!(
                "sh -c 'curl -s --max-time 2 http://127.0.0.1:{AM_PORT}/api/v2/alerts || true'"
            ),
        );
        alerts = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
        alerts.as_array().is_some_and(|a| !a.is_empty())
    });
    let a = &alerts[0];
    assert_eq!(a["labels"]["alertname"], "SeerQosViolation", "{a}");
    assert_eq!(a["labels"]["service"], "memcached", "initiator: {a}");
    assert!(
        a["labels"]["resource"]
            .as_str()
            .is_some_and(|r| r.starts_with("cpu")),
        "diagnosed resource: {a}"
    );
    let actions = a["annotations"]["actions"].as_str().unwrap_or("");
    assert!(
        actions.contains(r#""outcome":"applied""#) && actions.contains(r#""level":125"#),
        "{actions}"
    );
    assert!(
        a["annotations"]["qos"]
            .as_str()
            .is_some_and(|q| q.starts_with("nginx p99")),
        "{a}"
    );

    // SIGTERM: the quota goes back to the fault's value, the journal is empty.
    let _ = Command::new("kill")
        .args(["-TERM", &agent.proc.pid().to_string()])
        .status();
    let st = agent.wait_exit(Duration::from_secs(20));
    assert!(st.success(), "{st:?}: {}", agent.proc.stderr());
    assert_eq!(quota(), "1000", "seer's step undone on exit");
    let j = std::fs::read_to_string(&journal).unwrap_or_default();
    assert!(!j.contains("cfs_quota"), "journal still holds: {j}");
    let _ = load.join();

    // The store has the violation, the diagnosis and the (undone) action.
    let q = |what: &str| -> serde_json::Value {
        let o = Command::new(agent_bin())
            .args(["query", "--json", "--db"])
            .arg(&agent.db)
            .arg(what)
            .output()
            .expect("query");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).expect("json")
    };
    let v = q("violations");
    assert!(
        v.as_array()
            .is_some_and(|v| v.iter().any(|e| e["initiator"] == "memcached")),
        "{v}"
    );
    let d = q("diagnoses");
    assert!(
        d.as_array()
            .is_some_and(|d| d.iter().any(|e| e["service"] == "memcached"
                && e["resource"].as_str().is_some_and(|r| r.starts_with("cpu")))),
        "{d}"
    );
    let acts = q("actions");
    assert!(
        acts.as_array()
            .is_some_and(|x| x.iter().any(|e| e["service"] == "memcached"
                && e["kind"] == "cgroup.cpu"
                && e["undone_ms"].as_u64().is_some())),
        "{acts}"
    );
    drop(stack);
    let _ = std::fs::remove_dir_all(&dir);
}
