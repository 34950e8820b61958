//! `seer-agent bench-cluster`: cluster mode at scale. For each host count, a NATS server of
//! its own (`nats-server -js` on a free loopback port, its store in a fresh directory), one
//! `seer-agent central` (this binary, the shipped model unless `--model`), and simulated
//! hosts: every 100 ms each publishes one real-sized message (the agent's wire format, `S`
//! services with channel values that move, local call edges and one remote edge to the next
//! host) to JetStream with a message id and waits for the ack, as an agent's publisher does.
//!
//! Measured, per host count, over `--secs` after a warm-up:
//! - tick to alarm: from the moment the hosts published a tick to the moment the central's
//!   prediction for it arrives on `seer.predictions` (the alarm policy runs on that result in
//!   the same turn, and the respond request goes out right after it);
//! - assembly: the central's own time to build the cluster-wide tick (it says it in each
//!   prediction), and inference time;
//! - the central's CPU (% of one core), and the publishing side's CPU per host (this process:
//!   encoding, publishing, acks; the prediction subscriber included, so an upper bound).
//!
//! Last line: `cluster: hosts100_assembly_p99_ms=A hosts100_tick_to_alarm_p99_ms=B
//! hosts500_tick_to_alarm_p99_ms=C central_cpu_pct=D` (D at 100 hosts).
use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use std::os::unix::fs::DirBuilderExt as _;

use anyhow::{Context, Result, anyhow};
use futures_util::StreamExt as _;
use seer_common::sample::CHANNELS;

use crate::cluster::{
    PREDICTIONS, STREAM,
    wire::{self, HostTick, WireService},
};

#[derive(clap::Args, Clone, Debug)]
pub struct BenchClusterArgs {
    /// Host counts to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [10usize, 100, 500])]
    pub hosts: Vec<usize>,
    /// Services per host.
    #[arg(long, default_value_t = 10)]
    pub services: usize,
    /// Seconds measured per host count (after a 4 s warm-up).
    #[arg(long, default_value_t = 20)]
    pub secs: u64,
    /// The model the central runs (default: the shipped one).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// The ONNX Runtime library (default: as `run` finds it).
    #[arg(long)]
    pub ort_lib: Option<PathBuf>,
    /// The NATS server binary.
    #[arg(long, default_value = "nats-server")]
    pub nats_server: PathBuf,
}

const TICK_MS: u64 = 100;
const WARMUP: Duration = Duration::from_secs(4);
/// Simulated hosts per NATS connection.
const HOSTS_PER_CONN: usize = 50;

/// One prediction as the bench saw it arrive.
struct Seen {
    recv_ms: f64,
    ts_ms: u64,
    assembly_us: u64,
    infer_us: u64,
    services: usize,
}

/// What one host count gave.
struct Point {
    hosts: usize,
    ticks: usize,
    predicted: usize,
    tick_to_alarm_ms: Vec<f64>,
    assembly_ms: Vec<f64>,
    infer_ms: Vec<f64>,
    services: usize,
    central_cpu_pct: f64,
    publish_cpu_pct_per_host: f64,
    publish_p99_ms: f64,
}

fn now_ms_f() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[((s.len() as f64 * q).ceil() as usize).clamp(1, s.len()) - 1]
}

/// CPU seconds of a process (user + system), from /proc.
fn proc_cpu_s(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command's closing parenthesis: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(ticks / hz)
}

