//! The whole measurement path against a scripted broker that stalls: at a fixed rate, every
//! message due during the stall must carry the stall in its latency (coordinated omission
//! corrected), even though the client had stopped sending because its request slots were full.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, RequestHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
use riptide_bench::cli::{Compression, Keys, Mode};
use riptide_bench::clock::now_ns;
use riptide_bench::engine::{EngineConfig, Worker, WorkerSetup};
use riptide_bench::hist::Window;
use riptide_bench::kafka::FetchSettings;
use riptide_bench::records::BatchTemplate;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;

static NOT_INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Answers produce requests in order, immediately, except that nothing is answered while
/// `stall` (monotonic ns) lasts. Returns how many records it acknowledged.
fn scripted_broker(listener: TcpListener, stall: (u64, u64)) -> u64 {
    let (mut stream, _) = listener.accept().unwrap();
    let mut records = 0u64;
    loop {
        let mut size = [0u8; 4];
        if stream.read_exact(&mut size).is_err() {
            return records;
        }
        let mut frame = vec![0u8; i32::from_be_bytes(size) as usize];
        stream.read_exact(&mut frame).unwrap();
        let mut frame = Bytes::from(frame);
        let version = i16::from_be_bytes([frame[2], frame[3]]);
        let header =
            RequestHeader::decode(&mut frame, ApiKey::Produce.request_header_version(version))
                .unwrap();
        let request = ProduceRequest::decode(&mut frame, version).unwrap();
        let mut topics = Vec::new();
        for topic in &request.topic_data {
            let mut partitions = Vec::new();
            for partition in &topic.partition_data {
                let batch = partition.records.as_ref().unwrap();
                records += u64::from(u32::from_be_bytes(batch[57..61].try_into().unwrap()));
                partitions.push(PartitionProduceResponse::default().with_index(partition.index));
            }
            topics.push(
                TopicProduceResponse::default()
                    .with_name(topic.name.clone())
                    .with_partition_responses(partitions),
            );
        }
        let now = now_ns();
        if now >= stall.0 && now < stall.1 {
            std::thread::sleep(std::time::Duration::from_nanos(stall.1 - now));
        }
        let mut out = BytesMut::new();
        out.extend_from_slice(&[0u8; 4]);
        out.extend_from_slice(&header.correlation_id.to_be_bytes());
        ProduceResponse::default()
            .with_responses(topics)
            .encode(&mut out, version)
            .unwrap();
        let length = (out.len() - 4) as i32;
        out[..4].copy_from_slice(&length.to_be_bytes());
        stream.write_all(&out).unwrap();
    }
}

#[test]
fn a_broker_stall_lands_in_every_delayed_message() {
    const RATE_MSGS_PER_S: f64 = 2_000.0;
    const MS: u64 = 1_000_000;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let start_ns = now_ns() + 100 * MS;
    // Run 0..2 s; the broker answers nothing from 0.5 s to 1.0 s.
    let stall = (start_ns + 500 * MS, start_ns + 1_000 * MS);
    let broker = std::thread::spawn(move || scripted_broker(listener, stall));
    let stream = TcpStream::connect(address).unwrap();
    stream.set_nodelay(true).unwrap();

    let config = Arc::new(EngineConfig {
        mode: Mode::Produce,
        topic: "stall".to_string(),
        partitions: vec![(0, 1)],
        acks: 1,
        produce_version: 8,
        fetch_version: 12,
        request_timeout_ms: 30_000,
        template: BatchTemplate::new(16_384, 100, Keys::None, Compression::None, 1),
        keys: Keys::None,
        linger_ns: 0,
        max_in_flight: 5,
        max_request_bytes: 1 << 20,
        buffer_memory_bytes: 32 << 20,
        stamp: false,
        fetch: FetchSettings {
            max_wait_ms: 100,
            max_bytes: 1 << 20,
            partition_max_bytes: 1 << 20,
        },
        window: Window {
            start_ns,
            warmup_end_ns: start_ns,
            end_ns: start_ns + 2_000 * MS,
        },
        drain_ns: 2_000 * MS,
        producers_active: AtomicUsize::new(1),
        interrupted: &NOT_INTERRUPTED,
    });
    let (sender, _receiver) = std::sync::mpsc::channel();
    let worker = Worker::new(
        config,
        WorkerSetup {
            index: 0,
            core: None,
            producers: vec![(stream, 1)],
            consumers: Vec::new(),
            rate_msgs_per_s: RATE_MSGS_PER_S,
            seed: 1,
        },
        sender,
    )
    .unwrap();
    let stats = worker.run().unwrap();
    let acknowledged = broker.join().unwrap();

    let c = &stats.counters;
    assert_eq!(c.produced_msgs, 4_000, "{c:?}");
    assert_eq!(acknowledged, 4_000);
    assert_eq!(c.timed_out_msgs, 0);
    assert_eq!(c.produce_errors, 0);
    let s = stats.produce.summary();
    assert_eq!(s.count, 4_000);
    // 1,000 of the 4,000 messages were due during the 500 ms stall; the one due at its start
    // waits ~500 ms, the one due at its end ~0. So ~25% of all messages wait more than a few
    // ms, the p90 message (400th from the top) ~300 ms, the max ~500 ms. A closed-loop
    // measurement would have seen only the five requests in flight when the stall began.
    assert!((480.0..540.0).contains(&s.max_ms), "{s:?}");
    assert!((270.0..330.0).contains(&s.p90_ms), "{s:?}");
    assert!((440.0..510.0).contains(&s.p99_ms), "{s:?}");
    let slow = stats.produce.count()
        - stats
            .produce
            .inner()
            .count_between(0, stats.produce.inner().highest_equivalent(10 * MS));
    assert!((950..=1_020).contains(&slow), "{slow} messages above 10 ms");
    // Outside the stall the scripted broker answers at once.
    assert!(s.p50_ms < 5.0, "{s:?}");
}
