//! ConsumerGroupHeartbeat (KIP-848, `group.protocol=consumer`): the member's heartbeat carries
//! its subscription and what it holds; the answer, its epoch and the partitions it may consume
//! (`groups/consumer.rs` decides).

use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{
    ApiKey, ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse,
};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::broker::Broker;
use crate::groups::consumer::{self, Heartbeat};
use crate::metrics;
use crate::wall_clock::now_ms;

/// ConsumerGroupHeartbeat v0-1.
pub fn heartbeat(
    broker: &Broker,
    request: ConsumerGroupHeartbeatRequest,
) -> ConsumerGroupHeartbeatResponse {
    let interval = broker.options.group_consumer_heartbeat_interval_ms;
    let member_id = request.member_id.as_str().to_string();
    let answer = if member_id.is_empty() {
        Err((ResponseError::InvalidRequest, "a member id is required"))
    } else if request
        .subscribed_topic_regex
        .as_ref()
        .is_some_and(|regex| !regex.is_empty())
    {
        // librdkafka sends "" for "no regex" in every full request.
        Err((
            ResponseError::InvalidRegularExpression,
            "subscriptions by regular expression are not supported; subscribe to topic names",
        ))
    } else {
        let topics = &broker.topics;
        let lookup = |name: &str| {
            topics
                .get(name)
                .map(|t| (t.id, i32::try_from(t.partition_count()).unwrap_or(i32::MAX)))
        };
        let heartbeat = Heartbeat {
            member_id: member_id.clone(),
            member_epoch: request.member_epoch,
            rebalance_timeout_ms: request.rebalance_timeout_ms,
            subscribed: request
                .subscribed_topic_names
                .map(|names| names.iter().map(|n| n.as_str().to_string()).collect()),
            server_assignor: request.server_assignor.map(|a| a.as_str().to_string()),
            owned: request.topic_partitions.map(|owned| {
                owned
                    .into_iter()
                    .map(|tp| (tp.topic_id, tp.partitions.into_iter().collect()))
                    .collect()
            }),
        };
        broker
            .groups
            .consumer_heartbeat(request.group_id.as_str(), heartbeat, &lookup, now_ms())
            .map_err(|error| (error, ""))
    };
    match answer {
        Ok(answer) => ConsumerGroupHeartbeatResponse::default()
            .with_member_id(Some(str_bytes(member_id)))
            .with_member_epoch(answer.member_epoch)
            .with_heartbeat_interval_ms(interval)
            .with_assignment(answer.assignment.map(to_wire)),
        Err((error, message)) => {
            metrics::request_error(ApiKey::ConsumerGroupHeartbeat, error.code());
            ConsumerGroupHeartbeatResponse::default()
                .with_error_code(error.code())
                .with_error_message((!message.is_empty()).then(|| str_bytes(message)))
                .with_member_epoch(-1)
                .with_heartbeat_interval_ms(interval)
        }
    }
}

fn to_wire(assignment: consumer::Assignment) -> Assignment {
    Assignment::default().with_topic_partitions(
        assignment
            .into_iter()
            .map(|(topic_id, partitions)| {
                TopicPartitions::default()
                    .with_topic_id(topic_id)
                    .with_partitions(partitions.into_iter().collect())
            })
            .collect(),
    )
}
