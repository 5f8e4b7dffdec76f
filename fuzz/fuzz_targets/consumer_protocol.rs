//! Consumer-protocol member metadata and assignments (opaque bytes a client puts in JoinGroup
//! and SyncGroup, stored in `__consumer_offsets`): `group::classic::parse_subscription` (the
//! group code: `ConsumerProtocolSubscription`, version from the first two bytes clamped to
//! 0..=3) and the admin CLI's reading of assignments (`admin_cli::group::assignment_text`,
//! private, reproduced here: `ConsumerProtocolAssignment::decode` with the unclamped version).
//!
//! Input: the metadata or assignment bytes (both decoders run on each input).
#![no_main]

use bytes::{Buf, Bytes};
use kafka_protocol::messages::{ConsumerProtocolAssignment, ConsumerProtocolSubscription};
use kafka_protocol::protocol::Decodable;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    riptide_fuzz::run(|| consumer_protocol(data));
});

fn consumer_protocol(data: &[u8]) {
    let _ = riptide::group::classic::parse_subscription(data);
    if data.len() < 2 {
        return;
    }
    // admin_cli::group::assignment_text
    let mut bytes = Bytes::copy_from_slice(data);
    let version = bytes.get_i16();
    if let Ok(decoded) = ConsumerProtocolAssignment::decode(&mut bytes.clone(), version) {
        let _ = decoded
            .assigned_partitions
            .iter()
            .map(|tp| {
                let partitions: Vec<String> = tp.partitions.iter().map(i32::to_string).collect();
                format!("{}:{}", tp.topic.0, partitions.join(","))
            })
            .collect::<Vec<_>>();
    }
    // The subscription at the unclamped version too (a future caller may not clamp).
    let _ = ConsumerProtocolSubscription::decode(&mut bytes, version);
}
