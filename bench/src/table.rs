//! `table`: materializer throughput of JSON patch records on a compacted
//! topic, then paced HTTP point reads of the resulting rows.
//!
//! Phase 1 creates the topic with `cleanup.policy=compact` (which makes it a
//! table), produces `--records` records with header `causeway.op: patch` and
//! a JSON object value of `--record-bytes` bytes as fast as librdkafka
//! allows, and polls the broker's `/metrics` every 20 ms until
//! `causeway_table_merges_total{topic=...}` has grown by `--records`. The
//! materializer throughput is `--records` divided by the time from the first
//! send to that observation.
//!
//! Phase 2 sends `GET /v1/tables/{topic}/rows/{key}` for random existing keys
//! at `--read-rate` per second for `--read-seconds`, interleaved with
//! `GET /healthz` at the same rate (row, health, row, health, ...), over one
//! keep-alive connection. Each request is sent at its scheduled time (the
//! client sleeps until then) and its latency is the time from sending the
//! request to having read the whole response. The `/healthz` distribution is
//! the cost of an HTTP round trip to the broker without any table work, so
//! the ratio of the p99s shows what the row lookup adds.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use hdrhistogram::Histogram;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::{json, Map, Value};

use crate::cli::{self, TableArgs};
use crate::http::get;
use crate::kafka::{self, BenchContext};
use crate::procstat::{CpuMeter, ProcessMonitor};
use crate::report::{self, BrokerUsage, LatencySummary};

/// Metric counting the records the materializer has applied, per topic.
const MERGES_METRIC: &str = "causeway_table_merges_total";
/// How often `/metrics` is polled while waiting for the materializer.
const METRICS_POLL: Duration = Duration::from_millis(20);
/// Number of distinct patch fields (`f0` .. `f19`).
const FIELDS: u64 = 20;
/// How often (in records) delivery reports are served while sending.
const POLL_EVERY: u64 = 256;
/// Requests of each kind sent before the measured read phase.
const WARMUP_REQUESTS: u64 = 200;
/// Bytes in a megabyte (10^6).
const MB: f64 = 1e6;

/// The JSON merge-patch value of record `i`, exactly `size` bytes:
/// `{"f<i % 20>":<i>,"pad":"xxx..."}`. Fails when `size` is too small to
/// hold the object without padding.
pub fn patch_value(i: u64, size: usize) -> Result<Vec<u8>> {
    let head = format!("{{\"f{}\":{i},\"pad\":\"", i % FIELDS);
    let tail = "\"}";
    let fixed = head.len() + tail.len();
    if size < fixed {
        bail!("--record-bytes {size} is too small for a JSON patch record (needs at least {fixed} bytes)");
    }
    let mut value = Vec::with_capacity(size);
    value.extend_from_slice(head.as_bytes());
    value.resize(size - tail.len(), b'x');
    value.extend_from_slice(tail.as_bytes());
    Ok(value)
}

/// Row key of record `i`.
pub fn row_key(i: u64, keys: u64) -> String {
    format!("k{}", i % keys)
}

/// Sum of the samples of metric `name` whose labels include
/// `topic="<topic>"`, from a Prometheus text exposition; `None` if there is
/// no such sample.
pub fn metric_for_topic(text: &str, name: &str, topic: &str) -> Option<f64> {
    let wanted = format!("topic=\"{topic}\"");
    let mut total = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let Some(rest) = rest.strip_prefix('{') else {
            continue;
        };
        let Some((labels, value)) = rest.split_once('}') else {
            continue;
        };
        if !labels.split(',').any(|l| l.trim() == wanted) {
            continue;
        }
        // The value may be followed by a timestamp.
        let Some(value) = value.split_whitespace().next() else {
            continue;
        };
        if let Ok(v) = value.parse::<f64>() {
            *total.get_or_insert(0.0) += v;
        }
    }
    total
}

