//! A read-only view over Kafka record batch v2 headers, validation of produced `records`, and the
//! two in-place edits the broker makes (offset assignment and LogAppendTime stamping).
//!
//! Header layout (61 bytes, all big-endian): baseOffset i64 @0, batchLength i32 @8,
//! partitionLeaderEpoch i32 @12, magic i8 @16, crc u32 @17 (CRC-32C over bytes 21..end),
//! attributes i16 @21, lastOffsetDelta i32 @23, baseTimestamp i64 @27, maxTimestamp i64 @35,
//! producerId i64 @43, producerEpoch i16 @51, baseSequence i32 @53, recordsCount i32 @57.
//! Records after the header stay opaque (and compressed if the producer compressed them).

use std::ops::Range;

use bytes::Bytes;

/// Size of the fixed v2 batch header; every valid batch is at least this long.
pub const BATCH_HEADER_BYTES: usize = 61;

/// Bytes before `batchLength` counts (baseOffset + batchLength itself).
pub(crate) const LOG_OVERHEAD_BYTES: usize = 12;
const MAGIC_OFFSET: usize = 16;
const CRC_OFFSET: usize = 17;
const ATTRIBUTES_OFFSET: usize = 21;
const MAX_TIMESTAMP_OFFSET: usize = 35;
/// Attributes bits 0-2: the compression codec.
const CODEC_BITS: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;
/// Attribute bit 7, unused by Kafka (clients ignore bits 7-15): set on batches the log cleaner
/// wrote, so a record's `causeway.row` header is trusted only there. Producers cannot set it.
const CLEANED_BIT: i16 = 0x80;

/// The decoded fixed header of one record batch (v2), so storage can reason about offsets,
/// timestamps and sizes without decoding records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// First offset in the batch (assigned by the broker).
    pub base_offset: i64,
    /// Bytes after the batchLength field.
    pub batch_length: i32,
    /// Leader epoch stamped by the broker.
    pub partition_leader_epoch: i32,
    /// Message format version; only 2 is accepted.
    pub magic: i8,
    /// CRC-32C over bytes 21..end.
    pub crc: u32,
    /// Compression, timestamp type, transactional and control bits.
    pub attributes: i16,
    /// Offset of the last record relative to `base_offset`.
    pub last_offset_delta: i32,
    /// Timestamp of the first record.
    pub base_timestamp: i64,
    /// Largest record timestamp (or the LogAppendTime).
    pub max_timestamp: i64,
    /// Idempotent/transactional producer id, -1 if none.
    pub producer_id: i64,
    /// Producer epoch, -1 if none.
    pub producer_epoch: i16,
    /// Sequence of the first record, -1 if none.
    pub base_sequence: i32,
    /// Number of records in the batch.
    pub records_count: i32,
}

/// Why a batch was rejected; maps to Kafka's CORRUPT_MESSAGE, UNSUPPORTED_VERSION, MESSAGE_TOO_LARGE.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BatchError {
    /// Message format v0/v1, which we do not store.
    #[error("unsupported record batch magic {0}")]
    UnsupportedMagic(i8),
    /// Bad length, truncation, CRC mismatch or inconsistent counts.
    #[error("corrupt record batch: {0}")]
    Corrupt(String),
    /// The batch is larger than max.message.bytes allows.
    #[error("record batch of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Total batch size in bytes.
        size: usize,
        /// The configured limit.
        max: usize,
    },
}

fn be_i64(buf: &[u8], at: usize) -> i64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    i64::from_be_bytes(b)
}

fn be_i32(buf: &[u8], at: usize) -> i32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    i32::from_be_bytes(b)
}

fn be_i16(buf: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([buf[at], buf[at + 1]])
}

