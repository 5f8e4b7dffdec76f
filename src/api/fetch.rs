//! Fetch (key 1). Each owner shard reads its partitions in one hop; if fewer than `min_bytes` came
//! back, the request waits on the owners' append notifications (never a polling timer) until data
//! arrives or `max_wait_ms` passes. Consumer reads never go past the high watermark (the last
//! stable offset for read_committed); a follower's fetch (replica id >= 0) reads up to the
//! leader's log end and reports the follower's log end to replication, which moves the high
//! watermark. Incremental fetch sessions (KIP-227) are in `fetch_session`: an incremental request
//! is expanded to the session's partitions here, and its response cut to what changed.

use super::fetch_session;
use super::owners::{run_on_owners, Slot, Slotted};
use super::{Outcome, RequestContext, Response, ResponseChunk};
use crate::log::{LogError, ReadChunk};
use crate::security::acl::{Operation, ResourceType};
use crate::security::quota::{self, QuotaKind};
use crate::shard::Shard;
use bytes::{BufMut, Bytes, BytesMut};
use futures::FutureExt;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse, ProducerId};
use kafka_protocol::protocol::{Decodable, Encodable};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Upper bound on a client's `max_wait_ms`, so a request cannot pin resources indefinitely.
const MAX_FETCH_WAIT_MS: u64 = 60_000;
/// Kafka's isolation level code for read_committed.
const READ_COMMITTED: i8 = 1;

#[derive(Clone)]
struct ReadWork {
    slot: Slot,
    topic: String,
    partition: i32,
    fetch_offset: i64,
    max_bytes: usize,
    current_leader_epoch: i32,
    /// Cold data may go page cache to socket (splice): false on TLS connections.
    zero_copy: bool,
}

struct ReadReply {
    slot: (usize, usize),
    error: Option<ResponseError>,
    /// What the long poll waits past: the high watermark for consumers, the log end for
    /// followers.
    wait_from: i64,
    high_watermark: i64,
    last_stable_offset: i64,
    log_start_offset: i64,
    /// Cached batches in memory, cold ones as segment file regions (sent zero-copy).
    chunks: Vec<ReadChunk>,
    size_bytes: usize,
    /// read_committed: aborted transactions that may have records in what was read, as
    /// (producer id, first offset).
    aborted: Vec<(i64, i64)>,
}

impl ReadReply {
    fn failed(slot: (usize, usize), error: ResponseError) -> ReadReply {
        ReadReply {
            slot,
            error: Some(error),
            wait_from: -1,
            high_watermark: -1,
            last_stable_offset: -1,
            log_start_offset: -1,
            chunks: Vec::new(),
            size_bytes: 0,
            aborted: Vec::new(),
        }
    }
}

/// Records of one partition in the response, by (topic slot, partition slot).
type RecordsBySlot = BTreeMap<(usize, usize), Vec<ReadChunk>>;

