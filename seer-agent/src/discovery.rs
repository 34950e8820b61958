//! Services and the call graph, found from listening sockets, processes and connections.
//!
//! A service is a group of processes that own listening TCP sockets: processes sharing a
//! listening socket (a master and its workers) form one group, and so do processes in the same
//! systemd unit. Config rules can name groups, merge them (same name) or ignore them. The call
//! graph comes from connect() calls the kernel reports (`CONNECTS`) and, for connections older
//! than the agent, from client sockets to a service's port held by another service's process.
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use seer_common::{
    ConnectKey, MAX_SLOTS, SockRecord, TCP_ESTABLISHED, TCP_LISTEN, sample::ServiceId,
};

use crate::{config::Config, sys::procfs::ProcInfo};

#[derive(Clone, Debug, Default)]
pub struct Service {
    pub id: ServiceId,
    pub name: String,
    /// Stable identity (survives restarts of the service and of the agent).
    pub identity: String,
    pub comm: String,
    pub cgroup: String,
    pub pids: Vec<u32>,
    pub ports: Vec<u16>,
    /// Kernel counter slot; None when all MAX_SLOTS are taken (gauges still work).
    pub slot: Option<usize>,
    /// Longest call chain from a front end (0 = nothing calls it).
    pub depth: u32,
    /// Every socket inode the service's processes hold (to attribute client connections).
    pub socket_inodes: HashSet<u64>,
}

/// The destination of a connect() if it is on another host; None for this host's addresses,
/// loopback, and keys whose address the kernel side could not read.
pub fn remote_addr(
    k: &ConnectKey,
    local: &std::collections::HashSet<std::net::IpAddr>,
) -> Option<std::net::SocketAddr> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let ip = match k.family {
        seer_common::AF_INET => IpAddr::V4(Ipv4Addr::new(
            k.daddr[0], k.daddr[1], k.daddr[2], k.daddr[3],
        )),
        seer_common::AF_INET6 => {
            let v6 = Ipv6Addr::from(k.daddr);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    (!ip.is_loopback() && !ip.is_unspecified() && !local.contains(&ip))
        .then(|| std::net::SocketAddr::new(ip, k.dport))
}

/// Changes the kernel maps need after a refresh.
#[derive(Debug, Default)]
pub struct MapChanges {
    pub ports: Vec<(u16, Option<usize>)>,
    pub tgids: Vec<(u32, Option<usize>)>,
    pub added: Vec<ServiceId>,
    pub removed: Vec<ServiceId>,
    /// Services that got a slot this round: their counter baselines must be reset.
    pub new_slots: Vec<usize>,
}

/// Addresses on other hosts one service may have recorded calls to; beyond, they are counted.
pub const MAX_REMOTE_PER_CALLER: usize = 256;
/// The smallest socket address (the start of one caller's range in `remote_edges`).
const MIN_ADDR: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

#[derive(Default)]
pub struct Discovery {
    /// Back-end first (reverse topological order of the call graph).
    pub services: Vec<Service>,
    /// caller -> callee
    pub edges: BTreeSet<(ServiceId, ServiceId)>,
    /// caller -> an address:port on another host (a callee this agent cannot see: another
    /// host's agent has it; a cluster view joins the two).
    pub remote_edges: BTreeSet<(ServiceId, std::net::SocketAddr)>,
    /// Calls to other hosts not recorded because their caller already has
    /// `MAX_REMOTE_PER_CALLER` (a crawler, a client of ever-new addresses).
    pub remote_capped: u64,
    ids: HashMap<String, ServiceId>,
    next_id: u32,
    slots_used: Vec<bool>,
    warned_full: bool,
}

fn find(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
}

/// Processes that own a listening socket, grouped (union-find) by shared listeners (a master
/// and its workers) and by systemd unit: (owners, group root -> member indices).
fn group_owners<'a>(
    procs: &'a [ProcInfo],
    listen: &HashMap<u64, u16>,
) -> (Vec<&'a ProcInfo>, BTreeMap<usize, Vec<usize>>) {
    let owners: Vec<&ProcInfo> = procs
        .iter()
        .filter(|p| p.socket_inodes.iter().any(|i| listen.contains_key(i)))
        .collect();
    let mut parent: Vec<usize> = (0..owners.len()).collect();
    let mut by_inode: HashMap<u64, usize> = HashMap::new();
    let mut by_unit: HashMap<&str, usize> = HashMap::new();
    for (i, p) in owners.iter().enumerate() {
        for ino in p.socket_inodes.iter().filter(|i| listen.contains_key(i)) {
            match by_inode.get(ino) {
                Some(&j) => union(&mut parent, i, j),
                None => {
                    by_inode.insert(*ino, i);
                }
            }
        }
        if unit_of(&p.cgroup).is_some() {
            match by_unit.get(p.cgroup.as_str()) {
                Some(&j) => union(&mut parent, i, j),
                None => {
                    by_unit.insert(&p.cgroup, i);
                }
            }
        }
    }
    // group root -> members
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..owners.len() {
        let r = find(&mut parent, i);
        groups.entry(r).or_default().push(i);
    }
    (owners, groups)
}

