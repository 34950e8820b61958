//! One diagnosis end to end: pick the mode, find the culprit, observe it, decide, record.
use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use super::{
    DiagnoseError, Method, Resource, bandwidth, llc,
    microbench::{Arena, CacheSizes, DISK_FALLBACK, Placement},
    pmu::{self, KernelPerf, PerfSys},
    probe::{self as probe_mod, Observer, Probe, Protocol, Request, Window},
    record::{Evidence, ProbeInfo, Record},
    search::{self, ActionGate, Lab, SearchConfig},
    signals::{self, SignalSummary, Snapshot},
    target::{self, Target},
};

/// What `seer-agent diagnose` asks for.
#[derive(Clone, Debug)]
pub struct DiagnoseRequest {
    pub service: String,
    /// Force a mode (default: detected).
    pub mode: Option<Method>,
    /// Port to probe (default: the service's lowest listening port).
    pub port: Option<u16>,
    pub probe: Request,
    /// Protocol the probe speaks (default: from the process name, the port, or by asking).
    pub protocol: Option<Protocol>,
    /// Path of the HTTP probe's `GET`.
    pub http_path: String,
    /// Also read the memory canary and record it (for calibration; not decided on).
    pub canary: bool,
    pub search: SearchConfig,
    /// Where the network kernel sends (default: the discard port on the probed address).
    pub net_dest: Option<SocketAddr>,
    /// Run-queue wait / runnable time that counts as short of CPU (see [`cpu_evidence`]).
    pub cpu_wait: f64,
    /// When nothing else decides, read memory latency on the culprit's CPU ([`bandwidth`]).
    pub memory_reading: bool,
    /// When nothing else decides (memory bandwidth included), read the LLC ([`llc`]); off by
    /// default (it could not be evaluated on the host it was built on: module doc).
    pub llc_reading: bool,
}

/// The real lab: microbenchmarks next to the culprit, a probe watching it, and the PMU-free
/// signals accumulated over quiet windows only (bursts would count our own contention).
struct RealLab<'a> {
    /// The microbenchmarks' threads and buffers, set up before the first injection only
    /// ([`Lab::prepare`]): a shortage the signals show alone is decided without them.
    arena: Option<Arena>,
    placement: Placement,
    sizes: CacheSizes,
    probe: Probe,
    target: &'a Target,
    quiet_signals: (Snapshot, Duration),
    /// Per quiet window in which it ran: run-queue wait ratio and wait per time slice (us).
    quiet_waits: Vec<(f64, f64)>,
    cpu_wait: f64,
}

/// The quiet windows' signals, with the run-queue figures the medians over the windows
/// (where it ran) rather than their sum: one stall of the whole VM in one 10 ms window (a
/// hypervisor that deschedules an idle vCPU, someone else's burst) must not read as a
/// shortage; a CPU hog is there in every window.
fn quiet_summary(total: &Snapshot, dur: Duration, waits: &[(f64, f64)]) -> SignalSummary {
    let mut s = signals::summarize(&Snapshot::default(), total, dur);
    if waits.len() >= 3 {
        s.runq_wait_ratio = crate::util::median_vec(waits.iter().map(|w| w.0).collect());
        s.runq_wait_per_slice_us = crate::util::median_vec(waits.iter().map(|w| w.1).collect());
    }
    s
}

/// Run-queue wait per time slice that matters (us): 5x an idle host's wake-up (~3 us). It was
/// 20 until a CPU hog beside memcached measured 19.3 us at 45% of runnable time (a real
/// shortage; usually 26-59 us).
pub const SLICE_WAIT_US: f64 = 15.0;

