//! `replication`: starts N regions as `causeway` child processes on loopback, each with its own
//! data directory, every region a peer of every other, and measures active-active replication:
//! latency at a fixed rate (`--mode latency`, [`latency`]) or the time and CPU cost until every
//! region holds a fixed volume (`--mode throughput`, [`throughput`]).
//!
//! The regions are stopped with SIGTERM (SIGKILL after 20 s) and their data is deleted at the end,
//! also when the run fails ([`regions`]).

mod latency;
mod regions;
mod throughput;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, ValueEnum};
use rdkafka::producer::{BaseProducer, Producer};
use serde_json::Value;

use crate::cli::{parse_key_value, ProducerTuning};
use crate::kafka::{self, BenchContext};
use regions::Regions;

/// Bytes in a megabyte (10^6) and a gigabyte (10^9).
const MB: f64 = 1e6;
const GB: f64 = 1e9;

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Replication latency at a fixed rate, against local end-to-end latency.
    Latency,
    /// Time, throughput and CPU cost until every region holds a fixed volume.
    Throughput,
}

/// Which regions produce in `--mode throughput`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Writers {
    /// Region 1 only.
    One,
    /// Every region, an equal share each, in parallel.
    All,
}

/// Options of `replication`.
#[derive(Debug, Clone, Args)]
pub struct ReplicationArgs {
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Mode::Latency)]
    pub mode: Mode,

    /// Number of regions to start (r1 .. rN).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(2..=32))]
    pub regions: u32,

    /// The `causeway` binary [default: `causeway` next to this binary].
    #[arg(long, value_name = "PATH")]
    pub broker_bin: Option<PathBuf>,

    /// Directory in which the regions' data directories are created [default: the system
    /// temporary directory]; use /dev/shm for tmpfs.
    #[arg(long, value_name = "DIR")]
    pub data_parent: Option<PathBuf>,

    /// Extra argument for every region's command line (repeatable), e.g. `--broker-arg=--log-format=json`.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub broker_arg: Vec<String>,

    /// Keep the data directories and logs (their path is printed).
    #[arg(long)]
    pub keep_data: bool,

    /// Topic to create in region 1.
    #[arg(long, default_value = "bench-repl")]
    pub topic: String,

    /// Partitions of the topic [default: latency 1, throughput 6].
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=100_000))]
    pub partitions: Option<i32>,

    /// Payload bytes per record [default: latency 100, throughput 1024].
    #[arg(long, value_parser = clap::value_parser!(u64).range(16..=64 * 1024 * 1024))]
    pub record_bytes: Option<u64>,

    /// Producer linger.ms [default: latency 0, throughput 5].
    #[arg(long)]
    pub linger_ms: Option<u64>,

    /// Producer batch size and acks.
    #[command(flatten)]
    pub producer: ProducerTuning,

    /// Extra librdkafka property for every client, as key=value (repeatable).
    #[arg(short = 'X', long = "rdkafka", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub rdkafka: Vec<(String, String)>,

    /// Latency: send rate in records per second.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub rate: u64,

    /// Latency: measured seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub duration_s: u64,

    /// Latency: seconds of traffic at the same rate before the measurement (not recorded).
    #[arg(long, default_value_t = 2)]
    pub warmup_s: u64,

    /// Throughput: payload volume to produce, e.g. 512MiB, 1GiB, 100MB or a byte count.
    #[arg(long, default_value = "512MiB", value_parser = parse_size)]
    pub bytes: u64,

    /// Throughput: produce in region 1 only, or in every region (equal shares, in parallel).
    #[arg(long, value_enum, default_value_t = Writers::One)]
    pub writers: Writers,

    /// Throughput: seconds of idle mesh (topic created, no traffic) over which each region's
    /// background CPU per second is measured before producing (0 skips it).
    #[arg(long, default_value_t = 3)]
    pub idle_s: u64,

    /// Seconds to wait for start-up, delivery, the last records and convergence (each).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_s: u64,

    /// Also print the results as one JSON line.
    #[arg(long)]
    pub json: bool,
}

/// Parses a size: a byte count with an optional unit (B, KB, MB, GB, KiB, MiB, GiB).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("invalid size '{s}': expected e.g. 512MiB"))?;
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "mb" | "m" => 1e6,
        "gb" | "g" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("invalid size unit '{other}' in '{s}'")),
    };
    let bytes = (number * factor).round();
    if !(1.0..=1e15).contains(&bytes) {
        return Err(format!("size '{s}' out of range"));
    }
    Ok(bytes as u64)
}

/// Result of a run: text lines and a JSON object.
pub struct ReplicationReport {
    lines: Vec<String>,
    json: Value,
}

impl ReplicationReport {
    /// Human-readable lines.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }

    /// One JSON object with every result and parameter.
    pub fn json(&self) -> &Value {
        &self.json
    }
}

/// Runs the `replication` benchmark.
pub fn run(args: &ReplicationArgs) -> Result<ReplicationReport> {
    let mut regions = Regions::start(args)?;
    let result = match args.mode {
        Mode::Latency => latency::run(args, &regions),
        Mode::Throughput => throughput::run(args, &regions),
    };
    if let Err(err) = &result {
        eprintln!("causeway-bench: run failed ({err:#}); region state before stopping:");
        eprintln!("{}", regions.diagnostics());
    }
    let stopped = regions.stop();
    let mut report = result?;
    for line in stopped {
        report.lines.push(line);
    }
    Ok(report)
}

/// Flushes in 1 ms polls (see the note on transactions in docs/benchmarks.md) and fails on any
/// failed delivery.
fn flush(producer: &BaseProducer<BenchContext>, timeout: Duration) -> Result<()> {
    kafka::poll_until(
        producer,
        timeout,
        || producer.in_flight_count() == 0,
        || {
            format!(
                "{} record(s) not acknowledged within {} s",
                producer.in_flight_count(),
                timeout.as_secs()
            )
        },
    )?;
    producer.context().check_deliveries()
}

/// Median of a list (the mean of the two middle values for an even count).
fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512MiB"), Ok(512 * 1024 * 1024));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("100MB"), Ok(100_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1.5k"), Ok(1500));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("0").is_err());
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }
}