/// One candidate service per group, keyed by identity so that rules can merge groups; ignored
/// ones left out. A cgroup names a service only if no other group leads from it.
fn candidates(
    cfg: &Config,
    owners: &[&ProcInfo],
    groups: &BTreeMap<usize, Vec<usize>>,
    listen: &HashMap<u64, u16>,
) -> BTreeMap<String, Service> {
    // How many groups share each lead cgroup: a cgroup names a service only if it is its own.
    let mut cgroup_users: HashMap<&str, usize> = HashMap::new();
    for members in groups.values() {
        let lead = members
            .iter()
            .map(|&i| owners[i])
            .min_by_key(|p| p.pid)
            .expect("non-empty");
        *cgroup_users.entry(lead.cgroup.as_str()).or_default() += 1;
    }
    // Build candidate services, keyed by (name, identity) so rules can merge them.
    let mut found: BTreeMap<String, Service> = BTreeMap::new();
    for members in groups.values() {
        let mut pids: Vec<u32> = members.iter().map(|&i| owners[i].pid).collect();
        pids.sort_unstable();
        let lead = members
            .iter()
            .map(|&i| owners[i])
            .min_by_key(|p| p.pid)
            .expect("non-empty");
        let mut ports: Vec<u16> = members
            .iter()
            .flat_map(|&i| owners[i].socket_inodes.iter())
            .filter_map(|ino| listen.get(ino).copied())
            .collect();
        ports.sort_unstable();
        ports.dedup();
        if cfg
            .ignore
            .iter()
            .any(|m| m.matches(&lead.comm, &ports, &lead.cgroup))
        {
            continue;
        }
        let rule = cfg
            .services
            .iter()
            .find(|r| r.matches(&lead.comm, &ports, &lead.cgroup));
        let own_cgroup = cgroup_users[lead.cgroup.as_str()] == 1;
        let (name, identity) = match (rule, unit_of(&lead.cgroup), named_cgroup(&lead.cgroup)) {
            (Some(r), _, _) => (r.name.clone(), format!("rule:{}", r.name)),
            (None, Some(unit), _) => (unit.to_string(), format!("unit:{}", lead.cgroup)),
            (None, None, Some(leaf)) if own_cgroup => {
                (leaf.to_string(), format!("cgroup:{}", lead.cgroup))
            }
            _ => (
                lead.comm.clone(),
                format!("comm:{}:{}", lead.comm, ports[0]),
            ),
        };
        let inodes: HashSet<u64> = members
            .iter()
            .flat_map(|&i| owners[i].socket_inodes.iter().copied())
            .collect();
        let entry = found.entry(identity.clone()).or_insert_with(|| Service {
            id: ServiceId(0),
            name,
            identity,
            comm: lead.comm.clone(),
            cgroup: lead.cgroup.clone(),
            pids: Vec::new(),
            ports: Vec::new(),
            slot: None,
            depth: 0,
            socket_inodes: HashSet::new(),
        });
        entry.pids.extend(pids);
        entry.pids.sort_unstable();
        entry.ports.extend(ports);
        entry.ports.sort_unstable();
        entry.ports.dedup();
        entry.socket_inodes.extend(inodes);
    }
    found
}

