//! [`Store`]: opening, access to the database, and reopening it after an I/O error.

use crate::StoreError;
use crate::backend::Limits;
use crate::config::StoreConfig;
use crate::error::{is_disk_full, needs_reopen};
use crate::open::{check_schema, open_database};
use crate::schema::{META, META_TICK_MS};
use crate::write::WriteState;
use redb::Database;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

/// A trace store: a redb database file plus the state of its write path. Cheap to clone; all
/// clones share the database. Every method is safe to call from several threads.
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub path: PathBuf,
    pub config: StoreConfig,
    pub limits: Arc<Limits>,
    /// None only after an I/O error when reopening failed too.
    db: RwLock<Option<Database>>,
    /// Set after an I/O error: redb wants the database closed and opened before further use.
    broken: AtomicBool,
    /// Set by a reopen: the write path's memory of the call graph may be stale.
    reopened: AtomicBool,
    pub state: Mutex<WriteState>,
}
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Store {
    /// Opens the store at `path`, creating the file (and its folder) if needed.
    ///
    /// Errors name the path and what to do: [`StoreError::Unwritable`], [`StoreError::Locked`],
    /// [`StoreError::NotRedb`], [`StoreError::Foreign`], [`StoreError::Damaged`] (truncated or
    /// corrupted), [`StoreError::NewerSchema`].
    pub fn open(path: impl AsRef<Path>, config: StoreConfig) -> Result<Store, StoreError> {
        config.validate()?;
        let path = path.as_ref().to_owned();
        let limits = Arc::new(Limits::new(config.retention.max_bytes));
        let db = open_database(&path, &config, &limits)?;
        check_schema(&db, &path, &config)?;
        let store = Store {
            inner: Arc::new(Inner {
                path,
                config,
                limits,
                db: RwLock::new(Some(db)),
                broken: AtomicBool::new(false),
                reopened: AtomicBool::new(false),
                state: Mutex::new(WriteState::new()),
            }),
        };
        store.load_write_state()?;
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// The sampler tick recorded in the store by the last writer (this configuration's tick if
    /// none was recorded).
    pub fn tick_ms(&self) -> Result<u64, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(|e| self.err("begin read", e))?;
            let meta = txn.open_table(META).map_err(|e| self.err("open meta", e))?;
            let tick = meta
                .get(META_TICK_MS)
                .map_err(|e| self.err("read tick", e))?;
            Ok(tick.map_or(self.inner.config.tick_ms, |g| g.value()))
        })
    }

    /// Time of the newest tick written through this handle (or found at open).
    pub fn last_written_ms(&self) -> Option<u64> {
        self.state().last_tick_ms
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, WriteState> {
        lock(&self.inner.state)
    }

    /// Wraps a redb error, and marks the database for reopening after an I/O error.
    pub(crate) fn err(&self, op: &'static str, e: impl Into<redb::Error>) -> StoreError {
        let e = e.into();
        if needs_reopen(&e) {
            self.inner.broken.store(true, Ordering::Release);
        }
        if is_disk_full(&e) {
            StoreError::DiskFull {
                path: self.inner.path.clone(),
                op,
                cap_bytes: self.inner.config.retention.max_bytes,
                source: Box::new(e),
            }
        } else {
            StoreError::Db {
                path: self.inner.path.clone(),
                op,
                source: Box::new(e),
            }
        }
    }

    /// Runs `f` on the database, reopening it first if an I/O error left it unusable.
    pub(crate) fn with_db<T>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if self.inner.broken.load(Ordering::Acquire) {
            self.reopen()?;
        }
        let guard = self.inner.db.read().unwrap_or_else(PoisonError::into_inner);
        match guard.as_ref() {
            Some(db) => f(db),
            None => Err(StoreError::Unavailable {
                path: self.inner.path.clone(),
                detail: "reopening after an I/O error failed; it is retried on the next write"
                    .into(),
            }),
        }
    }

    /// Runs `f` with exclusive access to the database (compaction).
    pub(crate) fn with_db_mut<T>(
        &self,
        f: impl FnOnce(&mut Database) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut guard = self
            .inner
            .db
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        match guard.as_mut() {
            Some(db) => f(db),
            None => Err(StoreError::Unavailable {
                path: self.inner.path.clone(),
                detail: "not open".into(),
            }),
        }
    }

    /// True (once) after a reopen: the write path's memory of the call graph may be stale.
    pub(crate) fn take_reopened(&self) -> bool {
        self.inner.reopened.swap(false, Ordering::AcqRel)
    }

    /// Closes and opens the database file again (redb checks and repairs it).
    pub(crate) fn reopen(&self) -> Result<(), StoreError> {
        let mut guard = self
            .inner
            .db
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if !self.inner.broken.load(Ordering::Acquire) && guard.is_some() {
            return Ok(());
        }
        log::warn!(
            "store: reopening {} after an I/O error",
            self.inner.path.display()
        );
        drop(guard.take());
        let db = open_database(&self.inner.path, &self.inner.config, &self.inner.limits)?;
        *guard = Some(db);
        self.inner.broken.store(false, Ordering::Release);
        self.inner.reopened.store(true, Ordering::Release);
        Ok(())
    }
}
