//! `causeway meta rebuild` with the real binary: a broker whose metadata database (`meta/`) is
//! deleted or corrupted refuses to start (before the rebuild command existed it started with an
//! empty catalog, served none of the topics on disk and handed out producer ids again from 0);
//! after the rebuild every record is back, topic ids and configs are unchanged, a new producer
//! gets an id no log holds, and a transaction left open is aborted.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use causeway_integration_tests::{
    block_on, broker_binary, create_topic, payload_str, read_to_end, topic_name, with_broker,
    BrokerOptions, BrokerProcess, CLIENT_TIMEOUT,
};
use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::Offset;

/// Records per partition.
const RECORDS: usize = 50;

/// Overrides of the three-partition topic.
const CONFIGS: &[(&str, &str)] = &[
    ("retention.ms", "86400000"),
    ("max.message.bytes", "500000"),
    ("segment.bytes", "2097152"),
];

fn causeway(args: &[&str]) -> Result<Output> {
    Ok(Command::new(broker_binary()?).args(args).output()?)
}

fn rebuild(data_dir: &Path) -> Result<Output> {
    let dir = data_dir.to_string_lossy().into_owned();
    causeway(&["meta", "rebuild", "--data-dir", &dir, "--region", "local"])
}

/// `causeway topic describe`: the topic id line and the topic-level config overrides.
fn describe(broker: &BrokerProcess, topic: &str) -> Result<(String, Vec<String>)> {
    let out = causeway(&["topic", "describe", topic, "-b", &broker.bootstrap()])?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "describe {topic} failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let id = text
        .lines()
        .find_map(|l| l.strip_prefix("id"))
        .map(|id| id.trim().to_string())
        .context("no id line")?;
    let overrides = text
        .lines()
        .filter(|l| l.ends_with(" topic"))
        .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join("="))
        .collect();
    Ok((id, overrides))
}

