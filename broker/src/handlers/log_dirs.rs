//! DescribeLogDirs: the size of each partition's log and the space of the file system under the
//! data dir, as `kafka-log-dirs.sh --describe` and `causeway topic describe` read them. A region
//! keeps every partition in one log dir (the data dir), so there is one result; a partition or
//! topic this broker does not hold is left out, as Kafka leaves out what a log dir does not hold.
//! `offset_lag` is 0: there is no future replica catching up.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use causeway_storage::disk_space;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse};

use super::{str_bytes, topic_name};
use crate::broker::Broker;
use crate::topics::Topic;

/// Answers for the requested partitions (every partition when `topics` is null).
pub fn describe(broker: &Broker, request: DescribeLogDirsRequest) -> DescribeLogDirsResponse {
    let wanted: Vec<(Arc<Topic>, Option<BTreeSet<i32>>)> = match request.topics {
        None => broker.topics.all().into_iter().map(|t| (t, None)).collect(),
        Some(requested) => {
            let mut by_name: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
            for t in requested {
                by_name
                    .entry(t.topic.as_str().to_string())
                    .or_default()
                    .extend(t.partitions);
            }
            by_name
                .into_iter()
                .filter_map(|(name, indexes)| Some((broker.topics.get(&name)?, Some(indexes))))
                .collect()
        }
    };
    let topics = wanted
        .into_iter()
        .map(|(topic, indexes)| {
            let partitions = topic
                .partitions()
                .into_iter()
                .filter(|p| indexes.as_ref().is_none_or(|i| i.contains(&p.index())))
                .map(|p| {
                    DescribeLogDirsPartition::default()
                        .with_partition_index(p.index())
                        .with_partition_size(
                            i64::try_from(p.log().size_bytes()).unwrap_or(i64::MAX),
                        )
                        .with_offset_lag(0)
                        .with_is_future_key(false)
                })
                .collect();
            DescribeLogDirsTopic::default()
                .with_name(topic_name(&topic.name))
                .with_partitions(partitions)
        })
        .collect();
    let data_dir = &broker.options.data_dir;
    let (total, usable) = disk_space(data_dir).map_or((-1, -1), |(total, usable)| {
        (
            i64::try_from(total).unwrap_or(i64::MAX),
            i64::try_from(usable).unwrap_or(i64::MAX),
        )
    });
    let log_dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.clone());
    DescribeLogDirsResponse::default().with_results(vec![DescribeLogDirsResult::default()
        .with_log_dir(str_bytes(log_dir.display().to_string()))
        .with_topics(topics)
        .with_total_bytes(total)
        .with_usable_bytes(usable)])
}
