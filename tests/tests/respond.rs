//! The whole response, for real: nginx -> memcached under open-loop load in a network namespace,
//! a CPU fault on memcached (its v1 cgroup's CFS quota cut to 1% of a CPU), and the agent with a
//! QoS on nginx. The agent must see the violation, name memcached as initiator, diagnose CPU and
//! then, by mode:
//! - enforce: raise memcached's quota (from what it wanted, not from the squeeze: a CPU or
//!   more; journaled), alert a
//!   real Alertmanager that only comes up after the violation (the outbox keeps the alert
//!   meanwhile); on SIGTERM the quota goes back to what it was before seer (the fault's), and
//!   the store holds the violation, the diagnosis and the undone action;
//! - enforce, then kill -9: the next start undoes the step from the journal;
//! - recommend: change nothing, and the webhook receives the recommended step.
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

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

struct Scenario {
    net: NetPair,
    ns: String,
    _stack: Stack,
    cg: CpuCgroup,
    dir: PathBuf,
    journal: PathBuf,
    conf: PathBuf,
    agent: Agent,
    load: Option<std::thread::JoinHandle<loadgen::OpenLoopResult>>,
}

impl Scenario {
    /// The stack, memcached in its own cpu cgroup, and the agent with `respond` + `alerts`
    /// config lines, under a calm load; None (SKIP printed) without root or v1 cpu.
    fn start(name: &str, http: u16, mc: u16, respond: &str, alerts: &str) -> Option<Self> {
        if !is_root() || !Path::new("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").exists() {
            println!("SKIP: needs root and a v1 cpu hierarchy at /sys/fs/cgroup/cpu");
            return None;
        }
        let net = NetPair::new();
        let ns = net.server.clone();
        let stack = Stack::start(&ns, http, mc, 16 * 1024);
        let cg = CpuCgroup::memcached(name, mc);
        let dir = std::env::temp_dir().join(format!("seer-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let journal = dir.join("actions.json");
        let conf = dir.join("seer.toml");
        std::fs::write(
            &conf,
            format!(
                "[[service]]\nname = \"memcached\"\ncomm = \"memcached\"\n\
                 [qos]\nservice = \"nginx\"\np99_ms = 20\nwindow_ms = 1000\n\
                 [respond]\n{respond}\ncooldown_s = 30\nhold_s = 600\njournal = \"{}\"\n\
                 [alerts]\n{alerts}\nretry_s = 1\n",
                journal.display()
            ),
        )
        .expect("config");
        let agent = Agent::start_net_only(
            &ns,
            100_000,
            // The reactive path: these tests cover violation -> initiator -> step; the model's
            // alarms have their own test (prediction.rs).
            &[
                "--iface",
                "lo",
                "--no-predict",
                "--config",
                &conf.display().to_string(),
            ],
        );
        agent.wait_service("memcached", Duration::from_secs(30), |_| true);
        agent.wait_service("nginx", Duration::from_secs(30), |_| true);
        // Open-loop load from the client namespace, over the veth: 800 requests/s on 32
        // connections, well below what the stack serves (the baseline is calm).
        let load = in_ns(&net.client, move || {
            loadgen::run(
                &format!("198.51.100.1:{http}"),
                "/",
                800.0,
                Duration::from_secs(20),
                32,
            )
        });
        std::thread::sleep(Duration::from_secs(5));
        assert_eq!(
            agent_metric(&ns, "seer_qos_violations_total"),
            0.0,
            "healthy baseline"
        );
        Some(Scenario {
            net,
            ns,
            _stack: stack,
            cg,
            dir,
            journal,
            conf,
            agent,
            load: Some(load),
        })
    }

    fn quota(&self) -> String {
        std::fs::read_to_string(self.cg.0.join("cpu.cfs_quota_us"))
            .expect("quota")
            .trim()
            .to_string()
    }

    /// Whether the quota is a step's: a CPU or more (100000 us a 100 ms period). Raises of a
    /// throttled service start from what it wanted (at least a CPU when throttled in most
    /// periods), not from the fault's 1% (125% of that, 1250, changed nothing); the exact value
    /// depends on what memcached wanted and on whether a second step came.
    fn stepped(&self) -> bool {
        self.quota().parse::<i64>().is_ok_and(|q| q >= 100_000)
    }

    /// The fault: memcached gets 1% of a CPU (800 requests/s of 16 KiB need about 2%;
    /// measured here, 1% still serves 400/s with only brief stalls). Waits until the agent
    /// has queued its alert (violation seen, initiator named, diagnosed, stepped).
    fn inject_and_wait_for_the_alert(&self) {
        std::fs::write(self.cg.0.join("cpu.cfs_quota_us"), "1000").expect("fault");
        println!(
            "fault injected at {} ms",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_millis()
        );
        let t0 = Instant::now();
        while agent_metric(&self.ns, "seer_alerts_queued_total") < 1.0 {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "no alert: violations {}, QoS p99 {} s; agent log:\n{}\nmemcached's last ticks: {:?}",
                agent_metric(&self.ns, "seer_qos_violations_total"),
                agent_metric(&self.ns, "seer_qos_p99_seconds"),
                self.agent.proc.stderr(),
                self.agent
                    .ticks()
                    .iter()
                    .rev()
                    .take(30)
                    .filter_map(|t| service(t, "memcached").map(|s| (
                        num(s, "rx_queue_bytes"),
                        num(s, "latency_p99_us"),
                        num(s, "requests")
                    )))
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn query(&self, what: &str) -> serde_json::Value {
        let o = Command::new(agent_bin())
            .args(["query", "--json", "--db"])
            .arg(&self.agent.db)
            .arg(what)
            .output()
            .expect("query");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).expect("json")
    }

    /// A second agent, 3 ticks, in the scenario's namespace, with `conf` and the store `db`.
    fn start_again(&self, conf: &Path, db: &Path) -> std::process::Output {
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.ns))
            .arg(agent_bin())
            .args([
                "run",
                "--json",
                "--ticks",
                "3",
                "--iface",
                "lo",
                "--no-predict",
            ])
            .args(["--metrics-addr", "off"])
            .arg("--config")
            .arg(conf)
            .arg("--db")
            .arg(db)
            .output()
            .expect("second agent")
    }

    /// The fault (1% of a CPU), then the enforced step (see [`Self::stepped`]); on a timeout,
    /// says what the agent saw.
    fn wait_for_the_step(&self) {
        std::fs::write(self.cg.0.join("cpu.cfs_quota_us"), "1000").expect("fault");
        let t0 = Instant::now();
        while !self.stepped() {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "no enforced step in 30 s (quota {}): violations {}; agent log:\n{}",
                self.quota(),
                agent_metric(&self.ns, "seer_qos_violations_total"),
                self.agent.proc.stderr()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn end_load(&mut self) {
        if let Some(l) = self.load.take() {
            let _ = l.join();
        }
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        if std::env::var_os("SEER_TEST_SHOW_AGENT").is_some() {
            eprintln!("agent log:\n{}", self.agent.proc.stderr());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The alert's actions annotation: what was done or recommended, as the agent wrote it.
fn assert_alert(a: &serde_json::Value, outcome: &str) {
    assert_eq!(a["labels"]["alertname"], "SeerQosViolation", "{a}");
    assert_eq!(a["labels"]["service"], "memcached", "initiator: {a}");
    assert!(
        a["labels"]["resource"]
            .as_str()
            .is_some_and(|r| r.starts_with("cpu")),
        "diagnosed resource: {a}"
    );
    let actions = a["annotations"]["actions"].as_str().unwrap_or("");
    // The first step is 125%; a violation that outlasts `check_ms` gets the next (150, ...),
    // and the receiver may show the latest.
    let level = actions
        .split_once(r#""level":"#)
        .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<u32>().ok());
    assert!(
        actions.contains(&format!(r#""outcome":"{outcome}""#))
            && actions.contains(r#""service":"memcached""#)
            && level.is_some_and(|l| (125..=200).contains(&l) && l % 25 == 0),
        "{actions}"
    );
    assert!(
        a["annotations"]["qos"]
            .as_str()
            .is_some_and(|q| q.starts_with("nginx p99")),
        "{a}"
    );
}

#[test]
fn enforce_steps_alerts_a_late_alertmanager_and_undoes_on_sigterm() {
    let am_bin = Path::new("/usr/bin/prometheus-alertmanager");
    if is_root() {
        assert!(
            am_bin.exists(),
            "prometheus-alertmanager is missing: run `cargo xtask setup`"
        );
    }
    let Some(mut sc) = Scenario::start(
        "respond-enforce",
        8091,
        11491,
        "mode = \"enforce\"",
        &format!("alertmanager = \"http://127.0.0.1:{AM_PORT}\""),
    ) else {
        return;
    };
    let ns = sc.ns.clone();
    sc.inject_and_wait_for_the_alert();
    // Alertmanager is down so far: the alert waits in the outbox.
    wait_for("a failed delivery, kept", Duration::from_secs(10), || {
        agent_metric(&ns, "seer_alert_failures_total") >= 1.0
            && agent_metric(&ns, "seer_alerts_pending") >= 1.0
    });
    assert!(
        sc.stepped(),
        "enforce: memcached's quota (the fault's 1% of a CPU) raised to what it wanted (a CPU or more), not 125% of the squeeze: {}; agent log:\n{}",
        sc.quota(),
        sc.agent.proc.stderr()
    );

    // Now the cluster manager comes up; the queued alert reaches it.
    let am_conf = sc.dir.join("am.yml");
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
            &format!("--storage.path={}", sc.dir.join("am").display()),
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
    assert_alert(&alerts[0], "applied");

    // While the agent holds the store, `query` asks the agent instead.
    let o = NetPair::cmd(
        &ns,
        &agent_bin(),
        &[
            "query",
            "--json",
            "--db",
            &sc.agent.db.display().to_string(),
            "diagnoses",
        ],
    )
    .output()
    .expect("live query");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let live: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert!(
        live.as_array()
            .is_some_and(|d| d.iter().any(|e| e["service"] == "memcached")),
        "live diagnoses: {live}"
    );

    // SIGTERM: the quota goes back to the fault's value, the journal is empty.
    let _ = Command::new("kill")
        .args(["-TERM", &sc.agent.proc.pid().to_string()])
        .status();
    let st = sc.agent.wait_exit(Duration::from_secs(20));
    assert!(st.success(), "{st:?}: {}", sc.agent.proc.stderr());
    assert_eq!(sc.quota(), "1000", "seer's step undone on exit");
    let j = std::fs::read_to_string(&sc.journal).unwrap_or_default();
    assert!(!j.contains("cfs_quota"), "journal still holds: {j}");
    sc.end_load();

    // The store has the violation, the diagnosis and the (undone) action.
    let v = sc.query("violations");
    assert!(
        v.as_array()
            .is_some_and(|v| v.iter().any(|e| e["initiator"] == "memcached")),
        "{v}"
    );
    let d = sc.query("diagnoses");
    assert!(
        d.as_array()
            .is_some_and(|d| d.iter().any(|e| e["service"] == "memcached"
                && e["resource"].as_str().is_some_and(|r| r.starts_with("cpu")))),
        "{d}"
    );
    let acts = sc.query("actions");
    assert!(
        acts.as_array()
            .is_some_and(|x| x.iter().any(|e| e["service"] == "memcached"
                && e["kind"] == "cgroup.cpu"
                && e["undone_ms"].as_u64().is_some())),
        "{acts}"
    );
    assert_eq!(
        sc.query("alerts"),
        serde_json::json!([]),
        "outbox delivered"
    );
}

#[test]
fn a_crashed_enforcing_agent_is_undone_by_the_next_start() {
    let Some(mut sc) = Scenario::start("respond-crash", 8092, 11492, "mode = \"enforce\"", "")
    else {
        return;
    };
    // Without [alerts] the agent still steps; wait for the step itself.
    sc.wait_for_the_step();
    let _ = sc.agent.proc.child.kill(); // SIGKILL: nothing undone
    let _ = sc.agent.proc.child.wait();
    assert!(
        sc.stepped(),
        "a killed agent undoes nothing: {}",
        sc.quota()
    );
    assert!(
        std::fs::read_to_string(&sc.journal)
            .unwrap_or_default()
            .contains("cfs_quota"),
        "the journal keeps the step"
    );
    sc.end_load();
    // The next start, same journal and store: undone before the first tick.
    let o = sc.start_again(&sc.conf, &sc.agent.db);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("undid what a previous run left"), "{err}");
    assert_eq!(sc.quota(), "1000", "the dead run's step undone");
    let acts = sc.query("actions");
    assert!(
        acts.as_array()
            .is_some_and(|x| !x.is_empty() && x.iter().all(|e| e["undone_ms"].as_u64().is_some())),
        "every action of the dead run marked undone: {acts}"
    );
}

/// The undo comes first at start, in every mode, and does not depend on the store (or on
/// the eBPF programs) opening: a recommend-mode start with a store it cannot open still
/// undoes what a killed enforcing run left.
#[test]
fn the_undo_comes_first_in_any_mode_even_when_the_store_cannot_open() {
    let Some(mut sc) = Scenario::start("respond-undo1st", 8094, 11494, "mode = \"enforce\"", "")
    else {
        return;
    };
    sc.wait_for_the_step();
    let _ = sc.agent.proc.child.kill(); // SIGKILL: nothing undone
    let _ = sc.agent.proc.child.wait();
    let kept = std::fs::read_to_string(&sc.journal).unwrap_or_default();
    assert!(
        kept.contains("cfs_quota"),
        "the journal keeps the step: {kept:?}"
    );
    sc.end_load();
    let conf = std::fs::read_to_string(&sc.conf)
        .expect("config")
        .replace("mode = \"enforce\"", "mode = \"recommend\"");
    let recommend = sc.conf.with_extension("recommend.toml");
    std::fs::write(&recommend, conf).expect("write config");
    let o = sc.start_again(&recommend, Path::new("/proc/seer-no-such-dir/seer.redb"));
    let second = String::from_utf8_lossy(&o.stderr);
    let err = format!(
        "{second}\n(the killed run's log:\n{})",
        sc.agent.proc.stderr()
    );
    assert!(!o.status.success(), "the store cannot open there: {err}");
    assert!(second.contains("undid what a previous run left"), "{err}");
    assert_eq!(sc.quota(), "1000", "the dead run's step undone: {err}");
    let j = std::fs::read_to_string(&sc.journal).unwrap_or_default();
    assert!(!j.contains("cfs_quota"), "journal still holds: {j}");
}

#[test]
fn recommend_changes_nothing_and_the_webhook_gets_the_step() {
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let Some(mut sc) = Scenario::start(
        "respond-recommend",
        8093,
        11493,
        "mode = \"recommend\"",
        "webhook = \"http://127.0.0.1:19094/seer\"",
    ) else {
        return;
    };
    // A webhook receiver in the agent's namespace: answers 200 and keeps each body.
    let sink = got.clone();
    let _rx = in_ns(&sc.ns, move || {
        use std::io::{Read as _, Write as _};
        let l = std::net::TcpListener::bind("127.0.0.1:19094").expect("bind webhook");
        for c in l.incoming() {
            let Ok(mut c) = c else { break };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            // Read the head, then Content-Length bytes of body.
            let body = loop {
                let n = c.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).into_owned();
                if let Some(i) = text.find("\r\n\r\n") {
                    // Header names are case-insensitive (ureq sends `content-length`).
                    let len = text
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length").then_some(v)
                        })
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if buf.len() >= i + 4 + len {
                        break Some(text[i + 4..].to_string());
                    }
                }
            };
            let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            if let Some(b) = body {
                sink.lock().expect("lock").push(b);
            }
        }
    });
    sc.inject_and_wait_for_the_alert();
    wait_for("the webhook call", Duration::from_secs(15), || {
        !got.lock().expect("lock").is_empty()
    });
    let body = got.lock().expect("lock")[0].clone();
    let a: serde_json::Value = serde_json::from_str(&body).expect("webhook body is JSON");
    assert_alert(&a, "recommended");
    assert_eq!(sc.quota(), "1000", "recommend changes nothing");
    sc.end_load();
    let _ = Command::new("kill")
        .args(["-TERM", &sc.agent.proc.pid().to_string()])
        .status();
    let st = sc.agent.wait_exit(Duration::from_secs(20));
    assert!(st.success(), "{st:?}: {}", sc.agent.proc.stderr());
    assert!(
        sc.query("actions").as_array().is_some_and(Vec::is_empty),
        "nothing applied, nothing logged as applied"
    );
    let _ = &sc.net;
}
