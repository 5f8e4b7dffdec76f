//! Record batches for the producer, and record walking for the consumer.
//!
//! A [`BatchTemplate`] is one fully encoded v2 batch of the largest record count that fits the
//! batch size. Its records differ only in their offset delta, so the first `k` records of the
//! template are a valid records section for a batch of `k`: materializing a batch is one
//! `memcpy`, a header, optional key/timestamp patches at known positions, and a CRC-32C. No
//! per-message encoding and no allocation.

use crate::cli::{Compression, Keys};
use anyhow::{bail, Context, Result};
use riptide::protocol::record_batch::{
    RecordBatchHeader, BATCH_LENGTH_OVERHEAD_BYTES, MAGIC_V2, RECORD_BATCH_HEADER_SIZE_BYTES,
};

/// Marker that opens a stamped value, so that a consumer never mistakes foreign data for a
/// timestamp.
pub const STAMP_MAGIC: [u8; 8] = *b"RPTBENCH";
/// Marker plus a big-endian `CLOCK_MONOTONIC` nanosecond timestamp.
pub const STAMP_SIZE_BYTES: usize = 16;

const CRC_OFFSET: usize = 17;
const CRC_COVERED_FROM: usize = 21;

/// Pre-encoded records of one batch shape, plus where each record's key and value start.
#[derive(Debug, Clone)]
pub struct BatchTemplate {
    /// Header (zeroed; filled per batch) followed by `max_records` records.
    bytes: Vec<u8>,
    /// End offset (in `bytes`) of record `i`, i.e. batch size when it holds `i + 1` records.
    record_end: Vec<u32>,
    key_offset: Vec<u32>,
    value_offset: Vec<u32>,
    key_size_bytes: usize,
    value_size_bytes: usize,
    attributes: i16,
    compression: Compression,
}

impl BatchTemplate {
    /// Builds the template for records of `value_size_bytes` with keys of `keys`, holding as
    /// many records as fit in `batch_size_bytes` (at least one).
    pub fn new(
        batch_size_bytes: usize,
        value_size_bytes: usize,
        keys: Keys,
        compression: Compression,
        seed: u64,
    ) -> BatchTemplate {
        let key_size_bytes = keys.key_size_bytes();
        let mut rng = XorShift::new(seed);
        let mut bytes = vec![0u8; RECORD_BATCH_HEADER_SIZE_BYTES];
        let mut record_end = Vec::new();
        let mut key_offset = Vec::new();
        let mut value_offset = Vec::new();
        let mut body = Vec::with_capacity(value_size_bytes + 64);
        loop {
            let index = record_end.len() as i64;
            body.clear();
            body.push(0u8); // attributes
            write_varint(&mut body, 0); // timestamp delta: every record carries the base time
            write_varint(&mut body, index); // offset delta
            let key_at_in_body = match key_size_bytes {
                Some(size) => {
                    write_varint(&mut body, size as i64);
                    let at = body.len();
                    body.resize(at + size, b'0');
                    Some(at)
                }
                None => {
                    write_varint(&mut body, -1);
                    None
                }
            };
            write_varint(&mut body, value_size_bytes as i64);
            let value_at_in_body = body.len();
            // Upper-case letters, as Kafka's perf tool uses: realistic for compression.
            body.extend((0..value_size_bytes).map(|_| b'A' + (rng.next_u64() % 26) as u8));
            write_varint(&mut body, 0); // header count

            let mut length_prefix = Vec::with_capacity(5);
            write_varint(&mut length_prefix, body.len() as i64);
            let record_size = length_prefix.len() + body.len();
            let fits = bytes.len() + record_size <= batch_size_bytes;
            if !fits && !record_end.is_empty() {
                break;
            }
            let record_start = bytes.len() + length_prefix.len();
            bytes.extend_from_slice(&length_prefix);
            bytes.extend_from_slice(&body);
            key_offset.push(key_at_in_body.map_or(0, |at| (record_start + at) as u32));
            value_offset.push((record_start + value_at_in_body) as u32);
            record_end.push(bytes.len() as u32);
            if !fits {
                break; // A single record larger than the batch size still makes a batch.
            }
        }
        BatchTemplate {
            bytes,
            record_end,
            key_offset,
            value_offset,
            key_size_bytes: key_size_bytes.unwrap_or(0),
            value_size_bytes,
            attributes: compression.attribute_bits(),
            compression,
        }
    }

