//! The fast pass of produce validation: the same checks as the full walk (`walk` with a
//! `Cursor`), written for the case that matters, a well-formed batch.
//!
//! Every produced record is checked, so at 100-byte records this pass runs once per ~110 bytes
//! written and showed up in broker profiles. The full walk reports *why* a batch is refused, and
//! pays for that on every field: each varint comes back as a `Result` carrying a `String` error
//! (returned through memory, its call not inlined), and every field goes through a cursor
//! re-checking `at < end`. This pass answers only yes (with the summary) or no: fields are read
//! off shrinking slices, one- and two-byte varints (nearly every field of a real record) are
//! decoded without a loop, and a refusal is `None`. The caller runs the full walk on a refused
//! batch to say what is wrong with it, so this pass never has to.
//!
//! It must accept exactly what the full walk accepts, with the same summary: the property tests
//! in `records/tests.rs` compare the two on generated and mutated batches.

use super::{RecordsSummary, HEADER_BYTES_MIN, RECORD_BYTES_MIN};

/// Checks that `records` (a decompressed records section) holds exactly `count` well-formed
/// records, record `i` with offset delta `i`, and nothing after the last; `None` if not.
pub(super) fn summarize(records: &[u8], count: i32) -> Option<RecordsSummary> {
    let count = usize::try_from(count).ok()?;
    if count > records.len() / RECORD_BYTES_MIN {
        return None;
    }
    let mut summary = RecordsSummary {
        timestamp_delta_min: i64::MAX,
        timestamp_delta_max: i64::MIN,
        first_keyless: None,
    };
    let mut rest = records;
    for index in 0..count {
        rest = record(rest, index, &mut summary)?;
    }
    rest.is_empty().then_some(summary)
}

/// Checks the record at the front of `bytes`, which must be record `index` and fill exactly the
/// length it announces; adds it to `summary` and returns the bytes after it.
#[inline(always)]
fn record<'r>(bytes: &'r [u8], index: usize, summary: &mut RecordsSummary) -> Option<&'r [u8]> {
    let (length, rest) = raw_varint(bytes)?;
    let (body, after) = rest.split_at_checked(length_of(length)?)?;
    let (_attributes, body) = body.split_first()?;
    let (timestamp_delta, body) = raw_varint(body)?;
    let timestamp_delta = unzigzag(timestamp_delta);
    let (offset_delta, body) = raw_varint(body)?;
    // Zig-zag maps `index` (below `count`, so within i32) to `2 * index` and nothing else there.
    if offset_delta != u64::try_from(index).ok()?.checked_mul(2)? {
        return None;
    }
    let (key, body) = nullable(body)?;
    let (_value, body) = nullable(body)?;
    let (header_count, mut body) = raw_varint(body)?;
    // Bounds the loop by the bytes present, as the full walk does before it allocates.
    let header_count = length_of(header_count).filter(|&n| n <= body.len() / HEADER_BYTES_MIN)?;
    for _ in 0..header_count {
        let (header_key, rest) = nullable(body)?;
        header_key?; // a header key may be empty, never null
        (_, body) = nullable(rest)?;
    }
    if !body.is_empty() {
        return None;
    }
    summary.timestamp_delta_min = summary.timestamp_delta_min.min(timestamp_delta);
    summary.timestamp_delta_max = summary.timestamp_delta_max.max(timestamp_delta);
    if key.is_none() && summary.first_keyless.is_none() {
        summary.first_keyless = i32::try_from(index).ok();
    }
    Some(after)
}

/// A byte field whose length is a varint (-1 is null) and the bytes after it.
#[inline(always)]
fn nullable(bytes: &[u8]) -> Option<(Option<&[u8]>, &[u8])> {
    let (length, rest) = raw_varint(bytes)?;
    if length == NULL {
        return Some((None, rest));
    }
    let (field, rest) = rest.split_at_checked(length_of(length)?)?;
    Some((Some(field), rest))
}

/// -1, zig-zag encoded.
const NULL: u64 = 1;

/// The length a zig-zag encoded varint gives, if it is one the full walk takes: not negative,
/// and within an `i32` (the full walk reads lengths as Kafka's `varint`).
#[inline(always)]
fn length_of(raw: u64) -> Option<usize> {
    // Zig-zag maps 0..=i32::MAX to the even numbers up to 2 * i32::MAX.
    if raw & 1 != 0 || raw > 2 * i32::MAX as u64 {
        return None;
    }
    usize::try_from(raw >> 1).ok()
}

/// A varint still zig-zag encoded, and the bytes after it: each field decides how to read it,
/// most without decoding (a length is a range check and a shift, an offset delta one
/// comparison). One and two bytes (values within ±8191, nearly every field of a real record) are
/// read inline; longer ones go to [`raw_varint_long`].
#[inline(always)]
fn raw_varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    match *bytes {
        [b0, ref rest @ ..] if b0 < 0x80 => Some((u64::from(b0), rest)),
        [b0, b1, ref rest @ ..] if b1 < 0x80 => {
            Some((u64::from(b0 & 0x7f) | u64::from(b1) << 7, rest))
        }
        _ => raw_varint_long(bytes),
    }
}

/// A varint of any length, read as `Cursor::varlong` reads it: at most 10 bytes, the bits of a
/// tenth byte past the 64th dropped, non-minimal encodings (a value padded with 0x80 bytes)
/// accepted.
#[inline(never)]
fn raw_varint_long(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut raw = 0u64;
    for (index, &byte) in bytes.iter().take(10).enumerate() {
        raw |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Some((raw, bytes.get(index + 1..)?));
        }
    }
    None
}

/// Undoes zig-zag encoding, as `Cursor::varlong` does.
fn unzigzag(raw: u64) -> i64 {
    (raw >> 1) as i64 ^ -((raw & 1) as i64)
}