fn idempotent_producer(bootstrap: &str) -> Result<FutureProducer> {
    Ok(causeway_integration_tests::producer_config(bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()?)
}

fn send(producer: &FutureProducer, topic: &str, partition: i32, values: &[String]) -> Result<()> {
    for value in values {
        let record: FutureRecord<'_, (), String> =
            FutureRecord::to(topic).partition(partition).payload(value);
        match block_on(producer.send(record, CLIENT_TIMEOUT)) {
            Ok(_) => {}
            Err((e, _)) => bail!("delivery to {topic}-{partition} failed: {e}"),
        }
    }
    Ok(())
}

fn values(topic: &str, partition: i32) -> Vec<String> {
    (0..RECORDS)
        .map(|i| format!("{topic}/{partition}/{i}"))
        .collect()
}

/// Every producer id in the partition directories of `data_dir`, and how many open
/// transactions they hold.
fn producer_ids_on_disk(data_dir: &Path) -> Result<(BTreeSet<i64>, usize)> {
    let (dirs, _) = causeway_storage::partition_dirs(&data_dir.join("topics"))?;
    let mut ids = BTreeSet::new();
    let mut open = 0;
    for dir in dirs {
        let scan = causeway_storage::scan_partition(&dir.path, &mut |_| {})?;
        ids.extend(scan.producer_epochs.keys().copied());
        open += scan.open_transactions.len();
    }
    Ok((ids, open))
}

/// What the topics looked like before `meta/` was damaged.
struct Before {
    orders: String,
    events: String,
    ids: (String, String),
    overrides: Vec<String>,
}

/// Creates `orders` (3 partitions, overrides) and `events` (1 partition), fills every partition
/// with an idempotent producer, leaves a transaction open in `events`, and stops the broker.
fn fill_and_stop(broker: &mut BrokerProcess) -> Result<Before> {
    let orders = topic_name("orders");
    let events = topic_name("events");
    create_topic(broker, &orders, 3, CONFIGS)?;
    create_topic(broker, &events, 1, &[])?;
    let producer = idempotent_producer(&broker.bootstrap())?;
    for partition in 0..3 {
        send(&producer, &orders, partition, &values(&orders, partition))?;
    }
    send(&producer, &events, 0, &values(&events, 0))?;
    drop(producer);

    let transactional: FutureProducer =
        causeway_integration_tests::producer_config(&broker.bootstrap())
            .set("enable.idempotence", "true")
            .set("transactional.id", "left-open")
            .set("transaction.timeout.ms", "600000")
            .create()?;
    transactional.init_transactions(CLIENT_TIMEOUT)?;
    transactional.begin_transaction()?;
    send(
        &transactional,
        &events,
        0,
        &["uncommitted-1".to_string(), "uncommitted-2".to_string()],
    )?;
    transactional.flush(CLIENT_TIMEOUT)?;

    let ids = (describe(broker, &orders)?.0, describe(broker, &events)?.0);
    let overrides = describe(broker, &orders)?.1;
    let mut expected: Vec<String> = CONFIGS.iter().map(|(k, v)| format!("{k}={v}")).collect();
    expected.sort();
    let mut got = overrides.clone();
    got.sort();
    if got != expected {
        bail!("overrides before: {got:?}, expected {expected:?}");
    }

    let refused = rebuild(broker.data_dir())?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    if refused.status.code() != Some(1) || !stderr.contains("in use") {
        bail!(
            "a rebuild under a running broker must be refused with exit 1, got {:?}: {stderr}",
            refused.status.code()
        );
    }
    broker.terminate()?;
    drop(transactional);
    Ok(Before {
        orders,
        events,
        ids,
        overrides: got,
    })
}

/// The broker refuses to start, pointing at the rebuild command.
fn refuses_to_start(broker: &mut BrokerProcess) -> Result<()> {
    match broker.restart() {
        Ok(()) => bail!("the broker started on a data dir whose meta/ is damaged"),
        Err(error) => {
            let message = format!("{error:#}");
            if !message.contains("causeway meta rebuild --data-dir") {
                bail!("the refusal does not name the rebuild command: {message}");
            }
            Ok(())
        }
    }
}

/// Runs the rebuild, restarts, and checks records, ids, configs, producer ids and the
/// transaction left open. `moved_aside` says whether there was an old `meta/` to move aside.
fn rebuild_and_check(
    broker: &mut BrokerProcess,
    before: &Before,
    old_ids: &BTreeSet<i64>,
    moved_aside: bool,
) -> Result<String> {
    let started = std::time::Instant::now();
    let out = rebuild(broker.data_dir())?;
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    let progress = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        bail!(
            "rebuild failed ({:?}): {report}{progress}",
            out.status.code()
        );
    }
    eprintln!("rebuild took {:?}\n{report}{progress}", started.elapsed());
    for needle in [
        before.orders.as_str(),
        before.events.as_str(),
        "NOT RECOVERED: transaction coordinator records",
        "aborted by the broker at its next start",
        if moved_aside {
            "old meta/ moved to"
        } else {
            "there was no old meta/"
        },
    ] {
        if !report.contains(needle) {
            bail!("report lacks {needle:?}:\n{report}");
        }
    }
    if !progress.contains("[4/4] scanned") {
        bail!("no progress lines on stderr: {progress}");
    }
    let damaged = std::fs::read_dir(broker.data_dir())?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("meta.damaged-"))
        .count();
    if damaged != usize::from(moved_aside) {
        bail!(
            "expected {} moved-aside meta/, found {damaged}",
            usize::from(moved_aside)
        );
    }

    broker.restart()?;
    let bootstrap = broker.bootstrap();
    for partition in 0..3 {
        let got: Vec<String> =
            read_to_end(&bootstrap, &before.orders, partition, Offset::Beginning)?
                .iter()
                .map(payload_str)
                .collect();
        if got != values(&before.orders, partition) {
            bail!("{}-{partition} after the rebuild: {got:?}", before.orders);
        }
    }
    // read_committed reaches the end only once the open transaction is aborted.
    let consumer: BaseConsumer = causeway_integration_tests::consumer_config(&bootstrap)
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create()?;
    causeway_integration_tests::assign(&consumer, &[(&before.events, 0, Offset::Beginning)])?;
    let mut committed = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if std::time::Instant::now() > deadline {
            bail!(
                "read_committed never reached the end of {}: the open transaction was not aborted",
                before.events
            );
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => committed.push(payload_str(&m.detach())),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
            Some(Err(e)) => bail!("consumer error: {e}"),
            None => {}
        }
    }
    if committed != values(&before.events, 0) {
        bail!(
            "read_committed {} after the rebuild: {committed:?}",
            before.events
        );
    }

    let after = (
        describe(broker, &before.orders)?.0,
        describe(broker, &before.events)?.0,
    );
    if after != before.ids {
        bail!("topic ids changed: {:?} -> {after:?}", before.ids);
    }
    let mut overrides = describe(broker, &before.orders)?.1;
    overrides.sort();
    if overrides != before.overrides {
        bail!("configs changed: {:?} -> {overrides:?}", before.overrides);
    }

    let producer = idempotent_producer(&bootstrap)?;
    send(&producer, &before.events, 0, &["after-rebuild".to_string()])?;
    drop(producer);
    broker.terminate()?;
    let (ids, open) = producer_ids_on_disk(broker.data_dir())?;
    // The abort marker keeps the transactional producer's id (with a bumped epoch), so the
    // new idempotent producer's id is the only new one.
    let new: Vec<i64> = ids.difference(old_ids).copied().collect();
    let [newest] = new[..] else {
        bail!("expected one new producer id after the rebuild, found {new:?} (old {old_ids:?})");
    };
    if old_ids.iter().any(|&old| old >= newest) {
        bail!("new producer id {newest} is not above every old one {old_ids:?}");
    }
    if open != 0 {
        bail!("{open} transactions still open after the restart");
    }
    Ok(report)
}

