//! epoll: calls, events handed to the application, and time blocked, per watched process.
//! Both hooks leave after one array lookup for processes that are not watched.
use seer_common::Turn;

use crate::maps::{EPOLL_START, TGID_SLOT, drops, slot_counters};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};

/// `struct trace_event_raw_sys_exit`: 8-byte common header, `long id`, then `long ret`.
const SYS_EXIT_RET: usize = 16;

/// The service slot of the current process, if it is watched (an array lookup).
#[inline(always)]
fn current_slot() -> Option<u32> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    match TGID_SLOT.get(tgid) {
        Some(&v) if v != 0 => Some(v as u32 - 1),
        _ => None,
    }
}

/// Attached to `sys_enter_epoll_wait` and `sys_enter_epoll_pwait`.
#[tracepoint]
pub fn seer_epoll_enter(_ctx: TracePointContext) -> u32 {
    let Some(slot) = current_slot() else {
        return 0;
    };
    let start = Turn {
        // SAFETY: reads the monotonic clock; no preconditions.
        start_ns: unsafe { bpf_ktime_get_ns() },
        slot,
        _pad: 0,
    };
    if EPOLL_START
        .insert(bpf_get_current_pid_tgid(), start, 0)
        .is_err()
        && let Some(d) = drops()
    {
        d.epoll_full += 1;
    }
    0
}

/// Attached to `sys_exit_epoll_wait` and `sys_exit_epoll_pwait`.
#[tracepoint]
pub fn seer_epoll_exit(ctx: TracePointContext) -> u32 {
    if current_slot().is_none() {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(st) = (unsafe { EPOLL_START.get(pid_tgid) }).copied() else {
        return 0;
    };
    let _ = EPOLL_START.remove(pid_tgid);
    // SAFETY: offset 16 of a sys_exit tracepoint record is the syscall's return value.
    let ret: i64 = unsafe { ctx.read_at(SYS_EXIT_RET) }.unwrap_or(0);
    // SAFETY: reads the monotonic clock; no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(c) = slot_counters(st.slot as usize) {
        c.epoll_calls += 1;
        if ret > 0 {
            c.epoll_events += ret as u64;
        }
        c.epoll_wait_ns += now.saturating_sub(st.start_ns);
    }
    0
}
