//! `consume`: read N records from the beginning of every partition and
//! measure throughput.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;

use crate::cli::{self, ConsumeArgs};
use crate::kafka::{self, BenchContext};
use crate::procstat::{CpuMeter, ProcessMonitor};
use crate::report::{self, BrokerUsage, Report};

/// Runs the `consume` benchmark.
pub fn run(args: &ConsumeArgs) -> Result<Report> {
    let common = &args.common;
    let timeout = Duration::from_secs(args.timeout_s);
    let linger_ms = common.linger_ms_or(cli::DEFAULT_LINGER_MS);
    let connect_timeout = Duration::from_secs(common.connect_timeout_s);
    let broker = common.broker_pid.map(ProcessMonitor::new).transpose()?;
    let client = ProcessMonitor::new(std::process::id()).ok();

    // A producer client serves as a probe: it reports why the broker cannot
    // be reached, and it never sends anything.
    let probe = kafka::create_producer(&kafka::producer_config(common, linger_ms, timeout))?;
    kafka::wait_for_cluster(&probe, &common.brokers, connect_timeout)?;
    let partitions = kafka::ensure_topic(&probe, common, false)?;

    let consumer: BaseConsumer<BenchContext> = kafka::consumer_config(common)
        .create_with_context(BenchContext::default())
        .context("cannot create the librdkafka consumer (check -X properties)")?;
    let available = available_records(&consumer, &common.topic, partitions, connect_timeout)?;
    if available < args.records {
        eprintln!(
            "warning: topic '{}' holds {available} records, fewer than --records {}; \
             waiting up to {} s for more",
            common.topic, args.records, args.timeout_s
        );
    }

    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment.add_partition_offset(&common.topic, p, Offset::Beginning)?;
    }

    let broker_cpu = broker.map(CpuMeter::start).transpose()?;
    let client_cpu = client.and_then(|c| CpuMeter::start(c).ok());
    let start = Instant::now();
    consumer
        .assign(&assignment)
        .context("cannot assign partitions")?;
    let (records, bytes, first) = read(&consumer, args.records, start + timeout)?;
    let elapsed = start.elapsed();

    let broker = match (broker, broker_cpu) {
        (Some(monitor), Some(cpu)) => Some(BrokerUsage {
            cpu_seconds: cpu.elapsed()?,
            memory: monitor.memory()?,
        }),
        _ => None,
    };
    let mut params = report::common_params(common, partitions, linger_ms);
    params.insert(
        "first_record_s".into(),
        json!(first.map(|f| f.as_secs_f64())),
    );
    Ok(Report {
        mode: "consume",
        variant: None,
        records,
        record_bytes: common.record_bytes,
        bytes,
        elapsed,
        broker,
        client_cpu_seconds: client_cpu.and_then(|c| c.elapsed().ok()),
        e2e: None,
        params,
    })
}

/// Sum over partitions of high watermark - low watermark.
fn available_records(
    consumer: &BaseConsumer<BenchContext>,
    topic: &str,
    partitions: i32,
    timeout: Duration,
) -> Result<u64> {
    let mut total = 0u64;
    for p in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, timeout)
            .with_context(|| format!("cannot read the offsets of {topic}/{p}"))?;
        total += u64::try_from(high.saturating_sub(low)).unwrap_or(0);
    }
    Ok(total)
}

/// Polls until `wanted` records are read; returns records and key + payload
/// bytes read, and when the first record arrived.
fn read(
    consumer: &BaseConsumer<BenchContext>,
    wanted: u64,
    deadline: Instant,
) -> Result<(u64, u64, Option<Duration>)> {
    let start = Instant::now();
    let mut first = None;
    let mut records = 0u64;
    let mut bytes = 0u64;
    let mut last_error: Option<String> = None;
    while records < wanted {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(msg)) => {
                first.get_or_insert_with(|| start.elapsed());
                records += 1;
                bytes += (msg.payload_len() + msg.key().map_or(0, <[u8]>::len)) as u64;
            }
            Some(Err(err)) => last_error = Some(err.to_string()),
            None => {}
        }
        if records < wanted && Instant::now() >= deadline {
            let mut msg = format!(
                "timed out after {:.0} s: read {records} of {wanted} records",
                start.elapsed().as_secs_f64()
            );
            if let Some(err) = last_error.or_else(|| consumer.context().client_errors()) {
                msg.push_str(&format!("; last consumer error: {err}"));
            }
            bail!(msg);
        }
    }
    Ok((records, bytes, first))
}
