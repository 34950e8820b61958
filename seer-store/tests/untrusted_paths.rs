//! The store and the export run as root beside services seer does not control: nothing they
//! create may follow a name someone else planted, and a folder another user can write is
//! refused (issue 14, finding 1).

mod common;

use common::temp_store;
use seer_store::{Store, StoreConfig, export};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The permission bits, in octal.
fn mode(p: &Path) -> String {
    format!(
        "{:o}",
        std::fs::symlink_metadata(p).expect("stat").mode() & 0o7777
    )
}

/// A file that must come out of the test as it went in.
fn victim(dir: &Path) -> std::path::PathBuf {
    let v = dir.join("victim");
    std::fs::write(&v, "precious\n").expect("victim");
    chmod(&v, 0o644);
    v
}

fn assert_intact(v: &Path) {
    assert_eq!(
        std::fs::read_to_string(v).expect("victim readable"),
        "precious\n",
        "{} was written through a planted link",
        v.display()
    );
}

#[test]
fn store_folder_writable_by_others_is_refused() {
    for m in [0o777, 0o770, 0o1777, 0o702] {
        let top = tempfile::tempdir().expect("tempdir");
        let dir = top.path().join("store");
        std::fs::create_dir(&dir).expect("mkdir");
        chmod(&dir, m);
        let path = dir.join("seer.redb");
        let e = Store::open(&path, StoreConfig::default())
            .err()
            .unwrap_or_else(|| panic!("a store in a {m:o} folder opened"));
        let msg = e.to_string();
        assert!(msg.contains(&dir.display().to_string()), "{msg}");
        assert!(msg.contains("writable"), "{msg}");
        assert!(!path.exists(), "the store file was created anyway");
    }
}

#[test]
fn store_folder_owned_by_another_user_is_refused() {
    if !is_root() {
        eprintln!("skipped: needs root to give a folder to nobody");
        return;
    }
    let top = tempfile::tempdir().expect("tempdir");
    let dir = top.path().join("store");
    std::fs::create_dir(&dir).expect("mkdir");
    chmod(&dir, 0o755);
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).expect("chown nobody");
    let path = dir.join("seer.redb");
    let e = Store::open(&path, StoreConfig::default())
        .expect_err("a store in a folder owned by nobody opened");
    let msg = e.to_string();
    assert!(msg.contains(&dir.display().to_string()), "{msg}");
    assert!(msg.contains("65534"), "{msg} does not name the owner");
    assert!(!path.exists(), "the store file was created anyway");
}

#[test]
fn store_file_that_is_a_symlink_is_not_followed() {
    let top = tempfile::tempdir().expect("tempdir");
    let elsewhere = top.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).expect("mkdir");
    // Dangling: following it would create a file where the link's owner chose.
    let target = elsewhere.join("created-through-link");
    let dir = top.path().join("store");
    std::fs::create_dir(&dir).expect("mkdir");
    let path = dir.join("seer.redb");
    std::os::unix::fs::symlink(&target, &path).expect("plant");
    let e =
        Store::open(&path, StoreConfig::default()).expect_err("a store behind a symlink opened");
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    assert!(!target.exists(), "the store followed the link");
    // An empty file behind the link must stay empty too.
    std::fs::write(&target, "").expect("empty victim");
    assert!(Store::open(&path, StoreConfig::default()).is_err());
    assert_eq!(std::fs::metadata(&target).expect("stat").len(), 0);
}

#[test]
fn new_store_folder_and_file_are_private() {
    let top = tempfile::tempdir().expect("tempdir");
    chmod(top.path(), 0o755);
    let dir = top.path().join("a/b");
    let path = dir.join("seer.redb");
    drop(Store::open(&path, StoreConfig::default()).expect("open"));
    assert_eq!(mode(&top.path().join("a")), "700");
    assert_eq!(mode(&dir), "700");
    assert_eq!(mode(&path), "600");
}

#[test]
fn export_tmp_files_planted_as_symlinks_are_not_followed() {
    let (dir, _path, store) = temp_store(StoreConfig::default());
    store
        .write_tick(common::T0, &[common::sample(0, 1.0)], &[])
        .expect("write");
    let v = victim(dir.path());
    let out = dir.path().join("export");
    std::fs::create_dir(&out).expect("mkdir");
    chmod(&out, 0o700);
    for name in ["samples.arrow.tmp", "manifest.json.tmp"] {
        std::os::unix::fs::symlink(&v, out.join(name)).expect("plant");
    }
    export(&store, 0, u64::MAX, &out).expect("export");
    assert_intact(&v);
    assert_eq!(mode(&out.join("samples.arrow")), "600");
}

#[test]
fn export_folder_writable_by_others_is_refused() {
    let (dir, _path, store) = temp_store(StoreConfig::default());
    let out = dir.path().join("export");
    std::fs::create_dir(&out).expect("mkdir");
    chmod(&out, 0o777);
    let e = export(&store, 0, u64::MAX, &out).expect_err("export into a world-writable folder");
    let msg = e.to_string();
    assert!(msg.contains(&out.display().to_string()), "{msg}");
    assert!(msg.contains("writable"), "{msg}");
    assert!(!out.join("samples.arrow").exists());
}

#[test]
fn new_export_folder_is_private() {
    let (dir, _path, store) = temp_store(StoreConfig::default());
    let out = dir.path().join("new-export");
    export(&store, 0, u64::MAX, &out).expect("export");
    assert_eq!(mode(&out), "700");
}
