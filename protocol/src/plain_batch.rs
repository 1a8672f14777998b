//! One v2 record batch of plain records (no producer id, no headers, no compression), as the
//! broker writes its own records and the `causeway produce` CLI sends them.

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// Encodes `records` (key, value; a `None` value is a tombstone) as one batch stamped
/// `timestamp_ms`, offsets from 0.
pub fn encode_plain_batch(
    records: &[(Option<Bytes>, Option<Bytes>)],
    timestamp_ms: i64,
) -> Result<BytesMut, String> {
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (key, value))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder starts a new batch where offset - sequence changes; base sequence -1.
            sequence: i as i32 - 1,
            timestamp: timestamp_ms,
            key: key.clone(),
            value: value.clone(),
            headers: Default::default(),
        })
        .collect();
    let mut encoded = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut encoded,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| format!("encoding a batch: {e}"))?;
    Ok(encoded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::RecordBatchDecoder;

    #[test]
    fn every_record_lands_in_one_batch_with_its_key_and_value() {
        let records = vec![
            (Some(Bytes::from("k1")), Some(Bytes::from("v1"))),
            (None, Some(Bytes::from("v2"))),
            (Some(Bytes::from("k3")), None),
        ];
        let mut encoded = encode_plain_batch(&records, 42).expect("encodes").freeze();
        let batches = RecordBatchDecoder::decode_all(&mut encoded).expect("decodes");
        assert_eq!(batches.len(), 1, "one batch");
        let decoded: Vec<_> = batches[0]
            .records
            .iter()
            .map(|r| (r.key.clone(), r.value.clone(), r.offset, r.timestamp))
            .collect();
        assert_eq!(
            decoded,
            records
                .into_iter()
                .enumerate()
                .map(|(i, (k, v))| (k, v, i as i64, 42))
                .collect::<Vec<_>>()
        );
    }
}
