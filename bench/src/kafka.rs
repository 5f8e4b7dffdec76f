//! Kafka wire protocol for the bench.
//!
//! Admin requests and fetches use the `kafka-protocol` schemas (cost per request, not per
//! message). The produce hot path frames requests and parses responses by hand: a request is a
//! few fixed fields around the batches, and the response parser reads only partition indexes
//! and error codes, without allocating. Both are checked against `kafka-protocol` in tests.

use anyhow::{anyhow, bail, Context, Result};
use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{
    api_versions_request::ApiVersionsRequest, create_topics_request::CreatableTopic,
    create_topics_request::CreatableTopicConfig, fetch_request::FetchPartition,
    fetch_request::FetchTopic, list_offsets_request::ListOffsetsPartition,
    list_offsets_request::ListOffsetsTopic, metadata_request::MetadataRequestTopic, ApiKey,
    BrokerId, CreateTopicsRequest, FetchRequest, FetchResponse, ListOffsetsRequest,
    MetadataRequest, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

pub const CLIENT_ID: &str = "riptide-bench";

/// Highest produce version framed by hand: v3..=v8 share one non-flexible layout (v9 switches
/// to compact encodings). Every Kafka-compatible broker with record batch v2 accepts one of them.
pub const PRODUCE_VERSION_MAX: i16 = 8;
pub const PRODUCE_VERSION_MIN: i16 = 3;
/// Fetch v13+ names topics by id; stay at v12 or below so names suffice.
pub const FETCH_VERSION_MAX: i16 = 12;
pub const FETCH_VERSION_MIN: i16 = 4;
/// Frames larger than this are a protocol error, not an allocation.
pub const MAX_RESPONSE_FRAME_BYTES: usize = 256 * 1024 * 1024;

/// Version ranges the broker advertised, by API key.
#[derive(Debug, Clone, Default)]
pub struct ApiVersions(pub BTreeMap<i16, (i16, i16)>);

impl ApiVersions {
    /// Highest version both sides speak, within `[min, max]` of ours.
    pub fn pick(&self, key: ApiKey, ours_min: i16, ours_max: i16) -> Result<i16> {
        let (theirs_min, theirs_max) = *self
            .0
            .get(&(key as i16))
            .ok_or_else(|| anyhow!("broker does not support {key:?}"))?;
        let version = theirs_max.min(ours_max);
        if version < theirs_min.max(ours_min) {
            bail!(
                "no common version for {key:?}: broker {theirs_min}..={theirs_max}, bench \
                 {ours_min}..={ours_max}"
            );
        }
        Ok(version)
    }
}

/// Partition layout learned from Metadata.
#[derive(Debug, Clone)]
pub struct TopicLayout {
    pub topic: String,
    /// `(partition index, leader node id)`, by index.
    pub partitions: Vec<(i32, i32)>,
    /// Node id -> `host:port`.
    pub brokers: BTreeMap<i32, String>,
}

/// A blocking connection for the few admin requests made before and after a run.
pub struct AdminClient {
    stream: TcpStream,
    correlation_id: i32,
    pub versions: ApiVersions,
}

impl AdminClient {
    pub fn connect(address: &str) -> Result<AdminClient> {
        let stream = connect(address, Duration::from_secs(10))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut client = AdminClient {
            stream,
            correlation_id: 0,
            versions: ApiVersions::default(),
        };
        let response: kafka_protocol::messages::ApiVersionsResponse = client
            .request(ApiKey::ApiVersions, 2, &ApiVersionsRequest::default())
            .context("ApiVersions")?;
        if response.error_code != 0 {
            bail!("ApiVersions failed with error {}", response.error_code);
        }
        for api in response.api_keys {
            client
                .versions
                .0
                .insert(api.api_key, (api.min_version, api.max_version));
        }
        Ok(client)
    }

    /// Sends one request and reads its response.
    pub fn request<Req: Encodable, Resp: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        body: &Req,
    ) -> Result<Resp> {
        self.correlation_id += 1;
        let frame = encode_request(key, version, self.correlation_id, body)?;
        self.stream.write_all(&frame)?;
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size)?;
        let size = i32::from_be_bytes(size);
        if size < 4 || size as usize > MAX_RESPONSE_FRAME_BYTES {
            bail!("bad response frame size {size}");
        }
        let mut frame = vec![0u8; size as usize];
        self.stream.read_exact(&mut frame)?;
        let mut frame = Bytes::from(frame);
        let header = ResponseHeader::decode(&mut frame, key.response_header_version(version))?;
        if header.correlation_id != self.correlation_id {
            bail!(
                "correlation id {} does not match request {}",
                header.correlation_id,
                self.correlation_id
            );
        }
        Resp::decode(&mut frame, version).with_context(|| format!("decoding {key:?} v{version}"))
    }

    pub fn metadata(&mut self, topic: &str, allow_auto_create: bool) -> Result<TopicLayout> {
        let version = self.versions.pick(ApiKey::Metadata, 1, 9)?;
        let request = MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(topic_name(topic)))
            ]))
            .with_allow_auto_topic_creation(allow_auto_create);
        let response: kafka_protocol::messages::MetadataResponse =
            self.request(ApiKey::Metadata, version, &request)?;
        let brokers = response
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
            .collect();
        let found = response
            .topics
            .iter()
            .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(topic))
            .ok_or_else(|| anyhow!("topic {topic} missing from metadata response"))?;
        if found.error_code != 0 {
            bail!(
                "metadata for {topic}: error {} ({})",
                found.error_code,
                error_name(found.error_code)
            );
        }
        let mut partitions: Vec<(i32, i32)> = found
            .partitions
            .iter()
            .map(|p| (p.partition_index, p.leader_id.0))
            .collect();
        partitions.sort_unstable();
        Ok(TopicLayout {
            topic: topic.to_string(),
            partitions,
            brokers,
        })
    }

    /// Waits until the topic has every partition with a known leader (after a create).
    pub fn wait_for_topic(&mut self, topic: &str, timeout: Duration) -> Result<TopicLayout> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.metadata(topic, false) {
                Ok(layout)
                    if !layout.partitions.is_empty()
                        && layout
                            .partitions
                            .iter()
                            .all(|(_, leader)| layout.brokers.contains_key(leader)) =>
                {
                    return Ok(layout)
                }
                Ok(_) | Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Ok(layout) => bail!("topic {topic} has no leaders yet: {layout:?}"),
                Err(error) => return Err(error),
            }
        }
    }

    /// Creates the topic; an existing topic is not an error (returns false). A broker that
    /// answers REQUEST_TIMED_OUT may still create the topic (Kafka's controller and Riptide's
    /// time out the wait, not the change): that is reported on stderr and counted as created,
    /// so the caller goes on to wait for the topic's leaders.
    pub fn create_topic(
        &mut self,
        topic: &str,
        partition_count: i32,
        configs: &[(String, String)],
    ) -> Result<bool> {
        let version = self.versions.pick(ApiKey::CreateTopics, 2, 5)?;
        let request = CreateTopicsRequest::default()
            .with_topics(vec![CreatableTopic::default()
                .with_name(topic_name(topic))
                .with_num_partitions(partition_count)
                .with_replication_factor(-1)
                .with_configs(
                    configs
                        .iter()
                        .map(|(k, v)| {
                            CreatableTopicConfig::default()
                                .with_name(StrBytes::from_string(k.clone()))
                                .with_value(Some(StrBytes::from_string(v.clone())))
                        })
                        .collect(),
                )])
            .with_timeout_ms(30_000);
        let response: kafka_protocol::messages::CreateTopicsResponse =
            self.request(ApiKey::CreateTopics, version, &request)?;
        let result = response
            .topics
            .first()
            .ok_or_else(|| anyhow!("empty CreateTopics response"))?;
        match result.error_code {
            0 => Ok(true),
            TOPIC_ALREADY_EXISTS => Ok(false),
            REQUEST_TIMED_OUT => {
                eprintln!(
                    "riptide-bench: CreateTopics {topic}: REQUEST_TIMED_OUT ({}); waiting for the topic",
                    result
                        .error_message
                        .as_ref()
                        .map(|m| m.as_str())
                        .unwrap_or("")
                );
                Ok(true)
            }
            code => bail!(
                "CreateTopics {topic}: error {code} ({}) {}",
                error_name(code),
                result
                    .error_message
                    .as_ref()
                    .map(|m| m.as_str())
                    .unwrap_or("")
            ),
        }
    }

    /// Offsets at `timestamp` (-1 latest, -2 earliest) for each partition index.
    pub fn list_offsets(
        &mut self,
        topic: &str,
        partitions: &[i32],
        timestamp: i64,
    ) -> Result<BTreeMap<i32, i64>> {
        let version = self.versions.pick(ApiKey::ListOffsets, 1, 5)?;
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(
                    partitions
                        .iter()
                        .map(|&p| {
                            ListOffsetsPartition::default()
                                .with_partition_index(p)
                                .with_current_leader_epoch(-1)
                                .with_timestamp(timestamp)
                        })
                        .collect(),
                )]);
        let response: kafka_protocol::messages::ListOffsetsResponse =
            self.request(ApiKey::ListOffsets, version, &request)?;
        let mut offsets = BTreeMap::new();
        for topic_response in response.topics {
            for p in topic_response.partitions {
                if p.error_code != 0 {
                    bail!(
                        "ListOffsets partition {}: error {} ({})",
                        p.partition_index,
                        p.error_code,
                        error_name(p.error_code)
                    );
                }
                offsets.insert(p.partition_index, p.offset);
            }
        }
        Ok(offsets)
    }
}

