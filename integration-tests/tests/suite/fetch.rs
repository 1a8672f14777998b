//! Fetch semantics: long polls wake up on new data, fetches may start inside a batch, and small
//! fetch limits still make progress.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use causeway_integration_tests::batch::{batch_spans, encode_batch, RawRecord};
use causeway_integration_tests::{
    assign, consume_n, create_topic, ensure_eq, payload_str, produce_all, segment_files,
    topic_name, with_broker, BrokerOptions, TestRecord, CLIENT_TIMEOUT,
};
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::Message;
use rdkafka::Offset;

#[test]
fn long_poll_fetch_wakes_up_when_a_record_arrives() {
    with_broker(BrokerOptions::new(), |broker| {
        let topic = topic_name("longpoll");
        create_topic(broker, &topic, 1, &[])?;
        let producer = broker.producer();
        produce_all(
            &producer,
            &topic,
            &[TestRecord::value("first").partition(0)],
        )?;

        let consumer: BaseConsumer = broker
            .consumer_config()
            .set("fetch.wait.max.ms", "5000")
            .set("fetch.min.bytes", "1")
            .create()?;
        assign(&consumer, &[(&topic, 0, Offset::Offset(1))])?;
        // Let the consumer connect and park a fetch at the end of the log. Nothing may arrive.
        let early = consume_n(&consumer, 1, Duration::from_millis(1000))?;
        ensure_eq!(early.len(), 0, "records before anything was produced");

        let bootstrap = broker.bootstrap();
        let topic2 = topic.clone();
        let sender = std::thread::spawn(move || -> Result<Instant> {
            std::thread::sleep(Duration::from_millis(300));
            let producer: rdkafka::producer::FutureProducer =
                causeway_integration_tests::producer_config(&bootstrap).create()?;
            let sent_at = Instant::now();
            produce_all(
                &producer,
                &topic2,
                &[TestRecord::value("second").partition(0)],
            )?;
            Ok(sent_at)
        });
        let msgs = consume_n(&consumer, 1, Duration::from_secs(10))?;
        let received_at = Instant::now();
        let sent_at = match sender.join() {
            Ok(r) => r?,
            Err(_) => bail!("producer thread panicked"),
        };
        ensure_eq!(msgs.len(), 1, "records received");
        ensure_eq!(payload_str(&msgs[0]), "second");
        ensure_eq!(msgs[0].offset(), 1);
        let latency = received_at.saturating_duration_since(sent_at);
        if latency >= Duration::from_secs(3) {
            bail!(
                "record produced at +0 ms was delivered after {latency:?}: the long poll \
                 (fetch.wait.max.ms=5000) was not woken up by the produce"
            );
        }
        Ok(())
    });
}

#[test]
fn fetch_from_the_middle_of_a_batch_starts_at_the_requested_offset() {
    with_broker(BrokerOptions::new(), |broker| {
        let topic = topic_name("midbatch");
        create_topic(broker, &topic, 1, &[])?;
        // Two batches of 10 records each, sent with the raw client so each is one batch.
        let mut raw = broker.raw()?;
        for b in 0..2 {
            let recs: Vec<RawRecord> = (0..10)
                .map(|i| RawRecord::value(format!("r{}", b * 10 + i)))
                .collect();
            let resp = raw.produce(&topic, 0, -1, encode_batch(&recs, 1_000).freeze())?;
            ensure_eq!(resp.error_code, 0, "produce error");
            ensure_eq!(resp.base_offset, b * 10, "base offset of batch {b}");
        }
        let segs = segment_files(&broker.partition_dir(&topic, 0))?;
        if segs.is_empty() {
            bail!("no segment file for {topic}-0");
        }
        for k in [0i64, 1, 4, 9, 13, 19] {
            let consumer: BaseConsumer = broker.consumer_config().create()?;
            assign(&consumer, &[(&topic, 0, Offset::Offset(k))])?;
            let want = (20 - k) as usize;
            let msgs = consume_n(&consumer, want, CLIENT_TIMEOUT)?;
            ensure_eq!(msgs.len(), want, "records from offset {k}");
            for (j, m) in msgs.iter().enumerate() {
                let o = k + j as i64;
                ensure_eq!(m.offset(), o, "offset when starting at {k}");
                ensure_eq!(payload_str(m), format!("r{o}"), "value at offset {o}");
            }
        }
        Ok(())
    });
}

