//! Errors of the trace store. Every variant names the database path (or export folder) and,
//! where a person can fix it, what to do.

use std::path::PathBuf;

/// Any failure of the store. Variants that a person can act on come first.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot write the trace store at {path}: {source}; make the folder writable by the agent \
         or point the store at another path"
    )]
    Unwritable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A folder or file seer would write in that someone else could tamper with (see
    /// [`crate::safefs`]); the message names the path, its owner or mode, and what to do.
    #[error(transparent)]
    Unsafe(#[from] crate::safefs::SafeFsError),
    #[error(
        "trace store {path} is open in another process (is a seer agent running?); stop it, \
         or use another path"
    )]
    Locked { path: PathBuf },
    #[error(
        "{path} is not a seer trace store (not a redb database); move it aside or point the \
         store at another path"
    )]
    NotRedb { path: PathBuf },
    #[error(
        "{path} is a redb database but not a seer trace store (it has no seer schema version); \
         move it aside or point the store at another path"
    )]
    Foreign { path: PathBuf },
    #[error(
        "trace store {path} is damaged ({detail}); move it aside (a new store is then created) \
         or restore it from a backup"
    )]
    Damaged { path: PathBuf, detail: String },
    #[error(
        "trace store {path} has schema version {found}, newer than the {supported} this agent \
         understands; upgrade seer-agent, or move the file aside"
    )]
    NewerSchema {
        path: PathBuf,
        found: u64,
        supported: u64,
    },
    #[error(
        "trace store {path} is full (disk full, or the configured cap of {cap_bytes} bytes \
         reached) during {op}"
    )]
    DiskFull {
        path: PathBuf,
        op: &'static str,
        cap_bytes: u64,
        #[source]
        source: Box<redb::Error>,
    },
    #[error("trace store {path}: {op} failed")]
    Db {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: Box<redb::Error>,
    },
    #[error("trace store {path}: row {key} of table {table} does not decode: {source}")]
    Corrupt {
        path: PathBuf,
        table: &'static str,
        key: String,
        #[source]
        source: crate::codec::CodecError,
    },
    #[error("trace store {path} is unavailable after an I/O error: {detail}")]
    Unavailable { path: PathBuf, detail: String },
    #[error("invalid store configuration: {0}")]
    Config(String),
    #[error("export to {dir}: {op} failed")]
    ExportIo {
        dir: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("export to {dir}: {op} failed")]
    ExportArrow {
        dir: PathBuf,
        op: &'static str,
        #[source]
        source: arrow_schema::ArrowError,
    },
    #[error("export to {dir}: writing the manifest failed")]
    ExportManifest {
        dir: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("the store writer thread is gone: {0}")]
    WriterGone(String),
}

/// True when an error means "no space left": a full disk, a quota, or the store's own cap.
pub fn is_disk_full(e: &redb::Error) -> bool {
    match e {
        redb::Error::Io(io) => io_is_disk_full(io),
        _ => false,
    }
}

pub(crate) fn io_is_disk_full(io: &std::io::Error) -> bool {
    const ENOSPC: i32 = 28;
    const EFBIG: i32 = 27;
    const EDQUOT: i32 = 122;
    io.kind() == std::io::ErrorKind::StorageFull
        || io.kind() == std::io::ErrorKind::QuotaExceeded
        || io.kind() == std::io::ErrorKind::FileTooLarge
        || matches!(io.raw_os_error(), Some(ENOSPC | EFBIG | EDQUOT))
}

/// True when redb needs the database closed and opened again before it can be used.
pub(crate) fn needs_reopen(e: &redb::Error) -> bool {
    matches!(e, redb::Error::Io(_) | redb::Error::PreviousIo)
}
