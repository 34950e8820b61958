//! `cargo xtask testbed up|down|run|check`: builds seer-testbed and runs its orchestrator
//! (`seer-testbed/README.md` documents scenarios and outputs).
use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;

use crate::util;

#[derive(Subcommand)]
pub enum TestbedCmd {
    /// Start a scenario's application and leave it running (until `down`).
    Up {
        #[arg(long)]
        scenario: PathBuf,
    },
    /// Remove every testbed namespace, process, cgroup and run directory.
    Down,
    /// Up, open-loop load and the fault schedule for --duration, ground truth into --out, down.
    Run {
        #[arg(long)]
        scenario: PathBuf,
        /// Seconds of judged load (after the scenario's warm-up).
        #[arg(long, default_value_t = 30.0)]
        duration: f64,
        #[arg(long)]
        out: PathBuf,
        /// Also run this seer-agent in every host namespace (ticks and trace store into --out).
        #[arg(long)]
        agent_bin: Option<PathBuf>,
    },
    /// Validate a scenario file.
    Check { scenario: PathBuf },
}

pub fn run(cmd: TestbedCmd) -> Result<()> {
    util::step("build seer-testbed");
    util::cargo(&["build", "-p", "seer-testbed"])?;
    let bin = util::root().join("target/debug/seer-testbed");
    let abs = |p: PathBuf| {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_default()
    };
    let args: Vec<String> = match cmd {
        TestbedCmd::Up { scenario } => vec![
            "up".into(),
            "--scenario".into(),
            abs(scenario).display().to_string(),
        ],
        TestbedCmd::Down => vec!["down".into()],
        TestbedCmd::Check { scenario } => vec!["check".into(), abs(scenario).display().to_string()],
        TestbedCmd::Run {
            scenario,
            duration,
            out,
            agent_bin,
        } => {
            let mut a = vec![
                "run".into(),
                "--scenario".into(),
                abs(scenario).display().to_string(),
                "--duration".into(),
                duration.to_string(),
                "--out".into(),
                abs(out).display().to_string(),
            ];
            if let Some(b) = agent_bin {
                a.push("--agent-bin".into());
                a.push(abs(b).display().to_string());
            }
            a
        }
    };
    util::step(&format!("seer-testbed {}", args.join(" ")));
    util::exec(bin, &args)
}
