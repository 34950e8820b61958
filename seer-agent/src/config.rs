//! The optional TOML config: tick, interfaces, and rules that name, merge or ignore services.
//!
//! ```toml
//! tick_ms = 100                 # 10 ..= 10000
//! interfaces = ["lo", "eth0"]   # default: every interface that is up
//! turns = true                  # request turn hooks (outstanding, latency)
//! epoll = false                 # epoll syscall tracepoints (costly: see `run --help`)
//!
//! [[service]]                   # name a service; rules with the same name merge services
//! name = "frontend"
//! comm = "nginx"                # match on any of: comm, port, cgroup (prefix)
//!
//! [[ignore]]
//! port = 22
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
            interfaces: None,
            turns: true,
            epoll: false,
            discovery_every: default_discovery_every(),
            services: Vec::new(),
            ignore: Vec::new(),
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
        let cfg: Config = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(0, |s| {
                text[..s.start.min(text.len())].matches('\n').count() + 1
            });
            ConfigError::Parse {
                path: path.into(),
                line,
                msg: e.message().to_string(),
            }
        })?;
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn tick_range_is_checked() {
        let e = Config::parse("tick_ms = 5\n", "s.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("10 ..= 10000"), "{e}");
    }
}
