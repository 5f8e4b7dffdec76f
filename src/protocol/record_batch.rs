//! Kafka record batch (magic v2) header parsing and validation.
//!
//! The broker never decompresses on the produce path: it checks the framing (length, magic),
//! the CRC-32C that covers everything from `attributes` to the end of the batch, and the record
//! count. Base offset and partition leader epoch lie outside the CRC, so the broker stamps them
//! after validation without recomputing it.
//!
//! Everything here works on borrowed slices and never allocates.

/// Bytes from the start of a batch up to the first record.
pub const RECORD_BATCH_HEADER_SIZE_BYTES: usize = 61;

/// Bytes before `partitionLeaderEpoch`: `baseOffset` (8) and `batchLength` (4). `batchLength`
/// counts the bytes after these 12.
pub const BATCH_LENGTH_OVERHEAD_BYTES: usize = 12;

/// The only batch format this broker stores.
pub const MAGIC_V2: i8 = 2;

const BASE_OFFSET_OFFSET: usize = 0;
const BATCH_LENGTH_OFFSET: usize = 8;
const PARTITION_LEADER_EPOCH_OFFSET: usize = 12;
const MAGIC_OFFSET: usize = 16;
const CRC_OFFSET: usize = 17;
const ATTRIBUTES_OFFSET: usize = 21;

/// True if the batch's stored CRC-32C matches its bytes (from the attributes on). `batch` is
/// exactly one batch.
pub fn batch_crc_matches(header: &RecordBatchHeader, batch: &[u8]) -> bool {
    batch.len() > ATTRIBUTES_OFFSET && crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..]) == header.crc
}
const LAST_OFFSET_DELTA_OFFSET: usize = 23;
const BASE_TIMESTAMP_OFFSET: usize = 27;
const MAX_TIMESTAMP_OFFSET: usize = 35;
const PRODUCER_ID_OFFSET: usize = 43;
const PRODUCER_EPOCH_OFFSET: usize = 51;
const BASE_SEQUENCE_OFFSET: usize = 53;
const RECORD_COUNT_OFFSET: usize = 57;

/// Smallest legal `batchLength`: a header with no records.
const BATCH_LENGTH_MIN: i32 = (RECORD_BATCH_HEADER_SIZE_BYTES - BATCH_LENGTH_OVERHEAD_BYTES) as i32;

const ATTRIBUTE_COMPRESSION_MASK: i16 = 0x07;
const ATTRIBUTE_TIMESTAMP_TYPE: i16 = 0x08;
const ATTRIBUTE_TRANSACTIONAL: i16 = 0x10;
const ATTRIBUTE_CONTROL: i16 = 0x20;

/// Compression codec ids in the low three attribute bits.
pub const COMPRESSION_NONE: u8 = 0;
pub const COMPRESSION_GZIP: u8 = 1;
pub const COMPRESSION_SNAPPY: u8 = 2;
pub const COMPRESSION_LZ4: u8 = 3;
pub const COMPRESSION_ZSTD: u8 = 4;

/// Why a batch was rejected. The produce handler maps these to CORRUPT_MESSAGE / INVALID_RECORD.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("record batch truncated")]
    Truncated,
    #[error("unsupported record batch magic {0}")]
    UnsupportedMagic(i8),
    #[error("record batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CorruptCrc { stored: u32, computed: u32 },
    #[error("invalid record batch length {0}")]
    InvalidLength(i32),
    #[error(
        "invalid record count {record_count} (last offset delta {last_offset_delta}, \
         records found {records_found:?})"
    )]
    InvalidRecordCount {
        record_count: i32,
        last_offset_delta: i32,
        /// Records actually walked (uncompressed batches only).
        records_found: Option<u32>,
    },
    #[error("malformed records in uncompressed batch: {0}")]
    MalformedRecords(&'static str),
    #[error("record batch of {size_bytes} bytes exceeds the limit of {max_bytes} bytes")]
    TooLarge { size_bytes: usize, max_bytes: usize },
    #[error("no record batches")]
    Empty,
    #[error("unknown compression codec {0}")]
    UnknownCompression(u8),
}

