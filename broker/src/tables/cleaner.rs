//! The log cleaner: compacts a table partition's closed segments into one record per key
//! holding the merged row (format in `docs/tables.md`), below the causally stable offset and
//! the last stable offset. Storage (`causeway_storage::partition::compaction`) picks the
//! segments and swaps the rewrites in crash-safely; `survivors` decides which keys stay.
//!
//! A pass reads every segment of the plan (the whole compacted prefix plus the new closed
//! segments), so a key ends with one record across it; already-cleaned segments whose content
//! would not change are not rewritten. Aborted transactional records, transaction markers,
//! records without a key and records the table refused are not written back: markers are not
//! needed once no transactional record is left, and the row already says what the rest meant.
//! The pass keeps every key's rows in memory.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use causeway_replication::crdt::{Content, MergeMode, Row};
use causeway_replication::hlc::HybridClock;
use causeway_storage::{
    mark_cleaned, CausalMeta, Partition, SegmentSnapshot, StorageError, SwapReport,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions};

use super::records::{for_each_write, skipped, WriteReader, ROW_HEADER};
use super::survivors::{layout, KeyFacts, RowState};

/// How often a long pass logs its progress.
const PROGRESS_PERIOD: Duration = Duration::from_secs(10);

/// What one pass may cost: its reads and writes are paced to a byte rate
/// (`--log-cleaner-io-bytes-per-sec`), so compaction cannot starve produce and fetch of disk
/// bandwidth, and the rows it holds are bounded (`--log-cleaner-memory-bytes`), so a table with
/// more keys than memory cannot take the broker down; it logs the progress of long passes.
pub struct PassBudget {
    rate: u64,
    started: Instant,
    spent: u64,
    last_report: Instant,
    rows_memory_max: u64,
}

/// How long to wait so that `spent` bytes over `elapsed` stay within `rate` bytes per second
/// (0 = unlimited).
fn pause(spent: u64, elapsed: Duration, rate: u64) -> Duration {
    if rate == 0 {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(spent as f64 / rate as f64).saturating_sub(elapsed)
}

impl PassBudget {
    /// A budget of `rate` bytes per second from now (0 = unlimited), rows unbounded.
    pub fn new(rate: u64) -> PassBudget {
        let now = Instant::now();
        PassBudget {
            rate,
            started: now,
            spent: 0,
            last_report: now,
            rows_memory_max: u64::MAX,
        }
    }

    /// The same budget, its rows bounded to about `bytes`.
    pub fn with_rows_memory(self, bytes: u64) -> PassBudget {
        PassBudget {
            rows_memory_max: bytes,
            ..self
        }
    }

    /// Counts `bytes` of I/O, sleeping as long as the rate requires.
    fn spend(&mut self, bytes: usize, what: &str) {
        self.spent += bytes as u64;
        let wait = pause(self.spent, self.started.elapsed(), self.rate);
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
        if self.last_report.elapsed() >= PROGRESS_PERIOD {
            self.last_report = Instant::now();
            tracing::info!(
                pass = what,
                bytes = self.spent,
                seconds = self.started.elapsed().as_secs(),
                "compaction in progress"
            );
        }
    }
}

/// What a key's place in a pass's map costs beyond its key and row bytes (the map entry, the
/// row's and the causal metadata's structures), as an estimate.
const KEY_OVERHEAD_BYTES: u64 = 256;

/// The memory a pass's rows take, estimated cheaply from the bytes read and measured exactly
/// (each row encoded) only when the estimate passes the bound.
struct PassRowsMemory {
    max: u64,
    estimate: u64,
}

impl PassRowsMemory {
    /// Counts `bytes` more; whether the rows now exceed the bound. The exact measure resets the
    /// estimate and counts as full from 90% of the bound, so it runs at most once per tenth of
    /// the bound read.
    fn charge(&mut self, bytes: u64, keys: &HashMap<Bytes, KeyState>) -> bool {
        self.estimate = self.estimate.saturating_add(bytes);
        if self.estimate <= self.max {
            return false;
        }
        self.estimate = keys
            .iter()
            .map(|(key, state)| super::row_bytes(key, &state.row) + KEY_OVERHEAD_BYTES)
            .sum();
        self.estimate > self.max / 10 * 9
    }
}

/// Each key's state after reading segments of a plan, or where the rows outgrew the bound.
enum Gathered {
    /// Every segment was read.
    All(HashMap<Bytes, KeyState>),
    /// The rows outgrew the bound while reading this segment (its index in the plan).
    Overflowed(usize),
}

/// What one key accumulates during a pass.
struct KeyState {
    facts: KeyFacts,
    row: Row,
    meta: CausalMeta,
    timestamp: i64,
}

/// What a pass did, for logs and metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct PassReport {
    /// Segments read.
    pub segments_read: usize,
    /// Bytes read.
    pub bytes_read: u64,
    /// Records written back.
    pub records_written: usize,
    /// The rows outgrew `--log-cleaner-memory-bytes`: the pass compacted only the segments
    /// read before that (none, if even the compacted part does not fit).
    pub stopped_at_rows_memory: bool,
    /// What the swap did.
    pub swap: SwapReport,
}

