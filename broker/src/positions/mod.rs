//! Consumer group positions that follow the data across regions.
//!
//! Groups stay local to a region for membership, and a committed offset is an offset in the
//! committing region's log. In a region with peers, every commit also writes its
//! [`frontier::Position`]
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

use bytes::Bytes;
use causeway_protocol::plain_batch::encode_plain_batch;
use causeway_replication::crdt::{Content, Row};
use causeway_replication::HybridClock;
use causeway_storage::{CommittedOffset, OffsetEntry, StorageError, TableStore};
use uuid::Uuid;

use crate::broker::Broker;
use crate::metrics;
use crate::tables::store_name;
use crate::topics::{NewTopic, Topic, Topics};
use crate::wall_clock::now_ms;
use frontier::Resume;
use record::{group_prefix, parse_key, row_key, CommitRecord};

/// The replicated table of committed positions.
pub const POSITIONS_TOPIC: &str = "__causeway_positions";

/// Most rows of one group an OffsetFetch for all of the group's partitions reads.
const GROUP_ROWS_MAX: usize = 100_000;

/// The config of [`POSITIONS_TOPIC`]: a table. Its records are plain puts of JSON (clients
/// cannot write there), so a row is its last writer by stamp, readable with the table API.
/// Tombstones stay [`DELETE_KEPT_MS`], so a delete hides older commits of other regions that
/// long.
fn positions_configs() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("cleanup.policy".to_string(), "compact".to_string()),
        (
            "delete.retention.ms".to_string(),
            DELETE_KEPT_MS.to_string(),
        ),
    ])
}

/// How long the positions table keeps a deleted group's tombstones: 30 days.
const DELETE_KEPT_MS: i64 = 30 * 24 * 3_600_000;

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
        rows.push((row_key(group, topic.id, *partition), Some(value)));
    }
    append_rows(broker, &rows)?;
    metrics::positions_written(rows.len());
    Ok(())
}

/// Deletes `group`'s positions in these partitions (topic incarnation, partition), or in every
/// partition when `partitions` is `None`, in every region: DeleteGroups and OffsetDelete travel
/// too, or another region's older commit would bring the group's position back. A commit made
/// after the delete, anywhere, wins over it. Blocking; failures are logged and counted.
pub fn forget(broker: &Broker, group: &str, partitions: Option<Vec<(Uuid, i32)>>) {
    if !broker.replication.enabled() {
        return;
    }
    let partitions = match partitions {
        Some(partitions) => Ok(partitions),
        None => group_rows(broker.positions(), group).map_err(|e| e.to_string()),
    };
    let written = partitions.and_then(|partitions| {
        let rows: Vec<(Vec<u8>, Option<Vec<u8>>)> = partitions
            .into_iter()
            .map(|(topic, partition)| (row_key(group, topic, partition), None))
            .collect();
        append_rows(broker, &rows)
    });
    if let Err(error) = written {
        metrics::positions_write_failed();
        tracing::warn!(group, %error, "the group's deleted positions could not be written for other regions");
    }
}

/// Rows per batch appended to the positions table: a commit of many partitions stays well
/// under the table's `max.message.bytes` (a row is a few hundred bytes).
const ROWS_PER_BATCH: usize = 500;

/// Appends rows (a `None` value deletes the row) to the positions table.
fn append_rows(broker: &Broker, rows: &[(Vec<u8>, Option<Vec<u8>>)]) -> Result<(), String> {
    if rows.is_empty() {
        return Ok(());
    }
    let topic = positions_topic(broker)?;
    let handle = topic
        .partition(0)
        .ok_or_else(|| format!("{POSITIONS_TOPIC} has no partition 0"))?;
    for chunk in rows.chunks(ROWS_PER_BATCH) {
        let now = now_ms();
        let records: Vec<(Option<Bytes>, Option<Bytes>)> = chunk
            .iter()
            .map(|(key, value)| {
                (
                    Some(Bytes::copy_from_slice(key)),
                    value.as_deref().map(Bytes::copy_from_slice),
                )
            })
            .collect();
        let batch = encode_plain_batch(&records, now)?;
        handle
            .append_local(&batch, now)
            .map_err(|e| e.to_string())?;
    }
    // Served to peers once the syncer fsyncs it.
    broker.replication.own_batches_appended();
    Ok(())
}

/// The positions table as one region reads it: all OffsetFetch and the lag gauge need.
#[derive(Clone, Copy)]
pub struct PositionsView<'a> {
    /// This region's topics.
    pub topics: &'a Topics,
    /// This region's table rows.
    pub tables: &'a TableStore,
    /// This region's id: its own rows are answered from its own commits.
    pub region_id: u32,
}

impl Broker {
    /// The positions table as this region reads it.
    pub fn positions(&self) -> PositionsView<'_> {
        PositionsView {
            topics: &self.topics,
            tables: &self.tables,
            region_id: self.region_id,
        }
    }
}