/// The fixed 61-byte header of a v2 record batch, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordBatchHeader {
    pub base_offset: i64,
    /// Bytes after the `batchLength` field; the whole batch is this plus 12.
    pub batch_length_bytes: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp_ms: i64,
    pub max_timestamp_ms: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl RecordBatchHeader {
    /// Decodes the header at the start of `buf`. Reads only the header: the batch body may be
    /// absent. Guarantees `batch_length_bytes >= 49`, so `total_size_bytes()` is at least the
    /// header size.
    pub fn parse(buf: &[u8]) -> Result<Self, BatchError> {
        // v0/v1 messages have a different layout, but their magic byte is also at offset 16:
        // read it first so an old client gets UnsupportedMagic rather than a length error.
        if buf.len() <= MAGIC_OFFSET {
            return Err(BatchError::Truncated);
        }
        let magic = buf[MAGIC_OFFSET] as i8;
        if magic != MAGIC_V2 {
            return Err(BatchError::UnsupportedMagic(magic));
        }
        if buf.len() < RECORD_BATCH_HEADER_SIZE_BYTES {
            return Err(BatchError::Truncated);
        }
        let header = RecordBatchHeader {
            base_offset: read_i64(buf, BASE_OFFSET_OFFSET),
            batch_length_bytes: read_i32(buf, BATCH_LENGTH_OFFSET),
            partition_leader_epoch: read_i32(buf, PARTITION_LEADER_EPOCH_OFFSET),
            magic,
            crc: read_i32(buf, CRC_OFFSET) as u32,
            attributes: read_i16(buf, ATTRIBUTES_OFFSET),
            last_offset_delta: read_i32(buf, LAST_OFFSET_DELTA_OFFSET),
            base_timestamp_ms: read_i64(buf, BASE_TIMESTAMP_OFFSET),
            max_timestamp_ms: read_i64(buf, MAX_TIMESTAMP_OFFSET),
            producer_id: read_i64(buf, PRODUCER_ID_OFFSET),
            producer_epoch: read_i16(buf, PRODUCER_EPOCH_OFFSET),
            base_sequence: read_i32(buf, BASE_SEQUENCE_OFFSET),
            record_count: read_i32(buf, RECORD_COUNT_OFFSET),
        };
        if header.batch_length_bytes < BATCH_LENGTH_MIN {
            return Err(BatchError::InvalidLength(header.batch_length_bytes));
        }
        debug_assert!(header.total_size_bytes() >= RECORD_BATCH_HEADER_SIZE_BYTES);
        Ok(header)
    }

    /// Size of the whole batch, header included.
    pub fn total_size_bytes(&self) -> usize {
        debug_assert!(self.batch_length_bytes >= BATCH_LENGTH_MIN);
        // Non-negative after `parse`, and i32::MAX + 12 fits in usize on every 64-bit target.
        self.batch_length_bytes.max(0) as usize + BATCH_LENGTH_OVERHEAD_BYTES
    }

    /// Offset of the batch's last record (saturating, so a hostile delta cannot overflow).
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(i64::from(self.last_offset_delta))
    }

    /// Number of offsets this batch spans: `last_offset_delta + 1`.
    pub fn offset_count(&self) -> i64 {
        i64::from(self.last_offset_delta) + 1
    }

    pub fn compression_codec(&self) -> u8 {
        (self.attributes & ATTRIBUTE_COMPRESSION_MASK) as u8
    }

    /// True for LogAppendTime, false for CreateTime.
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & ATTRIBUTE_TIMESTAMP_TYPE != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTRIBUTE_TRANSACTIONAL != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & ATTRIBUTE_CONTROL != 0
    }
}

/// How a control batch ended a transaction; `None` for control records of other kinds.
pub fn control_marker_type(batch: &[u8], header: &RecordBatchHeader) -> Option<bool> {
    if !header.is_control() {
        return None;
    }
    let section = batch.get(RECORD_BATCH_HEADER_SIZE_BYTES..)?;
    let records = crate::protocol::records::parse_records(section).ok()?;
    let key = records.first()?.key?;
    // Control record key: version int16, type int16 (0 ABORT, 1 COMMIT).
    if key.len() < 4 {
        return None;
    }
    match i16::from_be_bytes([key[2], key[3]]) {
        0 => Some(false),
        1 => Some(true),
        _ => None,
    }
}