/// Decodes the request, reads, and frames the response itself: record data goes to the socket
/// as the cached `Bytes` or as segment file regions, never copied into an encoded buffer.
pub async fn handle_frame(context: &RequestContext, mut body: Bytes) -> Outcome {
    let mut request = match FetchRequest::decode(&mut body, context.api_version) {
        Ok(request) => request,
        Err(error) => {
            return Outcome::Close(format!(
                "malformed Fetch v{} request: {error}",
                context.api_version
            ))
        }
    };
    let replica_id = if context.api_version >= 15 {
        request.replica_state.replica_id.0
    } else {
        request.replica_id.0
    };
    // consumer_byte_rate applies to consumers, not to followers (Kafka's replication quotas
    // are separate).
    let quota = if replica_id < 0 {
        context.client_quota(QuotaKind::Fetch)
    } else {
        None
    };
    if let Some((_, bound)) = &quota {
        // Kafka asks for no more than the quota window can pass at the bound.
        let window_bytes = super::quota_window(&context.shard.config).max_value_in_window(*bound);
        let cap = i32::try_from(window_bytes.max(1.0) as i64).unwrap_or(i32::MAX);
        request.max_bytes = request.max_bytes.min(cap);
        request.min_bytes = request.min_bytes.min(request.max_bytes);
    }
    // request_percentage: the shard's time on a consumer's fetch, not its long poll.
    let request_quota = if replica_id < 0 {
        context.client_quota(QuotaKind::Request)
    } else {
        None
    };
    let (response, records) = match request_quota {
        None => handle(context, request).await,
        Some((tags, bound)) => {
            let (handled, busy) = super::timed_polls(handle(context, request)).await;
            context.record_request_time(tags, bound, busy);
            handled
        }
    };
    let session_id = response.session_id;
    let framed = frame_response(
        context.api_version,
        context.header.correlation_id,
        response,
        records,
    );
    let framed = match (framed, quota) {
        (Ok(response), Some((tags, bound))) => {
            let size_bytes = response.size_bytes() as f64;
            let window = super::quota_window(&context.shard.config);
            let throttle_ms =
                context.record_quota(QuotaKind::Fetch, tags.clone(), bound, size_bytes);
            // A response larger than the whole window holds at the bound (a first batch past
            // max_bytes, KIP-74) could never pass: it goes out and the connection is held
            // back for its throttle, so the consumer makes progress (answered empty, it would
            // be throttled again for ever).
            if throttle_ms == 0 || size_bytes > window.max_value_in_window(bound) {
                Ok(response)
            } else {
                // Kafka answers a throttled fetch at once, without records (the client
                // fetches them again after the throttle), and takes back what it recorded.
                quota::unrecord(QuotaKind::Fetch, tags, size_bytes, window);
                // The session's client was told nothing of what was read: tell it all next time.
                context
                    .shard
                    .fetch_sessions
                    .borrow_mut()
                    .resend_all(session_id);
                let throttled = FetchResponse::default()
                    .with_throttle_time_ms(i32::try_from(throttle_ms).unwrap_or(i32::MAX))
                    .with_session_id(session_id);
                frame_response(
                    context.api_version,
                    context.header.correlation_id,
                    throttled,
                    RecordsBySlot::new(),
                )
            }
        }
        (framed, _) => framed,
    };
    match framed {
        Ok(response) => Outcome::Respond(response),
        Err(error) => {
            tracing::error!(
                version = context.api_version,
                "cannot frame Fetch response: {error}"
            );
            Outcome::Close(format!("cannot encode Fetch response: {error}"))
        }
    }
}

