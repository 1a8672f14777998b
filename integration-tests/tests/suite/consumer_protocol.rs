//! The KIP-848 consumer group protocol (`group.protocol=consumer`) with librdkafka: the broker
//! assigns partitions through ConsumerGroupHeartbeat and hands each one over only once its
//! previous owner has given it up.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use causeway_integration_tests::regions::metric_sum;
use causeway_integration_tests::{
    create_topic, ensure_eq, produce_all, topic_name, with_broker, BrokerOptions, BrokerProcess,
    TestRecord,
};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, GroupId, ListGroupsRequest,
    ListGroupsResponse,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::TopicPartitionList;

const PARTITIONS: i32 = 4;
const PER_PARTITION: usize = 50;

/// Members are told to heartbeat every 300 ms, so a handover takes about a second.
fn options() -> BrokerOptions {
    BrokerOptions::new().flag("--group-consumer-heartbeat-interval-ms", 300)
}

fn member(broker: &BrokerProcess, group: &str) -> Result<BaseConsumer> {
    member_with(broker, group, &[])
}

/// A member of `group` with `settings` on top of [`member`]'s.
fn member_with(
    broker: &BrokerProcess,
    group: &str,
    settings: &[(&str, &str)],
) -> Result<BaseConsumer> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", group)
        .set("group.protocol", "consumer")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "100")
        .set("log_level", "6");
    for (key, value) in settings {
        config.set(*key, *value);
    }
    Ok(config.create()?)
}

fn assigned(consumer: &BaseConsumer) -> BTreeSet<i32> {
    consumer
        .assignment()
        .map(|tpl| tpl.elements().iter().map(|e| e.partition()).collect())
        .unwrap_or_default()
}

/// Subscribes both `members` of `group` to `topic` and polls until each holds two of its
/// partitions; their assignments and the group's epoch then.
fn split_in_two(
    broker: &BrokerProcess,
    group: &str,
    topic: &str,
    members: [&BaseConsumer; 2],
    seen: &mut Vec<(usize, i32, i64)>,
) -> Result<(BTreeSet<i32>, BTreeSet<i32>, i32)> {
    for m in members {
        m.subscribe(&[topic])?;
    }
    poll_until(&members, "two members", seen, |s| {
        s[0].len() == 2 && s[1].len() == 2
    })?;
    let epoch = describe_groups(broker, &[group])?.groups[0].group_epoch;
    Ok((assigned(members[0]), assigned(members[1]), epoch))
}

/// Polls the members until `done` holds for their assignments; at every look no partition is
/// assigned to two members. Returns the records delivered: (member, partition, offset).
fn poll_until(
    members: &[&BaseConsumer],
    what: &str,
    seen: &mut Vec<(usize, i32, i64)>,
    done: impl Fn(&[BTreeSet<i32>]) -> bool,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for (i, consumer) in members.iter().enumerate() {
            match consumer.poll(Duration::from_millis(50)) {
                None => {}
                Some(Ok(m)) => seen.push((i, m.partition(), m.offset())),
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => {}
                Some(Err(e)) => bail!("member {i}: {e}"),
            }
        }
        let assignments: Vec<BTreeSet<i32>> = members.iter().map(|c| assigned(c)).collect();
        let total: usize = assignments.iter().map(BTreeSet::len).sum();
        let union: BTreeSet<i32> = assignments.iter().flatten().copied().collect();
        if union.len() != total {
            bail!("{what}: a partition is assigned to two members at once: {assignments:?}");
        }
        if done(&assignments) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what}: not reached within 30 s; assignments {assignments:?}");
        }
    }
}

/// Polls the members until `count` records have been delivered in all.
fn read_until(
    members: &[&BaseConsumer],
    seen: &mut Vec<(usize, i32, i64)>,
    count: usize,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < count {
        if Instant::now() > deadline {
            bail!("{} of {count} records delivered within 30 s", seen.len());
        }
        for (i, consumer) in members.iter().enumerate() {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
                seen.push((i, m.partition(), m.offset()));
            }
        }
    }
    Ok(())
}

fn all(n: i32) -> BTreeSet<i32> {
    (0..n).collect()
}

