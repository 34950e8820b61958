//! The cluster-wide tick: every host's samples placed on a shared grid of `tick_ms` slots
//! (slot = tick time / tick_ms), one [`ClusterTick`] per slot once it is closed. A host with no
//! message in a slot repeats its previous one, flagged stale; a host silent for `forget_ms` is
//! left out until it speaks again. The grid is `seer_store::grid`, the one the testbed's
//! training datasets join their hosts' traces with. Services get cluster-wide ids (one per host and agent id,
//! never reused), and each remote edge (caller -> address:port) is resolved to the service of
//! the host that has that address and listens on that port. Services are in the order the
//! model was trained on: the testbed's datasets' (`seer_store::graph::topo_order`).
use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
};

use seer_common::sample::{Sample, ServiceId};

use super::wire::HostTick;
use seer_store::{
    graph::topo_order,
    grid::{Grid, Late},
};

use crate::discovery::Service;

/// At most this many hosts are followed (more are refused, counted).
pub const MAX_HOSTS: usize = 10_000;
/// At most this many services in the whole cluster.
pub const MAX_SERVICES: usize = 100_000;
/// Messages further ahead of the central's clock than this many slots are refused (skew).
const MAX_AHEAD_SLOTS: u64 = 50;

/// A service of the cluster tick: which host's, and its id there.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    pub host: String,
    pub name: String,
    pub local_id: u32,
    /// Its host's sample is a repeat of an earlier slot's.
    pub stale: bool,
}

/// One slot of the whole cluster, back end first.
#[derive(Clone, Debug, Default)]
pub struct ClusterTick {
    pub slot: u64,
    pub ts_ms: u64,
    pub services: Vec<Service>,
    pub samples: Vec<Sample>,
    /// Cluster ids; local edges and resolved remote ones.
    pub edges: BTreeSet<(ServiceId, ServiceId)>,
    /// Parallel to `services`.
    pub members: Vec<Member>,
    pub hosts: usize,
    pub stale_hosts: Vec<String>,
    /// Remote edges no host's address and port explains (a callee outside the cluster).
    pub unresolved: usize,
}

/// Why a message was not taken.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Its slot is closed already (kept as the host's latest if it is newer).
    Late,
    /// More than MAX_AHEAD_SLOTS ahead of this clock.
    Ahead,
    /// Another tick length than the grid's.
    TickLength(u32),
    TooManyHosts,
    TooManyServices,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Late => write!(f, "late: its tick was assembled already"),
            Refused::Ahead => write!(
                f,
                "more than {MAX_AHEAD_SLOTS} ticks ahead of this host's clock (clock skew?)"
            ),
            Refused::TickLength(t) => write!(f, "{t} ms ticks, the cluster grid is another"),
            Refused::TooManyHosts => write!(f, "more than {MAX_HOSTS} hosts"),
            Refused::TooManyServices => write!(f, "more than {MAX_SERVICES} services"),
        }
    }
}

pub struct Assembler {
    /// One lane per host (`seer_store::grid`: the testbed's dataset join is the same code).
    grid: Grid<String, HostTick>,
    ids: HashMap<(String, u32), ServiceId>,
}

impl Assembler {
    pub fn new(tick_ms: u64, forget_ms: u64) -> Self {
        let tick_ms = tick_ms.max(1);
        Assembler {
            grid: Grid::new(tick_ms, Some((forget_ms / tick_ms).max(1))),
            ids: HashMap::new(),
        }
    }

    pub fn slot_of(&self, ts_ms: u64) -> u64 {
        self.grid.slot_of(ts_ms)
    }

    /// The last slot closed.
    pub fn closed(&self) -> Option<u64> {
        self.grid.closed()
    }

    /// Hosts heard from.
    pub fn hosts(&self) -> usize {
        self.grid.lanes()
    }

