//! `riptide topic create|list|describe|delete|alter-config|produce|consume`.

use super::output::{cell_or_dash, Format, Output, Table};
use super::{leader, list_offsets, partitions_of};
use crate::client::records::{decode_batches, encode_batch, NewRecord};
use crate::client::{check_code, str_bytes, ClientError, Cluster};
use bytes::Bytes;
use clap::Subcommand;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest, FetchRequest,
    IncrementalAlterConfigsRequest, ProduceRequest, TopicName,
};
use kafka_protocol::records::Compression;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::time::{Duration, Instant};

/// Kafka's resource type of a topic in DescribeConfigs / AlterConfigs.
const RESOURCE_TOPIC: i8 = 2;
/// Produce v13 and Fetch v13 name topics by id (KIP-516); these commands name them.
const MAX_NAMED_PRODUCE_VERSION: i16 = 12;
const MAX_NAMED_FETCH_VERSION: i16 = 12;
/// Records per produced batch, and bytes per batch before a new one starts.
const BATCH_MAX_RECORDS: usize = 1_000;
const BATCH_MAX_BYTES: usize = 512 * 1024;
const FETCH_MAX_BYTES: i32 = 4 * 1024 * 1024;
const FETCH_PARTITION_MAX_BYTES: i32 = 1024 * 1024;

#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        #[arg(long, short = 'p', default_value_t = 1)]
        partitions: i32,
        #[arg(long, short = 'r', default_value_t = 1)]
        replicas: i16,
        /// Topic config, KEY=VALUE (repeatable), e.g. -c retention.ms=3600000.
        #[arg(long = "config", short = 'c', value_parser = parse_key_value)]
        configs: Vec<(String, String)>,
    },
    /// List topics.
    List,
    /// Partitions (leader, replicas, ISR, offsets) and configs of a topic.
    Describe {
        name: String,
        /// Show every config, not only the ones set on the topic.
        #[arg(long)]
        all_configs: bool,
    },
    /// Delete topics.
    Delete {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Set or remove topic configs (IncrementalAlterConfigs).
    AlterConfig {
        name: String,
        /// KEY=VALUE to set (repeatable).
        #[arg(long, value_parser = parse_key_value)]
        set: Vec<(String, String)>,
        /// KEY to reset to the default (repeatable).
        #[arg(long)]
        delete: Vec<String>,
    },
    /// Produce records: each --value, or else each line of stdin.
    Produce {
        name: String,
        /// Partition to write to [default: by key hash (Kafka's murmur2), else a random one].
        #[arg(long, short = 'p')]
        partition: Option<i32>,
        /// Key of every record.
        #[arg(long, short = 'k')]
        key: Option<String>,
        /// Split each stdin line into key and value at the first SEPARATOR.
        #[arg(long)]
        key_separator: Option<String>,
        /// Record value (repeatable); without it, stdin is read line by line.
        #[arg(long)]
        value: Vec<String>,
        /// Header KEY=VALUE on every record (repeatable).
        #[arg(long = "header", short = 'H', value_parser = parse_key_value)]
        headers: Vec<(String, String)>,
        /// all (-1), 1, or 0 (no response).
        #[arg(long, default_value = "all", value_parser = parse_acks)]
        acks: i16,
        #[arg(long, value_enum, default_value_t = CompressionArg::None)]
        compression: CompressionArg,
    },
    /// Read records: from --offset up to the end of the partition (or --count records).
    Consume {
        name: String,
        /// Partition to read [default: every partition].
        #[arg(long, short = 'p')]
        partition: Option<i32>,
        /// earliest, latest, or an offset.
        #[arg(long, short = 'o', default_value = "earliest")]
        offset: String,
        /// Stop after this many records.
        #[arg(long, short = 'n')]
        count: Option<usize>,
        /// Once at the end of the partitions, wait this long for more records (until --count).
        #[arg(long, default_value_t = 0)]
        wait_ms: u64,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CompressionArg {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl From<CompressionArg> for Compression {
    fn from(value: CompressionArg) -> Compression {
        match value {
            CompressionArg::None => Compression::None,
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::Snappy => Compression::Snappy,
            CompressionArg::Lz4 => Compression::Lz4,
            CompressionArg::Zstd => Compression::Zstd,
        }
    }
}

pub(super) fn parse_key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected KEY=VALUE, got {text:?}"))
}

fn parse_acks(text: &str) -> Result<i16, String> {
    match text {
        "all" | "-1" => Ok(-1),
        "1" => Ok(1),
        "0" => Ok(0),
        _ => Err(format!("acks must be all, 1 or 0, not {text:?}")),
    }
}

fn topic_name(name: &str) -> TopicName {
    TopicName(str_bytes(name))
}

pub fn run(
    cluster: &mut Cluster,
    command: TopicCommand,
    format: Format,
) -> Result<Option<Output>, ClientError> {
    match command {
        TopicCommand::Create {
            name,
            partitions,
            replicas,
            configs,
        } => create(cluster, &name, partitions, replicas, &configs).map(Some),
        TopicCommand::List => list(cluster).map(Some),
        TopicCommand::Describe { name, all_configs } => {
            describe(cluster, &name, all_configs).map(Some)
        }
        TopicCommand::Delete { names } => delete(cluster, &names).map(Some),
        TopicCommand::AlterConfig { name, set, delete } => {
            alter_config(cluster, &name, &set, &delete).map(Some)
        }
        TopicCommand::Produce {
            name,
            partition,
            key,
            key_separator,
            value,
            headers,
            acks,
            compression,
        } => {
            let records = read_records(key, key_separator.as_deref(), value, &headers)?;
            produce(cluster, &name, partition, records, acks, compression.into()).map(Some)
        }
        TopicCommand::Consume {
            name,
            partition,
            offset,
            count,
            wait_ms,
        } => consume(cluster, &name, partition, &offset, count, wait_ms, format),
    }
}

fn create(
    cluster: &mut Cluster,
    name: &str,
    partitions: i32,
    replicas: i16,
    configs: &[(String, String)],
) -> Result<Output, ClientError> {
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic_name(name))
            .with_num_partitions(partitions)
            .with_replication_factor(replicas)
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| {
                        CreatableTopicConfig::default()
                            .with_name(str_bytes(k))
                            .with_value(Some(str_bytes(v)))
                    })
                    .collect(),
            )]);
    let response = cluster.controller()?.send(&request)?;
    let result = response
        .topics
        .first()
        .ok_or_else(|| ClientError::Protocol("CreateTopics answered no topic".into()))?;
    if let Some(mut error) = ClientError::from_code(result.error_code, format!("create {name}")) {
        if let (ClientError::Kafka { context, .. }, Some(message)) =
            (&mut error, &result.error_message)
        {
            context.push_str(&format!(" ({message})"));
        }
        return Err(error);
    }
    let mut table = Table::new(vec!["TOPIC", "PARTITIONS", "REPLICAS", "STATUS"]);
    table.row(vec![
        name.to_string(),
        result.num_partitions.to_string(),
        result.replication_factor.to_string(),
        "created".into(),
    ]);
    Ok(Output::new(
        json!({
            "topic": name,
            "topic_id": result.topic_id.to_string(),
            "partitions": result.num_partitions,
            "replicas": result.replication_factor,
            "created": true,
        }),
        vec![table],
    ))
}

