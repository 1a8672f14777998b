//! Durability: clean restarts keep everything, `kill -9` keeps every acknowledged `acks=all`
//! record, and a torn or garbage log tail is cut off on recovery.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use causeway_integration_tests::batch::batch_spans;
use causeway_integration_tests::load::{AcksAllLoad, LoadOutcome};
use causeway_integration_tests::{
    append_to_file, block_on, create_topic, ensure_eq, payload_str, produce_all, produce_values,
    read_file, read_to_end, segment_files, topic_name, topic_partition_count, wait_until,
    with_broker, BrokerOptions, BrokerProcess, TestRecord, CLIENT_TIMEOUT,
};
use rdkafka::admin::{AdminOptions, ResourceSpecifier};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureProducer;
use rdkafka::Offset;

fn watermarks(broker: &BrokerProcess, topic: &str, partition: i32) -> Result<(i64, i64)> {
    let consumer: BaseConsumer = broker.consumer_config().create()?;
    Ok(consumer.fetch_watermarks(topic, partition, CLIENT_TIMEOUT)?)
}

#[test]
fn clean_restart_keeps_every_message_topic_and_config() {
    with_broker(BrokerOptions::new(), |broker| {
        let topic = topic_name("restart");
        create_topic(broker, &topic, 3, &[("retention.ms", "86400000")])?;
        let producer: FutureProducer = broker
            .producer_config()
            .set("compression.type", "lz4")
            .set("acks", "1")
            .create()?;
        let records: Vec<TestRecord> = (0..300)
            .map(|i| {
                TestRecord::value(format!("m{i}"))
                    .key(format!("k{i}"))
                    .partition(i % 3)
            })
            .collect();
        produce_all(&producer, &topic, &records)?;
        drop(producer);

        let status = broker.terminate()?;
        if !status.success() {
            bail!("SIGTERM shutdown exited with {status}");
        }
        broker.restart()?;

        ensure_eq!(
            topic_partition_count(&broker.bootstrap(), &topic)?,
            Some(3),
            "partitions after restart"
        );
        for p in 0..3 {
            let msgs = read_to_end(&broker.bootstrap(), &topic, p, Offset::Beginning)?;
            let want: Vec<String> = (0..300)
                .filter(|i| i % 3 == p)
                .map(|i| format!("m{i}"))
                .collect();
            let got: Vec<String> = msgs.iter().map(payload_str).collect();
            ensure_eq!(got, want, "partition {p} after restart");
            for (j, m) in msgs.iter().enumerate() {
                ensure_eq!(m.offset(), j as i64);
            }
        }
        let admin = broker.admin();
        let res = block_on(admin.describe_configs(
            [&ResourceSpecifier::Topic(&topic)],
            &AdminOptions::new().operation_timeout(Some(CLIENT_TIMEOUT)),
        ))?;
        let retention = match res.first() {
            Some(Ok(r)) => r.get("retention.ms").and_then(|e| e.value.clone()),
            other => bail!("describe_configs after restart: {other:?}"),
        };
        ensure_eq!(
            retention.as_deref(),
            Some("86400000"),
            "config after restart"
        );

        // Offsets continue where they stopped.
        let offs = produce_values(&broker.producer(), &topic, 0, &["after-restart"])?;
        ensure_eq!(offs, vec![100]);
        Ok(())
    });
}

#[test]
fn kill_9_keeps_every_acknowledged_acks_all_record_in_order() {
    with_broker(BrokerOptions::new(), |broker| {
        let topic = topic_name("kill9");
        create_topic(broker, &topic, 1, &[])?;
        let load = AcksAllLoad::start(&broker.bootstrap(), &topic, "seq", 32, 4_000)?;
        let enough = wait_until(Duration::from_secs(20), || load.acknowledged() >= 500);
        broker.kill9();
        let LoadOutcome { sent, acked } = load.stop()?;
        if !enough {
            bail!("only {} records acknowledged within 20 s", acked.len());
        }

        broker.restart()?;
        let msgs = read_to_end(&broker.bootstrap(), &topic, 0, Offset::Beginning)?;
        let mut seqs = Vec::with_capacity(msgs.len());
        for (i, m) in msgs.iter().enumerate() {
            ensure_eq!(m.offset(), i as i64, "offsets are dense");
            let p = payload_str(m);
            let s: u64 = p
                .strip_prefix("seq-")
                .and_then(|s| s.parse().ok())
                .with_context(|| format!("bad payload {p:?} at offset {i}"))?;
            seqs.push(s);
        }
        for w in seqs.windows(2) {
            if w[1] <= w[0] {
                bail!(
                    "order broken or duplicate after recovery: {} then {}",
                    w[0],
                    w[1]
                );
            }
        }
        for (s, off) in &acked {
            match msgs.get(*off as usize) {
                Some(m) if payload_str(m) == *s => {}
                Some(m) => bail!(
                    "acknowledged {s} at offset {off} lost: offset holds {:?}",
                    payload_str(m)
                ),
                None => bail!(
                    "acknowledged seq {s} at offset {off} lost: log ends at {} (sent {sent}, acked {})",
                    msgs.len(),
                    acked.len()
                ),
            }
        }
        eprintln!(
            "kill -9: {sent} sent, {} acknowledged, {} recovered",
            acked.len(),
            msgs.len()
        );
        // The recovered broker accepts new records right after the recovered ones.
        let offs = produce_values(&broker.producer(), &topic, 0, &["after-crash"])?;
        ensure_eq!(offs, vec![msgs.len() as i64]);
        Ok(())
    });
}

