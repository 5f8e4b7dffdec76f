//! `riptide user create|delete|list`: SCRAM users over DescribeUserScramCredentials and
//! AlterUserScramCredentials, sent to the controller. The password is salted here (PBKDF2, a
//! fresh random salt); only the salted password crosses the network, as with Kafka's tools.

use super::output::{Output, Table};
use crate::client::{check_code, str_bytes, ClientError, Cluster};
use crate::security::scram::{self, Mechanism, MAX_ITERATIONS, MIN_ITERATIONS};
use bytes::Bytes;
use clap::Subcommand;
use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, DescribeUserScramCredentialsRequest,
};
use serde_json::json;

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create a user, or set its password (one credential per mechanism).
    Create {
        user: String,
        #[arg(long)]
        password: String,
        /// SCRAM-SHA-256, SCRAM-SHA-512, or both (comma separated).
        #[arg(long, default_value = "SCRAM-SHA-256,SCRAM-SHA-512")]
        mechanisms: String,
        #[arg(long, default_value_t = MIN_ITERATIONS)]
        iterations: i32,
    },
    /// Delete a user's credentials.
    Delete {
        user: String,
        #[arg(long, default_value = "SCRAM-SHA-256,SCRAM-SHA-512")]
        mechanisms: String,
    },
    /// Users and their mechanisms.
    List,
}

fn mechanisms(list: &str) -> Result<Vec<Mechanism>, ClientError> {
    list.split(',')
        .map(str::trim)
        .map(|name| {
            Mechanism::from_name(name)
                .ok_or_else(|| ClientError::Protocol(format!("unknown SCRAM mechanism {name}")))
        })
        .collect()
}

pub fn run(cluster: &mut Cluster, command: UserCommand) -> Result<Option<Output>, ClientError> {
    let mut request = AlterUserScramCredentialsRequest::default();
    let (user, verb) = match command {
        UserCommand::List => return list(cluster).map(Some),
        UserCommand::Create {
            user,
            password,
            mechanisms: names,
            iterations,
        } => {
            if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
                return Err(ClientError::Protocol(format!(
                    "--iterations must be in {MIN_ITERATIONS}..={MAX_ITERATIONS}"
                )));
            }
            for mechanism in mechanisms(&names)? {
                let salt = scram::new_salt();
                let salted = mechanism.salted_password(password.as_bytes(), &salt, iterations);
                request.upsertions.push(
                    ScramCredentialUpsertion::default()
                        .with_name(str_bytes(&user))
                        .with_mechanism(mechanism.kafka_type())
                        .with_iterations(iterations)
                        .with_salt(Bytes::from(salt))
                        .with_salted_password(Bytes::from(salted)),
                );
            }
            (user, "created")
        }
        UserCommand::Delete {
            user,
            mechanisms: names,
        } => {
            for mechanism in mechanisms(&names)? {
                request.deletions.push(
                    ScramCredentialDeletion::default()
                        .with_name(str_bytes(&user))
                        .with_mechanism(mechanism.kafka_type()),
                );
            }
            (user, "deleted")
        }
    };
    let response = cluster.controller()?.send(&request)?;
    for result in &response.results {
        check_code(result.error_code, || {
            format!(
                "user {}: {}",
                result.user.as_str(),
                result.error_message.as_deref().unwrap_or("")
            )
        })?;
    }
    let mut table = Table::new(vec!["USER", "STATUS"]);
    table.row(vec![user.clone(), verb.to_string()]);
    Ok(Some(Output::new(
        json!({"user": user, "status": verb}),
        vec![table],
    )))
}

fn list(cluster: &mut Cluster) -> Result<Output, ClientError> {
    let response = cluster
        .controller()?
        .send(&DescribeUserScramCredentialsRequest::default().with_users(None))?;
    check_code(response.error_code, || {
        "DescribeUserScramCredentials".into()
    })?;
    let mut table = Table::new(vec!["USER", "MECHANISMS"]);
    let mut users = Vec::new();
    for result in &response.results {
        let mechanisms: Vec<String> = result
            .credential_infos
            .iter()
            .map(|info| {
                let name = Mechanism::from_kafka_type(info.mechanism).map_or("?", |m| m.name());
                format!("{name} ({} iterations)", info.iterations)
            })
            .collect();
        table.row(vec![result.user.to_string(), mechanisms.join(", ")]);
        users.push(json!({"user": result.user.to_string(), "mechanisms": mechanisms}));
    }
    Ok(Output::new(json!({ "users": users }), vec![table]))
}
