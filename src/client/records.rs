//! Record batches for the client: encode what Produce sends, decode what Fetch returns.

use super::{ClientError, Result};
use bytes::{Bytes, BytesMut};
use indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID,
};

/// One record to produce.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewRecord {
    pub key: Option<Bytes>,
    pub value: Bytes,
    pub headers: Vec<(String, Bytes)>,
}

/// Encodes `records` as one v2 batch (not idempotent: producer id -1, base sequence -1), all
/// stamped with `timestamp_ms`.
pub fn encode_batch(
    records: &[NewRecord],
    timestamp_ms: i64,
    compression: Compression,
) -> Result<Bytes> {
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(index, record)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            timestamp_type: TimestampType::Creation,
            offset: index as i64,
            // The encoder keeps records in one batch while offset − sequence is constant and
            // takes the batch's base sequence from the first record: -1, 0, 1, … keeps one
            // batch with base sequence -1 (no sequence).
            sequence: index as i32 - 1,
            timestamp: timestamp_ms,
            key: record.key.clone(),
            value: Some(record.value.clone()),
            headers: record
                .headers
                .iter()
                .map(|(name, value)| (StrBytes::from_string(name.clone()), Some(value.clone())))
                .collect::<IndexMap<_, _>>(),
        })
        .collect();
    let mut buffer = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buffer,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .map_err(|e| ClientError::Protocol(format!("cannot encode records: {e}")))?;
    Ok(buffer.freeze())
}

/// A record as fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedRecord {
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// Size of a batch's fixed prefix that carries its length: base offset (8) + length (4).
const BATCH_LENGTH_PREFIX_BYTES: usize = 12;

/// Decodes the batches of a Fetch response partition. A partial batch at the end (a broker
/// may cut the last one at `max_bytes`) is ignored, as Kafka clients do; control records are
/// skipped.
pub fn decode_batches(data: &Bytes) -> Result<Vec<FetchedRecord>> {
    let mut records = Vec::new();
    let mut position = 0;
    while data.len() - position >= BATCH_LENGTH_PREFIX_BYTES {
        let length = i32::from_be_bytes(data[position + 8..position + 12].try_into().unwrap());
        let total = BATCH_LENGTH_PREFIX_BYTES + usize::try_from(length).unwrap_or(0);
        if length <= 0 || data.len() - position < total {
            break;
        }
        let mut batch = data.slice(position..position + total);
        position += total;
        let set = RecordBatchDecoder::decode(&mut batch)
            .map_err(|e| ClientError::Protocol(format!("cannot decode record batch: {e}")))?;
        records.extend(set.records.into_iter().filter(|r| !r.control).map(|r| {
            FetchedRecord {
                offset: r.offset,
                timestamp_ms: r.timestamp,
                key: r.key,
                value: r.value,
                headers: r
                    .headers
                    .into_iter()
                    .map(|(name, value)| (name.to_string(), value))
                    .collect(),
            }
        }));
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_batch_round_trips_and_partial_tail_is_ignored() {
        let records = vec![
            NewRecord {
                key: Some(Bytes::from_static(b"k")),
                value: Bytes::from_static(b"one"),
                headers: vec![("h".into(), Bytes::from_static(b"v"))],
            },
            NewRecord {
                key: None,
                value: Bytes::from_static(b"two"),
                headers: vec![],
            },
        ];
        let batch = encode_batch(&records, 1_700_000_000_000, Compression::None).unwrap();
        let info = RecordBatchDecoder::decode_batch_info(&mut batch.clone()).unwrap();
        assert_eq!(info.len(), 1, "one batch, not one per record");
        assert_eq!(info[0].base_sequence, -1);
        assert_eq!(info[0].producer_id, -1);
        let mut two = BytesMut::from(&batch[..]);
        two.extend_from_slice(&batch[..batch.len() - 3]);
        let fetched = decode_batches(&two.freeze()).unwrap();
        assert_eq!(fetched.len(), 2);
        assert_eq!(fetched[0].value.as_deref(), Some(&b"one"[..]));
        assert_eq!(
            fetched[0].headers,
            vec![("h".to_string(), Some(Bytes::from_static(b"v")))]
        );
        assert_eq!(fetched[1].offset, 1);
        assert_eq!(fetched[1].key, None);
    }
}
