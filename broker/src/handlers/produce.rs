//! Produce: validate each partition's record batches (magic 2, lengths, CRC, size), append them
//! byte-for-byte (or recompressed to the topic's `compression.type`) with offsets assigned and
//! causal metadata stamped, then answer according to
//! `acks`: 0 never, 1 once written to the page cache, all (-1) once fsynced (group commit).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use causeway_storage::{
    split_batches, AppendResult, BatchError, BatchHeader, SequenceError, StorageError,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, ResponseKind};
use kafka_protocol::ResponseError;

use super::recompress::recompressed;
use super::record_checks::{check_produced, Refusal};
use super::{changing_topics, str_bytes, topic_error_code, topic_name};
use crate::broker::Broker;
use crate::metrics;
use crate::topics::{PartitionHandle, Topic, MIN_REGIONS_CONFIG};
use crate::transactions::TxnState;
use crate::wall_clock::now_ms;

/// A partition whose batches were appended and, with acks=all, still need an fsync (and, with
/// `causeway.min.regions` above 1, other regions to hold them).
struct Pending {
    partition: Arc<PartitionHandle>,
    own_seq: u64,
    min_regions: usize,
    response: usize,
    topic: usize,
}

/// Appends every partition's batches; `None` when acks=0. The appends (writes to the page
/// cache) run on the runtime worker: handing each request to another thread tripled the
/// broker's CPU and doubled p99 latency at 20,000 small requests a second (`docs/benchmarks.md`,
/// "Hardening re-measure"); the fsync of acks=all runs in the fsync lane.
pub async fn handle(broker: &Arc<Broker>, request: ProduceRequest) -> Option<ResponseKind> {
    let acks = request.acks;
    let request_timeout_ms = request.timeout_ms;
    let created = create_missing_topics(broker, &request).await;
    let (mut responses, to_sync) = append_all(broker, request, &created);
    if acks != -1 {
        // acks=all fsyncs below; others wait for the syncer, sooner if a peer waits.
        broker.replication.own_batches_appended();
    }
    let timeout = Duration::from_millis(u64::try_from(request_timeout_ms).unwrap_or(0));
    for (failed, code) in sync_all(broker, to_sync, timeout).await {
        let response = &mut responses[failed.topic].partition_responses[failed.response];
        response.error_code = code;
        metrics::request_error(ApiKey::Produce, code);
    }
    if acks == 0 {
        return None;
    }
    Some(ResponseKind::Produce(
        ProduceResponse::default().with_responses(responses),
    ))
}

