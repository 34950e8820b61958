//! The testbed end to end with real processes: nginx, seer-testbed-svc, memcached and redis in
//! network namespaces and cgroups, open-loop load, a CPU-quota fault. Needs root; otherwise each
//! test prints `SKIP:` and why. Runs serially (one testbed at a time on a 2-core machine).
use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
    time::{Duration, Instant},
};

use seer_testbed::{
    cmd::is_root,
    run::{RunOptions, Summary, run},
    scenario::Scenario,
    testbed::{Bins, leftovers},
};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const SMALL: &str = include_str!("../scenarios/small.toml");
/// Duration of the judged load in the two run tests.
const SECS: f64 = 16.0;

fn bins() -> Bins {
    Bins {
        svc: PathBuf::from(env!("CARGO_BIN_EXE_seer-testbed-svc")),
        load: PathBuf::from(env!("CARGO_BIN_EXE_seer-testbed-load")),
    }
}

fn skip_unless_root() -> bool {
    if is_root() {
        return false;
    }
    println!("SKIP: needs root (network namespaces, cgroups, tc)");
    true
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("seer-testbed-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn run_scenario(name: &str, text: &str) -> (Summary, PathBuf) {
    run_scenario_with(name, text, None)
}

/// The agent binary of this workspace (`cargo build --bins`, which `cargo xtask test` runs).
fn agent_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>");
    let p = dir.join("seer-agent");
    assert!(
        p.exists(),
        "{} not built: run `cargo build --bins`",
        p.display()
    );
    p
}

fn run_scenario_with(name: &str, text: &str, agent: Option<PathBuf>) -> (Summary, PathBuf) {
    let dir = tmp(name);
    let path = dir.join("scenario.toml");
    std::fs::write(&path, text).expect("write scenario");
    let sc = Scenario::load(&path).unwrap_or_else(|e| panic!("scenario: {e}"));
    let out = dir.join("out");
    let opts = RunOptions {
        duration_s: SECS,
        out: out.clone(),
        agent_bin: agent,
        agent_args: Vec::new(),
    };
    let t0 = Instant::now();
    let s = run(&sc, &path, &opts, &bins()).unwrap_or_else(|e| panic!("run {name}: {e}"));
    println!(
        "{name}: {:.1}s wall, summary {s:?}",
        t0.elapsed().as_secs_f64()
    );
    assert_nothing_left(name);
    (s, out)
}

fn assert_nothing_left(when: &str) {
    let left = leftovers().expect("leftovers");
    assert!(left.is_empty(), "after {when}, left behind: {left:?}");
}

#[test]
fn no_fault_at_nominal_load_has_no_violations() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if skip_unless_root() {
        return;
    }
    // With the agent in every host: its traces come out as datasets next to the ground truth.
    let (s, out) = run_scenario_with("nofault", SMALL, Some(agent_bin()));
    let topo: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("topology.json")).expect("topology"),
    )
    .expect("json");
    let mut want: Vec<String> = topo["services"]
        .as_array()
        .expect("services")
        .iter()
        .filter_map(|s| s["name"].as_str().map(str::to_string))
        .collect();
    let mut seen = Vec::new();
    for h in topo["hosts"].as_array().expect("hosts") {
        let host = h["name"].as_str().expect("host name");
        let m: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.join(format!("agent-{host}/manifest.json")))
                .unwrap_or_else(|e| panic!("agent-{host}/manifest.json: {e}")),
        )
        .expect("manifest json");
        assert!(
            m["rows"].as_u64().unwrap_or(0) > 0,
            "agent on {host} recorded nothing: {m}"
        );
        seen.extend(
            m["services"]
                .as_array()
                .expect("services")
                .iter()
                .filter_map(|s| s["name"].as_str().map(str::to_string)),
        );
    }
    want.sort();
    seen.sort();
    assert_eq!(
        seen, want,
        "the agents name every service as the scenario does"
    );
    assert!(
        s.requests as f64 > 0.9 * 150.0 * SECS,
        "too few requests: {s:?}"
    );
    assert_eq!(s.failed, 0, "{s:?}");
    // "Close to none": a busy 2-core machine may stall the tail for a moment.
    assert!(s.violation_s <= 1.0, "violations without a fault: {s:?}");
    for f in [
        "requests.csv",
        "violations.json",
        "violations.csv",
        "faults.json",
        "windows.csv",
        "summary.json",
    ] {
        assert!(out.join(f).is_file(), "{f} missing in {}", out.display());
    }
    let cores = s.testbed_cpu_cores.expect("cpu accounting");
    assert!(cores < 1.5, "testbed used {cores:.2} cores at nominal load");
}

