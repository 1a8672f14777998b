//! Broker configuration: command-line flags, `CAUSEWAY_*` environment variables and a TOML file.
//! Flags win over the environment, the environment over the file, the file over defaults. The
//! file uses the flag names with `_` for `-` (`data_dir = "/var/lib/causeway"`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};

/// Causeway: a Kafka-compatible broker with active-active causal replication between regions.
#[derive(Debug, Parser)]
#[command(name = "causeway", version, about)]
pub struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of the broker when no subcommand is given.
    #[command(flatten)]
    pub serve: BrokerOptions,
}

/// Subcommands of the `causeway` binary.
#[derive(Debug, Subcommand)]
// Parsed once per process: the size of the `Serve` variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Run the broker (the default).
    Serve(BrokerOptions),
    /// Create, list, describe, delete topics and change their configs on a running broker.
    Topic(crate::cli::TopicArgs),
    /// List consumer groups, show one's members, assignments, offsets and lag, delete or move
    /// its offsets.
    Group(crate::cli::GroupArgs),
    /// Produce one record per line of standard input to a partition (acks=all).
    Produce(crate::cli::ProduceArgs),
    /// Print a partition's records, one value (or JSON object) per line.
    Consume(crate::cli::ConsumeArgs),
    /// Read table rows (compacted topics) from a running broker's HTTP listener.
    Table(crate::cli::TableArgs),
    /// Show this region's replication state: its vector clock and each peer link.
    Region(crate::cli::RegionArgs),
    /// Offline repair of a stopped broker's metadata database (`meta rebuild`).
    Meta(crate::cli::MetaArgs),
    /// Create, delete and list the SASL/SCRAM users of a stopped broker's data dir.
    User(crate::cli::UserArgs),
    /// Grants, revokes and lists ACL bindings of a stopped broker's data dir (offline).
    Acl(crate::cli::AclArgs),
    /// Makes the certificates of a mesh of regions (an authority, one per region) offline.
    Certs(crate::cli::CertsArgs),
}

