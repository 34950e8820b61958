//! Start, stop, crash and bad input: the host is left as it was found, errors say what to do.
use std::{process::Command, time::Duration};

use seer_tests::*;

const T: Duration = Duration::from_secs(20);

/// Program ids the agent logged at attach time.
fn prog_ids(agent: &Agent) -> Vec<u32> {
    agent
        .proc
        .wait_err("attach log", T, |l| l.contains("attached seer_tc_ingress"));
    let ids: Vec<u32> = agent
        .proc
        .errs
        .lock()
        .expect("lock")
        .iter()
        .filter_map(|l| l.split("prog_id=").nth(1)?.trim().parse().ok())
        .collect();
    assert!(
        ids.len() >= 5,
        "agent logged its program ids: {}",
        agent.proc.stderr()
    );
    ids
}

fn prog_exists(id: u32) -> bool {
    Command::new("bpftool")
        .args(["prog", "show", "id", &id.to_string()])
        .output()
        .expect("bpftool")
        .status
        .success()
}

/// bpf links (tcx, iter, tracepoints) that point at one of `ids`, as `bpftool link show` lists
/// them (Debian's bpftool 7.1 shows a tcx link as `type 11`).
fn links_to(ids: &[u32]) -> Vec<String> {
    // bpftool fails with EAGAIN when a link it listed vanishes before it reads it (other
    // tests' agents exit concurrently): retry.
    let mut listing = None;
    for _ in 0..20 {
        let out = Command::new("bpftool")
            .args(["link", "show"])
            .output()
            .expect("bpftool");
        if out.status.success() {
            listing = Some(String::from_utf8_lossy(&out.stdout).into_owned());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    listing
        .expect("bpftool link show kept failing")
        .lines()
        .filter(|l| {
            l.split("prog ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
                .is_some_and(|p| ids.contains(&p))
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn sigkill_leaves_no_programs_or_attachments() {
    require_root!();
    let net = NetPair::new();
    // Every hook, epoll included, so every kind of attachment is checked.
    let mut agent = Agent::start(
        &net.server,
        100_000,
        &["--iface", "sv0", "--iface", "lo", "--epoll"],
    );
    let ids = prog_ids(&agent);
    assert!(ids.iter().all(|&id| prog_exists(id)), "programs loaded");
    let links = links_to(&ids);
    // iter/tcp + 4 tp_btf + 4 epoll tracepoints + 2 tcx (sv0, lo), and the per-tick walk's:
    // one socket-storage iterator, or one iter/task_file link per watched process (kernels
    // that refuse map-element iterators; none watched in this empty namespace).
    assert!(links.len() >= 11, "links before the kill: {links:?}");
    // kill -9 the agent itself (ip netns exec execs it, so the child is the agent).
    sh(&format!("kill -9 {}", agent.proc.pid()));
    let _ = agent.proc.child.wait();
    // The kernel frees a dead process's programs as its descriptors close: wait for it.
    wait_until("the killed agent's programs to go", T, || {
        ids.iter().all(|id| !prog_exists(*id))
    });
    for id in &ids {
        assert!(!prog_exists(*id), "program {id} still loaded after kill -9");
    }
    assert_eq!(
        links_to(&ids),
        Vec::<String>::new(),
        "links left behind after kill -9"
    );
    // A new start works and attaches cleanly.
    let again = Agent::start(&net.server, 3, &["--iface", "sv0"]);
    let mut again = again;
    assert!(
        again.wait_exit(T).success(),
        "restart after kill -9: {}",
        again.proc.stderr()
    );
}

#[test]
fn sigterm_detaches_and_exits_zero() {
    require_root!();
    let net = NetPair::new();
    let mut agent = Agent::start(&net.server, 100_000, &["--iface", "sv0"]);
    let ids = prog_ids(&agent);
    agent
        .proc
        .wait_line("first tick", T, |l| l.starts_with('{'));
    sh(&format!("kill -TERM {}", agent.proc.pid()));
    let st = agent.wait_exit(T);
    assert!(st.success(), "exit status {st}: {}", agent.proc.stderr());
    assert!(agent.proc.stderr().contains("detached all programs"));
    for id in &ids {
        assert!(!prog_exists(*id), "program {id} still loaded after SIGTERM");
    }
    assert_eq!(
        links_to(&ids),
        Vec::<String>::new(),
        "links left behind after SIGTERM"
    );
}

/// Once attached, every thread of the agent (the tick loop, the store's writer, the alert
/// sender) holds only what it needs, and can never get more back: bounding set = permitted =
/// effective, no ambient capabilities, no_new_privs, and the seccomp filter. Before: only the
/// main thread dropped (capabilities are per thread: the writer, started earlier, kept all
/// 40), the bounding set was whole, and nothing stopped an execve from regaining root's set.
#[test]
fn every_thread_runs_with_the_least_privilege_after_attaching() {
    require_root!();
    let net = NetPair::new();
    let dir = std::env::temp_dir().join(format!("seer-leastpriv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let conf = dir.join("seer.toml");
    std::fs::write(
        &conf,
        format!(
            "[qos]\nservice = \"nginx\"\np99_ms = 20\n\
             [respond]\nmode = \"enforce\"\njournal = \"{}\"\n\
             [alerts]\nwebhook = \"http://127.0.0.1:19995/hook\"\n",
            dir.join("actions.json").display()
        ),
    )
    .expect("config");
    let conf_arg = conf.display().to_string();
    let mut agent = Agent::start(
        &net.server,
        100_000,
        &["--iface", "sv0", "--config", &conf_arg],
    );
    agent
        .proc
        .wait_line("first tick", T, |l| l.starts_with('{'));
    let pid = agent.proc.pid();
    let field = |st: &str, k: &str| -> String {
        st.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let mut names = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks") {
        let st = std::fs::read_to_string(t.expect("task").path().join("status")).expect("status");
        let name = field(&st, "Name:");
        let eff = u64::from_str_radix(&field(&st, "CapEff:"), 16).expect("CapEff");
        let what = format!("thread {name}: {st}");
        assert_eq!(field(&st, "NoNewPrivs:"), "1", "{what}");
        assert_eq!(field(&st, "Seccomp:"), "2", "{what}");
        assert_eq!(field(&st, "CapAmb:"), "0000000000000000", "{what}");
        assert_eq!(field(&st, "CapBnd:"), field(&st, "CapPrm:"), "{what}");
        assert_eq!(field(&st, "CapEff:"), field(&st, "CapPrm:"), "{what}");
        // Never again: DAC_OVERRIDE 1, SETUID 7, SETPCAP 8, SYS_MODULE 16, SYS_ADMIN 21.
        for bit in [1, 7, 8, 16, 21] {
            assert_eq!(eff & (1 << bit), 0, "capability {bit} kept: {what}");
        }
        // What sensing needs stays: DAC_READ_SEARCH 2, SYS_PTRACE 19, BPF 39.
        for bit in [2, 19, 39] {
            assert_ne!(eff & (1 << bit), 0, "capability {bit} lost: {what}");
        }
        names.push(name);
    }
    println!("threads: {names:?}");
    assert!(
        names.len() >= 3,
        "tick loop, writer and alert sender: {names:?}"
    );
    sh(&format!("kill -TERM {pid}"));
    let st = agent.wait_exit(T);
    assert!(st.success(), "exit status {st}: {}", agent.proc.stderr());
    assert!(agent.proc.stderr().contains("detached all programs"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The shipped systemd unit is valid and sandboxed: `systemd-analyze verify` has nothing to
/// say about it (ExecStart pointed at the built agent), and `systemd-analyze security` rates
/// its exposure at most 5.0 ("OK"; it was 8.2, "EXPOSED", before the sandboxing).
#[test]
fn the_systemd_unit_verifies_and_is_sandboxed() {
    let level = unit_exposure(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/seer-agent.service"),
    );
    println!("systemd-analyze security: exposure {level}");
    assert!(level <= 5.0, "exposure {level} > 5.0");
}

#[test]
fn unknown_interface_is_a_clear_error() {
    require_root!();
    let net = NetPair::new();
    let mut agent = Agent::start(&net.server, 3, &["--iface", "nope0"]);
    let st = agent.wait_exit(T);
    let err = agent.proc.stderr();
    assert!(!st.success());
    assert!(err.contains("interface `nope0` does not exist"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_config_line_names_file_and_line_and_exits_64() {
    require_root!();
    let dir = std::env::temp_dir().join(format!("seer-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let cfg = dir.join("seer.toml");
    std::fs::write(
        &cfg,
        "tick_ms = 100\n[[service]]\nname = \"x\"\nport = \"eighty\"\n",
    )
    .expect("write");
    let out = Command::new(agent_bin())
        .args(["run", "--ticks", "1", "--config"])
        .arg(&cfg)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains(&format!("{}:4:", cfg.display())), "{err}");
    let out = Command::new(agent_bin())
        .args(["run", "--tick-ms", "5"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("10 ..= 10000"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn missing_capabilities_are_named() {
    require_root!();
    if Command::new("setpriv").arg("--version").output().is_err() {
        println!("SKIP: setpriv (util-linux) not installed");
        return;
    }
    let out = Command::new("setpriv")
        .args([
            "--inh-caps=-all",
            "--bounding-set=-bpf,-perfmon,-sys_admin,-net_admin",
        ])
        .arg(agent_bin())
        .args(["run", "--ticks", "1"])
        .output()
        .expect("setpriv");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(77), "{err}");
    for cap in ["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"] {
        assert!(err.contains(cap), "{cap} named: {err}");
    }
}

#[test]
fn prometheus_endpoint_serves_channels_and_health() {
    require_root!();
    let net = NetPair::new();
    let srv = Proc::spawn(NetPair::cmd(
        &net.server,
        &testsrv_bin(),
        &["delay", "7101", "0"],
    ));
    srv.wait_line("server ready", T, |l| l == "ready");
    let agent = Agent::start(
        &net.server,
        100,
        &["--iface", "lo", "--metrics-addr", "127.0.0.1:9464"],
    );
    agent.wait_service("seer-testsrv", T, |_| true);
    let body = http_in(&net.server, 9464, "/metrics");
    assert!(
        body.contains("seer_rx_queue_bytes{service=\"seer-testsrv\""),
        "{body}"
    );
    assert!(body.contains("seer_agent_ticks_total "), "{body}");
    assert!(
        body.contains("seer_kernel_drops_total{what=\"turns_full\"} 0"),
        "{body}"
    );
    assert!(
        !body.contains("service=\"seer-agent\""),
        "the agent does not watch itself: {body}"
    );
    // Prometheus' own linter: HELP on every metric, base units in names. Before: no HELP text
    // anywhere, and `seer_epoll_wait_ms`.
    promtool_check(&body);
    assert!(body.contains("seer_epoll_wait_seconds{"), "{body}");
    assert!(body.contains("seer_cpu_wait_seconds{"), "{body}");
    assert!(body.contains("seer_cpu_throttled_ratio{"), "{body}");
}

/// The HTTP listener cannot stop the agent or leak its private data (issue 14, finding 3).
/// Before: 1100 idle connections exhausted the descriptors and the next tick's iterator link
/// failed (the agent exited); a client that sent nothing held its connection forever; any
/// local user could read the query API (cgroup paths, diagnoses, actions).
#[test]
fn the_http_listener_has_limits_and_answers_the_api_to_root_only() {
    require_root!();
    let net = NetPair::new();
    let mut agent = Agent::start(
        &net.server,
        100_000,
        &["--iface", "lo", "--metrics-addr", "127.0.0.1:9467"],
    );
    agent
        .proc
        .wait_line("first tick", T, |l| l.starts_with('{'));
    // 1100 idle connections from inside the namespace, then the agent must still tick and
    // serve /metrics; the idle ones are closed by the header timeout.
    let idle = in_ns(&net.server, || {
        let mut v = Vec::new();
        for _ in 0..1100 {
            if let Ok(s) = std::net::TcpStream::connect("127.0.0.1:9467") {
                v.push(s);
            }
        }
        let opened = v.len();
        std::thread::sleep(Duration::from_secs(7));
        // After the header timeout, the server has closed every one it accepted.
        let closed = v
            .iter()
            .filter(|s| {
                use std::io::Read as _;
                let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
                let mut r: &std::net::TcpStream = s;
                matches!(r.read(&mut [0u8; 64]), Ok(0) | Err(_))
            })
            .count();
        (opened, closed)
    });
    let (opened, closed) = idle.join().expect("idle clients");
    assert_eq!(opened, 1100, "connections opened");
    assert_eq!(closed, 1100, "every idle connection closed by the server");
    let ticks_before = agent.ticks().len();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        agent.ticks().len() > ticks_before,
        "the agent still ticks: {}",
        agent.proc.stderr()
    );
    assert!(
        agent.proc.child.try_wait().expect("wait").is_none(),
        "the agent is alive"
    );
    let get = |user: Option<&str>, path: &str| -> String {
        let py = format!(
            "import urllib.request,urllib.error\ntry:\n r=urllib.request.urlopen('http://127.0.0.1:9467{path}',timeout=5); print(r.status, r.read().decode())\nexcept urllib.error.HTTPError as e:\n print(e.code, e.read().decode())"
        );
        let mut cmd = vec!["ip", "netns", "exec", &net.server];
        let setpriv = [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ];
        if user.is_some() {
            cmd.extend(setpriv);
        }
        cmd.extend(["/usr/bin/python3", "-c", &py]);
        let o = Command::new(cmd[0])
            .args(&cmd[1..])
            .output()
            .expect("client");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let metrics = get(Some("nobody"), "/metrics");
    assert!(metrics.starts_with("200 "), "metrics are public: {metrics}");
    assert!(metrics.contains("seer_http_refused_total"), "{metrics}");
    let denied = get(Some("nobody"), "/api/query/services");
    assert!(denied.starts_with("403 "), "a non-root user: {denied}");
    let root = get(None, "/api/query/services");
    assert!(root.starts_with("200 "), "root: {root}");
    let huge = get(None, "/api/query/service?name=x&n=100000000");
    assert!(
        huge.starts_with("400 ") && huge.contains("at most"),
        "{huge}"
    );
    sh(&format!("kill -TERM {}", agent.proc.pid()));
    assert!(agent.wait_exit(T).success(), "{}", agent.proc.stderr());
}

/// Every tick lands in the trace store; `query` and `export` read it back once the agent stops.
#[test]
fn ticks_are_recorded_queried_and_exported() {
    require_root!();
    let net = NetPair::new();
    let srv = Proc::spawn(NetPair::cmd(
        &net.server,
        &testsrv_bin(),
        &["delay", "7102", "0"],
    ));
    srv.wait_line("server ready", T, |l| l == "ready");
    let mut agent = Agent::start(&net.server, 15, &["--iface", "lo"]);
    assert!(agent.wait_exit(T).success(), "{}", agent.proc.stderr());
    let ticks = agent.ticks().len();
    assert_eq!(ticks, 15);
    let db = agent.db.display().to_string();
    let q = |args: &[&str]| {
        let out = Command::new(agent_bin())
            .args(args)
            .output()
            .expect("seer-agent");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let services: serde_json::Value =
        serde_json::from_str(&q(&["query", "--db", &db, "--json", "services"])).expect("json");
    assert!(
        services
            .as_array()
            .expect("rows")
            .iter()
            .any(|s| s["name"] == "seer-testsrv"),
        "{services}"
    );
    let recent: serde_json::Value = serde_json::from_str(&q(&[
        "query",
        "--db",
        &db,
        "--json",
        "service",
        "seer-testsrv",
        "-n",
        "100",
    ]))
    .expect("json");
    assert_eq!(
        recent["ticks"].as_array().expect("ticks").len(),
        15,
        "every tick stored"
    );
    assert!(q(&["query", "--db", &db, "top", "outstanding"]).contains("seer-testsrv"));
    let out = std::env::temp_dir().join(format!("seer-export-{}", std::process::id()));
    let msg = q(&[
        "export",
        "--db",
        &db,
        "--from",
        "-1h",
        "--out",
        &out.display().to_string(),
    ]);
    assert!(msg.contains("15 ticks x 1 services"), "{msg}");
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("manifest.json")).expect("manifest"),
    )
    .expect("json");
    assert_eq!(manifest["rows"], 15, "{manifest}");
    // The agent ran without --epoll: the store and the manifest say those channels were not
    // observed (their zeros are "not seen").
    assert_eq!(
        manifest["missing_channels"],
        serde_json::json!(["epoll_calls", "epoll_events", "epoll_wait_ms"]),
        "{manifest}"
    );
    assert!(
        out.join("samples.arrow")
            .metadata()
            .expect("data file")
            .len()
            > 0
    );
    std::fs::remove_dir_all(&out).ok();
    // Bad input: an unknown channel and a missing store are clear errors.
    let bad = Command::new(agent_bin())
        .args(["query", "--db", &db, "top", "bogus"])
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown channel \"bogus\""));
    let bad = Command::new(agent_bin())
        .args(["query", "--db", "/nonexistent/x.redb", "services"])
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no trace store at /nonexistent/x.redb"));
}

/// `doctor` loads every program on this kernel and reports each channel.
#[test]
fn doctor_reports_every_channel_on_this_kernel() {
    require_root!();
    let net = NetPair::new();
    // Traffic while doctor prices the hooks: loopback connections, a request and an answer
    // on each, for a few seconds.
    let mut traffic = Proc::spawn(NetPair::cmd(
        &net.server,
        std::path::Path::new("python3"),
        &[
            "-c",
            "import socket,time\nl=socket.socket(); l.bind(('127.0.0.1',7021)); l.listen(64)\n\
             t=time.time()\nwhile time.time()-t<8:\n c=socket.create_connection(('127.0.0.1',7021)); \
             s,_=l.accept(); c.sendall(b'x'); s.recv(1); s.sendall(b'y'); c.recv(1); c.close(); s.close(); time.sleep(0.002)",
        ],
    ));
    let out = NetPair::cmd(
        &net.server,
        &agent_bin(),
        &["doctor", "--json", "--iface", "lo"],
    )
    .output()
    .expect("doctor");
    let _ = traffic.child.kill();
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("doctor --json prints JSON");
    assert!(out.status.success(), "{v}");
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["btf"]["ok"], true);
    let channels = v["channels"].as_array().expect("channels");
    assert_eq!(channels.len(), 7);
    assert!(
        channels.iter().all(|c| c["ok"] == true),
        "every channel on 6.18: {v}"
    );
    assert_eq!(v["missing"].as_array().map(Vec::len), Some(0));
    // The per-tick walk visits only watched sockets, by whichever path this kernel allows
    // (socket storage, or each watched process's descriptors where map-element iterators are
    // refused), and its cost here is measured and shown.
    let walks = v["socket_walks"].as_array().expect("socket_walks");
    let tick = walks
        .iter()
        .find(|w| w["per_tick"] == true)
        .unwrap_or_else(|| panic!("no per-tick walk: {v}"));
    println!("kernel {}: per-tick walk {tick}", v["kernel"]);
    assert_ne!(tick["walk"], "iter/tcp (every socket)", "{v}");
    assert!(
        tick["us_median"].as_f64().is_some_and(|us| us > 0.0),
        "{tick}"
    );
    // Every attached program is priced, and those the traffic ran have a cost per run.
    let prices = v["hook_prices"].as_array().expect("hook_prices");
    for h in v["hooks"].as_array().expect("hooks") {
        assert!(
            prices.iter().any(|p| p["program"] == h["program"]),
            "{} not priced: {prices:?}",
            h["program"]
        );
    }
    let connect = prices
        .iter()
        .find(|p| p["program"] == "seer_connect")
        .expect("seer_connect priced");
    println!("hook prices: {prices:?}");
    assert!(
        connect["runs_per_s"].as_f64().unwrap_or(0.0) > 10.0
            && connect["ns_per_run"].as_f64().unwrap_or(0.0) > 0.0,
        "the connect hook ran under the traffic: {connect}"
    );
    // A host without the privileges gets the same report, saying what is missing.
    let out = Command::new("setpriv")
        .args([
            "--inh-caps=-all",
            "--bounding-set=-bpf,-perfmon,-sys_admin,-net_admin",
        ])
        .arg(agent_bin())
        .args(["doctor", "--json"])
        .output()
        .expect("setpriv");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(!out.status.success());
    assert!(
        v["capabilities"]["error"]
            .as_str()
            .unwrap_or("")
            .contains("CAP_BPF"),
        "{v}"
    );
    assert!(
        v["channels"]
            .as_array()
            .expect("channels")
            .iter()
            .all(|c| c["ok"] == false)
    );
}
