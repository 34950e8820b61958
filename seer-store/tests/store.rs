//! Write path and read side of the store.

mod common;

use common::{T0, sample, temp_store};
use seer_common::sample::{CHANNELS, Channel, ServiceId};
use seer_store::{QosEvent, Store, StoreConfig};

fn ids(samples: &[seer_common::sample::Sample]) -> Vec<u32> {
    samples.iter().map(|s| s.service.0).collect()
}

#[test]
fn ticks_roundtrip_and_reads_agree() {
    let (_dir, path, store) = temp_store(StoreConfig::default());
    // 1500 services: several chunks per tick; ids with gaps.
    let all: Vec<u32> = (0..1500).map(|i| i * 3 + 1).collect();
    for t in 0..20u64 {
        let samples: Vec<_> = all
            .iter()
            .map(|&id| sample(id, (t * 10_000 + u64::from(id)) as f32))
            .collect();
        store
            .write_tick(T0 + t * 100, &samples, &[])
            .expect("write");
    }
    let ticks: Vec<_> = store
        .range(T0, T0 + 2000)
        .expect("range")
        .collect::<Result<_, _>>()
        .expect("decode");
    assert_eq!(ticks.len(), 20);
    for (t, tick) in ticks.iter().enumerate() {
        assert_eq!(tick.ts_ms, T0 + t as u64 * 100);
        assert_eq!(ids(&tick.samples), all);
        for s in &tick.samples {
            assert_eq!(s.ts_ms, tick.ts_ms);
            assert_eq!(
                s.values,
                sample(
                    s.service.0,
                    (t as u64 * 10_000 + u64::from(s.service.0)) as f32
                )
                .values
            );
        }
    }
    // One service, a sub-range; a service in the middle of a chunk and the last one.
    for id in [1, 2200, 4498] {
        let got = store
            .samples(ServiceId(id), T0 + 500, T0 + 1000)
            .expect("samples");
        assert_eq!(got.len(), 5, "service {id}");
        assert_eq!(got[0].ts_ms, T0 + 500);
        assert_eq!(
            got[0].values,
            sample(id, (5 * 10_000 + u64::from(id)) as f32).values
        );
        let recent = store.recent(ServiceId(id), 3).expect("recent");
        assert_eq!(
            recent.iter().map(|s| s.ts_ms).collect::<Vec<_>>(),
            [T0 + 1700, T0 + 1800, T0 + 1900]
        );
    }
    assert!(
        store
            .samples(ServiceId(2), T0, T0 + 2000)
            .expect("absent")
            .is_empty()
    );
    let latest = store.latest(2).expect("latest");
    assert_eq!(
        latest.iter().map(|t| t.ts_ms).collect::<Vec<_>>(),
        [T0 + 1800, T0 + 1900]
    );
    assert_eq!(store.last_tick_ms().expect("last"), Some(T0 + 1900));

    // Reopening sees the same, and continues.
    drop(store);
    let store = Store::open(&path, StoreConfig::default()).expect("reopen");
    assert_eq!(store.last_tick_ms().expect("last"), Some(T0 + 1900));
    assert_eq!(store.latest(1).expect("latest")[0].samples.len(), 1500);
}

#[test]
fn unsorted_duplicate_and_rewritten_samples() {
    let (_dir, _path, store) = temp_store(StoreConfig::default());
    let samples = vec![
        sample(5, 1.0),
        sample(2, 2.0),
        sample(5, 3.0),
        sample(9, 4.0),
    ];
    store.write_tick(T0, &samples, &[]).expect("write");
    let tick = store.latest(1).expect("latest").remove(0);
    assert_eq!(ids(&tick.samples), [2, 5, 9]);
    assert_eq!(
        tick.samples[1].values,
        sample(5, 3.0).values,
        "last duplicate wins"
    );
    // Writing the same tick again replaces it whole.
    store
        .write_tick(T0, &[sample(7, 0.5)], &[])
        .expect("rewrite");
    let ticks: Vec<_> = store
        .range(0, u64::MAX)
        .expect("range")
        .collect::<Result<_, _>>()
        .expect("decode");
    assert_eq!(ticks.len(), 1);
    assert_eq!(ids(&ticks[0].samples), [7]);
}

