//! What Kafka's log validator checks of a produced batch's records before it is appended: that
//! the records are exactly the `recordsCount` the header announces (decompressed within a bound),
//! and that CreateTime timestamps lie within `message.timestamp.before.max.ms` /
//! `message.timestamp.after.max.ms` of the broker's clock. A batch that lies about its count
//! would make offsets jump and poison consumers; one stamped far in the future would keep its
//! segment from ever expiring; both are refused before anything is written.

use bytes::Bytes;
use causeway_protocol::records::{self, Codec, RecordsError};
use causeway_storage::{BatchHeader, LogConfig, TimestampType, BATCH_HEADER_BYTES};
use kafka_protocol::ResponseError;

use super::records::DECOMPRESSED_BATCH_MAX_BYTES;

/// Checks one produced batch (already split and CRC-checked); the error is the partition's
/// Kafka error code.
pub fn check_produced(
    header: &BatchHeader,
    batch: &Bytes,
    config: &LogConfig,
    now_ms: i64,
) -> Result<(), i16> {
    let codec = Codec::from_attributes(header.attributes)
        .map_err(|_| ResponseError::CorruptMessage.code())?;
    let section = batch.slice(BATCH_HEADER_BYTES.min(batch.len())..);
    let summary = records::validate(
        codec,
        &section,
        header.records_count,
        DECOMPRESSED_BATCH_MAX_BYTES,
    )
    .map_err(|error| {
        tracing::debug!(%error, "produced batch refused");
        match error {
            RecordsError::TooLarge { .. } => ResponseError::MessageTooLarge.code(),
            _ => ResponseError::CorruptMessage.code(),
        }
    })?;
    if config.timestamp_type == TimestampType::CreateTime && !header.is_control() {
        let earliest = now_ms.saturating_sub(config.timestamp_before_max_ms);
        let latest = now_ms.saturating_add(config.timestamp_after_max_ms);
        let within = |timestamp: i64| (earliest..=latest).contains(&timestamp);
        let first = header
            .base_timestamp
            .saturating_add(summary.timestamp_delta_min);
        let last = header
            .base_timestamp
            .saturating_add(summary.timestamp_delta_max);
        if !(within(first) && within(last) && within(header.max_timestamp)) {
            return Err(ResponseError::InvalidTimestamp.code());
        }
    }
    Ok(())
}
