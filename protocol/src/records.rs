//! The records section of a v2 record batch (everything after its 61-byte header), read with
//! every size bounded: decompression stops at a byte budget, and no count read off the wire sizes
//! an allocation before the bytes it claims are there.
//!
//! Why not `kafka-protocol`'s `RecordBatchDecoder`: it decompresses with no output limit (a
//! 128 KiB zstd batch of zeros expands to gigabytes) and reserves `recordsCount` records and each
//! record's header count before reading them, so a 70-byte batch can ask for hundreds of
//! gigabytes. Every stored batch is decoded here instead: on produce to validate it (as Kafka's
//! log validator does), and later by ListOffsets, the table materializer, the change feed and the
//! log cleaner.
//!
//! Record layout (varints are zig-zag): length varint, attributes i8, timestampDelta varlong,
//! offsetDelta varint, keyLength varint, key, valueLength varint, value, headerCount varint, then
//! per header keyLength varint, key, valueLength varint, value. A length of -1 means null.

use std::io::Read;

use std::ops::Range;

use bytes::Bytes;

/// Fewest bytes one record can take (a length, attributes, two deltas, null key and value, no
/// headers: one byte each), so a count of records can be checked against the bytes present.
const RECORD_BYTES_MIN: usize = 7;
/// Fewest bytes one record header can take (empty key, null value).
const HEADER_BYTES_MIN: usize = 2;

/// xerial snappy framing, as Kafka's Java client writes it: magic, version 1, compatible 1,
/// then blocks of a big-endian length and a raw snappy block.
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_BYTES: usize = 16;

/// The compression codec of a batch (attributes bits 0-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Records are stored as they are.
    None,
    /// gzip (RFC 1952).
    Gzip,
    /// Snappy, raw or in xerial framing.
    Snappy,
    /// LZ4 frame format.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl Codec {
    /// The codec a batch's attributes name.
    pub fn from_attributes(attributes: i16) -> Result<Codec, RecordsError> {
        match attributes & 7 {
            0 => Ok(Codec::None),
            1 => Ok(Codec::Gzip),
            2 => Ok(Codec::Snappy),
            3 => Ok(Codec::Lz4),
            4 => Ok(Codec::Zstd),
            other => Err(RecordsError::UnknownCodec(other as u8)),
        }
    }

    /// The codec's id in a batch's attributes (bits 0-2).
    pub fn id(self) -> i16 {
        match self {
            Codec::None => 0,
            Codec::Gzip => 1,
            Codec::Snappy => 2,
            Codec::Lz4 => 3,
            Codec::Zstd => 4,
        }
    }
}

/// Why a records section cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordsError {
    /// Attributes name a codec Kafka does not define.
    #[error("unknown compression codec {0}")]
    UnknownCodec(u8),
    /// The records decompress to more than the budget allows.
    #[error("records decompress to more than {max} bytes")]
    TooLarge {
        /// The budget.
        max: usize,
    },
    /// The codec's encoder failed.
    #[error("records do not compress: {0}")]
    Compression(String),
    /// Compressed bytes that do not decompress.
    #[error("records do not decompress: {0}")]
    Decompression(String),
    /// Bytes that are not the records the header announces.
    #[error("malformed records: {0}")]
    Malformed(String),
}

fn malformed(what: impl Into<String>) -> RecordsError {
    RecordsError::Malformed(what.into())
}

/// One record, its byte fields sharing the decompressed buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Offset relative to the batch's base offset (always the record's index in the batch).
    pub offset_delta: i32,
    /// Timestamp relative to the batch's base timestamp.
    pub timestamp_delta: i64,
    /// The key, `None` when null.
    pub key: Option<Bytes>,
    /// The value, `None` when null (a tombstone).
    pub value: Option<Bytes>,
    /// Headers in the order sent.
    pub headers: Vec<RecordHeader>,
}

