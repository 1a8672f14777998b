//! Consumer groups with real clients: librdkafka (rdkafka crate) consumers in one process polled
//! round-robin, `kcat -G` as a separate process that can be killed without leaving, and the raw
//! protocol client for error codes no well-behaved client provokes on purpose.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use causeway_integration_tests::{
    create_topic, ensure_eq, http_get, kcat_command, produce_all, topic_name, with_broker,
    BrokerOptions, BrokerProcess, TestRecord,
};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::TopicName;
use kafka_protocol::messages::{
    GroupId, HeartbeatRequest, JoinGroupRequest, OffsetCommitRequest, SyncGroupRequest,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

const SESSION_TIMEOUT_MS: u64 = 6_000;

/// A broker whose first rebalance waits `delay_ms` for more members.
fn options(delay_ms: u64) -> BrokerOptions {
    BrokerOptions::new().flag("--group-initial-rebalance-delay-ms", delay_ms)
}

fn group_consumer(
    broker: &BrokerProcess,
    group: &str,
    extra: &[(&str, &str)],
) -> Result<BaseConsumer> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", SESSION_TIMEOUT_MS.to_string())
        .set("heartbeat.interval.ms", "500")
        .set("fetch.wait.max.ms", "100")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .set("log_level", "6");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    Ok(config.create()?)
}

fn produce_per_partition(
    broker: &BrokerProcess,
    topic: &str,
    partitions: i32,
    per: usize,
) -> Result<()> {
    let producer = broker.producer();
    let records: Vec<TestRecord> = (0..partitions)
        .flat_map(|p| (0..per).map(move |i| TestRecord::value(format!("{p}-{i}")).partition(p)))
        .collect();
    produce_all(&producer, topic, &records)?;
    Ok(())
}

fn assigned(consumer: &BaseConsumer) -> BTreeSet<i32> {
    consumer
        .assignment()
        .map(|tpl| tpl.elements().iter().map(|e| e.partition()).collect())
        .unwrap_or_default()
}

/// Polls every consumer once (100 ms each) and records what arrived: (consumer, partition, offset).
fn poll_all(consumers: &[&BaseConsumer], seen: &mut Vec<(usize, i32, i64)>) -> Result<()> {
    for (i, c) in consumers.iter().enumerate() {
        match c.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => seen.push((i, m.partition(), m.offset())),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => {}
            // While the broker restarts: librdkafka reports it and reconnects by itself.
            Some(Err(rdkafka::error::KafkaError::MessageConsumption(
                RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure,
            ))) => {}
            Some(Err(e)) => bail!("consumer {i}: {e}"),
        }
    }
    Ok(())
}

/// Polls until `done` holds for the consumers' assignments, or fails after `timeout`.
fn poll_until(
    consumers: &[&BaseConsumer],
    timeout: Duration,
    seen: &mut Vec<(usize, i32, i64)>,
    what: &str,
    mut done: impl FnMut(&[BTreeSet<i32>]) -> bool,
) -> Result<Duration> {
    let started = Instant::now();
    loop {
        poll_all(consumers, seen)?;
        let assignments: Vec<BTreeSet<i32>> = consumers.iter().map(|c| assigned(c)).collect();
        if done(&assignments) {
            return Ok(started.elapsed());
        }
        if started.elapsed() > timeout {
            bail!("{what}: not reached within {timeout:?}; assignments {assignments:?}");
        }
    }
}

/// Every partition assigned exactly once, and every consumer has at least one.
fn balanced(assignments: &[BTreeSet<i32>], partitions: i32) -> bool {
    let total: usize = assignments.iter().map(BTreeSet::len).sum();
    let union: BTreeSet<i32> = assignments.iter().flatten().copied().collect();
    total == partitions as usize
        && union == (0..partitions).collect()
        && assignments.iter().all(|a| !a.is_empty())
}

fn metric(broker: &BrokerProcess, line_prefix: &str) -> Result<f64> {
    let (status, body) = http_get(broker.http_addr(), "/metrics")?;
    ensure_eq!(status, 200);
    Ok(body
        .lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0))
}

