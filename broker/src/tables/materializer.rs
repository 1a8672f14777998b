//! Applies table partitions' records to their rows, chunk by chunk, in the background.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use causeway_replication::crdt::{decode_op, MergeMode, Row, Stamp, OP_HEADER, PATH_HEADER};
use causeway_storage::{BatchHeader, CausalMeta, StorageError, TableStore};
use kafka_protocol::records::RecordBatchDecoder;
use tokio::sync::watch;

use super::{is_table, merge_mode, store_name};
use crate::background;
use crate::broker::Broker;
use crate::clock::now_ms;
use crate::metrics;
use crate::topics::{PartitionHandle, Topic};

/// How often the materializer looks for new records.
const POLL_PERIOD: Duration = Duration::from_millis(20);
/// Log bytes read per chunk; one chunk is one RocksDB write.
const CHUNK_BYTES: usize = 1 << 20;
/// Chunks per partition per pass, so one busy table does not starve the others.
const CHUNKS_PER_PASS_MAX: usize = 64;

/// Runs until shutdown.
pub async fn run(broker: Arc<Broker>, shutdown: watch::Receiver<bool>) {
    background::every(POLL_PERIOD, "tables", broker, shutdown, materialize_all).await;
}

fn materialize_all(broker: &Broker) {
    for topic in broker.topics.all() {
        let overrides = topic.overrides();
        if !is_table(&overrides) {
            continue;
        }
        let mode = merge_mode(&overrides);
        for partition in topic.partitions() {
            for _ in 0..CHUNKS_PER_PASS_MAX {
                match materialize_chunk(&broker.tables, &topic, &partition, mode) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(error) => {
                        tracing::error!(topic = %topic.name, partition = partition.index, %error, "materializing failed");
                        break;
                    }
                }
            }
            publish_lag(&broker.tables, &topic, &partition);
        }
        if let Ok(live) = broker.tables.live_rows(&store_name(&topic)) {
            metrics::table_rows(&topic.name, live);
        }
    }
}

/// Publishes how far a table partition's rows trail its log, in records and in seconds (the age
/// of the oldest record not applied yet).
fn publish_lag(store: &TableStore, topic: &Topic, partition: &PartitionHandle) {
    let applied = store
        .applied(&store_name(topic), partition.index)
        .unwrap_or(0);
    let stable = partition.log.last_stable_offset();
    let behind_ms = if applied < stable {
        partition
            .log
            .read(applied.max(partition.log.log_start_offset()), 1)
            .ok()
            .and_then(|read| BatchHeader::parse(&read.records).ok())
            .map_or(0, |oldest| {
                now_ms().saturating_sub(oldest.base_timestamp).max(0)
            })
    } else {
        0
    };
    metrics::table_lag(&topic.name, partition.index, stable - applied, behind_ms);
}

/// Applies the next chunk of one partition; returns how many log offsets it advanced.
fn materialize_chunk(
    store: &TableStore,
    topic: &Topic,
    partition: &PartitionHandle,
    mode: MergeMode,
) -> Result<i64, StorageError> {
    let table = store_name(topic);
    let applied = store.applied(&table, partition.index)?;
    let from = applied.max(partition.log.log_start_offset());
    let stable = partition.log.last_stable_offset();
    if from >= stable {
        return Ok(0);
    }
    if applied == 0 && from == 0 {
        tracing::info!(topic = %topic.name, partition = partition.index, log_end = stable, "materializing table from the start of the log");
    }
    let read = partition.log.read(from, CHUNK_BYTES)?;
    let batches = whole_batches(&read.records, stable);
    let Some(last) = batches.last() else {
        return Ok(0);
    };
    let next = last.0.last_offset() + 1;
    let metas: HashMap<i64, CausalMeta> = partition
        .log
        .causal_entries(batches[0].0.base_offset, next)?
        .into_iter()
        .collect();
    let aborted = partition.log.aborted_transactions(from, next);
    // Each touched row with whether it was live before this chunk (for the live-row count).
    let mut rows: HashMap<Vec<u8>, (Row, bool)> = HashMap::new();
    let mut merges = 0u64;
    for (header, batch) in &batches {
        let skip = header.is_control()
            || aborted.iter().any(|a| {
                a.producer_id == header.producer_id
                    && a.first_offset <= header.base_offset
                    && header.base_offset < a.last_offset
            });
        if skip {
            continue;
        }
        let Some(meta) = metas.get(&header.base_offset) else {
            return Err(StorageError::Corrupt(format!(
                "{}-{}: no causal entry for the batch at offset {}",
                topic.name, partition.index, header.base_offset
            )));
        };
        let mut buf = batch.clone();
        let records = match RecordBatchDecoder::decode(&mut buf) {
            Ok(set) => set.records,
            Err(error) => {
                tracing::error!(topic = %topic.name, offset = header.base_offset, %error, "stored batch does not decode; skipped");
                metrics::table_refused(&topic.name, "undecodable_batch");
                continue;
            }
        };
        for record in records.iter().filter(|r| r.offset >= from) {
            let Some(key) = &record.key else {
                metrics::table_refused(&topic.name, "no_key");
                tracing::warn!(topic = %topic.name, offset = record.offset, "record without a key ignored by the table");
                continue;
            };
            let header_value = |name: &str| {
                record
                    .headers
                    .iter()
                    .find(|(k, _)| k.as_str() == name)
                    .and_then(|(_, v)| v.as_deref())
            };
            let op = match decode_op(
                header_value(OP_HEADER),
                header_value(PATH_HEADER),
                record.value.as_deref(),
                mode,
            ) {
                Ok(op) => op,
                Err(error) => {
                    metrics::table_refused(&topic.name, error.reason());
                    tracing::warn!(topic = %topic.name, offset = record.offset, %error, "record refused by the table");
                    continue;
                }
            };
            let (row, _) = match rows.entry(key.to_vec()) {
                std::collections::hash_map::Entry::Occupied(row) => row.into_mut(),
                std::collections::hash_map::Entry::Vacant(slot) => {
                    let stored = match store.row(&table, key)? {
                        Some(bytes) => Row::from_bytes(&bytes).map_err(|e| {
                            StorageError::Corrupt(format!("row of {}: {e}", topic.name))
                        })?,
                        None => Row::new(),
                    };
                    let live = stored.materialize().is_some();
                    slot.insert((stored, live))
                }
            };
            let index = u32::try_from(record.offset - header.base_offset).unwrap_or(u32::MAX);
            row.apply(&op, Stamp::of_record(meta, index), &meta.deps);
            merges += 1;
        }
    }
    let mut live_rows_delta = 0i64;
    let encoded: Vec<(Vec<u8>, Vec<u8>)> = rows
        .into_iter()
        .map(|(key, (row, was_live))| {
            live_rows_delta += i64::from(row.materialize().is_some()) - i64::from(was_live);
            (key, row.to_bytes())
        })
        .collect();
    store.commit(&table, partition.index, next, &encoded, live_rows_delta)?;
    metrics::table_merged(&topic.name, merges);
    Ok(next - from)
}

/// The whole batches of `records` that start below `end`, with their headers.
fn whole_batches(records: &Bytes, end: i64) -> Vec<(BatchHeader, Bytes)> {
    let mut position = 0usize;
    let mut out = Vec::new();
    while let Some(header) = records
        .get(position..)
        .and_then(|rest| BatchHeader::parse(rest).ok())
    {
        let size = header.total_bytes();
        if header.base_offset >= end || position + size > records.len() {
            break;
        }
        out.push((header, records.slice(position..position + size)));
        position += size;
    }
    out
}