/// The culprit is short of CPU when CFS throttles it for 5% of the time or in at least half
/// of two or more quota periods ([`HELD_PERIODS`]), or when its threads
/// wait on a run queue for at least `wait` of their runnable time (wait / (wait + run)), and
/// that wait matters to its requests: at least [`SLICE_WAIT_US`] per time slice (each wake-up
/// to serve requests is one; an idle host wakes a thread in a few us) and at least 15% of the
/// probe's
/// quiet median latency (a service slowed by a blocking call or a slow callee also waits for a
/// CPU after each wake-up, but that wait is a sliver of its latency). Returns why and how
/// strongly (0..=1).
pub fn cpu_evidence(s: &SignalSummary, baseline_us: f64, wait: f64) -> Option<(String, f64)> {
    let w = s.runq_wait_per_slice_us;
    let of_latency = if baseline_us > 0.0 {
        w / baseline_us
    } else {
        0.0
    };
    if s.throttled_ratio >= 0.05 {
        Some((
            format!(
                "CFS throttled it {:.0}% of the time",
                s.throttled_ratio * 100.0
            ),
            s.throttled_ratio.min(1.0),
        ))
    } else if held_by_quota(s) {
        Some((held_periods(s), s.throttled_periods_ratio.min(1.0)))
    } else if s.runq_wait_ratio >= wait && w >= SLICE_WAIT_US && of_latency >= 0.15 {
        Some((
            format!(
                "its threads waited on a run queue {:.0}% of their runnable time (>= {:.0}%), {w:.0} us per time slice, {:.0}% of its {baseline_us:.0} us request latency",
                s.runq_wait_ratio * 100.0,
                wait * 100.0,
                of_latency * 100.0,
            ),
            s.runq_wait_ratio,
        ))
    } else {
        None
    }
}

/// Share of its CFS quota periods in which the quota must have run out for a culprit to be
/// held back by it (with at least two periods seen).
pub const HELD_PERIODS: f64 = 0.5;

fn held_by_quota(s: &SignalSummary) -> bool {
    s.quota_periods >= 2.0 && s.throttled_periods_ratio >= HELD_PERIODS
}

/// "its CFS quota ran out in N of M periods".
fn held_periods(s: &SignalSummary) -> String {
    format!(
        "its CFS quota ran out in {:.0} of {:.0} periods",
        s.throttled_periods_ratio * s.quota_periods,
        s.quota_periods
    )
}

/// How long a culprit with a CFS quota has its cgroup read before any probe (a few periods
/// of the default 100 ms).
pub const QUOTA_LOOK: Duration = Duration::from_millis(250);

/// Before any probe: a culprit whose cgroup has a CFS quota that ran out in most of the
/// periods of a [`QUOTA_LOOK`] is short of CPU, and nothing it would measure could say more;
/// decided in a quarter of a second, with no request sent and nothing injected. (The search's
/// quiet windows reach the same verdict, but only after enough probe requests: seconds when
/// the culprit answers slowly, which is when it matters.) None when it has no quota, or the
/// quota did not hold it back.
fn held_back_by_its_quota(t: &Target) -> Option<Record> {
    let dir = t.cpu_cgroup_dir.as_deref()?;
    if !signals::has_cfs_quota(dir) {
        return None;
    }
    let scope = t.scope();
    let a = signals::snapshot_scope(Path::new("/proc"), &scope);
    let t0 = std::time::Instant::now();
    std::thread::sleep(QUOTA_LOOK);
    let b = signals::snapshot_scope(Path::new("/proc"), &scope);
    let s = signals::summarize(&a, &b, t0.elapsed());
    if !held_by_quota(&s) {
        log::debug!("diagnose: {}: {}: probing", t.name, held_periods(&s));
        return None;
    }
    Some(Record {
        service: t.name.clone(),
        ts_ms: crate::util::now_ms(),
        mode: Method::PublicCloud,
        resource: Some(Resource::CpuInt),
        confidence: s.throttled_periods_ratio.min(1.0),
        reason: format!(
            "short of CPU, read from its cgroup before any probe ({} ms): {}",
            t0.elapsed().as_millis(),
            held_periods(&s)
        ),
        evidence: Evidence {
            signals: Some(s),
            ..Evidence::default()
        },
    })
}

