//! Followers pull from leaders. One fetcher task per (shard, leader node): it keeps one
//! connection to the leader's Kafka listener and fetches every partition this shard follows
//! on that leader in one request (Fetch v12 with this node's replica id, in an incremental fetch
//! session when the leader grants one: only changed partitions go each way), after first asking
//! OffsetForLeaderEpoch for any partition whose leader changed and cutting the divergent tail
//! (KIP-101/KIP-279). The task ends when the shard follows nothing more on that leader.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, OffsetForLeaderEpochRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::connection::PeerConnection;
use super::state::truncation_offset;
use super::Role;
use crate::cluster::Partition;
use crate::log::LogError;
use crate::protocol::record_batch::{RecordBatchHeader, RECORD_BATCH_HEADER_SIZE_BYTES};
use crate::shard::Shard;

const FETCH_VERSION: i16 = 12;
const OFFSET_FOR_LEADER_EPOCH_VERSION: i16 = 4;
const CONNECT_TIMEOUT_MS: u64 = 3_000;
/// Beyond the fetch's own wait: how long an answer may take before the connection is dropped.
const RESPONSE_GRACE_MS: u64 = 10_000;
const BACKOFF_MIN_MS: u64 = 20;
const BACKOFF_MAX_MS: u64 = 1_000;

thread_local! {
    /// Leaders this shard runs a fetcher for (one executor per thread: per shard).
    static RUNNING: RefCell<HashSet<i32>> = RefCell::new(HashSet::new());
}

/// Starts a fetcher for every leader this shard follows a partition on and has none yet.
pub fn ensure_fetchers(shard: &Rc<Shard>) {
    let mut leaders = HashSet::new();
    shard.partitions.for_each(|partition| {
        if let Role::Follower { leader, .. } = partition.replication.borrow().role {
            leaders.insert(leader);
        }
    });
    for leader in leaders {
        let start = RUNNING.with(|running| running.borrow_mut().insert(leader));
        if start {
            glommio::spawn_local(run(shard.clone(), leader)).detach();
        }
    }
}

/// The follower's side of an incremental fetch session (KIP-227) with one leader: what the
/// leader holds for each partition, so a round sends only what changed (a follower of
/// thousands of partitions would otherwise resend all of them every round).
#[derive(Default)]
struct FollowerSession {
    /// 0: none; the next fetch is a full one that asks for a session.
    id: i32,
    next_epoch: i32,
    /// The parameters the leader's session holds, by (topic, partition).
    sent: HashMap<(String, i32), FetchPartition>,
}

impl FollowerSession {
    /// The session fields and the partitions to send: everything for a full fetch, else the
    /// partitions that are new or changed, and those to forget.
    fn plan(
        &self,
        desired: &[(String, FetchPartition)],
    ) -> (i32, i32, Vec<FetchTopic>, Vec<ForgottenTopic>) {
        if self.id == 0 {
            return (0, 0, group_topics(desired.iter()), Vec::new());
        }
        let changed = desired.iter().filter(|(topic, partition)| {
            self.sent.get(&(topic.clone(), partition.partition)) != Some(partition)
        });
        let wanted: HashSet<(&str, i32)> = desired
            .iter()
            .map(|(topic, partition)| (topic.as_str(), partition.partition))
            .collect();
        let mut forgotten: Vec<ForgottenTopic> = Vec::new();
        for (topic, partition) in self.sent.keys() {
            if wanted.contains(&(topic.as_str(), *partition)) {
                continue;
            }
            match forgotten.iter_mut().find(|f| f.topic.0.as_str() == topic) {
                Some(entry) => entry.partitions.push(*partition),
                None => forgotten.push(
                    ForgottenTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(topic.clone())))
                        .with_partitions(vec![*partition]),
                ),
            }
        }
        (self.id, self.next_epoch, group_topics(changed), forgotten)
    }

    /// After a successful answer: the leader's session now holds `desired`.
    fn answered(
        &mut self,
        asked_epoch: i32,
        session_id: i32,
        desired: Vec<(String, FetchPartition)>,
    ) {
        self.id = session_id;
        self.next_epoch = if asked_epoch == i32::MAX || session_id == 0 {
            1
        } else {
            asked_epoch + 1
        };
        self.sent = desired
            .into_iter()
            .map(|(topic, partition)| ((topic, partition.partition), partition))
            .collect();
    }
}

