//! `cargo xtask bench overhead`: what the agent costs a real nginx -> memcached stack (and
//! `cargo xtask bench scale`, in `scale.rs`: its CPU as services and sockets grow).
//!
//! Interleaved runs with and without the agent (ABBA order, so drift hits both sides alike):
//! max throughput under wrk, and p99 at a fixed 50%-of-max open-loop rate. Then one run with
//! the kernel's bpf stats on, for the program time per event and each hook's share.
//! Last line: `overhead: throughput_ratio=X p99_ratio=Y agent_cpu_pct=Z ns_per_event=W`.
use std::{
    collections::BTreeMap,
    process::Command,
    time::{Duration, Instant},
};

use seer_tests::{Agent, NetPair, loadgen, sh, stack::Stack};

#[path = "seer-bench/scale.rs"]
mod scale;

/// `seer-bench overhead` (run by `cargo xtask bench overhead`).
#[derive(clap::Parser)]
#[command(name = "seer-bench")]
enum Cli {
    /// Interleaved runs with and without the agent; see the module's doc.
    Overhead(Args),
    /// The agent's CPU as services and sockets grow.
    Scale(scale::ScaleArgs),
    /// One open-loop run inside the namespace (the benchmark re-executes itself for it).
    #[command(hide = true, name = "__openloop")]
    OpenLoop { addr: String, rate: f64, secs: u64 },
    /// A service for `scale`: listen on PORT, hold every connection.
    #[command(hide = true, name = "__hold")]
    Hold { port: u16 },
    /// A client for `scale`: COUNT connections over SERVICES ports, held.
    #[command(hide = true, name = "__dial")]
    Dial {
        services: usize,
        first: usize,
        count: usize,
    },
}

#[derive(clap::Args)]
struct Args {
    /// Extra arguments for `seer-agent run` (e.g. "--no-turns"), to price one hook at a time.
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    agent_args: String,
    /// Interleaved pairs (with, without) per measurement.
    #[arg(long, default_value_t = 10)]
    pairs: usize,
    /// Seconds per run.
    #[arg(long, default_value_t = 5)]
    secs: u32,
    /// memcached value size served through nginx, KiB.
    #[arg(long, default_value_t = 64)]
    value_kib: usize,
}

/// utime+stime of a process, in clock ticks, and its RSS in KiB.
fn cpu_rss(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let cpu = f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    (cpu, rss)
}

