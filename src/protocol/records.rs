//! The records inside a v2 batch: decompressing the records section and splitting it into
//! records (attributes, timestamp and offset deltas, key, value).
//!
//! The produce path uses this only where a topic's policy must look at each record (a
//! compacted topic needs keys, timestamp bounds need timestamps); compaction uses it for keys.

use bytes::Bytes;
use kafka_protocol::compression::Decompressor;

use super::record_batch::{
    COMPRESSION_GZIP, COMPRESSION_LZ4, COMPRESSION_NONE, COMPRESSION_SNAPPY, COMPRESSION_ZSTD,
    RECORD_BATCH_HEADER_SIZE_BYTES,
};

/// A zigzag varint of at most `max_size_bytes`; returns (value, bytes used).
fn read_zigzag(buf: &[u8], max_size_bytes: usize) -> Option<(i64, usize)> {
    let mut raw = 0u64;
    for index in 0..max_size_bytes {
        let byte = *buf.get(index)?;
        raw |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Some((((raw >> 1) as i64) ^ -((raw & 1) as i64), index + 1));
        }
    }
    None
}

/// One record of a batch, borrowed from its records section, and its raw bytes (length
/// prefix included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub raw: &'a [u8],
    pub timestamp_delta_ms: i64,
    pub offset_delta: i64,
    pub key: Option<&'a [u8]>,
    pub value_is_null: bool,
}

/// Splits an uncompressed records section into records.
pub fn parse_records(records: &[u8]) -> Result<Vec<RecordView<'_>>, String> {
    let mut views = Vec::new();
    let mut position = 0usize;
    while position < records.len() {
        let (length, prefix) = read_zigzag(&records[position..], 5).ok_or("bad record length")?;
        let length = usize::try_from(length).map_err(|_| "negative record length")?;
        let body_start = position + prefix;
        let body = records
            .get(body_start..body_start + length)
            .ok_or("record overruns the batch")?;
        let mut at = 1usize; // attributes
        let (timestamp_delta_ms, used) =
            read_zigzag(body.get(at..).ok_or("short record")?, 10).ok_or("bad timestamp delta")?;
        at += used;
        let (offset_delta, used) =
            read_zigzag(body.get(at..).ok_or("short record")?, 5).ok_or("bad offset delta")?;
        at += used;
        let (key_length, used) =
            read_zigzag(body.get(at..).ok_or("short record")?, 5).ok_or("bad key length")?;
        at += used;
        let key = if key_length < 0 {
            None
        } else {
            let key_length = key_length as usize;
            let key = body
                .get(at..at + key_length)
                .ok_or("key overruns the record")?;
            at += key_length;
            Some(key)
        };
        let (value_length, _) =
            read_zigzag(body.get(at..).ok_or("short record")?, 5).ok_or("bad value length")?;
        views.push(RecordView {
            raw: &records[position..body_start + length],
            timestamp_delta_ms,
            offset_delta,
            key,
            value_is_null: value_length < 0,
        });
        position = body_start + length;
    }
    Ok(views)
}

/// The records section of `batch` (one whole batch), decompressed if needed.
pub fn records_section(batch: &[u8], codec: u8) -> Result<Bytes, String> {
    let section = &batch[RECORD_BATCH_HEADER_SIZE_BYTES..];
    let mut compressed = Bytes::copy_from_slice(section);
    let take_all = |buf: &mut Bytes| Ok(std::mem::take(buf));
    let result = match codec {
        COMPRESSION_NONE => return Ok(compressed),
        COMPRESSION_GZIP => {
            kafka_protocol::compression::Gzip::decompress(&mut compressed, take_all)
        }
        COMPRESSION_SNAPPY => {
            kafka_protocol::compression::Snappy::decompress(&mut compressed, take_all)
        }
        COMPRESSION_LZ4 => kafka_protocol::compression::Lz4::decompress(&mut compressed, take_all),
        COMPRESSION_ZSTD => {
            kafka_protocol::compression::Zstd::decompress(&mut compressed, take_all)
        }
        other => return Err(format!("unknown compression codec {other}")),
    };
    result.map_err(|error| format!("decompression failed: {error}"))
}