pub const TOPIC_ALREADY_EXISTS: i16 = 36;
pub const REQUEST_TIMED_OUT: i16 = 7;

/// Names of the error codes a benchmark run is likely to meet.
pub fn error_name(code: i16) -> &'static str {
    match code {
        0 => "NONE",
        1 => "OFFSET_OUT_OF_RANGE",
        2 => "CORRUPT_MESSAGE",
        3 => "UNKNOWN_TOPIC_OR_PARTITION",
        6 => "NOT_LEADER_OR_FOLLOWER",
        7 => "REQUEST_TIMED_OUT",
        10 => "MESSAGE_TOO_LARGE",
        17 => "INVALID_TOPIC_EXCEPTION",
        18 => "RECORD_LIST_TOO_LARGE",
        19 => "NOT_ENOUGH_REPLICAS",
        20 => "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
        21 => "INVALID_REQUIRED_ACKS",
        35 => "UNSUPPORTED_VERSION",
        36 => "TOPIC_ALREADY_EXISTS",
        37 => "INVALID_PARTITIONS",
        40 => "INVALID_CONFIG",
        42 => "INVALID_REQUEST",
        43 => "UNSUPPORTED_FOR_MESSAGE_FORMAT",
        87 => "INVALID_RECORD",
        _ => "see Kafka protocol error codes",
    }
}

