//! Transactions across regions, with librdkafka: a region that dies with a transaction open
//! does not hold back read_committed readers (nor tables and compaction) in the other regions
//! for good. Once it is stale and the transaction could no longer be alive at its origin, the
//! other regions abort it, and the origin, back again, ends with the same records visible; a
//! commit the origin is asked for after that abort reached it is refused.

use std::time::Duration;

use anyhow::{ensure, Result};
use causeway_integration_tests::regions::{
    metric, regions_status, through_proxy, with_mesh, Mesh, MeshPlan, CONVERGE_TIMEOUT,
};
use causeway_integration_tests::transactions::{
    read_values, send, transactional_producer, TIMEOUT,
};
use causeway_integration_tests::{
    create_topic, produce_all, topic_name, topic_partition_count, wait_until, BrokerProcess,
    TestRecord,
};
use rdkafka::producer::Producer;

/// Both regions report each other stale after this much silence.
const STALE_AFTER_MS: u64 = 2_000;
/// The longest transaction timeout a region grants (the second test gives the origin more).
const TRANSACTION_MAX_TIMEOUT_MS: u32 = 3_000;

/// Waits until `broker` shows `committed` at read_committed and the records of `all` (in any
/// order) at read_uncommitted.
fn wait_visible(
    broker: &BrokerProcess,
    topic: &str,
    committed: &[&str],
    all: &[&str],
) -> Result<()> {
    let mut all: Vec<String> = all.iter().map(|v| v.to_string()).collect();
    all.sort();
    let settled = wait_until(Duration::from_secs(30), || {
        let committed_now = read_values(broker, topic, "read_committed");
        let mut all_now = read_values(broker, topic, "read_uncommitted").unwrap_or_default();
        all_now.sort();
        committed_now.is_ok_and(|v| v == committed) && all_now == all
    });
    ensure!(
        settled,
        "{} shows {:?} at read_committed and {:?} at read_uncommitted, expected {committed:?} of {all:?}",
        broker.bootstrap(),
        read_values(broker, topic, "read_committed"),
        read_values(broker, topic, "read_uncommitted"),
    );
    Ok(())
}

/// Region `i` reports silent peers stale after [`STALE_AFTER_MS`] and grants transactions at
/// most `transaction_max_ms`.
fn timeouts(plan: MeshPlan, i: usize, transaction_max_ms: u32) -> MeshPlan {
    plan.flag(i, "--region-stale-after-ms", STALE_AFTER_MS)
        .flag(i, "--transaction-max-timeout-ms", transaction_max_ms)
}

/// Creates a one-partition topic in region 0 and waits until every region has it.
fn create_everywhere(mesh: &Mesh, topic: &str) -> Result<()> {
    create_topic(mesh.region(0), topic, 1, &[])?;
    mesh.wait_all("the topic in every region", CONVERGE_TIMEOUT, |r| {
        Ok(topic_partition_count(&r.bootstrap(), topic)? == Some(1))
    })
}

/// Waits until region `i` holds `values` at read_uncommitted (a transaction's records arrived,
/// whatever becomes of them).
fn wait_records(mesh: &Mesh, i: usize, topic: &str, values: &[&str]) -> Result<()> {
    let arrived = wait_until(CONVERGE_TIMEOUT, || {
        read_values(mesh.region(i), topic, "read_uncommitted").is_ok_and(|v| v == values)
    });
    ensure!(arrived, "{values:?} did not reach region {}", mesh.name(i));
    Ok(())
}

