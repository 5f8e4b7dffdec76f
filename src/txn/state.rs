//! The state of one transactional id and the transitions Kafka's transaction coordinator makes
//! on it, as plain data: each request is checked here and yields the record to write (the new
//! state, applied once the write is acknowledged), so the rules are unit-tested without an
//! executor or a log.

use super::records::{TxnLogValue, TxnState};
use kafka_protocol::error::ResponseError as E;
use std::collections::BTreeSet;

/// Largest epoch handed out; past it the transactional id gets a new producer id (Kafka keeps
/// `Short.MaxValue` free for its own fencing bump).
pub const MAX_PRODUCER_EPOCH: i16 = i16::MAX - 1;

/// One transactional id's state on its coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMetadata {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// The epoch before the last bump (-1: none): a producer retrying InitProducerId with it
    /// is not a zombie.
    pub last_producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<(String, i32)>,
    pub start_ms: i64,
    pub last_update_ms: i64,
    /// A state change is being written or markers are in flight: requests that would change
    /// the state meanwhile get CONCURRENT_TRANSACTIONS (the client retries).
    pub busy: bool,
}

/// What InitProducerId must do for an existing transactional id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitStep {
    /// A retry of an InitProducerId that already bumped the epoch (the client sent the epoch
    /// it had before): answer the current id and epoch, nothing to write.
    Current(i64, i16),
    /// Write this (Empty, bumped epoch); the producer gets its id and epoch.
    Bump(TxnLogValue),
    /// The epoch is exhausted: a new producer id is needed, with epoch 0.
    NewProducerId,
    /// An open transaction must first be aborted with a fencing epoch bump (this value, in
    /// PrepareAbort); InitProducerId continues once it completed.
    AbortFirst(TxnLogValue),
}

/// What EndTxn must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndStep {
    /// Write this (PrepareCommit/PrepareAbort), then the markers, then the completion.
    Prepare(TxnLogValue),
    /// A retry of an EndTxn that already completed the same way: answer success.
    AlreadyDone,
}

impl TxnMetadata {
    pub fn from_value(transactional_id: &str, value: TxnLogValue) -> TxnMetadata {
        TxnMetadata {
            transactional_id: transactional_id.to_string(),
            producer_id: value.producer_id,
            producer_epoch: value.producer_epoch,
            last_producer_epoch: -1,
            timeout_ms: value.timeout_ms,
            state: value.state,
            partitions: value.partitions,
            start_ms: value.start_ms,
            last_update_ms: value.last_update_ms,
            busy: false,
        }
    }

    /// The record of this state as it stands.
    pub fn value(&self) -> TxnLogValue {
        TxnLogValue {
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            timeout_ms: self.timeout_ms,
            state: self.state,
            partitions: self.partitions.clone(),
            last_update_ms: self.last_update_ms,
            start_ms: self.start_ms,
        }
    }

    /// Applies a written record. A bumped epoch remembers the one it replaced.
    pub fn apply(&mut self, value: TxnLogValue) {
        if value.producer_id != self.producer_id {
            self.last_producer_epoch = -1;
        } else if value.producer_epoch != self.producer_epoch {
            self.last_producer_epoch = self.producer_epoch;
        }
        self.producer_id = value.producer_id;
        self.producer_epoch = value.producer_epoch;
        self.timeout_ms = value.timeout_ms;
        self.state = value.state;
        self.partitions = value.partitions;
        self.start_ms = value.start_ms;
        self.last_update_ms = value.last_update_ms;
    }

    fn in_transition(&self) -> bool {
        self.busy
            || matches!(
                self.state,
                TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence
            )
    }

    /// The producer of a request must be this id's current one.
    pub fn check_producer(&self, producer_id: i64, producer_epoch: i16) -> Result<(), E> {
        if self.state == TxnState::Dead || producer_id != self.producer_id {
            return Err(E::InvalidProducerIdMapping);
        }
        if producer_epoch != self.producer_epoch {
            return Err(E::ProducerFenced);
        }
        Ok(())
    }

