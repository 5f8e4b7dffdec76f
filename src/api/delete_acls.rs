//! DeleteAcls (key 31): removes the bindings each filter matches, through the controller;
//! each filter's result lists what it removed. Needs ALTER on the cluster; SECURITY_DISABLED
//! while the authorizer is off.

use super::create_acls::{acl_change_gate, ControllerAnswers};
use super::describe_acls::filter_of;
use super::{str_bytes, RequestContext};
use crate::cluster::rpc::{AdminCommand, AdminReply};
use crate::security::acl::AclBinding;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::{DeleteAclsRequest, DeleteAclsResponse};

fn failed(error: ResponseError, message: &str) -> DeleteAclsFilterResult {
    DeleteAclsFilterResult::default()
        .with_error_code(error.code())
        .with_error_message(Some(str_bytes(message)))
}

fn matching_acl(binding: &AclBinding) -> DeleteAclsMatchingAcl {
    DeleteAclsMatchingAcl::default()
        .with_resource_type(binding.resource_type.code())
        .with_resource_name(str_bytes(&binding.resource_name))
        .with_pattern_type(binding.pattern_type.code())
        .with_principal(str_bytes(&binding.principal))
        .with_host(str_bytes(&binding.host))
        .with_operation(binding.operation.code())
        .with_permission_type(binding.permission.code())
}

pub async fn handle(context: &RequestContext, request: DeleteAclsRequest) -> DeleteAclsResponse {
    if let Err((error, message)) = acl_change_gate(context, request.filters.len()) {
        return DeleteAclsResponse::default().with_filter_results(
            request
                .filters
                .iter()
                .map(|_| failed(error, &message))
                .collect(),
        );
    }
    let mut results: Vec<Option<DeleteAclsFilterResult>> = Vec::new();
    let mut filters = Vec::new();
    for filter in &request.filters {
        match filter_of(
            filter.resource_type_filter,
            filter.resource_name_filter.as_deref(),
            filter.pattern_type_filter,
            filter.principal_filter.as_deref(),
            filter.host_filter.as_deref(),
            filter.operation,
            filter.permission_type,
        ) {
            Ok(filter) => {
                filters.push(filter);
                results.push(None);
            }
            Err(message) => results.push(Some(failed(ResponseError::InvalidRequest, &message))),
        }
    }
    let command = (!filters.is_empty()).then_some(AdminCommand::DeleteAcls { filters });
    let mut deleted = ControllerAnswers::ask(context, command, |reply| match reply {
        AdminReply::DeletedAcls(deleted) => Some(deleted),
        _ => None,
    })
    .await;
    let results = results
        .into_iter()
        .map(|result| {
            result.unwrap_or_else(|| match deleted.next_answer() {
                Ok(bindings) => DeleteAclsFilterResult::default()
                    .with_matching_acls(bindings.iter().map(matching_acl).collect()),
                Err(error) => DeleteAclsFilterResult::default()
                    .with_error_code(error.code)
                    .with_error_message(Some(str_bytes(&error.message))),
            })
        })
        .collect();
    DeleteAclsResponse::default().with_filter_results(results)
}
