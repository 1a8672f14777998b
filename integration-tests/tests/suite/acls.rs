//! Kafka ACL authorization (`--authorization acls`) on a SASL listener, with real clients: the
//! super user `admin` manages topics and ACLs with kafka-python's admin client (CreateAcls,
//! DescribeAcls, DeleteAcls over SCRAM-SHA-512), `alice` produces and consumes with librdkafka
//! (rdkafka, PLAIN) and lists topics with kcat. What alice may do follows the bindings: nothing
//! without any, a prefixed allow opens a family of topics, a literal deny beats it, deleting the
//! bindings closes them again, and bindings written offline by `causeway acl` are honoured. On
//! a plaintext listener clients are `User:ANONYMOUS`, open to what no binding speaks of only with
//! `--allow-everyone-if-no-acl-found`. Admin clients are told what they may do (KIP-430
//! authorized operations) and committed offsets of topics they may not see are refused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use causeway_integration_tests::security::{as_user, causeway_offline, produce_as, raw_as, Who};
use causeway_integration_tests::{
    consume_n, consumer_config, create_topic, kcat, produce_all, with_broker, BrokerOptions,
    BrokerProcess, TestRecord, CLIENT_TIMEOUT,
};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ConsumerGroupHeartbeatRequest, DescribeConfigsRequest, GroupId, MetadataRequest, TopicName,
};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};

const ADMIN: Who = ("admin", "admin-pw-2026");
const ALICE: Who = ("alice", "alice-pw-2026");
/// A client of a plaintext listener (`kafka_python_acls.py` without SASL).
const ANONYMOUS: Who = ("-", "");

/// Kafka's TOPIC_AUTHORIZATION_FAILED.
const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
/// Kafka's GROUP_AUTHORIZATION_FAILED.
const GROUP_AUTHORIZATION_FAILED: i16 = 30;

/// What `describe_acls` calls a binding's resource: (type, name, pattern type).
type Resource<'a> = (&'a str, &'a str, &'a str);

fn topic(name: &str) -> Resource<'_> {
    ("TOPIC", name, "LITERAL")
}

fn topics_starting(prefix: &str) -> Resource<'_> {
    ("TOPIC", prefix, "PREFIXED")
}

fn group(name: &str) -> Resource<'_> {
    ("GROUP", name, "LITERAL")
}

fn groups_starting(prefix: &str) -> Resource<'_> {
    ("GROUP", prefix, "PREFIXED")
}

/// A binding from any host, in the form `kafka_python_acls.py` reads and prints.
fn binding(principal: &str, permission: &str, operation: &str, resource: Resource<'_>) -> Value {
    let (resource_type, name, pattern) = resource;
    json!({
        "principal": principal,
        "host": "*",
        "permission": permission,
        "operation": operation,
        "resource_type": resource_type,
        "name": name,
        "pattern": pattern,
    })
}

fn allow_alice(operation: &str, resource: Resource<'_>) -> Value {
    binding("User:alice", "ALLOW", operation, resource)
}

fn deny_alice(operation: &str, resource: Resource<'_>) -> Value {
    binding("User:alice", "DENY", operation, resource)
}

/// A data directory (in `dir`) holding SCRAM-SHA-512 credentials for admin and alice.
fn data_dir_with_users(dir: &tempfile::TempDir) -> Result<PathBuf> {
    let data_dir = dir.path().join("data");
    for (name, password) in [ADMIN, ALICE] {
        let args = ["user", "create", name, "--mechanism", "SCRAM-SHA-512"];
        causeway_offline(&args, &data_dir, &format!("{password}\n"))?;
    }
    Ok(data_dir)
}

/// A broker over `data_dir` authorizing with ACLs on a SASL listener, `User:admin` super user.
fn acl_broker(data_dir: &Path) -> BrokerOptions {
    BrokerOptions::new()
        .data_dir(data_dir)
        .flag("--kafka-security-protocol", "sasl_plaintext")
        .flag("--sasl-enabled-mechanisms", "SCRAM-SHA-512,PLAIN")
        .flag("--authorization", "acls")
        .flag("--super-users", "User:admin")
        .flag("--group-initial-rebalance-delay-ms", 0)
        .no_auto_create()
}

/// Sets up `data_dir` with users, runs `body` against an ACL broker over it.
fn with_acl_broker(
    prepare: impl FnOnce(&Path) -> Result<()>,
    body: impl FnOnce(&mut BrokerProcess) -> Result<()>,
) {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let data_dir = data_dir_with_users(&dir).expect("users");
    prepare(&data_dir).expect("preparing the data dir");
    with_broker(acl_broker(&data_dir), body);
}

fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients")
}

