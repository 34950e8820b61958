//! The call graph of a run, across hosts. A host's agent sees only its own namespace: a client
//! connection from `timeline` (host app2) to 198.51.100.13:20005 names no local service there,
//! so its trace has no edge for it. Here the testbed resolves every service's established client
//! connections, read from `/proc/PID/net/tcp` of its processes (the socket table of the
//! service's namespace) and `/proc/PID/fd` (which sockets the service holds), to the service
//! that owns the remote address in the run's address plan. Edges are (caller, callee) by
//! scenario service name; the scenario's declared graph is the reference.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    fs,
    net::{Ipv4Addr, SocketAddrV4},
};

use serde::Serialize;

use crate::{
    cgroup::Layout,
    plan::Plan,
    scenario::{Kind, Scenario},
};

/// TCP_ESTABLISHED in `/proc/net/tcp`'s `st` column.
const ESTABLISHED: u8 = 1;

/// One observed caller -> callee edge.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Edge {
    pub caller: String,
    pub callee: String,
    pub caller_host: String,
    pub callee_host: String,
    /// Established connections from the caller to the callee's address when observed.
    pub connections: usize,
    /// `sockets` (the testbed's snapshot of client connections, any host) or `agent` (the
    /// caller's host agent recorded it; same host only).
    pub source: String,
}

/// One row of `/proc/net/tcp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpEntry {
    pub local: SocketAddrV4,
    pub remote: SocketAddrV4,
    pub state: u8,
    pub inode: u64,
}

fn parse_addr(s: &str) -> Option<SocketAddrV4> {
    let (ip, port) = s.split_once(':')?;
    // The kernel prints the network-order address as a native u32 (`%08X`), the port in host
    // order: the native bytes of the parsed number are the address bytes.
    let ip = u32::from_str_radix(ip, 16).ok()?;
    let port = u16::from_str_radix(port, 16).ok()?;
    Some(SocketAddrV4::new(Ipv4Addr::from(ip.to_ne_bytes()), port))
}

/// Parses `/proc/net/tcp` (IPv4); malformed lines are skipped.
pub fn parse_proc_net_tcp(text: &str) -> Vec<TcpEntry> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some(TcpEntry {
                local: parse_addr(f.get(1)?)?,
                remote: parse_addr(f.get(2)?)?,
                state: u8::from_str_radix(f.get(3)?, 16).ok()?,
                inode: f.get(9)?.parse().ok()?,
            })
        })
        .collect()
}

/// The declared graph: nginx -> every request's entry service, and every `calls` entry.
pub fn declared(sc: &Scenario) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    if let Some(front) = sc.services.iter().find(|s| s.kind == Kind::Nginx) {
        for r in &sc.requests {
            out.insert((front.name.get_ref().clone(), r.entry.get_ref().clone()));
        }
    }
    for s in &sc.services {
        for c in &s.calls {
            out.insert((s.name.get_ref().clone(), c.get_ref().clone()));
        }
    }
    out
}

/// Socket inodes held by `pid` (`/proc/PID/fd/* -> socket:[N]`).
fn socket_inodes(pid: u32, into: &mut HashSet<u64>) {
    let Ok(rd) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return;
    };
    for e in rd.flatten() {
        if let Ok(t) = fs::read_link(e.path())
            && let Some(n) = t
                .to_str()
                .and_then(|s| s.strip_prefix("socket:["))
                .and_then(|s| s.strip_suffix(']'))
                .and_then(|s| s.parse().ok())
        {
            into.insert(n);
        }
    }
}

