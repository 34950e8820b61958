#![no_main]
mod check;
// seer-agent is a binary crate: its pure reply parsers are included by path.
#[allow(dead_code)]
#[path = "../../seer-agent/src/diagnose/framing.rs"]
mod framing;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check::check(data, framing::http_reply_len);
});
