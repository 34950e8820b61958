//! The live view in the browser, served by the agent's own listener (no separate server):
//! `/ui` (the page; its script and style sheet are embedded in the binary at build time, so
//! nothing is fetched from anywhere but the agent) and `/api/ui/stream`, server-sent events,
//! one snapshot per event, at most one per [`MIN_INTERVAL`]: the tick's JSON as `--json`
//! prints it (services with their channels and `p`, calls, calls to other hosts, the model)
//! plus `threshold`, `qos` and the latest `episodes`. A stream begins with one `history` event,
//! the snapshots of the last minutes (at most [`HISTORY`], [`HISTORY_BYTES`]), so a page opened
//! late still draws the channels and the probability from before it opened; then the page
//! keeps the history it draws; it never asks the store per tick. `seer-agent ui --db STORE`
//! fills the same feed from a recorded store (`cli/ui.rs`).
//!
//! The stream carries what the query API carries (pids, cgroup paths, diagnoses), so it obeys
//! the same rule: root on this host only. Each stream lives at most as long as any connection
//! ([`super::server::CONNECTION_TIMEOUT`]); the page reconnects at once (`retry:`).
use std::{
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use hyper::body::{Body, Bytes, Frame};
use serde_json::Value;
use tokio::sync::{mpsc, watch};

pub const INDEX_HTML: &str = include_str!("../../ui/index.html");
pub const APP_JS: &str = include_str!("../../ui/app.js");
pub const APP_CSS: &str = include_str!("../../ui/app.css");

/// The most often a snapshot goes out.
pub const MIN_INTERVAL: Duration = Duration::from_millis(500);
/// Snapshots a new page gets of the past: 5 minutes at one per [`MIN_INTERVAL`]...
pub const HISTORY: usize = 600;
/// ...and at most this many bytes of them (many services make big snapshots).
pub const HISTORY_BYTES: usize = 4 << 20;

/// The latest snapshot, shared with every open stream (a slow page skips snapshots, it never
/// holds the tick loop), and the last minutes of them for pages that open later.
#[derive(Clone)]
pub struct Feed {
    tx: Arc<watch::Sender<Arc<str>>>,
    last: Arc<std::sync::Mutex<Option<Instant>>>,
    history: Arc<std::sync::Mutex<History>>,
}

#[derive(Default)]
struct History {
    snaps: std::collections::VecDeque<Arc<str>>,
    bytes: usize,
}

impl Default for Feed {
    fn default() -> Self {
        Feed {
            tx: Arc::new(watch::channel(Arc::from("")).0),
            last: Arc::new(std::sync::Mutex::new(None)),
            history: Arc::default(),
        }
    }
}

impl Feed {
    /// Whether a snapshot is due (one per [`MIN_INTERVAL`]); the caller builds it only then.
    pub fn due(&self) -> bool {
        let Ok(mut last) = self.last.lock() else {
            return false;
        };
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < MIN_INTERVAL) {
            return false;
        }
        *last = Some(now);
        true
    }

    pub fn publish(&self, snapshot: &Value) {
        let snap: Arc<str> = Arc::from(snapshot.to_string());
        if let Ok(mut h) = self.history.lock() {
            h.bytes += snap.len();
            h.snaps.push_back(snap.clone());
            while h.snaps.len() > HISTORY || (h.bytes > HISTORY_BYTES && h.snaps.len() > 1) {
                if let Some(old) = h.snaps.pop_front() {
                    h.bytes -= old.len();
                }
            }
        }
        self.tx.send_replace(snap);
    }

    /// Every kept snapshot, oldest first, as one JSON array ("[]" when none).
    pub fn history_json(&self) -> String {
        let Ok(h) = self.history.lock() else {
            return "[]".into();
        };
        let mut b = String::with_capacity(h.bytes + h.snaps.len() + 2);
        b.push('[');
        for (i, s) in h.snaps.iter().enumerate() {
            if i > 0 {
                b.push(',');
            }
            b.push_str(s);
        }
        b.push(']');
        b
    }

    /// The latest snapshot (empty before the first).
    pub fn latest(&self) -> Arc<str> {
        self.tx.borrow().clone()
    }

    /// The `history` event (None when there is nothing yet).
    fn history_event(&self) -> Option<Bytes> {
        let h = self.history_json();
        (h != "[]").then(|| Bytes::from(format!("event: history\ndata: {h}\n\n")))
    }

    /// A server-sent-events body that follows this feed until the client goes.
    pub fn stream(&self) -> SseBody {
        let mut rx = self.tx.subscribe();
        let (tx, body) = mpsc::channel::<Bytes>(4);
        let history = self.history_event();
        tokio::spawn(async move {
            if tx
                .send(Bytes::from_static(b"retry: 1000\n\n"))
                .await
                .is_err()
            {
                return;
            }
            if let Some(h) = history
                && tx.send(h).await.is_err()
            {
                return;
            }
            loop {
                let snap = rx.borrow_and_update().clone();
                if !snap.is_empty() && tx.send(event(&snap)).await.is_err() {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        });
        SseBody { rx: body }
    }
}

/// One `tick` event (the JSON is on one line: serde_json writes no newline).
fn event(json: &str) -> Bytes {
    Bytes::from(format!("event: tick\ndata: {json}\n\n"))
}

/// The tick's JSON (`output::tick_json`) with what the page adds: the alarm threshold, the
/// QoS verdict and the latest episodes.
pub fn snapshot(
    mut tick: Value,
    threshold: Option<f32>,
    qos: Option<Value>,
    episodes: Vec<Value>,
) -> Value {
    tick["threshold"] = serde_json::json!(threshold);
    tick["qos"] = qos.unwrap_or(Value::Null);
    tick["episodes"] = Value::Array(episodes);
    tick
}

/// The page with `history` (a JSON array of snapshots, [`Feed::history_json`]) embedded
/// (`<script id="history" type="application/json">`) before its script, which draws it at
/// once: the first paint needs no round trip, and a page loaded now shows now, with the
/// minutes before it. `<` is escaped so no value can close the element.
pub fn with_history(page: &str, history: &str) -> String {
    const AT: &str = "<script src=\"/ui/app.js\">";
    if history.is_empty() || history == "[]" || !page.contains(AT) {
        return page.to_string();
    }
    let json = history.replace('<', "\\u003c");
    page.replacen(
        AT,
        &format!("<script id=\"history\" type=\"application/json\">{json}</script>\n{AT}"),
        1,
    )
}

/// A streaming response body fed by [`Feed::stream`]'s task.
pub struct SseBody {
    rx: mpsc::Receiver<Bytes>,
}

impl Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(b)) => Poll::Ready(Some(Ok(Frame::data(b)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    #[tokio::test]
    async fn a_stream_gets_the_latest_snapshot_then_each_new_one() {
        let feed = Feed::default();
        feed.publish(&serde_json::json!({"ts_ms": 0}));
        feed.publish(&serde_json::json!({"ts_ms": 1}));
        let mut body = feed.stream();
        assert_eq!(next(&mut body).await, "retry: 1000\n\n");
        assert_eq!(
            next(&mut body).await,
            "event: history\ndata: [{\"ts_ms\":0},{\"ts_ms\":1}]\n\n"
        );
        assert_eq!(
            next(&mut body).await,
            "event: tick\ndata: {\"ts_ms\":1}\n\n"
        );
        feed.publish(&serde_json::json!({"ts_ms": 2}));
        assert_eq!(
            next(&mut body).await,
            "event: tick\ndata: {\"ts_ms\":2}\n\n"
        );
    }

    async fn next(b: &mut SseBody) -> String {
        let f = tokio::time::timeout(Duration::from_secs(5), b.frame())
            .await
            .expect("a frame within 5 s")
            .expect("the stream goes on")
            .expect("infallible");
        String::from_utf8(f.into_data().expect("data").to_vec()).expect("utf8")
    }

    #[test]
    fn the_history_is_embedded_and_cannot_close_its_element() {
        let page = with_history(INDEX_HTML, r#"[{"name":"</script><b>x"}]"#);
        let at = page.find("id=\"history\"").expect("embedded");
        assert!(at < page.find("<script src=\"/ui/app.js\">").expect("script"));
        assert!(page.contains(r#"[{"name":"\u003c/script>\u003cb>x"}]"#));
        assert_eq!(page.matches("</script>").count(), 2, "{page}");
        assert_eq!(with_history(INDEX_HTML, "[]"), INDEX_HTML);
    }

    #[test]
    fn the_history_keeps_the_newest_within_its_bounds() {
        let feed = Feed::default();
        for i in 0..(HISTORY + 5) {
            feed.publish(&serde_json::json!({ "ts_ms": i }));
        }
        let h = feed.history.lock().unwrap();
        assert_eq!(h.snaps.len(), HISTORY);
        assert_eq!(&*h.snaps[0], "{\"ts_ms\":5}");
        drop(h);
        let big = "x".repeat(HISTORY_BYTES / 3);
        for i in 0..5 {
            feed.publish(&serde_json::json!({ "ts_ms": i, "pad": big }));
        }
        let h = feed.history.lock().unwrap();
        assert!(h.bytes <= HISTORY_BYTES, "{} bytes kept", h.bytes);
        assert_eq!(h.bytes, h.snaps.iter().map(|s| s.len()).sum::<usize>());
    }

    #[test]
    fn snapshots_are_throttled() {
        let feed = Feed::default();
        assert!(feed.due());
        assert!(!feed.due(), "a second snapshot within {MIN_INTERVAL:?}");
    }

    #[test]
    fn the_page_is_embedded_and_reads_only_the_agent() {
        assert!(INDEX_HTML.contains("/ui/app.js") && INDEX_HTML.contains("/ui/app.css"));
        assert!(APP_JS.contains("/api/ui/stream"));
        for asset in [INDEX_HTML, APP_JS, APP_CSS] {
            assert!(!asset.contains("http://") || asset.contains("http://www.w3.org/2000/svg"));
            assert!(!asset.contains("https://"), "an asset names another host");
        }
    }
}
