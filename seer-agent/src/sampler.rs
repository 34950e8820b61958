//! One `Sample` per service per tick, from the kernel counters (deltas), the latency histograms
//! (deltas -> p50/p99) and one TCP iterator pass (gauges). Buffers are allocated once; a warm
//! tick allocates nothing but what `Vec::push` reuses, except the CPU channels
//! ([`CpuChannels`]): their file reads (a directory listing and a `schedstat` per thread, a
//! `cpu.stat` per service) allocate a path and a buffer per file.
use seer_common::{
    LAT_BUCKETS, MAX_SLOTS, SlotCounters, SockRecord, TCP_LISTEN, quantile_us,
    sample::{CHANNELS, Channel, Sample, ServiceId},
};

use crate::discovery::Discovery;

/// What the kernel gave this tick, read through `sys::bpf::Probes` (or made up by a test).
pub trait KernelSource {
    fn read_counters(&mut self, out: &mut [SlotCounters; MAX_SLOTS]) -> anyhow::Result<()>;
    fn read_latency(&mut self, slot: usize, out: &mut [u64; LAT_BUCKETS]) -> anyhow::Result<()>;
}

pub struct Sampler {
    prev: Box<[SlotCounters; MAX_SLOTS]>,
    cur: Box<[SlotCounters; MAX_SLOTS]>,
    prev_lat: Vec<[u64; LAT_BUCKETS]>,
    lat: [u64; LAT_BUCKETS],
    /// Outstanding turns at the moment a slot was (re)assigned: not this service's.
    base_outstanding: [i64; MAX_SLOTS],
    /// local port -> index into `Discovery::services` + 1
    port_index: Box<[u16; 65536]>,
    /// Whether event hooks for turns are attached (else outstanding comes from the snapshot).
    turns: bool,
    /// NIC arrivals from the sockets' own counters, read once per tick (the default), rather
    /// than from the per-packet tc ingress counter.
    nic_from_sockets: bool,
    /// Server-side sockets' `(bytes_received, segs_in)` at the last tick, by socket key
    /// (inode, or the ports while a connection waits in accept() with no file yet).
    rx_prev: std::collections::HashMap<u64, (u64, u32)>,
    rx_cur: std::collections::HashMap<u64, (u64, u32)>,
    /// Services (by index in `Discovery::services`) whose sockets are counted from the next
    /// tick on: their counters so far are history, not this tick's arrivals.
    rx_baseline: Vec<bool>,
    first: bool,
    /// Requests already read but not answered when the agent started, which the turn hooks
    /// never saw begin: server socket inode -> the bytes it had sent then. Counted as
    /// outstanding until the socket sends (or closes). Seeded at the first tick.
    in_flight_at_start: std::collections::HashMap<u64, u64>,
    still_in_flight: std::collections::HashMap<u64, u64>,
    /// The service whose per-tick latency histogram is kept in `watched` (the QoS front end).
    pub watch: Option<seer_common::sample::ServiceId>,
    /// Its request latencies of the last tick (zeros when none finished or nothing watched).
    pub watched: Box<[u64; LAT_BUCKETS]>,
}

/// A server socket holds a request it has not answered: bytes came in and none went out yet
/// (the clocks cannot tell: the handshake and the first request often share a jiffy), or data
/// came in after the last data went out. (A request that came in within the jiffy of the
/// previous answer is not seen by the clocks: a limit of their resolution, 1-4 ms.)
fn request_open(r: &SockRecord) -> bool {
    r.bytes_received > 0 && (r.bytes_sent == 0 || after(r.lrcvtime, r.lsndtime))
}

/// `a` is later than `b` on the 32-bit jiffies clock.
fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

