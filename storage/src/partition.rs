//! One partition's log: an ordered list of segments behind a `RwLock`, the group-commit fsync
//! path, recovery on open, reads, timestamp lookups, DeleteRecords and retention.
//!
//! ## Directory layout
//! `<base:020>.log|.index|.timeindex|.causal` per segment (formats in `segment.rs`, `index.rs`,
//! `causal.rs`) plus `log-start-offset.checkpoint` and `clean-shutdown.checkpoint`
//! (`checkpoint.rs`), `origin-high-water.checkpoint` (`partition/high_water.rs`: what the
//! deleted and compacted batches leave of the vector clock) and the cleaner's files
//! (`partition/compaction.rs`). The last segment is the active one; only it is appended to.
//!
//! ## Durability
//! `append` writes to the page cache (survives `kill -9`, not power loss): enough for acks=1.
//! `sync_through` is the group commit for acks=all: concurrent callers share one fsync round.
//! A segment is fsynced when it is closed (rolled), so after any stop only the last segment can
//! have lost a tail, and open recovers only that one (closed segments are trusted).
//! A failed fsync poisons the partition: every later append and sync returns `Poisoned`, because
//! after a failed fsync the kernel may have dropped the dirty pages and we cannot know what is on
//! disk. Leader epochs are not tracked by storage: appended batches get partitionLeaderEpoch 0.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::batch::{
    assign_offsets, stamp_log_append_time, BatchError, BatchHeader, BATCH_HEADER_BYTES,
};
use crate::causal::CausalMeta;
use crate::checkpoint::{self, CLEAN_SHUTDOWN_FILE, LOG_START_FILE, PRODUCERS_FILE};
use crate::config::{LogConfig, TimestampType};
use crate::control::{control_batch, control_type, ControlType};
use crate::error::{IoContext, StorageError};
use crate::producers::{
    AbortedTransaction, ActiveProducer, OpenTransaction, ProducerStates, SequenceCheck,
};
use crate::retention::{deletable_prefix, SegmentFacts};
use crate::segment::{remove_if_exists, PlannedRead, Segment, SyncJob};
use crate::telemetry;

pub mod compaction;
mod damage;
mod epochs;
mod high_water;
mod scrub;

pub use damage::DamagedRange;
use epochs::LeaderEpochs;
pub use scrub::ScrubStep;

/// Idle time after which an idempotent producer's state is forgotten (Kafka's
/// `producer.id.expiration.ms` default, one day).
const PRODUCER_IDLE_MS_MAX: i64 = 86_400_000;

/// What the broker needs to answer a Produce for one batch.
#[derive(Debug, Clone, Copy)]
pub struct AppendResult {
    /// Offset assigned to the batch's first record.
    pub base_offset: i64,
    /// Offset assigned to the batch's last record.
    pub last_offset: i64,
    /// The LogAppendTime stamped, or -1 under CreateTime.
    pub log_append_time_ms: i64,
    /// The log start offset after the append.
    pub log_start_offset: i64,
    /// True if the batch was a retry of one already appended (nothing was written; the offsets
    /// are the original ones).
    pub duplicate: bool,
}

/// What the broker needs to answer a Fetch for one partition.
#[derive(Debug, Clone)]
pub struct ReadResult {
    /// Whole batches, possibly empty.
    pub records: Bytes,
    /// The high watermark (log end in one region).
    pub high_watermark: i64,
    /// The first readable offset.
    pub log_start_offset: i64,
}

/// What one `maintain` call did, for logs and tests.
#[derive(Debug, Default, Clone)]
pub struct MaintenanceReport {
    /// Segments removed by retention or because they lay below the log start.
    pub segments_deleted: usize,
    /// Bytes of `.log` removed.
    pub bytes_deleted: u64,
    /// Whether the active segment was rolled because segment.ms elapsed.
    pub rolled: bool,
}

struct LogState {
    /// Ordered by base offset; never empty; the last one is active.
    segments: Vec<Segment>,
    log_start: i64,
    config: LogConfig,
    producers: ProducerStates,
}

impl LogState {
    fn active(&self) -> &Segment {
        // `segments` is never empty: open creates one and retention never removes the last.
        &self.segments[self.segments.len() - 1]
    }

    fn active_mut(&mut self) -> &mut Segment {
        let last = self.segments.len() - 1;
        &mut self.segments[last]
    }

