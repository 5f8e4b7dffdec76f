//! `riptide group list|describe|delete|seek`, over the classic group APIs (ListGroups,
//! DescribeGroups, DeleteGroups, OffsetFetch, OffsetCommit) sent to each group's coordinator.
//! On a broker without consumer groups these fail with "the broker does not support …".

use super::output::{cell_or_dash, Output, Table};
use super::{list_offsets, list_offsets_isolated, partitions_of, Isolation};
use crate::client::{check_code, str_bytes, ClientError, Cluster, Connection};
use bytes::Bytes;
use clap::{ArgGroup, Subcommand};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::{
    DeleteGroupsRequest, DescribeGroupsRequest, GroupId, ListGroupsRequest, OffsetCommitRequest,
    OffsetFetchRequest, TopicName,
};
use serde_json::json;
use std::collections::BTreeMap;

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// List consumer groups on every broker.
    List,
    /// State, members and committed offsets (with lag) of a group.
    Describe {
        group: String,
        /// Lag against the high watermark (read_uncommitted consumers) or the last stable offset
        /// (read_committed consumers: open transactions are not lag they can consume yet).
        #[arg(long, value_enum, default_value = "read-uncommitted")]
        isolation: Isolation,
    },
    /// Delete groups (they must have no members).
    Delete {
        #[arg(required = true)]
        groups: Vec<String>,
    },
    /// Move a group's committed offsets (the group must have no members).
    #[command(group(ArgGroup::new("target").required(true).args(["to_earliest", "to_latest", "to_offset"])))]
    Seek {
        group: String,
        #[arg(long, short = 't')]
        topic: String,
        /// Only this partition [default: every partition of the topic].
        #[arg(long, short = 'p')]
        partition: Option<i32>,
        #[arg(long)]
        to_earliest: bool,
        #[arg(long)]
        to_latest: bool,
        #[arg(long)]
        to_offset: Option<i64>,
        /// Show the new offsets without committing them.
        #[arg(long)]
        dry_run: bool,
    },
}

pub fn run(cluster: &mut Cluster, command: GroupCommand) -> Result<Option<Output>, ClientError> {
    match command {
        GroupCommand::List => list(cluster).map(Some),
        GroupCommand::Describe { group, isolation } => {
            describe(cluster, &group, isolation).map(Some)
        }
        GroupCommand::Delete { groups } => delete(cluster, &groups).map(Some),
        GroupCommand::Seek {
            group,
            topic,
            partition,
            to_earliest,
            to_latest,
            to_offset,
            dry_run,
        } => {
            let target = match (to_earliest, to_latest, to_offset) {
                (true, _, _) => SeekTarget::Earliest,
                (_, true, _) => SeekTarget::Latest,
                (_, _, Some(offset)) => SeekTarget::Offset(offset),
                _ => unreachable!("clap requires one target"),
            };
            seek(cluster, &group, &topic, partition, target, dry_run).map(Some)
        }
    }
}

fn group_id(name: &str) -> GroupId {
    GroupId(str_bytes(name))
}

fn list(cluster: &mut Cluster) -> Result<Output, ClientError> {
    let node_ids: Vec<i32> = cluster.brokers().keys().copied().collect();
    let mut groups = BTreeMap::new();
    for node_id in node_ids {
        let response = cluster.node(node_id)?.send(&ListGroupsRequest::default())?;
        check_code(response.error_code, || {
            format!("ListGroups on broker {node_id}")
        })?;
        for group in response.groups {
            groups.insert(
                group.group_id.0.to_string(),
                (
                    group.protocol_type.to_string(),
                    group.group_state.to_string(),
                    group.group_type.to_string(),
                    node_id,
                ),
            );
        }
    }
    let mut table = Table::new(vec!["GROUP", "STATE", "PROTOCOL-TYPE", "COORDINATOR"]);
    let mut json_groups = Vec::new();
    for (name, (protocol_type, state, group_type, node)) in &groups {
        table.row(vec![
            name.clone(),
            cell_or_dash(non_empty(state)),
            cell_or_dash(non_empty(protocol_type)),
            node.to_string(),
        ]);
        json_groups.push(json!({
            "group": name,
            "state": non_empty(state),
            "protocol_type": non_empty(protocol_type),
            "type": non_empty(group_type),
            "coordinator": node,
        }));
    }
    Ok(Output::new(json!({ "groups": json_groups }), vec![table]))
}

fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_string())
}