#[test]
fn a_transaction_left_open_by_a_dead_region_is_aborted_by_the_others() {
    let plan = MeshPlan::new(&["east", "west"]).expect("ports for two regions");
    let plan = timeouts(
        timeouts(plan, 0, TRANSACTION_MAX_TIMEOUT_MS),
        1,
        TRANSACTION_MAX_TIMEOUT_MS,
    );
    with_mesh(plan, |mesh| {
        let topic = topic_name("abandoned-txn");
        create_everywhere(mesh, &topic)?;
        let producer = transactional_producer(mesh.region(0), &topic, TRANSACTION_MAX_TIMEOUT_MS)?;
        producer.begin_transaction()?;
        for value in ["open-1", "open-2"] {
            send(&producer, &topic, value)?;
        }
        producer.flush(TIMEOUT)?;
        wait_records(mesh, 1, &topic, &["open-1", "open-2"])?;
        mesh.region_mut(0).kill9();
        drop(producer);

        let west = mesh.region(1);
        produce_all(&west.producer(), &topic, &[TestRecord::value("after")])?;
        let held_back = read_values(west, &topic, "read_committed")?;
        ensure!(
            held_back.is_empty(),
            "records behind the open transaction were visible at once: {held_back:?}"
        );
        // East is stale after 2 s; the transaction is abandoned 3 s + 2 s after its last write.
        wait_visible(west, &topic, &["after"], &["open-1", "open-2", "after"])?;
        let aborted = metric(west, "causeway_transactions_abandoned_aborted_total")?;
        ensure!(
            aborted == Some(1.0),
            "west counted {aborted:?} abandoned transactions aborted"
        );

        // East comes back: its coordinator ends the timed-out transaction itself, and both
        // regions show the same records.
        mesh.region_mut(0).restart()?;
        for i in 0..2 {
            wait_visible(
                mesh.region(i),
                &topic,
                &["after"],
                &["open-1", "open-2", "after"],
            )?;
        }
        let overruled = metric(
            mesh.region(0),
            "causeway_transactions_commits_overruled_total",
        )?;
        ensure!(
            overruled.is_none(),
            "east overruled a commit: {overruled:?}"
        );
        Ok(())
    });
}

/// The origin cut off from every region for longer than the others wait: they abort its open
/// transaction, and when the link heals before the origin's own timeout (here its regions grant
/// different timeouts), the producer's commit is refused and turned into an abort, so both
/// regions still end the transaction the same way.
#[test]
fn a_commit_after_another_region_aborted_the_transaction_becomes_an_abort() {
    const ORIGIN_TIMEOUT_MS: u32 = 60_000;
    let plan = MeshPlan::new(&["east", "west"]).expect("ports for two regions");
    let (plan, east_to_west) = through_proxy(plan, 0, 1).expect("a proxy");
    let (plan, west_to_east) = through_proxy(plan, 1, 0).expect("a proxy");
    let plan = timeouts(
        timeouts(plan, 0, ORIGIN_TIMEOUT_MS),
        1,
        TRANSACTION_MAX_TIMEOUT_MS,
    );
    with_mesh(plan, |mesh| {
        let topic = topic_name("overruled-txn");
        create_everywhere(mesh, &topic)?;
        let producer = transactional_producer(mesh.region(0), &topic, ORIGIN_TIMEOUT_MS)?;
        producer.begin_transaction()?;
        send(&producer, &topic, "open-1")?;
        producer.flush(TIMEOUT)?;
        wait_records(mesh, 1, &topic, &["open-1"])?;

        east_to_west.cut_until_restored();
        west_to_east.cut_until_restored();
        let aborted = wait_until(CONVERGE_TIMEOUT, || {
            metric(
                mesh.region(1),
                "causeway_transactions_abandoned_aborted_total",
            )
            .is_ok_and(|m| m == Some(1.0))
        });
        ensure!(
            aborted,
            "west did not abort the transaction of the cut-off east"
        );
        east_to_west.restore();
        west_to_east.restore();
        let marker_arrived = wait_until(CONVERGE_TIMEOUT, || {
            regions_status(mesh.region(0))
                .is_ok_and(|s| s["clock"]["west"].as_u64().is_some_and(|seq| seq >= 1))
        });
        ensure!(
            marker_arrived,
            "west's abort did not reach east after the heal"
        );

        let committed = producer.commit_transaction(TIMEOUT);
        ensure!(
            committed.is_err(),
            "east committed a transaction west had already aborted"
        );
        for i in 0..2 {
            wait_visible(mesh.region(i), &topic, &[], &["open-1"])?;
        }
        let overruled = metric(
            mesh.region(0),
            "causeway_transactions_commits_overruled_total",
        )?;
        ensure!(
            overruled == Some(1.0),
            "east counted {overruled:?} overruled commits"
        );
        Ok(())
    });
}
