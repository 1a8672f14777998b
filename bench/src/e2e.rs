//! `e2e`: produce at a fixed rate while a consumer in the same process reads
//! the topic from its end; measure the latency from send to receive.
//!
//! Every payload starts with its send time (nanoseconds since an `Instant`
//! shared by both sides) and a per-run id, so records of other producers are
//! ignored. The first `--warmup-s` seconds of traffic warm up connections and
//! are not measured.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use hdrhistogram::Histogram;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;

use crate::cli::{self, E2eArgs};
use crate::kafka::{self, BenchContext};
use crate::pacing;
use crate::payload::{self, PayloadPool, HEADER_LEN};
use crate::procstat::{CpuMeter, ProcessMonitor};
use crate::report::{self, BrokerUsage, E2eResult, LatencySummary, Report};

/// How long the consumer polls after assignment before producing starts, so
/// that its connection and first fetch are established.
const SETTLE: Duration = Duration::from_millis(500);

/// Highest latency the histogram can hold, in microseconds (one hour).
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// State shared by the producing (main) thread and the consumer thread.
struct Shared {
    /// Time base of the send timestamps.
    base: Instant,
    /// Identifies this run's records.
    run_id: u64,
    /// Send time (ns since `base`) of the first measured record; records sent
    /// earlier are warm-up. `u64::MAX` until measuring starts.
    measure_from_ns: AtomicU64,
    /// Total records sent, once the producer has finished; `u64::MAX` before.
    expected: AtomicU64,
    /// Set when the producer failed: the consumer stops.
    abort: AtomicBool,
    /// How long the consumer waits for missing records after the producer finished.
    drain_timeout: Duration,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

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
    assign_at_end(&consumer, &common.topic, partitions, connect_timeout)?;

    let shared = Shared {
        base: Instant::now(),
        run_id: run_id(),
        measure_from_ns: AtomicU64::new(u64::MAX),
        expected: AtomicU64::new(u64::MAX),
        abort: AtomicBool::new(false),
        drain_timeout: timeout,
    };
    let (ready_tx, ready_rx) = mpsc::channel();
    let (produced, consumed) = thread::scope(|scope| {
        let reader = scope.spawn(|| consume(&consumer, &shared, ready_tx));
        let produced = ready_rx
            .recv()
            .map_err(|_| anyhow!("the consumer stopped before producing started"))
            .and_then(|()| produce(&producer, args, partitions, broker, &shared));
        match &produced {
            Ok(p) => shared.expected.store(p.total, Ordering::Release),
            Err(_) => shared.abort.store(true, Ordering::Release),
        }
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

/// A random id for this run's records.
fn run_id() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    RandomState::new().hash_one((nanos, std::process::id()))
}

/// Assigns every partition at its current high watermark, so the consumer
/// sees exactly the records produced from now on.
fn assign_at_end(
    consumer: &BaseConsumer<BenchContext>,
    topic: &str,
    partitions: i32,
    timeout: Duration,
) -> Result<()> {
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, timeout)
            .with_context(|| format!("cannot read the end offset of {topic}/{p}"))?;
        assignment.add_partition_offset(topic, p, Offset::Offset(high))?;
    }
    consumer
        .assign(&assignment)
        .context("cannot assign partitions")
}

/// Consumer thread: settles, signals readiness, then records latencies until
/// every record is received, the drain timeout expires or the producer aborts.
fn consume(
    consumer: &BaseConsumer<BenchContext>,
    shared: &Shared,
    ready: mpsc::Sender<()>,
) -> Result<Consumed> {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3)
        .context("cannot create the latency histogram")?;
    let settle_end = Instant::now() + SETTLE;
    while Instant::now() < settle_end {
        if let Some(Err(err)) = consumer.poll(Duration::from_millis(50)) {
            eprintln!("warning: consumer error while starting: {err}");
        }
    }
    // The receiver only disappears if the producer side is already gone.
    let _ = ready.send(());

    let mut received = 0u64;
    let mut drain_deadline: Option<Instant> = None;
    let mut last_error: Option<String> = None;
    loop {
        match consumer.poll(Duration::from_millis(20)) {
            Some(Ok(msg)) => {
                let now_ns = shared.now_ns();
                if let Some(sent_ns) = msg
                    .payload()
                    .and_then(|p| payload::read_header(p, shared.run_id))
                {
                    received += 1;
                    if sent_ns >= shared.measure_from_ns.load(Ordering::Acquire) {
                        let micros = now_ns.saturating_sub(sent_ns).div_ceil(1000);
                        histogram.saturating_record(micros.max(1));
                    }
                }
            }
            Some(Err(err)) => last_error = Some(err.to_string()),
            None => {}
        }
        if shared.abort.load(Ordering::Acquire) {
            break;
        }
        let expected = shared.expected.load(Ordering::Acquire);
        if received >= expected {
            break;
        }
        if expected != u64::MAX {
            let deadline =
                *drain_deadline.get_or_insert_with(|| Instant::now() + shared.drain_timeout);
            if Instant::now() >= deadline {
                if let Some(err) = last_error.or_else(|| consumer.context().client_errors()) {
                    eprintln!("warning: last consumer error: {err}");
                }
                break;
            }
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
    let partitions = u64::try_from(partitions)?;
    let warmup = args.rate.saturating_mul(args.warmup_s);
    let total = warmup.saturating_add(args.rate.saturating_mul(args.duration_s));
    let pool = PayloadPool::new(usize::try_from(common.record_bytes)?);
    let mut buf = vec![0u8; pool.size()];

    let mut broker_cpu = None;
    let mut client_cpu = None;
    let mut measure_start = None;
    let start = Instant::now();
    let mut sent = 0u64;
    loop {
        let due = pacing::due(args.rate, start.elapsed()).min(total);
        while sent < due {
            let send_ns = shared.now_ns();
            if sent == warmup {
                shared.measure_from_ns.store(send_ns, Ordering::Release);
                broker_cpu = broker.map(CpuMeter::start).transpose()?;
                client_cpu = ProcessMonitor::new(std::process::id())
                    .and_then(CpuMeter::start)
                    .ok();
                measure_start = Some(Instant::now());
            }
            buf.copy_from_slice(pool.get(sent));
            payload::write_header(&mut buf, send_ns, shared.run_id);
            let partition = i32::try_from(sent % partitions)?;
            kafka::send_waiting_for_room::<()>(
                producer,
                BaseRecord::to(&common.topic)
                    .partition(partition)
                    .payload(&buf[..]),
                timeout,
            )?;
            sent += 1;
        }
        producer.poll(Duration::ZERO);
        producer.context().check_deliveries()?;
        if sent >= total {
            break;
        }
        thread::sleep(pacing::until_next_tick(start.elapsed()));
    }
    let elapsed = measure_start.map_or(Duration::ZERO, |s| s.elapsed());

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
        total,
        measured: total - warmup,
        elapsed,
        broker_cpu,
        client_cpu,
    })
}
