//! `--mode throughput`: produces a fixed volume (acks=1) into region 1 only (`--writers one`) or
//! split evenly over every region in parallel (`--writers all`), then polls every region's
//! `GET /v1/regions` until its vector clock holds every batch the writers appended. Reports the
//! wall time to convergence, the bytes each region applied from its peers and MB/s, and each
//! region's CPU seconds (from `/proc/PID/stat`) per GB applied (and, for writers, per GB
//! ingested). Finally checks that every region's partitions hold exactly the records produced.

use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rdkafka::consumer::Consumer;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::{json, Map, Value};

use super::regions::{common_for, consumer_in, create_topic_everywhere, Regions};
use super::{flush, median, ReplicationArgs, ReplicationReport, Writers, GB, MB};
use crate::kafka::{self, BenchContext};
use crate::payload::PayloadPool;
use crate::procstat::ProcessMonitor;

/// Interval between convergence polls of `/v1/regions`.
const POLL: Duration = Duration::from_millis(20);

/// What a run produces, and where.
struct Plan {
    partitions: i32,
    record_bytes: u64,
    linger_ms: u64,
    timeout: Duration,
    total_records: u64,
    /// Regions that produce, each with the records it sends.
    writers: Vec<(usize, u64)>,
}

impl Plan {
    fn new(args: &ReplicationArgs, regions: usize) -> Plan {
        let record_bytes = args.record_bytes.unwrap_or(1024);
        let total_records = (args.bytes / record_bytes).max(1);
        let writers: Vec<usize> = match args.writers {
            Writers::One => vec![0],
            Writers::All => (0..regions).collect(),
        };
        let share = total_records / writers.len() as u64;
        let first_share = total_records - share * (writers.len() as u64 - 1);
        Plan {
            partitions: args.partitions.unwrap_or(6),
            record_bytes,
            linger_ms: args.linger_ms.unwrap_or(5),
            timeout: Duration::from_secs(args.timeout_s),
            total_records,
            writers: writers
                .into_iter()
                .enumerate()
                .map(|(k, w)| (w, if k == 0 { first_share } else { share }))
                .collect(),
        }
    }

    /// Records region `i` produces (0 for an applier).
    fn share_of(&self, i: usize) -> u64 {
        self.writers
            .iter()
            .find(|(w, _)| *w == i)
            .map_or(0, |(_, records)| *records)
    }

    fn is_writer(&self, i: usize) -> bool {
        self.writers.iter().any(|(w, _)| *w == i)
    }
}

/// A region's counters at one moment.
#[derive(Debug, Clone)]
struct Snapshot {
    /// Per origin region name: batches of that origin held (summed over partitions).
    clock: Map<String, Value>,
    /// Bytes applied from every link.
    applied_bytes: u64,
    /// Batches applied from every link.
    applied_batches: u64,
    /// Batches waiting in pending queues.
    buffered: u64,
    /// Duplicates and refusals over every link.
    duplicates: u64,
    refused: u64,
}

impl Snapshot {
    fn take(regions: &Regions, i: usize) -> Result<Snapshot> {
        let status = regions.status(i)?;
        let clock = status["clock"].as_object().cloned().unwrap_or_default();
        let peers = status["peers"].as_array().cloned().unwrap_or_default();
        let sum = |key: &str| peers.iter().map(|p| p[key].as_u64().unwrap_or(0)).sum();
        Ok(Snapshot {
            clock,
            applied_bytes: sum("bytes_applied"),
            applied_batches: sum("batches_applied"),
            buffered: status["buffered_batches"].as_u64().unwrap_or(0),
            duplicates: sum("duplicates"),
            refused: sum("refused"),
        })
    }

    fn clock_of(&self, origin: &str) -> u64 {
        self.clock.get(origin).and_then(Value::as_u64).unwrap_or(0)
    }
}

/// Every region's counters and CPU time at one moment.
struct Moment {
    snapshots: Vec<Snapshot>,
    cpu_s: Vec<f64>,
}