async fn handle(
    context: &RequestContext,
    mut request: FetchRequest,
) -> (FetchResponse, RecordsBySlot) {
    let shard = &context.shard;
    let image = shard.metadata();
    let by_id = context.api_version >= 13;
    let read_committed = request.isolation_level == READ_COMMITTED;
    let replica_id = if context.api_version >= 15 {
        request.replica_state.replica_id.0
    } else {
        request.replica_id.0
    };
    let session_limits = fetch_session::limits(&shard.config);
    let opened = shard.fetch_sessions.borrow_mut().open(
        &mut request,
        by_id,
        replica_id >= 0,
        session_limits,
        Instant::now(),
    );
    let opened = match opened {
        Ok(opened) => {
            if let fetch_session::Opened::Incremental(_) = opened {
                crate::metrics::incremental_fetch();
            }
            opened
        }
        Err(error) => {
            tracing::debug!(
                session_id = request.session_id,
                session_epoch = request.session_epoch,
                "fetch session refused: {error:?}"
            );
            let response = FetchResponse::default()
                .with_error_code(error.code())
                .with_session_id(0);
            return (response, RecordsBySlot::new());
        }
    };
    let reader = if replica_id >= 0 {
        Reader::Follower(replica_id)
    } else {
        Reader::Consumer { read_committed }
    };
    // Kafka: a follower needs CLUSTER_ACTION on the cluster, a consumer READ on each topic.
    let follower_authorized = replica_id < 0 || context.authorize_cluster(Operation::ClusterAction);

    let response_max_bytes = usize::try_from(request.max_bytes).unwrap_or(usize::MAX);
    let mut responses = Vec::with_capacity(request.topics.len());
    let mut work_by_owner: BTreeMap<usize, Vec<ReadWork>> = BTreeMap::new();
    for (topic_slot, fetch_topic) in request.topics.iter().enumerate() {
        let topic = if by_id {
            image.topic_by_id(fetch_topic.topic_id)
        } else {
            image.topic(fetch_topic.topic.0.as_str())
        };
        let unknown = if by_id {
            ResponseError::UnknownTopicId
        } else {
            ResponseError::UnknownTopicOrPartition
        };
        let authorized = match (replica_id >= 0, topic) {
            (true, _) => follower_authorized,
            (false, Some(topic)) => {
                context.authorize(Operation::Read, ResourceType::Topic, &topic.name)
            }
            // An unknown topic id stays UNKNOWN_TOPIC_ID; an unknown name needs READ on it.
            (false, None) => {
                by_id
                    || context.authorize(
                        Operation::Read,
                        ResourceType::Topic,
                        fetch_topic.topic.0.as_str(),
                    )
            }
        };
        let mut partitions = Vec::with_capacity(fetch_topic.partitions.len());
        for (partition_slot, fetch_partition) in fetch_topic.partitions.iter().enumerate() {
            let record = topic.and_then(|t| {
                t.partitions
                    .get(usize::try_from(fetch_partition.partition).ok()?)
            });
            let mut data = PartitionData::default()
                .with_partition_index(fetch_partition.partition)
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1);
            match (
                topic,
                record.map(|r| crate::cluster::leader_shard(shard, r)),
            ) {
                _ if !authorized => {
                    data = data.with_error_code(ResponseError::TopicAuthorizationFailed.code());
                }
                (Some(_), Some(Err(error))) => {
                    data = data.with_error_code(error.code());
                }
                (Some(topic), Some(Ok(owner))) => {
                    work_by_owner.entry(owner).or_default().push(ReadWork {
                        slot: (topic_slot, partition_slot),
                        topic: topic.name.clone(),
                        partition: fetch_partition.partition,
                        fetch_offset: fetch_partition.fetch_offset,
                        // The response's own limit bounds each partition too (KIP-74: the
                        // log still returns one whole batch past it, so consumers progress).
                        max_bytes: usize::try_from(fetch_partition.partition_max_bytes)
                            .unwrap_or(0)
                            .min(response_max_bytes),
                        current_leader_epoch: fetch_partition.current_leader_epoch,
                        zero_copy: context.session.zero_copy_allowed(),
                    });
                }
                _ => {
                    let code = if topic.is_some() {
                        ResponseError::UnknownTopicOrPartition
                    } else {
                        unknown
                    };
                    data = data.with_error_code(code.code());
                }
            }
            partitions.push(data);
        }
        responses.push(
            FetchableTopicResponse::default()
                .with_topic(fetch_topic.topic.clone())
                .with_topic_id(fetch_topic.topic_id)
                .with_partitions(partitions),
        );
    }

    let max_wait_ms = u64::try_from(request.max_wait_ms)
        .unwrap_or(0)
        .min(MAX_FETCH_WAIT_MS);
    let deadline = Instant::now() + Duration::from_millis(max_wait_ms);
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0).max(1);
    let replies = loop {
        let replies = read_all(shard, &work_by_owner, reader).await;
        let size_bytes: usize = replies.iter().map(|r| r.size_bytes).sum();
        let any_error = replies.iter().any(|r| r.error.is_some());
        if size_bytes >= min_bytes
            || any_error
            || Instant::now() >= deadline
            || work_by_owner.is_empty()
        {
            break replies;
        }
        wait_for_data(shard, &work_by_owner, &replies, reader, deadline).await;
        if Instant::now() >= deadline {
            break read_all(shard, &work_by_owner, reader).await;
        }
    };

    // The response bound: partitions in request order until max_bytes, but always the first
    // partition that has data (KIP-74).
    let mut budget_bytes = usize::try_from(request.max_bytes).unwrap_or(usize::MAX);
    let mut records = RecordsBySlot::new();
    let mut replies = replies;
    replies.sort_by_key(|r| r.slot);
    let mut any_data = false;
    for reply in replies {
        let data = &mut responses[reply.slot.0].partitions[reply.slot.1];
        if let Some(error) = reply.error {
            data.error_code = error.code();
        }
        data.high_watermark = reply.high_watermark;
        data.last_stable_offset = reply.last_stable_offset;
        data.log_start_offset = reply.log_start_offset;
        if reply.size_bytes == 0 {
            data.records = Some(Bytes::new());
            continue;
        }
        if any_data && reply.size_bytes > budget_bytes {
            data.records = Some(Bytes::new());
            continue;
        }
        budget_bytes = budget_bytes.saturating_sub(reply.size_bytes);
        any_data = true;
        data.records = Some(Bytes::new()); // framed by `frame_response`
        records.insert(reply.slot, reply.chunks);
        if read_committed {
            data.aborted_transactions = Some(
                reply
                    .aborted
                    .iter()
                    .map(|&(producer_id, first_offset)| {
                        AbortedTransaction::default()
                            .with_producer_id(ProducerId(producer_id))
                            .with_first_offset(first_offset)
                    })
                    .collect(),
            );
        }
    }
    let (session_id, keep) = shard.fetch_sessions.borrow_mut().finish(
        opened,
        &request.topics,
        &responses,
        |topic_slot, partition_slot| records.contains_key(&(topic_slot, partition_slot)),
        session_limits,
        Instant::now(),
    );
    let (responses, records) = match keep {
        Some(keep) => keep_only(responses, records, &keep),
        None => (responses, records),
    };
    let response = FetchResponse::default()
        .with_session_id(session_id)
        .with_responses(responses);
    (response, records)
}

