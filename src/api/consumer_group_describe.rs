//! ConsumerGroupDescribe (key 69, KIP-848): members, epochs, current and target assignments.
//! Classic or unknown groups answer GROUP_ID_NOT_FOUND, which makes admin clients fall back to
//! DescribeGroups. One hop per coordinator shard, in parallel.

use super::{str_bytes, RequestContext};
use crate::security::acl::{Operation, ResourceType};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::consumer_group_describe_response::DescribedGroup;
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, GroupId,
};
use std::collections::BTreeMap;

pub async fn handle(
    context: &RequestContext,
    request: ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
    let version = context.api_version;
    let shard = &context.shard;
    let ids: Vec<String> = request.group_ids.iter().map(|g| g.0.to_string()).collect();
    let mut answers: Vec<Option<DescribedGroup>> = vec![None; ids.len()];
    let mut by_owner: BTreeMap<usize, BTreeMap<i32, Vec<(usize, String)>>> = BTreeMap::new();
    for (slot, id) in ids.iter().enumerate() {
        let base = DescribedGroup::default()
            .with_group_id(GroupId(str_bytes(id)))
            .with_authorized_operations(i32::MIN);
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
            None => {
                answers[slot] = Some(
                    base.with_error_code(ResponseError::GroupIdNotFound.code())
                        .with_error_message(Some(str_bytes(&format!("Group {id} not found.")))),
                )
            }
        }
    }
    let hops = by_owner.into_iter().map(|(owner, partitions)| {
        let slots: Vec<usize> = partitions
            .values()
            .flatten()
            .map(|(slot, _)| *slot)
            .collect();
        let hop = shard.invoke_on(owner, move |owner_shard| async move {
            let mut described = Vec::new();
            for (partition, groups) in partitions {
                let (slots, ids): (Vec<usize>, Vec<String>) = groups.into_iter().unzip();
                let groups =
                    crate::group::consumer_group_describe(&owner_shard, partition, ids).await;
                described.extend(slots.into_iter().zip(groups));
            }
            described
        });
        async move {
            hop.await.unwrap_or_else(|_| {
                slots
                    .into_iter()
                    .map(|slot| {
                        (
                            slot,
                            DescribedGroup::default()
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
            if version < 1 {
                for member in &mut group.members {
                    member.member_type = -1;
                }
            }
            group
        })
        .collect();
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}
