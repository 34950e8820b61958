//! The live view in a real browser: nginx -> memcached under open-loop load in a network
//! namespace, the agent with the shipped model and a QoS (recommend mode: it changes nothing),
//! and headless Chromium (Debian's `chromium`) opening `/ui` on the agent's own listener. The
//! page must draw a node per service with its probability, the call, the QoS verdict; after
//! memcached's CPU is cut to 1% the violation, its initiator and the response's events must be
//! in the page's timeline, and a page opened late must have the minutes before it. The last
//! screenshot is saved (`target/ui-live-view.png`, printed). Then `seer-agent ui --db` over the
//! store the agent recorded: the same page, the services, the minutes, the initiator.
use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use seer_tests::{stack::Stack, *};

const CHROMIUM: &str = "/usr/bin/chromium";

/// Headless Chromium in namespace `ns` on `url`, for `ms` of page time: the DOM as the page's
/// script left it, and a screenshot to `png` when given.
fn browse(ns: &str, url: &str, ms: u32, png: Option<&Path>) -> String {
    let profile = std::env::temp_dir().join(format!("seer-ui-chromium-{}", std::process::id()));
    // At nice 19: a browser starting beside the stack under load (a fresh profile each time,
    // and on a fresh machine its font caches too) takes as little as it can from the stack.
    let mut c = Command::new("nice");
    c.args(["-n", "19", "nsenter"])
        .arg(format!("--net=/run/netns/{ns}"))
        .arg(CHROMIUM)
        .args(["--headless", "--no-sandbox", "--disable-gpu"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--timeout={ms}"))
        .arg("--window-size=1280,900")
        .arg("--enable-logging=stderr");
    match png {
        Some(p) => c.arg(format!("--screenshot={}", p.display())),
        None => c.arg("--dump-dom"),
    };
    let out = c.arg(url).output().expect("run chromium");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        out.status.success(),
        "chromium: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // The page's console (script errors) after its DOM.
    let console: Vec<String> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught"))
        .map(str::to_string)
        .collect();
    format!(
        "{}\n<!-- console: {} -->",
        String::from_utf8_lossy(&out.stdout),
        console.join(" | ")
    )
}

/// The attribute `attr` of every element carrying `marker` (e.g. `data-service="nginx"`).
fn attr_of(dom: &str, marker: &str, attr: &str) -> Vec<String> {
    dom.match_indices(marker)
        .filter_map(|(i, _)| {
            let tag = &dom[dom[..i].rfind('<')?..i + dom[i..].find('>')?];
            let at = tag.find(&format!("{attr}=\""))? + attr.len() + 2;
            Some(tag[at..at + tag[at..].find('"')?].to_string())
        })
        .collect()
}

#[test]
fn the_live_view_draws_the_graph_the_qos_and_the_violation_in_a_real_browser() {
    assert!(
        is_root(),
        "the integration tests run as root (cargo xtask test)"
    );
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: run the set-up (`cargo xtask setup`), which installs Debian's chromium"
    );
    println!(
        "kernel {}",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    if !Path::new("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").exists() {
        println!("SKIP: needs a v1 cpu hierarchy at /sys/fs/cgroup/cpu for the fault");
        return;
    }
    let (http, mc) = (8096, 11496);
    let net = NetPair::new();
    let ns = net.server.clone();
    let _stack = Stack::start(&ns, http, mc, 16 * 1024);
    let cg = CpuCgroup::memcached("ui", mc);
    let dir = std::env::temp_dir().join(format!("seer-ui-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let conf = dir.join("seer.toml");
    std::fs::write(
        &conf,
        format!(
            "[[service]]\nname = \"memcached\"\ncomm = \"memcached\"\n\
             [qos]\nservice = \"nginx\"\np99_ms = 20\nwindow_ms = 1000\n\
             [respond]\nmode = \"recommend\"\ncooldown_s = 30\nhold_s = 600\njournal = \"{}\"\n",
            dir.join("actions.json").display()
        ),
    )
    .expect("config");
    let mut agent = Agent::start_net_only(&ns, 100_000, &["--config", &conf.display().to_string()]);
    agent.wait_service("memcached", Duration::from_secs(30), |_| true);
    agent.wait_service("nginx", Duration::from_secs(30), |_| true);
    // Once before the load: the browser's first start on a machine builds its caches.
    browse(&ns, "about:blank", 1000, None);
    let load = in_ns(&net.client, move || {
        loadgen::run(
            &format!("198.51.100.1:{http}"),
            "/",
            800.0,
            Duration::from_secs(25),
            32,
        )
    });
    std::thread::sleep(Duration::from_secs(4));
    let url = "http://127.0.0.1:9464/ui";

    // Before the fault: the graph, the probabilities, the QoS holding. Two full test runs
    // and one run alone saw the 20 ms p99 broken (41-45 ms) in a window ~4.5 s into the load,
    // with or without a browser starting (one 18 s into the load, after curl, dd and two
    // browser starts, saw it hold): a transient of the stack's first seconds, not root-caused
    // yet. Then the page is opened again once the agent says the QoS holds (three tries), and
    // the fault's violation is counted from there.
    let mut dom = String::new();
    for attempt in 1..=3 {
        dom = browse(&ns, url, 8000, None);
        if dom.contains("id=\"qos\" data-state=\"ok\"") {
            break;
        }
        let verdict = dom
            .split_once("id=\"qos\"")
            .and_then(|(_, r)| r.split_once("</div>"))
            .map_or("", |(v, _)| v);
        println!("try {attempt}: the page shows{verdict}; again once the QoS holds");
        let t0 = Instant::now();
        while agent_metric(&ns, "seer_qos_violated") != 0.0
            && t0.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    for svc in ["nginx", "memcached"] {
        let ps = attr_of(&dom, &format!("data-service=\"{svc}\""), "data-p");
        let p: Vec<f64> = ps.iter().filter_map(|p| p.parse().ok()).collect();
        assert!(
            p.len() == 1 && (0.0..=1.0).contains(&p[0]),
            "node {svc}: data-p {ps:?}; page:\n{dom}\nthe agent's latest snapshot: {}\nagent log:\n{}",
            agent_get(&ns, "/api/ui/snapshot"),
            agent.proc.stderr()
        );
    }
    assert_eq!(
        attr_of(&dom, "class=\"edge\"", "data-to"),
        vec!["memcached".to_string()],
        "one call, nginx -> memcached: {dom}"
    );
    assert_eq!(
        attr_of(&dom, "class=\"edge\"", "data-from"),
        vec!["nginx".to_string()]
    );
    assert!(
        dom.contains("id=\"qos\" data-state=\"ok\"") && dom.contains("against 20 ms"),
        "the QoS holds before the fault: {dom}"
    );
    assert!(
        dom.contains("model seer-graph-h100"),
        "the model named: {dom}"
    );

    // The fault: memcached gets 1% of a CPU; the QoS breaks and the agent names it.
    let before = agent_metric(&ns, "seer_qos_violations_total");
    std::fs::write(cg.0.join("cpu.cfs_quota_us"), "1000").expect("fault");
    let t0 = Instant::now();
    while agent_metric(&ns, "seer_qos_violations_total") <= before {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no violation within 30 s of the fault; agent log:\n{}",
            agent.proc.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The initiator is named 300 ms into the violation: give the page that and a snapshot.
    std::thread::sleep(Duration::from_secs(2));
    let dom = browse(&ns, url, 8000, None);
    let kinds = attr_of(&dom, "<li data-kind=", "data-kind");
    assert!(
        kinds.iter().any(|k| k == "violation"),
        "the violation in the timeline: {kinds:?}\n{dom}\nagent log:\n{}",
        agent.proc.stderr()
    );
    let named: Vec<String> = attr_of(&dom, "data-kind=\"initiator\"", "data-service");
    assert!(
        named.iter().any(|s| s == "memcached"),
        "memcached named as the initiator in the timeline: {named:?} ({kinds:?})\nagent log:\n{}",
        agent.proc.stderr()
    );
    // A page opened now has the minutes before it: the agent has run for over 10 s, two
    // snapshots a second.
    let history: Vec<usize> = attr_of(&dom, "<body", "data-history")
        .iter()
        .filter_map(|h| h.parse().ok())
        .collect();
    println!("snapshots from before the page opened: {history:?}");
    assert!(
        history.first().is_some_and(|&h| h >= 10),
        "the page's history: {history:?}"
    );
    let png = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ui-live-view.png");
    browse(&ns, url, 8000, Some(&png));
    assert!(
        std::fs::metadata(&png).is_ok_and(|m| m.len() > 10_000),
        "screenshot {}",
        png.display()
    );
    println!("screenshot: {}", png.display());
    std::fs::write(cg.0.join("cpu.cfs_quota_us"), "-1").expect("undo the fault");
    let _ = load.join();

    // The same page over the store the agent recorded, once it stopped (`seer-agent ui --db`).
    sh(&format!("kill -TERM {}", agent.proc.child.id()));
    let t0 = Instant::now();
    while agent.proc.child.try_wait().ok().flatten().is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "the agent did not stop"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let db = agent.db.display().to_string();
    let ui = Proc::spawn(NetPair::cmd(
        &ns,
        &agent_bin(),
        &["ui", "--db", &db, "--metrics-addr", "127.0.0.1:9467"],
    ));
    let said = ui.wait_line("seer-agent ui serving", Duration::from_secs(30), |l| {
        l.starts_with("seer-agent ui: http://127.0.0.1:9467/ui")
    });
    println!("{said}");
    let dom = browse(&ns, "http://127.0.0.1:9467/ui", 6000, None);
    for svc in ["nginx", "memcached"] {
        assert_eq!(
            attr_of(&dom, &format!("data-service=\"{svc}\""), "data-p").len(),
            1,
            "node {svc} in the recorded view: {dom}"
        );
    }
    assert!(
        dom.contains("recorded "),
        "the page says it is a recording: {dom}"
    );
    let history: Vec<usize> = attr_of(&dom, "<body", "data-history")
        .iter()
        .filter_map(|h| h.parse().ok())
        .collect();
    assert!(
        history.first().is_some_and(|&h| h >= 20),
        "the recorded minutes: {history:?}"
    );
    let named: Vec<String> = attr_of(&dom, "data-kind=\"initiator\"", "data-service");
    assert!(
        named.iter().any(|s| s == "memcached"),
        "the recorded initiator in the timeline: {named:?}\n{dom}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
