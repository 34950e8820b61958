//! The tick loop: read the kernel, refresh discovery now and then, sample, print.
use std::{
    io::IsTerminal as _,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use seer_common::{LAT_BUCKETS, MAX_SLOTS, SlotCounters, SockRecord};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    config::Config,
    discovery::{Discovery, MapChanges},
    output,
    respond::Responder,
    sampler::{CpuChannels, KernelSource, ProcCpu, Sampler},
    serve::metrics::{self, AgentStats},
    store::Recorder,
    sys::{self, bpf::Probes},
};

impl KernelSource for Probes {
    fn read_counters(&mut self, out: &mut [SlotCounters; MAX_SLOTS]) -> anyhow::Result<()> {
        Ok(Probes::read_counters(self, out)?)
    }
    fn read_latency(&mut self, slot: usize, out: &mut [u64; LAT_BUCKETS]) -> anyhow::Result<()> {
        Ok(Probes::read_latency(self, slot, out)?)
    }
}

/// What `run` needs beyond the config: how it reports, where it records, which model.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Stop after this many ticks.
    pub ticks: Option<u64>,
    /// One JSON object per tick on stdout (else the live table on a terminal).
    pub json: bool,
    /// /metrics and the query API ("off": none).
    pub metrics_addr: String,
    /// The trace store, or None (--no-store).
    pub db: Option<std::path::PathBuf>,
    /// The model, or None: the shipped one. `predict` false: reactive only.
    pub predict: bool,
    pub model: Option<std::path::PathBuf>,
    pub ort_lib: Option<std::path::PathBuf>,
    /// Cluster mode: publish every tick to NATS (None: this host alone).
    pub cluster: Option<ClusterRun>,
}

/// `run --cluster`: where to publish, as whom.
#[derive(Clone, Debug)]
pub struct ClusterRun {
    pub url: String,
    pub creds: Option<std::path::PathBuf>,
    pub ca: Option<std::path::PathBuf>,
    pub host: String,
    pub backlog: usize,
}

fn apply(probes: &Probes, ch: &MapChanges) -> anyhow::Result<()> {
    for &(port, slot) in &ch.ports {
        probes.set_port_slot(port, slot)?;
    }
    for &(tgid, slot) in &ch.tgids {
        probes.set_tgid_slot(tgid, slot)?;
    }
    Ok(())
}

/// Discovery rounds a connect() from an unknown process waits for its service to appear.
const CONNECT_WAIT_ROUNDS: u64 = 30;
/// At most this many wait (a host full of short-lived clients that are not services).
const MAX_WAITING_CONNECTS: usize = 65_536;

struct Agent {
    recorder: Option<Recorder>,
    cfg: Config,
    probes: Probes,
    disc: Discovery,
    sampler: Sampler,
    /// The CPU channels, from /proc and cgroupfs.
    cpu: CpuChannels,
    socks: Vec<SockRecord>,
    /// Discovery's walk over every process's sockets (reused between rounds).
    owner_recs: Vec<SockRecord>,
    samples: Vec<seer_common::sample::Sample>,
    connects: Vec<(seer_common::ConnectKey, u64)>,
    /// Connects not matched to a service yet, and the round each was last seen.
    waiting_connects: std::collections::HashMap<seer_common::ConnectKey, u64>,
    responder: Option<Responder>,
    /// The model stage (None: reactive only).
    predictor: Option<crate::infer::Predictor>,
    /// Discovery rounds so far.
    rounds: u64,
    /// Cluster mode's publisher (None: this host alone).
    publisher: Option<crate::cluster::publish::Publisher>,
}

