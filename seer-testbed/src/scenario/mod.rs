//! Scenario files (TOML): topology, per-service behaviour, load profile, fault schedule and QoS
//! target. `load` parses and validates; every error names `file:line:col`. The format is
//! documented in `seer-testbed/README.md`; `scenarios/*.toml` are worked examples.
mod validate;

use std::path::Path;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    /// Seeds arrivals and request-type choice, so two runs send the same schedule.
    #[serde(default = "default_seed")]
    pub seed: u64,
    pub qos: Qos,
    pub load: Load,
    #[serde(rename = "service")]
    pub services: Vec<Service>,
    #[serde(rename = "request")]
    pub requests: Vec<Request>,
    #[serde(rename = "fault", default)]
    pub faults: Vec<Fault>,
}

fn default_seed() -> u64 {
    1
}

/// End-to-end QoS: p99 of requests sent within a sliding window must stay under the target.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Qos {
    pub target_p99_ms: f64,
    #[serde(default = "default_window_ms")]
    pub window_ms: u64,
    #[serde(default = "default_step_ms")]
    pub step_ms: u64,
    /// Windows with fewer requests than this are not judged.
    #[serde(default = "default_min_samples")]
    pub min_samples: usize,
    /// Calibrated target: `auto_x` times the median window p99 of the healthy part of the run
    /// (the judged windows that end before the first fault is applied; the whole run when none
    /// is), never below `target_p99_ms`. For generated scenarios, whose healthy latency is not
    /// known in advance.
    #[serde(default)]
    pub auto_x: Option<f64>,
}

fn default_window_ms() -> u64 {
    1000
}
fn default_step_ms() -> u64 {
    100
}
fn default_min_samples() -> usize {
    20
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// `rps` all along.
    Constant,
    /// `rps * (1 + amplitude * sin(2 pi t / period_s))`: a day compressed into `period_s`.
    Diurnal,
    /// `rps`, then `peak_rps` from `at_s` for `duration_s`.
    Spike,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Load {
    pub profile: Spanned<Profile>,
    pub rps: f64,
    pub amplitude: Option<f64>,
    pub period_s: Option<f64>,
    pub peak_rps: Option<f64>,
    pub at_s: Option<f64>,
    pub duration_s: Option<f64>,
    /// Seconds of load before t=0 (not judged; fills pools and caches).
    #[serde(default = "default_warmup")]
    pub warmup_s: f64,
    /// Requests not answered after this are recorded as timeouts.
    #[serde(default = "default_timeout")]
    pub timeout_s: f64,
    /// Connections the generator may hold open at once (an arrival finding none free opens one).
    #[serde(default = "default_max_conns")]
    pub max_conns: usize,
}

fn default_warmup() -> f64 {
    2.0
}
fn default_timeout() -> f64 {
    10.0
}
fn default_max_conns() -> usize {
    512
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Debian's nginx, the front end (exactly one).
    Nginx,
    /// `seer-testbed-svc`, our RPC logic service.
    Rpc,
    Memcached,
    Redis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Callees one after the other (a synchronous chain).
    Sequential,
    /// All callees at once, replying when every one has answered (fan-out + fan-in).
    Parallel,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: Spanned<String>,
    pub kind: Kind,
    /// The "host" (network namespace) the service runs in.
    pub host: Spanned<String>,
    /// Listening port (default: assigned, unique per scenario).
    pub port: Option<u16>,
    /// rpc: CPU time per request in microseconds (thread CPU time, so a quota stretches it).
    #[serde(default)]
    pub work_us: u64,
    #[serde(default = "default_mode")]
    pub mode: Mode,
    /// rpc: callee service names (rpc, memcached or redis).
    #[serde(default)]
    pub calls: Vec<Spanned<String>>,
    /// rpc: bytes in each reply.
    #[serde(default = "default_reply_bytes")]
    pub reply_bytes: usize,
    /// rpc / nginx: threads (rpc runtime workers, nginx worker processes, memcached threads).
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// memcached / redis: value size and key space the callers use (cache-aside: get, set on miss).
    #[serde(default = "default_value_bytes")]
    pub value_bytes: usize,
    #[serde(default = "default_keys")]
    pub keys: u32,
    /// rpc: KiB of a per-service buffer touched per request (random cache lines), so LLC,
    /// memory-bandwidth and memory-capacity neighbours slow it. 0: none.
    #[serde(default)]
    pub work_kb: u64,
    /// KiB of the per-service buffer (default: 4 x work_kb, at least 1 MiB when work_kb > 0).
    #[serde(default)]
    pub buffer_kb: u64,
    /// CPUs the service's cgroup cpuset allows (`"1"`, `"0-3"`, `"0,2"`; `"all"`: every CPU
    /// the testbed has). Default: one CPU each, round-robin over the testbed's CPUs.
    pub cpus: Option<Spanned<String>>,
}

/// Parses a CPU list (`0-3,6`): sorted, without duplicates.
pub fn parse_cpu_list(s: &str) -> std::result::Result<Vec<usize>, String> {
    let mut v = Vec::new();
    for part in s.trim().split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("bad CPU list {s:?} (e.g. \"1\", \"0-3\", \"0,2\")");
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let (a, b): (usize, usize) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
        if a > b || b >= 4096 {
            return Err(bad());
        }
        v.extend(a..=b);
    }
    if v.is_empty() {
        return Err(format!("empty CPU list {s:?}"));
    }
    v.sort_unstable();
    v.dedup();
    Ok(v)
}

