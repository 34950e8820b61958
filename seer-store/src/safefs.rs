//! Creating files as root beside services seer does not control.
//!
//! The agent runs as root; a name it opens in a folder another user can write may be a symbolic
//! link or a FIFO planted there, and following it truncates any file root can write, or hangs.
//! So every folder seer writes in (trace store, action journal, export) is opened here by
//! walking its path one component at a time from `/`, never by path again afterwards:
//!
//! - each folder crossed must belong to root or to seer's own uid and be writable by no one
//!   else, unless it is sticky (`/tmp` may be crossed, not written in); a symbolic link on the
//!   way is followed only when root or seer owns it (its folder was checked already);
//! - the folder itself must belong to seer's uid and not be writable by its group or others;
//! - missing folders are created 0700.
//!
//! Files are then created relative to the opened folder (`openat`) with
//! `O_CREAT | O_EXCL | O_NOFOLLOW`, mode 0600, or as unnamed `O_TMPFILE`s; temporary files are
//! renamed over the final name, never written through it; a stale temporary is unlinked first
//! (unlink does not follow links). [`unnamed_file_in`] is the one way to write in a folder
//! someone else controls: an `O_TMPFILE` has no name, so nothing planted can be followed.
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Write as _};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a folder or file was refused, or what failed; every variant names the path.
#[derive(Debug, thiserror::Error)]
pub enum SafeFsError {
    #[error(
        "{path} belongs to uid {owner}, not to {allowed}: its owner could plant links there that \
         make seer (running as uid {ours}) overwrite other files; use a folder that {allowed} \
         owns, or another path"
    )]
    NotOwned {
        path: PathBuf,
        owner: u32,
        allowed: String,
        ours: u32,
    },
    #[error(
        "{path} is writable by its group or others (mode {mode:04o}): anyone who can write \
         there could plant links that make seer overwrite other files; remove that access \
         (chmod go-w {path}) or use another path"
    )]
    Writable { path: PathBuf, mode: u32 },
    #[error(
        "{path} is a symbolic link: seer does not follow links for the files it writes; remove \
         the link or give the real path"
    )]
    Symlink { path: PathBuf },
    #[error("{path} is not a {expected}; move it aside or use another path")]
    WrongType {
        path: PathBuf,
        expected: &'static str,
    },
    #[error("{path}: too many symbolic links")]
    Loop { path: PathBuf },
    /// (The I/O error is part of the message, not a separate source: printed once.)
    #[error("cannot {op} {path}: {err}")]
    Io {
        op: &'static str,
        path: PathBuf,
        err: io::Error,
    },
}

impl SafeFsError {
    /// Splits an I/O failure (handed to `io`) from a refusal (handed to `refused`).
    pub fn split<T>(self, io: impl FnOnce(io::Error) -> T, refused: impl FnOnce(Self) -> T) -> T {
        match self {
            SafeFsError::Io { err, .. } => io(err),
            other => refused(other),
        }
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SafeFsError + 'a {
    move |err| SafeFsError::Io {
        op,
        path: path.to_owned(),
        err,
    }
}

/// The effective uid: the owner of everything seer creates.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn cname(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn openat(dir: BorrowedFd<'_>, name: &CString, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    // SAFETY: `name` is NUL-terminated; the fd returned is ours alone.
    let fd = cvt(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })?;
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn lstatat(dir: BorrowedFd<'_>, name: &CString) -> io::Result<libc::stat> {
    let mut st = MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: `st` has room for a stat; `name` is NUL-terminated.
    cvt(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    // SAFETY: fstatat filled it.
    Ok(unsafe { st.assume_init() })
}

fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    let mut st = MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: `st` has room for a stat.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstat filled it.
    Ok(unsafe { st.assume_init() })
}

fn is(st: &libc::stat, kind: libc::mode_t) -> bool {
    st.st_mode & libc::S_IFMT == kind
}

/// A folder opened as a descriptor (search access at least).
fn open_dir_at(dir: BorrowedFd<'_>, name: &CString) -> io::Result<OwnedFd> {
    let flags = libc::O_DIRECTORY | libc::O_NOFOLLOW;
    openat(dir, name, flags | libc::O_RDONLY, 0)
        .or_else(|_| openat(dir, name, flags | libc::O_PATH, 0))
}