impl Sampler {
    pub fn new(turns: bool, nic_from_sockets: bool) -> Self {
        Self {
            nic_from_sockets,
            rx_prev: Default::default(),
            rx_cur: Default::default(),
            rx_baseline: Vec::new(),
            prev: Box::new([SlotCounters::default(); MAX_SLOTS]),
            cur: Box::new([SlotCounters::default(); MAX_SLOTS]),
            prev_lat: vec![[0; LAT_BUCKETS]; MAX_SLOTS],
            lat: [0; LAT_BUCKETS],
            base_outstanding: [0; MAX_SLOTS],
            port_index: Box::new([0; 65536]),
            turns,
            first: true,
            in_flight_at_start: Default::default(),
            still_in_flight: Default::default(),
            watch: None,
            watched: Box::new([0; LAT_BUCKETS]),
        }
    }

    /// Rebuilds the port index and resets baselines of newly assigned slots. Call after every
    /// discovery refresh that changed something.
    pub fn on_discovery(
        &mut self,
        src: &mut dyn KernelSource,
        d: &Discovery,
        new_slots: &[usize],
    ) -> anyhow::Result<()> {
        self.port_index.fill(0);
        self.rx_baseline.clear();
        for (i, s) in d.services.iter().enumerate() {
            for &p in &s.ports {
                self.port_index[p as usize] = i as u16 + 1;
            }
            self.rx_baseline
                .push(s.slot.is_none_or(|slot| new_slots.contains(&slot)));
        }
        if !new_slots.is_empty() {
            src.read_counters(&mut self.cur)?;
            for &slot in new_slots {
                self.prev[slot] = self.cur[slot];
                let c = &self.cur[slot];
                self.base_outstanding[slot] =
                    c.req_started as i64 - c.req_completed as i64 - c.req_aborted as i64;
                src.read_latency(slot, &mut self.prev_lat[slot])?;
            }
        }
        Ok(())
    }

