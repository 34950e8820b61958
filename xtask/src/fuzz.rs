//! `cargo xtask fuzz [--seconds N] [TARGET...]`: the cargo-fuzz targets in `fuzz/` (see
//! `fuzz/README.md`), one after another, each for N seconds; then, per target, the inputs run
//! and whether libFuzzer wrote a crash, timeout or out-of-memory artifact. Fails if one did.
use std::{
    collections::BTreeSet,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use crate::util;

#[derive(clap::Args)]
pub struct Fuzz {
    /// Seconds per target (libFuzzer's -max_total_time).
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Targets to run, in this order (default: every target of fuzz/Cargo.toml).
    targets: Vec<String>,
}

/// libFuzzer dictionaries (in `fuzz/`) of the targets that read a text protocol or format.
const DICTS: &[(&str, &str)] = &[
    ("probe_http", "probe.dict"),
    ("probe_memcached", "probe.dict"),
    ("probe_resp", "probe.dict"),
    ("api_query", "api.dict"),
    ("agent_config", "config.dict"),
];

/// A single input that runs longer than this is reported as a `timeout-*` artifact.
const TIMEOUT_S: u32 = 10;

struct Outcome {
    target: String,
    seconds: f64,
    runs: Option<u64>,
    /// Artifacts (crash-*, timeout-*, oom-*, leak-*, slow-unit-*) this run wrote.
    artifacts: Vec<PathBuf>,
    /// The fuzzer's exit status when it was not a success.
    failed: Option<String>,
}

pub fn run(a: Fuzz) -> Result<()> {
    let root = util::root();
    let fuzz_dir = root.join("fuzz");
    tools()?;
    let all = list(&root)?;
    let targets = if a.targets.is_empty() {
        all
    } else {
        if let Some(t) = a.targets.iter().find(|t| !all.contains(t)) {
            bail!(
                "no fuzz target {t:?}; fuzz/Cargo.toml has: {}",
                all.join(", ")
            );
        }
        a.targets
    };
    util::step("build the fuzz targets (cargo +nightly fuzz build)");
    util::cargo(&["+nightly", "fuzz", "build"])?;
    let logs = fuzz_dir.join("target/xtask-logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let mut outcomes = Vec::new();
    for t in &targets {
        util::step(&format!("fuzz {t} for {} s", a.seconds));
        outcomes.push(one(&root, t, a.seconds, &logs.join(format!("{t}.log")))?);
    }
    util::step("fuzz summary");
    println!("{:<18} {:>8} {:>14}  result", "target", "seconds", "runs");
    let mut bad = 0;
    for o in &outcomes {
        let runs = o.runs.map_or_else(|| "?".into(), |r| r.to_string());
        let result = if !o.artifacts.is_empty() {
            let names: Vec<String> = o
                .artifacts
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            format!("FOUND {}", names.join(", "))
        } else if let Some(f) = &o.failed {
            format!("FAILED ({f}, no artifact)")
        } else {
            "ok, no crash or timeout".into()
        };
        if !o.artifacts.is_empty() || o.failed.is_some() {
            bad += 1;
        }
        println!("{:<18} {:>8.0} {:>14}  {result}", o.target, o.seconds, runs);
    }
    println!("(full fuzzer output: {})", logs.display());
    if bad > 0 {
        bail!(
            "{bad} of {} fuzz targets failed; reproduce one with `cargo +nightly fuzz run TARGET ARTIFACT`",
            outcomes.len()
        );
    }
    Ok(())
}

/// cargo-fuzz and the nightly toolchain (libFuzzer's sanitizer flags need nightly).
fn tools() -> Result<()> {
    let nightly = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !nightly {
        bail!(
            "the nightly toolchain is missing: install it with `rustup toolchain install nightly`"
        );
    }
    let fuzz = nightly_cargo(&util::root())
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !fuzz {
        bail!("cargo-fuzz is missing: install it with `cargo install cargo-fuzz`");
    }
    Ok(())
}

/// `cargo +nightly` through the rustup proxy (see `util::cargo_in`).
fn nightly_cargo(dir: &Path) -> Command {
    let mut c = Command::new("cargo");
    c.arg("+nightly")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .current_dir(dir);
    c
}

fn list(root: &Path) -> Result<Vec<String>> {
    let out = util::output(nightly_cargo(root).args(["fuzz", "list"]))?;
    Ok(out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

fn artifacts(dir: &Path) -> BTreeSet<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// One target for `seconds`: its output goes to `log`, and its progress lines to the terminal.
fn one(root: &Path, target: &str, seconds: u64, log: &Path) -> Result<Outcome> {
    let art_dir = root.join("fuzz/artifacts").join(target);
    let before = artifacts(&art_dir);
    let mut args = vec![
        "fuzz".to_string(),
        "run".into(),
        target.into(),
        "--".into(),
        format!("-max_total_time={seconds}"),
        format!("-timeout={TIMEOUT_S}"),
        "-print_final_stats=1".into(),
    ];
    if let Some((_, d)) = DICTS.iter().find(|(t, _)| *t == target) {
        args.push(format!("-dict={}", root.join("fuzz").join(d).display()));
    }
    let mut cmd = nightly_cargo(root);
    cmd.args(&args)
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped());
    println!("cargo +nightly {}", args.join(" "));
    let mut file =
        std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .context("cannot start cargo +nightly fuzz run")?;
    let stderr = child.stderr.take().context("fuzzer stderr")?;
    let (mut units, mut last_pulse) = (None, None);
    for line in BufReader::new(stderr).lines() {
        let line = line.context("reading the fuzzer's output")?;
        writeln!(file, "{line}").with_context(|| format!("writing {}", log.display()))?;
        if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
            units = n.trim().parse().ok();
        }
        if let Some(n) = line
            .strip_prefix('#')
            .and_then(|l| l.split_whitespace().next())
        {
            last_pulse = n.parse().ok().or(last_pulse);
        }
        // New coverage is reported many times a second: the log has it, the terminal not.
        let noisy =
            line.starts_with('#') && (line.contains("\tNEW ") || line.contains("\tREDUCE "));
        if !noisy {
            println!("{line}");
        }
    }
    let status = child.wait().context("waiting for the fuzzer")?;
    let seconds = start.elapsed().as_secs_f64();
    let after = artifacts(&art_dir);
    Ok(Outcome {
        target: target.into(),
        seconds,
        runs: units.or(last_pulse),
        artifacts: after.difference(&before).cloned().collect(),
        failed: (!status.success()).then(|| status.to_string()),
    })
}
