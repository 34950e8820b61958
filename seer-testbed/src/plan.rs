//! The concrete layout of one run: which namespace, address, port, cgroup and files each service
//! gets. Pure: computing it touches nothing, so it is unit-tested without root.
use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddrV4},
    path::PathBuf,
};

use serde::{Deserialize, Serialize};

use crate::scenario::{Kind, Scenario};

/// Every namespace, cgroup and run directory of the testbed starts with this, so `down` finds
/// what a crashed run left behind.
pub const PREFIX: &str = "seer-tb-";
/// Where run directories live (configs, nginx temp files, control sockets, state).
pub const RUN_ROOT: &str = "/run/seer-testbed";
/// Address of the load generator's namespace; hosts get .10, .11, ...
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const HOST_BASE: u8 = 10;
pub const MAX_HOSTS: usize = 200;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostPlan {
    pub name: String,
    pub netns: String,
    pub ip: Ipv4Addr,
    /// The veth end inside the bridge namespace.
    pub bridge_port: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServicePlan {
    pub name: String,
    pub kind: Kind,
    pub host: String,
    pub netns: String,
    pub addr: SocketAddrV4,
    /// Relative cgroup path under each hierarchy: `seer-tb-<run>/<service>`.
    pub cgroup: String,
    /// rpc: control socket (blocking fault, status).
    pub ctl: PathBuf,
    /// The service's cpuset (`0`, `0-1`), set when the testbed comes up; None: not pinned.
    #[serde(default)]
    pub cpus: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub run: String,
    pub dir: PathBuf,
    pub bridge_netns: String,
    pub client_netns: String,
    pub hosts: Vec<HostPlan>,
    pub services: Vec<ServicePlan>,
    pub front: SocketAddrV4,
}

/// Interface name of a host's veth inside its own namespace.
pub const HOST_IF: &str = "tb0";
pub const CLIENT_IF: &str = "tb0";
/// The veth end of the client in the bridge namespace.
pub const CLIENT_BRIDGE_PORT: &str = "pc";
pub const BRIDGE: &str = "br0";

impl Plan {
    /// Lays out `sc` for run `run` (a short id, [a-z0-9]).
    pub fn new(sc: &Scenario, run: &str) -> Result<Plan, String> {
        let base = format!("{PREFIX}{run}");
        let mut hosts: BTreeMap<String, HostPlan> = BTreeMap::new();
        for s in &sc.services {
            let h = s.host.get_ref();
            if !hosts.contains_key(h) {
                let i = hosts.len();
                if i >= MAX_HOSTS {
                    return Err(format!("more than {MAX_HOSTS} hosts"));
                }
                hosts.insert(
                    h.clone(),
                    HostPlan {
                        name: h.clone(),
                        netns: format!("{base}-{h}"),
                        ip: Ipv4Addr::new(198, 51, 100, HOST_BASE + i as u8),
                        bridge_port: format!("p{i}"),
                    },
                );
            }
        }
        let dir = PathBuf::from(RUN_ROOT).join(&base);
        let mut services = Vec::new();
        let mut front = None;
        for (i, s) in sc.services.iter().enumerate() {
            let h = &hosts[s.host.get_ref()];
            let port = s.port.unwrap_or(match s.kind {
                Kind::Nginx => 8080,
                _ => 20000 + i as u16,
            });
            let name = s.name.get_ref().clone();
            let addr = SocketAddrV4::new(h.ip, port);
            if s.kind == Kind::Nginx {
                front = Some(addr);
            }
            services.push(ServicePlan {
                ctl: dir.join(format!("{name}.ctl")),
                cgroup: format!("{base}/{name}"),
                name,
                kind: s.kind,
                host: h.name.clone(),
                netns: h.netns.clone(),
                addr,
                cpus: None,
            });
        }
        let front = front.ok_or("no nginx front end")?;
        let mut hosts: Vec<HostPlan> = hosts.into_values().collect();
        hosts.sort_by_key(|h| h.ip);
        Ok(Plan {
            run: run.to_string(),
            dir,
            bridge_netns: format!("{base}.br"),
            client_netns: format!("{base}.load"),
            hosts,
            services,
            front,
        })
    }

    pub fn service(&self, name: &str) -> Option<&ServicePlan> {
        self.services.iter().find(|s| s.name == name)
    }

    pub fn host(&self, name: &str) -> Option<&HostPlan> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// The cgroup directory of the whole run (parent of every service's).
    pub fn cgroup_root(&self) -> String {
        format!("{PREFIX}{}", self.run)
    }
}

/// Each service's CPUs: its `cpus` (`"all"`: every available CPU), else `min(threads, n)`
/// consecutive CPUs starting round-robin by service index, so services are spread over the
/// machine and a CPU neighbour of one service contends with it on its own CPUs.
pub fn assign_cpus(sc: &Scenario, avail: &[usize]) -> Result<Vec<Vec<usize>>, String> {
    if avail.is_empty() {
        return Err("no CPU available for the services".into());
    }
    let mut out = Vec::new();
    for (i, s) in sc.services.iter().enumerate() {
        let cpus = match s.cpus.as_ref().map(|c| c.get_ref().as_str()) {
            Some("all") => avail.to_vec(),
            Some(list) => {
                let want = crate::scenario::parse_cpu_list(list)?;
                if let Some(c) = want.iter().find(|c| !avail.contains(c)) {
                    return Err(format!(
                        "service {:?}: CPU {c} is not available (this testbed has {})",
                        s.name.get_ref(),
                        crate::scenario::format_cpu_list(avail)
                    ));
                }
                want
            }
            None => {
                let n = s.threads.clamp(1, avail.len());
                let mut v: Vec<usize> = (0..n).map(|k| avail[(i + k) % avail.len()]).collect();
                v.sort_unstable();
                v
            }
        };
        out.push(cpus);
    }
    Ok(out)
}

/// A fresh run id: short enough for names, unique enough for one machine.
pub fn new_run_id() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!(
        "{:x}",
        (t as u64 ^ u64::from(std::process::id()) << 20) & 0xff_ffff
    )
}
