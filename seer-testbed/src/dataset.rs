//! `OUT/dataset/`: one labelled training set per run, joining every host agent's trace with the
//! ground truth. Written after a run with `--agent-bin`.
//!
//! The per-host traces are read from the agents' stores (`OUT/agent-HOST.redb`) with
//! `seer-store`'s own reader (services, ticks, call graph, missing channels), so nothing here
//! re-declares the trace schema; channel names are `seer_common::sample::CHANNEL_NAMES`.
//!
//! **Grid.** Each agent ticks on its own phase; the dataset puts every sample in the tick
//! bucket `floor(ts / tick) * tick` and keeps the ticks every host covered (from the latest
//! first tick to the earliest last tick). Every tick has one row per service, in the
//! manifest's service order (topological over the observed call graph, callees first), so
//! `samples.arrow` reshapes to `[T, N, ...]` as it is. A bucket where a service's agent wrote
//! no sample repeats its latest earlier one (`filled = 1`; zeros for a service no agent had
//! sampled yet). The join is `seer_store::grid`, the code cluster mode's central predictor
//! assembles its live ticks with, so training rows and live rows are made the same way.
//!
//! **Services** are the scenario's names: an agent service whose cgroup is the testbed's
//! cgroup for a scenario service on that host gets that name; anything else an agent found is
//! named `HOST/NAME` so names never collide across hosts.
//!
//! **Labels** (per tick; `violation_*` columns repeat on each service's row of a tick) refer
//! to the end of the tick's bucket, `e = ts_ms + tick_ms`, which is after every sample of the
//! row (no label looks at a time before its features were taken). A violation from
//! `violations.csv` is active at `e` when `start_unix_ms <= e < end_unix_ms + step_ms` (a
//! violation's start is the end of its first window over the target). For each horizon `H` in
//! `horizons_ms`: `violation_in_Hms` = 1 if a violation is active at `e` or starts in
//! `(e, e + H]`;
//! `initiator_in_Hms` = 1 on the row of that violation's initiating service (the model's
//! target `p[N]`). `violation_id`, `initiator`, `fault_kind`, `onset`, `random` describe the
//! violation that is active (else the next one starting within the largest horizon).
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fs::File,
    io::BufWriter,
    path::{Path, PathBuf},
    sync::Arc,
};

use arrow_array::{
    ArrayRef, DictionaryArray, Float32Array, Int8Array, Int32Array, Int64Array, RecordBatch,
    UInt8Array, UInt16Array, types::Int32Type,
};
use arrow_ipc::{
    CompressionType,
    writer::{FileWriter, IpcWriteOptions},
};
use arrow_schema::{DataType, Field, Schema};
use seer_common::sample::{CHANNEL_NAMES, CHANNELS, ServiceId};
use seer_store::{Store, StoreConfig, TickSamples, graph::topo_order, grid::Grid};
use serde::Serialize;

use crate::{
    callgraph::{self, Edge},
    error::{Error, Result},
    faults::FaultRecord,
    plan::Plan,
    scenario::{Kind, Scenario},
    truth::{Violation, Window},
};

pub const DIR: &str = "dataset";
pub const DATA_FILE: &str = "samples.arrow";
pub const MANIFEST_FILE: &str = "manifest.json";
pub const EDGES_FILE: &str = "edges.csv";
/// Default label horizons.
pub const DEFAULT_HORIZONS_MS: [u64; 2] = [100, 500];

/// What the dataset is built from.
pub struct Input<'a> {
    pub sc: &'a Scenario,
    pub plan: &'a Plan,
    pub out: &'a Path,
    pub t0_unix_ms: u64,
    pub windows: &'a [Window],
    pub violations: &'a [Violation],
    pub faults: &'a [FaultRecord],
    pub horizons_ms: &'a [u64],
    /// Cross-host edges the testbed saw (socket snapshots during the load).
    pub observed_edges: Vec<Edge>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DatasetSummary {
    pub dir: PathBuf,
    pub rows: usize,
    pub ticks: usize,
    pub services: usize,
    pub edges: usize,
    /// Ticks with `violation = 1`.
    pub violation_ticks: usize,
    pub hosts_without_trace: Vec<String>,
}

fn err(what: String) -> Error {
    Error::Setup(format!("dataset: {what}"))
}

/// One host's trace, by dataset service name (the grid puts it in tick buckets).
struct HostTrace {
    tick_ms: u64,
    /// The first and last tick buckets it covers.
    first: u64,
    last: u64,
    /// (dataset name, agent ts, values), oldest first.
    samples: Vec<(String, u64, [f32; CHANNELS])>,
    /// (dataset name, agent id, identity)
    services: Vec<(String, u32, String)>,
    edges: Vec<(String, String)>,
    missing: Vec<String>,
}

/// The dataset name of an agent service found on `host`.
fn dataset_name(plan: &Plan, host: &str, name: &str, identity: &str) -> String {
    let by_cgroup = identity
        .strip_prefix("cgroup:/")
        .and_then(|cg| plan.services.iter().find(|s| s.cgroup == cg));
    let by_name = plan.services.iter().find(|s| s.name == name);
    match by_cgroup.or(by_name) {
        Some(s) if s.host == host => s.name.clone(),
        _ => format!("{host}/{name}"),
    }
}

