//! PMU-free signals every host has: run-queue waits (/proc/<pid>/task/*/schedstat), CFS
//! throttling (the cgroup's cpu.stat), pressure stall information (/proc/pressure/*), network
//! bytes and drops in the culprit's namespace (/proc/<pid>/net/dev), block I/O (/proc/diskstats).
//!
//! And, for a culprit with a cgroup of its own, the whole cgroup (every thread in it, not only
//! the processes that listen: a service's workers and helpers count): run-queue waits per
//! time slice, threads blocked in uninterruptible (I/O) sleep, bytes it reads and writes to
//! storage, its memory use against its limit; and the bytes its connections to clients have
//! queued to send (/proc/<pid>/net/tcp `tx_queue`), which with its send rate gives how long a
//! reply waits to leave: a network cap shows there, however fast the application is.
use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use crate::sys::{
    cgroupfs::{parse_cpu_stat_periods, parse_cpu_stat_throttled_ns},
    procfs,
};
use serde::{Deserialize, Serialize};

/// Cumulative counters at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub run_ns: u64,
    pub wait_ns: u64,
    pub throttled_ns: u64,
    /// CFS quota periods of the cgroup, and those in which the quota ran out (cpu.stat
    /// `nr_periods`, `nr_throttled`): they move every period, where the throttled time comes
    /// in jumps of a few hundred ms under a tight quota.
    pub periods: u64,
    pub throttled_periods: u64,
    pub psi_cpu_us: u64,
    pub psi_memory_us: u64,
    pub psi_io_us: u64,
    pub net_bytes: u64,
    pub net_packets: u64,
    pub net_drops: u64,
    pub disk_io_ms: u64,
    /// Time slices the culprit's threads ran (schedstat's third field).
    pub slices: u64,
    /// The cgroup's threads: run, wait, slices (cumulative), storage bytes read + written.
    pub cg_run_ns: u64,
    pub cg_wait_ns: u64,
    pub cg_slices: u64,
    pub cg_io_bytes: u64,
    /// Major page faults of the cgroup's threads (cumulative).
    pub cg_majflt: u64,
    /// Bytes transmitted by the culprit's namespace, non-loopback (cumulative).
    pub net_tx_bytes: u64,
    /// Instantaneous gauges, summed over `gauges` readings (so that snapshots add up).
    pub gauges: u64,
    /// Threads of the cgroup in uninterruptible sleep (D: waiting for I/O, mostly).
    pub cg_blocked: u64,
    /// Bytes queued to send on the culprit's server connections to other hosts.
    pub send_queue_bytes: u64,
    /// Memory use / limit of the culprit's memory cgroup, in 1/1000 (0: no limit).
    pub mem_used_permille: u64,
}

/// Where to read a culprit's signals.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    pub pids: Vec<u32>,
    /// Its listening ports (server side of connections).
    pub ports: Vec<u16>,
    /// v1 `cpu` (or v2) directory with cpu.stat.
    pub cpu_cgroup_dir: Option<PathBuf>,
    /// File listing every thread of the culprit's own cgroup (v1 `tasks`, v2 `cgroup.threads`);
    /// None when it shares its cgroup (the root, a slice) and cgroup-wide numbers would
    /// count others.
    pub threads_file: Option<PathBuf>,
    /// Memory cgroup directory (v1 `memory` hierarchy or v2).
    pub mem_cgroup_dir: Option<PathBuf>,
}

/// Rates over a window, as fractions where they are time ratios.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SignalSummary {
    /// Time the culprit's threads waited on a run queue / (waited + ran).
    pub runq_wait_ratio: f64,
    /// Throttled time / window (CFS quota).
    pub throttled_ratio: f64,
    /// CFS quota periods that ran out / periods in the window, and how many periods there were.
    #[serde(default)]
    pub throttled_periods_ratio: f64,
    #[serde(default)]
    pub quota_periods: f64,
    /// Share of the window with some task stalled, host-wide (0 where PSI is off).
    pub psi_cpu_some: f64,
    pub psi_memory_some: f64,
    pub psi_io_some: f64,
    pub net_bytes_per_s: f64,
    /// Drops / packets in the culprit's namespace.
    pub net_drop_ratio: f64,
    /// Share of the window some disk was busy.
    pub disk_busy: f64,
    /// Mean run-queue wait per time slice of the culprit's threads (us).
    #[serde(default)]
    pub runq_wait_per_slice_us: f64,
    /// The culprit's cgroup (all its threads): CPU cores used, run-queue wait share, wait per
    /// slice (us), threads blocked on I/O (mean), storage bytes/s, major faults/s.
    #[serde(default)]
    pub cg_cpu_cores: f64,
    #[serde(default)]
    pub cg_runq_wait_ratio: f64,
    #[serde(default)]
    pub cg_wait_per_slice_us: f64,
    #[serde(default)]
    pub cg_blocked_threads: f64,
    #[serde(default)]
    pub cg_io_bytes_per_s: f64,
    #[serde(default)]
    pub cg_majflt_per_s: f64,
    /// Mean bytes queued to send to clients on other hosts, and that over the namespace's
    /// send rate: how long a reply waits to leave (ms).
    #[serde(default)]
    pub send_queue_bytes: f64,
    #[serde(default)]
    pub send_queue_delay_ms: f64,
    /// Memory cgroup use / limit (0 when unlimited).
    #[serde(default)]
    pub mem_used_ratio: f64,
}

