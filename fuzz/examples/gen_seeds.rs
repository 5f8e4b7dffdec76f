//! Writes the seed corpus (`seeds/<target>/`) and the hand-made reproducers of the
//! decompression findings (`regressions/record_batch/`), from the real encoders: kafka-protocol's
//! request and record batch encoders, Riptide's record encoders.
//!
//!     cargo +nightly run --release --example gen_seeds            # from fuzz/
//!     cargo +nightly run --release --example gen_seeds -- demo FILE
//!     cargo +nightly run --release --example gen_seeds -- demo-batch FILE [--decoder]
//!
//! `demo FILE` decodes FILE (a `request` target input) as a request frame the way the broker
//! does, outside libFuzzer and ASan and with the system allocator, to show what the broker
//! process does with it. `demo-batch FILE` (a `record_batch` target input) runs
//! `records_section` on its first batch, as the produce policy check and compaction do, and
//! reports the output size, time and peak RSS.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Gzip, Lz4};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use riptide::cluster::metadata::{MetadataImage, PartitionRecord, TopicRecord};
use riptide::cluster::records::{apply_batch, encode_batch as encode_metadata, MetadataRecord};
use riptide::group::records::{self as group_records, ClassicGroupValue, MemberValue, OffsetValue};
use riptide::protocol::record_batch::test_support::BatchParams;
use riptide::protocol::record_batch::test_support::{build_batch_raw, build_uncompressed_batch};
use riptide::protocol::SUPPORTED_APIS;
use riptide::txn::markers::{control_batch, TxnMarker};
use riptide::txn::producer_state::{ProducerBatch, ProducerStateTable};
use riptide::txn::records::{self as txn_records, TxnLogValue, TxnState};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use uuid::Uuid;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("demo") => return demo(Path::new(&args[2])),
        Some("demo-batch") => return demo_batch(Path::new(&args[2])),
        _ => {}
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let seeds = root.join("seeds");
    request_seeds(&seeds.join("request"));
    record_batch_seeds(&seeds.join("record_batch"));
    group_seeds(&seeds.join("group_records"));
    txn_seeds(&seeds.join("txn_records"));
    metadata_seeds(&seeds.join("metadata_records"));
    snapshot_seeds(&seeds.join("producer_snapshot"));
    consumer_protocol_seeds(&seeds.join("consumer_protocol"));
    controller_rpc_seeds(&seeds.join("controller_rpc"));
    decompression_bombs(&root.join("regressions").join("record_batch"));
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn s(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

fn topic(value: &str) -> TopicName {
    TopicName(s(value))
}

// ---- request --------------------------------------------------------------------------------

/// A request frame (without the size prefix): header for `key`/`version`, then `body`.
fn frame<M: Encodable>(key: ApiKey, version: i16, body: &M) -> Option<Vec<u8>> {
    let mut out = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(s("seed")))
        .encode(&mut out, key.request_header_version(version))
        .ok()?;
    body.encode(&mut out, version).ok()?;
    Some(out.to_vec())
}

macro_rules! default_frame {
    ($key:expr, $version:expr, { $($api:ident => $ty:ty),* $(,)? }) => {
        match $key {
            $(ApiKey::$api => frame($key, $version, &<$ty>::default()),)*
            _ => None,
        }
    };
}

