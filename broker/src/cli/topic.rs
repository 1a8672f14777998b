//! `causeway topic create|list|describe|delete|alter-config`.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail};
use clap::Subcommand;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreateTopicsRequest, DeleteRecordsRequest, DeleteTopicsRequest,
    DescribeConfigsRequest, DescribeLogDirsRequest, IncrementalAlterConfigsRequest,
    ListOffsetsRequest, MetadataRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use serde_json::{json, Value};

use super::admin::AdminConnection;

/// Config resource type of a topic.
const RESOURCE_TOPIC: i8 = 2;
/// Config source of a topic override.
const SOURCE_TOPIC_OVERRIDE: i8 = 1;
/// ListOffsets special timestamps.
pub(super) const EARLIEST: i64 = -2;
const LATEST: i64 = -1;

/// Topic administration.
#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        /// Topic name.
        name: String,
        /// Partition count (the broker's default when omitted).
        #[arg(long, short = 'p')]
        partitions: Option<u32>,
        /// A topic config as KEY=VALUE (repeatable), e.g. -c retention.ms=3600000.
        #[arg(long = "config", short = 'c', value_parser = parse_key_value)]
        configs: Vec<(String, String)>,
    },
    /// List topics with their partition counts.
    List {
        /// Print one JSON document instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Show a topic's partitions, offsets and configs.
    Describe {
        /// Topic name.
        name: String,
        /// Print one JSON document instead of the tables.
        #[arg(long)]
        json: bool,
    },
    /// Delete topics.
    Delete {
        /// Topic names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Grow a topic to a larger partition count (CreatePartitions; partitions are never removed).
    AddPartitions {
        /// Topic name.
        name: String,
        /// The partition count after the change.
        #[arg(long, short = 'p')]
        partitions: u32,
    },
    /// Delete a partition's records below an offset (DeleteRecords): the log start moves there.
    DeleteRecords {
        /// Topic name.
        name: String,
        /// Partition index.
        #[arg(long, short = 'p')]
        partition: i32,
        /// Records below this offset are deleted; -1 means the high watermark (everything).
        #[arg(long, allow_negative_numbers = true)]
        before: i64,
    },
    /// Set or remove topic configs.
    AlterConfig {
        /// Topic name.
        name: String,
        /// Set KEY=VALUE (repeatable).
        #[arg(long, value_parser = parse_key_value)]
        set: Vec<(String, String)>,
        /// Remove an override, back to the default (repeatable).
        #[arg(long)]
        delete: Vec<String>,
    },
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))
}

/// Runs one topic command against the broker `target` names.
pub fn run(target: &super::Target, command: TopicCommand) -> anyhow::Result<()> {
    let mut broker = AdminConnection::connect(target)?;
    match command {
        TopicCommand::Create {
            name,
            partitions,
            configs,
        } => create(&mut broker, &name, partitions, &configs),
        TopicCommand::List { json } => {
            let topics = list(&mut broker)?;
            match json {
                true => println!("{}", list_json(&topics)),
                false => print!("{}", list_table(&topics)),
            }
            Ok(())
        }
        TopicCommand::Describe { name, json } => {
            let topic = describe(&mut broker, &name)?;
            match json {
                true => println!("{}", describe_json(&topic)),
                false => print!("{}", describe_table(&topic)),
            }
            Ok(())
        }
        TopicCommand::Delete { names } => delete(&mut broker, &names),
        TopicCommand::AddPartitions { name, partitions } => {
            add_partitions(&mut broker, &name, partitions)
        }
        TopicCommand::DeleteRecords {
            name,
            partition,
            before,
        } => delete_records(&mut broker, &name, partition, before),
        TopicCommand::AlterConfig { name, set, delete } => {
            alter_config(&mut broker, &name, &set, &delete)
        }
    }
}

/// A request string.
pub(super) fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

