//! What the paced latency benchmarks (`e2e` and `replication --mode latency`)
//! share: the state between the producing thread and the consumer threads,
//! assignment at the end of the topic, the consumers' settle and drain loops
//! and the paced producer.
//!
//! Every payload starts with its send time (nanoseconds since an `Instant`
//! shared by both sides) and a per-run id, so records of other producers are
//! ignored; a record's latency is receive time - send time on the same clock.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use crate::kafka::{self, BenchContext};
use crate::pacing;
use crate::payload::{self, PayloadPool};

/// How long a consumer polls after assignment before producing starts, so
/// that its connection and first fetch are established.
pub const SETTLE: Duration = Duration::from_millis(500);

/// Highest latency the histogram can hold, in microseconds (one hour).
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// State shared by the producing (main) thread and the consumer threads.
pub struct Shared {
    /// Time base of the send timestamps.
    base: Instant,
    /// Identifies this run's records.
    run_id: u64,
    /// Send time (ns since `base`) of the first measured record; records sent
    /// earlier are warm-up. `u64::MAX` until measuring starts.
    measure_from_ns: AtomicU64,
    /// Total records sent, once the producer has finished; `u64::MAX` before.
    expected: AtomicU64,
    /// Set when the producer failed: the consumers stop.
    abort: AtomicBool,
    /// How long the consumers wait for missing records after the producer finished.
    drain_timeout: Duration,
}

impl Shared {
    /// A fresh run: a new time base and run id, nothing sent yet.
    pub fn new(drain_timeout: Duration) -> Self {
        Shared {
            base: Instant::now(),
            run_id: run_id(),
            measure_from_ns: AtomicU64::new(u64::MAX),
            expected: AtomicU64::new(u64::MAX),
            abort: AtomicBool::new(false),
            drain_timeout,
        }
    }

    /// Nanoseconds since the time base.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The send time of a record of this run; `None` for any other record.
    pub fn sent_ns(&self, msg: &impl Message) -> Option<u64> {
        msg.payload()
            .and_then(|p| payload::read_header(p, self.run_id))
    }

    /// Records the latency of a record sent at `sent_ns` and received at
    /// `now_ns`, unless it was sent during the warm-up.
    pub fn record(&self, histogram: &mut Histogram<u64>, sent_ns: u64, now_ns: u64) {
        if sent_ns >= self.measure_from_ns.load(Ordering::Acquire) {
            let micros = now_ns.saturating_sub(sent_ns).div_ceil(1000);
            histogram.saturating_record(micros.max(1));
        }
    }

    /// Tells the consumers that the producer is done: `Some(total)` records
    /// were sent, or `None` when it failed (the consumers stop at once).
    pub fn producer_done(&self, total: Option<u64>) {
        match total {
            Some(total) => self.expected.store(total, Ordering::Release),
            None => self.abort.store(true, Ordering::Release),
        }
    }
}

/// A random id for this run's records.
fn run_id() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    RandomState::new().hash_one((nanos, std::process::id()))
}

/// An empty latency histogram (microseconds, 1 µs to one hour, 3 significant digits).
pub fn histogram() -> Result<Histogram<u64>> {
    Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3)
        .context("cannot create the latency histogram")
}

/// Assigns every partition at its current high watermark, so the consumer
/// sees exactly the records produced from now on.
pub fn assign_at_end(
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

/// Polls for [`SETTLE`] (records seen meanwhile are dropped), handing any
/// error to `on_error`.
pub fn settle(consumer: &BaseConsumer<BenchContext>, mut on_error: impl FnMut(KafkaError)) {
    let settle_end = Instant::now() + SETTLE;
    while Instant::now() < settle_end {
        if let Some(Err(err)) = consumer.poll(Duration::from_millis(50)) {
            on_error(err);
        }
    }
}

/// Why [`poll_until_drained`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// Every record the producer sent was received.
    Complete,
    /// The producer failed.
    Aborted,
    /// The drain timeout expired after the producer finished.
    TimedOut,
}

/// Polls in 20 ms steps, handing every poll's outcome to `on_poll`, which
/// returns the records of this run received so far; stops once that reaches
/// the records sent, when the producer aborts, or when the drain timeout
/// (counted from the first poll after the producer finished) expires.
pub fn poll_until_drained(
    consumer: &BaseConsumer<BenchContext>,
    shared: &Shared,
    mut on_poll: impl FnMut(Option<KafkaResult<BorrowedMessage<'_>>>) -> u64,
) -> Drain {
    let mut drain_deadline: Option<Instant> = None;
    loop {
        let received = on_poll(consumer.poll(Duration::from_millis(20)));
        if shared.abort.load(Ordering::Acquire) {
            return Drain::Aborted;
        }
        let expected = shared.expected.load(Ordering::Acquire);
        if received >= expected {
            return Drain::Complete;
        }
        if expected != u64::MAX {
            let deadline =
                *drain_deadline.get_or_insert_with(|| Instant::now() + shared.drain_timeout);
            if Instant::now() >= deadline {
                return Drain::TimedOut;
            }
        }
    }
}

/// What a paced producer sends.
pub struct PacedLoad<'a> {
    pub topic: &'a str,
    pub partitions: i32,
    pub record_bytes: u64,
    /// Records per second.
    pub rate: u64,
    pub warmup_s: u64,
    pub duration_s: u64,
    /// How long a send may wait for room in the producer queue.
    pub timeout: Duration,
}

/// What a paced producer did.
pub struct Paced {
    /// Records sent, warm-up included.
    pub total: u64,
    /// Records sent during the warm-up.
    pub warmup: u64,
    /// Duration of the measured sending phase.
    pub elapsed: Duration,
}

/// Sends `load.rate` records per second round-robin over the partitions in
/// per-tick bursts for the warm-up and the measured duration. When the
/// measured phase starts, it publishes the first measured send time in
/// `shared` and calls `on_measure_start`. Does not flush.
pub fn produce_paced(
    producer: &BaseProducer<BenchContext>,
    load: &PacedLoad<'_>,
    shared: &Shared,
    mut on_measure_start: impl FnMut() -> Result<()>,
) -> Result<Paced> {
    let partitions = u64::try_from(load.partitions)?;
    let warmup = load.rate.saturating_mul(load.warmup_s);
    let total = warmup.saturating_add(load.rate.saturating_mul(load.duration_s));
    let pool = PayloadPool::new(usize::try_from(load.record_bytes)?);
    let mut buf = vec![0u8; pool.size()];
    let mut measure_start = None;
    let start = Instant::now();
    let mut sent = 0u64;
    loop {
        let due = pacing::due(load.rate, start.elapsed()).min(total);
        while sent < due {
            let send_ns = shared.now_ns();
            if sent == warmup {
                shared.measure_from_ns.store(send_ns, Ordering::Release);
                on_measure_start()?;
                measure_start = Some(Instant::now());
            }
            buf.copy_from_slice(pool.get(sent));
            payload::write_header(&mut buf, send_ns, shared.run_id);
            let partition = i32::try_from(sent % partitions)?;
            kafka::send_waiting_for_room::<()>(
                producer,
                BaseRecord::to(load.topic)
                    .partition(partition)
                    .payload(&buf[..]),
                load.timeout,
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
    Ok(Paced {
        total,
        warmup,
        elapsed: measure_start.map_or(Duration::ZERO, |s| s.elapsed()),
    })
}
