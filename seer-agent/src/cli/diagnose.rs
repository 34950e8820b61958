//! `seer-agent diagnose SERVICE`: which resource the service is short of.
use std::{net::SocketAddr, process::ExitCode, time::Duration};

use crate::diagnose::{
    self, DiagnoseError, DiagnoseRequest, Method, Record, Resource,
    probe::{Protocol, Request},
    search::{NoActions, SearchConfig},
};

#[derive(clap::Args, Clone, Debug)]
pub struct DiagnoseArgs {
    /// Service name, as `seer-agent run` shows it.
    pub service: String,
    /// JSON record on stdout instead of a summary.
    #[arg(long)]
    pub json: bool,
    /// Most time microbenchmarks may run in all (ms).
    #[arg(long, default_value_t = 100)]
    pub budget_ms: u64,
    /// One burst / observation window (ms).
    #[arg(long, default_value_t = 10)]
    pub window_ms: u64,
    /// Intensities tried per resource, rising (comma-separated, each in (0, 1]).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub levels: Vec<f64>,
    /// Latency ratio (injected / quiet) that counts as substantial.
    #[arg(long, default_value_t = 1.5)]
    pub threshold: f64,
    /// Non-CPU kernels must move latency this many times more than the CPU-integer one.
    #[arg(long, default_value_t = 1.3)]
    pub relative: f64,
    /// Share of runnable time spent waiting on a run queue that counts as short of CPU (with
    /// at least 15 us per time slice and 15% of the request latency).
    #[arg(long, default_value_t = 0.4)]
    pub cpu_wait: f64,
    /// Bursts per intensity level, averaged (each counts against the budget).
    #[arg(long, default_value_t = 1)]
    pub repeats: usize,
    /// Only these resources, in this order (default: network, memory capacity, disk and CPU
    /// from PMU-free signals, then microbenchmarks for the core resources, LLC and memory
    /// bandwidth, then a memory reading for memory bandwidth: DRAM latency from its CPU against
    /// the other CPUs, then with --llc-reading an LLC reading; name network, disk or
    /// memory_capacity to inject their kernels too).
    #[arg(long, value_delimiter = ',')]
    pub resources: Vec<String>,
    /// Port to probe (default: the service's lowest listening port).
    #[arg(long)]
    pub port: Option<u16>,
    /// memcached key to `get` per probe request (default: `version`).
    #[arg(long)]
    pub key: Option<String>,
    /// Protocol of the latency probe: memcached, redis, http, greeting (the server's first
    /// bytes on a new connection) or connect (TCP handshake only). Default: from the process
    /// name, then the port, then by asking the service.
    #[arg(long)]
    pub protocol: Option<String>,
    /// Path the HTTP probe requests.
    #[arg(long, default_value = "/")]
    pub http_path: String,
    /// Also time the memory canary (L2-, LLC- and DRAM-sized pointer chases) on its CPUs and
    /// record it: for calibrating hosts; the diagnosis does not use it.
    #[arg(long)]
    pub canary: bool,
    /// When nothing else decided, memory bandwidth included, read the LLC: a working set twice
    /// the L2 walked on its CPU with the CPUs sharing its LLC running, then held by a spinning
    /// real-time thread (what runs there pauses a few ms), and the time a cache line takes to
    /// reach them; names the LLC when the neighbours slow the walk >= 1.2x. It takes ~10-15 ms
    /// of the culprit's CPU after the search: give it room with --budget-ms 130. Off by
    /// default: on the VM seer was built on, other tenants empty the L3 within ~20 ms and its
    /// readings beside a cache hog were no different from those without one
    /// (seer-agent/src/diagnose/llc.rs, reports/llc-reading/). Calibrate it on a host with
    /// `seer-agent llc-readings` first.
    #[arg(long)]
    pub llc_reading: bool,
    /// Force the mode: private or public (default: detected from the PMU).
    #[arg(long)]
    pub mode: Option<String>,
    /// Where the network microbenchmark sends UDP (default 127.0.0.1:9 in the service's
    /// namespace).
    #[arg(long)]
    pub net_dest: Option<SocketAddr>,
    /// Enter this network namespace (ip netns name) first: the service lives there.
    #[arg(long)]
    pub netns: Option<String>,
}

