//! SaslAuthenticate (key 36): PLAIN in one round, SCRAM in two, checked against the SCRAM
//! credentials of the metadata image. A failure is answered with SASL_AUTHENTICATION_FAILED after
//! `connection_failed_authentication_delay_ms`, logged with the peer, and closes the connection.

use super::{respond, Outcome, RequestContext};
use crate::config::SaslMechanism;
use crate::security::scram::{self, Mechanism, ScramServer, Step};
use crate::security::session::SaslState;
use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse};
use std::time::Duration;

pub async fn handle(context: &RequestContext, request: SaslAuthenticateRequest) -> Outcome {
    let image = context.shard.metadata();
    let lookup = |user: &str, mechanism: Mechanism| {
        image
            .scram_credentials
            .get(&(user.to_string(), mechanism))
            .cloned()
    };
    let state = std::mem::take(&mut *context.session.sasl.borrow_mut());
    let step = match state {
        SaslState::Handshaken(SaslMechanism::Plain) => {
            match scram::parse_plain(&request.auth_bytes) {
                Ok((user, password)) => {
                    // PLAIN checks the password against the user's SCRAM credential.
                    let valid = Mechanism::ALL.into_iter().any(|mechanism| {
                        lookup(&user, mechanism)
                            .is_some_and(|c| c.matches_password(mechanism, &password))
                    });
                    if valid {
                        Step::Authenticated {
                            user,
                            last: Vec::new(),
                        }
                    } else {
                        Step::Failed(format!("authentication failed for user {user}"))
                    }
                }
                Err(error) => Step::Failed(error),
            }
        }
        SaslState::Handshaken(SaslMechanism::Scram(mechanism)) => {
            let mut server = ScramServer::new(mechanism);
            let step = server.step(&request.auth_bytes, &lookup, &scram::server_nonce());
            *context.session.sasl.borrow_mut() = SaslState::Scram(server);
            step
        }
        SaslState::Scram(mut server) => server.step(&request.auth_bytes, &lookup, ""),
        SaslState::Start | SaslState::Done => {
            return Outcome::Close("SaslAuthenticate without a SaslHandshake".into());
        }
    };
    match step {
        Step::Continue(bytes) => respond(
            context,
            ApiKey::SaslAuthenticate,
            &SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(bytes)),
        ),
        Step::Authenticated { user, last } => {
            tracing::debug!(peer = %context.peer, %user, "SASL authentication succeeded");
            context.session.authenticated_as(&user);
            respond(
                context,
                ApiKey::SaslAuthenticate,
                &SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(last)),
            )
        }
        Step::Failed(reason) => {
            *context.session.sasl.borrow_mut() = SaslState::Done;
            tracing::warn!(peer = %context.peer, "SASL authentication failed: {reason}");
            let delay_ms = context
                .shard
                .config
                .connection_failed_authentication_delay_ms;
            glommio::timer::sleep(Duration::from_millis(delay_ms)).await;
            // The client learns only that it failed, not why (no user enumeration).
            let response = SaslAuthenticateResponse::default()
                .with_error_code(ResponseError::SaslAuthenticationFailed.code())
                .with_error_message(Some(super::str_bytes(
                    "Authentication failed: invalid credentials",
                )));
            match respond(context, ApiKey::SaslAuthenticate, &response) {
                Outcome::Respond(frame) => {
                    Outcome::RespondAndClose(frame, "SASL authentication failed".into())
                }
                other => other,
            }
        }
    }
}
