//! Authorization: Kafka's ACL model. A binding allows or denies one principal, from one host
//! (or any), one operation on a resource pattern (a literal name, the `*` wildcard, or a name
//! prefix). The bindings live in the replicated metadata image ([`AclStore`]); every request
//! checks against the image current when it runs, so a grant or a revocation applies to open
//! connections at once.
//!
//! Rules, as Kafka's authorizer applies them: super users may do anything; a DENY that matches
//! the principal, host and operation (or ALL) wins over any ALLOW; an ALLOW of READ, WRITE,
//! DELETE or ALTER implies DESCRIBE, and an ALLOW of ALTER_CONFIGS implies DESCRIBE_CONFIGS;
//! when no binding at all names the resource, `allow_everyone_if_no_acl_found` decides.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// The only name of the CLUSTER resource.
pub const CLUSTER_NAME: &str = "kafka-cluster";
/// Literal resource name that matches every resource of its type.
pub const WILDCARD_RESOURCE: &str = "*";
/// Principal that matches every user.
pub const WILDCARD_PRINCIPAL: &str = "User:*";
/// Host that matches every peer address.
pub const WILDCARD_HOST: &str = "*";
/// Longest resource name a binding may carry: topic names stop at 249 bytes; group and
/// transactional ids have no Kafka limit, but a bound keeps the image (and its snapshot, sent
/// whole to brokers that fall behind) and the prefix walk of a check small.
pub const MAX_RESOURCE_NAME_BYTES: usize = 255;
/// Longest principal a binding may carry.
pub const MAX_PRINCIPAL_BYTES: usize = 255;
/// Longest host a binding may carry (an IPv6 literal with a zone fits).
pub const MAX_HOST_BYTES: usize = 64;

/// Kafka's wire codes of one of the ACL enumerations.
macro_rules! kafka_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $code:literal, $label:literal;)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($variant,)*
        }

        impl $name {
            pub const ALL_VALUES: &'static [$name] = &[$($name::$variant,)*];

            pub fn code(self) -> i8 {
                match self {
                    $($name::$variant => $code,)*
                }
            }

            /// `None` for UNKNOWN (0) and codes Kafka does not define.
            pub fn from_code(code: i8) -> Option<$name> {
                match code {
                    $($code => Some($name::$variant),)*
                    _ => None,
                }
            }

            /// Kafka's upper-case name.
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)*
                }
            }

            /// From Kafka's name, case and `-`/`_` insensitive (`describe-configs`).
            pub fn from_name(name: &str) -> Option<$name> {
                let wanted = name.trim().replace('-', "_").to_ascii_uppercase();
                Self::ALL_VALUES.iter().copied().find(|value| value.name() == wanted)
            }
        }
    };
}

kafka_enum!(
    /// What a binding or filter applies to. ANY appears in filters only.
    ResourceType {
        Any = 1, "ANY";
        Topic = 2, "TOPIC";
        Group = 3, "GROUP";
        Cluster = 4, "CLUSTER";
        TransactionalId = 5, "TRANSACTIONAL_ID";
    }
);

kafka_enum!(
    /// How a binding's resource name matches. ANY and MATCH appear in filters only.
    PatternType {
        Any = 1, "ANY";
        Match = 2, "MATCH";
        Literal = 3, "LITERAL";
        Prefixed = 4, "PREFIXED";
    }
);

kafka_enum!(
    /// An operation on a resource. ANY appears in filters only; ALL in a binding covers every
    /// operation.
    Operation {
        Any = 1, "ANY";
        All = 2, "ALL";
        Read = 3, "READ";
        Write = 4, "WRITE";
        Create = 5, "CREATE";
        Delete = 6, "DELETE";
        Alter = 7, "ALTER";
        Describe = 8, "DESCRIBE";
        ClusterAction = 9, "CLUSTER_ACTION";
        DescribeConfigs = 10, "DESCRIBE_CONFIGS";
        AlterConfigs = 11, "ALTER_CONFIGS";
        IdempotentWrite = 12, "IDEMPOTENT_WRITE";
    }
);

kafka_enum!(
    /// ALLOW or DENY. ANY appears in filters only.
    Permission {
        Any = 1, "ANY";
        Deny = 2, "DENY";
        Allow = 3, "ALLOW";
    }
);

impl ResourceType {
    /// Slot of the store's per-type index; `None` for ANY.
    fn index(self) -> Option<usize> {
        match self {
            ResourceType::Any => None,
            ResourceType::Topic => Some(0),
            ResourceType::Group => Some(1),
            ResourceType::Cluster => Some(2),
            ResourceType::TransactionalId => Some(3),
        }
    }