    /// Places a host's message on the grid. `now_ms`: this central's clock.
    pub fn insert(&mut self, t: HostTick, now_ms: u64) -> Result<(), Refused> {
        if u64::from(t.tick_ms) != self.grid.tick_ms() {
            return Err(Refused::TickLength(t.tick_ms));
        }
        if self.slot_of(t.ts_ms) > self.slot_of(now_ms) + MAX_AHEAD_SLOTS {
            return Err(Refused::Ahead);
        }
        if !self.grid.has_lane(&t.host) && self.grid.lanes() >= MAX_HOSTS {
            return Err(Refused::TooManyHosts);
        }
        for s in &t.services {
            let key = (t.host.clone(), s.id);
            if !self.ids.contains_key(&key) {
                if self.ids.len() >= MAX_SERVICES {
                    return Err(Refused::TooManyServices);
                }
                let id = ServiceId(self.ids.len() as u32);
                self.ids.insert(key, id);
            }
        }
        let (host, ts) = (t.host.clone(), t.ts_ms);
        self.grid.insert(host, ts, t).map_err(|Late| Refused::Late)
    }

    /// Closes the next slot of the grid.
    fn close_next(&mut self) -> Option<ClusterTick> {
        let tick_ms = self.grid.tick_ms();
        let (slot, cells) = self.grid.close_next()?;
        let ids = &self.ids;
        let mut stale_hosts = Vec::new();
        let mut services: Vec<Service> = Vec::new();
        let mut samples: Vec<Sample> = Vec::new();
        let mut members: Vec<Member> = Vec::new();
        let mut edges = BTreeSet::new();
        let mut listen: HashMap<SocketAddr, ServiceId> = HashMap::new();
        let ts_ms = slot * tick_ms;
        for c in &cells {
            let (host, t, stale) = (c.key.as_str(), c.value, c.repeated);
            if stale {
                stale_hosts.push(host.to_string());
            }
            let gid = |local: u32| ids.get(&(host.to_string(), local)).copied();
            for s in &t.services {
                let Some(id) = gid(s.id) else { continue };
                services.push(Service {
                    id,
                    name: format!("{host}/{}", s.name),
                    ports: s.ports.clone(),
                    ..Default::default()
                });
                samples.push(Sample {
                    service: id,
                    ts_ms,
                    values: s.values,
                });
                members.push(Member {
                    host: host.to_string(),
                    name: s.name.clone(),
                    local_id: s.id,
                    stale,
                });
                for a in &t.addrs {
                    for &p in &s.ports {
                        listen.insert(SocketAddr::new(*a, p), id);
                    }
                }
            }
            for &(a, b) in &t.edges {
                if let (Some(a), Some(b)) = (gid(a), gid(b)) {
                    edges.insert((a, b));
                }
            }
        }
        let mut unresolved = 0;
        for c in &cells {
            let host = c.key.as_str();
            for (a, to) in &c.value.remote_edges {
                match (
                    ids.get(&(host.to_string(), *a)),
                    listen.get(to).or_else(|| listen.get(&unmapped(to))),
                ) {
                    (Some(&a), Some(&b)) if a != b => {
                        edges.insert((a, b));
                    }
                    _ => unresolved += 1,
                }
            }
        }
        let hosts = cells.len();
        // The model's service order: the training datasets' (seer_store::graph::topo_order,
        // callees before callers, ties to the lower id), over the whole graph.
        let ids: Vec<ServiceId> = services.iter().map(|s| s.id).collect();
        let edge_list: Vec<(ServiceId, ServiceId)> = edges.iter().copied().collect();
        let mut rest: HashMap<ServiceId, (Service, Sample, Member)> = services
            .into_iter()
            .zip(samples)
            .zip(members)
            .map(|((s, smp), m)| (s.id, (s, smp, m)))
            .collect();
        let mut services = Vec::with_capacity(rest.len());
        let mut samples = Vec::with_capacity(rest.len());
        let mut members = Vec::with_capacity(rest.len());
        for id in topo_order(&ids, &edge_list) {
            if let Some((s, smp, m)) = rest.remove(&id) {
                services.push(s);
                samples.push(smp);
                members.push(m);
            }
        }
        Some(ClusterTick {
            slot,
            ts_ms,
            services,
            samples,
            edges,
            members,
            hosts,
            stale_hosts,
            unresolved,
        })
    }

