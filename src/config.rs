//! Broker configuration: built-in defaults, overridden by an optional TOML file, overridden by flags.
//!
//! Every limit the broker enforces lives here with its unit in its name, so that operators can see
//! and change each bound in one place.

use serde::Deserialize;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The kernel's bounds on a custom scheduler slice (0.1 ms to 100 ms).
pub const SCHED_SLICE_MIN_US: u64 = 100;
pub const SCHED_SLICE_MAX_US: u64 = 100_000;

/// Settings of one broker process. Keys match the TOML file and the `serve` flags (with `-`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// Address the Kafka listener binds on every shard (SO_REUSEPORT).
    pub listen: String,
    /// Address given to clients in Metadata; defaults to `listen`.
    pub advertise: Option<String>,
    /// Named listeners, Kafka style: `PLAINTEXT://127.0.0.1:9092,SASL_PLAINTEXT://0.0.0.0:9093`.
    /// A name is a security protocol, or any name `listener_security_protocol_map` maps to one
    /// (`INTERNAL://10.0.0.5:9094`). Replaces `listen` when set.
    pub listeners: Option<String>,
    /// Addresses given to clients per listener, same form; defaults to each listener's address.
    pub advertised_listeners: Option<String>,
    /// `NAME:PROTOCOL,...` for listeners not named after their security protocol (Kafka's
    /// `listener.security.protocol.map`), e.g. `INTERNAL:SSL,EXTERNAL:SASL_SSL`.
    pub listener_security_protocol_map: Option<String>,
    /// The listener brokers use to reach each other (replica fetches, transaction markers);
    /// defaults to the first listener. On a TLS listener brokers trust `ssl_ca_location` and
    /// present their own certificate; on a SASL listener they log in as
    /// `inter_broker_sasl_username`.
    pub inter_broker_listener_name: Option<String>,
    /// SASL mechanism brokers log in with on a SASL inter-broker listener (Kafka's
    /// `sasl.mechanism.inter.broker.protocol`).
    pub inter_broker_sasl_mechanism: String,
    pub inter_broker_sasl_username: Option<String>,
    pub inter_broker_sasl_password: Option<String>,
    /// `https`: brokers check that a peer's certificate names the host they connect to
    /// (Kafka's `ssl.endpoint.identification.algorithm`); empty: the chain is checked, not the
    /// name.
    pub ssl_endpoint_identification_algorithm: String,
    /// SASL mechanisms served on SASL listeners.
    pub sasl_enabled_mechanisms: String,
    /// Largest request a connection may send before it has authenticated (Kafka's
    /// `sasl.server.max.receive.size`).
    pub sasl_max_receive_size_bytes: usize,
    /// A failed authentication is answered, and its connection closed, after this delay.
    pub connection_failed_authentication_delay_ms: u64,
    /// SASL sessions last this long (KIP-368's `connections.max.reauth.ms`); a client then
    /// re-authenticates on the same connection, or the connection is closed at its next
    /// request. 0: sessions never expire.
    pub connections_max_reauth_ms: u64,
    /// PEM file with the broker's certificate and its chain, for `SSL`/`SASL_SSL` listeners.
    pub ssl_certificate_location: Option<PathBuf>,
    /// PEM file with the certificate's private key.
    pub ssl_key_location: Option<PathBuf>,
    /// PEM file with the CAs client certificates must chain to.
    pub ssl_ca_location: Option<PathBuf>,
    /// Client certificates: `none`, `requested` or `required` (Kafka's `ssl.client.auth`).
    pub ssl_client_auth: String,
    /// How often each shard checks the TLS files for a replaced certificate (SIGHUP reloads at
    /// once).
    pub ssl_reload_check_interval_ms: u64,
    /// Root of partition directories and broker metadata.
    pub data_dir: PathBuf,
    /// Shards to run; `None` = one per core in the process's CPU set.
    pub cores: Option<usize>,
    pub node_id: i32,
    /// tracing filter, e.g. `info` or `riptide=debug`.
    pub log_level: String,
    /// Largest request frame accepted; a larger length prefix closes the connection.
    pub max_request_size_bytes: usize,
    /// Bytes of request frames one shard holds at once, over all its connections; past it,
    /// connections wait before reading more (backpressure, not unbounded growth).
    pub max_request_memory_per_shard_bytes: usize,
    /// Frames up to this size may also use `small_request_memory_per_shard_bytes`, so that
    /// small requests (heartbeats, commits, metadata, fetch requests, small produces) are not
    /// held up when large frames have taken the shard's request memory.
    pub small_request_max_bytes: usize,
    /// Request memory only small frames may take, beside `max_request_memory_per_shard_bytes`.
    pub small_request_memory_per_shard_bytes: usize,
    /// Request memory is reserved as a frame's body arrives: this much before its first bytes,
    /// then up to three times what has arrived ahead of it. A client that declares a frame and
    /// sends it slowly (or not at all) holds only in proportion to what it sent.
    pub request_memory_step_bytes: usize,
    /// Requests a connection may have in progress before the broker stops reading from it.
    pub max_in_flight_requests_per_connection: usize,
    /// A connection with nothing in flight that sends no request for this long is closed
    /// (Kafka's `connections.max.idle.ms`).
    pub connections_max_idle_ms: u64,
    /// Once the first byte of a request frame arrives, the whole frame must arrive within this
    /// (slow senders cannot hold a connection and its request memory indefinitely).
    pub request_read_timeout_ms: u64,
    /// A response the client does not read within this is abandoned with its connection (a
    /// client that never reads cannot pin responses in memory).
    pub response_write_timeout_ms: u64,
    /// Open client connections one shard serves; connections past it are closed on accept.
    pub max_connections_per_shard: usize,
    /// Open client connections one source address may have to the broker, over all shards
    /// (Kafka's `max.connections.per.ip`); connections past it are closed on accept.
    /// [`UNLIMITED_CONNECTIONS_PER_IP`] (Kafka's default) counts nothing.
    pub max_connections_per_ip: usize,
    /// Per-address exceptions to `max_connections_per_ip`, Kafka's
    /// `max.connections.per.ip.overrides` form `ADDRESS:COUNT,ADDRESS:COUNT` (IP addresses).
    pub max_connections_per_ip_overrides: String,
    /// Metadata requests create unknown topics (Kafka's `auto.create.topics.enable`).
    pub auto_create_topics: bool,
    /// Partition count of auto-created topics (Kafka's `num.partitions`).
    pub num_partitions: i32,
    /// Default segment roll size of new topics (Kafka's `log.segment.bytes`).
    pub segment_bytes: u64,
    /// Default largest record batch of new topics (Kafka's `message.max.bytes`).
    pub max_message_bytes: usize,
    /// Per-partition in-memory tail cache that serves fresh data without disk reads.
    pub partition_cache_size_bytes: u64,
    /// Bytes of recently written batches each shard keeps in memory over all its partitions
    /// (the batch cache that serves tailing consumers without disk reads); past it the
    /// shard's oldest cached batches are evicted.
    pub log_cache_size_bytes_per_shard: u64,
    /// Default `flush.messages` of topics (Kafka's `log.flush.interval.messages`): fdatasync
    /// a partition once this many records were written since its last fdatasync. 1 is the
    /// sync policy: acks=all produces are acknowledged only after the fdatasync covering them.
    pub flush_messages: u64,
    /// Default `flush.ms` of topics (Kafka's `log.flush.interval.ms`), in milliseconds:
    /// fdatasync a partition once its oldest unsynced write is this old. 0 is the sync policy.
    pub flush_ms: u64,
    /// How often, in milliseconds, every partition's written data is fdatasync'ed and its
    /// recovery checkpoint recorded. Restart after a crash validates only data written since
    /// the last checkpoint, so this bounds recovery time.
    pub recovery_checkpoint_interval_ms: u64,
    /// How often, in milliseconds, each shard applies retention (`retention.ms`,
    /// `retention.bytes`, DeleteRecords) to its partitions (Kafka's
    /// `log.retention.check.interval.ms`).
    pub retention_check_interval_ms: u64,
    /// How often, in milliseconds, each shard looks for a compacted topic's partition with
    /// data to clean (Kafka's `log.cleaner.backoff.ms`).
    pub compaction_interval_ms: u64,
    /// Bytes of batches compaction reads and filters between two yields to the shard (bounds
    /// the latency compaction adds to produce and fetch on the shard).
    pub compaction_slice_bytes: u64,
    /// Distinct keys one compaction pass tracks (about 40 bytes of memory each); a larger
    /// dirty section is cleaned over several passes.
    pub compaction_max_keys: usize,
    /// O_DIRECT writes in flight at once per partition.
    pub log_writes_in_flight: usize,
    /// Under the sync flush policy, each active segment is zero-filled (and fdatasync'ed) this
    /// far ahead of the writer, so appends overwrite written blocks and their fdatasync is a
    /// device flush without an ext4 journal commit; 0 turns it off.
    pub log_prewrite_ahead_bytes: u64,
    /// Bytes at the end of each partition's log whose batch headers rebuild the idempotent
    /// producers' state at start-up (retries after a restart are recognised if they fall in
    /// it); read once per partition, so it bounds start-up work too.
    pub producer_state_rebuild_bytes: u64,
    /// Fetches send cold data (segments on disk) from the page cache to the socket with splice,
    /// never through user space; false reads it into memory and writes it (for comparison).
    pub fetch_zero_copy: bool,
    /// Incremental fetch sessions (KIP-227) one shard keeps; 0 turns sessions off.
    pub fetch_session_slots_per_shard: usize,
    /// Partitions one fetch session may hold; a larger full fetch gets no session.
    pub fetch_session_max_partitions: usize,
    /// A consumer's fetch session idle this long may be evicted for a new one (Kafka's
    /// `min.incremental.fetch.session.eviction.ms`).
    pub fetch_session_eviction_ms: u64,
    /// How often, in milliseconds, a partition that failed on a storage error retries
    /// (resumes once the disk accepts writes again, e.g. when space returns).
    pub storage_retry_interval_ms: u64,
    /// Memory glommio registers with io_uring per shard (locked memory, 3 × this).
    pub io_memory_bytes: usize,
    /// Capacity of each shard-to-shard channel, in messages.
    pub shard_channel_capacity: usize,
    /// The kernel scheduler slice each shard thread asks for (Linux 6.12+ EEVDF custom slice;
    /// io_uring worker threads it starts inherit it); 0 keeps the kernel default. A short
    /// slice lets the io_uring workers that run each fdatasync, which share the shard's core,
    /// take it promptly instead of waiting for a busy shard's slice to run out.
    pub shard_sched_slice_us: u64,
    /// Topics the broker may hold; a bound on metadata size and open files.
    pub max_topics: usize,
    /// Partitions one topic may have.
    pub max_partitions_per_topic: i32,
    /// Check every request against the ACLs of the metadata image (Kafka's `authorizer.class.name`
    /// set); false serves every request and answers the ACL APIs with SECURITY_DISABLED.
    pub authorizer_enabled: bool,
    /// Principals that pass every check, Kafka's form `User:admin;User:ops`. Brokers that
    /// replicate or write transaction markers over the Kafka listeners need to be among them
    /// while the authorizer is on.
    pub super_users: String,
    /// A resource that no ACL names is open to everyone (Kafka's
    /// `allow.everyone.if.no.acl.found`); false denies it.
    pub allow_everyone_if_no_acl_found: bool,
    /// ACL bindings the cluster may hold; CreateAcls past it fails.
    pub max_acls: usize,
    /// Client quota entities the cluster may hold; AlterClientQuotas adding one past it fails.
    pub max_client_quotas: usize,
    /// Samples of the client quota rate window (Kafka's `quota.window.num`).
    pub quota_window_num: usize,
    /// Length of one sample of the client quota rate window, milliseconds (Kafka's
    /// `quota.window.size.seconds`).
    pub quota_window_size_ms: u64,
    /// Admin HTTP listener on shard 0 (`/metrics`, `/v1/status/ready`, `/v1/cluster/health`),
    /// HOST:PORT; empty to run without it.
    pub admin_listen: String,
    /// Partitions of `__consumer_offsets`, fixed when it is created (Kafka's
    /// `offsets.topic.num.partitions`); a group's coordinator is the shard owning its partition.
    pub offsets_topic_num_partitions: i32,
    /// How long the first rebalance of an empty group waits for more members, milliseconds
    /// (Kafka's `group.initial.rebalance.delay.ms`).
    pub group_initial_rebalance_delay_ms: u64,
    /// Smallest `session.timeout.ms` a classic group member may ask for, milliseconds.
    pub group_min_session_timeout_ms: i32,
    /// Largest `session.timeout.ms` a classic group member may ask for, milliseconds.
    pub group_max_session_timeout_ms: i32,
    /// Members one group may hold (classic or consumer protocol); more get GROUP_MAX_SIZE_REACHED.
    pub group_max_size: usize,
    /// Groups the broker may coordinate, split evenly over the shards; past it new groups are
    /// refused (GROUP_MAX_SIZE_REACHED).
    pub group_max_groups: usize,
    /// Committed offsets of a group without members expire this long after the group became
    /// empty (or after their commit, if later), minutes (Kafka's `offsets.retention.minutes`).
    pub offsets_retention_minutes: u64,
    /// How often expired offsets are looked for, milliseconds.
    pub offsets_retention_check_interval_ms: u64,
    /// Longest metadata string of one committed offset, bytes (larger: OFFSET_METADATA_TOO_LARGE).
    pub offset_metadata_max_bytes: usize,
    /// Session timeout of KIP-848 (`group.protocol=consumer`) members, milliseconds: the
    /// broker, not the client, sets it.
    pub group_consumer_session_timeout_ms: u64,
    /// Heartbeat interval the broker gives KIP-848 members, milliseconds.
    pub group_consumer_heartbeat_interval_ms: u64,
    /// Roles of this node as KRaft names them: `broker`, `controller`, or both
    /// (`broker,controller`). A node that is not a controller joins the quorum's voters only as
    /// an observer of the metadata log.
    pub process_roles: String,
    /// The controller quorum, `ID@HOST:PORT,...` (Kafka's `controller.quorum.voters`); empty
    /// makes this node a one-voter quorum of itself (the single-node broker).
    pub controller_quorum_voters: String,
    /// Listener of the controller (Raft messages between voters, broker registration and
    /// heartbeats, forwarded admin requests), HOST:PORT; never the client port. Defaults to this
    /// node's entry in `controller_quorum_voters`.
    pub controller_listen: Option<String>,
    /// `PLAINTEXT`, or `SSL`: the controller listener and every node dialling it use TLS with
    /// certificates on both ends (`ssl_certificate_location`, `ssl_key_location`, chained to
    /// `ssl_ca_location`); with the authorizer on, a connecting node's principal needs
    /// CLUSTER_ACTION on the cluster (or to be a super user).
    pub controller_listener_security_protocol: String,
    /// Rack of this broker (Kafka's `broker.rack`): replicas of a partition go to distinct racks
    /// where there are enough.
    pub rack: Option<String>,
    /// Replication factor of topics created without one (Kafka's `default.replication.factor`).
    pub default_replication_factor: i16,
    /// How often a broker heartbeats to the active controller, milliseconds (Kafka's
    /// `broker.heartbeat.interval.ms`).
    pub broker_heartbeat_interval_ms: u64,
    /// A broker without a heartbeat for this long is fenced, milliseconds (Kafka's
    /// `broker.session.timeout.ms`).
    pub broker_session_timeout_ms: u64,
    /// Raft election timeout of the controller quorum, milliseconds (randomised between once and
    /// twice this); leaders heartbeat at a fifth of it.
    pub controller_quorum_election_timeout_ms: u64,
    /// How long an admin request waits for its metadata change to commit, milliseconds; past it
    /// the client gets REQUEST_TIMED_OUT (retriable).
    pub controller_request_timeout_ms: u64,
    /// Entries of the metadata log kept after the last snapshot before a new snapshot is taken
    /// and the log truncated.
    pub metadata_log_max_entries_before_snapshot: u64,
    /// Raft messages queued towards one peer voter; past it messages are dropped (Raft
    /// retransmits) rather than memory growing while a peer is unreachable.
    pub controller_peer_queue_messages: usize,
    /// A follower that has not caught up with the leader for this long leaves the ISR,
    /// milliseconds (Kafka's `replica.lag.time.max.ms`).
    pub replica_lag_time_max_ms: u64,
    /// Bytes a follower asks for per partition in one fetch (`replica.fetch.max.bytes`).
    pub replica_fetch_max_bytes: usize,
    /// Bytes a follower asks for in one fetch response (`replica.fetch.response.max.bytes`).
    pub replica_fetch_response_max_bytes: usize,
    /// Longest a follower's fetch waits at the leader for new data, milliseconds
    /// (`replica.fetch.wait.max.ms`); also bounds how late followers learn the high watermark.
    pub replica_fetch_wait_max_ms: u64,
    /// Default of the topic config `min.insync.replicas`: acks=all produces need this many
    /// in-sync replicas.
    pub min_insync_replicas: u32,
    /// Default of the topic config `unclean.leader.election.enable`: when no in-sync replica
    /// is alive, elect a live out-of-sync one (availability over the records it lacks).
    pub unclean_leader_election_enable: bool,
    /// Partitions of `__transaction_state`, fixed when it is created (Kafka's
    /// `transaction.state.log.num.partitions`); a transactional id's coordinator is the leader
    /// of its partition.
    pub transaction_state_log_num_partitions: i32,
    /// Longest transaction timeout a producer may ask for, milliseconds (Kafka's
    /// `transaction.max.timeout.ms`); longer: INVALID_TRANSACTION_TIMEOUT.
    pub transaction_max_timeout_ms: u64,
    /// A transactional id without a transaction for this long is forgotten, milliseconds
    /// (Kafka's `transactional.id.expiration.ms`).
    pub transactional_id_expiration_ms: u64,
    /// How often the coordinator looks for transactions past their timeout (and aborts them)
    /// and for expired transactional ids, milliseconds (Kafka's
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`).
    pub transaction_cleanup_interval_ms: u64,
    /// How long a partition remembers an idle producer's sequence state, milliseconds (Kafka's
    /// `producer.id.expiration.ms`).
    pub producer_id_expiration_ms: u64,
    /// Transactional ids one shard coordinates at once; past it InitProducerId is refused
    /// with COORDINATOR_NOT_AVAILABLE rather than memory growing without bound.
    pub transaction_max_ids_per_shard: usize,
    /// Not a setting: the dynamic broker configs in effect on this node, from the metadata log
    /// (empty in the static config; see `cluster::broker_config`).
    #[serde(skip)]
    pub dynamic: crate::cluster::broker_config::DynamicConfigs,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            listen: "127.0.0.1:9092".to_string(),
            advertise: None,
            data_dir: PathBuf::from("./riptide-data"),
            cores: None,
            node_id: 0,
            log_level: "info".to_string(),
            max_request_size_bytes: 100 * 1024 * 1024,
            max_request_memory_per_shard_bytes: 256 * 1024 * 1024,
            small_request_max_bytes: 64 * 1024,
            small_request_memory_per_shard_bytes: 16 * 1024 * 1024,
            request_memory_step_bytes: 4096,
            max_in_flight_requests_per_connection: 128,
            listeners: None,
            advertised_listeners: None,
            listener_security_protocol_map: None,
            inter_broker_listener_name: None,
            inter_broker_sasl_mechanism: "SCRAM-SHA-512".into(),
            inter_broker_sasl_username: None,
            inter_broker_sasl_password: None,
            ssl_endpoint_identification_algorithm: "https".into(),
            sasl_enabled_mechanisms: "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512".into(),
            sasl_max_receive_size_bytes: 524_288,
            connection_failed_authentication_delay_ms: 100,
            connections_max_reauth_ms: 0,
            ssl_certificate_location: None,
            ssl_key_location: None,
            ssl_ca_location: None,
            ssl_client_auth: "none".into(),
            ssl_reload_check_interval_ms: 10_000,
            connections_max_idle_ms: 600_000,
            request_read_timeout_ms: 30_000,
            response_write_timeout_ms: 60_000,
            max_connections_per_shard: 65_536,
            max_connections_per_ip: UNLIMITED_CONNECTIONS_PER_IP,
            max_connections_per_ip_overrides: String::new(),
            auto_create_topics: true,
            num_partitions: 1,
            segment_bytes: 128 * 1024 * 1024,
            max_message_bytes: 1024 * 1024 + 12,
            partition_cache_size_bytes: 8 * 1024 * 1024,
            log_cache_size_bytes_per_shard: 128 * 1024 * 1024,
            flush_messages: i64::MAX as u64,
            flush_ms: i64::MAX as u64,
            recovery_checkpoint_interval_ms: 5_000,
            retention_check_interval_ms: 300_000,
            compaction_interval_ms: 15_000,
            compaction_slice_bytes: 256 * 1024,
            compaction_max_keys: 500_000,
            log_writes_in_flight: 4,
            log_prewrite_ahead_bytes: 0,
            producer_state_rebuild_bytes: 4 * 1024 * 1024,
            storage_retry_interval_ms: 1_000,
            fetch_zero_copy: true,
            fetch_session_slots_per_shard: 1000,
            fetch_session_max_partitions: 50_000,
            fetch_session_eviction_ms: 120_000,
            io_memory_bytes: 4 * 1024 * 1024,
            shard_channel_capacity: 1024,
            shard_sched_slice_us: 0,
            max_topics: 10_000,
            max_partitions_per_topic: 10_000,
            authorizer_enabled: false,
            super_users: String::new(),
            allow_everyone_if_no_acl_found: false,
            max_acls: 100_000,
            max_client_quotas: 100_000,
            quota_window_num: 11,
            quota_window_size_ms: 1_000,
            admin_listen: "127.0.0.1:9644".to_string(),
            offsets_topic_num_partitions: 50,
            group_initial_rebalance_delay_ms: 3_000,
            group_min_session_timeout_ms: 6_000,
            group_max_session_timeout_ms: 1_800_000,
            group_max_size: 1_000,
            group_max_groups: 100_000,
            offsets_retention_minutes: 10_080,
            offsets_retention_check_interval_ms: 600_000,
            offset_metadata_max_bytes: 4_096,
            group_consumer_session_timeout_ms: 45_000,
            group_consumer_heartbeat_interval_ms: 5_000,
            process_roles: "broker,controller".to_string(),
            controller_quorum_voters: String::new(),
            controller_listen: None,
            controller_listener_security_protocol: "PLAINTEXT".into(),
            rack: None,
            default_replication_factor: 1,
            broker_heartbeat_interval_ms: 2_000,
            broker_session_timeout_ms: 9_000,
            controller_quorum_election_timeout_ms: 1_000,
            controller_request_timeout_ms: 10_000,
            metadata_log_max_entries_before_snapshot: 1_000,
            controller_peer_queue_messages: 4_096,
            replica_lag_time_max_ms: 30_000,
            replica_fetch_max_bytes: 1024 * 1024,
            replica_fetch_response_max_bytes: 10 * 1024 * 1024,
            replica_fetch_wait_max_ms: 500,
            min_insync_replicas: 1,
            unclean_leader_election_enable: false,
            transaction_state_log_num_partitions: 50,
            transaction_max_timeout_ms: 900_000,
            transactional_id_expiration_ms: 604_800_000,
            transaction_cleanup_interval_ms: 10_000,
            producer_id_expiration_ms: 86_400_000,
            transaction_max_ids_per_shard: 100_000,
            dynamic: Default::default(),
        }
    }
}

impl BrokerConfig {
    /// Reads a TOML file on top of the defaults; unknown keys are an error, not silently ignored.
    pub fn from_toml_file(path: &Path) -> anyhow::Result<BrokerConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
        Self::from_toml_str(&text)
            .map_err(|e| anyhow::anyhow!("invalid config file {}: {e}", path.display()))
    }

    pub fn from_toml_str(text: &str) -> anyhow::Result<BrokerConfig> {
        Ok(toml::from_str(text)?)
    }

    /// Host and port of the first listener's advertised address (kept in the broker's
    /// registration for records that predate per-listener endpoints).
    pub fn advertised_host_port(&self) -> anyhow::Result<(String, i32)> {
        let listeners = self.kafka_listeners()?;
        split_host_port(&listeners[0].advertise)
    }

    /// Every listener's advertised endpoint, as registered with the controller.
    pub fn advertised_endpoints(
        &self,
    ) -> anyhow::Result<Vec<crate::cluster::metadata::BrokerEndpoint>> {
        self.kafka_listeners()?
            .into_iter()
            .map(|listener| {
                let (host, port) = split_host_port(&listener.advertise)?;
                Ok(crate::cluster::metadata::BrokerEndpoint {
                    name: listener.name,
                    host,
                    port,
                    security_protocol: listener.protocol.name().to_string(),
                })
            })
            .collect()
    }

    /// The Kafka listeners: `listeners` (with `advertised_listeners`), else one PLAINTEXT
    /// listener on `listen` advertised as `advertise`.
    pub fn kafka_listeners(&self) -> anyhow::Result<Vec<Listener>> {
        let Some(listeners) = &self.listeners else {
            return Ok(vec![Listener {
                name: SecurityProtocol::Plaintext.name().to_string(),
                protocol: SecurityProtocol::Plaintext,
                listen: self.listen.clone(),
                advertise: self
                    .advertise
                    .clone()
                    .unwrap_or_else(|| self.listen.clone()),
            }]);
        };
        let protocol_map = self.listener_protocol_map()?;
        let advertised = match &self.advertised_listeners {
            Some(list) => parse_listener_list(list)?,
            None => Vec::new(),
        };
        let mut out: Vec<Listener> = Vec::new();
        for (name, listen) in parse_listener_list(listeners)? {
            anyhow::ensure!(
                out.iter().all(|l| l.name != name),
                "listener {name} is given twice"
            );
            let protocol = match protocol_map.iter().find(|(n, _)| *n == name) {
                Some((_, protocol)) => *protocol,
                None => SecurityProtocol::from_name(&name).map_err(|_| {
                    anyhow::anyhow!(
                        "listener {name} is neither a security protocol nor in \
                         listener_security_protocol_map"
                    )
                })?,
            };
            let advertise = advertised
                .iter()
                .find(|(n, _)| *n == name)
                .map_or_else(|| listen.clone(), |(_, address)| address.clone());
            out.push(Listener {
                name,
                protocol,
                listen,
                advertise,
            });
        }
        anyhow::ensure!(!out.is_empty(), "listeners is empty");
        for (name, _) in &advertised {
            anyhow::ensure!(
                out.iter().any(|l| l.name == *name),
                "advertised listener {name} has no listener"
            );
        }
        Ok(out)
    }

    /// `listener_security_protocol_map` parsed: (listener name, protocol).
    fn listener_protocol_map(&self) -> anyhow::Result<Vec<(String, SecurityProtocol)>> {
        let Some(map) = &self.listener_security_protocol_map else {
            return Ok(Vec::new());
        };
        map.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| {
                let (name, protocol) = item.split_once(':').ok_or_else(|| {
                    anyhow::anyhow!(
                        "listener_security_protocol_map entry {item:?} is not NAME:PROTOCOL"
                    )
                })?;
                check_listener_name(name)?;
                Ok((name.to_string(), SecurityProtocol::from_name(protocol)?))
            })
            .collect()
    }

    /// The listener brokers connect to each other on: `inter_broker_listener_name`, else the
    /// first listener.
    pub fn inter_broker_listener(&self) -> anyhow::Result<Listener> {
        let listeners = self.kafka_listeners()?;
        match &self.inter_broker_listener_name {
            None => Ok(listeners[0].clone()),
            Some(name) => listeners
                .into_iter()
                .find(|l| l.name == *name)
                .ok_or_else(|| {
                    anyhow::anyhow!("inter_broker_listener_name {name} is not among the listeners")
                }),
        }
    }

    /// TLS files and client authentication, when a listener uses TLS (`None` otherwise). The
    /// files themselves are read when shards start (and checked by then).
    pub fn tls_settings(&self) -> anyhow::Result<Option<crate::security::tls::TlsSettings>> {
        let client_auth = crate::security::tls::ClientAuth::from_name(&self.ssl_client_auth)?;
        let uses_tls = self
            .kafka_listeners()?
            .iter()
            .any(|listener| listener.protocol.uses_tls());
        if !uses_tls {
            return Ok(None);
        }
        let (Some(certificate_path), Some(key_path)) =
            (&self.ssl_certificate_location, &self.ssl_key_location)
        else {
            anyhow::bail!(
                "SSL and SASL_SSL listeners need ssl_certificate_location and ssl_key_location"
            );
        };
        anyhow::ensure!(
            client_auth == crate::security::tls::ClientAuth::None || self.ssl_ca_location.is_some(),
            "ssl_client_auth {} needs ssl_ca_location",
            self.ssl_client_auth
        );
        Ok(Some(crate::security::tls::TlsSettings {
            certificate_path: certificate_path.clone(),
            key_path: key_path.clone(),
            ca_path: self.ssl_ca_location.clone(),
            client_auth,
        }))
    }

    /// How this broker connects to the others: the inter-broker listener's name and protocol,
    /// the TLS client material and the SASL login it needs.
    pub fn inter_broker_security(
        &self,
    ) -> anyhow::Result<crate::security::inter_broker::InterBrokerSettings> {
        use crate::security::inter_broker::{InterBrokerSettings, SaslLogin, TlsClientSettings};
        let listener = self.inter_broker_listener()?;
        let verify_hostname = match self.ssl_endpoint_identification_algorithm.as_str() {
            "https" => true,
            "" => false,
            other => anyhow::bail!(
                "ssl_endpoint_identification_algorithm {other:?} is not \"https\" or \"\""
            ),
        };
        let tls = if listener.protocol.uses_tls() {
            let (Some(certificate_path), Some(key_path)) =
                (&self.ssl_certificate_location, &self.ssl_key_location)
            else {
                anyhow::bail!("a TLS inter-broker listener needs ssl_certificate_location and ssl_key_location");
            };
            let Some(ca_path) = &self.ssl_ca_location else {
                anyhow::bail!(
                    "a TLS inter-broker listener needs ssl_ca_location (the CA brokers' \
                     certificates chain to)"
                );
            };
            Some(TlsClientSettings {
                ca_path: ca_path.clone(),
                certificate_path: certificate_path.clone(),
                key_path: key_path.clone(),
                verify_hostname,
            })
        } else {
            None
        };
        let sasl = if listener.protocol.requires_sasl() {
            let mechanism = SaslMechanism::from_name(&self.inter_broker_sasl_mechanism)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "unknown inter_broker_sasl_mechanism {}",
                        self.inter_broker_sasl_mechanism
                    )
                })?;
            anyhow::ensure!(
                self.sasl_mechanisms()?.contains(&mechanism),
                "inter_broker_sasl_mechanism {} is not in sasl_enabled_mechanisms",
                mechanism.name()
            );
            let (Some(username), Some(password)) = (
                &self.inter_broker_sasl_username,
                &self.inter_broker_sasl_password,
            ) else {
                anyhow::bail!(
                    "a SASL inter-broker listener needs inter_broker_sasl_username and \
                     inter_broker_sasl_password"
                );
            };
            Some(SaslLogin {
                mechanism,
                username: username.clone(),
                password: password.clone(),
            })
        } else {
            None
        };
        Ok(InterBrokerSettings {
            listener_name: listener.name,
            protocol: listener.protocol,
            tls,
            sasl,
        })
    }

    /// TLS of the controller listener: (server side, client side), or `None` for PLAINTEXT.
    pub fn controller_tls_settings(
        &self,
    ) -> anyhow::Result<
        Option<(
            crate::security::tls::TlsSettings,
            crate::security::inter_broker::TlsClientSettings,
        )>,
    > {
        match self.controller_listener_security_protocol.as_str() {
            "PLAINTEXT" => return Ok(None),
            "SSL" => {}
            other => anyhow::bail!(
                "controller_listener_security_protocol {other} is not PLAINTEXT or SSL"
            ),
        }
        let (Some(certificate_path), Some(key_path), Some(ca_path)) = (
            &self.ssl_certificate_location,
            &self.ssl_key_location,
            &self.ssl_ca_location,
        ) else {
            anyhow::bail!(
                "an SSL controller listener needs ssl_certificate_location, ssl_key_location \
                 and ssl_ca_location"
            );
        };
        let server = crate::security::tls::TlsSettings {
            certificate_path: certificate_path.clone(),
            key_path: key_path.clone(),
            ca_path: Some(ca_path.clone()),
            client_auth: crate::security::tls::ClientAuth::Required,
        };
        let client = crate::security::inter_broker::TlsClientSettings {
            ca_path: ca_path.clone(),
            certificate_path: certificate_path.clone(),
            key_path: key_path.clone(),
            verify_hostname: self.ssl_endpoint_identification_algorithm == "https",
        };
        Ok(Some((server, client)))
    }

    /// SASL mechanisms served, parsed from `sasl_enabled_mechanisms`.
    /// `max_connections_per_ip_overrides`, parsed.
    pub fn connections_per_ip_overrides(&self) -> anyhow::Result<Vec<(IpAddr, usize)>> {
        parse_connections_per_ip_overrides(&self.max_connections_per_ip_overrides)
    }

    pub fn sasl_mechanisms(&self) -> anyhow::Result<Vec<SaslMechanism>> {
        self.sasl_enabled_mechanisms
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(|m| {
                SaslMechanism::from_name(m)
                    .ok_or_else(|| anyhow::anyhow!("unknown SASL mechanism {m}"))
            })
            .collect()
    }

    /// Rejects settings that would make the broker misbehave later rather than at start.
    pub fn validate(&self) -> anyhow::Result<()> {
        split_host_port(&self.listen)?;
        self.advertised_host_port()?;
        for listener in self.kafka_listeners()? {
            split_host_port(&listener.listen)?;
            split_host_port(&listener.advertise)?;
        }
        self.sasl_mechanisms()?;
        self.tls_settings()?;
        self.inter_broker_security()?;
        self.controller_tls_settings()?;
        anyhow::ensure!(
            self.ssl_reload_check_interval_ms >= 10,
            "ssl_reload_check_interval_ms must be at least 10"
        );
        anyhow::ensure!(
            self.sasl_max_receive_size_bytes >= 1024,
            "sasl_max_receive_size_bytes must be at least 1024"
        );
        anyhow::ensure!(
            self.max_request_size_bytes >= 1024,
            "max_request_size_bytes must be at least 1024"
        );
        anyhow::ensure!(
            self.max_request_memory_per_shard_bytes >= self.max_request_size_bytes,
            "max_request_memory_per_shard_bytes must be at least max_request_size_bytes"
        );
        anyhow::ensure!(
            self.small_request_max_bytes <= self.max_request_size_bytes
                && self.small_request_memory_per_shard_bytes >= self.small_request_max_bytes,
            "small_request_max_bytes must be at most max_request_size_bytes and \
             small_request_memory_per_shard_bytes at least small_request_max_bytes"
        );
        anyhow::ensure!(
            self.request_memory_step_bytes >= 1
                && self.request_memory_step_bytes <= self.small_request_max_bytes,
            "request_memory_step_bytes must be at least 1 and at most small_request_max_bytes"
        );
        anyhow::ensure!(
            self.max_in_flight_requests_per_connection >= 1,
            "max_in_flight_requests_per_connection must be at least 1"
        );
        anyhow::ensure!(
            self.connections_max_idle_ms >= 100
                && self.request_read_timeout_ms >= 100
                && self.response_write_timeout_ms >= 100,
            "connections_max_idle_ms, request_read_timeout_ms and response_write_timeout_ms must be at least 100"
        );
        anyhow::ensure!(
            self.fetch_session_slots_per_shard <= 1_000_000
                && (1..=10_000_000).contains(&self.fetch_session_max_partitions),
            "fetch_session_slots_per_shard must be at most 1000000 and \
             fetch_session_max_partitions between 1 and 10000000"
        );
        anyhow::ensure!(
            self.max_connections_per_shard >= 1,
            "max_connections_per_shard must be at least 1"
        );
        let ip_overrides = self.connections_per_ip_overrides()?;
        // Kafka's rule: a default of 0 refuses every client, which only makes sense beside
        // overrides that let some in.
        anyhow::ensure!(
            self.max_connections_per_ip >= 1 || !ip_overrides.is_empty(),
            "max_connections_per_ip may be 0 only with max_connections_per_ip_overrides"
        );
        anyhow::ensure!(
            self.num_partitions >= 1,
            "num_partitions must be at least 1"
        );
        anyhow::ensure!(
            self.segment_bytes >= 1024 * 1024,
            "segment_bytes must be at least 1 MiB"
        );
        anyhow::ensure!(self.cores != Some(0), "cores must be at least 1");
        anyhow::ensure!(
            self.flush_messages >= 1,
            "flush_messages must be at least 1"
        );
        anyhow::ensure!(
            self.recovery_checkpoint_interval_ms >= 1,
            "recovery_checkpoint_interval_ms must be at least 1"
        );
        anyhow::ensure!(
            self.retention_check_interval_ms >= 1,
            "retention_check_interval_ms must be at least 1"
        );
        anyhow::ensure!(
            self.compaction_interval_ms >= 1,
            "compaction_interval_ms must be at least 1"
        );
        anyhow::ensure!(
            self.compaction_slice_bytes >= 4096,
            "compaction_slice_bytes must be at least 4096"
        );
        anyhow::ensure!(
            self.compaction_max_keys >= 1,
            "compaction_max_keys must be at least 1"
        );
        anyhow::ensure!(
            (1..=64).contains(&self.log_writes_in_flight),
            "log_writes_in_flight must be in 1..=64"
        );
        anyhow::ensure!(
            self.log_prewrite_ahead_bytes.is_multiple_of(4096)
                && self.log_prewrite_ahead_bytes <= 1024 * 1024 * 1024,
            "log_prewrite_ahead_bytes must be a multiple of 4096 and at most 1 GiB"
        );
        anyhow::ensure!(
            self.storage_retry_interval_ms >= 1,
            "storage_retry_interval_ms must be at least 1"
        );
        if !self.admin_listen.is_empty() {
            split_host_port(&self.admin_listen)?;
        }
        anyhow::ensure!(self.node_id >= 0, "node_id must not be negative");
        for user in self.super_users.split(';').map(str::trim) {
            anyhow::ensure!(
                user.is_empty()
                    || user
                        .split_once(':')
                        .is_some_and(|(k, n)| !k.is_empty() && !n.is_empty()),
                "super_users entry {user:?} is not Type:name (e.g. User:admin)"
            );
        }
        anyhow::ensure!(self.max_acls >= 1, "max_acls must be at least 1");
        anyhow::ensure!(
            self.max_client_quotas >= 1,
            "max_client_quotas must be at least 1"
        );
        anyhow::ensure!(
            (2..=1000).contains(&self.quota_window_num),
            "quota_window_num must be in 2..=1000"
        );
        anyhow::ensure!(
            (1..=3_600_000).contains(&self.quota_window_size_ms),
            "quota_window_size_ms must be in 1..=3600000"
        );
        anyhow::ensure!(
            (1..=self.max_partitions_per_topic.max(1)).contains(&self.offsets_topic_num_partitions),
            "offsets_topic_num_partitions must be in 1..=max_partitions_per_topic"
        );
        anyhow::ensure!(
            self.group_min_session_timeout_ms >= 1
                && self.group_min_session_timeout_ms <= self.group_max_session_timeout_ms,
            "group_min_session_timeout_ms must be at least 1 and at most group_max_session_timeout_ms"
        );
        anyhow::ensure!(
            self.group_max_size >= 1,
            "group_max_size must be at least 1"
        );
        anyhow::ensure!(
            self.group_max_groups >= 1,
            "group_max_groups must be at least 1"
        );
        anyhow::ensure!(
            (1..=self.max_partitions_per_topic.max(1))
                .contains(&self.transaction_state_log_num_partitions),
            "transaction_state_log_num_partitions must be in 1..=max_partitions_per_topic"
        );
        anyhow::ensure!(
            self.transaction_max_timeout_ms >= 1
                && self.transactional_id_expiration_ms >= 1
                && self.transaction_cleanup_interval_ms >= 1
                && self.producer_id_expiration_ms >= 1
                && self.transaction_max_ids_per_shard >= 1,
            "transaction timeouts, intervals and limits must be at least 1"
        );
        anyhow::ensure!(
            self.offsets_retention_minutes >= 1,
            "offsets_retention_minutes must be at least 1"
        );
        anyhow::ensure!(
            self.offsets_retention_check_interval_ms >= 1,
            "offsets_retention_check_interval_ms must be at least 1"
        );
        anyhow::ensure!(
            self.offset_metadata_max_bytes <= i16::MAX as usize,
            "offset_metadata_max_bytes must be at most 32767"
        );
        anyhow::ensure!(
            self.group_consumer_session_timeout_ms >= 1
                && self.group_consumer_heartbeat_interval_ms >= 1
                && self.group_consumer_heartbeat_interval_ms < self.group_consumer_session_timeout_ms,
            "group_consumer_heartbeat_interval_ms must be positive and below group_consumer_session_timeout_ms"
        );
        anyhow::ensure!(
            self.shard_channel_capacity >= 1,
            "shard_channel_capacity must be at least 1"
        );
        anyhow::ensure!(
            self.shard_sched_slice_us == 0
                || (SCHED_SLICE_MIN_US..=SCHED_SLICE_MAX_US).contains(&self.shard_sched_slice_us),
            "shard_sched_slice_us must be 0 (kernel default) or in {SCHED_SLICE_MIN_US}..={SCHED_SLICE_MAX_US}"
        );
        let roles = self.roles()?;
        let voters = self.quorum_voters()?;
        if voters.is_empty() {
            anyhow::ensure!(
                roles.controller && roles.broker,
                "a node without controller_quorum_voters is a single-node cluster and must have both roles"
            );
        } else {
            let is_voter = voters.iter().any(|voter| voter.node_id == self.node_id);
            anyhow::ensure!(
                is_voter == roles.controller,
                "node {} must be listed in controller_quorum_voters exactly when it has the controller role",
                self.node_id
            );
        }
        if let Some(listen) = &self.controller_listen {
            split_host_port(listen)?;
        }
        anyhow::ensure!(
            (1..=5).contains(&self.default_replication_factor),
            "default_replication_factor must be in 1..=5"
        );
        anyhow::ensure!(
            self.replica_lag_time_max_ms >= 100,
            "replica_lag_time_max_ms must be at least 100"
        );
        anyhow::ensure!(
            (1024..=1 << 30).contains(&self.replica_fetch_max_bytes)
                && self.replica_fetch_max_bytes <= self.replica_fetch_response_max_bytes
                && self.replica_fetch_response_max_bytes <= 1 << 30,
            "replica_fetch_max_bytes must be in 1 KiB..=replica_fetch_response_max_bytes <= 1 GiB"
        );
        anyhow::ensure!(
            (1..=60_000).contains(&self.replica_fetch_wait_max_ms),
            "replica_fetch_wait_max_ms must be in 1..=60000"
        );
        anyhow::ensure!(
            (1..=5).contains(&self.min_insync_replicas),
            "min_insync_replicas must be in 1..=5"
        );
        anyhow::ensure!(
            self.broker_heartbeat_interval_ms >= 10
                && self.broker_heartbeat_interval_ms < self.broker_session_timeout_ms,
            "broker_heartbeat_interval_ms must be at least 10 and below broker_session_timeout_ms"
        );
        anyhow::ensure!(
            self.controller_quorum_election_timeout_ms >= 50,
            "controller_quorum_election_timeout_ms must be at least 50"
        );
        anyhow::ensure!(
            self.controller_request_timeout_ms >= 100,
            "controller_request_timeout_ms must be at least 100"
        );
        anyhow::ensure!(
            self.metadata_log_max_entries_before_snapshot >= 10,
            "metadata_log_max_entries_before_snapshot must be at least 10"
        );
        anyhow::ensure!(
            self.controller_peer_queue_messages >= 16,
            "controller_peer_queue_messages must be at least 16"
        );
        Ok(())
    }

    /// The roles of `process_roles`.
    pub fn roles(&self) -> anyhow::Result<Roles> {
        let mut roles = Roles {
            broker: false,
            controller: false,
        };
        for role in self.process_roles.split(',').map(str::trim) {
            match role {
                "broker" => roles.broker = true,
                "controller" => roles.controller = true,
                other => anyhow::bail!("unknown process role {other:?} (broker, controller)"),
            }
        }
        anyhow::ensure!(
            roles.broker || roles.controller,
            "process_roles names no role"
        );
        Ok(roles)
    }

    /// The voters of `controller_quorum_voters`; empty for a single-node cluster.
    pub fn quorum_voters(&self) -> anyhow::Result<Vec<Voter>> {
        let mut voters: Vec<Voter> = Vec::new();
        for entry in self
            .controller_quorum_voters
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
        {
            let (id, address) = entry.split_once('@').ok_or_else(|| {
                anyhow::anyhow!("controller_quorum_voters entry {entry:?} is not ID@HOST:PORT")
            })?;
            let node_id: i32 = id.parse().map_err(|_| {
                anyhow::anyhow!("controller_quorum_voters entry {entry:?} has an invalid id")
            })?;
            anyhow::ensure!(node_id >= 0, "voter ids must not be negative");
            split_host_port(address)?;
            anyhow::ensure!(
                voters.iter().all(|voter| voter.node_id != node_id),
                "voter {node_id} is listed twice in controller_quorum_voters"
            );
            voters.push(Voter {
                node_id,
                address: address.to_string(),
            });
        }
        anyhow::ensure!(voters.len() <= 7, "at most 7 controller voters");
        Ok(voters)
    }

    /// Where the controller listens: the flag, else this node's voter address.
    pub fn controller_listen_address(&self) -> Option<String> {
        self.controller_listen.clone().or_else(|| {
            self.quorum_voters()
                .ok()?
                .into_iter()
                .find(|voter| voter.node_id == self.node_id)
                .map(|voter| voter.address)
        })
    }
}

/// The roles one node plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub broker: bool,
    pub controller: bool,
}

/// One controller voter: its node id and controller address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voter {
    pub node_id: i32,
    pub address: String,
}

/// Splits `host:port` (IPv6 hosts in brackets) into its parts.
/// A Kafka security protocol, as listener names give it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecurityProtocol {
    Plaintext,
    SaslPlaintext,
    Ssl,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    pub fn from_name(name: &str) -> anyhow::Result<SecurityProtocol> {
        match name {
            "PLAINTEXT" => Ok(SecurityProtocol::Plaintext),
            "SASL_PLAINTEXT" => Ok(SecurityProtocol::SaslPlaintext),
            "SSL" => Ok(SecurityProtocol::Ssl),
            "SASL_SSL" => Ok(SecurityProtocol::SaslSsl),
            other => anyhow::bail!("unknown listener security protocol {other}"),
        }
    }

    /// Clients must authenticate with SASL before anything but ApiVersions and SASL requests.
    pub fn requires_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }

    /// Connections run TLS from their first byte.
    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }
}

/// A SASL mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    Scram(crate::security::scram::Mechanism),
}

impl SaslMechanism {
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::Scram(mechanism) => mechanism.name(),
        }
    }

    pub fn from_name(name: &str) -> Option<SaslMechanism> {
        if name == "PLAIN" {
            return Some(SaslMechanism::Plain);
        }
        crate::security::scram::Mechanism::from_name(name).map(SaslMechanism::Scram)
    }
}

/// One Kafka listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// The listener's name (`PLAINTEXT`, `INTERNAL`, ...): clients are given other brokers'
    /// endpoints on the listener of the same name.
    pub name: String,
    pub protocol: SecurityProtocol,
    /// HOST:PORT bound on every shard.
    pub listen: String,
    /// HOST:PORT given to clients that connect on this listener.
    pub advertise: String,
}

/// `NAME://HOST:PORT,...` → (name, HOST:PORT).
/// `max_connections_per_ip` that limits nothing: Kafka's default, `Int.MaxValue`.
pub const UNLIMITED_CONNECTIONS_PER_IP: usize = i32::MAX as usize;