impl Record {
    /// The value of the first header named `name`, if it has one.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.key.as_ref() == name.as_bytes())
            .and_then(|h| h.value.as_deref())
    }
}

/// One record header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHeader {
    /// Header name (Kafka clients write UTF-8; it is kept as bytes).
    pub key: Bytes,
    /// Header value, `None` when null.
    pub value: Option<Bytes>,
}

/// What validation learned of a batch's records without keeping them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordsSummary {
    /// Smallest timestamp delta of any record.
    pub timestamp_delta_min: i64,
    /// Largest timestamp delta of any record.
    pub timestamp_delta_max: i64,
    /// Index of the first record without a key, if any.
    pub first_keyless: Option<i32>,
}

/// Decompresses `compressed` into at most `max_bytes` bytes (records stored uncompressed are
/// returned as they are, if they fit).
pub fn decompress(
    codec: Codec,
    compressed: &Bytes,
    max_bytes: usize,
) -> Result<Bytes, RecordsError> {
    // Read in chunks and refuse before a chunk would pass the budget: the buffer's capacity
    // then never outgrows the budget (`read_to_end` doubles it, so a bomb cut one byte past a
    // 64 MiB budget had reserved 128 MiB).
    let bounded = |reader: &mut dyn Read| -> Result<Bytes, RecordsError> {
        let mut out = Vec::new();
        let mut chunk = vec![0u8; DECOMPRESS_CHUNK_BYTES];
        loop {
            let read = match reader.read(&mut chunk) {
                Ok(0) => return Ok(Bytes::from(out)),
                Ok(read) => read,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(RecordsError::Decompression(e.to_string())),
            };
            if read > max_bytes - out.len() {
                return Err(RecordsError::TooLarge { max: max_bytes });
            }
            if out.len() + read > out.capacity() {
                // Grow by doubling, but never past the budget.
                let target = (out.capacity() * 2).max(out.len() + read).min(max_bytes);
                out.reserve_exact(target - out.len());
            }
            out.extend_from_slice(&chunk[..read]);
        }
    };
    match codec {
        Codec::None if compressed.len() > max_bytes => {
            Err(RecordsError::TooLarge { max: max_bytes })
        }
        Codec::None => Ok(compressed.clone()),
        Codec::Gzip => bounded(&mut flate2::read::MultiGzDecoder::new(&compressed[..])),
        Codec::Zstd => {
            let mut decoder = zstd::stream::read::Decoder::new(&compressed[..])
                .map_err(|e| RecordsError::Decompression(e.to_string()))?;
            bounded(&mut decoder)
        }
        Codec::Lz4 => {
            let mut decoder = lz4::Decoder::new(&compressed[..])
                .map_err(|e| RecordsError::Decompression(e.to_string()))?;
            bounded(&mut decoder)
        }
        Codec::Snappy => snappy(compressed, max_bytes),
    }
}

/// Bytes read from a decompressor at a time.
const DECOMPRESS_CHUNK_BYTES: usize = 64 * 1024;

/// Bytes of input per xerial snappy block, as Kafka's Java client writes them.
const XERIAL_BLOCK_BYTES: usize = 32 * 1024;

