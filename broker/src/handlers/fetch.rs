//! Fetch: whole record batches straight from the segment files. Long-polls until `min_bytes`
//! are available or `max_wait_ms` passes, waking on appends to any requested partition.
//! Honors `max_bytes` and each partition's max bytes, except that the first partition with data
//! always returns at least one whole batch so a consumer can never get stuck behind a large one.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use causeway_storage::{whole_batches, BatchHeader, StorageError};
use futures_util::future::select_all;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, EpochEndOffset, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse, ProducerId};
use kafka_protocol::ResponseError;
use tokio::sync::futures::Notified;
use tokio::time::Instant;

use super::leader_epoch::check_current_epoch;
use super::topic_name;
use crate::broker::Broker;
use crate::metrics;
use crate::topics::PartitionHandle;

/// Longest a fetch may wait, whatever the client asks: bounds how long a connection is held.
const FETCH_WAIT_MAX: Duration = Duration::from_secs(30);

/// Isolation level value of `read_committed`.
const READ_COMMITTED: i8 = 1;

/// One requested partition.
struct Target {
    topic: String,
    index: i32,
    partition: Option<Arc<PartitionHandle>>,
    fetch_offset: i64,
    partition_max_bytes: usize,
    /// The partition's leader epoch as the client knows it (v9+; -1 when not given).
    current_leader_epoch: i32,
    /// The leader epoch of the last batch the client read (v12+; -1 when not given).
    last_fetched_epoch: i32,
}

/// Most record bytes one Fetch response carries, whatever the client asks (Kafka's broker-side
/// `fetch.max.bytes` default, 55 MiB): a client asking for 2 GiB cannot make the broker build
/// a response that large. At least one whole batch is still returned.
const FETCH_RESPONSE_MAX_BYTES: usize = 57_671_680;

/// Serves a fetch, waiting for data as the request allows.
pub async fn handle(broker: &Arc<Broker>, request: FetchRequest) -> FetchResponse {
    let wait =
        Duration::from_millis(u64::try_from(request.max_wait_ms).unwrap_or(0)).min(FETCH_WAIT_MAX);
    let deadline = Instant::now() + wait;
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0);
    let max_bytes = usize::try_from(request.max_bytes)
        .unwrap_or(0)
        .min(FETCH_RESPONSE_MAX_BYTES);
    let read_committed = request.isolation_level == READ_COMMITTED;
    let topics: Arc<Vec<(String, Vec<Target>)>> = request
        .topics
        .iter()
        .map(|t| {
            let name = t.topic.as_str().to_string();
            let topic = broker.topics.get(&name);
            let targets = t
                .partitions
                .iter()
                .map(|p| Target {
                    topic: name.clone(),
                    index: p.partition,
                    partition: topic
                        .as_ref()
                        .and_then(|topic| topic.partition(p.partition)),
                    fetch_offset: p.fetch_offset,
                    partition_max_bytes: usize::try_from(p.partition_max_bytes).unwrap_or(0),
                    current_leader_epoch: p.current_leader_epoch,
                    last_fetched_epoch: p.last_fetched_epoch,
                })
                .collect();
            (name, targets)
        })
        .collect::<Vec<_>>()
        .into();
    loop {
        let mut wakeups: Vec<Pin<Box<Notified<'_>>>> = topics
            .iter()
            .flat_map(|(_, targets)| targets.iter())
            .filter_map(|t| t.partition.as_ref())
            .map(|p| Box::pin(p.appended().notified()))
            .collect();
        for wakeup in &mut wakeups {
            wakeup.as_mut().enable();
        }
        let (response, bytes, errors) =
            read_where_it_cannot_stall(&topics, max_bytes, read_committed).await;
        let done = bytes >= min_bytes || errors || wakeups.is_empty() || Instant::now() >= deadline;
        if done {
            return counted(response);
        }
        if tokio::time::timeout_at(deadline, select_all(wakeups))
            .await
            .is_err()
        {
            let (response, _, _) =
                read_where_it_cannot_stall(&topics, max_bytes, read_committed).await;
            return counted(response);
        }
    }
}

