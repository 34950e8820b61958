//! The training export: Arrow IPC that pyarrow reads as is, and a manifest.

mod common;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Int32Type, Int64Type, UInt8Type, UInt32Type};
use arrow_array::{Array, RecordBatch};
use common::{T0, temp_store};
use seer_common::sample::{CHANNEL_NAMES, ServiceId};
use seer_store::synth::Synth;
use seer_store::{Compression, ExportOptions, QosEvent, Store, StoreConfig, export, export_with};
use std::path::Path;
use std::process::Command;

/// Services 0..4 (3 has no name), 30 ticks; graph 0 -> 1 -> 2, 0 -> 3.
fn fixture(store: &Store) {
    for (id, name) in [(0, "frontend"), (1, "api"), (2, "db")] {
        store
            .upsert_service(ServiceId(id), name, &format!("/svc/{name}"), T0)
            .expect("upsert");
    }
    let edges = [(0, 1), (1, 2), (0, 3)].map(|(a, b)| (ServiceId(a), ServiceId(b)));
    let synth = Synth::new(9);
    let mut samples = Vec::new();
    for k in 0..30 {
        synth.fill(4, T0 + k * 100, &mut samples);
        store
            .write_tick(T0 + k * 100, &samples, &edges)
            .expect("write");
    }
    store
        .record_qos_event(&QosEvent {
            start_ms: T0 + 1000,
            end_ms: T0 + 1500,
            initiator: Some(ServiceId(2)),
            kind: "p99>50ms".into(),
        })
        .expect("event");
}

fn read_batches(path: &Path) -> Vec<RecordBatch> {
    let file = std::fs::File::open(path).expect("open export");
    arrow_ipc::reader::FileReader::try_new(file, None)
        .expect("an Arrow IPC file")
        .collect::<Result<_, _>>()
        .expect("batches decode")
}

#[test]
fn export_reads_back_with_labels_and_manifest() {
    let (dir, _path, store) = temp_store(StoreConfig::default());
    fixture(&store);
    let out = dir.path().join("export");
    // [T0 + 500, T0 + 2500): ticks 5..24.
    let summary = export(&store, T0 + 500, T0 + 2500, &out).expect("export");
    assert_eq!((summary.ticks, summary.rows), (20, 80));
    assert!(summary.labelled);
    assert_eq!(summary.first_tick_ms, Some(T0 + 500));
    assert_eq!(summary.last_tick_ms, Some(T0 + 2400));

    let batches = read_batches(&summary.data_file);
    let schema = batches[0].schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let mut expected = vec!["ts_ms", "service_id", "service"];
    expected.extend(CHANNEL_NAMES);
    expected.extend(["violation", "initiator"]);
    assert_eq!(names, expected);

    let synth = Synth::new(9);
    let mut row = 0;
    for b in &batches {
        let ts = b.column(0).as_primitive::<Int64Type>();
        let id = b.column(1).as_primitive::<UInt32Type>();
        let svc = b.column(2).as_dictionary::<Int32Type>();
        let svc_names = svc.values().as_string::<i32>();
        let violation = b
            .column(3 + CHANNEL_NAMES.len())
            .as_primitive::<UInt8Type>();
        let initiator = b
            .column(4 + CHANNEL_NAMES.len())
            .as_primitive::<UInt8Type>();
        for i in 0..b.num_rows() {
            let (t, s) = (ts.value(i) as u64, id.value(i));
            assert_eq!(t, T0 + 500 + (row / 4) * 100, "row {row}");
            assert_eq!(s, (row % 4) as u32, "rows by tick, then service id");
            let name = svc_names.value(svc.keys().value(i) as usize);
            assert_eq!(name, ["frontend", "api", "db", ""][s as usize]);
            let want = synth.values(ServiceId(s), t);
            for (c, w) in want.iter().enumerate() {
                let col = b.column(3 + c).as_primitive::<Float32Type>();
                assert_eq!(
                    col.value(i).to_bits(),
                    w.to_bits(),
                    "{} of {s} at {t}",
                    CHANNEL_NAMES[c]
                );
            }
            let in_violation = (T0 + 1000..T0 + 1500).contains(&t);
            assert_eq!(violation.value(i), u8::from(in_violation));
            assert_eq!(initiator.value(i), u8::from(in_violation && s == 2));
            assert_eq!(b.column(3).null_count(), 0);
            row += 1;
        }
    }
    assert_eq!(row, 80);

    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&summary.manifest_file).expect("manifest"))
            .expect("json");
    assert_eq!(manifest["tick_ms"], 100);
    assert_eq!(manifest["rows"], 80);
    assert_eq!(manifest["ticks"], 20);
    assert_eq!(manifest["service_order"], "topological");
    let order: Vec<u64> = manifest["services"]
        .as_array()
        .expect("services")
        .iter()
        .map(|s| s["id"].as_u64().expect("id"))
        .collect();
    assert_eq!(order, [2, 1, 3, 0], "callees before callers");
    assert_eq!(manifest["services"][0]["name"], "db");
    assert_eq!(
        manifest["channels"].as_array().expect("channels").len(),
        CHANNEL_NAMES.len()
    );
    assert_eq!(
        manifest["label_columns"],
        serde_json::json!(["violation", "initiator"])
    );
    assert_eq!(manifest["qos_events"][0]["initiator"], 2);
    assert_eq!(manifest["first_tick_ms"], T0 + 500);
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn export_without_labels_or_graph_and_uncompressed() {
    let (dir, _path, store) = temp_store(StoreConfig::default());
    let samples: Vec<_> = (0..3).map(|i| common::sample(i * 10, i as f32)).collect();
    store.write_tick(T0, &samples, &[]).expect("write");
    let out = dir.path().join("plain");
    let options = ExportOptions {
        compression: Compression::None,
    };
    let summary = export_with(&store, 0, u64::MAX, &out, options).expect("export");
    assert!(!summary.labelled);
    let batches = read_batches(&summary.data_file);
    assert_eq!(batches[0].num_columns(), 3 + CHANNEL_NAMES.len());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&summary.manifest_file).expect("manifest"))
            .expect("json");
    assert_eq!(manifest["service_order"], "id");
    assert_eq!(
        manifest["services"].as_array().expect("services").len(),
        3,
        "unnamed services listed"
    );
    // An empty range still gives a readable file.
    let empty = export(&store, T0 + 1, T0 + 2, &dir.path().join("empty")).expect("export");
    assert_eq!(empty.rows, 0);
    assert!(read_batches(&empty.data_file).is_empty());
}

