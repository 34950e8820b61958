//! Alerts for the cluster manager: built by `respond`, queued in the trace store's outbox
//! (so an unreachable manager loses nothing, across restarts too), and delivered by a sender
//! thread to Alertmanager's API v2 (`POST /api/v2/alerts`) and/or a webhook (one JSON POST per
//! alert). Delivery is at least once: an alert leaves the outbox only after every configured
//! receiver answered 2xx. Alertmanager de-duplicates by labels; a webhook may see a repeat
//! after a failure. A receiver that refuses an alert for good (HTTP 4xx other than 408, 425 and
//! 429: retrying the same bytes cannot help) does not hold the later alerts back: the alert
//! moves to the store's rejected alerts with the answer, and is counted and logged.
//! Every request has a total deadline, and stopping the sender is bounded by its grace.
//!
//! HTTP is plain HTTP/1.1 (`crate::http`): the receivers are local or on a trusted network;
//! for TLS put a relay in front.
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use seer_store::Store;
use serde_json::{Value, json};

pub use crate::http::HttpUrl;
pub use crate::respond::alert_info::{AlertInfo, Origin};
use crate::{config::AlertsConfig, http_client::post_json};

/// RFC 3339 UTC time of a Unix-epoch millisecond (what Alertmanager's API takes).
pub fn rfc3339(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX))
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// The store's outbox and the sender that delivers it: where the responder's alerts go.
pub struct Outbox {
    store: Store,
    sender: Sender,
    /// The `instance` label (this host's name) and the alerts' `generatorURL`.
    host: String,
    generator: String,
}

impl Outbox {
    /// Starts the sender over the store's outbox. `metrics_addr` names the alerts' generator
    /// (this agent's /metrics), "off" for none.
    pub fn start(store: Store, cfg: &AlertsConfig, metrics_addr: &str) -> anyhow::Result<Self> {
        let sender = Sender::spawn(store.clone(), cfg)?;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        let generator = if metrics_addr == "off" {
            String::new()
        } else {
            format!("http://{metrics_addr}/metrics")
        };
        Ok(Self {
            store,
            sender,
            host,
            generator,
        })
    }
}

impl crate::respond::Alerts for Outbox {
    fn queue(&mut self, a: &AlertInfo) -> bool {
        let payload = alert_json(a, &self.host, &self.generator).to_string();
        match self.store.enqueue_alert(crate::util::now_ms(), &payload) {
            Ok(id) => {
                log::info!(
                    "alert {id} queued: service={} startsAt={} endsAt={}",
                    a.culprit,
                    rfc3339(a.starts_ms),
                    rfc3339(a.ends_ms)
                );
                self.sender.wake();
                true
            }
            Err(e) => {
                log::warn!(
                    "respond: the store's outbox refused the alert ({e}): sending it from memory"
                );
                self.sender.direct(payload);
                false
            }
        }
    }

    fn counts(&self) -> crate::respond::AlertCounts {
        use std::sync::atomic::Ordering::Relaxed;
        let s = &self.sender.stats;
        crate::respond::AlertCounts {
            delivered: s.delivered.load(Relaxed),
            pending: s.pending.load(Relaxed),
            failures: s.failures.load(Relaxed),
            rejected: s.rejected.load(Relaxed),
        }
    }

    fn shutdown(&mut self, grace: Duration) {
        self.sender.stop(grace);
    }
}

