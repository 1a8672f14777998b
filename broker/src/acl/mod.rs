//! Kafka's ACL model, without any I/O: who ([`AclBinding::principal`], from which host) may or
//! may not do what ([`Operation`]) to which resources ([`ResourcePattern`]), and the decision
//! for one request ([`Rules::authorize`]). The semantics are Kafka's `AclAuthorizer`'s, so the
//! bindings Kafka's admin tools write mean the same here:
//!
//! - a binding matches a resource when its pattern is the literal name, the literal wildcard
//!   `*`, or a prefix of the name (`PREFIXED`); its principal is the caller's or `User:*`; its
//!   host is the caller's address or `*`;
//! - a matching DENY for the operation (or `All`) refuses, whatever allows it;
//! - otherwise a matching ALLOW grants it; `Describe` is also granted by `Read`, `Write`,
//!   `Delete` and `Alter`, and `DescribeConfigs` by `AlterConfigs`;
//! - super users are allowed everything; a resource no binding matches at all is allowed only
//!   with `allow.everyone.if.no.acl.found`.
//!
//! Where the bindings are stored and how the broker asks is [`store`]'s business.

pub mod store;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// The only name a cluster resource has, as in Kafka.
pub const CLUSTER_NAME: &str = "kafka-cluster";

/// The principal of a client that did not authenticate (a plaintext listener).
pub const ANONYMOUS: &str = "User:ANONYMOUS";

/// The host of a caller whose address is not known (no binding has an empty host): no
/// host-specific ALLOW applies to it, and every host-specific DENY does, so not knowing the
/// address never grants more than knowing it.
pub const UNKNOWN_HOST: &str = "";

/// Bound on a binding's resource name, principal and host, so a stored binding stays small.
pub const MAX_FIELD_BYTES: usize = 1024;

/// What kind of thing a binding is about (Kafka's `ResourceType` codes 2 to 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ResourceType {
    /// A topic, by name.
    Topic,
    /// A consumer group, by id.
    Group,
    /// The cluster (named [`CLUSTER_NAME`]).
    Cluster,
    /// A transactional producer, by transactional id.
    TransactionalId,
}

impl ResourceType {
    /// The operations Kafka defines on a resource of this type (its `AclEntry.supportedOperations`
    /// in Kafka 4): what KIP-430's authorized operations report on.
    pub fn operations(self) -> &'static [Operation] {
        use Operation::*;
        match self {
            ResourceType::Topic => &[
                Read,
                Write,
                Create,
                Describe,
                Delete,
                Alter,
                DescribeConfigs,
                AlterConfigs,
            ],
            ResourceType::Group => &[Read, Describe, Delete, DescribeConfigs, AlterConfigs],
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
        }
    }

    /// The type Kafka's code names, if it is one bindings can be about.
    pub fn from_code(code: i8) -> Option<ResourceType> {
        match code {
            2 => Some(ResourceType::Topic),
            3 => Some(ResourceType::Group),
            4 => Some(ResourceType::Cluster),
            5 => Some(ResourceType::TransactionalId),
            _ => None,
        }
    }

    /// Kafka's code of the type.
    pub fn code(self) -> i8 {
        match self {
            ResourceType::Topic => 2,
            ResourceType::Group => 3,
            ResourceType::Cluster => 4,
            ResourceType::TransactionalId => 5,
        }
    }

    /// The name the CLI and logs use.
    pub fn name(self) -> &'static str {
        match self {
            ResourceType::Topic => "topic",
            ResourceType::Group => "group",
            ResourceType::Cluster => "cluster",
            ResourceType::TransactionalId => "transactional_id",
        }
    }
}

/// How a binding's resource name is matched (Kafka's `PatternType` codes 3 and 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PatternType {
    /// The name itself, or every name when it is `*`.
    Literal,
    /// Every name starting with it.
    Prefixed,
}

impl PatternType {
    /// The pattern type Kafka's code names, if a binding can have it.
    pub fn from_code(code: i8) -> Option<PatternType> {
        match code {
            3 => Some(PatternType::Literal),
            4 => Some(PatternType::Prefixed),
            _ => None,
        }
    }

