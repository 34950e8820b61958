//! Keeping the store bounded by age and by size.
//!
//! A pass ([`Store::run_retention`], run by the writer every few seconds of data) does, in order:
//! 1. **Downsample**: samples older than `full_resolution_ms` (relative to the newest tick) are
//!    folded, one second at a time, into per-second min/mean/max rows of `AGG_1S`, and deleted.
//!    At most [`DOWNSAMPLE_SECONDS_PER_PASS`] seconds per pass keep a pass short.
//! 2. **Expire**: aggregates older than `aggregate_ms` go, and with them call-graph snapshots,
//!    QoS events, undelivered alerts and undone actions older than the oldest data kept.
//! 3. **Cap**: when the estimated size of the data passes 80 % of the write limit (`max_bytes`
//!    less a reserve of 1/32, at least 1 MiB, kept for recovery), the oldest rows (aggregates
//!    first, they are older) are deleted down to 70 %. redb reuses freed pages, lowest first,
//!    so the file stops growing; the backend refuses writes past the limit, and then
//!    [`Store::make_room`] deletes the oldest tenth using the reserve.
//! 4. **Compact**: when the file takes nearly all the disk it may (redb put pages in blocks
//!    never written before, or the cap was lowered) but holds much less data, the file is
//!    compacted, at most once per [`COMPACT_EVERY_MS`] here, and whenever a write was refused.
//!
//! The size estimate counts rows: every chunk is at most one 4 KiB page (see `schema`), and
//! small chunks share a page at least half full, so the estimate never undercounts by much.

use crate::codec::{AggValues, ChunkEncoder, ChunkReader, KIND_AGG};
use crate::schema::{
    ACTIONS, AGG_1S, ALERTS, DIAGNOSES, EDGES, QOS_EVENTS, REJECTED_ALERTS, REMOTE_EDGES, SAMPLES,
    SERVICES,
};
use crate::{Store, StoreError};
use redb::{ReadableTable, WriteTransaction};
use seer_common::sample::CHANNELS;
use std::collections::BTreeMap;

pub use crate::cap::COMPACT_EVERY_MS;

/// Seconds of full-resolution samples folded into aggregates per pass.
pub const DOWNSAMPLE_SECONDS_PER_PASS: u64 = 60;

/// What one retention pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub seconds_downsampled: u64,
    /// Full-resolution rows (chunks) folded into aggregates and deleted.
    pub sample_rows_downsampled: u64,
    /// Aggregate rows older than the aggregate window.
    pub aggregate_rows_expired: u64,
    /// Rows of other tables (call graph, QoS events, alerts, actions) past the window.
    pub other_rows_expired: u64,
    /// Rows (of samples or aggregates) deleted to stay under the size cap.
    pub rows_evicted_for_size: u64,
    /// Rows that did not decode and were dropped.
    pub corrupt_rows_dropped: u64,
    pub compacted: bool,
}

impl RetentionReport {
    /// Rows deleted for any reason but downsampling.
    pub fn rows_deleted(&self) -> u64 {
        self.aggregate_rows_expired
            + self.other_rows_expired
            + self.rows_evicted_for_size
            + self.corrupt_rows_dropped
    }
}

#[derive(Clone, Copy)]
struct Acc {
    count: u32,
    min: [f32; CHANNELS],
    max: [f32; CHANNELS],
    sum: [f64; CHANNELS],
}

impl Acc {
    fn new() -> Self {
        Self {
            count: 0,
            min: [f32::INFINITY; CHANNELS],
            max: [f32::NEG_INFINITY; CHANNELS],
            sum: [0.0; CHANNELS],
        }
    }

    fn add(&mut self, v: &[f32; CHANNELS]) {
        self.count += 1;
        for (c, &x) in v.iter().enumerate() {
            self.min[c] = self.min[c].min(x);
            self.max[c] = self.max[c].max(x);
            self.sum[c] += f64::from(x);
        }
    }

    fn finish(&self) -> AggValues {
        let mut out = AggValues {
            count: self.count,
            min: self.min,
            max: self.max,
            ..AggValues::default()
        };
        for c in 0..CHANNELS {
            out.mean[c] = (self.sum[c] / f64::from(self.count.max(1))) as f32;
        }
        out
    }
}

