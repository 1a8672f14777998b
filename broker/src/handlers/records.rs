//! Looking inside one stored batch when an answer needs a record, not a batch: ListOffsets by
//! timestamp wants the first record at or after a time, and the max-timestamp query wants the
//! record holding it. The batch is decoded (and decompressed) only for these queries.

use bytes::Bytes;
use causeway_storage::BatchHeader;
use kafka_protocol::records::RecordBatchDecoder;

/// Attribute bit saying the batch carries the broker's append time for every record.
const LOG_APPEND_TIME_BIT: i16 = 1 << 3;

/// `(offset, timestamp)` of every record of a stored batch.
fn record_times(batch: &Bytes) -> Result<Vec<(i64, i64)>, String> {
    let header = BatchHeader::parse(batch).map_err(|e| e.to_string())?;
    let mut buf = batch.clone();
    let set = RecordBatchDecoder::decode(&mut buf).map_err(|e| e.to_string())?;
    let log_append_time = header.attributes & LOG_APPEND_TIME_BIT != 0;
    Ok(set
        .records
        .iter()
        .map(|r| {
            let timestamp = if log_append_time {
                header.max_timestamp
            } else {
                r.timestamp
            };
            (r.offset, timestamp)
        })
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
