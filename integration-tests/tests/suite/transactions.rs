//! Transactions with librdkafka: read_committed consumers see exactly the committed records,
//! zombies are fenced, timed-out transactions are aborted, and a consume-transform-produce loop
//! with `send_offsets_to_transaction` is exactly-once across a broker restart.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use causeway_integration_tests::transactions::{
    read_values, send, transactional_producer, TxnProducer, TIMEOUT,
};
use causeway_integration_tests::{
    create_topic, ensure_eq, payload_str, produce_all, read_to_end, topic_name, with_broker,
    BrokerOptions, BrokerProcess, TestRecord,
};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};

#[test]
fn read_committed_consumers_see_exactly_the_committed_records() {
    with_broker(BrokerOptions::new(), |broker| {
        let topic = topic_name("txn-mix");
        create_topic(broker, &topic, 1, &[])?;
        let producer = transactional_producer(broker, &topic, 60_000)?;
        let mut committed = Vec::new();
        for round in 0..6 {
            producer.begin_transaction()?;
            let values: Vec<String> = (0..10).map(|i| format!("r{round}-{i}")).collect();
            for value in &values {
                send(&producer, &topic, value)?;
            }
            producer.flush(TIMEOUT)?;
            if round % 2 == 0 {
                producer.commit_transaction(TIMEOUT)?;
                committed.extend(values);
            } else {
                producer.abort_transaction(TIMEOUT)?;
            }
        }
        let visible = read_values(broker, &topic, "read_committed")?;
        if visible != committed {
            bail!("read_committed saw {visible:?}, expected {committed:?}");
        }
        let all = read_values(broker, &topic, "read_uncommitted")?;
        if all.len() != 60 {
            bail!(
                "read_uncommitted saw {} records, expected all 60",
                all.len()
            );
        }
        Ok(())
    });
}

#[test]
fn a_second_producer_with_the_same_transactional_id_fences_the_first() {
    with_broker(BrokerOptions::new(), |broker| {
        let topic = topic_name("txn-fence");
        create_topic(broker, &topic, 1, &[])?;
        let zombie = transactional_producer(broker, &topic, 60_000)?;
        zombie.begin_transaction()?;
        send(&zombie, &topic, "zombie-open")?;
        zombie.flush(TIMEOUT)?;
        let successor = transactional_producer(broker, &topic, 60_000)?;
        successor.begin_transaction()?;
        send(&successor, &topic, "successor")?;
        successor.commit_transaction(TIMEOUT)?;
        zombie.begin_transaction().ok();
        let _ = send(&zombie, &topic, "zombie-late");
        match zombie.commit_transaction(TIMEOUT) {
            Ok(()) => bail!("the fenced producer committed"),
            Err(e) => {
                let text = e.to_string().to_lowercase();
                if !text.contains("fenced") && !text.contains("epoch") {
                    bail!("expected a fencing error, got {e}");
                }
            }
        }
        let visible = read_values(broker, &topic, "read_committed")?;
        if visible != vec!["successor".to_string()] {
            bail!("read_committed saw {visible:?}");
        }
        Ok(())
    });
}

