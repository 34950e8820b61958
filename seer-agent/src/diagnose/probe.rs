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

use super::DiagnoseError;

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
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(err)?;
    if s.write_all(&http_request("/")).is_err() {
        return Ok(Protocol::Connect);
    }
    let mut got = Vec::new();
    while got.len() < 5 {
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

/// Length of the complete memcached reply at the start of `b`: the text protocol's replies to
/// `version` are one line; to `get`, values then `END`, or an error line.
pub fn memcached_reply_len(b: &[u8], get: bool) -> Option<usize> {
    let line_end = |from: usize| {
        b[from..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|p| from + p + 2)
    };
    let first = line_end(0)?;
    let l = &b[..first];
    if !get || l.starts_with(b"END") || l.starts_with(b"ERROR") || l.ends_with(b"ERROR\r\n") {
        return Some(first);
    }
    if l.starts_with(b"SERVER_ERROR") || l.starts_with(b"CLIENT_ERROR") {
        return Some(first);
    }
    // VALUE key flags bytes\r\n<data>\r\n ... END\r\n
    let mut at = 0;
    loop {
        let end = line_end(at)?;
        let line = &b[at..end];
        if line == b"END\r\n" {
            return Some(end);
        }
        let bytes: usize = std::str::from_utf8(line)
            .ok()?
            .split_whitespace()
            .nth(3)?
            .parse()
            .ok()?;
        at = end + bytes + 2;
        if at > b.len() {
            return None;
        }
    }
}

/// Length of the one complete RESP value at the start of `b` (None: incomplete).
pub fn resp_len(b: &[u8]) -> Option<usize> {
    let line = b.windows(2).position(|w| w == b"\r\n")? + 2;
    let num = || -> Option<i64> { std::str::from_utf8(&b[1..line - 2]).ok()?.parse().ok() };
    match b.first()? {
        b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(' => Some(line),
        b'$' | b'=' | b'!' => {
            let n = num()?;
            if n < 0 {
                return Some(line);
            }
            let end = line + n as usize + 2;
            (b.len() >= end).then_some(end)
        }
        b'*' | b'~' | b'>' | b'%' => {
            let n = num()?;
            let items = if b[0] == b'%' { n * 2 } else { n };
            let mut at = line;
            for _ in 0..items.max(0) {
                at += resp_len(&b[at..])?;
            }
            Some(at)
        }
        // Not RESP (an inline error from something else): the line is the reply.
        _ => Some(line),
    }
}

/// Length of the complete HTTP/1.x response at the start of `b` (None: incomplete), for a
/// request that was not HEAD: head, then `Content-Length` bytes, or chunks up to the last one;
/// a response with neither ends at its head (1xx/204/304, or a server that would close).
pub fn http_reply_len(b: &[u8]) -> Option<usize> {
    let head = b.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let text = std::str::from_utf8(&b[..head]).ok()?;
    let mut len = None;
    let mut chunked = false;
    for h in text.split("\r\n").skip(1) {
        if let Some((k, v)) = h.split_once(':') {
            let (k, v) = (k.trim(), v.trim());
            if k.eq_ignore_ascii_case("content-length") {
                len = v.parse::<usize>().ok();
            } else if k.eq_ignore_ascii_case("transfer-encoding")
                && v.to_ascii_lowercase().contains("chunked")
            {
                chunked = true;
            }
        }
    }
    if chunked {
        let mut at = head;
        loop {
            let e = b[at..].windows(2).position(|w| w == b"\r\n")? + at;
            let size = std::str::from_utf8(&b[at..e]).ok()?;
            let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
            if size == 0 {
                // Optional trailers, then an empty line.
                let p = e + 2;
                if b.get(p..p + 2) == Some(b"\r\n".as_slice()) {
                    return Some(p + 2);
                }
                return Some(b[p..].windows(4).position(|w| w == b"\r\n\r\n")? + p + 4);
            }
            at = e + 2 + size + 2;
            if at > b.len() {
                return None;
            }
        }
    }
    let end = head + len.unwrap_or(0);
    (b.len() >= end).then_some(end)
}

/// Length of the complete reply to one probe request at the start of `acc`.
fn reply_len(proto: Protocol, get: bool, acc: &[u8]) -> Option<usize> {
    match proto {
        Protocol::Memcached => memcached_reply_len(acc, get),
        Protocol::Redis => resp_len(acc),
        Protocol::Http => http_reply_len(acc),
        Protocol::Greeting => (!acc.is_empty()).then_some(acc.len()),
        Protocol::Connect => Some(0),
    }
}

/// A closed-loop client on one connection (or a new connection per sample, for the
/// connection-level fallbacks).
pub struct Probe {
    addr: SocketAddr,
    proto: Protocol,
    get: bool,
    stream: Option<TcpStream>,
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
        s.set_read_timeout(Some(Duration::from_secs(2)))
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
            }
            match self.exchange() {
                Ok(l) => return Ok(l),
                Err(e) if !fresh && attempt == 0 => {
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

    fn exchange(&mut self) -> std::io::Result<f64> {
        let Some(s) = self.stream.as_mut() else {
            return Err(std::io::ErrorKind::NotConnected.into());
        };
        self.acc.clear();
        let t0 = Instant::now();
        s.write_all(&self.req)?;
        loop {
            let n = s.read(&mut self.buf)?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed by the service",
                ));
            }
            self.acc.extend_from_slice(&self.buf[..n]);
            if let Some(len) = reply_len(self.proto, self.get, &self.acc) {
                let l = t0.elapsed().as_secs_f64() * 1e6;
                if len < self.acc.len() {
                    // More than one reply: the stream is out of step; start a fresh one.
                    self.stream = None;
                }
                return Ok(l);
            }
            if self.acc.len() > 64 << 20 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "reply over 64 MiB: not the protocol the probe speaks",
                ));
            }
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
    fn memcached_framing() {
        assert_eq!(memcached_reply_len(b"VERSION 1.6.18\r\n", false), Some(16));
        assert_eq!(memcached_reply_len(b"VERSION 1.6", false), None);
        assert_eq!(memcached_reply_len(b"END\r\n", true), Some(5));
        let hit = b"VALUE k 0 5\r\nEND\r\n\r\nEND\r\n";
        // The value itself may contain "END\r\n": its length, not its text, decides.
        assert_eq!(memcached_reply_len(hit, true), Some(hit.len()));
        assert_eq!(memcached_reply_len(&hit[..hit.len() - 1], true), None);
        assert_eq!(memcached_reply_len(b"VALUE k 0 5\r\nab", true), None);
        assert_eq!(memcached_reply_len(b"SERVER_ERROR oom\r\n", true), Some(18));
    }

    #[test]
    fn resp_framing() {
        assert_eq!(resp_len(b"+PONG\r\n"), Some(7));
        assert_eq!(resp_len(b"+PON"), None);
        assert_eq!(resp_len(b"-ERR unknown\r\n"), Some(14));
        assert_eq!(resp_len(b"$5\r\nhello\r\n"), Some(11));
        assert_eq!(resp_len(b"$5\r\nhel"), None);
        assert_eq!(resp_len(b"$-1\r\n"), Some(5));
        // A bulk string containing CRLF is read by length.
        assert_eq!(resp_len(b"$4\r\na\r\nb\r\n"), Some(10));
        let arr = b"*2\r\n$1\r\na\r\n:42\r\n";
        assert_eq!(resp_len(arr), Some(arr.len()));
        assert_eq!(resp_len(&arr[..arr.len() - 2]), None);
    }

    #[test]
    fn http_framing() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(http_reply_len(r), Some(r.len()));
        assert_eq!(http_reply_len(&r[..r.len() - 1]), None);
        let r = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(http_reply_len(r), Some(r.len()));
        let r = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(http_reply_len(r), Some(r.len()));
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        assert_eq!(http_reply_len(r), Some(r.len()));
        assert_eq!(http_reply_len(&r[..r.len() - 2]), None);
        let r =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n";
        assert_eq!(http_reply_len(r), Some(r.len()));
        assert_eq!(http_reply_len(b"HTTP/1.1 200 OK\r\nContent-Le"), None);
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
}
