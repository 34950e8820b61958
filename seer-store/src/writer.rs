//! The background writer: the sampler hands ticks over a bounded queue and never waits on disk.
//!
//! - [`WriterHandle::submit`] never blocks. When the queue is full the tick is dropped and
//!   counted (`ticks_dropped`), and a warning is logged.
//! - The writer thread writes each tick in one transaction; when several are queued (the disk
//!   was slow) it writes up to `max_batch` of them in one transaction.
//! - Every `maintenance_every_ms` of data time it records last-seen times and runs retention.
//! - When the disk or the size cap refuses a write, it deletes the oldest data and retries the
//!   batch once; if that fails too the batch is dropped and counted, and ticks are dropped
//!   without trying for a backoff (1 s doubling to 60 s) so a full disk costs little. It keeps
//!   running.
//! - Written ticks go back to the sampler through [`WriterHandle::take_tick`] so their buffers
//!   are reused.

use crate::write::Tick;
use crate::{Store, StoreError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Options of [`Writer::spawn`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriterConfig {
    /// Ticks the queue holds before new ones are dropped (64 ticks = 6.4 s at 100 ms).
    pub queue_ticks: usize,
    /// Most ticks written in one transaction when catching up.
    pub max_batch: usize,
    /// Data time between maintenance passes (last-seen times, retention).
    pub maintenance_every_ms: u64,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            queue_ticks: 64,
            max_batch: 32,
            maintenance_every_ms: 10_000,
        }
    }
}

/// Counters of the writer, for metrics and logs. A snapshot of [`WriterHandle::stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    pub ticks_submitted: u64,
    pub ticks_written: u64,
    /// Dropped because the queue was full, or because their write failed.
    pub ticks_dropped: u64,
    pub ticks_dropped_queue_full: u64,
    /// Refused because they were stamped more than [`MAX_AHEAD_OF_WALL_MS`] ahead of the wall
    /// clock (a bad clock or a bad peer): written, they would make retention delete as if
    /// that much time had passed.
    pub ticks_refused_future: u64,
    pub samples_written: u64,
    /// Write transactions (a batch of one or more ticks each).
    pub transactions: u64,
    pub write_errors: u64,
    /// Times the disk or the cap refused a write.
    pub disk_full_events: u64,
    /// Rows deleted by retention, the size cap and disk-full recovery.
    pub retention_deleted: u64,
    /// Disk blocks the database file takes, as of the last write.
    pub bytes_on_disk: u64,
    /// Time of the last transaction, microseconds.
    pub last_write_us: u64,
    pub last_error: Option<String>,
}

#[derive(Default)]
struct Counters {
    submitted: AtomicU64,
    written: AtomicU64,
    dropped: AtomicU64,
    dropped_full: AtomicU64,
    refused_future: AtomicU64,
    samples: AtomicU64,
    transactions: AtomicU64,
    write_errors: AtomicU64,
    disk_full: AtomicU64,
    retention_deleted: AtomicU64,
    bytes_on_disk: AtomicU64,
    last_write_us: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Counters {
    fn set_error(&self, e: &StoreError) {
        let mut text = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            text.push_str(": ");
            text.push_str(&s.to_string());
            src = s.source();
        }
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(text);
    }
}

enum Msg {
    Tick(Tick),
    Flush(SyncSender<()>),
}

/// Starts writer threads; see the module docs.
pub struct Writer;

impl Writer {
    /// Spawns the writer thread for `store` (the store stays usable for reads meanwhile).
    pub fn spawn(store: Store, config: WriterConfig) -> Result<WriterHandle, StoreError> {
        let (tx, rx) = mpsc::sync_channel(config.queue_ticks.max(1));
        let (recycle_tx, recycle_rx) =
            mpsc::sync_channel(config.queue_ticks.max(1) + config.max_batch);
        let counters = Arc::new(Counters::default());
        let worker = Worker {
            store: store.clone(),
            config,
            counters: counters.clone(),
            rx,
            recycle: recycle_tx.clone(),
            batch: Vec::with_capacity(config.max_batch.max(1)),
            progress_ms: 0,
            last_ts: None,
            next_maintenance_ms: None,
            retention_now: None,
            paused_until: None,
            backoff: FIRST_BACKOFF,
        };
        let thread = std::thread::Builder::new()
            .name("seer-store".into())
            .spawn(move || worker.run())
            .map_err(|e| StoreError::WriterGone(format!("cannot start the writer thread: {e}")))?;
        Ok(WriterHandle {
            tx: Some(tx),
            recycle_tx,
            recycled: recycle_rx,
            counters,
            thread: Some(thread),
            store,
        })
    }
}