impl Moment {
    fn take(regions: &Regions, monitors: &[ProcessMonitor]) -> Result<Moment> {
        Ok(Moment {
            cpu_s: monitors
                .iter()
                .map(ProcessMonitor::cpu_seconds)
                .collect::<Result<_>>()?,
            snapshots: (0..regions.len())
                .map(|i| Snapshot::take(regions, i))
                .collect::<Result<_>>()?,
        })
    }
}

/// What happened at one region during a throughput run.
struct RegionResult {
    name: String,
    writer: bool,
    ingested_bytes: u64,
    converged: Duration,
    cpu_s: f64,
    /// Payload bytes of the records this region had to receive from others (exact).
    applied_bytes: u64,
    /// What the region's links report as `bytes_applied` (batch bytes; over-counts when a
    /// response mixes duplicates with new batches).
    counted_applied_bytes: u64,
    applied_batches: u64,
    duplicates: u64,
    refused: u64,
    metrics_applied_bytes: Option<f64>,
    metrics_served_bytes: Option<f64>,
    records_held: i64,
    peak_rss: u64,
    idle_cpu_per_s: Option<f64>,
}

/// The run's overall figures.
struct Totals {
    produced: Duration,
    wall: Duration,
    client_cpu: f64,
    /// Per writer region name: the sequence every region's clock must reach.
    expected: Vec<(String, u64)>,
}

/// Runs `--mode throughput` against running regions.
pub fn run(args: &ReplicationArgs, regions: &Regions) -> Result<ReplicationReport> {
    let plan = Plan::new(args, regions.len());
    create_topic_everywhere(args, regions, plan.partitions, plan.record_bytes)?;
    let producers = connect_writers(args, regions, &plan)?;
    let monitors = (0..regions.len())
        .map(|i| ProcessMonitor::new(regions.pid(i)?))
        .collect::<Result<Vec<_>>>()?;
    let idle_rates = idle_cpu_rates(&monitors, args.idle_s)?;
    let before = Moment::take(regions, &monitors)?;
    let client = ProcessMonitor::new(std::process::id())?;
    let client_cpu_before = client.cpu_seconds()?;

    let start = Instant::now();
    let produced = produce_everywhere(args, &plan, &producers, start)?;
    let expected = plan
        .writers
        .iter()
        .map(|&(w, _)| {
            let name = regions.name(w);
            Ok((name.to_string(), Snapshot::take(regions, w)?.clock_of(name)))
        })
        .collect::<Result<Vec<_>>>()?;
    let converged = wait_converged(args, regions, &expected, start)?;
    let wall = start.elapsed();
    let after = Moment::take(regions, &monitors)?;
    let client_cpu = client.cpu_seconds()? - client_cpu_before;

    let mut results = Vec::new();
    for (i, converged) in converged.into_iter().enumerate() {
        let delta = |f: fn(&Snapshot) -> u64| f(&after.snapshots[i]) - f(&before.snapshots[i]);
        let writer_share = plan.share_of(i);
        let metrics = regions.metrics(i);
        let metric = |name: &str| {
            metrics
                .as_deref()
                .and_then(|m| crate::table::metric_for_topic(m, name, &args.topic))
        };
        results.push(RegionResult {
            name: regions.name(i).to_string(),
            writer: plan.is_writer(i),
            ingested_bytes: writer_share * plan.record_bytes,
            converged,
            cpu_s: after.cpu_s[i] - before.cpu_s[i],
            applied_bytes: (plan.total_records - writer_share) * plan.record_bytes,
            counted_applied_bytes: delta(|s| s.applied_bytes),
            applied_batches: delta(|s| s.applied_batches),
            duplicates: delta(|s| s.duplicates),
            refused: delta(|s| s.refused),
            metrics_applied_bytes: metric("causeway_replication_applied_bytes_total"),
            metrics_served_bytes: metric("causeway_replication_served_bytes_total"),
            records_held: records_held(args, regions, &plan, i)?,
            peak_rss: monitors[i].memory().map(|m| m.peak_rss).unwrap_or(0),
            idle_cpu_per_s: idle_rates[i],
        });
    }
    let totals = Totals {
        produced,
        wall,
        client_cpu,
        expected,
    };
    report(args, regions, &plan, &results, &totals)
}

