//! DescribeClientQuotas (key 48): the client quota entities a filter matches, from this
//! node's metadata image, as Kafka's `ClientQuotasImage.describe` answers it. Needs
//! DESCRIBE_CONFIGS on the cluster when the authorizer is on.

use super::{str_bytes, RequestContext};
use crate::security::acl::Operation;
use crate::security::quota::{EntityName, QuotaEntity, CLIENT_ID, IP, USER};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
use kafka_protocol::messages::describe_client_quotas_response::{EntityData, EntryData, ValueData};
use kafka_protocol::messages::{DescribeClientQuotasRequest, DescribeClientQuotasResponse};

/// Match types of a filter component.
const MATCH_TYPE_EXACT: i8 = 0;
const MATCH_TYPE_DEFAULT: i8 = 1;
const MATCH_TYPE_SPECIFIED: i8 = 2;

/// What a filter asks of one entity type.
#[derive(Debug, Clone, PartialEq)]
enum Wanted {
    /// This name, or the default entity.
    Exactly(EntityName),
    /// Any name or the default, as long as the type is part of the entity.
    Present,
}

/// The filter of a request: per entity type (user, client-id), what it asks for; `ip` only
/// records that it was named (no ip entities are stored here, so it matches nothing).
#[derive(Debug, Default)]
struct Filter {
    user: Option<Wanted>,
    client_id: Option<Wanted>,
    ip: bool,
    strict: bool,
}

/// Kafka's checks of the filter, with its errors and messages.
fn filter_of(
    components: &[ComponentData],
    strict: bool,
) -> Result<Filter, (ResponseError, String)> {
    let invalid = |message: String| (ResponseError::InvalidRequest, message);
    let mut filter = Filter {
        strict,
        ..Filter::default()
    };
    let mut seen: Vec<&str> = Vec::with_capacity(components.len());
    for component in components {
        let entity_type = component.entity_type.as_str();
        if entity_type.is_empty() {
            return Err(invalid("Invalid empty entity type.".into()));
        }
        if seen.contains(&entity_type) {
            return Err(invalid(format!(
                "Entity type {entity_type} cannot appear more than once in the filter."
            )));
        }
        seen.push(entity_type);
        if ![USER, CLIENT_ID, IP].contains(&entity_type) {
            return Err((
                ResponseError::UnsupportedVersion,
                format!("Unsupported entity type {entity_type}"),
            ));
        }
        let name = component._match.as_deref();
        let wanted = match component.match_type {
            MATCH_TYPE_EXACT => match name {
                None => {
                    return Err(invalid(
                        "Request specified MATCH_TYPE_EXACT, but set match string to null.".into(),
                    ))
                }
                Some(name) => Wanted::Exactly(EntityName::Named(name.to_string())),
            },
            MATCH_TYPE_DEFAULT => {
                match name {
                    Some(_) => return Err(invalid(
                        "Request specified MATCH_TYPE_DEFAULT, but also specified a match string."
                            .into(),
                    )),
                    None => Wanted::Exactly(EntityName::Default),
                }
            }
            MATCH_TYPE_SPECIFIED => match name {
                Some(_) => return Err(invalid(
                    "Request specified MATCH_TYPE_SPECIFIED, but also specified a match string."
                        .into(),
                )),
                None => Wanted::Present,
            },
            other => {
                return Err((
                    ResponseError::UnsupportedVersion,
                    format!("Unknown match type {other}"),
                ))
            }
        };
        match entity_type {
            USER => filter.user = Some(wanted),
            CLIENT_ID => filter.client_id = Some(wanted),
            _ => filter.ip = true,
        }
    }
    if filter.ip && (filter.user.is_some() || filter.client_id.is_some()) {
        return Err(invalid(
            "Invalid entity filter component combination. IP filter component should not be \
             used with user or clientId filter component."
                .into(),
        ));
    }
    Ok(filter)
}

/// Kafka's `matches`: every component must match its part of the entity; `strict` also
/// wants no other parts.
fn matches(filter: &Filter, entity: &QuotaEntity) -> bool {
    if filter.ip {
        return false;
    }
    let part_matches = |wanted: &Option<Wanted>, part: &Option<EntityName>| match (wanted, part) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(Wanted::Present), Some(_)) => true,
        (Some(Wanted::Exactly(name)), Some(part)) => name == part,
    };
    if filter.strict {
        let wanted_parts =
            usize::from(filter.user.is_some()) + usize::from(filter.client_id.is_some());
        let parts = usize::from(entity.user.is_some()) + usize::from(entity.client_id.is_some());
        if wanted_parts != parts {
            return false;
        }
    }
    part_matches(&filter.user, &entity.user) && part_matches(&filter.client_id, &entity.client_id)
}