/// Partitions under their topics, in order.
fn group_topics<'a>(
    partitions: impl Iterator<Item = &'a (String, FetchPartition)>,
) -> Vec<FetchTopic> {
    let mut topics: Vec<FetchTopic> = Vec::new();
    for (name, partition) in partitions {
        let entry = match topics.iter_mut().position(|t| t.topic.0.as_str() == name) {
            Some(index) => &mut topics[index],
            None => {
                topics.push(
                    FetchTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(name.clone()))),
                );
                topics.last_mut().expect("just pushed")
            }
        };
        entry.partitions.push(partition.clone());
    }
    topics
}

/// One partition in a fetch: what was asked, to check the answer still applies.
struct Fetching {
    partition: Rc<Partition>,
    leader_epoch: i32,
    fetch_offset: i64,
}

async fn run(shard: Rc<Shard>, leader: i32) {
    tracing::debug!(shard = shard.id, leader, "replica fetcher started");
    let mut connection: Option<PeerConnection> = None;
    let mut session = FollowerSession::default();
    let mut backoff_ms = BACKOFF_MIN_MS;
    // A refused login or TLS handshake is a configuration error operators must see, once per
    // change rather than once per retry.
    let mut last_warning: Option<String> = None;
    loop {
        let followed = followed_on(&shard, leader);
        if followed.is_empty() || shard.is_stopping() {
            break;
        }
        if connection.is_none() {
            // A new connection may reach another shard of the leader: start a new session.
            session = FollowerSession::default();
        }
        let progressed = match round(&shard, leader, &followed, &mut connection, &mut session).await
        {
            Ok(progressed) => progressed,
            Err(error) => {
                let message = error.to_string();
                let refused = matches!(
                    error.kind(),
                    std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::InvalidData
                );
                if refused && last_warning.as_deref() != Some(message.as_str()) {
                    tracing::warn!(shard = shard.id, leader, "replica fetch failed: {message}");
                    last_warning = Some(message);
                } else {
                    tracing::debug!(shard = shard.id, leader, "replica fetch failed: {message}");
                }
                connection = None;
                false
            }
        };
        if progressed {
            backoff_ms = BACKOFF_MIN_MS;
        } else {
            glommio::timer::sleep(Duration::from_millis(backoff_ms)).await;
            backoff_ms = (backoff_ms * 2).min(BACKOFF_MAX_MS);
        }
    }
    RUNNING.with(|running| running.borrow_mut().remove(&leader));
    tracing::debug!(shard = shard.id, leader, "replica fetcher stopped");
    // A partition may have started following this leader while the task wound down. (Not
    // while stopping: glommio runs a spawned task at once, and it would end at once too.)
    if !shard.is_stopping() {
        ensure_fetchers(&shard);
    }
}

fn followed_on(shard: &Shard, leader_id: i32) -> Vec<Rc<Partition>> {
    let mut followed = Vec::new();
    shard.partitions.for_each_rc(|partition| {
        if matches!(partition.replication.borrow().role, Role::Follower { leader, .. } if leader == leader_id)
        {
            followed.push(partition.clone());
        }
    });
    followed
}

/// One round: truncation questions if any, then one fetch. Returns whether anything moved.
async fn round(
    shard: &Rc<Shard>,
    leader: i32,
    followed: &[Rc<Partition>],
    connection: &mut Option<PeerConnection>,
    session: &mut FollowerSession,
) -> std::io::Result<bool> {
    if connection.is_none() {
        let image = shard.metadata();
        let Some(broker) = image.brokers.get(&leader) else {
            return Ok(false);
        };
        let max_response_bytes = shard.config.replica_fetch_response_max_bytes + (1 << 20);
        *connection = Some(
            PeerConnection::connect(
                &shard.inter_broker,
                broker,
                Duration::from_millis(CONNECT_TIMEOUT_MS),
                max_response_bytes,
            )
            .await?,
        );
    }
    let connection = connection.as_mut().expect("connected above");
    let untruncated: Vec<_> = followed
        .iter()
        .filter(|p| {
            matches!(
                p.replication.borrow().role,
                Role::Follower {
                    truncated: false,
                    ..
                }
            )
        })
        .cloned()
        .collect();
    if !untruncated.is_empty() {
        truncate_divergent(shard, connection, &untruncated).await?;
        return Ok(true);
    }
    fetch(shard, connection, followed, session).await
}

fn follower_epoch(partition: &Partition) -> Option<(i32, bool)> {
    match partition.replication.borrow().role {
        Role::Follower {
            leader_epoch,
            truncated,
            ..
        } => Some((leader_epoch, truncated)),
        _ => None,
    }
}

