//! DescribeProducers (KIP-664): the producers a partition keeps state for, with their epoch, last
//! sequence and open transaction, so an operator can find what holds a partition's last stable
//! offset back (`kafka-transactions.sh describe-producers`, Admin `describeProducers`).
//!
//! `last_timestamp` is when this partition last took a batch of the producer (the broker's clock
//! at the append), not the batch's own timestamp; `coordinator_epoch` is not tracked and reads -1.
//! One response describes at most [`DESCRIBED_PRODUCERS_MAX`] producers, so a request naming
//! every partition cannot make the broker build an answer of gigabytes; partitions past the
//! budget are answered with an error saying so.

use std::collections::BTreeSet;

use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};
use kafka_protocol::ResponseError;

use super::{str_bytes, topic_name};
use crate::broker::Broker;

/// Most producers described in one response (each costs about 40 bytes on the wire).
pub const DESCRIBED_PRODUCERS_MAX: usize = 100_000;

/// Describes the producers of each requested partition (a partition named twice is answered once).
pub fn describe(broker: &Broker, request: DescribeProducersRequest) -> DescribeProducersResponse {
    let mut budget = DESCRIBED_PRODUCERS_MAX;
    let topics = request
        .topics
        .into_iter()
        .map(|requested| {
            let topic = broker.topics.get(requested.name.as_str());
            let indexes: BTreeSet<i32> = requested.partition_indexes.into_iter().collect();
            let partitions = indexes
                .into_iter()
                .map(|index| {
                    let answer = PartitionResponse::default().with_partition_index(index);
                    let Some(partition) = topic.as_ref().and_then(|t| t.partition(index)) else {
                        return answer
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code());
                    };
                    let producers = partition.log().active_producers();
                    if producers.len() > budget {
                        return answer
                            .with_error_code(ResponseError::UnknownServerError.code())
                            .with_error_message(Some(str_bytes(format!(
                                "this response already describes the most producers one may ({DESCRIBED_PRODUCERS_MAX}); ask for fewer partitions at a time"
                            ))));
                    }
                    budget -= producers.len();
                    answer.with_active_producers(
                        producers
                            .into_iter()
                            .map(|p| {
                                ProducerState::default()
                                    .with_producer_id(ProducerId(p.producer_id))
                                    .with_producer_epoch(i32::from(p.epoch))
                                    .with_last_sequence(p.last_sequence)
                                    .with_last_timestamp(p.last_write_ms)
                                    .with_coordinator_epoch(-1)
                                    .with_current_txn_start_offset(
                                        p.transaction_start_offset.unwrap_or(-1),
                                    )
                            })
                            .collect(),
                    )
                })
                .collect();
            TopicResponse::default()
                .with_name(topic_name(requested.name.as_str()))
                .with_partitions(partitions)
        })
        .collect();
    DescribeProducersResponse::default().with_topics(topics)
}
