//! `cargo xtask soak --minutes M`: the agent in enforce mode, for M minutes, beside a real
//! nginx -> memcached stack under open-loop load, with CPU faults injected at random, the
//! Alertmanager restarted now and then, and the agent itself killed (-9) or stopped (SIGTERM)
//! at random moments and started again on the same store and journal.
//!
//! Checked throughout and at the end (exit status 1 if any fails, with what and where):
//! - RSS and open descriptors flat within each run (the floor of its last third against the
//!   floor of its middle third);
//! - tick time p99 under the tick (100 ms), from the agent's own `seer_agent_tick_seconds`;
//! - no tick lost: every tick a run printed is in the store, but for at most one per kill -9
//!   (the one in flight);
//! - every alert the agent queued reached the webhook at least once (duplicates, which a kill
//!   between delivery and acknowledgement can cause, are counted and printed), none left in the
//!   outbox or refused;
//! - the host left as found: the cgroup's quota, qdiscs and classes (host and namespace),
//!   resctrl groups, no seer program loaded, no journal left.
//!
//! Last line: `soak: PASS ...` or `soak: FAIL ...` with the figures.
use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read as _, Write as _},
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use seer_tests::{NetPair, Proc, agent_bin, in_ns, is_root, loadgen, sh, stack::Stack};

const HTTP: u16 = 8099;
const MC: u16 = 11499;
const AM: u16 = 19098;
const HOOK: u16 = 19099;
const METRICS: u16 = 9466;
const AM_BIN: &str = "/usr/bin/prometheus-alertmanager";

/// xorshift64*: reproducible from `--seed`.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [lo, hi) seconds.
    fn secs(&mut self, lo: f64, hi: f64) -> Duration {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        Duration::from_secs_f64(lo + u * (hi - lo))
    }
}

/// The agent in enforce mode beside a loaded stack, with random faults, Alertmanager restarts
/// and kills, checked throughout (see the module's doc); run by `cargo xtask soak`.
#[derive(clap::Parser)]
#[command(name = "seer-soak")]
struct Args {
    /// How long, in minutes.
    #[arg(long, default_value_t = 2.0)]
    minutes: f64,
    /// Seed of the random schedule (faults, kills, restarts): the same seed, the same schedule.
    #[arg(long, default_value_t = 0x5eed)]
    seed: u64,
}

fn main() {
    let Args { minutes, seed } = <Args as clap::Parser>::parse();
    if !is_root() {
        eprintln!("soak: needs root (namespaces, cgroups, eBPF)");
        std::process::exit(2);
    }
    if !Path::new(AM_BIN).exists() {
        eprintln!("soak: {AM_BIN} is missing: run `cargo xtask setup`");
        std::process::exit(2);
    }
    let cg_base = Path::new("/sys/fs/cgroup/cpu");
    if !cg_base.join("cpu.cfs_quota_us").exists() {
        eprintln!(
            "soak: needs a v1 cpu hierarchy at /sys/fs/cgroup/cpu (the fault is a CFS quota)"
        );
        std::process::exit(2);
    }
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "soak: {minutes} min, seed {seed}, kernel {}, agent {}",
        kernel.trim(),
        agent_bin().display()
    );
    let fail = Soak::new(minutes, seed).run();
    std::process::exit(i32::from(fail));
}

struct Soak {
    minutes: f64,
    rng: Rng,
    net: NetPair,
    dir: PathBuf,
    cg: PathBuf,
    conf: PathBuf,
    db: PathBuf,
    journal: PathBuf,
    failures: Vec<String>,
}

/// One agent run's record.
struct Run {
    killed: bool,
    printed: Vec<u64>,
    rss_kib: Vec<u64>,
    fds: Vec<u64>,
    tick_s: Vec<f64>,
    log: String,
}