    /// Records in a full batch.
    pub fn max_records(&self) -> usize {
        self.record_end.len()
    }

    /// Uncompressed size of a batch of `records` records.
    pub fn batch_size_bytes(&self, records: usize) -> usize {
        self.record_end[records - 1] as usize
    }

    pub fn value_size_bytes(&self) -> usize {
        self.value_size_bytes
    }

    /// Appends a batch of `records` records to `out` and returns its size.
    ///
    /// `stamp_ns(i)` gives record `i`'s producer timestamp when stamping (e2e), and
    /// `key_id(i)` its key when keyed; `scratch` is reused for compression.
    #[allow(clippy::too_many_arguments)]
    pub fn write_batch(
        &self,
        out: &mut Vec<u8>,
        records: usize,
        base_timestamp_ms: i64,
        stamp_ns: Option<&dyn Fn(usize) -> u64>,
        key_id: Option<&dyn Fn(usize) -> u64>,
        keys: Keys,
        scratch: &mut Vec<u8>,
    ) -> Result<usize> {
        assert!(records >= 1 && records <= self.max_records());
        let start = out.len();
        let end = self.record_end[records - 1] as usize;
        match self.compression {
            Compression::None => {
                out.extend_from_slice(&self.bytes[..end]);
                self.patch(&mut out[start..], records, stamp_ns, key_id, keys);
            }
            codec => {
                scratch.clear();
                scratch.extend_from_slice(&self.bytes[..end]);
                self.patch(scratch, records, stamp_ns, key_id, keys);
                out.extend_from_slice(&self.bytes[..RECORD_BATCH_HEADER_SIZE_BYTES]);
                compress_into(codec, &scratch[RECORD_BATCH_HEADER_SIZE_BYTES..], out)?;
            }
        }
        let size = out.len() - start;
        write_header(
            &mut out[start..],
            self.attributes,
            records as i32,
            base_timestamp_ms,
        );
        Ok(size)
    }

    fn patch(
        &self,
        batch: &mut [u8],
        records: usize,
        stamp_ns: Option<&dyn Fn(usize) -> u64>,
        key_id: Option<&dyn Fn(usize) -> u64>,
        keys: Keys,
    ) {
        if let Some(stamp_ns) = stamp_ns {
            debug_assert!(self.value_size_bytes >= STAMP_SIZE_BYTES);
            for (index, &at) in self.value_offset[..records].iter().enumerate() {
                let at = at as usize;
                batch[at..at + 8].copy_from_slice(&STAMP_MAGIC);
                batch[at + 8..at + 16].copy_from_slice(&stamp_ns(index).to_be_bytes());
            }
        }
        if let Some(key_id) = key_id {
            for (index, &at) in self.key_offset[..records].iter().enumerate() {
                let at = at as usize;
                format_key(
                    keys,
                    key_id(index),
                    &mut batch[at..at + self.key_size_bytes],
                );
            }
        }
    }
}