/// An incremental response: only the partitions `keep` marks, topics left empty dropped, and
/// the records renumbered to the new slots.
fn keep_only(
    responses: Vec<FetchableTopicResponse>,
    mut records: RecordsBySlot,
    keep: &[Vec<bool>],
) -> (Vec<FetchableTopicResponse>, RecordsBySlot) {
    let mut kept_topics = Vec::new();
    let mut kept_records = RecordsBySlot::new();
    for (topic_slot, mut topic) in responses.into_iter().enumerate() {
        let partitions = std::mem::take(&mut topic.partitions);
        for (partition_slot, partition) in partitions.into_iter().enumerate() {
            if !keep[topic_slot][partition_slot] {
                continue;
            }
            if let Some(chunks) = records.remove(&(topic_slot, partition_slot)) {
                kept_records.insert((kept_topics.len(), topic.partitions.len()), chunks);
            }
            topic.partitions.push(partition);
        }
        if !topic.partitions.is_empty() {
            kept_topics.push(topic);
        }
    }
    (kept_topics, kept_records)
}

/// Frames a Fetch response as chunks: the encoded fields from kafka-protocol, with each
/// partition's records spliced in where the codec would have copied them. Each level (response,
/// topic, partition) is encoded with an empty last field (the topic array, the partition array,
/// the records), whose encoding is a fixed suffix that is cut off and replaced by the real
/// length prefix and contents. Byte-identical to the codec's own encoding (unit-tested for
/// every version); fails rather than guess if a suffix is not the expected one.
fn frame_response(
    version: i16,
    correlation_id: i32,
    response: FetchResponse,
    mut records: RecordsBySlot,
) -> anyhow::Result<Response> {
    let flexible = version >= 12;
    let mut top = response;
    let topics = std::mem::take(&mut top.responses);
    let mut head = crate::protocol::encode_response(ApiKey::Fetch, version, correlation_id, &top)?;
    cut_empty_array(&mut head, flexible)?;
    let mut frame = FrameBuilder::default();
    put_length(&mut frame.pending, topics.len(), flexible);
    for (topic_slot, mut topic) in topics.into_iter().enumerate() {
        let partitions = std::mem::take(&mut topic.partitions);
        topic.encode(&mut frame.pending, version)?;
        cut_empty_array(&mut frame.pending, flexible)?;
        put_length(&mut frame.pending, partitions.len(), flexible);
        for (partition_slot, mut partition) in partitions.into_iter().enumerate() {
            partition.records = Some(Bytes::new());
            partition.encode(&mut frame.pending, version)?;
            // Empty records are the last field: `00 00 00 00`, or `01` then `00` (no tags).
            cut_empty_array(&mut frame.pending, flexible)?;
            let chunks = records
                .remove(&(topic_slot, partition_slot))
                .unwrap_or_default();
            let size_bytes: usize = chunks.iter().map(ReadChunk::size_bytes).sum();
            put_length(&mut frame.pending, size_bytes, flexible);
            for chunk in chunks {
                frame.push(chunk);
            }
            if flexible {
                frame.pending.put_u8(0); // the partition's tagged fields
            }
        }
        if flexible {
            frame.pending.put_u8(0); // the topic's tagged fields
        }
    }
    if flexible {
        frame.pending.put_u8(0); // the response's tagged fields
    }
    Ok(frame.finish(head))
}

