//! `seer-agent central`: the cluster's predictor.
//!
//! Start-up: connect, create the samples stream if missing (checked if present: a mismatch
//! stops the central with what differs), open the lease bucket, load the model. Then, each
//! `tick_ms`: take every host's messages from the stream (an ordered consumer starting a
//! window's length in the past, so a new or restarted central has a warm window at once),
//! close the slots older than `lag_ms` into cluster ticks, feed them to the same `infer` stage
//! the agent runs (all services, back end first) and, only while this central holds the
//! lease, publish each new result on `seer.predictions`; the agent's alarm policy over the
//! results, and on an alarm the leader asks the culprit's host agent to respond
//! (`seer.respond.<host>`). Standbys do all the same but publish.
use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use async_nats::jetstream;
use futures_util::StreamExt as _;
use tokio::signal::unix::{SignalKind, signal};

use super::{
    PREDICTIONS, SAMPLES_PREFIX, STREAM,
    assemble::{Assembler, ClusterTick, Member},
    lease::{Lease, Role},
    stats::CentralStats,
    stream::{consume, ensure_stream, next_msg},
    wire::{HostTick, RespondRequest, respond_subject},
};
use crate::{
    infer::{Predictor, card::MAX_T},
    respond::alarm::{AlarmConfig, AlarmEvent, Alarms},
};

/// What `central` takes from its command line.
#[derive(Clone, Debug)]
pub struct CentralOptions {
    pub url: String,
    pub creds: Option<PathBuf>,
    /// The CA of the NATS servers' certificates (TLS).
    pub ca: Option<PathBuf>,
    /// This central's name in the lease (and in every prediction it publishes).
    pub name: String,
    pub model: Option<PathBuf>,
    pub ort_lib: Option<PathBuf>,
    pub tick_ms: u64,
    pub lease: Duration,
    pub retention: Duration,
    /// None: 3 when the NATS cluster has at least 3 servers, else 1.
    pub replicas: Option<usize>,
    /// How long after a slot ends it is assembled (late hosts' grace).
    pub lag_ms: u64,
    /// A host silent this long is left out of the cluster tick.
    pub forget_ms: u64,
    pub json: bool,
    /// Stop after this many assembled ticks.
    pub ticks: Option<u64>,
    /// Its own /metrics ("off": none).
    pub metrics_addr: String,
    /// Where the leader's alerts go (none: no alerts), and the store keeping them until
    /// delivered (the outbox).
    pub alerts: crate::config::AlertsConfig,
    pub db: PathBuf,
}

/// Messages not taken, counted by reason, each reason logged once.
#[derive(Default)]
struct Refusals {
    counts: HashMap<String, u64>,
    logged: HashSet<String>,
}

