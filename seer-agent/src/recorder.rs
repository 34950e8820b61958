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

    /// Records which channels this host cannot observe (see `channels::missing`).
    pub fn set_missing_channels(&self, channels: &[&str]) {
        if let Err(e) = self.store.set_missing_channels(channels) {
            log::warn!("store: recording the missing channels: {e}");
        }
    }

    pub fn services_added(&self, d: &Discovery, ids: &[ServiceId], ts_ms: u64) {
        for s in d.services.iter().filter(|s| ids.contains(&s.id)) {
            if let Err(e) = self.store.upsert_service(s.id, &s.name, &s.identity, ts_ms) {
                log::warn!("store: recording service {}: {e}", s.name);
            }
        }
    }

    /// Records calls to other hosts (new ones, or all of them again to refresh last-seen).
    pub fn remote_edges(
        &self,
        d: &Discovery,
        edges: &[(ServiceId, std::net::SocketAddr)],
        ts_ms: u64,
    ) {
        for (caller, addr) in edges {
            if let Err(e) = self
                .store
                .record_remote_edge(*caller, &addr.to_string(), ts_ms)
            {
                log::warn!("store: recording {} -> {addr}: {e}", d.name_of(*caller));
                return;
            }
        }
    }

    /// Queues one tick; a full queue drops it and counts it (see `stats`).
    pub fn record(&self, ts_ms: u64, samples: &[Sample], d: &Discovery) {
        let mut t = self.writer.take_tick();
        t.ts_ms = ts_ms;
        t.samples.clear();
        t.samples.extend_from_slice(samples);
        t.edges.clear();
        t.edges.extend(d.edges.iter().copied());
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