    const STORED: [ResourceType; 4] = [
        ResourceType::Topic,
        ResourceType::Group,
        ResourceType::Cluster,
        ResourceType::TransactionalId,
    ];

    /// The operations Kafka defines for this resource type (its authorized-operations bits).
    pub fn operations(self) -> &'static [Operation] {
        use Operation::*;
        match self {
            ResourceType::Topic => &[
                Read,
                Write,
                Create,
                Delete,
                Alter,
                Describe,
                DescribeConfigs,
                AlterConfigs,
            ],
            ResourceType::Group => &[Read, Describe, Delete],
            ResourceType::Cluster => &[
                Create,
                ClusterAction,
                DescribeConfigs,
                AlterConfigs,
                IdempotentWrite,
                Alter,
                Describe,
            ],
            ResourceType::TransactionalId => &[Describe, Write],
            ResourceType::Any => &[],
        }
    }
}

impl Operation {
    /// Whether an ALLOW of `self` allows `wanted`: ALL allows everything, DESCRIBE comes with
    /// READ, WRITE, DELETE and ALTER, DESCRIBE_CONFIGS with ALTER_CONFIGS.
    pub fn allows(self, wanted: Operation) -> bool {
        use Operation::*;
        self == All
            || self == wanted
            || (wanted == Describe && matches!(self, Read | Write | Delete | Alter))
            || (wanted == DescribeConfigs && self == AlterConfigs)
    }

    /// Whether a DENY of `self` denies `wanted`: only the operation itself, or ALL (a denied
    /// READ does not deny DESCRIBE).
    pub fn denies(self, wanted: Operation) -> bool {
        self == Operation::All || self == wanted
    }
}

/// One ACL: `permission` for `principal` from `host` to do `operation` on the resources the
/// pattern (`resource_type`, `resource_name`, `pattern_type`) matches.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclBinding {
    pub resource_type: ResourceType,
    pub resource_name: String,
    pub pattern_type: PatternType,
    pub principal: String,
    pub host: String,
    pub operation: Operation,
    pub permission: Permission,
}

/// `Type:name` with both parts non-empty (Kafka's KafkaPrincipal string form).
fn valid_principal(principal: &str) -> bool {
    principal
        .split_once(':')
        .is_some_and(|(kind, name)| !kind.is_empty() && !name.is_empty())
}

impl AclBinding {
    /// Kafka's checks of a new binding (INVALID_REQUEST when they fail): concrete enumeration
    /// values, a LITERAL or PREFIXED pattern, `kafka-cluster` as the only cluster name, a
    /// `Type:name` principal, `*` or an IP address as host, and bounded lengths.
    pub fn validate(&self) -> Result<(), String> {
        if self.resource_type == ResourceType::Any {
            return Err("resource type ANY is only valid in a filter".into());
        }
        if !matches!(
            self.pattern_type,
            PatternType::Literal | PatternType::Prefixed
        ) {
            return Err(format!(
                "pattern type {} is only valid in a filter; a binding is LITERAL or PREFIXED",
                self.pattern_type.name()
            ));
        }
        if self.operation == Operation::Any {
            return Err("operation ANY is only valid in a filter".into());
        }
        if self.permission == Permission::Any {
            return Err("permission type ANY is only valid in a filter".into());
        }
        if self.resource_name.is_empty() {
            return Err("resource name must not be empty".into());
        }
        if self.resource_name.len() > MAX_RESOURCE_NAME_BYTES {
            return Err(format!(
                "resource name longer than {MAX_RESOURCE_NAME_BYTES} bytes"
            ));
        }
        if self.resource_type == ResourceType::Cluster
            && (self.resource_name != CLUSTER_NAME || self.pattern_type != PatternType::Literal)
        {
            return Err(format!(
                "the only valid name for the CLUSTER resource is the literal {CLUSTER_NAME}"
            ));
        }
        if self.principal.len() > MAX_PRINCIPAL_BYTES || !valid_principal(&self.principal) {
            return Err(format!(
                "principal {:?} is not Type:name (at most {MAX_PRINCIPAL_BYTES} bytes)",
                self.principal
            ));
        }
        if self.host != WILDCARD_HOST
            && (self.host.len() > MAX_HOST_BYTES || self.host.parse::<IpAddr>().is_err())
        {
            return Err(format!(
                "host {:?} is neither * nor an IP address",
                self.host
            ));
        }
        Ok(())
    }
}

