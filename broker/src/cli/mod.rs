//! Administration commands of the `causeway` binary, in the spirit of Redpanda's `rpk`: they
//! talk to a running broker over the Kafka protocol, print plain tables (one JSON document with
//! `--json` on every command that shows state), and exit 0 on success,
//! 1 when the broker refuses or cannot be reached, 2 on a usage error. `meta rebuild` is the
//! exception: it works offline on a stopped broker's data dir (same exit codes).

mod acl;
mod admin;
mod certs;
mod group;
mod http_json;
pub mod meta;
mod records;
mod region;
mod table;
mod topic;
mod user;

use std::process::ExitCode;

pub use acl::AclCommand;
pub use certs::CertsCommand;
pub use group::GroupCommand;
pub use meta::MetaCommand;
pub use records::{ConsumeArgs, ProduceArgs};
pub use region::RegionCommand;
pub use table::TableCommand;
pub use topic::TopicCommand;
pub use user::UserCommand;

/// Where admin commands find the broker.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// A broker's Kafka listener, HOST:PORT.
    #[arg(
        long,
        short = 'b',
        env = "CAUSEWAY_BOOTSTRAP",
        default_value = "127.0.0.1:9092",
        global = true
    )]
    pub bootstrap: String,
    /// How to reach that listener: its security protocol (Kafka's `security.protocol`).
    #[arg(
        long,
        env = "CAUSEWAY_SECURITY_PROTOCOL",
        value_enum,
        default_value = "plaintext",
        global = true
    )]
    pub security_protocol: crate::config::SecurityProtocol,
    /// PEM authorities the broker's certificate must chain to (SSL and SASL_SSL).
    #[arg(long, env = "CAUSEWAY_SSL_CA_FILE", global = true)]
    pub ssl_ca_file: Option<std::path::PathBuf>,
    /// PEM client certificate to present, for listeners that ask for one.
    #[arg(long, env = "CAUSEWAY_CLIENT_CERTIFICATE_FILE", global = true)]
    pub client_certificate_file: Option<std::path::PathBuf>,
    /// PEM private key of `--client-certificate-file`.
    #[arg(long, env = "CAUSEWAY_CLIENT_PRIVATE_KEY_FILE", global = true)]
    pub client_private_key_file: Option<std::path::PathBuf>,
    /// SASL mechanism (SASL_PLAINTEXT and SASL_SSL): SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN.
    #[arg(
        long,
        env = "CAUSEWAY_SASL_MECHANISM",
        default_value = "SCRAM-SHA-512",
        global = true
    )]
    pub sasl_mechanism: String,
    /// SASL user; the password is read from `CAUSEWAY_SASL_PASSWORD`, never from the command
    /// line, where every user of the machine could read it.
    #[arg(long, env = "CAUSEWAY_SASL_USERNAME", global = true)]
    pub sasl_username: Option<String>,
}

/// `causeway topic ...`
#[derive(Debug, clap::Args)]
pub struct TopicArgs {
    /// Which broker.
    #[command(flatten)]
    pub target: Target,
    /// What to do.
    #[command(subcommand)]
    pub command: TopicCommand,
}

/// `causeway group ...`
#[derive(Debug, clap::Args)]
pub struct GroupArgs {
    /// Which broker.
    #[command(flatten)]
    pub target: Target,
    /// HTTPS and credentials for `describe --http`.
    #[command(flatten)]
    pub http_access: HttpAccess,
    /// What to do.
    #[command(subcommand)]
    pub command: GroupCommand,
}

/// Where HTTP-backed commands find the broker.
#[derive(Debug, Clone, clap::Args)]
pub struct HttpTarget {
    /// The broker's HTTP listener, HOST:PORT.
    #[arg(
        long,
        env = "CAUSEWAY_HTTP",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub http: String,
    /// HTTPS and credentials for it.
    #[command(flatten)]
    pub access: HttpAccess,
}

/// How HTTP-backed commands reach a listener started with `--http-tls` or
/// `--http-authentication`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct HttpAccess {
    /// PEM authorities the HTTP listener's certificate must chain to; given, the commands speak
    /// HTTPS, and the certificate must name the `--http` host.
    #[arg(long, env = "CAUSEWAY_HTTP_CA_FILE", global = true)]
    pub http_ca_file: Option<std::path::PathBuf>,
    /// User for HTTP Basic authentication; the password is read from `CAUSEWAY_HTTP_PASSWORD`
    /// only. Without a user, a token in `CAUSEWAY_HTTP_BEARER_TOKEN` is sent if set.
    #[arg(long, env = "CAUSEWAY_HTTP_USERNAME", global = true)]
    pub http_username: Option<String>,
}

