//! The QoS watch (is the front end's tail latency over its target?) and the labeller (which
//! service's queues departed from normal first: the initiator, as DESIGN.md's "QoS and labels"
//! describes for hosts without ground truth).
//!
//! The watch sums the front end's per-tick latency histograms (the kernel's request turns)
//! over a sliding window and reads the p99 from the sum, so the window's quantile is exact to
//! the histogram's bucket, not an average of per-tick quantiles.
//!
//! The labeller keeps, per service, a slow running mean and mean absolute deviation of four
//! queue channels (outstanding requests, receive-queue bytes, accept backlog, p99 latency),
//! learned only while the QoS holds. A service "departs" when a channel's fast mean rises above
//! its normal mean by more than `K` deviations and a per-channel floor. When the QoS breaks,
//! the initiator is the deepest departed service (backlog spreads from a starved back end to
//! its callers, not the other way), the earliest among equally deep ones.
use std::collections::{HashMap, VecDeque};

use seer_common::{
    LAT_BUCKETS,
    sample::{Channel, Sample, ServiceId},
};

use seer_common::quantile_us;

use crate::{config::QosConfig, discovery::Discovery};

/// The window's verdict.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct QosStatus {
    pub p99_us: u64,
    pub requests: u64,
    /// None: fewer than `min_requests` in the window, no verdict.
    pub violated: Option<bool>,
}

pub struct QosWatch {
    pub cfg: QosConfig,
    ring: VecDeque<Box<[u64; LAT_BUCKETS]>>,
    sum: Box<[u64; LAT_BUCKETS]>,
    ticks: usize,
}

impl QosWatch {
    pub fn new(cfg: QosConfig, tick_ms: u64) -> Self {
        let ticks = (cfg.window_ms / tick_ms.max(1)).max(1) as usize;
        QosWatch {
            cfg,
            ring: VecDeque::with_capacity(ticks + 1),
            sum: Box::new([0; LAT_BUCKETS]),
            ticks,
        }
    }

    /// Adds one tick's histogram of the front end's request latencies.
    pub fn push(&mut self, hist: &[u64; LAT_BUCKETS]) -> QosStatus {
        let mut slot = if self.ring.len() >= self.ticks {
            let old = self
                .ring
                .pop_front()
                .unwrap_or_else(|| Box::new([0; LAT_BUCKETS]));
            for (s, o) in self.sum.iter_mut().zip(old.iter()) {
                *s -= o;
            }
            old
        } else {
            Box::new([0; LAT_BUCKETS])
        };
        slot.copy_from_slice(hist);
        for (s, h) in self.sum.iter_mut().zip(hist.iter()) {
            *s += h;
        }
        self.ring.push_back(slot);
        let requests: u64 = self.sum.iter().sum();
        let p99_us = quantile_us(&self.sum, 0.99);
        QosStatus {
            p99_us,
            requests,
            violated: (requests >= self.cfg.min_requests)
                .then_some(p99_us as f64 > self.cfg.p99_ms * 1000.0),
        }
    }

    /// "nginx p99 62.1 ms > 50 ms over 1000 ms (340 requests)".
    pub fn describe(&self, s: &QosStatus) -> String {
        let op = if s.violated == Some(true) { ">" } else { "<=" };
        format!(
            "{} p99 {:.1} ms {op} {} ms over {} ms ({} requests)",
            self.cfg.service,
            s.p99_us as f64 / 1000.0,
            self.cfg.p99_ms,
            self.cfg.window_ms,
            s.requests
        )
    }
}

