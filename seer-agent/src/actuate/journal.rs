//! What seer changed on the host, written to disk *before* each change is applied, so that a
//! clean exit, a later run after a crash, or `seer-agent act undo` can put the host back.
//!
//! Invariants: an entry holds the value the host had before seer's *first* change to that
//! object (later changes to the same file do not overwrite it); entries are undone newest
//! first; the file is replaced atomically (write to `.tmp`, fsync, rename) and removed when
//! empty.
//!
//! Undoing writes each entry's old value back to its path as root, so the journal must be
//! something no one else can write or swap: its folder must belong to the agent's uid and be
//! writable by no one else (created 0700), the file is 0600, and no name in the folder is
//! followed (see [`seer_store::safefs`]).
use std::{
    io::Read as _,
    path::{Path, PathBuf},
};

use seer_store::safefs::{self, PrivateDir, SafeFsError};
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
    #[error("refusing the action journal {path}: {reason}")]
    Unsafe { path: PathBuf, reason: SafeFsError },
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
    /// A folder others can write, or a link in place of the file, is refused.
    pub fn open(path: &Path) -> Result<Self, JournalError> {
        let rerr = |e: SafeFsError| {
            e.split(
                |source| JournalError::Read {
                    path: path.into(),
                    source,
                },
                unsafe_err(path),
            )
        };
        let (dir, name) = safefs::split_file_path(path).map_err(rerr)?;
        let file = match safefs::existing_private_dir(dir).map_err(rerr)? {
            Some(dir) => dir.open_existing(name, false).map_err(rerr)?,
            None => None,
        };
        let disk = match file {
            Some(mut f) => {
                let mut bytes = Vec::new();
                f.read_to_end(&mut bytes)
                    .map_err(|source| JournalError::Read {
                        path: path.into(),
                        source,
                    })?;
                serde_json::from_slice(&bytes).map_err(|source| JournalError::Parse {
                    path: path.into(),
                    source,
                })?
            }
            None => OnDisk::default(),
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
        let (dir, name) = safefs::split_file_path(&self.path).map_err(unsafe_err(&self.path))?;
        let werr = |e: SafeFsError| {
            e.split(
                |source| JournalError::Write {
                    path: self.path.clone(),
                    source,
                },
                |reason| JournalError::Unsafe {
                    path: self.path.clone(),
                    reason,
                },
            )
        };
        if self.disk.entries.is_empty() {
            return match safefs::existing_private_dir(dir).map_err(werr)? {
                Some(d) => d.remove(name).map(drop).map_err(werr),
                None => Ok(()),
            };
        }
        let json = serde_json::to_vec_pretty(&self.disk).map_err(|e| JournalError::Write {
            path: self.path.clone(),
            source: e.into(),
        })?;
        let dir: PrivateDir = safefs::private_dir(dir).map_err(werr)?;
        dir.write_atomic(name, &json).map_err(werr)
    }
}

fn unsafe_err(path: &Path) -> impl FnOnce(SafeFsError) -> JournalError + '_ {
    move |reason| JournalError::Unsafe {
        path: path.into(),
        reason,
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

    fn cpu_max() -> Change {
        Change::CgroupFile {
            path: "/x/cpu.max".into(),
            old: "max 100000".into(),
        }
    }

    fn chmod(p: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    /// The permission bits, in octal.
    fn mode(p: &Path) -> String {
        use std::os::unix::fs::MetadataExt as _;
        format!(
            "{:o}",
            std::fs::symlink_metadata(p).expect("stat").mode() & 0o7777
        )
    }

    #[test]
    fn planted_tmp_symlink_is_not_followed() {
        let d = TempDir::new("journal-link");
        let victim = d.path().join("victim");
        std::fs::write(&victim, "precious\n").expect("victim");
        let dir = d.path().join("state");
        std::fs::create_dir(&dir).expect("mkdir");
        chmod(&dir, 0o700);
        let p = dir.join("actions.json");
        std::os::unix::fs::symlink(&victim, dir.join("actions.json.tmp")).expect("plant");
        let mut j = Journal::open(&p).expect("open");
        j.record("svc", cpu_max()).expect("record").expect("new");
        assert_eq!(
            std::fs::read_to_string(&victim).expect("read victim"),
            "precious\n",
            "the journal wrote through a planted link"
        );
        assert_eq!(Journal::open(&p).expect("reopen").entries().len(), 1);
    }

    #[test]
    fn journal_that_is_a_symlink_is_not_followed() {
        let d = TempDir::new("journal-final-link");
        let victim = d.path().join("victim");
        std::fs::write(&victim, "{\"next_id\":0,\"entries\":[]}").expect("victim");
        let dir = d.path().join("state");
        std::fs::create_dir(&dir).expect("mkdir");
        chmod(&dir, 0o700);
        let p = dir.join("actions.json");
        std::os::unix::fs::symlink(&victim, &p).expect("plant");
        let e = Journal::open(&p).expect_err("a journal behind a symlink opened");
        assert!(e.to_string().contains(&p.display().to_string()), "{e}");
    }

    #[test]
    fn journal_folder_writable_by_others_is_refused() {
        for m in [0o777, 0o1777, 0o770] {
            let d = TempDir::new("journal-open");
            let dir = d.path().join("state");
            std::fs::create_dir(&dir).expect("mkdir");
            chmod(&dir, m);
            let p = dir.join("actions.json");
            let e = Journal::open(&p)
                .and_then(|mut j| j.record("svc", cpu_max()))
                .expect_err("journal in a folder others can write");
            let msg = e.to_string();
            assert!(msg.contains(&dir.display().to_string()), "{msg}");
            assert!(msg.contains("writable"), "{msg}");
            assert!(!p.exists(), "{m:o}: the journal was written anyway");
        }
    }

    #[test]
    fn journal_folder_owned_by_another_user_is_refused() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root to give a folder to nobody");
            return;
        }
        let d = TempDir::new("journal-nobody");
        let dir = d.path().join("state");
        std::fs::create_dir(&dir).expect("mkdir");
        chmod(&dir, 0o755);
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).expect("chown nobody");
        let p = dir.join("actions.json");
        let e = Journal::open(&p)
            .and_then(|mut j| j.record("svc", cpu_max()))
            .expect_err("journal in a folder owned by nobody");
        let msg = e.to_string();
        assert!(msg.contains(&dir.display().to_string()), "{msg}");
        assert!(msg.contains("65534"), "{msg} does not name the owner");
        assert!(!p.exists());
    }

    #[test]
    fn new_journal_folder_and_file_are_private() {
        let d = TempDir::new("journal-modes");
        let dir = d.path().join("run/seer");
        let p = dir.join("actions.json");
        let mut j = Journal::open(&p).expect("open");
        j.record("svc", cpu_max()).expect("record");
        assert_eq!(mode(&d.path().join("run")), "700");
        assert_eq!(mode(&dir), "700");
        assert_eq!(mode(&p), "600");
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