fn list_group(broker: &BrokerProcess, group: &str) -> Result<Option<String>> {
    let request =
        ListGroupsRequest::default().with_types_filter(vec![StrBytes::from_static_str("consumer")]);
    let response: ListGroupsResponse = broker.raw()?.request(5, &request)?;
    Ok(response
        .groups
        .iter()
        .find(|g| g.group_id.as_str() == group)
        .map(|g| format!("{}/{}", g.group_type.as_str(), g.group_state.as_str())))
}

#[test]
fn members_of_the_consumer_protocol_split_a_topic_hand_partitions_over_and_commit() {
    with_broker(options(), |broker| {
        let topic = topic_name("kip848");
        create_topic(broker, &topic, PARTITIONS, &[])?;
        let records: Vec<TestRecord> = (0..PARTITIONS)
            .flat_map(|p| {
                (0..PER_PARTITION).map(move |i| TestRecord::value(format!("{p}-{i}")).partition(p))
            })
            .collect();
        produce_all(&broker.producer(), &topic, &records)?;
        let group = topic_name("g-kip848");
        let wanted = PARTITIONS as usize * PER_PARTITION;
        let mut seen = Vec::new();

        // One member: every partition, every record; its commit is taken.
        let a = member(broker, &group)?;
        a.subscribe(&[&topic])?;
        poll_until(&[&a], "one member", &mut seen, |s| s[0] == all(PARTITIONS))?;
        read_until(&[&a], &mut seen, wanted)?;
        a.commit_consumer_state(CommitMode::Sync)?;
        ensure_eq!(
            list_group(broker, &group)?,
            Some("consumer/Stable".to_string()),
            "ListGroups (types filter consumer)"
        );

        // A second member: two partitions each, never one partition in both.
        let b = member(broker, &group)?;
        b.subscribe(&[&topic])?;
        poll_until(&[&a, &b], "two members", &mut seen, |s| {
            s[0].len() == 2 && s[1].len() == 2
        })?;
        // The new owner starts at the committed offsets: nothing is delivered twice.
        let settle = Instant::now();
        while settle.elapsed() < Duration::from_secs(2) {
            for (i, c) in [&a, &b].iter().enumerate() {
                if let Some(Ok(m)) = c.poll(Duration::from_millis(50)) {
                    seen.push((i, m.partition(), m.offset()));
                }
            }
        }
        let unique: BTreeSet<(i32, i64)> = seen.iter().map(|(_, p, o)| (*p, *o)).collect();
        ensure_eq!(unique.len(), wanted, "distinct records");
        ensure_eq!(
            seen.len(),
            wanted,
            "records delivered (a repeat counts twice)"
        );

        // New records reach their partition's owner, and b commits at its own epoch.
        let more: Vec<TestRecord> = (0..PARTITIONS)
            .map(|p| TestRecord::value(format!("{p}-more")).partition(p))
            .collect();
        produce_all(&broker.producer(), &topic, &more)?;
        read_until(&[&a, &b], &mut seen, wanted + more.len())?;
        for (member, partition, _) in &seen[wanted..] {
            let owner = if *member == 0 {
                assigned(&a)
            } else {
                assigned(&b)
            };
            if !owner.contains(partition) {
                bail!("member {member} read partition {partition}, which it does not own");
            }
        }
        b.commit_consumer_state(CommitMode::Sync)?;

        // b leaves: a gets every partition back, from b's commits (nothing read twice).
        drop(b);
        poll_until(&[&a], "b left", &mut seen, |s| s[0] == all(PARTITIONS))?;
        let settle = Instant::now();
        while settle.elapsed() < Duration::from_secs(2) {
            if let Some(Ok(m)) = a.poll(Duration::from_millis(50)) {
                seen.push((0, m.partition(), m.offset()));
            }
        }
        ensure_eq!(
            seen.len(),
            wanted + more.len(),
            "records delivered after b left (a repeat counts twice)"
        );
        let mut partitions = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            partitions.add_partition(&topic, p);
        }
        ensure_eq!(
            a.committed_offsets(partitions, Duration::from_secs(10))?
                .count(),
            PARTITIONS as usize
        );
        if !broker
            .stderr()
            .contains("consumer group assignment changes")
        {
            bail!("the broker logged no assignment change");
        }
        Ok(())
    });
}

/// ConsumerGroupDescribe v1 of `groups`.
fn describe_groups(
    broker: &BrokerProcess,
    groups: &[&str],
) -> Result<ConsumerGroupDescribeResponse> {
    let request = ConsumerGroupDescribeRequest::default().with_group_ids(
        groups
            .iter()
            .map(|g| GroupId(StrBytes::from_string(g.to_string())))
            .collect(),
    );
    broker.raw()?.request(1, &request)
}