/// A pattern of bindings (DescribeAcls, DeleteAcls): `None` strings and ANY values match
/// everything; pattern type MATCH matches the bindings that would apply to the named resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclFilter {
    pub resource_type: ResourceType,
    pub resource_name: Option<String>,
    pub pattern_type: PatternType,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: Operation,
    pub permission: Permission,
}

impl AclFilter {
    /// Matches every binding.
    pub fn any() -> AclFilter {
        AclFilter {
            resource_type: ResourceType::Any,
            resource_name: None,
            pattern_type: PatternType::Any,
            principal: None,
            host: None,
            operation: Operation::Any,
            permission: Permission::Any,
        }
    }

    /// Bounded lengths (a filter is compared with every binding).
    pub fn validate(&self) -> Result<(), String> {
        let too_long = |value: &Option<String>, limit: usize| {
            value.as_ref().is_some_and(|value| value.len() > limit)
        };
        if too_long(&self.resource_name, MAX_RESOURCE_NAME_BYTES)
            || too_long(&self.principal, MAX_PRINCIPAL_BYTES)
            || too_long(&self.host, MAX_HOST_BYTES)
        {
            return Err("filter string longer than a binding may be".into());
        }
        Ok(())
    }

    /// Kafka's AclBindingFilter.matches.
    pub fn matches(&self, binding: &AclBinding) -> bool {
        self.matches_pattern(binding)
            && self
                .principal
                .as_ref()
                .is_none_or(|principal| *principal == binding.principal)
            && self.host.as_ref().is_none_or(|host| *host == binding.host)
            && (self.operation == Operation::Any || self.operation == binding.operation)
            && (self.permission == Permission::Any || self.permission == binding.permission)
    }

    fn matches_pattern(&self, binding: &AclBinding) -> bool {
        if self.resource_type != ResourceType::Any && self.resource_type != binding.resource_type {
            return false;
        }
        let exact_pattern = self.pattern_type == binding.pattern_type;
        if !matches!(self.pattern_type, PatternType::Any | PatternType::Match) && !exact_pattern {
            return false;
        }
        let Some(name) = &self.resource_name else {
            return true;
        };
        if self.pattern_type == PatternType::Any || exact_pattern {
            return *name == binding.resource_name;
        }
        // MATCH: the bindings that apply to the resource `name`.
        match binding.pattern_type {
            PatternType::Literal => {
                *name == binding.resource_name || binding.resource_name == WILDCARD_RESOURCE
            }
            PatternType::Prefixed => name.starts_with(binding.resource_name.as_str()),
            PatternType::Any | PatternType::Match => false,
        }
    }
}

/// A binding without its resource pattern: what the store keeps per pattern.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct AclEntry {
    principal: String,
    host: String,
    operation: Operation,
    permission: Permission,
}

impl AclEntry {
    fn applies_to(&self, who: &Requester<'_>) -> bool {
        (self.principal == who.principal || self.principal == WILDCARD_PRINCIPAL)
            && (self.host == WILDCARD_HOST
                || self
                    .host
                    .parse::<IpAddr>()
                    .is_ok_and(|host| host.to_canonical() == who.host.to_canonical()))
    }
}

/// The bindings of one resource type, by pattern name.
#[derive(Debug, Clone, Default, PartialEq)]
struct TypeAcls {
    literal: BTreeMap<String, BTreeSet<AclEntry>>,
    prefixed: BTreeMap<String, BTreeSet<AclEntry>>,
}

impl TypeAcls {
    fn is_empty(&self) -> bool {
        self.literal.is_empty() && self.prefixed.is_empty()
    }

    /// The entries of every pattern that covers the resource `name`: its literal name, the
    /// literal wildcard, and every prefix of it that is a PREFIXED pattern (one map lookup per
    /// prefix length, only when PREFIXED patterns exist).
    fn covering<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a AclEntry> + 'a {
        let literal = self.literal.get(name).into_iter().flatten();
        let wildcard = (name != WILDCARD_RESOURCE)
            .then(|| self.literal.get(WILDCARD_RESOURCE))
            .flatten()
            .into_iter()
            .flatten();
        let prefixes = if self.prefixed.is_empty() {
            0
        } else {
            name.len()
        };
        let prefixed = (1..=prefixes)
            .filter(move |&end| name.is_char_boundary(end))
            .filter_map(move |end| self.prefixed.get(&name[..end]))
            .flatten();
        literal.chain(wildcard).chain(prefixed)
    }
}

/// Who asks: the connection's principal (`User:name`) and peer address.
#[derive(Debug, Clone, Copy)]
pub struct Requester<'a> {
    pub principal: &'a str,
    pub host: IpAddr,
}

