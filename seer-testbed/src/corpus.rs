//! The model's training corpus: a seeded plan of testbed scenarios (shipped and generated
//! topologies, loads, fault schedules), each written to disk so any run can be replayed, and
//! the split the model is trained and judged on.
//!
//! **Topologies.** The shipped `small` and `social` shapes plus generated ones: a random call
//! DAG of 4-40 services behind nginx (rpc services in layers, sequential or parallel fan-out,
//! memcached / redis / rpc back ends), spread over 2-4 hosts. The size of a generated shape is
//! drawn mostly small (this machine has 2 cores and every host runs an agent), with a few large.
//!
//! **Schedules.** Per scenario: a load (constant, diurnal or spike) at a level drawn against
//! the shape's CPU cost per request, and 0, 1 or 2 faults. Fault kind x onset pairs are dealt
//! from a shuffled deck of every pair the injector has (net_bw's random starts excepted), so
//! any prefix of the plan covers them evenly; about one scenario in seven has no fault (for
//! false alarms), the others one to three, each in its own third or half of the run.
//!
//! **Split** by topology and scenario, never by time: whole topologies are held out
//! (`test_unseen`); the other topologies' scenarios go to `train`, `val` and `test_seen`
//! (the seen topology under a schedule never trained on).
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::scenario::Scenario;

/// Seconds of judged load per run (after the warm-up).
pub const RUN_S: f64 = 60.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    Val,
    TestSeen,
    TestUnseen,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::TestSeen => "test_seen",
            Split::TestUnseen => "test_unseen",
        }
    }
}

/// One planned run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Entry {
    /// `NNN-<topology>`: unique, sorts in plan order.
    pub name: String,
    pub topology: String,
    pub split: Split,
    pub services: usize,
    pub hosts: usize,
    pub duration_s: f64,
    /// `kind/onset` of each fault.
    pub faults: Vec<String>,
    /// The scenario file's text.
    #[serde(skip)]
    pub toml: String,
}

/// A topology: the `[[service]]` and `[[request]]` tables of a scenario, and what they cost.
#[derive(Clone, Debug)]
pub struct Topology {
    pub name: String,
    /// TOML text of the services and requests.
    pub body: String,
    pub services: Vec<Svc>,
    pub hosts: usize,
    /// CPU microseconds one front-end request costs, summed over every service it visits.
    pub cpu_us_per_request: f64,
    pub unseen: bool,
}

#[derive(Clone, Debug)]
pub struct Svc {
    pub name: String,
    pub kind: &'static str,
}

const FAULT_KINDS: [&str; 9] = [
    "cpu_quota",
    "net_bw",
    "blocking",
    "load_spike",
    "cpu_hog",
    "cache_hog",
    "membw_hog",
    "mem_hog",
    "disk_hog",
];
const ONSETS: [&str; 3] = ["step", "ramp", "bursts"];

/// Every fault kind x onset pair.
pub fn fault_pairs() -> Vec<(&'static str, &'static str)> {
    FAULT_KINDS
        .iter()
        .flat_map(|k| ONSETS.iter().map(move |o| (*k, *o)))
        .collect()
}

