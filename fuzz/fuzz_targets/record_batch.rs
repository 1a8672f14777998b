//! A produced batch's records section under every codec: bounded decompression, then record
//! validation and decoding with the count the batch header claims.
#![no_main]

use bytes::Bytes;
use causeway_protocol::records::{decode_all, validate, Codec};
use libfuzzer_sys::fuzz_target;

/// Small, so decompression bombs hit the bound quickly.
const DECOMPRESSED_MAX: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&[attributes, count_byte], section)) = data.split_first_chunk::<2>() else {
        return;
    };
    let Ok(codec) = Codec::from_attributes(i16::from(attributes & 0x07)) else {
        return;
    };
    // Counts near the bytes available, and absurd ones.
    let count = match count_byte {
        0xFF => i32::MAX,
        0xFE => -1,
        n => i32::from(n),
    };
    let section = Bytes::copy_from_slice(section);
    let validated = validate(codec, &section, count, DECOMPRESSED_MAX);
    let decoded = decode_all(codec, &section, count, DECOMPRESSED_MAX);
    // Validation and decoding agree on what is well formed.
    assert_eq!(validated.is_ok(), decoded.is_ok());
    if let Ok(records) = decoded {
        assert_eq!(records.len(), usize::try_from(count).unwrap_or(usize::MAX));
    }
});
