//! Request turns on server-side TCP connections, timed in the kernel, and connect() calls.
//!
//! Turn state lives in socket-local storage (`SOCKS`), which also marks the socket as observed
//! for the per-tick iterator. A turn starts with the first bytes a server-side socket reads after its last reply and ends
//! with the first bytes it writes: outstanding = started - completed - aborted, and the turn's
//! duration is a latency sample. No protocol is parsed.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use seer_common::{
    AF_INET, AF_INET6, ConnectKey, LAT_BUCKETS, TCP_CLOSE, TCP_ESTABLISHED, TCP_LISTEN,
    TCP_SYN_SENT, lat_bucket,
};

use crate::maps::{
    CONNECTS, LATENCY, drops, load_btf, offset, port_slot, read_kernel, slot_counters, sock_state,
    verifier_bound,
};

const MSG_PEEK: i32 = 2;
const IPPROTO_TCP: u16 = 6;

/// Slot of a server-side TCP socket: its local port belongs to a watched service.
#[inline(always)]
fn server_slot(sk: *const u8) -> Option<usize> {
    let lport: u16 = load_btf(sk, offset!(skc_num));
    let slot = port_slot(lport)?;
    let proto: u16 = load_btf(sk, offset!(sk_protocol));
    if proto != IPPROTO_TCP {
        return None;
    }
    Some(slot)
}

#[btf_tracepoint(function = "sock_recv_length")]
pub fn seer_recv(ctx: BtfTracePointContext) -> i32 {
    let sk: *const u8 = ctx.arg(0);
    let ret: i32 = ctx.arg(1);
    let flags: i32 = ctx.arg(2);
    if ret <= 0 || flags & MSG_PEEK != 0 {
        return 0;
    }
    let Some(slot) = server_slot(sk) else {
        return 0;
    };
    let Some(st) = sock_state(sk, true) else {
        if let Some(d) = drops() {
            d.turns_full += 1;
        }
        return 0;
    };
    if st.open != 0 {
        return 0;
    }
    // SAFETY: reads the monotonic clock; no preconditions.
    st.start_ns = unsafe { bpf_ktime_get_ns() };
    st.slot = slot as u32;
    st.open = 1;
    if let Some(c) = slot_counters(slot) {
        c.req_started += 1;
    }
    0
}

#[btf_tracepoint(function = "sock_send_length")]
pub fn seer_send(ctx: BtfTracePointContext) -> i32 {
    let sk: *const u8 = ctx.arg(0);
    let ret: i32 = ctx.arg(1);
    if ret <= 0 {
        return 0;
    }
    // Cheap filter first (an array lookup): only server-side sockets of watched services.
    if port_slot(load_btf(sk, offset!(skc_num))).is_none() {
        return 0;
    }
    let Some(st) = sock_state(sk, false) else {
        return 0;
    };
    if st.open == 0 {
        return 0;
    }
    st.open = 0;
    // SAFETY: reads the monotonic clock; no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let slot = st.slot as usize;
    if let Some(c) = slot_counters(slot) {
        c.req_completed += 1;
    }
    let bucket = lat_bucket(now.saturating_sub(st.start_ns) / 1000);
    if let Some(h) = LATENCY.get_ptr_mut(slot as u32)
        && let Some(bucket) = verifier_bound(bucket, LAT_BUCKETS)
    {
        // SAFETY: per-CPU value, valid for this run; bucket checked against the array length.
        unsafe { (*h).buckets[bucket] += 1 };
    }
    0
}

/// connect() (-> SYN_SENT, in the caller's context: the current task is the client), for the
/// call graph. Kept apart from `seer_state` so it loads on kernels that refuse socket storage
/// in tracing programs (before 5.11).
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn seer_connect(ctx: BtfTracePointContext) -> i32 {
    let sk: *const u8 = ctx.arg(0);
    let newstate: i32 = ctx.arg(2);
    if newstate != TCP_SYN_SENT as i32 {
        return 0;
    }
    let dport: u16 = read_kernel(sk, offset!(skc_dport));
    let family: u16 = read_kernel(sk, offset!(skc_family));
    let mut key = ConnectKey {
        tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
        dport: u16::from_be(dport),
        family: 0,
        _pad: 0,
        daddr: [0; 16],
    };
    if family == u16::from(AF_INET) {
        let a: [u8; 4] = read_kernel(sk, offset!(skc_daddr));
        key.daddr[..4].copy_from_slice(&a);
        key.family = AF_INET;
    } else if family == u16::from(AF_INET6) && offset!(skc_v6_daddr) != 0 {
        key.daddr = read_kernel(sk, offset!(skc_v6_daddr));
        key.family = AF_INET6;
    }
    match CONNECTS.get_ptr_mut(key) {
        // SAFETY: map value pointer valid for this run; a lost increment under a race between
        // CPUs only undercounts a connection count, never corrupts.
        Some(n) => unsafe { *n += 1 },
        None => {
            if CONNECTS.insert(key, 1u64, 0).is_err()
                && let Some(d) = drops()
            {
                d.connects_full += 1;
            }
        }
    }
    0
}

/// Socket lifecycle for socket-local storage: close (a turn still open is aborted, so
/// `outstanding` never leaks), and registration at birth of listeners and of connections
/// accepted on a watched port (so a queue that is never read still shows).
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn seer_state(ctx: BtfTracePointContext) -> i32 {
    let sk: *const u8 = ctx.arg(0);
    let newstate: i32 = ctx.arg(2);
    if newstate == TCP_CLOSE as i32 {
        if let Some(st) = sock_state(sk, false)
            && st.open != 0
        {
            st.open = 0;
            if let Some(c) = slot_counters(st.slot as usize) {
                c.req_aborted += 1;
            }
        }
    } else if (newstate == TCP_LISTEN as i32
        || (newstate == TCP_ESTABLISHED as i32 && server_slot(sk).is_some()))
        && sock_state(sk, true).is_none()
        && let Some(d) = drops()
    {
        d.turns_full += 1;
    }
    0
}