/// One producer per writer region, connected before the clock starts.
fn connect_writers(
    args: &ReplicationArgs,
    regions: &Regions,
    plan: &Plan,
) -> Result<Vec<(u64, BaseProducer<BenchContext>)>> {
    plan.writers
        .iter()
        .map(|&(w, records)| {
            let common = common_for(args, regions, w, plan.partitions, plan.record_bytes);
            let producer = kafka::create_producer(&kafka::producer_config(
                &common,
                plan.linger_ms,
                plan.timeout,
            ))?;
            kafka::wait_for_cluster(&producer, &common.brokers, Duration::from_secs(30))?;
            Ok((records, producer))
        })
        .collect()
}

/// Each region's background CPU per second over `idle_s` of an idle mesh (long-poll
/// heartbeats, the 5 ms syncer, timers); `None` each when `idle_s` is 0.
fn idle_cpu_rates(monitors: &[ProcessMonitor], idle_s: u64) -> Result<Vec<Option<f64>>> {
    if idle_s == 0 {
        return Ok(vec![None; monitors.len()]);
    }
    let before = monitors
        .iter()
        .map(ProcessMonitor::cpu_seconds)
        .collect::<Result<Vec<_>>>()?;
    let idle_start = Instant::now();
    thread::sleep(Duration::from_secs(idle_s));
    let secs = idle_start.elapsed().as_secs_f64();
    monitors
        .iter()
        .zip(before)
        .map(|(m, b)| Ok(Some((m.cpu_seconds()? - b) / secs)))
        .collect()
}

