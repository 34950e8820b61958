//! The HTTP listener (hyper, HTTP/1.1) for `/metrics`, `/api/query/...` and the live view
//! (`/ui`, `/api/ui/stream`: see [`super::ui`]), with the limits a
//! root agent's listener needs beside services and users it does not trust:
//! - at most [`MAX_CONNECTIONS`] at once (more are closed at once, counted), each closed after
//!   [`HEADER_TIMEOUT`] without a complete request head and after [`CONNECTION_TIMEOUT`] in
//!   all; request heads larger than [`MAX_HEAD`] are refused by hyper;
//! - GET only, no body;
//! - `/api/query/...` (cgroup paths, diagnoses, actions) answers only root on this host: the
//!   peer must be a loopback socket whose owner uid is 0 (read from the kernel's socket table);
//!   queries run on a blocking thread, [`MAX_QUERIES`] at once, `n` capped by the parser;
//! - `/api/ui/...` (the same private data, live) answers root only too; the page's own files
//!   (`/ui`) anyone who may connect.
use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use http_body_util::{BodyExt as _, Full, combinators::BoxBody};
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::Semaphore};

pub const MAX_CONNECTIONS: usize = 64;
pub const MAX_QUERIES: usize = 2;
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// hyper's smallest read buffer: a request head must fit.
pub const MAX_HEAD: usize = 8192;

/// Connections closed at once because [`MAX_CONNECTIONS`] were open.
pub static REFUSED: AtomicU64 = AtomicU64::new(0);

/// How `/metrics` asks the tick loop for a rendering: it sends where to put it, and the loop
/// renders between two ticks (encoded at scrape time: a tick renders nothing).
pub type Scrapes = tokio::sync::mpsc::Sender<tokio::sync::oneshot::Sender<String>>;

/// How long a scrape waits for the tick loop (which answers between two ticks).
const SCRAPE_WAIT: Duration = Duration::from_secs(5);

/// Serves `/metrics` (rendered by the tick loop when asked), answers `seer-agent query` at
/// `/api/query/...` from `store` (the CLI cannot open a store the agent holds), and the live
/// view from `ui` where given, until the process exits. A bind failure is logged, not fatal:
/// the agent's main job does not depend on it.
pub async fn serve(
    addr: String,
    scrapes: Scrapes,
    store: Option<seer_store::Store>,
    ui: Option<super::ui::Feed>,
) {
    let listener = match TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            log::warn!(
                "metrics endpoint not started: cannot bind {addr}: {e} (use --metrics-addr)"
            );
            return;
        }
    };
    log::info!("Prometheus metrics on http://{addr}/metrics");
    let conns = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let queries = Arc::new(Semaphore::new(MAX_QUERIES));
    loop {
        let Ok((sock, peer)) = listener.accept().await else {
            // EMFILE and the like: do not spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(permit) = conns.clone().try_acquire_owned() else {
            if REFUSED.fetch_add(1, Ordering::Relaxed) == 0 {
                log::warn!(
                    "metrics endpoint: {MAX_CONNECTIONS} connections open; closing new ones (counted in seer_http_refused_total)"
                );
            }
            drop(sock);
            continue;
        };
        let local = sock.local_addr().ok();
        let (scrapes, store, queries, ui) =
            (scrapes.clone(), store.clone(), queries.clone(), ui.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let (scrapes, store, queries, ui) =
                    (scrapes.clone(), store.clone(), queries.clone(), ui.clone());
                async move {
                    Ok::<_, Infallible>(
                        answer(req, peer, local, &scrapes, store, &queries, ui.as_ref()).await,
                    )
                }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEAD)
                .keep_alive(false)
                .serve_connection(TokioIo::new(sock), svc);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
            drop(permit);
        });
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn reply(status: StatusCode, ctype: &str, body: String) -> Response<Body> {
    with_type(status, ctype, Full::new(Bytes::from(body)).boxed())
}

