//! The library's one error type: each variant says what failed and, where it helps, what to do.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A scenario file that does not parse or does not make sense, located at file:line:col.
    #[error("{file}:{line}:{col}: {msg}")]
    Scenario {
        file: String,
        line: usize,
        col: usize,
        msg: String,
    },
    #[error("{what} ({path}): {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An external command (ip, tc) that failed; `stderr` is what it printed.
    #[error("`{cmd}` failed: {stderr}")]
    Command { cmd: String, stderr: String },
    #[error("{0}")]
    Setup(String),
    #[error("{what}: {source}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            what,
            path: path.into(),
            source,
        }
    }
}
