//! Watching the culprit: its request latency per short window, measured by asking it.
//!
//! Why active probing: a diagnosis needs many latency samples inside each ~10 ms burst. The
//! agent's passive channels (the eBPF latency histogram) see only the traffic that happens to
//! arrive, which at a few hundred requests per second is a handful of requests per burst, and
//! would need the probes loaded. A closed-loop client on a CPU the culprit does not use gets
//! tens to hundreds of samples per window and works without eBPF. The price: it must speak
//! the service's protocol. The memcached text protocol is implemented (`version`, or `get KEY`
//! whose value size sets how much memory each request touches).
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

/// What the probe asks.
#[derive(Clone, Debug)]
pub enum Request {
    Version,
    Get(String),
}

/// A closed-loop memcached client on one connection.
pub struct MemcacheProbe {
    addr: SocketAddr,
    stream: TcpStream,
    req: Vec<u8>,
    end: &'static [u8],
    buf: Vec<u8>,
    lat: Vec<f64>,
}

impl MemcacheProbe {
    pub fn connect(addr: SocketAddr, req: &Request) -> Result<Self, DiagnoseError> {
        let err = |source| DiagnoseError::Probe {
            addr: addr.to_string(),
            source,
        };
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(err)?;
        stream.set_nodelay(true).map_err(err)?;
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(err)?;
        let (req, end): (Vec<u8>, &'static [u8]) = match req {
            Request::Version => (b"version\r\n".to_vec(), b"\r\n"),
            Request::Get(k) => (format!("get {k}\r\n").into_bytes(), b"END\r\n"),
        };
        let mut p = MemcacheProbe {
            addr,
            stream,
            req,
            end,
            buf: vec![0; 1 << 16],
            lat: Vec::with_capacity(4096),
        };
        // One request to check that it answers, and to warm the path.
        p.one()?;
        Ok(p)
    }

    /// One request; its latency in us.
    fn one(&mut self) -> Result<f64, DiagnoseError> {
        let err = |source| DiagnoseError::Probe {
            addr: self.addr.to_string(),
            source,
        };
        let t0 = Instant::now();
        self.stream.write_all(&self.req).map_err(err)?;
        // The reply is complete when it ends with the terminator; keep its tail across reads.
        let mut tail: Vec<u8> = Vec::with_capacity(16);
        loop {
            let n = self.stream.read(&mut self.buf).map_err(err)?;
            if n == 0 {
                return Err(err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed by the service",
                )));
            }
            tail.extend_from_slice(&self.buf[n.saturating_sub(8)..n]);
            if tail.len() > 8 {
                tail.drain(..tail.len() - 8);
            }
            if tail.ends_with(self.end) {
                break;
            }
        }
        Ok(t0.elapsed().as_secs_f64() * 1e6)
    }
}

impl Observer for MemcacheProbe {
    fn window(&mut self, dur: Duration) -> Result<Window, DiagnoseError> {
        self.lat.clear();
        let until = Instant::now() + dur;
        while Instant::now() < until {
            let l = self.one()?;
            self.lat.push(l);
        }
        Ok(Window::from_samples(&mut self.lat))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_stats() {
        let w = Window::from_samples(&mut [3.0, 1.0, 2.0, 10.0]);
        assert_eq!(w.n, 4);
        assert!((w.mean_us - 4.0).abs() < 1e-9);
        assert!((w.p50_us - 3.0).abs() < 1e-9);
        assert_eq!(Window::from_samples(&mut []).n, 0);
    }
}