fn default_request(key: ApiKey, version: i16) -> Option<Vec<u8>> {
    default_frame!(key, version, {
        Produce => ProduceRequest, Fetch => FetchRequest, ListOffsets => ListOffsetsRequest,
        Metadata => MetadataRequest, FindCoordinator => FindCoordinatorRequest,
        ApiVersions => ApiVersionsRequest, CreateTopics => CreateTopicsRequest,
        DeleteTopics => DeleteTopicsRequest, DeleteRecords => DeleteRecordsRequest,
        OffsetForLeaderEpoch => OffsetForLeaderEpochRequest,
        DescribeConfigs => DescribeConfigsRequest, AlterConfigs => AlterConfigsRequest,
        CreatePartitions => CreatePartitionsRequest,
        IncrementalAlterConfigs => IncrementalAlterConfigsRequest,
        DescribeQuorum => DescribeQuorumRequest, DescribeCluster => DescribeClusterRequest,
        InitProducerId => InitProducerIdRequest, OffsetCommit => OffsetCommitRequest,
        OffsetFetch => OffsetFetchRequest, JoinGroup => JoinGroupRequest,
        Heartbeat => HeartbeatRequest, LeaveGroup => LeaveGroupRequest,
        SyncGroup => SyncGroupRequest, DescribeGroups => DescribeGroupsRequest,
        ListGroups => ListGroupsRequest, DeleteGroups => DeleteGroupsRequest,
        OffsetDelete => OffsetDeleteRequest,
        ConsumerGroupHeartbeat => ConsumerGroupHeartbeatRequest,
        ConsumerGroupDescribe => ConsumerGroupDescribeRequest,
        WriteTxnMarkers => WriteTxnMarkersRequest, DescribeProducers => DescribeProducersRequest,
        AddPartitionsToTxn => AddPartitionsToTxnRequest,
        AddOffsetsToTxn => AddOffsetsToTxnRequest, EndTxn => EndTxnRequest,
        TxnOffsetCommit => TxnOffsetCommitRequest,
        DescribeTransactions => DescribeTransactionsRequest,
        ListTransactions => ListTransactionsRequest,
    })
}

fn subscription(version: i16, topics: &[&str]) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i16(version);
    ConsumerProtocolSubscription::default()
        .with_topics(topics.iter().map(|t| s(t)).collect())
        .encode(&mut out, version)
        .unwrap();
    out.freeze()
}

fn assignment(version: i16, topic_name: &str, partitions: &[i32]) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i16(version);
    ConsumerProtocolAssignment::default()
        .with_assigned_partitions(vec![consumer_protocol_assignment::TopicPartition::default(
        )
        .with_topic(topic(topic_name))
        .with_partitions(partitions.to_vec())])
        .encode(&mut out, version)
        .unwrap();
    out.freeze()
}

