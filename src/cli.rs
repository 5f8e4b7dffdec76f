//! Command line: `riptide serve` and friends.

use crate::config::BrokerConfig;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "riptide", version, about = "Kafka-compatible streaming broker")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a node: a single-node broker by default, or a member of a cluster
    /// (`--node-id`, `--process-roles`, `--controller-quorum-voters`).
    Serve(Box<ServeArgs>),
    /// Check (default), dry-run or apply the host tuning profile (tuning/production.toml).
    Tune(crate::tune::TuneArgs),
    /// Measure the data directory's disk and write <data_dir>/io-config.toml.
    Iotune(crate::tune::iotune::IotuneArgs),
    /// Topics: create, list, describe, delete, alter-config, produce, consume.
    Topic(crate::admin_cli::TopicArgs),
    /// Consumer groups: list, describe, delete, seek.
    Group(crate::admin_cli::GroupArgs),
    /// Cluster: info.
    Cluster(crate::admin_cli::ClusterArgs),
    /// SCRAM users: create, delete, list.
    User(crate::admin_cli::UserArgs),
    /// ACLs: add, list, remove.
    Acl(crate::admin_cli::AclArgs),
    /// Client quotas: alter, describe.
    Quota(crate::admin_cli::QuotaArgs),
}

/// Every flag is also a key of the TOML file given by `--config`; flags win over the file.
#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Kafka listener, HOST:PORT [default: 127.0.0.1:9092].
    #[arg(long)]
    pub listen: Option<String>,
    /// Address advertised to clients [default: the listen address].
    #[arg(long)]
    pub advertise: Option<String>,
    /// Data directory [default: ./riptide-data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Number of shards (pinned cores) [default: all cores of the CPU set].
    #[arg(long)]
    pub cores: Option<usize>,
    #[arg(long)]
    pub node_id: Option<i32>,
    /// Log filter (tracing env-filter syntax) [default: info].
    #[arg(long)]
    pub log_level: Option<String>,
    #[arg(long)]
    pub max_request_size_bytes: Option<usize>,
    #[arg(long)]
    pub max_request_memory_per_shard_bytes: Option<usize>,
    /// Frames up to this size may use the small-request memory [default: 65536].
    #[arg(long)]
    pub small_request_max_bytes: Option<usize>,
    /// Request memory kept for small frames only [default: 16777216].
    #[arg(long)]
    pub small_request_memory_per_shard_bytes: Option<usize>,
    /// Request memory a frame reserves before its first body bytes; then up to three times
    /// what arrived ahead [default: 4096].
    #[arg(long)]
    pub request_memory_step_bytes: Option<usize>,
    #[arg(long)]
    pub max_in_flight_requests_per_connection: Option<usize>,
    /// Kafka listeners, e.g. PLAINTEXT://127.0.0.1:9092,SASL_PLAINTEXT://0.0.0.0:9093
    /// (replaces --listen).
    #[arg(long)]
    pub listeners: Option<String>,
    /// Advertised address per listener, same form [default: each listener's address].
    #[arg(long)]
    pub advertised_listeners: Option<String>,
    /// Security protocol of listeners not named after one, e.g. INTERNAL:SSL,EXTERNAL:SASL_SSL.
    #[arg(long)]
    pub listener_security_protocol_map: Option<String>,
    /// Listener brokers reach each other on [default: the first listener].
    #[arg(long)]
    pub inter_broker_listener_name: Option<String>,
    /// SASL mechanism of the inter-broker login [default: SCRAM-SHA-512].
    #[arg(long)]
    pub inter_broker_sasl_mechanism: Option<String>,
    /// SASL user brokers log in as on a SASL inter-broker listener.
    #[arg(long)]
    pub inter_broker_sasl_username: Option<String>,
    /// Its password (prefer the config file: flags show in the process list).
    #[arg(long)]
    pub inter_broker_sasl_password: Option<String>,
    /// https: check that a peer broker's certificate names its host; empty: chain only
    /// [default: https].
    #[arg(long)]
    pub ssl_endpoint_identification_algorithm: Option<String>,
    /// SASL mechanisms served [default: PLAIN,SCRAM-SHA-256,SCRAM-SHA-512].
    #[arg(long)]
    pub sasl_enabled_mechanisms: Option<String>,
    /// Largest request before authentication [default: 524288].
    #[arg(long)]
    pub sasl_max_receive_size_bytes: Option<usize>,
    /// PEM certificate chain for SSL/SASL_SSL listeners.
    #[arg(long)]
    pub ssl_certificate_location: Option<PathBuf>,
    /// PEM private key of the certificate.
    #[arg(long)]
    pub ssl_key_location: Option<PathBuf>,
    /// PEM CAs that client certificates must chain to.
    #[arg(long)]
    pub ssl_ca_location: Option<PathBuf>,
    /// Client certificates: none, requested or required [default: none].
    #[arg(long)]
    pub ssl_client_auth: Option<String>,
    /// How often TLS files are checked for a new certificate [default: 10000].
    #[arg(long)]
    pub ssl_reload_check_interval_ms: Option<u64>,
    /// Delay before a failed authentication is answered and closed [default: 100].
    #[arg(long)]
    pub connection_failed_authentication_delay_ms: Option<u64>,
    /// SASL sessions expire after this long; clients re-authenticate (KIP-368) [default: 0, never].
    #[arg(long)]
    pub connections_max_reauth_ms: Option<u64>,
    /// Close connections idle (nothing in flight, no request) this long [default: 600000].
    #[arg(long)]
    pub connections_max_idle_ms: Option<u64>,
    /// A request frame must arrive whole within this of its first byte [default: 30000].
    #[arg(long)]
    pub request_read_timeout_ms: Option<u64>,
    /// Close a connection whose client does not read a response within this [default: 60000].
    #[arg(long)]
    pub response_write_timeout_ms: Option<u64>,
    /// Client connections per shard; more are closed on accept [default: 65536].
    #[arg(long)]
    pub max_connections_per_shard: Option<usize>,
    /// Client connections per source address over all shards; more are closed on accept
    /// (Kafka's max.connections.per.ip) [default: 2147483647, unlimited].
    #[arg(long)]
    pub max_connections_per_ip: Option<usize>,
    /// Per-address exceptions to --max-connections-per-ip: ADDRESS:COUNT,ADDRESS:COUNT.
    #[arg(long)]
    pub max_connections_per_ip_overrides: Option<String>,
    #[arg(long, action = clap::ArgAction::Set)]
    pub auto_create_topics: Option<bool>,
    #[arg(long)]
    pub num_partitions: Option<i32>,
    #[arg(long)]
    pub segment_bytes: Option<u64>,
    #[arg(long)]
    pub max_message_bytes: Option<usize>,
    #[arg(long)]
    pub partition_cache_size_bytes: Option<u64>,
    /// Batch cache per shard over all its partitions, bytes [default: 134217728].
    #[arg(long)]
    pub log_cache_size_bytes_per_shard: Option<u64>,
    /// Default `flush.messages` of topics: fdatasync after this many records; 1 = sync policy
    /// [default: 9223372036854775807, never by count].
    #[arg(long)]
    pub flush_messages: Option<u64>,
    /// Default `flush.ms` of topics, milliseconds; 0 = sync policy
    /// [default: 9223372036854775807, never by time].
    #[arg(long)]
    pub flush_ms: Option<u64>,
    /// Recovery checkpoint (and fdatasync) of every partition this often, milliseconds
    /// [default: 5000].
    #[arg(long)]
    pub recovery_checkpoint_interval_ms: Option<u64>,
    /// Retention check interval, milliseconds [default: 300000].
    #[arg(long)]
    pub retention_check_interval_ms: Option<u64>,
    /// Compaction check interval, milliseconds [default: 15000].
    #[arg(long)]
    pub compaction_interval_ms: Option<u64>,
    /// Bytes compaction processes between yields to the shard [default: 262144].
    #[arg(long)]
    pub compaction_slice_bytes: Option<u64>,
    /// Keys one compaction pass tracks [default: 500000].
    #[arg(long)]
    pub compaction_max_keys: Option<usize>,
    /// O_DIRECT writes in flight per partition [default: 4].
    #[arg(long)]
    pub log_writes_in_flight: Option<usize>,
    /// Under the sync flush policy, zero-fill segments this far ahead of the writer, e.g.
    /// 8388608 (0: off) [default: 0].
    #[arg(long)]
    pub log_prewrite_ahead_bytes: Option<u64>,
    /// Bytes at the end of each log read at start-up to rebuild idempotent producers' state
    /// [default: 4 MiB].
    #[arg(long)]
    pub producer_state_rebuild_bytes: Option<u64>,
    /// Retry interval of partitions failed on storage errors, milliseconds [default: 1000].
    #[arg(long)]
    pub storage_retry_interval_ms: Option<u64>,
    /// Send cold fetch data with splice (page cache to socket) [default: true].
    #[arg(long, action = clap::ArgAction::Set)]
    pub fetch_zero_copy: Option<bool>,
    #[arg(long)]
    pub io_memory_bytes: Option<usize>,
    #[arg(long)]
    pub shard_channel_capacity: Option<usize>,
    /// Scheduler slice each shard thread asks for, in µs (100..=100000; 0: kernel default)
    /// [default: 0].
    #[arg(long)]
    pub shard_sched_slice_us: Option<u64>,
    #[arg(long)]
    pub max_topics: Option<usize>,
    #[arg(long)]
    pub max_partitions_per_topic: Option<i32>,
    /// Check requests against ACLs [default: false].
    #[arg(long, action = clap::ArgAction::Set)]
    pub authorizer_enabled: Option<bool>,
    /// Principals that pass every ACL check, e.g. "User:admin;User:ops".
    #[arg(long)]
    pub super_users: Option<String>,
    /// Allow everyone on resources that no ACL names [default: false].
    #[arg(long, action = clap::ArgAction::Set)]
    pub allow_everyone_if_no_acl_found: Option<bool>,
    /// ACL bindings the cluster may hold [default: 100000].
    #[arg(long)]
    pub max_acls: Option<usize>,
    /// Client quota entities the cluster may hold [default: 100000].
    #[arg(long)]
    pub max_client_quotas: Option<usize>,
    /// Samples of the client quota rate window (Kafka's quota.window.num) [default: 11].
    #[arg(long)]
    pub quota_window_num: Option<usize>,
    /// Length of one quota window sample, milliseconds [default: 1000].
    #[arg(long)]
    pub quota_window_size_ms: Option<u64>,
    /// Admin HTTP listener (metrics, readiness, health), HOST:PORT or "" for none
    /// [default: 127.0.0.1:9644].
    #[arg(long)]
    pub admin_listen: Option<String>,
    /// Partitions of `__consumer_offsets` when it is created [default: 50].
    #[arg(long)]
    pub offsets_topic_num_partitions: Option<i32>,
    /// Wait of an empty group's first rebalance for more members, milliseconds [default: 3000].
    #[arg(long)]
    pub group_initial_rebalance_delay_ms: Option<u64>,
    /// Smallest session timeout of classic group members, milliseconds [default: 6000].
    #[arg(long)]
    pub group_min_session_timeout_ms: Option<i32>,
    /// Largest session timeout of classic group members, milliseconds [default: 1800000].
    #[arg(long)]
    pub group_max_session_timeout_ms: Option<i32>,
    /// Members per group [default: 1000].
    #[arg(long)]
    pub group_max_size: Option<usize>,
    /// Groups per broker, split over the shards [default: 100000].
    #[arg(long)]
    pub group_max_groups: Option<usize>,
    /// Retention of committed offsets of empty groups, minutes [default: 10080].
    #[arg(long)]
    pub offsets_retention_minutes: Option<u64>,
    /// Interval of the offset expiry pass, milliseconds [default: 600000].
    #[arg(long)]
    pub offsets_retention_check_interval_ms: Option<u64>,
    /// Largest metadata of one committed offset, bytes [default: 4096].
    #[arg(long)]
    pub offset_metadata_max_bytes: Option<usize>,
    /// Session timeout of KIP-848 consumer-protocol members, milliseconds [default: 45000].
    #[arg(long)]
    pub group_consumer_session_timeout_ms: Option<u64>,
    /// Heartbeat interval given to KIP-848 members, milliseconds [default: 5000].
    #[arg(long)]
    pub group_consumer_heartbeat_interval_ms: Option<u64>,
    /// Roles of this node: broker, controller or both [default: broker,controller].
    #[arg(long)]
    pub process_roles: Option<String>,
    /// Controller voters, ID@HOST:PORT,... [default: none, a single-node cluster].
    #[arg(long)]
    pub controller_quorum_voters: Option<String>,
    /// Controller listener, HOST:PORT [default: this node's voter address].
    #[arg(long)]
    pub controller_listen: Option<String>,
    /// PLAINTEXT, or SSL: TLS with certificates on both ends between nodes and the
    /// controller [default: PLAINTEXT].
    #[arg(long)]
    pub controller_listener_security_protocol: Option<String>,
    /// Rack of this broker, for rack-aware replica placement.
    #[arg(long)]
    pub rack: Option<String>,
    /// Replication factor of topics created without one [default: 1].
    #[arg(long)]
    pub default_replication_factor: Option<i16>,
    /// Broker heartbeat interval, milliseconds [default: 2000].
    #[arg(long)]
    pub broker_heartbeat_interval_ms: Option<u64>,
    /// Broker session timeout: fenced past it without a heartbeat, milliseconds [default: 9000].
    #[arg(long)]
    pub broker_session_timeout_ms: Option<u64>,
    /// Controller election timeout, milliseconds [default: 1000].
    #[arg(long)]
    pub controller_quorum_election_timeout_ms: Option<u64>,
    /// Wait of an admin request for its metadata change, milliseconds [default: 10000].
    #[arg(long)]
    pub controller_request_timeout_ms: Option<u64>,
    /// Metadata log entries after a snapshot before the next one [default: 1000].
    #[arg(long)]
    pub metadata_log_max_entries_before_snapshot: Option<u64>,
    /// A follower not caught up for this long leaves the ISR, milliseconds [default: 30000].
    #[arg(long)]
    pub replica_lag_time_max_ms: Option<u64>,
    /// Bytes per partition in one follower fetch [default: 1048576].
    #[arg(long)]
    pub replica_fetch_max_bytes: Option<usize>,
    /// Bytes in one follower fetch response [default: 10485760].
    #[arg(long)]
    pub replica_fetch_response_max_bytes: Option<usize>,
    /// Longest wait of a follower fetch at the leader, milliseconds [default: 500].
    #[arg(long)]
    pub replica_fetch_wait_max_ms: Option<u64>,
    /// Default min.insync.replicas of topics [default: 1].
    #[arg(long)]
    pub min_insync_replicas: Option<u32>,
    /// Default unclean.leader.election.enable of topics: elect an out-of-sync replica when no
    /// in-sync one is alive, losing what it lacks [default: false].
    #[arg(long)]
    pub unclean_leader_election_enable: Option<bool>,
    /// Partitions of `__transaction_state` when it is created [default: 50].
    #[arg(long)]
    pub transaction_state_log_num_partitions: Option<i32>,
    /// Longest transaction timeout a producer may ask for, milliseconds [default: 900000].
    #[arg(long)]
    pub transaction_max_timeout_ms: Option<u64>,
    /// Idle transactional ids are forgotten after this long, milliseconds [default: 604800000].
    #[arg(long)]
    pub transactional_id_expiration_ms: Option<u64>,
    /// How often timed-out transactions are aborted, milliseconds [default: 10000].
    #[arg(long)]
    pub transaction_cleanup_interval_ms: Option<u64>,
    /// Idle producers' sequence state is forgotten after this long, milliseconds
    /// [default: 86400000].
    #[arg(long)]
    pub producer_id_expiration_ms: Option<u64>,
    /// Transactional ids one shard coordinates at once [default: 100000].
    #[arg(long)]
    pub transaction_max_ids_per_shard: Option<usize>,
}

