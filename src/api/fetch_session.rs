//! Incremental fetch sessions (KIP-227). A client that fetches many partitions opens a session
//! with a full fetch (epoch 0); the broker remembers the partitions and their fetch parameters,
//! and later requests (epoch 1, 2, ...) carry only the partitions whose parameters changed and
//! those to forget. Responses then carry only partitions with something new: records, an error,
//! or a changed high watermark, last stable offset or log start offset.
//!
//! Sessions live in the cache of the shard that served the request: connections stay on their
//! shard, and a client whose reconnect lands on another shard gets FETCH_SESSION_ID_NOT_FOUND
//! and opens a new session with a full fetch, as after any eviction (KIP-227 lets a broker drop
//! a session at any time). Bounded by `fetch_session_slots_per_shard` sessions and
//! `fetch_session_max_partitions` partitions each; past the bound a full fetch is answered
//! without a session (session id 0) and clients keep sending full requests.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::FetchableTopicResponse;
use kafka_protocol::messages::{FetchRequest, TopicName};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// A request with this epoch closes its session (if it names one) and fetches without one.
const FINAL_EPOCH: i32 = -1;
/// A request with this epoch closes its session (if it names one) and opens a new one.
const INITIAL_EPOCH: i32 = 0;

/// The bounds of one shard's cache.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// Sessions the shard keeps at once.
    pub slots: usize,
    /// Partitions one session may hold.
    pub max_partitions: usize,
    /// A consumer's session unused this long may be evicted for a new one (Kafka's
    /// `min.incremental.fetch.session.eviction.ms`).
    pub eviction_ms: u64,
}

pub fn limits(config: &crate::config::BrokerConfig) -> SessionLimits {
    SessionLimits {
        slots: config.fetch_session_slots_per_shard,
        max_partitions: config.fetch_session_max_partitions,
        eviction_ms: config.fetch_session_eviction_ms,
    }
}

/// What the request's session fields asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// No session: every partition is in the request and in the response.
    Sessionless,
    /// A full fetch that opens a session once answered.
    New {
        uses_topic_ids: bool,
        follower: bool,
    },
    /// An incremental fetch in session `id`: `request.topics` now holds every partition of the
    /// session.
    Incremental(i32),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum TopicKey {
    Name(String),
    Id(Uuid),
}

type PartitionKey = (TopicKey, i32);

/// What the last response told the client of a partition; `None` until it was told anything,
/// or after an error (so the partition is sent again once the error is gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Reported {
    high_watermark: i64,
    last_stable_offset: i64,
    log_start_offset: i64,
}

struct CachedPartition {
    topic: TopicName,
    topic_id: Uuid,
    /// The fetch parameters of the last request that named the partition.
    request: FetchPartition,
    reported: Option<Reported>,
    /// Position in the session's fetch order.
    position: u64,
}

struct FetchSession {
    /// The epoch the next request must carry.
    next_epoch: i32,
    uses_topic_ids: bool,
    /// Follower sessions may evict consumers' sessions regardless of their age.
    follower: bool,
    partitions: HashMap<PartitionKey, CachedPartition>,
    /// Fetch order: partitions that returned records move to the back, so a response bounded
    /// by `max_bytes` does not starve the partitions behind them.
    order: BTreeMap<u64, PartitionKey>,
    next_position: u64,
    last_used: Instant,
}

impl FetchSession {
    fn new(uses_topic_ids: bool, follower: bool, now: Instant) -> FetchSession {
        FetchSession {
            next_epoch: 1,
            uses_topic_ids,
            follower,
            partitions: HashMap::new(),
            order: BTreeMap::new(),
            next_position: 0,
            last_used: now,
        }
    }

    fn upsert(&mut self, topic: &FetchTopic, partition: &FetchPartition) {
        let key = (topic_key(self.uses_topic_ids, topic), partition.partition);
        match self.partitions.get_mut(&key) {
            Some(cached) => cached.request = partition.clone(),
            None => {
                let position = self.next_position;
                self.next_position += 1;
                self.order.insert(position, key.clone());
                self.partitions.insert(
                    key,
                    CachedPartition {
                        topic: topic.topic.clone(),
                        topic_id: topic.topic_id,
                        request: partition.clone(),
                        reported: None,
                        position,
                    },
                );
            }
        }
    }

    fn remove(&mut self, key: &PartitionKey) {
        if let Some(cached) = self.partitions.remove(key) {
            self.order.remove(&cached.position);
        }
    }

    fn move_to_back(&mut self, key: &PartitionKey) {
        let Some(cached) = self.partitions.get_mut(key) else {
            return;
        };
        self.order.remove(&cached.position);
        cached.position = self.next_position;
        self.next_position += 1;
        self.order.insert(cached.position, key.clone());
    }

