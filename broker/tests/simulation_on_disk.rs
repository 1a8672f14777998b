//! The replication simulator (`causeway_replication::sim`) over the broker's own storage adapter:
//! every simulated region keeps its partition in real segment files ([`Partition`], small
//! segments so rolls happen) behind [`ReplicaLog`], the `(origin, seq)` index and clock rebuild
//! the broker runs, with multi-record Kafka batches as payloads. Local appends take the broker's
//! produce path (`ReplicaLog::append_own`), syncs its group commit (`Partition::sync_through`),
//! remote batches its replicated append. A crash here is a killed process: the partition is
//! dropped without a clean close and reopened (recovery, index rebuild, clock rebuild), then
//! fsynced, as the broker does after an unclean start. The in-memory runs
//! (`replication/tests/simulation.rs`) cover power loss.
//!
//! `CAUSEWAY_SIM_SEEDS=N` runs N seeds (default 2,000) from `CAUSEWAY_SIM_SEEDS_FROM` (default
//! 0), so a long run can go in slices; `CAUSEWAY_SIM_SEED=S` replays one.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use causeway_broker::replication::log::ReplicaLog;
use causeway_broker::replication::seed;
use causeway_broker::wall_clock::now_ms;
use causeway_replication::delivery::{
    AppendError, Batch, BatchId, BatchLog, LogError, Positioned, RecoveredLog,
};
use causeway_replication::sim::{run_on, CallerLog, Payload, SimConfig, SimRng, SimStorage};
use causeway_replication::VectorClock;
use causeway_storage::{control_type, BatchHeader, LogConfig, Partition, StorageError};
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
        let mut bytes = batch.payload.to_vec();
        let header = BatchHeader::parse(&bytes)
            .map_err(|e| AppendError::Refused(format!("an unparsable payload: {e}")))?;
        let appended = match control_type(&header, &bytes) {
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
            None => self.log.append_own(&mut bytes, &batch.meta, now_ms()),
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
/// calls, but cheap there), and per region the batches maintenance deleted, in log order.
struct DiskStorage {
    root: TempDir,
    deleted: Vec<Vec<Batch<Payload>>>,
    transactions: TransactionModel,
    /// Whether crashes are power losses (what no fsync covered is lost) rather than kills.
    power_loss: bool,
}

impl DiskStorage {
    fn new(power_loss: bool) -> DiskStorage {
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
            deleted: Vec::new(),
            transactions: TransactionModel::default(),
            power_loss,
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

/// `max.message.bytes` of region #0: its own batches fit (their filler is short: at most about
/// 125 bytes), the other regions' larger ones (up to about 185) must still be taken in, as
/// replicated batches are not judged by local produce limits.
const SMALL_REGION_MESSAGE_BYTES: u32 = 140;

/// The records of the batch standing for write `number`: one to three, the first carrying the
/// number, so batches are multi-record as producers send them; transactional ones carry their
/// producer, epoch and sequences.
fn records_of(number: Payload, write: &Write, short: bool) -> Vec<Record> {
    let filler = number % if short { 10 } else { 40 };
    let count = transactions::records_in(number);
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
            timestamp: now_ms(),
            key: Some(Bytes::from(format!("key-{}", number % 5))),
            value: Some(if i == 0 {
                Bytes::copy_from_slice(&number.to_be_bytes())
            } else {
                Bytes::from(vec![b'x'; filler as usize])
            }),
            headers: Default::default(),
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
    /// maintenance deleted counts as deleted here too.
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
        let deleted = self.deleted.get(from_index).cloned().unwrap_or_default();
        *self
            .deleted
            .get_mut(index)
            .ok_or("seeding an unknown region")? = deleted;
        Ok(DiskLog { partition, log })
    }

    fn create(&mut self, index: usize) -> Result<DiskLog, String> {
        if self.deleted.len() <= index {
            self.deleted.resize_with(index + 1, Vec::new);
        }
        self.open(index)
    }

    fn crash(&mut self, index: usize, log: DiskLog) -> Result<(DiskLog, u64), String> {
        let before = log.partition.log_end_offset();
        let synced = log.partition.synced_offset();
        drop(log);
        self.transactions.crashed(index);
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
        Ok(())
    }

    fn batches(&self, index: usize, log: &DiskLog) -> Result<Vec<Batch<Payload>>, String> {
        let mut out = self.deleted.get(index).cloned().unwrap_or_default();
        out.extend(self.retained(log)?);
        Ok(out)
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

    /// DeleteRecords to a random offset half of the time, then the maintenance pass the broker
    /// runs, bounded by the offset below the stable cut as the broker computes it.
    fn maintain(
        &mut self,
        index: usize,
        log: &mut DiskLog,
        clock: &VectorClock,
        cut: &VectorClock,
        choice: u64,
    ) -> Result<u64, String> {
        let before = self.retained(log)?;
        let start = log.partition.log_start_offset();
        let end = log.partition.log_end_offset();
        if choice.is_multiple_of(2) && end > start {
            let span = u64::try_from(end - start + 1).unwrap_or(1);
            let to = start + i64::try_from((choice / 2) % span).unwrap_or(0);
            log.partition
                .delete_records_before(to)
                .map_err(|e| format!("DeleteRecords to {to}: {e}"))?;
        }
        let stable = log.log.offset_below_cut(clock, cut);
        log.partition
            .maintain(now_ms(), stable)
            .map_err(|e| format!("maintenance below {stable}: {e}"))?;
        let after = self.retained(log)?;
        let gone = after
            .first()
            .and_then(|first| before.iter().position(|b| b.meta == first.meta))
            .unwrap_or(before.len());
        if before[gone..].len() != after.len() {
            return Err(format!(
                "maintenance removed batches other than a prefix: {} before, {} after, {gone} deleted",
                before.len(),
                after.len()
            ));
        }
        let deleted = before.into_iter().take(gone);
        self.deleted
            .get_mut(index)
            .ok_or("maintenance of an unknown region")?
            .extend(deleted);
        Ok(gone as u64)
    }
}

/// Transactions begun and takeover aborts written, over every seed run (for the report).
static TRANSACTIONS_BEGUN: AtomicU64 = AtomicU64::new(0);
static TAKEOVERS: AtomicU64 = AtomicU64::new(0);

/// The simulated write a stored batch stands for: a marker's rides in its timestamp, a data
/// batch's in its first record's value.
fn number_of(payload: &[u8]) -> Result<Payload, String> {
    let header = BatchHeader::parse(payload).map_err(|e| e.to_string())?;
    if header.is_control() {
        return u64::try_from(header.base_timestamp).map_err(|e| e.to_string());
    }
    let mut bytes = Bytes::copy_from_slice(payload);
    let set = RecordBatchDecoder::decode(&mut bytes).map_err(|e| e.to_string())?;
    let first = set.records.first().ok_or("an empty batch")?;
    let value = first.value.as_ref().ok_or("a record without a value")?;
    let number: [u8; 8] = value
        .as_ref()
        .try_into()
        .map_err(|_| "a first value that is not 8 bytes")?;
    let number = u64::from_be_bytes(number);
    if set.records.len() != transactions::records_in(number) as usize {
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
        // Odd seeds crash by power loss, even ones by kill -9.
        let report = run_on(seed, config, DiskStorage::new(seed % 2 == 1))
            .unwrap_or_else(|violation| panic!("{violation}"));
        appends += report.appends;
        crashes += report.crashes;
        lost += report.lost_unsynced;
        deleted += report.deleted;
        reseeded += report.reseeded;
        stale_reseeded += report.stale_reseeded;
        batches += report.final_log.len();
    }
    println!(
        "{} seeds on disk in {:.1} s: {appends} appends, {crashes} crashes (killed or powered off, then reopened; {lost} unsynced batches lost), {deleted} batches deleted by maintenance, {reseeded} regions wiped and seeded from another ({stale_reseeded} of them back after being stale), {batches} batches in the final histories",
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
    assert!(
        appends > 0
            && crashes > 0
            && deleted > 0
            && (seeds.len() == 1 || (lost > 0 && reseeded > 0 && stale_reseeded > 0)),
        "the runs appended, crashed (losing unsynced batches to power losses), deleted and re-seeded"
    );
    assert!(
        seeds.len() == 1 || (begun > 0 && takeovers > 0),
        "transactions ran, and other regions aborted some"
    );
}
