//! `cargo xtask eval closed-loop --scenario FILE [--trials N]`: the same testbed scenario (same
//! seed, fault schedule and load) run three ways, one after the other:
//! - `none`: no seer;
//! - `reactive`: seer's agent on every host with prediction off (`--no-predict`), acting
//!   (`--mode enforce`) only once it has seen the QoS break, as an autoscaler or a threshold
//!   alert would;
//! - `proactive`: the agent with the shipped model, acting on its alarms.
//!
//! Both agent ways watch the scenario's QoS (its nginx front end and `target_p99_ms`). Each
//! run's ground truth (violations, windows, faults) comes from the testbed, the actions from
//! the agents' stores (`seer-agent query actions --json`). `eval/closed-loop/report.py`
//! scores the ways against each other and writes `eval/closed-loop/REPORT.md` and one plot per
//! scenario (end-to-end p99 over time, the three ways on one timeline), and prints the last
//! line `closed-loop: avoided_pct=.. time_in_violation_ratio_reactive_over_proactive=..
//! unnecessary_actions_per_10min=..`.
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use clap::Args;

use crate::util;

#[derive(Args)]
pub struct ClosedLoopArgs {
    /// Testbed scenario files (repeatable); one with an nginx front end and a [qos] target.
    #[arg(long, required = true)]
    scenario: Vec<PathBuf>,
    /// Runs of each way per scenario.
    #[arg(long, default_value_t = 1)]
    trials: usize,
    /// Seconds of judged load per run (default: to the end of the scenario's last fault plus
    /// 15 s, at least 60).
    #[arg(long)]
    duration: Option<f64>,
    /// Where the runs go (each run's testbed output, kept for the report).
    #[arg(long, default_value = "target/closed-loop")]
    runs: PathBuf,
    /// Only score the runs already in --runs (no testbed).
    #[arg(long)]
    report_only: bool,
}

const WAYS: [&str; 3] = ["none", "reactive", "proactive"];

/// The front end (the scenario's nginx) and the QoS target, as the agent's `--qos` takes them.
fn qos_of(sc: &toml::Value) -> Result<(String, f64)> {
    let target = sc
        .get("qos")
        .and_then(|q| q.get("target_p99_ms"))
        .and_then(|t| t.as_float().or(t.as_integer().map(|i| i as f64)))
        .context("no [qos] target_p99_ms")?;
    let front = sc
        .get("service")
        .and_then(|s| s.as_array())
        .into_iter()
        .flatten()
        .filter(|s| s.get("kind").and_then(|k| k.as_str()) == Some("nginx"))
        .filter_map(|s| s.get("name").and_then(|n| n.as_str()))
        .next_back()
        .context("no nginx front end")?;
    Ok((front.to_string(), target))
}

/// Judged seconds: past the last fault's end by 15 s.
fn duration_of(sc: &toml::Value) -> f64 {
    let end = sc
        .get("fault")
        .and_then(|f| f.as_array())
        .into_iter()
        .flatten()
        .map(|f| {
            let n = |k: &str| {
                f.get(k)
                    .and_then(|v| v.as_float().or(v.as_integer().map(|i| i as f64)))
                    .unwrap_or(0.0)
            };
            n("start_s") + n("duration_s")
        })
        .fold(0.0, f64::max);
    (end + 15.0).max(60.0)
}

fn one_run(scenario: &Path, way: &str, out: &Path, duration: f64, qos: &str) -> Result<()> {
    let release = util::root().join("target/release");
    let agent = release.join("seer-agent");
    let mut c = std::process::Command::new(release.join("seer-testbed"));
    c.args(["run", "--scenario"])
        .arg(scenario)
        .args(["--duration", &duration.to_string(), "--out"])
        .arg(out);
    match way {
        "none" => {}
        _ => {
            c.arg("--agent-bin").arg(&agent);
            let mut args = vec![format!("--qos={qos}"), "--mode=enforce".to_string()];
            if way == "reactive" {
                args.push("--no-predict".into());
            }
            for a in args {
                c.arg(format!("--agent-arg={a}"));
            }
        }
    }
    util::run(&mut c)?;
    // The actions each host's agent took, from its store.
    let mut all = Vec::new();
    for e in std::fs::read_dir(out)? {
        let p = e?.path();
        let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if let Some(host) = name
            .strip_prefix("agent-")
            .and_then(|n| n.strip_suffix(".redb"))
        {
            let o = std::process::Command::new(&agent)
                .args(["query", "--json", "--db"])
                .arg(&p)
                .arg("actions")
                .output()
                .context("seer-agent query actions")?;
            if !o.status.success() {
                bail!(
                    "seer-agent query actions --db {}: {}",
                    p.display(),
                    String::from_utf8_lossy(&o.stderr)
                );
            }
            let v: serde_json::Value = serde_json::from_slice(&o.stdout)
                .with_context(|| format!("actions of {}", p.display()))?;
            all.push(serde_json::json!({"host": host, "actions": v}));
        }
    }
    std::fs::write(
        out.join("actions.json"),
        serde_json::to_string_pretty(&all)?,
    )?;
    Ok(())
}

pub fn run(a: &ClosedLoopArgs) -> Result<()> {
    let runs = util::root().join(&a.runs);
    if !a.report_only {
        util::step("build (release)");
        util::cargo(&[
            "build",
            "--release",
            "-p",
            "seer-agent",
            "-p",
            "seer-testbed",
        ])?;
        for scenario in &a.scenario {
            let text = std::fs::read_to_string(scenario)
                .with_context(|| format!("reading {}", scenario.display()))?;
            let sc: toml::Value =
                toml::from_str(&text).with_context(|| format!("parsing {}", scenario.display()))?;
            let (front, target) = qos_of(&sc).with_context(|| scenario.display().to_string())?;
            let qos = format!("{front}:{target}");
            let duration = a.duration.unwrap_or_else(|| duration_of(&sc));
            let stem = scenario
                .file_stem()
                .and_then(|s| s.to_str())
                .context("scenario file name")?;
            for trial in 1..=a.trials {
                for way in WAYS {
                    let out = runs.join(stem).join(format!("{way}-{trial}"));
                    let _ = std::fs::remove_dir_all(&out);
                    util::step(&format!(
                        "{stem}: {way}, trial {trial}/{} ({duration:.0} s of load; QoS {qos})",
                        a.trials
                    ));
                    one_run(scenario, way, &out, duration, &qos)?;
                }
            }
        }
    }
    util::step("report");
    let py = crate::setup::train_venv()?;
    util::run(
        std::process::Command::new(py)
            .arg(util::root().join("eval/closed-loop/report.py"))
            .arg("--runs")
            .arg(&runs)
            .arg("--out")
            .arg(util::root().join("eval/closed-loop")),
    )
}
