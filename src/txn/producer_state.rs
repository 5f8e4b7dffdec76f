//! Idempotent-producer state of one partition, on the partition's owner shard.
//!
//! For every producer id the partition remembers the epoch and the last
//! [`BATCHES_RETAINED_PER_PRODUCER`] batches (sequence range and offsets), as Kafka does, so a
//! retried batch is answered with its original offset instead of being written twice, and a gap
//! in sequences is refused with OUT_OF_ORDER_SEQUENCE_NUMBER. Clients cap in-flight requests per
//! connection at the same number for this reason.

use kafka_protocol::error::ResponseError;
use std::collections::{HashMap, VecDeque};

use crate::log::{LogError, PartitionLog};
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

#[derive(Debug, Default)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<RetainedBatch>,
    last_used_tick: u64,
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

#[derive(Debug, Default)]
pub struct ProducerStateTable {
    producers: HashMap<i64, ProducerEntry>,
    tick: u64,
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

    /// Records a stored batch by its header (rebuilds, replicated batches); batches without
    /// a producer id are ignored.
    pub fn record_header(&mut self, header: &RecordBatchHeader) {
        if header.producer_id >= 0 && header.last_offset_delta >= 0 {
            let batch = ProducerBatch {
                producer_id: header.producer_id,
                producer_epoch: header.producer_epoch,
                first_sequence: header.base_sequence,
                record_count: (header.last_offset_delta as u32).saturating_add(1),
            };
            self.record(&batch, header.base_offset);
        }
    }

    /// Remembers an appended batch at `base_offset`.
    pub fn record(&mut self, batch: &ProducerBatch, base_offset: i64) {
        self.tick += 1;
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
        if entry.batches.len() == BATCHES_RETAINED_PER_PRODUCER {
            entry.batches.pop_front();
        }
        entry.batches.push_back(RetainedBatch {
            first_sequence: batch.first_sequence,
            last_sequence: batch.last_sequence(),
            base_offset,
        });
        assert!(entry.batches.len() <= BATCHES_RETAINED_PER_PRODUCER);
    }

    /// Rebuilds the table from the batch headers of the log's most recent `tail_bytes` (at
    /// start-up: the state is not persisted). A producer retrying after a broker restart
    /// retries its most recent batches, which lie in that tail, so the retry is answered as a
    /// duplicate instead of being written twice; a producer whose last batch lies before the
    /// tail is unknown, and its next batch is accepted from any sequence.
    pub async fn rebuild_from_log(log: &PartitionLog, tail_bytes: u64) -> Result<Self, LogError> {
        const READ_SIZE_BYTES: usize = 1024 * 1024;
        let mut table = ProducerStateTable::default();
        let end_offset = log.written_end_offset();
        let mut offset = log.offset_before_end(tail_bytes);
        while offset < end_offset {
            let read = log.read(offset, READ_SIZE_BYTES, end_offset).await?;
            if read.chunks.is_empty() {
                break;
            }
            for chunk in &read.chunks {
                let mut position = 0usize;
                while position < chunk.len() {
                    let header = RecordBatchHeader::parse(&chunk[position..])
                        .map_err(|error| LogError::Corrupt(format!("stored batch: {error}")))?;
                    table.record_header(&header);
                    offset = header.last_offset() + 1;
                    position += header.total_size_bytes();
                }
            }
        }
        Ok(table)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(producer_id: i64, epoch: i16, first_sequence: i32, count: u32) -> ProducerBatch {
        ProducerBatch {
            producer_id,
            producer_epoch: epoch,
            first_sequence,
            record_count: count,
        }
    }

    #[test]
    fn in_order_batches_append_and_retries_are_duplicates() {
        let mut table = ProducerStateTable::default();
        let first = batch(7, 0, 0, 10);
        assert_eq!(table.check(&first), SequenceCheck::Append);
        table.record(&first, 100);
        let second = batch(7, 0, 10, 5);
        assert_eq!(table.check(&second), SequenceCheck::Append);
        table.record(&second, 110);
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
            table.record(&b, i64::from(i));
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
        table.record(&batch(3, 2, 0, 4), 0);
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
        table.record(&bumped, 4);
        assert_eq!(table.check(&batch(3, 3, 1, 1)), SequenceCheck::Append);
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        let mut table = ProducerStateTable::default();
        let near_end = batch(9, 0, i32::MAX - 1, 2);
        assert_eq!(near_end.last_sequence(), i32::MAX);
        table.record(&near_end, 0);
        assert_eq!(table.check(&batch(9, 0, 0, 3)), SequenceCheck::Append);
        assert_eq!(batch(9, 0, i32::MAX, 3).last_sequence(), 1);
    }

    #[test]
    fn a_failed_append_is_forgotten() {
        let mut table = ProducerStateTable::default();
        let first = batch(4, 0, 0, 2);
        table.record(&first, 0);
        let failed = batch(4, 0, 2, 2);
        table.record(&failed, 2);
        table.forget(&failed);
        assert_eq!(table.check(&failed), SequenceCheck::Append);
    }

    #[test]
    fn producer_count_is_bounded() {
        let mut table = ProducerStateTable::default();
        for id in 0..(MAX_PRODUCERS_PER_PARTITION as i64 + 10) {
            table.record(&batch(id, 0, 0, 1), id);
        }
        assert_eq!(table.producer_count(), MAX_PRODUCERS_PER_PARTITION);
    }
}