impl ServeArgs {
    /// Defaults, then the file, then the flags.
    pub fn resolve(&self) -> anyhow::Result<BrokerConfig> {
        let mut config = match &self.config {
            Some(path) => BrokerConfig::from_toml_file(path)?,
            None => BrokerConfig::default(),
        };
        macro_rules! flag {
            ($($field:ident),*) => {$(
                if let Some(value) = &self.$field {
                    config.$field = value.clone().into();
                }
            )*};
        }
        flag!(
            listen,
            data_dir,
            node_id,
            log_level,
            max_request_size_bytes,
            max_request_memory_per_shard_bytes,
            small_request_max_bytes,
            small_request_memory_per_shard_bytes,
            request_memory_step_bytes,
            max_in_flight_requests_per_connection,
            listeners,
            advertised_listeners,
            listener_security_protocol_map,
            controller_listener_security_protocol,
            inter_broker_listener_name,
            inter_broker_sasl_mechanism,
            inter_broker_sasl_username,
            inter_broker_sasl_password,
            ssl_endpoint_identification_algorithm,
            sasl_enabled_mechanisms,
            sasl_max_receive_size_bytes,
            ssl_certificate_location,
            ssl_key_location,
            ssl_ca_location,
            ssl_client_auth,
            ssl_reload_check_interval_ms,
            connection_failed_authentication_delay_ms,
            connections_max_reauth_ms,
            connections_max_idle_ms,
            request_read_timeout_ms,
            response_write_timeout_ms,
            max_connections_per_shard,
            max_connections_per_ip,
            max_connections_per_ip_overrides,
            auto_create_topics,
            num_partitions,
            segment_bytes,
            max_message_bytes,
            partition_cache_size_bytes,
            log_cache_size_bytes_per_shard,
            flush_messages,
            flush_ms,
            recovery_checkpoint_interval_ms,
            retention_check_interval_ms,
            compaction_interval_ms,
            compaction_slice_bytes,
            compaction_max_keys,
            log_writes_in_flight,
            log_prewrite_ahead_bytes,
            producer_state_rebuild_bytes,
            storage_retry_interval_ms,
            fetch_zero_copy,
            io_memory_bytes,
            shard_channel_capacity,
            shard_sched_slice_us,
            max_topics,
            max_partitions_per_topic,
            authorizer_enabled,
            super_users,
            allow_everyone_if_no_acl_found,
            max_acls,
            max_client_quotas,
            quota_window_num,
            quota_window_size_ms,
            admin_listen,
            offsets_topic_num_partitions,
            group_initial_rebalance_delay_ms,
            group_min_session_timeout_ms,
            group_max_session_timeout_ms,
            group_max_size,
            group_max_groups,
            offsets_retention_minutes,
            offsets_retention_check_interval_ms,
            offset_metadata_max_bytes,
            group_consumer_session_timeout_ms,
            group_consumer_heartbeat_interval_ms,
            process_roles,
            controller_quorum_voters,
            default_replication_factor,
            broker_heartbeat_interval_ms,
            broker_session_timeout_ms,
            controller_quorum_election_timeout_ms,
            controller_request_timeout_ms,
            metadata_log_max_entries_before_snapshot,
            replica_lag_time_max_ms,
            replica_fetch_max_bytes,
            replica_fetch_response_max_bytes,
            replica_fetch_wait_max_ms,
            min_insync_replicas,
            unclean_leader_election_enable,
            transaction_state_log_num_partitions,
            transaction_max_timeout_ms,
            transactional_id_expiration_ms,
            transaction_cleanup_interval_ms,
            producer_id_expiration_ms,
            transaction_max_ids_per_shard
        );
        if self.controller_listen.is_some() {
            config.controller_listen = self.controller_listen.clone();
        }
        if self.rack.is_some() {
            config.rack = self.rack.clone();
        }
        if self.advertise.is_some() {
            config.advertise = self.advertise.clone();
        }
        if self.cores.is_some() {
            config.cores = self.cores;
        }
        config.validate()?;
        Ok(config)
    }
}