/// The plan for `seed`: `runs` scenarios over `topologies` generated shapes plus the shipped
/// ones (`shipped`: (name, scenario text)). Deterministic in its arguments.
pub fn plan(
    seed: u64,
    runs: usize,
    topologies: usize,
    shipped: &[(&str, &str)],
) -> Result<Vec<Entry>, String> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut topos: Vec<Topology> = Vec::new();
    for (name, text) in shipped {
        topos.push(shipped_topology(name, text)?);
    }
    for i in 0..topologies {
        topos.push(generate_topology(&mut rng, &format!("g{i:02}")));
    }
    // Hold out whole generated topologies: one in six, at least one.
    let generated: Vec<usize> = (shipped.len()..topos.len()).collect();
    let held = (generated.len() / 6).max(usize::from(!generated.is_empty()));
    let mut order = generated.clone();
    rng.shuffle(&mut order);
    for &i in order.iter().take(held) {
        topos[i].unseen = true;
    }
    let mut deck: Vec<(&str, &str)> = Vec::new();
    let mut entries = Vec::with_capacity(runs);
    let mut seen_count = 0usize;
    for r in 0..runs {
        // Round-robin over topologies, so any prefix of the plan has every split.
        let t = &topos[r % topos.len()];
        let split = if t.unseen {
            Split::TestUnseen
        } else {
            seen_count += 1;
            match seen_count % 10 {
                3 | 7 => Split::TestSeen,
                5 => Split::Val,
                _ => Split::Train,
            }
        };
        let nfaults = match rng.u32(0..7) {
            0 => 0,
            1 | 2 => 1,
            3..=5 => 2,
            _ => 3,
        };
        let mut faults = Vec::new();
        for _ in 0..nfaults {
            if deck.is_empty() {
                deck = fault_pairs();
                rng.shuffle(&mut deck);
            }
            faults.extend(deck.pop());
        }
        let name = format!("{r:03}-{}", t.name);
        let run_seed = rng.u64(1..u64::MAX / 2);
        let toml = scenario_text(&mut rng, t, &name, run_seed, &faults);
        Scenario::parse(&name, &toml).map_err(|e| format!("generated scenario {name}: {e}"))?;
        entries.push(Entry {
            name,
            topology: t.name.clone(),
            split,
            services: t.services.len(),
            hosts: t.hosts,
            duration_s: RUN_S,
            faults: faults.iter().map(|(k, o)| format!("{k}/{o}")).collect(),
            toml,
        });
    }
    Ok(entries)
}

/// A shipped scenario's services and requests, without its load, QoS and faults.
fn shipped_topology(name: &str, text: &str) -> Result<Topology, String> {
    let sc = Scenario::parse(name, text).map_err(|e| e.to_string())?;
    let mut table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    let mut body = toml::Table::new();
    for key in ["service", "request"] {
        if let Some(v) = table.remove(key) {
            body.insert(key.into(), v);
        }
    }
    let body = toml::to_string(&body).map_err(|e| e.to_string())?;
    let services: Vec<Svc> = sc
        .services
        .iter()
        .map(|s| Svc {
            name: s.name.get_ref().clone(),
            kind: kind_name(&s.kind),
        })
        .collect();
    let hosts: std::collections::BTreeSet<&String> =
        sc.services.iter().map(|s| s.host.get_ref()).collect();
    // Cost: every service once per request (an upper bound for a tree, low for fan-in).
    let cpu = sc.services.iter().map(|s| s.work_us as f64 + 60.0).sum();
    Ok(Topology {
        name: name.to_string(),
        body,
        services,
        hosts: hosts.len(),
        cpu_us_per_request: cpu,
        unseen: false,
    })
}

fn kind_name(k: &crate::scenario::Kind) -> &'static str {
    use crate::scenario::Kind::*;
    match k {
        Nginx => "nginx",
        Rpc => "rpc",
        Memcached => "memcached",
        Redis => "redis",
    }
}