/// Fills the batch header of `batch` (whose records follow it) and its CRC.
fn write_header(batch: &mut [u8], attributes: i16, record_count: i32, base_timestamp_ms: i64) {
    let batch_length = (batch.len() - BATCH_LENGTH_OVERHEAD_BYTES) as i32;
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        batch[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    put(&0i64.to_be_bytes()); // base offset: assigned by the broker
    put(&batch_length.to_be_bytes());
    put(&(-1i32).to_be_bytes()); // partition leader epoch
    put(&[MAGIC_V2 as u8]);
    put(&[0u8; 4]); // CRC, below
    put(&attributes.to_be_bytes());
    put(&(record_count - 1).to_be_bytes()); // last offset delta
    put(&base_timestamp_ms.to_be_bytes());
    put(&base_timestamp_ms.to_be_bytes()); // max timestamp: every delta is 0
    put(&(-1i64).to_be_bytes()); // producer id: not idempotent
    put(&(-1i16).to_be_bytes()); // producer epoch
    put(&(-1i32).to_be_bytes()); // base sequence
    put(&record_count.to_be_bytes());
    debug_assert_eq!(at, RECORD_BATCH_HEADER_SIZE_BYTES);
    let crc = crc32c::crc32c(&batch[CRC_COVERED_FROM..]);
    batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Compresses `records` with Kafka's framing for `codec` (xerial snappy, LZ4 frame, ...),
/// appending to `out`. Allocates one temporary buffer per batch inside the codec crate.
pub fn compress_into(codec: Compression, records: &[u8], out: &mut Vec<u8>) -> Result<()> {
    use bytes::BufMut;
    use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};
    let fill = |buf: &mut bytes::BytesMut| -> Result<()> {
        buf.put_slice(records);
        Ok(())
    };
    match codec {
        Compression::None => out.extend_from_slice(records),
        Compression::Gzip => Gzip::compress(out, fill)?,
        Compression::Snappy => Snappy::compress(out, fill)?,
        Compression::Lz4 => Lz4::compress(out, fill)?,
        Compression::Zstd => Zstd::compress(out, fill)?,
    }
    Ok(())
}

/// Writes key `id` into `slot`: 16 lower-case hex digits (random keys) or a zero-padded
/// decimal (N distinct keys).
#[inline]
pub fn format_key(keys: Keys, id: u64, slot: &mut [u8]) {
    match keys {
        Keys::None => {}
        Keys::Random => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            for (index, byte) in slot.iter_mut().enumerate() {
                *byte = HEX[((id >> (60 - 4 * index)) & 0xf) as usize];
            }
        }
        Keys::Distinct(_) => {
            let mut value = id;
            for byte in slot.iter_mut().rev() {
                *byte = b'0' + (value % 10) as u8;
                value /= 10;
            }
        }
    }
}

/// Kafka's murmur2 (the Java client's `Utils.murmur2`), over the key bytes.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len();
    let mut h = SEED ^ length as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition the Java client's default partitioner picks for a key.
pub fn partition_for_key(key: &[u8], partition_count: u32) -> u32 {
    (murmur2(key) as u32 & 0x7fff_ffff) % partition_count
}

/// Zigzag varint, as Kafka records use.
pub fn write_varint(out: &mut Vec<u8>, value: i64) {
    let mut raw = ((value << 1) ^ (value >> 63)) as u64;
    loop {
        let byte = (raw & 0x7f) as u8;
        raw >>= 7;
        if raw == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Reads a zigzag varint (up to 64 bits); returns the value and the bytes consumed.
#[inline]
pub fn read_varint(buf: &[u8]) -> Option<(i64, usize)> {
    let mut raw: u64 = 0;
    for (index, &byte) in buf.iter().enumerate().take(10) {
        raw |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Some((((raw >> 1) as i64) ^ -((raw & 1) as i64), index + 1));
        }
    }
    None
}

/// What the consumer learns from one partition's `records` bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RecordsSummary {
    pub batches: u64,
    pub records: u64,
    pub bytes: u64,
    /// Offset after the last complete batch, if any.
    pub next_offset: Option<i64>,
}

/// Walks the complete batches in `records` (a fetch response may end with a partial one).
/// For every record whose value carries a stamp, calls `on_stamp(stamp_ns)`. Compressed
/// batches are decompressed only when stamps are wanted.
pub fn walk_batches(
    records: &[u8],
    mut on_stamp: Option<&mut dyn FnMut(u64)>,
) -> Result<RecordsSummary> {
    let mut summary = RecordsSummary::default();
    let mut position = 0usize;
    while records.len() - position >= RECORD_BATCH_HEADER_SIZE_BYTES {
        let rest = &records[position..];
        let header = RecordBatchHeader::parse(rest).context("bad record batch in fetch")?;
        let size = header.total_size_bytes();
        if size > rest.len() {
            break; // partial trailing batch
        }
        summary.batches += 1;
        summary.records += header.record_count.max(0) as u64;
        summary.bytes += size as u64;
        summary.next_offset = Some(header.last_offset() + 1);
        if let Some(on_stamp) = on_stamp.as_deref_mut() {
            if !header.is_control() {
                let body = &rest[RECORD_BATCH_HEADER_SIZE_BYTES..size];
                match header.compression_codec() {
                    0 => walk_record_stamps(body, header.record_count, on_stamp)?,
                    codec => {
                        let plain = decompress(codec, body)?;
                        walk_record_stamps(&plain, header.record_count, on_stamp)?;
                    }
                }
            }
        }
        position += size;
    }
    Ok(summary)
}