fn read_host(plan: &Plan, host: &str, db: &Path) -> Result<HostTrace> {
    let store = Store::open(db, StoreConfig::default())
        .map_err(|e| err(format!("cannot open {}: {e}", db.display())))?;
    let st = |e: seer_store::StoreError| err(format!("{}: {e}", db.display()));
    let tick_ms = store.tick_ms().map_err(st)?.max(1);
    let mut names: HashMap<u32, String> = HashMap::new();
    let mut services = Vec::new();
    for s in store.services().map_err(st)? {
        let n = dataset_name(plan, host, &s.name, &s.identity);
        names.insert(s.id.0, n.clone());
        services.push((n, s.id.0, s.identity.clone()));
    }
    let name_of = |id: u32| {
        names
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("{host}/#{id}"))
    };
    let edges = store
        .edges_between(0, u64::MAX)
        .map_err(st)?
        .into_iter()
        .map(|(a, b)| (name_of(a.0), name_of(b.0)))
        .collect();
    let mut samples = Vec::new();
    let mut iter = store.range(0, u64::MAX).map_err(st)?;
    let mut tick = TickSamples::default();
    let (mut first, mut last) = (u64::MAX, 0);
    while iter.next_into(&mut tick).map_err(st)? {
        let b = tick.ts_ms / tick_ms * tick_ms;
        first = first.min(b);
        last = last.max(b);
        for s in &tick.samples {
            samples.push((name_of(s.service.0), tick.ts_ms, s.values));
        }
    }
    Ok(HostTrace {
        tick_ms,
        first,
        last,
        samples,
        services,
        edges,
        missing: store.missing_channels().map_err(st)?,
    })
}

/// Per-row label state of one tick.
struct TickLabel<'a> {
    active: bool,
    ms_to: i64,
    /// The violation the label columns describe (active, else next within the largest horizon).
    v: Option<&'a Violation>,
    /// Per horizon: whether `v` is active or starts within it.
    within: Vec<bool>,
}

fn label_at<'a>(vs: &'a [Violation], ts: i64, step_ms: i64, horizons: &[u64]) -> TickLabel<'a> {
    let active = vs
        .iter()
        .filter(|v| v.start_unix_ms <= ts && ts < v.end_unix_ms + step_ms)
        .max_by_key(|v| v.start_unix_ms);
    let next = vs
        .iter()
        .filter(|v| v.start_unix_ms > ts)
        .min_by_key(|v| v.start_unix_ms);
    let ms_to = match (active, next) {
        (Some(_), _) => 0,
        (None, Some(n)) => n.start_unix_ms - ts,
        (None, None) => -1,
    };
    let max_h = horizons.iter().copied().max().unwrap_or(0) as i64;
    let v = active.or(next.filter(|_| ms_to <= max_h));
    let within = horizons
        .iter()
        .map(|&h| active.is_some() || (next.is_some() && ms_to <= h as i64))
        .collect();
    TickLabel {
        active: active.is_some(),
        ms_to,
        v,
        within,
    }
}

#[derive(Serialize)]
struct ManifestService {
    idx: usize,
    name: String,
    host: String,
    kind: String,
    /// Which agent recorded it: (host, agent service id, identity); empty if none did.
    agent: Vec<(String, u32, String)>,
}

#[derive(Serialize)]
struct Manifest<'a> {
    format: &'static str,
    data_file: &'static str,
    edges_file: &'static str,
    scenario: &'a str,
    run: &'a str,
    tick_ms: u64,
    t0_unix_ms: u64,
    first_tick_ms: u64,
    last_tick_ms: u64,
    ticks: usize,
    rows: usize,
    /// The model's axes: T = ticks, N = services (rows per tick), C = channels.
    shape: [usize; 3],
    channels: &'a [&'static str],
    /// Union over hosts of the channels an agent could not observe (zeros mean "not seen").
    missing_channels: Vec<String>,
    service_order: &'static str,
    services: Vec<ManifestService>,
    columns: Vec<(String, String, String)>,
    horizons_ms: &'a [u64],
    step_ms: u64,
    edges: &'a [EdgeOut],
    violations: &'a [Violation],
    faults: &'a [FaultRecord],
    hosts_without_trace: &'a [String],
}

#[derive(Serialize, Clone)]
struct EdgeOut {
    #[serde(flatten)]
    edge: Edge,
    /// The scenario declares this call.
    declared: bool,
}