/// A small deterministic PRNG (SplitMix64) to pick the keys to read.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Time at which request `n` (0-based) of a schedule at `rate` per second is due.
pub fn scheduled_at(n: u64, rate: u64) -> Duration {
    let nanos = u128::from(n) * 1_000_000_000 / u128::from(rate.max(1));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// Results of the point-read phase.
#[derive(Debug, Clone)]
pub struct ReadResult {
    /// Requested row reads per second (the /healthz baseline ran at the same rate).
    pub target_rate: u64,
    /// Row reads per second achieved.
    pub achieved_rate: f64,
    /// Duration of the measured reads.
    pub elapsed: Duration,
    /// Latency of `GET /v1/tables/{topic}/rows/{key}`.
    pub rows: LatencySummary,
    /// Latency of `GET /healthz`, interleaved with the row reads.
    pub health: LatencySummary,
}

impl ReadResult {
    /// Row-read p99 divided by /healthz p99.
    pub fn p99_ratio(&self) -> f64 {
        self.rows.p99_ms / self.health.p99_ms.max(1e-6)
    }
}

/// Everything measured by one `table` run.
#[derive(Debug, Clone)]
pub struct TableReport {
    /// Records produced and materialized.
    pub records: u64,
    /// Size of each JSON patch value.
    pub record_bytes: u64,
    /// Distinct row keys.
    pub keys: u64,
    /// Time to produce every record (all delivery reports in).
    pub produce_elapsed: Duration,
    /// Time from the first send until the materializer had applied every record.
    pub materialize_elapsed: Duration,
    /// Broker usage over phase 1, when `--broker-pid` was given.
    pub broker: Option<BrokerUsage>,
    /// Point-read results (none with `--read-seconds 0`).
    pub reads: Option<ReadResult>,
    /// Run parameters, echoed in the JSON output.
    pub params: Map<String, Value>,
}

impl TableReport {
    /// Records materialized per second.
    pub fn records_per_second(&self) -> f64 {
        report::per_second(self.records as f64, self.materialize_elapsed)
    }

    /// Payload megabytes (10^6 bytes) materialized per second.
    pub fn mb_per_second(&self) -> f64 {
        report::per_second(
            (self.records * self.record_bytes) as f64 / MB,
            self.materialize_elapsed,
        )
    }

    /// Human-readable lines (one per phase).
    pub fn text(&self) -> String {
        let mut out = format!(
            "table materialize: {} patch records x {} B over {} keys in {:.2} s = {:.0} records/s, {:.1} MB/s \
             (produce {:.2} s = {:.0} records/s)",
            self.records,
            self.record_bytes,
            self.keys,
            self.materialize_elapsed.as_secs_f64(),
            self.records_per_second(),
            self.mb_per_second(),
            self.produce_elapsed.as_secs_f64(),
            self.records as f64 / self.produce_elapsed.as_secs_f64().max(1e-9),
        );
        if let Some(broker) = &self.broker {
            out.push_str(&format!(
                "; broker CPU {:.2} s, broker peak RSS {:.1} MB (current {:.1} MB)",
                broker.cpu_seconds,
                broker.memory.peak_rss as f64 / MB,
                broker.memory.rss as f64 / MB
            ));
        }
        if let Some(r) = &self.reads {
            let fmt = |l: &LatencySummary| {
                format!(
                    "p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms ({} samples)",
                    l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.samples
                )
            };
            out.push_str(&format!(
                "\ntable reads: {} rows/s target, {:.0} achieved over {:.2} s; row GET {}; \
                 /healthz {}; row/healthz p99 ratio {:.2}",
                r.target_rate,
                r.achieved_rate,
                r.elapsed.as_secs_f64(),
                fmt(&r.rows),
                fmt(&r.health),
                r.p99_ratio()
            ));
        }
        out
    }

    /// One JSON object with every result and parameter.
    pub fn json(&self) -> Value {
        let mut obj = Map::new();
        obj.insert("mode".into(), json!("table"));
        for (k, v) in &self.params {
            obj.insert(k.clone(), v.clone());
        }
        obj.insert("records".into(), json!(self.records));
        obj.insert("record_bytes".into(), json!(self.record_bytes));
        obj.insert("keys".into(), json!(self.keys));
        obj.insert(
            "produce_s".into(),
            json!(self.produce_elapsed.as_secs_f64()),
        );
        obj.insert(
            "materialize_s".into(),
            json!(self.materialize_elapsed.as_secs_f64()),
        );
        obj.insert(
            "materialized_records_per_s".into(),
            json!(self.records_per_second()),
        );
        obj.insert("materialized_mb_per_s".into(), json!(self.mb_per_second()));
        if let Some(broker) = &self.broker {
            obj.insert("broker_cpu_s".into(), json!(broker.cpu_seconds));
            obj.insert(
                "broker_peak_rss_bytes".into(),
                json!(broker.memory.peak_rss),
            );
            obj.insert("broker_rss_bytes".into(), json!(broker.memory.rss));
        }
        if let Some(r) = &self.reads {
            let lat = |l: &LatencySummary| {
                json!({
                    "p50": l.p50_ms,
                    "p90": l.p90_ms,
                    "p99": l.p99_ms,
                    "p99_9": l.p999_ms,
                    "max": l.max_ms,
                    "samples": l.samples,
                })
            };
            obj.insert("read_rate".into(), json!(r.target_rate));
            obj.insert("read_achieved_rate".into(), json!(r.achieved_rate));
            obj.insert("read_latency_ms".into(), lat(&r.rows));
            obj.insert("healthz_latency_ms".into(), lat(&r.health));
            obj.insert("read_p99_ratio".into(), json!(r.p99_ratio()));
        }
        Value::Object(obj)
    }
}

/// Runs the `table` benchmark.
pub fn run(args: &TableArgs) -> Result<TableReport> {
    let common = &args.common;
    let record_bytes = usize::try_from(common.record_bytes)?;
    // Validate the size before touching the broker.
    patch_value(0, record_bytes)?;
    let timeout = Duration::from_secs(args.timeout_s);
    let linger_ms = common.linger_ms_or(cli::DEFAULT_LINGER_MS);
    let broker = common.broker_pid.map(ProcessMonitor::new).transpose()?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let metrics_url = format!("http://{}/metrics", args.http);

    let producer = kafka::create_producer(&kafka::producer_config(common, linger_ms, timeout))?;
    kafka::wait_for_cluster(
        &producer,
        &common.brokers,
        Duration::from_secs(common.connect_timeout_s),
    )?;
    let partitions =
        kafka::ensure_topic_with_config(&producer, common, true, &[("cleanup.policy", "compact")])?;
    // The counter is cumulative: a rerun on the same topic starts from the
    // current value. Wait for a previous run's records to settle first.
    let baseline = settled_merges(&agent, &metrics_url, &common.topic)?;
    let target = baseline + args.records as f64;
    let values = (0..FIELDS.min(args.records))
        .map(|i| patch_value(i, record_bytes))
        .collect::<Result<Vec<_>>>()?;
    let headers = OwnedHeaders::new().insert(Header {
        key: "causeway.op",
        value: Some("patch"),
    });

    let broker_cpu = broker.map(CpuMeter::start).transpose()?;
    let start = Instant::now();
    send_all(&producer, args, &values, &headers, timeout)?;
    finish(&producer, args.records, timeout)?;
    let produce_elapsed = start.elapsed();
    let materialize_elapsed =
        wait_for_merges(&agent, &metrics_url, &common.topic, target, start, timeout)?;
    let broker = match (broker, broker_cpu) {
        (Some(monitor), Some(cpu)) => Some(BrokerUsage {
            cpu_seconds: cpu.elapsed()?,
            memory: monitor.memory()?,
        }),
        _ => None,
    };

    let reads = if args.read_seconds > 0 {
        Some(read_rows(&agent, args)?)
    } else {
        None
    };

    let mut params = report::common_params(common, partitions, linger_ms);
    params.insert("http".into(), json!(args.http));
    params.insert("read_seconds".into(), json!(args.read_seconds));
    Ok(TableReport {
        records: args.records,
        record_bytes: common.record_bytes,
        keys: args.keys,
        produce_elapsed,
        materialize_elapsed,
        broker,
        reads,
        params,
    })
}

/// Current value of the merges counter of `topic` (0 before the first merge).
fn merges(agent: &ureq::Agent, url: &str, topic: &str) -> Result<f64> {
    let (status, body) = get(agent, url)?;
    if status != 200 {
        bail!("GET {url} answered {status}");
    }
    let text = String::from_utf8_lossy(&body);
    Ok(metric_for_topic(&text, MERGES_METRIC, topic).unwrap_or(0.0))
}

/// The merges counter once it has not moved for 200 ms (a previous run on
/// the same topic may still be materializing).
fn settled_merges(agent: &ureq::Agent, url: &str, topic: &str) -> Result<f64> {
    let mut last = merges(agent, url, topic)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = merges(agent, url, topic)?;
        if now == last || Instant::now() > deadline {
            return Ok(now);
        }
        last = now;
    }
}

