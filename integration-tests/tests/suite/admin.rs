//! Topic administration through rdkafka's AdminClient, and topic auto-creation.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use causeway_integration_tests::batch::simple_batch;
use causeway_integration_tests::{
    block_on, broker_binary, create_topic, ensure_eq, produce_all, topic_name,
    topic_partition_count, wait_until, with_broker, BrokerOptions, BrokerProcess, TestRecord,
    CLIENT_TIMEOUT,
};
use rdkafka::admin::{
    AdminOptions, AlterConfig, ConfigResource, NewPartitions, NewTopic, ResourceSpecifier,
    TopicReplication,
};
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::types::RDKafkaErrorCode;

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_CONFIG: i16 = 40;

fn opts() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(CLIENT_TIMEOUT))
}

fn describe_topic(broker: &BrokerProcess, topic: &str) -> Result<ConfigResource> {
    let admin = broker.admin();
    let res = block_on(admin.describe_configs([&ResourceSpecifier::Topic(topic)], &opts()))?;
    match res.into_iter().next() {
        Some(Ok(r)) => Ok(r),
        Some(Err(e)) => bail!("describe_configs({topic}): {e:?}"),
        None => bail!("describe_configs({topic}) returned nothing"),
    }
}

fn config_value(res: &ConfigResource, name: &str) -> Option<String> {
    res.get(name).and_then(|e| e.value.clone())
}

/// A producer that gives up quickly on topics missing from metadata.
fn impatient_producer(broker: &BrokerProcess) -> Result<FutureProducer> {
    Ok(broker
        .producer_config()
        .set("message.timeout.ms", "8000")
        .set("topic.metadata.propagation.max.ms", "1000")
        .create()?)
}

fn expect_unknown_topic(result: Result<Vec<(i32, i64)>>) -> Result<()> {
    let err = match result {
        Ok(d) => bail!("produce to a missing topic succeeded: {d:?}"),
        Err(e) => e,
    };
    let text = format!("{err:#}");
    // librdkafka reports the broker's UNKNOWN_TOPIC_OR_PART, or its local _UNKNOWN_TOPIC.
    if !(text.contains("UnknownTopicOrPartition") || text.contains("UnknownTopic")) {
        bail!("produce to a missing topic failed with an unexpected error: {text}");
    }
    Ok(())
}

#[test]
fn created_topic_has_requested_partitions_and_configs() {
    with_broker(BrokerOptions::new().no_auto_create(), |broker| {
        let topic = topic_name("created");
        create_topic(
            broker,
            &topic,
            3,
            &[("retention.ms", "3600000"), ("cleanup.policy", "compact")],
        )?;
        ensure_eq!(
            topic_partition_count(&broker.bootstrap(), &topic)?,
            Some(3),
            "partitions in metadata"
        );
        let cfg = describe_topic(broker, &topic)?;
        ensure_eq!(
            config_value(&cfg, "retention.ms").as_deref(),
            Some("3600000")
        );
        ensure_eq!(
            config_value(&cfg, "cleanup.policy").as_deref(),
            Some("compact")
        );
        ensure_eq!(
            config_value(&cfg, "segment.bytes").as_deref(),
            Some("1073741824"),
            "default segment.bytes"
        );
        let retention = cfg.get("retention.ms").context("retention.ms entry")?;
        if retention.is_default {
            bail!("retention.ms override is reported as a default: {retention:?}");
        }
        let seg = cfg.get("segment.bytes").context("segment.bytes entry")?;
        if !seg.is_default {
            bail!("segment.bytes default is reported as an override: {seg:?}");
        }
        // Every partition accepts records.
        let recs: Vec<TestRecord> = (0..3)
            // A compacted topic takes only keyed records (KIP-467).
            .map(|p| TestRecord::value("x").key("k").partition(p))
            .collect();
        let d = produce_all(&broker.producer(), &topic, &recs)?;
        ensure_eq!(d, vec![(0, 0), (1, 0), (2, 0)]);
        Ok(())
    });
}