pub fn topic_name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

/// Connects with a timeout, trying every resolved address; sets TCP_NODELAY.
pub fn connect(address: &str, timeout: Duration) -> Result<TcpStream> {
    let mut last_error = None;
    for socket_address in address
        .to_socket_addrs()
        .with_context(|| format!("resolving {address}"))?
    {
        match TcpStream::connect_timeout(&socket_address, timeout) {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(error) => last_error = Some(error),
        }
    }
    Err(anyhow!(
        "cannot connect to {address}: {}",
        last_error.map_or("no address".to_string(), |e| e.to_string())
    ))
}

/// A size-prefixed request frame.
pub fn encode_request<Req: Encodable>(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &Req,
) -> Result<BytesMut> {
    let mut frame = BytesMut::with_capacity(256);
    frame.extend_from_slice(&[0u8; 4]);
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)))
        .encode(&mut frame, key.request_header_version(version))?;
    body.encode(&mut frame, version)?;
    let size = (frame.len() - 4) as i32;
    frame[..4].copy_from_slice(&size.to_be_bytes());
    Ok(frame)
}

// ---------------------------------------------------------------------------------------------
// Produce, by hand.

/// Writes the fixed part of a produce request (v3..=v8) into `out` and returns the positions
/// of the size prefix and of the partition count, patched by [`finish_produce_request`].
///
/// Layout: size, header v1 (key, version, correlation id, client id), transactional id (null),
/// acks, timeout, topics[1] { name, partitions[n] { index, records } }.
pub fn start_produce_request(
    out: &mut Vec<u8>,
    version: i16,
    correlation_id: i32,
    acks: i16,
    timeout_ms: i32,
    topic: &str,
) -> ProduceRequestMarks {
    debug_assert!((PRODUCE_VERSION_MIN..=PRODUCE_VERSION_MAX).contains(&version));
    let start = out.len();
    out.extend_from_slice(&0i32.to_be_bytes()); // size, patched
    out.extend_from_slice(&(ApiKey::Produce as i16).to_be_bytes());
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&correlation_id.to_be_bytes());
    put_string(out, CLIENT_ID);
    out.extend_from_slice(&(-1i16).to_be_bytes()); // transactional id: null
    out.extend_from_slice(&acks.to_be_bytes());
    out.extend_from_slice(&timeout_ms.to_be_bytes());
    out.extend_from_slice(&1i32.to_be_bytes()); // one topic
    put_string(out, topic);
    let partition_count_at = out.len();
    out.extend_from_slice(&0i32.to_be_bytes()); // partition count, patched
    ProduceRequestMarks {
        start,
        partition_count_at,
    }
}

