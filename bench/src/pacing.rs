//! Rate pacing for `e2e`: how many records are due after a given time, and
//! how long to sleep until the next tick. The sender wakes up once per tick
//! (1 ms), sends the records that became due in a burst and sleeps again,
//! so it does not spin on the CPU.

use std::time::Duration;

/// Length of a pacing tick.
pub const TICK: Duration = Duration::from_millis(1);

/// Number of records that should have been sent `elapsed` after the start
/// when sending `rate` records per second.
pub fn due(rate: u64, elapsed: Duration) -> u64 {
    let due = u128::from(rate) * elapsed.as_nanos() / 1_000_000_000;
    u64::try_from(due).unwrap_or(u64::MAX)
}

/// Time to sleep, `elapsed` after the start, until the start of the next
/// tick. Ticks are aligned on the start so sleeping late does not drift.
pub fn until_next_tick(elapsed: Duration) -> Duration {
    let tick = TICK.as_nanos();
    let into_tick = elapsed.as_nanos() % tick;
    let left = tick - into_tick;
    Duration::from_nanos(u64::try_from(left).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_is_proportional_to_time() {
        assert_eq!(due(20_000, Duration::ZERO), 0);
        assert_eq!(due(20_000, Duration::from_millis(1)), 20);
        assert_eq!(due(20_000, Duration::from_micros(1_500)), 30);
        assert_eq!(due(20_000, Duration::from_secs(10)), 200_000);
        // Below one record per tick, records become due every few ticks.
        assert_eq!(due(300, Duration::from_millis(3)), 0);
        assert_eq!(due(300, Duration::from_millis(4)), 1);
        assert_eq!(due(300, Duration::from_secs(1)), 300);
        assert_eq!(due(u64::MAX, Duration::from_secs(u64::MAX)), u64::MAX);
    }

    #[test]
    fn ticks_are_aligned_on_the_start() {
        assert_eq!(until_next_tick(Duration::ZERO), TICK);
        assert_eq!(
            until_next_tick(Duration::from_micros(250)),
            Duration::from_micros(750)
        );
        assert_eq!(
            until_next_tick(Duration::from_micros(7_900)),
            Duration::from_micros(100)
        );
        assert_eq!(until_next_tick(Duration::from_millis(3)), TICK);
    }
}
