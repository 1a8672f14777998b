//! ListOffsets: earliest, latest, max timestamp, or the first offset at or after a timestamp.

use std::sync::Arc;

use causeway_storage::{Partition, StorageError};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ApiKey, ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::ResponseError;

use super::leader_epoch::{check_current_epoch, LEADER_EPOCH_NONE};
use super::records::{first_record_at_or_after, record_with_max_timestamp};
use super::topic_name;
use crate::broker::Broker;
use crate::metrics;
use crate::topics::PartitionHandle;

/// Special timestamps of ListOffsets.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;

/// Isolation level value of `read_committed`.
const READ_COMMITTED: i8 = 1;

/// Answers every partition of the request in the blocking lane for reads: a lookup by
/// timestamp reads and decodes batches, which may wait on the disk.
pub async fn handle(
    broker: &Arc<Broker>,
    request: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    let broker = broker.clone();
    match crate::blocking::READS
        .run(move || answer(&broker, request, version))
        .await
    {
        Ok(response) => response,
        Err(error) => {
            // No partition answered: the client sees none of its partitions and retries.
            tracing::error!(%error, "list offsets task failed");
            ListOffsetsResponse::default()
        }
    }
}

/// First ListOffsets version whose answers carry a leader epoch.
const VERSION_LEADER_EPOCH: i16 = 4;

fn answer(broker: &Broker, request: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let read_committed = request.isolation_level == READ_COMMITTED;
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let topic = broker.topics.get(t.name.as_str());
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let base = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_leader_epoch(LEADER_EPOCH_NONE);
                    let found = topic
                        .as_ref()
                        .and_then(|topic| topic.partition(p.partition_index))
                        .ok_or(ResponseError::UnknownTopicOrPartition.code())
                        .and_then(|partition| {
                            check_current_epoch(p.current_leader_epoch, partition.log())?;
                            let found = lookup(&partition, p.timestamp, read_committed)?;
                            let epoch = match version >= VERSION_LEADER_EPOCH {
                                true => epoch_of(partition.log(), found.0),
                                false => LEADER_EPOCH_NONE,
                            };
                            Ok((found, epoch))
                        });
                    match found {
                        Ok(((offset, timestamp), epoch)) => base
                            .with_offset(offset)
                            .with_timestamp(timestamp)
                            .with_leader_epoch(epoch),
                        Err(code) => {
                            metrics::request_error(ApiKey::ListOffsets, code);
                            base.with_error_code(code)
                                .with_offset(-1)
                                .with_timestamp(-1)
                        }
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(topic_name(t.name.as_str()))
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

/// The leader epoch reported with an offset ListOffsets answers: the current one at the log end,
/// the one the offset was written in below it, none for no offset.
fn epoch_of(log: &Partition, offset: i64) -> i32 {
    match offset {
        offset if offset < 0 => LEADER_EPOCH_NONE,
        offset if offset >= log.log_end_offset() => log.leader_epoch(),
        offset => log.leader_epoch_at(offset),
    }
}

/// `(offset, timestamp)` answering `query` for one partition; -1s when no record qualifies.
fn lookup(
    partition: &PartitionHandle,
    query: i64,
    read_committed: bool,
) -> Result<(i64, i64), i16> {
    let log = partition.log();
    let storage_failed = |error: StorageError| {
        tracing::error!(topic = %partition.topic(), partition = partition.index(), %error, "ListOffsets read failed");
        ResponseError::KafkaStorageError.code()
    };
    let decode_failed = |error: String| {
        tracing::error!(topic = %partition.topic(), partition = partition.index(), %error, "stored batch does not decode");
        ResponseError::CorruptMessage.code()
    };
    match query {
        LATEST if read_committed => Ok((log.last_stable_offset(), -1)),
        LATEST => Ok((log.log_end_offset(), -1)),
        EARLIEST | EARLIEST_LOCAL => Ok((log.log_start_offset(), -1)),
        MAX_TIMESTAMP => match log.max_timestamp_batch().map_err(storage_failed)? {
            Some(batch) => Ok(record_with_max_timestamp(&batch)
                .map_err(decode_failed)?
                .unwrap_or((-1, -1))),
            None => Ok((-1, -1)),
        },
        timestamp if timestamp >= 0 => {
            match log.batch_at_timestamp(timestamp).map_err(storage_failed)? {
                Some(batch) => Ok(first_record_at_or_after(&batch, timestamp)
                    .map_err(decode_failed)?
                    .unwrap_or((-1, -1))),
                None => Ok((-1, -1)),
            }
        }
        _ => Err(ResponseError::InvalidRequest.code()),
    }
}
