//! The size cap: how much disk the store takes, deleting the oldest data to stay under the
//! cap, recovering from a full disk, and compaction. See [`crate::retention`] for the policy.

use crate::backend::RecoveryGuard;
use crate::schema::{AGG_1S, CHUNK_MAX, SAMPLES};
use crate::{Store, StoreError};
use redb::{ReadableTable, ReadableTableMetadata, Table};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

/// Minimum wall-clock time between two compactions.
pub const COMPACT_EVERY_MS: u64 = 3_600_000;
const PAGE: u64 = 4096;
/// redb's own tables, headers and branch pages, roughly.
const BASE_OVERHEAD: u64 = 1 << 20;

/// How much disk the store takes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskUsage {
    /// Length of the file (redb grows it ahead of use; the unwritten part takes no disk).
    pub file_bytes: u64,
    /// Disk blocks the file occupies (what `du` shows).
    pub disk_bytes: u64,
    /// Estimated bytes of live data inside the file.
    pub estimated_bytes: u64,
    /// The configured cap.
    pub cap_bytes: u64,
}

/// Bytes of pages that `rows` chunks of `mean` bytes occupy, at worst.
fn page_bytes(rows: u64, mean: f64) -> u64 {
    let per_row = if mean > (CHUNK_MAX / 2) as f64 {
        PAGE as f64
    } else {
        (2.0 * mean + 16.0).min(PAGE as f64)
    };
    (rows as f64 * per_row) as u64
}

/// Deletes whole ticks (or seconds) from the start of `t` until at least `rows` rows are gone.
fn delete_oldest(
    t: &mut Table<'_, (u64, u32), &'static [u8]>,
    rows: u64,
) -> Result<u64, redb::StorageError> {
    if rows == 0 {
        return Ok(0);
    }
    let mut counted = 0u64;
    let mut last_ts = None;
    for row in t.iter()? {
        let (k, _) = row?;
        let ts = k.value().0;
        if counted >= rows && last_ts != Some(ts) {
            break;
        }
        counted += 1;
        last_ts = Some(ts);
    }
    let Some(last_ts) = last_ts else {
        return Ok(0);
    };
    t.retain_in(..(last_ts.saturating_add(1), 0), |_, _| false)?;
    Ok(counted)
}

impl Store {
    /// Disk use now.
    pub fn disk_usage(&self) -> Result<DiskUsage, StoreError> {
        let meta = std::fs::metadata(&self.inner.path).map_err(|e| StoreError::Unwritable {
            path: self.inner.path.clone(),
            source: e,
        })?;
        Ok(DiskUsage {
            file_bytes: meta.len(),
            disk_bytes: meta.blocks() * 512,
            estimated_bytes: self.estimated_bytes()?,
            cap_bytes: self.inner.config.retention.max_bytes,
        })
    }

    pub(crate) fn estimated_bytes(&self) -> Result<u64, StoreError> {
        let mean_samples = self.state().mean_chunk_bytes;
        self.with_db(|db| {
            let txn = db.begin_read().map_err(|e| self.err("begin read", e))?;
            let s = txn
                .open_table(SAMPLES)
                .map_err(|e| self.err("open samples", e))?;
            let a = txn
                .open_table(AGG_1S)
                .map_err(|e| self.err("open aggregates", e))?;
            let s_rows = s.len().map_err(|e| self.err("count samples", e))?;
            let a_rows = a.len().map_err(|e| self.err("count aggregates", e))?;
            let mean_agg = a
                .first()
                .map_err(|e| self.err("read aggregates", e))?
                .map_or(PAGE as f64, |(_, v)| v.value().len() as f64);
            Ok(BASE_OVERHEAD + page_bytes(s_rows, mean_samples) + page_bytes(a_rows, mean_agg))
        })
    }