impl Store {
    /// Applies the retention policy as of `now_ms` (normally the newest tick's time).
    pub fn run_retention(&self, now_ms: u64) -> Result<RetentionReport, StoreError> {
        let policy = self.inner.config.retention;
        let mut report = RetentionReport::default();
        self.downsample(
            now_ms.saturating_sub(policy.full_resolution_ms),
            &mut report,
        )?;
        self.expire(now_ms.saturating_sub(policy.aggregate_ms), &mut report)?;
        let estimated = self.estimated_bytes()?;
        let limit = self.inner.limits.soft;
        if estimated > limit / 10 * 8 {
            let target = limit / 10 * 7;
            report.rows_evicted_for_size += self.evict_oldest(estimated - target)?;
            log::warn!(
                "store: {} near its cap of {} bytes: deleted the oldest {} rows",
                self.inner.path.display(),
                policy.max_bytes,
                report.rows_evicted_for_size
            );
        }
        let usage = self.disk_usage()?;
        if usage.disk_bytes > limit / 20 * 19 && usage.estimated_bytes < limit / 10 * 7 {
            report.compacted = self.compact_rate_limited()?;
        }
        Ok(report)
    }

    /// Deletes the oldest rows to free about `bytes`; returns the rows deleted.
    fn downsample(&self, cutoff_ms: u64, report: &mut RetentionReport) -> Result<(), StoreError> {
        let has_old = self.with_db(|db| {
            let txn = db.begin_read().map_err(|e| self.err("begin read", e))?;
            let s = txn
                .open_table(SAMPLES)
                .map_err(|e| self.err("open samples", e))?;
            let first = s.first().map_err(|e| self.err("read samples", e))?;
            Ok(first.is_some_and(|(k, _)| {
                let ts = k.value().0;
                ts - ts % 1000 + 1000 <= cutoff_ms
            }))
        })?;
        if !has_old {
            return Ok(());
        }
        self.with_db(|db| {
            let txn = db.begin_write().map_err(|e| self.err("begin write", e))?;
            self.downsample_in(&txn, cutoff_ms, report)?;
            txn.commit().map_err(|e| self.err("commit downsampling", e))
        })
    }

    fn downsample_in(
        &self,
        txn: &WriteTransaction,
        cutoff_ms: u64,
        report: &mut RetentionReport,
    ) -> Result<(), StoreError> {
        let mut raw = txn
            .open_table(SAMPLES)
            .map_err(|e| self.err("open samples", e))?;
        let mut agg = txn
            .open_table(AGG_1S)
            .map_err(|e| self.err("open aggregates", e))?;
        let mut preds = txn
            .open_table(crate::schema::PREDICTIONS)
            .map_err(|e| self.err("open predictions", e))?;
        let mut accs: BTreeMap<u32, Acc> = BTreeMap::new();
        let mut enc = ChunkEncoder::new(KIND_AGG);
        let mut values = [0.0; CHANNELS];
        for _ in 0..DOWNSAMPLE_SECONDS_PER_PASS {
            let first = raw.first().map_err(|e| self.err("read samples", e))?;
            let Some(first) = first.map(|(k, _)| k.value().0) else {
                break;
            };
            let sec = first - first % 1000;
            if sec + 1000 > cutoff_ms {
                break;
            }
            accs.clear();
            let mut rows = 0u64;
            for row in raw
                .range((sec, 0)..(sec + 1000, 0))
                .map_err(|e| self.err("read samples", e))?
            {
                let (k, v) = row.map_err(|e| self.err("read samples", e))?;
                rows += 1;
                let key = k.value();
                let bytes = v.value();
                let decoded = ChunkReader::new(key.1, bytes).and_then(|mut r| {
                    while let Some(id) = r.next_samples(&mut values)? {
                        accs.entry(id).or_insert_with(Acc::new).add(&values);
                    }
                    Ok(())
                });
                if let Err(e) = decoded {
                    report.corrupt_rows_dropped += 1;
                    log::warn!("store: dropping undecodable samples row {key:?}: {e}");
                }
            }
            enc.reset();
            for (&id, acc) in &accs {
                enc.push_agg(id, &acc.finish());
            }
            enc.finish();
            agg.retain_in((sec, 0)..=(sec, u32::MAX), |_, _| false)
                .map_err(|e| self.err("replace aggregates", e))?;
            for (first_id, bytes) in enc.chunks() {
                agg.insert((sec, first_id), bytes)
                    .map_err(|e| self.err("write aggregates", e))?;
            }
            raw.retain_in((sec, 0)..(sec + 1000, 0), |_, _| false)
                .map_err(|e| self.err("delete downsampled samples", e))?;
            // The model's results go with the full-resolution samples they were made from.
            preds
                .retain_in(..sec + 1000, |_, _| false)
                .map_err(|e| self.err("delete predictions", e))?;
            report.seconds_downsampled += 1;
            report.sample_rows_downsampled += rows;
        }
        Ok(())
    }

