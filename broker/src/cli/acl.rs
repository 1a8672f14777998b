//! `causeway acl add|remove|list`: the ACL bindings of a stopped broker's data dir (or of one not
//! started yet), so the first grants exist before an authorizing listener opens, as
//! `kafka-acls.sh --bootstrap-server` manages them on a running broker (which Causeway serves
//! too, through CreateAcls, DescribeAcls and DeleteAcls). It refuses to run while a broker holds
//! the data dir lock.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{ArgGroup, Subcommand};
use serde_json::json;

use crate::acl::store::Acls;
use crate::acl::{
    AclBinding, AclFilter, Operation, PatternFilter, PatternType, Permission, ResourcePattern,
    ResourceType, CLUSTER_NAME,
};

/// `causeway acl ...`
#[derive(Debug, Subcommand)]
pub enum AclCommand {
    /// Grants (or denies) operations on a resource to a principal.
    Add(BindingArgs),
    /// Removes exactly the bindings `add` with the same flags creates.
    Remove(BindingArgs),
    /// Lists every binding.
    List {
        /// The stopped broker's data dir.
        #[arg(long)]
        data_dir: PathBuf,
        /// Print one JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// The bindings to add or remove: one per operation.
#[derive(Debug, clap::Args)]
#[command(group(ArgGroup::new("permission").required(true).args(["allow", "deny"])))]
#[command(group(ArgGroup::new("resource").required(true).args(["topic", "group", "transactional_id", "cluster"])))]
pub struct BindingArgs {
    /// The stopped broker's data dir.
    #[arg(long)]
    data_dir: PathBuf,
    /// Who: `User:alice`, or `User:*` for every user.
    #[arg(long)]
    principal: String,
    /// Allow the operations.
    #[arg(long)]
    allow: bool,
    /// Deny the operations (a deny beats every allow).
    #[arg(long)]
    deny: bool,
    /// Operations, comma-separated: all, read, write, create, delete, alter, describe,
    /// cluster_action, describe_configs, alter_configs, idempotent_write.
    #[arg(long = "operation", value_delimiter = ',', required = true)]
    operations: Vec<String>,
    /// A topic (`*` for every topic).
    #[arg(long)]
    topic: Option<String>,
    /// A consumer group (`*` for every group).
    #[arg(long)]
    group: Option<String>,
    /// A transactional id (`*` for every one).
    #[arg(long)]
    transactional_id: Option<String>,
    /// The cluster.
    #[arg(long)]
    cluster: bool,
    /// The name is a prefix: the binding covers every resource whose name starts with it.
    #[arg(long)]
    prefixed: bool,
    /// The client address the binding applies to (`*` for any).
    #[arg(long, default_value = "*")]
    host: String,
}

impl BindingArgs {
    fn bindings(&self) -> anyhow::Result<Vec<AclBinding>> {
        let (resource_type, name) = match (&self.topic, &self.group, &self.transactional_id) {
            (Some(topic), _, _) => (ResourceType::Topic, topic.clone()),
            (_, Some(group), _) => (ResourceType::Group, group.clone()),
            (_, _, Some(id)) => (ResourceType::TransactionalId, id.clone()),
            _ => (ResourceType::Cluster, CLUSTER_NAME.to_string()),
        };
        let pattern = ResourcePattern {
            resource_type,
            name,
            pattern_type: if self.prefixed {
                PatternType::Prefixed
            } else {
                PatternType::Literal
            },
        };
        let permission = if self.deny {
            Permission::Deny
        } else {
            Permission::Allow
        };
        self.operations
            .iter()
            .map(|name| {
                let operation = Operation::from_name(name)
                    .with_context(|| format!("--operation {name:?} is not an ACL operation"))?;
                let binding = AclBinding {
                    pattern: pattern.clone(),
                    principal: self.principal.clone(),
                    host: self.host.clone(),
                    operation,
                    permission,
                };
                binding.validate().map_err(anyhow::Error::msg)?;
                Ok(binding)
            })
            .collect()
    }
}

/// Runs a ACL command; what it prints on success.
pub fn run(command: AclCommand) -> anyhow::Result<String> {
    execute(command)
}

fn open(data_dir: &Path) -> anyhow::Result<(super::Stopped, Acls)> {
    let stopped = super::open_stopped(data_dir)?;
    let acls = Acls::load(&stopped.security, true, &[], false)?;
    Ok((stopped, acls))
}

/// Carries out `command`; returns what to print.
fn execute(command: AclCommand) -> anyhow::Result<String> {
    match command {
        AclCommand::Add(args) => {
            let bindings = args.bindings()?;
            let (stopped, acls) = open(&args.data_dir)?;
            acls.create(&stopped.security, &stopped.catalog, &bindings)
                .map_err(anyhow::Error::msg)?;
            Ok(format!("{} binding(s) added\n", bindings.len()))
        }
        AclCommand::Remove(args) => {
            let filters: Vec<AclFilter> = args
                .bindings()?
                .into_iter()
                .map(|b| AclFilter {
                    resource_type: Some(b.pattern.resource_type),
                    name: Some(b.pattern.name),
                    pattern: PatternFilter::Exactly(b.pattern.pattern_type),
                    principal: Some(b.principal),
                    host: Some(b.host),
                    operation: Some(b.operation),
                    permission: Some(b.permission),
                })
                .collect();
            let (stopped, acls) = open(&args.data_dir)?;
            let removed: usize = acls
                .delete(&stopped.security, &stopped.catalog, &filters)
                .map_err(anyhow::Error::msg)?
                .iter()
                .map(Vec::len)
                .sum();
            if removed == 0 {
                bail!("no such binding");
            }
            Ok(format!("{removed} binding(s) removed\n"))
        }
        AclCommand::List { data_dir, json } => {
            let (_stopped, acls) = open(&data_dir)?;
            let bindings = acls.describe(&AclFilter::any());
            Ok(if json {
                let listed: Vec<serde_json::Value> = bindings.iter().map(binding_json).collect();
                format!("{}\n", json!({ "acls": listed }))
            } else {
                bindings.iter().map(binding_line).collect()
            })
        }
    }
}

fn pattern_name(pattern_type: PatternType) -> &'static str {
    match pattern_type {
        PatternType::Literal => "literal",
        PatternType::Prefixed => "prefixed",
    }
}

fn permission_name(permission: Permission) -> &'static str {
    match permission {
        Permission::Allow => "allow",
        Permission::Deny => "deny",
    }
}

