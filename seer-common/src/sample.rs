//! One service's channels for one tick: what the sampler produces, the store keeps, and the
//! model reads. The channel list here is the one definition of the model's `C` axis.

/// Channels, in model order. Rates are per tick (deltas); gauges are the value at the tick.
#[repr(usize)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    /// TCP packets arriving for the service's ports on watched interfaces (rate).
    NicRxPkts = 0,
    /// TCP bytes arriving for the service's ports (rate).
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
}

pub const CHANNELS: usize = 13;

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
