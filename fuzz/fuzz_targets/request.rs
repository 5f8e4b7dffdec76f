//! A Kafka request frame (the bytes after the 4-byte size prefix), taken through the broker's own
//! path in `api::handle_request_inner`: `RequestPreamble::read`, `ApiKey::try_from`,
//! `supported_api` and the version check, `decode_request_header`, then the body decoded with the
//! kafka-protocol request type of that API, exactly as the handler does
//! (`XRequest::decode(&mut frame, version)`). Past decoding it runs the pure, byte-level work the
//! handlers do on the decoded request: Produce's `validate_batches` with the default
//! `max.message.bytes`, and for batches that pass, the record policy's decompression and record
//! walk (`records_section` + `parse_records`, as `api::record_policy::check` runs them for a
//! compacted topic); JoinGroup's `parse_subscription` of each protocol's metadata.
#![no_main]

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::Decodable;
use libfuzzer_sys::fuzz_target;
use riptide::protocol::record_batch::{validate_batches, RecordBatchHeader};
use riptide::protocol::records::{parse_records, records_section};
use riptide::protocol::{decode_request_header, supported_api, RequestPreamble};

/// `BrokerConfig::max_message_bytes`' default (Kafka's 1 MiB + 12).
const MAX_MESSAGE_BYTES: usize = 1024 * 1024 + 12;

fuzz_target!(|data: &[u8]| {
    riptide_fuzz::run(|| request(data));
});

fn request(data: &[u8]) {
    let Some(preamble) = RequestPreamble::read(data) else {
        return;
    };
    let Ok(key) = ApiKey::try_from(preamble.api_key) else {
        return;
    };
    let Some(supported) = supported_api(key) else {
        return;
    };
    let version = preamble.api_version;
    if version < supported.min_version || version > supported.max_version {
        return;
    }
    let mut frame = Bytes::copy_from_slice(data);
    if decode_request_header(&mut frame, key, version).is_err() {
        return;
    }
    decode_body(key, version, frame);
}

fn decode<R: Decodable>(mut body: Bytes, version: i16) -> Option<R> {
    R::decode(&mut body, version).ok()
}

fn decode_body(key: ApiKey, version: i16, body: Bytes) {
    match key {
        ApiKey::Produce => {
            if let Some(request) = decode::<ProduceRequest>(body, version) {
                produce(&request);
            }
        }
        ApiKey::Fetch => drop(decode::<FetchRequest>(body, version)),
        ApiKey::ListOffsets => drop(decode::<ListOffsetsRequest>(body, version)),
        ApiKey::Metadata => drop(decode::<MetadataRequest>(body, version)),
        ApiKey::FindCoordinator => drop(decode::<FindCoordinatorRequest>(body, version)),
        ApiKey::ApiVersions => drop(decode::<ApiVersionsRequest>(body, version)),
        ApiKey::CreateTopics => drop(decode::<CreateTopicsRequest>(body, version)),
        ApiKey::DeleteTopics => drop(decode::<DeleteTopicsRequest>(body, version)),
        ApiKey::DeleteRecords => drop(decode::<DeleteRecordsRequest>(body, version)),
        ApiKey::OffsetForLeaderEpoch => drop(decode::<OffsetForLeaderEpochRequest>(body, version)),
        ApiKey::DescribeConfigs => drop(decode::<DescribeConfigsRequest>(body, version)),
        ApiKey::AlterConfigs => drop(decode::<AlterConfigsRequest>(body, version)),
        ApiKey::CreatePartitions => drop(decode::<CreatePartitionsRequest>(body, version)),
        ApiKey::IncrementalAlterConfigs => {
            drop(decode::<IncrementalAlterConfigsRequest>(body, version))
        }
        ApiKey::DescribeQuorum => drop(decode::<DescribeQuorumRequest>(body, version)),
        ApiKey::DescribeCluster => drop(decode::<DescribeClusterRequest>(body, version)),
        ApiKey::InitProducerId => drop(decode::<InitProducerIdRequest>(body, version)),
        ApiKey::OffsetCommit => drop(decode::<OffsetCommitRequest>(body, version)),
        ApiKey::OffsetFetch => drop(decode::<OffsetFetchRequest>(body, version)),
        ApiKey::JoinGroup => {
            if let Some(request) = decode::<JoinGroupRequest>(body, version) {
                for protocol in &request.protocols {
                    let _ = riptide::group::classic::parse_subscription(&protocol.metadata);
                }
            }
        }
        ApiKey::Heartbeat => drop(decode::<HeartbeatRequest>(body, version)),
        ApiKey::LeaveGroup => drop(decode::<LeaveGroupRequest>(body, version)),
        ApiKey::SyncGroup => drop(decode::<SyncGroupRequest>(body, version)),
        ApiKey::DescribeGroups => drop(decode::<DescribeGroupsRequest>(body, version)),
        ApiKey::ListGroups => drop(decode::<ListGroupsRequest>(body, version)),
        ApiKey::DeleteGroups => drop(decode::<DeleteGroupsRequest>(body, version)),
        ApiKey::OffsetDelete => drop(decode::<OffsetDeleteRequest>(body, version)),
        ApiKey::ConsumerGroupHeartbeat => {
            drop(decode::<ConsumerGroupHeartbeatRequest>(body, version))
        }
        ApiKey::ConsumerGroupDescribe => {
            drop(decode::<ConsumerGroupDescribeRequest>(body, version))
        }
        ApiKey::WriteTxnMarkers => drop(decode::<WriteTxnMarkersRequest>(body, version)),
        ApiKey::DescribeProducers => drop(decode::<DescribeProducersRequest>(body, version)),
        ApiKey::AddPartitionsToTxn => drop(decode::<AddPartitionsToTxnRequest>(body, version)),
        ApiKey::AddOffsetsToTxn => drop(decode::<AddOffsetsToTxnRequest>(body, version)),
        ApiKey::EndTxn => drop(decode::<EndTxnRequest>(body, version)),
        ApiKey::TxnOffsetCommit => drop(decode::<TxnOffsetCommitRequest>(body, version)),
        ApiKey::DescribeTransactions => drop(decode::<DescribeTransactionsRequest>(body, version)),
        ApiKey::ListTransactions => drop(decode::<ListTransactionsRequest>(body, version)),
        ApiKey::CreateAcls => drop(decode::<CreateAclsRequest>(body, version)),
        ApiKey::DescribeAcls => drop(decode::<DescribeAclsRequest>(body, version)),
        ApiKey::DeleteAcls => drop(decode::<DeleteAclsRequest>(body, version)),
        // supported_api() admitted a key the broker dispatches nowhere: mirrors the handler's
        // "has no handler" close.
        _ => {}
    }
}

/// The produce handler's byte-level work on each partition's records.
fn produce(request: &ProduceRequest) {
    for topic in &request.topic_data {
        for partition in &topic.partition_data {
            let Some(records) = &partition.records else {
                continue;
            };
            if validate_batches(records, MAX_MESSAGE_BYTES).is_err() {
                continue;
            }
            // record_policy::check for a compacted topic (validated, back-to-back batches).
            let mut position = 0usize;
            while position < records.len() {
                let header = RecordBatchHeader::parse(&records[position..])
                    .expect("validate_batches checked the framing");
                let batch = &records[position..position + header.total_size_bytes()];
                position += header.total_size_bytes();
                if header.is_control() {
                    continue;
                }
                let Ok(section) = records_section(batch, header.compression_codec()) else {
                    break;
                };
                if parse_records(&section).is_err() {
                    break;
                }
            }
        }
    }
}