    /// Applies the retention policy as of `now_ms` (normally the newest tick's time).
    /// Deletes the oldest rows to free about `bytes`; returns the rows deleted.
    pub fn evict_oldest(&self, bytes: u64) -> Result<u64, StoreError> {
        let mean_samples = self.state().mean_chunk_bytes;
        self.with_db(|db| {
            let txn = db.begin_write().map_err(|e| self.err("begin write", e))?;
            let deleted = {
                let mut a = txn
                    .open_table(AGG_1S)
                    .map_err(|e| self.err("open aggregates", e))?;
                let mean_agg = a
                    .first()
                    .map_err(|e| self.err("read aggregates", e))?
                    .map_or(PAGE as f64, |(_, v)| v.value().len() as f64);
                let a_rows = a.len().map_err(|e| self.err("count aggregates", e))?;
                let a_bytes = page_bytes(a_rows, mean_agg);
                let from_agg = if bytes >= a_bytes {
                    a_rows
                } else {
                    (bytes as f64 / (page_bytes(1000, mean_agg) as f64 / 1000.0)).ceil() as u64
                };
                let mut deleted =
                    delete_oldest(&mut a, from_agg).map_err(|e| self.err("evict aggregates", e))?;
                let left = bytes.saturating_sub(page_bytes(deleted, mean_agg));
                if left > 0 {
                    let per_row = page_bytes(1000, mean_samples.max(1.0)) as f64 / 1000.0;
                    let rows = (left as f64 / per_row).ceil() as u64;
                    let mut s = txn
                        .open_table(SAMPLES)
                        .map_err(|e| self.err("open samples", e))?;
                    deleted +=
                        delete_oldest(&mut s, rows).map_err(|e| self.err("evict samples", e))?;
                }
                deleted
            };
            txn.commit().map_err(|e| self.err("commit eviction", e))?;
            Ok(deleted)
        })
    }

    /// Frees room after the disk (or the cap) refused a write: reopens the database if redb
    /// needs it; then compacts the file if it holds much less data than the disk it takes,
    /// else deletes the oldest tenth of the data (at least 1 MiB). Returns rows deleted.
    /// Frees room after the disk (or the cap) refused a write: reopens the database if redb
    /// needs it; then compacts the file if it holds much less data than the disk it takes,
    /// else deletes the oldest tenth of the data (at least 1 MiB). Returns rows deleted.
    pub fn make_room(&self) -> Result<u64, StoreError> {
        let _reserve = RecoveryGuard::new(&self.inner.limits);
        // Reopens the database if the refused write left redb unusable.
        let estimated = self.estimated_bytes()?;
        let soft = self.inner.limits.soft;
        let taken = self.disk_usage()?.disk_bytes;
        if taken >= soft / 10 * 9 && estimated <= soft / 4 * 3 && self.compact()? {
            // The file took its share of disk but holds far less: redb placed new pages in
            // blocks never written. Compaction packs the pages and gives the rest back.
            let after = self.disk_usage()?.disk_bytes;
            log::warn!(
                "store: {} took {taken} bytes of disk for about {estimated} of data: \
                 compacted to {after}",
                self.inner.path.display()
            );
            if after < soft / 10 * 9 {
                return Ok(0);
            }
        }
        let rows = self.evict_oldest((estimated / 10).max(1 << 20))?;
        // redb hands pages freed by a commit back to the allocator at the next durable commit:
        // commit once more so the retried write can use them.
        self.with_db(|db| {
            let mut txn = db.begin_write().map_err(|e| self.err("begin write", e))?;
            txn.set_durability(redb::Durability::Immediate);
            txn.commit()
                .map_err(|e| self.err("commit after eviction", e))
        })?;
        log::warn!(
            "store: {} is full: deleted the oldest {rows} rows to keep recording",
            self.inner.path.display()
        );
        Ok(rows)
    }

    pub(crate) fn compact_rate_limited(&self) -> Result<bool, StoreError> {
        let now = Instant::now();
        {
            let mut st = self.state();
            if st
                .last_compaction
                .is_some_and(|t| now.duration_since(t) < Duration::from_millis(COMPACT_EVERY_MS))
            {
                return Ok(false);
            }
            st.last_compaction = Some(now);
        }
        self.compact()
    }

    /// Rewrites the file without its free pages so it shrinks. Needs exclusive use: returns
    /// false (doing nothing) while a read or write transaction is open.
    /// Rewrites the file without its free pages so it shrinks. Needs exclusive use: returns
    /// false (doing nothing) while a read or write transaction is open.
    pub fn compact(&self) -> Result<bool, StoreError> {
        let start = Instant::now();
        let done = self.with_db_mut(|db| match db.compact() {
            Ok(done) => Ok(done),
            Err(redb::CompactionError::TransactionInProgress) => Ok(false),
            Err(e) => Err(self.err("compact", e)),
        })?;
        if done {
            log::info!(
                "store: compacted {} in {:?}",
                self.inner.path.display(),
                start.elapsed()
            );
        }
        Ok(done)
    }
}
