//! The write path: one redb write transaction per tick (or batch) for all services.

use crate::codec::{ChunkEncoder, KIND_SAMPLES};
use crate::config::Durability;
use crate::schema::{
    EDGES, HOST, HOST_MISSING_CHANNELS, META, META_SERVICE_ID_MAX, META_TICK_MS, PREDICTIONS,
    SAMPLES, SERVICES,
};
use crate::{Store, StoreError};
use redb::ReadableTable;
use seer_common::sample::{Sample, ServiceId};
use std::collections::HashMap;

/// One tick of all services, as handed to [`crate::WriterHandle::submit`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tick {
    /// Wall-clock time of the tick, ms since the Unix epoch. Overrides each sample's `ts_ms`.
    pub ts_ms: u64,
    pub samples: Vec<Sample>,
    /// The complete call graph as of this tick, (caller, callee). Stored only when it changes.
    pub edges: Vec<(ServiceId, ServiceId)>,
    /// A new model result to keep (each is written once, with the tick it arrived in).
    pub prediction: Option<Prediction>,
}

/// What the model said at one tick: per service, the probability that it initiates a QoS
/// violation within the model's horizon.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Prediction {
    /// The tick whose window the model read.
    pub ts_ms: u64,
    pub model: String,
    pub p: Vec<(ServiceId, f32)>,
}

impl Prediction {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(self.p.len() * 8);
        for (id, p) in &self.p {
            b.extend_from_slice(&id.0.to_le_bytes());
            b.extend_from_slice(&p.to_le_bytes());
        }
        b
    }

    pub(crate) fn decode(ts_ms: u64, model: &str, b: &[u8]) -> Prediction {
        let p = b
            .chunks_exact(8)
            .map(|c| {
                let id = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                let v = f32::from_le_bytes([c[4], c[5], c[6], c[7]]);
                (ServiceId(id), v)
            })
            .collect();
        Prediction {
            ts_ms,
            model: model.to_string(),
            p,
        }
    }
}

impl Tick {
    /// Empties the tick, keeping its allocations for reuse.
    pub fn clear(&mut self) {
        self.ts_ms = 0;
        self.samples.clear();
        self.edges.clear();
        self.prediction = None;
    }
}

/// What the write path remembers between ticks; reused buffers keep the tick path free of
/// allocations once warm.
#[derive(Debug)]
pub(crate) struct WriteState {
    pub last_tick_ms: Option<u64>,
    pub edges_known: bool,
    /// Whether META holds this configuration's tick (checked on the first write).
    tick_recorded: bool,
    last_edges: Vec<(u32, u32)>,
    edge_scratch: Vec<(u32, u32)>,
    order: Vec<u32>,
    enc: ChunkEncoder,
    commits_since_durable: u32,
    /// Services seen since the last flush of `last_seen_ms`, with the latest tick they were in.
    pub seen: HashMap<u32, u64>,
    seen_noted_ms: u64,
    /// Running mean of stored chunk sizes (bytes), for the disk-usage estimate.
    pub mean_chunk_bytes: f64,
    /// When retention last compacted the file.
    pub last_compaction: Option<std::time::Instant>,
}

impl WriteState {
    pub(crate) fn new() -> Self {
        Self {
            last_tick_ms: None,
            edges_known: false,
            tick_recorded: false,
            last_edges: Vec::new(),
            edge_scratch: Vec::new(),
            order: Vec::new(),
            enc: ChunkEncoder::new(KIND_SAMPLES),
            commits_since_durable: 0,
            seen: HashMap::with_capacity(1024),
            seen_noted_ms: 0,
            mean_chunk_bytes: 0.0,
            last_compaction: None,
        }
    }

