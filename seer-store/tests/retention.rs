//! Retention by age (downsampling, expiry) and by size (cap, full disk).

mod common;

use common::{T0, sample, temp_store};
use seer_common::sample::{CHANNELS, ServiceId};
use seer_store::synth::Synth;
use seer_store::{
    Durability, QosEvent, RetentionPolicy, Store, StoreConfig, Tick, Writer, WriterConfig,
};
use std::time::Duration;

fn config(full_s: u64, agg_s: u64, max_bytes: u64) -> StoreConfig {
    StoreConfig {
        retention: RetentionPolicy {
            full_resolution_ms: full_s * 1000,
            aggregate_ms: agg_s * 1000,
            max_bytes,
        },
        ..StoreConfig::default()
    }
}

/// Writes ticks `from..to` (100 ms apart) of services 0..3, channel c of tick k = k + c.
fn write_ticks(store: &Store, from: u64, to: u64) {
    for k in from..to {
        let samples: Vec<_> = (0..3).map(|id| sample(id, k as f32)).collect();
        store
            .write_tick(T0 + k * 100, &samples, &[])
            .expect("write");
    }
}

#[test]
fn old_samples_become_per_second_min_mean_max() {
    let (_dir, _path, store) = temp_store(config(2, 3600, 1 << 30));
    write_ticks(&store, 0, 60); // 6 s
    let report = store.run_retention(T0 + 5900).expect("retention");
    // Seconds 0..3 end before now - 2 s = 3.9 s.
    assert_eq!(report.seconds_downsampled, 3);
    assert_eq!(report.sample_rows_downsampled, 30);
    let first = store
        .range(0, u64::MAX)
        .expect("range")
        .next()
        .expect("a tick")
        .expect("decodes");
    assert_eq!(first.ts_ms, T0 + 3000);
    let aggs = store
        .aggregates(ServiceId(1), 0, u64::MAX)
        .expect("aggregates");
    assert_eq!(
        aggs.iter().map(|a| a.ts_ms).collect::<Vec<_>>(),
        [T0, T0 + 1000, T0 + 2000]
    );
    let second = &aggs[1].agg; // ticks 10..19
    assert_eq!(second.count, 10);
    for c in 0..CHANNELS {
        assert_eq!(second.min[c], 10.0 + c as f32);
        assert_eq!(second.max[c], 19.0 + c as f32);
        assert_eq!(second.mean[c], 14.5 + c as f32);
    }
    // Nothing more to do until time moves on.
    assert_eq!(
        store
            .run_retention(T0 + 5900)
            .expect("again")
            .seconds_downsampled,
        0
    );
}

