//! `seer-agent diagnose`: mode selection, bad requests, a service that exits mid-diagnosis, a
//! CPU hog told apart from a memory-bandwidth hog next to a real memcached, and the latency
//! probe speaking redis, HTTP, and finding the protocol of an unknown service.
//!
//! Each memcached runs in a throwaway network namespace (so that its name cannot collide with
//! another memcached on the host), pinned to CPU 0 at nice -19, so that the other processes
//! of a busy build machine do not make it wait for CPU; the CPU hog runs at the same nice on
//! CPU 0 (it takes half of memcached's CPU), the memory-bandwidth hog at nice 0 on CPU 1.
use std::{
    path::Path,
    process::{Command, Output},
    thread,
    time::{Duration, Instant},
};

use seer_tests::*;
use serde_json::Value;

const PORT: &str = "11211";

/// Holds an exclusive lock so that this file's tests, each in its own process under nextest,
/// do not pin memcached and microbenchmarks onto the same CPU at the same time.
struct Serial {
    _lock: std::fs::File,
}

fn serial() -> Serial {
    use std::os::fd::AsRawFd as _;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/tmp/seer-tests-diagnose.lock")
        .expect("open /tmp/seer-tests-diagnose.lock");
    // SAFETY: flock on a file descriptor this function owns; no memory is shared.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock: {}", std::io::Error::last_os_error());
    Serial { _lock: f }
}

