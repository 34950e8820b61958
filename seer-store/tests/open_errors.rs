//! Every way opening a store can fail gives a clear error that names the path.

mod common;

use seer_store::schema::{META, META_SCHEMA_VERSION, SCHEMA_VERSION};
use seer_store::{Store, StoreConfig, StoreError};
use std::path::Path;

fn open_err(path: &Path) -> StoreError {
    match Store::open(path, StoreConfig::default()) {
        Ok(_) => panic!("{} opened", path.display()),
        Err(e) => e,
    }
}

fn assert_names(e: &StoreError, path: &Path, advice: &str) {
    let msg = e.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "{msg:?} does not name the path"
    );
    assert!(msg.contains(advice), "{msg:?} does not say {advice:?}");
}

/// A store with some ticks, closed.
fn written_store(path: &Path) {
    let store = Store::open(path, StoreConfig::default()).expect("open");
    let samples: Vec<_> = (0..300).map(|i| common::sample(i, i as f32)).collect();
    for t in 0..200 {
        store
            .write_tick(common::T0 + t * 100, &samples, &[])
            .expect("write");
    }
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("new.redb");
    drop(Store::open(&path, StoreConfig::default()).expect("create"));
    {
        let db = redb::Database::open(&path).expect("raw open");
        let txn = db.begin_write().expect("begin");
        txn.open_table(META)
            .expect("meta")
            .insert(META_SCHEMA_VERSION, SCHEMA_VERSION + 1)
            .expect("bump version");
        txn.commit().expect("commit");
    }
    let e = open_err(&path);
    assert!(
        matches!(e, StoreError::NewerSchema { found, supported, .. } if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION),
        "{e:?}"
    );
    assert_names(&e, &path, "upgrade seer-agent");
}

#[test]
fn truncated_file_is_damaged_not_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cut.redb");
    written_store(&path);
    let full = std::fs::read(&path).expect("read");
    for cut in [100, full.len() / 2, full.len() - 4096] {
        std::fs::write(&path, &full[..cut]).expect("truncate");
        let e = open_err(&path);
        assert!(
            matches!(&e, StoreError::Damaged { detail, .. } if detail.contains("truncated")),
            "cut at {cut}: {e:?}"
        );
        assert_names(&e, &path, "move it aside");
    }
}

#[test]
fn file_that_is_not_redb_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notes.txt");
    std::fs::write(
        &path,
        "these are not the samples you are looking for\n".repeat(100),
    )
    .expect("write");
    let e = open_err(&path);
    assert!(matches!(e, StoreError::NotRedb { .. }), "{e:?}");
    assert_names(&e, &path, "not a seer trace store");
    // And it was left alone.
    assert!(
        std::fs::read_to_string(&path)
            .expect("read")
            .starts_with("these are not")
    );

    let folder = dir.path().join("folder");
    std::fs::create_dir(&folder).expect("mkdir");
    let e = open_err(&folder);
    assert!(matches!(e, StoreError::NotRedb { .. }), "a folder: {e:?}");
}

#[test]
fn redb_file_of_another_program_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("other.redb");
    {
        let db = redb::Database::create(&path).expect("create");
        let txn = db.begin_write().expect("begin");
        let t: redb::TableDefinition<u64, u64> = redb::TableDefinition::new("theirs");
        txn.open_table(t)
            .expect("table")
            .insert(1, 2)
            .expect("insert");
        txn.commit().expect("commit");
    }
    let e = open_err(&path);
    assert!(matches!(e, StoreError::Foreign { .. }), "{e:?}");
    assert_names(&e, &path, "not a seer trace store");
}

#[test]
fn unwritable_directory_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let locked = dir.path().join("ro");
    std::fs::create_dir(&locked).expect("mkdir");
    let mut perms = std::fs::metadata(&locked).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o555);
    std::fs::set_permissions(&locked, perms).expect("chmod");
    let mut path = locked.join("trace.redb");
    if std::fs::write(locked.join("probe"), b"x").is_ok() {
        // Root ignores permission bits; sysfs refuses new files even to root.
        eprintln!("running as root: using /sys for an unwritable folder");
        path = Path::new("/sys/seer-store-test/trace.redb").to_owned();
    }
    let e = open_err(&path);
    assert!(matches!(e, StoreError::Unwritable { .. }), "{e:?}");
    assert_names(&e, &path, "make the folder writable");
}

#[test]
fn second_open_is_locked() {
    let (_dir, path, _store) = common::temp_store(StoreConfig::default());
    let e = open_err(&path);
    assert!(matches!(e, StoreError::Locked { .. }), "{e:?}");
    assert_names(&e, &path, "is a seer agent running");
}

#[test]
fn bad_config_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = StoreConfig::default();
    config.retention.max_bytes = 1000;
    let e = match Store::open(dir.path().join("x.redb"), config) {
        Ok(_) => panic!("opened"),
        Err(e) => e,
    };
    assert!(matches!(e, StoreError::Config(_)), "{e:?}");
}
