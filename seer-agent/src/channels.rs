//! Which hooks each channel needs: the one place that says what a host can observe, read by
//! `doctor` (for people), and by `run` (recorded in the trace store, so training knows which
//! zeros mean "not observed").
use crate::sys::bpf::Hook;

/// (channels, hooks that must all be attached — `a|b` means either, `file:PATH` a file the
/// kernel must have — how it is observed)
pub const NEEDS: &[(&[&str], &[&str], &str)] = &[
    (
        &[],
        &["seer_tc_ingress"],
        "per-packet NIC arrivals (opt-in: --tc-ingress; TCX, or cls_bpf before 6.6): also SYNs and the last packets of connections that close within a tick",
    ),
    (
        &[
            "nic_rx_pkts",
            "nic_rx_bytes",
            "rx_queue_bytes",
            "tx_queue_bytes",
            "connections",
            "accept_backlog",
        ],
        &["seer_sock_iter|seer_sock_iter_plain"],
        "TCP socket iterator (NIC arrivals: the sockets' segs_in and bytes_received deltas, unless tc ingress counts them)",
    ),
    (
        &[],
        &["seer_sk_iter|seer_file_iter|seer_file_iter_compat"],
        "per-tick walk over watched sockets only: socket storage (iter/bpf_sk_storage_map) or each watched process's descriptors (iter/task_file); else a full TCP walk every tick",
    ),
    (
        &["epoll_calls", "epoll_events", "epoll_wait_ms"],
        &["seer_epoll_enter", "seer_epoll_exit"],
        "syscall tracepoints (opt-in: --epoll)",
    ),
    (
        &["requests", "latency_p50_us", "latency_p99_us"],
        &["seer_recv", "seer_send"],
        "request turns: sock_recv_length/sock_send_length (outstanding falls back to last-in/last-out clocks)",
    ),
    (
        &["cpu_run_ms", "cpu_wait_ms", "cpu_throttled"],
        &["file:/proc/self/schedstat"],
        "no hook: each watched process's threads' schedstat and its CPU cgroup's cpu.stat, read every tick (cpu_throttled stays 0 without a CFS quota)",
    ),
    (
        &[],
        &["seer_connect"],
        "call graph from connect() (else only connections seen at discovery)",
    ),
];

/// Whether every hook a row needs is attached (`file:PATH`: a file the kernel has, for rows read
/// from files: `schedstat` needs CONFIG_SCHED_INFO).
pub fn available(hooks: &[Hook], needs: &[&str]) -> bool {
    needs.iter().all(|alts| {
        alts.split('|').any(|p| match p.strip_prefix("file:") {
            Some(path) => std::path::Path::new(path).exists(),
            None => hooks.iter().any(|h| h.program == p),
        })
    })
}

/// Channels (from `CHANNEL_NAMES`) this host cannot observe with these hooks.
pub fn missing(hooks: &[Hook]) -> Vec<&'static str> {
    NEEDS
        .iter()
        .filter(|(_, needs, _)| !available(hooks, needs))
        .flat_map(|(channels, _, _)| channels.iter().copied())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(p: &'static str) -> Hook {
        Hook {
            program: p,
            kind: "x",
            target: String::new(),
        }
    }

    #[test]
    fn missing_channels_follow_missing_hooks() {
        let all: Vec<Hook> = [
            "seer_tc_ingress",
            "seer_sock_iter_plain",
            "seer_recv",
            "seer_send",
        ]
        .map(hook)
        .into();
        assert_eq!(
            missing(&all),
            ["epoll_calls", "epoll_events", "epoll_wait_ms"]
        );
        // NIC arrivals come from the socket walk: no per-packet program needed.
        let few = vec![hook("seer_sock_iter")];
        assert_eq!(missing(&few).len(), 3 + 3);
        assert!(!missing(&few).contains(&"nic_rx_pkts"));
        assert!(missing(&[hook("seer_tc_ingress")]).contains(&"nic_rx_pkts"));
        // The CPU channels need no hook, only the kernel's schedstat files.
        assert!(!missing(&[]).contains(&"cpu_wait_ms"));
        assert!(available(&[], &["file:/proc/self/schedstat"]));
        assert!(!available(&[], &["file:/proc/self/no-such-file"]));
        for (channels, _, _) in NEEDS {
            for c in *channels {
                assert!(
                    seer_common::sample::CHANNEL_NAMES.contains(c),
                    "{c} is a channel"
                );
            }
        }
    }
}
