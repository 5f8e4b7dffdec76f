//! Records of `__transaction_state`, in Kafka's own layouts (big-endian, `i16`-prefixed strings,
//! `i32`-prefixed arrays):
//!
//! | part | layout |
//! | --- | --- |
//! | key (version 0) | TransactionLogKey: transactional id |
//! | value (version 0) | TransactionLogValue: producer id, producer epoch, timeout, status, partitions (nullable array of topic + partition ids), last update and start timestamps |
//!
//! A null value is a tombstone (the transactional id expired). Decoding never panics: malformed
//! input is an error the replay logs and skips.

use crate::group::records::{DecodeError, Reader};
use std::collections::BTreeSet;

const KEY_VERSION: i16 = 0;
const VALUE_VERSION: i16 = 0;

/// The states of Kafka's `TransactionState`, with the status byte it stores for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    Dead,
    PrepareEpochFence,
}

impl TxnState {
    pub fn status_byte(self) -> i8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
            TxnState::Dead => 6,
            TxnState::PrepareEpochFence => 7,
        }
    }

    pub fn from_status_byte(status: i8) -> Option<TxnState> {
        Some(match status {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            6 => TxnState::Dead,
            7 => TxnState::PrepareEpochFence,
            _ => return None,
        })
    }

    /// The name Kafka's admin APIs use (DescribeTransactions, ListTransactions filters).
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    pub fn from_name(name: &str) -> Option<TxnState> {
        ALL_STATES
            .iter()
            .copied()
            .find(|state| state.name() == name)
    }
}

pub const ALL_STATES: [TxnState; 8] = [
    TxnState::Empty,
    TxnState::Ongoing,
    TxnState::PrepareCommit,
    TxnState::PrepareAbort,
    TxnState::CompleteCommit,
    TxnState::CompleteAbort,
    TxnState::Dead,
    TxnState::PrepareEpochFence,
];

/// What one `__transaction_state` record says of a transactional id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnLogValue {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    /// Partitions of the transaction, ordered by topic then partition.
    pub partitions: BTreeSet<(String, i32)>,
    pub last_update_ms: i64,
    pub start_ms: i64,
}

fn put_string(out: &mut Vec<u8>, value: &str) {
    let length = i16::try_from(value.len()).expect("names are bounded below 32 KiB");
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(value.as_bytes());
}

pub fn encode_key(transactional_id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + transactional_id.len());
    out.extend_from_slice(&KEY_VERSION.to_be_bytes());
    put_string(&mut out, transactional_id);
    out
}

pub fn decode_key(buf: &[u8]) -> Result<String, DecodeError> {
    let mut reader = Reader::new(buf);
    let version = reader.i16()?;
    if version != KEY_VERSION {
        return Err(DecodeError::UnknownVersion {
            what: "transaction log",
            version,
        });
    }
    reader.string()
}

pub fn encode_value(value: &TxnLogValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + value.partitions.len() * 32);
    out.extend_from_slice(&VALUE_VERSION.to_be_bytes());
    out.extend_from_slice(&value.producer_id.to_be_bytes());
    out.extend_from_slice(&value.producer_epoch.to_be_bytes());
    out.extend_from_slice(&value.timeout_ms.to_be_bytes());
    out.push(value.state.status_byte() as u8);
    // Kafka writes a null partition list for a transaction without partitions.
    if value.partitions.is_empty() {
        out.extend_from_slice(&(-1i32).to_be_bytes());
    } else {
        let mut topics: Vec<(&str, Vec<i32>)> = Vec::new();
        for (topic, partition) in &value.partitions {
            match topics.last_mut() {
                Some((last, partitions)) if *last == topic.as_str() => partitions.push(*partition),
                _ => topics.push((topic.as_str(), vec![*partition])),
            }
        }
        out.extend_from_slice(&(topics.len() as i32).to_be_bytes());
        for (topic, partitions) in topics {
            put_string(&mut out, topic);
            out.extend_from_slice(&(partitions.len() as i32).to_be_bytes());
            for partition in partitions {
                out.extend_from_slice(&partition.to_be_bytes());
            }
        }
    }
    out.extend_from_slice(&value.last_update_ms.to_be_bytes());
    out.extend_from_slice(&value.start_ms.to_be_bytes());
    out
}