    /// Kafka's code of the pattern type.
    pub fn code(self) -> i8 {
        match self {
            PatternType::Literal => 3,
            PatternType::Prefixed => 4,
        }
    }
}

/// What a request does to a resource (Kafka's `AclOperation` codes 2 to 12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Operation {
    /// Every operation.
    All,
    /// Fetch, commit offsets, join a group.
    Read,
    /// Produce, use a transactional id.
    Write,
    /// Create topics.
    Create,
    /// Delete topics, records or groups.
    Delete,
    /// Add partitions, change ACLs or users.
    Alter,
    /// See that it exists and read its metadata.
    Describe,
    /// Broker-to-broker requests.
    ClusterAction,
    /// Read configs.
    DescribeConfigs,
    /// Change configs.
    AlterConfigs,
    /// Idempotent produce without a transactional id.
    IdempotentWrite,
}

impl Operation {
    /// Every operation a binding can name, in Kafka's code order.
    pub const ALL: [Operation; 11] = [
        Operation::All,
        Operation::Read,
        Operation::Write,
        Operation::Create,
        Operation::Delete,
        Operation::Alter,
        Operation::Describe,
        Operation::ClusterAction,
        Operation::DescribeConfigs,
        Operation::AlterConfigs,
        Operation::IdempotentWrite,
    ];

    /// The operation Kafka's code names, if a binding can name it.
    pub fn from_code(code: i8) -> Option<Operation> {
        Operation::ALL
            .into_iter()
            .find(|operation| operation.code() == code)
    }

    /// Kafka's code of the operation.
    pub fn code(self) -> i8 {
        match self {
            Operation::All => 2,
            Operation::Read => 3,
            Operation::Write => 4,
            Operation::Create => 5,
            Operation::Delete => 6,
            Operation::Alter => 7,
            Operation::Describe => 8,
            Operation::ClusterAction => 9,
            Operation::DescribeConfigs => 10,
            Operation::AlterConfigs => 11,
            Operation::IdempotentWrite => 12,
        }
    }

    /// The operation the CLI names (`read`, `describe_configs`, ...).
    pub fn from_name(name: &str) -> Option<Operation> {
        Operation::ALL
            .into_iter()
            .find(|operation| operation.name().eq_ignore_ascii_case(name))
    }

    /// The name the CLI and logs use.
    pub fn name(self) -> &'static str {
        match self {
            Operation::All => "all",
            Operation::Read => "read",
            Operation::Write => "write",
            Operation::Create => "create",
            Operation::Delete => "delete",
            Operation::Alter => "alter",
            Operation::Describe => "describe",
            Operation::ClusterAction => "cluster_action",
            Operation::DescribeConfigs => "describe_configs",
            Operation::AlterConfigs => "alter_configs",
            Operation::IdempotentWrite => "idempotent_write",
        }
    }

    /// Whether an ALLOW of `self` grants `asked`: itself, everything for `All`, and the
    /// implied Describe and DescribeConfigs.
    fn grants(self, asked: Operation) -> bool {
        self == asked
            || self == Operation::All
            || (asked == Operation::Describe
                && matches!(
                    self,
                    Operation::Read | Operation::Write | Operation::Delete | Operation::Alter
                ))
            || (asked == Operation::DescribeConfigs && self == Operation::AlterConfigs)
    }
}

/// Whether a binding allows or denies (Kafka's `AclPermissionType` codes 2 and 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Permission {
    /// Refuses, whatever allows.
    Deny,
    /// Grants, unless something denies.
    Allow,
}

impl Permission {
    /// The permission Kafka's code names.
    pub fn from_code(code: i8) -> Option<Permission> {
        match code {
            2 => Some(Permission::Deny),
            3 => Some(Permission::Allow),
            _ => None,
        }
    }

    /// Kafka's code of the permission.
    pub fn code(self) -> i8 {
        match self {
            Permission::Deny => 2,
            Permission::Allow => 3,
        }
    }
}

/// Which resources a binding is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ResourcePattern {
    /// The kind of resource.
    pub resource_type: ResourceType,
    /// A name, `*` (literal: every name) or a prefix.
    pub name: String,
    /// How `name` matches.
    pub pattern_type: PatternType,
}