/// Builds `OUT/dataset/`.
pub fn build(inp: Input<'_>) -> Result<DatasetSummary> {
    if inp.horizons_ms.is_empty() {
        return Err(err("no label horizon".into()));
    }
    let dir = inp.out.join(DIR);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("cannot create", &dir, e))?;
    let mut traces = Vec::new();
    let mut without = Vec::new();
    for h in &inp.plan.hosts {
        let db = inp.out.join(format!("agent-{}.redb", h.name));
        if !db.is_file() {
            without.push(h.name.clone());
            continue;
        }
        let t = read_host(inp.plan, &h.name, &db)?;
        if t.samples.is_empty() {
            without.push(h.name.clone());
            continue;
        }
        traces.push((h.name.clone(), t));
    }
    let Some(tick_ms) = traces.first().map(|(_, t)| t.tick_ms) else {
        return Err(err(format!(
            "no agent trace in {} (run with --agent-bin)",
            inp.out.display()
        )));
    };
    if let Some((h, t)) = traces.iter().find(|(_, t)| t.tick_ms != tick_ms) {
        return Err(err(format!(
            "agents tick differently ({} ms on {h}, {tick_ms} ms elsewhere)",
            t.tick_ms
        )));
    }
    let first = traces.iter().map(|(_, t)| t.first).max().unwrap_or(0);
    let last = traces.iter().map(|(_, t)| t.last).min().unwrap_or(0);
    if first > last {
        return Err(err("the agents' traces do not overlap in time".into()));
    }

    // Services: the scenario's, then whatever else an agent found (host-qualified).
    let mut names: Vec<String> = inp.plan.services.iter().map(|s| s.name.clone()).collect();
    let mut agent_of: HashMap<String, Vec<(String, u32, String)>> = HashMap::new();
    for (h, t) in &traces {
        for (n, id, identity) in &t.services {
            if !names.contains(n) {
                names.push(n.clone());
            }
            agent_of
                .entry(n.clone())
                .or_default()
                .push((h.clone(), *id, identity.clone()));
        }
    }

    // The call graph: socket snapshots (cross-host) and the agents' own edges (same host).
    let host_of = |n: &str| {
        inp.plan.service(n).map_or_else(
            || n.split('/').next().unwrap_or("").to_string(),
            |s| s.host.clone(),
        )
    };
    let mut all = inp.observed_edges.clone();
    for (_, t) in &traces {
        for (a, b) in &t.edges {
            all.push(Edge {
                caller: a.clone(),
                callee: b.clone(),
                caller_host: host_of(a),
                callee_host: host_of(b),
                connections: 0,
                source: "agent".into(),
            });
        }
    }
    let declared = callgraph::declared(inp.sc);
    let edges: Vec<EdgeOut> = callgraph::merge(all)
        .into_iter()
        .map(|e| EdgeOut {
            declared: declared.contains(&(e.caller.clone(), e.callee.clone())),
            edge: e,
        })
        .collect();
    for e in &edges {
        for n in [&e.edge.caller, &e.edge.callee] {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
    }
    let idx: HashMap<&str, u32> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i as u32))
        .collect();
    let ids: Vec<ServiceId> = (0..names.len() as u32).map(ServiceId).collect();
    let id_edges: Vec<(ServiceId, ServiceId)> = edges
        .iter()
        .filter_map(|e| {
            Some((
                ServiceId(*idx.get(e.edge.caller.as_str())?),
                ServiceId(*idx.get(e.edge.callee.as_str())?),
            ))
        })
        .collect();
    let (order, service_order) = if id_edges.is_empty() {
        (ids, "scenario")
    } else {
        (topo_order(&ids, &id_edges), "topological")
    };
    let order: Vec<&str> = order.iter().map(|i| names[i.0 as usize].as_str()).collect();

    // Rows.
    let step_ms = inp.sc.qos.step_ms;
    let mut vs: Vec<Violation> = inp.violations.to_vec();
    vs.sort_by_key(|v| v.start_unix_ms);
    let p99_at: BTreeMap<i64, u64> = inp
        .windows
        .iter()
        .filter(|w| w.n >= inp.sc.qos.min_samples)
        .map(|w| (inp.t0_unix_ms as i64 + w.t_ms, w.p99_us))
        .collect();
    let mut cols = Cols::new(inp.horizons_ms.len());
    // The grid the central predictor joins hosts on (seer_store::grid), one lane per service.
    let mut grid: Grid<&str, (u64, [f32; CHANNELS])> = Grid::new(tick_ms, None);
    grid.start_at(grid.slot_of(first));
    for (_, t) in &traces {
        for (n, sample_ts, values) in &t.samples {
            // Before the first tick every host covered: refused, kept as the latest.
            let _ = grid.insert(n.as_str(), *sample_ts, (*sample_ts, *values));
        }
    }
    let mut ticks = 0;
    let mut violation_ticks = 0;
    let mut ts = first;
    while ts <= last {
        ticks += 1;
        // Labels refer to the end of the bucket: every sample of the row was taken before it.
        let at = ts + tick_ms;
        let l = label_at(&vs, at as i64, step_ms as i64, inp.horizons_ms);
        violation_ticks += usize::from(l.active);
        // The end-to-end p99 of the latest judged window ending at or before this tick.
        let p99 = p99_at
            .range(..=ts as i64)
            .next_back()
            .filter(|(t, _)| ts as i64 - **t < step_ms as i64)
            .map_or(-1, |(_, &p)| p as i64);
        let cells: HashMap<&str, (u8, (u64, [f32; CHANNELS]))> = match grid.close_next() {
            Some((_, cells)) => cells
                .iter()
                .map(|c| (*c.key, (u8::from(c.repeated), *c.value)))
                .collect(),
            None => HashMap::new(),
        };
        for (i, n) in order.iter().enumerate() {
            let (filled, (sample_ts, values)) =
                cells.get(n).copied().unwrap_or((1, (0, [0.0; CHANNELS])));
            cols.ts.push(ts as i64);
            cols.t.push(ts as i64 - inp.t0_unix_ms as i64);
            cols.idx.push(i as u16);
            cols.service.push(n.to_string());
            cols.host.push(host_of(n));
            cols.filled.push(filled);
            cols.sample_ts
                .push(if sample_ts == 0 { -1 } else { sample_ts as i64 });
            for (c, v) in cols.values.iter_mut().zip(values) {
                c.push(v);
            }
            cols.p99.push(p99);
            cols.violation.push(u8::from(l.active));
            cols.ms_to.push(l.ms_to);
            cols.vid.push(l.v.map_or(-1, |v| v.id as i32));
            let s = |f: fn(&Violation) -> &Option<String>| {
                l.v.and_then(|v| f(v).clone()).unwrap_or_default()
            };
            let initiator = s(|v| &v.initiator);
            cols.fault_kind.push(s(|v| &v.fault_kind));
            cols.onset.push(s(|v| &v.onset));
            cols.random
                .push(l.v.and_then(|v| v.random).map_or(-1, i8::from));
            for (h, w) in l.within.iter().enumerate() {
                cols.within[h].push(u8::from(*w));
                cols.init_within[h].push(u8::from(*w && initiator == *n));
            }
            cols.initiator.push(initiator);
            cols.fault_active.push(u8::from(inp.faults.iter().any(|f| {
                f.service == *n
                    && f.applied_unix_ms > 0
                    && f.applied_unix_ms <= at
                    && (f.removed_unix_ms == 0 || at < f.removed_unix_ms)
            })));
        }
        ts += tick_ms;
    }
    let rows = cols.ts.len();
    let (schema, batch) = cols.into_batch(inp.horizons_ms)?;
    write_arrow(&dir, &schema, batch)?;

    // edges.csv and the manifest.
    let mut csv =
        String::from("caller,callee,caller_host,callee_host,connections,source,declared\n");
    for e in &edges {
        csv.push_str(&format!(
            "{},{},{},{},{},{},{}\n",
            e.edge.caller,
            e.edge.callee,
            e.edge.caller_host,
            e.edge.callee_host,
            e.edge.connections,
            e.edge.source,
            e.declared
        ));
    }
    let p = dir.join(EDGES_FILE);
    std::fs::write(&p, csv).map_err(|e| Error::io("cannot write", p, e))?;
    let mut missing: BTreeSet<String> = BTreeSet::new();
    for (_, t) in &traces {
        missing.extend(t.missing.iter().cloned());
    }
    let kind_of = |n: &str| {
        inp.sc
            .services
            .iter()
            .find(|s| s.name.get_ref() == n)
            .map_or("unknown".to_string(), |s| kind_name(s.kind).to_string())
    };
    let manifest = Manifest {
        format: "seer-testbed-dataset-v1",
        data_file: DATA_FILE,
        edges_file: EDGES_FILE,
        scenario: &inp.sc.name,
        run: &inp.plan.run,
        tick_ms,
        t0_unix_ms: inp.t0_unix_ms,
        first_tick_ms: first,
        last_tick_ms: last,
        ticks,
        rows,
        shape: [ticks, order.len(), CHANNELS],
        channels: &CHANNEL_NAMES,
        missing_channels: missing.into_iter().collect(),
        service_order,
        services: order
            .iter()
            .enumerate()
            .map(|(i, n)| ManifestService {
                idx: i,
                name: n.to_string(),
                host: host_of(n),
                kind: kind_of(n),
                agent: agent_of.get(*n).cloned().unwrap_or_default(),
            })
            .collect(),
        columns: column_docs(inp.horizons_ms),
        horizons_ms: inp.horizons_ms,
        step_ms,
        edges: &edges,
        violations: &vs,
        faults: inp.faults,
        hosts_without_trace: &without,
    };
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| Error::Json {
        what: "dataset manifest",
        source: e,
    })?;
    let p = dir.join(MANIFEST_FILE);
    std::fs::write(&p, text).map_err(|e| Error::io("cannot write", p, e))?;
    Ok(DatasetSummary {
        dir,
        rows,
        ticks,
        services: order.len(),
        edges: edges.len(),
        violation_ticks,
        hosts_without_trace: without,
    })
}

