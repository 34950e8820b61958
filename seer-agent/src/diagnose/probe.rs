//! Watching the culprit: its request latency per short window, measured by asking it.
//!
//! Why active probing: a diagnosis needs many latency samples inside each ~10 ms burst. The
//! agent's passive channels (the eBPF latency histogram) see only the traffic that happens to
//! arrive, which at a few hundred requests per second is a handful of requests per burst, and
//! would need the probes loaded. A closed-loop client on a CPU the culprit does not use gets
//! tens to hundreds of samples per window and works without eBPF. The price: it must speak
//! the service's protocol, or fall back to something every TCP server does.
//!
//! Protocols ([`Protocol`]), chosen by [`detect`] from the process name, then the port, then
//! by asking (see [`sniff`]); `seer-agent diagnose --protocol` overrides:
//!
//! | protocol | request | reply complete when |
//! |---|---|---|
//! | memcached | `version` (or `get KEY`) | a line (`END\r\n` for `get`) |
//! | redis | RESP `PING` | one whole RESP value |
//! | http | `GET / HTTP/1.1` (keep-alive) | head + `Content-Length` body, or the last chunk |
//! | greeting | a new connection, nothing sent | the server's first byte (SSH, SMTP, MySQL, FTP...) |
//! | connect | a new connection | the handshake completes |
//!
//! Replies come from the service under diagnosis, which may be broken or hostile: their framing
//! ([`super::framing`]) never panics and tells a reply that can never complete from one still
//! arriving, and a request fails the probe, with the reason, when its reply is malformed, larger
//! than [`MAX_REPLY`], or not complete within [`REQUEST_DEADLINE`] (all reads together).
//!
//! The last two are the fallbacks for unknown protocols, and they measure less. A greeting is
//! written by the application after `accept()`, so its delay includes the application's
//! scheduling (CPU) and event loop, but not its request path (cache, memory). A bare connect is
//! answered by the kernel (SYN-ACK in softirq) before the application accepts: it moves with CPU
//! and network contention on the host and with a full accept queue, but says nothing about the
//! application's own work; a diagnosis that used it says so in its record, and an
//! inconclusive result from it means "not seen", not "short of nothing".
use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use super::{
    DiagnoseError,
    framing::{Frame, MAX_REPLY, http_reply_len, memcached_reply_len, resp_len},
};

/// The most one read may wait for the service.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// The most one request may take, all its reads together: a service that trickles its reply
/// fails the probe instead of holding it (and every later diagnosis) for as long as it likes.
const REQUEST_DEADLINE: Duration = Duration::from_secs(2);

/// Latency over one window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub n: u32,
    pub mean_us: f64,
    pub p50_us: f64,
}

impl Window {
    pub fn from_samples(lat_us: &mut [f64]) -> Window {
        if lat_us.is_empty() {
            return Window::default();
        }
        lat_us.sort_by(f64::total_cmp);
        Window {
            n: lat_us.len() as u32,
            mean_us: lat_us.iter().sum::<f64>() / lat_us.len() as f64,
            p50_us: lat_us[lat_us.len() / 2],
        }
    }
}

/// Something that measures the culprit's latency for a while.
pub trait Observer {
    fn window(&mut self, dur: Duration) -> Result<Window, DiagnoseError>;
}

/// What the memcached probe asks.
#[derive(Clone, Debug)]
pub enum Request {
    Version,
    Get(String),
}

/// The protocol the probe speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Memcached,
    Redis,
    Http,
    /// Connect and wait for the server's first byte (server-speaks-first protocols).
    Greeting,
    /// Connect only: the kernel's handshake (weakest; see the module documentation).
    Connect,
}

impl Protocol {
    pub const ALL: [Protocol; 5] = [
        Protocol::Memcached,
        Protocol::Redis,
        Protocol::Http,
        Protocol::Greeting,
        Protocol::Connect,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Memcached => "memcached",
            Protocol::Redis => "redis",
            Protocol::Http => "http",
            Protocol::Greeting => "greeting",
            Protocol::Connect => "connect",
        }
    }

    pub fn parse(s: &str) -> Option<Protocol> {
        Protocol::ALL.into_iter().find(|p| p.name() == s)
    }

    /// Whether the probe's latency includes the application's request path.
    pub fn sees_request_path(self) -> bool {
        matches!(self, Protocol::Memcached | Protocol::Redis | Protocol::Http)
    }
}