/// Equal names (two memcached instances) become name:port.
fn disambiguate(found: &mut BTreeMap<String, Service>) {
    let mut count: HashMap<String, usize> = HashMap::new();
    for s in found.values() {
        *count.entry(s.name.clone()).or_default() += 1;
    }
    for s in found.values_mut() {
        if count[&s.name] > 1 {
            s.name = format!("{}:{}", s.name, s.ports[0]);
        }
    }
}

fn union(parent: &mut [usize], a: usize, b: usize) {
    let (ra, rb) = (find(parent, a), find(parent, b));
    if ra != rb {
        parent[ra.max(rb)] = ra.min(rb);
    }
}

fn unit_of(cgroup: &str) -> Option<&str> {
    let last = cgroup.rsplit('/').next()?;
    last.strip_suffix(".service")
}

/// A cgroup made for one service (`/seer-tb-1/timeline`, `/apps/checkout`): its last component
/// names the service. Not the root, a systemd scope or slice (sessions, transient units), nor a
/// container id (64 hex digits), which name nothing a person would recognise.
fn named_cgroup(cgroup: &str) -> Option<&str> {
    let last = cgroup.rsplit('/').next().filter(|l| !l.is_empty())?;
    let is_id = last.len() >= 32 && last.chars().all(|c| c.is_ascii_hexdigit());
    if last.ends_with(".scope") || last.ends_with(".slice") || is_id {
        return None;
    }
    Some(last)
}

impl Discovery {
    /// Reuses the ids a previous run gave to the same identities (from the trace store).
    pub fn seed_ids(&mut self, known: impl IntoIterator<Item = (String, ServiceId)>) {
        for (identity, id) in known {
            self.next_id = self.next_id.max(id.0);
            self.ids.insert(identity, id);
        }
    }

    /// New services get ids above `floor` (ids a store gave once, even to services whose rows
    /// retention deleted since, are never given again).
    pub fn seed_next_id(&mut self, floor: ServiceId) {
        self.next_id = self.next_id.max(floor.0);
    }

    pub fn service_by_port(&self, port: u16) -> Option<&Service> {
        self.services.iter().find(|s| s.ports.contains(&port))
    }

    pub fn service_by_pid(&self, pid: u32) -> Option<&Service> {
        self.services
            .iter()
            .find(|s| s.pids.binary_search(&pid).is_ok())
    }

    pub fn name_of(&self, id: ServiceId) -> &str {
        self.services
            .iter()
            .find(|s| s.id == id)
            .map_or("?", |s| s.name.as_str())
    }

    /// Re-derives services from one socket snapshot and one /proc scan: listeners, the
    /// processes that own them grouped into services, the candidates named by the config's
    /// rules, then ids, slots and the kernel maps' changes against the previous round, and the
    /// call edges of connections older than the agent.
    pub fn refresh(
        &mut self,
        cfg: &Config,
        socks: &[SockRecord],
        procs: &[ProcInfo],
    ) -> MapChanges {
        // listening inode -> port
        let listen: HashMap<u64, u16> = socks
            .iter()
            .filter(|s| s.state == TCP_LISTEN && s.inode != 0)
            .map(|s| (s.inode, s.lport))
            .collect();
        let (owners, groups) = group_owners(procs, &listen);
        let mut found = candidates(cfg, &owners, &groups, &listen);
        disambiguate(&mut found);
        let ch = self.reconcile(found);
        self.edges_from_existing(socks);
        self.order();
        ch
    }

