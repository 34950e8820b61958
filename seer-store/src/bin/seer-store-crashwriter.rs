//! Crash-test helper: writes ticks to a store as fast as it can and prints the time of each
//! tick on stdout once its transaction has committed, until it is killed.
//!
//! `seer-store-crashwriter DB [--services N] [--full-res-ms MS]`
//!
//! It continues an existing store at the tick after its newest one, so a test can kill it,
//! check the store, and start it again. Values come from `synth::Synth::new(SEED)`, so the
//! checker can recompute every value. With `--full-res-ms`, retention runs every 20 ticks and
//! folds older samples into per-second aggregates, so kills also land inside downsampling.

use seer_common::sample::{Sample, ServiceId};
use seer_store::synth::Synth;
use seer_store::{RetentionPolicy, Store, StoreConfig};
use std::io::Write;
use std::process::ExitCode;

/// Seed of the values; the crash test uses the same.
const SEED: u64 = 42;
/// Time of the first tick of a new store.
const FIRST_TICK_MS: u64 = 1_767_225_600_000;
const TICK_MS: u64 = 100;

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let db = args
        .next()
        .ok_or("usage: seer-store-crashwriter DB [--services N] [--full-res-ms MS]")?;
    let mut services = 100u32;
    let mut full_res_ms = None;
    while let Some(a) = args.next() {
        let v = args.next().ok_or(format!("{a} needs a value"))?;
        match a.as_str() {
            "--services" => services = v.parse().map_err(|e| format!("--services: {e}"))?,
            "--full-res-ms" => {
                full_res_ms = Some(v.parse().map_err(|e| format!("--full-res-ms: {e}"))?)
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let mut config = StoreConfig::default();
    if let Some(ms) = full_res_ms {
        config.retention = RetentionPolicy {
            full_resolution_ms: ms,
            ..RetentionPolicy::default()
        };
    }
    let store = Store::open(&db, config).map_err(|e| e.to_string())?;
    let mut ts = match store.last_tick_ms().map_err(|e| e.to_string())? {
        Some(last) => last + TICK_MS,
        None => {
            for i in 0..services {
                store
                    .upsert_service(
                        ServiceId(i),
                        &format!("svc-{i}"),
                        "crash-test",
                        FIRST_TICK_MS,
                    )
                    .map_err(|e| e.to_string())?;
            }
            FIRST_TICK_MS
        }
    };
    let synth = Synth::new(SEED);
    let edges: Vec<(ServiceId, ServiceId)> = (1..services)
        .map(|i| (ServiceId(i / 2), ServiceId(i)))
        .collect();
    let mut samples: Vec<Sample> = Vec::new();
    let mut out = std::io::stdout().lock();
    for n in 0u64.. {
        synth.fill(services, ts, &mut samples);
        store
            .write_tick(ts, &samples, &edges)
            .map_err(|e| format!("tick {ts}: {e}"))?;
        writeln!(out, "{ts}").map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
        if full_res_ms.is_some() && n % 20 == 19 {
            store.run_retention(ts).map_err(|e| e.to_string())?;
        }
        ts += TICK_MS;
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("seer-store-crashwriter: {e}");
            ExitCode::FAILURE
        }
    }
}