/// Array counts beyond this are malformed (a transaction spans at most this many partitions).
const MAX_DECODED_ENTRIES: i32 = 1_000_000;

pub fn decode_value(buf: &[u8]) -> Result<TxnLogValue, DecodeError> {
    let mut reader = Reader::new(buf);
    let version = reader.i16()?;
    // Version 1 is version 0 in the flexible encoding; only version 0 is written here.
    if version != VALUE_VERSION {
        return Err(DecodeError::UnknownVersion {
            what: "transaction log",
            version,
        });
    }
    let producer_id = reader.i64()?;
    let producer_epoch = reader.i16()?;
    let timeout_ms = reader.i32()?;
    let status = reader.i8()?;
    let state = TxnState::from_status_byte(status).ok_or(DecodeError::Invalid("status"))?;
    let topic_count = reader.i32()?;
    if topic_count > MAX_DECODED_ENTRIES {
        return Err(DecodeError::Invalid("partition array"));
    }
    let mut partitions = BTreeSet::new();
    for _ in 0..topic_count.max(0) {
        let topic = reader.string()?;
        let count = reader.i32()?;
        if !(0..=MAX_DECODED_ENTRIES).contains(&count) {
            return Err(DecodeError::Invalid("partition ids"));
        }
        for _ in 0..count {
            partitions.insert((topic.clone(), reader.i32()?));
        }
    }
    let last_update_ms = reader.i64()?;
    let start_ms = reader.i64()?;
    Ok(TxnLogValue {
        producer_id,
        producer_epoch,
        timeout_ms,
        state,
        partitions,
        last_update_ms,
        start_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(partitions: &[(&str, i32)]) -> TxnLogValue {
        TxnLogValue {
            producer_id: 4_000_123,
            producer_epoch: 7,
            timeout_ms: 60_000,
            state: TxnState::Ongoing,
            partitions: partitions
                .iter()
                .map(|(topic, partition)| (topic.to_string(), *partition))
                .collect(),
            last_update_ms: 1_700_000_000_500,
            start_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn keys_and_values_round_trip() {
        let key = encode_key("my-txn");
        assert_eq!(key, [0, 0, 0, 6, b'm', b'y', b'-', b't', b'x', b'n']);
        assert_eq!(decode_key(&key).unwrap(), "my-txn");
        for partitions in [&[][..], &[("a", 0), ("a", 2), ("b", 1)][..]] {
            let value = sample(partitions);
            assert_eq!(decode_value(&encode_value(&value)).unwrap(), value);
        }
        for state in ALL_STATES {
            assert_eq!(TxnState::from_status_byte(state.status_byte()), Some(state));
            assert_eq!(TxnState::from_name(state.name()), Some(state));
        }
    }

    #[test]
    fn value_layout_is_kafkas() {
        let encoded = encode_value(&sample(&[("t", 3)]));
        let mut expected = vec![0, 0]; // version
        expected.extend_from_slice(&4_000_123i64.to_be_bytes());
        expected.extend_from_slice(&7i16.to_be_bytes());
        expected.extend_from_slice(&60_000i32.to_be_bytes());
        expected.push(1); // Ongoing
        expected.extend_from_slice(&1i32.to_be_bytes());
        expected.extend_from_slice(&[0, 1, b't']);
        expected.extend_from_slice(&1i32.to_be_bytes());
        expected.extend_from_slice(&3i32.to_be_bytes());
        expected.extend_from_slice(&1_700_000_000_500i64.to_be_bytes());
        expected.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
        assert_eq!(encoded, expected);
        // An empty transaction stores a null partition list.
        let empty = encode_value(&sample(&[]));
        assert_eq!(&empty[17..21], &(-1i32).to_be_bytes());
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let encoded = encode_value(&sample(&[("topic", 1), ("topic", 2)]));
        for cut in 0..encoded.len() {
            assert!(decode_value(&encoded[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad_status = encoded.clone();
        bad_status[16] = 42;
        assert!(decode_value(&bad_status).is_err());
        assert!(decode_key(&[0, 1, 0, 1, b'x']).is_err());
        assert!(decode_key(&[0, 0, 0, 9, b'x']).is_err());
    }
}