    /// Ids, slots and kernel map changes for this round's services against the last round's.
    fn reconcile(&mut self, found: BTreeMap<String, Service>) -> MapChanges {
        let mut ch = MapChanges::default();
        let old: HashMap<String, Service> = self
            .services
            .drain(..)
            .map(|s| (s.identity.clone(), s))
            .collect();
        let mut new = Vec::new();
        for (identity, mut s) in found {
            let prev = old.get(&identity);
            s.id = match self.ids.get(&identity) {
                Some(&id) => id,
                None => {
                    self.next_id += 1;
                    let id = ServiceId(self.next_id);
                    self.ids.insert(identity.clone(), id);
                    id
                }
            };
            if self.slots_used.is_empty() {
                self.slots_used = vec![false; MAX_SLOTS];
            }
            s.slot = prev.and_then(|p| p.slot).or_else(|| {
                let free = self.slots_used.iter().position(|u| !u);
                match free {
                    Some(f) => {
                        self.slots_used[f] = true;
                        ch.new_slots.push(f);
                        Some(f)
                    }
                    None => {
                        if !self.warned_full {
                            log::warn!(
                                "more than {MAX_SLOTS} services: {} gets queue gauges but no \
                                 kernel counters (NIC, epoll, latency)",
                                s.name
                            );
                            self.warned_full = true;
                        }
                        None
                    }
                }
            });
            let (old_ports, old_pids) =
                prev.map_or((&[][..], &[][..]), |p| (&p.ports[..], &p.pids[..]));
            for &p in s.ports.iter().filter(|p| !old_ports.contains(p)) {
                ch.ports.push((p, s.slot));
            }
            for &p in s.pids.iter().filter(|p| !old_pids.contains(p)) {
                ch.tgids.push((p, s.slot));
            }
            for &p in old_ports.iter().filter(|p| !s.ports.contains(p)) {
                ch.ports.push((p, None));
            }
            for &p in old_pids.iter().filter(|p| !s.pids.contains(p)) {
                ch.tgids.push((p, None));
            }
            if prev.is_none() {
                ch.added.push(s.id);
            }
            new.push(s);
        }
        for (identity, s) in old {
            if new.iter().all(|n| n.identity != identity) {
                ch.removed.push(s.id);
                ch.ports.extend(s.ports.iter().map(|&p| (p, None)));
                ch.tgids.extend(s.pids.iter().map(|&p| (p, None)));
                if let Some(slot) = s.slot {
                    self.slots_used[slot] = false;
                }
            }
        }
        self.services = new;
        let live: HashSet<ServiceId> = self.services.iter().map(|s| s.id).collect();
        self.edges
            .retain(|(a, b)| live.contains(a) && live.contains(b));
        self.remote_edges.retain(|(a, _)| live.contains(a));
        ch
    }

    /// Connections older than the agent: a client socket held by service A to a port of B.
    fn edges_from_existing(&mut self, socks: &[SockRecord]) {
        let mut found_edges = Vec::new();
        for r in socks
            .iter()
            .filter(|r| r.state == TCP_ESTABLISHED && r.inode != 0)
        {
            if let Some(callee) = self.service_by_port(r.rport)
                && let Some(caller) = self
                    .services
                    .iter()
                    .find(|s| s.socket_inodes.contains(&r.inode))
                && caller.id != callee.id
            {
                found_edges.push((caller.id, callee.id));
            }
        }
        self.edges.extend(found_edges);
    }

    /// Adds caller -> callee edges from connect() calls seen by the kernel.
    /// Edges from connect() events: to a service of this host when the destination address is
    /// one of `local` (or loopback, or unknown), else to the remote address. Returns the remote
    /// edges that are new.
    pub fn add_connects(
        &mut self,
        connects: &[(ConnectKey, u64)],
        local: &std::collections::HashSet<std::net::IpAddr>,
    ) -> Vec<(ServiceId, std::net::SocketAddr)> {
        let mut new_remote = Vec::new();
        let mut added = false;
        for (k, _) in connects {
            let Some(caller) = self.service_by_pid(k.tgid) else {
                continue;
            };
            let caller = caller.id;
            match remote_addr(k, local) {
                Some(addr) => {
                    if self.remote_edges.contains(&(caller, addr)) {
                        continue;
                    }
                    let n = self
                        .remote_edges
                        .range((caller, MIN_ADDR)..)
                        .take_while(|(c, _)| *c == caller)
                        .count();
                    if n >= MAX_REMOTE_PER_CALLER {
                        self.remote_capped += 1;
                        if self.remote_capped == 1 {
                            log::warn!(
                                "service {} calls more than {MAX_REMOTE_PER_CALLER} addresses on other hosts: \
                                 the others are not recorded (counted in seer_remote_edges_capped_total)",
                                self.name_of(caller)
                            );
                        }
                        continue;
                    }
                    self.remote_edges.insert((caller, addr));
                    new_remote.push((caller, addr));
                }
                None => {
                    if let Some(callee) = self.service_by_port(k.dport)
                        && caller != callee.id
                    {
                        added |= self.edges.insert((caller, callee.id));
                    }
                }
            }
        }
        if added {
            self.order();
        }
        new_remote
    }

