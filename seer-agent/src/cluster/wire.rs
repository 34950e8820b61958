//! The one message an agent publishes per tick on `seer.samples.<host>`, and its decoder.
//!
//! Binary, little-endian, versioned: `b"SR"`, version (u8), then the tick (host, tick time,
//! tick length, sequence), the host's addresses, its services (stable id, name, listening
//! ports, the channel vector in `CHANNEL_NAMES` order), its local edges (caller id -> callee
//! id) and its remote edges (caller id -> address:port on another host). A service listens on
//! each of its ports at each of the host's addresses: that is how the central resolves another
//! host's remote edge to it.
//!
//! Every byte read from NATS is hostile: the decoder checks sizes before it allocates, refuses
//! what is out of bounds with a [`WireError`] that says what, and never panics (fuzzed by
//! `fuzz/fuzz_targets/cluster_wire.rs`). A message with another version is refused by version
//! (a newer agent than this central), not misread.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use seer_common::sample::CHANNELS;

/// The schema version this build writes and reads.
pub const VERSION: u8 = 1;
const MAGIC: &[u8; 2] = b"SR";
/// The largest message taken (a host of 4096 services is ~300 KiB).
pub const MAX_MESSAGE: usize = 1 << 20;
pub const MAX_SERVICES: usize = 4096;
pub const MAX_ADDRS: usize = 256;
pub const MAX_PORTS: usize = 256;
pub const MAX_EDGES: usize = 65_536;
/// Names are cut to this many bytes when written (at a character boundary).
pub const MAX_NAME: usize = 255;
/// Host names: 1 to 64 of `[A-Za-z0-9_-]` (they are one NATS subject token).
pub const MAX_HOST: usize = 64;

/// One service of one host at one tick.
#[derive(Clone, Debug, PartialEq)]
pub struct WireService {
    /// The agent's stable id for the service (its trace store keeps it across restarts).
    pub id: u32,
    pub name: String,
    /// Listening TCP ports.
    pub ports: Vec<u16>,
    /// The channels, `seer_common::sample::CHANNEL_NAMES` order.
    pub values: [f32; CHANNELS],
}

/// One host's tick.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTick {
    pub host: String,
    /// When the agent sampled, ms since the Unix epoch.
    pub ts_ms: u64,
    pub tick_ms: u32,
    /// The agent's message counter (from 0 at its start): gaps are messages lost.
    pub seq: u64,
    /// The host's own addresses (loopback left out).
    pub addrs: Vec<IpAddr>,
    pub services: Vec<WireService>,
    /// (caller id, callee id), both services of this host.
    pub edges: Vec<(u32, u32)>,
    /// (caller id, callee address:port on another host).
    pub remote_edges: Vec<(u32, SocketAddr)>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("{0} bytes, larger than the {MAX_MESSAGE}-byte limit")]
    TooLarge(usize),
    #[error("not a seer sample message (no \"SR\" magic)")]
    Magic,
    #[error(
        "schema version {0}, this build reads version {VERSION} (a newer agent? upgrade the central)"
    )]
    Version(u8),
    #[error("cut short in {0}")]
    Truncated(&'static str),
    #[error("{what}: {n}, at most {max}")]
    TooMany {
        what: &'static str,
        n: usize,
        max: usize,
    },
    #[error("{0} is not UTF-8")]
    Utf8(&'static str),
    #[error("{0}")]
    Invalid(String),
    #[error("{0} bytes after the message")]
    Trailing(usize),
}

/// The leader's request to a host's agent on `seer.respond.<host>`: the central predictor
/// alarmed on one of its services; the agent answers as to an alarm of its own model
/// (diagnosis, then its policy). JSON (rare, small); read with a size limit, refused whole
/// when any field is missing or of another type.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RespondRequest {
    /// The schema version (VERSION).
    pub v: u8,
    /// The tick the alarm fired on.
    pub ts_ms: u64,
    /// The service, by the agent's own id (as its message gave it), and its name.
    pub service_id: u32,
    pub service: String,
    /// The probability that fired the alarm, and the model's horizon.
    pub p: f32,
    pub horizon_ms: u64,
    pub model: String,
    /// Who asks: the leading central and its term (a request from an older term than one
    /// already seen comes from a deposed leader and is ignored).
    pub leader: String,
    pub term: u64,
}

