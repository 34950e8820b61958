//! The model stage: every tick, the shipped model gives each service the probability that it
//! initiates a QoS violation within the model's horizon.
//!
//! The tick loop keeps the last ticks of every service in memory (`Window`, never read back
//! from the store) and hands a copy to the inference thread through a one-slot channel: a slow
//! inference never delays a tick; a tick that finds the slot still full is dropped and counted
//! (`late`). The thread normalises as the card says, runs ONNX Runtime, and publishes the
//! result, which the tick loop picks up (one tick later at most) for the table, JSON, metrics,
//! store and alarm policy.
//!
//! Hot reload: the thread looks at the model file (inode, size, mtime) before each run; a new
//! file (an atomic rename over the old one) is loaded with its card, and used from that run on
//! if it loads and fits; otherwise the previous model stays and the reason is kept in
//! `Status::last_error` (log, /metrics, doctor).
pub mod card;
pub mod input;
pub mod runtime;

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        mpsc::{self, SyncSender, TrySendError},
    },
    time::Instant,
};

use seer_common::sample::{CHANNELS, Sample, ServiceId};

pub use card::Card;
pub use input::Window;

/// The model file used when `--model` is not given: the shipped model, installed next to the
/// binary by the set-up, else found in the source tree's `models/` relative to the binary.
pub const SHIPPED_MODEL: &str = "seer-graph-h100.onnx";

/// Where the shipped model is looked for, in order.
pub fn default_model() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(d) = exe.parent() {
        dirs.push(d.to_path_buf());
        dirs.push(d.join("models"));
        // target/{debug,release}/seer-agent -> the repository's models/.
        for up in d.ancestors().skip(1).take(3) {
            dirs.push(up.join("models"));
        }
    }
    dirs.push(PathBuf::from(runtime::DEFAULT_DIR));
    dirs.into_iter()
        .map(|d| d.join(SHIPPED_MODEL))
        .find(|p| p.is_file())
}

/// One inference request: the last `t` ticks of the services, raw, and their call graph.
pub struct Request {
    pub ts_ms: u64,
    pub ids: Vec<ServiceId>,
    pub t: usize,
    /// [t, n, C], raw channel values.
    pub raw: Vec<f32>,
    /// The call graph as (i, j) index pairs, service i calls j (i != j, each pair once): fed
    /// as it is to a model that takes `edges` [E, 2], or as `adj` [n, n] to one that takes that.
    pub edges: Vec<[i64; 2]>,
    /// The card version the request was shaped for (a reload in between voids it).
    pub version: u64,
}

/// One result.
#[derive(Clone, Debug)]
pub struct Prediction {
    pub ts_ms: u64,
    pub model: String,
    pub ids: Vec<ServiceId>,
    pub p: Vec<f32>,
    pub infer_us: u64,
}

impl Prediction {
    pub fn of(&self, id: ServiceId) -> Option<f32> {
        self.ids.iter().position(|&i| i == id).map(|k| self.p[k])
    }

    /// As the trace store keeps it.
    pub fn to_store(&self) -> seer_store::Prediction {
        seer_store::Prediction {
            ts_ms: self.ts_ms,
            model: self.model.clone(),
            p: self.pairs(),
        }
    }

    /// (service, probability) pairs.
    pub fn pairs(&self) -> Vec<(ServiceId, f32)> {
        self.ids
            .iter()
            .copied()
            .zip(self.p.iter().copied())
            .collect()
    }

    /// The most likely initiator and its probability.
    pub fn top(&self) -> Option<(ServiceId, f32)> {
        self.ids
            .iter()
            .copied()
            .zip(self.p.iter().copied())
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }
}

