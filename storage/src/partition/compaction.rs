//! Log compaction mechanics: choosing the closed segments a cleaner may rewrite, reading them
//! outside the log lock, writing their replacements and swapping them in crash-safely. Which
//! records survive is the caller's decision (tables decide by key in the broker); this module
//! only guarantees that offsets, indexes, causal entries and recovery stay right.
//!
//! ## Rules
//! - Only closed segments lying entirely below both the causally stable offset given by the
//!   caller and the last stable offset (no open transaction) are offered, starting from the
//!   first segment; the active segment never is. When the active segment is empty the last
//!   closed one is held back too, so the log never ends in a gap that a consumer could not
//!   fetch past.
//! - A rewritten segment keeps its base offset and its end offset (the next segment's base);
//!   its batches keep their offsets, so it has gaps. Reads inside a gap return the next batch.
//! - Its `.causal` file keeps the input's carry entry (see `causal.rs`) and has one entry per
//!   output batch, in order.
//!
//! ## Crash-safe swap, per segment
//! 1. `<base>.log.tmp` and `<base>.causal.tmp` are written and fsynced (a crash here leaves
//!    `.tmp` files, which open removes).
//! 2. `<base>.causal.tmp` is renamed to `<base>.causal.swap`, then `<base>.log.tmp` to
//!    `<base>.log.swap`, and the directory is fsynced. The rename of the log is the commit
//!    point: with `<base>.log.swap` present the new segment wins, without it the old one does.
//! 3. The old `.index` / `.timeindex` are removed, `<base>.causal.swap` is renamed over
//!    `<base>.causal`, then `<base>.log.swap` over `<base>.log`, and the directory is fsynced;
//!    the indexes are rebuilt from the new log.
//!
//! `finish_swaps` (run by `Partition::open` before anything else) replays step 3 for every
//! `<base>.log.swap` and deletes a `<base>.causal.swap` left without one, so a `kill -9` at
//! any point leaves either the old or the new segment, never a mix. A pass swaps its segments
//! newest first: a key's merged record lives in the newest segment holding the key, so while
//! older segments still hold the key's original records nothing is lost (merging the same
//! writes twice changes nothing).
//!
//! ## Origin high water
//! Before the first swap of a pass, the per-origin maximum of every causal entry of the
//! segments about to be rewritten is joined into `origin-high-water.checkpoint` (`high_water.rs`),
//! so `origin_high_water` never goes down when compaction drops batches.
//!
//! ## `cleaner-offset.checkpoint` (version 0)
//! Text: `0\n<cleaned_through>\n<tombstones_due_ms or -1>\n<gaps_below>\n`: every segment ending
//! at or below `cleaned_through` has been through a pass, and a later pass may drop a kept
//! tombstone from `tombstones_due_ms` on; batches may be missing from the log (merged away by a
//! pass, or by the pass of the region a seed copied from) only below `gaps_below` (absent in
//! files written before it existed: `cleaned_through`). A pass raises `gaps_below` before its
//! first swap, so a crash between the swaps and the final write leaves it at or above the
//! truth; `Partition::mark_gaps_below` raises it for a seed's copy. Written again after a
//! pass's swaps.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use super::{high_water, LogState, Partition};
use crate::batch::{BatchError, BatchHeader, BATCH_HEADER_BYTES};
use crate::causal::{self, CausalMeta};
use crate::checkpoint;
use crate::error::{IoContext, StorageError};
use crate::segment::{file_name, remove_if_exists, PlannedRead, Segment};

/// How far the cleaner got, when a kept tombstone may go, and below which batches may be missing.
const CLEANER_FILE: &str = "cleaner-offset.checkpoint";

/// The contents of [`CLEANER_FILE`] (format in the module docs).
struct CleanerCheckpoint {
    cleaned_through: i64,
    tombstones_due_ms: Option<i64>,
    gaps_below: i64,
}

impl CleanerCheckpoint {
    fn read(dir: &Path) -> Result<CleanerCheckpoint, StorageError> {
        let saved = checkpoint::read(dir, CLEANER_FILE)?.unwrap_or_default();
        let cleaned_through = saved.first().copied().unwrap_or(-1);
        Ok(CleanerCheckpoint {
            cleaned_through,
            tombstones_due_ms: saved.get(1).copied().filter(|&t| t >= 0),
            gaps_below: saved.get(2).copied().unwrap_or(-1).max(cleaned_through),
        })
    }

