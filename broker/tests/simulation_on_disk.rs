//! The replication simulator (`causeway_replication::sim`) over the broker's own storage adapter:
//! every simulated region keeps its partition in real segment files ([`Partition`], small
//! segments so rolls happen) behind [`ReplicaLog`], the `(origin, seq)` index and clock rebuild
//! the broker runs, with multi-record Kafka batches as payloads. Local appends take the broker's
//! produce path (`ReplicaLog::append_own`), syncs its group commit (`Partition::sync_through`),
//! remote batches its replicated append. A crash here is a killed process: the partition is
//! dropped without a clean close and reopened (recovery, index rebuild, clock rebuild), then
//! fsynced, as the broker does after an unclean start; in odd seeds it is a power loss that
//! also drops the unsynced tail. Maintenance runs retention and DeleteRecords, or, in every
//! other pair of seeds where the partition is a table, the broker's log cleaner; then every
//! region's rows must end the same.
//!
//! `CAUSEWAY_SIM_SEEDS=N` runs N seeds (default 2,000) from `CAUSEWAY_SIM_SEEDS_FROM` (default
//! 0), so a long run can go in slices; `CAUSEWAY_SIM_SEED=S` replays one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use causeway_broker::positions::frontier::{coverage, position_at, resume_at};
use causeway_broker::replication::log::ReplicaLog;
use causeway_broker::replication::seed;
use causeway_broker::tables::records::{for_each_write, skipped, WriteReader};
use causeway_broker::tables::{clean_partition, CleanBounds, PassBudget};
use causeway_broker::wall_clock::now_ms;
use causeway_replication::crdt::{Content, MergeMode, Row, OP_HEADER, PATH_HEADER};
use causeway_replication::delivery::{
    AppendError, Batch, BatchId, BatchLog, LogError, Positioned, RecoveredLog,
};
use causeway_replication::horizon::ConcurrencyHorizon;
use causeway_replication::sim::{
    run_on, table_record, CallerLog, MaintenanceBounds, Payload, SimConfig, SimRng, SimStorage,
    KEYS,
};
use causeway_replication::VectorClock;
use causeway_storage::{
    control_type, whole_batches, BatchHeader, CausalMeta, LogConfig, Partition, StorageError,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use tempfile::TempDir;

#[path = "sim_support/transactions.rs"]
mod transactions;

use transactions::{marker_bytes, TransactionModel, Write};

/// One region's partition: the storage partition and the adapter over it, as a
/// `PartitionHandle` holds them.
struct DiskLog {
    partition: Arc<Partition>,
    log: ReplicaLog,
}

impl DiskLog {
    /// The clock of the batches a power loss would keep: everything below the fsynced offset.
    /// Per origin, batches sit in the log in sequence order, so an origin's first batch in the
    /// unsynced tail is one above what survives of it.
    fn synced_clock(&self) -> Result<VectorClock, String> {
        let full = self.log.recover().map_err(|e| e.to_string())?.clock;
        let synced = u64::try_from(self.partition.synced_offset()).unwrap_or(0);
        let mut first_lost: std::collections::BTreeMap<u32, u64> = Default::default();
        let mut from = synced;
        loop {
            let tail = self.log.read(from, 256).map_err(|e| e.to_string())?;
            let Some(&(last, _)) = tail.last() else { break };
            for (_, batch) in &tail {
                first_lost
                    .entry(batch.meta.origin_region)
                    .or_insert(batch.meta.origin_seq);
            }
            from = last + 1;
        }
        let kept: Vec<(u32, u64)> = full
            .to_deps()
            .into_iter()
            .map(|(origin, seq)| match first_lost.get(&origin) {
                Some(&first) => (origin, seq.min(first - 1)),
                None => (origin, seq),
            })
            .filter(|&(_, seq)| seq > 0)
            .collect();
        Ok(VectorClock::from_deps(&kept))
    }
}

fn log_error(error: StorageError) -> LogError {
    LogError(error.to_string())
}

impl BatchLog for DiskLog {
    type Payload = Bytes;

    fn append(&mut self, batch: Batch<Bytes>) -> Result<(), AppendError> {
        self.log.append(batch)
    }

    fn position_of(&self, id: BatchId) -> Result<Option<u64>, LogError> {
        self.log.position_of(id)
    }

    fn read(&self, from: u64, max: usize) -> Result<Vec<Positioned<Bytes>>, LogError> {
        self.log.read(from, max)
    }

    fn recover(&self) -> Result<RecoveredLog, LogError> {
        self.log.recover()
    }
}

impl CallerLog for DiskLog {
    /// Data takes the produce path; a marker the coordinator's (`append_own_control`, then an
    /// fsync as `write_markers` does), with the write number as its timestamp.
    fn append_own(&mut self, batch: Batch<Bytes>) -> Result<(), AppendError> {
        let bytes = &batch.payload;
        let header = BatchHeader::parse(bytes)
            .map_err(|e| AppendError::Refused(format!("an unparsable payload: {e}")))?;
        let appended = match control_type(&header, bytes) {
            Some(kind) => {
                let appended = self.log.append_own_control(
                    kind,
                    header.producer_id,
                    header.producer_epoch,
                    &batch.meta,
                    header.base_timestamp,
                );
                // The coordinator fsyncs its markers before the transaction counts as ended.
                if let Err(error) = self.partition.sync() {
                    return Err(AppendError::Failed(log_error(error)));
                }
                appended
            }
            None => self.log.append_own(bytes, &batch.meta, now_ms()),
        };
        match appended {
            (true, Ok(_)) => Ok(()),
            (false, Ok(_)) => Err(AppendError::Refused("taken for a retry".into())),
            (_, Err(error)) => Err(AppendError::Failed(log_error(error))),
        }
    }

    fn end(&self) -> u64 {
        u64::try_from(self.partition.log_end_offset()).unwrap_or(0)
    }

    fn sync_through(&mut self, end: u64) -> Result<(), LogError> {
        self.partition
            .sync_through(i64::try_from(end).unwrap_or(i64::MAX))
            .map_err(log_error)
    }
}

/// Partitions in a temporary directory (on `/dev/shm` when there is one: fsyncs are real
/// calls, but cheap there), and per region what its log ever held.
struct DiskStorage {
    root: TempDir,
    /// Per region, every batch its log held as of the last look, in log order (see
    /// [`DiskStorage::history_of`]).
    history: Vec<Vec<Batch<Payload>>>,
    /// Per region, the batches of its history that maintenance removed (or its donor's did).
    removed: Vec<HashSet<BatchId>>,
    transactions: TransactionModel,
    /// Whether crashes are power losses (what no fsync covered is lost) rather than kills.
    power_loss: bool,
    /// Whether the partition is a table (`cleanup.policy=compact`): maintenance runs the
    /// broker's log cleaner instead of DeleteRecords.
    compaction: bool,
    /// Per region, the tombstone horizon its partition handle keeps in memory (a restart, or a
    /// re-seed, starts a new one).
    horizons: Vec<ConcurrencyHorizon>,
}

/// The topic name the cleaner logs under.
const TOPIC: &str = "sim";

impl DiskStorage {
    fn new(power_loss: bool, compaction: bool) -> DiskStorage {
        let shm = PathBuf::from("/dev/shm");
        let root = if shm.is_dir() {
            tempfile::Builder::new()
                .prefix("causeway-sim")
                .tempdir_in(shm)
        } else {
            tempfile::Builder::new().prefix("causeway-sim").tempdir()
        };
        DiskStorage {
            root: root.expect("temporary directory"),
            history: Vec::new(),
            removed: Vec::new(),
            transactions: TransactionModel::default(),
            power_loss,
            compaction,
            horizons: Vec::new(),
        }
    }

    /// A power loss on a stopped region: the last segment's log file loses every batch from
    /// the fsynced offset on (its index and causal files keep whatever they had, as after a
    /// real one they may); returns how many batches went.
    fn lose_unsynced(&self, index: usize, synced: i64) -> Result<u64, String> {
        let dir = self.root.path().join(format!("region-{index}"));
        let last = std::fs::read_dir(&dir)
            .map_err(|e| e.to_string())?
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| name.ends_with(".log"))
            .max()
            .ok_or("no segment")?;
        let path = dir.join(&last);
        let bytes = std::fs::read(&path).map_err(|e| e.to_string())?;
        let mut cut = 0usize;
        let mut lost = 0u64;
        let mut rest = &bytes[..];
        while let Ok(header) = BatchHeader::parse(rest) {
            let size = header.total_bytes();
            if header.base_offset >= synced {
                lost += 1;
            } else {
                cut += size;
            }
            rest = rest.get(size..).unwrap_or_default();
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| e.to_string())?;
        file.set_len(cut as u64).map_err(|e| e.to_string())?;
        Ok(lost)
    }

    fn open(&mut self, index: usize) -> Result<DiskLog, String> {
        let config = LogConfig {
            segment_bytes: 2_048,
            index_interval_bytes: 256,
            retention_ms: -1,
            max_message_bytes: if index == 0 {
                SMALL_REGION_MESSAGE_BYTES
            } else {
                LogConfig::default().max_message_bytes
            },
            cleanup_compact: self.compaction,
            cleanup_delete: !self.compaction,
            min_compaction_lag_ms: 0,
            // Stamps are simulated milliseconds, long past for the wall clock: a tombstone may
            // go as soon as the horizon settles it.
            delete_retention_ms: 0,
            ..LogConfig::default()
        };
        let dir = self.root.path().join(format!("region-{index}"));
        let partition =
            Arc::new(Partition::open(&dir, config, now_ms()).map_err(|e| e.to_string())?);
        if !partition.opened_cleanly() {
            // The broker fsyncs a recovered log before its replica counts it all as durable.
            partition.sync().map_err(|e| e.to_string())?;
        }
        let log = ReplicaLog::open(Arc::clone(&partition)).map_err(|e| e.to_string())?;
        self.transactions.opened(index, &partition);
        Ok(DiskLog { partition, log })
    }
}