/// What the stage is doing, for logs, /metrics and doctor.
#[derive(Clone, Debug, Default)]
pub struct Status {
    /// The model in use (None: reactive only).
    pub model: Option<ModelInfo>,
    pub runs: u64,
    /// Ticks dropped because the previous inference had not finished.
    pub late: u64,
    pub failures: u64,
    pub reloads: u64,
    pub reload_failures: u64,
    /// Ticks the current service set could not be predicted (e.g. more services than a fixed-N
    /// model takes): "needs retraining".
    pub unfit_ticks: u64,
    pub unfit_reason: Option<String>,
    pub last_error: Option<String>,
    /// Inference time histogram: counts per bucket of INFER_BUCKETS_US (+Inf last), sum in us.
    pub infer_hist: Vec<u64>,
    pub infer_sum_us: u64,
}

#[derive(Clone, Debug)]
pub struct ModelInfo {
    pub path: PathBuf,
    pub name: String,
    pub network: String,
    pub horizon_ms: u64,
    pub threshold: f32,
    /// Ticks in a row over the threshold before an alarm fires (the card's).
    pub consecutive: u32,
    pub t: usize,
    pub library: PathBuf,
    /// Precision measured on the model's validation runs (None: the card does not say).
    pub precision_pct: Option<f64>,
}

/// Upper bounds of the inference time histogram, microseconds.
pub const INFER_BUCKETS_US: [u64; 10] = [
    100, 250, 500, 1000, 2500, 5000, 10_000, 25_000, 50_000, 100_000,
];

/// How a graph model takes the call graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GraphInput {
    /// `edges` int64 [E, 2]: memory and time linear in the calls (the shipped models).
    Edges,
    /// `adj` float32 [N, N] (models exported before the edge list): quadratic in N.
    Adj,
}

struct Loaded {
    card: Card,
    session: ort::session::Session,
    /// None: a fixed-N network without the call graph.
    graph: Option<GraphInput>,
    stamp: (u64, u64, i64, i64),
    /// Channel index -> zeroed.
    zeroed: [bool; CHANNELS],
}