fn decompress(codec: u8, body: &[u8]) -> Result<Vec<u8>> {
    use bytes::Buf;
    use kafka_protocol::compression::{Decompressor, Gzip, Lz4, Snappy, Zstd};
    let mut input = bytes::Bytes::copy_from_slice(body);
    let take = |buf: &mut bytes::Bytes| -> Result<Vec<u8>> {
        Ok(buf.copy_to_bytes(buf.remaining()).to_vec())
    };
    match codec {
        1 => Gzip::decompress(&mut input, take),
        2 => Snappy::decompress(&mut input, take),
        3 => Lz4::decompress(&mut input, take),
        4 => Zstd::decompress(&mut input, take),
        other => bail!("unknown compression codec {other}"),
    }
}

fn walk_record_stamps(
    mut records: &[u8],
    record_count: i32,
    on_stamp: &mut dyn FnMut(u64),
) -> Result<()> {
    let malformed = || anyhow::anyhow!("malformed record in fetched batch");
    for _ in 0..record_count.max(0) {
        let (length, used) = read_varint(records).ok_or_else(malformed)?;
        records = &records[used..];
        let length = usize::try_from(length).map_err(|_| malformed())?;
        if length > records.len() {
            bail!(malformed());
        }
        let (record, rest) = records.split_at(length);
        records = rest;
        // attributes, timestamp delta, offset delta, key, value
        let mut at = 1usize;
        for _ in 0..2 {
            let (_, used) =
                read_varint(record.get(at..).ok_or_else(malformed)?).ok_or_else(malformed)?;
            at += used;
        }
        let (key_length, used) =
            read_varint(record.get(at..).ok_or_else(malformed)?).ok_or_else(malformed)?;
        at += used + key_length.max(0) as usize;
        let (value_length, used) =
            read_varint(record.get(at..).ok_or_else(malformed)?).ok_or_else(malformed)?;
        at += used;
        if value_length >= STAMP_SIZE_BYTES as i64 {
            let value = record
                .get(at..at + STAMP_SIZE_BYTES)
                .ok_or_else(malformed)?;
            if value[..8] == STAMP_MAGIC {
                let mut stamp = [0u8; 8];
                stamp.copy_from_slice(&value[8..16]);
                on_stamp(u64::from_be_bytes(stamp));
            }
        }
    }
    Ok(())
}