/// What `validate_batches` learned about one partition's `records` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchesSummary {
    pub batch_count: u32,
    /// Sum of `record_count` over all batches.
    pub record_count: u32,
    /// `base_timestamp_ms` of the first batch.
    pub first_timestamp_ms: i64,
    /// Largest `max_timestamp_ms` over all batches.
    pub max_timestamp_ms: i64,
    /// Producer fields of the first batch.
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    /// True if any batch is transactional.
    pub is_transactional: bool,
    /// True if any batch is a control batch.
    pub is_control: bool,
}

/// Validates the record batches laid back to back in `buf` (one partition of a Produce request).
///
/// Checks per batch: length in range and inside `buf`, size at most `max_batch_size_bytes`,
/// magic 2, CRC-32C, `record_count >= 1` and `== last_offset_delta + 1`, and for uncompressed
/// batches that the records' length prefixes account for exactly `record_count` records filling
/// the batch. Never decompresses, never allocates, never panics.
pub fn validate_batches(
    buf: &[u8],
    max_batch_size_bytes: usize,
) -> Result<BatchesSummary, BatchError> {
    if buf.is_empty() {
        return Err(BatchError::Empty);
    }
    let mut summary = BatchesSummary {
        batch_count: 0,
        record_count: 0,
        first_timestamp_ms: 0,
        max_timestamp_ms: i64::MIN,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        is_transactional: false,
        is_control: false,
    };
    let mut position = 0usize;
    while position < buf.len() {
        let rest = &buf[position..];
        let header = validate_batch(rest, max_batch_size_bytes)?;
        if summary.batch_count == 0 {
            summary.first_timestamp_ms = header.base_timestamp_ms;
            summary.producer_id = header.producer_id;
            summary.producer_epoch = header.producer_epoch;
            summary.base_sequence = header.base_sequence;
        }
        summary.batch_count += 1;
        // validate_batch guarantees record_count >= 1.
        summary.record_count = summary
            .record_count
            .checked_add(header.record_count as u32)
            .ok_or(BatchError::InvalidRecordCount {
                record_count: header.record_count,
                last_offset_delta: header.last_offset_delta,
                records_found: None,
            })?;
        summary.max_timestamp_ms = summary.max_timestamp_ms.max(header.max_timestamp_ms);
        summary.is_transactional |= header.is_transactional();
        summary.is_control |= header.is_control();
        position += header.total_size_bytes();
    }
    assert_eq!(position, buf.len());
    assert!(summary.batch_count >= 1);
    Ok(summary)
}

/// Validates the single batch at the start of `buf` (trailing bytes are ignored) and returns
/// its header. Same checks as `validate_batches`.
pub fn validate_batch(
    buf: &[u8],
    max_batch_size_bytes: usize,
) -> Result<RecordBatchHeader, BatchError> {
    let header = RecordBatchHeader::parse(buf)?;
    let size_bytes = header.total_size_bytes();
    if size_bytes > max_batch_size_bytes {
        return Err(BatchError::TooLarge {
            size_bytes,
            max_bytes: max_batch_size_bytes,
        });
    }
    if size_bytes > buf.len() {
        return Err(BatchError::Truncated);
    }
    let batch = &buf[..size_bytes];

    let computed = crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..]);
    if computed != header.crc {
        return Err(BatchError::CorruptCrc {
            stored: header.crc,
            computed,
        });
    }

    if header.record_count < 1 || i64::from(header.record_count) != header.offset_count() {
        return Err(BatchError::InvalidRecordCount {
            record_count: header.record_count,
            last_offset_delta: header.last_offset_delta,
            records_found: None,
        });
    }

    match header.compression_codec() {
        COMPRESSION_NONE => {
            let records_found = count_uncompressed_records(
                &batch[RECORD_BATCH_HEADER_SIZE_BYTES..],
                header.record_count as u32,
            )?;
            if records_found != header.record_count as u32 {
                return Err(BatchError::InvalidRecordCount {
                    record_count: header.record_count,
                    last_offset_delta: header.last_offset_delta,
                    records_found: Some(records_found),
                });
            }
        }
        COMPRESSION_GZIP | COMPRESSION_SNAPPY | COMPRESSION_LZ4 | COMPRESSION_ZSTD => {}
        codec => return Err(BatchError::UnknownCompression(codec)),
    }
    Ok(header)
}