fn check(code: i16, message: Option<&StrBytes>, what: &str) -> anyhow::Result<()> {
    if code == 0 {
        return Ok(());
    }
    let name = ResponseError::try_from_code(code)
        .map(|e| format!("{e:?}"))
        .unwrap_or_else(|| code.to_string());
    match message {
        Some(message) => bail!("{what}: {name}: {}", message.as_str()),
        None => bail!("{what}: {name}"),
    }
}

fn create(
    broker: &mut AdminConnection,
    name: &str,
    partitions: Option<u32>,
    configs: &[(String, String)],
) -> anyhow::Result<()> {
    let partitions = match partitions {
        Some(n) => i32::try_from(n).map_err(|_| anyhow!("too many partitions"))?,
        None => -1,
    };
    let topic = CreatableTopic::default()
        .with_name(TopicName(text(name)))
        .with_num_partitions(partitions)
        .with_replication_factor(-1)
        .with_configs(
            configs
                .iter()
                .map(|(k, v)| {
                    CreatableTopicConfig::default()
                        .with_name(text(k))
                        .with_value(Some(text(v)))
                })
                .collect(),
        );
    let response = broker.send(
        &CreateTopicsRequest::default()
            .with_topics(vec![topic])
            .with_timeout_ms(30_000),
    )?;
    for result in &response.topics {
        check(
            result.error_code,
            result.error_message.as_ref(),
            &format!("creating {name}"),
        )?;
        println!(
            "created topic {name} with {} partitions",
            result.num_partitions
        );
    }
    Ok(())
}

fn add_partitions(broker: &mut AdminConnection, name: &str, count: u32) -> anyhow::Result<()> {
    let count = i32::try_from(count).map_err(|_| anyhow!("too many partitions"))?;
    let response = broker.send(
        &CreatePartitionsRequest::default()
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(TopicName(text(name)))
                .with_count(count)])
            .with_timeout_ms(30_000),
    )?;
    for result in &response.results {
        check(
            result.error_code,
            result.error_message.as_ref(),
            &format!("growing {name}"),
        )?;
        println!("topic {name} now has {count} partitions");
    }
    Ok(())
}

fn delete_records(
    broker: &mut AdminConnection,
    name: &str,
    partition: i32,
    before: i64,
) -> anyhow::Result<()> {
    let response = broker.send(
        &DeleteRecordsRequest::default()
            .with_topics(vec![DeleteRecordsTopic::default()
                .with_name(TopicName(text(name)))
                .with_partitions(vec![DeleteRecordsPartition::default()
                    .with_partition_index(partition)
                    .with_offset(before)])])
            .with_timeout_ms(30_000),
    )?;
    let result = response
        .topics
        .iter()
        .flat_map(|t| &t.partitions)
        .find(|p| p.partition_index == partition)
        .ok_or_else(|| anyhow!("no answer for {name}-{partition}"))?;
    check(
        result.error_code,
        None,
        &format!("deleting records of {name}-{partition}"),
    )?;
    println!(
        "{name}-{partition} now starts at offset {}",
        result.low_watermark
    );
    Ok(())
}

/// Every topic's name and partition count, sorted by name.
fn list(broker: &mut AdminConnection) -> anyhow::Result<Vec<(String, usize)>> {
    let metadata = broker.send(&MetadataRequest::default().with_topics(None))?;
    let mut topics: Vec<_> = metadata
        .topics
        .iter()
        .filter_map(|t| {
            t.name
                .as_ref()
                .map(|n| (n.as_str().to_string(), t.partitions.len()))
        })
        .collect();
    topics.sort();
    Ok(topics)
}

fn list_table(topics: &[(String, usize)]) -> String {
    let mut out = format!("{:<40} {:>10}\n", "TOPIC", "PARTITIONS");
    for (name, partitions) in topics {
        out.push_str(&format!("{name:<40} {partitions:>10}\n"));
    }
    out
}

/// `{"topics": [{"name": ..., "partitions": N}, ...]}`.
fn list_json(topics: &[(String, usize)]) -> Value {
    json!({
        "topics": topics
            .iter()
            .map(|(name, partitions)| json!({"name": name, "partitions": partitions}))
            .collect::<Vec<_>>(),
    })
}