    fn write(&self, dir: &Path) -> Result<(), StorageError> {
        checkpoint::write(
            dir,
            CLEANER_FILE,
            &[
                self.cleaned_through,
                self.tombstones_due_ms.unwrap_or(-1),
                self.gaps_below,
            ],
        )
    }
}

/// Refuses a produced batch that claims to come from the cleaner, so a client cannot forge
/// merged table rows (only batches the cleaner wrote may carry them).
pub(super) fn refuse_cleaned(header: &BatchHeader) -> Result<(), StorageError> {
    if header.is_cleaned() {
        return Err(BatchError::Corrupt(
            "attribute bit 7 is reserved for batches written by the log cleaner".into(),
        )
        .into());
    }
    Ok(())
}

/// Plans a read from the first of `segments` (the one whose range holds `offset`), moving on to the
/// next while a segment has nothing at or after `offset` (its tail was compacted away), then on
/// across segment boundaries while the budget lasts, so one Fetch is not cut short at the end
/// of a segment. The first batch is read whatever its size (as Kafka does, so a consumer always
/// progresses); batches from later segments only when they fit in what is left of `max_bytes`.
pub(super) fn plan_across_segments(
    segments: &[Segment],
    offset: i64,
    max_bytes: usize,
) -> Result<Vec<PlannedRead>, StorageError> {
    let mut plans: Vec<PlannedRead> = Vec::new();
    let mut budget = max_bytes;
    for segment in segments {
        let planned = match plans.last() {
            None => segment.plan_read(offset, max_bytes)?,
            Some(previous) if previous.reaches_end() && budget > 0 => {
                segment.plan_from_start(budget)?
            }
            Some(_) => break,
        };
        match planned {
            Some(planned) => {
                budget = budget.saturating_sub(planned.len());
                plans.push(planned);
            }
            // Nothing at or after `offset` here yet: the next segment holds the read's start.
            None if plans.is_empty() => continue,
            None => break,
        }
    }
    Ok(plans)
}

/// A closed segment offered to the cleaner, readable without the log lock.
pub struct SegmentSnapshot {
    /// Base offset (kept by the rewrite).
    pub base: i64,
    /// Offset after the segment (the next segment's base; kept by the rewrite).
    pub end_offset: i64,
    /// Bytes of its `.log`.
    pub size: u64,
    /// Whether an earlier pass already rewrote it.
    pub cleaned: bool,
    /// When its first record was appended (or, after a restart, its first batch's timestamp):
    /// what `max.compaction.lag.ms` counts from.
    first_record_ms: Option<i64>,
    log: Arc<File>,
    causal: Arc<File>,
    causal_size: u64,
}

/// One stored batch with its causal metadata, as the cleaner reads it.
pub struct StoredBatch {
    /// Its header.
    pub header: BatchHeader,
    /// The whole batch, as stored.
    pub bytes: Bytes,
    /// Its causal entry.
    pub meta: CausalMeta,
}

impl SegmentSnapshot {
    /// Every entry of the `.causal` file, the carry entry included.
    fn causal_entries(&self) -> Result<Vec<causal::CausalEntry>, StorageError> {
        let what = || format!("reading causal index of segment {}", self.base);
        causal::read_entries(&self.causal, self.causal_size, &what)
    }

    /// Calls `f` with every batch of the segment in order, with its causal metadata; a batch
    /// without a causal entry is corruption.
    pub fn for_each_batch(
        &self,
        mut f: impl FnMut(StoredBatch) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let metas: BTreeMap<i64, CausalMeta> = self
            .causal_entries()?
            .into_iter()
            .filter(|e| e.base_offset >= self.base)
            .map(|e| (e.base_offset, e.meta))
            .collect();
        let mut pos = 0u64;
        while pos + BATCH_HEADER_BYTES as u64 <= self.size {
            let mut head = [0u8; BATCH_HEADER_BYTES];
            self.log
                .read_exact_at(&mut head, pos)
                .ctx(|| format!("reading segment {} at {pos}", self.base))?;
            let header = BatchHeader::parse(&head)?;
            let total = header.total_bytes() as u64;
            if total < BATCH_HEADER_BYTES as u64 || pos + total > self.size {
                return Err(StorageError::Corrupt(format!(
                    "batch at {pos} in segment {} has bad length {}",
                    self.base, header.batch_length
                )));
            }
            let mut bytes = vec![0u8; total as usize];
            self.log
                .read_exact_at(&mut bytes, pos)
                .ctx(|| format!("reading segment {} at {pos}", self.base))?;
            let meta = metas.get(&header.base_offset).cloned().ok_or_else(|| {
                StorageError::Corrupt(format!(
                    "segment {}: no causal entry for the batch at offset {}",
                    self.base, header.base_offset
                ))
            })?;
            f(StoredBatch {
                header,
                bytes: Bytes::from(bytes),
                meta,
            })?;
            pos += total;
        }
        Ok(())
    }
}

