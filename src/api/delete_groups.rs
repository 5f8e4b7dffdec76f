//! DeleteGroups (key 42): empty groups are removed with their offsets (tombstones in
//! `__consumer_offsets`); NON_EMPTY_GROUP while members remain, GROUP_ID_NOT_FOUND if unknown.
//! One hop per coordinator shard, in parallel.

use super::{str_bytes, RequestContext};
use crate::security::acl::{Operation, ResourceType};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse, GroupId};
use std::collections::BTreeMap;

pub async fn handle(
    context: &RequestContext,
    request: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let shard = &context.shard;
    let ids: Vec<String> = request
        .groups_names
        .iter()
        .map(|g| g.0.to_string())
        .collect();
    let mut codes: Vec<i16> = vec![ResponseError::UnknownServerError.code(); ids.len()];
    let mut by_owner: BTreeMap<usize, Vec<(usize, i32, String)>> = BTreeMap::new();
    for (slot, id) in ids.iter().enumerate() {
        if let Err(error) = crate::group::validate_group_id(id) {
            codes[slot] = error.code();
            continue;
        }
        if !context.authorize(Operation::Delete, ResourceType::Group, id) {
            codes[slot] = ResponseError::GroupAuthorizationFailed.code();
            continue;
        }
        match crate::group::route_existing(shard, id) {
            Some(route) => {
                by_owner
                    .entry(route.owner)
                    .or_default()
                    .push((slot, route.partition, id.clone()))
            }
            None => codes[slot] = ResponseError::GroupIdNotFound.code(),
        }
    }
    let hops = by_owner.into_iter().map(|(owner, work)| {
        let slots: Vec<usize> = work.iter().map(|(slot, _, _)| *slot).collect();
        let hop = shard.invoke_on(owner, move |owner_shard| async move {
            let mut results = Vec::with_capacity(work.len());
            for (slot, partition, id) in work {
                let mut outcome =
                    crate::group::delete_groups(&owner_shard, partition, vec![id]).await;
                let code = outcome.pop().map(|(_, code)| code).unwrap_or(0);
                results.push((slot, code));
            }
            results
        });
        async move {
            hop.await.unwrap_or_else(|_| {
                slots
                    .into_iter()
                    .map(|slot| (slot, ResponseError::NotCoordinator.code()))
                    .collect()
            })
        }
    });
    for (slot, code) in futures::future::join_all(hops).await.into_iter().flatten() {
        codes[slot] = code;
    }
    DeleteGroupsResponse::default().with_results(
        ids.iter()
            .zip(codes)
            .map(|(id, code)| {
                DeletableGroupResult::default()
                    .with_group_id(GroupId(str_bytes(id)))
                    .with_error_code(code)
            })
            .collect(),
    )
}
