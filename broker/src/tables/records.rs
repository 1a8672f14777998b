//! What a stored batch of a table partition writes to rows: shared by the materializer, the
//! change feed and the log cleaner, so all three read the log the same way.
//!
//! A record is a write to its key's row: an operation (`causeway.op`, see `docs/tables.md`)
//! stamped with its batch's causal metadata, or, in a batch the log cleaner wrote (attribute
//! bit 7, which producers cannot set), the merged row itself in the `causeway.row` header,
//! which is merged into the row (merging is idempotent, so a row that already holds those
//! writes does not change).

use bytes::Bytes;
use causeway_replication::crdt::{decode_op, MergeMode, Op, Row, Stamp, OP_HEADER, PATH_HEADER};
use causeway_storage::{AbortedTransaction, BatchHeader, CausalMeta};

use crate::handlers::records::decode_batch;

use crate::metrics;

/// Header of a compacted record holding the merged row (`Row::to_bytes`).
pub const ROW_HEADER: &str = "causeway.row";

/// One write a record makes to its key's row.
pub enum Write<'a> {
    /// An operation, stamped, from a batch whose dependency vector is `deps`.
    Op {
        /// The operation.
        op: Op,
        /// Its stamp.
        stamp: Stamp,
        /// Its batch's dependency vector (what a `remove` had seen).
        deps: &'a [(u32, u64)],
    },
    /// A merged row written by the log cleaner.
    Row(Row),
}

impl Write<'_> {
    /// Applies the write to `row`.
    pub fn apply_to(&self, row: &mut Row) {
        match self {
            Write::Op { op, stamp, deps } => row.apply(op, *stamp, deps),
            Write::Row(merged) => row.merge_from(merged),
        }
    }
}

/// A keyed record of a table and the write it makes.
pub struct TableRecord<'a> {
    /// The record key (the row's key).
    pub key: Bytes,
    /// Its offset.
    pub offset: i64,
    /// Its timestamp.
    pub timestamp: i64,
    /// The write.
    pub write: Write<'a>,
}

/// Whether a batch carries no table writes: a transaction marker, or a batch of an aborted
/// transaction.
pub fn skipped(header: &BatchHeader, aborted: &[AbortedTransaction]) -> bool {
    header.is_control()
        || aborted.iter().any(|a| {
            a.producer_id == header.producer_id
                && a.first_offset <= header.base_offset
                && header.base_offset < a.last_offset
        })
}

/// How to read a table partition's records: its topic (for metrics and logs) and partition,
/// merge mode,
/// the first offset wanted and whether refusals are counted.
pub struct WriteReader<'t> {
    /// Topic name.
    pub topic: &'t str,
    /// Partition index (part of every stamp: one key can live in several partitions).
    pub partition: u32,
    /// `causeway.merge` of the topic.
    pub mode: MergeMode,
    /// Records below this offset are skipped.
    pub from: i64,
    /// Count and log refusals (the materializer, which sees every record once, does; the
    /// change feed and the cleaner do not, so nothing is counted twice).
    pub count_refusals: bool,
}

/// Calls `f` with every record of `batch` at or after `reader.from` that writes to a row.
/// Records that cannot (no key, an operation its value does not fit, an undecodable batch)
/// are skipped and, when `reader.count_refusals`, counted in
/// `causeway_table_refused_records_total` and logged with their partition, offset and key.
pub fn for_each_write<'a>(
    reader: &WriteReader<'_>,
    header: &BatchHeader,
    batch: &Bytes,
    meta: &'a CausalMeta,
    mut f: impl FnMut(TableRecord<'a>),
) {
    let (topic, mode, from, count_refusals) = (
        reader.topic,
        reader.mode,
        reader.from,
        reader.count_refusals,
    );
    let partition = reader.partition;
    let refuse =
        |reason: &'static str, offset: i64, key: Option<&[u8]>, error: &dyn std::fmt::Display| {
            if count_refusals {
                metrics::table_refused(topic, reason);
                let key = shown_key(key);
                tracing::warn!(
                    topic,
                    partition,
                    offset,
                    %key,
                    %error,
                    reason,
                    "record refused by the table"
                );
            }
        };
    let records = match decode_batch(header, batch) {
        Ok(records) => records,
        Err(error) => {
            refuse(error.reason(), header.base_offset, None, &error);
            return;
        }
    };
    for record in records.into_iter().filter(|r| r.offset >= from) {
        let Some(key) = record.record.key.clone() else {
            refuse("no_key", record.offset, None, &"record without a key");
            continue;
        };
        let header_value = |name: &str| record.record.header(name);
        let write = if header.is_cleaned() {
            match header_value(ROW_HEADER).map(Row::from_bytes) {
                Some(Ok(row)) => Write::Row(row),
                Some(Err(error)) => {
                    refuse("bad_row", record.offset, Some(&key[..]), &error);
                    continue;
                }
                None => {
                    refuse(
                        "bad_row",
                        record.offset,
                        Some(&key[..]),
                        &"compacted record without its row",
                    );
                    continue;
                }
            }
        } else {
            match decode_op(
                header_value(OP_HEADER),
                header_value(PATH_HEADER),
                record.record.value.as_deref(),
                mode,
            ) {
                Ok(op) => {
                    let index =
                        u32::try_from(record.offset - header.base_offset).unwrap_or(u32::MAX);
                    Write::Op {
                        op,
                        stamp: Stamp::of_record(meta, reader.partition, index),
                        deps: &meta.deps,
                    }
                }
                Err(error) => {
                    refuse(error.reason(), record.offset, Some(&key[..]), &error);
                    continue;
                }
            }
        };
        f(TableRecord {
            key,
            offset: record.offset,
            timestamp: record.timestamp,
            write,
        });
    }
}

