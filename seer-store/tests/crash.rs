//! `kill -9` during heavy writing, repeatedly: the store must open, every row must decode to the
//! values written, ticks must be contiguous, and no tick the writer reported may be missing.

use seer_common::sample::ServiceId;
use seer_store::synth::Synth;
use seer_store::{Store, StoreConfig};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const SEED: u64 = 42; // as in seer-store-crashwriter
const FIRST_TICK_MS: u64 = 1_767_225_600_000;
const TICK_MS: u64 = 100;
const SERVICES: u32 = 100;

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Starts the writer, kills it after it reported some ticks and `delay`, returns the last
/// tick it reported.
fn run_and_kill(db: &std::path::Path, extra: &[&str], delay: Duration) -> Option<u64> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_seer-store-crashwriter"))
        .arg(db)
        .args(["--services", &SERVICES.to_string()])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start seer-store-crashwriter");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut last = None;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let ts: u64 = line.trim().parse().expect("writer prints tick times");
            if last.is_none() {
                let _ = tx.send(());
            }
            last = Some(ts);
        }
        last
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("the writer reports a first tick within 20 s");
    std::thread::sleep(delay);
    child.kill().expect("SIGKILL the writer");
    let status = child.wait().expect("reap the writer");
    assert!(
        !status.success(),
        "the writer was killed, not finished: {status}"
    );
    reader.join().expect("reader thread")
}

/// Checks the store after a kill; returns its newest tick.
fn check(db: &std::path::Path, reported: Option<u64>, downsampled: bool) -> u64 {
    let store = Store::open(db, StoreConfig::default())
        .unwrap_or_else(|e| panic!("store does not open after kill -9: {e}"));
    let synth = Synth::new(SEED);
    let mut expected_ts = None;
    let mut ticks = 0u64;
    for tick in store.range(0, u64::MAX).expect("range") {
        let tick = tick.unwrap_or_else(|e| panic!("row does not decode: {e}"));
        if let Some(exp) = expected_ts {
            assert_eq!(tick.ts_ms, exp, "tick missing before {}", tick.ts_ms);
        } else if !downsampled {
            assert_eq!(tick.ts_ms, FIRST_TICK_MS, "first tick missing");
        }
        assert_eq!(
            tick.samples.len(),
            SERVICES as usize,
            "tick {} incomplete",
            tick.ts_ms
        );
        for (i, s) in tick.samples.iter().enumerate() {
            assert_eq!(s.service, ServiceId(i as u32));
            let want = synth.values(s.service, tick.ts_ms);
            assert_eq!(
                s.values.map(f32::to_bits),
                want.map(f32::to_bits),
                "service {i} at {} holds other values than written",
                tick.ts_ms
            );
        }
        expected_ts = Some(tick.ts_ms + TICK_MS);
        ticks += 1;
    }
    let last = expected_ts.expect("store has ticks") - TICK_MS;
    if downsampled {
        // Older ticks became per-second aggregates: contiguous seconds up to the raw ticks.
        let first_raw = last + TICK_MS - ticks * TICK_MS;
        let aggs = store
            .aggregates(ServiceId(SERVICES - 1), 0, u64::MAX)
            .expect("aggregates decode");
        if let Some(first) = aggs.first() {
            assert_eq!(first.ts_ms, FIRST_TICK_MS, "first second missing");
            for (i, a) in aggs.iter().enumerate() {
                assert_eq!(
                    a.ts_ms,
                    FIRST_TICK_MS + 1000 * i as u64,
                    "aggregate second missing"
                );
                assert_eq!(
                    a.agg.count, 10,
                    "second {} aggregates {} ticks",
                    a.ts_ms, a.agg.count
                );
            }
            let covered = aggs.last().map_or(0, |a| a.ts_ms + 1000);
            assert_eq!(covered, first_raw, "gap between aggregates and samples");
        } else {
            assert_eq!(first_raw, FIRST_TICK_MS);
        }
    }
    if let Some(reported) = reported {
        assert!(
            last >= reported,
            "tick {reported} was reported written but is missing"
        );
        assert!(
            last <= reported + TICK_MS,
            "store holds {last}, more than one tick past the last reported {reported}"
        );
    }
    last
}

fn crash_rounds(extra: &[&str], downsampled: bool, seed: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("crash.redb");
    let mut rng = Rng(seed);
    let start = Instant::now();
    for round in 0..5 {
        let delay = Duration::from_millis(20 + rng.below(250));
        let reported = run_and_kill(&db, extra, delay);
        let last = check(&db, reported, downsampled);
        eprintln!(
            "round {round}: killed after {delay:?}, last reported {reported:?}, store ends at {last}"
        );
    }
    eprintln!("5 kill -9 rounds in {:?}", start.elapsed());
}

#[test]
fn kill_9_during_tick_writes_loses_nothing_reported() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64 | 1);
    eprintln!("kill timing seed {seed}");
    crash_rounds(&[], false, seed);
}

#[test]
fn kill_9_during_downsampling_keeps_the_store_consistent() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| (d.as_nanos() as u64).rotate_left(17) | 1);
    eprintln!("kill timing seed {seed}");
    crash_rounds(&["--full-res-ms", "3000"], true, seed);
}
