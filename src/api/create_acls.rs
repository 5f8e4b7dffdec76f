//! CreateAcls (key 29): new ACL bindings, written by the controller to the replicated metadata
//! log. Needs ALTER on the cluster; SECURITY_DISABLED while the authorizer is off.

use super::{str_bytes, RequestContext};
use crate::cluster::controller::{AdminError, MAX_ACL_CHANGES_PER_REQUEST};
use crate::cluster::rpc::{AdminCommand, AdminReply};
use crate::security::acl::{AclBinding, Operation, PatternType, Permission, ResourceType};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::{CreateAclsRequest, CreateAclsResponse};

/// Kafka's message for ACL requests to a broker without an authorizer.
pub(crate) const NO_AUTHORIZER: &str = "No Authorizer is configured on the broker";

fn failed(error: ResponseError, message: &str) -> AclCreationResult {
    AclCreationResult::default()
        .with_error_code(error.code())
        .with_error_message(Some(str_bytes(message)))
}

/// The binding a creation asks for, or why it is not one (INVALID_REQUEST).
fn binding_of(creation: &AclCreation) -> Result<AclBinding, String> {
    let binding = AclBinding {
        resource_type: ResourceType::from_code(creation.resource_type)
            .ok_or_else(|| format!("unknown resource type {}", creation.resource_type))?,
        resource_name: creation.resource_name.to_string(),
        pattern_type: PatternType::from_code(creation.resource_pattern_type)
            .ok_or_else(|| format!("unknown pattern type {}", creation.resource_pattern_type))?,
        principal: creation.principal.to_string(),
        host: creation.host.to_string(),
        operation: Operation::from_code(creation.operation)
            .ok_or_else(|| format!("unknown operation {}", creation.operation))?,
        permission: Permission::from_code(creation.permission_type)
            .ok_or_else(|| format!("unknown permission type {}", creation.permission_type))?,
    };
    binding.validate()?;
    Ok(binding)
}

/// Sends an ACL command to the active controller (through shard 0, which owns the metadata
/// node) and waits until this node's image holds its outcome.
pub(crate) async fn to_controller(
    context: &RequestContext,
    command: AdminCommand,
) -> Result<AdminReply, AdminError> {
    context
        .shard
        .invoke_on(0, move |controller_shard| async move {
            crate::cluster::client::admin(&controller_shard, command).await
        })
        .await
        .map_err(|error| AdminError::new(ResponseError::RequestTimedOut, error.to_string()))?
}

/// The controller's answer for each item of an ACL request, in the order the items were sent:
/// an item past its answers (or every item, when the call itself failed) gets the call's error.
pub(crate) struct ControllerAnswers<T> {
    answers: std::vec::IntoIter<Result<T, AdminError>>,
    failure: Option<AdminError>,
}

impl<T> ControllerAnswers<T> {
    /// Sends `command` (none when no item passed validation) and keeps the answers `pick`
    /// finds in the reply.
    pub(crate) async fn ask(
        context: &RequestContext,
        command: Option<AdminCommand>,
        pick: impl FnOnce(AdminReply) -> Option<Vec<Result<T, AdminError>>>,
    ) -> ControllerAnswers<T> {
        let Some(command) = command else {
            return ControllerAnswers {
                answers: Vec::new().into_iter(),
                failure: None,
            };
        };
        let (answers, failure) = match to_controller(context, command).await.map(pick) {
            Ok(Some(answers)) => (answers, None),
            Ok(None) => (
                Vec::new(),
                Some(AdminError::new(
                    ResponseError::UnknownServerError,
                    "unexpected controller reply",
                )),
            ),
            Err(error) => (Vec::new(), Some(error)),
        };
        ControllerAnswers {
            answers: answers.into_iter(),
            failure,
        }
    }

    /// The next item's answer.
    pub(crate) fn next_answer(&mut self) -> Result<T, AdminError> {
        self.answers.next().unwrap_or_else(|| {
            Err(self.failure.clone().unwrap_or_else(|| {
                AdminError::new(
                    ResponseError::RequestTimedOut,
                    "the controller did not apply the change",
                )
            }))
        })
    }
}

/// What CreateAcls and DeleteAcls check before looking at their items: an authorizer, ALTER
/// on the cluster, and at most [`MAX_ACL_CHANGES_PER_REQUEST`] items (one request is one
/// controller call and one metadata log entry: bounded before either). The error for every
/// item when one fails.
pub(crate) fn acl_change_gate(
    context: &RequestContext,
    item_count: usize,
) -> Result<(), (ResponseError, String)> {
    if !context.authorizer_enabled() {
        return Err((ResponseError::SecurityDisabled, NO_AUTHORIZER.to_string()));
    }
    if !context.authorize_cluster(Operation::Alter) {
        return Err((
            ResponseError::ClusterAuthorizationFailed,
            "Cluster authorization failed.".to_string(),
        ));
    }
    if item_count > MAX_ACL_CHANGES_PER_REQUEST {
        return Err((
            ResponseError::InvalidRequest,
            format!("at most {MAX_ACL_CHANGES_PER_REQUEST} ACL changes per request"),
        ));
    }
    Ok(())
}

pub async fn handle(context: &RequestContext, request: CreateAclsRequest) -> CreateAclsResponse {
    if let Err((error, message)) = acl_change_gate(context, request.creations.len()) {
        return CreateAclsResponse::default().with_results(
            request
                .creations
                .iter()
                .map(|_| failed(error, &message))
                .collect(),
        );
    }
    let mut results: Vec<Option<AclCreationResult>> = Vec::with_capacity(request.creations.len());
    let mut bindings = Vec::new();
    for creation in &request.creations {
        match binding_of(creation) {
            Ok(binding) => {
                bindings.push(binding);
                results.push(None);
            }
            Err(message) => results.push(Some(failed(ResponseError::InvalidRequest, &message))),
        }
    }
    let command = (!bindings.is_empty()).then_some(AdminCommand::CreateAcls { bindings });
    let mut applied = ControllerAnswers::ask(context, command, |reply| match reply {
        AdminReply::Changes(applied) => Some(applied),
        _ => None,
    })
    .await;
    let results = results
        .into_iter()
        .map(|result| {
            result.unwrap_or_else(|| match applied.next_answer() {
                Ok(()) => AclCreationResult::default(),
                Err(error) => AclCreationResult::default()
                    .with_error_code(error.code)
                    .with_error_message(Some(str_bytes(&error.message))),
            })
        })
        .collect();
    CreateAclsResponse::default().with_results(results)
}
