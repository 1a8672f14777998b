//! The one place storage emits metrics (names are part of the spec; base units, `_total`).

/// Histogram: seconds one group-commit round spent in fsync (all files of the round).
pub const FSYNC_SECONDS: &str = "causeway_storage_fsync_seconds";
/// Counter: group-commit fsync rounds (one round may fsync several files).
pub const FSYNCS_TOTAL: &str = "causeway_storage_fsyncs_total";
/// Counter: bytes cut from segment and causal files by recovery.
pub const RECOVERY_TRUNCATED_BYTES_TOTAL: &str = "causeway_storage_recovery_truncated_bytes_total";
/// Counter: stored batches found damaged (CRC or framing) when read.
pub const CORRUPT_BATCHES_TOTAL: &str = "causeway_storage_corrupt_batches_total";
/// Counter: bytes of closed segments read and checked by the background scrub.
pub const SCRUBBED_BYTES_TOTAL: &str = "causeway_storage_scrubbed_bytes_total";
/// Counter: files of closed segments opened for reading (misses of the open-file cache).
pub const SEGMENT_FILE_OPENS_TOTAL: &str = "causeway_storage_segment_file_opens_total";
/// Gauge: files of closed segments open in the cache now.
pub const SEGMENT_FILES_OPEN: &str = "causeway_storage_segment_files_open";
/// Counter: segments deleted by retention or DeleteRecords.
pub const SEGMENTS_DELETED_TOTAL: &str = "causeway_storage_segments_deleted_total";

/// Records one completed fsync round.
pub(crate) fn fsync_round(seconds: f64) {
    metrics::histogram!(FSYNC_SECONDS).record(seconds);
    metrics::counter!(FSYNCS_TOTAL).increment(1);
}

/// Records bytes truncated by recovery.
pub(crate) fn recovery_truncated(bytes: u64) {
    metrics::counter!(RECOVERY_TRUNCATED_BYTES_TOTAL).increment(bytes);
}

/// Records deleted segments.
pub(crate) fn segments_deleted(count: u64) {
    metrics::counter!(SEGMENTS_DELETED_TOTAL).increment(count);
}

/// Records a stored batch found damaged.
pub(crate) fn corrupt_batch_found() {
    metrics::counter!(CORRUPT_BATCHES_TOTAL).increment(1);
}

/// Records a closed segment's file opened for reading.
pub(crate) fn segment_file_opened() {
    metrics::counter!(SEGMENT_FILE_OPENS_TOTAL).increment(1);
}

/// Records how many closed segments' files the cache holds open.
pub(crate) fn segment_files_cached(files: usize) {
    metrics::gauge!(SEGMENT_FILES_OPEN).set(files as f64);
}

/// Records bytes checked by the scrub.
pub(crate) fn scrubbed(bytes: u64) {
    metrics::counter!(SCRUBBED_BYTES_TOTAL).increment(bytes);
}
