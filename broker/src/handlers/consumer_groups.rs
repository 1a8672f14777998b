//! ConsumerGroupHeartbeat (KIP-848, `group.protocol=consumer`): the member's heartbeat carries
//! its subscription and what it holds; the answer, its epoch and the partitions it may consume
//! (`groups/consumer.rs` decides). ConsumerGroupDescribe shows the groups of that protocol.

use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment as DescribedAssignment, DescribedGroup, Member as DescribedMember,
    TopicPartitions as DescribedTopicPartitions,
};
use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{
    ApiKey, ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse,
    ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, TopicName,
};
use kafka_protocol::ResponseError;

use super::{str_bytes, ClientContext};
use crate::broker::Broker;
use crate::groups::consumer::{
    self, ClientIdentity, ConsumerGroup, Heartbeat, TopicLookup, TopicPattern,
};
use crate::metrics;
use crate::topics::Topics;
use crate::wall_clock::now_ms;

/// ConsumerGroupHeartbeat v0-1 from `client` (its header's client id and its connection).
pub fn heartbeat(
    broker: &Broker,
    request: ConsumerGroupHeartbeatRequest,
    client_id: Option<&str>,
    connection: &ClientContext,
) -> ConsumerGroupHeartbeatResponse {
    let interval = broker.group_configs.value(
        request.group_id.as_str(),
        crate::group_configs::GroupConfigKey::HeartbeatIntervalMs,
    );
    let member_id = request.member_id.as_str().to_string();
    // librdkafka sends "" for "no pattern" in every full request.
    let pattern = match request.subscribed_topic_regex.as_ref().map(|r| r.as_str()) {
        None => Ok(None),
        Some("") => Ok(Some(None)),
        Some(source) => TopicPattern::new(source).map(|p| Some(Some(p))),
    };
    let answer = if member_id.is_empty() {
        Err((
            ResponseError::InvalidRequest,
            "a member id is required".to_string(),
        ))
    } else if let Err(error) = &pattern {
        Err((
            ResponseError::InvalidRegularExpression,
            format!("the subscription pattern does not compile: {error}"),
        ))
    } else {
        let lookup = BrokerTopics(&broker.topics);
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
            pattern: pattern.unwrap_or_default(),
            instance_id: request
                .instance_id
                .as_ref()
                .filter(|id| !id.is_empty())
                .map(|id| id.as_str().to_string()),
            client: ClientIdentity {
                client_id: client_id.unwrap_or_default().to_string(),
                host: connection.host.clone(),
                rack: request.rack_id.map(|rack| rack.as_str().to_string()),
            },
        };
        broker
            .groups
            .consumer_heartbeat(request.group_id.as_str(), heartbeat, &lookup, now_ms())
            .map_err(|error| (error, String::new()))
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

/// This region's topics as a consumer group sees them.
struct BrokerTopics<'a>(&'a Topics);

impl TopicLookup for BrokerTopics<'_> {
    fn find(&self, name: &str) -> Option<(uuid::Uuid, i32)> {
        self.0
            .get(name)
            .map(|t| (t.id, i32::try_from(t.partition_count()).unwrap_or(i32::MAX)))
    }

    fn names(&self) -> Vec<String> {
        self.0
            .all()
            .into_iter()
            .map(|t| t.name.clone())
            .filter(|name| !crate::positions::is_internal(name))
            .collect()
    }
}

/// ConsumerGroupDescribe v0-1: each group of the consumer protocol with its epochs, assignor
/// and members (epoch, client, subscription, current and target assignment); a group id that is
/// not one is GROUP_ID_NOT_FOUND, as Kafka answers it.
pub fn describe(
    broker: &Broker,
    request: ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
    let groups = request
        .group_ids
        .into_iter()
        .map(|group_id| {
            let described = DescribedGroup::default().with_group_id(group_id.clone());
            let Some(group) = broker.groups.consumer_group(group_id.as_str()) else {
                metrics::request_error(
                    ApiKey::ConsumerGroupDescribe,
                    ResponseError::GroupIdNotFound.code(),
                );
                return described
                    .with_error_code(ResponseError::GroupIdNotFound.code())
                    .with_error_message(Some(str_bytes(format!(
                        "group {} is not a consumer group",
                        group_id.as_str()
                    ))))
                    .with_group_state(str_bytes("Dead"));
            };
            let members = group
                .members()
                .iter()
                .map(|(member_id, member)| {
                    DescribedMember::default()
                        .with_member_id(str_bytes(member_id.clone()))
                        .with_instance_id(member.instance_id.clone().map(str_bytes))
                        .with_rack_id(member.client.rack.clone().map(str_bytes))
                        .with_member_epoch(member.epoch)
                        .with_client_id(str_bytes(member.client.client_id.clone()))
                        .with_client_host(str_bytes(member.client.host.clone()))
                        .with_subscribed_topic_names(
                            member
                                .subscribed
                                .iter()
                                .map(|name| TopicName(str_bytes(name.clone())))
                                .collect(),
                        )
                        .with_subscribed_topic_regex(
                            member.pattern.as_ref().map(|p| str_bytes(p.source())),
                        )
                        .with_assignment(described_assignment(&group, &member.assigned))
                        .with_target_assignment(described_assignment(
                            &group,
                            &group.target_of(member_id),
                        ))
                        .with_member_type(MEMBER_TYPE_UNKNOWN)
                })
                .collect();
            described
                .with_group_state(str_bytes(group.state_name()))
                .with_group_epoch(group.epoch())
                .with_assignment_epoch(group.assignment_epoch())
                .with_assignor_name(str_bytes(group.assignor()))
                .with_members(members)
        })
        .collect();
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}

/// `member_type` (v1): -1, the member's kind unknown (Kafka fills it only for members that
/// came from the classic protocol).
const MEMBER_TYPE_UNKNOWN: i8 = -1;

fn described_assignment(
    group: &ConsumerGroup,
    assignment: &consumer::Assignment,
) -> DescribedAssignment {
    DescribedAssignment::default().with_topic_partitions(
        assignment
            .iter()
            .map(|(topic_id, partitions)| {
                DescribedTopicPartitions::default()
                    .with_topic_id(*topic_id)
                    .with_topic_name(TopicName(str_bytes(
                        group.topic_name(*topic_id).unwrap_or_default().to_string(),
                    )))
                    .with_partitions(partitions.iter().copied().collect())
            })
            .collect(),
    )
}
