//! The per-record checks Kafka's log validator applies to a produce, and LogAppendTime.
//!
//! Most topics need none of this: their batches are appended as the client framed them (CRC
//! and framing were checked by `validate_batches`). A topic's policy asks for record-level
//! work only when it must: `cleanup.policy=compact` needs every record to have a key, and
//! finite `message.timestamp.before.max.ms` / `after.max.ms` bound each CreateTime record's
//! timestamp. Refused records are reported as Kafka does since KIP-467: INVALID_RECORD or
//! INVALID_TIMESTAMP for the partition, each offending record's index in the batch and a
//! message, and a summary in `error_message`.

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError;

use crate::cluster::topic_config::{self, TopicConfigs};
use crate::config::BrokerConfig;
use crate::protocol::record_batch::{set_log_append_time, RecordBatchHeader};
use crate::protocol::records::{parse_records, records_section};

/// At most this many record errors are reported per partition (the rest are counted).
pub const MAX_REPORTED_RECORD_ERRORS: usize = 100;

/// How one topic treats the records it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordPolicy {
    pub compacted: bool,
    pub log_append_time: bool,
    pub timestamp_before_max_ms: i64,
    pub timestamp_after_max_ms: i64,
}

/// Why a partition's records were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRejection {
    pub error: ResponseError,
    /// (index of the record in the partition's records, why), at most
    /// `MAX_REPORTED_RECORD_ERRORS`.
    pub record_errors: Vec<(i32, String)>,
    pub message: String,
}

impl RecordPolicy {
    /// The topic's policy. Allocation-free: it runs for every partition of every produce.
    pub fn of(configs: &TopicConfigs, broker: &BrokerConfig) -> RecordPolicy {
        // The topic's own value, else a dynamic broker default (Kafka's default otherwise:
        // delete, CreateTime).
        let value = |key: &str| {
            configs
                .get(key)
                .map(String::as_str)
                .or_else(|| {
                    crate::cluster::broker_config::topic_default_override(key, broker)
                        .map(|(value, _)| value)
                })
                .map(str::trim)
        };
        let (timestamp_before_max_ms, timestamp_after_max_ms) =
            topic_config::timestamp_bounds_ms(configs, broker);
        RecordPolicy {
            compacted: value("cleanup.policy")
                .is_some_and(|policy| policy.split(',').any(|part| part.trim() == "compact")),
            log_append_time: value("message.timestamp.type") == Some("LogAppendTime"),
            timestamp_before_max_ms,
            timestamp_after_max_ms,
        }
    }

    fn checks_timestamps(&self) -> bool {
        !self.log_append_time
            && (self.timestamp_before_max_ms < i64::MAX || self.timestamp_after_max_ms < i64::MAX)
    }

    /// True if `check` has anything to look at.
    pub fn inspects_records(&self) -> bool {
        self.compacted || self.checks_timestamps()
    }

    /// Checks every record of `batches` (already validated back-to-back batches) against
    /// the policy at `now_ms`. Control batches are the broker's own and are not checked.
    pub fn check(
        &self,
        batches: &[u8],
        partition: &str,
        now_ms: i64,
    ) -> Result<(), RecordRejection> {
        if !self.inspects_records() {
            return Ok(());
        }
        let earliest_ms = now_ms.saturating_sub(self.timestamp_before_max_ms);
        let latest_ms = now_ms.saturating_add(self.timestamp_after_max_ms);
        let mut record_errors = Vec::new();
        let mut error_count = 0usize;
        let mut timestamp_error = false;
        let mut record_index = 0i32;
        let mut position = 0usize;
        while position < batches.len() {
            let header = RecordBatchHeader::parse(&batches[position..])
                .expect("validate_batches checked the framing");
            let batch = &batches[position..position + header.total_size_bytes()];
            position += header.total_size_bytes();
            if header.is_control() {
                record_index = record_index.saturating_add(header.record_count);
                continue;
            }
            let unreadable = |reason: String| RecordRejection {
                error: ResponseError::CorruptMessage,
                record_errors: Vec::new(),
                message: format!("records of the batch cannot be read: {reason}"),
            };
            let section = records_section(batch, header.compression_codec()).map_err(unreadable)?;
            let records = parse_records(&section).map_err(unreadable)?;
            for record in records {
                let mut problem = None;
                if self.compacted && record.key.is_none() {
                    problem = Some(format!(
                        "Compacted topic cannot accept message without key in topic partition \
                         {partition}."
                    ));
                } else if self.checks_timestamps() {
                    let timestamp_ms = header
                        .base_timestamp_ms
                        .saturating_add(record.timestamp_delta_ms);
                    if timestamp_ms < earliest_ms || timestamp_ms > latest_ms {
                        timestamp_error = true;
                        problem = Some(format!(
                            "Timestamp {timestamp_ms} of message with offset delta {} is out of \
                             range. The timestamp should be within [{earliest_ms}, {latest_ms}]",
                            record.offset_delta
                        ));
                    }
                }
                if let Some(problem) = problem {
                    error_count += 1;
                    if record_errors.len() < MAX_REPORTED_RECORD_ERRORS {
                        record_errors.push((record_index, problem));
                    }
                }
                record_index = record_index.saturating_add(1);
            }
        }
        if error_count == 0 {
            return Ok(());
        }
        // Kafka answers INVALID_TIMESTAMP if any record had a bad timestamp.
        let (error, what) = if timestamp_error {
            (ResponseError::InvalidTimestamp, "invalid timestamp")
        } else {
            (ResponseError::InvalidRecord, "invalid records")
        };
        let shown: Vec<&str> = record_errors
            .iter()
            .take(3)
            .map(|(_, message)| message.as_str())
            .collect();
        Err(RecordRejection {
            error,
            message: format!(
                "One or more records have been rejected due to {what}: {error_count} record \
                 errors in total, the first: {shown:?}"
            ),
            record_errors,
        })
    }
}