/// The sampler's end of the writer. Dropping it writes what is queued and stops the thread.
pub struct WriterHandle {
    tx: Option<SyncSender<Msg>>,
    recycle_tx: SyncSender<Tick>,
    recycled: Receiver<Tick>,
    counters: Arc<Counters>,
    thread: Option<JoinHandle<()>>,
    store: Store,
}

impl WriterHandle {
    /// Queues a tick without blocking. Returns false if it was dropped (queue full or writer
    /// gone); the loss is counted in [`WriterStats::ticks_dropped`].
    pub fn submit(&self, tick: Tick) -> bool {
        let c = &self.counters;
        c.submitted.fetch_add(1, Ordering::Relaxed);
        let Some(tx) = &self.tx else {
            return false;
        };
        match tx.try_send(Msg::Tick(tick)) {
            Ok(()) => true,
            Err(
                TrySendError::Full(Msg::Tick(tick)) | TrySendError::Disconnected(Msg::Tick(tick)),
            ) => {
                let n = c.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                c.dropped_full.fetch_add(1, Ordering::Relaxed);
                if n.is_power_of_two() {
                    log::warn!(
                        "store: writer queue full, dropped tick {} ({n} dropped so far)",
                        tick.ts_ms
                    );
                }
                let mut tick = tick;
                tick.clear();
                let _ = self.recycle_tx.try_send(tick);
                false
            }
            Err(_) => false,
        }
    }

    /// An empty tick to fill, reusing the buffers of one already written when there is one.
    pub fn take_tick(&self) -> Tick {
        self.recycled.try_recv().unwrap_or_default()
    }

    /// Counters now.
    pub fn stats(&self) -> WriterStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WriterStats {
            ticks_submitted: get(&c.submitted),
            ticks_written: get(&c.written),
            ticks_dropped: get(&c.dropped),
            ticks_dropped_queue_full: get(&c.dropped_full),
            ticks_refused_future: get(&c.refused_future),
            samples_written: get(&c.samples),
            transactions: get(&c.transactions),
            write_errors: get(&c.write_errors),
            disk_full_events: get(&c.disk_full),
            retention_deleted: get(&c.retention_deleted),
            bytes_on_disk: get(&c.bytes_on_disk),
            last_write_us: get(&c.last_write_us),
            last_error: c
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }

    /// The store the writer writes to, for reads.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Waits (up to `timeout`) until every tick submitted before this call is written.
    /// Returns false on timeout. Not for the sampler's thread: it may wait.
    pub fn flush(&self, timeout: Duration) -> bool {
        let Some(tx) = &self.tx else {
            return false;
        };
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        if tx.send(Msg::Flush(done_tx)).is_err() {
            return false;
        }
        done_rx.recv_timeout(timeout).is_ok()
    }

    /// Writes what is queued, stops the thread, and returns the final counters.
    pub fn shutdown(mut self) -> WriterStats {
        self.stop();
        self.stats()
    }

    fn stop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            log::error!("store: writer thread panicked");
        }
    }
}

impl Drop for WriterHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Worker {
    store: Store,
    config: WriterConfig,
    counters: Arc<Counters>,
    rx: Receiver<Msg>,
    recycle: SyncSender<Tick>,
    batch: Vec<Tick>,
    /// Data progress: the sum of the steps between consecutive written ticks, each counted as
    /// at most [`MAX_STEP_MS`] and never negative, so a wall-clock step (forward or back)
    /// advances it by at most a minute. Maintenance and retention follow it, not tick times.
    progress_ms: u64,
    last_ts: Option<u64>,
    next_maintenance_ms: Option<u64>,
    /// The time retention last ran "as of": it advances by the progress since, never past
    /// the latest tick written or the wall clock.
    retention_now: Option<(u64, u64)>,
    /// After a write failed even after freeing space: drop ticks without trying until then.
    paused_until: Option<Instant>,
    backoff: Duration,
}

/// Ticks stamped further than this ahead of the wall clock are refused (counted, logged).
pub const MAX_AHEAD_OF_WALL_MS: u64 = 10 * 60 * 1000;
/// The most one step between consecutive ticks counts toward data progress.
pub const MAX_STEP_MS: u64 = 60 * 1000;

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

