#![no_main]
//! The store's chunk decoder on arbitrary bytes: a damaged (or planted) store file must give
//! `CodecError`, never a panic, a loop or a huge allocation.
use libfuzzer_sys::fuzz_target;
use seer_common::sample::CHANNELS;
use seer_store::{AggValues, codec::ChunkReader};

fuzz_target!(|data: &[u8]| {
    // First byte: which table's reader (samples or per-second aggregates); next four: the row
    // key's first service id; the rest: the chunk as stored.
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let Some((id, chunk)) = rest.split_first_chunk::<4>() else {
        return;
    };
    let first_id = u32::from_le_bytes(*id);
    let Ok(mut r) = ChunkReader::new(first_id, chunk) else {
        assert!(chunk.len() < 4, "a header of 4 bytes is refused");
        return;
    };
    let announced = r.len();
    let mut samples = [0.0f32; CHANNELS];
    let mut agg = AggValues::default();
    let mut entries = 0usize;
    let mut last = None;
    loop {
        let step = if which & 1 == 0 {
            r.next_samples(&mut samples)
        } else {
            r.next_agg(&mut agg)
        };
        match step {
            Ok(Some(id)) => {
                entries += 1;
                assert!(
                    entries <= usize::from(announced),
                    "more entries than announced"
                );
                if last.is_none() {
                    assert_eq!(id, first_id, "the first entry has the row key's id");
                }
                assert!(
                    last.is_none_or(|l| l <= id),
                    "ids go down: {last:?} then {id}"
                );
                last = Some(id);
            }
            // The whole chunk decoded: exactly the announced entries, nothing after them.
            Ok(None) => {
                assert_eq!(entries, usize::from(announced), "entries read");
                break;
            }
            Err(_) => break,
        }
    }
});