/// A topic's id and its partition indexes in order, from Metadata (never creating it).
pub(super) fn partition_indexes(
    broker: &mut AdminConnection,
    name: &str,
) -> anyhow::Result<(uuid::Uuid, Vec<i32>)> {
    let metadata = broker.send(
        &MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(TopicName(text(name))))
            ]))
            .with_allow_auto_topic_creation(false),
    )?;
    let topic = metadata
        .topics
        .first()
        .ok_or_else(|| anyhow!("no metadata for {name}"))?;
    check(topic.error_code, None, name)?;
    let mut indexes: Vec<i32> = topic.partitions.iter().map(|p| p.partition_index).collect();
    indexes.sort_unstable();
    Ok((topic.topic_id, indexes))
}

/// What `topic describe` shows.
#[derive(Debug, Clone, PartialEq)]
struct TopicDescription {
    name: String,
    id: uuid::Uuid,
    /// Per partition, in index order.
    partitions: Vec<PartitionFacts>,
    configs: Vec<ConfigEntry>,
}

/// One partition as `topic describe` shows it; -1 where the broker gave nothing.
#[derive(Debug, Clone, Copy, PartialEq)]
struct PartitionFacts {
    index: i32,
    log_start: i64,
    log_end: i64,
    /// Bytes of the partition's log on disk (DescribeLogDirs).
    size_bytes: i64,
}

/// One config of a topic as DescribeConfigs reports it.
#[derive(Debug, Clone, PartialEq)]
struct ConfigEntry {
    name: String,
    value: Option<String>,
    /// `topic` for an override, `default` otherwise.
    source: &'static str,
}

fn describe(broker: &mut AdminConnection, name: &str) -> anyhow::Result<TopicDescription> {
    let (id, indexes) = partition_indexes(broker, name)?;
    let earliest = offsets(broker, name, &indexes, EARLIEST)?;
    let latest = latest_offsets(broker, name, &indexes)?;
    let sizes = log_sizes(broker, name, &indexes)?;
    let partitions = indexes
        .iter()
        .map(|index| PartitionFacts {
            index: *index,
            log_start: earliest.get(index).copied().unwrap_or(-1),
            log_end: latest.get(index).copied().unwrap_or(-1),
            size_bytes: sizes.get(index).copied().unwrap_or(-1),
        })
        .collect();
    let described = broker.send(&DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(text(name))
            .with_configuration_keys(None),
    ]))?;
    let mut configs = Vec::new();
    for result in &described.results {
        check(
            result.error_code,
            result.error_message.as_ref(),
            "describing configs",
        )?;
        configs.extend(result.configs.iter().map(|config| ConfigEntry {
            name: config.name.as_str().to_string(),
            value: config.value.as_ref().map(|v| v.as_str().to_string()),
            source: if config.config_source == SOURCE_TOPIC_OVERRIDE {
                "topic"
            } else {
                "default"
            },
        }));
    }
    Ok(TopicDescription {
        name: name.to_string(),
        id,
        partitions,
        configs,
    })
}

/// Bytes of each partition's log, from DescribeLogDirs.
fn log_sizes(
    broker: &mut AdminConnection,
    name: &str,
    partitions: &[i32],
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let described = broker.send(&DescribeLogDirsRequest::default().with_topics(Some(vec![
        DescribableLogDirTopic::default()
            .with_topic(TopicName(text(name)))
            .with_partitions(partitions.to_vec()),
    ])))?;
    Ok(described
        .results
        .iter()
        .flat_map(|dir| &dir.topics)
        .filter(|topic| topic.name.as_str() == name)
        .flat_map(|topic| &topic.partitions)
        .map(|p| (p.partition_index, p.partition_size))
        .collect())
}

/// Records between a log start and end, or `None` when either is unknown.
fn record_count(start: i64, end: i64) -> Option<i64> {
    (start >= 0 && end >= start).then_some(end - start)
}

