//! End-to-end latency in HDR histograms (the `hdrhistogram` crate): the generator records every
//! judged request (scenario time >= 0) that got a full `200` answer, in microseconds, overall and
//! per request type, and per second of scenario time. Failed requests (errors, timeouts, non-200)
//! are counted, not recorded: their latency is the time until given up.
//!
//! `latency.hdr` is a standard HdrHistogram interval log (V2 log format, histograms
//! V2+DEFLATE-compressed and base64-encoded; readable by Java's `HistogramLogProcessor`,
//! `HdrHistogram_py`, `hdrhistogram` in Rust). Values are microseconds (`max` column: ms).
//! - untagged lines: one histogram per second of scenario time, all request types;
//! - `Tag=all`: the whole judged run, all request types;
//! - `Tag=req.<name>`: the whole judged run, one request type.
//!
//! Start timestamps are seconds since `#[BaseTime]`, which is scenario time 0 (Unix seconds).
use std::{
    collections::BTreeMap,
    io::Cursor,
    path::Path,
    time::{Duration, UNIX_EPOCH},
};

use base64::Engine as _;
use hdrhistogram::{
    Histogram,
    serialization::{
        Deserializer, V2DeflateSerializer,
        interval_log::{IntervalLogIterator, IntervalLogWriterBuilder, LogEntry, Tag},
    },
};
use serde::Serialize;

use crate::error::{Error, Result};

/// Name of the log in `--out`.
pub const FILE: &str = "latency.hdr";
/// Largest recordable latency (saturates above): 10 minutes.
const MAX_US: u64 = 600_000_000;
/// 3 significant digits: 0.1 % relative error.
const SIGFIG: u8 = 3;

fn new_hist() -> Histogram<u64> {
    // Bounds are constants that satisfy the crate's rules (low >= 1, high >= 2 * low, sigfig <= 5).
    Histogram::new_with_bounds(1, MAX_US, SIGFIG).unwrap_or_else(|_| unreachable!())
}

/// The generator's histograms.
pub struct Latency {
    pub overall: Histogram<u64>,
    pub per_type: Vec<Histogram<u64>>,
    pub per_second: BTreeMap<i64, Histogram<u64>>,
    pub failed: u64,
    pub failed_per_type: Vec<u64>,
}

impl Latency {
    pub fn new(types: usize) -> Self {
        Self {
            overall: new_hist(),
            per_type: (0..types).map(|_| new_hist()).collect(),
            per_second: BTreeMap::new(),
            failed: 0,
            failed_per_type: vec![0; types],
        }
    }

    /// One completed request; `t_us` is its scenario send time (warm-up, < 0, is not judged).
    pub fn record(&mut self, t_us: i64, request: usize, latency_us: u64, ok: bool) {
        if t_us < 0 {
            return;
        }
        if !ok {
            self.failed += 1;
            if let Some(f) = self.failed_per_type.get_mut(request) {
                *f += 1;
            }
            return;
        }
        let v = latency_us.max(1);
        self.overall.saturating_record(v);
        if let Some(h) = self.per_type.get_mut(request) {
            h.saturating_record(v);
        }
        self.per_second
            .entry(t_us / 1_000_000)
            .or_insert_with(new_hist)
            .saturating_record(v);
    }

    /// Writes the interval log; `t0_unix_ms` is scenario time 0, `duration_s` the judged length.
    pub fn write_log(
        &self,
        path: &Path,
        names: &[String],
        t0_unix_ms: u64,
        duration_s: f64,
    ) -> Result<()> {
        let base = UNIX_EPOCH + Duration::from_millis(t0_unix_ms);
        let mut buf = Vec::new();
        let mut ser = V2DeflateSerializer::new();
        let bad =
            |e: String| Error::Setup(format!("{}: cannot encode histograms: {e}", path.display()));
        {
            let mut w = IntervalLogWriterBuilder::new()
                .add_comment("seer-testbed end-to-end latency, microseconds (max column: ms)")
                .add_comment("untagged: per second of scenario time; Tag=all: whole run; Tag=req.NAME: one request type")
                .with_start_time(base)
                .with_base_time(base)
                .with_max_value_divisor(1000.0)
                .begin_log_with(&mut buf, &mut ser)
                .map_err(|e| bad(e.to_string()))?;
            for (s, h) in &self.per_second {
                w.write_histogram(
                    h,
                    Duration::from_secs(*s as u64),
                    Duration::from_secs(1),
                    None,
                )
                .map_err(|e| bad(e.to_string()))?;
            }
            let whole = Duration::from_secs_f64(duration_s.max(0.0));
            w.write_histogram(&self.overall, Duration::ZERO, whole, Tag::new("all"))
                .map_err(|e| bad(e.to_string()))?;
            for (name, h) in names.iter().zip(&self.per_type) {
                let tag = format!("req.{name}");
                let Some(tag) = Tag::new(&tag) else {
                    return Err(bad(format!("request name {name:?} cannot be a log tag")));
                };
                w.write_histogram(h, Duration::ZERO, whole, Some(tag))
                    .map_err(|e| bad(e.to_string()))?;
            }
        }
        std::fs::write(path, buf).map_err(|e| Error::io("cannot write", path, e))
    }
}

