//! `seer-agent predict --db STORE`: the model replayed over a recorded trace, with the same
//! window, normalisation and inference code as `run`; prints each tick's probabilities and,
//! where the store holds the agent's own predictions of the same model, how far the replay is
//! from them (the same inputs must give the same outputs).
use std::path::PathBuf;

use seer_common::sample::{Sample, ServiceId};

use crate::serve::query::parse_time;

#[derive(clap::Args, Clone, Debug)]
pub struct PredictArgs {
    /// The trace store to replay.
    #[arg(long, default_value = crate::store::DEFAULT_DB)]
    pub db: PathBuf,
    /// From: ms since the Unix epoch, "now", or relative like -10m.
    #[arg(long, default_value = "-10m", allow_hyphen_values = true)]
    pub from: String,
    #[arg(long, default_value = "now", allow_hyphen_values = true)]
    pub to: String,
    /// The model (default: the shipped one).
    #[arg(long)]
    pub model: Option<PathBuf>,
    #[arg(long)]
    pub ort_lib: Option<PathBuf>,
    /// One JSON object per tick instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Replay a testbed run's labelled dataset (`OUT/dataset/`) instead of a store, and print
    /// the model report's metrics for it (the same definitions as `cargo xtask eval model`).
    #[arg(long, value_name = "DIR", conflicts_with = "db")]
    pub dataset: Option<PathBuf>,
    /// Alarm threshold for the dataset's metrics (default: the model card's).
    #[arg(long)]
    pub threshold: Option<f32>,
    /// Ticks in a row over the threshold before an alarm fires (default: the model card's).
    #[arg(long)]
    pub consecutive: Option<u32>,
}

fn fmt(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}"))
}

fn run_dataset(
    a: &PredictArgs,
    dir: &std::path::Path,
    m: &mut crate::infer::Bench,
) -> anyhow::Result<()> {
    let ds = read_dataset(dir)?;
    let (p, s) = replay_dataset(&ds, m, a.threshold, a.consecutive)?;
    if a.json {
        for (ts, row) in ds.ts_ms.iter().zip(&p) {
            let each: serde_json::Map<String, serde_json::Value> = ds
                .services
                .iter()
                .zip(row)
                .map(|(n, v)| (n.clone(), serde_json::json!(v)))
                .collect();
            crate::output::print_line(
                &serde_json::json!({"ts_ms": ts, "model": m.name(), "p": each}),
            );
        }
    }
    println!(
        "predict: violations={} anticipated_pct={} culprit_top1_pct={} precision_pct={} alarm_episodes={} false_alarms={} lead_ms_p50={}",
        s.violations,
        fmt(s.anticipated_pct()),
        fmt(s.top1_pct()),
        fmt(s.precision_pct()),
        s.episodes,
        s.false_episodes,
        fmt(s.lead_ms_p50())
    );
    Ok(())
}

pub fn run(a: &PredictArgs) -> anyhow::Result<()> {
    let mut m = crate::infer::Bench::open(a.model.as_deref(), a.ort_lib.as_deref())?;
    if let Some(dir) = &a.dataset {
        return run_dataset(a, dir, &mut m);
    }
    // While an agent records into it the store is locked: replay a copy (or stop the agent).
    let store = crate::cli::query::open(&a.db)?;
    let now = crate::util::now_ms();
    let (from, to) = (parse_time(&a.from, now)?, parse_time(&a.to, now)?);
    let names: std::collections::HashMap<ServiceId, String> = store
        .services()?
        .into_iter()
        .map(|s| (s.id, s.name))
        .collect();
    let stored: std::collections::HashMap<u64, seer_store::Prediction> = store
        .predictions(from, to)?
        .into_iter()
        .filter(|p| p.model == m.name())
        .map(|p| (p.ts_ms, p))
        .collect();
    let mut it = store.range(from, to)?;
    let mut tick = seer_store::TickSamples::default();
    let mut window = crate::infer::Window::default();
    let (mut ticks, mut compared, mut worst) = (0u64, 0u64, 0f32);
    if !a.json {
        println!("ts_ms\tmost likely\tp\tservices");
    }
    while it.next_into(&mut tick)? {
        let mut d = crate::discovery::Discovery::default();
        d.services = tick
            .samples
            .iter()
            .map(|s| crate::discovery::Service {
                id: s.service,
                name: names
                    .get(&s.service)
                    .cloned()
                    .unwrap_or_else(|| format!("#{}", s.service.0)),
                ..Default::default()
            })
            .collect();
        d.edges = store.edges_at(tick.ts_ms)?.into_iter().collect();
        d.order();
        // Samples in the discovery's order, as the tick loop hands them over.
        let by_id: std::collections::HashMap<ServiceId, &Sample> =
            tick.samples.iter().map(|s| (s.service, s)).collect();
        let samples: Vec<Sample> = d.services.iter().map(|s| *by_id[&s.id]).collect();
        window.push(&d.services, &samples);
        ticks += 1;
        if d.services.is_empty() {
            continue;
        }
        let req = window.request(tick.ts_ms, &d.services, &d.edges, m.t(), 0);
        let p = m
            .infer(&req)
            .map_err(|e| anyhow::anyhow!("tick {}: {e}", tick.ts_ms))?;
        if let Some(s) = stored.get(&tick.ts_ms) {
            for (id, v) in &s.p {
                if let Some(k) = req.ids.iter().position(|x| x == id) {
                    worst = worst.max((p[k] - v).abs());
                }
            }
            compared += 1;
        }
        let top = req
            .ids
            .iter()
            .zip(&p)
            .max_by(|x, y| x.1.total_cmp(y.1))
            .map(|(id, v)| (d.name_of(*id).to_string(), *v));
        if a.json {
            let each: serde_json::Map<String, serde_json::Value> = req
                .ids
                .iter()
                .zip(&p)
                .map(|(id, v)| (d.name_of(*id).to_string(), serde_json::json!(v)))
                .collect();
            crate::output::print_line(&serde_json::json!({
                "ts_ms": tick.ts_ms, "model": m.name(), "p": each,
            }));
        } else if let Some((name, v)) = top {
            println!("{}\t{name}\t{v:.3}\t{}", tick.ts_ms, d.services.len());
        }
    }
    eprintln!(
        "replayed {ticks} ticks with {}; {compared} had the agent's own prediction of this model: max difference {worst:.2e}",
        m.name()
    );
    Ok(())
}

