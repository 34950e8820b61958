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
    callgraph,
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
    let mut opts = RunOptions::new(SECS, out.clone());
    opts.agent_bin = agent;
    let t0 = Instant::now();
    let s = run(&sc, &path, &opts, &bins()).unwrap_or_else(|e| panic!("run {name}: {e}"));
    println!(
        "{name}: {:.1}s wall, summary {s:?}",
        t0.elapsed().as_secs_f64()
    );
    assert_nothing_left(name, &s.run);
    (s, out)
}

/// Nothing of run `run` is left (other testbeds, e.g. an evaluation, may run beside the tests).
fn assert_nothing_left(when: &str, run: &str) {
    let mine = format!("seer-tb-{run}");
    let left: Vec<String> = leftovers()
        .expect("leftovers")
        .into_iter()
        .filter(|l| {
            l.split([' ', '/'])
                .any(|w| seer_testbed::testbed::belongs(w, &mine))
        })
        .collect();
    assert!(left.is_empty(), "after {when}, left behind: {left:?}");
}

/// The run id in a `seer-testbed` progress line (`... run dir /run/seer-testbed/seer-tb-ID`).
fn run_id_in(text: &str) -> Option<String> {
    text.split_whitespace()
        .find_map(|w| {
            w.rsplit('/')
                .next()?
                .strip_prefix("seer-tb-")
                .map(str::to_string)
        })
        .map(|w| {
            w.split(['.', '-', ';'])
                .next()
                .unwrap_or_default()
                .to_string()
        })
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
    let hdr = s
        .latency_hdr
        .as_ref()
        .expect("latency.hdr percentiles in the summary");
    assert_eq!(hdr.all.count as usize, s.requests - s.failed, "{hdr:?}");
    assert!(
        (hdr.all.p99_ms - s.p99_ms).abs() <= 0.01 * s.p99_ms + 0.01,
        "HDR p99 {} vs exact {}",
        hdr.all.p99_ms,
        s.p99_ms
    );
    assert_eq!(
        hdr.per_request.keys().collect::<Vec<_>>(),
        ["home", "profile"],
        "{hdr:?}"
    );
    // The joined call graph is the declared one: every declared call was seen, nothing else.
    let sc = Scenario::parse("small.toml", SMALL).expect("scenario");
    let declared = callgraph::declared(&sc);
    let edges = std::fs::read_to_string(out.join("dataset/edges.csv")).expect("edges.csv");
    let seen: std::collections::BTreeSet<(String, String)> = edges
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].to_string(), f[1].to_string())
        })
        .collect();
    assert_eq!(seen, declared, "observed call graph vs scenario:\n{edges}");
    assert!(
        edges.contains("timeline,post-cache,app2,data,"),
        "cross-host edges resolved: {edges}"
    );
    check_dataset(&out, &sc);
}