/// How far a pass may go.
pub struct CleanBounds<'a> {
    /// Segments below it may be rewritten: every region holds their batches.
    pub stable_offset: i64,
    /// Given where what a pass merges ends, the offset below which it may drop tombstones:
    /// every write concurrent with them is among what it merges. Called once per pass, as a
    /// sample of the horizon (`causeway_replication::horizon`).
    pub settled_offset: Box<dyn FnMut(i64) -> i64 + 'a>,
}

impl CleanBounds<'static> {
    /// Bounds of a single region, where nothing is concurrent: both at `end`.
    pub fn alone(end: i64) -> CleanBounds<'static> {
        CleanBounds {
            stable_offset: end,
            settled_offset: Box::new(move |_| end),
        }
    }
}

/// Runs one compaction pass over `log` if one is due (`CompactionPlan::is_due`); `None` if
/// nothing was due. A pass whose rows outgrow the budget compacts the segments read before
/// that, or nothing (`PassReport::stopped_at_rows_memory`).
pub fn clean_partition(
    topic: &str,
    partition: u32,
    log: &Partition,
    mode: MergeMode,
    mut bounds: CleanBounds<'_>,
    now_ms: i64,
    budget: &mut PassBudget,
) -> Result<Option<PassReport>, StorageError> {
    let mut plan = log.compaction_plan(bounds.stable_offset, now_ms)?;
    let merged_end = plan
        .segments
        .last()
        .map_or(plan.log_start, |s| s.end_offset);
    // A plan that stops short of the log's gaps (the stable offset went back after a restart,
    // or a seed copied merged rows) does not merge everything merged away: no tombstone goes.
    let mut settled_offset = if merged_end >= plan.gaps_below {
        (bounds.settled_offset)(merged_end)
    } else {
        plan.log_start
    };
    if !plan.is_due(now_ms) {
        return Ok(None);
    }
    let mut report = PassReport::default();
    let reader = WriteReader {
        topic,
        partition,
        mode,
        from: plan.log_start,
        count_refusals: false,
    };
    let mut keys = match gather(log, &plan.segments, &reader, budget, &mut report)? {
        Gathered::All(keys) => keys,
        Gathered::Overflowed(at) => {
            report.stopped_at_rows_memory = true;
            // Kafka's cleaner does the same when its offset map fills: compact the segments
            // that fit, the rest at later passes. Dropping no tombstone keeps that safe: the
            // horizon sample above describes the whole plan, not this prefix.
            if !plan.segments[..at].iter().any(|s| !s.cleaned) {
                return Ok(Some(report));
            }
            plan.segments.truncate(at);
            settled_offset = plan.log_start;
            match gather(log, &plan.segments, &reader, budget, &mut report)? {
                Gathered::All(keys) => keys,
                Gathered::Overflowed(_) => return Ok(Some(report)),
            }
        }
    };
    let facts: HashMap<Bytes, KeyFacts> = keys
        .iter_mut()
        .map(|(key, state)| {
            state.facts.state = row_state(&state.row);
            (key.clone(), state.facts.clone())
        })
        .collect();
    let cleaned: Vec<bool> = plan.segments.iter().map(|s| s.cleaned).collect();
    let out = layout(
        &facts,
        &cleaned,
        now_ms,
        plan.delete_retention_ms,
        settled_offset,
    );
    let mut staged = Vec::new();
    for (i, segment) in plan.segments.iter().enumerate() {
        if !out.changed[i] {
            continue;
        }
        let mut writer = log.segment_writer(segment)?;
        for (offset, key) in &out.per_segment[i] {
            let Some(state) = keys.get(key) else { continue };
            let batch = encode(key, *offset, log.leader_epoch_at(*offset), state)?;
            writer.append(&batch, &state.meta)?;
            budget.spend(batch.len(), topic);
            report.records_written += 1;
        }
        staged.push(writer.finish()?);
    }
    let cleaned_through = plan
        .segments
        .last()
        .map_or(plan.log_start, |s| s.end_offset);
    report.swap = log.swap_segments(staged, cleaned_through, out.tombstones_due_ms)?;
    Ok(Some(report))
}