#[test]
fn consumer_group_describe_shows_members_epochs_and_assignments() {
    with_broker(options(), |broker| {
        let topic = topic_name("kip848-describe");
        create_topic(broker, &topic, PARTITIONS, &[])?;
        let group = topic_name("g-describe");
        let a = member_with(broker, &group, &[("client.id", "member-a")])?;
        a.subscribe(&[&topic])?;
        let b = member(broker, &group)?;
        b.subscribe(&[&topic])?;
        let mut seen = Vec::new();
        poll_until(&[&a, &b], "two members", &mut seen, |s| {
            s[0].len() == 2 && s[1].len() == 2
        })?;
        // The group settles once both members hold their targets.
        let deadline = Instant::now() + Duration::from_secs(20);
        let described = loop {
            let response = describe_groups(broker, &[&group, "no-such-group"])?;
            let described = response.groups[0].clone();
            if described.group_state.as_str() == "Stable" {
                ensure_eq!(
                    response.groups[1].error_code,
                    69,
                    "an unknown group (GROUP_ID_NOT_FOUND)"
                );
                break described;
            }
            if Instant::now() > deadline {
                bail!("the group did not settle: {described:?}");
            }
            for c in [&a, &b] {
                let _ = c.poll(Duration::from_millis(50));
            }
        };
        ensure_eq!(described.error_code, 0, "error");
        ensure_eq!(described.members.len(), 2, "members");
        ensure_eq!(described.assignment_epoch, described.group_epoch, "epochs");
        let mut clients: Vec<&str> = described
            .members
            .iter()
            .map(|m| m.client_id.as_str())
            .collect();
        clients.sort_unstable();
        ensure_eq!(
            clients.contains(&"member-a"),
            true,
            "a's client id in {clients:?}"
        );
        let mut every = BTreeSet::new();
        for m in &described.members {
            ensure_eq!(
                m.member_epoch,
                described.group_epoch,
                "a stable member's epoch"
            );
            ensure_eq!(
                m.assignment,
                m.target_assignment,
                "a stable member holds its target"
            );
            ensure_eq!(
                m.subscribed_topic_names
                    .iter()
                    .map(|t| t.as_str())
                    .collect::<Vec<_>>(),
                vec![topic.as_str()],
                "subscription"
            );
            for tp in &m.assignment.topic_partitions {
                ensure_eq!(tp.topic_name.as_str(), topic.as_str(), "topic name");
                every.extend(tp.partitions.iter().copied());
            }
            ensure_eq!(
                m.client_host.as_str().starts_with("/127.0.0.1"),
                true,
                "client host"
            );
        }
        ensure_eq!(
            every,
            all(PARTITIONS),
            "the members hold every partition between them"
        );
        Ok(())
    });
}

#[test]
fn a_regular_expression_subscription_takes_matching_topics_and_new_ones() {
    with_broker(options(), |broker| {
        let prefix = topic_name("kip848-regex");
        let (first, second) = (format!("{prefix}-a"), format!("{prefix}-b"));
        let unrelated = topic_name("kip848-other");
        create_topic(broker, &first, 2, &[])?;
        create_topic(broker, &unrelated, 2, &[])?;
        let group = topic_name("g-regex");
        let consumer = member(broker, &group)?;
        consumer.subscribe(&[&format!("^{prefix}-.*")])?;
        let topics_assigned = |c: &BaseConsumer| -> BTreeSet<(String, i32)> {
            c.assignment()
                .map(|tpl| {
                    tpl.elements()
                        .iter()
                        .map(|e| (e.topic().to_string(), e.partition()))
                        .collect()
                })
                .unwrap_or_default()
        };
        let wait_for = |wanted: BTreeSet<(String, i32)>| -> Result<()> {
            let deadline = Instant::now() + Duration::from_secs(30);
            while topics_assigned(&consumer) != wanted {
                if Instant::now() > deadline {
                    bail!(
                        "assigned {:?}, wanted {wanted:?}",
                        topics_assigned(&consumer)
                    );
                }
                let _ = consumer.poll(Duration::from_millis(50));
            }
            Ok(())
        };
        wait_for([(first.clone(), 0), (first.clone(), 1)].into())?;
        // A matching topic created later joins the subscription.
        create_topic(broker, &second, 1, &[])?;
        wait_for([(first.clone(), 0), (first.clone(), 1), (second.clone(), 0)].into())?;
        let described = describe_groups(broker, &[&group])?;
        // librdkafka sends the pattern in parentheses: "(^prefix-.*)".
        let pattern = described.groups[0].members[0]
            .subscribed_topic_regex
            .as_ref()
            .map(|r| r.as_str().to_string())
            .unwrap_or_default();
        ensure_eq!(
            pattern.contains(&format!("^{prefix}-.*")),
            true,
            "the pattern, as described: {pattern}"
        );
        Ok(())
    });
}

