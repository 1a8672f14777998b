//! Consumer group positions that follow the data across regions.
//!
//! Groups stay local to a region for membership, and a committed offset is an offset in the
//! committing region's log. In a region with peers, every commit also writes its [`Position`]
//! (what the group consumed, as a frontier every region understands) to the replicated table
//! [`POSITIONS_TOPIC`] (one row per group, topic incarnation and
//! partition, last writer by stamp: a deliberate seek backwards wins, as in Kafka). OffsetFetch
//! in any region answers from the newer of its own commit and that row: a row written by another
//! region is translated into this region's log by [`frontier::resume_at`], so a group moved to
//! this region resumes with nothing lost and a counted number of repeats.
//! See `docs/replication.md`, "Consumer groups across regions".

pub mod frontier;
pub mod record;

use std::collections::BTreeMap;
use std::sync::Arc;

use causeway_replication::crdt::{Content, Row};
use causeway_storage::{CommittedOffset, OffsetEntry, StorageError};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use uuid::Uuid;

use crate::broker::Broker;
use crate::metrics;
use crate::tables::store_name;
use crate::topics::{NewTopic, Topic};
use crate::wall_clock::now_ms;
use frontier::Resume;
use record::{group_prefix, parse_key, row_key, CommitRecord};

/// The replicated table of committed positions.
pub const POSITIONS_TOPIC: &str = "__causeway_positions";

/// Most rows of one group an OffsetFetch for all of the group's partitions reads.
const GROUP_ROWS_MAX: usize = 100_000;

/// The config of [`POSITIONS_TOPIC`]: a table. Its records are plain puts of JSON (clients
/// cannot write there), so a row is its last writer by stamp, readable with the table API.
fn positions_configs() -> BTreeMap<String, String> {
    BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())])
}

/// Whether `name` is a topic the broker keeps for itself (listed as internal in Metadata,
/// refused to producers).
pub fn is_internal(name: &str) -> bool {
    name == POSITIONS_TOPIC
}

/// The positions topic, created on first use (every region creating it at once creates the
/// same topic: the catalog merges creates of one name).
fn positions_topic(broker: &Broker) -> Result<Arc<Topic>, String> {
    if let Some(topic) = broker.topics.get(POSITIONS_TOPIC) {
        return Ok(topic);
    }
    let created = broker.topics.create(NewTopic {
        name: POSITIONS_TOPIC.to_string(),
        partitions: 1,
        configs: positions_configs(),
    });
    match created {
        Ok(topic) => Ok(topic),
        Err(error) => broker
            .topics
            .get(POSITIONS_TOPIC)
            .ok_or_else(|| format!("creating {POSITIONS_TOPIC}: {error}")),
    }
}

/// Writes the positions of offsets just committed (and stored) here by `group`, so other
/// regions can resume the group where it stopped. Only in a region with peers; blocking (reads
/// the logs, appends). A failure is logged and counted and does not fail the commit, which is
/// stored: the group then resumes elsewhere from its previous position, with more repeats.
pub fn record_commits(broker: &Broker, group: &str, commits: &[OffsetEntry]) {
    if !broker.replication.enabled() || commits.is_empty() {
        return;
    }
    if let Err(error) = try_record(broker, group, commits) {
        metrics::positions_write_failed();
        tracing::warn!(group, %error, "the committed positions could not be written for other regions");
    }
}