/// Compresses an uncompressed records section with `codec` at the codec's default level, in the
/// framing Kafka's clients read: gzip (RFC 1952), snappy in xerial framing (as Kafka's broker
/// writes it), the LZ4 frame format, zstd. For a broker that stores every batch of a topic in
/// the topic's `compression.type`.
pub fn compress(codec: Codec, records: &[u8]) -> Result<Vec<u8>, RecordsError> {
    use std::io::Write;
    let failed = |e: std::io::Error| RecordsError::Compression(e.to_string());
    match codec {
        Codec::None => Ok(records.to_vec()),
        Codec::Gzip => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(records).map_err(failed)?;
            encoder.finish().map_err(failed)
        }
        Codec::Snappy => {
            let mut out = Vec::with_capacity(XERIAL_HEADER_BYTES + records.len());
            out.extend_from_slice(XERIAL_MAGIC);
            out.extend_from_slice(&1i32.to_be_bytes());
            out.extend_from_slice(&1i32.to_be_bytes());
            let mut encoder = snap::raw::Encoder::new();
            for block in records.chunks(XERIAL_BLOCK_BYTES) {
                let compressed = encoder
                    .compress_vec(block)
                    .map_err(|e| RecordsError::Compression(e.to_string()))?;
                let length = u32::try_from(compressed.len())
                    .map_err(|e| RecordsError::Compression(e.to_string()))?;
                out.extend_from_slice(&length.to_be_bytes());
                out.extend_from_slice(&compressed);
            }
            Ok(out)
        }
        Codec::Lz4 => {
            let mut encoder = lz4::EncoderBuilder::new()
                .build(Vec::new())
                .map_err(failed)?;
            encoder.write_all(records).map_err(failed)?;
            let (out, result) = encoder.finish();
            result.map_err(failed)?;
            Ok(out)
        }
        Codec::Zstd => {
            zstd::bulk::compress(records, zstd::DEFAULT_COMPRESSION_LEVEL).map_err(failed)
        }
    }
}

/// Snappy, in xerial framing when the magic is there and raw otherwise (as Kafka reads it). Each
/// block's announced length is checked against what is left of the budget before anything is
/// allocated for it.
fn snappy(compressed: &[u8], max_bytes: usize) -> Result<Bytes, RecordsError> {
    let mut out = Vec::new();
    let block = |raw: &[u8], out: &mut Vec<u8>| -> Result<(), RecordsError> {
        let announced = snap::raw::decompress_len(raw)
            .map_err(|e| RecordsError::Decompression(e.to_string()))?;
        if announced > max_bytes - out.len() {
            return Err(RecordsError::TooLarge { max: max_bytes });
        }
        let start = out.len();
        out.resize(start + announced, 0);
        let written = snap::raw::Decoder::new()
            .decompress(raw, &mut out[start..])
            .map_err(|e| RecordsError::Decompression(e.to_string()))?;
        out.truncate(start + written);
        Ok(())
    };
    if !compressed.starts_with(XERIAL_MAGIC) {
        block(compressed, &mut out)?;
        return Ok(Bytes::from(out));
    }
    let mut rest = compressed
        .get(XERIAL_HEADER_BYTES..)
        .ok_or_else(|| RecordsError::Decompression("truncated xerial header".into()))?;
    while !rest.is_empty() {
        let (length, after) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| RecordsError::Decompression("truncated xerial block length".into()))?;
        let length = u32::from_be_bytes(*length) as usize;
        let raw = after
            .get(..length)
            .ok_or_else(|| RecordsError::Decompression("truncated xerial block".into()))?;
        block(raw, &mut out)?;
        rest = &after[length..];
    }
    Ok(Bytes::from(out))
}

/// A cursor over decompressed records: it walks fields within `at..end` of one buffer and
/// reports where they lie, so checking a record costs no allocation and decoding one costs a
/// slice per field.
struct Cursor<'b> {
    buf: &'b [u8],
    at: usize,
    end: usize,
}

/// Where one record's fields lie in the records buffer.
struct RecordLayout {
    offset_delta: i32,
    timestamp_delta: i64,
    key: Option<Range<usize>>,
    value: Option<Range<usize>>,
}

