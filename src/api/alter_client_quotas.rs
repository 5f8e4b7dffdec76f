//! AlterClientQuotas (key 49): sets and removes client quotas through the active controller,
//! which writes them to the replicated metadata log (as Kafka's ClientQuotaRecords). Each
//! entry succeeds or fails whole, with Kafka's INVALID_REQUEST messages for bad entities,
//! keys and values; `validate_only` checks without writing. Needs ALTER_CONFIGS on the
//! cluster when the authorizer is on.

use super::create_acls::ControllerAnswers;
use super::{str_bytes, RequestContext};
use crate::cluster::controller::MAX_QUOTA_ENTRIES_PER_REQUEST;
use crate::cluster::rpc::{AdminCommand, AdminReply, QuotaAlteration};
use crate::security::acl::Operation;
use crate::security::quota::{self, QuotaEntity};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_client_quotas_request::EntryData as RequestEntry;
use kafka_protocol::messages::alter_client_quotas_response::{EntityData, EntryData};
use kafka_protocol::messages::{AlterClientQuotasRequest, AlterClientQuotasResponse};

/// Keys one entry may change: bounded like everything a request carries.
const MAX_OPS_PER_ENTRY: usize = 64;

/// The alteration an entry asks for, or why it is not one (INVALID_REQUEST).
fn alteration_of(entry: &RequestEntry) -> Result<QuotaAlteration, String> {
    let entity = QuotaEntity::from_wire(
        entry
            .entity
            .iter()
            .map(|part| (part.entity_type.as_str(), part.entity_name.as_deref())),
    )?;
    if entry.ops.len() > MAX_OPS_PER_ENTRY {
        return Err(format!(
            "at most {MAX_OPS_PER_ENTRY} quota changes per entity"
        ));
    }
    let mut ops = Vec::with_capacity(entry.ops.len());
    for op in &entry.ops {
        let key = op.key.to_string();
        if op.remove {
            // Kafka removes a key without checking it: an unknown key is simply not set.
            ops.push((key, None));
        } else {
            quota::validate_value(&key, op.value)?;
            ops.push((key, Some(op.value)));
        }
    }
    Ok(QuotaAlteration { entity, ops })
}

/// The entity of a request entry, echoed in its result.
fn echo(entry: &RequestEntry) -> Vec<EntityData> {
    entry
        .entity
        .iter()
        .map(|part| {
            EntityData::default()
                .with_entity_type(part.entity_type.clone())
                .with_entity_name(part.entity_name.clone())
        })
        .collect()
}

fn result(entry: &RequestEntry, error: Option<(i16, &str)>) -> EntryData {
    let data = EntryData::default().with_entity(echo(entry));
    match error {
        // Kafka answers a success with a null message (the codec's default is empty).
        None => data.with_error_message(None),
        Some((code, message)) => data
            .with_error_code(code)
            .with_error_message(Some(str_bytes(message))),
    }
}

pub async fn handle(
    context: &RequestContext,
    request: AlterClientQuotasRequest,
) -> AlterClientQuotasResponse {
    let refuse_all = |error: ResponseError, message: &str| {
        AlterClientQuotasResponse::default().with_entries(
            request
                .entries
                .iter()
                .map(|entry| result(entry, Some((error.code(), message))))
                .collect(),
        )
    };
    if !context.authorize_cluster(Operation::AlterConfigs) {
        return refuse_all(
            ResponseError::ClusterAuthorizationFailed,
            "Cluster authorization failed.",
        );
    }
    // One request is one controller call and one metadata log entry: bounded before either.
    if request.entries.len() > MAX_QUOTA_ENTRIES_PER_REQUEST {
        return refuse_all(
            ResponseError::InvalidRequest,
            &format!("at most {MAX_QUOTA_ENTRIES_PER_REQUEST} entries per request"),
        );
    }
    let mut checked: Vec<Result<(), String>> = Vec::with_capacity(request.entries.len());
    let mut entries = Vec::new();
    for entry in &request.entries {
        match alteration_of(entry) {
            Ok(alteration) => {
                entries.push(alteration);
                checked.push(Ok(()));
            }
            Err(message) => checked.push(Err(message)),
        }
    }
    let command = (!entries.is_empty()).then_some(AdminCommand::AlterClientQuotas {
        entries,
        validate_only: request.validate_only,
    });
    let mut applied = ControllerAnswers::ask(context, command, |reply| match reply {
        AdminReply::Changes(applied) => Some(applied),
        _ => None,
    })
    .await;
    let entries = request
        .entries
        .iter()
        .zip(checked)
        .map(|(entry, checked)| match checked {
            Err(message) => result(
                entry,
                Some((ResponseError::InvalidRequest.code(), &message)),
            ),
            Ok(()) => match applied.next_answer() {
                Ok(()) => result(entry, None),
                Err(error) => result(entry, Some((error.code, &error.message))),
            },
        })
        .collect();
    AlterClientQuotasResponse::default().with_entries(entries)
}