impl BatchHeader {
    /// Parses the 61-byte header (no CRC check); callers that need validation use `split_batches`.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        if buf.len() < BATCH_HEADER_BYTES {
            return Err(BatchError::Corrupt(format!(
                "header needs {BATCH_HEADER_BYTES} bytes, got {}",
                buf.len()
            )));
        }
        // Bounds were checked above, so the fixed-offset reads below cannot go out of range.
        Ok(BatchHeader {
            base_offset: be_i64(buf, 0),
            batch_length: be_i32(buf, 8),
            partition_leader_epoch: be_i32(buf, 12),
            magic: buf[MAGIC_OFFSET] as i8,
            crc: be_i32(buf, CRC_OFFSET) as u32,
            attributes: be_i16(buf, ATTRIBUTES_OFFSET),
            last_offset_delta: be_i32(buf, 23),
            base_timestamp: be_i64(buf, 27),
            max_timestamp: be_i64(buf, MAX_TIMESTAMP_OFFSET),
            producer_id: be_i64(buf, 43),
            producer_epoch: be_i16(buf, 51),
            base_sequence: be_i32(buf, 53),
            records_count: be_i32(buf, 57),
        })
    }

    /// Size of the whole batch on disk (the 12-byte log overhead plus `batch_length`).
    pub fn total_bytes(&self) -> usize {
        LOG_OVERHEAD_BYTES + self.batch_length.max(0) as usize
    }

    /// The offset of the batch's last record.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// Compression codec id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression_codec(&self) -> u8 {
        (self.attributes & CODEC_BITS) as u8
    }

    /// Whether the batch belongs to a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    /// Whether the batch holds a control record (commit/abort marker).
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }

    /// Whether the log cleaner wrote the batch (see `mark_cleaned`): only such batches carry
    /// merged table rows that readers may trust.
    pub fn is_cleaned(&self) -> bool {
        self.attributes & CLEANED_BIT != 0
    }
}

/// Marks a batch the log cleaner built (attribute bit 7) and recomputes its CRC, so tables can
/// tell merged rows written by the cleaner from records a producer sent. A buffer shorter than a
/// header is left unchanged.
pub fn mark_cleaned(batch: &mut [u8]) {
    if batch.len() < BATCH_HEADER_BYTES {
        return;
    }
    let attributes = be_i16(batch, ATTRIBUTES_OFFSET) | CLEANED_BIT;
    batch[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..]);
    batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Checks one batch that starts at `buf[0]` and is exactly `buf.len()` long: magic, CRC, counts.
pub(crate) fn validate_batch(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(buf)?;
    if header.magic != 2 {
        return Err(BatchError::Corrupt(format!("magic {}", header.magic)));
    }
    if header.total_bytes() != buf.len() {
        return Err(BatchError::Corrupt(format!(
            "batch length {} does not match {} bytes",
            header.total_bytes(),
            buf.len()
        )));
    }
    let computed = crc32c::crc32c(&buf[ATTRIBUTES_OFFSET..]);
    if computed != header.crc {
        return Err(BatchError::Corrupt(format!(
            "CRC mismatch: stored {:#010x}, computed {computed:#010x}",
            header.crc
        )));
    }
    if header.records_count < 0 || header.last_offset_delta < 0 {
        return Err(BatchError::Corrupt(format!(
            "negative counts: recordsCount {}, lastOffsetDelta {}",
            header.records_count, header.last_offset_delta
        )));
    }
    if i64::from(header.records_count) != i64::from(header.last_offset_delta) + 1 {
        return Err(BatchError::Corrupt(format!(
            "recordsCount {} != lastOffsetDelta {} + 1",
            header.records_count, header.last_offset_delta
        )));
    }
    Ok(header)
}

/// The whole batches at the start of `records`, in order, each with its header: the one walk
/// over a read's batches (Fetch trimming, table chunks, replication reads). It stops at the
/// first batch whose header does not parse or that runs past the end, so a read cut inside a
/// batch yields only the batches before the cut; [`WholeBatches::consumed`] says how far it got.
pub fn whole_batches(records: &Bytes) -> WholeBatches<'_> {
    WholeBatches {
        records,
        position: 0,
    }
}

