//! Records of `__consumer_offsets`, in Kafka's own layouts (big-endian, `i16`-prefixed strings):
//!
//! | key version | key | value |
//! | --- | --- | --- |
//! | 1 | OffsetCommitKey: group, topic, partition | OffsetCommitValue v3: offset, leader epoch, metadata, commit timestamp |
//! | 2 | GroupMetadataKey: group | GroupMetadataValue v3: protocol type, generation, protocol, leader, state timestamp, members |
//! | 3 | ConsumerGroupMetadataKey: group | ConsumerGroupMetadataValue v0: epoch (+ empty tagged fields) |
//!
//! A null value is a tombstone (the offset or group is deleted). Records go into uncompressed v2
//! batches. Decoding never panics: malformed input is an error the replay logs and skips.

use bytes::{BufMut, Bytes, BytesMut};

pub const OFFSET_COMMIT_KEY_VERSION: i16 = 1;
pub const GROUP_METADATA_KEY_VERSION: i16 = 2;
pub const CONSUMER_GROUP_METADATA_KEY_VERSION: i16 = 3;
const OFFSET_COMMIT_VALUE_VERSION: i16 = 3;
const GROUP_METADATA_VALUE_VERSION: i16 = 3;
const CONSUMER_GROUP_METADATA_VALUE_VERSION: i16 = 0;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordKey {
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    ClassicGroup {
        group: String,
    },
    ConsumerGroup {
        group: String,
    },
}