fn request_seeds(dir: &Path) {
    // Every supported API at its lowest and highest version, with a default body.
    for api in SUPPORTED_APIS {
        for version in [api.min_version, api.max_version] {
            if let Some(bytes) = default_request(api.key, version) {
                write(dir, &format!("{:?}-v{version}", api.key), &bytes);
            }
        }
    }
    // Richer bodies for the busiest APIs.
    let batch = build_uncompressed_batch(BatchParams::default(), &[b"v1", b"v2"]);
    for version in [3, 9, 11] {
        let produce = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![produce_request::TopicProduceData::default()
                .with_name(topic("orders"))
                .with_topic_id(Uuid::from_u128(7))
                .with_partition_data(vec![
                    produce_request::PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(Bytes::from(batch.clone()))),
                ])]);
        if let Some(bytes) = frame(ApiKey::Produce, version, &produce) {
            write(dir, &format!("Produce-v{version}-records"), &bytes);
        }
    }
    for version in [4, 12, 17] {
        let fetch = FetchRequest::default()
            .with_max_wait_ms(500)
            .with_max_bytes(1 << 20)
            .with_topics(vec![fetch_request::FetchTopic::default()
                .with_topic(topic("orders"))
                .with_topic_id(Uuid::from_u128(7))
                .with_partitions(vec![fetch_request::FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(42)
                    .with_partition_max_bytes(1 << 20)])]);
        if let Some(bytes) = frame(ApiKey::Fetch, version, &fetch) {
            write(dir, &format!("Fetch-v{version}-partition"), &bytes);
        }
    }
    for version in [1, 9, 12] {
        let metadata = MetadataRequest::default().with_topics(Some(vec![
            metadata_request::MetadataRequestTopic::default().with_name(Some(topic("orders"))),
        ]));
        if let Some(bytes) = frame(ApiKey::Metadata, version, &metadata) {
            write(dir, &format!("Metadata-v{version}-topic"), &bytes);
        }
    }
    for version in [0, 5, 9] {
        let join = JoinGroupRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(30_000)
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
            )
            .with_name(s("range"))
            .with_metadata(subscription(1, &["orders", "payments"]))]);
        if let Some(bytes) = frame(ApiKey::JoinGroup, version, &join) {
            write(dir, &format!("JoinGroup-v{version}-protocol"), &bytes);
        }
    }
    for version in [0, 5] {
        let sync = SyncGroupRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_generation_id(1)
            .with_member_id(s("m-1"))
            .with_assignments(vec![
                sync_group_request::SyncGroupRequestAssignment::default()
                    .with_member_id(s("m-1"))
                    .with_assignment(assignment(0, "orders", &[0, 1])),
            ]);
        if let Some(bytes) = frame(ApiKey::SyncGroup, version, &sync) {
            write(dir, &format!("SyncGroup-v{version}-assignment"), &bytes);
        }
    }
    for version in [2, 9] {
        let commit = OffsetCommitRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_topics(vec![
                offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(topic("orders"))
                    .with_partitions(vec![
                        offset_commit_request::OffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(42),
                    ]),
            ]);
        if let Some(bytes) = frame(ApiKey::OffsetCommit, version, &commit) {
            write(dir, &format!("OffsetCommit-v{version}-partition"), &bytes);
        }
    }
    for version in [2, 7] {
        let create = CreateTopicsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(vec![create_topics_request::CreatableTopic::default()
                .with_name(topic("orders"))
                .with_num_partitions(3)
                .with_replication_factor(1)
                .with_configs(vec![
                    create_topics_request::CreatableTopicConfig::default()
                        .with_name(s("cleanup.policy"))
                        .with_value(Some(s("compact"))),
                ])]);
        if let Some(bytes) = frame(ApiKey::CreateTopics, version, &create) {
            write(dir, &format!("CreateTopics-v{version}-topic"), &bytes);
        }
    }
}

// ---- record batches -------------------------------------------------------------------------

fn record(offset: i64, key: Option<&[u8]>, value: Option<&[u8]>) -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset,
        sequence: -1,
        timestamp: 1_700_000_000_000 + offset,
        key: key.map(Bytes::copy_from_slice),
        value: value.map(Bytes::copy_from_slice),
        headers: Default::default(),
    }
}

fn encoded_batch(compression: Compression) -> Vec<u8> {
    let records = vec![
        record(0, Some(b"k1"), Some(b"hello hello hello hello")),
        record(1, Some(b"k2"), None),
        record(2, None, Some(b"world world world world")),
    ];
    let mut out = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut out,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .unwrap();
    out.to_vec()
}

fn with_flags(flags: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![flags];
    out.extend_from_slice(bytes);
    out
}

fn record_batch_seeds(dir: &Path) {
    for (name, compression) in [
        ("none", Compression::None),
        ("gzip", Compression::Gzip),
        ("snappy", Compression::Snappy),
        ("lz4", Compression::Lz4),
        ("zstd", Compression::Zstd),
    ] {
        write(
            dir,
            &format!("kp-{name}"),
            &with_flags(0, &encoded_batch(compression)),
        );
    }
    let plain = build_uncompressed_batch(BatchParams::default(), &[b"a", b"bb", b"ccc"]);
    write(dir, "riptide-uncompressed", &with_flags(0, &plain));
    let commit = control_batch(
        &TxnMarker {
            producer_id: 5,
            producer_epoch: 1,
            commit: true,
            coordinator_epoch: 3,
        },
        1_700_000_000_000,
    );
    let mut two = plain.clone();
    two.extend_from_slice(&commit);
    write(dir, "data-then-commit-marker", &with_flags(1, &two));
    let transactional = build_uncompressed_batch(
        BatchParams {
            attributes: 0x10,
            producer_id: 5,
            producer_epoch: 1,
            base_sequence: 0,
            ..BatchParams::default()
        },
        &[b"t"],
    );
    write(dir, "transactional", &with_flags(0, &transactional));
}

