//! Malformed or hostile input gets a precise error or a closed connection, and never takes the
//! broker down: after every case a new connection still gets ApiVersions answered and rdkafka
//! can still produce and consume.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::BufMut;
use causeway_integration_tests::batch::{
    encode_batch, simple_batch, zstd_bomb, RawRecord, MAGIC_OFFSET,
};
use causeway_integration_tests::raw::{split_v0_header, PeerOutcome};
use causeway_integration_tests::{
    attacked, create_topic, ensure_eq, now_ms, still_serving, topic_name, with_broker,
    BrokerOptions, BrokerProcess, CLIENT_TIMEOUT,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::{ApiVersionsResponse, ProduceRequest, TopicName};
use kafka_protocol::protocol::Decodable;
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::{BaseConsumer, Consumer};

const CORRUPT_MESSAGE: i16 = 2;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const MESSAGE_TOO_LARGE: i16 = 10;
const UNSUPPORTED_VERSION: i16 = 35;
const UNSUPPORTED_FOR_MESSAGE_FORMAT: i16 = 43;

const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

fn high_watermark(broker: &BrokerProcess, topic: &str) -> Result<i64> {
    let consumer: BaseConsumer = broker.consumer_config().create()?;
    Ok(consumer.fetch_watermarks(topic, 0, CLIENT_TIMEOUT)?.1)
}

#[test]
fn frame_larger_than_socket_request_max_bytes_closes_the_connection() {
    let opts = BrokerOptions::new().flag("--socket-request-max-bytes", 1024 * 1024);
    attacked(opts, |broker| {
        let mut raw = broker.raw()?;
        raw.write_all(&(2 * 1024 * 1024i32).to_be_bytes())?;
        if !raw.closed_within(CLOSE_TIMEOUT) {
            bail!("connection still open after announcing a 2 MiB frame over a 1 MiB limit");
        }
        // A negative length is no better.
        let mut raw = broker.raw()?;
        raw.write_all(&(-5i32).to_be_bytes())?;
        if !raw.closed_within(CLOSE_TIMEOUT) {
            bail!("connection still open after a negative frame length");
        }
        still_serving(broker)
    });
}

#[test]
fn truncated_request_body_closes_the_connection_or_errors() {
    attacked(BrokerOptions::new(), |broker| {
        let mut raw = broker.raw()?;
        // Metadata v12 (flexible header), then a body claiming 4 topics that holds 2 more bytes.
        raw.send_raw_request(3, 12, true, &[0x05, 0x81, 0x7f])?;
        match raw.wait_for_peer(CLOSE_TIMEOUT) {
            PeerOutcome::Closed | PeerOutcome::Data(_) => {}
            PeerOutcome::StillOpen => {
                bail!("no answer and no close within {CLOSE_TIMEOUT:?} for a truncated body")
            }
        }
        still_serving(broker)
    });
}

#[test]
fn unknown_api_key_closes_the_connection() {
    attacked(BrokerOptions::new(), |broker| {
        let mut raw = broker.raw()?;
        raw.send_raw_request(9999, 0, false, &[])?;
        if !raw.closed_within(CLOSE_TIMEOUT) {
            bail!("connection still open after a request with api key 9999");
        }
        still_serving(broker)
    });
}

#[test]
fn api_versions_at_unsupported_version_answers_v0_with_unsupported_version() {
    attacked(BrokerOptions::new(), |broker| {
        let mut raw = broker.raw()?;
        // A v3-style body: client software name and version (compact strings), no tags.
        let mut body = Vec::new();
        for s in ["causeway-it", "0.1"] {
            body.put_u8(s.len() as u8 + 1);
            body.put_slice(s.as_bytes());
        }
        body.put_u8(0);
        let correlation_id = raw.send_raw_request(18, 99, true, &body)?;
        let frame = raw.read_frame().context("no answer to ApiVersions v99")?;
        let (got_id, mut body) = split_v0_header(frame)?;
        ensure_eq!(got_id, correlation_id, "correlation id");
        let resp = ApiVersionsResponse::decode(&mut body, 0).context("decode as a v0 response")?;
        ensure_eq!(resp.error_code, UNSUPPORTED_VERSION, "error code");
        if resp.api_keys.is_empty() {
            bail!("the UNSUPPORTED_VERSION answer lists no APIs");
        }
        let api_versions = resp
            .api_keys
            .iter()
            .find(|k| k.api_key == 18)
            .context("ApiVersions missing from the list")?;
        if api_versions.max_version < 3 {
            bail!(
                "ApiVersions advertised up to v{} only",
                api_versions.max_version
            );
        }
        still_serving(broker)
    });
}

#[test]
fn produce_with_wrong_crc_is_rejected_as_corrupt_message() {
    attacked(BrokerOptions::new(), |broker| {
        let topic = topic_name("crc");
        create_topic(broker, &topic, 1, &[])?;
        let mut batch = simple_batch("crc", 3, 1_000);
        let last = batch.len() - 1;
        batch[last] ^= 0xff; // flip the last value byte; the CRC no longer matches
        let resp = broker.raw()?.produce(&topic, 0, 1, batch.freeze())?;
        ensure_eq!(resp.error_code, CORRUPT_MESSAGE, "error code");
        ensure_eq!(
            high_watermark(broker, &topic)?,
            0,
            "corrupt batch was appended"
        );
        // The same batch with its CRC intact is accepted.
        let resp = broker
            .raw()?
            .produce(&topic, 0, 1, simple_batch("crc", 3, 1_000).freeze())?;
        ensure_eq!(resp.error_code, 0, "valid batch");
        ensure_eq!(resp.base_offset, 0, "valid batch base offset");
        still_serving(broker)
    });
}

#[test]
fn produce_with_magic_1_is_rejected_as_unsupported_for_message_format() {
    attacked(BrokerOptions::new(), |broker| {
        let topic = topic_name("magic");
        create_topic(broker, &topic, 1, &[])?;
        let mut batch = simple_batch("magic", 2, 1_000);
        batch[MAGIC_OFFSET] = 1;
        let resp = broker.raw()?.produce(&topic, 0, 1, batch.freeze())?;
        ensure_eq!(
            resp.error_code,
            UNSUPPORTED_FOR_MESSAGE_FORMAT,
            "error code"
        );
        ensure_eq!(
            high_watermark(broker, &topic)?,
            0,
            "magic-1 batch was appended"
        );
        still_serving(broker)
    });
}

#[test]
fn batch_over_topic_max_message_bytes_is_rejected_as_message_too_large() {
    attacked(BrokerOptions::new(), |broker| {
        let topic = topic_name("toolarge");
        create_topic(broker, &topic, 1, &[("max.message.bytes", "1000")])?;
        let batch = encode_batch(&[RawRecord::value(vec![b'x'; 5000])], 1_000);
        let resp = broker.raw()?.produce(&topic, 0, 1, batch.freeze())?;
        ensure_eq!(resp.error_code, MESSAGE_TOO_LARGE, "error code");
        ensure_eq!(
            high_watermark(broker, &topic)?,
            0,
            "oversized batch was appended"
        );
        // A small batch passes.
        let resp = broker
            .raw()?
            .produce(&topic, 0, 1, simple_batch("ok", 1, 1_000).freeze())?;
        ensure_eq!(resp.error_code, 0, "small batch");
        still_serving(broker)
    });
}

#[test]
fn produce_to_unknown_topic_without_auto_create_is_rejected_as_unknown_topic() {
    attacked(BrokerOptions::new().no_auto_create(), |broker| {
        let topic = topic_name("ghost");
        let resp = broker
            .raw()?
            .produce(&topic, 0, 1, simple_batch("ghost", 1, 1_000).freeze())?;
        ensure_eq!(resp.error_code, UNKNOWN_TOPIC_OR_PARTITION, "error code");
        // A known topic but a partition that does not exist.
        let known = topic_name("known");
        create_topic(broker, &known, 1, &[])?;
        let resp = broker
            .raw()?
            .produce(&known, 7, 1, simple_batch("ghost", 1, 1_000).freeze())?;
        ensure_eq!(
            resp.error_code,
            UNKNOWN_TOPIC_OR_PARTITION,
            "missing partition"
        );
        still_serving(broker)
    });
}

#[test]
fn huge_array_count_closes_the_connection_without_harming_the_broker() {
    attacked(BrokerOptions::new(), |broker| {
        let mut raw = broker.raw()?;
        // Metadata v4: topics array of 2147483647 entries, followed by nothing.
        raw.send_raw_request(3, 4, false, &0x7fff_ffff_i32.to_be_bytes())?;
        if !raw.closed_within(CLOSE_TIMEOUT) {
            bail!("connection still open after an array count of 0x7fffffff");
        }
        // Same with a flexible version: compact array length varint 0xffffffff.
        let mut raw = broker.raw()?;
        raw.send_raw_request(3, 12, true, &[0xff, 0xff, 0xff, 0xff, 0x0f])?;
        match raw.wait_for_peer(CLOSE_TIMEOUT) {
            PeerOutcome::Closed | PeerOutcome::Data(_) => {}
            PeerOutcome::StillOpen => bail!("no answer and no close for a huge compact array"),
        }
        still_serving(broker)
    });
}

const INVALID_TIMESTAMP: i16 = 32;
/// Offsets of the batch header fields the tests below tamper with.
const LAST_OFFSET_DELTA_OFFSET: usize = 23;
const MAX_TIMESTAMP_OFFSET: usize = 35;
const RECORDS_COUNT_OFFSET: usize = 57;

/// Produces `batch` to a new topic (with `configs`) and expects `code`; a refused batch must
/// leave the log empty, and the broker must keep serving.
fn produce_expecting(
    broker: &mut BrokerProcess,
    name: &str,
    configs: &[(&str, &str)],
    batch: bytes::Bytes,
    code: i16,
) -> Result<()> {
    let topic = topic_name(name);
    create_topic(broker, &topic, 1, configs)?;
    let resp = broker.raw()?.produce(&topic, 0, 1, batch)?;
    ensure_eq!(resp.error_code, code, "error code");
    if code != 0 {
        ensure_eq!(high_watermark(broker, &topic)?, 0, "refused batch appended");
    }
    still_serving(broker)
}

#[test]
fn a_batch_claiming_two_billion_records_is_corrupt() {
    attacked(BrokerOptions::new(), |broker| {
        let mut batch = simple_batch("count", 1, now_ms());
        batch[RECORDS_COUNT_OFFSET..RECORDS_COUNT_OFFSET + 4]
            .copy_from_slice(&2_000_000_000i32.to_be_bytes());
        batch[LAST_OFFSET_DELTA_OFFSET..LAST_OFFSET_DELTA_OFFSET + 4]
            .copy_from_slice(&1_999_999_999i32.to_be_bytes());
        causeway_integration_tests::batch::fix_crc(&mut batch);
        produce_expecting(broker, "count", &[], batch.freeze(), CORRUPT_MESSAGE)
    });
}

#[test]
fn a_record_announcing_two_billion_headers_is_corrupt() {
    attacked(BrokerOptions::new(), |broker| {
        let record = RawRecord {
            key: Some(b"k".to_vec()),
            value: Some(b"{}".to_vec()),
            ..Default::default()
        };
        let mut batch = encode_batch(&[record], now_ms());
        // The record's last byte is its header count (0): make it the varint of 0x7FFFFFFF and
        // grow the record's and the batch's lengths to match.
        let last = batch.len() - 1;
        batch.truncate(last);
        batch.put_slice(&[0xfe, 0xff, 0xff, 0xff, 0x0f]);
        let record_length_at = 61;
        batch[record_length_at] += 8; // zig-zag: +4 bytes
        let batch_length = i32::from_be_bytes([batch[8], batch[9], batch[10], batch[11]]) + 4;
        batch[8..12].copy_from_slice(&batch_length.to_be_bytes());
        causeway_integration_tests::batch::fix_crc(&mut batch);
        produce_expecting(
            broker,
            "headers",
            &[("cleanup.policy", "compact")],
            batch.freeze(),
            CORRUPT_MESSAGE,
        )
    });
}

#[test]
fn a_zstd_bomb_is_refused_and_tables_never_decode_it() {
    attacked(BrokerOptions::new(), |broker| {
        // 80 records of 1 MiB of zeros: about 80 KiB compressed, 80 MiB decompressed.
        let batch = zstd_bomb(80, now_ms())?;
        if batch.len() > 1 << 20 {
            bail!("the bomb is {} bytes compressed", batch.len());
        }
        produce_expecting(
            broker,
            "bomb",
            &[("cleanup.policy", "compact")],
            batch.freeze(),
            MESSAGE_TOO_LARGE,
        )
    });
}

#[test]
fn timestamps_beyond_message_timestamp_after_max_ms_are_refused() {
    attacked(BrokerOptions::new(), |broker| {
        let two_hours = 2 * 3_600_000;
        // Kafka 4's default: at most one hour ahead.
        let future = simple_batch("future", 2, now_ms() + two_hours);
        produce_expecting(broker, "future", &[], future.freeze(), INVALID_TIMESTAMP)?;
        // maxTimestamp = i64::MAX would keep the segment from ever expiring.
        let mut forever = simple_batch("forever", 2, now_ms());
        forever[MAX_TIMESTAMP_OFFSET..MAX_TIMESTAMP_OFFSET + 8]
            .copy_from_slice(&i64::MAX.to_be_bytes());
        causeway_integration_tests::batch::fix_crc(&mut forever);
        produce_expecting(broker, "forever", &[], forever.freeze(), INVALID_TIMESTAMP)?;
        // The topic's own bounds apply: a wider after-bound accepts, a before-bound refuses.
        let future = simple_batch("future", 2, now_ms() + two_hours);
        let wide = ("message.timestamp.after.max.ms", "86400000");
        produce_expecting(broker, "wide", &[wide], future.freeze(), 0)?;
        let old = simple_batch("old", 2, now_ms() - two_hours);
        let narrow = ("message.timestamp.before.max.ms", "3600000");
        produce_expecting(broker, "old", &[narrow], old.freeze(), INVALID_TIMESTAMP)
    });
}

#[test]
fn an_idempotent_batch_with_a_producer_id_never_issued_is_refused() {
    const UNKNOWN_PRODUCER_ID: i16 = 59;
    attacked(BrokerOptions::new(), |broker| {
        let mut batch = simple_batch("forged", 2, now_ms());
        batch[43..51].copy_from_slice(&12_345i64.to_be_bytes()); // producer id
        batch[51..53].copy_from_slice(&0i16.to_be_bytes()); // producer epoch
        batch[53..57].copy_from_slice(&0i32.to_be_bytes()); // base sequence
        causeway_integration_tests::batch::fix_crc(&mut batch);
        produce_expecting(broker, "forged", &[], batch.freeze(), UNKNOWN_PRODUCER_ID)?;
        // A real idempotent producer (its id issued by InitProducerId) still works.
        let topic = topic_name("idempotent");
        create_topic(broker, &topic, 1, &[])?;
        let producer: rdkafka::producer::FutureProducer = broker
            .producer_config()
            .set("enable.idempotence", "true")
            .create()?;
        causeway_integration_tests::block_on(
            producer.send(
                rdkafka::producer::FutureRecord::to(&topic)
                    .payload("ok")
                    .key("k"),
                CLIENT_TIMEOUT,
            ),
        )
        .map_err(|(e, _)| e)?;
        ensure_eq!(
            high_watermark(broker, &topic)?,
            1,
            "idempotent record appended"
        );
        Ok(())
    });
}

const INVALID_RECORD: i16 = 87;

/// Produce v9 of one batch per partition of `topic` in a single request: each partition's
/// answer, in the order sent.
fn produce_partitions(
    broker: &BrokerProcess,
    topic: &str,
    batches: Vec<(i32, bytes::Bytes)>,
) -> Result<Vec<PartitionProduceResponse>> {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(
                batches
                    .into_iter()
                    .map(|(index, records)| {
                        PartitionProduceData::default()
                            .with_index(index)
                            .with_records(Some(records))
                    })
                    .collect(),
            )]);
    let response = broker.raw()?.request(9, &request)?;
    let mut partitions: Vec<PartitionProduceResponse> = response
        .responses
        .into_iter()
        .flat_map(|t| t.partition_responses)
        .collect();
    partitions.sort_by_key(|p| p.index);
    Ok(partitions)
}