#[test]
fn a_transaction_left_open_is_aborted_at_its_timeout() {
    with_broker(BrokerOptions::new(), |broker| {
        let topic = topic_name("txn-timeout");
        create_topic(broker, &topic, 1, &[])?;
        let abandoned = transactional_producer(broker, &format!("{topic}-a"), 1_500)?;
        abandoned.begin_transaction()?;
        send(&abandoned, &topic, "abandoned")?;
        abandoned.flush(TIMEOUT)?;
        let other = transactional_producer(broker, &format!("{topic}-b"), 60_000)?;
        other.begin_transaction()?;
        send(&other, &topic, "later")?;
        other.commit_transaction(TIMEOUT)?;
        // The open transaction holds back the stable offset until the coordinator aborts it.
        let held_back = read_values(broker, &topic, "read_committed")?;
        if !held_back.is_empty() {
            bail!("records after an open transaction were visible: {held_back:?}");
        }
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let visible = read_values(broker, &topic, "read_committed")?;
            if visible == vec!["later".to_string()] {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("after the timeout read_committed saw {visible:?}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
}

fn group_consumer(broker: &BrokerProcess, group: &str, topic: &str) -> Result<BaseConsumer> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("session.timeout.ms", "6000")
        .set("fetch.wait.max.ms", "100")
        .create()?;
    consumer.subscribe(&[topic])?;
    Ok(consumer)
}

/// One consume-transform-produce pass: up to `batch` input records become output records and
/// the input position is committed in the same transaction. Returns how many were processed.
fn transform_once(
    consumer: &BaseConsumer,
    producer: &TxnProducer,
    input: &str,
    output: &str,
    batch: usize,
) -> Result<usize> {
    let mut taken: Vec<OwnedMessage> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    while taken.len() < batch && Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            taken.push(message?.detach());
        }
    }
    if taken.is_empty() {
        return Ok(0);
    }
    producer.begin_transaction()?;
    for message in &taken {
        send(producer, output, &format!("out-{}", payload_str(message)))?;
    }
    let next = taken.iter().map(|m| m.offset()).max().unwrap_or(-1) + 1;
    let mut offsets = TopicPartitionList::new();
    offsets.add_partition_offset(input, 0, Offset::Offset(next))?;
    let metadata = consumer
        .group_metadata()
        .context("consumer has no group metadata")?;
    producer.send_offsets_to_transaction(&offsets, &metadata, TIMEOUT)?;
    producer.commit_transaction(TIMEOUT)?;
    Ok(taken.len())
}

#[test]
fn consume_transform_produce_is_exactly_once_across_a_broker_restart() {
    with_broker(
        BrokerOptions::new().flag("--group-initial-rebalance-delay-ms", 0),
        |broker| {
            let input = topic_name("ctp-in");
            let output = format!("{input}-out");
            create_topic(broker, &input, 1, &[])?;
            create_topic(broker, &output, 1, &[])?;
            let records: Vec<TestRecord> = (0..200)
                .map(|i| TestRecord::value(i.to_string()).partition(0))
                .collect();
            produce_all(&broker.producer(), &input, &records)?;
            let group = format!("{input}-group");
            let mut processed = 0;
            for phase in 0..2 {
                let consumer = group_consumer(broker, &group, &input)?;
                let producer = transactional_producer(broker, &group, 60_000)?;
                let goal = if phase == 0 { 100 } else { 200 };
                let deadline = Instant::now() + Duration::from_secs(60);
                while processed < goal && Instant::now() < deadline {
                    processed += transform_once(&consumer, &producer, &input, &output, 25)?;
                }
                drop(producer);
                drop(consumer);
                if phase == 0 {
                    broker.restart()?;
                }
            }
            let outputs: Vec<String> = read_values(broker, &output, "read_committed")?;
            let expected: Vec<String> = (0..200).map(|i| format!("out-{i}")).collect();
            let distinct: BTreeSet<&String> = outputs.iter().collect();
            if outputs != expected {
                bail!(
                    "output holds {} records ({} distinct), expected exactly 200 in order",
                    outputs.len(),
                    distinct.len()
                );
            }
            let all_input = read_to_end(&broker.bootstrap(), &input, 0, Offset::Beginning)?;
            if all_input.len() != 200 {
                bail!("input changed: {} records", all_input.len());
            }
            Ok(())
        },
    );
}

#[test]
fn wrong_ids_epochs_and_states_get_kafka_errors_without_touching_other_producers() {
    use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
    use kafka_protocol::messages::{
        AddPartitionsToTxnRequest, EndTxnRequest, InitProducerIdRequest, ProducerId, TopicName,
        TransactionalId,
    };
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::ResponseError;

    with_broker(BrokerOptions::new(), |broker| {
        let topic = topic_name("txn-bad");
        create_topic(broker, &topic, 1, &[])?;
        let mut raw = broker.raw()?;
        let txn = |id: &str| TransactionalId(StrBytes::from_string(id.to_string()));
        let init = |raw: &mut causeway_integration_tests::raw::RawClient,
                    id: &str|
         -> Result<(i64, i16)> {
            let response = raw.request(
                3,
                &InitProducerIdRequest::default()
                    .with_transactional_id(Some(txn(id)))
                    .with_transaction_timeout_ms(60_000)
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1),
            )?;
            if response.error_code != 0 {
                bail!("InitProducerId failed with {}", response.error_code);
            }
            Ok((response.producer_id.0, response.producer_epoch))
        };
        let end = |raw: &mut causeway_integration_tests::raw::RawClient,
                   id: &str,
                   pid: i64,
                   epoch: i16|
         -> Result<i16> {
            Ok(raw
                .request(
                    3,
                    &EndTxnRequest::default()
                        .with_transactional_id(txn(id))
                        .with_producer_id(ProducerId(pid))
                        .with_producer_epoch(epoch)
                        .with_committed(true),
                )?
                .error_code)
        };
        let add = |raw: &mut causeway_integration_tests::raw::RawClient,
                   id: &str,
                   pid: i64,
                   epoch: i16|
         -> Result<i16> {
            let response = raw.request(
                3,
                &AddPartitionsToTxnRequest::default()
                    .with_v3_and_below_transactional_id(txn(id))
                    .with_v3_and_below_producer_id(ProducerId(pid))
                    .with_v3_and_below_producer_epoch(epoch)
                    .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
                        .with_name(TopicName(StrBytes::from_string(topic.clone())))
                        .with_partitions(vec![0])]),
            )?;
            Ok(
                response.results_by_topic_v3_and_below[0].results_by_partition[0]
                    .partition_error_code,
            )
        };
        let (pid_a, epoch_a) = init(&mut raw, "bad-a")?;
        let (pid_b, epoch_b) = init(&mut raw, "bad-b")?;
        ensure(
            end(&mut raw, "no-such-id", pid_a, epoch_a)?,
            ResponseError::InvalidProducerIdMapping,
            "EndTxn of an unknown id",
        )?;
        ensure(
            end(&mut raw, "bad-a", pid_a, epoch_a)?,
            ResponseError::InvalidTxnState,
            "EndTxn with nothing begun",
        )?;
        ensure(
            add(&mut raw, "bad-a", pid_b, epoch_a)?,
            ResponseError::InvalidProducerIdMapping,
            "another producer's id",
        )?;
        let (_, epoch_a2) = init(&mut raw, "bad-a")?;
        ensure(
            add(&mut raw, "bad-a", pid_a, epoch_a)?,
            ResponseError::ProducerFenced,
            "a stale epoch",
        )?;
        ensure(
            add(&mut raw, "bad-a", pid_a, epoch_a2)?,
            ResponseError::Unknown(0),
            "the current epoch",
        )?;
        // Producer b never noticed any of it.
        ensure(
            add(&mut raw, "bad-b", pid_b, epoch_b)?,
            ResponseError::Unknown(0),
            "an untouched producer",
        )?;
        ensure(
            end(&mut raw, "bad-b", pid_b, epoch_b)?,
            ResponseError::Unknown(0),
            "committing b",
        )?;
        Ok(())
    });
}

