//! Unit tests of the ground-truth analysis, the onset shapes and the plan (no root needed).
use crate::{
    faults::FaultRecord,
    load::records::{Record, Status},
    plan::Plan,
    scenario::{FaultKind, Onset, Scenario},
    shape, truth,
};

const SMALL: &str = include_str!("../scenarios/small.toml");

fn rec(t_ms: i64, lat_ms: u64) -> Record {
    Record {
        send_unix_us: 0,
        t_us: t_ms * 1000,
        latency_us: lat_ms * 1000,
        request: 0,
        status: Status::Ok,
    }
}

fn fault(start_s: f64, end_s: f64) -> FaultRecord {
    FaultRecord {
        id: 3,
        kind: FaultKind::CpuQuota,
        service: "timeline".into(),
        host: "app2".into(),
        resource: "cpu",
        intensity: 0.01,
        unit: "cores",
        onset: Onset::Ramp,
        ramp_s: Some(2.0),
        burst_on_s: None,
        burst_period_s: None,
        random: false,
        start_s,
        end_s,
        applied_unix_ms: 0,
        removed_unix_ms: 0,
        error: None,
        hog_cpus: None,
        victim_cpus: None,
    }
}

#[test]
fn cpu_lists_and_pinning() {
    use crate::scenario::{format_cpu_list, parse_cpu_list};
    assert_eq!(parse_cpu_list("0-2,5, 7-8\n").unwrap(), [0, 1, 2, 5, 7, 8]);
    assert_eq!(format_cpu_list(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
    assert!(parse_cpu_list("2-1").is_err());
    assert!(parse_cpu_list("x").is_err());
    assert!(parse_cpu_list("").is_err());
    // Default: round-robin, one CPU each (threads = 1).
    let sc = Scenario::parse("t", SMALL).expect("small");
    let c = crate::plan::assign_cpus(&sc, &[0, 1]).unwrap();
    assert_eq!(c, [vec![0], vec![1], vec![0], vec![1], vec![0], vec![1]]);
    // Explicit lists; a CPU the testbed lacks is an error naming the service.
    let pinned = SMALL.replace(
        "name = \"user\"\nkind = \"rpc\"",
        "name = \"user\"\nkind = \"rpc\"\ncpus = \"1,3\"",
    );
    let sc = Scenario::parse("t", &pinned).expect("pinned");
    let e = crate::plan::assign_cpus(&sc, &[0, 1]).unwrap_err();
    assert!(e.contains("\"user\"") && e.contains("CPU 3"), "{e}");
    assert_eq!(
        crate::plan::assign_cpus(&sc, &[0, 1, 2, 3]).unwrap()[3],
        [1, 3]
    );
    let bad = SMALL.replace(
        "name = \"user\"\nkind = \"rpc\"",
        "name = \"user\"\nkind = \"rpc\"\ncpus = \"one\"",
    );
    let e = Scenario::parse("t", &bad).unwrap_err().to_string();
    assert!(e.contains("bad CPU list"), "{e}");
}

#[test]
fn violation_found_and_attributed() {
    let sc = Scenario::parse("t", SMALL).expect("small");
    // 100 requests/s for 10 s; 200 ms latency between 4 s and 6 s.
    let recs: Vec<Record> = (0..1000)
        .map(|i| {
            let t = i * 10;
            rec(t, if (4000..6000).contains(&t) { 200 } else { 2 })
        })
        .collect();
    let ws = truth::windows(&recs, &sc.qos, 10_000);
    let mut vs = truth::violations(&ws, &sc.qos, 1_000_000);
    assert_eq!(vs.len(), 1, "{vs:?}");
    assert_eq!(vs[0].start_ms, 4100);
    assert!(vs[0].end_ms >= 6000 && vs[0].end_ms <= 7000, "{vs:?}");
    assert_eq!(vs[0].start_unix_ms, 1_004_100);
    truth::attribute(&mut vs, &[fault(3.5, 6.0)], &sc.qos);
    assert_eq!(vs[0].initiator.as_deref(), Some("timeline"));
    assert_eq!(vs[0].fault_kind.as_deref(), Some("cpu_quota"));
    assert_eq!(vs[0].onset.as_deref(), Some("ramp"));
    assert_eq!(vs[0].lead_ms, Some(600));
    // A violation long after every fault is nobody's.
    let mut late = vs.clone();
    late[0].start_ms = 20_000;
    late[0].initiator = None;
    truth::attribute(&mut late, &[fault(3.5, 6.0)], &sc.qos);
    assert!(late[0].initiator.is_none());
}

#[test]
fn failed_requests_count_as_slow() {
    let sc = Scenario::parse("t", SMALL).expect("small");
    let recs: Vec<Record> = (0..300)
        .map(|i| {
            let mut r = rec(i * 10, 1);
            if i % 10 == 0 {
                r.status = Status::Timeout;
            }
            r
        })
        .collect();
    let ws = truth::windows(&recs, &sc.qos, 3000);
    assert!(!truth::violations(&ws, &sc.qos, 0).is_empty());
}

#[test]
fn shapes() {
    let t = format!(
        "{SMALL}\n[[fault]]\nkind = \"cpu_quota\"\nservice = \"home\"\nstart_s = 10\nduration_s = 10\nintensity = 0.1\nonset = \"ramp\"\nramp_s = 2\n\
         [[fault]]\nkind = \"load_spike\"\nstart_s = 10\nduration_s = 10\nintensity = 3\nonset = \"bursts\"\nburst_on_s = 1\nburst_period_s = 4\n"
    );
    let sc = Scenario::parse("t", &t).expect("parse");
    let (ramp, bursts) = (&sc.faults[0], &sc.faults[1]);
    assert_eq!(shape::level(ramp, 9.9), 0.0);
    assert!((shape::level(ramp, 11.0) - 0.5).abs() < 1e-9);
    assert_eq!(shape::level(ramp, 15.0), 1.0);
    assert_eq!(shape::level(ramp, 20.0), 0.0);
    assert_eq!(shape::level(bursts, 10.5), 1.0);
    assert_eq!(shape::level(bursts, 12.0), 0.0);
    assert_eq!(shape::level(bursts, 14.2), 1.0);
    let r = crate::load::profile::rate(&sc, 10.5);
    assert!((r - 450.0).abs() < 1e-6, "{r}");
}

#[test]
fn plan_layout() {
    let sc = Scenario::parse("t", SMALL).expect("small");
    let p = Plan::new(&sc, "abc").expect("plan");
    assert_eq!(p.hosts.len(), 4);
    assert_eq!(p.front.port(), 8080);
    let ips: std::collections::HashSet<_> = p.hosts.iter().map(|h| h.ip).collect();
    assert_eq!(ips.len(), 4);
    for h in &p.hosts {
        assert_eq!(h.ip.octets()[..3], [198, 51, 100]);
        assert!(h.netns.starts_with("seer-tb-abc-"));
    }
    let t = p.service("timeline").expect("timeline");
    let u = p.service("user").expect("user");
    assert_eq!(t.addr.ip(), u.addr.ip(), "same host");
    assert_ne!(t.addr.port(), u.addr.port());
    assert_eq!(t.cgroup, "seer-tb-abc/timeline");
}

#[test]
fn an_auto_target_is_a_multiple_of_the_healthy_p99_before_the_first_fault() {
    let sc = Scenario::parse("t", SMALL).expect("small");
    // 2 ms until 5 s, then 8 ms (a fault at 5 s), 200 rps for 10 s.
    let recs: Vec<Record> = (0..2000)
        .map(|i| {
            let t = i * 5;
            rec(t, if t < 5000 { 2 } else { 8 })
        })
        .collect();
    let ws = truth::windows(&recs, &sc.qos, 10_000);
    let mut qos = sc.qos.clone();
    qos.target_p99_ms = 1.0;
    qos.auto_x = Some(3.0);
    // Healthy median p99 2 ms -> 6 ms: the 8 ms part is a violation.
    let q = truth::calibrate(&qos, &ws, Some(5000));
    assert!((q.target_p99_ms - 6.0).abs() < 0.01, "{}", q.target_p99_ms);
    assert_eq!(truth::violations(&ws, &q, 0).len(), 1);
    // target_p99_ms is a floor.
    qos.target_p99_ms = 30.0;
    assert_eq!(truth::calibrate(&qos, &ws, Some(5000)).target_p99_ms, 30.0);
    // Without auto_x the QoS is as written; without a fault the whole run is healthy.
    assert_eq!(
        truth::calibrate(&sc.qos, &ws, Some(5000)).target_p99_ms,
        sc.qos.target_p99_ms
    );
    qos.target_p99_ms = 1.0;
    let whole = truth::calibrate(&qos, &ws, None).target_p99_ms;
    assert!(whole > 6.0, "{whole}");
}