fn try_record(broker: &Broker, group: &str, commits: &[OffsetEntry]) -> Result<(), String> {
    let mut rows = Vec::with_capacity(commits.len());
    for OffsetEntry {
        topic: topic_name,
        partition,
        committed,
    } in commits
    {
        if is_internal(topic_name) || committed.offset < 0 {
            continue;
        }
        let Some(topic) = broker.topics.get(topic_name) else {
            continue;
        };
        let Some(handle) = topic.partition(*partition) else {
            continue;
        };
        let position = handle
            .position_at(committed.offset)
            .map_err(|e| e.to_string())?;
        let value = CommitRecord {
            region: broker.region_id,
            commit_ms: committed.commit_ms,
            offset: committed.offset,
            leader_epoch: committed.leader_epoch,
            metadata: committed.metadata.clone(),
            position,
        };
        let value = serde_json::to_vec(&value).map_err(|e| e.to_string())?;
        rows.push((row_key(group, topic.id, *partition), value));
    }
    if rows.is_empty() {
        return Ok(());
    }
    let topic = positions_topic(broker)?;
    let handle = topic
        .partition(0)
        .ok_or_else(|| format!("{POSITIONS_TOPIC} has no partition 0"))?;
    let now = now_ms();
    let mut batch = encode_batch(&rows, now)?;
    handle
        .append_local(&mut batch, now)
        .map_err(|e| e.to_string())?;
    broker.replication.data_progressed(true);
    metrics::positions_written(rows.len());
    Ok(())
}

fn encode_batch(rows: &[(Vec<u8>, Vec<u8>)], now: i64) -> Result<Vec<u8>, String> {
    let records: Vec<Record> = rows
        .iter()
        .enumerate()
        .map(|(i, (key, value))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder starts a new batch where offset - sequence changes.
            sequence: i as i32 - 1,
            timestamp: now,
            key: Some(key.clone().into()),
            value: Some(value.clone().into()),
            headers: Default::default(),
        })
        .collect();
    let mut encoded = bytes::BytesMut::new();
    RecordBatchEncoder::encode(
        &mut encoded,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| format!("encoding positions: {e}"))?;
    Ok(encoded.to_vec())
}

/// The committed position of `group` in one partition that another region wrote, when it is
/// newer than `local` (this region's own commit): where the group resumes here, with the commit
/// it came from.
pub fn remote_position(
    broker: &Broker,
    group: &str,
    topic: &Topic,
    partition: i32,
    local: Option<&CommittedOffset>,
) -> Result<Option<(CommitRecord, Resume)>, StorageError> {
    let Some(record) = read_row(broker, &row_key(group, topic.id, partition))? else {
        return Ok(None);
    };
    let newer = local.is_none_or(|local| record.commit_ms > local.commit_ms);
    if record.region == broker.region_id || !newer {
        return Ok(None);
    }
    let Some(handle) = topic.partition(partition) else {
        return Ok(None);
    };
    let resume = handle.resume_at(&record.position)?;
    metrics::position_translated(group, &topic.name, partition, &resume);
    tracing::info!(
        group,
        topic = topic.name,
        partition,
        from_region = record.region,
        committed_there = record.offset,
        resume_here = resume.offset,
        repeat_records = resume.repeat_records,
        missing_batches = resume.missing_batches,
        "a group's position committed in another region resumes here"
    );
    Ok(Some((record, resume)))
}

/// Every partition (topic id, partition) `group` has a position row for.
pub fn group_rows(broker: &Broker, group: &str) -> Result<Vec<(Uuid, i32)>, StorageError> {
    let Some(topic) = broker.topics.get(POSITIONS_TOPIC) else {
        return Ok(Vec::new());
    };
    let rows = broker.tables.scan(
        &store_name(&topic),
        &group_prefix(group),
        None,
        GROUP_ROWS_MAX,
    )?;
    Ok(rows
        .iter()
        .filter_map(|(key, _)| parse_key(group, key))
        .collect())
}

fn read_row(broker: &Broker, key: &[u8]) -> Result<Option<CommitRecord>, StorageError> {
    let Some(topic) = broker.topics.get(POSITIONS_TOPIC) else {
        return Ok(None);
    };
    let Some(bytes) = broker.tables.row(&store_name(&topic), key)? else {
        return Ok(None);
    };
    let content = Row::from_bytes(&bytes)
        .map_err(|e| StorageError::Db(format!("positions row: {e}")))?
        .materialize();
    let parsed = match content {
        None => return Ok(None),
        Some(Content::Bytes(bytes)) => serde_json::from_slice(&bytes),
        Some(Content::Json(value)) => serde_json::from_value(value),
    };
    match parsed {
        Ok(record) => Ok(Some(record)),
        Err(error) => {
            tracing::warn!(%error, "a positions row does not decode; ignored");
            Ok(None)
        }
    }
}