    /// InitProducerId for this id with `timeout_ms`. `expected` is the producer id and epoch
    /// the client says it has (KIP-360; `None` for a fresh start).
    pub fn init(
        &self,
        expected: Option<(i64, i16)>,
        timeout_ms: i32,
        now_ms: i64,
    ) -> Result<InitStep, E> {
        if self.in_transition() {
            return Err(E::ConcurrentTransactions);
        }
        if let Some((producer_id, producer_epoch)) = expected {
            // Kafka fences any producer id and epoch that is neither the current one nor the
            // one just replaced.
            if producer_id != self.producer_id
                || (producer_epoch != self.producer_epoch
                    && producer_epoch != self.last_producer_epoch)
            {
                return Err(E::ProducerFenced);
            }
            if producer_epoch == self.last_producer_epoch
                && producer_epoch != self.producer_epoch
                && self.state != TxnState::Ongoing
            {
                return Ok(InitStep::Current(self.producer_id, self.producer_epoch));
            }
        }
        if self.state == TxnState::Ongoing {
            // Fence the current producer: its open transaction is aborted under a new epoch,
            // so partition leaders refuse anything it still sends.
            let mut value = self.value();
            if self.producer_epoch < MAX_PRODUCER_EPOCH {
                value.producer_epoch += 1;
            }
            value.state = TxnState::PrepareAbort;
            value.last_update_ms = now_ms;
            return Ok(InitStep::AbortFirst(value));
        }
        if self.producer_epoch >= MAX_PRODUCER_EPOCH {
            return Ok(InitStep::NewProducerId);
        }
        Ok(InitStep::Bump(TxnLogValue {
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch + 1,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            last_update_ms: now_ms,
            start_ms: -1,
        }))
    }

    /// AddPartitionsToTxn / AddOffsetsToTxn: the record to write, or `None` when every
    /// partition is in the transaction already.
    pub fn add_partitions(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        added: &[(String, i32)],
        now_ms: i64,
    ) -> Result<Option<TxnLogValue>, E> {
        self.check_producer(producer_id, producer_epoch)?;
        if self.in_transition() {
            return Err(E::ConcurrentTransactions);
        }
        let ongoing = self.state == TxnState::Ongoing;
        if ongoing && added.iter().all(|p| self.partitions.contains(p)) {
            return Ok(None);
        }
        let mut value = self.value();
        if !ongoing {
            value.partitions.clear();
            value.start_ms = now_ms;
        }
        value.partitions.extend(added.iter().cloned());
        value.state = TxnState::Ongoing;
        value.last_update_ms = now_ms;
        Ok(Some(value))
    }

    /// KIP-890: is `partition` part of this producer's open transaction?
    pub fn verify(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        partition: &(String, i32),
    ) -> Result<(), E> {
        self.check_producer(producer_id, producer_epoch)?;
        if self.state == TxnState::Ongoing && self.partitions.contains(partition) {
            Ok(())
        } else {
            Err(E::InvalidTxnState)
        }
    }