impl Refusals {
    fn note(&mut self, kind: &str, detail: impl FnOnce() -> String) {
        *self.counts.entry(kind.to_string()).or_default() += 1;
        if self.logged.insert(kind.to_string()) {
            log::warn!(
                "central: refused a message ({}); further ones of this kind are only counted",
                detail()
            );
        }
    }
    /// (reason, count), for /metrics and the live table.
    fn list(&self) -> Vec<(String, u64)> {
        self.counts.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
    fn total(&self) -> u64 {
        self.counts.values().sum()
    }
}

/// One message from the stream: checked, decoded, placed.
fn take(a: &mut Assembler, subject: &str, payload: &[u8], r: &mut Refusals) {
    let Some(host) = subject
        .strip_prefix(SAMPLES_PREFIX)
        .and_then(|s| s.strip_prefix('.'))
    else {
        r.note("subject", || format!("subject {subject:?}"));
        return;
    };
    let t = match HostTick::decode(payload) {
        Ok(t) => t,
        Err(e) => {
            let kind = match e {
                super::wire::WireError::Version(_) => "version",
                _ => "decode",
            };
            r.note(kind, || format!("on {subject}: {e}"));
            return;
        }
    };
    if t.host != host {
        r.note("host", || {
            format!("on {subject}: the message says host {:?}", t.host)
        });
        return;
    }
    match a.insert(t, crate::util::now_ms()) {
        Ok(()) | Err(super::assemble::Refused::Late) => {}
        Err(e) => r.note(&format!("{e:?}"), || format!("from {host}: {e}")),
    }
}

/// A host's answer on `seer.events.<host>`, if it is one (JSON object, at most 64 KiB,
/// this schema version).
fn answer(payload: &[u8]) -> Option<serde_json::Value> {
    if payload.len() > 64 * 1024 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    (v["v"] == super::wire::VERSION && v["answer"].is_object()).then_some(v)
}

/// The leader's alert for a host's answer to its request: the culprit as host/service, what
/// the host diagnosed and decided, and who predicted it (the leader and its term).
fn alert_of(
    host: &str,
    req: &RespondRequest,
    answer: &serde_json::Value,
) -> crate::alert::AlertInfo {
    let now = crate::util::now_ms();
    let mut actions = answer["actions"].clone();
    if actions.is_object() {
        actions["leader"] = serde_json::json!(req.leader);
        actions["term"] = serde_json::json!(req.term);
    }
    crate::alert::AlertInfo {
        culprit: format!("{host}/{}", req.service),
        qos: format!(
            "the cluster's QoS, predicted by central {} (term {})",
            req.leader, req.term
        ),
        resource: answer["resource"].as_str().unwrap_or("unknown").to_string(),
        confidence: answer["confidence"].as_f64().unwrap_or(0.0),
        mode: answer["mode"].as_str().unwrap_or("").to_string(),
        diagnosis: answer.get("diagnosis").cloned(),
        actions,
        starts_ms: req.ts_ms,
        // Firing for a while (a new alarm refreshes it).
        ends_ms: now + 10 * 60 * 1000,
        origin: crate::alert::Origin::Predicted {
            probability: req.p,
            horizon_ms: req.horizon_ms,
            lead_ms: None,
            channels: format!("central {} term {}", req.leader, req.term),
            model: req.model.clone(),
        },
    }
}

/// The lease in a task of its own (a NATS round trip never holds the tick up); the tick reads
/// the role from it, judged on the local clock.
fn spawn_lease(
    mut lease: Lease,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> (
    tokio::sync::watch::Receiver<Role>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = tokio::sync::watch::channel(lease.role());
    let task = tokio::spawn(async move {
        loop {
            lease.turn().await;
            let _ = tx.send(lease.role());
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = &mut stop => break,
            }
        }
        lease.release().await;
        let _ = tx.send(lease.role());
    });
    (rx, task)
}

/// A tick as JSON: the services with their hosts, the edges by name, the prediction if any.
/// The cluster tick as the live view's page reads an agent's (`output::tick_json`): services
/// named `host/service`, ordered and layered from the front ends down over the whole
/// cluster's call graph, calls to hosts outside the cluster left out.
fn ui_tick_json(t: &ClusterTick, pred: Option<&crate::infer::Prediction>) -> serde_json::Value {
    let mut d = crate::discovery::Discovery::default();
    d.services = t.services.clone();
    d.edges = t.edges.clone();
    d.order();
    let by_id: HashMap<_, &seer_common::sample::Sample> =
        t.samples.iter().map(|s| (s.service, s)).collect();
    let samples: Vec<seer_common::sample::Sample> = d
        .services
        .iter()
        .filter_map(|s| by_id.get(&s.id).map(|x| **x))
        .collect();
    crate::output::tick_json(t.ts_ms, &d, &samples, pred)
}

fn tick_json(
    t: &ClusterTick,
    role: &Role,
    name: &str,
    pred: Option<&crate::infer::Prediction>,
) -> serde_json::Value {
    use serde_json::json;
    let by_id: HashMap<_, &Member> = t
        .services
        .iter()
        .zip(&t.members)
        .map(|(s, m)| (s.id, m))
        .collect();
    let nm = |id| by_id.get(&id).map(|m| format!("{}/{}", m.host, m.name));
    let (leader, term) = match role {
        Role::Leader { term } => (Some(name.to_string()), Some(*term)),
        Role::Standby { leader } => (leader.clone(), None),
    };
    json!({
        "ts_ms": t.ts_ms,
        "slot": t.slot,
        "role": if term.is_some() { "leader" } else { "standby" },
        "central": name,
        "leader": leader,
        "term": term,
        "hosts": t.hosts,
        "stale_hosts": t.stale_hosts,
        "services": t.services.iter().zip(&t.members).zip(&t.samples).map(|((s, m), smp)| json!({
            "host": m.host, "name": m.name, "local_id": m.local_id, "stale": m.stale,
            "p": pred.and_then(|p| p.of(s.id)),
            "channels": smp.values.to_vec(),
        })).collect::<Vec<_>>(),
        "edges": t.edges.iter().map(|&(a, b)| json!([nm(a), nm(b)])).collect::<Vec<_>>(),
        "unresolved_remote_edges": t.unresolved,
        "prediction": pred.map(|p| json!({"ts_ms": p.ts_ms, "model": p.model, "infer_us": p.infer_us})),
    })
}

pub async fn run(o: CentralOptions) -> anyhow::Result<()> {
    super::check_url(&o.url)?;
    let opts = super::options(
        o.creds.as_deref(),
        o.ca.as_deref(),
        &format!("seer-central {}", o.name),
    )?;
    let client = opts
        .connect(o.url.as_str())
        .await
        .map_err(|e| super::ClusterError::Connect {
            url: o.url.clone(),
            msg: e.to_string(),
        })?;
    let servers = client.server_info().connect_urls.len().max(1);
    let replicas = o.replicas.unwrap_or(if servers >= 3 { 3 } else { 1 });
    let js = jetstream::new(client.clone());
    let stream = ensure_stream(&js, o.retention, replicas).await?;
    let lease = Lease::open(&js, &o.name, o.lease, replicas).await?;
    let model = o
        .model
        .clone()
        .or_else(crate::infer::default_model)
        .ok_or_else(|| anyhow::anyhow!("no model: give --model PATH"))?;
    let mut predictor = Predictor::start(&model, o.ort_lib.as_deref(), o.tick_ms)
        .map_err(|e| anyhow::anyhow!("predict: {e}"))?;
    let window_ms = (MAX_T as u64 + 10) * o.tick_ms;
    let mut msgs = Some(consume(&stream, crate::util::now_ms().saturating_sub(window_ms)).await?);
    let mut last_follow: Option<Instant> = None;
    let mut was_connected = true;
    log::info!(
        "central {}: following {STREAM} at {} ({servers} server(s) seen), model {}",
        o.name,
        o.url,
        model.display()
    );
    let mut outbox = match o.alerts.any() {
        false => None,
        true => {
            let store = seer_store::Store::open(
                &o.db,
                seer_store::StoreConfig {
                    tick_ms: o.tick_ms,
                    ..Default::default()
                },
            )
            .with_context(|| format!("opening the alerts' outbox {} (--db)", o.db.display()))?;
            Some(crate::alert::Outbox::start(
                store,
                &o.alerts,
                &o.metrics_addr,
            )?)
        }
    };
    // What the leader asked each host about: (host, service) -> the alarm, for its alert.
    let mut asked: HashMap<(String, String), RespondRequest> = HashMap::new();
    let events_subject = format!("{}.>", super::EVENTS_PREFIX);
    let mut events = client
        .subscribe(events_subject.clone())
        .await
        .with_context(|| format!("subscribing to {events_subject}"))?;
    // Hosts' answers (diagnosis, decision) since the last tick printed.
    let mut answers: Vec<serde_json::Value> = Vec::new();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let (roles, lease_task) = spawn_lease(lease, stop_rx);

    let mut asm = Assembler::new(o.tick_ms, o.forget_ms);
    let mut refused = Refusals::default();
    let mut interval = tokio::time::interval(Duration::from_millis(o.tick_ms));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let lag_slots = o.lag_ms.div_ceil(o.tick_ms).max(1);
    let mut published_ts = 0u64;
    let mut alarmed_ts = 0u64;
    let mut alarms = Alarms::default();
    // Alarms and hosts' answers since the last tick printed.
    let mut fired: Vec<serde_json::Value> = Vec::new();
    // The newest cluster tick, and since when its inference result is awaited.
    let mut cur: Option<ClusterTick> = None;
    let mut awaiting: Option<Instant> = None;
    let mut assembled_at = Instant::now();
    let mut n = 0u64;
    let mut last_log = Instant::now();
    let mut st = CentralStats::default();
    // On a terminal without --json: the live table, each second.
    let live = !o.json && std::io::IsTerminal::is_terminal(&std::io::stdout());
    // /metrics asks for a rendering; the loop answers between two ticks.
    let (scrapes, mut scrape_rx) = tokio::sync::mpsc::channel(16);
    // The live view of the whole cluster (`/ui` on the same listener).
    let feed = crate::serve::ui::Feed::default();
    let mut timeline = crate::respond::timeline::Timeline::default();
    if o.metrics_addr != "off" {
        tokio::spawn(crate::serve::server::serve(
            o.metrics_addr.clone(),
            scrapes,
            None,
            Some(feed.clone()),
        ));
    }
    loop {
        tokio::select! {
            m = next_msg(&mut msgs) => match m {
                Some(Ok(m)) => take(&mut asm, m.subject.as_str(), &m.payload, &mut refused),
                // NATS restarted, the consumer lost: follow the stream again (below).
                Some(Err(e)) => {
                    log::warn!("central: reading the stream: {e}; following it again");
                    msgs = None;
                }
                None => {
                    log::warn!("central: the samples consumer ended; following the stream again");
                    msgs = None;
                }
            },
            _ = interval.tick() => {}
            _ = tokio::time::sleep(Duration::from_millis(2)), if awaiting.is_some() => {}
            Some(m) = events.next() => {
                match answer(&m.payload) {
                    Some(a) => {
                        log::info!("central: {} answered: {}", m.subject, a["answer"]);
                        let ans = &a["answer"];
                        timeline.note(
                            ans["ts_ms"].as_u64().unwrap_or_else(crate::util::now_ms),
                            "diagnosis",
                            &format!("{}/{}", a["host"].as_str().unwrap_or(""), ans["service"].as_str().unwrap_or("")),
                            format!(
                                "{} ({} mode), answered by its host",
                                ans["resource"].as_str().unwrap_or("inconclusive"),
                                ans["mode"].as_str().unwrap_or("?")
                            ),
                        );
                        let key = (
                            a["host"].as_str().unwrap_or("").to_string(),
                            a["answer"]["service"].as_str().unwrap_or("").to_string(),
                        );
                        if let (Some(req), Some(ob), Role::Leader { .. }) =
                            (asked.remove(&key), outbox.as_mut(), &*roles.borrow())
                        {
                            use crate::respond::Alerts as _;
                            ob.queue(&alert_of(&key.0, &req, &a["answer"]));
                        }
                        if answers.len() < 64 {
                            answers.push(a);
                        }
                    }
                    None => refused.note("answer", || format!("an answer on {} that is not one", m.subject)),
                }
                continue;
            }
            Some(reply) = scrape_rx.recv() => {
                st.hosts_heard = asm.hosts();
                st.refused = refused.list();
                let _ = reply.send(super::stats::render(&st));
                continue;
            }
            _ = term.recv() => { log::info!("SIGTERM: stopping"); break; }
            _ = int.recv() => { log::info!("SIGINT: stopping"); break; }
        }
        // Back from a disconnection (a NATS server restarted or lost): the consumer may be gone
        // with it; follow the stream again at once rather than wait for its heartbeats to fail.
        let connected = client.connection_state() == async_nats::connection::State::Connected;
        if connected && !was_connected && msgs.is_some() {
            log::info!("central: reconnected to NATS; following {STREAM} again");
            msgs = None;
            last_follow = None;
        }
        was_connected = connected;
        if msgs.is_none() && last_follow.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            last_follow = Some(Instant::now());
            // From the last assembled tick: what came meanwhile is taken, nothing twice.
            let from = asm
                .closed()
                .map_or_else(crate::util::now_ms, |s| s * o.tick_ms);
            match consume(&stream, from).await {
                Ok(m) => {
                    log::info!("central: following {STREAM} again");
                    msgs = Some(m);
                }
                Err(e) => log::debug!("central: following {STREAM}: {e:#}"),
            }
        }
        let now_slot = asm.slot_of(crate::util::now_ms());
        let t0 = Instant::now();
        // A slot closes when every host has sent it, or `lag_ms` after it ended at the latest.
        let due = now_slot.saturating_sub(lag_slots);
        let target = asm
            .complete_through()
            .map_or(due, |c| c.min(now_slot).max(due));
        let ticks = asm.close_until(target, MAX_T + 10);
        let assembled = !ticks.is_empty();
        let mut after_slot_ms = 0i64;
        if let Some((last, history)) = ticks.split_last() {
            st.assembly_us = t0.elapsed().as_micros() as u64;
            // How long after the end of its slot the newest tick was assembled (negative:
            // before).
            after_slot_ms = crate::util::now_ms() as i64 - ((last.slot + 1) * o.tick_ms) as i64;
            st.max_assembly_us = st.max_assembly_us.max(st.assembly_us);
            st.late_host_ticks += ticks
                .iter()
                .map(|t| t.stale_hosts.len() as u64)
                .sum::<u64>();
            // Older slots (a catch-up, or a loop that fell behind) only fill the window; the
            // newest is predicted. Each has its JSON line all the same.
            let role = roles.borrow().clone();
            for t in history {
                predictor.window.push(&t.services, &t.samples);
                if o.json {
                    crate::output::print_line(&tick_json(t, &role, &o.name, None));
                }
            }
            predictor.on_tick(last.ts_ms, &last.services, &last.samples, &last.edges);
            awaiting = Some(Instant::now());
            assembled_at = Instant::now();
        }
        if let Some(t) = ticks.into_iter().next_back() {
            cur = Some(t);
        }
        let Some(last) = cur.as_ref() else {
            continue;
        };
        // The result of this tick's inference is published as soon as it is there (polled
        // every 2 ms for up to a tick), not at the next tick.
        if awaiting.is_some_and(|t| {
            predictor.latest().is_some_and(|p| p.ts_ms >= last.ts_ms)
                || t.elapsed() >= Duration::from_millis(o.tick_ms)
        }) {
            awaiting = None;
        }
        let role = roles.borrow().clone();
        let pred = predictor.latest().filter(|p| p.ts_ms > published_ts);
        if let (Role::Leader { term }, Some(p)) = (&role, &pred) {
            let v = tick_json(last, &role, &o.name, Some(p));
            // From the tick's assembly to this publication (inference included), when this is
            // the newest tick's result.
            let after_assembly_ms =
                (p.ts_ms == last.ts_ms).then(|| assembled_at.elapsed().as_secs_f64() * 1000.0);
            let body = serde_json::json!({
                "ts_ms": p.ts_ms, "leader": o.name, "term": term, "model": p.model,
                "infer_us": p.infer_us, "assembly_us": st.assembly_us,
                "published_after_assembly_ms": after_assembly_ms,
                "services": v["services"].as_array().map(|a| a.iter().map(|s| serde_json::json!({
                    "host": s["host"], "name": s["name"], "p": s["p"], "stale": s["stale"],
                })).collect::<Vec<_>>()),
            });
            match client.publish(PREDICTIONS, body.to_string().into()).await {
                Ok(()) => {
                    published_ts = p.ts_ms;
                    st.published += 1;
                }
                Err(e) => log::warn!("central: publishing on {PREDICTIONS}: {e}"),
            }
        }
        // The alarm policy over every new result, leader or not (a standby that takes over
        // knows which alarms already fired); only the leader asks the culprit's host.
        if let Some(p) = predictor.latest().filter(|p| p.ts_ms > alarmed_ts) {
            alarmed_ts = p.ts_ms;
            let model = predictor.status().model;
            let d = AlarmConfig::agent_defaults();
            let cfg = AlarmConfig {
                threshold: model.as_ref().map_or(d.threshold, |m| m.threshold),
                consecutive: model.as_ref().map_or(d.consecutive, |m| m.consecutive),
                ..d
            };
            for ev in alarms.update(&cfg, p.ts_ms, &p.pairs()) {
                let AlarmEvent::Fired { id, p: prob, .. } = ev else {
                    continue;
                };
                let Some(m) = last
                    .services
                    .iter()
                    .position(|s| s.id == id)
                    .and_then(|k| last.members.get(k))
                else {
                    continue;
                };
                st.alarms += 1;
                fired.push(serde_json::json!({"host": m.host, "name": m.name, "p": prob}));
                timeline.note(
                    p.ts_ms,
                    "alarm",
                    &format!("{}/{}", m.host, m.name),
                    format!("p = {prob:.2}, the model's (cluster)"),
                );
                if let Role::Leader { term } = role {
                    let req = RespondRequest {
                        v: super::wire::VERSION,
                        ts_ms: p.ts_ms,
                        service_id: m.local_id,
                        service: m.name.clone(),
                        p: prob,
                        horizon_ms: model.as_ref().map_or(0, |m| m.horizon_ms),
                        model: p.model.clone(),
                        leader: o.name.clone(),
                        term,
                    };
                    let subject = respond_subject(&m.host);
                    log::warn!(
                        "central: alarm on {}/{} (p = {prob:.2}): asking its host to respond on {subject}",
                        m.host,
                        m.name
                    );
                    if let Ok(body) = serde_json::to_vec(&req) {
                        match client.publish(subject.clone(), body.into()).await {
                            Ok(()) => st.requests += 1,
                            Err(e) => log::warn!("central: publishing on {subject}: {e}"),
                        }
                    }
                    if asked.len() < 4096 {
                        asked.insert((m.host.clone(), m.name.clone()), req);
                    }
                }
            }
        }
        if !assembled {
            continue;
        }
        n += 1;
        st.ticks = n;
        (st.leader, st.term) = match role {
            Role::Leader { term } => (true, term),
            Role::Standby { .. } => (false, 0),
        };
        st.hosts_in_tick = last.hosts;
        st.late_hosts = last.stale_hosts.len();
        st.services = last.services.len();
        st.edges = last.edges.len();
        st.unresolved = last.unresolved;
        if let Some(p) = predictor.latest() {
            st.infer_us = p.infer_us;
            st.probabilities = last
                .services
                .iter()
                .zip(&last.members)
                .filter_map(|(s, m)| Some((m.host.clone(), m.name.clone(), p.of(s.id)?)))
                .collect();
        }
        if o.metrics_addr != "off" && feed.due() {
            let model = predictor.status().model;
            let mut snap = crate::serve::ui::snapshot(
                ui_tick_json(last, predictor.latest().as_ref()),
                model.as_ref().map(|m| m.threshold),
                None,
                timeline.recent(),
            );
            snap["source"] = serde_json::json!(format!(
                "central {} ({}), {} hosts",
                o.name,
                if st.leader { "leader" } else { "standby" },
                last.hosts
            ));
            feed.publish(&snap);
        }
        if o.json {
            let mut v = tick_json(last, &role, &o.name, predictor.latest().as_ref());
            v["alarms"] = serde_json::Value::Array(std::mem::take(&mut fired));
            v["assembled_after_slot_ms"] = serde_json::json!(after_slot_ms);
            v["answers"] = serde_json::Value::Array(std::mem::take(&mut answers));
            crate::output::print_line(&v);
        } else if live && last_log.elapsed() >= Duration::from_secs(1) {
            last_log = Instant::now();
            st.hosts_heard = asm.hosts();
            st.refused = refused.list();
            print!("{}", super::stats::live_table(&o.name, &st));
        } else if last_log.elapsed() >= Duration::from_secs(1) {
            last_log = Instant::now();
            log::info!(
                "central: tick {n}: {} of {} hosts ({} late), {} services, {} edges, {} refused messages, {:?}",
                last.hosts,
                asm.hosts(),
                last.stale_hosts.len(),
                last.services.len(),
                last.edges.len(),
                refused.total(),
                role
            );
        }
        answers.clear();
        fired.clear();
        if o.ticks.is_some_and(|t| n >= t) {
            break;
        }
    }
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(2), lease_task).await;
    predictor.shutdown();
    if let Some(mut ob) = outbox.take() {
        use crate::respond::Alerts as _;
        ob.shutdown(Duration::from_secs(2));
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), client.drain()).await;
    log::info!("central {}: stopped", o.name);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_messages_are_counted_and_never_taken() {
        let mut a = Assembler::new(100, 5000);
        let mut r = Refusals::default();
        take(&mut a, "seer.samples.h1", b"garbage", &mut r);
        let mut t = super::super::wire::tests::sample_tick();
        t.ts_ms = crate::util::now_ms();
        let mut b = Vec::new();
        t.encode(&mut b);
        // A host publishing under another host's subject.
        take(&mut a, "seer.samples.other", &b, &mut r);
        // A future schema version.
        let mut v2 = b.clone();
        v2[2] = 9;
        take(&mut a, "seer.samples.web-1", &v2, &mut r);
        assert_eq!(r.counts.get("decode"), Some(&1));
        assert_eq!(r.counts.get("host"), Some(&1));
        assert_eq!(r.counts.get("version"), Some(&1));
        assert_eq!(a.hosts(), 0);
        take(&mut a, "seer.samples.web-1", &b, &mut r);
        assert_eq!(a.hosts(), 1);
        assert_eq!(r.total(), 3);
    }
}
