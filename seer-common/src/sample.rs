//! One service's channels for one tick: what the sampler produces, the store keeps, and the
//! model reads. The channel list here is the one definition of the model's `C` axis.

/// Channels, in model order. Rates are per tick (deltas); gauges are the value at the tick.
#[repr(usize)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    /// TCP segments that arrived on the service's server-side connections (rate): the sockets'
    /// `segs_in`, read once per tick; with the opt-in tc ingress counter, packets to its ports.
    NicRxPkts = 0,
    /// Payload bytes that arrived on them (`bytes_received`; with tc ingress, frame bytes).
    NicRxBytes,
    /// Bytes received but not read, summed over the service's server-side sockets (gauge).
    RxQueueBytes,
    /// Connections waiting in accept(), summed over its listening sockets (gauge).
    AcceptBacklog,
    /// epoll_wait/epoll_pwait calls returned (rate).
    EpollCalls,
    /// Events those calls handed to the service (rate).
    EpollEvents,
    /// Milliseconds the service's threads spent blocked in epoll_wait (rate).
    EpollWaitMs,
    /// Request turns received and not yet answered (gauge).
    Outstanding,
    /// Request turns answered (rate).
    Requests,
    /// Median / tail request latency over the tick, microseconds (0 when no request finished).
    LatencyP50Us,
    LatencyP99Us,
    /// Established server-side connections (gauge).
    Connections,
    /// Bytes written by the service and not yet acknowledged by peers (gauge).
    TxQueueBytes,
    /// Milliseconds its threads ran on a CPU during the tick (rate; `/proc/PID/task/*/schedstat`).
    CpuRunMs,
    /// Milliseconds its threads were runnable but waited for a CPU (rate; the same files): the
    /// run-queue wait that a CPU hog beside it, or too many runnable threads, makes.
    CpuWaitMs,
    /// Share of the CFS periods of the tick in which its cgroup ran out of its CPU quota
    /// (0..1, `cpu.stat` `nr_throttled / nr_periods`; 0 without a quota).
    CpuThrottled,
}

pub const CHANNELS: usize = 16;

/// Channel names as they appear in JSON output, exported datasets and model cards.
pub const CHANNEL_NAMES: [&str; CHANNELS] = [
    "nic_rx_pkts",
    "nic_rx_bytes",
    "rx_queue_bytes",
    "accept_backlog",
    "epoll_calls",
    "epoll_events",
    "epoll_wait_ms",
    "outstanding",
    "requests",
    "latency_p50_us",
    "latency_p99_us",
    "connections",
    "tx_queue_bytes",
    "cpu_run_ms",
    "cpu_wait_ms",
    "cpu_throttled",
];

/// What each channel measures, one line (Prometheus HELP text, `--help`, model cards).
pub const CHANNEL_HELP: [&str; CHANNELS] = [
    "TCP segments that arrived on the service's connections during the tick.",
    "Payload bytes that arrived on the service's connections during the tick.",
    "Bytes received on the service's sockets but not read by it yet.",
    "Connections waiting in accept() on the service's listening sockets.",
    "epoll_wait calls the service made during the tick.",
    "Events epoll_wait returned to the service during the tick.",
    "Time the service spent blocked in epoll_wait during the tick.",
    "Requests the service has read but not answered.",
    "Requests the service answered during the tick.",
    "Median latency of the requests the service answered during the tick.",
    "99th percentile latency of the requests the service answered during the tick.",
    "Established connections on the service's ports.",
    "Bytes the service sent that the peer has not acknowledged yet.",
    "Time the service's threads ran on a CPU during the tick.",
    "Time the service's threads were runnable but waited for a CPU during the tick.",
    "Share of the tick's CFS periods in which the service's cgroup ran out of its CPU quota.",
];

/// Stable identity of a discovered service within one agent's store (assigned by the agent).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceId(pub u32);

/// One service, one tick.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    pub service: ServiceId,
    /// Wall-clock time of the tick, milliseconds since the Unix epoch.
    pub ts_ms: u64,
    pub values: [f32; CHANNELS],
}

impl Sample {
    pub fn get(&self, c: Channel) -> f32 {
        self.values[c as usize]
    }
    pub fn set(&mut self, c: Channel, v: f32) {
        self.values[c as usize] = v;
    }
}
