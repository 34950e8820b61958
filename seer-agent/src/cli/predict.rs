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
}

pub fn run(a: &PredictArgs) -> anyhow::Result<()> {
    let model = a
        .model
        .clone()
        .or_else(crate::infer::default_model)
        .ok_or_else(|| anyhow::anyhow!("no model: give --model PATH"))?;
    let mut m = crate::infer::Bench::load(&model, a.ort_lib.as_deref())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
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
