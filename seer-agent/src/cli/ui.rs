//! `seer-agent ui --db STORE`: the live view's page over a recorded trace store (a stopped
//! agent's, or a copy of a running one's), for review after the fact: the call graph, each
//! service's channels and predicted probability over the last minutes, the episodes the store
//! kept. Served on loopback by default, with the same access rules as the agent's listener.
//!
//! The store's last minutes become the live view's feed history (one snapshot per
//! [`MIN_INTERVAL`] of recorded time, built as the tick loop builds them: `output::tick_json`
//! over the recorded services, calls, channels and the model's stored probabilities), with
//! the episodes the store kept: violations and recoveries, initiators, diagnoses, actions and
//! rollbacks. Alarms and alert deliveries are not in the store, so they are not replayed.
use std::{collections::BTreeMap, path::PathBuf};

use anyhow::Context as _;
use serde_json::{Value, json};

use seer_common::sample::{CHANNELS, Sample, ServiceId};
use seer_store::Store;

use crate::{
    discovery::{Discovery, Service},
    infer::Prediction,
    output,
    serve::ui::{Feed, HISTORY, MIN_INTERVAL, snapshot},
};

#[derive(clap::Args, Clone, Debug)]
pub struct UiArgs {
    /// The trace store (redb lets one process open it: stop the agent, or copy the file).
    #[arg(long, value_name = "PATH")]
    pub db: PathBuf,
    /// Where to serve the page (`/ui`) and `/metrics` (loopback unless you say otherwise).
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub metrics_addr: String,
    /// How much of the end of the recording to show, in minutes.
    #[arg(long, default_value_t = 5)]
    pub minutes: u64,
}

pub fn run(a: &UiArgs) -> anyhow::Result<()> {
    let store = seer_store::Store::open(&a.db, seer_store::StoreConfig::default())
        .with_context(|| format!("opening {}", a.db.display()))?;
    let db = a.db.display().to_string();
    let (feed, l) = load(&store, &db, a.minutes)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async {
        // /metrics: nothing live to say.
        let (scrapes, mut rx) = tokio::sync::mpsc::channel::<tokio::sync::oneshot::Sender<String>>(4);
        tokio::spawn(async move {
            while let Some(reply) = rx.recv().await {
                let _ = reply.send("# seer-agent ui --db: a recorded store, no live metrics\n".into());
            }
        });
        let server = tokio::spawn(crate::serve::server::serve(
            a.metrics_addr.clone(),
            scrapes,
            Some(store),
            Some(feed),
        ));
        println!(
            "seer-agent ui: http://{}/ui  ({db}: {} to {} UTC, {} services, {} snapshots, {} episodes)",
            a.metrics_addr,
            seer_store::query::format_ts(l.from_ms),
            seer_store::query::format_ts(l.to_ms),
            l.services,
            l.snapshots,
            l.episodes,
        );
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            r = server => { r.context("the listener")?; anyhow::bail!("the listener stopped (see above)") }
        }
        Ok(())
    })
}

/// What was loaded.
#[derive(Debug)]
pub struct Loaded {
    pub from_ms: u64,
    pub to_ms: u64,
    pub snapshots: usize,
    pub services: usize,
    pub episodes: usize,
}

/// The episodes the store keeps in `[from, to]`, oldest first, as the timeline writes them
/// (`qos`: the store's violations up to `to`).
fn episodes(
    store: &Store,
    qos: &[seer_store::QosEvent],
    d: &Discovery,
    from: u64,
    to: u64,
) -> anyhow::Result<Vec<Value>> {
    let name = |s: Option<ServiceId>| s.map_or(String::new(), |s| d.name_of(s).to_string());
    let ep = |ts: u64, kind: &str, service: String, text: String| json!({"ts_ms": ts, "kind": kind, "service": service, "text": text});
    let mut out = Vec::new();
    for q in qos {
        if q.start_ms < from && q.end_ms != 0 && q.end_ms < from {
            continue;
        }
        out.push(ep(q.start_ms, "violation", String::new(), q.kind.clone()));
        if let Some(i) = q.initiator {
            out.push(ep(
                q.start_ms,
                "initiator",
                name(Some(i)),
                "named the violation's initiator".into(),
            ));
        }
        if q.end_ms != 0 && q.end_ms <= to {
            out.push(ep(q.end_ms, "recovered", String::new(), q.kind.clone()));
        }
    }
    for r in store.diagnoses(from, to + 1)? {
        let v: Value = serde_json::from_str(&r.json).unwrap_or(Value::Null);
        let text = match (&v["resource"], &v["reason"], &v["error"]) {
            (_, _, Value::String(e)) => format!("failed: {e}"),
            (res, Value::String(why), _) => format!(
                "{} (confidence {:.2}): {why}",
                res.as_str().unwrap_or("inconclusive"),
                v["confidence"].as_f64().unwrap_or(0.0)
            ),
            _ => "recorded".into(),
        };
        out.push(ep(r.ts_ms, "diagnosis", name(r.service), text));
    }
    for a in store.actions(false)? {
        if (from..=to).contains(&a.ts_ms) {
            out.push(ep(
                a.ts_ms,
                "action",
                name(a.service),
                format!("{}: {}", a.kind, a.detail),
            ));
        }
        if let Some(u) = a.undone_ms.filter(|u| (from..=to).contains(u)) {
            out.push(ep(u, "rollback", name(a.service), a.kind.clone()));
        }
    }
    out.sort_by_key(|e| e["ts_ms"].as_u64().unwrap_or(0));
    Ok(out)
}