fn with_type(status: StatusCode, ctype: &str, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    if let Ok(v) = ctype.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

async fn answer(
    req: Request<Incoming>,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    scrapes: &Scrapes,
    store: Option<seer_store::Store>,
    queries: &Semaphore,
    ui: Option<&super::ui::Feed>,
) -> Response<Body> {
    if req.method() != Method::GET {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(String::new, |p| p.as_str().to_string());
    if path == "/metrics" {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let rendered = tokio::time::timeout(SCRAPE_WAIT, async {
            scrapes.send(tx).await.ok()?;
            rx.await.ok()
        })
        .await;
        let Ok(Some(mut body)) = rendered else {
            return reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!(
                    "the tick loop did not answer within {} s (stopping, or stalled)\n",
                    SCRAPE_WAIT.as_secs()
                ),
            );
        };
        body.push_str(&format!(
            "# HELP seer_http_refused_total Connections to this endpoint closed at once: {MAX_CONNECTIONS} were open.\n# TYPE seer_http_refused_total counter\nseer_http_refused_total {}\n",
            REFUSED.load(Ordering::Relaxed)
        ));
        return reply(StatusCode::OK, "text/plain; version=0.0.4", body);
    }
    if let Some(feed) = ui
        && (path == "/ui" || path.starts_with("/ui/") || path.starts_with("/api/ui/"))
    {
        return answer_ui(&path, peer, local, feed);
    }
    if !path.starts_with("/api/query/") {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            format!(
                "try GET /metrics{} or /api/query/services here\n",
                if ui.is_some() { ", /ui" } else { "" }
            ),
        );
    }
    if let Err(why) = peer_is_root(peer, local) {
        return forbidden("the query API", &why);
    }
    let Ok(_turn) = queries.try_acquire() else {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "application/json",
            serde_json::json!({ "error": format!("{MAX_QUERIES} queries already running; retry") })
                .to_string(),
        );
    };
    let (code, v) = api_answer(path, store).await;
    reply(code, "application/json", v.to_string())
}

/// The live view: the page's files to anyone who may connect, its data to root only.
fn answer_ui(
    path: &str,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    feed: &super::ui::Feed,
) -> Response<Body> {
    use super::ui;
    let asset = match path {
        "/ui" | "/ui/" | "/ui/index.html" => Some(("text/html; charset=utf-8", ui::INDEX_HTML)),
        "/ui/app.js" => Some(("text/javascript; charset=utf-8", ui::APP_JS)),
        "/ui/app.css" => Some(("text/css; charset=utf-8", ui::APP_CSS)),
        _ => None,
    };
    if let Some((ctype, body)) = asset {
        // The page carries the history for root (drawn at once, before the stream's
        // first event); for others it is the bare page, and the stream says why it is refused.
        let body = match (ctype.starts_with("text/html"), peer_is_root(peer, local)) {
            (true, Ok(())) => ui::with_history(body, &feed.history_json()),
            _ => body.to_string(),
        };
        return reply(StatusCode::OK, ctype, body);
    }
    if let Err(why) = peer_is_root(peer, local) {
        return forbidden("the live view's data", &why);
    }
    match path {
        "/api/ui/stream" => {
            let mut r = with_type(StatusCode::OK, "text/event-stream", feed.stream().boxed());
            r.headers_mut().insert(
                hyper::header::CACHE_CONTROL,
                hyper::header::HeaderValue::from_static("no-cache"),
            );
            r
        }
        "/api/ui/snapshot" => {
            let latest = feed.latest();
            if latest.is_empty() {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "application/json",
                    serde_json::json!({"error": "no tick yet"}).to_string(),
                )
            } else {
                reply(StatusCode::OK, "application/json", latest.to_string())
            }
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "the live view: GET /ui (the page), /api/ui/stream (server-sent events), /api/ui/snapshot (the latest)\n".into(),
        ),
    }
}

