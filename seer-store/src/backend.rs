//! The file under redb: the store's size cap on the disk blocks it takes, and blocks prepared
//! ahead of use.
//!
//! **Cap.** redb grows its file by doubling it with `set_len`, which on Linux only reserves
//! address space: disk blocks are taken when pages are first written. The backend tracks which
//! byte ranges have been written ([`Extent`]) and refuses a write that would take new blocks
//! past the limit, so the space the file takes on disk (what `du` shows) never passes the cap,
//! whatever redb's growth policy; the file's length may. A refused write surfaces as an
//! `ErrorKind::StorageFull` I/O error, which the store handles like a full disk: drop the
//! oldest data, keep running. Deleting needs a few new pages too (redb copies on write), so
//! normal writes stop at [`Limits::soft`], a reserve below the cap, and only the store's
//! recovery may use the reserve up to [`Limits::hard`], the cap itself.
//!
//! **Prepared blocks.** On ext4, an `fdatasync` after writing into blocks never written before
//! (a hole, or past the end) must commit the journal, and then often waits a scheduler tick
//! (4 ms at HZ=250); into blocks already written it only flushes data (~0.2 ms). A store that
//! grows would pay that on most commits. So when redb first writes just past `prepared_end`,
//! the backend fills [`PREPARE_AHEAD`] bytes from there with zeros (within the length redb set
//! and under the soft limit) and syncs them, once; the following commits write into prepared
//! blocks. redb also writes pages far beyond its other data (large pages near the end of a
//! freshly grown file); those are recorded as `far` ranges, never zeroed over, and the gap
//! before them is not filled. Invariant: every byte redb has written lies below
//! `prepared_end` or in `far`, so preparation never overwrites a page.

use redb::StorageBackend;
use redb::backends::FileBackend;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Bytes zeroed ahead each time redb writes past the prepared blocks.
pub(crate) const PREPARE_AHEAD: u64 = 16 << 20;
const ZERO_CHUNK: usize = 1 << 20;

/// Where writes stop, in bytes of disk taken. Shared by the store and every backend it opens.
#[derive(Debug)]
pub(crate) struct Limits {
    /// Limit of normal writes: the cap less a reserve for recovery.
    pub soft: u64,
    /// The cap.
    pub hard: u64,
    /// Set while the store deletes data to recover from a full disk or cap.
    pub recovering: AtomicBool,
}

impl Limits {
    pub fn new(cap: u64) -> Self {
        let reserve = (cap / 32).max(1 << 20).min(cap / 4);
        Self {
            soft: cap - reserve,
            hard: cap,
            recovering: AtomicBool::new(false),
        }
    }

    fn current(&self) -> u64 {
        if self.recovering.load(Ordering::Acquire) {
            self.hard
        } else {
            self.soft
        }
    }
}

/// Lets the holder write into the reserve until dropped.
pub(crate) struct RecoveryGuard(Arc<Limits>);

impl RecoveryGuard {
    pub fn new(limits: &Arc<Limits>) -> Self {
        limits.recovering.store(true, Ordering::Release);
        Self(limits.clone())
    }
}

impl Drop for RecoveryGuard {
    fn drop(&mut self) {
        self.0.recovering.store(false, Ordering::Release);
    }
}

/// Which bytes of the file have been written (and so take disk blocks).
#[derive(Debug)]
struct Extent {
    /// Length redb last set.
    logical_len: u64,
    /// Every block below this has been written (by redb or by preparation).
    prepared_end: u64,
    /// Sorted, disjoint ranges redb wrote above `prepared_end`.
    far: Vec<(u64, u64)>,
}

impl Extent {
    /// Bytes written so far: the disk the file takes.
    fn taken(&self) -> u64 {
        self.prepared_end + self.far.iter().map(|(s, e)| e - s).sum::<u64>()
    }

    /// Bytes of `[start, end)` not written yet.
    fn new_bytes(&self, start: u64, end: u64) -> u64 {
        let start = start.max(self.prepared_end);
        if end <= start {
            return 0;
        }
        let covered: u64 = self
            .far
            .iter()
            .map(|&(s, e)| e.min(end).saturating_sub(s.max(start)))
            .sum();
        (end - start) - covered
    }

