//! One diagnosis end to end: pick the mode, find the culprit, observe it, decide, record.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use nix::sched::{CpuSet, sched_setaffinity};
use nix::unistd::Pid;

use super::{
    DiagnoseError, Mode, Resource,
    microbench::{Arena, CacheSizes, Placement},
    pmu::{self, KernelPerf, PerfSys},
    probe::{MemcacheProbe, Observer, Request, Window},
    record::{Evidence, Record},
    search::{self, ActionGate, Lab, SearchConfig},
    signals::{self, SignalSummary, Snapshot},
    target::{self, Target},
};

/// What `seer-agent diagnose` asks for.
#[derive(Clone, Debug)]
pub struct DiagnoseRequest {
    pub service: String,
    /// Force a mode (default: detected).
    pub mode: Option<Mode>,
    /// Port to probe (default: the service's lowest listening port).
    pub port: Option<u16>,
    pub probe: Request,
    pub search: SearchConfig,
    /// Where the network kernel sends (default: the discard port on the probed address).
    pub net_dest: Option<SocketAddr>,
    /// Run-queue wait ratio that counts as waiting for CPU (see [`cpu_evidence`]).
    pub cpu_wait: f64,
}

/// The real lab: microbenchmarks next to the culprit, a probe watching it, and the PMU-free
/// signals accumulated over quiet windows only (bursts would count our own contention).
struct RealLab<'a> {
    arena: Arena,
    probe: MemcacheProbe,
    target: &'a Target,
    quiet_signals: (Snapshot, Duration),
    cpu_wait: f64,
}

/// The culprit is short of CPU when its threads wait on a run queue for at least `wait` of
/// their runnable time, or CFS throttles it for 5% of the time; with how strongly (0..=1).
pub fn cpu_evidence(s: &SignalSummary, wait: f64) -> Option<(String, f64)> {
    if s.runq_wait_ratio >= wait {
        Some((
            format!(
                "its threads waited on a run queue {:.0}% of their runnable time (>= {:.0}%)",
                s.runq_wait_ratio * 100.0,
                wait * 100.0
            ),
            s.runq_wait_ratio,
        ))
    } else if s.throttled_ratio >= 0.05 {
        Some((
            format!(
                "CFS throttled it {:.0}% of the time",
                s.throttled_ratio * 100.0
            ),
            s.throttled_ratio.min(1.0),
        ))
    } else {
        None
    }
}

impl RealLab<'_> {
    /// A probe failure while the service exits is the service going away, not a probe bug.
    fn check(&self, r: Result<Window, DiagnoseError>) -> Result<Window, DiagnoseError> {
        match r {
            // Give the exit 200 ms to show in /proc.
            Err(DiagnoseError::Probe { source, .. })
                if (0..10).any(|_| {
                    std::thread::sleep(Duration::from_millis(20));
                    !self.target.alive()
                }) =>
            {
                Err(self.target.gone(format!("its probe failed: {source}")))
            }
            other => other,
        }
    }
}

fn add(a: &mut Snapshot, x: &Snapshot, y: &Snapshot) {
    let d = |p: u64, q: u64| q.saturating_sub(p);
    a.run_ns += d(x.run_ns, y.run_ns);
    a.wait_ns += d(x.wait_ns, y.wait_ns);
    a.throttled_ns += d(x.throttled_ns, y.throttled_ns);
    a.psi_cpu_us += d(x.psi_cpu_us, y.psi_cpu_us);
    a.psi_memory_us += d(x.psi_memory_us, y.psi_memory_us);
    a.psi_io_us += d(x.psi_io_us, y.psi_io_us);
    a.net_bytes += d(x.net_bytes, y.net_bytes);
    a.net_packets += d(x.net_packets, y.net_packets);
    a.net_drops += d(x.net_drops, y.net_drops);
    a.disk_io_ms += d(x.disk_io_ms, y.disk_io_ms);
}

