//! Hybrid logical clock: physical milliseconds in the high 48 bits, a logical counter in the low
//! 16. Stamps never go backwards even if the wall clock does, and stay close to wall time so
//! last-writer-wins between regions means roughly "latest in real time".

/// Bits of the logical counter.
const LOGICAL_BITS: u32 = 16;

/// A region's hybrid logical clock; time is passed in so simulations control it.
#[derive(Debug, Clone, Default)]
pub struct HybridClock {
    last: u64,
}

impl HybridClock {
    /// A clock that continues after `last` (for instance the newest stamp found on disk).
    pub fn resume(last: u64) -> HybridClock {
        HybridClock { last }
    }

    /// A fresh stamp for a local event at wall time `wall_ms`, greater than every earlier one.
    pub fn tick(&mut self, wall_ms: u64) -> u64 {
        let physical = wall_ms << LOGICAL_BITS;
        self.last = physical.max(self.last.saturating_add(1));
        self.last
    }

    /// Folds in a stamp seen from elsewhere, so later local stamps exceed it.
    pub fn observe(&mut self, stamp: u64) {
        self.last = self.last.max(stamp);
    }

    /// The wall-clock milliseconds a stamp was taken at.
    pub fn physical_ms(stamp: u64) -> u64 {
        stamp >> LOGICAL_BITS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_grow_when_the_wall_clock_stalls_or_goes_back() {
        let mut clock = HybridClock::default();
        let a = clock.tick(1000);
        let b = clock.tick(1000);
        let c = clock.tick(900);
        assert!(a < b && b < c);
        assert_eq!(HybridClock::physical_ms(c), 1000);
    }

    #[test]
    fn observed_stamps_are_exceeded() {
        let mut clock = HybridClock::default();
        clock.observe(5000 << LOGICAL_BITS);
        assert!(clock.tick(10) > 5000 << LOGICAL_BITS);
    }
}
