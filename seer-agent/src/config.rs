//! The optional TOML config: tick, interfaces, and rules that name, merge or ignore services.
//!
//! ```toml
//! tick_ms = 100                 # 10 ..= 10000
//! tc_ingress = false            # per-packet NIC counter (opt-in; default: per-tick socket counters)
//! interfaces = ["lo", "eth0"]   # where tc_ingress counts (naming some turns it on; default: all up)
//! turns = true                  # request turn hooks (outstanding, latency)
//! epoll = false                 # epoll syscall tracepoints (costly: see `run --help`)
//!
//! [[service]]                   # name a service; rules with the same name merge services
//! name = "frontend"
//! comm = "nginx"                # match on any of: comm, port, cgroup (prefix)
//!
//! [[ignore]]
//! port = 22
//!
//! [qos]                         # the end-to-end target seer protects (optional)
//! service = "frontend"          # the front end whose request latency is the QoS
//! p99_ms = 50.0                 # violated when its p99 over the window exceeds this
//! window_ms = 1000              # sliding window (default 1000)
//! min_requests = 20             # fewer requests in the window: no verdict (default 20)
//!
//! [respond]                     # what happens when the QoS is violated (needs [qos])
//! mode = "recommend"            # enforce | recommend | dry-run
//! diagnose = true               # find the culprit's saturated resource (microbenchmarks)
//! cooldown_s = 10               # at most one diagnosis per culprit this often
//! check_ms = 1500               # after a step: the violation still on then -> one more step
//! hold_s = 30                   # healthy this long -> actions for the culprit rolled back (a CPU raise it still wants: kept)
//! cpu_floor_pct = 20            # nobody's CPU quota goes below this (% of its CPU before seer)
//! mb_floor_pct = 30             # nobody's memory bandwidth below this (MBA %)
//! net_floor_mbit = 50           # nobody's egress ceiling below this
//! journal = "/run/seer/actions.json"
//!
//! [alerts]                      # where alerts go (kept in the store until delivered)
//! alertmanager = "http://127.0.0.1:9093"   # Alertmanager API v2
//! webhook = "http://127.0.0.1:8080/seer"   # any receiver of a JSON POST
//! retry_s = 5
//! ```
use std::path::Path;

use serde::Deserialize;

pub const TICK_MIN_MS: u64 = 10;
pub const TICK_MAX_MS: u64 = 10_000;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_tick")]
    pub tick_ms: u64,
    /// NIC arrivals from a tc ingress program on every packet (opt-in) instead of the per-tick
    /// socket counters: it also sees SYNs and the last packets of connections that close
    /// within a tick, at ~70 ns per packet in the receiving service's own context.
    #[serde(default)]
    pub tc_ingress: bool,
    /// Interfaces for tc ingress; naming any turns `tc_ingress` on.
    #[serde(default)]
    pub interfaces: Option<Vec<String>>,
    #[serde(default = "yes")]
    pub turns: bool,
    /// Off by default: syscall tracepoints slow every syscall on the host.
    #[serde(default)]
    pub epoll: bool,
    /// How often processes and sockets are re-scanned for services, in ticks.
    #[serde(default = "default_discovery_every")]
    pub discovery_every: u32,
    #[serde(default, rename = "service")]
    pub services: Vec<Rule>,
    #[serde(default, rename = "ignore")]
    pub ignore: Vec<Match>,
    #[serde(default)]
    pub qos: Option<QosConfig>,
    #[serde(default)]
    pub respond: RespondConfig,
    #[serde(default)]
    pub alerts: AlertsConfig,
    #[serde(default)]
    pub predict: PredictConfig,
}

/// `[predict]`: when the model's probabilities raise an alarm (which starts the response
/// before the violation).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PredictConfig {
    /// Probability at or over which a service counts as about to initiate a violation
    /// (default: the threshold in the model's card, chosen on its validation runs).
    pub threshold: Option<f32>,
    /// Ticks in a row over the threshold before the alarm fires (and under the hysteresis
    /// before it clears) (default: the model card's, chosen with its threshold: 1 or 2).
    pub consecutive: Option<u32>,
    /// The alarm clears under hysteresis x threshold.
    pub hysteresis: f32,
    /// After an alarm, the same service does not alarm again for this long.
    pub cooldown_s: u64,
    /// Alarms start diagnosis, steps and alerts only when the model's card reports at least
    /// this precision on its validation runs (the share of its alarms a violation followed);
    /// a less precise model's alarms are shown and counted, not acted on.
    pub min_precision_pct: f64,
}

