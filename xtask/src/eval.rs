//! `cargo xtask eval diagnosis`: diagnosis accuracy on the testbed, per fault type, as a
//! confusion matrix (issue 5's evaluation).
//!
//! For each scenario under `eval/diagnosis/` (one fault on one victim, or none: the control),
//! the testbed runs it with real servers and real load (`seer-testbed run`); once the fault is
//! on, `seer-agent diagnose VICTIM --json --netns <victim's host namespace>` runs `--trials`
//! times, one after the other, and the testbed is stopped (SIGINT: it tears everything down).
//! The truth is the fault's resource as the injector names it; faults with no shared resource
//! (blocking bug, load spike) and the control are right when the diagnosis names none.
//! Output: `reports/diagnosis.md` and `reports/diagnosis.json`.
//!
//! Scenario files are ordinary testbed scenarios, plus one optional comment line the testbed
//! ignores: `# eval.victim = "NAME"` (the service to diagnose; default: the fault's service),
//! and `# eval.settle_s = S` (seconds from the fault's start to the first diagnosis, for a
//! fault that takes a while to bite; default `--settle`).
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::util;

#[derive(Subcommand)]
pub enum Eval {
    /// Diagnosis accuracy per testbed fault type: reports/diagnosis.{md,json}.
    Diagnosis(DiagnosisArgs),
    /// The model: every network and baseline on the corpus's held-out runs, the paper's
    /// figures, the channel ablation, inference time -> models/REPORT.md and models/report/.
    /// Arguments go to `python -m seer_models.evaluate` (--ship writes the shipped model,
    /// --budget-s training seconds per network, --quick only the main table).
    Model {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The closed loop: a scenario run with no seer, with seer reacting after the violation,
    /// and with seer acting on its predictions -> eval/closed-loop/REPORT.md and plots. Last
    /// line: `closed-loop: avoided_pct=.. time_in_violation_ratio_reactive_over_proactive=..
    /// unnecessary_actions_per_10min=..`.
    ClosedLoop(crate::closed_loop::ClosedLoopArgs),
}

#[derive(Args)]
pub struct DiagnosisArgs {
    /// Diagnoses per scenario while its fault is on (~10-15 s of testbed time each).
    #[arg(long, default_value_t = 5)]
    trials: usize,
    /// Directory of scenario files (one fault each, or none).
    #[arg(long, default_value = "eval/diagnosis")]
    scenarios: PathBuf,
    /// Only these scenarios (file stems, comma-separated).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Where diagnosis.md and diagnosis.json go.
    #[arg(long, default_value = "reports")]
    out: PathBuf,
    /// Seconds to let a fault settle before the first diagnosis.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// Pause between diagnoses (s), so one diagnosis's injections do not linger into the next.
    #[arg(long, default_value_t = 1.0)]
    gap: f64,
    /// Use target/release/seer-agent (built with `cargo build --release -p seer-agent`).
    #[arg(long)]
    release: bool,
    /// Do not build seer-agent and seer-testbed first.
    #[arg(long)]
    no_build: bool,
    /// Seconds to wait, before each scenario, for other testbeds on this host to finish (their
    /// faults would be measured too); then go on and mark the trials.
    #[arg(long, default_value_t = 180)]
    wait_others: u64,
    /// Extra arguments for every `seer-agent diagnose` (repeatable), e.g. --diagnose-arg=--repeats=2.
    #[arg(long = "diagnose-arg", allow_hyphen_values = true)]
    diagnose_args: Vec<String>,
}

pub fn run(which: Eval) -> Result<()> {
    match which {
        Eval::Diagnosis(a) => diagnosis(&a),
        Eval::ClosedLoop(a) => crate::closed_loop::run(&a),
        Eval::Model { args } => {
            let py = crate::setup::train_venv()?;
            let args = util::with_default(
                args,
                "--corpus",
                crate::corpus::default_dir().display().to_string(),
            );
            let args = util::with_default(
                args,
                "--out",
                util::root().join("models").display().to_string(),
            );
            let mut full: Vec<String> = vec!["-m".into(), "seer_models.evaluate".into()];
            full.extend(args);
            util::run(crate::models_python(&py).args(&full))
        }
    }
}

/// The resource a fault kind contends on, as the testbed's injector names it
/// (seer-testbed/src/faults.rs `resource`); `none` for faults of no shared resource.
fn truth_of(kind: Option<&str>) -> Result<&'static str> {
    Ok(match kind {
        None => "none",
        Some("cpu_quota" | "cpu_hog") => "cpu",
        Some("cache_hog") => "llc",
        Some("membw_hog") => "memory_bandwidth",
        Some("mem_hog") => "memory_capacity",
        Some("net_bw") => "network",
        Some("disk_hog") => "disk",
        Some("blocking" | "load_spike") => "none",
        Some(k) => bail!("unknown fault kind {k:?}"),
    })
}