fn list(cluster: &mut Cluster) -> Result<Output, ClientError> {
    let response = cluster.metadata(None)?;
    let mut topics: Vec<_> = response
        .topics
        .iter()
        .filter(|t| t.error_code == 0)
        .collect();
    topics.sort_by(|a, b| {
        a.name
            .as_ref()
            .map(|n| n.0.as_str())
            .cmp(&b.name.as_ref().map(|n| n.0.as_str()))
    });
    let mut table = Table::new(vec!["NAME", "PARTITIONS", "REPLICAS", "INTERNAL"]);
    let mut json_topics = Vec::new();
    for topic in topics {
        let name = topic
            .name
            .as_ref()
            .map(|n| n.0.to_string())
            .unwrap_or_default();
        let replicas = topic
            .partitions
            .first()
            .map_or(0, |p| p.replica_nodes.len());
        table.row(vec![
            name.clone(),
            topic.partitions.len().to_string(),
            replicas.to_string(),
            topic.is_internal.to_string(),
        ]);
        json_topics.push(json!({
            "name": name,
            "topic_id": topic.topic_id.to_string(),
            "partitions": topic.partitions.len(),
            "replicas": replicas,
            "internal": topic.is_internal,
        }));
    }
    Ok(Output::new(json!({ "topics": json_topics }), vec![table]))
}

