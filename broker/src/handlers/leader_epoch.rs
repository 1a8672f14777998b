//! OffsetForLeaderEpoch: a region's partition has one unending epoch, so any epoch a client
//! knows ends at the log end and no client ever needs to truncate.

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use kafka_protocol::ResponseError;

use super::topic_name;
use crate::broker::Broker;

/// The end offset of each requested epoch.
pub fn handle(
    broker: &Broker,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let topic = broker.topics.get(t.topic.as_str());
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let result = EpochEndOffset::default().with_partition(p.partition);
                    match topic.as_ref().and_then(|t| t.partition(p.partition)) {
                        Some(partition) => result
                            .with_leader_epoch(p.leader_epoch)
                            .with_end_offset(partition.log().log_end_offset()),
                        None => result
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                            .with_leader_epoch(-1)
                            .with_end_offset(-1),
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(topic_name(t.topic.as_str()))
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