/// Removes the encoding of an empty array or empty bytes that ends `buffer`: `00 00 00 00`
/// (int32 length 0) before v12; `01 00` (compact length 0, then no tagged fields) from v12.
fn cut_empty_array(buffer: &mut BytesMut, flexible: bool) -> anyhow::Result<()> {
    let suffix: &[u8] = if flexible { &[1, 0] } else { &[0, 0, 0, 0] };
    anyhow::ensure!(
        buffer.ends_with(suffix),
        "unexpected encoding of an empty last field"
    );
    buffer.truncate(buffer.len() - suffix.len());
    Ok(())
}

/// An array or bytes length: int32 before v12, compact (length + 1 as an unsigned varint) from
/// v12.
fn put_length(buffer: &mut BytesMut, length: usize, flexible: bool) {
    if flexible {
        let mut value = length as u64 + 1;
        while value >= 0x80 {
            buffer.put_u8((value as u8 & 0x7f) | 0x80);
            value >>= 7;
        }
        buffer.put_u8(value as u8);
    } else {
        buffer.put_i32(length as i32);
    }
}

/// Collects response chunks: encoded fields accumulate in `pending`, record chunks go in as
/// they are.
#[derive(Default)]
struct FrameBuilder {
    chunks: Vec<ResponseChunk>,
    pending: BytesMut,
}

impl FrameBuilder {
    fn push(&mut self, chunk: ReadChunk) {
        if !self.pending.is_empty() {
            self.chunks
                .push(ResponseChunk::Bytes(self.pending.split().freeze()));
        }
        self.chunks.push(match chunk {
            ReadChunk::Memory(bytes) => ResponseChunk::Bytes(bytes),
            ReadChunk::File(region) => ResponseChunk::File(region),
        });
    }

    /// Puts `head` (size prefix, header, first fields) in front and fixes the size prefix.
    fn finish(mut self, mut head: BytesMut) -> Response {
        if !self.pending.is_empty() {
            self.chunks
                .push(ResponseChunk::Bytes(self.pending.split().freeze()));
        }
        let total: usize = head.len() + self.chunks.iter().map(ResponseChunk::len).sum::<usize>();
        let size = i32::try_from(total - 4).expect("a response below 2 GiB");
        head[..4].copy_from_slice(&size.to_be_bytes());
        let mut chunks = Vec::with_capacity(self.chunks.len() + 1);
        chunks.push(ResponseChunk::Bytes(head.freeze()));
        chunks.extend(self.chunks);
        Response::from_chunks(chunks)
    }
}

/// Who fetches: what they may read and what their fetch means.
#[derive(Debug, Clone, Copy)]
enum Reader {
    Consumer {
        read_committed: bool,
    },
    /// A follower replica (its node id): reads up to the log end; its fetch offset is its log
    /// end, which the leader records.
    Follower(i32),
}

/// One hop per owner shard, all at once (the work stays with the caller for the long poll).
async fn read_all(
    shard: &Rc<Shard>,
    work_by_owner: &BTreeMap<usize, Vec<ReadWork>>,
    reader: Reader,
) -> Vec<ReadReply> {
    run_on_owners(
        shard,
        work_by_owner.clone(),
        move |owner_shard, work| async move { read_on_owner(&owner_shard, work, reader).await },
        |slot| ReadReply::failed(slot, ResponseError::NotLeaderOrFollower),
    )
    .await
}

impl Slotted for ReadWork {
    fn slot(&self) -> Slot {
        self.slot
    }
}