#[test]
fn special_values_survive_bit_exact() {
    let (_dir, _path, store) = temp_store(StoreConfig::default());
    let mut s = sample(1, 0.0);
    s.values = [
        0.0,
        -0.0,
        1.5,
        -3.0,
        f32::NAN,
        f32::INFINITY,
        1e-40,
        123_456_789.0,
        0.1,
        f32::MAX,
        -7.25,
        1.0 / 3.0,
        65536.0,
        f32::NEG_INFINITY,
        f32::MIN_POSITIVE,
        0.5,
    ];
    store.write_tick(T0, &[s], &[]).expect("write");
    let got = store
        .samples(ServiceId(1), 0, u64::MAX)
        .expect("read")
        .remove(0);
    assert_eq!(got.values.map(f32::to_bits), s.values.map(f32::to_bits));
}

#[test]
fn top_by_ranks_the_newest_tick() {
    let (_dir, _path, store) = temp_store(StoreConfig::default());
    let mut samples: Vec<_> = (0..10).map(|i| sample(i, 0.0)).collect();
    store.write_tick(T0, &samples, &[]).expect("write");
    for (i, s) in samples.iter_mut().enumerate() {
        s.set(
            Channel::Outstanding,
            [3.0, 9.0, 1.0, 9.0, 0.0, 5.0, 2.0, 8.0, 7.0, 4.0][i],
        );
    }
    store.write_tick(T0 + 100, &samples, &[]).expect("write");
    let top = store.top_by(Channel::Outstanding, 3).expect("top");
    assert_eq!(ids(&top), [1, 3, 7], "highest first, ties by id");
    assert!(top.iter().all(|s| s.ts_ms == T0 + 100));
}

#[test]
fn call_graph_is_stored_on_change_only() {
    let (_dir, path, store) = temp_store(StoreConfig::default());
    let e1 = [(ServiceId(1), ServiceId(2)), (ServiceId(2), ServiceId(3))];
    let e2 = [(ServiceId(1), ServiceId(2))];
    let s = [sample(1, 0.0)];
    store.write_tick(T0, &s, &e1).expect("write");
    store
        .write_tick(T0 + 100, &s, &[e1[1], e1[0], e1[0]])
        .expect("same graph, other order");
    store.write_tick(T0 + 200, &s, &e2).expect("write");
    assert_eq!(store.edges_at(T0 + 150).expect("edges"), e1.to_vec());
    assert_eq!(store.edges_at(T0 + 200).expect("edges"), e2.to_vec());
    assert!(store.edges_at(T0 - 1).expect("edges").is_empty());
    assert_eq!(
        store.edges_between(T0, T0 + 300).expect("union"),
        e1.to_vec()
    );
    let db = {
        drop(store);
        redb::Database::open(&path).expect("raw open")
    };
    let txn = db.begin_read().expect("read");
    let t = txn.open_table(seer_store::schema::EDGES).expect("edges");
    assert_eq!(
        redb::ReadableTableMetadata::len(&t).expect("len"),
        2,
        "unchanged graph not rewritten"
    );
}

#[test]
fn services_first_and_last_seen() {
    let (_dir, _path, store) = temp_store(StoreConfig::default());
    store
        .upsert_service(ServiceId(3), "nginx", "/system.slice/nginx.service", T0)
        .expect("upsert");
    store
        .upsert_service(
            ServiceId(3),
            "nginx-renamed",
            "/system.slice/nginx.service",
            T0 + 50,
        )
        .expect("upsert");
    store
        .write_tick(T0 + 5000, &[sample(3, 0.0), sample(4, 0.0)], &[])
        .expect("write");
    assert_eq!(store.flush_last_seen().expect("flush"), 2);
    let services = store.services().expect("services");
    assert_eq!(services.len(), 2);
    assert_eq!(services[0].name, "nginx-renamed");
    assert_eq!(
        (services[0].first_seen_ms, services[0].last_seen_ms),
        (T0, T0 + 5000)
    );
    assert_eq!(services[1].id, ServiceId(4));
    assert_eq!(services[1].name, "", "seen in samples only");
}

