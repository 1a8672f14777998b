//! Committed offsets: OffsetCommit (checked against the group's generation, then fsynced to the
//! group store before the answer), OffsetFetch (one group before v8, many from v8) and
//! OffsetDelete.

use std::collections::BTreeMap;
use std::sync::Arc;

use causeway_storage::CommittedOffset;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    ApiKey, OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse,
    OffsetFetchRequest, OffsetFetchResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{changing_topics, code, str_bytes, topic_name};
use crate::broker::Broker;
use crate::groups::CommitRequest;
use crate::metrics;
use crate::positions::{self, Travelled};

/// OffsetCommit v6 added the committed leader epoch.
const COMMIT_VERSION_LEADER_EPOCH: i16 = 6;
/// OffsetFetch v5 added the committed leader epoch.
const FETCH_VERSION_LEADER_EPOCH: i16 = 5;

fn count_error(api: ApiKey, error: i16) {
    if error != 0 {
        metrics::request_error(api, error);
    }
}

/// OffsetCommit.
pub async fn commit(
    broker: &Arc<Broker>,
    request: OffsetCommitRequest,
    version: i16,
) -> OffsetCommitResponse {
    let mut commits = Vec::new();
    let mut shape: Vec<(StrBytes, Vec<i32>)> = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in topic.partitions {
            partitions.push(p.partition_index);
            commits.push(CommitRequest {
                topic: topic.name.as_str().to_string(),
                partition: p.partition_index,
                offset: p.committed_offset,
                leader_epoch: if version >= COMMIT_VERSION_LEADER_EPOCH {
                    p.committed_leader_epoch
                } else {
                    -1
                },
                metadata: p.committed_metadata.map(|m| m.as_str().to_string()),
            });
        }
        shape.push((topic.name.0, partitions));
    }
    let known = |topic: &str, partition: i32| {
        broker
            .topics
            .get(topic)
            .is_some_and(|t| t.partition(partition).is_some())
    };
    let group_id = request.group_id.as_str().to_string();
    let (errors, stored) = broker
        .groups
        .commit_offsets(
            request.group_id.as_str(),
            request.member_id.as_str(),
            request.group_instance_id.as_ref().map(|i| i.as_str()),
            request.generation_id_or_member_epoch,
            commits,
            known,
        )
        .await;
    if broker.replication.enabled() && !stored.is_empty() {
        changing_topics(broker, move |b| {
            positions::record_commits(b, &group_id, &stored)
        })
        .await;
    }
    let topics = per_partition(shape, &mut errors.into_iter(), ApiKey::OffsetCommit)
        .into_iter()
        .map(|(name, partitions)| {
            OffsetCommitResponseTopic::default()
                .with_name(topic_name(name.as_str()))
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|(index, error)| {
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(index)
                                .with_error_code(error)
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// One partition's answer: the committed offset, or -1 with no error when nothing is committed.
fn fetched(
    committed: &BTreeMap<(String, i32), CommittedOffset>,
    topic: &str,
    partition: i32,
) -> (i64, i32, String) {
    match committed.get(&(topic.to_string(), partition)) {
        Some(c) => (
            c.offset,
            c.leader_epoch,
            c.metadata.clone().unwrap_or_default(),
        ),
        None => (-1, -1, String::new()),
    }
}

/// `(topic, partitions)` asked for, or every committed one when `topics` is null.
fn wanted(
    committed: &BTreeMap<(String, i32), CommittedOffset>,
    topics: Option<Vec<(String, Vec<i32>)>>,
) -> Vec<(String, Vec<i32>)> {
    match topics {
        Some(topics) => topics,
        None => {
            let mut all: BTreeMap<String, Vec<i32>> = BTreeMap::new();
            for (topic, partition) in committed.keys() {
                all.entry(topic.clone()).or_default().push(*partition);
            }
            all.into_iter().collect()
        }
    }
}

/// OffsetFetch. With peers, positions committed in other regions are translated into this
/// region's logs, which reads them: that runs in the reads lane.
pub async fn fetch(
    broker: &Arc<Broker>,
    request: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    if !broker.replication.enabled() {
        return fetch_now(broker, request, version);
    }
    let broker = broker.clone();
    crate::blocking::READS
        .run(move || fetch_now(&broker, request, version))
        .await
        .unwrap_or_else(|error| {
            tracing::error!(%error, "an OffsetFetch task failed");
            OffsetFetchResponse::default()
                .with_error_code(ResponseError::CoordinatorNotAvailable.code())
        })
}

fn fetch_now(broker: &Broker, request: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    if version >= 8 {
        let groups = request
            .groups
            .into_iter()
            .map(|g| {
                let group = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
                match fetch_group(broker, g.group_id.as_str(), asked_topics(g.topics)) {
                    Ok(topics) => group.with_topics(
                        topics
                            .into_iter()
                            .map(|(topic, partitions)| {
                                OffsetFetchResponseTopics::default()
                                    .with_name(topic_name(&topic))
                                    .with_partitions(
                                        partitions
                                            .into_iter()
                                            .map(|p| {
                                                OffsetFetchResponsePartitions::default()
                                                    .with_partition_index(p.index)
                                                    .with_committed_offset(p.offset)
                                                    .with_committed_leader_epoch(p.leader_epoch)
                                                    .with_metadata(Some(str_bytes(p.metadata)))
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    ),
                    Err(error) => group.with_error_code(error.code()),
                }
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    // v1 has no null "all topics" form; an empty list then means nothing.
    let topics = match fetch_group(
        broker,
        request.group_id.as_str(),
        asked_topics(request.topics),
    ) {
        Ok(topics) => topics,
        Err(error) if version >= 2 => {
            return OffsetFetchResponse::default().with_error_code(error.code())
        }
        Err(_) => return OffsetFetchResponse::default(),
    };
    let topics = topics
        .into_iter()
        .map(|(topic, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|p| {
                    let partition = OffsetFetchResponsePartition::default()
                        .with_partition_index(p.index)
                        .with_committed_offset(p.offset)
                        .with_metadata(Some(str_bytes(p.metadata)));
                    if version >= FETCH_VERSION_LEADER_EPOCH {
                        partition.with_committed_leader_epoch(p.leader_epoch)
                    } else {
                        partition
                    }
                })
                .collect();
            OffsetFetchResponseTopic::default()
                .with_name(topic_name(&topic))
                .with_partitions(partitions)
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}

/// One partition's committed position as OffsetFetch reports it, whatever the version.
struct FetchedPartition {
    index: i32,
    offset: i64,
    leader_epoch: i32,
    metadata: String,
}

/// The topics and partitions an OffsetFetch names (`None`: every committed one).
fn asked_topics<T: AskedTopic>(topics: Option<Vec<T>>) -> Option<Vec<(String, Vec<i32>)>> {
    topics.map(|ts| ts.into_iter().map(AskedTopic::parts).collect())
}

/// A topic entry of an OffsetFetch request; the versions before and from 8 use two types.
trait AskedTopic {
    fn parts(self) -> (String, Vec<i32>);
}

impl AskedTopic for OffsetFetchRequestTopic {
    fn parts(self) -> (String, Vec<i32>) {
        (self.name.as_str().to_string(), self.partition_indexes)
    }
}

impl AskedTopic for OffsetFetchRequestTopics {
    fn parts(self) -> (String, Vec<i32>) {
        (self.name.as_str().to_string(), self.partition_indexes)
    }
}

/// One group's committed positions for what was asked, by topic; the version-neutral half of
/// OffsetFetch. A store failure is COORDINATOR_NOT_AVAILABLE (logged and counted).
fn fetch_group(
    broker: &Broker,
    group_id: &str,
    asked: Option<Vec<(String, Vec<i32>)>>,
) -> Result<Vec<(String, Vec<FetchedPartition>)>, ResponseError> {
    let committed = broker.groups.fetch_offsets(group_id).map_err(|error| {
        tracing::error!(%error, "reading offsets failed");
        count_error(
            ApiKey::OffsetFetch,
            ResponseError::CoordinatorNotAvailable.code(),
        );
        ResponseError::CoordinatorNotAvailable
    })?;
    let travelled = broker.replication.enabled();
    let every_partition = asked.is_none();
    let mut wanted = wanted(&committed, asked);
    if travelled && every_partition {
        add_travelled(broker, group_id, &mut wanted);
    }
    Ok(wanted
        .into_iter()
        .map(|(topic, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|index| {
                    match travelled_position(broker, group_id, &topic, index, &committed) {
                        Some(position) => position,
                        None => {
                            let (offset, leader_epoch, metadata) =
                                fetched(&committed, &topic, index);
                            FetchedPartition {
                                index,
                                offset,
                                leader_epoch,
                                metadata,
                            }
                        }
                    }
                })
                .collect();
            (topic, partitions)
        })
        .collect())
}

/// Adds to `wanted` the partitions of live topics for which another region committed a
/// position of `group_id`.
fn add_travelled(broker: &Broker, group_id: &str, wanted: &mut Vec<(String, Vec<i32>)>) {
    let rows = match positions::group_rows(broker.positions(), group_id) {
        Ok(rows) => rows,
        Err(error) => {
            tracing::warn!(group = group_id, %error, "reading the group's positions failed");
            return;
        }
    };
    let mut all: BTreeMap<String, Vec<i32>> = std::mem::take(wanted).into_iter().collect();
    for (topic_id, partition) in rows {
        let Some(topic) = broker.topics.get_by_id(topic_id) else {
            continue;
        };
        let partitions = all.entry(topic.name.clone()).or_default();
        if !partitions.contains(&partition) {
            partitions.push(partition);
            partitions.sort_unstable();
        }
    }
    *wanted = all.into_iter().collect();
}

/// The position of `group_id` in one partition translated from another region's newer commit,
/// if there is one.
fn travelled_position(
    broker: &Broker,
    group_id: &str,
    topic: &str,
    index: i32,
    committed: &BTreeMap<(String, i32), CommittedOffset>,
) -> Option<FetchedPartition> {
    if !broker.replication.enabled() {
        return None;
    }
    let topic_handle = broker.topics.get(topic)?;
    let local = committed.get(&(topic.to_string(), index));
    match positions::travelled(broker.positions(), group_id, &topic_handle, index, local) {
        Ok(Travelled::Local) => None,
        Ok(Travelled::Deleted) => Some(FetchedPartition {
            index,
            offset: -1,
            leader_epoch: -1,
            metadata: String::new(),
        }),
        Ok(Travelled::Resumed(record, resume)) => {
            metrics::position_translated(
                group_id,
                topic,
                index,
                resume.repeat_records,
                resume.missing_batches,
            );
            tracing::info!(
                group = group_id,
                topic,
                partition = index,
                from_region = record.region,
                committed_there = record.offset,
                resume_here = resume.offset,
                repeat_records = resume.repeat_records,
                missing_batches = resume.missing_batches,
                "a group's position committed in another region resumes here"
            );
            Some(FetchedPartition {
                index,
                offset: resume.offset,
                leader_epoch: -1,
                metadata: record.metadata.unwrap_or_default(),
            })
        }
        Err(error) => {
            tracing::warn!(group = group_id, topic, partition = index, %error, "translating a position from another region failed");
            None
        }
    }
}

/// OffsetDelete.
pub async fn delete(broker: &Arc<Broker>, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let mut shape: Vec<(StrBytes, Vec<i32>)> = Vec::with_capacity(request.topics.len());
    let mut partitions = Vec::new();
    for topic in request.topics {
        let indexes: Vec<i32> = topic.partitions.iter().map(|p| p.partition_index).collect();
        for p in &indexes {
            partitions.push((topic.name.as_str().to_string(), *p));
        }
        shape.push((topic.name.0, indexes));
    }
    match broker
        .groups
        .delete_offsets(request.group_id.as_str(), partitions.clone())
        .await
    {
        Err(error) => {
            count_error(ApiKey::OffsetDelete, error.code());
            OffsetDeleteResponse::default().with_error_code(error.code())
        }
        Ok(errors) => {
            let deleted: Vec<(uuid::Uuid, i32)> = partitions
                .iter()
                .zip(&errors)
                .filter(|(_, outcome)| outcome.is_ok())
                .filter_map(|((topic, partition), _)| {
                    broker.topics.get(topic).map(|t| (t.id, *partition))
                })
                .collect();
            if broker.replication.enabled() && !deleted.is_empty() {
                let group = request.group_id.as_str().to_string();
                changing_topics(broker, move |b| positions::forget(b, &group, Some(deleted))).await;
            }
            let topics = per_partition(shape, &mut errors.into_iter(), ApiKey::OffsetDelete)
                .into_iter()
                .map(|(name, partitions)| {
                    OffsetDeleteResponseTopic::default()
                        .with_name(topic_name(name.as_str()))
                        .with_partitions(
                            partitions
                                .into_iter()
                                .map(|(index, error)| {
                                    OffsetDeleteResponsePartition::default()
                                        .with_partition_index(index)
                                        .with_error_code(error)
                                })
                                .collect(),
                        )
                })
                .collect();
            OffsetDeleteResponse::default().with_topics(topics)
        }
    }
}

/// Pairs each requested partition (in request order) with its outcome's error code, counting
/// the errors in the metrics of `api`.
fn per_partition(
    shape: Vec<(StrBytes, Vec<i32>)>,
    outcomes: &mut impl Iterator<Item = Result<(), ResponseError>>,
    api: ApiKey,
) -> Vec<(StrBytes, Vec<(i32, i16)>)> {
    shape
        .into_iter()
        .map(|(name, indexes)| {
            let partitions = indexes
                .into_iter()
                .map(|index| {
                    let error = outcomes.next().map_or(0, code);
                    count_error(api, error);
                    (index, error)
                })
                .collect();
            (name, partitions)
        })
        .collect()
}