/// Three records, the first and last without a key.
fn keyless_batch() -> bytes::BytesMut {
    let keyed = RawRecord {
        key: Some(b"k".to_vec()),
        ..RawRecord::value("keyed")
    };
    encode_batch(
        &[RawRecord::value("first"), keyed, RawRecord::value("last")],
        now_ms(),
    )
}

/// Kafka (KIP-467) refuses records without a key for a compacted topic: INVALID_RECORD, each
/// keyless record named by its index in the batch, nothing of the batch appended; another
/// partition of the same request is appended as usual.
#[test]
fn keyless_records_for_a_compacted_topic_are_refused_each_named() {
    with_broker(BrokerOptions::new(), |broker| {
        let topic = topic_name("compact-keyless");
        create_topic(broker, &topic, 2, &[("cleanup.policy", "compact,delete")])?;
        let keyed = encode_batch(
            &[RawRecord {
                key: Some(b"k".to_vec()),
                ..RawRecord::value("v")
            }],
            now_ms(),
        );
        let answers = produce_partitions(
            broker,
            &topic,
            vec![(0, keyless_batch().freeze()), (1, keyed.freeze())],
        )?;
        ensure_eq!(answers.len(), 2, "partition answers");
        let refused = &answers[0];
        ensure_eq!(refused.error_code, INVALID_RECORD, "keyless batch error");
        ensure_eq!(refused.base_offset, -1, "keyless batch base offset");
        let named: Vec<(i32, Option<String>)> = refused
            .record_errors
            .iter()
            .map(|e| {
                (
                    e.batch_index,
                    e.batch_index_error_message
                        .as_ref()
                        .map(|m| m.as_str().to_string()),
                )
            })
            .collect();
        let reason = format!(
            "Compacted topic cannot accept message without key in topic partition {topic}-0."
        );
        ensure_eq!(
            named,
            vec![(0, Some(reason.clone())), (2, Some(reason.clone()))],
            "record errors"
        );
        let message = refused
            .error_message
            .as_ref()
            .map(|m| m.as_str().to_string())
            .unwrap_or_default();
        if !message.contains("2 record errors") || !message.contains(&reason) {
            bail!("error message {message:?}");
        }
        ensure_eq!(answers[1].error_code, 0, "keyed batch to partition 1");
        ensure_eq!(answers[1].base_offset, 0, "keyed batch base offset");
        ensure_eq!(high_watermark(broker, &topic)?, 0, "refused batch appended");
        let consumer: BaseConsumer = broker.consumer_config().create()?;
        ensure_eq!(
            consumer.fetch_watermarks(&topic, 1, CLIENT_TIMEOUT)?.1,
            1,
            "partition 1 log end"
        );
        Ok(())
    });
}

