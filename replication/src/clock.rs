//! Vector clocks: `V[j]` is the highest origin sequence of region `j` applied to one partition.

use std::collections::BTreeMap;

use causeway_storage::CausalMeta;

/// A partition's vector clock. Sparse: a region with no batch is absent (zero).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VectorClock {
    entries: BTreeMap<u32, u64>,
}

impl VectorClock {
    /// The clock after the batch described by `meta` was applied: its dependencies joined with
    /// its own sequence. This is how a partition's clock is rebuilt from its last causal entry.
    pub fn after(meta: &CausalMeta) -> VectorClock {
        let mut clock = VectorClock {
            entries: meta.deps.iter().copied().collect(),
        };
        clock.advance(meta.origin_region, meta.origin_seq);
        clock
    }

    /// A clock holding exactly these `(region, seq)` entries (as decoded from the wire).
    pub fn from_deps(deps: &[(u32, u64)]) -> VectorClock {
        let mut clock = VectorClock::default();
        for &(region, seq) in deps {
            clock.advance(region, seq);
        }
        clock
    }

    /// Highest applied sequence of `region`.
    pub fn get(&self, region: u32) -> u64 {
        self.entries.get(&region).copied().unwrap_or(0)
    }

    /// Records that `region`'s batch `seq` was applied (never moves backwards).
    pub fn advance(&mut self, region: u32, seq: u64) {
        let entry = self.entries.entry(region).or_insert(0);
        *entry = (*entry).max(seq);
    }

    /// The entries as stored in causal metadata: sorted by region, zeros left out.
    pub fn to_deps(&self) -> Vec<(u32, u64)> {
        self.entries
            .iter()
            .filter(|(_, seq)| **seq > 0)
            .map(|(region, seq)| (*region, *seq))
            .collect()
    }
}

/// The causal metadata of a batch appended at its origin `region`, given the metadata of the
/// partition's previous batch: `seq = V[region] + 1` and the dependency vector is `V` before the
/// append.
pub fn stamp_local_append(previous: Option<&CausalMeta>, region: u32, hlc: u64) -> CausalMeta {
    let clock = previous.map(VectorClock::after).unwrap_or_default();
    CausalMeta {
        origin_region: region,
        origin_seq: clock.get(region) + 1,
        hlc,
        deps: clock.to_deps(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_local_batch_has_sequence_one_and_no_deps() {
        let meta = stamp_local_append(None, 3, 100);
        assert_eq!(meta.origin_seq, 1);
        assert!(meta.deps.is_empty());
    }

    #[test]
    fn sequences_grow_by_one_and_deps_are_the_clock_before() {
        let first = stamp_local_append(None, 1, 10);
        let second = stamp_local_append(Some(&first), 1, 11);
        assert_eq!(second.origin_seq, 2);
        assert_eq!(second.deps, vec![(1, 1)]);
    }

    #[test]
    fn remote_entries_are_carried_into_local_stamps() {
        let remote = CausalMeta {
            origin_region: 2,
            origin_seq: 5,
            hlc: 50,
            deps: vec![(1, 4), (2, 4)],
        };
        let local = stamp_local_append(Some(&remote), 1, 60);
        assert_eq!(local.origin_seq, 5);
        assert_eq!(local.deps, vec![(1, 4), (2, 5)]);
    }

    #[test]
    fn clock_never_moves_backwards() {
        let mut clock = VectorClock::default();
        clock.advance(1, 5);
        clock.advance(1, 3);
        assert_eq!(clock.get(1), 5);
    }
}