impl Default for PredictConfig {
    fn default() -> Self {
        PredictConfig {
            threshold: None,
            consecutive: None,
            hysteresis: 0.8,
            cooldown_s: 30,
            min_precision_pct: 80.0,
        }
    }
}

/// The end-to-end QoS target: a front end's tail latency over a sliding window.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QosConfig {
    pub service: String,
    pub p99_ms: f64,
    #[serde(default = "default_window")]
    pub window_ms: u64,
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
}

impl QosConfig {
    /// `service`'s p99 at most `p99_ms`, with the default window and minimum of requests.
    pub fn new(service: &str, p99_ms: f64) -> Self {
        QosConfig {
            service: service.into(),
            p99_ms,
            window_ms: default_window(),
            min_requests: default_min_requests(),
        }
    }
}

fn default_window() -> u64 {
    1000
}
fn default_min_requests() -> u64 {
    20
}

/// What the response does with its decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Apply local actions (journaled, undone on exit) and alert.
    Enforce,
    /// Put the actions in the alert for the cluster manager; change nothing here.
    Recommend,
    /// Log only.
    DryRun,
}

/// Where the journal of actions in force lives (undone at exit and at the next start).
pub const DEFAULT_JOURNAL: &str = "/run/seer/actions.json";

/// What the agent does about a violation (see `respond`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RespondConfig {
    pub mode: Mode,
    pub diagnose: bool,
    pub cooldown_s: u64,
    /// After a step, how long before checking that it worked: a violation still going on
    /// then gets one more step (the same diagnosis, the next level), up to the knob's bounds.
    pub check_ms: u64,
    pub hold_s: u64,
    pub cpu_floor_pct: u32,
    pub mb_floor_pct: u32,
    pub net_floor_mbit: u32,
    pub journal: std::path::PathBuf,
}

impl Default for RespondConfig {
    fn default() -> Self {
        RespondConfig {
            mode: Mode::Recommend,
            diagnose: true,
            cooldown_s: 10,
            check_ms: 1500,
            hold_s: 30,
            cpu_floor_pct: 20,
            mb_floor_pct: 30,
            net_floor_mbit: 50,
            journal: DEFAULT_JOURNAL.into(),
        }
    }
}

/// Where alerts are delivered.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Alertmanager base URL (http://host:port); alerts go to /api/v2/alerts.
    pub alertmanager: Option<String>,
    /// URL that receives each alert as a JSON POST.
    pub webhook: Option<String>,
    pub retry_s: u64,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            alertmanager: None,
            webhook: None,
            retry_s: 5,
        }
    }
}

impl AlertsConfig {
    pub fn any(&self) -> bool {
        self.alertmanager.is_some() || self.webhook.is_some()
    }
}

fn default_tick() -> u64 {
    100
}
fn default_discovery_every() -> u32 {
    10
}
fn yes() -> bool {
    true
}

/// Matches a discovered service: every given field must match.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    pub comm: Option<String>,
    pub port: Option<u16>,
    /// Prefix of the cgroup path.
    pub cgroup: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    pub comm: Option<String>,
    pub port: Option<u16>,
    pub cgroup: Option<String>,
}

