//! Trace store benchmark: N services (default 1000) at 100 ms ticks for a simulated hour,
//! written tick by tick as the agent's writer does, then exported. Run it in release:
//! `cargo run --release -p seer-store --bin seer-store-bench -- [--ticks N] [--services N]
//! [--dir PATH] [--keep]`. The last line is machine-readable:
//! `store: samples_per_s=X tick_write_p99_ms=Y bytes_per_sample=Z`.

use seer_common::sample::{Sample, ServiceId};
use seer_store::synth::Synth;
use seer_store::{Store, StoreConfig, export};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const USAGE: &str =
    "usage: seer-store-bench [--ticks N] [--services N] [--dir PATH] [--keep] [--export-only]";

struct Args {
    ticks: u64,
    services: u32,
    dir: Option<PathBuf>,
    keep: bool,
    /// Export the store a previous `--keep` run left in `--dir`, nothing else.
    export_only: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        ticks: 36_000,
        services: 1000,
        dir: None,
        keep: false,
        export_only: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--ticks" => {
                a.ticks = value("--ticks")?
                    .parse()
                    .map_err(|e| format!("--ticks: {e}"))?
            }
            "--services" => {
                a.services = value("--services")?
                    .parse()
                    .map_err(|e| format!("--services: {e}"))?
            }
            "--dir" => a.dir = Some(PathBuf::from(value("--dir")?)),
            "--keep" => a.keep = true,
            "--export-only" => a.export_only = true,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if a.export_only && a.dir.is_none() {
        return Err("--export-only needs --dir".into());
    }
    if a.ticks == 0 || a.services == 0 {
        return Err("--ticks and --services must be at least 1".into());
    }
    Ok(a)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn run(a: Args) -> Result<(), String> {
    let dir = a.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("seer-store-bench-{}", std::process::id()))
    });
    seer_store::safefs::private_dir(&dir).map_err(|e| e.to_string())?;
    let db_path = dir.join("bench.redb");
    if a.export_only {
        let store = Store::open(&db_path, StoreConfig::default()).map_err(|e| e.to_string())?;
        return export_once(&store, &dir).map(|_| ());
    }
    let _ = std::fs::remove_file(&db_path);
    let config = StoreConfig {
        retention: seer_store::RetentionPolicy {
            max_bytes: 64 << 30,
            ..Default::default()
        },
        ..StoreConfig::default()
    };
    let store = Store::open(&db_path, config).map_err(|e| e.to_string())?;
    let synth = Synth::new(7);
    let start_ms = 1_767_225_600_000u64; // 2026-01-01 00:00 UTC
    for i in 0..a.services {
        store
            .upsert_service(
                ServiceId(i),
                &format!("svc-{i:04}"),
                &format!("/bench/svc-{i}"),
                start_ms,
            )
            .map_err(|e| e.to_string())?;
    }
    // A stable call graph: a tree, service i calls 2i+1 and 2i+2.
    let edges: Vec<(ServiceId, ServiceId)> = (0..a.services)
        .flat_map(|i| [2 * i + 1, 2 * i + 2].map(|c| (ServiceId(i), ServiceId(c))))
        .filter(|(_, c)| c.0 < a.services)
        .collect();

    eprintln!(
        "store bench: {} services x {} ticks of 100 ms ({:.1} min simulated) into {}",
        a.services,
        a.ticks,
        a.ticks as f64 / 600.0,
        db_path.display()
    );
    let mut samples: Vec<Sample> = Vec::with_capacity(a.services as usize);
    let mut writes = Vec::with_capacity(a.ticks as usize);
    let mut maintenance = Vec::new();
    let wall = Instant::now();
    let mut generating = Duration::ZERO;
    for i in 0..a.ticks {
        let ts = start_ms + i * 100;
        let g = Instant::now();
        synth.fill(a.services, ts, &mut samples);
        generating += g.elapsed();
        let t = Instant::now();
        store
            .write_tick(ts, &samples, &edges)
            .map_err(|e| format!("tick {i}: {e}"))?;
        writes.push(t.elapsed());
        if (i + 1) % 100 == 0 {
            let t = Instant::now();
            store.flush_last_seen().map_err(|e| e.to_string())?;
            store.run_retention(ts).map_err(|e| e.to_string())?;
            maintenance.push(t.elapsed());
        }
        if (i + 1) % 1000 == 0 || i + 1 == a.ticks {
            eprint!(
                "\rstore bench: tick {}/{} ({:.0}%) {:.0} s",
                i + 1,
                a.ticks,
                100.0 * (i + 1) as f64 / a.ticks as f64,
                wall.elapsed().as_secs_f64()
            );
            let _ = std::io::stderr().flush();
        }
    }
    eprintln!();
    let writing: Duration = writes.iter().sum();
    let elapsed = wall.elapsed() - generating;
    let total_samples = a.ticks * u64::from(a.services);
    let samples_per_s = total_samples as f64 / elapsed.as_secs_f64();
    writes.sort_unstable();
    maintenance.sort_unstable();
    let usage = store.disk_usage().map_err(|e| e.to_string())?;
    let bytes_per_sample = usage.disk_bytes as f64 / total_samples as f64;

    println!(
        "ingest: {samples_per_s:.0} samples/s ({:.0} ticks/s), {:.1} s writing + maintenance, {:.1} s generating values (not counted)",
        a.ticks as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
        generating.as_secs_f64()
    );
    println!(
        "tick write ({} services, one transaction, fsync): p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms, mean {:.3} ms",
        a.services,
        ms(percentile(&writes, 0.50)),
        ms(percentile(&writes, 0.99)),
        ms(percentile(&writes, 1.0)),
        ms(writing) / a.ticks as f64
    );
    println!(
        "maintenance (every 10 s of data): {} passes, p50 {:.3} ms, max {:.3} ms",
        maintenance.len(),
        ms(percentile(&maintenance, 0.50)),
        ms(percentile(&maintenance, 1.0))
    );
    println!(
        "disk: {} bytes on disk ({} file length, {} estimated live): {:.1} bytes per service-tick",
        usage.disk_bytes, usage.file_bytes, usage.estimated_bytes, bytes_per_sample
    );

    export_once(&store, &dir)?;
    drop(store);
    if !a.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    println!(
        "store: samples_per_s={samples_per_s:.0} tick_write_p99_ms={:.3} bytes_per_sample={bytes_per_sample:.1}",
        ms(percentile(&writes, 0.99))
    );
    Ok(())
}

fn export_once(store: &Store, dir: &std::path::Path) -> Result<f64, String> {
    let out = dir.join("export");
    let t = Instant::now();
    let summary = export(store, 0, u64::MAX, &out).map_err(|e| e.to_string())?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "export: {} rows ({} ticks) in {secs:.2} s: {:.0} rows/s, {:.0} MB/s, {} bytes of Arrow IPC",
        summary.rows,
        summary.ticks,
        summary.rows as f64 / secs,
        summary.data_bytes as f64 / secs / 1e6,
        summary.data_bytes
    );
    Ok(secs)
}

fn main() -> ExitCode {
    match parse().and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("seer-store-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