/// seer-agent's resource name -> the testbed's (as `Resource::testbed_name` maps them).
fn diagnosed_of(resource: Option<&str>) -> Result<&'static str> {
    Ok(match resource {
        None => "none",
        Some("cpu_int" | "cpu_fp") => "cpu",
        Some("l1i" | "l1d" | "l2" | "llc") => "llc",
        Some("memory_bandwidth") => "memory_bandwidth",
        Some("memory_capacity") => "memory_capacity",
        Some("network") => "network",
        Some("disk") => "disk",
        Some(r) => bail!("seer-agent named an unknown resource {r:?}"),
    })
}

const LABELS: [&str; 7] = [
    "cpu",
    "llc",
    "memory_bandwidth",
    "memory_capacity",
    "network",
    "disk",
    "none",
];

/// What the evaluation needs from a scenario file (a small line parser: xtask has no TOML).
#[derive(Debug, Default)]
struct Scn {
    path: PathBuf,
    stem: String,
    warmup_s: f64,
    fault_kind: Option<String>,
    fault_service: Option<String>,
    fault_start_s: f64,
    fault_duration_s: f64,
    fault_intensity: Option<f64>,
    victim: String,
    victim_host: String,
    victim_kind: String,
    /// `# eval.settle_s`: overrides `--settle` for this scenario.
    settle_s: Option<f64>,
}

fn parse_scenario(path: &Path) -> Result<Scn> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut s = Scn {
        path: path.to_path_buf(),
        stem: path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        warmup_s: 2.0,
        ..Scn::default()
    };
    // `# eval.KEY = VALUE` lines are comments to TOML: the evaluation's own settings.
    let mut victim = None;
    for l in text.lines().map(str::trim) {
        if let Some(v) = eval_comment(l, "victim") {
            victim = Some(v);
        }
        if let Some(v) = eval_comment(l, "settle_s") {
            s.settle_s = Some(v.parse().with_context(|| {
                format!("{}: eval.settle_s = {v:?} is not a number", path.display())
            })?);
        }
    }
    let doc: toml::Table = text
        .parse()
        .with_context(|| format!("{}: not valid TOML", path.display()))?;
    let num = |t: &toml::Table, k: &str| -> Option<f64> {
        match t.get(k)? {
            toml::Value::Float(f) => Some(*f),
            toml::Value::Integer(i) => Some(*i as f64),
            _ => None,
        }
    };
    let text_of = |t: &toml::Table, k: &str| t.get(k)?.as_str().map(str::to_string);
    let tables = |k: &str| -> Vec<toml::Table> {
        doc.get(k)
            .and_then(toml::Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_table().cloned()).collect())
            .unwrap_or_default()
    };
    if let Some(w) = doc
        .get("load")
        .and_then(toml::Value::as_table)
        .and_then(|l| num(l, "warmup_s"))
    {
        s.warmup_s = w;
    }
    let faults = tables("fault");
    if faults.len() > 1 {
        bail!(
            "{}: {} faults; an evaluation scenario has one (or none)",
            path.display(),
            faults.len()
        );
    }
    if let Some(f) = faults.first() {
        s.fault_kind = text_of(f, "kind");
        s.fault_service = text_of(f, "service");
        s.fault_start_s = num(f, "start_s").unwrap_or_default();
        s.fault_duration_s = num(f, "duration_s").unwrap_or_default();
        s.fault_intensity = num(f, "intensity");
    }
    let services = tables("service");
    s.victim = victim
        .or_else(|| s.fault_service.clone())
        .with_context(|| {
            format!(
                "{}: no `# eval.victim = \"NAME\"` line and no fault service",
                path.display()
            )
        })?;
    let v = services
        .iter()
        .find(|m| text_of(m, "name").as_ref() == Some(&s.victim))
        .with_context(|| format!("{}: victim {:?} is not a service", path.display(), s.victim))?;
    s.victim_host = text_of(v, "host").unwrap_or_default();
    s.victim_kind = text_of(v, "kind").unwrap_or_default();
    Ok(s)
}

