//! One handler per Kafka API. [`handle_request`] checks the API key and version against the
//! supported table, decodes the header and body, runs the handler and frames its response.

mod add_offsets_to_txn;
mod add_partitions_to_txn;
mod alter_client_quotas;
mod alter_configs;
mod alter_user_scram_credentials;
mod api_versions;
mod consumer_group_describe;
mod consumer_group_heartbeat;
mod create_acls;
mod create_partitions;
mod create_topics;
mod delete_acls;
mod delete_groups;
mod delete_records;
mod delete_topics;
mod describe_acls;
mod describe_client_quotas;
mod describe_cluster;
mod describe_configs;
mod describe_groups;
mod describe_producers;
mod describe_quorum;
mod describe_transactions;
mod describe_user_scram_credentials;
mod end_txn;
mod fetch;
pub mod fetch_session;
mod find_coordinator;
mod heartbeat;
mod incremental_alter_configs;
mod init_producer_id;
mod join_group;
mod leave_group;
mod list_groups;
mod list_offsets;
mod list_transactions;
mod metadata;
mod offset_commit;
mod offset_delete;
mod offset_fetch;
mod offset_for_leader_epoch;
mod owners;
mod produce;
mod record_policy;
mod sasl_authenticate;
mod sasl_handshake;
mod sync_group;
mod txn_offset_commit;
mod write_txn_markers;

use crate::protocol::{self, RequestPreamble};
use crate::security::acl::{self, Operation, ResourceType};
use crate::security::quota::{self, QuotaKind};
use crate::shard::Shard;
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
use std::net::SocketAddr;
use std::rc::Rc;

/// A framed response, possibly in several chunks so record data can be sent without copying:
/// cached batches as the `Bytes` they are stored in, cold batches as regions of segment files
/// that the connection sends page cache to socket (splice), never through user space.
pub struct Response {
    chunks: Vec<ResponseChunk>,
}

/// One piece of a response, written in order.
pub enum ResponseChunk {
    Bytes(Bytes),
    File(crate::log::FileRegion),
}

