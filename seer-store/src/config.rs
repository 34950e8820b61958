//! How a store is opened: durability, retention, size cap, cache.

use crate::StoreError;

/// When a committed tick is guaranteed to be on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Every write transaction is fsynced before it returns: a crash or power loss loses no
    /// committed tick (only ticks still queued in the writer, normally at most the current one).
    Immediate,
    /// Only every `ticks`-th write transaction is fsynced; the others are kept in memory by redb.
    /// A crash or power loss loses at most the last `ticks` transactions, and so does the
    /// reopen that follows an I/O error (a full disk). Cheaper on slow disks.
    Batched { ticks: u32 },
}

/// Age and size bounds. See the `retention` module for how they are applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Samples younger than this (relative to the newest tick) are kept at full resolution.
    pub full_resolution_ms: u64,
    /// Per-second min/mean/max aggregates are kept this long (relative to the newest tick).
    pub aggregate_ms: u64,
    /// The database file never takes more disk than this (blocks, as `du` counts; its length
    /// may be larger, as redb grows files sparsely). The oldest data is dropped to stay
    /// below it; 1/32 of it (at least 1 MiB) is kept in reserve for that.
    pub max_bytes: u64,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self {
            full_resolution_ms: 24 * 3600 * 1000,
            aggregate_ms: 7 * 24 * 3600 * 1000,
            max_bytes: 2 << 30,
        }
    }
}

/// Options of [`crate::Store::open`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    pub durability: Durability,
    pub retention: RetentionPolicy,
    /// Sampler tick, recorded in the database and in export manifests.
    pub tick_ms: u64,
    /// Memory redb may use to cache pages.
    pub cache_bytes: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            durability: Durability::Immediate,
            retention: RetentionPolicy::default(),
            tick_ms: 100,
            cache_bytes: 64 << 20,
        }
    }
}

/// The smallest size cap the store accepts: room for redb's own metadata and a few ticks.
pub const MIN_MAX_BYTES: u64 = 4 << 20;

impl StoreConfig {
    pub(crate) fn validate(&self) -> Result<(), StoreError> {
        if self.retention.max_bytes < MIN_MAX_BYTES {
            return Err(StoreError::Config(format!(
                "retention.max_bytes is {} bytes; it must be at least {MIN_MAX_BYTES}",
                self.retention.max_bytes
            )));
        }
        if self.tick_ms == 0 {
            return Err(StoreError::Config("tick_ms must be at least 1".into()));
        }
        if let Durability::Batched { ticks: 0 } = self.durability {
            return Err(StoreError::Config(
                "durability Batched needs ticks >= 1".into(),
            ));
        }
        Ok(())
    }
}
