#![no_main]
//! The actuators' reading of a rtnetlink answer (qdiscs, classes, filters, links: some of it
//! set by other processes): one datagram of arbitrary bytes.
// seer-agent is a binary crate: netlink.rs is included by path.
#[allow(dead_code)]
#[path = "../../seer-agent/src/sys/netlink.rs"]
mod netlink;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    let _ = netlink::read_datagram(data, &mut out);
    // Every message has at least a 16-byte header.
    assert!(
        out.len() <= data.len() / 16,
        "{} messages from {} bytes",
        out.len(),
        data.len()
    );
});