impl Soak {
    fn new(minutes: f64, seed: u64) -> Soak {
        let net = NetPair::new();
        let dir = std::env::temp_dir().join(format!("seer-soak-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("soak dir");
        set_mode(&dir, 0o700);
        let cg = PathBuf::from(format!(
            "/sys/fs/cgroup/cpu/seer-soak-{}",
            std::process::id()
        ));
        Soak {
            minutes,
            rng: Rng(seed | 1),
            conf: dir.join("seer.toml"),
            db: dir.join("store/seer.redb"),
            journal: dir.join("run/actions.json"),
            net,
            dir,
            cg,
            failures: Vec::new(),
        }
    }

    fn check(&mut self, ok: bool, what: String) {
        if !ok {
            println!("soak: FAILED CHECK: {what}");
            self.failures.push(what);
        }
    }

    fn run(mut self) -> bool {
        let ns = self.net.server.clone();
        let _stack = Stack::start(&ns, HTTP, MC, 16 * 1024);
        let mc_pid = sh(&format!(
            "pgrep -f 'memcached -u root -l 127.0.0.1 -p {MC}'"
        ))
        .lines()
        .next()
        .expect("memcached pid")
        .trim()
        .to_string();
        std::fs::create_dir_all(&self.cg).expect("cgroup");
        std::fs::write(self.cg.join("cgroup.procs"), &mc_pid).expect("move memcached");
        let before = host_state(&ns, &self.cg);
        std::fs::write(
            &self.conf,
            format!(
                "[[service]]\nname = \"memcached\"\ncomm = \"memcached\"\n\
                 [qos]\nservice = \"nginx\"\np99_ms = 20\nwindow_ms = 1000\n\
                 [respond]\nmode = \"enforce\"\ncooldown_s = 10\nhold_s = 20\njournal = \"{}\"\n\
                 [alerts]\nalertmanager = \"http://127.0.0.1:{AM}\"\n\
                 webhook = \"http://127.0.0.1:{HOOK}/seer\"\nretry_s = 1\n",
                self.journal.display()
            ),
        )
        .expect("config");

        let total = Duration::from_secs_f64(self.minutes * 60.0);
        let t0 = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let hook = Webhook::start(&ns);
        // Open-loop load over the veth for the whole soak and the final run.
        let load_for = total + Duration::from_secs(40);
        let load = in_ns(&self.net.client, move || {
            loadgen::run(&format!("198.51.100.1:{HTTP}"), "/", 600.0, load_for, 32)
        });
        // Faults: memcached's quota cut to 1% of a CPU for a few seconds, now and then.
        let faults = Arc::new(AtomicU64::new(0));
        let fault_thread = {
            let (cg, stop, faults) = (self.cg.clone(), stop.clone(), faults.clone());
            let mut rng = Rng(self.rng.next() | 1);
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    sleep_unless(&stop, rng.secs(8.0, 15.0));
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let _ = std::fs::write(cg.join("cpu.cfs_quota_us"), "1000");
                    faults.fetch_add(1, Ordering::Relaxed);
                    sleep_unless(&stop, rng.secs(3.0, 7.0));
                    let _ = std::fs::write(cg.join("cpu.cfs_quota_us"), "-1");
                }
                let _ = std::fs::write(cg.join("cpu.cfs_quota_us"), "-1");
            })
        };
        let mut am = Alertmanager::new(&ns, &self.dir);
        am.start();
        let mut am_next = Instant::now() + self.rng.secs(30.0, 60.0);
        let mut am_restarts = 0;
        // Runs last a sixth of the soak (20 s to 10 min), so a leak has time to show.
        let run_len = (self.minutes * 10.0).clamp(20.0, 600.0);
        let mut runs = Vec::new();
        while t0.elapsed() < total {
            let len = self.rng.secs(run_len * 0.6, run_len * 1.4);
            let left = total.saturating_sub(t0.elapsed());
            let kill = self.rng.next().is_multiple_of(2);
            let r = self.one_run(len.min(left + Duration::from_secs(1)), kill, |_| {
                if Instant::now() >= am_next {
                    if am.running() {
                        am.stop();
                        am_next = Instant::now() + Duration::from_secs(5);
                    } else {
                        am.start();
                        am_restarts += 1;
                        am_next = Instant::now() + Duration::from_secs(45);
                    }
                }
            });
            report(runs.len() + 1, &r);
            runs.push(r);
        }
        // The end: no more faults, the Alertmanager up, one last run that delivers what is
        // queued and then stops cleanly.
        stop.store(true, Ordering::Relaxed);
        let _ = fault_thread.join();
        if !am.running() {
            am.start();
        }
        let last = self.one_run(Duration::from_secs(20), false, |_| {});
        report(runs.len() + 1, &last);
        runs.push(last);
        let _ = load.join();
        let received = hook.finish();
        am.stop();
        self.judge(
            &runs,
            &received,
            &before,
            faults.load(Ordering::Relaxed),
            am_restarts,
        )
    }

    /// Starts the agent on the soak's store and journal, watches it for `len`, then kills it
    /// (-9) or stops it (TERM). `each_second` runs once a second meanwhile.
    fn one_run(&mut self, len: Duration, kill: bool, mut each_second: impl FnMut(&Run)) -> Run {
        let ns = &self.net.server;
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{ns}"))
            .arg(agent_bin())
            .args(["run", "--json", "--iface", "lo", "--db"])
            .arg(&self.db)
            .arg("--config")
            .arg(&self.conf)
            .args(["--metrics-addr", &format!("127.0.0.1:{METRICS}")])
            .env("RUST_LOG", "info");
        let mut agent = Proc::spawn(cmd);
        let pid = agent.pid();
        let mut r = Run {
            killed: kill,
            printed: Vec::new(),
            rss_kib: Vec::new(),
            fds: Vec::new(),
            tick_s: Vec::new(),
            log: String::new(),
        };
        let t0 = Instant::now();
        while t0.elapsed() < len {
            thread::sleep(Duration::from_secs(1));
            if t0.elapsed() > Duration::from_secs(5) {
                // After a warm-up (the store's first pages, the first diagnosis).
                if let Some((rss, fds)) = rss_and_fds(pid) {
                    r.rss_kib.push(rss);
                    r.fds.push(fds);
                }
                if let Some(t) = metric_in_ns(ns, METRICS, "seer_agent_tick_seconds") {
                    r.tick_s.push(t);
                }
            }
            each_second(&r);
            if agent.child.try_wait().ok().flatten().is_some() {
                self.check(
                    false,
                    format!("the agent exited by itself: {}", agent.stderr()),
                );
                break;
            }
        }
        if kill {
            let _ = agent.child.kill();
            let _ = agent.child.wait();
        } else {
            sh(&format!("kill -TERM {pid}"));
            let t = Instant::now();
            let st = loop {
                if let Ok(Some(st)) = agent.child.try_wait() {
                    break Some(st);
                }
                if t.elapsed() > Duration::from_secs(15) {
                    break None;
                }
                thread::sleep(Duration::from_millis(50));
            };
            let ok = st.is_some_and(|s| s.success());
            self.check(
                ok,
                format!("SIGTERM: exit {st:?} within 15 s; log:\n{}", agent.stderr()),
            );
        }
        thread::sleep(Duration::from_millis(200)); // the reader threads drain the pipes
        r.printed = agent
            .lines
            .lock()
            .expect("lock")
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["ts_ms"].as_u64())
            .collect();
        r.log = agent.stderr();
        r
    }

    fn judge(
        mut self,
        runs: &[Run],
        received: &[String],
        before: &str,
        faults: u64,
        am_restarts: u32,
    ) -> bool {
        // Ticks: every printed tick is stored, but for one per kill.
        let stored: BTreeSet<u64> =
            match seer_store::Store::open(&self.db, seer_store::StoreConfig::default()) {
                Ok(s) => s
                    .range(0, u64::MAX)
                    .map(|it| it.filter_map(Result::ok).map(|t| t.ts_ms).collect())
                    .unwrap_or_default(),
                Err(e) => {
                    self.check(false, format!("opening the soak's store: {e}"));
                    BTreeSet::new()
                }
            };
        let mut lost_total = 0;
        let mut printed_total = 0;
        for (i, r) in runs.iter().enumerate() {
            let lost = r.printed.iter().filter(|t| !stored.contains(t)).count();
            lost_total += lost;
            printed_total += r.printed.len();
            let allowed = usize::from(r.killed);
            self.check(
                lost <= allowed,
                format!(
                    "run {}: {lost} printed tick(s) not in the store ({} allowed)",
                    i + 1,
                    allowed
                ),
            );
            // Flat: the floors of the run's three thirds. A diagnosis' buffers come and go; the
            // first diagnosis of a run leaves the allocator ~20-30 MiB more for good, once, in
            // whichever third it happens (seen in the last third of a 26 s run of the 2-minute
            // soak); a leak raises the floor third after third. So the floor may step up once:
            // it fails when it rises beyond the tolerance from the first third to the middle
            // AND from the middle to the last.
            let third = r.rss_kib.len() / 3;
            if third >= 3 {
                let floor = |s: &[u64]| s.iter().min().copied().unwrap_or(0);
                let (a, first, end) = (
                    floor(&r.rss_kib[..third]),
                    floor(&r.rss_kib[third..2 * third]),
                    floor(&r.rss_kib[r.rss_kib.len() - third..]),
                );
                let rose = |from: u64, to: u64| to > from + from / 10 + 8 * 1024;
                self.check(
                    !(rose(a, first) && rose(first, end)),
                    format!(
                        "run {}: RSS floor rose third after third: {a} -> {first} -> {end} KiB",
                        i + 1
                    ),
                );
                let f0 = r.fds[third..2 * third].iter().min().copied().unwrap_or(0);
                let f1 = r.fds[r.fds.len() - third..]
                    .iter()
                    .min()
                    .copied()
                    .unwrap_or(0);
                self.check(
                    f1 <= f0 + 8,
                    format!("run {}: descriptors grew from {f0} to {f1}", i + 1),
                );
            }
        }
        let mut ticks: Vec<f64> = runs.iter().flat_map(|r| r.tick_s.iter().copied()).collect();
        ticks.sort_by(f64::total_cmp);
        let p99 = ticks
            .get((ticks.len() * 99 / 100).min(ticks.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0);
        let max = ticks.last().copied().unwrap_or(0.0);
        self.check(
            p99 < 0.1,
            format!("tick time p99 {p99:.4} s >= the 100 ms tick"),
        );

        // Alerts: what the runs queued (from their logs) against what the webhook received.
        let mut queued = BTreeSet::new();
        for r in runs {
            for l in r.log.lines() {
                if let Some(rest) = l.split("queued: ").nth(1)
                    && l.contains("] alert ")
                {
                    queued.insert(rest.trim().to_string());
                }
            }
        }
        let mut got: BTreeMap<String, u32> = BTreeMap::new();
        for b in received {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(b) {
                let key = format!(
                    "service={} startsAt={} endsAt={}",
                    v["labels"]["service"].as_str().unwrap_or(""),
                    v["startsAt"].as_str().unwrap_or(""),
                    v["endsAt"].as_str().unwrap_or("")
                );
                *got.entry(key).or_default() += 1;
            }
        }
        let missing: Vec<&String> = queued.iter().filter(|k| !got.contains_key(*k)).collect();
        let dups: u32 = got.values().map(|n| n - 1).sum();
        let (pending, rejected) =
            match seer_store::Store::open(&self.db, seer_store::StoreConfig::default()) {
                Ok(s) => (
                    s.pending_alerts(usize::MAX).map_or(0, |p| p.len()),
                    s.rejected_alerts(usize::MAX).map_or(0, |p| p.len()),
                ),
                Err(_) => (0, 0),
            };
        self.check(
            missing.is_empty(),
            format!(
                "{} queued alert(s) never reached the webhook: {missing:?}",
                missing.len()
            ),
        );
        self.check(
            pending == 0 && rejected == 0,
            format!("{pending} alert(s) left in the outbox, {rejected} refused"),
        );

        // The host as found.
        let after = host_state(&self.net.server, &self.cg);
        self.check(
            after == before,
            format!("the host changed:\n--- before\n{before}\n--- after\n{after}"),
        );
        self.check(
            !self.journal.exists(),
            format!("the journal {} is left", self.journal.display()),
        );
        // The programs this soak's agents attached (their logs name each prog_id), not every
        // seer program on the host: other agents (a testbed's, another test's) may be running.
        let ours: BTreeSet<u32> = runs
            .iter()
            .flat_map(|r| r.log.lines())
            .filter_map(|l| l.split("prog_id=").nth(1))
            .filter_map(|id| id.trim().parse().ok())
            .collect();
        let loaded: BTreeSet<u32> = sh("bpftool prog show 2>/dev/null")
            .lines()
            .filter(|l| l.contains(" name seer_"))
            .filter_map(|l| l.split(':').next()?.trim().parse().ok())
            .collect();
        let progs: Vec<u32> = ours.intersection(&loaded).copied().collect();
        self.check(
            !ours.is_empty() && progs.is_empty(),
            format!(
                "{} of the {} seer programs this soak's agents attached still loaded: {progs:?}",
                progs.len(),
                ours.len()
            ),
        );

        let kills = runs.iter().filter(|r| r.killed).count();
        let rss_max = runs
            .iter()
            .flat_map(|r| r.rss_kib.iter())
            .max()
            .copied()
            .unwrap_or(0);
        let fds_max = runs
            .iter()
            .flat_map(|r| r.fds.iter())
            .max()
            .copied()
            .unwrap_or(0);
        let ok = self.failures.is_empty();
        println!(
            "soak: {} {:.1} min: {} runs ({kills} kill -9, {} SIGTERM), {faults} faults, {am_restarts} Alertmanager restarts; \
             ticks printed {printed_total}, lost {lost_total}; tick p99 {:.1} ms, max {:.1} ms; RSS max {} MiB, fds max {fds_max}; \
             alerts queued {}, received {} ({dups} duplicate), missing {}; host as found: {}",
            if ok { "PASS" } else { "FAIL" },
            self.minutes,
            runs.len(),
            runs.len() - kills,
            p99 * 1000.0,
            max * 1000.0,
            rss_max / 1024,
            queued.len(),
            got.len(),
            missing.len(),
            after == before,
        );
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir(&self.cg);
        !ok
    }
}