/// Walks the length prefixes of uncompressed records. Returns how many records were found;
/// errors if a length is negative, a prefix is malformed, the records overrun `records`, or
/// more than `record_count` records are present.
fn count_uncompressed_records(records: &[u8], record_count: u32) -> Result<u32, BatchError> {
    let mut position = 0usize;
    let mut found = 0u32;
    while position < records.len() {
        if found == record_count {
            return Err(BatchError::MalformedRecords(
                "bytes left after the last record",
            ));
        }
        let (length, prefix_size_bytes) = read_varint_i32(&records[position..])
            .ok_or(BatchError::MalformedRecords("bad record length prefix"))?;
        if length < 0 {
            return Err(BatchError::MalformedRecords("negative record length"));
        }
        position += prefix_size_bytes;
        let length = length as usize;
        if length > records.len() - position {
            return Err(BatchError::MalformedRecords("record overruns the batch"));
        }
        position += length;
        found += 1;
    }
    assert_eq!(position, records.len());
    Ok(found)
}

/// Decodes a zigzag varint that must fit in an i32. Returns the value and the bytes consumed,
/// or None if it is truncated or longer than 5 bytes.
fn read_varint_i32(buf: &[u8]) -> Option<(i32, usize)> {
    const VARINT_I32_MAX_SIZE_BYTES: usize = 5;
    let mut raw: u32 = 0;
    for index in 0..VARINT_I32_MAX_SIZE_BYTES {
        let byte = *buf.get(index)?;
        let bits = u32::from(byte & 0x7f);
        if index == VARINT_I32_MAX_SIZE_BYTES - 1 && bits > 0x0f {
            return None; // Would overflow 32 bits.
        }
        raw |= bits << (7 * index);
        if byte & 0x80 == 0 {
            let value = ((raw >> 1) as i32) ^ -((raw & 1) as i32);
            return Some((value, index + 1));
        }
    }
    None
}

/// Stamps the broker-assigned base offset. Outside the CRC coverage: no CRC recompute.
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    assert!(batch.len() >= RECORD_BATCH_HEADER_SIZE_BYTES);
    batch[BASE_OFFSET_OFFSET..BASE_OFFSET_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Stamps the leader epoch under which the batch was appended. Outside the CRC coverage.
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    assert!(batch.len() >= RECORD_BATCH_HEADER_SIZE_BYTES);
    batch[PARTITION_LEADER_EPOCH_OFFSET..PARTITION_LEADER_EPOCH_OFFSET + 4]
        .copy_from_slice(&epoch.to_be_bytes());
}

/// Marks the batch LogAppendTime with `now_ms` as its max timestamp (what consumers then see
/// for every record) and recomputes the CRC, which covers both fields. `batch` is one whole
/// batch.
pub fn set_log_append_time(batch: &mut [u8], now_ms: i64) {
    assert!(batch.len() >= RECORD_BATCH_HEADER_SIZE_BYTES);
    let attributes = read_i16(batch, ATTRIBUTES_OFFSET) | ATTRIBUTE_TIMESTAMP_TYPE;
    batch[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[MAX_TIMESTAMP_OFFSET..MAX_TIMESTAMP_OFFSET + 8].copy_from_slice(&now_ms.to_be_bytes());
    let crc = crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..]);
    batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

fn read_i16(buf: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([buf[at], buf[at + 1]])
}

fn read_i32(buf: &[u8], at: usize) -> i32 {
    let mut bytes = [0u8; 4];
    bytes.copy_from_slice(&buf[at..at + 4]);
    i32::from_be_bytes(bytes)
}