#[test]
fn a_deleted_meta_is_rebuilt_from_the_topic_directories() {
    with_broker(BrokerOptions::new(), |broker| {
        let before = fill_and_stop(broker)?;
        let (old_ids, open) = producer_ids_on_disk(broker.data_dir())?;
        if old_ids.len() < 2 || open != 1 {
            bail!("expected two producers and one open transaction on disk, got {old_ids:?} and {open}");
        }
        std::fs::remove_dir_all(broker.data_dir().join("meta"))?;
        refuses_to_start(broker)?;
        rebuild_and_check(broker, &before, &old_ids, false)?;
        Ok(())
    });
}

#[test]
fn a_corrupt_meta_is_moved_aside_and_rebuilt_and_a_topic_without_sidecar_comes_back() {
    with_broker(BrokerOptions::new(), |broker| {
        let before = fill_and_stop(broker)?;
        let (old_ids, _) = producer_ids_on_disk(broker.data_dir())?;
        std::fs::write(
            broker.data_dir().join("meta").join("CURRENT"),
            b"\x00garbage, not a MANIFEST name\x7f",
        )?;
        // The single-partition topic as an older version left it: no sidecar.
        let sidecar = broker
            .data_dir()
            .join("topics")
            .join(format!("{}-0", before.events))
            .join("topic.json");
        std::fs::remove_file(&sidecar)?;
        refuses_to_start(broker)?;
        let report = rebuild_and_check(broker, &before, &old_ids, true)?;
        let line = report
            .lines()
            .find(|l| l.starts_with(&before.events))
            .context("no report line for the topic without sidecar")?;
        if !line.contains("NO SIDECAR") {
            bail!("the topic without sidecar is not reported as such: {line}");
        }
        if !sidecar.exists() {
            bail!("the rebuild did not write the missing sidecar");
        }
        Ok(())
    });
}