/// One Alertmanager API v2 alert object (a webhook receives the same object).
pub fn alert_json(a: &AlertInfo, host: &str, generator: &str) -> Value {
    let (origin, summary) = match &a.origin {
        Origin::Observed => (
            "observed",
            format!(
                "{} is driving a QoS violation ({}); short of {}",
                a.culprit, a.qos, a.resource
            ),
        ),
        Origin::Predicted {
            probability,
            horizon_ms,
            lead_ms,
            ..
        } => (
            "predicted",
            format!(
                "{} is predicted to initiate a QoS violation within {horizon_ms} ms (p = {probability:.2}{}; {}); short of {}",
                a.culprit,
                lead_ms.map_or(String::new(), |l| format!(", {l} ms before it began")),
                a.qos,
                a.resource
            ),
        ),
    };
    let mut annotations = json!({
        "summary": summary,
        "qos": a.qos,
        "mode": a.mode,
        "confidence": format!("{:.2}", a.confidence),
        "actions": a.actions.to_string(),
        "diagnosis": a.diagnosis.as_ref().map(Value::to_string).unwrap_or_default(),
    });
    if let Origin::Predicted {
        probability,
        horizon_ms,
        lead_ms,
        channels,
        model,
    } = &a.origin
    {
        annotations["probability"] = json!(format!("{probability:.3}"));
        annotations["horizon_ms"] = json!(horizon_ms.to_string());
        annotations["lead_ms"] = json!(lead_ms.map_or(String::new(), |l| l.to_string()));
        annotations["channels_moved"] = json!(channels);
        annotations["model"] = json!(model);
    }
    json!({
        "labels": {
            "alertname": "SeerQosViolation",
            "severity": "warning",
            "host": host,
            "service": a.culprit,
            "resource": a.resource,
            "origin": origin,
        },
        "annotations": annotations,
        "startsAt": rfc3339(a.starts_ms),
        "endsAt": rfc3339(a.ends_ms),
        "generatorURL": generator,
    })
}

/// Delivery counters, shared with /metrics.
#[derive(Debug, Default)]
pub struct SenderStats {
    pub delivered: AtomicU64,
    pub failures: AtomicU64,
    /// Alerts a receiver refused for good (moved to the store's rejected alerts).
    pub rejected: AtomicU64,
    pub pending: AtomicU64,
    /// Unix ms of the last successful delivery (0: none yet).
    pub last_ok_ms: AtomicU64,
}

pub struct Sender {
    tx: mpsc::Sender<Msg>,
    thread: Option<JoinHandle<()>>,
    /// Set by `shutdown`: no request starts, and none lasts, past it.
    stop_at: StopAt,
    /// Closed when the sender thread ends (for a bounded wait on it).
    done: mpsc::Receiver<()>,
    pub stats: Arc<SenderStats>,
}

/// When the sender must have stopped (None: running).
type StopAt = Arc<Mutex<Option<Instant>>>;

/// The time left for one request: at most `REQUEST_TIMEOUT`, never past the stop deadline;
/// None once the deadline has passed.
fn request_budget(stop_at: &StopAt) -> Option<Duration> {
    const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
    match *stop_at
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
    {
        None => Some(REQUEST_TIMEOUT),
        Some(t) => t
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .map(|d| d.min(REQUEST_TIMEOUT)),
    }
}

/// Why an alert was not delivered.
#[derive(Debug, PartialEq)]
enum Refusal {
    /// Down, timed out, 5xx, 408/425/429: the same alert may go through later.
    Retry(String),
    /// Refused for good (other 4xx, or an answer that is not a status at all): retrying the
    /// same bytes cannot help.
    Reject(String),
}

/// A receiver's status: delivered, worth retrying, or refused for good.
fn judge(status: u16, who: &str) -> Result<(), Refusal> {
    match status {
        200..=299 => Ok(()),
        408 | 425 | 429 | 500..=599 => Err(Refusal::Retry(format!("{who} answered HTTP {status}"))),
        _ => Err(Refusal::Reject(format!("{who} answered HTTP {status}"))),
    }
}

enum Msg {
    Wake,
    /// An alert the store could not queue (disk full, store broken): kept in memory instead.
    Direct(String),
    Stop(Duration),
}

/// Alerts held in memory when the store's outbox cannot take them (oldest dropped, counted,
/// beyond this).
const MEMORY_OUTBOX: usize = 1000;

struct Receivers {
    alertmanager: Option<HttpUrl>,
    webhook: Option<HttpUrl>,
}