    /// The newest slot up to which every slot after the last closed one has a message from
    /// every host still followed (not silent for `forget_ms`): those can be closed now, with
    /// no one to wait for. None: nothing to close early.
    pub fn complete_through(&self) -> Option<u64> {
        self.grid.complete_through()
    }

    /// Closes every slot up to `slot` in order (at most `max` of them, the newest; older ones
    /// are skipped); the ticks, oldest first.
    pub fn close_until(&mut self, slot: u64, max: usize) -> Vec<ClusterTick> {
        let Some(next) = self.grid.next_slot() else {
            return Vec::new();
        };
        if slot < next {
            return Vec::new();
        }
        self.grid
            .skip_to(slot.saturating_sub(max.saturating_sub(1) as u64));
        let mut out = Vec::new();
        while self.grid.next_slot().is_some_and(|n| n <= slot) {
            match self.close_next() {
                Some(t) => out.push(t),
                None => break,
            }
        }
        out
    }
}

/// An IPv4-mapped IPv6 address as plain IPv4 (and the other way), for matching listeners.
fn unmapped(a: &SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), a.port()),
            None => *a,
        },
        SocketAddr::V4(v4) => SocketAddr::new(v4.ip().to_ipv6_mapped().into(), a.port()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::wire::WireService;
    use seer_common::sample::CHANNELS;

    fn host(name: &str, addr: &str, ts: u64, svcs: &[(u32, &str, u16, f32)]) -> HostTick {
        HostTick {
            host: name.into(),
            ts_ms: ts,
            tick_ms: 100,
            seq: 0,
            addrs: vec![addr.parse().unwrap()],
            services: svcs
                .iter()
                .map(|&(id, n, port, v)| WireService {
                    id,
                    name: n.into(),
                    ports: vec![port],
                    values: [v; CHANNELS],
                })
                .collect(),
            edges: Vec::new(),
            remote_edges: Vec::new(),
        }
    }

    #[test]
    fn two_hosts_make_one_tick_with_the_remote_edge_resolved_back_end_first() {
        let mut a = Assembler::new(100, 1000);
        // Host "front": nginx (id 1) calls 198.51.100.1:11211 on host "back".
        let mut f = host("front", "198.51.100.2", 10_010, &[(1, "nginx", 80, 1.0)]);
        f.remote_edges = vec![(1, "198.51.100.1:11211".parse().unwrap())];
        let b = host(
            "back",
            "198.51.100.1",
            10_040,
            &[(1, "memcached", 11211, 2.0)],
        );
        a.insert(f, 10_050).unwrap();
        a.insert(b, 10_050).unwrap();
        let ticks = a.close_until(100, 10);
        assert_eq!(ticks.len(), 1);
        let t = &ticks[0];
        let names: Vec<&str> = t.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["back/memcached", "front/nginx"], "back end first");
        assert_eq!(t.members[0].host, "back");
        assert_eq!(t.samples[0].values[0], 2.0, "samples follow their services");
        assert_eq!(
            t.edges.iter().copied().collect::<Vec<_>>(),
            vec![(t.services[1].id, t.services[0].id)],
            "nginx -> memcached across hosts"
        );
        assert_eq!(t.unresolved, 0);
        assert!(t.stale_hosts.is_empty());
    }

    #[test]
    fn a_late_host_repeats_its_last_sample_flagged_then_is_forgotten() {
        let mut a = Assembler::new(100, 300);
        a.insert(host("h1", "10.0.0.1", 1000, &[(1, "x", 1, 1.0)]), 1000)
            .unwrap();
        a.insert(host("h2", "10.0.0.2", 1000, &[(1, "y", 2, 5.0)]), 1000)
            .unwrap();
        assert_eq!(a.close_until(10, 10).len(), 1);
        // Slot 11: only h1.
        a.insert(host("h1", "10.0.0.1", 1100, &[(1, "x", 1, 3.0)]), 1100)
            .unwrap();
        let t = a.close_until(11, 10).remove(0);
        assert_eq!(t.hosts, 2);
        assert_eq!(t.stale_hosts, vec!["h2".to_string()]);
        let y = t.members.iter().position(|m| m.host == "h2").unwrap();
        assert!(t.members[y].stale);
        assert_eq!(t.samples[y].values[0], 5.0, "h2's previous sample repeated");
        // A message for a closed slot is late, but becomes the host's latest.
        assert_eq!(
            a.insert(host("h2", "10.0.0.2", 1100, &[(1, "y", 2, 6.0)]), 1200),
            Err(Refused::Late)
        );
        let t = a.close_until(12, 10).remove(0);
        let y = t.members.iter().position(|m| m.host == "h2").unwrap();
        assert_eq!(t.samples[y].values[0], 6.0);
        // Silent past forget_ms (3 slots): gone from the tick.
        let t = a.close_until(16, 10).pop().unwrap();
        assert_eq!(t.hosts, 0);
        assert!(t.services.is_empty());
    }

    #[test]
    fn a_slot_every_host_has_sent_can_close_before_its_lag() {
        let mut a = Assembler::new(100, 500);
        a.insert(host("h1", "10.0.0.1", 1000, &[(1, "x", 1, 1.0)]), 1000)
            .unwrap();
        a.insert(host("h2", "10.0.0.2", 1010, &[(1, "y", 2, 1.0)]), 1010)
            .unwrap();
        assert_eq!(a.complete_through(), Some(10), "both hosts sent slot 10");
        a.close_until(10, 10);
        a.insert(host("h1", "10.0.0.1", 1100, &[(1, "x", 1, 1.0)]), 1100)
            .unwrap();
        assert_eq!(a.complete_through(), None, "h2 has not sent slot 11 yet");
        a.insert(host("h2", "10.0.0.2", 1190, &[(1, "y", 2, 1.0)]), 1190)
            .unwrap();
        a.insert(host("h1", "10.0.0.1", 1200, &[(1, "x", 1, 1.0)]), 1200)
            .unwrap();
        assert_eq!(a.complete_through(), Some(11), "slot 12 waits for h2");
        // A host silent past forget_ms is not waited for.
        a.close_until(12, 10);
        for ts in [1300, 1400, 1500, 1600, 1700, 1800] {
            a.insert(host("h1", "10.0.0.1", ts, &[(1, "x", 1, 1.0)]), ts)
                .unwrap();
        }
        assert_eq!(
            a.complete_through(),
            None,
            "h2 (last slot 11) is still waited for"
        );
        // Once the lag has closed slot 16, h2 is forgotten (5 slots silent): no more waiting.
        a.close_until(16, 10);
        assert_eq!(a.complete_through(), Some(18), "h2 forgotten after 5 slots");
    }

    #[test]
    fn ids_are_stable_per_host_and_agent_id_and_bad_messages_are_refused() {
        let mut a = Assembler::new(100, 1000);
        a.insert(host("h1", "10.0.0.1", 1000, &[(7, "x", 1, 1.0)]), 1000)
            .unwrap();
        a.insert(host("h2", "10.0.0.2", 1000, &[(7, "x", 1, 1.0)]), 1000)
            .unwrap();
        let t = a.close_until(10, 10).remove(0);
        assert_ne!(
            t.services[0].id, t.services[1].id,
            "same agent id, two hosts"
        );
        a.insert(host("h2", "10.0.0.2", 1100, &[(7, "x", 1, 1.0)]), 1100)
            .unwrap();
        let t2 = a.close_until(11, 10).remove(0);
        let id_of = |t: &ClusterTick, h: &str| {
            t.services[t.members.iter().position(|m| m.host == h).unwrap()].id
        };
        assert_eq!(id_of(&t, "h2"), id_of(&t2, "h2"));
        let mut other = host("h3", "10.0.0.3", 1200, &[]);
        other.tick_ms = 250;
        assert_eq!(a.insert(other, 1200), Err(Refused::TickLength(250)));
        assert_eq!(
            a.insert(host("h3", "10.0.0.3", 100_000, &[]), 1200),
            Err(Refused::Ahead)
        );
        // Catching up closes at most `max` slots, the newest.
        let ts = a.close_until(1000, 5);
        assert_eq!(ts.len(), 5);
        assert_eq!(ts[0].slot, 996);
    }
}