/// A group of two members (each with its `extra` config) subscribed to a new 4-partition
/// topic, returned once they have split it between them.
struct TwoMembers {
    topic: String,
    group: String,
    a: BaseConsumer,
    b: BaseConsumer,
    /// Records delivered so far: (member, partition, offset).
    seen: Vec<(usize, i32, i64)>,
}

fn two_balanced_members(
    broker: &BrokerProcess,
    name: &str,
    a_extra: &[(&str, &str)],
    b_extra: &[(&str, &str)],
) -> Result<TwoMembers> {
    let topic = topic_name(name);
    create_topic(broker, &topic, 4, &[])?;
    let group = topic_name(&format!("g-{name}"));
    let a = group_consumer(broker, &group, a_extra)?;
    let b = group_consumer(broker, &group, b_extra)?;
    a.subscribe(&[&topic])?;
    b.subscribe(&[&topic])?;
    let mut seen = Vec::new();
    poll_until(
        &[&a, &b],
        Duration::from_secs(30),
        &mut seen,
        "two balanced",
        |s| balanced(s, 4),
    )?;
    Ok(TwoMembers {
        topic,
        group,
        a,
        b,
        seen,
    })
}

#[test]
fn two_consumers_split_a_topic_and_read_every_record_once() {
    with_broker(options(3_000), |broker| {
        let topic = topic_name("split");
        create_topic(broker, &topic, 4, &[])?;
        produce_per_partition(broker, &topic, 4, 50)?;
        let group = topic_name("g-split");
        let a = group_consumer(broker, &group, &[])?;
        let b = group_consumer(broker, &group, &[])?;
        a.subscribe(&[&topic])?;
        b.subscribe(&[&topic])?;
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while seen.len() < 200 && Instant::now() < deadline {
            poll_all(&[&a, &b], &mut seen)?;
        }
        // A little longer, so that a duplicate delivery would show.
        let settle = Instant::now();
        while settle.elapsed() < Duration::from_secs(1) {
            poll_all(&[&a, &b], &mut seen)?;
        }
        let unique: BTreeSet<(i32, i64)> = seen.iter().map(|(_, p, o)| (*p, *o)).collect();
        ensure_eq!(
            seen.len(),
            200,
            "records delivered (duplicates count twice)"
        );
        ensure_eq!(unique.len(), 200, "distinct records");
        let by_a: BTreeSet<i32> = seen.iter().filter(|s| s.0 == 0).map(|s| s.1).collect();
        let by_b: BTreeSet<i32> = seen.iter().filter(|s| s.0 == 1).map(|s| s.1).collect();
        ensure_eq!(
            by_a.intersection(&by_b).count(),
            0,
            "partitions read by both"
        );
        let (sa, sb) = (assigned(&a), assigned(&b));
        if !balanced(&[sa.clone(), sb.clone()], 4) {
            bail!("assignments not a disjoint cover: {sa:?} {sb:?}");
        }
        ensure_eq!(sa.len(), 2);
        Ok(())
    });
}

#[test]
fn a_third_consumer_joining_rebalances_the_load() {
    with_broker(options(300), |broker| {
        let TwoMembers {
            topic,
            group,
            a,
            b,
            mut seen,
        } = two_balanced_members(broker, "third", &[], &[])?;
        let c = group_consumer(broker, &group, &[])?;
        c.subscribe(&[&topic])?;
        poll_until(
            &[&a, &b, &c],
            Duration::from_secs(30),
            &mut seen,
            "three balanced",
            |s| balanced(s, 4),
        )?;
        let rebalances = metric(
            broker,
            &format!("causeway_consumer_group_rebalances_total{{group=\"{group}\"}}"),
        )?;
        if rebalances < 2.0 {
            bail!("expected at least 2 rebalances, metric says {rebalances}");
        }
        Ok(())
    });
}

