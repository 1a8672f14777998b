//! The background scrub finds a batch damaged inside a closed segment of a single region (no
//! peer ever reads it, so nothing else would), reports it in `/readyz` and the metrics, finds it
//! again after a restart, and clients keep their service meanwhile; consumers are served the
//! batches before it and an error at it, never its bytes.

use std::os::unix::fs::FileExt;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use causeway_integration_tests::batch::batch_spans;
use causeway_integration_tests::regions;
use causeway_integration_tests::{
    create_topic, http_get, produce_all, segment_files, wait_until, BrokerOptions, BrokerProcess,
    TestRecord,
};

const TOPIC: &str = "scrubbed";
const FOUND_TIMEOUT: Duration = Duration::from_secs(30);
const KAFKA_STORAGE_ERROR: i16 = 56;

/// A metric's value, 0 while it has not been emitted yet.
fn metric(broker: &BrokerProcess, name: &str) -> Result<f64> {
    Ok(regions::metric(broker, name)?.unwrap_or(0.0))
}

fn reports_damage(broker: &BrokerProcess) -> bool {
    http_get(broker.http_addr(), "/readyz")
        .is_ok_and(|(_, body)| body.contains(&format!("damaged batch: {TOPIC}-0 offsets")))
}

#[test]
fn the_scrub_finds_a_damaged_batch_in_a_closed_segment_that_nobody_reads() -> Result<()> {
    let mut broker = BrokerProcess::start(
        BrokerOptions::new()
            .flag("--log-segment-bytes-min", 4096)
            .flag("--scrub-interval-ms", 200),
    )?;
    create_topic(&broker, TOPIC, 1, &[("segment.bytes", "4096")])?;
    let records: Vec<TestRecord> = (0..200)
        .map(|i| TestRecord::value(format!("record {i:04} {}", "x".repeat(100))))
        .collect();
    let producer = broker.producer();
    for chunk in records.chunks(10) {
        produce_all(&producer, TOPIC, chunk)?;
    }
    let segments = segment_files(&broker.partition_dir(TOPIC, 0))?;
    ensure!(segments.len() >= 3, "several segments: {segments:?}");

    // Whole scrub passes run over the sound log and find nothing.
    let before = metric(&broker, "causeway_scrub_passes_total")?;
    ensure!(
        wait_until(FOUND_TIMEOUT, || metric(
            &broker,
            "causeway_scrub_passes_total"
        )
        .is_ok_and(|passes| passes >= before + 2.0)),
        "no scrub pass completed:\n{}",
        broker.stderr_tail(30)
    );
    ensure!(!reports_damage(&broker), "a sound log reported damaged");

    // The medium flips a byte inside the first (closed) segment's second batch.
    let first = &segments[0];
    let log = std::fs::read(first)?;
    let spans = batch_spans(&log);
    ensure!(spans.len() >= 2, "batches in the first segment");
    let (start, length) = spans[1];
    let at = start + length - 1;
    std::fs::OpenOptions::new()
        .write(true)
        .open(first)?
        .write_all_at(&[log[at] ^ 0xFF], at as u64)?;

    ensure!(
        wait_until(FOUND_TIMEOUT, || reports_damage(&broker)),
        "the scrub never reported the damaged batch:\n{}",
        broker.stderr_tail(30)
    );
    ensure!(
        metric(&broker, "causeway_storage_corrupt_batches_total")? == 1.0,
        "one damaged batch counted"
    );
    ensure!(
        metric(&broker, "causeway_storage_scrubbed_bytes_total")? > 0.0,
        "scrubbed bytes counted"
    );
    // Consumers get the batches before the damaged one, and an error at it, never its bytes.
    let damaged_at = i64::from_be_bytes(log[start..start + 8].try_into()?);
    let mut client = broker.raw()?;
    let before_damage = client.fetch(TOPIC, 0, 0, 1 << 20, 0)?;
    ensure!(
        before_damage.error_code == 0,
        "a fetch from the start failed"
    );
    let served = before_damage.records.unwrap_or_default();
    let last_served = batch_spans(&served)
        .last()
        .map(|&(at, _)| i64::from_be_bytes(served[at..at + 8].try_into().unwrap_or_default()));
    ensure!(
        last_served.is_some_and(|base| base < damaged_at),
        "a fetch from the start served up to batch {last_served:?}, the damaged one is {damaged_at}"
    );
    let at_damage = client.fetch(TOPIC, 0, damaged_at, 1 << 20, 0)?;
    ensure!(
        at_damage.error_code == KAFKA_STORAGE_ERROR,
        "a fetch at the damaged batch answered {} with {} bytes",
        at_damage.error_code,
        at_damage.records.map_or(0, |r| r.len())
    );
    let placed = produce_all(&producer, TOPIC, &[TestRecord::value("after")])?;
    ensure!(placed.len() == 1, "produce still works");

    // Damage is kept in memory only: after a restart the scrub finds it again.
    broker.restart()?;
    ensure!(
        wait_until(FOUND_TIMEOUT, || reports_damage(&broker)),
        "not found again after a restart:\n{}",
        broker.stderr_tail(30)
    );
    let (status, body) = http_get(broker.http_addr(), "/readyz")?;
    ensure!(status == 200, "still ready (it serves): {status} {body}");
    body.lines()
        .find(|line| line.starts_with("damaged batch"))
        .context("damage line")?;
    Ok(())
}