/// Hand-made record batches whose records section decompresses to far more than its size: the
/// reproducers of the unbounded decompression in `records_section` (kafka-protocol's
/// decompressors). Each is a valid batch (length, CRC) with the flags byte 0.
fn decompression_bombs(dir: &Path) {
    let params = |codec: i16| BatchParams {
        attributes: codec,
        ..BatchParams::default()
    };
    // zstd: one frame of RLE blocks, 4 bytes per 128 KiB of output: 32 KiB -> 1 GiB.
    let mut zstd = Vec::new();
    zstd.extend_from_slice(&0xFD2F_B528u32.to_le_bytes()); // magic
    zstd.push(0x00); // frame header descriptor: no content size, not single-segment
    zstd.push(0x38); // window descriptor: 2^(10 + 7) = 128 KiB
    let blocks = 8192u32;
    for index in 0..blocks {
        let last = u32::from(index + 1 == blocks);
        let header = (131_072u32 << 3) | (1 << 1) | last; // RLE block of 128 KiB
        zstd.extend_from_slice(&header.to_le_bytes()[..3]);
        zstd.push(0);
    }
    write(
        dir,
        "zstd-rle-32KiB-to-1GiB",
        &with_flags(0, &build_batch_raw(params(4), 1, &zstd)),
    );
    // gzip: deflate of zeros, ~1:1000. 64 KiB -> 64 MiB.
    let mut gzip = BytesMut::new();
    Gzip::compress(&mut gzip, |buf| {
        buf.put_bytes(0, 64 << 20);
        Ok(())
    })
    .unwrap();
    write(
        dir,
        &format!("gzip-{}B-to-64MiB", gzip.len()),
        &with_flags(0, &build_batch_raw(params(1), 1, &gzip)),
    );
    // lz4 frame of zeros, ~1:250.
    let mut lz4 = BytesMut::new();
    Lz4::compress(&mut lz4, |buf| {
        buf.put_bytes(0, 16 << 20);
        Ok(())
    })
    .unwrap();
    write(
        dir,
        &format!("lz4-{}B-to-16MiB", lz4.len()),
        &with_flags(0, &build_batch_raw(params(3), 1, &lz4)),
    );
    // A gzip batch that validates (record count = last offset delta + 1, CRC), holding one
    // record but claiming i32::MAX: kafka-protocol's RecordBatchDecoder (log::timestamps'
    // `exact_record`, the client) reserves `record_count` records before decoding any.
    let mut one = BytesMut::new();
    Gzip::compress(&mut one, |buf| {
        buf.put_slice(&[0x0e, 0x00, 0x00, 0x00, 0x01, 0x02, b'v', 0x00]);
        Ok(())
    })
    .unwrap();
    write(
        dir,
        "gzip-record-count-i32max",
        &with_flags(0, &build_batch_raw(params(1), i32::MAX, &one)),
    );
    // snappy, raw (no xerial magic): the header's declared length (u32::MAX) is allocated
    // zeroed up front, before a byte is decompressed.
    let raw = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00];
    write(
        dir,
        "snappy-raw-6B-declares-4GiB",
        &with_flags(0, &build_batch_raw(params(2), 1, &raw)),
    );
    // snappy, xerial framing: each block's declared length is `resize`d (written with zeros,
    // so resident) before the block is decompressed.
    let mut xerial = Vec::new();
    xerial.extend_from_slice(&[0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0]);
    xerial.extend_from_slice(&1i32.to_be_bytes());
    xerial.extend_from_slice(&1i32.to_be_bytes());
    xerial.extend_from_slice(&(raw.len() as u32).to_be_bytes());
    xerial.extend_from_slice(&raw);
    write(
        dir,
        "snappy-xerial-26B-resizes-4GiB",
        &with_flags(0, &build_batch_raw(params(2), 1, &xerial)),
    );
}