/// Produces `n` records to partition 0 in several batches; returns the values.
fn fill(broker: &BrokerProcess, topic: &str, n: usize) -> Result<Vec<String>> {
    let producer: FutureProducer = broker.producer_config().set("acks", "all").create()?;
    let values: Vec<String> = (0..n).map(|i| format!("rec-{i}")).collect();
    for chunk in values.chunks(5) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        produce_values(&producer, topic, 0, &refs)?;
    }
    Ok(values)
}

fn last_segment(broker: &BrokerProcess, topic: &str) -> Result<std::path::PathBuf> {
    let segs = segment_files(&broker.partition_dir(topic, 0))?;
    segs.last()
        .cloned()
        .with_context(|| format!("no .log segment for {topic}-0"))
}

fn check_recovered(broker: &BrokerProcess, topic: &str, values: &[String]) -> Result<()> {
    let n = values.len() as i64;
    ensure_eq!(
        watermarks(broker, topic, 0)?,
        (0, n),
        "watermarks after recovery"
    );
    let msgs = read_to_end(&broker.bootstrap(), topic, 0, Offset::Beginning)?;
    let got: Vec<String> = msgs.iter().map(payload_str).collect();
    ensure_eq!(got, values.to_vec(), "records after recovery");
    let offs = produce_values(&broker.producer(), topic, 0, &["new-1", "new-2"])?;
    ensure_eq!(offs, vec![n, n + 1], "new records continue at the log end");
    let msgs = read_to_end(&broker.bootstrap(), topic, 0, Offset::Offset(n - 1))?;
    let got: Vec<String> = msgs.iter().map(payload_str).collect();
    ensure_eq!(
        got,
        vec![
            values[values.len() - 1].clone(),
            "new-1".into(),
            "new-2".into()
        ]
    );
    Ok(())
}

#[test]
fn torn_batch_tail_is_truncated_on_restart() {
    with_broker(BrokerOptions::new(), |broker| {
        let topic = topic_name("torn");
        create_topic(broker, &topic, 1, &[])?;
        let values = fill(broker, &topic, 20)?;
        let status = broker.terminate()?;
        if !status.success() {
            bail!("SIGTERM shutdown exited with {status}");
        }
        let seg = last_segment(broker, &topic)?;
        let bytes = read_file(&seg)?;
        let spans = batch_spans(&bytes);
        let (start, len) = *spans
            .last()
            .with_context(|| format!("no complete batch in {}", seg.display()))?;
        if start + len != bytes.len() {
            bail!(
                "{} has {} bytes after its last complete batch before the test touched it",
                seg.display(),
                bytes.len() - start - len
            );
        }
        // A copy of the last batch, renumbered as the next batch, cut short before its end, then
        // followed by garbage: the length field is satisfied but the CRC cannot match.
        let mut torn = bytes[start..start + len].to_vec();
        torn[..8].copy_from_slice(&(values.len() as i64).to_be_bytes());
        torn.truncate(len - 9);
        torn.extend((0..64u8).map(|i| i.wrapping_mul(37) ^ 0x5a));
        append_to_file(&seg, &torn)?;

        broker.restart()?;
        check_recovered(broker, &topic, &values)
    });
}