/// `max.message.bytes` of region #0: its own batches fit (their filler is short; `payload`
/// checks), the other regions' larger ones (up to about 450 bytes) must still be taken in, as
/// replicated batches are not judged by local produce limits.
const SMALL_REGION_MESSAGE_BYTES: u32 = 280;

/// Records of write `number` are stamped `number` milliseconds after the process started, so
/// the number survives in the record the cleaner writes for it (which keeps the timestamp and
/// the causal metadata of the last write it merges).
fn timestamp_of(number: Payload) -> i64 {
    static STARTED_MS: LazyLock<i64> = LazyLock::new(now_ms);
    *STARTED_MS + i64::try_from(number).unwrap_or(i64::MAX / 2)
}

/// The records of the batch standing for write `number`: one to three, so batches are
/// multi-record as producers send them. The first is the table write of `number`
/// (`table_record`, as a producer to a table topic sends it); the others have no key, so tables
/// skip them. Every record carries the number in its timestamp. Transactional ones carry their
/// producer, epoch and sequences.
fn records_of(number: Payload, write: &Write, short: bool) -> Vec<Record> {
    let filler = number % if short { 10 } else { 120 };
    let count = transactions::records_in(number);
    let table = table_record(number);
    let (transactional, producer_id, producer_epoch, first_seq) = match *write {
        Write::Transactional {
            producer_id,
            epoch,
            first_seq,
        } => (true, producer_id, epoch, first_seq),
        // No producer id, so no sequence; the encoder keeps records in one batch only while
        // offset minus sequence stays the same.
        _ => (false, -1, -1, -1),
    };
    (0..count)
        .map(|i| Record {
            transactional,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i64::from(i),
            sequence: first_seq + i,
            timestamp: timestamp_of(number),
            key: (i == 0).then(|| Bytes::from(format!("key-{}", table.key))),
            value: if i == 0 {
                table.value.clone().map(Bytes::from)
            } else {
                Some(Bytes::from(vec![b'x'; filler as usize]))
            },
            headers: if i == 0 {
                [
                    (OP_HEADER, table.op.map(|op| op.as_bytes().to_vec())),
                    (PATH_HEADER, table.path.clone().map(String::into_bytes)),
                ]
                .into_iter()
                .filter_map(|(name, value)| {
                    Some((StrBytes::from_static_str(name), Some(Bytes::from(value?))))
                })
                .collect()
            } else {
                Default::default()
            },
        })
        .collect()
}