/// Format of log lines on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Every broker option. Field names double as TOML keys; the `env` names are the variables.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct BrokerOptions {
    /// TOML file with any of these options (flag names with `_` instead of `-`).
    #[arg(long, env = "CAUSEWAY_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Directory holding the partition logs and the metadata database.
    #[arg(long, env = "CAUSEWAY_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Address the Kafka protocol listener binds.
    #[arg(long, env = "CAUSEWAY_KAFKA_LISTEN", default_value = "127.0.0.1:9092")]
    pub kafka_listen: SocketAddr,
    /// HOST:PORT that clients are told to connect to (Metadata); the Kafka listener if unset.
    #[arg(long, env = "CAUSEWAY_ADVERTISED_ADDR")]
    pub advertised_addr: Option<String>,
    /// Another Kafka listener, `NAME=PROTOCOL://HOST:PORT` (Kafka's `listeners`), each with its
    /// own security protocol, beside the one of `--kafka-listen`; repeatable.
    #[arg(long = "listener", env = "CAUSEWAY_LISTENERS", value_delimiter = ',')]
    #[serde(default)]
    pub listeners: Vec<String>,
    /// What clients of a `--listener` are told to connect to, `NAME=HOST:PORT` (Kafka's
    /// `advertised.listeners`); the listener's own address if unset. Repeatable.
    #[arg(
        long = "advertised-listener",
        env = "CAUSEWAY_ADVERTISED_LISTENERS",
        value_delimiter = ','
    )]
    #[serde(default)]
    pub advertised_listeners: Vec<String>,
    /// Address the HTTP listener (metrics, health, tables) binds.
    #[arg(long, env = "CAUSEWAY_HTTP_LISTEN", default_value = "127.0.0.1:8080")]
    pub http_listen: SocketAddr,
    /// Serve the HTTP listener over TLS with `--ssl-certificate-file` (HTTPS), so Basic
    /// credentials and table rows are not sent in the clear; reloaded on SIGHUP like the Kafka
    /// listeners' certificate.
    #[arg(long, env = "CAUSEWAY_HTTP_TLS", default_value_t = false, action = clap::ArgAction::Set)]
    pub http_tls: bool,
    /// Name of this region; mapped to a stable small id stored in the data dir on first start.
    #[arg(long, env = "CAUSEWAY_REGION", default_value = "local")]
    pub region: String,
    /// A peer region as NAME@HOST:PORT (its Kafka listener); repeatable.
    #[arg(long = "peer", env = "CAUSEWAY_PEERS", value_delimiter = ',')]
    #[serde(default)]
    pub peers: Vec<String>,
    /// Shared secret every region presents when it pulls from a peer; required with `--peer`
    /// unless `--replication-tls`. Over plaintext links it travels in the clear: for test
    /// setups and private networks only.
    #[arg(long, env = "CAUSEWAY_REPLICATION_SECRET")]
    pub replication_secret: Option<String>,
    /// Links to peers use mutual TLS: they connect to the peer's TLS listener presenting this
    /// region's certificate (`--ssl-certificate-file`), check the peer's against
    /// `--ssl-client-ca-file`, and pulls are served only to a connection whose client
    /// certificate's common name is the region the pull claims to be.
    #[arg(long, env = "CAUSEWAY_REPLICATION_TLS", default_value_t = false, action = clap::ArgAction::Set)]
    pub replication_tls: bool,
    /// The peer (a `--peer` name) a region joining the mesh copies its data from: on a data dir
    /// holding no topics, the peer's catalog and every partition's retained log are copied before
    /// anything is served, so the region starts with what the peer's retention or compaction
    /// removed (plain pulls could never deliver it). Ignored on a data dir that holds topics.
    #[arg(long, env = "CAUSEWAY_SEED_FROM")]
    pub seed_from: Option<String>,
    /// How far a replicated batch's clock stamp may run ahead of local time before the batch is
    /// refused (it is accepted later, once local time catches up).
    #[arg(long, env = "CAUSEWAY_MAX_CLOCK_SKEW_MS", default_value_t = 10_000)]
    pub max_clock_skew_ms: u64,
    /// After how long without contact a peer region is reported stale and no longer holds back
    /// retention and compaction (it must then be re-seeded if it missed deleted data).
    #[arg(
        long,
        env = "CAUSEWAY_REGION_STALE_AFTER_MS",
        default_value_t = 3_600_000
    )]
    pub region_stale_after_ms: u64,
    /// Make `/readyz` answer 503 while replication is degraded (every peer refuses this region's
    /// pulls), instead of only saying so in its body: for load balancers that should send
    /// clients to a region whose links work.
    #[arg(long, env = "CAUSEWAY_READYZ_FAILS_ON_DEGRADED_REPLICATION", default_value_t = false, action = clap::ArgAction::Set)]
    pub readyz_fails_on_degraded_replication: bool,
    /// Partitions of a topic created automatically or without a partition count (`num.partitions`).
    #[arg(long, env = "CAUSEWAY_NUM_PARTITIONS", default_value_t = 1)]
    pub num_partitions: u32,
    /// Most partitions this broker hosts over all topics; creating or growing topics past it is
    /// refused with INVALID_PARTITIONS (each partition holds open files and memory).
    #[arg(long, env = "CAUSEWAY_MAX_PARTITIONS", default_value_t = 4_000)]
    pub max_partitions: u32,
    /// Most partitions one topic may have; creating or growing a topic past it is refused with
    /// INVALID_PARTITIONS, and a peer's topic past it is held back.
    #[arg(
        long,
        env = "CAUSEWAY_MAX_PARTITIONS_PER_TOPIC",
        default_value_t = 1_000
    )]
    pub max_partitions_per_topic: u32,
    /// Most new partitions one request may create (CreateTopics, CreatePartitions, Metadata and
    /// Produce with auto-creation); past it topics are refused with THROTTLING_QUOTA_EXCEEDED.
    #[arg(
        long,
        env = "CAUSEWAY_MAX_PARTITIONS_PER_REQUEST",
        default_value_t = 1_000
    )]
    pub max_partitions_per_request: u32,
    /// Most producers whose sequence state one partition keeps; past it the partition forgets
    /// the producer that wrote least recently (none with a transaction open), so a client asking
    /// for producer ids in a loop cannot grow memory without bound.
    #[arg(
        long,
        env = "CAUSEWAY_MAX_PRODUCERS_PER_PARTITION",
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_producers_per_partition: u32,
    /// Most files of closed segments held open at once for reading (least recently used ones
    /// are closed), so open descriptors do not grow with the data retained.
    #[arg(long, env = "CAUSEWAY_MAX_OPEN_SEGMENT_FILES", default_value_t = 8_192)]
    pub max_open_segment_files: u32,
    /// Create unknown topics on Metadata and Produce (`auto.create.topics.enable`).
    #[arg(long, env = "CAUSEWAY_AUTO_CREATE_TOPICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub auto_create_topics: bool,
    /// Largest request frame accepted; a larger one closes the connection (`socket.request.max.bytes`).
    #[arg(
        long,
        env = "CAUSEWAY_SOCKET_REQUEST_MAX_BYTES",
        default_value_t = 104_857_600
    )]
    pub socket_request_max_bytes: u32,
    /// Most client connections open at once (`max.connections`); peer regions get a small
    /// reserve beyond it.
    #[arg(long, env = "CAUSEWAY_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: u32,
    /// Most connections open at once from one client address (`max.connections.per.ip`).
    #[arg(long, env = "CAUSEWAY_MAX_CONNECTIONS_PER_IP", default_value_t = 1_000)]
    pub max_connections_per_ip: u32,
    /// A connection that sends nothing for this long is closed (`connections.max.idle.ms`).
    #[arg(
        long,
        env = "CAUSEWAY_CONNECTIONS_MAX_IDLE_MS",
        default_value_t = 600_000
    )]
    pub connections_max_idle_ms: u64,
    /// Most bytes of requests read but not yet answered, across all connections
    /// (`queued.max.request.bytes`); readers wait for room, and one that waits 30 s is closed.
    #[arg(
        long,
        env = "CAUSEWAY_QUEUED_MAX_REQUEST_BYTES",
        default_value_t = 536_870_912
    )]
    pub queued_max_request_bytes: u64,
    /// Most table change feeds (`GET /v1/tables/{topic}/changes`) open at once; more are
    /// answered 503. Each open feed holds its table's rows in memory.
    #[arg(long, env = "CAUSEWAY_MAX_CHANGE_FEEDS", default_value_t = 256)]
    pub max_change_feeds: u32,
    /// How often members of consumer-protocol groups (KIP-848, `group.protocol=consumer`) are
    /// told to heartbeat (`group.consumer.heartbeat.interval.ms`); a partition moves between
    /// members within about two of these.
    #[arg(
        long,
        env = "CAUSEWAY_GROUP_CONSUMER_HEARTBEAT_INTERVAL_MS",
        default_value_t = 5_000,
        value_parser = clap::value_parser!(i32).range(100..=60_000)
    )]
    pub group_consumer_heartbeat_interval_ms: i32,
    /// Most bytes of rows all open change feeds hold together (each keeps its own copy of its
    /// table's rows, so that many feeds on a large table cannot exhaust memory); a feed whose
    /// rows would pass it is ended with an error line.
    #[arg(
        long,
        env = "CAUSEWAY_CHANGE_FEEDS_MEMORY_BYTES",
        default_value_t = 268_435_456
    )]
    pub change_feeds_memory_bytes: u64,
    /// Default `max.message.bytes` of topics: the largest record batch accepted (`message.max.bytes`).
    #[arg(long, env = "CAUSEWAY_MESSAGE_MAX_BYTES", default_value_t = 1_048_588)]
    pub message_max_bytes: u32,
    /// Smallest `segment.bytes` a topic override takes effect with; smaller ones are raised to
    /// it (1 MiB, Kafka 4's minimum), so no topic makes a segment per batch.
    #[arg(
        long,
        env = "CAUSEWAY_LOG_SEGMENT_BYTES_MIN",
        default_value_t = 1_048_576
    )]
    pub log_segment_bytes_min: u64,
    /// Smallest `segment.ms` a topic override takes effect with; smaller ones are raised to it
    /// (10 minutes, as Redpanda's `log_segment_ms_min`).
    #[arg(long, env = "CAUSEWAY_LOG_SEGMENT_MS_MIN", default_value_t = 600_000)]
    pub log_segment_ms_min: u64,
    /// How often segments are rolled by age and deleted by retention (`log.retention.check.interval.ms`).
    #[arg(
        long,
        env = "CAUSEWAY_LOG_RETENTION_CHECK_INTERVAL_MS",
        default_value_t = 300_000
    )]
    pub log_retention_check_interval_ms: u64,
    /// Most bytes per second the log cleaner reads plus writes when it compacts tables, so
    /// compaction cannot starve produce and fetch of disk bandwidth (52428800 = 50 MiB/s; 0 = no limit).
    #[arg(
        long,
        env = "CAUSEWAY_LOG_CLEANER_IO_BYTES_PER_SEC",
        default_value_t = 52_428_800
    )]
    pub log_cleaner_io_bytes_per_sec: u64,
    /// About the most memory a compaction pass's rows may take (268435456 = 256 MiB; Kafka's
    /// `log.cleaner.dedupe.buffer.size` bounds the same): a pass whose rows outgrow it compacts
    /// the segments read before that, so a table with more keys than memory cannot exhaust it.
    #[arg(
        long,
        env = "CAUSEWAY_LOG_CLEANER_MEMORY_BYTES",
        default_value_t = 268_435_456
    )]
    pub log_cleaner_memory_bytes: u64,
    /// Most bytes per second the background scrub reads while it checks closed segments for
    /// damage (16777216 = 16 MiB/s; 0 = no scrub).
    #[arg(
        long,
        env = "CAUSEWAY_SCRUB_BYTES_PER_SEC",
        default_value_t = 16_777_216
    )]
    pub scrub_bytes_per_sec: u64,
    /// Least time from the start of one scrub pass over every closed segment to the start of
    /// the next (86400000 = one day).
    #[arg(long, env = "CAUSEWAY_SCRUB_INTERVAL_MS", default_value_t = 86_400_000)]
    pub scrub_interval_ms: u64,
    /// Longest a graceful shutdown waits for in-flight requests before closing the logs.
    #[arg(long, env = "CAUSEWAY_SHUTDOWN_TIMEOUT_MS", default_value_t = 10_000)]
    pub shutdown_timeout_ms: u64,
    /// How long the first rebalance of an empty group waits for more members to join
    /// (`group.initial.rebalance.delay.ms`).
    #[arg(
        long,
        env = "CAUSEWAY_GROUP_INITIAL_REBALANCE_DELAY_MS",
        default_value_t = 3_000
    )]
    pub group_initial_rebalance_delay_ms: u64,
    /// How long committed offsets of an empty group are kept (`offsets.retention.minutes`).
    #[arg(
        long,
        env = "CAUSEWAY_OFFSETS_RETENTION_MINUTES",
        default_value_t = 10_080
    )]
    pub offsets_retention_minutes: u64,
    /// Longest transaction timeout a producer may ask for (`transaction.max.timeout.ms`). It
    /// also bounds how long another region waits before it aborts a transaction whose origin
    /// region went stale, since the origin would have ended it by then.
    #[arg(
        long,
        env = "CAUSEWAY_TRANSACTION_MAX_TIMEOUT_MS",
        default_value_t = 900_000,
        value_parser = clap::value_parser!(u32).range(1..=i32::MAX as i64)
    )]
    pub transaction_max_timeout_ms: u32,
    /// How long a transactional id with no transaction open is kept after its last change
    /// (`transactional.id.expiration.ms`): its record is then removed, so ids a client makes up
    /// in a loop cannot grow the catalog and the coordinator's memory without bound.
    #[arg(
        long,
        env = "CAUSEWAY_TRANSACTIONAL_ID_EXPIRATION_MS",
        default_value_t = 604_800_000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub transactional_id_expiration_ms: u64,
    /// Log line format on stderr.
    #[arg(long, env = "CAUSEWAY_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// How clients of the Kafka listener authenticate: not at all, or with SASL before any
    /// other request (Kafka's `security.protocol` of the listener).
    #[arg(
        long,
        env = "CAUSEWAY_KAFKA_SECURITY_PROTOCOL",
        value_enum,
        default_value = "plaintext"
    )]
    pub kafka_security_protocol: SecurityProtocol,
    /// SASL mechanisms a SASL listener offers (Kafka's `sasl.enabled.mechanisms`). PLAIN sends
    /// the password itself, so it is off unless named.
    #[arg(
        long,
        env = "CAUSEWAY_SASL_ENABLED_MECHANISMS",
        value_delimiter = ',',
        default_value = "SCRAM-SHA-256,SCRAM-SHA-512"
    )]
    pub sasl_enabled_mechanisms: Vec<String>,
    /// How long a SASL authentication lasts before the client must authenticate again on the
    /// same connection (Kafka's `connections.max.reauth.ms`, KIP-368; 0: for the connection's
    /// life), so a deleted user or changed password takes effect on open connections too.
    #[arg(long, env = "CAUSEWAY_CONNECTIONS_MAX_REAUTH_MS", default_value_t = 0)]
    pub connections_max_reauth_ms: u64,
    /// PEM certificate chain TLS listeners present (server certificate first); re-read on
    /// SIGHUP, so a renewed certificate needs no restart.
    #[arg(long, env = "CAUSEWAY_SSL_CERTIFICATE_FILE")]
    pub ssl_certificate_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `--ssl-certificate-file`; re-read on SIGHUP.
    #[arg(long, env = "CAUSEWAY_SSL_PRIVATE_KEY_FILE")]
    pub ssl_private_key_file: Option<PathBuf>,
    /// Whether TLS clients present a certificate (Kafka's `ssl.client.auth`); the principal of
    /// a client that does is `User:` and the certificate's subject (`User:CN=alice,O=acme`).
    #[arg(
        long,
        env = "CAUSEWAY_SSL_CLIENT_AUTH",
        value_enum,
        default_value = "none"
    )]
    pub ssl_client_auth: ClientAuth,
    /// PEM certificates of the authorities client certificates must chain to; needed unless
    /// `--ssl-client-auth none`. Re-read on SIGHUP.
    #[arg(long, env = "CAUSEWAY_SSL_CLIENT_CA_FILE")]
    pub ssl_client_ca_file: Option<PathBuf>,
    /// Whether requests are checked against ACLs (Kafka's `authorizer.class.name`): `off`
    /// serves every client everything; `acls` serves only what a binding allows.
    #[arg(
        long,
        env = "CAUSEWAY_AUTHORIZATION",
        value_enum,
        default_value = "off"
    )]
    pub authorization: Authorization,
    /// Principals allowed everything when authorization is on (Kafka's `super.users`), such as
    /// `User:admin`; separated by `,` or `;`.
    #[arg(long, env = "CAUSEWAY_SUPER_USERS", value_delimiter = ',')]
    pub super_users: Vec<String>,
    /// Whether a resource no ACL binding matches is open to every principal (Kafka's
    /// `allow.everyone.if.no.acl.found`); off, so a new topic is closed until granted.
    #[arg(long, env = "CAUSEWAY_ALLOW_EVERYONE_IF_NO_ACL_FOUND", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_everyone_if_no_acl_found: bool,
    /// HTTP authentication (`--http-auth`, `--http-bearer-tokens-file`, `--http-auth-probes`).
    #[command(flatten)]
    #[serde(flatten)]
    pub http_auth: crate::http_auth::HttpAuthOptions,
}

