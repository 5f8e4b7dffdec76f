//! `riptide cluster info`.

use super::output::{cell_or_dash, Output, Table};
use crate::client::{api_name, ClientError, Cluster};
use kafka_protocol::messages::{ApiKey, DescribeClusterRequest};
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
            "apis": apis.iter().map(|(key, range)| json!({
                "api": api_name(*key), "key": key, "min_version": range.min_version, "max_version": range.max_version,
            })).collect::<Vec<_>>(),
        }),
        tables,
    )))
}
