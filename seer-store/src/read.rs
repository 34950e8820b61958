//! Read side of [`Store`]: services, samples of one service, the latest ticks, top services,
//! the call graph, and a tick iterator for export.

use crate::codec::{AggValues, ChunkReader};
use crate::schema::{AGG_1S, EDGES, HOST, HOST_MISSING_CHANNELS, SAMPLES, SERVICES};
use crate::{Store, StoreError};
use redb::{AccessGuard, ReadableTable, StorageError};
use seer_common::sample::{CHANNELS, Channel, Sample, ServiceId};
use std::cmp::Ordering;
use std::iter::Peekable;

/// A service as recorded by [`Store::upsert_service`] (and last-seen updates).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceInfo {
    pub id: ServiceId,
    pub name: String,
    /// How the agent recognises it (cgroup path, unit name, ...).
    pub identity: String,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
}

/// All services' samples of one tick, in ascending service id order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TickSamples {
    pub ts_ms: u64,
    pub samples: Vec<Sample>,
}

/// One service's per-second aggregate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AggSample {
    pub service: ServiceId,
    /// Start of the second, ms since the Unix epoch.
    pub ts_ms: u64,
    pub agg: AggValues,
}

type ChunkEntry = (
    AccessGuard<'static, (u64, u32)>,
    AccessGuard<'static, &'static [u8]>,
);
type ChunkRange = redb::Range<'static, (u64, u32), &'static [u8]>;

impl Store {
    pub(crate) fn corrupt(
        &self,
        table: &'static str,
        key: (u64, u32),
        source: crate::codec::CodecError,
    ) -> StoreError {
        StoreError::Corrupt {
            path: self.inner.path.clone(),
            table,
            key: format!("({}, {})", key.0, key.1),
            source,
        }
    }

