//! Journal + undo across a crash, on real kernel objects (a v1 cpu cgroup) and the emulated
//! resctrl tree.
use std::path::Path;

use super::{
    Actuator,
    cgroup::{CpuAction, CpuCgroup},
    resctrl::Resctrl,
    resctrl_emu::Emulated,
    testutil::{TempDir, V1Cgroup},
};

fn knob(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        .trim()
        .to_string()
}

#[test]
fn crash_then_restart_undoes_what_the_dead_run_left() {
    let Some(cg) = V1Cgroup::new("crash") else {
        println!("SKIP: needs root and a v1 cpu hierarchy at /sys/fs/cgroup/cpu");
        return;
    };
    let emu = Emulated::new("undo-crash", 0xfff, 2, 4);
    let rroot = emu.root();
    let d = TempDir::new("undo-crash-j");
    let jp = d.path().join("run/seer/actions.json");
    let cpu = CpuCgroup::V1 {
        cpu: cg.0.clone(),
        cpuset: None,
    };
    let (q0, p0, s0) = (
        knob(&cg.0.join("cpu.cfs_quota_us")),
        knob(&cg.0.join("cpu.cfs_period_us")),
        knob(&cg.0.join("cpu.shares")),
    );
    {
        let r = Resctrl::probe_with(&rroot, Box::new(emu)).expect("probe");
        let (mut a, rep) = Actuator::open(&jp, Some(r)).expect("actuator");
        assert_eq!(rep, Default::default(), "fresh journal: nothing to undo");
        a.cpu(
            "api",
            &cpu,
            &CpuAction::Quota {
                quota_us: 20_000,
                period_us: 50_000,
            },
        )
        .expect("quota");
        a.cpu("api", &cpu, &CpuAction::Weight(50)).expect("weight");
        a.l3_ways("api", 4, &[]).expect("ways");
        assert_eq!(knob(&cg.0.join("cpu.cfs_quota_us")), "20000");
        assert_eq!(knob(&cg.0.join("cpu.shares")), "512");
        assert_eq!(
            a.journal().entries().len(),
            5,
            "{:?}",
            a.journal().entries()
        );
        // Crash: the actuator goes without undo, its journal lock with it (as the kernel drops
        // a dead process' flock); the emulated tree stays on disk for the Resctrl below.
        a.crash();
    }
    assert!(jp.exists(), "journal survives the crash");
    // A new run: the emulator's files are still on disk; reopen the tree with a fresh emulator
    // view over the same directory.
    let emu2 = Emulated::reopen(&rroot);
    let r = Resctrl::probe_with(&rroot, Box::new(emu2)).expect("probe again");
    let (a, rep) = Actuator::open(&jp, Some(r)).expect("actuator after crash");
    assert!(rep.failed.is_empty(), "{rep:?}");
    assert_eq!(rep.restored, 5, "{rep:?}");
    assert_eq!(knob(&cg.0.join("cpu.cfs_quota_us")), q0);
    assert_eq!(knob(&cg.0.join("cpu.cfs_period_us")), p0);
    assert_eq!(knob(&cg.0.join("cpu.shares")), s0);
    assert!(!rroot.join("seer-api").exists());
    assert!(knob(&rroot.join("schemata")).contains("L3:0=fff;1=fff"));
    assert!(a.journal().entries().is_empty() && !jp.exists());
    let _ = std::fs::remove_dir_all(&rroot);
}

#[test]
fn a_service_whose_cgroup_vanished_is_a_clean_gone_not_a_failure() {
    let Some(cg) = V1Cgroup::new("gone") else {
        println!("SKIP: needs root and a v1 cpu hierarchy at /sys/fs/cgroup/cpu");
        return;
    };
    let d = TempDir::new("undo-gone-j");
    let (mut a, _) = Actuator::open(&d.path().join("j.json"), None).expect("actuator");
    let cpu = CpuCgroup::V1 {
        cpu: cg.0.clone(),
        cpuset: None,
    };
    a.cpu(
        "short-lived",
        &cpu,
        &CpuAction::Quota {
            quota_us: 10_000,
            period_us: 100_000,
        },
    )
    .expect("quota");
    // The service exits and its cgroup is removed while the action is in effect.
    std::fs::remove_dir(&cg.0).expect("rmdir cgroup");
    let rep = a.undo_all();
    assert_eq!((rep.restored, rep.gone), (0, 2), "{rep:?}");
    assert!(rep.failed.is_empty(), "{rep:?}");
    // A new action on the vanished cgroup says so.
    let e = a
        .cpu("short-lived", &cpu, &CpuAction::Weight(10))
        .expect_err("cgroup gone");
    assert!(e.to_string().contains("gone"), "{e}");
}