fn read_i64(buf: &[u8], at: usize) -> i64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&buf[at..at + 8]);
    i64::from_be_bytes(bytes)
}

/// Builders for well-formed batches, for tests here and in other modules.
#[doc(hidden)]
pub mod test_support {
    use super::*;

    /// Header fields a test may want to vary.
    #[derive(Debug, Clone, Copy)]
    pub struct BatchParams {
        pub base_offset: i64,
        pub partition_leader_epoch: i32,
        pub attributes: i16,
        pub base_timestamp_ms: i64,
        pub producer_id: i64,
        pub producer_epoch: i16,
        pub base_sequence: i32,
    }

    impl Default for BatchParams {
        fn default() -> Self {
            BatchParams {
                base_offset: 0,
                partition_leader_epoch: -1,
                attributes: 0,
                base_timestamp_ms: 1_700_000_000_000,
                producer_id: -1,
                producer_epoch: -1,
                base_sequence: -1,
            }
        }
    }

    /// An uncompressed batch with one record per value (null key, no headers, timestamp
    /// delta = record index).
    pub fn build_uncompressed_batch(params: BatchParams, values: &[&[u8]]) -> Vec<u8> {
        assert!(!values.is_empty());
        let mut records = Vec::new();
        for (index, value) in values.iter().enumerate() {
            let mut body = Vec::new();
            body.push(0u8); // attributes
            write_varint(&mut body, index as i64); // timestamp delta
            write_varint(&mut body, index as i64); // offset delta
            write_varint(&mut body, -1); // key length: null
            write_varint(&mut body, value.len() as i64);
            body.extend_from_slice(value);
            write_varint(&mut body, 0); // header count
            write_varint(&mut records, body.len() as i64);
            records.extend_from_slice(&body);
        }
        let params = BatchParams {
            attributes: params.attributes & !ATTRIBUTE_COMPRESSION_MASK,
            ..params
        };
        build_batch_raw(params, values.len() as i32, &records)
    }

    /// A batch whose records section is `payload` verbatim (e.g. "compressed" bytes for a
    /// codec set in `params.attributes`), with a correct length and CRC.
    pub fn build_batch_raw(params: BatchParams, record_count: i32, payload: &[u8]) -> Vec<u8> {
        let size_bytes = RECORD_BATCH_HEADER_SIZE_BYTES + payload.len();
        let mut batch = Vec::with_capacity(size_bytes);
        batch.extend_from_slice(&params.base_offset.to_be_bytes());
        batch.extend_from_slice(&((size_bytes - BATCH_LENGTH_OVERHEAD_BYTES) as i32).to_be_bytes());
        batch.extend_from_slice(&params.partition_leader_epoch.to_be_bytes());
        batch.push(MAGIC_V2 as u8);
        batch.extend_from_slice(&[0u8; 4]); // crc, filled below
        batch.extend_from_slice(&params.attributes.to_be_bytes());
        let last_offset_delta = record_count - 1;
        batch.extend_from_slice(&last_offset_delta.to_be_bytes());
        batch.extend_from_slice(&params.base_timestamp_ms.to_be_bytes());
        let max_timestamp_ms = params.base_timestamp_ms + i64::from(last_offset_delta.max(0));
        batch.extend_from_slice(&max_timestamp_ms.to_be_bytes());
        batch.extend_from_slice(&params.producer_id.to_be_bytes());
        batch.extend_from_slice(&params.producer_epoch.to_be_bytes());
        batch.extend_from_slice(&params.base_sequence.to_be_bytes());
        batch.extend_from_slice(&record_count.to_be_bytes());
        assert_eq!(batch.len(), RECORD_BATCH_HEADER_SIZE_BYTES);
        batch.extend_from_slice(payload);
        rewrite_crc(&mut batch);
        batch
    }

