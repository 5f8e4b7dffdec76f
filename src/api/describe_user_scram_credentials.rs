//! DescribeUserScramCredentials (key 50): the mechanisms and iterations each user has, never
//! the salt or keys. Unknown users get RESOURCE_NOT_FOUND, as Kafka answers.

use super::{str_bytes, RequestContext};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use std::collections::BTreeMap;

pub async fn handle(
    context: &RequestContext,
    request: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    if !context.authorize_cluster(crate::security::acl::Operation::Describe) {
        return DescribeUserScramCredentialsResponse::default()
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
            .with_error_message(Some(str_bytes("Cluster authorization failed.")));
    }
    let image = context.shard.metadata();
    let mut by_user: BTreeMap<&str, Vec<CredentialInfo>> = BTreeMap::new();
    for ((user, mechanism), credential) in &image.scram_credentials {
        by_user.entry(user).or_default().push(
            CredentialInfo::default()
                .with_mechanism(mechanism.kafka_type())
                .with_iterations(credential.iterations),
        );
    }
    let result = |user: &str| match by_user.get(user) {
        Some(infos) => DescribeUserScramCredentialsResult::default()
            .with_user(str_bytes(user))
            .with_credential_infos(infos.clone()),
        None => DescribeUserScramCredentialsResult::default()
            .with_user(str_bytes(user))
            .with_error_code(ResponseError::ResourceNotFound.code())
            .with_error_message(Some(str_bytes(&format!(
                "Attempt to describe a user credential that does not exist: {user}"
            )))),
    };
    let results = match request.users {
        Some(users) if !users.is_empty() => {
            let mut seen = std::collections::HashSet::new();
            let mut out = Vec::new();
            for user in &users {
                let name = user.name.as_str();
                if !seen.insert(name) {
                    out.push(
                        DescribeUserScramCredentialsResult::default()
                            .with_user(str_bytes(name))
                            .with_error_code(ResponseError::DuplicateResource.code())
                            .with_error_message(Some(str_bytes(&format!(
                                "Cannot describe SCRAM credentials for the same user twice in a single request: {name}"
                            )))),
                    );
                    continue;
                }
                out.push(result(name));
            }
            out
        }
        _ => by_user.keys().map(|user| result(user)).collect(),
    };
    DescribeUserScramCredentialsResponse::default().with_results(results)
}
