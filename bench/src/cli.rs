//! Command-line interface: subcommands and their options.

use std::fmt;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Top-level command line.
#[derive(Debug, Parser)]
#[command(
    name = "causeway-bench",
    version,
    about = "Benchmark a Kafka-compatible broker with librdkafka: throughput, latency, CPU, memory"
)]
pub struct Cli {
    /// Benchmark mode.
    #[command(subcommand)]
    pub command: Command,
}

/// Benchmark modes.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Produce --records records as fast as possible and report the throughput.
    Produce(ProduceArgs),
    /// Read --records records from the beginning of every partition and report the throughput.
    Consume(ConsumeArgs),
    /// Produce at a fixed --rate while consuming in the same process; report end-to-end latency.
    E2e(E2eArgs),
    /// Tables: materializer throughput of JSON patch records, then paced HTTP point reads.
    Table(TableArgs),
    /// Regions: start N causeway regions, measure replication latency or throughput and CPU.
    Replication(crate::replication::ReplicationArgs),
}

/// Options shared by every mode.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Bootstrap broker list (host:port[,host:port...]).
    #[arg(long, env = "CAUSEWAY_BENCH_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,

    /// Topic to use.
    #[arg(long, default_value = "bench")]
    pub topic: String,

    /// Partition count used when the topic has to be created (an existing topic keeps its count).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(i32).range(1..=100_000))]
    pub partitions: i32,

    /// Replication factor used when the topic has to be created.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=100))]
    pub replication_factor: i32,

    /// Payload size of every record, in bytes.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=64 * 1024 * 1024))]
    pub record_bytes: u64,

    /// Producer linger.ms [default: 5; e2e: 0, so the client does not hold records back].
    #[arg(long)]
    pub linger_ms: Option<u64>,

    /// Producer batch size and acks.
    #[command(flatten)]
    pub producer: ProducerTuning,

    /// Producer compression codec.
    #[arg(long, value_enum, default_value_t = Compression::None)]
    pub compression: Compression,

    /// Extra librdkafka property for every client, as key=value (repeatable).
    #[arg(short = 'X', long = "rdkafka", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub rdkafka: Vec<(String, String)>,

    /// PID of the broker process: report its CPU seconds and RSS (read from /proc).
    #[arg(long, value_name = "PID")]
    pub broker_pid: Option<u32>,

    /// Seconds to wait for the broker to answer metadata / topic creation requests.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub connect_timeout_s: u64,

    /// Also print the results as one JSON line.
    #[arg(long)]
    pub json: bool,
}

/// Producer options shared by every mode that produces.
#[derive(Debug, Clone, Args)]
pub struct ProducerTuning {
    /// Producer batch size in bytes (librdkafka batch.size).
    #[arg(long, default_value_t = 1_048_576, value_parser = clap::value_parser!(u64).range(1..=2_147_483_647))]
    pub batch_bytes: u64,

    /// Producer acks: 0, 1, all (or -1).
    #[arg(long, default_value = "1", value_parser = parse_acks, allow_hyphen_values = true)]
    pub acks: Acks,
}

/// Options of `produce`.
#[derive(Debug, Clone, Args)]
pub struct ProduceArgs {
    /// Options shared by every mode.
    #[command(flatten)]
    pub common: CommonArgs,

    /// Number of records to send.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub records: u64,

    /// Give every record an 8-byte key (its sequence number); partitions stay round-robin.
    #[arg(long)]
    pub keys: bool,

    /// Delivery timeout in seconds (librdkafka message.timeout.ms) and flush timeout.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_s: u64,

    /// Idempotent producer: enable.idempotence=true, which forces acks=all
    /// (overrides --acks).
    #[arg(long)]
    pub idempotent: bool,

    /// Transactional producer with this transactional.id (implies --idempotent
    /// and acks=all): every --txn-records records are wrapped in
    /// begin_transaction / commit_transaction.
    #[arg(long, value_name = "ID")]
    pub transactional_id: Option<String>,

    /// Records per transaction (with --transactional-id).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1000,
        requires = "transactional_id",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub txn_records: u64,
}

/// How `produce` delivers its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// A plain producer with the configured `--acks`.
    Plain,
    /// enable.idempotence=true (acks=all).
    Idempotent,
    /// transactional.id set (idempotent, acks=all); `records_per_txn` records
    /// per committed transaction.
    Transactional {
        /// librdkafka `transactional.id`.
        id: String,
        /// Records between begin_transaction and commit_transaction.
        records_per_txn: u64,
    },
}

impl Delivery {
    /// Short name for reports: `plain`, `idempotent` or `transactional`.
    pub fn name(&self) -> &'static str {
        match self {
            Delivery::Plain => "plain",
            Delivery::Idempotent => "idempotent",
            Delivery::Transactional { .. } => "transactional",
        }
    }
}

