#![no_main]
mod check;
// seer-agent is a binary crate: its pure reply parsers are included by path.
#[allow(dead_code)]
#[path = "../../seer-agent/src/diagnose/framing.rs"]
mod framing;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the request the reply answers: `get` or `version`.
    let Some((&first, data)) = data.split_first() else {
        return;
    };
    let get = first & 1 == 1;
    check::check(data, |b| framing::memcached_reply_len(b, get));
});