/// The value of a `# eval.KEY = VALUE` line (quotes removed).
fn eval_comment(line: &str, key: &str) -> Option<String> {
    let v = line.strip_prefix("# eval.")?.strip_prefix(key)?;
    Some(unquote(v.trim_start().trim_start_matches('=').trim()))
}

fn unquote(v: &str) -> String {
    v.trim().trim_matches('"').to_string()
}

/// One diagnosis and what it said.
struct Trial {
    truth: &'static str,
    diagnosed: String,
    resource: Option<String>,
    confidence: f64,
    injected_ms: f64,
    budget_ms: f64,
    wall_ms: f64,
    protocol: Option<String>,
    reason: String,
    runq_wait: Option<f64>,
    /// The record's PMU-free signals, whole, and the quiet latency (us).
    signals: Value,
    baseline_us: f64,
    canary: Value,
    /// The memory reading (culprit CPU against the others), when one was taken.
    bandwidth: Value,
    llc: Value,
    /// The host's 1-minute load average before the diagnosis, and other testbeds running.
    load1: f64,
    others: Vec<String>,
    error: Option<String>,
}

/// 1-minute load average.
fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Testbed runs other than `mine` (`seer-tb-<run>`) with namespaces on this host: someone
/// else's faults and load would be measured too.
fn other_testbeds(mine: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let run = n
                .strip_prefix("seer-tb-")?
                .split(['-', '.'])
                .next()?
                .to_string();
            (format!("seer-tb-{run}") != mine).then(|| format!("seer-tb-{run}"))
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

fn diagnosis(a: &DiagnosisArgs) -> Result<()> {
    let root = util::root();
    let at = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            root.join(p)
        }
    };
    let (dir, out) = (at(&a.scenarios), at(&a.out));
    if a.trials == 0 {
        bail!("--trials must be at least 1");
    }
    if !a.no_build {
        util::step("build seer-agent and seer-testbed");
        if a.release {
            util::cargo(&["build", "--release", "-p", "seer-agent"])?;
            util::cargo(&["build", "-p", "seer-testbed"])?;
        } else {
            util::cargo(&["build", "-p", "seer-agent", "-p", "seer-testbed"])?;
        }
    }
    let agent = root.join(if a.release {
        "target/release/seer-agent"
    } else {
        "target/debug/seer-agent"
    });
    let testbed = root.join("target/debug/seer-testbed");
    for b in [&agent, &testbed] {
        if !b.is_file() {
            bail!("{} is missing: build it (or drop --no-build)", b.display());
        }
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut scns = Vec::new();
    for f in &files {
        let s = parse_scenario(f)?;
        if a.only.is_empty() || a.only.contains(&s.stem) {
            truth_of(s.fault_kind.as_deref())?;
            scns.push(s);
        }
    }
    if scns.is_empty() {
        bail!("no scenarios in {} (or none matched --only)", dir.display());
    }
    let started = Instant::now();
    let date = util::output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M:%S UTC"]))?;
    let n_scn = scns.len();
    let mut results: Vec<(Scn, Vec<Trial>, Option<String>)> = Vec::new();
    for (i, s) in scns.into_iter().enumerate() {
        util::step(&format!(
            "[{}/{}] {}: {} on {} ({}), truth {}",
            i + 1,
            n_scn,
            s.stem,
            s.fault_kind.as_deref().unwrap_or("no fault"),
            s.victim,
            s.victim_kind,
            truth_of(s.fault_kind.as_deref())?
        ));
        let t0 = Instant::now();
        let mut said = false;
        loop {
            let others = other_testbeds("");
            if others.is_empty() || t0.elapsed().as_secs() >= a.wait_others {
                if !others.is_empty() {
                    println!(
                        "  other testbeds still running ({}): going on",
                        others.join(" ")
                    );
                }
                break;
            }
            if !said {
                println!(
                    "  waiting up to {} s for other testbeds to finish: {}",
                    a.wait_others,
                    others.join(" ")
                );
                said = true;
            }
            std::thread::sleep(Duration::from_secs(2));
        }
        let (trials, note) = match one_scenario(&s, a, &agent, &testbed) {
            Ok(x) => x,
            Err(e) => {
                println!("  scenario failed: {e:#}");
                (Vec::new(), Some(format!("{e:#}")))
            }
        };
        results.push((s, trials, note));
    }
    let elapsed = started.elapsed();
    let cmdline = std::iter::once("cargo xtask eval diagnosis".to_string())
        .chain(std::env::args().skip(3))
        .collect::<Vec<_>>()
        .join(" ");
    std::fs::create_dir_all(&out)?;
    let (md, js) = report(&results, &cmdline, date.trim(), elapsed, a, &agent);
    std::fs::write(out.join("diagnosis.md"), md)?;
    std::fs::write(
        out.join("diagnosis.json"),
        serde_json::to_string_pretty(&js)? + "\n",
    )?;
    util::step(&format!(
        "wrote {} and {} ({:.0} s)",
        out.join("diagnosis.md").display(),
        out.join("diagnosis.json").display(),
        elapsed.as_secs_f64()
    ));
    print!(
        "{}",
        std::fs::read_to_string(out.join("diagnosis.md"))?
            .split("## Trials")
            .next()
            .unwrap_or("")
    );
    Ok(())
}

