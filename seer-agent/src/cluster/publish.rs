//! The agent's side of cluster mode: each tick's [`HostTick`] goes to a task of its own through
//! a bounded channel (`try_send`: a tick never waits on NATS). The task publishes to JetStream
//! and waits for the stream's ack; a message leaves its backlog only once acked (with a
//! message id, so a retried publish is stored once). While NATS or the stream is away the
//! agent goes on alone (local prediction and reactive path, as without `--cluster`), the
//! backlog holds the last `backlog_max` ticks, the oldest dropped when full (counted), and
//! the log, `/metrics` and the live table say so; on reconnect it catches up, oldest first.
use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use async_nats::connection::State;
use seer_common::sample::Sample;
use tokio::sync::mpsc;

pub use crate::serve::metrics::ClusterStats as PublishStats;

use super::wire::{self, HostTick, RespondRequest, WireService};
use crate::discovery::Discovery;

/// Ticks the channel to the task holds (it drains them into its backlog at once).
const CHANNEL: usize = 64;
/// Respond requests waiting for the tick loop (more in one tick are dropped).
const REQUESTS: usize = 16;
/// How long one publish may wait for its ack before the task calls NATS unreachable.
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between tries while unreachable.
const RETRY: Duration = Duration::from_millis(250);
/// On shutdown, how long the task may go on flushing its backlog.
const FLUSH: Duration = Duration::from_secs(1);
/// Ticks between two readings of the host's addresses.
const ADDRS_EVERY: u64 = 100;

#[derive(Default)]
struct Shared {
    connected: AtomicBool,
    published: AtomicU64,
    dropped: AtomicU64,
    backlog: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Shared {
    fn set_error(&self, e: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = e;
    }
}

/// The tick loop's handle.
pub struct Publisher {
    tx: Option<mpsc::Sender<(String, Vec<u8>)>>,
    shared: Arc<Shared>,
    task: Option<tokio::task::JoinHandle<()>>,
    url: String,
    host: String,
    /// Distinguishes this run's message ids from an earlier run's (JetStream deduplicates by id).
    boot_ms: u64,
    seq: u64,
    addrs: Vec<std::net::IpAddr>,
    requests: mpsc::Receiver<RespondRequest>,
    answers: mpsc::Sender<serde_json::Value>,
    /// The newest leader term seen in a request.
    term: u64,
}

impl Publisher {
    /// Spawns the publishing task on the current tokio runtime; it connects in the background
    /// (an unreachable NATS at start is the same as one lost later).
    pub fn start(
        url: &str,
        creds: Option<&std::path::Path>,
        ca: Option<&std::path::Path>,
        host: &str,
        backlog_max: usize,
    ) -> Result<Publisher, super::ClusterError> {
        super::check_url(url)?;
        let opts = super::options(creds, ca, &format!("seer-agent {host}"))?;
        let shared = Arc::new(Shared::default());
        let (tx, rx) = mpsc::channel(CHANNEL);
        let (req_tx, requests) = mpsc::channel(REQUESTS);
        let (answers, ans_rx) = mpsc::channel(REQUESTS);
        let task = tokio::spawn(run(
            opts,
            url.to_string(),
            host.to_string(),
            rx,
            (req_tx, ans_rx),
            shared.clone(),
            backlog_max.max(1),
        ));
        log::info!(
            "cluster: publishing every tick on {} at {url} (backlog up to {backlog_max} ticks while unreachable)",
            wire::subject(host)
        );
        Ok(Publisher {
            tx: Some(tx),
            shared,
            task: Some(task),
            url: url.into(),
            host: host.into(),
            boot_ms: crate::util::now_ms(),
            seq: 0,
            addrs: Vec::new(),
            requests,
            answers,
            term: 0,
        })
    }

    /// Sends the central an answer (the diagnosis and decision for a service it asked about)
    /// on `seer.events.<host>`; never waits (a full channel drops it, logged).
    pub fn answer(&self, a: serde_json::Value) {
        let msg = serde_json::json!({"v": wire::VERSION, "host": self.host, "answer": a});
        if self.answers.try_send(msg).is_err() {
            log::warn!("cluster: an answer to the central was dropped (NATS too slow)");
        }
    }

    /// The central's requests to respond that came since the last call, the leader's term
    /// checked: one from an older term than a request already taken is from a deposed leader.
    pub fn requests(&mut self) -> Vec<RespondRequest> {
        let mut out = Vec::new();
        while let Ok(r) = self.requests.try_recv() {
            if r.term < self.term {
                log::warn!(
                    "cluster: ignoring {} (term {}) asking to respond for {}: term {} leads",
                    r.leader,
                    r.term,
                    r.service,
                    self.term
                );
                continue;
            }
            self.term = r.term;
            out.push(r);
        }
        out
    }