fn ensure(got: i16, want: kafka_protocol::ResponseError, what: &str) -> Result<()> {
    if got != want.code() {
        bail!(
            "{what}: got error {got}, expected {} ({want:?})",
            want.code()
        );
    }
    Ok(())
}

#[test]
fn kill_9_during_commits_leaves_only_whole_transactions_visible() {
    with_broker(BrokerOptions::new(), |broker| {
        let topic = topic_name("txn-crash");
        create_topic(broker, &topic, 1, &[])?;
        let id = format!("{topic}-id");
        {
            let producer = transactional_producer(broker, &id, 60_000)?;
            let pid = broker.pid().context("broker pid")?;
            let committed = Arc::new(AtomicUsize::new(0));
            // Once a few transactions committed, the broker dies at an arbitrary point, most
            // likely in the middle of the next commit (however slow the machine is).
            let killer = {
                let committed = committed.clone();
                std::thread::spawn(move || {
                    let deadline = Instant::now() + Duration::from_secs(30);
                    while committed.load(Ordering::SeqCst) < 5 && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    std::thread::sleep(Duration::from_millis(7));
                    let _ = std::process::Command::new("kill")
                        .args(["-9", &pid.to_string()])
                        .status();
                })
            };
            let started = Instant::now();
            let mut round = 0;
            while started.elapsed() < Duration::from_secs(40) {
                let attempt = (|| -> Result<()> {
                    producer.begin_transaction()?;
                    for i in 0..3 {
                        send(&producer, &topic, &format!("t{round}-{i}"))?;
                    }
                    producer.commit_transaction(Duration::from_secs(2))?;
                    Ok(())
                })();
                if attempt.is_err() {
                    break;
                }
                round += 1;
                committed.store(round, Ordering::SeqCst);
            }
            let _ = killer.join();
            if round < 5 {
                bail!("only {round} transactions before the crash: the test proved little");
            }
        }
        broker.kill9();
        broker.restart()?;
        // A new producer with the same id resolves whatever the crash left open.
        let successor = transactional_producer(broker, &id, 60_000)?;
        successor.begin_transaction()?;
        send(&successor, &topic, "after-restart")?;
        successor.commit_transaction(TIMEOUT)?;
        let visible = read_values(broker, &topic, "read_committed")?;
        if visible.last().map(String::as_str) != Some("after-restart") {
            bail!("the successor's commit is not visible last: {visible:?}");
        }
        let mut per_round: std::collections::BTreeMap<String, usize> = Default::default();
        for value in &visible[..visible.len() - 1] {
            let round = value.split('-').next().unwrap_or_default().to_string();
            *per_round.entry(round).or_default() += 1;
        }
        if per_round.len() < 5 || per_round.values().any(|n| *n != 3) {
            bail!("partial or missing transactions are visible: {per_round:?}");
        }
        Ok(())
    });
}