pub(super) fn config_source_name(source: i8) -> &'static str {
    match source {
        1 => "DYNAMIC_TOPIC_CONFIG",
        2 => "DYNAMIC_BROKER_CONFIG",
        3 => "DYNAMIC_DEFAULT_BROKER_CONFIG",
        4 => "STATIC_BROKER_CONFIG",
        5 => "DEFAULT_CONFIG",
        6 => "DYNAMIC_BROKER_LOGGER_CONFIG",
        7 => "CLIENT_METRICS_CONFIG",
        8 => "GROUP_CONFIG",
        _ => "UNKNOWN",
    }
}

fn describe(cluster: &mut Cluster, name: &str, all_configs: bool) -> Result<Output, ClientError> {
    let response = cluster.metadata(Some(&[name.to_string()]))?;
    let topic = response
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == name))
        .ok_or_else(|| ClientError::Protocol(format!("topic {name} missing in metadata")))?;
    check_code(topic.error_code, || format!("topic {name}"))?;
    let mut partitions: Vec<_> = topic.partitions.iter().collect();
    partitions.sort_by_key(|p| p.partition_index);
    let indexes: Vec<i32> = partitions.iter().map(|p| p.partition_index).collect();
    let topic_id = topic.topic_id.to_string();
    let earliest = list_offsets(cluster, name, &indexes, -2)?;
    let latest = list_offsets(cluster, name, &indexes, -1)?;

    let ids = |nodes: &[kafka_protocol::messages::BrokerId]| {
        nodes
            .iter()
            .map(|n| n.0.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut partition_table = Table::new(vec![
        "PARTITION",
        "LEADER",
        "EPOCH",
        "REPLICAS",
        "ISR",
        "LOG-START-OFFSET",
        "HIGH-WATERMARK",
    ])
    .titled(format!("TOPIC {name} ({topic_id})"));
    let mut json_partitions = Vec::new();
    for p in &partitions {
        let start = earliest.get(&p.partition_index).copied();
        let end = latest.get(&p.partition_index).copied();
        partition_table.row(vec![
            p.partition_index.to_string(),
            p.leader_id.0.to_string(),
            p.leader_epoch.to_string(),
            ids(&p.replica_nodes),
            ids(&p.isr_nodes),
            cell_or_dash(start),
            cell_or_dash(end),
        ]);
        json_partitions.push(json!({
            "partition": p.partition_index,
            "leader": p.leader_id.0,
            "leader_epoch": p.leader_epoch,
            "replicas": p.replica_nodes.iter().map(|n| n.0).collect::<Vec<_>>(),
            "isr": p.isr_nodes.iter().map(|n| n.0).collect::<Vec<_>>(),
            "log_start_offset": start,
            "high_watermark": end,
        }));
    }

    let request =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(str_bytes(name))
            .with_configuration_keys(None)]);
    let mut tables = vec![partition_table];
    let mut json_configs = serde_json::Map::new();
    match cluster.controller()?.send(&request) {
        Ok(response) => {
            let mut config_table = Table::new(vec!["CONFIG", "VALUE", "SOURCE"]).titled("CONFIGS");
            for result in &response.results {
                check_code(result.error_code, || format!("DescribeConfigs {name}"))?;
                let mut configs: Vec<_> = result.configs.iter().collect();
                configs.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
                for config in configs {
                    let value = if config.is_sensitive {
                        Some("(sensitive)".to_string())
                    } else {
                        config.value.as_ref().map(|v| v.to_string())
                    };
                    json_configs.insert(
                        config.name.to_string(),
                        json!({ "value": value, "source": config_source_name(config.config_source), "read_only": config.read_only }),
                    );
                    if all_configs || config.config_source == 1 {
                        config_table.row(vec![
                            config.name.to_string(),
                            cell_or_dash(value),
                            config_source_name(config.config_source).to_string(),
                        ]);
                    }
                }
            }
            if config_table.rows.is_empty() && !all_configs {
                config_table.title = Some(
                    "CONFIGS: none set on the topic (--all-configs lists the defaults)".into(),
                );
            }
            tables.push(config_table);
        }
        Err(error) if error.is_unsupported_api() => {}
        Err(error) => return Err(error),
    }
    Ok(Output::new(
        json!({
            "topic": name,
            "topic_id": topic_id,
            "internal": topic.is_internal,
            "partitions": json_partitions,
            "configs": json_configs,
        }),
        tables,
    ))
}

