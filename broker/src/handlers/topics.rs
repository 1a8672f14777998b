//! CreateTopics, DeleteTopics and CreatePartitions.

use std::collections::BTreeMap;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse,
};
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::configs::{effective_configs, CONFIG_SOURCE_DEFAULT, CONFIG_SOURCE_TOPIC};
use super::placement::{check_added_assignments, new_topic_placement};
use super::{str_bytes, topic_error_code, topic_name};
use crate::broker::Broker;
use crate::tables::store_name;
use crate::topics::{NewTopic, TopicError};

/// Creates each topic (or only validates it); every region holds every partition, so any
/// replication factor is accepted and reported as given.
pub fn create(broker: &Broker, request: CreateTopicsRequest, version: i16) -> CreateTopicsResponse {
    let allowance = broker.topics.allowance();
    let results = request
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.as_str().to_string();
            let assignments: Vec<(i32, Vec<i32>)> = t
                .assignments
                .iter()
                .map(|a| {
                    (
                        a.partition_index,
                        a.broker_ids.iter().map(|b| b.0).collect(),
                    )
                })
                .collect();
            let placement = new_topic_placement(
                t.num_partitions,
                t.replication_factor,
                &assignments,
                broker.default_partitions(),
            );
            let configs: BTreeMap<String, String> = t
                .configs
                .iter()
                .filter_map(|c| {
                    c.value
                        .as_ref()
                        .map(|v| (c.name.as_str().to_string(), v.as_str().to_string()))
                })
                .collect();
            let outcome = placement.and_then(|placement| {
                let new = NewTopic {
                    name: name.clone(),
                    partitions: placement.partitions,
                    configs: configs.clone(),
                };
                if request.validate_only {
                    broker
                        .topics
                        .validate_new(&new)
                        .map(|()| (Uuid::nil(), placement))
                } else {
                    broker.topics.validate_new(&new)?;
                    allowance.take(placement.partitions)?;
                    broker.topics.create(new).map(|topic| (topic.id, placement))
                }
            });
            let result = CreatableTopicResult::default().with_name(topic_name(&name));
            match outcome {
                Ok((id, placement)) => {
                    let result = result
                        .with_num_partitions(placement.partitions as i32)
                        .with_replication_factor(placement.replication_factor)
                        .with_configs(Some(described_configs(broker, &configs)));
                    if version >= 7 {
                        result.with_topic_id(id)
                    } else {
                        result
                    }
                }
                Err(error) => result
                    .with_error_code(topic_error_code(&error))
                    .with_error_message(Some(str_bytes(error.to_string())))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1),
            }
        })
        .collect();
    CreateTopicsResponse::default().with_topics(results)
}

fn described_configs(
    broker: &Broker,
    overrides: &BTreeMap<String, String>,
) -> Vec<CreatableTopicConfigs> {
    effective_configs(broker, overrides)
        .into_iter()
        .map(|c| {
            CreatableTopicConfigs::default()
                .with_name(str_bytes(c.name))
                .with_value(Some(str_bytes(c.value)))
                .with_config_source(if c.overridden {
                    CONFIG_SOURCE_TOPIC
                } else {
                    CONFIG_SOURCE_DEFAULT
                })
        })
        .collect()
}

/// Deletes topics named (v0-5) or named or identified (v6).
pub fn delete(broker: &Broker, request: DeleteTopicsRequest, version: i16) -> DeleteTopicsResponse {
    let mut wanted: Vec<(Option<String>, Uuid)> = request
        .topic_names
        .iter()
        .map(|n| (Some(n.as_str().to_string()), Uuid::nil()))
        .collect();
    wanted.extend(
        request
            .topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.as_str().to_string()), t.topic_id)),
    );
    let responses = wanted
        .into_iter()
        .map(|(name, id)| {
            let resolved = match &name {
                Some(name) => Ok(name.clone()),
                None => broker
                    .topics
                    .get_by_id(id)
                    .map(|t| t.name.clone())
                    .ok_or(ResponseError::UnknownTopicId.code()),
            };
            let outcome = resolved.and_then(|name| {
                let deleted = broker.topics.delete(&name).map_err(|e| topic_error_code(&e))?;
                if let Err(error) = broker.tables.drop_table(&store_name(&deleted)) {
                    tracing::warn!(topic = %name, %error, "could not drop the deleted topic's rows");
                }
                Ok((name, deleted.id))
            });
            let result = DeletableTopicResult::default();
            match outcome {
                Ok((name, topic_id)) => {
                    let result = result.with_name(Some(topic_name(&name)));
                    if version >= 6 {
                        result.with_topic_id(topic_id)
                    } else {
                        result
                    }
                }
                Err(code) => {
                    let result = result
                        .with_name(name.as_deref().map(topic_name))
                        .with_error_code(code);
                    if version >= 6 {
                        result.with_topic_id(id)
                    } else {
                        result
                    }
                }
            }
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}

/// Grows partition counts.
pub fn create_partitions(
    broker: &Broker,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let allowance = broker.topics.allowance();
    let results = request
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.as_str();
            let outcome = u32::try_from(t.count)
                .map_err(|_| {
                    TopicError::InvalidPartitions(format!("invalid partition count {}", t.count))
                })
                .and_then(|count| {
                    let current = broker.topics.get(name).map_or(0, |t| t.partition_count());
                    let current = u32::try_from(current).unwrap_or(u32::MAX);
                    if let Some(assignments) = t
                        .assignments
                        .as_ref()
                        .filter(|a| count > current && !a.is_empty())
                    {
                        let brokers: Vec<Vec<i32>> = assignments
                            .iter()
                            .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
                            .collect();
                        check_added_assignments(current, count, &brokers)?;
                    }
                    let growth = count.saturating_sub(current);
                    if !request.validate_only {
                        allowance.take(growth)?;
                    }
                    broker
                        .topics
                        .add_partitions(name, count, request.validate_only)
                });
            let result = CreatePartitionsTopicResult::default().with_name(topic_name(name));
            match outcome {
                Ok(()) => result,
                Err(error) => result
                    .with_error_code(topic_error_code(&error))
                    .with_error_message(Some(str_bytes(error.to_string()))),
            }
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}
