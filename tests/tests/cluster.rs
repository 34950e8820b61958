//! Cluster mode (issue 18) against a real `nats-server -js` (Debian's, with user/password
//! auth) in throwaway network namespaces: agents publish their ticks, `seer-agent central`
//! assembles the cluster and predicts, a standby takes over from a killed leader, and an agent
//! cut off from NATS works alone and catches up. The predictions are read back on
//! `seer.predictions` by a subscriber of our own (the NATS text protocol over TCP), not through
//! the code under test.
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::PathBuf,
    process::Command,
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use seer_tests::*;

const T: Duration = Duration::from_secs(40);
const NATS_PORT: u16 = 14222;
const USER: &str = "seer";
const PASS: &str = "cluster-test-secret";
/// Alertmanager's API inside the test's namespace.
const AM_PORT: u16 = 19393;

fn kernel() {
    println!("kernel: {}", sh("uname -r").trim());
}

/// nats-server with JetStream in network namespace `ns`, listening on every address there,
/// user/password auth, its store in a folder of its own (removed on drop); one server on
/// NATS_PORT, or a cluster of several on the ports after it (routes on ROUTE_PORT and after).
struct Nats {
    ns: String,
    dir: PathBuf,
    procs: Vec<Option<Proc>>,
    /// nats-server's environment (the deployment example reads its passwords from it).
    env: Vec<(String, String)>,
}

const ROUTE_PORT: u16 = 16222;

impl Nats {
    fn start(ns: &str) -> Nats {
        Nats::start_n(ns, 1)
    }

    fn start_n(ns: &str, n: usize) -> Nats {
        Nats::start_with(ns, n, false)
    }

    /// One server with TLS only, its certificate (for 127.0.0.1) signed by a CA made here
    /// (`ca()`), which no client trusts unless told to.
    fn start_tls(ns: &str) -> Nats {
        Nats::start_with(ns, 1, true)
    }

    fn ca(&self) -> String {
        self.dir.join("ca.pem").display().to_string()
    }

    fn start_with(ns: &str, n: usize, tls: bool) -> Nats {
        let auth = format!(
            "authorization {{ users: [ {{ user: \"{USER}\", password: \"{PASS}\" }} ] }}\n"
        );
        Nats::start_auth(ns, n, tls, &auth, Vec::new())
    }