#[test]
fn aggregates_and_what_describes_them_expire() {
    let (_dir, _path, store) = temp_store(config(1, 3, 1 << 30));
    let edges = [(ServiceId(0), ServiceId(1))];
    for k in 0..100 {
        // 10 s, always the same graph: one snapshot, at T0.
        let samples: Vec<_> = (0..3).map(|id| sample(id, k as f32)).collect();
        store
            .write_tick(T0 + k * 100, &samples, &edges)
            .expect("write");
    }
    store
        .record_qos_event(&QosEvent {
            start_ms: T0,
            end_ms: T0 + 500,
            initiator: None,
            kind: "old".into(),
        })
        .expect("event");
    store
        .record_qos_event(&QosEvent {
            start_ms: T0 + 9000,
            end_ms: T0 + 9500,
            initiator: None,
            kind: "new".into(),
        })
        .expect("event");
    store.enqueue_alert(T0, "never delivered").expect("alert");
    // Diagnoses, calls to other hosts and services: before, kept forever.
    store
        .record_diagnosis(T0 + 100, Some(ServiceId(0)), "{}")
        .expect("diagnosis");
    store
        .record_diagnosis(T0 + 9000, Some(ServiceId(0)), "{}")
        .expect("diagnosis");
    store
        .record_remote_edges(&[(ServiceId(0), "192.0.2.1:80")], T0 + 100)
        .expect("remote");
    store
        .record_remote_edges(&[(ServiceId(1), "192.0.2.2:80")], T0 + 9000)
        .expect("remote");
    store
        .upsert_services(
            &[(ServiceId(7), "gone", "g"), (ServiceId(1), "live", "l")],
            T0,
        )
        .expect("services");
    store
        .upsert_services(&[(ServiceId(1), "live", "l")], T0 + 9000)
        .expect("refreshed");
    let done = store
        .record_action(T0, None, "tc.htb", "x")
        .expect("action");
    store.mark_action_undone(done, T0 + 1).expect("undo");
    let live = store
        .record_action(T0, None, "cgroup.cpu", "y")
        .expect("action");
    let now = T0 + 9900;
    let mut total = 0;
    for _ in 0..3 {
        total += store
            .run_retention(now)
            .expect("retention")
            .seconds_downsampled;
    }
    assert_eq!(total, 8, "seconds 0..8 end before now - 1 s");
    let aggs = store
        .aggregates(ServiceId(0), 0, u64::MAX)
        .expect("aggregates");
    assert_eq!(
        aggs.first().map(|a| a.ts_ms),
        Some(T0 + 7000),
        "older than now - 3 s expired"
    );
    // The graph snapshot from T0 is still the one in force.
    assert_eq!(store.edges_at(now).expect("edges"), edges.to_vec());
    let kinds: Vec<_> = store
        .qos_events(0, u64::MAX)
        .expect("events")
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, ["new"]);
    assert!(store.pending_alerts(10).expect("alerts").is_empty());
    let actions = store.actions(false).expect("actions");
    assert_eq!(
        actions.iter().map(|a| a.id).collect::<Vec<_>>(),
        [live],
        "actions in force are kept"
    );
    let diags = store.diagnoses(0, u64::MAX).expect("diagnoses");
    assert_eq!(
        diags.iter().map(|d| d.ts_ms).collect::<Vec<_>>(),
        [T0 + 9000]
    );
    let remote = store.remote_edges().expect("remote");
    assert_eq!(remote.len(), 1);
    assert_eq!(remote[0].1, "192.0.2.2:80");
    let names: Vec<String> = store
        .services()
        .expect("services")
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["live"], "a service seen recently stays");
    assert_eq!(
        store.service_id_max().expect("max"),
        7,
        "a deleted service's id is never given again"
    );
}

fn synth_tick(synth: &Synth, services: u32, k: u64) -> Tick {
    let mut t = Tick {
        ts_ms: T0 + k * 100,
        ..Tick::default()
    };
    synth.fill(services, t.ts_ms, &mut t.samples);
    t
}

/// Submits `ticks` ticks through a writer, checking disk use as it goes.
fn fill_through_writer(
    store: &Store,
    ticks: u64,
    maintenance_every_ms: u64,
) -> seer_store::WriterStats {
    let cap = store.config().retention.max_bytes;
    let writer = Writer::spawn(
        store.clone(),
        WriterConfig {
            queue_ticks: 4096,
            max_batch: 1,
            maintenance_every_ms,
        },
    )
    .expect("spawn");
    let synth = Synth::new(1);
    let mut peak = 0;
    for k in 0..ticks {
        assert!(
            writer.submit(synth_tick(&synth, 300, k)),
            "queue never fills here"
        );
        if k % 100 == 99 {
            assert!(writer.flush(Duration::from_secs(60)), "writer keeps up");
            peak = peak.max(store.disk_usage().expect("usage").disk_bytes);
        }
    }
    assert!(writer.flush(Duration::from_secs(60)));
    peak = peak.max(store.disk_usage().expect("usage").disk_bytes);
    assert!(peak <= cap, "disk use {peak} passed the cap {cap}");
    writer.shutdown()
}

