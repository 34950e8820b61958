//! Benchmarks: commands that print their figures (ratios measured side by side in one run),
//! never tests that fail on a slow day.
use anyhow::Result;

use crate::{setup, util};

#[derive(clap::Subcommand)]
pub enum Bench {
    /// nginx -> memcached under wrk, interleaved with and without the agent: throughput ratio,
    /// p99 ratio at 50% load, agent CPU and RSS, eBPF ns per event and each hook's share.
    Overhead {
        /// Interleaved pairs (with/without) per measurement (10 resolve about 1% here).
        #[arg(long, default_value_t = 10)]
        pairs: usize,
        /// Seconds per run.
        #[arg(long, default_value_t = 5)]
        secs: u32,
        /// Extra `seer-agent run` arguments, to price one hook at a time (e.g. "--no-turns",
        /// "--tc-ingress", "--epoll").
        #[arg(long, default_value = "", allow_hyphen_values = true)]
        agent_args: String,
    },
    /// The model: inference p50/p99 of the shipped model for N = 36, 100, 400, 1000 services
    /// (one thread, batch 1) and a whole tick for 100 services (window, store, inference,
    /// alarms). Last line: `infer: n36_p99_us=.. n1000_p99_us=.. tick100_p99_us=..`.
    Infer {
        #[arg(long, default_value_t = 300)]
        iters: usize,
    },
    /// The trace store: 1000 services at 100 ms ticks for a simulated hour.
    Store {
        /// Ticks to simulate (36000 = one hour at 100 ms).
        #[arg(long, default_value_t = 36000)]
        ticks: u64,
    },
}

pub fn run(b: Bench) -> Result<()> {
    setup::setup()?;
    match b {
        Bench::Overhead {
            pairs,
            secs,
            agent_args,
        } => {
            util::step("build (release)");
            util::cargo(&["build", "--release", "-p", "seer-agent", "-p", "seer-tests"])?;
            util::step(&format!(
                "overhead benchmark ({pairs} pairs x {secs} s, about {} s)",
                pairs * 4 * (secs as usize + 2) + 30
            ));
            util::run(
                std::process::Command::new(util::root().join("target/release/seer-bench")).args([
                    "overhead",
                    "--pairs",
                    &pairs.to_string(),
                    "--secs",
                    &secs.to_string(),
                    "--agent-args",
                    &agent_args,
                ]),
            )
        }
        Bench::Infer { iters } => {
            util::step("build (release)");
            util::cargo(&["build", "--release", "-p", "seer-agent"])?;
            util::step("inference benchmark");
            util::run(
                std::process::Command::new(util::root().join("target/release/seer-agent")).args([
                    "bench-infer",
                    "--iters",
                    &iters.to_string(),
                ]),
            )
        }
        Bench::Store { ticks } => {
            util::step("store benchmark");
            util::cargo(&[
                "run",
                "--release",
                "-p",
                "seer-store",
                "--bin",
                "seer-store-bench",
                "--",
                "--ticks",
                &ticks.to_string(),
            ])
        }
    }
}