/// Formats CPUs as a cpuset list (`0-2,5`).
pub fn format_cpu_list(cpus: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            cpus[i].to_string()
        } else {
            format!("{}-{}", cpus[i], cpus[j])
        });
        i = j + 1;
    }
    out.join(",")
}

fn default_mode() -> Mode {
    Mode::Sequential
}
fn default_reply_bytes() -> usize {
    64
}
fn default_threads() -> usize {
    1
}
fn default_value_bytes() -> usize {
    256
}
fn default_keys() -> u32 {
    1000
}

/// One request type: an HTTP path on nginx routed to an rpc entry service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub name: Spanned<String>,
    pub entry: Spanned<String>,
    #[serde(default = "default_weight")]
    pub weight: f64,
}

fn default_weight() -> f64 {
    1.0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// CPU quota on the service's cgroup; intensity = cores (0.02 = 2 ms per 100 ms).
    CpuQuota,
    /// HTB cap on the service's replies (source port) on its host's veth; intensity = Mbit/s.
    NetBw,
    /// A blocking call on the service's event loop per request; intensity = microseconds.
    Blocking,
    /// Load multiplier on the whole front end; intensity = factor (2.0 = twice the rate).
    LoadSpike,
    /// CPU hog threads in the service's cgroup; intensity = cores of spinning.
    CpuHog,
    /// A thread reading a 32 MiB buffer at random in the service's cgroup (LLC thrash).
    CacheHog,
    /// Threads streaming writes through 64 MiB each in the service's cgroup (memory bandwidth);
    /// intensity = threads.
    MembwHog,
    /// Allocates and keeps touching intensity MiB in the service's cgroup (memory capacity).
    MemHog,
    /// Writes and fsyncs 1 MiB blocks next to the run directory; intensity = threads.
    DiskHog,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Onset {
    Step,
    /// Ramp from no fault to full intensity over `ramp_s` (0.5-10 s), then held.
    Ramp,
    /// Full intensity for `burst_on_s` of every `burst_period_s`.
    Bursts,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    pub kind: Spanned<FaultKind>,
    /// The service the fault is injected into (load_spike: the front end, may be omitted).
    pub service: Option<Spanned<String>>,
    pub start_s: f64,
    pub duration_s: f64,
    pub intensity: f64,
    #[serde(default = "default_onset")]
    pub onset: Onset,
    pub ramp_s: Option<f64>,
    pub burst_on_s: Option<f64>,
    pub burst_period_s: Option<f64>,
    /// Unannounced: the fault starts at a random time (drawn with the scenario's seed) between
    /// `start_s` and the end of the run, so nothing in the schedule precedes it.
    #[serde(default)]
    pub random: bool,
}

fn default_onset() -> Onset {
    Onset::Step
}

impl Scenario {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Scenario> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io("cannot read the scenario", path, e))?;
        Scenario::parse(&path.display().to_string(), &text)
    }

    /// Parses and validates `text`; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Scenario> {
        let sc: Scenario = toml::from_str(text).map_err(|e| {
            let at = e.span().map(|s| s.start).unwrap_or(0);
            located(file, text, at, e.message().to_string())
        })?;
        validate::check(&sc).map_err(|(at, msg)| located(file, text, at, msg))?;
        Ok(sc)
    }

    /// This scenario with every `random` fault given its start for a run of `run_s` seconds:
    /// uniform in [start_s, run_s - duration_s], drawn from the scenario's seed.
    pub fn with_random_starts(&self, run_s: f64) -> Scenario {
        let mut sc = self.clone();
        let mut rng = fastrand::Rng::with_seed(sc.seed ^ 0x5eed_fa17);
        for f in sc.faults.iter_mut().filter(|f| f.random) {
            let hi = (run_s - f.duration_s).max(f.start_s);
            f.start_s += rng.f64() * (hi - f.start_s);
        }
        sc
    }

    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name.get_ref() == name)
    }

    pub fn front_end(&self) -> Option<&Service> {
        self.services.iter().find(|s| s.kind == Kind::Nginx)
    }
}

/// An error at byte offset `at` of `text`, as `file:line:col: msg`.
fn located(file: &str, text: &str, at: usize, msg: String) -> Error {
    let at = at.min(text.len());
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let col = at - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    Error::Scenario {
        file: file.to_string(),
        line,
        col,
        msg,
    }
}

#[cfg(test)]
mod tests;