impl Agent {
    /// The store (after the privilege drop: its writer is a thread), discovery seeded from
    /// it, the responder and the model stage, and a first discovery round.
    fn start(args: &RunOptions, cfg: Config, probes: Probes) -> anyhow::Result<Self> {
        // The store after the drop: its writer is a thread, and a thread started before the drop
        // would keep every capability (uid 0 still creates /var/lib/seer in root's /var/lib).
        let recorder = match &args.db {
            None => None,
            Some(db) => {
                let r = Recorder::open(db, cfg.tick_ms).with_context(|| {
                    format!(
                        "opening the trace store {} (or run with --no-store)",
                        db.display()
                    )
                })?;
                log::info!("recording every tick in {}", r.path.display());
                Some(r)
            }
        };
        let mut disc = Discovery::default();
        let missing = crate::channels::missing(&probes.hooks);
        if !missing.is_empty() {
            log::info!(
                "channels this host cannot observe (recorded in the store): {}",
                missing.join(", ")
            );
        }
        if let Some(r) = &recorder {
            disc.seed_ids(r.known_ids()?);
            disc.seed_next_id(r.id_floor()?);
            r.set_missing_channels(&missing);
        }
        // Without the turn hooks, outstanding comes from the iterator's last-in/last-out clocks.
        let turns = probes.hooks.iter().any(|h| h.program == "seer_send");
        let responder = match cfg.qos.clone() {
            Some(q) => {
                if !turns {
                    log::warn!(
                        "respond: the QoS needs request latency, which this kernel's hooks do not give (see `seer-agent doctor`): no violation will be seen"
                    );
                }
                Some(responder(
                    q,
                    cfg.respond.clone(),
                    &cfg.alerts,
                    cfg.tick_ms,
                    recorder.as_ref().map(Recorder::store),
                    &args.metrics_addr,
                )?)
            }
            None => {
                if cfg.alerts.any() {
                    log::warn!(
                        "[alerts] is set but there is no [qos] (or --qos): nothing will alert"
                    );
                }
                None
            }
        };
        let predictor = start_predictor(args, cfg.tick_ms);
        let publisher = match &args.cluster {
            Some(c) => Some(
                crate::cluster::publish::Publisher::start(
                    &c.url,
                    c.creds.as_deref(),
                    c.ca.as_deref(),
                    &c.host,
                    c.backlog,
                )
                .context("cluster mode (--cluster)")?,
            ),
            None => None,
        };
        let mut agent = Agent {
            predictor,
            publisher,
            rounds: 0,
            responder,
            recorder,
            sampler: Sampler::new(
                turns,
                !probes.hooks.iter().any(|h| h.program == "seer_tc_ingress"),
            ),
            cpu: CpuChannels::default(),
            cfg,
            probes,
            disc,
            socks: Vec::with_capacity(4096),
            owner_recs: Vec::new(),
            samples: Vec::with_capacity(MAX_SLOTS),
            connects: Vec::new(),
            waiting_connects: Default::default(),
        };
        agent.probes.read_sockets(&mut agent.socks, true)?;
        agent.discover()?;
        Ok(agent)
    }