    fn encode(&mut self, samples: &[Sample]) {
        self.enc.reset();
        if samples.windows(2).all(|w| w[0].service < w[1].service) {
            for s in samples {
                self.enc.push_samples(s.service.0, &s.values);
            }
        } else {
            // Sort by id; of duplicate ids the last sample wins.
            self.order.clear();
            self.order.extend(0..samples.len() as u32);
            self.order
                .sort_unstable_by_key(|&i| (samples[i as usize].service, i));
            for (k, &i) in self.order.iter().enumerate() {
                let s = &samples[i as usize];
                let next_same = self
                    .order
                    .get(k + 1)
                    .is_some_and(|&j| samples[j as usize].service == s.service);
                if !next_same {
                    self.enc.push_samples(s.service.0, &s.values);
                }
            }
        }
        self.enc.finish();
        if self.enc.chunk_count() > 0 {
            let mean = self.enc.encoded_bytes() as f64 / self.enc.chunk_count() as f64;
            self.mean_chunk_bytes = if self.mean_chunk_bytes == 0.0 {
                mean
            } else {
                0.99 * self.mean_chunk_bytes + 0.01 * mean
            };
        }
    }

    /// Normalises `edges` into `edge_scratch`; true when they differ from the stored graph.
    fn edges_changed(&mut self, edges: &[(ServiceId, ServiceId)]) -> bool {
        self.edge_scratch.clear();
        self.edge_scratch
            .extend(edges.iter().map(|(a, b)| (a.0, b.0)));
        self.edge_scratch.sort_unstable();
        self.edge_scratch.dedup();
        !self.edges_known || self.edge_scratch != self.last_edges
    }

    fn note_seen(&mut self, ts_ms: u64, samples: &[Sample]) {
        // Once per second of data is precise enough for first/last seen.
        if ts_ms < self.seen_noted_ms.saturating_add(1000) && ts_ms >= self.seen_noted_ms {
            return;
        }
        self.seen_noted_ms = ts_ms;
        for s in samples {
            self.seen.insert(s.service.0, ts_ms);
        }
    }

    fn durability(&mut self, d: Durability) -> redb::Durability {
        match d {
            Durability::Immediate => redb::Durability::Immediate,
            Durability::Batched { ticks } => {
                self.commits_since_durable += 1;
                if self.commits_since_durable >= ticks {
                    self.commits_since_durable = 0;
                    redb::Durability::Immediate
                } else {
                    redb::Durability::None
                }
            }
        }
    }
}