/// A testbed run's labelled dataset (`OUT/dataset/`, seer-testbed's format
/// `seer-testbed-dataset-v1`), as the replay needs it.
pub struct Dataset {
    pub tick_ms: u64,
    pub services: Vec<String>,
    /// [T][N][C]
    pub raw: Vec<Vec<[f32; seer_common::sample::CHANNELS]>>,
    pub ts_ms: Vec<u64>,
    /// The call graph, (caller, callee) service indices.
    pub edges: Vec<[i64; 2]>,
    pub violations: Vec<crate::cli::score::Violation>,
}

pub fn read_dataset(dir: &std::path::Path) -> anyhow::Result<Dataset> {
    use anyhow::Context as _;
    use arrow_array::{Array as _, Float32Array, Int64Array};
    use seer_common::sample::{CHANNEL_NAMES, CHANNELS};
    let man: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("manifest.json"))
            .with_context(|| format!("{}: no manifest.json", dir.display()))?,
    )?;
    anyhow::ensure!(
        man["format"] == "seer-testbed-dataset-v1",
        "{}: not a seer-testbed dataset (format {})",
        dir.display(),
        man["format"]
    );
    let chans: Vec<&str> = man["channels"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c.as_str()).collect())
        .unwrap_or_default();
    anyhow::ensure!(
        chans == CHANNEL_NAMES,
        "{}: channels {chans:?}, this agent has {CHANNEL_NAMES:?}",
        dir.display()
    );
    let shape: Vec<usize> = man["shape"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_u64())
                .map(|v| v as usize)
                .collect()
        })
        .unwrap_or_default();
    let [t, n, _] = shape[..] else {
        anyhow::bail!("{}: bad shape {:?}", dir.display(), man["shape"]);
    };
    let services: Vec<String> = man["services"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| s["name"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default();
    anyhow::ensure!(
        services.len() == n,
        "{}: {} services for N = {n}",
        dir.display(),
        services.len()
    );
    let file = std::fs::File::open(dir.join("samples.arrow"))
        .with_context(|| format!("{}: samples.arrow", dir.display()))?;
    let reader = arrow_ipc::reader::FileReader::try_new(file, None)?;
    let mut cols: Vec<Vec<f32>> = (0..CHANNELS).map(|_| Vec::with_capacity(t * n)).collect();
    let mut ts_rows: Vec<i64> = Vec::with_capacity(t * n);
    for batch in reader {
        let batch = batch?;
        for (c, name) in CHANNEL_NAMES.iter().enumerate() {
            let a = batch
                .column_by_name(name)
                .and_then(|a| a.as_any().downcast_ref::<Float32Array>())
                .with_context(|| format!("column {name} missing or not float32"))?;
            cols[c].extend((0..a.len()).map(|i| if a.is_null(i) { 0.0 } else { a.value(i) }));
        }
        let ts = batch
            .column_by_name("ts_ms")
            .and_then(|a| a.as_any().downcast_ref::<Int64Array>())
            .context("column ts_ms missing or not int64")?;
        ts_rows.extend(ts.values().iter().copied());
    }
    anyhow::ensure!(
        ts_rows.len() == t * n,
        "{}: {} rows for {t} x {n}",
        dir.display(),
        ts_rows.len()
    );
    let raw = (0..t)
        .map(|ti| {
            (0..n)
                .map(|j| {
                    let mut v = [0f32; CHANNELS];
                    for (c, x) in v.iter_mut().enumerate() {
                        *x = cols[c][ti * n + j];
                    }
                    v
                })
                .collect()
        })
        .collect();
    let ts_ms = (0..t).map(|ti| ts_rows[ti * n] as u64).collect();
    let index: std::collections::HashMap<&str, usize> = services
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), i))
        .collect();
    let mut edges = std::collections::BTreeSet::new();
    let csv = std::fs::read_to_string(dir.join("edges.csv")).unwrap_or_default();
    for line in csv.lines().skip(1) {
        let mut f = line.split(',');
        if let (Some(a), Some(b)) = (f.next(), f.next())
            && let (Some(&i), Some(&j)) = (index.get(a), index.get(b))
            && i != j
        {
            edges.insert([i as i64, j as i64]);
        }
    }
    let mut violations = Vec::new();
    if let Some(run) = dir.parent()
        && let Ok(text) = std::fs::read_to_string(run.join("violations.json"))
    {
        let vs: serde_json::Value = serde_json::from_str(&text)?;
        for v in vs.as_array().into_iter().flatten() {
            violations.push(crate::cli::score::Violation {
                start_unix_ms: v["start_unix_ms"].as_u64().unwrap_or(0),
                end_unix_ms: v["end_unix_ms"].as_u64().unwrap_or(0),
                initiator: v["initiator"].as_str().and_then(|s| index.get(s).copied()),
            });
        }
    }
    Ok(Dataset {
        tick_ms: man["tick_ms"].as_u64().unwrap_or(100),
        services,
        raw,
        ts_ms,
        edges: edges.into_iter().collect(),
        violations,
    })
}