impl RecordKey {
    pub fn group(&self) -> &str {
        match self {
            RecordKey::Offset { group, .. }
            | RecordKey::ClassicGroup { group }
            | RecordKey::ConsumerGroup { group } => group,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberValue {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// The member's metadata for the selected protocol.
    pub subscription: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassicGroupValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp_ms: i64,
    pub members: Vec<MemberValue>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerGroupValue {
    pub epoch: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record truncated")]
    Truncated,
    #[error("unknown {what} version {version}")]
    UnknownVersion { what: &'static str, version: i16 },
    #[error("invalid {0}")]
    Invalid(&'static str),
}

// ---- encoding ---------------------------------------------------------------------------------

fn put_string(out: &mut Vec<u8>, value: &str) {
    // Callers bound every string well below i16::MAX (ids, names, metadata).
    let length = i16::try_from(value.len()).expect("string fits an i16 length");
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(value.as_bytes());
}

fn put_nullable_string(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        Some(value) => put_string(out, value),
        None => out.extend_from_slice(&(-1i16).to_be_bytes()),
    }
}

fn put_bytes(out: &mut Vec<u8>, value: &[u8]) {
    let length = i32::try_from(value.len()).expect("bytes fit an i32 length");
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(value);
}

pub fn encode_key(key: &RecordKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    match key {
        RecordKey::Offset {
            group,
            topic,
            partition,
        } => {
            out.extend_from_slice(&OFFSET_COMMIT_KEY_VERSION.to_be_bytes());
            put_string(&mut out, group);
            put_string(&mut out, topic);
            out.extend_from_slice(&partition.to_be_bytes());
        }
        RecordKey::ClassicGroup { group } => {
            out.extend_from_slice(&GROUP_METADATA_KEY_VERSION.to_be_bytes());
            put_string(&mut out, group);
        }
        RecordKey::ConsumerGroup { group } => {
            out.extend_from_slice(&CONSUMER_GROUP_METADATA_KEY_VERSION.to_be_bytes());
            put_string(&mut out, group);
        }
    }
    out
}

pub fn encode_offset_value(value: &OffsetValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + value.metadata.len());
    out.extend_from_slice(&OFFSET_COMMIT_VALUE_VERSION.to_be_bytes());
    out.extend_from_slice(&value.offset.to_be_bytes());
    out.extend_from_slice(&value.leader_epoch.to_be_bytes());
    put_string(&mut out, &value.metadata);
    out.extend_from_slice(&value.commit_timestamp_ms.to_be_bytes());
    out
}

pub fn encode_classic_group_value(value: &ClassicGroupValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(&GROUP_METADATA_VALUE_VERSION.to_be_bytes());
    put_string(&mut out, &value.protocol_type);
    out.extend_from_slice(&value.generation.to_be_bytes());
    put_nullable_string(&mut out, value.protocol.as_deref());
    put_nullable_string(&mut out, value.leader.as_deref());
    out.extend_from_slice(&value.state_timestamp_ms.to_be_bytes());
    let count = i32::try_from(value.members.len()).expect("member count bounded");
    out.extend_from_slice(&count.to_be_bytes());
    for member in &value.members {
        put_string(&mut out, &member.member_id);
        put_nullable_string(&mut out, member.instance_id.as_deref());
        put_string(&mut out, &member.client_id);
        put_string(&mut out, &member.client_host);
        out.extend_from_slice(&member.rebalance_timeout_ms.to_be_bytes());
        out.extend_from_slice(&member.session_timeout_ms.to_be_bytes());
        put_bytes(&mut out, &member.subscription);
        put_bytes(&mut out, &member.assignment);
    }
    out
}

pub fn encode_consumer_group_value(value: &ConsumerGroupValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(8);
    out.extend_from_slice(&CONSUMER_GROUP_METADATA_VALUE_VERSION.to_be_bytes());
    out.extend_from_slice(&value.epoch.to_be_bytes());
    out.push(0); // no tagged fields
    out
}

// ---- decoding ---------------------------------------------------------------------------------

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, position: 0 }
    }

    fn take(&mut self, count: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .position
            .checked_add(count)
            .ok_or(DecodeError::Truncated)?;
        let slice = self
            .buf
            .get(self.position..end)
            .ok_or(DecodeError::Truncated)?;
        self.position = end;
        Ok(slice)
    }

    pub(crate) fn i8(&mut self) -> Result<i8, DecodeError> {
        Ok(self.take(1)?[0] as i8)
    }

    pub(crate) fn i16(&mut self) -> Result<i16, DecodeError> {
        let bytes = self.take(2)?;
        Ok(i16::from_be_bytes([bytes[0], bytes[1]]))
    }

    pub(crate) fn i32(&mut self) -> Result<i32, DecodeError> {
        let mut bytes = [0u8; 4];
        bytes.copy_from_slice(self.take(4)?);
        Ok(i32::from_be_bytes(bytes))
    }

    pub(crate) fn i64(&mut self) -> Result<i64, DecodeError> {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(self.take(8)?);
        Ok(i64::from_be_bytes(bytes))
    }

    pub(crate) fn nullable_string(&mut self) -> Result<Option<String>, DecodeError> {
        let length = self.i16()?;
        if length < 0 {
            return Ok(None);
        }
        let bytes = self.take(length as usize)?;
        String::from_utf8(bytes.to_vec())
            .map(Some)
            .map_err(|_| DecodeError::Invalid("UTF-8 string"))
    }

    pub(crate) fn string(&mut self) -> Result<String, DecodeError> {
        self.nullable_string()?
            .ok_or(DecodeError::Invalid("null string"))
    }

    fn bytes(&mut self) -> Result<Bytes, DecodeError> {
        let length = self.i32()?;
        if length < 0 {
            return Ok(Bytes::new());
        }
        Ok(Bytes::copy_from_slice(self.take(length as usize)?))
    }

    /// Zigzag varint (Kafka record fields), at most 10 bytes.
    fn varint(&mut self) -> Result<i64, DecodeError> {
        let mut raw: u64 = 0;
        for index in 0..10 {
            let byte = self.take(1)?[0];
            raw |= u64::from(byte & 0x7f) << (7 * index);
            if byte & 0x80 == 0 {
                return Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64));
            }
        }
        Err(DecodeError::Invalid("varint"))
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.position
    }
}

pub fn decode_key(buf: &[u8]) -> Result<RecordKey, DecodeError> {
    let mut reader = Reader::new(buf);
    let version = reader.i16()?;
    match version {
        // Kafka wrote offset keys as version 0 before 0.9 and 1 since; both share the layout.
        0 | OFFSET_COMMIT_KEY_VERSION => Ok(RecordKey::Offset {
            group: reader.string()?,
            topic: reader.string()?,
            partition: reader.i32()?,
        }),
        GROUP_METADATA_KEY_VERSION => Ok(RecordKey::ClassicGroup {
            group: reader.string()?,
        }),
        CONSUMER_GROUP_METADATA_KEY_VERSION => Ok(RecordKey::ConsumerGroup {
            group: reader.string()?,
        }),
        version => Err(DecodeError::UnknownVersion {
            what: "key",
            version,
        }),
    }
}

