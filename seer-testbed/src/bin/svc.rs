//! `seer-testbed-svc`: the testbed's RPC logic service (`serve`) and contention hogs (`hog`).
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use seer_testbed::{
    hog::{self, HogKind},
    svc::{SvcConfig, ctl, server},
};

#[derive(Parser)]
#[command(
    name = "seer-testbed-svc",
    about = "seer testbed RPC service and contention hogs"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve as the service described by a JSON config (written by `seer-testbed`).
    Serve {
        #[arg(long)]
        config: PathBuf,
    },
    /// Generate contention until stdin closes; stdin lines `level 0.0..1.0` set the duty.
    Hog {
        #[arg(long, value_enum)]
        kind: HogKindArg,
        #[arg(long, default_value_t = 1.0)]
        intensity: f64,
        /// Scratch directory (disk hog).
        #[arg(long, default_value = "/tmp")]
        dir: PathBuf,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum HogKindArg {
    Cpu,
    Cache,
    Membw,
    Mem,
    Disk,
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Serve { config } => serve(&config),
        Cmd::Hog {
            kind,
            intensity,
            dir,
        } => {
            let k = match kind {
                HogKindArg::Cpu => HogKind::Cpu,
                HogKindArg::Cache => HogKind::Cache,
                HogKindArg::Membw => HogKind::Membw,
                HogKindArg::Mem => HogKind::Mem,
                HogKindArg::Disk => HogKind::Disk,
            };
            hog::run(k, intensity, &dir).context("hog")
        }
    }
}

fn serve(path: &PathBuf) -> Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read service config {}", path.display()))?;
    let cfg: SvcConfig = serde_json::from_str(&text)
        .with_context(|| format!("bad service config {}", path.display()))?;
    let rt = if cfg.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cfg.threads)
            .enable_all()
            .build()
    }
    .context("tokio runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("{}: cannot listen on {}", cfg.name, cfg.listen))?;
        let ctl_l = ctl::bind(&cfg.ctl).with_context(|| {
            format!(
                "{}: cannot bind control socket {}",
                cfg.name,
                cfg.ctl.display()
            )
        })?;
        let sh = server::Shared::new(cfg);
        tokio::spawn(ctl::serve(sh.clone(), ctl_l));
        server::serve(sh, listener).await.context("accept")
    })
}
