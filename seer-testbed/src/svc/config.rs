//! The per-instance configuration the testbed writes for each rpc service.
use std::{net::SocketAddr, path::PathBuf};

use serde::{Deserialize, Serialize};

use crate::scenario::{Kind, Mode};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SvcConfig {
    pub name: String,
    pub listen: SocketAddr,
    pub ctl: PathBuf,
    pub work_us: u64,
    /// KiB of the working set touched per request, and the working set's size.
    #[serde(default)]
    pub work_kb: u64,
    #[serde(default)]
    pub buffer_kb: u64,
    pub mode: Mode,
    pub reply_bytes: usize,
    pub threads: usize,
    pub calls: Vec<CalleeConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CalleeConfig {
    pub name: String,
    pub kind: Kind,
    pub addr: SocketAddr,
    pub value_bytes: usize,
    pub keys: u32,
}
