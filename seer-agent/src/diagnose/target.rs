//! The culprit: found by the name `seer-agent run` gives it, with what a diagnosis needs to
//! place microbenchmarks next to it (its CPUs, cgroup, filesystem) and to probe it (a port).
//!
//! Discovery is the agent's own (`Discovery::refresh`), fed from /proc/net/tcp{,6} instead of
//! the eBPF socket iterator: a diagnosis runs once, so the ~10 ms of /proc parsing is cheaper
//! than loading the probes.
use std::{
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
};

use seer_common::{SockRecord, TCP_LISTEN};

use super::DiagnoseError;
use crate::{config::Config, discovery::Discovery, sys::procfs};

#[derive(Clone, Debug)]
pub struct Target {
    pub name: String,
    pub pids: Vec<u32>,
    pub ports: Vec<u16>,
    /// Where it listens (from its own namespace's /proc/PID/net/tcp{,6}), lowest port first.
    pub addrs: Vec<SocketAddr>,
    /// The first process's name (/proc/PID/comm): picks the probe's protocol.
    pub comm: String,
    /// CPUs the culprit may run on (union of its processes' affinity masks).
    pub cpus: Vec<usize>,
    /// v1 `cpu` controller directory (or the v2 directory) holding cpu.stat, if readable.
    pub cpu_cgroup_dir: Option<PathBuf>,
    /// The culprit's working directory as the magic link `/proc/PID/cwd`, where the disk
    /// microbenchmark writes: opened as is it lands in that directory in the culprit's own
    /// mount namespace (the path readlink shows means nothing in ours).
    pub cwd: PathBuf,
    /// Every thread of its own cgroup (v1 `tasks` / v2 `cgroup.threads`); None when it shares
    /// a cgroup with others (the root, a slice, a session scope).
    pub threads_file: Option<PathBuf>,
    /// Its memory cgroup directory (v1 `memory` hierarchy, or v2), if readable.
    pub mem_cgroup_dir: Option<PathBuf>,
}

/// Listening sockets from /proc/net/tcp-format text (inode and port only).
pub fn parse_listeners(text: &str, out: &mut Vec<SockRecord>) {
    for l in text.lines().skip(1) {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 10 || f[3] != "0A" {
            continue;
        }
        let port = f[1]
            .rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
        let inode = f[9].parse::<u64>().ok();
        if let (Some(lport), Some(inode)) = (port, inode) {
            out.push(SockRecord {
                inode,
                lport,
                state: TCP_LISTEN,
                ..SockRecord::default()
            });
        }
    }
}

/// /proc/net/tcp{,6} address `0100007F:2B67` or the 32-hex-digit IPv6 form -> address.
pub fn parse_hex_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(ip, 16).ok()?.swap_bytes(),
        )),
        32 => {
            let mut b = [0u8; 16];
            for (i, w) in b.chunks_mut(4).enumerate() {
                let word = u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16).ok()?;
                w.copy_from_slice(&word.to_le_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Listening addresses on `ports` in /proc/net/tcp-format text.
pub fn listen_addrs(text: &str, ports: &[u16]) -> Vec<SocketAddr> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 3 && f[3] == "0A").then(|| parse_hex_addr(f[1]))?
        })
        .filter(|a| ports.contains(&a.port()))
        .collect()
}

/// The address to reach a listener at: its own, or loopback where it listens on any.
pub fn reach(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V4(v) if v.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), a.port())
        }
        IpAddr::V6(v) if v.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), a.port())
        }
        _ => a,
    }
}

/// `0-1,3` -> [0, 1, 3]
pub fn parse_cpu_list(s: &str) -> Vec<usize> {
    let mut v = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
                    v.extend(a..=b);
                }
            }
            None => v.extend(part.parse::<usize>().ok()),
        }
    }
    v
}

fn cpus_of(pid: u32) -> Vec<usize> {
    procfs::status(pid)
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(parse_cpu_list)
        })
        .unwrap_or_default()
}

/// The memory controller's directory: v1 `N:memory:/path`, else the v2 tree.
fn mem_cgroup_dir(pid: u32) -> Option<PathBuf> {
    let text = procfs::cgroup_file(pid).ok()?;
    let rel = |p: &str| p.trim_start_matches('/').to_string();
    procfs::cgroup_path(&text, Some("memory"))
        .map(|p| PathBuf::from("/sys/fs/cgroup/memory").join(rel(p)))
        .filter(|d| d.join("memory.usage_in_bytes").exists())
        .or_else(|| {
            procfs::cgroup_path(&text, None)
                .map(|p| PathBuf::from("/sys/fs/cgroup").join(rel(p)))
                .filter(|d| d.join("memory.current").exists())
        })
}

/// The file listing the threads of `cpu_dir`, unless that is a hierarchy's root or a shared
/// systemd slice/scope (whose threads are not the service's alone).
fn threads_file(cpu_dir: Option<&PathBuf>, service_cgroup: &str) -> Option<PathBuf> {
    let d = cpu_dir?;
    let leaf = d.file_name()?.to_string_lossy();
    let root = [
        "/sys/fs/cgroup",
        "/sys/fs/cgroup/cpu",
        "/sys/fs/cgroup/cpu,cpuacct",
    ]
    .iter()
    .any(|r| d == std::path::Path::new(r));
    if root
        || leaf.ends_with(".slice")
        || leaf.ends_with(".scope")
        || service_cgroup == "/"
        || service_cgroup.is_empty()
    {
        return None;
    }
    ["tasks", "cgroup.threads"]
        .iter()
        .map(|f| d.join(f))
        .find(|f| f.exists())
}