/// Tiny deterministic generator for payload bytes and random keys (not for cryptography).
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed | 1)
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `0..bound` (bound > 0), by multiply-shift.
    #[inline]
    pub fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use riptide::protocol::record_batch::validate_batches;

    #[test]
    fn murmur2_matches_the_java_client() {
        // Apache Kafka's UtilsTest.testMurmur2 vectors.
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, expected) in cases {
            assert_eq!(murmur2(key), expected, "{}", String::from_utf8_lossy(key));
        }
        assert_eq!(partition_for_key(b"foobar", 50), 1_357_151_166 % 50);
    }

    #[test]
    fn template_batches_validate_for_every_length() {
        let template = BatchTemplate::new(4096, 100, Keys::None, Compression::None, 7);
        assert!(template.max_records() >= 30, "{}", template.max_records());
        assert!(template.batch_size_bytes(template.max_records()) <= 4096);
        let mut scratch = Vec::new();
        for records in 1..=template.max_records() {
            let mut out = vec![0xaa; 3]; // batches are appended after existing bytes
            let size = template
                .write_batch(
                    &mut out,
                    records,
                    1_700_000_000_000,
                    None,
                    None,
                    Keys::None,
                    &mut scratch,
                )
                .unwrap();
            assert_eq!(size, out.len() - 3);
            let summary = validate_batches(&out[3..], usize::MAX).unwrap();
            assert_eq!(summary.record_count as usize, records);
            assert_eq!(summary.first_timestamp_ms, 1_700_000_000_000);
            let walked = walk_batches(&out[3..], None).unwrap();
            assert_eq!(walked.records as usize, records);
            assert_eq!(walked.next_offset, Some(records as i64));
        }
    }

    #[test]
    fn stamps_and_keys_are_patched_and_read_back() {
        for keys in [Keys::Random, Keys::Distinct(1000)] {
            let template = BatchTemplate::new(16384, 64, keys, Compression::None, 1);
            let mut out = Vec::new();
            let stamp = |i: usize| 1_000 + i as u64;
            let key = |i: usize| 7 * i as u64;
            let records = 10;
            template
                .write_batch(
                    &mut out,
                    records,
                    5,
                    Some(&stamp),
                    Some(&key),
                    keys,
                    &mut Vec::new(),
                )
                .unwrap();
            validate_batches(&out, usize::MAX).unwrap();
            let mut stamps = Vec::new();
            walk_batches(&out, Some(&mut |s| stamps.push(s))).unwrap();
            assert_eq!(stamps, (1_000..1_010).collect::<Vec<u64>>());
            // Keys decode back to their ids.
            let at = template.key_offset[3] as usize;
            let size = keys.key_size_bytes().unwrap();
            let text = std::str::from_utf8(&out[at..at + size]).unwrap();
            match keys {
                Keys::Random => assert_eq!(u64::from_str_radix(text, 16).unwrap(), 21),
                _ => assert_eq!(text, "021"),
            }
        }
    }

    #[test]
    fn compressed_batches_validate_and_decompress() {
        use kafka_protocol::records::RecordBatchDecoder;
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let template = BatchTemplate::new(16384, 100, Keys::None, codec, 3);
            let mut out = Vec::new();
            let stamp = |i: usize| 42 + i as u64;
            let records = template.max_records();
            template
                .write_batch(
                    &mut out,
                    records,
                    9,
                    Some(&stamp),
                    None,
                    Keys::None,
                    &mut Vec::new(),
                )
                .unwrap();
            assert!(
                out.len() < template.batch_size_bytes(records),
                "{codec:?} did not shrink"
            );
            let summary = validate_batches(&out, usize::MAX).unwrap();
            assert_eq!(summary.record_count as usize, records);
            let mut stamps = Vec::new();
            walk_batches(&out, Some(&mut |s| stamps.push(s))).unwrap();
            assert_eq!(stamps.len(), records, "{codec:?}");
            assert_eq!(stamps[5], 47);
            // An independent decoder agrees.
            let mut bytes = bytes::Bytes::from(out.clone());
            let set = RecordBatchDecoder::decode(&mut bytes).unwrap();
            assert_eq!(set.records.len(), records);
            assert_eq!(set.records[0].value.as_ref().unwrap().len(), 100);
        }
    }

    #[test]
    fn oversized_records_still_make_a_batch() {
        let template = BatchTemplate::new(1000, 5000, Keys::None, Compression::None, 1);
        assert_eq!(template.max_records(), 1);
        let mut out = Vec::new();
        template
            .write_batch(&mut out, 1, 0, None, None, Keys::None, &mut Vec::new())
            .unwrap();
        validate_batches(&out, usize::MAX).unwrap();
    }

    #[test]
    fn partial_trailing_batch_is_ignored() {
        let template = BatchTemplate::new(2048, 50, Keys::None, Compression::None, 1);
        let mut out = Vec::new();
        template
            .write_batch(&mut out, 3, 0, None, None, Keys::None, &mut Vec::new())
            .unwrap();
        let first = out.len();
        template
            .write_batch(&mut out, 5, 0, None, None, Keys::None, &mut Vec::new())
            .unwrap();
        let walked = walk_batches(&out[..out.len() - 10], None).unwrap();
        assert_eq!(walked.batches, 1);
        assert_eq!(walked.bytes as usize, first);
        assert_eq!(walked.next_offset, Some(3));
    }

    #[test]
    fn varints_round_trip() {
        for value in [0i64, 1, -1, 63, -64, 64, 8191, 300_000, i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            write_varint(&mut out, value);
            assert_eq!(read_varint(&out), Some((value, out.len())));
        }
    }
}
