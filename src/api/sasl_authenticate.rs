//! SaslAuthenticate (key 36): PLAIN in one round, SCRAM in two, checked against the SCRAM
//! credentials of the metadata image. A failure is answered with SASL_AUTHENTICATION_FAILED after
//! `connection_failed_authentication_delay_ms`, logged with the peer, and closes the connection.
//! After a SaslHandshake v0 the same exchange runs on raw frames ([`handle_raw_token`]).

use super::{respond, Outcome, RequestContext};
use crate::config::SaslMechanism;
use crate::security::scram::{self, Mechanism, ScramServer, Step};
use crate::security::session::SaslState;
use crate::security::session::Session;
use crate::shard::Shard;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse};
use std::net::SocketAddr;
use std::time::Duration;

/// Where one step of the exchange leaves the connection.
enum Exchange {
    /// Send these bytes to the client (a challenge, or the last server message), with the
    /// session's lifetime once authenticated (0: no expiry, or not yet authenticated).
    Reply {
        bytes: Vec<u8>,
        session_lifetime_ms: i64,
    },
    /// Wrong credentials or a malformed message: logged and delayed already; close.
    Failed,
    /// A token before any SaslHandshake.
    NoHandshake,
}

/// Runs one step of the connection's SASL exchange on `auth_bytes`.
async fn exchange(
    shard: &Shard,
    session: &Session,
    peer: SocketAddr,
    auth_bytes: &[u8],
) -> Exchange {
    let image = shard.metadata();
    let lookup = |user: &str, mechanism: Mechanism| {
        image
            .scram_credentials
            .get(&(user.to_string(), mechanism))
            .cloned()
    };
    let state = std::mem::take(&mut *session.sasl.borrow_mut());
    let step = match state {
        SaslState::Handshaken(SaslMechanism::Plain) => match scram::parse_plain(auth_bytes) {
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
        },
        SaslState::Handshaken(SaslMechanism::Scram(mechanism)) => {
            let mut server = ScramServer::new(mechanism);
            let step = server.step(auth_bytes, &lookup, &scram::server_nonce());
            *session.sasl.borrow_mut() = SaslState::Scram(server);
            step
        }
        SaslState::Scram(mut server) => server.step(auth_bytes, &lookup, ""),
        SaslState::Start | SaslState::Done => return Exchange::NoHandshake,
    };
    let failure = match step {
        Step::Continue(bytes) => {
            return Exchange::Reply {
                bytes,
                session_lifetime_ms: 0,
            }
        }
        Step::Authenticated { user, last } => {
            let reauthentication = session.is_authenticated();
            let lifetime_ms = shard.config.connections_max_reauth_ms;
            let lifetime = (lifetime_ms > 0).then(|| Duration::from_millis(lifetime_ms));
            match session.authenticated_as(&user, lifetime) {
                Ok(()) => {
                    tracing::debug!(%peer, %user, reauthentication, "SASL authentication succeeded");
                    if reauthentication {
                        crate::metrics::sasl_reauthenticated();
                    }
                    return Exchange::Reply {
                        bytes: last,
                        session_lifetime_ms: i64::try_from(lifetime_ms).unwrap_or(i64::MAX),
                    };
                }
                Err(reason) => reason,
            }
        }
        Step::Failed(reason) => reason,
    };
    *session.sasl.borrow_mut() = SaslState::Done;
    tracing::warn!(%peer, "SASL authentication failed: {failure}");
    let delay_ms = shard.config.connection_failed_authentication_delay_ms;
    glommio::timer::sleep(Duration::from_millis(delay_ms)).await;
    Exchange::Failed
}

pub async fn handle(context: &RequestContext, request: SaslAuthenticateRequest) -> Outcome {
    let exchanged = exchange(
        &context.shard,
        &context.session,
        context.peer,
        &request.auth_bytes,
    )
    .await;
    match exchanged {
        Exchange::Reply {
            bytes,
            session_lifetime_ms,
        } => respond(
            context,
            ApiKey::SaslAuthenticate,
            &SaslAuthenticateResponse::default()
                .with_auth_bytes(Bytes::from(bytes))
                .with_session_lifetime_ms(session_lifetime_ms),
        ),
        Exchange::Failed => {
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
        Exchange::NoHandshake => Outcome::Close("SaslAuthenticate without a SaslHandshake".into()),
    }
}

/// A raw SASL token after a SaslHandshake v0: answered with the raw reply, size-prefixed; a
/// failure closes the connection without an answer, as Kafka does in this protocol.
pub async fn handle_raw_token(
    shard: &Shard,
    session: &Session,
    peer: SocketAddr,
    token: &[u8],
) -> Outcome {
    match exchange(shard, session, peer, token).await {
        Exchange::Reply { bytes, .. } => {
            let mut frame = BytesMut::with_capacity(4 + bytes.len());
            frame.put_u32(bytes.len() as u32);
            frame.put_slice(&bytes);
            Outcome::Respond(super::Response::from_frame(frame))
        }
        Exchange::Failed => Outcome::Close("SASL authentication failed".into()),
        Exchange::NoHandshake => Outcome::Close("a SASL token without a SaslHandshake".into()),
    }
}