/// Shortages the PMU-free signals show directly, most specific first: a network cap (replies
/// wait in send queues), memory capacity (paging at its cgroup's limit, many major faults, or
/// memory pressure), disk (threads of its cgroup blocked on I/O while it moves data to
/// storage), then CPU ([`cpu_evidence`]). Memory comes before disk because paging is I/O: a
/// cgroup short of memory has threads blocked reading swap, while a disk shortage does not
/// make it fault. I/O and memory stalls come before CPU because they make the culprit's
/// neighbours busy too (the kernel copies, reclaims, faults): run-queue waits follow them,
/// while a CPU shortage does not make threads block on a disk.
pub fn passive_evidence(
    s: &SignalSummary,
    baseline_us: f64,
    cpu_share: f64,
) -> Option<(Resource, String, f64)> {
    if s.send_queue_bytes >= 8192.0 && s.send_queue_delay_ms >= 10.0 {
        return Some((
            Resource::Network,
            format!(
                "{:.0} KiB waited in its connections' send queues to other hosts, {:.0} ms of sending at its rate",
                s.send_queue_bytes / 1024.0,
                s.send_queue_delay_ms
            ),
            (s.send_queue_delay_ms / 100.0).min(1.0),
        ));
    }
    // A cgroup at its limit is normal (page cache fills it); it is short when it pages.
    let at_limit = s.mem_used_ratio >= 0.9 && s.cg_majflt_per_s >= 5.0;
    if at_limit || s.cg_majflt_per_s >= 50.0 || s.psi_memory_some >= 0.05 {
        return Some((
            Resource::MemoryCapacity,
            format!(
                "its memory cgroup is at {:.0}% of its limit, {:.0} major faults/s, PSI memory {:.0}%",
                s.mem_used_ratio * 100.0,
                s.cg_majflt_per_s,
                s.psi_memory_some * 100.0
            ),
            s.mem_used_ratio
                .max(s.psi_memory_some * 10.0)
                .clamp(0.5, 1.0),
        ));
    }
    if s.cg_blocked_threads >= 0.1 && (s.cg_io_bytes_per_s >= 1e6 || s.disk_busy >= 0.1) {
        return Some((
            Resource::Disk,
            format!(
                "{:.2} threads of its cgroup blocked on I/O on average while it moved {:.0} MB/s to or from storage (disk busy {:.0}%, PSI io {:.0}%)",
                s.cg_blocked_threads,
                s.cg_io_bytes_per_s / 1e6,
                s.disk_busy * 100.0,
                s.psi_io_some * 100.0
            ),
            (s.cg_blocked_threads * 2.0).min(1.0),
        ));
    }
    cpu_evidence(s, baseline_us, cpu_share).map(|(why, st)| (Resource::CpuInt, why, st))
}

impl RealLab<'_> {
    /// The kernels (set up at the first call, [`Lab::prepare`]) and the probe that watches
    /// them.
    fn kernels(&mut self) -> Result<(&mut Arena, &mut Probe), DiagnoseError> {
        self.prepare()?;
        let arena = self.arena.as_mut().ok_or_else(|| {
            DiagnoseError::BadRequest("the microbenchmarks are not set up".into())
        })?;
        Ok((arena, &mut self.probe))
    }

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
    a.periods += d(x.periods, y.periods);
    a.throttled_periods += d(x.throttled_periods, y.throttled_periods);
    a.psi_cpu_us += d(x.psi_cpu_us, y.psi_cpu_us);
    a.psi_memory_us += d(x.psi_memory_us, y.psi_memory_us);
    a.psi_io_us += d(x.psi_io_us, y.psi_io_us);
    a.net_bytes += d(x.net_bytes, y.net_bytes);
    a.net_packets += d(x.net_packets, y.net_packets);
    a.net_drops += d(x.net_drops, y.net_drops);
    a.disk_io_ms += d(x.disk_io_ms, y.disk_io_ms);
    a.slices += d(x.slices, y.slices);
    a.cg_run_ns += d(x.cg_run_ns, y.cg_run_ns);
    a.cg_wait_ns += d(x.cg_wait_ns, y.cg_wait_ns);
    a.cg_slices += d(x.cg_slices, y.cg_slices);
    a.cg_io_bytes += d(x.cg_io_bytes, y.cg_io_bytes);
    a.cg_majflt += d(x.cg_majflt, y.cg_majflt);
    a.net_tx_bytes += d(x.net_tx_bytes, y.net_tx_bytes);
    // Gauges: both readings count.
    a.gauges += x.gauges + y.gauges;
    a.cg_blocked += x.cg_blocked + y.cg_blocked;
    a.send_queue_bytes += x.send_queue_bytes + y.send_queue_bytes;
    a.mem_used_permille += x.mem_used_permille + y.mem_used_permille;
}

