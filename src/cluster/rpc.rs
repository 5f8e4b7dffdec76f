//! The controller listener's protocol: Raft messages between voters, and request/response calls
//! from brokers to the active controller (registration, heartbeats, metadata fetches of
//! broker-only nodes, forwarded admin requests).
//!
//! Frames: `[u32 length][u8 kind][payload]`, big-endian length of kind and payload. Raft
//! messages are raft-rs's protobuf encoding and expect no answer; calls are JSON, one
//! outstanding call per connection, answered in order. Voters talk on `controller_listen`
//! only, never on the client port.

use super::controller::{AdminError, ConfigChange, NewTopic};
use super::metadata::{PartitionRecord, TopicRecord};
use futures::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use uuid::Uuid;

/// Largest frame either side accepts (a metadata snapshot of 100,000 partitions fits).
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;

pub const KIND_RAFT: u8 = 1;
pub const KIND_REQUEST: u8 = 2;
pub const KIND_RESPONSE: u8 = 3;

/// A call to the active controller.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControllerRequest {
    /// BrokerRegistration.
    Register {
        node_id: i32,
        incarnation_id: Uuid,
        host: String,
        port: i32,
        rack: Option<String>,
        shard_count: u32,
        /// Every advertised listener (absent from brokers that predate them).
        #[serde(default)]
        endpoints: Vec<super::metadata::BrokerEndpoint>,
    },
    /// BrokerHeartbeat: `applied_offset` tells the controller whether the broker has caught up
    /// with the metadata log; `want_shutdown` starts a controlled shutdown.
    Heartbeat {
        node_id: i32,
        broker_epoch: u64,
        applied_offset: u64,
        want_shutdown: bool,
    },
    /// Committed metadata log entries after `after_offset` (broker-only nodes), waiting up to
    /// `max_wait_ms` for new ones.
    FetchMetadata {
        node_id: i32,
        after_offset: u64,
        max_wait_ms: u64,
    },
    Admin(AdminCommand),
    /// The quorum as the active controller sees it (DescribeQuorum).
    DescribeQuorum,
    /// A partition leader's ISR change (Kafka's AlterPartition).
    AlterPartition(AlterPartitionRequest),
}

/// AlterPartition of one partition: the leader asks to replace the ISR. Applies only if the
/// leader still leads in `leader_epoch` and the partition is still at `partition_epoch`, so a
/// proposal decided against an old state fails instead of undoing a newer change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlterPartitionRequest {
    pub node_id: i32,
    pub broker_epoch: u64,
    pub topic: String,
    pub topic_id: Uuid,
    pub partition: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub new_isr: Vec<i32>,
}

/// Admin requests as forwarded to the active controller.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AdminCommand {
    CreateTopics {
        topics: Vec<NewTopic>,
        validate_only: bool,
    },
    DeleteTopics {
        names: Vec<String>,
    },
    CreatePartitions {
        requests: Vec<(String, i32)>,
        validate_only: bool,
    },
    AlterTopicConfigs {
        requests: Vec<(String, Vec<ConfigChange>)>,
        replace_all: bool,
        validate_only: bool,
    },
    /// A block of producer ids for the calling broker.
    AllocateProducerIds {
        node_id: i32,
    },
    /// AlterUserScramCredentials: upserts and deletions, each (user, mechanism).
    AlterScramCredentials {
        changes: Vec<ScramChange>,
    },
    /// CreateAcls: bindings already checked by the receiving broker; answered with
    /// `Changes`, one result per binding.
    CreateAcls {
        bindings: Vec<crate::security::acl::AclBinding>,
    },
    /// DeleteAcls: answered with `DeletedAcls`, the bindings each filter removed.
    DeleteAcls {
        filters: Vec<crate::security::acl::AclFilter>,
    },
    /// AlterClientQuotas: entries already checked by the receiving broker; answered with
    /// `Changes`, one result per entry.
    AlterClientQuotas {
        entries: Vec<QuotaAlteration>,
        validate_only: bool,
    },
    /// AlterConfigs / IncrementalAlterConfigs on BROKER resources: per scope (a broker id, or
    /// `None` for the cluster-wide default) its changes; answered with `Changes`, one result
    /// per scope. `replace_all`: the legacy AlterConfigs, which replaces the scope's configs.
    AlterBrokerConfigs {
        requests: Vec<(Option<i32>, Vec<ConfigChange>)>,
        replace_all: bool,
        validate_only: bool,
    },
}

/// One entry of AlterClientQuotas: an entity and its changes (`None` removes the key).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuotaAlteration {
    pub entity: crate::security::quota::QuotaEntity,
    pub ops: Vec<(String, Option<f64>)>,
}

/// One change of AlterUserScramCredentials.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScramChange {
    pub user: String,
    pub mechanism: crate::security::scram::Mechanism,
    /// `None` deletes the credential.
    pub credential: Option<crate::security::scram::ScramCredential>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AdminReply {
    CreateTopics(Vec<Result<TopicRecord, AdminError>>),
    DeleteTopics(Vec<Result<Uuid, AdminError>>),
    Changes(Vec<Result<(), AdminError>>),
    ProducerIds(Result<i64, AdminError>),
    DeletedAcls(Vec<Result<Vec<crate::security::acl::AclBinding>, AdminError>>),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControllerResponse {
    /// This node is not the active controller; the leader it knows of, if any.
    NotController {
        leader_id: Option<i32>,
    },
    Registered {
        broker_epoch: u64,
    },
    Heartbeat {
        fenced: bool,
        shutdown_ready: bool,
    },
    /// The broker epoch is not the registered one: register again.
    StaleBrokerEpoch,
    Metadata(MetadataChunk),
    /// The admin outcome and the metadata log offset that holds it (the caller waits until its
    /// own image has applied that offset before answering its client).
    Admin {
        reply: AdminReply,
        offset: u64,
    },
    Quorum(QuorumReport),
    /// AlterPartition's outcome: the partition as committed, or a Kafka error code.
    PartitionAltered(Result<PartitionRecord, i16>),
    Error {
        message: String,
    },
}

/// Committed metadata for a broker-only node: a snapshot when the entries it needs were
/// compacted, then entries in order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MetadataChunk {
    pub snapshot: Option<(u64, Vec<u8>)>,
    pub entries: Vec<(u64, Vec<u8>)>,
}

