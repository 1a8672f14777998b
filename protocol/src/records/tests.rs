#![allow(clippy::unwrap_used)]

use bytes::{Bytes, BytesMut};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record as KafkaRecord, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use proptest::prelude::*;

use super::*;

/// Bytes of the fixed v2 batch header in front of the records section.
const BATCH_HEADER_BYTES: usize = 61;

fn kafka_record(
    index: i64,
    key: Option<&[u8]>,
    value: &[u8],
    headers: &[(&str, &[u8])],
) -> KafkaRecord {
    KafkaRecord {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: index,
        // Constant offset minus sequence keeps every record in one batch.
        sequence: index as i32 - 1,
        timestamp: 1_000 + index * 3,
        key: key.map(Bytes::copy_from_slice),
        value: Some(Bytes::copy_from_slice(value)),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    StrBytes::from_string((*k).to_string()),
                    Some(Bytes::copy_from_slice(v)),
                )
            })
            .collect(),
    }
}

/// A whole batch encoded by `kafka-protocol`, and its records section.
fn encoded(records: &[KafkaRecord], compression: Compression) -> (Codec, Bytes) {
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .unwrap();
    let batch = buf.freeze();
    let attributes = i16::from_be_bytes([batch[21], batch[22]]);
    (
        Codec::from_attributes(attributes).unwrap(),
        batch.slice(BATCH_HEADER_BYTES..),
    )
}

/// Encodes one record by hand, so tests can write what no encoder would.
fn raw_record(fields: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    put_varint(&mut out, fields.len() as i64);
    out.extend_from_slice(fields);
    out
}

fn put_varint(out: &mut Vec<u8>, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    loop {
        let byte = (zigzag & 0x7f) as u8;
        zigzag >>= 7;
        if zigzag == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[test]
fn every_codec_decodes_what_kafka_protocol_encodes() {
    let records: Vec<_> = (0..50)
        .map(|i| {
            kafka_record(
                i,
                Some(format!("k{i}").as_bytes()),
                &[i as u8; 300],
                &[("h", b"v")],
            )
        })
        .collect();
    for compression in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let (codec, section) = encoded(&records, compression);
        let decoded = decode_all(codec, &section, 50, 1 << 20).unwrap();
        assert_eq!(decoded.len(), 50, "{compression:?}");
        for (i, record) in decoded.iter().enumerate() {
            assert_eq!(record.offset_delta, i as i32);
            assert_eq!(record.timestamp_delta, i as i64 * 3);
            assert_eq!(record.key.as_deref(), Some(format!("k{i}").as_bytes()));
            assert_eq!(record.value.as_deref(), Some(&[i as u8; 300][..]));
            assert_eq!(record.header("h"), Some(&b"v"[..]));
        }
    }
}

#[test]
fn a_decompression_bomb_stops_at_the_budget() {
    // 50 records of 1 MiB of zeros each compress to a few KiB.
    let zeros = vec![0u8; 1 << 20];
    let records: Vec<_> = (0..50)
        .map(|i| kafka_record(i, Some(b"k"), &zeros, &[]))
        .collect();
    for compression in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let (codec, section) = encoded(&records, compression);
        assert!(section.len() < 8 << 20, "{compression:?} compresses");
        assert_eq!(
            decode_all(codec, &section, 50, 4 << 20),
            Err(RecordsError::TooLarge { max: 4 << 20 }),
            "{compression:?}"
        );
    }
}

#[test]
fn raw_snappy_announcing_a_huge_block_is_refused_before_allocating() {
    // A raw snappy block starts with its uncompressed length as a varint: claim ~4 GiB.
    let mut section = vec![0x80, 0x80, 0x80, 0x80, 0x0f];
    section.extend_from_slice(&[0; 16]);
    assert_eq!(
        decompress(Codec::Snappy, &Bytes::from(section), 1 << 20),
        Err(RecordsError::TooLarge { max: 1 << 20 })
    );
}

#[test]
fn a_huge_header_count_is_refused_without_allocating() {
    // attributes, timestamp delta, offset delta, null key, null value, 0x7FFFFFFF headers.
    let mut fields = vec![0, 0, 0, 1, 1];
    put_varint(&mut fields, i64::from(i32::MAX));
    let section = Bytes::from(raw_record(&fields));
    let error = decode_all(Codec::None, &section, 1, 1 << 20).unwrap_err();
    assert!(
        matches!(error, RecordsError::Malformed(ref m) if m.contains("headers")),
        "{error}"
    );
}

#[test]
fn a_records_count_the_bytes_cannot_hold_is_refused() {
    let (codec, section) = encoded(&[kafka_record(0, Some(b"k"), b"v", &[])], Compression::None);
    for count in [2_000_000_000, 2, 0, -1] {
        assert!(
            matches!(
                decode_all(codec, &section, count, 1 << 20),
                Err(RecordsError::Malformed(_))
            ),
            "count {count}"
        );
    }
    assert_eq!(decode_all(codec, &section, 1, 1 << 20).unwrap().len(), 1);
}

#[test]
fn out_of_order_offset_deltas_and_trailing_bytes_are_refused() {
    // Record 0 claiming offset delta 1.
    let section = Bytes::from(raw_record(&[0, 0, 2, 1, 1, 0]));
    assert!(decode_all(Codec::None, &section, 1, 1 << 20).is_err());
    // A record whose length leaves a byte unread.
    let section = Bytes::from(raw_record(&[0, 0, 0, 1, 1, 0, 9]));
    assert!(decode_all(Codec::None, &section, 1, 1 << 20).is_err());
    // The well-formed version of the same record.
    let section = Bytes::from(raw_record(&[0, 0, 0, 1, 1, 0]));
    let records = decode_all(Codec::None, &section, 1, 1 << 20).unwrap();
    assert_eq!(
        (records[0].key.clone(), records[0].value.clone()),
        (None, None)
    );
}

#[test]
fn validate_summarizes_timestamps_and_keys() {
    let records = [
        kafka_record(0, Some(b"a"), b"x", &[]),
        kafka_record(1, None, b"y", &[]),
        kafka_record(2, Some(b"c"), b"z", &[]),
    ];
    let (codec, section) = encoded(&records, Compression::Lz4);
    let summary = validate(codec, &section, 3, 1 << 20).unwrap();
    assert_eq!(
        summary,
        RecordsSummary {
            timestamp_delta_min: 0,
            timestamp_delta_max: 6,
            first_keyless: Some(1),
        }
    );
}

proptest! {
    /// Arbitrary bytes never panic, and never decode to more records than they could hold.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), count in -2i32..200, codec in 0i16..6) {
        let section = Bytes::from(bytes);
        if let Ok(codec) = Codec::from_attributes(codec) {
            if let Ok(records) = decode_all(codec, &section, count, 1 << 16) {
                prop_assert_eq!(records.len(), count as usize);
            }
        }
    }
}