fn mark_truncated(partition: &Partition, asked_epoch: i32) {
    if let Role::Follower {
        leader_epoch,
        truncated,
        ..
    } = &mut partition.replication.borrow_mut().role
    {
        if *leader_epoch == asked_epoch {
            *truncated = true;
        }
    }
}

async fn truncate_divergent(
    shard: &Rc<Shard>,
    connection: &mut PeerConnection,
    partitions: &[Rc<Partition>],
) -> std::io::Result<()> {
    let mut asked = Vec::new();
    let mut topics: Vec<OffsetForLeaderTopic> = Vec::new();
    for partition in partitions {
        let Some((leader_epoch, _)) = follower_epoch(partition) else {
            continue;
        };
        let Some(local_epoch) = partition.log.latest_epoch() else {
            // Nothing written under any epoch: nothing can diverge.
            mark_truncated(partition, leader_epoch);
            continue;
        };
        let name = &partition.topic.name;
        let entry = match topics.iter_mut().position(|t| t.topic.0.as_str() == name) {
            Some(index) => &mut topics[index],
            None => {
                topics.push(
                    OffsetForLeaderTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(name.clone()))),
                );
                topics.last_mut().expect("just pushed")
            }
        };
        entry.partitions.push(
            OffsetForLeaderPartition::default()
                .with_partition(partition.index)
                .with_current_leader_epoch(leader_epoch)
                .with_leader_epoch(local_epoch),
        );
        asked.push((partition.clone(), leader_epoch));
    }
    if asked.is_empty() {
        return Ok(());
    }
    let request = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(shard.config.node_id))
        .with_topics(topics);
    let timeout = Duration::from_millis(RESPONSE_GRACE_MS);
    let response = connection
        .call(&request, OFFSET_FOR_LEADER_EPOCH_VERSION, timeout)
        .await?;
    for topic in response.topics {
        for answer in topic.partitions {
            let Some((partition, asked_epoch)) = asked.iter().find(|(p, _)| {
                p.topic.name == topic.topic.0.as_str() && p.index == answer.partition
            }) else {
                continue;
            };
            if follower_epoch(partition).map(|(epoch, _)| epoch) != Some(*asked_epoch) {
                continue; // The leader changed meanwhile: ask again next round.
            }
            if answer.error_code != 0 {
                tracing::debug!(topic = %partition.topic.name, partition = partition.index,
                    error = answer.error_code, "OffsetForLeaderEpoch refused");
                continue;
            }
            let log = &partition.log;
            let decision = truncation_offset(
                (answer.leader_epoch, answer.end_offset),
                log.written_end_offset(),
                log.high_watermark(),
                |epoch| log.end_offset_for_epoch(epoch),
            );
            if decision.offset < log.written_end_offset() {
                match log.truncate_to(decision.offset).await {
                    Ok(end) => {
                        tracing::info!(topic = %partition.topic.name, partition = partition.index,
                            end, leader_epoch = asked_epoch, "truncated divergent tail");
                        rebuild_producers(shard, partition).await;
                    }
                    Err(error) => {
                        tracing::warn!(topic = %partition.topic.name, partition = partition.index,
                            "truncation failed: {error}");
                        continue;
                    }
                }
            }
            if decision.completed {
                mark_truncated(partition, *asked_epoch);
            }
        }
    }
    Ok(())
}

/// After a truncation the idempotent-producer state may name batches that are gone.
async fn rebuild_producers(shard: &Shard, partition: &Partition) {
    let rebuilt = crate::txn::producer_state::ProducerStateTable::rebuild_from_log(
        &partition.log,
        shard.config.producer_state_rebuild_bytes,
    )
    .await;
    match rebuilt {
        Ok(table) => *partition.producers.borrow_mut() = table,
        Err(error) => {
            tracing::warn!(topic = %partition.topic.name, partition = partition.index,
                "could not rebuild producer state after truncation: {error}");
        }
    }
}