    /// Produces one sample per service in `d` (same order) into `out`.
    pub fn tick(
        &mut self,
        src: &mut dyn KernelSource,
        d: &Discovery,
        socks: &[SockRecord],
        ts_ms: u64,
        out: &mut Vec<Sample>,
    ) -> anyhow::Result<()> {
        out.clear();
        self.watched.fill(0);
        src.read_counters(&mut self.cur)?;
        for s in &d.services {
            let mut v = [0f32; CHANNELS];
            if let Some(slot) = s.slot {
                let (c, p) = (&self.cur[slot], &self.prev[slot]);
                let first = self.first;
                let delta = |a: u64, b: u64| {
                    if first {
                        0.0
                    } else {
                        a.saturating_sub(b) as f32
                    }
                };
                if !self.nic_from_sockets {
                    v[Channel::NicRxPkts as usize] = delta(c.nic_rx_pkts, p.nic_rx_pkts);
                    v[Channel::NicRxBytes as usize] = delta(c.nic_rx_bytes, p.nic_rx_bytes);
                }
                v[Channel::EpollCalls as usize] = delta(c.epoll_calls, p.epoll_calls);
                v[Channel::EpollEvents as usize] = delta(c.epoll_events, p.epoll_events);
                v[Channel::EpollWaitMs as usize] = delta(c.epoll_wait_ns, p.epoll_wait_ns) / 1e6;
                v[Channel::Requests as usize] = delta(c.req_completed, p.req_completed);
                if self.turns {
                    let open = c.req_started as i64 - c.req_completed as i64 - c.req_aborted as i64;
                    v[Channel::Outstanding as usize] =
                        (open - self.base_outstanding[slot]).max(0) as f32;
                }
                src.read_latency(slot, &mut self.lat)?;
                let prev = &mut self.prev_lat[slot];
                for (l, p) in self.lat.iter_mut().zip(prev.iter_mut()) {
                    let now = *l;
                    *l = now.saturating_sub(*p);
                    *p = now;
                }
                if !self.first {
                    v[Channel::LatencyP50Us as usize] = quantile_us(&self.lat, 0.50) as f32;
                    v[Channel::LatencyP99Us as usize] = quantile_us(&self.lat, 0.99) as f32;
                    if self.watch == Some(s.id) {
                        self.watched.copy_from_slice(&self.lat);
                    }
                }
            }
            out.push(Sample {
                service: s.id,
                ts_ms,
                values: v,
            });
        }
        std::mem::swap(&mut self.prev, &mut self.cur);
        let seed = self.first && self.turns;
        let first = self.first;
        self.first = false;
        // Gauges from the socket snapshot.
        for r in socks {
            let idx = self.port_index[r.lport as usize];
            if idx == 0 {
                continue;
            }
            let v = &mut out[idx as usize - 1].values;
            if r.state == TCP_LISTEN {
                v[Channel::AcceptBacklog as usize] += r.ack_backlog as f32;
                continue;
            }
            v[Channel::RxQueueBytes as usize] += r.rx_queue as f32;
            v[Channel::TxQueueBytes as usize] += r.tx_queue as f32;
            v[Channel::Connections as usize] += 1.0;
            if self.nic_from_sockets {
                let key = if r.inode != 0 {
                    r.inode
                } else {
                    1 << 63
                        | u64::from(r.family) << 32
                        | u64::from(r.lport) << 16
                        | u64::from(r.rport)
                };
                let now = (r.bytes_received, r.segs_in);
                let counted = !first
                    && !self
                        .rx_baseline
                        .get(idx as usize - 1)
                        .copied()
                        .unwrap_or(true);
                if counted {
                    // A socket first seen now was born since the last walk: all it received is
                    // new (segs_in counts every segment from its SYN on).
                    let (b0, s0) = self.rx_prev.get(&key).copied().unwrap_or((0, 0));
                    v[Channel::NicRxBytes as usize] += now.0.saturating_sub(b0) as f32;
                    v[Channel::NicRxPkts as usize] += now.1.wrapping_sub(s0) as f32;
                }
                self.rx_cur.insert(key, now);
            }
            let open = request_open(r);
            if !self.turns && open {
                v[Channel::Outstanding as usize] += 1.0;
            }
            if seed && open && r.inode != 0 {
                self.in_flight_at_start.insert(r.inode, r.bytes_sent);
            }
            // A request from before the start is open until its socket sends.
            if self.turns && open && self.in_flight_at_start.get(&r.inode) == Some(&r.bytes_sent) {
                v[Channel::Outstanding as usize] += 1.0;
                self.still_in_flight.insert(r.inode, r.bytes_sent);
            }
        }
        if !self.in_flight_at_start.is_empty() {
            std::mem::swap(&mut self.in_flight_at_start, &mut self.still_in_flight);
            self.still_in_flight.clear();
        }
        if self.nic_from_sockets {
            // Sockets gone since the last walk drop out (their last packets are not counted:
            // tc ingress, opt-in, sees those).
            std::mem::swap(&mut self.rx_prev, &mut self.rx_cur);
            self.rx_cur.clear();
            self.rx_baseline.fill(false);
        }
        Ok(())
    }
}

/// One process's or cgroup's CPU counters at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuCounters {
    /// Its threads' time on a CPU and runnable waiting for one (`schedstat`, ns), summed.
    pub run_ns: u64,
    pub wait_ns: u64,
}

/// Where the CPU channels come from: files, not hooks (a test gives its own).
pub trait CpuSource {
    /// A process's threads' counters; None when it is gone.
    fn threads(&mut self, pid: u32) -> Option<CpuCounters>;
    /// The CPU cgroup directory (holding `cpu.stat`) of a process; None when there is none.
    fn cgroup_dir(&mut self, pid: u32) -> Option<std::path::PathBuf>;
    /// `(nr_periods, nr_throttled)` of that cgroup's `cpu.stat`.
    fn periods(&mut self, dir: &std::path::Path) -> Option<(u64, u64)>;
}

/// The host's /proc and cgroupfs.
pub struct ProcCpu;

