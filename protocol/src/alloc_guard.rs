//! The process allocator, with one difference from the system's: huge allocations reserve
//! address space without committing memory.
//!
//! Why: `kafka-protocol` sizes a `Vec` from an array count read off the wire before it decodes
//! the elements, so a 12-byte request announcing 2^31 elements asks for ~150 GB. The system
//! allocator refuses that under Linux's default overcommit heuristic, and a refused allocation
//! aborts the whole process: one bad request would kill every connection. Reserving huge blocks
//! with `MAP_NORESERVE` costs no memory until pages are touched, and a decoder that runs out of
//! input after a few elements touches almost nothing before it fails and frees the block. That
//! turns the abort into the ordinary "malformed request" error. Ordinary allocations go straight
//! to mimalloc, which keeps freed pages for reuse: with the system allocator, every megabyte-sized
//! fetch response was a fresh mapping whose page faults and zeroing cost more than the copy.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};

use mimalloc::MiMalloc;
use std::ptr;

/// Allocations of at least this many bytes are reserved lazily. Nothing the broker allocates on
/// purpose comes near it: frames are capped by `socket.request.max.bytes` (at most 2 GiB).
const RESERVE_LAZILY_BYTES: usize = 1 << 32;

/// Largest alignment an mmap'd block satisfies (it is page aligned).
const PAGE_BYTES: usize = 4096;

/// The global allocator for every binary that decodes requests: install it with
/// `#[global_allocator]` in the binary (the `causeway` binary and the request fuzz target do).
pub struct GuardedAllocator;

fn reserved_lazily(layout: Layout) -> bool {
    layout.size() >= RESERVE_LAZILY_BYTES && layout.align() <= PAGE_BYTES
}

// SAFETY: every block is either from `MiMalloc` (and returned to it with the same layout) or from
// an anonymous private mapping of exactly `layout.size()` bytes (and unmapped with that size);
// `reserved_lazily(layout)` decides which, and the layout given to `dealloc` is the one given to
// `alloc`, so each block goes back where it came from. Mappings are page aligned and zeroed.
unsafe impl GlobalAlloc for GuardedAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if reserved_lazily(layout) {
            // SAFETY: a fresh anonymous mapping; no existing memory is affected.
            let block = unsafe {
                libc::mmap(
                    ptr::null_mut(),
                    layout.size(),
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            if block == libc::MAP_FAILED {
                ptr::null_mut()
            } else {
                block.cast()
            }
        } else {
            // SAFETY: forwarded unchanged.
            unsafe { MiMalloc.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if reserved_lazily(layout) {
            // SAFETY: anonymous mappings are zero-filled.
            unsafe { self.alloc(layout) }
        } else {
            // SAFETY: forwarded unchanged.
            unsafe { MiMalloc.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        if reserved_lazily(layout) {
            // SAFETY: `block` is a mapping of `layout.size()` bytes made by `alloc`.
            unsafe {
                libc::munmap(block.cast(), layout.size());
            }
        } else {
            // SAFETY: `block` came from `MiMalloc.alloc` with this layout.
            unsafe { MiMalloc.dealloc(block, layout) }
        }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return ptr::null_mut();
        };
        if !reserved_lazily(layout) && !reserved_lazily(new_layout) {
            // SAFETY: both the old and the new block belong to `MiMalloc`.
            return unsafe { MiMalloc.realloc(block, layout, new_size) };
        }
        // SAFETY: a new block from this allocator, the overlap copied, the old block returned
        // with its own layout.
        unsafe {
            let moved = self.alloc(new_layout);
            if !moved.is_null() {
                ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                self.dealloc(block, layout);
            }
            moved
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::request::{decode_request, RequestError};
    use bytes::{BufMut, Bytes, BytesMut};

    #[test]
    fn array_count_of_two_billion_is_a_malformed_request_not_an_abort() {
        let mut frame = BytesMut::new();
        frame.put_i16(3); // Metadata
        frame.put_i16(4);
        frame.put_i32(1); // correlation id
        frame.put_i16(-1); // null client id
        frame.put_i32(i32::MAX); // topics array count, then nothing
        let decoded = decode_request(Bytes::from(frame));
        assert!(matches!(decoded, Err(RequestError::Malformed { .. })));
    }
}