impl Worker {
    fn run(mut self) {
        let mut flushes = Vec::new();
        while let Ok(msg) = self.rx.recv() {
            self.take(msg, &mut flushes);
            while self.batch.len() < self.config.max_batch.max(1) {
                match self.rx.try_recv() {
                    Ok(msg) => self.take(msg, &mut flushes),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            self.write_batch();
            self.maybe_maintain();
            for done in flushes.drain(..) {
                let _ = done.try_send(());
            }
        }
    }

    fn take(&mut self, msg: Msg, flushes: &mut Vec<SyncSender<()>>) {
        match msg {
            Msg::Tick(t) => self.batch.push(t),
            Msg::Flush(done) => flushes.push(done),
        }
    }

    fn write_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let c = self.counters.clone();
        let limit = wall_ms().saturating_add(MAX_AHEAD_OF_WALL_MS);
        let before = self.batch.len();
        self.batch.retain(|t| t.ts_ms <= limit);
        let refused = (before - self.batch.len()) as u64;
        if refused > 0 {
            let n = c.refused_future.fetch_add(refused, Ordering::Relaxed) + refused;
            log::error!(
                "store: refused {refused} tick(s) stamped more than {} min ahead of the wall \
                 clock ({n} so far): check the clock (timedatectl, chrony) of whatever stamped them",
                MAX_AHEAD_OF_WALL_MS / 60_000
            );
            if self.batch.is_empty() {
                return;
            }
        }
        let ticks = self.batch.len() as u64;
        let start = Instant::now();
        if self.paused_until.is_some_and(|until| start < until) {
            c.dropped.fetch_add(ticks, Ordering::Relaxed);
            self.recycle_batch();
            return;
        }
        let mut result = self.store.write_batch(&self.batch);
        if let Err(e @ StoreError::DiskFull { .. }) = &result {
            c.disk_full.fetch_add(1, Ordering::Relaxed);
            log::warn!("store: {e}");
            match self.store.make_room() {
                Ok(rows) => {
                    c.retention_deleted.fetch_add(rows, Ordering::Relaxed);
                    result = self.store.write_batch(&self.batch);
                }
                Err(e) => log::error!("store: could not free space: {e}"),
            }
        }
        match result {
            Ok(()) => {
                for t in &self.batch {
                    if let Some(last) = self.last_ts {
                        self.progress_ms += t.ts_ms.saturating_sub(last).min(MAX_STEP_MS);
                    }
                    self.last_ts = Some(t.ts_ms);
                }
                c.written.fetch_add(ticks, Ordering::Relaxed);
                let samples: usize = self.batch.iter().map(|t| t.samples.len()).sum();
                c.samples.fetch_add(samples as u64, Ordering::Relaxed);
                self.paused_until = None;
                self.backoff = FIRST_BACKOFF;
            }
            Err(e) => {
                c.write_errors.fetch_add(1, Ordering::Relaxed);
                let n = c.dropped.fetch_add(ticks, Ordering::Relaxed) + ticks;
                log::error!(
                    "store: dropped {ticks} ticks ({n} so far), not writing for {:?}: {e}",
                    self.backoff
                );
                c.set_error(&e);
                self.paused_until = Some(Instant::now() + self.backoff);
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
            }
        }
        c.transactions.fetch_add(1, Ordering::Relaxed);
        c.last_write_us
            .store(start.elapsed().as_micros() as u64, Ordering::Relaxed);
        if let Ok(meta) = std::fs::metadata(self.store.path()) {
            use std::os::unix::fs::MetadataExt;
            c.bytes_on_disk
                .store(meta.blocks() * 512, Ordering::Relaxed);
        }
        self.recycle_batch();
    }

    fn recycle_batch(&mut self) {
        for mut t in self.batch.drain(..) {
            t.clear();
            let _ = self.recycle.try_send(t);
        }
    }

    fn maybe_maintain(&mut self) {
        let Some(last_ts) = self.last_ts else {
            return;
        };
        let progress = self.progress_ms;
        let due = *self
            .next_maintenance_ms
            .get_or_insert(progress + self.config.maintenance_every_ms);
        if progress < due {
            return;
        }
        self.next_maintenance_ms = Some(progress + self.config.maintenance_every_ms);
        // Retention runs as of a time that moves with the data written, not with the newest
        // stamp ever seen: a clock step can neither expire everything at once nor stop it.
        let bound = last_ts.min(wall_ms().saturating_add(MAX_AHEAD_OF_WALL_MS));
        let now = match self.retention_now {
            None => bound,
            Some((at, at_progress)) => (at + (progress - at_progress)).min(bound),
        };
        self.retention_now = Some((now, progress));
        let c = &self.counters;
        if let Err(e) = self.store.flush_last_seen() {
            log::warn!("store: recording last-seen times failed: {e}");
            c.set_error(&e);
        }
        match self.store.run_retention(now) {
            Ok(report) => {
                c.retention_deleted
                    .fetch_add(report.rows_deleted(), Ordering::Relaxed);
            }
            Err(e) => {
                if matches!(e, StoreError::DiskFull { .. }) {
                    c.disk_full.fetch_add(1, Ordering::Relaxed);
                    if let Ok(rows) = self.store.make_room() {
                        c.retention_deleted.fetch_add(rows, Ordering::Relaxed);
                    }
                }
                log::warn!("store: retention pass failed: {e}");
                c.set_error(&e);
            }
        }
    }
}
