//! What Kafka's log validator checks of a produced batch's records before it is appended: that
//! the records are exactly the `recordsCount` the header announces (decompressed within a bound),
//! and that CreateTime timestamps lie within `message.timestamp.before.max.ms` /
//! `message.timestamp.after.max.ms` of the broker's clock. A batch that lies about its count
//! would make offsets jump and poison consumers; one stamped far in the future would keep its
//! segment from ever expiring; both are refused before anything is written. A topic whose
//! `cleanup.policy` holds `compact` refuses records without a key (compaction keeps the newest
//! record per key, so a keyless one has nothing to be kept by): INVALID_RECORD naming each such
//! record (KIP-467's `record_errors`), as Kafka's `LogValidator` does.

use bytes::Bytes;
use causeway_protocol::records::{self, Codec, RecordsError};
use causeway_storage::{BatchHeader, LogConfig, TimestampType, BATCH_HEADER_BYTES};
use kafka_protocol::messages::produce_response::BatchIndexAndErrorMessage;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::records::DECOMPRESSED_BATCH_MAX_BYTES;

/// Why a partition's produced batches were refused: the Kafka error code and, for a refusal of
/// particular records (KIP-467, Produce v8+), those records and a message for the partition.
#[derive(Debug, Default)]
pub struct Refusal {
    /// The partition's error code.
    pub code: i16,
    /// Each refused record's index in its batch, with why.
    pub record_errors: Vec<BatchIndexAndErrorMessage>,
    /// The partition's `error_message`.
    pub message: Option<StrBytes>,
}

impl From<i16> for Refusal {
    fn from(code: i16) -> Self {
        Refusal {
            code,
            ..Refusal::default()
        }
    }
}

/// Checks one produced batch (already split and CRC-checked) for partition `partition` of
/// `topic`; the error is the partition's refusal.
pub fn check_produced(
    header: &BatchHeader,
    batch: &Bytes,
    config: &LogConfig,
    now_ms: i64,
    topic: &str,
    partition: i32,
) -> Result<(), Refusal> {
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
            return Err(ResponseError::InvalidTimestamp.code().into());
        }
    }
    if config.cleanup_compact && summary.first_keyless.is_some() && !header.is_control() {
        return Err(keyless_refusal(
            codec,
            &section,
            header.records_count,
            topic,
            partition,
        ));
    }
    Ok(())
}

/// The refusal of a batch for a compacted topic holding records without a key: INVALID_RECORD
/// with every keyless record's index (at most the batch's record count, which validation bounds
/// by its bytes) and Kafka's messages.
fn keyless_refusal(
    codec: Codec,
    section: &Bytes,
    count: i32,
    topic: &str,
    partition: i32,
) -> Refusal {
    let reason = format!(
        "Compacted topic cannot accept message without key in topic partition {topic}-{partition}."
    );
    // The batch was just validated, so this second walk does not fail; if it did, the batch is
    // refused all the same, without the list.
    let keyless = records::keyless_records(codec, section, count, DECOMPRESSED_BATCH_MAX_BYTES)
        .unwrap_or_default();
    let shown: Vec<String> = keyless
        .iter()
        .take(3)
        .map(|index| format!("RecordError(batchIndex={index}, message='{reason}')"))
        .collect();
    // Kafka's text for a refusal of records (`LogValidator.processRecordErrors`).
    let message = format!(
        "One or more records have been rejected due to {} record errors in total, and only showing the first three errors at most: [{}]",
        keyless.len(),
        shown.join(", ")
    );
    let reason = StrBytes::from_string(reason);
    Refusal {
        code: ResponseError::InvalidRecord.code(),
        record_errors: keyless
            .into_iter()
            .map(|index| {
                BatchIndexAndErrorMessage::default()
                    .with_batch_index(index)
                    .with_batch_index_error_message(Some(reason.clone()))
            })
            .collect(),
        message: Some(StrBytes::from_string(message)),
    }
}
