//! Stamps order table writes; observed sets say which writes a `remove` had seen.
//!
//! A [`Stamp`] is DESIGN.md's `ts = (hlc, origin region, seq, index in batch)` plus the
//! partition, compared lexicographically. Causal delivery plus the HLC rule make this order
//! extend causality within a partition, so "highest stamp wins" never lets an older write beat
//! one that had seen it. The stamp alone cannot tell whether two writes were concurrent; the
//! add-wins set needs that, so a remove also records [`Observed`]: the origin positions its
//! batch depended on.
//!
//! One key can live in several partitions (after CreatePartitions its records move to another
//! one), and each partition has its own clocks and sequences: the partition in the stamp keeps
//! two partitions' writes from ever tying, and [`remove_covers`] says what a remove saw of
//! another partition.

use std::collections::BTreeMap;

use causeway_causal::CausalMeta;
use serde::{Deserialize, Serialize};

/// The position of one record in the merged order of all regions' writes.
///
/// Field order is comparison order: hybrid logical clock first (roughly real time), then the
/// origin region, the partition, its batch sequence there and the record's index in the batch,
/// which together make every record's stamp unique.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Stamp {
    /// Hybrid logical clock of the batch at its origin (see [`crate::hlc`]).
    pub hlc: u64,
    /// Region that produced the batch.
    pub origin_region: u32,
    /// Partition of the batch: sequences and clocks are per partition.
    pub partition: u32,
    /// Sequence of the batch among its origin region's batches for the partition.
    pub origin_seq: u64,
    /// Index of the record inside its batch, so records of one batch are ordered and distinct.
    pub index_in_batch: u32,
}

/// How a stamp is written in a row's encoding: `[hlc, region, seq, index]`, with the partition
/// as a fifth number when it is not 0 (so rows of one-partition tables keep their bytes).
impl Serialize for Stamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let len = if self.partition == 0 { 4 } else { 5 };
        let mut tuple = serializer.serialize_tuple(len)?;
        tuple.serialize_element(&self.hlc)?;
        tuple.serialize_element(&self.origin_region)?;
        tuple.serialize_element(&self.origin_seq)?;
        tuple.serialize_element(&self.index_in_batch)?;
        if self.partition != 0 {
            tuple.serialize_element(&self.partition)?;
        }
        tuple.end()
    }
}

impl<'de> Deserialize<'de> for Stamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Stamp, D::Error> {
        deserializer.deserialize_seq(StampVisitor)
    }
}

/// Reads the four or five numbers of an encoded stamp.
struct StampVisitor;

impl<'de> serde::de::Visitor<'de> for StampVisitor {
    type Value = Stamp;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a stamp: [hlc, region, seq, index] or [hlc, region, seq, index, partition]")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Stamp, A::Error> {
        use serde::de::Error;
        let missing = |n| A::Error::invalid_length(n, &self);
        let hlc = seq.next_element()?.ok_or_else(|| missing(0))?;
        let origin_region = seq.next_element()?.ok_or_else(|| missing(1))?;
        let origin_seq = seq.next_element()?.ok_or_else(|| missing(2))?;
        let index_in_batch = seq.next_element()?.ok_or_else(|| missing(3))?;
        let partition = seq.next_element()?.unwrap_or(0);
        if seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
            return Err(A::Error::invalid_length(6, &self));
        }
        Ok(Stamp {
            hlc,
            origin_region,
            partition,
            origin_seq,
            index_in_batch,
        })
    }
}

impl Stamp {
    /// The stamp of record `index_in_batch` of the batch described by `meta` in `partition`,
    /// which is how the materializer stamps what it reads from the log.
    pub fn of_record(meta: &CausalMeta, partition: u32, index_in_batch: u32) -> Stamp {
        Stamp {
            hlc: meta.hlc,
            origin_region: meta.origin_region,
            partition,
            origin_seq: meta.origin_seq,
            index_in_batch,
        }
    }
}

impl std::fmt::Display for Stamp {
    /// `hlc.region.seq.index`, then `.partition` when it is not 0: the form log lines show.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}.{}.{}.{}",
            self.hlc, self.origin_region, self.origin_seq, self.index_in_batch
        )?;
        if self.partition != 0 {
            write!(f, ".{}", self.partition)?;
        }
        Ok(())
    }
}

/// Whether a remove stamped `remove` that had seen `observed` removes the add stamped `add`.
/// Only a remove stamped above an add can have seen it (stamp order extends causality). In the
/// remove's own partition its dependency vector says exactly what it saw. Of another partition
/// (a key spread over partitions after CreatePartitions, whose sequences say nothing about each
/// other) it counts every add stamped below it as seen: stamp order, roughly real time, is the
/// only order partitions share.
pub(crate) fn remove_covers(remove: &Stamp, observed: &Observed, add: &Stamp) -> bool {
    remove > add && (remove.partition != add.partition || observed.covers(add))
}

/// Whether the remove stamped `later` that had seen `seen` removes every add the remove
/// stamped `earlier` that had seen `observed` removes, so the earlier one can be forgotten. Only
/// within one partition: a remove from another partition covers by stamp what the earlier one
/// covered by dependencies, and may miss some of them.
pub(crate) fn remove_implies(
    later: &Stamp,
    seen: &Observed,
    earlier: &Stamp,
    observed: &Observed,
) -> bool {
    later > earlier && later.partition == earlier.partition && seen.includes(observed)
}

/// The writes a `remove` had seen when it was made, in its own partition: per origin region,
/// the highest `(origin_seq, index_in_batch)` included (inclusive). A remove deletes exactly the
/// adds it observed, which is what makes the set add-wins.
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

    /// Whether the write stamped `stamp`, of the same partition, had been seen.
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
            partition: 0,
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
    fn stamps_encode_as_four_numbers_and_a_partition_other_than_0_as_a_fifth() {
        let encoded = serde_json::to_string(&stamp(1, 2, 3, 4)).ok();
        assert_eq!(encoded.as_deref(), Some("[1,2,3,4]"));
        let elsewhere = Stamp {
            partition: 5,
            ..stamp(1, 2, 3, 4)
        };
        let encoded = serde_json::to_string(&elsewhere).unwrap_or_default();
        assert_eq!(encoded, "[1,2,3,4,5]");
        for (text, expected) in [("[1,2,3,4]", stamp(1, 2, 3, 4)), ("[1,2,3,4,5]", elsewhere)] {
            let decoded: Stamp = serde_json::from_str(text).unwrap_or_default();
            assert_eq!(decoded, expected);
        }
        for bad in ["[1,2,3]", "[1,2,3,4,5,6]", "{}"] {
            assert!(serde_json::from_str::<Stamp>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn writes_of_two_partitions_never_tie() {
        let here = stamp(7, 1, 3, 0);
        let there = Stamp {
            partition: 1,
            ..here
        };
        assert_ne!(here, there);
        assert!(here < there);
    }

    #[test]
    fn a_remove_covers_older_adds_of_other_partitions_by_stamp() {
        let remove = Stamp {
            partition: 1,
            ..stamp(50, 1, 2, 0)
        };
        let observed = Observed::of_write(&remove, &[(1, 1)]);
        let old_add = stamp(10, 2, 900, 0);
        let new_add = stamp(60, 2, 1, 0);
        assert!(remove_covers(&remove, &observed, &old_add));
        assert!(!remove_covers(&remove, &observed, &new_add));
        let unseen_here = Stamp {
            partition: 1,
            ..stamp(10, 2, 1, 0)
        };
        assert!(!remove_covers(&remove, &observed, &unseen_here));
    }
}
