//! Running the few external tools the testbed needs (`ip`, `tc`), with errors that quote them.
use std::process::Command;

use crate::error::{Error, Result};

/// Runs `prog args...`; fails with its stderr when it exits non-zero.
pub fn run(prog: &str, args: &[&str]) -> Result<String> {
    let shown = format!("{prog} {}", args.join(" "));
    let out = Command::new(prog)
        .args(args)
        .output()
        .map_err(|e| Error::Command {
            cmd: shown.clone(),
            stderr: format!("cannot start it: {e} (is iproute2 installed?)"),
        })?;
    if !out.status.success() {
        return Err(Error::Command {
            cmd: shown,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip args...`
pub fn ip(args: &[&str]) -> Result<String> {
    run("ip", args)
}

/// `tc -n netns args...`
pub fn tc(netns: &str, args: &[&str]) -> Result<String> {
    let mut a = vec!["-n", netns];
    a.extend_from_slice(args);
    run("tc", &a)
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
