//! Transactional producers and isolation-level readers through librdkafka, shared by the
//! single-region and the cross-region transaction tests.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use crate::{payload_str, BrokerProcess};

/// How long a transactional call or a read to the end of a partition may take.
pub const TIMEOUT: Duration = Duration::from_secs(15);

/// A librdkafka producer that runs transactions.
pub type TxnProducer = ThreadedProducer<DefaultProducerContext>;

/// A producer bound to `transactional.id` `id`, its transactions timing out after `timeout_ms`.
pub fn transactional_producer(
    broker: &BrokerProcess,
    id: &str,
    timeout_ms: u32,
) -> Result<TxnProducer> {
    let producer: TxnProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("transactional.id", id)
        .set("transaction.timeout.ms", timeout_ms.to_string())
        .set("linger.ms", "5")
        .set("log_level", "6")
        .create()?;
    producer.init_transactions(TIMEOUT)?;
    Ok(producer)
}

/// Queues `value` for partition 0 of `topic`.
pub fn send(producer: &TxnProducer, topic: &str, value: &str) -> Result<()> {
    producer
        .send(BaseRecord::<(), str>::to(topic).partition(0).payload(value))
        .map_err(|(e, _)| anyhow::anyhow!("enqueue failed: {e}"))
}

/// Reads partition 0 from the beginning to its end at `isolation` (`read_committed` ends at the
/// last stable offset).
pub fn read_values(broker: &BrokerProcess, topic: &str, isolation: &str) -> Result<Vec<String>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", format!("reader-{isolation}"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", "100")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, 0, Offset::Beginning)?;
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + TIMEOUT;
    let mut values = Vec::new();
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => values.push(payload_str(&m.detach())),
            Some(Err(KafkaError::PartitionEOF(_))) => return Ok(values),
            Some(Err(e)) => bail!("consumer error: {e}"),
        }
    }
    bail!(
        "no end of partition within {TIMEOUT:?} after {} records",
        values.len()
    )
}
