//! The testbed's "hosts": one network namespace each, joined by veth pairs to a Linux bridge in a
//! namespace of its own, plus one namespace for the load generator. Nothing is created in the
//! caller's namespace, so deleting the namespaces removes every interface and qdisc.
use crate::{
    cmd::ip,
    error::Result,
    plan::{BRIDGE, CLIENT_BRIDGE_PORT, CLIENT_IF, CLIENT_IP, HOST_IF, Plan},
};

/// Creates the bridge namespace, every host namespace and the client namespace.
pub fn create(plan: &Plan) -> Result<()> {
    let br = plan.bridge_netns.as_str();
    ip(&["netns", "add", br])?;
    ip(&["-n", br, "link", "set", "lo", "up"])?;
    ip(&["-n", br, "link", "add", BRIDGE, "type", "bridge"])?;
    ip(&["-n", br, "link", "set", BRIDGE, "up"])?;
    for h in &plan.hosts {
        attach(br, &h.netns, HOST_IF, &h.bridge_port, &h.ip.to_string())?;
    }
    attach(
        br,
        &plan.client_netns,
        CLIENT_IF,
        CLIENT_BRIDGE_PORT,
        &CLIENT_IP.to_string(),
    )
}

/// A namespace `ns` with `ifname` (address `addr`/24) cabled to port `port` of the bridge.
fn attach(br: &str, ns: &str, ifname: &str, port: &str, addr: &str) -> Result<()> {
    ip(&["netns", "add", ns])?;
    ip(&[
        "link", "add", ifname, "netns", ns, "type", "veth", "peer", "name", port, "netns", br,
    ])?;
    ip(&[
        "-n",
        ns,
        "addr",
        "add",
        &format!("{addr}/24"),
        "dev",
        ifname,
    ])?;
    ip(&["-n", ns, "link", "set", "lo", "up"])?;
    ip(&["-n", ns, "link", "set", ifname, "up"])?;
    ip(&["-n", br, "link", "set", port, "master", BRIDGE])?;
    ip(&["-n", br, "link", "set", port, "up"])?;
    Ok(())
}

/// Network namespaces whose name starts with `prefix`.
pub fn find(prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect();
    v.sort();
    v
}

/// Kills every process in `ns` and deletes it (its interfaces and qdiscs go with it).
pub fn remove(ns: &str) -> Result<()> {
    if let Ok(pids) = ip(&["netns", "pids", ns]) {
        for p in pids.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            // SAFETY: kill has no memory preconditions; the pid runs inside a namespace that
            // the testbed created.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
    }
    ip(&["netns", "del", ns]).map(|_| ())
}
