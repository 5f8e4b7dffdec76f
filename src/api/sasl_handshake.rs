//! SaslHandshake (key 17): the client names its mechanism; SaslAuthenticate carries the
//! exchange (v1), or raw size-prefixed frames do (v0). UNSUPPORTED_SASL_MECHANISM lists the ones
//! served.

use super::RequestContext;
use crate::config::SaslMechanism;
use crate::security::session::SaslState;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{SaslHandshakeRequest, SaslHandshakeResponse};

pub async fn handle(
    context: &RequestContext,
    request: SaslHandshakeRequest,
) -> SaslHandshakeResponse {
    let enabled = context.shard.config.sasl_mechanisms().unwrap_or_default();
    let names = enabled.iter().map(|m| super::str_bytes(m.name())).collect();
    let response = SaslHandshakeResponse::default().with_mechanisms(names);
    if !context.session.listener.protocol.requires_sasl() {
        return response.with_error_code(ResponseError::IllegalSaslState.code());
    }
    let wanted = SaslMechanism::from_name(request.mechanism.as_str());
    let Some(mechanism) = wanted.filter(|m| enabled.contains(m)) else {
        tracing::info!(peer = %context.peer, mechanism = %request.mechanism.as_str(),
            "SASL mechanism not enabled");
        return response.with_error_code(ResponseError::UnsupportedSaslMechanism.code());
    };
    // Re-authentication (KIP-368) needs SaslAuthenticate v1+, so it never comes as v0.
    let reauthenticating = context.session.is_authenticated();
    if !context.session.may_start_sasl() || (reauthenticating && context.api_version == 0) {
        return response.with_error_code(ResponseError::IllegalSaslState.code());
    }
    *context.session.sasl.borrow_mut() = SaslState::Handshaken(mechanism);
    if context.api_version == 0 {
        context.session.use_raw_sasl_tokens();
    }
    response
}
