//! Client quotas (KIP-13, KIP-55, KIP-219): AlterClientQuotas and DescribeClientQuotas round
//! trips (exact and default entities, filters, validation, removal, authorization) over raw
//! requests (kafka-python 3.0 has no quota admin calls, librdkafka's rdkafka crate neither); a
//! greedy librdkafka producer held to its `producer_byte_rate` while a polite one beside it stays
//! fast; a consumer held to its `consumer_byte_rate` while another reads fast; and a quota set in
//! one region described in the other. Throughputs are compared as ratios, never as absolute
//! timings.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use causeway_integration_tests::batch::{encode_batch, RawRecord};
use causeway_integration_tests::regions::{with_mesh, MeshPlan};
use causeway_integration_tests::{
    consumer_config, create_topic, produce_all, producer_config, topic_name, wait_until,
    with_broker, BrokerOptions, BrokerProcess, TestRecord,
};
use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    AlterClientQuotasRequest, AlterClientQuotasResponse, ApiVersionsRequest,
    DescribeClientQuotasRequest, DescribeClientQuotasResponse, MetadataRequest, ProduceRequest,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

/// Kafka's INVALID_REQUEST and CLUSTER_AUTHORIZATION_FAILED.
const INVALID_REQUEST: i16 = 42;
const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;

/// Match types of a describe filter component.
const EXACT: i8 = 0;
const DEFAULT: i8 = 1;
const SPECIFIED: i8 = 2;

/// The quota the greedy clients are held to: 256 KiB a second.
const QUOTA: f64 = 256.0 * 1024.0;

/// How long the throughput tests run their clients.
const RUN: Duration = Duration::from_secs(5);

/// The throughput tests run one at a time: on two cores, two of them at once would measure
/// each other.
static THROUGHPUT: Mutex<()> = Mutex::new(());

