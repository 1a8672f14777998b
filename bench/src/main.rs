//! `causeway-bench`: a load generator built on librdkafka (through the
//! `rdkafka` crate) that measures a Kafka-compatible broker's throughput,
//! end-to-end latency, CPU cost and memory footprint.
//!
//! # Usage
//!
//! ```text
//! cargo run --release --bin causeway-bench -- <produce|consume|e2e|table|replication> [options]
//! ```
//!
//! * `produce` sends `--records` records of `--record-bytes` bytes round-robin
//!   across the topic's partitions as fast as librdkafka allows, waits for
//!   every delivery report and prints records/s and MB/s (MB = 10^6 bytes).
//!   `--idempotent` makes it an idempotent producer (acks=all);
//!   `--transactional-id ID --txn-records N` a transactional one that
//!   commits every N records.
//! * `consume` reads `--records` records from the beginning of every
//!   partition (manual assignment, no group commits) and prints records/s and
//!   MB/s. Run `produce` first so the topic holds enough records.
//! * `e2e` produces at `--rate` records/s for `--duration-s` seconds (after a
//!   `--warmup-s` warm-up that is not measured) while a consumer in the same
//!   process reads the topic from its end; each payload carries its send time,
//!   and p50/p90/p99/p99.9/max latency is printed in milliseconds.
//!
//! * `table` creates `--topic` (default `bench-table`) with
//!   `cleanup.policy=compact`, produces `--records` JSON merge-patch records
//!   (header `causeway.op: patch`, `--record-bytes` bytes, keys
//!   `k<i % --keys>`) as fast as possible and reports how long the broker's
//!   materializer takes to apply them all (from its
//!   `causeway_table_merges_total` counter on `--http`); then it reads random
//!   rows with `GET /v1/tables/{topic}/rows/{key}` at `--read-rate` for
//!   `--read-seconds` over one keep-alive connection, interleaved with
//!   `GET /healthz` at the same rate as a baseline, and prints both latency
//!   distributions.
//!
//! * `replication` starts `--regions` causeway regions (child processes on
//!   loopback) and measures replication latency (`--mode latency`) or time,
//!   throughput and CPU per GB until every region holds a fixed volume
//!   (`--mode throughput`); see `replication.rs` and docs/benchmarks.md.
//!
//! Common options: `--brokers` (default `127.0.0.1:9092`, or the
//! `CAUSEWAY_BENCH_BROKERS` environment variable), `--topic` (`bench`),
//! `--partitions` (6; the topic is created if missing), `--record-bytes`
//! (100), `--linger-ms` (5; 0 for `e2e`), `--batch-bytes` (1048576, librdkafka
//! `batch.size`), `--acks` (`0`, `1`, `all` or `-1`), `--compression`
//! (`none`, `gzip`, `snappy`, `lz4`, `zstd`), `-X key=value` (any extra
//! librdkafka property), `--broker-pid PID` (report the broker's CPU seconds,
//! CPU seconds per GB and peak/current RSS from `/proc`) and `--json` (also
//! print one JSON line with every result).
//!
//! Example:
//!
//! ```text
//! causeway-bench produce --records 1000000 --record-bytes 100 --broker-pid $(pgrep -x causeway)
//! produce: 1000000 records x 100 B in 1.23 s = 813008 records/s, 81.3 MB/s (77.5 MiB/s); broker CPU 0.95 s (0.95 s/GB), broker peak RSS 42.1 MB (current 40.3 MB)
//! ```
//!
//! Any failure (unreachable broker, delivery error, timeout) is reported on
//! stderr and the process exits with a nonzero status.

mod cli;
mod consume;
mod e2e;
mod http;
mod kafka;
mod latency;
mod pacing;
mod payload;
mod procstat;
mod produce;
mod replication;
mod report;
mod table;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` prints the whole context chain on one line, without a
            // backtrace even when RUST_BACKTRACE is set.
            eprintln!("causeway-bench: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the selected mode and prints its report.
fn run(cli: Cli) -> Result<()> {
    let (report, json) = match cli.command {
        Command::Produce(args) => (produce::run(&args)?, args.common.json),
        Command::Consume(args) => (consume::run(&args)?, args.common.json),
        Command::E2e(args) => (e2e::run(&args)?, args.common.json),
        Command::Replication(args) => {
            let report = replication::run(&args)?;
            println!("{}", report.text());
            if args.json {
                println!("{}", report.json());
            }
            return Ok(());
        }
        Command::Table(args) => {
            let report = table::run(&args)?;
            println!("{}", report.text());
            if args.common.json {
                println!("{}", report.json());
            }
            return Ok(());
        }
    };
    println!("{}", report.text());
    if json {
        println!("{}", report.json());
    }
    Ok(())
}
