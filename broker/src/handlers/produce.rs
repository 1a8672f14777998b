//! Produce: validate each partition's record batches (magic 2, lengths, CRC, size), append them
//! byte-for-byte with offsets assigned and causal metadata stamped, then answer according to
//! `acks`: 0 never, 1 once written to the page cache, all (-1) once fsynced (group commit).

use std::sync::Arc;

use bytes::Bytes;
use causeway_storage::{
    split_batches, AppendResult, BatchError, BatchHeader, SequenceError, StorageError,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, ResponseKind};
use kafka_protocol::ResponseError;

use super::{topic_error_code, topic_name};
use crate::broker::Broker;
use crate::clock::now_ms;
use crate::metrics;
use crate::topics::{PartitionHandle, Topic};
use crate::transactions::TxnState;

/// A partition whose batches were appended and, with acks=all, still need an fsync.
struct Pending {
    partition: Arc<PartitionHandle>,
    end_offset: i64,
    response: usize,
    topic: usize,
}

/// Appends every partition's batches; `None` when acks=0.
pub async fn handle(broker: &Arc<Broker>, request: ProduceRequest) -> Option<ResponseKind> {
    let acks = request.acks;
    let transactional_id = request
        .transactional_id
        .as_ref()
        .map(|id| id.as_str().to_string());
    let mut responses = Vec::with_capacity(request.topic_data.len());
    let mut to_sync = Vec::new();
    for (topic_index, topic_data) in request.topic_data.into_iter().enumerate() {
        let name = topic_data.name.as_str().to_string();
        let topic = find_topic(broker, &name);
        let mut partitions = Vec::with_capacity(topic_data.partition_data.len());
        for data in topic_data.partition_data {
            let outcome = if !(-1..=1).contains(&acks) {
                Err(ResponseError::InvalidRequiredAcks.code())
            } else {
                match &topic {
                    Ok(topic) => append_partition(
                        broker,
                        topic,
                        data.index,
                        data.records,
                        transactional_id.as_deref(),
                    ),
                    Err(code) => Err(*code),
                }
            };
            let response = match outcome {
                Ok((partition, result)) => {
                    if acks == -1 {
                        to_sync.push(Pending {
                            partition,
                            end_offset: result.last_offset + 1,
                            response: partitions.len(),
                            topic: topic_index,
                        });
                    }
                    PartitionProduceResponse::default()
                        .with_index(data.index)
                        .with_base_offset(result.base_offset)
                        .with_log_append_time_ms(result.log_append_time_ms)
                        .with_log_start_offset(result.log_start_offset)
                }
                Err(code) => {
                    metrics::request_error(ApiKey::Produce, code);
                    PartitionProduceResponse::default()
                        .with_index(data.index)
                        .with_error_code(code)
                        .with_base_offset(-1)
                }
            };
            partitions.push(response);
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic_name(&name))
                .with_partition_responses(partitions),
        );
    }
    for failed in sync_all(to_sync).await {
        let response = &mut responses[failed.topic].partition_responses[failed.response];
        response.error_code = ResponseError::KafkaStorageError.code();
        metrics::request_error(ApiKey::Produce, response.error_code);
    }
    if acks == 0 {
        return None;
    }
    Some(ResponseKind::Produce(
        ProduceResponse::default().with_responses(responses),
    ))
}

fn find_topic(broker: &Broker, name: &str) -> Result<Arc<Topic>, i16> {
    match broker.topics.get(name) {
        Some(topic) => Ok(topic),
        None if broker.options.auto_create_topics => broker
            .topics
            .get_or_create(name, broker.default_partitions())
            .map_err(|e| topic_error_code(&e)),
        None => Err(ResponseError::UnknownTopicOrPartition.code()),
    }
}