/// The largest respond request read.
pub const MAX_REQUEST: usize = 16 * 1024;

impl RespondRequest {
    pub fn decode(b: &[u8]) -> Result<RespondRequest, WireError> {
        if b.len() > MAX_REQUEST {
            return Err(WireError::TooLarge(b.len()));
        }
        let r: RespondRequest = serde_json::from_slice(b)
            .map_err(|e| WireError::Invalid(format!("respond request: {e}")))?;
        if r.v != VERSION {
            return Err(WireError::Version(r.v));
        }
        Ok(r)
    }
}

/// The subject a host's agent takes requests on.
pub fn respond_subject(host: &str) -> String {
    format!("{}.{host}", super::RESPOND_PREFIX)
}

/// The subject a host's agent answers on (JSON: `{"v", "host", "answer"}`, the answer being
/// the diagnosis and decision for the service the central asked about).
pub fn events_subject(host: &str) -> String {
    format!("{}.{host}", super::EVENTS_PREFIX)
}

/// Whether `h` is a valid host name (one NATS subject token).
pub fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= MAX_HOST
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The subject a host publishes on.
pub fn subject(host: &str) -> String {
    format!("{}.{host}", super::SAMPLES_PREFIX)
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let mut end = s.len().min(MAX_NAME);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.push(end as u8);
    out.extend_from_slice(&s.as_bytes()[..end]);
}

fn put_ip(out: &mut Vec<u8>, ip: &IpAddr) {
    match ip {
        IpAddr::V4(a) => {
            out.push(4);
            out.extend_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            out.push(6);
            out.extend_from_slice(&a.octets());
        }
    }
}

/// Lengths past the limits are cut to them (an agent never sends what a central refuses).
fn put_len(out: &mut Vec<u8>, n: usize, max: usize) -> usize {
    let n = n.min(max);
    out.extend_from_slice(&(n as u32).to_le_bytes());
    n
}

