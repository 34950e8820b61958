//! Starting a process inside a service's network namespace and cgroups. The child joins both
//! itself, between fork and exec, so a server never runs (or forks workers) outside them.
use std::{
    fs::{File, OpenOptions},
    os::{fd::AsRawFd, unix::process::CommandExt as _},
    path::PathBuf,
    process::{Child, Command},
};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Default)]
pub struct Placement {
    /// Name under /run/netns (None: stay in the caller's namespace).
    pub netns: Option<String>,
    /// `cgroup.procs` files to join (see `cgroup::Layout::procs_files`).
    pub cgroups: Vec<PathBuf>,
    /// SIGKILL the child when the spawning thread exits (`run`), rather than leaving it to
    /// `down` (`up`).
    pub die_with_parent: bool,
}

/// Spawns `cmd` placed as `p`, in a new session (terminal signals go to the testbed, which
/// tears down in order).
pub fn spawn(cmd: &mut Command, p: &Placement) -> Result<Child> {
    let ns: Option<File> = match &p.netns {
        Some(n) => {
            let path = PathBuf::from("/run/netns").join(n);
            Some(
                File::open(&path)
                    .map_err(|e| Error::io("cannot open network namespace", path, e))?,
            )
        }
        None => None,
    };
    let mut cgs = Vec::new();
    for f in &p.cgroups {
        cgs.push(
            OpenOptions::new()
                .write(true)
                .open(f)
                .map_err(|e| Error::io("cannot open cgroup", f, e))?,
        );
    }
    let die = p.die_with_parent;
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // system calls (write, setns, setsid, prctl) on file descriptors opened by the parent; it
    // allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            for f in &cgs {
                // "0" means the writing process itself, in v1 and v2.
                if libc::write(f.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some(ns) = &ns
                && libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if die && libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
        .map_err(|e| Error::Setup(format!("cannot start {cmd:?}: {e}")))
}
