//! AlterConfigs (key 33), the legacy form: the given set replaces all explicit topic configs,
//! or all dynamic configs of a broker resource.

use super::RequestContext;
use crate::cluster::controller::{ConfigChange, ConfigOp};
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};

pub async fn handle(
    context: &RequestContext,
    request: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let resources = request
        .resources
        .into_iter()
        .map(|resource| {
            let changes = resource
                .configs
                .into_iter()
                .map(|config| ConfigChange {
                    key: config.name.to_string(),
                    op: if config.value.is_some() {
                        ConfigOp::Set
                    } else {
                        ConfigOp::Delete
                    },
                    value: config.value.map(|v| v.to_string()),
                })
                .collect();
            (resource.resource_type, resource.resource_name, changes)
        })
        .collect();
    let results =
        super::incremental_alter_configs::alter(context, resources, true, request.validate_only)
            .await;
    AlterConfigsResponse::default().with_responses(
        results
            .into_iter()
            .map(|(resource_type, name, code, message)| {
                AlterConfigsResourceResponse::default()
                    .with_resource_type(resource_type)
                    .with_resource_name(name)
                    .with_error_code(code)
                    .with_error_message(message.map(|m| super::str_bytes(&m)))
            })
            .collect(),
    )
}
