//! PMU-free signals every host has: run-queue waits (/proc/<pid>/task/*/schedstat), CFS
//! throttling (the cgroup's cpu.stat), pressure stall information (/proc/pressure/*), network
//! bytes and drops in the culprit's namespace (/proc/<pid>/net/dev), block I/O (/proc/diskstats).
use std::{fs, path::Path, time::Duration};

use serde::{Deserialize, Serialize};

/// Cumulative counters at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub run_ns: u64,
    pub wait_ns: u64,
    pub throttled_ns: u64,
    pub psi_cpu_us: u64,
    pub psi_memory_us: u64,
    pub psi_io_us: u64,
    pub net_bytes: u64,
    pub net_packets: u64,
    pub net_drops: u64,
    pub disk_io_ms: u64,
}

/// Rates over a window, as fractions where they are time ratios.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SignalSummary {
    /// Time the culprit's threads waited on a run queue / (waited + ran).
    pub runq_wait_ratio: f64,
    /// Throttled time / window (CFS quota).
    pub throttled_ratio: f64,
    /// Share of the window with some task stalled, host-wide (0 where PSI is off).
    pub psi_cpu_some: f64,
    pub psi_memory_some: f64,
    pub psi_io_some: f64,
    pub net_bytes_per_s: f64,
    /// Drops / packets in the culprit's namespace.
    pub net_drop_ratio: f64,
    /// Share of the window some disk was busy.
    pub disk_busy: f64,
}

/// `run_ns wait_ns timeslices`
pub fn parse_schedstat(s: &str) -> Option<(u64, u64)> {
    let mut it = s.split_whitespace();
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// `some avg10=.. avg60=.. avg300=.. total=N` -> N (us)
pub fn parse_psi_some_total(s: &str) -> Option<u64> {
    let line = s.lines().find(|l| l.starts_with("some "))?;
    line.split_whitespace()
        .find_map(|f| f.strip_prefix("total="))?
        .parse()
        .ok()
}

/// cgroup v1 `throttled_time N` (ns) or v2 `throttled_usec N` -> ns.
pub fn parse_cpu_stat_throttled_ns(s: &str) -> Option<u64> {
    for l in s.lines() {
        let mut it = l.split_whitespace();
        match (it.next(), it.next().and_then(|v| v.parse::<u64>().ok())) {
            (Some("throttled_time"), Some(v)) => return Some(v),
            (Some("throttled_usec"), Some(v)) => return Some(v * 1000),
            _ => {}
        }
    }
    None
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
    for pid in pids {
        let tasks = proc_root.join(pid.to_string()).join("task");
        let Ok(dir) = fs::read_dir(&tasks) else {
            continue;
        };
        for t in dir.flatten() {
            if let Some((run, wait)) = fs::read_to_string(t.path().join("schedstat"))
                .ok()
                .as_deref()
                .and_then(parse_schedstat)
            {
                s.run_ns += run;
                s.wait_ns += wait;
            }
        }
    }
    if let Some(d) = cpu_cgroup_dir {
        s.throttled_ns = fs::read_to_string(d.join("cpu.stat"))
            .ok()
            .as_deref()
            .and_then(parse_cpu_stat_throttled_ns)
            .unwrap_or(0);
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers_read_the_kernel_formats() {
        assert_eq!(parse_schedstat("1200 300 7\n"), Some((1200, 300)));
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