fn uid_name(uid: u32) -> String {
    if uid == 0 {
        "root (uid 0)".into()
    } else {
        format!("uid {uid}")
    }
}

/// `st` belongs to root or to `ours`.
fn owned_by_root_or(st: &libc::stat, path: &Path, ours: u32) -> Result<(), SafeFsError> {
    if st.st_uid != 0 && st.st_uid != ours {
        return Err(SafeFsError::NotOwned {
            path: path.to_owned(),
            owner: st.st_uid,
            allowed: if ours == 0 {
                "root".into()
            } else {
                format!("root or uid {ours}")
            },
            ours,
        });
    }
    Ok(())
}

/// A folder crossed on the way: root's or ours, and writable by no one else unless sticky.
fn check_crossed(st: &libc::stat, path: &Path, ours: u32) -> Result<(), SafeFsError> {
    owned_by_root_or(st, path, ours)?;
    let mode = st.st_mode & 0o7777;
    if mode & 0o022 != 0 && mode & libc::S_ISVTX == 0 {
        return Err(SafeFsError::Writable {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// The folder written in: ours, and writable by no one else (sticky or not).
fn check_private(st: &libc::stat, path: &Path, ours: u32) -> Result<(), SafeFsError> {
    if st.st_uid != ours {
        return Err(SafeFsError::NotOwned {
            path: path.to_owned(),
            owner: st.st_uid,
            allowed: uid_name(ours),
            ours,
        });
    }
    let mode = st.st_mode & 0o7777;
    if mode & 0o022 != 0 {
        return Err(SafeFsError::Writable {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// Opens the folder `path` (the working directory if empty), creating what is missing 0700;
/// see the module docs for what is refused.
pub fn private_dir(path: &Path) -> Result<PrivateDir, SafeFsError> {
    walk(path, true).map(|d| d.expect("walk creates what is missing"))
}

/// As [`private_dir`], but None when the folder (or one on the way) does not exist.
pub fn existing_private_dir(path: &Path) -> Result<Option<PrivateDir>, SafeFsError> {
    walk(path, false)
}

/// The folder a file at `path` lives in, and the file's name.
pub fn split_file_path(path: &Path) -> Result<(&Path, &OsStr), SafeFsError> {
    let name = path.file_name().ok_or_else(|| SafeFsError::WrongType {
        path: path.to_owned(),
        expected: "file name",
    })?;
    Ok((path.parent().unwrap_or(Path::new("")), name))
}

fn walk(path: &Path, create: bool) -> Result<Option<PrivateDir>, SafeFsError> {
    let ours = euid();
    let shown = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    let abs = if shown.is_absolute() {
        shown.to_owned()
    } else {
        std::env::current_dir()
            .map_err(io_err("find the working directory for", shown))?
            .join(shown)
    };
    let mut todo: std::collections::VecDeque<OsString> = abs
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_owned()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let root = Path::new("/");
    // SAFETY: a NUL-terminated literal; the fd returned is ours alone.
    let fd = cvt(unsafe {
        libc::open(
            c"/".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })
    .map_err(io_err("open", root))?;
    // SAFETY: a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let st = fstat(fd.as_fd()).map_err(io_err("look at", root))?;
    check_crossed(&st, root, ours)?;
    let mut stack: Vec<(OwnedFd, PathBuf)> = vec![(fd, root.to_owned())];
    let mut links = 0;
    while let Some(name) = todo.pop_front() {
        if name == ".." {
            if stack.len() > 1 {
                stack.pop();
            }
            continue;
        }
        let (dir, dir_path) = stack.last().expect("the root stays");
        let here = dir_path.join(&name);
        let c = cname(&name).map_err(io_err("open", &here))?;
        let st = match lstatat(dir.as_fd(), &c) {
            Ok(st) => st,
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                // SAFETY: `c` is NUL-terminated.
                match cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o700) }) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(io_err("create the folder", &here)(e)),
                }
                // Looked at again: what is there now may not be what we made.
                todo.push_front(name);
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("look at", &here)(e)),
        };
        if is(&st, libc::S_IFLNK) {
            // Its folder was checked on the way in: only its owner could have made it.
            owned_by_root_or(&st, &here, ours)?;
            links += 1;
            if links > 40 {
                return Err(SafeFsError::Loop { path: here });
            }
            let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
            // SAFETY: `buf` has `buf.len()` bytes of room; `c` is NUL-terminated.
            let n = unsafe {
                libc::readlinkat(
                    dir.as_raw_fd(),
                    c.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            };
            if n < 0 {
                return Err(io_err("read the link", &here)(io::Error::last_os_error()));
            }
            buf.truncate(n as usize);
            let target = PathBuf::from(OsString::from_vec(buf));
            if target.is_absolute() {
                stack.truncate(1);
            }
            for comp in target.components().rev() {
                match comp {
                    Component::Normal(n) => todo.push_front(n.to_owned()),
                    Component::ParentDir => todo.push_front("..".into()),
                    _ => {}
                }
            }
            continue;
        }
        if !is(&st, libc::S_IFDIR) {
            return Err(SafeFsError::WrongType {
                path: here,
                expected: "folder",
            });
        }
        let fd = open_dir_at(dir.as_fd(), &c).map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                SafeFsError::Symlink { path: here.clone() }
            } else {
                io_err("open", &here)(e)
            }
        })?;
        // The folder opened, not whatever was at the name a moment ago.
        let st = fstat(fd.as_fd()).map_err(io_err("look at", &here))?;
        if !is(&st, libc::S_IFDIR) {
            return Err(SafeFsError::WrongType {
                path: here,
                expected: "folder",
            });
        }
        if !todo.is_empty() {
            check_crossed(&st, &here, ours)?;
        }
        stack.push((fd, here));
    }
    let (fd, here) = stack.pop().expect("the root stays");
    let st = fstat(fd.as_fd()).map_err(io_err("look at", &here))?;
    check_private(&st, &here, ours)?;
    Ok(Some(PrivateDir {
        fd,
        path: shown.to_owned(),
    }))
}

/// A folder only seer's uid can write, held open: names in it are resolved from this
/// descriptor, never from its path again.
#[derive(Debug)]
pub struct PrivateDir {
    fd: OwnedFd,
    path: PathBuf,
}

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl PrivateDir {
    /// The path it was opened by (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn file_err(&self, op: &'static str, name: &OsStr) -> impl FnOnce(io::Error) -> SafeFsError {
        let path = self.path.join(name);
        move |e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                SafeFsError::Symlink { path }
            } else {
                SafeFsError::Io { op, path, err: e }
            }
        }
    }

    fn regular(&self, f: OwnedFd, name: &OsStr) -> Result<File, SafeFsError> {
        let st = fstat(f.as_fd()).map_err(self.file_err("look at", name))?;
        if !is(&st, libc::S_IFREG) {
            return Err(SafeFsError::WrongType {
                path: self.path.join(name),
                expected: "regular file",
            });
        }
        Ok(File::from(f))
    }

    /// Opens `name` if it exists: read-only, or read-write; a link there is refused, not
    /// followed. None if there is none.
    pub fn open_existing(&self, name: &OsStr, write: bool) -> Result<Option<File>, SafeFsError> {
        let c = cname(name).map_err(self.file_err("open", name))?;
        let flags = libc::O_NOFOLLOW
            | if write {
                libc::O_RDWR
            } else {
                // A FIFO would block a read-only open.
                libc::O_RDONLY | libc::O_NONBLOCK
            };
        match openat(self.fd.as_fd(), &c, flags, 0) {
            Ok(f) => {
                let f = self.regular(f, name)?;
                if !write {
                    // Back to blocking reads for the caller.
                    let fd = f.as_raw_fd();
                    // SAFETY: fcntl on a descriptor we own.
                    unsafe {
                        let fl = libc::fcntl(fd, libc::F_GETFL);
                        if fl >= 0 {
                            libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK);
                        }
                    }
                }
                Ok(Some(f))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::EISDIR) => Err(SafeFsError::WrongType {
                path: self.path.join(name),
                expected: "regular file",
            }),
            Err(e) => Err(self.file_err("open", name)(e)),
        }
    }

    /// Creates `name` afresh (`O_EXCL | O_NOFOLLOW`, 0600), read-write.
    pub fn create_new(&self, name: &OsStr) -> Result<File, SafeFsError> {
        self.create_new_flags(name, libc::O_RDWR)
    }

    fn create_new_flags(&self, name: &OsStr, flags: i32) -> Result<File, SafeFsError> {
        let c = cname(name).map_err(self.file_err("create", name))?;
        let f = openat(
            self.fd.as_fd(),
            &c,
            flags | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
            0o600,
        )
        .map_err(self.file_err("create", name))?;
        Ok(File::from(f))
    }

    /// Opens the regular file `name` read-write, creating it (0600) if there is none; a link
    /// there is refused, not followed.
    pub fn open_or_create(&self, name: &OsStr) -> Result<File, SafeFsError> {
        loop {
            match self.create_new(name) {
                Ok(f) => return Ok(f),
                Err(SafeFsError::Io { err, .. }) if err.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            if let Some(f) = self.open_existing(name, true)? {
                return Ok(f);
            }
            // Removed between the two: try again.
        }
    }

    /// Removes `name` (a link itself, not what it points at). False if there was none.
    pub fn remove(&self, name: &OsStr) -> Result<bool, SafeFsError> {
        let c = cname(name).map_err(self.file_err("remove", name))?;
        // SAFETY: `c` is NUL-terminated.
        match cvt(unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), 0) }) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(self.file_err("remove", name)(e)),
        }
    }

    /// The temporary name `name` is written under.
    pub fn tmp_name(name: &OsStr) -> OsString {
        let mut t = name.to_owned();
        t.push(".tmp");
        t
    }

    /// Creates `name.tmp` afresh for writing (a stale one, or whatever was planted under that
    /// name, is unlinked first); [`PrivateDir::commit_tmp`] then renames it over `name`.
    pub fn create_tmp(&self, name: &OsStr) -> Result<File, SafeFsError> {
        let tmp = Self::tmp_name(name);
        let c = cname(&tmp).map_err(self.file_err("create", &tmp))?;
        if let Ok(st) = lstatat(self.fd.as_fd(), &c) {
            let ours = euid();
            if st.st_uid != ours && st.st_uid != 0 {
                return Err(SafeFsError::NotOwned {
                    path: self.path.join(&tmp),
                    owner: st.st_uid,
                    allowed: uid_name(ours),
                    ours,
                });
            }
            self.remove(&tmp)?;
        }
        self.create_new_flags(&tmp, libc::O_WRONLY)
    }

    /// Renames `name.tmp` over `name` and makes the rename durable.
    pub fn commit_tmp(&self, name: &OsStr) -> Result<(), SafeFsError> {
        let tmp = Self::tmp_name(name);
        let from = cname(&tmp).map_err(self.file_err("rename", &tmp))?;
        let to = cname(name).map_err(self.file_err("rename", name))?;
        let fd = self.fd.as_raw_fd();
        // SAFETY: both names are NUL-terminated; both are relative to our folder.
        cvt(unsafe { libc::renameat(fd, from.as_ptr(), fd, to.as_ptr()) })
            .map_err(self.file_err("rename", &tmp))?;
        // Best effort: an O_PATH descriptor cannot be synced.
        // SAFETY: fsync on a descriptor we own.
        unsafe { libc::fsync(fd) };
        Ok(())
    }

    /// Replaces `name` with `bytes` atomically (written to `name.tmp`, synced, renamed).
    pub fn write_atomic(&self, name: &OsStr, bytes: &[u8]) -> Result<(), SafeFsError> {
        let tmp = Self::tmp_name(name);
        let mut f = self.create_tmp(name)?;
        f.write_all(bytes).map_err(self.file_err("write", &tmp))?;
        f.sync_all().map_err(self.file_err("sync", &tmp))?;
        drop(f);
        self.commit_tmp(name)
    }

    /// A file with no name in this folder, read-write (plus `extra_flags`, e.g. `O_DIRECT`):
    /// an `O_TMPFILE`, or where the filesystem has none, a file created afresh and unlinked at
    /// once. Its space goes back when it is closed, even if seer is killed.
    pub fn unnamed_file(&self, extra_flags: i32) -> Result<File, SafeFsError> {
        let dot = OsStr::new(".");
        match openat(
            self.fd.as_fd(),
            &cname(dot).expect("no NUL"),
            libc::O_TMPFILE | libc::O_EXCL | libc::O_RDWR | extra_flags,
            0o600,
        ) {
            Ok(f) => return Ok(File::from(f)),
            Err(e) if !no_tmpfile(&e) => return Err(self.file_err("create a file in", dot)(e)),
            Err(_) => {}
        }
        let name = OsString::from(format!(
            ".seer-unnamed-{}-{}",
            std::process::id(),
            TMP_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let f = self.create_new_flags(&name, libc::O_RDWR | extra_flags)?;
        self.remove(&name)?;
        Ok(f)
    }
}

/// Whether `open(O_TMPFILE)` failed because the filesystem (or kernel) has no O_TMPFILE.
pub fn no_tmpfile(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR))
}

