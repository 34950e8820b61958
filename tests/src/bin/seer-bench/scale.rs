//! `seer-bench scale` (run by `cargo xtask bench scale`): the agent's CPU as services and
//! sockets grow. For each (services S, sockets K): S listening processes in a fresh network
//! namespace (each one service), K/2 loopback connections spread over them (K sockets: both
//! ends), and the agent in its default configuration (store, model, per-tick walk) at 100 ms
//! ticks; its CPU (user + system, which includes the eBPF iterators it runs) over a window
//! after discovery has settled. Last line: `scale: s36_k10000_cpu_pct=.. s1000_k100000_cpu_pct=..`.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use seer_tests::{Agent, NetPair, in_ns};

#[derive(clap::Args)]
pub struct ScaleArgs {
    /// Services (listening processes), comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [10usize, 36, 100, 1000])]
    services: Vec<usize>,
    /// Sockets (both ends of K/2 loopback connections), comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1000usize, 10_000, 100_000])]
    sockets: Vec<usize>,
    /// Seconds the agent's CPU is measured, after a settling time.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Write the figures here as JSON (for the plot).
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

const BASE_PORT: u16 = 20_000;

/// Connections one dialer process holds: under the open-files hard limit, which root cannot
/// raise on a host that withholds CAP_SYS_RESOURCE (this VM: 20000).
const PER_DIALER: usize = 15_000;

/// Raises this process's open-files soft limit to its hard limit.
fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit; no memory is kept.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Child mode: open `count` connections to ports `BASE_PORT + (first + i) % services`, say so,
/// and hold them until killed.
pub fn dial(services: usize, first: usize, count: usize) {
    raise_nofile();
    let held: Vec<TcpStream> = (0..count)
        .map(|i| {
            let port = BASE_PORT + ((first + i) % services) as u16;
            TcpStream::connect(("127.0.0.1", port)).expect("connect")
        })
        .collect();
    println!("ready {}", held.len());
    let _ = std::io::stdout().flush();
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Spawns `child` args of this executable from inside `ns` and waits for each one's first
/// line ("ready ...").
fn spawn_ready(ns: &str, args: Vec<Vec<String>>) -> Vec<Child> {
    let exe = std::env::current_exe().expect("current_exe");
    // Children spawned from a thread inside the namespace are born in it.
    let mut kids: Vec<Child> = in_ns(ns, move || {
        args.iter()
            .map(|a| {
                Command::new(&exe)
                    .args(a)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("spawn")
            })
            .collect::<Vec<_>>()
    })
    .join()
    .expect("spawn thread");
    for k in &mut kids {
        let mut line = String::new();
        let out = k.stdout.as_mut().expect("stdout");
        BufReader::new(out)
            .read_line(&mut line)
            .expect("child ready");
        assert!(line.starts_with("ready"), "a child did not start: {line:?}");
    }
    kids
}

/// Child mode: listen on `port`, say so, accept and hold every connection until killed.
pub fn hold(port: u16) {
    raise_nofile();
    let l = TcpListener::bind(("127.0.0.1", port)).expect("bind");
    println!("ready");
    let _ = std::io::stdout().flush();
    let mut held = Vec::new();
    for c in l.incoming() {
        match c {
            Ok(c) => held.push(c),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

struct Point {
    services: usize,
    sockets: usize,
    seen: u64,
    cpu_pct: f64,
}

fn one(s: usize, k: usize, secs: u64) -> Point {
    let net = NetPair::new();
    let ns = net.server.clone();
    let holders = spawn_ready(
        &ns,
        (0..s)
            .map(|i| vec!["__hold".into(), (BASE_PORT + i as u16).to_string()])
            .collect(),
    );
    // K/2 connections, round-robin over the services, from dialers of PER_DIALER each.
    let conns = k / 2;
    let dialers = spawn_ready(
        &ns,
        (0..conns.div_ceil(PER_DIALER))
            .map(|d| {
                let first = d * PER_DIALER;
                let count = PER_DIALER.min(conns - first);
                vec![
                    "__dial".into(),
                    s.to_string(),
                    first.to_string(),
                    count.to_string(),
                ]
            })
            .collect(),
    );
    let settle = Duration::from_secs(4);
    let ticks = ((settle.as_secs() + secs + 3) * 10) as u32;
    let agent = Agent::start(&ns, ticks, &["--metrics-addr", "off"]);
    let pid = agent.proc.pid();
    agent
        .proc
        .wait_line("agent's first tick", Duration::from_secs(60), |l| {
            l.starts_with('{')
        });
    std::thread::sleep(settle);
    let (c0, t0) = (super::cpu_rss(pid).0, Instant::now());
    std::thread::sleep(Duration::from_secs(secs));
    let (c1, wall) = (super::cpu_rss(pid).0, t0.elapsed().as_secs_f64());
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu_pct = (c1 - c0) as f64 / hz / wall * 100.0;
    let seen = agent
        .ticks()
        .last()
        .and_then(|t| t["services"].as_array().map(|a| a.len() as u64))
        .unwrap_or(0);
    drop(agent);
    for mut h in dialers.into_iter().chain(holders) {
        let _ = h.kill();
        let _ = h.wait();
    }
    drop(net);
    Point {
        services: s,
        sockets: k,
        seen,
        cpu_pct,
    }
}

pub fn scale(a: &ScaleArgs) {
    println!(
        "[bench] agent CPU at 100 ms ticks: services {:?} x sockets {:?}, {} s each after 4 s to settle",
        a.services, a.sockets, a.secs
    );
    let mut points = Vec::new();
    for &s in &a.services {
        for &k in &a.sockets {
            let p = one(s, k, a.secs);
            println!(
                "[bench] {s:>5} services, {k:>6} sockets: agent {:.2}% of a core ({} services seen)",
                p.cpu_pct, p.seen
            );
            points.push(p);
        }
    }
    if let Some(out) = &a.out {
        let v: Vec<serde_json::Value> = points
            .iter()
            .map(|p| {
                serde_json::json!({"services": p.services, "sockets": p.sockets,
                    "services_seen": p.seen, "agent_cpu_pct": p.cpu_pct})
            })
            .collect();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let doc = serde_json::json!({"kernel": kernel.trim(), "tick_ms": 100, "points": v});
        std::fs::write(out, serde_json::to_string_pretty(&doc).expect("json")).expect("write");
        println!("[bench] figures in {}", out.display());
    }
    let last: Vec<String> = points
        .iter()
        .map(|p| format!("s{}_k{}_cpu_pct={:.2}", p.services, p.sockets, p.cpu_pct))
        .collect();
    println!("scale: {}", last.join(" "));
}