/// Whether the broker authorizes requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Authorization {
    /// Every client may do everything.
    Off,
    /// Every request is checked against the ACL bindings (`docs/security.md`).
    Acls,
}

/// How a listener's clients authenticate, named as Kafka's `security.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SecurityProtocol {
    /// No authentication: every client is the anonymous principal.
    #[value(name = "plaintext", alias = "PLAINTEXT")]
    Plaintext,
    /// SASL authentication (SaslHandshake, then SaslAuthenticate) before any other request.
    #[value(name = "sasl_plaintext", alias = "SASL_PLAINTEXT")]
    SaslPlaintext,
    /// TLS; the principal is the client certificate's subject when one is asked for, else
    /// anonymous.
    #[value(name = "ssl", alias = "SSL")]
    Ssl,
    /// TLS, then SASL authentication inside it.
    #[value(name = "sasl_ssl", alias = "SASL_SSL")]
    SaslSsl,
}

impl SecurityProtocol {
    /// Whether clients must authenticate with SASL before any other request.
    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }

    /// Whether connections start with a TLS handshake.
    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }
}

/// Whether TLS clients must present a certificate (Kafka's `ssl.client.auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// No client certificate is asked for.
    None,
    /// A certificate is asked for; a client without one is anonymous (with SSL) or must use
    /// SASL (with SASL_SSL).
    Requested,
    /// A client without a certificate signed by `--ssl-client-ca-file` is refused in the
    /// handshake.
    Required,
}

