//! Which keys a compaction pass writes back, and where: a pure decision, property-tested.
//!
//! A pass reads the closed segments `0..n` of a partition (oldest first). Every key it saw
//! gets one record, at the offset of its last record in the pass and so in the segment that
//! held that record, holding the merged row. The exception is a **deleted row** (its newest
//! write is a tombstone), which is dropped once
//! - `delete.retention.ms` has passed since the tombstone was written (the physical time of
//!   its hybrid-logical-clock stamp), so consumers that read the log more slowly than that
//!   still see the deletion, and
//! - all its records are in one segment, so the swap of that one segment removes them all at
//!   once: a crash between the swaps of a pass can never leave an older record of the key
//!   without the tombstone that hides it. After one pass a key's records are in one segment,
//!   so the next pass after the deadline drops it, and
//! - its records lie below the settled offset: every write made concurrently with them in any
//!   region has arrived (`causeway_replication::horizon`), so no older write of the key can
//!   come later and show through the dropped tombstone.
//!
//! A row with no write at all (every record of the key was refused) is dropped too: there is
//! nothing to write.

use std::collections::HashMap;
use std::hash::Hash;

/// What a pass learned about one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFacts {
    /// Offset of the key's last record in the pass.
    pub last_offset: i64,
    /// Index (in the pass) of the segment holding that record.
    pub last_segment: usize,
    /// Distinct segments holding the key's records, ascending.
    pub segments: Vec<usize>,
    /// The merged row's state.
    pub state: RowState,
}

/// The state of a merged row that decides its fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowState {
    /// The row shows a value.
    Live,
    /// The row is deleted; its tombstone was written at this wall-clock time (ms).
    Deleted {
        /// Physical time of the tombstone's stamp.
        deleted_at_ms: i64,
    },
    /// No write applies (every record was refused).
    Empty,
}

impl KeyFacts {
    /// Facts for a key first seen at `offset` in segment `segment`.
    pub fn first(offset: i64, segment: usize) -> KeyFacts {
        KeyFacts {
            last_offset: offset,
            last_segment: segment,
            segments: vec![segment],
            state: RowState::Empty,
        }
    }

    /// Records another record of the key (segments are visited in order).
    pub fn saw(&mut self, offset: i64, segment: usize) {
        self.last_offset = self.last_offset.max(offset);
        if offset == self.last_offset {
            self.last_segment = segment;
        }
        if self.segments.last() != Some(&segment) {
            self.segments.push(segment);
        }
    }
}

/// What a pass writes back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout<K> {
    /// Per segment of the pass, the keys written back there with their offsets, ascending.
    pub per_segment: Vec<Vec<(i64, K)>>,
    /// Per segment, whether its content changes (a record moves out, merges or is dropped):
    /// an unchanged segment that was already cleaned need not be rewritten.
    pub changed: Vec<bool>,
    /// When the earliest kept tombstone may be dropped.
    pub tombstones_due_ms: Option<i64>,
}

