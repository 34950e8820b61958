//! seer's trace store: every sample of every service, kept on the host in one redb file,
//! bounded by age and size, crash-safe, and exportable for training.
//!
//! # Writing (the agent's sampler)
//! ```no_run
//! use seer_common::sample::ServiceId;
//! use seer_store::{Store, StoreConfig, Writer, WriterConfig};
//! # fn main() -> Result<(), seer_store::StoreError> {
//! let store = Store::open("/var/lib/seer/trace.redb", StoreConfig::default())?;
//! store.upsert_service(ServiceId(1), "nginx", "/system.slice/nginx.service", 0)?;
//! let writer = Writer::spawn(store.clone(), WriterConfig::default())?;
//! // Every tick, on the sampler thread; never blocks:
//! let mut tick = writer.take_tick(); // reuses the buffers of a written tick
//! tick.ts_ms = 1_767_225_600_000;
//! // tick.samples.push(sample); tick.edges.push((caller, callee)); (the whole graph each tick)
//! if !writer.submit(tick) { /* dropped; counted in writer.stats().ticks_dropped */ }
//! // Metrics: writer.stats() -> WriterStats { ticks_written, ticks_dropped, bytes_on_disk,
//! //          retention_deleted, disk_full_events, last_error, .. }
//! let _final_stats = writer.shutdown(); // writes what is queued, stops the thread
//! # Ok(()) }
//! ```
//! [`Store::write_tick`] is the synchronous path the writer uses: one redb write transaction
//! for all services of a tick. The writer also runs retention every 10 s of data
//! ([`retention`]). Labels and bookkeeping, from any thread: [`Store::record_qos_event`],
//! [`Store::enqueue_alert`] / [`Store::pending_alerts`] / [`Store::ack_alert`],
//! [`Store::record_action`] / [`Store::mark_action_undone`] / [`Store::actions`].
//!
//! # Export (`seer-agent export --from T0 --to T1 --out DIR`)
//! [`export()`]`(&store, t0_ms, t1_ms, dir)` writes `DIR/samples.arrow` (Arrow IPC, LZ4
//! record batches, one row per tick x service, `violation`/`initiator` labels when QoS events
//! exist) and `DIR/manifest.json`; the range is `t0_ms <= ts < t1_ms`. See [`mod@export`].
//!
//! # Query (`seer-agent query ...`)
//! The [`query`] module returns plain data, `Serialize` for `--json`, and renders tables:
//! - services: [`query::list_services`] -> [`query::services_table`]
//! - one service's recent channels: [`query::find_service`] (id or name), then
//!   [`query::service_recent`] -> [`query::recent_table`]
//! - top services by a channel: [`query::channel_by_name`], [`query::top_services`] ->
//!   [`query::top_table`] (queue depth: `outstanding`, `rx_queue_bytes`, `accept_backlog`)
//!
//! redb lets one process open a file at a time: while the agent runs, `query`/`export` from
//! another process get [`StoreError::Locked`]. Serve them from the agent's own [`Store`]
//! (it is `Clone` and thread-safe), or run them on a stopped agent's file.
//!
//! # Guarantees
//! - Durability: [`Durability::Immediate`] (default) fsyncs every tick transaction: `kill -9`
//!   or power loss loses only ticks still queued in the writer (normally none, at most the
//!   current one). [`Durability::Batched`] fsyncs every N transactions and may lose N.
//! - Bounded by age and by the disk the file takes ([`RetentionPolicy`], [`retention`]); on a
//!   full disk or cap the oldest data is dropped, counted and logged, and recording goes on.
//! - Every open error names the path and what to do ([`StoreError`]); every row that does not
//!   decode is an error, not a panic.
//! - Nothing is written through a name someone else could plant: the store's and the export's
//!   folders must belong to the agent's uid and be writable by no one else (created 0700), the
//!   store file is created 0600 with `O_EXCL | O_NOFOLLOW`, temporary files are created afresh
//!   and renamed ([`safefs`], shared with the agent's action journal).

mod backend;
mod cap;
pub mod codec;
mod config;
mod error;
mod events;
pub mod export;
pub mod graph;
pub mod grid;
mod manifest;
mod open;
pub mod query;
mod read;
pub mod retention;
pub mod safefs;
pub mod schema;
mod store;
pub mod synth;
mod write;
pub mod writer;

pub use cap::DiskUsage;
pub use codec::{AggValues, CodecError};
pub use config::{Durability, MIN_MAX_BYTES, RetentionPolicy, StoreConfig};
pub use error::{StoreError, is_disk_full};
pub use events::{ActionRecord, Alert, DiagnosisRow, QosEvent, RejectedAlert};
pub use export::{Compression, ExportOptions, ExportSummary, export, export_with};
pub use read::{AggSample, ServiceInfo, TickIter, TickSamples};
pub use retention::RetentionReport;
pub use store::Store;
pub use write::{Prediction, Tick};
pub use writer::{Writer, WriterConfig, WriterHandle, WriterStats};