fn stamp(path: &Path) -> Option<(u64, u64, i64, i64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

fn load(env: &ort::environment::Environment, path: &Path, tick_ms: u64) -> Result<Loaded, String> {
    let st = stamp(path).ok_or_else(|| format!("model {}: no such file", path.display()))?;
    runtime::check_trusted(path, "model")?;
    let card_path = Card::path_for(path);
    runtime::check_trusted(&card_path, "model card")?;
    let card = Card::load(&card_path).map_err(|e| e.to_string())?;
    card.check(tick_ms).map_err(|e| e.to_string())?;
    let session = runtime::session(env, path)?;
    let ins: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
    let graph = match (card.takes_graph(), &ins[..]) {
        (true, ["x", "edges"]) => Some(GraphInput::Edges),
        (true, ["x", "adj"]) => Some(GraphInput::Adj),
        (false, ["x"]) => None,
        _ => {
            let want = if card.takes_graph() {
                "[\"x\", \"edges\"] (or [\"x\", \"adj\"])"
            } else {
                "[\"x\"]"
            };
            return Err(format!(
                "model {}: inputs {ins:?}, its card ({} network) says {want}",
                path.display(),
                card.network
            ));
        }
    };
    if !session.outputs().iter().any(|o| o.name() == "p") {
        return Err(format!("model {}: no output named \"p\"", path.display()));
    }
    if !card.onnxruntime_tested.is_empty() && card.onnxruntime_tested != runtime::VERSION {
        log::warn!(
            "predict: {} was checked with ONNX Runtime {}, this agent uses {}",
            path.display(),
            card.onnxruntime_tested,
            runtime::VERSION
        );
    }
    let mut zeroed = [false; CHANNELS];
    for (i, name) in seer_common::sample::CHANNEL_NAMES.iter().enumerate() {
        zeroed[i] = card.zeroed_channels.iter().any(|z| z == name);
    }
    Ok(Loaded {
        graph,
        card,
        session,
        stamp: st,
        zeroed,
    })
}

/// What `doctor` says of prediction: the library and model found, whether the model fits this
/// agent, and one inference on a small made-up input (N = 3) with its time.
pub fn probe(model: Option<&Path>, ort_lib: Option<&Path>, tick_ms: u64) -> serde_json::Value {
    use serde_json::json;
    let lib = runtime::find_library(ort_lib);
    let lib_v = match &lib {
        Ok(p) => json!({"path": p, "ok": true, "version_expected": runtime::VERSION}),
        Err(e) => json!({"ok": false, "error": e}),
    };
    let model = model.map(Path::to_path_buf).or_else(default_model);
    let Some(model) = model else {
        return json!({"ok": false, "library": lib_v, "model": {"ok": false,
            "error": format!("no model: the shipped {SHIPPED_MODEL} is not next to the binary nor in models/ (give --model PATH)")}});
    };
    let env = match runtime::environment(ort_lib) {
        Ok((env, _)) => env,
        Err(e) => {
            return json!({"ok": false, "library": {"ok": false, "error": e}, "model": {"path": model}});
        }
    };
    match load(env, &model, tick_ms) {
        Ok(mut l) => {
            let n = 3;
            let t = l.card.t;
            let req = Request {
                ts_ms: 0,
                ids: (0..n as u32).map(ServiceId).collect(),
                t,
                raw: vec![1.0; t * n * CHANNELS],
                edges: vec![[0, 1], [1, 2]],
                version: 0,
            };
            let t0 = Instant::now();
            let res = run(&mut l, &req, &mut Vec::new());
            let us = t0.elapsed().as_micros() as u64;
            let tested = &l.card.onnxruntime_tested;
            json!({
                "ok": res.is_ok(),
                "library": lib_v,
                "model": {
                    "path": model, "ok": true, "name": l.card.name, "network": l.card.network,
                    "t": t, "horizon_ms": l.card.horizon_ms, "threshold": l.card.threshold,
                    "onnxruntime_tested": tested,
                    "n": if l.card.takes_graph() { "any".to_string() } else { format!("<= {}", l.card.services.n_max.unwrap_or(0)) },
                },
                "test_inference": match res { Ok(p) => json!({"ok": true, "us": us, "p": p}), Err(e) => json!({"ok": false, "error": e}) },
            })
        }
        Err(e) => {
            json!({"ok": false, "library": lib_v, "model": {"path": model, "ok": false, "error": e}})
        }
    }
}

/// A model run synchronously, for `seer-agent bench-infer`.
pub struct Bench {
    l: Loaded,
    x: Vec<f32>,
}

impl Bench {
    /// `model`, or the shipped one when None.
    pub fn open(model: Option<&Path>, ort_lib: Option<&Path>) -> anyhow::Result<Bench> {
        let model = model
            .map(Path::to_path_buf)
            .or_else(default_model)
            .ok_or_else(|| anyhow::anyhow!("no model: give --model PATH"))?;
        Bench::load(&model, ort_lib).map_err(|e| anyhow::anyhow!("{e}"))
    }

    pub fn load(model: &Path, ort_lib: Option<&Path>) -> Result<Bench, String> {
        let (env, _) = runtime::environment(ort_lib)?;
        let text = std::fs::read_to_string(Card::path_for(model))
            .map_err(|e| format!("{}: {e}", Card::path_for(model).display()))?;
        let tick = Card::parse("card", &text)
            .map_err(|e| e.to_string())?
            .tick_ms;
        Ok(Bench {
            l: load(env, model, tick)?,
            x: Vec::new(),
        })
    }
    pub fn infer(&mut self, req: &Request) -> Result<Vec<f32>, String> {
        run(&mut self.l, req, &mut self.x)
    }
    pub fn name(&self) -> &str {
        &self.l.card.name
    }
    pub fn network(&self) -> &str {
        &self.l.card.network
    }
    pub fn t(&self) -> usize {
        self.l.card.t
    }
    pub fn threshold(&self) -> f32 {
        self.l.card.threshold
    }
    pub fn consecutive(&self) -> u32 {
        self.l.card.consecutive
    }
    pub fn horizon_ms(&self) -> u64 {
        self.l.card.horizon_ms
    }
}

fn info(path: &Path, l: &Loaded, lib: &Path) -> ModelInfo {
    ModelInfo {
        path: path.to_path_buf(),
        name: l.card.name.clone(),
        network: l.card.network.clone(),
        horizon_ms: l.card.horizon_ms,
        threshold: l.card.threshold,
        consecutive: l.card.consecutive,
        t: l.card.t,
        library: lib.to_path_buf(),
        precision_pct: l.card.validation.as_ref().and_then(|v| v.precision_pct),
    }
}

/// Shared between the tick loop and the inference thread.
struct Shared {
    status: Status,
    latest: Option<Prediction>,
    /// What requests must look like now: (t, n_max, version).
    shape: (usize, Option<usize>, u64),
}

/// The tick loop's handle on the stage.
pub struct Predictor {
    tx: Option<SyncSender<Request>>,
    shared: Arc<Mutex<Shared>>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub window: Window,
}

impl Predictor {
    /// Loads the library and the model and starts the inference thread. Errors say what is
    /// missing or wrong; the caller goes on without prediction (reactive path).
    pub fn start(model: &Path, ort_lib: Option<&Path>, tick_ms: u64) -> Result<Predictor, String> {
        let (env, lib) = runtime::environment(ort_lib)?;
        let loaded = load(env, model, tick_ms)?;
        let mi = info(model, &loaded, lib);
        log::info!(
            "predict: model {} ({} network, T = {}, horizon {} ms, threshold {} for {} tick(s) in a row) from {}, ONNX Runtime {}",
            mi.name,
            mi.network,
            mi.t,
            mi.horizon_ms,
            mi.threshold,
            mi.consecutive,
            mi.path.display(),
            mi.library.display()
        );
        let shared = Arc::new(Mutex::new(Shared {
            status: Status {
                model: Some(mi),
                infer_hist: vec![0; INFER_BUCKETS_US.len() + 1],
                ..Status::default()
            },
            latest: None,
            shape: (loaded.card.t, loaded.card.services.n_max, 1),
        }));
        let (tx, rx) = mpsc::sync_channel::<Request>(1);
        let sh = shared.clone();
        let path = model.to_path_buf();
        let lib = lib.clone();
        let thread = std::thread::Builder::new()
            .name("seer-infer".into())
            .spawn(move || worker(env, &lib, path, tick_ms, loaded, rx, sh))
            .map_err(|e| format!("cannot start the inference thread: {e}"))?;
        Ok(Predictor {
            tx: Some(tx),
            shared,
            thread: Some(thread),
            window: Window::default(),
        })
    }

    /// Called every tick after sampling: remembers the tick and asks for an inference.
    pub fn on_tick(
        &mut self,
        ts_ms: u64,
        services: &[crate::discovery::Service],
        samples: &[Sample],
        edges: &std::collections::BTreeSet<(ServiceId, ServiceId)>,
    ) {
        self.window.push(services, samples);
        let (t, n_max, version) = self.lock().shape;
        if let Some(n) = n_max
            && services.len() > n
        {
            let mut g = self.lock();
            g.status.unfit_ticks += 1;
            if g.status.unfit_reason.is_none() {
                let why = format!(
                    "{} services, the model takes at most {n}: needs retraining for this deployment (no prediction until then)",
                    services.len()
                );
                log::warn!("predict: {why}");
                g.status.unfit_reason = Some(why);
            }
            return;
        }
        if services.is_empty() {
            return;
        }
        let req = self.window.request(ts_ms, services, edges, t, version);
        if let Some(tx) = &self.tx {
            match tx.try_send(req) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => self.lock().status.late += 1,
                Err(TrySendError::Disconnected(_)) => {
                    let mut g = self.lock();
                    if g.status.last_error.is_none() {
                        g.status.last_error = Some("the inference thread stopped".into());
                    }
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        // A panic on the inference thread must not take the tick loop down with it.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The latest result (from this tick's or an earlier request).
    pub fn latest(&self) -> Option<Prediction> {
        self.lock().latest.clone()
    }

    pub fn status(&self) -> Status {
        self.lock().status.clone()
    }

    /// Stops the inference thread (after its current run).
    pub fn shutdown(mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn worker(
    env: &'static ort::environment::Environment,
    lib: &Path,
    path: PathBuf,
    tick_ms: u64,
    mut cur: Loaded,
    rx: mpsc::Receiver<Request>,
    shared: Arc<Mutex<Shared>>,
) {
    let lock = || shared.lock().unwrap_or_else(|e| e.into_inner());
    let mut x: Vec<f32> = Vec::new();
    let mut failed_stamp = None;
    while let Ok(req) = rx.recv() {
        // Hot reload: a different file under the model's path.
        let now = stamp(&path);
        if now.is_some() && now != Some(cur.stamp) && now != failed_stamp {
            match load(env, &path, tick_ms) {
                Ok(l) => {
                    let mi = info(&path, &l, lib);
                    log::info!(
                        "predict: reloaded {} ({} network, T = {}, horizon {} ms)",
                        path.display(),
                        mi.network,
                        mi.t,
                        mi.horizon_ms
                    );
                    let mut g = lock();
                    g.status.reloads += 1;
                    g.status.model = Some(mi);
                    g.status.last_error = None;
                    g.shape = (l.card.t, l.card.services.n_max, g.shape.2 + 1);
                    cur = l;
                    failed_stamp = None;
                    // This request was shaped for the previous model.
                    continue;
                }
                Err(e) => {
                    log::error!(
                        "predict: the new model file is refused, keeping the previous one: {e}"
                    );
                    let mut g = lock();
                    g.status.reload_failures += 1;
                    g.status.last_error = Some(e);
                    failed_stamp = now;
                }
            }
        }
        if req.version != lock().shape.2 || req.t != cur.card.t {
            continue;
        }
        let t0 = Instant::now();
        let res = run(&mut cur, &req, &mut x);
        let us = t0.elapsed().as_micros() as u64;
        let mut g = lock();
        match res {
            Ok(p) => {
                g.status.runs += 1;
                let b = INFER_BUCKETS_US
                    .iter()
                    .position(|&ub| us <= ub)
                    .unwrap_or(INFER_BUCKETS_US.len());
                g.status.infer_hist[b] += 1;
                g.status.infer_sum_us += us;
                g.latest = Some(Prediction {
                    ts_ms: req.ts_ms,
                    model: cur.card.name.clone(),
                    ids: req.ids,
                    p,
                    infer_us: us,
                });
            }
            Err(e) => {
                g.status.failures += 1;
                if g.status.last_error.as_deref() != Some(e.as_str()) {
                    log::error!("predict: inference failed: {e}");
                }
                g.status.last_error = Some(e);
            }
        }
    }
}

fn run(cur: &mut Loaded, req: &Request, x: &mut Vec<f32>) -> Result<Vec<f32>, String> {
    let n = req.ids.len();
    let n_in = match cur.card.services.n_max {
        Some(m) => m,
        None => n,
    };
    if n > n_in {
        return Err(format!(
            "{n} services, the model takes at most {n_in}: needs retraining"
        ));
    }
    input::normalise(&cur.card, &cur.zeroed, req, n_in, x);
    let shape = [1usize, req.t, n_in, CHANNELS];
    let xv = ort::value::TensorRef::from_array_view((shape, &x[..])).map_err(|e| e.to_string())?;
    let out = match cur.graph {
        None => cur.session.run(ort::inputs!["x" => xv]),
        Some(GraphInput::Edges) => {
            let flat: &[i64] = req.edges.as_flattened();
            let e = ort::value::TensorRef::from_array_view(([req.edges.len(), 2], flat))
                .map_err(|e| e.to_string())?;
            cur.session.run(ort::inputs!["x" => xv, "edges" => e])
        }
        Some(GraphInput::Adj) => {
            let adj = input::dense_adj(n, &req.edges);
            let a = ort::value::TensorRef::from_array_view(([n, n], &adj[..]))
                .map_err(|e| e.to_string())?;
            cur.session.run(ort::inputs!["x" => xv, "adj" => a])
        }
    }
    .map_err(|e| e.to_string())?;
    let (shape, p) = out["p"]
        .try_extract_tensor::<f32>()
        .map_err(|e| e.to_string())?;
    if p.len() != n_in {
        return Err(format!(
            "output p has shape {shape:?}, expected [1, {n_in}]"
        ));
    }
    Ok(p[..n]
        .iter()
        .map(|v| {
            if v.is_finite() {
                v.clamp(0.0, 1.0)
            } else {
                0.0
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::TempDir;

    /// models/fixtures/parity: a small graph model and a real window with Python's output.
    fn fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/fixtures/parity")
    }

    fn env() -> &'static ort::environment::Environment {
        match runtime::environment(None) {
            Ok((e, _)) => e,
            Err(e) => panic!("{e} (the test command's set-up installs it)"),
        }
    }

    /// A copy of the fixture model in a directory of its own (mode 0755, ours).
    fn copy_model(dir: &TempDir) -> PathBuf {
        let m = dir.path().join("m.onnx");
        std::fs::copy(fixture().join("model.onnx"), &m).unwrap();
        std::fs::copy(fixture().join("model.json"), dir.path().join("m.json")).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        m
    }

    fn window() -> (Request, Vec<f32>) {
        let text = std::fs::read_to_string(fixture().join("window.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let f = |k: &str| -> Vec<f32> {
            v[k].as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        };
        let n = v["n"].as_u64().unwrap() as usize;
        let req = Request {
            ts_ms: 0,
            ids: (0..n as u32).map(ServiceId).collect(),
            t: v["t"].as_u64().unwrap() as usize,
            raw: f("raw"),
            edges: v["edges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| [e[0].as_i64().unwrap(), e[1].as_i64().unwrap()])
                .collect(),
            version: 1,
        };
        (req, f("p"))
    }

    #[test]
    fn rust_and_python_give_the_same_probabilities() {
        let mut l = load(env(), &fixture().join("model.onnx"), 100).unwrap();
        let (req, want) = window();
        let got = run(&mut l, &req, &mut Vec::new()).unwrap();
        assert_eq!(got.len(), want.len());
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            worst <= 1e-5,
            "Rust {got:?}\nPython {want:?}\nmax diff {worst}"
        );
    }

    #[test]
    fn a_model_that_does_not_fit_is_refused_with_what_is_wrong() {
        let d = TempDir::new("infer-unfit");
        let m = copy_model(&d);
        let card = d.path().join("m.json");
        let text = std::fs::read_to_string(&card).unwrap();
        std::fs::write(&card, text.replace("\"rx_queue_bytes\"", "\"rx_queue\"")).unwrap();
        let Err(e) = load(env(), &m, 100) else {
            panic!("a card with other channels was accepted")
        };
        assert!(e.contains("channels") && e.contains("rx_queue"), "{e}");
        // The tick the model was trained on.
        std::fs::write(&card, text).unwrap();
        let Err(e) = load(env(), &m, 250) else {
            panic!("a 100 ms model was accepted at 250 ms ticks")
        };
        assert!(e.contains("100 ms ticks"), "{e}");
        // Not a model at all.
        std::fs::write(&m, b"not an onnx file").unwrap();
        let Err(e) = load(env(), &m, 100) else {
            panic!("garbage was loaded as a model")
        };
        assert!(e.contains("m.onnx"), "{e}");
        // No card beside it.
        std::fs::remove_file(&card).unwrap();
        let Err(e) = load(env(), &m, 100) else {
            panic!("a model without its card was accepted")
        };
        assert!(e.contains("m.json"), "{e}");
    }

    #[test]
    fn a_model_others_can_write_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let d = TempDir::new("infer-perm");
        let m = copy_model(&d);
        std::fs::set_permissions(&m, std::fs::Permissions::from_mode(0o666)).unwrap();
        let Err(e) = load(env(), &m, 100) else {
            panic!("a world-writable model was loaded")
        };
        assert!(e.contains("writable by group or others"), "{e}");
        std::fs::set_permissions(&m, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let Err(e) = load(env(), &m, 100) else {
            panic!("a model in a world-writable directory was loaded")
        };
        assert!(e.contains("directory"), "{e}");
    }

    #[test]
    fn a_missing_library_is_named() {
        let e =
            runtime::find_library(Some(Path::new("/nonexistent/libonnxruntime.so"))).unwrap_err();
        assert!(e.contains("/nonexistent/libonnxruntime.so"), "{e}");
    }

    fn services(n: u32) -> Vec<crate::discovery::Service> {
        (0..n)
            .map(|i| crate::discovery::Service {
                id: ServiceId(i),
                name: format!("s{i}"),
                ..Default::default()
            })
            .collect()
    }

    /// Feeds ticks until the stage has run `runs` inferences in all (or 10 s pass).
    fn feed_until(p: &mut Predictor, runs: u64) -> Status {
        let svcs = services(3);
        let samples: Vec<Sample> = svcs
            .iter()
            .map(|s| Sample {
                service: s.id,
                ts_ms: 0,
                values: [5.0; CHANNELS],
            })
            .collect();
        let edges = [(ServiceId(2), ServiceId(1))].into_iter().collect();
        let t0 = Instant::now();
        let mut ts = 0;
        loop {
            ts += 100;
            p.on_tick(ts, &svcs, &samples, &edges);
            let st = p.status();
            if st.runs >= runs || t0.elapsed().as_secs() > 10 {
                return st;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn a_replaced_model_is_used_and_a_broken_one_keeps_the_previous() {
        let d = TempDir::new("infer-reload");
        let m = copy_model(&d);
        let mut p = Predictor::start(&m, None, 100).unwrap();
        let st = feed_until(&mut p, 3);
        assert!(st.runs >= 3, "{st:?}");
        let first = p.latest().unwrap();
        assert_eq!(first.p.len(), 3);
        // A broken file renamed over the model: refused, the previous model goes on.
        let tmp = d.path().join("m.onnx.new");
        std::fs::write(&tmp, b"truncated").unwrap();
        std::fs::rename(&tmp, &m).unwrap();
        let st = feed_until(&mut p, st.runs + 3);
        assert_eq!(st.reload_failures, 1, "{st:?}");
        assert!(
            st.last_error.as_deref().unwrap_or("").contains("m.onnx"),
            "{st:?}"
        );
        assert_eq!(st.model.as_ref().unwrap().threshold, first_threshold(&d));
        // A good model with another threshold: loaded at the next tick.
        let card = d.path().join("m.json");
        let text = std::fs::read_to_string(&card).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut v2 = v.clone();
        v2["threshold"] = serde_json::json!(0.77);
        std::fs::write(&card, v2.to_string()).unwrap();
        std::fs::copy(fixture().join("model.onnx"), &tmp).unwrap();
        std::fs::rename(&tmp, &m).unwrap();
        let st = feed_until(&mut p, st.runs + 3);
        assert_eq!(st.reloads, 1, "{st:?}");
        assert_eq!(st.model.as_ref().unwrap().threshold, 0.77);
        assert!(st.last_error.is_none(), "{st:?}");
        p.shutdown();
    }

    fn first_threshold(_d: &TempDir) -> f32 {
        let text = std::fs::read_to_string(fixture().join("model.json")).unwrap();
        Card::parse("model.json", &text).unwrap().threshold
    }
}