#[test]
fn size_cap_deletes_the_oldest_and_the_file_stops_growing() {
    let (_dir, _path, store) = temp_store(config(3600, 7 * 86_400, 8 << 20));
    let stats = fill_through_writer(&store, 1500, 1000);
    assert_eq!(stats.ticks_written, 1500, "{stats:?}");
    assert_eq!(stats.ticks_dropped, 0);
    assert!(stats.retention_deleted > 0, "{stats:?}");
    let first = store
        .range(0, u64::MAX)
        .expect("range")
        .next()
        .expect("a tick")
        .expect("decodes");
    assert!(first.ts_ms > T0, "oldest ticks deleted");
    assert_eq!(
        store.last_tick_ms().expect("last"),
        Some(T0 + 1499 * 100),
        "newest kept"
    );
    let ticks = store.range(0, u64::MAX).expect("range").count() as u64;
    assert_eq!(
        first.ts_ms + (ticks - 1) * 100,
        T0 + 1499 * 100,
        "what is kept is contiguous"
    );

    // Reopened, the store still knows what the file takes and stays under the cap.
    let (cfg, path) = (store.config().clone(), store.path().to_owned());
    drop(store);
    let store = Store::open(&path, cfg).expect("reopen");
    let writer = Writer::spawn(
        store.clone(),
        WriterConfig {
            maintenance_every_ms: 1000,
            ..WriterConfig::default()
        },
    )
    .expect("spawn");
    let synth = Synth::new(2);
    for k in 1500..2000 {
        writer.submit(synth_tick(&synth, 300, k));
        if k % 50 == 0 {
            assert!(writer.flush(Duration::from_secs(60)));
        }
    }
    let stats = writer.shutdown();
    assert_eq!(stats.ticks_written + stats.ticks_dropped, 500);
    assert_eq!(stats.ticks_dropped, 0, "{stats:?}");
    let taken = store.disk_usage().expect("usage").disk_bytes;
    assert!(taken <= 8 << 20, "{taken} bytes on disk after reopening");
}

