//! Consumer groups follow the data across regions: a group that committed in one region resumes
//! in another, after the first is killed with `kill -9`, with nothing lost and no more repeats
//! than the region reports; it moves back the same way; and a commit that seeks backwards is
//! seen at that earlier position elsewhere, and a group deleted in one region is deleted in
//! the others. Real processes, librdkafka consumers, producers
//! writing in every region while the group consumes.

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use causeway_integration_tests::load::AcksAllLoad;
use causeway_integration_tests::regions::{
    metric_sum, partition_counts, read_all, with_mesh, Mesh, MeshPlan, CONVERGE_TIMEOUT,
};
use causeway_integration_tests::{
    broker_binary, create_topic, http_get, payload_str, topic_name, topic_partition_count,
    wait_until, BrokerProcess,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{DeleteGroupsRequest, GroupId, OffsetFetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use serde_json::Value;

const NAMES: [&str; 3] = ["eu", "us", "ap"];
const GROUP: &str = "failover";

/// What a group consumer read: payloads and their offsets in order, and the offset it
/// committed last.
struct Consumed {
    payloads: Vec<String>,
    offsets: Vec<i64>,
    committed: i64,
}

/// How long and how far a group consumer reads.
struct Reading {
    /// Read for at least this long (following the head while producers write).
    for_at_least: Duration,
    /// Then until this offset (the partition's end when given).
    until_end: Option<i64>,
}

/// The client the group's members use.
#[derive(Debug, Clone, Copy)]
enum Client {
    /// librdkafka, through the `rdkafka` crate.
    Librdkafka,
    /// kafka-python, running `clients/kafka_python_group.py`.
    KafkaPython,
}

/// Consumes `topic` in `broker` as a member of [`GROUP`] with `client`, committing every 100
/// records, as long as `reading` says; commits what it read and leaves.
fn consume_in_group(
    client: Client,
    broker: &BrokerProcess,
    topic: &str,
    reading: Reading,
) -> Result<Consumed> {
    match client {
        Client::Librdkafka => consume_with_librdkafka(broker, topic, reading),
        Client::KafkaPython => consume_with_kafka_python(broker, topic, reading),
    }
}

fn consume_with_kafka_python(
    broker: &BrokerProcess,
    topic: &str,
    reading: Reading,
) -> Result<Consumed> {
    let clients = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients");
    let output = Command::new("python3")
        .arg(clients.join("kafka_python_group.py"))
        .args([
            broker.bootstrap(),
            topic.to_string(),
            GROUP.to_string(),
            reading.for_at_least.as_secs_f64().to_string(),
            reading.until_end.unwrap_or(-1).to_string(),
        ])
        .output()
        .context("running kafka_python_group.py (kafka-python is installed by .ci/run)")?;
    ensure!(
        output.status.success(),
        "kafka_python_group.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line: Value = serde_json::from_str(stdout.lines().last().context("no output")?)?;
    Ok(Consumed {
        payloads: serde_json::from_value(line["payloads"].clone())?,
        offsets: serde_json::from_value(line["offsets"].clone())?,
        committed: line["committed"].as_i64().context("no committed offset")?,
    })
}

fn consume_with_librdkafka(
    broker: &BrokerProcess,
    topic: &str,
    reading: Reading,
) -> Result<Consumed> {
    let consumer: BaseConsumer = broker
        .consumer_config()
        .set("group.id", GROUP)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "true")
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[topic])?;
    let mut payloads = Vec::new();
    let mut offsets = Vec::new();
    let mut next = -1;
    let started = Instant::now();
    let deadline = started + reading.for_at_least + Duration::from_secs(60);
    let Reading {
        for_at_least,
        until_end,
    } = reading;
    while started.elapsed() < for_at_least || until_end.is_some_and(|end| next < end) {
        if Instant::now() > deadline {
            bail!(
                "consumed {} records in {} (next offset {next}, wanted {until_end:?})",
                payloads.len(),
                broker.bootstrap()
            );
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(message)) => {
                payloads.push(payload_str(&message.detach()));
                offsets.push(message.offset());
                next = message.offset() + 1;
                if payloads.len() % 100 == 0 {
                    commit(&consumer)?;
                }
            }
            Some(Err(error)) => bail!("consumer error: {error}"),
        }
    }
    commit(&consumer)?;
    consumer.unsubscribe();
    Ok(Consumed {
        payloads,
        offsets,
        committed: next,
    })
}

