//! The Causeway broker: the only crate that opens sockets or reads configuration.
//!
//! - [`config`]: flags, environment and TOML file;
//! - [`cli`]: admin subcommands that talk to a running broker, and `meta rebuild`, which
//!   works offline on a stopped broker's data dir;
//! - [`server`]: listeners, background tasks and graceful shutdown;
//! - [`connection`]: one client connection's frame loop;
//! - [`connection_limits`]: connections per address and buffered request bytes, shared by all;
//! - [`handlers`]: one module per Kafka API;
//! - [`topics`] and [`broker`]: the shared state handlers act on;
//! - [`groups`]: the consumer group coordinator and committed offsets;
//! - [`http`] and [`metrics`]: what operators scrape and probe;
//! - [`http_auth`]: who an HTTP request comes from and what it may read;
//! - [`maintenance`]: retention and segment rolls in the background;
//! - [`scrub`]: reading closed segments in the background to find damage before readers do;
//! - [`blocking`]: one bounded lane per kind of blocking work;
//! - [`tables`]: compacted topics materialized as CRDT rows, served over HTTP;
//! - [`transactions`]: the transaction coordinator;
//! - [`quota`]: client quotas and the sensors measuring clients against them.

pub mod acl;
pub mod background;
pub mod blocking;
pub mod broker;
pub mod cli;
pub mod config;
pub mod connection;
pub mod connection_limits;
pub mod flusher;
pub mod group_configs;
pub mod groups;
pub mod handlers;
pub mod http;
pub mod http_auth;
pub mod listeners;
pub mod maintenance;
pub mod metrics;
pub mod open_files;
pub mod partition_handle;
pub mod positions;
pub mod producer_ids;
pub mod quota;
pub mod replication;
pub mod sasl;
pub mod scrub;
pub mod security_state;
pub mod server;
pub mod state_gauges;
pub mod tables;
pub mod tls;
pub mod topics;
pub mod transactions;
pub mod users;
pub mod wall_clock;

use std::process::ExitCode;

use config::{Command, LogFormat};

/// Entry point of the `causeway` binary.
pub fn main() -> ExitCode {
    let cli = match config::parse_cli() {
        Ok(cli) => cli,
        Err(error) => {
            eprintln!("causeway: {error:#}");
            return ExitCode::from(2);
        }
    };
    let options = match cli.command {
        Some(Command::Serve(options)) => options,
        Some(Command::Topic(args)) => return cli::run_topic(args),
        Some(Command::Group(args)) => return cli::run_group(args),
        Some(Command::Produce(args)) => return cli::run_produce(args),
        Some(Command::Consume(args)) => return cli::run_consume(args),
        Some(Command::Table(args)) => return cli::run_table(args),
        Some(Command::Region(args)) => return cli::run_region(args),
        Some(Command::Meta(args)) => return cli::run_meta(args),
        Some(Command::User(args)) => return cli::run_user(args),
        Some(Command::Acl(args)) => return cli::run_acl(args),
        Some(Command::Certs(args)) => return cli::run_certs(args),
        None => cli.serve,
    };
    init_logging(options.log_format);
    open_files::raise_limit(&options);
    causeway_storage::set_open_segment_files_max(options.max_open_segment_files as usize);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(blocking::pool_threads())
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("causeway: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(server::run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CAUSEWAY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
