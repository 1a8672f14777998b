//! Applies table partitions' records to their rows, chunk by chunk, in the background.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use causeway_replication::crdt::{MergeMode, Row};
use causeway_storage::{BatchHeader, StorageError, TableStore};
use tokio::sync::watch;

use super::records::{for_each_write, skipped, Chunk, WriteReader};

use super::{is_table, merge_mode, partition_number, store_name};
use crate::background;
use crate::broker::Broker;
use crate::metrics;
use crate::topics::{PartitionHandle, Topic};
use crate::wall_clock::now_ms;

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
                        tracing::error!(topic = %topic.name, partition = partition.index(), %error, "materializing failed");
                        break;
                    }
                }
            }
        }
        metrics::compaction_registered(&topic.name);
    }
}

/// How far a table partition's rows trail its last stable offset: records not applied yet, and
/// the age in ms of the oldest of them (read at each scrape, so the gauges go with the topic).
pub fn lag(store: &TableStore, topic: &Topic, partition: &PartitionHandle) -> (i64, i64) {
    let applied = store
        .applied(&store_name(topic), partition.index())
        .unwrap_or(0);
    let stable = partition.log().last_stable_offset();
    let behind_ms = if applied < stable {
        partition
            .log()
            .read(applied.max(partition.log().log_start_offset()), 1)
            .ok()
            .and_then(|read| BatchHeader::parse(&read.records).ok())
            .map_or(0, |oldest| {
                now_ms().saturating_sub(oldest.base_timestamp).max(0)
            })
    } else {
        0
    };
    (stable - applied, behind_ms)
}

/// Applies the next chunk of one partition; returns how many log offsets it advanced.
fn materialize_chunk(
    store: &TableStore,
    topic: &Topic,
    partition: &PartitionHandle,
    mode: MergeMode,
) -> Result<i64, StorageError> {
    let table = store_name(topic);
    let applied = store.applied(&table, partition.index())?;
    let from = applied.max(partition.log().log_start_offset());
    let Some(chunk) = Chunk::read(partition.log(), from, CHUNK_BYTES)? else {
        return Ok(0);
    };
    if applied == 0 && from == 0 {
        tracing::info!(topic = %topic.name, partition = partition.index(), "materializing table from the start of the log");
    }
    // Each touched row with whether it was live before this chunk (for the live-row count).
    let mut rows: HashMap<Bytes, (Row, bool)> = HashMap::new();
    let mut merges = 0u64;
    let mut failure = None;
    let reader = WriteReader {
        topic: &topic.name,
        partition: partition_number(partition),
        mode,
        from,
        count_refusals: true,
    };
    for (header, batch) in &chunk.batches {
        if skipped(header, &chunk.aborted) {
            continue;
        }
        let Some(meta) = chunk.metas.get(&header.base_offset) else {
            return Err(StorageError::Corrupt(format!(
                "{}-{}: no causal entry for the batch at offset {}",
                topic.name,
                partition.index(),
                header.base_offset
            )));
        };
        for_each_write(&reader, header, batch, meta, |record| {
            if failure.is_some() {
                return;
            }
            let (row, _) = match rows.entry(record.key.clone()) {
                std::collections::hash_map::Entry::Occupied(row) => row.into_mut(),
                std::collections::hash_map::Entry::Vacant(slot) => {
                    match stored_row(store, &table, &topic.name, &record.key) {
                        Ok(stored) => {
                            let live = stored.materialize().is_some();
                            slot.insert((stored, live))
                        }
                        Err(error) => {
                            failure = Some(error);
                            return;
                        }
                    }
                }
            };
            record.write.apply_to(row);
            merges += 1;
        });
        if let Some(error) = failure {
            return Err(error);
        }
    }
    let mut live_rows_delta = 0i64;
    let encoded: Vec<(Vec<u8>, Vec<u8>)> = rows
        .into_iter()
        .map(|(key, (row, was_live))| {
            live_rows_delta += i64::from(row.materialize().is_some()) - i64::from(was_live);
            (key.to_vec(), row.to_bytes())
        })
        .collect();
    store.commit(
        &table,
        partition.index(),
        chunk.next,
        &encoded,
        live_rows_delta,
    )?;
    metrics::table_merged(&topic.name, merges);
    Ok(chunk.next - from)
}

/// The stored row of `key`, or a new one.
fn stored_row(
    store: &TableStore,
    table: &str,
    topic: &str,
    key: &[u8],
) -> Result<Row, StorageError> {
    match store.row(table, key)? {
        Some(bytes) => Row::from_bytes(&bytes)
            .map_err(|e| StorageError::Corrupt(format!("row of {topic}: {e}"))),
        None => Ok(Row::new()),
    }
}
