//! `seer-testbed-load`: the open-loop generator, started by `seer-testbed run` inside the client
//! namespace. Writes `OUT/requests.csv` (see `load::records`) and the HDR histograms
//! `OUT/latency.hdr` (see `load::hdr`), and prints progress every 5 s.
use std::{net::SocketAddr, path::PathBuf};

use anyhow::{Context as _, Result};
use clap::Parser;
use seer_testbed::{
    load::{generator, hdr, records},
    scenario::Scenario,
};

#[derive(Parser)]
#[command(
    name = "seer-testbed-load",
    about = "open-loop HTTP load for the seer testbed"
)]
struct Cli {
    #[arg(long)]
    scenario: PathBuf,
    /// The nginx front end (address:port).
    #[arg(long)]
    target: SocketAddr,
    /// Unix time in ms of scenario time 0 (warm-up starts before it).
    #[arg(long)]
    t0_unix_ms: u64,
    #[arg(long)]
    duration_s: f64,
    #[arg(long)]
    out: PathBuf,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let scenario = Scenario::load(&cli.scenario)?;
    let names: Vec<String> = scenario
        .requests
        .iter()
        .map(|r| r.name.get_ref().clone())
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let (recs, hist) = rt.block_on(generator::run(generator::Spec {
        scenario,
        target: cli.target,
        t0_unix_ms: cli.t0_unix_ms,
        duration_s: cli.duration_s,
    }));
    let path = cli.out.join("requests.csv");
    records::write_csv(&path, &recs, &names)?;
    println!("[load] wrote {} records to {}", recs.len(), path.display());
    let hpath = cli.out.join(hdr::FILE);
    hist.write_log(&hpath, &names, cli.t0_unix_ms, cli.duration_s)?;
    println!(
        "[load] wrote {} judged latencies ({} failed) to {}",
        hist.overall.len(),
        hist.failed,
        hpath.display()
    );
    Ok(())
}