impl BrokerOptions {
    /// The address put in Metadata responses.
    pub fn advertised(&self) -> (String, i32) {
        if let Some(addr) = &self.advertised_addr {
            if let Some((host, port)) = addr.rsplit_once(':') {
                if let Ok(port) = port.parse() {
                    return (host.to_string(), port);
                }
            }
        }
        (
            self.kafka_listen.ip().to_string(),
            i32::from(self.kafka_listen.port()),
        )
    }

    /// Checks what clap cannot: the peer syntax and the advertised address.
    pub fn validate(&self) -> anyhow::Result<()> {
        for peer in &self.peers {
            let Some((name, addr)) = peer.split_once('@') else {
                bail!("--peer {peer:?} is not NAME@HOST:PORT");
            };
            if name.is_empty() || addr.rsplit_once(':').is_none() {
                bail!("--peer {peer:?} is not NAME@HOST:PORT");
            }
        }
        if let Some(seed) = &self.seed_from {
            if !self
                .peers
                .iter()
                .any(|p| p.split_once('@').map(|(n, _)| n) == Some(seed))
            {
                bail!("--seed-from {seed:?} names no --peer");
            }
        }
        if let Some(addr) = &self.advertised_addr {
            match addr.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
                _ => bail!("--advertised-addr {addr:?} is not HOST:PORT"),
            }
        }
        let listeners = crate::listeners::listeners(self)?;
        if listeners.iter().any(|l| l.protocol.uses_tls())
            && (self.ssl_certificate_file.is_none() || self.ssl_private_key_file.is_none())
        {
            bail!("a TLS listener needs --ssl-certificate-file and --ssl-private-key-file");
        }
        if self.http_tls
            && (self.ssl_certificate_file.is_none() || self.ssl_private_key_file.is_none())
        {
            bail!("--http-tls needs --ssl-certificate-file and --ssl-private-key-file");
        }
        if self.replication_tls
            && (self.ssl_certificate_file.is_none()
                || self.ssl_private_key_file.is_none()
                || self.ssl_client_ca_file.is_none())
        {
            bail!("--replication-tls needs --ssl-certificate-file, --ssl-private-key-file and --ssl-client-ca-file");
        }
        if self.ssl_client_auth != ClientAuth::None && self.ssl_client_ca_file.is_none() {
            bail!("--ssl-client-auth other than none needs --ssl-client-ca-file");
        }
        if self.queued_max_request_bytes < u64::from(self.socket_request_max_bytes) {
            bail!("--queued-max-request-bytes must be at least --socket-request-max-bytes");
        }
        if self.num_partitions == 0 {
            bail!("--num-partitions must be at least 1");
        }
        Ok(())
    }
}