/// Channels the labeller watches, with the smallest rise above normal that counts. Any unread
/// byte counts for the receive queue: a service that is not running (throttled, descheduled)
/// leaves its requests unread, and they never show in its own turn latency, which starts when
/// it reads (a memcached throttled by CFS measured here: turn latency normal, receive queue
/// non-empty at almost every tick, while its caller's latency went from 0.2 to 74 ms).
const WATCHED: [(Channel, f32); 4] = [
    (Channel::Outstanding, 2.0),
    (Channel::RxQueueBytes, 1.0),
    (Channel::AcceptBacklog, 1.0),
    (Channel::LatencyP99Us, 2000.0),
];
/// Deviations above the mean that count as departed.
const K: f32 = 4.0;
/// Ticks of learning before a service can depart.
const WARMUP: u32 = 20;
/// Weight of a new tick in the running mean and deviation (~2 s memory at 100 ms).
const ALPHA: f32 = 0.05;
/// Weight of a new tick in the fast mean (~300 ms memory at 100 ms).
const FAST: f32 = 0.3;
/// Ticks back within normal before a departure is over: queues of a throttled or starved
/// service show at some ticks and not others (a snapshot per tick), so a departure outlives
/// short quiet streaks and keeps its first tick.
const SETTLE: u32 = 10;

#[derive(Default)]
struct Baseline {
    /// Slow running mean and mean absolute deviation (learned while the QoS holds).
    mean: [f32; WATCHED.len()],
    dev: [f32; WATCHED.len()],
    /// Fast running mean (always): a sustained rise, not a one-tick spike, departs.
    fast: [f32; WATCHED.len()],
    n: u32,
}

/// A service whose queues left normal, since when, and which channel showed it.
#[derive(Clone, Debug, PartialEq)]
pub struct Departure {
    pub since_ms: u64,
    pub why: String,
    quiet: u32,
}

#[derive(Default)]
pub struct Labeller {
    base: HashMap<ServiceId, Baseline>,
    departed: HashMap<ServiceId, Departure>,
}

impl Labeller {
    /// One tick of every service; `learn` while the QoS holds.
    pub fn observe(&mut self, ts_ms: u64, samples: &[Sample], learn: bool) {
        for s in samples {
            let b = self.base.entry(s.service).or_default();
            let mut why = None;
            for (i, &(ch, floor)) in WATCHED.iter().enumerate() {
                let x = s.get(ch);
                // A tick in which no request finished has no latency, not a latency of 0.
                if ch == Channel::LatencyP99Us && x == 0.0 {
                    continue;
                }
                b.fast[i] += FAST * (x - b.fast[i]);
                if b.n >= WARMUP && why.is_none() {
                    let excess = b.fast[i] - b.mean[i];
                    if excess > (K * b.dev[i]).max(floor) {
                        why = Some(format!(
                            "{} {:.0} vs normal {:.1} ± {:.1}",
                            seer_common::sample::CHANNEL_NAMES[ch as usize],
                            b.fast[i],
                            b.mean[i],
                            b.dev[i]
                        ));
                    }
                }
                if learn {
                    if b.n == 0 {
                        b.mean[i] = x;
                        b.fast[i] = x;
                    } else {
                        b.dev[i] += ALPHA * ((x - b.mean[i]).abs() - b.dev[i]);
                        b.mean[i] += ALPHA * (x - b.mean[i]);
                    }
                }
            }
            if learn {
                b.n = b.n.saturating_add(1);
            }
            match (why, self.departed.get_mut(&s.service)) {
                (Some(_), Some(d)) => d.quiet = 0,
                (Some(why), None) => {
                    self.departed.insert(
                        s.service,
                        Departure {
                            since_ms: ts_ms,
                            why,
                            quiet: 0,
                        },
                    );
                }
                (None, Some(d)) => {
                    d.quiet += 1;
                    if d.quiet >= SETTLE {
                        self.departed.remove(&s.service);
                    }
                }
                (None, None) => {}
            }
        }
    }

