//! The records inside a v2 batch: decompressing the records section and splitting it into
//! records (attributes, timestamp and offset deltas, key, value).
//!
//! The produce path uses this only where a topic's policy must look at each record (a
//! compacted topic needs keys, timestamp bounds need timestamps); compaction uses it for keys.

use bytes::Bytes;

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

/// Largest records section a batch may decompress to. Past it the batch is refused as corrupt:
/// a few bytes of zstd, gzip, lz4 or snappy can claim gigabytes, and a shard must not allocate
/// them (every caller — produce checks, compaction — runs on a shard).
pub const MAX_DECOMPRESSED_SECTION_BYTES: usize = 64 * 1024 * 1024;

/// The records section of `batch` (one whole batch), decompressed if needed, at most
/// [`MAX_DECOMPRESSED_SECTION_BYTES`].
pub fn records_section(batch: &[u8], codec: u8) -> Result<Bytes, String> {
    records_section_bounded(batch, codec, MAX_DECOMPRESSED_SECTION_BYTES)
}

/// [`records_section`] with an explicit bound on the decompressed size.
pub fn records_section_bounded(
    batch: &[u8],
    codec: u8,
    limit_bytes: usize,
) -> Result<Bytes, String> {
    let section = &batch[RECORD_BATCH_HEADER_SIZE_BYTES..];
    let decompressed = match codec {
        COMPRESSION_NONE => return Ok(Bytes::copy_from_slice(section)),
        COMPRESSION_GZIP => read_bounded(flate2::read::GzDecoder::new(section), limit_bytes),
        COMPRESSION_ZSTD => zstd::stream::read::Decoder::new(section)
            .map_err(|error| format!("zstd: {error}"))
            .and_then(|decoder| read_bounded(decoder, limit_bytes)),
        COMPRESSION_LZ4 => lz4::Decoder::new(section)
            .map_err(|error| format!("lz4: {error}"))
            .and_then(|decoder| read_bounded(decoder, limit_bytes)),
        COMPRESSION_SNAPPY => snappy_bounded(section, limit_bytes),
        other => return Err(format!("unknown compression codec {other}")),
    };
    decompressed
        .map(Bytes::from)
        .map_err(|error| format!("decompression failed: {error}"))
}

/// Reads `reader` to its end, failing once more than `limit_bytes` come out.
fn read_bounded(reader: impl std::io::Read, limit_bytes: usize) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut out = Vec::new();
    let cap = u64::try_from(limit_bytes)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    reader
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|error| error.to_string())?;
    if out.len() > limit_bytes {
        return Err(format!("decompresses to more than {limit_bytes} bytes"));
    }
    Ok(out)
}

/// Kafka's snappy: xerial framing (magic header, then length-prefixed raw blocks), or raw.
/// Each block's declared length is checked before anything is allocated.
fn snappy_bounded(section: &[u8], limit_bytes: usize) -> Result<Vec<u8>, String> {
    const XERIAL_MAGIC: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";
    let mut out = Vec::new();
    let raw_block = |block: &[u8], out: &mut Vec<u8>| -> Result<(), String> {
        let length = snap::raw::decompress_len(block).map_err(|error| error.to_string())?;
        if out.len().saturating_add(length) > limit_bytes {
            return Err(format!("decompresses to more than {limit_bytes} bytes"));
        }
        let start = out.len();
        out.resize(start + length, 0);
        snap::raw::Decoder::new()
            .decompress(block, &mut out[start..])
            .map_err(|error| error.to_string())?;
        Ok(())
    };
    let Some(mut rest) = section.strip_prefix(&XERIAL_MAGIC[..]) else {
        raw_block(section, &mut out)?;
        return Ok(out);
    };
    while !rest.is_empty() {
        let (length, tail) = rest
            .split_first_chunk::<4>()
            .ok_or("truncated snappy block length")?;
        let length = u32::from_be_bytes(*length) as usize;
        let block = tail.get(..length).ok_or("truncated snappy block")?;
        raw_block(block, &mut out)?;
        rest = &tail[length..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A batch of `codec` whose records section is `payload` (the header is not parsed here).
    fn batch_with(payload: &[u8]) -> Vec<u8> {
        let mut batch = vec![0u8; RECORD_BATCH_HEADER_SIZE_BYTES];
        batch.extend_from_slice(payload);
        batch
    }

    fn compressed(codec: u8, plain: &[u8]) -> Vec<u8> {
        match codec {
            COMPRESSION_GZIP => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
                e.write_all(plain).unwrap();
                e.finish().unwrap()
            }
            COMPRESSION_ZSTD => zstd::encode_all(plain, 19).unwrap(),
            COMPRESSION_LZ4 => {
                let mut e = lz4::EncoderBuilder::new().build(Vec::new()).unwrap();
                e.write_all(plain).unwrap();
                e.finish().0
            }
            COMPRESSION_SNAPPY => snap::raw::Encoder::new().compress_vec(plain).unwrap(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn decompression_is_bounded_for_every_codec() {
        let plain = vec![0u8; 8 << 20];
        for codec in [
            COMPRESSION_GZIP,
            COMPRESSION_ZSTD,
            COMPRESSION_LZ4,
            COMPRESSION_SNAPPY,
        ] {
            let batch = batch_with(&compressed(codec, &plain));
            assert!(batch.len() < 1 << 20, "codec {codec}: a bomb is small");
            let whole = records_section_bounded(&batch, codec, 16 << 20).unwrap();
            assert_eq!(whole.len(), plain.len(), "codec {codec}");
            let refused = records_section_bounded(&batch, codec, 1 << 20).unwrap_err();
            assert!(refused.contains("more than"), "codec {codec}: {refused}");
        }
    }

    #[test]
    fn snappy_declared_lengths_are_checked_before_allocating() {
        // Raw snappy whose length varint claims 4 GiB, with six bytes of body.
        let raw = batch_with(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0x00]);
        assert!(records_section(&raw, COMPRESSION_SNAPPY).is_err());
        // Xerial framing with one block that claims 4 GiB.
        let mut xerial = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
        xerial.extend_from_slice(&6u32.to_be_bytes());
        xerial.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0x00]);
        assert!(records_section(&batch_with(&xerial), COMPRESSION_SNAPPY).is_err());
        // Truncated framing is refused, not read past.
        xerial.truncate(xerial.len() - 2);
        assert!(records_section(&batch_with(&xerial), COMPRESSION_SNAPPY).is_err());
    }
}
