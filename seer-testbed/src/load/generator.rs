//! The arrival loop and the per-request tasks.
use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use super::{
    hdr::Latency,
    http::{self, Conn},
    profile,
    records::{Record, Status},
};
use crate::scenario::Scenario;

pub struct Spec {
    pub scenario: Scenario,
    pub target: SocketAddr,
    /// Unix time (ms) of scenario time 0; warm-up starts `warmup_s` before.
    pub t0_unix_ms: u64,
    pub duration_s: f64,
}

struct State {
    pool: Mutex<Vec<Conn>>,
    open: AtomicUsize,
    in_flight: AtomicUsize,
    records: Mutex<Vec<Record>>,
    hist: Mutex<Latency>,
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Runs the schedule to its end, waits for answers (up to the timeout), returns every record
/// and the HDR histograms of the judged part.
pub async fn run(spec: Spec) -> (Vec<Record>, Latency) {
    let sc = &spec.scenario;
    let names: Vec<String> = sc
        .requests
        .iter()
        .map(|r| r.name.get_ref().clone())
        .collect();
    let weights: Vec<f64> = sc.requests.iter().map(|r| r.weight).collect();
    let wsum: f64 = weights.iter().sum();
    let timeout = Duration::from_secs_f64(sc.load.timeout_s);
    let st = Arc::new(State {
        pool: Mutex::new(Vec::new()),
        open: AtomicUsize::new(0),
        in_flight: AtomicUsize::new(0),
        records: Mutex::new(Vec::new()),
        hist: Mutex::new(Latency::new(sc.requests.len())),
    });
    let mut rng = fastrand::Rng::with_seed(sc.seed);
    // Map scenario time to the monotonic clock once: t0 in Instant terms.
    let now_us = unix_us() as i64;
    let t0_us = spec.t0_unix_ms as i64 * 1000;
    let anchor = Instant::now();
    let inst_of = |t: f64| -> Instant {
        let off_us = t0_us - now_us + (t * 1e6) as i64;
        if off_us >= 0 {
            anchor + Duration::from_micros(off_us as u64)
        } else {
            anchor
                .checked_sub(Duration::from_micros((-off_us) as u64))
                .unwrap_or(anchor)
        }
    };
    let mut t = -sc.load.warmup_s;
    let mut next_report = 5.0;
    let mut reported = 0usize;
    loop {
        t += -(1.0 - rng.f64()).ln() / profile::rate(sc, t);
        if t >= spec.duration_s {
            break;
        }
        let due = inst_of(t);
        tokio::time::sleep_until(due.into()).await;
        if t >= next_report {
            reported = report(&st, t, sc, reported);
            next_report += 5.0;
        }
        let mut x = rng.f64() * wsum;
        let mut req = 0;
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                req = i;
                break;
            }
            x -= w;
        }
        let path = format!("/{}", names[req]);
        let st = st.clone();
        let max = sc.load.max_conns;
        let target = spec.target;
        let send_unix_us = (t0_us + (t * 1e6) as i64).max(0) as u64;
        let t_us = (t * 1e6) as i64;
        st.in_flight.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let r = tokio::time::timeout(timeout, one(&st, target, &path, max)).await;
            let status = match r {
                Ok(s) => s,
                Err(_) => Status::Timeout,
            };
            let latency_us = due.elapsed().as_micros() as u64;
            if let Ok(mut h) = st.hist.lock() {
                h.record(t_us, req, latency_us, status == Status::Ok);
            }
            if let Ok(mut recs) = st.records.lock() {
                recs.push(Record {
                    send_unix_us,
                    t_us,
                    latency_us,
                    request: req as u16,
                    status,
                });
            }
            st.in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
    let deadline = Instant::now() + timeout + Duration::from_secs(1);
    while st.in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut recs = st.records.lock().map(|r| r.clone()).unwrap_or_default();
    recs.sort_by_key(|r| r.t_us);
    let hist = match st.hist.lock() {
        Ok(mut h) => std::mem::replace(&mut *h, Latency::new(0)),
        Err(_) => Latency::new(0),
    };
    (recs, hist)
}

/// One request: a pooled connection (or a new one, up to `max`), GET, back to the pool.
async fn one(st: &State, target: SocketAddr, path: &str, max: usize) -> Status {
    let pooled = st.pool.lock().ok().and_then(|mut p| p.pop());
    let mut c = match pooled {
        Some(c) => c,
        None => {
            if st.open.fetch_add(1, Ordering::Relaxed) >= max {
                st.open.fetch_sub(1, Ordering::Relaxed);
                return Status::Error;
            }
            match http::connect(target).await {
                Ok(c) => c,
                Err(_) => {
                    st.open.fetch_sub(1, Ordering::Relaxed);
                    return Status::Error;
                }
            }
        }
    };
    match http::get(&mut c, path).await {
        Ok((code, keep)) => {
            if keep && let Ok(mut p) = st.pool.lock() {
                p.push(c);
            } else {
                st.open.fetch_sub(1, Ordering::Relaxed);
            }
            if code == 200 {
                Status::Ok
            } else {
                Status::Http(code)
            }
        }
        Err(_) => {
            st.open.fetch_sub(1, Ordering::Relaxed);
            Status::Error
        }
    }
}

/// Prints one progress line about the records completed since the last one.
fn report(st: &State, t: f64, sc: &Scenario, from: usize) -> usize {
    let Ok(recs) = st.records.lock() else {
        return from;
    };
    let mut lat: Vec<u64> = recs[from.min(recs.len())..]
        .iter()
        .map(|r| r.latency_us)
        .collect();
    let bad = recs[from.min(recs.len())..]
        .iter()
        .filter(|r| r.status != Status::Ok)
        .count();
    lat.sort_unstable();
    let p99 = lat
        .get(((lat.len() as f64 * 0.99).ceil() as usize).saturating_sub(1))
        .copied()
        .unwrap_or(0);
    println!(
        "[load] t={t:5.1}s rate={:6.1}/s done={:6} p99={:8.2}ms failed={bad} open_conns={}",
        profile::rate(sc, t),
        lat.len(),
        p99 as f64 / 1000.0,
        st.open.load(Ordering::Relaxed)
    );
    recs.len()
}