/// Validates and appends one partition's batches; the result describes the first batch.
fn append_partition(
    broker: &Broker,
    topic: &Topic,
    index: i32,
    records: Option<Bytes>,
    transactional_id: Option<&str>,
) -> Result<(Arc<PartitionHandle>, AppendResult), i16> {
    let partition = topic
        .partition(index)
        .ok_or(ResponseError::UnknownTopicOrPartition.code())?;
    let records = records.ok_or(ResponseError::CorruptMessage.code())?;
    let max_batch_bytes = topic.log_config().max_message_bytes as usize;
    let batches = split_batches(&records, max_batch_bytes).map_err(|e| batch_error_code(&e))?;
    let now = now_ms();
    let mut first: Option<AppendResult> = None;
    let mut last: Option<AppendResult> = None;
    let mut record_count = 0u64;
    for range in batches {
        let mut batch = records[range].to_vec();
        if let Ok(header) = BatchHeader::parse(&batch) {
            record_count += u64::try_from(header.records_count).unwrap_or(0);
            if header.is_transactional() {
                check_in_transaction(broker, transactional_id, &header, &topic.name, index)?;
            }
        }
        let appended = partition
            .log
            .append(&mut batch, now, |previous| broker.stamp_local(previous))
            .map_err(|e| storage_error_code(&e))?;
        if appended.duplicate {
            tracing::debug!(topic = %topic.name, partition = index, base_offset = appended.base_offset, "duplicate batch from an idempotent producer");
            metrics::duplicate_batch(&topic.name);
        }
        first.get_or_insert(appended);
        last = Some(appended);
    }
    partition.appended.notify_waiters();
    metrics::produced(&topic.name, record_count, records.len() as u64);
    match (first, last) {
        (Some(first), Some(last)) => Ok((
            partition,
            AppendResult {
                last_offset: last.last_offset,
                ..first
            },
        )),
        _ => Err(ResponseError::CorruptMessage.code()),
    }
}

/// A transactional batch is accepted only from the transactional id's current producer and
/// epoch, for a partition added to its ongoing transaction (so a fenced zombie cannot write).
fn check_in_transaction(
    broker: &Broker,
    transactional_id: Option<&str>,
    header: &BatchHeader,
    topic: &str,
    partition: i32,
) -> Result<(), i16> {
    let record = transactional_id
        .and_then(|id| broker.transactions.get(id))
        .ok_or(ResponseError::InvalidProducerIdMapping.code())?;
    record
        .check_producer(header.producer_id, header.producer_epoch)
        .map_err(|e| match e {
            // Produce answers a fenced epoch as Kafka does since KIP-588.
            ResponseError::ProducerFenced => ResponseError::InvalidProducerEpoch.code(),
            other => other.code(),
        })?;
    let added = record.state == TxnState::Ongoing
        && record.partitions.contains(&(topic.to_string(), partition));
    if added {
        Ok(())
    } else {
        Err(ResponseError::InvalidTxnState.code())
    }
}

/// fsyncs every pending partition concurrently; returns the ones whose fsync failed.
async fn sync_all(pending: Vec<Pending>) -> Vec<Pending> {
    let tasks: Vec<_> = pending
        .into_iter()
        .map(|p| {
            let partition = p.partition.clone();
            let end = p.end_offset;
            let task = tokio::task::spawn_blocking(move || partition.log.sync_through(end));
            (p, task)
        })
        .collect();
    let mut failed = Vec::new();
    for (pending, task) in tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::error!(topic = %pending.partition.topic, partition = pending.partition.index, %error, "fsync failed");
                failed.push(pending);
            }
            Err(error) => {
                tracing::error!(%error, "fsync task failed");
                failed.push(pending);
            }
        }
    }
    failed
}

fn batch_error_code(error: &BatchError) -> i16 {
    match error {
        BatchError::UnsupportedMagic(_) => ResponseError::UnsupportedForMessageFormat,
        BatchError::Corrupt(_) => ResponseError::CorruptMessage,
        BatchError::TooLarge { .. } => ResponseError::MessageTooLarge,
    }
    .code()
}

fn storage_error_code(error: &StorageError) -> i16 {
    match error {
        StorageError::Batch(batch) => batch_error_code(batch),
        StorageError::Sequence(SequenceError::OutOfOrder { .. }) => {
            ResponseError::OutOfOrderSequenceNumber.code()
        }
        StorageError::Sequence(SequenceError::InvalidEpoch { .. }) => {
            ResponseError::InvalidProducerEpoch.code()
        }
        _ => ResponseError::KafkaStorageError.code(),
    }
}