/// `run_ns wait_ns timeslices` -> all three.
pub fn parse_schedstat3(s: &str) -> Option<(u64, u64, u64)> {
    let mut it = s.split_whitespace();
    Some((
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
    ))
}

/// /proc/PID/stat -> (state, majflt).
pub fn parse_stat_state_majflt(s: &str) -> Option<(char, u64)> {
    let (_, rest) = s.rsplit_once(") ")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); majflt is field 12.
    Some((f.first()?.chars().next()?, f.get(9)?.parse().ok()?))
}

/// /proc/PID/io -> read_bytes + write_bytes (the storage layer's, not the page cache's).
pub fn parse_io_bytes(s: &str) -> u64 {
    s.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            matches!(k, "read_bytes" | "write_bytes")
                .then(|| v.trim().parse::<u64>().ok())
                .flatten()
        })
        .sum()
}

/// /proc/net/tcp{,6} text -> bytes queued to send on established connections whose local port
/// is one of `ports` and whose peer is another host (not loopback, not the same address: a
/// probe from this host is not a client waiting on the network).
pub fn parse_send_queue(text: &str, ports: &[u16]) -> u64 {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 5 || f[3] != "01" {
                return None;
            }
            let (lip, lport) = f[1].rsplit_once(':')?;
            let (rip, _) = f[2].rsplit_once(':')?;
            let lport = u16::from_str_radix(lport, 16).ok()?;
            let loopback = rip == "0100007F"
                || rip == "00000000000000000000000001000000"
                || rip.ends_with("7F") && rip.len() == 8;
            if !ports.contains(&lport) || loopback || rip == lip {
                return None;
            }
            let (tx, _) = f[4].split_once(':')?;
            u64::from_str_radix(tx, 16).ok()
        })
        .sum()
}

/// cgroup memory use / limit in 1/1000 (v1 `memory.usage_in_bytes` / `memory.limit_in_bytes`,
/// v2 `memory.current` / `memory.max`); 0 when unlimited or unreadable.
fn mem_permille(dir: &Path) -> u64 {
    let rd = |f: &str| fs::read_to_string(dir.join(f)).ok();
    let num = |s: Option<String>| s.and_then(|s| s.trim().parse::<u64>().ok());
    let (used, limit) = match num(rd("memory.usage_in_bytes")) {
        Some(u) => (u, num(rd("memory.limit_in_bytes"))),
        None => (
            num(rd("memory.current")).unwrap_or(0),
            num(rd("memory.max")),
        ),
    };
    match limit {
        // v1 says "unlimited" with a huge number.
        Some(l) if l > 0 && l < (1 << 60) => used.saturating_mul(1000) / l,
        _ => 0,
    }
}

