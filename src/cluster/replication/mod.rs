//! ISR replication, Kafka's model: each hosted partition is a leader or a follower by the
//! metadata image; followers pull from the leader (`fetcher.rs`) and append the leader's
//! batches as they are; the leader tracks each follower's log end from its fetches, bounds the
//! high watermark by the lowest log end in the ISR, and proposes ISR changes to the controller
//! (AlterPartition), which commits them to the metadata log.
//!
//! Everything here runs on the partition's owner shard, except the controller call, which hops
//! to shard 0 where the metadata node lives.

pub mod connection;
pub mod fetcher;
pub mod state;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::metadata::{PartitionRecord, NO_LEADER};
use super::Partition;
use crate::shard::Shard;
use state::LeaderState;

/// This node's part in one partition.
#[derive(Debug, Clone)]
pub enum Role {
    Leader(LeaderState),
    /// `truncated`: the divergent tail (if any) was cut after the last leader change.
    Follower {
        leader: i32,
        leader_epoch: i32,
        truncated: bool,
    },
    /// No leader, or this node holds no replica.
    Offline,
}

#[derive(Debug)]
pub struct Replication {
    pub role: Role,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub partition_epoch: i32,
    /// An AlterPartition of this partition is on its way to the controller.
    isr_change_in_flight: bool,
}

impl Default for Replication {
    fn default() -> Self {
        Replication {
            role: Role::Offline,
            replicas: Vec::new(),
            isr: Vec::new(),
            partition_epoch: -1,
            isr_change_in_flight: false,
        }
    }
}

pub type SharedReplication = Rc<RefCell<Replication>>;

impl Replication {
    pub fn leads_in(&self, leader_epoch: i32) -> bool {
        matches!(&self.role, Role::Leader(state) if state.leader_epoch == leader_epoch)
    }

    pub fn is_leader(&self) -> bool {
        matches!(self.role, Role::Leader(_))
    }
}

/// Follows the committed record of a partition this node hosts: takes or gives up leadership,
/// starts following a new leader, or picks up a changed ISR. Called when the partition opens
/// and for every new image.
pub fn on_partition_record(shard: &Rc<Shard>, partition: &Partition, record: &PartitionRecord) {
    let me = shard.config.node_id;
    let now = Instant::now();
    let log = &partition.log;
    let mut replication = partition.replication.borrow_mut();
    replication.replicas = record.replicas.clone();
    replication.isr = record.isr.clone();
    replication.partition_epoch = record.partition_epoch;
    let was_leader = replication.is_leader();
    if record.leader == me {
        match &mut replication.role {
            Role::Leader(state) if state.leader_epoch == record.leader_epoch => {
                state.update(record.partition_epoch, &record.replicas, &record.isr, now);
            }
            _ => {
                tracing::info!(topic = %partition.topic.name, partition = partition.index,
                    leader_epoch = record.leader_epoch, isr = ?record.isr,
                    end = log.written_end_offset(), "leading partition");
                replication.role = Role::Leader(LeaderState::new(
                    me,
                    record.leader_epoch,
                    record.partition_epoch,
                    &record.replicas,
                    &record.isr,
                    log.written_end_offset(),
                    now,
                ));
            }
        }
        let Role::Leader(state) = &replication.role else {
            unreachable!("just set")
        };
        let limit = state.high_watermark_limit();
        drop(replication);
        log.set_high_watermark_limit(limit);
        return;
    }
    let follows = record.leader != NO_LEADER && record.replicas.contains(&me);
    let same_leader = matches!(&replication.role,
        Role::Follower { leader, leader_epoch, .. }
            if *leader == record.leader && *leader_epoch == record.leader_epoch);
    if follows && !same_leader {
        tracing::info!(topic = %partition.topic.name, partition = partition.index,
            leader = record.leader, leader_epoch = record.leader_epoch, "following partition");
        replication.role = Role::Follower {
            leader: record.leader,
            leader_epoch: record.leader_epoch,
            truncated: false,
        };
    } else if !follows {
        replication.role = Role::Offline;
    }
    drop(replication);
    // Only the leader's answers move a follower's high watermark from here on.
    log.set_high_watermark_limit(log.high_watermark());
    if was_leader {
        // Produces waiting for the high watermark find out they lost leadership.
        log.wake_committed_waiters();
    }
}