/// The parts of a `faults.json` record the dataset needs (`resource` and `unit` follow from the
/// kind).
#[derive(serde::Deserialize)]
struct FaultOnDisk {
    id: usize,
    kind: crate::scenario::FaultKind,
    service: String,
    host: String,
    intensity: f64,
    onset: crate::scenario::Onset,
    ramp_s: Option<f64>,
    burst_on_s: Option<f64>,
    burst_period_s: Option<f64>,
    random: bool,
    start_s: f64,
    end_s: f64,
    applied_unix_ms: u64,
    removed_unix_ms: u64,
    error: Option<String>,
    #[serde(default)]
    hog_cpus: Option<String>,
    #[serde(default)]
    victim_cpus: Option<String>,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("cannot read", path, e))?;
    serde_json::from_str(&text).map_err(|e| err(format!("{}: {e}", path.display())))
}

/// `seer-testbed dataset`: rebuilds `OUT/dataset/` from a finished run's output (agent stores,
/// `topology.json`, `summary.json`, `faults.json`, `violations.json`, `windows.csv`, and the
/// socket-observed edges of the previous `dataset/edges.csv` if any), e.g. with other horizons.
pub fn rebuild(sc: &Scenario, out: &Path, horizons_ms: &[u64]) -> Result<DatasetSummary> {
    let plan: Plan = read_json(&out.join("topology.json"))?;
    let summary: serde_json::Value = read_json(&out.join("summary.json"))?;
    let t0_unix_ms = summary["t0_unix_ms"].as_u64().ok_or_else(|| {
        err(format!(
            "{}: no t0_unix_ms",
            out.join("summary.json").display()
        ))
    })?;
    let violations: Vec<Violation> = read_json(&out.join("violations.json"))?;
    let faults: Vec<FaultOnDisk> = read_json(&out.join("faults.json"))?;
    let faults: Vec<FaultRecord> = faults
        .into_iter()
        .map(|f| {
            let (resource, unit) = crate::faults::resource(f.kind);
            FaultRecord {
                id: f.id,
                kind: f.kind,
                service: f.service,
                host: f.host,
                resource,
                intensity: f.intensity,
                unit,
                onset: f.onset,
                ramp_s: f.ramp_s,
                burst_on_s: f.burst_on_s,
                burst_period_s: f.burst_period_s,
                random: f.random,
                start_s: f.start_s,
                end_s: f.end_s,
                applied_unix_ms: f.applied_unix_ms,
                removed_unix_ms: f.removed_unix_ms,
                error: f.error,
                hog_cpus: f.hog_cpus,
                victim_cpus: f.victim_cpus,
            }
        })
        .collect();
    let wpath = out.join("windows.csv");
    let wtext = std::fs::read_to_string(&wpath).map_err(|e| Error::io("cannot read", &wpath, e))?;
    let mut windows = Vec::new();
    for (i, line) in wtext.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let bad = || err(format!("{}:{}: malformed window", wpath.display(), i + 1));
        let [t, n, p99, failed] = f[..] else {
            return Err(bad());
        };
        windows.push(Window {
            t_ms: t.parse().map_err(|_| bad())?,
            n: n.parse().map_err(|_| bad())?,
            p99_us: p99.parse().map_err(|_| bad())?,
            failed: failed.parse().map_err(|_| bad())?,
        });
    }
    // Socket observations are made while the testbed runs: keep the previous build's.
    let mut observed_edges = Vec::new();
    if let Ok(text) = std::fs::read_to_string(out.join(DIR).join(EDGES_FILE)) {
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            if let [caller, callee, ch, dh, n, source, _] = f[..]
                && source.split('+').any(|s| s == "sockets")
            {
                observed_edges.push(Edge {
                    caller: caller.into(),
                    callee: callee.into(),
                    caller_host: ch.into(),
                    callee_host: dh.into(),
                    connections: n.parse().unwrap_or(0),
                    source: "sockets".into(),
                });
            }
        }
    }
    build(Input {
        sc,
        plan: &plan,
        out,
        t0_unix_ms,
        windows: &windows,
        violations: &violations,
        faults: &faults,
        horizons_ms,
        observed_edges,
    })
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Nginx => "nginx",
        Kind::Rpc => "rpc",
        Kind::Memcached => "memcached",
        Kind::Redis => "redis",
    }
}

