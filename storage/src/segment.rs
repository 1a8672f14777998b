//! One segment: a `.log` file of whole batches plus its `.index`, `.timeindex` and `.causal`
//! companions (formats in `index.rs` and `causal.rs`). Owns appending, positioned reads,
//! timestamp scans, the recovery scan of the active segment and index rebuilding.
//!
//! ## `<base_offset:020>.log`
//! Kafka v2 record batches byte-for-byte (compressed batches stay compressed), with offsets
//! assigned, contiguous from `base_offset`. No framing of our own, so Fetch can return a slice.
//! A closed segment rewritten by compaction (`partition/compaction.rs`) keeps its base and end
//! offsets but may have gaps between batches and at its end; lookups return the first batch
//! at or after an offset, and only the active segment (never compacted) is scanned strictly.
//!
//! ## Crash behaviour
//! Writes go to the page cache with positioned writes; `Partition::sync_through` fsyncs. After an
//! unclean shutdown `recover` scans the active segment, keeps the longest prefix of batches that
//! have a valid length, magic, CRC and contiguous offsets *and* a matching causal entry, truncates
//! both files there, and rebuilds the indexes. Older segments are trusted, but their indexes are
//! rebuilt if missing or inconsistent.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use crate::batch::{validate_batch, BatchHeader, BATCH_HEADER_BYTES};
use crate::causal::{self, CausalMeta};
use crate::control::{control_type, ControlType};
use crate::error::{IoContext, StorageError};
use crate::file_cache::{ClosedSegmentKey, SegmentFile};
use crate::index::{open_rw, OffsetIndex, TimeIndex};

/// File name of a segment component, e.g. `00000000000000000042.log`.
pub(crate) fn file_name(base: i64, ext: &str) -> String {
    format!("{base:020}.{ext}")
}

/// What a scan learned about one batch on disk.
#[derive(Debug, Clone, Copy)]
struct Scanned {
    pos: u64,
    header: BatchHeader,
}

impl Scanned {
    fn end(&self) -> u64 {
        self.pos + self.header.total_bytes() as u64
    }
}

/// The files a group commit must fsync for one segment, cloned out of the log lock.
pub(crate) struct SyncJob {
    files: [Arc<File>; 4],
    generation: u64,
    synced: Arc<AtomicU64>,
}

impl SyncJob {
    /// fsyncs every file of the segment.
    pub(crate) fn fsync(&self) -> Result<(), StorageError> {
        for f in &self.files {
            f.sync_data().ctx(|| "fsyncing segment files".to_string())?;
        }
        Ok(())
    }

    /// Records that everything written up to the snapshot is durable.
    pub(crate) fn mark_synced(&self) {
        self.synced.fetch_max(self.generation, Ordering::AcqRel);
    }
}

/// A read located under the log lock, to copy after it is released. Safe without the lock: the
/// bytes below a segment's size never change (an append that fails cuts back only beyond it,
/// and a segment deleted or rewritten by compaction stays readable through this handle).
pub(crate) struct PlannedRead {
    log: Arc<File>,
    pos: u64,
    len: usize,
    base: i64,
    /// The planned bytes run to the end of the segment (as it was when planned).
    to_end: bool,
}

impl PlannedRead {
    /// Bytes planned.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether the read takes everything the segment held from its position on: only then may a
    /// read go on into the next segment.
    pub(crate) fn reaches_end(&self) -> bool {
        self.to_end
    }

    /// Copies the planned bytes and trims them to whole batches.
    pub(crate) fn run(self) -> Result<Bytes, StorageError> {
        let mut buf = read_unzeroed_at(&self.log, self.pos, self.len)
            .ctx(|| format!("reading segment {} at {}", self.base, self.pos))?;
        let mut end = 0usize;
        while end + BATCH_HEADER_BYTES <= buf.len() {
            let h = BatchHeader::parse(&buf[end..])?;
            if h.total_bytes() < BATCH_HEADER_BYTES || end + h.total_bytes() > buf.len() {
                break;
            }
            end += h.total_bytes();
        }
        buf.truncate(end);
        Ok(Bytes::from(buf))
    }
}