    /// One tick: read the sockets (all of them in a discovery round), sample, predict, record,
    /// respond; `stats` updated for /metrics.
    fn tick(
        &mut self,
        n: u64,
        fed_ms: &mut u64,
        stats: &mut AgentStats,
    ) -> anyhow::Result<TickView> {
        let t0 = Instant::now();
        self.socks.clear();
        // Discovery rounds walk every socket (new listeners, older connections); other ticks
        // visit only the sockets already observed.
        let full = n > 0 && n.is_multiple_of(self.cfg.discovery_every as u64);
        self.probes.read_sockets(&mut self.socks, full)?;
        if full {
            self.discover()?;
        }
        let ts = crate::util::now_ms();
        self.sampler.tick(
            &mut self.probes,
            &self.disc,
            &self.socks,
            ts,
            &mut self.samples,
        )?;
        self.cpu.fill(&mut ProcCpu, &self.disc, &mut self.samples);
        if let Some(p) = &mut self.predictor {
            p.on_tick(ts, &self.disc.services, &self.samples, &self.disc.edges);
        }
        if let Some(p) = &mut self.publisher {
            p.on_tick(ts, self.cfg.tick_ms, &self.disc, &self.samples);
            // The central's alarms on this host's services: the same response as our own.
            for req in p.requests() {
                let from = format!("{} term {}", req.leader, req.term);
                match &mut self.responder {
                    Some(r) => {
                        r.on_central_alarm(
                            seer_common::sample::ServiceId(req.service_id),
                            &self.disc,
                            req.p,
                            req.horizon_ms,
                            req.model,
                            &from,
                        );
                    }
                    None => log::warn!(
                        "cluster: {from} asks this host to respond for {}, but there is no [qos] (or --qos) to respond with",
                        req.service
                    ),
                }
            }
        }
        let prediction = self.predictor.as_ref().and_then(|p| p.latest());
        let status = self.predictor.as_ref().map(|p| p.status());
        // The model in use now (a reload may have changed it) and the alarm policy over it.
        let model = status
            .as_ref()
            .and_then(|s| s.model.as_ref())
            .map(|m| model_ctx(&self.cfg.predict, m));
        // A result is new once: stored with the tick it arrived in, fed to the alarms once.
        let fresh = prediction.as_ref().filter(|p| p.ts_ms > *fed_ms);
        if let Some(r) = &self.recorder {
            r.record(ts, &self.samples, &self.disc, fresh.map(|p| p.to_store()));
        }
        if let Some(r) = &mut self.responder {
            r.on_tick(ts, &self.disc, &self.samples, &self.sampler.watched);
            // Answers to the central's requests, diagnosed and decided by now.
            if let Some(p) = &self.publisher {
                for a in r.take_cluster_answers() {
                    p.answer(a);
                }
            }
            // Each result once (a late inference leaves the previous one in place).
            if let Some(pred) = fresh {
                r.set_model(model.clone());
                r.on_model(ts, pred, &self.disc);
            }
        }
        if let Some(p) = fresh {
            *fed_ms = p.ts_ms;
        }
        stats.drops = self.probes.read_drops()?;
        stats.ticks = n + 1;
        stats.sockets_seen = self.socks.len() as u64;
        stats.last_tick_us = t0.elapsed().as_micros() as u64;
        stats.max_tick_us = stats.max_tick_us.max(stats.last_tick_us);
        stats.store = self.recorder.as_ref().map(Recorder::stats);
        stats.respond = self.responder.as_ref().map(|r| r.stats.clone());
        stats.predict = status.map(|s| (s, prediction.clone()));
        stats.cluster = self.publisher.as_ref().map(|p| p.stats());
        Ok(TickView {
            ts,
            prediction,
            model,
        })
    }

    /// Stops the responder (undoing what it enforced), the model stage and the cluster
    /// publisher (a second at most to flush), reports kernel drops, closes the store, detaches.
    async fn drain(mut self) -> anyhow::Result<()> {
        if let Some(p) = self.publisher.take() {
            p.shutdown().await;
        }
        if let Some(r) = self.responder.take() {
            r.shutdown();
        }
        if let Some(p) = self.predictor.take() {
            p.shutdown();
        }
        let d = self.probes.read_drops()?;
        if d.turns_full + d.connects_full + d.epoll_full + d.iter_write > 0 {
            log::warn!("kernel-side drops during this run: {d:?}");
        }
        if let Some(r) = self.recorder.take() {
            let st = r.close();
            log::info!(
                "trace store: {} ticks written, {} dropped, {} bytes on disk{}",
                st.ticks_written,
                st.ticks_dropped,
                st.bytes_on_disk,
                st.last_error
                    .map(|e| format!(", last error: {e}"))
                    .unwrap_or_default()
            );
        }
        drop(self);
        log::info!("detached all programs");
        Ok(())
    }

