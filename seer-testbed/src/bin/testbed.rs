//! `seer-testbed`: bring a scenario up, run it with load and faults, or tear everything down.
//! Exit codes: 0 ok, 1 runtime failure, 64 bad scenario or usage, 130 interrupted.
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use seer_testbed::{
    Error,
    plan::new_run_id,
    run::{RunOptions, run},
    scenario::Scenario,
    signals,
    testbed::{Bins, Testbed, down_all, down_run, progress},
};

#[derive(Parser)]
#[command(
    name = "seer-testbed",
    about = "seer's multi-tier microservices testbed"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Parse and validate a scenario file; print its shape.
    Check {
        #[arg(long)]
        scenario: PathBuf,
    },
    /// Start the application and leave it running (until `down`).
    Up {
        #[arg(long)]
        scenario: PathBuf,
    },
    /// Remove every testbed namespace, process, cgroup and run directory (also a crashed run's).
    Down {
        /// Only this run's (the id in `seer-tb-ID`); other testbeds keep running.
        #[arg(long)]
        run: Option<String>,
    },
    /// Up, load and faults for the duration, ground truth into --out, then down.
    Run {
        #[arg(long)]
        scenario: PathBuf,
        /// Seconds of judged load (after the scenario's warm-up).
        #[arg(long, default_value_t = 30.0)]
        duration: f64,
        #[arg(long)]
        out: PathBuf,
        /// Run this seer-agent in every host namespace and keep its ticks and trace store.
        #[arg(long)]
        agent_bin: Option<PathBuf>,
        /// Extra arguments for `seer-agent run` (repeatable), e.g. --agent-arg=--no-turns.
        #[arg(long = "agent-arg", allow_hyphen_values = true)]
        agent_args: Vec<String>,
        /// Label horizons of OUT/dataset/ (with --agent-bin), ms, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = [100u64, 500])]
        horizon_ms: Vec<u64>,
    },
    /// The model's training corpus: plan (seeded) and run scenarios over shipped and generated
    /// topologies with the agent on every host; resumable (finished runs are skipped).
    Corpus {
        /// Where the plan, the scenario files and the runs go.
        #[arg(long)]
        out: PathBuf,
        /// The plan's seed: the same seed plans the same scenarios.
        #[arg(long, default_value_t = 2026)]
        seed: u64,
        /// Scenarios planned (60 s of judged load each).
        #[arg(long, default_value_t = 150)]
        runs: usize,
        /// Generated topologies (besides the shipped `small` and `social`); one in six is held
        /// out for the unseen-topology test.
        #[arg(long, default_value_t = 24)]
        topologies: usize,
        /// The seer-agent run on every host.
        #[arg(long)]
        agent_bin: PathBuf,
        /// Label horizons, ms.
        #[arg(long, value_delimiter = ',', default_values_t = [100u64, 500, 1000])]
        horizon_ms: Vec<u64>,
        /// Stop after this many new runs.
        #[arg(long)]
        max_runs: Option<usize>,
        /// Write the plan and the scenario files only.
        #[arg(long)]
        plan_only: bool,
    },
    /// Rebuild OUT/dataset/ from a finished `run --agent-bin` (e.g. with other horizons).
    Dataset {
        /// The scenario the run used.
        #[arg(long)]
        scenario: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_delimiter = ',', default_values_t = [100u64, 500])]
        horizon_ms: Vec<u64>,
    },
}

fn main() {
    signals::install();
    let code = match real_main() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            if signals::stopping() {
                130
            } else if matches!(e.downcast_ref::<Error>(), Some(Error::Scenario { .. })) {
                64
            } else {
                1
            }
        }
    };
    std::process::exit(code);
}

fn bins() -> Result<Bins> {
    let exe = std::env::current_exe().context("cannot find this executable")?;
    Ok(Bins::beside(&exe)?)
}

