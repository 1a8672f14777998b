//! `produce`: send N records as fast as possible and measure throughput.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::error::KafkaResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::json;

use crate::cli::{self, Delivery, ProduceArgs};
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

    let delivery = args.delivery();
    let producer = kafka::create_producer(&kafka::delivery_producer_config(
        common, &delivery, linger_ms, timeout,
    ))?;
    kafka::wait_for_cluster(
        &producer,
        &common.brokers,
        Duration::from_secs(common.connect_timeout_s),
    )?;
    let partitions = kafka::ensure_topic(&producer, common, true)?;
    let records_per_txn = match &delivery {
        Delivery::Transactional {
            id,
            records_per_txn,
        } => {
            // InitProducerId (and fencing of an earlier producer with the
            // same id) happens before the measured phase.
            producer.init_transactions(timeout).map_err(|e| {
                anyhow::anyhow!(producer.context().explain(format!(
                    "init_transactions for transactional.id '{id}' failed: {e}"
                )))
            })?;
            Some(*records_per_txn)
        }
        _ => None,
    };
    let pool = PayloadPool::new(usize::try_from(common.record_bytes)?);

    let broker_cpu = broker.map(CpuMeter::start).transpose()?;
    let client_cpu = client.and_then(|c| CpuMeter::start(c).ok());
    let start = Instant::now();
    let sent = send_all(&producer, args, &pool, partitions, timeout, records_per_txn)?;
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
    params.insert("delivery".into(), json!(delivery.name()));
    let variant = match &delivery {
        Delivery::Plain => None,
        Delivery::Idempotent => {
            params.insert("acks".into(), json!("all"));
            Some("idempotent, acks=all".to_string())
        }
        Delivery::Transactional {
            id,
            records_per_txn,
        } => {
            params.insert("acks".into(), json!("all"));
            params.insert("transactional_id".into(), json!(id));
            params.insert("txn_records".into(), json!(records_per_txn));
            params.insert("transactions".into(), json!(sent.transactions));
            Some(format!(
                "transactional, {} transactions of {records_per_txn} records, acks=all",
                sent.transactions
            ))
        }
    };
    Ok(Report {
        mode: "produce",
        variant,
        records: args.records,
        record_bytes: common.record_bytes,
        bytes: args.records * common.record_bytes + sent.key_bytes,
        elapsed,
        broker,
        client_cpu_seconds: client_cpu.and_then(|c| c.elapsed().ok()),
        e2e: None,
        params,
    })
}

/// What [`send_all`] sent besides the payloads.
struct Sent {
    /// Key bytes sent.
    key_bytes: u64,
    /// Transactions committed (0 without `--transactional-id`).
    transactions: u64,
}

/// Enqueues every record, round-robin over the partitions. With
/// `records_per_txn`, every that many records are wrapped in a transaction
/// that is committed (commit_transaction flushes and waits for the records'
/// delivery and the EndTxn answer) before the next one begins.
fn send_all(
    producer: &BaseProducer<BenchContext>,
    args: &ProduceArgs,
    pool: &PayloadPool,
    partitions: i32,
    timeout: Duration,
    records_per_txn: Option<u64>,
) -> Result<Sent> {
    let topic = args.common.topic.as_str();
    let partitions = u64::try_from(partitions)?;
    let mut sent = Sent {
        key_bytes: 0,
        transactions: 0,
    };
    let mut in_txn = false;
    for i in 0..args.records {
        if let Some(n) = records_per_txn {
            if i % n == 0 {
                if in_txn {
                    commit(producer, &mut sent, timeout)?;
                }
                producer
                    .begin_transaction()
                    .context("begin_transaction failed")?;
                in_txn = true;
            }
        }
        let key = i.to_be_bytes();
        let mut record = BaseRecord::to(topic)
            .partition(i32::try_from(i % partitions)?)
            .payload(pool.get(i));
        if args.keys {
            record = record.key(&key[..]);
            sent.key_bytes += key.len() as u64;
        }
        kafka::send_waiting_for_room(producer, record, timeout)
            .with_context(|| format!("record {i}"))?;
        if i % POLL_EVERY == 0 {
            producer.poll(Duration::ZERO);
            producer.context().check_deliveries()?;
        }
    }
    if in_txn {
        commit(producer, &mut sent, timeout)?;
    }
    Ok(sent)
}

/// Flushes in 1 ms steps. rdkafka's `BaseProducer::flush` (also called by
/// `commit_transaction`) polls in slices of up to 100 ms and `poll` always
/// waits its whole slice, so a flush that is not complete at once costs
/// ~100 ms: per transaction that was most of a 1,000-record transaction's
/// time. Once this returns, the library's own flush returns immediately.
fn flush_quickly(producer: &BaseProducer<BenchContext>, timeout: Duration) -> KafkaResult<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match producer.flush(Duration::ZERO) {
            Ok(()) => return Ok(()),
            Err(err) if Instant::now() >= deadline => return Err(err),
            Err(_) => producer.poll(Duration::from_millis(1)),
        }
    }
}

/// Commits the open transaction.
fn commit(producer: &BaseProducer<BenchContext>, sent: &mut Sent, timeout: Duration) -> Result<()> {
    flush_quickly(producer, timeout).map_err(|e| {
        anyhow::anyhow!(producer.context().explain(format!(
            "flush before committing transaction {} failed: {e}",
            sent.transactions + 1
        )))
    })?;
    producer.commit_transaction(timeout).map_err(|e| {
        anyhow::anyhow!(producer.context().explain(format!(
            "commit_transaction of transaction {} failed: {e}",
            sent.transactions + 1
        )))
    })?;
    producer.context().check_deliveries()?;
    sent.transactions += 1;
    Ok(())
}

/// Flushes the producer and waits until every delivery report is in.
fn finish(producer: &BaseProducer<BenchContext>, records: u64, timeout: Duration) -> Result<()> {
    let context = producer.context();
    if let Err(err) = flush_quickly(producer, timeout) {
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