    fn discover(&mut self) -> anyhow::Result<()> {
        // Which process holds which socket: one kernel walk where it can, else /proc.
        self.owner_recs.clear();
        let proc_root = std::path::Path::new("/proc");
        let mut procs = if self.probes.read_owners(&mut self.owner_recs)? {
            sys::procfs::owners(&self.owner_recs, proc_root)
        } else {
            sys::procfs::scan_sockets(proc_root).0
        };
        // The agent's own metrics listener is not a service to watch.
        let me = std::process::id();
        procs.retain(|p| p.pid != me);
        let ch = self.disc.refresh(&self.cfg, &self.socks, &procs);
        apply(&self.probes, &ch)?;
        self.cpu.on_discovery(&mut ProcCpu, &self.disc);
        // The per-process walk (where the kernel refuses the socket-storage one) follows the
        // watched services' processes.
        self.probes.watch_processes(
            self.disc
                .services
                .iter()
                .flat_map(|s| s.pids.iter().copied()),
        )?;
        for id in &ch.added {
            let s = self.disc.services.iter().find(|s| s.id == *id);
            if let Some(s) = s {
                log::info!(
                    "service {} (pids {:?}, ports {:?}, cgroup {})",
                    s.name,
                    s.pids,
                    s.ports,
                    s.cgroup
                );
            }
        }
        if let Some(r) = &self.recorder {
            r.services_added(&self.disc, &ch.added, crate::util::now_ms());
        }
        for id in &ch.removed {
            log::info!("service {} is gone", id.0);
        }
        self.rounds += 1;
        // The kernel's connect map is drained each round; a connect() whose process is not a
        // known service yet (it dialled before discovery saw it) waits here a while.
        self.connects.clear();
        self.probes.drain_connects(&mut self.connects)?;
        for (k, _) in &self.connects {
            self.waiting_connects.insert(*k, self.rounds);
        }
        let local = sys::bpf::local_addrs().unwrap_or_else(|e| {
            log::warn!("listing this host's addresses: {e}; every callee counts as local");
            Default::default()
        });
        self.connects.clear();
        self.connects
            .extend(self.waiting_connects.keys().map(|k| (*k, 1)));
        let new_remote = self.disc.add_connects(&self.connects, &local);
        let (disc, rounds) = (&self.disc, self.rounds);
        self.waiting_connects.retain(|k, seen| {
            disc.service_by_pid(k.tgid).is_none() && rounds - *seen < CONNECT_WAIT_ROUNDS
        });
        if self.waiting_connects.len() > MAX_WAITING_CONNECTS {
            log::warn!(
                "{} connect() calls from processes that are not services: keeping none of them",
                self.waiting_connects.len()
            );
            self.waiting_connects.clear();
        }
        if let Some(r) = &self.recorder {
            // New calls to other hosts now; once a minute, every live service and every call
            // to another host again (last seen: what retention keeps).
            if self.rounds.is_multiple_of(60) {
                let all: Vec<_> = self.disc.remote_edges.iter().copied().collect();
                r.remote_edges(&self.disc, &all, crate::util::now_ms());
                r.services_seen(&self.disc, crate::util::now_ms());
            } else if !new_remote.is_empty() {
                r.remote_edges(&self.disc, &new_remote, crate::util::now_ms());
            }
        }
        self.sampler
            .on_discovery(&mut self.probes, &self.disc, &ch.new_slots)?;
        if let Some(r) = &mut self.responder {
            let q = r.qos_service().to_string();
            self.sampler.watch = self
                .disc
                .services
                .iter()
                .find(|s| s.name == q)
                .map(|s| s.id);
            r.on_discovery(&self.disc);
        }
        Ok(())
    }
}