#[test]
fn cpu_quota_fault_causes_attributed_violations() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if skip_unless_root() {
        return;
    }
    let fault = "\n[[fault]]\nkind = \"cpu_quota\"\nservice = \"timeline\"\nstart_s = 5\nduration_s = 5\nintensity = 0.01\n";
    let (s, out) = run_scenario("quota", &format!("{SMALL}{fault}"));
    assert!(s.violations >= 1, "no violation under the fault: {s:?}");
    let vs: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("violations.json")).expect("violations.json"),
    )
    .expect("json");
    let first = &vs[0];
    assert_eq!(first["initiator"], "timeline", "{first}");
    assert_eq!(first["fault_kind"], "cpu_quota", "{first}");
    assert_eq!(first["onset"], "step", "{first}");
    let lead = first["lead_ms"].as_i64().expect("lead_ms");
    assert!(
        (0..=3000).contains(&lead),
        "violation {lead} ms after the fault: {first}"
    );
    assert_eq!(s.unattributed_violations, 0, "{vs}");
    let faults: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("faults.json")).expect("faults.json"),
    )
    .expect("json");
    assert!(faults[0]["error"].is_null(), "{faults}");
    assert!(faults[0]["applied_unix_ms"].as_u64() > Some(0), "{faults}");
}

fn testbed_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_seer-testbed"))
}

struct DownOnDrop;

impl Drop for DownOnDrop {
    fn drop(&mut self) {
        let _ = Command::new(testbed_bin()).arg("down").output();
    }
}

#[test]
fn up_serves_then_down_leaves_nothing() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if skip_unless_root() {
        return;
    }
    let dir = tmp("up");
    let path = dir.join("small.toml");
    std::fs::write(&path, SMALL).expect("write");
    let up = Command::new(testbed_bin())
        .args(["up", "--scenario"])
        .arg(&path)
        .output()
        .expect("seer-testbed up");
    let text = String::from_utf8_lossy(&up.stdout).into_owned();
    assert!(
        up.status.success(),
        "up failed: {text} {}",
        String::from_utf8_lossy(&up.stderr)
    );
    // The application answers a request from the client namespace (nginx -> home -> ...).
    // `down` runs even if an assertion below fails.
    let _down = DownOnDrop;
    let ns = text
        .split_whitespace()
        .map(|w| w.trim_end_matches(';'))
        .find(|w| w.starts_with("seer-tb-") && w.ends_with(".load"))
        .unwrap_or_else(|| panic!("no client namespace in: {text}"));
    let ok = (0..20).any(|_| {
        let r = Command::new("ip")
            .args(["netns", "exec", ns, "python3", "-c"])
            .arg("import urllib.request as u; print(u.urlopen('http://198.51.100.10:8080/home', timeout=5).status)")
            .output()
            .expect("python3");
        std::thread::sleep(Duration::from_millis(200));
        String::from_utf8_lossy(&r.stdout).trim() == "200"
    });
    let down = Command::new(testbed_bin())
        .arg("down")
        .output()
        .expect("down");
    assert!(
        down.status.success(),
        "down: {}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert!(ok, "the front end never answered 200");
    assert_nothing_left("up + down");
}

#[test]
fn ctrl_c_during_run_tears_down() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if skip_unless_root() {
        return;
    }
    let dir = tmp("sigint");
    let path = dir.join("small.toml");
    std::fs::write(&path, SMALL).expect("write");
    let mut child = Command::new(testbed_bin())
        .args(["run", "--duration", "30", "--scenario"])
        .arg(&path)
        .arg("--out")
        .arg(dir.join("out"))
        .spawn()
        .expect("seer-testbed run");
    // Wait until the load runs (requests flow), then interrupt.
    let t0 = Instant::now();
    while leftovers()
        .expect("leftovers")
        .iter()
        .all(|l| !l.contains(".load"))
    {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "testbed never came up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));
    // SAFETY: kill has no memory preconditions; the pid is our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let st = child.wait().expect("wait");
    assert_eq!(st.code(), Some(130), "exit status after SIGINT: {st}");
    assert_nothing_left("SIGINT");
}

#[test]
fn bad_scenario_names_file_and_line() {
    let dir = tmp("bad");
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        SMALL.replace("calls = [\"post-store\"]", "calls = [\"nowhere\"]"),
    )
    .expect("write");
    let out = Command::new(testbed_bin())
        .arg("check")
        .arg(&path)
        .output()
        .expect("seer-testbed check");
    let err = String::from_utf8_lossy(&out.stderr);
    let line = SMALL
        .lines()
        .position(|l| l.contains("calls = [\"post-store\"]"))
        .expect("line")
        + 1;
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains(&format!("{}:{line}:", path.display())),
        "no file:line in {err:?}"
    );
    assert!(err.contains("unknown service \"nowhere\""), "{err}");
}