/// Reads `segments` in order, merging each key's writes into its row, while the rows fit the
/// budget.
fn gather(
    log: &Partition,
    segments: &[SegmentSnapshot],
    reader: &WriteReader<'_>,
    budget: &mut PassBudget,
    report: &mut PassReport,
) -> Result<Gathered, StorageError> {
    let (Some(first), Some(last)) = (segments.first(), segments.last()) else {
        return Ok(Gathered::All(HashMap::new()));
    };
    let topic = reader.topic;
    let aborted = log.aborted_transactions(first.base, last.end_offset);
    let mut keys: HashMap<Bytes, KeyState> = HashMap::new();
    let mut memory = PassRowsMemory {
        max: budget.rows_memory_max,
        estimate: 0,
    };
    for (i, segment) in segments.iter().enumerate() {
        let mut full = false;
        segment.for_each_batch(|batch| {
            if full {
                return Ok(());
            }
            budget.spend(batch.bytes.len(), topic);
            report.bytes_read += batch.bytes.len() as u64;
            if !log.verify_stored(&batch.header, &batch.bytes) {
                // Compacting would rewrite flipped bytes under a fresh CRC: the pass stops, and
                // the damage stays reported until retention deletes it.
                return Err(StorageError::Corrupt(format!(
                    "{topic}-{}: not compacting past the damaged batch at offset {}",
                    reader.partition, batch.header.base_offset
                )));
            }
            if skipped(&batch.header, &aborted) {
                return Ok(());
            }
            let meta = &batch.meta;
            let mut new_keys = 0u64;
            for_each_write(reader, &batch.header, &batch.bytes, meta, |record| {
                let state = keys.entry(record.key).or_insert_with_key(|key| {
                    new_keys += key.len() as u64 + KEY_OVERHEAD_BYTES;
                    KeyState {
                        facts: KeyFacts::first(record.offset, i),
                        row: Row::new(),
                        meta: meta.clone(),
                        timestamp: record.timestamp,
                    }
                });
                state.facts.saw(record.offset, i);
                state.meta = meta.clone();
                state.timestamp = record.timestamp;
                record.write.apply_to(&mut state.row);
            });
            full = memory.charge(batch.bytes.len() as u64 + new_keys, &keys);
            Ok(())
        })?;
        report.segments_read += 1;
        if full {
            return Ok(Gathered::Overflowed(i));
        }
    }
    Ok(Gathered::All(keys))
}

/// The fate-deciding state of a merged row.
fn row_state(row: &Row) -> RowState {
    if row.materialize().is_some() {
        return RowState::Live;
    }
    match row.version() {
        Some(stamp) => RowState::Deleted {
            deleted_at_ms: i64::try_from(HybridClock::physical_ms(stamp.hlc)).unwrap_or(i64::MAX),
        },
        None => RowState::Empty,
    }
}

