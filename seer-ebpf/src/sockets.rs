//! Request turns on server-side TCP connections, timed in the kernel, and connect() calls.
//!
//! A turn starts with the first bytes a server-side socket reads after its last reply and ends
//! with the first bytes it writes: outstanding = started - completed - aborted, and the turn's
//! duration is a latency sample. No protocol is parsed.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use seer_common::{ConnectKey, LAT_BUCKETS, TCP_CLOSE, TCP_SYN_SENT, Turn, lat_bucket};

use crate::maps::{
    CONNECTS, LATENCY, TURNS, drops, load_btf, offset, port_slot, read_kernel, slot_counters,
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
    let key = sk as u64;
    // SAFETY: the value is only read (is there an open turn?), never kept past this call.
    if unsafe { TURNS.get(key) }.is_some() {
        return 0;
    }
    // SAFETY: reads the monotonic clock; no preconditions.
    let turn = Turn {
        start_ns: unsafe { bpf_ktime_get_ns() },
        slot: slot as u32,
        _pad: 0,
    };
    if TURNS.insert(key, turn, 0).is_err() {
        if let Some(d) = drops() {
            d.turns_full += 1;
        }
        return 0;
    }
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
    let key = sk as u64;
    // SAFETY: the value is copied out before the entry is removed.
    let Some(turn) = (unsafe { TURNS.get(key) }).copied() else {
        return 0;
    };
    let _ = TURNS.remove(key);
    // SAFETY: reads the monotonic clock; no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let slot = turn.slot as usize;
    if let Some(c) = slot_counters(slot) {
        c.req_completed += 1;
    }
    let bucket = lat_bucket(now.saturating_sub(turn.start_ns) / 1000);
    if let Some(h) = LATENCY.get_ptr_mut(turn.slot)
        && let Some(bucket) = verifier_bound(bucket, LAT_BUCKETS)
    {
        // SAFETY: per-CPU value, valid for this run; bucket checked against the array length.
        unsafe { (*h).buckets[bucket] += 1 };
    }
    0
}

/// connect() (-> SYN_SENT, in the caller's context: the current task is the client) and close
/// (-> CLOSE: a turn still open is aborted, so `outstanding` never leaks).
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn seer_state(ctx: BtfTracePointContext) -> i32 {
    let sk: *const u8 = ctx.arg(0);
    let newstate: i32 = ctx.arg(2);
    if newstate == TCP_SYN_SENT as i32 {
        let dport: u16 = read_kernel(sk, offset!(skc_dport));
        let key = ConnectKey {
            tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
            dport: u16::from_be(dport),
            _pad: 0,
        };
        match CONNECTS.get_ptr_mut(key) {
            // SAFETY: map value pointer valid for this run; a lost increment under a race
            // between CPUs only undercounts a connection count, never corrupts.
            Some(n) => unsafe { *n += 1 },
            None => {
                if CONNECTS.insert(key, 1u64, 0).is_err()
                    && let Some(d) = drops()
                {
                    d.connects_full += 1;
                }
            }
        }
    } else if newstate == TCP_CLOSE as i32 {
        let key = sk as u64;
        // SAFETY: the value is copied out before the entry is removed.
        if let Some(turn) = (unsafe { TURNS.get(key) }).copied() {
            let _ = TURNS.remove(key);
            if let Some(c) = slot_counters(turn.slot as usize) {
                c.req_aborted += 1;
            }
        }
    }
    0
}