    /// The initiator: the deepest service (farthest from the front end) whose queues have
    /// departed, the earliest among equally deep ones. None if none departed.
    ///
    /// Backlog spreads from a starved service to its callers, never to its callees (they see
    /// less traffic), so the deepest departed service is where it started; "first to depart"
    /// alone is unreliable because a per-tick snapshot can see a starved back end's queue a
    /// tick or more after its callers' latency rose (measured: memcached throttled by CFS
    /// showed in its receive queue 500 ms after nginx's latency did).
    ///
    /// Only among the departed services other than `except` (those a diagnosis of this
    /// violation already found nothing in).
    pub fn culprit_except(
        &self,
        d: &Discovery,
        except: &[ServiceId],
    ) -> Option<(ServiceId, Departure)> {
        let depth = |id: &ServiceId| {
            d.services
                .iter()
                .find(|s| s.id == *id)
                .map_or(0, |s| s.depth)
        };
        self.departed
            .iter()
            .filter(|(id, _)| d.services.iter().any(|s| s.id == **id) && !except.contains(id))
            .min_by_key(|(id, dep)| (std::cmp::Reverse(depth(id)), dep.since_ms, id.0))
            .map(|(id, dep)| (*id, dep.clone()))
    }

    /// Whether a service's queues have departed from normal, and which channel showed it.
    pub fn departure_of(&self, id: ServiceId) -> Option<&Departure> {
        self.departed.get(&id)
    }

