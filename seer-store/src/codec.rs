//! Lossless, compact encoding of one tick's samples (or one second's aggregates) into chunks.
//!
//! Chunk layout:
//! ```text
//! u8 kind (1 = samples, 2 = per-second aggregates) | u8 channels C | u16 LE entry count
//! per entry, services in strictly ascending id order:
//!   varint id delta (0 for the chunk's first entry, whose id is the row key's)
//!   varint tick count                                 (aggregates only)
//!   ceil(V/8) bytes presence bitmap, bit i = value i is not +0.0 (V = C, or 3C for min/mean/max)
//!   one tagged varint per present value, tag in the low two bits:
//!     0 = non-negative integer n, 1 = negative integer -n, 2 = n / 256, 3 = raw f32 bits
//! ```
//! Counters and gauges are mostly small integers, so a service-tick takes about 20-30 bytes
//! instead of 52. Decoding never panics on bad input: it returns [`CodecError`].

use crate::schema::CHUNK_MAX;
use seer_common::sample::CHANNELS;

pub(crate) const KIND_SAMPLES: u8 = 1;
pub(crate) const KIND_AGG: u8 = 2;
const HEADER: usize = 4;
/// 2^60: integers below it (as f32) are encoded as integers.
const INT_LIMIT: f32 = 1_152_921_504_606_846_976.0;
const NEG_ZERO: u32 = 0x8000_0000;

/// Why a stored chunk does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("chunk shorter than its header")]
    ShortHeader,
    #[error("chunk kind {found}, expected {expected}")]
    Kind { found: u8, expected: u8 },
    #[error("chunk ends inside an entry")]
    Truncated,
    #[error("varint longer than 64 bits")]
    Varint,
    #[error("raw float larger than 32 bits")]
    Float,
    #[error("service id overflows 32 bits")]
    IdOverflow,
    #[error("{0} bytes left after the last entry")]
    Trailing(usize),
}

/// Per-second min/mean/max of one service.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AggValues {
    /// Ticks that went into the aggregate.
    pub count: u32,
    pub min: [f32; CHANNELS],
    pub mean: [f32; CHANNELS],
    pub max: [f32; CHANNELS],
}

#[inline]
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[inline]
fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

#[inline]
fn get_varint(data: &[u8], pos: &mut usize) -> Result<u64, CodecError> {
    let mut result = 0u64;
    let mut shift = 0u32;
    loop {
        let b = *data.get(*pos).ok_or(CodecError::Truncated)?;
        *pos += 1;
        result |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(result);
        }
        shift += 7;
        if shift > 63 {
            return Err(CodecError::Varint);
        }
    }
}

/// Appends `v` exactly (bit for bit, NaN payloads included).
#[inline]
pub(crate) fn put_value(out: &mut Vec<u8>, v: f32) {
    let bits = v.to_bits();
    if bits & NEG_ZERO == 0 {
        if v < INT_LIMIT && v.fract() == 0.0 {
            put_varint(out, (v as u64) << 2);
            return;
        }
        let w = v * 256.0;
        if w < INT_LIMIT && w.fract() == 0.0 {
            let n = w as u64;
            if ((n as f32) / 256.0).to_bits() == bits {
                put_varint(out, (n << 2) | 2);
                return;
            }
        }
    } else if bits != NEG_ZERO && v > -INT_LIMIT && v.fract() == 0.0 {
        put_varint(out, (((-v) as u64) << 2) | 1);
        return;
    }
    put_varint(out, (u64::from(bits) << 2) | 3);
}

#[inline]
pub(crate) fn get_value(data: &[u8], pos: &mut usize) -> Result<f32, CodecError> {
    let x = get_varint(data, pos)?;
    let n = x >> 2;
    Ok(match x & 3 {
        0 => n as f32,
        1 => -(n as f32),
        2 => n as f32 / 256.0,
        _ => f32::from_bits(u32::try_from(n).map_err(|_| CodecError::Float)?),
    })
}

/// One chunk inside [`ChunkEncoder`]'s buffer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ChunkSpan {
    pub first_id: u32,
    pub start: usize,
    pub end: usize,
}

/// Encodes entries (ascending ids) into chunks of at most [`CHUNK_MAX`] bytes. Reused across
/// ticks so the tick path does not allocate once warmed up.
#[derive(Debug)]
pub(crate) struct ChunkEncoder {
    kind: u8,
    buf: Vec<u8>,
    spans: Vec<ChunkSpan>,
    body: Vec<u8>,
    open: bool,
    count: u16,
    last_id: u32,
}