/// `causeway table ...`
#[derive(Debug, clap::Args)]
pub struct TableArgs {
    /// Which broker.
    #[command(flatten)]
    pub target: HttpTarget,
    /// What to do.
    #[command(subcommand)]
    pub command: TableCommand,
}

/// `causeway region ...`
#[derive(Debug, clap::Args)]
pub struct RegionArgs {
    /// Which broker.
    #[command(flatten)]
    pub target: HttpTarget,
    /// What to do.
    #[command(subcommand)]
    pub command: RegionCommand,
}

/// `causeway meta ...`
#[derive(Debug, clap::Args)]
pub struct MetaArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: MetaCommand,
}

/// `causeway user ...`
#[derive(Debug, clap::Args)]
pub struct UserArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: UserCommand,
}

/// Runs a user command (offline, on a data dir) and returns its exit code.
pub fn run_user(args: UserArgs) -> ExitCode {
    report_output(user::run(args.command))
}

/// `causeway acl ...`
#[derive(Debug, clap::Args)]
pub struct AclArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: AclCommand,
}

/// Runs an ACL command (offline, on a data dir) and returns its exit code.
pub fn run_acl(args: AclArgs) -> ExitCode {
    report_output(acl::run(args.command))
}

/// `causeway certs ...`
#[derive(Debug, clap::Args)]
pub struct CertsArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: CertsCommand,
}

/// Runs a certs command (offline, on files) and returns its exit code.
pub fn run_certs(args: CertsArgs) -> ExitCode {
    report_output(certs::run(args.command))
}

/// A stopped broker's metadata and security state, opened while the data dir lock keeps any
/// broker from starting on it.
struct Stopped {
    _lock: causeway_storage::DataDirLock,
    catalog: causeway_storage::Catalog,
    security: crate::security_state::SecurityStore,
}

/// Opens a stopped broker's data dir (creating the one of a broker not started yet). Changes
/// are stamped as the region the data dir belongs to (region 0 before its first start), so
/// they replicate like changes made on a running broker.
fn open_stopped(data_dir: &std::path::Path) -> anyhow::Result<Stopped> {
    use anyhow::Context;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let lock =
        causeway_storage::DataDirLock::acquire(data_dir).context("the broker must be stopped")?;
    let catalog =
        causeway_storage::Catalog::open(&data_dir.join("meta")).context("opening the metadata")?;
    let region = catalog.region()?.map_or(0, |(_, id)| id);
    let security = crate::security_state::SecurityStore::load(&catalog, region, u64::MAX)?;
    Ok(Stopped {
        _lock: lock,
        catalog,
        security,
    })
}

/// Runs a meta command (offline, on a data dir) and returns its exit code.
pub fn run_meta(args: MetaArgs) -> ExitCode {
    meta::run(args.command)
}

/// Runs a table command and turns its outcome into an exit code.
pub fn run_table(args: TableArgs) -> ExitCode {
    report(table::run(&args.target, args.command))
}

/// Runs a region command and turns its outcome into an exit code.
pub fn run_region(args: RegionArgs) -> ExitCode {
    report(region::run(&args.target, args.command))
}

/// Runs a topic command and turns its outcome into an exit code.
pub fn run_topic(args: TopicArgs) -> ExitCode {
    report(topic::run(&args.target, args.command))
}

/// Runs `causeway produce` and turns its outcome into an exit code.
pub fn run_produce(args: ProduceArgs) -> ExitCode {
    report(records::produce(&args))
}

/// Runs `causeway consume` and turns its outcome into an exit code.
pub fn run_consume(args: ConsumeArgs) -> ExitCode {
    report(records::consume(&args))
}

/// Runs a group command and turns its outcome into an exit code.
pub fn run_group(args: GroupArgs) -> ExitCode {
    report(group::run(&args.target, &args.http_access, args.command))
}

/// [`report`] for a command whose success is text to print.
fn report_output(outcome: anyhow::Result<String>) -> ExitCode {
    report(outcome.map(|output| print!("{output}")))
}

fn report(outcome: anyhow::Result<()>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