fn s(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

/// An AlterClientQuotas entry: `components` as (type, name; `None`: the default), `ops` as
/// (key, value; `None`: remove).
fn entry(components: &[(&str, Option<&str>)], ops: &[(&str, Option<f64>)]) -> EntryData {
    EntryData::default()
        .with_entity(
            components
                .iter()
                .map(|(t, name)| {
                    EntityData::default()
                        .with_entity_type(s(t))
                        .with_entity_name(name.map(s))
                })
                .collect(),
        )
        .with_ops(
            ops.iter()
                .map(|(key, value)| {
                    OpData::default()
                        .with_key(s(key))
                        .with_value(value.unwrap_or(0.0))
                        .with_remove(value.is_none())
                })
                .collect(),
        )
}

fn alter(
    broker: &BrokerProcess,
    version: i16,
    entries: Vec<EntryData>,
    validate_only: bool,
) -> Result<AlterClientQuotasResponse> {
    broker.raw()?.request(
        version,
        &AlterClientQuotasRequest::default()
            .with_entries(entries)
            .with_validate_only(validate_only),
    )
}

/// Sets quotas and fails unless every entry was accepted.
fn set_quotas(broker: &BrokerProcess, entries: Vec<EntryData>) -> Result<()> {
    let answer = alter(broker, 1, entries, false)?;
    ensure!(
        answer.entries.iter().all(|e| e.error_code == 0),
        "AlterClientQuotas: {answer:?}"
    );
    Ok(())
}

fn describe_raw(
    broker: &BrokerProcess,
    filter: &[(&str, i8, Option<&str>)],
    strict: bool,
) -> Result<DescribeClientQuotasResponse> {
    let components = filter
        .iter()
        .map(|(t, match_type, name)| {
            ComponentData::default()
                .with_entity_type(s(t))
                .with_match_type(*match_type)
                .with_match(name.map(s))
        })
        .collect();
    broker.raw()?.request(
        1,
        &DescribeClientQuotasRequest::default()
            .with_components(components)
            .with_strict(strict),
    )
}

/// A described entity and its values, in a comparable form: `type=name` (`<default>`) joined by
/// `,`, and `key=value` sorted.
type Described = Vec<(String, Vec<String>)>;

fn describe(
    broker: &BrokerProcess,
    filter: &[(&str, i8, Option<&str>)],
    strict: bool,
) -> Result<Described> {
    let answer = describe_raw(broker, filter, strict)?;
    ensure!(answer.error_code == 0, "DescribeClientQuotas: {answer:?}");
    let mut out: Described = answer
        .entries
        .unwrap_or_default()
        .into_iter()
        .map(|e| {
            let entity = e
                .entity
                .iter()
                .map(|c| {
                    let name = c.entity_name.as_ref().map_or("<default>", |n| n.as_str());
                    format!("{}={name}", c.entity_type.as_str())
                })
                .collect::<Vec<_>>()
                .join(",");
            let mut values: Vec<String> = e
                .values
                .iter()
                .map(|v| format!("{}={}", v.key.as_str(), v.value))
                .collect();
            values.sort();
            (entity, values)
        })
        .collect();
    out.sort();
    Ok(out)
}

fn described(rows: &[(&str, &[&str])]) -> Described {
    let mut out: Described = rows
        .iter()
        .map(|(e, v)| (e.to_string(), v.iter().map(|x| x.to_string()).collect()))
        .collect();
    out.sort();
    out
}

#[test]
fn client_quotas_are_altered_described_validated_and_removed() {
    with_broker(BrokerOptions::new(), |broker| {
        let answer = alter(
            broker,
            1,
            vec![
                entry(
                    &[("client-id", Some("greedy"))],
                    &[("producer_byte_rate", Some(1024.0))],
                ),
                entry(&[("user", None)], &[("consumer_byte_rate", Some(2048.0))]),
                entry(
                    &[("user", Some("alice")), ("client-id", None)],
                    &[("request_percentage", Some(12.5))],
                ),
                entry(&[("client-id", Some("x"))], &[("bogus_rate", Some(1.0))]),
                entry(
                    &[("client-id", Some("x"))],
                    &[("producer_byte_rate", Some(-5.0))],
                ),
                entry(
                    &[("ip", Some("10.0.0.1"))],
                    &[("producer_byte_rate", Some(5.0))],
                ),
            ],
            false,
        )?;
        let codes: Vec<i16> = answer.entries.iter().map(|e| e.error_code).collect();
        ensure!(
            codes == [0, 0, 0, INVALID_REQUEST, INVALID_REQUEST, INVALID_REQUEST],
            "each entry is judged alone: {answer:?}"
        );
        ensure!(
            answer.entries[0].entity[0].entity_name.as_deref() == Some("greedy"),
            "results name their entity: {answer:?}"
        );
        // validate_only changes nothing; v0 is served too.
        let dry = alter(
            broker,
            0,
            vec![entry(
                &[("client-id", Some("dry"))],
                &[("producer_byte_rate", Some(1.0))],
            )],
            true,
        )?;
        ensure!(dry.entries[0].error_code == 0, "{dry:?}");

        let everything = described(&[
            ("client-id=greedy", &["producer_byte_rate=1024"]),
            ("user=<default>", &["consumer_byte_rate=2048"]),
            (
                "user=alice,client-id=<default>",
                &["request_percentage=12.5"],
            ),
        ]);
        ensure!(
            describe(broker, &[], false)? == everything,
            "all, unfiltered"
        );
        ensure!(
            describe(broker, &[("client-id", EXACT, Some("greedy"))], false)?
                == described(&[("client-id=greedy", &["producer_byte_rate=1024"])]),
            "exact"
        );
        ensure!(
            describe(broker, &[("user", DEFAULT, None)], true)?
                == described(&[("user=<default>", &["consumer_byte_rate=2048"])]),
            "default"
        );
        ensure!(
            describe(broker, &[("user", SPECIFIED, None)], false)?
                == described(&[
                    ("user=<default>", &["consumer_byte_rate=2048"]),
                    (
                        "user=alice,client-id=<default>",
                        &["request_percentage=12.5"]
                    ),
                ]),
            "specified, not strict"
        );
        ensure!(
            describe(broker, &[("user", SPECIFIED, None)], true)?
                == described(&[("user=<default>", &["consumer_byte_rate=2048"])]),
            "specified, strict: no client-id component"
        );
        let bad = describe_raw(broker, &[("ip", SPECIFIED, None)], false)?;
        ensure!(bad.error_code == INVALID_REQUEST, "{bad:?}");

        set_quotas(
            broker,
            vec![
                entry(
                    &[("client-id", Some("greedy"))],
                    &[("producer_byte_rate", None)],
                ),
                entry(&[("user", None)], &[("consumer_byte_rate", Some(4096.0))]),
            ],
        )?;
        ensure!(
            describe(broker, &[], false)?
                == described(&[
                    ("user=<default>", &["consumer_byte_rate=4096"]),
                    (
                        "user=alice,client-id=<default>",
                        &["request_percentage=12.5"]
                    ),
                ]),
            "removed and replaced"
        );
        Ok(())
    });
}

#[test]
fn client_quotas_need_cluster_describe_configs_and_alter_configs() {
    let options = BrokerOptions::new().flag("--authorization", "acls");
    with_broker(options, |broker| {
        let answer = alter(
            broker,
            1,
            vec![entry(
                &[("client-id", Some("greedy"))],
                &[("producer_byte_rate", Some(1024.0))],
            )],
            false,
        )?;
        ensure!(
            answer.entries[0].error_code == CLUSTER_AUTHORIZATION_FAILED,
            "anonymous altered quotas: {answer:?}"
        );
        let answer = describe_raw(broker, &[], false)?;
        ensure!(
            answer.error_code == CLUSTER_AUTHORIZATION_FAILED,
            "anonymous described quotas: {answer:?}"
        );
        Ok(())
    });
}

/// Counts what a producer got acknowledged and the longest throttle librdkafka reported (a
/// consumer's too).
#[derive(Default)]
struct Counting {
    delivered_bytes: AtomicU64,
    throttle_max_ms: AtomicI64,
}

impl ClientContext for Counting {
    fn stats(&self, statistics: Statistics) {
        for broker in statistics.brokers.values() {
            if let Some(throttle) = &broker.throttle {
                self.throttle_max_ms
                    .fetch_max(throttle.max, Ordering::Relaxed);
            }
        }
    }
}

impl ConsumerContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Ok(message) = result {
            self.delivered_bytes
                .fetch_add(message.payload_len() as u64, Ordering::Relaxed);
        }
    }
}