impl SimStorage for DiskStorage {
    type Log = DiskLog;

    const REPLAY: &'static str =
        "cargo test --release -p causeway-broker --test simulation_on_disk";

    const SEEDS: bool = true;

    /// The broker's seed: the region's directory is removed, then the donor's log is copied in
    /// chunks of a random size as seed requests read it (`seed::read_chunk`) and the joining
    /// region appends them (`seed::append_chunk`, `seed::finish_copy`); the adapter is opened
    /// again over the copy, as `PartitionHandle::reload_replica` does. What the donor's
    /// maintenance removed counts as removed here too.
    fn seed(
        &mut self,
        index: usize,
        old: DiskLog,
        from_index: usize,
        from: &DiskLog,
        choice: u64,
    ) -> Result<DiskLog, String> {
        drop(old);
        let dir = self.root.path().join(format!("region-{index}"));
        std::fs::remove_dir_all(&dir).map_err(|e| e.to_string())?;
        let copy = self.open(index)?;
        let chunk_bytes = 1 + (choice % 4_096) as usize;
        let mut removed = VectorClock::default();
        let mut offset = 0u64;
        loop {
            let chunk = seed::read_chunk(&from.partition, offset, chunk_bytes)?;
            for (origin, seq) in &chunk.removed {
                removed.advance(*origin, *seq);
            }
            seed::append_chunk(&copy.partition, chunk.batches)?;
            if chunk.next_offset >= chunk.end_offset {
                break;
            }
            if chunk.next_offset <= offset {
                return Err(format!("a seed chunk from {offset} made no progress"));
            }
            offset = chunk.next_offset;
        }
        seed::finish_copy(&copy.partition, &removed.to_deps()).map_err(|e| e.to_string())?;
        let partition = copy.partition;
        let log = ReplicaLog::open(Arc::clone(&partition)).map_err(|e| e.to_string())?;
        let donor = self.retained(from)?;
        let history = self.history_of(from_index, &donor)?;
        let removed = self.removed.get(from_index).cloned().unwrap_or_default();
        *self
            .history
            .get_mut(index)
            .ok_or("seeding an unknown region")? = history;
        *self
            .removed
            .get_mut(index)
            .ok_or("seeding an unknown region")? = removed;
        *self
            .horizons
            .get_mut(index)
            .ok_or("seeding an unknown region")? = Default::default();
        let copied = self.retained(&DiskLog {
            partition: Arc::clone(&partition),
            log: ReplicaLog::open(Arc::clone(&partition)).map_err(|e| e.to_string())?,
        })?;
        if ids(&copied) != ids(&donor) {
            return Err(format!(
                "the copy holds {} batches, its donor {}, or other ones",
                copied.len(),
                donor.len()
            ));
        }
        Ok(DiskLog { partition, log })
    }

