#![no_main]
//! Cluster mode's sample message (`seer.samples.<host>`, read by `seer-agent central` from
//! NATS): `HostTick::decode` never panics or allocates past its limits, and what it accepts is
//! the canonical encoding of what it returns (encoding it again gives the same bytes).
// seer-agent is a binary crate: the wire module is included by path, with the one constant
// of its parent module it names.
#[allow(dead_code)]
#[path = "../../seer-agent/src/cluster"]
mod cluster {
    pub const SAMPLES_PREFIX: &str = "seer.samples";
    pub const RESPOND_PREFIX: &str = "seer.respond";
    pub const EVENTS_PREFIX: &str = "seer.events";
    pub mod wire;
}

use cluster::wire::HostTick;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = HostTick::decode(data) {
        let mut again = Vec::new();
        t.encode(&mut again);
        assert_eq!(again, data, "decode then encode gives the same bytes");
    }
});