fn report(n: usize, r: &Run) {
    println!(
        "soak: run {n} {} after {:.0} s: {} ticks, RSS {}..{} KiB, fds {}..{}",
        if r.killed {
            "killed (-9)"
        } else {
            "stopped (TERM)"
        },
        r.printed.len() as f64 / 10.0,
        r.printed.len(),
        r.rss_kib.iter().min().unwrap_or(&0),
        r.rss_kib.iter().max().unwrap_or(&0),
        r.fds.iter().min().unwrap_or(&0),
        r.fds.iter().max().unwrap_or(&0),
    );
}

/// What the soak must find unchanged: the cgroup's quota, qdiscs and classes on the host and
/// in the namespace, resctrl groups.
fn host_state(ns: &str, cg: &Path) -> String {
    let quota = std::fs::read_to_string(cg.join("cpu.cfs_quota_us")).unwrap_or_default();
    let resctrl: Vec<String> = std::fs::read_dir("/sys/fs/resctrl")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    format!(
        "quota {}\nhost qdiscs:\n{}ns qdiscs:\n{}ns classes:\n{}resctrl: {resctrl:?}",
        quota.trim(),
        sh("tc qdisc show"),
        sh(&format!("ip netns exec {ns} tc qdisc show")),
        sh(&format!("ip netns exec {ns} tc class show dev lo")),
    )
}

