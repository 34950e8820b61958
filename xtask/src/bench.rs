//! Benchmarks (commands that print figures, not tests).
use anyhow::Result;

#[derive(clap::Subcommand)]
pub enum Bench {
    /// nginx -> memcached under wrk, with and without the agent.
    Overhead,
}

pub fn run(_b: Bench) -> Result<()> {
    anyhow::bail!("not yet")
}