    fn sample_range(&self, from_ms: u64, to_ms: u64) -> Result<ChunkRange, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(|e| self.err("begin read", e))?;
            let t = txn
                .open_table(SAMPLES)
                .map_err(|e| self.err("open samples", e))?;
            t.range((from_ms, 0)..(to_ms, 0))
                .map_err(|e| self.err("read samples", e))
        })
    }

    /// All services, by id.
    /// The channels the writing host could not observe (see [`Store::set_missing_channels`]).
    pub fn missing_channels(&self) -> Result<Vec<String>, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(|e| self.err("begin read", e))?;
            let t = txn.open_table(HOST).map_err(|e| self.err("open host", e))?;
            let v = t
                .get(HOST_MISSING_CHANNELS)
                .map_err(|e| self.err("read host", e))?;
            Ok(v.map(|g| {
                g.value()
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default())
        })
    }

    pub fn services(&self) -> Result<Vec<ServiceInfo>, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(|e| self.err("begin read", e))?;
            let t = txn
                .open_table(SERVICES)
                .map_err(|e| self.err("open services", e))?;
            let mut out = Vec::new();
            for row in t.iter().map_err(|e| self.err("read services", e))? {
                let (k, v) = row.map_err(|e| self.err("read services", e))?;
                let (name, identity, first, last) = v.value();
                out.push(ServiceInfo {
                    id: ServiceId(k.value()),
                    name: name.to_owned(),
                    identity: identity.to_owned(),
                    first_seen_ms: first,
                    last_seen_ms: last,
                });
            }
            Ok(out)
        })
    }

    /// Full-resolution samples of one service with `from_ms <= ts < to_ms`, oldest first.
    pub fn samples(
        &self,
        service: ServiceId,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<Sample>, StoreError> {
        let mut rows = self.sample_range(from_ms, to_ms)?.peekable();
        let mut out = Vec::new();
        while let Some(row) = rows.next() {
            let (k, v) = row.map_err(|e| self.err("read samples", e))?;
            let (ts, first) = k.value();
            if first > service.0 {
                continue;
            }
            // The service lives in the last chunk of the tick whose first id is <= it.
            if let Some(Ok((nk, _))) = rows.peek() {
                let (nts, nfirst) = nk.value();
                if nts == ts && nfirst <= service.0 {
                    continue;
                }
            }
            if let Some(values) = self.find_in_chunk((ts, first), v.value(), service)? {
                out.push(Sample {
                    service,
                    ts_ms: ts,
                    values,
                });
            }
        }
        Ok(out)
    }

    fn find_in_chunk(
        &self,
        key: (u64, u32),
        bytes: &[u8],
        service: ServiceId,
    ) -> Result<Option<[f32; CHANNELS]>, StoreError> {
        let mut r = ChunkReader::new(key.1, bytes).map_err(|e| self.corrupt("samples", key, e))?;
        let mut values = [0.0; CHANNELS];
        while let Some(id) = r
            .next_samples(&mut values)
            .map_err(|e| self.corrupt("samples", key, e))?
        {
            match id.cmp(&service.0) {
                Ordering::Less => {}
                Ordering::Equal => return Ok(Some(values)),
                Ordering::Greater => break,
            }
        }
        Ok(None)
    }

    /// The newest `n` samples of one service, oldest first.
    pub fn recent(&self, service: ServiceId, n: usize) -> Result<Vec<Sample>, StoreError> {
        let mut out = Vec::new();
        let mut done_ts = None;
        for row in self.sample_range(0, u64::MAX)?.rev() {
            if out.len() >= n {
                break;
            }
            let (k, v) = row.map_err(|e| self.err("read samples", e))?;
            let (ts, first) = k.value();
            // Chunks of a tick come newest-id first: the first one with first id <= service
            // is the only one that can hold it.
            if first > service.0 || done_ts == Some(ts) {
                continue;
            }
            done_ts = Some(ts);
            if let Some(values) = self.find_in_chunk((ts, first), v.value(), service)? {
                out.push(Sample {
                    service,
                    ts_ms: ts,
                    values,
                });
            }
        }
        out.reverse();
        Ok(out)
    }

    /// Time of the newest stored tick.
    pub fn last_tick_ms(&self) -> Result<Option<u64>, StoreError> {
        self.latest_ticks_start(1)
    }

    /// Start of the newest `n` ticks (None if the store has no samples).
    fn latest_ticks_start(&self, n: usize) -> Result<Option<u64>, StoreError> {
        let mut seen = 0;
        let mut start = None;
        for row in self.sample_range(0, u64::MAX)?.rev() {
            let (k, _) = row.map_err(|e| self.err("read samples", e))?;
            let ts = k.value().0;
            if start != Some(ts) {
                if seen == n {
                    break;
                }
                seen += 1;
                start = Some(ts);
            }
        }
        Ok(start)
    }

    /// The newest `n` ticks of all services, oldest first.
    pub fn latest(&self, n: usize) -> Result<Vec<TickSamples>, StoreError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let Some(start) = self.latest_ticks_start(n)? else {
            return Ok(Vec::new());
        };
        self.range(start, u64::MAX)?.collect()
    }

    /// The `n` services with the highest value of `channel` at the newest tick, highest first.
    pub fn top_by(&self, channel: Channel, n: usize) -> Result<Vec<Sample>, StoreError> {
        let mut ticks = self.latest(1)?;
        let Some(tick) = ticks.pop() else {
            return Ok(Vec::new());
        };
        let mut samples = tick.samples;
        let c = channel as usize;
        samples.sort_by(|a, b| {
            b.values[c]
                .total_cmp(&a.values[c])
                .then(a.service.cmp(&b.service))
        });
        samples.truncate(n);
        Ok(samples)
    }

    /// Ticks with `from_ms <= ts < to_ms`, oldest first, for export. The iterator reads from a
    /// snapshot: ticks written meanwhile are not seen.
    pub fn range(&self, from_ms: u64, to_ms: u64) -> Result<TickIter, StoreError> {
        Ok(TickIter {
            store: self.clone(),
            rows: self.sample_range(from_ms, to_ms)?.peekable(),
        })
    }

    /// Per-second aggregates of one service with `from_ms <= second < to_ms`.
    pub fn aggregates(
        &self,
        service: ServiceId,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<AggSample>, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(|e| self.err("begin read", e))?;
            let t = txn
                .open_table(AGG_1S)
                .map_err(|e| self.err("open aggregates", e))?;
            let mut out = Vec::new();
            for row in t
                .range((from_ms, 0)..(to_ms, 0))
                .map_err(|e| self.err("read aggregates", e))?
            {
                let (k, v) = row.map_err(|e| self.err("read aggregates", e))?;
                let key = k.value();
                if key.1 > service.0 {
                    continue;
                }
                let bytes = v.value();
                let mut r =
                    ChunkReader::new(key.1, bytes).map_err(|e| self.corrupt("agg_1s", key, e))?;
                let mut agg = AggValues::default();
                while let Some(id) = r
                    .next_agg(&mut agg)
                    .map_err(|e| self.corrupt("agg_1s", key, e))?
                {
                    if id == service.0 {
                        out.push(AggSample {
                            service,
                            ts_ms: key.0,
                            agg,
                        });
                    }
                    if id >= service.0 {
                        break;
                    }
                }
            }
            Ok(out)
        })
    }

    /// The call graph in force at `ts_ms`: sorted (caller, callee) pairs.
    pub fn edges_at(&self, ts_ms: u64) -> Result<Vec<(ServiceId, ServiceId)>, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(|e| self.err("begin read", e))?;
            let t = txn
                .open_table(EDGES)
                .map_err(|e| self.err("open edges", e))?;
            let last = t
                .range(..=ts_ms)
                .map_err(|e| self.err("read call graph", e))?
                .next_back()
                .transpose()
                .map_err(|e| self.err("read call graph", e))?;
            Ok(last.map_or_else(Vec::new, |(_, v)| to_ids(v.value())))
        })
    }

    /// Every edge in force at some time in `from_ms <= ts < to_ms`, sorted.
    pub fn edges_between(
        &self,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<(ServiceId, ServiceId)>, StoreError> {
        let mut all = self.edges_at(from_ms)?;
        self.with_db(|db| {
            let txn = db.begin_read().map_err(|e| self.err("begin read", e))?;
            let t = txn
                .open_table(EDGES)
                .map_err(|e| self.err("open edges", e))?;
            for row in t
                .range(from_ms.saturating_add(1)..to_ms.max(from_ms.saturating_add(1)))
                .map_err(|e| self.err("read call graph", e))?
            {
                let (_, v) = row.map_err(|e| self.err("read call graph", e))?;
                all.extend(to_ids(v.value()));
            }
            Ok(())
        })?;
        all.sort_unstable();
        all.dedup();
        Ok(all)
    }
}

