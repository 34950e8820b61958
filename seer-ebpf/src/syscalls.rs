//! epoll: calls, events handed to the application, and time blocked, per watched process.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use seer_common::Turn;

use crate::maps::{EPOLL_START, TGID_SLOT, drops, slot_counters};

/// `struct trace_event_raw_sys_exit`: 8-byte common header, `long id`, then `long ret`.
const SYS_EXIT_RET: usize = 16;

/// Attached to `sys_enter_epoll_wait` and `sys_enter_epoll_pwait`.
#[tracepoint]
pub fn seer_epoll_enter(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let Some(&slot1) = TGID_SLOT.get(tgid) else {
        return 0;
    };
    if slot1 == 0 {
        return 0;
    }
    // SAFETY: reads the monotonic clock; no preconditions.
    let start = Turn {
        start_ns: unsafe { bpf_ktime_get_ns() },
        slot: slot1 as u32 - 1,
        _pad: 0,
    };
    if EPOLL_START.insert(pid_tgid, start, 0).is_err()
        && let Some(d) = drops()
    {
        d.epoll_full += 1;
    }
    0
}

/// Attached to `sys_exit_epoll_wait` and `sys_exit_epoll_pwait`.
#[tracepoint]
pub fn seer_epoll_exit(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(start) = (unsafe { EPOLL_START.get(pid_tgid) }).copied() else {
        return 0;
    };
    let _ = EPOLL_START.remove(pid_tgid);
    // SAFETY: offset 16 of a sys_exit tracepoint record is the syscall's return value.
    let ret: i64 = unsafe { ctx.read_at(SYS_EXIT_RET) }.unwrap_or(0);
    // SAFETY: reads the monotonic clock; no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(c) = slot_counters(start.slot as usize) {
        c.epoll_calls += 1;
        if ret > 0 {
            c.epoll_events += ret as u64;
        }
        c.epoll_wait_ns += now.saturating_sub(start.start_ns);
    }
    0
}
