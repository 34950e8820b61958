//! `run`: bring the scenario up, optionally start the agent in every host namespace, drive the
//! open-loop load and the fault schedule, then write the ground truth to `--out` and tear down.
//! Output files are described in `seer-testbed/README.md`.
use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde::Serialize;

use crate::{
    callgraph::{self, Edge},
    dataset,
    error::{Error, Result},
    faults::{FaultRecord, Injector},
    load::{
        hdr,
        records::{self, Status},
    },
    plan::new_run_id,
    scenario::Scenario,
    signals,
    spawn::{Placement, spawn},
    testbed::{Bins, Testbed, progress},
    truth::{self, Violation, Window},
};

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub duration_s: f64,
    pub out: PathBuf,
    /// When set, `AGENT run --json --db OUT/agent-HOST.redb --metrics-addr off AGENT_ARGS...`
    /// runs in every host namespace, its ticks saved to `OUT/agent-HOST.jsonl`.
    pub agent_bin: Option<PathBuf>,
    pub agent_args: Vec<String>,
    /// Label horizons of `OUT/dataset/` (written with `agent_bin`), ms.
    pub horizons_ms: Vec<u64>,
}

impl RunOptions {
    /// Defaults: no agent, horizons 100 and 500 ms.
    pub fn new(duration_s: f64, out: PathBuf) -> Self {
        Self {
            duration_s,
            out,
            agent_bin: None,
            agent_args: Vec::new(),
            horizons_ms: dataset::DEFAULT_HORIZONS_MS.to_vec(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub scenario: String,
    pub run: String,
    pub cgroup: &'static str,
    pub services: usize,
    pub hosts: usize,
    pub duration_s: f64,
    pub t0_unix_ms: u64,
    pub target_p99_ms: f64,
    pub requests: usize,
    pub failed: usize,
    pub achieved_rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub violations: usize,
    pub violation_s: f64,
    pub unattributed_violations: usize,
    pub faults: usize,
    /// CPU used by the application's cgroups (not the generator or agent) over the run.
    pub testbed_cpu_cores: Option<f64>,
    pub load_cpu_cores: Option<f64>,
    /// Percentiles of the generator's HDR histograms (`latency.hdr`), overall and per request
    /// type; None when the log is missing (an older generator).
    pub latency_hdr: Option<hdr::HdrSummary>,
    /// `OUT/dataset/` (runs with an agent).
    pub dataset: Option<dataset::DatasetSummary>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn run(sc: &Scenario, scenario_path: &Path, opts: &RunOptions, bins: &Bins) -> Result<Summary> {
    // Random (unannounced) faults get their start times for this run's length.
    let sc = &sc.with_random_starts(opts.duration_s);
    std::fs::create_dir_all(&opts.out)
        .map_err(|e| Error::io("cannot create the output directory", &opts.out, e))?;
    let run_id = new_run_id();
    let tb = Testbed::up(sc, &run_id, bins, true)?;
    let root = tb.plan.cgroup_root();
    let mut agents = Vec::new();
    if let Some(agent) = &opts.agent_bin {
        for h in &tb.plan.hosts {
            agents.push(start_agent(&tb, agent, &h.netns, &h.name, opts)?);
        }
        // Let the agents attach and discover before the load starts.
        std::thread::sleep(Duration::from_secs(2));
    }
    let lead = Duration::from_secs_f64(sc.load.warmup_s + 0.5);
    let t0_unix_ms = unix_ms() + lead.as_millis() as u64;
    let t0 = Instant::now() + lead;
    let mut cmd = Command::new(&bins.load);
    cmd.arg("--scenario")
        .arg(scenario_path)
        .args(["--target", &tb.plan.front.to_string()])
        .args(["--t0-unix-ms", &t0_unix_ms.to_string()])
        .args(["--duration-s", &opts.duration_s.to_string()])
        .arg("--out")
        .arg(&opts.out)
        .stdin(Stdio::null());
    let mut load = spawn(
        &mut cmd,
        &Placement {
            netns: Some(tb.plan.client_netns.clone()),
            cgroups: tb.layout.procs_files(&format!("{root}/load")),
            die_with_parent: true,
        },
    )?;
    progress(&format!(
        "load: {} for {}s after {:.1}s warm-up; {} faults scheduled",
        sc.load.rps,
        opts.duration_s,
        sc.load.warmup_s,
        sc.faults.len()
    ));
    let injector = Injector::start(sc, &tb.plan, &tb.layout, t0, bins.svc.clone());
    // CPU accounting over the judged part of the run.
    while Instant::now() < t0 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let cpu_at = |rel: &str| tb.layout.cpu_usage_us(rel);
    let svc_cpu = |tb: &Testbed| -> Option<u64> {
        tb.plan
            .services
            .iter()
            .map(|s| tb.layout.cpu_usage_us(&s.cgroup))
            .sum::<Option<u64>>()
    };
    let (cpu0, load0) = (svc_cpu(&tb), cpu_at(&format!("{root}/load")));
    let deadline = t0 + Duration::from_secs_f64(opts.duration_s + sc.load.timeout_s + 30.0);
    let mut cpu_end = None;
    // Client connections, resolved across hosts: at mid-run and at the end of the load.
    let mut edges: Vec<Edge> = Vec::new();
    let mut edge_snapshots = vec![
        t0 + Duration::from_secs_f64(opts.duration_s / 2.0),
        t0 + Duration::from_secs_f64((opts.duration_s - 0.5).max(0.0)),
    ];
    let status = loop {
        if signals::stopping() {
            let _ = load.kill();
            let _ = load.wait();
            injector.finish();
            return Err(Error::Setup("interrupted: torn down".into()));
        }
        if edge_snapshots.first().is_some_and(|&t| Instant::now() >= t) {
            edge_snapshots.remove(0);
            edges.extend(callgraph::observe(&tb.plan, &tb.layout));
        }
        if cpu_end.is_none() && Instant::now() >= t0 + Duration::from_secs_f64(opts.duration_s) {
            cpu_end = Some((
                svc_cpu(&tb),
                cpu_at(&format!("{root}/load")),
                Instant::now(),
            ));
        }
        match load.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) => {}
            Err(e) => {
                injector.finish();
                return Err(Error::Setup(format!("waiting for the generator: {e}")));
            }
        }
        if Instant::now() > deadline {
            let _ = load.kill();
            let _ = load.wait();
            injector.finish();
            return Err(Error::Setup(
                "the load generator did not finish in time".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let faults = injector.finish();
    for a in &mut agents {
        stop_agent(a);
    }
    if let Some(agent) = &opts.agent_bin {
        for h in &tb.plan.hosts {
            export_agent_trace(agent, &h.name, opts);
        }
    }
    if !status.success() {
        return Err(Error::Setup(format!(
            "the load generator failed ({status})"
        )));
    }
    let cores = |a: Option<u64>, b: Option<u64>, secs: f64| match (a, b) {
        (Some(a), Some(b)) if secs > 0.0 => Some(b.saturating_sub(a) as f64 / 1e6 / secs),
        _ => None,
    };
    let (testbed_cpu_cores, load_cpu_cores) = match cpu_end {
        Some((c1, l1, at)) => {
            let secs = (at - t0).as_secs_f64();
            (cores(cpu0, c1, secs), cores(load0, l1, secs))
        }
        None => (None, None),
    };
    let (mut s, windows, violations) =
        analyze(sc, &opts.out, opts.duration_s, t0_unix_ms, &faults)?;
    // A dataset that cannot be built fails the run, after everything else is written.
    let mut dataset_err = None;
    if opts.agent_bin.is_some() {
        match dataset::build(dataset::Input {
            sc,
            plan: &tb.plan,
            out: &opts.out,
            t0_unix_ms,
            windows: &windows,
            violations: &violations,
            faults: &faults,
            horizons_ms: &opts.horizons_ms,
            observed_edges: callgraph::merge(edges),
        }) {
            Ok(d) => {
                progress(&format!(
                    "dataset: {} ticks x {} services ({} rows, {} violation ticks), {} call-graph edges in {}",
                    d.ticks,
                    d.services,
                    d.rows,
                    d.violation_ticks,
                    d.edges,
                    d.dir.display()
                ));
                s.dataset = Some(d);
            }
            Err(e) => dataset_err = Some(e),
        }
    }
    s.run = run_id;
    s.cgroup = tb.layout.name();
    s.hosts = tb.plan.hosts.len();
    s.testbed_cpu_cores = testbed_cpu_cores;
    s.load_cpu_cores = load_cpu_cores;
    write_json(&opts.out.join("summary.json"), &s)?;
    let topo = tb.plan.dir.join("topology.json");
    let _ = std::fs::copy(&topo, opts.out.join("topology.json"));
    drop(tb);
    progress(&format!(
        "done: {} requests, p99 {:.1} ms, {} violations ({} unattributed), testbed CPU {} cores; results in {}",
        s.requests,
        s.p99_ms,
        s.violations,
        s.unattributed_violations,
        s.testbed_cpu_cores
            .map_or("?".to_string(), |c| format!("{c:.2}")),
        opts.out.display()
    ));
    match dataset_err {
        Some(e) => Err(e),
        None => Ok(s),
    }
}

fn start_agent(
    tb: &Testbed,
    agent: &Path,
    netns: &str,
    host: &str,
    opts: &RunOptions,
) -> Result<Child> {
    let out = opts.out.join(format!("agent-{host}.jsonl"));
    let err = opts.out.join(format!("agent-{host}.log"));
    let f = File::create(&out).map_err(|e| Error::io("cannot create", &out, e))?;
    let g = File::create(&err).map_err(|e| Error::io("cannot create", &err, e))?;
    let mut cmd = Command::new(agent);
    cmd.args(["run", "--json", "--metrics-addr", "off", "--db"])
        .arg(opts.out.join(format!("agent-{host}.redb")))
        .args(&opts.agent_args)
        .stdin(Stdio::null())
        .stdout(f)
        .stderr(g);
    spawn(
        &mut cmd,
        &Placement {
            netns: Some(netns.to_string()),
            cgroups: tb
                .layout
                .procs_files(&format!("{}/agent", tb.plan.cgroup_root())),
            die_with_parent: true,
        },
    )
}

/// `OUT/agent-HOST/`: the host agent's trace as a training dataset (samples.arrow +
/// manifest.json, via `seer-agent export`), beside the ground truth of the same run. A failed
/// export is reported and leaves the redb file for a later `seer-agent export`.
fn export_agent_trace(agent: &Path, host: &str, opts: &RunOptions) {
    let db = opts.out.join(format!("agent-{host}.redb"));
    let dir = opts.out.join(format!("agent-{host}"));
    let out = Command::new(agent)
        .args(["export", "--from", "0", "--to", "now", "--db"])
        .arg(&db)
        .arg("--out")
        .arg(&dir)
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => progress(&format!(
            "agent trace of {host}: {}",
            String::from_utf8_lossy(&o.stdout).trim()
        )),
        Ok(o) => progress(&format!(
            "agent trace of {host} not exported ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => progress(&format!("agent trace of {host} not exported: {e}")),
    }
}

fn stop_agent(c: &mut Child) {
    // SIGTERM lets the agent detach and close its store; SIGKILL if it lingers.
    // SAFETY: kill has no memory preconditions; the pid is our own child.
    unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(5) {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = c.kill();
    let _ = c.wait();
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(v).map_err(|e| Error::Json {
        what: "output",
        source: e,
    })?;
    std::fs::write(path, text).map_err(|e| Error::io("cannot write", path, e))
}

fn quantile(sorted: &[u64], q: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * q).ceil() as usize).saturating_sub(1))
        .map_or(0.0, |&v| v as f64 / 1000.0)
}

/// Reads `requests.csv` from `out`, writes windows, violations and faults, returns the
/// summary, the windows and the violations.
pub fn analyze(
    sc: &Scenario,
    out: &Path,
    duration_s: f64,
    t0_unix_ms: u64,
    faults: &[FaultRecord],
) -> Result<(Summary, Vec<Window>, Vec<Violation>)> {
    let names: Vec<String> = sc
        .requests
        .iter()
        .map(|r| r.name.get_ref().clone())
        .collect();
    let recs = records::read_csv(&out.join("requests.csv"), &names)?;
    let judged: Vec<_> = recs.iter().filter(|r| r.t_us >= 0).cloned().collect();
    let ws = truth::windows(&judged, &sc.qos, (duration_s * 1000.0) as i64);
    let first_fault_ms = faults
        .iter()
        .filter(|f| f.applied_unix_ms > 0)
        .map(|f| f.applied_unix_ms as i64 - t0_unix_ms as i64)
        .min();
    let qos = truth::calibrate(&sc.qos, &ws, first_fault_ms);
    let mut vs = truth::violations(&ws, &qos, t0_unix_ms as i64);
    truth::attribute(&mut vs, faults, &qos);
    write_json(&out.join("faults.json"), &faults)?;
    write_json(&out.join("violations.json"), &vs)?;
    write_violations_csv(&out.join("violations.csv"), &vs)?;
    let mut w = String::from("t_ms,n,p99_us,failed\n");
    for x in &ws {
        w.push_str(&format!("{},{},{},{}\n", x.t_ms, x.n, x.p99_us, x.failed));
    }
    let p = out.join("windows.csv");
    std::fs::write(&p, w).map_err(|e| Error::io("cannot write", p, e))?;
    let mut lat: Vec<u64> = judged
        .iter()
        .filter(|r| r.status == Status::Ok)
        .map(|r| r.latency_us)
        .collect();
    lat.sort_unstable();
    let hdr_path = out.join(hdr::FILE);
    let latency_hdr = if hdr_path.exists() {
        Some(hdr::summarize(&hdr_path)?)
    } else {
        None
    };
    let violation_s = vs
        .iter()
        .map(|v| (v.end_ms - v.start_ms + sc.qos.step_ms as i64) as f64 / 1000.0)
        .fold(0.0, |a, b| a + b);
    let summary = Summary {
        scenario: sc.name.clone(),
        run: String::new(),
        cgroup: "",
        services: sc.services.len(),
        hosts: 0,
        duration_s,
        t0_unix_ms,
        target_p99_ms: qos.target_p99_ms,
        requests: judged.len(),
        failed: judged.iter().filter(|r| r.status != Status::Ok).count(),
        achieved_rps: judged.len() as f64 / duration_s.max(1e-9),
        p50_ms: quantile(&lat, 0.5),
        p99_ms: quantile(&lat, 0.99),
        p999_ms: quantile(&lat, 0.999),
        violations: vs.len(),
        violation_s,
        unattributed_violations: vs.iter().filter(|v| v.initiator.is_none()).count(),
        faults: faults.len(),
        testbed_cpu_cores: None,
        load_cpu_cores: None,
        latency_hdr,
        dataset: None,
    };
    Ok((summary, ws, vs))
}

fn write_violations_csv(path: &Path, vs: &[Violation]) -> Result<()> {
    let mut s = String::from(
        "id,start_ms,end_ms,start_unix_ms,end_unix_ms,peak_p99_us,initiator,fault_id,fault_kind,resource,onset,lead_ms\n",
    );
    let o = |x: &Option<String>| x.clone().unwrap_or_default();
    for v in vs {
        s.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{}\n",
            v.id,
            v.start_ms,
            v.end_ms,
            v.start_unix_ms,
            v.end_unix_ms,
            v.peak_p99_us,
            o(&v.initiator),
            v.fault_id.map_or(String::new(), |i| i.to_string()),
            o(&v.fault_kind),
            o(&v.resource),
            o(&v.onset),
            v.lead_ms.map_or(String::new(), |l| l.to_string()),
        ));
    }
    std::fs::write(path, s).map_err(|e| Error::io("cannot write", path, e))
}