/// What the cleaner may do in one partition now (see the module docs for the rules).
pub struct CompactionPlan {
    /// The closed segments it may rewrite, oldest first, from the first segment of the log.
    pub segments: Vec<SegmentSnapshot>,
    /// The log start: records below it are invisible and must not survive.
    pub log_start: i64,
    /// Every segment ending at or below this offset was already cleaned.
    pub cleaned_through: i64,
    /// Batches may be missing from the log (merged away) only below this offset: a pass that
    /// merges less than that does not see every gap.
    pub gaps_below: i64,
    /// When a tombstone kept by the last pass may be dropped, if one was kept.
    pub tombstones_due_ms: Option<i64>,
    /// The topic's `delete.retention.ms`.
    pub delete_retention_ms: i64,
    /// The topic's `min.cleanable.dirty.ratio`.
    min_cleanable_dirty_ratio: f64,
    /// The topic's `max.compaction.lag.ms`.
    max_compaction_lag_ms: i64,
}

impl CompactionPlan {
    /// Whether a pass is worth its I/O, as Kafka's cleaner judges it: a tombstone has come of
    /// age, or segments not cleaned yet are more than `min.cleanable.dirty.ratio` of the plan's
    /// bytes, or one of them holds a record older than `max.compaction.lag.ms`.
    pub fn is_due(&self, now_ms: i64) -> bool {
        if self.segments.is_empty() {
            return false;
        }
        if self.tombstones_due_ms.is_some_and(|t| t <= now_ms) {
            return true;
        }
        let dirty = || self.segments.iter().filter(|s| !s.cleaned);
        if dirty().next().is_none() {
            return false;
        }
        let lagging = dirty().any(|s| {
            s.first_record_ms
                .is_some_and(|first| now_ms.saturating_sub(first) >= self.max_compaction_lag_ms)
        });
        lagging || self.dirty_ratio() > self.min_cleanable_dirty_ratio
    }

    /// The share of the plan's bytes no pass has cleaned yet (Kafka's cleanable ratio); 1 for
    /// a plan without bytes (segments emptied by DeleteRecords: nothing clean to weigh).
    fn dirty_ratio(&self) -> f64 {
        let total: u64 = self.segments.iter().map(|s| s.size).sum();
        let dirty: u64 = self
            .segments
            .iter()
            .filter(|s| !s.cleaned)
            .map(|s| s.size)
            .sum();
        if total == 0 {
            return 1.0;
        }
        dirty as f64 / total as f64
    }
}

/// Writes a segment's replacement to temp files; finish with `finish`.
pub struct SegmentWriter {
    dir: PathBuf,
    base: i64,
    end_offset: i64,
    old_size: u64,
    log: File,
    causal: File,
    size: u64,
    causal_size: u64,
    next_offset: i64,
    high_water: BTreeMap<u32, u64>,
}

/// A replacement segment on disk as temp files, fsynced, ready for `Partition::swap_segments`.
pub struct StagedSegment {
    dir: PathBuf,
    /// Base offset of the segment it replaces.
    pub base: i64,
    /// End offset of the segment it replaces.
    pub end_offset: i64,
    /// Bytes of the replaced `.log`.
    pub old_size: u64,
    /// Bytes of the new `.log`.
    pub new_size: u64,
    high_water: BTreeMap<u32, u64>,
}

/// What a swap did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SwapReport {
    /// Segments replaced.
    pub swapped: usize,
    /// `.log` bytes before minus after, over all replaced segments (0 if they grew: a pass
    /// may move many keys' merged rows into one segment).
    pub bytes_reclaimed: u64,
}

fn tmp_path(dir: &Path, base: i64, ext: &str) -> PathBuf {
    dir.join(format!("{}.tmp", file_name(base, ext)))
}