/// Parses the command line and merges in the environment and the config file.
pub fn parse_cli() -> anyhow::Result<Cli> {
    parse_cli_from(std::env::args_os())
}

/// [`parse_cli`] for an explicit argument list (tests).
pub fn parse_cli_from<I, T>(args: I) -> anyhow::Result<Cli>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = Cli::command().get_matches_from(args);
    let mut cli = Cli::from_arg_matches(&matches)?;
    let (options, options_matches) = match &mut cli.command {
        Some(Command::Serve(options)) => {
            let sub = matches
                .subcommand_matches("serve")
                .context("serve arguments")?;
            (options, sub)
        }
        None => (&mut cli.serve, &matches),
        Some(_) => return Ok(cli),
    };
    if let Some(path) = options.config.clone() {
        *options = merge_file(options, options_matches, &path)?;
    }
    options.validate()?;
    Ok(cli)
}

/// Replaces every option that still has its default value with the file's value.
fn merge_file(
    options: &BrokerOptions,
    matches: &ArgMatches,
    path: &Path,
) -> anyhow::Result<BrokerOptions> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    let file: BTreeMap<String, toml::Value> =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let current = toml::Value::try_from(options).context("options as TOML")?;
    let toml::Value::Table(mut merged) = current else {
        bail!("options did not serialize as a table");
    };
    for (key, value) in file {
        if !merged.contains_key(&key) && !is_optional_option(&key) {
            bail!("{}: unknown option {key:?}", path.display());
        }
        let from_default = matches!(
            matches.value_source(&key),
            None | Some(ValueSource::DefaultValue)
        );
        if from_default {
            merged.insert(key, value);
        }
    }
    let mut result: BrokerOptions = toml::Value::Table(merged)
        .try_into()
        .with_context(|| format!("invalid value in {}", path.display()))?;
    result.config = Some(path.to_path_buf());
    Ok(result)
}