/// A random call DAG behind nginx: `n` services in all (nginx included), in layers; each rpc
/// service calls 1-3 services of deeper layers; the deepest layer is back ends.
pub fn generate_topology(rng: &mut fastrand::Rng, name: &str) -> Topology {
    // Mostly 4-12 services; one in eight large (13-40).
    let n = if rng.u32(0..8) == 0 {
        rng.usize(13..=40)
    } else {
        rng.usize(4..=12)
    };
    let hosts = rng.usize(2..=4).min(n - 1);
    let backends = (n / 4).clamp(1, 6);
    let rpcs = n - 1 - backends;
    // Layers of rpc services: 1-2 entries, then the rest in 1-4 layers.
    let depth = rng.usize(1..=4).min(rpcs.max(1));
    let mut layer_of: Vec<usize> = Vec::new();
    for i in 0..rpcs {
        let l = if i == 0 { 0 } else { rng.usize(0..depth) };
        layer_of.push(l);
    }
    layer_of.sort_unstable();
    let mut svcs: Vec<(String, &'static str, usize)> = Vec::new(); // name, kind, layer
    for (i, l) in layer_of.iter().enumerate() {
        svcs.push((format!("s{i}"), "rpc", *l));
    }
    for i in 0..backends {
        let kind = match rng.u32(0..5) {
            0 | 1 => "memcached",
            2 | 3 => "redis",
            _ => "rpc",
        };
        let prefix = match kind {
            "memcached" => "cache",
            "redis" => "store",
            _ => "leaf",
        };
        svcs.push((format!("{prefix}{i}"), kind, depth));
    }
    // Calls: each rpc service calls 1-3 services of deeper layers; every non-entry service is
    // called by someone of a shallower layer.
    let mut calls: Vec<Vec<usize>> = vec![Vec::new(); svcs.len()];
    for i in 0..svcs.len() {
        if svcs[i].1 != "rpc" || svcs[i].2 == depth {
            continue;
        }
        let deeper: Vec<usize> = (0..svcs.len()).filter(|&j| svcs[j].2 > svcs[i].2).collect();
        if deeper.is_empty() {
            continue;
        }
        let k = rng.usize(1..=3).min(deeper.len());
        let mut pick = deeper.clone();
        rng.shuffle(&mut pick);
        calls[i].extend(pick.into_iter().take(k));
    }
    for j in 0..svcs.len() {
        if svcs[j].2 == 0 || calls.iter().any(|c| c.contains(&j)) {
            continue;
        }
        let callers: Vec<usize> = (0..svcs.len())
            .filter(|&i| svcs[i].1 == "rpc" && svcs[i].2 < svcs[j].2)
            .collect();
        if let Some(&c) = callers.get(rng.usize(0..callers.len().max(1))) {
            calls[c].push(j);
        }
    }
    // Services of layer 0 with no caller are the entries (reached through nginx).
    let entries: Vec<usize> = (0..svcs.len()).filter(|&i| svcs[i].2 == 0).collect();
    let entries: Vec<usize> = if entries.len() > 2 {
        // Extra layer-0 services become callees of the first entry.
        for &e in &entries[2..] {
            calls[entries[0]].push(e);
        }
        entries[..2].to_vec()
    } else {
        entries
    };
    let mut body = String::new();
    let _ = writeln!(
        body,
        "[[service]]\nname = \"nginx\"\nkind = \"nginx\"\nhost = \"edge\"\n"
    );
    let mut work = vec![0u64; svcs.len()];
    for (i, (sname, kind, _)) in svcs.iter().enumerate() {
        let host = format!("h{}", 1 + (i % hosts.max(1)));
        let _ = writeln!(
            body,
            "[[service]]\nname = \"{sname}\"\nkind = \"{kind}\"\nhost = \"{host}\""
        );
        match *kind {
            "rpc" => {
                let w = rng.u64(40..=250);
                work[i] = w;
                let _ = writeln!(body, "work_us = {w}");
                if rng.u32(0..4) == 0 {
                    let _ = writeln!(body, "work_kb = {}", rng.u64(32..=256));
                }
                if !calls[i].is_empty() {
                    let mode = if rng.bool() { "parallel" } else { "sequential" };
                    let list: Vec<String> = calls[i]
                        .iter()
                        .map(|&j| format!("\"{}\"", svcs[j].0))
                        .collect();
                    let _ = writeln!(body, "mode = \"{mode}\"\ncalls = [{}]", list.join(", "));
                }
            }
            _ => {
                let _ = writeln!(
                    body,
                    "value_bytes = {}",
                    [256, 512, 1024, 4096][rng.usize(0..4)]
                );
                work[i] = 30;
            }
        }
        body.push('\n');
    }
    let mut weights = Vec::new();
    for (k, &e) in entries.iter().enumerate() {
        let w = [1.0, 2.0, 3.0][rng.usize(0..3)];
        weights.push((e, w));
        let _ = writeln!(
            body,
            "[[request]]\nname = \"r{k}\"\nentry = \"{}\"\nweight = {w:.1}\n",
            svcs[e].0
        );
    }
    // Expected visits per front-end request: walk the DAG from the entries.
    let total_w: f64 = weights.iter().map(|(_, w)| w).sum();
    let mut visits = vec![0.0f64; svcs.len()];
    for &(e, w) in &weights {
        visits[e] += w / total_w;
    }
    let mut by_layer: Vec<usize> = (0..svcs.len()).collect();
    by_layer.sort_by_key(|&i| svcs[i].2);
    for &i in &by_layer {
        for &j in &calls[i] {
            visits[j] += visits[i];
        }
    }
    // nginx ~100 us a request; every visit pays ~60 us of kernel and network on top of its work.
    let cpu = 100.0
        + visits
            .iter()
            .zip(&work)
            .map(|(v, w)| v * (*w as f64 + 60.0))
            .sum::<f64>();
    let mut services = vec![Svc {
        name: "nginx".into(),
        kind: "nginx",
    }];
    services.extend(svcs.iter().map(|(n, k, _)| Svc {
        name: n.clone(),
        kind: k,
    }));
    Topology {
        name: name.to_string(),
        body,
        services,
        hosts: hosts + 1,
        cpu_us_per_request: cpu,
        unseen: false,
    }
}

/// A scenario: the topology with a load, a QoS target and `faults`.
fn scenario_text(
    rng: &mut fastrand::Rng,
    t: &Topology,
    name: &str,
    seed: u64,
    faults: &[(&str, &str)],
) -> String {
    // Load: 12-25% of the machine's two cores at the mean rate by the cost model (measured:
    // the testbed then uses 0.3-0.9 cores, the agents on every host on top; at 25-45% the
    // larger shapes saturated without any fault).
    let util = 0.12 + 0.13 * rng.f64();
    let rps = (util * 2e6 / t.cpu_us_per_request)
        .clamp(40.0, 500.0)
        .round();
    // The target: three times the healthy p99 this very run measures before its first fault
    // (the testbed calibrates it: `auto_x`), at least 10 ms.
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Generated by `cargo xtask corpus` (seer-testbed corpus.rs): topology {}, {} services.\n\
         name = \"{name}\"\nseed = {}\n\n[qos]\ntarget_p99_ms = 10.0\nauto_x = 3.0\nwindow_ms = 1000\nstep_ms = 100\n",
        t.name,
        t.services.len(),
        seed % 1_000_000
    );
    match rng.u32(0..3) {
        0 => {
            let _ = writeln!(
                s,
                "[load]\nprofile = \"constant\"\nrps = {rps:.0}\nwarmup_s = 3.0\n"
            );
        }
        1 => {
            let _ = writeln!(
                s,
                "[load]\nprofile = \"diurnal\"\nrps = {rps:.0}\namplitude = {:.2}\nperiod_s = {:.0}\nwarmup_s = 3.0\n",
                0.2 + 0.3 * rng.f64(),
                [20.0, 30.0, 60.0][rng.usize(0..3)]
            );
        }
        _ => {
            let _ = writeln!(
                s,
                "[load]\nprofile = \"spike\"\nrps = {rps:.0}\npeak_rps = {:.0}\nat_s = {:.0}\nduration_s = {:.0}\nwarmup_s = 3.0\n",
                (rps * (1.3 + 0.7 * rng.f64())).round(),
                5.0 + 45.0 * rng.f64(),
                2.0 + 4.0 * rng.f64()
            );
        }
    }
    s.push_str(&t.body);
    // Each fault in its own slot (a half or a third of the run), so they rarely overlap.
    let non_front: Vec<&Svc> = t.services.iter().filter(|v| v.kind != "nginx").collect();
    let rpcs: Vec<&Svc> = non_front
        .iter()
        .copied()
        .filter(|v| v.kind == "rpc")
        .collect();
    for (i, (kind, onset)) in faults.iter().enumerate() {
        // A ramp grows over 2-8 s (the first corpus's 0.5-5 s were mostly steps at a 100 ms
        // tick: its violations began within a few ticks of the onset) and holds 2-5 s more.
        let ramp_s = 2.0 + 6.0 * rng.f64();
        let duration = match *onset {
            "ramp" => ramp_s + 2.0 + 3.0 * rng.f64(),
            _ => 4.0 + 6.0 * rng.f64(),
        };
        let slot = RUN_S / faults.len() as f64;
        let start = i as f64 * slot + 3.0 + (slot - duration - 6.0).max(0.0) * rng.f64();
        let target = match *kind {
            "load_spike" => None,
            "blocking" => Some(rpcs[rng.usize(0..rpcs.len())].name.clone()),
            _ => Some(non_front[rng.usize(0..non_front.len())].name.clone()),
        };
        let intensity = match *kind {
            // Measured on the first 48 runs: 0.01-0.05 cores and 0.05-0.2 Mbit/s often left a
            // lightly loaded service unharmed (no violation); these bite.
            "cpu_quota" => 0.01 + 0.01 * rng.f64(),
            "net_bw" => 0.01 + 0.03 * rng.f64(),
            "blocking" => (5_000.0 + 55_000.0 * rng.f64()).round(),
            "load_spike" => 2.5 + 2.5 * rng.f64(),
            "cpu_hog" => [1.0, 2.0][rng.usize(0..2)],
            "membw_hog" | "disk_hog" => [1.0, 2.0][rng.usize(0..2)],
            "mem_hog" => [64.0, 128.0, 256.0][rng.usize(0..3)],
            _ => 1.0,
        };
        let _ = writeln!(s, "[[fault]]\nkind = \"{kind}\"");
        if let Some(t) = target {
            let _ = writeln!(s, "service = \"{t}\"");
        }
        let _ = writeln!(
            s,
            "start_s = {start:.1}\nduration_s = {duration:.1}\nintensity = {intensity:.3}\nonset = \"{onset}\""
        );
        match *onset {
            "ramp" => {
                let _ = writeln!(s, "ramp_s = {ramp_s:.1}");
            }
            "bursts" => {
                let on = 0.5 + rng.f64();
                let _ = writeln!(
                    s,
                    "burst_on_s = {on:.1}\nburst_period_s = {:.1}",
                    on + 0.5 + 1.5 * rng.f64()
                );
            }
            _ => {}
        }
        // Unannounced (random start within the run) one time in three, where allowed.
        if *kind != "net_bw" && rng.u32(0..3) == 0 {
            let _ = writeln!(s, "random = true");
        }
        s.push('\n');
    }
    s
}