    fn create(&mut self, index: usize) -> Result<DiskLog, String> {
        if self.history.len() <= index {
            self.history.resize_with(index + 1, Vec::new);
            self.removed.resize_with(index + 1, HashSet::new);
            self.horizons.resize_with(index + 1, Default::default);
        }
        self.open(index)
    }

    fn crash(&mut self, index: usize, log: DiskLog) -> Result<(DiskLog, u64), String> {
        let before = log.partition.log_end_offset();
        let synced = log.partition.synced_offset();
        let held = self.retained(&log)?;
        let history = self.history_of(index, &held)?;
        drop(log);
        self.transactions.crashed(index);
        *self
            .horizons
            .get_mut(index)
            .ok_or("crash of an unknown region")? = Default::default();
        let lost = if self.power_loss {
            self.lose_unsynced(index, synced)?
        } else {
            0
        };
        let reopened = self.open(index)?;
        let after = reopened.partition.log_end_offset();
        if !self.power_loss && after != before {
            return Err(format!(
                "a killed process keeps what it wrote: log end {before} before, {after} after"
            ));
        }
        if self.power_loss && (after < synced.min(before) || after > before) {
            return Err(format!(
                "a power loss keeps what was fsynced: synced through {synced} of {before}, {after} after"
            ));
        }
        // What the power loss took is the log's tail, which is also the history's.
        let kept = held.len().saturating_sub(lost as usize);
        if ids(&self.retained(&reopened)?) != ids(&held[..kept]) {
            return Err(format!(
                "the reopened log is not the {kept} batches before the {lost} the power loss took"
            ));
        }
        let mut history = history;
        history.truncate(history.len() - (held.len() - kept));
        self.history[index] = history;
        Ok((reopened, lost))
    }

    fn payload(&mut self, index: usize, region: u32, number: Payload) -> Bytes {
        let write = self.transactions.write(index, region, number);
        if let Write::Marker {
            kind,
            producer_id,
            epoch,
        } = write
        {
            return Bytes::from(marker_bytes(kind, producer_id, epoch, number));
        }
        let records = records_of(number, &write, index == 0);
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            records.iter(),
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .expect("a record batch encodes");
        assert!(
            index != 0 || buf.len() <= SMALL_REGION_MESSAGE_BYTES as usize,
            "write {number} of region #0 takes {} bytes, over its max.message.bytes",
            buf.len()
        );
        buf.freeze()
    }

    fn number(&self, payload: &Bytes) -> Result<Payload, String> {
        number_of(payload)
    }

    fn check_final(&self, logs: &[&DiskLog]) -> Result<(), String> {
        for (index, log) in logs.iter().enumerate() {
            let shown = self.transactions.shown(&log.partition)?;
            self.transactions.check(index, &shown)?;
        }
        TRANSACTIONS_BEGUN.fetch_add(self.transactions.begun, Ordering::Relaxed);
        TAKEOVERS.fetch_add(self.transactions.taken_over, Ordering::Relaxed);
        if self.compaction {
            check_rows(logs)?;
        } else {
            check_positions(logs)?;
        }
        Ok(())
    }

    fn batches(&self, index: usize, log: &DiskLog) -> Result<Vec<Batch<Payload>>, String> {
        let retained = self.retained(log)?;
        let history = self.history_of(index, &retained)?;
        let held: HashSet<BatchId> = ids(&retained).into_iter().collect();
        let removed = self.removed.get(index).ok_or("an unknown region")?;
        if let Some(lost) = history
            .iter()
            .find(|b| !held.contains(&b.id()) && !removed.contains(&b.id()))
        {
            let id = lost.id();
            return Err(format!(
                "{}:{} left the log, but no maintenance removed it",
                id.origin, id.seq
            ));
        }
        Ok(history)
    }

    fn durable_clock(&self, log: &DiskLog) -> VectorClock {
        if self.power_loss {
            return log.synced_clock().unwrap_or_default();
        }
        // A killed process loses nothing the kernel holds: the whole log survives.
        log.log
            .recover()
            .map(|state| state.clock)
            .unwrap_or_default()
    }

