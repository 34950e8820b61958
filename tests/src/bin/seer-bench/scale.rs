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

/// Raises this process's open-files limit (hard and soft) to `n`; root may.
fn raise_nofile(n: u64) {
    let lim = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: setrlimit with a valid rlimit; no memory is kept.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
}

/// Child mode: listen on `port`, say so, accept and hold every connection until killed.
pub fn hold(port: u16) {
    raise_nofile(1 << 20);
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

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
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
    let exe = std::env::current_exe().expect("current_exe");
    // Holders spawned from a thread inside the namespace inherit it.
    let mut holders: Vec<Child> = in_ns(&ns, move || {
        (0..s)
            .map(|i| {
                Command::new(&exe)
                    .args(["__hold", &(BASE_PORT + i as u16).to_string()])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("spawn holder")
            })
            .collect::<Vec<_>>()
    })
    .join()
    .expect("spawn thread");
    for h in &mut holders {
        let mut line = String::new();
        let out = h.stdout.as_mut().expect("stdout");
        BufReader::new(out)
            .read_line(&mut line)
            .expect("holder ready");
        assert_eq!(line.trim(), "ready", "holder did not start");
    }
    // K/2 connections from this process, round-robin over the services (made in the
    // namespace; a socket keeps its namespace).
    let conns = in_ns(&ns, move || {
        raise_nofile(1 << 20);
        (0..k / 2)
            .map(|i| {
                TcpStream::connect(("127.0.0.1", BASE_PORT + (i % s) as u16)).expect("connect")
            })
            .collect::<Vec<_>>()
    })
    .join()
    .expect("connect thread");
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
    let (c0, t0) = (cpu_ticks(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(secs));
    let (c1, wall) = (cpu_ticks(pid), t0.elapsed().as_secs_f64());
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu_pct = (c1 - c0) as f64 / hz / wall * 100.0;
    let seen = agent
        .ticks()
        .last()
        .and_then(|t| t["services"].as_array().map(|a| a.len() as u64))
        .unwrap_or(0);
    drop(agent);
    drop(conns);
    for mut h in holders {
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
    raise_nofile(1 << 20);
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