    /// `auth`: the configuration's users (an authorization block, or an include of one);
    /// `env`: nats-server's environment.
    fn start_auth(ns: &str, n: usize, tls: bool, auth: &str, env: Vec<(String, String)>) -> Nats {
        let found = Command::new("sh")
            .args(["-c", "command -v nats-server"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(
            found,
            "nats-server is not installed: run `cargo xtask setup` (it installs Debian's nats-server)"
        );
        let dir = std::env::temp_dir().join(format!("seer-nats-{ns}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("nats dir");
        let tls_conf = if tls {
            make_certs(&dir);
            format!(
                "tls {{ cert_file: \"{}\", key_file: \"{}\" }}\n",
                dir.join("srv.pem").display(),
                dir.join("srv.key").display()
            )
        } else {
            String::new()
        };
        let routes: Vec<String> = (0..n)
            .map(|i| format!("\"nats-route://127.0.0.1:{}\"", ROUTE_PORT + i as u16))
            .collect();
        for i in 0..n {
            let store = dir.join(format!("js{i}"));
            std::fs::create_dir_all(&store).expect("nats dir");
            let cluster = if n > 1 {
                format!(
                    "cluster {{ name: \"seer\", listen: \"127.0.0.1:{}\", routes: [{}] }}\n",
                    ROUTE_PORT + i as u16,
                    routes.join(", ")
                )
            } else {
                String::new()
            };
            std::fs::write(
                dir.join(format!("nats{i}.conf")),
                format!(
                    "listen: \"0.0.0.0:{}\"\nserver_name: \"n{i}\"\n\
                     jetstream {{ store_dir: \"{}\" }}\n{cluster}{tls_conf}{auth}",
                    NATS_PORT + i as u16,
                    store.display()
                ),
            )
            .expect("nats.conf");
        }
        let creds = dir.join("creds");
        std::fs::write(&creds, format!("{USER}:{PASS}\n")).expect("creds");
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let mut nats = Nats {
            ns: ns.into(),
            dir,
            procs: (0..n).map(|_| None).collect(),
            env,
        };
        for i in 0..n {
            nats.run(i);
        }
        if n > 1 {
            wait_until("a JetStream metadata leader", T, || {
                nats.procs.iter().flatten().any(|p| {
                    p.stderr().contains("JetStream cluster new metadata leader")
                        || p.stderr()
                            .contains("Self is new JetStream cluster metadata leader")
                })
            });
        }
        nats
    }

    /// Starts server `i` (again: its store is kept).
    fn run(&mut self, i: usize) {
        let conf = self.dir.join(format!("nats{i}.conf")).display().to_string();
        let mut c = NetPair::cmd(
            &self.ns,
            std::path::Path::new("nats-server"),
            &["-c", &conf],
        );
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        let p = Proc::spawn(c);
        p.wait_err("nats-server ready", T, |l| l.contains("Server is ready"));
        self.procs[i] = Some(p);
    }

    /// Kills server `i` (SIGKILL, as a crash); its store stays for `run`.
    fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.procs[i].take() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }

    fn creds(&self) -> String {
        self.dir.join("creds").display().to_string()
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        for i in 0..self.procs.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn url(addr: &str) -> String {
    format!("nats://{addr}:{NATS_PORT}")
}

/// A CA and a server certificate for 127.0.0.1 signed by it, in `dir` (openssl).
fn make_certs(dir: &std::path::Path) {
    let d = dir.display();
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").expect("san.ext");
    sh(&format!(
        "set -e; cd {d}; \
         openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=seer-test-ca -keyout ca.key -out ca.pem 2>/dev/null; \
         openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout srv.key -out srv.csr 2>/dev/null; \
         openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile san.ext -out srv.pem 2>/dev/null"
    ));
}

/// Agent flags for cluster mode as host `host`.
fn agent_args<'a>(url: &'a str, creds: &'a str, host: &'a str) -> Vec<&'a str> {
    vec![
        "--metrics-addr",
        "off",
        "--cluster",
        url,
        "--cluster-creds",
        creds,
        "--cluster-host",
        host,
    ]
}

/// `seer-agent central --json` in `ns`, with `extra` flags.
fn central(ns: &str, url: &str, creds: &str, name: &str, extra: &[&str]) -> Proc {
    let mut args = vec![
        "central",
        "--cluster",
        url,
        "--cluster-creds",
        creds,
        "--name",
        name,
        "--json",
    ];
    args.extend_from_slice(extra);
    let mut c = NetPair::cmd(ns, &agent_bin(), &args);
    c.env("RUST_LOG", "info");
    Proc::spawn(c)
}

fn central_ticks(p: &Proc) -> Vec<Value> {
    p.lines
        .lock()
        .expect("lock")
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Waits for a central tick that satisfies `f`; returns it.
fn wait_central(p: &Proc, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let t0 = Instant::now();
    loop {
        if let Some(t) = central_ticks(p).into_iter().rev().find(|t| f(t)) {
            return t;
        }
        assert!(
            t0.elapsed() < T,
            "timed out waiting for {what}; last central tick: {:?}\nstderr: {}",
            central_ticks(p).last(),
            p.stderr()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// The agent's newest `cluster` object (its JSON lines).
fn cluster_of(a: &Agent) -> Value {
    a.ticks()
        .last()
        .map(|t| t["cluster"].clone())
        .unwrap_or(Value::Null)
}

fn wait_agent(a: &Agent, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let t0 = Instant::now();
    loop {
        let c = cluster_of(a);
        if f(&c) {
            return c;
        }
        assert!(
            t0.elapsed() < T,
            "timed out waiting for {what}; agent's cluster state: {c}\nstderr: {}",
            a.proc.stderr()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Messages on `subject`, each with when it arrived: a subscriber speaking the NATS text
/// protocol itself, connected from inside `ns`.
fn subscribe(ns: &str, subject: &str) -> Arc<Mutex<Vec<(Instant, Value)>>> {
    subscribe_as(ns, subject, USER, PASS)
}

/// The same, signed in as `user`.
fn subscribe_as(
    ns: &str,
    subject: &str,
    user: &str,
    pass: &str,
) -> Arc<Mutex<Vec<(Instant, Value)>>> {
    let (user, pass) = (user.to_string(), pass.to_string());
    let got: Arc<Mutex<Vec<(Instant, Value)>>> = Arc::default();
    let sink = got.clone();
    let subject = subject.to_string();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{NATS_PORT}").parse().expect("addr");
    let stream = in_ns(ns, move || TcpStream::connect(addr))
        .join()
        .expect("connect thread")
        .expect("connect to nats-server");
    thread::spawn(move || {
        let mut w = stream.try_clone().expect("clone");
        let mut r = BufReader::new(stream);
        let mut line = String::new();
        let _ = r.read_line(&mut line); // INFO
        let _ = write!(
            w,
            "CONNECT {{\"verbose\":false,\"pedantic\":false,\"user\":\"{user}\",\"pass\":\"{pass}\"}}\r\nSUB {subject} 1\r\nPING\r\n"
        );
        loop {
            line.clear();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let l = line.trim_end();
            if l == "PING" {
                let _ = w.write_all(b"PONG\r\n");
            } else if let Some(rest) = l.strip_prefix("MSG ") {
                let len: usize = rest
                    .split_whitespace()
                    .last()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0u8; len + 2];
                if r.read_exact(&mut body).is_err() {
                    return;
                }
                if let Ok(v) = serde_json::from_slice(&body[..len]) {
                    sink.lock().expect("lock").push((Instant::now(), v));
                }
            } else if l.starts_with("-ERR") {
                panic!("nats-server refused the subscriber: {l}");
            }
        }
    });
    got
}

/// A host (the server namespace of a pair) running NATS and a service on `port`; the kernel
/// printed.
fn host_with_nats(port: &str) -> (NetPair, Nats, Proc) {
    host_with_nats_n(port, 1)
}

/// The same with a NATS cluster of `n` servers.
fn host_with_nats_n(port: &str, n: usize) -> (NetPair, Nats, Proc) {
    kernel();
    let net = NetPair::new();
    let nats = Nats::start_n(&net.server, n);
    let srv = Proc::spawn(NetPair::cmd(
        &net.server,
        &testsrv_bin(),
        &["delay", port, "0"],
    ));
    srv.wait_line("server ready", T, |l| l == "ready");
    (net, nats, srv)
}

/// Whether the cluster tick `t` has a service of `host` with a sample of its own (not a repeat).
fn fresh(t: &Value, host: &str) -> bool {
    t["services"]
        .as_array()
        .is_some_and(|s| s.iter().any(|s| s["host"] == host && s["stale"] == false))
}

/// Publishes `payload` on `subject` as any NATS client could (the text protocol, from inside
/// `ns`), and waits for the server's PONG: the message is in.
fn publish_raw(ns: &str, subject: &str, payload: &[u8]) {
    if let Err(e) = publish_as(ns, subject, payload, USER, PASS) {
        panic!("nats-server refused: {e}");
    }
}

/// The same, signed in as `user`; the server's refusal (`-ERR ...`) as an error.
fn publish_as(
    ns: &str,
    subject: &str,
    payload: &[u8],
    user: &str,
    pass: &str,
) -> Result<(), String> {
    let addr: std::net::SocketAddr = format!("127.0.0.1:{NATS_PORT}").parse().expect("addr");
    let stream = in_ns(ns, move || TcpStream::connect(addr))
        .join()
        .expect("connect thread")
        .expect("connect to nats-server");
    let mut w = stream.try_clone().expect("clone");
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line).expect("INFO");
    let mut msg = format!(
        "CONNECT {{\"verbose\":false,\"user\":\"{user}\",\"pass\":\"{pass}\"}}\r\nPUB {subject} {}\r\n",
        payload.len()
    )
    .into_bytes();
    msg.extend_from_slice(payload);
    msg.extend_from_slice(b"\r\nPING\r\n");
    // A server that refuses the CONNECT answers `-ERR` and closes at once: the write may then
    // meet a closed socket (EPIPE), and the answer is still there to read, so a failed write
    // is only the verdict when nothing was answered.
    let wrote = w.write_all(&msg);
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return Err(match wrote {
                Err(e) => format!("nats-server closed the connection ({e})"),
                Ok(()) => "nats-server closed the connection".into(),
            });
        }
        if line.starts_with("-ERR") {
            return Err(line.trim_end().to_string());
        }
        if line.starts_with("PONG") {
            return Ok(());
        }
    }
}

/// GET http://127.0.0.1:PORT/metrics inside `ns`.
fn metrics_in(ns: &str, port: u16) -> String {
    http_in(ns, port, "/metrics")
}

/// A central (c1, with `extra` flags, and the same ones for the agent when they name the CA)
/// and an agent publishing as h1, once the central assembles h1.
fn central_and_h1(ns: &str, url: &str, creds: &str, extra: &[&str]) -> (Proc, Agent) {
    let c = central(ns, url, creds, "c1", extra);
    let mut args = agent_args(url, creds, "h1");
    if let Some(i) = extra.iter().position(|a| *a == "--cluster-ca") {
        args.extend_from_slice(&extra[i..(i + 2).min(extra.len())]);
    }
    let agent = Agent::start(ns, 100_000, &args);
    wait_central(&c, "h1 at the central", |t| fresh(t, "h1"));
    (c, agent)
}

fn names(t: &Value) -> Vec<String> {
    t["services"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    format!(
                        "{}/{}",
                        s["host"].as_str().unwrap_or(""),
                        s["name"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Two hosts (network namespaces joined by veth), an agent on each: the central assembles one
/// tick with both hosts' services, the front host's call to the back host's address resolved
/// to the back host's service, back end first, and both hosts fresh in nearly every tick.
#[test]
fn two_hosts_make_one_cluster_tick_with_the_remote_call_resolved() {
    require_root!();
    kernel();
    let net = NetPair::new();
    let nats = Nats::start(&net.server);
    let creds = nats.creds();
    // The back end on the server host; the front end on the client host calls it there.
    let back = Proc::spawn(NetPair::cmd(
        &net.server,
        &testsrv_bin(),
        &["delay", "7020", "0"],
    ));
    back.wait_line("back end ready", T, |l| l == "ready");
    let back_url = url("127.0.0.1");
    let front_url = url(SERVER_ADDR);
    let a_back = Agent::start(&net.server, 100_000, &agent_args(&back_url, &creds, "back"));
    let a_front = Agent::start(
        &net.client,
        100_000,
        &agent_args(&front_url, &creds, "front"),
    );
    let preds = subscribe(&net.server, "seer.predictions");
    let c = central(
        &net.server,
        &back_url,
        &creds,
        "c1",
        &["--metrics-addr", "127.0.0.1:9470"],
    );
    // The call is seen as it is made (connect()): dial once the agents run.
    wait_until("both agents ticking", T, || {
        !a_back.ticks().is_empty() && !a_front.ticks().is_empty()
    });
    let mut front = Proc::spawn(NetPair::cmd(
        &net.client,
        std::path::Path::new("python3"),
        &[
            "-c",
            &format!(
                "import socket,sys\nl=socket.socket(); l.bind(('127.0.0.1',7021)); l.listen()\n\
                 r=socket.create_connection(('{SERVER_ADDR}',7020))\nprint('dialled',flush=True)\n\
                 sys.stdin.readline()"
            ),
        ],
    ));
    front.wait_line("front end dialled", T, |l| l == "dialled");
    // The front host's agent sees the call as one to another host's address.
    let t0 = Instant::now();
    while !a_front.ticks().last().is_some_and(|t| {
        t["remote_edges"].as_array().is_some_and(|r| {
            r.contains(&serde_json::json!([
                "python3",
                format!("{SERVER_ADDR}:7020")
            ]))
        })
    }) {
        assert!(
            t0.elapsed() < T,
            "the front agent saw no remote edge: {:?}",
            a_front.ticks().last()
        );
        thread::sleep(Duration::from_millis(100));
    }
    let edge = serde_json::json!(["front/python3", "back/seer-testsrv"]);
    let first = wait_central(
        &c,
        "one tick with both hosts and the cross-host edge",
        |t| t["hosts"] == 2 && t["edges"].as_array().is_some_and(|e| e.contains(&edge)),
    );
    let order = names(&first);
    let (b, f) = (
        order.iter().position(|n| n == "back/seer-testsrv"),
        order.iter().position(|n| n == "front/python3"),
    );
    assert!(b.is_some() && f.is_some(), "both services: {order:?}");
    assert!(b < f, "back end first across hosts: {order:?}");
    assert_eq!(first["unresolved_remote_edges"], 0, "{first}");
    // The next 30 ticks: both hosts in every one, fresh (not repeated) in nearly all.
    let slot0 = first["slot"].as_u64().expect("slot");
    wait_central(&c, "30 more ticks", |t| {
        t["slot"].as_u64().is_some_and(|s| s >= slot0 + 30)
    });
    let next: Vec<Value> = central_ticks(&c)
        .into_iter()
        .filter(|t| (slot0 + 1..=slot0 + 30).contains(&t["slot"].as_u64().unwrap_or(0)))
        .collect();
    assert_eq!(next.len(), 30, "one tick per slot, none skipped");
    for host in ["back", "front"] {
        let fresh_in = next.iter().filter(|t| fresh(t, host)).count();
        let present = next
            .iter()
            .filter(|t| {
                t["services"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|s| s["host"] == host))
            })
            .count();
        println!("{host}: fresh in {fresh_in} of 30 ticks");
        assert_eq!(present, 30, "{host} in every tick");
        assert!(fresh_in >= 24, "{host} fresh in {fresh_in} of 30 ticks");
    }
    // A tick both hosts sent is assembled at once, not after the 200 ms lag.
    let mut after: Vec<i64> = next
        .iter()
        .filter_map(|t| t["assembled_after_slot_ms"].as_i64())
        .collect();
    after.sort_unstable();
    let median = after.get(after.len() / 2).copied().unwrap_or(i64::MAX);
    println!("assembled after the slot's end, ms: median {median}, all {after:?}");
    assert!(median < 200, "median {median} ms: {after:?}");
    // Each tick's probabilities are on seer.predictions right after its inference, not a tick
    // later: from the tick's assembly to the publication, and from the end of its slot (this
    // one depends on when in the slot the hosts sample; the issue's target for 100 hosts,
    // tick to alarm: 50 ms).
    let got: Vec<Value> = preds
        .lock()
        .expect("lock")
        .iter()
        .map(|(_, v)| v.clone())
        .collect();
    let mut after_asm: Vec<f64> = got
        .iter()
        .filter_map(|v| v["published_after_assembly_ms"].as_f64())
        .collect();
    after_asm.sort_by(f64::total_cmp);
    let mut lat: Vec<i64> = preds
        .lock()
        .expect("lock")
        .iter()
        .filter_map(|(at, v)| {
            let arrived = now_ms() as i64 - at.elapsed().as_millis() as i64;
            Some(arrived - (v["ts_ms"].as_i64()? + 100))
        })
        .collect();
    lat.sort_unstable();
    let median = after_asm
        .get(after_asm.len() / 2)
        .copied()
        .unwrap_or(f64::MAX);
    println!(
        "predictions: {} published, {} of them the newest tick's; after assembly median {median:.1} ms, max {:?}; after the slot's end median {} ms",
        got.len(),
        after_asm.len(),
        after_asm.last(),
        lat.get(lat.len() / 2).copied().unwrap_or(i64::MAX)
    );
    assert!(after_asm.len() >= 20, "{got:?}");
    assert!(
        median < 50.0,
        "median {median} ms after assembly: {after_asm:?}"
    );
    assert!(
        next.iter()
            .all(|t| t["role"] == "leader" && t["term"].as_u64().is_some()),
        "the only central leads"
    );
    for a in [&a_back, &a_front] {
        let st = cluster_of(a);
        assert_eq!(st["connected"], true, "{st}");
        assert_eq!(st["dropped"], 0, "{st}");
    }
    // The central's own /metrics.
    let body = metrics_in(&net.server, 9470);
    for want in [
        "seer_central_leader 1\n",
        "seer_central_hosts 2\n",
        "seer_central_hosts_in_tick 2\n",
        "seer_central_unresolved_remote_edges 0\n",
        "seer_central_probability{host=\"back\",service=\"seer-testsrv\"}",
    ] {
        assert!(body.contains(want), "{want:?} in {body}");
    }
    promtool_check(&body);
    // The live view of the whole cluster on the same listener: both hosts' services in one
    // graph, the cross-host call an edge, the front end above the back end.
    let snap: Value = serde_json::from_str(&http_in(&net.server, 9470, "/api/ui/snapshot"))
        .expect("the central's /api/ui/snapshot is JSON");
    println!("central's live view: {}", snap["source"]);
    let depth = |n: &str| {
        snap["services"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == n))
            .and_then(|s| s["depth"].as_u64())
    };
    assert!(
        depth("front/python3").is_some() && depth("front/python3") < depth("back/seer-testsrv"),
        "front end above the back end: {snap}"
    );
    assert!(
        snap["edges"].as_array().is_some_and(|e| e.contains(&edge)),
        "the cross-host call in the page's graph: {snap}"
    );
    assert!(
        snap["source"]
            .as_str()
            .is_some_and(|s| s.starts_with("central c1 (leader)")),
        "{snap}"
    );
    let page = http_in(&net.server, 9470, "/ui");
    assert!(
        page.contains("id=\"history\""),
        "the page comes with its history: {page}"
    );
    front.send("");
}

/// A leader and a standby: the standby's window is warm before it leads; kill -9 the leader and
/// the standby publishes predictions within a few seconds, under a newer term. A central given
/// other stream settings stops and says what differs; SIGTERM stops the leader cleanly.
#[test]
fn a_standby_takes_over_when_the_leader_is_killed() {
    require_root!();
    let (net, nats, _srv) = host_with_nats("7030");
    let creds = nats.creds();
    let u = url("127.0.0.1");
    let _agent = Agent::start(&net.server, 100_000, &agent_args(&u, &creds, "h1"));
    let preds = subscribe(&net.server, "seer.predictions");
    let mut c1 = central(&net.server, &u, &creds, "c1", &[]);
    wait_central(&c1, "c1 leading", |t| t["role"] == "leader");
    let c2 = central(&net.server, &u, &creds, "c2", &[]);
    let warm = wait_central(&c2, "c2 standing by with the cluster's services", |t| {
        t["role"] == "standby" && t["leader"] == "c1" && !names(t).is_empty()
    });
    println!("standby sees {:?}", names(&warm));
    let from = |who: &str| {
        preds
            .lock()
            .expect("lock")
            .iter()
            .filter(|(_, v)| v["leader"] == who)
            .cloned()
            .collect::<Vec<_>>()
    };
    wait_until("predictions from c1", T, || from("c1").len() >= 5);
    assert!(from("c2").is_empty(), "a standby publishes nothing");
    let _ = c1.child.kill();
    let _ = c1.child.wait();
    let killed = Instant::now();
    wait_until("predictions from c2", T, || from("c2").len() >= 10);
    let (c1s, c2s) = (from("c1"), from("c2"));
    let (last1, first2) = (c1s.last().expect("c1"), c2s.first().expect("c2"));
    let gap = first2.0.duration_since(last1.0);
    println!(
        "takeover: {:.2} s from the leader's last prediction to the standby's first ({:.2} s after kill -9)",
        gap.as_secs_f64(),
        first2.0.duration_since(killed).as_secs_f64()
    );
    assert!(gap < Duration::from_secs(5), "takeover took {gap:?}");
    let (t1, t2) = (last1.1["term"].as_u64(), first2.1["term"].as_u64());
    assert!(t2 > t1, "a newer term: {t1:?} -> {t2:?}");
    // The new leader predicts from its first tick, for the cluster's services, and goes on.
    assert!(
        first2.1["services"]
            .as_array()
            .is_some_and(|s| !s.is_empty() && s.iter().all(|s| s["p"].is_number())),
        "{}",
        first2.1
    );
    let ts: Vec<u64> = c2s
        .iter()
        .filter_map(|(_, v)| v["ts_ms"].as_u64())
        .collect();
    assert!(
        ts.windows(2).all(|w| w[0] < w[1]),
        "one prediction per tick, in order: {ts:?}"
    );
    // A central given other stream settings stops at once and says what differs.
    let mut c3 = central(&net.server, &u, &creds, "c3", &["--retention-s", "60"]);
    let st = c3.wait_exit(T);
    assert!(!st.success(), "c3 ran with a stream it does not fit");
    let err = c3.stderr();
    assert!(
        err.contains("exists with other settings") && err.contains("max age 300s"),
        "{err}"
    );
    // SIGTERM: the leader gives the lease up and exits cleanly.
    let mut c2 = c2;
    let _ = Command::new("kill")
        .args(["-TERM", &c2.pid().to_string()])
        .status();
    let st = c2.wait_exit(T);
    assert!(st.success(), "{st:?}: {}", c2.stderr());
    assert!(
        c2.stderr().contains("released the lease (term "),
        "{}",
        c2.stderr()
    );
}

/// NATS gone: the agent keeps ticking and recording, its backlog fills and the oldest ticks
/// are dropped (counted); NATS back (same store): it catches up and the central sees the host
/// again.
#[test]
fn an_agent_cut_off_from_nats_works_alone_and_catches_up() {
    require_root!();
    let (net, mut nats, _srv) = host_with_nats("7040");
    let creds = nats.creds();
    let u = url("127.0.0.1");
    let c = central(&net.server, &u, &creds, "c1", &[]);
    c.wait_err("the central leading", T, |l| l.contains("leading"));
    let mut args = agent_args(&u, &creds, "h1");
    args.extend(["--cluster-backlog", "20"]);
    let mut agent = Agent::start(&net.server, 100_000, &args);
    wait_agent(&agent, "publishing", |c| {
        c["connected"] == true && c["published"].as_u64().is_some_and(|n| n >= 10)
    });
    wait_central(&c, "h1 in the cluster", |t| fresh(t, "h1"));
    nats.kill(0);
    let down = Instant::now();
    let ticks_at_kill = agent.ticks().len();
    let alone = wait_agent(&agent, "working alone with a full backlog", |c| {
        c["connected"] == false
            && c["backlog"] == 20
            && c["dropped"].as_u64().is_some_and(|n| n >= 10)
    });
    let published_down = alone["published"].as_u64().expect("published");
    let ticked = agent.ticks().len() - ticks_at_kill;
    println!(
        "NATS down {:.1} s: {ticked} ticks, {alone}",
        down.elapsed().as_secs_f64()
    );
    assert!(ticked >= 20, "the agent kept ticking: {ticked} ticks");
    // doctor says the same.
    let d = doctor_cluster(&net.server, &u, &creds);
    assert_eq!(d["ok"], false, "{d}");
    assert!(d["error"].as_str().is_some_and(|e| !e.is_empty()), "{d}");
    nats.run(0);
    let d = doctor_cluster(&net.server, &u, &creds);
    assert_eq!(d["ok"], true, "{d}");
    assert_eq!(d["stream"]["present"], true, "{d}");
    let back = wait_agent(&agent, "caught up", |c| {
        c["connected"] == true
            && c["backlog"] == 0
            && c["published"]
                .as_u64()
                .is_some_and(|n| n >= published_down + 20)
    });
    println!("after NATS came back: {back}");
    assert!(back["last_error"].is_null(), "{back}");
    let reconnected = Instant::now();
    wait_central(&c, "h1 fresh again at the central", |t| {
        t["ts_ms"]
            .as_u64()
            .is_some_and(|ts| ts > now_ms() - reconnected.elapsed().as_millis() as u64)
            && fresh(t, "h1")
    });
    // Clean stop on SIGTERM, and the store kept recording while NATS was down.
    let _ = Command::new("kill")
        .args(["-TERM", &agent.proc.pid().to_string()])
        .status();
    assert!(agent.wait_exit(T).success(), "{}", agent.proc.stderr());
    assert!(
        agent.proc.stderr().contains("ticks published"),
        "{}",
        agent.proc.stderr()
    );
    let out = Command::new(agent_bin())
        .args(["query", "--json", "--db"])
        .arg(&agent.db)
        .args(["service", "seer-testsrv", "-n", "100000"])
        .output()
        .expect("query");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    let down_ms = now_ms() - down.elapsed().as_millis() as u64;
    let up_ms = now_ms() - reconnected.elapsed().as_millis() as u64;
    let stored = v["ticks"]
        .as_array()
        .expect("ticks")
        .iter()
        .filter(|t| {
            t["ts_ms"]
                .as_u64()
                .is_some_and(|ts| (down_ms..up_ms).contains(&ts))
        })
        .count();
    println!("{stored} ticks stored while NATS was down");
    assert!(stored >= 20, "{stored} ticks stored while NATS was down");
}

/// The leader's alarm reaches the culprit's host: its agent answers it as an alarm of its own
/// model (off here, so that nothing else can start a response), diagnoses the service and
/// sends its diagnosis and decision back on seer.events.<host>; the leader alerts a real
/// Alertmanager with them. The
/// central runs the test fixture's model with its card's threshold at 1e-6: every service alarms.
#[test]
fn the_leaders_alarm_makes_the_culprits_host_diagnose() {
    require_root!();
    let (net, nats, _srv) = host_with_nats("7050");
    let creds = nats.creds();
    let u = url("127.0.0.1");
    let agent = responding_agent(&net.server, &u, &creds);
    let model = alarming_model(&nats.dir);
    // A real Alertmanager the leader alerts once the host answered.
    let am_bin = std::path::Path::new("/usr/bin/prometheus-alertmanager");
    assert!(
        am_bin.exists(),
        "prometheus-alertmanager is missing: run `cargo xtask setup`"
    );
    let am_dir = nats.dir.join("am");
    std::fs::create_dir_all(&am_dir).expect("am dir");
    std::fs::write(
        am_dir.join("am.yml"),
        "route:\n  receiver: 'null'\nreceivers:\n  - name: 'null'\n",
    )
    .expect("am config");
    let _am = Proc::spawn(NetPair::cmd(
        &net.server,
        am_bin,
        &[
            &format!("--config.file={}", am_dir.join("am.yml").display()),
            &format!("--storage.path={}", am_dir.join("data").display()),
            &format!("--web.listen-address=127.0.0.1:{AM_PORT}"),
            "--cluster.listen-address=",
        ],
    ));
    let db_dir = nats.dir.join("central");
    std::fs::create_dir_all(&db_dir).expect("db dir");
    let db = db_dir.join("central.redb").display().to_string();
    let am_url = format!("http://127.0.0.1:{AM_PORT}");
    let c = central(
        &net.server,
        &u,
        &creds,
        "c1",
        &["--model", &model, "--alertmanager", &am_url, "--db", &db],
    );
    let t = wait_central(&c, "an alarm on one of h1's services", |t| {
        t["alarms"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a["host"] == "h1"))
    });
    println!("central alarms: {}", t["alarms"]);
    let asked = agent
        .proc
        .wait_err("the agent taking the central's request", T, |l| {
            l.contains("predicted by the cluster (c1 term ")
        });
    println!("agent: {asked}");
    let named: Vec<String> = t["alarms"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|a| a["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        named
            .iter()
            .any(|n| asked.contains(&format!(": {n} will initiate"))),
        "the agent answers for a service the central alarmed on: {named:?} / {asked}"
    );
    let diag = agent
        .proc
        .wait_err("the agent's diagnosis", T, |l| l.contains("diagnosis of "));
    println!("agent: {diag}");
    // Its answer reaches the central on seer.events.h1: the diagnosis and the decision.
    let t = wait_central(&c, "the host's answer", |t| {
        t["answers"].as_array().is_some_and(|a| !a.is_empty())
    });
    let a = &t["answers"][0];
    println!("answer: {a}");
    assert_eq!(a["host"], "h1", "{a}");
    let ans = &a["answer"];
    assert!(
        ans["asked_by"]
            .as_str()
            .is_some_and(|s| s.starts_with("c1 term ")),
        "{a}"
    );
    assert!(named.iter().any(|n| ans["service"] == n.as_str()), "{a}");
    assert_eq!(ans["mode"], "dry-run", "{a}");
    assert!(
        ans["resource"].is_string() && ans["actions"].is_object(),
        "{a}"
    );
    // The leader's alert reaches Alertmanager: the culprit as host/service, who predicted it.
    let mut alerts = Value::Null;
    wait_until("the alert in Alertmanager", T, || {
        let body = sh(&format!(
            "ip netns exec {} sh -c 'curl -s --max-time 2 http://127.0.0.1:{AM_PORT}/api/v2/alerts || true'",
            net.server
        ));
        alerts = serde_json::from_str(&body).unwrap_or(Value::Null);
        alerts.as_array().is_some_and(|a| !a.is_empty())
    });
    let al = &alerts[0];
    println!("alert: {al}");
    assert_eq!(
        al["labels"]["service"],
        format!("h1/{}", ans["service"].as_str().unwrap_or("")),
        "{al}"
    );
    assert_eq!(al["labels"]["origin"], "predicted", "{al}");
    assert!(
        al["annotations"]["qos"]
            .as_str()
            .is_some_and(|q| q.contains("central c1 (term ")),
        "{al}"
    );
}

/// Alarms are not sent twice when the leader changes: the standby runs the same alarm policy
/// over the same results, so after kill -9 of the leader it knows which alarms already fired
/// (and are cooling down) and does not ask the host again.
#[test]
fn a_new_leader_does_not_send_an_alarm_twice() {
    require_root!();
    let (net, nats, _srv) = host_with_nats("7080");
    let creds = nats.creds();
    let u = url("127.0.0.1");
    let _agent = Agent::start(&net.server, 100_000, &agent_args(&u, &creds, "h1"));
    let reqs = subscribe(&net.server, "seer.respond.h1");
    let model = alarming_model(&nats.dir);
    let mut c1 = central(
        &net.server,
        &u,
        &creds,
        "c1",
        &["--model", &model, "--metrics-addr", "off"],
    );
    wait_central(&c1, "c1 leading", |t| t["role"] == "leader");
    let c2 = central(
        &net.server,
        &u,
        &creds,
        "c2",
        &["--model", &model, "--metrics-addr", "off"],
    );
    let asked = |who: &str| {
        reqs.lock()
            .expect("lock")
            .iter()
            .filter(|(_, v)| {
                v["service"] == "seer-testsrv" && (who.is_empty() || v["leader"] == who)
            })
            .count()
    };
    wait_until("c1 asking about seer-testsrv", T, || asked("c1") == 1);
    wait_central(&c2, "the standby's own alarm on seer-testsrv", |t| {
        t["role"] == "standby"
            && t["alarms"]
                .as_array()
                .is_some_and(|a| a.iter().any(|a| a["name"] == "seer-testsrv"))
    });
    let _ = c1.child.kill();
    let _ = c1.child.wait();
    let led = wait_central(&c2, "c2 leading", |t| t["role"] == "leader");
    let slot = led["slot"].as_u64().unwrap_or(0);
    // 3 s of c2 leading, while seer-testsrv's probability stays over the threshold.
    wait_central(&c2, "3 s of c2 leading", |t| {
        t["role"] == "leader" && t["slot"].as_u64().is_some_and(|s| s >= slot + 30)
    });
    let all: Vec<Value> = reqs
        .lock()
        .expect("lock")
        .iter()
        .map(|(_, v)| v.clone())
        .collect();
    println!("requests on seer.respond.h1: {all:?}");
    assert_eq!(asked(""), 1, "seer-testsrv asked about once: {all:?}");
}

/// The test fixture's model (models/fixtures/parity) with its card's threshold at 1e-6, in a
/// folder of its own under `dir` (the agent loads models only from folders others cannot
/// write).
/// An agent publishing as h1 that answers the central's requests (the QoS of the test
/// server's service watched, its own model off, dry-run actions).
fn responding_agent(ns: &str, url: &str, creds: &str) -> Agent {
    let mut args = agent_args(url, creds, "h1");
    args.extend([
        "--no-predict",
        "--qos",
        "seer-testsrv:1000",
        "--mode",
        "dry-run",
    ]);
    Agent::start(ns, 100_000, &args)
}

fn alarming_model(dir: &std::path::Path) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/fixtures/parity");
    let d = dir.join("model");
    std::fs::create_dir_all(&d).expect("model dir");
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::copy(fixture.join("model.onnx"), d.join("m.onnx")).expect("copy model");
    let mut card: Value =
        serde_json::from_slice(&std::fs::read(fixture.join("model.json")).expect("card"))
            .expect("card json");
    card["threshold"] = serde_json::json!(1e-6);
    std::fs::write(d.join("m.json"), card.to_string()).expect("write card");
    for f in ["m.onnx", "m.json"] {
        std::fs::set_permissions(d.join(f), std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    d.join("m.onnx").display().to_string()
}

/// A 3-server NATS cluster: the central makes the stream with 3 replicas by itself; the server
/// the agent and the central were given is killed, they go on through the others, and nothing
/// is lost: the stream holds exactly the ticks the agent had acknowledged, none dropped.
#[test]
fn a_nats_server_lost_of_three_loses_no_tick() {
    require_root!();
    let (net, mut nats, _srv) = host_with_nats_n("7060", 3);
    let creds = nats.creds();
    // Only the first server: the clients learn the others from it.
    let u = url("127.0.0.1");
    let c = central(&net.server, &u, &creds, "c1", &["--metrics-addr", "off"]);
    c.wait_err("the stream made with 3 replicas", T, |l| {
        l.contains("3 replica(s)")
    });
    let mut agent = Agent::start(&net.server, 100_000, &agent_args(&u, &creds, "h1"));
    let before = wait_agent(&agent, "publishing", |c| {
        c["connected"] == true && c["published"].as_u64().is_some_and(|n| n >= 20)
    });
    wait_central(&c, "h1 at the central", |t| fresh(t, "h1"));
    nats.kill(0);
    let killed_ms = now_ms();
    let n0 = before["published"].as_u64().unwrap_or(0);
    let after = wait_agent(&agent, "publishing through another server", |c| {
        c["connected"] == true && c["published"].as_u64().is_some_and(|n| n >= n0 + 30)
    });
    println!("before: {before}\nafter the kill: {after}");
    wait_central(&c, "h1 fresh at the central after the kill", |t| {
        t["ts_ms"].as_u64().is_some_and(|ts| ts > killed_ms + 1000) && fresh(t, "h1")
    });
    wait_agent(&agent, "an empty backlog", |c| c["backlog"] == 0);
    let _ = Command::new("kill")
        .args(["-TERM", &agent.proc.pid().to_string()])
        .status();
    assert!(agent.wait_exit(T).success(), "{}", agent.proc.stderr());
    let log = agent.proc.stderr();
    let line = log
        .lines()
        .find(|l| l.contains("ticks published"))
        .unwrap_or_else(|| panic!("no final count: {log}"));
    let nums: Vec<u64> = line
        .split(|ch: char| !ch.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .take(3)
        .collect();
    // "... N ticks published, D dropped, B left unsent" (read from the end).
    let (unsent, dropped, published) = (nums[0], nums[1], nums[2]);
    println!("{line}");
    assert_eq!((dropped, unsent), (0, 0), "{line}");
    let d = doctor_cluster(
        &net.server,
        &format!("nats://127.0.0.1:{}", NATS_PORT + 1),
        &creds,
    );
    assert_eq!(d["stream"]["replicas"], 3, "{d}");
    assert_eq!(
        d["stream"]["messages"].as_u64(),
        Some(published),
        "the stream holds every acknowledged tick once: {d}"
    );
}

/// Hostile samples (bytes that are no message, a future schema version), published by any
/// client allowed on seer.samples.>: counted by reason in the central's /metrics, each reason
/// logged once, and the central goes on assembling the real host.
#[test]
fn hostile_samples_are_counted_and_never_stop_the_central() {
    require_root!();
    let (net, nats, _srv) = host_with_nats("7070");
    let creds = nats.creds();
    let u = url("127.0.0.1");
    let (c, _agent) = central_and_h1(
        &net.server,
        &u,
        &creds,
        &["--metrics-addr", "127.0.0.1:9471"],
    );
    for _ in 0..3 {
        publish_raw(&net.server, "seer.samples.evil", b"\x00garbage\xff");
        publish_raw(
            &net.server,
            "seer.samples.future",
            b"SR\x09 from a newer agent",
        );
    }
    let sent_ms = now_ms();
    let metrics = || metrics_in(&net.server, 9471);
    wait_until("the refusals counted", T, || {
        let m = metrics();
        m.contains("seer_central_refused_messages_total{reason=\"decode\"} 3")
            && m.contains("seer_central_refused_messages_total{reason=\"version\"} 3")
    });
    let logged = c
        .stderr()
        .lines()
        .filter(|l| l.contains("refused a message"))
        .count();
    assert_eq!(logged, 2, "each reason logged once: {}", c.stderr());
    assert!(c.stderr().contains("schema version 9"), "{}", c.stderr());
    wait_central(&c, "h1 still assembled after the garbage", |t| {
        t["ts_ms"].as_u64().is_some_and(|ts| ts > sent_ms) && fresh(t, "h1") && t["hosts"] == 1
    });
}

/// TLS to NATS with a CA of our own: with --cluster-ca the agent and the central speak TLS and
/// the central assembles the host; without it the server's certificate is refused (doctor says
/// so, and an agent publishes nothing).
#[test]
fn tls_to_nats_with_a_private_ca() {
    require_root!();
    kernel();
    let net = NetPair::new();
    let nats = Nats::start_tls(&net.server);
    let (creds, ca) = (nats.creds(), nats.ca());
    let u = format!("tls://127.0.0.1:{NATS_PORT}");
    // h1 over TLS.
    let (c, _a1) = central_and_h1(
        &net.server,
        &u,
        &creds,
        &["--cluster-ca", &ca, "--metrics-addr", "off"],
    );
    let a2 = Agent::start(&net.server, 100_000, &agent_args(&u, &creds, "h2"));
    let with_ca = doctor_cluster_with(&net.server, &u, &creds, &["--cluster-ca", &ca]);
    assert_eq!(with_ca["ok"], true, "{with_ca}");
    let without = doctor_cluster_with(&net.server, &u, &creds, &[]);
    assert_eq!(without["ok"], false, "{without}");
    println!("doctor without the CA: {}", without["error"]);
    thread::sleep(Duration::from_secs(3));
    let st = cluster_of(&a2);
    assert_eq!(st["connected"], false, "{st}");
    assert_eq!(st["published"], 0, "{st}");
    assert!(
        central_ticks(&c).iter().all(|t| !fresh(t, "h2")),
        "the central never heard h2"
    );
}

/// nkey authentication: nats-server knows only a user's public key; the agent and the central
/// hold its seed (--cluster-creds with the seed alone) and sign the server's nonce with it.
#[test]
fn nkey_credentials_sign_in() {
    require_root!();
    let (net, nats, _srv) = host_with_nats("7090");
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().expect("seed");
    // The same server, its users replaced by this one nkey.
    let conf = nats.dir.join("nats0.conf");
    let text = std::fs::read_to_string(&conf).expect("conf");
    let start = text.find("authorization").expect("authorization block");
    std::fs::write(
        &conf,
        format!(
            "{}authorization {{ users: [ {{ nkey: \"{}\" }} ] }}\n",
            &text[..start],
            user.public_key()
        ),
    )
    .expect("conf");
    let mut nats = nats;
    nats.kill(0);
    nats.run(0);
    let seed_file = nats.dir.join("seed");
    std::fs::write(&seed_file, format!("{seed}\n")).expect("seed");
    let seed_file = seed_file.display().to_string();
    let u = url("127.0.0.1");
    // h1 signs in with its nkey.
    let (_c, _agent) = central_and_h1(&net.server, &u, &seed_file, &["--metrics-addr", "off"]);
    // The user/password of the other tests no longer opens this server.
    let refused = doctor_cluster(&net.server, &u, &nats.creds());
    assert_eq!(refused["ok"], false, "{refused}");
    println!("user/password now: {}", refused["error"]);
}

/// `seer-agent doctor --cluster URL --json` in `ns`: its `cluster` object.
fn doctor_cluster(ns: &str, url: &str, creds: &str) -> Value {
    doctor_cluster_with(ns, url, creds, &[])
}

fn doctor_cluster_with(ns: &str, url: &str, creds: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        "doctor",
        "--json",
        "--cluster",
        url,
        "--cluster-creds",
        creds,
    ];
    args.extend_from_slice(extra);
    let out = NetPair::cmd(ns, &agent_bin(), &args)
        .output()
        .expect("doctor");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor's JSON: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    v["cluster"].clone()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

/// The deployment example (`deploy/cluster/`) is the one a real agent and central work with:
/// the node's configuration passes `nats-server -t`; a server with the example's users (its
/// `nats-auth.conf` included as shipped, the passwords from the environment) refuses anonymous
/// clients, lets the agent publish, answer and run `doctor`, lets the central make the stream,
/// hold the lease, publish predictions and ask the host, and refuses an agent that publishes
/// predictions; the central's systemd unit verifies with an exposure of at most 2.0.
#[test]
fn the_deployment_example_signs_in_and_confines_the_agents() {
    require_root!();
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/cluster");
    let (apw, cpw) = ("agent-example-secret", "central-example-secret");
    let env = vec![
        ("SEER_AGENT_PASSWORD".to_string(), apw.to_string()),
        ("SEER_CENTRAL_PASSWORD".to_string(), cpw.to_string()),
    ];
    let t = Command::new("nats-server")
        .args(["-t", "-c"])
        .arg(deploy.join("nats-node.conf"))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("nats-server -t");
    assert!(
        t.status.success(),
        "nats-node.conf: {}{}",
        String::from_utf8_lossy(&t.stdout),
        String::from_utf8_lossy(&t.stderr)
    );
    let level = unit_exposure(&deploy.join("seer-central.service"));
    println!("seer-central.service: systemd-analyze security exposure {level}");
    assert!(level <= 2.0, "exposure {level} > 2.0");

    kernel();
    let net = NetPair::new();
    // As shipped (an include is relative to the including file: the text itself goes in).
    let auth = std::fs::read_to_string(deploy.join("nats-auth.conf")).expect("nats-auth.conf");
    let nats = Nats::start_auth(&net.server, 1, false, &auth, env);
    let srv = Proc::spawn(NetPair::cmd(
        &net.server,
        &testsrv_bin(),
        &["delay", "7060", "0"],
    ));
    srv.wait_line("server ready", T, |l| l == "ready");
    use std::os::unix::fs::PermissionsExt as _;
    let creds = |name: &str, line: String| {
        let p = nats.dir.join(name);
        std::fs::write(&p, line).expect("creds");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        p.display().to_string()
    };
    let agent_creds = creds("agent.creds", format!("seer-agent:{apw}\n"));
    let central_creds = creds("central.creds", format!("seer-central:{cpw}\n"));
    let u = url("127.0.0.1");

    let anon = publish_as(&net.server, "seer.samples.h1", b"x", "", "");
    println!("anonymous: {anon:?}");
    assert!(
        anon.as_ref()
            .is_err_and(|e| e.contains("Authorization Violation")),
        "an anonymous client must be refused: {anon:?}"
    );
    let preds = subscribe_as(&net.server, "seer.predictions", "seer-central", cpw);
    let model = alarming_model(&nats.dir);
    let c = central(
        &net.server,
        &u,
        &central_creds,
        "c1",
        &["--model", &model, "--metrics-addr", "off"],
    );
    let agent = responding_agent(&net.server, &u, &agent_creds);
    wait_central(&c, "h1's samples at the central", |t| fresh(t, "h1"));
    // The leader's request reaches the host, and the host's answer the central.
    let t = wait_central(&c, "h1's answer to the leader's request", |t| {
        t["answers"].as_array().is_some_and(|a| !a.is_empty())
    });
    println!("answer: {}", t["answers"][0]);
    assert_eq!(t["answers"][0]["host"], "h1");
    wait_until("a prediction on seer.predictions", T, || {
        !preds.lock().expect("lock").is_empty()
    });
    let doc = doctor_cluster(&net.server, &u, &agent_creds);
    println!("doctor as the agent: {doc}");
    assert_eq!(doc["ok"], true, "{doc}");
    assert_eq!(doc["stream"]["present"], true, "{doc}");
    let forged = publish_as(&net.server, "seer.predictions", b"{}", "seer-agent", apw);
    println!("an agent publishing a prediction: {forged:?}");
    assert!(
        forged
            .as_ref()
            .is_err_and(|e| e.contains("Permissions Violation")),
        "the agent's user must not publish predictions: {forged:?}"
    );
    assert!(
        !agent.proc.stderr().contains("Permissions Violation")
            && !c.stderr().contains("Permissions Violation"),
        "agent or central hit a permission they need:\nagent: {}\ncentral: {}",
        agent.proc.stderr(),
        c.stderr()
    );
}
