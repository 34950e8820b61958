//! cgroupfs knobs: one read, one write (the actuators' CPU quota and its undo go through here).
use std::{io, path::Path};

pub fn read(path: &Path) -> io::Result<String> {
    std::fs::read_to_string(path)
}

/// One write of `value` (O_TRUNC, as `echo v > file`: kernfs ignores it; a plain file, a test
/// tree, needs it).
pub fn write(path: &Path, value: &str) -> io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .and_then(|mut f| io::Write::write_all(&mut f, value.as_bytes()))
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

/// cpu.stat (v1 and v2) -> (`nr_periods`, `nr_throttled`).
pub fn parse_cpu_stat_periods(s: &str) -> Option<(u64, u64)> {
    let field = |key: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
    };
    Some((field("nr_periods")?, field("nr_throttled")?))
}