fn request(a: &DiagnoseArgs) -> Result<DiagnoseRequest, DiagnoseError> {
    let bad = |m: String| Err(DiagnoseError::BadRequest(m));
    if a.budget_ms == 0 || a.budget_ms > 10_000 {
        return bad(format!("--budget-ms {} is outside 1..=10000", a.budget_ms));
    }
    if a.repeats == 0 || a.repeats > 20 {
        return bad(format!("--repeats {} is outside 1..=20", a.repeats));
    }
    if a.window_ms == 0 || a.window_ms > 1000 {
        return bad(format!("--window-ms {} is outside 1..=1000", a.window_ms));
    }
    if a.levels.is_empty()
        || a.levels
            .iter()
            .any(|l| !(0.0..=1.0).contains(l) || *l == 0.0)
    {
        return bad(format!("--levels {:?}: each must be in (0, 1]", a.levels));
    }
    // NaN fails these too.
    let above_one = |x: f64| x.is_finite() && x > 1.0;
    if !above_one(a.threshold) || !above_one(a.relative) {
        return bad(format!(
            "--threshold {} and --relative {} must be above 1",
            a.threshold, a.relative
        ));
    }
    if !(a.cpu_wait.is_finite() && a.cpu_wait > 0.0 && a.cpu_wait < 1.0) {
        return bad(format!("--cpu-wait {} must be in (0, 1)", a.cpu_wait));
    }
    let mut order = Vec::new();
    for r in &a.resources {
        match Resource::parse(r) {
            Some(r) => order.push(r),
            None => {
                let all: Vec<&str> = Resource::ALL.iter().map(|r| r.name()).collect();
                return bad(format!(
                    "unknown resource {r:?} (one of {})",
                    all.join(", ")
                ));
            }
        }
    }
    let protocol = match a.protocol.as_deref() {
        None => None,
        Some(p) => match Protocol::parse(p) {
            Some(p) => Some(p),
            None => {
                let all: Vec<&str> = Protocol::ALL.iter().map(|p| p.name()).collect();
                return bad(format!("--protocol {p:?}: one of {}", all.join(", ")));
            }
        },
    };
    if !a.http_path.starts_with('/') || a.http_path.contains(char::is_whitespace) {
        return bad(format!(
            "--http-path {:?} must start with / and contain no spaces",
            a.http_path
        ));
    }
    let mode = match a.mode.as_deref() {
        None => None,
        Some("private") => Some(Method::Private),
        Some("public") => Some(Method::PublicCloud),
        Some(m) => return bad(format!("--mode {m:?}: private or public")),
    };
    Ok(DiagnoseRequest {
        service: a.service.clone(),
        // Memory is read when memory bandwidth is among the resources asked for.
        memory_reading: order.is_empty() || order.contains(&Resource::MemoryBandwidth),
        // The LLC is read when asked for and it is among them.
        llc_reading: a.llc_reading && (order.is_empty() || order.contains(&Resource::Llc)),
        mode,
        port: a.port,
        probe: a.key.clone().map_or(Request::Version, Request::Get),
        protocol,
        http_path: a.http_path.clone(),
        canary: a.canary,
        net_dest: a.net_dest,
        cpu_wait: a.cpu_wait,
        search: SearchConfig {
            budget: Duration::from_millis(a.budget_ms),
            burst: Duration::from_millis(a.window_ms),
            levels: a.levels.clone(),
            threshold: a.threshold,
            relative: a.relative,
            repeats: a.repeats,
            // Given resources: only those, injected in that order, and the PMU-free signals
            // decide only among them.
            passive: if order.is_empty() {
                SearchConfig::PASSIVE.to_vec()
            } else {
                SearchConfig::PASSIVE
                    .into_iter()
                    .filter(|r| order.contains(r))
                    .collect()
            },
            order: if order.is_empty() {
                SearchConfig::INJECT.to_vec()
            } else {
                order
            },
            ..SearchConfig::default()
        },
    })
}

fn enter_netns(name: &str) -> Result<(), DiagnoseError> {
    let path = format!("/run/netns/{name}");
    crate::sys::thread::enter_netns(&path).map_err(|source| DiagnoseError::Netns { path, source })
}

fn print(r: &Record, json: bool) {
    if json {
        match serde_json::to_string(r) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("seer-agent: cannot serialize the record: {e}"),
        }
        return;
    }
    let what = r.resource.map_or("inconclusive", Resource::name);
    println!(
        "{}: {what} [testbed resource: {}] (confidence {:.2}, {:?} mode)\n  {}",
        r.service,
        r.testbed_resource().unwrap_or("-"),
        r.confidence,
        r.mode,
        r.reason
    );
    let e = &r.evidence;
    println!(
        "  quiet latency {:.1} us (noise {:.1} us); injected {:.0} of {:.0} ms",
        e.baseline_us, e.noise_us, e.injected_ms, e.budget_ms
    );
    for s in &e.steps {
        println!(
            "  {:<17} intensity {:.2}: {:>4} requests, median {:>9.1} us (mean {:>9.1}), {:.2}x{}",
            s.resource.name(),
            s.intensity,
            s.requests,
            s.p50_us,
            s.mean_us,
            s.score,
            if s.uncore { " (on the other CPUs)" } else { "" }
        );
    }
    if let Some(p) = &e.probe {
        println!(
            "  probe: {} protocol at {} ({})",
            p.protocol.name(),
            p.addr,
            p.chosen
        );
    }
    if let Some(s) = &e.signals {
        println!(
            "  signals: run-queue wait {:.1}%, throttled {:.1}%, PSI cpu/mem/io {:.1}/{:.1}/{:.1}%",
            s.runq_wait_ratio * 100.0,
            s.throttled_ratio * 100.0,
            s.psi_cpu_some * 100.0,
            s.psi_memory_some * 100.0,
            s.psi_io_some * 100.0
        );
    }
}