/// [`snapshot`] plus the cgroup-wide, socket and memory signals of [`Scope`].
pub fn snapshot_scope(proc_root: &Path, sc: &Scope) -> Snapshot {
    let mut s = snapshot(proc_root, &sc.pids, sc.cpu_cgroup_dir.as_deref());
    for pid in &sc.pids {
        let Ok(dir) = fs::read_dir(proc_root.join(pid.to_string()).join("task")) else {
            continue;
        };
        for t in dir.flatten() {
            if let Some((_, _, n)) = fs::read_to_string(t.path().join("schedstat"))
                .ok()
                .as_deref()
                .and_then(parse_schedstat3)
            {
                s.slices += n;
            }
        }
    }
    s.gauges = 1;
    if let Some(f) = &sc.threads_file
        && let Ok(text) = fs::read_to_string(f)
    {
        // A service of thousands of threads: the first 1024 are a fair sample.
        for tid in text
            .lines()
            .filter_map(|l| l.trim().parse::<u32>().ok())
            .take(1024)
        {
            let d = proc_root.join(tid.to_string());
            if let Some((r, w, n)) = fs::read_to_string(d.join("schedstat"))
                .ok()
                .as_deref()
                .and_then(parse_schedstat3)
            {
                s.cg_run_ns += r;
                s.cg_wait_ns += w;
                s.cg_slices += n;
            }
            if let Some((st, mf)) = fs::read_to_string(d.join("stat"))
                .ok()
                .as_deref()
                .and_then(parse_stat_state_majflt)
            {
                s.cg_blocked += u64::from(st == 'D');
                s.cg_majflt += mf;
            }
            s.cg_io_bytes += fs::read_to_string(d.join("io"))
                .map(|t| parse_io_bytes(&t))
                .unwrap_or(0);
        }
    }
    if let Some(pid) = sc.pids.first() {
        let net = proc_root.join(pid.to_string()).join("net");
        for f in ["tcp", "tcp6"] {
            if let Ok(t) = fs::read_to_string(net.join(f)) {
                s.send_queue_bytes += parse_send_queue(&t, &sc.ports);
            }
        }
        if let Ok(t) = fs::read_to_string(net.join("dev")) {
            s.net_tx_bytes = parse_net_dev_tx(&t);
        }
    }
    if let Some(d) = &sc.mem_cgroup_dir {
        s.mem_used_permille = mem_permille(d);
    }
    s
}

/// /proc/net/dev -> bytes transmitted, loopback excluded.
pub fn parse_net_dev_tx(s: &str) -> u64 {
    s.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            if name.trim() == "lo" {
                return None;
            }
            rest.split_whitespace().nth(8)?.parse::<u64>().ok()
        })
        .sum()
}

/// `some avg10=.. avg60=.. avg300=.. total=N` -> N (us)
pub fn parse_psi_some_total(s: &str) -> Option<u64> {
    let line = s.lines().find(|l| l.starts_with("some "))?;
    line.split_whitespace()
        .find_map(|f| f.strip_prefix("total="))?
        .parse()
        .ok()
}

/// Whether the cgroup directory `dir` (v1 `cpu` or v2) has a CFS quota: v1
/// `cpu.cfs_quota_us` other than -1, v2 `cpu.max` other than `max ...`.
pub fn has_cfs_quota(dir: &Path) -> bool {
    if let Ok(q) = fs::read_to_string(dir.join("cpu.cfs_quota_us")) {
        return q.trim().parse::<i64>().is_ok_and(|q| q > 0);
    }
    fs::read_to_string(dir.join("cpu.max"))
        .is_ok_and(|m| m.split_whitespace().next().is_some_and(|q| q != "max"))
}

/// /proc/net/dev -> (bytes rx+tx, packets rx+tx, drops rx+tx), loopback excluded.
pub fn parse_net_dev(s: &str) -> (u64, u64, u64) {
    let (mut b, mut p, mut d) = (0, 0, 0);
    for l in s.lines().skip(2) {
        let Some((name, rest)) = l.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let f: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if f.len() >= 12 {
            b += f[0] + f[8];
            p += f[1] + f[9];
            d += f[3] + f[11];
        }
    }
    (b, p, d)
}

/// /proc/diskstats -> the largest io_ticks (ms a device was busy) among whole disks.
pub fn parse_diskstats_busy_ms(s: &str) -> u64 {
    s.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let name = *f.get(2)?;
            // Partitions and virtual devices would double count or say nothing.
            if name.starts_with("loop") || name.starts_with("ram") {
                return None;
            }
            f.get(12)?.parse::<u64>().ok()
        })
        .max()
        .unwrap_or(0)
}

