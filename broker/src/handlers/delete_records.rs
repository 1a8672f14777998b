//! DeleteRecords: move a partition's log start forward (offset -1 means the high watermark).

use causeway_storage::StorageError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use kafka_protocol::ResponseError;

use super::topic_name;
use crate::broker::Broker;

/// Offset value meaning "up to the high watermark".
const HIGH_WATERMARK: i64 = -1;

/// Deletes records below each requested offset.
pub fn handle(broker: &Broker, request: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let topic = broker.topics.get(t.name.as_str());
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let result = DeleteRecordsPartitionResult::default()
                        .with_partition_index(p.partition_index);
                    let Some(partition) = topic.as_ref().and_then(|t| t.partition(p.partition_index)) else {
                        return result
                            .with_low_watermark(-1)
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code());
                    };
                    let offset = if p.offset == HIGH_WATERMARK {
                        partition.log().log_end_offset()
                    } else {
                        p.offset
                    };
                    match partition.log().delete_records_before(offset) {
                        Ok(low) => result.with_low_watermark(low),
                        Err(StorageError::OffsetOutOfRange { .. }) => result
                            .with_low_watermark(-1)
                            .with_error_code(ResponseError::OffsetOutOfRange.code()),
                        Err(error) => {
                            tracing::error!(topic = %partition.topic(), partition = partition.index(), %error, "DeleteRecords failed");
                            result
                                .with_low_watermark(-1)
                                .with_error_code(ResponseError::KafkaStorageError.code())
                        }
                    }
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(topic_name(t.name.as_str()))
                .with_partitions(partitions)
        })
        .collect();
    DeleteRecordsResponse::default().with_topics(topics)
}