/// 403 for private data asked by someone other than root on this host.
fn forbidden(what: &str, why: &str) -> Response<Body> {
    reply(
        StatusCode::FORBIDDEN,
        "application/json",
        serde_json::json!({ "error": format!("{what} answers root on this host only: {why}") })
            .to_string(),
    )
}

/// Whether the peer is a socket on this host owned by root: a loopback peer's socket is in
/// this network namespace's table (`/proc/net/tcp`, `tcp6`), with its owner's uid.
fn peer_is_root(peer: SocketAddr, local: Option<SocketAddr>) -> Result<(), String> {
    if !peer.ip().is_loopback() && !peer.ip().to_canonical().is_loopback() {
        return Err(format!("{peer} is not on this host's loopback"));
    }
    let local = local.ok_or("no local address")?;
    match socket_uid(peer, local) {
        Some(0) => Ok(()),
        Some(uid) => Err(format!("the client runs as uid {uid}")),
        None => Err(format!("no socket {peer} -> {local} in the kernel's table")),
    }
}

/// The owner uid of the TCP socket `from` -> `to` in this namespace's table.
fn socket_uid(from: SocketAddr, to: SocketAddr) -> Option<u32> {
    let hex = |a: SocketAddr| -> String {
        match a.ip().to_canonical() {
            std::net::IpAddr::V4(ip) => {
                format!("{:08X}:{:04X}", u32::from_ne_bytes(ip.octets()), a.port())
            }
            std::net::IpAddr::V6(_) => String::new(),
        }
    };
    for (file, f, t) in [
        ("/proc/net/tcp", hex(from), hex(to)),
        ("/proc/net/tcp6", hex6(from), hex6(to)),
    ] {
        let Ok(table) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in table.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() > 7 && cols[1] == f && cols[2] == t {
                return cols[7].parse().ok();
            }
        }
    }
    None
}

/// `a` as /proc/net/tcp6 writes it (an IPv4 address as its IPv4-mapped IPv6 form).
fn hex6(a: SocketAddr) -> String {
    let ip = match a.ip() {
        std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        std::net::IpAddr::V6(v6) => v6,
    };
    let o = ip.octets();
    let words: String = o
        .chunks(4)
        .map(|c| format!("{:08X}", u32::from_ne_bytes([c[0], c[1], c[2], c[3]])))
        .collect();
    format!("{words}:{:04X}", a.port())
}

/// `{"json":..,"text":..}` for a query, or `{"error":..}` with a 4xx/5xx status.
async fn api_answer(
    path: String,
    store: Option<seer_store::Store>,
) -> (StatusCode, serde_json::Value) {
    let Some(store) = store else {
        return (
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": "this agent runs without a store (--no-store)"}),
        );
    };
    let what = match crate::serve::query::parse_api(&path) {
        Ok(w) => w,
        Err(e) => return (StatusCode::BAD_REQUEST, serde_json::json!({ "error": e })),
    };
    // Store reads block (redb): off the tick thread's runtime worker.
    match tokio::task::spawn_blocking(move || super::answer::answer(&store, &what)).await {
        Ok(Ok((json, text))) => (
            StatusCode::OK,
            serde_json::json!({"json": json, "text": text}),
        ),
        Ok(Err(e)) => (
            StatusCode::BAD_REQUEST,
            serde_json::json!({"error": format!("{e:#}")}),
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({"error": e.to_string()}),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This test's own loopback connection is found in the kernel's table with this process'
    /// uid.
    #[test]
    fn a_loopback_peer_is_found_with_its_owner() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (_s, peer) = l.accept().unwrap();
        let me = seer_store::safefs::euid();
        assert_eq!(socket_uid(peer, l.local_addr().unwrap()), Some(me));
        assert_eq!(peer, c.local_addr().unwrap());
        assert!(peer_is_root("192.0.2.1:5".parse().unwrap(), None).is_err());
    }
}