#[test]
fn fetch_limit_smaller_than_one_batch_still_makes_progress() {
    with_broker(BrokerOptions::new(), |broker| {
        let topic = topic_name("smallfetch");
        create_topic(broker, &topic, 1, &[])?;
        let mut raw = broker.raw()?;
        // Three batches of ~8 KiB each.
        for b in 0..3 {
            let recs: Vec<RawRecord> = (0..8)
                .map(|i| RawRecord::value(format!("b{b}r{i}-{}", "z".repeat(1000))))
                .collect();
            let resp = raw.produce(&topic, 0, 1, encode_batch(&recs, 5_000).freeze())?;
            ensure_eq!(resp.error_code, 0, "produce error");
        }
        // At the protocol level: a 100-byte limit still returns the whole first batch.
        let part = broker.raw()?.fetch(&topic, 0, 0, 100, 0)?;
        ensure_eq!(part.error_code, 0, "fetch error");
        let records = part.records.unwrap_or_default();
        let spans = batch_spans(&records);
        let Some(&(start, len)) = spans.first() else {
            bail!(
                "a fetch with partition_max_bytes=100 returned no complete batch ({} bytes)",
                records.len()
            );
        };
        ensure_eq!(start, 0);
        ensure_eq!(
            i64::from_be_bytes(records[..8].try_into()?),
            0,
            "first batch base offset"
        );
        if len < 8000 {
            bail!("the first batch is only {len} bytes long");
        }
        // Starting in the middle of the second batch returns that batch whole.
        let part = broker.raw()?.fetch(&topic, 0, 11, 100, 0)?;
        let records = part.records.unwrap_or_default();
        if batch_spans(&records).is_empty() {
            bail!("a fetch at offset 11 with a 100-byte limit returned no complete batch");
        }
        ensure_eq!(
            i64::from_be_bytes(records[..8].try_into()?),
            8,
            "batch holding offset 11"
        );

        let consumer: BaseConsumer = broker
            .consumer_config()
            .set("max.partition.fetch.bytes", "1024")
            .set("message.max.bytes", "1000")
            .set("fetch.max.bytes", "1024")
            .create()?;
        assign(&consumer, &[(&topic, 0, Offset::Beginning)])?;
        let msgs = consume_n(&consumer, 24, CLIENT_TIMEOUT)?;
        ensure_eq!(msgs.len(), 24, "records consumed with a 1 KiB fetch limit");
        for (i, m) in msgs.iter().enumerate() {
            ensure_eq!(m.offset(), i as i64);
            let want = format!("b{}r{}-", i / 8, i % 8);
            if !payload_str(m).starts_with(&want) {
                bail!("record {i} does not start with {want}");
            }
        }
        Ok(())
    });
}

/// One Fetch goes on across segment boundaries (a consumer of a log of small segments is not
/// answered one segment per round trip): a raw Fetch v12 from offset 0 with room for everything
/// returns every batch of a partition spread over several segments, as whole batches.
#[test]
fn one_fetch_returns_batches_from_several_segments() {
    let options = BrokerOptions::new().flag("--log-segment-bytes-min", 4096);
    with_broker(options, |broker| {
        let topic = topic_name("segments");
        create_topic(broker, &topic, 1, &[("segment.bytes", "4096")])?;
        let mut raw = broker.raw()?;
        let pad = "p".repeat(500);
        for i in 0..40 {
            let record = RawRecord::value(format!("{i:03}-{pad}").into_bytes());
            let batch = encode_batch(&[record], causeway_integration_tests::now_ms()).freeze();
            ensure_eq!(
                raw.produce(&topic, 0, 1, batch)?.error_code,
                0,
                "produce {i}"
            );
        }
        let segments = segment_files(&broker.partition_dir(&topic, 0))?.len();
        if segments < 3 {
            bail!("40 batches of about 570 bytes in 4 KiB segments made {segments} segment(s)");
        }
        let fetched = raw.fetch(&topic, 0, 0, 1 << 20, 100)?;
        let records = fetched.records.unwrap_or_default();
        let spans = batch_spans(&records);
        ensure_eq!(
            spans.len(),
            40,
            "batches in one Fetch over {segments} segments"
        );
        let covered: usize = spans.iter().map(|(_, len)| len).sum();
        ensure_eq!(
            covered,
            records.len(),
            "the response holds whole batches only"
        );
        Ok(())
    });
}