#[test]
fn creating_an_existing_topic_fails_with_topic_already_exists() {
    with_broker(BrokerOptions::new().no_auto_create(), |broker| {
        let topic = topic_name("dup");
        create_topic(broker, &topic, 1, &[])?;
        let admin = broker.admin();
        let nt = NewTopic::new(&topic, 2, TopicReplication::Fixed(1));
        let res = block_on(admin.create_topics([&nt], &opts()))?;
        match res.first() {
            Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => {}
            other => bail!("second creation returned {other:?}, expected TopicAlreadyExists"),
        }
        ensure_eq!(
            topic_partition_count(&broker.bootstrap(), &topic)?,
            Some(1),
            "the failed creation changed the topic"
        );
        Ok(())
    });
}

#[test]
fn validate_only_creation_does_not_create_the_topic() {
    with_broker(BrokerOptions::new().no_auto_create(), |broker| {
        let topic = topic_name("validate");
        let admin = broker.admin();
        let nt = NewTopic::new(&topic, 2, TopicReplication::Fixed(1));
        let res = block_on(admin.create_topics([&nt], &opts().validate_only(true)))?;
        match res.first() {
            Some(Ok(_)) => {}
            other => bail!("validate-only creation returned {other:?}"),
        }
        ensure_eq!(
            topic_partition_count(&broker.bootstrap(), &topic)?,
            None,
            "validate-only creation created the topic"
        );
        // Validation still rejects what a real creation would reject.
        let bad = NewTopic::new(&topic, 1, TopicReplication::Fixed(1)).set("retention.ms", "soon");
        let res = block_on(admin.create_topics([&bad], &opts().validate_only(true)))?;
        if !matches!(res.first(), Some(Err(_))) {
            bail!("validate-only creation with an invalid config was accepted: {res:?}");
        }
        Ok(())
    });
}

#[test]
fn alter_configs_changes_retention_and_rejects_invalid_values() {
    with_broker(BrokerOptions::new().no_auto_create(), |broker| {
        let topic = topic_name("alter");
        create_topic(broker, &topic, 1, &[("retention.ms", "3600000")])?;
        let admin = broker.admin();
        let alter =
            AlterConfig::new(ResourceSpecifier::Topic(&topic)).set("retention.ms", "7200000");
        let res = block_on(admin.alter_configs([&alter], &opts()))?;
        if let Some(Err(e)) = res.first() {
            bail!("alter_configs failed: {e:?}");
        }
        let cfg = describe_topic(broker, &topic)?;
        ensure_eq!(
            config_value(&cfg, "retention.ms").as_deref(),
            Some("7200000")
        );

        // rdkafka's alter_configs drops per-resource errors: check the error with the raw client.
        let (code, message) = broker.raw()?.alter_topic_configs(
            &topic,
            &[("retention.ms", "not-a-number")],
            false,
        )?;
        ensure_eq!(
            code,
            INVALID_CONFIG,
            "AlterConfigs retention.ms=not-a-number ({message:?})"
        );
        let cfg = describe_topic(broker, &topic)?;
        ensure_eq!(
            config_value(&cfg, "retention.ms").as_deref(),
            Some("7200000"),
            "a rejected alteration changed the config"
        );

        // Creating a topic with an invalid config value fails and creates nothing.
        let other = topic_name("badcfg");
        let nt =
            NewTopic::new(&other, 1, TopicReplication::Fixed(1)).set("cleanup.policy", "shred");
        let res = block_on(admin.create_topics([&nt], &opts()))?;
        if !matches!(res.first(), Some(Err(_))) {
            bail!("topic with cleanup.policy=shred was created: {res:?}");
        }
        ensure_eq!(topic_partition_count(&broker.bootstrap(), &other)?, None);
        Ok(())
    });
}