/// Kafka's `max.connections.per.ip.overrides` form: `ADDRESS:COUNT` entries separated by commas,
/// whitespace around either ignored; the count follows the last colon, so IPv6 addresses need
/// no brackets (`::1:10`), though `[::1]:10` is accepted too. Host names are not resolved.
pub fn parse_connections_per_ip_overrides(text: &str) -> anyhow::Result<Vec<(IpAddr, usize)>> {
    let mut overrides: Vec<(IpAddr, usize)> = Vec::new();
    for entry in text
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
    {
        let (address, count) = entry.rsplit_once(':').ok_or_else(|| {
            anyhow::anyhow!("max_connections_per_ip_overrides entry {entry:?} is not ADDRESS:COUNT")
        })?;
        let address = address.trim();
        let address = address
            .strip_prefix('[')
            .and_then(|inner| inner.strip_suffix(']'))
            .unwrap_or(address);
        let ip: IpAddr = address.parse().map_err(|_| {
            anyhow::anyhow!(
                "max_connections_per_ip_overrides entry {entry:?}: {address:?} is not an IP address"
            )
        })?;
        let count: usize = count.trim().parse().map_err(|_| {
            anyhow::anyhow!(
                "max_connections_per_ip_overrides entry {entry:?}: the count is not a number from 0"
            )
        })?;
        let ip = ip.to_canonical();
        anyhow::ensure!(
            overrides.iter().all(|(seen, _)| *seen != ip),
            "max_connections_per_ip_overrides names {ip} twice"
        );
        overrides.push((ip, count));
    }
    Ok(overrides)
}

