//! The causal types shared by storage (which stores them beside each batch), replication (which
//! decides with them) and the broker (which carries them between the two). A leaf crate with no
//! dependencies, so the replication core depends on no storage engine and a fuzz target or tool
//! can link it alone.
//!
//! - [`meta`]: [`BatchId`] and [`CausalMeta`], stamped on every batch at its origin;
//! - [`clock`]: the per-partition [`VectorClock`];
//! - [`deps_codec`]: wire encodings of dependency vectors.

pub mod clock;
pub mod deps_codec;
pub mod meta;

pub use clock::VectorClock;
pub use meta::{BatchId, CausalMeta};