impl Cursor<'_> {
    fn remaining(&self) -> usize {
        self.end - self.at
    }

    fn byte(&mut self) -> Result<u8, RecordsError> {
        if self.at >= self.end {
            return Err(malformed("record ends early"));
        }
        let byte = self.buf[self.at];
        self.at += 1;
        Ok(byte)
    }

    /// A zig-zag varint of at most 10 bytes.
    fn varlong(&mut self) -> Result<i64, RecordsError> {
        let mut raw = 0u64;
        for shift in (0..70).step_by(7) {
            let byte = self.byte()?;
            raw |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok((raw >> 1) as i64 ^ -((raw & 1) as i64));
            }
        }
        Err(malformed("varint longer than 10 bytes"))
    }

    fn varint(&mut self) -> Result<i32, RecordsError> {
        i32::try_from(self.varlong()?).map_err(|_| malformed("varint out of range"))
    }

    /// Steps over a field of `length` bytes and returns where it lies.
    fn skip(&mut self, length: usize) -> Result<Range<usize>, RecordsError> {
        if length > self.remaining() {
            return Err(malformed(format!(
                "field of {length} bytes with {} left",
                self.remaining()
            )));
        }
        let field = self.at..self.at + length;
        self.at += length;
        Ok(field)
    }

    /// A byte field whose length is a varint; -1 is null.
    fn nullable(&mut self, what: &str) -> Result<Option<Range<usize>>, RecordsError> {
        match self.varint()? {
            -1 => Ok(None),
            length => {
                let length = usize::try_from(length)
                    .map_err(|_| malformed(format!("{what} length {length}")))?;
                self.skip(length).map(Some)
            }
        }
    }

    /// One record, which must fill exactly the length it announces; `on_header` gets where
    /// each header's key and value lie.
    fn record(
        &mut self,
        mut on_header: impl FnMut(Range<usize>, Option<Range<usize>>),
    ) -> Result<RecordLayout, RecordsError> {
        let length = self.varint()?;
        let length =
            usize::try_from(length).map_err(|_| malformed(format!("record length {length}")))?;
        let body = self.skip(length)?;
        let mut body = Cursor {
            buf: self.buf,
            at: body.start,
            end: body.end,
        };
        let _attributes = body.byte()?;
        let timestamp_delta = body.varlong()?;
        let offset_delta = body.varint()?;
        let key = body.nullable("key")?;
        let value = body.nullable("value")?;
        let header_count = body.varint()?;
        let header_count = usize::try_from(header_count)
            .ok()
            .filter(|&n| n <= body.remaining() / HEADER_BYTES_MIN)
            .ok_or_else(|| {
                malformed(format!(
                    "{header_count} headers in {} bytes",
                    body.remaining()
                ))
            })?;
        for _ in 0..header_count {
            let key = body
                .nullable("header key")?
                .ok_or_else(|| malformed("null header key"))?;
            let value = body.nullable("header value")?;
            on_header(key, value);
        }
        if body.remaining() != 0 {
            return Err(malformed(format!(
                "{} bytes after the record's fields",
                body.remaining()
            )));
        }
        Ok(RecordLayout {
            offset_delta,
            timestamp_delta,
            key,
            value,
        })
    }
}

/// Walks exactly `count` records of the (decompressed) records section, checking that the
/// record at index `i` has offset delta `i` and that no bytes follow the last record; `visit`
/// gets each record's layout, after `on_header` got its headers, both with `state`.
fn walk<S>(
    records: &[u8],
    count: i32,
    state: &mut S,
    on_header: impl Fn(&mut S, Range<usize>, Option<Range<usize>>),
    mut visit: impl FnMut(&mut S, RecordLayout),
) -> Result<(), RecordsError> {
    let count = usize::try_from(count).map_err(|_| malformed(format!("recordsCount {count}")))?;
    if count > records.len() / RECORD_BYTES_MIN {
        return Err(malformed(format!(
            "recordsCount {count} cannot fit in {} bytes",
            records.len()
        )));
    }
    let mut cursor = Cursor {
        buf: records,
        at: 0,
        end: records.len(),
    };
    for index in 0..count {
        let record = cursor.record(|key, value| on_header(state, key, value))?;
        if usize::try_from(record.offset_delta) != Ok(index) {
            return Err(malformed(format!(
                "record {index} has offset delta {}",
                record.offset_delta
            )));
        }
        visit(state, record);
    }
    if cursor.remaining() != 0 {
        return Err(malformed(format!(
            "{} bytes after {count} records",
            cursor.remaining()
        )));
    }
    Ok(())
}

