//! Read handles of closed segments' files, at most a bounded number open at once.
//!
//! Only a partition's active segment needs its files open all the time (appends, group commit).
//! A closed segment is read now and then (a consumer behind, a peer catching up, retention,
//! compaction, the scrub); keeping its four files open would make the number of descriptors
//! grow with the data retained, until a restart that opens every segment fails with "too many
//! open files". Closed segments instead ask this process-wide cache for a read handle: the
//! least recently used handle is closed when the cache is full, and a segment that goes away
//! (retention, compaction, topic delete) drops its handles at once so its disk space is freed.
//! Descriptors thus stay under `active segments x 4 + capacity` (the broker sets the capacity
//! from `--max-open-segment-files`).

use std::fs::File;
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use lru::LruCache;

use crate::error::{IoContext, StorageError};
use crate::telemetry;

/// Capacity until the broker sets its own: enough for small deployments and tests.
const DEFAULT_CAPACITY: usize = 4096;

/// Which file of a closed segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum SegmentFile {
    /// The `.log` file of batches.
    Log,
    /// The `.causal` file of causal stamps.
    Causal,
}

/// Identifies one closed segment for as long as it exists (a segment rewritten by compaction is
/// a new one, so a handle to the file it replaced is never served for it).
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct ClosedSegmentKey(u64);

impl ClosedSegmentKey {
    /// A key no other segment of this process has had.
    pub(crate) fn new() -> ClosedSegmentKey {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        ClosedSegmentKey(NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// A read handle of one of the segment's files, opened if the cache does not hold it.
    pub(crate) fn open(&self, file: SegmentFile, path: &Path) -> Result<Arc<File>, StorageError> {
        if let Some(handle) = cache().get(&(self.0, file)) {
            return Ok(Arc::clone(handle));
        }
        // Opened outside the lock; two readers racing both open, and one handle is kept.
        let handle = Arc::new(File::open(path).ctx(|| format!("opening {}", path.display()))?);
        telemetry::segment_file_opened();
        let mut cache = cache();
        cache.put((self.0, file), Arc::clone(&handle));
        telemetry::segment_files_cached(cache.len());
        Ok(handle)
    }
}

impl Drop for ClosedSegmentKey {
    /// The segment is gone (deleted, rewritten, or its partition closed): its handles close
    /// now, not when they would have aged out.
    fn drop(&mut self) {
        let mut cache = cache();
        cache.pop(&(self.0, SegmentFile::Log));
        cache.pop(&(self.0, SegmentFile::Causal));
        telemetry::segment_files_cached(cache.len());
    }
}

type Cache = LruCache<(u64, SegmentFile), Arc<File>>;

fn cache() -> MutexGuard<'static, Cache> {
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    CACHE
        .get_or_init(|| Mutex::new(LruCache::new(capacity_of(DEFAULT_CAPACITY))))
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn capacity_of(files: usize) -> NonZeroUsize {
    NonZeroUsize::new(files).unwrap_or(NonZeroUsize::MIN)
}

/// Sets how many closed-segment files may be open at once (at least one), closing the least
/// recently used handles beyond it.
pub fn set_open_segment_files_max(files: usize) {
    let mut cache = cache();
    cache.resize(capacity_of(files));
    telemetry::segment_files_cached(cache.len());
}