fn refused(error: ResponseError, message: &str) -> DescribeClientQuotasResponse {
    DescribeClientQuotasResponse::default()
        .with_error_code(error.code())
        .with_error_message(Some(str_bytes(message)))
        .with_entries(None)
}

pub async fn handle(
    context: &RequestContext,
    request: DescribeClientQuotasRequest,
) -> DescribeClientQuotasResponse {
    if !context.authorize_cluster(Operation::DescribeConfigs) {
        return refused(
            ResponseError::ClusterAuthorizationFailed,
            "Cluster authorization failed.",
        );
    }
    let filter = match filter_of(&request.components, request.strict) {
        Ok(filter) => filter,
        Err((error, message)) => return refused(error, &message),
    };
    let image = context.shard.metadata();
    let entries = image
        .client_quotas
        .iter()
        .filter(|(entity, _)| matches(&filter, entity))
        .map(|(entity, values)| {
            EntryData::default()
                .with_entity(
                    entity
                        .wire_parts()
                        .into_iter()
                        .map(|(entity_type, name)| {
                            EntityData::default()
                                .with_entity_type(str_bytes(entity_type))
                                .with_entity_name(name.map(str_bytes))
                        })
                        .collect(),
                )
                .with_values(
                    values
                        .iter()
                        .map(|(key, value)| {
                            ValueData::default()
                                .with_key(str_bytes(key))
                                .with_value(*value)
                        })
                        .collect(),
                )
        })
        .collect();
    DescribeClientQuotasResponse::default()
        .with_error_message(None)
        .with_entries(Some(entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn component(entity_type: &str, match_type: i8, name: Option<&str>) -> ComponentData {
        ComponentData::default()
            .with_entity_type(str_bytes(entity_type))
            .with_match_type(match_type)
            .with_match(name.map(str_bytes))
    }

    fn entity(user: Option<Option<&str>>, client_id: Option<Option<&str>>) -> QuotaEntity {
        QuotaEntity {
            user: user.map(EntityName::from_wire),
            client_id: client_id.map(EntityName::from_wire),
        }
    }

    #[test]
    fn filters_match_as_kafka_describes() {
        let alice = entity(Some(Some("alice")), None);
        let alice_app = entity(Some(Some("alice")), Some(Some("app")));
        let default_user = entity(Some(None), None);
        let app = entity(None, Some(Some("app")));
        let all = [&alice, &alice_app, &default_user, &app];
        let run = |components: &[ComponentData], strict: bool| -> Vec<&QuotaEntity> {
            let filter = filter_of(components, strict).unwrap();
            all.iter()
                .copied()
                .filter(|e| matches(&filter, e))
                .collect()
        };
        assert_eq!(run(&[], false).len(), 4);
        assert!(run(&[], true).is_empty());
        let exact_alice = [component(USER, MATCH_TYPE_EXACT, Some("alice"))];
        assert_eq!(run(&exact_alice, false), vec![&alice, &alice_app]);
        assert_eq!(run(&exact_alice, true), vec![&alice]);
        let default = [component(USER, MATCH_TYPE_DEFAULT, None)];
        assert_eq!(run(&default, false), vec![&default_user]);
        let any_client = [component(CLIENT_ID, MATCH_TYPE_SPECIFIED, None)];
        assert_eq!(run(&any_client, false), vec![&alice_app, &app]);
        assert_eq!(run(&any_client, true), vec![&app]);
        assert!(run(&[component(IP, MATCH_TYPE_SPECIFIED, None)], false).is_empty());
    }

    #[test]
    fn bad_filters_get_kafkas_errors() {
        let error = |components: &[ComponentData]| filter_of(components, false).unwrap_err().0;
        assert_eq!(
            error(&[component(USER, MATCH_TYPE_EXACT, None)]),
            ResponseError::InvalidRequest
        );
        assert_eq!(
            error(&[component(USER, MATCH_TYPE_DEFAULT, Some("a"))]),
            ResponseError::InvalidRequest
        );
        assert_eq!(
            error(&[
                component(USER, MATCH_TYPE_SPECIFIED, None),
                component(USER, MATCH_TYPE_SPECIFIED, None)
            ]),
            ResponseError::InvalidRequest
        );
        assert_eq!(
            error(&[component("group", MATCH_TYPE_SPECIFIED, None)]),
            ResponseError::UnsupportedVersion
        );
        assert_eq!(
            error(&[component(USER, 7, None)]),
            ResponseError::UnsupportedVersion
        );
        assert_eq!(
            error(&[
                component(IP, MATCH_TYPE_SPECIFIED, None),
                component(USER, MATCH_TYPE_SPECIFIED, None)
            ]),
            ResponseError::InvalidRequest
        );
    }
}