fn rss_and_fds(pid: u32) -> Option<(u64, u64)> {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = st
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some((rss, fds))
}

/// One value from the agent's /metrics, fetched from inside its namespace.
fn metric_in_ns(ns: &str, port: u16, name: &str) -> Option<f64> {
    let name = name.to_string();
    in_ns(ns, move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
    })
    .join()
    .ok()
    .flatten()
}

fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let t0 = Instant::now();
    while t0.elapsed() < d && !stop.load(Ordering::Relaxed) {
        thread::sleep(Duration::from_millis(100));
    }
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A webhook receiver in the namespace that answers 200 and keeps every body.
struct Webhook {
    bodies: Arc<Mutex<Vec<String>>>,
    thread: thread::JoinHandle<()>,
}

impl Webhook {
    fn start(ns: &str) -> Webhook {
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let sink = bodies.clone();
        let ready = Arc::new(AtomicBool::new(false));
        let up = ready.clone();
        let thread = in_ns(ns, move || {
            let l = std::net::TcpListener::bind(("127.0.0.1", HOOK)).expect("bind webhook");
            l.set_nonblocking(true).expect("nonblocking");
            up.store(true, Ordering::Relaxed);
            // Runs until `finish`.
            while !STOP_HOOK.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut c, _)) => {
                        let _ = c.set_nonblocking(false);
                        let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                        if let Some(b) = read_request_body(&mut c) {
                            sink.lock().expect("lock").push(b);
                        }
                        let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
                    }
                    Err(_) => thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        while !ready.load(Ordering::Relaxed) {
            thread::sleep(Duration::from_millis(10));
        }
        Webhook { bodies, thread }
    }

