//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topics (Kafka's names and
//! defaults), and a read-only view of the broker's own settings.

use std::collections::BTreeMap;

use causeway_storage::TOPIC_CONFIGS;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest,
    AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{str_bytes, topic_error_code};
use crate::broker::{Broker, NODE_ID};
use crate::topics::TopicError;

/// Config resource types.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// A consumer group's configs (Kafka 4, [`crate::group_configs`]).
const RESOURCE_GROUP: i8 = 32;

/// Config sources as Kafka numbers them.
pub const CONFIG_SOURCE_TOPIC: i8 = 1;
const CONFIG_SOURCE_STATIC_BROKER: i8 = 4;
/// A value the group sets itself (Kafka's DYNAMIC_GROUP_CONFIG).
const CONFIG_SOURCE_GROUP: i8 = 8;
/// A config at its default value.
pub const CONFIG_SOURCE_DEFAULT: i8 = 5;

/// Config types as Kafka numbers them.
const TYPE_BOOLEAN: i8 = 1;
const TYPE_STRING: i8 = 2;
const TYPE_LONG: i8 = 5;
const TYPE_DOUBLE: i8 = 6;
const TYPE_LIST: i8 = 7;

/// Incremental operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// A topic config as it applies to one topic.
pub struct EffectiveConfig {
    /// Kafka's name.
    pub name: String,
    /// The value in force.
    pub value: String,
    /// Whether the topic overrides the default.
    pub overridden: bool,
    doc: &'static str,
}

/// Every topic config with the value in force for a topic with `overrides`.
pub fn effective_configs(
    broker: &Broker,
    overrides: &BTreeMap<String, String>,
) -> Vec<EffectiveConfig> {
    TOPIC_CONFIGS
        .iter()
        .map(|def| {
            let default = if def.name == "max.message.bytes" {
                broker.options.message_max_bytes.to_string()
            } else {
                def.default.to_string()
            };
            match overrides.get(def.name) {
                Some(value) => EffectiveConfig {
                    name: def.name.to_string(),
                    value: value.clone(),
                    overridden: true,
                    doc: def.doc,
                },
                None => EffectiveConfig {
                    name: def.name.to_string(),
                    value: default,
                    overridden: false,
                    doc: def.doc,
                },
            }
        })
        .collect()
}

