//! OffsetForLeaderEpoch, and the leader-epoch checks other requests share. A partition's log
//! begins a new epoch each time it opens (`causeway_storage`'s `partition/epochs.rs`): a client
//! that read in an earlier epoch asks where that epoch ended, and resets when it is below its
//! position (the log lost a tail in a power loss) instead of skipping records silently.

use causeway_storage::Partition;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use kafka_protocol::ResponseError;

use super::topic_name;
use crate::broker::Broker;

/// A leader epoch a client did not give, or an answer without one.
pub const LEADER_EPOCH_NONE: i32 = -1;

/// Checks the `current_leader_epoch` a client sends (Fetch, ListOffsets, OffsetForLeaderEpoch):
/// an older one means the client has not seen the log reopen (FENCED_LEADER_EPOCH, it refreshes
/// its metadata), a newer one that this broker has not (UNKNOWN_LEADER_EPOCH, it retries).
pub fn check_current_epoch(current_leader_epoch: i32, log: &Partition) -> Result<(), i16> {
    let epoch = log.leader_epoch();
    match current_leader_epoch {
        LEADER_EPOCH_NONE => Ok(()),
        given if given < epoch => Err(ResponseError::FencedLeaderEpoch.code()),
        given if given > epoch => Err(ResponseError::UnknownLeaderEpoch.code()),
        _ => Ok(()),
    }
}

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
                    let answer = topic
                        .as_ref()
                        .and_then(|t| t.partition(p.partition))
                        .ok_or(ResponseError::UnknownTopicOrPartition.code())
                        .and_then(|partition| {
                            let log = partition.log();
                            check_current_epoch(p.current_leader_epoch, log)?;
                            Ok(log.leader_epoch_end(p.leader_epoch))
                        });
                    match answer {
                        Ok((epoch, end_offset)) => {
                            result.with_leader_epoch(epoch).with_end_offset(end_offset)
                        }
                        Err(code) => result
                            .with_error_code(code)
                            .with_leader_epoch(LEADER_EPOCH_NONE)
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
