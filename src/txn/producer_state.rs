//! Producer state of one partition, on the partition's owner shard: idempotence and open
//! transactions.
//!
//! For every producer id the partition remembers the epoch and the last
//! [`BATCHES_RETAINED_PER_PRODUCER`] batches (sequence range and offsets), as Kafka does, so a
//! retried batch is answered with its original offset instead of being written twice, and a gap
//! in sequences is refused with OUT_OF_ORDER_SEQUENCE_NUMBER. Clients cap in-flight requests per
//! connection at the same number for this reason.
//!
//! Transactions: the first transactional batch of a producer opens its transaction at that
//! batch's offset; the COMMIT or ABORT marker closes it. The earliest open transaction holds
//! back the last stable offset (read_committed consumers read below it), and every aborted
//! transaction is kept as an [`AbortedTxn`] (Kafka's transaction index) so fetches can tell
//! read_committed consumers which records to drop.
//!
//! Persistence: [`ProducerStateTable::encode_snapshot`] captures the table at an offset (at each
//! log checkpoint); start-up loads the newest snapshot the log still covers and replays the
//! batches after it, so deduplication, open transactions and the aborted index survive
//! restarts whatever the log size.

use kafka_protocol::error::ResponseError;
use std::collections::{BTreeSet, HashMap, VecDeque};

use crate::log::{LogError, PartitionLog};
pub use crate::protocol::record_batch::control_marker_type;
use crate::protocol::record_batch::RecordBatchHeader;

/// Kafka's `NUM_BATCHES_TO_RETAIN`.
pub const BATCHES_RETAINED_PER_PRODUCER: usize = 5;

/// Bound on producers remembered per partition; the least recently used is forgotten past it
/// (it would then get its sequence accepted afresh, as after producer-id expiry in Kafka).
pub const MAX_PRODUCERS_PER_PARTITION: usize = 10_000;

/// The producer fields of the batches in one produce request for one partition.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProducerBatch {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub first_sequence: i32,
    pub record_count: u32,
    /// Part of a transaction (attribute bit 4).
    pub transactional: bool,
}

impl ProducerBatch {
    pub fn last_sequence(&self) -> i32 {
        let span = i64::from(self.record_count) - 1;
        // Sequences wrap from i32::MAX to 0.
        ((i64::from(self.first_sequence) + span) % (i64::from(i32::MAX) + 1)) as i32
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct RetainedBatch {
    first_sequence: i32,
    last_sequence: i32,
    base_offset: i64,
}

#[derive(Debug, Default, Clone, PartialEq)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<RetainedBatch>,
    last_used_tick: u64,
    /// Wall clock of the producer's last batch or marker (`producer.id.expiration.ms`).
    last_used_ms: i64,
    /// Coordinator epoch of the last marker (fences markers of a deposed coordinator).
    coordinator_epoch: i32,
}

/// One aborted transaction on this partition: Kafka's transaction-index entry. Records of
/// `producer_id` in `first_offset..=last_offset` (the ABORT marker's offset) are aborted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
    /// The partition's last stable offset once this transaction ended.
    pub last_stable_offset: i64,
}

/// A producer as DescribeProducers reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerSummary {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub last_sequence: i32,
    pub last_timestamp_ms: i64,
    pub coordinator_epoch: i32,
    /// First offset of its open transaction, or -1.
    pub current_txn_start_offset: i64,
}

/// What to do with a batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SequenceCheck {
    /// New and in order: append it, then [`ProducerStateTable::record`] its offset.
    Append,
    /// Already written at this base offset: answer success without writing.
    Duplicate {
        base_offset: i64,
    },
    Reject(ResponseError),
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProducerStateTable {
    producers: HashMap<i64, ProducerEntry>,
    tick: u64,
    /// Open transactions: producer id → first offset, and the same set ordered by first
    /// offset (its first element holds back the last stable offset).
    open_txns: HashMap<i64, i64>,
    open_by_offset: BTreeSet<(i64, i64)>,
    /// Aborted transactions in marker order (so ordered by `last_offset`).
    aborted: VecDeque<AbortedTxn>,
    /// Bumped on every change a snapshot would capture (unchanged tables are not rewritten).
    generation: u64,
    /// Generation of the last snapshot written.
    snapshotted_generation: u64,
}

fn next_sequence(sequence: i32) -> i32 {
    if sequence == i32::MAX {
        0
    } else {
        sequence + 1
    }
}

