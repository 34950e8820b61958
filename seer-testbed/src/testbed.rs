//! Bringing a scenario's application up and down: namespaces, cgroups, servers, readiness.
//! A `Testbed` removes what it created when dropped (also on error or panic); `down_all` finds
//! what a killed run left behind by the `seer-tb-` prefix.
use std::{
    path::{Path, PathBuf},
    process::Child,
    time::{Duration, Instant},
};

use crate::{
    cgroup::Layout,
    cmd::{self, ip},
    error::{Error, Result},
    netns,
    plan::{PREFIX, Plan, RUN_ROOT},
    scenario::{Kind, Scenario},
    servers, signals,
};

/// The helper binaries, normally beside `seer-testbed`.
#[derive(Debug, Clone)]
pub struct Bins {
    pub svc: PathBuf,
    pub load: PathBuf,
}

impl Bins {
    pub fn beside(exe: &Path) -> Result<Bins> {
        let dir = exe.parent().unwrap_or(Path::new("."));
        let b = Bins {
            svc: dir.join("seer-testbed-svc"),
            load: dir.join("seer-testbed-load"),
        };
        for p in [&b.svc, &b.load] {
            if !p.is_file() {
                return Err(Error::Setup(format!(
                    "{} not found: build it with `cargo build -p seer-testbed`",
                    p.display()
                )));
            }
        }
        Ok(b)
    }
}

pub struct Testbed {
    pub plan: Plan,
    pub layout: Layout,
    children: Vec<(String, Child)>,
    detached: bool,
}

