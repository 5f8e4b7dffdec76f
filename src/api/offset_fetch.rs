//! OffsetFetch (key 9): one group (v1–7) or several (v8+). Groups are routed to their coordinator
//! shards, one hop per shard with all its groups, in parallel; answers keep request order.
//! `require_stable` (v7+): a partition with a commit still being written answers
//! UNSTABLE_OFFSET_COMMIT (retriable) instead of an offset that is about to change.

use super::{str_bytes, topic_name, RequestContext};
use crate::group::{FetchGroup, FetchedGroup};
use crate::security::acl::{Operation, ResourceType};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{GroupId, OffsetFetchRequest, OffsetFetchResponse};
use std::collections::BTreeMap;

pub async fn handle(context: &RequestContext, request: OffsetFetchRequest) -> OffsetFetchResponse {
    let version = context.api_version;
    let require_stable = version >= 7 && request.require_stable;
    let groups: Vec<FetchGroup> = if version >= 8 {
        request
            .groups
            .into_iter()
            .map(|g| FetchGroup {
                group_id: g.group_id.0.to_string(),
                topics: g.topics.map(|topics| {
                    topics
                        .into_iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes))
                        .collect()
                }),
                member_id: g.member_id.map(|m| m.to_string()),
                member_epoch: g.member_epoch,
            })
            .collect()
    } else {
        vec![FetchGroup {
            group_id: request.group_id.0.to_string(),
            topics: request.topics.map(|topics| {
                topics
                    .into_iter()
                    .map(|t| (t.name.0.to_string(), t.partition_indexes))
                    .collect()
            }),
            member_id: None,
            member_epoch: -1,
        }]
    };
    let fetched: Vec<FetchedGroup> = fetch_all(context, groups.clone(), require_stable)
        .await
        .into_iter()
        .zip(&groups)
        .map(|(fetched, group)| authorized_topics(context, fetched, group.topics.is_some()))
        .collect();

    if version >= 8 {
        let groups = groups
            .into_iter()
            .zip(fetched)
            .map(|(request, fetched)| {
                OffsetFetchResponseGroup::default()
                    .with_group_id(GroupId(str_bytes(&request.group_id)))
                    .with_error_code(fetched.error)
                    .with_topics(
                        fetched
                            .topics
                            .into_iter()
                            .map(|(topic, partitions)| {
                                OffsetFetchResponseTopics::default()
                                    .with_name(topic_name(&topic))
                                    .with_partitions(
                                        partitions
                                            .into_iter()
                                            .map(|p| {
                                                OffsetFetchResponsePartitions::default()
                                                    .with_partition_index(p.partition)
                                                    .with_committed_offset(p.offset)
                                                    .with_committed_leader_epoch(p.leader_epoch)
                                                    .with_metadata(Some(str_bytes(&p.metadata)))
                                                    .with_error_code(p.error)
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    )
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let request = groups.into_iter().next().expect("one group before v8");
    let fetched = fetched.into_iter().next().expect("one answer per group");
    let group_error = fetched.error;
    // A group-level error with requested partitions: v1 has no top-level code, so every
    // partition carries it (later versions get both).
    let topics = if group_error != 0 {
        request
            .topics
            .unwrap_or_default()
            .into_iter()
            .map(|(topic, partitions)| {
                (
                    topic,
                    partitions
                        .into_iter()
                        .map(|partition| crate::group::FetchedPartition {
                            partition,
                            offset: -1,
                            leader_epoch: -1,
                            metadata: String::new(),
                            error: group_error,
                        })
                        .collect(),
                )
            })
            .collect()
    } else {
        fetched.topics
    };
    let topics = topics
        .into_iter()
        .map(
            |(topic, partitions): (String, Vec<crate::group::FetchedPartition>)| {
                OffsetFetchResponseTopic::default()
                    .with_name(topic_name(&topic))
                    .with_partitions(
                        partitions
                            .into_iter()
                            .map(|p| {
                                OffsetFetchResponsePartition::default()
                                    .with_partition_index(p.partition)
                                    .with_committed_offset(p.offset)
                                    .with_committed_leader_epoch(if version >= 5 {
                                        p.leader_epoch
                                    } else {
                                        -1
                                    })
                                    .with_metadata(Some(str_bytes(&p.metadata)))
                                    .with_error_code(p.error)
                            })
                            .collect(),
                    )
            },
        )
        .collect();
    OffsetFetchResponse::default()
        .with_error_code(if version >= 2 { group_error } else { 0 })
        .with_topics(topics)
}

/// Routes every group, one hop per coordinator shard (all at once); answers in request order.
async fn fetch_all(
    context: &RequestContext,
    groups: Vec<FetchGroup>,
    require_stable: bool,
) -> Vec<FetchedGroup> {
    let shard = &context.shard;
    let mut answers: Vec<Option<FetchedGroup>> = vec![None; groups.len()];
    let mut by_owner: BTreeMap<usize, Vec<(usize, i32, FetchGroup)>> = BTreeMap::new();
    for (slot, group) in groups.into_iter().enumerate() {
        if !context.authorize(Operation::Describe, ResourceType::Group, &group.group_id) {
            answers[slot] = Some(FetchedGroup {
                error: ResponseError::GroupAuthorizationFailed.code(),
                topics: Vec::new(),
            });
            continue;
        }
        match crate::group::route(shard, &group.group_id).await {
            Ok(route) => {
                by_owner
                    .entry(route.owner)
                    .or_default()
                    .push((slot, route.partition, group))
            }
            Err(error) => {
                answers[slot] = Some(FetchedGroup {
                    error: error.code(),
                    topics: Vec::new(),
                })
            }
        }
    }
    let hops = by_owner.into_iter().map(|(owner, work)| {
        let slots: Vec<usize> = work.iter().map(|(slot, _, _)| *slot).collect();
        let hop = shard.invoke_on(owner, move |owner_shard| async move {
            let fetches = work.into_iter().map(|(slot, partition, group)| {
                let owner_shard = owner_shard.clone();
                async move {
                    (
                        slot,
                        crate::group::fetch_offsets(&owner_shard, partition, group, require_stable)
                            .await,
                    )
                }
            });
            futures::future::join_all(fetches).await
        });
        async move {
            hop.await.unwrap_or_else(|_| {
                slots
                    .into_iter()
                    .map(|slot| {
                        (
                            slot,
                            FetchedGroup {
                                error: ResponseError::NotCoordinator.code(),
                                topics: Vec::new(),
                            },
                        )
                    })
                    .collect()
            })
        }
    });
    for (slot, fetched) in futures::future::join_all(hops).await.into_iter().flatten() {
        answers[slot] = Some(fetched);
    }
    answers
        .into_iter()
        .map(|answer| {
            answer.unwrap_or(FetchedGroup {
                error: ResponseError::UnknownServerError.code(),
                topics: Vec::new(),
            })
        })
        .collect()
}

/// Kafka: topics the principal may not DESCRIBE are left out of an all-topics answer; asked for
/// by name, their partitions carry TOPIC_AUTHORIZATION_FAILED.
fn authorized_topics(
    context: &RequestContext,
    mut fetched: FetchedGroup,
    named: bool,
) -> FetchedGroup {
    if !context.authorizer_enabled() {
        return fetched;
    }
    let allowed = |topic: &str| context.authorize(Operation::Describe, ResourceType::Topic, topic);
    if named {
        for (topic, partitions) in &mut fetched.topics {
            if !allowed(topic) {
                for partition in partitions {
                    partition.offset = -1;
                    partition.leader_epoch = -1;
                    partition.metadata.clear();
                    partition.error = ResponseError::TopicAuthorizationFailed.code();
                }
            }
        }
    } else {
        fetched.topics.retain(|(topic, _)| allowed(topic));
    }
    fetched
}