/// What a finished corpus holds, for progress lines and the manifest.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Tally {
    pub runs_done: usize,
    pub runs_failed: usize,
    pub runs_planned: usize,
    pub seconds_recorded: f64,
    pub violations: usize,
    /// fault kind ('' unattributed) -> violations
    pub violations_by_kind: std::collections::BTreeMap<String, usize>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = include_str!("../scenarios/small.toml");
    const SOCIAL: &str = include_str!("../scenarios/social.toml");

    fn the_plan(seed: u64, runs: usize) -> Vec<Entry> {
        plan(seed, runs, 24, &[("small", SMALL), ("social", SOCIAL)]).unwrap()
    }

    #[test]
    fn a_plan_is_the_same_for_the_same_seed_and_every_scenario_validates() {
        let a = the_plan(1, 160);
        let b = the_plan(1, 160);
        assert_eq!(a.len(), 160);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.toml, y.toml);
            assert_eq!(x.split, y.split);
        }
        let c = the_plan(2, 160);
        assert!(a.iter().zip(&c).any(|(x, y)| x.toml != y.toml));
    }

    #[test]
    fn the_plan_covers_every_fault_pair_sizes_and_splits() {
        let p = the_plan(1, 160);
        for (k, o) in fault_pairs() {
            let pair = format!("{k}/{o}");
            assert!(
                p.iter().any(|e| e.faults.contains(&pair)),
                "{pair} never planned"
            );
        }
        assert!(p.iter().any(|e| e.faults.is_empty()), "no fault-free run");
        for s in [Split::Train, Split::Val, Split::TestSeen, Split::TestUnseen] {
            assert!(p.iter().any(|e| e.split == s), "no {s:?} run");
        }
        // Unseen topologies never appear outside test_unseen.
        let unseen: std::collections::BTreeSet<&str> = p
            .iter()
            .filter(|e| e.split == Split::TestUnseen)
            .map(|e| e.topology.as_str())
            .collect();
        assert!(
            p.iter()
                .filter(|e| e.split != Split::TestUnseen)
                .all(|e| !unseen.contains(e.topology.as_str()))
        );
        let sizes: Vec<usize> = p.iter().map(|e| e.services).collect();
        assert!(sizes.iter().any(|&n| n <= 6) && sizes.iter().any(|&n| n >= 13));
        assert!(sizes.iter().all(|&n| (4..=41).contains(&n)), "{sizes:?}");
    }

    #[test]
    fn generated_topologies_are_connected_dags_behind_nginx() {
        let mut rng = fastrand::Rng::with_seed(9);
        for i in 0..200 {
            let t = generate_topology(&mut rng, &format!("t{i}"));
            let text = format!(
                "name = \"t\"\n[qos]\ntarget_p99_ms = 50.0\n[load]\nprofile = \"constant\"\nrps = 100\n{}",
                t.body
            );
            let sc = Scenario::parse("t", &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            // Every service is reached from a request's entry.
            let mut reached: std::collections::BTreeSet<String> = sc
                .requests
                .iter()
                .map(|r| r.entry.get_ref().clone())
                .collect();
            loop {
                let more: Vec<String> = sc
                    .services
                    .iter()
                    .filter(|s| reached.contains(s.name.get_ref()))
                    .flat_map(|s| s.calls.iter().map(|c| c.get_ref().clone()))
                    .filter(|c| !reached.contains(c))
                    .collect();
                if more.is_empty() {
                    break;
                }
                reached.extend(more);
            }
            for s in &sc.services {
                if s.name.get_ref() != "nginx" {
                    assert!(
                        reached.contains(s.name.get_ref()),
                        "{} unreached\n{text}",
                        s.name.get_ref()
                    );
                }
            }
            assert!(t.cpu_us_per_request > 100.0);
        }
    }
}