impl CpuSource for ProcCpu {
    fn threads(&mut self, pid: u32) -> Option<CpuCounters> {
        crate::sys::procfs::threads_schedstat(std::path::Path::new("/proc"), pid)
            .map(|(run_ns, wait_ns)| CpuCounters { run_ns, wait_ns })
    }
    fn cgroup_dir(&mut self, pid: u32) -> Option<std::path::PathBuf> {
        crate::sys::procfs::cpu_cgroup_dir(pid)
    }
    fn periods(&mut self, dir: &std::path::Path) -> Option<(u64, u64)> {
        crate::sys::cgroupfs::read(&dir.join("cpu.stat"))
            .ok()
            .as_deref()
            .and_then(crate::sys::cgroupfs::parse_cpu_stat_periods)
    }
}

/// The CPU channels (`cpu_run_ms`, `cpu_wait_ms`, `cpu_throttled`), per service per tick: what
/// its processes' threads' schedstat and its cgroup's `cpu.stat` moved since the last tick.
/// Counted per process, so a process that joins a service counts from its first tick on, not
/// with its whole history, and one that exits takes nothing away.
#[derive(Default)]
pub struct CpuChannels {
    /// pid -> its counters at the last tick.
    prev: std::collections::HashMap<u32, CpuCounters>,
    cur: std::collections::HashMap<u32, CpuCounters>,
    /// Service -> its CPU cgroup directory and that cgroup's periods at the last tick (the
    /// directory is found again at every discovery round).
    cgroups: std::collections::HashMap<ServiceId, (std::path::PathBuf, Option<(u64, u64)>)>,
}

impl CpuChannels {
    /// Finds each service's CPU cgroup (from its first process); call after every discovery.
    pub fn on_discovery(&mut self, src: &mut dyn CpuSource, d: &Discovery) {
        let mut next = std::collections::HashMap::new();
        for s in &d.services {
            let Some(dir) = s.pids.first().and_then(|&p| src.cgroup_dir(p)) else {
                continue;
            };
            let last = match self.cgroups.remove(&s.id) {
                Some((old, last)) if old == dir => last,
                _ => None,
            };
            next.insert(s.id, (dir, last));
        }
        self.cgroups = next;
    }

    /// Sets the CPU channels of `out` (one sample per service of `d`, same order).
    pub fn fill(&mut self, src: &mut dyn CpuSource, d: &Discovery, out: &mut [Sample]) {
        self.cur.clear();
        for (s, sample) in d.services.iter().zip(out.iter_mut()) {
            let (mut run, mut wait) = (0u64, 0u64);
            for &pid in &s.pids {
                let Some(now) = src.threads(pid) else {
                    continue;
                };
                if let Some(p) = self.prev.get(&pid) {
                    run += now.run_ns.saturating_sub(p.run_ns);
                    wait += now.wait_ns.saturating_sub(p.wait_ns);
                }
                self.cur.insert(pid, now);
            }
            sample.set(Channel::CpuRunMs, run as f32 / 1e6);
            sample.set(Channel::CpuWaitMs, wait as f32 / 1e6);
            if let Some((dir, last)) = self.cgroups.get_mut(&s.id) {
                let now = src.periods(dir);
                if let (Some((p0, t0)), Some((p1, t1))) = (*last, now) {
                    let periods = p1.saturating_sub(p0);
                    if periods > 0 {
                        let share = t1.saturating_sub(t0) as f32 / periods as f32;
                        sample.set(Channel::CpuThrottled, share.min(1.0));
                    }
                }
                *last = now;
            }
        }
        std::mem::swap(&mut self.prev, &mut self.cur);
    }
}

#[cfg(test)]
mod tests {
    use seer_common::{lat_bucket, lat_bucket_upper_us};

    use super::*;
    use crate::{config::Config, sys::procfs::ProcInfo};

    /// A kernel made of plain arrays: what the programs would have counted.
    struct FakeKernel {
        counters: [SlotCounters; MAX_SLOTS],
        lat: Vec<[u64; LAT_BUCKETS]>,
    }

    impl FakeKernel {
        fn new() -> Self {
            FakeKernel {
                counters: [SlotCounters::default(); MAX_SLOTS],
                lat: vec![[0; LAT_BUCKETS]; MAX_SLOTS],
            }
        }
    }

