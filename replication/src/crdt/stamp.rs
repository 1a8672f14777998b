//! Stamps order table writes; observed sets say which writes a `remove` had seen.
//!
//! A [`Stamp`] is DESIGN.md's `ts = (hlc, origin region, seq, index in batch)`, compared
//! lexicographically. Causal delivery plus the HLC rule make this order extend causality, so
//! "highest stamp wins" never lets an older write beat one that had seen it. The stamp alone
//! cannot tell whether two writes were concurrent; the add-wins set needs that, so a remove also
//! records [`Observed`]: the origin positions its batch depended on.

use std::collections::BTreeMap;

use causeway_causal::CausalMeta;
use serde::{Deserialize, Serialize};

/// The position of one record in the merged order of all regions' writes.
///
/// Field order is comparison order: hybrid logical clock first (roughly real time), then the
/// origin region, its batch sequence and the record's index in the batch, which together make
/// every record's stamp unique.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(from = "StampTuple", into = "StampTuple")]
pub struct Stamp {
    /// Hybrid logical clock of the batch at its origin (see [`crate::hlc`]).
    pub hlc: u64,
    /// Region that produced the batch.
    pub origin_region: u32,
    /// Sequence of the batch among its origin region's batches for the partition.
    pub origin_seq: u64,
    /// Index of the record inside its batch, so records of one batch are ordered and distinct.
    pub index_in_batch: u32,
}

/// How a stamp is written in a row's encoding: a four-element array, smaller than an object.
type StampTuple = (u64, u32, u64, u32);

impl From<StampTuple> for Stamp {
    fn from((hlc, origin_region, origin_seq, index_in_batch): StampTuple) -> Stamp {
        Stamp {
            hlc,
            origin_region,
            origin_seq,
            index_in_batch,
        }
    }
}

impl From<Stamp> for StampTuple {
    fn from(stamp: Stamp) -> StampTuple {
        (
            stamp.hlc,
            stamp.origin_region,
            stamp.origin_seq,
            stamp.index_in_batch,
        )
    }
}

impl Stamp {
    /// The stamp of record `index_in_batch` of the batch described by `meta`, which is how the
    /// materializer stamps what it reads from the log.
    pub fn of_record(meta: &CausalMeta, index_in_batch: u32) -> Stamp {
        Stamp {
            hlc: meta.hlc,
            origin_region: meta.origin_region,
            origin_seq: meta.origin_seq,
            index_in_batch,
        }
    }
}

impl std::fmt::Display for Stamp {
    /// `hlc.region.seq.index`, the form log lines and the CLI show.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}.{}.{}.{}",
            self.hlc, self.origin_region, self.origin_seq, self.index_in_batch
        )
    }
}

/// The writes a `remove` had seen when it was made: per origin region, the highest
/// `(origin_seq, index_in_batch)` included (inclusive). A remove deletes exactly the adds it
/// observed, which is what makes the set add-wins.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(from = "Vec<(u32, u64, u32)>", into = "Vec<(u32, u64, u32)>")]
pub(crate) struct Observed {
    seen: BTreeMap<u32, (u64, u32)>,
}

impl From<Vec<(u32, u64, u32)>> for Observed {
    fn from(entries: Vec<(u32, u64, u32)>) -> Observed {
        let mut observed = Observed::default();
        for (region, seq, index) in entries {
            observed.include(region, (seq, index));
        }
        observed
    }
}

impl From<Observed> for Vec<(u32, u64, u32)> {
    fn from(observed: Observed) -> Vec<(u32, u64, u32)> {
        observed
            .seen
            .into_iter()
            .map(|(region, (seq, index))| (region, seq, index))
            .collect()
    }
}

impl Observed {
    /// What the write stamped `stamp` had seen: every batch of its dependency vector `deps`
    /// (whole batches) and the earlier records of its own batch and region.
    pub(crate) fn of_write(stamp: &Stamp, deps: &[(u32, u64)]) -> Observed {
        let mut observed = Observed::default();
        for &(region, seq) in deps {
            observed.include(region, (seq, u32::MAX));
        }
        observed.include(
            stamp.origin_region,
            (stamp.origin_seq, stamp.index_in_batch),
        );
        observed
    }

    fn include(&mut self, region: u32, position: (u64, u32)) {
        let entry = self.seen.entry(region).or_insert(position);
        *entry = (*entry).max(position);
    }

    /// Whether the write stamped `stamp` had been seen.
    pub(crate) fn covers(&self, stamp: &Stamp) -> bool {
        self.seen
            .get(&stamp.origin_region)
            .is_some_and(|&position| (stamp.origin_seq, stamp.index_in_batch) <= position)
    }

    /// Whether everything `other` saw was also seen here.
    pub(crate) fn includes(&self, other: &Observed) -> bool {
        other
            .seen
            .iter()
            .all(|(region, position)| self.seen.get(region).is_some_and(|mine| mine >= position))
    }

    /// Pointwise maximum: what either saw.
    pub(crate) fn join(&mut self, other: &Observed) {
        for (&region, &position) in &other.seen {
            self.include(region, position);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(hlc: u64, region: u32, seq: u64, index: u32) -> Stamp {
        Stamp {
            hlc,
            origin_region: region,
            origin_seq: seq,
            index_in_batch: index,
        }
    }

    #[test]
    fn stamps_order_by_clock_then_region_then_sequence_then_index() {
        assert!(stamp(1, 9, 9, 9) < stamp(2, 0, 0, 0));
        assert!(stamp(2, 1, 9, 9) < stamp(2, 2, 0, 0));
        assert!(stamp(2, 2, 1, 9) < stamp(2, 2, 2, 0));
        assert!(stamp(2, 2, 2, 0) < stamp(2, 2, 2, 1));
    }

    #[test]
    fn a_remove_observes_its_dependencies_and_earlier_records_of_its_batch() {
        let remove = stamp(50, 1, 4, 2);
        let observed = Observed::of_write(&remove, &[(1, 3), (2, 7)]);
        assert!(observed.covers(&stamp(10, 2, 7, 100)));
        assert!(!observed.covers(&stamp(10, 2, 8, 0)));
        assert!(observed.covers(&stamp(49, 1, 4, 1)));
        assert!(!observed.covers(&stamp(49, 1, 4, 3)));
        assert!(!observed.covers(&stamp(1, 3, 1, 0)));
    }

    #[test]
    fn stamps_encode_as_four_numbers() {
        let encoded = serde_json::to_string(&stamp(1, 2, 3, 4)).ok();
        assert_eq!(encoded.as_deref(), Some("[1,2,3,4]"));
    }
}
