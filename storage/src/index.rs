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

/// One fixed-size entry of a sparse index file.
pub(crate) trait IndexEntry: Copy {
    /// Bytes of one entry in the file.
    const BYTES: usize;
    /// The entry's bytes, big-endian.
    fn encode(&self, out: &mut [u8]);
    /// The entry in `bytes` (exactly `BYTES` long).
    fn decode(bytes: &[u8]) -> Self;
    /// Whether the entry may follow `previous` (entries are strictly increasing).
    fn follows(&self, previous: &Self) -> bool;
    /// Whether the entry points inside a segment whose extent is `bound` (bytes of log for
    /// the offset index, relative end offset for the time index).
    fn within(&self, bound: u64) -> bool;
}

/// A sparse per-segment index: its entries in memory, mirrored to its file.
pub(crate) struct SparseIndex<E> {
    file: IndexFile,
    entries: Vec<E>,
}

impl<E: IndexEntry> SparseIndex<E> {
    /// Loads the file if it exists and is consistent: whole entries, strictly increasing, all
    /// `within(bound)`; `None` means rebuild it from the log.
    pub(crate) fn load(path: &Path, bound: u64) -> Result<Option<Self>, StorageError> {
        let Some(bytes) = read_all(path)? else {
            return Ok(None);
        };
        if bytes.len() % E::BYTES != 0 {
            return Ok(None);
        }
        let mut entries: Vec<E> = Vec::with_capacity(bytes.len() / E::BYTES);
        for chunk in bytes.chunks_exact(E::BYTES) {
            let entry = E::decode(chunk);
            let increasing = entries
                .last()
                .is_none_or(|previous| entry.follows(previous));
            if !increasing || !entry.within(bound) {
                return Ok(None);
            }
            entries.push(entry);
        }
        Ok(Some(SparseIndex {
            file: IndexFile::open(path, open_rw(path)?),
            entries,
        }))
    }

    /// Writes a fresh file holding exactly `entries`.
    pub(crate) fn create(path: &Path, entries: Vec<E>) -> Result<Self, StorageError> {
        let mut bytes = vec![0u8; entries.len() * E::BYTES];
        for (entry, out) in entries.iter().zip(bytes.chunks_exact_mut(E::BYTES)) {
            entry.encode(out);
        }
        Ok(SparseIndex {
            file: IndexFile::open(path, rewrite(path, &bytes)?),
            entries,
        })
    }

    /// Appends one entry to memory and file.
    fn push(&mut self, entry: E) -> Result<(), StorageError> {
        // Every entry type is at most 16 bytes (8 and 12).
        let mut bytes = [0u8; 16];
        let bytes = &mut bytes[..E::BYTES];
        entry.encode(bytes);
        let at = (self.entries.len() * E::BYTES) as u64;
        self.file.write_at(bytes, at)?;
        self.entries.push(entry);
        Ok(())
    }

    /// The second field of the last entry whose first field passes `below`, or 0: where a scan
    /// may start.
    fn floor(&self, below: impl Fn(&E) -> bool, field: impl Fn(&E) -> u32) -> u32 {
        let i = self.entries.partition_point(below);
        if i == 0 {
            0
        } else {
            field(&self.entries[i - 1])
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

/// An offset index entry: `(relative offset, byte position)` of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetEntry(pub u32, pub u32);

impl IndexEntry for OffsetEntry {
    const BYTES: usize = 8;

    fn encode(&self, out: &mut [u8]) {
        out[..4].copy_from_slice(&self.0.to_be_bytes());
        out[4..8].copy_from_slice(&self.1.to_be_bytes());
    }

    fn decode(bytes: &[u8]) -> Self {
        OffsetEntry(
            u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
        )
    }

    fn follows(&self, previous: &Self) -> bool {
        self.0 > previous.0 && self.1 > previous.1
    }

    fn within(&self, log_bytes: u64) -> bool {
        u64::from(self.1) < log_bytes
    }
}

/// A time index entry: `(largest max timestamp so far, relative offset of the batch holding
/// it)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry(pub i64, pub u32);

impl IndexEntry for TimeEntry {
    const BYTES: usize = 12;

    fn encode(&self, out: &mut [u8]) {
        out[..8].copy_from_slice(&self.0.to_be_bytes());
        out[8..12].copy_from_slice(&self.1.to_be_bytes());
    }

    fn decode(bytes: &[u8]) -> Self {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&bytes[..8]);
        TimeEntry(
            i64::from_be_bytes(ts),
            u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]),
        )
    }

    fn follows(&self, previous: &Self) -> bool {
        self.0 > previous.0 && self.1 >= previous.1
    }

    fn within(&self, rel_end: u64) -> bool {
        u64::from(self.1) < rel_end
    }
}

/// Sparse map from batch base offset to file position within one segment.
pub(crate) type OffsetIndex = SparseIndex<OffsetEntry>;

/// Sparse, monotonic map from max timestamp to relative offset within one segment.
pub(crate) type TimeIndex = SparseIndex<TimeEntry>;

impl OffsetIndex {
    /// Appends the position of the batch at relative offset `rel`.
    pub(crate) fn append(&mut self, rel: u32, pos: u32) -> Result<(), StorageError> {
        self.push(OffsetEntry(rel, pos))
    }

    /// The position of the last indexed batch whose relative base offset is <= `rel` (or 0).
    pub(crate) fn floor_position(&self, rel: u32) -> u32 {
        self.floor(|e| e.0 <= rel, |e| e.1)
    }
}

impl TimeIndex {
    /// Appends `(ts, rel)` if `ts` is larger than the last entry's timestamp.
    pub(crate) fn maybe_append(&mut self, ts: i64, rel: u32) -> Result<(), StorageError> {
        if self.entries.last().is_some_and(|e| ts <= e.0) {
            return Ok(());
        }
        self.push(TimeEntry(ts, rel))
    }

    /// The last entry, i.e. the segment's largest timestamp once it is closed.
    pub(crate) fn last(&self) -> Option<(i64, u32)> {
        self.entries.last().map(|e| (e.0, e.1))
    }

    /// The relative offset to start scanning from when looking for the first batch whose
    /// maxTimestamp >= `ts`: the last entry whose timestamp is below `ts` (every batch up to it
    /// is below `ts`), or 0.
    pub(crate) fn scan_start(&self, ts: i64) -> u32 {
        self.floor(|e| e.0 < ts, |e| e.1)
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
        assert_eq!(
            again.entries,
            vec![OffsetEntry(5, 100), OffsetEntry(9, 300)]
        );
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
        assert_eq!(idx.entries, vec![TimeEntry(10, 0), TimeEntry(20, 4)]);
        assert_eq!(idx.scan_start(15), 0);
        assert_eq!(idx.scan_start(25), 4);
        assert_eq!(
            TimeIndex::load(&path, 5).unwrap().unwrap().entries,
            idx.entries
        );
    }
}
