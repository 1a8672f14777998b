//! Causal replication between regions (DESIGN.md section 4).
//!
//! Pure building blocks (no sockets, no disks) that the broker wires together:
//! - [`clock`], [`deps_codec`], [`CausalMeta`], [`BatchId`]: the causal types, re-exported from
//!   the leaf crate `causeway-causal`;
//! - [`hlc`]: the hybrid logical clock whose stamps order concurrent writes;
//! - [`region`]: region ids derived from region names;
//! - [`crdt`]: table rows as convergent state (DESIGN.md section 5): record to operation,
//!   stamped apply, merge, canonical encoding; pure, the materializer drives it.
//! - [`delivery`]: the pure per-partition replica (delivery rule, bounded queues, pull
//!   requests and serving, stable cut) over the narrow `BatchLog` seam; `sim`: the
//!   deterministic simulator that tests it, built only for tests and with the `simulation`
//!   feature, so it never ships in the broker;
//! - [`wire`]: the pull messages regions exchange; [`topic_catalog`]: the replicated topic
//!   catalog as a CRDT.

pub mod crdt;
pub mod delivery;
pub mod hlc;
pub mod horizon;
pub mod region;
pub mod security_catalog;
#[cfg(any(test, feature = "simulation"))]
pub mod sim;
pub mod topic_catalog;
pub mod wire;

pub use causeway_causal::{clock, deps_codec, BatchId, CausalMeta, VectorClock};
pub use hlc::HybridClock;
pub use topic_catalog::{
    CatalogChange, CatalogError, CatalogStamp, TopicCatalog, TopicState, TopicView,
};