    /// Discovery of one service, "web" (pid 7), that holds the listener with inode 1 in
    /// `socks`; and the slots that round assigned.
    fn web(socks: &[SockRecord]) -> (Discovery, Vec<usize>) {
        let procs = vec![ProcInfo {
            pid: 7,
            comm: "web".into(),
            cgroup: "/".into(),
            socket_inodes: vec![1],
        }];
        let mut d = Discovery::default();
        let ch = d.refresh(&Config::default(), socks, &procs);
        (d, ch.new_slots)
    }

    impl KernelSource for FakeKernel {
        fn read_counters(&mut self, out: &mut [SlotCounters; MAX_SLOTS]) -> anyhow::Result<()> {
            *out = self.counters;
            Ok(())
        }
        fn read_latency(
            &mut self,
            slot: usize,
            out: &mut [u64; LAT_BUCKETS],
        ) -> anyhow::Result<()> {
            *out = self.lat[slot];
            Ok(())
        }
    }

    #[test]
    fn deltas_gauges_and_quantiles() {
        let socks = vec![
            SockRecord {
                state: TCP_LISTEN,
                lport: 80,
                inode: 1,
                ack_backlog: 3,
                ..Default::default()
            },
            SockRecord {
                state: 1,
                lport: 80,
                rport: 5000,
                rx_queue: 100,
                ..Default::default()
            },
            SockRecord {
                state: 1,
                lport: 80,
                rport: 5001,
                rx_queue: 50,
                ..Default::default()
            },
        ];
        let (d, new_slots) = web(&socks);
        let slot = d.services[0].slot.unwrap();
        let mut k = FakeKernel::new();
        k.counters[slot].req_started = 4; // open before this service got its slot
        let mut s = Sampler::new(true, false);
        s.on_discovery(&mut k, &d, &new_slots).unwrap();
        let mut out = Vec::new();
        s.tick(&mut k, &d, &socks, 1, &mut out).unwrap();
        k.counters[slot].nic_rx_pkts += 10;
        k.counters[slot].req_started += 5;
        k.counters[slot].req_completed += 3;
        for _ in 0..99 {
            k.lat[slot][lat_bucket(1000)] += 1;
        }
        k.lat[slot][lat_bucket(50_000)] += 1;
        s.tick(&mut k, &d, &socks, 2, &mut out).unwrap();
        let v = &out[0];
        assert_eq!(v.get(Channel::NicRxPkts), 10.0);
        assert_eq!(v.get(Channel::Outstanding), 2.0);
        assert_eq!(v.get(Channel::Requests), 3.0);
        assert_eq!(v.get(Channel::AcceptBacklog), 3.0);
        assert_eq!(v.get(Channel::RxQueueBytes), 150.0);
        assert_eq!(v.get(Channel::Connections), 2.0);
        assert_eq!(
            v.get(Channel::LatencyP50Us),
            lat_bucket_upper_us(lat_bucket(1000)) as f32
        );
        assert_eq!(
            v.get(Channel::LatencyP99Us),
            lat_bucket_upper_us(lat_bucket(1000)) as f32
        );
        // The next tick sees only what is new.
        k.lat[slot][lat_bucket(50_000)] += 1;
        s.tick(&mut k, &d, &socks, 3, &mut out).unwrap();
        assert_eq!(out[0].get(Channel::NicRxPkts), 0.0);
        assert_eq!(
            out[0].get(Channel::LatencyP99Us),
            lat_bucket_upper_us(lat_bucket(50_000)) as f32
        );
    }

