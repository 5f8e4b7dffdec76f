//! Admin commands over the Kafka protocol, against any Kafka-compatible broker:
//! `riptide topic …`, `riptide group …`, `riptide user …`, `riptide acl …`, `riptide quota …`,
//! `riptide cluster info`.
//!
//! Each command talks to the brokers with [`crate::client`] (bootstrap from `--brokers`, then
//! the partition leader, the controller or the group coordinator as Kafka routes it), and
//! prints an aligned table, or with `--format json` one JSON document (`topic consume`: one
//! JSON object per record per line). Exit codes: 0 success; 1 failure (connection, broker
//! error, an API the broker does not serve — the message says which); 2 bad usage.

mod acl;
mod cluster;
mod group;
pub mod output;
mod quota;
mod topic;
mod user;

use crate::client::{ClientError, ClientOptions, Cluster, Connection};
use clap::{Args, Subcommand};
use output::{Format, Output};
use std::collections::BTreeMap;
use std::time::Duration;

/// Options every admin command takes.
#[derive(Args, Debug, Clone)]
pub struct ConnectArgs {
    /// Bootstrap brokers, HOST:PORT[,HOST:PORT…].
    #[arg(
        long,
        short = 'b',
        env = "RIPTIDE_BROKERS",
        default_value = "127.0.0.1:9092",
        value_delimiter = ',',
        global = true
    )]
    pub brokers: Vec<String>,
    /// Output for people (table) or scripts (json).
    #[arg(long, value_enum, default_value_t = Format::Table, global = true)]
    pub format: Format,
    /// Connect, request and response timeout.
    #[arg(long, default_value_t = 30_000, global = true)]
    pub timeout_ms: u64,
    /// PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL, as the brokers' listener expects.
    #[arg(
        long,
        env = "RIPTIDE_SECURITY_PROTOCOL",
        default_value = "PLAINTEXT",
        global = true
    )]
    pub security_protocol: String,
    /// PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (SASL listeners).
    #[arg(
        long,
        env = "RIPTIDE_SASL_MECHANISM",
        default_value = "SCRAM-SHA-512",
        global = true
    )]
    pub sasl_mechanism: String,
    #[arg(long, env = "RIPTIDE_SASL_USERNAME", global = true)]
    pub sasl_username: Option<String>,
    /// Prefer the environment variable: flags show in the process list.
    #[arg(
        long,
        env = "RIPTIDE_SASL_PASSWORD",
        hide_env_values = true,
        global = true
    )]
    pub sasl_password: Option<String>,
    /// PEM CAs the brokers' certificates chain to (TLS listeners).
    #[arg(long, env = "RIPTIDE_SSL_CA_LOCATION", global = true)]
    pub ssl_ca_location: Option<std::path::PathBuf>,
    /// PEM client certificate and key, for listeners that ask for one.
    #[arg(long, env = "RIPTIDE_SSL_CERTIFICATE_LOCATION", global = true)]
    pub ssl_certificate_location: Option<std::path::PathBuf>,
    #[arg(long, env = "RIPTIDE_SSL_KEY_LOCATION", global = true)]
    pub ssl_key_location: Option<std::path::PathBuf>,
}

impl ConnectArgs {
    fn options(&self) -> Result<ClientOptions, ClientError> {
        use crate::config::{SaslMechanism, SecurityProtocol};
        let usage = |message: String| ClientError::Protocol(message);
        let protocol = SecurityProtocol::from_name(&self.security_protocol)
            .map_err(|e| usage(e.to_string()))?;
        let tls = if protocol.uses_tls() {
            let ca = self
                .ssl_ca_location
                .as_deref()
                .ok_or_else(|| usage(format!("{} needs --ssl-ca-location", protocol.name())))?;
            let identity = match (&self.ssl_certificate_location, &self.ssl_key_location) {
                (Some(certificate), Some(key)) => Some((certificate.as_path(), key.as_path())),
                (None, None) => None,
                _ => {
                    return Err(usage(
                        "--ssl-certificate-location and --ssl-key-location go together".into(),
                    ))
                }
            };
            Some(
                crate::security::inter_broker::client_config(ca, identity, true)
                    .map_err(|e| usage(e.to_string()))?,
            )
        } else {
            None
        };
        let sasl = if protocol.requires_sasl() {
            let mechanism = SaslMechanism::from_name(&self.sasl_mechanism)
                .ok_or_else(|| usage(format!("unknown SASL mechanism {}", self.sasl_mechanism)))?;
            let (Some(username), Some(password)) = (&self.sasl_username, &self.sasl_password)
            else {
                return Err(usage(format!(
                    "{} needs --sasl-username and --sasl-password (or RIPTIDE_SASL_PASSWORD)",
                    protocol.name()
                )));
            };
            Some(crate::security::inter_broker::SaslLogin {
                mechanism,
                username: username.clone(),
                password: password.clone(),
            })
        } else {
            None
        };
        Ok(ClientOptions {
            client_id: "riptide-cli".to_string(),
            timeout: Duration::from_millis(self.timeout_ms.max(1)),
            tls,
            sasl,
            ..ClientOptions::default()
        })
    }

