//! Records produced by real clients (rdkafka, kcat) come back unchanged.

use std::time::Duration;

use anyhow::{bail, Context};
use causeway_integration_tests::{
    consume_n, create_topic, ensure_eq, kcat, payload_str, produce_all, read_partition,
    read_to_end, topic_name, with_broker, BrokerOptions, KcatOutput, TestRecord, CLIENT_TIMEOUT,
};
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::{Headers, Message, Timestamp};
use rdkafka::{Offset, TopicPartitionList};

const KCAT_TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn keyed_records_with_headers_round_trip_unchanged() {
    with_broker(BrokerOptions::new(), |broker| {
        let topic = topic_name("keyed");
        let n = 20;
        let records: Vec<TestRecord> = (0..n)
            .map(|i| {
                let mut r = TestRecord::value(format!("value-{i}"))
                    .key(format!("key-{i}"))
                    .timestamp(1_700_000_000_000 + i as i64)
                    .header("h-str", Some(format!("hv-{i}").as_bytes()))
                    .header("h-null", None)
                    .partition(0);
                if i % 5 == 0 {
                    r.key = None; // null key
                }
                if i % 7 == 3 {
                    r.value = None; // tombstone-like null value
                }
                r
            })
            .collect();
        let delivered = produce_all(&broker.producer(), &topic, &records)?;
        for (i, (p, o)) in delivered.iter().enumerate() {
            ensure_eq!(*p, 0, "delivery partition of record {i}");
            ensure_eq!(*o, i as i64, "delivery offset of record {i}");
        }

        let msgs = read_partition(&broker.bootstrap(), &topic, 0, Offset::Beginning, n)?;
        for (i, (m, r)) in msgs.iter().zip(&records).enumerate() {
            ensure_eq!(m.offset(), i as i64, "offset");
            ensure_eq!(m.partition(), 0, "partition");
            ensure_eq!(m.topic(), topic.as_str(), "topic");
            ensure_eq!(m.key(), r.key.as_deref(), "key of record {i}");
            ensure_eq!(m.payload(), r.value.as_deref(), "value of record {i}");
            ensure_eq!(
                m.timestamp(),
                Timestamp::CreateTime(1_700_000_000_000 + i as i64),
                "timestamp of record {i}"
            );
            let headers = m
                .headers()
                .with_context(|| format!("record {i} has no headers"))?;
            let got: Vec<(String, Option<Vec<u8>>)> = headers
                .iter()
                .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                .collect();
            ensure_eq!(got, r.headers, "headers of record {i}");
        }
        Ok(())
    });
}

#[test]
fn every_compression_codec_round_trips() {
    with_broker(BrokerOptions::new(), |broker| {
        for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
            let topic = topic_name(&format!("codec-{codec}"));
            let producer: rdkafka::producer::FutureProducer = broker
                .producer_config()
                .set("compression.type", codec)
                .set("linger.ms", "20")
                .set("batch.num.messages", "100")
                .create()?;
            let n = 300;
            // Compressible, varied payloads.
            let records: Vec<TestRecord> = (0..n)
                .map(|i| {
                    TestRecord::value(format!("{codec} payload {i} {}", "x".repeat(i % 97)))
                        .key(format!("k{}", i % 13))
                        .partition(0)
                })
                .collect();
            let delivered =
                produce_all(&producer, &topic, &records).with_context(|| codec.to_string())?;
            ensure_eq!(delivered.last().map(|d| d.1), Some(n as i64 - 1), "{codec}");
            let msgs = read_partition(&broker.bootstrap(), &topic, 0, Offset::Beginning, n)
                .with_context(|| format!("codec {codec}"))?;
            for (i, (m, r)) in msgs.iter().zip(&records).enumerate() {
                ensure_eq!(m.offset(), i as i64, "{codec} offset");
                ensure_eq!(m.key(), r.key.as_deref(), "{codec} key {i}");
                ensure_eq!(m.payload(), r.value.as_deref(), "{codec} value {i}");
            }
        }
        Ok(())
    });
}

