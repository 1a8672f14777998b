//! `--mode latency`: produces in region 1 at a fixed rate while a consumer in every region reads
//! the topic from its end; each payload carries its send time, so a record's latency is receive
//! time minus send time on one host clock. Region 1's own consumer is the baseline (local
//! end-to-end latency); the other regions' figures include replication.

use std::thread;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use hdrhistogram::Histogram;
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::Message;
use rdkafka::producer::BaseProducer;
use serde_json::json;

use super::regions::{common_for, consumer_in, create_topic_everywhere, Regions};
use super::{flush, ReplicationArgs, ReplicationReport};
use crate::kafka::{self, BenchContext};
use crate::latency::{self, PacedLoad, Shared};
use crate::payload::HEADER_LEN;
use crate::report::LatencySummary;

/// What one region's consumer saw.
struct Consumed {
    histogram: Histogram<u64>,
    received: u64,
    duplicates: u64,
}

pub fn run(args: &ReplicationArgs, regions: &Regions) -> Result<ReplicationReport> {
    let partitions = args.partitions.unwrap_or(1);
    let record_bytes = args.record_bytes.unwrap_or(100).max(HEADER_LEN as u64);
    let linger_ms = args.linger_ms.unwrap_or(0);
    let timeout = Duration::from_secs(args.timeout_s);
    create_topic_everywhere(args, regions, partitions, record_bytes)?;

    let first = common_for(args, regions, 0, partitions, record_bytes);
    let producer = kafka::create_producer(&kafka::producer_config(&first, linger_ms, timeout))?;
    kafka::wait_for_cluster(&producer, &first.brokers, Duration::from_secs(30))?;

    let mut consumers = Vec::new();
    for i in 0..regions.len() {
        let consumer = consumer_in(args, regions, i, partitions, record_bytes)?;
        latency::assign_at_end(&consumer, &args.topic, partitions, Duration::from_secs(30))
            .with_context(|| format!("in region {}", regions.name(i)))?;
        consumers.push(consumer);
    }

    let shared = Shared::new(timeout);
    let (sent, elapsed, consumed) = thread::scope(|scope| {
        let readers: Vec<_> = consumers
            .iter()
            .map(|c| scope.spawn(|| consume(c, &shared)))
            .collect();
        thread::sleep(latency::SETTLE + Duration::from_millis(100));
        let produced = produce_paced(&producer, args, partitions, record_bytes, &shared);
        shared.producer_done(produced.as_ref().ok().map(|(total, _)| *total));
        let consumed = readers
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow!("a consumer thread panicked"))?
            })
            .collect::<Result<Vec<_>>>();
        let (total, elapsed) = produced?;
        Ok::<_, anyhow::Error>((total, elapsed, consumed?))
    })?;

    let warmup = args.rate.saturating_mul(args.warmup_s);
    let measured = sent - warmup;
    let mut lines = vec![format!(
        "replication latency: {} regions, produce in {} at {} records/s for {} s (+{} s warm-up), \
         {} B records, {} partition(s), linger.ms {linger_ms}, acks={}; {measured} measured records \
         sent in {:.2} s",
        regions.len(),
        regions.name(0),
        args.rate,
        args.duration_s,
        args.warmup_s,
        record_bytes,
        partitions,
        args.producer.acks,
        elapsed.as_secs_f64()
    )];
    let mut per_region = Vec::new();
    let mut missing = Vec::new();
    let local_p99 = LatencySummary::from_micros(&consumed[0].histogram).p99_ms;
    for (i, c) in consumed.iter().enumerate() {
        let name = regions.name(i);
        let l = LatencySummary::from_micros(&c.histogram);
        let role = if i == 0 {
            "local (baseline)"
        } else {
            "replicated"
        };
        let mut line = format!(
            "  {} {role}: p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms ({} samples, {} received of {sent})",
            name, l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.samples, c.received
        );
        if i > 0 {
            line.push_str(&format!(
                "; p99 - local p99 = {:.3} ms",
                l.p99_ms - local_p99
            ));
        }
        if c.duplicates > 0 {
            line.push_str(&format!("; {} DUPLICATE records", c.duplicates));
        }
        lines.push(line);
        if c.received < sent {
            missing.push(format!("{name} received {} of {sent}", c.received));
        }
        per_region.push(json!({
            "region": name,
            "local": i == 0,
            "received": c.received,
            "duplicates": c.duplicates,
            "latency_ms": {
                "p50": l.p50_ms, "p90": l.p90_ms, "p99": l.p99_ms,
                "p99_9": l.p999_ms, "max": l.max_ms, "samples": l.samples,
            },
            "p99_minus_local_ms": l.p99_ms - local_p99,
        }));
    }
    if !missing.is_empty() {
        bail!(
            "records missing within {} s after the last send: {}\n{}",
            args.timeout_s,
            missing.join(", "),
            lines.join("\n")
        );
    }
    let json = json!({
        "mode": "replication-latency",
        "regions": regions.len(),
        "topic": args.topic,
        "partitions": partitions,
        "record_bytes": record_bytes,
        "linger_ms": linger_ms,
        "acks": args.producer.acks.as_config(),
        "rate": args.rate,
        "duration_s": args.duration_s,
        "warmup_s": args.warmup_s,
        "sent": sent,
        "measured": measured,
        "send_elapsed_s": elapsed.as_secs_f64(),
        "per_region": per_region,
    });
    Ok(ReplicationReport { lines, json })
}

/// Consumer thread: settles, then records latencies until every record is received, the drain
/// timeout expires or the producer aborts.
fn consume(consumer: &BaseConsumer<BenchContext>, shared: &Shared) -> Result<Consumed> {
    let mut histogram = latency::histogram()?;
    latency::settle(consumer, |_| {});
    let mut received = 0u64;
    let mut duplicates = 0u64;
    let mut last_seen_ns = 0u64;
    latency::poll_until_drained(consumer, shared, |polled| {
        if let Some(Ok(msg)) = polled {
            let now_ns = shared.now_ns();
            if let Some(sent_ns) = shared.sent_ns(&msg) {
                // One partition per default: send times only grow, so a repeat is a duplicate.
                if sent_ns <= last_seen_ns && msg.partition() == 0 && received > 0 {
                    duplicates += 1;
                } else {
                    received += 1;
                    shared.record(&mut histogram, sent_ns, now_ns);
                }
                if msg.partition() == 0 {
                    last_seen_ns = last_seen_ns.max(sent_ns);
                }
            }
        }
        received
    });
    Ok(Consumed {
        histogram,
        received,
        duplicates,
    })
}

/// Sends `--rate` records per second in per-tick bursts for the warm-up and the measured
/// duration, then flushes; returns the records sent and the measured sending time.
fn produce_paced(
    producer: &BaseProducer<BenchContext>,
    args: &ReplicationArgs,
    partitions: i32,
    record_bytes: u64,
    shared: &Shared,
) -> Result<(u64, Duration)> {
    let timeout = Duration::from_secs(args.timeout_s);
    let load = PacedLoad {
        topic: &args.topic,
        partitions,
        record_bytes,
        rate: args.rate,
        warmup_s: args.warmup_s,
        duration_s: args.duration_s,
        timeout,
    };
    let paced = latency::produce_paced(producer, &load, shared, || Ok(()))?;
    flush(producer, timeout)?;
    Ok((paced.total, paced.elapsed))
}