    fn cluster(&self) -> Result<Cluster, ClientError> {
        Cluster::connect(&self.brokers, &self.options()?)
    }
}

#[derive(Args, Debug)]
pub struct TopicArgs {
    #[command(subcommand)]
    pub command: topic::TopicCommand,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Args, Debug)]
pub struct GroupArgs {
    #[command(subcommand)]
    pub command: group::GroupCommand,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Args, Debug)]
pub struct UserArgs {
    #[command(subcommand)]
    pub command: user::UserCommand,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// `riptide user …`; returns the exit code.
pub fn run_user(args: UserArgs) -> i32 {
    let format = args.connect.format;
    finish(
        args.connect
            .cluster()
            .and_then(|mut cluster| user::run(&mut cluster, args.command)),
        format,
    )
}

#[derive(Args, Debug)]
pub struct AclArgs {
    #[command(subcommand)]
    pub command: acl::AclCommand,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// `riptide acl …`; returns the exit code.
pub fn run_acl(args: AclArgs) -> i32 {
    let format = args.connect.format;
    finish(
        args.connect
            .cluster()
            .and_then(|mut cluster| acl::run(&mut cluster, args.command)),
        format,
    )
}

#[derive(Args, Debug)]
pub struct QuotaArgs {
    #[command(subcommand)]
    pub command: quota::QuotaCommand,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// `riptide quota …`; returns the exit code.
pub fn run_quota(args: QuotaArgs) -> i32 {
    let format = args.connect.format;
    finish(
        args.connect
            .cluster()
            .and_then(|mut cluster| quota::run(&mut cluster, args.command)),
        format,
    )
}

#[derive(Args, Debug)]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub command: ClusterCommand,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Cluster id, controller, brokers (and with --api-versions what the broker serves).
    Info {
        /// Also list the API versions of the bootstrap broker.
        #[arg(long)]
        api_versions: bool,
    },
    /// Dynamic broker configs of one broker (--broker) or the cluster-wide default: shown, or
    /// changed with --set / --delete (IncrementalAlterConfigs on a BROKER resource).
    Config {
        /// Broker id [default: the cluster-wide default of every broker].
        #[arg(long)]
        broker: Option<i32>,
        /// KEY=VALUE to set (repeatable).
        #[arg(long, value_parser = topic::parse_key_value)]
        set: Vec<(String, String)>,
        /// KEY to remove (repeatable).
        #[arg(long)]
        delete: Vec<String>,
    },
}

/// `riptide topic …`; returns the exit code.
pub fn run_topic(args: TopicArgs) -> i32 {
    let format = args.connect.format;
    finish(
        args.connect
            .cluster()
            .and_then(|mut cluster| topic::run(&mut cluster, args.command, format)),
        format,
    )
}

/// `riptide group …`; returns the exit code.
pub fn run_group(args: GroupArgs) -> i32 {
    let format = args.connect.format;
    finish(
        args.connect
            .cluster()
            .and_then(|mut cluster| group::run(&mut cluster, args.command)),
        format,
    )
}

/// `riptide cluster …`; returns the exit code.
pub fn run_cluster(args: ClusterArgs) -> i32 {
    let format = args.connect.format;
    finish(
        args.connect
            .cluster()
            .and_then(|mut cluster| match args.command {
                ClusterCommand::Info { api_versions } => cluster::info(&mut cluster, api_versions),
                ClusterCommand::Config {
                    broker,
                    set,
                    delete,
                } => cluster::config(&mut cluster, broker, &set, &delete).map(Some),
            }),
        format,
    )
}

/// Prints the output (or the error) and maps it to an exit code. `None` output: the command
/// printed as it went (consume).
fn finish(result: Result<Option<Output>, ClientError>, format: Format) -> i32 {
    match result {
        Ok(Some(output)) => {
            output.print(format);
            if output.ok {
                0
            } else {
                1
            }
        }
        Ok(None) => 0,
        Err(error) => {
            eprintln!("riptide: {error}");
            if error.is_unsupported_api() {
                eprintln!("riptide: this broker does not serve the API the command needs");
            }
            1
        }
    }
}

/// Offsets of `partitions` of `topic` at `timestamp` (-2 earliest, -1 latest), asking each
/// partition's leader.
fn list_offsets(
    cluster: &mut Cluster,
    topic: &str,
    partitions: &[i32],
    timestamp: i64,
) -> Result<BTreeMap<i32, i64>, ClientError> {
    list_offsets_isolated(
        cluster,
        topic,
        partitions,
        timestamp,
        Isolation::ReadUncommitted,
    )
}

/// Which end of a partition "latest" means: the high watermark (read_uncommitted) or the last
/// stable offset (read_committed, holds back open transactions).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isolation {
    ReadUncommitted,
    ReadCommitted,
}

impl Isolation {
    /// The ListOffsets `isolation_level` field.
    fn level(self) -> i8 {
        match self {
            Isolation::ReadUncommitted => 0,
            Isolation::ReadCommitted => 1,
        }
    }