impl ResponseChunk {
    pub fn len(&self) -> usize {
        match self {
            ResponseChunk::Bytes(bytes) => bytes.len(),
            ResponseChunk::File(region) => region.size_bytes,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Response {
    pub fn from_frame(frame: BytesMut) -> Response {
        Response {
            chunks: vec![ResponseChunk::Bytes(frame.freeze())],
        }
    }

    /// A response whose chunks, laid back to back, are the whole frame (size prefix included).
    pub fn from_chunks(chunks: Vec<ResponseChunk>) -> Response {
        Response { chunks }
    }

    pub fn chunks(&self) -> &[ResponseChunk] {
        &self.chunks
    }

    /// Bytes on the wire, size prefix included.
    pub fn size_bytes(&self) -> usize {
        self.chunks.iter().map(ResponseChunk::len).sum()
    }
}

/// What the connection does after a request.
pub enum Outcome {
    Respond(Response),
    /// Produce with acks=0: Kafka sends nothing back.
    NoResponse,
    /// The request broke the protocol; the reason is logged and the connection closed.
    Close(String),
    /// Answer, then close (a failed authentication).
    RespondAndClose(Response, String),
}

/// The request context every handler gets.
pub struct RequestContext {
    pub shard: Rc<Shard>,
    pub header: RequestHeader,
    pub api_version: i16,
    pub peer: SocketAddr,
    /// The connection's listener and authentication.
    pub session: Rc<crate::security::session::Session>,
    /// Bytes of the request frame (header and body, without the size prefix), what Kafka's
    /// producer quota counts.
    pub request_size_bytes: usize,
}

impl RequestContext {
    /// The client quota of `kind` that applies to this request (its sharing group and
    /// bound), if any. With no quota in the cluster this is one emptiness check.
    pub fn client_quota(&self, kind: QuotaKind) -> Option<(quota::QuotaTags, f64)> {
        let image = self.shard.metadata();
        if image.client_quotas.is_empty() {
            return None;
        }
        let client_id = self.header.client_id.as_deref().unwrap_or("");
        let resolved = self
            .session
            .with_principal(|principal| {
                image.client_quotas.resolve(
                    kind.key(),
                    quota::user_of_principal(principal),
                    client_id,
                )
            })
            .flatten();
        if resolved.is_some() {
            self.session.mark_quota_applies();
        }
        resolved
    }

    /// Records the shard time of a request against its request_percentage quota (Kafka
    /// counts percent of one thread: 100 × seconds, per second). Kafka bounds this throttle
    /// by one sample window.
    pub fn record_request_time(
        &self,
        tags: quota::QuotaTags,
        bound: f64,
        busy: std::time::Duration,
    ) -> u64 {
        let percent_seconds = busy.as_secs_f64() * 100.0;
        self.record_quota(QuotaKind::Request, tags, bound, percent_seconds)
    }

    /// Records `value` against a quota from [`Self::client_quota`] and returns the throttle
    /// time in ms; a throttled connection handles its next request only after it.
    pub fn record_quota(
        &self,
        kind: QuotaKind,
        tags: quota::QuotaTags,
        bound: f64,
        value: f64,
    ) -> u64 {
        let throttle_ms =
            quota::record_and_throttle(kind, tags, bound, value, quota_window(&self.shard.config));
        if throttle_ms > 0 {
            self.session
                .throttle(std::time::Duration::from_millis(throttle_ms));
            crate::metrics::record_throttle(kind, throttle_ms);
        }
        throttle_ms
    }

    /// Whether this connection's principal may do `operation` on the named resource, by the
    /// ACLs of the current metadata image (so grants and revocations apply to open
    /// connections). Always true when the authorizer is off, without touching the image.
    pub fn authorize(&self, operation: Operation, resource_type: ResourceType, name: &str) -> bool {
        self.check(|acls, policy, who| acls.authorize(policy, who, operation, resource_type, name))
    }

    /// [`Self::authorize`] on the cluster resource.
    pub fn authorize_cluster(&self, operation: Operation) -> bool {
        self.authorize(operation, ResourceType::Cluster, acl::CLUSTER_NAME)
    }

    /// Whether the principal may do `operation` on some resource of the type (Kafka's
    /// authorizeByResourceType).
    pub fn authorize_any(&self, operation: Operation, resource_type: ResourceType) -> bool {
        self.check(|acls, policy, who| acls.authorize_any(policy, who, operation, resource_type))
    }

    /// Kafka's authorized-operations bit field of a resource: every operation of its type when
    /// the authorizer is off.
    pub fn authorized_operations(&self, resource_type: ResourceType, name: &str) -> i32 {
        if !self.shard.config.authorizer_enabled {
            return acl::all_operations(resource_type);
        }
        let image = self.shard.metadata();
        let policy = self.policy();
        self.session
            .with_principal(|principal| {
                let who = acl::Requester {
                    principal,
                    host: self.peer.ip(),
                };
                image
                    .acls
                    .authorized_operations(&policy, &who, resource_type, name)
            })
            .unwrap_or(0)
    }

    /// Whether the authorizer is on (the ACL APIs answer SECURITY_DISABLED otherwise).
    pub fn authorizer_enabled(&self) -> bool {
        self.shard.config.authorizer_enabled
    }

    fn policy(&self) -> acl::Policy<'_> {
        acl::Policy::from_config(&self.shard.config)
    }

    fn check(
        &self,
        decide: impl FnOnce(&acl::AclStore, &acl::Policy<'_>, &acl::Requester<'_>) -> bool,
    ) -> bool {
        if !self.shard.config.authorizer_enabled {
            return true;
        }
        let image = self.shard.metadata();
        let policy = self.policy();
        let allowed = self
            .session
            .with_principal(|principal| {
                let who = acl::Requester {
                    principal,
                    host: self.peer.ip(),
                };
                decide(&image.acls, &policy, &who)
            })
            .unwrap_or(false);
        if !allowed {
            tracing::debug!(peer = %self.peer, api_key = self.header.request_api_key,
                "request not authorized");
        }
        allowed
    }
}

pub async fn handle_request(
    shard: Rc<Shard>,
    frame: Bytes,
    peer: SocketAddr,
    session: Rc<crate::security::session::Session>,
) -> Outcome {
    // Metrics hook: requests, latency and protocol rejections per API key on this shard.
    // A raw SASL token (after SaslHandshake v0) counts as the SaslAuthenticate it stands for.
    let api_key = if session.expects_raw_sasl_token() {
        Some(ApiKey::SaslAuthenticate as i16)
    } else {
        RequestPreamble::read(&frame).map(|preamble| preamble.api_key)
    };
    // Under a client quota the connection's requests run one at a time, each after the
    // throttle of the one before (Kafka's muted channel). One `Cell` read otherwise.
    let turn_session = session.clone();
    let _turn = turn_session.quota_turn().await;
    if let Some(throttle) = session.throttle_remaining() {
        use futures::FutureExt;
        futures::select! {
            _ = shard.stopped().fuse() => {}
            _ = glommio::timer::sleep(throttle).fuse() => {}
        }
    }
    let started = std::time::Instant::now();
    let outcome = handle_request_inner(shard, frame, peer, session).await;
    if let Some(api_key) = api_key {
        let rejected = matches!(outcome, Outcome::Close(_));
        crate::metrics::record_request(api_key, started.elapsed(), rejected);
    }
    outcome
}

async fn handle_request_inner(
    shard: Rc<Shard>,
    mut frame: Bytes,
    peer: SocketAddr,
    session: Rc<crate::security::session::Session>,
) -> Outcome {
    let request_size_bytes = frame.len();
    if session.expects_raw_sasl_token() {
        return sasl_authenticate::handle_raw_token(&shard, &session, peer, &frame).await;
    }
    let Some(preamble) = RequestPreamble::read(&frame) else {
        return Outcome::Close("request shorter than a header".into());
    };
    let Ok(key) = ApiKey::try_from(preamble.api_key) else {
        return Outcome::Close(format!("unknown API key {}", preamble.api_key));
    };
    let Some(supported) = protocol::supported_api(key) else {
        return Outcome::Close(format!("API {key:?} is not supported by this broker"));
    };
    let version = preamble.api_version;
    if version < supported.min_version || version > supported.max_version {
        if key == ApiKey::ApiVersions {
            // KIP-511: answer in v0 with UNSUPPORTED_VERSION and our table, so the client can
            // pick a version we speak.
            return api_versions::unsupported_version_response(preamble.correlation_id);
        }
        return Outcome::Close(format!(
            "{key:?} version {version} is not supported (supported {}..={})",
            supported.min_version, supported.max_version
        ));
    }
    if !session.is_authenticated()
        && !matches!(
            key,
            ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
        )
    {
        return Outcome::Close(format!(
            "{key:?} before SASL authentication on a {} listener",
            session.listener.protocol.name()
        ));
    }
    if session.session_expired()
        && !matches!(
            key,
            ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
        )
    {
        return Outcome::Close(format!(
            "{key:?} after the SASL session expired without re-authentication \
             (connections_max_reauth_ms)"
        ));
    }
    let header = match protocol::decode_request_header(&mut frame, key, version) {
        Ok(header) => header,
        Err(error) => return Outcome::Close(format!("malformed {key:?} request header: {error}")),
    };
    let context = RequestContext {
        shard,
        header,
        api_version: version,
        peer,
        session,
        request_size_bytes,
    };
    // request_percentage (Kafka's request quota): the time this shard spends running the
    // request, against a share of one core. Not for the APIs Kafka exempts (ApiVersions,
    // SASL, broker-to-broker markers); Fetch measures itself (followers are exempt).
    let exempt = matches!(
        key,
        ApiKey::ApiVersions
            | ApiKey::SaslHandshake
            | ApiKey::SaslAuthenticate
            | ApiKey::WriteTxnMarkers
            | ApiKey::Fetch
    );
    let request_quota = if exempt {
        None
    } else {
        context.client_quota(QuotaKind::Request)
    };
    match request_quota {
        None => dispatch(&context, key, frame).await,
        Some((tags, bound)) => {
            let (outcome, busy) = timed_polls(dispatch(&context, key, frame)).await;
            context.record_request_time(tags, bound, busy);
            outcome
        }
    }
}

/// Runs `work` and sums the time spent polling it: the shard's own time on the request,
/// without its waits (long polls, replication, other shards' work), which is what Kafka's
/// request quota counts as request handler time.
pub(crate) async fn timed_polls<F: std::future::Future>(
    work: F,
) -> (F::Output, std::time::Duration) {
    let mut work = std::pin::pin!(work);
    let mut busy = std::time::Duration::ZERO;
    let output = std::future::poll_fn(|cx| {
        let started = std::time::Instant::now();
        let poll = work.as_mut().poll(cx);
        busy += started.elapsed();
        poll
    })
    .await;
    (output, busy)
}

/// Decodes the body, runs the handler, frames its response.
async fn dispatch(context: &RequestContext, key: ApiKey, frame: Bytes) -> Outcome {
    macro_rules! dispatch {
        ($handler:path) => {
            match decode_body(context, frame, key) {
                Ok(request) => respond(context, key, &$handler(context, request).await),
                Err(outcome) => outcome,
            }
        };
    }
    match key {
        ApiKey::ApiVersions => dispatch!(api_versions::handle),
        ApiKey::Metadata => dispatch!(metadata::handle),
        ApiKey::Produce => produce::handle_frame(context, frame).await,
        ApiKey::Fetch => fetch::handle_frame(context, frame).await,
        ApiKey::ListOffsets => dispatch!(list_offsets::handle),
        ApiKey::OffsetForLeaderEpoch => dispatch!(offset_for_leader_epoch::handle),
        ApiKey::FindCoordinator => dispatch!(find_coordinator::handle),
        ApiKey::CreateTopics => dispatch!(create_topics::handle),
        ApiKey::DeleteTopics => dispatch!(delete_topics::handle),
        ApiKey::DeleteRecords => dispatch!(delete_records::handle),
        ApiKey::CreatePartitions => dispatch!(create_partitions::handle),
        ApiKey::DescribeConfigs => dispatch!(describe_configs::handle),
        ApiKey::AlterConfigs => dispatch!(alter_configs::handle),
        ApiKey::IncrementalAlterConfigs => dispatch!(incremental_alter_configs::handle),
        ApiKey::DescribeCluster => dispatch!(describe_cluster::handle),
        ApiKey::DescribeQuorum => dispatch!(describe_quorum::handle),
        ApiKey::InitProducerId => dispatch!(init_producer_id::handle),
        ApiKey::JoinGroup => dispatch!(join_group::handle),
        ApiKey::SyncGroup => dispatch!(sync_group::handle),
        ApiKey::Heartbeat => dispatch!(heartbeat::handle),
        ApiKey::LeaveGroup => dispatch!(leave_group::handle),
        ApiKey::OffsetCommit => dispatch!(offset_commit::handle),
        ApiKey::OffsetFetch => dispatch!(offset_fetch::handle),
        ApiKey::OffsetDelete => dispatch!(offset_delete::handle),
        ApiKey::ListGroups => dispatch!(list_groups::handle),
        ApiKey::DescribeGroups => dispatch!(describe_groups::handle),
        ApiKey::DeleteGroups => dispatch!(delete_groups::handle),
        ApiKey::ConsumerGroupHeartbeat => dispatch!(consumer_group_heartbeat::handle),
        ApiKey::ConsumerGroupDescribe => dispatch!(consumer_group_describe::handle),
        ApiKey::WriteTxnMarkers => dispatch!(write_txn_markers::handle),
        ApiKey::DescribeProducers => dispatch!(describe_producers::handle),
        ApiKey::AddPartitionsToTxn => dispatch!(add_partitions_to_txn::handle),
        ApiKey::AddOffsetsToTxn => dispatch!(add_offsets_to_txn::handle),
        ApiKey::EndTxn => dispatch!(end_txn::handle),
        ApiKey::TxnOffsetCommit => dispatch!(txn_offset_commit::handle),
        ApiKey::DescribeTransactions => dispatch!(describe_transactions::handle),
        ApiKey::ListTransactions => dispatch!(list_transactions::handle),
        ApiKey::SaslHandshake => dispatch!(sasl_handshake::handle),
        ApiKey::SaslAuthenticate => match decode_body(context, frame, key) {
            Ok(request) => sasl_authenticate::handle(context, request).await,
            Err(outcome) => outcome,
        },
        ApiKey::DescribeUserScramCredentials => {
            dispatch!(describe_user_scram_credentials::handle)
        }
        ApiKey::AlterUserScramCredentials => dispatch!(alter_user_scram_credentials::handle),
        ApiKey::CreateAcls => dispatch!(create_acls::handle),
        ApiKey::DescribeAcls => dispatch!(describe_acls::handle),
        ApiKey::DeleteAcls => dispatch!(delete_acls::handle),
        ApiKey::DescribeClientQuotas => dispatch!(describe_client_quotas::handle),
        ApiKey::AlterClientQuotas => dispatch!(alter_client_quotas::handle),
        _ => Outcome::Close(format!("API {key:?} has no handler")),
    }
}

fn decode_body<Req: Decodable>(
    context: &RequestContext,
    mut body: Bytes,
    key: ApiKey,
) -> Result<Req, Outcome> {
    Req::decode(&mut body, context.api_version).map_err(|error| {
        Outcome::Close(format!(
            "malformed {key:?} v{} request: {error}",
            context.api_version
        ))
    })
}

pub(crate) fn respond<Resp: Encodable>(
    context: &RequestContext,
    key: ApiKey,
    response: &Resp,
) -> Outcome {
    match protocol::encode_response(
        key,
        context.api_version,
        context.header.correlation_id,
        response,
    ) {
        Ok(frame) => Outcome::Respond(Response::from_frame(frame)),
        Err(error) => {
            tracing::error!(
                ?key,
                version = context.api_version,
                "cannot encode response: {error}"
            );
            Outcome::Close(format!("cannot encode {key:?} response: {error}"))
        }
    }
}

/// The broker's client quota window (`quota_window_num` × `quota_window_size_ms`).
pub(crate) fn quota_window(config: &crate::config::BrokerConfig) -> quota::QuotaWindow {
    quota::QuotaWindow {
        samples: config.quota_window_num,
        window_size_ms: config.quota_window_size_ms,
    }
}

/// Every `quota_window_size_ms`, sends what this shard measured for client quotas to the
/// other shards, which add it to their own measurements: quotas hold per broker, as in
/// Kafka, though a client's connections may land on different shards. Sends nothing while
/// no quota is in use.
pub async fn share_quota_measurements(shard: Rc<Shard>) {
    use futures::FutureExt;
    let window = quota_window(&shard.config);
    let mut stopped = shard.stopped().fuse();
    loop {
        futures::select! {
            _ = stopped => return,
            _ = glommio::timer::sleep(std::time::Duration::from_millis(window.window_size_ms)).fuse() => {}
        }
        let shares = quota::take_unshared(window);
        if shares.is_empty() {
            continue;
        }
        let shares = std::sync::Arc::new(shares);
        for peer in (0..shard.count).filter(|&peer| peer != shard.id) {
            let shares = shares.clone();
            let sent = shard
                .invoke_on(peer, move |_| async move {
                    quota::record_shared(&shares, window);
                })
                .await;
            if sent.is_err() {
                return; // shutting down
            }
        }
    }
}

/// Kafka's topic-name field type from a `&str`.
pub(crate) fn topic_name(name: &str) -> kafka_protocol::messages::TopicName {
    kafka_protocol::messages::TopicName(kafka_protocol::protocol::StrBytes::from_string(
        name.to_string(),
    ))
}

/// The host and port a client on this connection's listener reaches `broker` at: this node's
/// own address on that listener; another node's endpoint on the listener of the same name
/// (`None` if it has none: Kafka leaves such brokers out).
pub(crate) fn broker_endpoint(
    context: &RequestContext,
    broker: &crate::cluster::metadata::BrokerRecord,
) -> Option<(String, i32)> {
    if broker.node_id == context.shard.config.node_id {
        if let Ok(own) = crate::config::split_host_port(&context.session.listener.advertise) {
            return Some(own);
        }
    }
    broker.endpoint(&context.session.listener.name)
}

pub(crate) fn str_bytes(value: &str) -> kafka_protocol::protocol::StrBytes {
    kafka_protocol::protocol::StrBytes::from_string(value.to_string())
}