/// The protocol a process name or a well-known port says (None: unknown, ask [`sniff`]).
pub fn detect(comm: &str, port: u16) -> Option<Protocol> {
    let c = comm.to_ascii_lowercase();
    let by_name = [
        ("memcached", Protocol::Memcached),
        ("redis", Protocol::Redis),
        ("valkey", Protocol::Redis),
        ("keydb", Protocol::Redis),
        ("nginx", Protocol::Http),
        ("httpd", Protocol::Http),
        ("apache", Protocol::Http),
        ("envoy", Protocol::Http),
        ("haproxy", Protocol::Http),
        ("caddy", Protocol::Http),
        ("traefik", Protocol::Http),
        ("lighttpd", Protocol::Http),
        ("sshd", Protocol::Greeting),
        ("mysqld", Protocol::Greeting),
        ("mariadbd", Protocol::Greeting),
        ("postfix", Protocol::Greeting),
        ("exim", Protocol::Greeting),
    ];
    if let Some((_, p)) = by_name.iter().find(|(n, _)| c.starts_with(n)) {
        return Some(*p);
    }
    match port {
        11211 => Some(Protocol::Memcached),
        6379 | 6380 => Some(Protocol::Redis),
        80 | 8000 | 8008 | 8080 | 8081 | 8888 | 3000 | 5000 | 9000 => Some(Protocol::Http),
        21 | 22 | 25 | 110 | 143 | 587 | 3306 => Some(Protocol::Greeting),
        _ => None,
    }
}

/// For a service whose name and port say nothing: a server that speaks first within 200 ms
/// is probed by its greeting; one that answers an HTTP `GET /` with `HTTP/` speaks HTTP; any
/// other gets the bare connect probe. (Sending a `GET` to an unknown protocol is a small
/// liberty: servers answer a request they do not understand with an error or a close.)
pub fn sniff(addr: SocketAddr) -> Result<Protocol, DiagnoseError> {
    let err = |source| DiagnoseError::Probe {
        addr: addr.to_string(),
        proto: "sniff",
        source,
    };
    // An overloaded server's full accept queue drops SYNs: give it the retransmissions.
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(err)?;
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(err)?;
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(n) if n > 0 => return Ok(Protocol::Greeting),
        Ok(_) => return Ok(Protocol::Connect),
        Err(_) => {}
    }
    s.set_write_timeout(Some(READ_TIMEOUT)).map_err(err)?;
    if s.write_all(&http_request("/")).is_err() {
        return Ok(Protocol::Connect);
    }
    // Five bytes, however they are trickled, within one request's deadline.
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let mut got = Vec::new();
    while got.len() < 5 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        s.set_read_timeout(Some(left)).map_err(err)?;
        match s.read(&mut b) {
            Ok(n) if n > 0 => got.extend_from_slice(&b[..n]),
            _ => break,
        }
    }
    Ok(if got.starts_with(b"HTTP/") {
        Protocol::Http
    } else {
        Protocol::Connect
    })
}

fn http_request(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: seer-diagnose\r\nUser-Agent: seer-diagnose\r\n\r\n")
        .into_bytes()
}

/// Where the reply to one probe request at the start of `acc` ends, if it does.
fn reply_len(proto: Protocol, get: bool, acc: &[u8]) -> Frame {
    match proto {
        Protocol::Memcached => memcached_reply_len(acc, get),
        Protocol::Redis => resp_len(acc),
        Protocol::Http => http_reply_len(acc),
        Protocol::Greeting if acc.is_empty() => Frame::Incomplete,
        Protocol::Greeting => Frame::Complete(acc.len()),
        Protocol::Connect => Frame::Complete(0),
    }
}

fn invalid(why: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, why)
}