impl ProducerStateTable {
    pub fn producer_count(&self) -> usize {
        self.producers.len()
    }

    /// Checks a batch against the producer's state; changes nothing.
    pub fn check(&self, batch: &ProducerBatch) -> SequenceCheck {
        if batch.first_sequence < 0 {
            return SequenceCheck::Reject(ResponseError::OutOfOrderSequenceNumber);
        }
        let Some(entry) = self.producers.get(&batch.producer_id) else {
            // Unknown producer (new, or its state was forgotten): accept from any sequence.
            return SequenceCheck::Append;
        };
        if batch.producer_epoch < entry.epoch {
            return SequenceCheck::Reject(ResponseError::InvalidProducerEpoch);
        }
        if batch.producer_epoch > entry.epoch {
            // A bumped epoch starts its sequences again at 0.
            return if batch.first_sequence == 0 {
                SequenceCheck::Append
            } else {
                SequenceCheck::Reject(ResponseError::OutOfOrderSequenceNumber)
            };
        }
        if let Some(retained) = entry.batches.iter().find(|retained| {
            retained.first_sequence == batch.first_sequence
                && retained.last_sequence == batch.last_sequence()
        }) {
            return SequenceCheck::Duplicate {
                base_offset: retained.base_offset,
            };
        }
        match entry.batches.back() {
            Some(last) if batch.first_sequence != next_sequence(last.last_sequence) => {
                SequenceCheck::Reject(ResponseError::OutOfOrderSequenceNumber)
            }
            _ => SequenceCheck::Append,
        }
    }

    /// Records a stored batch (rebuilds, replicated batches): data batches by their header,
    /// control batches as the end of their producer's transaction. Batches without a producer
    /// id are ignored.
    pub fn record_stored_batch(&mut self, batch: &[u8], header: &RecordBatchHeader, now_ms: i64) {
        if header.producer_id < 0 || header.last_offset_delta < 0 {
            return;
        }
        if header.is_control() {
            if let Some(commit) = control_marker_type(batch, header) {
                let coordinator_epoch = control_coordinator_epoch(batch).unwrap_or(-1);
                self.apply_marker(
                    header.producer_id,
                    header.producer_epoch,
                    commit,
                    coordinator_epoch,
                    header.base_offset,
                    now_ms,
                );
            }
            return;
        }
        let batch = ProducerBatch {
            producer_id: header.producer_id,
            producer_epoch: header.producer_epoch,
            first_sequence: header.base_sequence,
            record_count: (header.last_offset_delta as u32).saturating_add(1),
            transactional: header.is_transactional(),
        };
        self.record(&batch, header.base_offset, now_ms);
    }

    /// Remembers an appended batch at `base_offset`; a transactional batch opens its producer's
    /// transaction if none is open.
    pub fn record(&mut self, batch: &ProducerBatch, base_offset: i64, now_ms: i64) {
        self.tick += 1;
        self.generation += 1;
        if !self.producers.contains_key(&batch.producer_id)
            && self.producers.len() >= MAX_PRODUCERS_PER_PARTITION
        {
            self.forget_least_recently_used();
        }
        let entry = self.producers.entry(batch.producer_id).or_default();
        if batch.producer_epoch != entry.epoch {
            entry.epoch = batch.producer_epoch;
            entry.batches.clear();
        }
        entry.last_used_tick = self.tick;
        entry.last_used_ms = now_ms;
        if entry.batches.len() == BATCHES_RETAINED_PER_PRODUCER {
            entry.batches.pop_front();
        }
        entry.batches.push_back(RetainedBatch {
            first_sequence: batch.first_sequence,
            last_sequence: batch.last_sequence(),
            base_offset,
        });
        assert!(entry.batches.len() <= BATCHES_RETAINED_PER_PRODUCER);
        if batch.transactional && !self.open_txns.contains_key(&batch.producer_id) {
            self.open_txns.insert(batch.producer_id, base_offset);
            self.open_by_offset.insert((base_offset, batch.producer_id));
        }
        assert_eq!(self.open_txns.len(), self.open_by_offset.len());
    }

    /// First offset of the producer's open transaction on this partition.
    pub fn open_transaction(&self, producer_id: i64) -> Option<i64> {
        self.open_txns.get(&producer_id).copied()
    }