/// Options without a default (`--advertised-addr`, the TLS files, ...), absent from the
/// serialized table until set: any option of `causeway serve` but the config file itself.
fn is_optional_option(key: &str) -> bool {
    key != "config"
        && Cli::command()
            .find_subcommand("serve")
            .is_some_and(|serve| serve.get_arguments().any(|arg| arg.get_id() == key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn options(args: &[&str]) -> BrokerOptions {
        let mut argv = vec!["causeway"];
        argv.extend_from_slice(args);
        parse_cli_from(argv).expect("parses").serve
    }

    #[test]
    fn defaults_match_the_design() {
        let o = options(&[]);
        assert_eq!(o.data_dir, PathBuf::from("./data"));
        assert_eq!(o.kafka_listen.to_string(), "127.0.0.1:9092");
        assert_eq!(o.http_listen.to_string(), "127.0.0.1:8080");
        assert_eq!(o.region, "local");
        assert!(o.peers.is_empty());
        assert!(o.auto_create_topics);
    }

    #[test]
    fn file_fills_defaults_but_flags_win() {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        writeln!(
            file,
            "region = \"eu\"\nnum_partitions = 6\nadvertised_addr = \"kafka.example:9092\"\npeers = [\"us@10.0.0.1:9092\"]"
        )
        .expect("write");
        let path = file.path().to_str().expect("utf8 path");
        let o = options(&["--config", path, "--num-partitions", "3"]);
        assert_eq!(o.region, "eu");
        assert_eq!(o.num_partitions, 3);
        assert_eq!(o.advertised(), ("kafka.example".to_string(), 9092));
        assert_eq!(o.peers, vec!["us@10.0.0.1:9092".to_string()]);
    }

    #[test]
    fn unknown_file_option_is_an_error() {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        writeln!(file, "no_such_option = 1").expect("write");
        let path = file.path().to_str().expect("utf8 path");
        assert!(parse_cli_from(["causeway", "--config", path]).is_err());
    }

    #[test]
    fn malformed_peer_is_an_error() {
        assert!(parse_cli_from(["causeway", "--peer", "nohost"]).is_err());
    }
}