/// Produces 1 KiB records to `topic` as `client_id` for [`RUN`], as fast as librdkafka takes
/// them or, with `offer`, at most that many bytes a second: the bytes acknowledged a second, and
/// the longest throttle reported.
fn produce_flat_out(
    broker: &BrokerProcess,
    topic: &str,
    client_id: &str,
    offer: Option<f64>,
) -> Result<(f64, i64)> {
    let mut config: ClientConfig = producer_config(&broker.bootstrap());
    config
        .set("client.id", client_id)
        .set("acks", "1")
        .set("linger.ms", "2")
        .set("batch.size", "65536")
        .set("queue.buffering.max.kbytes", "4096")
        .set("statistics.interval.ms", "200");
    let producer: BaseProducer<Counting> = config.create_with_context(Counting::default())?;
    let value = vec![b'q'; 1024];
    let started = Instant::now();
    let mut offered = 0.0;
    while started.elapsed() < RUN {
        if offer.is_some_and(|rate| offered > rate * started.elapsed().as_secs_f64()) {
            producer.poll(Duration::from_millis(1));
            continue;
        }
        offered += value.len() as f64;
        match producer.send(BaseRecord::<(), _>::to(topic).payload(&value)) {
            Ok(()) => {
                producer.poll(Duration::ZERO);
            }
            Err(_) => {
                producer.poll(Duration::from_millis(5));
            }
        }
    }
    producer.poll(Duration::ZERO);
    let elapsed = started.elapsed().as_secs_f64();
    let context = producer.context();
    let rate = context.delivered_bytes.load(Ordering::Relaxed) as f64 / elapsed;
    let throttle = context.throttle_max_ms.load(Ordering::Relaxed);
    Ok((rate, throttle))
}