impl ChunkEncoder {
    pub fn new(kind: u8) -> Self {
        Self {
            kind,
            buf: Vec::with_capacity(64 << 10),
            spans: Vec::with_capacity(32),
            body: Vec::with_capacity(512),
            open: false,
            count: 0,
            last_id: 0,
        }
    }

    pub fn reset(&mut self) {
        self.buf.clear();
        self.spans.clear();
        self.open = false;
    }

    fn values_per_entry(&self) -> usize {
        if self.kind == KIND_AGG {
            3 * CHANNELS
        } else {
            CHANNELS
        }
    }

    fn put_values<'v>(&mut self, values: impl Iterator<Item = &'v f32> + Clone) {
        let mask_at = self.body.len();
        self.body
            .resize(mask_at + self.values_per_entry().div_ceil(8), 0);
        for (i, v) in values.clone().enumerate() {
            if v.to_bits() != 0 {
                self.body[mask_at + i / 8] |= 1 << (i % 8);
            }
        }
        for v in values {
            if v.to_bits() != 0 {
                put_value(&mut self.body, *v);
            }
        }
    }

    /// Adds one service's samples. Ids must be strictly ascending within one tick.
    pub fn push_samples(&mut self, id: u32, values: &[f32; CHANNELS]) {
        self.body.clear();
        self.put_values(values.iter());
        self.append(id);
    }

    /// Adds one service's per-second aggregate. Ids must be strictly ascending.
    pub fn push_agg(&mut self, id: u32, agg: &AggValues) {
        self.body.clear();
        put_varint(&mut self.body, u64::from(agg.count));
        let triples = (0..CHANNELS).flat_map(|c| [&agg.min[c], &agg.mean[c], &agg.max[c]]);
        self.put_values(triples);
        self.append(id);
    }

    fn append(&mut self, id: u32) {
        if self.open {
            let delta = u64::from(id.wrapping_sub(self.last_id));
            let start = self.spans.last().map_or(0, |s| s.start);
            let len = self.buf.len() - start;
            if self.count < u16::MAX && len + varint_len(delta) + self.body.len() <= CHUNK_MAX {
                put_varint(&mut self.buf, delta);
                self.buf.extend_from_slice(&self.body);
                self.count += 1;
                self.last_id = id;
                return;
            }
            self.close();
        }
        let start = self.buf.len();
        self.buf
            .extend_from_slice(&[self.kind, CHANNELS as u8, 0, 0]);
        put_varint(&mut self.buf, 0);
        self.buf.extend_from_slice(&self.body);
        self.spans.push(ChunkSpan {
            first_id: id,
            start,
            end: start,
        });
        self.open = true;
        self.count = 1;
        self.last_id = id;
    }

    fn close(&mut self) {
        if !self.open {
            return;
        }
        let end = self.buf.len();
        if let Some(span) = self.spans.last_mut() {
            span.end = end;
            self.buf[span.start + 2..span.start + 4].copy_from_slice(&self.count.to_le_bytes());
        }
        self.open = false;
    }

    /// Closes the last chunk; afterwards [`Self::chunks`] lists all of them.
    pub fn finish(&mut self) {
        self.close();
    }

    pub fn chunks(&self) -> impl Iterator<Item = (u32, &[u8])> + '_ {
        self.spans
            .iter()
            .map(|s| (s.first_id, &self.buf[s.start..s.end]))
    }

    pub fn encoded_bytes(&self) -> usize {
        self.buf.len()
    }

    pub fn chunk_count(&self) -> usize {
        self.spans.len()
    }
}

/// Reads the entries of one chunk in order. Public for the fuzz package (`fuzz/`), which feeds
/// it arbitrary bytes; the store's readers are its only other users.
#[doc(hidden)]
#[derive(Debug)]
pub struct ChunkReader<'a> {
    data: &'a [u8],
    pos: usize,
    kind: u8,
    channels: usize,
    left: u16,
    id: u32,
    first: bool,
}

impl<'a> ChunkReader<'a> {
    pub fn new(first_id: u32, data: &'a [u8]) -> Result<Self, CodecError> {
        if data.len() < HEADER {
            return Err(CodecError::ShortHeader);
        }
        Ok(Self {
            data,
            pos: HEADER,
            kind: data[0],
            channels: usize::from(data[1]),
            left: u16::from_le_bytes([data[2], data[3]]),
            id: first_id,
            first: true,
        })
    }