/// Reads OUT/dataset/samples.arrow and checks it against violations.csv: shape, names,
/// `violation` and `violation_in_Hms` / `initiator_in_Hms` on every row.
fn check_dataset(out: &Path, sc: &Scenario) -> usize {
    use arrow_array::{
        Array, DictionaryArray, Int64Array, StringArray, UInt8Array, cast::AsArray,
        types::Int32Type,
    };
    let m: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("dataset/manifest.json")).expect("dataset manifest"),
    )
    .expect("json");
    let f = std::fs::File::open(out.join("dataset/samples.arrow")).expect("samples.arrow");
    let reader = arrow_ipc::reader::FileReader::try_new(f, None).expect("arrow file");
    let batches: Vec<_> = reader.map(|b| b.expect("batch")).collect();
    let [t, n, c] = [0, 1, 2].map(|i| m["shape"][i].as_u64().expect("shape") as usize);
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, t * n, "{m}");
    assert_eq!(
        n,
        sc.services.len(),
        "one row per scenario service and tick"
    );
    assert_eq!(c, m["channels"].as_array().expect("channels").len());
    assert!(t > 100, "{t} ticks");
    let order: Vec<&str> = m["services"]
        .as_array()
        .expect("services")
        .iter()
        .map(|s| s["name"].as_str().expect("name"))
        .collect();
    let step = sc.qos.step_ms as i64;
    // Labels refer to the end of each tick's bucket.
    let tick = m["tick_ms"].as_i64().expect("tick_ms");
    let vcsv = std::fs::read_to_string(out.join("violations.csv")).expect("violations.csv");
    // (start_unix_ms, end_unix_ms, initiator)
    let vs: Vec<(i64, i64, String)> = vcsv
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (
                f[3].parse().unwrap(),
                f[4].parse().unwrap(),
                f[6].to_string(),
            )
        })
        .collect();
    let mut labelled = 0;
    let mut row = 0;
    for b in &batches {
        let col = |name: &str| {
            b.column_by_name(name)
                .unwrap_or_else(|| panic!("no {name}"))
        };
        let ts = col("ts_ms")
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("ts");
        let svc = col("service")
            .as_any()
            .downcast_ref::<DictionaryArray<Int32Type>>()
            .expect("service");
        let names = svc.values().as_string::<i32>();
        let names: &StringArray = names;
        let u8col = |name: &str| {
            col(name)
                .as_any()
                .downcast_ref::<UInt8Array>()
                .unwrap_or_else(|| panic!("{name}"))
                .clone()
        };
        let (viol, v500, i500) = (
            u8col("violation"),
            u8col("violation_in_500ms"),
            u8col("initiator_in_500ms"),
        );
        for i in 0..b.num_rows() {
            let x = ts.value(i) + tick;
            let name = names.value(svc.keys().value(i) as usize);
            assert_eq!(name, order[row % n], "row {row}: service order");
            let active = vs.iter().find(|v| v.0 <= x && x < v.1 + step);
            let soon = active.or_else(|| vs.iter().find(|v| v.0 > x && v.0 - x <= 500));
            assert_eq!(viol.value(i) == 1, active.is_some(), "row {row} ts {x}");
            assert_eq!(v500.value(i) == 1, soon.is_some(), "row {row} ts {x}");
            let want = soon.is_some_and(|v| v.2 == name);
            assert_eq!(i500.value(i) == 1, want, "row {row} ts {x} {name}");
            labelled += usize::from(viol.value(i) == 1);
            assert!(!svc.is_null(i));
            row += 1;
        }
    }
    labelled
}

#[test]
fn cpu_quota_fault_causes_attributed_violations() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if skip_unless_root() {
        return;
    }
    let fault = "\n[[fault]]\nkind = \"cpu_quota\"\nservice = \"timeline\"\nstart_s = 5\nduration_s = 5\nintensity = 0.01\n";
    let (s, out) = run_scenario_with("quota", &format!("{SMALL}{fault}"), Some(agent_bin()));
    assert!(s.violations >= 1, "no violation under the fault: {s:?}");
    // The dataset labels the violation's ticks, on every service's row, and its initiator.
    let sc = Scenario::parse("quota.toml", &format!("{SMALL}{fault}")).expect("scenario");
    let labelled = check_dataset(&out, &sc);
    assert!(
        labelled >= sc.services.len() * 5,
        "{labelled} violation rows"
    );
    // Rebuilt from the output alone, with other horizons: the same grid, graph and labels.
    let first = s.dataset.clone().expect("dataset summary");
    let again = seer_testbed::dataset::rebuild(&sc, &out, &[200, 1000]).expect("rebuild");
    assert_eq!(
        (again.ticks, again.rows, again.edges, again.violation_ticks),
        (first.ticks, first.rows, first.edges, first.violation_ticks)
    );
    let m = std::fs::read_to_string(out.join("dataset/manifest.json")).expect("manifest");
    assert!(m.contains("initiator_in_1000ms"), "{m}");
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