/// Starts `kcat -G` as a separate consumer process of `group`.
fn kcat_member(broker: &BrokerProcess, group: &str, topic: &str) -> Result<Child> {
    kcat_command()
        .args(["-b", &broker.bootstrap(), "-G", group, topic, "-q"])
        .args(["-X", &format!("session.timeout.ms={SESSION_TIMEOUT_MS}")])
        .args(["-X", "heartbeat.interval.ms=500"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("spawn kcat (apt-get install kcat)")
}

#[test]
fn a_consumer_killed_without_leaving_loses_its_partitions_after_the_session_timeout() {
    with_broker(options(300), |broker| {
        let topic = topic_name("kill");
        create_topic(broker, &topic, 4, &[])?;
        let group = topic_name("g-kill");
        let mut kcat = kcat_member(broker, &group, &topic)?;
        let a = group_consumer(broker, &group, &[])?;
        a.subscribe(&[&topic])?;
        let mut seen = Vec::new();
        let outcome = (|| -> Result<Duration> {
            poll_until(
                &[&a],
                Duration::from_secs(40),
                &mut seen,
                "share with kcat",
                |s| s[0].len() == 2,
            )?;
            let _ = kcat.kill();
            let _ = kcat.wait();
            poll_until(
                &[&a],
                Duration::from_secs(40),
                &mut seen,
                "take over",
                |s| s[0].len() == 4,
            )
        })();
        let _ = kcat.kill();
        let _ = kcat.wait();
        let took = outcome?;
        if took < Duration::from_millis(SESSION_TIMEOUT_MS - 1_000) {
            bail!("partitions moved after {took:?}, before the session timeout");
        }
        Ok(())
    });
}

#[test]
fn a_static_member_restarting_keeps_its_assignment_without_a_rebalance() {
    with_broker(options(300), |broker| {
        let TwoMembers {
            topic,
            group,
            a,
            b,
            mut seen,
        } = two_balanced_members(
            broker,
            "static",
            &[("group.instance.id", "a")],
            &[("group.instance.id", "b")],
        )?;
        let before_a = assigned(&a);
        let before_b = assigned(&b);
        let key = format!("causeway_consumer_group_rebalances_total{{group=\"{group}\"}}");
        let rebalances = metric(broker, &key)?;
        drop(b);
        let b = group_consumer(broker, &group, &[("group.instance.id", "b")])?;
        b.subscribe(&[&topic])?;
        poll_until(
            &[&a, &b],
            Duration::from_secs(20),
            &mut seen,
            "b back",
            |s| s[1] == before_b,
        )?;
        // Keep polling past what a rebalance would take: nothing may move.
        let settle = Instant::now();
        while settle.elapsed() < Duration::from_secs(3) {
            poll_all(&[&a, &b], &mut seen)?;
        }
        ensure_eq!(assigned(&a), before_a);
        ensure_eq!(assigned(&b), before_b);
        ensure_eq!(
            metric(broker, &key)?,
            rebalances,
            "rebalances after the restart"
        );
        Ok(())
    });
}

/// Membership survives a broker restart (`kill -9`): the group comes back at the generation in
/// force, the members' heartbeats go on being answered, and nothing rebalances; each member keeps
/// its partitions and reads what is produced to them after the restart.
#[test]
fn members_keep_their_generation_and_partitions_across_a_broker_restart() {
    with_broker(options(300), |broker| {
        // A session long enough to outlast the restart, as a Kafka coordinator move would need.
        let extra = |instance| {
            [
                ("group.instance.id", instance),
                ("session.timeout.ms", "20000"),
            ]
        };
        let TwoMembers {
            topic,
            group,
            a,
            b,
            mut seen,
        } = two_balanced_members(broker, "across-restart", &extra("a"), &extra("b"))?;
        let before = [assigned(&a), assigned(&b)];
        broker.kill9();
        broker.restart()?;
        seen.clear();
        produce_per_partition(broker, &topic, 4, 5)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while seen.len() < 20 && Instant::now() < deadline {
            poll_all(&[&a, &b], &mut seen)?;
        }
        // Keep polling past what a rebalance would take: nothing may move.
        let settle = Instant::now();
        while settle.elapsed() < Duration::from_secs(3) {
            poll_all(&[&a, &b], &mut seen)?;
        }
        ensure_eq!(
            [assigned(&a), assigned(&b)],
            before,
            "assignments after the restart"
        );
        ensure_eq!(seen.len(), 20, "records read after the restart");
        for (member, partition, _) in &seen {
            if !before[*member].contains(partition) {
                bail!("member {member} read partition {partition}, assigned {before:?}");
            }
        }
        let key = format!("causeway_consumer_group_rebalances_total{{group=\"{group}\"}}");
        ensure_eq!(metric(broker, &key)?, 0.0, "rebalances since the restart");
        Ok(())
    });
}

#[test]
fn a_consumer_resumes_at_its_committed_offset_after_a_broker_restart() {
    with_broker(options(100), |broker| {
        let topic = topic_name("resume");
        create_topic(broker, &topic, 1, &[])?;
        produce_per_partition(broker, &topic, 1, 10)?;
        let group = topic_name("g-resume");
        {
            let c = group_consumer(broker, &group, &[])?;
            c.subscribe(&[&topic])?;
            let mut seen = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(30);
            while seen.len() < 4 && Instant::now() < deadline {
                poll_all(&[&c], &mut seen)?;
            }
            ensure_eq!(seen.len() >= 4, true, "read at least 4 records");
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&topic, 0, Offset::Offset(4))?;
            c.commit(&tpl, CommitMode::Sync)?;
        }
        broker.restart()?;
        let c = group_consumer(broker, &group, &[])?;
        let committed = c.committed_offsets(
            {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition(&topic, 0);
                tpl
            },
            Duration::from_secs(10),
        )?;
        let offset = committed
            .find_partition(&topic, 0)
            .map(|e| e.offset())
            .context("committed offset listed")?;
        ensure_eq!(offset, Offset::Offset(4));
        c.subscribe(&[&topic])?;
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while seen.is_empty() && Instant::now() < deadline {
            poll_all(&[&c], &mut seen)?;
        }
        ensure_eq!(
            seen.first().map(|s| s.2),
            Some(4),
            "first offset after restart"
        );
        let lag = metric(
            broker,
            &format!(
                "causeway_consumer_group_lag{{group=\"{group}\",topic=\"{topic}\",partition=\"0\"}}"
            ),
        )?;
        ensure_eq!(lag, 6.0, "lag = log end 10 - committed 4");
        Ok(())
    });
}

#[test]
fn cooperative_sticky_consumers_rebalance_incrementally() {
    with_broker(options(300), |broker| {
        let topic = topic_name("coop");
        create_topic(broker, &topic, 4, &[])?;
        let group = topic_name("g-coop");
        let coop = [("partition.assignment.strategy", "cooperative-sticky")];
        let a = group_consumer(broker, &group, &coop)?;
        a.subscribe(&[&topic])?;
        let mut seen = Vec::new();
        poll_until(
            &[&a],
            Duration::from_secs(30),
            &mut seen,
            "a owns all",
            |s| s[0].len() == 4,
        )?;
        let b = group_consumer(broker, &group, &coop)?;
        b.subscribe(&[&topic])?;
        poll_until(
            &[&a, &b],
            Duration::from_secs(30),
            &mut seen,
            "a and b",
            |s| balanced(s, 4),
        )?;
        let a_kept = assigned(&a);
        let c = group_consumer(broker, &group, &coop)?;
        c.subscribe(&[&topic])?;
        poll_until(
            &[&a, &b, &c],
            Duration::from_secs(30),
            &mut seen,
            "a, b, c",
            |s| balanced(s, 4),
        )?;
        // Sticky: what a still owns is a subset of what it owned.
        if !assigned(&a).is_subset(&a_kept) {
            bail!("a's partitions moved: {a_kept:?} -> {:?}", assigned(&a));
        }
        Ok(())
    });
}

#[test]
fn list_and_describe_groups_show_members_and_assignments() {
    with_broker(options(300), |broker| {
        // `b` stays bound (unused) so that it stays in the group.
        let TwoMembers {
            topic,
            group,
            a,
            b: _member_b,
            ..
        } = two_balanced_members(
            broker,
            "describe",
            &[("client.id", "member-a")],
            &[("client.id", "member-b")],
        )?;
        let list = a.fetch_group_list(None, Duration::from_secs(10))?;
        let listed = list
            .groups()
            .iter()
            .find(|g| g.name() == group)
            .context("group listed")?;
        ensure_eq!(listed.protocol_type(), "consumer");
        let list = a.fetch_group_list(Some(&group), Duration::from_secs(10))?;
        let g = list.groups().first().context("group described")?;
        ensure_eq!(g.state(), "Stable");
        ensure_eq!(g.protocol(), "range");
        let mut clients: Vec<&str> = g.members().iter().map(|m| m.client_id()).collect();
        clients.sort();
        ensure_eq!(clients, vec!["member-a", "member-b"]);
        for m in g.members() {
            ensure_eq!(m.client_host(), "/127.0.0.1");
            let assignment = m.assignment().context("assignment present")?;
            if !assignment
                .windows(topic.len())
                .any(|w| w == topic.as_bytes())
            {
                bail!("member {} assignment does not name the topic", m.id());
            }
        }
        Ok(())
    });
}

fn join_request(group: &str, member_id: &str, instance: Option<&str>) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_member_id(StrBytes::from_string(member_id.to_string()))
        .with_group_instance_id(instance.map(|i| StrBytes::from_string(i.to_string())))
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(StrBytes::from_static_str("range"))
            .with_metadata(bytes::Bytes::from_static(b"\0\0\0\0\0\0"))])
}

