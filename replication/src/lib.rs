//! Causal replication between regions (DESIGN.md section 4).
//!
//! Pure building blocks (no sockets, no disks) that the broker wires together:
//! - [`clock`]: the per-partition vector clock;
//! - [`hlc`]: the hybrid logical clock whose stamps order concurrent writes;
//! - [`region`]: region ids derived from region names;
//! - [`crdt`]: table rows as convergent state (DESIGN.md section 5): record to operation,
//!   stamped apply, merge, canonical encoding; pure, the materializer drives it.
//! - [`delivery`]: the pure per-partition replica (delivery rule, bounded queues, pull
//!   requests and serving, stable cut) over the narrow `BatchLog` seam; [`deps_codec`]: wire
//!   encodings of dependency vectors; [`sim`]: the deterministic simulator that tests it;
//! - [`wire`]: the pull messages regions exchange; [`topic_catalog`]: the replicated topic
//!   catalog as a CRDT.

pub mod clock;
pub mod crdt;
pub mod delivery;
pub mod deps_codec;
pub mod hlc;
pub mod region;
pub mod sim;
pub mod topic_catalog;
pub mod wire;

pub use clock::VectorClock;
pub use hlc::HybridClock;
pub use topic_catalog::{
    CatalogChange, CatalogError, CatalogStamp, TopicCatalog, TopicState, TopicView,
};