/// Waits until something listens on `port` in the server namespace.
fn wait_listen(net: &NetPair, port: &str, p: &Proc, what: &str) {
    let t0 = Instant::now();
    while !sh(&format!("ip netns exec {} ss -ltnH", net.server)).contains(&format!(":{port} ")) {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{what} did not listen on {port} within 5 s: {}",
            p.stderr()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

fn memcached(net: &NetPair) -> Proc {
    let p = Proc::spawn(NetPair::cmd(
        &net.server,
        Path::new("nice"),
        &[
            "-n",
            "-19",
            "taskset",
            "-c",
            "0",
            "memcached",
            "-u",
            "root",
            "-l",
            "127.0.0.1",
            "-p",
            PORT,
            "-t",
            "1",
        ],
    ));
    let t0 = Instant::now();
    while !sh(&format!("ip netns exec {} ss -ltnH", net.server)).contains(&format!(":{PORT}")) {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "memcached did not listen within 5 s (is it installed? apt-get install memcached): {}",
            p.stderr()
        );
        thread::sleep(Duration::from_millis(20));
    }
    p
}

/// `seer-agent diagnose` at nice -19 inside the namespace.
fn diagnose(net: &NetPair, args: &[&str]) -> Output {
    Command::new("nice")
        .args(["-n", "-19"])
        .arg(agent_bin())
        .arg("diagnose")
        .args(args)
        .args(["--netns", &net.server])
        .output()
        .expect("run seer-agent diagnose")
}

fn record(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "diagnose failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "diagnose --json printed no record ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn two_cpus() -> bool {
    let n = thread::available_parallelism().map_or(1, |n| n.get());
    if n < 2 {
        println!("SKIP: needs 2 CPUs (culprit on CPU 0, probe and uncore kernels on CPU 1)");
    }
    n >= 2
}

/// The host says by itself whether it has hardware counters; `perf stat` is the witness.
#[test]
fn host_without_pmu_selects_public_cloud_mode() {
    require_root!();
    let Ok(perf) = Command::new("perf")
        .args(["stat", "-e", "instructions", "true"])
        .output()
    else {
        println!("SKIP: no perf binary to witness whether the PMU works");
        return;
    };
    let _s = serial();
    let net = NetPair::new();
    let _mc = memcached(&net);
    let r = record(&diagnose(
        &net,
        &[
            "memcached",
            "--json",
            "--budget-ms",
            "20",
            "--resources",
            "cpu_int",
        ],
    ));
    // perf exits 0 either way; without a PMU it prints `<not supported>` for the event.
    let err = String::from_utf8_lossy(&perf.stderr);
    let pmu =
        perf.status.success() && !err.contains("not supported") && !err.contains("not counted");
    let want = if pmu { "private" } else { "public_cloud" };
    assert_eq!(r["mode"], want, "perf stat says: {err}\nrecord: {r}");
    if want == "public_cloud" {
        let inj = r["evidence"]["injected_ms"].as_f64().expect("injected_ms");
        assert!(inj <= 20.0, "injected {inj} ms over a 20 ms budget: {r}");
        assert!(
            r["evidence"]["baseline_us"].as_f64().expect("baseline") > 0.0,
            "{r}"
        );
    }
}

#[test]
fn bad_requests_get_clear_errors() {
    require_root!();
    let net = NetPair::new();
    let out = diagnose(&net, &["no-such-service"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no service named \"no-such-service\"") && err.contains("known: none"),
        "{err}"
    );
    for (args, what) in [
        (&["memcached", "--budget-ms", "0"][..], "--budget-ms 0"),
        (
            &["memcached", "--resources", "gpu"][..],
            "unknown resource \"gpu\"",
        ),
        (&["memcached", "--levels", "0,2"][..], "--levels"),
    ] {
        let out = diagnose(&net, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
        assert!(err.contains(what), "{args:?}: {err}");
    }
}

/// `seer-agent llc-readings`: readings and the retention table, or a clear usage error.
#[test]
fn llc_readings_measure_or_say_what_is_wrong() {
    require_root!();
    let out = Command::new(agent_bin())
        .args(["llc-readings", "--cpu", "4096"])
        .output()
        .expect("run llc-readings");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains("CPU 4096 does not exist"), "{err}");
    if !two_cpus() {
        println!("SKIP (the rest): one CPU, nothing to hold beside CPU 0");
        return;
    }
    let out = Command::new(agent_bin())
        .args([
            "llc-readings",
            "--cpu",
            "0",
            "--hold",
            "1",
            "--readings",
            "2",
        ])
        .output()
        .expect("run llc-readings");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.matches("ratio").count(), 2, "two readings: {text}");
    assert!(text.contains("line to CPU 1"), "{text}");
    assert_eq!(text.matches("ns per load").count(), 5, "five waits: {text}");
}

#[test]
fn service_gone_mid_diagnosis_is_an_error_not_a_verdict() {
    require_root!();
    let _s = serial();
    let net = NetPair::new();
    let mut mc = memcached(&net);
    let child = Command::new(agent_bin())
        .args(["diagnose", "memcached", "--json", "--netns", &net.server])
        // Only microbenchmarks (no PMU-free verdict after the quiet windows, which on a busy
        // host may find a CPU shortage in 1 s): ~5 s of bursts, so it is mid-way at 1.5 s.
        .args([
            "--window-ms",
            "100",
            "--repeats",
            "10",
            "--budget-ms",
            "10000",
            "--resources",
            "l2,llc,memory_bandwidth",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn diagnose");
    thread::sleep(Duration::from_millis(1500));
    mc.child.kill().expect("kill memcached");
    mc.child.wait().expect("reap memcached");
    let t0 = Instant::now();
    let out = child.wait_with_output().expect("diagnose output");
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "diagnose hung after its service died"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("went away during the diagnosis"), "{err}");
    assert!(out.stdout.is_empty(), "no record for a dead service");
}

const HOG_ARGS: [&str; 6] = [
    "memcached",
    "--json",
    "--repeats",
    "3",
    "--budget-ms",
    "300",
];

/// A CPU hog on memcached's CPU: the culprit waits on the run queue (PMU-free signal), which
/// decides CPU without injecting.
fn cpu_hog_phase(net: &NetPair) -> Value {
    let args = HOG_ARGS;
    let hog = Proc::spawn({
        let mut c = Command::new("nice");
        c.args([
            "-n",
            "-19",
            "taskset",
            "-c",
            "0",
            "sh",
            "-c",
            "while :; do :; done",
        ]);
        c
    });
    thread::sleep(Duration::from_millis(200));
    let cpu = record(&diagnose(net, &args));
    drop(hog);
    assert_eq!(cpu["resource"], "cpu_int", "CPU hog: {cpu}");
    let reason = cpu["reason"].as_str().expect("reason");
    assert!(reason.contains("run queue"), "CPU hog: {reason}");
    let wait = cpu["evidence"]["signals"]["runq_wait_ratio"]
        .as_f64()
        .expect("runq_wait_ratio");
    assert!(wait >= 0.4, "CPU hog: run-queue wait {wait}: {cpu}");
    assert!(
        cpu["confidence"].as_f64().expect("confidence") >= 0.6,
        "{cpu}"
    );
    assert_eq!(
        cpu["evidence"]["injected_ms"], 0.0,
        "CPU needs no injection: {cpu}"
    );

    cpu
}

#[test]
fn cpu_hog_next_to_memcached_is_cpu_without_injecting() {
    require_root!();
    if !two_cpus() {
        return;
    }
    let _s = serial();
    let net = NetPair::new();
    let _mc = memcached(&net);
    cpu_hog_phase(&net);
}

/// The CPU hog, then a memory-bandwidth hog (the testbed's: 1 MiB memsets streaming through
/// 64 MiB) on the other CPU. The first is CPU, decided from run-queue waits. The second must
/// not be CPU (memcached has its CPU to itself), nor network, disk or memory capacity (the hog
/// touches none of them), the microbenchmarks must have run, and the memory reading must see
/// the hog: DRAM accesses from memcached's CPU slower than from the hog's, where the reader
/// displaces it (1.18-1.34x measured, none of the other hogs above 1.05x; the verdict
/// memory_bandwidth needs 1.15x, the test 1.08x). Five diagnoses under the bandwidth hog, two
/// must see it and not say CPU: the hog's pressure on this VM's memory wavers (a reading now and
/// then sees none of it), and on a shared host someone else's CPU burst on memcached's CPU can
/// make it really wait for a CPU. Whether the hog's pressure reaches memcached's CPU at all is
/// a fact of the host, so an independent witness (the testbed's DRAM walk on CPU 0, beside the
/// hog and alone) decides which claim is checked: where it sees >= 1.10x, the five diagnoses
/// must tell the hog apart as above; where it sees none, seer must not name memory bandwidth
/// nor read a slowdown of 1.15x or more. Both branches assert; neither skips.
/// This binary runs alone under nextest (.config/nextest.toml).
#[test]
fn cpu_hog_and_memory_bandwidth_hog_are_told_apart() {
    require_root!();
    if !two_cpus() {
        return;
    }
    let _s = serial();
    let net = NetPair::new();
    let _mc = memcached(&net);
    let args = HOG_ARGS;
    let cpu = cpu_hog_phase(&net);

    // At nice 0, as a real neighbour runs (alone on CPU 1): at nice -19 its pressure on this
    // VM faded within seconds (DRAM latency from CPU 0 206 -> 164 ns in 6 s; 185-197 ns for 9 s
    // at nice 0; read with a throwaway C version of the memory reading), reasons not found.
    let mut hog = Proc::spawn({
        let mut c = Command::new(target_bin("seer-testbed-svc"));
        c.args(["hog", "--kind", "membw", "--intensity", "1", "--cpus", "1"]);
        c
    });
    {
        use std::io::Write as _;
        let stdin = hog.stdin.as_mut().expect("hog stdin");
        writeln!(stdin, "level 1").expect("start the hog");
    }
    thread::sleep(Duration::from_millis(300));
    let mems: Vec<Value> = (0..5).map(|_| record(&diagnose(&net, &args))).collect();
    // The witness, independent of seer: the testbed's memory walk (a 4 MiB random walk of a
    // 128 MiB buffer: DRAM-bound) on memcached's CPU, with this hog on the other CPU and then
    // without it. Whether a one-core bandwidth hog slows the other vCPU's DRAM accesses is a
    // fact of the host (where the hypervisor put the two vCPUs, what else shares the socket):
    // 1.18-1.34x on the machine of 2026-11-26, none at all (1.00x) on 6.18.44-fc-v1300.
    let with_hog = walk_ns_on_cpu0();
    drop(hog);
    thread::sleep(Duration::from_millis(300));
    let alone = walk_ns_on_cpu0();
    let slowdown = with_hog / alone;
    println!(
        "witness: DRAM walk on CPU 0 {with_hog:.1} ns/line beside the hog, {alone:.1} alone: {slowdown:.2}x"
    );
    // Never blamed on what the hog does not touch.
    for mem in &mems {
        for r in ["cpu_fp", "network", "disk", "memory_capacity"] {
            assert_ne!(
                mem["resource"], r,
                "memory-bandwidth hog blamed on {r}: {mem}"
            );
        }
    }
    // Told apart, and seen by the memory reading, in most diagnoses.
    let ratio = |m: &Value| m["evidence"]["bandwidth"]["ratio"].as_f64();
    let told: Vec<&Value> = mems
        .iter()
        .filter(|m| m["resource"] != cpu["resource"] && ratio(m).is_some_and(|r| r >= 1.08))
        .collect();
    let seen: Vec<String> = mems
        .iter()
        .map(|m| format!("{} {:.2}x", m["resource"], ratio(m).unwrap_or(0.0)))
        .collect();
    if slowdown < 1.10 {
        // No bandwidth pressure reaches memcached's CPU on this host: seer must say what the
        // witness says, i.e. never name memory bandwidth nor read a DRAM slowdown that is not
        // there, in any of the five. (The bandwidth verdict itself is covered where the host
        // gives the pressure, below, and by the verdict's unit tests.)
        for m in &mems {
            assert_ne!(
                m["resource"], "memory_bandwidth",
                "named memory bandwidth where the witness sees none ({slowdown:.2}x): {m}"
            );
            // (A diagnosis decided before the memory reading has none.)
            if let Some(r) = ratio(m) {
                assert!(
                    r < 1.15,
                    "seer reads a {r:.2}x DRAM slowdown where the witness sees {slowdown:.2}x: {m}"
                );
            }
        }
        println!(
            "no bandwidth pressure on this host (witness {slowdown:.2}x): seer agreed in 5 of 5: {seen:?}"
        );
        return;
    }
    assert!(
        told.len() >= 2,
        "not told apart from the CPU hog ({}) in 2 of 5: {seen:?}; {mems:?}",
        cpu["resource"]
    );
    for mem in told {
        let inj = mem["evidence"]["injected_ms"]
            .as_f64()
            .expect("injected_ms");
        assert!(inj > 0.0 && inj <= 300.0, "injected {inj} ms: {mem}");
        let kernels: Vec<&str> = mem["evidence"]["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .filter_map(|s| s["resource"].as_str())
            .collect();
        assert!(
            kernels.contains(&"cpu_int") && kernels.contains(&"l2"),
            "the core kernels ran first: {kernels:?}"
        );
    }
    println!("under the memory-bandwidth hog: {seen:?}");
}

/// The witness of bandwidth pressure on memcached's CPU: ns of CPU time per cache line of the
/// testbed's DRAM-bound memory walk pinned on CPU 0 (median of 3 one-second readings).
fn walk_ns_on_cpu0() -> f64 {
    let o = Command::new(target_bin("seer-testbed-svc"))
        .args(["walk", "--work-kb", "4096", "--buffer-kb", "131072"])
        .args(["--seconds", "3", "--cpus", "0"])
        .output()
        .expect("run seer-testbed-svc walk");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "walk: {text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mut ns: Vec<f64> = text
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("cpu_ns_per_line="))
        .filter_map(|v| v.parse().ok())
        .collect();
    assert_eq!(ns.len(), 3, "three readings: {text}");
    ns.sort_by(f64::total_cmp);
    ns[1]
}

/// The probe speaks redis to redis-server and HTTP to a web server (protocols from the process
/// name and port), asks an unknown service on an unknown port what it speaks (an HTTP server
/// there), and `--protocol connect` times bare connections.
#[test]
fn probe_speaks_redis_and_http_and_asks_unknown_services() {
    require_root!();
    let _s = serial();
    let net = NetPair::new();
    let py = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let redis = Proc::spawn(NetPair::cmd(
        &net.server,
        Path::new("redis-server"),
        &[
            "--bind",
            "127.0.0.1",
            "--port",
            "6379",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
    ));
    wait_listen(
        &net,
        "6379",
        &redis,
        "redis-server (apt-get install redis-server)",
    );
    // The same HTTP server twice: on 8000 its port says HTTP; on 4444 nothing does.
    let web = Proc::spawn(NetPair::cmd(
        &net.server,
        Path::new(&py),
        &["-m", "http.server", "-b", "127.0.0.1", "8000"],
    ));
    wait_listen(&net, "8000", &web, "python3 -m http.server");
    let quick = ["--json", "--budget-ms", "20", "--resources", "cpu_int"];
    let probe = |args: &[&str]| {
        let mut a = args.to_vec();
        a.extend_from_slice(&quick);
        let r = record(&diagnose(&net, &a));
        assert!(
            r["evidence"]["baseline_us"].as_f64().expect("baseline") > 0.0,
            "{r}"
        );
        r["evidence"]["probe"].clone()
    };
    let p = probe(&["redis-server"]);
    assert_eq!(p["protocol"], "redis", "{p}");
    assert_eq!(p["chosen"], "from its name and port", "{p}");
    assert_eq!(p["addr"], "127.0.0.1:6379", "{p}");
    // The service's name is its process name (python3, python3.12, ...): ask ss.
    let ss = sh(&format!(
        "ip netns exec {} ss -ltnpH sport = :8000",
        net.server
    ));
    let name = ss
        .split("((\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("no process on :8000 in {ss:?}"))
        .to_string();
    let name = name.as_str();
    let p = probe(&[name]);
    assert_eq!(p["protocol"], "http", "{p}");
    drop(web);
    let web = Proc::spawn(NetPair::cmd(
        &net.server,
        Path::new(&py),
        &["-m", "http.server", "-b", "127.0.0.1", "4444"],
    ));
    wait_listen(&net, "4444", &web, "python3 -m http.server");
    let p = probe(&[name]);
    assert_eq!(p["protocol"], "http", "{p}");
    assert_eq!(p["chosen"], "by asking", "{p}");
    let p = probe(&[name, "--protocol", "connect"]);
    assert_eq!(p["protocol"], "connect", "{p}");
    assert_eq!(p["chosen"], "given", "{p}");
    let out = diagnose(&net, &[name, "--protocol", "gopher"]);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--protocol \"gopher\""),
        "{out:?}"
    );
}
