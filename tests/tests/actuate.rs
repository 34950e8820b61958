//! Actions on real kernel objects, driven through `seer-agent act`: tc HTB in throwaway network
//! namespaces (a bulk sender and a request/response service share one 50 Mbit/s egress), the
//! journal and undo across a crash, and bad input. resctrl is not tested here: this kernel has
//! none (the agent's unit tests run it against an emulated tree).
use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use seer_tests::{NetPair, agent_bin, in_ns, is_root, listen_in_ns, sh};

/// Two namespaces joined by veth (the shared test helper): server `198.51.100.1` on `sv0`,
/// client `198.51.100.2` on `cv0`.
type Pair = NetPair;

fn act(ns: &str, journal: &Path, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(agent_bin())
        .arg("act")
        .arg("--journal")
        .arg(journal)
        .args(args)
        .output()
        .expect("run seer-agent act")
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "seer-agent act failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A journal path in a fresh directory, removed on drop.
struct JournalDir(PathBuf);

impl JournalDir {
    fn new(name: &str) -> Self {
        let d = std::env::temp_dir().join(format!("seer-act-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        JournalDir(d)
    }

    fn path(&self) -> PathBuf {
        self.0.join("actions.json")
    }
}

impl Drop for JournalDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const BULK_PORT: u16 = 5001;
const API_PORT: u16 = 7000;

/// A bulk sender in `ns` on `addr`: writes as fast as it can to whoever connects.
fn bulk_server(ns: &str, addr: std::net::SocketAddr, stop: Arc<AtomicBool>) {
    let l = listen_in_ns(ns, addr);
    thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { break };
            let stop = stop.clone();
            thread::spawn(move || {
                let buf = vec![0x5au8; 64 * 1024];
                let _ = c.set_write_timeout(Some(Duration::from_secs(2)));
                while !stop.load(Ordering::Relaxed) && c.write_all(&buf).is_ok() {}
            });
        }
    });
}

/// Servers in the server namespace: a bulk sender and a 64-byte request/response service.
fn start_servers(ns: &str, stop: Arc<AtomicBool>) {
    bulk_server(ns, ([198, 51, 100, 1], BULK_PORT).into(), stop.clone());
    let l = listen_in_ns(ns, ([198, 51, 100, 1], API_PORT).into());
    thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { break };
            let stop = stop.clone();
            thread::spawn(move || {
                let _ = c.set_nodelay(true);
                let mut b = [0u8; 64];
                while !stop.load(Ordering::Relaxed) && c.read_exact(&mut b).is_ok() {
                    if c.write_all(&b).is_err() {
                        break;
                    }
                }
            });
        }
    });
}

struct Phase {
    p50_ms: f64,
    p99_ms: f64,
    bulk_mbit: f64,
}

