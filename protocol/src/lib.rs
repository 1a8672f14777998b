//! Kafka wire protocol for Causeway: bytes in, typed requests out, typed responses back to bytes.
//!
//! - [`frame`] finds complete length-prefixed frames and enforces the frame size limit before
//!   anything is allocated for a frame.
//! - [`versions`] is the one table of API keys and version ranges the broker implements; it is
//!   what ApiVersions advertises and what requests are checked against.
//! - [`request`] decodes a frame's header and body through the `kafka-protocol` crate, after the
//!   API key and version were checked against [`versions`].
//! - [`response`] encodes a response body with its header and length prefix;
//!   [`spliced`] does so for Fetch with the record sets left out of the copy, sent by reference.
//! - [`records`] reads a record batch's records with decompression and every count bounded.
//! - [`client`] is the other side: encode a request, read and decode its response, over any
//!   byte stream (the CLI and tests bring the socket).
//!
//! - [`alloc_guard`] is the allocator every binary that decodes requests with this crate should
//!   install: the decoder's safety against absurd array counts depends on it (see there). The
//!   crate offers it and does not install it, so each binary chooses its own allocator.
//!
//! This crate knows nothing of sockets or disks.

pub mod alloc_guard;
pub mod client;
pub mod frame;
pub mod plain_batch;
pub mod records;
pub mod request;
pub mod response;
pub mod spliced;
pub mod versions;

pub use kafka_protocol;

/// This crate's own tests decode hostile frames, so they run under the allocator the broker uses.
#[cfg(test)]
#[global_allocator]
static TEST_ALLOCATOR: alloc_guard::GuardedAllocator = alloc_guard::GuardedAllocator;