/// Polls the merges counter every 20 ms until it reaches `target`; returns
/// the time since `start` at which it was seen there.
fn wait_for_merges(
    agent: &ureq::Agent,
    url: &str,
    topic: &str,
    target: f64,
    start: Instant,
    timeout: Duration,
) -> Result<Duration> {
    let deadline = Instant::now() + timeout;
    loop {
        let now = merges(agent, url, topic)?;
        if now >= target {
            return Ok(start.elapsed());
        }
        if Instant::now() > deadline {
            bail!(
                "the materializer of '{topic}' applied {now} records (target {target}) within {} s after producing; \
                 is the topic compacted (cleanup.policy=compact) and is {url} the broker's? (If the log cleaner \
                 compacted segments before the materializer read them, it applied merged rows instead of every \
                 record: measure materializer throughput with compaction idle)",
                timeout.as_secs()
            );
        }
        std::thread::sleep(METRICS_POLL);
    }
}

/// Enqueues every record, keyed `k<i % keys>` (librdkafka partitions by key).
fn send_all(
    producer: &BaseProducer<BenchContext>,
    args: &TableArgs,
    values: &[Vec<u8>],
    headers: &OwnedHeaders,
    timeout: Duration,
) -> Result<()> {
    let topic = args.common.topic.as_str();
    let fields = values.len() as u64;
    for i in 0..args.records {
        let key = row_key(i, args.keys);
        // Record i carries field f<i % 20>; its number is that of the first
        // record with the field, which keeps one value buffer per field.
        let value = &values[usize::try_from(i % fields)?];
        let record = BaseRecord::to(topic)
            .key(key.as_bytes())
            .payload(value.as_slice())
            .headers(headers.clone());
        kafka::send_waiting_for_room(producer, record, timeout)
            .with_context(|| format!("record {i}"))?;
        if i % POLL_EVERY == 0 {
            producer.poll(Duration::ZERO);
            producer.context().check_deliveries()?;
        }
    }
    Ok(())
}