fn parse_listener_list(list: &str) -> anyhow::Result<Vec<(String, String)>> {
    list.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            let (name, address) = item
                .split_once("://")
                .ok_or_else(|| anyhow::anyhow!("listener {item:?} is not NAME://HOST:PORT"))?;
            check_listener_name(name)?;
            Ok((name.to_string(), address.to_string()))
        })
        .collect()
}

/// Listener names are upper-case letters, digits and `_`, as Kafka requires, at most 64 bytes.
fn check_listener_name(name: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'),
        "listener name {name:?} must be 1-64 characters of A-Z, 0-9 and _"
    );
    Ok(())
}

pub fn split_host_port(address: &str) -> anyhow::Result<(String, i32)> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("address {address:?} is not HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| anyhow::anyhow!("address {address:?} has an invalid port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    anyhow::ensure!(!host.is_empty(), "address {address:?} has no host");
    Ok((host.to_string(), i32::from(port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_overrides_defaults_and_rejects_unknown_keys() {
        let config =
            BrokerConfig::from_toml_str("listen = \"127.0.0.1:19092\"\nnum_partitions = 3\n")
                .unwrap();
        assert_eq!(config.listen, "127.0.0.1:19092");
        assert_eq!(config.num_partitions, 3);
        assert_eq!(config.data_dir, PathBuf::from("./riptide-data"));
        assert!(BrokerConfig::from_toml_str("no_such_key = 1").is_err());
    }

    #[test]
    fn connections_per_ip_overrides_parse_kafka_form() {
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        assert_eq!(parse_connections_per_ip_overrides("").unwrap(), vec![]);
        assert_eq!(parse_connections_per_ip_overrides(" , ").unwrap(), vec![]);
        assert_eq!(
            parse_connections_per_ip_overrides(
                "127.0.0.1:5, 10.1.2.3 : 0,::1:7,[fe80::2]:9,::ffff:192.168.0.1:2"
            )
            .unwrap(),
            vec![
                (ip("127.0.0.1"), 5),
                (ip("10.1.2.3"), 0),
                (ip("::1"), 7),
                (ip("fe80::2"), 9),
                (ip("192.168.0.1"), 2),
            ]
        );
        for bad in [
            "127.0.0.1",
            "127.0.0.1:",
            "127.0.0.1:-1",
            "127.0.0.1:many",
            "broker.example.com:3",
            "300.0.0.1:3",
            ":3",
            "127.0.0.1:3,127.0.0.1:4",
        ] {
            let error = parse_connections_per_ip_overrides(bad)
                .expect_err(bad)
                .to_string();
            assert!(
                error.contains("max_connections_per_ip_overrides"),
                "{error}"
            );
        }
    }

    #[test]
    fn connections_per_ip_zero_needs_overrides() {
        let mut config = BrokerConfig {
            max_connections_per_ip: 0,
            ..BrokerConfig::default()
        };
        assert!(config.validate().is_err());
        config.max_connections_per_ip_overrides = "127.0.0.1:10".into();
        config.validate().unwrap();
        config.max_connections_per_ip_overrides = "localhost:10".into();
        assert!(config.validate().is_err());
        let config = BrokerConfig::from_toml_str(
            "max_connections_per_ip = 3\nmax_connections_per_ip_overrides = \"127.0.0.2:9\"\n",
        )
        .unwrap();
        assert_eq!(config.max_connections_per_ip, 3);
        assert_eq!(
            config.connections_per_ip_overrides().unwrap(),
            vec![("127.0.0.2".parse().unwrap(), 9)]
        );
    }

    #[test]
    fn advertise_defaults_to_listen() {
        let config = BrokerConfig::default();
        assert_eq!(
            config.advertised_host_port().unwrap(),
            ("127.0.0.1".to_string(), 9092)
        );
        assert_eq!(
            split_host_port("[::1]:9093").unwrap(),
            ("::1".to_string(), 9093)
        );
        assert!(split_host_port("nohost").is_err());
        assert!(split_host_port("host:99999").is_err());
    }

    #[test]
    fn tls_listeners_need_their_files() {
        let mut config = BrokerConfig {
            listeners: Some("PLAINTEXT://127.0.0.1:9092,SASL_SSL://127.0.0.1:9093".into()),
            ..BrokerConfig::default()
        };
        let protocols: Vec<_> = config
            .kafka_listeners()
            .unwrap()
            .iter()
            .map(|l| l.protocol)
            .collect();
        assert_eq!(
            protocols,
            [SecurityProtocol::Plaintext, SecurityProtocol::SaslSsl]
        );
        assert!(SecurityProtocol::SaslSsl.requires_sasl() && SecurityProtocol::SaslSsl.uses_tls());
        assert!(!SecurityProtocol::Ssl.requires_sasl() && SecurityProtocol::Ssl.uses_tls());
        assert!(config.validate().is_err(), "no certificate given");
        config.ssl_certificate_location = Some("/etc/riptide/broker.pem".into());
        config.ssl_key_location = Some("/etc/riptide/broker.key".into());
        assert!(config.tls_settings().unwrap().is_some());
        config.ssl_client_auth = "required".into();
        assert!(config.tls_settings().is_err(), "client auth without a CA");
        config.ssl_ca_location = Some("/etc/riptide/ca.pem".into());
        assert!(config.tls_settings().is_ok());
        config.ssl_client_auth = "maybe".into();
        assert!(config.tls_settings().is_err());
        config.listeners = Some("PLAINTEXT://127.0.0.1:9092".into());
        config.ssl_client_auth = "none".into();
        assert!(config.tls_settings().unwrap().is_none());
    }

    #[test]
    fn named_listeners_map_to_protocols_and_pick_the_inter_broker_one() {
        let mut config = BrokerConfig {
            listeners: Some(
                "PLAINTEXT://127.0.0.1:9092,INTERNAL://10.0.0.5:9094,EXTERNAL://0.0.0.0:9093"
                    .into(),
            ),
            advertised_listeners: Some("EXTERNAL://kafka.example.com:9093".into()),
            listener_security_protocol_map: Some("INTERNAL:SSL,EXTERNAL:SASL_SSL".into()),
            inter_broker_listener_name: Some("INTERNAL".into()),
            ssl_certificate_location: Some("/etc/riptide/broker.pem".into()),
            ssl_key_location: Some("/etc/riptide/broker.key".into()),
            ..BrokerConfig::default()
        };
        let listeners = config.kafka_listeners().unwrap();
        let named: Vec<_> = listeners
            .iter()
            .map(|l| (l.name.as_str(), l.protocol, l.advertise.as_str()))
            .collect();
        assert_eq!(
            named,
            [
                ("PLAINTEXT", SecurityProtocol::Plaintext, "127.0.0.1:9092"),
                ("INTERNAL", SecurityProtocol::Ssl, "10.0.0.5:9094"),
                (
                    "EXTERNAL",
                    SecurityProtocol::SaslSsl,
                    "kafka.example.com:9093"
                ),
            ]
        );
        let endpoints = config.advertised_endpoints().unwrap();
        assert_eq!(endpoints[2].host, "kafka.example.com");
        assert_eq!(endpoints[2].security_protocol, "SASL_SSL");
        // A TLS inter-broker listener needs the CA its peers chain to.
        assert!(config.inter_broker_security().is_err());
        config.ssl_ca_location = Some("/etc/riptide/ca.pem".into());
        let settings = config.inter_broker_security().unwrap();
        assert_eq!(settings.listener_name, "INTERNAL");
        assert!(settings.tls.as_ref().unwrap().verify_hostname);
        assert!(settings.sasl.is_none());
        config.ssl_endpoint_identification_algorithm = String::new();
        let settings = config.inter_broker_security().unwrap();
        assert!(!settings.tls.unwrap().verify_hostname);
        config.ssl_endpoint_identification_algorithm = "dns".into();
        assert!(config.inter_broker_security().is_err());
        config.ssl_endpoint_identification_algorithm = "https".into();
        // A SASL inter-broker listener needs a login with an enabled mechanism.
        config.inter_broker_listener_name = Some("EXTERNAL".into());
        assert!(config.inter_broker_security().is_err(), "no SASL user");
        config.inter_broker_sasl_username = Some("broker".into());
        config.inter_broker_sasl_password = Some("secret".into());
        assert!(config.inter_broker_security().unwrap().sasl.is_some());
        config.sasl_enabled_mechanisms = "PLAIN".into();
        assert!(
            config.inter_broker_security().is_err(),
            "SCRAM-SHA-512 not enabled"
        );
        config.inter_broker_listener_name = Some("NOWHERE".into());
        assert!(config.inter_broker_security().is_err());
        // Without the map, a name must be a protocol; names are upper-case.
        config.listener_security_protocol_map = None;
        assert!(config.kafka_listeners().is_err());
        config.listeners = Some("internal://127.0.0.1:9092".into());
        assert!(config.kafka_listeners().is_err());
        config.listeners = Some("PLAINTEXT://127.0.0.1:9092,PLAINTEXT://127.0.0.1:9093".into());
        assert!(config.kafka_listeners().is_err(), "a name given twice");
    }
}
