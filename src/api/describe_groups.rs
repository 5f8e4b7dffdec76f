//! DescribeGroups (key 15): classic groups, grouped by coordinator shard (one hop per shard, in
//! parallel), answered in request order. A group that does not exist is reported as Dead (as
//! Kafka does); a KIP-848 group answers GROUP_ID_NOT_FOUND ("not a classic group").

use super::{str_bytes, RequestContext};
use crate::security::acl::{Operation, ResourceType};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse, GroupId};
use std::collections::BTreeMap;

/// Kafka's placeholder when authorized operations were not asked for.
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

pub async fn handle(
    context: &RequestContext,
    request: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let version = context.api_version;
    let shard = &context.shard;
    let ids: Vec<String> = request.groups.iter().map(|g| g.0.to_string()).collect();
    let mut answers: Vec<Option<DescribedGroup>> = vec![None; ids.len()];
    let mut by_owner: BTreeMap<usize, BTreeMap<i32, Vec<(usize, String)>>> = BTreeMap::new();
    for (slot, id) in ids.iter().enumerate() {
        let base = DescribedGroup::default().with_group_id(GroupId(str_bytes(id)));
        if let Err(error) = crate::group::validate_group_id(id) {
            answers[slot] = Some(base.with_error_code(error.code()));
            continue;
        }
        if !context.authorize(Operation::Describe, ResourceType::Group, id) {
            answers[slot] =
                Some(base.with_error_code(ResponseError::GroupAuthorizationFailed.code()));
            continue;
        }
        match crate::group::route_existing(shard, id) {
            Some(route) => by_owner
                .entry(route.owner)
                .or_default()
                .entry(route.partition)
                .or_default()
                .push((slot, id.clone())),
            None => answers[slot] = Some(base.with_group_state(str_bytes("Dead"))),
        }
    }
    let hops = by_owner.into_iter().map(|(owner, partitions)| {
        let slots: Vec<(usize, String)> = partitions.values().flatten().cloned().collect();
        let hop = shard.invoke_on(owner, move |owner_shard| async move {
            let mut described = Vec::new();
            for (partition, groups) in partitions {
                let (slots, ids): (Vec<usize>, Vec<String>) = groups.into_iter().unzip();
                let groups = crate::group::describe_groups(&owner_shard, partition, ids).await;
                described.extend(slots.into_iter().zip(groups));
            }
            described
        });
        async move {
            hop.await.unwrap_or_else(|_| {
                slots
                    .into_iter()
                    .map(|(slot, id)| {
                        (
                            slot,
                            DescribedGroup::default()
                                .with_group_id(GroupId(str_bytes(&id)))
                                .with_error_code(ResponseError::NotCoordinator.code()),
                        )
                    })
                    .collect()
            })
        }
    });
    for (slot, group) in futures::future::join_all(hops).await.into_iter().flatten() {
        answers[slot] = Some(group);
    }
    let groups = answers
        .into_iter()
        .map(|answer| {
            let mut group = answer.unwrap_or_default();
            group.authorized_operations =
                if request.include_authorized_operations && group.error_code == 0 {
                    context.authorized_operations(ResourceType::Group, group.group_id.0.as_str())
                } else {
                    AUTHORIZED_OPERATIONS_OMITTED
                };
            if version < 6 {
                group.error_message = None;
            }
            if version < 4 {
                for member in &mut group.members {
                    member.group_instance_id = None;
                }
            }
            group
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}
