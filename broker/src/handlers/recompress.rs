//! A topic's `compression.type`, as Kafka's broker applies it: a topic that names a codec stores
//! every produced batch in that codec whatever its producers sent (`producer`, the default, keeps
//! each batch as sent). A batch already in the topic's codec is stored byte for byte, as Kafka
//! does; any other is decompressed (within the same bound as validation) and compressed again,
//! keeping every header field but the codec, the length and the CRC. Only produced batches are
//! recompressed: batches replicated from another region are stored as their origin wrote them,
//! so every region holds the same bytes whatever its own `compression.type`.

use bytes::Bytes;
use causeway_protocol::records::{self, Codec, RecordsError};
use causeway_storage::{with_records, BatchHeader, LogConfig, BATCH_HEADER_BYTES};
use kafka_protocol::ResponseError;

use super::record_checks::Refusal;
use super::records::DECOMPRESSED_BATCH_MAX_BYTES;

/// The batch as the topic stores it: `None` when it is stored as sent, or the recompressed batch.
/// A recompressed batch larger than `max.message.bytes` is refused with MESSAGE_TOO_LARGE, as
/// Kafka refuses it after recompressing.
pub fn recompressed(
    header: &BatchHeader,
    batch: &Bytes,
    config: &LogConfig,
) -> Result<Option<Vec<u8>>, Refusal> {
    let Some(target_id) = config.compression.codec_id() else {
        return Ok(None);
    };
    let source = Codec::from_attributes(header.attributes)
        .map_err(|_| ResponseError::CorruptMessage.code())?;
    let target =
        Codec::from_attributes(target_id).map_err(|_| ResponseError::UnknownServerError.code())?;
    if source == target || header.is_control() {
        return Ok(None);
    }
    let section = batch.slice(BATCH_HEADER_BYTES.min(batch.len())..);
    let plain =
        records::decompress(source, &section, DECOMPRESSED_BATCH_MAX_BYTES).map_err(|error| {
            match error {
                RecordsError::TooLarge { .. } => ResponseError::MessageTooLarge.code(),
                _ => ResponseError::CorruptMessage.code(),
            }
        })?;
    let compressed = records::compress(target, &plain).map_err(|error| {
        tracing::warn!(%error, codec = ?target, "recompressing a produced batch failed");
        ResponseError::UnknownServerError.code()
    })?;
    let stored = with_records(batch, target.id(), &compressed);
    if stored.len() > config.max_message_bytes as usize {
        return Err(ResponseError::MessageTooLarge.code().into());
    }
    Ok(Some(stored))
}
