//! Vector clocks: `V[j]` is the highest origin sequence of region `j` applied to one partition.

use std::collections::BTreeMap;

/// A partition's vector clock. Sparse: a region with no batch is absent (zero).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VectorClock {
    entries: BTreeMap<u32, u64>,
}

impl VectorClock {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_from_deps_holds_exactly_them() {
        let clock = VectorClock::from_deps(&[(1, 4), (2, 5)]);
        assert_eq!(clock.to_deps(), vec![(1, 4), (2, 5)]);
        assert_eq!(clock.get(3), 0);
    }

    #[test]
    fn clock_never_moves_backwards() {
        let mut clock = VectorClock::default();
        clock.advance(1, 5);
        clock.advance(1, 3);
        assert_eq!(clock.get(1), 5);
    }
}