/// Flushes the producer and waits until every delivery report is in.
fn finish(producer: &BaseProducer<BenchContext>, records: u64, timeout: Duration) -> Result<()> {
    let context = producer.context();
    kafka::poll_until(
        producer,
        timeout,
        || producer.flush(Duration::ZERO).is_ok(),
        || {
            format!(
                "flush did not complete within {} s ({} of {records} records delivered)",
                timeout.as_secs(),
                context.delivered()
            )
        },
    )?;
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

/// Sleeps until `start + at` (no-op if that time has passed).
fn sleep_until(start: Instant, at: Duration) {
    let wake = start + at;
    let now = Instant::now();
    if wake > now {
        std::thread::sleep(wake - now);
    }
}

/// Phase 2: paced point reads interleaved with /healthz.
fn read_rows(agent: &ureq::Agent, args: &TableArgs) -> Result<ReadResult> {
    let existing = args.keys.min(args.records);
    let row_url = |key: &str| {
        format!(
            "http://{}/v1/tables/{}/rows/{key}",
            args.http, args.common.topic
        )
    };
    let health_url = format!("http://{}/healthz", args.http);
    let mut rng = SplitMix64::new(0x5eed_cafe);
    let new_hist = || {
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| anyhow!("histogram: {e}"))
    };
    let mut rows = new_hist()?;
    let mut health = new_hist()?;
    let mut failures = 0u64;
    let mut first_failure = None;

    // Warm-up (opens the keep-alive connection); not measured.
    for _ in 0..WARMUP_REQUESTS {
        let key = row_key(rng.below(existing), args.keys);
        let (status, _) = get(agent, &row_url(&key))?;
        if status != 200 {
            bail!("GET {} answered {status} during warm-up", row_url(&key));
        }
        get(agent, &health_url)?;
    }

    // Row reads and health checks alternate, each at --read-rate.
    let total_rate = args.read_rate * 2;
    let requests = args.read_rate * args.read_seconds * 2;
    let start = Instant::now();
    for n in 0..requests {
        sleep_until(start, scheduled_at(n, total_rate));
        let is_row = n % 2 == 0;
        let url = if is_row {
            row_url(&row_key(rng.below(existing), args.keys))
        } else {
            health_url.clone()
        };
        let sent = Instant::now();
        let (status, _) = get(agent, &url)?;
        let micros = u64::try_from(sent.elapsed().as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let hist = if is_row { &mut rows } else { &mut health };
        hist.saturating_record(micros);
        if status != 200 {
            failures += 1;
            first_failure.get_or_insert(format!("GET {url} answered {status}"));
        }
    }
    let elapsed = start.elapsed();
    if let Some(first) = first_failure {
        bail!("{failures} of {requests} reads did not answer 200; first: {first}");
    }
    Ok(ReadResult {
        target_rate: args.read_rate,
        achieved_rate: rows.len() as f64 / elapsed.as_secs_f64().max(1e-9),
        elapsed,
        rows: LatencySummary::from_micros(&rows),
        health: LatencySummary::from_micros(&health),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procstat::Memory;

    #[test]
    fn patch_values_have_the_exact_size_and_are_json_objects() {
        for (i, size) in [(0u64, 200usize), (7, 200), (123_456, 64), (19, 1000)] {
            let v = patch_value(i, size).expect("value");
            assert_eq!(v.len(), size);
            let parsed: Value = serde_json::from_slice(&v).expect("json");
            let obj = parsed.as_object().expect("object");
            assert_eq!(obj[&format!("f{}", i % 20)], json!(i));
            assert!(obj["pad"].as_str().expect("pad").bytes().all(|b| b == b'x'));
        }
        let min = "{\"f0\":0,\"pad\":\"\"}".len();
        assert_eq!(patch_value(0, min).expect("value").len(), min);
        assert!(patch_value(0, min - 1).is_err());
    }

    #[test]
    fn keys_wrap() {
        assert_eq!(row_key(0, 10_000), "k0");
        assert_eq!(row_key(10_001, 10_000), "k1");
        assert_eq!(row_key(5, 1), "k0");
    }

    #[test]
    fn metric_parsing() {
        let text = "# TYPE causeway_table_merges_total counter\n\
                    causeway_table_merges_total{topic=\"bench-table\"} 12345\n\
                    causeway_table_merges_total{topic=\"other\"} 7\n\
                    causeway_table_merges_total_extra{topic=\"bench-table\"} 99\n\
                    causeway_table_lag_records{topic=\"bench-table\",partition=\"0\"} 3\n\
                    causeway_table_lag_records{partition=\"1\",topic=\"bench-table\"} 4 1700000000\n";
        assert_eq!(
            metric_for_topic(text, MERGES_METRIC, "bench-table"),
            Some(12345.0)
        );
        assert_eq!(metric_for_topic(text, MERGES_METRIC, "other"), Some(7.0));
        assert_eq!(metric_for_topic(text, MERGES_METRIC, "bench"), None);
        assert_eq!(
            metric_for_topic(text, "causeway_table_lag_records", "bench-table"),
            Some(7.0)
        );
        assert_eq!(metric_for_topic("", MERGES_METRIC, "t"), None);
    }

    #[test]
    fn rng_is_deterministic_and_in_range() {
        let mut a = SplitMix64::new(1);
        let mut b = SplitMix64::new(1);
        let xs: Vec<u64> = (0..100).map(|_| a.below(10)).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.below(10)).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().all(|&x| x < 10));
        // Every value shows up over 100 draws of 10.
        assert!((0..10).all(|v| xs.contains(&v)));
    }

    #[test]
    fn schedule() {
        assert_eq!(scheduled_at(0, 10_000), Duration::ZERO);
        assert_eq!(scheduled_at(1, 10_000), Duration::from_micros(100));
        assert_eq!(scheduled_at(10_000, 10_000), Duration::from_secs(1));
        assert_eq!(scheduled_at(3, 0), Duration::from_secs(3));
    }

    fn sample_report() -> TableReport {
        let lat = |p99_ms| LatencySummary {
            p50_ms: 0.1,
            p90_ms: 0.2,
            p99_ms,
            p999_ms: 1.0,
            max_ms: 2.0,
            samples: 50_000,
        };
        TableReport {
            records: 1_000_000,
            record_bytes: 200,
            keys: 10_000,
            produce_elapsed: Duration::from_secs(1),
            materialize_elapsed: Duration::from_secs(4),
            broker: Some(BrokerUsage {
                cpu_seconds: 3.5,
                memory: Memory {
                    peak_rss: 80_000_000,
                    rss: 70_000_000,
                },
            }),
            reads: Some(ReadResult {
                target_rate: 5000,
                achieved_rate: 5000.0,
                elapsed: Duration::from_secs(10),
                rows: lat(0.5),
                health: lat(0.25),
            }),
            params: Map::new(),
        }
    }

    #[test]
    fn report_text_and_json() {
        let r = sample_report();
        assert_eq!(r.records_per_second(), 250_000.0);
        assert_eq!(r.mb_per_second(), 50.0);
        let text = r.text();
        assert!(text.starts_with(
            "table materialize: 1000000 patch records x 200 B over 10000 keys in 4.00 s = 250000 records/s, 50.0 MB/s \
             (produce 1.00 s = 1000000 records/s); broker CPU 3.50 s"
        ), "{text}");
        assert!(text.contains("row/healthz p99 ratio 2.00"), "{text}");
        assert!(
            text.contains("row GET p50 0.100 ms, p90 0.200 ms, p99 0.500 ms"),
            "{text}"
        );
        let v = r.json();
        assert_eq!(v["mode"], "table");
        assert_eq!(v["materialized_records_per_s"], 250_000.0);
        assert_eq!(v["read_latency_ms"]["p99"], 0.5);
        assert_eq!(v["healthz_latency_ms"]["p99"], 0.25);
        assert_eq!(v["read_p99_ratio"], 2.0);
        assert!(!v.to_string().contains('\n'));

        let mut r = sample_report();
        r.reads = None;
        r.broker = None;
        assert!(!r.text().contains('\n'));
        assert!(r.json().get("read_latency_ms").is_none());
    }
}