/// Decides the layout of a pass over `segments` segments (see the module docs). `cleaned`
/// says which segments an earlier pass wrote; tombstones go only below `settled_below`.
pub fn layout<K: Clone + Eq + Hash>(
    keys: &HashMap<K, KeyFacts>,
    cleaned: &[bool],
    now_ms: i64,
    delete_retention_ms: i64,
    settled_below: i64,
) -> Layout<K> {
    let n = cleaned.len();
    let mut per_segment: Vec<Vec<(i64, K)>> = vec![Vec::new(); n];
    let mut changed: Vec<bool> = cleaned.iter().map(|c| !c).collect();
    let mut tombstones_due_ms: Option<i64> = None;
    for (key, facts) in keys {
        let mark = |changed: &mut Vec<bool>, i: usize| {
            if let Some(c) = changed.get_mut(i) {
                *c = true;
            }
        };
        if facts.segments.len() > 1 {
            for &i in &facts.segments {
                mark(&mut changed, i);
            }
        }
        let keep = match facts.state {
            RowState::Live => true,
            RowState::Empty => false,
            RowState::Deleted { deleted_at_ms } => {
                let due = deleted_at_ms.saturating_add(delete_retention_ms);
                let drop =
                    facts.segments.len() == 1 && due <= now_ms && facts.last_offset < settled_below;
                if !drop {
                    tombstones_due_ms = Some(tombstones_due_ms.map_or(due, |t| t.min(due)));
                }
                !drop
            }
        };
        if keep {
            if let Some(slot) = per_segment.get_mut(facts.last_segment) {
                slot.push((facts.last_offset, key.clone()));
            }
        } else {
            mark(&mut changed, facts.last_segment);
        }
    }
    for slot in &mut per_segment {
        slot.sort_by_key(|(offset, _)| *offset);
    }
    Layout {
        per_segment,
        changed,
        tombstones_due_ms,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// One record of a generated log: key, segment, and whether it leaves the row deleted
    /// (the last record of a key decides its state in these tests).
    #[derive(Debug, Clone)]
    struct Written {
        key: u8,
        deletes: bool,
        at_ms: i64,
    }

    fn written() -> impl Strategy<Value = Written> {
        (0u8..6, any::<bool>(), 0i64..100).prop_map(|(key, deletes, at_ms)| Written {
            key,
            deletes,
            at_ms,
        })
    }

    /// Lays records out in segments of `per_segment` records, offsets 0.., and gathers facts.
    fn facts_of(records: &[Written], per_segment: usize) -> (HashMap<u8, KeyFacts>, usize) {
        let mut keys: HashMap<u8, KeyFacts> = HashMap::new();
        for (offset, w) in records.iter().enumerate() {
            let segment = offset / per_segment;
            let offset = offset as i64;
            let facts = keys
                .entry(w.key)
                .and_modify(|f| f.saw(offset, segment))
                .or_insert_with(|| KeyFacts::first(offset, segment));
            facts.state = if w.deletes {
                RowState::Deleted {
                    deleted_at_ms: w.at_ms,
                }
            } else {
                RowState::Live
            };
        }
        (keys, records.len().div_ceil(per_segment))
    }

    proptest! {
        #[test]
        fn one_record_per_kept_key_at_its_last_offset_and_tombstones_go_only_when_allowed(
            records in proptest::collection::vec(written(), 1..60),
            per_segment in 1usize..8,
            now in 0i64..200,
            retention in 0i64..100,
            settled in 0i64..70,
            cleaned_seed in any::<u64>(),
        ) {
            let (keys, n) = facts_of(&records, per_segment);
            let cleaned: Vec<bool> = (0..n).map(|i| cleaned_seed >> (i % 64) & 1 == 1).collect();
            let out = layout(&keys, &cleaned, now, retention, settled);
            prop_assert_eq!(out.per_segment.len(), n);
            let mut seen = HashMap::new();
            for (i, slot) in out.per_segment.iter().enumerate() {
                prop_assert!(slot.windows(2).all(|w| w[0].0 < w[1].0), "offsets ascend");
                for (offset, key) in slot {
                    prop_assert!(seen.insert(*key, (*offset, i)).is_none(), "key {} twice", key);
                    prop_assert_eq!((*offset as usize) / per_segment, i);
                }
            }
            let mut earliest_due: Option<i64> = None;
            for (key, facts) in &keys {
                let last = records.iter().rposition(|w| w.key == *key).unwrap() as i64;
                match (facts.state, seen.get(key)) {
                    (RowState::Live, Some(&(offset, _))) => prop_assert_eq!(offset, last),
                    (RowState::Live, None) => prop_assert!(false, "live key {} lost", key),
                    (RowState::Deleted { deleted_at_ms }, placed) => {
                        let due = deleted_at_ms + retention;
                        let may_drop =
                            facts.segments.len() == 1 && due <= now && last < settled;
                        prop_assert_eq!(placed.is_none(), may_drop);
                        if let Some(&(offset, _)) = placed {
                            prop_assert_eq!(offset, last);
                            earliest_due = Some(earliest_due.map_or(due, |t| t.min(due)));
                        }
                    }
                    (RowState::Empty, _) => unreachable!(),
                }
            }
            prop_assert_eq!(out.tombstones_due_ms, earliest_due);
            // A segment left as it was must have been cleaned and hold only keys that stay.
            for (i, changed) in out.changed.iter().enumerate() {
                if !changed {
                    prop_assert!(cleaned[i]);
                    for facts in keys.values().filter(|f| f.segments.contains(&i)) {
                        prop_assert_eq!(facts.segments.len(), 1);
                        prop_assert!(seen.contains_key(&records[facts.last_offset as usize].key));
                    }
                }
            }
        }
    }

    #[test]
    fn a_tombstone_spread_over_segments_waits_for_the_next_pass() {
        let mut keys = HashMap::new();
        let mut facts = KeyFacts::first(3, 0);
        facts.saw(12, 1);
        facts.state = RowState::Deleted { deleted_at_ms: 0 };
        keys.insert("k", facts);
        let out = layout(&keys, &[true, true], 1_000, 10, i64::MAX);
        assert_eq!(out.per_segment, vec![vec![], vec![(12, "k")]]);
        assert_eq!(out.changed, vec![true, true]);
        assert_eq!(out.tombstones_due_ms, Some(10));
        let mut keys = HashMap::new();
        let mut facts = KeyFacts::first(12, 1);
        facts.state = RowState::Deleted { deleted_at_ms: 0 };
        keys.insert("k", facts);
        let out = layout(&keys, &[true, true], 1_000, 10, i64::MAX);
        assert_eq!(out.per_segment, vec![vec![], vec![]]);
        assert_eq!(out.changed, vec![false, true]);
        assert_eq!(out.tombstones_due_ms, None);
    }

    #[test]
    fn a_tombstone_waits_until_every_concurrent_write_has_arrived() {
        let mut keys = HashMap::new();
        let mut facts = KeyFacts::first(12, 1);
        facts.state = RowState::Deleted { deleted_at_ms: 0 };
        keys.insert("k", facts);
        let out = layout(&keys, &[true, true], 1_000, 10, 12);
        assert_eq!(out.per_segment, vec![vec![], vec![(12, "k")]], "kept");
        assert_eq!(out.tombstones_due_ms, Some(10), "and looked at again");
        let out = layout(&keys, &[true, true], 1_000, 10, 13);
        assert_eq!(
            out.per_segment,
            vec![vec![], vec![]],
            "dropped once settled"
        );
    }
}