#[derive(Debug, Clone, Copy)]
pub struct ProduceRequestMarks {
    start: usize,
    partition_count_at: usize,
}

/// Starts one partition's entry; the batch bytes follow, then [`finish_partition`].
pub fn start_partition(out: &mut Vec<u8>, partition: i32) -> usize {
    out.extend_from_slice(&partition.to_be_bytes());
    let records_size_at = out.len();
    out.extend_from_slice(&0i32.to_be_bytes());
    records_size_at
}

pub fn finish_partition(out: &mut [u8], records_size_at: usize) {
    let size = (out.len() - records_size_at - 4) as i32;
    out[records_size_at..records_size_at + 4].copy_from_slice(&size.to_be_bytes());
}

pub fn finish_produce_request(out: &mut [u8], marks: ProduceRequestMarks, partition_count: i32) {
    out[marks.partition_count_at..marks.partition_count_at + 4]
        .copy_from_slice(&partition_count.to_be_bytes());
    let size = (out.len() - marks.start - 4) as i32;
    out[marks.start..marks.start + 4].copy_from_slice(&size.to_be_bytes());
}

fn put_string(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as i16).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// Cursor over a response body; every read is bounds-checked.
struct Reader<'a> {
    buf: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        if self.buf.len() < n {
            bail!("produce response truncated");
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn i16(&mut self) -> Result<i16> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn skip_nullable_string(&mut self) -> Result<()> {
        let length = self.i16()?;
        if length > 0 {
            self.take(length as usize)?;
        }
        Ok(())
    }
}