fn binding_json(binding: &AclBinding) -> serde_json::Value {
    json!({
        "resource_type": binding.pattern.resource_type.name(),
        "resource_name": binding.pattern.name,
        "pattern_type": pattern_name(binding.pattern.pattern_type),
        "principal": binding.principal,
        "host": binding.host,
        "operation": binding.operation.name(),
        "permission": permission_name(binding.permission),
    })
}

fn binding_line(binding: &AclBinding) -> String {
    format!(
        "{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
        binding.pattern.resource_type.name(),
        pattern_name(binding.pattern.pattern_type),
        binding.pattern.name,
        binding.principal,
        binding.host,
        binding.operation.name(),
        permission_name(binding.permission),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: AclCommand,
    }

    fn run_args(args: &[&str]) -> anyhow::Result<String> {
        let cli = Cli::try_parse_from(std::iter::once("acl").chain(args.iter().copied()))?;
        execute(cli.command)
    }

    #[test]
    fn bindings_are_added_listed_and_removed_offline_and_refused_while_a_broker_runs() {
        let dir = tempfile::TempDir::new().expect("dir");
        let data_dir = dir.path().to_str().expect("utf-8");
        let grant = [
            "add",
            "--data-dir",
            data_dir,
            "--principal",
            "User:alice",
            "--allow",
            "--operation",
            "read,write",
            "--topic",
            "orders-",
            "--prefixed",
        ];
        assert_eq!(run_args(&grant).expect("add"), "2 binding(s) added\n");
        run_args(&[
            "add",
            "--data-dir",
            data_dir,
            "--principal",
            "User:bob",
            "--deny",
            "--operation",
            "alter",
            "--cluster",
        ])
        .expect("add");
        assert!(
            run_args(&[
                "add",
                "--data-dir",
                data_dir,
                "--principal",
                "alice",
                "--allow",
                "--operation",
                "read",
                "--topic",
                "t"
            ])
            .is_err(),
            "a principal without its type"
        );
        assert!(
            run_args(&[
                "add",
                "--data-dir",
                data_dir,
                "--principal",
                "User:a",
                "--allow",
                "--operation",
                "read"
            ])
            .is_err(),
            "no resource"
        );
        let list = run_args(&["list", "--data-dir", data_dir]).expect("list");
        assert_eq!(
            list,
            "topic\tprefixed\torders-\tUser:alice\t*\tread\tallow\n\
             topic\tprefixed\torders-\tUser:alice\t*\twrite\tallow\n\
             cluster\tliteral\tkafka-cluster\tUser:bob\t*\talter\tdeny\n"
        );
        let mut remove = grant;
        remove[0] = "remove";
        assert_eq!(run_args(&remove).expect("remove"), "2 binding(s) removed\n");
        assert!(run_args(&remove).is_err(), "nothing left to remove");
        let json = run_args(&["list", "--data-dir", data_dir, "--json"]).expect("list");
        let parsed: serde_json::Value = serde_json::from_str(&json).expect("json");
        assert_eq!(parsed["acls"].as_array().map(Vec::len), Some(1));
        assert_eq!(parsed["acls"][0]["permission"], "deny");
        let _running = causeway_storage::DataDirLock::acquire(dir.path()).expect("lock");
        assert!(
            run_args(&["list", "--data-dir", data_dir]).is_err(),
            "the data dir is locked"
        );
    }
}
