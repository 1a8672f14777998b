//! Causal replication between regions (DESIGN.md section 4).
//!
//! Today one region exists, and this crate provides what every batch is stamped with at its
//! origin so that the on-disk causal metadata is already real:
//! - [`clock`]: the per-partition vector clock and how a local append is stamped from it;
//! - [`hlc`]: the hybrid logical clock whose stamps order concurrent writes.
//!
//! The pull-based transport, delivery queues and anti-entropy build on these (issue 6).

pub mod clock;
pub mod hlc;

pub use clock::{stamp_local_append, VectorClock};
pub use hlc::HybridClock;