    fn finish(self) -> Vec<String> {
        STOP_HOOK.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.bodies.lock().expect("lock").clone()
    }
}

static STOP_HOOK: AtomicBool = AtomicBool::new(false);

/// The body of one HTTP request (Content-Length framing), or None if it never completed.
fn read_request_body(c: &mut std::net::TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = c.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(i) = text.find("\r\n\r\n") {
            let len = text
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .and_then(|v| v.trim().parse::<usize>().ok())
                })
                .unwrap_or(0);
            if buf.len() >= i + 4 + len {
                return Some(text[i + 4..i + 4 + len].to_string());
            }
        }
    }
}

/// The real Alertmanager in the namespace, stopped and started again now and then.
struct Alertmanager {
    ns: String,
    dir: PathBuf,
    proc: Option<Proc>,
}

impl Alertmanager {
    fn new(ns: &str, dir: &Path) -> Alertmanager {
        let conf = dir.join("am.yml");
        std::fs::write(
            &conf,
            "route:\n  receiver: 'null'\nreceivers:\n  - name: 'null'\n",
        )
        .expect("am config");
        Alertmanager {
            ns: ns.to_string(),
            dir: dir.to_path_buf(),
            proc: None,
        }
    }

    fn running(&self) -> bool {
        self.proc.is_some()
    }

    fn start(&mut self) {
        let conf = self.dir.join("am.yml");
        self.proc = Some(Proc::spawn(NetPair::cmd(
            &self.ns,
            Path::new(AM_BIN),
            &[
                &format!("--config.file={}", conf.display()),
                &format!("--storage.path={}", self.dir.join("am").display()),
                &format!("--web.listen-address=127.0.0.1:{AM}"),
                "--cluster.listen-address=",
            ],
        )));
    }

    fn stop(&mut self) {
        self.proc = None; // Proc's drop kills it
    }
}