/// How `seer-testbed corpus` runs.
pub struct CorpusOptions {
    pub out: std::path::PathBuf,
    pub seed: u64,
    pub runs: usize,
    pub topologies: usize,
    /// The `seer-testbed` executable that runs each scenario (a child per run).
    pub testbed_bin: std::path::PathBuf,
    pub agent_bin: std::path::PathBuf,
    pub horizons_ms: Vec<u64>,
    /// Stop after this many new runs (the rest wait for the next invocation).
    pub max_new_runs: Option<usize>,
    pub plan_only: bool,
}

/// The plan file: what a corpus directory was planned with (a second invocation must agree).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlanFile {
    pub format: String,
    pub seed: u64,
    pub runs: usize,
    pub topologies: usize,
    pub run_s: f64,
    pub horizons_ms: Vec<u64>,
    pub entries: Vec<Entry>,
}

const PLAN_FORMAT: &str = "seer-corpus-plan-v1";

fn io(what: &str, p: &std::path::Path, e: std::io::Error) -> String {
    format!("{what} {}: {e}", p.display())
}

/// Writes the plan and the scenario files (once), then runs every planned scenario that has
/// no finished run yet, one at a time, printing progress. Finished runs are kept in
/// `OUT/runs/NAME/` (moved there from `NAME.partial` only once the dataset exists), so an
/// interrupted corpus resumes where it stopped; a run that fails is logged in
/// `OUT/runs/NAME.failed.log` and not retried (delete the log to retry it).
pub fn run_corpus(
    o: &CorpusOptions,
    shipped: &[(&str, &str)],
    stopping: &dyn Fn() -> bool,
) -> Result<Tally, String> {
    use std::fs;
    let scen_dir = o.out.join("scenarios");
    let runs_dir = o.out.join("runs");
    for d in [&o.out, &scen_dir, &runs_dir] {
        fs::create_dir_all(d).map_err(|e| io("cannot create", d, e))?;
    }
    let entries = plan(o.seed, o.runs, o.topologies, shipped)?;
    let plan_path = o.out.join("plan.json");
    let file = PlanFile {
        format: PLAN_FORMAT.into(),
        seed: o.seed,
        runs: o.runs,
        topologies: o.topologies,
        run_s: RUN_S,
        horizons_ms: o.horizons_ms.clone(),
        entries: entries.clone(),
    };
    if let Ok(text) = fs::read_to_string(&plan_path) {
        let old: PlanFile = serde_json::from_str(&text).map_err(|e| {
            format!(
                "{}: not a corpus plan ({e}); use another --out",
                plan_path.display()
            )
        })?;
        if (old.seed, old.topologies, old.horizons_ms.clone())
            != (o.seed, o.topologies, o.horizons_ms.clone())
        {
            return Err(format!(
                "{} holds a corpus planned with seed {}, {} topologies, horizons {:?}; \
                 this one is seed {}, {} topologies, horizons {:?}: use another --out, or the same arguments to resume",
                o.out.display(),
                old.seed,
                old.topologies,
                old.horizons_ms,
                o.seed,
                o.topologies,
                o.horizons_ms
            ));
        }
    }
    let text = serde_json::to_string_pretty(&file).map_err(|e| e.to_string())?;
    fs::write(&plan_path, text).map_err(|e| io("cannot write", &plan_path, e))?;
    for e in &entries {
        let p = scen_dir.join(format!("{}.toml", e.name));
        fs::write(&p, &e.toml).map_err(|err| io("cannot write", &p, err))?;
    }
    let mut tally = count_runs(&o.out, &entries);
    println!(
        "corpus: {} runs planned ({} topologies + shipped), {} done, {} failed; scenarios in {}",
        entries.len(),
        o.topologies,
        tally.runs_done,
        tally.runs_failed,
        scen_dir.display()
    );
    if o.plan_only {
        return Ok(tally);
    }
    let mut new_runs = 0;
    for e in &entries {
        let done = runs_dir.join(&e.name);
        let failed = runs_dir.join(format!("{}.failed.log", e.name));
        if done.join("dataset/manifest.json").exists() || failed.exists() {
            continue;
        }
        if stopping() || o.max_new_runs.is_some_and(|m| new_runs >= m) {
            break;
        }
        new_runs += 1;
        let partial = runs_dir.join(format!("{}.partial", e.name));
        let _ = fs::remove_dir_all(&partial);
        let log_path = runs_dir.join(format!("{}.log", e.name));
        let log = fs::File::create(&log_path).map_err(|err| io("cannot create", &log_path, err))?;
        let log2 = log
            .try_clone()
            .map_err(|err| io("cannot open", &log_path, err))?;
        println!(
            "corpus: run {}/{}: {} ({} services, {} hosts, split {}, faults [{}]) ...",
            tally.runs_done + tally.runs_failed + 1,
            entries.len(),
            e.name,
            e.services,
            e.hosts,
            e.split.as_str(),
            e.faults.join(", ")
        );
        let horizons: Vec<String> = o.horizons_ms.iter().map(|h| h.to_string()).collect();
        let status = std::process::Command::new(&o.testbed_bin)
            .arg("run")
            .arg("--scenario")
            .arg(scen_dir.join(format!("{}.toml", e.name)))
            .arg("--duration")
            .arg(format!("{}", e.duration_s))
            .arg("--out")
            .arg(&partial)
            .arg("--agent-bin")
            .arg(&o.agent_bin)
            // The recorded traces must not depend on (or pay for) whatever model is shipped.
            .arg("--agent-arg=--no-predict")
            .arg("--horizon-ms")
            .arg(horizons.join(","))
            .stdout(log)
            .stderr(log2)
            .status()
            .map_err(|err| format!("cannot run {}: {err}", o.testbed_bin.display()))?;
        if stopping() || status.code() == Some(130) {
            let _ = fs::remove_dir_all(&partial);
            println!("corpus: interrupted; {} is run again next time", e.name);
            break;
        }
        if status.success() && partial.join("dataset/manifest.json").exists() {
            let scenario = scen_dir.join(format!("{}.toml", e.name));
            let _ = fs::copy(&scenario, partial.join("scenario.toml"));
            fs::rename(&partial, &done).map_err(|err| io("cannot move", &partial, err))?;
            let _ = fs::rename(&log_path, done.join("testbed.log"));
        } else {
            let _ = fs::rename(&log_path, &failed);
            println!(
                "corpus: {} failed ({status}); its log: {} (delete it to retry)",
                e.name,
                failed.display()
            );
            let _ = fs::remove_dir_all(&partial);
        }
        tally = count_runs(&o.out, &entries);
        println!("{}", progress_line(&tally));
    }
    let t = count_runs(&o.out, &entries);
    write_manifest(&o.out, &file, &t)?;
    Ok(t)
}

