//! /proc: which processes hold which sockets, their names and cgroups, and their threads'
//! CPU time.
use std::{
    fs,
    path::{Path, PathBuf},
};

/// One process that holds at least one socket.
#[derive(Clone, Debug, Default)]
pub struct ProcInfo {
    pub pid: u32,
    pub comm: String,
    /// cgroup v2 path (`0::/...` line), or the v1 `cpu` hierarchy's path on hosts without one.
    pub cgroup: String,
    pub socket_inodes: Vec<u64>,
}

/// Scans every process's open file descriptors for sockets. Processes that vanish during the
/// scan, or whose fds cannot be read, are skipped (counted in the returned `unreadable`).
pub fn scan_sockets(proc_root: &Path) -> (Vec<ProcInfo>, usize) {
    let mut out = Vec::new();
    let mut unreadable = 0;
    let Ok(dir) = fs::read_dir(proc_root) else {
        return (out, 1);
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let fd_dir = proc_root.join(pid.to_string()).join("fd");
        let Ok(fds) = fs::read_dir(&fd_dir) else {
            unreadable += 1;
            continue;
        };
        let mut inodes = Vec::new();
        for fd in fds.flatten() {
            if let Ok(target) = fs::read_link(fd.path())
                && let Some(ino) = parse_socket_link(&target.to_string_lossy())
            {
                inodes.push(ino);
            }
        }
        if inodes.is_empty() {
            continue;
        }
        out.extend(proc_info(proc_root, pid, inodes));
    }
    (out, unreadable)
}

/// A process that holds the sockets `socket_inodes`, with its `comm` and `cgroup` from
/// `proc_root`; None if it is gone (no `comm` to read).
fn proc_info(proc_root: &Path, pid: u32, socket_inodes: Vec<u64>) -> Option<ProcInfo> {
    let base = proc_root.join(pid.to_string());
    let comm = fs::read_to_string(base.join("comm")).ok()?;
    Some(ProcInfo {
        pid,
        comm: comm.trim().to_string(),
        cgroup: parse_cgroup(&fs::read_to_string(base.join("cgroup")).unwrap_or_default()),
        socket_inodes,
    })
}

/// Processes and the sockets they hold, from the kernel's walk over every process's files
/// (`Probes::read_owners`): the same as `scan_sockets` for TCP listeners and sockets on watched
/// ports, without reading every /proc/PID/fd; only `comm` and `cgroup` come from /proc, for
/// the processes that hold one. A process gone meanwhile is skipped.
pub fn owners(records: &[seer_common::SockRecord], proc_root: &Path) -> Vec<ProcInfo> {
    let mut by_pid: std::collections::BTreeMap<u32, Vec<u64>> = Default::default();
    for r in records.iter().filter(|r| r.tgid != 0 && r.inode != 0) {
        by_pid.entry(r.tgid).or_default().push(r.inode);
    }
    by_pid
        .into_iter()
        .filter_map(|(pid, mut inodes)| {
            inodes.sort_unstable();
            inodes.dedup();
            proc_info(proc_root, pid, inodes)
        })
        .collect()
}

/// `/proc/PID/cgroup` as the kernel writes it.
pub fn cgroup_file(pid: u32) -> std::io::Result<String> {
    fs::read_to_string(format!("/proc/{pid}/cgroup"))
}

/// This process's `/proc/self/mountinfo` (where the cgroup hierarchies are mounted).
pub fn mountinfo() -> std::io::Result<String> {
    fs::read_to_string("/proc/self/mountinfo")
}

/// `/proc/PID/status` (None when the process is gone).
pub fn status(pid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/status")).ok()
}

/// utime + stime of process `pid` (all its threads, the exited ones included), in clock ticks;
/// None if it is gone or its stat line is malformed.
pub fn process_cpu_ticks(pid: u32) -> Option<u64> {
    stat_fields(pid)
        .and_then(|f| Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?))
}

/// Whether process `pid` exists and is not a zombie (or dead).
pub fn process_alive(pid: u32) -> bool {
    stat_fields(pid)
        .and_then(|f| f.first().map(|state| !matches!(state.as_str(), "Z" | "X")))
        .unwrap_or(false)
}

/// `/proc/PID/stat`'s fields after the command name (state first), which may hold spaces and
/// parentheses: split after its last ')'.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(
        s.get(s.rfind(')')? + 2..)?
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
    )
}