pub fn decode_offset_value(buf: &[u8]) -> Result<OffsetValue, DecodeError> {
    let mut reader = Reader::new(buf);
    let version = reader.i16()?;
    match version {
        // v0: offset, metadata, timestamp; v1: + expire timestamp; v2: without it; v3: + epoch.
        0..=2 => {
            let offset = reader.i64()?;
            let metadata = reader.string()?;
            let commit_timestamp_ms = reader.i64()?;
            Ok(OffsetValue {
                offset,
                leader_epoch: -1,
                metadata,
                commit_timestamp_ms,
            })
        }
        OFFSET_COMMIT_VALUE_VERSION => Ok(OffsetValue {
            offset: reader.i64()?,
            leader_epoch: reader.i32()?,
            metadata: reader.string()?,
            commit_timestamp_ms: reader.i64()?,
        }),
        version => Err(DecodeError::UnknownVersion {
            what: "offset value",
            version,
        }),
    }
}

pub fn decode_classic_group_value(buf: &[u8]) -> Result<ClassicGroupValue, DecodeError> {
    let mut reader = Reader::new(buf);
    let version = reader.i16()?;
    if version != GROUP_METADATA_VALUE_VERSION {
        return Err(DecodeError::UnknownVersion {
            what: "group metadata value",
            version,
        });
    }
    let protocol_type = reader.string()?;
    let generation = reader.i32()?;
    let protocol = reader.nullable_string()?;
    let leader = reader.nullable_string()?;
    let state_timestamp_ms = reader.i64()?;
    let count = reader.i32()?;
    // Each member takes at least 26 bytes: a count larger than that is corrupt.
    if count < 0 || count as usize > reader.remaining() / 26 + 1 {
        return Err(DecodeError::Invalid("member count"));
    }
    let mut members = Vec::with_capacity(count as usize);
    for _ in 0..count {
        members.push(MemberValue {
            member_id: reader.string()?,
            instance_id: reader.nullable_string()?,
            client_id: reader.string()?,
            client_host: reader.string()?,
            rebalance_timeout_ms: reader.i32()?,
            session_timeout_ms: reader.i32()?,
            subscription: reader.bytes()?,
            assignment: reader.bytes()?,
        });
    }
    Ok(ClassicGroupValue {
        protocol_type,
        generation,
        protocol,
        leader,
        state_timestamp_ms,
        members,
    })
}

pub fn decode_consumer_group_value(buf: &[u8]) -> Result<ConsumerGroupValue, DecodeError> {
    let mut reader = Reader::new(buf);
    let version = reader.i16()?;
    if version != CONSUMER_GROUP_METADATA_VALUE_VERSION {
        return Err(DecodeError::UnknownVersion {
            what: "consumer group metadata value",
            version,
        });
    }
    Ok(ConsumerGroupValue {
        epoch: reader.i32()?,
    })
}

// ---- batches ----------------------------------------------------------------------------------

/// One record to append: key and value (`None` = tombstone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

fn put_varint(out: &mut BytesMut, value: i64) {
    let mut raw = ((value << 1) ^ (value >> 63)) as u64;
    loop {
        let byte = (raw & 0x7f) as u8;
        raw >>= 7;
        if raw == 0 {
            out.put_u8(byte);
            return;
        }
        out.put_u8(byte | 0x80);
    }
}

fn varint_size(value: i64) -> usize {
    let mut raw = ((value << 1) ^ (value >> 63)) as u64;
    let mut size = 1;
    while raw >= 0x80 {
        raw >>= 7;
        size += 1;
    }
    size
}

/// An uncompressed v2 batch holding `records` (at least one), all stamped `timestamp_ms`.
/// Base offset and leader epoch are left for the log to stamp.
pub fn encode_batch(records: &[Record], timestamp_ms: i64) -> Bytes {
    encode_batch_as(records, timestamp_ms, None)
}

