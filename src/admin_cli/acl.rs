//! `riptide acl add|list|remove`: ACL bindings over CreateAcls, DescribeAcls and DeleteAcls,
//! with Kafka's `kafka-acls.sh` flags. The admin client speaks PLAINTEXT only, so the broker
//! sees it as `User:ANONYMOUS`: that principal needs ALTER (add, remove) or DESCRIBE (list) on
//! the cluster, or must be a super user, while the authorizer is on.

use super::output::{Output, Table};
use crate::client::{check_code, str_bytes, ClientError, Cluster};
use crate::security::acl::{
    AclBinding, Operation, PatternType, Permission, ResourceType, CLUSTER_NAME, WILDCARD_HOST,
};
use clap::{Args, Subcommand};
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::{CreateAclsRequest, DeleteAclsRequest, DescribeAclsRequest};
use serde_json::json;

#[derive(Subcommand, Debug)]
pub enum AclCommand {
    /// Add bindings: every principal × operation on the resource.
    Add(AclArgs),
    /// List the bindings matching the flags (all of them without flags).
    List(AclArgs),
    /// Remove the bindings matching the flags.
    Remove(AclArgs),
}

/// The resource, principals, operations and host of a command.
#[derive(Args, Debug, Default)]
pub struct AclArgs {
    /// Principal to allow, e.g. User:alice (repeatable).
    #[arg(long)]
    pub allow_principal: Vec<String>,
    /// Principal to deny (repeatable).
    #[arg(long)]
    pub deny_principal: Vec<String>,
    /// Operation: all, read, write, create, delete, alter, describe, cluster-action,
    /// describe-configs, alter-configs, idempotent-write (repeatable).
    #[arg(long)]
    pub operation: Vec<String>,
    /// Topic name (or prefix).
    #[arg(long, conflicts_with_all = ["group", "cluster", "transactional_id"])]
    pub topic: Option<String>,
    /// Consumer group id (or prefix).
    #[arg(long, conflicts_with_all = ["cluster", "transactional_id"])]
    pub group: Option<String>,
    /// The cluster resource (kafka-cluster).
    #[arg(long, conflicts_with = "transactional_id")]
    pub cluster: bool,
    /// Transactional id (or prefix).
    #[arg(long)]
    pub transactional_id: Option<String>,
    /// literal or prefixed (add, remove: default literal); list also takes any and match
    /// (default any).
    #[arg(long)]
    pub resource_pattern_type: Option<String>,
    /// Host the bindings apply to: * or an IP address (add: default *).
    #[arg(long)]
    pub host: Option<String>,
}

fn usage(message: impl Into<String>) -> ClientError {
    ClientError::Protocol(message.into())
}

impl AclArgs {
    /// The resource named by the flags, if any.
    fn resource(&self) -> Option<(ResourceType, String)> {
        if let Some(topic) = &self.topic {
            Some((ResourceType::Topic, topic.clone()))
        } else if let Some(group) = &self.group {
            Some((ResourceType::Group, group.clone()))
        } else if self.cluster {
            Some((ResourceType::Cluster, CLUSTER_NAME.to_string()))
        } else {
            self.transactional_id
                .as_ref()
                .map(|id| (ResourceType::TransactionalId, id.clone()))
        }
    }

    fn pattern_type(&self, default: PatternType) -> Result<PatternType, ClientError> {
        match &self.resource_pattern_type {
            None => Ok(default),
            Some(name) => PatternType::from_name(name)
                .ok_or_else(|| usage(format!("unknown --resource-pattern-type {name}"))),
        }
    }

    fn operations(&self) -> Result<Vec<Operation>, ClientError> {
        self.operation
            .iter()
            .map(|name| {
                Operation::from_name(name)
                    .filter(|op| *op != Operation::Any)
                    .ok_or_else(|| usage(format!("unknown --operation {name}")))
            })
            .collect()
    }

    /// (permission, principal) pairs of the flags.
    fn principals(&self) -> Vec<(Permission, String)> {
        let allow = self
            .allow_principal
            .iter()
            .map(|p| (Permission::Allow, p.clone()));
        let deny = self
            .deny_principal
            .iter()
            .map(|p| (Permission::Deny, p.clone()));
        allow.chain(deny).collect()
    }
}