/// Sorts every list of bindings in `value`, so results compare whatever their order.
fn canonical(value: Value) -> Value {
    match value {
        Value::Array(items) => {
            let mut items: Vec<Value> = items.into_iter().map(canonical).collect();
            if items.iter().all(|i| i.get("principal").is_some()) {
                items.sort_by_key(Value::to_string);
            }
            Value::Array(items)
        }
        Value::Object(fields) => fields
            .into_iter()
            .map(|(key, value)| (key, canonical(value)))
            .collect(),
        other => other,
    }
}

/// Runs `steps` (see `kafka_python_acls.py`) as `who` with kafka-python's admin client over
/// SCRAM-SHA-512 and checks their results against `expected`.
fn kafka_python(broker: &BrokerProcess, who: Who, steps: Value, expected: Value) -> Result<()> {
    let (user, password) = who;
    let output = Command::new("python3")
        .arg(clients_dir().join("kafka_python_acls.py"))
        .args([&broker.bootstrap(), user, password, &steps.to_string()])
        .output()
        .context("python3 kafka_python_acls.py (kafka-python, installed by .ci/install-deps.sh)")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().with_context(|| {
        format!(
            "no output from kafka-python as {user}; stderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })?;
    let results: Value = serde_json::from_str(line).with_context(|| format!("parsing {line:?}"))?;
    let (results, expected) = (canonical(results), canonical(expected));
    ensure!(
        results == expected,
        "kafka-python as {user} ran {steps}\n got:      {results}\n expected: {expected}"
    );
    Ok(())
}

/// Fails unless `result` failed with an error whose text holds `expected` (an rdkafka error code
/// name such as `TopicAuthorizationFailed`).
fn refused_with<T>(result: Result<T>, expected: &str, what: &str) -> Result<()> {
    match result {
        Ok(_) => bail!("{what} was allowed"),
        Err(e) if format!("{e:#}").contains(expected) => Ok(()),
        Err(e) => bail!("{what} failed, but not with {expected}: {e:#}"),
    }
}

/// As `who`, joins `group`, subscribes to `topics`, reads `count` records and commits them; then
/// reads the committed offsets back.
fn consume_in_group(
    broker: &BrokerProcess,
    who: Who,
    group: &str,
    topics: &[&str],
    count: usize,
) -> Result<()> {
    let mut config = as_user(consumer_config(&broker.bootstrap()), who);
    config.set("group.id", group);
    let consumer: BaseConsumer = config.create()?;
    consumer.subscribe(topics)?;
    let messages = consume_n(&consumer, count, CLIENT_TIMEOUT)?;
    ensure!(
        messages.len() == count,
        "{} of {count} records from {topics:?} in {group}",
        messages.len()
    );
    let mut next = BTreeMap::new();
    for m in &messages {
        let after = m.offset() + 1;
        let offset = next
            .entry((m.topic().to_owned(), m.partition()))
            .or_insert(after);
        *offset = after.max(*offset);
    }
    let mut positions = TopicPartitionList::new();
    for ((topic, partition), offset) in &next {
        positions.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
    }
    consumer
        .commit(&positions, CommitMode::Sync)
        .context("OffsetCommit")?;
    let committed = consumer.committed(CLIENT_TIMEOUT).context("OffsetFetch")?;
    for p in positions.elements() {
        let read = committed
            .find_partition(p.topic(), p.partition())
            .map(|c| c.offset());
        ensure!(
            read == Some(p.offset()),
            "{group} committed {:?} on {}-{}, reads back {read:?}",
            p.offset(),
            p.topic(),
            p.partition()
        );
    }
    Ok(())
}

/// As `who`, reads `group`'s committed offsets of partition 0 of each of `topics` (an OffsetFetch
/// naming them): per topic, the offset or the partition's error.
fn committed_as(
    broker: &BrokerProcess,
    who: Who,
    group: &str,
    topics: &[&str],
) -> Result<BTreeMap<String, Result<Offset, String>>> {
    let mut config = as_user(consumer_config(&broker.bootstrap()), who);
    config.set("group.id", group);
    let consumer: BaseConsumer = config.create()?;
    let mut asked = TopicPartitionList::new();
    for topic in topics {
        asked.add_partition(topic, 0);
    }
    let committed = consumer
        .committed_offsets(asked, CLIENT_TIMEOUT)
        .context("OffsetFetch")?;
    Ok(committed
        .elements()
        .iter()
        .map(|p| {
            let read = p.error().map(|()| p.offset()).map_err(|e| e.to_string());
            (p.topic().to_owned(), read)
        })
        .collect())
}

/// The first error `consumer` reports within `CLIENT_TIMEOUT`; fails if it reads a record.
fn first_consumer_error(consumer: &BaseConsumer) -> Result<KafkaError> {
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            None | Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => return Ok(e),
            Some(Ok(m)) => bail!("read a record at {}-{}", m.topic(), m.partition()),
        }
    }
    bail!("no error within {CLIENT_TIMEOUT:?}")
}

/// As `who`, joins `group` subscribed to `topics`; the first error.
fn group_error(
    broker: &BrokerProcess,
    who: Who,
    group: &str,
    topics: &[&str],
) -> Result<KafkaError> {
    let mut config = as_user(consumer_config(&broker.bootstrap()), who);
    config.set("group.id", group);
    let consumer: BaseConsumer = config.create()?;
    consumer.subscribe(topics)?;
    first_consumer_error(&consumer)
}

/// kcat's metadata listing as `who`, of every topic or of `topic`.
fn kcat_list(broker: &BrokerProcess, (user, password): Who, topic: Option<&str>) -> Result<String> {
    let bootstrap = broker.bootstrap();
    let username = format!("sasl.username={user}");
    let password = format!("sasl.password={password}");
    let mut args = vec!["-b", &bootstrap, "-L", "-m", "10"];
    args.extend(["-X", "security.protocol=SASL_PLAINTEXT"]);
    args.extend([
        "-X",
        "sasl.mechanisms=PLAIN",
        "-X",
        &username,
        "-X",
        &password,
    ]);
    if let Some(topic) = topic {
        args.extend(["-t", topic]);
    }
    let output = kcat(&args, b"", CLIENT_TIMEOUT)?;
    ensure!(
        output.status.success(),
        "kcat -L as {user}: {}",
        output.stderr
    );
    Ok(output.stdout)
}

fn lists_topic(listing: &str, topic: &str) -> bool {
    listing.contains(&format!("topic \"{topic}\""))
}

fn topics_created(names: &[&str]) -> (Value, Value) {
    let codes: serde_json::Map<String, Value> =
        names.iter().map(|n| ((*n).to_owned(), json!(0))).collect();
    (
        json!({"op": "create_topics", "topics": names}),
        json!({"error_codes": codes}),
    )
}

/// Without any binding alice can do nothing with a topic: producing is refused with
/// TOPIC_AUTHORIZATION_FAILED, the topic is missing from her full Metadata (and refused when she
/// names it), fetching is refused; the super user sees it and writes to it.
#[test]
fn without_a_binding_a_user_neither_sees_nor_writes_nor_reads_a_topic() {
    with_acl_broker(
        |_| Ok(()),
        |broker| {
            let (create, created) = topics_created(&["payments"]);
            kafka_python(broker, ADMIN, json!([create]), json!([created]))?;
            produce_as(broker, ADMIN, "payments", 3).context("the super user produces")?;

            refused_with(
                produce_as(broker, ALICE, "payments", 1),
                "TopicAuthorizationFailed",
                "alice producing to payments",
            )?;

            let admin_sees = kcat_list(broker, ADMIN, None)?;
            ensure!(
                lists_topic(&admin_sees, "payments"),
                "admin's kcat -L: {admin_sees}"
            );
            let alice_sees = kcat_list(broker, ALICE, None)?;
            ensure!(
                !lists_topic(&alice_sees, "payments") && alice_sees.contains("0 topics"),
                "alice's kcat -L shows topics: {alice_sees}"
            );
            let named = kcat_list(broker, ALICE, Some("payments"))?;
            ensure!(
                named.contains("Topic authorization failed"),
                "alice's kcat -L -t payments: {named}"
            );

            // librdkafka fetches nothing it has no metadata for: ask the Fetch handler itself.
            let fetched = raw_as(broker, ADMIN)?.fetch("payments", 0, 0, 1 << 20, 0)?;
            ensure!(
                fetched.error_code == 0 && fetched.high_watermark == 3,
                "admin's Fetch of payments: {fetched:?}"
            );
            let refused = raw_as(broker, ALICE)?.fetch("payments", 0, 0, 1 << 20, 0)?;
            ensure!(
                refused.error_code == TOPIC_AUTHORIZATION_FAILED
                    && refused.records.as_ref().is_none_or(|r| r.is_empty()),
                "alice's Fetch of payments: {refused:?}"
            );
            Ok(())
        },
    );
}

/// The super user grants alice, over CreateAcls, Write and Read on the topics starting with
/// `orders-` and Read on the group `orders-app`: she then produces to and consumes in that group
/// from `orders-eu` and `orders-us`, but neither writes to `payments` nor joins another group.
/// DescribeAcls shows the bindings to the super user; alice, without Describe and Alter on the
/// cluster, can neither describe, create nor delete bindings, nor create or delete topics.
#[test]
fn a_prefixed_allow_granted_over_create_acls_opens_a_family_of_topics() {
    let grants = [
        allow_alice("WRITE", topics_starting("orders-")),
        allow_alice("READ", topics_starting("orders-")),
        allow_alice("READ", group("orders-app")),
    ];
    with_acl_broker(
        |_| Ok(()),
        |broker| {
            let (create, created) = topics_created(&["orders-eu", "orders-us", "payments"]);
            let on_orders_eu =
                json!({"resource_type": "TOPIC", "name": "orders-eu", "pattern": "MATCH"});
            kafka_python(
                broker,
                ADMIN,
                json!([
                    create,
                    {"op": "create_acls", "acls": grants},
                    {"op": "describe_acls", "filter": {"principal": "User:alice"}},
                    {"op": "describe_acls", "filter": on_orders_eu},
                    {"op": "describe_acls", "filter": {"resource_type": "GROUP"}},
                ]),
                json!([
                    created,
                    {"succeeded": 3, "failed": []},
                    {"acls": grants},
                    {"acls": grants[..2]},
                    {"acls": grants[2..]},
                ]),
            )?;

            for topic in ["orders-eu", "orders-us"] {
                produce_as(broker, ALICE, topic, 5).with_context(|| format!("alice to {topic}"))?;
            }
            refused_with(
                produce_as(broker, ALICE, "payments", 1),
                "TopicAuthorizationFailed",
                "alice producing to payments",
            )?;
            consume_in_group(broker, ALICE, "orders-app", &["orders-eu", "orders-us"], 10)
                .context("alice consuming in orders-app")?;
            // The super user commits a position on payments in alice's group; alice asking for
            // it by name is refused for that partition, as Kafka does, not told the offset.
            let mut on_payments = TopicPartitionList::new();
            on_payments.add_partition_offset("payments", 0, Offset::Offset(2))?;
            let mut config = as_user(consumer_config(&broker.bootstrap()), ADMIN);
            config.set("group.id", "orders-app");
            let admins: BaseConsumer = config.create()?;
            admins
                .commit(&on_payments, CommitMode::Sync)
                .context("admin's commit")?;
            let committed = committed_as(broker, ALICE, "orders-app", &["orders-eu", "payments"])?;
            ensure!(
                matches!(committed.get("orders-eu"), Some(Ok(_)))
                    && matches!(committed.get("payments"),
                        Some(Err(e)) if e.contains("TopicAuthorizationFailed")),
                "alice's OffsetFetch of orders-eu and payments in orders-app: {committed:?}"
            );
            let committed = committed_as(broker, ADMIN, "orders-app", &["payments"])?;
            ensure!(
                committed.get("payments") == Some(&Ok(Offset::Offset(2))),
                "admin's OffsetFetch of payments in orders-app: {committed:?}"
            );
            // The same before OffsetFetch v8 (one group per request), from kafka-python.
            let refused = json!({"error": "TopicAuthorizationFailedError"});
            let asked = |partitions: Value| {
                json!({"op": "list_group_offsets", "group": "orders-app",
                    "partitions": partitions, "api_version": "2.4.0"})
            };
            kafka_python(
                broker,
                ALICE,
                json!([
                    asked(json!([["payments", 0]])),
                    asked(json!([["orders-us", 0]]))
                ]),
                json!([refused, {"offsets": {"orders-us-0": 5}}]),
            )?;
            kafka_python(
                broker,
                ADMIN,
                json!([asked(json!([["payments", 0]]))]),
                json!([{"offsets": {"payments-0": 2}}]),
            )?;
            let error = group_error(broker, ALICE, "other-app", &["orders-eu"])?;
            ensure!(
                error.to_string().contains("GroupAuthorizationFailed"),
                "alice joining other-app: {error}"
            );

            // KIP-430: what each caller may do, as admin clients ask (Describe implied by Read).
            let every_topic_operation = json!([
                "ALTER",
                "ALTER_CONFIGS",
                "CREATE",
                "DELETE",
                "DESCRIBE",
                "DESCRIBE_CONFIGS",
                "READ",
                "WRITE"
            ]);
            let describe = json!([
                {"op": "describe_topics", "topics": ["orders-eu"]},
                {"op": "describe_groups", "groups": ["orders-app"]},
                {"op": "describe_cluster"},
            ]);
            kafka_python(
                broker,
                ALICE,
                describe.clone(),
                json!([
                    {"orders-eu": ["DESCRIBE", "READ", "WRITE"]},
                    {"orders-app": ["DESCRIBE", "READ"]},
                    {"error": "ClusterAuthorizationFailedError"},
                ]),
            )?;
            kafka_python(
                broker,
                ADMIN,
                describe,
                json!([
                    {"orders-eu": every_topic_operation},
                    {"orders-app": ["ALTER_CONFIGS", "DELETE", "DESCRIBE", "DESCRIBE_CONFIGS", "READ"]},
                    {"cluster": ["ALTER", "ALTER_CONFIGS", "CLUSTER_ACTION", "CREATE", "DESCRIBE",
                        "DESCRIBE_CONFIGS", "IDEMPOTENT_WRITE"]},
                ]),
            )?;

            let cluster_refused = json!({"error": "ClusterAuthorizationFailedError"});
            kafka_python(
                broker,
                ALICE,
                json!([
                    {"op": "describe_acls", "filter": {}},
                    {"op": "create_acls", "acls": [allow_alice("WRITE", topic("payments"))]},
                    {"op": "delete_acls", "filters": [{"principal": "User:alice"}]},
                    {"op": "create_topics", "topics": ["orders-new"]},
                    {"op": "delete_topics", "topics": ["orders-eu"]},
                ]),
                json!([
                    cluster_refused,
                    {"succeeded": 0, "failed": ["ClusterAuthorizationFailedError"]},
                    {"deleted": [[]], "errors": ["ClusterAuthorizationFailedError"]},
                    {"error_codes": {"orders-new": TOPIC_AUTHORIZATION_FAILED}},
                    {"error_codes": {"orders-eu": TOPIC_AUTHORIZATION_FAILED}},
                ]),
            )?;
            // Nothing alice asked for took effect.
            refused_with(
                produce_as(broker, ALICE, "payments", 1),
                "TopicAuthorizationFailed",
                "alice producing to payments after granting it herself",
            )?;
            produce_as(broker, ALICE, "orders-eu", 1).context("after alice's DeleteAcls")?;
            kafka_python(
                broker,
                ADMIN,
                json!([{"op": "describe_acls", "filter": {}}]),
                json!([{"acls": grants}]),
            )
        },
    );
}

/// A literal DENY Read on `orders-us` beats the prefixed allow: alice's fetch of `orders-us` is
/// refused while `orders-eu` is read, and she still writes to `orders-us`; a DENY Write for
/// every user (`User:*`) then refuses her Produce but not the super user's. Deleting the bindings
/// with DeleteAcls takes her access away again.
#[test]
fn a_literal_deny_beats_a_prefixed_allow_and_deleted_bindings_grant_nothing() {
    let grants = [
        allow_alice("WRITE", topics_starting("orders-")),
        allow_alice("READ", topics_starting("orders-")),
        allow_alice("READ", groups_starting("orders-app-")),
    ];
    let deny_read = deny_alice("READ", topic("orders-us"));
    let deny_write_everyone = binding("User:*", "DENY", "WRITE", topic("orders-us"));
    with_acl_broker(
        |_| Ok(()),
        |broker| {
            let (create, created) = topics_created(&["orders-eu", "orders-us"]);
            kafka_python(
                broker,
                ADMIN,
                json!([create, {"op": "create_acls", "acls": grants}]),
                json!([created, {"succeeded": 3, "failed": []}]),
            )?;
            for topic in ["orders-eu", "orders-us"] {
                produce_as(broker, ALICE, topic, 5).with_context(|| format!("alice to {topic}"))?;
            }

            kafka_python(
                broker,
                ADMIN,
                json!([{"op": "create_acls", "acls": [deny_read]}]),
                json!([{"succeeded": 1, "failed": []}]),
            )?;
            let error = group_error(broker, ALICE, "orders-app-us", &["orders-us"])?;
            ensure!(
                error.to_string().contains("TopicAuthorizationFailed"),
                "alice reading orders-us despite the deny: {error}"
            );
            consume_in_group(broker, ALICE, "orders-app-eu", &["orders-eu"], 5)
                .context("alice reading orders-eu")?;
            produce_as(broker, ALICE, "orders-us", 1).context("a deny of Read refuses Write")?;

            kafka_python(
                broker,
                ADMIN,
                json!([{"op": "create_acls", "acls": [deny_write_everyone]}]),
                json!([{"succeeded": 1, "failed": []}]),
            )?;
            refused_with(
                produce_as(broker, ALICE, "orders-us", 1),
                "TopicAuthorizationFailed",
                "alice producing to orders-us after User:* was denied Write",
            )?;
            produce_as(broker, ALICE, "orders-eu", 1).context("the deny reached orders-eu")?;
            produce_as(broker, ADMIN, "orders-us", 1).context("a deny refuses the super user")?;

            let mut alices = grants.to_vec();
            alices.push(deny_read);
            kafka_python(
                broker,
                ADMIN,
                json!([
                    {"op": "delete_acls", "filters": [
                        {"principal": "User:alice"},
                        {"principal": "User:*", "resource_type": "TOPIC"},
                    ]},
                    {"op": "describe_acls", "filter": {}},
                ]),
                json!([
                    {"deleted": [alices, [deny_write_everyone]], "errors": ["NoError", "NoError"]},
                    {"acls": []},
                ]),
            )?;
            refused_with(
                produce_as(broker, ALICE, "orders-eu", 1),
                "TopicAuthorizationFailed",
                "alice producing to orders-eu after her bindings were deleted",
            )?;
            let error = group_error(broker, ALICE, "orders-app-again", &["orders-eu"])?;
            ensure!(
                error.to_string().contains("GroupAuthorizationFailed"),
                "alice reading orders-eu after her bindings were deleted: {error}"
            );
            Ok(())
        },
    );
}

/// Without an authorizer, KIP-430's authorized operations are every operation of the resource's
/// type, as Kafka answers (librdkafka's 0081_admin expects 8 for a topic), and left out when not
/// asked for.
#[test]
fn without_an_authorizer_every_operation_is_authorized() {
    with_broker(BrokerOptions::new(), |broker| {
        create_topic(broker, "open", 1, &[])?;
        kafka_python(
            broker,
            ANONYMOUS,
            json!([
                {"op": "describe_topics", "topics": ["open"]},
                {"op": "describe_cluster"},
            ]),
            json!([
                {"open": ["ALTER", "ALTER_CONFIGS", "CREATE", "DELETE", "DESCRIBE",
                    "DESCRIBE_CONFIGS", "READ", "WRITE"]},
                {"cluster": ["ALTER", "ALTER_CONFIGS", "CLUSTER_ACTION", "CREATE", "DESCRIBE",
                    "DESCRIBE_CONFIGS", "IDEMPOTENT_WRITE"]},
            ]),
        )?;
        let named = MetadataRequestTopic::default().with_name(Some(TopicName("open".into())));
        let unasked = broker.raw()?.request(
            12,
            &MetadataRequest::default().with_topics(Some(vec![named])),
        )?;
        let operations: Vec<i32> = unasked
            .topics
            .iter()
            .map(|t| t.topic_authorized_operations)
            .collect();
        ensure!(
            operations == [i32::MIN],
            "a Metadata request not asking for authorized operations got {operations:?}"
        );
        Ok(())
    });
}

/// Kafka 4 group configs: the super user sets a group's consumer-protocol session timeout and
/// heartbeat interval over IncrementalAlterConfigs (kafka-python), DescribeConfigs shows them as
/// the group's own and the rest as defaults, values out of range are refused whole, the group's
/// members are told its heartbeat interval, and alice, who may only read the group, may neither
/// describe nor change its configs.
#[test]
fn a_group_sets_its_own_consumer_configs_as_in_kafka_4() {
    let grants = [allow_alice("READ", group("orders-app"))];
    with_acl_broker(
        |_| Ok(()),
        |broker| {
            let describe = json!({"op": "describe_group_configs", "group": "orders-app"});
            let alter = |configs: Value| json!({"op": "alter_group_configs", "group": "orders-app", "configs": configs});
            let ok = json!({"result": "OK"});
            let invalid = json!({"result": "InvalidConfigurationError"});
            kafka_python(
                broker,
                ADMIN,
                json!([
                    {"op": "create_acls", "acls": grants},
                    describe,
                    alter(json!({"consumer.session.timeout.ms": "50000",
                        "consumer.heartbeat.interval.ms": "6000"})),
                    alter(json!({"consumer.session.timeout.ms": "1000"})),
                    alter(json!({"consumer.heartbeat.interval.ms": "7000",
                        "share.record.lock.duration.ms": "1"})),
                    describe,
                ]),
                json!([
                    {"succeeded": 1, "failed": []},
                    {"consumer.heartbeat.interval.ms": ["5000", "DEFAULT_CONFIG"],
                        "consumer.session.timeout.ms": ["45000", "DEFAULT_CONFIG"]},
                    ok,
                    invalid,
                    invalid,
                    {"consumer.heartbeat.interval.ms": ["6000", "DYNAMIC_GROUP_CONFIG"],
                        "consumer.session.timeout.ms": ["50000", "DYNAMIC_GROUP_CONFIG"]},
                ]),
            )?;

            let heartbeat = ConsumerGroupHeartbeatRequest::default()
                .with_group_id(GroupId("orders-app".into()))
                .with_member_id("member-1".into())
                .with_rebalance_timeout_ms(30_000)
                .with_subscribed_topic_names(Some(vec![]))
                .with_topic_partitions(Some(vec![]));
            let joined = raw_as(broker, ADMIN)?.request(0, &heartbeat)?;
            ensure!(
                joined.error_code == 0 && joined.heartbeat_interval_ms == 6_000,
                "a member of orders-app is told {joined:?}"
            );

            // kafka-python shows a refused description as no configs; the code is checked below.
            let refused = json!({"result": "GroupAuthorizationFailedError"});
            kafka_python(
                broker,
                ALICE,
                json!([
                    describe,
                    alter(json!({"consumer.session.timeout.ms": "60000"}))
                ]),
                json!([{}, refused]),
            )?;
            let resource = DescribeConfigsResource::default()
                .with_resource_type(32)
                .with_resource_name("orders-app".into());
            let described = raw_as(broker, ALICE)?.request(
                4,
                &DescribeConfigsRequest::default().with_resources(vec![resource]),
            )?;
            let codes: Vec<i16> = described.results.iter().map(|r| r.error_code).collect();
            ensure!(
                codes == [GROUP_AUTHORIZATION_FAILED],
                "alice's DescribeConfigs of orders-app: {described:?}"
            );
            kafka_python(
                broker,
                ADMIN,
                json!([
                    alter(json!({"consumer.session.timeout.ms": null})),
                    describe
                ]),
                json!([ok, {"consumer.heartbeat.interval.ms": ["6000", "DYNAMIC_GROUP_CONFIG"],
                    "consumer.session.timeout.ms": ["45000", "DEFAULT_CONFIG"]}]),
            )
        },
    );
}

/// Reads `causeway acl list --json` over a stopped broker's data directory: its bindings in the
/// form `kafka_python_acls.py` prints.
fn acl_list(data_dir: &Path) -> Result<Value> {
    let listing = causeway_offline(&["acl", "list", "--json"], data_dir, "")?;
    let parsed: Value =
        serde_json::from_str(&listing).with_context(|| format!("acl list --json: {listing}"))?;
    let bindings = parsed["acls"]
        .as_array()
        .with_context(|| format!("no list of acls in acl list --json: {listing}"))?;
    let upper = |listed: &Value, field: &str| -> Result<String> {
        listed[field]
            .as_str()
            .map(str::to_ascii_uppercase)
            .with_context(|| format!("no {field} in {listed}"))
    };
    let bindings = bindings
        .iter()
        .map(|listed| {
            Ok(json!({
                "principal": listed["principal"],
                "host": listed["host"],
                "permission": upper(listed, "permission")?,
                "operation": upper(listed, "operation")?,
                "resource_type": upper(listed, "resource_type")?,
                "name": listed["resource_name"],
                "pattern": upper(listed, "pattern_type")?,
            }))
        })
        .collect::<Result<Vec<Value>>>()?;
    Ok(canonical(Value::Array(bindings)))
}

/// `causeway acl add|remove --principal User:alice ARGS` over `data_dir`, `ARGS` separated by
/// spaces.
fn acl_cli_for_alice(data_dir: &Path, command: &str, args: &str) -> Result<()> {
    let mut all = vec!["acl", command, "--principal", "User:alice"];
    all.extend(args.split_whitespace());
    causeway_offline(&all, data_dir, "").map(|_| ())
}

/// `binding` from `host` only.
fn from_host(mut binding: Value, host: &str) -> Value {
    binding["host"] = json!(host);
    binding
}

/// As `who`, writes one record to `topic` in a transaction of `transactional.id` `id`.
fn produce_in_transaction(broker: &BrokerProcess, who: Who, id: &str, topic: &str) -> Result<()> {
    let mut config = as_user(ClientConfig::new(), who);
    config
        .set("bootstrap.servers", broker.bootstrap())
        .set("transactional.id", id)
        .set("log_level", "6");
    let producer: ThreadedProducer<DefaultProducerContext> = config.create()?;
    producer.init_transactions(CLIENT_TIMEOUT)?;
    producer.begin_transaction()?;
    let payload = format!("{id}-{topic}");
    producer
        .send(BaseRecord::<(), str>::to(topic).payload(&payload))
        .map_err(|(e, _)| e)?;
    producer.commit_transaction(CLIENT_TIMEOUT)?;
    Ok(())
}

/// Bindings written by `causeway acl add` before the broker starts are enforced (host by host,
/// on topics, their creation, groups and transactional ids) and are the ones DescribeAcls reports; `acl list
/// --json` shows them, and one added over CreateAcls once the broker stopped; `acl remove` takes
/// one away for the next start.
#[test]
fn bindings_added_offline_are_enforced_listed_and_removed() {
    let offline_args = [
        "--allow --operation read,write,create --topic audit- --prefixed",
        "--allow --operation read --group audit-app",
        "--allow --operation write --transactional-id audit-tx",
        "--deny --operation write --topic audit-secret --host 127.0.0.1",
        "--deny --operation write --topic audit-log --host 10.9.9.9",
    ];
    let remove_write = "--allow --operation write --topic audit- --prefixed";
    let write_audit = allow_alice("WRITE", topics_starting("audit-"));
    let offline = vec![
        write_audit.clone(),
        allow_alice("READ", topics_starting("audit-")),
        allow_alice("CREATE", topics_starting("audit-")),
        allow_alice("READ", group("audit-app")),
        allow_alice("WRITE", ("TRANSACTIONAL_ID", "audit-tx", "LITERAL")),
        from_host(deny_alice("WRITE", topic("audit-secret")), "127.0.0.1"),
        from_host(deny_alice("WRITE", topic("audit-log")), "10.9.9.9"),
    ];
    let describe_cluster = allow_alice("DESCRIBE", ("CLUSTER", "kafka-cluster", "LITERAL"));
    with_acl_broker(
        |data_dir| {
            for args in offline_args {
                acl_cli_for_alice(data_dir, "add", args)?;
            }
            let listed = acl_list(data_dir)?;
            let expected = canonical(json!(offline));
            ensure!(
                listed == expected,
                "acl list --json: {listed}, expected {expected}"
            );
            Ok(())
        },
        |broker| {
            let (create, created) = topics_created(&["audit-log", "audit-secret"]);
            kafka_python(
                broker,
                ADMIN,
                json!([
                    create,
                    {"op": "describe_acls", "filter": {}},
                    {"op": "create_acls", "acls": [describe_cluster]},
                ]),
                json!([created, {"acls": offline}, {"succeeded": 1, "failed": []}]),
            )?;
            produce_as(broker, ALICE, "audit-log", 5).context("a deny for another host applied")?;
            refused_with(
                produce_as(broker, ALICE, "audit-secret", 1),
                "TopicAuthorizationFailed",
                "alice producing to audit-secret, denied from 127.0.0.1",
            )?;
            consume_in_group(broker, ALICE, "audit-app", &["audit-log"], 5)
                .context("alice reading audit-log in audit-app")?;
            produce_in_transaction(broker, ALICE, "audit-tx", "audit-log")
                .context("alice's transaction as audit-tx")?;
            refused_with(
                produce_in_transaction(broker, ALICE, "other-tx", "audit-log"),
                "Transactional Id authorization failed",
                "alice's transaction as other-tx",
            )?;
            // With Describe on the cluster alice may list bindings; with Create on the topics
            // starting with audit- she may create those.
            kafka_python(
                broker,
                ALICE,
                json!([
                    {"op": "describe_acls", "filter": {"resource_type": "CLUSTER"}},
                    {"op": "create_topics", "topics": ["audit-new", "other-new"]},
                ]),
                json!([
                    {"acls": [describe_cluster]},
                    {"error_codes": {"audit-new": 0, "other-new": TOPIC_AUTHORIZATION_FAILED}},
                ]),
            )?;

            broker.terminate()?;
            let data_dir = broker.data_dir().to_path_buf();
            let mut all = offline.clone();
            all.push(describe_cluster.clone());
            let listed = acl_list(&data_dir)?;
            ensure!(
                listed == canonical(json!(all)),
                "acl list --json after CreateAcls: {listed}"
            );
            acl_cli_for_alice(&data_dir, "remove", remove_write)?;
            all.retain(|b| *b != write_audit);
            let listed = acl_list(&data_dir)?;
            ensure!(
                listed == canonical(json!(all)),
                "acl list --json after acl remove: {listed}"
            );
            broker.restart()?;
            refused_with(
                produce_as(broker, ALICE, "audit-log", 1),
                "TopicAuthorizationFailed",
                "alice producing to audit-log after acl remove",
            )
        },
    );
}

/// On a plaintext listener every client is `User:ANONYMOUS`; with
/// `--allow-everyone-if-no-acl-found` it may use a resource no binding matches, but not one that
/// some binding matches, even a binding for somebody else.
#[test]
fn anonymous_clients_use_only_what_no_binding_speaks_of_when_everyone_is_allowed() {
    let options = BrokerOptions::new()
        .flag("--authorization", "acls")
        .flag("--allow-everyone-if-no-acl-found", "true")
        .no_auto_create();
    let dir = tempfile::TempDir::new().expect("temp dir");
    let data_dir = dir.path().join("data");
    for (principal, args) in [
        ("User:ANONYMOUS", "--deny --operation write --topic locked"),
        ("User:bob", "--allow --operation read,write --topic bobs"),
    ] {
        let mut all = vec!["acl", "add", "--principal", principal];
        all.extend(args.split_whitespace());
        causeway_offline(&all, &data_dir, "").expect("acl add");
    }
    with_broker(options.data_dir(&data_dir), |broker| {
        for topic in ["open", "locked", "bobs"] {
            create_topic(broker, topic, 1, &[]).with_context(|| format!("creating {topic}"))?;
        }
        let producer = broker.producer();
        produce_all(&producer, "open", &[TestRecord::value("anonymous")])
            .context("producing to a topic no binding speaks of")?;
        for topic in ["locked", "bobs"] {
            refused_with(
                produce_all(&producer, topic, &[TestRecord::value("anonymous")]),
                "TopicAuthorizationFailed",
                &format!("an anonymous client producing to {topic}"),
            )?;
        }
        Ok(())
    });
}