#[test]
fn a_greedy_producer_is_throttled_to_its_quota_while_a_polite_one_stays_fast() {
    let _one_at_a_time = THROUGHPUT.lock().unwrap_or_else(|e| e.into_inner());
    with_broker(BrokerOptions::new(), |broker| {
        let topic = topic_name("quota-produce");
        create_topic(broker, &topic, 1, &[])?;
        set_quotas(
            broker,
            vec![entry(
                &[("client-id", Some("greedy"))],
                &[("producer_byte_rate", Some(QUOTA))],
            )],
        )?;
        let (greedy, polite) = std::thread::scope(|scope| {
            // Greedy offers all it can; polite offers 32 times the quota (not more, so the test
            // does not write gigabytes): both far beyond greedy's quota.
            let greedy = scope.spawn(|| produce_flat_out(broker, &topic, "greedy", None));
            let polite =
                scope.spawn(|| produce_flat_out(broker, &topic, "polite", Some(32.0 * QUOTA)));
            (greedy.join(), polite.join())
        });
        let (greedy_rate, greedy_throttle) =
            greedy.map_err(|_| anyhow::anyhow!("greedy panicked"))??;
        let (polite_rate, polite_throttle) =
            polite.map_err(|_| anyhow::anyhow!("polite panicked"))??;
        eprintln!(
            "greedy {greedy_rate:.0} B/s (throttle up to {greedy_throttle} ms), polite \
             {polite_rate:.0} B/s (throttle up to {polite_throttle} ms), quota {QUOTA}"
        );
        ensure!(
            greedy_rate <= 1.5 * QUOTA,
            "greedy produced {greedy_rate:.0} B/s against a quota of {QUOTA}"
        );
        ensure!(
            greedy_rate >= 0.3 * QUOTA,
            "greedy was starved ({greedy_rate:.0} B/s against a quota of {QUOTA})"
        );
        ensure!(
            polite_rate >= 4.0 * greedy_rate,
            "polite ({polite_rate:.0} B/s) is not 4x greedy ({greedy_rate:.0} B/s)"
        );
        ensure!(
            greedy_throttle > 0,
            "librdkafka saw no throttle time on greedy's responses"
        );
        ensure!(polite_throttle == 0, "polite was throttled");
        let throttled = causeway_integration_tests::regions::metric_sum(
            broker,
            "causeway_quota_throttled_responses_total",
            "kind=\"produce\"",
        )?;
        ensure!(throttled > 0.0, "no produce response counted as throttled");
        Ok(())
    });
}

/// Reads `topic` from the start as `client_id` for [`RUN`] with fetches of at most
/// `fetch_bytes`: the bytes read a second, and the longest throttle librdkafka reported.
fn consume_flat_out(
    broker: &BrokerProcess,
    topic: &str,
    client_id: &str,
    fetch_bytes: usize,
) -> Result<(f64, i64)> {
    // librdkafka queues up to four fetches ahead of the application.
    let queued_kbytes = (4 * fetch_bytes / 1024).to_string();
    let fetch_bytes = fetch_bytes.to_string();
    let mut config = consumer_config(&broker.bootstrap());
    config
        .set("client.id", client_id)
        .set("fetch.max.bytes", &fetch_bytes)
        .set("message.max.bytes", &fetch_bytes)
        .set("max.partition.fetch.bytes", &fetch_bytes)
        .set("queued.max.messages.kbytes", &queued_kbytes)
        .set("statistics.interval.ms", "200");
    let consumer: BaseConsumer<Counting> = config.create_with_context(Counting::default())?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, 0, Offset::Beginning)?;
    consumer.assign(&assignment)?;
    let started = Instant::now();
    let mut bytes = 0u64;
    while started.elapsed() < RUN {
        if let Some(message) = consumer.poll(Duration::from_millis(50)) {
            bytes += message.context("consume")?.payload_len() as u64;
        }
    }
    let rate = bytes as f64 / started.elapsed().as_secs_f64();
    Ok((
        rate,
        consumer.context().throttle_max_ms.load(Ordering::Relaxed),
    ))
}