/// Iterator of [`whole_batches`].
#[derive(Debug)]
pub struct WholeBatches<'a> {
    records: &'a Bytes,
    position: usize,
}

impl WholeBatches<'_> {
    /// Bytes of the batches yielded so far.
    pub fn consumed(&self) -> usize {
        self.position
    }
}

impl Iterator for WholeBatches<'_> {
    type Item = (BatchHeader, Bytes);

    fn next(&mut self) -> Option<(BatchHeader, Bytes)> {
        let rest = self.records.get(self.position..)?;
        let header = BatchHeader::parse(rest).ok()?;
        let end = self.position.checked_add(header.total_bytes())?;
        if header.total_bytes() < BATCH_HEADER_BYTES || end > self.records.len() {
            return None;
        }
        let batch = self.records.slice(self.position..end);
        self.position = end;
        Some((header, batch))
    }
}

/// Splits a Produce partition's `records` bytes into validated batches (magic==2, length within
/// the buffer, CRC-32C ok, count consistent), so the log only ever stores well-formed batches.
/// Magic sits at byte 16 in every Kafka message format, so it is checked first and v0/v1 give
/// `UnsupportedMagic`. A batch longer than `max_batch_bytes` is `TooLarge`; empty input is `Corrupt`.
pub fn split_batches(
    records: &[u8],
    max_batch_bytes: usize,
) -> Result<Vec<Range<usize>>, BatchError> {
    if records.is_empty() {
        return Err(BatchError::Corrupt("empty records".into()));
    }
    let mut ranges = Vec::new();
    let mut pos = 0usize;
    while pos < records.len() {
        let rest = &records[pos..];
        if rest.len() > MAGIC_OFFSET {
            let magic = rest[MAGIC_OFFSET] as i8;
            if magic == 0 || magic == 1 {
                return Err(BatchError::UnsupportedMagic(magic));
            }
        }
        if rest.len() < BATCH_HEADER_BYTES {
            return Err(BatchError::Corrupt(format!(
                "truncated batch header at byte {pos}: {} bytes left",
                rest.len()
            )));
        }
        let batch_length = be_i32(rest, 8);
        if batch_length < (BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES) as i32 {
            return Err(BatchError::Corrupt(format!(
                "batch length {batch_length} too small"
            )));
        }
        let total = LOG_OVERHEAD_BYTES + batch_length as usize;
        if total > max_batch_bytes {
            return Err(BatchError::TooLarge {
                size: total,
                max: max_batch_bytes,
            });
        }
        if total > rest.len() {
            return Err(BatchError::Corrupt(format!(
                "batch at byte {pos} needs {total} bytes, {} left",
                rest.len()
            )));
        }
        validate_batch(&rest[..total])?;
        ranges.push(pos..pos + total);
        pos += total;
    }
    Ok(ranges)
}

/// Writes baseOffset and partitionLeaderEpoch in place; both lie outside the CRC so nothing is
/// re-encoded. A buffer shorter than a header is left unchanged.
pub fn assign_offsets(batch: &mut [u8], base_offset: i64, partition_leader_epoch: i32) {
    if batch.len() < BATCH_HEADER_BYTES {
        return;
    }
    batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
    batch[12..16].copy_from_slice(&partition_leader_epoch.to_be_bytes());
}