/// DescribeQuorum's content.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct QuorumReport {
    pub leader_id: i32,
    pub term: u64,
    pub high_watermark: u64,
    pub voters: Vec<ReplicaReport>,
    pub observers: Vec<ReplicaReport>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReplicaReport {
    pub node_id: i32,
    pub log_end_offset: u64,
    /// Milliseconds since the Unix epoch of the last fetch/ack seen from it; -1 unknown.
    pub last_fetch_timestamp_ms: i64,
    pub last_caught_up_timestamp_ms: i64,
}

/// Reads one frame; `Ok(None)` at a clean end of stream.
pub async fn read_frame<R: futures::io::AsyncRead + Unpin>(
    reader: &mut R,
) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let mut prefix = [0u8; 4];
    match reader.read_exact(&mut prefix).await {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error),
    }
    let size = u32::from_be_bytes(prefix) as usize;
    if size == 0 || size > MAX_FRAME_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("controller frame of {size} bytes (limit {MAX_FRAME_BYTES})"),
        ));
    }
    let mut body = vec![0u8; size];
    reader.read_exact(&mut body).await?;
    let kind = body[0];
    body.remove(0);
    Ok(Some((kind, body)))
}

/// Appends one frame to `buffer`.
pub fn encode_frame(buffer: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    let size = u32::try_from(payload.len() + 1).expect("frames are bounded");
    buffer.extend_from_slice(&size.to_be_bytes());
    buffer.push(kind);
    buffer.extend_from_slice(payload);
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("cannot reach the controller at {address}: {message}")]
    Unreachable { address: String, message: String },
    #[error("controller call to {address} timed out")]
    TimedOut { address: String },
    #[error("controller at {address} answered garbage: {message}")]
    Protocol { address: String, message: String },
}

/// A connection between nodes: TCP, or TLS over it.
pub trait NodeStream: futures::AsyncRead + futures::AsyncWrite + Unpin {}
impl<T: futures::AsyncRead + futures::AsyncWrite + Unpin> NodeStream for T {}

/// Connects to a controller listener at `address` (HOST:PORT), with the TLS handshake when
/// the controller listener is SSL.
pub async fn connect(
    address: &str,
    tls: Option<&crate::security::inter_broker::ControllerTls>,
) -> std::io::Result<Box<dyn NodeStream>> {
    let tcp = TcpStream::connect(address)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    match tls {
        None => Ok(Box::new(tcp)),
        Some(tls) => {
            let (host, _) = crate::config::split_host_port(address).map_err(|error| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, error.to_string())
            })?;
            Ok(Box::new(tls.client.connect(&host, tcp).await?))
        }
    }
}

/// One call over a new connection, bounded by `timeout`.
pub async fn call(
    address: &str,
    tls: Option<&crate::security::inter_broker::ControllerTls>,
    request: &ControllerRequest,
    timeout: Duration,
) -> Result<ControllerResponse, CallError> {
    let unreachable = |message: String| CallError::Unreachable {
        address: address.to_string(),
        message,
    };
    let payload = serde_json::to_vec(request).expect("requests serialise");
    let work = async {
        let mut stream = connect(address, tls)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let mut frame = Vec::with_capacity(payload.len() + 5);
        encode_frame(&mut frame, KIND_REQUEST, &payload);
        stream
            .write_all(&frame)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        stream
            .flush()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        match read_frame(&mut stream).await {
            Ok(Some((KIND_RESPONSE, body))) => {
                serde_json::from_slice(&body).map_err(|e| CallError::Protocol {
                    address: address.to_string(),
                    message: e.to_string(),
                })
            }
            Ok(Some((kind, _))) => Err(CallError::Protocol {
                address: address.to_string(),
                message: format!("frame kind {kind} in answer to a call"),
            }),
            Ok(None) => Err(unreachable("connection closed before the answer".into())),
            Err(error) => Err(unreachable(error.to_string())),
        }
    };
    match glommio::timer::timeout(timeout, async {
        Ok::<_, glommio::GlommioError<()>>(work.await)
    })
    .await
    {
        Ok(outcome) => outcome,
        Err(_) => Err(CallError::TimedOut {
            address: address.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_oversized_ones_are_refused() {
        let mut buffer = Vec::new();
        encode_frame(&mut buffer, KIND_RAFT, b"abc");
        encode_frame(&mut buffer, KIND_REQUEST, b"{}");
        let mut reader = futures::io::Cursor::new(buffer);
        futures::executor::block_on(async {
            assert_eq!(
                read_frame(&mut reader).await.unwrap(),
                Some((KIND_RAFT, b"abc".to_vec()))
            );
            assert_eq!(
                read_frame(&mut reader).await.unwrap(),
                Some((KIND_REQUEST, b"{}".to_vec()))
            );
            assert_eq!(read_frame(&mut reader).await.unwrap(), None);
        });
        let mut huge = Vec::new();
        huge.extend_from_slice(&(MAX_FRAME_BYTES as u32 + 1).to_be_bytes());
        let mut reader = futures::io::Cursor::new(huge);
        assert!(futures::executor::block_on(read_frame(&mut reader)).is_err());
    }
}