impl Receivers {
    /// Every receiver. The first that may take it later stops the round (`Retry`); one that
    /// refuses it for good does not keep the others from getting it (`Reject` at the end).
    fn deliver(&self, payload: &str, stop_at: &StopAt) -> Result<(), Refusal> {
        let mut rejected = None;
        let mut one = |u: &HttpUrl, body: &str, who: String| -> Result<(), Refusal> {
            let Some(timeout) = request_budget(stop_at) else {
                return Err(Refusal::Retry("stopping: no time left to send".into()));
            };
            let r = match post_json(u, body, timeout) {
                Ok(s) => judge(s, &who),
                Err(e) => Err(Refusal::Retry(format!("{who} is unreachable: {e}"))),
            };
            match r {
                Err(Refusal::Reject(e)) => {
                    rejected.get_or_insert(e);
                    Ok(())
                }
                other => other,
            }
        };
        if let Some(u) = &self.alertmanager {
            let u = u.join("/api/v2/alerts");
            one(&u, &format!("[{payload}]"), format!("Alertmanager at {u}"))?;
        }
        if let Some(u) = &self.webhook {
            one(u, payload, format!("webhook {u}"))?;
        }
        rejected.map_or(Ok(()), |e| Err(Refusal::Reject(e)))
    }
}

impl Sender {
    /// Starts delivering `store`'s outbox to the configured receivers.
    pub fn spawn(store: Store, cfg: &AlertsConfig) -> anyhow::Result<Sender> {
        let parse = |u: &Option<String>| -> anyhow::Result<Option<HttpUrl>> {
            u.as_deref()
                .map(HttpUrl::parse)
                .transpose()
                .map_err(|e| anyhow::anyhow!(e))
        };
        let rx_cfg = Receivers {
            alertmanager: parse(&cfg.alertmanager)?,
            webhook: parse(&cfg.webhook)?,
        };
        let retry = Duration::from_secs(cfg.retry_s.max(1));
        let stats = Arc::new(SenderStats::default());
        let (tx, rx) = mpsc::channel();
        let (done_tx, done) = mpsc::channel::<()>();
        let st = stats.clone();
        let stop_at = StopAt::default();
        let stop = stop_at.clone();
        let thread = std::thread::Builder::new()
            .name("seer-alerts".into())
            .spawn(move || {
                let _done = done_tx; // dropped when the thread ends, however it ends
                sender_loop(&store, &rx_cfg, &rx, retry, &st, &stop);
            })?;
        Ok(Sender {
            tx,
            thread: Some(thread),
            stop_at,
            done,
            stats,
        })
    }

    /// Something was queued: try now rather than at the next retry.
    pub fn wake(&self) {
        let _ = self.tx.send(Msg::Wake);
    }

    /// Delivers `payload` without the store (its outbox refused it): held in memory until
    /// delivered, lost only if the agent stops first or more than 1000 wait.
    pub fn direct(&self, payload: String) {
        let _ = self.tx.send(Msg::Direct(payload));
    }

    /// Tries to deliver what is queued for at most `grace`, then stops; what is left stays in
    /// the outbox for the next start. Returns within `grace` and a moment, whatever the
    /// receivers do (no request outlives the deadline; a sender still busy then is left
    /// behind, logged, and ends with the process).
    /// A second call returns at once.
    pub fn stop(&mut self, grace: Duration) {
        if self.thread.is_none() {
            return;
        }
        let deadline = Instant::now() + grace;
        *self
            .stop_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(deadline);
        let _ = self.tx.send(Msg::Stop(grace));
        match self.done.recv_timeout(grace + Duration::from_millis(500)) {
            Err(mpsc::RecvTimeoutError::Timeout) => log::error!(
                "alerts: the sender did not stop within {:.1} s; leaving it (what is queued stays in the outbox)",
                grace.as_secs_f64()
            ),
            _ => {
                if let Some(t) = self.thread.take() {
                    let _ = t.join();
                }
            }
        }
    }
}

