//! Synthetic but realistic-looking samples, for the benchmark, the crash test and tests.
//!
//! Values are a pure function of (seed, service, tick time), so a reader can recompute what a
//! writer wrote: rates are mostly small integers around a per-service level that drifts over
//! minutes, gauges vary slowly, latencies are histogram bucket bounds, epoll wait time is an
//! arbitrary float, and queues are usually empty.

use seer_common::sample::{CHANNELS, Channel, Sample, ServiceId};

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Rounds down to a latency histogram bucket bound (3 significant bits, as the sampler's).
fn bucket(us: u32) -> u32 {
    if us < 8 {
        return us;
    }
    let shift = 31 - us.leading_zeros() - 3;
    (us >> shift) << shift
}

/// Generator of synthetic samples; see the module docs.
#[derive(Clone, Copy, Debug)]
pub struct Synth {
    pub seed: u64,
}

impl Synth {
    pub fn new(seed: u64) -> Self {
        Self { seed }
    }

    /// The values of `service` at `ts_ms`.
    pub fn values(&self, service: ServiceId, ts_ms: u64) -> [f32; CHANNELS] {
        let id = u64::from(service.0);
        let stable = splitmix(self.seed ^ (id << 20));
        let mut h = splitmix(stable ^ ts_ms);
        let mut next = |m: u64| {
            h = splitmix(h);
            h % m.max(1)
        };
        let t = ts_ms as f64 / 1000.0;
        let phase = (stable % 628) as f64 / 100.0;
        let level = 1.0 + (stable % 120) as f64;
        let drift = 1.0 + 0.3 * (t / 300.0 + phase).sin();
        let rate = level * drift;
        let noise = next(2 * (rate as u64 / 5) + 1) as f64 - (rate as u64 / 5) as f64;
        let requests = (rate + noise).round().max(0.0) as u32;
        let pkt_size = 200 + (stable >> 16) % 1300;
        let pkts = requests * 2 + next(3) as u32;
        let mut v = [0.0f32; CHANNELS];
        let mut set = |c: Channel, x: f32| v[c as usize] = x;
        set(Channel::NicRxPkts, pkts as f32);
        set(Channel::NicRxBytes, (u64::from(pkts) * pkt_size) as f32);
        if next(10) == 0 {
            set(Channel::RxQueueBytes, next(4000) as f32);
        }
        if next(50) == 0 {
            set(Channel::AcceptBacklog, (1 + next(3)) as f32);
        }
        set(Channel::EpollCalls, (requests + next(5) as u32) as f32);
        set(Channel::EpollEvents, (requests + next(3) as u32) as f32);
        let busy = (rate / 200.0).min(1.0);
        let wait_ns = 4.0e8 * (1.0 - busy) + next(1_000_000) as f64;
        set(Channel::EpollWaitMs, (wait_ns / 1.0e6) as f32);
        set(Channel::Outstanding, next(4) as f32);
        set(Channel::Requests, requests as f32);
        if requests > 0 {
            let base = 200 + (stable >> 24) % 4800;
            let p50 = bucket((base + next(base / 4 + 1)) as u32);
            let p99 = bucket(p50 * (2 + next(6) as u32));
            set(Channel::LatencyP50Us, p50 as f32);
            set(Channel::LatencyP99Us, p99 as f32);
        }
        let conns = 10.0 + (stable % 190) as f64 * (1.0 + 0.1 * (t / 60.0 + phase).sin());
        set(Channel::Connections, conns.round() as f32);
        if next(8) == 0 {
            set(Channel::TxQueueBytes, next(10_000) as f32);
        }
        v
    }

    /// Fills `out` with one tick of services `0..services`.
    pub fn fill(&self, services: u32, ts_ms: u64, out: &mut Vec<Sample>) {
        out.clear();
        out.extend((0..services).map(|i| Sample {
            service: ServiceId(i),
            ts_ms,
            values: self.values(ServiceId(i), ts_ms),
        }));
    }
}