impl Rule {
    pub fn matches(&self, comm: &str, ports: &[u16], cgroup: &str) -> bool {
        Match {
            comm: self.comm.clone(),
            port: self.port,
            cgroup: self.cgroup.clone(),
        }
        .matches(comm, ports, cgroup)
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            tick_ms: default_tick(),
            tc_ingress: false,
            interfaces: None,
            turns: true,
            epoll: false,
            discovery_every: default_discovery_every(),
            services: Vec::new(),
            ignore: Vec::new(),
            qos: None,
            respond: RespondConfig::default(),
            alerts: AlertsConfig::default(),
            predict: PredictConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {msg}")]
    Parse {
        path: String,
        line: usize,
        msg: String,
    },
    #[error("{path}: {msg}")]
    Invalid { path: String, msg: String },
}

impl Match {
    pub fn is_empty(&self) -> bool {
        self.comm.is_none() && self.port.is_none() && self.cgroup.is_none()
    }

    pub fn matches(&self, comm: &str, ports: &[u16], cgroup: &str) -> bool {
        !self.is_empty()
            && self.comm.as_deref().is_none_or(|c| c == comm)
            && self.port.is_none_or(|p| ports.contains(&p))
            && self.cgroup.as_deref().is_none_or(|c| cgroup.starts_with(c))
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: p.clone(),
            source,
        })?;
        Self::parse(&text, &p)
    }

    pub fn parse(text: &str, path: &str) -> Result<Self, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(0, |s| {
                text[..s.start.min(text.len())].matches('\n').count() + 1
            });
            ConfigError::Parse {
                path: path.into(),
                line,
                msg: e.message().to_string(),
            }
        })?;
        cfg.tc_ingress |= cfg.interfaces.is_some();
        cfg.validate().map_err(|msg| ConfigError::Invalid {
            path: path.into(),
            msg,
        })?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), String> {
        if !(TICK_MIN_MS..=TICK_MAX_MS).contains(&self.tick_ms) {
            return Err(format!(
                "tick_ms = {} is out of range: expected {TICK_MIN_MS} ..= {TICK_MAX_MS}",
                self.tick_ms
            ));
        }
        if self.discovery_every == 0 {
            return Err("discovery_every must be at least 1 (ticks)".into());
        }
        let p = &self.predict;
        if p.threshold.is_some_and(|t| !(t > 0.0 && t < 1.0)) {
            return Err(format!(
                "[predict] threshold = {:?}: expected a probability in (0, 1)",
                p.threshold.unwrap_or_default()
            ));
        }
        if let Some(k) = p.consecutive
            && !(1..=100).contains(&k)
        {
            return Err(format!(
                "[predict] consecutive = {k}: expected 1 ..= 100 ticks"
            ));
        }
        if !(p.hysteresis > 0.0 && p.hysteresis <= 1.0) {
            return Err(format!(
                "[predict] hysteresis = {}: expected (0, 1] (the alarm clears under hysteresis x threshold)",
                p.hysteresis
            ));
        }
        if !(0.0..=100.0).contains(&p.min_precision_pct) {
            return Err(format!(
                "[predict] min_precision_pct = {}: expected 0 ..= 100",
                p.min_precision_pct
            ));
        }
        let r = &self.respond;
        if r.check_ms < self.tick_ms || r.check_ms > 600_000 {
            return Err(format!(
                "[respond] check_ms = {}: expected a tick ({} ms) ..= 600000: it is how long a \
                 step has to work before the next one",
                r.check_ms, self.tick_ms
            ));
        }
        if p.cooldown_s > 86_400 {
            return Err(format!(
                "[predict] cooldown_s = {}: at most a day",
                p.cooldown_s
            ));
        }
        for (i, r) in self.services.iter().enumerate() {
            if r.comm.is_none() && r.port.is_none() && r.cgroup.is_none() {
                return Err(format!(
                    "[[service]] #{} (name = {:?}) needs at least one of comm, port, cgroup",
                    i + 1,
                    r.name
                ));
            }
        }
        for (i, m) in self.ignore.iter().enumerate() {
            if m.is_empty() {
                return Err(format!(
                    "[[ignore]] #{} needs at least one of comm, port, cgroup",
                    i + 1
                ));
            }
        }
        if let Some(q) = &self.qos {
            if q.service.is_empty() {
                return Err("[qos] service must name the front-end service".into());
            }
            if !(q.p99_ms.is_finite() && q.p99_ms > 0.0) {
                return Err(format!("[qos] p99_ms = {} must be above 0", q.p99_ms));
            }
            if q.window_ms < self.tick_ms || q.window_ms > 600_000 {
                return Err(format!(
                    "[qos] window_ms = {} must be between one tick ({} ms) and 600000",
                    q.window_ms, self.tick_ms
                ));
            }
        }
        let r = &self.respond;
        if r.cpu_floor_pct == 0 || r.mb_floor_pct == 0 || r.net_floor_mbit == 0 {
            return Err(
                "[respond] floors (cpu_floor_pct, mb_floor_pct, net_floor_mbit) must be above 0"
                    .into(),
            );
        }
        if r.cpu_floor_pct > 100 || r.mb_floor_pct > 100 {
            return Err("[respond] cpu_floor_pct and mb_floor_pct are at most 100".into());
        }
        for (key, url) in [
            ("alertmanager", &self.alerts.alertmanager),
            ("webhook", &self.alerts.webhook),
        ] {
            if let Some(u) = url {
                crate::http::HttpUrl::parse(u).map_err(|e| format!("[alerts] {key}: {e}"))?;
            }
        }
        if self.alerts.retry_s == 0 {
            return Err("[alerts] retry_s must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_config_parses() {
        let c = Config::parse(include_str!("../../deploy/seer.toml"), "deploy/seer.toml").unwrap();
        assert_eq!(c.qos.map(|q| q.service), Some("frontend".into()));
        assert_eq!(c.respond.mode, Mode::Recommend);
    }

    #[test]
    fn parses_rules() {
        let c = Config::parse(
            "tick_ms = 50\n[[service]]\nname = \"fe\"\ncomm = \"nginx\"\n[[ignore]]\nport = 22\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.tick_ms, 50);
        assert!(c.services[0].matches("nginx", &[80], "/"));
        assert!(!c.services[0].matches("redis", &[80], "/"));
        assert!(c.ignore[0].matches("sshd", &[22], "/"));
    }

    #[test]
    fn bad_line_names_file_and_line() {
        let e = Config::parse(
            "tick_ms = 100\n\n[[service]]\nname = \"x\"\ncolor = 3\n",
            "seer.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("seer.toml:5:"), "{e}");
        assert!(e.contains("color"), "{e}");
    }

    #[test]
    fn qos_respond_and_alerts_parse_and_are_checked() {
        let c = Config::parse(
            "[qos]\nservice = \"fe\"\np99_ms = 50\n[respond]\nmode = \"enforce\"\ncpu_floor_pct = 40\n[alerts]\nalertmanager = \"http://127.0.0.1:9093\"\n",
            "s.toml",
        )
        .unwrap();
        let q = c.qos.as_ref().unwrap();
        assert_eq!(
            (q.service.as_str(), q.p99_ms, q.window_ms),
            ("fe", 50.0, 1000)
        );
        assert_eq!(c.respond.mode, Mode::Enforce);
        assert_eq!(c.respond.cpu_floor_pct, 40);
        assert!(c.alerts.any());
        for (bad, want) in [
            ("[qos]\nservice = \"fe\"\np99_ms = -1\n", "p99_ms"),
            (
                "[qos]\nservice = \"fe\"\np99_ms = 5\nwindow_ms = 10\n",
                "window_ms",
            ),
            ("[respond]\nmode = \"yolo\"\n", "yolo"),
            ("[respond]\ncpu_floor_pct = 0\n", "floors"),
            ("[alerts]\nalertmanager = \"ftp://am:9093\"\n", "https://"),
            ("[alerts]\nwebhook = \"am:9093\"\n", "http://"),
        ] {
            let e = Config::parse(bad, "s.toml").unwrap_err().to_string();
            assert!(e.contains(want), "{bad:?}: {e}");
        }
        // TLS receivers are taken (ureq with rustls delivers to them).
        let c = Config::parse("[alerts]\nalertmanager = \"https://am:9093\"\n", "s.toml").unwrap();
        assert!(c.alerts.any());
    }

    #[test]
    fn tick_range_is_checked() {
        let e = Config::parse("tick_ms = 5\n", "s.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("10 ..= 10000"), "{e}");
    }
}