/// What OffsetFetch answers for one partition of a group, given the positions table.
#[derive(Debug)]
pub enum Travelled {
    /// Answer this region's own commit: the table holds nothing newer from another region.
    Local,
    /// The group's position was deleted (DeleteGroups, OffsetDelete) after this region's own
    /// commit, here or in another region: nothing is committed.
    Deleted,
    /// Another region's newer commit, and where it resumes here.
    Resumed(CommitRecord, Resume),
}

/// What OffsetFetch answers for `group` in one partition, given `local`, this region's own
/// commit: another region's newer commit translated into this region's log, or a newer delete.
pub fn travelled(
    view: PositionsView<'_>,
    group: &str,
    topic: &Topic,
    partition: i32,
    local: Option<&CommittedOffset>,
) -> Result<Travelled, StorageError> {
    let newer_than_local = |at_ms: i64| local.is_none_or(|local| at_ms > local.commit_ms);
    let record = match read_row(view, &row_key(group, topic.id, partition))? {
        StoredPosition::Absent => return Ok(Travelled::Local),
        StoredPosition::Deleted { at_ms } if local.is_some() && newer_than_local(at_ms) => {
            return Ok(Travelled::Deleted)
        }
        StoredPosition::Deleted { .. } => return Ok(Travelled::Local),
        StoredPosition::Committed(record) => record,
    };
    if record.region == view.region_id || !newer_than_local(record.commit_ms) {
        return Ok(Travelled::Local);
    }
    let Some(handle) = topic.partition(partition) else {
        return Ok(Travelled::Local);
    };
    let resume = handle.resume_at(&record.position)?;
    Ok(Travelled::Resumed(record, resume))
}

