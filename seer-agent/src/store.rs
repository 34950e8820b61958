//! The agent's side of the trace store: services as discovery finds them, and one tick per
//! sample round, handed to the store's writer thread (never blocking the tick loop).
use std::path::{Path, PathBuf};

use seer_common::sample::{Sample, ServiceId};
use seer_store::{Store, StoreConfig, Writer, WriterConfig, WriterHandle, WriterStats};

use crate::discovery::Discovery;

pub const DEFAULT_DB: &str = "/var/lib/seer/seer.redb";

pub struct Recorder {
    store: Store,
    writer: WriterHandle,
    pub path: PathBuf,
}

impl Recorder {
    /// Opens (or creates) the store; the store creates its folder (0700) if missing and
    /// refuses one that another user could write (see `seer_store::safefs`).
    pub fn open(path: &Path, tick_ms: u64) -> anyhow::Result<Self> {
        let cfg = StoreConfig {
            tick_ms,
            ..StoreConfig::default()
        };
        let store = Store::open(path, cfg)?;
        let writer = Writer::spawn(store.clone(), WriterConfig::default())?;
        Ok(Self {
            store,
            writer,
            path: path.to_path_buf(),
        })
    }

    /// Identity -> id of every service this store has seen, so ids survive agent restarts.
    pub fn known_ids(&self) -> anyhow::Result<Vec<(String, ServiceId)>> {
        Ok(self
            .store
            .services()?
            .into_iter()
            .map(|s| (s.identity, s.id))
            .collect())
    }

    /// The largest service id this store ever gave (rows retention deleted included): new
    /// services get ids above it.
    pub fn id_floor(&self) -> anyhow::Result<ServiceId> {
        Ok(ServiceId(self.store.service_id_max()?))
    }

    /// Records which channels this host cannot observe (see `channels::missing`).
    pub fn set_missing_channels(&self, channels: &[&str]) {
        if let Err(e) = self.store.set_missing_channels(channels) {
            log::warn!("store: recording the missing channels: {e}");
        }
    }

    pub fn services_added(&self, d: &Discovery, ids: &[ServiceId], ts_ms: u64) {
        let rows: Vec<(ServiceId, &str, &str)> = d
            .services
            .iter()
            .filter(|s| ids.contains(&s.id))
            .map(|s| (s.id, s.name.as_str(), s.identity.as_str()))
            .collect();
        if let Err(e) = self.store.upsert_services(&rows, ts_ms) {
            log::warn!("store: recording {} new service(s): {e}", rows.len());
        }
    }

    /// Every live service was seen now (retention keeps what was seen recently).
    pub fn services_seen(&self, d: &Discovery, ts_ms: u64) {
        let all: Vec<ServiceId> = d.services.iter().map(|s| s.id).collect();
        self.services_added(d, &all, ts_ms);
    }

    /// Records calls to other hosts (new ones, or all of them again to refresh last-seen).
    pub fn remote_edges(
        &self,
        d: &Discovery,
        edges: &[(ServiceId, std::net::SocketAddr)],
        ts_ms: u64,
    ) {
        let text: Vec<(ServiceId, String)> = edges
            .iter()
            .map(|(caller, addr)| (*caller, addr.to_string()))
            .collect();
        let rows: Vec<(ServiceId, &str)> = text.iter().map(|(c, a)| (*c, a.as_str())).collect();
        if let Err(e) = self.store.record_remote_edges(&rows, ts_ms) {
            log::warn!(
                "store: recording {} call(s) to other hosts (from {}): {e}",
                rows.len(),
                rows.first().map_or("", |(c, _)| d.name_of(*c))
            );
        }
    }

    /// Queues one tick; a full queue drops it and counts it (see `stats`).
    /// Hands the tick to the writer, with a model result that arrived since the last tick.
    pub fn record(
        &self,
        ts_ms: u64,
        samples: &[Sample],
        d: &Discovery,
        prediction: Option<seer_store::Prediction>,
    ) {
        let mut t = self.writer.take_tick();
        t.ts_ms = ts_ms;
        t.samples.clear();
        t.samples.extend_from_slice(samples);
        t.edges.clear();
        t.edges.extend(d.edges.iter().copied());
        t.prediction = prediction;
        self.writer.submit(t);
    }

    /// The store itself (events, alerts, actions are written directly, not per tick).
    pub fn store(&self) -> Store {
        self.store.clone()
    }

    pub fn stats(&self) -> WriterStats {
        self.writer.stats()
    }

    /// Writes what is queued and stops the writer thread.
    pub fn close(self) -> WriterStats {
        self.writer.shutdown()
    }
}