    /// Recomputes the CRC after a test edited a covered field.
    pub fn rewrite_crc(batch: &mut [u8]) {
        let crc = crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..]);
        batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
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
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    const MAX_BYTES: usize = 1 << 20;

    fn batch(values: &[&[u8]]) -> Vec<u8> {
        build_uncompressed_batch(BatchParams::default(), values)
    }

    /// Small deterministic PRNG so the fuzz-style tests need no dependency.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, bound: usize) -> usize {
            (self.next() % bound as u64) as usize
        }
    }

    #[test]
    fn parses_header_fields() {
        let params = BatchParams {
            base_offset: 42,
            partition_leader_epoch: 7,
            attributes: ATTRIBUTE_TRANSACTIONAL,
            base_timestamp_ms: 1000,
            producer_id: 99,
            producer_epoch: 3,
            base_sequence: 11,
        };
        let bytes = build_uncompressed_batch(params, &[b"a", b"bb", b"ccc"]);
        let header = RecordBatchHeader::parse(&bytes).unwrap();
        assert_eq!(header.base_offset, 42);
        assert_eq!(header.partition_leader_epoch, 7);
        assert_eq!(header.magic, 2);
        assert_eq!(header.total_size_bytes(), bytes.len());
        assert_eq!(header.last_offset_delta, 2);
        assert_eq!(header.last_offset(), 44);
        assert_eq!(header.record_count, 3);
        assert_eq!(header.base_timestamp_ms, 1000);
        assert_eq!(header.max_timestamp_ms, 1002);
        assert_eq!(header.producer_id, 99);
        assert_eq!(header.producer_epoch, 3);
        assert_eq!(header.base_sequence, 11);
        assert_eq!(header.compression_codec(), COMPRESSION_NONE);
        assert!(header.is_transactional());
        assert!(!header.is_control());
        assert!(!header.is_log_append_time());
    }

    #[test]
    fn validates_several_batches() {
        let mut bytes = batch(&[b"one", b"two"]);
        bytes.extend(build_uncompressed_batch(
            BatchParams {
                base_timestamp_ms: 5_000,
                attributes: ATTRIBUTE_CONTROL,
                ..BatchParams::default()
            },
            &[b"three"],
        ));
        bytes.extend(build_batch_raw(
            BatchParams {
                attributes: i16::from(COMPRESSION_ZSTD),
                ..BatchParams::default()
            },
            10,
            b"opaque compressed payload",
        ));
        let summary = validate_batches(&bytes, MAX_BYTES).unwrap();
        assert_eq!(summary.batch_count, 3);
        assert_eq!(summary.record_count, 13);
        assert_eq!(summary.first_timestamp_ms, 1_700_000_000_000);
        assert_eq!(summary.max_timestamp_ms, 1_700_000_000_009);
        assert!(summary.is_control);
        assert!(!summary.is_transactional);
    }

    #[test]
    fn rejects_empty_and_truncated() {
        assert_eq!(validate_batches(&[], MAX_BYTES), Err(BatchError::Empty));
        let bytes = batch(&[b"value"]);
        for cut in 1..bytes.len() {
            let result = validate_batches(&bytes[..cut], MAX_BYTES);
            assert_eq!(result, Err(BatchError::Truncated), "cut at {cut}");
        }
        // A good batch followed by a partial one.
        let mut two = bytes.clone();
        two.extend_from_slice(&bytes[..20]);
        assert_eq!(
            validate_batches(&two, MAX_BYTES),
            Err(BatchError::Truncated)
        );
    }

    #[test]
    fn rejects_old_magic() {
        let mut bytes = batch(&[b"value"]);
        bytes[MAGIC_OFFSET] = 1;
        assert_eq!(
            validate_batches(&bytes, MAX_BYTES),
            Err(BatchError::UnsupportedMagic(1))
        );
        // A v0 message shorter than a v2 header still reports its magic.
        let mut v0 = vec![0u8; 30];
        v0[MAGIC_OFFSET] = 0;
        assert_eq!(
            RecordBatchHeader::parse(&v0),
            Err(BatchError::UnsupportedMagic(0))
        );
    }

    #[test]
    fn rejects_bad_crc() {
        let mut bytes = batch(&[b"value"]);
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        assert!(matches!(
            validate_batches(&bytes, MAX_BYTES),
            Err(BatchError::CorruptCrc { .. })
        ));
    }

    #[test]
    fn rejects_bad_lengths() {
        let mut bytes = batch(&[b"value"]);
        bytes[BATCH_LENGTH_OFFSET..BATCH_LENGTH_OFFSET + 4].copy_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(
            validate_batches(&bytes, MAX_BYTES),
            Err(BatchError::InvalidLength(-1))
        );
        bytes[BATCH_LENGTH_OFFSET..BATCH_LENGTH_OFFSET + 4].copy_from_slice(&48i32.to_be_bytes());
        assert_eq!(
            validate_batches(&bytes, MAX_BYTES),
            Err(BatchError::InvalidLength(48))
        );
        bytes[BATCH_LENGTH_OFFSET..BATCH_LENGTH_OFFSET + 4]
            .copy_from_slice(&i32::MAX.to_be_bytes());
        assert_eq!(
            validate_batches(&bytes, usize::MAX),
            Err(BatchError::Truncated)
        );
    }

    #[test]
    fn rejects_too_large() {
        let value = vec![7u8; 1000];
        let bytes = batch(&[&value]);
        assert_eq!(
            validate_batches(&bytes, 500),
            Err(BatchError::TooLarge {
                size_bytes: bytes.len(),
                max_bytes: 500
            })
        );
        assert!(validate_batches(&bytes, bytes.len()).is_ok());
    }

    #[test]
    fn rejects_bad_record_counts() {
        // Zero records.
        let zero = build_batch_raw(BatchParams::default(), 0, b"");
        assert!(matches!(
            validate_batches(&zero, MAX_BYTES),
            Err(BatchError::InvalidRecordCount {
                record_count: 0,
                ..
            })
        ));
        // Count disagrees with lastOffsetDelta.
        let mut bytes = batch(&[b"a", b"b"]);
        bytes[RECORD_COUNT_OFFSET..RECORD_COUNT_OFFSET + 4].copy_from_slice(&3i32.to_be_bytes());
        rewrite_crc(&mut bytes);
        assert!(matches!(
            validate_batches(&bytes, MAX_BYTES),
            Err(BatchError::InvalidRecordCount {
                record_count: 3,
                ..
            })
        ));
        // Header claims more records than the body holds.
        let mut records = Vec::new();
        write_varint(&mut records, 1);
        records.push(0);
        let short = build_batch_raw(BatchParams::default(), 2, &records);
        assert!(matches!(
            validate_batches(&short, MAX_BYTES),
            Err(BatchError::InvalidRecordCount {
                records_found: Some(1),
                ..
            })
        ));
    }

    #[test]
    fn rejects_malformed_uncompressed_records() {
        // Bytes after the last record.
        let mut records = Vec::new();
        write_varint(&mut records, 1);
        records.extend_from_slice(&[0, 9]);
        let extra = build_batch_raw(BatchParams::default(), 1, &records);
        assert_eq!(
            validate_batches(&extra, MAX_BYTES),
            Err(BatchError::MalformedRecords(
                "bytes left after the last record"
            ))
        );
        // Record overruns.
        let mut records = Vec::new();
        write_varint(&mut records, 100);
        records.push(0);
        let overrun = build_batch_raw(BatchParams::default(), 1, &records);
        assert!(matches!(
            validate_batches(&overrun, MAX_BYTES),
            Err(BatchError::MalformedRecords(_))
        ));
        // Negative length.
        let mut records = Vec::new();
        write_varint(&mut records, -3);
        let negative = build_batch_raw(BatchParams::default(), 1, &records);
        assert!(matches!(
            validate_batches(&negative, MAX_BYTES),
            Err(BatchError::MalformedRecords(_))
        ));
        // Over-long varint.
        let records = [0xffu8, 0xff, 0xff, 0xff, 0xff, 0x01];
        let long = build_batch_raw(BatchParams::default(), 1, &records);
        assert!(matches!(
            validate_batches(&long, MAX_BYTES),
            Err(BatchError::MalformedRecords(_))
        ));
        // Unknown codec.
        let bad_codec = build_batch_raw(
            BatchParams {
                attributes: 5,
                ..BatchParams::default()
            },
            1,
            b"x",
        );
        assert_eq!(
            validate_batches(&bad_codec, MAX_BYTES),
            Err(BatchError::UnknownCompression(5))
        );
    }

    #[test]
    fn varint_round_trip() {
        for value in [
            0i64,
            1,
            -1,
            63,
            -64,
            64,
            300,
            -300,
            i32::MAX as i64,
            i32::MIN as i64,
        ] {
            let mut out = Vec::new();
            write_varint(&mut out, value);
            assert_eq!(read_varint_i32(&out), Some((value as i32, out.len())));
        }
        let mut out = Vec::new();
        write_varint(&mut out, i64::from(i32::MAX) + 1);
        assert_eq!(read_varint_i32(&out), None);
        assert_eq!(read_varint_i32(&[0x80]), None);
    }

    #[test]
    fn stamping_keeps_crc_valid() {
        let mut bytes = batch(&[b"a", b"b"]);
        set_base_offset(&mut bytes, 1_234_567);
        set_partition_leader_epoch(&mut bytes, 9);
        let summary = validate_batches(&bytes, MAX_BYTES).unwrap();
        assert_eq!(summary.record_count, 2);
        let header = RecordBatchHeader::parse(&bytes).unwrap();
        assert_eq!(header.base_offset, 1_234_567);
        assert_eq!(header.partition_leader_epoch, 9);
        assert_eq!(header.last_offset(), 1_234_568);
    }

    #[test]
    fn random_truncations_never_pass_or_panic() {
        let mut bytes = batch(&[b"alpha", b"beta"]);
        bytes.extend(batch(&[b"gamma"]));
        let first_size = RecordBatchHeader::parse(&bytes).unwrap().total_size_bytes();
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..2000 {
            let cut = rng.below(bytes.len());
            let result = validate_batches(&bytes[..cut], MAX_BYTES);
            if cut == first_size {
                assert!(result.is_ok());
            } else {
                assert!(result.is_err(), "cut at {cut} passed");
            }
        }
    }

    #[test]
    fn random_bit_flips_never_panic() {
        let mut original = batch(&[b"alpha", b"beta", b"gamma"]);
        original.extend(build_batch_raw(
            BatchParams {
                attributes: i16::from(COMPRESSION_LZ4),
                ..BatchParams::default()
            },
            4,
            b"lz4-ish",
        ));
        let mut rng = XorShift(0x1234_5678_9abc_def1);
        for _ in 0..20_000 {
            let mut bytes = original.clone();
            let flips = 1 + rng.below(4);
            for _ in 0..flips {
                let at = rng.below(bytes.len());
                bytes[at] ^= 1 << rng.below(8);
            }
            let result = validate_batches(&bytes, MAX_BYTES);
            // A flip inside the CRC-covered region must be caught; flips confined to base
            // offsets or leader epochs are legitimately invisible.
            let only_uncovered = bytes
                .iter()
                .zip(original.iter())
                .enumerate()
                .all(|(index, (a, b))| a == b || is_uncovered(&original, index));
            if only_uncovered {
                assert!(result.is_ok());
            } else {
                assert!(result.is_err());
            }
        }
        // Fully random buffers.
        for _ in 0..5_000 {
            let size = rng.below(200);
            let bytes: Vec<u8> = (0..size).map(|_| rng.next() as u8).collect();
            let _ = validate_batches(&bytes, MAX_BYTES);
            let _ = RecordBatchHeader::parse(&bytes);
        }
    }

    /// True if byte `index` of `buf` is a base offset or leader epoch field, which the CRC does
    /// not cover.
    fn is_uncovered(buf: &[u8], index: usize) -> bool {
        let mut position = 0;
        while position < buf.len() {
            let header = RecordBatchHeader::parse(&buf[position..]).unwrap();
            let relative = index.wrapping_sub(position);
            if relative < 8 || (12..16).contains(&relative) {
                return true;
            }
            position += header.total_size_bytes();
        }
        false
    }
}