    /// Entries the header announces that are not read yet (a capacity hint, not a check).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u16 {
        self.left
    }

    fn check_kind(&self, kind: u8) -> Result<(), CodecError> {
        if self.kind == kind {
            Ok(())
        } else {
            Err(CodecError::Kind {
                found: self.kind,
                expected: kind,
            })
        }
    }

    /// Advances to the next entry; returns its id, or None after the last one.
    fn next_id(&mut self) -> Result<Option<u32>, CodecError> {
        if self.left == 0 {
            return match self.data.len() - self.pos {
                0 => Ok(None),
                n => Err(CodecError::Trailing(n)),
            };
        }
        self.left -= 1;
        let delta = get_varint(self.data, &mut self.pos)?;
        let delta = u32::try_from(delta).map_err(|_| CodecError::IdOverflow)?;
        if self.first {
            self.first = false;
        } else {
            self.id = self.id.checked_add(delta).ok_or(CodecError::IdOverflow)?;
        }
        Ok(Some(self.id))
    }

    /// Calls `f(i, value)` for every value of the entry; absent values are 0.0.
    fn values(&mut self, n: usize, mut f: impl FnMut(usize, f32)) -> Result<(), CodecError> {
        let mask_at = self.pos;
        self.pos += n.div_ceil(8);
        if self.pos > self.data.len() {
            return Err(CodecError::Truncated);
        }
        for i in 0..n {
            let v = if self.data[mask_at + i / 8] & (1 << (i % 8)) != 0 {
                get_value(self.data, &mut self.pos)?
            } else {
                0.0
            };
            f(i, v);
        }
        Ok(())
    }

    /// Next sample entry. Channels the chunk has beyond [`CHANNELS`] are skipped; channels it
    /// lacks read as 0.
    pub fn next_samples(&mut self, out: &mut [f32; CHANNELS]) -> Result<Option<u32>, CodecError> {
        self.check_kind(KIND_SAMPLES)?;
        let Some(id) = self.next_id()? else {
            return Ok(None);
        };
        *out = [0.0; CHANNELS];
        self.values(self.channels, |i, v| {
            if let Some(slot) = out.get_mut(i) {
                *slot = v;
            }
        })?;
        Ok(Some(id))
    }

    /// Next aggregate entry.
    pub fn next_agg(&mut self, out: &mut AggValues) -> Result<Option<u32>, CodecError> {
        self.check_kind(KIND_AGG)?;
        let Some(id) = self.next_id()? else {
            return Ok(None);
        };
        let count = get_varint(self.data, &mut self.pos)?;
        *out = AggValues {
            count: u32::try_from(count).unwrap_or(u32::MAX),
            ..AggValues::default()
        };
        self.values(3 * self.channels, |i, v| {
            let (c, which) = (i / 3, i % 3);
            if c < CHANNELS {
                match which {
                    0 => out.min[c] = v,
                    1 => out.mean[c] = v,
                    _ => out.max[c] = v,
                }
            }
        })?;
        Ok(Some(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(v: f32) -> (f32, usize) {
        let mut out = Vec::new();
        put_value(&mut out, v);
        let mut pos = 0;
        let back = get_value(&out, &mut pos).expect("decodes");
        assert_eq!(pos, out.len());
        (back, out.len())
    }

    #[test]
    fn values_roundtrip_bit_exact() {
        let cases = [
            0.0f32,
            -0.0,
            1.0,
            31.0,
            32.0,
            1e6,
            16_777_217.0,
            3.0e38,
            -1.0,
            -12345.0,
            0.5,
            2.25,
            1.0 / 3.0,
            -0.75,
            f32::MIN_POSITIVE,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::from_bits(0x7fc0_1234),
            f32::MAX,
            f32::MIN,
        ];
        for v in cases {
            let (back, _) = roundtrip(v);
            assert_eq!(back.to_bits(), v.to_bits(), "{v}");
        }
    }

    #[test]
    fn small_integers_are_one_byte() {
        assert_eq!(roundtrip(0.0).1, 1);
        assert_eq!(roundtrip(31.0).1, 1);
        assert_eq!(roundtrip(4095.0).1, 2);
        assert_eq!(roundtrip(0.0625).1, 1);
        assert_eq!(roundtrip(1.0 / 3.0).1, 5);
    }

    fn values(seed: u32) -> [f32; CHANNELS] {
        let mut v = [0.0; CHANNELS];
        for (c, x) in v.iter_mut().enumerate() {
            *x = match (seed as usize + c) % 4 {
                0 => 0.0,
                1 => (seed % 1000) as f32,
                2 => seed as f32 / 7.0,
                _ => -((c as u32 * seed) as f32),
            };
        }
        v
    }

    #[test]
    fn chunks_split_and_roundtrip() {
        let mut enc = ChunkEncoder::new(KIND_SAMPLES);
        let ids: Vec<u32> = (0..3000).map(|i| i * 3 + 7).collect();
        for &id in &ids {
            enc.push_samples(id, &values(id));
        }
        enc.finish();
        assert!(enc.chunk_count() > 1);
        let mut seen = Vec::new();
        for (first, bytes) in enc.chunks() {
            assert!(bytes.len() <= CHUNK_MAX);
            let mut r = ChunkReader::new(first, bytes).expect("header");
            let mut out = [0.0; CHANNELS];
            while let Some(id) = r.next_samples(&mut out).expect("entry") {
                assert_eq!(out.map(f32::to_bits), values(id).map(f32::to_bits));
                seen.push(id);
            }
        }
        assert_eq!(seen, ids);
    }

    #[test]
    fn agg_roundtrip() {
        let mut enc = ChunkEncoder::new(KIND_AGG);
        let agg = AggValues {
            count: 10,
            min: values(1),
            mean: values(2),
            max: values(3),
        };
        enc.push_agg(5, &agg);
        enc.push_agg(u32::MAX, &agg);
        enc.finish();
        let (first, bytes) = enc.chunks().next().expect("one chunk");
        let mut r = ChunkReader::new(first, bytes).expect("header");
        let mut out = AggValues::default();
        assert_eq!(r.next_agg(&mut out), Ok(Some(5)));
        assert_eq!(out, agg);
        assert_eq!(r.next_agg(&mut out), Ok(Some(u32::MAX)));
        assert_eq!(r.next_agg(&mut out), Ok(None));
        let mut s = [0.0; CHANNELS];
        let mut r = ChunkReader::new(first, bytes).expect("header");
        assert!(matches!(
            r.next_samples(&mut s),
            Err(CodecError::Kind { .. })
        ));
    }

    /// The stored bytes of schema version 1. If this fails, the chunk format changed: bump
    /// `SCHEMA_VERSION` and add a migration for stores written before.
    #[test]
    fn chunk_format_of_version_1_is_unchanged() {
        let mut a = [0.0f32; CHANNELS];
        a[0] = 3.0;
        a[1] = 1500.0;
        a[6] = 0.5;
        a[7] = -2.0;
        a[12] = 1.0 / 3.0;
        let mut enc = ChunkEncoder::new(KIND_SAMPLES);
        enc.push_samples(7, &a);
        enc.push_samples(9, &[0.0; CHANNELS]);
        enc.finish();
        let (first, bytes) = enc.chunks().next().expect("a chunk");
        assert_eq!(first, 7);
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let expected = [
            "01100200",   // kind 1 (samples), 16 channels, 2 entries
            "00",         // id delta 0 (the row key holds 7)
            "c310",       // channels 0, 1, 6, 7, 12 present
            "0c",         // 3 = integer 3
            "f02e",       // 1500 = integer 1500
            "8204",       // 0.5 = 128 / 256
            "09",         // -2 = negative integer 2
            "afd5aad50f", // 1/3 = raw f32 bits 0x3eaaaaab
            "02",         // next id 9 = 7 + 2
            "0000",       // all channels zero
        ]
        .concat();
        assert_eq!(hex, expected);
        // A chunk written before the CPU channels (13 of them) reads with those as zeros.
        let mut old = hex_bytes(&expected);
        old[1] = 13;
        let mut dec = ChunkReader::new(7, &old).expect("header");
        let mut out = [9.0f32; CHANNELS];
        assert_eq!(dec.next_samples(&mut out), Ok(Some(7)));
        assert_eq!(out, a);
        assert_eq!(dec.next_samples(&mut out), Ok(Some(9)));
        assert_eq!(out, [0.0; CHANNELS]);
    }

    fn hex_bytes(h: &str) -> Vec<u8> {
        (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut state = 0x1234_5678u32;
        for len in 0..200 {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    state as u8
                })
                .collect();
            for kind in [KIND_SAMPLES, KIND_AGG] {
                let mut d = data.clone();
                if d.len() > 1 {
                    d[0] = kind;
                }
                let Ok(mut r) = ChunkReader::new(1, &d) else {
                    continue;
                };
                let mut s = [0.0; CHANNELS];
                let mut a = AggValues::default();
                for _ in 0..100 {
                    let step = if kind == KIND_SAMPLES {
                        r.next_samples(&mut s)
                    } else {
                        r.next_agg(&mut a)
                    };
                    if !matches!(step, Ok(Some(_))) {
                        break;
                    }
                }
            }
        }
    }
}