/// Finds the service called `name` (as `seer-agent run` names it).
pub fn find(name: &str) -> Result<Target, DiagnoseError> {
    let mut socks = Vec::new();
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(t) = fs::read_to_string(f) {
            parse_listeners(&t, &mut socks);
        }
    }
    let (mut procs, _) = procfs::scan_sockets(std::path::Path::new("/proc"));
    let me = std::process::id();
    procs.retain(|p| p.pid != me);
    let mut disc = Discovery::default();
    let _ = disc.refresh(&Config::default(), &socks, &procs);
    let Some(s) = disc.services.iter().find(|s| s.name == name) else {
        let mut known: Vec<&str> = disc.services.iter().map(|s| s.name.as_str()).collect();
        known.sort_unstable();
        return Err(DiagnoseError::UnknownService {
            name: name.into(),
            known: if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            },
        });
    };
    Ok(of_service(s))
}

/// The target for a service the running agent has discovered (its own names and rules).
pub fn of_service(s: &crate::discovery::Service) -> Target {
    let mut cpus: Vec<usize> = s.pids.iter().flat_map(|&p| cpus_of(p)).collect();
    cpus.sort_unstable();
    cpus.dedup();
    let first = s.pids.first().copied().unwrap_or(0);
    let mut addrs: Vec<SocketAddr> = ["tcp", "tcp6"]
        .iter()
        .filter_map(|f| fs::read_to_string(format!("/proc/{first}/net/{f}")).ok())
        .flat_map(|t| listen_addrs(&t, &s.ports))
        .collect();
    // Lowest port first; IPv4 before IPv6.
    addrs.sort_by_key(|a| (a.port(), a.is_ipv6()));
    addrs.dedup();
    let cpu_cgroup_dir = procfs::cpu_cgroup_dir(first);
    Target {
        name: s.name.clone(),
        pids: s.pids.clone(),
        ports: s.ports.clone(),
        addrs,
        comm: fs::read_to_string(format!("/proc/{first}/comm"))
            .map(|c| c.trim().to_string())
            .unwrap_or_else(|_| s.comm.clone()),
        cpus,
        threads_file: threads_file(cpu_cgroup_dir.as_ref(), &s.cgroup),
        cpu_cgroup_dir,
        cwd: PathBuf::from(format!("/proc/{first}/cwd")),
        mem_cgroup_dir: mem_cgroup_dir(first),
    }
}

impl Target {
    /// Where its PMU-free signals are read.
    pub fn scope(&self) -> super::signals::Scope {
        super::signals::Scope {
            pids: self.pids.clone(),
            ports: self.ports.clone(),
            cpu_cgroup_dir: self.cpu_cgroup_dir.clone(),
            threads_file: self.threads_file.clone(),
            mem_cgroup_dir: self.mem_cgroup_dir.clone(),
        }
    }

    /// Whether any of the culprit's processes still exists (zombies count as gone).
    pub fn alive(&self) -> bool {
        self.pids
            .iter()
            .any(|&p| crate::sys::procfs::process_alive(p))
    }

    /// The cgroup directory perf counts (v1 `perf_event` hierarchy, else the v2 tree).
    pub fn perf_cgroup_dir(&self) -> Option<PathBuf> {
        let pid = self.pids.first()?;
        let text = procfs::cgroup_file(*pid).ok()?;
        if let Some(p) = procfs::cgroup_path(&text, Some("perf_event")) {
            return Some(
                PathBuf::from("/sys/fs/cgroup/perf_event").join(p.trim_start_matches('/')),
            );
        }
        let rel = procfs::cgroup_path(&text, None)?.trim_start_matches('/');
        let unified = std::path::Path::new("/sys/fs/cgroup/unified");
        let root = if unified.is_dir() {
            unified
        } else {
            std::path::Path::new("/sys/fs/cgroup")
        };
        Some(root.join(rel))
    }

    pub fn gone(&self, what: impl Into<String>) -> DiagnoseError {
        DiagnoseError::ServiceGone {
            name: self.name.clone(),
            what: what.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_and_cpu_lists_parse() {
        let t = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:2B67 00000000:0000 0A 00000000:00000000 00:00000000 00000000   112        0 31337 1 0000000000000000 100 0 0 10 0\n   1: 0100007F:2B67 0100007F:9C40 01 00000000:00000000 00:00000000 00000000   112        0 4242 1 0000000000000000 100 0 0 10 0\n";
        let mut v = Vec::new();
        parse_listeners(t, &mut v);
        assert_eq!(v.len(), 1);
        assert_eq!((v[0].lport, v[0].inode), (11111, 31337));
        assert_eq!(parse_cpu_list("0-1,3\n"), vec![0, 1, 3]);
        assert_eq!(parse_cpu_list("2"), vec![2]);
        assert_eq!(
            listen_addrs(t, &[11111]),
            vec!["127.0.0.1:11111".parse::<SocketAddr>().expect("addr")]
        );
        assert!(listen_addrs(t, &[80]).is_empty());
        assert_eq!(
            parse_hex_addr("0A6433C6:4E21"),
            Some("198.51.100.10:20001".parse().expect("addr"))
        );
        assert_eq!(
            parse_hex_addr("00000000000000000000000001000000:1F90"),
            Some("[::1]:8080".parse().expect("addr"))
        );
        assert_eq!(
            reach("0.0.0.0:80".parse().expect("addr")),
            "127.0.0.1:80".parse().expect("addr")
        );
    }

    #[test]
    fn unknown_service_names_what_is_known() {
        let e = find("no-such-service-xyz").expect_err("must not exist");
        assert!(matches!(e, DiagnoseError::UnknownService { .. }), "{e}");
        assert!(e.to_string().contains("no-such-service-xyz"), "{e}");
    }
}