/// Every partition (topic id, partition) `group` has a position row for.
pub fn group_rows(view: PositionsView<'_>, group: &str) -> Result<Vec<(Uuid, i32)>, StorageError> {
    let Some(topic) = view.topics.get(POSITIONS_TOPIC) else {
        return Ok(Vec::new());
    };
    let rows = view.tables.scan(
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

/// One row of the positions table as this region holds it.
enum StoredPosition {
    /// Never written.
    Absent,
    /// Deleted at this wall time (ms).
    Deleted { at_ms: i64 },
    /// The latest commit.
    Committed(CommitRecord),
}

fn read_row(view: PositionsView<'_>, key: &[u8]) -> Result<StoredPosition, StorageError> {
    let Some(topic) = view.topics.get(POSITIONS_TOPIC) else {
        return Ok(StoredPosition::Absent);
    };
    let Some(bytes) = view.tables.row(&store_name(&topic), key)? else {
        return Ok(StoredPosition::Absent);
    };
    let row =
        Row::from_bytes(&bytes).map_err(|e| StorageError::Db(format!("positions row: {e}")))?;
    let parsed = match row.materialize() {
        None => {
            let at_ms = row
                .version()
                .map(|stamp| HybridClock::physical_ms(stamp.hlc))
                .unwrap_or(0);
            return Ok(StoredPosition::Deleted {
                at_ms: i64::try_from(at_ms).unwrap_or(i64::MAX),
            });
        }
        Some(Content::Bytes(bytes)) => serde_json::from_slice(&bytes),
        Some(Content::Json(value)) => serde_json::from_value(value),
    };
    match parsed {
        Ok(record) => Ok(StoredPosition::Committed(record)),
        Err(error) => {
            tracing::warn!(%error, "a positions row does not decode; ignored");
            Ok(StoredPosition::Absent)
        }
    }
}

/// A group's partition: `(group, topic, partition)`.
pub type GroupPartition = (String, String, i32);

/// Most rows of the positions table one scrape of the lag gauge reads.
const ROWS_GAUGED_MAX: usize = 10_000;

/// Consumer lag here of every group whose latest position another region committed: per
/// `(group, topic, partition)`, this region's log end minus where the group would resume here.
/// `local` is every offset committed here, which such a position must be newer than.
pub fn travelled_lags(
    view: PositionsView<'_>,
    local: &[(String, OffsetEntry)],
) -> Result<Vec<(GroupPartition, i64)>, StorageError> {
    let Some(table) = view.topics.get(POSITIONS_TOPIC) else {
        return Ok(Vec::new());
    };
    let local: BTreeMap<(&str, &str, i32), &CommittedOffset> = local
        .iter()
        .map(|(group, e)| {
            (
                (group.as_str(), e.topic.as_str(), e.partition),
                &e.committed,
            )
        })
        .collect();
    let rows = view
        .tables
        .scan(&store_name(&table), b"", None, ROWS_GAUGED_MAX)?;
    let mut lags = Vec::new();
    for (key, _) in rows {
        let Some((group, topic_id, partition)) = record::parse_any_key(&key) else {
            continue;
        };
        let Some(topic) = view.topics.get_by_id(topic_id) else {
            continue;
        };
        let committed = local.get(&(group.as_str(), topic.name.as_str(), partition));
        if let Travelled::Resumed(_, resume) =
            travelled(view, &group, &topic, partition, committed.copied())?
        {
            let end = topic
                .partition(partition)
                .map_or(0, |p| p.log().log_end_offset());
            lags.push((
                (group, topic.name.clone(), partition),
                (end - resume.offset).max(0),
            ));
        }
    }
    Ok(lags)
}

/// `GET /v1/groups/{group}/positions`: per partition the group has a position in, the latest
/// commit any region made (committing region, offset there, frontier by region name) and what
/// this region answers for it (its own commit, the travelled position translated here, or a
/// delete), with where the group resumes here, the records it may see again and its lag.
pub fn report(broker: &Broker, group: &str) -> Result<serde_json::Value, StorageError> {
    let view = broker.positions();
    let local = broker.groups.fetch_offsets(group)?;
    let mut partitions = Vec::new();
    for (topic_id, partition) in group_rows(view, group)? {
        let Some(topic) = broker.topics.get_by_id(topic_id) else {
            continue;
        };
        let committed = local.get(&(topic.name.clone(), partition));
        let latest = match read_row(view, &row_key(group, topic.id, partition))? {
            StoredPosition::Committed(record) => Some(record),
            StoredPosition::Absent | StoredPosition::Deleted { .. } => None,
        };
        let end = topic
            .partition(partition)
            .map_or(0, |p| p.log().log_end_offset());
        let here = match travelled(view, group, &topic, partition, committed)? {
            Travelled::Local => serde_json::json!({
                "answer": "local",
                "offset": committed.map(|c| c.offset),
                "lag": committed.map(|c| (end - c.offset).max(0)),
            }),
            Travelled::Deleted => serde_json::json!({"answer": "deleted"}),
            Travelled::Resumed(_, resume) => serde_json::json!({
                "answer": "travelled",
                "offset": resume.offset,
                "repeat_records": resume.repeat_records,
                "missing_batches": resume.missing_batches,
                "lag": (end - resume.offset).max(0),
            }),
        };
        let latest = latest.map(|record| {
            let frontier: BTreeMap<String, u64> = record
                .position
                .frontier
                .iter()
                .map(|&(region, seq)| (broker.replication.region_name(region), seq))
                .collect();
            serde_json::json!({
                "region": broker.replication.region_name(record.region),
                "offset": record.offset,
                "commit_ms": record.commit_ms,
                "frontier": frontier,
                "inside_batch": record.position.partial.map(|batch| serde_json::json!({
                    "region": broker.replication.region_name(batch.origin),
                    "seq": batch.seq,
                    "consumed": batch.consumed,
                })),
            })
        });
        partitions.push(serde_json::json!({
            "topic": topic.name,
            "partition": partition,
            "latest_commit": latest,
            "here": here,
        }));
    }
    Ok(
        serde_json::json!({"group": group, "region": broker.options.region, "partitions": partitions}),
    )
}

/// Most batches one `/v1/topics/{topic}/partitions/{partition}/batches` answer lists.
pub const BATCHES_LISTED_MAX: usize = 10_000;

/// Offsets one batch listing scans at most, so a sparse range cannot make it read a whole log.
const BATCHES_SCAN_OFFSETS_MAX: i64 = 1_000_000;

/// `GET /v1/topics/{topic}/partitions/{partition}/batches?from=OFFSET&limit=N`: the batches
/// starting at or after `from` (at most `limit`), each with its base offset in this region's log
/// and the region and sequence that name it in every region. With a group's frontier (from
/// `/v1/groups/{group}/positions`) an application can skip the records it already consumed in
/// another region: a record whose batch's sequence is at or below the frontier's for that
/// region, or one of the first `consumed` records of the batch it stopped inside.
pub fn batches(
    broker: &Broker,
    topic: &str,
    partition: i32,
    from: i64,
    limit: usize,
) -> Result<Option<serde_json::Value>, StorageError> {
    let Some(handle) = broker
        .topics
        .get(topic)
        .and_then(|t| t.partition(partition))
    else {
        return Ok(None);
    };
    let log = handle.log();
    let from = from.max(log.log_start_offset());
    let to = log
        .log_end_offset()
        .min(from.saturating_add(BATCHES_SCAN_OFFSETS_MAX));
    let entries = log.causal_entries(from, to)?;
    let limit = limit.clamp(1, BATCHES_LISTED_MAX);
    let listed: Vec<serde_json::Value> = entries
        .iter()
        .take(limit)
        .map(|(base, meta)| {
            serde_json::json!({
                "base_offset": base,
                "region": broker.replication.region_name(meta.origin_region),
                "seq": meta.origin_seq,
            })
        })
        .collect();
    let next = match entries.get(limit) {
        Some((base, _)) => Some(*base),
        None if to < log.log_end_offset() => Some(to),
        None => None,
    };
    Ok(Some(serde_json::json!({"batches": listed, "next": next})))
}
