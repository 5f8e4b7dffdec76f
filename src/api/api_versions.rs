//! ApiVersions (key 18): the table of APIs and versions this broker serves.

use super::{Outcome, RequestContext, Response};
use crate::protocol::{self, SUPPORTED_APIS};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};

fn supported_table() -> Vec<ApiVersion> {
    SUPPORTED_APIS
        .iter()
        .map(|api| {
            ApiVersion::default()
                .with_api_key(api.key as i16)
                .with_min_version(api.min_version)
                .with_max_version(api.max_version)
        })
        .collect()
}

pub async fn handle(
    _context: &RequestContext,
    _request: ApiVersionsRequest,
) -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(supported_table())
}

/// The v0 answer to an ApiVersions request newer than we speak (KIP-511).
pub fn unsupported_version_response(correlation_id: i32) -> Outcome {
    let response = ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(supported_table());
    match protocol::encode_response(ApiKey::ApiVersions, 0, correlation_id, &response) {
        Ok(frame) => Outcome::Respond(Response::from_frame(frame)),
        Err(error) => Outcome::Close(format!("cannot encode ApiVersions v0: {error}")),
    }
}
