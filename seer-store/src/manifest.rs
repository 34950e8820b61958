//! `manifest.json` of an export: what the data file holds, for the training side.

use crate::export::{DATA_FILE, MANIFEST_FILE};
use crate::graph::topo_order;
use crate::safefs::PrivateDir;
use crate::schema::SCHEMA_VERSION;
use crate::{QosEvent, ServiceInfo, Store, StoreError};
use seer_common::sample::{CHANNEL_NAMES, ServiceId};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::path::PathBuf;

/// What the export wrote, as the manifest describes it.
pub(crate) struct Written<'a> {
    pub from_ms: u64,
    pub to_ms: u64,
    pub first_tick_ms: Option<u64>,
    pub last_tick_ms: Option<u64>,
    pub ticks: u64,
    pub rows: u64,
    pub services: &'a [ServiceInfo],
    /// Ids found in samples without a `services` row.
    pub unknown: &'a BTreeSet<u32>,
    pub events: &'a [QosEvent],
}

#[derive(Serialize)]
struct ManifestService {
    id: u32,
    name: String,
    identity: String,
}

#[derive(Serialize)]
struct ManifestEvent {
    start_ms: u64,
    end_ms: u64,
    initiator: Option<u32>,
    kind: String,
}

#[derive(Serialize)]
struct Manifest<'a> {
    format: &'static str,
    schema_version: u64,
    data_file: &'static str,
    tick_ms: u64,
    /// The range asked for: `from_ms <= ts < to_ms`.
    from_ms: u64,
    to_ms: u64,
    first_tick_ms: Option<u64>,
    last_tick_ms: Option<u64>,
    ticks: u64,
    rows: u64,
    channels: &'a [&'static str],
    /// Channels the host could not observe: their zeros mean "not seen" (mask them).
    missing_channels: Vec<String>,
    /// "topological" (callees before callers, back-end first) or "id".
    service_order: &'static str,
    services: Vec<ManifestService>,
    /// (caller, callee) pairs seen in the range.
    edges: Vec<[u32; 2]>,
    /// Calls to other hosts seen in the range: caller id and "address:port" (join with the
    /// other hosts' manifests for the cluster's call graph).
    remote_edges: Vec<ManifestRemoteEdge>,
    label_columns: Vec<&'static str>,
    qos_events: Vec<ManifestEvent>,
}

#[derive(Serialize)]
struct ManifestRemoteEdge {
    from: u32,
    to: String,
}

/// Writes `manifest.json` into `dir` (the export folder, opened by [`crate::safefs`]); returns
/// its path and the number of services.
pub(crate) fn write(
    store: &Store,
    dir: &PrivateDir,
    w: &Written<'_>,
) -> Result<(PathBuf, usize), StoreError> {
    let out_dir = dir.path();
    let edges = store.edges_between(w.from_ms, w.to_ms)?;
    let mut ids: Vec<ServiceId> = w.services.iter().map(|s| s.id).collect();
    ids.extend(w.unknown.iter().map(|&id| ServiceId(id)));
    let (order, service_order) = if edges.is_empty() {
        ids.sort_unstable();
        (ids, "id")
    } else {
        (topo_order(&ids, &edges), "topological")
    };
    let by_id: HashMap<u32, &ServiceInfo> = w.services.iter().map(|s| (s.id.0, s)).collect();
    let field = |id: u32, f: fn(&ServiceInfo) -> &String| {
        by_id.get(&id).map_or_else(String::new, |s| f(s).clone())
    };
    let manifest = Manifest {
        format: "seer-trace-arrow-v1",
        schema_version: SCHEMA_VERSION,
        data_file: DATA_FILE,
        tick_ms: store.tick_ms()?,
        from_ms: w.from_ms,
        to_ms: w.to_ms,
        first_tick_ms: w.first_tick_ms,
        last_tick_ms: w.last_tick_ms,
        ticks: w.ticks,
        rows: w.rows,
        channels: &CHANNEL_NAMES,
        missing_channels: store.missing_channels()?,
        service_order,
        services: order
            .iter()
            .map(|id| ManifestService {
                id: id.0,
                name: field(id.0, |s| &s.name),
                identity: field(id.0, |s| &s.identity),
            })
            .collect(),
        edges: edges.iter().map(|(a, b)| [a.0, b.0]).collect(),
        remote_edges: store
            .remote_edges()?
            .into_iter()
            .filter(|(_, _, first, last)| *first < w.to_ms && *last >= w.from_ms)
            .map(|(from, to, _, _)| ManifestRemoteEdge { from: from.0, to })
            .collect(),
        label_columns: if w.events.is_empty() {
            Vec::new()
        } else {
            vec!["violation", "initiator"]
        },
        qos_events: w
            .events
            .iter()
            .map(|e| ManifestEvent {
                start_ms: e.start_ms,
                end_ms: e.end_ms,
                initiator: e.initiator.map(|s| s.0),
                kind: e.kind.clone(),
            })
            .collect(),
    };
    let json =
        serde_json::to_vec_pretty(&manifest).map_err(|source| StoreError::ExportManifest {
            dir: out_dir.to_owned(),
            source,
        })?;
    dir.write_atomic(OsStr::new(MANIFEST_FILE), &json)?;
    Ok((out_dir.join(MANIFEST_FILE), order.len()))
}