/// Decodes exactly `count` records from the (decompressed) records section, checking that the
/// record at index `i` has offset delta `i` and that no bytes follow the last record.
pub fn decode(records: Bytes, count: i32, visit: impl FnMut(Record)) -> Result<(), RecordsError> {
    let mut visit = visit;
    let mut headers: Vec<RecordHeader> = Vec::new();
    walk(
        &records,
        count,
        &mut headers,
        |headers, key, value| {
            headers.push(RecordHeader {
                key: records.slice(key),
                value: value.map(|v| records.slice(v)),
            })
        },
        |headers, layout| {
            visit(Record {
                offset_delta: layout.offset_delta,
                timestamp_delta: layout.timestamp_delta,
                key: layout.key.map(|k| records.slice(k)),
                value: layout.value.map(|v| records.slice(v)),
                headers: std::mem::take(headers),
            })
        },
    )
}

/// Decodes a batch's records section: decompresses it within `max_bytes` and returns its
/// `count` records.
pub fn decode_all(
    codec: Codec,
    section: &Bytes,
    count: i32,
    max_bytes: usize,
) -> Result<Vec<Record>, RecordsError> {
    let records = decompress(codec, section, max_bytes)?;
    let mut out = Vec::with_capacity(
        usize::try_from(count)
            .unwrap_or(0)
            .min(records.len() / RECORD_BYTES_MIN),
    );
    decode(records, count, |record| out.push(record))?;
    Ok(out)
}

/// Checks that a batch's records section holds exactly `count` well-formed records (within
/// `max_bytes` once decompressed), and summarizes their timestamps and keys.
///
/// The records are checked by the fast pass ([`scan::summarize`]); only a batch it refuses goes
/// through the full walk, which says what is wrong with it.
pub fn validate(
    codec: Codec,
    section: &Bytes,
    count: i32,
    max_bytes: usize,
) -> Result<RecordsSummary, RecordsError> {
    let records = decompress(codec, section, max_bytes)?;
    match scan::summarize(&records, count) {
        Some(summary) => Ok(summary),
        None => summarize_walked(&records, count),
    }
}

/// The index of every record without a key in a batch's records section (decompressed within
/// `max_bytes`), in order: what Kafka names in a refusal's `record_errors` when a compacted topic
/// is sent keyless records. Only a batch already known to hold one (its summary's
/// [`RecordsSummary::first_keyless`]) needs this second pass; the list has at most `count`
/// entries.
pub fn keyless_records(
    codec: Codec,
    section: &Bytes,
    count: i32,
    max_bytes: usize,
) -> Result<Vec<i32>, RecordsError> {
    let records = decompress(codec, section, max_bytes)?;
    let mut keyless = Vec::new();
    walk(
        &records,
        count,
        &mut keyless,
        |_, _, _| {},
        |keyless, record| {
            if record.key.is_none() {
                keyless.push(record.offset_delta);
            }
        },
    )?;
    Ok(keyless)
}

/// The full walk's version of [`scan::summarize`]: the same checks and summary, and on a refusal
/// the reason.
fn summarize_walked(records: &[u8], count: i32) -> Result<RecordsSummary, RecordsError> {
    let mut summary = RecordsSummary {
        timestamp_delta_min: i64::MAX,
        timestamp_delta_max: i64::MIN,
        first_keyless: None,
    };
    walk(
        records,
        count,
        &mut summary,
        |_, _, _| {},
        |summary, record| {
            summary.timestamp_delta_min = summary.timestamp_delta_min.min(record.timestamp_delta);
            summary.timestamp_delta_max = summary.timestamp_delta_max.max(record.timestamp_delta);
            if record.key.is_none() && summary.first_keyless.is_none() {
                summary.first_keyless = Some(record.offset_delta);
            }
        },
    )?;
    Ok(summary)
}

mod scan;
#[cfg(test)]
mod tests;