/// Runs the command: exit 0 with a record (also when inconclusive), 64 for a bad request,
/// 1 for anything else (unknown service, service gone, probe failure), with the reason.
pub fn run(a: &DiagnoseArgs) -> ExitCode {
    match diagnose(a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("seer-agent: {e}");
            ExitCode::from(if matches!(e, DiagnoseError::BadRequest(_)) {
                EX_USAGE
            } else {
                1
            })
        }
    }
}

const EX_USAGE: u8 = 64;

fn diagnose(a: &DiagnoseArgs) -> Result<(), DiagnoseError> {
    let req = request(a)?;
    if let Some(ns) = &a.netns {
        enter_netns(ns)?;
    }
    // Entered: what is left to do needs only these, for good.
    if seer_store::safefs::euid() == 0
        && let Err(e) =
            crate::sys::caps::restrict_to(crate::sys::caps::FOR_DIAGNOSE, log::Level::Debug)
    {
        log::warn!("{e}; continuing with the capabilities we have");
    }
    let r = diagnose::diagnose(&req, &NoActions)?;
    print(&r, a.json);
    Ok(())
}

/// `seer-agent llc-readings`: the LLC reading of `diagnose --llc-reading` without a service,
/// and how long this host's caches keep a working set, for calibrating `llc::RISE` on a host.
#[derive(clap::Args, Clone, Debug)]
pub struct LlcReadingsArgs {
    /// The CPU walked (the culprit's, in a diagnosis).
    #[arg(long, default_value_t = 0)]
    pub cpu: usize,
    /// The CPUs held (default: those sharing its LLC, at most 3). Start the neighbour to
    /// measure on them first, e.g. `seer-testbed-svc hog --kind cache --cpus 1` with `level 1`
    /// on its stdin.
    #[arg(long, value_delimiter = ',')]
    pub hold: Vec<usize>,
    /// Readings to take, each up to 5 rounds of a free and a held pass.
    #[arg(long, default_value_t = 8)]
    pub readings: u32,
}

pub fn llc_readings(a: &LlcReadingsArgs) -> ExitCode {
    use diagnose::{llc, microbench::CacheSizes};
    let n = diagnose::session::host_cpus();
    if let Some(c) = std::iter::once(a.cpu)
        .chain(a.hold.iter().copied())
        .find(|&c| c >= n)
    {
        eprintln!(
            "seer-agent: CPU {c} does not exist (this host has CPUs 0-{})",
            n - 1
        );
        return ExitCode::from(EX_USAGE);
    }
    let hold = if a.hold.is_empty() {
        let all: Vec<usize> = (0..n).collect();
        llc::to_hold(a.cpu, &all)
    } else {
        a.hold.iter().copied().filter(|&c| c != a.cpu).collect()
    };
    let m = llc::Meter::new(CacheSizes::of_host().l2);
    let Some(first) = m.read(a.cpu, &hold, Duration::from_millis(100)) else {
        eprintln!(
            "seer-agent: no CPU to hold beside CPU {} (give --hold CPU,...)",
            a.cpu
        );
        return ExitCode::from(EX_USAGE);
    };
    println!(
        "{} KiB working set on CPU {}, CPUs {:?} running (free) and held by {} (held); names the LLC from {:.2}x",
        m.set_bytes() >> 10,
        a.cpu,
        hold,
        first.hold,
        llc::RISE
    );
    let mut r = Some(first);
    for _ in 0..a.readings.max(1) {
        let Some(x) = r
            .take()
            .or_else(|| m.read(a.cpu, &hold, Duration::from_millis(100)))
        else {
            break;
        };
        println!(
            "free {:.1} ns  held {:.1} ns  ratio {:.2}  rounds {}  its CPU {:.1} ms  held {:.1} ms  line to CPU {} {:.0} ns",
            x.free_ns,
            x.held_ns,
            x.ratio,
            x.rounds,
            x.culprit_cpu_ms,
            x.held_ms,
            hold[0],
            x.line_transfer_ns
        );
    }
    println!("retention (a pass after a wait with nothing of ours touching the set, 3 each):");
    for wait_ms in [0u64, 1, 5, 20, 50] {
        let v: Vec<String> = (0..3)
            .map(|_| format!("{:.1}", m.retention(a.cpu, Duration::from_millis(wait_ms))))
            .collect();
        println!("  after {wait_ms:>2} ms: {} ns per load", v.join(", "));
    }
    ExitCode::SUCCESS
}