/// The model over every tick of a dataset (0 before its first full window, as the report
/// does), and the report's metrics with `threshold` and `consecutive` (default: the card's).
pub fn replay_dataset(
    ds: &Dataset,
    m: &mut crate::infer::Bench,
    threshold: Option<f32>,
    consecutive: Option<u32>,
) -> anyhow::Result<(Vec<Vec<f32>>, crate::cli::score::Scores)> {
    use seer_common::sample::CHANNELS;
    let (t_len, n) = (m.t(), ds.services.len());
    let mut p = vec![vec![0f32; n]; ds.raw.len()];
    for (end, out) in p.iter_mut().enumerate().skip(t_len.saturating_sub(1)) {
        let mut raw = Vec::with_capacity(t_len * n * CHANNELS);
        for row in &ds.raw[end + 1 - t_len..=end] {
            for v in row {
                raw.extend_from_slice(v);
            }
        }
        let req = crate::infer::Request {
            ts_ms: ds.ts_ms[end],
            ids: (0..n as u32).map(ServiceId).collect(),
            t: t_len,
            raw,
            edges: ds.edges.clone(),
            version: 0,
        };
        *out = m
            .infer(&req)
            .map_err(|e| anyhow::anyhow!("tick {end}: {e}"))?;
    }
    let cfg = crate::respond::alarm::AlarmConfig {
        threshold: threshold.unwrap_or(m.threshold()),
        consecutive: consecutive.unwrap_or(m.consecutive()),
        ..crate::respond::alarm::AlarmConfig::agent_defaults()
    };
    let s = crate::cli::score::score_run(
        &p,
        &ds.ts_ms,
        ds.tick_ms,
        &ds.violations,
        &cfg,
        m.horizon_ms(),
        t_len - 1,
    );
    Ok((p, s))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The report's figures and the agent's, on the same run and model, must be the same:
    /// models/fixtures/parity/metrics.json was written by Python (`seer_models.fixture`:
    /// onnxruntime + metrics.py) for a recorded testbed run.
    #[test]
    fn the_replay_of_a_dataset_scores_as_the_python_evaluation_does() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let text = std::fs::read_to_string(root.join("models/fixtures/parity/metrics.json"))
            .expect("metrics.json");
        let want: serde_json::Value = serde_json::from_str(&text).expect("json");
        let ds =
            read_dataset(&root.join(want["dataset"].as_str().expect("dataset"))).expect("dataset");
        let mut m =
            crate::infer::Bench::load(&root.join("models/fixtures/parity/model.onnx"), None)
                .expect("model");
        let rows = want["scores"].as_array().expect("scores");
        assert!(rows.len() >= 2);
        for w in rows {
            let thr = w["threshold"].as_f64().expect("threshold") as f32;
            let k = w["consecutive"].as_u64().expect("consecutive") as u32;
            let (_, s) = replay_dataset(&ds, &mut m, Some(thr), Some(k)).expect("replay");
            let n = |k: &str| w[k].as_u64().expect(k) as usize;
            let leads: Vec<u64> = w["leads_ms"]
                .as_array()
                .expect("leads")
                .iter()
                .map(|v| v.as_u64().expect("lead"))
                .collect();
            assert_eq!(
                (
                    s.violations,
                    s.anticipated,
                    s.top1,
                    s.episodes,
                    s.false_episodes,
                    &s.leads_ms
                ),
                (
                    n("violations"),
                    n("anticipated"),
                    n("top1"),
                    n("episodes"),
                    n("false_episodes"),
                    &leads
                ),
                "threshold {thr}, {k} ticks in a row: the agent's figures differ from Python's"
            );
            assert!(
                s.violations > 0 && s.episodes > 0,
                "a fixture that judges nothing"
            );
        }
    }
}