/// Runs one scenario's testbed, diagnoses its victim `trials` times while the fault is on.
fn one_scenario(
    s: &Scn,
    a: &DiagnosisArgs,
    agent: &Path,
    testbed: &Path,
) -> Result<(Vec<Trial>, Option<String>)> {
    let truth = truth_of(s.fault_kind.as_deref())?;
    // Long enough for the trials; the testbed is stopped as soon as they are done.
    let per_trial = 8.0;
    let need = s.settle_s.unwrap_or(a.settle) + a.trials as f64 * (per_trial + a.gap) + 5.0;
    let duration = if s.fault_kind.is_some() {
        if s.fault_duration_s < need {
            println!(
                "  note: the fault lasts {:.0} s; {} trials may need {need:.0} s (raise duration_s)",
                s.fault_duration_s, a.trials
            );
        }
        s.fault_start_s + s.fault_duration_s + 1.0
    } else {
        need + 3.0
    };
    let tmp = std::env::temp_dir().join(format!("seer-eval-diagnosis-{}", s.stem));
    let _ = std::fs::remove_dir_all(&tmp);
    let mut child = Command::new(testbed)
        .arg("run")
        .arg("--scenario")
        .arg(&s.path)
        .args(["--duration", &format!("{duration}")])
        .arg("--out")
        .arg(&tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", testbed.display()))?;
    let (tx, rx) = mpsc::channel::<String>();
    for r in [
        child
            .stdout
            .take()
            .map(|x| Box::new(x) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|x| Box::new(x) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(r).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    let mut netns = None;
    let mut fault_on = false;
    let mut fault_off = false;
    let mut load_at = None;
    let mut log = Vec::new();
    let t0 = Instant::now();
    // Until the fault is on (or, for the control, the load is past its warm-up).
    let ready = loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(l) => {
                note_line(&l, &mut netns, &mut fault_on, &mut fault_off, &mut load_at);
                println!("  | {l}");
                log.push(l);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break false,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if s.fault_kind.is_some() && fault_on {
            break true;
        }
        if s.fault_kind.is_none()
            && load_at.is_some_and(|t: Instant| t.elapsed().as_secs_f64() > s.warmup_s + 1.0)
        {
            break true;
        }
        if t0.elapsed() > Duration::from_secs_f64(s.fault_start_s + s.warmup_s + 60.0) {
            break false;
        }
    };
    let mut trials = Vec::new();
    let mut note = None;
    if !ready || netns.is_none() {
        note = Some(format!(
            "the testbed never got to the fault (last lines: {})",
            log.iter()
                .rev()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join(" / ")
        ));
    } else if let Some(host_ns) = netns
        .as_ref()
        .map(|base: &String| format!("{base}-{}", s.victim_host))
    {
        std::thread::sleep(Duration::from_secs_f64(s.settle_s.unwrap_or(a.settle)));
        for i in 0..a.trials {
            while let Ok(l) = rx.try_recv() {
                note_line(&l, &mut netns, &mut fault_on, &mut fault_off, &mut load_at);
                println!("  | {l}");
            }
            if fault_off {
                note = Some(format!(
                    "the fault ended after {i} of {} trials (raise its duration_s)",
                    a.trials
                ));
                break;
            }
            let t = diagnose_once(agent, &s.victim, &host_ns, &a.diagnose_args, truth)?;
            println!(
                "  trial {}/{}: diagnosed {:<16} (truth {truth}) {} conf {:.2}, injected {:.0}/{:.0} ms, {:.1} s, load {:.1}{}{}",
                i + 1,
                a.trials,
                t.diagnosed,
                if t.diagnosed == truth {
                    "RIGHT"
                } else {
                    "wrong"
                },
                t.confidence,
                t.injected_ms,
                t.budget_ms,
                t.wall_ms / 1e3,
                t.load1,
                if t.others.is_empty() {
                    String::new()
                } else {
                    format!(" [other testbeds running: {}]", t.others.join(" "))
                },
                t.error
                    .as_ref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_else(|| format!(": {}", t.reason))
            );
            trials.push(t);
            std::thread::sleep(Duration::from_secs_f64(a.gap));
        }
    }
    // SIGINT: the testbed tears down and exits 130.
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let stop = Instant::now();
    loop {
        if let Some(st) = child.try_wait()? {
            if !matches!(st.code(), Some(0 | 130)) {
                println!("  testbed exited {st}");
            }
            break;
        }
        if stop.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            println!("  testbed did not stop in 30 s: killed (run `cargo xtask testbed down`)");
            break;
        }
        while let Ok(l) = rx.try_recv() {
            println!("  | {l}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok((trials, note))
}

fn note_line(
    l: &str,
    netns: &mut Option<String>,
    on: &mut bool,
    off: &mut bool,
    load_at: &mut Option<Instant>,
) {
    if let Some(d) = l.split("run dir ").nth(1) {
        // `/run/seer-testbed/seer-tb-<run>`: host namespaces are `seer-tb-<run>-<host>`.
        *netns = d.trim().rsplit('/').next().map(str::to_string);
    }
    if l.starts_with("[fault 0]") && l.ends_with(" starts") {
        *on = true;
    }
    if l.starts_with("[fault 0]") && l.ends_with(" ends") {
        *off = true;
    }
    if l.contains("] load: ") && load_at.is_none() {
        *load_at = Some(Instant::now());
    }
}

fn diagnose_once(
    agent: &Path,
    victim: &str,
    netns: &str,
    extra: &[String],
    truth: &'static str,
) -> Result<Trial> {
    let t0 = Instant::now();
    let out = Command::new(agent)
        .args(["diagnose", victim, "--json", "--netns", netns])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", agent.display()))?;
    let wall_ms = t0.elapsed().as_secs_f64() * 1e3;
    let mut t = Trial {
        truth,
        diagnosed: "error".into(),
        resource: None,
        confidence: 0.0,
        injected_ms: 0.0,
        budget_ms: 0.0,
        wall_ms,
        protocol: None,
        reason: String::new(),
        runq_wait: None,
        signals: Value::Null,
        baseline_us: 0.0,
        canary: Value::Null,
        bandwidth: Value::Null,
        llc: Value::Null,
        load1: load1(),
        others: other_testbeds(netns.rsplit_once('-').map_or(netns, |x| x.0)),
        error: None,
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    if wall_ms > 10_000.0 {
        // Slow diagnoses say where their time went (the agent logs each phase).
        println!(
            "  slow diagnosis ({:.0} s), its log:\n{}",
            wall_ms / 1e3,
            stderr
                .lines()
                .map(|l| format!("  | {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    if !out.status.success() {
        t.error = Some(
            stderr
                .lines()
                .rfind(|l| l.starts_with("seer-agent:"))
                .unwrap_or(stderr.trim())
                .to_string(),
        );
        return Ok(t);
    }
    let r: Value = match serde_json::from_slice(&out.stdout) {
        Ok(v) => v,
        Err(e) => {
            t.error = Some(format!("no JSON record ({e})"));
            return Ok(t);
        }
    };
    t.resource = r["resource"].as_str().map(str::to_string);
    t.diagnosed = diagnosed_of(t.resource.as_deref())?.into();
    t.confidence = r["confidence"].as_f64().unwrap_or(0.0);
    t.injected_ms = r["evidence"]["injected_ms"].as_f64().unwrap_or(0.0);
    t.budget_ms = r["evidence"]["budget_ms"].as_f64().unwrap_or(0.0);
    t.protocol = r["evidence"]["probe"]["protocol"]
        .as_str()
        .map(str::to_string);
    t.reason = r["reason"].as_str().unwrap_or("").to_string();
    t.runq_wait = r["evidence"]["signals"]["runq_wait_ratio"].as_f64();
    t.signals = r["evidence"]["signals"].clone();
    t.baseline_us = r["evidence"]["baseline_us"].as_f64().unwrap_or(0.0);
    t.canary = r["evidence"]["canary"].clone();
    t.bandwidth = r["evidence"]["bandwidth"].clone();
    t.llc = r["evidence"]["llc"].clone();
    Ok(t)
}

fn pct(n: usize, d: usize) -> String {
    if d == 0 {
        "-".into()
    } else {
        format!("{:.0}%", 100.0 * n as f64 / d as f64)
    }
}

fn report(
    results: &[(Scn, Vec<Trial>, Option<String>)],
    cmdline: &str,
    date: &str,
    elapsed: Duration,
    a: &DiagnosisArgs,
    agent: &Path,
) -> (String, Value) {
    let mut cols: Vec<String> = LABELS.iter().map(|s| s.to_string()).collect();
    cols.push("error".into());
    let all: Vec<&Trial> = results.iter().flat_map(|r| r.1.iter()).collect();
    let right = all.iter().filter(|t| t.diagnosed == t.truth).count();
    let with_res: Vec<&&Trial> = all.iter().filter(|t| t.truth != "none").collect();
    let right_res = with_res.iter().filter(|t| t.diagnosed == t.truth).count();
    let inj: Vec<f64> = all
        .iter()
        .filter(|t| t.error.is_none())
        .map(|t| t.injected_ms)
        .collect();
    let inj_mean = inj.iter().sum::<f64>() / inj.len().max(1) as f64;
    let inj_max = inj.iter().copied().fold(0.0, f64::max);
    let budget = all.iter().map(|t| t.budget_ms).fold(0.0, f64::max);
    let wall_mean = all.iter().map(|t| t.wall_ms).sum::<f64>() / all.len().max(1) as f64;
    let host = |c: &str, args: &[&str]| {
        util::output(Command::new(c).args(args))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let (kernel, cpus) = (host("uname", &["-r"]), host("nproc", &[]));
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Diagnosis accuracy on the testbed (public-cloud mode)\n"
    );
    let _ = writeln!(
        md,
        "Generated by `{cmdline}` on {date}, {:.0} s; {cpus} CPUs, kernel {kernel}; agent `{}`; \
         {} trials per scenario.\n",
        elapsed.as_secs_f64(),
        agent.strip_prefix(util::root()).unwrap_or(agent).display(),
        a.trials
    );
    let _ = writeln!(
        md,
        "Each scenario (`{}`) runs the testbed with real servers and real load and one fault \
         on one victim (or none); while the fault is on, `seer-agent diagnose VICTIM --json \
         --netns <victim's host namespace>` runs once per trial{}. Truth is the injector's \
         resource for the fault; faults of no shared resource (blocking bug, load spike) and the \
         control are right when the diagnosis names none. `error` = the diagnosis failed. The \
         victim's quiet latency is what the diagnosis's own probe measured between bursts \
         (median over the trials): compare it with the control's to see whether a fault slowed \
         the victim at all. Analysis and this host's limits: `eval/diagnosis/README.md`.\n",
        a.scenarios.display(),
        if a.diagnose_args.is_empty() {
            String::new()
        } else {
            format!(" (extra arguments: `{}`)", a.diagnose_args.join(" "))
        }
    );
    let _ = writeln!(
        md,
        "**Overall: {right}/{} = {} correct** (target >= 90%); faults with a shared resource \
         only: {right_res}/{} = {}.\n",
        all.len(),
        pct(right, all.len()),
        with_res.len(),
        pct(right_res, with_res.len())
    );
    let _ = writeln!(
        md,
        "Injected microbenchmark time per diagnosis: mean {inj_mean:.1} ms, max {inj_max:.0} ms \
         (budget {budget:.0} ms); wall time per diagnosis (process start to exit) {:.2} s.\n",
        wall_mean / 1e3
    );
    let loads: Vec<f64> = all.iter().map(|t| t.load1).collect();
    let contaminated = all.iter().filter(|t| !t.others.is_empty()).count();
    let _ = writeln!(
        md,
        "Host load (1-min load average) before each diagnosis: min {:.1}, mean {:.1}, max {:.1}; \
         diagnoses made while another testbed ran on this host: {contaminated}/{}.\n",
        loads.iter().copied().fold(f64::INFINITY, f64::min),
        loads.iter().sum::<f64>() / loads.len().max(1) as f64,
        loads.iter().copied().fold(0.0, f64::max),
        all.len()
    );
    let _ = writeln!(md, "## Per fault\n");
    let _ = writeln!(
        md,
        "| scenario | fault | intensity | victim | truth | correct | diagnosed (count) | probe | victim's quiet latency (median, us) |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|");
    let mut per = Vec::new();
    for (s, ts, note) in results {
        let truth = truth_of(s.fault_kind.as_deref()).unwrap_or("?");
        let ok = ts.iter().filter(|t| t.diagnosed == truth).count();
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for t in ts {
            *counts.entry(t.diagnosed.as_str()).or_default() += 1;
        }
        let got = counts
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ");
        let probes: Vec<&str> = {
            let mut p: Vec<&str> = ts.iter().filter_map(|t| t.protocol.as_deref()).collect();
            p.sort_unstable();
            p.dedup();
            p
        };
        let mut lat: Vec<f64> = ts
            .iter()
            .filter(|t| t.error.is_none())
            .map(|t| t.baseline_us)
            .collect();
        lat.sort_by(f64::total_cmp);
        let lat = lat.get(lat.len() / 2).copied();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} ({}) | {truth} | {ok}/{} = {} | {got}{} | {} | {} |",
            s.stem,
            s.fault_kind.as_deref().unwrap_or("none (control)"),
            s.fault_intensity.map_or("-".into(), |i| i.to_string()),
            s.victim,
            s.victim_kind,
            ts.len(),
            pct(ok, ts.len()),
            note.as_ref().map(|n| format!(" ({n})")).unwrap_or_default(),
            probes.join(", "),
            lat.map_or("-".into(), |l| format!("{l:.0}"))
        );
        per.push(json!({
            "scenario": s.stem,
            "fault": s.fault_kind,
            "intensity": s.fault_intensity,
            "victim": s.victim,
            "victim_kind": s.victim_kind,
            "truth": truth,
            "victim_quiet_latency_us": lat,
            "correct": ok,
            "trials": ts.len(),
            "note": note,
            "results": ts.iter().map(|t| json!({
                "diagnosed": t.diagnosed,
                "resource": t.resource,
                "confidence": t.confidence,
                "injected_ms": t.injected_ms,
                "budget_ms": t.budget_ms,
                "wall_ms": t.wall_ms,
                "probe": t.protocol,
                "runq_wait_ratio": t.runq_wait,
                "reason": t.reason,
                "error": t.error,
                "signals": t.signals,
                "baseline_us": t.baseline_us,
                "canary": t.canary,
                "bandwidth": t.bandwidth,
                "llc": t.llc,
                "load1": t.load1,
                "other_testbeds": t.others,
            })).collect::<Vec<_>>(),
        }));
    }
    let _ = writeln!(
        md,
        "\n## Confusion matrix (rows: truth, columns: diagnosed)\n"
    );
    let _ = writeln!(md, "| truth \\ diagnosed | {} |", cols.join(" | "));
    let _ = writeln!(md, "|---|{}", "---|".repeat(cols.len()));
    let mut matrix = serde_json::Map::new();
    for t in LABELS {
        let row: Vec<usize> = cols
            .iter()
            .map(|c| {
                all.iter()
                    .filter(|x| x.truth == t && &x.diagnosed == c)
                    .count()
            })
            .collect();
        if row.iter().sum::<usize>() == 0 {
            continue;
        }
        let _ = writeln!(
            md,
            "| **{t}** | {} |",
            row.iter()
                .zip(&cols)
                .map(|(n, c)| if c == t {
                    format!("**{n}**")
                } else {
                    n.to_string()
                })
                .collect::<Vec<_>>()
                .join(" | ")
        );
        matrix.insert(
            t.into(),
            Value::Object(
                cols.iter()
                    .zip(&row)
                    .map(|(c, n)| (c.clone(), json!(n)))
                    .collect(),
            ),
        );
    }
    let _ = writeln!(md, "\n## Trials\n");
    let _ = writeln!(
        md,
        "| scenario | # | diagnosed | resource | confidence | injected ms | run-queue wait | load | reason or error |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|");
    for (s, ts, _) in results {
        for (i, t) in ts.iter().enumerate() {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {:.2} | {:.0} | {} | {:.1}{} | {} |",
                s.stem,
                i + 1,
                t.diagnosed,
                t.resource.as_deref().unwrap_or("-"),
                t.confidence,
                t.injected_ms,
                t.runq_wait
                    .map_or("-".into(), |w| format!("{:.0}%", w * 100.0)),
                t.load1,
                if t.others.is_empty() {
                    ""
                } else {
                    " (+other testbed)"
                },
                t.error.as_deref().unwrap_or(&t.reason).replace('|', "/")
            );
        }
    }
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let js = json!({
        "command": cmdline,
        "date": date,
        "unix_s": ts,
        "elapsed_s": elapsed.as_secs_f64(),
        "cpus": cpus,
        "kernel": kernel,
        "agent": agent.display().to_string(),
        "trials_per_scenario": a.trials,
        "diagnose_args": a.diagnose_args,
        "overall": { "correct": right, "total": all.len(), "target": 0.9 },
        "with_resource": { "correct": right_res, "total": with_res.len() },
        "injected_ms": { "mean": inj_mean, "max": inj_max, "budget": budget },
        "labels": cols,
        "confusion": matrix,
        "scenarios": per,
    });
    (md, js)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_lines_and_labels() {
        let dir = std::env::temp_dir().join(format!("xtask-eval-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let p = dir.join("x.toml");
        std::fs::write(
            &p,
            "name = \"x\"\n# eval.victim = \"cache\"\n[load]\nwarmup_s = 3.0 # s\n\
             [[service]]\nname = \"cache\"\nkind = \"memcached\"\nhost = \"data\"\n\
             [[fault]]\nkind = \"load_spike\"\nstart_s = 4\nduration_s = 60\nintensity = 3.0\n",
        )
        .expect("write");
        let s = parse_scenario(&p).expect("parse");
        assert_eq!(
            (s.victim.as_str(), s.victim_host.as_str(), s.warmup_s),
            ("cache", "data", 3.0)
        );
        assert_eq!(s.fault_kind.as_deref(), Some("load_spike"));
        assert_eq!(truth_of(s.fault_kind.as_deref()).expect("kind"), "none");
        assert_eq!(truth_of(Some("cache_hog")).expect("kind"), "llc");
        assert!(truth_of(Some("gpu_hog")).is_err());
        assert_eq!(diagnosed_of(Some("l2")).expect("res"), "llc");
        assert_eq!(diagnosed_of(None).expect("res"), "none");
        // A second fault, and bad TOML, are errors that name the file.
        std::fs::write(&p, "[[fault]]\nkind = \"a\"\n[[fault]]\nkind = \"b\"\n").expect("write");
        assert!(format!("{:#}", parse_scenario(&p).unwrap_err()).contains("2 faults"));
        std::fs::write(&p, "name = \n").expect("write");
        assert!(format!("{:#}", parse_scenario(&p).unwrap_err()).contains("not valid TOML"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Every shipped evaluation scenario reads: its victim is one of its services, and its
    /// fault (none for a control) is the one its file name names.
    #[test]
    fn shipped_evaluation_scenarios_read() {
        let dir = util::root().join("eval/diagnosis");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).expect("eval/diagnosis") {
            let p = e.expect("entry").path();
            if p.extension().is_none_or(|x| x != "toml") {
                continue;
            }
            let s = parse_scenario(&p).unwrap_or_else(|e| panic!("{}: {e:#}", p.display()));
            assert!(!s.victim_host.is_empty(), "{}: victim's host", p.display());
            if let Some(k) = &s.fault_kind {
                assert!(s.stem.contains(k.as_str()), "{}: fault {k}", p.display());
                assert!(s.fault_duration_s > 0.0, "{}", p.display());
            }
            n += 1;
        }
        assert!(n >= 10, "{n} scenarios in {}", dir.display());
    }
}