impl HostTick {
    /// The message's bytes, written into `out` (cleared first; reuse it between ticks).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        put_str(out, &self.host);
        out.extend_from_slice(&self.ts_ms.to_le_bytes());
        out.extend_from_slice(&self.tick_ms.to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
        let n = put_len(out, self.addrs.len(), MAX_ADDRS);
        for a in &self.addrs[..n] {
            put_ip(out, a);
        }
        let n = put_len(out, self.services.len(), MAX_SERVICES);
        out.push(CHANNELS as u8);
        for s in &self.services[..n] {
            out.extend_from_slice(&s.id.to_le_bytes());
            put_str(out, &s.name);
            let np = put_len(out, s.ports.len(), MAX_PORTS);
            for p in &s.ports[..np] {
                out.extend_from_slice(&p.to_le_bytes());
            }
            for v in &s.values {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        let n = put_len(out, self.edges.len(), MAX_EDGES);
        for (a, b) in &self.edges[..n] {
            out.extend_from_slice(&a.to_le_bytes());
            out.extend_from_slice(&b.to_le_bytes());
        }
        let n = put_len(out, self.remote_edges.len(), MAX_EDGES);
        for (a, to) in &self.remote_edges[..n] {
            out.extend_from_slice(&a.to_le_bytes());
            put_ip(out, &to.ip());
            out.extend_from_slice(&to.port().to_le_bytes());
        }
    }

    /// Decodes one message; anything malformed is an error saying what, never a panic.
    pub fn decode(b: &[u8]) -> Result<HostTick, WireError> {
        if b.len() > MAX_MESSAGE {
            return Err(WireError::TooLarge(b.len()));
        }
        let mut r = Reader { b };
        if r.take(2, "the magic").ok() != Some(MAGIC.as_slice()) {
            return Err(WireError::Magic);
        }
        let v = r.u8("the version")?;
        if v != VERSION {
            return Err(WireError::Version(v));
        }
        let host = r.str("the host")?;
        if !valid_host(&host) {
            return Err(WireError::Invalid(format!(
                "host {host:?}: expected 1 to {MAX_HOST} of A-Z a-z 0-9 _ -"
            )));
        }
        let ts_ms = r.u64("the tick time")?;
        let tick_ms = r.u32("the tick length")?;
        if tick_ms == 0 {
            return Err(WireError::Invalid("tick length 0".into()));
        }
        let seq = r.u64("the sequence")?;
        let n = r.len("addresses", MAX_ADDRS, 5)?;
        let mut addrs = Vec::with_capacity(n);
        for _ in 0..n {
            addrs.push(r.ip("an address")?);
        }
        let n = r.len("services", MAX_SERVICES, 4 + 1 + 4 + 4 * CHANNELS)?;
        let c = r.u8("the channel count")?;
        if usize::from(c) != CHANNELS {
            return Err(WireError::Invalid(format!(
                "{c} channels per service, this build knows {CHANNELS} (same version, other build?)"
            )));
        }
        let mut services: Vec<WireService> = Vec::with_capacity(n);
        for _ in 0..n {
            let id = r.u32("a service id")?;
            let name = r.str("a service name")?;
            let np = r.len("ports", MAX_PORTS, 2)?;
            let mut ports = Vec::with_capacity(np);
            for _ in 0..np {
                ports.push(r.u16("a port")?);
            }
            let mut values = [0f32; CHANNELS];
            for v in &mut values {
                *v = f32::from_le_bytes(r.array("a channel value")?);
            }
            if services.iter().any(|s| s.id == id) {
                return Err(WireError::Invalid(format!("service id {id} twice")));
            }
            services.push(WireService {
                id,
                name,
                ports,
                values,
            });
        }
        let known = |id: u32| services.iter().any(|s| s.id == id);
        let n = r.len("edges", MAX_EDGES, 8)?;
        let mut edges = Vec::with_capacity(n);
        for _ in 0..n {
            let (a, b) = (r.u32("an edge")?, r.u32("an edge")?);
            if !known(a) || !known(b) {
                return Err(WireError::Invalid(format!(
                    "edge {a} -> {b} names a service not in the message"
                )));
            }
            edges.push((a, b));
        }
        let n = r.len("remote edges", MAX_EDGES, 4 + 5 + 2)?;
        let mut remote_edges = Vec::with_capacity(n);
        for _ in 0..n {
            let a = r.u32("a remote edge")?;
            let ip = r.ip("a remote edge")?;
            let port = r.u16("a remote edge")?;
            if !known(a) {
                return Err(WireError::Invalid(format!(
                    "remote edge from {a}, a service not in the message"
                )));
            }
            remote_edges.push((a, SocketAddr::new(ip, port)));
        }
        if !r.b.is_empty() {
            return Err(WireError::Trailing(r.b.len()));
        }
        Ok(HostTick {
            host,
            ts_ms,
            tick_ms,
            seq,
            addrs,
            services,
            edges,
            remote_edges,
        })
    }
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        if self.b.len() < n {
            return Err(WireError::Truncated(what));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], WireError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.array::<1>(what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    /// A count, checked against its limit and against the bytes left (each item at least
    /// `min_item` bytes) before anything is allocated for it.
    fn len(&mut self, what: &'static str, max: usize, min_item: usize) -> Result<usize, WireError> {
        let n = self.u32(what)? as usize;
        if n > max {
            return Err(WireError::TooMany { what, n, max });
        }
        if n.saturating_mul(min_item) > self.b.len() {
            return Err(WireError::Truncated(what));
        }
        Ok(n)
    }
    fn str(&mut self, what: &'static str) -> Result<String, WireError> {
        let n = usize::from(self.u8(what)?);
        let b = self.take(n, what)?;
        std::str::from_utf8(b)
            .map(str::to_string)
            .map_err(|_| WireError::Utf8(what))
    }
    fn ip(&mut self, what: &'static str) -> Result<IpAddr, WireError> {
        match self.u8(what)? {
            4 => Ok(IpAddr::V4(Ipv4Addr::from(self.array::<4>(what)?))),
            6 => Ok(IpAddr::V6(Ipv6Addr::from(self.array::<16>(what)?))),
            f => Err(WireError::Invalid(format!(
                "{what}: address family {f}, expected 4 or 6"
            ))),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample_tick() -> HostTick {
        let mut v = [0f32; CHANNELS];
        for (i, x) in v.iter_mut().enumerate() {
            *x = i as f32 + 0.5;
        }
        HostTick {
            host: "web-1".into(),
            ts_ms: 1_765_000_000_100,
            tick_ms: 100,
            seq: 42,
            addrs: vec![
                "198.51.100.2".parse().unwrap(),
                "2001:db8::2".parse().unwrap(),
            ],
            services: vec![
                WireService {
                    id: 3,
                    name: "nginx".into(),
                    ports: vec![80, 443],
                    values: v,
                },
                WireService {
                    id: 7,
                    name: "mémcached".into(),
                    ports: vec![11211],
                    values: [1.0; CHANNELS],
                },
            ],
            edges: vec![(3, 7)],
            remote_edges: vec![(3, "198.51.100.1:7010".parse().unwrap())],
        }
    }

    #[test]
    fn a_tick_round_trips() {
        let t = sample_tick();
        let mut b = Vec::new();
        t.encode(&mut b);
        assert_eq!(HostTick::decode(&b), Ok(t));
        // 2 services of 16 channels: well under a kilobyte.
        assert!(b.len() < 300, "{} bytes", b.len());
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let mut b = Vec::new();
        sample_tick().encode(&mut b);
        for n in 0..b.len() {
            assert!(HostTick::decode(&b[..n]).is_err(), "prefix of {n} bytes");
        }
        let mut long = b.clone();
        long.push(0);
        assert_eq!(HostTick::decode(&long), Err(WireError::Trailing(1)));
    }

    #[test]
    fn hostile_messages_are_refused_with_what_is_wrong() {
        let mut b = Vec::new();
        sample_tick().encode(&mut b);
        // A future schema version.
        let mut v2 = b.clone();
        v2[2] = 2;
        assert_eq!(HostTick::decode(&v2), Err(WireError::Version(2)));
        assert!(WireError::Version(2).to_string().contains("upgrade"));
        // Not ours.
        assert_eq!(HostTick::decode(b"{\"json\":1}"), Err(WireError::Magic));
        assert_eq!(
            HostTick::decode(&vec![0u8; MAX_MESSAGE + 1]),
            Err(WireError::TooLarge(MAX_MESSAGE + 1))
        );
        // A host that is not one subject token.
        let mut t = sample_tick();
        t.host = "a.b".into();
        t.encode(&mut b);
        assert!(matches!(HostTick::decode(&b), Err(WireError::Invalid(m)) if m.contains("a.b")));
        // A count that claims more than the bytes hold: refused before allocating.
        let mut t = sample_tick();
        t.addrs.clear();
        t.encode(&mut b);
        let at = 3 + 1 + 5 + 8 + 4 + 8; // magic, version, host, ts, tick, seq
        b[at..at + 4].copy_from_slice(&200u32.to_le_bytes());
        assert_eq!(HostTick::decode(&b), Err(WireError::Truncated("addresses")));
        b[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            HostTick::decode(&b),
            Err(WireError::TooMany {
                what: "addresses",
                ..
            })
        ));
        // An edge to a service the message does not list.
        let mut t = sample_tick();
        t.edges.push((3, 99));
        t.encode(&mut b);
        assert!(matches!(HostTick::decode(&b), Err(WireError::Invalid(m)) if m.contains("99")));
    }

    #[test]
    fn respond_requests_round_trip_and_bad_ones_are_refused() {
        let r = RespondRequest {
            v: VERSION,
            ts_ms: 5,
            service_id: 7,
            service: "memcached".into(),
            p: 0.9,
            horizon_ms: 100,
            model: "m".into(),
            leader: "c1".into(),
            term: 3,
        };
        let b = serde_json::to_vec(&r).unwrap();
        assert_eq!(RespondRequest::decode(&b), Ok(r.clone()));
        let mut future = r.clone();
        future.v = 2;
        assert_eq!(
            RespondRequest::decode(&serde_json::to_vec(&future).unwrap()),
            Err(WireError::Version(2))
        );
        assert!(matches!(
            RespondRequest::decode(b"{\"v\":1}"),
            Err(WireError::Invalid(m)) if m.contains("missing field")
        ));
        assert_eq!(
            RespondRequest::decode(&vec![b' '; MAX_REQUEST + 1]),
            Err(WireError::TooLarge(MAX_REQUEST + 1))
        );
    }

    #[test]
    fn long_names_are_cut_at_a_character_boundary() {
        let mut t = sample_tick();
        t.services[0].name = "é".repeat(200);
        let mut b = Vec::new();
        t.encode(&mut b);
        let d = HostTick::decode(&b).unwrap();
        assert_eq!(d.services[0].name, "é".repeat(127));
    }
}
