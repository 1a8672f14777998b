//! Leader epochs: how a client learns that a log it read from lost a tail. A Causeway region is
//! one broker holding every partition, so there is no leader election; instead each opening of a
//! partition's log (a broker start) begins a new epoch at the log end left after recovery.
//! Every batch appended is stamped with the epoch in force, Metadata and ListOffsets report it,
//! and OffsetForLeaderEpoch answers where an earlier epoch ended. A consumer that read offsets a
//! power loss took away (an unsynced tail cut by recovery) asks where its epoch ended, finds it
//! below its position, and resets (KIP-320) instead of silently skipping the records later
//! written at those offsets. Epochs are a region's own: another region's log orders batches
//! differently, so its offsets and epochs say nothing about this one's.
//!
//! The history is `(epoch, start offset)` pairs in `leader-epoch.checkpoint`, written (fsynced)
//! when the partition opens, before any batch can carry the new epoch.

use std::path::Path;

use crate::checkpoint;
use crate::error::StorageError;

/// File name of the epoch history.
const EPOCHS_FILE: &str = "leader-epoch.checkpoint";

/// Most epochs kept: the oldest are dropped past it (they start below the log start long before).
const EPOCHS_KEPT: usize = 1_000;

/// Kafka's answer for an epoch or offset it cannot place.
const UNDEFINED: i64 = -1;

/// The epoch history of one partition, fixed while it is open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderEpochs {
    /// `(epoch, first offset)`, epochs and offsets ascending.
    entries: Vec<(i32, i64)>,
}

