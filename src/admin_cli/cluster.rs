//! `riptide cluster info|config`.

use super::output::{cell_or_dash, Output, Table};
use crate::client::{api_name, ClientError, Cluster};
use kafka_protocol::messages::{ApiKey, DescribeClusterRequest, DescribeQuorumRequest};
use serde_json::json;

pub fn info(cluster: &mut Cluster, api_versions: bool) -> Result<Option<Output>, ClientError> {
    let metadata = cluster.metadata(None)?;
    let topics = metadata.topics.len();
    let partitions: usize = metadata.topics.iter().map(|t| t.partitions.len()).sum();
    let mut cluster_id = cluster.cluster_id().map(str::to_string);
    let mut controller_id = cluster.controller_id();
    let connection = cluster.any();
    if connection.supports(ApiKey::DescribeCluster) {
        let described = connection.send(&DescribeClusterRequest::default())?;
        if described.error_code == 0 {
            cluster_id = Some(described.cluster_id.to_string())
                .filter(|id| !id.is_empty())
                .or(cluster_id);
            controller_id = described.controller_id.0;
        }
    }
    let mut summary = Table::new(vec![
        "CLUSTER-ID",
        "CONTROLLER",
        "BROKERS",
        "TOPICS",
        "PARTITIONS",
    ]);
    summary.row(vec![
        cell_or_dash(cluster_id.clone()),
        controller_id.to_string(),
        metadata.brokers.len().to_string(),
        topics.to_string(),
        partitions.to_string(),
    ]);
    let mut brokers =
        Table::new(vec!["ID", "HOST", "PORT", "RACK", "CONTROLLER"]).titled("BROKERS");
    let mut json_brokers = Vec::new();
    for broker in &metadata.brokers {
        let rack = broker.rack.as_ref().map(|r| r.to_string());
        brokers.row(vec![
            broker.node_id.0.to_string(),
            broker.host.to_string(),
            broker.port.to_string(),
            cell_or_dash(rack.clone()),
            (broker.node_id.0 == controller_id).to_string(),
        ]);
        json_brokers.push(json!({
            "node_id": broker.node_id.0, "host": broker.host.to_string(), "port": broker.port, "rack": rack,
        }));
    }
    let apis = cluster.any().broker_apis().clone();
    let mut tables = vec![summary, brokers];
    let mut json_quorum = serde_json::Value::Null;
    let connection = cluster.any();
    if connection.supports(ApiKey::DescribeQuorum) {
        let request = DescribeQuorumRequest::default().with_topics(vec![
            kafka_protocol::messages::describe_quorum_request::TopicData::default()
                .with_topic_name(kafka_protocol::messages::TopicName(
                    kafka_protocol::protocol::StrBytes::from_static_str("__cluster_metadata"),
                ))
                .with_partitions(vec![
                    kafka_protocol::messages::describe_quorum_request::PartitionData::default(),
                ]),
        ]);
        let described = connection.send(&request)?;
        if let Some(partition) = described
            .topics
            .first()
            .and_then(|topic| topic.partitions.first())
            .filter(|partition| partition.error_code == 0)
        {
            let mut voters = Table::new(vec![
                "VOTER",
                "ROLE",
                "LOG-END-OFFSET",
                "LAG",
                "LAST-FETCH-MS-AGO",
            ])
            .titled(format!(
                "CONTROLLER QUORUM (leader {}, term {}, high watermark {})",
                partition.leader_id.0, partition.leader_epoch, partition.high_watermark
            ));
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            let ago = |at: i64| {
                if at < 0 {
                    "-".to_string()
                } else {
                    (now_ms - at).max(0).to_string()
                }
            };
            let mut json_voters = Vec::new();
            let groups = [
                ("voter", &partition.current_voters),
                ("observer", &partition.observers),
            ];
            for (kind, replicas) in groups {
                for replica in replicas.iter() {
                    let lag = (partition.high_watermark - replica.log_end_offset).max(0);
                    let role = if kind == "voter" && replica.replica_id == partition.leader_id {
                        "leader"
                    } else if kind == "voter" {
                        "follower"
                    } else {
                        "observer"
                    };
                    voters.row(vec![
                        replica.replica_id.0.to_string(),
                        role.to_string(),
                        replica.log_end_offset.to_string(),
                        lag.to_string(),
                        ago(replica.last_fetch_timestamp),
                    ]);
                    json_voters.push(json!({
                        "node_id": replica.replica_id.0, "role": role,
                        "log_end_offset": replica.log_end_offset, "lag": lag,
                    }));
                }
            }
            json_quorum = json!({
                "leader_id": partition.leader_id.0,
                "term": partition.leader_epoch,
                "high_watermark": partition.high_watermark,
                "replicas": json_voters,
            });
            tables.push(voters);
        }
    }
    if api_versions {
        let mut table = Table::new(vec!["API", "KEY", "MIN", "MAX"])
            .titled(format!("APIS OF {}", cluster.any().address()));
        for (key, range) in &apis {
            table.row(vec![
                api_name(*key),
                key.to_string(),
                range.min_version.to_string(),
                range.max_version.to_string(),
            ]);
        }
        tables.push(table);
    }
    Ok(Some(Output::new(
        json!({
            "cluster_id": cluster_id,
            "controller_id": controller_id,
            "brokers": json_brokers,
            "topics": topics,
            "partitions": partitions,
            "quorum": json_quorum,
            "apis": apis.iter().map(|(key, range)| json!({
                "api": api_name(*key), "key": key, "min_version": range.min_version, "max_version": range.max_version,
            })).collect::<Vec<_>>(),
        }),
        tables,
    )))
}

