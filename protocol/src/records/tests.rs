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

#[test]
fn keyless_records_lists_every_record_without_a_key() {
    let records = [
        kafka_record(0, None, b"x", &[]),
        kafka_record(1, Some(b"b"), b"y", &[]),
        kafka_record(2, None, b"z", &[]),
    ];
    let (codec, section) = encoded(&records, Compression::Gzip);
    assert_eq!(
        validate(codec, &section, 3, 1 << 20).unwrap().first_keyless,
        Some(0)
    );
    assert_eq!(
        keyless_records(codec, &section, 3, 1 << 20).unwrap(),
        vec![0, 2]
    );
    let keyed = [kafka_record(0, Some(b"a"), b"x", &[])];
    let (codec, section) = encoded(&keyed, Compression::None);
    assert_eq!(
        keyless_records(codec, &section, 1, 1 << 20).unwrap(),
        Vec::<i32>::new()
    );
    // A section that does not hold the count it is said to is refused, as by `validate`.
    assert!(keyless_records(codec, &section, 2, 1 << 20).is_err());
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

/// A key or value as written: `None` is a length of -1.
type NullableBytes = Option<Vec<u8>>;

/// One record as the property tests write it: every field the format has, each length and delta
/// optionally padded with redundant 0x80 bytes (which Kafka's varint reader accepts).
#[derive(Debug, Clone)]
struct LooseRecord {
    attributes: u8,
    timestamp_delta: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    /// Header keys may be null here (which no record may hold).
    headers: Vec<(NullableBytes, NullableBytes)>,
    /// Extra bytes for each varint, taken in turn (0 for most).
    padding: Vec<u8>,
    /// Added to the offset delta (0 for most; anything else is malformed).
    offset_skew: i64,
    /// Bytes after the headers, inside the record's length (malformed unless empty).
    trailing: Vec<u8>,
}

impl LooseRecord {
    /// Whether the record is well-formed, padding aside.
    fn plain(&self) -> bool {
        self.offset_skew == 0
            && self.trailing.is_empty()
            && self.headers.iter().all(|h| h.0.is_some())
    }
}

/// A varint with `pad` redundant continuation bytes (0 writes the shortest form).
fn put_padded_varint(out: &mut Vec<u8>, value: i64, pad: u8) {
    let start = out.len();
    put_varint(out, value);
    if pad == 0 {
        return;
    }
    if let Some(last) = out.last_mut() {
        *last |= 0x80;
    }
    out.extend(std::iter::repeat_n(0x80, usize::from(pad) - 1));
    out.push(0);
    debug_assert!(out.len() > start);
}

fn loose_section(records: &[LooseRecord]) -> Vec<u8> {
    let mut out = Vec::new();
    for (index, record) in records.iter().enumerate() {
        let mut pads = record.padding.iter().copied().cycle();
        let mut pad = || pads.next().unwrap_or(0);
        let mut body = vec![record.attributes];
        put_padded_varint(&mut body, record.timestamp_delta, pad());
        put_padded_varint(
            &mut body,
            (index as i64).wrapping_add(record.offset_skew),
            pad(),
        );
        let field = |body: &mut Vec<u8>, bytes: &Option<Vec<u8>>, pad: u8| match bytes {
            None => put_padded_varint(body, -1, pad),
            Some(bytes) => {
                put_padded_varint(body, bytes.len() as i64, pad);
                body.extend_from_slice(bytes);
            }
        };
        field(&mut body, &record.key, pad());
        field(&mut body, &record.value, pad());
        put_padded_varint(&mut body, record.headers.len() as i64, pad());
        for (key, value) in &record.headers {
            field(&mut body, key, pad());
            field(&mut body, value, pad());
        }
        body.extend_from_slice(&record.trailing);
        put_padded_varint(&mut out, body.len() as i64, pad());
        out.extend_from_slice(&body);
    }
    out
}

fn loose_record() -> impl Strategy<Value = LooseRecord> {
    let bytes =
        |max| proptest::option::weighted(0.8, proptest::collection::vec(any::<u8>(), 0..max));
    (
        any::<u8>(),
        prop_oneof![4 => -3i64..3_000, 1 => any::<i64>()],
        bytes(12),
        bytes(160),
        proptest::collection::vec(
            (
                proptest::option::weighted(0.95, proptest::collection::vec(any::<u8>(), 0..6)),
                bytes(6),
            ),
            0..3,
        ),
        prop_oneof![
            4 => Just(Vec::new()),
            1 => proptest::collection::vec(prop_oneof![3 => Just(0u8), 1 => 1u8..9], 1..8),
        ],
        prop_oneof![30 => Just(0i64), 1 => -2i64..3],
        prop_oneof![30 => Just(Vec::new()), 1 => proptest::collection::vec(any::<u8>(), 1..3)],
    )
        .prop_map(
            |(attributes, timestamp_delta, key, value, headers, padding, offset_skew, trailing)| {
                LooseRecord {
                    attributes,
                    timestamp_delta,
                    key,
                    value,
                    headers,
                    padding,
                    offset_skew,
                    trailing,
                }
            },
        )
}

/// Bytes a mutation writes: varint edges (0, -1, continuation bits) and anything.
fn mutant_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        Just(0x00u8),
        Just(0x01),
        Just(0x02),
        Just(0x7f),
        Just(0x80),
        Just(0xff),
        any::<u8>()
    ]
}

