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
    /// The agent's CPU at 100 ms ticks as services and sockets grow (listening processes and
    /// loopback connections in a namespace, the agent in its default configuration), and a
    /// plot: eval/scaling/agent-scaling.{json,png}. Last line: `scale: s10_k1000_cpu_pct=..`.
    Scale {
        /// Services, comma-separated.
        #[arg(long, default_value = "10,36,100,1000")]
        services: String,
        /// Sockets, comma-separated.
        #[arg(long, default_value = "1000,10000,100000")]
        sockets: String,
        /// Seconds measured per point.
        #[arg(long, default_value_t = 10)]
        secs: u64,
    },
    /// The model: inference p50/p99 of the shipped model for N = 36, 100, 400, 1000 services
    /// (one thread, batch 1) and a whole tick for 100 services (window, store, inference,
    /// alarms). Last line: `infer: n36_p99_us=.. n1000_p99_us=.. tick100_p99_us=..`.
    Infer {
        #[arg(long, default_value_t = 300)]
        iters: usize,
    },
    /// Cluster mode: simulated hosts (10, 100, 500 x 10 services) publish real-sized
    /// messages at 100 ms ticks to a NATS server of the benchmark's own, one `central` runs
    /// the shipped model. Last line: `cluster: hosts100_assembly_p99_ms=..
    /// hosts100_tick_to_alarm_p99_ms=.. hosts500_tick_to_alarm_p99_ms=.. central_cpu_pct=..`.
    Cluster {
        /// Host counts, comma-separated.
        #[arg(long, default_value = "10,100,500")]
        hosts: String,
        /// Seconds measured per host count.
        #[arg(long, default_value_t = 20)]
        secs: u64,
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
        Bench::Scale {
            services,
            sockets,
            secs,
        } => {
            util::step("build (release)");
            util::cargo(&["build", "--release", "-p", "seer-agent", "-p", "seer-tests"])?;
            util::step("scaling benchmark");
            let dir = util::root().join("eval/scaling");
            std::fs::create_dir_all(&dir)?;
            let json = dir.join("agent-scaling.json");
            util::run(
                std::process::Command::new(util::root().join("target/release/seer-bench"))
                    .args(["scale", "--services", &services, "--sockets", &sockets])
                    .args(["--secs", &secs.to_string(), "--out"])
                    .arg(&json),
            )?;
            // The plot, with the training venv's matplotlib (the test command creates it).
            let py = setup::train_venv_dir().join("bin/python");
            if py.exists() {
                util::run(
                    std::process::Command::new(py)
                        .arg(dir.join("plot.py"))
                        .arg(&json)
                        .arg(dir.join("agent-scaling.png")),
                )?;
            } else {
                println!(
                    "no training venv at {}: no plot (cargo xtask test creates it)",
                    py.display()
                );
            }
            Ok(())
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
        Bench::Cluster { hosts, secs } => {
            util::step("build (release)");
            util::cargo(&["build", "--release", "-p", "seer-agent"])?;
            util::step("cluster benchmark");
            util::run(
                std::process::Command::new(util::root().join("target/release/seer-agent"))
                    .args(["bench-cluster", "--hosts", &hosts])
                    .args(["--secs", &secs.to_string()]),
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