/// Produce v3 and later carry exactly one batch per partition, as in Kafka: two batches for one
/// partition are refused whole with INVALID_RECORD. Before, they were appended one by one, so a
/// refusal of the second (here its timestamp an hour ahead) left the first appended behind an
/// error the producer would retry, writing it twice.
#[test]
fn two_batches_for_one_partition_are_refused_whole() {
    with_broker(BrokerOptions::new(), |broker| {
        let topic = topic_name("two-batches");
        create_topic(broker, &topic, 1, &[])?;
        let mut two = encode_batch(&[RawRecord::value("first")], now_ms());
        two.extend_from_slice(&encode_batch(
            &[RawRecord::value("an hour ahead")],
            now_ms() + 2 * 3_600_000,
        ));
        let answers = produce_partitions(broker, &topic, vec![(0, two.freeze())])?;
        ensure_eq!(answers[0].error_code, INVALID_RECORD, "two batches");
        let message = answers[0]
            .error_message
            .as_ref()
            .map(|m| m.as_str().to_string())
            .unwrap_or_default();
        if !message.contains("exactly one record batch") {
            bail!("error message {message:?}");
        }
        ensure_eq!(
            high_watermark(broker, &topic)?,
            0,
            "log end after the refusal"
        );
        Ok(())
    });
}