async fn fetch(
    shard: &Rc<Shard>,
    connection: &mut PeerConnection,
    followed: &[Rc<Partition>],
    session: &mut FollowerSession,
) -> std::io::Result<bool> {
    let config = &shard.config;
    let mut fetching: Vec<Fetching> = Vec::with_capacity(followed.len());
    let mut desired: Vec<(String, FetchPartition)> = Vec::with_capacity(followed.len());
    for partition in followed {
        let Some((leader_epoch, true)) = follower_epoch(partition) else {
            continue;
        };
        let log = &partition.log;
        let fetch_offset = log.next_offset();
        desired.push((
            partition.topic.name.clone(),
            FetchPartition::default()
                .with_partition(partition.index)
                .with_current_leader_epoch(leader_epoch)
                .with_fetch_offset(fetch_offset)
                .with_last_fetched_epoch(-1)
                .with_log_start_offset(log.log_start_offset())
                .with_partition_max_bytes(config.replica_fetch_max_bytes as i32),
        ));
        fetching.push(Fetching {
            partition: partition.clone(),
            leader_epoch,
            fetch_offset,
        });
    }
    if fetching.is_empty() {
        return Ok(false);
    }
    let (session_id, session_epoch, topics, forgotten) = session.plan(&desired);
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(config.node_id))
        .with_max_wait_ms(config.replica_fetch_wait_max_ms as i32)
        .with_min_bytes(1)
        .with_max_bytes(config.replica_fetch_response_max_bytes as i32)
        .with_isolation_level(0)
        .with_session_id(session_id)
        .with_session_epoch(session_epoch)
        .with_topics(topics)
        .with_forgotten_topics_data(forgotten);
    let timeout = Duration::from_millis(config.replica_fetch_wait_max_ms + RESPONSE_GRACE_MS);
    let response = match connection.call(&request, FETCH_VERSION, timeout).await {
        Ok(response) => response,
        Err(error) => {
            *session = FollowerSession::default();
            return Err(error);
        }
    };
    if response.error_code == ResponseError::FetchSessionIdNotFound.code()
        || response.error_code == ResponseError::InvalidFetchSessionEpoch.code()
    {
        // Evicted, or the leader restarted: a full fetch next round opens a new session.
        tracing::debug!(shard = shard.id, session_id, "fetch session lost");
        *session = FollowerSession::default();
        return Ok(true);
    }
    if response.error_code == 0 {
        session.answered(session_epoch, response.session_id, desired);
    } else {
        *session = FollowerSession::default();
    }
    let mut progressed = false;
    let mut any_error = response.error_code != 0;
    for topic in response.responses {
        for data in topic.partitions {
            let Some(item) = fetching.iter().find(|f| {
                f.partition.topic.name == topic.topic.0.as_str()
                    && f.partition.index == data.partition_index
            }) else {
                continue;
            };
            let partition = &item.partition;
            let still = follower_epoch(partition) == Some((item.leader_epoch, true))
                && partition.log.next_offset() == item.fetch_offset;
            if !still {
                continue;
            }
            if data.error_code != 0 {
                any_error = true;
                handle_fetch_error(shard, partition, data.error_code, data.log_start_offset).await;
                continue;
            }
            let records = data.records.unwrap_or_default();
            let whole = whole_batches(&records);
            if !whole.is_empty() {
                let batches = whole.clone();
                match partition.log.append_replica(whole).await {
                    Ok(_) => {
                        progressed = true;
                        record_producers(partition, &batches);
                    }
                    Err(error) => {
                        any_error = true;
                        tracing::warn!(topic = %partition.topic.name, partition = partition.index,
                            offset = item.fetch_offset, "replica append failed: {error}");
                        if matches!(error, LogError::Io(_))
                            && partition.log.next_offset() == item.fetch_offset
                        {
                            // The leader's batches do not continue our log: find out again.
                            reset_truncation(partition);
                        }
                        continue;
                    }
                }
            }
            // The leader's high watermark, bounded by what we hold.
            partition.log.set_high_watermark_limit(data.high_watermark);
        }
    }
    // An idle leader answers after its wait: that is progress enough to fetch again at once.
    Ok(progressed || !any_error)
}

fn reset_truncation(partition: &Partition) {
    if let Role::Follower { truncated, .. } = &mut partition.replication.borrow_mut().role {
        *truncated = false;
    }
}

