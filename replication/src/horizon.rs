//! How far back every write concurrent with a batch is known to have arrived: what a table's
//! compaction needs before it drops a tombstone.
//!
//! A tombstone that is dropped stops hiding the older writes of its key. A write concurrent with
//! it (made in another region before that region received it) may have an older stamp and still
//! be on its way here after the tombstone became causally stable; applied to a row rebuilt from
//! the compacted log, or to a change feed, it would resurface. So a tombstone may only go once
//! every write concurrent with it is here, below the stable cut, where compaction merges it.
//!
//! Region R's writes concurrent with a batch B were made before R received B, so their sequence
//! is at most R's own position in its durable clock once that clock covers B. The stable cut
//! covers B only once every region's reported durable clock does; their own positions at that
//! moment (the *frontier*) bound everything concurrent with any batch inside that cut. A sample
//! pairs the frontier with a clock inside that cut; when a later sample's clock covers the
//! frontier, every such write is inside it: the earlier sample's clock is then *settled*. The
//! broker samples, at each compaction pass, the clock of the log prefix the pass merges (not the
//! stable cut: a batch inside the cut may still lie past the stable offset in the log), so a
//! tombstone dropped below the settled point is merged with every write concurrent with it. A
//! settled clock lags the stable cut by about one pass and one round of clock reports.

use std::collections::VecDeque;

use crate::delivery::dominated_by;
use crate::VectorClock;

/// Samples kept at most; older ones are dropped (which only delays settling).
const SAMPLES_MAX: usize = 64;

/// Stable cuts and the frontiers they were taken with, oldest first, and the latest settled cut.
#[derive(Debug, Default, Clone)]
pub struct ConcurrencyHorizon {
    samples: VecDeque<(VectorClock, VectorClock)>,
    settled: VectorClock,
}

impl ConcurrencyHorizon {
    /// Records `cut` (a clock inside this pass's stable cut: what the pass merges) and the
    /// `frontier` (per region, its own position in the durable clock it reported with that
    /// stable cut); returns the settled clock: every write concurrent with a batch inside it is
    /// inside `cut`.
    pub fn advance(&mut self, cut: VectorClock, frontier: VectorClock) -> VectorClock {
        while let Some((_, oldest_frontier)) = self.samples.front() {
            if !dominated_by(oldest_frontier, &cut) {
                break;
            }
            if let Some((settled, _)) = self.samples.pop_front() {
                self.settled = settled;
            }
        }
        self.samples.push_back((cut, frontier));
        if self.samples.len() > SAMPLES_MAX {
            self.samples.pop_front();
        }
        self.settled.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock(entries: &[(u32, u64)]) -> VectorClock {
        VectorClock::from_deps(entries)
    }

    #[test]
    fn a_cut_settles_once_a_later_cut_covers_its_frontier() {
        let mut horizon = ConcurrencyHorizon::default();
        // Pass 1: every region holds 1:5 and 2:3; region 2 had written up to 2:7 by then.
        let first = clock(&[(1, 5), (2, 3)]);
        let settled = horizon.advance(first.clone(), clock(&[(1, 5), (2, 7)]));
        assert_eq!(settled, VectorClock::default(), "nothing settled yet");
        // Pass 2: region 2's writes up to 2:6 are stable, not 2:7: not settled.
        let settled = horizon.advance(clock(&[(1, 6), (2, 6)]), clock(&[(1, 6), (2, 9)]));
        assert_eq!(settled, VectorClock::default());
        // Pass 3: up to 2:7 is stable: the first cut settles (not the second: 2:9 is not).
        let settled = horizon.advance(clock(&[(1, 8), (2, 7)]), clock(&[(1, 9), (2, 9)]));
        assert_eq!(settled, first);
        // Pass 4 covers both later frontiers: the third cut settles.
        let settled = horizon.advance(clock(&[(1, 9), (2, 9)]), clock(&[(1, 9), (2, 9)]));
        assert_eq!(settled, clock(&[(1, 8), (2, 7)]));
    }

    #[test]
    fn the_samples_kept_stay_bounded() {
        let mut horizon = ConcurrencyHorizon::default();
        for seq in 1..1_000 {
            // A frontier never covered: nothing settles, and memory stays bounded.
            horizon.advance(clock(&[(1, seq)]), clock(&[(1, u64::MAX)]));
        }
        assert!(horizon.samples.len() <= SAMPLES_MAX);
        assert_eq!(horizon.settled, VectorClock::default());
    }
}