/// Commits what `consumer` has read; nothing new to commit is fine.
fn commit(consumer: &BaseConsumer) -> Result<()> {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// Waits until `broker` holds the position the region with id `from_region` committed for
/// [`GROUP`] at `offset` (in the committing region's log).
fn wait_position_arrived(broker: &BrokerProcess, from_region: u64, offset: i64) -> Result<()> {
    let mut last = String::new();
    let arrived = wait_until(CONVERGE_TIMEOUT, || {
        let Ok((200, body)) = http_get(
            broker.http_addr(),
            "/v1/tables/__causeway_positions/rows?limit=1000",
        ) else {
            return false;
        };
        last = body.clone();
        let Ok(rows) = serde_json::from_str::<Value>(&body) else {
            return false;
        };
        rows["rows"].as_array().is_some_and(|rows| {
            rows.iter().any(|row| {
                row["key"].as_str().is_some_and(|k| k.contains(GROUP))
                    && row["value"]["offset"] == offset
                    && row["value"]["region"] == from_region
            })
        })
    });
    ensure!(
        arrived,
        "{}: no position of {from_region} at {offset}; rows: {last}",
        broker.bootstrap()
    );
    Ok(())
}

/// The region id of `broker` (positions name the committing region by id).
fn region_id(broker: &BrokerProcess) -> Result<u64> {
    let status = causeway_integration_tests::regions::regions_status(broker)?;
    status["region_id"]
        .as_u64()
        .context("/v1/regions has no region_id")
}

/// The offsets among `read` (records of `broker`'s log from `from` on) an application skips
/// as already consumed, given the group's `position` in `/v1/groups/{group}/positions` form:
/// each record's batch is looked up in `/v1/topics/{topic}/partitions/0/batches`, and skipped
/// when the position's frontier covers it or it is among the consumed records of the batch the
/// group stopped inside.
fn skipped_as_consumed(
    broker: &BrokerProcess,
    topic: &str,
    position: &Value,
    from: i64,
    read: &[i64],
) -> Result<HashSet<i64>> {
    let mut batches: Vec<(i64, String, u64)> = Vec::new();
    let mut next = Some(from);
    while let Some(at) = next {
        let (code, body) = http_get(
            broker.http_addr(),
            &format!("/v1/topics/{topic}/partitions/0/batches?from={at}&limit=1000"),
        )?;
        ensure!(code == 200, "batch listing answered {code}: {body}");
        let page: Value = serde_json::from_str(&body)?;
        for batch in page["batches"].as_array().context("no batches")? {
            batches.push((
                batch["base_offset"].as_i64().context("base")?,
                batch["region"].as_str().context("region")?.to_string(),
                batch["seq"].as_u64().context("seq")?,
            ));
        }
        next = page["next"].as_i64();
    }
    let frontier = &position["frontier"];
    let inside = &position["inside_batch"];
    let mut skipped = HashSet::new();
    for &offset in read {
        let at = batches.partition_point(|(base, _, _)| *base <= offset);
        let Some((base, region, seq)) = at.checked_sub(1).map(|i| &batches[i]) else {
            continue;
        };
        let covered = frontier[region.as_str()]
            .as_u64()
            .is_some_and(|f| *seq <= f);
        let consumed_inside = inside["region"] == region.as_str()
            && inside["seq"] == *seq
            && inside["consumed"]
                .as_i64()
                .is_some_and(|n| offset - base < n);
        if covered || consumed_inside {
            skipped.insert(offset);
        }
    }
    Ok(skipped)
}

/// Runs the `causeway` CLI and parses its JSON output.
fn causeway_cli(args: &[&str]) -> Result<Value> {
    let output = Command::new(broker_binary()?).args(args).output()?;
    ensure!(
        output.status.success(),
        "causeway {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(serde_json::from_slice(&output.stdout)?)
}

/// Payloads of `broker`'s log of partition 0, in offset order.
fn log_payloads(broker: &BrokerProcess, topic: &str) -> Result<Vec<String>> {
    Ok(read_all(broker, topic, 0)?
        .iter()
        .map(payload_str)
        .collect())
}

/// Waits until every region holds the same number of records, at least `at_least`.
fn wait_converged(mesh: &Mesh, topic: &str, at_least: usize, regions: &[usize]) -> Result<()> {
    let mut counts = Vec::new();
    let settled = wait_until(CONVERGE_TIMEOUT, || {
        counts = regions
            .iter()
            .map(|&i| {
                partition_counts(mesh.region(i), topic, 1)
                    .map(|c| c[0])
                    .unwrap_or(-1)
            })
            .collect();
        counts
            .iter()
            .all(|&c| c == counts[0] && c >= at_least as i64)
    });
    ensure!(settled, "regions did not converge: {counts:?}");
    Ok(())
}

/// Records lost and records repeated when a group that consumed `consumed` (every record of
/// the committing region's log below its commit) resumes at `resume` in a log `to`.
fn lost_and_repeated(to: &[String], consumed: &HashSet<&String>, resume: usize) -> (usize, usize) {
    let lost = to[..resume.min(to.len())]
        .iter()
        .filter(|p| !consumed.contains(p))
        .count();
    let repeated = to[resume.min(to.len())..]
        .iter()
        .filter(|p| consumed.contains(p))
        .count();
    (lost, repeated)
}

/// The two translations MirrorMaker 2 offers, applied to the same move, as `(lost, repeated)`:
/// by timestamp (resume at the first record stamped at or after the last one consumed, as
/// `offsetsForTimes` does) and by offset syncs (MM2 records an upstream-to-downstream offset
/// pair at most every `offset.lag.max` = 100 records and translates a commit to one past the
/// downstream offset of the last sync below it).
fn mirror_maker_translations(
    from: &[(String, i64)],
    to: &[(String, i64)],
    committed: usize,
) -> [(usize, usize); 2] {
    let consumed: HashSet<&String> = from[..committed].iter().map(|(p, _)| p).collect();
    let to_payloads: Vec<String> = to.iter().map(|(p, _)| p.clone()).collect();
    let last_stamp = from[committed - 1].1;
    let by_time = to
        .iter()
        .position(|(_, ts)| *ts >= last_stamp)
        .unwrap_or(to.len());
    let sync = (committed - 1) / 100 * 100;
    let by_sync = to
        .iter()
        .position(|(p, _)| *p == from[sync].0)
        .map_or(0, |at| at + 1);
    [by_time, by_sync].map(|resume| lost_and_repeated(&to_payloads, &consumed, resume))
}

/// Payloads and timestamps of `broker`'s log of partition 0, in offset order.
fn log_stamped(broker: &BrokerProcess, topic: &str) -> Result<Vec<(String, i64)>> {
    Ok(read_all(broker, topic, 0)?
        .iter()
        .map(|m| (payload_str(m), m.timestamp().to_millis().unwrap_or(-1)))
        .collect())
}

/// The records a region's log holds before the first one not in `consumed`: where a group
/// that consumed exactly `consumed` must resume there.
fn first_not_in(log: &[String], consumed: &HashSet<&String>) -> i64 {
    log.iter()
        .position(|p| !consumed.contains(p))
        .unwrap_or(log.len()) as i64
}

/// Checks one move of the group: every record of the new region's log was consumed before or
/// after the move, and what was seen twice is within what the new region reported.
fn check_move(
    to: &BrokerProcess,
    topic: &str,
    before: &HashSet<&String>,
    after: &Consumed,
) -> Result<usize> {
    let log = log_payloads(to, topic)?;
    let after_set: HashSet<&String> = after.payloads.iter().collect();
    let lost: Vec<&String> = log
        .iter()
        .filter(|p| !before.contains(p) && !after_set.contains(p))
        .collect();
    ensure!(
        lost.is_empty(),
        "{} records lost, first {:?}",
        lost.len(),
        lost.first()
    );
    let repeats = after.payloads.iter().filter(|p| before.contains(p)).count();
    let bound = metric_sum(
        to,
        "causeway_group_failover_repeat_records",
        "group=\"failover\"",
    )?;
    let missing = metric_sum(
        to,
        "causeway_group_failover_missing_batches",
        "group=\"failover\"",
    )?;
    eprintln!(
        "moved to {}: {} records read, {repeats} seen again, reported bound {bound}, {missing} \
         batches missing",
        to.bootstrap(),
        after.payloads.len()
    );
    ensure!(
        missing == 0.0,
        "the regions had converged, yet {missing} batches are missing"
    );
    ensure!(
        repeats as f64 <= bound,
        "{repeats} records seen again, above the reported bound {bound}"
    );
    Ok(repeats)
}

/// The offset OffsetFetch answers for [`GROUP`] in partition 0 of `topic`.
fn fetched_offset(broker: &BrokerProcess, topic: &str) -> Result<i64> {
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str(GROUP)))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_indexes(vec![0])]));
    let response = broker.raw()?.request(7, &request)?;
    ensure!(
        response.error_code == 0,
        "OffsetFetch error {}",
        response.error_code
    );
    Ok(response.topics[0].partitions[0].committed_offset)
}

