//! ListGroups (key 16): every coordinator shard lists its groups (one hop each, in parallel);
//! v4+ filters by state, v5+ by group type (classic / consumer), both case-insensitive.

use super::{str_bytes, RequestContext};
use crate::security::acl::{Operation, ResourceType};
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

pub async fn handle(context: &RequestContext, request: ListGroupsRequest) -> ListGroupsResponse {
    let version = context.api_version;
    let shard = &context.shard;
    let states: Vec<String> = request
        .states_filter
        .iter()
        .map(|s| s.to_lowercase())
        .collect();
    let types: Vec<String> = request
        .types_filter
        .iter()
        .map(|s| s.to_lowercase())
        .collect();
    let hops = crate::group::coordinator_shards(shard)
        .into_iter()
        .map(|owner| {
            shard.invoke_on(owner, |owner_shard| async move {
                crate::group::list_groups(&owner_shard).await
            })
        });
    let mut error_code = 0;
    let mut groups = Vec::new();
    for outcome in futures::future::join_all(hops).await {
        match outcome {
            Ok(Ok(listed)) => groups.extend(listed),
            Ok(Err(code)) => error_code = code,
            Err(_) => {
                error_code = kafka_protocol::error::ResponseError::CoordinatorNotAvailable.code()
            }
        }
    }
    groups.retain(|g| {
        (version < 4 || states.is_empty() || states.contains(&g.state.to_lowercase()))
            && (version < 5 || types.is_empty() || types.contains(&g.group_type.to_lowercase()))
    });
    // Kafka: DESCRIBE on the cluster lists every group, else only those the principal may
    // DESCRIBE.
    if !context.authorize_cluster(Operation::Describe) {
        groups.retain(|g| context.authorize(Operation::Describe, ResourceType::Group, &g.group_id));
    }
    groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
    ListGroupsResponse::default()
        .with_error_code(error_code)
        .with_groups(
            groups
                .into_iter()
                .map(|g| {
                    let listed = ListedGroup::default()
                        .with_group_id(GroupId(str_bytes(&g.group_id)))
                        .with_protocol_type(str_bytes(&g.protocol_type));
                    let listed = if version >= 4 {
                        listed.with_group_state(str_bytes(&g.state))
                    } else {
                        listed
                    };
                    if version >= 5 {
                        listed.with_group_type(str_bytes(&g.group_type))
                    } else {
                        listed
                    }
                })
                .collect(),
        )
}
