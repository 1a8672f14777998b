//! The two sparse per-segment indexes, kept in memory for lookups and mirrored to files.
//!
//! ## `<base>.index` (offset index, version 0)
//! Fixed 8-byte entries, big-endian: `relative_offset u32` (batch base offset minus the segment's
//! base offset) then `position u32` (byte position of that batch in `<base>.log`). One entry is
//! written when at least `index.interval.bytes` of batches were appended since the last entry;
//! the first batch of a segment needs no entry (lookups fall back to position 0). Entries are
//! strictly increasing in both fields.
//!
//! ## `<base>.timeindex` (time index, version 0)
//! Fixed 12-byte entries, big-endian: `timestamp i64` then `relative_offset u32`. An entry
//! `(T, R)` says: the largest maxTimestamp among batches up to the batch at relative offset `R`
//! is `T`, and that batch holds it. Entries are written on the same interval as the offset index
//! but only when `T` grows, and once more when a segment stops being active, so the last entry
//! of a closed segment is its largest timestamp.
//!
//! ## Crash behaviour
//! Index files are never trusted blindly: on open a file that is missing, has a partial entry,
//! is not strictly increasing or points past the log is rebuilt from the `.log` (see
//! `segment.rs`); the active segment's indexes are always rebuilt after an unclean shutdown.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{IoContext, StorageError};

const OFFSET_ENTRY_BYTES: usize = 8;
const TIME_ENTRY_BYTES: usize = 12;

/// Opens (creating) an index file for positioned reads and writes.
pub(crate) fn open_rw(path: &Path) -> Result<File, StorageError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .ctx(|| format!("opening {}", path.display()))
}

fn read_all(path: &Path) -> Result<Option<Vec<u8>>, StorageError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StorageError::io(format!("reading {}", path.display()), e)),
    }
}

/// Replaces a file's contents (used when an index is rebuilt).
fn rewrite(path: &Path, bytes: &[u8]) -> Result<File, StorageError> {
    let file = open_rw(path)?;
    file.set_len(0)
        .ctx(|| format!("truncating {}", path.display()))?;
    file.write_all_at(bytes, 0)
        .ctx(|| format!("writing {}", path.display()))?;
    Ok(file)
}

/// An index's file: open while its segment is active, closed once the segment is (lookups use
/// the entries in memory, and a closed segment's index never changes).
struct IndexFile {
    path: PathBuf,
    file: Option<Arc<File>>,
}

impl IndexFile {
    fn open(path: &Path, file: File) -> IndexFile {
        IndexFile {
            path: path.to_path_buf(),
            file: Some(Arc::new(file)),
        }
    }

    fn write_at(&self, bytes: &[u8], at: u64) -> Result<(), StorageError> {
        let Some(file) = &self.file else {
            return Err(StorageError::Corrupt(format!(
                "{} belongs to a closed segment: nothing may be written to it",
                self.path.display()
            )));
        };
        file.write_all_at(bytes, at)
            .ctx(|| format!("appending to {}", self.path.display()))
    }
}

/// Sparse map from batch base offset to file position within one segment.
pub(crate) struct OffsetIndex {
    file: IndexFile,
    entries: Vec<(u32, u32)>,
}

impl OffsetIndex {
    /// Loads the file if it exists and is consistent with a log of `log_bytes` bytes.
    pub(crate) fn load(path: &Path, log_bytes: u64) -> Result<Option<OffsetIndex>, StorageError> {
        let Some(bytes) = read_all(path)? else {
            return Ok(None);
        };
        if bytes.len() % OFFSET_ENTRY_BYTES != 0 {
            return Ok(None);
        }
        let mut entries: Vec<(u32, u32)> = Vec::with_capacity(bytes.len() / OFFSET_ENTRY_BYTES);
        for chunk in bytes.chunks_exact(OFFSET_ENTRY_BYTES) {
            let rel = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            let pos = u32::from_be_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
            let increasing = entries.last().is_none_or(|&(r, p)| rel > r && pos > p);
            if !increasing || u64::from(pos) >= log_bytes {
                return Ok(None);
            }
            entries.push((rel, pos));
        }
        Ok(Some(OffsetIndex {
            file: IndexFile::open(path, open_rw(path)?),
            entries,
        }))
    }

    /// Writes a fresh file holding exactly `entries`.
    pub(crate) fn create(
        path: &Path,
        entries: Vec<(u32, u32)>,
    ) -> Result<OffsetIndex, StorageError> {
        let mut bytes = Vec::with_capacity(entries.len() * OFFSET_ENTRY_BYTES);
        for (rel, pos) in &entries {
            bytes.extend_from_slice(&rel.to_be_bytes());
            bytes.extend_from_slice(&pos.to_be_bytes());
        }
        Ok(OffsetIndex {
            file: IndexFile::open(path, rewrite(path, &bytes)?),
            entries,
        })
    }

    /// Appends one entry to memory and file.
    pub(crate) fn append(&mut self, rel: u32, pos: u32) -> Result<(), StorageError> {
        let mut bytes = [0u8; OFFSET_ENTRY_BYTES];
        bytes[..4].copy_from_slice(&rel.to_be_bytes());
        bytes[4..].copy_from_slice(&pos.to_be_bytes());
        let at = (self.entries.len() * OFFSET_ENTRY_BYTES) as u64;
        self.file.write_at(&bytes, at)?;
        self.entries.push((rel, pos));
        Ok(())
    }

