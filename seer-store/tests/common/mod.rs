//! Helpers shared by the integration tests.
#![allow(dead_code)]

use seer_common::sample::{CHANNELS, Sample, ServiceId};
use seer_store::{Store, StoreConfig};
use std::path::PathBuf;

pub const T0: u64 = 1_767_225_600_000;

pub fn temp_store(config: StoreConfig) -> (tempfile::TempDir, PathBuf, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("trace.redb");
    let store = Store::open(&path, config).expect("open store");
    (dir, path, store)
}

/// Sample of `id` whose channel c is `base + c`.
pub fn sample(id: u32, base: f32) -> Sample {
    let mut values = [0.0; CHANNELS];
    for (c, v) in values.iter_mut().enumerate() {
        *v = base + c as f32;
    }
    Sample {
        service: ServiceId(id),
        ts_ms: 0,
        values,
    }
}