/// Committed offsets of `group` (every topic, or only `topic`), by (topic, partition).
fn committed_offsets(
    connection: &mut Connection,
    group: &str,
) -> Result<BTreeMap<(String, i32), i64>, ClientError> {
    let version = connection.version_for::<OffsetFetchRequest>()?;
    let mut offsets = BTreeMap::new();
    if version >= 8 {
        let request =
            OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
                .with_group_id(group_id(group))
                .with_topics(None)]);
        let response = connection.send_version(&request, version)?;
        for g in response.groups {
            check_code(g.error_code, || format!("OffsetFetch of group {group}"))?;
            for topic in g.topics {
                for p in topic.partitions {
                    check_code(p.error_code, || {
                        format!("OffsetFetch {group} {}/{}", topic.name.0, p.partition_index)
                    })?;
                    if p.committed_offset >= 0 {
                        offsets.insert(
                            (topic.name.0.to_string(), p.partition_index),
                            p.committed_offset,
                        );
                    }
                }
            }
        }
    } else {
        let request = OffsetFetchRequest::default()
            .with_group_id(group_id(group))
            .with_topics(None);
        let response = connection.send_version(&request, version)?;
        check_code(response.error_code, || {
            format!("OffsetFetch of group {group}")
        })?;
        for topic in response.topics {
            for p in topic.partitions {
                check_code(p.error_code, || {
                    format!("OffsetFetch {group} {}/{}", topic.name.0, p.partition_index)
                })?;
                if p.committed_offset >= 0 {
                    offsets.insert(
                        (topic.name.0.to_string(), p.partition_index),
                        p.committed_offset,
                    );
                }
            }
        }
    }
    Ok(offsets)
}

/// Partitions a member was assigned, from its consumer-protocol assignment bytes.
fn assignment_text(assignment: &Bytes) -> Option<String> {
    let assigned = crate::protocol::consumer_protocol::assignment_partitions(assignment)?;
    Some(
        assigned
            .iter()
            .map(|(topic, partitions)| {
                let partitions: Vec<String> = partitions.iter().map(i32::to_string).collect();
                format!("{topic}:{}", partitions.join(","))
            })
            .collect::<Vec<_>>()
            .join(" "),
    )
}

fn describe(
    cluster: &mut Cluster,
    group: &str,
    isolation: Isolation,
) -> Result<Output, ClientError> {
    let connection = cluster.coordinator(group)?;
    let response =
        connection.send(&DescribeGroupsRequest::default().with_groups(vec![group_id(group)]))?;
    let described = response
        .groups
        .into_iter()
        .next()
        .ok_or_else(|| ClientError::Protocol("DescribeGroups answered no group".into()))?;
    check_code(described.error_code, || format!("group {group}"))?;
    let committed = committed_offsets(cluster.coordinator(group)?, group)?;

    let mut summary = Table::new(vec![
        "GROUP",
        "STATE",
        "PROTOCOL-TYPE",
        "PROTOCOL",
        "MEMBERS",
    ]);
    summary.row(vec![
        group.to_string(),
        described.group_state.to_string(),
        cell_or_dash(non_empty(&described.protocol_type)),
        cell_or_dash(non_empty(&described.protocol_data)),
        described.members.len().to_string(),
    ]);
    let mut members =
        Table::new(vec!["MEMBER-ID", "CLIENT-ID", "HOST", "ASSIGNMENT"]).titled("MEMBERS");
    let mut json_members = Vec::new();
    for member in &described.members {
        let assignment = assignment_text(&member.member_assignment);
        members.row(vec![
            member.member_id.to_string(),
            member.client_id.to_string(),
            member.client_host.to_string(),
            cell_or_dash(assignment.clone()),
        ]);
        json_members.push(json!({
            "member_id": member.member_id.to_string(),
            "group_instance_id": member.group_instance_id.as_ref().map(|s| s.to_string()),
            "client_id": member.client_id.to_string(),
            "client_host": member.client_host.to_string(),
            "assignment": assignment,
        }));
    }

    // Lag: the end a consumer of this isolation can read to (HW or LSO) minus the committed offset,
    // for each partition with a committed offset, from its leader.
    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for (topic, partition) in committed.keys() {
        by_topic.entry(topic.clone()).or_default().push(*partition);
    }
    let mut ends = BTreeMap::new();
    for (topic, partitions) in &by_topic {
        if let Ok(offsets) = list_offsets_isolated(cluster, topic, partitions, -1, isolation) {
            for (partition, end) in offsets {
                ends.insert((topic.clone(), partition), end);
            }
        }
    }
    let end_column = match isolation {
        Isolation::ReadUncommitted => "HIGH-WATERMARK",
        Isolation::ReadCommitted => "LAST-STABLE",
    };
    let mut offsets =
        Table::new(vec!["TOPIC", "PARTITION", "COMMITTED", end_column, "LAG"]).titled("OFFSETS");
    let mut json_offsets = Vec::new();
    for ((topic, partition), committed_offset) in &committed {
        let end = ends.get(&(topic.clone(), *partition)).copied();
        let lag = end.map(|end| (end - committed_offset).max(0));
        offsets.row(vec![
            topic.clone(),
            partition.to_string(),
            committed_offset.to_string(),
            cell_or_dash(end),
            cell_or_dash(lag),
        ]);
        json_offsets.push(json!({
            "topic": topic, "partition": partition, "committed_offset": committed_offset,
            "end_offset": end, "lag": lag,
        }));
    }
    Ok(Output::new(
        json!({
            "group": group,
            "state": described.group_state.to_string(),
            "protocol_type": non_empty(&described.protocol_type),
            "protocol": non_empty(&described.protocol_data),
            "members": json_members,
            "lag_against": isolation.end_name(),
            "offsets": json_offsets,
        }),
        vec![summary, members, offsets],
    ))
}