pub async fn run(args: RunOptions, cfg: Config) -> anyhow::Result<()> {
    // First of all, in every mode and before anything that can fail (eBPF load, the store):
    // undo what a crashed run left in force.
    undo_left_over(&cfg.respond.journal);
    raise_open_files();
    let probes = attach(&cfg)?;
    drop_privileges(&cfg, &probes);
    let mut agent = Agent::start(&args, cfg, probes)?;

    let tick = Duration::from_millis(agent.cfg.tick_ms);
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let live = !args.json && std::io::stdout().is_terminal();
    // /metrics asks for a rendering; the loop answers between ticks (a tick renders nothing).
    let (scrapes, mut scrape_rx) = tokio::sync::mpsc::channel(16);
    // The live view's snapshots (at most two a second), on the same listener.
    let ui = (args.metrics_addr != "off").then(crate::serve::ui::Feed::default);
    if args.metrics_addr != "off" {
        tokio::spawn(crate::serve::server::serve(
            args.metrics_addr.clone(),
            scrapes,
            agent.recorder.as_ref().map(Recorder::store),
            ui.clone(),
        ));
    }
    let mut stats = AgentStats::default();
    let mut n: u64 = 0;
    let mut fed_ms = 0;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = term.recv() => { log::info!("SIGTERM: detaching"); break; }
            _ = int.recv() => { log::info!("SIGINT: detaching"); break; }
            _ = hup.recv() => { log::info!("SIGHUP: detaching (seer does not reload on SIGHUP)"); break; }
            Some(reply) = scrape_rx.recv() => {
                let _ = reply.send(metrics::render(&agent.disc, &agent.samples, &stats));
                continue;
            }
        }
        // An Err leaves by `?`: the responder's drop still undoes what it enforced.
        let view = agent.tick(n, &mut fed_ms, &mut stats)?;
        n += 1;
        if let Some(feed) = &ui
            && feed.due()
        {
            feed.publish(&ui_snapshot(&agent, &view));
        }
        report(&args, live, &agent, &stats, &view, n);
        if args.ticks.is_some_and(|t| n >= t) {
            break;
        }
    }
    agent.drain().await
}

/// Loads and attaches seer's programs as the config asks, logging each with its program id.
fn attach(cfg: &Config) -> anyhow::Result<Probes> {
    let opts = sys::bpf::ProbeOptions {
        tc_ingress: cfg.tc_ingress,
        interfaces: cfg.interfaces.clone(),
        turns: cfg.turns,
        epoll: cfg.epoll,
    };
    let probes = Probes::load(&opts).context("attaching seer's eBPF programs")?;
    let ids = probes.program_ids();
    for h in &probes.hooks {
        let id = ids
            .iter()
            .find(|(n, _)| n == h.program)
            .map_or(0, |(_, id)| *id);
        log::info!(
            "attached {} ({} {}) prog_id={id}",
            h.program,
            h.kind,
            h.target
        );
    }
    Ok(probes)
}

/// After attaching: keep only the capabilities sensing and the configured response use.
fn drop_privileges(cfg: &Config, probes: &Probes) {
    // What the configured response needs beyond sensing.
    let mut extra = Vec::new();
    if probes.hooks.iter().any(|h| h.kind == "cls_bpf") {
        extra.push((
            caps::Capability::CAP_NET_ADMIN,
            "detach the tc ingress counter and remove its clsact qdisc at exit",
        ));
    }
    if cfg.qos.is_some() {
        if cfg.respond.mode == crate::respond::policy::Mode::Enforce {
            extra.push((
                caps::Capability::CAP_NET_ADMIN,
                "change tc HTB classes (respond: enforce)",
            ));
        }
        if cfg.respond.diagnose {
            extra.push((
                caps::Capability::CAP_PERFMON,
                "read hardware counters of a culprit's cgroup (diagnosis, private mode)",
            ));
        }
    }
    if let Err(e) = sys::caps::drop_after_attach(&extra) {
        log::warn!("{e}; continuing with the capabilities we have");
    }
}

/// What one tick produced, for the report.
struct TickView {
    ts: u64,
    prediction: Option<crate::infer::Prediction>,
    model: Option<crate::respond::ModelCtx>,
}