    /// The maintenance pass the broker runs: on a table, retention then the log cleaner
    /// (`clean_partition`) within the stable offset and the tombstone horizon, as
    /// `PartitionHandle::clean_bounds` computes them; otherwise DeleteRecords to a random
    /// offset half of the time, then retention, bounded by the offset below the stable cut.
    fn maintain(
        &mut self,
        index: usize,
        log: &mut DiskLog,
        bounds: &MaintenanceBounds,
        choice: u64,
    ) -> Result<u64, String> {
        let before = self.retained(log)?;
        self.history[index] = self.history_of(index, &before)?;
        let stable = log.log.offset_below_cut(&bounds.clock, &bounds.cut);
        if self.compaction {
            log.partition
                .maintain(now_ms(), stable)
                .map_err(|e| format!("maintenance below {stable}: {e}"))?;
            let horizon = self.horizons.get_mut(index).ok_or("an unknown region")?;
            let replica_log = &log.log;
            let clean = CleanBounds {
                stable_offset: stable,
                settled_offset: Box::new(|merged_end| {
                    replica_log.settled_offset(
                        horizon,
                        (&bounds.clock, &bounds.cut, bounds.frontier.clone()),
                        merged_end,
                    )
                }),
            };
            // A third of the passes get a rows budget of 256 to 1,791 bytes, about what the
            // table's few rows take: such a pass may compact only a prefix, or nothing.
            let rows_memory = if choice % 3 == 1 {
                256 + (choice / 3) % 1_536
            } else {
                u64::MAX
            };
            let pass = clean_partition(
                TOPIC,
                0,
                &log.partition,
                MergeMode::Crdt,
                clean,
                now_ms(),
                &mut PassBudget::new(0).with_rows_memory(rows_memory),
            )
            .map_err(|e| format!("compaction below {stable}: {e}"))?;
            if let Some(pass) = pass {
                COMPACTION_PASSES.fetch_add(1, Ordering::Relaxed);
                if pass.stopped_at_rows_memory {
                    ROWS_BOUNDED_PASSES.fetch_add(1, Ordering::Relaxed);
                }
            }
        } else {
            let start = log.partition.log_start_offset();
            let end = log.partition.log_end_offset();
            if choice.is_multiple_of(2) && end > start {
                let span = u64::try_from(end - start + 1).unwrap_or(1);
                let to = start + i64::try_from((choice / 2) % span).unwrap_or(0);
                log.partition
                    .delete_records_before(to)
                    .map_err(|e| format!("DeleteRecords to {to}: {e}"))?;
            }
            log.partition
                .maintain(now_ms(), stable)
                .map_err(|e| format!("maintenance below {stable}: {e}"))?;
        }
        let after = self.retained(log)?;
        let kept: HashSet<BatchId> = ids(&after).into_iter().collect();
        let survivors: Vec<&Batch<Payload>> =
            before.iter().filter(|b| kept.contains(&b.id())).collect();
        let same =
            survivors.len() == after.len() && survivors.iter().zip(&after).all(|(b, a)| **b == *a);
        let gone = before.len() - survivors.len();
        if !same || (!self.compaction && after[..] != before[gone..]) {
            return Err(format!(
                "maintenance removed batches other than a {}: {} before, {} after",
                if self.compaction { "subset" } else { "prefix" },
                before.len(),
                after.len()
            ));
        }
        let removed = self.removed.get_mut(index).ok_or("an unknown region")?;
        removed.extend(before.iter().map(Batch::id).filter(|id| !kept.contains(id)));
        Ok(gone as u64)
    }
}

/// The ids of `batches`, in order.
fn ids(batches: &[Batch<Payload>]) -> Vec<BatchId> {
    batches.iter().map(Batch::id).collect()
}

/// A region's log as a consumer sees it: from its log start, each batch's base offset, id and
/// record count.
fn visible_batches(partition: &Partition) -> Result<Vec<(i64, BatchId, i64)>, String> {
    let ids: BTreeMap<i64, BatchId> = partition
        .causal_entries(
            partition.retained_start_offset(),
            partition.log_end_offset(),
        )
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|(base, meta)| (base, meta.id()))
        .collect();
    let mut out = Vec::new();
    let mut from = partition.log_start_offset();
    while from < partition.log_end_offset() {
        let read = partition.read(from, 64 * 1024).map_err(|e| e.to_string())?;
        let before = out.len();
        for (header, _) in whole_batches(&read.records) {
            let id = ids
                .get(&header.base_offset)
                .ok_or_else(|| format!("no causal entry at {}", header.base_offset))?;
            out.push((
                header.base_offset,
                *id,
                i64::from(header.last_offset_delta) + 1,
            ));
            from = header.last_offset() + 1;
        }
        if out.len() == before {
            return Err(format!("nothing readable at {from}"));
        }
    }
    Ok(out)
}

