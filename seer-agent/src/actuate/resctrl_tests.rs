//! resctrl against the emulated tree (this kernel has no resctrl: see `resctrl_emu`).
use super::{
    Actuator,
    journal::Journal,
    resctrl::{Resctrl, ResctrlError},
    resctrl_emu::Emulated,
    testutil::TempDir,
};

/// 12 ways (fff), min 2 bits, 4 CLOSIDs; the emulator is owned by the returned Resctrl.
fn setup(name: &str) -> (Resctrl, std::path::PathBuf) {
    let emu = Emulated::new(name, 0xfff, 2, 4);
    let root = emu.root();
    let r = Resctrl::probe_with(&root, Box::new(emu)).expect("probe emulated tree");
    (r, root)
}

fn read(p: &std::path::Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

#[test]
fn probe_reads_info_like_the_kernel_publishes_it() {
    let (r, _root) = setup("rc-probe");
    let l3 = r.l3.expect("L3");
    assert_eq!(
        (l3.cbm_mask, l3.min_cbm_bits, l3.num_closids),
        (0xfff, 2, 4)
    );
    let mb = r.mb.expect("MB");
    assert_eq!((mb.min_bandwidth, mb.bandwidth_gran), (10, 10));
}

#[test]
fn host_without_resctrl_is_unavailable_not_a_crash() {
    let d = TempDir::new("rc-none");
    let e = Resctrl::probe(&d.path().join("resctrl")).expect_err("nothing there");
    assert!(matches!(e, ResctrlError::Unavailable { .. }), "{e}");
    assert!(e.to_string().contains("CAT/MBA unavailable"), "{e}");
    // And the real mount point on this kernel (no CONFIG_X86_CPU_RESCTRL) says the same.
    if !std::path::Path::new("/sys/fs/resctrl/info").exists() {
        let e =
            Resctrl::probe(std::path::Path::new("/sys/fs/resctrl")).expect_err("no resctrl here");
        println!("this host: {e}");
        assert!(matches!(e, ResctrlError::Unavailable { .. }), "{e}");
        // An actuator without resctrl refuses cache actions with that state, no panic.
        let j = TempDir::new("rc-none-j");
        let (mut a, _) = Actuator::open(&j.path().join("j.json"), None).expect("actuator");
        let e = a.l3_ways("db", 2, &[]).expect_err("no CAT");
        assert!(e.to_string().contains("unavailable"), "{e}");
    }
}

#[test]
fn kernel_mask_rules_are_mirrored() {
    let (r, _root) = setup("rc-rules");
    let l3 = r.l3.expect("L3");
    assert_eq!(l3.validate(0x0f0), Ok(()));
    assert_eq!(
        l3.validate(0x0f3).expect_err("gap"),
        "The mask f3 has non-consecutive 1-bits"
    );
    assert_eq!(
        l3.validate(0x1).expect_err("1 bit"),
        "Need at least 2 bits in the mask"
    );
    assert_eq!(
        l3.validate(0x1000).expect_err("beyond cbm_mask"),
        "Mask out of range"
    );
    assert_eq!(l3.validate(0).expect_err("empty"), "Mask out of range");
    let mb = r.mb.expect("MB");
    assert_eq!(mb.validate(35), Ok(40), "rounded up to bandwidth_gran");
    assert!(
        mb.validate(5)
            .expect_err("below min")
            .contains("out of range [10,100]")
    );
}

#[test]
fn a_mask_the_hardware_refuses_is_a_write_error_with_the_kernels_reason() {
    let (r, root) = setup("rc-refuse");
    let d = TempDir::new("rc-refuse-j");
    let mut j = Journal::open(&d.path().join("j.json")).expect("journal");
    r.create_group(&mut j, "db").expect("mkdir");
    // Written raw, bypassing our own validation: the (emulated) kernel is the judge.
    let e = r.write_raw("db", "L3:0=f0f\n").expect_err("non-contiguous");
    match &e {
        ResctrlError::Refused { status, line, .. } => {
            assert_eq!(status, "The mask f0f has non-consecutive 1-bits");
            assert_eq!(line, "L3:0=f0f");
        }
        other => panic!("expected Refused, got {other}"),
    }
    assert!(e.to_string().contains("non-consecutive"), "{e}");
    let e = r.write_raw("db", "L3:7=ff\n").expect_err("no domain 7");
    assert!(e.to_string().contains("Unknown domain"), "{e}");
    // All-or-nothing: the group's schemata is untouched by the refused writes.
    assert!(read(&root.join("seer-db/schemata")).contains("L3:0=fff;1=fff"));
}

#[test]
fn ways_and_bandwidth_for_a_service_with_its_task_moved() {
    let (r, root) = setup("rc-apply");
    let d = TempDir::new("rc-apply-j");
    let jp = d.path().join("j.json");
    let (mut a, _) = Actuator::open(&jp, Some(r)).expect("actuator");
    let me = std::process::id();
    let mask = a.l3_ways("db", 4, &[me]).expect("4 ways");
    assert_eq!(mask, 0xf00, "exclusive ways from the top");
    assert!(read(&root.join("seer-db/schemata")).contains("L3:0=f00;1=f00"));
    assert!(
        read(&root.join("schemata")).contains("L3:0=ff;1=ff"),
        "default group shrunk"
    );
    assert_eq!(
        a.resctrl().expect("r").tasks("db").expect("tasks"),
        vec![me]
    );
    assert!(
        !read(&root.join("tasks"))
            .lines()
            .any(|l| l == me.to_string())
    );
    assert_eq!(a.mb("db", 35, &[]).expect("mb"), 40);
    assert!(read(&root.join("seer-db/schemata")).contains("MB:0=40;1=40"));
    // Undo: group gone, task back in the default group, default mask restored.
    let rep = a.undo_all();
    assert!(rep.failed.is_empty(), "{rep:?}");
    assert!(!root.join("seer-db").exists());
    assert!(
        read(&root.join("tasks"))
            .lines()
            .any(|l| l == me.to_string())
    );
    assert!(read(&root.join("schemata")).contains("L3:0=fff;1=fff"));
    assert!(!jp.exists(), "journal empty after undo");
}

#[test]
fn two_services_asking_for_the_same_ways_get_disjoint_ways_or_a_clear_refusal() {
    let (r, root) = setup("rc-share");
    let d = TempDir::new("rc-share-j");
    let mut j = Journal::open(&d.path().join("j.json")).expect("journal");
    assert_eq!(r.set_l3_ways(&mut j, "a", 6).expect("a"), 0xfc0);
    // b wants 6 too: 6 are free, but the default group must keep its floor (2 ways).
    let e = r.set_l3_ways(&mut j, "b", 6).expect_err("not enough left");
    match &e {
        ResctrlError::WaysExhausted { free, holders, .. } => {
            assert_eq!(*free, 4);
            assert_eq!(holders, &vec!["seer-a".to_string()]);
        }
        other => panic!("expected WaysExhausted, got {other}"),
    }
    assert!(
        !root.join("seer-b").exists(),
        "a refused request leaves no group"
    );
    // b asking for what is left gets disjoint ways; the default group keeps 2.
    assert_eq!(r.set_l3_ways(&mut j, "b", 4).expect("b"), 0x3c);
    assert!(read(&root.join("schemata")).contains("L3:0=3;1=3"));
    // a leaves: the default group regrows only up to b's ways.
    r.release(&mut j, "a").expect("release a");
    assert!(read(&root.join("schemata")).contains("L3:0=3;1=3"));
    r.release(&mut j, "b").expect("release b");
    assert!(read(&root.join("schemata")).contains("L3:0=fff;1=fff"));
    assert!(j.entries().is_empty(), "{:?}", j.entries());
}

#[test]
fn closids_run_out_cleanly() {
    let (r, _root) = setup("rc-closid");
    let d = TempDir::new("rc-closid-j");
    let mut j = Journal::open(&d.path().join("j.json")).expect("journal");
    for s in ["a", "b", "c"] {
        r.create_group(&mut j, s).expect("group");
    }
    let e = r
        .create_group(&mut j, "d")
        .expect_err("4 CLOSIDs: root + 3");
    assert!(
        matches!(e, ResctrlError::NoClosid { num_closids: 4, .. }),
        "{e}"
    );
    assert_eq!(j.entries().len(), 3, "the failed group is not journaled");
}

#[test]
fn a_task_that_exited_is_skipped_with_a_clear_outcome() {
    let (r, _root) = setup("rc-gone");
    let d = TempDir::new("rc-gone-j");
    let (mut a, _) = Actuator::open(&d.path().join("j.json"), Some(r)).expect("actuator");
    let mut child = std::process::Command::new("true")
        .spawn()
        .expect("spawn true");
    let pid = child.id();
    child.wait().expect("wait");
    // The exited task is logged and skipped; the service still gets its ways.
    assert_eq!(a.l3_ways("svc", 2, &[pid]).expect("ways"), 0xc00);
    let e = a
        .resctrl()
        .expect("r")
        .move_task("svc", pid)
        .expect_err("gone");
    assert!(matches!(e, ResctrlError::TaskGone { .. }), "{e}");
    assert!(a.undo_all().failed.is_empty());
}

#[test]
fn undoing_one_service_keeps_the_others_ways_exclusive() {
    let (r, root) = setup("rc-undo-one");
    let d = TempDir::new("rc-undo-one-j");
    let (mut a, _) = Actuator::open(&d.path().join("j.json"), Some(r)).expect("actuator");
    assert_eq!(a.l3_ways("a", 4, &[]).expect("a"), 0xf00);
    assert_eq!(a.l3_ways("b", 2, &[]).expect("b"), 0x0c0);
    assert!(read(&root.join("schemata")).contains("L3:0=3f;1=3f"));
    let rep = a.undo_service("a");
    assert!(rep.failed.is_empty(), "{rep:?}");
    assert!(!root.join("seer-a").exists());
    // The default group regrows below b only: b's ways stay exclusive.
    assert!(read(&root.join("schemata")).contains("L3:0=3f;1=3f"));
    assert!(read(&root.join("seer-b/schemata")).contains("L3:0=c0;1=c0"));
    let rep = a.undo_all();
    assert!(rep.failed.is_empty(), "{rep:?}");
    assert!(read(&root.join("schemata")).contains("L3:0=fff;1=fff"));
}