fn delete(cluster: &mut Cluster, names: &[String]) -> Result<Output, ClientError> {
    let connection = cluster.controller()?;
    let version = connection.version_for::<DeleteTopicsRequest>()?;
    let mut request = DeleteTopicsRequest::default().with_timeout_ms(30_000);
    if version >= 6 {
        request.topics = names
            .iter()
            .map(|n| DeleteTopicState::default().with_name(Some(topic_name(n))))
            .collect();
    } else {
        request.topic_names = names.iter().map(|n| topic_name(n)).collect();
    }
    let response = connection.send_version(&request, version)?;
    let mut table = Table::new(vec!["TOPIC", "STATUS"]);
    let mut results = Vec::new();
    let mut ok = true;
    for result in &response.responses {
        let name = result
            .name
            .as_ref()
            .map(|n| n.0.to_string())
            .unwrap_or_default();
        let error = ClientError::from_code(result.error_code, "").map(|e| match e {
            ClientError::Kafka { name, .. } => name,
            other => other.to_string(),
        });
        ok &= error.is_none();
        table.row(vec![
            name.clone(),
            error.clone().unwrap_or_else(|| "deleted".into()),
        ]);
        results.push(json!({ "topic": name, "deleted": error.is_none(), "error": error }));
    }
    let mut output = Output::new(json!({ "results": results }), vec![table]);
    output.ok = ok;
    Ok(output)
}

fn alter_config(
    cluster: &mut Cluster,
    name: &str,
    set: &[(String, String)],
    delete: &[String],
) -> Result<Output, ClientError> {
    if set.is_empty() && delete.is_empty() {
        return Err(ClientError::Protocol(
            "nothing to change: give --set KEY=VALUE or --delete KEY".into(),
        ));
    }
    let mut configs: Vec<AlterableConfig> = set
        .iter()
        .map(|(k, v)| {
            AlterableConfig::default()
                .with_name(str_bytes(k))
                .with_config_operation(0)
                .with_value(Some(str_bytes(v)))
        })
        .collect();
    configs.extend(delete.iter().map(|k| {
        AlterableConfig::default()
            .with_name(str_bytes(k))
            .with_config_operation(1)
            .with_value(None)
    }));
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(str_bytes(name))
            .with_configs(configs),
    ]);
    let response = cluster.controller()?.send(&request)?;
    for result in &response.responses {
        if let Some(mut error) =
            ClientError::from_code(result.error_code, format!("alter configs of {name}"))
        {
            if let (ClientError::Kafka { context, .. }, Some(message)) =
                (&mut error, &result.error_message)
            {
                context.push_str(&format!(" ({message})"));
            }
            return Err(error);
        }
    }
    let mut table = Table::new(vec!["CONFIG", "CHANGE"]).titled(format!("TOPIC {name}"));
    for (k, v) in set {
        table.row(vec![k.clone(), format!("set to {v}")]);
    }
    for k in delete {
        table.row(vec![k.clone(), "reset to default".into()]);
    }
    Ok(Output::new(
        json!({
            "topic": name,
            "set": set.iter().map(|(k, v)| (k.clone(), Value::from(v.clone()))).collect::<serde_json::Map<_, _>>(),
            "deleted": delete,
        }),
        vec![table],
    ))
}

fn read_records(
    key: Option<String>,
    key_separator: Option<&str>,
    values: Vec<String>,
    headers: &[(String, String)],
) -> Result<Vec<NewRecord>, ClientError> {
    let headers: Vec<(String, Bytes)> = headers
        .iter()
        .map(|(k, v)| (k.clone(), Bytes::from(v.clone())))
        .collect();
    let make = |line: String| {
        let (record_key, value) = match key_separator.and_then(|sep| {
            line.split_once(sep)
                .map(|(k, v)| (k.to_string(), v.to_string()))
        }) {
            Some((k, v)) => (Some(k), v),
            None => (key.clone(), line),
        };
        NewRecord {
            key: record_key.map(Bytes::from),
            value: Bytes::from(value),
            headers: headers.clone(),
        }
    };
    if !values.is_empty() {
        return Ok(values.into_iter().map(make).collect());
    }
    let mut records = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|source| ClientError::Io {
            address: "stdin".into(),
            source,
        })?;
        records.push(make(line));
    }
    Ok(records)
}

/// Kafka's murmur2 (the Java client's default partitioner hash for keyed records).
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes(chunk.try_into().unwrap());
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        if tail.len() >= 3 {
            h ^= u32::from(tail[2]) << 16;
        }
        if tail.len() >= 2 {
            h ^= u32::from(tail[1]) << 8;
        }
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