fn real_main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Check { scenario } => {
            let sc = Scenario::load(&scenario)?;
            let hosts: std::collections::BTreeSet<_> = sc
                .services
                .iter()
                .map(|s| s.host.get_ref().clone())
                .collect();
            println!(
                "{}: ok: {} services on {} hosts, {} request types, {} faults, {} rps {:?}",
                scenario.display(),
                sc.services.len(),
                hosts.len(),
                sc.requests.len(),
                sc.faults.len(),
                sc.load.rps,
                sc.load.profile.get_ref()
            );
            Ok(())
        }
        Cmd::Up { scenario } => {
            let sc = Scenario::load(&scenario)?;
            let tb = Testbed::up(&sc, &new_run_id(), &bins()?, false)?;
            for (name, pid) in tb.pids() {
                let s = tb.plan.service(&name);
                println!(
                    "  {name:24} pid {pid:7} {} {}",
                    s.map_or(String::new(), |s| s.addr.to_string()),
                    s.map_or(String::new(), |s| s.netns.clone())
                );
            }
            progress(&format!(
                "left running; client namespace {}; `cargo xtask testbed down` removes it",
                tb.plan.client_netns
            ));
            tb.detach();
            Ok(())
        }
        Cmd::Dataset {
            scenario,
            out,
            horizon_ms,
        } => {
            let sc = Scenario::load(&scenario)?;
            if horizon_ms.is_empty() || horizon_ms.contains(&0) {
                return Err(anyhow::anyhow!(
                    "--horizon-ms: give positive horizons, e.g. 100,500"
                ));
            }
            let d = seer_testbed::dataset::rebuild(&sc, &out, &horizon_ms)?;
            progress(&format!(
                "dataset: {} ticks x {} services ({} rows, {} violation ticks), {} call-graph edges in {}",
                d.ticks,
                d.services,
                d.rows,
                d.violation_ticks,
                d.edges,
                d.dir.display()
            ));
            Ok(())
        }
        Cmd::Corpus {
            out,
            seed,
            runs,
            topologies,
            agent_bin,
            horizon_ms,
            max_runs,
            plan_only,
        } => {
            if horizon_ms.is_empty() || horizon_ms.contains(&0) {
                return Err(anyhow::anyhow!(
                    "--horizon-ms: give positive horizons, e.g. 100,500,1000"
                ));
            }
            let opts = seer_testbed::corpus::CorpusOptions {
                out,
                seed,
                runs,
                topologies,
                testbed_bin: std::env::current_exe().context("cannot find this executable")?,
                agent_bin,
                horizons_ms: horizon_ms,
                max_new_runs: max_runs,
                plan_only,
            };
            let shipped = [
                ("small", include_str!("../../scenarios/small.toml")),
                ("social", include_str!("../../scenarios/social.toml")),
            ];
            let t = seer_testbed::corpus::run_corpus(&opts, &shipped, &signals::stopping)
                .map_err(|e| anyhow::anyhow!("corpus: {e}"))?;
            println!("{}", seer_testbed::corpus::progress_line(&t));
            Ok(())
        }
        Cmd::Down { run } => {
            let gone = match run {
                Some(r) => down_run(&r)?,
                None => down_all()?,
            };
            if gone.is_empty() {
                progress("nothing to remove");
            }
            for g in gone {
                progress(&format!("removed {g}"));
            }
            Ok(())
        }
        Cmd::Run {
            scenario,
            duration,
            out,
            agent_bin,
            agent_args,
            horizon_ms,
        } => {
            let sc = Scenario::load(&scenario)?;
            if horizon_ms.is_empty() || horizon_ms.contains(&0) {
                return Err(anyhow::anyhow!(
                    "--horizon-ms: give positive horizons, e.g. 100,500"
                ));
            }
            let opts = RunOptions {
                duration_s: duration,
                out,
                agent_bin,
                agent_args,
                horizons_ms: horizon_ms,
            };
            run(&sc, &scenario, &opts, &bins()?)?;
            Ok(())
        }
    }
}