/// pyarrow, the training side's reader, opens the file with no custom code.
#[test]
fn pyarrow_reads_the_export() {
    let probe = Command::new("python3")
        .args(["-c", "import pyarrow"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!(
            "SKIPPED pyarrow_reads_the_export: python3 with pyarrow is not installed (pip install pyarrow)"
        );
        return;
    }
    let (dir, _path, store) = temp_store(StoreConfig::default());
    fixture(&store);
    let out = dir.path().join("export");
    let summary = export(&store, 0, u64::MAX, &out).expect("export");
    let script = r#"
import json, sys
import pyarrow.ipc as ipc
d = sys.argv[1]
t = ipc.open_file(d + "/samples.arrow").read_all()
m = json.load(open(d + "/manifest.json"))
assert t.num_rows == m["rows"] == 120, (t.num_rows, m["rows"])
assert t.column_names[:3] == ["ts_ms", "service_id", "service"], t.column_names
assert t.column_names[3:3 + len(m["channels"])] == m["channels"]
assert str(t.schema.field("nic_rx_pkts").type) == "float"
rows = t.to_pylist()
assert rows[0]["service"] == "frontend" and rows[2]["service"] == "db", rows[:3]
assert sum(r["violation"] for r in rows) == 5 * 4
assert [r["service_id"] for r in rows if r["initiator"]] == [2] * 5
print("pyarrow ok", t.num_rows, [s["id"] for s in m["services"]])
"#;
    let outp = Command::new("python3")
        .args(["-c", script, out.to_str().expect("utf-8 path")])
        .output()
        .expect("run python3");
    assert!(
        outp.status.success(),
        "pyarrow failed: {}{}",
        String::from_utf8_lossy(&outp.stdout),
        String::from_utf8_lossy(&outp.stderr)
    );
    assert!(String::from_utf8_lossy(&outp.stdout).contains("pyarrow ok 120"));
    assert_eq!(summary.rows, 120);
}