impl Lab for RealLab<'_> {
    fn quiet(&mut self, dur: Duration) -> Result<Window, DiagnoseError> {
        let snap = || {
            signals::snapshot(
                Path::new("/proc"),
                &self.target.pids,
                self.target.cpu_cgroup_dir.as_deref(),
            )
        };
        let a = snap();
        let t0 = std::time::Instant::now();
        let w = self.probe.window(dur);
        let w = self.check(w)?;
        let b = snap();
        add(&mut self.quiet_signals.0, &a, &b);
        self.quiet_signals.1 += t0.elapsed();
        Ok(w)
    }

    fn inject(&mut self, r: Resource, i: f64, dur: Duration) -> Result<Window, DiagnoseError> {
        let w = self.arena.burst(r, i, dur, &mut self.probe).map(|x| x.0);
        self.check(w)
    }

    fn available(&self, r: Resource) -> bool {
        !self.arena.unavailable.iter().any(|(u, _)| *u == r)
    }

    fn cpu_evidence(&self) -> Option<(String, f64)> {
        let s = signals::summarize(
            &Snapshot::default(),
            &self.quiet_signals.0,
            self.quiet_signals.1,
        );
        cpu_evidence(&s, self.cpu_wait)
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The host's CPUs the culprit may not run on (all of them when it may run everywhere).
fn other_cpus(culprit: &[usize]) -> Vec<usize> {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    let v: Vec<usize> = (0..n).filter(|c| !culprit.contains(c)).collect();
    if v.is_empty() { culprit.to_vec() } else { v }
}

/// Pins the calling thread (the probe) to `cpus`.
fn pin(cpus: &[usize]) {
    let mut set = CpuSet::new();
    let mut any = false;
    for &c in cpus {
        any |= set.set(c).is_ok();
    }
    if any {
        let _ = sched_setaffinity(Pid::from_raw(0), &set);
    }
}

impl DiagnoseRequest {
    /// Defaults (as `seer-agent diagnose SERVICE` with no options).
    pub fn new(service: &str) -> Self {
        DiagnoseRequest {
            service: service.into(),
            mode: None,
            port: None,
            probe: Request::Version,
            search: SearchConfig::default(),
            net_dest: None,
            cpu_wait: 0.25,
        }
    }
}

/// Runs one diagnosis with the real kernel and no actuator gate beyond `gate`.
pub fn diagnose(req: &DiagnoseRequest, gate: &dyn ActionGate) -> Result<Record, DiagnoseError> {
    let t = target::find(&req.service)?;
    diagnose_target(req, &t, gate)
}

/// Runs one diagnosis of an already-found target (the agent passes what it discovered).
pub fn diagnose_target(
    req: &DiagnoseRequest,
    t: &Target,
    gate: &dyn ActionGate,
) -> Result<Record, DiagnoseError> {
    let det = pmu::detect(&KernelPerf);
    let mode = req.mode.unwrap_or(det.mode);
    log::info!(
        "diagnosing {} (pids {:?}, ports {:?}, cpus {:?}); mode {mode:?}: {}",
        t.name,
        t.pids,
        t.ports,
        t.cpus,
        det.reason
    );
    match mode {
        Mode::Private => private(t, &KernelPerf, req.search.burst * 10),
        Mode::PublicCloud => public(t, req, gate),
    }
}

fn private(t: &Target, sys: &dyn PerfSys, window: Duration) -> Result<Record, DiagnoseError> {
    let dir = t
        .perf_cgroup_dir()
        .ok_or_else(|| t.gone("its cgroup is not readable"))?;
    let a = signals::snapshot(Path::new("/proc"), &t.pids, t.cpu_cgroup_dir.as_deref());
    let c =
        pmu::count_cgroup(sys, &dir, &t.cpus, window).map_err(|source| DiagnoseError::Bench {
            what: "hardware counter",
            source,
        })?;
    let b = signals::snapshot(Path::new("/proc"), &t.pids, t.cpu_cgroup_dir.as_deref());
    let s = signals::summarize(&a, &b, window);
    let ranked = pmu::rank(&c, &s, pmu::Peaks { mem_bw: 10e9 });
    let (resource, score) = ranked.first().copied().unwrap_or((Resource::CpuInt, 0.0));
    let found = score >= 0.5;
    Ok(Record {
        service: t.name.clone(),
        ts_ms: now_ms(),
        mode: Mode::Private,
        resource: found.then_some(resource),
        confidence: if found { score.min(1.0) } else { 0.0 },
        reason: format!(
            "hardware counters over {} ms: top score {score:.2} ({})",
            window.as_millis(),
            resource.name()
        ),
        evidence: Evidence {
            signals: Some(s),
            pmu_scores: ranked,
            ..Evidence::default()
        },
    })
}

fn public(
    t: &Target,
    req: &DiagnoseRequest,
    gate: &dyn ActionGate,
) -> Result<Record, DiagnoseError> {
    let port = req
        .port
        .or_else(|| t.ports.first().copied())
        .ok_or_else(|| DiagnoseError::NoProbePort {
            name: t.name.clone(),
            why: "no listening TCP port".into(),
        })?;
    // The probe runs off the culprit's CPUs, so that the culprit's run-queue waits are the
    // host's doing and not the probe's.
    pin(&other_cpus(&t.cpus));
    let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
    let probe = MemcacheProbe::connect(v4, &req.probe).or_else(|e| {
        MemcacheProbe::connect(
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
            &req.probe,
        )
        .map_err(|_| e)
    })?;
    let placement = Placement {
        cpus: t.cpus.clone(),
        uncore_cpus: other_cpus(&t.cpus),
        disk_dir: if t.cwd == Path::new("/") {
            PathBuf::from("/tmp")
        } else {
            t.cwd.clone()
        },
        net_dest: req
            .net_dest
            .unwrap_or_else(|| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9)),
        memcap_bytes: 256 << 20,
    };
    let arena = Arena::new(&placement, CacheSizes::of_host())?;
    for (r, why) in &arena.unavailable {
        log::warn!("{} microbenchmark unavailable: {why}", r.name());
    }
    let mut lab = RealLab {
        arena,
        probe,
        target: t,
        quiet_signals: (Snapshot::default(), Duration::ZERO),
        cpu_wait: req.cpu_wait,
    };
    let o = search::search(&t.name, &mut lab, gate, &req.search)?;
    if !t.alive() {
        return Err(t.gone("it exited before the diagnosis finished"));
    }
    let sig: SignalSummary = signals::summarize(
        &Snapshot::default(),
        &lab.quiet_signals.0,
        lab.quiet_signals.1,
    );
    Ok(Record {
        service: t.name.clone(),
        ts_ms: now_ms(),
        mode: Mode::PublicCloud,
        resource: o.resource,
        confidence: o.confidence,
        reason: o.reason,
        evidence: Evidence {
            baseline_us: o.baseline_us,
            noise_us: o.noise_us,
            steps: o.steps,
            injected_ms: o.injected.as_secs_f64() * 1e3,
            budget_ms: req.search.budget.as_secs_f64() * 1e3,
            signals: Some(sig),
            pmu_scores: Vec::new(),
        },
    })
}
