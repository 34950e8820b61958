//! One synchronous rtnetlink request (or dump) and its answer: the only place that talks
//! NETLINK_ROUTE (the actuators' tc HTB classes go through it).
use std::io;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// Sends `msg` with `flags` (plus REQUEST and ACK) and returns the messages the kernel sent
/// back (a dump's entries); a NACK comes back as the kernel's errno.
pub fn request(msg: RouteNetlinkMessage, flags: u16) -> io::Result<Vec<RouteNetlinkMessage>> {
    let mut sock = Socket::new(NETLINK_ROUTE)?;
    sock.bind_auto()?;
    sock.connect(&SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    header.sequence_number = 1;
    let mut nl = NetlinkMessage::new(header, NetlinkPayload::from(msg));
    nl.finalize();
    let mut buf = vec![0u8; nl.buffer_len()];
    nl.serialize(&mut buf);
    sock.send(&buf, 0)?;
    let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
    let mut out = Vec::new();
    loop {
        let (data, _) = sock.recv_from_full()?;
        match read_datagram(&data, &mut out)? {
            None => return Ok(out),
            Some(off) => {
                if !dump && off >= data.len() && !out.is_empty() {
                    return Ok(out);
                }
            }
        }
    }
}

/// Appends the messages of one datagram of the kernel's answer to `out`. `None` when the
/// answer ends in it (DONE, or the ACK), else `Some(where reading stopped)`; a NACK is the
/// kernel's errno, a message that does not parse is `InvalidData`.
pub fn read_datagram(data: &[u8], out: &mut Vec<RouteNetlinkMessage>) -> io::Result<Option<usize>> {
    let mut off = 0;
    while off < data.len() {
        let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[off..])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        let len = m.header.length as usize;
        match m.payload {
            NetlinkPayload::Done(_) => return Ok(None),
            NetlinkPayload::Error(e) => {
                return match e.code {
                    // -errno; i32::MIN has no negation (the bytes are not checked).
                    Some(code) => Err(io::Error::from_raw_os_error(code.get().saturating_neg())),
                    None => Ok(None),
                };
            }
            NetlinkPayload::InnerMessage(i) => out.push(i),
            _ => {}
        }
        if len == 0 {
            break;
        }
        off += (len + 3) & !3;
    }
    Ok(Some(off))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An NLMSG_ERROR datagram (header and error code only) with `code`.
    fn error_datagram(code: i32) -> Vec<u8> {
        let mut d = Vec::new();
        d.extend_from_slice(&20u32.to_ne_bytes()); // length
        d.extend_from_slice(&2u16.to_ne_bytes()); // NLMSG_ERROR
        d.extend_from_slice(&0u16.to_ne_bytes()); // flags
        d.extend_from_slice(&1u32.to_ne_bytes()); // sequence
        d.extend_from_slice(&0u32.to_ne_bytes()); // port
        d.extend_from_slice(&code.to_ne_bytes());
        d
    }

    #[test]
    fn ack_and_nack() {
        let mut out = Vec::new();
        assert_eq!(read_datagram(&error_datagram(0), &mut out).unwrap(), None);
        let e = read_datagram(&error_datagram(-libc::EPERM), &mut out).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM));
        assert!(out.is_empty());
    }

    /// Found by the fuzz target netlink_reply: an error code of i32::MIN overflowed its negation
    /// (a panic in debug builds).
    #[test]
    fn nack_with_i32_min_is_an_error_not_a_panic() {
        let crash =
            b"\x14\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\xef\x00\x00\x00\x00\x00\x00\x00\x80";
        let mut out = Vec::new();
        let e = read_datagram(crash, &mut out).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(i32::MAX));
        assert!(read_datagram(&error_datagram(i32::MIN), &mut out).is_err());
    }
}