/// (name, type, meaning) of every column, in order.
fn column_docs(horizons: &[u64]) -> Vec<(String, String, String)> {
    let c = |n: &str, t: &str, m: &str| (n.to_string(), t.to_string(), m.to_string());
    let mut v = vec![
        c(
            "ts_ms",
            "int64",
            "tick bucket start, Unix ms (agents' CLOCK_REALTIME)",
        ),
        c(
            "t_ms",
            "int64",
            "scenario time of the tick (ts_ms - t0_unix_ms; < 0 in warm-up)",
        ),
        c(
            "service_idx",
            "uint16",
            "position in manifest.services (the model's N axis)",
        ),
        c(
            "service",
            "dictionary<int32,utf8>",
            "scenario service name (HOST/NAME for others)",
        ),
        c(
            "host",
            "dictionary<int32,utf8>",
            "testbed host (network namespace)",
        ),
        c(
            "filled",
            "uint8",
            "1: no sample of this service in this tick; values repeat its latest earlier sample (zeros while no agent had sampled it)",
        ),
        c(
            "sample_ts_ms",
            "int64",
            "the agent's own tick time of the values (-1: none yet)",
        ),
    ];
    v.extend(CHANNEL_NAMES.iter().map(|n| {
        c(
            n,
            "float32",
            "agent channel (see seer-common CHANNEL_NAMES)",
        )
    }));
    v.extend([
        c("e2e_p99_us", "int64", "end-to-end p99 of the judged window ending in this tick (-1: none)"),
        c("violation", "uint8", "1: a QoS violation is active at e = ts_ms + tick_ms, the end of the bucket (start_unix_ms <= e < end_unix_ms + step_ms)"),
        c("ms_to_violation", "int64", "0 while active at e, else ms from e until the next violation starts, -1 if none"),
        c("violation_id", "int32", "id (violations.csv) of the active violation, else of the next one within the largest horizon, else -1"),
        c("initiator", "dictionary<int32,utf8>", "that violation's initiating service ('' none/unattributed)"),
        c("fault_kind", "dictionary<int32,utf8>", "that violation's fault kind ('' none)"),
        c("onset", "dictionary<int32,utf8>", "that violation's fault onset: step | ramp | bursts ('' none)"),
        c("random", "int8", "that violation's fault was unannounced (random start): 1, 0, or -1 none"),
    ]);
    for h in horizons {
        v.push(c(
            &format!("violation_in_{h}ms"),
            "uint8",
            &format!("1: a violation is active at e or starts within (e, e + {h} ms], e = ts_ms + tick_ms"),
        ));
        v.push(c(
            &format!("initiator_in_{h}ms"),
            "uint8",
            &format!(
                "1 on the initiating service's row when violation_in_{h}ms = 1 (the model target)"
            ),
        ));
    }
    v.push(c(
        "fault_active",
        "uint8",
        "1: a fault targeting this service is applied at e = ts_ms + tick_ms (faults.json applied/removed)",
    ));
    v
}

