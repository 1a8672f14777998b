//! What identifies a batch across regions and what its origin stamps on it.

/// Identity of a batch across all regions: its origin region and its sequence there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BatchId {
    /// Region that produced the batch.
    pub origin: u32,
    /// Sequence among that region's batches of the partition, starting at 1.
    pub seq: u64,
}

/// What replication needs to know about one batch: where it came from, its hybrid logical clock
/// and the vector of per-region sequences it causally depends on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CausalMeta {
    /// Id of the region that produced the batch (derived from the region name).
    pub origin_region: u32,
    /// Sequence of the batch among its origin region's batches.
    pub origin_seq: u64,
    /// Hybrid logical clock stamp.
    pub hlc: u64,
    /// Dependencies as (region id, sequence), sorted by region id.
    pub deps: Vec<(u32, u64)>,
}

impl CausalMeta {
    /// The batch this metadata stamps.
    pub fn id(&self) -> BatchId {
        BatchId {
            origin: self.origin_region,
            seq: self.origin_seq,
        }
    }
}