#[test]
fn a_librdkafka_group_resumes_in_another_region_after_a_kill_and_moves_back_with_nothing_lost() {
    group_moves_between_regions(Client::Librdkafka);
}

#[test]
fn a_kafka_python_group_resumes_in_another_region_after_a_kill_and_moves_back_with_nothing_lost() {
    group_moves_between_regions(Client::KafkaPython);
}

fn group_moves_between_regions(client: Client) {
    with_mesh(MeshPlan::new(&NAMES).expect("allocate ports"), |mesh| {
        let topic = topic_name("failover");
        create_topic(mesh.region(0), &topic, 1, &[])?;
        ensure!(
            wait_until(Duration::from_secs(20), || (0..3).all(|i| {
                topic_partition_count(&mesh.region(i).bootstrap(), &topic)
                    .is_ok_and(|c| c == Some(1))
            })),
            "the topic did not reach every region"
        );
        let ids: Vec<u64> = (0..3)
            .map(|i| region_id(mesh.region(i)))
            .collect::<Result<_>>()?;
        // Every region writes while the group consumes in eu.
        let loads: Vec<AcksAllLoad> = (0..3)
            .map(|i| AcksAllLoad::start(&mesh.region(i).bootstrap(), &topic, NAMES[i], 8, 5000))
            .collect::<Result<_>>()?;
        ensure!(
            wait_until(Duration::from_secs(20), || loads
                .iter()
                .all(|l| l.acknowledged() >= 200)),
            "the loads did not get going"
        );
        let in_eu = consume_in_group(
            client,
            mesh.region(0),
            &topic,
            Reading {
                for_at_least: Duration::from_secs(4),
                until_end: None,
            },
        )?;
        let mut acked = BTreeSet::new();
        for load in loads {
            acked.extend(load.stop()?.acked.into_iter().map(|(p, _)| p));
        }
        wait_converged(mesh, &topic, acked.len(), &[0, 1, 2])?;
        wait_position_arrived(mesh.region(1), ids[0], in_eu.committed)?;
        let eu_before_kill = log_stamped(mesh.region(0), &topic)?;
        mesh.region_mut(0).kill9();

        // us: the same group id, nothing else changed.
        let us_end = partition_counts(mesh.region(1), &topic, 1)?[0];
        let eu_log_consumed: HashSet<&String> = in_eu.payloads.iter().collect();
        let (fetched, expected) = (
            fetched_offset(mesh.region(1), &topic)?,
            first_not_in(&log_payloads(mesh.region(1), &topic)?, &eu_log_consumed),
        );
        ensure!(
            fetched == expected,
            "us resumes at {fetched}, not at its first record eu had not consumed, {expected}"
        );
        // `causeway group describe` in us shows where the position came from.
        let described = causeway_cli(&[
            "group",
            "describe",
            GROUP,
            "-b",
            &mesh.region(1).bootstrap(),
            "--http",
            &mesh.region(1).http_addr().to_string(),
            "--json",
        ])?;
        let position = &described["positions"][0];
        ensure!(
            position["latest_commit"]["region"] == "eu"
                && position["latest_commit"]["offset"] == in_eu.committed
                && position["here"]["answer"] == "travelled"
                && position["here"]["offset"] == fetched
                && described["offsets"][0]["committed_offset"] == fetched,
            "causeway group describe in us: {described}"
        );
        // Lag in us, before any member there committed, is measured from eu's position.
        let lag = metric_sum(
            mesh.region(1),
            "causeway_consumer_group_lag",
            "group=\"failover\"",
        )?;
        ensure!(
            lag == (us_end - fetched) as f64,
            "us reports a lag of {lag}, expected {} - {fetched}",
            us_end
        );
        let in_us = consume_in_group(
            client,
            mesh.region(1),
            &topic,
            Reading {
                for_at_least: Duration::ZERO,
                until_end: Some(us_end),
            },
        )?;
        ensure!(
            !in_us.payloads.is_empty(),
            "us had nothing left to read: weak test"
        );
        let repeats = check_move(mesh.region(1), &topic, &eu_log_consumed, &in_us)?;
        // What an application can do to read nothing twice: skip what the frontier covers.
        let skipped = skipped_as_consumed(
            mesh.region(1),
            &topic,
            &position["latest_commit"],
            fetched,
            &in_us.offsets,
        )?;
        for (payload, offset) in in_us.payloads.iter().zip(&in_us.offsets) {
            ensure!(
                skipped.contains(offset) == eu_log_consumed.contains(payload),
                "the frontier recipe {} {payload} at {offset}",
                if skipped.contains(offset) {
                    "skips, though eu never consumed,"
                } else {
                    "keeps, though eu consumed,"
                }
            );
        }
        ensure!(
            skipped.len() == repeats,
            "{} skipped for {repeats} repeats",
            skipped.len()
        );
        let [by_time, by_sync] = mirror_maker_translations(
            &eu_before_kill,
            &log_stamped(mesh.region(1), &topic)?,
            in_eu.committed as usize,
        );
        eprintln!(
            "{client:?}: one failover after {} records consumed: causeway lost 0, repeated {repeats}; \
             by timestamp lost {}, repeated {}; by offset syncs lost {}, repeated {}",
            in_eu.committed, by_time.0, by_time.1, by_sync.0, by_sync.1
        );
        // Without the translation the group would read everything eu consumed again; how many
        // it does read again depends on how far replication lagged at the commit (it is exact
        // above: `fetched == expected`), so only "not everything" is asserted here.
        ensure!(
            repeats < in_eu.payloads.len(),
            "all {} records eu consumed were read again in us",
            in_eu.payloads.len()
        );
        let us_log = log_payloads(mesh.region(1), &topic)?;
        for payload in &acked {
            ensure!(
                us_log.contains(payload),
                "acknowledged {payload} is not in us"
            );
        }

        // More records while eu is down, then back to eu once it returns: us's newer commit
        // wins over eu's own older one.
        let loads: Vec<AcksAllLoad> = [1, 2]
            .iter()
            .map(|&i| {
                // A new prefix: payloads must stay unique.
                let prefix = format!("{}-again", NAMES[i]);
                AcksAllLoad::start(&mesh.region(i).bootstrap(), &topic, &prefix, 8, 5000)
            })
            .collect::<Result<_>>()?;
        ensure!(
            wait_until(Duration::from_secs(20), || loads
                .iter()
                .all(|l| l.acknowledged() >= 200)),
            "the loads did not get going again"
        );
        for load in loads {
            acked.extend(load.stop()?.acked.into_iter().map(|(p, _)| p));
        }
        mesh.region_mut(0).restart().context("restart eu")?;
        wait_converged(mesh, &topic, acked.len(), &[0, 1, 2])?;
        wait_position_arrived(mesh.region(0), ids[1], in_us.committed)?;
        let us_consumed: HashSet<&String> = us_log[..in_us.committed as usize].iter().collect();
        let eu_log = log_payloads(mesh.region(0), &topic)?;
        let (fetched, expected) = (
            fetched_offset(mesh.region(0), &topic)?,
            first_not_in(&eu_log, &us_consumed),
        );
        ensure!(
            fetched == expected,
            "eu resumes at {fetched}, not at its first record us had not consumed, {expected} \
             (of {})",
            eu_log.len()
        );
        let back = consume_in_group(
            client,
            mesh.region(0),
            &topic,
            Reading {
                for_at_least: Duration::ZERO,
                until_end: Some(eu_log.len() as i64),
            },
        )?;
        check_move(mesh.region(0), &topic, &us_consumed, &back)?;

        // Offsets reset backwards in eu (`causeway group reset-offsets`) are seen at that
        // earlier position in us.
        let rewound = eu_log.len() as i64 / 3;
        causeway_cli(&[
            "group",
            "reset-offsets",
            GROUP,
            "-b",
            &mesh.region(0).bootstrap(),
            "--topic",
            &topic,
            "--to-offset",
            &rewound.to_string(),
            "--execute",
            "--json",
        ])?;
        wait_position_arrived(mesh.region(1), ids[0], rewound)?;
        let eu_prefix: HashSet<&String> = eu_log[..rewound as usize].iter().collect();
        let expected = first_not_in(&log_payloads(mesh.region(1), &topic)?, &eu_prefix);
        let fetched = fetched_offset(mesh.region(1), &topic)?;
        ensure!(
            fetched == expected,
            "us answers {fetched} after eu rewound to {rewound}, expected {expected}"
        );

        // Deleting the group in eu deletes it in us too, where us's own commit is older.
        let deleted = mesh.region(0).raw()?.request(
            2,
            &DeleteGroupsRequest::default()
                .with_groups_names(vec![GroupId(StrBytes::from_static_str(GROUP))]),
        )?;
        ensure!(
            deleted.results[0].error_code == 0,
            "DeleteGroups error {}",
            deleted.results[0].error_code
        );
        ensure!(
            fetched_offset(mesh.region(0), &topic)? == -1,
            "eu still has an offset"
        );
        let mut last = 0;
        ensure!(
            wait_until(CONVERGE_TIMEOUT, || {
                last = fetched_offset(mesh.region(1), &topic).unwrap_or(-2);
                last == -1
            }),
            "us still answers {last} after the group was deleted in eu"
        );
        Ok(())
    });
}
