//! `e2e`: produce at a fixed rate while a consumer in the same process reads
//! the topic from its end; measure the latency from send to receive.
//!
//! Every payload starts with its send time (nanoseconds since an `Instant`
//! shared by both sides) and a per-run id, so records of other producers are
//! ignored. The first `--warmup-s` seconds of traffic warm up connections and
//! are not measured.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use hdrhistogram::Histogram;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, Producer};
use serde_json::json;

use crate::cli::{self, E2eArgs};
use crate::kafka::{self, BenchContext};
use crate::latency::{self, Drain, PacedLoad, Shared};
use crate::payload::HEADER_LEN;
use crate::procstat::{CpuMeter, ProcessMonitor};
use crate::report::{self, BrokerUsage, E2eResult, LatencySummary, Report};

/// What the consumer thread saw.
struct Consumed {
    /// Latencies of measured records, in microseconds.
    histogram: Histogram<u64>,
    /// Records of this run received (warm-up included).
    received: u64,
}

/// What the producer side did.
struct Produced {
    /// Records sent, warm-up included.
    total: u64,
    /// Records sent in the measured phase.
    measured: u64,
    /// Duration of the measured sending phase.
    elapsed: Duration,
    /// Broker and client CPU meters started with the measured phase.
    broker_cpu: Option<CpuMeter>,
    client_cpu: Option<CpuMeter>,
}

/// Runs the `e2e` benchmark.
pub fn run(args: &E2eArgs) -> Result<Report> {
    let common = &args.common;
    if common.record_bytes < HEADER_LEN as u64 {
        bail!(
            "e2e needs --record-bytes of at least {HEADER_LEN} (the payload carries its send time)"
        );
    }
    let timeout = Duration::from_secs(args.timeout_s);
    let linger_ms = common.linger_ms_or(cli::E2E_DEFAULT_LINGER_MS);
    let connect_timeout = Duration::from_secs(common.connect_timeout_s);
    let broker = common.broker_pid.map(ProcessMonitor::new).transpose()?;

    let producer = kafka::create_producer(&kafka::producer_config(common, linger_ms, timeout))?;
    kafka::wait_for_cluster(&producer, &common.brokers, connect_timeout)?;
    let partitions = kafka::ensure_topic(&producer, common, true)?;

    let consumer: BaseConsumer<BenchContext> = kafka::consumer_config(common)
        .create_with_context(BenchContext::default())
        .context("cannot create the librdkafka consumer (check -X properties)")?;
    latency::assign_at_end(&consumer, &common.topic, partitions, connect_timeout)?;

    let shared = Shared::new(timeout);
    let (ready_tx, ready_rx) = mpsc::channel();
    let (produced, consumed) = thread::scope(|scope| {
        let reader = scope.spawn(|| consume(&consumer, &shared, ready_tx));
        let produced = ready_rx
            .recv()
            .map_err(|_| anyhow!("the consumer stopped before producing started"))
            .and_then(|()| produce(&producer, args, partitions, broker, &shared));
        shared.producer_done(produced.as_ref().ok().map(|p| p.total));
        let consumed = reader
            .join()
            .map_err(|_| anyhow!("the consumer thread panicked"))?;
        // A consumer failure explains a producer failure, not the reverse.
        let consumed = consumed?;
        Ok::<_, anyhow::Error>((produced?, consumed))
    })?;

    if consumed.received < produced.total {
        bail!(
            "received {} of {} records within {} s after the last send (records lost or late)",
            consumed.received,
            produced.total,
            args.timeout_s
        );
    }
    let broker = match (broker, produced.broker_cpu) {
        (Some(monitor), Some(cpu)) => Some(BrokerUsage {
            cpu_seconds: cpu.elapsed()?,
            memory: monitor.memory()?,
        }),
        _ => None,
    };
    let mut params = report::common_params(common, partitions, linger_ms);
    params.insert("duration_s".into(), json!(args.duration_s));
    params.insert("warmup_s".into(), json!(args.warmup_s));
    Ok(Report {
        mode: "e2e",
        variant: None,
        records: produced.measured,
        record_bytes: common.record_bytes,
        bytes: produced.measured * common.record_bytes,
        elapsed: produced.elapsed,
        broker,
        client_cpu_seconds: produced.client_cpu.and_then(|c| c.elapsed().ok()),
        e2e: Some(E2eResult {
            target_rate: args.rate,
            linger_ms,
            latency: LatencySummary::from_micros(&consumed.histogram),
        }),
        params,
    })
}

/// Consumer thread: settles, signals readiness, then records latencies until
/// every record is received, the drain timeout expires or the producer aborts.
fn consume(
    consumer: &BaseConsumer<BenchContext>,
    shared: &Shared,
    ready: mpsc::Sender<()>,
) -> Result<Consumed> {
    let mut histogram = latency::histogram()?;
    latency::settle(consumer, |err| {
        eprintln!("warning: consumer error while starting: {err}");
    });
    // The receiver only disappears if the producer side is already gone.
    let _ = ready.send(());

    let mut received = 0u64;
    let mut last_error: Option<String> = None;
    let drained = latency::poll_until_drained(consumer, shared, |polled| {
        match polled {
            Some(Ok(msg)) => {
                let now_ns = shared.now_ns();
                if let Some(sent_ns) = shared.sent_ns(&msg) {
                    received += 1;
                    shared.record(&mut histogram, sent_ns, now_ns);
                }
            }
            Some(Err(err)) => last_error = Some(err.to_string()),
            None => {}
        }
        received
    });
    if drained == Drain::TimedOut {
        if let Some(err) = last_error.or_else(|| consumer.context().client_errors()) {
            eprintln!("warning: last consumer error: {err}");
        }
    }
    Ok(Consumed {
        histogram,
        received,
    })
}

/// Producer side: sends `rate` records per second in per-tick bursts for the
/// warm-up and the measured duration, then flushes.
fn produce(
    producer: &BaseProducer<BenchContext>,
    args: &E2eArgs,
    partitions: i32,
    broker: Option<ProcessMonitor>,
    shared: &Shared,
) -> Result<Produced> {
    let common = &args.common;
    let timeout = Duration::from_secs(args.timeout_s);
    let load = PacedLoad {
        topic: &common.topic,
        partitions,
        record_bytes: common.record_bytes,
        rate: args.rate,
        warmup_s: args.warmup_s,
        duration_s: args.duration_s,
        timeout,
    };
    let mut broker_cpu = None;
    let mut client_cpu = None;
    let paced = latency::produce_paced(producer, &load, shared, || {
        broker_cpu = broker.map(CpuMeter::start).transpose()?;
        client_cpu = ProcessMonitor::new(std::process::id())
            .and_then(CpuMeter::start)
            .ok();
        Ok(())
    })?;

    let context = producer.context();
    if let Err(err) = producer.flush(timeout) {
        context.check_deliveries()?;
        bail!(context.explain(format!(
            "flush did not complete within {} s: {err}",
            args.timeout_s
        )));
    }
    context.check_deliveries()?;
    Ok(Produced {
        total: paced.total,
        measured: paced.total - paced.warmup,
        elapsed: paced.elapsed,
        broker_cpu,
        client_cpu,
    })
}
