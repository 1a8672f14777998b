//! Validates one realistic uncompressed produce batch many times, for instruction counts under
//! callgrind (repeatable where wall-clock timings on a shared machine are not):
//!
//! ```text
//! cargo build --release -p causeway-protocol --example validate_bench
//! valgrind --tool=callgrind --toggle-collect='causeway_protocol::records::validate*' \
//!     target/release/examples/validate_bench 1000
//! ```
//!
//! The batch is what librdkafka sends for 100-byte values: 128 records, null keys, no headers,
//! timestamp deltas of a few milliseconds. Arguments: iterations (default 1000), records per
//! batch (default 128), value bytes (default 100), key bytes (default none: null keys).

use bytes::Bytes;
use causeway_protocol::records::{self, Codec};

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

/// The records section of an uncompressed batch of `count` records.
fn section(count: usize, value_bytes: usize, key_bytes: Option<usize>) -> Bytes {
    let mut out = Vec::new();
    for index in 0..count {
        let mut body = vec![0u8]; // attributes
        put_varint(&mut body, (index / 10) as i64); // timestamp delta
        put_varint(&mut body, index as i64); // offset delta
        match key_bytes {
            None => put_varint(&mut body, -1),
            Some(n) => {
                put_varint(&mut body, n as i64);
                body.extend((0..n).map(|i| b'k' + (i % 7) as u8));
            }
        }
        put_varint(&mut body, value_bytes as i64);
        body.extend((0..value_bytes).map(|i| (i * 31 + index) as u8));
        put_varint(&mut body, 0); // header count
        put_varint(&mut out, body.len() as i64);
        out.extend_from_slice(&body);
    }
    Bytes::from(out)
}

fn arg(index: usize) -> Option<usize> {
    std::env::args().nth(index).and_then(|a| a.parse().ok())
}

fn main() {
    let iterations = arg(1).unwrap_or(1000);
    let count = arg(2).unwrap_or(128);
    let value_bytes = arg(3).unwrap_or(100);
    let key_bytes = arg(4);
    let section = section(count, value_bytes, key_bytes);
    // Bytes made from a Vec allocate their shared state on the first clone; the broker's
    // batches are slices of a shared request buffer, so pay that once before measuring.
    let _shared = section.clone();
    let records_count = i32::try_from(count).unwrap_or(i32::MAX);
    let started = std::time::Instant::now();
    let mut checksum = 0i64;
    for _ in 0..iterations {
        let summary = records::validate(
            Codec::None,
            std::hint::black_box(&section),
            records_count,
            usize::MAX,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        checksum = checksum.wrapping_add(summary.timestamp_delta_max);
    }
    let elapsed = started.elapsed();
    println!(
        "{iterations} validations of {count} records ({} bytes): {:.1} ns/record (checksum {checksum})",
        section.len(),
        elapsed.as_nanos() as f64 / (iterations * count) as f64
    );
}
