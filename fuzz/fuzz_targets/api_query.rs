#![no_main]
//! The agent's `/api/query/...` endpoint (any local process can connect to it) and the times
//! `query`/`export` take: `parse_api`, then `parse_time` on the times it names.
// seer-agent is a binary crate: serve/query.rs (anyhow, percent-encoding) is included by path.
#[allow(dead_code)]
#[path = "../../seer-agent/src/serve/query.rs"]
mod query_api;

use libfuzzer_sys::fuzz_target;
use query_api::{QueryWhat, api_path, parse_api, parse_time};

/// 2026-01-01, in ms since the epoch.
const NOW: u64 = 1_767_225_600_000;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    // `--from`/`--to` go straight to parse_time.
    if let Ok(t) = parse_time(s, NOW) {
        assert!(t <= NOW || !s.starts_with('-'), "{s:?} is in the past");
    }
    let Ok(what) = parse_api(s) else {
        return;
    };
    if let QueryWhat::Violations { from } | QueryWhat::Diagnoses { from } = &what {
        let _ = parse_time(from, NOW);
    }
    // What the agent understood is what the CLI would have asked for.
    let again = parse_api(&api_path(&what)).expect("a path api_path wrote parses");
    assert_eq!(format!("{again:?}"), format!("{what:?}"), "{s:?}");
});
