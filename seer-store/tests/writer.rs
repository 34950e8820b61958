//! The background writer: never blocks the sampler, batches when behind, counts every loss.

mod common;

use common::{T0, temp_store};
use seer_store::synth::Synth;
use seer_store::{StoreConfig, Tick, Writer, WriterConfig};
use std::time::{Duration, Instant};

fn tick(synth: &Synth, services: u32, k: u64) -> Tick {
    let mut t = Tick {
        ts_ms: T0 + k * 100,
        ..Tick::default()
    };
    synth.fill(services, t.ts_ms, &mut t.samples);
    t
}

#[test]
fn submitted_ticks_are_written_and_buffers_come_back() {
    let (_dir, _path, store) = temp_store(StoreConfig::default());
    let writer = Writer::spawn(store.clone(), WriterConfig::default()).expect("spawn");
    let synth = Synth::new(3);
    for k in 0..50 {
        let mut t = writer.take_tick();
        assert!(t.samples.is_empty() && t.edges.is_empty());
        t.ts_ms = T0 + k * 100;
        synth.fill(20, t.ts_ms, &mut t.samples);
        assert!(writer.submit(t));
        if k == 10 {
            assert!(writer.flush(Duration::from_secs(10)));
            let mut reused = writer.take_tick();
            assert!(
                reused.samples.capacity() >= 20,
                "a written tick's buffer is reused"
            );
            reused.ts_ms = T0 - 100;
            synth.fill(20, reused.ts_ms, &mut reused.samples);
            assert!(writer.submit(reused));
        }
    }
    assert!(writer.flush(Duration::from_secs(10)));
    let stats = writer.stats();
    assert_eq!(
        (stats.ticks_written, stats.ticks_dropped),
        (51, 0),
        "{stats:?}"
    );
    assert_eq!(stats.samples_written, 51 * 20);
    assert!(stats.bytes_on_disk > 0);
    assert_eq!(stats.last_error, None);
    let final_stats = writer.shutdown();
    assert_eq!(final_stats.ticks_written, 51);
    assert_eq!(store.range(0, u64::MAX).expect("range").count(), 51);
}

#[test]
fn full_queue_drops_and_counts_never_blocks_and_batches() {
    let (_dir, _path, store) = temp_store(StoreConfig::default());
    let writer = Writer::spawn(
        store.clone(),
        WriterConfig {
            queue_ticks: 8,
            max_batch: 8,
            ..WriterConfig::default()
        },
    )
    .expect("spawn");
    let synth = Synth::new(4);
    // Big ticks, submitted far faster than 100 ms apart.
    let ticks: Vec<Tick> = (0..300).map(|k| tick(&synth, 2000, k)).collect();
    let mut slowest = Duration::ZERO;
    let mut accepted = 0u64;
    for t in ticks {
        let start = Instant::now();
        accepted += u64::from(writer.submit(t));
        slowest = slowest.max(start.elapsed());
    }
    assert!(
        slowest < Duration::from_millis(50),
        "submit blocked for {slowest:?}"
    );
    assert!(writer.flush(Duration::from_secs(60)));
    let stats = writer.stats();
    assert_eq!(stats.ticks_submitted, 300);
    assert!(
        stats.ticks_dropped > 0,
        "the queue of 8 overflowed: {stats:?}"
    );
    assert_eq!(stats.ticks_dropped, stats.ticks_dropped_queue_full);
    assert_eq!(stats.ticks_written + stats.ticks_dropped, 300, "{stats:?}");
    assert_eq!(stats.ticks_written, accepted);
    assert!(
        stats.transactions < stats.ticks_written,
        "behind, the writer batches ticks: {stats:?}"
    );
    drop(writer);
    assert_eq!(
        store.range(0, u64::MAX).expect("range").count() as u64,
        accepted,
        "every accepted tick is in the store"
    );
}

#[test]
fn dropping_the_handle_writes_what_is_queued() {
    let (_dir, path, store) = temp_store(StoreConfig::default());
    let synth = Synth::new(5);
    {
        let writer = Writer::spawn(
            store.clone(),
            WriterConfig {
                queue_ticks: 1000,
                ..WriterConfig::default()
            },
        )
        .expect("spawn");
        for k in 0..200 {
            assert!(writer.submit(tick(&synth, 50, k)));
        }
    }
    drop(store);
    let store = seer_store::Store::open(&path, StoreConfig::default()).expect("reopen");
    assert_eq!(store.range(0, u64::MAX).expect("range").count(), 200);
}