#[test]
fn permission_denied_is_reported_with_what_to_do() {
    let Some(cg) = V1Cgroup::new("perm") else {
        println!("SKIP: needs root and a v1 cpu hierarchy at /sys/fs/cgroup/cpu");
        return;
    };
    let quota = cg.0.join("cpu.cfs_quota_us");
    let before = knob(&quota);
    let d = TempDir::new("undo-perm-j");
    // The journal's folder belongs to the uid the actuator runs as (it refuses any other).
    let jd = d.path().join("j");
    std::fs::create_dir(&jd).expect("mkdir");
    std::fs::set_permissions(&jd, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .expect("chmod");
    std::os::unix::fs::chown(&jd, Some(65534), Some(65534)).expect("chown");
    let jp = jd.join("j.json");
    // One thread drops to uid 65534 (the raw syscall changes only the calling thread's
    // credentials, and clears its capabilities) and tries the action there.
    let outcome = std::thread::spawn(move || {
        // SAFETY: setresuid with constant ids; affects only this thread (raw syscall, not the
        // glibc wrapper that broadcasts to every thread).
        let rc = unsafe { libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534) };
        assert_eq!(rc, 0, "setresuid: {}", std::io::Error::last_os_error());
        let (mut a, _) = Actuator::open(&jp, None).expect("actuator");
        let cpu = CpuCgroup::V1 {
            cpu: cg.0.clone(),
            cpuset: None,
        };
        let r = a.cpu(
            "api",
            &cpu,
            &CpuAction::Quota {
                quota_us: 1000,
                period_us: 100_000,
            },
        );
        let left = a.journal().entries().len();
        (r.map_err(|e| e.to_string()), cg, left)
    })
    .join()
    .expect("thread");
    let (r, cg, left) = outcome;
    assert_eq!(left, 0, "a refused write leaves nothing to undo");
    let e = r.expect_err("uid 65534 cannot write cgroup files");
    assert!(
        e.contains("permission denied") && e.contains("cpu.cfs_"),
        "{e}"
    );
    assert!(e.contains("need root"), "says what to do: {e}");
    assert_eq!(knob(&quota), before, "nothing changed");
    drop(cg);
}

/// Before: whatever path a journal entry named was written with its "old" value at the next
/// start (as root). Now an entry that names no object seer changes is refused, kept, reported,
/// and the file is left alone; the other entries are still undone.
#[test]
fn a_journal_entry_naming_another_file_is_not_written() {
    let d = TempDir::new("undo-refuse");
    let victim = d.path().join("precious");
    std::fs::write(&victim, "keep me").expect("victim");
    let knob = d.path().join("cg/cpu.max");
    std::fs::create_dir_all(knob.parent().expect("dir")).expect("cg");
    std::fs::write(&knob, "20000 100000").expect("knob");
    let j = d.path().join("j/actions.json");
    std::fs::create_dir_all(j.parent().expect("dir")).expect("j");
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(
            j.parent().expect("dir"),
            std::fs::Permissions::from_mode(0o700),
        )
        .expect("chmod");
    }
    let json = serde_json::json!({
        "next_id": 2,
        "entries": [
            {"id": 0, "service": "evil", "change": {"kind": "cgroup_file", "path": victim, "old": ""}},
            {"id": 1, "service": "svc", "change": {"kind": "cgroup_file", "path": knob, "old": "max 100000"}},
        ]
    });
    std::fs::write(&j, json.to_string()).expect("journal");
    let (act, rep) = Actuator::open(&j, None).expect("open");
    assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "keep me");
    assert_eq!(rep.failed.len(), 1, "{rep:?}");
    assert!(
        rep.failed[0].contains("not a cgroup control file"),
        "{rep:?}"
    );
    assert_eq!(rep.restored, 1, "the genuine entry is undone: {rep:?}");
    assert_eq!(knob_text(&knob), "max 100000");
    assert_eq!(
        act.journal().entries().len(),
        1,
        "the refused entry is kept"
    );
}

fn knob_text(p: &Path) -> String {
    std::fs::read_to_string(p).expect("read").trim().to_string()
}

/// Before: the undo wrote the journaled value back whatever the file held by then, so a
/// quota an operator (or the soak's fault injector) set after seer's step was clobbered. Now
/// the value stays when the file no longer holds what seer wrote; otherwise it is restored.
#[test]
fn an_undo_leaves_a_value_someone_else_set_since() {
    let d = TempDir::new("undo-changed");
    let theirs = d.path().join("a/cpu.max");
    let ours = d.path().join("b/cpu.max");
    for (p, v) in [(&theirs, "max 100000"), (&ours, "125000 100000")] {
        std::fs::create_dir_all(p.parent().expect("dir")).expect("cg");
        std::fs::write(p, v).expect("knob");
    }
    let j = d.path().join("j/actions.json");
    std::fs::create_dir_all(j.parent().expect("dir")).expect("j");
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(
            j.parent().expect("dir"),
            std::fs::Permissions::from_mode(0o700),
        )
        .expect("chmod");
    }
    let entry = |id: u32, p: &Path| {
        serde_json::json!({"id": id, "service": "svc", "change": {
            "kind": "cgroup_file", "path": p, "old": "100000 100000", "wrote": "125000 100000"}})
    };
    let json = serde_json::json!({"next_id": 2, "entries": [entry(0, &theirs), entry(1, &ours)]});
    std::fs::write(&j, json.to_string()).expect("journal");
    let (act, rep) = Actuator::open(&j, None).expect("open");
    assert_eq!(
        knob_text(&theirs),
        "max 100000",
        "someone else's value stays"
    );
    assert_eq!(
        knob_text(&ours),
        "100000 100000",
        "seer's own step is undone"
    );
    assert!(rep.failed.is_empty(), "{rep:?}");
    assert_eq!((rep.restored, rep.gone), (1, 1), "{rep:?}");
    assert!(act.journal().entries().is_empty());
}