fn produce(
    cluster: &mut Cluster,
    name: &str,
    partition: Option<i32>,
    records: Vec<NewRecord>,
    acks: i16,
    compression: Compression,
) -> Result<Output, ClientError> {
    let partitions = partitions_of(cluster, name)?;
    if let Some(p) = partition {
        if !partitions.contains(&p) {
            return Err(ClientError::Protocol(format!(
                "topic {name} has no partition {p}"
            )));
        }
    }
    let count = partitions.len().max(1) as u32;
    let random_partition = partitions[(std::process::id()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())) as usize
        % partitions.len().max(1)];
    let mut by_partition: BTreeMap<i32, Vec<NewRecord>> = BTreeMap::new();
    for record in records {
        let target = match (partition, &record.key) {
            (Some(p), _) => p,
            (None, Some(key)) => partitions[((murmur2(key) & 0x7fff_ffff) as u32 % count) as usize],
            (None, None) => random_partition,
        };
        by_partition.entry(target).or_default().push(record);
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut table = Table::new(vec!["PARTITION", "RECORDS", "BASE-OFFSET"])
        .titled(format!("PRODUCED TO {name}"));
    let mut results = Vec::new();
    for (target, records) in by_partition {
        let mut first_offset = None;
        let mut start = 0;
        while start < records.len() {
            // One batch per request, bounded in records and bytes.
            let mut end = start;
            let mut bytes = 0;
            while end < records.len()
                && end - start < BATCH_MAX_RECORDS
                && (end == start || bytes < BATCH_MAX_BYTES)
            {
                bytes += records[end].value.len() + records[end].key.as_ref().map_or(0, Bytes::len);
                end += 1;
            }
            let batch = encode_batch(&records[start..end], now_ms, compression)?;
            let request = ProduceRequest::default()
                .with_acks(acks)
                .with_timeout_ms(30_000)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(topic_name(name))
                    .with_partition_data(vec![PartitionProduceData::default()
                        .with_index(target)
                        .with_records(Some(batch))])]);
            let connection = leader(cluster, name, target)?;
            if acks == 0 {
                connection.send_without_response(&request)?;
            } else {
                let version = connection
                    .version_for::<ProduceRequest>()?
                    .min(MAX_NAMED_PRODUCE_VERSION);
                let response = connection.send_version(&request, version)?;
                for topic in &response.responses {
                    for p in &topic.partition_responses {
                        if let Some(mut error) = ClientError::from_code(
                            p.error_code,
                            format!("produce to {name}/{}", p.index),
                        ) {
                            if let (ClientError::Kafka { context, .. }, Some(message)) =
                                (&mut error, &p.error_message)
                            {
                                context.push_str(&format!(" ({message})"));
                            }
                            return Err(error);
                        }
                        first_offset.get_or_insert(p.base_offset);
                    }
                }
            }
            start = end;
        }
        table.row(vec![
            target.to_string(),
            records.len().to_string(),
            cell_or_dash(first_offset),
        ]);
        results.push(
            json!({ "partition": target, "records": records.len(), "base_offset": first_offset }),
        );
    }
    Ok(Output::new(
        json!({ "topic": name, "acks": acks, "results": results }),
        vec![table],
    ))
}