pub fn run(cluster: &mut Cluster, command: AclCommand) -> Result<Option<Output>, ClientError> {
    match command {
        AclCommand::Add(args) => add(cluster, &args),
        AclCommand::List(args) => list(cluster, &args),
        AclCommand::Remove(args) => remove(cluster, &args),
    }
    .map(Some)
}

fn binding_table(bindings: &[AclBinding]) -> (serde_json::Value, Table) {
    let mut table = Table::new(vec![
        "PRINCIPAL",
        "HOST",
        "RESOURCE-TYPE",
        "RESOURCE-NAME",
        "PATTERN-TYPE",
        "OPERATION",
        "PERMISSION",
    ]);
    let mut list = Vec::with_capacity(bindings.len());
    for binding in bindings {
        table.row(vec![
            binding.principal.clone(),
            binding.host.clone(),
            binding.resource_type.name().to_string(),
            binding.resource_name.clone(),
            binding.pattern_type.name().to_string(),
            binding.operation.name().to_string(),
            binding.permission.name().to_string(),
        ]);
        list.push(json!({
            "principal": binding.principal,
            "host": binding.host,
            "resource_type": binding.resource_type.name(),
            "resource_name": binding.resource_name,
            "pattern_type": binding.pattern_type.name(),
            "operation": binding.operation.name(),
            "permission": binding.permission.name(),
        }));
    }
    (json!(list), table)
}

fn add(cluster: &mut Cluster, args: &AclArgs) -> Result<Output, ClientError> {
    let (resource_type, resource_name) = args.resource().ok_or_else(|| {
        usage("name a resource: --topic, --group, --cluster or --transactional-id")
    })?;
    let principals = args.principals();
    if principals.is_empty() {
        return Err(usage("give --allow-principal or --deny-principal"));
    }
    let operations = args.operations()?;
    if operations.is_empty() {
        return Err(usage("give at least one --operation"));
    }
    let pattern_type = args.pattern_type(PatternType::Literal)?;
    let host = args
        .host
        .clone()
        .unwrap_or_else(|| WILDCARD_HOST.to_string());
    let mut bindings = Vec::new();
    for (permission, principal) in &principals {
        for &operation in &operations {
            let binding = AclBinding {
                resource_type,
                resource_name: resource_name.clone(),
                pattern_type,
                principal: principal.clone(),
                host: host.clone(),
                operation,
                permission: *permission,
            };
            binding.validate().map_err(usage)?;
            bindings.push(binding);
        }
    }
    let request = CreateAclsRequest::default().with_creations(
        bindings
            .iter()
            .map(|b| {
                AclCreation::default()
                    .with_resource_type(b.resource_type.code())
                    .with_resource_name(str_bytes(&b.resource_name))
                    .with_resource_pattern_type(b.pattern_type.code())
                    .with_principal(str_bytes(&b.principal))
                    .with_host(str_bytes(&b.host))
                    .with_operation(b.operation.code())
                    .with_permission_type(b.permission.code())
            })
            .collect(),
    );
    let response = cluster.any().send(&request)?;
    for result in &response.results {
        check_code(result.error_code, || {
            format!(
                "CreateAcls: {}",
                result.error_message.as_deref().unwrap_or("")
            )
        })?;
    }
    let (json, table) = binding_table(&bindings);
    Ok(Output::new(
        json!({ "added": json }),
        vec![table.titled("Added ACLs")],
    ))
}

/// The DescribeAcls/DeleteAcls filter fields of the flags: resource, pattern, principal,
/// host, operation, permission (codes; `None` strings match everything).
type FilterFields = (
    i8,
    Option<String>,
    i8,
    Option<String>,
    Option<String>,
    i8,
    i8,
);

fn filter_fields(
    args: &AclArgs,
    default_pattern: PatternType,
) -> Result<FilterFields, ClientError> {
    let (resource_type, resource_name) = match args.resource() {
        Some((resource_type, name)) => (resource_type, Some(name)),
        None => (ResourceType::Any, None),
    };
    let pattern_type = args.pattern_type(default_pattern)?;
    let principals = args.principals();
    if principals.len() > 1 {
        return Err(usage("give at most one principal to filter on"));
    }
    let (permission, principal) = match principals.into_iter().next() {
        Some((permission, principal)) => (permission, Some(principal)),
        None => (Permission::Any, None),
    };
    let operations = args.operations()?;
    if operations.len() > 1 {
        return Err(usage("give at most one --operation to filter on"));
    }
    let operation = operations.first().copied().unwrap_or(Operation::Any);
    Ok((
        resource_type.code(),
        resource_name,
        pattern_type.code(),
        principal,
        args.host.clone(),
        operation.code(),
        permission.code(),
    ))
}