/// Delivers until an alert must wait (kept, in order), the outbox is empty, or the stop
/// deadline has passed. True if empty.
fn drain(
    store: &Store,
    r: &Receivers,
    st: &SenderStats,
    down: &mut Option<Instant>,
    stop_at: &StopAt,
) -> bool {
    loop {
        let pending = match store.pending_alerts(64) {
            Ok(p) => p,
            Err(e) => {
                log::warn!("alerts: reading the outbox: {e}");
                return false;
            }
        };
        st.pending.store(pending.len() as u64, Ordering::Relaxed);
        if pending.is_empty() {
            return true;
        }
        for a in pending {
            match r.deliver(&a.payload, stop_at) {
                Ok(()) => {
                    if let Err(e) = store.ack_alert(a.id) {
                        log::warn!("alerts: removing delivered alert {}: {e}", a.id);
                        return false;
                    }
                    st.delivered.fetch_add(1, Ordering::Relaxed);
                    st.last_ok_ms.store(a.ts_ms.max(1), Ordering::Relaxed);
                    if let Some(since) = down.take() {
                        log::info!(
                            "alerts: receivers are back after {:.0} s; delivering the outbox",
                            since.elapsed().as_secs_f64()
                        );
                    }
                }
                Err(Refusal::Reject(why)) => {
                    st.rejected.fetch_add(1, Ordering::Relaxed);
                    log::error!(
                        "alerts: {why}: alert {} is refused for good and moved to the store's \
                         rejected alerts (`seer-agent query alerts` shows it); later alerts go on. \
                         Look at the receiver's log and at [alerts] in the config",
                        a.id
                    );
                    if let Err(e) = store.reject_alert(a.id, &why) {
                        log::warn!("alerts: moving refused alert {}: {e}", a.id);
                        return false;
                    }
                }
                Err(Refusal::Retry(e)) => {
                    st.failures.fetch_add(1, Ordering::Relaxed);
                    if down.is_none() {
                        log::warn!(
                            "alerts: {e}; alert {} and later ones stay in the store's outbox and \
                             are retried (start the receiver, or fix [alerts] in the config)",
                            a.id
                        );
                        *down = Some(Instant::now());
                    }
                    return false;
                }
            }
        }
    }
}