/// A file with no name in `dir`, a folder someone else may control (through a magic link such
/// as `/proc/PID/cwd` too): `O_TMPFILE | O_WRONLY`, mode 0600, plus `extra_flags`. No name is
/// created, so nothing planted there (a link, a FIFO) is ever opened.
pub fn unnamed_file_in(dir: &Path, extra_flags: i32) -> io::Result<File> {
    let c = cname(dir.as_os_str())?;
    // SAFETY: `c` is NUL-terminated; the fd returned is ours alone.
    let fd = cvt(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_TMPFILE | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC | extra_flags,
            0o600 as libc::c_uint,
        )
    })?;
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[test]
    fn creates_missing_folders_private() {
        let top = tempfile::tempdir().expect("tempdir");
        let p = top.path().join("a/b/c");
        let d = private_dir(&p).expect("create");
        assert_eq!(d.path(), p);
        for q in [top.path().join("a"), top.path().join("a/b"), p.clone()] {
            assert_eq!(std::fs::metadata(&q).expect("stat").mode() & 0o7777, 0o700);
        }
        assert!(
            existing_private_dir(&top.path().join("a/x"))
                .expect("walk")
                .is_none()
        );
    }

    #[test]
    fn refuses_what_others_can_write_on_the_way_or_at_the_end() {
        let top = tempfile::tempdir().expect("tempdir");
        let mid = top.path().join("mid");
        std::fs::create_dir_all(mid.join("end")).expect("mkdir");
        chmod(&mid, 0o777);
        let e = private_dir(&mid.join("end")).expect_err("crossed a world-writable folder");
        assert!(
            matches!(e, SafeFsError::Writable { ref path, .. } if *path == mid),
            "{e}"
        );
        // Sticky: may be crossed, not written in.
        chmod(&mid, 0o1777);
        private_dir(&mid.join("end")).expect("cross a sticky folder");
        let e = private_dir(&mid).expect_err("write in a sticky folder");
        assert!(matches!(e, SafeFsError::Writable { .. }), "{e}");
    }

    #[test]
    fn links_on_the_way_are_followed_but_a_file_link_is_not() {
        let top = tempfile::tempdir().expect("tempdir");
        let real = top.path().join("real");
        std::fs::create_dir(&real).expect("mkdir");
        std::os::unix::fs::symlink("real", top.path().join("link")).expect("link");
        let d = private_dir(&top.path().join("link")).expect("through a link we own");
        std::fs::write(real.join("victim"), "x").expect("victim");
        std::os::unix::fs::symlink("victim", real.join("name")).expect("plant");
        let e = d.open_or_create(OsStr::new("name")).expect_err("followed");
        assert!(matches!(e, SafeFsError::Symlink { .. }), "{e}");
        let e = d
            .open_existing(OsStr::new("name"), false)
            .expect_err("followed");
        assert!(matches!(e, SafeFsError::Symlink { .. }), "{e}");
        // The temporary replaces the link, then the final name.
        std::os::unix::fs::symlink("victim", real.join("name.tmp")).expect("plant");
        d.remove(OsStr::new("name")).expect("remove");
        d.write_atomic(OsStr::new("name"), b"new").expect("write");
        assert_eq!(
            std::fs::read_to_string(real.join("victim")).expect("read"),
            "x"
        );
        assert_eq!(
            std::fs::read_to_string(real.join("name")).expect("read"),
            "new"
        );
        assert!(!real.join("name.tmp").exists());
        let mode = std::fs::symlink_metadata(real.join("name"))
            .expect("stat")
            .mode();
        assert_eq!(mode & 0o7777, 0o600);
    }

    #[test]
    fn unnamed_files_leave_no_name() {
        let top = tempfile::tempdir().expect("tempdir");
        let d = private_dir(top.path()).expect("open");
        let mut f = d.unnamed_file(0).expect("unnamed");
        f.write_all(b"x").expect("write");
        let mut g = unnamed_file_in(top.path(), 0).expect("unnamed in");
        g.write_all(b"x").expect("write");
        assert_eq!(std::fs::read_dir(top.path()).expect("list").count(), 0);
    }
}