impl Lab for RealLab<'_> {
    fn quiet(&mut self, dur: Duration) -> Result<Window, DiagnoseError> {
        let scope = self.target.scope();
        let snap = || signals::snapshot_scope(Path::new("/proc"), &scope);
        let a = snap();
        let t0 = std::time::Instant::now();
        let w = self.probe.window(dur);
        let w = self.check(w)?;
        let b = snap();
        add(&mut self.quiet_signals.0, &a, &b);
        let el = t0.elapsed();
        self.quiet_signals.1 += el;
        if b.slices > a.slices {
            let one = signals::summarize(&a, &b, el);
            self.quiet_waits
                .push((one.runq_wait_ratio, one.runq_wait_per_slice_us));
        }
        Ok(w)
    }

    fn prepare(&mut self) -> Result<(), DiagnoseError> {
        if self.arena.is_none() {
            let t0 = std::time::Instant::now();
            let arena = Arena::new(&self.placement, self.sizes)?;
            for (r, why) in &arena.unavailable {
                log::warn!("{} microbenchmark unavailable: {why}", r.name());
            }
            log::debug!(
                "diagnose: microbenchmarks set up in {} ms",
                t0.elapsed().as_millis()
            );
            self.arena = Some(arena);
        }
        Ok(())
    }

    fn inject(&mut self, r: Resource, i: f64, dur: Duration) -> Result<Window, DiagnoseError> {
        let (arena, probe) = self.kernels()?;
        let w = arena.burst(r, i, dur, probe).map(|x| x.0);
        self.check(w)
    }

    fn inject_uncore_reference(&mut self, i: f64, dur: Duration) -> Result<Window, DiagnoseError> {
        let (arena, probe) = self.kernels()?;
        let w = arena
            .burst_on(Resource::CpuInt, true, i, dur, probe)
            .map(|x| x.0);
        self.check(w)
    }

    fn available(&self, r: Resource) -> bool {
        self.arena
            .as_ref()
            .is_none_or(|a| !a.unavailable.iter().any(|(u, _)| *u == r))
    }

    fn passive(&self, baseline_us: f64) -> Option<(Resource, String, f64)> {
        let s = quiet_summary(
            &self.quiet_signals.0,
            self.quiet_signals.1,
            &self.quiet_waits,
        );
        passive_evidence(&s, baseline_us, self.cpu_wait)
    }

    fn observed(&self) -> Duration {
        self.quiet_signals.1
    }
}

/// The host's online CPUs (not this thread's affinity: the probe pins itself).
pub fn host_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(1)
}

/// The host's CPUs the culprit may not run on (all of them when it may run everywhere).
/// Counted from the host, not from `available_parallelism`, which follows the calling
/// thread's affinity: once the probe has pinned itself to the other CPUs, that would leave
/// the culprit's CPUs out of the count and put the "other CPUs" kernels on the culprit's.
fn other_cpus(culprit: &[usize]) -> Vec<usize> {
    let n = host_cpus();
    let v: Vec<usize> = (0..n).filter(|c| !culprit.contains(c)).collect();
    if v.is_empty() { culprit.to_vec() } else { v }
}