fn describe_table(topic: &TopicDescription) -> String {
    let mut out = String::new();
    out.push_str(&format!("topic      {}\n", topic.name));
    out.push_str(&format!("id         {}\n", topic.id));
    out.push_str(&format!("partitions {}\n\n", topic.partitions.len()));
    out.push_str(&format!(
        "{:>9} {:>14} {:>14} {:>14} {:>14}\n",
        "PARTITION", "LOG-START", "LOG-END", "RECORDS", "SIZE-BYTES"
    ));
    for p in &topic.partitions {
        let records = record_count(p.log_start, p.log_end).unwrap_or(-1);
        out.push_str(&format!(
            "{:>9} {:>14} {:>14} {records:>14} {:>14}\n",
            p.index, p.log_start, p.log_end, p.size_bytes
        ));
    }
    out.push_str(&format!("\n{:<40} {:<24} SOURCE\n", "CONFIG", "VALUE"));
    for config in &topic.configs {
        let value = config.value.as_deref().unwrap_or("");
        out.push_str(&format!(
            "{:<40} {:<24} {}\n",
            config.name, value, config.source
        ));
    }
    out
}

/// The description as one JSON document; offsets the broker did not give are `null`.
fn describe_json(topic: &TopicDescription) -> Value {
    let known = |offset: i64| (offset >= 0).then_some(offset);
    json!({
        "name": topic.name,
        "id": topic.id.to_string(),
        "partitions": topic
            .partitions
            .iter()
            .map(|p| {
                json!({
                    "partition": p.index,
                    "log_start_offset": known(p.log_start),
                    "log_end_offset": known(p.log_end),
                    "records": record_count(p.log_start, p.log_end),
                    "size_bytes": known(p.size_bytes),
                })
            })
            .collect::<Vec<_>>(),
        "configs": topic
            .configs
            .iter()
            .map(|c| json!({"name": c.name, "value": c.value, "source": c.source}))
            .collect::<Vec<_>>(),
    })
}

/// Log end offset of each partition.
pub(super) fn latest_offsets(
    broker: &mut AdminConnection,
    name: &str,
    partitions: &[i32],
) -> anyhow::Result<BTreeMap<i32, i64>> {
    offsets(broker, name, partitions, LATEST)
}

/// Per partition, the offset ListOffsets answers for `which`: [`EARLIEST`], the log end, or a
/// timestamp (the first record at or after it; -1 if there is none).
pub(super) fn offsets(
    broker: &mut AdminConnection,
    name: &str,
    partitions: &[i32],
    which: i64,
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let request = ListOffsetsRequest::default()
        .with_replica_id((-1).into())
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(text(name)))
            .with_partitions(
                partitions
                    .iter()
                    .map(|p| {
                        ListOffsetsPartition::default()
                            .with_partition_index(*p)
                            .with_timestamp(which)
                    })
                    .collect(),
            )]);
    let response = broker.send(&request)?;
    Ok(response
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter())
        .map(|p| (p.partition_index, p.offset))
        .collect())
}

fn delete(broker: &mut AdminConnection, names: &[String]) -> anyhow::Result<()> {
    const TOPICS_AS_STATES_FROM: i16 = 6;
    let version = broker.version_for::<DeleteTopicsRequest>()?;
    let request = DeleteTopicsRequest::default().with_timeout_ms(30_000);
    let request = if version >= TOPICS_AS_STATES_FROM {
        request.with_topics(
            names
                .iter()
                .map(|n| DeleteTopicState::default().with_name(Some(TopicName(text(n)))))
                .collect(),
        )
    } else {
        request.with_topic_names(names.iter().map(|n| TopicName(text(n))).collect())
    };
    let response = broker.send_at(&request, version)?;
    for result in &response.responses {
        let name = result.name.as_ref().map(|n| n.as_str()).unwrap_or("?");
        check(
            result.error_code,
            result.error_message.as_ref(),
            &format!("deleting {name}"),
        )?;
        println!("deleted topic {name}");
    }
    Ok(())
}