/// One compacted record as a one-record batch at `offset`, marked as written by the cleaner:
/// the row's value (null when deleted) and the row itself in `causeway.row`. It keeps the
/// leader epoch `offset` was written in, so a consumer reading it never takes a truncation for
/// one.
fn encode(
    key: &Bytes,
    offset: i64,
    leader_epoch: i32,
    state: &KeyState,
) -> Result<Vec<u8>, StorageError> {
    let value = match state.row.materialize() {
        Some(Content::Json(value)) => {
            Some(Bytes::from(serde_json::to_vec(&value).map_err(|e| {
                StorageError::Corrupt(format!("row value does not serialize: {e}"))
            })?))
        }
        Some(Content::Bytes(bytes)) => Some(Bytes::from(bytes)),
        None => None,
    };
    let record = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: leader_epoch,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: kafka_protocol::records::TimestampType::Creation,
        offset,
        sequence: -1,
        timestamp: state.timestamp,
        key: Some(key.clone()),
        value,
        headers: [(
            StrBytes::from_static_str(ROW_HEADER),
            Some(Bytes::from(state.row.to_bytes())),
        )]
        .into_iter()
        .collect(),
    };
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        [&record],
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| StorageError::Corrupt(format!("compacted record does not encode: {e}")))?;
    let mut batch = buf.to_vec();
    mark_cleaned(&mut batch);
    Ok(batch)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use causeway_storage::LogConfig;

    use super::super::records::Chunk;
    use super::*;

    /// One pass over `log` as partition 0 of table `t`, alone in its region, up to `end`.
    fn clean(
        log: &Partition,
        end: i64,
        now_ms: i64,
        budget: &mut PassBudget,
    ) -> Result<Option<PassReport>, StorageError> {
        clean_partition(
            "t",
            0,
            log,
            MergeMode::Crdt,
            CleanBounds::alone(end),
            now_ms,
            budget,
        )
    }

    /// A compacted topic's log of `segment_bytes`-byte segments in `dir`.
    fn compacted_log(dir: &std::path::Path, segment_bytes: u64) -> Partition {
        let config = LogConfig {
            segment_bytes,
            cleanup_compact: true,
            cleanup_delete: false,
            ..LogConfig::default()
        };
        Partition::open(dir, config, 0).unwrap()
    }

    /// One produced batch: `(key, value, op)` records, timestamp `ts`.
    fn batch(records: &[(&str, Option<&str>, &str)], ts: i64) -> Vec<u8> {
        let records: Vec<Record> = records
            .iter()
            .enumerate()
            .map(|(i, (key, value, op))| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: kafka_protocol::records::TimestampType::Creation,
                offset: i as i64,
                // The encoder keeps offset - sequence constant within a batch; base sequence -1.
                sequence: i as i32 - 1,
                timestamp: ts,
                key: Some(Bytes::from(key.to_string())),
                value: value.map(|v| Bytes::from(v.to_string())),
                headers: [(
                    StrBytes::from_static_str("causeway.op"),
                    Some(Bytes::from(op.to_string())),
                )]
                .into_iter()
                .collect(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .unwrap();
        buf.to_vec()
    }

    fn append(log: &Partition, records: &[(&str, Option<&str>, &str)], ts: i64) {
        append_bytes(log, batch(records, ts), ts);
    }

    /// The causal stamp the tests give every batch: region 1, the next sequence.
    fn stamp(prev: Option<&CausalMeta>, ts: i64) -> CausalMeta {
        let seq = prev.map_or(1, |m| m.origin_seq + 1);
        CausalMeta {
            origin_region: 1,
            origin_seq: seq,
            hlc: (ts as u64) << 16,
            deps: vec![(1, seq - 1)],
        }
    }

    /// Producer id `counter` of region 1, the region [`stamp`] writes as: a producer's own
    /// region ends whatever it has open.
    fn issued(counter: i64) -> i64 {
        (1 << causeway_storage::PRODUCER_ID_COUNTER_BITS) | counter
    }

    /// A one-record transactional batch of producer `pid`, epoch 0, sequence `seq`.
    fn transactional(key: &str, value: &str, pid: i64, seq: i32, ts: i64) -> Vec<u8> {
        let record = Record {
            transactional: true,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: pid,
            producer_epoch: 0,
            timestamp_type: kafka_protocol::records::TimestampType::Creation,
            offset: 0,
            sequence: seq,
            timestamp: ts,
            key: Some(Bytes::from(key.to_string())),
            value: Some(Bytes::from(value.to_string())),
            headers: Default::default(),
        };
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            [&record],
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .unwrap();
        buf.to_vec()
    }

    fn append_bytes(log: &Partition, b: Vec<u8>, ts: i64) {
        log.append(&b, ts, &stamp(log.last_causal().as_ref(), ts))
            .unwrap();
    }

    /// Rows rebuilt from the log from its start, as the materializer would, and the keys of
    /// the records read (in order).
    fn rebuild(log: &Partition) -> (BTreeMap<Bytes, Vec<u8>>, Vec<Bytes>) {
        let mut rows: BTreeMap<Bytes, Row> = BTreeMap::new();
        let mut keys = Vec::new();
        let mut from = log.log_start_offset();
        while let Some(chunk) = Chunk::read(log, from, 1 << 20).unwrap() {
            for (header, bytes) in &chunk.batches {
                if skipped(header, &chunk.aborted) {
                    continue;
                }
                let meta = &chunk.metas[&header.base_offset];
                let reader = WriteReader {
                    topic: "t",
                    partition: 0,
                    mode: MergeMode::Crdt,
                    from,
                    count_refusals: false,
                };
                for_each_write(&reader, header, bytes, meta, |r| {
                    keys.push(r.key.clone());
                    r.write.apply_to(rows.entry(r.key).or_default());
                });
            }
            from = chunk.next;
        }
        let rows = rows.into_iter().map(|(k, r)| (k, r.to_bytes())).collect();
        (rows, keys)
    }

    #[test]
    fn compaction_keeps_rows_byte_identical_and_drops_aged_tombstones() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_bytes: 700,
            cleanup_compact: true,
            cleanup_delete: false,
            delete_retention_ms: 1_000,
            ..LogConfig::default()
        };
        let log = Partition::open(dir.path(), config, 0).unwrap();
        let t0 = 1_000_000;
        append(&log, &[("d", Some(r#"{"gone":true}"#), "put")], t0);
        for i in 0..40i64 {
            let n = i.to_string();
            append(
                &log,
                &[
                    ("a", Some(&format!(r#"{{"n":{n}}}"#)), "put"),
                    ("b", Some(r#"{"hits":1}"#), "incr"),
                    ("c", Some(&format!(r#"{{"f{}":{n}}}"#, i % 3)), "patch"),
                ],
                t0 + i,
            );
            if i == 2 {
                append(&log, &[("d", None, "put")], t0 + i);
            }
        }
        append(&log, &[("e", Some("{}"), "put")], t0 + 50);
        assert!(log.segment_count() > 5);
        let (before, keys_before) = rebuild(&log);
        let high_water = log.origin_high_water().unwrap();
        let size_before = log.size_bytes();
        let mut budget = PassBudget::new(0);
        let end = log.log_end_offset();
        let report = clean(&log, end, t0 + 100, &mut budget).unwrap().unwrap();
        assert!(report.swap.bytes_reclaimed > 0);
        assert_eq!(log.size_bytes(), size_before - report.swap.bytes_reclaimed);
        let (after, keys_after) = rebuild(&log);
        assert_eq!(after, before, "rows rebuilt from the compacted log differ");
        assert!(keys_after.len() < keys_before.len() / 10);
        // The compacted prefix holds each key once; the active segment (the last a, b, c batch
        // and e) follows.
        let mut compacted = keys_after[..4].to_vec();
        compacted.sort();
        assert_eq!(
            compacted,
            ["a", "b", "c", "d"].map(Bytes::from),
            "{keys_after:?}"
        );
        assert_eq!(keys_after.len(), 8, "{keys_after:?}");
        assert!(
            compacted.contains(&Bytes::from("d")),
            "tombstone kept until due"
        );
        assert_eq!(log.origin_high_water().unwrap(), high_water);
        assert!(
            clean(&log, end, t0 + 100, &mut budget).unwrap().is_none(),
            "nothing due"
        );
        // After delete.retention.ms the tombstone goes; every other row stays identical.
        let report = clean(&log, end, t0 + 5_000, &mut budget).unwrap().unwrap();
        assert!(report.swap.swapped >= 1);
        let (gone, keys) = rebuild(&log);
        assert!(!keys.contains(&Bytes::from("d")));
        let mut expected = before.clone();
        expected.remove(&Bytes::from("d"));
        assert_eq!(gone, expected);
        // Reopening (unclean) reads the same.
        drop(log);
        let log = Partition::open(dir.path(), LogConfig::default(), 0).unwrap();
        assert_eq!(rebuild(&log).0, expected);
        assert_eq!(log.origin_high_water().unwrap(), high_water);
    }

    #[test]
    fn aborted_transactions_and_markers_are_dropped_and_open_ones_wait() {
        use causeway_storage::ControlType;
        let dir = tempfile::tempdir().unwrap();
        let log = compacted_log(dir.path(), 50);
        let t = 1_000_000;
        append(&log, &[("k", Some(r#"{"v":0}"#), "put")], t);
        append_bytes(
            &log,
            transactional("k", r#"{"v":"aborted"}"#, issued(7), 0, t),
            t,
        );
        log.append_control(
            ControlType::Abort,
            issued(7),
            0,
            t,
            &stamp(log.last_causal().as_ref(), t),
        )
        .unwrap();
        append_bytes(
            &log,
            transactional("k", r#"{"v":"committed"}"#, issued(8), 0, t),
            t,
        );
        log.append_control(
            ControlType::Commit,
            issued(8),
            0,
            t,
            &stamp(log.last_causal().as_ref(), t),
        )
        .unwrap();
        // An open transaction of producer 9: nothing from it on may be compacted.
        append_bytes(
            &log,
            transactional("open", r#"{"v":1}"#, issued(9), 0, t),
            t,
        );
        let lso = log.last_stable_offset();
        assert_eq!(lso, 5);
        append(&log, &[("after", Some("{}"), "put")], t);
        append(&log, &[("after", Some("{}"), "put")], t);
        let (before, _) = rebuild(&log);
        let k = Row::from_bytes(&before[&Bytes::from("k")]).unwrap();
        assert_eq!(
            k.materialize(),
            Some(Content::Json(serde_json::json!({"v": "committed"})))
        );
        assert!(
            !before.contains_key(&Bytes::from("open")),
            "open transaction waits"
        );
        let mut budget = PassBudget::new(0);
        let end = log.log_end_offset();
        clean(&log, end, t, &mut budget).unwrap().unwrap();
        let (after, _) = rebuild(&log);
        assert_eq!(after, before);
        // Below the LSO: one record (k, committed value) and no transactional or control batch.
        let mut offset = 0;
        let mut seen = Vec::new();
        while offset < lso {
            let read = log.read(offset, 1 << 20).unwrap();
            let Some((header, bytes)) =
                super::super::records::whole_batches(&read.records, i64::MAX)
                    .into_iter()
                    .next()
            else {
                break;
            };
            if header.base_offset >= lso {
                break;
            }
            let mut b = bytes.clone();
            let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut b).unwrap();
            for r in set.records {
                seen.push((
                    r.offset,
                    header.is_control() || header.is_transactional(),
                    r.value.map(|v| String::from_utf8_lossy(&v).into_owned()),
                ));
            }
            offset = header.last_offset() + 1;
        }
        assert_eq!(
            seen,
            vec![(3, false, Some(r#"{"v":"committed"}"#.to_string()))]
        );
        // The open transaction's batch is still there, untouched.
        let open = log.read(lso, 1 << 20).unwrap();
        let first = causeway_storage::BatchHeader::parse(&open.records).unwrap();
        assert!(first.is_transactional() && first.base_offset == lso);
    }

    /// A byte flipped in a closed segment: the pass stops there rather than rewrite the batch's
    /// flipped bytes under a fresh CRC, nothing is swapped, and the damage is recorded.
    #[test]
    fn a_pass_stops_at_a_damaged_batch_and_swaps_nothing() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let log = compacted_log(dir.path(), 700);
        let t0 = 1_000_000;
        for i in 0..30i64 {
            let value = format!(r#"{{"n":{i}}}"#);
            append(&log, &[("a", Some(&value), "put")], t0 + i);
        }
        let mut segments: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        segments.sort();
        assert!(segments.len() > 3);
        let first = std::fs::read(&segments[0]).unwrap();
        let at = first.len() - 2; // inside the first segment's last batch
        std::fs::OpenOptions::new()
            .write(true)
            .open(&segments[0])
            .unwrap()
            .write_all_at(&[first[at] ^ 0x01], at as u64)
            .unwrap();
        let size_before = log.size_bytes();
        let end = log.log_end_offset();
        let outcome = clean(&log, end, t0 + 100, &mut PassBudget::new(0));
        assert!(
            matches!(&outcome, Err(StorageError::Corrupt(why)) if why.contains("damaged")),
            "{outcome:?}"
        );
        assert_eq!(log.size_bytes(), size_before, "nothing was swapped");
        assert_eq!(log.damaged_ranges().len(), 1);
    }

    #[test]
    fn the_budget_waits_only_when_ahead_of_the_rate() {
        let rate = 1_000_000;
        assert_eq!(
            pause(500_000, Duration::from_millis(600), rate),
            Duration::ZERO
        );
        assert_eq!(
            pause(2_000_000, Duration::from_millis(500), rate),
            Duration::from_millis(1_500)
        );
        assert_eq!(pause(u64::MAX, Duration::ZERO, 0), Duration::ZERO);
    }

    /// A table with more distinct keys than a pass's rows budget: the pass compacts the
    /// segments read before the rows outgrew it (or nothing, when not even the first segment
    /// fits), the rows stay the same, and a pass with room compacts the rest.
    #[test]
    fn a_pass_past_its_rows_budget_compacts_what_fits_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let log = compacted_log(dir.path(), 700);
        let t0 = 1_000_000;
        for round in 0..2i64 {
            for i in 0..30i64 {
                let value = format!(r#"{{"v":{round}}}"#);
                append(&log, &[(&format!("k{i:02}"), Some(&value), "put")], t0 + i);
            }
        }
        let (before, _) = rebuild(&log);
        let end = log.log_end_offset();
        let pass = |rows_memory: u64| {
            let mut budget = PassBudget::new(0).with_rows_memory(rows_memory);
            clean(&log, end, t0 + 100, &mut budget).unwrap().unwrap()
        };
        let tiny = pass(100);
        assert!(tiny.stopped_at_rows_memory);
        assert_eq!(tiny.swap.swapped, 0, "not one segment fits");
        assert_eq!(rebuild(&log).0, before);
        // Room for about a dozen keys: a few segments of the first round.
        let part = pass(12 * (KEY_OVERHEAD_BYTES + 40));
        assert!(part.stopped_at_rows_memory);
        assert!(part.swap.swapped > 0, "{part:?}");
        let plan = log.compaction_plan(end, t0 + 100).unwrap();
        assert!(plan.segments.iter().any(|s| s.cleaned));
        assert!(plan.segments.iter().any(|s| !s.cleaned));
        assert_eq!(rebuild(&log).0, before, "rows differ after a partial pass");
        let whole = pass(u64::MAX);
        assert!(!whole.stopped_at_rows_memory);
        assert!(whole.swap.bytes_reclaimed > 0);
        let (after, keys) = rebuild(&log);
        assert_eq!(after, before, "rows differ after the whole pass");
        assert!(keys.len() < 40, "each key about once: {}", keys.len());
    }
}