/// The fast pass and the full walk agree on `records`: the same summary, or both refuse.
fn agree(records: &[u8], count: i32) -> Result<(), TestCaseError> {
    let fast = scan::summarize(records, count);
    let full = summarize_walked(records, count);
    prop_assert_eq!(fast, full.clone().ok(), "full walk: {:?}", full);
    Ok(())
}

#[test]
fn the_fast_pass_reads_long_and_padded_varints_as_the_full_walk_does() {
    // Every width from 1 to 11 bytes, at the edges of each width, as the timestamp delta of a
    // record with a null key and value.
    let mut edges = vec![
        0,
        -1,
        1,
        i64::MIN,
        i64::MAX,
        i64::from(i32::MAX),
        i64::from(i32::MIN),
    ];
    for shift in (6..63).step_by(7) {
        edges.extend([
            (1i64 << shift) - 1,
            1i64 << shift,
            -(1i64 << shift),
            -(1i64 << shift) - 1,
        ]);
    }
    for delta in edges {
        for pad in 0..10 {
            let mut fields = vec![0];
            put_padded_varint(&mut fields, delta, pad);
            fields.extend_from_slice(&[0, 1, 1, 0]);
            let section = raw_record(&fields);
            agree(&section, 1).unwrap();
        }
    }
    // A tenth byte with bits past the 64th set, and an eleventh byte.
    for tail in [[0x80; 9].as_slice(), &[0xff; 9], &[0x80; 10], &[0xff; 10]] {
        for last in [0x01, 0x02, 0x7f] {
            let mut fields = vec![0];
            fields.extend_from_slice(tail);
            fields.push(last);
            fields.extend_from_slice(&[0, 1, 1, 0]);
            agree(&raw_record(&fields), 1).unwrap();
        }
    }
}

#[test]
fn validate_takes_a_librdkafka_style_batch_through_the_fast_pass() {
    let records: Vec<LooseRecord> = (0..150)
        .map(|index| LooseRecord {
            attributes: 0,
            timestamp_delta: index / 10,
            key: None,
            value: Some(vec![b'x'; 100]),
            headers: Vec::new(),
            padding: Vec::new(),
            offset_skew: 0,
            trailing: Vec::new(),
        })
        .collect();
    let section = loose_section(&records);
    let summary = scan::summarize(&section, 150).unwrap();
    assert_eq!(
        summary,
        RecordsSummary {
            timestamp_delta_min: 0,
            timestamp_delta_max: 14,
            first_keyless: Some(0),
        }
    );
    assert_eq!(
        validate(Codec::None, &Bytes::from(section), 150, 1 << 20),
        Ok(summary)
    );
}

proptest! {
    /// Batches of every shape, nearly all well-formed (a few with a null header key, a wrong
    /// offset delta, bytes left in a record or a varint padded past 10 bytes): the fast pass
    /// accepts the same ones as the full walk, with the same summary.
    #[test]
    fn the_fast_pass_accepts_what_the_full_walk_accepts(records in proptest::collection::vec(loose_record(), 0..40)) {
        let section = loose_section(&records);
        let count = records.len() as i32;
        agree(&section, count)?;
        let plain = records.iter().all(|r| r.plain() && r.padding.iter().all(|&p| p == 0));
        if plain {
            prop_assert!(scan::summarize(&section, count).is_some());
        }
    }

    /// Batches with bytes overwritten, inserted or cut, or a wrong count: the fast pass refuses
    /// exactly what the full walk refuses.
    #[test]
    fn the_fast_pass_refuses_what_the_full_walk_refuses(
        records in proptest::collection::vec(loose_record(), 1..20),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), mutant_byte(), 0u8..4), 1..4),
        count_change in prop_oneof![6 => Just(0i32), 1 => -2i32..3],
    ) {
        let mut section = loose_section(&records);
        for (at, byte, kind) in edits {
            if section.is_empty() {
                break;
            }
            let at = at.index(section.len());
            match kind {
                0 | 1 => section[at] = byte,
                2 => section.insert(at, byte),
                _ => section.truncate(at),
            }
        }
        agree(&section, records.len() as i32 + count_change)?;
    }

    /// Arbitrary bytes: both refuse, or both accept with the same summary.
    #[test]
    fn the_fast_pass_agrees_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256), count in -2i32..40) {
        agree(&bytes, count)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// What `compress` writes, in any codec, reads back through the bounded `decompress` as the
    /// records it was given (snappy across several xerial blocks too).
    #[test]
    fn compressed_records_decompress_to_themselves(
        records in proptest::collection::vec(any::<u8>(), 0..100_000),
        repeat in 1usize..4,
    ) {
        let records = records.repeat(repeat);
        for codec in [Codec::None, Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd] {
            let compressed = Bytes::from(compress(codec, &records).unwrap());
            let back = decompress(codec, &compressed, records.len()).unwrap();
            prop_assert_eq!(back.as_ref(), records.as_slice(), "{:?}", codec);
            prop_assert_eq!(Codec::from_attributes(codec.id()).unwrap(), codec);
        }
    }
}