#[allow(clippy::too_many_arguments)]
fn consume(
    cluster: &mut Cluster,
    name: &str,
    partition: Option<i32>,
    offset: &str,
    count: Option<usize>,
    wait_ms: u64,
    format: Format,
) -> Result<Option<Output>, ClientError> {
    let all = partitions_of(cluster, name)?;
    let partitions: Vec<i32> = match partition {
        Some(p) if all.contains(&p) => vec![p],
        Some(p) => {
            return Err(ClientError::Protocol(format!(
                "topic {name} has no partition {p}"
            )))
        }
        None => all,
    };
    let mut positions: BTreeMap<i32, i64> = match offset {
        "earliest" => list_offsets(cluster, name, &partitions, -2)?,
        "latest" => list_offsets(cluster, name, &partitions, -1)?,
        number => {
            let offset: i64 = number.parse().map_err(|_| {
                ClientError::Protocol(format!(
                    "--offset must be earliest, latest or a number, not {number:?}"
                ))
            })?;
            partitions.iter().map(|&p| (p, offset)).collect()
        }
    };
    // End of each partition as of now; reading stops there unless --wait-ms asks for more.
    let mut ends = list_offsets(cluster, name, &partitions, -1)?;
    let deadline = Instant::now() + Duration::from_millis(wait_ms);
    let mut table = Table::new(vec!["PARTITION", "OFFSET", "TIMESTAMP", "KEY", "VALUE"]);
    let mut received = 0usize;
    let text = |bytes: &Option<Bytes>| {
        bytes
            .as_ref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
    };
    loop {
        if count.is_some_and(|c| received >= c) {
            break;
        }
        let caught_up = positions
            .iter()
            .all(|(p, offset)| *offset >= ends.get(p).copied().unwrap_or(0));
        let now = Instant::now();
        if caught_up && now >= deadline {
            break;
        }
        let max_wait_ms = if caught_up {
            (deadline - now).as_millis().min(500) as i32
        } else {
            0
        };
        let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for &p in positions.keys() {
            by_leader
                .entry(cluster.leader_id(name, p)?)
                .or_default()
                .push(p);
        }
        let mut progressed = false;
        for (leader_id, leader_partitions) in by_leader {
            let request = FetchRequest::default()
                .with_max_wait_ms(max_wait_ms)
                .with_min_bytes(1)
                .with_max_bytes(FETCH_MAX_BYTES)
                .with_topics(vec![FetchTopic::default()
                    .with_topic(topic_name(name))
                    .with_partitions(
                        leader_partitions
                            .iter()
                            .map(|p| {
                                FetchPartition::default()
                                    .with_partition(*p)
                                    .with_fetch_offset(positions[p])
                                    .with_partition_max_bytes(FETCH_PARTITION_MAX_BYTES)
                            })
                            .collect(),
                    )]);
            let connection = cluster.node(leader_id)?;
            let version = connection
                .version_for::<FetchRequest>()?
                .min(MAX_NAMED_FETCH_VERSION);
            let response = connection.send_version(&request, version)?;
            check_code(response.error_code, || format!("fetch {name}"))?;
            for topic in &response.responses {
                for data in &topic.partitions {
                    check_code(data.error_code, || {
                        format!("fetch {name}/{}", data.partition_index)
                    })?;
                    ends.insert(
                        data.partition_index,
                        data.high_watermark
                            .max(ends.get(&data.partition_index).copied().unwrap_or(0)),
                    );
                    let Some(records) = &data.records else {
                        continue;
                    };
                    let position = positions
                        .get_mut(&data.partition_index)
                        .expect("asked for it");
                    for record in decode_batches(records)? {
                        if record.offset < *position {
                            continue;
                        }
                        *position = record.offset + 1;
                        progressed = true;
                        if count.is_some_and(|c| received >= c) {
                            continue;
                        }
                        received += 1;
                        match format {
                            Format::Json => println!(
                                "{}",
                                json!({
                                    "topic": name,
                                    "partition": data.partition_index,
                                    "offset": record.offset,
                                    "timestamp_ms": record.timestamp_ms,
                                    "key": text(&record.key),
                                    "value": text(&record.value),
                                    "headers": record.headers.iter().map(|(k, v)| (k.clone(), Value::from(text(v)))).collect::<serde_json::Map<_, _>>(),
                                })
                            ),
                            Format::Table => table.row(vec![
                                data.partition_index.to_string(),
                                record.offset.to_string(),
                                record.timestamp_ms.to_string(),
                                cell_or_dash(text(&record.key)),
                                text(&record.value).unwrap_or_else(|| "(null)".into()),
                            ]),
                        }
                    }
                }
            }
        }
        if !progressed && !caught_up {
            // Data below the end that we cannot read (e.g. only a partial batch): avoid spinning.
            std::thread::sleep(Duration::from_millis(50));
            if Instant::now() >= deadline {
                break;
            }
        }
    }
    if format == Format::Table {
        print!("{}", table.render());
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_the_java_client() {
        assert_eq!(murmur2(b"21"), -973_932_308);
        assert_eq!(murmur2(b"foobar"), -790_332_482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985_981_536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1_486_304_829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58_897_971
        );
        assert_eq!(murmur2(b"abc"), 479_470_107);
    }

    #[test]
    fn argument_parsers() {
        assert_eq!(parse_key_value("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_key_value("=x").is_err());
        assert!(parse_key_value("novalue").is_err());
        assert_eq!(parse_acks("all"), Ok(-1));
        assert!(parse_acks("2").is_err());
    }
}