#[test]
fn a_consumer_is_throttled_to_its_fetch_quota_while_another_reads_fast() {
    let _one_at_a_time = THROUGHPUT.lock().unwrap_or_else(|e| e.into_inner());
    with_broker(BrokerOptions::new(), |broker| {
        let topic = topic_name("quota-fetch");
        create_topic(broker, &topic, 1, &[])?;
        // Batches of at most 32 KiB, so that a 64 KiB fetch is never one oversized batch.
        let producer = producer_config(&broker.bootstrap())
            .set("batch.size", "32768")
            .create()?;
        let records: Vec<TestRecord> = (0..1_600)
            .map(|i| TestRecord::value(vec![b'0' + (i % 10) as u8; 10 * 1024]))
            .collect();
        produce_all(&producer, &topic, &records).context("16 MiB to read")?;
        set_quotas(
            broker,
            vec![entry(
                &[("client-id", Some("slow-reader"))],
                &[("consumer_byte_rate", Some(QUOTA))],
            )],
        )?;
        // The slow reader fetches 64 KiB at a time, so that the quota is measured in fine steps;
        // the fast one 1 MiB, so that its rate is not bound by round trips on a loaded machine
        // (it can read the whole 16 MiB in the run: at least 12 times the quota).
        let (slow, fast) = std::thread::scope(|scope| {
            let slow = scope.spawn(|| consume_flat_out(broker, &topic, "slow-reader", 64 << 10));
            let fast = scope.spawn(|| consume_flat_out(broker, &topic, "fast-reader", 1 << 20));
            (slow.join(), fast.join())
        });
        let (slow, slow_throttle) = slow.map_err(|_| anyhow::anyhow!("slow panicked"))??;
        let (fast, fast_throttle) = fast.map_err(|_| anyhow::anyhow!("fast panicked"))??;
        eprintln!(
            "slow-reader {slow:.0} B/s (throttle up to {slow_throttle} ms), fast-reader \
             {fast:.0} B/s (throttle up to {fast_throttle} ms), quota {QUOTA}"
        );
        ensure!(
            slow <= 1.5 * QUOTA,
            "slow-reader read {slow:.0} B/s against a quota of {QUOTA}"
        );
        ensure!(
            slow_throttle > 0,
            "librdkafka saw no throttle time on slow-reader's fetches"
        );
        ensure!(fast_throttle == 0, "fast-reader was throttled");
        ensure!(
            fast >= 2.0 * QUOTA,
            "fast-reader ({fast:.0} B/s) did not read past the quota it is not held to"
        );
        let throttled = causeway_integration_tests::regions::metric_sum(
            broker,
            "causeway_quota_throttled_responses_total",
            "kind=\"fetch\"",
        )?;
        ensure!(throttled > 0.0, "no fetch response counted as throttled");
        Ok(())
    });
}