/// The live view's snapshot of this tick: its JSON, the alarm threshold, the QoS verdict and
/// the response's recent events.
fn ui_snapshot(agent: &Agent, view: &TickView) -> serde_json::Value {
    let tick = output::tick_json(
        view.ts,
        &agent.disc,
        &agent.samples,
        view.prediction.as_ref(),
    );
    let (qos, episodes) = match &agent.responder {
        Some(r) => (
            Some(serde_json::json!({
                "front_end": r.qos_service(),
                "target_ms": r.watch.cfg.p99_ms,
                "p99_ms": r.stats.qos_p99_us as f64 / 1000.0,
                "violated": r.stats.qos_violated,
            })),
            r.timeline.recent(),
        ),
        None => (None, Vec::new()),
    };
    crate::serve::ui::snapshot(
        tick,
        view.model.as_ref().map(|m| m.alarm.threshold),
        qos,
        episodes,
    )
}

/// Prints the tick: a JSON line, the live table, or a log line each second.
fn report(
    args: &RunOptions,
    live: bool,
    agent: &Agent,
    stats: &AgentStats,
    view: &TickView,
    n: u64,
) {
    if args.json {
        let mut v = output::tick_json(
            view.ts,
            &agent.disc,
            &agent.samples,
            view.prediction.as_ref(),
        );
        v["kernel_drops"] = serde_json::json!({
            "turns_full": stats.drops.turns_full,
            "connects_full": stats.drops.connects_full,
            "epoll_full": stats.drops.epoll_full,
            "iter_write": stats.drops.iter_write,
        });
        if let Some(c) = &stats.cluster {
            v["cluster"] = c.to_json();
        }
        output::print_line(&v);
    } else if live {
        let d = stats.drops;
        let mut footer = format!(
            "tick {n} ({:.2} ms of work); kernel drops: turns {} connects {} epoll {} iter {}",
            stats.last_tick_us as f64 / 1000.0,
            d.turns_full,
            d.connects_full,
            d.epoll_full,
            d.iter_write
        );
        if let Some(r) = &agent.responder {
            footer = format!("{}\n{footer}", r.status_line());
        }
        if let Some(c) = &stats.cluster {
            footer = format!("{footer}\n{}", c.status_line());
        }
        if args.metrics_addr != "off" {
            footer = format!("{footer}\nlive view: http://{}/ui", args.metrics_addr);
        }
        print!(
            "{}",
            output::live_table(
                agent.cfg.tick_ms,
                &agent.disc,
                &agent.samples,
                view.prediction
                    .as_ref()
                    .zip(view.model.as_ref().map(|m| m.alarm.threshold)),
                &footer
            )
        );
    } else if n.is_multiple_of((1000 / agent.cfg.tick_ms).max(1)) {
        log::info!(
            "tick {n}: {} services, {} edges",
            agent.disc.services.len(),
            agent.disc.edges.len()
        );
    }
}

/// The responder, wired to what carries its decisions out (enforce mode: the journaled
/// enforcer, undoing first what a crashed run left) and to the alert outbox (the store's, with
/// its sender). `store` is None with --no-store (then alerts cannot be configured).
pub fn responder(
    qos: crate::config::QosConfig,
    cfg: crate::config::RespondConfig,
    alerts: &crate::config::AlertsConfig,
    tick_ms: u64,
    store: Option<seer_store::Store>,
    metrics_addr: &str,
) -> anyhow::Result<Responder> {
    if alerts.any() && store.is_none() {
        anyhow::bail!(
            "[alerts] needs the trace store (its outbox keeps alerts until delivered): drop --no-store"
        );
    }
    let (hands, replay_failed): (Option<Box<dyn crate::respond::Hands>>, bool) =
        if cfg.mode == crate::config::Mode::Enforce {
            let (en, failed) = crate::actuate::enforce::Enforcer::open(&cfg.journal)?;
            (Some(Box::new(en)), failed)
        } else {
            (None, false)
        };
    let outbox: Option<Box<dyn crate::respond::Alerts>> = match (&store, alerts.any()) {
        (Some(st), true) => Some(Box::new(crate::alert::Outbox::start(
            st.clone(),
            alerts,
            metrics_addr,
        )?)),
        _ => None,
    };
    Responder::new(qos, cfg, tick_ms, store, hands, replay_failed, outbox)
}