fn self_cpu_s() -> f64 {
    // SAFETY: getrusage writes only into the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A child process killed (TERM, then KILL) when dropped.
struct Proc(Child, &'static str);

impl Drop for Proc {
    fn drop(&mut self) {
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(3) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        log::warn!("bench: {} did not stop on SIGTERM; killing it", self.1);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_nats(bin: &Path, dir: &Path, port: u16) -> Result<Proc> {
    let log = std::fs::File::create(dir.join("nats.log"))?;
    let child = Command::new(bin)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir.join("js"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (Debian's nats-server; the set-up installs it)",
                bin.display()
            )
        })?;
    let p = Proc(child, "nats-server");
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if t.elapsed() > Duration::from_secs(10) {
            return Err(anyhow!(
                "nats-server did not listen on 127.0.0.1:{port} within 10 s; see {}",
                dir.join("nats.log").display()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(p)
}

/// Host `h`'s message at slot `slot`: `s` services calling down a chain, the front one
/// calling the next host's back end.
fn host_tick(h: usize, hosts: usize, s: usize, slot: u64, seq: u64) -> HostTick {
    let addr = |h: usize| IpAddr::V4(Ipv4Addr::new(10, (h / 250) as u8, (h % 250) as u8, 1));
    let mut x = (h as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ slot;
    let mut rnd = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % 1000) as f32 / 1000.0
    };
    let services = (0..s as u32)
        .map(|i| {
            let mut values = [0f32; CHANNELS];
            for (c, v) in values.iter_mut().enumerate() {
                // Positive, of the orders the channels have, moving each tick.
                *v = (1.0 + rnd()) * 10f32.powi((c % 4) as i32);
            }
            WireService {
                id: i,
                name: format!("svc{i}"),
                ports: vec![7000 + i as u16],
                values,
            }
        })
        .collect();
    HostTick {
        host: format!("bench-{h}"),
        ts_ms: slot * TICK_MS + 5,
        tick_ms: TICK_MS as u32,
        seq,
        addrs: vec![addr(h)],
        services,
        edges: (1..s as u32).map(|i| (i, i - 1)).collect(),
        remote_edges: if hosts > 1 && s > 0 {
            vec![(s as u32 - 1, SocketAddr::new(addr((h + 1) % hosts), 7000))]
        } else {
            Vec::new()
        },
    }
}

async fn publish_slot(
    js: &[async_nats::jetstream::Context],
    hosts: usize,
    s: usize,
    slot: u64,
    seq: u64,
) -> Result<()> {
    let mut acks = Vec::with_capacity(hosts);
    let mut bytes = Vec::with_capacity(512);
    for h in 0..hosts {
        let t = host_tick(h, hosts, s, slot, seq);
        bytes.clear();
        t.encode(&mut bytes);
        let msg = async_nats::jetstream::message::PublishMessage::build()
            .payload(bytes.clone().into())
            .message_id(format!("bench-{h}.{slot}"));
        let ctx = &js[h / HOSTS_PER_CONN];
        acks.push(
            ctx.send_publish(wire::subject(&t.host), msg)
                .await
                .map_err(|e| anyhow!("publishing: {e}"))?,
        );
    }
    let acks = acks.into_iter().map(std::future::IntoFuture::into_future);
    for r in futures_util::future::join_all(acks).await {
        r.map_err(|e| anyhow!("no ack: {e}"))?;
    }
    Ok(())
}

fn central_cmd(a: &BenchClusterArgs, url: &str, dir: &Path) -> Result<Command> {
    let exe = std::env::current_exe().context("finding this binary")?;
    let mut c = Command::new(exe);
    c.args(["central", "--cluster", url, "--name", "bench"])
        .args(["--metrics-addr", "off", "--tick-ms", &TICK_MS.to_string()]);
    if let Some(m) = &a.model {
        c.arg("--model").arg(m);
    }
    if let Some(l) = &a.ort_lib {
        c.arg("--ort-lib").arg(l);
    }
    c.stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("central.log"))?);
    Ok(c)
}

async fn measure(a: &BenchClusterArgs, hosts: usize, dir: &Path) -> Result<Point> {
    let port = free_port()?;
    let _nats = start_nats(&a.nats_server, dir, port)?;
    let url = format!("nats://127.0.0.1:{port}");
    let mut central = Proc(central_cmd(a, &url, dir)?.spawn()?, "central");
    let pid = central.0.id();

    let mut conns = Vec::new();
    for _ in 0..hosts.div_ceil(HOSTS_PER_CONN) {
        let c = async_nats::connect(&url)
            .await
            .map_err(|e| anyhow!("connecting to {url}: {e}"))?;
        conns.push(async_nats::jetstream::new(c));
    }
    // The central creates the stream; wait for it (or for the central to fail).
    let t = Instant::now();
    while conns[0].get_stream(STREAM).await.is_err() {
        if let Ok(Some(st)) = central.0.try_wait() {
            return Err(anyhow!(
                "central stopped ({st}) before creating {STREAM}; see {}",
                dir.join("central.log").display()
            ));
        }
        if t.elapsed() > Duration::from_secs(20) {
            return Err(anyhow!("no stream {STREAM} after 20 s"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let sub_client = async_nats::connect(&url)
        .await
        .map_err(|e| anyhow!("connecting to {url}: {e}"))?;
    let mut sub = sub_client
        .subscribe(PREDICTIONS)
        .await
        .map_err(|e| anyhow!("subscribing to {PREDICTIONS}: {e}"))?;
    let seen_w = seen.clone();
    let reader = tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            let recv_ms = now_ms_f();
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&m.payload) else {
                continue;
            };
            let u = |k: &str| v[k].as_u64().unwrap_or(0);
            if let Ok(mut s) = seen_w.lock() {
                s.push(Seen {
                    recv_ms,
                    ts_ms: u("ts_ms"),
                    assembly_us: u("assembly_us"),
                    infer_us: u("infer_us"),
                    services: v["services"].as_array().map_or(0, Vec::len),
                });
            }
        }
    });

    let total = WARMUP + Duration::from_secs(a.secs);
    let start = Instant::now();
    let mut published: Vec<(u64, f64)> = Vec::new();
    let mut publish_ms: Vec<f64> = Vec::new();
    let (mut cpu0, mut self0, mut measuring_since) = (None, 0.0, None);
    let mut seq = 0;
    while start.elapsed() < total {
        // The next slot's start, plus 5 ms: all hosts sample together.
        let now = now_ms_f();
        let slot = (now as u64) / TICK_MS + 1;
        let wait = (slot * TICK_MS + 5) as f64 - now;
        tokio::time::sleep(Duration::from_micros((wait.max(0.0) * 1000.0) as u64)).await;
        if measuring_since.is_none() && start.elapsed() >= WARMUP {
            measuring_since = Some(Instant::now());
            cpu0 = proc_cpu_s(pid);
            self0 = self_cpu_s();
        }
        let t0 = now_ms_f();
        publish_slot(&conns, hosts, a.services, slot, seq).await?;
        seq += 1;
        if measuring_since.is_some() {
            publish_ms.push(now_ms_f() - t0);
            published.push((slot, t0));
        }
    }
    let wall = measuring_since.map_or(1.0, |t| t.elapsed().as_secs_f64());
    let central_cpu = match (cpu0, proc_cpu_s(pid)) {
        (Some(a), Some(b)) => (b - a) / wall * 100.0,
        _ => f64::NAN,
    };
    let self_cpu = (self_cpu_s() - self0) / wall * 100.0;
    // The last ticks' predictions.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    reader.abort();
    drop(central);
    let seen = std::mem::take(&mut *seen.lock().map_err(|_| anyhow!("poisoned"))?);
    let mut p = Point {
        hosts,
        ticks: published.len(),
        predicted: 0,
        tick_to_alarm_ms: Vec::new(),
        assembly_ms: Vec::new(),
        infer_ms: Vec::new(),
        services: seen.iter().map(|s| s.services).max().unwrap_or(0),
        central_cpu_pct: central_cpu,
        publish_cpu_pct_per_host: self_cpu / hosts as f64,
        publish_p99_ms: quantile(&publish_ms, 0.99),
    };
    for (slot, t0) in &published {
        let Some(s) = seen.iter().find(|s| s.ts_ms == slot * TICK_MS) else {
            continue;
        };
        p.predicted += 1;
        p.tick_to_alarm_ms.push(s.recv_ms - t0);
        p.assembly_ms.push(s.assembly_us as f64 / 1000.0);
        p.infer_ms.push(s.infer_us as f64 / 1000.0);
    }
    Ok(p)
}

pub fn run(a: &BenchClusterArgs) -> Result<()> {
    if a.hosts.is_empty() || a.services == 0 {
        return Err(anyhow!(
            "give at least one host count and one service per host"
        ));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow!("cannot start the runtime: {e}"))?;
    // A scratch directory of our own (created afresh, 0700), removed at the end.
    let base = std::env::temp_dir().join(format!("seer-bench-cluster.{}", std::process::id()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&base)
        .with_context(|| format!("creating {}", base.display()))?;
    let r = points_for(a, &rt, &base);
    let _ = std::fs::remove_dir_all(&base);
    r
}

fn points_for(a: &BenchClusterArgs, rt: &tokio::runtime::Runtime, base: &Path) -> Result<()> {
    println!(
        "bench-cluster: {} services per host, {} s per point after a {} s warm-up, 100 ms ticks; kernel {}",
        a.services,
        a.secs,
        WARMUP.as_secs(),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "{:>6} {:>8} {:>11} {:>13} {:>13} {:>11} {:>11} {:>10} {:>10} {:>13}",
        "hosts",
        "services",
        "predicted",
        "tick->alarm",
        "tick->alarm",
        "assembly",
        "inference",
        "central",
        "publish",
        "publish/host"
    );
    println!(
        "{:>6} {:>8} {:>11} {:>13} {:>13} {:>11} {:>11} {:>10} {:>10} {:>13}",
        "", "", "", "p50 ms", "p99 ms", "p99 ms", "p99 ms", "CPU %", "p99 ms", "CPU %"
    );
    let mut points = Vec::new();
    for &h in &a.hosts {
        let dir = base.join(format!("h{h}"));
        std::fs::create_dir_all(&dir)?;
        let p = rt
            .block_on(measure(a, h, &dir))
            .with_context(|| format!("{h} hosts"))?;
        println!(
            "{:>6} {:>8} {:>11} {:>13.1} {:>13.1} {:>11.2} {:>11.2} {:>10.1} {:>10.1} {:>13.3}",
            p.hosts,
            p.services,
            format!("{}/{}", p.predicted, p.ticks),
            quantile(&p.tick_to_alarm_ms, 0.5),
            quantile(&p.tick_to_alarm_ms, 0.99),
            quantile(&p.assembly_ms, 0.99),
            quantile(&p.infer_ms, 0.99),
            p.central_cpu_pct,
            p.publish_p99_ms,
            p.publish_cpu_pct_per_host,
        );
        points.push(p);
    }
    let at = |h: usize| points.iter().find(|p| p.hosts == h);
    let f = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.1}"));
    println!(
        "cluster: hosts100_assembly_p99_ms={} hosts100_tick_to_alarm_p99_ms={} hosts500_tick_to_alarm_p99_ms={} central_cpu_pct={}",
        f(at(100).map(|p| quantile(&p.assembly_ms, 0.99))),
        f(at(100).map(|p| quantile(&p.tick_to_alarm_ms, 0.99))),
        f(at(500).map(|p| quantile(&p.tick_to_alarm_ms, 0.99))),
        f(at(100).map(|p| p.central_cpu_pct)),
    );
    Ok(())
}
