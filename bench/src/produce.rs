//! `produce`: send N records as fast as possible and measure throughput.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use serde_json::json;

use crate::cli::{self, ProduceArgs};
use crate::kafka::{self, BenchContext};
use crate::payload::PayloadPool;
use crate::procstat::{CpuMeter, ProcessMonitor};
use crate::report::{self, BrokerUsage, Report};

/// How often (in records) delivery reports are served while sending.
const POLL_EVERY: u64 = 256;

/// Runs the `produce` benchmark.
pub fn run(args: &ProduceArgs) -> Result<Report> {
    let common = &args.common;
    let timeout = Duration::from_secs(args.timeout_s);
    let linger_ms = common.linger_ms_or(cli::DEFAULT_LINGER_MS);
    let broker = common.broker_pid.map(ProcessMonitor::new).transpose()?;
    let client = ProcessMonitor::new(std::process::id()).ok();

    let producer = kafka::create_producer(&kafka::producer_config(common, linger_ms, timeout))?;
    kafka::wait_for_cluster(
        &producer,
        &common.brokers,
        Duration::from_secs(common.connect_timeout_s),
    )?;
    let partitions = kafka::ensure_topic(&producer, common, true)?;
    let pool = PayloadPool::new(usize::try_from(common.record_bytes)?);

    let broker_cpu = broker.map(CpuMeter::start).transpose()?;
    let client_cpu = client.and_then(|c| CpuMeter::start(c).ok());
    let start = Instant::now();
    let key_bytes = send_all(&producer, args, &pool, partitions, timeout)?;
    finish(&producer, args.records, timeout)?;
    let elapsed = start.elapsed();

    let broker = match (broker, broker_cpu) {
        (Some(monitor), Some(cpu)) => Some(BrokerUsage {
            cpu_seconds: cpu.elapsed()?,
            memory: monitor.memory()?,
        }),
        _ => None,
    };
    let mut params = report::common_params(common, partitions, linger_ms);
    params.insert("keys".into(), json!(args.keys));
    Ok(Report {
        mode: "produce",
        records: args.records,
        record_bytes: common.record_bytes,
        bytes: args.records * common.record_bytes + key_bytes,
        elapsed,
        broker,
        client_cpu_seconds: client_cpu.and_then(|c| c.elapsed().ok()),
        e2e: None,
        params,
    })
}

/// Enqueues every record, round-robin over the partitions; returns the
/// number of key bytes sent.
fn send_all(
    producer: &BaseProducer<BenchContext>,
    args: &ProduceArgs,
    pool: &PayloadPool,
    partitions: i32,
    timeout: Duration,
) -> Result<u64> {
    let topic = args.common.topic.as_str();
    let partitions = u64::try_from(partitions)?;
    let mut key_bytes = 0;
    for i in 0..args.records {
        let key = i.to_be_bytes();
        let mut record = BaseRecord::to(topic)
            .partition(i32::try_from(i % partitions)?)
            .payload(pool.get(i));
        if args.keys {
            record = record.key(&key[..]);
            key_bytes += key.len() as u64;
        }
        let mut stalled_since: Option<Instant> = None;
        while let Err((err, returned)) = producer.send(record) {
            match err {
                KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) => {
                    // The local queue is full: serve delivery reports until
                    // librdkafka has room again.
                    let since = *stalled_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > timeout {
                        bail!(producer.context().explain(format!(
                            "producer queue stayed full for {} s (broker not accepting records?)",
                            timeout.as_secs()
                        )));
                    }
                    producer.poll(Duration::from_millis(1));
                    producer.context().check_deliveries()?;
                    record = returned;
                }
                other => bail!("cannot enqueue record {i}: {other}"),
            }
        }
        if i % POLL_EVERY == 0 {
            producer.poll(Duration::ZERO);
            producer.context().check_deliveries()?;
        }
    }
    Ok(key_bytes)
}

/// Flushes the producer and waits until every delivery report is in.
fn finish(producer: &BaseProducer<BenchContext>, records: u64, timeout: Duration) -> Result<()> {
    let context = producer.context();
    if let Err(err) = producer.flush(timeout) {
        context.check_deliveries()?;
        bail!(context.explain(format!(
            "flush did not complete within {} s: {err} ({} of {records} records delivered)",
            timeout.as_secs(),
            context.delivered()
        )));
    }
    // flush() returns once librdkafka holds no message; the last delivery
    // reports may still wait in the queue.
    let deadline = Instant::now() + Duration::from_secs(5);
    while context.delivered() + context.failed() < records && Instant::now() < deadline {
        producer.poll(Duration::from_millis(1));
    }
    context.check_deliveries()?;
    let delivered = context.delivered();
    if delivered < records {
        bail!("only {delivered} of {records} delivery reports received after flush");
    }
    Ok(())
}