impl ResourcePattern {
    /// Whether the pattern covers the resource `name` of its type.
    fn covers(&self, name: &str) -> bool {
        match self.pattern_type {
            PatternType::Literal => self.name == name || self.name == "*",
            PatternType::Prefixed => name.starts_with(&self.name),
        }
    }
}

/// One rule: `principal` from `host` is allowed or denied `operation` on `pattern`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclBinding {
    /// The resources.
    pub pattern: ResourcePattern,
    /// `Type:name` (`User:alice`), or `User:*` for every user.
    pub principal: String,
    /// The client's IP address, or `*` for any.
    pub host: String,
    /// The operation.
    pub operation: Operation,
    /// Allow or deny.
    pub permission: Permission,
}

impl AclBinding {
    /// Refuses a binding Kafka would refuse: empty names, a principal without its type, a
    /// cluster binding not named [`CLUSTER_NAME`], a prefixed wildcard, oversized fields.
    pub fn validate(&self) -> Result<(), String> {
        let fields = [&self.pattern.name, &self.principal, &self.host];
        if fields
            .iter()
            .any(|f| f.is_empty() || f.len() > MAX_FIELD_BYTES)
        {
            return Err(format!(
                "resource name, principal and host have 1 to {MAX_FIELD_BYTES} bytes"
            ));
        }
        if fields.iter().any(|f| f.chars().any(char::is_control)) {
            return Err("resource name, principal and host have no control characters".into());
        }
        match self.principal.split_once(':') {
            Some((kind, name)) if !kind.is_empty() && !name.is_empty() => {}
            _ => {
                return Err(format!(
                    "principal {:?} is not of the form Type:name (User:alice)",
                    self.principal
                ))
            }
        }
        if self.pattern.resource_type == ResourceType::Cluster
            && (self.pattern.name != CLUSTER_NAME
                || self.pattern.pattern_type != PatternType::Literal)
        {
            return Err(format!("the cluster resource is named {CLUSTER_NAME:?}"));
        }
        if self.pattern.pattern_type == PatternType::Prefixed && self.pattern.name == "*" {
            return Err("a prefixed pattern cannot be the wildcard '*'".into());
        }
        Ok(())
    }

    /// The binding's stored form: canonical JSON, so equal bindings are one key.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a stored binding back.
    pub fn decode(encoded: &str) -> Result<AclBinding, String> {
        let binding: AclBinding = serde_json::from_str(encoded).map_err(|e| e.to_string())?;
        binding.validate()?;
        Ok(binding)
    }

    /// Whether the binding speaks for `principal` at `host` about `name`.
    fn applies(
        &self,
        principal: &str,
        host: &str,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        self.pattern.resource_type == resource_type
            && self.pattern.covers(name)
            && (self.principal == principal || self.principal == "User:*")
            && (self.host == host
                || self.host == "*"
                || (host == UNKNOWN_HOST && self.permission == Permission::Deny))
    }
}

/// How a filter matches resource patterns (Kafka's pattern type filter codes 1 to 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternFilter {
    /// Every pattern type; the name, if given, must be the pattern's own.
    Any,
    /// Every pattern that covers the filter's name (literal, wildcard or prefix).
    Match,
    /// Exactly this pattern type.
    Exactly(PatternType),
}

/// Which bindings DescribeAcls or DeleteAcls is about; `None` fields match anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclFilter {
    /// The kind of resource.
    pub resource_type: Option<ResourceType>,
    /// The resource name.
    pub name: Option<String>,
    /// How the name is compared.
    pub pattern: PatternFilter,
    /// The principal, exactly.
    pub principal: Option<String>,
    /// The host, exactly.
    pub host: Option<String>,
    /// The operation, exactly.
    pub operation: Option<Operation>,
    /// The permission.
    pub permission: Option<Permission>,
}

impl AclFilter {
    /// A filter matching every binding.
    pub fn any() -> AclFilter {
        AclFilter {
            resource_type: None,
            name: None,
            pattern: PatternFilter::Any,
            principal: None,
            host: None,
            operation: None,
            permission: None,
        }
    }