/// One line: runs done / planned, hours recorded, violations so far by kind.
pub fn progress_line(t: &Tally) -> String {
    let kinds: Vec<String> = t
        .violations_by_kind
        .iter()
        .map(|(k, n)| format!("{}={n}", if k.is_empty() { "unattributed" } else { k }))
        .collect();
    format!(
        "corpus: {}/{} runs done ({} failed), {:.2} h recorded, {} violations ({})",
        t.runs_done,
        t.runs_planned,
        t.runs_failed,
        t.seconds_recorded / 3600.0,
        t.violations,
        kinds.join(" ")
    )
}

/// Counts what the finished runs under `out` hold.
pub fn count_runs(out: &std::path::Path, entries: &[Entry]) -> Tally {
    let mut t = Tally {
        runs_planned: entries.len(),
        ..Tally::default()
    };
    for e in entries {
        let dir = out.join("runs").join(&e.name);
        if out
            .join("runs")
            .join(format!("{}.failed.log", e.name))
            .exists()
        {
            t.runs_failed += 1;
        }
        let Ok(m) = std::fs::read_to_string(dir.join("dataset/manifest.json")) else {
            continue;
        };
        t.runs_done += 1;
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&m) {
            let ticks = v["ticks"].as_f64().unwrap_or(0.0);
            let tick_ms = v["tick_ms"].as_f64().unwrap_or(0.0);
            t.seconds_recorded += ticks * tick_ms / 1000.0;
        }
        if let Ok(csv) = std::fs::read_to_string(dir.join("violations.csv")) {
            let mut lines = csv.lines();
            let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
            let col = header.iter().position(|h| *h == "fault_kind");
            for l in lines.filter(|l| !l.trim().is_empty()) {
                t.violations += 1;
                let kind = col
                    .and_then(|c| l.split(',').nth(c))
                    .unwrap_or("")
                    .to_string();
                *t.violations_by_kind.entry(kind).or_default() += 1;
            }
        }
    }
    t
}

/// `OUT/manifest.json`: the plan's arguments, the split (run names per split, topologies
/// held out) and the tally.
fn write_manifest(out: &std::path::Path, plan: &PlanFile, t: &Tally) -> Result<(), String> {
    let mut splits: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    let mut unseen: std::collections::BTreeSet<&str> = Default::default();
    for e in &plan.entries {
        if out
            .join("runs")
            .join(&e.name)
            .join("dataset/manifest.json")
            .exists()
        {
            splits.entry(e.split.as_str()).or_default().push(&e.name);
        }
        if e.split == Split::TestUnseen {
            unseen.insert(&e.topology);
        }
    }
    let m = serde_json::json!({
        "format": "seer-corpus-v1",
        "seed": plan.seed,
        "runs_planned": plan.runs,
        "topologies": plan.topologies,
        "run_s": plan.run_s,
        "horizons_ms": plan.horizons_ms,
        "held_out_topologies": unseen,
        "splits": splits,
        "tally": t,
    });
    let p = out.join("manifest.json");
    let text = serde_json::to_string_pretty(&m).map_err(|e| e.to_string())?;
    std::fs::write(&p, text).map_err(|e| io("cannot write", &p, e))
}