/// Describes topic or broker configs.
pub fn describe(
    broker: &Broker,
    request: DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let include_documentation = request.include_documentation;
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let base = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            let wanted = |name: &str| {
                resource
                    .configuration_keys
                    .as_ref()
                    .is_none_or(|keys| keys.iter().any(|k| k.as_str() == name))
            };
            let entries = match resource.resource_type {
                RESOURCE_TOPIC => match broker.topics.get(resource.resource_name.as_str()) {
                    Some(topic) => Ok(effective_configs(broker, &topic.overrides())
                        .into_iter()
                        .filter(|c| wanted(&c.name))
                        .map(|c| {
                            let source = if c.overridden {
                                CONFIG_SOURCE_TOPIC
                            } else {
                                CONFIG_SOURCE_DEFAULT
                            };
                            entry(
                                &c.name,
                                &c.value,
                                source,
                                false,
                                c.doc,
                                include_documentation,
                                version,
                            )
                        })
                        .collect()),
                    None => Err((
                        ResponseError::UnknownTopicOrPartition.code(),
                        format!("topic {} does not exist", resource.resource_name.as_str()),
                    )),
                },
                RESOURCE_BROKER if is_this_broker(&resource.resource_name) => {
                    Ok(broker_settings(broker)
                        .into_iter()
                        .filter(|(name, _)| wanted(name))
                        .map(|(name, value)| {
                            entry(
                                name,
                                &value,
                                CONFIG_SOURCE_STATIC_BROKER,
                                true,
                                "",
                                include_documentation,
                                version,
                            )
                        })
                        .collect())
                }
                RESOURCE_GROUP => Ok(broker
                    .group_configs
                    .describe(resource.resource_name.as_str())
                    .into_iter()
                    .filter(|(key, _, _)| wanted(key.name()))
                    .map(|(key, value, own)| {
                        let source = if own {
                            CONFIG_SOURCE_GROUP
                        } else {
                            CONFIG_SOURCE_DEFAULT
                        };
                        let value = value.to_string();
                        entry(key.name(), &value, source, false, "", false, version)
                    })
                    .collect()),
                other => Err((
                    ResponseError::InvalidRequest.code(),
                    format!(
                        "config resource type {other} named {:?} is not supported",
                        resource.resource_name.as_str()
                    ),
                )),
            };
            match entries {
                Ok(configs) => base.with_configs(configs),
                Err((code, message)) => base
                    .with_error_code(code)
                    .with_error_message(Some(str_bytes(message))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn entry(
    name: &str,
    value: &str,
    source: i8,
    read_only: bool,
    doc: &str,
    include_documentation: bool,
    version: i16,
) -> DescribeConfigsResourceResult {
    let described = DescribeConfigsResourceResult::default()
        .with_name(str_bytes(name))
        .with_value(Some(str_bytes(value)))
        .with_read_only(read_only)
        .with_config_source(source);
    if version < 3 {
        return described;
    }
    let described = described.with_config_type(config_type(name, value));
    if include_documentation && !doc.is_empty() {
        described.with_documentation(Some(str_bytes(doc)))
    } else {
        described
    }
}

fn config_type(name: &str, value: &str) -> i8 {
    if name == "cleanup.policy" {
        TYPE_LIST
    } else if value == "true" || value == "false" {
        TYPE_BOOLEAN
    } else if value.parse::<i64>().is_ok() {
        TYPE_LONG
    } else if value.parse::<f64>().is_ok() {
        TYPE_DOUBLE
    } else {
        TYPE_STRING
    }
}

fn is_this_broker(name: &StrBytes) -> bool {
    name.is_empty() || name.as_str() == NODE_ID.to_string()
}

/// The broker's own settings, by their Kafka names where Kafka has one.
fn broker_settings(broker: &Broker) -> Vec<(&'static str, String)> {
    let o = &broker.options;
    vec![
        ("broker.id", NODE_ID.to_string()),
        ("num.partitions", o.num_partitions.to_string()),
        (
            "auto.create.topics.enable",
            o.auto_create_topics.to_string(),
        ),
        ("message.max.bytes", o.message_max_bytes.to_string()),
        (
            "socket.request.max.bytes",
            o.socket_request_max_bytes.to_string(),
        ),
        (
            "log.retention.check.interval.ms",
            o.log_retention_check_interval_ms.to_string(),
        ),
        ("log.dirs", o.data_dir.display().to_string()),
        ("causeway.region", o.region.clone()),
    ]
}

/// Why a config change on one resource was refused.
type Refusal = (i16, String);

fn change_topic(
    broker: &Broker,
    resource_type: i8,
    name: &StrBytes,
    validate_only: bool,
    change: impl FnOnce(BTreeMap<String, String>) -> Result<BTreeMap<String, String>, TopicError>,
) -> Result<(), Refusal> {
    match resource_type {
        RESOURCE_TOPIC => {}
        RESOURCE_BROKER => {
            return Err((
                ResponseError::InvalidRequest.code(),
                "broker settings are static: restart with new flags or config file".into(),
            ))
        }
        other => {
            return Err((
                ResponseError::InvalidRequest.code(),
                format!("config resource type {other} is not supported"),
            ))
        }
    }
    let refuse = |e: TopicError| (topic_error_code(&e), e.to_string());
    let topic = broker
        .topics
        .get(name.as_str())
        .ok_or_else(|| refuse(TopicError::Unknown(name.as_str().to_string())))?;
    let configs = change(topic.overrides()).map_err(refuse)?;
    broker
        .topics
        .set_configs(name.as_str(), configs, validate_only)
        .map_err(refuse)
}

/// AlterConfigs: the given configs replace all of the topic's overrides.
pub fn alter(broker: &Broker, request: AlterConfigsRequest) -> AlterConfigsResponse {
    let responses = request
        .resources
        .into_iter()
        .map(|resource| {
            let replacement: BTreeMap<String, String> = resource
                .configs
                .iter()
                .filter_map(|c| {
                    c.value
                        .as_ref()
                        .map(|v| (c.name.as_str().to_string(), v.as_str().to_string()))
                })
                .collect();
            let outcome = change_topic(
                broker,
                resource.resource_type,
                &resource.resource_name,
                request.validate_only,
                |_| Ok(replacement),
            );
            let (code, message) = outcome
                .err()
                .map_or((0, None), |(c, m)| (c, Some(str_bytes(m))));
            alter_configs_response::AlterConfigsResourceResponse::default()
                .with_error_code(code)
                .with_error_message(message)
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name)
        })
        .collect();
    AlterConfigsResponse::default().with_responses(responses)
}

/// IncrementalAlterConfigs: set, delete, append to or subtract from single configs.
pub fn incremental_alter(
    broker: &Broker,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let responses = request
        .resources
        .into_iter()
        .map(|resource| {
            let operations: Vec<(String, i8, Option<String>)> = resource
                .configs
                .iter()
                .map(|c| {
                    (
                        c.name.as_str().to_string(),
                        c.config_operation,
                        c.value.as_ref().map(|v| v.as_str().to_string()),
                    )
                })
                .collect();
            let outcome = if resource.resource_type == RESOURCE_GROUP {
                change_group(
                    broker,
                    resource.resource_name.as_str(),
                    operations,
                    request.validate_only,
                )
            } else {
                change_topic(
                    broker,
                    resource.resource_type,
                    &resource.resource_name,
                    request.validate_only,
                    |mut configs| {
                        for (name, operation, value) in operations {
                            apply_operation(&mut configs, name, operation, value)?;
                        }
                        Ok(configs)
                    },
                )
            };
            let (code, message) = outcome
                .err()
                .map_or((0, None), |(c, m)| (c, Some(str_bytes(m))));
            incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_error_code(code)
                .with_error_message(message)
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name)
        })
        .collect();
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

/// IncrementalAlterConfigs of a GROUP resource: set or delete its configs (none is a list, so
/// appending and subtracting are refused).
fn change_group(
    broker: &Broker,
    group: &str,
    operations: Vec<(String, i8, Option<String>)>,
    validate_only: bool,
) -> Result<(), Refusal> {
    let invalid = |why: String| (ResponseError::InvalidConfig.code(), why);
    let changes = operations
        .into_iter()
        .map(|(name, operation, value)| match operation {
            OP_SET => match value {
                Some(value) => Ok((name, Some(value))),
                None => Err(invalid(format!("config {name} needs a value"))),
            },
            OP_DELETE => Ok((name, None)),
            other => Err(invalid(format!(
                "config operation {other} does not apply to {name}: group configs are not lists"
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    broker
        .group_configs
        .alter(
            &broker.security,
            broker.topics.catalog(),
            group,
            &changes,
            validate_only,
        )
        .map_err(|(error, why)| (error.code(), why))
}

fn apply_operation(
    configs: &mut BTreeMap<String, String>,
    name: String,
    operation: i8,
    value: Option<String>,
) -> Result<(), TopicError> {
    let needs_value = |value: Option<String>| {
        value.ok_or_else(|| TopicError::InvalidConfig(format!("config {name} needs a value")))
    };
    match operation {
        OP_SET => {
            let value = needs_value(value)?;
            configs.insert(name, value);
        }
        OP_DELETE => {
            configs.remove(&name);
        }
        OP_APPEND | OP_SUBTRACT => {
            let value = needs_value(value)?;
            let current = configs.get(&name).cloned().unwrap_or_default();
            let mut items: Vec<String> = current
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            for item in value.split(',').filter(|s| !s.is_empty()) {
                if operation == OP_APPEND {
                    if !items.iter().any(|i| i == item) {
                        items.push(item.to_string());
                    }
                } else {
                    items.retain(|i| i != item);
                }
            }
            configs.insert(name, items.join(","));
        }
        other => {
            return Err(TopicError::InvalidConfig(format!(
                "unknown config operation {other}"
            )))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_and_subtract_edit_list_configs() {
        let mut configs = BTreeMap::new();
        apply_operation(
            &mut configs,
            "cleanup.policy".into(),
            OP_SET,
            Some("delete".into()),
        )
        .expect("set");
        apply_operation(
            &mut configs,
            "cleanup.policy".into(),
            OP_APPEND,
            Some("compact".into()),
        )
        .expect("append");
        assert_eq!(configs["cleanup.policy"], "delete,compact");
        apply_operation(
            &mut configs,
            "cleanup.policy".into(),
            OP_SUBTRACT,
            Some("delete".into()),
        )
        .expect("subtract");
        assert_eq!(configs["cleanup.policy"], "compact");
        apply_operation(&mut configs, "cleanup.policy".into(), OP_DELETE, None).expect("delete");
        assert!(configs.is_empty());
    }

    #[test]
    fn set_without_value_is_refused() {
        let mut configs = BTreeMap::new();
        assert!(apply_operation(&mut configs, "retention.ms".into(), OP_SET, None).is_err());
    }
}