/// A closed-loop client on one connection (or a new connection per sample, for the
/// connection-level fallbacks).
pub struct Probe {
    addr: SocketAddr,
    proto: Protocol,
    get: bool,
    stream: Option<TcpStream>,
    /// The stream's read timeout was cut to what a request had left (restored before the next).
    timeout_cut: bool,
    req: Vec<u8>,
    acc: Vec<u8>,
    buf: Vec<u8>,
    lat: Vec<f64>,
}

impl Probe {
    pub fn connect(
        addr: SocketAddr,
        proto: Protocol,
        req: &Request,
        http_path: &str,
    ) -> Result<Self, DiagnoseError> {
        let (req, get) = match proto {
            Protocol::Memcached => match req {
                Request::Version => (b"version\r\n".to_vec(), false),
                Request::Get(k) => (format!("get {k}\r\n").into_bytes(), true),
            },
            Protocol::Redis => (b"*1\r\n$4\r\nPING\r\n".to_vec(), false),
            Protocol::Http => (http_request(http_path), false),
            Protocol::Greeting | Protocol::Connect => (Vec::new(), false),
        };
        let mut p = Probe {
            addr,
            proto,
            get,
            stream: None,
            timeout_cut: false,
            req,
            acc: Vec::with_capacity(1 << 16),
            buf: vec![0; 1 << 16],
            lat: Vec::with_capacity(4096),
        };
        // One request to check that it answers, and to warm the path.
        p.one()?;
        Ok(p)
    }

    fn err(&self, source: std::io::Error) -> DiagnoseError {
        DiagnoseError::Probe {
            addr: self.addr.to_string(),
            proto: self.proto.name(),
            source,
        }
    }

    fn open(&self) -> Result<TcpStream, DiagnoseError> {
        let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))
            .map_err(|e| self.err(e))?;
        s.set_nodelay(true).map_err(|e| self.err(e))?;
        s.set_read_timeout(Some(READ_TIMEOUT))
            .map_err(|e| self.err(e))?;
        s.set_write_timeout(Some(READ_TIMEOUT))
            .map_err(|e| self.err(e))?;
        Ok(s)
    }

    /// One request; its latency in us.
    fn one(&mut self) -> Result<f64, DiagnoseError> {
        match self.proto {
            Protocol::Connect => {
                let t0 = Instant::now();
                let s = self.open()?;
                let l = t0.elapsed().as_secs_f64() * 1e6;
                drop(s);
                return Ok(l);
            }
            Protocol::Greeting => {
                let t0 = Instant::now();
                let mut s = self.open()?;
                let n = s.read(&mut self.buf).map_err(|e| self.err(e))?;
                if n == 0 {
                    return Err(self.err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "closed without a greeting",
                    )));
                }
                return Ok(t0.elapsed().as_secs_f64() * 1e6);
            }
            _ => {}
        }
        // A server that closed a kept-alive connection gets one fresh connection.
        for attempt in 0..2 {
            let fresh = self.stream.is_none();
            if fresh {
                self.stream = Some(self.open()?);
                self.timeout_cut = false;
            }
            match self.exchange() {
                Ok(l) => return Ok(l),
                // A malformed reply would be malformed again: no second connection for it.
                Err(e) if !fresh && attempt == 0 && e.kind() != std::io::ErrorKind::InvalidData => {
                    log::debug!("probe connection to {} lost ({e}); reconnecting", self.addr);
                    self.stream = None;
                }
                Err(e) => {
                    self.stream = None;
                    return Err(self.err(e));
                }
            }
        }
        unreachable!("the second attempt returns")
    }

    /// One request and its whole reply, within [`REQUEST_DEADLINE`] and [`MAX_REPLY`].
    fn exchange(&mut self) -> std::io::Result<f64> {
        let Some(s) = self.stream.as_mut() else {
            return Err(std::io::ErrorKind::NotConnected.into());
        };
        if self.timeout_cut {
            s.set_read_timeout(Some(READ_TIMEOUT))?;
            self.timeout_cut = false;
        }
        self.acc.clear();
        let t0 = Instant::now();
        let deadline = t0 + REQUEST_DEADLINE;
        let too_slow = |got: usize| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "no complete reply within {} s ({got} bytes of it so far)",
                    REQUEST_DEADLINE.as_secs_f64()
                ),
            )
        };
        s.write_all(&self.req)?;
        loop {
            let n = match s.read(&mut self.buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(too_slow(self.acc.len()));
                }
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed by the service",
                ));
            }
            self.acc.extend_from_slice(&self.buf[..n]);
            match reply_len(self.proto, self.get, &self.acc) {
                Frame::Complete(len) => {
                    let l = t0.elapsed().as_secs_f64() * 1e6;
                    if len < self.acc.len() {
                        // More than one reply: the stream is out of step; start a fresh one.
                        self.stream = None;
                    }
                    return Ok(l);
                }
                Frame::Malformed(why) => {
                    return Err(invalid(format!("the service's reply is malformed: {why}")));
                }
                Frame::Incomplete => {}
            }
            if self.acc.len() > MAX_REPLY {
                return Err(invalid(format!(
                    "reply larger than {} MiB: not the protocol the probe speaks",
                    MAX_REPLY >> 20
                )));
            }
            // The next read waits no longer than the request has left.
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(too_slow(self.acc.len()));
            }
            s.set_read_timeout(Some(left))?;
            self.timeout_cut = true;
        }
    }
}