fn alter_config(
    broker: &mut AdminConnection,
    name: &str,
    set: &[(String, String)],
    delete: &[String],
) -> anyhow::Result<()> {
    const SET: i8 = 0;
    const DELETE: i8 = 1;
    if set.is_empty() && delete.is_empty() {
        bail!("nothing to change: give --set KEY=VALUE or --delete KEY");
    }
    let mut configs: Vec<AlterableConfig> = set
        .iter()
        .map(|(k, v)| {
            AlterableConfig::default()
                .with_name(text(k))
                .with_config_operation(SET)
                .with_value(Some(text(v)))
        })
        .collect();
    configs.extend(delete.iter().map(|k| {
        AlterableConfig::default()
            .with_name(text(k))
            .with_config_operation(DELETE)
    }));
    let response = broker.send(
        &IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(RESOURCE_TOPIC)
                .with_resource_name(text(name))
                .with_configs(configs),
        ]),
    )?;
    for result in &response.responses {
        check(
            result.error_code,
            result.error_message.as_ref(),
            &format!("altering {name}"),
        )?;
    }
    println!("altered configs of {name}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn orders() -> TopicDescription {
        TopicDescription {
            name: "orders".to_string(),
            id: uuid::Uuid::from_u128(0x1234),
            partitions: [(0, 0, 5, 300), (1, 2, 7, 410), (2, -1, -1, -1)]
                .into_iter()
                .map(|(index, log_start, log_end, size_bytes)| PartitionFacts {
                    index,
                    log_start,
                    log_end,
                    size_bytes,
                })
                .collect(),
            configs: vec![
                ConfigEntry {
                    name: "retention.ms".to_string(),
                    value: Some("3600000".to_string()),
                    source: "topic",
                },
                ConfigEntry {
                    name: "cleanup.policy".to_string(),
                    value: Some("delete".to_string()),
                    source: "default",
                },
                ConfigEntry {
                    name: "secret.thing".to_string(),
                    value: None,
                    source: "default",
                },
            ],
        }
    }

    #[test]
    fn describe_json_has_every_fact_of_the_table() {
        let json = describe_json(&orders());
        assert_eq!(json["name"], "orders");
        assert_eq!(json["id"], "00000000-0000-0000-0000-000000001234");
        let partitions = json["partitions"].as_array().expect("partitions");
        assert_eq!(partitions.len(), 3);
        assert_eq!(
            partitions[1],
            json!({"partition": 1, "log_start_offset": 2, "log_end_offset": 7, "records": 5, "size_bytes": 410})
        );
        assert_eq!(
            partitions[2],
            json!({"partition": 2, "log_start_offset": null, "log_end_offset": null, "records": null, "size_bytes": null})
        );
        assert_eq!(
            json["configs"][0],
            json!({"name": "retention.ms", "value": "3600000", "source": "topic"})
        );
        assert_eq!(json["configs"][2]["value"], Value::Null);
        // One document on one line: what `--json` prints parses back whole.
        let printed = json.to_string();
        assert!(!printed.contains('\n'));
        assert_eq!(
            serde_json::from_str::<Value>(&printed).expect("parses"),
            json
        );
    }

    #[test]
    fn describe_table_shows_the_same_facts() {
        let table = describe_table(&orders());
        assert!(table.contains("topic      orders\n"), "{table}");
        assert!(table.contains("partitions 3\n"), "{table}");
        let row: Vec<&str> = table
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("1 "))
            .expect("partition 1 row")
            .split_whitespace()
            .collect();
        assert_eq!(row, ["1", "2", "7", "5", "410"]);
        assert!(table
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["retention.ms", "3600000", "topic"]));
    }

    #[test]
    fn list_json_names_each_topic_with_its_partition_count() {
        let topics = vec![("a".to_string(), 3), ("b".to_string(), 1)];
        assert_eq!(
            list_json(&topics),
            json!({"topics": [{"name": "a", "partitions": 3}, {"name": "b", "partitions": 1}]})
        );
        assert_eq!(list_json(&[]), json!({"topics": []}));
        assert_eq!(
            list_table(&topics)
                .lines()
                .nth(1)
                .map(|l| l.split_whitespace().collect::<Vec<_>>()),
            Some(vec!["a", "3"])
        );
    }
}