#[test]
fn a_static_member_that_restarts_gets_its_partitions_back_without_a_rebalance() {
    with_broker(options(), |broker| {
        let topic = topic_name("kip848-static");
        create_topic(broker, &topic, PARTITIONS, &[])?;
        let group = topic_name("g-static");
        let static_member = || member_with(broker, &group, &[("group.instance.id", "instance-a")]);
        let (a, b) = (static_member()?, member(broker, &group)?);
        let mut seen = Vec::new();
        let (a_held, b_held, epoch) = split_in_two(broker, &group, &topic, [&a, &b], &mut seen)?;

        // a closes (a static member leaves with epoch -2): b keeps its two partitions.
        drop(a);
        let settle = Instant::now();
        while settle.elapsed() < Duration::from_secs(2) {
            let _ = b.poll(Duration::from_millis(50));
        }
        ensure_eq!(assigned(&b), b_held, "b's partitions while a is away");
        // a's instance comes back as a new member: the same partitions, no new group epoch.
        let a_again = static_member()?;
        a_again.subscribe(&[&topic])?;
        poll_until(&[&a_again, &b], "a back", &mut seen, |s| s[0] == a_held)?;
        ensure_eq!(assigned(&b), b_held, "b's partitions after a is back");
        let described = describe_groups(broker, &[&group])?;
        ensure_eq!(described.groups[0].group_epoch, epoch, "group epoch");
        ensure_eq!(
            described.groups[0]
                .members
                .iter()
                .filter_map(|m| m.instance_id.as_ref().map(|i| i.as_str().to_string()))
                .collect::<Vec<_>>(),
            vec!["instance-a".to_string()],
            "the static member, described"
        );
        Ok(())
    });
}

#[test]
fn members_keep_their_partitions_across_a_broker_restart() {
    with_broker(options(), |broker| {
        let topic = topic_name("kip848-restart");
        create_topic(broker, &topic, PARTITIONS, &[])?;
        let group = topic_name("g-restart");
        let (a, b) = (member(broker, &group)?, member(broker, &group)?);
        let mut seen = Vec::new();
        let (a_held, b_held, epoch) = split_in_two(broker, &group, &topic, [&a, &b], &mut seen)?;

        broker.restart()?;
        // Both members heartbeat again at the epochs they hold: nothing is reassigned.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            for c in [&a, &b] {
                let _ = c.poll(Duration::from_millis(50));
            }
            let described = describe_groups(broker, &[&group])?;
            let group_after = &described.groups[0];
            if group_after.error_code == 0
                && group_after.group_state.as_str() == "Stable"
                && group_after.members.len() == 2
            {
                ensure_eq!(
                    group_after.group_epoch,
                    epoch,
                    "group epoch after the restart"
                );
                break;
            }
            if Instant::now() > deadline {
                bail!("the group did not settle after the restart: {group_after:?}");
            }
        }
        let settle = Instant::now();
        while settle.elapsed() < Duration::from_secs(2) {
            for c in [&a, &b] {
                let _ = c.poll(Duration::from_millis(50));
            }
        }
        ensure_eq!(assigned(&a), a_held, "a's partitions");
        ensure_eq!(assigned(&b), b_held, "b's partitions");
        ensure_eq!(
            describe_groups(broker, &[&group])?.groups[0].group_epoch,
            epoch,
            "group epoch once the members heartbeat again"
        );
        // No assignment changed since the restart (a group rebuilt by members joining again
        // would count its new epochs here, even if it ended up the same).
        let rebalances = metric_sum(
            broker,
            "causeway_consumer_group_rebalances_total",
            &format!("group=\"{group}\""),
        )?;
        ensure_eq!(rebalances, 0.0, "assignment changes since the restart");
        Ok(())
    });
}