impl DiagnoseRequest {
    /// Defaults (as `seer-agent diagnose SERVICE` with no options).
    pub fn new(service: &str) -> Self {
        DiagnoseRequest {
            service: service.into(),
            mode: None,
            port: None,
            probe: Request::Version,
            protocol: None,
            http_path: "/".into(),
            canary: false,
            search: SearchConfig::default(),
            net_dest: None,
            cpu_wait: 0.4,
            memory_reading: true,
            llc_reading: false,
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
        Method::Private => with_counters(t, &KernelPerf, req.search.burst * 10),
        Method::PublicCloud => with_microbenchmarks(t, req, gate),
    }
}

fn with_counters(t: &Target, sys: &dyn PerfSys, window: Duration) -> Result<Record, DiagnoseError> {
    let dir = t
        .perf_cgroup_dir()
        .ok_or_else(|| t.gone("its cgroup is not readable"))?;
    let scope = t.scope();
    let a = signals::snapshot_scope(Path::new("/proc"), &scope);
    let c =
        pmu::count_cgroup(sys, &dir, &t.cpus, window).map_err(|source| DiagnoseError::Bench {
            what: "hardware counter",
            source,
        })?;
    let b = signals::snapshot_scope(Path::new("/proc"), &scope);
    let s = signals::summarize(&a, &b, window);
    let ranked = pmu::rank(&c, &s, pmu::Peaks { mem_bw: 10e9 });
    let (resource, score) = ranked.first().copied().unwrap_or((Resource::CpuInt, 0.0));
    let found = score >= 0.5;
    Ok(Record {
        service: t.name.clone(),
        ts_ms: crate::util::now_ms(),
        mode: Method::Private,
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

/// Where to probe: the listening address on `port` (default: the lowest), loopback where it
/// listens on any address.
fn probe_addr(t: &Target, port: Option<u16>) -> Result<SocketAddr, DiagnoseError> {
    let port =
        port.or_else(|| t.ports.first().copied())
            .ok_or_else(|| DiagnoseError::NoProbePort {
                name: t.name.clone(),
                why: "no listening TCP port".into(),
            })?;
    Ok(t.addrs.iter().find(|a| a.port() == port).map_or_else(
        || SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
        |a| target::reach(*a),
    ))
}

fn with_microbenchmarks(
    t: &Target,
    req: &DiagnoseRequest,
    gate: &dyn ActionGate,
) -> Result<Record, DiagnoseError> {
    if let Some(r) = held_back_by_its_quota(t) {
        log::info!("{}: {}", t.name, r.reason);
        return Ok(r);
    }
    let addr = probe_addr(t, req.port)?;
    // The probe runs off the culprit's CPUs, so that the culprit's run-queue waits are the
    // host's doing and not the probe's; at the highest nice priority (best effort: needs
    // CAP_SYS_NICE), so that it runs as soon as a reply arrives even where an uncore kernel
    // shares its CPU (a two-CPU host): its latency is the culprit's, not its own scheduling.
    // The kernels' threads go back to nice 0 (`microbench::run`).
    super::pin_thread(&other_cpus(&t.cpus));
    if let Err(e) = super::nice_thread(-20) {
        log::debug!("probe priority unchanged: {e}");
    }
    let (protocol, chosen) = match req.protocol {
        Some(p) => (p, "given"),
        None => match probe_mod::detect(&t.comm, addr.port()) {
            Some(p) => (p, "from its name and port"),
            None => (probe_mod::sniff(addr)?, "by asking"),
        },
    };
    log::info!(
        "probing {addr} with the {} protocol ({chosen})",
        protocol.name()
    );
    let probe = Probe::connect(addr, protocol, &req.probe, &req.http_path)?;
    let placement = Placement {
        cpus: t.cpus.clone(),
        uncore_cpus: other_cpus(&t.cpus),
        disk_dir: t.cwd.clone(),
        disk_fallback: Some(PathBuf::from(DISK_FALLBACK)),
        net_dest: req
            .net_dest
            .unwrap_or_else(|| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9)),
        memcap_bytes: 256 << 20,
    };
    let sizes = CacheSizes::of_host();
    let canary = req
        .canary
        .then(|| super::canary::Canary::new(sizes).read(t.cpus.first().copied(), 7));
    let mut lab = RealLab {
        arena: None,
        placement,
        sizes,
        probe,
        target: t,
        quiet_signals: (Snapshot::default(), Duration::ZERO),
        quiet_waits: Vec::new(),
        cpu_wait: req.cpu_wait,
    };
    let t_search = std::time::Instant::now();
    let mut o = search::search(&t.name, &mut lab, gate, &req.search)?;
    log::info!(
        "observed and injected in {} ms ({} steps, {:.0} ms injected): {}",
        t_search.elapsed().as_millis(),
        o.steps.len(),
        o.injected.as_secs_f64() * 1e3,
        o.resource.map_or("nothing decided yet", |r| r.name())
    );
    if !protocol.sees_request_path() && o.steps.iter().any(|s| s.requests > 0) {
        o.reason.push_str(&format!(
            " (the {} probe times connection setup only, not requests: what the microbenchmarks did not move may still slow its requests)",
            protocol.name()
        ));
    }
    let bandwidth = if o.resource.is_none() && req.memory_reading {
        memory_reading(t, req, &mut o)
    } else {
        None
    };
    let llc = if o.resource.is_none() && req.llc_reading {
        llc_reading(t, req, sizes.l2, &mut o)
    } else {
        None
    };
    if !t.alive() {
        return Err(t.gone("it exited before the diagnosis finished"));
    }
    let sig: SignalSummary =
        quiet_summary(&lab.quiet_signals.0, lab.quiet_signals.1, &lab.quiet_waits);
    Ok(Record {
        service: t.name.clone(),
        ts_ms: crate::util::now_ms(),
        mode: Method::PublicCloud,
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
            canary,
            bandwidth,
            llc,
            probe: Some(ProbeInfo {
                addr: addr.to_string(),
                protocol,
                chosen: chosen.into(),
            }),
        },
    })
}

/// True, with the reason saying so, when the budget has no room left for a `what` reading
/// that takes `need` of the culprit's CPU.
fn no_room(o: &mut search::Outcome, budget: Duration, what: &str, need: Duration) -> bool {
    if o.injected + need <= budget {
        return false;
    }
    o.reason.push_str(&format!(
        "; no {what} reading: {:.0} ms of the {:.0} ms budget left, it needs ~{:.0}",
        budget.saturating_sub(o.injected).as_secs_f64() * 1e3,
        budget.as_secs_f64() * 1e3,
        need.as_secs_f64() * 1e3
    ));
    true
}

/// When neither the signals nor the microbenchmarks decided: DRAM latency read on the
/// culprit's CPU and, interleaved, on the other CPUs ([`bandwidth`]); the culprit's share of it
/// (~5 ms) counts as injected time, and it is skipped when the budget has no room.
fn memory_reading(
    t: &Target,
    req: &DiagnoseRequest,
    o: &mut search::Outcome,
) -> Option<bandwidth::BandwidthReading> {
    const ROUNDS: u32 = 5;
    if no_room(o, req.search.budget, "memory", bandwidth::cost(ROUNDS)) {
        return None;
    }
    // Its 64 MiB chain is built now, not during the search (where it would load the CPUs and
    // the memory being measured), off the culprit's CPUs (this thread's affinity), on a thread
    // of its own so that a slow build (once 61 s on a loaded host, cause not found) ends the
    // wait rather than the diagnosis.
    const WAIT: Duration = Duration::from_secs(5);
    let Ok(meter) = bandwidth::Meter::build_in_background().recv_timeout(WAIT) else {
        o.reason.push_str(&format!(
            "; no memory reading: its 64 MiB buffer was not ready in {} s (its CPUs too busy, or the kernel slow to fault in its pages)",
            WAIT.as_secs()
        ));
        return None;
    };
    let culprit = t.cpus.first().copied().unwrap_or(0);
    let Some(r) = meter.read(culprit, &other_cpus(&t.cpus), ROUNDS) else {
        o.reason
            .push_str("; no memory reading: no CPU besides the culprit's to compare with");
        return None;
    };
    o.injected += Duration::from_secs_f64(r.culprit_cpu_ms / 1e3);
    match bandwidth::judge(&r) {
        Some((why, strength)) => {
            o.resource = Some(Resource::MemoryBandwidth);
            o.confidence = strength;
            o.reason = format!(
                "short of memory bandwidth: {why} (no microbenchmark moved its latency: where a neighbour streams on the other CPUs, a kernel there only takes turns with it)"
            );
        }
        None => o.reason.push_str(&format!(
            "; a DRAM access from its CPU takes {:.2}x one from the other CPUs ({:.0} ns): not short of memory bandwidth",
            r.ratio, r.culprit_ns
        )),
    }
    Some(r)
}

/// When nothing else decided, memory bandwidth included: the LLC reading ([`llc`]), a working
/// set twice the L2 walked on the culprit's CPU with its LLC siblings running and held; what
/// it takes of the culprit's CPU counts as injected time, within what the budget has left.
fn llc_reading(
    t: &Target,
    req: &DiagnoseRequest,
    l2_bytes: usize,
    o: &mut search::Outcome,
) -> Option<llc::LlcReading> {
    // At least this much; it reads rounds while the budget lasts.
    const LEAST: Duration = Duration::from_millis(3);
    if no_room(o, req.search.budget, "LLC", LEAST) {
        return None;
    }
    let left = req.search.budget.saturating_sub(o.injected);
    let culprit = t.cpus.first().copied().unwrap_or(0);
    let held = llc::to_hold(culprit, &other_cpus(&t.cpus));
    let Some(r) = llc::Meter::new(l2_bytes).read(culprit, &held, left) else {
        o.reason
            .push_str("; no LLC reading: no other CPU shares its LLC to compare with");
        return None;
    };
    o.injected += Duration::from_secs_f64(r.culprit_cpu_ms / 1e3);
    match llc::judge(&r) {
        Some((why, strength)) => {
            o.resource = Some(Resource::Llc);
            o.confidence = strength;
            o.reason = format!(
                "short of LLC: {why} (no microbenchmark moved its latency, and DRAM is not slower from its CPU: the neighbour fills the cache without saturating memory)"
            );
        }
        None if r.rounds < llc::MIN_ROUNDS => o.reason.push_str(&format!(
            "; LLC reading cut short by the budget ({} of {} rounds): no verdict",
            r.rounds,
            llc::ROUNDS
        )),
        None => o.reason.push_str(&format!(
            "; a load from a {} KiB working set on its CPU takes {:.2}x with CPUs {:?} running what they run as with them held ({:.1} ns){}: not short of LLC",
            r.set_bytes >> 10,
            r.ratio,
            r.held_cpus,
            r.free_ns,
            r.line_note()
        )),
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quiet_host() -> SignalSummary {
        SignalSummary {
            runq_wait_ratio: 0.1,
            runq_wait_per_slice_us: 3.0,
            ..SignalSummary::default()
        }
    }

    #[test]
    fn each_passive_rule_names_its_resource_and_a_quiet_host_none() {
        let r = |s: &SignalSummary, b: f64| passive_evidence(s, b, 0.4).map(|x| x.0);
        assert_eq!(r(&quiet_host(), 60.0), None);
        let net = SignalSummary {
            send_queue_bytes: 300e3,
            send_queue_delay_ms: 1200.0,
            ..quiet_host()
        };
        assert_eq!(r(&net, 60.0), Some(Resource::Network));
        // A few hundred bytes waiting for a slow client is not a network shortage.
        let small = SignalSummary {
            send_queue_bytes: 400.0,
            send_queue_delay_ms: 3.0,
            ..quiet_host()
        };
        assert_eq!(r(&small, 60.0), None);
        let disk = SignalSummary {
            cg_blocked_threads: 0.6,
            cg_io_bytes_per_s: 600e6,
            disk_busy: 0.3,
            // The I/O keeps its CPU busy too: disk is named, not CPU.
            runq_wait_ratio: 0.8,
            runq_wait_per_slice_us: 200.0,
            ..quiet_host()
        };
        assert_eq!(r(&disk, 60.0), Some(Resource::Disk));
        // At its limit but not paging: page cache fills a limited cgroup; no shortage.
        let full = SignalSummary {
            mem_used_ratio: 0.97,
            ..quiet_host()
        };
        assert_eq!(r(&full, 60.0), None);
        let mem = SignalSummary {
            mem_used_ratio: 0.97,
            cg_majflt_per_s: 40.0,
            ..quiet_host()
        };
        assert_eq!(r(&mem, 60.0), Some(Resource::MemoryCapacity));
        // Paging is I/O: threads blocked reading swap make it look like disk too; the faults
        // say memory.
        let paging = SignalSummary {
            cg_majflt_per_s: 2000.0,
            cg_blocked_threads: 0.8,
            cg_io_bytes_per_s: 50e6,
            disk_busy: 0.5,
            ..quiet_host()
        };
        assert_eq!(r(&paging, 60.0), Some(Resource::MemoryCapacity));
        let throttled = SignalSummary {
            throttled_ratio: 0.4,
            ..quiet_host()
        };
        assert_eq!(r(&throttled, 60.0), Some(Resource::CpuInt));
    }

    #[test]
    fn run_queue_waits_count_only_when_they_matter_to_requests() {
        let hog = SignalSummary {
            runq_wait_ratio: 0.7,
            runq_wait_per_slice_us: 60.0,
            ..SignalSummary::default()
        };
        let (why, strength) = cpu_evidence(&hog, 100.0, 0.4).expect("CPU hog");
        assert!(why.contains("60% of its 100 us"), "{why}");
        assert!((strength - 0.7).abs() < 1e-9);
        // The same waits in a service whose requests take 20 ms (a blocking call): a sliver.
        assert!(cpu_evidence(&hog, 20_000.0, 0.4).is_none());
        // A 3 us wake-up after 7 us of work: "30%" of runnable time, but nothing to requests.
        let idle = SignalSummary {
            runq_wait_ratio: 0.45,
            runq_wait_per_slice_us: 3.0,
            ..SignalSummary::default()
        };
        assert!(cpu_evidence(&idle, 15.0, 0.4).is_none());
    }

    #[test]
    fn a_quota_that_ran_out_in_most_periods_is_a_cpu_shortage_whatever_the_time_says() {
        // v1 adds the throttled time in jumps: a short look may see none of it.
        let held = SignalSummary {
            throttled_periods_ratio: 0.8,
            quota_periods: 5.0,
            ..SignalSummary::default()
        };
        let (why, strength) = cpu_evidence(&held, 0.0, 1.0).expect("held back");
        assert!(why.contains("ran out in 4 of 5 periods"), "{why}");
        assert!((strength - 0.8).abs() < 1e-9);
        let once = SignalSummary {
            throttled_periods_ratio: 1.0,
            quota_periods: 1.0,
            ..SignalSummary::default()
        };
        assert!(
            cpu_evidence(&once, 0.0, 1.0).is_none(),
            "one period says nothing"
        );
        let sometimes = SignalSummary {
            throttled_periods_ratio: 0.3,
            quota_periods: 10.0,
            ..SignalSummary::default()
        };
        assert!(cpu_evidence(&sometimes, 0.0, 1.0).is_none());
    }

    fn target_in(cg: &crate::actuate::testutil::V1Cgroup, pid: u32) -> Target {
        Target {
            name: "busy".into(),
            pids: vec![pid],
            ports: vec![],
            addrs: vec![],
            comm: "sh".into(),
            cpus: vec![0],
            cpu_cgroup_dir: Some(cg.0.clone()),
            cwd: PathBuf::from("/"),
            threads_file: Some(cg.0.join("tasks")),
            mem_cgroup_dir: None,
        }
    }

    /// On this host's real v1 cpu hierarchy: a busy loop squeezed to 1% of a CPU is short of
    /// CPU from its cgroup alone, in about QUOTA_LOOK; without a quota there is nothing to read
    /// there and the probe decides.
    #[test]
    fn a_culprit_its_quota_holds_back_is_decided_before_any_probe() {
        use crate::actuate::testutil::{Busy, V1Cgroup};
        let Some(cg) = V1Cgroup::new("held") else {
            println!("SKIP: needs root and a v1 cpu hierarchy at /sys/fs/cgroup/cpu");
            return;
        };
        let busy = Busy::loop_in(&cg);
        let t = target_in(&cg, busy.0.id());
        assert!(
            held_back_by_its_quota(&t).is_none(),
            "no quota: the probe decides"
        );
        std::fs::write(cg.0.join("cpu.cfs_quota_us"), "1000").expect("squeeze");
        std::thread::sleep(Duration::from_millis(200));
        let t0 = std::time::Instant::now();
        let r = held_back_by_its_quota(&t).expect("held back by its quota");
        let took = t0.elapsed();
        println!("{} ms: {}", took.as_millis(), r.reason);
        assert_eq!(r.resource, Some(Resource::CpuInt));
        assert!(r.reason.contains("before any probe"), "{}", r.reason);
        assert!(
            r.evidence.signals.is_some_and(|s| s.quota_periods >= 2.0),
            "{r:?}"
        );
        assert!(took < QUOTA_LOOK * 3, "{took:?}");
    }
}