/// The broker settings a check needs, borrowed from the config (nothing is allocated).
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    /// Kafka's `super.users` form: `User:admin;User:ops`.
    pub super_users: &'a str,
    pub allow_everyone_if_no_acl_found: bool,
}

impl<'a> Policy<'a> {
    pub fn from_config(config: &'a crate::config::BrokerConfig) -> Policy<'a> {
        Policy {
            super_users: &config.super_users,
            allow_everyone_if_no_acl_found: config.allow_everyone_if_no_acl_found,
        }
    }

    pub fn is_super_user(&self, principal: &str) -> bool {
        self.super_users
            .split(';')
            .map(str::trim)
            .any(|user| !user.is_empty() && user == principal)
    }
}

/// Every ACL binding of the cluster, indexed by resource type then pattern. Part of the
/// replicated metadata image; serialised as the list of its bindings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AclStore {
    by_type: [TypeAcls; 4],
    count: usize,
}

impl AclStore {
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn patterns(&self, binding: &AclBinding) -> Option<&BTreeMap<String, BTreeSet<AclEntry>>> {
        let acls = &self.by_type[binding.resource_type.index()?];
        match binding.pattern_type {
            PatternType::Literal => Some(&acls.literal),
            PatternType::Prefixed => Some(&acls.prefixed),
            PatternType::Any | PatternType::Match => None,
        }
    }

    fn patterns_mut(
        &mut self,
        binding: &AclBinding,
    ) -> Option<&mut BTreeMap<String, BTreeSet<AclEntry>>> {
        let acls = &mut self.by_type[binding.resource_type.index()?];
        match binding.pattern_type {
            PatternType::Literal => Some(&mut acls.literal),
            PatternType::Prefixed => Some(&mut acls.prefixed),
            PatternType::Any | PatternType::Match => None,
        }
    }

    fn entry_of(binding: &AclBinding) -> AclEntry {
        AclEntry {
            principal: binding.principal.clone(),
            host: binding.host.clone(),
            operation: binding.operation,
            permission: binding.permission,
        }
    }

    pub fn contains(&self, binding: &AclBinding) -> bool {
        self.patterns(binding)
            .and_then(|patterns| patterns.get(&binding.resource_name))
            .is_some_and(|entries| entries.contains(&Self::entry_of(binding)))
    }

    /// Adds a binding; false if it was there already (or is not a concrete binding).
    pub fn insert(&mut self, binding: &AclBinding) -> bool {
        let entry = Self::entry_of(binding);
        let Some(patterns) = self.patterns_mut(binding) else {
            return false;
        };
        let added = patterns
            .entry(binding.resource_name.clone())
            .or_default()
            .insert(entry);
        self.count += usize::from(added);
        added
    }

    /// Removes a binding; false if it was not there.
    pub fn remove(&mut self, binding: &AclBinding) -> bool {
        let entry = Self::entry_of(binding);
        let Some(patterns) = self.patterns_mut(binding) else {
            return false;
        };
        let Some(entries) = patterns.get_mut(&binding.resource_name) else {
            return false;
        };
        let removed = entries.remove(&entry);
        if entries.is_empty() {
            patterns.remove(&binding.resource_name);
        }
        self.count -= usize::from(removed);
        removed
    }

