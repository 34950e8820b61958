//! A swap file for memory-capacity faults. A service squeezed under its cgroup's memory limit
//! on a host without swap has nothing the kernel can reclaim (its memory is anonymous) and is
//! OOM-killed instead of slowed; with swap it pages, which is the slowdown a memory-capacity
//! shortage causes on hosts that have swap. When the host has no active swap, the fault adds
//! one file, `/var/tmp/seer-tb-RUN.swap`, for as long as it runs; `down` switches off and
//! removes any a crashed run left (the name tells whose it is).
//!
//! Swap is host-wide while it is on, but nothing outside the squeezed cgroup pages unless the
//! whole host runs short of memory.
use std::path::{Path, PathBuf};

use crate::{
    cmd,
    error::{Error, Result},
    testbed::belongs,
};

/// Where the swap files live: a disk filesystem (swap on tmpfs is refused by the kernel).
pub const SWAP_DIR: &str = "/var/tmp";

/// Active swap areas (`/proc/swaps`, header skipped).
pub fn active() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/swaps")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(|f| PathBuf::from(f.replace("\\040", " ")))
        .collect()
}

/// Makes sure the host can swap: None when it already has swap, else the file it switched on
/// for run `base` (`seer-tb-RUN`), `mib` MiB, to be passed to [`off`].
pub fn ensure(base: &str, mib: u64) -> Result<Option<PathBuf>> {
    if !active().is_empty() {
        return Ok(None);
    }
    let f = Path::new(SWAP_DIR).join(format!("{base}.swap"));
    let shown = f.display().to_string();
    let size = format!("{}M", mib.max(64));
    let made = cmd::run("fallocate", &["-l", &size, &shown])
        .and_then(|_| {
            std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .map_err(|e| Error::io("cannot chmod", &f, e))
        })
        .and_then(|_| cmd::run("mkswap", &[&shown]))
        .and_then(|_| cmd::run("swapon", &[&shown]));
    match made {
        Ok(_) => Ok(Some(f)),
        Err(e) => {
            let _ = std::fs::remove_file(&f);
            Err(Error::Setup(format!(
                "a memory-capacity fault needs swap and none is on; adding {shown} failed: {e}"
            )))
        }
    }
}

/// Switches `file` off and removes it.
pub fn off(file: &Path) -> Result<()> {
    let shown = file.display().to_string();
    if active().iter().any(|a| a == file) {
        cmd::run("swapoff", &[&shown])?;
    }
    match std::fs::remove_file(file) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("cannot remove", file, e)),
    }
}

/// Swap files of runs that [`belongs`] to `prefix`, switched on or not.
pub fn leftovers(prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(SWAP_DIR)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .chain(active())
        .filter(|p| {
            p.parent() == Some(Path::new(SWAP_DIR))
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".swap"))
                    .is_some_and(|n| belongs(n, prefix))
        })
        .collect();
    v.sort();
    v.dedup();
    v
}