/// Reads the signals of `pids` (threads included) and of `cpu_cgroup_dir` (the v1 cpu or v2
/// directory holding `cpu.stat`). Missing files count as zero: PSI may be off, a pid may exit.
pub fn snapshot(proc_root: &Path, pids: &[u32], cpu_cgroup_dir: Option<&Path>) -> Snapshot {
    let mut s = Snapshot::default();
    for &pid in pids {
        if let Some((run, wait)) = procfs::threads_schedstat(proc_root, pid) {
            s.run_ns += run;
            s.wait_ns += wait;
        }
    }
    if let Some(d) = cpu_cgroup_dir
        && let Ok(stat) = fs::read_to_string(d.join("cpu.stat"))
    {
        s.throttled_ns = parse_cpu_stat_throttled_ns(&stat).unwrap_or(0);
        (s.periods, s.throttled_periods) = parse_cpu_stat_periods(&stat).unwrap_or((0, 0));
    }
    let psi = |f: &str| {
        fs::read_to_string(proc_root.join("pressure").join(f))
            .ok()
            .as_deref()
            .and_then(parse_psi_some_total)
            .unwrap_or(0)
    };
    s.psi_cpu_us = psi("cpu");
    s.psi_memory_us = psi("memory");
    s.psi_io_us = psi("io");
    if let Some(pid) = pids.first()
        && let Ok(t) = fs::read_to_string(proc_root.join(pid.to_string()).join("net/dev"))
    {
        (s.net_bytes, s.net_packets, s.net_drops) = parse_net_dev(&t);
    }
    s.disk_io_ms = fs::read_to_string(proc_root.join("diskstats"))
        .map(|t| parse_diskstats_busy_ms(&t))
        .unwrap_or(0);
    s
}

/// Rates between two snapshots `window` apart.
pub fn summarize(a: &Snapshot, b: &Snapshot, window: Duration) -> SignalSummary {
    let w_ns = window.as_nanos().max(1) as f64;
    let d = |x: u64, y: u64| y.saturating_sub(x) as f64;
    let run = d(a.run_ns, b.run_ns);
    let wait = d(a.wait_ns, b.wait_ns);
    let pk = d(a.net_packets, b.net_packets);
    SignalSummary {
        runq_wait_ratio: if run + wait > 0.0 {
            wait / (run + wait)
        } else {
            0.0
        },
        throttled_ratio: d(a.throttled_ns, b.throttled_ns) / w_ns,
        throttled_periods_ratio: match d(a.periods, b.periods) {
            0.0 => 0.0,
            n => d(a.throttled_periods, b.throttled_periods) / n,
        },
        quota_periods: d(a.periods, b.periods),
        psi_cpu_some: d(a.psi_cpu_us, b.psi_cpu_us) * 1000.0 / w_ns,
        psi_memory_some: d(a.psi_memory_us, b.psi_memory_us) * 1000.0 / w_ns,
        psi_io_some: d(a.psi_io_us, b.psi_io_us) * 1000.0 / w_ns,
        net_bytes_per_s: d(a.net_bytes, b.net_bytes) * 1e9 / w_ns,
        net_drop_ratio: if pk > 0.0 {
            d(a.net_drops, b.net_drops) / pk
        } else {
            0.0
        },
        disk_busy: d(a.disk_io_ms, b.disk_io_ms) * 1e6 / w_ns,
        ..gauges(a, b, window)
    }
}

