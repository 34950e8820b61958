//! cgroup CPU on this host's real v1 cpu hierarchy, with a real busy process in it.
use std::{
    process::{Child, Command},
    time::{Duration, Instant},
};

use super::{
    Actuator,
    cgroup::{CpuAction, CpuCgroup},
    testutil::TempDir,
    undo_tests::V1Cgroup,
};

struct Busy(Child);
impl Drop for Busy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// CPU time (utime + stime, in clock ticks) of one process.
fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let rest = s.rsplit_once(')').expect("comm").1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

/// Share of one CPU used by `pid` over `d` (1.0 = one full core).
fn share(pid: u32, d: Duration) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let (t0, c0) = (Instant::now(), cpu_ticks(pid));
    std::thread::sleep(d);
    (cpu_ticks(pid) - c0) as f64 / hz / t0.elapsed().as_secs_f64()
}

#[test]
fn quota_caps_a_real_busy_loop_and_undo_lifts_it() {
    let Some(cg) = V1Cgroup::new("busy") else {
        println!("SKIP: needs root and a v1 cpu hierarchy at /sys/fs/cgroup/cpu");
        return;
    };
    let busy = Busy(
        Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .expect("spawn busy loop"),
    );
    let pid = busy.0.id();
    std::fs::write(cg.0.join("tasks"), pid.to_string()).expect("move busy loop into cgroup");
    // The service's cgroup as the agent finds it, from /proc/PID/cgroup.
    let found = CpuCgroup::of_pid(pid).expect("cgroup of pid");
    assert_eq!(
        found,
        CpuCgroup::V1 {
            cpu: cg.0.clone(),
            cpuset: found_cpuset(&found)
        }
    );
    let free = share(pid, Duration::from_millis(1000));
    let d = TempDir::new("cg-busy-j");
    let (mut a, _) = Actuator::open(&d.path().join("j.json"), None).expect("actuator");
    a.cpu(
        "busy",
        &found,
        &CpuAction::Quota {
            quota_us: 20_000,
            period_us: 100_000,
        },
    )
    .expect("quota");
    let capped = share(pid, Duration::from_millis(1500));
    let rep = a.undo_all();
    assert!(rep.failed.is_empty(), "{rep:?}");
    let after = share(pid, Duration::from_millis(1000));
    println!("busy loop CPU share: free {free:.2}, 20% quota {capped:.2}, after undo {after:.2}");
    assert!(
        (0.12..=0.25).contains(&capped),
        "20% quota -> {capped:.2} of a CPU"
    );
    assert!(
        free > 2.0 * capped && after > 2.0 * capped,
        "free {free:.2} after {after:.2}"
    );
}

fn found_cpuset(c: &CpuCgroup) -> Option<std::path::PathBuf> {
    match c {
        CpuCgroup::V1 { cpuset, .. } => cpuset.clone(),
        CpuCgroup::V2 { .. } => None,
    }
}

#[test]
fn v2_and_v1_files_for_each_action() {
    let v2 = CpuCgroup::V2 {
        dir: "/cg/app".into(),
    };
    let v1 = CpuCgroup::V1 {
        cpu: "/cpu/app".into(),
        cpuset: Some("/cpuset/app".into()),
    };
    let q = CpuAction::Quota {
        quota_us: 50_000,
        period_us: 100_000,
    };
    assert_eq!(
        v2.writes(&q).expect("v2"),
        vec![("/cg/app/cpu.max".into(), "50000 100000".into())]
    );
    assert_eq!(
        v1.writes(&q).expect("v1"),
        vec![
            ("/cpu/app/cpu.cfs_period_us".into(), "100000".into()),
            ("/cpu/app/cpu.cfs_quota_us".into(), "50000".into())
        ]
    );
    assert_eq!(v1.writes(&CpuAction::Weight(200)).expect("w")[0].1, "2048");
    assert_eq!(
        v2.writes(&CpuAction::Weight(200)).expect("w")[0].0,
        std::path::PathBuf::from("/cg/app/cpu.weight")
    );
    assert_eq!(
        v1.writes(&CpuAction::Cpus("1".into())).expect("c")[0].0,
        std::path::PathBuf::from("/cpuset/app/cpuset.cpus")
    );
    let no_cpuset = CpuCgroup::V1 {
        cpu: "/cpu/app".into(),
        cpuset: None,
    };
    let e = no_cpuset
        .writes(&CpuAction::Cpus("1".into()))
        .expect_err("no cpuset");
    assert!(e.to_string().contains("cpuset"), "{e}");
    // The host's root cgroup is refused, whatever the action.
    for root in [
        CpuCgroup::V1 {
            cpu: "/sys/fs/cgroup/cpu".into(),
            cpuset: None,
        },
        CpuCgroup::V2 {
            dir: "/sys/fs/cgroup".into(),
        },
    ] {
        let (CpuCgroup::V1 { cpu: d, .. } | CpuCgroup::V2 { dir: d }) = &root;
        if d.join("cgroup.procs").exists() {
            let e = root.writes(&q).expect_err("root cgroup");
            assert!(e.to_string().contains("root cgroup"), "{e}");
        }
    }
}

fn allowed_cpus(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| {
            l.strip_prefix("Cpus_allowed_list:")
                .map(|v| v.trim().to_string())
        })
        .expect("Cpus_allowed_list")
}

#[test]
fn cpuset_pins_a_real_process_and_undo_restores_it() {
    let base = std::path::Path::new("/sys/fs/cgroup/cpuset");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !base.join("cpuset.cpus").exists() {
        println!("SKIP: needs root and a v1 cpuset hierarchy at /sys/fs/cgroup/cpuset");
        return;
    }
    let all = std::fs::read_to_string(base.join("cpuset.cpus")).expect("root cpus");
    let all = all.trim();
    if all == "0" {
        println!("SKIP: needs at least 2 CPUs to pin to one of them");
        return;
    }
    let dir = base.join(format!("seer-test-pin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir cpuset cgroup");
    let mems = std::fs::read_to_string(base.join("cpuset.mems")).expect("mems");
    std::fs::write(dir.join("cpuset.mems"), mems.trim()).expect("mems");
    std::fs::write(dir.join("cpuset.cpus"), all).expect("cpus");
    let busy = Busy(
        Command::new("sleep")
            .arg("20")
            .spawn()
            .expect("spawn sleep"),
    );
    let pid = busy.0.id();
    std::fs::write(dir.join("tasks"), pid.to_string()).expect("move into cpuset");
    let cg = CpuCgroup::of_pid(pid).expect("cgroup of pid");
    let d = TempDir::new("cg-pin-j");
    let (mut a, _) = Actuator::open(&d.path().join("j.json"), None).expect("actuator");
    a.cpu("pinned", &cg, &CpuAction::Cpus("1".into()))
        .expect("pin");
    assert_eq!(allowed_cpus(pid), "1");
    let rep = a.undo_all();
    assert!(rep.failed.is_empty(), "{rep:?}");
    assert_eq!(allowed_cpus(pid), all, "undo gives the CPUs back");
    drop(busy);
    let _ = std::fs::remove_dir(&dir);
}