    /// Whether `binding` is one the filter selects.
    pub fn matches(&self, binding: &AclBinding) -> bool {
        let pattern = &binding.pattern;
        let name_matches = match (self.pattern, &self.name) {
            (_, None) => true,
            (PatternFilter::Match, Some(name)) => pattern.covers(name),
            (_, Some(name)) => pattern.name == *name,
        };
        let pattern_matches = match self.pattern {
            PatternFilter::Any | PatternFilter::Match => true,
            PatternFilter::Exactly(kind) => pattern.pattern_type == kind,
        };
        name_matches
            && pattern_matches
            && self
                .resource_type
                .is_none_or(|t| t == pattern.resource_type)
            && self
                .principal
                .as_ref()
                .is_none_or(|p| *p == binding.principal)
            && self.host.as_ref().is_none_or(|h| *h == binding.host)
            && self.operation.is_none_or(|o| o == binding.operation)
            && self.permission.is_none_or(|p| p == binding.permission)
    }
}

/// Every binding plus the policy around them: what one authorization decision reads.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// The bindings.
    pub bindings: BTreeSet<AclBinding>,
    /// Principals allowed everything.
    pub super_users: BTreeSet<String>,
    /// Whether a resource no binding matches is open to everyone.
    pub allow_if_no_acl: bool,
}

/// KIP-430's bit field of `operations`: bit `n` set for the operation with code `n`.
pub fn operations_field(operations: impl IntoIterator<Item = Operation>) -> i32 {
    operations
        .into_iter()
        .fold(0, |field, operation| field | 1 << operation.code())
}

impl Rules {
    /// KIP-430's authorized operations: the field ([`operations_field`]) of the operations of
    /// the resource's type `principal` from `host` may do to it.
    pub fn authorized_operations(
        &self,
        principal: &str,
        host: &str,
        resource_type: ResourceType,
        name: &str,
    ) -> i32 {
        let operations = resource_type.operations().iter().copied();
        operations_field(
            operations.filter(|&op| self.authorize(principal, host, op, resource_type, name)),
        )
    }

    /// Whether `principal` connecting from `host` may do `operation` to the resource.
    pub fn authorize(
        &self,
        principal: &str,
        host: &str,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        if self.super_users.contains(principal) {
            return true;
        }
        let mut any_binding = false;
        let mut allowed = false;
        for binding in &self.bindings {
            if binding.pattern.resource_type != resource_type || !binding.pattern.covers(name) {
                continue;
            }
            any_binding = true;
            if !binding.applies(principal, host, resource_type, name) {
                continue;
            }
            match binding.permission {
                Permission::Deny
                    if binding.operation == operation || binding.operation == Operation::All =>
                {
                    return false;
                }
                Permission::Allow if binding.operation.grants(operation) => allowed = true,
                _ => {}
            }
        }
        allowed || (!any_binding && self.allow_if_no_acl)
    }

    /// Whether `principal` may do `operation` to at least one resource of the type: what Kafka
    /// asks before an idempotent producer without a transactional id gets a producer id
    /// (Write on some topic). A deny on the literal wildcard refuses; other denies cover only
    /// some names, so they cannot refuse every resource.
    pub fn authorize_any(
        &self,
        principal: &str,
        host: &str,
        operation: Operation,
        resource_type: ResourceType,
    ) -> bool {
        if self.super_users.contains(principal) {
            return true;
        }
        let speaks = |b: &&AclBinding| {
            b.pattern.resource_type == resource_type
                && (b.principal == principal || b.principal == "User:*")
                && (b.host == host || b.host == "*")
        };
        let mut relevant = self.bindings.iter().filter(speaks);
        let wildcard_denied = relevant.clone().any(|b| {
            b.permission == Permission::Deny
                && b.pattern.pattern_type == PatternType::Literal
                && b.pattern.name == "*"
                && (b.operation == operation || b.operation == Operation::All)
        });
        if wildcard_denied {
            return false;
        }
        relevant.any(|b| b.permission == Permission::Allow && b.operation.grants(operation))
            || (self.allow_if_no_acl
                && !self
                    .bindings
                    .iter()
                    .any(|b| b.pattern.resource_type == resource_type))
    }
}