async fn handle_fetch_error(
    shard: &Rc<Shard>,
    partition: &Rc<Partition>,
    code: i16,
    leader_log_start: i64,
) {
    let log = &partition.log;
    if code == ResponseError::OffsetOutOfRange.code() {
        if leader_log_start > log.written_end_offset() {
            tracing::info!(topic = %partition.topic.name, partition = partition.index,
                leader_log_start, end = log.written_end_offset(),
                "behind the leader's log start: restarting the replica there");
            if let Err(error) = log.reset_to(leader_log_start).await {
                tracing::warn!(topic = %partition.topic.name, partition = partition.index,
                    "replica reset failed: {error}");
            }
            rebuild_producers(shard, partition).await;
        } else {
            // Ahead of the leader's end: truncate by epoch again.
            reset_truncation(partition);
        }
        return;
    }
    // NOT_LEADER_OR_FOLLOWER, FENCED/UNKNOWN_LEADER_EPOCH, UNKNOWN_TOPIC...: the metadata
    // image will bring the change; retried after the backoff.
    tracing::debug!(topic = %partition.topic.name, partition = partition.index,
        error = code, "replica fetch refused");
}

/// The prefix of `records` that holds whole batches (a fetch may end inside one).
pub fn whole_batches(records: &Bytes) -> Bytes {
    let mut position = 0usize;
    while position + RECORD_BATCH_HEADER_SIZE_BYTES <= records.len() {
        let Ok(header) = RecordBatchHeader::parse(&records[position..]) else {
            break;
        };
        let size_bytes = header.total_size_bytes();
        if position + size_bytes > records.len() {
            break;
        }
        position += size_bytes;
    }
    records.slice(..position)
}

/// Keeps the follower's producer state current (sequences, open transactions, aborted
/// transactions), so it answers retries as duplicates and serves read_committed once it leads.
fn record_producers(partition: &Partition, batches: &Bytes) {
    let now_ms = crate::log::now_ms();
    let mut producers = partition.producers.borrow_mut();
    let mut position = 0usize;
    while position < batches.len() {
        let Ok(header) = RecordBatchHeader::parse(&batches[position..]) else {
            break;
        };
        let size = header.total_size_bytes();
        let Some(batch) = batches.get(position..position + size) else {
            break;
        };
        producers.record_stored_batch(batch, &header, now_ms);
        position += size;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::record_batch::test_support::{build_uncompressed_batch, BatchParams};

    fn wanted(topic: &str, partition: i32, offset: i64) -> (String, FetchPartition) {
        (
            topic.to_string(),
            FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset),
        )
    }

    use crate::test_support::listed_fetch_partitions as listed;

    #[test]
    fn follower_session_sends_only_changes_and_forgets_what_it_stopped_following() {
        let mut session = FollowerSession::default();
        let first = vec![wanted("a", 0, 10), wanted("a", 1, 20), wanted("b", 0, 5)];
        let (id, epoch, topics, forgotten) = session.plan(&first);
        assert_eq!(
            (id, epoch),
            (0, 0),
            "the first fetch is full and opens a session"
        );
        assert_eq!(listed(&topics).len(), 3);
        assert!(forgotten.is_empty());
        session.answered(epoch, 77, first);

        // a/1 advanced, b/0 is no longer followed.
        let second = vec![wanted("a", 0, 10), wanted("a", 1, 25)];
        let (id, epoch, topics, forgotten) = session.plan(&second);
        assert_eq!((id, epoch), (77, 1));
        assert_eq!(listed(&topics), vec![("a".to_string(), 1, 25)]);
        assert_eq!(forgotten.len(), 1);
        assert_eq!(forgotten[0].topic.0.as_str(), "b");
        assert_eq!(forgotten[0].partitions, vec![0]);
        session.answered(epoch, 77, second.clone());

        // Nothing changed: an empty incremental fetch at the next epoch.
        let (id, epoch, topics, forgotten) = session.plan(&second);
        assert_eq!((id, epoch), (77, 2));
        assert!(topics.is_empty() && forgotten.is_empty());

        // A leader that declines sessions keeps getting full fetches.
        let mut declined = FollowerSession::default();
        let (_, epoch, _, _) = declined.plan(&second);
        declined.answered(epoch, 0, second.clone());
        assert_eq!(declined.plan(&second).1, 0);
        assert_eq!(listed(&declined.plan(&second).2).len(), 2);
    }

    #[test]
    fn whole_batches_cut_a_partial_last_batch() {
        let one = build_uncompressed_batch(BatchParams::default(), &[b"a", b"b"]);
        let mut two = one.clone();
        two.extend_from_slice(&one);
        let full = Bytes::from(two.clone());
        assert_eq!(whole_batches(&full).len(), two.len());
        let partial = Bytes::from(two[..one.len() + 20].to_vec());
        assert_eq!(whole_batches(&partial).len(), one.len());
        assert!(whole_batches(&Bytes::from(vec![0u8; 10])).is_empty());
    }
}