    /// First offset of the earliest open transaction: the last stable offset cannot pass it.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.open_by_offset.first().map(|&(offset, _)| offset)
    }

    /// Number of open transactions.
    pub fn open_transaction_count(&self) -> usize {
        self.open_txns.len()
    }

    /// Checks a marker against the producer's state (changes nothing): a marker of an older
    /// producer epoch, or from a coordinator older than the last one, is refused.
    pub fn check_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        coordinator_epoch: i32,
    ) -> Result<(), ResponseError> {
        let Some(entry) = self.producers.get(&producer_id) else {
            return Ok(());
        };
        if producer_epoch < entry.epoch {
            return Err(ResponseError::InvalidProducerEpoch);
        }
        if coordinator_epoch < entry.coordinator_epoch {
            return Err(ResponseError::TransactionCoordinatorFenced);
        }
        Ok(())
    }

    /// Ends the producer's transaction with the marker at `marker_offset`. An aborted
    /// transaction that had records here joins the aborted index (and is returned). A marker
    /// with a newer epoch fences the producer's older epochs from now on.
    pub fn apply_marker(
        &mut self,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
        marker_offset: i64,
        now_ms: i64,
    ) -> Option<AbortedTxn> {
        self.tick += 1;
        self.generation += 1;
        if !self.producers.contains_key(&producer_id)
            && self.producers.len() >= MAX_PRODUCERS_PER_PARTITION
        {
            self.forget_least_recently_used();
        }
        let entry = self.producers.entry(producer_id).or_default();
        if producer_epoch != entry.epoch {
            entry.epoch = producer_epoch;
            entry.batches.clear();
        }
        entry.coordinator_epoch = entry.coordinator_epoch.max(coordinator_epoch);
        entry.last_used_tick = self.tick;
        entry.last_used_ms = now_ms;
        let first_offset = self.open_txns.remove(&producer_id)?;
        self.open_by_offset.remove(&(first_offset, producer_id));
        if commit {
            return None;
        }
        let aborted = AbortedTxn {
            producer_id,
            first_offset,
            last_offset: marker_offset,
            last_stable_offset: self.first_unstable_offset().unwrap_or(marker_offset + 1),
        };
        assert!(
            first_offset <= marker_offset,
            "a transaction ends after it starts"
        );
        if let Some(last) = self.aborted.back() {
            assert!(
                last.last_offset < marker_offset,
                "markers are recorded in log order"
            );
        }
        self.aborted.push_back(aborted);
        Some(aborted)
    }

    /// Aborted transactions that may have records in `from_offset..upper_offset`, as
    /// (producer id, first offset): what a read_committed fetch returns.
    pub fn aborted_between(&self, from_offset: i64, upper_offset: i64) -> Vec<(i64, i64)> {
        let start = self
            .aborted
            .partition_point(|aborted| aborted.last_offset < from_offset);
        self.aborted
            .range(start..)
            .filter(|aborted| aborted.first_offset < upper_offset)
            .map(|aborted| (aborted.producer_id, aborted.first_offset))
            .collect()
    }

    /// What compaction must respect: the first unstable offset and the aborted index.
    pub fn compaction_view(&self) -> crate::log::TransactionView {
        crate::log::TransactionView {
            first_unstable_offset: self.first_unstable_offset(),
            aborted: self
                .aborted
                .iter()
                .map(|aborted| crate::log::AbortedRange {
                    producer_id: aborted.producer_id,
                    first_offset: aborted.first_offset,
                    marker_offset: aborted.last_offset,
                })
                .collect(),
        }
    }

    /// Number of aborted transactions remembered.
    pub fn aborted_count(&self) -> usize {
        self.aborted.len()
    }

    /// Forgets aborted transactions whose marker is below `offset`: below the log start
    /// (retention removed their records and marker), or below where compaction removed their
    /// records (nothing of theirs is left for a read_committed consumer to drop).
    pub fn forget_aborted_below(&mut self, offset: i64) {
        while self
            .aborted
            .front()
            .is_some_and(|aborted| aborted.last_offset < offset)
        {
            self.aborted.pop_front();
            self.generation += 1;
        }
    }

    /// Forgets producers idle for `expiration_ms` or longer that have no open transaction
    /// (Kafka's `producer.id.expiration.ms`); returns how many.
    pub fn expire_idle(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        let open = &self.open_txns;
        self.producers.retain(|producer_id, entry| {
            open.contains_key(producer_id)
                || now_ms.saturating_sub(entry.last_used_ms) < expiration_ms
        });
        let expired = before - self.producers.len();
        if expired > 0 {
            self.generation += 1;
        }
        expired
    }

    /// Every producer, for DescribeProducers.
    pub fn summaries(&self) -> Vec<ProducerSummary> {
        let mut summaries: Vec<ProducerSummary> = self
            .producers
            .iter()
            .map(|(&producer_id, entry)| ProducerSummary {
                producer_id,
                producer_epoch: entry.epoch,
                last_sequence: entry.batches.back().map_or(-1, |b| b.last_sequence),
                last_timestamp_ms: entry.last_used_ms,
                coordinator_epoch: entry.coordinator_epoch,
                current_txn_start_offset: self.open_txns.get(&producer_id).copied().unwrap_or(-1),
            })
            .collect();
        summaries.sort_by_key(|summary| summary.producer_id);
        summaries
    }

    /// Changes since creation; equal generations mean an equal table.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// True if the table changed since the last snapshot.
    pub fn needs_snapshot(&self) -> bool {
        self.generation != self.snapshotted_generation
    }

    /// A snapshot of `generation` was written.
    pub fn mark_snapshotted(&mut self, generation: u64) {
        self.snapshotted_generation = generation;
    }

    /// Rebuilds the table at start-up (or after a truncation): the newest snapshot at or below
    /// the log's end, then every batch after it. Without a usable snapshot, the batches of the
    /// log's most recent `tail_bytes` (a producer whose last batch lies before the tail is
    /// unknown, and its next batch is accepted from any sequence).
    pub async fn rebuild_from_log(log: &PartitionLog, tail_bytes: u64) -> Result<Self, LogError> {
        let end_offset = log.written_end_offset();
        let (mut table, from_offset) = match load_snapshot(log, end_offset).await {
            Some((table, offset)) => (table, offset.max(log.log_start_offset())),
            None => (
                ProducerStateTable::default(),
                log.offset_before_end(tail_bytes),
            ),
        };
        table.replay(log, from_offset, end_offset).await?;
        table.forget_aborted_below(log.log_start_offset());
        Ok(table)
    }

    /// Applies the stored batches in `from_offset..end_offset`.
    async fn replay(
        &mut self,
        log: &PartitionLog,
        from_offset: i64,
        end_offset: i64,
    ) -> Result<(), LogError> {
        const READ_SIZE_BYTES: usize = 1024 * 1024;
        let now_ms = crate::log::now_ms();
        let mut offset = from_offset;
        while offset < end_offset {
            let read = log.read(offset, READ_SIZE_BYTES, end_offset).await?;
            if read.chunks.is_empty() {
                break;
            }
            let before = offset;
            for chunk in &read.chunks {
                let mut position = 0usize;
                while position < chunk.len() {
                    let header = RecordBatchHeader::parse(&chunk[position..])
                        .map_err(|error| LogError::Corrupt(format!("stored batch: {error}")))?;
                    let size = header.total_size_bytes();
                    let batch = chunk.get(position..position + size).ok_or_else(|| {
                        LogError::Corrupt("stored batch overruns its read".to_string())
                    })?;
                    if header.base_offset >= offset {
                        self.record_stored_batch(batch, &header, now_ms);
                    }
                    offset = offset.max(header.last_offset() + 1);
                    position += size;
                }
            }
            if offset <= before {
                break;
            }
        }
        Ok(())
    }

    /// Undoes [`record`](Self::record) for a batch whose append failed, so a retry is written
    /// rather than answered as a duplicate of data that never reached the log.
    pub fn forget(&mut self, batch: &ProducerBatch) {
        if let Some(entry) = self.producers.get_mut(&batch.producer_id) {
            entry.batches.retain(|retained| {
                retained.first_sequence != batch.first_sequence
                    || retained.last_sequence != batch.last_sequence()
            });
        }
    }

    fn forget_least_recently_used(&mut self) {
        if let Some((&oldest, _)) = self
            .producers
            .iter()
            .min_by_key(|(_, entry)| entry.last_used_tick)
        {
            self.producers.remove(&oldest);
        }
    }
}