    /// Every binding, in a stable order (resource type, pattern type, name, entry).
    pub fn bindings(&self) -> impl Iterator<Item = AclBinding> + '_ {
        ResourceType::STORED
            .iter()
            .zip(&self.by_type)
            .flat_map(|(&resource_type, acls)| {
                let literal = acls
                    .literal
                    .iter()
                    .map(move |(name, entries)| (PatternType::Literal, name, entries));
                let prefixed = acls
                    .prefixed
                    .iter()
                    .map(move |(name, entries)| (PatternType::Prefixed, name, entries));
                literal
                    .chain(prefixed)
                    .flat_map(move |(pattern_type, name, entries)| {
                        entries.iter().map(move |entry| AclBinding {
                            resource_type,
                            resource_name: name.clone(),
                            pattern_type,
                            principal: entry.principal.clone(),
                            host: entry.host.clone(),
                            operation: entry.operation,
                            permission: entry.permission,
                        })
                    })
            })
    }

    /// The bindings `filter` matches.
    pub fn matching(&self, filter: &AclFilter) -> Vec<AclBinding> {
        self.bindings()
            .filter(|binding| filter.matches(binding))
            .collect()
    }

    /// Whether `who` may do `operation` on the resource `name` of `resource_type`.
    pub fn authorize(
        &self,
        policy: &Policy<'_>,
        who: &Requester<'_>,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        if policy.is_super_user(who.principal) {
            return true;
        }
        let Some(index) = resource_type.index() else {
            return false;
        };
        let mut any_acl = false;
        let mut allowed = false;
        for entry in self.by_type[index].covering(name) {
            any_acl = true;
            if !entry.applies_to(who) {
                continue;
            }
            match entry.permission {
                Permission::Deny if entry.operation.denies(operation) => return false,
                Permission::Allow if entry.operation.allows(operation) => allowed = true,
                _ => {}
            }
        }
        if !any_acl {
            return policy.allow_everyone_if_no_acl_found;
        }
        allowed
    }

    /// Whether `who` may do `operation` on at least one resource of `resource_type` (Kafka's
    /// authorizeByResourceType, used for idempotent producers without IDEMPOTENT_WRITE): some
    /// matching ALLOW whose pattern no matching DENY covers, and no DENY on the wildcard.
    /// Without any binding of the type, `allow_everyone_if_no_acl_found` decides.
    pub fn authorize_any(
        &self,
        policy: &Policy<'_>,
        who: &Requester<'_>,
        operation: Operation,
        resource_type: ResourceType,
    ) -> bool {
        if policy.is_super_user(who.principal) {
            return true;
        }
        let Some(index) = resource_type.index() else {
            return false;
        };
        let acls = &self.by_type[index];
        if acls.is_empty() {
            return policy.allow_everyone_if_no_acl_found;
        }
        let denied = |entries: &BTreeSet<AclEntry>| {
            entries.iter().any(|entry| {
                entry.permission == Permission::Deny
                    && entry.operation.denies(operation)
                    && entry.applies_to(who)
            })
        };
        let allows = |entries: &BTreeSet<AclEntry>| {
            entries.iter().any(|entry| {
                entry.permission == Permission::Allow
                    && entry.operation.allows(operation)
                    && entry.applies_to(who)
            })
        };
        if acls.literal.get(WILDCARD_RESOURCE).is_some_and(denied) {
            return false;
        }
        let denied_by_prefix = |name: &str| {
            acls.prefixed
                .iter()
                .any(|(prefix, entries)| name.starts_with(prefix.as_str()) && denied(entries))
        };
        let literal_allowed = acls.literal.iter().any(|(name, entries)| {
            allows(entries)
                && (name == WILDCARD_RESOURCE || (!denied(entries) && !denied_by_prefix(name)))
        });
        literal_allowed
            || acls
                .prefixed
                .iter()
                .any(|(prefix, entries)| allows(entries) && !denied_by_prefix(prefix))
    }

    /// Kafka's authorized-operations bit field of a resource: bit `code` set for each
    /// operation of the resource type that `who` may do.
    pub fn authorized_operations(
        &self,
        policy: &Policy<'_>,
        who: &Requester<'_>,
        resource_type: ResourceType,
        name: &str,
    ) -> i32 {
        resource_type
            .operations()
            .iter()
            .filter(|&&operation| self.authorize(policy, who, operation, resource_type, name))
            .fold(0, |bits, operation| bits | 1 << operation.code())
    }
}

/// The bit field of every operation of `resource_type` (the answer without an authorizer).
pub fn all_operations(resource_type: ResourceType) -> i32 {
    resource_type
        .operations()
        .iter()
        .fold(0, |bits, operation| bits | 1 << operation.code())
}

impl Serialize for AclStore {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.bindings())
    }
}

impl<'de> Deserialize<'de> for AclStore {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<AclStore, D::Error> {
        let bindings: Vec<AclBinding> = Vec::deserialize(deserializer)?;
        let mut store = AclStore::default();
        for binding in &bindings {
            store.insert(binding);
        }
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(
        resource_type: ResourceType,
        name: &str,
        pattern_type: PatternType,
        principal: &str,
        host: &str,
        operation: Operation,
        permission: Permission,
    ) -> AclBinding {
        AclBinding {
            resource_type,
            resource_name: name.into(),
            pattern_type,
            principal: principal.into(),
            host: host.into(),
            operation,
            permission,
        }
    }

    fn allow_topic(name: &str, pattern: PatternType, principal: &str, op: Operation) -> AclBinding {
        binding(
            ResourceType::Topic,
            name,
            pattern,
            principal,
            "*",
            op,
            Permission::Allow,
        )
    }

    const POLICY: Policy<'static> = Policy {
        super_users: "User:admin; User:ops",
        allow_everyone_if_no_acl_found: false,
    };