/// Entry point of the binary; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let config = match args.resolve() {
                Ok(config) => config,
                Err(error) => {
                    eprintln!("riptide: {error:#}");
                    return 2;
                }
            };
            init_logging(&config.log_level);
            match crate::shard::run_broker(config) {
                Ok(()) => 0,
                Err(error) => {
                    tracing::error!("broker failed: {error:#}");
                    1
                }
            }
        }
        command => {
            restore_default_sigpipe();
            run_tool(command)
        }
    }
}

/// The command-line tools end quietly when their reader goes away (`riptide topic list | head`),
/// as other Unix tools do: the Rust runtime ignores SIGPIPE, which turns a closed stdout into a
/// panic in `println!`. The broker keeps ignoring it (its sockets report EPIPE as errors).
fn restore_default_sigpipe() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: SIG_DFL installs no handler code; called once, before any thread starts.
    if let Err(error) = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) } {
        eprintln!("riptide: cannot restore SIGPIPE: {error}");
    }
}

fn run_tool(command: Command) -> i32 {
    match command {
        Command::Serve(_) => unreachable!("the broker is not a tool"),
        Command::Tune(args) => crate::tune::run(args),
        Command::Iotune(args) => crate::tune::iotune::run(args),
        Command::Topic(args) => crate::admin_cli::run_topic(args),
        Command::Group(args) => crate::admin_cli::run_group(args),
        Command::User(args) => crate::admin_cli::run_user(args),
        Command::Acl(args) => crate::admin_cli::run_acl(args),
        Command::Quota(args) => crate::admin_cli::run_quota(args),
        Command::Cluster(args) => crate::admin_cli::run_cluster(args),
    }
}

/// To the journal under systemd (JOURNAL_STREAM), else text on stderr.
fn init_logging(level: &str) {
    crate::service::logging::init(level);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("riptide.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:1111\"\nnum_partitions = 4\n").unwrap();
        let cli = Cli::parse_from([
            "riptide",
            "serve",
            "--config",
            path.to_str().unwrap(),
            "--listen",
            "127.0.0.1:2222",
            "--auto-create-topics",
            "false",
        ]);
        let Command::Serve(args) = cli.command else {
            panic!("parsed as serve");
        };
        let config = args.resolve().unwrap();
        assert_eq!(config.listen, "127.0.0.1:2222");
        assert_eq!(config.num_partitions, 4);
        assert!(!config.auto_create_topics);
    }
}
