//! `__consumer_offsets` records as the group coordinator replays them from disk
//! (`group::coordinator`'s load): `validate_batch` (with `usize::MAX`, as the replay does),
//! `control_marker_type` for control batches, `decode_batch_records` for uncompressed ones, then
//! per record `decode_key` and the value decoder its key selects (`decode_offset_value`,
//! `decode_classic_group_value`, `decode_consumer_group_value`), and a classic group value
//! restored into a group (`ClassicGroup::restore`, which takes the members' subscription bytes
//! apart with `parse_subscription` when asked for the subscribed topics).
//!
//! Input: a flags byte, then the payload. Flags bit 0 clear: the payload is a log chunk of
//! batches (bit 1: rewrite their CRCs first). Bit 0 set: the payload is one record,
//! `[u16 key length][key][value]` (bit 2: null value), decoded with every value decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use riptide::group::classic::ClassicGroup;
use riptide::group::records::{
    decode_batch_records, decode_classic_group_value, decode_consumer_group_value, decode_key,
    decode_offset_value, RecordKey,
};
use riptide::group::Now;
use riptide::protocol::record_batch::validate_batch;
use riptide::txn::producer_state::control_marker_type;

fuzz_target!(|data: &[u8]| {
    riptide_fuzz::run(|| group_records(data));
});

fn group_records(data: &[u8]) {
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
        let value = (flags & 4 == 0).then_some(value);
        record(key, value);
        if let Some(value) = value {
            let _ = decode_offset_value(value);
            let _ = decode_consumer_group_value(value);
            if let Ok(group) = decode_classic_group_value(value) {
                restore(group);
            }
        }
        return;
    }
    let mut buffer = payload.to_vec();
    if flags & 2 != 0 {
        riptide_fuzz::fix_batch_crcs(&mut buffer);
    }
    // The replay loop, minus the cursor bookkeeping and the group state it builds.
    let mut position = 0usize;
    while position < buffer.len() {
        let Ok(header) = validate_batch(&buffer[position..], usize::MAX) else {
            break;
        };
        let size = header.total_size_bytes();
        let batch = &buffer[position..position + size];
        position += size;
        if header.is_control() {
            let _ = control_marker_type(batch, &header);
            continue;
        }
        if header.compression_codec() != 0 {
            continue;
        }
        let Ok(stored) = decode_batch_records(batch, header.base_offset, header.record_count)
        else {
            continue;
        };
        for stored in stored {
            if let Some(key) = stored.key {
                record(key, stored.value);
            }
        }
    }
}

/// `group::coordinator::replay_record` without the map it fills.
fn record(key: &[u8], value: Option<&[u8]>) {
    let Ok(key) = decode_key(key) else {
        return;
    };
    let _ = key.group();
    let Some(value) = value else {
        return;
    };
    match key {
        RecordKey::Offset { .. } => drop(decode_offset_value(value)),
        RecordKey::ClassicGroup { .. } => {
            if let Ok(group) = decode_classic_group_value(value) {
                restore(group);
            }
        }
        RecordKey::ConsumerGroup { .. } => drop(decode_consumer_group_value(value)),
    }
}

/// What the coordinator does with a replayed classic group, and what describing it reads.
fn restore(value: riptide::group::records::ClassicGroupValue) {
    let (group, _effects) = ClassicGroup::restore(value, Now::current());
    let _ = group.subscribed_topics();
    let _ = group.select_protocol();
    for member in group.members() {
        let _ = group.describe_member(member);
    }
    let _ = group.to_value(None);
}