/// The cgroup-wide and gauge part of [`summarize`].
fn gauges(a: &Snapshot, b: &Snapshot, window: Duration) -> SignalSummary {
    let w_s = window.as_secs_f64().max(1e-9);
    let d = |x: u64, y: u64| y.saturating_sub(x) as f64;
    let per = |wait: f64, n: f64| if n > 0.0 { wait / n / 1e3 } else { 0.0 };
    let (cr, cw) = (d(a.cg_run_ns, b.cg_run_ns), d(a.cg_wait_ns, b.cg_wait_ns));
    // Gauges: b holds the sum over its readings (a, when a difference, the earlier ones).
    // Two raw snapshots (equal counts): the later reading.
    let raw = a.gauges == b.gauges;
    let n = d(a.gauges, b.gauges).max(1.0);
    let g = |x: u64, y: u64| if raw { y as f64 } else { d(x, y) / n };
    let queued = g(a.send_queue_bytes, b.send_queue_bytes);
    let tx_per_s = d(a.net_tx_bytes, b.net_tx_bytes) / w_s;
    SignalSummary {
        runq_wait_per_slice_us: per(d(a.wait_ns, b.wait_ns), d(a.slices, b.slices)),
        cg_cpu_cores: cr / 1e9 / w_s,
        cg_runq_wait_ratio: if cr + cw > 0.0 { cw / (cr + cw) } else { 0.0 },
        cg_wait_per_slice_us: per(cw, d(a.cg_slices, b.cg_slices)),
        cg_blocked_threads: g(a.cg_blocked, b.cg_blocked),
        cg_io_bytes_per_s: d(a.cg_io_bytes, b.cg_io_bytes) / w_s,
        cg_majflt_per_s: d(a.cg_majflt, b.cg_majflt) / w_s,
        send_queue_bytes: queued,
        send_queue_delay_ms: if queued > 0.0 {
            // Nothing sent while bytes wait: they wait at least the whole window.
            if tx_per_s > 0.0 {
                queued / tx_per_s * 1e3
            } else {
                w_s * 1e3
            }
        } else {
            0.0
        },
        mem_used_ratio: g(a.mem_used_permille, b.mem_used_permille) / 1000.0,
        ..SignalSummary::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_periods_and_whether_there_is_a_quota() {
        let v1 = "nr_periods 10\nnr_throttled 7\nthrottled_time 5000\n";
        assert_eq!(parse_cpu_stat_periods(v1), Some((10, 7)));
        let v2 = "usage_usec 1\nnr_periods 3\nnr_throttled 0\nthrottled_usec 0\n";
        assert_eq!(parse_cpu_stat_periods(v2), Some((3, 0)));
        assert_eq!(parse_cpu_stat_periods("usage_usec 1\n"), None);
        let d = crate::util::TempDir::new("quota");
        let q = |f: &str, v: &str| {
            let _ = std::fs::remove_file(d.path().join("cpu.cfs_quota_us"));
            let _ = std::fs::remove_file(d.path().join("cpu.max"));
            std::fs::write(d.path().join(f), v).expect("write");
            has_cfs_quota(d.path())
        };
        assert!(!q("cpu.cfs_quota_us", "-1\n"));
        assert!(q("cpu.cfs_quota_us", "1000\n"));
        assert!(!q("cpu.max", "max 100000\n"));
        assert!(q("cpu.max", "50000 100000\n"));
        let _ = std::fs::remove_file(d.path().join("cpu.max"));
        assert!(!has_cfs_quota(d.path()), "no files: no quota");
        let a = Snapshot {
            periods: 10,
            throttled_periods: 2,
            ..Snapshot::default()
        };
        let b = Snapshot {
            periods: 14,
            throttled_periods: 5,
            ..Snapshot::default()
        };
        let s = summarize(&a, &b, Duration::from_millis(400));
        assert_eq!(s.quota_periods, 4.0);
        assert!((s.throttled_periods_ratio - 0.75).abs() < 1e-9);
    }

    #[test]
    fn parsers_read_the_kernel_formats() {
        assert_eq!(procfs::parse_schedstat("1200 300 7\n"), Some((1200, 300)));
        assert_eq!(
            parse_psi_some_total(
                "some avg10=1.48 avg60=4.56 avg300=7.80 total=583858024\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
            ),
            Some(583858024)
        );
        assert_eq!(
            parse_cpu_stat_throttled_ns("nr_periods 10\nnr_throttled 2\nthrottled_time 5000\n"),
            Some(5000)
        );
        assert_eq!(
            parse_cpu_stat_throttled_ns("usage_usec 1\nnr_throttled 2\nthrottled_usec 5\n"),
            Some(5000)
        );
        let dev = "Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop fifo colls carrier compressed\n    lo: 100 1 0 0 0 0 0 0 100 1 0 0 0 0 0 0\n  eth0: 1000 10 0 2 0 0 0 0 500 5 0 1 0 0 0 0\n";
        assert_eq!(parse_net_dev(dev), (1500, 15, 3));
        let disk = "   8       0 sda 1 2 3 4 5 6 7 8 9 250 11\n   7       0 loop0 1 2 3 4 5 6 7 8 9 999 11\n";
        assert_eq!(parse_diskstats_busy_ms(disk), 250);
    }

    #[test]
    fn summary_turns_deltas_into_ratios() {
        let a = Snapshot::default();
        let b = Snapshot {
            run_ns: 30_000_000,
            wait_ns: 10_000_000,
            throttled_ns: 50_000_000,
            psi_memory_us: 10_000,
            net_packets: 100,
            net_drops: 5,
            ..Snapshot::default()
        };
        let s = summarize(&a, &b, Duration::from_millis(100));
        assert!((s.runq_wait_ratio - 0.25).abs() < 1e-9);
        assert!((s.throttled_ratio - 0.5).abs() < 1e-9);
        assert!((s.psi_memory_some - 0.1).abs() < 1e-9);
        assert!((s.net_drop_ratio - 0.05).abs() < 1e-9);
    }

    #[test]
    fn own_process_has_schedstat() {
        let s = snapshot(Path::new("/proc"), &[std::process::id()], None);
        assert!(s.run_ns > 0, "this test process has run: {s:?}");
    }
}