impl LeaderEpochs {
    /// Reads the history of the log in `dir` and begins the next epoch at `log_end`: epochs that
    /// began at or past `log_end` (recovery cut their batches) are forgotten, and the new one
    /// takes the next number, so an epoch number never names two different histories. A log
    /// from before epochs existed holds epoch 0 from `log_start`.
    pub fn open_next(dir: &Path, log_start: i64, log_end: i64) -> Result<Self, StorageError> {
        let stored = checkpoint::read(dir, EPOCHS_FILE)?.unwrap_or_default();
        let mut entries: Vec<(i32, i64)> = stored
            .chunks_exact(2)
            .filter_map(|pair| Some((i32::try_from(pair[0]).ok()?, pair[1])))
            .collect();
        let well_formed = entries
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1);
        if !well_formed {
            entries.clear();
        }
        let next = match entries.last() {
            Some(&(epoch, _)) => epoch.saturating_add(1),
            None if log_end > log_start => 1,
            None => 0,
        };
        if entries.is_empty() && log_end > log_start {
            entries.push((0, log_start));
        }
        entries.retain(|&(_, start)| start < log_end);
        entries.push((next, log_end));
        let mut epochs = LeaderEpochs { entries };
        epochs.forget_below(log_start);
        let flat: Vec<i64> = epochs
            .entries
            .iter()
            .flat_map(|&(epoch, start)| [i64::from(epoch), start])
            .collect();
        checkpoint::write(dir, EPOCHS_FILE, &flat)?;
        Ok(epochs)
    }

    /// Drops epochs that ended at or below `log_start` (keeping the one in force there), and the
    /// oldest past [`EPOCHS_KEPT`].
    fn forget_below(&mut self, log_start: i64) {
        let in_force_at_start = self
            .entries
            .iter()
            .rposition(|&(_, start)| start <= log_start)
            .unwrap_or(0);
        let excess = self.entries.len().saturating_sub(EPOCHS_KEPT);
        self.entries.drain(..in_force_at_start.max(excess));
    }

    /// The epoch appends are stamped with now.
    pub fn current(&self) -> i32 {
        self.entries.last().map_or(0, |&(epoch, _)| epoch)
    }

    /// The epoch the batch holding `offset` was appended in.
    pub fn at(&self, offset: i64) -> i32 {
        self.entries
            .iter()
            .rev()
            .find(|&&(_, start)| start <= offset)
            .or(self.entries.first())
            .map_or(0, |&(epoch, _)| epoch)
    }

    /// Where `epoch` ended, as OffsetForLeaderEpoch answers (Kafka's rule): the current epoch
    /// ends at `log_end`; an earlier one at the start of the first later epoch, reported with the
    /// largest epoch not above the one asked (the asked one itself if none is older); an epoch
    /// past the current one is undefined.
    pub fn end_of(&self, epoch: i32, log_end: i64) -> (i32, i64) {
        if epoch < 0 {
            return (-1, UNDEFINED);
        }
        if epoch == self.current() {
            return (epoch, log_end);
        }
        let Some(&(_, next_start)) = self.entries.iter().find(|&&(e, _)| e > epoch) else {
            return (-1, UNDEFINED);
        };
        let floor = self
            .entries
            .iter()
            .rev()
            .find(|&&(e, _)| e <= epoch)
            .map_or(epoch, |&(e, _)| e);
        (floor, next_start)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn history(epochs: &LeaderEpochs) -> Vec<(i32, i64)> {
        epochs.entries.clone()
    }

    #[test]
    fn each_opening_begins_the_next_epoch_at_the_log_end() {
        let dir = tempfile::tempdir().unwrap();
        let first = LeaderEpochs::open_next(dir.path(), 0, 0).unwrap();
        assert_eq!(history(&first), vec![(0, 0)]);
        let second = LeaderEpochs::open_next(dir.path(), 0, 10).unwrap();
        assert_eq!(history(&second), vec![(0, 0), (1, 10)]);
        let third = LeaderEpochs::open_next(dir.path(), 0, 25).unwrap();
        assert_eq!(third.current(), 2);
        assert_eq!(third.at(0), 0);
        assert_eq!(third.at(9), 0);
        assert_eq!(third.at(10), 1);
        assert_eq!(third.at(30), 2);
    }

    #[test]
    fn a_log_from_before_epochs_holds_epoch_zero() {
        let dir = tempfile::tempdir().unwrap();
        let epochs = LeaderEpochs::open_next(dir.path(), 5, 40).unwrap();
        assert_eq!(history(&epochs), vec![(0, 5), (1, 40)]);
    }

    #[test]
    fn epochs_whose_batches_recovery_cut_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        LeaderEpochs::open_next(dir.path(), 0, 0).unwrap();
        LeaderEpochs::open_next(dir.path(), 0, 10).unwrap();
        // Epoch 1 wrote 10..20, then a power loss cut the log back to 7.
        let after = LeaderEpochs::open_next(dir.path(), 0, 7).unwrap();
        assert_eq!(history(&after), vec![(0, 0), (2, 7)]);
        // A consumer that read up to 20 in epoch 1 learns its epoch ended at 7.
        assert_eq!(after.end_of(1, 12), (0, 7));
        assert_eq!(after.end_of(0, 12), (0, 7));
        assert_eq!(after.end_of(2, 12), (2, 12));
        assert_eq!(after.end_of(3, 12), (-1, UNDEFINED));
        assert_eq!(after.end_of(-1, 12), (-1, UNDEFINED));
    }

    #[test]
    fn old_epochs_below_the_log_start_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        for end in [0, 10, 20, 30] {
            LeaderEpochs::open_next(dir.path(), 0, end).unwrap();
        }
        let epochs = LeaderEpochs::open_next(dir.path(), 25, 40).unwrap();
        assert_eq!(history(&epochs), vec![(2, 20), (3, 30), (4, 40)]);
        assert_eq!(epochs.end_of(1, 50), (1, 20));
    }

    #[test]
    fn a_torn_history_starts_again_from_epoch_zero() {
        let dir = tempfile::tempdir().unwrap();
        checkpoint::write(dir.path(), EPOCHS_FILE, &[3, 10, 2, 5]).unwrap();
        let epochs = LeaderEpochs::open_next(dir.path(), 0, 12).unwrap();
        assert_eq!(history(&epochs), vec![(0, 0), (1, 12)]);
    }
}
