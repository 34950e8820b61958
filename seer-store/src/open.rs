//! Opening the database file: every way it can fail becomes a [`StoreError`] that names the
//! path and what to do, and the schema version is checked before anything is written.

use crate::backend::{CappedBackend, Limits, written_ranges};
use crate::safefs;
use crate::schema::{
    ACTIONS, AGG_1S, ALERTS, DIAGNOSES, EDGES, HOST, META, META_CREATED_MS, META_SCHEMA_VERSION,
    META_TICK_MS, QOS_EVENTS, REJECTED_ALERTS, REMOTE_EDGES, SAMPLES, SCHEMA_VERSION, SERVICES,
};
use crate::{StoreConfig, StoreError};
use redb::backends::FileBackend;
use redb::{Database, DatabaseError, StorageError, TableError};
use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::FileExt as _;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;

/// redb's magic number, the first bytes of every redb file.
const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];
/// redb's header with its two commit slots; a file shorter than this cannot be a database.
const REDB_HEADER_LEN: u64 = 320;

/// The file length redb 2.x's header implies: one super-header page, then full regions, then
/// a trailing partial region (redb's `DatabaseLayout::len`). redb asserts the file is at least
/// this long instead of returning an error, so it is checked here first. None if the header
/// does not look like redb 2.x's (redb then decides).
fn redb_layout_len(header: &[u8; 64]) -> Option<u64> {
    let u32_at = |o: usize| {
        u64::from(u32::from_le_bytes([
            header[o],
            header[o + 1],
            header[o + 2],
            header[o + 3],
        ]))
    };
    let page = u32_at(12);
    let region_header_pages = u32_at(16);
    let region_max_data_pages = u32_at(20);
    let full_regions = u32_at(24);
    let trailing_pages = u32_at(28);
    if !page.is_power_of_two()
        || !(512..=1 << 20).contains(&page)
        || full_regions + trailing_pages == 0
    {
        return None;
    }
    let full = full_regions.checked_mul((region_header_pages + region_max_data_pages) * page)?;
    let trailing = if trailing_pages > 0 {
        (region_header_pages + trailing_pages) * page
    } else {
        0
    };
    page.checked_add(full)?.checked_add(trailing)
}

fn unwritable(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Unwritable {
        path: path.to_owned(),
        source,
    }
}

fn damaged(path: &Path, detail: impl Into<String>) -> StoreError {
    StoreError::Damaged {
        path: path.to_owned(),
        detail: detail.into(),
    }
}

/// Looks at the file before redb does: redb panics on some truncated files.
fn precheck(path: &Path, file: &File) -> Result<(), StoreError> {
    let meta = file.metadata().map_err(|e| unwritable(path, e))?;
    if !meta.is_file() {
        return Err(StoreError::NotRedb {
            path: path.to_owned(),
        });
    }
    if meta.len() == 0 {
        return Ok(());
    }
    let mut head = [0u8; 64];
    let mut n = 0;
    while n < head.len() {
        match file
            .read_at(&mut head[n..], n as u64)
            .map_err(|e| unwritable(path, e))?
        {
            0 => break,
            k => n += k,
        }
    }
    if n < REDB_MAGIC.len() || head[..REDB_MAGIC.len()] != REDB_MAGIC {
        return Err(StoreError::NotRedb {
            path: path.to_owned(),
        });
    }
    if meta.len() < REDB_HEADER_LEN {
        return Err(damaged(
            path,
            format!(
                "truncated to {} bytes, shorter than a redb header",
                meta.len()
            ),
        ));
    }
    if let Some(expected) = redb_layout_len(&head)
        && meta.len() < expected
    {
        return Err(damaged(
            path,
            format!(
                "truncated: {} bytes, its header says {expected}",
                meta.len()
            ),
        ));
    }
    Ok(())
}

