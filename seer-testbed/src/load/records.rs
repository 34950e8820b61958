//! Per-request records: written by the generator as `requests.csv`, read by the ground-truth
//! analysis. Columns: `send_unix_us` (scheduled send time), `t_ms` (scenario time; < 0 during
//! warm-up), `latency_us` (scheduled send to last reply byte; for `timeout` and `error`, the time
//! until given up), `request` (type name), `status` (`ok`, `http_NNN`, `error`, `timeout`).
use std::{
    io::{BufRead as _, BufWriter, Write as _},
    path::Path,
};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Http(u16),
    Error,
    Timeout,
}

#[derive(Debug, Clone)]
pub struct Record {
    pub send_unix_us: u64,
    /// Scenario time in microseconds.
    pub t_us: i64,
    pub latency_us: u64,
    pub request: u16,
    pub status: Status,
}

pub const HEADER: &str = "send_unix_us,t_ms,latency_us,request,status";

pub fn write_csv(path: &Path, recs: &[Record], names: &[String]) -> Result<()> {
    let f = std::fs::File::create(path).map_err(|e| Error::io("cannot create", path, e))?;
    let mut w = BufWriter::new(f);
    let io = |e| Error::io("cannot write", path, e);
    writeln!(w, "{HEADER}").map_err(io)?;
    for r in recs {
        let status = match r.status {
            Status::Ok => "ok".to_string(),
            Status::Http(c) => format!("http_{c}"),
            Status::Error => "error".into(),
            Status::Timeout => "timeout".into(),
        };
        let name = names.get(r.request as usize).map_or("?", String::as_str);
        writeln!(
            w,
            "{},{:.3},{},{},{}",
            r.send_unix_us,
            r.t_us as f64 / 1000.0,
            r.latency_us,
            name,
            status
        )
        .map_err(io)?;
    }
    w.flush().map_err(io)
}

pub fn read_csv(path: &Path, names: &[String]) -> Result<Vec<Record>> {
    let f = std::fs::File::open(path).map_err(|e| Error::io("cannot open", path, e))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| Error::io("cannot read", path, e))?;
        if i == 0 {
            continue;
        }
        let bad = || Error::Setup(format!("{}:{}: malformed record", path.display(), i + 1));
        let c: Vec<&str> = line.split(',').collect();
        let [send, t, lat, req, status] = c[..] else {
            return Err(bad());
        };
        let status = match status {
            "ok" => Status::Ok,
            "error" => Status::Error,
            "timeout" => Status::Timeout,
            s => Status::Http(
                s.strip_prefix("http_")
                    .and_then(|c| c.parse().ok())
                    .ok_or_else(bad)?,
            ),
        };
        out.push(Record {
            send_unix_us: send.parse().map_err(|_| bad())?,
            t_us: (t.parse::<f64>().map_err(|_| bad())? * 1000.0) as i64,
            latency_us: lat.parse().map_err(|_| bad())?,
            request: names.iter().position(|n| n == req).unwrap_or(0) as u16,
            status,
        });
    }
    Ok(out)
}