    /// EndTxn with `commit`.
    pub fn end(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        now_ms: i64,
    ) -> Result<EndStep, E> {
        self.check_producer(producer_id, producer_epoch)?;
        if self.busy {
            return Err(E::ConcurrentTransactions);
        }
        match (self.state, commit) {
            (TxnState::Ongoing, _) => {
                let mut value = self.value();
                value.state = if commit {
                    TxnState::PrepareCommit
                } else {
                    TxnState::PrepareAbort
                };
                value.last_update_ms = now_ms;
                Ok(EndStep::Prepare(value))
            }
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => {
                Ok(EndStep::AlreadyDone)
            }
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                Err(E::ConcurrentTransactions)
            }
            _ => Err(E::InvalidTxnState),
        }
    }

    /// The transaction outlived its timeout: abort it with a fencing epoch bump (Kafka's
    /// timeout abort), or `None` if nothing is to be done.
    pub fn timed_out(&self, now_ms: i64) -> Option<TxnLogValue> {
        let deadline_ms = self.start_ms.saturating_add(i64::from(self.timeout_ms));
        if self.state != TxnState::Ongoing || self.busy || now_ms <= deadline_ms {
            return None;
        }
        let mut value = self.value();
        if self.producer_epoch < MAX_PRODUCER_EPOCH {
            value.producer_epoch += 1;
        }
        value.state = TxnState::PrepareAbort;
        value.last_update_ms = now_ms;
        Some(value)
    }

    /// The record that completes a PrepareCommit/PrepareAbort once its markers are written.
    pub fn completion(&self, now_ms: i64) -> TxnLogValue {
        assert!(
            matches!(self.state, TxnState::PrepareCommit | TxnState::PrepareAbort),
            "only a prepared transaction completes"
        );
        let mut value = self.value();
        value.state = if self.state == TxnState::PrepareCommit {
            TxnState::CompleteCommit
        } else {
            TxnState::CompleteAbort
        };
        value.partitions.clear();
        value.last_update_ms = now_ms;
        value
    }

    /// Idle long enough to be forgotten (`transactional.id.expiration.ms`).
    pub fn expired(&self, now_ms: i64, expiration_ms: i64) -> bool {
        !self.busy
            && matches!(
                self.state,
                TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
            )
            && now_ms.saturating_sub(self.last_update_ms) > expiration_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> TxnMetadata {
        TxnMetadata::from_value(
            "t",
            TxnLogValue {
                producer_id: 10,
                producer_epoch: 0,
                timeout_ms: 1_000,
                state: TxnState::Empty,
                partitions: BTreeSet::new(),
                last_update_ms: 0,
                start_ms: -1,
            },
        )
    }

    fn p(topic: &str, partition: i32) -> (String, i32) {
        (topic.to_string(), partition)
    }

    #[test]
    fn a_transaction_runs_from_add_to_commit() {
        let mut txn = fresh();
        let added = txn
            .add_partitions(10, 0, &[p("a", 0), p("a", 1)], 100)
            .unwrap()
            .expect("a write");
        assert_eq!(added.state, TxnState::Ongoing);
        assert_eq!(added.start_ms, 100);
        txn.apply(added);
        // Adding what is there already writes nothing.
        assert_eq!(txn.add_partitions(10, 0, &[p("a", 1)], 150), Ok(None));
        assert!(txn.verify(10, 0, &p("a", 0)).is_ok());
        assert_eq!(txn.verify(10, 0, &p("b", 0)), Err(E::InvalidTxnState));
        let EndStep::Prepare(prepared) = txn.end(10, 0, true, 200).unwrap() else {
            panic!("prepare expected");
        };
        assert_eq!(prepared.state, TxnState::PrepareCommit);
        txn.apply(prepared);
        assert_eq!(txn.end(10, 0, true, 210), Err(E::ConcurrentTransactions));
        assert_eq!(
            txn.add_partitions(10, 0, &[p("a", 0)], 210),
            Err(E::ConcurrentTransactions)
        );
        let complete = txn.completion(220);
        assert_eq!(complete.state, TxnState::CompleteCommit);
        assert!(complete.partitions.is_empty());
        txn.apply(complete);
        // A retried commit succeeds; an abort after the commit is refused.
        assert_eq!(txn.end(10, 0, true, 230), Ok(EndStep::AlreadyDone));
        assert_eq!(txn.end(10, 0, false, 230), Err(E::InvalidTxnState));
        // The next transaction starts afresh.
        let next = txn
            .add_partitions(10, 0, &[p("b", 0)], 300)
            .unwrap()
            .unwrap();
        assert_eq!(next.partitions, [p("b", 0)].into_iter().collect());
        assert_eq!(next.start_ms, 300);
    }

    #[test]
    fn init_bumps_the_epoch_and_fences_the_old_producer() {
        let mut txn = fresh();
        let InitStep::Bump(bumped) = txn.init(None, 5_000, 10).unwrap() else {
            panic!("bump expected");
        };
        assert_eq!((bumped.producer_epoch, bumped.timeout_ms), (1, 5_000));
        txn.apply(bumped);
        assert_eq!(txn.last_producer_epoch, 0);
        assert_eq!(
            txn.add_partitions(10, 0, &[p("a", 0)], 20),
            Err(E::ProducerFenced)
        );
        assert_eq!(
            txn.add_partitions(11, 1, &[p("a", 0)], 20),
            Err(E::InvalidProducerIdMapping)
        );
        // KIP-360: the previous epoch may retry (and gets the current one back); the current
        // epoch bumps; anything else is a zombie.
        assert_eq!(
            txn.init(Some((10, 0)), 5_000, 30),
            Ok(InitStep::Current(10, 1))
        );
        assert!(matches!(
            txn.init(Some((10, 1)), 5_000, 30),
            Ok(InitStep::Bump(_))
        ));
        assert_eq!(txn.init(Some((11, 1)), 5_000, 30), Err(E::ProducerFenced));
        txn.apply(
            txn.add_partitions(10, 1, &[p("a", 0)], 40)
                .unwrap()
                .unwrap(),
        );
        // Init during an open transaction aborts it under a new epoch first.
        let InitStep::AbortFirst(abort) = txn.init(None, 5_000, 50).unwrap() else {
            panic!("abort expected");
        };
        assert_eq!(abort.state, TxnState::PrepareAbort);
        assert_eq!(abort.producer_epoch, 2);
        assert_eq!(abort.partitions, [p("a", 0)].into_iter().collect());
        txn.apply(abort);
        assert_eq!(txn.init(None, 5_000, 60), Err(E::ConcurrentTransactions));
        assert_eq!(
            txn.init(Some((10, 0)), 5_000, 60),
            Err(E::ConcurrentTransactions)
        );
        txn.apply(txn.completion(70));
        assert_eq!(txn.init(Some((10, 0)), 5_000, 80), Err(E::ProducerFenced));
        txn.producer_epoch = MAX_PRODUCER_EPOCH;
        assert_eq!(txn.init(None, 5_000, 90), Ok(InitStep::NewProducerId));
    }

    #[test]
    fn timeouts_abort_with_a_fencing_bump_and_idle_ids_expire() {
        let mut txn = fresh();
        txn.apply(
            txn.add_partitions(10, 0, &[p("a", 0)], 1_000)
                .unwrap()
                .unwrap(),
        );
        assert_eq!(txn.timed_out(2_000), None);
        let abort = txn.timed_out(2_001).expect("timed out");
        assert_eq!(
            (abort.state, abort.producer_epoch),
            (TxnState::PrepareAbort, 1)
        );
        txn.apply(abort);
        assert_eq!(txn.end(10, 0, true, 2_100), Err(E::ProducerFenced));
        txn.apply(txn.completion(2_200));
        assert_eq!(txn.state, TxnState::CompleteAbort);
        assert!(!txn.expired(3_000, 1_000));
        assert!(txn.expired(3_201, 1_000));
        txn.busy = true;
        assert!(!txn.expired(9_999, 1_000));
    }

    #[test]
    fn end_without_a_transaction_is_an_invalid_state() {
        let txn = fresh();
        assert_eq!(txn.end(10, 0, true, 1), Err(E::InvalidTxnState));
        assert_eq!(txn.end(10, 0, false, 1), Err(E::InvalidTxnState));
        assert_eq!(txn.end(10, 3, false, 1), Err(E::ProducerFenced));
    }
}
