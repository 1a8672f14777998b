//! Frames as a client sends them: the length prefix check, then the request header and body
//! of every API the broker accepts. Nothing may panic, hang or allocate beyond the input's
//! size times a small factor.
#![no_main]

use bytes::Bytes;
use causeway_protocol::frame::{check_frame, FrameCheck, FRAME_PREFIX_BYTES};
use causeway_protocol::request::decode_request;
use libfuzzer_sys::fuzz_target;

/// The broker's allocator: without it an array count of 2^31 is a 150 GB allocation the broker
/// never makes (see `causeway_protocol::alloc_guard`).
#[global_allocator]
static ALLOCATOR: causeway_protocol::alloc_guard::GuardedAllocator =
    causeway_protocol::alloc_guard::GuardedAllocator;

/// The broker's default `socket.request.max.bytes`.
const BODY_BYTES_MAX: usize = 104_857_600;

fuzz_target!(|data: &[u8]| {
    if let Ok(FrameCheck::Complete { body_bytes }) = check_frame(data, BODY_BYTES_MAX) {
        if let Some(body) = data.get(FRAME_PREFIX_BYTES..FRAME_PREFIX_BYTES + body_bytes) {
            let _ = decode_request(Bytes::copy_from_slice(body));
        }
    }
    // The body alone too, so the fuzzer need not learn the prefix first.
    let _ = decode_request(Bytes::copy_from_slice(data));
});
