//! What seer changed on the host, written to disk *before* each change is applied, so that a
//! clean exit, a later run after a crash, or `seer-agent act undo` can put the host back.
//!
//! Invariants: an entry holds the value the host had before seer's *first* change to that
//! object (later changes to the same file do not overwrite it); entries are undone newest
//! first; the file is replaced atomically (write to `.tmp`, fsync, rename) and removed when
//! empty.
use std::{
    io::Write,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

/// Default journal path (tmpfs: a reboot resets every kernel object seer changes anyway).
pub const DEFAULT_JOURNAL: &str = "/run/seer/actions.json";

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot read the action journal {path}: {source} (fix or remove the file)")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the action journal {path} is not valid JSON: {source} (inspect it, undo by hand, then remove it)"
    )]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "cannot write the action journal {path}: {source} (is its directory writable? --journal picks another path)"
    )]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One reversible change, described well enough to undo it from a fresh process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// A cgroup control file (cpu.max, cpu.cfs_quota_us, cpuset.cpus, ...) held `old`.
    CgroupFile { path: PathBuf, old: String },
    /// A resctrl `schemata` file held `old` (only the lines seer rewrote).
    ResctrlSchemata { path: PathBuf, old: String },
    /// A resctrl group seer created; removing it moves its tasks back to the default group.
    ResctrlGroup { path: PathBuf },
    /// An HTB root qdisc seer put on `iface`; deleting it restores the kernel's default qdisc.
    HtbRoot {
        iface: String,
        ifindex: u32,
        handle: u32,
    },
}

impl Change {
    /// The object this change is about, to record only the first change to each.
    fn key(&self) -> String {
        match self {
            Change::CgroupFile { path, .. }
            | Change::ResctrlSchemata { path, .. }
            | Change::ResctrlGroup { path } => path.display().to_string(),
            Change::HtbRoot { iface, ifindex, .. } => format!("htb:{iface}:{ifindex}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub id: u64,
    /// The service the change was made for.
    pub service: String,
    pub change: Change,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct OnDisk {
    next_id: u64,
    entries: Vec<Entry>,
}

#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    disk: OnDisk,
}

impl Journal {
    /// Opens the journal, keeping whatever a previous run left (see [`Journal::entries`]).
    pub fn open(path: &Path) -> Result<Self, JournalError> {
        let disk = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| JournalError::Parse {
                path: path.into(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => OnDisk::default(),
            Err(source) => {
                return Err(JournalError::Read {
                    path: path.into(),
                    source,
                });
            }
        };
        Ok(Journal {
            path: path.into(),
            disk,
        })
    }

    pub fn entries(&self) -> &[Entry] {
        &self.disk.entries
    }

    /// Whether a change to the same object is already recorded (its original value is kept).
    pub fn holds(&self, change: &Change) -> bool {
        let k = change.key();
        self.disk.entries.iter().any(|e| e.change.key() == k)
    }

    /// Records `change` on disk before the caller applies it. Returns `None` when the object
    /// already has an entry (the first original value is the one to restore).
    pub fn record(&mut self, service: &str, change: Change) -> Result<Option<u64>, JournalError> {
        if self.holds(&change) {
            return Ok(None);
        }
        let id = self.disk.next_id;
        self.disk.next_id += 1;
        self.disk.entries.push(Entry {
            id,
            service: service.into(),
            change,
        });
        if let Err(e) = self.persist() {
            self.disk.entries.pop();
            return Err(e);
        }
        Ok(Some(id))
    }

    /// Drops an entry once its change is undone (or turned out not to be needed).
    pub fn forget(&mut self, id: u64) -> Result<(), JournalError> {
        self.disk.entries.retain(|e| e.id != id);
        self.persist()
    }

    fn persist(&self) -> Result<(), JournalError> {
        let werr = |source| JournalError::Write {
            path: self.path.clone(),
            source,
        };
        if self.disk.entries.is_empty() {
            return match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(werr(e)),
                _ => Ok(()),
            };
        }
        if let Some(dir) = self.path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(werr)?;
        }
        let tmp = self.path.with_extension("json.tmp");
        let json = serde_json::to_vec_pretty(&self.disk).map_err(|e| werr(e.into()))?;
        let mut f = std::fs::File::create(&tmp).map_err(werr)?;
        f.write_all(&json).map_err(werr)?;
        f.sync_all().map_err(werr)?;
        std::fs::rename(&tmp, &self.path).map_err(werr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actuate::testutil::TempDir;

    #[test]
    fn records_first_value_persists_and_removes_when_empty() {
        let d = TempDir::new("journal");
        let p = d.path().join("state/actions.json");
        let mut j = Journal::open(&p).expect("open empty");
        let c1 = Change::CgroupFile {
            path: "/x/cpu.max".into(),
            old: "max 100000".into(),
        };
        let id = j.record("svc", c1.clone()).expect("record").expect("new");
        // A second change to the same file keeps the original value.
        let c2 = Change::CgroupFile {
            path: "/x/cpu.max".into(),
            old: "20000 100000".into(),
        };
        assert_eq!(j.record("svc", c2).expect("record"), None);
        let again = Journal::open(&p).expect("reopen");
        assert_eq!(again.entries().len(), 1);
        assert_eq!(again.entries()[0].change, c1);
        j.forget(id).expect("forget");
        assert!(!p.exists(), "an empty journal leaves no file");
    }

    #[test]
    fn corrupt_journal_is_a_clear_error() {
        let d = TempDir::new("journal-bad");
        let p = d.path().join("actions.json");
        std::fs::write(&p, "{not json").expect("write");
        let e = Journal::open(&p).expect_err("corrupt");
        assert!(e.to_string().contains("not valid JSON"), "{e}");
    }
}