/// Coordinator epoch in a control record's value (version int16, coordinator epoch int32).
fn control_coordinator_epoch(batch: &[u8]) -> Option<i32> {
    let section = batch.get(crate::protocol::record_batch::RECORD_BATCH_HEADER_SIZE_BYTES..)?;
    let record = *crate::protocol::records::parse_records(section)
        .ok()?
        .first()?;
    let raw = record.raw;
    // The value is the record's last 6 bytes before the header count (one varint 0 byte).
    let value_end = raw.len().checked_sub(1)?;
    let value = raw.get(value_end.checked_sub(6)?..value_end)?;
    Some(i32::from_be_bytes([value[2], value[3], value[4], value[5]]))
}

/// Snapshot file names: `producer-state-<offset, 20 digits>.snapshot`.
const SNAPSHOT_PREFIX: &str = "producer-state-";
const SNAPSHOT_SUFFIX: &str = ".snapshot";
const SNAPSHOT_MAGIC: &[u8; 4] = b"RPST";
const SNAPSHOT_VERSION: u16 = 1;
/// Snapshots kept per partition: the newest may lie past what a crash leaves of the log, so
/// the one before it is kept as well.
const SNAPSHOTS_KEPT: usize = 2;

fn snapshot_name(offset: i64) -> String {
    format!("{SNAPSHOT_PREFIX}{offset:020}{SNAPSHOT_SUFFIX}")
}