fn swap_path(dir: &Path, base: i64, ext: &str) -> PathBuf {
    dir.join(format!("{}.swap", file_name(base, ext)))
}

fn create_truncated(path: &Path) -> Result<File, StorageError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .ctx(|| format!("creating {}", path.display()))
}

fn rename(from: &Path, to: &Path) -> Result<(), StorageError> {
    fs::rename(from, to).ctx(|| format!("renaming {} to {}", from.display(), to.display()))
}

impl SegmentWriter {
    /// Appends one batch whose offsets lie in the replaced segment's range, after the previous
    /// batch's, with the causal metadata readers will stamp it with.
    pub fn append(&mut self, batch: &[u8], meta: &CausalMeta) -> Result<(), StorageError> {
        let header = BatchHeader::parse(batch)?;
        if header.total_bytes() != batch.len() || header.last_offset_delta < 0 {
            return Err(BatchError::Corrupt(format!(
                "rewritten batch length field says {} bytes, buffer has {}",
                header.total_bytes(),
                batch.len()
            ))
            .into());
        }
        if header.base_offset < self.next_offset || header.last_offset() >= self.end_offset {
            return Err(StorageError::Corrupt(format!(
                "rewritten batch at {}..={} outside [{}, {}) of segment {}",
                header.base_offset,
                header.last_offset(),
                self.next_offset,
                self.end_offset,
                self.base
            )));
        }
        if self.size + batch.len() as u64 > u64::from(u32::MAX) {
            return Err(StorageError::Corrupt(format!(
                "rewritten segment {} would pass 4 GiB",
                self.base
            )));
        }
        let entry = causal::encode_entry(header.base_offset, meta);
        self.log
            .write_all_at(batch, self.size)
            .ctx(|| format!("writing rewritten segment {}", self.base))?;
        self.causal
            .write_all_at(&entry, self.causal_size)
            .ctx(|| format!("writing rewritten causal index {}", self.base))?;
        self.size += batch.len() as u64;
        self.causal_size += entry.len() as u64;
        self.next_offset = header.last_offset() + 1;
        Ok(())
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// fsyncs the temp files; the result can be swapped in.
    pub fn finish(self) -> Result<StagedSegment, StorageError> {
        self.log
            .sync_all()
            .ctx(|| format!("fsyncing rewritten segment {}", self.base))?;
        self.causal
            .sync_all()
            .ctx(|| format!("fsyncing rewritten causal index {}", self.base))?;
        Ok(StagedSegment {
            dir: self.dir,
            base: self.base,
            end_offset: self.end_offset,
            old_size: self.old_size,
            new_size: self.size,
            high_water: self.high_water,
        })
    }
}

impl StagedSegment {
    /// Deletes the temp files of a replacement that will not be swapped in.
    pub fn discard(self) -> Result<(), StorageError> {
        remove_if_exists(&tmp_path(&self.dir, self.base, "log"))?;
        remove_if_exists(&tmp_path(&self.dir, self.base, "causal"))
    }