/// `socket:[12345]` -> 12345
pub fn parse_socket_link(s: &str) -> Option<u64> {
    s.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// The path in `/proc/PID/cgroup` text of the v1 hierarchy holding `controller`, or of the v2
/// tree (the `0::` line) when `controller` is None.
pub fn cgroup_path<'a>(text: &'a str, controller: Option<&str>) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let mut it = line.splitn(3, ':');
        let (_id, ctrls, path) = (it.next()?, it.next()?, it.next()?);
        let hit = match controller {
            None => ctrls.is_empty(),
            Some(c) => ctrls.split(',').any(|x| x == c),
        };
        hit.then_some(path)
    })
}

/// The cgroup v2 path if the process has a non-root one; else the v1 `cpu` controller's path
/// (hybrid hosts), else "/".
pub fn parse_cgroup(s: &str) -> String {
    match cgroup_path(s, None) {
        Some(p) if p != "/" => p.to_string(),
        _ => cgroup_path(s, Some("cpu"))
            .or(cgroup_path(s, Some("name=systemd")))
            .unwrap_or("/")
            .to_string(),
    }
}

/// `run_ns wait_ns timeslices` (a `schedstat` line) -> (run_ns, wait_ns).
pub fn parse_schedstat(s: &str) -> Option<(u64, u64)> {
    let mut it = s.split_whitespace();
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// Time every thread of `pid` ran on a CPU and waited runnable for one, summed over
/// `PROC/PID/task/*/schedstat` (ns); None when the process is gone. Threads that exited are not
/// counted (a caller taking deltas clamps at zero).
pub fn threads_schedstat(proc_root: &Path, pid: u32) -> Option<(u64, u64)> {
    let dir = fs::read_dir(proc_root.join(pid.to_string()).join("task")).ok()?;
    let (mut run, mut wait) = (0u64, 0u64);
    for t in dir.flatten() {
        if let Some((r, w)) = fs::read_to_string(t.path().join("schedstat"))
            .ok()
            .as_deref()
            .and_then(parse_schedstat)
        {
            run = run.saturating_add(r);
            wait = wait.saturating_add(w);
        }
    }
    Some((run, wait))
}

/// The directory holding `cpu.stat` of `pid`'s CPU cgroup: v1 `N:cpu,cpuacct:/path` ->
/// /sys/fs/cgroup/cpu/path; v2 `0::/path` -> /sys/fs/cgroup/path.
pub fn cpu_cgroup_dir(pid: u32) -> Option<PathBuf> {
    let text = cgroup_file(pid).ok()?;
    let has_stat = |d: &PathBuf| d.join("cpu.stat").exists();
    let rel = |p: &str| p.trim_start_matches('/').to_string();
    cgroup_path(&text, Some("cpu"))
        .map(|p| PathBuf::from("/sys/fs/cgroup/cpu").join(rel(p)))
        .filter(has_stat)
        .or_else(|| {
            cgroup_path(&text, None)
                .map(|p| PathBuf::from("/sys/fs/cgroup").join(rel(p)))
                .filter(has_stat)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_has_cpu_time() {
        let me = std::process::id();
        assert!(process_alive(me));
        assert!(process_cpu_ticks(me).is_some());
        assert!(!process_alive(u32::MAX - 1));
        assert_eq!(process_cpu_ticks(u32::MAX - 1), None);
    }

    #[test]
    fn socket_links() {
        assert_eq!(parse_socket_link("socket:[4242]"), Some(4242));
        assert_eq!(parse_socket_link("pipe:[4242]"), None);
        assert_eq!(parse_socket_link("/dev/null"), None);
    }

    #[test]
    fn cgroups_v2_then_v1() {
        assert_eq!(
            parse_cgroup("0::/system.slice/nginx.service\n"),
            "/system.slice/nginx.service"
        );
        let hybrid = "12:cpu,cpuacct:/seer/memcached\n1:name=systemd:/\n0::/\n";
        assert_eq!(parse_cgroup(hybrid), "/seer/memcached");
        assert_eq!(parse_cgroup(""), "/");
        assert_eq!(
            cgroup_path(hybrid, Some("cpuacct")),
            Some("/seer/memcached")
        );
        assert_eq!(cgroup_path(hybrid, None), Some("/"));
        assert_eq!(cgroup_path(hybrid, Some("memory")), None);
    }
}