struct Cols {
    ts: Vec<i64>,
    t: Vec<i64>,
    idx: Vec<u16>,
    service: Vec<String>,
    host: Vec<String>,
    filled: Vec<u8>,
    sample_ts: Vec<i64>,
    values: Vec<Vec<f32>>,
    p99: Vec<i64>,
    violation: Vec<u8>,
    ms_to: Vec<i64>,
    vid: Vec<i32>,
    initiator: Vec<String>,
    fault_kind: Vec<String>,
    onset: Vec<String>,
    random: Vec<i8>,
    within: Vec<Vec<u8>>,
    init_within: Vec<Vec<u8>>,
    fault_active: Vec<u8>,
}

impl Cols {
    fn new(horizons: usize) -> Self {
        Self {
            ts: Vec::new(),
            t: Vec::new(),
            idx: Vec::new(),
            service: Vec::new(),
            host: Vec::new(),
            filled: Vec::new(),
            sample_ts: Vec::new(),
            values: (0..CHANNELS).map(|_| Vec::new()).collect(),
            p99: Vec::new(),
            violation: Vec::new(),
            ms_to: Vec::new(),
            vid: Vec::new(),
            initiator: Vec::new(),
            fault_kind: Vec::new(),
            onset: Vec::new(),
            random: Vec::new(),
            within: vec![Vec::new(); horizons],
            init_within: vec![Vec::new(); horizons],
            fault_active: Vec::new(),
        }
    }

    fn into_batch(self, horizons: &[u64]) -> Result<(Arc<Schema>, RecordBatch)> {
        let dict_t = || DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        let dict = |v: Vec<String>| -> ArrayRef {
            Arc::new(
                v.iter()
                    .map(String::as_str)
                    .collect::<DictionaryArray<Int32Type>>(),
            )
        };
        let mut fields = vec![
            Field::new("ts_ms", DataType::Int64, false),
            Field::new("t_ms", DataType::Int64, false),
            Field::new("service_idx", DataType::UInt16, false),
            Field::new("service", dict_t(), false),
            Field::new("host", dict_t(), false),
            Field::new("filled", DataType::UInt8, false),
            Field::new("sample_ts_ms", DataType::Int64, false),
        ];
        let mut arrays: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(self.ts)),
            Arc::new(Int64Array::from(self.t)),
            Arc::new(UInt16Array::from(self.idx)),
            dict(self.service),
            dict(self.host),
            Arc::new(UInt8Array::from(self.filled)),
            Arc::new(Int64Array::from(self.sample_ts)),
        ];
        for (n, v) in CHANNEL_NAMES.iter().zip(self.values) {
            fields.push(Field::new(*n, DataType::Float32, false));
            arrays.push(Arc::new(Float32Array::from(v)));
        }
        fields.extend([
            Field::new("e2e_p99_us", DataType::Int64, false),
            Field::new("violation", DataType::UInt8, false),
            Field::new("ms_to_violation", DataType::Int64, false),
            Field::new("violation_id", DataType::Int32, false),
            Field::new("initiator", dict_t(), false),
            Field::new("fault_kind", dict_t(), false),
            Field::new("onset", dict_t(), false),
            Field::new("random", DataType::Int8, false),
        ]);
        arrays.extend([
            Arc::new(Int64Array::from(self.p99)) as ArrayRef,
            Arc::new(UInt8Array::from(self.violation)),
            Arc::new(Int64Array::from(self.ms_to)),
            Arc::new(Int32Array::from(self.vid)),
            dict(self.initiator),
            dict(self.fault_kind),
            dict(self.onset),
            Arc::new(Int8Array::from(self.random)),
        ]);
        for ((h, w), iw) in horizons.iter().zip(self.within).zip(self.init_within) {
            fields.push(Field::new(
                format!("violation_in_{h}ms"),
                DataType::UInt8,
                false,
            ));
            arrays.push(Arc::new(UInt8Array::from(w)));
            fields.push(Field::new(
                format!("initiator_in_{h}ms"),
                DataType::UInt8,
                false,
            ));
            arrays.push(Arc::new(UInt8Array::from(iw)));
        }
        fields.push(Field::new("fault_active", DataType::UInt8, false));
        arrays.push(Arc::new(UInt8Array::from(self.fault_active)));
        let schema = Arc::new(Schema::new(fields));
        let batch = RecordBatch::try_new(schema.clone(), arrays)
            .map_err(|e| err(format!("cannot build the record batch: {e}")))?;
        Ok((schema, batch))
    }
}