/// An append that failed; `consistent` says whether the files were rolled back cleanly.
pub(crate) struct AppendFailure {
    /// The I/O error.
    pub error: StorageError,
    /// False if the files may now hold a partial batch (the partition must be poisoned).
    pub consistent: bool,
}

/// One segment's files and in-memory state.
pub(crate) struct Segment {
    base: i64,
    dir: PathBuf,
    files: Files,
    offset_index: OffsetIndex,
    time_index: TimeIndex,
    size: u64,
    causal_size: u64,
    end_offset: i64,
    /// Largest maxTimestamp and the relative offset of the batch holding it.
    max_timestamp: Option<(i64, u32)>,
    bytes_since_index: u64,
    /// Time the segment.ms roll clock started (first batch), None while empty.
    roll_clock_ms: Option<i64>,
    last_causal: Option<CausalMeta>,
    write_generation: u64,
    synced_generation: Arc<AtomicU64>,
}

/// A segment's `.log` and `.causal` handles.
enum Files {
    /// The active segment keeps its files open for appends and group commit.
    Active { log: Arc<File>, causal: Arc<File> },
    /// A closed segment reads through the process-wide cache of open files (`file_cache.rs`),
    /// so descriptors do not grow with the data retained.
    Closed(ClosedSegmentKey),
}

impl Segment {
    fn path(dir: &Path, base: i64, ext: &str) -> PathBuf {
        dir.join(file_name(base, ext))
    }