/// Every writer sends its share in parallel; returns when the last one has every ack, as time
/// since `start`.
fn produce_everywhere(
    args: &ReplicationArgs,
    plan: &Plan,
    producers: &[(u64, BaseProducer<BenchContext>)],
    start: Instant,
) -> Result<Duration> {
    let produce_times = thread::scope(|scope| {
        let handles: Vec<_> = producers
            .iter()
            .map(|(records, producer)| {
                scope.spawn(move || {
                    produce_volume(producer, &args.topic, plan, *records).map(|()| start.elapsed())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow!("a producer thread panicked"))?
            })
            .collect::<Result<Vec<_>>>()
    })?;
    Ok(produce_times.into_iter().max().unwrap_or_default())
}

/// Polls every region until its clock reaches every writer's `expected` sequence; returns when
/// each did, as time since `start`.
fn wait_converged(
    args: &ReplicationArgs,
    regions: &Regions,
    expected: &[(String, u64)],
    start: Instant,
) -> Result<Vec<Duration>> {
    let mut converged: Vec<Option<Duration>> = vec![None; regions.len()];
    let deadline = Instant::now() + Duration::from_secs(args.timeout_s);
    loop {
        for (i, done) in converged.iter_mut().enumerate() {
            if done.is_none() {
                let s = Snapshot::take(regions, i)?;
                if expected.iter().all(|(o, seq)| s.clock_of(o) >= *seq) {
                    *done = Some(start.elapsed());
                }
            }
        }
        if converged.iter().all(Option::is_some) {
            return Ok(converged.into_iter().flatten().collect());
        }
        if Instant::now() >= deadline {
            let mut state = Vec::new();
            for i in 0..regions.len() {
                let s = Snapshot::take(regions, i)?;
                state.push(format!(
                    "{}: clock {:?}, buffered {}",
                    regions.name(i),
                    s.clock,
                    s.buffered
                ));
            }
            bail!(
                "not converged {} s after producing ended; expected {expected:?}; {}",
                args.timeout_s,
                state.join("; ")
            );
        }
        thread::sleep(POLL);
    }
}

/// Records region `i`'s partitions hold (high minus low watermarks).
fn records_held(args: &ReplicationArgs, regions: &Regions, plan: &Plan, i: usize) -> Result<i64> {
    let consumer = consumer_in(args, regions, i, plan.partitions, plan.record_bytes)?;
    let mut held = 0i64;
    for p in 0..plan.partitions {
        let (low, high) = consumer
            .fetch_watermarks(&args.topic, p, Duration::from_secs(30))
            .with_context(|| {
                format!(
                    "cannot read the watermarks of {}/{p} in {}",
                    args.topic,
                    regions.name(i)
                )
            })?;
        held += high - low;
    }
    Ok(held)
}

/// CPU seconds per GB of `bytes`, if any.
fn per_gb(cpu: f64, bytes: u64) -> Option<f64> {
    (bytes > 0).then(|| cpu / (bytes as f64 / GB))
}

/// A figure with two decimals, or `-`.
fn two_decimals(x: Option<f64>) -> String {
    x.map_or("-".to_string(), |v| format!("{v:.2}"))
}

/// The text and JSON of a run; fails if a region holds the wrong number of records.
fn report(
    args: &ReplicationArgs,
    regions: &Regions,
    plan: &Plan,
    results: &[RegionResult],
    totals: &Totals,
) -> Result<ReplicationReport> {
    let total_payload = plan.total_records * plan.record_bytes;
    let wall_s = totals.wall.as_secs_f64();
    let writer_names: Vec<&str> = plan.writers.iter().map(|&(w, _)| regions.name(w)).collect();
    let writers = match args.writers {
        Writers::One => "one",
        Writers::All => "all",
    };
    let mut lines = vec![format!(
        "replication throughput: {} regions, writers {writers} ({}), {} records x {} B = {:.1} MB, \
         {} partitions, linger.ms {}, acks={}; produced (all acks) in {:.2} s, \
         every region converged in {wall_s:.2} s ({:.1} MB/s of payload end to end); client CPU {:.2} s",
        regions.len(),
        writer_names.join(","),
        plan.total_records,
        plan.record_bytes,
        total_payload as f64 / MB,
        plan.partitions,
        plan.linger_ms,
        args.producer.acks,
        totals.produced.as_secs_f64(),
        total_payload as f64 / MB / wall_s.max(1e-9),
        totals.client_cpu,
    )];
    let mut per_region = Vec::new();
    let mut wrong = Vec::new();
    let mut apply_costs = Vec::new();
    for r in results {
        let applied_cost = per_gb(r.cpu_s, r.applied_bytes);
        if !r.writer || args.writers == Writers::All {
            apply_costs.extend(applied_cost);
        }
        let (line, json) = region_report(r, wall_s);
        lines.push(line);
        per_region.push(json);
        if r.records_held != i64::try_from(plan.total_records)? {
            wrong.push(format!(
                "{} holds {} records, expected {}",
                r.name, r.records_held, plan.total_records
            ));
        }
    }
    let total_cpu: f64 = results.iter().map(|r| r.cpu_s).sum();
    let total_applied: u64 = results.iter().map(|r| r.applied_bytes).sum();
    let median_apply = median(&apply_costs);
    lines.push(format!(
        "  summary: median CPU per GB applied at {} {} s/GB; all regions together {:.2} CPU-s for {:.1} MB applied \
         ({:.2} s/GB applied, {:.2} s/GB counting ingest too)",
        if args.writers == Writers::One { "the appliers" } else { "a region" },
        two_decimals(median_apply),
        total_cpu,
        total_applied as f64 / MB,
        total_cpu / (total_applied as f64 / GB).max(1e-12),
        total_cpu / ((total_applied + total_payload) as f64 / GB).max(1e-12),
    ));
    if !wrong.is_empty() {
        bail!(
            "regions converged by their clocks but hold the wrong number of records: {}\n{}",
            wrong.join("; "),
            lines.join("\n")
        );
    }
    let json = json!({
        "mode": "replication-throughput",
        "regions": regions.len(),
        "writers": writers,
        "topic": args.topic,
        "partitions": plan.partitions,
        "record_bytes": plan.record_bytes,
        "records": plan.total_records,
        "payload_bytes": total_payload,
        "linger_ms": plan.linger_ms,
        "acks": args.producer.acks.as_config(),
        "produce_s": totals.produced.as_secs_f64(),
        "converged_s": wall_s,
        "idle_s": args.idle_s,
        "client_cpu_s": totals.client_cpu,
        "expected_clock": totals.expected.iter().map(|(o, s)| (o.clone(), json!(s))).collect::<Map<_, _>>(),
        "median_cpu_s_per_gb_applied": median_apply,
        "total_cpu_s": total_cpu,
        "total_applied_bytes": total_applied,
        "per_region": per_region,
    });
    Ok(ReplicationReport { lines, json })
}

/// One region's line and JSON object; `wall_s` is the run's time to convergence.
fn region_report(r: &RegionResult, wall_s: f64) -> (String, Value) {
    let applied_cost = per_gb(r.cpu_s, r.applied_bytes);
    let ingest_cost = per_gb(r.cpu_s, r.ingested_bytes);
    let both_cost = per_gb(r.cpu_s, r.applied_bytes + r.ingested_bytes);
    // CPU above what the region would have used idle over the same wall time.
    let net_cpu = r.idle_cpu_per_s.map(|rate| r.cpu_s - rate * wall_s);
    let net_applied_cost = net_cpu.and_then(|c| per_gb(c, r.applied_bytes));
    let applied_mb_per_s = r.applied_bytes as f64 / MB / r.converged.as_secs_f64().max(1e-9);
    let line = format!(
        "  {} {}: converged {:.2} s, applied {:.1} MB payload in {} batches ({applied_mb_per_s:.1} MB/s; links count {:.1} MB), CPU {:.2} s = {} s/GB applied{}, \
         idle CPU {} cores (net of idle: {} s/GB applied), peak RSS {:.0} MB, records held {}{}{}",
        r.name,
        if r.writer { "writer" } else { "applier" },
        r.converged.as_secs_f64(),
        r.applied_bytes as f64 / MB,
        r.applied_batches,
        r.counted_applied_bytes as f64 / MB,
        r.cpu_s,
        two_decimals(applied_cost),
        if r.writer {
            format!(
                ", {} s/GB ingested, {} s/GB ingested+applied",
                two_decimals(ingest_cost),
                two_decimals(both_cost)
            )
        } else {
            String::new()
        },
        r.idle_cpu_per_s.map_or("-".to_string(), |v| format!("{v:.3}")),
        two_decimals(net_applied_cost),
        r.peak_rss as f64 / MB,
        r.records_held,
        if r.duplicates > 0 { format!(", {} duplicates", r.duplicates) } else { String::new() },
        if r.refused > 0 { format!(", {} REFUSED", r.refused) } else { String::new() },
    );
    let json = json!({
        "region": r.name,
        "writer": r.writer,
        "ingested_bytes": r.ingested_bytes,
        "converged_s": r.converged.as_secs_f64(),
        "applied_payload_bytes": r.applied_bytes,
        "links_bytes_applied": r.counted_applied_bytes,
        "applied_batches": r.applied_batches,
        "applied_mb_per_s": applied_mb_per_s,
        "cpu_s": r.cpu_s,
        "cpu_s_per_gb_applied": applied_cost,
        "cpu_s_per_gb_ingested": ingest_cost,
        "cpu_s_per_gb_ingested_and_applied": both_cost,
        "idle_cpu_s_per_s": r.idle_cpu_per_s,
        "cpu_s_per_gb_applied_net_of_idle": net_applied_cost,
        "duplicates": r.duplicates,
        "refused": r.refused,
        "metrics_applied_bytes": r.metrics_applied_bytes,
        "metrics_served_bytes": r.metrics_served_bytes,
        "records_held": r.records_held,
        "peak_rss_bytes": r.peak_rss,
    });
    (line, json)
}

/// Sends `records` records round-robin over the partitions as fast as librdkafka allows and
/// waits for every delivery report.
fn produce_volume(
    producer: &BaseProducer<BenchContext>,
    topic: &str,
    plan: &Plan,
    records: u64,
) -> Result<()> {
    let pool = PayloadPool::new(usize::try_from(plan.record_bytes)?);
    let partitions = u64::try_from(plan.partitions)?;
    for i in 0..records {
        let partition = i32::try_from(i % partitions)?;
        kafka::send_waiting_for_room::<()>(
            producer,
            BaseRecord::to(topic)
                .partition(partition)
                .payload(pool.get(i)),
            plan.timeout,
        )?;
        if i % 256 == 0 {
            producer.poll(Duration::ZERO);
            producer.context().check_deliveries()?;
        }
    }
    flush(producer, plan.timeout)
}