/// The same batch is accepted whole by a topic that is not compacted.
#[test]
fn keyless_records_for_a_deleting_topic_are_accepted() {
    with_broker(BrokerOptions::new(), |broker| {
        let topic = topic_name("delete-keyless");
        create_topic(broker, &topic, 1, &[("cleanup.policy", "delete")])?;
        let answers = produce_partitions(broker, &topic, vec![(0, keyless_batch().freeze())])?;
        ensure_eq!(answers[0].error_code, 0, "error code");
        ensure_eq!(answers[0].record_errors.len(), 0, "record errors");
        ensure_eq!(high_watermark(broker, &topic)?, 3, "log end");
        Ok(())
    });
}

/// librdkafka (its test 0011_produce_batch) sees a keyless record to a compacted topic fail
/// with INVALID_RECORD; a keyed one succeeds.
#[test]
fn librdkafka_gets_invalid_record_for_a_keyless_record_to_a_compacted_topic() {
    use rdkafka::error::KafkaError;
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use rdkafka::types::RDKafkaErrorCode;
    with_broker(BrokerOptions::new(), |broker| {
        let topic = topic_name("compact-rdkafka");
        create_topic(broker, &topic, 1, &[("cleanup.policy", "compact")])?;
        let producer: FutureProducer = broker.producer_config().create()?;
        let keyless = causeway_integration_tests::block_on(producer.send(
            FutureRecord::<(), _>::to(&topic).payload("no key"),
            CLIENT_TIMEOUT,
        ));
        match keyless {
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::InvalidRecord), _)) => {}
            other => bail!("keyless record: {other:?}"),
        }
        causeway_integration_tests::block_on(producer.send(
            FutureRecord::to(&topic).payload("keyed").key("k"),
            CLIENT_TIMEOUT,
        ))
        .map_err(|(e, _)| e)?;
        ensure_eq!(high_watermark(broker, &topic)?, 1, "log end");
        Ok(())
    });
}
