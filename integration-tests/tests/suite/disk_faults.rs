//! Disk faults against the real binary: a full disk during produce gives producers an error,
//! loses nothing acknowledged, and the broker resumes by itself when space returns.
//!
//! The data directory lives on a small tmpfs the test mounts (it needs `CAP_SYS_ADMIN`, as the
//! network-namespace tests need `CAP_NET_ADMIN`); a machine that refuses the mount fails the
//! test, it does not skip it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use causeway_integration_tests::batch::{encode_batch, RawRecord};
use causeway_integration_tests::transactions::{
    read_values, send, transactional_producer, TIMEOUT,
};
use causeway_integration_tests::{
    check_produce_consume, create_topic, ensure_eq, payload_str, produce_all, read_partition,
    read_to_end, topic_name, with_broker, BrokerOptions, BrokerProcess, TestRecord,
};
use causeway_integration_tests::{now_ms, wait_until};
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::Offset;
use tempfile::TempDir;

/// A tmpfs of a fixed size, unmounted when dropped.
struct SmallDisk {
    dir: TempDir,
}

impl SmallDisk {
    fn mount(megabytes: u32) -> Result<SmallDisk> {
        let dir = tempfile::Builder::new()
            .prefix("causeway-small-disk-")
            .tempdir()?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(dir.path())
            .output()
            .context("run mount")?;
        if !out.status.success() {
            bail!(
                "mounting a {megabytes} MiB tmpfs failed (the test needs root): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(SmallDisk { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes zeros to a file until the disk is full; returns the file.
    fn fill(&self) -> Result<PathBuf> {
        let filler = self.path().join("filler");
        let mut file = std::fs::File::create(&filler)?;
        let chunk = vec![0u8; 64 * 1024];
        loop {
            if let Err(error) = file.write_all(&chunk) {
                if error.kind() == std::io::ErrorKind::StorageFull {
                    return Ok(filler);
                }
                return Err(error).context("filling the disk");
            }
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Produces `records` one at a time; returns the values acknowledged and how many failed.
const KAFKA_STORAGE_ERROR: i16 = 56;
const NOT_COORDINATOR: i16 = 16;

/// Commits offset 1 of partition 0 of `topic` for a group without members (generation -1, as
/// a client without group management commits); returns the partition's error code.
fn commit_offset(broker: &BrokerProcess, topic: &str) -> Result<i16> {
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::{GroupId, OffsetCommitRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(topic_name(
            "full-disk-group",
        ))))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(1)])]);
    let response = broker.raw()?.request(8, &request)?;
    response
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .map(|p| p.error_code)
        .context("no partition in the OffsetCommit response")
}

fn produce_each(producer: &FutureProducer, topic: &str, values: &[String]) -> (Vec<String>, usize) {
    let mut acked = Vec::new();
    let mut failed = 0;
    for value in values {
        match produce_all(
            producer,
            topic,
            &[TestRecord::value(value.as_bytes()).partition(0)],
        ) {
            Ok(_) => acked.push(value.clone()),
            Err(_) => failed += 1,
        }
    }
    (acked, failed)
}

/// Every acknowledged value is in the partition, in order. (A record whose producer gave up may
/// still be in the log; acknowledged ones must all be there.)
fn expect_all(broker: &BrokerProcess, topic: &str, acked: &[String], when: &str) -> Result<()> {
    let read = read_to_end(&broker.bootstrap(), topic, 0, Offset::Beginning)?;
    let log: Vec<String> = read.iter().map(payload_str).collect();
    let missing: Vec<&String> = acked.iter().filter(|v| !log.contains(v)).collect();
    if let Some(first) = missing.first() {
        bail!(
            "{} acknowledged records are missing {when}, the first {:.12}",
            missing.len(),
            first
        );
    }
    let positions: Vec<usize> = acked
        .iter()
        .filter_map(|v| log.iter().position(|l| l == v))
        .collect();
    if !positions.windows(2).all(|w| w[0] < w[1]) {
        bail!("acknowledged records are out of order {when}");
    }
    Ok(())
}

#[test]
fn a_full_disk_refuses_produce_loses_nothing_acknowledged_and_recovers_by_itself() {
    let disk = SmallDisk::mount(64).expect("a small disk");
    let data = disk.path().join("data");
    with_broker(BrokerOptions::new().data_dir(&data), |broker| {
        let topic = topic_name("full");
        create_topic(broker, &topic, 1, &[])?;
        let mut producer_config = broker.producer_config();
        producer_config
            .set("message.timeout.ms", "3000")
            .set("retry.backoff.ms", "200");
        let producer: FutureProducer = producer_config.create()?;
        let pad = "x".repeat(32 * 1024);
        let values = |phase: &str, n: usize| -> Vec<String> {
            (0..n).map(|i| format!("{phase}-{i:04}-{pad}")).collect()
        };

        let (mut acked, failed) = produce_each(&producer, &topic, &values("before", 20));
        ensure_eq!(failed, 0, "produce failures before the disk filled");

        let filler = disk.fill()?;
        // A batch that does not fit is refused with the storage error code, so a client knows
        // to retry rather than give up (librdkafka retries KAFKA_STORAGE_ERROR).
        let records = vec![RawRecord::value(pad.as_bytes()); 20];
        let big = encode_batch(&records, now_ms()).freeze();
        ensure_eq!(
            broker.raw()?.produce(&topic, 0, 1, big)?.error_code,
            KAFKA_STORAGE_ERROR,
            "a produce on a full disk"
        );
        let (during, failed) = produce_each(&producer, &topic, &values("full", 6));
        if failed == 0 {
            bail!("every produce succeeded on a full disk");
        }
        acked.extend(during);
        // An offset commit that cannot be stored is answered as Kafka's coordinator answers it,
        // so every client retries (never KAFKA_STORAGE_ERROR, which the Java consumer gives up on).
        let commit_code = commit_offset(broker, &topic)?;
        if commit_code != 0 && commit_code != NOT_COORDINATOR {
            bail!("an offset commit on a full disk was answered {commit_code}");
        }
        // Reads keep working while the disk is full.
        let read = read_partition(&broker.bootstrap(), &topic, 0, Offset::Beginning, 20)?;
        ensure_eq!(read.len(), 20, "records readable on a full disk");

        // Space returns: produce resumes without a restart.
        std::fs::remove_file(&filler)?;
        let (after, failed) = produce_each(&producer, &topic, &values("after", 20));
        ensure_eq!(failed, 0, "produce failures after space returned");
        acked.extend(after);
        if !broker.is_running() {
            bail!("the broker exited");
        }
        check_produce_consume(broker, &topic_name("health"))?;

        // Nothing acknowledged is lost, in order, before and after a restart.
        expect_all(broker, &topic, &acked, "after the disk was full")?;
        broker.restart()?;
        expect_all(broker, &topic, &acked, "after a restart")
    });
    // Keep the disk mounted until the broker has stopped.
    drop(disk);
}

/// A commit whose markers cannot be written (the disk filled after the commit was prepared) is
/// finished by the coordinator once space returns, without a restart: until then the
/// transaction pins the last stable offset, and read_committed consumers see nothing after it.
#[test]
fn a_commit_whose_markers_failed_on_a_full_disk_completes_when_space_returns() {
    let disk = SmallDisk::mount(64).expect("a small disk");
    let data = disk.path().join("data");
    let options = BrokerOptions::new()
        .data_dir(&data)
        .flag("--log-segment-bytes-min", 1024);
    with_broker(options, |broker| {
        let topic = topic_name("full-txn");
        // The transaction's batch fills its segment, so the marker starts a new one: its first
        // page cannot be had on the full disk (a small write into a page a file already has
        // would still succeed).
        create_topic(broker, &topic, 1, &[("segment.bytes", "1024")])?;
        let producer = transactional_producer(broker, &topic_name("full-txn-id"), 60_000)?;
        producer.begin_transaction()?;
        let pad = "p".repeat(400);
        let values: Vec<String> = (0..3).map(|i| format!("prepared-{i}-{pad}")).collect();
        for value in &values {
            send(&producer, &topic, value)?;
        }
        producer.flush(TIMEOUT)?;
        let filler = disk.fill()?;
        // The prepare record (RocksDB, whose log has room) is saved; the markers are not.
        let commit = producer.commit_transaction(Duration::from_secs(5));
        if commit.is_ok() {
            bail!("the commit succeeded on a full disk");
        }
        if !wait_until(TIMEOUT, || {
            broker
                .stderr()
                .contains("writing transaction markers failed")
        }) {
            bail!(
                "the commit did not fail at its markers; log tail:\n{}",
                broker.stderr_tail(20)
            );
        }
        drop(producer);
        std::fs::remove_file(&filler)?;
        // A committed transaction stays committed: its records show once the markers are in.
        let committed = wait_until(TIMEOUT, || {
            read_values(broker, &topic, "read_committed").is_ok_and(|read| read == values)
        });
        if !committed {
            bail!(
                "read_committed never showed the prepared commit after space returned; log tail:\n{}",
                broker.stderr_tail(20)
            );
        }
        Ok(())
    });
    drop(disk);
}