    fn log_end(&self) -> i64 {
        self.active().end_offset()
    }

    fn last_causal(&self) -> Option<&CausalMeta> {
        self.segments.iter().rev().find_map(Segment::last_causal)
    }

    /// The first offset still on disk (at most the log start).
    fn retained_start(&self) -> i64 {
        self.segments
            .first()
            .map_or(self.log_start, |s| s.base().min(self.log_start))
    }

    fn out_of_range(&self, offset: i64) -> StorageError {
        StorageError::OffsetOutOfRange {
            offset,
            log_start: self.log_start,
            log_end: self.log_end(),
        }
    }

    /// Starts a new segment at the log end (the caller closed and fsynced the active one).
    fn start_segment(&mut self, dir: &Path) -> Result<(), StorageError> {
        let end = self.log_end();
        let carry = self.last_causal().cloned();
        let segment = Segment::create(dir, end, carry.as_ref().map(|m| (end - 1, m)))?;
        tracing::debug!(dir = %dir.display(), base_offset = end, "rolled segment");
        self.active_mut().close_files();
        self.segments.push(segment);
        self.snapshot_producers(dir)
    }

    /// Persists producer state as of the log end, so recovery replays only what follows.
    fn snapshot_producers(&self, dir: &Path) -> Result<(), StorageError> {
        let snapshot = self.producers.encode_snapshot(self.log_end());
        checkpoint::write_bytes(dir, PRODUCERS_FILE, &snapshot)
    }

    /// Rebuilds producer state: the snapshot, then every later batch header in the log.
    fn recover_producers(&mut self, dir: &Path) -> Result<(), StorageError> {
        let snapshot = checkpoint::read_bytes(dir, PRODUCERS_FILE)?
            .and_then(|bytes| ProducerStates::decode_snapshot(&bytes))
            .filter(|(end, _)| *end <= self.log_end());
        let (from, mut producers) = snapshot.unwrap_or_default();
        let mut replayed = 0usize;
        for segment in self.segments.iter().filter(|s| s.end_offset() > from) {
            let metas: HashMap<i64, CausalMeta> = segment
                .causal_entries(from, segment.end_offset())?
                .into_iter()
                .collect();
            for (header, control) in segment.batch_headers()? {
                if header.base_offset >= from {
                    let meta = metas.get(&header.base_offset);
                    producers.record(
                        &header,
                        control,
                        meta,
                        header.max_timestamp,
                        self.config.producers_max,
                    );
                    replayed += 1;
                }
            }
        }
        if replayed > 0 || !producers.is_empty() {
            tracing::info!(dir = %dir.display(), snapshot_end = from, batches_replayed = replayed, producers = producers.len(), "recovered producer state");
        }
        self.producers = producers;
        Ok(())
    }

    /// Removes the first `count` segments (never the active one), returning bytes removed.
    /// Their batches' per-origin high water is joined into the high-water file and fsynced
    /// first (`partition/high_water.rs`), so the vector clock replication rebuilds from the
    /// log after a restart does not go backwards when retention or DeleteRecords delete the
    /// only batches holding an origin's newest sequence.
    fn delete_leading(&mut self, count: usize, dir: &Path) -> Result<u64, StorageError> {
        let count = count.min(self.segments.len() - 1);
        if count == 0 {
            return Ok(0);
        }
        let handles = self.segments[..count]
            .iter()
            .map(|s| {
                let (_, _, causal_file, causal_size) = s.read_handles()?;
                Ok((causal_file, causal_size))
            })
            .collect::<Result<Vec<_>, StorageError>>()?;
        let deleted = high_water::of_causal_files(dir, handles)?;
        high_water::persist_join(dir, &deleted)?;
        let mut bytes = 0;
        for segment in self.segments.drain(..count) {
            tracing::info!(
                dir = %dir.display(),
                base_offset = segment.base(),
                end_offset = segment.end_offset(),
                bytes = segment.size(),
                "deleting segment"
            );
            bytes += segment.size();
            segment.delete_files()?;
            telemetry::segments_deleted(1);
        }
        Ok(bytes)
    }
}

/// Where an appended batch comes from, with its transaction marker type if it is one.
#[derive(Clone, Copy)]
enum Source {
    /// Produced in this region (or a marker written by its transaction coordinator).
    Local(Option<ControlType>),
    /// Produced in another region and replicated here.
    Replicated(Option<ControlType>),
}

