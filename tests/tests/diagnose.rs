//! `seer-agent diagnose`: mode selection, bad requests, a service that exits mid-diagnosis, and
//! a CPU hog told apart from a memory-bandwidth hog next to a real memcached.
//!
//! Each memcached runs in a throwaway network namespace (so that its name cannot collide with
//! another memcached on the host), pinned to CPU 0 at nice -19, so that the other processes
//! of a busy build machine do not make it wait for CPU; the hogs run at the same nice, the
//! CPU hog on CPU 0 (it takes half of memcached's CPU), the memory-bandwidth hog on CPU 1.
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

#[test]
fn service_gone_mid_diagnosis_is_an_error_not_a_verdict() {
    require_root!();
    let _s = serial();
    let net = NetPair::new();
    let mut mc = memcached(&net);
    let child = Command::new(agent_bin())
        .args(["diagnose", "memcached", "--json", "--netns", &net.server])
        .args([
            "--window-ms",
            "100",
            "--repeats",
            "10",
            "--budget-ms",
            "10000",
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

/// A CPU hog on memcached's CPU: the culprit waits on the run queue (PMU-free signal), which
/// decides CPU without injecting. A memory-bandwidth hog next to the same memcached (a tiny working
/// set: it is short of nothing) must not be blamed on CPU.
#[test]
fn cpu_hog_and_memory_bandwidth_hog_are_told_apart() {
    require_root!();
    if !two_cpus() {
        return;
    }
    let _s = serial();
    let net = NetPair::new();
    let _mc = memcached(&net);
    let args = [
        "memcached",
        "--json",
        "--repeats",
        "3",
        "--budget-ms",
        "300",
    ];

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
    let cpu = record(&diagnose(&net, &args));
    drop(hog);
    assert_eq!(cpu["resource"], "cpu_int", "CPU hog: {cpu}");
    let wait = cpu["evidence"]["signals"]["runq_wait_ratio"]
        .as_f64()
        .expect("runq_wait_ratio");
    assert!(wait >= 0.25, "CPU hog: run-queue wait {wait}: {cpu}");
    assert!(
        cpu["confidence"].as_f64().expect("confidence") >= 0.6,
        "{cpu}"
    );
    assert_eq!(
        cpu["evidence"]["injected_ms"], 0.0,
        "CPU needs no injection: {cpu}"
    );

    let hog = Proc::spawn({
        let mut c = Command::new("nice");
        c.args([
            "-n",
            "-19",
            "taskset",
            "-c",
            "1",
            "dd",
            "if=/dev/zero",
            "of=/dev/null",
            "bs=64M",
        ]);
        c
    });
    thread::sleep(Duration::from_millis(200));
    let mem = record(&diagnose(&net, &args));
    drop(hog);
    assert!(
        mem["resource"] != "cpu_int" && mem["resource"] != "cpu_fp",
        "memory-bandwidth hog blamed on CPU: {mem}"
    );
    let wait = mem["evidence"]["signals"]["runq_wait_ratio"]
        .as_f64()
        .expect("runq_wait_ratio");
    assert!(
        wait < 0.25,
        "memory-bandwidth hog: run-queue wait {wait}: {mem}"
    );
    let inj = mem["evidence"]["injected_ms"]
        .as_f64()
        .expect("injected_ms");
    assert!(inj > 0.0 && inj <= 300.0, "injected {inj} ms: {mem}");
}