    /// Steps 2 and 3 of the swap (module docs).
    fn swap_files(&self) -> Result<(), StorageError> {
        let (dir, base) = (&self.dir, self.base);
        rename(
            &tmp_path(dir, base, "causal"),
            &swap_path(dir, base, "causal"),
        )?;
        rename(&tmp_path(dir, base, "log"), &swap_path(dir, base, "log"))?;
        checkpoint::sync_dir(dir)?;
        complete_swap(dir, base)
    }
}

/// Step 3 of the swap for a segment whose `.log.swap` exists (module docs).
fn complete_swap(dir: &Path, base: i64) -> Result<(), StorageError> {
    for ext in ["index", "timeindex"] {
        remove_if_exists(&dir.join(file_name(base, ext)))?;
    }
    let causal_swap = swap_path(dir, base, "causal");
    if causal_swap.exists() {
        rename(&causal_swap, &dir.join(file_name(base, "causal")))?;
    }
    rename(
        &swap_path(dir, base, "log"),
        &dir.join(file_name(base, "log")),
    )?;
    checkpoint::sync_dir(dir)
}

/// Completes the swaps a crash interrupted after their commit point and removes the halves of
/// swaps interrupted before it (module docs). Runs before the segments are listed.
pub(super) fn finish_swaps(dir: &Path) -> Result<(), StorageError> {
    let mut committed = Vec::new();
    let mut orphans = Vec::new();
    for entry in fs::read_dir(dir).ctx(|| format!("listing {}", dir.display()))? {
        let entry = entry.ctx(|| format!("listing {}", dir.display()))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(".swap") else {
            continue;
        };
        let Some((base, ext)) = stem.split_once('.') else {
            continue;
        };
        let Ok(base) = base.parse::<i64>() else {
            continue;
        };
        match ext {
            "log" => committed.push(base),
            _ => orphans.push((base, entry.path())),
        }
    }
    for &base in &committed {
        tracing::info!(dir = %dir.display(), base_offset = base, "completing a compaction swap interrupted by a crash");
        complete_swap(dir, base)?;
    }
    for (base, path) in orphans {
        if !committed.contains(&base) {
            tracing::info!(file = %path.display(), "removing half of a compaction swap interrupted by a crash");
            remove_if_exists(&path)?;
        }
    }
    Ok(())
}

impl LogState {
    fn snapshot(
        &self,
        segment: &Segment,
        cleaned_through: i64,
    ) -> Result<SegmentSnapshot, StorageError> {
        let (log, size, causal, causal_size) = segment.read_handles()?;
        Ok(SegmentSnapshot {
            base: segment.base(),
            end_offset: segment.end_offset(),
            size,
            cleaned: segment.end_offset() <= cleaned_through,
            first_record_ms: segment.roll_clock_ms(),
            log,
            causal,
            causal_size,
        })
    }
}

/// Whether a closed segment's newest record is at least `min.compaction.lag.ms` old (a segment
/// without a timestamp counts as old: nothing in it can be dated).
fn old_enough(segment: &Segment, config: &crate::config::LogConfig, now_ms: i64) -> bool {
    config.min_compaction_lag_ms <= 0
        || segment
            .max_timestamp()
            .is_none_or(|newest| newest <= now_ms.saturating_sub(config.min_compaction_lag_ms))
}

impl Partition {
    /// The closed segments the cleaner may rewrite now, below `stable_offset` (the causally
    /// stable cut) and the last stable offset, up to the first whose newest record is younger
    /// than `min.compaction.lag.ms` at `now_ms`; empty unless the topic's cleanup.policy holds
    /// `compact`.
    pub fn compaction_plan(
        &self,
        stable_offset: i64,
        now_ms: i64,
    ) -> Result<CompactionPlan, StorageError> {
        let saved = CleanerCheckpoint::read(&self.dir)?;
        let (cleaned_through, tombstones_due_ms) = (saved.cleaned_through, saved.tombstones_due_ms);
        let st = self.read_state();
        let lso = st
            .producers
            .first_unstable_offset()
            .unwrap_or_else(|| st.log_end());
        let limit = stable_offset.min(lso);
        let mut closed = &st.segments[..st.segments.len() - 1];
        if st.active().size() == 0 {
            closed = &closed[..closed.len().saturating_sub(1)];
        }
        let segments = if st.config.cleanup_compact {
            closed
                .iter()
                .take_while(|s| s.end_offset() <= limit && old_enough(s, &st.config, now_ms))
                .map(|s| st.snapshot(s, cleaned_through))
                .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        Ok(CompactionPlan {
            segments,
            log_start: st.log_start,
            cleaned_through,
            gaps_below: saved.gaps_below,
            tombstones_due_ms,
            delete_retention_ms: st.config.delete_retention_ms,
            min_cleanable_dirty_ratio: st.config.min_cleanable_dirty_ratio,
            max_compaction_lag_ms: st.config.max_compaction_lag_ms,
        })
    }

    /// Starts the replacement of `snapshot`'s segment as temp files, carrying over its carry
    /// causal entry.
    pub fn segment_writer(
        &self,
        snapshot: &SegmentSnapshot,
    ) -> Result<SegmentWriter, StorageError> {
        let entries = snapshot.causal_entries()?;
        let mut high_water = BTreeMap::new();
        for e in &entries {
            high_water::join(&mut high_water, e.meta.origin_region, e.meta.origin_seq);
        }
        let log = create_truncated(&tmp_path(&self.dir, snapshot.base, "log"))?;
        let causal_file = create_truncated(&tmp_path(&self.dir, snapshot.base, "causal"))?;
        let mut causal_size = 0u64;
        if let Some(carry) = entries.iter().find(|e| e.base_offset < snapshot.base) {
            let bytes = causal::encode_entry(carry.base_offset, &carry.meta);
            causal_file
                .write_all_at(&bytes, 0)
                .ctx(|| format!("writing rewritten causal index {}", snapshot.base))?;
            causal_size = bytes.len() as u64;
        }
        Ok(SegmentWriter {
            dir: self.dir.clone(),
            base: snapshot.base,
            end_offset: snapshot.end_offset,
            old_size: snapshot.size,
            log,
            causal: causal_file,
            size: 0,
            causal_size,
            next_offset: snapshot.base,
            high_water,
        })
    }

    /// Swaps the staged replacements in, newest first (module docs), skipping (and deleting)
    /// any whose segment is gone or changed meanwhile (retention, DeleteRecords), then records
    /// `cleaned_through` and when the next kept tombstone may go.
    pub fn swap_segments(
        &self,
        mut staged: Vec<StagedSegment>,
        cleaned_through: i64,
        tombstones_due_ms: Option<i64>,
    ) -> Result<SwapReport, StorageError> {
        let mut dropped = high_water::HighWater::new();
        for s in &staged {
            for (&region, &seq) in &s.high_water {
                high_water::join(&mut dropped, region, seq);
            }
        }
        high_water::persist_join(&self.dir, &dropped)?;
        let mut saved = CleanerCheckpoint::read(&self.dir)?;
        if let Some(end) = staged.iter().map(|s| s.end_offset).max() {
            if end > saved.gaps_below {
                saved.gaps_below = end;
                saved.write(&self.dir)?;
            }
        }
        staged.sort_by_key(|s| std::cmp::Reverse(s.base));
        let mut report = SwapReport::default();
        let (mut old_total, mut new_total) = (0u64, 0u64);
        for s in staged {
            let mut st = self.write_state();
            let last = st.segments.len() - 1;
            let Some(i) = st.segments[..last]
                .iter()
                .position(|seg| seg.base() == s.base && seg.end_offset() == s.end_offset)
            else {
                drop(st);
                s.discard()?;
                continue;
            };
            s.swap_files()?;
            let interval = st.config.index_interval_bytes;
            // The old segment's files are replaced: reading them again by path would pair the
            // new bytes with the old indexes, so a failure here stops writes until a restart
            // opens the swapped files afresh.
            st.segments[i] = Segment::open_rewritten(&self.dir, s.base, s.end_offset, interval)
                .inspect_err(|_| self.poisoned.store(true, Ordering::Release))?;
            report.swapped += 1;
            old_total += s.old_size;
            new_total += s.new_size;
            tracing::debug!(dir = %self.dir.display(), base_offset = s.base, old_bytes = s.old_size, new_bytes = s.new_size, "swapped in a compacted segment");
        }
        report.bytes_reclaimed = old_total.saturating_sub(new_total);
        CleanerCheckpoint {
            cleaned_through,
            tombstones_due_ms,
            gaps_below: saved.gaps_below.max(cleaned_through),
        }
        .write(&self.dir)?;
        Ok(report)
    }

    /// Records that batches may be missing below `offset`: a seed's copy holds the donor's
    /// merged rows without the batches they replaced, at offsets of its own.
    pub fn mark_gaps_below(&self, offset: i64) -> Result<(), StorageError> {
        let mut saved = CleanerCheckpoint::read(&self.dir)?;
        if offset > saved.gaps_below {
            saved.gaps_below = offset;
            saved.write(&self.dir)?;
        }
        Ok(())
    }

    /// Per origin region, the highest origin sequence any batch of this partition's log ever
    /// carried: every causal entry in the log joined with what compaction recorded before it
    /// dropped batches. What replication rebuilds the vector clock from; compaction never
    /// lowers it. Reads every `.causal` file.
    pub fn origin_high_water(&self) -> Result<Vec<(u32, u64)>, StorageError> {
        let mut high_water = high_water::read(&self.dir)?;
        let handles: Vec<_> = self
            .read_state()
            .segments
            .iter()
            .map(|s| {
                let (_, _, causal_file, causal_size) = s.read_handles()?;
                Ok((causal_file, causal_size))
            })
            .collect::<Result<_, StorageError>>()?;
        for (region, seq) in high_water::of_causal_files(&self.dir, handles)? {
            high_water::join(&mut high_water, region, seq);
        }
        Ok(high_water.into_iter().collect())
    }
}