/// The QoS the store's violations name ("p99>50ms"): its target, and whether one is active
/// at `ts`.
fn qos_at(events: &[seer_store::QosEvent], ts: u64) -> Option<Value> {
    let target = events.iter().find_map(|q| {
        q.kind
            .strip_prefix("p99>")
            .and_then(|r| r.strip_suffix("ms"))
            .and_then(|ms| ms.parse::<f64>().ok())
    })?;
    let violated = events
        .iter()
        .any(|q| q.start_ms <= ts && (q.end_ms == 0 || ts < q.end_ms));
    Some(json!({"front_end": "", "target_ms": target, "p99_ms": null, "violated": violated}))
}

/// Fills a feed with the last `minutes` of `store` (the newest tick last).
pub fn load(store: &Store, db: &str, minutes: u64) -> anyhow::Result<(Feed, Loaded)> {
    let tick_ms = store.tick_ms()?.max(1);
    let Some(to) = store.last_tick_ms()? else {
        anyhow::bail!("{db}: no tick recorded (was an agent ever run with --db {db}?)");
    };
    let from = to.saturating_sub(minutes.max(1) * 60_000);
    // The recorded services and calls, ordered as the tick loop orders them.
    let mut d = Discovery::default();
    for s in store.services()? {
        if s.last_seen_ms >= from {
            d.services.push(Service {
                id: s.id,
                name: s.name,
                identity: s.identity,
                ..Default::default()
            });
        }
    }
    d.edges = store.edges_between(from, to + 1)?.into_iter().collect();
    for (s, addr, _, last) in store.remote_edges()? {
        if last >= from
            && let Ok(a) = addr.parse()
        {
            d.remote_edges.insert((s, a));
        }
    }
    d.order();
    let preds: BTreeMap<u64, seer_store::Prediction> = store
        .predictions(from, to + 1)?
        .into_iter()
        .map(|p| (p.ts_ms, p))
        .collect();
    let qos_events = store.qos_events(0, to + 1)?;
    let eps = episodes(store, &qos_events, &d, from, to)?;
    let every = MIN_INTERVAL.as_millis() as u64 / tick_ms;
    let feed = Feed::default();
    let mut iter = store.range(from, to + 1)?;
    let mut tick = seer_store::TickSamples::default();
    let (mut n, mut next_ts) = (0usize, 0u64);
    while iter.next_into(&mut tick)? {
        let last = tick.ts_ms >= to;
        if tick.ts_ms < next_ts && !last {
            continue;
        }
        next_ts = tick.ts_ms + every.max(1) * tick_ms;
        let by_id: BTreeMap<ServiceId, [f32; CHANNELS]> =
            tick.samples.iter().map(|s| (s.service, s.values)).collect();
        let samples: Vec<Sample> = d
            .services
            .iter()
            .map(|s| Sample {
                service: s.id,
                ts_ms: tick.ts_ms,
                values: by_id.get(&s.id).copied().unwrap_or([0.0; CHANNELS]),
            })
            .collect();
        // The newest result at or before this tick, if it is recent (a model that stopped
        // predicting leaves no stale colours).
        let pred = preds
            .range(..=tick.ts_ms)
            .next_back()
            .filter(|(t, _)| tick.ts_ms - **t <= 10 * tick_ms)
            .map(|(_, p)| Prediction {
                ts_ms: p.ts_ms,
                model: p.model.clone(),
                ids: p.p.iter().map(|(id, _)| *id).collect(),
                p: p.p.iter().map(|(_, v)| *v).collect(),
                infer_us: 0,
            });
        let upto = eps.partition_point(|e| e["ts_ms"].as_u64().unwrap_or(0) <= tick.ts_ms);
        let recent = eps[upto.saturating_sub(crate::respond::timeline::KEPT)..upto].to_vec();
        let mut snap = snapshot(
            output::tick_json(tick.ts_ms, &d, &samples, pred.as_ref()),
            None,
            qos_at(&qos_events, tick.ts_ms),
            recent,
        );
        snap["source"] = json!(format!("recorded {db}"));
        feed.publish(&snap);
        n += 1;
    }
    if n == 0 {
        anyhow::bail!("{db}: no tick in the last {minutes} minutes recorded");
    }
    Ok((
        feed,
        Loaded {
            from_ms: from,
            to_ms: to,
            snapshots: n.min(HISTORY),
            services: d.services.len(),
            episodes: eps.len(),
        },
    ))
}