/// The producer of a transactional batch: its records count only once the transaction's
/// COMMIT marker follows them in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnProducer {
    pub producer_id: i64,
    pub producer_epoch: i16,
}

/// Like [`encode_batch`], as a transactional batch of `producer` when given.
pub fn encode_batch_as(
    records: &[Record],
    timestamp_ms: i64,
    producer: Option<TxnProducer>,
) -> Bytes {
    use crate::protocol::record_batch::RECORD_BATCH_HEADER_SIZE_BYTES;
    assert!(!records.is_empty(), "a batch holds at least one record");
    let mut out = BytesMut::with_capacity(
        RECORD_BATCH_HEADER_SIZE_BYTES
            + records
                .iter()
                .map(|r| r.key.len() + r.value.as_ref().map_or(0, Vec::len) + 16)
                .sum::<usize>(),
    );
    out.put_i64(0); // base offset
    out.put_i32(0); // batch length, below
    out.put_i32(-1); // partition leader epoch
    out.put_i8(2); // magic
    out.put_u32(0); // crc, below
                    // Attributes: no compression, create time; transactional when a producer is given.
    out.put_i16(if producer.is_some() { 0x10 } else { 0 });
    let last_offset_delta = i32::try_from(records.len() - 1).expect("record count bounded");
    out.put_i32(last_offset_delta);
    out.put_i64(timestamp_ms);
    out.put_i64(timestamp_ms);
    out.put_i64(producer.map_or(-1, |p| p.producer_id));
    out.put_i16(producer.map_or(-1, |p| p.producer_epoch));
    out.put_i32(-1); // base sequence: the coordinator's batches are not deduplicated
    out.put_i32(last_offset_delta + 1);
    for (index, record) in records.iter().enumerate() {
        let value_size = record.value.as_ref().map_or(0, Vec::len);
        let value_length = record.value.as_ref().map_or(-1, |v| v.len() as i64);
        let body_size = 1 // attributes
            + varint_size(0) // timestamp delta
            + varint_size(index as i64)
            + varint_size(record.key.len() as i64)
            + record.key.len()
            + varint_size(value_length)
            + value_size
            + varint_size(0); // headers
        put_varint(&mut out, body_size as i64);
        out.put_u8(0);
        put_varint(&mut out, 0);
        put_varint(&mut out, index as i64);
        put_varint(&mut out, record.key.len() as i64);
        out.put_slice(&record.key);
        put_varint(&mut out, value_length);
        if let Some(value) = &record.value {
            out.put_slice(value);
        }
        put_varint(&mut out, 0);
    }
    let batch_length = i32::try_from(out.len() - 12).expect("batch size bounded");
    out[8..12].copy_from_slice(&batch_length.to_be_bytes());
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out.freeze()
}

/// A record read back from a batch: its offset, key and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord<'a> {
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