/// A topic's `compression.type` decides the codec its batches are stored in, as on a Kafka broker:
/// an idempotent librdkafka producer sends in one codec, every stored batch comes back (raw
/// Fetch) in the topic's codec, and a librdkafka consumer reads every record unchanged.
#[test]
fn a_topic_compression_type_stores_every_batch_in_its_codec() {
    with_broker(BrokerOptions::new(), |broker| {
        // (producer's codec, topic's compression.type, codec id the batches must carry)
        for (sent, topic_codec, stored_id) in [
            ("none", "lz4", 3),
            ("zstd", "gzip", 1),
            ("lz4", "snappy", 2),
            ("gzip", "uncompressed", 0),
            ("snappy", "zstd", 4),
            ("gzip", "producer", 1),
        ] {
            let case = format!("{sent} sent to a {topic_codec} topic");
            let topic = topic_name(&format!("stored-{topic_codec}"));
            create_topic(broker, &topic, 1, &[("compression.type", topic_codec)])?;
            let producer: rdkafka::producer::FutureProducer = broker
                .producer_config()
                .set("compression.type", sent)
                .set("enable.idempotence", "true")
                .set("linger.ms", "20")
                .set("batch.num.messages", "50")
                .create()?;
            let n = 200;
            let records: Vec<TestRecord> = (0..n)
                .map(|i| {
                    TestRecord::value(format!("{case} {i} {}", "y".repeat(i % 151)))
                        .key(format!("k{}", i % 7))
                        .header("h", Some(format!("{i}").as_bytes()))
                        .partition(0)
                })
                .collect();
            produce_all(&producer, &topic, &records).with_context(|| case.clone())?;
            let msgs = read_partition(&broker.bootstrap(), &topic, 0, Offset::Beginning, n)
                .with_context(|| case.clone())?;
            for (i, (m, r)) in msgs.iter().zip(&records).enumerate() {
                ensure_eq!(m.offset(), i as i64, "{case}: offset");
                ensure_eq!(m.key(), r.key.as_deref(), "{case}: key {i}");
                ensure_eq!(m.payload(), r.value.as_deref(), "{case}: value {i}");
                let header = m.headers().and_then(|h| h.iter().next()).map(|h| h.value);
                ensure_eq!(
                    header,
                    Some(Some(format!("{i}").as_bytes())),
                    "{case}: header {i}"
                );
            }
            let codecs = stored_codecs(broker, &topic)?;
            if codecs.is_empty() || codecs.iter().any(|&id| id != stored_id) {
                bail!("{case}: stored batches carry codecs {codecs:?}, not only {stored_id}");
            }
        }
        Ok(())
    });
}

/// The codec id (attributes bits 0-2) of every batch partition 0 of `topic` holds, from a raw
/// Fetch from offset 0.
fn stored_codecs(
    broker: &causeway_integration_tests::BrokerProcess,
    topic: &str,
) -> anyhow::Result<Vec<i16>> {
    let data = broker.raw()?.fetch(topic, 0, 0, 8 << 20, 100)?;
    let records = data.records.context("fetch returned no records")?;
    let mut codecs = Vec::new();
    let mut rest = &records[..];
    while rest.len() >= 61 {
        let length = i32::from_be_bytes(rest[8..12].try_into()?) as usize + 12;
        codecs.push(i16::from_be_bytes(rest[21..23].try_into()?) & 7);
        rest = rest.get(length..).unwrap_or_default();
    }
    Ok(codecs)
}

#[test]
fn records_stay_on_the_partition_they_were_sent_to_across_32_partitions() {
    with_broker(BrokerOptions::new(), |broker| {
        let topic = topic_name("p32");
        let parts = 32;
        create_topic(broker, &topic, parts, &[])?;
        let per_part = 5;
        let mut records = Vec::new();
        for round in 0..per_part {
            for p in 0..parts {
                records.push(TestRecord::value(format!("{p}:{round}")).partition(p));
            }
        }
        let delivered = produce_all(&broker.producer(), &topic, &records)?;
        for (r, (p, _)) in records.iter().zip(&delivered) {
            ensure_eq!(Some(*p), r.partition, "delivery partition");
        }

        let consumer: BaseConsumer = broker.consumer_config().create()?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..parts {
            tpl.add_partition_offset(&topic, p, Offset::Beginning)?;
        }
        rdkafka::consumer::Consumer::assign(&consumer, &tpl)?;
        let total = (parts * per_part) as usize;
        let msgs = consume_n(&consumer, total, CLIENT_TIMEOUT * 2)?;
        ensure_eq!(msgs.len(), total, "messages consumed");
        let mut next = vec![0i64; parts as usize];
        for m in &msgs {
            let v = payload_str(m);
            let (p, round) = v.split_once(':').context("payload format")?;
            let (p, round): (i32, i64) = (p.parse()?, round.parse()?);
            ensure_eq!(
                m.partition(),
                p,
                "record {v} came back on another partition"
            );
            ensure_eq!(m.offset(), round, "offset of {v}");
            ensure_eq!(next[p as usize], round, "order within partition {p}");
            next[p as usize] += 1;
        }
        Ok(())
    });
}