/// Validates and appends every partition's batches: the responses, and with acks=all the
/// partitions that still need an fsync.
fn append_all(
    broker: &Broker,
    request: ProduceRequest,
    created: &CreatedTopics,
) -> (Vec<TopicProduceResponse>, Vec<Pending>) {
    let acks = request.acks;
    let transactional_id = request
        .transactional_id
        .as_ref()
        .map(|id| id.as_str().to_string());
    let mut responses = Vec::with_capacity(request.topic_data.len());
    let mut to_sync = Vec::new();
    for (topic_index, topic_data) in request.topic_data.into_iter().enumerate() {
        let name = topic_data.name.as_str().to_string();
        let topic = find_topic(broker, &name, created);
        let mut partitions = Vec::with_capacity(topic_data.partition_data.len());
        for data in topic_data.partition_data {
            let outcome = if !(-1..=1).contains(&acks) {
                Err(ResponseError::InvalidRequiredAcks.code().into())
            } else {
                match &topic {
                    Ok(topic) => append_partition(
                        broker,
                        topic,
                        data.index,
                        data.records,
                        transactional_id.as_deref(),
                    )
                    .map(|appended| (topic, appended)),
                    Err(code) => Err((*code).into()),
                }
            };
            let response = match outcome {
                Ok((topic, (partition, result, own_seq))) => {
                    if acks == -1 {
                        to_sync.push(Pending {
                            partition,
                            own_seq,
                            min_regions: min_regions(topic),
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
                Err(refusal) => {
                    metrics::request_error(ApiKey::Produce, refusal.code);
                    PartitionProduceResponse::default()
                        .with_index(data.index)
                        .with_error_code(refusal.code)
                        .with_base_offset(-1)
                        .with_record_errors(refusal.record_errors)
                        .with_error_message(refusal.message)
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
    (responses, to_sync)
}

/// Topics a request named that this region did not host, created (or refused, with the error
/// code) by auto-creation.
type CreatedTopics = HashMap<String, Result<Arc<Topic>, i16>>;

/// Creates the topics `request` names that this region does not host, when auto-creation is on,
/// in the metadata lane (a creation writes RocksDB and fsyncs directories).
async fn create_missing_topics(broker: &Arc<Broker>, request: &ProduceRequest) -> CreatedTopics {
    if !broker.options.auto_create_topics {
        return CreatedTopics::new();
    }
    let missing: Vec<String> = request
        .topic_data
        .iter()
        .map(|t| t.name.as_str())
        .filter(|name| broker.topics.get(name).is_none())
        .map(str::to_string)
        .collect();
    if missing.is_empty() {
        return CreatedTopics::new();
    }
    changing_topics(broker, move |broker| {
        let allowance = broker.topics.allowance();
        missing
            .into_iter()
            .map(|name| {
                let topic = broker
                    .topics
                    .create_within(&name, broker.default_partitions(), &allowance)
                    .map_err(|e| topic_error_code(&e));
                (name, topic)
            })
            .collect()
    })
    .await
}

fn find_topic(broker: &Broker, name: &str, created: &CreatedTopics) -> Result<Arc<Topic>, i16> {
    match broker.topics.get(name) {
        Some(topic) => Ok(topic),
        None => created
            .get(name)
            .cloned()
            .unwrap_or(Err(ResponseError::UnknownTopicOrPartition.code())),
    }
}

/// `causeway.min.regions` of a topic (1 when unset or unreadable).
fn min_regions(topic: &Topic) -> usize {
    topic
        .overrides()
        .get(MIN_REGIONS_CONFIG)
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// Validates and appends one partition's batch, with this region's own sequence in the
/// partition after it.
fn append_partition(
    broker: &Broker,
    topic: &Topic,
    index: i32,
    records: Option<Bytes>,
    transactional_id: Option<&str>,
) -> Result<(Arc<PartitionHandle>, AppendResult, u64), Refusal> {
    if crate::positions::is_internal(&topic.name) {
        // Written only by the broker: a client's record there could move other groups.
        return Err(ResponseError::InvalidTopicException.code().into());
    }
    let partition = topic
        .partition(index)
        .ok_or(ResponseError::UnknownTopicOrPartition.code())?;
    let records = records.ok_or(ResponseError::CorruptMessage.code())?;
    let config = topic.log_config();
    let max_batch_bytes = config.max_message_bytes as usize;
    let batches = split_batches(&records, max_batch_bytes).map_err(|e| batch_error_code(&e))?;
    let [range] = batches.as_slice() else {
        return Err(more_than_one_batch(batches.len()));
    };
    let batch = records.slice(range.clone());
    let header = BatchHeader::parse(&batch).map_err(|e| batch_error_code(&e))?;
    let now = now_ms();
    check_produced(&header, &batch, &config, now, &topic.name, index)?;
    if header.is_transactional() {
        check_in_transaction(broker, transactional_id, &header, &topic.name, index)?;
    } else if header.producer_id >= 0 {
        check_issued(broker, header.producer_id)?;
    }
    let recompressed = recompressed(&header, &batch, &config)?;
    if recompressed.is_some() {
        metrics::recompressed_batch(&topic.name);
    }
    let local = partition
        .append_local(recompressed.as_deref().unwrap_or(&batch), now)
        .map_err(|e| storage_error_code(&e))?;
    let appended = local.result;
    if appended.duplicate {
        tracing::debug!(topic = %topic.name, partition = index, base_offset = appended.base_offset, "duplicate batch from an idempotent producer");
        metrics::duplicate_batch(&topic.name);
    }
    let record_count = u64::try_from(header.records_count).unwrap_or(0);
    metrics::produced(&topic.name, record_count, records.len() as u64);
    Ok((partition, appended, local.own_seq))
}

/// Produce v3 and later carry exactly one batch per partition (Kafka's `ProduceRequest`
/// validation): with several, an error in a later one would leave the earlier ones appended
/// behind a refusal the producer retries.
fn more_than_one_batch(count: usize) -> Refusal {
    Refusal {
        code: ResponseError::InvalidRecord.code(),
        message: Some(str_bytes(format!(
            "Produce requests with version 3 and above must contain exactly one record batch per partition; this one holds {count}"
        ))),
        ..Refusal::default()
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

/// An idempotent batch must carry a producer id this region issued; any other could fence or
/// shadow a real producer's sequence state.
fn check_issued(broker: &Broker, producer_id: i64) -> Result<(), i16> {
    match broker
        .producer_ids
        .was_issued(producer_id, broker.topics.catalog())
    {
        Ok(true) => Ok(()),
        Ok(false) => Err(ResponseError::UnknownProducerId.code()),
        Err(error) => {
            tracing::error!(%error, "reading the producer id counter");
            Err(ResponseError::KafkaStorageError.code())
        }
    }
}

/// fsyncs every pending partition concurrently, then waits (up to `timeout`) for partitions
/// whose topic sets `causeway.min.regions` until enough regions hold the batches; returns the
/// partitions that failed, with their error code.
async fn sync_all(
    broker: &Arc<Broker>,
    pending: Vec<Pending>,
    timeout: Duration,
) -> Vec<(Pending, i16)> {
    let syncs = pending.iter().map(|p| {
        let partition = p.partition.clone();
        let broker = broker.clone();
        crate::blocking::FSYNC.run(move || partition.sync(&broker.replication))
    });
    let results = futures_util::future::join_all(syncs).await;
    let mut failed = Vec::new();
    let mut synced = Vec::new();
    for (pending, result) in pending.into_iter().zip(results) {
        match result {
            Ok(Ok(())) => synced.push(pending),
            Ok(Err(error)) => {
                tracing::error!(topic = %pending.partition.topic(), partition = pending.partition.index(), %error, "fsync failed");
                failed.push((pending, ResponseError::KafkaStorageError.code()));
            }
            Err(error) => {
                tracing::error!(%error, "fsync task failed");
                failed.push((pending, ResponseError::KafkaStorageError.code()));
            }
        }
    }
    let deadline = tokio::time::Instant::now() + timeout;
    for pending in synced {
        if pending.min_regions > 1 && !wait_for_regions(broker, &pending, deadline).await {
            failed.push((pending, ResponseError::NotEnoughReplicasAfterAppend.code()));
        }
    }
    failed
}

/// Waits until `causeway.min.regions` regions durably hold this region's batches up to the
/// pending sequence; false at the deadline (the batches stay appended, as in Kafka).
async fn wait_for_regions(
    broker: &Broker,
    pending: &Pending,
    deadline: tokio::time::Instant,
) -> bool {
    let mut peers = broker.replication.watch_peers();
    loop {
        let holding = pending
            .partition
            .regions_holding(&broker.replication, pending.own_seq);
        if holding >= pending.min_regions {
            return true;
        }
        if tokio::time::timeout_at(deadline, peers.changed())
            .await
            .map_or(true, |changed| changed.is_err())
        {
            return false;
        }
    }
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
