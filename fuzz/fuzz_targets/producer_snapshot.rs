//! Producer-state snapshot files (`producer-state-<offset>.snapshot` in a partition directory),
//! read back at partition load: `ProducerStateTable::decode_snapshot`, then what recovery and
//! the produce path ask of the restored table.
//!
//! Input: a flags byte, then the payload. Flags bit 0 clear: the payload is the whole file.
//! Bit 0 set: the payload is the snapshot body, and the harness adds the magic, version and a
//! correct CRC-32C so mutations reach the body parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use riptide::txn::producer_state::ProducerStateTable;

fuzz_target!(|data: &[u8]| {
    riptide_fuzz::run(|| producer_snapshot(data));
});

fn producer_snapshot(data: &[u8]) {
    let Some((&flags, payload)) = data.split_first() else {
        return;
    };
    let decoded = if flags & 1 == 0 {
        ProducerStateTable::decode_snapshot(payload)
    } else {
        let mut contents = Vec::with_capacity(payload.len() + 10);
        contents.extend_from_slice(b"RPST");
        contents.extend_from_slice(&1u16.to_be_bytes());
        contents.extend_from_slice(&crc32c::crc32c(payload).to_be_bytes());
        contents.extend_from_slice(payload);
        ProducerStateTable::decode_snapshot(&contents)
    };
    let Some((mut table, offset)) = decoded else {
        return;
    };
    let _ = table.producer_count();
    let _ = table.first_unstable_offset();
    let _ = table.open_transaction_count();
    let _ = table.aborted_between(i64::MIN, i64::MAX);
    let _ = table.aborted_between(0, offset);
    let _ = table.compaction_view();
    let _ = table.aborted_count();
    let _ = table.summaries();
    let _ = table.encode_snapshot(offset);
    table.forget_aborted_below(offset);
    let _ = table.expire_idle(i64::MAX, 0);
    let _ = table.expire_idle(0, i64::MAX);
}