/// Parses a produce response body (after the correlation id) of `version` 3..=8, calling
/// `on_partition(partition index, error code)` for each partition. Allocation-free.
pub fn parse_produce_response(
    body: &[u8],
    version: i16,
    mut on_partition: impl FnMut(i32, i16),
) -> Result<()> {
    let mut reader = Reader { buf: body };
    let topic_count = reader.i32()?;
    for _ in 0..topic_count.max(0) {
        reader.skip_nullable_string()?; // name
        let partition_count = reader.i32()?;
        for _ in 0..partition_count.max(0) {
            let index = reader.i32()?;
            let error_code = reader.i16()?;
            reader.take(8)?; // base offset
            reader.take(8)?; // log append time (v2+)
            if version >= 5 {
                reader.take(8)?; // log start offset
            }
            if version >= 8 {
                let record_errors = reader.i32()?;
                for _ in 0..record_errors.max(0) {
                    reader.take(4)?; // batch index
                    reader.skip_nullable_string()?;
                }
                reader.skip_nullable_string()?; // error message
            }
            on_partition(index, error_code);
        }
    }
    reader.i32()?; // throttle time
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Fetch, through kafka-protocol.

/// One partition a consumer reads, and where it is.
#[derive(Debug, Clone)]
pub struct FetchCursor {
    pub partition: i32,
    pub next_offset: i64,
    /// Stop at this offset (`--until-end`); `None` = read forever.
    pub end_offset: Option<i64>,
    pub high_watermark: i64,
}

impl FetchCursor {
    pub fn finished(&self) -> bool {
        self.end_offset.is_some_and(|end| self.next_offset >= end)
    }
}

pub struct FetchSettings {
    pub max_wait_ms: i32,
    pub max_bytes: i32,
    pub partition_max_bytes: i32,
}

pub fn encode_fetch_request(
    version: i16,
    correlation_id: i32,
    topic: &str,
    cursors: &[FetchCursor],
    settings: &FetchSettings,
) -> Result<BytesMut> {
    let partitions = cursors
        .iter()
        .filter(|c| !c.finished())
        .map(|c| {
            FetchPartition::default()
                .with_partition(c.partition)
                .with_current_leader_epoch(-1)
                .with_fetch_offset(c.next_offset)
                .with_last_fetched_epoch(-1)
                .with_log_start_offset(-1)
                .with_partition_max_bytes(settings.partition_max_bytes)
        })
        .collect();
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(settings.max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(settings.max_bytes)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic_name(topic))
            .with_partitions(partitions)]);
    encode_request(ApiKey::Fetch, version, correlation_id, &request)
}

