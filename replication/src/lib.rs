//! Causal replication between regions (DESIGN.md section 4).
//!
//! Today one region exists, and this crate provides what every batch is stamped with at its
//! origin so that the on-disk causal metadata is already real:
//! - [`clock`]: the per-partition vector clock and how a local append is stamped from it;
//! - [`hlc`]: the hybrid logical clock whose stamps order concurrent writes.
//! - [`crdt`]: table rows as convergent state (DESIGN.md section 5): record to operation,
//!   stamped apply, merge, canonical encoding; pure, the materializer drives it.
//! - [`delivery`]: the pure per-partition replica (delivery rule, bounded queues, pull
//!   requests and serving, stable cut) over the narrow `BatchLog` seam; [`deps_codec`]: wire
//!   encodings of dependency vectors; [`sim`]: the deterministic simulator that tests it.
//!
//! The pull-based transport, delivery queues and anti-entropy build on these (issue 6).

pub mod clock;
pub mod crdt;
pub mod delivery;
pub mod deps_codec;
pub mod hlc;
pub mod region;
pub mod sim;
pub mod topic_catalog;
pub mod wire;

pub use clock::{stamp_local_append, VectorClock};
pub use hlc::HybridClock;
pub use topic_catalog::{
    CatalogChange, CatalogError, CatalogStamp, TopicCatalog, TopicState, TopicView,
};