/// One histogram read back from a log.
pub struct Entry {
    pub tag: Option<String>,
    pub start_s: f64,
    pub duration_s: f64,
    pub hist: Histogram<u64>,
}

/// Reads every interval histogram of an interval log.
pub fn read_log(path: &Path) -> Result<Vec<Entry>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("cannot read", path, e))?;
    let bad = |what: String| Error::Setup(format!("{}: {what}", path.display()));
    let mut de = Deserializer::new();
    let mut out = Vec::new();
    for entry in IntervalLogIterator::new(&bytes) {
        let entry = entry.map_err(|e| bad(format!("malformed interval log: {e:?}")))?;
        let LogEntry::Interval(i) = entry else {
            continue;
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(i.encoded_histogram())
            .map_err(|e| bad(format!("bad base64 histogram: {e}")))?;
        let hist: Histogram<u64> = de
            .deserialize(&mut Cursor::new(raw))
            .map_err(|e| bad(format!("bad histogram: {e:?}")))?;
        out.push(Entry {
            tag: i.tag().map(|t| t.as_str().to_string()),
            start_s: i.start_timestamp().as_secs_f64(),
            duration_s: i.duration().as_secs_f64(),
            hist,
        });
    }
    Ok(out)
}

/// Percentiles of one histogram, in ms.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        // value_at_quantile gives the highest value equivalent to the bucket's: report that.
        let q = |x: f64| h.value_at_quantile(x) as f64 / 1000.0;
        Self {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: q(0.5),
            p90_ms: q(0.9),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            max_ms: h.max() as f64 / 1000.0,
        }
    }
}

/// What `summary.json` says about the histograms: whole run and per request type.
#[derive(Debug, Clone, Serialize)]
pub struct HdrSummary {
    pub file: &'static str,
    pub all: Percentiles,
    pub per_request: BTreeMap<String, Percentiles>,
}

/// Percentiles of the `Tag=all` and `Tag=req.*` histograms of a log.
pub fn summarize(path: &Path) -> Result<HdrSummary> {
    let entries = read_log(path)?;
    let mut all = None;
    let mut per_request = BTreeMap::new();
    for e in &entries {
        match e.tag.as_deref() {
            Some("all") => all = Some(Percentiles::of(&e.hist)),
            Some(t) => {
                if let Some(name) = t.strip_prefix("req.") {
                    per_request.insert(name.to_string(), Percentiles::of(&e.hist));
                }
            }
            None => {}
        }
    }
    let all =
        all.ok_or_else(|| Error::Setup(format!("{}: no Tag=all histogram", path.display())))?;
    Ok(HdrSummary {
        file: FILE,
        all,
        per_request,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_round_trips_and_percentiles_are_close() {
        let names = vec!["home".to_string(), "post".to_string()];
        let mut l = Latency::new(2);
        for i in 0..10_000u64 {
            let t_us = (i as i64) * 1000 - 500_000; // the first 500 are warm-up
            l.record(t_us, (i % 2) as usize, 1000 + i, true);
        }
        l.record(5_000_000, 1, 42, false);
        assert_eq!(l.overall.len(), 9_500);
        assert_eq!(l.failed_per_type, vec![0, 1]);
        let dir = std::env::temp_dir().join(format!("seer-tb-hdr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(FILE);
        l.write_log(&p, &names, 1_700_000_000_000, 10.0).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("#[BaseTime: 1700000000.000"), "{text}");
        assert!(text.contains("Tag=req.post,"), "{text}");
        let entries = read_log(&p).unwrap();
        // 10 seconds (0..=9) untagged, all, two types.
        assert_eq!(entries.iter().filter(|e| e.tag.is_none()).count(), 10);
        let s = summarize(&p).unwrap();
        assert_eq!(s.all.count, 9_500);
        assert_eq!(s.per_request["home"].count, 4_750);
        // Exact p99 of 1500..=10999 is 10904; HDR is within 0.1 %.
        assert!((s.all.p99_ms - 10.904).abs() < 0.02, "{:?}", s.all);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn garbage_is_an_error() {
        let dir = std::env::temp_dir().join(format!("seer-tb-hdr-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(FILE);
        std::fs::write(&p, "Tag=all,0.0,1.0,2.0,notbase64!!\n").unwrap();
        assert!(read_log(&p).is_err());
        assert!(summarize(&dir.join("missing.hdr")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