fn write_arrow(dir: &Path, schema: &Arc<Schema>, batch: RecordBatch) -> Result<()> {
    let path = dir.join(DATA_FILE);
    let tmp = dir.join(format!("{DATA_FILE}.tmp"));
    let f = File::create(&tmp).map_err(|e| Error::io("cannot create", &tmp, e))?;
    let ae = |e: arrow_schema::ArrowError| err(format!("{}: {e}", path.display()));
    let opts = IpcWriteOptions::default()
        .try_with_compression(Some(CompressionType::LZ4_FRAME))
        .map_err(ae)?;
    let mut w = FileWriter::try_new_with_options(BufWriter::new(f), schema, opts).map_err(ae)?;
    // Batches of at most 64 Ki rows.
    let mut off = 0;
    while off < batch.num_rows() {
        let n = (batch.num_rows() - off).min(1 << 16);
        w.write(&batch.slice(off, n)).map_err(ae)?;
        off += n;
    }
    w.finish().map_err(ae)?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io("cannot rename", &tmp, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(id: usize, start: i64, end: i64, who: &str) -> Violation {
        Violation {
            id,
            start_ms: 0,
            end_ms: 0,
            start_unix_ms: start,
            end_unix_ms: end,
            peak_p99_us: 0,
            initiator: Some(who.into()),
            fault_id: Some(0),
            fault_kind: Some("cpu_quota".into()),
            resource: Some("cpu".into()),
            onset: Some("ramp".into()),
            lead_ms: Some(0),
            random: Some(false),
        }
    }

    #[test]
    fn labels_follow_horizons() {
        let vs = [v(0, 10_000, 10_500, "a"), v(1, 20_000, 20_000, "b")];
        let h = [100, 500];
        let l = label_at(&vs, 9_400, 100, &h);
        assert!(!l.active && l.v.is_none() && l.within == [false, false]);
        assert_eq!(l.ms_to, 600);
        let l = label_at(&vs, 9_600, 100, &h);
        assert_eq!(l.within, [false, true]);
        assert_eq!(l.v.map(|v| v.id), Some(0));
        let l = label_at(&vs, 9_900, 100, &h);
        assert_eq!(l.within, [true, true]);
        let l = label_at(&vs, 10_599, 100, &h);
        assert!(l.active && l.ms_to == 0);
        let l = label_at(&vs, 10_600, 100, &h);
        assert!(!l.active);
        assert_eq!(l.ms_to, 9_400);
        let l = label_at(&vs, 20_050, 100, &h);
        assert_eq!(l.v.and_then(|v| v.initiator.clone()).as_deref(), Some("b"));
        let l = label_at(&vs, 30_000, 100, &h);
        assert_eq!(l.ms_to, -1);
    }

    /// The join without root: synthetic agent stores on four hosts, out of phase, one service
    /// missing a tick, one extra service, one agent edge; labels from one violation.
    #[test]
    fn joins_host_traces_on_one_grid_with_labels() {
        use arrow_array::cast::AsArray;
        use seer_common::sample::Sample;
        let sc = Scenario::parse("small.toml", include_str!("../scenarios/small.toml")).unwrap();
        let plan = Plan::new(&sc, "ut").unwrap();
        let out = std::env::temp_dir().join(format!("seer-tb-dataset-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out).unwrap();
        let base = 1_800_000_000_000u64;
        for (hi, h) in plan.hosts.iter().enumerate() {
            let store = Store::open(
                out.join(format!("agent-{}.redb", h.name)),
                StoreConfig::default(),
            )
            .unwrap();
            let mut names: Vec<(String, String)> = plan
                .services
                .iter()
                .filter(|s| s.host == h.name)
                .map(|s| (s.name.clone(), format!("cgroup:/{}", s.cgroup)))
                .collect();
            if h.name == "data" {
                names.push(("sshd".into(), "unit:ssh".into()));
            }
            for (i, (n, identity)) in names.iter().enumerate() {
                store
                    .upsert_service(ServiceId(i as u32 + 1), n, identity, base)
                    .unwrap();
            }
            let edges: Vec<(ServiceId, ServiceId)> = if h.name == "app2" {
                vec![(ServiceId(1), ServiceId(2))] // timeline -> user: not declared
            } else {
                Vec::new()
            };
            // Host i starts i ticks late, and ticks 10 * i ms into each bucket.
            for k in hi as u64..50 {
                let ts = base + k * 100 + 10 * hi as u64;
                let samples: Vec<Sample> = (0..names.len())
                    // timeline (app2, id 1) misses tick 20.
                    .filter(|&i| !(h.name == "app2" && i == 0 && k == 20))
                    .map(|i| {
                        let mut v = [0.0; CHANNELS];
                        v[0] = k as f32;
                        Sample {
                            service: ServiceId(i as u32 + 1),
                            ts_ms: ts,
                            values: v,
                        }
                    })
                    .collect();
                store.write_tick(ts, &samples, &edges).unwrap();
            }
        }
        let mut viol = v(0, (base + 3000) as i64, (base + 3200) as i64, "post-store");
        viol.start_ms = 3000;
        let summary = build(Input {
            sc: &sc,
            plan: &plan,
            out: &out,
            t0_unix_ms: base,
            windows: &[],
            violations: &[viol],
            faults: &[],
            horizons_ms: &[100, 500],
            observed_edges: Vec::new(),
        })
        .unwrap();
        // Hosts start at ticks 0..=3: the common grid is ticks 3..=49.
        assert_eq!(summary.ticks, 47);
        assert_eq!(summary.services, 7);
        assert_eq!(summary.rows, 47 * 7);
        // Labels at the bucket end: buckets 2900, 3000, 3100 (ends 3000..=3200; 3300 is out).
        assert_eq!(summary.violation_ticks, 3);
        let m: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.join(DIR).join(MANIFEST_FILE)).unwrap(),
        )
        .unwrap();
        assert_eq!(m["shape"], serde_json::json!([47, 7, CHANNELS]));
        let names: Vec<&str> = m["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"data/sshd"), "{names:?}");
        // The agent's edge makes user a callee of timeline: user comes first.
        let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
        assert!(pos("user") < pos("timeline"), "{names:?}");
        let edges = std::fs::read_to_string(out.join(DIR).join(EDGES_FILE)).unwrap();
        assert!(
            edges.contains("timeline,user,app2,app2,0,agent,false"),
            "{edges}"
        );

        let f = File::open(out.join(DIR).join(DATA_FILE)).unwrap();
        let batches: Vec<RecordBatch> = arrow_ipc::reader::FileReader::try_new(f, None)
            .unwrap()
            .map(|b| b.unwrap())
            .collect();
        let b = &batches[0];
        let col = |n: &str| b.column_by_name(n).unwrap().clone();
        let ts = col("ts_ms");
        let ts = ts.as_primitive::<arrow_array::types::Int64Type>();
        let svc = col("service");
        let svc = svc.as_dictionary::<Int32Type>();
        let svc_names = svc.values().as_string::<i32>();
        let ch0 = col(CHANNEL_NAMES[0]);
        let ch0 = ch0.as_primitive::<arrow_array::types::Float32Type>();
        let filled = col("filled");
        let filled = filled.as_primitive::<arrow_array::types::UInt8Type>();
        let i500 = col("initiator_in_500ms");
        let i500 = i500.as_primitive::<arrow_array::types::UInt8Type>();
        let v100 = col("violation_in_100ms");
        let v100 = v100.as_primitive::<arrow_array::types::UInt8Type>();
        for r in 0..b.num_rows() {
            let name = svc_names.value(svc.keys().value(r) as usize);
            let k = (ts.value(r) as u64 - base) / 100;
            assert_eq!(name, names[r % 7]);
            if name == "timeline" && k == 20 {
                // Missing: the previous tick's values, flagged.
                assert_eq!((filled.value(r), ch0.value(r)), (1, 19.0));
            } else {
                assert_eq!((filled.value(r), ch0.value(r)), (0, k as f32), "{name} {k}");
            }
            let soon500 = (24..=31).contains(&k);
            assert_eq!(
                i500.value(r) == 1,
                soon500 && name == "post-store",
                "{name} {k}"
            );
            assert_eq!(v100.value(r) == 1, (28..=31).contains(&k), "{k}");
        }
        std::fs::remove_dir_all(&out).unwrap();
    }

    #[test]
    fn agent_services_get_scenario_or_host_names() {
        let sc = Scenario::parse("small.toml", include_str!("../scenarios/small.toml")).unwrap();
        let plan = Plan::new(&sc, "ab").unwrap();
        let id = "cgroup:/seer-tb-ab/timeline";
        assert_eq!(dataset_name(&plan, "app2", "timeline", id), "timeline");
        assert_eq!(dataset_name(&plan, "app2", "whatever", id), "timeline");
        // Same name on the wrong host, or something else entirely: host-qualified.
        assert_eq!(
            dataset_name(&plan, "data", "timeline", "x"),
            "data/timeline"
        );
        assert_eq!(dataset_name(&plan, "data", "sshd", "unit:ssh"), "data/sshd");
    }
}
