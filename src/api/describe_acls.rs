//! DescribeAcls (key 30): the bindings a filter matches, from this node's metadata image,
//! grouped by resource pattern. Needs DESCRIBE on the cluster; SECURITY_DISABLED while the
//! authorizer is off.

use super::create_acls::NO_AUTHORIZER;
use super::{str_bytes, RequestContext};
use crate::security::acl::{AclFilter, Operation, PatternType, Permission, ResourceType};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{DescribeAclsRequest, DescribeAclsResponse};

/// The filter of a DescribeAcls or DeleteAcls request, or why it is not one (INVALID_REQUEST:
/// UNKNOWN or undefined codes, over-long strings).
pub(crate) fn filter_of(
    resource_type: i8,
    resource_name: Option<&str>,
    pattern_type: i8,
    principal: Option<&str>,
    host: Option<&str>,
    operation: i8,
    permission: i8,
) -> Result<AclFilter, String> {
    let filter = AclFilter {
        resource_type: ResourceType::from_code(resource_type)
            .ok_or_else(|| format!("unknown resource type {resource_type}"))?,
        resource_name: resource_name.map(str::to_string),
        pattern_type: PatternType::from_code(pattern_type)
            .ok_or_else(|| format!("unknown pattern type {pattern_type}"))?,
        principal: principal.map(str::to_string),
        host: host.map(str::to_string),
        operation: Operation::from_code(operation)
            .ok_or_else(|| format!("unknown operation {operation}"))?,
        permission: Permission::from_code(permission)
            .ok_or_else(|| format!("unknown permission type {permission}"))?,
    };
    filter.validate()?;
    Ok(filter)
}

fn refused(error: ResponseError, message: &str) -> DescribeAclsResponse {
    DescribeAclsResponse::default()
        .with_error_code(error.code())
        .with_error_message(Some(str_bytes(message)))
}

pub async fn handle(
    context: &RequestContext,
    request: DescribeAclsRequest,
) -> DescribeAclsResponse {
    if !context.authorizer_enabled() {
        return refused(ResponseError::SecurityDisabled, NO_AUTHORIZER);
    }
    if !context.authorize_cluster(Operation::Describe) {
        return refused(
            ResponseError::ClusterAuthorizationFailed,
            "Cluster authorization failed.",
        );
    }
    let filter = match filter_of(
        request.resource_type_filter,
        request.resource_name_filter.as_deref(),
        request.pattern_type_filter,
        request.principal_filter.as_deref(),
        request.host_filter.as_deref(),
        request.operation,
        request.permission_type,
    ) {
        Ok(filter) => filter,
        Err(message) => return refused(ResponseError::InvalidRequest, &message),
    };
    let image = context.shard.metadata();
    // The store yields bindings grouped by pattern already: one resource per run.
    let mut resources: Vec<DescribeAclsResource> = Vec::new();
    for binding in image.acls.matching(&filter) {
        let description = AclDescription::default()
            .with_principal(str_bytes(&binding.principal))
            .with_host(str_bytes(&binding.host))
            .with_operation(binding.operation.code())
            .with_permission_type(binding.permission.code());
        match resources.last_mut() {
            Some(last)
                if last.resource_type == binding.resource_type.code()
                    && last.pattern_type == binding.pattern_type.code()
                    && last.resource_name.as_str() == binding.resource_name =>
            {
                last.acls.push(description);
            }
            _ => resources.push(
                DescribeAclsResource::default()
                    .with_resource_type(binding.resource_type.code())
                    .with_resource_name(str_bytes(&binding.resource_name))
                    .with_pattern_type(binding.pattern_type.code())
                    .with_acls(vec![description]),
            ),
        }
    }
    DescribeAclsResponse::default().with_resources(resources)
}
