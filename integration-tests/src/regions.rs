//! Reading regions of a mesh back ([`causeway_testkit::mesh`] starts them): record counts and
//! whole partitions, to compare regions after they converged.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::Offset;

pub use causeway_testkit::mesh::*;

use crate::proxy::CuttingProxy;
use crate::{assign, consumer_config, BrokerProcess};

/// Routes region `from`'s connections to region `to` through a new [`CuttingProxy`], so the test
/// can cut that one direction of the link and restore it.
pub fn through_proxy(plan: MeshPlan, from: usize, to: usize) -> Result<(MeshPlan, CuttingProxy)> {
    let proxy = CuttingProxy::bind()?;
    proxy.forward_to(plan.kafka_addr(to))?;
    let addr = proxy.addr();
    Ok((plan.route(from, to, addr), proxy))
}

/// Number of records in each of a topic's partitions (high watermark minus low watermark).
pub fn partition_counts(broker: &BrokerProcess, topic: &str, partitions: i32) -> Result<Vec<i64>> {
    let consumer: BaseConsumer = consumer_config(&broker.bootstrap()).create()?;
    (0..partitions)
        .map(|p| {
            let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(5))?;
            Ok(high - low)
        })
        .collect()
}

/// Reads every record of one partition from the beginning up to the high watermark read first
/// (so records arriving meanwhile may be missed, never waited for).
pub fn read_all(broker: &BrokerProcess, topic: &str, partition: i32) -> Result<Vec<OwnedMessage>> {
    let consumer: BaseConsumer = consumer_config(&broker.bootstrap())
        .set("enable.partition.eof", "true")
        .create()?;
    let (low, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
    let mut out = Vec::new();
    if high <= low {
        return Ok(out);
    }
    assign(&consumer, &[(topic, partition, Offset::Beginning)])?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while out
        .last()
        .is_none_or(|m: &OwnedMessage| m.offset() < high - 1)
    {
        if Instant::now() > deadline {
            bail!(
                "{topic}-{partition}: read {} of {} records within 30 s",
                out.len(),
                high - low
            );
        }
        match consumer.poll(Duration::from_millis(100)) {
            None | Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => {}
            Some(Ok(m)) => out.push(m.detach()),
            Some(Err(e)) => bail!(
                "{topic}-{partition}: consumer error after {} records: {e}",
                out.len()
            ),
        }
    }
    Ok(out)
}

/// Polls a partition of one region until a record with payload `payload` shows up; returns its
/// offset.
pub fn wait_for_payload(
    broker: &BrokerProcess,
    topic: &str,
    partition: i32,
    payload: &str,
    timeout: Duration,
) -> Result<i64> {
    let consumer: BaseConsumer = consumer_config(&broker.bootstrap()).create()?;
    assign(&consumer, &[(topic, partition, Offset::Beginning)])?;
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            None | Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => {}
            Some(Ok(m)) => {
                if m.payload() == Some(payload.as_bytes()) {
                    return Ok(m.offset());
                }
            }
            Some(Err(e)) => bail!("{topic}-{partition}: consumer error: {e}"),
        }
    }
    Err(anyhow!(
        "{payload:?} did not show up in {topic}-{partition} at {} within {timeout:?}",
        broker.bootstrap()
    ))
}