/// `causeway.min.regions` above the number of regions could never be satisfied: every acks=all
/// produce would wait for its timeout. Creation and alteration refuse it with INVALID_CONFIG.
#[test]
fn min_regions_above_the_regions_of_the_mesh_is_refused() {
    with_broker(BrokerOptions::new().no_auto_create(), |broker| {
        let admin = broker.admin();
        let topic = topic_name("minregions");
        let nt =
            NewTopic::new(&topic, 1, TopicReplication::Fixed(1)).set("causeway.min.regions", "2");
        let res = block_on(admin.create_topics([&nt], &opts()))?;
        match res.first() {
            Some(Err((_, RDKafkaErrorCode::InvalidConfig))) => {}
            other => bail!("min.regions=2 on a single region returned {other:?}"),
        }
        ensure_eq!(topic_partition_count(&broker.bootstrap(), &topic)?, None);
        create_topic(broker, &topic, 1, &[("causeway.min.regions", "1")])?;
        let (code, message) =
            broker
                .raw()?
                .alter_topic_configs(&topic, &[("causeway.min.regions", "3")], false)?;
        ensure_eq!(
            code,
            INVALID_CONFIG,
            "AlterConfigs min.regions=3 ({message:?})"
        );
        ensure_eq!(
            message.as_deref().is_some_and(|m| m.contains("region")),
            true,
            "the message says why: {message:?}"
        );
        Ok(())
    });
}