/// For message.timestamp.type=LogAppendTime: sets the timestampType attribute bit (bit 3) and
/// maxTimestamp in `header`, the batch's first [`BATCH_HEADER_BYTES`] bytes, then recomputes
/// the CRC over it and `records`, the rest of the batch, which is read, not changed (the log
/// writes a batch as a patched copy of its header and the received bytes after it). A header
/// shorter than [`BATCH_HEADER_BYTES`] is left unchanged.
pub fn stamp_log_append_time(header: &mut [u8], records: &[u8], timestamp_ms: i64) {
    if header.len() < BATCH_HEADER_BYTES {
        return;
    }
    let attributes = be_i16(header, ATTRIBUTES_OFFSET) | TIMESTAMP_TYPE_BIT;
    header[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
    header[MAX_TIMESTAMP_OFFSET..MAX_TIMESTAMP_OFFSET + 8]
        .copy_from_slice(&timestamp_ms.to_be_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&header[ATTRIBUTES_OFFSET..]), records);
    header[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

/// The batch `batch` with its records section replaced by `records`, written with codec `codec_id`
/// (attributes bits 0-2; the other attributes kept): batchLength and the CRC are recomputed, every
/// other header field is kept. For the broker's recompression to a topic's `compression.type`.
/// `batch` must hold at least a header; a shorter one is returned unchanged.
pub fn with_records(batch: &[u8], codec_id: i16, records: &[u8]) -> Vec<u8> {
    let Some(header) = batch.get(..BATCH_HEADER_BYTES) else {
        return batch.to_vec();
    };
    let mut out = Vec::with_capacity(BATCH_HEADER_BYTES + records.len());
    out.extend_from_slice(header);
    out.extend_from_slice(records);
    let length = i32::try_from(out.len() - LOG_OVERHEAD_BYTES).unwrap_or(i32::MAX);
    out[8..12].copy_from_slice(&length.to_be_bytes());
    let attributes = (be_i16(&out, ATTRIBUTES_OFFSET) & !CODEC_BITS) | (codec_id & CODEC_BITS);
    out[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&out[ATTRIBUTES_OFFSET..]);
    out[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    out
}

/// Test helper shared by the crate's unit tests: a well-formed v2 batch with `count` records.
#[cfg(test)]
pub(crate) fn test_batch(count: i32, max_timestamp: i64, payload_bytes: usize) -> Vec<u8> {
    let mut b = vec![0u8; BATCH_HEADER_BYTES + payload_bytes];
    let len = (b.len() - LOG_OVERHEAD_BYTES) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    b[12..16].copy_from_slice(&(-1i32).to_be_bytes());
    b[16] = 2;
    b[23..27].copy_from_slice(&(count - 1).to_be_bytes());
    b[27..35].copy_from_slice(&max_timestamp.to_be_bytes());
    b[35..43].copy_from_slice(&max_timestamp.to_be_bytes());
    b[43..51].copy_from_slice(&(-1i64).to_be_bytes());
    b[51..53].copy_from_slice(&(-1i16).to_be_bytes());
    b[53..57].copy_from_slice(&(-1i32).to_be_bytes());
    b[57..61].copy_from_slice(&count.to_be_bytes());
    for (i, byte) in b[BATCH_HEADER_BYTES..].iter_mut().enumerate() {
        *byte = (i % 251) as u8;
    }
    let crc = crc32c::crc32c(&b[ATTRIBUTES_OFFSET..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_batches_stop_before_a_cut_batch() {
        let (first, second) = (test_batch(3, 10, 20), test_batch(1, 11, 5));
        let mut records = first.clone();
        records.extend_from_slice(&second);
        let third = test_batch(2, 12, 30);
        records.extend_from_slice(&third[..third.len() - 1]);
        let records = Bytes::from(records);
        let mut walk = whole_batches(&records);
        let batches: Vec<(BatchHeader, Bytes)> = walk.by_ref().collect();
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].1.as_ref(), first.as_slice());
        assert_eq!(batches[1].1.as_ref(), second.as_slice());
        assert_eq!(walk.consumed(), first.len() + second.len());
        assert_eq!(whole_batches(&Bytes::from_static(&[0xff; 12])).count(), 0);
    }

    #[test]
    fn concatenated_batches_are_split_at_their_boundaries() {
        let mut records = test_batch(3, 10, 20);
        let second = test_batch(1, 11, 5);
        records.extend_from_slice(&second);
        let ranges = split_batches(&records, 1 << 20).unwrap();
        assert_eq!(ranges, vec![0..81, 81..81 + 66]);
    }

    #[test]
    fn a_batch_rebuilt_around_new_records_keeps_its_header_and_validates() {
        let mut original = test_batch(3, 10, 20);
        let transactional_gzip = TRANSACTIONAL_BIT | 1;
        original[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2]
            .copy_from_slice(&transactional_gzip.to_be_bytes());
        let rebuilt = with_records(&original, 4, &[7; 45]);
        let header = validate_batch(&rebuilt).unwrap();
        let before = BatchHeader::parse(&original).unwrap();
        assert_eq!(header.compression_codec(), 4);
        assert!(header.is_transactional());
        assert_eq!(rebuilt.len(), BATCH_HEADER_BYTES + 45);
        assert_eq!(
            (
                header.records_count,
                header.max_timestamp,
                header.base_sequence
            ),
            (
                before.records_count,
                before.max_timestamp,
                before.base_sequence
            )
        );
        assert_eq!(&rebuilt[BATCH_HEADER_BYTES..], &[7; 45]);
    }

    #[test]
    fn wrong_crc_is_rejected_as_corrupt() {
        let mut b = test_batch(1, 0, 10);
        b[70] ^= 1;
        assert!(matches!(
            split_batches(&b, 1 << 20),
            Err(BatchError::Corrupt(_))
        ));
    }

    #[test]
    fn legacy_magics_are_unsupported() {
        for magic in [0u8, 1] {
            let mut b = test_batch(1, 0, 10);
            b[16] = magic;
            assert_eq!(
                split_batches(&b, 1 << 20),
                Err(BatchError::UnsupportedMagic(magic as i8))
            );
        }
    }

    #[test]
    fn truncated_batch_is_corrupt() {
        let b = test_batch(2, 0, 30);
        assert!(matches!(
            split_batches(&b[..b.len() - 1], 1 << 20),
            Err(BatchError::Corrupt(_))
        ));
        assert!(matches!(
            split_batches(&b[..40], 1 << 20),
            Err(BatchError::Corrupt(_))
        ));
        assert!(matches!(
            split_batches(&[], 1 << 20),
            Err(BatchError::Corrupt(_))
        ));
    }

    #[test]
    fn batch_over_the_limit_is_too_large() {
        let b = test_batch(1, 0, 100);
        assert_eq!(
            split_batches(&b, 100),
            Err(BatchError::TooLarge {
                size: 161,
                max: 100
            })
        );
    }

    #[test]
    fn inconsistent_record_count_is_corrupt() {
        let mut b = test_batch(2, 0, 0);
        b[57..61].copy_from_slice(&5i32.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            split_batches(&b, 1 << 20),
            Err(BatchError::Corrupt(_))
        ));
    }

    #[test]
    fn assigning_offsets_keeps_the_crc_valid() {
        let mut b = test_batch(4, 0, 8);
        assign_offsets(&mut b, 1234, 7);
        let h = validate_batch(&b).unwrap();
        assert_eq!(
            (h.base_offset, h.partition_leader_epoch, h.last_offset()),
            (1234, 7, 1237)
        );
    }

    #[test]
    fn marking_a_batch_cleaned_sets_bit_7_and_keeps_crc_valid() {
        let mut b = test_batch(1, 5, 8);
        assert!(!BatchHeader::parse(&b).unwrap().is_cleaned());
        mark_cleaned(&mut b);
        let h = validate_batch(&b).unwrap();
        assert!(h.is_cleaned() && !h.is_control() && !h.is_transactional());
    }

    #[test]
    fn log_append_time_stamp_sets_bit_and_keeps_crc_valid() {
        let mut b = test_batch(3, 5, 8);
        let (header, records) = b.split_at_mut(BATCH_HEADER_BYTES);
        stamp_log_append_time(header, records, 99);
        let h = validate_batch(&b).unwrap();
        assert_eq!(h.max_timestamp, 99);
        assert_eq!(h.attributes & 0x08, 0x08);
    }
}
