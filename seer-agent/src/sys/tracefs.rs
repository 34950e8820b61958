//! tracefs, needed to attach classic tracepoints (their ids live there). Hosts that don't mount
//! it get it mounted in a mount namespace private to the agent, so the host's mounts stay as
//! they were, even after a crash.
use std::path::Path;

use nix::{
    mount::{MsFlags, mount},
    sched::{CloneFlags, unshare},
};

const TRACEFS: &str = "/sys/kernel/tracing";

fn mounted() -> bool {
    Path::new(TRACEFS).join("events").is_dir()
        || Path::new("/sys/kernel/debug/tracing/events").is_dir()
}

/// Makes tracefs reachable for this process. Returns whether a private mount was needed.
pub fn ensure() -> Result<bool, String> {
    if mounted() {
        return Ok(false);
    }
    unshare(CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("tracefs is not mounted and a private mount namespace failed: {e}"))?;
    // Keep our mounts from propagating back to the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("making / private in the agent's mount namespace: {e}"))?;
    mount(Some("tracefs"), TRACEFS, Some("tracefs"), MsFlags::empty(), None::<&str>).map_err(|e| {
        format!("mounting tracefs at {TRACEFS} (private to the agent) failed: {e}; mount it on the host (mount -t tracefs nodev {TRACEFS}) or run without --epoll")
    })?;
    Ok(true)
}