// ---- group and transaction records ----------------------------------------------------------

fn key_value(flags: u8, key: &[u8], value: Option<&[u8]>) -> Vec<u8> {
    let mut out = vec![flags | 1 | if value.is_none() { 4 } else { 0 }];
    out.extend_from_slice(&(key.len() as u16).to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value.unwrap_or_default());
    out
}

fn group_seeds(dir: &Path) {
    let offset_key = group_records::encode_key(&group_records::RecordKey::Offset {
        group: "g".into(),
        topic: "orders".into(),
        partition: 3,
    });
    let offset_value = group_records::encode_offset_value(&OffsetValue {
        offset: 42,
        leader_epoch: 1,
        metadata: "meta".into(),
        commit_timestamp_ms: 1_700_000_000_000,
    });
    let group_key =
        group_records::encode_key(&group_records::RecordKey::ClassicGroup { group: "g".into() });
    let group_value = group_records::encode_classic_group_value(&ClassicGroupValue {
        protocol_type: "consumer".into(),
        generation: 2,
        protocol: Some("range".into()),
        leader: Some("m-1".into()),
        state_timestamp_ms: 1_700_000_000_000,
        members: vec![MemberValue {
            member_id: "m-1".into(),
            instance_id: Some("i-1".into()),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            rebalance_timeout_ms: 30_000,
            session_timeout_ms: 10_000,
            subscription: subscription(1, &["orders"]),
            assignment: assignment(0, "orders", &[0, 1, 2]),
        }],
    });
    let consumer_key =
        group_records::encode_key(&group_records::RecordKey::ConsumerGroup { group: "c".into() });
    let consumer_value =
        group_records::encode_consumer_group_value(&group_records::ConsumerGroupValue { epoch: 5 });
    write(
        dir,
        "kv-offset",
        &key_value(0, &offset_key, Some(&offset_value)),
    );
    write(
        dir,
        "kv-classic",
        &key_value(0, &group_key, Some(&group_value)),
    );
    write(
        dir,
        "kv-consumer",
        &key_value(0, &consumer_key, Some(&consumer_value)),
    );
    write(dir, "kv-tombstone", &key_value(0, &offset_key, None));
    let records = vec![
        group_records::Record {
            key: offset_key.clone(),
            value: Some(offset_value.clone()),
        },
        group_records::Record {
            key: group_key,
            value: Some(group_value),
        },
        group_records::Record {
            key: consumer_key,
            value: Some(consumer_value),
        },
    ];
    let mut log = group_records::encode_batch(&records, 1_700_000_000_000).to_vec();
    write(dir, "log-batch", &with_flags(0, &log));
    let txn = group_records::encode_batch_as(
        &records[..1],
        1_700_000_000_000,
        Some(group_records::TxnProducer {
            producer_id: 9,
            producer_epoch: 0,
        }),
    );
    log.extend_from_slice(&txn);
    log.extend_from_slice(&control_batch(
        &TxnMarker {
            producer_id: 9,
            producer_epoch: 0,
            commit: true,
            coordinator_epoch: 1,
        },
        1_700_000_000_000,
    ));
    write(dir, "log-txn-commit", &with_flags(2, &log));
}