    /// Before: a request read before the agent started (the turn hooks never saw it begin)
    /// showed outstanding 0 for as long as the server held it. Now the first tick's socket
    /// clocks seed it (received after last sent), until the socket sends or closes.
    #[test]
    fn requests_in_flight_at_start_are_outstanding_until_answered() {
        let held = |inode: u64, rport: u16| SockRecord {
            state: 1,
            lport: 80,
            rport,
            inode,
            bytes_received: 4,
            lrcvtime: 1000,
            lsndtime: 1000,
            ..Default::default()
        };
        let mut socks = vec![
            SockRecord {
                state: TCP_LISTEN,
                lport: 80,
                inode: 1,
                ..Default::default()
            },
            held(11, 5000),
            held(12, 5001),
            held(13, 5002),
            held(14, 5003),
        ];
        let (d, new_slots) = web(&socks);
        let mut k = FakeKernel::new();
        let mut s = Sampler::new(true, true);
        s.on_discovery(&mut k, &d, &new_slots).unwrap();
        let mut out = Vec::new();
        for ts in 1..=3 {
            s.tick(&mut k, &d, &socks, ts, &mut out).unwrap();
            assert_eq!(out[0].get(Channel::Outstanding), 4.0, "tick {ts}");
        }
        // One answers (it sends), one closes.
        socks[1].bytes_sent = 6;
        socks[1].lsndtime = 1100;
        socks.remove(2);
        s.tick(&mut k, &d, &socks, 4, &mut out).unwrap();
        assert_eq!(out[0].get(Channel::Outstanding), 2.0);
        // The answered one's next request is the hooks' (a turn they see begin), not seeded.
        socks[1].lrcvtime = 1200;
        socks[1].bytes_received = 8;
        s.tick(&mut k, &d, &socks, 5, &mut out).unwrap();
        assert_eq!(out[0].get(Channel::Outstanding), 2.0);
    }

    /// NIC arrivals from the sockets' counters: deltas per tick, a connection born since the
    /// last walk counted whole, one that existed before the first tick (or before its service
    /// was discovered) counted from then on, and segs_in wrapping.
    #[test]
    fn nic_arrivals_from_socket_counters() {
        let conn = |inode: u64, rport: u16, bytes: u64, segs: u32| SockRecord {
            state: 1,
            lport: 80,
            rport,
            inode,
            bytes_received: bytes,
            segs_in: segs,
            ..Default::default()
        };
        let listener = SockRecord {
            state: TCP_LISTEN,
            lport: 80,
            inode: 1,
            ..Default::default()
        };
        let mut socks = vec![listener, conn(11, 5000, 1_000_000, 900)];
        let (d, new_slots) = web(&socks);
        let mut k = FakeKernel::new();
        let slot = d.services[0].slot.unwrap();
        k.counters[slot].nic_rx_pkts = 12345; // no tc program: never read
        let mut s = Sampler::new(true, true);
        s.on_discovery(&mut k, &d, &new_slots).unwrap();
        let mut out = Vec::new();
        s.tick(&mut k, &d, &socks, 1, &mut out).unwrap();
        assert_eq!(out[0].get(Channel::NicRxPkts), 0.0, "history, not arrivals");
        socks[1] = conn(11, 5000, 1_000_300, 903);
        socks.push(conn(12, 5001, 40, 2)); // born since the last walk
        socks.push(conn(0, 5002, 10, 1)); // in the accept queue: no file, no inode yet
        s.tick(&mut k, &d, &socks, 2, &mut out).unwrap();
        assert_eq!(out[0].get(Channel::NicRxPkts), 6.0);
        assert_eq!(out[0].get(Channel::NicRxBytes), 350.0);
        socks[1] = conn(11, 5000, 1_000_300, 903);
        socks[2] = conn(12, 5001, 40, u32::MAX);
        socks[3] = conn(0, 5002, 10, 1);
        s.tick(&mut k, &d, &socks, 3, &mut out).unwrap();
        assert_eq!(out[0].get(Channel::NicRxPkts), (u32::MAX - 2) as f32);
        socks[2] = conn(12, 5001, 40, 1); // wrapped: 2 more
        socks.remove(3); // closed
        s.tick(&mut k, &d, &socks, 4, &mut out).unwrap();
        assert_eq!(out[0].get(Channel::NicRxPkts), 2.0);
        assert_eq!(out[0].get(Channel::NicRxBytes), 0.0);
    }