    fn alice() -> Requester<'static> {
        Requester {
            principal: "User:alice",
            host: "10.0.0.1".parse().unwrap(),
        }
    }

    fn may(store: &AclStore, who: &Requester<'_>, op: Operation, topic: &str) -> bool {
        store.authorize(&POLICY, who, op, ResourceType::Topic, topic)
    }

    fn store_of(bindings: &[AclBinding]) -> AclStore {
        let mut store = AclStore::default();
        for binding in bindings {
            assert!(binding.validate().is_ok(), "{binding:?}");
            store.insert(binding);
        }
        store
    }

    #[test]
    fn literal_binding_allows_only_its_operation_and_resource() {
        let store = store_of(&[allow_topic(
            "orders",
            PatternType::Literal,
            "User:alice",
            Operation::Write,
        )]);
        assert!(may(&store, &alice(), Operation::Write, "orders"));
        assert!(!may(&store, &alice(), Operation::Read, "orders"));
        assert!(!may(&store, &alice(), Operation::Write, "orders2"));
        let bob = Requester {
            principal: "User:bob",
            ..alice()
        };
        assert!(!may(&store, &bob, Operation::Write, "orders"));
        // Other resource types are indexed apart.
        assert!(!store.authorize(
            &POLICY,
            &alice(),
            Operation::Write,
            ResourceType::TransactionalId,
            "orders"
        ));
    }

    #[test]
    fn prefixed_and_wildcard_patterns() {
        let store = store_of(&[
            allow_topic(
                "logs-",
                PatternType::Prefixed,
                "User:alice",
                Operation::Read,
            ),
            allow_topic("*", PatternType::Literal, "User:*", Operation::Describe),
        ]);
        assert!(may(&store, &alice(), Operation::Read, "logs-app"));
        assert!(may(&store, &alice(), Operation::Read, "logs-"));
        assert!(!may(&store, &alice(), Operation::Read, "logs"));
        assert!(!may(&store, &alice(), Operation::Read, "app-logs-x"));
        // The literal wildcard covers every topic, User:* every principal.
        let carol = Requester {
            principal: "User:carol",
            ..alice()
        };
        assert!(may(&store, &carol, Operation::Describe, "anything"));
        assert!(!may(&store, &carol, Operation::Read, "logs-app"));
        // A prefixed "*" is a prefix like any other, not a wildcard.
        let star = store_of(&[allow_topic(
            "*",
            PatternType::Prefixed,
            "User:alice",
            Operation::Read,
        )]);
        assert!(!may(&star, &alice(), Operation::Read, "orders"));
        assert!(may(&star, &alice(), Operation::Read, "*x"));
    }

    #[test]
    fn multibyte_names_are_walked_on_char_boundaries() {
        let store = store_of(&[allow_topic(
            "é",
            PatternType::Prefixed,
            "User:alice",
            Operation::Read,
        )]);
        assert!(may(&store, &alice(), Operation::Read, "éclair"));
        assert!(!may(&store, &alice(), Operation::Read, "ü"));
    }

    #[test]
    fn host_must_match() {
        let mut only_there = allow_topic("t", PatternType::Literal, "User:alice", Operation::Read);
        only_there.host = "10.0.0.2".into();
        let store = store_of(&[only_there]);
        assert!(!may(&store, &alice(), Operation::Read, "t"));
        let there = Requester {
            host: "10.0.0.2".parse().unwrap(),
            ..alice()
        };
        assert!(may(&store, &there, Operation::Read, "t"));
        // An IPv4-mapped IPv6 peer is the same host.
        let mapped = Requester {
            host: "::ffff:10.0.0.2".parse().unwrap(),
            ..alice()
        };
        assert!(may(&store, &mapped, Operation::Read, "t"));
    }

    #[test]
    fn deny_wins_over_allow_and_all() {
        let mut deny = allow_topic("t", PatternType::Literal, "User:alice", Operation::Write);
        deny.permission = Permission::Deny;
        let store = store_of(&[
            allow_topic("*", PatternType::Literal, "User:alice", Operation::All),
            deny.clone(),
        ]);
        assert!(!may(&store, &alice(), Operation::Write, "t"));
        assert!(may(&store, &alice(), Operation::Read, "t"));
        assert!(may(&store, &alice(), Operation::Write, "u"));
        // A DENY of ALL denies every operation; a denied WRITE does not deny DESCRIBE.
        assert!(may(&store, &alice(), Operation::Describe, "t"));
        let mut deny_all = deny;
        deny_all.operation = Operation::All;
        deny_all.principal = "User:*".into();
        let store = store_of(&[
            allow_topic("t", PatternType::Literal, "User:alice", Operation::Read),
            deny_all,
        ]);
        assert!(!may(&store, &alice(), Operation::Read, "t"));
        assert!(!may(&store, &alice(), Operation::Describe, "t"));
    }

    #[test]
    fn implications_follow_kafka() {
        for (granted, implied) in [
            (Operation::Read, Operation::Describe),
            (Operation::Write, Operation::Describe),
            (Operation::Delete, Operation::Describe),
            (Operation::Alter, Operation::Describe),
            (Operation::AlterConfigs, Operation::DescribeConfigs),
        ] {
            let store = store_of(&[allow_topic(
                "t",
                PatternType::Literal,
                "User:alice",
                granted,
            )]);
            assert!(may(&store, &alice(), implied, "t"), "{granted:?}");
        }
        let store = store_of(&[allow_topic(
            "t",
            PatternType::Literal,
            "User:alice",
            Operation::Describe,
        )]);
        assert!(!may(&store, &alice(), Operation::Read, "t"));
        let store = store_of(&[allow_topic(
            "t",
            PatternType::Literal,
            "User:alice",
            Operation::Create,
        )]);
        assert!(!may(&store, &alice(), Operation::Describe, "t"));
        let store = store_of(&[allow_topic(
            "t",
            PatternType::Literal,
            "User:alice",
            Operation::All,
        )]);
        for &op in ResourceType::Topic.operations() {
            assert!(may(&store, &alice(), op, "t"));
        }
    }

    #[test]
    fn super_users_bypass_and_allow_everyone_applies_only_without_acls() {
        let mut deny = allow_topic("t", PatternType::Literal, "User:*", Operation::All);
        deny.permission = Permission::Deny;
        let store = store_of(&[deny]);
        let admin = Requester {
            principal: "User:admin",
            ..alice()
        };
        let ops = Requester {
            principal: "User:ops",
            ..alice()
        };
        assert!(may(&store, &admin, Operation::Write, "t"));
        assert!(may(&store, &ops, Operation::Write, "t"));
        // Not "User:admin2", and an empty entry names nobody.
        assert!(!Policy {
            super_users: "User:admin;;",
            ..POLICY
        }
        .is_super_user("User:admin2"));
        assert!(!Policy {
            super_users: "",
            ..POLICY
        }
        .is_super_user(""));

        let open = Policy {
            allow_everyone_if_no_acl_found: true,
            ..POLICY
        };
        // No binding names "u": everyone may; "t" has one (for others or not): only ACLs decide.
        assert!(store.authorize(&open, &alice(), Operation::Read, ResourceType::Topic, "u"));
        assert!(!store.authorize(&open, &alice(), Operation::Read, ResourceType::Topic, "t"));
        let bobs = store_of(&[allow_topic(
            "t",
            PatternType::Literal,
            "User:bob",
            Operation::Read,
        )]);
        assert!(!bobs.authorize(&open, &alice(), Operation::Read, ResourceType::Topic, "t"));
        assert!(!may(&bobs, &alice(), Operation::Read, "u"));
    }

    #[test]
    fn authorize_any_for_idempotent_producers() {
        let store = store_of(&[allow_topic(
            "p-",
            PatternType::Prefixed,
            "User:alice",
            Operation::Write,
        )]);
        fn any(store: &AclStore, who: &Requester<'_>) -> bool {
            store.authorize_any(&POLICY, who, Operation::Write, ResourceType::Topic)
        }
        assert!(any(&store, &alice()));
        let bob = Requester {
            principal: "User:bob",
            ..alice()
        };
        assert!(!any(&store, &bob));
        // A DENY covering the only ALLOW takes it away; a DENY on the wildcard takes all.
        let mut deny = allow_topic("p", PatternType::Prefixed, "User:alice", Operation::Write);
        deny.permission = Permission::Deny;
        let mut with_deny = store.clone();
        with_deny.insert(&deny);
        assert!(!any(&with_deny, &alice()));
        let mut deny_star = allow_topic("*", PatternType::Literal, "User:*", Operation::All);
        deny_star.permission = Permission::Deny;
        let mut with_star = store_of(&[allow_topic(
            "x",
            PatternType::Literal,
            "User:alice",
            Operation::Write,
        )]);
        assert!(any(&with_star, &alice()));
        with_star.insert(&deny_star);
        assert!(!any(&with_star, &alice()));
    }

    #[test]
    fn authorized_operations_bits() {
        let store = store_of(&[allow_topic(
            "t",
            PatternType::Literal,
            "User:alice",
            Operation::Read,
        )]);
        let bits = store.authorized_operations(&POLICY, &alice(), ResourceType::Topic, "t");
        assert_eq!(bits, 1 << 3 | 1 << 8);
        assert_eq!(
            all_operations(ResourceType::Group),
            1 << 3 | 1 << 8 | 1 << 6
        );
    }

    #[test]
    fn validation_rejects_what_kafka_rejects() {
        let good = allow_topic("t", PatternType::Literal, "User:alice", Operation::Read);
        assert!(good.validate().is_ok());
        type Change = Box<dyn Fn(&mut AclBinding)>;
        let cases: Vec<Change> = vec![
            Box::new(|b| b.pattern_type = PatternType::Any),
            Box::new(|b| b.pattern_type = PatternType::Match),
            Box::new(|b| b.resource_type = ResourceType::Any),
            Box::new(|b| b.operation = Operation::Any),
            Box::new(|b| b.permission = Permission::Any),
            Box::new(|b| b.resource_name.clear()),
            Box::new(|b| b.resource_name = "x".repeat(MAX_RESOURCE_NAME_BYTES + 1)),
            Box::new(|b| b.principal = "alice".into()),
            Box::new(|b| b.principal = "User:".into()),
            Box::new(|b| b.host = "example.com".into()),
            Box::new(|b| b.resource_type = ResourceType::Cluster),
        ];
        for (index, change) in cases.iter().enumerate() {
            let mut bad = good.clone();
            change(&mut bad);
            assert!(bad.validate().is_err(), "case {index}: {bad:?}");
        }
        let mut cluster = good.clone();
        cluster.resource_type = ResourceType::Cluster;
        cluster.resource_name = CLUSTER_NAME.into();
        assert!(cluster.validate().is_ok());
        let mut v6 = good;
        v6.host = "::1".into();
        assert!(v6.validate().is_ok());
    }

    #[test]
    fn filters_match_as_kafka_defines() {
        let literal = allow_topic(
            "orders",
            PatternType::Literal,
            "User:alice",
            Operation::Read,
        );
        let wildcard = allow_topic("*", PatternType::Literal, "User:bob", Operation::Write);
        let prefixed = allow_topic("ord", PatternType::Prefixed, "User:alice", Operation::Read);
        let other = allow_topic("x", PatternType::Prefixed, "User:alice", Operation::Read);
        let store = store_of(&[
            literal.clone(),
            wildcard.clone(),
            prefixed.clone(),
            other.clone(),
        ]);
        assert_eq!(store.matching(&AclFilter::any()).len(), 4);
        let named = |pattern_type| AclFilter {
            resource_type: ResourceType::Topic,
            resource_name: Some("orders".into()),
            pattern_type,
            ..AclFilter::any()
        };
        assert_eq!(
            store.matching(&named(PatternType::Match)),
            vec![wildcard.clone(), literal.clone(), prefixed.clone()]
        );
        assert_eq!(
            store.matching(&named(PatternType::Literal)),
            vec![literal.clone()]
        );
        assert_eq!(store.matching(&named(PatternType::Any)), vec![literal]);
        assert!(store.matching(&named(PatternType::Prefixed)).is_empty());
        let by_principal = AclFilter {
            principal: Some("User:bob".into()),
            ..AclFilter::any()
        };
        assert_eq!(store.matching(&by_principal), vec![wildcard]);
        let prefixed_only = AclFilter {
            pattern_type: PatternType::Prefixed,
            operation: Operation::Read,
            ..AclFilter::any()
        };
        assert_eq!(store.matching(&prefixed_only), vec![prefixed, other]);
    }

    #[test]
    fn store_insert_remove_and_serde_round_trip() {
        let a = allow_topic("t", PatternType::Literal, "User:alice", Operation::Read);
        let mut store = AclStore::default();
        assert!(store.insert(&a));
        assert!(!store.insert(&a));
        assert_eq!(store.len(), 1);
        assert!(store.contains(&a));
        let json = serde_json::to_string(&store).unwrap();
        let back: AclStore = serde_json::from_str(&json).unwrap();
        assert_eq!(back, store);
        assert!(store.remove(&a));
        assert!(!store.remove(&a));
        assert!(store.is_empty());
        assert_eq!(store, AclStore::default());
    }

    #[test]
    fn names_and_codes_round_trip() {
        for &op in Operation::ALL_VALUES {
            assert_eq!(Operation::from_code(op.code()), Some(op));
            assert_eq!(Operation::from_name(op.name()), Some(op));
        }
        assert_eq!(
            Operation::from_name("describe-configs"),
            Some(Operation::DescribeConfigs)
        );
        assert_eq!(ResourceType::from_code(0), None);
        assert_eq!(PatternType::from_code(5), None);
    }
}