    /// Creates a new empty segment at `base`; `carry` is the previous batch's causal metadata.
    pub(crate) fn create(
        dir: &Path,
        base: i64,
        carry: Option<(i64, &CausalMeta)>,
    ) -> Result<Segment, StorageError> {
        let log_path = Self::path(dir, base, "log");
        let log = open_rw(&log_path)?;
        log.set_len(0)
            .ctx(|| format!("truncating {}", log_path.display()))?;
        let causal_path = Self::path(dir, base, "causal");
        let causal_file = open_rw(&causal_path)?;
        let mut causal_size = 0;
        if let Some((offset, meta)) = carry {
            let entry = causal::encode_entry(offset, meta);
            causal_file
                .write_all_at(&entry, 0)
                .ctx(|| format!("writing {}", causal_path.display()))?;
            causal_size = entry.len() as u64;
        }
        causal_file
            .set_len(causal_size)
            .ctx(|| format!("truncating {}", causal_path.display()))?;
        Ok(Segment {
            base,
            dir: dir.to_path_buf(),
            files: Files::Active {
                log: Arc::new(log),
                causal: Arc::new(causal_file),
            },
            offset_index: OffsetIndex::create(&Self::path(dir, base, "index"), vec![])?,
            time_index: TimeIndex::create(&Self::path(dir, base, "timeindex"), vec![])?,
            size: 0,
            causal_size,
            end_offset: base,
            max_timestamp: None,
            bytes_since_index: 0,
            roll_clock_ms: None,
            last_causal: carry.map(|(_, m)| m.clone()),
            write_generation: 1,
            synced_generation: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Opens the segment's files with the given indexes; in-memory state comes from the caller.
    fn with_files(
        dir: &Path,
        base: i64,
        end_offset: i64,
        offset_index: OffsetIndex,
        time_index: TimeIndex,
    ) -> Result<Segment, StorageError> {
        let log_path = Self::path(dir, base, "log");
        let log = open_rw(&log_path)?;
        let size = file_len(&log, &log_path)?;
        let causal_path = Self::path(dir, base, "causal");
        let causal_file = open_rw(&causal_path)?;
        let causal_size = file_len(&causal_file, &causal_path)?;
        Ok(Segment {
            base,
            dir: dir.to_path_buf(),
            files: Files::Active {
                log: Arc::new(log),
                causal: Arc::new(causal_file),
            },
            max_timestamp: time_index.last(),
            offset_index,
            time_index,
            size,
            causal_size,
            end_offset,
            bytes_since_index: 0,
            roll_clock_ms: None,
            last_causal: None,
            write_generation: 0,
            synced_generation: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Fresh, empty index files for a segment whose indexes are about to be rebuilt.
    fn empty_indexes(dir: &Path, base: i64) -> Result<(OffsetIndex, TimeIndex), StorageError> {
        Ok((
            OffsetIndex::create(&Self::path(dir, base, "index"), vec![])?,
            TimeIndex::create(&Self::path(dir, base, "timeindex"), vec![])?,
        ))
    }

    /// Opens a segment whose content is trusted to end at `end_offset` (an older segment, or the
    /// active one after a clean shutdown). Indexes are rebuilt if missing or inconsistent.
    pub(crate) fn open_trusted(
        dir: &Path,
        base: i64,
        end_offset: i64,
        index_interval: u32,
        now_ms: i64,
    ) -> Result<Segment, StorageError> {
        let log_path = Self::path(dir, base, "log");
        let size = std::fs::metadata(&log_path)
            .ctx(|| format!("stat {}", log_path.display()))?
            .len();
        let rel_end = u64::try_from(end_offset - base).unwrap_or(0);
        let offset_index = OffsetIndex::load(&Self::path(dir, base, "index"), size)?;
        let time_index = TimeIndex::load(&Self::path(dir, base, "timeindex"), rel_end)?;
        let mut segment = match (offset_index, time_index) {
            (Some(oi), Some(ti)) if size == 0 || ti.last().is_some() => {
                Segment::with_files(dir, base, end_offset, oi, ti)?
            }
            _ => {
                tracing::info!(segment = %log_path.display(), "rebuilding missing or inconsistent indexes");
                let (oi, ti) = Self::empty_indexes(dir, base)?;
                let mut segment = Segment::with_files(dir, base, end_offset, oi, ti)?;
                let batches = segment.scan(false)?;
                segment.rebuild_indexes(&batches, index_interval)?;
                segment.close_time_index()?;
                segment
            }
        };
        segment.roll_clock_ms = segment.first_batch_clock(now_ms)?;
        Ok(segment)
    }

    /// Opens a closed segment that compaction just rewrote (its indexes were removed with the
    /// old log) and builds its indexes from the new log.
    pub(crate) fn open_rewritten(
        dir: &Path,
        base: i64,
        end_offset: i64,
        index_interval: u32,
    ) -> Result<Segment, StorageError> {
        let (oi, ti) = Self::empty_indexes(dir, base)?;
        let mut segment = Segment::with_files(dir, base, end_offset, oi, ti)?;
        let batches = segment.scan(false)?;
        segment.rebuild_indexes(&batches, index_interval)?;
        segment.close_time_index()?;
        segment.load_last_causal()?;
        segment.close_files();
        Ok(segment)
    }

    /// Recovers the active segment after an unclean shutdown (see the module docs). Returns the
    /// segment and the number of bytes cut from the log and causal files.
    pub(crate) fn recover(
        dir: &Path,
        base: i64,
        index_interval: u32,
        now_ms: i64,
    ) -> Result<(Segment, u64, u64), StorageError> {
        let (oi, ti) = Self::empty_indexes(dir, base)?;
        let mut segment = Segment::with_files(dir, base, base, oi, ti)?;
        let batches = segment.scan(true)?;
        let causal_path = Self::path(dir, base, "causal");
        let causal_bytes =
            std::fs::read(&causal_path).ctx(|| format!("reading {}", causal_path.display()))?;
        let mut entries = causal::decode_prefix(&causal_bytes).into_iter().peekable();
        let mut causal_keep = 0u64;
        let mut last_causal = None;
        if let Some((carry, end)) = entries.next_if(|(e, _)| e.base_offset < base) {
            causal_keep = end;
            last_causal = Some(carry.meta);
        }
        let mut keep = 0usize;
        for (batch, (entry, end)) in batches.iter().zip(entries) {
            if entry.base_offset != batch.header.base_offset {
                break;
            }
            keep += 1;
            causal_keep = end;
            last_causal = Some(entry.meta);
        }
        let log_keep = keep.checked_sub(1).map_or(0, |i| batches[i].end());
        let cut_log = segment.size - log_keep;
        let cut_causal = segment.causal_size.saturating_sub(causal_keep);
        if cut_log > 0 || cut_causal > 0 {
            tracing::info!(
                segment = %Self::path(dir, base, "log").display(),
                log_bytes_truncated = cut_log,
                causal_bytes_truncated = cut_causal,
                batches_kept = keep,
                "recovery truncated the active segment"
            );
            let (log, causal) = segment.writable()?;
            log.set_len(log_keep).ctx(|| "truncating log".to_string())?;
            causal
                .set_len(causal_keep)
                .ctx(|| "truncating causal index".to_string())?;
        }
        segment.size = log_keep;
        segment.causal_size = causal_keep;
        segment.end_offset = keep
            .checked_sub(1)
            .map_or(base, |i| batches[i].header.last_offset() + 1);
        segment.last_causal = last_causal;
        segment.rebuild_indexes(&batches[..keep], index_interval)?;
        segment.roll_clock_ms = segment.first_batch_clock(now_ms)?;
        segment.write_generation = 1;
        Ok((segment, cut_log, cut_causal))
    }

    /// Walks the log's batches from position 0. With `strict`, stops at the first batch whose
    /// length, magic, CRC or offset continuity is wrong; otherwise only at an unreadable header.
    fn scan(&self, strict: bool) -> Result<Vec<Scanned>, StorageError> {
        let mut out = Vec::new();
        let mut pos = 0u64;
        let mut expected = self.base;
        let mut buf = Vec::new();
        let log = self.log_file()?;
        while pos + BATCH_HEADER_BYTES as u64 <= self.size {
            let Ok(header) =
                BatchHeader::parse(&self.read_exact_at(&log, pos, BATCH_HEADER_BYTES)?)
            else {
                break;
            };
            let total = header.total_bytes() as u64;
            if total < BATCH_HEADER_BYTES as u64 || pos + total > self.size || header.magic != 2 {
                break;
            }
            if strict {
                buf.resize(total as usize, 0);
                log.read_exact_at(&mut buf, pos)
                    .ctx(|| format!("reading segment {}", self.base))?;
                if validate_batch(&buf).is_err() || header.base_offset != expected {
                    break;
                }
            }
            expected = header.last_offset() + 1;
            out.push(Scanned { pos, header });
            pos += total;
        }
        Ok(out)
    }

    /// The causal entries of the batches with base offsets in `[from, to)`, in order. Reads the
    /// segment's whole `.causal` file: callers read ahead in large steps.
    pub(crate) fn causal_entries(
        &self,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, CausalMeta)>, StorageError> {
        let what = || format!("reading causal index of segment {}", self.base);
        Ok(
            causal::read_entries(&*self.causal_file()?, self.causal_size, &what)?
                .into_iter()
                .map(|entry| (entry.base_offset, entry.meta))
                .filter(|(offset, _)| *offset >= from && *offset < to && *offset >= self.base)
                .collect(),
        )
    }

    /// Every batch header in the segment, in order, with the marker type of control batches
    /// (for rebuilding producer and transaction state).
    pub(crate) fn batch_headers(
        &self,
    ) -> Result<Vec<(BatchHeader, Option<ControlType>)>, StorageError> {
        let log = self.log_file()?;
        self.scan(false)?
            .into_iter()
            .map(|b| {
                let control = if b.header.is_control() {
                    let bytes = self.read_exact_at(&log, b.pos, b.header.total_bytes())?;
                    control_type(&b.header, &bytes)
                } else {
                    None
                };
                Ok((b.header, control))
            })
            .collect()
    }

    /// Replaces both index files with entries derived from `batches`.
    fn rebuild_indexes(&mut self, batches: &[Scanned], interval: u32) -> Result<(), StorageError> {
        self.offset_index =
            OffsetIndex::create(&Self::path(&self.dir, self.base, "index"), vec![])?;
        self.time_index =
            TimeIndex::create(&Self::path(&self.dir, self.base, "timeindex"), vec![])?;
        self.max_timestamp = None;
        self.bytes_since_index = 0;
        for b in batches {
            self.index_batch(&b.header, b.pos, interval)?;
        }
        Ok(())
    }

    /// Updates max timestamp and the sparse indexes for a batch just placed at `pos`.
    fn index_batch(
        &mut self,
        h: &BatchHeader,
        pos: u64,
        interval: u32,
    ) -> Result<(), StorageError> {
        let rel = self.relative(h.base_offset)?;
        if self.max_timestamp.is_none_or(|(t, _)| h.max_timestamp > t) {
            self.max_timestamp = Some((h.max_timestamp, rel));
        }
        if self.bytes_since_index >= u64::from(interval) {
            let pos32 = u32::try_from(pos)
                .map_err(|_| StorageError::Corrupt(format!("segment position {pos} over 4 GiB")))?;
            self.offset_index.append(rel, pos32)?;
            if let Some((t, r)) = self.max_timestamp {
                self.time_index.maybe_append(t, r)?;
            }
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += h.total_bytes() as u64;
        Ok(())
    }

    fn relative(&self, offset: i64) -> Result<u32, StorageError> {
        u32::try_from(offset - self.base).map_err(|_| {
            StorageError::Corrupt(format!("offset {offset} not within segment {}", self.base))
        })
    }

    /// Writes the final time index entry so the last entry is the segment's max timestamp;
    /// called when the segment stops being active and on clean shutdown.
    pub(crate) fn close_time_index(&mut self) -> Result<(), StorageError> {
        if let Some((t, r)) = self.max_timestamp {
            self.time_index.maybe_append(t, r)?;
            self.write_generation += 1;
        }
        Ok(())
    }

    /// When the segment.ms clock of a non-empty segment started: its first batch's timestamp,
    /// clamped to `now_ms` (a missing or future timestamp restarts the clock now).
    fn first_batch_clock(&self, now_ms: i64) -> Result<Option<i64>, StorageError> {
        if self.size < BATCH_HEADER_BYTES as u64 {
            return Ok(None);
        }
        let h =
            BatchHeader::parse(&self.read_exact_at(&*self.log_file()?, 0, BATCH_HEADER_BYTES)?)?;
        Ok(Some(if h.max_timestamp >= 0 {
            h.max_timestamp.min(now_ms)
        } else {
            now_ms
        }))
    }

    /// Appends one batch whose offsets are already assigned, given as pieces written in order
    /// (its header and the rest), then its causal entry and indexes.
    pub(crate) fn append(
        &mut self,
        batch: [&[u8]; 2],
        header: &BatchHeader,
        meta: &CausalMeta,
        interval: u32,
        now_ms: i64,
    ) -> Result<(), AppendFailure> {
        let pos = self.size;
        let entry = causal::encode_entry(header.base_offset, meta);
        let (log, causal) = self.writable().map_err(|error| AppendFailure {
            error,
            consistent: true,
        })?;
        let written = write_all_vectored_at(log, batch, pos)
            .and_then(|()| causal.write_all_at(&entry, self.causal_size));
        if let Err(e) = written {
            let consistent = log.set_len(pos).is_ok() && causal.set_len(self.causal_size).is_ok();
            return Err(AppendFailure {
                error: StorageError::io(format!("appending to segment {}", self.base), e),
                consistent,
            });
        }
        self.size += batch.iter().map(|piece| piece.len() as u64).sum::<u64>();
        self.causal_size += entry.len() as u64;
        self.end_offset = header.last_offset() + 1;
        self.write_generation += 1;
        self.last_causal = Some(meta.clone());
        if self.roll_clock_ms.is_none() {
            self.roll_clock_ms = Some(now_ms);
        }
        // The data is written; an index write failure only makes lookups slower until rebuilt.
        if let Err(e) = self.index_batch(header, pos, interval) {
            tracing::warn!(segment = self.base, error = %e, "index append failed");
        }
        Ok(())
    }

    /// The `.log` file, for reads: taken once per operation, since a closed segment's comes
    /// from the shared cache.
    fn log_file(&self) -> Result<Arc<File>, StorageError> {
        match &self.files {
            Files::Active { log, .. } => Ok(Arc::clone(log)),
            Files::Closed(key) => {
                key.open(SegmentFile::Log, &Self::path(&self.dir, self.base, "log"))
            }
        }
    }

    /// The `.causal` file, for reads.
    fn causal_file(&self) -> Result<Arc<File>, StorageError> {
        match &self.files {
            Files::Active { causal, .. } => Ok(Arc::clone(causal)),
            Files::Closed(key) => key.open(
                SegmentFile::Causal,
                &Self::path(&self.dir, self.base, "causal"),
            ),
        }
    }

    /// The `.log` and `.causal` files for writing: only the active segment has them.
    fn writable(&self) -> Result<(&File, &File), StorageError> {
        match &self.files {
            Files::Active { log, causal } => Ok((log, causal)),
            Files::Closed(_) => Err(StorageError::Corrupt(format!(
                "segment {} is closed: nothing may be written to it",
                self.base
            ))),
        }
    }

    /// Closes the files of a segment that stopped being active (rolled, or opened behind the
    /// active one): later reads take handles from the shared cache.
    pub(crate) fn close_files(&mut self) {
        self.files = Files::Closed(ClosedSegmentKey::new());
        self.offset_index.close_file();
        self.time_index.close_file();
    }

    fn read_exact_at(&self, log: &File, pos: u64, len: usize) -> Result<Vec<u8>, StorageError> {
        let mut buf = vec![0u8; len];
        log.read_exact_at(&mut buf, pos)
            .ctx(|| format!("reading segment {} at {pos}", self.base))?;
        Ok(buf)
    }

    fn header_at(&self, log: &File, pos: u64) -> Result<BatchHeader, StorageError> {
        let h = BatchHeader::parse(&self.read_exact_at(log, pos, BATCH_HEADER_BYTES)?)?;
        if h.total_bytes() < BATCH_HEADER_BYTES || pos + h.total_bytes() as u64 > self.size {
            return Err(StorageError::Corrupt(format!(
                "batch at {pos} in segment {} has bad length {}",
                self.base, h.batch_length
            )));
        }
        Ok(h)
    }

    /// Position and header of the batch containing `offset`, walking from the index floor.
    fn locate(&self, log: &File, offset: i64) -> Result<Option<(u64, BatchHeader)>, StorageError> {
        let rel = self.relative(offset.max(self.base))?;
        let mut pos = u64::from(self.offset_index.floor_position(rel));
        while pos < self.size {
            let h = self.header_at(log, pos)?;
            if h.last_offset() >= offset {
                return Ok(Some((pos, h)));
            }
            pos += h.total_bytes() as u64;
        }
        Ok(None)
    }

    /// Whole batches starting with the one containing `offset`, up to `max_bytes` but always at
    /// least one batch; empty if `offset` is at or past the segment's end.
    pub(crate) fn read(&self, offset: i64, max_bytes: usize) -> Result<Bytes, StorageError> {
        match self.plan_read(offset, max_bytes)? {
            Some(planned) => planned.run(),
            None => Ok(Bytes::new()),
        }
    }

    /// Locates a [`Segment::read`] (a few header reads) without copying it: the caller may
    /// release the log lock before the copy, which can be tens of MiB. `None` if `offset` is at
    /// or past the segment's end.
    pub(crate) fn plan_read(
        &self,
        offset: i64,
        max_bytes: usize,
    ) -> Result<Option<PlannedRead>, StorageError> {
        let log = self.log_file()?;
        let Some((pos, first)) = self.locate(&log, offset)? else {
            return Ok(None);
        };
        let remaining = self.size - pos;
        let len = (max_bytes.max(first.total_bytes()) as u64).min(remaining) as usize;
        Ok(Some(PlannedRead {
            log,
            pos,
            len,
            base: self.base,
            to_end: len as u64 == remaining,
        }))
    }

    /// Plans a read of whole batches from the segment's first one, within `max_bytes`: `None`
    /// when the segment is empty or its first batch does not fit (a read continuing from the
    /// previous segment never goes past its budget).
    pub(crate) fn plan_from_start(
        &self,
        max_bytes: usize,
    ) -> Result<Option<PlannedRead>, StorageError> {
        if self.size < BATCH_HEADER_BYTES as u64 {
            return Ok(None);
        }
        let log = self.log_file()?;
        let first = self.header_at(&log, 0)?;
        if first.total_bytes() > max_bytes {
            return Ok(None);
        }
        let len = (max_bytes as u64).min(self.size) as usize;
        Ok(Some(PlannedRead {
            log,
            pos: 0,
            len,
            base: self.base,
            to_end: len as u64 == self.size,
        }))
    }

    /// The whole batch containing `offset`, if any.
    pub(crate) fn batch_containing(&self, offset: i64) -> Result<Option<Bytes>, StorageError> {
        let log = self.log_file()?;
        match self.locate(&log, offset)? {
            Some((pos, h)) => Ok(Some(Bytes::from(self.read_exact_at(
                &log,
                pos,
                h.total_bytes(),
            )?))),
            None => Ok(None),
        }
    }

    /// The first batch with last offset >= `min_offset` and maxTimestamp >= `ts`.
    pub(crate) fn first_batch_at_or_after(
        &self,
        ts: i64,
        min_offset: i64,
    ) -> Result<Option<Bytes>, StorageError> {
        let start_rel = self
            .time_index
            .scan_start(ts)
            .max(self.relative(min_offset.max(self.base))?);
        let log = self.log_file()?;
        let mut pos = u64::from(self.offset_index.floor_position(start_rel));
        while pos < self.size {
            let h = self.header_at(&log, pos)?;
            if h.last_offset() >= min_offset && h.max_timestamp >= ts {
                return Ok(Some(Bytes::from(self.read_exact_at(
                    &log,
                    pos,
                    h.total_bytes(),
                )?)));
            }
            pos += h.total_bytes() as u64;
        }
        Ok(None)
    }

    /// Deletes the segment's files.
    pub(crate) fn delete_files(&self) -> Result<(), StorageError> {
        for ext in ["log", "index", "timeindex", "causal"] {
            remove_if_exists(&Self::path(&self.dir, self.base, ext))?;
        }
        Ok(())
    }

    /// The files to fsync if anything was written since the last sync. A closed segment has
    /// none: it was fsynced when it closed, or trusted when it was opened.
    pub(crate) fn sync_job(&self) -> Option<SyncJob> {
        if self.synced_generation.load(Ordering::Acquire) >= self.write_generation {
            return None;
        }
        let Files::Active { log, causal } = &self.files else {
            return None;
        };
        Some(SyncJob {
            files: [
                Arc::clone(log),
                Arc::clone(causal),
                self.offset_index.file()?,
                self.time_index.file()?,
            ],
            generation: self.write_generation,
            synced: Arc::clone(&self.synced_generation),
        })
    }

    /// First offset of the segment.
    pub(crate) fn base(&self) -> i64 {
        self.base
    }
    /// Offset after the segment's last batch.
    pub(crate) fn end_offset(&self) -> i64 {
        self.end_offset
    }
    /// Bytes in the `.log` file.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }
    /// Largest maxTimestamp in the segment, if any batch.
    pub(crate) fn max_timestamp(&self) -> Option<i64> {
        self.max_timestamp.map(|(t, _)| t)
    }
    /// Absolute offset of the batch holding the largest timestamp.
    pub(crate) fn max_timestamp_offset(&self) -> Option<i64> {
        self.max_timestamp.map(|(_, r)| self.base + i64::from(r))
    }
    /// When the segment.ms clock started, None while empty.
    pub(crate) fn roll_clock_ms(&self) -> Option<i64> {
        self.roll_clock_ms
    }
    /// The causal metadata of the segment's last batch (or the carried-over one).
    pub(crate) fn last_causal(&self) -> Option<&CausalMeta> {
        self.last_causal.as_ref()
    }

    /// Shared handles and current sizes of the `.log` and `.causal` files, so a closed segment
    /// can be read outside the log lock (compaction); the handles stay valid after a swap.
    pub(crate) fn read_handles(&self) -> Result<(Arc<File>, u64, Arc<File>, u64), StorageError> {
        Ok((
            self.log_file()?,
            self.size,
            self.causal_file()?,
            self.causal_size,
        ))
    }

    /// Reads the last valid causal entry from disk (trusted segments do not load it eagerly).
    pub(crate) fn load_last_causal(&mut self) -> Result<Option<CausalMeta>, StorageError> {
        let path = Self::path(&self.dir, self.base, "causal");
        let bytes = std::fs::read(&path).ctx(|| format!("reading {}", path.display()))?;
        self.last_causal = causal::decode_prefix(&bytes).pop().map(|(e, _)| e.meta);
        Ok(self.last_causal.clone())
    }
}

fn file_len(file: &File, path: &Path) -> Result<u64, StorageError> {
    Ok(file
        .metadata()
        .ctx(|| format!("stat {}", path.display()))?
        .len())
}

/// Removes a file, treating "already gone" as success.
pub(crate) fn remove_if_exists(path: &Path) -> Result<(), StorageError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::io(format!("removing {}", path.display()), e)),
    }
}

/// Writes `pieces` one after another at `pos` with one `pwritev` (a batch is its patched header
/// and the bytes received after it, written without joining them first); a short write is
/// finished piece by piece.
fn write_all_vectored_at(file: &File, pieces: [&[u8]; 2], pos: u64) -> std::io::Result<()> {
    let slices = pieces.map(std::io::IoSlice::new);
    let mut written = rustix::io::pwritev(file, &slices, pos)?;
    let mut at = pos + written as u64;
    for piece in pieces {
        let skip = written.min(piece.len());
        written -= skip;
        if skip < piece.len() {
            file.write_all_at(&piece[skip..], at)?;
            at += (piece.len() - skip) as u64;
        }
    }
    Ok(())
}

/// Reads `len` bytes at `pos` into a buffer that is not zeroed first: zeroing the megabyte a
/// Fetch reads cost 7% of the broker's CPU when serving consumers (`docs/benchmarks.md`, "Fetch
/// without the copy"). A file that ends before `len` bytes is an `UnexpectedEof`.
fn read_unzeroed_at(file: &File, pos: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(len);
    while buf.len() < len {
        let at = pos + buf.len() as u64;
        let read = rustix::io::pread(file, rustix::buffer::spare_capacity(&mut buf), at)?;
        if read == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    // The allocator may have given more capacity than asked, and pread filled it.
    buf.truncate(len);
    Ok(buf)
}
