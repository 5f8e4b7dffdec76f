//! AlterUserScramCredentials (key 51): the client sends salted passwords (never the password);
//! the broker keeps the derived stored and server keys, written through the controller to the
//! replicated metadata log.

use super::{str_bytes, RequestContext};
use crate::cluster::rpc::{AdminCommand, AdminReply, ScramChange};
use crate::security::scram::{Mechanism, ScramCredential, MAX_ITERATIONS, MIN_ITERATIONS};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
};

/// Longest username accepted.
const MAX_USER_BYTES: usize = 256;

fn refused(user: &str, error: ResponseError, message: String) -> AlterUserScramCredentialsResult {
    AlterUserScramCredentialsResult::default()
        .with_user(str_bytes(user))
        .with_error_code(error.code())
        .with_error_message(Some(str_bytes(&message)))
}

pub async fn handle(
    context: &RequestContext,
    request: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    if !context.authorize_cluster(crate::security::acl::Operation::Alter) {
        let users = request.deletions.iter().map(|d| d.name.as_str());
        let users = users.chain(request.upsertions.iter().map(|u| u.name.as_str()));
        return AlterUserScramCredentialsResponse::default().with_results(
            users
                .map(|user| {
                    refused(
                        user,
                        ResponseError::ClusterAuthorizationFailed,
                        "Cluster authorization failed.".into(),
                    )
                })
                .collect(),
        );
    }
    // Each change is checked alone; valid ones go to the controller in one command.
    let mut results: Vec<Option<AlterUserScramCredentialsResult>> = Vec::new();
    let mut changes = Vec::new();
    let mut users = Vec::new();
    let check = |user: &str, mechanism: i8| -> Result<Mechanism, AlterUserScramCredentialsResult> {
        if user.is_empty() || user.len() > MAX_USER_BYTES {
            return Err(refused(
                user,
                ResponseError::UnacceptableCredential,
                format!("Username must be 1 to {MAX_USER_BYTES} bytes"),
            ));
        }
        Mechanism::from_kafka_type(mechanism).ok_or_else(|| {
            refused(
                user,
                ResponseError::UnsupportedSaslMechanism,
                format!("Unknown SCRAM mechanism {mechanism}"),
            )
        })
    };
    for deletion in &request.deletions {
        let user = deletion.name.as_str();
        match check(user, deletion.mechanism) {
            Ok(mechanism) => {
                changes.push(ScramChange {
                    user: user.to_string(),
                    mechanism,
                    credential: None,
                });
                users.push(user.to_string());
                results.push(None);
            }
            Err(result) => results.push(Some(result)),
        }
    }
    for upsertion in &request.upsertions {
        let user = upsertion.name.as_str();
        let mechanism = match check(user, upsertion.mechanism) {
            Ok(mechanism) => mechanism,
            Err(result) => {
                results.push(Some(result));
                continue;
            }
        };
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&upsertion.iterations) {
            results.push(Some(refused(
                user,
                ResponseError::UnacceptableCredential,
                format!("Iterations must be in {MIN_ITERATIONS}..={MAX_ITERATIONS}"),
            )));
            continue;
        }
        if upsertion.salt.is_empty() || upsertion.salted_password.is_empty() {
            results.push(Some(refused(
                user,
                ResponseError::UnacceptableCredential,
                "Salt and salted password must not be empty".into(),
            )));
            continue;
        }
        let credential = ScramCredential::from_salted_password(
            mechanism,
            &upsertion.salt,
            upsertion.iterations,
            &upsertion.salted_password,
        );
        changes.push(ScramChange {
            user: user.to_string(),
            mechanism,
            credential: Some(credential),
        });
        users.push(user.to_string());
        results.push(None);
    }
    let outcome = if changes.is_empty() {
        Ok(Vec::new())
    } else {
        context
            .shard
            .invoke_on(0, move |controller_shard| async move {
                crate::cluster::client::admin(
                    &controller_shard,
                    AdminCommand::AlterScramCredentials { changes },
                )
                .await
            })
            .await
            .map_err(|error| error.to_string())
            .and_then(|reply| match reply {
                Ok(AdminReply::Changes(results)) => Ok(results),
                Ok(_) => Err("unexpected controller reply".to_string()),
                Err(error) => Err(error.message),
            })
    };
    // On a controller failure every pending change gets its message.
    let (mut applied, failure) = match outcome {
        Ok(applied) => (applied.into_iter(), None),
        Err(message) => (Vec::new().into_iter(), Some(message)),
    };
    let mut users = users.into_iter();
    let results = results
        .into_iter()
        .map(|result| {
            result.unwrap_or_else(|| {
                let user = users.next().expect("one user per change");
                match applied.next() {
                    Some(Ok(())) => {
                        AlterUserScramCredentialsResult::default().with_user(str_bytes(&user))
                    }
                    Some(Err(error)) => refused(
                        &user,
                        ResponseError::try_from_code(error.code)
                            .unwrap_or(ResponseError::UnknownServerError),
                        error.message,
                    ),
                    None => refused(
                        &user,
                        ResponseError::RequestTimedOut,
                        failure
                            .clone()
                            .unwrap_or_else(|| "the controller did not apply the change".into()),
                    ),
                }
            })
        })
        .collect();
    AlterUserScramCredentialsResponse::default().with_results(results)
}
