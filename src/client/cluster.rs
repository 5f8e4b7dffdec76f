//! Routing over a cluster: bootstrap, Metadata, one connection per broker.

use super::{check_code, str_bytes, ClientError, ClientOptions, Connection, Result};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    FindCoordinatorRequest, MetadataRequest, MetadataResponse, TopicName,
};
use std::collections::{BTreeMap, HashMap};

/// Connections to the brokers of one cluster, found through Metadata from bootstrap addresses.
#[derive(Debug)]
pub struct Cluster {
    options: ClientOptions,
    bootstrap: Connection,
    connections: HashMap<i32, Connection>,
    /// Node id → advertised `host:port`.
    brokers: BTreeMap<i32, String>,
    controller_id: i32,
    cluster_id: Option<String>,
}

impl Cluster {
    /// Connects to the first reachable bootstrap address and reads the broker list.
    pub fn connect(bootstrap: &[String], options: &ClientOptions) -> Result<Cluster> {
        let mut last_error = None;
        for address in bootstrap {
            match Connection::connect(address, options) {
                Ok(connection) => {
                    let mut cluster = Cluster {
                        options: options.clone(),
                        bootstrap: connection,
                        connections: HashMap::new(),
                        brokers: BTreeMap::new(),
                        controller_id: -1,
                        cluster_id: None,
                    };
                    cluster.metadata(Some(&[]))?;
                    return Ok(cluster);
                }
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error
            .unwrap_or_else(|| ClientError::Protocol("no bootstrap address given".into())))
    }

    /// The connection to the bootstrap broker (for requests any broker answers).
    pub fn any(&mut self) -> &mut Connection {
        &mut self.bootstrap
    }

    /// Node id → advertised address, from the last Metadata.
    pub fn brokers(&self) -> &BTreeMap<i32, String> {
        &self.brokers
    }

    pub fn controller_id(&self) -> i32 {
        self.controller_id
    }

    pub fn cluster_id(&self) -> Option<&str> {
        self.cluster_id.as_deref()
    }

    /// Metadata for `topics` (`None`: every topic; `Some(&[])`: none, brokers only). Never
    /// creates topics. Refreshes the broker list.
    pub fn metadata(&mut self, topics: Option<&[String]>) -> Result<MetadataResponse> {
        let request = MetadataRequest::default()
            .with_topics(topics.map(|names| {
                names
                    .iter()
                    .map(|name| {
                        MetadataRequestTopic::default().with_name(Some(TopicName(str_bytes(name))))
                    })
                    .collect()
            }))
            .with_allow_auto_topic_creation(false);
        let response = self.bootstrap.send(&request)?;
        self.brokers = response
            .brokers
            .iter()
            .map(|broker| (broker.node_id.0, format!("{}:{}", broker.host, broker.port)))
            .collect();
        self.controller_id = response.controller_id.0;
        self.cluster_id = response.cluster_id.as_ref().map(|id| id.to_string());
        Ok(response)
    }

    /// The connection to broker `node_id`, opened on first use. A single-broker cluster whose
    /// advertised address is not reachable from here falls back to the bootstrap connection.
    pub fn node(&mut self, node_id: i32) -> Result<&mut Connection> {
        if !self.connections.contains_key(&node_id) {
            let address = self.brokers.get(&node_id).cloned().ok_or_else(|| {
                ClientError::Protocol(format!("broker {node_id} is not in the cluster metadata"))
            })?;
            if address == self.bootstrap.address() {
                return Ok(&mut self.bootstrap);
            }
            match Connection::connect(&address, &self.options) {
                Ok(connection) => {
                    self.connections.insert(node_id, connection);
                }
                Err(_) if self.brokers.len() == 1 => return Ok(&mut self.bootstrap),
                Err(error) => return Err(error),
            }
        }
        Ok(self.connections.get_mut(&node_id).expect("inserted above"))
    }

    /// The controller (where CreateTopics and friends go).
    pub fn controller(&mut self) -> Result<&mut Connection> {
        if self.controller_id < 0 {
            return Ok(&mut self.bootstrap);
        }
        self.node(self.controller_id)
    }

    /// Node id of the leader of `topic`/`partition`.
    pub fn leader_id(&mut self, topic: &str, partition: i32) -> Result<i32> {
        let response = self.metadata(Some(&[topic.to_string()]))?;
        let topic_metadata = response
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|name| name.0.as_str() == topic))
            .ok_or_else(|| ClientError::Protocol(format!("topic {topic} missing in metadata")))?;
        check_code(topic_metadata.error_code, || format!("topic {topic}"))?;
        let partition_metadata = topic_metadata
            .partitions
            .iter()
            .find(|p| p.partition_index == partition)
            .ok_or_else(|| {
                ClientError::Protocol(format!("topic {topic} has no partition {partition}"))
            })?;
        check_code(partition_metadata.error_code, || {
            format!("{topic}/{partition}")
        })?;
        Ok(partition_metadata.leader_id.0)
    }

    /// The connection to the group coordinator of `group` (FindCoordinator).
    pub fn coordinator(&mut self, group: &str) -> Result<&mut Connection> {
        let version = self.bootstrap.version_for::<FindCoordinatorRequest>()?;
        let node_id = if version >= 4 {
            let request =
                FindCoordinatorRequest::default().with_coordinator_keys(vec![str_bytes(group)]);
            let response = self.bootstrap.send_version(&request, version)?;
            let coordinator = response.coordinators.first().ok_or_else(|| {
                ClientError::Protocol("FindCoordinator answered no coordinator".into())
            })?;
            check_code(coordinator.error_code, || {
                format!("coordinator of group {group}")
            })?;
            self.brokers
                .entry(coordinator.node_id.0)
                .or_insert_with(|| format!("{}:{}", coordinator.host, coordinator.port));
            coordinator.node_id.0
        } else {
            let request = FindCoordinatorRequest::default().with_key(str_bytes(group));
            let response = self.bootstrap.send_version(&request, version)?;
            check_code(response.error_code, || {
                format!("coordinator of group {group}")
            })?;
            self.brokers
                .entry(response.node_id.0)
                .or_insert_with(|| format!("{}:{}", response.host, response.port));
            response.node_id.0
        };
        self.node(node_id)
    }
}