    /// Every partition in fetch order, consecutive partitions of a topic under one entry (a
    /// topic may appear more than once, as in Kafka's own responses).
    fn fetch_topics(&self) -> Vec<FetchTopic> {
        let mut topics: Vec<FetchTopic> = Vec::new();
        for key in self.order.values() {
            let cached = &self.partitions[key];
            let same_topic = topics
                .last()
                .is_some_and(|last| topic_key(self.uses_topic_ids, last) == key.0);
            if !same_topic {
                topics.push(
                    FetchTopic::default()
                        .with_topic(cached.topic.clone())
                        .with_topic_id(cached.topic_id),
                );
            }
            let topic = topics.last_mut().expect("pushed above");
            topic.partitions.push(cached.request.clone());
        }
        topics
    }
}

fn topic_key(uses_topic_ids: bool, topic: &FetchTopic) -> TopicKey {
    if uses_topic_ids {
        TopicKey::Id(topic.topic_id)
    } else {
        TopicKey::Name(topic.topic.0.to_string())
    }
}

fn response_topic_key(uses_topic_ids: bool, topic: &FetchableTopicResponse) -> TopicKey {
    if uses_topic_ids {
        TopicKey::Id(topic.topic_id)
    } else {
        TopicKey::Name(topic.topic.0.to_string())
    }
}

/// One shard's fetch sessions.
pub struct FetchSessionCache {
    sessions: HashMap<i32, FetchSession>,
    /// xorshift state for session ids: ids need not be secret, only unlikely to repeat.
    id_state: u64,
}

