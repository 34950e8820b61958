//! `cargo xtask ...`: set up a fresh machine, build, run, test and benchmark seer.
mod bench;
mod closed_loop;
mod corpus;
mod demo;
mod eval;
mod fuzz;
mod kernels;
mod setup;
mod testbed;
mod util;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "seer's developer commands")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what is missing: nightly rust-src, bpf-linker, Debian packages. Idempotent.
    Setup,
    /// Build the agent (release) with its eBPF programs.
    Build,
    /// Set up, build, and run the agent on this host with its defaults and the live view.
    /// Arguments after `--` go to `seer-agent run`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Watch seer predict: a small application with a slow fault (the cache's CPU ramped
    /// down) and the agent's live view with the model on; everything is torn down at the end
    /// or on Ctrl-C.
    Demo,
    /// Set up, then fmt, clippy (-D warnings, host and eBPF crates) and every test.
    Test {
        /// Extra arguments for cargo nextest (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Benchmarks that print their figures (not tests).
    Bench {
        #[command(subcommand)]
        which: bench::Bench,
    },
    /// The multi-tier microservices testbed: up, down, run (load + faults + ground truth), check.
    Testbed {
        /// `seer-testbed` arguments: `up --scenario F`, `down`, `check F`,
        /// `run --scenario F --duration S --out DIR [--agent-bin target/debug/seer-agent]`
        /// (see `seer-testbed/README.md`; relative paths are from where you run cargo).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        args: Vec<String>,
    },
    /// The model's training corpus: testbed scenarios over shipped and generated topologies,
    /// run with the agent on every host, into ~/.cache/seer/corpus (resumable; runs in the
    /// background while other work goes on). Arguments go to `seer-testbed corpus`
    /// (--seed, --runs, --max-runs, --plan-only, --out).
    Corpus {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Train a model on the corpus in the training venv (created by setup, outside the repo):
    /// `python -m seer_models.train --corpus ~/.cache/seer/corpus ARGS` (--net graph|hybrid|cnn|lstm,
    /// --horizon-ms, --t-len, --epochs, --device cuda, --out models/NAME; see --help).
    Train {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Evaluations that write reports (`eval diagnosis`: reports/diagnosis.{md,json}).
    Eval {
        #[command(subcommand)]
        which: eval::Eval,
    },
    /// Run the cargo-fuzz targets in fuzz/ (nightly, cargo-fuzz) one after another: runs
    /// executed and any crash or timeout found per target; fails if one was found.
    Fuzz(fuzz::Fuzz),
    /// Boot Debian's 5.10, 6.1 and 6.12 kernels under QEMU and run the agent's selftest inside.
    Kernels,
    /// The agent in enforce mode for M minutes beside a loaded nginx -> memcached stack, with
    /// random CPU faults, Alertmanager restarts and kills (-9, TERM); checks RSS and descriptors,
    /// tick time, lost ticks, alert delivery and that the host is left as found. The test
    /// command runs 2 minutes of it.
    Soak {
        #[arg(long, default_value_t = 60.0)]
        minutes: f64,
        /// Seed of the random schedule (faults, kills, restarts).
        #[arg(long, default_value_t = 24301)]
        seed: u64,
    },
    /// Regenerate the bindgen offsets fixture for the running kernel (needs bindgen-cli).
    BindgenOffsets,
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Setup => setup::setup(),
        Cmd::Build => {
            setup::setup()?;
            util::cargo(&["build", "--release", "-p", "seer-agent"])
        }
        Cmd::Run { args } => {
            setup::setup()?;
            util::cargo(&["build", "--release", "-p", "seer-agent"])?;
            let mut full = vec!["run".to_string()];
            full.extend(args);
            util::exec(util::root().join("target/release/seer-agent"), &full)
        }
        Cmd::Test { args } => test(&args),
        Cmd::Demo => {
            setup::setup()?;
            demo::run()
        }
        Cmd::Bench { which } => bench::run(which),
        Cmd::Testbed { args } => {
            setup::setup()?;
            testbed::run(&args)
        }
        Cmd::Corpus { args } => {
            setup::setup()?;
            corpus::run(&args)
        }
        Cmd::Train { args } => {
            setup::setup()?;
            let py = setup::train_venv()?;
            let args = util::with_default(
                args,
                "--corpus",
                corpus::default_dir().display().to_string(),
            );
            let mut full: Vec<String> = vec!["-m".into(), "seer_models.train".into()];
            full.extend(args);
            util::run(models_python(&py).args(&full))
        }
        Cmd::Eval { which } => eval::run(which),
        Cmd::Fuzz(a) => fuzz::run(a),
        Cmd::Kernels => {
            setup::setup()?;
            kernels::kernels()
        }
        Cmd::BindgenOffsets => setup::bindgen_offsets(),
        Cmd::Soak { minutes, seed } => {
            setup::setup()?;
            util::cargo(&["build", "--bins"])?;
            soak(minutes, seed)
        }
    }
}

fn test(extra: &[String]) -> Result<()> {
    // Machines of this kind do not all run the same kernel build: say which one this ran on.
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("kernel: {} (uname -r)", release.trim());
    setup::setup()?;
    util::step("cargo fmt --check");
    util::cargo(&["fmt", "--all", "--check"])?;
    util::step("clippy (host crates, -D warnings)");
    util::cargo(&["clippy", "--all-targets", "--", "-D", "warnings"])?;
    util::step("clippy (eBPF crate, bpfel-unknown-none, -D warnings)");
    util::cargo_in(
        &util::root().join("seer-ebpf"),
        &[
            "+nightly",
            "clippy",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--release",
            "--",
            "-D",
            "warnings",
            "-C",
            "panic=abort",
        ],
    )?;
    // The model side first: quick, and a broken training or export fails early.
    let models = if extra.is_empty() {
        model_tests()
    } else {
        Ok(())
    };
    util::step("build binaries used by the integration tests");
    util::cargo(&["build", "--bins"])?;
    util::step("tests");
    let tests = if util::have("cargo-nextest") {
        let junit = util::root().join("target/nextest/default/junit.xml");
        let _ = std::fs::remove_file(&junit);
        let mut a = vec!["nextest", "run", "--no-fail-fast"];
        a.extend(extra.iter().map(String::as_str));
        util::cargo(&a).and(skips(&junit))
    } else {
        println!("cargo-nextest is not installed: using cargo test");
        let mut a = vec!["test", "--no-fail-fast"];
        a.extend(extra.iter().map(String::as_str));
        util::cargo(&a)
    };
    // The same agent on other kernels, and 2 minutes of the soak (skipped when a test filter
    // was given).
    let (matrix, soaked) = if extra.is_empty() {
        (kernels::kernels(), soak(2.0, 24301))
    } else {
        (Ok(()), Ok(()))
    };
    tests.and(models).and(matrix).and(soaked)
}

/// The training venv's python, run in models/ (so `seer_models` imports).
pub fn models_python(py: &std::path::Path) -> std::process::Command {
    let mut c = std::process::Command::new(py);
    c.current_dir(util::root())
        .env("PYTHONPATH", util::root().join("models"));
    c
}

/// The model side's tests: training smoke test, export parity, cards (models/tests).
fn model_tests() -> Result<()> {
    util::step("model tests (pytest in the training venv)");
    let py = setup::train_venv()?;
    util::run(models_python(&py).args([
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "models/tests",
    ]))
}

/// The tests that printed SKIP (from nextest's JUnit report): listed where a green run shows
/// them, and an error as root (CI on this machine kind must run everything).
fn skips(junit: &std::path::Path) -> Result<()> {
    let xml = std::fs::read_to_string(junit).unwrap_or_default();
    let attr = |tag: &str, name: &str| -> String {
        tag.split(&format!("{name}=\""))
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("")
            .to_string()
    };
    let mut skipped = Vec::new();
    for case in xml.split("<testcase ").skip(1) {
        let body = case.split("</testcase>").next().unwrap_or(case);
        if let Some(line) = body.lines().find(|l| l.trim_start().starts_with("SKIP")) {
            let head = body.split('>').next().unwrap_or("");
            skipped.push(format!(
                "{} {}: {}",
                attr(head, "classname"),
                attr(head, "name"),
                line.trim()
            ));
        }
    }
    if skipped.is_empty() {
        println!("skipped tests: none");
        return Ok(());
    }
    println!("skipped tests ({}):", skipped.len());
    for s in &skipped {
        println!("  {s}");
    }
    // The effective uid, second on /proc/self/status' Uid line.
    let euid = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_string));
    if euid.as_deref() == Some("0") {
        anyhow::bail!(
            "{} test(s) skipped although run as root: CI must run every test",
            skipped.len()
        );
    }
    Ok(())
}

fn soak(minutes: f64, seed: u64) -> Result<()> {
    util::step(&format!("soak ({minutes} min, seed {seed})"));
    util::run(
        std::process::Command::new(util::root().join("target/debug/seer-soak")).args([
            "--minutes",
            &minutes.to_string(),
            "--seed",
            &seed.to_string(),
        ]),
    )
}