/// `[predict]` over the model in use: the alarm policy (the card's threshold and ticks in a row
/// unless the config sets them; the live table marks the same threshold) and whether alarms act.
fn model_ctx(
    cfg: &crate::config::PredictConfig,
    m: &crate::infer::ModelInfo,
) -> crate::respond::ModelCtx {
    crate::respond::ModelCtx {
        alarm: crate::respond::alarm::AlarmConfig {
            threshold: cfg.threshold.unwrap_or(m.threshold),
            consecutive: cfg.consecutive.unwrap_or(m.consecutive),
            hysteresis: cfg.hysteresis,
            cooldown_ms: cfg.cooldown_s * 1000,
        },
        acts: m.precision_pct.is_some_and(|p| p >= cfg.min_precision_pct),
        name: m.name.clone(),
        horizon_ms: m.horizon_ms,
    }
}

/// The model stage, or None (the agent then reacts only, and says why in the log; /metrics
/// shows `seer_predict_enabled 0` and `doctor` the reason).
fn start_predictor(args: &RunOptions, tick_ms: u64) -> Option<crate::infer::Predictor> {
    if !args.predict {
        return None;
    }
    let Some(model) = args.model.clone().or_else(crate::infer::default_model) else {
        let why = format!(
            "no model: the shipped {} is not next to the binary nor in models/ (give --model PATH)",
            crate::infer::SHIPPED_MODEL
        );
        log::warn!("predict: {why}; reacting to violations only");
        return None;
    };
    match crate::infer::Predictor::start(&model, args.ort_lib.as_deref(), tick_ms) {
        Ok(p) => Some(p),
        Err(e) => {
            log::warn!("predict: {e}; reacting to violations only");
            None
        }
    }
}

/// Undoes the changes a previous run left in the action journal (it crashed, or was killed),
/// whatever this run's mode. Never fails the start: what cannot be undone stays journaled, and
/// is said.
fn undo_left_over(journal: &std::path::Path) {
    if !journal.exists() {
        return;
    }
    let rc = crate::actuate::resctrl::Resctrl::probe(std::path::Path::new(
        crate::actuate::resctrl::DEFAULT_ROOT,
    ))
    .ok();
    match crate::actuate::Actuator::open(journal, rc) {
        Ok((_, rep)) if rep.restored + rep.gone > 0 || !rep.failed.is_empty() => log::warn!(
            "undid what a previous run left in {}: {} restored, {} already gone, {} failed{}",
            journal.display(),
            rep.restored,
            rep.gone,
            rep.failed.len(),
            if rep.failed.is_empty() {
                String::new()
            } else {
                format!(
                    " ({}; kept in the journal, `seer-agent act undo` retries)",
                    rep.failed.join("; ")
                )
            }
        ),
        Ok(_) => {}
        Err(e) => log::error!(
            "could not read the action journal {} to undo what a previous run left: {e}",
            journal.display()
        ),
    }
}

/// Raises the soft limit on open descriptors to the hard one (at most 65536): per-process
/// iterator links, the store, netlink and the HTTP listener's connections must not run out
/// at the default 1024.
fn raise_open_files() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            let want = lim.rlim_max.min(65_536);
            if want > lim.rlim_cur {
                lim.rlim_cur = want;
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    log::warn!(
                        "cannot raise the open-files limit to {want}: {}",
                        std::io::Error::last_os_error()
                    );
                }
            }
        }
    }
}