    /// This tick's message, handed to the task without waiting (a full channel drops it,
    /// counted).
    pub fn on_tick(&mut self, ts_ms: u64, tick_ms: u64, disc: &Discovery, samples: &[Sample]) {
        if self.seq.is_multiple_of(ADDRS_EVERY) {
            self.addrs = crate::sys::bpf::local_addrs()
                .map(|a| a.into_iter().filter(|ip| !ip.is_loopback()).collect())
                .unwrap_or_default();
            self.addrs.sort();
        }
        let msg = HostTick {
            host: self.host.clone(),
            ts_ms,
            tick_ms: tick_ms as u32,
            seq: self.seq,
            addrs: self.addrs.clone(),
            services: disc
                .services
                .iter()
                .zip(samples)
                .map(|(s, smp)| WireService {
                    id: s.id.0,
                    name: s.name.clone(),
                    ports: s.ports.clone(),
                    values: smp.values,
                })
                .collect(),
            edges: disc.edges.iter().map(|(a, b)| (a.0, b.0)).collect(),
            remote_edges: disc.remote_edges.iter().map(|(a, to)| (a.0, *to)).collect(),
        };
        let mut bytes = Vec::with_capacity(256);
        msg.encode(&mut bytes);
        let id = format!("{}.{}.{}", self.host, self.boot_ms, self.seq);
        self.seq += 1;
        if let Some(tx) = &self.tx
            && tx.try_send((id, bytes)).is_err()
        {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn stats(&self) -> PublishStats {
        let s = &self.shared;
        PublishStats {
            url: self.url.clone(),
            host: self.host.clone(),
            connected: s.connected.load(Ordering::Relaxed),
            published: s.published.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
            backlog: s.backlog.load(Ordering::Relaxed),
            last_error: s
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    /// Closes the channel: the task flushes what it holds for up to a second, then stops.
    pub async fn shutdown(mut self) {
        self.tx = None;
        if let Some(t) = self.task.take() {
            let abort = t.abort_handle();
            if tokio::time::timeout(FLUSH + Duration::from_millis(500), t)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        let st = self.stats();
        log::info!(
            "cluster: {} ticks published, {} dropped, {} left unsent",
            st.published,
            st.dropped,
            st.backlog
        );
    }
}

/// The backlog: the oldest dropped (counted) when full.
fn push(backlog: &mut VecDeque<(String, Vec<u8>)>, m: (String, Vec<u8>), max: usize, sh: &Shared) {
    if backlog.len() >= max {
        backlog.pop_front();
        sh.dropped.fetch_add(1, Ordering::Relaxed);
    }
    backlog.push_back(m);
    sh.backlog.store(backlog.len() as u64, Ordering::Relaxed);
}

async fn publish_one(
    js: &async_nats::jetstream::Context,
    subject: &str,
    id: &str,
    bytes: &[u8],
) -> Result<(), String> {
    let msg = async_nats::jetstream::message::PublishMessage::build()
        .payload(bytes.to_vec().into())
        .message_id(id);
    let why = |e: async_nats::jetstream::context::PublishError| {
        use async_nats::jetstream::context::PublishErrorKind;
        match e.kind() {
            PublishErrorKind::StreamNotFound => format!(
                "no stream {} takes {subject} yet: is a `seer-agent central` running?",
                super::STREAM
            ),
            _ => e.to_string(),
        }
    };
    let ack = tokio::time::timeout(ACK_TIMEOUT, async {
        js.send_publish(subject.to_string(), msg)
            .await
            .map_err(why)?
            .await
            .map_err(why)
    })
    .await
    .map_err(|_| format!("no ack within {ACK_TIMEOUT:?}"))??;
    if ack.stream != super::STREAM {
        return Err(format!(
            "stored by stream {}, expected {}",
            ack.stream,
            super::STREAM
        ));
    }
    Ok(())
}

/// Takes the central's requests on `seer.respond.<host>` (re-subscribed by the client after
/// each reconnect) to the tick loop, and sends the agent's answers on `seer.events.<host>`;
/// what does not decode is logged once and dropped.
async fn listen(
    client: async_nats::Client,
    host: String,
    tx: mpsc::Sender<RespondRequest>,
    mut answers: mpsc::Receiver<serde_json::Value>,
) {
    use futures_util::StreamExt as _;
    let subject = wire::respond_subject(&host);
    let events = wire::events_subject(&host);
    let mut sub = match client.subscribe(subject.clone()).await {
        Ok(s) => s,
        Err(e) => {
            log::error!(
                "cluster: cannot subscribe to {subject}: {e}; the central cannot ask this host to respond"
            );
            return;
        }
    };
    let mut warned = false;
    loop {
        tokio::select! {
            m = sub.next() => {
                let Some(m) = m else { return };
                match RespondRequest::decode(&m.payload) {
                    Ok(r) => {
                        if tx.try_send(r).is_err() && !warned {
                            log::warn!("cluster: respond requests come faster than ticks; dropping some");
                            warned = true;
                        }
                    }
                    Err(e) if !warned => {
                        log::warn!(
                            "cluster: refused a request on {subject}: {e}; further ones are dropped silently"
                        );
                        warned = true;
                    }
                    Err(_) => {}
                }
            }
            a = answers.recv() => {
                let Some(a) = a else { return };
                if let Err(e) = client.publish(events.clone(), a.to_string().into()).await {
                    log::warn!("cluster: answering on {events}: {e}");
                }
            }
        }
    }
}

async fn run(
    opts: async_nats::ConnectOptions,
    url: String,
    host: String,
    mut rx: mpsc::Receiver<(String, Vec<u8>)>,
    (req_tx, ans_rx): (
        mpsc::Sender<RespondRequest>,
        mpsc::Receiver<serde_json::Value>,
    ),
    sh: Arc<Shared>,
    max: usize,
) {
    let subject = wire::subject(&host);
    let client = match opts.retry_on_initial_connect().connect(url.as_str()).await {
        Ok(c) => c,
        Err(e) => {
            // Only a malformed address gets here (retry_on_initial_connect retries the rest).
            log::error!("cluster: cannot connect to {url}: {e}; working alone");
            sh.set_error(Some(e.to_string()));
            while rx.recv().await.is_some() {
                sh.dropped.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
    };
    let listener = tokio::spawn(listen(client.clone(), host, req_tx, ans_rx));
    let js = async_nats::jetstream::new(client);
    let mut backlog: VecDeque<(String, Vec<u8>)> = VecDeque::new();
    let mut open = true;
    let mut down_since_logged = false;
    let mut flush_deadline: Option<tokio::time::Instant> = None;
    loop {
        if backlog.is_empty() {
            if !open {
                break;
            }
            match rx.recv().await {
                Some(m) => push(&mut backlog, m, max, &sh),
                None => break,
            }
        }
        while let Ok(m) = rx.try_recv() {
            push(&mut backlog, m, max, &sh);
        }
        if open && rx.is_closed() && rx.is_empty() {
            open = false;
            flush_deadline = Some(tokio::time::Instant::now() + FLUSH);
        }
        if flush_deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            break;
        }
        let Some((id, bytes)) = backlog.front() else {
            continue;
        };
        match publish_one(&js, &subject, id, bytes).await {
            Ok(()) => {
                backlog.pop_front();
                sh.published.fetch_add(1, Ordering::Relaxed);
                sh.backlog.store(backlog.len() as u64, Ordering::Relaxed);
                if !sh.connected.swap(true, Ordering::Relaxed) {
                    log::info!(
                        "cluster: publishing to {url}{}",
                        if backlog.is_empty() {
                            String::new()
                        } else {
                            format!(", catching up on {} ticks", backlog.len())
                        }
                    );
                    sh.set_error(None);
                    down_since_logged = false;
                }
            }
            Err(e) => {
                let e = if js.client().connection_state() == State::Connected {
                    e
                } else {
                    format!("NATS unreachable, reconnecting ({e})")
                };
                sh.connected.store(false, Ordering::Relaxed);
                if !down_since_logged {
                    log::warn!(
                        "cluster: cannot publish to {url} ({e}); working alone, keeping the last {max} ticks to send (oldest dropped)"
                    );
                    down_since_logged = true;
                }
                sh.set_error(Some(e));
                if !open {
                    break;
                }
                // Wait a little, still taking ticks in.
                let pause = tokio::time::sleep(RETRY);
                tokio::pin!(pause);
                loop {
                    tokio::select! {
                        _ = &mut pause => break,
                        m = rx.recv() => match m {
                            Some(m) => push(&mut backlog, m, max, &sh),
                            None => { open = false; break; }
                        },
                    }
                }
            }
        }
    }
    sh.backlog.store(backlog.len() as u64, Ordering::Relaxed);
    listener.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_backlog_drops_the_oldest_and_counts_it() {
        let sh = Shared::default();
        let mut b = VecDeque::new();
        for i in 0..5u8 {
            push(&mut b, (i.to_string(), vec![i]), 3, &sh);
        }
        assert_eq!(b.len(), 3);
        assert_eq!(b.front().map(|m| m.1[0]), Some(2), "oldest kept is tick 2");
        assert_eq!(sh.dropped.load(Ordering::Relaxed), 2);
        assert_eq!(sh.backlog.load(Ordering::Relaxed), 3);
    }
}