fn binding_of(
    resource_type: i8,
    resource_name: &str,
    pattern_type: i8,
    principal: &str,
    host: &str,
    operation: i8,
    permission: i8,
) -> Result<AclBinding, ClientError> {
    let unknown =
        |what: &str, code: i8| usage(format!("the broker answered an unknown {what} {code}"));
    Ok(AclBinding {
        resource_type: ResourceType::from_code(resource_type)
            .ok_or_else(|| unknown("resource type", resource_type))?,
        resource_name: resource_name.to_string(),
        pattern_type: PatternType::from_code(pattern_type)
            .ok_or_else(|| unknown("pattern type", pattern_type))?,
        principal: principal.to_string(),
        host: host.to_string(),
        operation: Operation::from_code(operation)
            .ok_or_else(|| unknown("operation", operation))?,
        permission: Permission::from_code(permission)
            .ok_or_else(|| unknown("permission", permission))?,
    })
}

fn list(cluster: &mut Cluster, args: &AclArgs) -> Result<Output, ClientError> {
    let (resource_type, resource_name, pattern_type, principal, host, operation, permission) =
        filter_fields(args, PatternType::Any)?;
    let request = DescribeAclsRequest::default()
        .with_resource_type_filter(resource_type)
        .with_resource_name_filter(resource_name.as_deref().map(str_bytes))
        .with_pattern_type_filter(pattern_type)
        .with_principal_filter(principal.as_deref().map(str_bytes))
        .with_host_filter(host.as_deref().map(str_bytes))
        .with_operation(operation)
        .with_permission_type(permission);
    let response = cluster.any().send(&request)?;
    check_code(response.error_code, || {
        format!(
            "DescribeAcls: {}",
            response.error_message.as_deref().unwrap_or("")
        )
    })?;
    let mut bindings = Vec::new();
    for resource in &response.resources {
        for acl in &resource.acls {
            bindings.push(binding_of(
                resource.resource_type,
                &resource.resource_name,
                resource.pattern_type,
                &acl.principal,
                &acl.host,
                acl.operation,
                acl.permission_type,
            )?);
        }
    }
    let (json, table) = binding_table(&bindings);
    Ok(Output::new(json!({ "acls": json }), vec![table]))
}

fn remove(cluster: &mut Cluster, args: &AclArgs) -> Result<Output, ClientError> {
    let default_pattern = if args.resource().is_some() {
        PatternType::Literal
    } else {
        PatternType::Any
    };
    let (resource_type, resource_name, pattern_type, principal, host, operation, permission) =
        filter_fields(args, default_pattern)?;
    let request = DeleteAclsRequest::default().with_filters(vec![DeleteAclsFilter::default()
        .with_resource_type_filter(resource_type)
        .with_resource_name_filter(resource_name.as_deref().map(str_bytes))
        .with_pattern_type_filter(pattern_type)
        .with_principal_filter(principal.as_deref().map(str_bytes))
        .with_host_filter(host.as_deref().map(str_bytes))
        .with_operation(operation)
        .with_permission_type(permission)]);
    let response = cluster.any().send(&request)?;
    let mut bindings = Vec::new();
    for result in &response.filter_results {
        check_code(result.error_code, || {
            format!(
                "DeleteAcls: {}",
                result.error_message.as_deref().unwrap_or("")
            )
        })?;
        for acl in &result.matching_acls {
            bindings.push(binding_of(
                acl.resource_type,
                &acl.resource_name,
                acl.pattern_type,
                &acl.principal,
                &acl.host,
                acl.operation,
                acl.permission_type,
            )?);
        }
    }
    let (json, table) = binding_table(&bindings);
    Ok(Output::new(
        json!({ "removed": json }),
        vec![table.titled("Removed ACLs")],
    ))
}