async fn read_on_owner(shard: &Rc<Shard>, work: ReadWork, reader: Reader) -> ReadReply {
    let Some(partition) = shard.partitions.get(&work.topic, work.partition) else {
        // Deleted since the request's metadata was read: as Kafka answers for a deleted topic
        // (librdkafka then drops the partition instead of retrying its leader).
        let deleted = shard.metadata().topic(&work.topic).is_none();
        let error = if deleted {
            ResponseError::UnknownTopicOrPartition
        } else {
            ResponseError::NotLeaderOrFollower
        };
        return ReadReply::failed(work.slot, error);
    };
    if let Err(error) = partition.check_leader_epoch(work.current_leader_epoch) {
        return ReadReply::failed(work.slot, error);
    }
    if let Reader::Follower(replica) = reader {
        let recorded = crate::cluster::replication::record_replica_fetch(
            shard,
            &partition,
            replica,
            work.fetch_offset,
        );
        if !recorded {
            return ReadReply::failed(work.slot, ResponseError::NotLeaderOrFollower);
        }
    }
    let high_watermark = partition.high_watermark();
    let last_stable_offset = partition.last_stable_offset();
    let visible_end = match reader {
        Reader::Consumer {
            read_committed: true,
        } => last_stable_offset,
        Reader::Consumer {
            read_committed: false,
        } => high_watermark,
        Reader::Follower(_) => partition.log.written_end_offset(),
    };
    // read_committed waits past the high watermark, not the LSO: an open transaction holds
    // the LSO still, and the marker that releases it moves the high watermark.
    let wait_from = match reader {
        Reader::Consumer {
            read_committed: true,
        } => high_watermark.max(visible_end),
        _ => visible_end,
    };
    let mut reply = ReadReply {
        slot: work.slot,
        error: None,
        wait_from,
        high_watermark,
        last_stable_offset,
        log_start_offset: partition.log.log_start_offset(),
        chunks: Vec::new(),
        size_bytes: 0,
        aborted: Vec::new(),
    };
    if work.fetch_offset >= visible_end && work.fetch_offset <= partition.log.next_offset() {
        return reply;
    }
    let read = if shard.config.fetch_zero_copy && work.zero_copy {
        partition
            .log
            .read_zero_copy(work.fetch_offset, work.max_bytes, visible_end)
            .await
            .map(|read| (read.chunks, read.size_bytes))
    } else {
        partition
            .log
            .read(work.fetch_offset, work.max_bytes, visible_end)
            .await
            .map(|read| {
                let chunks = read.chunks.into_iter().map(ReadChunk::Memory).collect();
                (chunks, read.size_bytes)
            })
    };
    match read {
        Ok((chunks, size_bytes)) => {
            reply.size_bytes = size_bytes;
            reply.chunks = chunks;
            if matches!(
                reader,
                Reader::Consumer {
                    read_committed: true
                }
            ) && size_bytes > 0
            {
                reply.aborted = partition
                    .producers
                    .borrow()
                    .aborted_between(work.fetch_offset, visible_end);
            }
        }
        Err(LogError::OffsetOutOfRange { .. }) => {
            reply.error = Some(ResponseError::OffsetOutOfRange);
        }
        Err(error) => {
            tracing::error!(topic = %work.topic, partition = work.partition, "read failed: {error}");
            reply.error = Some(ResponseError::KafkaStorageError);
        }
    }
    reply
}