/// Decodes a fetch response frame (without its size prefix). Records stay slices of `frame`.
pub fn decode_fetch_response(frame: &mut Bytes, version: i16) -> Result<(i32, FetchResponse)> {
    let header = ResponseHeader::decode(frame, ApiKey::Fetch.response_header_version(version))?;
    let response = FetchResponse::decode(frame, version)?;
    if frame.has_remaining() {
        bail!("{} trailing bytes after fetch response", frame.remaining());
    }
    Ok((header.correlation_id, response))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::produce_response::{
        PartitionProduceResponse, TopicProduceResponse,
    };
    use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

    #[test]
    fn produce_request_framing_matches_kafka_protocol() {
        let batch = vec![7u8; 100];
        for version in PRODUCE_VERSION_MIN..=PRODUCE_VERSION_MAX {
            let mut out = vec![9u8; 5]; // requests are appended after earlier bytes
            let marks = start_produce_request(&mut out, version, 42, -1, 1500, "bench-topic");
            for partition in [3, 8] {
                let at = start_partition(&mut out, partition);
                out.extend_from_slice(&batch);
                finish_partition(&mut out, at);
            }
            finish_produce_request(&mut out, marks, 2);
            let mut frame = Bytes::copy_from_slice(&out[5..]);
            let size = frame.get_i32();
            assert_eq!(size as usize, frame.len());
            let header =
                RequestHeader::decode(&mut frame, ApiKey::Produce.request_header_version(version))
                    .unwrap();
            assert_eq!(header.request_api_key, 0);
            assert_eq!(header.request_api_version, version);
            assert_eq!(header.correlation_id, 42);
            assert_eq!(header.client_id.unwrap().as_str(), CLIENT_ID);
            let request = ProduceRequest::decode(&mut frame, version).unwrap();
            assert!(!frame.has_remaining());
            assert_eq!(request.acks, -1);
            assert_eq!(request.timeout_ms, 1500);
            assert_eq!(request.transactional_id, None);
            assert_eq!(request.topic_data.len(), 1);
            let topic = &request.topic_data[0];
            assert_eq!(topic.name.0.as_str(), "bench-topic");
            let indexes: Vec<i32> = topic.partition_data.iter().map(|p| p.index).collect();
            assert_eq!(indexes, vec![3, 8]);
            assert_eq!(topic.partition_data[1].records.as_deref(), Some(&batch[..]));
        }
    }

    #[test]
    fn produce_response_parser_matches_kafka_protocol() {
        for version in PRODUCE_VERSION_MIN..=PRODUCE_VERSION_MAX {
            let response = ProduceResponse::default()
                .with_responses(vec![TopicProduceResponse::default()
                    .with_name(topic_name("t"))
                    .with_partition_responses(vec![
                        PartitionProduceResponse::default()
                            .with_index(0)
                            .with_base_offset(10),
                        PartitionProduceResponse::default()
                            .with_index(5)
                            .with_error_code(6)
                            .with_error_message(Some(StrBytes::from_static_str("moved"))),
                    ])])
                .with_throttle_time_ms(3);
            let mut body = BytesMut::new();
            response.encode(&mut body, version).unwrap();
            let mut seen = Vec::new();
            parse_produce_response(&body, version, |index, error| seen.push((index, error)))
                .unwrap();
            assert_eq!(seen, vec![(0, 0), (5, 6)], "v{version}");
            // Every truncation is an error, never a panic.
            for cut in 0..body.len() {
                assert!(parse_produce_response(&body[..cut], version, |_, _| {}).is_err());
            }
        }
    }

    #[test]
    fn fetch_request_round_trips() {
        let cursors = vec![
            FetchCursor {
                partition: 0,
                next_offset: 17,
                end_offset: None,
                high_watermark: 0,
            },
            FetchCursor {
                partition: 1,
                next_offset: 5,
                end_offset: Some(5),
                high_watermark: 0,
            },
        ];
        let settings = FetchSettings {
            max_wait_ms: 100,
            max_bytes: 1 << 20,
            partition_max_bytes: 1 << 18,
        };
        for version in FETCH_VERSION_MIN..=FETCH_VERSION_MAX {
            let frame = encode_fetch_request(version, 9, "t", &cursors, &settings).unwrap();
            let mut frame = frame.freeze();
            frame.advance(4);
            RequestHeader::decode(&mut frame, ApiKey::Fetch.request_header_version(version))
                .unwrap();
            let request = FetchRequest::decode(&mut frame, version).unwrap();
            assert_eq!(
                request.topics[0].partitions.len(),
                1,
                "finished cursors are skipped"
            );
            assert_eq!(request.topics[0].partitions[0].fetch_offset, 17);
            assert_eq!(request.max_wait_ms, 100);
        }
    }

    #[test]
    fn version_negotiation() {
        let mut versions = ApiVersions::default();
        versions.0.insert(0, (3, 11));
        versions.0.insert(1, (4, 17));
        assert_eq!(versions.pick(ApiKey::Produce, 3, 8).unwrap(), 8);
        assert_eq!(versions.pick(ApiKey::Fetch, 4, 12).unwrap(), 12);
        versions.0.insert(0, (9, 11));
        assert!(versions.pick(ApiKey::Produce, 3, 8).is_err());
        assert!(versions.pick(ApiKey::Metadata, 1, 9).is_err());
    }
}
