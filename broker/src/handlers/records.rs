//! Looking inside one stored batch when an answer needs a record, not a batch: ListOffsets by
//! timestamp wants the first record at or after a time, the max-timestamp query wants the record
//! holding it, and tables want every record's key, value and headers. Every such read goes
//! through [`decode_batch`], which bounds decompression and every count (see
//! `causeway_protocol::records`).

use bytes::Bytes;
use causeway_protocol::records::{self, Codec, Record, RecordsError};
use causeway_storage::{BatchHeader, BATCH_HEADER_BYTES};

/// Attribute bit saying the batch carries the broker's append time for every record.
const LOG_APPEND_TIME_BIT: i16 = 1 << 3;

/// Most bytes one batch may decompress to, wherever the broker decodes records (produce
/// validation, ListOffsets, tables, the change feed, the cleaner). Larger batches are refused on
/// produce and skipped, counted and logged by tables, so a compression bomb costs at most this
/// much memory per decoding task and never a crash loop.
pub const DECOMPRESSED_BATCH_MAX_BYTES: usize = 64 << 20;

/// One record of a stored batch, with its absolute offset and effective timestamp.
pub struct StoredRecord {
    /// Offset in the partition.
    pub offset: i64,
    /// The record's timestamp, or the batch's append time for LogAppendTime batches.
    pub timestamp: i64,
    /// Key, value and headers as decoded.
    pub record: Record,
}

/// Why a stored batch's records could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BatchReadError(RecordsError);

impl BatchReadError {
    /// A short label for metrics: an over-limit batch or an undecodable one.
    pub fn reason(&self) -> &'static str {
        match self.0 {
            RecordsError::TooLarge { .. } => "oversized_batch",
            _ => "undecodable_batch",
        }
    }
}

/// Decodes every record of one whole stored batch (header included in `batch`).
pub fn decode_batch(
    header: &BatchHeader,
    batch: &Bytes,
) -> Result<Vec<StoredRecord>, BatchReadError> {
    let codec = Codec::from_attributes(header.attributes).map_err(BatchReadError)?;
    let end = header.total_bytes().min(batch.len());
    let section = batch.slice(BATCH_HEADER_BYTES.min(end)..end);
    let decoded = records::decode_all(
        codec,
        &section,
        header.records_count,
        DECOMPRESSED_BATCH_MAX_BYTES,
    )
    .map_err(BatchReadError)?;
    let log_append_time = header.attributes & LOG_APPEND_TIME_BIT != 0;
    Ok(decoded
        .into_iter()
        .map(|r| StoredRecord {
            offset: header.base_offset + i64::from(r.offset_delta),
            timestamp: if log_append_time {
                header.max_timestamp
            } else {
                header.base_timestamp.saturating_add(r.timestamp_delta)
            },
            record: r,
        })
        .collect())
}

/// `(offset, timestamp)` of every record of a stored batch.
fn record_times(batch: &Bytes) -> Result<Vec<(i64, i64)>, String> {
    let header = BatchHeader::parse(batch).map_err(|e| e.to_string())?;
    Ok(decode_batch(&header, batch)
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|r| (r.offset, r.timestamp))
        .collect())
}

/// The first record of `batch` stamped at or after `timestamp_ms`.
pub fn first_record_at_or_after(
    batch: &Bytes,
    timestamp_ms: i64,
) -> Result<Option<(i64, i64)>, String> {
    Ok(record_times(batch)?
        .into_iter()
        .find(|(_, ts)| *ts >= timestamp_ms))
}

/// The record of `batch` with the largest timestamp (the earliest such record on ties).
pub fn record_with_max_timestamp(batch: &Bytes) -> Result<Option<(i64, i64)>, String> {
    Ok(record_times(batch)?
        .into_iter()
        .fold(None, |best: Option<(i64, i64)>, (offset, ts)| match best {
            Some((_, best_ts)) if best_ts >= ts => best,
            _ => Some((offset, ts)),
        }))
}