#[test]
fn garbage_tail_after_kill_9_is_truncated_on_restart() {
    with_broker(BrokerOptions::new(), |broker| {
        let topic = topic_name("garbage");
        create_topic(broker, &topic, 1, &[])?;
        let values = fill(broker, &topic, 23)?;
        broker.kill9();
        let seg = last_segment(broker, &topic)?;
        // A plausible header (next base offset, huge length) followed by noise.
        let mut garbage = Vec::new();
        garbage.extend_from_slice(&(values.len() as i64).to_be_bytes());
        garbage.extend_from_slice(&0x7fff_fff0_i32.to_be_bytes());
        garbage.extend((0..50u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
        append_to_file(&seg, &garbage)?;

        broker.restart()?;
        check_recovered(broker, &topic, &values)
    });
}

#[test]
fn truncated_partial_batch_alone_is_truncated_on_restart() {
    with_broker(BrokerOptions::new(), |broker| {
        let topic = topic_name("partial");
        create_topic(broker, &topic, 1, &[])?;
        let values = fill(broker, &topic, 10)?;
        let status = broker.terminate()?;
        if !status.success() {
            bail!("SIGTERM shutdown exited with {status}");
        }
        let seg = last_segment(broker, &topic)?;
        let bytes = read_file(&seg)?;
        let (start, len) = *batch_spans(&bytes)
            .last()
            .with_context(|| format!("no complete batch in {}", seg.display()))?;
        // Only the first half of a copy: the file ends inside the batch.
        let mut half = bytes[start..start + len / 2].to_vec();
        half[..8].copy_from_slice(&(values.len() as i64).to_be_bytes());
        append_to_file(&seg, &half)?;

        broker.restart()?;
        check_recovered(broker, &topic, &values)
    });
}

/// Leader epochs across a restart (KIP-320): a librdkafka consumer positioned past a log tail
/// that was lost while the broker was down (the last batch cut from the segment after
/// `kill -9`, as a lost disk write would leave it) finds the truncation through
/// OffsetForLeaderEpoch once the restart's new epoch shows, and resumes where the log now ends.
/// Without epochs it would fetch from its old position and silently skip the first records
/// written after the restart (or, with nothing there yet, be reset to the end).
#[test]
fn a_consumer_past_a_lost_tail_resumes_where_the_log_now_ends() {
    with_broker(BrokerOptions::new(), |broker| {
        let topic = topic_name("epochs");
        create_topic(broker, &topic, 1, &[])?;
        let values = fill(broker, &topic, 20)?;
        let consumer: BaseConsumer = broker
            .consumer_config()
            .set("auto.offset.reset", "latest")
            .create()?;
        let mut assignment = rdkafka::TopicPartitionList::new();
        assignment.add_partition_offset(&topic, 0, Offset::Beginning)?;
        consumer.assign(&assignment)?;
        let before = poll_values(&consumer, values.len(), Duration::from_secs(30))?;
        let expected: Vec<(i64, String)> = (0..).zip(values.iter().cloned()).collect();
        ensure_eq!(before, expected, "records read before the restart");

        broker.kill9();
        let seg = last_segment(broker, &topic)?;
        let bytes = read_file(&seg)?;
        let spans = batch_spans(&bytes);
        let (kept_start, kept_len) = *spans
            .get(spans.len().saturating_sub(2))
            .with_context(|| format!("fewer than two batches in {}", seg.display()))?;
        let kept = (kept_start + kept_len) as u64;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&seg)?
            .set_len(kept)?;
        broker.restart()?;
        let log_end = watermarks(broker, &topic, 0)?.1;
        if log_end >= values.len() as i64 {
            bail!("the log still ends at {log_end} after its last batch was cut");
        }

        let new: Vec<String> = (0..10).map(|i| format!("after-restart-{i}")).collect();
        let refs: Vec<&str> = new.iter().map(String::as_str).collect();
        let offsets = produce_values(&broker.producer(), &topic, 0, &refs)?;
        ensure_eq!(
            offsets.first().copied(),
            Some(log_end),
            "first offset after the restart"
        );
        let after = poll_values(&consumer, new.len(), Duration::from_secs(30))?;
        let expected: Vec<(i64, String)> = (log_end..).zip(new).collect();
        ensure_eq!(
            after,
            expected,
            "records the consumer reads after the restart"
        );
        Ok(())
    });
}

/// Polls `consumer` until it has `n` records or `timeout` passes; returns (offset, value) pairs.
fn poll_values(consumer: &BaseConsumer, n: usize, timeout: Duration) -> Result<Vec<(i64, String)>> {
    let deadline = std::time::Instant::now() + timeout;
    let mut got = Vec::new();
    while got.len() < n && std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => got.push((m.offset(), payload_str(&m.detach()))),
            // Connection errors while the broker restarts; the client retries by itself.
            Some(Err(e)) => eprintln!("consumer: {e}"),
            None => {}
        }
    }
    Ok(got)
}

/// `flush.ms` is applied: acks=1 batches of a topic that sets it are fsynced once they have
/// waited that long (counted per topic), and those of a topic that does not are left to the
/// kernel, as in Kafka.
#[test]
fn flush_ms_fsyncs_acks_1_batches_once_they_have_waited() {
    use causeway_integration_tests::regions::metric;
    with_broker(BrokerOptions::new(), |broker| {
        let (flushed, unflushed) = (topic_name("flush-ms"), topic_name("no-flush-ms"));
        create_topic(broker, &flushed, 1, &[("flush.ms", "300")])?;
        create_topic(broker, &unflushed, 1, &[])?;
        let producer: FutureProducer = broker.producer_config().set("acks", "1").create()?;
        produce_values(&producer, &flushed, 0, &["a", "b"])?;
        produce_values(&producer, &unflushed, 0, &["a", "b"])?;
        let series = |topic: &str| format!("causeway_log_flushes_total{{topic=\"{topic}\"}}");
        let synced = wait_until(Duration::from_secs(10), || {
            metric(broker, &series(&flushed)).is_ok_and(|n| n.is_some_and(|n| n >= 1.0))
        });
        if !synced {
            bail!("a topic with flush.ms=300 was never fsynced for it");
        }
        ensure_eq!(
            metric(broker, &series(&unflushed))?,
            None,
            "fsyncs for flush.ms of a topic without it"
        );
        Ok(())
    });
}