/// Stamps every batch LogAppendTime at `now_ms` (copies `batches`: they are shared bytes).
pub fn stamp_log_append_time(batches: &Bytes, now_ms: i64) -> Bytes {
    let mut stamped = BytesMut::from(&batches[..]);
    let mut position = 0usize;
    while position < stamped.len() {
        let size_bytes = RecordBatchHeader::parse(&stamped[position..])
            .expect("validate_batches checked the framing")
            .total_size_bytes();
        set_log_append_time(&mut stamped[position..position + size_bytes], now_ms);
        position += size_bytes;
    }
    stamped.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::record_batch::test_support::{build_batch_raw, write_varint, BatchParams};
    use crate::protocol::record_batch::validate_batches;

    fn record(timestamp_delta_ms: i64, offset_delta: i64, key: Option<&[u8]>) -> Vec<u8> {
        let mut body = vec![0u8]; // attributes
        write_varint(&mut body, timestamp_delta_ms);
        write_varint(&mut body, offset_delta);
        match key {
            Some(key) => {
                write_varint(&mut body, key.len() as i64);
                body.extend_from_slice(key);
            }
            None => write_varint(&mut body, -1),
        }
        write_varint(&mut body, 1);
        body.push(b'v');
        write_varint(&mut body, 0); // headers
        let mut out = Vec::new();
        write_varint(&mut out, body.len() as i64);
        out.extend_from_slice(&body);
        out
    }

    fn batch(base_timestamp_ms: i64, records: &[(i64, Option<&[u8]>)]) -> Vec<u8> {
        let mut payload = Vec::new();
        for (index, (delta, key)) in records.iter().enumerate() {
            payload.extend(record(*delta, index as i64, *key));
        }
        let params = BatchParams {
            base_timestamp_ms,
            ..BatchParams::default()
        };
        build_batch_raw(params, records.len() as i32, &payload)
    }

    fn policy() -> RecordPolicy {
        RecordPolicy {
            compacted: false,
            log_append_time: false,
            timestamp_before_max_ms: i64::MAX,
            timestamp_after_max_ms: i64::MAX,
        }
    }

    #[test]
    fn default_policy_looks_at_nothing() {
        let configs = TopicConfigs::new();
        let policy = RecordPolicy::of(&configs, &BrokerConfig::default());
        assert_eq!(policy, self::policy());
        assert!(!policy.inspects_records());
    }

    #[test]
    fn compacted_topic_refuses_keyless_records_with_their_indexes() {
        let compacted = RecordPolicy {
            compacted: true,
            ..policy()
        };
        let bytes = batch(
            1_000,
            &[(0, Some(b"k")), (1, None), (2, Some(b"k")), (3, None)],
        );
        validate_batches(&bytes, usize::MAX).unwrap();
        let rejection = compacted.check(&bytes, "t-0", 1_000).unwrap_err();
        assert_eq!(rejection.error, ResponseError::InvalidRecord);
        let indexes: Vec<i32> = rejection.record_errors.iter().map(|(i, _)| *i).collect();
        assert_eq!(indexes, vec![1, 3]);
        assert!(rejection.record_errors[0]
            .1
            .contains("without key in topic partition t-0"));
        assert!(compacted
            .check(&batch(0, &[(0, Some(b"a"))]), "t-0", 0)
            .is_ok());
    }

    #[test]
    fn timestamps_outside_the_bounds_are_invalid_timestamp() {
        let bounded = RecordPolicy {
            timestamp_before_max_ms: 1_000,
            timestamp_after_max_ms: 100,
            ..policy()
        };
        let now_ms = 1_000_000;
        let ok = batch(now_ms - 1_000, &[(0, None), (1_100, None)]);
        assert!(bounded.check(&ok, "t-0", now_ms).is_ok());
        let late = batch(now_ms - 1_001, &[(0, None), (1, None)]);
        let rejection = bounded.check(&late, "t-0", now_ms).unwrap_err();
        assert_eq!(rejection.error, ResponseError::InvalidTimestamp);
        assert_eq!(rejection.record_errors.len(), 1);
        assert_eq!(rejection.record_errors[0].0, 0);
        let early = batch(now_ms, &[(101, None)]);
        assert!(bounded.check(&early, "t-0", now_ms).is_err());
        // LogAppendTime overwrites timestamps: nothing to check.
        let log_append = RecordPolicy {
            log_append_time: true,
            ..bounded
        };
        assert!(log_append.check(&late, "t-0", now_ms).is_ok());
    }

    #[test]
    fn log_append_time_stamps_every_batch_and_keeps_crcs_valid() {
        let mut two = batch(5, &[(0, Some(b"a"))]);
        two.extend(batch(6, &[(0, Some(b"b")), (1, None)]));
        let stamped = stamp_log_append_time(&Bytes::from(two), 77_000);
        validate_batches(&stamped, usize::MAX).expect("CRCs recomputed");
        let first = RecordBatchHeader::parse(&stamped).unwrap();
        let second = RecordBatchHeader::parse(&stamped[first.total_size_bytes()..]).unwrap();
        for header in [first, second] {
            assert!(header.is_log_append_time());
            assert_eq!(header.max_timestamp_ms, 77_000);
        }
        assert_eq!(first.base_timestamp_ms, 5, "base timestamp kept");
    }
}