fn classify(path: &Path, e: DatabaseError) -> StoreError {
    match e {
        DatabaseError::DatabaseAlreadyOpen => StoreError::Locked {
            path: path.to_owned(),
        },
        DatabaseError::Storage(StorageError::Io(io)) if io.kind() == ErrorKind::InvalidData => {
            StoreError::NotRedb {
                path: path.to_owned(),
            }
        }
        DatabaseError::Storage(StorageError::Io(io)) if io.kind() == ErrorKind::UnexpectedEof => {
            damaged(
                path,
                "truncated: the file ends before its header says it does",
            )
        }
        DatabaseError::Storage(StorageError::Corrupted(detail)) => damaged(path, detail),
        DatabaseError::RepairAborted => damaged(path, "repair after a crash was aborted"),
        DatabaseError::UpgradeRequired(v) => damaged(
            path,
            format!("written in redb file format {v}, which this agent cannot read"),
        ),
        other => StoreError::Db {
            path: path.to_owned(),
            op: "open",
            source: Box::new(other.into()),
        },
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

/// Opens (creating if needed, 0600) the store file in a folder only this uid can write
/// (created 0700 if missing), never through a symbolic link: see [`crate::safefs`].
fn open_file(path: &Path) -> Result<File, StoreError> {
    let refused = |e: safefs::SafeFsError| e.split(|io| unwritable(path, io), StoreError::from);
    let (dir, name) = safefs::split_file_path(path)?;
    let dir = safefs::private_dir(dir).map_err(refused)?;
    dir.open_or_create(name).map_err(|e| match e {
        safefs::SafeFsError::WrongType { .. } => StoreError::NotRedb {
            path: path.to_owned(),
        },
        e => refused(e),
    })
}

/// Opens (creating if needed) the redb file at `path` with the cap of `config`.
pub(crate) fn open_database(
    path: &Path,
    config: &StoreConfig,
    limits: &Arc<Limits>,
) -> Result<Database, StoreError> {
    let file = open_file(path)?;
    precheck(path, &file)?;
    let written = written_ranges(&file).map_err(|e| unwritable(path, e))?;
    let backend = FileBackend::new(file).map_err(|e| classify(path, e))?;
    let backend =
        CappedBackend::new(backend, limits.clone(), &written).map_err(|e| unwritable(path, e))?;
    let shown = path.display().to_string();
    let mut builder = Database::builder();
    builder
        .set_cache_size(config.cache_bytes)
        .create_with_file_format_v3(true)
        .set_repair_callback(move |session| {
            if session.progress() == 0.0 {
                log::warn!("store: {shown} was not closed cleanly; checking it (repair)");
            }
        });
    // redb asserts on some truncated files instead of returning an error.
    match panic::catch_unwind(AssertUnwindSafe(|| builder.create_with_backend(backend))) {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(classify(path, e)),
        Err(p) => Err(damaged(
            path,
            format!(
                "redb cannot read it, probably truncated ({})",
                panic_message(&*p)
            ),
        )),
    }
}

fn table_err(path: &Path, e: TableError) -> StoreError {
    match e {
        TableError::TableTypeMismatch { .. } | TableError::TableIsMultimap(_) => {
            StoreError::Foreign {
                path: path.to_owned(),
            }
        }
        other => StoreError::Db {
            path: path.to_owned(),
            op: "open table",
            source: Box::new(other.into()),
        },
    }
}

fn db_err(path: &Path, op: &'static str, e: impl Into<redb::Error>) -> StoreError {
    StoreError::Db {
        path: path.to_owned(),
        op,
        source: Box::new(e.into()),
    }
}

/// Refuses stores of a newer schema or of another program; creates the tables of a new store.
pub(crate) fn check_schema(
    db: &Database,
    path: &Path,
    config: &StoreConfig,
) -> Result<(), StoreError> {
    let read = db.begin_read().map_err(|e| db_err(path, "begin read", e))?;
    let version = match read.open_table(META) {
        Ok(t) => t
            .get(META_SCHEMA_VERSION)
            .map_err(|e| db_err(path, "read schema version", e))?
            .map(|g| g.value()),
        Err(TableError::TableDoesNotExist(_)) => None,
        Err(e) => return Err(table_err(path, e)),
    };
    match version {
        Some(found) if found > SCHEMA_VERSION => {
            return Err(StoreError::NewerSchema {
                path: path.to_owned(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        Some(SCHEMA_VERSION) => {}
        Some(_) => {
            return Err(StoreError::Foreign {
                path: path.to_owned(),
            });
        }
        None => {
            let mut tables = read
                .list_tables()
                .map_err(|e| db_err(path, "list tables", e))?;
            if tables.next().is_some() {
                return Err(StoreError::Foreign {
                    path: path.to_owned(),
                });
            }
        }
    }
    drop(read);

    let txn = db
        .begin_write()
        .map_err(|e| db_err(path, "begin write", e))?;
    {
        let mut meta = txn.open_table(META).map_err(|e| table_err(path, e))?;
        if version.is_none() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            meta.insert(META_SCHEMA_VERSION, SCHEMA_VERSION)
                .map_err(|e| db_err(path, "write schema version", e))?;
            meta.insert(META_CREATED_MS, now)
                .map_err(|e| db_err(path, "write creation time", e))?;
            meta.insert(META_TICK_MS, config.tick_ms)
                .map_err(|e| db_err(path, "write tick", e))?;
        }
        txn.open_table(SERVICES).map_err(|e| table_err(path, e))?;
        txn.open_table(SAMPLES).map_err(|e| table_err(path, e))?;
        txn.open_table(AGG_1S).map_err(|e| table_err(path, e))?;
        txn.open_table(EDGES).map_err(|e| table_err(path, e))?;
        txn.open_table(QOS_EVENTS).map_err(|e| table_err(path, e))?;
        txn.open_table(ALERTS).map_err(|e| table_err(path, e))?;
        txn.open_table(ACTIONS).map_err(|e| table_err(path, e))?;
        txn.open_table(HOST).map_err(|e| table_err(path, e))?;
        txn.open_table(DIAGNOSES).map_err(|e| table_err(path, e))?;
        txn.open_table(REMOTE_EDGES)
            .map_err(|e| table_err(path, e))?;
        txn.open_table(REJECTED_ALERTS)
            .map_err(|e| table_err(path, e))?;
    }
    txn.commit().map_err(|e| db_err(path, "create tables", e))?;
    Ok(())
}