/// Kafka's resource type of broker configs.
const RESOURCE_BROKER: i8 = 4;

/// `riptide cluster config`: with changes, IncrementalAlterConfigs on the broker resource (sent
/// to that broker, as Kafka's tools do; the cluster-wide default to any), then DescribeConfigs
/// of it: every dynamic key for a broker, the keys set for the default.
pub fn config(
    cluster: &mut Cluster,
    broker: Option<i32>,
    set: &[(String, String)],
    delete: &[String],
) -> Result<Output, ClientError> {
    use crate::client::{check_code, str_bytes};
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    use kafka_protocol::messages::{DescribeConfigsRequest, IncrementalAlterConfigsRequest};
    let name = broker.map(|id| id.to_string()).unwrap_or_default();
    let what = || match broker {
        Some(id) => format!("broker {id}"),
        None => "the cluster-wide default".to_string(),
    };
    if !set.is_empty() || !delete.is_empty() {
        let configs = set
            .iter()
            .map(|(key, value)| {
                AlterableConfig::default()
                    .with_name(str_bytes(key))
                    .with_config_operation(0)
                    .with_value(Some(str_bytes(value)))
            })
            .chain(delete.iter().map(|key| {
                AlterableConfig::default()
                    .with_name(str_bytes(key))
                    .with_config_operation(1)
                    .with_value(None)
            }))
            .collect();
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(RESOURCE_BROKER)
                .with_resource_name(str_bytes(&name))
                .with_configs(configs),
        ]);
        let connection = match broker {
            Some(id) => cluster.node(id)?,
            None => cluster.any(),
        };
        for result in &connection.send(&request)?.responses {
            let message = result.error_message.as_ref().map(|m| m.to_string());
            check_code(result.error_code, || {
                format!(
                    "alter configs of {} ({})",
                    what(),
                    message.unwrap_or_default()
                )
            })?;
        }
    }
    let request =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(RESOURCE_BROKER)
            .with_resource_name(str_bytes(&name))
            .with_configuration_keys(None)]);
    let connection = match broker {
        Some(id) => cluster.node(id)?,
        None => cluster.any(),
    };
    let response = connection.send(&request)?;
    let mut table = Table::new(vec!["CONFIG", "VALUE", "SOURCE"]).titled(what().to_uppercase());
    let mut json_configs = serde_json::Map::new();
    for result in &response.results {
        let message = result.error_message.as_ref().map(|m| m.to_string());
        check_code(result.error_code, || {
            format!(
                "describe configs of {} ({})",
                what(),
                message.unwrap_or_default()
            )
        })?;
        // The dynamic keys only: the static ones are the broker's command line.
        for config in result.configs.iter().filter(|config| !config.read_only) {
            let value = config.value.as_ref().map(|v| v.to_string());
            let source = super::topic::config_source_name(config.config_source);
            table.row(vec![
                config.name.to_string(),
                cell_or_dash(value.clone()),
                source.to_string(),
            ]);
            json_configs.insert(
                config.name.to_string(),
                json!({ "value": value, "source": source }),
            );
        }
    }
    Ok(Output::new(
        json!({ "broker": broker, "configs": json_configs }),
        vec![table],
    ))
}