fn txn_seeds(dir: &Path) {
    let key = txn_records::encode_key("my-txn");
    let value = txn_records::encode_value(&TxnLogValue {
        producer_id: 4_000_123,
        producer_epoch: 7,
        timeout_ms: 60_000,
        state: TxnState::Ongoing,
        partitions: [
            ("orders".to_string(), 0),
            ("orders".to_string(), 2),
            ("p".to_string(), 1),
        ]
        .into_iter()
        .collect::<BTreeSet<_>>(),
        last_update_ms: 1_700_000_000_500,
        start_ms: 1_700_000_000_000,
    });
    let empty = txn_records::encode_value(&TxnLogValue {
        producer_id: 1,
        producer_epoch: 0,
        timeout_ms: 60_000,
        state: TxnState::Empty,
        partitions: BTreeSet::new(),
        last_update_ms: 0,
        start_ms: -1,
    });
    write(dir, "kv-ongoing", &key_value(0, &key, Some(&value)));
    write(dir, "kv-empty", &key_value(0, &key, Some(&empty)));
    let log = group_records::encode_batch(
        &[
            group_records::Record {
                key: key.clone(),
                value: Some(value),
            },
            group_records::Record { key, value: None },
        ],
        1_700_000_000_000,
    );
    write(dir, "log-batch", &with_flags(0, &log));
}

// ---- metadata log ---------------------------------------------------------------------------

fn metadata_seeds(dir: &Path) {
    let topic_id = Uuid::from_u128(0x1234);
    let partition = PartitionRecord {
        shard: 0,
        replicas: vec![1, 2],
        isr: vec![1, 2],
        leader: 1,
        leader_epoch: 0,
        partition_epoch: 0,
    };
    let entries = vec![
        vec![
            MetadataRecord::ClusterId {
                cluster_id: "c1".into(),
            },
            MetadataRecord::LeaderChange {
                node_id: 1,
                term: 1,
            },
        ],
        vec![MetadataRecord::RegisterBroker {
            node_id: 1,
            incarnation_id: Uuid::from_u128(1),
            host: "127.0.0.1".into(),
            port: 9092,
            rack: None,
            shard_count: 2,
        }],
        vec![
            MetadataRecord::UnfenceBroker {
                node_id: 1,
                broker_epoch: 2,
            },
            MetadataRecord::CreateTopic {
                topic: TopicRecord {
                    name: "orders".into(),
                    topic_id,
                    partitions: vec![partition.clone()],
                    configs: [("cleanup.policy".to_string(), "compact".to_string())]
                        .into_iter()
                        .collect(),
                },
            },
        ],
        vec![
            MetadataRecord::AddPartitions {
                name: "orders".into(),
                topic_id,
                partitions: vec![partition],
            },
            MetadataRecord::ChangePartition {
                name: "orders".into(),
                topic_id,
                partition: 1,
                leader: 2,
                leader_epoch: 1,
                partition_epoch: 1,
                isr: vec![2],
            },
            MetadataRecord::ProducerIds {
                next_block_start: 1000,
            },
            MetadataRecord::SetClusterConfig {
                key: "log.retention.ms".into(),
                value: Some("1000".into()),
            },
            MetadataRecord::FenceBroker {
                node_id: 1,
                broker_epoch: 2,
            },
        ],
    ];
    let encoded: Vec<Vec<u8>> = entries.iter().map(|e| encode_metadata(e)).collect();
    write(dir, "log-entries", &encoded.join(&b"\0"[..]));
    let mut image = MetadataImage::empty();
    for (index, entry) in entries.iter().enumerate() {
        apply_batch(&mut image, index as u64 + 1, entry);
    }
    let mut with_snapshot = image.to_snapshot();
    with_snapshot.push(0);
    with_snapshot.extend_from_slice(&encode_metadata(&[
        MetadataRecord::DeleteTopic {
            name: "orders".into(),
            topic_id,
        },
        MetadataRecord::BrokerShuttingDown {
            node_id: 1,
            broker_epoch: 2,
        },
    ]));
    write(dir, "snapshot-then-entry", &with_snapshot);
}

// ---- producer state snapshots ---------------------------------------------------------------

