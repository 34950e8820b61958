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
        /// Pin the hog to these CPUs (the victim's cpuset, e.g. `1` or `0-3`).
        #[arg(long)]
        cpus: Option<String>,
    },
    /// Measure the request memory walk (`work_kb` of a `buffer_kb` working set) alone: prints
    /// ns per touched cache line, per second. Run it beside a hog to see what the hog does to
    /// the walk itself, without the rest of the application.
    Walk {
        #[arg(long, default_value_t = 128)]
        work_kb: u64,
        #[arg(long, default_value_t = 8192)]
        buffer_kb: u64,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Pin the walker to these CPUs.
        #[arg(long)]
        cpus: Option<String>,
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
            cpus,
        } => {
            if let Some(list) = cpus {
                let cpus = seer_testbed::scenario::parse_cpu_list(&list)
                    .map_err(|e| anyhow::anyhow!("--cpus: {e}"))?;
                hog::pin_to(&cpus).context("pinning the hog to the victim's CPUs")?;
            }
            let k = match kind {
                HogKindArg::Cpu => HogKind::Cpu,
                HogKindArg::Cache => HogKind::Cache,
                HogKindArg::Membw => HogKind::Membw,
                HogKindArg::Mem => HogKind::Mem,
                HogKindArg::Disk => HogKind::Disk,
            };
            hog::run(k, intensity, &dir).context("hog")
        }
        Cmd::Walk {
            work_kb,
            buffer_kb,
            seconds,
            cpus,
        } => {
            if let Some(list) = cpus {
                let cpus = seer_testbed::scenario::parse_cpu_list(&list)
                    .map_err(|e| anyhow::anyhow!("--cpus: {e}"))?;
                hog::pin_to(&cpus).context("pinning the walker")?;
            }
            if work_kb == 0 || buffer_kb < work_kb {
                anyhow::bail!("--work-kb must be > 0 and at most --buffer-kb");
            }
            let ws = seer_testbed::svc::work::WorkingSet::new(buffer_kb);
            let lines = work_kb * 1024 / 64;
            let mut seed = 1u64;
            for s in 0..seconds {
                // CPU time of this thread: a memory stall counts, being preempted does not.
                let c0 = seer_testbed::svc::work::thread_cpu_time();
                let t0 = std::time::Instant::now();
                let mut walks = 0u64;
                while t0.elapsed() < std::time::Duration::from_secs(1) {
                    seed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
                    std::hint::black_box(ws.touch(work_kb, seed));
                    walks += 1;
                }
                let cpu = seer_testbed::svc::work::thread_cpu_time() - c0;
                let ns = cpu.as_nanos() as f64 / (walks * lines).max(1) as f64;
                println!(
                    "walk second={s} walks={walks} cpu_ns_per_line={ns:.1} cpu_us_per_walk={:.1} cpu_share={:.2}",
                    ns * lines as f64 / 1000.0,
                    cpu.as_secs_f64() / t0.elapsed().as_secs_f64()
                );
            }
            Ok(())
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
        ctl::serve(sh.clone(), ctl_l).context("control socket thread")?;
        server::serve(sh, listener).await.context("accept")
    })
}