    /// Orders services back-end first and computes each one's depth from the front end.
    pub(crate) fn order(&mut self) {
        let ids: Vec<ServiceId> = self.services.iter().map(|s| s.id).collect();
        let mut depth: HashMap<ServiceId, u32> = ids.iter().map(|&i| (i, 0)).collect();
        // Longest path from a root; bounded relaxation so cycles cannot loop forever.
        for _ in 0..ids.len() {
            let mut changed = false;
            for &(a, b) in &self.edges {
                let d = depth[&a] + 1;
                if d > depth[&b] && (d as usize) <= ids.len() {
                    depth.insert(b, d);
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        for s in &mut self.services {
            s.depth = depth[&s.id];
        }
        self.services
            .sort_by(|a, b| b.depth.cmp(&a.depth).then(a.id.cmp(&b.id)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener(port: u16, inode: u64) -> SockRecord {
        SockRecord {
            state: TCP_LISTEN,
            lport: port,
            inode,
            ..Default::default()
        }
    }

    fn proc_(pid: u32, comm: &str, cgroup: &str, inodes: &[u64]) -> ProcInfo {
        ProcInfo {
            pid,
            comm: comm.into(),
            cgroup: cgroup.into(),
            socket_inodes: inodes.to_vec(),
        }
    }

    #[test]
    fn master_and_workers_are_one_service_and_backends_come_first() {
        let socks = vec![
            listener(8080, 1),
            listener(11211, 2),
            SockRecord {
                state: TCP_ESTABLISHED,
                lport: 40000,
                rport: 11211,
                inode: 9,
                ..Default::default()
            },
        ];
        let procs = vec![
            proc_(10, "nginx", "/", &[1]),
            proc_(11, "nginx", "/", &[1, 9]),
            proc_(20, "memcached", "/", &[2]),
            proc_(30, "bash", "/", &[]),
        ];
        let mut d = Discovery::default();
        let ch = d.refresh(&Config::default(), &socks, &procs);
        assert_eq!(d.services.len(), 2);
        assert_eq!(d.services[0].name, "memcached", "back end first");
        assert_eq!(d.services[1].pids, vec![10, 11]);
        assert_eq!(d.services[0].depth, 1);
        assert_eq!(d.edges.len(), 1);
        assert_eq!(ch.added.len(), 2);
        assert!(ch.ports.contains(&(8080, d.services[1].slot)));
        // The same input again changes nothing; a vanished service frees its slot and ports.
        assert!(
            d.refresh(&Config::default(), &socks, &procs)
                .ports
                .is_empty()
        );
        let ch = d.refresh(&Config::default(), &socks[..1], &procs[..2]);
        assert_eq!(ch.removed.len(), 1);
        assert!(ch.ports.contains(&(11211, None)));
    }

    #[test]
    fn rules_name_merge_and_ignore() {
        let socks = vec![listener(1, 1), listener(2, 2), listener(22, 3)];
        let procs = vec![
            proc_(1, "a", "/", &[1]),
            proc_(2, "b", "/", &[2]),
            proc_(3, "sshd", "/", &[3]),
        ];
        let cfg = Config::parse(
            "[[service]]\nname=\"pair\"\ncomm=\"a\"\n[[service]]\nname=\"pair\"\ncomm=\"b\"\n[[ignore]]\nport=22\n",
            "t",
        )
        .unwrap();
        let mut d = Discovery::default();
        d.refresh(&cfg, &socks, &procs);
        assert_eq!(d.services.len(), 1);
        assert_eq!(d.services[0].name, "pair");
        assert_eq!(d.services[0].ports, vec![1, 2]);
    }

    #[test]
    fn a_cgroup_of_its_own_names_the_service() {
        let socks = vec![
            listener(1, 1),
            listener(2, 2),
            listener(3, 3),
            listener(4, 4),
        ];
        let procs = vec![
            proc_(1, "svc", "/tb/timeline", &[1]),
            proc_(2, "svc", "/tb/user", &[2]),
            proc_(3, "a", "/user.slice/session-1.scope", &[3]),
            proc_(4, "b", "/user.slice/session-1.scope", &[4]),
        ];
        let mut d = Discovery::default();
        d.refresh(&Config::default(), &socks, &procs);
        let mut names: Vec<&str> = d.services.iter().map(|s| s.name.as_str()).collect();
        names.sort();
        assert_eq!(names, ["a", "b", "timeline", "user"]);
    }

    #[test]
    fn connect_events_make_edges() {
        let socks = vec![listener(80, 1), listener(6379, 2)];
        let procs = vec![proc_(5, "api", "/", &[1]), proc_(6, "redis", "/", &[2])];
        let mut d = Discovery::default();
        d.refresh(&Config::default(), &socks, &procs);
        let key = |a: [u8; 4]| ConnectKey {
            tgid: 5,
            dport: 6379,
            family: seer_common::AF_INET,
            _pad: 0,
            daddr: [a[0], a[1], a[2], a[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        };
        let local: std::collections::HashSet<std::net::IpAddr> =
            ["192.0.2.7".parse().unwrap()].into();
        // Loopback and this host's own address reach the local redis.
        d.add_connects(
            &[(key([127, 0, 0, 1]), 3), (key([192, 0, 2, 7]), 1)],
            &local,
        );
        assert_eq!(d.edges.len(), 1);
        let (a, b) = *d.edges.iter().next().unwrap();
        assert_eq!((d.name_of(a), d.name_of(b)), ("api", "redis"));
        assert_eq!(d.services[0].name, "redis");
        assert!(d.remote_edges.is_empty());
        // Another host's redis on the same port is not this one.
        let new = d.add_connects(&[(key([192, 0, 2, 99]), 2)], &local);
        assert_eq!(new.len(), 1);
        assert!(
            d.add_connects(&[(key([192, 0, 2, 99]), 2)], &local)
                .is_empty(),
            "seen"
        );
        assert_eq!(d.edges.len(), 1);
        let (c, addr) = *d.remote_edges.iter().next().unwrap();
        assert_eq!(
            (d.name_of(c), addr.to_string().as_str()),
            ("api", "192.0.2.99:6379")
        );
        // An IPv4-mapped IPv6 address is the IPv4 one.
        let mut mapped = key([0; 4]);
        mapped.family = seer_common::AF_INET6;
        mapped.daddr = std::net::Ipv4Addr::new(127, 0, 0, 1)
            .to_ipv6_mapped()
            .octets();
        assert_eq!(remote_addr(&mapped, &local), None);
    }

    /// Before: calls to other hosts were kept forever, from services long gone and to every
    /// address a client ever dialled. Now a caller keeps at most MAX_REMOTE_PER_CALLER (the
    /// rest are counted) and its calls go when it does.
    #[test]
    fn calls_to_other_hosts_are_bounded_and_go_with_their_caller() {
        let socks = vec![listener(80, 1)];
        let procs = vec![proc_(5, "crawler", "/", &[1])];
        let mut d = Discovery::default();
        d.refresh(&Config::default(), &socks, &procs);
        let local = std::collections::HashSet::new();
        let keys: Vec<(ConnectKey, u64)> = (0..MAX_REMOTE_PER_CALLER + 50)
            .map(|i| {
                let mut daddr = [0u8; 16];
                daddr[..4].copy_from_slice(&[198, 51, (i / 256) as u8, (i % 256) as u8]);
                let k = ConnectKey {
                    tgid: 5,
                    dport: 443,
                    family: seer_common::AF_INET,
                    _pad: 0,
                    daddr,
                };
                (k, 1)
            })
            .collect();
        let new = d.add_connects(&keys, &local);
        assert_eq!(new.len(), MAX_REMOTE_PER_CALLER);
        assert_eq!(d.remote_edges.len(), MAX_REMOTE_PER_CALLER);
        assert_eq!(d.remote_capped, 50);
        // The crawler exits: its calls go with it.
        d.refresh(&Config::default(), &[], &[]);
        assert!(d.services.is_empty());
        assert!(d.remote_edges.is_empty());
    }
}