/// One partition's log, shared between threads (`&self` methods, internal locking, blocking I/O).
pub struct Partition {
    dir: PathBuf,
    state: RwLock<LogState>,
    /// The offset below which everything is fsynced; also serializes fsync rounds.
    synced_end: Mutex<i64>,
    /// Set by a failed fsync or an append that could not be rolled back.
    poisoned: AtomicBool,
    /// Whether a new segment file was created since the directory was last fsynced.
    dir_dirty: AtomicBool,
    opened_cleanly: bool,
    /// Batches found damaged when read (see `partition/damage.rs`).
    damage: damage::Damage,
    /// The leader epochs of this log; a new one began when it opened (`partition/epochs.rs`).
    epochs: LeaderEpochs,
}

/// Segment base offsets found in `dir`, ascending; stale temp files are removed.
fn list_segments(dir: &Path) -> Result<Vec<i64>, StorageError> {
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir).ctx(|| format!("listing {}", dir.display()))? {
        let entry = entry.ctx(|| format!("listing {}", dir.display()))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".tmp") {
            remove_if_exists(&entry.path())?;
        } else if let Some(stem) = name.strip_suffix(".log") {
            match stem.parse::<i64>() {
                Ok(base) if base >= 0 && stem.len() == 20 => bases.push(base),
                _ => tracing::warn!(file = name, "ignoring unexpected .log file"),
            }
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

impl Partition {
    /// Opens (creating if absent) the partition directory and recovers it: unless a clean
    /// shutdown checkpoint vouches for the files, the active segment is scanned and truncated to
    /// its valid prefix and its indexes rebuilt; other segments' broken indexes are rebuilt.
    pub fn open(dir: &Path, config: LogConfig, now_ms: i64) -> Result<Partition, StorageError> {
        fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
        compaction::finish_swaps(dir)?;
        let bases = list_segments(dir)?;
        let clean = checkpoint::read(dir, CLEAN_SHUTDOWN_FILE)?;
        let checkpointed_start = checkpoint::read(dir, LOG_START_FILE)?
            .and_then(|v| v.first().copied())
            .filter(|&v| v >= 0);
        let interval = config.index_interval_bytes;
        let mut segments = Vec::with_capacity(bases.len().max(1));
        let mut opened_cleanly = false;
        for (i, &base) in bases.iter().enumerate() {
            if let Some(&next) = bases.get(i + 1) {
                let mut segment = Segment::open_trusted(dir, base, next, interval, now_ms)?;
                segment.close_files();
                segments.push(segment);
                continue;
            }
            let active_size = fs::metadata(dir.join(crate::segment::file_name(base, "log")))
                .ctx(|| format!("stat segment {base} in {}", dir.display()))?
                .len();
            match clean.as_deref() {
                Some(&[end, clean_base, clean_size])
                    if clean_base == base
                        && clean_size >= 0
                        && clean_size as u64 == active_size
                        && end >= base =>
                {
                    let mut segment = Segment::open_trusted(dir, base, end, interval, now_ms)?;
                    segment.load_last_causal()?;
                    segments.push(segment);
                    opened_cleanly = true;
                }
                _ => {
                    let (segment, cut_log, cut_causal) =
                        Segment::recover(dir, base, interval, now_ms)?;
                    telemetry::recovery_truncated(cut_log + cut_causal);
                    segments.push(segment);
                }
            }
        }
        checkpoint::remove(dir, CLEAN_SHUTDOWN_FILE)?;
        if segments.is_empty() {
            segments.push(Segment::create(dir, checkpointed_start.unwrap_or(0), None)?);
            checkpoint::sync_dir(dir)?;
        }
        let mut state = LogState {
            log_start: 0,
            segments,
            config,
            producers: ProducerStates::default(),
        };
        let first_base = state.segments[0].base();
        state.log_start = checkpointed_start
            .unwrap_or(first_base)
            .max(first_base)
            .min(state.log_end());
        // Trusted segments load their causal tail lazily; find the newest one that has any.
        if state.last_causal().is_none() {
            for segment in state.segments.iter_mut().rev() {
                if segment.load_last_causal()?.is_some() {
                    break;
                }
            }
        }
        state.recover_producers(dir)?;
        tracing::info!(
            dir = %dir.display(),
            log_start = state.log_start,
            log_end = state.log_end(),
            segments = state.segments.len(),
            clean = opened_cleanly,
            "opened partition"
        );
        let log_end = state.log_end();
        let epochs = LeaderEpochs::open_next(dir, state.log_start, log_end)?;
        Ok(Partition {
            dir: dir.to_path_buf(),
            state: RwLock::new(state),
            synced_end: Mutex::new(if opened_cleanly { log_end } else { i64::MIN }),
            poisoned: AtomicBool::new(false),
            dir_dirty: AtomicBool::new(false),
            opened_cleanly,
            damage: damage::Damage::default(),
            epochs,
        })
    }

    fn read_state(&self) -> RwLockReadGuard<'_, LogState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_state(&self) -> RwLockWriteGuard<'_, LogState> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_synced(&self) -> MutexGuard<'_, i64> {
        self.synced_end.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check_poisoned(&self) -> Result<(), StorageError> {
        if self.poisoned.load(Ordering::Acquire) {
            Err(StorageError::Poisoned)
        } else {
            Ok(())
        }
    }

    /// Appends ONE already-validated batch (from `split_batches`): assigns offsets, stamps
    /// LogAppendTime if configured (both in the copy written, `batch` is not changed), rolls
    /// first if the active segment is full or older than segment.ms, writes the batch (page
    /// cache, no fsync), its causal entry and index entries.
    /// `meta` is the causal stamp the replica gave the batch; the caller holds the replica
    /// across stamping and appending, so stamps reach the log in order.
    pub fn append(
        &self,
        batch: &[u8],
        now_ms: i64,
        meta: &CausalMeta,
    ) -> Result<AppendResult, StorageError> {
        let header = BatchHeader::parse(batch)?;
        if header.is_control() {
            return Err(BatchError::Corrupt(
                "control batches are written only by the transaction coordinator".into(),
            )
            .into());
        }
        compaction::refuse_cleaned(&header)?;
        self.append_batch(batch, Source::Local(None), now_ms, meta)
    }

    /// Appends ONE batch that another region produced, with the causal metadata its origin
    /// stamped (never re-stamped, so every region stores the same metadata). Unlike `append`,
    /// control batches are accepted (transaction markers replicate like any batch), producer
    /// sequences are recorded but not checked (the origin checked them, and per-origin order is
    /// kept by the delivery rule), LogAppendTime is not re-stamped (the origin's stamp is part
    /// of the replicated data), and `max.message.bytes` does not apply (the origin judged the
    /// batch under its own limit; every region must be able to hold what any region accepted).
    pub fn append_replicated(
        &self,
        batch: &[u8],
        meta: &CausalMeta,
        now_ms: i64,
    ) -> Result<AppendResult, StorageError> {
        let header = BatchHeader::parse(batch)?;
        let control = if header.is_control() {
            Some(control_type(&header, batch).ok_or_else(|| {
                BatchError::Corrupt("control batch without a commit or abort marker".into())
            })?)
        } else {
            None
        };
        self.append_batch(batch, Source::Replicated(control), now_ms, meta)
    }

    /// The offset below which every batch is fsynced (what a power loss leaves of the active
    /// segment; closed segments are fsynced when they close).
    pub fn synced_offset(&self) -> i64 {
        *self.lock_synced()
    }

    /// Whether some appended bytes are not fsynced yet.
    pub fn has_unsynced(&self) -> bool {
        *self.lock_synced() < self.log_end_offset()
    }

    /// Appends a transaction marker for `producer_id` at `epoch`, ending its open transaction in
    /// this partition (a marker for a producer with none open is harmless).
    pub fn append_control(
        &self,
        kind: ControlType,
        producer_id: i64,
        epoch: i16,
        now_ms: i64,
        meta: &CausalMeta,
    ) -> Result<AppendResult, StorageError> {
        let batch = control_batch(kind, producer_id, epoch, 0, now_ms);
        self.append_batch(&batch, Source::Local(Some(kind)), now_ms, meta)
    }

    /// The causal metadata of every batch whose base offset lies in `[from, to)`, by base offset
    /// (what tables stamp their writes with).
    pub fn causal_entries(
        &self,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, CausalMeta)>, StorageError> {
        let st = self.read_state();
        let mut out = Vec::new();
        for segment in st
            .segments
            .iter()
            .filter(|s| s.end_offset() > from && s.base() < to)
        {
            out.extend(segment.causal_entries(from, to)?);
        }
        Ok(out)
    }

    /// The last stable offset: below it every transaction is decided.
    pub fn last_stable_offset(&self) -> i64 {
        let st = self.read_state();
        st.producers
            .first_unstable_offset()
            .unwrap_or_else(|| st.log_end())
    }

    /// The transactions open in this partition: each holds the last stable offset back until
    /// its marker arrives.
    pub fn open_transactions(&self) -> Vec<OpenTransaction> {
        self.read_state().producers.open_transactions().collect()
    }

    /// Every producer whose state this partition keeps, by producer id.
    pub fn active_producers(&self) -> Vec<ActiveProducer> {
        self.read_state().producers.active_producers()
    }

    /// The epoch of `producer_id` as last seen in this partition: a marker from another region
    /// may have raised it above what the producer's coordinator knows.
    pub fn producer_epoch(&self, producer_id: i64) -> Option<i16> {
        self.read_state().producers.epoch_of(producer_id)
    }

    /// Aborted transactions whose records may lie in `[from, to)` (for read_committed fetches).
    pub fn aborted_transactions(&self, from: i64, to: i64) -> Vec<AbortedTransaction> {
        self.read_state().producers.aborted_between(from, to)
    }

    fn append_batch(
        &self,
        batch: &[u8],
        source: Source,
        now_ms: i64,
        meta: &CausalMeta,
    ) -> Result<AppendResult, StorageError> {
        self.check_poisoned()?;
        let header = BatchHeader::parse(batch)?;
        if header.total_bytes() != batch.len() || header.last_offset_delta < 0 {
            return Err(BatchError::Corrupt(format!(
                "batch length field says {} bytes, buffer has {}",
                header.total_bytes(),
                batch.len()
            ))
            .into());
        }
        let mut st = self.write_state();
        let (control, replicated) = match source {
            Source::Local(control) => (control, false),
            Source::Replicated(control) => (control, true),
        };
        // max.message.bytes limits what clients produce here. A replicated batch was accepted
        // at its origin, whose limit may be larger (another --message-max-bytes); refusing it
        // here would stop this partition's replication for good.
        let max = st.config.max_message_bytes as usize;
        if !replicated && batch.len() > max {
            return Err(BatchError::TooLarge {
                size: batch.len(),
                max,
            }
            .into());
        }
        let check = if replicated {
            SequenceCheck::Append
        } else {
            st.producers.check(&header)?
        };
        if let SequenceCheck::Duplicate {
            base_offset,
            last_offset,
        } = check
        {
            return Ok(AppendResult {
                base_offset,
                last_offset,
                log_append_time_ms: -1,
                log_start_offset: st.log_start,
                duplicate: true,
            });
        }
        let base_offset = st.log_end();
        let active = st.active();
        let len = batch.len() as u64;
        let too_big = active.size() + len > st.config.segment_bytes
            || active.size() + len > u64::from(u32::MAX);
        let too_old = active
            .roll_clock_ms()
            .is_some_and(|t| now_ms.saturating_sub(t) >= st.config.roll_ms());
        let offsets_overflow =
            base_offset + i64::from(header.last_offset_delta) - active.base() > i64::from(u32::MAX);
        if active.size() > 0 && (too_big || too_old || offsets_overflow) {
            self.roll(&mut st)?;
        }
        // The log's fields go into a copy of the header; the bytes after it are written as
        // received, never copied (a copy per appended byte was a tenth of ingest's CPU).
        let (received_head, records) = batch.split_at(BATCH_HEADER_BYTES);
        let mut head = [0u8; BATCH_HEADER_BYTES];
        head.copy_from_slice(received_head);
        assign_offsets(&mut head, base_offset, self.epochs.current());
        let mut log_append_time_ms = -1;
        if !replicated && st.config.timestamp_type == TimestampType::LogAppendTime {
            stamp_log_append_time(&mut head, records, now_ms);
            log_append_time_ms = now_ms;
        }
        let header = BatchHeader::parse(&head)?;
        let interval = st.config.index_interval_bytes;
        if let Err(failure) =
            st.active_mut()
                .append([&head, records], &header, meta, interval, now_ms)
        {
            if !failure.consistent {
                tracing::error!(dir = %self.dir.display(), error = %failure.error, "append left a partial batch; poisoning partition");
                self.poisoned.store(true, Ordering::Release);
            }
            return Err(failure.error);
        }
        let producers_max = st.config.producers_max;
        st.producers
            .record(&header, control, Some(meta), now_ms, producers_max);
        Ok(AppendResult {
            base_offset,
            last_offset: header.last_offset(),
            log_append_time_ms,
            log_start_offset: st.log_start,
            duplicate: false,
        })
    }

    /// Closes the active segment and starts the next, fsyncing the closed one first: open trusts
    /// every segment but the last after an unclean stop, so a closed segment must never hold
    /// bytes a power loss could take (a lost tail there would leave a hole inside the log,
    /// behind a vector clock that claims the batches in it). The fsync runs under the log lock,
    /// but the background fsync keeps what is unsynced at a roll to a few milliseconds of writes.
    fn roll(&self, st: &mut LogState) -> Result<(), StorageError> {
        st.active_mut().close_time_index()?;
        if let Some(job) = st.active().sync_job() {
            if let Err(error) = job.fsync() {
                tracing::error!(dir = %self.dir.display(), error = %error, "fsync of a segment being closed failed; poisoning partition");
                self.poisoned.store(true, Ordering::Release);
                return Err(error);
            }
            job.mark_synced();
        }
        st.start_segment(&self.dir)?;
        self.dir_dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// How many closed segments (all but the active one) hold writes no fsync covered yet.
    #[cfg(test)]
    pub(crate) fn unsynced_closed_segments(&self) -> usize {
        let st = self.read_state();
        let closed = st.segments.len().saturating_sub(1);
        st.segments[..closed]
            .iter()
            .filter(|segment| segment.sync_job().is_some())
            .count()
    }

    /// One fsync round: fsyncs every segment with unsynced writes (outside the log lock, on
    /// cloned handles) and advances `synced` to the log end noted before the round.
    fn sync_round(&self, synced: &mut i64) -> Result<(), StorageError> {
        self.check_poisoned()?;
        let (target, jobs): (i64, Vec<SyncJob>) = {
            let st = self.read_state();
            (
                st.log_end(),
                st.segments.iter().filter_map(Segment::sync_job).collect(),
            )
        };
        let started = Instant::now();
        let mut result = jobs.iter().try_for_each(SyncJob::fsync);
        if result.is_ok() && self.dir_dirty.swap(false, Ordering::AcqRel) {
            result = checkpoint::sync_dir(&self.dir);
        }
        if let Err(e) = result {
            tracing::error!(dir = %self.dir.display(), error = %e, "fsync failed; poisoning partition");
            self.poisoned.store(true, Ordering::Release);
            return Err(e);
        }
        telemetry::fsync_round(started.elapsed().as_secs_f64());
        jobs.iter().for_each(SyncJob::mark_synced);
        *synced = (*synced).max(target);
        Ok(())
    }

    /// Group commit: returns once every byte below `end_offset` is fsynced. Callers waiting at
    /// the same time share one fsync round.
    pub fn sync_through(&self, end_offset: i64) -> Result<(), StorageError> {
        self.check_poisoned()?;
        let mut synced = self.lock_synced();
        if *synced >= end_offset {
            return self.check_poisoned();
        }
        self.sync_round(&mut synced)
    }

    /// fsyncs everything written so far.
    pub fn sync(&self) -> Result<(), StorageError> {
        let mut synced = self.lock_synced();
        self.sync_round(&mut synced)
    }

    /// Whole batches starting with the batch that contains `offset` (or, inside a gap left by
    /// compaction, the next batch), up to `max_bytes` but always at least one batch when a batch
    /// follows `offset`; may stop at a segment end.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadResult, StorageError> {
        let st = self.read_state();
        let floor = st.log_start;
        Self::read_above(st, floor, offset, max_bytes)
    }

    /// Like [`Partition::read`], but from anything still on disk, also below a log start that
    /// DeleteRecords moved: replication serves peers what this region still holds, so a peer
    /// that had not received those batches yet still gets them (see
    /// [`Partition::delete_records_before`]).
    pub fn read_retained(&self, offset: i64, max_bytes: usize) -> Result<ReadResult, StorageError> {
        let st = self.read_state();
        let floor = st.retained_start();
        Self::read_above(st, floor, offset, max_bytes)
    }

    /// Locates the read under the log lock and copies it after the lock is released, so a large
    /// read never keeps appends waiting.
    fn read_above(
        st: RwLockReadGuard<'_, LogState>,
        floor: i64,
        offset: i64,
        max_bytes: usize,
    ) -> Result<ReadResult, StorageError> {
        let log_end = st.log_end();
        if offset < floor || offset > log_end {
            return Err(st.out_of_range(offset));
        }
        let planned = if offset == log_end {
            Vec::new()
        } else {
            let i = st
                .segments
                .partition_point(|s| s.base() <= offset)
                .saturating_sub(1);
            compaction::plan_across_segments(&st.segments[i..], offset, max_bytes)?
        };
        let log_start_offset = st.log_start;
        drop(st);
        Ok(ReadResult {
            records: run_planned(planned)?,
            high_watermark: log_end,
            log_start_offset,
        })
    }

    /// The first readable offset (ListOffsets EARLIEST).
    pub fn log_start_offset(&self) -> i64 {
        self.read_state().log_start
    }

    /// The first offset still on disk: the log start, or lower while segments below a
    /// DeleteRecords start wait for the causally stable offset (see
    /// [`Partition::delete_records_before`]).
    pub fn retained_start_offset(&self) -> i64 {
        self.read_state().retained_start()
    }

    /// Whether `offset` lies in the active segment, whose pages were written moments ago and
    /// are read from the page cache without waiting on the disk.
    pub fn in_active_segment(&self, offset: i64) -> bool {
        offset >= self.read_state().active().base()
    }

    /// The next offset to be assigned (= high watermark in one region).
    pub fn log_end_offset(&self) -> i64 {
        self.read_state().log_end()
    }

    /// Total bytes of the segment `.log` files (for retention.bytes and DescribeLogDirs).
    pub fn size_bytes(&self) -> u64 {
        self.read_state().segments.iter().map(Segment::size).sum()
    }

    /// Number of segments, active one included.
    pub fn segment_count(&self) -> usize {
        self.read_state().segments.len()
    }

    /// The first batch (at or after log start) whose maxTimestamp >= `timestamp_ms`, found
    /// through the time index; the broker decodes records inside it for the exact offset.
    pub fn batch_at_timestamp(&self, timestamp_ms: i64) -> Result<Option<Bytes>, StorageError> {
        let st = self.read_state();
        for segment in &st.segments {
            if segment.end_offset() <= st.log_start
                || segment.max_timestamp().is_none_or(|t| t < timestamp_ms)
            {
                continue;
            }
            if let Some(batch) = segment.first_batch_at_or_after(timestamp_ms, st.log_start)? {
                return Ok(Some(batch));
            }
        }
        Ok(None)
    }

    /// The batch holding the largest maxTimestamp (earliest on ties), for ListOffsets MAX_TIMESTAMP.
    pub fn max_timestamp_batch(&self) -> Result<Option<Bytes>, StorageError> {
        let st = self.read_state();
        let mut best: Option<(&Segment, i64)> = None;
        for segment in &st.segments {
            if segment.end_offset() <= st.log_start {
                continue;
            }
            if let Some(t) = segment.max_timestamp() {
                if best.is_none_or(|(_, b)| t > b) {
                    best = Some((segment, t));
                }
            }
        }
        match best.and_then(|(s, _)| s.max_timestamp_offset().map(|o| (s, o))) {
            Some((segment, offset)) => segment.batch_containing(offset),
            None => Ok(None),
        }
    }

    /// Kafka DeleteRecords: the log start becomes `offset` (checkpointed, so it survives a
    /// restart); clients can no longer read below it. Returns the new log start.
    ///
    /// The segments wholly below it are deleted by the next [`Partition::maintain`], like
    /// Kafka's, and like retention never above the causally stable offset: until every region
    /// holds those batches, replication still serves them ([`Partition::read_retained`]), so a
    /// peer that had not pulled them yet is not left waiting forever for a dependency.
    pub fn delete_records_before(&self, offset: i64) -> Result<i64, StorageError> {
        let mut st = self.write_state();
        if offset < 0 || offset > st.log_end() {
            return Err(st.out_of_range(offset));
        }
        if offset <= st.log_start {
            return Ok(st.log_start);
        }
        checkpoint::write(&self.dir, LOG_START_FILE, &[offset])?;
        st.log_start = offset;
        Ok(offset)
    }

    /// Background housekeeping: rolls the active segment if segment.ms elapsed, then deletes old
    /// whole segments by retention.ms / retention.bytes or below a DeleteRecords log start,
    /// never one holding offsets >= `stable_offset`, and advances the log start past them.
    pub fn maintain(
        &self,
        now_ms: i64,
        stable_offset: i64,
    ) -> Result<MaintenanceReport, StorageError> {
        let mut st = self.write_state();
        let mut report = MaintenanceReport::default();
        let active = st.active();
        let expired = active
            .roll_clock_ms()
            .is_some_and(|t| now_ms.saturating_sub(t) >= st.config.roll_ms());
        if active.size() > 0 && expired {
            self.roll(&mut st)?;
            report.rolled = true;
        }
        let log_start = st.log_start;
        st.producers.forget_aborted_below(log_start);
        let expired_producers = st.producers.expire(now_ms, PRODUCER_IDLE_MS_MAX);
        if expired_producers > 0 {
            tracing::info!(dir = %self.dir.display(), producers = expired_producers, "expired idle producer ids");
        }
        let closed: Vec<SegmentFacts> = st.segments[..st.segments.len() - 1]
            .iter()
            .map(|s| SegmentFacts {
                end_offset: s.end_offset(),
                size: s.size(),
                max_timestamp: s.max_timestamp(),
            })
            .collect();
        let total: u64 = st.segments.iter().map(Segment::size).sum();
        let count = deletable_prefix(
            &closed,
            total,
            &st.config,
            now_ms,
            stable_offset,
            st.log_start,
        );
        if count > 0 {
            report.bytes_deleted = st.delete_leading(count, &self.dir)?;
            report.segments_deleted = count;
            let first_base = st.segments[0].base();
            if first_base > st.log_start {
                st.log_start = first_base;
                checkpoint::write(&self.dir, LOG_START_FILE, &[first_base])?;
            }
        }
        Ok(report)
    }

    /// Replaces the topic config (AlterConfigs); takes effect on the next append/maintain.
    pub fn set_config(&self, config: LogConfig) {
        self.write_state().config = config;
    }

    /// The causal metadata of the last batch (what the vector clock is rebuilt from).
    pub fn last_causal(&self) -> Option<CausalMeta> {
        self.read_state().last_causal().cloned()
    }

    /// Clean shutdown: fsyncs everything and writes the clean-shutdown checkpoint so the next
    /// open skips the recovery scan.
    pub fn close(&self) -> Result<(), StorageError> {
        let mut synced = self.lock_synced();
        let (end, base, size) = {
            let mut st = self.write_state();
            st.active_mut().close_time_index()?;
            st.snapshot_producers(&self.dir)?;
            (st.log_end(), st.active().base(), st.active().size())
        };
        self.sync_round(&mut synced)?;
        checkpoint::write(&self.dir, CLEAN_SHUTDOWN_FILE, &[end, base, size as i64])
    }

    /// The leader epoch this log's appends carry (one per opening; see `partition/epochs.rs`).
    pub fn leader_epoch(&self) -> i32 {
        self.epochs.current()
    }

    /// The leader epoch the batch holding `offset` was appended in.
    pub fn leader_epoch_at(&self, offset: i64) -> i32 {
        self.epochs.at(offset)
    }

    /// Where `epoch` ended in this log, and the epoch that answers for it (OffsetForLeaderEpoch;
    /// `(-1, -1)` for an epoch this log cannot place).
    pub fn leader_epoch_end(&self, epoch: i32) -> (i32, i64) {
        self.epochs.end_of(epoch, self.log_end_offset())
    }

    /// True if the last open found a clean-shutdown checkpoint (no recovery scan was needed).
    pub fn opened_cleanly(&self) -> bool {
        self.opened_cleanly
    }
}

/// Copies planned reads (taken under the log lock) into one run of whole batches.
fn run_planned(planned: Vec<PlannedRead>) -> Result<Bytes, StorageError> {
    let mut parts = planned.into_iter().map(PlannedRead::run);
    let Some(first) = parts.next().transpose()? else {
        return Ok(Bytes::new());
    };
    let mut rest = parts.peekable();
    if rest.peek().is_none() {
        return Ok(first);
    }
    let mut joined = BytesMut::from(first.as_ref());
    for part in rest {
        joined.extend_from_slice(&part?);
    }
    Ok(joined.freeze())
}

/// Removes a partition's directory and everything in it (topic deletion).
pub fn remove_partition_dir(dir: &Path) -> Result<(), StorageError> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::io(format!("removing {}", dir.display()), e)),
    }
}