impl ProduceArgs {
    /// The delivery mode selected by `--idempotent` / `--transactional-id`.
    pub fn delivery(&self) -> Delivery {
        match &self.transactional_id {
            Some(id) => Delivery::Transactional {
                id: id.clone(),
                records_per_txn: self.txn_records,
            },
            None if self.idempotent => Delivery::Idempotent,
            None => Delivery::Plain,
        }
    }
}

/// Options of `consume`.
#[derive(Debug, Clone, Args)]
pub struct ConsumeArgs {
    /// Options shared by every mode.
    #[command(flatten)]
    pub common: CommonArgs,

    /// Number of records to read (the topic must hold at least this many).
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub records: u64,

    /// Fail if --records records have not been read after this many seconds.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_s: u64,
}

/// Options of `e2e`.
#[derive(Debug, Clone, Args)]
pub struct E2eArgs {
    /// Options shared by every mode (--record-bytes must be at least 16).
    #[command(flatten)]
    pub common: CommonArgs,

    /// Target send rate in records per second.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub rate: u64,

    /// Measured duration in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub duration_s: u64,

    /// Seconds of traffic at the same rate before the measurement (not recorded).
    #[arg(long, default_value_t = 1)]
    pub warmup_s: u64,

    /// Delivery timeout in seconds, and how long to wait for the last records to arrive.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_s: u64,
}

/// Options of `table`.
#[derive(Debug, Clone, Args)]
#[command(
    mut_arg("topic", |a| a.default_value("bench-table")),
    mut_arg("record_bytes", |a| a.default_value("200"))
)]
pub struct TableArgs {
    /// Options shared by every mode (--record-bytes is the size of each JSON patch value).
    #[command(flatten)]
    pub common: CommonArgs,

    /// Broker HTTP listener (host:port) serving /metrics and /v1/tables.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http: String,

    /// Number of JSON patch records to produce.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub records: u64,

    /// Number of distinct row keys (k0 .. k<keys-1>); record i has key k<i % keys>.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub keys: u64,

    /// Point reads per second (the /healthz baseline runs at the same rate, interleaved).
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub read_rate: u64,

    /// Seconds of point reads (0 skips the read phase).
    #[arg(long, default_value_t = 10)]
    pub read_seconds: u64,

    /// Delivery timeout, and how long to wait for the materializer to catch up, in seconds.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_s: u64,
}

/// Producer acknowledgement level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// acks=0: fire and forget.
    None,
    /// acks=1: the leader has written the record.
    Leader,
    /// acks=all (-1): all in-sync replicas have the record.
    All,
}

/// Default `--linger-ms` of `produce` (and of the probe client of `consume`).
pub const DEFAULT_LINGER_MS: u64 = 5;

/// Default `--linger-ms` of `e2e`: a linger adds up to its value to every
/// record's latency at rates too low to fill batches.
pub const E2E_DEFAULT_LINGER_MS: u64 = 0;

impl CommonArgs {
    /// The producer linger.ms: `--linger-ms`, or `default` for the mode.
    pub fn linger_ms_or(&self, default: u64) -> u64 {
        self.linger_ms.unwrap_or(default)
    }
}

impl Acks {
    /// Value of librdkafka's `acks` property.
    pub fn as_config(self) -> &'static str {
        match self {
            Acks::None => "0",
            Acks::Leader => "1",
            Acks::All => "all",
        }
    }
}

impl fmt::Display for Acks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_config())
    }
}

/// Parses `--acks`: 0, 1, all or -1.
pub fn parse_acks(s: &str) -> Result<Acks, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "0" => Ok(Acks::None),
        "1" => Ok(Acks::Leader),
        "all" | "-1" => Ok(Acks::All),
        other => Err(format!("invalid acks '{other}': expected 0, 1, all or -1")),
    }
}

/// Parses a `-X key=value` librdkafka property.
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("invalid property '{s}': expected key=value")),
    }
}