fn sender_loop(
    store: &Store,
    r: &Receivers,
    rx: &mpsc::Receiver<Msg>,
    retry: Duration,
    st: &SenderStats,
    stop_at: &StopAt,
) {
    let mut down: Option<Instant> = None;
    let mut memory: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    // Memory first (those are the ones with no other copy), then the store's outbox.
    let flush = |memory: &mut std::collections::VecDeque<String>, down: &mut Option<Instant>| {
        while let Some(p) = memory.front() {
            match r.deliver(p, stop_at) {
                Ok(()) => {
                    memory.pop_front();
                    st.delivered.fetch_add(1, Ordering::Relaxed);
                }
                Err(Refusal::Reject(why)) => {
                    st.rejected.fetch_add(1, Ordering::Relaxed);
                    log::error!(
                        "alerts: {why}: an alert the store could not keep is refused for good \
                         and dropped: {p}"
                    );
                    memory.pop_front();
                }
                Err(Refusal::Retry(e)) => {
                    st.failures.fetch_add(1, Ordering::Relaxed);
                    if down.is_none() {
                        log::warn!("alerts: {e}; {} alert(s) held in memory", memory.len());
                        *down = Some(Instant::now());
                    }
                    return false;
                }
            }
        }
        drain(store, r, st, down, stop_at)
    };
    loop {
        let empty = flush(&mut memory, &mut down);
        let wait = if empty || down.is_none() {
            Duration::from_secs(1)
        } else {
            retry
        };
        match rx.recv_timeout(wait) {
            Ok(Msg::Wake) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Ok(Msg::Direct(p)) => {
                if memory.len() >= MEMORY_OUTBOX {
                    memory.pop_front();
                    st.failures.fetch_add(1, Ordering::Relaxed);
                    log::error!(
                        "alerts: {MEMORY_OUTBOX} alerts already held in memory (the store refuses them and the receivers are down): the oldest is dropped"
                    );
                }
                memory.push_back(p);
            }
            Ok(Msg::Stop(grace)) => {
                let t0 = Instant::now();
                while t0.elapsed() < grace && !flush(&mut memory, &mut down) {
                    std::thread::sleep(Duration::from_millis(200));
                }
                let left = st.pending.load(Ordering::Relaxed);
                if left > 0 {
                    log::warn!("alerts: {left} alert(s) not delivered; kept for the next start");
                }
                if !memory.is_empty() {
                    log::error!(
                        "alerts: {} alert(s) the store could not keep were not delivered: {}",
                        memory.len(),
                        memory.iter().cloned().collect::<Vec<_>>().join(" ")
                    );
                }
                return;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_795_704_245_000), "2026-11-26T14:44:05.000Z");
    }

    #[test]
    fn alert_carries_culprit_resource_and_actions() {
        let a = AlertInfo {
            culprit: "memcached".into(),
            qos: "nginx p99 80 ms > 50 ms".into(),
            resource: "cpu_int".into(),
            confidence: 0.5,
            mode: "recommend".into(),
            diagnosis: Some(json!({"resource": "cpu_int"})),
            actions: json!([{"action": "set", "service": "memcached"}]),
            starts_ms: 0,
            ends_ms: 1000,
            origin: Origin::Observed,
        };
        let v = alert_json(&a, "h1", "http://h1:9464/metrics");
        assert_eq!(v["labels"]["service"], "memcached");
        assert_eq!(v["labels"]["resource"], "cpu_int");
        assert!(
            v["annotations"]["actions"]
                .as_str()
                .unwrap()
                .contains("memcached")
        );
        assert_eq!(v["endsAt"], "1970-01-01T00:00:01.000Z");
    }

    /// A free loopback port (nothing listens there once this returns).
    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// Accepts one request on `port` that contains `want`, answers 200, returns the request.
    fn receive_one(port: u16, want: &'static str) -> std::thread::JoinHandle<String> {
        let l = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            while !String::from_utf8_lossy(&got).contains(want) {
                let n = c.read(&mut buf).unwrap();
                assert!(n > 0);
                got.extend_from_slice(&buf[..n]);
            }
            c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
            String::from_utf8_lossy(&got).into_owned()
        })
    }

    fn temp_store(name: &str) -> (std::path::PathBuf, Store) {
        let dir = std::env::temp_dir().join(format!("seer-alert-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open(dir.join("s.redb"), seer_store::StoreConfig::default()).unwrap();
        (dir, store)
    }

    /// A receiver that is down: the alert stays queued; once it is up, it is delivered and
    /// removed (a real HTTP listener on loopback).
    #[test]
    fn outbox_survives_a_down_receiver() {
        let (dir, store) = temp_store("outbox");
        let port = free_port();
        let r = Receivers {
            alertmanager: None,
            webhook: Some(HttpUrl::parse(&format!("http://127.0.0.1:{port}/hook")).unwrap()),
        };
        store.enqueue_alert(1, r#"{"n":1}"#).unwrap();
        let st = SenderStats::default();
        let mut down = None;
        assert!(!drain(&store, &r, &st, &mut down, &StopAt::default()));
        assert!(down.is_some());
        assert_eq!(store.pending_alerts(10).unwrap().len(), 1);
        let srv = receive_one(port, r#"{"n":1}"#);
        assert!(drain(&store, &r, &st, &mut down, &StopAt::default()));
        let req = srv.join().unwrap();
        assert!(req.starts_with("POST /hook HTTP/1.1"), "{req}");
        assert!(store.pending_alerts(10).unwrap().is_empty());
        assert_eq!(st.delivered.load(Ordering::Relaxed), 1);
        assert!(down.is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_4xx_is_for_good_but_408_429_and_5xx_are_retried() {
        assert_eq!(judge(204, "w"), Ok(()));
        for s in [400, 401, 404, 405, 413, 422, 301] {
            assert!(matches!(judge(s, "w"), Err(Refusal::Reject(_))), "{s}");
        }
        for s in [408, 425, 429, 500, 502, 503] {
            assert!(matches!(judge(s, "w"), Err(Refusal::Retry(_))), "{s}");
        }
    }

    /// Reads one whole request: headers, then `Content-Length` bytes of body. Before, one
    /// `read` could end after the headers (the client writes the body separately); the answer
    /// and close then left the body unread, the kernel reset the connection, and the client
    /// saw an error instead of the status (a test that failed one run in many).
    fn read_request(c: &mut std::net::TcpStream) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if got.len() >= end + 4 + len {
                    return got;
                }
            }
            match c.read(&mut buf) {
                Ok(0) | Err(_) => return got,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// A receiver answering `status` to every request, counting them (real loopback HTTP).
    fn answering(port: u16, status: u16) -> Arc<AtomicU64> {
        let l = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        let n = Arc::new(AtomicU64::new(0));
        let seen = n.clone();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(mut c) = c else { break };
                let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                read_request(&mut c);
                seen.fetch_add(1, Ordering::Relaxed);
                let _ = write!(c, "HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
            }
        });
        n
    }

    /// Before: a 400 was retried forever and every later alert waited behind it.
    #[test]
    fn an_alert_refused_for_good_does_not_block_the_later_ones() {
        let (dir, store) = temp_store("reject");
        let (bad, good) = (free_port(), free_port());
        let _bad = answering(bad, 400);
        let got = answering(good, 200);
        let r = Receivers {
            alertmanager: Some(HttpUrl::parse(&format!("http://127.0.0.1:{bad}")).unwrap()),
            webhook: Some(HttpUrl::parse(&format!("http://127.0.0.1:{good}/hook")).unwrap()),
        };
        let a = store.enqueue_alert(1, r#"{"n":1}"#).unwrap();
        let b = store.enqueue_alert(2, r#"{"n":2}"#).unwrap();
        let st = SenderStats::default();
        let mut down = None;
        assert!(drain(&store, &r, &st, &mut down, &StopAt::default()));
        assert!(store.pending_alerts(10).unwrap().is_empty());
        let rej = store.rejected_alerts(10).unwrap();
        let ids: Vec<u64> = rej.iter().map(|x| x.alert.id).collect();
        assert_eq!(ids, [b, a], "both refused by Alertmanager, newest first");
        assert!(rej[0].why.contains("HTTP 400"), "{}", rej[0].why);
        assert_eq!(st.rejected.load(Ordering::Relaxed), 2);
        assert_eq!(st.failures.load(Ordering::Relaxed), 0);
        assert_eq!(got.load(Ordering::Relaxed), 2, "the webhook still got both");
        assert!(down.is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Before: a receiver that answered one byte at a time held the sender, and so the
    /// agent's shutdown (and its undo), for as long as it liked.
    #[test]
    fn shutdown_is_bounded_even_by_a_receiver_that_drips() {
        let (dir, store) = temp_store("drip");
        let port = free_port();
        let l = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(mut c) = c else { break };
                std::thread::spawn(move || {
                    for _ in 0..600 {
                        if c.write_all(b"H").is_err() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                });
            }
        });
        for i in 0..5 {
            store.enqueue_alert(i, "{}").unwrap();
        }
        let cfg = AlertsConfig {
            alertmanager: None,
            webhook: Some(format!("http://127.0.0.1:{port}/hook")),
            retry_s: 1,
        };
        let mut snd = Sender::spawn(store, &cfg).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let t0 = Instant::now();
        snd.stop(Duration::from_secs(1));
        let took = t0.elapsed();
        assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// An alert the store refused is held in memory and delivered once the receiver is up.
    #[test]
    fn an_alert_the_store_refused_is_delivered_from_memory() {
        let (dir, store) = temp_store("memory");
        let port = free_port();
        let cfg = AlertsConfig {
            alertmanager: None,
            webhook: Some(format!("http://127.0.0.1:{port}/hook")),
            retry_s: 1,
        };
        let mut snd = Sender::spawn(store, &cfg).unwrap();
        snd.direct(r#"{"n":2}"#.into());
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            snd.stats.failures.load(Ordering::Relaxed) >= 1,
            "receiver down"
        );
        let srv = receive_one(port, r#"{"n":2}"#);
        let req = srv.join().unwrap();
        assert!(req.contains(r#"{"n":2}"#), "{req}");
        snd.stop(Duration::from_secs(1));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
