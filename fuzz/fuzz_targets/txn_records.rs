//! `__transaction_state` records as the transaction coordinator replays them from disk
//! (`txn::coordinator`'s load): `validate_batch`, `decode_batch_records` for uncompressed data
//! batches, then `txn::records::decode_key` and `decode_value` per record.
//!
//! Input: a flags byte, then the payload. Flags bit 0 clear: the payload is a log chunk of
//! batches (bit 1: rewrite their CRCs first). Bit 0 set: `[u16 key length][key][value]`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use riptide::group::records::decode_batch_records;
use riptide::protocol::record_batch::validate_batch;
use riptide::txn::records::{decode_key, decode_value, TxnState};

fuzz_target!(|data: &[u8]| {
    riptide_fuzz::run(|| txn_records(data));
});

fn txn_records(data: &[u8]) {
    let Some((&flags, payload)) = data.split_first() else {
        return;
    };
    if flags & 1 != 0 {
        if payload.len() < 2 {
            return;
        }
        let key_length = u16::from_be_bytes([payload[0], payload[1]]) as usize;
        let rest = &payload[2..];
        let (key, value) = rest.split_at(key_length.min(rest.len()));
        let _ = decode_key(key);
        value_of(value);
        return;
    }
    let mut buffer = payload.to_vec();
    if flags & 2 != 0 {
        riptide_fuzz::fix_batch_crcs(&mut buffer);
    }
    let mut position = 0usize;
    while position < buffer.len() {
        let Ok(header) = validate_batch(&buffer[position..], usize::MAX) else {
            break;
        };
        let size = header.total_size_bytes();
        let batch = &buffer[position..position + size];
        position += size;
        if header.compression_codec() != 0 || header.is_control() {
            continue;
        }
        let Ok(stored) = decode_batch_records(batch, header.base_offset, header.record_count)
        else {
            continue;
        };
        for stored in stored {
            let Some(key) = stored.key else { continue };
            if decode_key(key).is_err() {
                continue;
            }
            if let Some(value) = stored.value {
                value_of(value);
            }
        }
    }
}

fn value_of(value: &[u8]) {
    if let Ok(decoded) = decode_value(value) {
        // What describing the transaction reads off it.
        let _ = decoded.state.name();
        let _ = TxnState::from_name(decoded.state.name());
        let _ = decoded.partitions.len();
    }
}