impl Observer for Probe {
    fn window(&mut self, dur: Duration) -> Result<Window, DiagnoseError> {
        self.lat.clear();
        let until = Instant::now() + dur;
        while Instant::now() < until {
            let l = self.one()?;
            self.lat.push(l);
        }
        let mut lat = std::mem::take(&mut self.lat);
        let w = Window::from_samples(&mut lat);
        self.lat = lat;
        Ok(w)
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn window_stats() {
        let w = Window::from_samples(&mut [3.0, 1.0, 2.0, 10.0]);
        assert_eq!(w.n, 4);
        assert!((w.mean_us - 4.0).abs() < 1e-9);
        assert!((w.p50_us - 3.0).abs() < 1e-9);
        assert_eq!(Window::from_samples(&mut []).n, 0);
    }

    #[test]
    fn detection_by_name_then_port() {
        assert_eq!(detect("memcached", 20001), Some(Protocol::Memcached));
        assert_eq!(detect("redis-server", 20002), Some(Protocol::Redis));
        assert_eq!(detect("nginx", 1234), Some(Protocol::Http));
        assert_eq!(detect("java", 6379), Some(Protocol::Redis));
        assert_eq!(detect("java", 11211), Some(Protocol::Memcached));
        assert_eq!(detect("python3", 8080), Some(Protocol::Http));
        assert_eq!(detect("seer-testbed-sv", 20001), None);
        assert_eq!(Protocol::parse("redis"), Some(Protocol::Redis));
        assert_eq!(Protocol::parse("gopher"), None);
    }

    /// A server thread answering `reply` to every read (or greeting every connection with it).
    /// It accepts for as long as the test runs: a 5 ms greeting window opens more connections
    /// than any small cap (with a cap of 64, 3 runs in 8 failed here with ECONNREFUSED).
    fn serve(reply: &'static [u8], greet: bool) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let a = l.local_addr().expect("addr");
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                std::thread::spawn(move || {
                    if greet {
                        let _ = s.write_all(reply);
                        return;
                    }
                    let mut b = [0u8; 4096];
                    while let Ok(n) = s.read(&mut b) {
                        if n == 0 || s.write_all(reply).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        a
    }

    #[test]
    fn probes_speak_to_real_sockets_and_sniffing_finds_the_protocol() {
        let http = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false);
        assert_eq!(sniff(http).expect("sniff"), Protocol::Http);
        let mut p = Probe::connect(http, Protocol::Http, &Request::Version, "/").expect("http");
        assert!(p.window(Duration::from_millis(5)).expect("window").n > 0);

        let redis = serve(b"+PONG\r\n", false);
        let mut p = Probe::connect(redis, Protocol::Redis, &Request::Version, "/").expect("redis");
        assert!(p.window(Duration::from_millis(5)).expect("window").n > 0);
        // Redis answers a GET line with an error, not HTTP: the fallback is a bare connect.
        let err = serve(b"-ERR unknown command\r\n", false);
        assert_eq!(sniff(err).expect("sniff"), Protocol::Connect);

        let ssh = serve(b"SSH-2.0-test\r\n", true);
        assert_eq!(sniff(ssh).expect("sniff"), Protocol::Greeting);
        let mut p =
            Probe::connect(ssh, Protocol::Greeting, &Request::Version, "/").expect("greeting");
        assert!(p.window(Duration::from_millis(5)).expect("window").n > 0);
    }

    /// Runs `f` in a thread; panics when it has not returned within `t`.
    fn within<T: Send + 'static>(t: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(t)
            .unwrap_or_else(|e| panic!("no answer within {t:?} ({e})"))
    }

    /// A server that answers every request with `reply`, then holds the connection open.
    fn serve_and_hold(reply: Vec<u8>) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let a = l.local_addr().expect("addr");
        std::thread::spawn(move || {
            for s in l.incoming().take(8) {
                let Ok(mut s) = s else { return };
                let reply = reply.clone();
                std::thread::spawn(move || {
                    let mut b = [0u8; 4096];
                    let _ = s.read(&mut b);
                    let _ = s.write_all(&reply);
                    // Until the client gives up.
                    let _ = s.read(&mut b);
                });
            }
        });
        a
    }

    /// A server that answers every request with an endless HTTP reply, one byte per `every`.
    fn serve_trickle(every: Duration) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let a = l.local_addr().expect("addr");
        std::thread::spawn(move || {
            for s in l.incoming().take(8) {
                let Ok(mut s) = s else { return };
                std::thread::spawn(move || {
                    let mut b = [0u8; 4096];
                    let _ = s.read(&mut b);
                    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n";
                    for &c in head.iter().chain(std::iter::repeat(&b'x')) {
                        if s.write_all(&[c]).is_err() {
                            return;
                        }
                        std::thread::sleep(every);
                    }
                });
            }
        });
        a
    }