/// Checks root and the external programs this scenario needs.
pub fn preflight(sc: &Scenario) -> Result<()> {
    if !cmd::is_root() {
        return Err(Error::Setup(
            "the testbed needs root (network namespaces, cgroups, tc): run it with sudo".into(),
        ));
    }
    let mut need = vec!["ip", "tc", "ss"];
    for s in &sc.services {
        match s.kind {
            Kind::Nginx => need.push("nginx"),
            Kind::Memcached => need.push("memcached"),
            Kind::Redis => need.push("redis-server"),
            Kind::Rpc => {}
        }
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut missing: Vec<&str> = need
        .into_iter()
        .filter(|p| !std::env::split_paths(&path).any(|d| d.join(p).is_file()))
        .collect();
    missing.dedup();
    if !missing.is_empty() {
        return Err(Error::Setup(format!(
            "missing programs {missing:?}: run `cargo xtask setup` (Debian: iproute2 nginx memcached redis-server)"
        )));
    }
    Ok(())
}

impl Testbed {
    /// Creates everything and waits until every service listens. `die_with_parent`: the
    /// servers die with this process (`run`); otherwise they outlive it (`up`).
    pub fn up(sc: &Scenario, run: &str, bins: &Bins, die_with_parent: bool) -> Result<Testbed> {
        preflight(sc)?;
        let plan = Plan::new(sc, run).map_err(Error::Setup)?;
        let layout = Layout::detect()?;
        let mut tb = Testbed {
            plan,
            layout,
            children: Vec::new(),
            detached: false,
        };
        std::fs::create_dir_all(&tb.plan.dir)
            .map_err(|e| Error::io("cannot create the run directory", &tb.plan.dir, e))?;
        progress(&format!(
            "{} services on {} hosts, cgroup {}, run dir {}",
            sc.services.len(),
            tb.plan.hosts.len(),
            tb.layout.name(),
            tb.plan.dir.display()
        ));
        netns::create(&tb.plan)?;
        for s in &tb.plan.services {
            tb.layout.create(&s.cgroup)?;
        }
        for extra in ["load", "agent"] {
            tb.layout
                .create(&format!("{}/{extra}", tb.plan.cgroup_root()))?;
        }
        tb.pin(sc)?;
        // Back ends first, then the logic tier, then the front end.
        let order = [Kind::Memcached, Kind::Redis, Kind::Rpc, Kind::Nginx];
        for k in order {
            for s in sc.services.iter().filter(|s| s.kind == k) {
                interrupted()?;
                let c = servers::start(sc, &tb.plan, &tb.layout, s, &bins.svc, die_with_parent)?;
                tb.children.push((s.name.get_ref().clone(), c));
            }
        }
        tb.wait_listening(Duration::from_secs(15))?;
        let topo = serde_json::to_string_pretty(&tb.plan).map_err(|e| Error::Json {
            what: "topology",
            source: e,
        })?;
        let p = tb.plan.dir.join("topology.json");
        std::fs::write(&p, topo).map_err(|e| Error::io("cannot write", p, e))?;
        progress(&format!("up: front end http://{}/", tb.plan.front));
        Ok(tb)
    }

    /// Gives every service its cpuset (see `plan::assign_cpus`) before any of them starts.
    /// Without a cpuset controller, explicit `cpus` are an error and the default spreading is
    /// skipped (said in the progress output).
    fn pin(&mut self, sc: &Scenario) -> Result<()> {
        let root = self.plan.cgroup_root();
        let explicit = sc.services.iter().any(|s| s.cpus.is_some());
        let Some(avail) = self
            .layout
            .cpus(&root)
            .filter(|_| self.layout.has_cpuset(&root))
        else {
            if explicit {
                return Err(Error::Setup(
                    "the scenario pins services (`cpus`) but this host has no cpuset controller"
                        .into(),
                ));
            }
            progress("cpuset: no cpuset controller here; services are not pinned");
            return Ok(());
        };
        let cpus = crate::plan::assign_cpus(sc, &avail).map_err(Error::Setup)?;
        let mut line = Vec::new();
        for (sp, c) in self.plan.services.iter_mut().zip(&cpus) {
            self.layout.set_cpus(&sp.cgroup, c)?;
            let list = crate::scenario::format_cpu_list(c);
            line.push(format!("{}={list}", sp.name));
            sp.cpus = Some(list);
        }
        progress(&format!(
            "cpuset: CPUs {} -> {}",
            crate::scenario::format_cpu_list(&avail),
            line.join(" ")
        ));
        Ok(())
    }

    fn wait_listening(&mut self, timeout: Duration) -> Result<()> {
        let t0 = Instant::now();
        loop {
            interrupted()?;
            for (name, c) in &mut self.children {
                if let Ok(Some(st)) = c.try_wait() {
                    return Err(Error::Setup(format!(
                        "{name} exited at start ({st}); see {}",
                        self.plan.dir.join(format!("{name}.log")).display()
                    )));
                }
            }
            let mut waiting = Vec::new();
            for h in &self.plan.hosts {
                let l = ip(&["netns", "exec", &h.netns, "ss", "-ltnH"])?;
                for s in self.plan.services.iter().filter(|s| s.host == h.name) {
                    if !l.contains(&format!("{}", s.addr)) {
                        waiting.push(s.name.clone());
                    }
                }
            }
            if waiting.is_empty() {
                return Ok(());
            }
            if t0.elapsed() > timeout {
                return Err(Error::Setup(format!(
                    "not listening after {timeout:?}: {waiting:?}; logs in {}",
                    self.plan.dir.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Leaves everything running when dropped (`up`); `down` removes it later.
    pub fn detach(mut self) {
        self.detached = true;
    }

    /// The child processes of the servers, by service name.
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.children
            .iter()
            .map(|(n, c)| (n.clone(), c.id()))
            .collect()
    }

    /// Kills the servers, removes namespaces, cgroups and the run directory.
    pub fn down(&mut self) -> Result<()> {
        for (_, c) in &mut self.children {
            let _ = c.kill();
        }
        for (_, c) in &mut self.children {
            let _ = c.wait();
        }
        self.children.clear();
        let prefix = format!("{PREFIX}{}", self.plan.run);
        remove_matching(&self.layout, &prefix)
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if !self.detached
            && let Err(e) = self.down()
        {
            eprintln!("[testbed] teardown: {e}; run `cargo xtask testbed down`");
        }
    }
}

fn interrupted() -> Result<()> {
    if signals::stopping() {
        Err(Error::Setup("interrupted".into()))
    } else {
        Ok(())
    }
}

pub fn progress(msg: &str) {
    println!("[testbed] {msg}");
}

/// Whether `name` (a namespace, cgroup or run directory) belongs to `prefix`: every testbed's
/// for [`PREFIX`] itself, else exactly run `seer-tb-ID`'s (`seer-tb-ID`, `seer-tb-ID-host`,
/// `seer-tb-ID.br`), never another run whose id merely starts with ID.
pub fn belongs(name: &str, prefix: &str) -> bool {
    if prefix == PREFIX {
        return name.starts_with(PREFIX);
    }
    name.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('-') || rest.starts_with('.'))
}

/// Removes namespaces (and their processes, interfaces, qdiscs), cgroups (and their processes),
/// swap files of memory-capacity faults and run directories that [`belongs`] to `prefix`.
fn remove_matching(layout: &Layout, prefix: &str) -> Result<()> {
    let mut first_err = None;
    for ns in netns::find(prefix)
        .into_iter()
        .filter(|n| belongs(n, prefix))
    {
        if let Err(e) = netns::remove(&ns) {
            first_err.get_or_insert(e);
        }
    }
    for cg in layout
        .find(prefix)
        .into_iter()
        .filter(|c| belongs(c, prefix))
    {
        if let Err(e) = layout.remove_tree(&cg) {
            first_err.get_or_insert(e);
        }
    }
    for f in crate::swap::leftovers(prefix) {
        if let Err(e) = crate::swap::off(&f) {
            first_err.get_or_insert(e);
        }
    }
    for d in run_dirs(prefix) {
        if let Err(e) = std::fs::remove_dir_all(&d) {
            first_err.get_or_insert(Error::io("cannot remove", d, e));
        }
    }
    first_err.map_or(Ok(()), Err)
}

fn run_dirs(prefix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(RUN_ROOT)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| belongs(&e.file_name().to_string_lossy(), prefix))
        .map(|e| e.path())
        .collect()
}

/// Everything any testbed run left: namespaces, cgroups, swap files, run directories.
pub fn leftovers() -> Result<Vec<String>> {
    let layout = Layout::detect()?;
    let mut v: Vec<String> = netns::find(PREFIX)
        .into_iter()
        .map(|n| format!("netns {n}"))
        .collect();
    v.extend(
        layout
            .find(PREFIX)
            .into_iter()
            .map(|c| format!("cgroup {c}")),
    );
    v.extend(
        crate::swap::leftovers(PREFIX)
            .into_iter()
            .map(|f| format!("swap {}", f.display())),
    );
    v.extend(
        run_dirs(PREFIX)
            .into_iter()
            .map(|d| format!("dir {}", d.display())),
    );
    Ok(v)
}

/// `down`: removes every testbed's leftovers (namespaces, processes, cgroups, run dirs).
pub fn down_all() -> Result<Vec<String>> {
    down_matching(PREFIX)
}

/// `down --run ID`: removes one run's leftovers only (other testbeds keep running).
pub fn down_run(run: &str) -> Result<Vec<String>> {
    if run.is_empty() || !run.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(Error::Setup(format!(
            "bad run id {run:?} (the hex id in seer-tb-ID)"
        )));
    }
    down_matching(&format!("{PREFIX}{run}"))
}

fn down_matching(prefix: &str) -> Result<Vec<String>> {
    if !cmd::is_root() {
        return Err(Error::Setup("`down` needs root".into()));
    }
    let found = leftovers()?
        .into_iter()
        .filter(|l| l.split([' ', '/']).any(|w| belongs(w, prefix)))
        .collect();
    let layout = Layout::detect()?;
    remove_matching(&layout, prefix)?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::belongs;

    #[test]
    fn down_of_one_run_spares_the_others() {
        assert!(belongs("seer-tb-ab12", "seer-tb-ab12"));
        assert!(belongs("seer-tb-ab12-app1", "seer-tb-ab12"));
        assert!(belongs("seer-tb-ab12.load", "seer-tb-ab12"));
        assert!(!belongs("seer-tb-ab123-app1", "seer-tb-ab12"));
        assert!(!belongs("seer-tb-ab123", "seer-tb-ab12"));
        assert!(belongs("seer-tb-ab123", "seer-tb-"));
        assert!(!belongs("other", "seer-tb-"));
    }
}