/// Producer compression codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Compression {
    /// No compression.
    None,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl Compression {
    /// Value of librdkafka's `compression.codec` property.
    pub fn as_config(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_config())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn acks_parsing() {
        assert_eq!(parse_acks("0"), Ok(Acks::None));
        assert_eq!(parse_acks("1"), Ok(Acks::Leader));
        assert_eq!(parse_acks("all"), Ok(Acks::All));
        assert_eq!(parse_acks("ALL"), Ok(Acks::All));
        assert_eq!(parse_acks("-1"), Ok(Acks::All));
        assert!(parse_acks("2").is_err());
        assert_eq!(Acks::All.as_config(), "all");
    }

    #[test]
    fn key_value_parsing() {
        assert_eq!(
            parse_key_value("socket.nagle.disable=true"),
            Ok(("socket.nagle.disable".to_string(), "true".to_string()))
        );
        assert_eq!(
            parse_key_value("a=b=c"),
            Ok(("a".to_string(), "b=c".to_string()))
        );
        assert!(parse_key_value("novalue").is_err());
        assert!(parse_key_value("=x").is_err());
    }

    #[test]
    fn defaults() {
        let cli = Cli::try_parse_from(["causeway-bench", "produce"]).expect("parse");
        let Command::Produce(args) = cli.command else {
            panic!("expected produce");
        };
        assert_eq!(args.common.brokers, "127.0.0.1:9092");
        assert_eq!(args.common.topic, "bench");
        assert_eq!(args.common.partitions, 6);
        assert_eq!(args.records, 1_000_000);
        assert_eq!(args.common.record_bytes, 100);
        assert_eq!(args.common.linger_ms_or(DEFAULT_LINGER_MS), 5);
        assert_eq!(args.common.linger_ms, None);
        assert_eq!(args.common.producer.batch_bytes, 1_048_576);
        assert_eq!(args.common.producer.acks, Acks::Leader);
        assert_eq!(args.common.compression, Compression::None);
        assert_eq!(args.timeout_s, 30);

        let cli = Cli::try_parse_from(["causeway-bench", "e2e", "--acks", "-1", "--json"])
            .expect("parse");
        let Command::E2e(args) = cli.command else {
            panic!("expected e2e");
        };
        assert_eq!(args.rate, 20_000);
        assert_eq!(args.duration_s, 10);
        assert_eq!(args.common.producer.acks, Acks::All);
        assert!(args.common.json);

        let cli = Cli::try_parse_from(["causeway-bench", "consume", "--acks=-1", "-X", "a=b"])
            .expect("parse");
        let Command::Consume(args) = cli.command else {
            panic!("expected consume");
        };
        assert_eq!(args.timeout_s, 120);
        assert_eq!(args.common.producer.acks, Acks::All);
        assert_eq!(
            args.common.rdkafka,
            vec![("a".to_string(), "b".to_string())]
        );
        assert!(Cli::try_parse_from(["causeway-bench", "produce", "--acks", "2"]).is_err());
    }

    #[test]
    fn table_defaults() {
        let cli = Cli::try_parse_from(["causeway-bench", "table"]).expect("parse");
        let Command::Table(args) = cli.command else {
            panic!("expected table");
        };
        assert_eq!(args.common.topic, "bench-table");
        assert_eq!(args.common.record_bytes, 200);
        assert_eq!(args.http, "127.0.0.1:8080");
        assert_eq!(args.records, 1_000_000);
        assert_eq!(args.keys, 10_000);
        assert_eq!(args.read_rate, 5_000);
        assert_eq!(args.read_seconds, 10);
        // The other modes keep their defaults.
        let cli = Cli::try_parse_from(["causeway-bench", "produce"]).expect("parse");
        let Command::Produce(args) = cli.command else {
            panic!("expected produce");
        };
        assert_eq!(args.common.topic, "bench");
        assert_eq!(args.common.record_bytes, 100);
        let cli = Cli::try_parse_from([
            "causeway-bench",
            "table",
            "--topic",
            "t",
            "--record-bytes",
            "64",
            "--http",
            "127.0.0.1:1",
        ])
        .expect("parse");
        let Command::Table(args) = cli.command else {
            panic!("expected table");
        };
        assert_eq!(args.common.topic, "t");
        assert_eq!(args.common.record_bytes, 64);
        assert_eq!(args.http, "127.0.0.1:1");
    }

    fn produce_args(argv: &[&str]) -> Result<ProduceArgs, clap::Error> {
        let mut full = vec!["causeway-bench", "produce"];
        full.extend_from_slice(argv);
        let cli = Cli::try_parse_from(full)?;
        let Command::Produce(args) = cli.command else {
            panic!("expected produce");
        };
        Ok(args)
    }

    #[test]
    fn delivery_modes() {
        assert_eq!(
            produce_args(&[]).expect("parse").delivery(),
            Delivery::Plain
        );
        let args = produce_args(&["--idempotent"]).expect("parse");
        assert_eq!(args.delivery(), Delivery::Idempotent);
        assert_eq!(args.delivery().name(), "idempotent");
        let args = produce_args(&["--transactional-id", "t1"]).expect("parse");
        assert_eq!(
            args.delivery(),
            Delivery::Transactional {
                id: "t1".into(),
                records_per_txn: 1000
            }
        );
        // A transactional id wins over --idempotent (it implies it).
        let args = produce_args(&[
            "--idempotent",
            "--transactional-id",
            "t2",
            "--txn-records",
            "50",
        ])
        .expect("parse");
        assert_eq!(
            args.delivery(),
            Delivery::Transactional {
                id: "t2".into(),
                records_per_txn: 50
            }
        );
        // --txn-records needs a transactional id, and at least 1.
        assert!(produce_args(&["--txn-records", "10"]).is_err());
        assert!(produce_args(&["--transactional-id", "t", "--txn-records", "0"]).is_err());
    }
}
