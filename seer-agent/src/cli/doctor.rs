//! `seer-agent doctor`: what this kernel offers seer, channel by channel, and what is missing
//! and why. Loads and attaches every program (then detaches), so what it reports is what `run`
//! would get.
use serde_json::{Value, json};

use crate::channels::{NEEDS, available};
use crate::sys::{
    bpf::{ProbeOptions, Probes, SocketWalk},
    btf::Btf,
    caps,
};

pub fn doctor(
    interfaces: Option<Vec<String>>,
    as_json: bool,
    model: Option<&std::path::Path>,
    ort_lib: Option<&std::path::Path>,
    cluster: Option<(&str, Option<&std::path::Path>, Option<&std::path::Path>)>,
) -> anyhow::Result<bool> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let btf = Btf::from_sys_fs().and_then(|b| b.kernel_offsets());
    let caps_ok = caps::check_can_attach();
    let probes = match (&btf, &caps_ok) {
        (Ok(_), Ok(())) => Some(Probes::load(&ProbeOptions {
            tc_ingress: true,
            interfaces,
            turns: true,
            epoll: true,
        })),
        _ => None,
    };
    let (hooks, missing, replaced, load_error) = match &probes {
        Some(Ok(p)) => (p.hooks.clone(), p.missing.clone(), p.replaced.clone(), None),
        Some(Err(e)) => (Vec::new(), Vec::new(), Vec::new(), Some(e.to_string())),
        None => (Vec::new(), Vec::new(), Vec::new(), None),
    };
    let mut probes = probes.and_then(Result::ok);
    let walks = match &mut probes {
        Some(p) => time_walks(p)?,
        None => Vec::new(),
    };
    // What each hook costs on this host, at the traffic it has now.
    let prices = match &probes {
        Some(p) => match p.hook_prices(PRICE_WINDOW) {
            Ok(v) => json!(v),
            Err(e) => json!({ "error": e.to_string() }),
        },
        None => json!([]),
    };
    let channels: Vec<Value> = NEEDS
        .iter()
        .map(|(names, progs, via)| {
            let label = if names.is_empty() {
                "(cost)".to_string()
            } else {
                names.join(", ")
            };
            // Without the programs the agent samples nothing, files or not.
            let ok = probes.is_some() && available(&hooks, progs);
            json!({ "channels": label, "ok": ok, "via": via })
        })
        .collect();
    let cluster = cluster.map(|(url, creds, ca)| crate::cluster::probe(url, creds, ca));
    let ok = load_error.is_none()
        && btf.is_ok()
        && caps_ok.is_ok()
        && cluster.as_ref().is_none_or(|c| c["ok"] == true);
    // Prediction is reported apart: without it the agent still senses and reacts.
    let prediction = crate::infer::probe(model, ort_lib, crate::config::Config::default().tick_ms);
    let report = json!({
        "kernel": release,
        "btf": match &btf { Ok(o) => json!({"ok": true, "offsets": format!("{o:?}")}), Err(e) => json!({"ok": false, "error": e.to_string()}) },
        "capabilities": match &caps_ok { Ok(()) => json!({"ok": true}), Err(e) => json!({"ok": false, "error": e.to_string()}) },
        "load_error": load_error,
        "hooks": hooks,
        "missing": missing,
        "replaced": replaced,
        "socket_walks": walks,
        "hook_prices": prices,
        "channels": channels,
        "prediction": prediction,
        "cluster": cluster,
        "ok": ok,
    });
    if as_json {
        println!("{report}");
        return Ok(ok);
    }
    let mark = |b: bool| if b { "ok     " } else { "MISSING" };
    println!("seer doctor: kernel {release}");
    match &btf {
        Ok(_) => println!(
            "  BTF /sys/kernel/btf/vmlinux      ok (every struct offset seer reads resolved)"
        ),
        Err(e) => println!("  BTF                              MISSING: {e}"),
    }
    match &caps_ok {
        Ok(()) => println!("  capabilities                     ok"),
        Err(e) => println!("  capabilities                     MISSING: {e}"),
    }
    if let Some(e) = &report["load_error"].as_str() {
        println!("  loading seer's programs          FAILED: {e}");
    }
    println!("\nhooks attached:");
    for h in &hooks {
        println!("  {:<18} {:<11} {}", h.program, h.kind, h.target);
    }
    if !missing.is_empty() {
        println!("\nrefused by this kernel:");
        for m in &missing {
            println!("  {}: {}", m.what, m.error);
        }
    }
    if !replaced.is_empty() {
        println!("\nrefused by this kernel, replaced by another path:");
        for m in &replaced {
            println!("  {}: {}", m.what, m.error);
        }
    }
    println!(
        "\nsocket walks on this host (median of {WALK_RUNS} runs; the per-tick one is marked):"
    );
    for w in &walks {
        println!(
            "  {} {:>9.1} us  {:>5} records  {}",
            if w["per_tick"] == true { "*" } else { " " },
            w["us_median"].as_f64().unwrap_or(0.0),
            w["records"],
            w["walk"].as_str().unwrap_or("")
        );
    }
    println!(
        "\nwhat each program costs here (kernel run-time statistics over {:.0} s of this host's traffic):",
        PRICE_WINDOW.as_secs_f64()
    );
    match prices.as_array() {
        Some(list) => {
            for h in list {
                println!(
                    "  {:<22} {:>10.0} runs/s {:>8.0} ns/run {:>7.3}% of a CPU",
                    h["program"].as_str().unwrap_or(""),
                    h["runs_per_s"].as_f64().unwrap_or(0.0),
                    h["ns_per_run"].as_f64().unwrap_or(0.0),
                    h["cpu_pct"].as_f64().unwrap_or(0.0)
                );
            }
        }
        None => println!("  not measured: {}", prices["error"].as_str().unwrap_or("")),
    }
    println!("\nchannels:");
    for c in &channels {
        println!(
            "  {} {}  [{}]",
            mark(c["ok"].as_bool().unwrap_or(false)),
            c["channels"].as_str().unwrap_or(""),
            c["via"].as_str().unwrap_or("")
        );
    }
    println!("\nprediction:");
    let lib = &prediction["library"];
    match lib["path"].as_str() {
        Some(p) => println!("  ONNX Runtime library             {p}"),
        None => println!(
            "  ONNX Runtime library             MISSING: {}",
            lib["error"].as_str().unwrap_or("")
        ),
    }
    let m = &prediction["model"];
    if m["ok"].as_bool() == Some(true) {
        println!(
            "  model                            {} ({} network, T = {}, horizon {} ms, services {}) {}",
            m["name"].as_str().unwrap_or(""),
            m["network"].as_str().unwrap_or(""),
            m["t"],
            m["horizon_ms"],
            m["n"].as_str().unwrap_or(""),
            m["path"].as_str().unwrap_or("")
        );
    } else {
        println!(
            "  model                            REFUSED: {}",
            m["error"].as_str().unwrap_or("")
        );
    }
    let ti = &prediction["test_inference"];
    if ti["ok"].as_bool() == Some(true) {
        println!("  test inference (N = 3)           ok, {} us", ti["us"]);
    } else if !ti.is_null() {
        println!(
            "  test inference (N = 3)           FAILED: {}",
            ti["error"].as_str().unwrap_or("")
        );
    }
    if prediction["ok"].as_bool() != Some(true) {
        println!("  => `seer-agent run` reacts to violations only (no prediction)");
    }
    if let Some(c) = &cluster {
        println!("\ncluster mode:");
        let url = c["url"].as_str().unwrap_or("");
        if c["ok"] == true {
            let st = &c["stream"];
            println!(
                "  NATS {url:<26} ok (nats-server {}, JetStream)",
                c["server"].as_str().unwrap_or("?")
            );
            if st["present"] == true {
                println!(
                    "  stream {:<24} ok ({} messages, {} s retention, {} replica(s))",
                    crate::cluster::STREAM,
                    st["messages"],
                    st["max_age_s"],
                    st["replicas"]
                );
            } else {
                println!(
                    "  stream {:<24} MISSING: no central has created it yet (`seer-agent central`); agents keep a backlog until then",
                    crate::cluster::STREAM
                );
            }
        } else {
            println!(
                "  NATS {url:<26} FAILED: {}; `run --cluster` would work alone, keeping a backlog",
                c["error"].as_str().unwrap_or("")
            );
        }
    }
    Ok(ok)
}