fn snapshot_seeds(dir: &Path) {
    let mut table = ProducerStateTable::default();
    for (producer_id, first_sequence, base_offset, transactional) in [
        (1, 0, 0, false),
        (1, 5, 5, false),
        (2, 0, 10, true),
        (3, 0, 20, true),
    ] {
        table.record(
            &ProducerBatch {
                producer_id,
                producer_epoch: 0,
                first_sequence,
                record_count: 5,
                transactional,
            },
            base_offset,
            1_700_000_000_000,
        );
    }
    let snapshot = table.encode_snapshot(25);
    write(dir, "file", &with_flags(0, &snapshot));
    write(dir, "body", &with_flags(1, &snapshot[10..]));
    write(
        dir,
        "empty-file",
        &with_flags(0, &ProducerStateTable::default().encode_snapshot(0)),
    );
}

// ---- consumer protocol ----------------------------------------------------------------------

fn consumer_protocol_seeds(dir: &Path) {
    for version in 0..=3 {
        write(
            dir,
            &format!("subscription-v{version}"),
            &subscription(version, &["a", "orders"]),
        );
        write(
            dir,
            &format!("assignment-v{version}"),
            &assignment(version, "orders", &[0, 2]),
        );
    }
}

// ---- controller rpc -------------------------------------------------------------------------

fn controller_rpc_seeds(dir: &Path) {
    use protobuf::Message as _;
    use riptide::cluster::quorum::RaftMessage;
    use riptide::cluster::rpc::{
        encode_frame, ControllerRequest, ControllerResponse, MetadataChunk, KIND_RAFT,
        KIND_REQUEST, KIND_RESPONSE,
    };
    let mut raft = RaftMessage::default();
    raft.set_msg_type(raft::eraftpb::MessageType::MsgAppend);
    raft.to = 2;
    raft.from = 1;
    raft.term = 3;
    raft.index = 10;
    raft.log_term = 3;
    raft.commit = 9;
    let mut entry = raft::eraftpb::Entry::default();
    entry.term = 3;
    entry.index = 11;
    entry.data = encode_metadata(&[MetadataRecord::ProducerIds {
        next_block_start: 2000,
    }])
    .into();
    raft.mut_entries().push(entry);
    let mut out = Vec::new();
    encode_frame(&mut out, KIND_RAFT, &raft.write_to_bytes().unwrap());
    write(dir, "raft-append", &out);
    let mut out = Vec::new();
    let heartbeat = ControllerRequest::Heartbeat {
        node_id: 1,
        broker_epoch: 2,
        applied_offset: 3,
        want_shutdown: false,
    };
    encode_frame(
        &mut out,
        KIND_REQUEST,
        &serde_json::to_vec(&heartbeat).unwrap(),
    );
    let register = ControllerRequest::Register {
        node_id: 2,
        incarnation_id: Uuid::from_u128(2),
        host: "127.0.0.1".into(),
        port: 9093,
        rack: Some("r1".into()),
        shard_count: 2,
    };
    encode_frame(
        &mut out,
        KIND_REQUEST,
        &serde_json::to_vec(&register).unwrap(),
    );
    write(dir, "requests", &out);
    let mut out = Vec::new();
    let chunk = ControllerResponse::Metadata(MetadataChunk {
        snapshot: Some((4, MetadataImage::empty().to_snapshot())),
        entries: vec![(
            5,
            encode_metadata(&[MetadataRecord::ClusterId {
                cluster_id: "c1".into(),
            }]),
        )],
    });
    encode_frame(
        &mut out,
        KIND_RESPONSE,
        &serde_json::to_vec(&chunk).unwrap(),
    );
    write(dir, "metadata-response", &out);
}

// ---- demo -----------------------------------------------------------------------------------