    /// What "latest" is under this isolation, as shown to the user.
    pub fn end_name(self) -> &'static str {
        match self {
            Isolation::ReadUncommitted => "high_watermark",
            Isolation::ReadCommitted => "last_stable_offset",
        }
    }
}

/// ListOffsets at `timestamp` (-1 latest, -2 earliest) for `partitions`, asked of each leader.
fn list_offsets_isolated(
    cluster: &mut Cluster,
    topic: &str,
    partitions: &[i32],
    timestamp: i64,
    isolation: Isolation,
) -> Result<BTreeMap<i32, i64>, ClientError> {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::{ListOffsetsRequest, TopicName};
    let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for &partition in partitions {
        by_leader
            .entry(cluster.leader_id(topic, partition)?)
            .or_default()
            .push(partition);
    }
    let mut offsets = BTreeMap::new();
    for (leader, partitions) in by_leader {
        let request = ListOffsetsRequest::default()
            .with_replica_id((-1).into())
            .with_isolation_level(isolation.level())
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(TopicName(crate::client::str_bytes(topic)))
                .with_partitions(
                    partitions
                        .iter()
                        .map(|&p| {
                            ListOffsetsPartition::default()
                                .with_partition_index(p)
                                .with_current_leader_epoch(-1)
                                .with_timestamp(timestamp)
                        })
                        .collect(),
                )]);
        let response = cluster.node(leader)?.send(&request)?;
        for topic_response in response.topics {
            for partition in topic_response.partitions {
                crate::client::check_code(partition.error_code, || {
                    format!("ListOffsets {topic}/{}", partition.partition_index)
                })?;
                offsets.insert(partition.partition_index, partition.offset);
            }
        }
    }
    Ok(offsets)
}

/// Partition indexes of `topic` (error if it does not exist).
fn partitions_of(cluster: &mut Cluster, topic: &str) -> Result<Vec<i32>, ClientError> {
    let response = cluster.metadata(Some(&[topic.to_string()]))?;
    let metadata = response
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
        .ok_or_else(|| ClientError::Protocol(format!("topic {topic} missing in metadata")))?;
    crate::client::check_code(metadata.error_code, || format!("topic {topic}"))?;
    let mut partitions: Vec<i32> = metadata
        .partitions
        .iter()
        .map(|p| p.partition_index)
        .collect();
    partitions.sort_unstable();
    Ok(partitions)
}

/// The connection for requests about `topic`/`partition`: its leader.
fn leader<'a>(
    cluster: &'a mut Cluster,
    topic: &str,
    partition: i32,
) -> Result<&'a mut Connection, ClientError> {
    let leader = cluster.leader_id(topic, partition)?;
    cluster.node(leader)
}