#[test]
fn qos_events_alerts_and_actions() {
    let (_dir, _path, store) = temp_store(StoreConfig::default());
    let ev = QosEvent {
        start_ms: T0,
        end_ms: T0 + 500,
        initiator: Some(ServiceId(2)),
        kind: "p99>50ms".into(),
    };
    store.record_qos_event(&ev).expect("event");
    store
        .record_qos_event(&QosEvent {
            initiator: None,
            start_ms: T0 + 1000,
            end_ms: T0 + 1200,
            kind: "injected:cpu".into(),
        })
        .expect("event");
    assert_eq!(
        store.qos_events(T0 + 400, T0 + 900).expect("events"),
        vec![ev.clone()]
    );
    assert_eq!(store.qos_events(0, u64::MAX).expect("events").len(), 2);
    assert!(
        store
            .qos_events(T0 + 500, T0 + 1000)
            .expect("events")
            .is_empty()
    );

    let a = store.enqueue_alert(T0, r#"{"service":2}"#).expect("alert");
    let b = store.enqueue_alert(T0 + 1, "second").expect("alert");
    assert_eq!(
        store
            .pending_alerts(10)
            .expect("pending")
            .iter()
            .map(|x| x.id)
            .collect::<Vec<_>>(),
        [a, b]
    );
    assert!(store.ack_alert(a).expect("ack"));
    assert!(!store.ack_alert(a).expect("ack twice"));
    assert_eq!(
        store.pending_alerts(10).expect("pending")[0].payload,
        "second"
    );
    // A refused alert leaves the outbox (the later ones are not held behind it), is kept
    // with the receiver's answer, and its id is never given to a new alert.
    assert!(
        store
            .reject_alert(b, "HTTP 400: bad labels")
            .expect("reject")
    );
    assert!(!store.reject_alert(b, "again").expect("reject twice"));
    assert!(store.pending_alerts(10).expect("pending").is_empty());
    let r = store.rejected_alerts(10).expect("rejected");
    assert_eq!(r.len(), 1);
    assert_eq!(
        (
            r[0].alert.id,
            r[0].alert.payload.as_str(),
            r[0].why.as_str()
        ),
        (b, "second", "HTTP 400: bad labels")
    );
    let c = store.enqueue_alert(T0 + 2, "third").expect("alert");
    assert!(c > b, "id {c} reuses a rejected alert's ({b})");
    assert!(store.ack_alert(c).expect("ack"));

    let x = store
        .record_action(T0, Some(ServiceId(2)), "resctrl.mba", "mb=50 was 100")
        .expect("action");
    let y = store
        .record_action(T0 + 5, None, "tc.htb", "rate 1gbit")
        .expect("action");
    assert!(store.mark_action_undone(x, T0 + 10).expect("undo"));
    let in_force = store.actions(true).expect("actions");
    assert_eq!(in_force.len(), 1);
    assert_eq!((in_force[0].id, in_force[0].service), (y, None));
    let all = store.actions(false).expect("actions");
    assert_eq!(all[0].undone_ms, Some(T0 + 10));

    store
        .record_diagnosis(T0 + 20, Some(ServiceId(2)), r#"{"resource":"cpu_int"}"#)
        .expect("diagnosis");
    store
        .record_diagnosis(T0 + 30, None, "{}")
        .expect("diagnosis");
    let d = store.diagnoses(T0, T0 + 30).expect("diagnoses");
    assert_eq!(d.len(), 1, "the range's end is exclusive");
    assert_eq!(
        (d[0].ts_ms, d[0].service, d[0].json.as_str()),
        (T0 + 20, Some(ServiceId(2)), r#"{"resource":"cpu_int"}"#)
    );
    assert_eq!(store.diagnoses(0, u64::MAX).expect("all")[1].service, None);
}

#[test]
fn tick_is_recorded_by_the_writer_not_by_readers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.redb");
    let agent = StoreConfig {
        tick_ms: 50,
        ..StoreConfig::default()
    };
    {
        let store = Store::open(&path, agent).expect("open");
        store.write_tick(T0, &[sample(1, 0.0)], &[]).expect("write");
    }
    // A CLI opening with defaults must not rewrite it.
    let cli = Store::open(&path, StoreConfig::default()).expect("open");
    assert_eq!(cli.tick_ms().expect("tick"), 50);
    assert_eq!(CHANNELS, 16);
}

#[test]
fn missing_channels_are_recorded_and_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = seer_store::Store::open(
        dir.path().join("s.redb"),
        seer_store::StoreConfig::default(),
    )
    .expect("open");
    assert!(
        store.missing_channels().expect("read").is_empty(),
        "nothing recorded yet"
    );
    store
        .set_missing_channels(&["epoll_calls", "epoll_events"])
        .expect("write");
    assert_eq!(
        store.missing_channels().expect("read"),
        ["epoll_calls", "epoll_events"]
    );
    store.set_missing_channels(&[]).expect("write");
    assert!(
        store.missing_channels().expect("read").is_empty(),
        "a later run replaces it"
    );
}
