//! The broker side of the lifecycle (on shard 0 of every node with the broker role): register
//! with the active controller, heartbeat, re-register when the controller no longer knows this
//! incarnation, and a controlled shutdown on SIGTERM. Broker-only nodes also fetch the
//! committed metadata log from the active controller (as KRaft's observers do).

use super::client::call_active;
use super::driver::MetadataNode;
use super::rpc::{ControllerRequest, ControllerResponse};
use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;
use uuid::Uuid;

/// Long-poll wait of one metadata fetch.
const FETCH_WAIT_MS: u64 = 500;
/// Longest a controlled shutdown waits for the controller before the broker exits anyway.
pub const CONTROLLED_SHUTDOWN_TIMEOUT_MS: u64 = 5_000;

/// This broker's registration as the controller acknowledged it.
pub struct BrokerAgent {
    pub incarnation_id: Uuid,
    pub broker_epoch: Cell<Option<u64>>,
    pub fenced: Cell<bool>,
}

impl BrokerAgent {
    pub fn new(incarnation_id: Uuid, broker_epoch: Option<u64>) -> BrokerAgent {
        BrokerAgent {
            incarnation_id,
            broker_epoch: Cell::new(broker_epoch),
            fenced: Cell::new(true),
        }
    }
}

fn register_request(
    node: &MetadataNode,
    agent: &BrokerAgent,
    shard_count: usize,
) -> ControllerRequest {
    let (host, port) = node
        .config
        .advertised_host_port()
        .expect("advertised address validated at start");
    ControllerRequest::Register {
        node_id: node.node_id,
        incarnation_id: agent.incarnation_id,
        host,
        port,
        rack: node.config.rack.clone(),
        shard_count: shard_count as u32,
        endpoints: node
            .config
            .advertised_endpoints()
            .expect("listeners validated at start"),
    }
}

/// Starts registration and heartbeats (and the metadata fetcher on broker-only nodes).
pub fn start(node: Rc<MetadataNode>, agent: Rc<BrokerAgent>, shard_count: usize) {
    if !node.is_voter() {
        glommio::spawn_local(fetch_loop(node.clone())).detach();
    }
    glommio::spawn_local(async move {
        let interval = Duration::from_millis(node.config.broker_heartbeat_interval_ms);
        loop {
            if node.shutting_down.get() {
                return;
            }
            let Some(broker_epoch) = agent.broker_epoch.get() else {
                match call_active(
                    &node,
                    register_request(&node, &agent, shard_count),
                    interval * 2,
                )
                .await
                {
                    Ok(ControllerResponse::Registered { broker_epoch }) => {
                        tracing::info!(broker_epoch, "registered with the active controller");
                        agent.broker_epoch.set(Some(broker_epoch));
                        continue;
                    }
                    Ok(other) => tracing::debug!(?other, "registration not accepted"),
                    Err(_) => tracing::debug!("no active controller to register with"),
                }
                glommio::timer::sleep(interval / 4).await;
                continue;
            };
            let request = ControllerRequest::Heartbeat {
                node_id: node.node_id,
                broker_epoch,
                applied_offset: node.applied_offset(),
                want_shutdown: false,
            };
            match call_active(&node, request, interval * 2).await {
                Ok(ControllerResponse::Heartbeat { fenced, .. }) => {
                    if agent.fenced.get() != fenced {
                        tracing::info!(fenced, "broker fencing state changed");
                    }
                    agent.fenced.set(fenced);
                    // A fenced broker heartbeats faster so that it is unfenced soon after it
                    // has caught up.
                    let pause = if fenced { interval / 4 } else { interval };
                    glommio::timer::sleep(pause).await;
                }
                Ok(ControllerResponse::StaleBrokerEpoch) => {
                    tracing::info!(
                        "the controller does not know this registration: registering again"
                    );
                    agent.broker_epoch.set(None);
                }
                Ok(other) => {
                    tracing::debug!(?other, "heartbeat not accepted");
                    glommio::timer::sleep(interval / 4).await;
                }
                Err(_) => {
                    tracing::debug!("no active controller answered the heartbeat");
                    glommio::timer::sleep(interval / 4).await;
                }
            }
        }
    })
    .detach();
}

/// Controlled shutdown: asks the active controller to fence this broker (moving its
/// leaderships away) and waits, bounded, for the answer.
pub async fn controlled_shutdown(node: &Rc<MetadataNode>, agent: &BrokerAgent) {
    node.shutting_down.set(true);
    let Some(broker_epoch) = agent.broker_epoch.get() else {
        return;
    };
    if node.voters.is_empty() {
        return; // a single node has nobody to hand its partitions to
    }
    let request = ControllerRequest::Heartbeat {
        node_id: node.node_id,
        broker_epoch,
        applied_offset: node.applied_offset(),
        want_shutdown: true,
    };
    if !node
        .image()
        .live_brokers()
        .any(|broker| broker.node_id != node.node_id)
    {
        // The last broker standing has nobody to hand leadership to, and no quorum to ask.
        tracing::info!("controlled shutdown skipped: no other live broker");
        return;
    }
    let limit = Duration::from_millis(CONTROLLED_SHUTDOWN_TIMEOUT_MS);
    // The bound covers the case where this node is the active controller and serves the call
    // itself (bounded there only by the controller request timeout).
    let outcome = glommio::timer::timeout(limit, async {
        Ok::<_, glommio::GlommioError<()>>(call_active(node, request, limit).await)
    })
    .await;
    match outcome {
        Ok(Ok(ControllerResponse::Heartbeat {
            shutdown_ready: true,
            ..
        })) => tracing::info!("controlled shutdown: the controller fenced this broker"),
        Err(_) => tracing::warn!(
            timeout_ms = CONTROLLED_SHUTDOWN_TIMEOUT_MS,
            "controlled shutdown not confirmed in time"
        ),
        Ok(other) => tracing::warn!(
            ?other,
            "controlled shutdown not confirmed by the controller"
        ),
    }
}

/// Keeps a broker-only node's image current by fetching committed entries.
async fn fetch_loop(node: Rc<MetadataNode>) {
    loop {
        if node.shutting_down.get() {
            return;
        }
        let request = ControllerRequest::FetchMetadata {
            node_id: node.node_id,
            after_offset: node.applied_offset(),
            max_wait_ms: FETCH_WAIT_MS,
        };
        let timeout =
            Duration::from_millis(FETCH_WAIT_MS + node.config.controller_request_timeout_ms);
        match call_active(&node, request, timeout).await {
            Ok(ControllerResponse::Metadata(chunk)) => {
                let last = chunk
                    .entries
                    .last()
                    .map(|(index, _)| *index)
                    .or(chunk.snapshot.as_ref().map(|(index, _)| *index));
                node.apply_fetched(chunk);
                if let Some(last) = last {
                    node.wait_applied(last, Duration::from_millis(FETCH_WAIT_MS * 10))
                        .await;
                }
            }
            Ok(other) => {
                tracing::debug!(?other, "metadata fetch not answered");
                glommio::timer::sleep(Duration::from_millis(100)).await;
            }
            Err(_) => glommio::timer::sleep(Duration::from_millis(100)).await,
        }
    }
}