fn snapshot_offset(name: &str) -> Option<i64> {
    name.strip_prefix(SNAPSHOT_PREFIX)?
        .strip_suffix(SNAPSHOT_SUFFIX)?
        .parse()
        .ok()
}

/// Reads big-endian fields off a snapshot, failing on a short buffer.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.buf.split_at_checked(N)?;
        self.buf = rest;
        head.try_into().ok()
    }
    fn i64(&mut self) -> Option<i64> {
        self.take::<8>().map(i64::from_be_bytes)
    }
    fn i32(&mut self) -> Option<i32> {
        self.take::<4>().map(i32::from_be_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take::<4>().map(u32::from_be_bytes)
    }
    fn i16(&mut self) -> Option<i16> {
        self.take::<2>().map(i16::from_be_bytes)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|b| b[0])
    }
}

impl ProducerStateTable {
    /// The table as a snapshot file's contents, valid for the log up to `offset` (every batch
    /// below it is reflected, none at or past it).
    pub fn encode_snapshot(&self, offset: i64) -> Vec<u8> {
        let mut body = Vec::with_capacity(64 + self.producers.len() * 96);
        body.extend_from_slice(&offset.to_be_bytes());
        let mut producers: Vec<(&i64, &ProducerEntry)> = self.producers.iter().collect();
        producers.sort_by_key(|(_, entry)| entry.last_used_tick);
        body.extend_from_slice(&(producers.len() as u32).to_be_bytes());
        for (producer_id, entry) in producers {
            body.extend_from_slice(&producer_id.to_be_bytes());
            body.extend_from_slice(&entry.epoch.to_be_bytes());
            body.extend_from_slice(&entry.coordinator_epoch.to_be_bytes());
            body.extend_from_slice(&entry.last_used_ms.to_be_bytes());
            body.push(entry.batches.len() as u8);
            for batch in &entry.batches {
                body.extend_from_slice(&batch.first_sequence.to_be_bytes());
                body.extend_from_slice(&batch.last_sequence.to_be_bytes());
                body.extend_from_slice(&batch.base_offset.to_be_bytes());
            }
        }
        body.extend_from_slice(&(self.open_by_offset.len() as u32).to_be_bytes());
        for &(first_offset, producer_id) in &self.open_by_offset {
            body.extend_from_slice(&producer_id.to_be_bytes());
            body.extend_from_slice(&first_offset.to_be_bytes());
        }
        body.extend_from_slice(&(self.aborted.len() as u32).to_be_bytes());
        for aborted in &self.aborted {
            for field in [
                aborted.producer_id,
                aborted.first_offset,
                aborted.last_offset,
                aborted.last_stable_offset,
            ] {
                body.extend_from_slice(&field.to_be_bytes());
            }
        }
        let mut out = Vec::with_capacity(body.len() + 10);
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Parses a snapshot; `None` if it is damaged or of another version.
    pub fn decode_snapshot(contents: &[u8]) -> Option<(ProducerStateTable, i64)> {
        let body = contents.strip_prefix(SNAPSHOT_MAGIC.as_slice())?;
        let (version, body) = body.split_at_checked(2)?;
        if u16::from_be_bytes([version[0], version[1]]) != SNAPSHOT_VERSION {
            return None;
        }
        let (crc, body) = body.split_at_checked(4)?;
        if u32::from_be_bytes(crc.try_into().ok()?) != crc32c::crc32c(body) {
            return None;
        }
        let mut reader = Reader { buf: body };
        let offset = reader.i64()?;
        let mut table = ProducerStateTable::default();
        let producer_count = reader.u32()? as usize;
        if producer_count > MAX_PRODUCERS_PER_PARTITION {
            return None;
        }
        for _ in 0..producer_count {
            let producer_id = reader.i64()?;
            let mut entry = ProducerEntry {
                epoch: reader.i16()?,
                coordinator_epoch: reader.i32()?,
                last_used_ms: reader.i64()?,
                ..ProducerEntry::default()
            };
            let batch_count = reader.u8()? as usize;
            if batch_count > BATCHES_RETAINED_PER_PRODUCER {
                return None;
            }
            for _ in 0..batch_count {
                entry.batches.push_back(RetainedBatch {
                    first_sequence: reader.i32()?,
                    last_sequence: reader.i32()?,
                    base_offset: reader.i64()?,
                });
            }
            table.tick += 1;
            entry.last_used_tick = table.tick;
            table.producers.insert(producer_id, entry);
        }
        let open_count = reader.u32()? as usize;
        for _ in 0..open_count {
            let producer_id = reader.i64()?;
            let first_offset = reader.i64()?;
            table.open_txns.insert(producer_id, first_offset);
            table.open_by_offset.insert((first_offset, producer_id));
        }
        let aborted_count = reader.u32()? as usize;
        for _ in 0..aborted_count {
            table.aborted.push_back(AbortedTxn {
                producer_id: reader.i64()?,
                first_offset: reader.i64()?,
                last_offset: reader.i64()?,
                last_stable_offset: reader.i64()?,
            });
        }
        if !reader.buf.is_empty() || table.open_txns.len() != table.open_by_offset.len() {
            return None;
        }
        Some((table, offset))
    }

    /// Writes a snapshot (from [`encode_snapshot`](Self::encode_snapshot)) at `offset` and
    /// removes snapshots past the newest [`SNAPSHOTS_KEPT`].
    pub async fn write_snapshot(
        log: &PartitionLog,
        contents: Vec<u8>,
        offset: i64,
    ) -> Result<(), LogError> {
        log.write_state_file(&snapshot_name(offset), contents)
            .await?;
        let names = log.list_state_files(SNAPSHOT_PREFIX).await?;
        let mut snapshots: Vec<(i64, String)> = names
            .into_iter()
            .filter_map(|name| Some((snapshot_offset(&name)?, name)))
            .collect();
        snapshots.sort();
        let excess = snapshots.len().saturating_sub(SNAPSHOTS_KEPT);
        let stale = snapshots.drain(..excess).map(|(_, name)| name).collect();
        log.remove_state_files(stale).await?;
        Ok(())
    }
}

/// The newest readable snapshot at or below `end_offset`; snapshots past it (the log was cut
/// back: they describe batches that are gone) are removed.
async fn load_snapshot(log: &PartitionLog, end_offset: i64) -> Option<(ProducerStateTable, i64)> {
    let names = match log.list_state_files(SNAPSHOT_PREFIX).await {
        Ok(names) => names,
        Err(error) => {
            tracing::warn!(dir = %log.dir().display(), "cannot list producer snapshots: {error}");
            return None;
        }
    };
    let mut snapshots: Vec<(i64, String)> = names
        .into_iter()
        .filter_map(|name| Some((snapshot_offset(&name)?, name)))
        .collect();
    snapshots.sort();
    let beyond: Vec<String> = snapshots
        .iter()
        .filter(|(offset, _)| *offset > end_offset)
        .map(|(_, name)| name.clone())
        .collect();
    if !beyond.is_empty() {
        if let Err(error) = log.remove_state_files(beyond).await {
            tracing::warn!(dir = %log.dir().display(), "cannot remove producer snapshots: {error}");
        }
    }
    for (offset, name) in snapshots.into_iter().rev() {
        if offset > end_offset {
            continue;
        }
        match log.read_state_file(&name).await {
            Ok(Some(contents)) => match ProducerStateTable::decode_snapshot(&contents) {
                Some((table, snapshot_offset)) if snapshot_offset == offset => {
                    return Some((table, offset))
                }
                _ => {
                    tracing::warn!(dir = %log.dir().display(), name, "ignoring a damaged producer snapshot")
                }
            },
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(dir = %log.dir().display(), name, "cannot read producer snapshot: {error}")
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(producer_id: i64, epoch: i16, first_sequence: i32, count: u32) -> ProducerBatch {
        ProducerBatch {
            producer_id,
            producer_epoch: epoch,
            first_sequence,
            record_count: count,
            transactional: false,
        }
    }

    #[test]
    fn in_order_batches_append_and_retries_are_duplicates() {
        let mut table = ProducerStateTable::default();
        let first = batch(7, 0, 0, 10);
        assert_eq!(table.check(&first), SequenceCheck::Append);
        table.record(&first, 100, 0);
        let second = batch(7, 0, 10, 5);
        assert_eq!(table.check(&second), SequenceCheck::Append);
        table.record(&second, 110, 0);
        assert_eq!(
            table.check(&first),
            SequenceCheck::Duplicate { base_offset: 100 }
        );
        assert_eq!(
            table.check(&batch(7, 0, 20, 1)),
            SequenceCheck::Reject(ResponseError::OutOfOrderSequenceNumber)
        );
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut table = ProducerStateTable::default();
        for i in 0..6 {
            let b = batch(1, 0, i, 1);
            assert_eq!(table.check(&b), SequenceCheck::Append);
            table.record(&b, i64::from(i), 0);
        }
        // The first batch fell out of the window: it is neither a duplicate nor in order.
        assert_eq!(
            table.check(&batch(1, 0, 0, 1)),
            SequenceCheck::Reject(ResponseError::OutOfOrderSequenceNumber)
        );
        assert_eq!(
            table.check(&batch(1, 0, 1, 1)),
            SequenceCheck::Duplicate { base_offset: 1 }
        );
    }

    #[test]
    fn epochs_fence_and_restart_sequences() {
        let mut table = ProducerStateTable::default();
        table.record(&batch(3, 2, 0, 4), 0, 0);
        assert_eq!(
            table.check(&batch(3, 1, 4, 1)),
            SequenceCheck::Reject(ResponseError::InvalidProducerEpoch)
        );
        assert_eq!(
            table.check(&batch(3, 3, 5, 1)),
            SequenceCheck::Reject(ResponseError::OutOfOrderSequenceNumber)
        );
        let bumped = batch(3, 3, 0, 1);
        assert_eq!(table.check(&bumped), SequenceCheck::Append);
        table.record(&bumped, 4, 0);
        assert_eq!(table.check(&batch(3, 3, 1, 1)), SequenceCheck::Append);
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        let mut table = ProducerStateTable::default();
        let near_end = batch(9, 0, i32::MAX - 1, 2);
        assert_eq!(near_end.last_sequence(), i32::MAX);
        table.record(&near_end, 0, 0);
        assert_eq!(table.check(&batch(9, 0, 0, 3)), SequenceCheck::Append);
        assert_eq!(batch(9, 0, i32::MAX, 3).last_sequence(), 1);
    }

    #[test]
    fn a_failed_append_is_forgotten() {
        let mut table = ProducerStateTable::default();
        let first = batch(4, 0, 0, 2);
        table.record(&first, 0, 0);
        let failed = batch(4, 0, 2, 2);
        table.record(&failed, 2, 0);
        table.forget(&failed);
        assert_eq!(table.check(&failed), SequenceCheck::Append);
    }

    #[test]
    fn producer_count_is_bounded() {
        let mut table = ProducerStateTable::default();
        for id in 0..(MAX_PRODUCERS_PER_PARTITION as i64 + 10) {
            table.record(&batch(id, 0, 0, 1), id, 0);
        }
        assert_eq!(table.producer_count(), MAX_PRODUCERS_PER_PARTITION);
    }

    fn txn_batch(producer_id: i64, epoch: i16, first_sequence: i32, count: u32) -> ProducerBatch {
        ProducerBatch {
            transactional: true,
            ..batch(producer_id, epoch, first_sequence, count)
        }
    }

    #[test]
    fn open_transactions_hold_back_the_last_stable_offset_until_their_marker() {
        let mut table = ProducerStateTable::default();
        table.record(&batch(1, 0, 0, 5), 0, 0);
        assert_eq!(table.first_unstable_offset(), None);
        table.record(&txn_batch(2, 0, 0, 3), 5, 0);
        table.record(&txn_batch(3, 0, 0, 2), 8, 0);
        table.record(&txn_batch(2, 0, 3, 1), 10, 0);
        assert_eq!(table.open_transaction(2), Some(5));
        assert_eq!(table.first_unstable_offset(), Some(5));
        // Producer 2 commits at 11: producer 3's transaction (from 8) is now the earliest.
        assert_eq!(table.apply_marker(2, 0, true, 0, 11, 0), None);
        assert_eq!(table.first_unstable_offset(), Some(8));
        // Producer 3 aborts at 12: indexed, and nothing is open any more.
        let aborted = table.apply_marker(3, 0, false, 0, 12, 0).expect("indexed");
        assert_eq!(
            aborted,
            AbortedTxn {
                producer_id: 3,
                first_offset: 8,
                last_offset: 12,
                last_stable_offset: 13
            }
        );
        assert_eq!(table.first_unstable_offset(), None);
        assert_eq!(table.aborted_between(0, 100), vec![(3, 8)]);
        assert_eq!(table.aborted_between(13, 100), vec![]);
        assert_eq!(table.aborted_between(0, 8), vec![]);
        // A marker for a producer without records here indexes nothing.
        assert_eq!(table.apply_marker(9, 0, false, 0, 13, 0), None);
        table.forget_aborted_below(13);
        assert_eq!(table.aborted_count(), 0);
    }

    #[test]
    fn markers_fence_older_epochs_and_coordinators() {
        let mut table = ProducerStateTable::default();
        table.record(&txn_batch(5, 1, 0, 1), 0, 0);
        // The coordinator aborts with a bumped epoch (fencing a zombie).
        table.apply_marker(5, 2, false, 7, 1, 0);
        assert_eq!(
            table.check(&txn_batch(5, 1, 1, 1)),
            SequenceCheck::Reject(ResponseError::InvalidProducerEpoch)
        );
        assert_eq!(
            table.check_marker(5, 1, 7),
            Err(ResponseError::InvalidProducerEpoch)
        );
        assert_eq!(
            table.check_marker(5, 2, 6),
            Err(ResponseError::TransactionCoordinatorFenced)
        );
        assert_eq!(table.check_marker(5, 2, 7), Ok(()));
        assert_eq!(table.check(&txn_batch(5, 2, 0, 1)), SequenceCheck::Append);
    }

    #[test]
    fn snapshots_round_trip_and_reject_damage() {
        let mut table = ProducerStateTable::default();
        table.record(&batch(1, 3, 0, 5), 0, 1_000);
        table.record(&txn_batch(2, 0, 0, 3), 5, 2_000);
        table.record(&txn_batch(4, 0, 0, 1), 8, 2_500);
        table.apply_marker(4, 0, false, 1, 9, 3_000);
        let encoded = table.encode_snapshot(10);
        let (decoded, offset) = ProducerStateTable::decode_snapshot(&encoded).expect("decodes");
        assert_eq!(offset, 10);
        assert_eq!(decoded.open_transaction(2), Some(5));
        assert_eq!(decoded.first_unstable_offset(), Some(5));
        assert_eq!(decoded.aborted_between(0, 100), vec![(4, 8)]);
        assert_eq!(decoded.summaries(), table.summaries());
        assert_eq!(
            decoded.check(&batch(1, 3, 0, 5)),
            SequenceCheck::Duplicate { base_offset: 0 }
        );
        let mut damaged = encoded.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert!(ProducerStateTable::decode_snapshot(&damaged).is_none());
        assert!(ProducerStateTable::decode_snapshot(&encoded[..encoded.len() - 3]).is_none());
    }

    #[test]
    fn idle_producers_expire_unless_their_transaction_is_open() {
        let mut table = ProducerStateTable::default();
        table.record(&batch(1, 0, 0, 1), 0, 1_000);
        table.record(&txn_batch(2, 0, 0, 1), 1, 1_000);
        table.record(&batch(3, 0, 0, 1), 2, 9_000);
        assert_eq!(table.expire_idle(10_000, 5_000), 1);
        assert_eq!(table.producer_count(), 2);
        assert_eq!(table.open_transaction(2), Some(1));
        assert!(table.needs_snapshot());
        table.mark_snapshotted(table.generation());
        assert!(!table.needs_snapshot());
    }
}