impl FetchSessionCache {
    pub fn new(seed: u64) -> FetchSessionCache {
        FetchSessionCache {
            sessions: HashMap::new(),
            id_state: seed | 1,
        }
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Applies the request's session fields. For an incremental fetch the request's partitions
    /// update the session, its forgotten partitions leave it, and `request.topics` is replaced
    /// by every partition of the session. `Err` is the response's top-level error.
    pub fn open(
        &mut self,
        request: &mut FetchRequest,
        uses_topic_ids: bool,
        follower: bool,
        limits: SessionLimits,
        now: Instant,
    ) -> Result<Opened, ResponseError> {
        match request.session_epoch {
            FINAL_EPOCH => {
                self.sessions.remove(&request.session_id);
                Ok(Opened::Sessionless)
            }
            INITIAL_EPOCH => {
                self.sessions.remove(&request.session_id);
                Ok(Opened::New {
                    uses_topic_ids,
                    follower,
                })
            }
            epoch => {
                let id = request.session_id;
                let Some(session) = self.sessions.get_mut(&id) else {
                    return Err(ResponseError::FetchSessionIdNotFound);
                };
                if epoch != session.next_epoch {
                    return Err(ResponseError::InvalidFetchSessionEpoch);
                }
                if session.uses_topic_ids != uses_topic_ids {
                    return Err(ResponseError::FetchSessionTopicIdError);
                }
                for topic in &request.topics {
                    for partition in &topic.partitions {
                        session.upsert(topic, partition);
                    }
                }
                for forgotten in &request.forgotten_topics_data {
                    let key = if uses_topic_ids {
                        TopicKey::Id(forgotten.topic_id)
                    } else {
                        TopicKey::Name(forgotten.topic.0.to_string())
                    };
                    for &partition in &forgotten.partitions {
                        session.remove(&(key.clone(), partition));
                    }
                }
                if session.partitions.len() > limits.max_partitions {
                    // The client opens a new session with a full fetch, which is then
                    // answered without one.
                    self.sessions.remove(&id);
                    return Err(ResponseError::FetchSessionIdNotFound);
                }
                session.next_epoch = next_epoch(epoch);
                session.last_used = now;
                request.topics = session.fetch_topics();
                Ok(Opened::Incremental(id))
            }
        }
    }

    /// After the partitions were read: opens the session of a full fetch (if there is room) or
    /// decides which partitions an incremental response carries. `responses` is in the order
    /// of `request_topics` (the request's topics after `open`); `has_records(topic, partition)`
    /// tells by slot whether records go out. Returns the session id for the response and, for
    /// an incremental fetch, the slots to keep.
    pub fn finish(
        &mut self,
        opened: Opened,
        request_topics: &[FetchTopic],
        responses: &[FetchableTopicResponse],
        has_records: impl Fn(usize, usize) -> bool,
        limits: SessionLimits,
        now: Instant,
    ) -> (i32, Option<Vec<Vec<bool>>>) {
        match opened {
            Opened::Sessionless => (0, None),
            Opened::New {
                uses_topic_ids,
                follower,
            } => {
                let partition_count: usize =
                    request_topics.iter().map(|t| t.partitions.len()).sum();
                if partition_count > limits.max_partitions || !self.make_room(follower, limits, now)
                {
                    return (0, None);
                }
                let mut session = FetchSession::new(uses_topic_ids, follower, now);
                for (topic_slot, topic) in request_topics.iter().enumerate() {
                    for (partition_slot, partition) in topic.partitions.iter().enumerate() {
                        session.upsert(topic, partition);
                        let key = (topic_key(uses_topic_ids, topic), partition.partition);
                        let response = &responses[topic_slot].partitions[partition_slot];
                        let cached = session.partitions.get_mut(&key).expect("upserted");
                        cached.reported = reported(response);
                        if has_records(topic_slot, partition_slot) {
                            session.move_to_back(&key);
                        }
                    }
                }
                let id = self.new_id();
                self.sessions.insert(id, session);
                (id, None)
            }
            Opened::Incremental(id) => {
                let Some(session) = self.sessions.get_mut(&id) else {
                    // Evicted while the fetch waited: the client learns it next time.
                    return (id, None);
                };
                let mut keep = Vec::with_capacity(responses.len());
                for (topic_slot, topic) in responses.iter().enumerate() {
                    let topic_key = response_topic_key(session.uses_topic_ids, topic);
                    let mut keep_topic = Vec::with_capacity(topic.partitions.len());
                    for (partition_slot, response) in topic.partitions.iter().enumerate() {
                        let key = (topic_key.clone(), response.partition_index);
                        let records = has_records(topic_slot, partition_slot);
                        let now_reported = reported(response);
                        let must_respond = match session.partitions.get_mut(&key) {
                            Some(cached) => {
                                let changed = cached.reported != now_reported;
                                cached.reported = now_reported;
                                records || changed || now_reported.is_none()
                            }
                            None => true,
                        };
                        if records {
                            session.move_to_back(&key);
                        }
                        keep_topic.push(must_respond);
                    }
                    keep.push(keep_topic);
                }
                (id, Some(keep))
            }
        }
    }

    /// Forgets what the session's client was told, so the next response carries every
    /// partition (after a response was replaced by a throttled, empty one).
    pub fn resend_all(&mut self, id: i32) {
        if let Some(session) = self.sessions.get_mut(&id) {
            for cached in session.partitions.values_mut() {
                cached.reported = None;
            }
        }
    }

    /// True if a new session fits: a free slot, or one taken from the least recently used
    /// session a follower may take (any consumer's) or that has been idle `eviction_ms`.
    fn make_room(&mut self, follower: bool, limits: SessionLimits, now: Instant) -> bool {
        if limits.slots == 0 {
            return false;
        }
        if self.sessions.len() < limits.slots {
            return true;
        }
        let idle_bound = Duration::from_millis(limits.eviction_ms);
        let victim = self
            .sessions
            .iter()
            .filter(|(_, session)| {
                (follower && !session.follower)
                    || now.saturating_duration_since(session.last_used) >= idle_bound
            })
            .min_by_key(|(_, session)| session.last_used)
            .map(|(&id, _)| id);
        match victim {
            Some(id) => {
                self.sessions.remove(&id);
                true
            }
            None => false,
        }
    }

    fn new_id(&mut self) -> i32 {
        loop {
            self.id_state ^= self.id_state << 13;
            self.id_state ^= self.id_state >> 7;
            self.id_state ^= self.id_state << 17;
            let id = (self.id_state >> 33) as i32 & i32::MAX;
            if id != 0 && !self.sessions.contains_key(&id) {
                return id;
            }
        }
    }
}

/// What a response tells of a partition; `None` for an error (Kafka then resends the
/// partition once the error is gone).
fn reported(
    response: &kafka_protocol::messages::fetch_response::PartitionData,
) -> Option<Reported> {
    (response.error_code == 0).then_some(Reported {
        high_watermark: response.high_watermark,
        last_stable_offset: response.last_stable_offset,
        log_start_offset: response.log_start_offset,
    })
}

/// Epochs run 1, 2, ..., i32::MAX, then 1 again (0 and -1 have their own meaning).
fn next_epoch(epoch: i32) -> i32 {
    if epoch == i32::MAX {
        1
    } else {
        epoch + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_request::ForgottenTopic;
    use kafka_protocol::messages::fetch_response::PartitionData;
    use kafka_protocol::protocol::StrBytes;

    const CONSUMER: Opened = Opened::New {
        uses_topic_ids: false,
        follower: false,
    };
    const FOLLOWER: Opened = Opened::New {
        uses_topic_ids: false,
        follower: true,
    };

    const LIMITS: SessionLimits = SessionLimits {
        slots: 2,
        max_partitions: 4,
        eviction_ms: 1000,
    };

    fn name(topic: &str) -> TopicName {
        TopicName(StrBytes::from_string(topic.to_string()))
    }

    fn fetch_topic(topic: &str, partitions: &[(i32, i64)]) -> FetchTopic {
        FetchTopic::default()
            .with_topic(name(topic))
            .with_partitions(
                partitions
                    .iter()
                    .map(|&(partition, offset)| {
                        FetchPartition::default()
                            .with_partition(partition)
                            .with_fetch_offset(offset)
                    })
                    .collect(),
            )
    }

    fn request(id: i32, epoch: i32, topics: Vec<FetchTopic>) -> FetchRequest {
        FetchRequest::default()
            .with_session_id(id)
            .with_session_epoch(epoch)
            .with_topics(topics)
    }

    /// A response to `topics` where every partition's high watermark is `hw`.
    fn responses(topics: &[FetchTopic], hw: i64) -> Vec<FetchableTopicResponse> {
        topics
            .iter()
            .map(|topic| {
                FetchableTopicResponse::default()
                    .with_topic(topic.topic.clone())
                    .with_partitions(
                        topic
                            .partitions
                            .iter()
                            .map(|p| {
                                PartitionData::default()
                                    .with_partition_index(p.partition)
                                    .with_high_watermark(hw)
                            })
                            .collect(),
                    )
            })
            .collect()
    }

    use crate::test_support::listed_fetch_partitions as listed;

    /// Opens a session over a and b (two partitions each) and returns its id.
    fn opened(cache: &mut FetchSessionCache, now: Instant) -> i32 {
        let mut full = request(
            0,
            INITIAL_EPOCH,
            vec![
                fetch_topic("a", &[(0, 0), (1, 0)]),
                fetch_topic("b", &[(0, 0), (1, 0)]),
            ],
        );
        assert_eq!(
            cache.open(&mut full, false, false, LIMITS, now),
            Ok(CONSUMER)
        );
        let answered = responses(&full.topics, 10);
        let (id, keep) = cache.finish(CONSUMER, &full.topics, &answered, |_, _| false, LIMITS, now);
        assert!(id > 0);
        assert!(keep.is_none());
        id
    }

    #[test]
    fn incremental_fetch_covers_the_session_and_answers_only_changes() {
        let now = Instant::now();
        let mut cache = FetchSessionCache::new(7);
        let id = opened(&mut cache, now);

        // Epoch 1 names only a/1 with a new offset and forgets b/0.
        let mut next = request(id, 1, vec![fetch_topic("a", &[(1, 5)])]);
        next.forgotten_topics_data = vec![ForgottenTopic::default()
            .with_topic(name("b"))
            .with_partitions(vec![0])];
        assert_eq!(
            cache.open(&mut next, false, false, LIMITS, now),
            Ok(Opened::Incremental(id))
        );
        assert_eq!(
            listed(&next.topics),
            vec![("a".into(), 0, 0), ("a".into(), 1, 5), ("b".into(), 1, 0)]
        );
        // Only a/1 has records; b/1's high watermark moved; a/0 has nothing new.
        let mut answered = responses(&next.topics, 10);
        answered[1].partitions[0].high_watermark = 11;
        let (same_id, keep) = cache.finish(
            Opened::Incremental(id),
            &next.topics,
            &answered,
            |topic, partition| (topic, partition) == (0, 1),
            LIMITS,
            now,
        );
        assert_eq!(same_id, id);
        assert_eq!(keep, Some(vec![vec![false, true], vec![true]]));

        // a/1 returned records: it moved behind the others.
        let mut again = request(id, 2, vec![]);
        assert_eq!(
            cache.open(&mut again, false, false, LIMITS, now),
            Ok(Opened::Incremental(id))
        );
        assert_eq!(
            listed(&again.topics),
            vec![("a".into(), 0, 0), ("b".into(), 1, 0), ("a".into(), 1, 5)]
        );
        assert_eq!(
            again.topics.len(),
            3,
            "a topic appears once per consecutive run"
        );
    }

    #[test]
    fn wrong_epoch_unknown_id_and_topic_id_mismatch_are_refused() {
        let now = Instant::now();
        let mut cache = FetchSessionCache::new(7);
        let id = opened(&mut cache, now);
        let mut stale = request(id, 5, vec![]);
        assert_eq!(
            cache.open(&mut stale, false, false, LIMITS, now),
            Err(ResponseError::InvalidFetchSessionEpoch)
        );
        let mut unknown = request(id ^ 1, 1, vec![]);
        assert_eq!(
            cache.open(&mut unknown, false, false, LIMITS, now),
            Err(ResponseError::FetchSessionIdNotFound)
        );
        let mut by_id = request(id, 1, vec![]);
        assert_eq!(
            cache.open(&mut by_id, true, false, LIMITS, now),
            Err(ResponseError::FetchSessionTopicIdError)
        );
        // The final epoch closes the session and fetches without one.
        let mut last = request(id, FINAL_EPOCH, vec![]);
        assert_eq!(
            cache.open(&mut last, false, false, LIMITS, now),
            Ok(Opened::Sessionless)
        );
        assert!(cache.is_empty());
    }

    #[test]
    fn errors_are_resent_and_throttled_responses_resend_everything() {
        let now = Instant::now();
        let mut cache = FetchSessionCache::new(7);
        let id = opened(&mut cache, now);
        let mut next = request(id, 1, vec![]);
        cache.open(&mut next, false, false, LIMITS, now).unwrap();
        let mut answered = responses(&next.topics, 10);
        answered[0].partitions[0].error_code = ResponseError::NotLeaderOrFollower.code();
        let (_, keep) = cache.finish(
            Opened::Incremental(id),
            &next.topics,
            &answered,
            |_, _| false,
            LIMITS,
            now,
        );
        assert_eq!(keep, Some(vec![vec![true, false], vec![false, false]]));
        // The error is gone: a/0 is sent again though its high watermark is the old one.
        let mut after = request(id, 2, vec![]);
        cache.open(&mut after, false, false, LIMITS, now).unwrap();
        let (_, keep) = cache.finish(
            Opened::Incremental(id),
            &after.topics,
            &responses(&after.topics, 10),
            |_, _| false,
            LIMITS,
            now,
        );
        assert_eq!(keep, Some(vec![vec![true, false], vec![false, false]]));
        cache.resend_all(id);
        let mut resent = request(id, 3, vec![]);
        cache.open(&mut resent, false, false, LIMITS, now).unwrap();
        let (_, keep) = cache.finish(
            Opened::Incremental(id),
            &resent.topics,
            &responses(&resent.topics, 10),
            |_, _| false,
            LIMITS,
            now,
        );
        assert_eq!(keep, Some(vec![vec![true, true], vec![true, true]]));
    }

    #[test]
    fn the_cache_is_bounded_and_evicts_idle_or_consumer_sessions() {
        let start = Instant::now();
        let mut cache = FetchSessionCache::new(7);
        let first = opened(&mut cache, start);
        let second = opened(&mut cache, start + Duration::from_millis(10));
        assert_ne!(first, second);
        // Full: a consumer gets no session while both are fresh ...
        let mut third = request(0, INITIAL_EPOCH, vec![fetch_topic("c", &[(0, 0)])]);
        cache.open(&mut third, false, false, LIMITS, start).unwrap();
        let answered = responses(&third.topics, 1);
        let (id, _) = cache.finish(
            CONSUMER,
            &third.topics,
            &answered,
            |_, _| false,
            LIMITS,
            start,
        );
        assert_eq!(id, 0);
        // ... a follower takes the least recently used consumer session ...
        let (follower, _) = cache.finish(
            FOLLOWER,
            &third.topics,
            &answered,
            |_, _| false,
            LIMITS,
            start,
        );
        assert!(follower > 0);
        let mut gone = request(first, 1, vec![]);
        assert_eq!(
            cache.open(&mut gone, false, false, LIMITS, start),
            Err(ResponseError::FetchSessionIdNotFound)
        );
        // ... and a consumer takes one idle for eviction_ms.
        let later = start + Duration::from_millis(LIMITS.eviction_ms + 20);
        let (consumer, _) = cache.finish(
            CONSUMER,
            &third.topics,
            &answered,
            |_, _| false,
            LIMITS,
            later,
        );
        assert!(consumer > 0);
        assert_eq!(cache.len(), 2);

        // A session may not grow past max_partitions.
        let mut grow = request(
            consumer,
            1,
            vec![fetch_topic("d", &[(0, 0), (1, 0), (2, 0), (3, 0)])],
        );
        assert_eq!(
            cache.open(&mut grow, false, false, LIMITS, later),
            Err(ResponseError::FetchSessionIdNotFound)
        );
    }

    #[test]
    fn epochs_wrap_past_zero() {
        assert_eq!(next_epoch(1), 2);
        assert_eq!(next_epoch(i32::MAX), 1);
    }
}