#[test]
fn kcat_produce_then_kcat_consume_round_trips_and_lists_topic() {
    with_broker(BrokerOptions::new(), |broker| {
        let topic = topic_name("kcat");
        let addr = broker.bootstrap();
        let lines: Vec<String> = (0..10).map(|i| format!("k{i}:v{i}")).collect();
        let input = lines.join("\n") + "\n";
        let out = kcat(
            &["-b", &addr, "-P", "-t", &topic, "-p", "0", "-K:"],
            input.as_bytes(),
            KCAT_TIMEOUT,
        )?;
        if !out.status.success() {
            bail!("kcat -P failed: {:?}\nstderr:\n{}", out.status, out.stderr);
        }
        let out = kcat_read_all(&addr, &topic, "%k:%s\n")?;
        let got: Vec<&str> = out.stdout.lines().collect();
        ensure_eq!(got, lines, "kcat consumed lines (stderr: {})", out.stderr);

        let out = kcat(&["-b", &addr, "-L"], b"", KCAT_TIMEOUT)?;
        if !out.status.success() {
            bail!("kcat -L failed: {:?}\nstderr:\n{}", out.status, out.stderr);
        }
        if !out.stdout.contains(&format!("topic \"{topic}\"")) {
            bail!("kcat -L does not list {topic}:\n{}", out.stdout);
        }
        Ok(())
    });
}

/// Reads `topic` from the beginning to its end with `kcat -C`, printing each record with `format`.
fn kcat_read_all(addr: &str, topic: &str, format: &str) -> anyhow::Result<KcatOutput> {
    let out = kcat(
        &[
            "-b",
            addr,
            "-C",
            "-t",
            topic,
            "-o",
            "beginning",
            "-e",
            "-f",
            format,
        ],
        b"",
        KCAT_TIMEOUT,
    )?;
    if !out.status.success() {
        bail!("kcat -C failed: {:?}\nstderr:\n{}", out.status, out.stderr);
    }
    Ok(out)
}

#[test]
fn records_from_rdkafka_are_read_by_kcat_and_vice_versa() {
    with_broker(BrokerOptions::new(), |broker| {
        let addr = broker.bootstrap();

        // rdkafka -> kcat
        let topic = topic_name("rd2kcat");
        let records: Vec<TestRecord> = (0..10)
            .map(|i| {
                TestRecord::value(format!("rv{i}"))
                    .key(format!("rk{i}"))
                    .partition(0)
            })
            .collect();
        produce_all(&broker.producer(), &topic, &records)?;
        let out = kcat_read_all(&addr, &topic, "%k=%s@%o\n")?;
        let expected: Vec<String> = (0..10).map(|i| format!("rk{i}=rv{i}@{i}")).collect();
        let got: Vec<&str> = out.stdout.lines().collect();
        ensure_eq!(got, expected, "kcat read (stderr: {})", out.stderr);

        // kcat -> rdkafka
        let topic = topic_name("kcat2rd");
        let input: String = (0..10).map(|i| format!("kk{i}|kv{i}\n")).collect();
        let out = kcat(
            &["-b", &addr, "-P", "-t", &topic, "-p", "0", "-K|"],
            input.as_bytes(),
            KCAT_TIMEOUT,
        )?;
        if !out.status.success() {
            bail!("kcat -P failed: {:?}\nstderr:\n{}", out.status, out.stderr);
        }
        let msgs = read_to_end(&addr, &topic, 0, Offset::Beginning)?;
        ensure_eq!(msgs.len(), 10, "records read by rdkafka");
        for (i, m) in msgs.iter().enumerate() {
            ensure_eq!(m.offset(), i as i64);
            ensure_eq!(m.key(), Some(format!("kk{i}").as_bytes()));
            ensure_eq!(m.payload(), Some(format!("kv{i}").as_bytes()));
        }
        Ok(())
    });
}
