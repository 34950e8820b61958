//! An open-loop HTTP/1.1 load generator: requests leave on a fixed schedule whether or not
//! earlier ones were answered, and each latency is measured from the request's scheduled time,
//! so a stalled server shows up in the tail instead of silently slowing the load (no
//! coordinated omission).
use std::{
    io::{Read, Write},
    net::TcpStream,
    thread,
    time::{Duration, Instant},
};

pub struct OpenLoopResult {
    pub sent: u64,
    pub errors: u64,
    /// Latencies in microseconds, sorted.
    pub latencies_us: Vec<u64>,
    pub achieved_rps: f64,
}

impl OpenLoopResult {
    pub fn quantile_us(&self, q: f64) -> u64 {
        if self.latencies_us.is_empty() {
            return 0;
        }
        let i = ((self.latencies_us.len() as f64 * q).ceil() as usize)
            .clamp(1, self.latencies_us.len())
            - 1;
        self.latencies_us[i]
    }
}

/// Reads one HTTP/1.1 response with a Content-Length body. Returns false on error/close.
fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    buf.clear();
    let mut tmp = [0u8; 65536];
    let mut need: Option<usize> = None;
    loop {
        if let Some(n) = need
            && buf.len() >= n
        {
            return true;
        }
        let r = match s.read(&mut tmp) {
            Ok(0) | Err(_) => return false,
            Ok(r) => r,
        };
        buf.extend_from_slice(&tmp[..r]);
        if need.is_none()
            && let Some(h) = buf.windows(4).position(|w| w == b"\r\n\r\n")
        {
            let head = String::from_utf8_lossy(&buf[..h]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            need = Some(h + 4 + len);
        }
    }
}

/// Sends `rate` requests/s for `dur` to `addr` (host:port) over `conns` keep-alive connections,
/// each connection carrying an equal share of the schedule.
pub fn run(addr: &str, path: &str, rate: f64, dur: Duration, conns: usize) -> OpenLoopResult {
    let start = Instant::now() + Duration::from_millis(50);
    let per = rate / conns as f64;
    let total_per = (per * dur.as_secs_f64()) as u64;
    let handles: Vec<_> = (0..conns)
        .map(|c| {
            let addr = addr.to_string();
            let req = format!("GET {path} HTTP/1.1\r\nHost: seer\r\n\r\n");
            thread::spawn(move || {
                let mut lats = Vec::with_capacity(total_per as usize);
                let mut errors = 0u64;
                let mut s = TcpStream::connect(&addr).ok();
                let mut buf = Vec::with_capacity(1 << 17);
                let offset = Duration::from_secs_f64(c as f64 / (per * conns as f64));
                for k in 0..total_per {
                    let due = start + offset + Duration::from_secs_f64(k as f64 / per);
                    let now = Instant::now();
                    if due > now {
                        thread::sleep(due - now);
                    }
                    let ok = match s.as_mut() {
                        Some(st) => {
                            st.set_nodelay(true).ok();
                            st.write_all(req.as_bytes()).is_ok() && read_response(st, &mut buf)
                        }
                        None => false,
                    };
                    if ok {
                        lats.push(due.elapsed().as_micros() as u64);
                    } else {
                        errors += 1;
                        s = TcpStream::connect(&addr).ok();
                    }
                }
                (lats, errors)
            })
        })
        .collect();
    let mut latencies_us = Vec::new();
    let mut errors = 0;
    for h in handles {
        let (l, e) = h.join().expect("load thread");
        latencies_us.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64().max(1e-9);
    latencies_us.sort_unstable();
    OpenLoopResult {
        sent: latencies_us.len() as u64 + errors,
        errors,
        achieved_rps: latencies_us.len() as f64 / elapsed,
        latencies_us,
    }
}