fn cgroup_pids(layout: &Layout, rel: &str) -> Vec<u32> {
    layout
        .procs_files(rel)
        .first()
        .and_then(|p| fs::read_to_string(p).ok())
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Resolves connections to edges: `sockets[host]` is the host's socket table, `held[service]`
/// the socket inodes of the service's processes.
pub fn resolve(
    plan: &Plan,
    sockets: &BTreeMap<String, Vec<TcpEntry>>,
    held: &HashMap<String, HashSet<u64>>,
) -> Vec<Edge> {
    let by_addr: HashMap<SocketAddrV4, &str> = plan
        .services
        .iter()
        .map(|s| (s.addr, s.name.as_str()))
        .collect();
    let mut count: BTreeMap<(String, String), usize> = BTreeMap::new();
    for s in &plan.services {
        let (Some(table), Some(inodes)) = (sockets.get(&s.host), held.get(&s.name)) else {
            continue;
        };
        for t in table
            .iter()
            .filter(|t| t.state == ESTABLISHED && inodes.contains(&t.inode))
        {
            // A client connection: the remote end is another service's listening address.
            if let Some(&callee) = by_addr.get(&t.remote)
                && callee != s.name
            {
                *count
                    .entry((s.name.clone(), callee.to_string()))
                    .or_default() += 1;
            }
        }
    }
    let host = |n: &str| plan.service(n).map_or(String::new(), |s| s.host.clone());
    count
        .into_iter()
        .map(|((caller, callee), connections)| Edge {
            caller_host: host(&caller),
            callee_host: host(&callee),
            caller,
            callee,
            connections,
            source: "sockets".into(),
        })
        .collect()
}

/// Snapshots every service's client connections now (the testbed must be up, under load, so
/// that the pools are open) and resolves them to edges.
pub fn observe(plan: &Plan, layout: &Layout) -> Vec<Edge> {
    let mut sockets: BTreeMap<String, Vec<TcpEntry>> = BTreeMap::new();
    let mut held: HashMap<String, HashSet<u64>> = HashMap::new();
    for s in &plan.services {
        let pids = cgroup_pids(layout, &s.cgroup);
        let inodes = held.entry(s.name.clone()).or_default();
        for &p in &pids {
            socket_inodes(p, inodes);
        }
        if !sockets.contains_key(&s.host)
            && let Some(t) = pids
                .iter()
                .find_map(|p| fs::read_to_string(format!("/proc/{p}/net/tcp")).ok())
        {
            sockets.insert(s.host.clone(), parse_proc_net_tcp(&t));
        }
    }
    resolve(plan, &sockets, &held)
}

/// Merges observations (several snapshots, agent edges): one row per (caller, callee), the
/// largest connection count, sources joined with `+`.
pub fn merge(all: impl IntoIterator<Item = Edge>) -> Vec<Edge> {
    let mut m: BTreeMap<(String, String), Edge> = BTreeMap::new();
    for e in all {
        match m.get_mut(&(e.caller.clone(), e.callee.clone())) {
            Some(x) => {
                x.connections = x.connections.max(e.connections);
                if !x.source.split('+').any(|s| s == e.source) {
                    let mut parts: Vec<&str> = x.source.split('+').collect();
                    parts.push(&e.source);
                    parts.sort_unstable();
                    x.source = parts.join("+");
                }
            }
            None => {
                m.insert((e.caller.clone(), e.callee.clone()), e);
            }
        }
    }
    m.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0C6433C6:4E22 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0 100 0 0 10 0
   1: 0C6433C6:9C40 0D6433C6:4E25 01 00000000:00000000 00:00000000 00000000     0        0 1002 1 0 20 4 30 10 -1
   2: 0C6433C6:9C41 0D6433C6:4E24 01 00000000:00000000 00:00000000 00000000     0        0 1003 1 0 20 4 30 10 -1
   3: 0C6433C6:4E22 0B6433C6:A000 01 00000000:00000000 00:00000000 00000000     0        0 1004 1 0 20 4 30 10 -1
   4: garbage
";

    #[test]
    fn proc_net_tcp_is_parsed() {
        let t = parse_proc_net_tcp(TCP);
        assert_eq!(t.len(), 4);
        if cfg!(target_endian = "little") {
            assert_eq!(t[1].local, "198.51.100.12:40000".parse().unwrap());
            assert_eq!(t[1].remote, "198.51.100.13:20005".parse().unwrap());
        }
        assert_eq!(t[0].state, 0x0A);
        assert_eq!(t[1].state, ESTABLISHED);
        assert_eq!(t[3].inode, 1004);
    }

    #[test]
    fn client_connections_resolve_to_remote_services() {
        if cfg!(target_endian = "big") {
            return;
        }
        let sc =
            crate::scenario::Scenario::parse("small.toml", include_str!("../scenarios/small.toml"))
                .unwrap();
        let plan = Plan::new(&sc, "t1").unwrap();
        // timeline (app2, .12:20002) holds the two client sockets 1002 (-> post-store, redis,
        // .13:20005) and 1003 (-> post-cache, .13:20004), and the server socket 1004.
        let mut sockets = BTreeMap::new();
        sockets.insert("app2".to_string(), parse_proc_net_tcp(TCP));
        let mut held = HashMap::new();
        held.insert(
            "timeline".to_string(),
            HashSet::from([1001, 1002, 1003, 1004]),
        );
        let e = resolve(&plan, &sockets, &held);
        let got: Vec<(&str, &str)> = e
            .iter()
            .map(|e| (e.caller.as_str(), e.callee.as_str()))
            .collect();
        assert_eq!(
            got,
            [("timeline", "post-cache"), ("timeline", "post-store")]
        );
        assert_eq!(e[0].callee_host, "data");
        let d = declared(&sc);
        assert!(
            got.iter()
                .all(|(a, b)| d.contains(&(a.to_string(), b.to_string())))
        );
        assert!(d.contains(&("nginx".to_string(), "user".to_string())));
        assert_eq!(d.len(), 7);
    }

    #[test]
    fn merge_keeps_max_and_sources() {
        let e = |src: &str, n| Edge {
            caller: "a".into(),
            callee: "b".into(),
            caller_host: "h".into(),
            callee_host: "h".into(),
            connections: n,
            source: src.into(),
        };
        let m = merge([e("sockets", 2), e("agent", 0), e("sockets", 3)]);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].connections, 3);
        assert_eq!(m[0].source, "agent+sockets");
    }
}