#[test]
fn a_quota_altered_in_one_region_is_described_in_the_other() {
    const EU: usize = 0;
    const US: usize = 1;
    let plan = MeshPlan::new(&["eu", "us"]).expect("a plan");
    with_mesh(plan, |mesh| {
        set_quotas(
            mesh.region(EU),
            vec![entry(
                &[("user", Some("alice")), ("client-id", Some("etl"))],
                &[("producer_byte_rate", Some(5000.0))],
            )],
        )?;
        let want = described(&[("user=alice,client-id=etl", &["producer_byte_rate=5000"])]);
        ensure!(
            wait_until(Duration::from_secs(20), || describe(
                mesh.region(US),
                &[],
                false
            )
            .is_ok_and(|d| d == want)),
            "a quota set in eu never showed in us: {:?}",
            describe(mesh.region(US), &[], false)
        );
        set_quotas(
            mesh.region(US),
            vec![entry(
                &[("user", Some("alice")), ("client-id", Some("etl"))],
                &[("producer_byte_rate", None)],
            )],
        )?;
        ensure!(
            wait_until(Duration::from_secs(20), || describe(
                mesh.region(EU),
                &[],
                false
            )
            .is_ok_and(|d| d.is_empty())),
            "a quota removed in us stayed in eu"
        );
        Ok(())
    });
}

/// Sets quota `key` to `value` for the client id raw test connections send.
fn limit_raw_client(broker: &BrokerProcess, key: &str, value: f64) -> Result<()> {
    set_quotas(
        broker,
        vec![entry(
            &[(
                "client-id",
                Some(causeway_integration_tests::raw::CLIENT_ID),
            )],
            &[(key, Some(value))],
        )],
    )
}

#[test]
fn an_over_quota_connection_is_muted_for_the_throttle_time_it_was_told() {
    with_broker(BrokerOptions::new(), |broker| {
        let topic = topic_name("quota-mute");
        create_topic(broker, &topic, 1, &[])?;
        // The raw client's id, held to 10 KiB a second.
        limit_raw_client(broker, "producer_byte_rate", 10_240.0)?;
        let records: Vec<RawRecord> = (0..30).map(|_| RawRecord::value(vec![7u8; 1024])).collect();
        let batch = encode_batch(&records, causeway_integration_tests::now_ms());
        let produce = ProduceRequest::default()
            .with_acks(1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(s(&topic)))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(batch.freeze()))])]);
        let mut raw = broker.raw()?;
        let answer = raw.request(9, &produce)?;
        let throttle = Duration::from_millis(u64::try_from(answer.throttle_time_ms)?);
        // About 30 KiB in the first second against 10 KiB/s: two seconds to wait.
        ensure!(
            throttle >= Duration::from_millis(1_000),
            "throttle_time_ms {} after three times the quota",
            answer.throttle_time_ms
        );
        let asked = Instant::now();
        raw.request(0, &ApiVersionsRequest::default())?;
        let waited = asked.elapsed();
        ensure!(
            waited >= throttle.mul_f64(0.8),
            "the muted connection answered after {waited:?}, not after the {throttle:?} it was told"
        );
        let asked = Instant::now();
        broker.raw()?.request(0, &ApiVersionsRequest::default())?;
        ensure!(
            asked.elapsed() < throttle / 2,
            "another connection waited {:?}: only the throttled one is muted",
            asked.elapsed()
        );
        Ok(())
    });
}

#[test]
fn a_client_over_its_request_percentage_is_throttled_on_any_request() {
    with_broker(BrokerOptions::new(), |broker| {
        // A hundredth of a percent of a thread: a few Metadata requests exceed it.
        limit_raw_client(broker, "request_percentage", 0.01)?;
        let mut raw = broker.raw()?;
        let mut throttled = None;
        for _ in 0..200 {
            let answer = raw.request(12, &MetadataRequest::default().with_topics(None))?;
            if answer.throttle_time_ms > 0 {
                throttled = Some(answer.throttle_time_ms);
                break;
            }
        }
        ensure!(
            throttled.is_some(),
            "200 Metadata requests never exceeded a request_percentage of 0.01"
        );
        let counted = causeway_integration_tests::regions::metric_sum(
            broker,
            "causeway_quota_throttled_responses_total",
            "kind=\"request\"",
        )?;
        ensure!(
            counted > 0.0,
            "no response counted as throttled for request time"
        );
        Ok(())
    });
}