/// [`read_all`], in the blocking lane for reads when any partition is read below its active
/// segment: a read of old data may wait on the disk, and must not hold a runtime worker (and
/// every connection it serves) meanwhile. Reads of the active segment (consumers at the tail)
/// come from the page cache and stay on the worker: handing each of them to another thread
/// tripled the broker's CPU and doubled p99 latency at 20,000 small fetches a second
/// (`docs/benchmarks.md`, "Hardening re-measure").
async fn read_where_it_cannot_stall(
    topics: &Arc<Vec<(String, Vec<Target>)>>,
    max_bytes: usize,
    read_committed: bool,
) -> (FetchResponse, usize, bool) {
    let cold = topics
        .iter()
        .flat_map(|(_, targets)| targets)
        .any(|target| {
            target
                .partition
                .as_ref()
                .is_some_and(|p| !p.log().in_active_segment(target.fetch_offset))
        });
    if !cold {
        return read_all(topics, max_bytes, read_committed);
    }
    let topics = topics.clone();
    match crate::blocking::READS
        .run(move || read_all(&topics, max_bytes, read_committed))
        .await
    {
        Ok(read) => read,
        Err(error) => {
            tracing::error!(%error, "fetch read task failed");
            let code = ResponseError::UnknownServerError.code();
            metrics::request_error(ApiKey::Fetch, code);
            (FetchResponse::default().with_error_code(code), 0, true)
        }
    }
}

/// Reads every target once; returns the response, the record bytes in it and whether any
/// partition answered an error or a diverging epoch.
fn read_all(
    topics: &[(String, Vec<Target>)],
    max_bytes: usize,
    read_committed: bool,
) -> (FetchResponse, usize, bool) {
    let mut total = 0usize;
    let mut errors = false;
    let mut responses = Vec::with_capacity(topics.len());
    for (name, targets) in topics {
        let mut partitions = Vec::with_capacity(targets.len());
        for target in targets {
            let remaining = max_bytes.saturating_sub(total);
            let data = read_one(target, remaining, total > 0, read_committed);
            if data.error_code != 0 {
                errors = true;
                metrics::request_error(ApiKey::Fetch, data.error_code);
            }
            // A diverging epoch is answered at once, like an error: waiting brings no records.
            errors |= data.diverging_epoch.epoch >= 0;
            total += data.records.as_ref().map_or(0, |r| r.len());
            partitions.push(data);
        }
        responses.push(
            FetchableTopicResponse::default()
                .with_topic(topic_name(name))
                .with_partitions(partitions),
        );
    }
    (
        FetchResponse::default().with_responses(responses),
        total,
        errors,
    )
}

fn read_one(
    target: &Target,
    remaining: usize,
    have_data: bool,
    read_committed: bool,
) -> PartitionData {
    let base = PartitionData::default().with_partition_index(target.index);
    let Some(partition) = &target.partition else {
        tracing::debug!(topic = %target.topic, partition = target.index, "fetch of unknown partition");
        return base
            .with_error_code(ResponseError::UnknownTopicOrPartition.code())
            .with_high_watermark(-1)
            .with_last_stable_offset(-1)
            .with_log_start_offset(-1);
    };
    if let Err(code) = check_current_epoch(target.current_leader_epoch, partition.log()) {
        return with_offsets(base, partition).with_error_code(code);
    }
    match diverged(target, partition) {
        Some(Ok(epoch)) => return with_offsets(base, partition).with_diverging_epoch(epoch),
        Some(Err(code)) => return with_offsets(base, partition).with_error_code(code),
        None => {}
    }
    let limit = target.partition_max_bytes.min(remaining);
    if have_data && limit == 0 {
        return with_offsets(base, partition);
    }
    let stable = partition.log().last_stable_offset();
    if read_committed
        && target.fetch_offset >= stable
        && target.fetch_offset <= partition.log().log_end_offset()
    {
        // Nothing decided yet beyond the last stable offset: wait like an empty partition.
        return with_offsets(base, partition).with_aborted_transactions(Some(Vec::new()));
    }
    let damage = partition.log().damage_from(target.fetch_offset);
    if let Some(damage) = damage.as_ref().filter(|d| d.first <= target.fetch_offset) {
        tracing::warn!(topic = %target.topic, partition = target.index, first = damage.first, last = damage.last, "fetch at a damaged batch refused");
        return with_offsets(base, partition)
            .with_error_code(ResponseError::KafkaStorageError.code());
    }
    match partition.log().read(target.fetch_offset, limit.max(1)) {
        Ok(read) => {
            let records = if read_committed {
                batches_below(read.records, stable)
            } else {
                read.records
            };
            // Never a damaged batch's bytes: the batches before it, and an error at it next time.
            let records = match &damage {
                Some(damage) => batches_below(records, damage.first),
                None => records,
            };
            let fits = !have_data || records.len() <= limit;
            let records = if fits { records } else { Bytes::new() };
            let aborted = read_committed.then(|| {
                let end = last_offset_in(&records).map_or(target.fetch_offset, |o| o + 1);
                partition
                    .log()
                    .aborted_transactions(target.fetch_offset, end)
                    .into_iter()
                    .map(|a| {
                        AbortedTransaction::default()
                            .with_producer_id(ProducerId(a.producer_id))
                            .with_first_offset(a.first_offset)
                    })
                    .collect()
            });
            base.with_high_watermark(read.high_watermark)
                .with_last_stable_offset(stable)
                .with_log_start_offset(read.log_start_offset)
                .with_aborted_transactions(aborted)
                .with_records(Some(records))
        }
        Err(StorageError::OffsetOutOfRange { .. }) => {
            with_offsets(base, partition).with_error_code(ResponseError::OffsetOutOfRange.code())
        }
        Err(error) => {
            tracing::error!(topic = %target.topic, partition = target.index, %error, "fetch read failed");
            with_offsets(base, partition).with_error_code(ResponseError::KafkaStorageError.code())
        }
    }
}