/// The memory-capacity fault squeezes the victim's cgroup (limit under what it holds, swap
/// file added when the host has none), so its memory really pages while the fault is on; and
/// at the end the limit, the swap and the file are gone.
#[test]
fn memory_squeeze_pages_the_victim_and_is_undone() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if skip_unless_root() {
        return;
    }
    let Some(memory) = ["/sys/fs/cgroup/memory", "/sys/fs/cgroup"]
        .iter()
        .map(PathBuf::from)
        .find(|r| r.join("memory.stat").exists() || r.join("cgroup.controllers").exists())
    else {
        println!("SKIP: no memory cgroup controller");
        return;
    };
    let had_swap = !seer_testbed::swap::active().is_empty();
    let fault = "\n[[fault]]\nkind = \"mem_hog\"\nservice = \"post-cache\"\nstart_s = 3\nduration_s = 8\nintensity = 256\n";
    let text = format!("{SMALL}{fault}");
    // Watches the squeezed cgroup while the run goes on: the most swap it used and its faults.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watch = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut swap_max, mut limited, mut files) = (0u64, false, false);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                files |= seer_testbed::swap::active()
                    .iter()
                    .any(|f| f.to_string_lossy().contains("seer-tb-"));
                for e in std::fs::read_dir(&memory).into_iter().flatten().flatten() {
                    let cg = e.path().join("post-cache");
                    if !e.file_name().to_string_lossy().starts_with("seer-tb-") || !cg.is_dir() {
                        continue;
                    }
                    let limit = std::fs::read_to_string(cg.join("memory.limit_in_bytes"))
                        .or_else(|_| std::fs::read_to_string(cg.join("memory.max")))
                        .unwrap_or_default();
                    limited |= limit.trim().parse::<u64>().is_ok_and(|l| l < 1 << 40);
                    let stat = std::fs::read_to_string(cg.join("memory.stat")).unwrap_or_default();
                    for l in stat.lines() {
                        if let Some(v) = l.strip_prefix("swap ") {
                            swap_max = swap_max.max(v.trim().parse().unwrap_or(0));
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            (swap_max, limited, files)
        })
    };
    let (s, out) = run_scenario_with("squeeze", &text, None);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (swap_max, limited, files) = watch.join().expect("watcher");
    let faults: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("faults.json")).expect("faults.json"),
    )
    .expect("json");
    assert!(faults[0]["error"].is_null(), "{faults}");
    assert!(limited, "the victim's memory limit was never set: {s:?}");
    assert!(
        swap_max >= 32 << 20,
        "the squeezed cgroup never paged ({swap_max} bytes in swap)"
    );
    assert!(
        had_swap || files,
        "the host had no swap and the fault added none"
    );
    // Undone: no swap file of a testbed, and (run_scenario_with) nothing of the run is left.
    assert!(
        !seer_testbed::swap::active()
            .iter()
            .any(|f| f.to_string_lossy().contains(&format!("seer-tb-{}", s.run))),
        "the run's swap file is still on: {:?}",
        seer_testbed::swap::active()
    );
}

fn testbed_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_seer-testbed"))
}

/// `down --run ID` (only this test's testbed) even if an assertion fails.
struct DownOnDrop(String);

impl Drop for DownOnDrop {
    fn drop(&mut self) {
        let _ = Command::new(testbed_bin())
            .args(["down", "--run", &self.0])
            .output();
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
    let run = run_id_in(&text).unwrap_or_else(|| panic!("no run id in: {text}"));
    let _down = DownOnDrop(run.clone());
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
    // Every service is pinned: its processes may run only on the CPUs topology.json names.
    let topo: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("/run/seer-testbed/seer-tb-{run}/topology.json"))
            .expect("topology.json"),
    )
    .expect("json");
    let layout = seer_testbed::cgroup::Layout::detect().expect("cgroups");
    let mut pinned = 0;
    for s in topo["services"].as_array().expect("services") {
        let (Some(cpus), Some(cg)) = (s["cpus"].as_str(), s["cgroup"].as_str()) else {
            continue;
        };
        let want = seer_testbed::scenario::parse_cpu_list(cpus).expect("cpu list");
        let procs = std::fs::read_to_string(&layout.procs_files(cg)[0]).expect("cgroup.procs");
        for pid in procs.lines() {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let Some(allowed) = status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            else {
                continue;
            };
            let got = seer_testbed::scenario::parse_cpu_list(allowed).expect("allowed list");
            assert_eq!(
                got, want,
                "{} pid {pid} runs on {allowed}, cpuset {cpus}",
                s["name"]
            );
            pinned += 1;
        }
    }
    if layout.has_cpuset(&format!("seer-tb-{run}")) {
        assert!(pinned >= 6, "only {pinned} pinned processes: {topo}");
    }
    let down = Command::new(testbed_bin())
        .args(["down", "--run", &run])
        .output()
        .expect("down");
    assert!(
        down.status.success(),
        "down: {}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert!(ok, "the front end never answered 200");
    assert_nothing_left("up + down", &run);
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
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("seer-testbed run");
    // The run id is in the first progress line.
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(id) = run_id_in(&line) {
                let _ = tx.send(id);
            }
        }
    });
    let run = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("no run id printed");
    // Wait until the load runs (requests flow), then interrupt.
    let t0 = Instant::now();
    let load_ns = format!("netns seer-tb-{run}.load");
    while leftovers()
        .expect("leftovers")
        .iter()
        .all(|l| *l != load_ns)
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
    assert_nothing_left("SIGINT", &run);
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
        .args(["check", "--scenario"])
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