/// Committed positions translate exactly between the regions' final logs: for offsets spread
/// over each region's log (between batches and inside them), the position the broker computes
/// there (`position_at`) resumes in every other region (`resume_at`) at that region's first
/// visible record the committing region had not consumed: what its log held below the offset,
/// and whatever it held once and removed (retention and DeleteRecords remove from the front).
fn check_positions(logs: &[&DiskLog]) -> Result<(), String> {
    let mut views = Vec::with_capacity(logs.len());
    for log in logs {
        let clock = log.log.recover().map_err(|e| e.to_string())?.clock;
        views.push((visible_batches(&log.partition)?, clock));
    }
    for (i, from) in logs.iter().enumerate() {
        let (batches, clock) = &views[i];
        let (start, end) = (
            from.partition.log_start_offset(),
            from.partition.log_end_offset(),
        );
        let mut offsets: Vec<i64> = (0..=8).map(|k| start + (end - start) * k / 8).collect();
        offsets.extend(offsets.clone().into_iter().map(|x| (x + 1).min(end)));
        for committed in offsets {
            let position = position_at(&from.partition, committed, |below| {
                from.log.clock_below(below, clock)
            })
            .map_err(|e| e.to_string())?;
            // What the group consumed: whole batches below the offset (or no longer visible),
            // and the first records of the batch the offset lies inside.
            let below: HashSet<BatchId> = batches
                .iter()
                .filter(|(base, _, records)| base + records <= committed)
                .map(|(_, id, _)| *id)
                .collect();
            let visible: HashSet<BatchId> = batches.iter().map(|(_, id, _)| *id).collect();
            let inside = batches
                .iter()
                .find(|(base, _, records)| *base < committed && committed < base + records)
                .map(|(base, id, _)| (*id, committed - base));
            let consumed_whole = |id: &BatchId| {
                below.contains(id) || (clock.get(id.origin) >= id.seq && !visible.contains(id))
            };
            for (j, to) in logs.iter().enumerate().filter(|(j, _)| *j != i) {
                let (to_batches, to_clock) = &views[j];
                let mut expected = to.partition.log_end_offset();
                for (base, id, _) in to_batches {
                    if consumed_whole(id) {
                        continue;
                    }
                    expected = match inside {
                        Some((partial, consumed)) if partial == *id => base + consumed,
                        _ => *base,
                    };
                    break;
                }
                // A reader cannot go below the log start, even inside a batch.
                let expected = expected.max(to.partition.log_start_offset());
                let resume = resume_at(&to.partition, &position, |frontier, partial, from| {
                    coverage(&to.log, to_clock, frontier, partial, from)
                })
                .map_err(|e| e.to_string())?;
                if resume.offset != expected {
                    return Err(format!(
                        "a position committed at {committed} in region #{i} resumes at {} in region #{j}, not at its first record not consumed, {expected} ({position:?})",
                        resume.offset
                    ));
                }
                POSITIONS_TRANSLATED.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}

/// The rows each region's table holds, rebuilt from its log as the materializer reads it
/// (merged rows of the cleaner, then the records after them), must materialize the same in
/// every region, whatever each one's compaction kept or dropped (tombstones included).
fn check_rows(logs: &[&DiskLog]) -> Result<(), String> {
    let mut first: Option<BTreeMap<Bytes, Option<Content>>> = None;
    for (index, log) in logs.iter().enumerate() {
        let rows = table_rows(&log.partition)?;
        // Every key is written in every run: a key with no record left had its tombstone
        // dropped with everything before it.
        TOMBSTONES_DROPPED.fetch_add(KEYS.saturating_sub(rows.len()) as u64, Ordering::Relaxed);
        let rows: BTreeMap<Bytes, Option<Content>> = rows
            .into_iter()
            .map(|(key, row)| (key, row.materialize()))
            .collect();
        match &first {
            None => first = Some(rows),
            Some(expected) => {
                for key in expected.keys().chain(rows.keys()) {
                    let (ours, theirs) = (
                        expected.get(key).cloned().flatten(),
                        rows.get(key).cloned().flatten(),
                    );
                    if ours != theirs {
                        return Err(format!(
                            "table rows differ: key {key:?} is {theirs:?} at region #{index}, {ours:?} at region #0"
                        ));
                    }
                }
            }
        }
    }
    ROWS_COMPARED.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// The rows of `partition`'s table, read from its log start with the materializer's reader,
/// as they will be once the transactions still open are aborted. (The materializer itself
/// stops at the last stable offset, which sits at different batches in different log orders;
/// the cleaner never goes past it, so no merged row holds a write of an open transaction.)
fn table_rows(partition: &Partition) -> Result<BTreeMap<Bytes, Row>, String> {
    let (start, end) = (partition.log_start_offset(), partition.log_end_offset());
    let reader = WriteReader {
        topic: TOPIC,
        partition: 0,
        mode: MergeMode::Crdt,
        from: start,
        count_refusals: false,
    };
    let aborted = partition.aborted_transactions(start, end);
    let open = partition.open_transactions();
    let metas: HashMap<i64, CausalMeta> = partition
        .causal_entries(start, end)
        .map_err(|e| e.to_string())?
        .into_iter()
        .collect();
    let mut rows: BTreeMap<Bytes, Row> = BTreeMap::new();
    let mut offset = start;
    while offset < end {
        let read = partition.read(offset, 1 << 16).map_err(|e| e.to_string())?;
        let batches: Vec<_> = whole_batches(&read.records).collect();
        let Some((last, _)) = batches.last() else {
            return Err(format!("no whole batch at offset {offset}"));
        };
        offset = last.last_offset() + 1;
        for (header, batch) in &batches {
            let in_open = open.iter().any(|t| {
                t.producer_id == header.producer_id && t.first_offset <= header.base_offset
            });
            if in_open || skipped(header, &aborted) {
                continue;
            }
            let meta = metas
                .get(&header.base_offset)
                .ok_or_else(|| format!("no causal entry at offset {}", header.base_offset))?;
            if header.is_cleaned() {
                CLEANED_ROWS.fetch_add(1, Ordering::Relaxed);
            }
            for_each_write(&reader, header, batch, meta, |record| {
                record.write.apply_to(rows.entry(record.key).or_default());
            });
        }
    }
    Ok(rows)
}

/// Transactions begun and takeover aborts written, over every seed run (for the report).
static TRANSACTIONS_BEGUN: AtomicU64 = AtomicU64::new(0);
static TAKEOVERS: AtomicU64 = AtomicU64::new(0);
/// Compaction passes that rewrote segments, final logs whose rows were compared, and merged
/// rows of the cleaner read in them.
static COMPACTION_PASSES: AtomicU64 = AtomicU64::new(0);
/// Of those, passes cut short by their rows budget.
static ROWS_BOUNDED_PASSES: AtomicU64 = AtomicU64::new(0);
static ROWS_COMPARED: AtomicU64 = AtomicU64::new(0);
static CLEANED_ROWS: AtomicU64 = AtomicU64::new(0);
/// Keys left with no record at all in a final log (their tombstone dropped), over every region.
static TOMBSTONES_DROPPED: AtomicU64 = AtomicU64::new(0);
/// Committed positions translated from one region's final log to another's and checked.
static POSITIONS_TRANSLATED: AtomicU64 = AtomicU64::new(0);

/// The simulated write a stored batch stands for: a marker's rides in its timestamp, a data
/// batch's in its records' (`timestamp_of`), also in the one record of a batch the cleaner
/// wrote.
fn number_of(payload: &[u8]) -> Result<Payload, String> {
    let header = BatchHeader::parse(payload).map_err(|e| e.to_string())?;
    if header.is_control() {
        return u64::try_from(header.base_timestamp).map_err(|e| e.to_string());
    }
    let number = u64::try_from(header.base_timestamp - timestamp_of(0))
        .map_err(|_| format!("a batch stamped {}, before the run", header.base_timestamp))?;
    let mut bytes = Bytes::copy_from_slice(payload);
    let set = RecordBatchDecoder::decode(&mut bytes).map_err(|e| e.to_string())?;
    let records = if header.is_cleaned() {
        1
    } else {
        transactions::records_in(number) as usize
    };
    if set.records.len() != records {
        return Err(format!(
            "batch of write {number} holds {} records",
            set.records.len()
        ));
    }
    Ok(number)
}

impl DiskStorage {
    /// The batches `log` holds now, in log order, with payloads as numbers.
    fn retained(&self, log: &DiskLog) -> Result<Vec<Batch<Payload>>, String> {
        let mut out = Vec::new();
        let mut from = 0u64;
        loop {
            let chunk = log.log.read(from, 256).map_err(|e| e.to_string())?;
            let Some(&(last, _)) = chunk.last() else {
                return Ok(out);
            };
            for (_, batch) in chunk {
                out.push(Batch {
                    payload: self.number(&batch.payload)?,
                    meta: batch.meta,
                });
            }
            from = last + 1;
        }
    }

    /// The history of the region at `index` given what its log holds now, `retained`: the
    /// history of the last look, then the batches appended since (the log's tail past every
    /// batch the history has). Fails when the log holds known batches in another order, or a
    /// new batch before a known one.
    fn history_of(
        &self,
        index: usize,
        retained: &[Batch<Payload>],
    ) -> Result<Vec<Batch<Payload>>, String> {
        let known = self.history.get(index).ok_or("an unknown region")?;
        let positions: HashMap<BatchId, usize> =
            known.iter().enumerate().map(|(i, b)| (b.id(), i)).collect();
        let mut last_known: Option<usize> = None;
        let mut new_from: Option<usize> = None;
        for (k, batch) in retained.iter().enumerate() {
            let id = batch.id();
            match positions.get(&id) {
                None => {
                    new_from.get_or_insert(k);
                }
                Some(&at) => {
                    if new_from.is_some() || last_known.is_some_and(|last| at <= last) {
                        return Err(format!(
                            "the log holds {}:{} out of the order it had",
                            id.origin, id.seq
                        ));
                    }
                    if known[at].payload != batch.payload {
                        return Err(format!(
                            "{}:{} changed from write {} to {}",
                            id.origin, id.seq, known[at].payload, batch.payload
                        ));
                    }
                    last_known = Some(at);
                }
            }
        }
        let mut history = known.clone();
        if let Some(from) = new_from {
            history.extend_from_slice(&retained[from..]);
        }
        Ok(history)
    }
}

fn seeds() -> Vec<u64> {
    if let Some(seed) = std::env::var("CAUSEWAY_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return vec![seed];
    }
    let count: u64 = std::env::var("CAUSEWAY_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000);
    let from: u64 = std::env::var("CAUSEWAY_SIM_SEEDS_FROM")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (from..from + count).collect()
}

#[test]
fn regions_on_the_brokers_storage_converge_without_losing_acknowledged_batches() {
    let started = Instant::now();
    let seeds = seeds();
    let (mut appends, mut crashes, mut deleted, mut batches) = (0u64, 0u64, 0u64, 0usize);
    let (mut lost, mut reseeded, mut stale_reseeded) = (0u64, 0u64, 0u64);
    for &seed in &seeds {
        let mut rng = SimRng::new(seed);
        let config = SimConfig::random(&mut rng);
        if seeds.len() == 1 {
            println!("seed {seed}: {config:?}");
        }
        // Odd seeds crash by power loss, even ones by kill -9; in every other pair the
        // partition is a table, compacted by the broker's cleaner.
        let storage = DiskStorage::new(seed % 2 == 1, (seed / 2) % 2 == 1);
        let report =
            run_on(seed, config, storage).unwrap_or_else(|violation| panic!("{violation}"));
        appends += report.appends;
        crashes += report.crashes;
        lost += report.lost_unsynced;
        deleted += report.deleted;
        reseeded += report.reseeded;
        stale_reseeded += report.stale_reseeded;
        batches += report.final_log.len();
    }
    println!(
        "{} seeds on disk in {:.1} s: {appends} appends, {crashes} crashes (killed or powered off, then reopened; {lost} unsynced batches lost), {deleted} batches removed by maintenance (retention, DeleteRecords, compaction), {reseeded} regions wiped and seeded from another ({stale_reseeded} of them back after being stale), {batches} batches in the final histories",
        seeds.len(),
        started.elapsed().as_secs_f64()
    );
    let (begun, takeovers) = (
        TRANSACTIONS_BEGUN.load(Ordering::Relaxed),
        TAKEOVERS.load(Ordering::Relaxed),
    );
    println!(
        "{begun} transactions begun; {takeovers} aborted by another region while their origin was down"
    );
    let (passes, bounded, compared, cleaned, dropped) = (
        COMPACTION_PASSES.load(Ordering::Relaxed),
        ROWS_BOUNDED_PASSES.load(Ordering::Relaxed),
        ROWS_COMPARED.load(Ordering::Relaxed),
        CLEANED_ROWS.load(Ordering::Relaxed),
        TOMBSTONES_DROPPED.load(Ordering::Relaxed),
    );
    println!(
        "{passes} compaction passes ({bounded} cut short by their rows budget); table rows compared in {compared} final states, reading {cleaned} rows merged by the cleaner; {dropped} keys left without a record (tombstone dropped)"
    );
    assert!(
        seeds.len() == 1
            || (appends > 0
                && crashes > 0
                && deleted > 0
                && lost > 0
                && reseeded > 0
                && stale_reseeded > 0),
        "the runs appended, crashed (losing unsynced batches to power losses), deleted and re-seeded"
    );
    assert!(
        seeds.len() == 1 || (begun > 0 && takeovers > 0),
        "transactions ran, and other regions aborted some"
    );
    assert!(
        seeds.len() == 1
            || (passes > 0 && bounded > 0 && compared > 0 && cleaned > 0 && dropped > 0),
        "tables were compacted (dropping tombstones, some passes cut short by their rows budget), and their rows compared"
    );
    let translated = POSITIONS_TRANSLATED.load(Ordering::Relaxed);
    println!("{translated} committed positions translated between final logs and checked");
    assert!(
        seeds.len() == 1 || translated > 0,
        "committed positions were translated"
    );
}
