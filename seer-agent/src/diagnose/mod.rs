//! Diagnosis (paper section 4.4): which shared resource a culprit service is short of.
//!
//! Method is chosen by the host: with working hardware counters (private mode) the culprit's
//! cgroup is counted; without them (public-cloud mode, like this VM) ten tunable contentious
//! microbenchmarks are injected next to it for ~10 ms bursts, core resources first, and the
//! first one that moves the culprit's measured latency substantially names the resource.
pub mod bandwidth;
pub mod canary;
pub mod framing;
pub mod llc;
pub mod microbench;
pub mod pmu;
pub mod probe;
pub mod record;
pub mod search;
pub mod session;
pub mod signals;
pub mod target;

use serde::{Deserialize, Serialize};

pub use record::Record;
pub use session::{DiagnoseRequest, diagnose, diagnose_target};

pub(crate) use crate::sys::thread::{nice_thread, pin_thread};

/// How the diagnosis was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Hardware counters work: count the culprit's cgroup.
    Private,
    /// No PMU: inject microbenchmarks and watch the culprit.
    PublicCloud,
}

/// The ten resources a microbenchmark can contend on, core first, then outward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    CpuInt,
    CpuFp,
    L1i,
    L1d,
    L2,
    Llc,
    MemoryBandwidth,
    MemoryCapacity,
    Network,
    Disk,
}

impl Resource {
    /// Search order: core resources, then uncore, then off-chip devices.
    pub const ALL: [Resource; 10] = [
        Resource::CpuInt,
        Resource::CpuFp,
        Resource::L1i,
        Resource::L1d,
        Resource::L2,
        Resource::Llc,
        Resource::MemoryBandwidth,
        Resource::MemoryCapacity,
        Resource::Network,
        Resource::Disk,
    ];

    /// The testbed's fault resource names (seer-testbed README), for the confusion matrix.
    pub fn testbed_name(self) -> &'static str {
        match self {
            Resource::CpuInt | Resource::CpuFp => "cpu",
            Resource::L1i | Resource::L1d | Resource::L2 | Resource::Llc => "llc",
            Resource::MemoryBandwidth => "memory_bandwidth",
            Resource::MemoryCapacity => "memory_capacity",
            Resource::Network => "network",
            Resource::Disk => "disk",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Resource::CpuInt => "cpu_int",
            Resource::CpuFp => "cpu_fp",
            Resource::L1i => "l1i",
            Resource::L1d => "l1d",
            Resource::L2 => "l2",
            Resource::Llc => "llc",
            Resource::MemoryBandwidth => "memory_bandwidth",
            Resource::MemoryCapacity => "memory_capacity",
            Resource::Network => "network",
            Resource::Disk => "disk",
        }
    }

    pub fn parse(s: &str) -> Option<Resource> {
        Resource::ALL.into_iter().find(|r| r.name() == s)
    }
}

/// Everything a diagnosis can fail on, each saying what to do.
#[derive(Debug, thiserror::Error)]
pub enum DiagnoseError {
    #[error(
        "no service named {name:?} on this host (known: {known}); names are the ones `seer-agent run` shows"
    )]
    UnknownService { name: String, known: String },
    #[error("service {name:?} went away during the diagnosis ({what}); nothing was decided")]
    ServiceGone { name: String, what: String },
    #[error("service {name:?} listens on no port seer can probe ({why}); give --port")]
    NoProbePort { name: String, why: String },
    #[error(
        "probing {addr} ({proto} protocol) failed: {source}; does the service speak it? (--protocol, --port)"
    )]
    Probe {
        addr: String,
        proto: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the service answered too few requests in the quiet windows ({n}); give a longer --window-ms or load it"
    )]
    TooFewSamples { n: u32 },
    #[error(
        "local actions are in effect for {name:?}: microbenchmarks would disturb them; retry after they end"
    )]
    ActionsInEffect { name: String },
    #[error("setting up the {what} microbenchmark: {source}")]
    Bench {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("entering network namespace {path}: {source} (needs root / CAP_SYS_ADMIN)")]
    Netns {
        path: String,
        #[source]
        source: nix::Error,
    },
    #[error("bad request: {0}")]
    BadRequest(String),
}