/// Decodes a request frame as the broker does, with the system allocator and no sanitizer.
fn demo(path: &Path) {
    let data = std::fs::read(path).unwrap();
    let preamble = riptide::protocol::RequestPreamble::read(&data).expect("8-byte preamble");
    let key = ApiKey::try_from(preamble.api_key).expect("known key");
    let version = preamble.api_version;
    let mut frame = Bytes::from(data);
    let header = riptide::protocol::decode_request_header(&mut frame, key, version);
    eprintln!(
        "{key:?} v{version}: header {header:?}; decoding the body ({} bytes)",
        frame.len()
    );
    macro_rules! body {
        ($($api:ident => $ty:ty),* $(,)?) => {
            match key {
                $(ApiKey::$api => format!("{:?}", <$ty>::decode(&mut frame, version).map(|_| ())),)*
                _ => "no handler".to_string(),
            }
        };
    }
    let outcome = body!(
        Produce => ProduceRequest, Fetch => FetchRequest, ListOffsets => ListOffsetsRequest,
        Metadata => MetadataRequest, FindCoordinator => FindCoordinatorRequest,
        ApiVersions => ApiVersionsRequest, CreateTopics => CreateTopicsRequest,
        DeleteTopics => DeleteTopicsRequest, DeleteRecords => DeleteRecordsRequest,
        OffsetForLeaderEpoch => OffsetForLeaderEpochRequest,
        DescribeConfigs => DescribeConfigsRequest, AlterConfigs => AlterConfigsRequest,
        CreatePartitions => CreatePartitionsRequest,
        IncrementalAlterConfigs => IncrementalAlterConfigsRequest,
        DescribeQuorum => DescribeQuorumRequest, DescribeCluster => DescribeClusterRequest,
        InitProducerId => InitProducerIdRequest, OffsetCommit => OffsetCommitRequest,
        OffsetFetch => OffsetFetchRequest, JoinGroup => JoinGroupRequest,
        Heartbeat => HeartbeatRequest, LeaveGroup => LeaveGroupRequest,
        SyncGroup => SyncGroupRequest, DescribeGroups => DescribeGroupsRequest,
        ListGroups => ListGroupsRequest, DeleteGroups => DeleteGroupsRequest,
        OffsetDelete => OffsetDeleteRequest,
        ConsumerGroupHeartbeat => ConsumerGroupHeartbeatRequest,
        ConsumerGroupDescribe => ConsumerGroupDescribeRequest,
        WriteTxnMarkers => WriteTxnMarkersRequest, DescribeProducers => DescribeProducersRequest,
        AddPartitionsToTxn => AddPartitionsToTxnRequest,
        AddOffsetsToTxn => AddOffsetsToTxnRequest, EndTxn => EndTxnRequest,
        TxnOffsetCommit => TxnOffsetCommitRequest,
        DescribeTransactions => DescribeTransactionsRequest,
        ListTransactions => ListTransactionsRequest,
    );
    eprintln!("decoded: {outcome}");
}

/// `records_section` on the first batch of a `record_batch` input, with its cost.
fn demo_batch(path: &Path) {
    let data = std::fs::read(path).unwrap();
    let batch = &data[1..];
    let header =
        riptide::protocol::record_batch::validate_batch(batch, usize::MAX).expect("a valid batch");
    let batch = &batch[..header.total_size_bytes()];
    let started = std::time::Instant::now();
    let outcome = riptide::protocol::records::records_section(batch, header.compression_codec());
    let elapsed = started.elapsed();
    let peak = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|line| line.starts_with("VmHWM"))
        .unwrap_or_default()
        .to_string();
    println!(
        "batch of {} bytes, codec {}, record count {}: records_section -> {} in {elapsed:?}; {peak}",
        batch.len(),
        header.compression_codec(),
        header.record_count,
        match &outcome {
            Ok(section) => format!("Ok({} bytes)", section.len()),
            Err(error) => format!("Err({error})"),
        }
    );
    if std::env::args().any(|arg| arg == "--decoder") {
        // What log::timestamps::exact_record runs on a stored batch.
        let mut bytes = Bytes::copy_from_slice(batch);
        let outcome = kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes);
        println!(
            "RecordBatchDecoder::decode -> {:?}",
            outcome.map(|set| set.records.len())
        );
    }
}