#[test]
fn full_disk_drops_the_oldest_and_keeps_recording() {
    // No maintenance: only the cap enforced on writes (as a full disk would) stops growth.
    let mut cfg = config(3600, 7 * 86_400, 4 << 20);
    cfg.durability = Durability::Batched { ticks: 20 };
    let (_dir, _path, store) = temp_store(cfg);
    let stats = fill_through_writer(&store, 1200, u64::MAX / 2);
    assert!(stats.disk_full_events > 0, "{stats:?}");
    assert!(stats.retention_deleted > 0, "{stats:?}");
    assert!(stats.ticks_written >= 1100, "keeps recording: {stats:?}");
    assert_eq!(stats.ticks_written + stats.ticks_dropped, 1200);
    assert_eq!(store.last_tick_ms().expect("last"), Some(T0 + 1199 * 100));
    for tick in store.range(0, u64::MAX).expect("range") {
        tick.expect("every row decodes after recovery");
    }
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

fn writer(store: &Store) -> seer_store::WriterHandle {
    Writer::spawn(
        store.clone(),
        WriterConfig {
            queue_ticks: 4096,
            max_batch: 1,
            maintenance_every_ms: 1000,
        },
    )
    .expect("spawn")
}

fn submit(w: &seer_store::WriterHandle, ts_ms: u64) {
    let samples = (0..3).map(|id| sample(id, 1.0)).collect();
    assert!(w.submit(Tick {
        ts_ms,
        samples,
        ..Tick::default()
    }));
}

/// One tick stamped a month ahead of the wall clock (a bad clock, a bad peer) must not make
/// retention delete everything as if a month had passed.
#[test]
fn a_tick_far_in_the_future_deletes_nothing() {
    let (_dir, _path, store) = temp_store(config(10, 3600, 1 << 30));
    let start = wall_ms() - 120_000;
    let w = writer(&store);
    for k in 0..600 {
        submit(&w, start + k * 100);
    }
    assert!(w.flush(Duration::from_secs(60)));
    store
        .enqueue_alert(start, "not delivered yet")
        .expect("alert");
    let aggs_before = store.aggregates(ServiceId(0), 0, u64::MAX).expect("aggs");
    assert!(!aggs_before.is_empty(), "downsampling ran");
    submit(&w, wall_ms() + 30 * 86_400_000);
    for k in 600..700 {
        submit(&w, start + k * 100);
    }
    assert!(w.flush(Duration::from_secs(60)));
    let stats = w.shutdown();
    let aggs = store.aggregates(ServiceId(0), 0, u64::MAX).expect("aggs");
    assert!(
        aggs.len() >= aggs_before.len(),
        "aggregates deleted: {} -> {}",
        aggs_before.len(),
        aggs.len()
    );
    assert_eq!(
        store.pending_alerts(10).expect("alerts").len(),
        1,
        "alert kept"
    );
    assert_eq!(stats.ticks_refused_future, 1, "{stats:?}");
}

/// A wall clock that steps a month ahead and back: retention advances with the data written
/// (a step counts as at most a minute), so nothing is deleted at once, and it keeps running
/// after the clock steps back.
#[test]
fn a_clock_step_neither_empties_the_store_nor_stops_retention() {
    let (_dir, _path, store) = temp_store(config(10, 3600, 1 << 30));
    let w = writer(&store);
    for k in 0..600 {
        submit(&w, T0 + k * 100);
    }
    assert!(w.flush(Duration::from_secs(60)));
    let aggs_before = store.aggregates(ServiceId(0), 0, u64::MAX).expect("aggs");
    assert!(!aggs_before.is_empty(), "downsampling ran");
    let month = 30 * 86_400_000;
    for k in 0..100 {
        submit(&w, T0 + month + k * 100);
    }
    assert!(w.flush(Duration::from_secs(60)));
    let aggs = store.aggregates(ServiceId(0), 0, u64::MAX).expect("aggs");
    assert!(
        aggs.len() >= aggs_before.len(),
        "a clock step expired the aggregates: {} -> {}",
        aggs_before.len(),
        aggs.len()
    );
    // Back to the right time: retention still runs (samples of the old timeline get folded).
    let before = store
        .aggregates(ServiceId(0), 0, T0 + month)
        .expect("aggs")
        .len();
    for k in 600..1200 {
        submit(&w, T0 + k * 100);
    }
    assert!(w.flush(Duration::from_secs(60)));
    w.shutdown();
    let after = store
        .aggregates(ServiceId(0), 0, T0 + month)
        .expect("aggs")
        .len();
    assert!(
        after > before,
        "retention stopped after the step back: {before} -> {after}"
    );
}

/// The model's results are kept with the tick they arrived in, read back as written, and go
/// with the full-resolution samples when those are downsampled.
#[test]
fn predictions_are_kept_with_their_ticks_and_leave_with_the_raw_samples() {
    let (_dir, _path, store) = temp_store(config(2, 3600, 1 << 30));
    let ticks: Vec<Tick> = (0..60u64)
        .map(|k| Tick {
            ts_ms: T0 + k * 100,
            samples: (0..3).map(|id| sample(id, k as f32)).collect(),
            edges: vec![],
            prediction: Some(seer_store::Prediction {
                ts_ms: T0 + k * 100,
                model: "m".into(),
                p: vec![(ServiceId(0), k as f32 / 100.0), (ServiceId(2), 0.5)],
            }),
        })
        .collect();
    store.write_batch(&ticks).expect("write");
    let all = store.predictions(0, u64::MAX).expect("read");
    assert_eq!(all.len(), 60);
    assert_eq!(all[7], ticks[7].prediction.clone().unwrap());
    let report = store.run_retention(T0 + 5900).expect("retention");
    assert_eq!(report.seconds_downsampled, 3);
    let left = store.predictions(0, u64::MAX).expect("read");
    assert_eq!(
        left.len(),
        30,
        "seconds 0..3 downsampled: their predictions gone"
    );
    assert_eq!(left[0].ts_ms, T0 + 3000);
}