impl Store {
    /// Reads what the write path needs to continue an existing store.
    pub(crate) fn load_write_state(&self) -> Result<(), StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(|e| self.err("begin read", e))?;
            let samples = txn
                .open_table(SAMPLES)
                .map_err(|e| self.err("open samples", e))?;
            let last = samples.last().map_err(|e| self.err("read last tick", e))?;
            let edges = txn
                .open_table(EDGES)
                .map_err(|e| self.err("open edges", e))?;
            let last_edges = edges.last().map_err(|e| self.err("read call graph", e))?;
            // Mean chunk size of the newest tick, for the disk-usage estimate.
            let mut newest = None;
            if let Some((k, _)) = last {
                let ts = k.value().0;
                let (mut n, mut bytes) = (0usize, 0usize);
                for row in samples
                    .range((ts, 0)..=(ts, u32::MAX))
                    .map_err(|e| self.err("read last tick", e))?
                {
                    let (_, v) = row.map_err(|e| self.err("read last tick", e))?;
                    n += 1;
                    bytes += v.value().len();
                }
                newest = Some((ts, bytes as f64 / n.max(1) as f64));
            }
            let mut st = self.state();
            if let Some((ts, mean)) = newest {
                st.last_tick_ms = Some(ts);
                st.mean_chunk_bytes = mean;
            }
            if let Some((_, v)) = last_edges {
                st.last_edges = v.value();
                st.edges_known = true;
            }
            Ok(())
        })
    }

    /// Records a service (or refreshes when it was last seen).
    pub fn upsert_service(
        &self,
        id: ServiceId,
        name: &str,
        identity: &str,
        ts_ms: u64,
    ) -> Result<(), StoreError> {
        self.upsert_services(&[(id, name, identity)], ts_ms)
    }

    /// Records services, or refreshes when they were last seen, in one transaction (the agent
    /// refreshes every live service once a minute, so retention keeps them).
    pub fn upsert_services(
        &self,
        rows: &[(ServiceId, &str, &str)],
        ts_ms: u64,
    ) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        self.with_db(|db| {
            let txn = db.begin_write().map_err(|e| self.err("begin write", e))?;
            {
                let mut t = txn
                    .open_table(SERVICES)
                    .map_err(|e| self.err("open services", e))?;
                for (id, name, identity) in rows {
                    let (first, last) =
                        match t.get(id.0).map_err(|e| self.err("read service", e))? {
                            Some(g) => {
                                let (_, _, first, last) = g.value();
                                (first.min(ts_ms), last.max(ts_ms))
                            }
                            None => (ts_ms, ts_ms),
                        };
                    t.insert(id.0, (*name, *identity, first, last))
                        .map_err(|e| self.err("write service", e))?;
                }
                let mut meta = txn.open_table(META).map_err(|e| self.err("open meta", e))?;
                let top = rows.iter().map(|r| u64::from(r.0.0)).max().unwrap_or(0);
                let was = meta
                    .get(META_SERVICE_ID_MAX)
                    .map_err(|e| self.err("read meta", e))?
                    .map_or(0, |g| g.value());
                if top > was {
                    meta.insert(META_SERVICE_ID_MAX, top)
                        .map_err(|e| self.err("write meta", e))?;
                }
            }
            txn.commit().map_err(|e| self.err("commit service", e))
        })
    }

    /// The largest service id ever written (0: none), rows since deleted included.
    pub fn service_id_max(&self) -> Result<u32, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(|e| self.err("begin read", e))?;
            let meta = txn.open_table(META).map_err(|e| self.err("open meta", e))?;
            let v = meta
                .get(META_SERVICE_ID_MAX)
                .map_err(|e| self.err("read meta", e))?
                .map_or(0, |g| g.value());
            Ok(u32::try_from(v).unwrap_or(u32::MAX))
        })
    }

    /// Records which channels this host cannot observe (names from `CHANNEL_NAMES`), replacing
    /// what an earlier run recorded.
    pub fn set_missing_channels(&self, channels: &[&str]) -> Result<(), StoreError> {
        let joined = channels.join(",");
        self.with_db(|db| {
            let txn = db.begin_write().map_err(|e| self.err("begin write", e))?;
            {
                let mut t = txn.open_table(HOST).map_err(|e| self.err("open host", e))?;
                t.insert(HOST_MISSING_CHANNELS, joined.as_str())
                    .map_err(|e| self.err("write host", e))?;
            }
            txn.commit().map_err(|e| self.err("commit host", e))
        })
    }

    /// Writes one tick of all services (and the call graph, when it changed) in one write
    /// transaction. A tick whose time was already written replaces the stored one.
    pub fn write_tick(
        &self,
        ts_ms: u64,
        samples: &[Sample],
        edges: &[(ServiceId, ServiceId)],
    ) -> Result<(), StoreError> {
        self.write_many(std::iter::once((ts_ms, samples, edges, None)))
    }

    /// Writes several ticks in one write transaction (what the writer does when behind).
    pub fn write_batch(&self, ticks: &[Tick]) -> Result<(), StoreError> {
        self.write_many(ticks.iter().map(|t| {
            (
                t.ts_ms,
                t.samples.as_slice(),
                t.edges.as_slice(),
                t.prediction.as_ref(),
            )
        }))
    }

    fn write_many<'a>(
        &self,
        ticks: impl Iterator<
            Item = (
                u64,
                &'a [Sample],
                &'a [(ServiceId, ServiceId)],
                Option<&'a Prediction>,
            ),
        >,
    ) -> Result<(), StoreError> {
        let mut guard = self.state();
        let st = &mut *guard;
        if self.take_reopened() {
            st.edges_known = false;
        }
        let result = self.with_db(|db| {
            let mut txn = db
                .begin_write()
                .map_err(|e| self.err("begin tick write", e))?;
            txn.set_durability(st.durability(self.inner.config.durability));
            let mut newest = st.last_tick_ms;
            if !st.tick_recorded {
                let mut meta = txn.open_table(META).map_err(|e| self.err("open meta", e))?;
                meta.insert(META_TICK_MS, self.inner.config.tick_ms)
                    .map_err(|e| self.err("write tick", e))?;
            }
            {
                let mut samples_t = txn
                    .open_table(SAMPLES)
                    .map_err(|e| self.err("open samples", e))?;
                let mut edges_t = txn
                    .open_table(EDGES)
                    .map_err(|e| self.err("open edges", e))?;
                let mut preds_t = txn
                    .open_table(PREDICTIONS)
                    .map_err(|e| self.err("open predictions", e))?;
                for (ts, samples, edges, pred) in ticks {
                    if let Some(p) = pred {
                        preds_t
                            .insert(p.ts_ms, (p.model.as_str(), p.encode().as_slice()))
                            .map_err(|e| self.err("write prediction", e))?;
                    }
                    if newest.is_some_and(|n| ts <= n) {
                        samples_t
                            .retain_in((ts, 0)..=(ts, u32::MAX), |_, _| false)
                            .map_err(|e| self.err("replace tick", e))?;
                    }
                    st.encode(samples);
                    for (first, bytes) in st.enc.chunks() {
                        samples_t
                            .insert((ts, first), bytes)
                            .map_err(|e| self.err("write samples", e))?;
                    }
                    if st.edges_changed(edges) {
                        edges_t
                            .insert(ts, &st.edge_scratch)
                            .map_err(|e| self.err("write call graph", e))?;
                        std::mem::swap(&mut st.last_edges, &mut st.edge_scratch);
                        st.edges_known = true;
                    }
                    st.note_seen(ts, samples);
                    newest = Some(newest.map_or(ts, |n| n.max(ts)));
                }
            }
            txn.commit().map_err(|e| self.err("commit tick", e))?;
            Ok(newest)
        });
        match result {
            Ok(newest) => {
                st.last_tick_ms = newest;
                st.tick_recorded = true;
                Ok(())
            }
            Err(e) => {
                // The graph written in this transaction is gone: write it again next time.
                st.edges_known = false;
                Err(e)
            }
        }
    }

    /// Writes `last_seen_ms` of the services seen since the previous call; services that were
    /// never upserted get a row with an empty name. Called by the writer's maintenance.
    pub fn flush_last_seen(&self) -> Result<usize, StoreError> {
        let seen: Vec<(u32, u64)> = self.state().seen.drain().collect();
        if seen.is_empty() {
            return Ok(0);
        }
        self.with_db(|db| {
            let txn = db.begin_write().map_err(|e| self.err("begin write", e))?;
            {
                let mut t = txn
                    .open_table(SERVICES)
                    .map_err(|e| self.err("open services", e))?;
                for &(id, ts) in &seen {
                    let row = t
                        .get(id)
                        .map_err(|e| self.err("read service", e))?
                        .map(|g| {
                            let (name, identity, first, last) = g.value();
                            (name.to_owned(), identity.to_owned(), first, last)
                        });
                    let (name, identity, first, _) = match row {
                        Some((.., last)) if last >= ts => continue,
                        Some(r) => r,
                        None => (String::new(), String::new(), ts, ts),
                    };
                    t.insert(id, (name.as_str(), identity.as_str(), first.min(ts), ts))
                        .map_err(|e| self.err("write service", e))?;
                }
            }
            txn.commit().map_err(|e| self.err("commit last seen", e))?;
            Ok(seen.len())
        })
    }
}