    fn note_far(&mut self, start: u64, end: u64) {
        if self.far.iter().any(|&(s, e)| s <= start && end <= e) {
            return;
        }
        self.far.push((start, end));
        self.far.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(self.far.len());
        for &(s, e) in &self.far {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        self.far = merged;
    }

    /// Folds far ranges that `prepared_end` has reached into it.
    fn absorb(&mut self) {
        loop {
            let prepared = self.prepared_end;
            match self.far.first() {
                Some(&(s, e)) if s <= prepared => {
                    self.prepared_end = prepared.max(e);
                    self.far.remove(0);
                }
                _ => return,
            }
        }
    }
}

/// The ranges of `file` that hold data (not holes), from `SEEK_DATA`/`SEEK_HOLE`.
/// Where the file system cannot tell, the whole file counts as written.
pub(crate) fn written_ranges(file: &std::fs::File) -> io::Result<Vec<(u64, u64)>> {
    use std::os::fd::AsRawFd;
    let len = file.metadata()?.len();
    let fd = file.as_raw_fd();
    let whole = || Ok(if len > 0 { vec![(0, len)] } else { Vec::new() });
    let mut ranges = Vec::new();
    let mut pos = 0u64;
    while pos < len {
        let Ok(at) = libc::off_t::try_from(pos) else {
            return whole();
        };
        // SAFETY: `fd` belongs to `file`, open for the whole call; lseek only reads it.
        let data = unsafe { libc::lseek(fd, at, libc::SEEK_DATA) };
        if data < 0 {
            return match io::Error::last_os_error().raw_os_error() {
                Some(libc::ENXIO) => Ok(ranges), // no data past `pos`
                _ => whole(),
            };
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        if hole < data {
            return whole();
        }
        ranges.push((data as u64, hole as u64));
        pos = hole as u64;
    }
    Ok(ranges)
}

#[derive(Debug)]
pub(crate) struct CappedBackend {
    inner: FileBackend,
    limits: Arc<Limits>,
    extent: Mutex<Extent>,
}

impl CappedBackend {
    /// `written`: the byte ranges of the file that hold data (see [`written_ranges`]).
    pub fn new(
        inner: FileBackend,
        limits: Arc<Limits>,
        written: &[(u64, u64)],
    ) -> io::Result<Self> {
        let len = inner.len()?;
        let mut extent = Extent {
            logical_len: len,
            prepared_end: 0,
            far: Vec::new(),
        };
        for &(s, e) in written {
            extent.note_far(s, e.min(len));
        }
        extent.absorb();
        Ok(Self {
            inner,
            limits,
            extent: Mutex::new(extent),
        })
    }

    /// Zeroes `[e.prepared_end, up_to)` except the `far` ranges, and syncs it.
    fn prepare(&self, e: &mut Extent, up_to: u64) -> io::Result<()> {
        let zeros = vec![0u8; ZERO_CHUNK];
        let zero_to = |from: u64, to: u64| -> io::Result<()> {
            let mut at = from;
            while at < to {
                let n = (to - at).min(ZERO_CHUNK as u64) as usize;
                self.inner.write(at, &zeros[..n])?;
                at += n as u64;
            }
            Ok(())
        };
        let mut at = e.prepared_end;
        for &(s, end) in &e.far {
            if end <= at || s >= up_to {
                continue;
            }
            zero_to(at, s.min(up_to))?;
            at = at.max(end);
        }
        zero_to(at, up_to)?;
        self.inner.sync_data(false)?;
        e.prepared_end = e.prepared_end.max(up_to);
        e.absorb();
        Ok(())
    }

    fn full(&self, offset: u64, taken: u64, limit: u64) -> io::Error {
        io::Error::new(
            io::ErrorKind::StorageFull,
            format!(
                "write at offset {offset} would take the store past {limit} bytes of disk \
                 ({taken} taken; cap {} less a reserve for recovery)",
                self.limits.hard
            ),
        )
    }
}

impl StorageBackend for CappedBackend {
    fn len(&self) -> Result<u64, io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, io::Error> {
        self.inner.read(offset, len)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut e = self.extent.lock().unwrap_or_else(PoisonError::into_inner);
        self.inner.set_len(len)?;
        e.logical_len = len;
        e.prepared_end = e.prepared_end.min(len);
        e.far.retain(|&(s, _)| s < len);
        for r in &mut e.far {
            r.1 = r.1.min(len);
        }
        Ok(())
    }

    fn sync_data(&self, eventual: bool) -> Result<(), io::Error> {
        self.inner.sync_data(eventual)
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let end = offset.saturating_add(data.len() as u64);
        let mut e = self.extent.lock().unwrap_or_else(PoisonError::into_inner);
        if end <= e.prepared_end {
            return self.inner.write(offset, data);
        }
        let taken = e.taken();
        let limit = self.limits.current();
        let new = e.new_bytes(offset, end);
        if new > 0 && taken + new > limit {
            return Err(self.full(offset, taken, limit));
        }
        if offset > e.prepared_end.saturating_add(PREPARE_AHEAD) {
            // Far ahead of the other pages: do not fill the gap.
            self.inner.write(offset, data)?;
            e.note_far(offset, end);
            return Ok(());
        }
        // Prepare what fits under the soft limit, as far as redb's length allows.
        let room = self.limits.soft.saturating_sub(taken);
        let mut up_to = (end + PREPARE_AHEAD).min(e.logical_len);
        while up_to > end && e.new_bytes(e.prepared_end, up_to) > room {
            up_to = end + (up_to - end) / 2;
        }
        if up_to > end
            && let Err(err) = self.prepare(&mut e, up_to)
        {
            // Best effort: without it commits are only slower.
            log::debug!("store: preparing blocks up to {up_to} failed: {err}");
        }
        self.inner.write(offset, data)?;
        if offset <= e.prepared_end {
            e.prepared_end = e.prepared_end.max(end);
            e.absorb();
        } else {
            e.note_far(offset, end);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::os::unix::fs::MetadataExt;

    fn backend(dir: &std::path::Path, cap: u64) -> (CappedBackend, std::path::PathBuf) {
        let path = dir.join("f");
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("create");
        let fb = FileBackend::new(file).expect("lock");
        let limits = Arc::new(Limits::new(cap));
        (CappedBackend::new(fb, limits, &[]).expect("backend"), path)
    }

    fn blocks(path: &std::path::Path) -> u64 {
        std::fs::metadata(path).expect("stat").blocks() * 512
    }

    #[test]
    fn disk_taken_stops_at_the_limit_and_recovery_may_use_the_reserve() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (b, path) = backend(dir.path(), 8 << 20);
        let soft = b.limits.soft;
        assert_eq!(soft, 7 << 20, "1 MiB reserve");
        b.set_len(64 << 20).expect("set_len"); // a sparse length past the cap is fine
        // A page far out takes one page of disk, not the gap.
        b.write(60 << 20, &[9; 4096]).expect("far page");
        let mut p = 0;
        let err = loop {
            match b.write(p * 4096, &[1; 4096]) {
                Ok(()) => p += 1,
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        assert!(crate::error::io_is_disk_full(&err));
        assert_eq!(p * 4096 + 4096, soft, "filled to the soft limit exactly");
        assert!(blocks(&path) <= soft);
        {
            let _recovering = RecoveryGuard::new(&b.limits);
            b.write(p * 4096, &[1; 4096])
                .expect("recovery may use the reserve");
        }
        b.write((p + 1) * 4096, &[1; 4096])
            .expect_err("reserve closed again");
        // Rewriting written pages is always allowed.
        b.write(0, &[2; 4096]).expect("rewrite");
        b.write(60 << 20, &[3; 4096]).expect("rewrite far page");
        assert!(blocks(&path) <= 8 << 20);
    }

    #[test]
    fn written_ranges_see_holes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sparse");
        let f = File::create(&path).expect("create");
        f.set_len(64 << 20).expect("set_len");
        std::os::unix::fs::FileExt::write_all_at(&f, &[1; 8192], 0).expect("write");
        std::os::unix::fs::FileExt::write_all_at(&f, &[1; 4096], 32 << 20).expect("write");
        let ranges = written_ranges(&f).expect("ranges");
        let taken: u64 = ranges.iter().map(|(s, e)| e - s).sum();
        assert!(ranges.len() <= 2 && taken < 1 << 20, "{ranges:?}");
        assert!(
            ranges.iter().any(|&(s, e)| s <= 32 << 20 && 32 << 20 < e),
            "{ranges:?}"
        );
    }

    #[test]
    fn preparing_ahead_never_overwrites_pages() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (b, path) = backend(dir.path(), 1 << 30);
        b.set_len(64 << 20).expect("set_len");
        // Large pages near the end, as redb writes after growing the file.
        let far = (64 << 20) - (64 << 10);
        b.write(far, &[0xEE; 64 << 10]).expect("far write");
        let pages = 6000u64; // 23 MiB: past the first prepared window
        // Out of order within each group, as redb writes.
        for group in (0..pages).step_by(8) {
            for p in (group..group + 8).rev() {
                b.write(p * 4096, &[(p % 251) as u8 + 1; 4096])
                    .expect("write");
            }
        }
        for p in 0..pages {
            let got = b.read(p * 4096, 4096).expect("read");
            assert!(
                got.iter().all(|&x| x == (p % 251) as u8 + 1),
                "page {p} overwritten"
            );
        }
        let got = b.read(far, 64 << 10).expect("read far page");
        assert!(got.iter().all(|&x| x == 0xEE), "far page overwritten");
        let taken = blocks(&path);
        assert!(
            taken >= pages * 4096 + PREPARE_AHEAD / 2,
            "{taken} bytes allocated"
        );
        assert!(
            taken <= pages * 4096 + PREPARE_AHEAD + (2 << 20),
            "the gap before the far pages was filled: {taken} bytes allocated"
        );
    }
}