/// When the client's last fetched epoch ended in this log before its fetch offset (the log lost
/// a tail it read), the answer that tells it where to truncate, as Kafka does from Fetch v12:
/// the diverging epoch and its end, or OFFSET_OUT_OF_RANGE for an epoch this log never had.
fn diverged(target: &Target, partition: &PartitionHandle) -> Option<Result<EpochEndOffset, i16>> {
    if target.last_fetched_epoch < 0 {
        return None;
    }
    let (epoch, end_offset) = partition.log().leader_epoch_end(target.last_fetched_epoch);
    if epoch < 0 || end_offset < 0 {
        return Some(Err(ResponseError::OffsetOutOfRange.code()));
    }
    (epoch < target.last_fetched_epoch || end_offset < target.fetch_offset).then(|| {
        Ok(EpochEndOffset::default()
            .with_epoch(epoch)
            .with_end_offset(end_offset))
    })
}

/// The leading whole batches of `records` that start below `end` (read_committed stops at the
/// last stable offset).
fn batches_below(records: Bytes, end: i64) -> Bytes {
    let keep: usize = whole_batches(&records)
        .take_while(|(header, _)| header.base_offset < end)
        .map(|(header, _)| header.total_bytes())
        .sum();
    records.slice(..keep)
}

/// Headers of the whole batches in `records`, in order.
fn headers_in(records: &Bytes) -> Vec<BatchHeader> {
    whole_batches(records).map(|(header, _)| header).collect()
}

/// Offset of the last record in `records`, if any whole batch is there.
fn last_offset_in(records: &Bytes) -> Option<i64> {
    headers_in(records).last().map(BatchHeader::last_offset)
}

/// Counts the records and bytes a response carries, per topic, then returns it.
fn counted(response: FetchResponse) -> FetchResponse {
    for topic in &response.responses {
        let (mut records, mut bytes) = (0u64, 0u64);
        for partition in &topic.partitions {
            if let Some(data) = &partition.records {
                bytes += data.len() as u64;
                records += headers_in(data)
                    .iter()
                    .map(|h| u64::try_from(h.records_count).unwrap_or(0))
                    .sum::<u64>();
            }
        }
        if bytes > 0 {
            metrics::fetched(topic.topic.as_str(), records, bytes);
        }
    }
    response
}

fn with_offsets(base: PartitionData, partition: &PartitionHandle) -> PartitionData {
    base.with_high_watermark(partition.log().log_end_offset())
        .with_last_stable_offset(partition.log().last_stable_offset())
        .with_log_start_offset(partition.log().log_start_offset())
        .with_records(Some(Bytes::new()))
}
