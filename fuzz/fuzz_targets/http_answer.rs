#![no_main]
//! The HTTP client's reading of an answer (alert receivers, a running agent's query endpoint):
//! the peer controls every byte.
// seer-agent is a binary crate: http.rs (std only) is included by path.
#[allow(dead_code)]
#[path = "../../seer-agent/src/http.rs"]
mod http;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((_status, body)) = http::parse_answer(data) {
        let text = String::from_utf8_lossy(data);
        assert!(text.starts_with("HTTP/"), "accepted a non-HTTP answer");
        assert!(
            text.ends_with(body.as_str()),
            "the body is the answer's tail"
        );
    }
});