    fn expire(&self, agg_cutoff_ms: u64, report: &mut RetentionReport) -> Result<(), StoreError> {
        self.with_db(|db| {
            let txn = db.begin_write().map_err(|e| self.err("begin write", e))?;
            {
                let mut agg = txn
                    .open_table(AGG_1S)
                    .map_err(|e| self.err("open aggregates", e))?;
                let mut n = 0u64;
                agg.retain_in(..(agg_cutoff_ms, 0), |_, _| {
                    n += 1;
                    false
                })
                .map_err(|e| self.err("expire aggregates", e))?;
                report.aggregate_rows_expired += n;
                let first_agg = agg
                    .first()
                    .map_err(|e| self.err("read aggregates", e))?
                    .map(|(k, _)| k.value().0);
                let samples = txn
                    .open_table(SAMPLES)
                    .map_err(|e| self.err("open samples", e))?;
                let first_sample = samples
                    .first()
                    .map_err(|e| self.err("read samples", e))?
                    .map(|(k, _)| k.value().0);
                let oldest = match (first_agg, first_sample) {
                    (Some(a), Some(s)) => a.min(s),
                    (Some(x), None) | (None, Some(x)) => x,
                    (None, None) => agg_cutoff_ms,
                };
                report.other_rows_expired += self.expire_others(&txn, oldest, agg_cutoff_ms)?;
            }
            txn.commit().map_err(|e| self.err("commit expiry", e))
        })
    }

    /// Deletes what describes only data that is gone.
    fn expire_others(
        &self,
        txn: &WriteTransaction,
        oldest_ms: u64,
        agg_cutoff_ms: u64,
    ) -> Result<u64, StoreError> {
        let mut n = 0u64;
        let mut edges = txn
            .open_table(EDGES)
            .map_err(|e| self.err("open edges", e))?;
        // Keep the snapshot in force at `oldest_ms`.
        let in_force = edges
            .range(..=oldest_ms)
            .map_err(|e| self.err("read call graph", e))?
            .next_back()
            .transpose()
            .map_err(|e| self.err("read call graph", e))?
            .map(|(k, _)| k.value());
        if let Some(keep) = in_force {
            edges
                .retain_in(..keep, |_, _| {
                    n += 1;
                    false
                })
                .map_err(|e| self.err("expire call graph", e))?;
        }
        let mut qos = txn
            .open_table(QOS_EVENTS)
            .map_err(|e| self.err("open qos events", e))?;
        qos.retain_in(..(oldest_ms, 0), |_, (end, _)| {
            let keep = end > oldest_ms;
            n += u64::from(!keep);
            keep
        })
        .map_err(|e| self.err("expire qos events", e))?;
        let mut alerts = txn
            .open_table(ALERTS)
            .map_err(|e| self.err("open alerts", e))?;
        let mut dropped_alerts = 0u64;
        alerts
            .retain(|_, (ts, _)| {
                let keep = ts >= agg_cutoff_ms;
                dropped_alerts += u64::from(!keep);
                keep
            })
            .map_err(|e| self.err("expire alerts", e))?;
        if dropped_alerts > 0 {
            log::warn!("store: {dropped_alerts} alerts were never delivered and expired");
        }
        n += dropped_alerts;
        let mut rejected = txn
            .open_table(REJECTED_ALERTS)
            .map_err(|e| self.err("open rejected alerts", e))?;
        rejected
            .retain(|_, (ts, _, _)| {
                let keep = ts >= agg_cutoff_ms;
                n += u64::from(!keep);
                keep
            })
            .map_err(|e| self.err("expire rejected alerts", e))?;
        let mut actions = txn
            .open_table(ACTIONS)
            .map_err(|e| self.err("open actions", e))?;
        actions
            .retain(|_, (ts, _, _, _, undone)| {
                let keep = undone == 0 || ts >= agg_cutoff_ms;
                n += u64::from(!keep);
                keep
            })
            .map_err(|e| self.err("expire actions", e))?;
        // Diagnoses, calls to other hosts and services last seen before the oldest data kept:
        // they describe nothing the store still holds (a service seen again is written back
        // by the agent, under the same id: ids come from identities, see `services`).
        let mut diag = txn
            .open_table(DIAGNOSES)
            .map_err(|e| self.err("open diagnoses", e))?;
        diag.retain_in(..(oldest_ms, 0), |_, _| {
            n += 1;
            false
        })
        .map_err(|e| self.err("expire diagnoses", e))?;
        let mut remote = txn
            .open_table(REMOTE_EDGES)
            .map_err(|e| self.err("open remote edges", e))?;
        remote
            .retain(|_, (_, last)| {
                let keep = last >= oldest_ms;
                n += u64::from(!keep);
                keep
            })
            .map_err(|e| self.err("expire remote edges", e))?;
        let mut services = txn
            .open_table(SERVICES)
            .map_err(|e| self.err("open services", e))?;
        services
            .retain(|_, (_, _, _, last)| {
                let keep = last >= oldest_ms;
                n += u64::from(!keep);
                keep
            })
            .map_err(|e| self.err("expire services", e))?;
        Ok(n)
    }
}
