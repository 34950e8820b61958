//! Training export: one Arrow IPC file, one row per tick x service, plus `manifest.json`.
//!
//! Columns of `samples.arrow`, in order:
//! - `ts_ms` int64: tick time, ms since the Unix epoch
//! - `service_id` uint32, `service` dictionary<int32, utf8>: the service's name ("" if unknown)
//! - one float32 column per channel, named as in `CHANNEL_NAMES`
//! - only when QoS events overlap the range: `violation` uint8 (1 while an end-to-end QoS
//!   violation is under way) and `initiator` uint8 (1 on the row of the service that initiated it)
//!
//! Rows are ordered by tick, then service id. Record batches are LZ4-compressed by default
//! (standard Arrow IPC compression). `pyarrow.ipc.open_file(path).read_all()` (or
//! `pandas.read_feather(path)`) reads it as is. The manifest gives services in topological order
//! (callees before callers) when a call graph was recorded, else by id; the model's N axis.
//! The file is written under a temporary name and renamed; the manifest is written last. The
//! folder must belong to the agent's uid and be writable by no one else (created 0700 if
//! missing), and no name in it is followed (see [`crate::safefs`]).

use crate::read::TickSamples;
use crate::safefs;
use crate::{QosEvent, Store, StoreError};
use arrow_array::types::Int32Type;
use arrow_array::{
    ArrayRef, DictionaryArray, Float32Array, Int32Array, Int64Array, RecordBatch, StringArray,
    UInt8Array, UInt32Array,
};
use arrow_ipc::CompressionType;
use arrow_ipc::writer::{FileWriter, IpcWriteOptions};
use arrow_schema::{ArrowError, DataType, Field, Schema};
use seer_common::sample::{CHANNEL_NAMES, CHANNELS};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;

/// Name of the data file inside the export folder.
pub const DATA_FILE: &str = "samples.arrow";
/// Name of the manifest inside the export folder.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Rows per Arrow record batch.
const BATCH_ROWS: usize = 1 << 16;

/// What [`export`] wrote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExportSummary {
    pub data_file: PathBuf,
    pub manifest_file: PathBuf,
    pub rows: u64,
    pub ticks: u64,
    pub services: usize,
    pub first_tick_ms: Option<u64>,
    pub last_tick_ms: Option<u64>,
    /// Size of the data file.
    pub data_bytes: u64,
    /// Whether label columns were written.
    pub labelled: bool,
}

fn io_err<'a>(dir: &'a Path, op: &'static str) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::ExportIo {
        dir: dir.to_owned(),
        op,
        source,
    }
}

fn arrow_err<'a>(dir: &'a Path, op: &'static str) -> impl FnOnce(ArrowError) -> StoreError + 'a {
    move |source| StoreError::ExportArrow {
        dir: dir.to_owned(),
        op,
        source,
    }
}

/// Column buffers of one record batch.
struct Columns {
    ts: Vec<i64>,
    id: Vec<u32>,
    name: Vec<i32>,
    values: Vec<Vec<f32>>,
    violation: Vec<u8>,
    initiator: Vec<u8>,
}

impl Columns {
    fn new() -> Self {
        Self {
            ts: Vec::with_capacity(BATCH_ROWS),
            id: Vec::with_capacity(BATCH_ROWS),
            name: Vec::with_capacity(BATCH_ROWS),
            values: (0..CHANNELS)
                .map(|_| Vec::with_capacity(BATCH_ROWS))
                .collect(),
            violation: Vec::new(),
            initiator: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        self.ts.len()
    }

    fn into_batch(
        self,
        schema: &Arc<Schema>,
        names: &ArrayRef,
        labelled: bool,
    ) -> Result<RecordBatch, ArrowError> {
        let keys = Int32Array::from(self.name);
        let dict = DictionaryArray::<Int32Type>::try_new(keys, names.clone())?;
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(self.ts)),
            Arc::new(UInt32Array::from(self.id)),
            Arc::new(dict),
        ];
        cols.extend(
            self.values
                .into_iter()
                .map(|v| Arc::new(Float32Array::from(v)) as ArrayRef),
        );
        if labelled {
            cols.push(Arc::new(UInt8Array::from(self.violation)));
            cols.push(Arc::new(UInt8Array::from(self.initiator)));
        }
        RecordBatch::try_new(schema.clone(), cols)
    }
}

fn arrow_schema(labelled: bool) -> Schema {
    let mut fields = vec![
        Field::new("ts_ms", DataType::Int64, false),
        Field::new("service_id", DataType::UInt32, false),
        Field::new(
            "service",
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            false,
        ),
    ];
    fields.extend(
        CHANNEL_NAMES
            .iter()
            .map(|n| Field::new(*n, DataType::Float32, false)),
    );
    if labelled {
        fields.push(Field::new("violation", DataType::UInt8, false));
        fields.push(Field::new("initiator", DataType::UInt8, false));
    }
    Schema::new(fields)
}

/// Labels of one tick: whether a violation is under way, and who initiated it.
fn labels_at(events: &[QosEvent], ts: u64, initiators: &mut Vec<u32>) -> bool {
    initiators.clear();
    let mut violation = false;
    for e in events {
        if e.start_ms <= ts && ts < e.end_ms {
            violation = true;
            if let Some(s) = e.initiator {
                initiators.push(s.0);
            }
        }
    }
    violation
}

/// Compression of the Arrow record batches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    None,
    /// LZ4 frame, which pyarrow reads natively: a third of the size, as fast to write.
    #[default]
    Lz4,
}

/// Options of [`export_with`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportOptions {
    pub compression: Compression,
}