    #[test]
    fn jiffies_compare_wraps() {
        assert!(after(5, 3));
        assert!(after(2, u32::MAX - 1));
        assert!(!after(3, 3));
    }

    /// Processes' thread counters and one cgroup's periods, set by the test.
    #[derive(Default)]
    struct FakeCpu {
        threads: std::collections::HashMap<u32, CpuCounters>,
        periods: (u64, u64),
    }

    impl CpuSource for FakeCpu {
        fn threads(&mut self, pid: u32) -> Option<CpuCounters> {
            self.threads.get(&pid).copied()
        }
        fn cgroup_dir(&mut self, _pid: u32) -> Option<std::path::PathBuf> {
            Some("/fake/web".into())
        }
        fn periods(&mut self, _dir: &std::path::Path) -> Option<(u64, u64)> {
            Some(self.periods)
        }
    }

    #[test]
    fn cpu_channels_are_per_tick_deltas_per_process() {
        let socks = vec![SockRecord {
            state: TCP_LISTEN,
            lport: 80,
            inode: 1,
            ..Default::default()
        }];
        let (mut d, _) = web(&socks);
        let mut src = FakeCpu::default();
        let ms = |run: u64, wait: u64| CpuCounters {
            run_ns: run * 1_000_000,
            wait_ns: wait * 1_000_000,
        };
        src.threads.insert(7, ms(500, 40));
        src.periods = (10, 2);
        let mut cpu = CpuChannels::default();
        cpu.on_discovery(&mut src, &d);
        let mut out = vec![Sample::default()];
        let tick =
            |cpu: &mut CpuChannels, src: &mut FakeCpu, d: &Discovery, out: &mut Vec<Sample>| {
                out[0] = Sample::default();
                cpu.fill(src, d, out);
                (
                    out[0].get(Channel::CpuRunMs),
                    out[0].get(Channel::CpuWaitMs),
                    out[0].get(Channel::CpuThrottled),
                )
            };
        // The first tick is history, not this tick's use.
        assert_eq!(tick(&mut cpu, &mut src, &d, &mut out), (0.0, 0.0, 0.0));
        src.threads.insert(7, ms(530, 52));
        src.periods = (11, 3);
        assert_eq!(tick(&mut cpu, &mut src, &d, &mut out), (30.0, 12.0, 1.0));
        // Two periods, one throttled; a second process joins with its history: not counted.
        d.services[0].pids.push(8);
        src.threads.insert(8, ms(9_000, 9_000));
        src.threads.insert(7, ms(540, 52));
        src.periods = (13, 4);
        assert_eq!(tick(&mut cpu, &mut src, &d, &mut out), (10.0, 0.0, 0.5));
        src.threads.insert(8, ms(9_005, 9_001));
        src.periods = (14, 4);
        assert_eq!(tick(&mut cpu, &mut src, &d, &mut out), (5.0, 1.0, 0.0));
        // A process that exits takes nothing away; no period passed: not throttled.
        src.threads.remove(&8);
        assert_eq!(tick(&mut cpu, &mut src, &d, &mut out), (0.0, 0.0, 0.0));
    }

    /// The host's own files: this test process's threads ran, and its cgroup (if any) reads.
    #[test]
    fn cpu_channels_read_this_process_from_proc() {
        let me = std::process::id();
        let a = ProcCpu.threads(me).expect("this process's schedstat");
        let t0 = std::time::Instant::now();
        let mut x = 0u64;
        while t0.elapsed() < std::time::Duration::from_millis(30) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let b = ProcCpu.threads(me).expect("this process's schedstat");
        assert!(
            b.run_ns >= a.run_ns + 10_000_000,
            "30 ms of spinning shows as run time: {a:?} -> {b:?}"
        );
        assert!(ProcCpu.threads(u32::MAX).is_none(), "no such process");
    }
}