const WALK_RUNS: usize = 21;
/// How long doctor watches the programs run to price them.
const PRICE_WINDOW: std::time::Duration = std::time::Duration::from_secs(1);

/// Times every socket walk this kernel offers, with the processes that own listening sockets
/// on this host as the watched ones (what `run` would watch).
fn time_walks(p: &mut Probes) -> anyhow::Result<Vec<Value>> {
    let (procs, _) = crate::sys::procfs::scan_sockets(std::path::Path::new("/proc"));
    p.watch_processes(procs.iter().map(|pr| pr.pid))?;
    let tick = p.tick_walk();
    let mut out = Vec::new();
    let mut recs = Vec::with_capacity(4096);
    for w in p.walks() {
        let mut us = Vec::with_capacity(WALK_RUNS);
        for _ in 0..WALK_RUNS {
            recs.clear();
            let t0 = std::time::Instant::now();
            p.read_sockets_by(w, &mut recs)?;
            us.push(t0.elapsed().as_secs_f64() * 1e6);
        }
        us.sort_by(f64::total_cmp);
        out.push(json!({
            "walk": w.name(),
            "per_tick": w == tick,
            "us_median": us[WALK_RUNS / 2],
            "records": recs.len(),
            "processes": if w == SocketWalk::ProcessFiles { procs.len() } else { 0 },
        }));
    }
    Ok(out)
}