/// Writes ticks `from_ms <= ts < to_ms` of `store` to `out_dir` (created if needed) as
/// `samples.arrow` and `manifest.json`, with default options; see the module docs.
pub fn export(
    store: &Store,
    from_ms: u64,
    to_ms: u64,
    out_dir: &Path,
) -> Result<ExportSummary, StoreError> {
    export_with(store, from_ms, to_ms, out_dir, ExportOptions::default())
}

/// [`export`] with options.
pub fn export_with(
    store: &Store,
    from_ms: u64,
    to_ms: u64,
    out_dir: &Path,
    options: ExportOptions,
) -> Result<ExportSummary, StoreError> {
    // The folder may be anywhere the operator said (/tmp/x): it must be ours and writable by
    // no one else, and nothing in it is followed (see `safefs`).
    let dir = safefs::private_dir(out_dir)?;
    let services = store.services()?;
    let events = store.qos_events(from_ms, to_ms)?;
    let labelled = !events.is_empty();
    let key_of: HashMap<u32, i32> = services
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.0, i as i32))
        .collect();
    let unknown_key = services.len() as i32;
    let names: ArrayRef = Arc::new(StringArray::from_iter_values(
        services
            .iter()
            .map(|s| s.name.as_str())
            .chain(std::iter::once("")),
    ));
    let schema = Arc::new(arrow_schema(labelled));
    let data_path = out_dir.join(DATA_FILE);
    let file = dir.create_tmp(OsStr::new(DATA_FILE))?;
    let ipc_options = IpcWriteOptions::default()
        .try_with_compression(match options.compression {
            Compression::None => None,
            Compression::Lz4 => Some(CompressionType::LZ4_FRAME),
        })
        .map_err(arrow_err(out_dir, "start data file"))?;
    let mut writer = FileWriter::try_new_with_options(
        BufWriter::with_capacity(4 << 20, file),
        &schema,
        ipc_options,
    )
    .map_err(arrow_err(out_dir, "start data file"))?;

    let mut ticks = 0u64;
    let mut rows = 0u64;
    let mut first_tick = None;
    let mut last_tick = None;
    let mut unknown: BTreeSet<u32> = BTreeSet::new();
    // Decoding runs here; Arrow encoding and file writes run on a second thread.
    let (tx, rx) = mpsc::sync_channel::<RecordBatch>(2);
    let produced: Result<(), StoreError> = std::thread::scope(|scope| {
        let write = scope.spawn(move || -> Result<(), ArrowError> {
            for batch in rx {
                writer.write(&batch)?;
            }
            writer.finish()
        });
        let produced = (|| -> Result<(), StoreError> {
            let mut iter = store.range(from_ms, to_ms)?;
            let mut tick = TickSamples::default();
            let mut cols = Columns::new();
            let mut initiators = Vec::new();
            while iter.next_into(&mut tick)? {
                ticks += 1;
                first_tick.get_or_insert(tick.ts_ms);
                last_tick = Some(tick.ts_ms);
                let violation = labelled && labels_at(&events, tick.ts_ms, &mut initiators);
                for s in &tick.samples {
                    cols.ts.push(tick.ts_ms as i64);
                    cols.id.push(s.service.0);
                    cols.name.push(match key_of.get(&s.service.0) {
                        Some(&k) => k,
                        None => {
                            unknown.insert(s.service.0);
                            unknown_key
                        }
                    });
                    for (c, v) in cols.values.iter_mut().zip(s.values) {
                        c.push(v);
                    }
                    if labelled {
                        cols.violation.push(u8::from(violation));
                        cols.initiator
                            .push(u8::from(initiators.contains(&s.service.0)));
                    }
                }
                rows += tick.samples.len() as u64;
                if cols.len() >= BATCH_ROWS {
                    let full = std::mem::replace(&mut cols, Columns::new());
                    let batch = full
                        .into_batch(&schema, &names, labelled)
                        .map_err(arrow_err(out_dir, "build record batch"))?;
                    if tx.send(batch).is_err() {
                        return Ok(()); // the writer failed; its error is reported below
                    }
                }
            }
            if cols.len() > 0 {
                let batch = cols
                    .into_batch(&schema, &names, labelled)
                    .map_err(arrow_err(out_dir, "build record batch"))?;
                let _ = tx.send(batch);
            }
            Ok(())
        })();
        drop(tx);
        let written = write
            .join()
            .unwrap_or_else(|_| Err(ArrowError::ExternalError("writer thread panicked".into())));
        produced?;
        written.map_err(arrow_err(out_dir, "write data file"))
    });
    produced?;
    dir.commit_tmp(OsStr::new(DATA_FILE))?;
    let data_bytes = dir
        .open_existing(OsStr::new(DATA_FILE), false)?
        .ok_or_else(|| io_err(out_dir, "stat data file")(std::io::ErrorKind::NotFound.into()))?
        .metadata()
        .map_err(io_err(out_dir, "stat data file"))?
        .len();

    let manifest = crate::manifest::Written {
        from_ms,
        to_ms,
        first_tick_ms: first_tick,
        last_tick_ms: last_tick,
        ticks,
        rows,
        services: &services,
        unknown: &unknown,
        events: &events,
    };
    let (manifest_path, service_count) = crate::manifest::write(store, &dir, &manifest)?;
    Ok(ExportSummary {
        data_file: data_path,
        manifest_file: manifest_path,
        rows,
        ticks,
        services: service_count,
        first_tick_ms: first_tick,
        last_tick_ms: last_tick,
        data_bytes,
        labelled,
    })
}
