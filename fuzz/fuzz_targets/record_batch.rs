//! Record batch bytes as a producer sends them (a partition's `records` in Produce) and as the
//! log reads them back from disk: `RecordBatchHeader::parse` and its accessors,
//! `validate_batches` with the broker's default `max.message.bytes` and with no limit (the
//! replay paths pass `usize::MAX`), `validate_batch` on each batch, `control_marker_type`,
//! `records_section` (decompression: gzip, snappy, lz4, zstd) and `parse_records` on its output,
//! and kafka-protocol's `RecordBatchDecoder::decode` (what `log::timestamps` runs on stored
//! batches for ListOffsets by timestamp, and the client on fetched ones).
//!
//! Input: one flags byte, then the batches. Flags bit 0: rewrite each batch's CRC-32C first so
//! mutations reach the code behind the checksum (a producer computes a valid CRC over whatever
//! it sends, so a valid CRC is no barrier to an attacker).
#![no_main]

use bytes::Bytes;
use kafka_protocol::records::RecordBatchDecoder;
use libfuzzer_sys::fuzz_target;
use riptide::protocol::record_batch::{
    control_marker_type, validate_batch, validate_batches, RecordBatchHeader,
};
use riptide::protocol::records::{parse_records, records_section};

const MAX_MESSAGE_BYTES: usize = 1024 * 1024 + 12;

fuzz_target!(|data: &[u8]| {
    // Finding (regressions/record_batch/kp-recordbatchdecoder-offset-add-overflow,
    // timestamp-delta-i64max-valid-batch): RecordBatchDecoder adds record deltas to the batch's
    // base offset and timestamp unchecked (kafka-protocol 0.18 src/records.rs:862, 866).
    riptide_fuzz::tolerate_panic("kafka-protocol-0.18.0/src/records.rs", "overflow");
    riptide_fuzz::run(|| record_batch(data));
});

fn record_batch(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut buf = rest.to_vec();
    if flags & 1 != 0 {
        riptide_fuzz::fix_batch_crcs(&mut buf);
    }
    let buf = &buf[..];

    let _ = validate_batches(buf, MAX_MESSAGE_BYTES);
    let _ = validate_batches(buf, usize::MAX);

    let mut position = 0usize;
    while position < buf.len() {
        let rest = &buf[position..];
        let Ok(header) = RecordBatchHeader::parse(rest) else {
            break;
        };
        let _ = (
            header.last_offset(),
            header.offset_count(),
            header.is_log_append_time(),
            header.is_transactional(),
            header.is_control(),
        );
        let size = header.total_size_bytes();
        let _ = validate_batch(rest, usize::MAX);
        let Some(batch) = rest.get(..size) else {
            break;
        };
        position += size;
        // The log only decodes batches that validated; the decoders must still hold up on
        // ones that did not (compaction parses before it validates, and a CRC passes whatever a
        // producer put inside it).
        let _ = control_marker_type(batch, &header);
        if let Ok(section) = records_section(batch, header.compression_codec()) {
            let _ = parse_records(&section);
        }
        // Checks the CRC itself.
        let mut bytes = Bytes::copy_from_slice(batch);
        let _ = RecordBatchDecoder::decode(&mut bytes);
    }
}
