//! `seer-agent query` data and tables.

mod common;

use common::{T0, sample, temp_store};
use seer_common::sample::{Channel, ServiceId};
use seer_store::StoreConfig;
use seer_store::query::{
    channel_by_name, find_service, list_services, recent_table, service_recent, services_table,
    top_services, top_table,
};

#[test]
fn queries_return_data_and_readable_tables() {
    let (_dir, _path, store) = temp_store(StoreConfig::default());
    store
        .upsert_service(ServiceId(1), "nginx", "/system.slice/nginx.service", T0)
        .expect("upsert");
    store
        .upsert_service(
            ServiceId(2),
            "memcached",
            "/system.slice/memcached.service",
            T0,
        )
        .expect("upsert");
    for k in 0..5u64 {
        let mut a = sample(1, 0.0);
        let mut b = sample(2, 0.0);
        a.set(Channel::Outstanding, k as f32);
        b.set(Channel::Outstanding, 10.0 + k as f32);
        b.set(Channel::EpollWaitMs, 1.5);
        store.write_tick(T0 + k * 100, &[a, b], &[]).expect("write");
    }

    let services = list_services(&store).expect("services");
    assert_eq!(services.len(), 2);
    let table = services_table(&services);
    assert!(
        table
            .lines()
            .next()
            .expect("header")
            .starts_with("id  name"),
        "{table}"
    );
    assert!(
        table.contains("memcached") && table.contains("2026-01-01 00:00:00.000"),
        "{table}"
    );

    assert_eq!(
        find_service(&store, "memcached")
            .expect("find")
            .map(|s| s.id),
        Some(2)
    );
    assert_eq!(
        find_service(&store, "1").expect("find").map(|s| s.name),
        Some("nginx".into())
    );
    assert_eq!(find_service(&store, "nope").expect("find"), None);

    let recent = service_recent(&store, ServiceId(2), 3).expect("recent");
    assert_eq!(recent.ticks.len(), 3);
    assert_eq!(recent.ticks[2].ts_ms, T0 + 400);
    let json = serde_json::to_value(&recent).expect("json");
    assert_eq!(json["ticks"][2]["outstanding"], 14.0);
    assert_eq!(json["service"]["name"], "memcached");
    let table = recent_table(&recent);
    let row = table
        .lines()
        .find(|l| l.starts_with("outstanding"))
        .expect("outstanding row");
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        ["outstanding", "12", "13", "14"],
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("epoll_wait_ms") && l.ends_with("1.50")),
        "{table}"
    );

    let top =
        top_services(&store, channel_by_name("outstanding").expect("channel"), 5).expect("top");
    assert_eq!(top.ts_ms, Some(T0 + 400));
    assert_eq!(top.rows.iter().map(|r| r.id).collect::<Vec<_>>(), [2, 1]);
    let table = top_table(&top);
    assert!(
        table.starts_with("top services by outstanding at 2026-01-01 00:00:00.400 UTC"),
        "{table}"
    );
    assert!(
        table
            .lines()
            .nth(3)
            .expect("first row")
            .contains("memcached"),
        "{table}"
    );
    let json = serde_json::to_string(&top).expect("json");
    assert!(json.contains(r#""channel":"outstanding""#), "{json}");
}
