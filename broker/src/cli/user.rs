//! `causeway user create|delete|list`: the SASL/SCRAM users of a stopped broker's data dir (or
//! of one not started yet), as Kafka's `kafka-storage format --add-scram` sets up the first
//! users before a SASL listener opens. It works offline and refuses to run while a broker holds the data dir lock. The
//! password is read from the first line of standard input, so it stays out of the process list
//! and the shell history; only its salted, iterated SCRAM credential is stored.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Subcommand;

use crate::sasl::{Mechanism, ScramCredential};
use crate::users::Users;

/// `causeway user ...`
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Creates a user, or sets a new password, with the password read from standard input.
    Create {
        /// The user name clients log in with.
        name: String,
        /// The stopped broker's data dir.
        #[arg(long)]
        data_dir: PathBuf,
        /// SCRAM mechanisms to store a credential for (PLAIN logs in with either).
        #[arg(
            long = "mechanism",
            value_delimiter = ',',
            default_value = "SCRAM-SHA-256,SCRAM-SHA-512"
        )]
        mechanisms: Vec<String>,
        /// PBKDF2 iterations of the credential (Kafka's bounds: 4096 to 16384).
        #[arg(long, default_value_t = 8192)]
        iterations: u32,
    },
    /// Deletes a user's credentials.
    Delete {
        /// The user name.
        name: String,
        /// The stopped broker's data dir.
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Lists users and the mechanisms they have credentials for.
    List {
        /// The stopped broker's data dir.
        #[arg(long)]
        data_dir: PathBuf,
    },
}

/// Runs a user command; what it prints on success.
pub fn run(command: UserCommand) -> anyhow::Result<String> {
    execute(command, &mut std::io::stdin().lock())
}

fn open(data_dir: &Path) -> anyhow::Result<(super::Stopped, Users)> {
    let stopped = super::open_stopped(data_dir)?;
    let users = Users::load(&stopped.security)?;
    Ok((stopped, users))
}

/// Carries out `command`, reading a password from `input`; returns what to print.
fn execute(command: UserCommand, input: &mut dyn BufRead) -> anyhow::Result<String> {
    match command {
        UserCommand::Create {
            name,
            data_dir,
            mechanisms,
            iterations,
        } => {
            let mechanisms = mechanisms
                .iter()
                .map(|m| {
                    Mechanism::from_name(m)
                        .filter(|m| *m != Mechanism::Plain)
                        .with_context(|| format!("--mechanism {m:?}: not a SCRAM mechanism"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let mut line = String::new();
            input.read_line(&mut line).context("reading the password")?;
            let password = line.trim_end_matches(['\r', '\n']);
            if password.is_empty() {
                bail!("no password on standard input");
            }
            let (stopped, users) = open(&data_dir)?;
            for mechanism in &mechanisms {
                let credential =
                    ScramCredential::generate(*mechanism, password.as_bytes(), iterations)
                        .map_err(anyhow::Error::msg)?;
                users
                    .put(
                        &stopped.security,
                        &stopped.catalog,
                        &name,
                        *mechanism,
                        credential,
                    )
                    .map_err(anyhow::Error::msg)?;
            }
            let names: Vec<&str> = mechanisms.iter().map(|m| m.name()).collect();
            Ok(format!(
                "user {name}: {} credentials stored\n",
                names.join(", ")
            ))
        }
        UserCommand::Delete { name, data_dir } => {
            let (stopped, users) = open(&data_dir)?;
            let mut deleted = 0;
            for mechanism in [Mechanism::ScramSha256, Mechanism::ScramSha512] {
                if users
                    .delete(&stopped.security, &stopped.catalog, &name, mechanism)
                    .map_err(anyhow::Error::msg)?
                {
                    deleted += 1;
                }
            }
            if deleted == 0 {
                bail!("no user {name}");
            }
            Ok(format!("user {name} deleted\n"))
        }
        UserCommand::List { data_dir } => {
            let (_stopped, users) = open(&data_dir)?;
            let mut out = String::new();
            for user in users.list() {
                let mechanisms: Vec<String> = user
                    .mechanisms
                    .iter()
                    .map(|(m, iterations)| format!("{}({iterations})", m.name()))
                    .collect();
                out.push_str(&format!("{}\t{}\n", user.name, mechanisms.join(" ")));
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sasl::CredentialLookup;

    #[test]
    fn users_are_created_listed_and_deleted_offline_and_refused_while_a_broker_runs() {
        let dir = tempfile::TempDir::new().expect("dir");
        let data_dir = dir.path().to_path_buf();
        let create = |name: &str, password: &str| {
            execute(
                UserCommand::Create {
                    name: name.into(),
                    data_dir: data_dir.clone(),
                    mechanisms: vec!["SCRAM-SHA-256".into(), "SCRAM-SHA-512".into()],
                    iterations: 4096,
                },
                &mut password.as_bytes(),
            )
        };
        create("alice", "wonderland\n").expect("create");
        create("bob", "builder\n").expect("create");
        assert!(create("carol", "\n").is_err(), "an empty password");
        let list = execute(
            UserCommand::List {
                data_dir: data_dir.clone(),
            },
            &mut &b""[..],
        )
        .expect("list");
        assert_eq!(
            list,
            "alice\tSCRAM-SHA-256(4096) SCRAM-SHA-512(4096)\nbob\tSCRAM-SHA-256(4096) SCRAM-SHA-512(4096)\n"
        );
        execute(
            UserCommand::Delete {
                name: "bob".into(),
                data_dir: data_dir.clone(),
            },
            &mut &b""[..],
        )
        .expect("delete");
        let (stopped, users) = open(&data_dir).expect("open");
        assert!(users.plain_matches("alice", b"wonderland"));
        assert!(users.scram(Mechanism::ScramSha512, "bob").is_none());
        assert!(create("dave", "x\n").is_err(), "the data dir is locked");
        drop(stopped);
    }
}