    /// The position of the last indexed batch whose relative base offset is <= `rel` (or 0).
    pub(crate) fn floor_position(&self, rel: u32) -> u32 {
        let i = self.entries.partition_point(|&(r, _)| r <= rel);
        if i == 0 {
            0
        } else {
            self.entries[i - 1].1
        }
    }

    /// Shares the file handle, for fsync outside the log lock; none once the segment is closed.
    pub(crate) fn file(&self) -> Option<Arc<File>> {
        self.file.file.clone()
    }

    /// Closes the file: the segment stopped being active.
    pub(crate) fn close_file(&mut self) {
        self.file.file = None;
    }
}

/// Sparse, monotonic map from max timestamp to relative offset within one segment.
pub(crate) struct TimeIndex {
    file: IndexFile,
    entries: Vec<(i64, u32)>,
}

impl TimeIndex {
    /// Loads the file if it exists and is consistent (monotonic, offsets below `rel_end`).
    pub(crate) fn load(path: &Path, rel_end: u64) -> Result<Option<TimeIndex>, StorageError> {
        let Some(bytes) = read_all(path)? else {
            return Ok(None);
        };
        if bytes.len() % TIME_ENTRY_BYTES != 0 {
            return Ok(None);
        }
        let mut entries: Vec<(i64, u32)> = Vec::with_capacity(bytes.len() / TIME_ENTRY_BYTES);
        for chunk in bytes.chunks_exact(TIME_ENTRY_BYTES) {
            let mut ts = [0u8; 8];
            ts.copy_from_slice(&chunk[..8]);
            let ts = i64::from_be_bytes(ts);
            let rel = u32::from_be_bytes([chunk[8], chunk[9], chunk[10], chunk[11]]);
            let increasing = entries.last().is_none_or(|&(t, r)| ts > t && rel >= r);
            if !increasing || u64::from(rel) >= rel_end {
                return Ok(None);
            }
            entries.push((ts, rel));
        }
        Ok(Some(TimeIndex {
            file: IndexFile::open(path, open_rw(path)?),
            entries,
        }))
    }

    /// Writes a fresh file holding exactly `entries`.
    pub(crate) fn create(path: &Path, entries: Vec<(i64, u32)>) -> Result<TimeIndex, StorageError> {
        let mut bytes = Vec::with_capacity(entries.len() * TIME_ENTRY_BYTES);
        for (ts, rel) in &entries {
            bytes.extend_from_slice(&ts.to_be_bytes());
            bytes.extend_from_slice(&rel.to_be_bytes());
        }
        Ok(TimeIndex {
            file: IndexFile::open(path, rewrite(path, &bytes)?),
            entries,
        })
    }

    /// Appends `(ts, rel)` if `ts` is larger than the last entry's timestamp.
    pub(crate) fn maybe_append(&mut self, ts: i64, rel: u32) -> Result<(), StorageError> {
        if self.entries.last().is_some_and(|&(t, _)| ts <= t) {
            return Ok(());
        }
        let mut bytes = [0u8; TIME_ENTRY_BYTES];
        bytes[..8].copy_from_slice(&ts.to_be_bytes());
        bytes[8..].copy_from_slice(&rel.to_be_bytes());
        let at = (self.entries.len() * TIME_ENTRY_BYTES) as u64;
        self.file.write_at(&bytes, at)?;
        self.entries.push((ts, rel));
        Ok(())
    }

    /// The last entry, i.e. the segment's largest timestamp once it is closed.
    pub(crate) fn last(&self) -> Option<(i64, u32)> {
        self.entries.last().copied()
    }

    /// The relative offset to start scanning from when looking for the first batch whose
    /// maxTimestamp >= `ts`: the last entry whose timestamp is below `ts` (every batch up to it
    /// is below `ts`), or 0.
    pub(crate) fn scan_start(&self, ts: i64) -> u32 {
        let i = self.entries.partition_point(|&(t, _)| t < ts);
        if i == 0 {
            0
        } else {
            self.entries[i - 1].1
        }
    }

    /// Shares the file handle, for fsync outside the log lock; none once the segment is closed.
    pub(crate) fn file(&self) -> Option<Arc<File>> {
        self.file.file.clone()
    }

    /// Closes the file: the segment stopped being active.
    pub(crate) fn close_file(&mut self) {
        self.file.file = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_index_floor_lookup_and_reload_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.index");
        let mut idx = OffsetIndex::create(&path, vec![]).unwrap();
        idx.append(5, 100).unwrap();
        idx.append(9, 300).unwrap();
        assert_eq!(idx.floor_position(4), 0);
        assert_eq!(idx.floor_position(5), 100);
        assert_eq!(idx.floor_position(100), 300);
        let again = OffsetIndex::load(&path, 1000).unwrap().unwrap();
        assert_eq!(again.entries, vec![(5, 100), (9, 300)]);
        assert!(
            OffsetIndex::load(&path, 200).unwrap().is_none(),
            "points past the log"
        );
    }

    #[test]
    fn time_index_keeps_only_growing_timestamps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.timeindex");
        let mut idx = TimeIndex::create(&path, vec![]).unwrap();
        idx.maybe_append(10, 0).unwrap();
        idx.maybe_append(5, 3).unwrap();
        idx.maybe_append(20, 4).unwrap();
        assert_eq!(idx.entries, vec![(10, 0), (20, 4)]);
        assert_eq!(idx.scan_start(15), 0);
        assert_eq!(idx.scan_start(25), 4);
        assert_eq!(
            TimeIndex::load(&path, 5).unwrap().unwrap().entries,
            idx.entries
        );
    }
}
