//! The live view in the browser, served by the agent's own listener (no separate server):
//! `/ui` (the page; its script and style sheet are embedded in the binary at build time, so
//! nothing is fetched from anywhere but the agent) and `/api/ui/stream`, server-sent events,
//! one snapshot per event, at most one per [`MIN_INTERVAL`]: the tick's JSON as `--json`
//! prints it (services with their channels and `p`, calls, calls to other hosts, the model)
//! plus `threshold`, `qos` and the latest `episodes`. The page keeps the history it draws; it
//! never asks the store per tick.
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

/// The latest snapshot, shared with every open stream (a slow page skips snapshots, it never
/// holds the tick loop).
#[derive(Clone)]
pub struct Feed {
    tx: Arc<watch::Sender<Arc<str>>>,
    last: Arc<std::sync::Mutex<Option<Instant>>>,
}

impl Default for Feed {
    fn default() -> Self {
        Feed {
            tx: Arc::new(watch::channel(Arc::from("")).0),
            last: Arc::new(std::sync::Mutex::new(None)),
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
        self.tx.send_replace(Arc::from(snapshot.to_string()));
    }

    /// The latest snapshot (empty before the first).
    pub fn latest(&self) -> Arc<str> {
        self.tx.borrow().clone()
    }

    /// A server-sent-events body that follows this feed until the client goes.
    pub fn stream(&self) -> SseBody {
        let mut rx = self.tx.subscribe();
        let (tx, body) = mpsc::channel::<Bytes>(4);
        tokio::spawn(async move {
            if tx
                .send(Bytes::from_static(b"retry: 1000\n\n"))
                .await
                .is_err()
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

/// The page with `snapshot` embedded (`<script id="first-snapshot" type="application/json">`)
/// before its script, which draws it at once: the first paint needs no round trip, and a
/// page loaded now shows now. `<` is escaped so no value can close the element.
pub fn with_first_snapshot(page: &str, snapshot: &str) -> String {
    const AT: &str = "<script src=\"/ui/app.js\">";
    if snapshot.is_empty() || !page.contains(AT) {
        return page.to_string();
    }
    let json = snapshot.replace('<', "\\u003c");
    page.replacen(
        AT,
        &format!("<script id=\"first-snapshot\" type=\"application/json\">{json}</script>\n{AT}"),
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
        feed.publish(&serde_json::json!({"ts_ms": 1}));
        let mut body = feed.stream();
        assert_eq!(next(&mut body).await, "retry: 1000\n\n");
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
    fn the_first_snapshot_is_embedded_and_cannot_close_its_element() {
        let page = with_first_snapshot(INDEX_HTML, r#"{"name":"</script><b>x"}"#);
        let at = page.find("id=\"first-snapshot\"").expect("embedded");
        assert!(at < page.find("<script src=\"/ui/app.js\">").expect("script"));
        assert!(page.contains(r#"{"name":"\u003c/script>\u003cb>x"}"#));
        assert_eq!(page.matches("</script>").count(), 2, "{page}");
        assert_eq!(with_first_snapshot(INDEX_HTML, ""), INDEX_HTML);
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