    /// Every departed service: "name since +N ms (why)", earliest first (for the log).
    pub fn departures(&self, d: &Discovery) -> String {
        let mut v: Vec<(&ServiceId, &Departure)> = self.departed.iter().collect();
        v.sort_by_key(|(id, dep)| (dep.since_ms, id.0));
        let t0 = v.first().map_or(0, |(_, dep)| dep.since_ms);
        v.iter()
            .map(|(id, dep)| {
                let depth = d
                    .services
                    .iter()
                    .find(|s| s.id == **id)
                    .map_or(0, |s| s.depth);
                format!(
                    "{} +{} ms depth {depth} ({})",
                    d.name_of(**id),
                    dep.since_ms - t0,
                    dep.why
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Each service's watched channels as fast/mean±dev (for the log at a violation).
    pub fn levels(&self, d: &Discovery) -> String {
        let mut out = Vec::new();
        for s in &d.services {
            let Some(b) = self.base.get(&s.id) else {
                continue;
            };
            let ch: Vec<String> = WATCHED
                .iter()
                .enumerate()
                .map(|(i, (c, _))| {
                    format!(
                        "{} {:.0}/{:.0}±{:.0}",
                        seer_common::sample::CHANNEL_NAMES[*c as usize],
                        b.fast[i],
                        b.mean[i],
                        b.dev[i]
                    )
                })
                .collect();
            out.push(format!("{}: {}", s.name, ch.join(" ")));
        }
        out.join("; ")
    }

    /// Forgets services that are gone.
    pub fn retain(&mut self, d: &Discovery) {
        self.base
            .retain(|id, _| d.services.iter().any(|s| s.id == *id));
        self.departed
            .retain(|id, _| d.services.iter().any(|s| s.id == *id));
    }
}

#[cfg(test)]
mod tests {
    use seer_common::lat_bucket;

    use super::*;
    use crate::discovery::Service;

    fn cfg() -> QosConfig {
        QosConfig {
            service: "fe".into(),
            p99_ms: 10.0,
            window_ms: 500,
            min_requests: 10,
        }
    }

    fn hist(lat_us: u64, n: u64) -> [u64; LAT_BUCKETS] {
        let mut h = [0; LAT_BUCKETS];
        h[lat_bucket(lat_us)] += n;
        h
    }

    #[test]
    fn window_p99_slides() {
        let mut w = QosWatch::new(cfg(), 100);
        assert_eq!(w.push(&hist(1000, 5)).violated, None, "too few requests");
        for _ in 0..4 {
            assert_eq!(w.push(&hist(1000, 50)).violated, Some(false));
        }
        // 2% of the window slow: p99 is slow.
        let s = w.push(&hist(50_000, 6));
        assert_eq!(s.violated, Some(true), "{s:?}");
        assert!(s.p99_us >= 50_000);
        assert!(w.describe(&s).starts_with("fe p99 "), "{}", w.describe(&s));
        // Five more fast ticks push the slow one out of the 5-tick window.
        for _ in 0..4 {
            assert_eq!(w.push(&hist(1000, 50)).violated, Some(true));
        }
        assert_eq!(w.push(&hist(1000, 50)).violated, Some(false));
    }

    fn svc(id: u32, depth: u32) -> Service {
        Service {
            id: ServiceId(id),
            name: format!("s{id}"),
            identity: String::new(),
            comm: String::new(),
            cgroup: String::new(),
            pids: vec![],
            ports: vec![],
            slot: None,
            depth,
            socket_inodes: Default::default(),
        }
    }

    fn sample(id: u32, outstanding: f32) -> Sample {
        let mut s = Sample {
            service: ServiceId(id),
            ..Default::default()
        };
        s.set(Channel::Outstanding, outstanding);
        s
    }

    #[test]
    fn deepest_departed_then_earliest() {
        let mut d = Discovery::default();
        d.services = vec![svc(1, 0), svc(2, 1), svc(3, 2)];
        let mut l = Labeller::default();
        for t in 0..40 {
            let jitter = (t % 2) as f32;
            l.observe(
                t,
                &[sample(1, 1.0 + jitter), sample(2, jitter), sample(3, 1.0)],
                true,
            );
        }
        assert_eq!(l.culprit_except(&d, &[]), None, "all normal");
        // The middle tier departs, then the front end: the middle tier is the initiator.
        l.observe(
            100,
            &[sample(1, 1.0), sample(2, 9.0), sample(3, 1.0)],
            false,
        );
        l.observe(
            200,
            &[sample(1, 20.0), sample(2, 12.0), sample(3, 1.0)],
            false,
        );
        let (id, dep) = l.culprit_except(&d, &[]).expect("culprit");
        assert_eq!((id, dep.since_ms), (ServiceId(2), 100), "{dep:?}");
        // The back end's queue shows a tick later: it is deeper, so it is the initiator.
        l.observe(
            300,
            &[sample(1, 20.0), sample(2, 12.0), sample(3, 9.0)],
            false,
        );
        let (id, dep) = l.culprit_except(&d, &[]).expect("culprit");
        assert_eq!((id, dep.since_ms), (ServiceId(3), 300), "{dep:?}");
        assert!(dep.why.starts_with("outstanding "), "{}", dep.why);
        // The back end diagnosed with nothing found: the next deepest, then no one.
        let next = l.culprit_except(&d, &[ServiceId(3)]).map(|c| c.0);
        assert_eq!(next, Some(ServiceId(2)));
        let all = [ServiceId(3), ServiceId(2), ServiceId(1)];
        assert_eq!(l.culprit_except(&d, &all), None);
        // Two at the same depth: the earliest.
        let mut d2 = Discovery::default();
        d2.services = vec![svc(1, 0), svc(2, 1), svc(4, 1)];
        let mut l3 = Labeller::default();
        for t in 0..40 {
            l3.observe(t, &[sample(1, 0.0), sample(2, 0.0), sample(4, 0.0)], true);
        }
        l3.observe(
            100,
            &[sample(1, 0.0), sample(2, 0.0), sample(4, 9.0)],
            false,
        );
        l3.observe(
            200,
            &[sample(1, 0.0), sample(2, 9.0), sample(4, 9.0)],
            false,
        );
        assert_eq!(l3.culprit_except(&d2, &[]).map(|c| c.0), Some(ServiceId(4)));
        // Same tick: the deepest wins.
        let mut l2 = Labeller::default();
        for t in 0..40 {
            l2.observe(t, &[sample(1, 0.0), sample(2, 0.0), sample(3, 0.0)], true);
        }
        l2.observe(
            100,
            &[sample(1, 9.0), sample(2, 9.0), sample(3, 9.0)],
            false,
        );
        assert_eq!(l2.culprit_except(&d, &[]).map(|c| c.0), Some(ServiceId(3)));
        // Back to normal for SETTLE ticks: no longer departed.
        for t in 0..SETTLE as u64 {
            l2.observe(
                300 + t,
                &[sample(1, 0.0), sample(2, 0.0), sample(3, 0.0)],
                false,
            );
        }
        assert_eq!(l2.culprit_except(&d, &[]), None);
    }
}
