//! `seer-agent bench-infer`: what the model costs. Inference p50/p99 of a model for N services
//! on one thread (batch 1), and a whole tick for 100 services as the tick loop runs it
//! (window -> store hand-off -> inference -> alarms), with the CPU that costs at 100 ms ticks.
//! Inputs are made up (fixed seed): a random call DAG and channel values in realistic ranges.
use std::{path::PathBuf, time::Instant};

use seer_common::sample::{CHANNELS, Sample, ServiceId};

#[derive(clap::Args, Clone, Debug)]
pub struct BenchInferArgs {
    /// The model (default: the shipped one).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// The ONNX Runtime library (default: as `run` finds it).
    #[arg(long)]
    pub ort_lib: Option<PathBuf>,
    /// Service counts to time.
    #[arg(long, value_delimiter = ',', default_values_t = [36usize, 100, 400, 1000])]
    pub n: Vec<usize>,
    /// Inferences per N.
    #[arg(long, default_value_t = 300)]
    pub iters: usize,
}

fn quantile(v: &mut [u64], q: f64) -> u64 {
    v.sort_unstable();
    v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1]
}

fn services(
    n: usize,
) -> (
    Vec<crate::discovery::Service>,
    std::collections::BTreeSet<(ServiceId, ServiceId)>,
) {
    let mut rng = 0x5eed_u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let svcs = (0..n as u32)
        .map(|i| crate::discovery::Service {
            id: ServiceId(i),
            name: format!("s{i}"),
            ..Default::default()
        })
        .collect();
    // Back end first: service i calls one or two services of lower index.
    let mut edges = std::collections::BTreeSet::new();
    for i in 1..n as u32 {
        for _ in 0..1 + next() % 2 {
            edges.insert((ServiceId(i), ServiceId((next() % u64::from(i)) as u32)));
        }
    }
    (svcs, edges)
}

fn samples(svcs: &[crate::discovery::Service], k: u64) -> Vec<Sample> {
    svcs.iter()
        .map(|s| {
            let mut v = [0f32; CHANNELS];
            for (c, x) in v.iter_mut().enumerate() {
                *x = ((u64::from(s.id.0) * 31 + c as u64 * 7 + k * 13) % 1000) as f32;
            }
            Sample {
                service: s.id,
                ts_ms: 0,
                values: v,
            }
        })
        .collect()
}

pub fn run(a: &BenchInferArgs) -> anyhow::Result<()> {
    let mut m = crate::infer::Bench::open(a.model.as_deref(), a.ort_lib.as_deref())?;
    println!(
        "model {} ({} network, T = {}), ONNX Runtime one thread, batch 1, {} inferences per N",
        m.name(),
        m.network(),
        m.t(),
        a.iters
    );
    let mut p99s = Vec::new();
    for &n in &a.n {
        let (svcs, edges) = services(n);
        let mut w = crate::infer::Window::default();
        for k in 0..m.t() as u64 {
            w.push(&svcs, &samples(&svcs, k));
        }
        let req = w.request(0, &svcs, &edges, m.t(), 0);
        m.infer(&req).map_err(|e| anyhow::anyhow!("N = {n}: {e}"))?; // warm-up
        let mut us = Vec::with_capacity(a.iters);
        for _ in 0..a.iters {
            let t0 = Instant::now();
            m.infer(&req).map_err(|e| anyhow::anyhow!("N = {n}: {e}"))?;
            us.push(t0.elapsed().as_micros() as u64);
        }
        let (p50, p99) = (quantile(&mut us, 0.5), quantile(&mut us, 0.99));
        println!("  N = {n:5}: p50 {p50:7} us  p99 {p99:7} us");
        p99s.push((n, p99));
    }
    // A whole tick for 100 services: window, store hand-off, inference, alarms.
    let (svcs, edges) = services(100);
    let dir = std::env::temp_dir().join(format!("seer-bench-infer-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // Created here, 0700, failing if anyone made it first (/tmp is everyone's).
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700).create(&dir)?;
    let rec = crate::store::Recorder::open(&dir.join("b.redb"), 100)?;
    let mut disc = crate::discovery::Discovery::default();
    disc.services = svcs.clone();
    disc.edges = edges.clone();
    let mut w = crate::infer::Window::default();
    let mut alarms = crate::respond::alarm::Alarms::default();
    let cfg = crate::respond::alarm::AlarmConfig {
        threshold: 0.5,
        consecutive: 2,
        hysteresis: 0.8,
        cooldown_ms: 30_000,
    };
    let cpu0 = crate::sys::thread_cpu_ns();
    let mut us = Vec::new();
    let ticks = a.iters.max(50) as u64;
    for k in 0..ticks {
        let smp = samples(&svcs, k);
        let t0 = Instant::now();
        w.push(&svcs, &smp);
        let req = w.request(k * 100, &svcs, &edges, m.t(), 0);
        let p = m.infer(&req).map_err(|e| anyhow::anyhow!("{e}"))?;
        let pred = crate::infer::Prediction {
            ts_ms: k * 100,
            model: m.name().to_string(),
            ids: req.ids.clone(),
            p,
            infer_us: 0,
        };
        rec.record(k * 100, &smp, &disc, Some(pred.to_store()));
        alarms.update(&cfg, k * 100, &pred.pairs());
        us.push(t0.elapsed().as_micros() as u64);
    }
    let cpu_ns = crate::sys::thread_cpu_ns().saturating_sub(cpu0);
    rec.close();
    let _ = std::fs::remove_dir_all(&dir);
    let tick_p99 = quantile(&mut us, 0.99);
    let tick_p50 = quantile(&mut us, 0.5);
    let core_pct = cpu_ns as f64 / ticks as f64 / 100e6 * 100.0;
    println!(
        "  whole tick, 100 services (window, store hand-off, inference, alarms): p50 {tick_p50} us, p99 {tick_p99} us; \
         {core_pct:.2}% of a core at 100 ms ticks (this thread; the store writer's thread apart)"
    );
    let get = |n: usize| {
        p99s.iter()
            .find(|(k, _)| *k == n)
            .map_or(-1, |(_, v)| *v as i64)
    };
    println!(
        "infer: n36_p99_us={} n1000_p99_us={} tick100_p99_us={tick_p99}",
        get(36),
        get(1000)
    );
    Ok(())
}