fn start_agent(ns: &str, extra: &[String]) -> Agent {
    // The default configuration (NIC arrivals from the sockets, no tc program); price tc
    // ingress with --agent-args "--tc-ingress".
    let args: Vec<&str> = extra.iter().map(String::as_str).collect();
    let a = Agent::start(ns, 1_000_000, &args);
    a.proc
        .wait_line("agent's first tick", Duration::from_secs(30), |l| {
            l.starts_with('{')
        });
    a
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// median(on) / median(off) and its 95% bootstrap interval: the runs resampled with
/// replacement (on and off apart, 4000 times, a fixed seed so a rerun of the same figures
/// gives the same interval).
fn ratio_ci(on: &[f64], off: &[f64]) -> (f64, f64, f64) {
    let point = median(&mut on.to_vec()) / median(&mut off.to_vec());
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut pick = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let mut ratios: Vec<f64> = (0..4000)
        .map(|_| {
            let mut a: Vec<f64> = (0..on.len()).map(|_| on[pick(on.len())]).collect();
            let mut b: Vec<f64> = (0..off.len()).map(|_| off[pick(off.len())]).collect();
            median(&mut a) / median(&mut b)
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    (point, ratios[100], ratios[3899])
}

/// What else the machine was doing: CPU MHz of each core, steal time and load average.
fn noise() -> String {
    let mhz: Vec<String> = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("cpu MHz"))
        .filter_map(|v| v.split(':').nth(1).map(|x| x.trim().to_string()))
        .collect();
    let steal = std::fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(8).map(str::to_string))
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "cpu MHz {mhz:?}, steal ticks so far {steal}, loadavg {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// Pins every thread of the stack (nginx, memcached) to CPU 0; the load generator runs on
/// CPU 1 (`taskset` in `wrk_on_cpu1` and the open-loop re-exec), so neither takes the
/// other's CPU. The agent is not pinned: what it costs the service is what is measured.
fn pin_stack(ns: &str) {
    for pid in sh(&format!("ip netns pids {ns}")).split_whitespace() {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if matches!(comm.trim(), "nginx" | "memcached") {
            sh(&format!("taskset -apc 0 {pid} >/dev/null"));
        }
    }
}

/// `wrk` on CPU 1 against the stack; requests per second.
fn wrk_on_cpu1(stack: &Stack, secs: u32) -> f64 {
    let out = sh(&format!(
        "ip netns exec {} taskset -c 1 wrk -t1 -c16 -d{secs}s http://127.0.0.1:{}/",
        stack.ns, stack.http_port
    ));
    out.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("wrk printed no Requests/sec: {out}"))
}

fn prog_stats(ids: &[(String, u32)]) -> BTreeMap<String, (u64, u64)> {
    let mut out = BTreeMap::new();
    for (name, id) in ids {
        let j = sh(&format!("bpftool -j prog show id {id}"));
        let v: serde_json::Value = serde_json::from_str(&j).unwrap_or_default();
        let t = v["run_time_ns"].as_u64().unwrap_or(0);
        let c = v["run_cnt"].as_u64().unwrap_or(0);
        let e = out.entry(name.clone()).or_insert((0, 0));
        e.0 += t;
        e.1 += c;
    }
    out
}

fn main() {
    let a = match <Cli as clap::Parser>::parse() {
        Cli::Overhead(a) => a,
        Cli::Scale(a) => return scale::scale(&a),
        Cli::OpenLoop { addr, rate, secs } => return open_loop(&addr, rate, secs),
        Cli::Hold { port } => return scale::hold(port),
        Cli::Dial {
            services,
            first,
            count,
        } => return scale::dial(services, first, count),
    };
    overhead(&a);
}

/// Child mode: one open-loop run inside the namespace, result on one line.
fn open_loop(addr: &str, rate: f64, secs: u64) {
    {
        let r = loadgen::run(addr, "/", rate, Duration::from_secs(secs), 16);
        println!(
            "sent={} errors={} rps={:.0} p50_us={} p99_us={}",
            r.sent,
            r.errors,
            r.achieved_rps,
            r.quantile_us(0.5),
            r.quantile_us(0.99)
        );
    }
}

fn overhead(a: &Args) {
    let agent_args: Vec<String> = a
        .agent_args
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert!(
        seer_tests::is_root(),
        "the overhead benchmark needs root (namespaces, eBPF)"
    );
    let net = NetPair::new();
    let stack = Stack::start(&net.server, 8082, 11412, a.value_kib * 1024);
    eprintln!(
        "[bench] nginx -> memcached ({} KiB values) in netns {}; {} pairs x {} s",
        a.value_kib, net.server, a.pairs, a.secs
    );
    let two = std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2;
    if two {
        pin_stack(&net.server);
        eprintln!("[bench] stack pinned to CPU 0, load generator to CPU 1");
    }
    let noise_before = noise();
    eprintln!("[bench] before: {noise_before}");
    stack.wrk(1, 16, 2); // warm-up
    let hz = 100.0; // USER_HZ

    // 1. Max throughput, ABBA.
    let (mut off, mut on) = (Vec::new(), Vec::new());
    let (mut agent_cpu, mut agent_rss) = (Vec::new(), 0u64);
    for i in 0..a.pairs * 2 {
        let with = matches!(i % 4, 1 | 2);
        let agent = with.then(|| start_agent(&net.server, &agent_args));
        let (c0, _) = agent.as_ref().map_or((0, 0), |g| cpu_rss(g.proc.pid()));
        let t0 = Instant::now();
        let rps = if two {
            wrk_on_cpu1(&stack, a.secs)
        } else {
            stack.wrk(1, 16, a.secs).0
        };
        if let Some(g) = &agent {
            let (c1, rss) = cpu_rss(g.proc.pid());
            agent_cpu.push((c1 - c0) as f64 / hz / t0.elapsed().as_secs_f64() * 100.0);
            agent_rss = agent_rss.max(rss);
        }
        eprintln!(
            "[bench] max throughput run {}/{}: agent {}: {rps:.0} req/s",
            i + 1,
            a.pairs * 2,
            if with { "on " } else { "off" }
        );
        if with { on.push(rps) } else { off.push(rps) }
    }
    let max_off = median(&mut off.clone());
    let (throughput_ratio, tp_lo, tp_hi) = ratio_ci(&on, &off);

    // 2. p99 at 50% of max, open loop, ABBA.
    let rate = max_off * 0.5;
    let addr = format!("127.0.0.1:{}", stack.http_port);
    let (mut p_off, mut p_on) = (Vec::new(), Vec::new());
    for i in 0..a.pairs * 2 {
        let with = matches!(i % 4, 1 | 2);
        let agent = with.then(|| start_agent(&net.server, &agent_args));
        // The generator runs inside the namespace: re-exec ourselves there for one run.
        let out = Command::new("ip")
            .args(["netns", "exec", &net.server])
            .args(if two {
                &["taskset", "-c", "1"][..]
            } else {
                &[][..]
            })
            .arg(std::env::current_exe().expect("exe"))
            .args(["__openloop", &addr, &rate.to_string(), &a.secs.to_string()])
            .output()
            .expect("open-loop run");
        drop(agent);
        let line = String::from_utf8_lossy(&out.stdout).into_owned();
        let p99: f64 = line
            .split("p99_us=")
            .nth(1)
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "open-loop run failed: {line} {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        eprintln!(
            "[bench] 50% load ({rate:.0} req/s) run {}/{}: agent {}: {}",
            i + 1,
            a.pairs * 2,
            if with { "on " } else { "off" },
            line.trim()
        );
        if with {
            p_on.push(p99)
        } else {
            p_off.push(p99)
        }
    }
    let (p99_ratio, p99_lo, p99_hi) = ratio_ci(&p_on, &p_off);

    // 3. Program cost per event, from the kernel's bpf stats (one extra run, stats on).
    let prev = sh("sysctl -n kernel.bpf_stats_enabled").trim().to_string();
    sh("sysctl -qw kernel.bpf_stats_enabled=1");
    let agent = start_agent(&net.server, &agent_args);
    let ids: Vec<(String, u32)> = agent
        .proc
        .errs
        .lock()
        .expect("lock")
        .iter()
        .filter_map(|l| {
            let name = l
                .split("attached ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .to_string();
            Some((name, l.split("prog_id=").nth(1)?.trim().parse().ok()?))
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let s0 = prog_stats(&ids);
    stack.wrk(1, 16, a.secs);
    let s1 = prog_stats(&ids);
    drop(agent);
    sh(&format!("sysctl -qw kernel.bpf_stats_enabled={prev}"));
    let mut total_ns = 0u64;
    let mut events = 0u64;
    let mut rows = Vec::new();
    for (name, (t1, c1)) in &s1 {
        let (t0, c0) = s0.get(name).copied().unwrap_or((0, 0));
        let (t, c) = (t1 - t0, c1 - c0);
        rows.push((name.clone(), t, c));
        // Iterators run per socket per tick, not per event: listed, not in the per-event price.
        if !name.ends_with("_iter") {
            total_ns += t;
            events += c;
        }
    }
    let ns_per_event = total_ns as f64 / events.max(1) as f64;

    println!(
        "\n== seer overhead: nginx -> memcached ({} KiB values), {} interleaved pairs of {} s ==",
        a.value_kib, a.pairs, a.secs
    );
    println!(
        "max throughput (wrk -t1 -c16): off {:?} on {:?} req/s",
        off.iter().map(|v| *v as u64).collect::<Vec<_>>(),
        on.iter().map(|v| *v as u64).collect::<Vec<_>>()
    );
    println!(
        "  throughput ratio (median on / median off): {throughput_ratio:.4} [95% CI {tp_lo:.4}, {tp_hi:.4}]  (target: loss <= 1%, CI upper bound of the loss <= 3%)"
    );
    println!("p99 at 50% of max ({rate:.0} req/s, open loop): off {p_off:?} on {p_on:?} us");
    println!(
        "  p99 ratio (median on / median off): {p99_ratio:.4} [95% CI {p99_lo:.4}, {p99_hi:.4}]  (target <= 1.02)"
    );
    println!("noise: before {noise_before}; after {}", noise());
    let cpu = median(&mut agent_cpu.clone());
    println!(
        "agent at 100 ms ticks: CPU {cpu:.2}% of one core (median over runs), RSS {} KiB",
        agent_rss
    );
    println!("eBPF program time (bpf stats, {} s at max load):", a.secs);
    println!(
        "  {:<18} {:>12} {:>12} {:>10} {:>8}",
        "program", "run_cnt", "run_time_ns", "ns/run", "share"
    );
    let all: u64 = rows.iter().map(|r| r.1).sum();
    for (name, t, c) in &rows {
        println!(
            "  {:<18} {:>12} {:>12} {:>10.0} {:>7.1}%",
            name,
            c,
            t,
            *t as f64 / (*c).max(1) as f64,
            *t as f64 * 100.0 / all.max(1) as f64
        );
    }
    println!(
        "  per-event hooks: {events} events, {ns_per_event:.0} ns per event (target <= 150; the iterators run per socket per tick and are listed apart)"
    );
    println!(
        "overhead: throughput_ratio={throughput_ratio:.4} [{tp_lo:.4},{tp_hi:.4}] p99_ratio={p99_ratio:.4} [{p99_lo:.4},{p99_hi:.4}] agent_cpu_pct={cpu:.2} ns_per_event={ns_per_event:.0}"
    );
}
