//! ListOffsets (earliest, latest, by timestamp) and DeleteRecords.

use anyhow::{bail, Context, Result};
use causeway_integration_tests::batch::{encode_batch, RawRecord};
use causeway_integration_tests::{
    block_on, create_topic, ensure_eq, produce_all, produce_values, read_partition, topic_name,
    with_broker, BrokerOptions, TestRecord, CLIENT_TIMEOUT,
};
use rdkafka::admin::AdminOptions;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

#[test]
fn watermarks_report_earliest_and_latest_offsets() {
    with_broker(BrokerOptions::new(), |broker| {
        let topic = topic_name("wm");
        create_topic(broker, &topic, 2, &[])?;
        let consumer: BaseConsumer = broker.consumer_config().create()?;
        ensure_eq!(
            consumer.fetch_watermarks(&topic, 0, CLIENT_TIMEOUT)?,
            (0, 0),
            "empty partition"
        );
        let values: Vec<String> = (0..7).map(|i| format!("v{i}")).collect();
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        produce_values(&broker.producer(), &topic, 0, &refs)?;
        produce_values(&broker.producer(), &topic, 1, &refs[..3])?;
        ensure_eq!(
            consumer.fetch_watermarks(&topic, 0, CLIENT_TIMEOUT)?,
            (0, 7)
        );
        ensure_eq!(
            consumer.fetch_watermarks(&topic, 1, CLIENT_TIMEOUT)?,
            (0, 3)
        );
        Ok(())
    });
}

fn offset_for_time(consumer: &BaseConsumer, topic: &str, ts: i64) -> Result<Offset> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(ts))?;
    let res = consumer.offsets_for_times(tpl, CLIENT_TIMEOUT)?;
    let elem = res
        .find_partition(topic, 0)
        .context("partition missing from offsets_for_times result")?;
    elem.error()
        .with_context(|| format!("offsets_for_times({ts})"))?;
    Ok(elem.offset())
}

#[test]
fn offsets_for_times_returns_first_offset_at_or_after_timestamp() {
    with_broker(BrokerOptions::new(), |broker| {
        let topic = topic_name("times");
        create_topic(broker, &topic, 1, &[])?;
        let producer = broker.producer();
        // Offsets 0..=4: timestamps 1000..=5000, one batch each (each produce waits for its ack).
        for i in 0..5i64 {
            let d = produce_all(
                &producer,
                &topic,
                &[TestRecord::value(format!("t{i}"))
                    .partition(0)
                    .timestamp((i + 1) * 1000)],
            )?;
            ensure_eq!(d[0].1, i, "offset of record {i}");
        }
        // Offsets 5..=7: one batch holding timestamps 6000, 7000, 8000.
        let recs: Vec<RawRecord> = (0..3)
            .map(|i| RawRecord {
                value: Some(format!("t{}", i + 5).into_bytes()),
                timestamp_delta: i * 1000,
                ..Default::default()
            })
            .collect();
        let resp = broker
            .raw()?
            .produce(&topic, 0, -1, encode_batch(&recs, 6000).freeze())?;
        ensure_eq!(resp.error_code, 0, "raw produce");
        ensure_eq!(resp.base_offset, 5, "raw produce base offset");

        let consumer: BaseConsumer = broker.consumer_config().create()?;
        let cases = [
            (0, 0),
            (999, 0),
            (1000, 0),
            (1001, 1),
            (2500, 2),
            (5000, 4),
            (5001, 5),
            (6000, 5),
            (6500, 6),
            (7000, 6),
            (7999, 7),
            (8000, 7),
        ];
        for (ts, want) in cases {
            ensure_eq!(
                offset_for_time(&consumer, &topic, ts)?,
                Offset::Offset(want),
                "offsets_for_times({ts})"
            );
        }
        let past = offset_for_time(&consumer, &topic, 8001)?;
        if !matches!(past, Offset::End | Offset::Offset(-1) | Offset::Offset(8)) {
            bail!("offsets_for_times past the last timestamp returned {past:?}, expected -1/end");
        }
        // The records really carry those timestamps.
        let msgs = read_partition(&broker.bootstrap(), &topic, 0, Offset::Beginning, 8)?;
        for (i, m) in msgs.iter().enumerate() {
            ensure_eq!(
                m.timestamp().to_millis(),
                Some((i as i64 + 1) * 1000),
                "timestamp at offset {i}"
            );
        }
        Ok(())
    });
}

#[test]
fn delete_records_moves_the_log_start_offset() {
    with_broker(BrokerOptions::new(), |broker| {
        let topic = topic_name("delrec");
        create_topic(broker, &topic, 1, &[])?;
        let producer = broker.producer();
        // Several batches, so the deletion point falls inside and between batches.
        for chunk in 0..5 {
            let vals: Vec<String> = (0..4).map(|i| format!("v{}", chunk * 4 + i)).collect();
            let refs: Vec<&str> = vals.iter().map(String::as_str).collect();
            produce_values(&producer, &topic, 0, &refs)?;
        }
        let consumer: BaseConsumer = broker.consumer_config().create()?;
        ensure_eq!(
            consumer.fetch_watermarks(&topic, 0, CLIENT_TIMEOUT)?,
            (0, 20)
        );

        let admin = broker.admin();
        let opts = AdminOptions::new().operation_timeout(Some(CLIENT_TIMEOUT));
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, Offset::Offset(6))?;
        let res = block_on(admin.delete_records(&tpl, &opts))?;
        let elem = res
            .find_partition(&topic, 0)
            .context("partition missing from delete_records result")?;
        elem.error().context("delete_records partition error")?;
        ensure_eq!(elem.offset(), Offset::Offset(6), "reported low watermark");

        ensure_eq!(
            consumer.fetch_watermarks(&topic, 0, CLIENT_TIMEOUT)?,
            (6, 20),
            "watermarks after DeleteRecords"
        );
        // Reading from the beginning starts at the new log start offset.
        let msgs = read_partition(&broker.bootstrap(), &topic, 0, Offset::Beginning, 14)?;
        ensure_eq!(msgs[0].offset(), 6, "first offset readable");
        // Fetching a deleted offset is out of range; the consumer resets to the earliest offset.
        let msgs = read_partition(&broker.bootstrap(), &topic, 0, Offset::Offset(2), 14)?;
        ensure_eq!(
            msgs[0].offset(),
            6,
            "offset after reset from a deleted offset"
        );
        let part = broker.raw()?.fetch(&topic, 0, 2, 1 << 20, 0)?;
        ensure_eq!(
            part.error_code,
            1,
            "raw fetch of a deleted offset: OFFSET_OUT_OF_RANGE"
        );

        // Deleting past the high watermark is refused (OFFSET_OUT_OF_RANGE).
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, Offset::Offset(21))?;
        let res = block_on(admin.delete_records(&tpl, &opts));
        let refused = match &res {
            Err(_) => true,
            Ok(r) => r
                .find_partition(&topic, 0)
                .is_none_or(|e| e.error().is_err()),
        };
        if !refused {
            bail!("DeleteRecords beyond the high watermark succeeded: {res:?}");
        }
        ensure_eq!(
            consumer.fetch_watermarks(&topic, 0, CLIENT_TIMEOUT)?,
            (6, 20)
        );

        // Producing continues at the old end.
        let offs = produce_values(&producer, &topic, 0, &["after"])?;
        ensure_eq!(offs, vec![20]);
        Ok(())
    });
}