/// DescribeProducers (KIP-664), as `kafka-transactions.sh describe-producers` sends it: each
/// producer of a partition with its last sequence, and the first offset of the transaction it
/// holds open (what holds the last stable offset back), cleared by the commit; unknown topics
/// and partitions get UNKNOWN_TOPIC_OR_PARTITION.
#[test]
fn describe_producers_names_each_producer_and_its_open_transaction() {
    use kafka_protocol::messages::describe_producers_request::TopicRequest;
    use kafka_protocol::messages::{DescribeProducersRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::ResponseError;

    with_broker(BrokerOptions::new(), |broker| {
        let topic = topic_name("describe-producers");
        create_topic(broker, &topic, 2, &[])?;
        let idempotent: rdkafka::producer::FutureProducer = broker
            .producer_config()
            .set("enable.idempotence", "true")
            .create()?;
        let records: Vec<TestRecord> = (0..3)
            .map(|i| TestRecord::value(format!("plain-{i}")).partition(0))
            .collect();
        produce_all(&idempotent, &topic, &records)?;
        let transactional = transactional_producer(broker, &format!("{topic}-txn"), 60_000)?;
        transactional.begin_transaction()?;
        send(&transactional, &topic, "in-transaction")?;
        transactional.flush(TIMEOUT)?;

        let name = |n: &str| TopicName(StrBytes::from_string(n.to_string()));
        let request = DescribeProducersRequest::default().with_topics(vec![
            TopicRequest::default()
                .with_name(name(&topic))
                .with_partition_indexes(vec![0, 1, 7]),
            TopicRequest::default()
                .with_name(name("no-such-topic"))
                .with_partition_indexes(vec![0]),
        ]);
        let describe =
            |raw: &mut causeway_integration_tests::raw::RawClient| raw.request(0, &request);
        let mut raw = broker.raw()?;
        let response = describe(&mut raw)?;
        let [ours, unknown] = response.topics.as_slice() else {
            bail!("{} topics answered, not 2", response.topics.len());
        };
        let codes: Vec<(i32, i16)> = ours
            .partitions
            .iter()
            .map(|p| (p.partition_index, p.error_code))
            .collect();
        let unknown_code = ResponseError::UnknownTopicOrPartition.code();
        ensure_eq!(
            codes,
            vec![(0, 0), (1, 0), (7, unknown_code)],
            "partition error codes"
        );
        if unknown.partitions.first().map(|p| p.error_code) != Some(unknown_code) {
            bail!("an unknown topic was answered {:?}", unknown.partitions);
        }
        if !ours.partitions[1].active_producers.is_empty() {
            bail!(
                "partition 1 took no batch yet lists {:?}",
                ours.partitions[1].active_producers
            );
        }
        let producers = &ours.partitions[0].active_producers;
        let plain: Vec<_> = producers
            .iter()
            .filter(|p| p.current_txn_start_offset == -1)
            .collect();
        let open: Vec<_> = producers
            .iter()
            .filter(|p| p.current_txn_start_offset != -1)
            .collect();
        let ([plain], [open]) = (plain.as_slice(), open.as_slice()) else {
            bail!("partition 0 lists {producers:?}, not one idempotent and one transactional producer");
        };
        if (
            plain.last_sequence,
            open.last_sequence,
            open.current_txn_start_offset,
        ) != (2, 0, 3)
        {
            bail!("idempotent {plain:?}, transactional {open:?}: wanted last sequences 2 and 0, the transaction from offset 3");
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as i64;
        if !(now - 60_000..=now).contains(&open.last_timestamp)
            || plain.producer_id == open.producer_id
        {
            bail!("idempotent {plain:?}, transactional {open:?}");
        }

        transactional.commit_transaction(TIMEOUT)?;
        let after = describe(&mut raw)?;
        let still_open: Vec<_> = after.topics[0].partitions[0]
            .active_producers
            .iter()
            .filter(|p| p.current_txn_start_offset != -1)
            .collect();
        if !still_open.is_empty() {
            bail!("after the commit, transactions are still listed open: {still_open:?}");
        }
        Ok(())
    });
}

/// A transactional id idle past `--transactional-id-expiration-ms` with no transaction open is
/// forgotten (Kafka's `transactional.id.expiration.ms`), so ids made up in a loop cannot grow
/// the coordinator without bound; one with a transaction open is kept, and an expired id can be
/// used again.
#[test]
fn idle_transactional_ids_expire_and_can_be_used_again() {
    use kafka_protocol::messages::{DescribeTransactionsRequest, TransactionalId};
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::ResponseError;

    let options = BrokerOptions::new().flag("--transactional-id-expiration-ms", 2_000);
    with_broker(options, |broker| {
        let topic = topic_name("expiring-ids");
        create_topic(broker, &topic, 1, &[])?;
        let (idle_id, open_id) = (format!("{topic}-idle"), format!("{topic}-open"));
        let idle = transactional_producer(broker, &idle_id, 60_000)?;
        idle.begin_transaction()?;
        send(&idle, &topic, "committed")?;
        idle.commit_transaction(TIMEOUT)?;
        drop(idle);
        let open = transactional_producer(broker, &open_id, 60_000)?;
        open.begin_transaction()?;
        send(&open, &topic, "left open")?;
        open.flush(TIMEOUT)?;

        let describe = |id: &str| -> Result<i16> {
            let request = DescribeTransactionsRequest::default().with_transactional_ids(vec![
                TransactionalId(StrBytes::from_string(id.to_string())),
            ]);
            let response = broker.raw()?.request(0, &request)?;
            Ok(response
                .transaction_states
                .first()
                .map_or(-1, |s| s.error_code))
        };
        let not_found = ResponseError::TransactionalIdNotFound.code();
        let expired = causeway_integration_tests::wait_until(Duration::from_secs(20), || {
            describe(&idle_id).is_ok_and(|code| code == not_found)
        });
        if !expired {
            bail!("an idle transactional id was still described after its expiration");
        }
        ensure_eq!(
            describe(&open_id)?,
            0,
            "an id with a transaction open is kept"
        );
        open.commit_transaction(TIMEOUT)?;

        let again = transactional_producer(broker, &idle_id, 60_000)?;
        again.begin_transaction()?;
        send(&again, &topic, "again")?;
        again.commit_transaction(TIMEOUT)?;
        let committed = read_values(broker, &topic, "read_committed")?;
        ensure_eq!(
            committed,
            vec![
                "committed".to_string(),
                "left open".to_string(),
                "again".to_string()
            ],
            "committed records"
        );
        Ok(())
    });
}