#[test]
fn bad_member_ids_generations_and_fenced_instances_get_kafka_errors() {
    with_broker(options(0), |broker| {
        let group = topic_name("g-raw");
        let mut raw = broker.raw()?;
        let first = raw.request(5, &join_request(&group, "", None))?;
        ensure_eq!(first.error_code, ResponseError::MemberIdRequired.code());
        let member = first.member_id.to_string();
        let joined = raw.request(5, &join_request(&group, &member, None))?;
        ensure_eq!(joined.error_code, 0);
        ensure_eq!(joined.leader.to_string(), member);
        let generation = joined.generation_id;
        let sync = raw.request(
            3,
            &SyncGroupRequest::default()
                .with_group_id(GroupId(StrBytes::from_string(group.clone())))
                .with_generation_id(generation)
                .with_member_id(StrBytes::from_string(member.clone())),
        )?;
        ensure_eq!(sync.error_code, 0);
        let heartbeat = |raw: &mut causeway_integration_tests::raw::RawClient,
                         member: &str,
                         generation: i32,
                         instance: Option<&str>|
         -> Result<i16> {
            Ok(raw
                .request(
                    4,
                    &HeartbeatRequest::default()
                        .with_group_id(GroupId(StrBytes::from_string(group.clone())))
                        .with_generation_id(generation)
                        .with_member_id(StrBytes::from_string(member.to_string()))
                        .with_group_instance_id(
                            instance.map(|i| StrBytes::from_string(i.to_string())),
                        ),
                )?
                .error_code)
        };
        ensure_eq!(heartbeat(&mut raw, &member, generation, None)?, 0);
        ensure_eq!(
            heartbeat(&mut raw, &member, generation + 5, None)?,
            ResponseError::IllegalGeneration.code()
        );
        ensure_eq!(
            heartbeat(&mut raw, "nobody", generation, None)?,
            ResponseError::UnknownMemberId.code()
        );
        // A stale generation cannot commit.
        let commit = raw.request(
            8,
            &OffsetCommitRequest::default()
                .with_group_id(GroupId(StrBytes::from_string(group.clone())))
                .with_generation_id_or_member_epoch(generation + 1)
                .with_member_id(StrBytes::from_string(member.clone()))
                .with_topics(vec![OffsetCommitRequestTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str("nope")))
                    .with_partitions(vec![OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(1)])]),
        )?;
        ensure_eq!(
            commit.topics[0].partitions[0].error_code,
            ResponseError::IllegalGeneration.code()
        );

        // Static membership: a second incarnation of instance "s" fences the first.
        let static_group = topic_name("g-fence");
        let mut raw2 = broker.raw()?;
        let first = raw2.request(5, &join_request(&static_group, "", Some("s")))?;
        ensure_eq!(first.error_code, 0);
        let old = first.member_id.to_string();
        let gen = first.generation_id;
        raw2.request(
            3,
            &SyncGroupRequest::default()
                .with_group_id(GroupId(StrBytes::from_string(static_group.clone())))
                .with_generation_id(gen)
                .with_member_id(StrBytes::from_string(old.clone()))
                .with_group_instance_id(Some(StrBytes::from_static_str("s"))),
        )?;
        let again = raw2.request(5, &join_request(&static_group, "", Some("s")))?;
        ensure_eq!(again.error_code, 0);
        ensure_eq!(
            again.generation_id,
            gen,
            "static rejoin keeps the generation"
        );
        let hb = raw2
            .request(
                4,
                &HeartbeatRequest::default()
                    .with_group_id(GroupId(StrBytes::from_string(static_group.clone())))
                    .with_generation_id(gen)
                    .with_member_id(StrBytes::from_string(old))
                    .with_group_instance_id(Some(StrBytes::from_static_str("s"))),
            )?
            .error_code;
        ensure_eq!(hb, ResponseError::FencedInstanceId.code());
        Ok(())
    });
}