/// Waits until any partition of the request gets new data, or the deadline.
async fn wait_for_data(
    shard: &Rc<Shard>,
    work_by_owner: &BTreeMap<usize, Vec<ReadWork>>,
    replies: &[ReadReply],
    reader: Reader,
    deadline: Instant,
) {
    let remaining = deadline.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        return;
    }
    let waits = work_by_owner.iter().map(|(&owner, work)| {
        // Wait for offsets past what was just read, so data that arrived meanwhile wakes us.
        let targets: Vec<(String, i32, i64)> = work
            .iter()
            .map(|w| {
                let reply = replies.iter().find(|r| r.slot == w.slot);
                let seen = reply.map(|r| r.wait_from).unwrap_or(w.fetch_offset);
                (w.topic.clone(), w.partition, seen.max(w.fetch_offset))
            })
            .collect();
        shard
            .invoke_on(owner, move |owner_shard| async move {
                let waits: Vec<_> = targets
                    .iter()
                    .filter_map(|(topic, partition, offset)| {
                        let partition = owner_shard.partitions.get(topic, *partition)?;
                        let offset = *offset;
                        Some(
                            async move {
                                match reader {
                                    Reader::Follower(_) => {
                                        partition.log.wait_for_offset(offset).await
                                    }
                                    Reader::Consumer { .. } => {
                                        partition.log.wait_for_high_watermark(offset).await
                                    }
                                }
                            }
                            .boxed_local(),
                        )
                    })
                    .collect();
                if waits.is_empty() {
                    glommio::timer::sleep(remaining).await;
                    return;
                }
                futures::select! {
                    _ = futures::future::select_all(waits).fuse() => {},
                    _ = glommio::timer::sleep(remaining).fuse() => {},
                }
            })
            .boxed_local()
    });
    let waits: Vec<_> = waits.collect();
    if waits.is_empty() {
        return;
    }
    futures::select! {
        _ = futures::future::select_all(waits).fuse() => {},
        _ = glommio::timer::sleep(remaining).fuse() => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::StrBytes;

    fn sample(version: i16) -> (FetchResponse, RecordsBySlot) {
        let mut records = RecordsBySlot::new();
        let mut topics = Vec::new();
        for topic in 0..3usize {
            let mut partitions = Vec::new();
            for partition in 0..3usize {
                let mut data = PartitionData::default()
                    .with_partition_index(partition as i32)
                    .with_high_watermark(1000 + partition as i64)
                    .with_last_stable_offset(999)
                    .with_log_start_offset(7)
                    .with_records(Some(Bytes::new()));
                if partition == 1 {
                    data = data.with_aborted_transactions(Some(Vec::new()));
                }
                if topic == 1 && partition == 2 {
                    data = data.with_error_code(ResponseError::OffsetOutOfRange.code());
                } else if partition != 0 {
                    // Several chunks of different sizes, one large enough for a 3-byte varint.
                    let sizes = [10 + topic * 7 + partition, 300, 20_000 * partition];
                    let chunks = sizes
                        .iter()
                        .enumerate()
                        .map(|(i, n)| {
                            ReadChunk::Memory(Bytes::from(vec![(i + partition) as u8; *n]))
                        })
                        .collect();
                    records.insert((topic, partition), chunks);
                }
                partitions.push(data);
            }
            let name = TopicName(StrBytes::from_string(format!("topic-{topic}")));
            let mut response = FetchableTopicResponse::default().with_partitions(partitions);
            if version >= 13 {
                response = response.with_topic_id(uuid::Uuid::from_u128(topic as u128 + 1));
            } else {
                response = response.with_topic(name);
            }
            topics.push(response);
        }
        let response = FetchResponse::default()
            .with_throttle_time_ms(3)
            .with_session_id(0)
            .with_responses(topics);
        (response, records)
    }

    #[test]
    fn framed_fetch_responses_match_the_codec_for_every_version() {
        for version in 4..=17i16 {
            let (response, records) = sample(version);
            // The codec's encoding with the records copied in.
            let mut expected_response = response.clone();
            for ((topic, partition), chunks) in &records {
                let mut all = Vec::new();
                for chunk in chunks {
                    let ReadChunk::Memory(bytes) = chunk else {
                        unreachable!()
                    };
                    all.extend_from_slice(bytes);
                }
                expected_response.responses[*topic].partitions[*partition].records =
                    Some(Bytes::from(all));
            }
            let expected =
                crate::protocol::encode_response(ApiKey::Fetch, version, 42, &expected_response)
                    .unwrap();
            let framed = frame_response(version, 42, response, records).unwrap();
            let mut got = Vec::new();
            for chunk in framed.chunks() {
                let ResponseChunk::Bytes(bytes) = chunk else {
                    unreachable!()
                };
                got.extend_from_slice(bytes);
            }
            assert_eq!(got.len(), framed.size_bytes());
            assert!(got == expected[..], "version {version} differs");
        }
    }
}
