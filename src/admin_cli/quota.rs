//! `riptide quota alter|describe`: client quotas over AlterClientQuotas and
//! DescribeClientQuotas, with the entity flags of Kafka's `kafka-configs.sh` (`--user`,
//! `--user-default`, `--client-id`, `--client-default`). The admin client speaks PLAINTEXT
//! only, so the broker sees it as `User:ANONYMOUS`: that principal needs ALTER_CONFIGS
//! (alter) or DESCRIBE_CONFIGS (describe) on the cluster, or must be a super user, while the
//! authorizer is on.

use super::output::{Output, Table};
use crate::client::{check_code, str_bytes, ClientError, Cluster};
use crate::security::quota::{CLIENT_ID, USER};
use clap::{Args, Subcommand};
use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
use kafka_protocol::messages::{AlterClientQuotasRequest, DescribeClientQuotasRequest};
use serde_json::json;

#[derive(Subcommand, Debug)]
pub enum QuotaCommand {
    /// Set or remove quotas of one entity (a user, a client-id, or both).
    Alter(AlterArgs),
    /// Entities and their quotas (all of them without entity flags).
    Describe(EntityArgs),
}

/// The entity of a command: its user and client-id parts.
#[derive(Args, Debug, Default)]
pub struct EntityArgs {
    /// User (the principal's name, without `User:`).
    #[arg(long, conflicts_with = "user_default")]
    pub user: Option<String>,
    /// The default user entity (`<default>`).
    #[arg(long)]
    pub user_default: bool,
    /// Client id.
    #[arg(long, conflicts_with = "client_default")]
    pub client_id: Option<String>,
    /// The default client-id entity (`<default>`).
    #[arg(long)]
    pub client_default: bool,
    /// describe: only entities with exactly the parts named (Kafka's `strict`).
    #[arg(long)]
    pub strict: bool,
}

#[derive(Args, Debug)]
pub struct AlterArgs {
    #[command(flatten)]
    pub entity: EntityArgs,
    /// Quotas to set, KEY=VALUE[,KEY=VALUE…]: producer_byte_rate, consumer_byte_rate,
    /// request_percentage, controller_mutation_rate.
    #[arg(long, value_delimiter = ',')]
    pub add_config: Vec<String>,
    /// Quota keys to remove (comma separated).
    #[arg(long, value_delimiter = ',')]
    pub delete_config: Vec<String>,
    /// Check the change without making it.
    #[arg(long)]
    pub validate_only: bool,
}

fn usage(message: impl Into<String>) -> ClientError {
    ClientError::Protocol(message.into())
}

impl EntityArgs {
    /// (type, name) parts named by the flags; a `None` name is the default entity.
    fn parts(&self) -> Vec<(&'static str, Option<String>)> {
        let mut parts = Vec::new();
        if self.user.is_some() || self.user_default {
            parts.push((USER, self.user.clone()));
        }
        if self.client_id.is_some() || self.client_default {
            parts.push((CLIENT_ID, self.client_id.clone()));
        }
        parts
    }
}

pub fn run(cluster: &mut Cluster, command: QuotaCommand) -> Result<Option<Output>, ClientError> {
    match command {
        QuotaCommand::Alter(args) => alter(cluster, &args),
        QuotaCommand::Describe(args) => describe(cluster, &args),
    }
    .map(Some)
}

fn entity_label(parts: &[(String, Option<String>)]) -> String {
    parts
        .iter()
        .map(|(entity_type, name)| {
            format!("{entity_type}={}", name.as_deref().unwrap_or("<default>"))
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn alter(cluster: &mut Cluster, args: &AlterArgs) -> Result<Output, ClientError> {
    let parts = args.entity.parts();
    if parts.is_empty() {
        return Err(usage(
            "name an entity: --user, --user-default, --client-id and/or --client-default",
        ));
    }
    if args.add_config.is_empty() && args.delete_config.is_empty() {
        return Err(usage("give --add-config KEY=VALUE or --delete-config KEY"));
    }
    let mut ops = Vec::new();
    for pair in &args.add_config {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| usage(format!("--add-config {pair:?} is not KEY=VALUE")))?;
        let value: f64 = value
            .trim()
            .parse()
            .map_err(|_| usage(format!("--add-config {pair:?}: {value:?} is not a number")))?;
        ops.push(
            OpData::default()
                .with_key(str_bytes(key.trim()))
                .with_value(value),
        );
    }
    for key in &args.delete_config {
        ops.push(
            OpData::default()
                .with_key(str_bytes(key.trim()))
                .with_remove(true),
        );
    }
    let entity: Vec<EntityData> = parts
        .iter()
        .map(|(entity_type, name)| {
            EntityData::default()
                .with_entity_type(str_bytes(entity_type))
                .with_entity_name(name.as_deref().map(str_bytes))
        })
        .collect();
    let request = AlterClientQuotasRequest::default()
        .with_entries(vec![EntryData::default().with_entity(entity).with_ops(ops)])
        .with_validate_only(args.validate_only);
    let response = cluster.controller()?.send(&request)?;
    for entry in &response.entries {
        check_code(entry.error_code, || {
            format!(
                "AlterClientQuotas: {}",
                entry.error_message.as_deref().unwrap_or("")
            )
        })?;
    }
    let label = entity_label(
        &parts
            .iter()
            .map(|(t, n)| (t.to_string(), n.clone()))
            .collect::<Vec<_>>(),
    );
    let status = if args.validate_only {
        "valid"
    } else {
        "altered"
    };
    let mut table = Table::new(vec!["ENTITY", "STATUS"]);
    table.row(vec![label.clone(), status.to_string()]);
    Ok(Output::new(
        json!({"entity": label, "status": status}),
        vec![table],
    ))
}

fn describe(cluster: &mut Cluster, args: &EntityArgs) -> Result<Output, ClientError> {
    const EXACT: i8 = 0;
    const DEFAULT: i8 = 1;
    let components = args
        .parts()
        .into_iter()
        .map(|(entity_type, name)| {
            ComponentData::default()
                .with_entity_type(str_bytes(entity_type))
                .with_match_type(if name.is_some() { EXACT } else { DEFAULT })
                .with_match(name.as_deref().map(str_bytes))
        })
        .collect();
    let request = DescribeClientQuotasRequest::default()
        .with_components(components)
        .with_strict(args.strict);
    let response = cluster.any().send(&request)?;
    check_code(response.error_code, || {
        format!(
            "DescribeClientQuotas: {}",
            response.error_message.as_deref().unwrap_or("")
        )
    })?;
    let mut table = Table::new(vec!["ENTITY", "QUOTAS"]);
    let mut list = Vec::new();
    for entry in response.entries.iter().flatten() {
        let parts: Vec<(String, Option<String>)> = entry
            .entity
            .iter()
            .map(|part| {
                (
                    part.entity_type.to_string(),
                    part.entity_name.as_ref().map(|n| n.to_string()),
                )
            })
            .collect();
        let values: serde_json::Map<String, serde_json::Value> = entry
            .values
            .iter()
            .map(|value| (value.key.to_string(), json!(value.value)))
            .collect();
        table.row(vec![
            entity_label(&parts),
            entry
                .values
                .iter()
                .map(|value| format!("{}={}", value.key.as_str(), value.value))
                .collect::<Vec<_>>()
                .join(","),
        ]);
        let entity: serde_json::Map<String, serde_json::Value> = parts
            .into_iter()
            .map(|(entity_type, name)| (entity_type, json!(name)))
            .collect();
        list.push(json!({"entity": entity, "values": values}));
    }
    Ok(Output::new(json!({ "quotas": list }), vec![table]))
}
