//! The background scrub finds a batch damaged inside a closed segment of a single region (no
//! peer ever reads it, so nothing else would), reports it in `/readyz` and the metrics, finds it
//! again after a restart, and clients keep their service meanwhile; consumers are served the
//! batches before it and an error at it, never its bytes.

use std::os::unix::fs::FileExt;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use causeway_integration_tests::batch::{batch_spans, encode_batch, RawRecord};
use causeway_integration_tests::regions;
use causeway_integration_tests::{
    create_topic, http_get, now_ms, produce_all, segment_files, wait_until, BrokerOptions,
    BrokerProcess, TestRecord,
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

/// A batch damaged on disk is never turned into rows: a table rebuilt from the log leaves the
/// damaged batch out (and reports it like any damage) while every other row is there, intact.
#[test]
fn a_table_rebuilt_over_a_damaged_batch_leaves_it_out() -> Result<()> {
    const TABLE: &str = "damaged-table";
    let mut broker =
        BrokerProcess::start(BrokerOptions::new().flag("--log-segment-bytes-min", 4096))?;
    create_topic(
        &broker,
        TABLE,
        1,
        &[("segment.bytes", "4096"), ("cleanup.policy", "compact")],
    )?;
    let value = format!(r#"{{"v":"{}"}}"#, "a".repeat(60));
    let mut client = broker.raw()?;
    for batch in 0..20 {
        let records: Vec<RawRecord> = (0..5)
            .map(|i| RawRecord {
                key: Some(format!("k{:03}", batch * 5 + i).into_bytes()),
                value: Some(value.clone().into_bytes()),
                ..Default::default()
            })
            .collect();
        let answer = client.produce(TABLE, 0, -1, encode_batch(&records, now_ms()).freeze())?;
        ensure!(
            answer.error_code == 0,
            "batch {batch}: {}",
            answer.error_code
        );
    }
    let segments = segment_files(&broker.partition_dir(TABLE, 0))?;
    ensure!(segments.len() >= 3, "several segments: {segments:?}");
    broker.terminate()?;

    // The medium turns one letter of the second batch (keys k005..k009) into another.
    let first = &segments[0];
    let log = std::fs::read(first)?;
    let (start, length) = *batch_spans(&log).get(1).context("a second batch")?;
    let letter = log[start..start + length]
        .windows(4)
        .position(|w| w == b"aaaa")
        .context("a value in the batch")?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(first)?
        .write_all_at(b"b", (start + letter) as u64)?;
    std::fs::remove_dir_all(broker.data_dir().join("tables"))?;
    broker.restart()?;

    let row = |key: &str| {
        http_get(
            broker.http_addr(),
            &format!("/v1/tables/{TABLE}/rows/{key}"),
        )
        .unwrap_or((0, String::new()))
    };
    ensure!(
        wait_until(FOUND_TIMEOUT, || row("k099").0 == 200),
        "the table was not rebuilt:\n{}",
        broker.stderr_tail(30)
    );
    for key in ["k005", "k006", "k007", "k008", "k009"] {
        let (status, body) = row(key);
        ensure!(
            status == 404,
            "{key} of the damaged batch became a row: {status} {body}"
        );
    }
    for key in ["k004", "k010"] {
        let (status, body) = row(key);
        ensure!(
            status == 200 && body.contains(&"a".repeat(60)),
            "{key} around the damaged batch: {status} {body}"
        );
    }
    let (_, ready) = http_get(broker.http_addr(), "/readyz")?;
    ensure!(
        ready.contains(&format!("damaged batch: {TABLE}-0 offsets 5..=9")),
        "the damage is not reported: {ready}"
    );
    Ok(())
}
