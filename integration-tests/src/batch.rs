//! Hand-built Kafka v2 record batches, for tests that must send bytes a real client would not:
//! wrong CRC, wrong magic, oversized batches, decompression bombs.

use bytes::{BufMut, BytesMut};

/// Offset of the magic byte in a v2 batch.
pub const MAGIC_OFFSET: usize = 16;
/// Offset of the CRC field in a v2 batch.
pub const CRC_OFFSET: usize = 17;
/// Offset where the CRC-covered part of a v2 batch starts (the attributes field).
pub const ATTRIBUTES_OFFSET: usize = 21;
/// Size of the v2 batch header.
pub const HEADER_SIZE: usize = 61;

/// One record of a hand-built batch.
#[derive(Debug, Clone, Default)]
pub struct RawRecord {
    /// Key (None = null).
    pub key: Option<Vec<u8>>,
    /// Value (None = null).
    pub value: Option<Vec<u8>>,
    /// Headers.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// Timestamp delta from the batch's base timestamp.
    pub timestamp_delta: i64,
}

impl RawRecord {
    /// A record with only a value.
    pub fn value(v: impl Into<Vec<u8>>) -> Self {
        RawRecord {
            value: Some(v.into()),
            ..Default::default()
        }
    }
}

fn put_varint(buf: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        if z < 0x80 {
            buf.put_u8(z as u8);
            return;
        }
        buf.put_u8((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
}

fn put_bytes_varint(buf: &mut BytesMut, b: Option<&[u8]>) {
    match b {
        None => put_varint(buf, -1),
        Some(b) => {
            put_varint(buf, b.len() as i64);
            buf.put_slice(b);
        }
    }
}

/// Encodes a valid, uncompressed magic-2 batch with base offset 0, no producer id, CreateTime
/// timestamps starting at `base_timestamp`.
pub fn encode_batch(records: &[RawRecord], base_timestamp: i64) -> BytesMut {
    let mut body = BytesMut::new();
    let mut max_ts = base_timestamp;
    for (i, r) in records.iter().enumerate() {
        let mut rec = BytesMut::new();
        rec.put_i8(0); // attributes
        put_varint(&mut rec, r.timestamp_delta);
        put_varint(&mut rec, i as i64); // offset delta
        put_bytes_varint(&mut rec, r.key.as_deref());
        put_bytes_varint(&mut rec, r.value.as_deref());
        put_varint(&mut rec, r.headers.len() as i64);
        for (k, v) in &r.headers {
            put_bytes_varint(&mut rec, Some(k.as_bytes()));
            put_bytes_varint(&mut rec, v.as_deref());
        }
        put_varint(&mut body, rec.len() as i64);
        body.put_slice(&rec);
        max_ts = max_ts.max(base_timestamp + r.timestamp_delta);
    }
    let mut b = BytesMut::with_capacity(HEADER_SIZE + body.len());
    b.put_i64(0); // base offset
    b.put_i32((HEADER_SIZE - 12 + body.len()) as i32); // batch length
    b.put_i32(-1); // partition leader epoch
    b.put_i8(2); // magic
    b.put_u32(0); // crc, filled below
    b.put_i16(0); // attributes: no compression, CreateTime
    b.put_i32(records.len().saturating_sub(1) as i32); // last offset delta
    b.put_i64(base_timestamp);
    b.put_i64(max_ts);
    b.put_i64(-1); // producer id
    b.put_i16(-1); // producer epoch
    b.put_i32(-1); // base sequence
    b.put_i32(records.len() as i32);
    b.put_slice(&body);
    fix_crc(&mut b);
    b
}

/// Recomputes the CRC-32C of a v2 batch in place.
pub fn fix_crc(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..]);
    batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

/// A batch of `n` records with values `"{prefix}-{i}"`.
pub fn simple_batch(prefix: &str, n: usize, base_timestamp: i64) -> BytesMut {
    let recs: Vec<RawRecord> = (0..n)
        .map(|i| RawRecord::value(format!("{prefix}-{i}").into_bytes()))
        .collect();
    encode_batch(&recs, base_timestamp)
}

/// Splits a byte buffer holding consecutive v2 batches into (start, length) of each batch,
/// stopping at the first incomplete one.
pub fn batch_spans(log: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 12 <= log.len() {
        let len = i32::from_be_bytes([log[pos + 8], log[pos + 9], log[pos + 10], log[pos + 11]]);
        if len < 0 {
            break;
        }
        let total = 12 + len as usize;
        if pos + total > log.len() {
            break;
        }
        out.push((pos, total));
        pos += total;
    }
    out
}

/// A zstd batch of `records` keyed records (`k0`, `k1`, ...) of 1 MiB of zeros each: about 1 KiB
/// compressed per record, 1 MiB decompressed, so 80 records make an 80 KiB batch that expands
/// past the broker's 64 MiB bound on decoding.
pub fn zstd_bomb(records: usize, timestamp: i64) -> anyhow::Result<BytesMut> {
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    let zeros = bytes::Bytes::from(vec![0u8; 1 << 20]);
    let records: Vec<Record> = (0..records)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // Constant offset minus sequence keeps every record in one batch.
            sequence: i as i32 - 1,
            timestamp,
            key: Some(bytes::Bytes::from(format!("k{i}"))),
            value: Some(zeros.clone()),
            headers: Default::default(),
        })
        .collect();
    let mut batch = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut batch,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::Zstd,
        },
    )?;
    Ok(batch)
}