    fn probe_error(a: SocketAddr, proto: Protocol) -> (String, Duration) {
        let t0 = Instant::now();
        let r = within(Duration::from_secs(20), move || {
            Probe::connect(a, proto, &Request::Version, "/")
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        let e = r.expect_err("the probe must fail");
        (e, t0.elapsed())
    }

    #[test]
    fn a_huge_chunk_size_fails_the_probe_quickly_and_says_why() {
        let a = serve_and_hold(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffec\r\n".to_vec(),
        );
        let (e, took) = probe_error(a, Protocol::Http);
        assert!(took < Duration::from_secs(5), "took {took:?}");
        assert!(
            e.contains("malformed: chunk size ffffffffffffffec exceeds the 16 MiB limit"),
            "{e}"
        );
    }

    #[test]
    fn deeply_nested_resp_fails_the_probe_quickly_and_says_why() {
        let a = serve_and_hold(b"*1\r\n".repeat(1_000_000));
        let (e, took) = probe_error(a, Protocol::Redis);
        assert!(took < Duration::from_secs(5), "took {took:?}");
        assert!(e.contains("malformed: RESP nested deeper than 64"), "{e}");
    }

    #[test]
    fn a_trickling_server_hits_the_request_deadline() {
        let a = serve_trickle(Duration::from_millis(300));
        let (e, took) = probe_error(a, Protocol::Http);
        assert!(took < Duration::from_secs(5), "took {took:?}");
        assert!(e.contains("no complete reply within 2 s"), "{e}");
    }

    #[test]
    fn sniffing_a_trickling_server_is_bounded_too() {
        // Five bytes at 1.5 s apart: six seconds of reads of under 2 s each.
        let a = serve_trickle(Duration::from_millis(1500));
        let t0 = Instant::now();
        let p = within(Duration::from_secs(20), move || sniff(a).expect("sniff"));
        assert!(
            t0.elapsed() < Duration::from_secs(4),
            "took {:?}",
            t0.elapsed()
        );
        assert_eq!(p, Protocol::Connect);
    }
}