/// Records a follower's fetch at `fetch_offset` on the leader; moves the high watermark and
/// proposes the follower into the ISR once it caught up. Returns false if this node does not
/// lead the partition in `leader_epoch` (when given) or `replica` holds no replica.
pub fn record_replica_fetch(
    shard: &Rc<Shard>,
    partition: &Rc<Partition>,
    replica: i32,
    fetch_offset: i64,
) -> bool {
    let log = &partition.log;
    let now = Instant::now();
    let (limit, wants_change) = {
        let mut replication = partition.replication.borrow_mut();
        let Role::Leader(state) = &mut replication.role else {
            return false;
        };
        if !state.record_fetch(replica, fetch_offset, log.written_end_offset(), now) {
            return false;
        }
        let limit = state.high_watermark_limit();
        // Only joins are decided here, at once; leaves wait for the periodic check.
        let joining = !state.isr.contains(&replica)
            && state
                .wanted_isr(log.high_watermark(), now, lag_max(shard))
                .is_some_and(|wanted| wanted.contains(&replica));
        (limit, joining)
    };
    log.set_high_watermark_limit(limit);
    if wants_change {
        maybe_propose_isr(shard, partition);
    }
    true
}

fn lag_max(shard: &Shard) -> Duration {
    Duration::from_millis(shard.config.replica_lag_time_max_ms)
}

/// Proposes the ISR the leader wants (if it differs and no proposal is in flight).
pub fn maybe_propose_isr(shard: &Rc<Shard>, partition: &Rc<Partition>) {
    let proposal = {
        let mut replication = partition.replication.borrow_mut();
        if replication.isr_change_in_flight {
            return;
        }
        let Role::Leader(state) = &replication.role else {
            return;
        };
        let Some(wanted) = state.wanted_isr(
            partition.log.high_watermark(),
            Instant::now(),
            lag_max(shard),
        ) else {
            return;
        };
        let proposal = (
            state.leader_epoch,
            state.partition_epoch,
            state.isr.clone(),
            wanted,
        );
        replication.isr_change_in_flight = true;
        proposal
    };
    let (leader_epoch, partition_epoch, current, wanted) = proposal;
    tracing::info!(topic = %partition.topic.name, partition = partition.index,
        from = ?current, to = ?wanted, "proposing an ISR change");
    let shard = shard.clone();
    let partition = partition.clone();
    glommio::spawn_local(async move {
        let outcome = alter_partition_from_shard(
            &shard,
            partition.topic.name.clone(),
            partition.topic.topic_id,
            partition.index,
            leader_epoch,
            partition_epoch,
            wanted,
        )
        .await;
        partition.replication.borrow_mut().isr_change_in_flight = false;
        match outcome {
            Ok(record) => {
                // The image brings the same change; applying it now lets the high watermark
                // move without waiting for the metadata log.
                let current = partition.replication.borrow().partition_epoch;
                if record.partition_epoch > current {
                    on_partition_record(&shard, &partition, &record);
                }
            }
            Err(code) => {
                tracing::info!(topic = %partition.topic.name, partition = partition.index,
                    error = code, "ISR change refused or lost; retried when still wanted");
            }
        }
    })
    .detach();
}

/// Starts the shard's periodic ISR check: followers that fell behind leave the ISR.
pub fn start_isr_maintenance(shard: Rc<Shard>) {
    let interval_ms = (shard.config.replica_lag_time_max_ms / 4).clamp(50, 5_000);
    super::maintenance::spawn_every(shard, interval_ms, |shard| async move {
        let mut leaders = Vec::new();
        shard.partitions.for_each_rc(|partition| {
            if partition.replication.borrow().is_leader() {
                leaders.push(partition.clone());
            }
        });
        for partition in leaders {
            maybe_propose_isr(&shard, &partition);
        }
    });
}

/// The topic's `min.insync.replicas`.
pub fn min_insync_replicas(shard: &Shard, partition: &Partition) -> usize {
    let value = super::topic_config::effective_long(
        &partition.topic.configs,
        &shard.live_config(),
        "min.insync.replicas",
    );
    usize::try_from(value).unwrap_or(1).max(1)
}

/// Proposes `new_isr` to the active controller from the partition's owner shard: hops to
/// shard 0, where the controller client and this broker's registration live. Returns the
/// partition as committed, or a Kafka error code.
#[allow(clippy::too_many_arguments)]
pub async fn alter_partition_from_shard(
    shard: &Rc<Shard>,
    topic: String,
    topic_id: uuid::Uuid,
    partition: i32,
    leader_epoch: i32,
    partition_epoch: i32,
    new_isr: Vec<i32>,
) -> Result<PartitionRecord, i16> {
    let request = super::rpc::AlterPartitionRequest {
        // Filled in on shard 0 from the registration.
        node_id: shard.config.node_id,
        broker_epoch: 0,
        topic,
        topic_id,
        partition,
        leader_epoch,
        partition_epoch,
        new_isr,
    };
    let hop = shard.invoke_on(0, move |shard0| async move {
        super::client::alter_partition(&shard0, request).await
    });
    match hop.await {
        Ok(outcome) => outcome,
        Err(error) => {
            tracing::debug!("AlterPartition not sent: {error}");
            Err(kafka_protocol::error::ResponseError::NotController.code())
        }
    }
}