/// Longest stretch of a refused record's key, in characters, that its log line shows.
const SHOWN_KEY_CHARS: usize = 64;

/// A refused record's key as its log line shows it, so an operator can find the record: quoted
/// lossy UTF-8 (control characters escaped), cut to `SHOWN_KEY_CHARS` characters, or `null`.
fn shown_key(key: Option<&[u8]>) -> String {
    let Some(key) = key else {
        return "null".to_owned();
    };
    let text = String::from_utf8_lossy(key);
    let kept: String = text.chars().take(SHOWN_KEY_CHARS).collect();
    let mut shown = format!("{kept:?}");
    if kept.len() < text.len() {
        shown.push('…');
    }
    shown
}

/// The whole batches of `records` that start below `end`, with their headers.
pub fn whole_batches(records: &Bytes, end: i64) -> Vec<(BatchHeader, Bytes)> {
    causeway_storage::whole_batches(records)
        .take_while(|(header, _)| header.base_offset < end)
        .collect()
}

/// The next stretch of a table partition's log to apply: whole batches from `from` below the
/// last stable offset (damaged ones left out), with their causal metadata and the aborted
/// transactions among them.
pub struct Chunk {
    /// The batches, in offset order.
    pub batches: Vec<(BatchHeader, Bytes)>,
    /// Causal metadata by batch base offset.
    pub metas: std::collections::HashMap<i64, CausalMeta>,
    /// Aborted transactions overlapping the chunk.
    pub aborted: Vec<AbortedTransaction>,
    /// The offset after the chunk's last batch: where the next chunk starts.
    pub next: i64,
}

impl Chunk {
    /// Reads about `max_bytes` of `log` from `from`, up to its last stable offset; `None` when
    /// nothing is there yet. The batches and their causal entries are two reads; should the
    /// log cleaner swap a segment in between (some batch then lacks its entry), the chunk is
    /// read once more.
    pub fn read(
        log: &causeway_storage::Partition,
        from: i64,
        max_bytes: usize,
    ) -> Result<Option<Chunk>, causeway_storage::StorageError> {
        let mut chunk = Self::read_once(log, from, max_bytes)?;
        let torn = chunk.as_ref().is_some_and(|c| {
            c.batches
                .iter()
                .any(|(h, _)| !h.is_control() && !c.metas.contains_key(&h.base_offset))
        });
        if torn {
            chunk = Self::read_once(log, from, max_bytes)?;
        }
        Ok(chunk)
    }

    fn read_once(
        log: &causeway_storage::Partition,
        from: i64,
        max_bytes: usize,
    ) -> Result<Option<Chunk>, causeway_storage::StorageError> {
        let stable = log.last_stable_offset();
        if from >= stable {
            return Ok(None);
        }
        let read = log.read(from, max_bytes)?;
        let mut batches = whole_batches(&read.records, stable);
        let (Some(first), Some(last)) = (batches.first(), batches.last()) else {
            return Ok(None);
        };
        let (first_offset, next) = (first.0.base_offset, last.0.last_offset() + 1);
        // A batch whose bytes no longer match their CRC is recorded as damaged (logged, counted,
        // in `/readyz`) and left out: rows and change feeds are never built from flipped bytes.
        batches.retain(|(header, bytes)| log.verify_stored(header, bytes));
        let metas = log
            .causal_entries(first_offset, next)?
            .into_iter()
            .collect();
        let aborted = log.aborted_transactions(from, next);
        Ok(Some(Chunk {
            batches,
            metas,
            aborted,
            next,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_key_is_shown_quoted_cut_to_its_limit_or_null() {
        assert_eq!(shown_key(None), "null");
        assert_eq!(shown_key(Some(&b"carol"[..])), "\"carol\"");
        assert_eq!(shown_key(Some(&b"a\nb"[..])), "\"a\\nb\"");
        let long = "k".repeat(SHOWN_KEY_CHARS + 10);
        let expected = format!("\"{}\"…", "k".repeat(SHOWN_KEY_CHARS));
        assert_eq!(shown_key(Some(long.as_bytes())), expected);
    }
}