fn to_ids(pairs: Vec<(u32, u32)>) -> Vec<(ServiceId, ServiceId)> {
    pairs
        .into_iter()
        .map(|(a, b)| (ServiceId(a), ServiceId(b)))
        .collect()
}

/// Iterator over whole ticks; see [`Store::range`]. [`TickIter::next_into`] reuses the caller's
/// buffer; the `Iterator` impl allocates one `Vec` per tick.
pub struct TickIter {
    store: Store,
    rows: Peekable<ChunkRange>,
}

impl TickIter {
    fn decode_into(&self, entry: ChunkEntry, out: &mut TickSamples) -> Result<(), StoreError> {
        let (k, v) = entry;
        let key = k.value();
        let mut r = ChunkReader::new(key.1, v.value())
            .map_err(|e| self.store.corrupt("samples", key, e))?;
        out.samples.reserve(usize::from(r.len()));
        let mut values = [0.0; CHANNELS];
        while let Some(id) = r
            .next_samples(&mut values)
            .map_err(|e| self.store.corrupt("samples", key, e))?
        {
            out.samples.push(Sample {
                service: ServiceId(id),
                ts_ms: key.0,
                values,
            });
        }
        Ok(())
    }

    fn row(&self, row: Result<ChunkEntry, StorageError>) -> Result<ChunkEntry, StoreError> {
        row.map_err(|e| self.store.err("read samples", e))
    }

    /// Reads the next tick into `out` (cleared first). Returns false after the last tick.
    pub fn next_into(&mut self, out: &mut TickSamples) -> Result<bool, StoreError> {
        out.samples.clear();
        let Some(first) = self.rows.next() else {
            return Ok(false);
        };
        let first = self.row(first)?;
        out.ts_ms = first.0.value().0;
        self.decode_into(first, out)?;
        while let Some(Ok((k, _))) = self.rows.peek() {
            if k.value().0 != out.ts_ms {
                break;
            }
            let Some(next) = self.rows.next() else {
                break;
            };
            let next = self.row(next)?;
            self.decode_into(next, out)?;
        }
        // A read error on the peeked row surfaces on the next call.
        Ok(true)
    }
}

impl Iterator for TickIter {
    type Item = Result<TickSamples, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut tick = TickSamples::default();
        match self.next_into(&mut tick) {
            Ok(true) => Some(Ok(tick)),
            Ok(false) => None,
            Err(e) => Some(Err(e)),
        }
    }
}