/// Runs `causeway topic ARGS -b BOOTSTRAP`; returns whether it succeeded and what it printed.
fn topic_cli(broker: &BrokerProcess, args: &[&str]) -> Result<(bool, String)> {
    let bootstrap = broker.bootstrap();
    let out = std::process::Command::new(broker_binary()?)
        .arg("topic")
        .args(args)
        .args(["-b", bootstrap.as_str()])
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

/// Every config Causeway does not apply, with a valid Kafka value that asks for something it
/// does not do, and a word its refusal must say.
const REFUSED: &[(&str, &str, &str)] = &[
    ("min.insync.replicas", "2", "causeway.min.regions"),
    ("flush.messages", "1", "acks=all"),
    ("file.delete.delay.ms", "0", "delay"),
    ("preallocate", "true", "preallocated"),
    ("segment.index.bytes", "4096", "index"),
    ("segment.jitter.ms", "1000", "segment.ms"),
    ("unclean.leader.election.enable", "true", "leaders"),
];

/// A setting Causeway would store and then ignore (`min.insync.replicas=2`, ...) is refused with
/// INVALID_CONFIG and a message naming it, saying it is not supported and why, on CreateTopics
/// (nothing is created), AlterConfigs and IncrementalAlterConfigs (nothing changes).
#[test]
fn settings_causeway_does_not_apply_are_refused_by_name_and_change_nothing() {
    with_broker(BrokerOptions::new().no_auto_create(), |broker| {
        let admin = broker.admin();
        let mut raw = broker.raw()?;
        let topic = topic_name("refused");
        for &(key, value, why) in REFUSED {
            let expected = format!("{key}={value} is not supported by Causeway");
            // CreateTopics, through rdkafka (the code) and the CLI (the message).
            let nt = NewTopic::new(&topic, 1, TopicReplication::Fixed(1)).set(key, value);
            match block_on(admin.create_topics([&nt], &opts()))?.first() {
                Some(Err((_, RDKafkaErrorCode::InvalidConfig))) => {}
                other => bail!("creating with {key}={value} returned {other:?}"),
            }
            let (ok, text) = topic_cli(
                broker,
                &["create", &topic, "-p", "1", "-c", &format!("{key}={value}")],
            )?;
            ensure_eq!(ok, false, "create -c {key}={value} succeeded: {text}");
            ensure_eq!(
                text.contains("InvalidConfig") && text.contains(&expected) && text.contains(why),
                true,
                "create -c {key}={value} said: {text}"
            );
            ensure_eq!(topic_partition_count(&broker.bootstrap(), &topic)?, None);
        }

        // Kafka's default is accepted, and so is a setting Causeway applies.
        create_topic(
            broker,
            &topic,
            1,
            &[
                ("retention.ms", "3600000"),
                ("min.insync.replicas", "1"),
                ("min.cleanable.dirty.ratio", "0.01"),
            ],
        )?;
        for &(key, value, why) in REFUSED {
            let expected = format!("{key}={value} is not supported by Causeway");
            let before = describe_topic(broker, &topic)?;
            // AlterConfigs: the refused config fails the whole change.
            let (code, message) = raw.alter_topic_configs(
                &topic,
                &[("retention.ms", "7200000"), (key, value)],
                false,
            )?;
            ensure_eq!(
                code,
                INVALID_CONFIG,
                "AlterConfigs {key}={value} ({message:?})"
            );
            let message = message.unwrap_or_default();
            ensure_eq!(
                message.contains(&expected) && message.contains(why),
                true,
                "AlterConfigs {key}={value} said: {message}"
            );
            // IncrementalAlterConfigs, through the CLI.
            let (ok, text) = topic_cli(
                broker,
                &[
                    "alter-config",
                    &topic,
                    "--set",
                    "retention.ms=7200000",
                    "--set",
                    &format!("{key}={value}"),
                ],
            )?;
            ensure_eq!(
                ok,
                false,
                "alter-config --set {key}={value} succeeded: {text}"
            );
            ensure_eq!(
                text.contains("InvalidConfig") && text.contains(&expected) && text.contains(why),
                true,
                "alter-config --set {key}={value} said: {text}"
            );
            let after = describe_topic(broker, &topic)?;
            for name in [key, "retention.ms", "min.cleanable.dirty.ratio"] {
                ensure_eq!(
                    config_value(&after, name),
                    config_value(&before, name),
                    "a refused change of {key} changed {name}"
                );
            }
            ensure_eq!(
                config_value(&after, "retention.ms").as_deref(),
                Some("3600000")
            );
        }
        Ok(())
    });
}

/// `message.format.version` is deprecated in Kafka 3 and accepted there with no effect (librdkafka's
/// test 0092 sets it with AlterConfigs): Causeway accepts and reports it too, writes format v2 as
/// before, and refuses a value that is not a Kafka version.
#[test]
fn message_format_version_is_accepted_and_reported_as_kafka_3_does() {
    with_broker(BrokerOptions::new().no_auto_create(), |broker| {
        let topic = topic_name("msgver");
        create_topic(broker, &topic, 1, &[])?;
        let mut raw = broker.raw()?;
        let (code, message) =
            raw.alter_topic_configs(&topic, &[("message.format.version", "0.10.0.0")], false)?;
        ensure_eq!(code, 0, "AlterConfigs message.format.version ({message:?})");
        let cfg = describe_topic(broker, &topic)?;
        ensure_eq!(
            config_value(&cfg, "message.format.version").as_deref(),
            Some("0.10.0.0")
        );
        let d = produce_all(&broker.producer(), &topic, &[TestRecord::value("v2")])?;
        ensure_eq!(d, vec![(0, 0)]);
        let (code, message) =
            raw.alter_topic_configs(&topic, &[("message.format.version", "soon")], false)?;
        ensure_eq!(
            code,
            INVALID_CONFIG,
            "message.format.version=soon ({message:?})"
        );
        Ok(())
    });
}

/// A table's merge mode is read when its records are materialized, and each region reaches a
/// change at a different record: rows would differ between regions. It is fixed at creation.
#[test]
fn a_tables_merge_mode_cannot_change_after_creation() {
    with_broker(BrokerOptions::new().no_auto_create(), |broker| {
        let topic = topic_name("mergemode");
        create_topic(broker, &topic, 1, &[("cleanup.policy", "compact")])?;
        let mut raw = broker.raw()?;
        let (code, message) =
            raw.alter_topic_configs(&topic, &[("causeway.merge", "lww")], false)?;
        ensure_eq!(code, INVALID_CONFIG, "causeway.merge=lww ({message:?})");
        // Naming the mode it already has, or other configs, is fine.
        let (code, message) = raw.alter_topic_configs(
            &topic,
            &[("cleanup.policy", "compact"), ("causeway.merge", "crdt")],
            false,
        )?;
        ensure_eq!(code, 0, "causeway.merge=crdt unchanged ({message:?})");
        let cfg = describe_topic(broker, &topic)?;
        ensure_eq!(
            config_value(&cfg, "causeway.merge").as_deref(),
            Some("crdt")
        );
        Ok(())
    });
}

/// A replica assignment names the partitions to create (librdkafka's test 0081 creates topics so;
/// before, the broker default count was used instead). A region is one broker holding every
/// partition, so an assignment naming another broker is refused with INVALID_REPLICA_ASSIGNMENT,
/// for new topics and for added partitions alike.
#[test]
fn a_replica_assignment_sets_the_partition_count() {
    with_broker(BrokerOptions::new().no_auto_create(), |broker| {
        let admin = broker.admin();
        let topic = topic_name("assigned");
        let on_this_broker: &[&[i32]] = &[&[0], &[0], &[0]];
        let new = NewTopic::new(&topic, 3, TopicReplication::Variable(on_this_broker));
        let created = block_on(admin.create_topics([&new], &opts()))?;
        ensure_eq!(
            created,
            vec![Ok(topic.clone())],
            "create with an assignment"
        );
        ensure_eq!(topic_partition_count(&broker.bootstrap(), &topic)?, Some(3));

        let elsewhere = topic_name("elsewhere");
        let new = NewTopic::new(&elsewhere, 1, TopicReplication::Variable(&[&[5]]));
        let refused = block_on(admin.create_topics([&new], &opts()))?;
        match refused.first() {
            Some(Err((_, RDKafkaErrorCode::InvalidReplicaAssignment))) => {}
            other => bail!("an assignment to broker 5 answered {other:?}"),
        }
        ensure_eq!(
            topic_partition_count(&broker.bootstrap(), &elsewhere)?,
            None
        );

        let grow = NewPartitions::new(&topic, 5).assign(&[&[0], &[0]]);
        let grown = block_on(admin.create_partitions([&grow], &opts()))?;
        ensure_eq!(
            grown,
            vec![Ok(topic.clone())],
            "add partitions with an assignment"
        );
        let short = NewPartitions::new(&topic, 7).assign(&[&[0]]);
        match block_on(admin.create_partitions([&short], &opts()))?.first() {
            Some(Err((_, RDKafkaErrorCode::InvalidReplicaAssignment))) => {}
            other => bail!("one assignment for two new partitions answered {other:?}"),
        }
        ensure_eq!(topic_partition_count(&broker.bootstrap(), &topic)?, Some(5));
        Ok(())
    });
}

#[test]
fn create_partitions_grows_a_topic_to_five_partitions() {
    with_broker(BrokerOptions::new().no_auto_create(), |broker| {
        let topic = topic_name("grow");
        create_topic(broker, &topic, 3, &[])?;
        let admin = broker.admin();
        let np = NewPartitions::new(&topic, 5);
        let res = block_on(admin.create_partitions([&np], &opts()))?;
        if let Some(Err(e)) = res.first() {
            bail!("create_partitions failed: {e:?}");
        }
        ensure_eq!(
            topic_partition_count(&broker.bootstrap(), &topic)?,
            Some(5),
            "partitions after growing"
        );
        let d = produce_all(
            &broker.producer(),
            &topic,
            &[TestRecord::value("on-four").partition(4)],
        )?;
        ensure_eq!(d, vec![(4, 0)], "produce to the new partition 4");
        let msgs = causeway_integration_tests::read_partition(
            &broker.bootstrap(),
            &topic,
            4,
            rdkafka::Offset::Beginning,
            1,
        )?;
        ensure_eq!(causeway_integration_tests::payload_str(&msgs[0]), "on-four");

        // Shrinking is refused.
        let np = NewPartitions::new(&topic, 2);
        let res = block_on(admin.create_partitions([&np], &opts()))?;
        if !matches!(res.first(), Some(Err(_))) {
            bail!("shrinking to 2 partitions was accepted: {res:?}");
        }
        ensure_eq!(topic_partition_count(&broker.bootstrap(), &topic)?, Some(5));
        Ok(())
    });
}

#[test]
fn deleted_topic_disappears_and_rejects_produce() {
    with_broker(BrokerOptions::new().no_auto_create(), |broker| {
        let topic = topic_name("doomed");
        create_topic(broker, &topic, 2, &[])?;
        produce_all(
            &broker.producer(),
            &topic,
            &[TestRecord::value("bye").partition(1)],
        )?;
        let admin = broker.admin();
        let res = block_on(admin.delete_topics(&[&topic], &opts()))?;
        if let Some(Err(e)) = res.first() {
            bail!("delete_topics failed: {e:?}");
        }
        ensure_eq!(
            topic_partition_count(&broker.bootstrap(), &topic)?,
            None,
            "deleted topic still in metadata"
        );
        let resp = broker
            .raw()?
            .produce(&topic, 0, 1, simple_batch("late", 1, 0).freeze())?;
        ensure_eq!(resp.error_code, UNKNOWN_TOPIC_OR_PARTITION, "raw produce");
        expect_unknown_topic(produce_all(
            &impatient_producer(broker)?,
            &topic,
            &[TestRecord::value("late").partition(0)],
        ))?;
        // Deleting it again reports it unknown.
        let res = block_on(admin.delete_topics(&[&topic], &opts()))?;
        match res.first() {
            Some(Err((_, RDKafkaErrorCode::UnknownTopicOrPartition))) => {}
            other => bail!("second deletion returned {other:?}"),
        }
        // The name can be reused, starting empty.
        create_topic(broker, &topic, 1, &[])?;
        let d = produce_all(
            &broker.producer(),
            &topic,
            &[TestRecord::value("again").partition(0)],
        )?;
        ensure_eq!(d, vec![(0, 0)], "recreated topic starts at offset 0");
        Ok(())
    });
}

#[test]
fn produce_to_unknown_topic_fails_when_auto_create_is_off() {
    with_broker(BrokerOptions::new().no_auto_create(), |broker| {
        let topic = topic_name("nowhere");
        let resp = broker
            .raw()?
            .produce(&topic, 0, 1, simple_batch("x", 1, 0).freeze())?;
        ensure_eq!(resp.error_code, UNKNOWN_TOPIC_OR_PARTITION, "raw produce");
        expect_unknown_topic(produce_all(
            &impatient_producer(broker)?,
            &topic,
            &[TestRecord::value("x")],
        ))?;
        ensure_eq!(
            topic_partition_count(&broker.bootstrap(), &topic)?,
            None,
            "topic was created although auto-create is off"
        );
        Ok(())
    });
}

#[test]
fn metadata_for_unknown_topic_auto_creates_it_with_num_partitions() {
    with_broker(BrokerOptions::new().flag("--num-partitions", 3), |broker| {
        let topic = topic_name("auto");
        // A producer's metadata request allows auto-creation.
        let producer: rdkafka::producer::BaseProducer = broker.producer_config().create()?;
        let md = producer
            .client()
            .fetch_metadata(Some(&topic), CLIENT_TIMEOUT)?;
        if !md.topics().iter().any(|t| t.name() == topic) {
            bail!("metadata response does not mention {topic}");
        }
        let bootstrap = broker.bootstrap();
        let mut last = None;
        let ok = wait_until(Duration::from_secs(10), || {
            last = topic_partition_count(&bootstrap, &topic).ok().flatten();
            last == Some(3)
        });
        if !ok {
            bail!("auto-created topic has {last:?} partitions, expected 3 (--num-partitions 3)");
        }
        // Producing to another unknown topic also creates it.
        let other = topic_name("auto-produce");
        let d = produce_all(&broker.producer(), &other, &[TestRecord::value("hi")])?;
        ensure_eq!(d.len(), 1);
        ensure_eq!(topic_partition_count(&bootstrap, &other)?, Some(3));
        Ok(())
    });
}