/// The records of one validated, uncompressed batch (`batch` is exactly the batch).
pub fn decode_batch_records(
    batch: &[u8],
    base_offset: i64,
    record_count: i32,
) -> Result<Vec<StoredRecord<'_>>, DecodeError> {
    use crate::protocol::record_batch::RECORD_BATCH_HEADER_SIZE_BYTES;
    let body = batch
        .get(RECORD_BATCH_HEADER_SIZE_BYTES..)
        .ok_or(DecodeError::Truncated)?;
    let mut reader = Reader::new(body);
    let mut records = Vec::with_capacity(record_count.clamp(0, 4096) as usize);
    for _ in 0..record_count.max(0) {
        let length = reader.varint()?;
        if length < 0 {
            return Err(DecodeError::Invalid("record length"));
        }
        let mut record = Reader::new(reader.take(length as usize)?);
        let _attributes = record.i8()?;
        let _timestamp_delta = record.varint()?;
        let offset_delta = record.varint()?;
        let key_length = record.varint()?;
        let key = if key_length < 0 {
            None
        } else {
            Some(record.take(key_length as usize)?)
        };
        let value_length = record.varint()?;
        let value = if value_length < 0 {
            None
        } else {
            Some(record.take(value_length as usize)?)
        };
        records.push(StoredRecord {
            offset: base_offset.saturating_add(offset_delta),
            key,
            value,
        });
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::record_batch::{validate_batches, RecordBatchHeader};

    #[test]
    fn keys_and_values_round_trip() {
        let keys = [
            RecordKey::Offset {
                group: "g".into(),
                topic: "orders".into(),
                partition: 7,
            },
            RecordKey::ClassicGroup { group: "g".into() },
            RecordKey::ConsumerGroup {
                group: "grüße".into(),
            },
        ];
        for key in keys {
            assert_eq!(decode_key(&encode_key(&key)).unwrap(), key);
        }
        let offset = OffsetValue {
            offset: 42,
            leader_epoch: 3,
            metadata: "meta".into(),
            commit_timestamp_ms: 1_700_000_000_123,
        };
        assert_eq!(
            decode_offset_value(&encode_offset_value(&offset)).unwrap(),
            offset
        );
        let group = ClassicGroupValue {
            protocol_type: "consumer".into(),
            generation: 5,
            protocol: Some("range".into()),
            leader: Some("m1".into()),
            state_timestamp_ms: 99,
            members: vec![MemberValue {
                member_id: "m1".into(),
                instance_id: Some("i1".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 300_000,
                session_timeout_ms: 10_000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        };
        assert_eq!(
            decode_classic_group_value(&encode_classic_group_value(&group)).unwrap(),
            group
        );
        let consumer = ConsumerGroupValue { epoch: 12 };
        assert_eq!(
            decode_consumer_group_value(&encode_consumer_group_value(&consumer)).unwrap(),
            consumer
        );
    }

    #[test]
    fn kafka_offset_value_v1_layout_decodes() {
        // v1 as Kafka 0.10 wrote it: offset, metadata, commit timestamp, expire timestamp.
        let mut buf = Vec::new();
        buf.extend_from_slice(&1i16.to_be_bytes());
        buf.extend_from_slice(&10i64.to_be_bytes());
        buf.extend_from_slice(&2i16.to_be_bytes());
        buf.extend_from_slice(b"md");
        buf.extend_from_slice(&5i64.to_be_bytes());
        buf.extend_from_slice(&6i64.to_be_bytes());
        let value = decode_offset_value(&buf).unwrap();
        assert_eq!((value.offset, value.metadata.as_str()), (10, "md"));
        assert_eq!(value.leader_epoch, -1);
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let good = encode_key(&RecordKey::Offset {
            group: "group".into(),
            topic: "topic".into(),
            partition: 1,
        });
        for cut in 0..good.len() {
            assert!(decode_key(&good[..cut]).is_err());
        }
        assert!(matches!(
            decode_key(&9i16.to_be_bytes()),
            Err(DecodeError::UnknownVersion { .. })
        ));
        let mut value = encode_classic_group_value(&ClassicGroupValue {
            protocol_type: "consumer".into(),
            generation: 1,
            protocol: None,
            leader: None,
            state_timestamp_ms: 0,
            members: vec![],
        });
        let count_at = value.len() - 4;
        value[count_at..].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(decode_classic_group_value(&value).is_err());
        for cut in 0..value.len() {
            let _ = decode_offset_value(&value[..cut]);
            let _ = decode_consumer_group_value(&value[..cut]);
        }
    }

    #[test]
    fn batches_validate_and_decode() {
        let records = vec![
            Record {
                key: b"k1".to_vec(),
                value: Some(b"v1".to_vec()),
            },
            Record {
                key: b"k2".to_vec(),
                value: None,
            },
            Record {
                key: vec![7; 300],
                value: Some(vec![8; 70_000]),
            },
        ];
        let batch = encode_batch(&records, 1_700_000_000_000);
        let summary = validate_batches(&batch, usize::MAX).unwrap();
        assert_eq!(summary.record_count, 3);
        let header = RecordBatchHeader::parse(&batch).unwrap();
        let decoded = decode_batch_records(&batch, 100, header.record_count).unwrap();
        assert_eq!(decoded.len(), 3);
        assert_eq!(decoded[0].offset, 100);
        assert_eq!(decoded[0].key, Some(&b"k1"[..]));
        assert_eq!(decoded[1].value, None);
        assert_eq!(decoded[2].offset, 102);
        assert_eq!(decoded[2].value.map(<[u8]>::len), Some(70_000));
    }
}