#[test]
fn group_cli_lists_groups_and_shows_members_offsets_and_lag() {
    with_broker(options(0), |broker| {
        let topic = topic_name("cli-group");
        create_topic(broker, &topic, 1, &[])?;
        let records: Vec<TestRecord> = (0..10)
            .map(|i| TestRecord::value(i.to_string()).partition(0))
            .collect();
        produce_all(&broker.producer(), &topic, &records)?;
        let group = topic_name("g-cli");
        let consumer = group_consumer(broker, &group, &[("client.id", "cli-member")])?;
        consumer.subscribe(&[&topic])?;
        let mut read = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        while read < 6 && Instant::now() < deadline {
            if let Some(m) = consumer.poll(Duration::from_millis(100)) {
                m?;
                read += 1;
            }
        }
        let mut offsets = TopicPartitionList::new();
        offsets.add_partition_offset(&topic, 0, Offset::Offset(6))?;
        consumer.commit(&offsets, CommitMode::Sync)?;
        let cli = |args: &[&str]| -> Result<(i32, String)> {
            let output = Command::new(causeway_integration_tests::broker_binary()?)
                .args(args)
                .args(["-b", &broker.bootstrap()])
                .output()?;
            Ok((
                output.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&output.stdout).into_owned(),
            ))
        };
        let (code, listed) = cli(&["group", "list"])?;
        ensure_eq!(code, 0);
        if !listed
            .lines()
            .any(|l| l.starts_with(&group) && l.contains("Stable"))
        {
            bail!("group list does not show {group} as Stable:\n{listed}");
        }
        let (code, described) = cli(&["group", "describe", &group])?;
        ensure_eq!(code, 0);
        let offsets_line = described
            .lines()
            .find(|l| l.starts_with(&topic))
            .context("no offsets line")?;
        let fields: Vec<&str> = offsets_line.split_whitespace().collect();
        ensure_eq!(fields, vec![topic.as_str(), "0", "6", "10", "4"]);
        if !described.contains("cli-member") || !described.contains(&format!("{topic}:0")) {
            bail!("describe does not show the member and its assignment:\n{described}");
        }
        Ok(())
    });
}
