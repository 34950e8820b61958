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
//!
//! One process at a time: [`Journal::open`] takes an exclusive lock (`flock` on
//! `<journal>.lock` in the same folder) for as long as the journal is open, so a running agent
//! and `seer-agent act` cannot both rewrite it and lose each other's entries; a crashed holder's
//! lock goes with it. And an entry is undone only if it names an object seer changes (a cgroup
//! control file seer writes, a path under the resctrl root): a damaged journal cannot make the
//! undo write elsewhere ([`Change::refusal`]).
use std::{
    io::Read as _,
    path::{Path, PathBuf},
};

use seer_store::safefs::{self, PrivateDir, SafeFsError};
use serde::{Deserialize, Serialize};

/// Default journal path (tmpfs: a reboot resets every kernel object seer changes anyway); the
/// config's default, defined there with the rest of `[respond]`.
pub use crate::config::DEFAULT_JOURNAL;

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
    #[error(
        "the action journal {path} is in use by another seer process (a running agent, or `seer-agent act`): stop it first, or give this one its own journal (--journal / [respond] journal)"
    )]
    Busy { path: PathBuf },
}

/// The cgroup control files seer writes (and so the only ones an undo may write).
pub const CGROUP_KNOBS: [&str; 6] = [
    "cpu.max",
    "cpu.weight",
    "cpuset.cpus",
    "cpu.cfs_period_us",
    "cpu.cfs_quota_us",
    "cpu.shares",
];

/// One reversible change, described well enough to undo it from a fresh process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// A cgroup control file (cpu.max, cpu.cfs_quota_us, cpuset.cpus, ...) held `old`.
    CgroupFile {
        path: PathBuf,
        old: String,
        /// What the file read right after seer's last write to it. An undo restores `old`
        /// only while the file still holds this: a value someone else set since is theirs.
        /// (Absent in journals written before it: then the undo restores `old`.)
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wrote: Option<String>,
    },
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
    /// Why this entry must not be undone (it names something seer never changes), or None.
    /// `resctrl_root`: where resctrl groups live on this host.
    pub fn refusal(&self, resctrl_root: &Path) -> Option<String> {
        let plain = |p: &Path| {
            p.is_absolute()
                && p.components().all(|c| {
                    matches!(
                        c,
                        std::path::Component::RootDir | std::path::Component::Normal(_)
                    )
                })
        };
        let name = |p: &Path| p.file_name().and_then(|n| n.to_str()).map(str::to_owned);
        match self {
            Change::CgroupFile { path, .. } => {
                let knob = name(path).unwrap_or_default();
                (!plain(path) || !CGROUP_KNOBS.contains(&knob.as_str())).then(|| {
                    format!(
                        "{} is not a cgroup control file seer writes ({})",
                        path.display(),
                        CGROUP_KNOBS.join(", ")
                    )
                })
            }
            Change::ResctrlSchemata { path, .. } => (!plain(path)
                || !path.starts_with(resctrl_root)
                || name(path).as_deref() != Some("schemata"))
            .then(|| {
                format!(
                    "{} is not a schemata file under {}",
                    path.display(),
                    resctrl_root.display()
                )
            }),
            Change::ResctrlGroup { path } => (!plain(path) || path.parent() != Some(resctrl_root))
                .then(|| {
                    format!(
                        "{} is not a resctrl group directly under {}",
                        path.display(),
                        resctrl_root.display()
                    )
                }),
            Change::HtbRoot { .. } => None,
        }
    }

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
    /// Holds the exclusive lock while open (None: opened to look only, see `peek`).
    _lock: Option<std::fs::File>,
}

