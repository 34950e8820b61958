//! The agent's channels against independent witnesses, on real sockets in throwaway network
//! namespaces joined by veth.
use std::{thread, time::Duration};

use seer_tests::*;

const SVC: &str = "seer-testsrv";
const T: Duration = Duration::from_secs(20);

/// A Python client in the client namespace: runs `body`, then holds its sockets until stdin
/// gets a line.
fn py_client(net: &NetPair, body: &str) -> Proc {
    let code = format!("import socket,sys\n{body}\nsys.stdin.readline()");
    Proc::spawn(NetPair::cmd(
        &net.client,
        std::path::Path::new("python3"),
        &["-c", &code],
    ))
}

fn server(net: &NetPair, args: &[&str]) -> Proc {
    let p = Proc::spawn(NetPair::cmd(&net.server, &testsrv_bin(), args));
    p.wait_line("server ready", T, |l| l == "ready");
    p
}

/// Receive queue: a server that accepts but never reads holds exactly what `ss` calls Recv-Q.
#[test]
fn rx_queue_bytes_match_ss() {
    require_root!();
    let net = NetPair::new();
    let _srv = server(&net, &["noread", "7001"]);
    let agent = Agent::start(&net.server, 40, &["--iface", "sv0"]);
    agent.wait_service(SVC, T, |_| true);
    // K connections from the client namespace, B bytes in all, unevenly split.
    let sizes = [1000usize, 2500, 7000, 123];
    let script = sizes
        .iter()
        .map(|n| format!("s=socket.create_connection(('{SERVER_ADDR}',7001)); s.sendall(b'x'*{n}); keep.append(s)"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut client = py_client(
        &net,
        &format!("keep=[]\n{script}\nprint('sent',flush=True)"),
    );
    client.wait_line("client sent", T, |l| l == "sent");
    let total: usize = sizes.iter().sum();
    let s = agent.wait_service(SVC, T, |s| num(s, "rx_queue_bytes") as usize == total);
    let witness = ss_recvq(&net.server, "-tn", "state established sport = :7001");
    assert_eq!(witness as usize, total, "ss sees what was sent");
    assert_eq!(
        num(&s, "rx_queue_bytes") as u64,
        witness,
        "agent == ss Recv-Q"
    );
    assert_eq!(num(&s, "connections") as usize, sizes.len());
    client.send("");
}

/// Accept backlog: a server that never accepts; the agent's backlog equals `ss -l` Recv-Q.
#[test]
fn accept_backlog_matches_ss() {
    require_root!();
    let net = NetPair::new();
    let _srv = server(&net, &["noaccept", "7002", "64"]);
    let agent = Agent::start(&net.server, 40, &["--iface", "sv0"]);
    agent.wait_service(SVC, T, |_| true);
    let k = 5;
    let mut client = py_client(
        &net,
        &format!(
            "keep=[socket.create_connection(('{SERVER_ADDR}',7002)) for _ in range({k})]\nprint('sent',flush=True)"
        ),
    );
    client.wait_line("client connected", T, |l| l == "sent");
    let s = agent.wait_service(SVC, T, |s| num(s, "accept_backlog") as u64 == k);
    let witness = ss_recvq(&net.server, "-ltn", "sport = :7002");
    assert_eq!(witness, k, "ss -ltn Recv-Q");
    assert_eq!(num(&s, "accept_backlog") as u64, witness);
    client.send("");
}

/// A server on `port` watched by an agent started with `agent_args`, and a client that sends
/// it 200 requests: the segments the client emitted (its own TCP_INFO) and the agent's
/// `nic_rx_pkts` summed over its ticks, and the agent (exited).
fn nic_rx_against_sender(port: &str, agent_args: &[&str]) -> (f64, f64, Agent) {
    let net = NetPair::new();
    let _srv = server(&net, &["delay", port, "0"]);
    let mut agent = Agent::start(&net.server, 35, agent_args);
    agent.wait_service(SVC, T, |_| true);
    let mut client = Proc::spawn(NetPair::cmd(
        &net.client,
        &testsrv_bin(),
        &["client", SERVER_ADDR, port, "200"],
    ));
    let line = client.wait_line("client segs_out", T, |l| l.starts_with("segs_out="));
    let segs: f64 = line
        .trim_start_matches("segs_out=")
        .parse()
        .expect("number");
    assert!(agent.wait_exit(T).success());
    let counted = sum_over_ticks(&agent.ticks(), SVC, "nic_rx_pkts");
    client.send("");
    // 200 requests, their ACKs piggybacked or delayed, plus the handshake's SYN and ACK.
    assert!(segs >= 202.0, "client emitted {segs} segments");
    (segs, counted, agent)
}

/// NIC RX with tc ingress (opt-in): every segment the client emitted to the port is counted at
/// the server's veth.
#[test]
fn nic_rx_packets_match_sender_segments() {
    require_root!();
    let (segs, counted, _) = nic_rx_against_sender("7003", &["--iface", "sv0"]);
    assert_eq!(
        counted, segs,
        "agent's NIC count == segments the sender emitted"
    );
}

/// NIC RX by default (no per-packet program): the server socket's own segment counter, read
/// once per tick, sums to every segment the client emitted (its SYN included: the connection's
/// segs_in counts it). No tc program is attached.
#[test]
fn nic_rx_from_socket_counters_match_sender_segments() {
    require_root!();
    let (segs, counted, agent) = nic_rx_against_sender("7013", &[]);
    assert!(
        !agent.proc.stderr().contains("attached seer_tc_ingress"),
        "no per-packet program by default: {}",
        agent.proc.stderr()
    );
    assert_eq!(
        counted, segs,
        "agent's per-tick count == segments the sender emitted"
    );
}

/// epoll: exactly E calls returning R events in all.
#[test]
fn epoll_counts_are_exact() {
    require_root!();
    let net = NetPair::new();
    let mut srv = server(&net, &["epoll", "7004", "50", "20"]);
    let mut agent = Agent::start(&net.server, 30, &["--iface", "lo", "--epoll"]);
    agent.wait_service(SVC, T, |_| true);
    srv.send("go");
    let done = srv.wait_line("epoll done", T, |l| l.starts_with("done"));
    assert_eq!(
        done, "done calls=50 events=20",
        "the workload did what it says"
    );
    assert!(agent.wait_exit(T).success());
    let ticks = agent.ticks();
    assert_eq!(sum_over_ticks(&ticks, SVC, "epoll_calls"), 50.0);
    assert_eq!(sum_over_ticks(&ticks, SVC, "epoll_events"), 20.0);
    srv.send("");
}

/// Outstanding: K requests held unanswered -> K; released -> 0.
#[test]
fn outstanding_requests_hold_and_release() {
    require_root!();
    let net = NetPair::new();
    let mut srv = server(&net, &["hold", "7005"]);
    let agent = Agent::start(&net.server, 100, &["--iface", "sv0"]);
    agent.wait_service(SVC, T, |_| true);
    let k = 4;
    let mut client = py_client(
        &net,
        &format!(
            "keep=[socket.create_connection(('{SERVER_ADDR}',7005)) for _ in range({k})]\n[s.sendall(b'get\\n') for s in keep]\nprint('sent',flush=True)\n[s.recv(16) for s in keep]\nprint('answered',flush=True)"
        ),
    );
    client.wait_line("requests sent", T, |l| l == "sent");
    agent.wait_service(SVC, T, |s| num(s, "outstanding") as u32 == k);
    // Stays at K while held (three more ticks).
    thread::sleep(Duration::from_millis(300));
    let s = agent.wait_service(SVC, T, |_| true);
    assert_eq!(num(&s, "outstanding") as u32, k, "still held");
    srv.send("release");
    client.wait_line("answers", T, |l| l == "answered");
    let s = agent.wait_service(SVC, T, |s| num(s, "outstanding") == 0.0);
    assert_eq!(num(&s, "outstanding"), 0.0);
    let answered = sum_over_ticks(&agent.ticks(), SVC, "requests");
    assert_eq!(answered, k as f64, "each held request completed once");
    client.send("");
}

/// Requests read before the agent started (the turn hooks never saw them begin) are
/// outstanding from the first ticks, seeded from the socket clocks, until answered. Before:
/// outstanding 0 for as long as the server held them.
#[test]
fn requests_in_flight_before_the_start_are_outstanding() {
    require_root!();
    let net = NetPair::new();
    let mut srv = server(&net, &["hold", "7006"]);
    let k = 4;
    let mut client = py_client(
        &net,
        &format!(
            "keep=[socket.create_connection(('{SERVER_ADDR}',7006)) for _ in range({k})]\n[s.sendall(b'get\\n') for s in keep]\nprint('sent',flush=True)\n[s.recv(16) for s in keep]\nprint('answered',flush=True)"
        ),
    );
    client.wait_line("requests sent", T, |l| l == "sent");
    // The server has read them (nothing left in its receive queues) before the agent starts.
    let t0 = std::time::Instant::now();
    while ss_recvq(&net.server, "-tn", "state established sport = :7006") > 0 {
        assert!(t0.elapsed() < T, "the server did not read the requests");
        thread::sleep(Duration::from_millis(50));
    }
    thread::sleep(Duration::from_millis(100));
    let agent = Agent::start(&net.server, 100, &["--iface", "sv0"]);
    let s = agent.wait_service(SVC, T, |_| true);
    assert_eq!(
        num(&s, "outstanding") as u32,
        k,
        "held since before the start: {s}"
    );
    thread::sleep(Duration::from_millis(300));
    let s = agent.wait_service(SVC, T, |_| true);
    assert_eq!(num(&s, "outstanding") as u32, k, "still held");
    srv.send("release");
    client.wait_line("answers", T, |l| l == "answered");
    let s = agent.wait_service(SVC, T, |s| num(s, "outstanding") == 0.0);
    assert_eq!(num(&s, "outstanding"), 0.0);
    client.send("");
}

/// Latency: a server that sleeps 20 ms per request has a p50 between 20 and 25 ms.
#[test]
fn latency_p50_of_a_20ms_server() {
    require_root!();
    let net = NetPair::new();
    let _srv = server(&net, &["delay", "7006", "20"]);
    let mut agent = Agent::start(&net.server, 30, &["--iface", "sv0"]);
    agent.wait_service(SVC, T, |_| true);
    let mut client = Proc::spawn(NetPair::cmd(
        &net.client,
        &testsrv_bin(),
        &["client", SERVER_ADDR, "7006", "60"],
    ));
    client.wait_line("client done", T, |l| l.starts_with("segs_out="));
    assert!(agent.wait_exit(T).success());
    let mut p50: Vec<f64> = agent
        .ticks()
        .iter()
        .filter_map(|t| service(t, SVC))
        .filter(|s| num(s, "requests") > 0.0)
        .map(|s| num(s, "latency_p50_us"))
        .collect();
    assert!(p50.len() >= 5, "ticks with requests: {p50:?}");
    p50.sort_by(f64::total_cmp);
    let median = p50[p50.len() / 2];
    assert!(
        (20_000.0..=25_000.0).contains(&median),
        "p50 {median} us not in 20..25 ms: {p50:?}"
    );
    assert_eq!(sum_over_ticks(&agent.ticks(), SVC, "requests"), 60.0);
    client.send("");
}

/// Discovery follows processes: a server started after the agent appears, and leaves when it
/// exits.
#[test]
fn services_come_and_go() {
    require_root!();
    let net = NetPair::new();
    let agent = Agent::start(&net.server, 200, &["--iface", "lo"]);
    agent
        .proc
        .wait_line("first tick", T, |l| l.starts_with('{'));
    let srv = server(&net, &["delay", "7007", "0"]);
    let s = agent.wait_service(SVC, T, |_| true);
    assert_eq!(s["ports"], serde_json::json!([7007]));
    assert_eq!(num(&s, "pid") as u32, srv.pid());
    drop(srv);
    let t0 = std::time::Instant::now();
    loop {
        let ticks = agent.ticks();
        let last = ticks.last().expect("ticks");
        if service(last, SVC).is_none() {
            break;
        }
        assert!(
            t0.elapsed() < T,
            "service still listed after its process exited"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Call graph across hosts: a service in the client namespace that calls the server namespace's
/// address is given a remote edge to that address:port, not an edge to a local service that
/// happens to listen on the same port; its call over loopback to that local service is a local
/// edge.
#[test]
fn remote_callees_are_told_from_local_ones_by_address() {
    require_root!();
    let net = NetPair::new();
    let _remote = server(&net, &["delay", "7010", "0"]);
    // The local twin on the same port, in the client namespace.
    let _twin = Proc::spawn(NetPair::cmd(
        &net.client,
        &testsrv_bin(),
        &["delay", "7010", "0"],
    ));
    let agent = Agent::start(&net.client, 200, &["--iface", "lo"]);
    agent.wait_service(SVC, T, |_| true);
    // The caller: a Python process that listens (so it is a service) and dials both.
    let mut caller = py_client(
        &net,
        &format!(
            "l=socket.socket(); l.bind(('127.0.0.1',7011)); l.listen()\n\
             r=socket.create_connection(('{SERVER_ADDR}',7010))\n\
             o=socket.create_connection(('127.0.0.1',7010))\n\
             print('dialled',flush=True)"
        ),
    );
    caller.wait_line("caller dialled", T, |l| l == "dialled");
    let t0 = std::time::Instant::now();
    let (edges, remote) = loop {
        let ticks = agent.ticks();
        let last = ticks.last().expect("ticks").clone();
        let remote = last["remote_edges"].as_array().cloned().unwrap_or_default();
        let edges = last["edges"].as_array().cloned().unwrap_or_default();
        if !remote.is_empty() && !edges.is_empty() {
            break (edges, remote);
        }
        assert!(t0.elapsed() < T, "no edges yet: {last}");
        thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        remote,
        vec![serde_json::json!([
            "python3",
            format!("{SERVER_ADDR}:7010")
        ])],
        "the remote callee by address"
    );
    assert_eq!(
        edges,
        vec![serde_json::json!(["python3", SVC])],
        "the loopback call is the local twin's"
    );
    // The kernel's connect map is drained as discovery reads it (before: it kept every
    // connect() ever seen, and once full the call graph stopped learning).
    let t0 = std::time::Instant::now();
    loop {
        let n = connects_in_kernel(agent.proc.pid());
        if n == 0 {
            break;
        }
        assert!(t0.elapsed() < T, "{n} connect(s) still in the kernel's map");
        thread::sleep(Duration::from_millis(200));
    }
    // The store keeps the remote edge; the training export lists it for the cluster join.
    let mut agent = agent;
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &agent.proc.pid().to_string()])
        .status();
    assert!(agent.wait_exit(T).success());
    let out = std::env::temp_dir().join(format!("seer-remote-export-{}", std::process::id()));
    let o = std::process::Command::new(agent_bin())
        .args(["export", "--from", "0", "--db"])
        .arg(&agent.db)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("export");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).expect("manifest"))
            .expect("json");
    let _ = std::fs::remove_dir_all(&out);
    let caller_id = m["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "python3"))
        .map(|s| s["id"].clone())
        .expect("caller in the manifest");
    assert_eq!(
        m["remote_edges"],
        serde_json::json!([{"from": caller_id, "to": format!("{SERVER_ADDR}:7010")}]),
        "{m}"
    );
    caller.send("");
}

/// Entries in the agent's `CONNECTS` map (hash, 24-byte ConnectKey -> u64, 16384 entries),
/// found through the agent's own descriptors and read with bpftool.
fn connects_in_kernel(pid: u32) -> usize {
    let mut id = None;
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).expect("fdinfo") {
        let Ok(t) = std::fs::read_to_string(fd.expect("fd").path()) else {
            continue;
        };
        let field = |k: &str| {
            t.lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_string())
        };
        if field("map_type:").as_deref() == Some("1")
            && field("key_size:").as_deref() == Some("24")
            && field("value_size:").as_deref() == Some("8")
            && field("max_entries:").as_deref() == Some("16384")
        {
            id = field("map_id:");
        }
    }
    let id = id.expect("the agent holds its CONNECTS map");
    let o = std::process::Command::new("bpftool")
        .args(["map", "dump", "id", &id, "-j"])
        .output()
        .expect("bpftool");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("bpftool json");
    v.as_array().map_or(0, Vec::len)
}