fn delete(cluster: &mut Cluster, groups: &[String]) -> Result<Output, ClientError> {
    let mut table = Table::new(vec!["GROUP", "STATUS"]);
    let mut results = Vec::new();
    let mut ok = true;
    for group in groups {
        let response = cluster
            .coordinator(group)?
            .send(&DeleteGroupsRequest::default().with_groups_names(vec![group_id(group)]))?;
        for result in response.results {
            let error = ClientError::from_code(result.error_code, "").map(|e| match e {
                ClientError::Kafka { name, .. } => name,
                other => other.to_string(),
            });
            ok &= error.is_none();
            table.row(vec![
                result.group_id.0.to_string(),
                error.clone().unwrap_or_else(|| "deleted".into()),
            ]);
            results.push(json!({ "group": result.group_id.0.to_string(), "deleted": error.is_none(), "error": error }));
        }
    }
    let mut output = Output::new(json!({ "results": results }), vec![table]);
    output.ok = ok;
    Ok(output)
}

#[derive(Debug, Clone, Copy)]
enum SeekTarget {
    Earliest,
    Latest,
    Offset(i64),
}

fn seek(
    cluster: &mut Cluster,
    group: &str,
    topic: &str,
    partition: Option<i32>,
    target: SeekTarget,
    dry_run: bool,
) -> Result<Output, ClientError> {
    let all = partitions_of(cluster, topic)?;
    let partitions: Vec<i32> = match partition {
        Some(p) if all.contains(&p) => vec![p],
        Some(p) => {
            return Err(ClientError::Protocol(format!(
                "topic {topic} has no partition {p}"
            )))
        }
        None => all,
    };
    let earliest = list_offsets(cluster, topic, &partitions, -2)?;
    let latest = list_offsets(cluster, topic, &partitions, -1)?;
    let new_offsets: BTreeMap<i32, i64> = partitions
        .iter()
        .map(|&p| {
            let (low, high) = (earliest[&p], latest[&p]);
            let offset = match target {
                SeekTarget::Earliest => low,
                SeekTarget::Latest => high,
                // Like kafka-consumer-groups: clamp into the log's range.
                SeekTarget::Offset(offset) => offset.clamp(low, high),
            };
            (p, offset)
        })
        .collect();
    let previous = committed_offsets(cluster.coordinator(group)?, group)?;
    if !dry_run {
        let connection = cluster.coordinator(group)?;
        if connection.supports(kafka_protocol::messages::ApiKey::DescribeGroups) {
            let described = connection
                .send(&DescribeGroupsRequest::default().with_groups(vec![group_id(group)]))?;
            if let Some(active) = described.groups.first().filter(|g| !g.members.is_empty()) {
                return Err(ClientError::Protocol(format!(
                    "group {group} is {} with {} active member(s): stop its consumers before seeking (or use --dry-run)",
                    active.group_state,
                    active.members.len()
                )));
            }
        }
        // Generation -1 and no member id: an admin commit, accepted only while the group has
        // no active members (Kafka answers UNKNOWN_MEMBER_ID / ILLEGAL_GENERATION otherwise).
        let request = OffsetCommitRequest::default()
            .with_group_id(group_id(group))
            .with_generation_id_or_member_epoch(-1)
            .with_member_id(str_bytes(""))
            .with_retention_time_ms(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(str_bytes(topic)))
                .with_partitions(
                    new_offsets
                        .iter()
                        .map(|(&p, &offset)| {
                            OffsetCommitRequestPartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(offset)
                                .with_committed_leader_epoch(-1)
                        })
                        .collect(),
                )]);
        let response = cluster.coordinator(group)?.send(&request)?;
        for t in &response.topics {
            for p in &t.partitions {
                check_code(p.error_code, || {
                    format!("commit {group} {topic}/{}", p.partition_index)
                })?;
            }
        }
    }
    let mut table =
        Table::new(vec!["TOPIC", "PARTITION", "PREVIOUS", "NEW-OFFSET"]).titled(format!(
            "GROUP {group}{}",
            if dry_run {
                " (dry run: nothing committed)"
            } else {
                ""
            }
        ));
    let mut json_partitions = Vec::new();
    for (p, offset) in &new_offsets {
        let before = previous.get(&(topic.to_string(), *p)).copied();
        table.row(vec![
            topic.to_string(),
            p.to_string(),
            cell_or_dash(before),
            offset.to_string(),
        ]);
        json_partitions.push(json!({ "topic": topic, "partition": p, "previous_offset": before, "new_offset": offset }));
    }
    Ok(Output::new(
        json!({ "group": group, "dry_run": dry_run, "partitions": json_partitions }),
        vec![table],
    ))
}