impl Journal {
    /// Opens the journal for this process alone (see the module's doc on the lock), keeping
    /// whatever a previous run left (see [`Journal::entries`]). A folder others can write, or
    /// a link in place of the file, is refused; so is a journal another process holds.
    pub fn open(path: &Path) -> Result<Self, JournalError> {
        let (dir, name) = safefs::split_file_path(path).map_err(unsafe_err(path))?;
        let werr = |e: SafeFsError| {
            e.split(
                |source| JournalError::Write {
                    path: path.into(),
                    source,
                },
                unsafe_err(path),
            )
        };
        let mut lock_name = name.to_owned();
        lock_name.push(".lock");
        let lock = safefs::private_dir(dir)
            .and_then(|d| d.open_or_create(&lock_name))
            .map_err(werr)?;
        {
            use std::os::fd::AsRawFd as _;
            // SAFETY: flock on a descriptor this function owns.
            if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                let e = std::io::Error::last_os_error();
                return Err(if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                    JournalError::Busy { path: path.into() }
                } else {
                    JournalError::Write {
                        path: path.into(),
                        source: e,
                    }
                });
            }
        }
        let mut j = Self::peek(path)?;
        j._lock = Some(lock);
        Ok(j)
    }

    /// Reads the journal without taking it (`seer-agent act status` while an agent runs):
    /// for looking only, never for recording or undoing.
    pub fn peek(path: &Path) -> Result<Self, JournalError> {
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
            _lock: None,
        })
    }

    /// Lets go of the lock as a killed process would (tests of crash recovery).
    #[cfg(test)]
    pub fn release_lock(&mut self) {
        self._lock = None;
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

    /// Notes what a cgroup file read after seer wrote it (see `Change::CgroupFile::wrote`).
    pub fn note_written(&mut self, path: &Path, value: &str) -> Result<(), JournalError> {
        let mut changed = false;
        for e in &mut self.disk.entries {
            if let Change::CgroupFile { path: p, wrote, .. } = &mut e.change
                && p == path
                && wrote.as_deref() != Some(value)
            {
                *wrote = Some(value.to_string());
                changed = true;
            }
        }
        if changed { self.persist() } else { Ok(()) }
    }

    /// Drops an entry once its change is undone (or turned out not to be needed).
    pub fn forget(&mut self, id: u64) -> Result<(), JournalError> {
        self.disk.entries.retain(|e| e.id != id);
        self.persist()
    }

    fn persist(&self) -> Result<(), JournalError> {
        if self._lock.is_none() {
            return Err(JournalError::Write {
                path: self.path.clone(),
                source: std::io::Error::other("opened to look only (Journal::peek): not written"),
            });
        }
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

    /// Before: `seer-agent act` and a running agent each kept their own copy and rewrote the
    /// file, and one's entries were lost. Now the second opener is refused, with what to do,
    /// until the first closes; looking (`peek`) still works.
    #[test]
    fn one_process_at_a_time_holds_the_journal() {
        let d = TempDir::new("journal-lock");
        let p = d.path().join("state/actions.json");
        let mut first = Journal::open(&p).expect("open");
        first.record("svc", cpu_max()).expect("record");
        let err = Journal::open(&p).expect_err("a second holder");
        assert!(matches!(err, JournalError::Busy { .. }), "{err}");
        assert!(err.to_string().contains("stop it first"), "{err}");
        let look = Journal::peek(&p).expect("peek while held");
        assert_eq!(look.entries().len(), 1);
        let mut look = look;
        assert!(look.forget(0).is_err(), "a peeked journal is never written");
        drop(first);
        let again = Journal::open(&p).expect("free once the first closed");
        assert_eq!(again.entries().len(), 1);
    }

    /// A journal entry names an object seer changes, or it is not undone.
    #[test]
    fn entries_that_name_what_seer_never_changes_are_refused() {
        let root = Path::new("/sys/fs/resctrl");
        let ok = [
            Change::CgroupFile {
                path: "/sys/fs/cgroup/cpu/x/cpu.cfs_quota_us".into(),
                old: "-1".into(),
                wrote: None,
            },
            Change::ResctrlSchemata {
                path: "/sys/fs/resctrl/seer-x/schemata".into(),
                old: "L3:0=ff".into(),
            },
            Change::ResctrlGroup {
                path: "/sys/fs/resctrl/seer-x".into(),
            },
        ];
        for c in &ok {
            assert_eq!(c.refusal(root), None, "{c:?}");
        }
        let bad = [
            Change::CgroupFile {
                path: "/etc/shadow".into(),
                old: String::new(),
                wrote: None,
            },
            Change::CgroupFile {
                path: "/sys/fs/cgroup/cpu/../../../etc/cpu.max".into(),
                old: String::new(),
                wrote: None,
            },
            Change::CgroupFile {
                path: "cpu.max".into(),
                old: String::new(),
                wrote: None,
            },
            Change::ResctrlSchemata {
                path: "/etc/schemata".into(),
                old: String::new(),
            },
            Change::ResctrlGroup {
                path: "/sys/fs/resctrl/../../etc".into(),
            },
            Change::ResctrlGroup { path: "/".into() },
        ];
        for c in &bad {
            assert!(c.refusal(root).is_some(), "{c:?}");
        }
    }

    #[test]
    fn records_first_value_persists_and_removes_when_empty() {
        let d = TempDir::new("journal");
        let p = d.path().join("state/actions.json");
        let mut j = Journal::open(&p).expect("open empty");
        let c1 = Change::CgroupFile {
            path: "/x/cpu.max".into(),
            old: "max 100000".into(),
            wrote: None,
        };
        let id = j.record("svc", c1.clone()).expect("record").expect("new");
        // A second change to the same file keeps the original value.
        let c2 = Change::CgroupFile {
            path: "/x/cpu.max".into(),
            old: "20000 100000".into(),
            wrote: None,
        };
        assert_eq!(j.record("svc", c2).expect("record"), None);
        let again = Journal::peek(&p).expect("read it back");
        assert_eq!(again.entries().len(), 1);
        assert_eq!(again.entries()[0].change, c1);
        j.forget(id).expect("forget");
        assert!(!p.exists(), "an empty journal leaves no file");
    }

    fn cpu_max() -> Change {
        Change::CgroupFile {
            path: "/x/cpu.max".into(),
            old: "max 100000".into(),
            wrote: None,
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
        drop(j);
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
