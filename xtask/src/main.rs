//! `cargo xtask ...`: set up a fresh machine, build, run, test and benchmark seer.
mod bench;
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
        Cmd::Bench { which } => bench::run(which),
        Cmd::Testbed { args } => {
            setup::setup()?;
            testbed::run(&args)
        }
        Cmd::Eval { which } => eval::run(which),
        Cmd::Fuzz(a) => fuzz::run(a),
        Cmd::Kernels => {
            setup::setup()?;
            kernels::kernels()
        }
        Cmd::BindgenOffsets => setup::bindgen_offsets(),
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
    util::step("build binaries used by the integration tests");
    util::cargo(&["build", "--bins"])?;
    util::step("tests");
    let tests = if util::have("cargo-nextest") {
        let mut a = vec!["nextest", "run", "--no-fail-fast"];
        a.extend(extra.iter().map(String::as_str));
        util::cargo(&a)
    } else {
        println!("cargo-nextest is not installed: using cargo test");
        let mut a = vec!["test", "--no-fail-fast"];
        a.extend(extra.iter().map(String::as_str));
        util::cargo(&a)
    };
    // The same agent on other kernels (skipped when a test filter was given).
    let matrix = if extra.is_empty() {
        kernels::kernels()
    } else {
        Ok(())
    };
    tests.and(matrix)
}
