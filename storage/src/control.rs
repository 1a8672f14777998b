//! Transaction control batches: the commit and abort markers the transaction coordinator writes
//! into every partition a transaction touched. A control batch has the transactional and
//! control attribute bits set and holds one record whose key is `version: i16 = 0,
//! type: i16` (0 = abort, 1 = commit) and whose value is `version: i16 = 0,
//! coordinatorEpoch: i32`. They are never compressed, so the key can be read in place.

use crate::batch::{BatchHeader, BATCH_HEADER_BYTES, LOG_OVERHEAD_BYTES};

/// What a control batch ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlType {
    /// The transaction's records are discarded by read_committed consumers.
    Abort,
    /// The transaction's records become visible to read_committed consumers.
    Commit,
}

const ATTRIBUTES_TRANSACTIONAL_CONTROL: i16 = 0x10 | 0x20;
const CONTROL_KEY_VERSION: i16 = 0;
const CONTROL_VALUE_VERSION: i16 = 0;

/// The bytes of one control record (length prefix included), hand-encoded: every varint here
/// is a single zigzag byte.
fn control_record(kind: ControlType, coordinator_epoch: i32) -> Vec<u8> {
    let type_code: i16 = match kind {
        ControlType::Abort => 0,
        ControlType::Commit => 1,
    };
    let mut body = vec![
        0,      // attributes
        0,      // timestampDelta (zigzag 0)
        0,      // offsetDelta (zigzag 0)
        4 << 1, // keyLength 4 (zigzag)
    ];
    body.extend_from_slice(&CONTROL_KEY_VERSION.to_be_bytes());
    body.extend_from_slice(&type_code.to_be_bytes());
    body.push(6 << 1); // valueLength 6 (zigzag)
    body.extend_from_slice(&CONTROL_VALUE_VERSION.to_be_bytes());
    body.extend_from_slice(&coordinator_epoch.to_be_bytes());
    body.push(0); // no headers
    let mut record = vec![(body.len() as u8) << 1];
    record.extend_from_slice(&body);
    record
}

/// A control batch for `producer_id` at `epoch`, stamped `timestamp_ms`; offsets are assigned
/// on append like any batch.
pub fn control_batch(
    kind: ControlType,
    producer_id: i64,
    epoch: i16,
    coordinator_epoch: i32,
    timestamp_ms: i64,
) -> Vec<u8> {
    let record = control_record(kind, coordinator_epoch);
    let mut batch = Vec::with_capacity(BATCH_HEADER_BYTES + record.len());
    let batch_length = (BATCH_HEADER_BYTES + record.len() - LOG_OVERHEAD_BYTES) as i32;
    batch.extend_from_slice(&0i64.to_be_bytes()); // baseOffset, assigned on append
    batch.extend_from_slice(&batch_length.to_be_bytes());
    batch.extend_from_slice(&0i32.to_be_bytes()); // partitionLeaderEpoch
    batch.push(2); // magic
    batch.extend_from_slice(&0u32.to_be_bytes()); // crc, below
    batch.extend_from_slice(&ATTRIBUTES_TRANSACTIONAL_CONTROL.to_be_bytes());
    batch.extend_from_slice(&0i32.to_be_bytes()); // lastOffsetDelta
    batch.extend_from_slice(&timestamp_ms.to_be_bytes()); // baseTimestamp
    batch.extend_from_slice(&timestamp_ms.to_be_bytes()); // maxTimestamp
    batch.extend_from_slice(&producer_id.to_be_bytes());
    batch.extend_from_slice(&epoch.to_be_bytes());
    batch.extend_from_slice(&(-1i32).to_be_bytes()); // baseSequence
    batch.extend_from_slice(&1i32.to_be_bytes()); // recordsCount
    batch.extend_from_slice(&record);
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    batch
}

/// The marker type of a stored control batch; `None` for data batches or an unreadable key.
pub fn control_type(header: &BatchHeader, batch: &[u8]) -> Option<ControlType> {
    if !header.is_control() {
        return None;
    }
    let mut rest = batch.get(BATCH_HEADER_BYTES..)?;
    let _length = read_varint(&mut rest)?;
    rest = rest.get(1..)?; // attributes
    let _timestamp_delta = read_varint(&mut rest)?;
    let _offset_delta = read_varint(&mut rest)?;
    let key_length = read_varint(&mut rest)?;
    if key_length < 4 {
        return None;
    }
    let key = rest.get(..4)?;
    match i16::from_be_bytes([key[2], key[3]]) {
        0 => Some(ControlType::Abort),
        1 => Some(ControlType::Commit),
        _ => None,
    }
}

/// Reads one zigzag varint (up to 10 bytes).
fn read_varint(input: &mut &[u8]) -> Option<i64> {
    let mut value: u64 = 0;
    for (i, byte) in input.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *input = &input[i + 1..];
            return Some((value >> 1) as i64 ^ -((value & 1) as i64));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::split_batches;

    #[test]
    fn control_batches_validate_and_carry_their_type() {
        for kind in [ControlType::Abort, ControlType::Commit] {
            let batch = control_batch(kind, 77, 3, 0, 1_000);
            let whole = split_batches(&batch, 1 << 20).unwrap();
            assert_eq!(whole.len(), 1);
            assert_eq!(whole[0], 0..batch.len());
            let header = BatchHeader::parse(&batch).unwrap();
            assert!(header.is_control() && header.is_transactional());
            assert_eq!((header.producer_id, header.producer_epoch), (77, 3));
            assert_eq!(control_type(&header, &batch), Some(kind));
        }
    }

    #[test]
    fn data_batches_have_no_control_type() {
        let batch = crate::batch::test_batch(1, 0, 10);
        let header = BatchHeader::parse(&batch).unwrap();
        assert_eq!(control_type(&header, &batch), None);
    }

    #[test]
    fn control_records_decode_with_kafka_protocol_layout() {
        let record = control_record(ControlType::Commit, 5);
        let mut rest = &record[..];
        assert_eq!(read_varint(&mut rest), Some(16));
        assert_eq!(rest.len(), 16);
    }
}