/// For `secs`: `bulk_conns` bulk readers and one request every 5 ms on the API; bulk
/// throughput counted after the first second (slow start), latency over the whole phase.
fn phase(ns: &str, secs: u64, bulk_conns: usize) -> Phase {
    let stop = Arc::new(AtomicBool::new(false));
    let bytes = Arc::new(AtomicU64::new(0));
    let counting = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..bulk_conns {
        let (stop, bytes, counting) = (stop.clone(), bytes.clone(), counting.clone());
        readers.push(in_ns(ns, move || {
            let mut c = TcpStream::connect(("198.51.100.1", BULK_PORT)).expect("connect bulk");
            let _ = c.set_read_timeout(Some(Duration::from_millis(200)));
            let mut b = vec![0u8; 256 * 1024];
            while !stop.load(Ordering::Relaxed) {
                if let Ok(n) = c.read(&mut b) {
                    if n == 0 {
                        break;
                    }
                    if counting.load(Ordering::Relaxed) {
                        bytes.fetch_add(n as u64, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let api = in_ns(ns, move || {
        let mut c = TcpStream::connect(("198.51.100.1", API_PORT)).expect("connect api");
        c.set_nodelay(true).expect("nodelay");
        let mut rtts = Vec::new();
        let t0 = Instant::now();
        let mut b = [7u8; 64];
        while t0.elapsed() < Duration::from_secs(secs) {
            let t = Instant::now();
            c.write_all(&b).expect("api write");
            c.read_exact(&mut b).expect("api read");
            rtts.push(t.elapsed().as_secs_f64() * 1e3);
            thread::sleep(Duration::from_millis(5));
        }
        rtts
    });
    thread::sleep(Duration::from_secs(1));
    counting.store(true, Ordering::Relaxed);
    let t_count = Instant::now();
    let mut rtts = api.join().expect("api client");
    let counted = t_count.elapsed().as_secs_f64();
    counting.store(false, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().expect("bulk reader");
    }
    rtts.sort_by(f64::total_cmp);
    let pct = |q: f64| rtts[((rtts.len() as f64 * q) as usize).min(rtts.len() - 1)];
    Phase {
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        bulk_mbit: bytes.load(Ordering::Relaxed) as f64 * 8.0 / counted / 1e6,
    }
}

#[test]
fn htb_protects_the_latency_service_and_caps_bulk_at_its_rate() {
    if !is_root() {
        println!("SKIP: needs root (network namespaces, tc)");
        return;
    }
    let p = Pair::new();
    let jd = JournalDir::new("htb");
    let j = jd.path();
    let stop = Arc::new(AtomicBool::new(false));
    start_servers(&p.server, stop.clone());

    // The bottleneck without seer: the server's 50 Mbit/s egress, one FIFO (a TBF at the
    // link rate with 200 ms of buffer, like a NIC with a deep queue).
    sh(&format!(
        "ip netns exec {} tc qdisc add dev sv0 root tbf rate 50mbit burst 16kb latency 200ms",
        p.server
    ));
    let quiet = phase(&p.client, 2, 0);
    let fifo = phase(&p.client, 4, 4);
    sh(&format!(
        "ip netns exec {} tc qdisc del dev sv0 root",
        p.server
    ));

    // seer's HTB on the same 50 Mbit/s: bulk capped at 20, the API guaranteed 10 and first in
    // line for spare bandwidth.
    let out = ok(&act(
        &p.server,
        &j,
        &[
            "htb",
            "--iface",
            "sv0",
            "--link-mbit",
            "50",
            "--class",
            &format!("bulk:{BULK_PORT}:20:20:7"),
            "--class",
            &format!("api:{API_PORT}:10:50:0"),
        ],
    ));
    assert!(out.contains("htb installed on sv0"), "{out}");
    // Independent witness: what the kernel holds.
    let classes = sh(&format!("ip netns exec {} tc class show dev sv0", p.server));
    assert!(
        classes.contains("5ee:10") && classes.contains("rate 20Mbit ceil 20Mbit"),
        "{classes}"
    );
    let shaped = phase(&p.client, 4, 4);
    let stats = sh(&format!(
        "ip netns exec {} tc -s class show dev sv0 classid 5ee:10",
        p.server
    ));

    println!(
        "unloaded p50/p99 {:.2}/{:.2} ms; FIFO under bulk p50/p99 {:.2}/{:.2} ms (bulk {:.1} Mbit/s); \
         HTB p50/p99 {:.2}/{:.2} ms, bulk goodput {:.1} Mbit/s (class rate 20)\n{stats}",
        quiet.p50_ms,
        quiet.p99_ms,
        fifo.p50_ms,
        fifo.p99_ms,
        fifo.bulk_mbit,
        shaped.p50_ms,
        shaped.p99_ms,
        shaped.bulk_mbit
    );
    assert!(
        fifo.p99_ms > 20.0 && fifo.p99_ms > 5.0 * quiet.p99_ms.max(1.0),
        "without HTB the API's p99 suffers: {:.2} ms vs {:.2} unloaded",
        fifo.p99_ms,
        quiet.p99_ms
    );
    assert!(
        shaped.p99_ms < fifo.p99_ms / 4.0 && shaped.p99_ms < 15.0,
        "HTB protects the API: p99 {:.2} ms (FIFO {:.2})",
        shaped.p99_ms,
        fifo.p99_ms
    );
    assert!(
        (shaped.bulk_mbit - 20.0).abs() <= 2.0,
        "capped class within 10% of 20 Mbit/s: {:.2}",
        shaped.bulk_mbit
    );

    // Undo: the kernel's default qdisc is back and the journal is gone.
    let out = ok(&act(&p.server, &j, &["undo"]));
    assert!(out.contains("1 restored"), "{out}");
    let q = sh(&format!("ip netns exec {} tc qdisc show dev sv0", p.server));
    assert!(q.contains("noqueue") && !q.contains("htb"), "{q}");
    assert!(!j.exists());
    stop.store(true, Ordering::Relaxed);
}

#[test]
fn a_crashed_run_is_undone_by_the_next_one() {
    if !is_root() {
        println!("SKIP: needs root (network namespaces, tc)");
        return;
    }
    let p = Pair::new();
    let jd = JournalDir::new("crash");
    let j = jd.path();
    ok(&act(
        &p.server,
        &j,
        &[
            "htb",
            "--iface",
            "sv0",
            "--link-mbit",
            "100",
            "--class",
            "a:80:10:100",
        ],
    ));
    // The process that installed it is gone (as after kill -9): the qdisc and journal remain.
    assert!(sh(&format!("ip netns exec {} tc qdisc show dev sv0", p.server)).contains("htb 5ee:"));
    assert!(j.exists());
    // The next run (any act command) undoes it first.
    let o = act(
        &p.server,
        &j,
        &[
            "htb",
            "--iface",
            "sv0",
            "--link-mbit",
            "100",
            "--class",
            "b:81:10:100",
        ],
    );
    let out = ok(&o);
    assert!(
        out.contains("undid what a previous run left: 1 restored"),
        "{out}"
    );
    let classes = sh(&format!("ip netns exec {} tc class show dev sv0", p.server));
    assert!(
        classes.contains("5ee:10") && classes.contains("rate 10Mbit"),
        "{classes}"
    );
    let out = ok(&act(&p.server, &j, &["undo"]));
    assert!(out.contains("1 restored"), "{out}");
    assert!(!sh(&format!("ip netns exec {} tc qdisc show dev sv0", p.server)).contains("htb"));
}

#[test]
fn bad_input_gives_clear_errors_and_changes_nothing() {
    if !is_root() {
        println!("SKIP: needs root (network namespaces, tc)");
        return;
    }
    let p = Pair::new();
    let jd = JournalDir::new("bad");
    let j = jd.path();
    // An interface that does not exist.
    let o = act(
        &p.server,
        &j,
        &[
            "htb",
            "--iface",
            "nope0",
            "--link-mbit",
            "100",
            "--class",
            "a:80:10:100",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("interface nope0 does not exist"),
        "{err}"
    );
    // A root qdisc someone else configured is left alone.
    sh(&format!(
        "ip netns exec {} tc qdisc add dev sv0 root tbf rate 10mbit burst 16kb latency 50ms",
        p.server
    ));
    let o = act(
        &p.server,
        &j,
        &[
            "htb",
            "--iface",
            "sv0",
            "--link-mbit",
            "100",
            "--class",
            "a:80:10:100",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("tbf root qdisc that seer did not install"),
        "{err}"
    );
    assert!(sh(&format!("ip netns exec {} tc qdisc show dev sv0", p.server)).contains("tbf"));
    // An impossible plan.
    let o = act(
        &p.server,
        &j,
        &[
            "htb",
            "--iface",
            "sv0",
            "--link-mbit",
            "10",
            "--class",
            "a:80:20:20",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("rate"), "{err}");
    assert!(!j.exists(), "nothing journaled");
    // Cache actions on a host without resctrl: a clear state, no crash.
    let o = act(&p.server, &j, &["cache", "--service", "db", "--ways", "2"]);
    let err = String::from_utf8_lossy(&o.stderr);
    if Path::new("/sys/fs/resctrl/info").exists() {
        println!("SKIP (cache part): this host has resctrl");
    } else {
        assert!(
            !o.status.success() && err.contains("CAT/MBA unavailable"),
            "{err}"
        );
    }
}

/// A fresh v1 cpu cgroup `seer-NAME-PID`; None (with a printed SKIP) when not root or the
/// host has no v1 cpu hierarchy.
fn fresh_v1_cpu_cgroup(name: &str) -> Option<PathBuf> {
    if !is_root() || !Path::new("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").exists() {
        println!("SKIP: needs root and a v1 cpu hierarchy at /sys/fs/cgroup/cpu");
        return None;
    }
    let cg = PathBuf::from(format!(
        "/sys/fs/cgroup/cpu/seer-{name}-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&cg).expect("mkdir cgroup");
    Some(cg)
}

/// A `sleep 30` in a fresh v1 cpu cgroup `seer-NAME-PID`; None (with a printed SKIP) when
/// not root or the host has no v1 cpu hierarchy.
fn sleeper_in_v1_cpu_cgroup(name: &str) -> Option<(PathBuf, std::process::Child)> {
    let cg = fresh_v1_cpu_cgroup(name)?;
    let child = Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("spawn sleep");
    std::fs::write(cg.join("tasks"), child.id().to_string()).expect("move into cgroup");
    Some((cg, child))
}

#[test]
fn cpu_quota_on_a_real_service_and_undo_after_it_exited() {
    let Some((cg, mut child)) = sleeper_in_v1_cpu_cgroup("act") else {
        return;
    };
    let jd = JournalDir::new("cpu");
    let j = jd.path();
    let pid = child.id().to_string();
    let out = ok(&Command::new(agent_bin())
        .args(["act", "--journal"])
        .arg(&j)
        .args([
            "cpu",
            "--service",
            "sleeper",
            "--pid",
            &pid,
            "--quota-pct",
            "30",
            "--weight",
            "50",
        ])
        .output()
        .expect("act cpu"));
    assert!(out.contains("applied"), "{out}");
    let read = |f: &str| {
        std::fs::read_to_string(cg.join(f))
            .expect("read knob")
            .trim()
            .to_string()
    };
    assert_eq!(
        (read("cpu.cfs_quota_us"), read("cpu.shares")),
        ("30000".into(), "512".into())
    );
    // The service exits and its cgroup goes away while the action is in effect.
    let _ = child.kill();
    let _ = child.wait();
    std::fs::remove_dir(&cg).expect("rmdir cgroup");
    let o = Command::new(agent_bin())
        .args(["act", "--journal"])
        .arg(&j)
        .arg("undo")
        .output()
        .expect("undo");
    let out = ok(&o);
    assert!(
        out.contains("0 restored, 3 already gone, 0 failed"),
        "{out}"
    );
    assert!(!j.exists());
}

#[test]
fn respond_enforces_or_only_recommends() {
    let Some((cg, mut child)) = sleeper_in_v1_cpu_cgroup("respond") else {
        return;
    };
    // The service has a 1-CPU quota: a step is percent of what it has.
    std::fs::write(cg.join("cpu.cfs_quota_us"), "100000").expect("quota");
    let jd = JournalDir::new("respond");
    let j = jd.path();
    let target = format!("api={}", child.id());
    let respond = |mode: &str| {
        let o = Command::new(agent_bin())
            .args(["act", "--journal"])
            .arg(&j)
            .args([
                "respond",
                "--culprit",
                "api",
                "--resource",
                "cpu",
                "--mode",
                mode,
            ])
            .args(["--target", &target])
            .output()
            .expect("act respond");
        ok(&o)
    };
    let quota = || {
        std::fs::read_to_string(cg.join("cpu.cfs_quota_us"))
            .expect("quota")
            .trim()
            .to_string()
    };
    let out = respond("recommend");
    assert!(
        out.contains(r#""mode":"recommend""#)
            && out.contains(r#""level":125"#)
            && out.contains(r#""outcome":"recommended""#),
        "{out}"
    );
    assert_eq!(quota(), "100000", "recommend changes nothing");
    let out = respond("enforce");
    assert!(
        out.contains(r#""outcome":"applied""#)
            && out.contains("raises api's CPU quota from 1.0 to 1.25 CPUs"),
        "{out}"
    );
    assert_eq!(quota(), "125000", "125% of its 1-CPU quota");
    let out = ok(&Command::new(agent_bin())
        .args(["act", "--journal"])
        .arg(&j)
        .arg("undo")
        .output()
        .expect("undo"));
    assert!(out.contains("2 restored"), "{out}");
    assert_eq!(quota(), "100000");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir(&cg);
}

/// Busy loops (`sh -c 'while :; do :; done'`), or a sleeper, in a fresh v1 cpu cgroup
/// `seer-NAME-PID` with no quota; on drop (a failed assert included) the processes are killed
/// and the cgroup removed.
struct Burners {
    cg: PathBuf,
    kids: Vec<std::process::Child>,
}

impl Burners {
    /// `n` busy loops; None (with a printed SKIP) when not root or the host has no v1 cpu
    /// hierarchy.
    fn new(name: &str, n: usize) -> Option<Self> {
        Self::spawn(name, n, &["sh", "-c", "while :; do :; done"])
    }

    /// One `sleep 60`.
    fn sleeping(name: &str) -> Option<Self> {
        Self::spawn(name, 1, &["sleep", "60"])
    }

    fn spawn(name: &str, n: usize, cmd: &[&str]) -> Option<Self> {
        let cg = fresh_v1_cpu_cgroup(name)?;
        let mut b = Burners {
            cg,
            kids: Vec::new(),
        };
        for _ in 0..n {
            let c = Command::new(cmd[0]).args(&cmd[1..]).spawn().expect("spawn");
            let pid = c.id();
            b.kids.push(c);
            std::fs::write(b.cg.join("cgroup.procs"), pid.to_string()).expect("move into cgroup");
        }
        Some(b)
    }

    fn pid(&self) -> u32 {
        self.kids[0].id()
    }

    fn knob(&self, f: &str) -> String {
        std::fs::read_to_string(self.cg.join(f))
            .expect("read knob")
            .trim()
            .to_string()
    }
}

impl Drop for Burners {
    fn drop(&mut self) {
        for c in &mut self.kids {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Ok(t) = std::fs::read_to_string(self.cg.join("cgroup.procs")) {
            for pid in t.lines() {
                let _ = std::fs::write("/sys/fs/cgroup/cpu/cgroup.procs", pid);
            }
        }
        let _ = std::fs::remove_dir(&self.cg);
    }
}

/// Issue 14 finding 4, as reproduced: two processes burning two CPUs in a v1 cpu cgroup with no
/// quota; the CPU step for them as culprit wrote `cpu.cfs_quota_us = 125000` (1.25 CPUs): the
/// "raise" cut them from 2 CPUs. There is no quota to raise: nothing is written, and the outcome
/// says so.
#[test]
fn respond_does_not_cut_an_unlimited_culprit_below_what_it_uses() {
    let Some(burn) = Burners::new("burn", 2) else {
        return;
    };
    assert_eq!(burn.knob("cpu.cfs_quota_us"), "-1", "a fresh cgroup");
    let jd = JournalDir::new("burn");
    let j = jd.path();
    thread::sleep(Duration::from_millis(300));
    let out = ok(&Command::new(agent_bin())
        .args(["act", "--journal"])
        .arg(&j)
        .args([
            "respond",
            "--culprit",
            "burn",
            "--resource",
            "cpu",
            "--mode",
            "enforce",
            "--target",
            &format!("burn={}", burn.pid()),
        ])
        .output()
        .expect("act respond"));
    let (q, p) = (
        burn.knob("cpu.cfs_quota_us"),
        burn.knob("cpu.cfs_period_us"),
    );
    let cpus = q.parse::<f64>().unwrap_or(-1.0) / p.parse::<f64>().unwrap_or(1.0);
    assert!(
        q == "-1" || cpus >= 2.0,
        "two processes burning two CPUs with no quota: the raise cut them to cpu.cfs_quota_us = {q} (period {p}, {cpus:.2} CPUs)\n{out}"
    );
    assert_eq!(q, "-1", "no quota to raise: none written\n{out}");
    assert!(
        out.contains(r#""outcome":"unchanged""#)
            && out.contains("burn has no CPU quota (unlimited): nothing to raise"),
        "the outcome says why: {out}"
    );
    assert!(!j.exists(), "nothing changed, nothing journaled");
}

/// The culprit has no quota (nothing to raise), so the step goes to the antagonist at once:
/// two busy loops with no quota are cut to 75% of what they used, said in the outcome; undo
/// lifts the cap (`-1` again).
#[test]
fn respond_cuts_an_unlimited_antagonist_from_what_it_uses_and_undo_lifts_it() {
    let Some(api) = Burners::sleeping("api") else {
        return;
    };
    let Some(burn) = Burners::new("cut", 2) else {
        return;
    };
    let jd = JournalDir::new("cut");
    let j = jd.path();
    thread::sleep(Duration::from_millis(300));
    let out = ok(&Command::new(agent_bin())
        .args(["act", "--journal"])
        .arg(&j)
        .args([
            "respond",
            "--culprit",
            "api",
            "--resource",
            "cpu",
            "--antagonist",
            "burn",
            "--mode",
            "enforce",
            "--target",
            &format!("api={}", api.pid()),
            "--target",
            &format!("burn={}", burn.pid()),
        ])
        .output()
        .expect("act respond"));
    assert!(
        out.contains("api has no CPU quota (unlimited): nothing to raise"),
        "{out}"
    );
    assert_eq!(api.knob("cpu.cfs_quota_us"), "-1", "{out}");
    let num = |s: &str| s.parse::<f64>().unwrap_or(f64::NAN);
    let quota = num(&burn.knob("cpu.cfs_quota_us")) / num(&burn.knob("cpu.cfs_period_us"));
    // "cuts burn from 1.9 to 1.43 CPUs (75% of the 1.9 CPUs it used with no quota): ..."
    let from = out
        .split_once("cuts burn from ")
        .and_then(|(_, r)| r.split_once(' '))
        .map_or(f64::NAN, |(n, _)| num(n));
    println!("burn used {from} CPUs, capped at {quota:.3}\n{out}");
    assert!(
        from >= 0.1 && (quota - 0.75 * from).abs() < 0.02,
        "75% of what it used ({from}): quota {quota:.3} CPUs\n{out}"
    );
    let out = ok(&Command::new(agent_bin())
        .args(["act", "--journal"])
        .arg(&j)
        .arg("undo")
        .output()
        .expect("undo"));
    assert!(out.contains("2 restored"), "{out}");
    assert_eq!(burn.knob("cpu.cfs_quota_us"), "-1", "the exact old value");
}

/// The same HTB classifies IPv6: a bulk sender on an IPv6 address of the veth, capped at its
/// class's 20 Mbit/s, measured at the receiver.
#[test]
fn htb_caps_ipv6_traffic_too() {
    if !is_root() {
        println!("SKIP: needs root (network namespaces, tc)");
        return;
    }
    let p = Pair::new();
    let jd = JournalDir::new("htb6");
    let j = jd.path();
    // Documentation prefix (RFC 3849), inside our own namespaces only.
    sh(&format!(
        "set -e; ip -n {s} addr add 2001:db8:5ee::1/64 dev sv0 nodad; \
         ip -n {c} addr add 2001:db8:5ee::2/64 dev cv0 nodad",
        s = p.server,
        c = p.client
    ));
    let stop = Arc::new(AtomicBool::new(false));
    bulk_server(
        &p.server,
        "[2001:db8:5ee::1]:5006".parse().expect("addr"),
        stop.clone(),
    );
    let out = ok(&act(
        &p.server,
        &j,
        &[
            "htb",
            "--iface",
            "sv0",
            "--link-mbit",
            "1000",
            "--class",
            "bulk6:5006:20:20:7",
        ],
    ));
    assert!(out.contains("htb installed on sv0"), "{out}");
    let filters = sh(&format!(
        "ip netns exec {} tc filter show dev sv0",
        p.server
    ));
    assert!(filters.contains("ipv6"), "an IPv6 filter: {filters}");
    let mbit = in_ns(&p.client, || {
        let mut c = TcpStream::connect("[2001:db8:5ee::1]:5006").expect("connect v6 bulk");
        let _ = c.set_read_timeout(Some(Duration::from_millis(500)));
        let mut b = vec![0u8; 256 * 1024];
        let t0 = Instant::now();
        let mut n = 0u64;
        let mut t_count = None;
        while t0.elapsed() < Duration::from_secs(4) {
            if let Ok(k) = c.read(&mut b) {
                n += k as u64;
            }
            // Count after the first second (slow start, HTB's burst).
            if t_count.is_none() && t0.elapsed() >= Duration::from_secs(1) {
                t_count = Some((Instant::now(), n));
            }
        }
        let (t, n0) = t_count.expect("read for 4 s");
        (n - n0) as f64 * 8.0 / t.elapsed().as_secs_f64() / 1e6
    })
    .join()
    .expect("v6 reader");
    stop.store(true, Ordering::Relaxed);
    println!("IPv6 bulk through the 20 Mbit/s class: {mbit:.1} Mbit/s");
    assert!(
        (mbit - 20.0).abs() <= 2.0,
        "IPv6 class within 10% of 20 Mbit/s: {mbit:.2}"
    );
    let out = ok(&act(&p.server, &j, &["undo"]));
    assert!(out.contains("1 restored"), "{out}");
}
