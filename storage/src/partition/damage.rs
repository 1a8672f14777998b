//! Batches found damaged on disk: a closed segment whose bytes no longer match their CRC (a bad
//! sector, a write lost by the device, a file edited by hand). Recovery only scans the active
//! segment, so such a batch is found when it is read to be sent to another region (every batch
//! leaving for a peer is checked here first) or by the background scrub (`scrub.rs`), whichever
//! reads it first.
//!
//! A damaged batch is recorded once (offset range and reason), logged at error level, counted in
//! `causeway_storage_corrupt_batches_total` and listed by [`Partition::damaged_ranges`] (the
//! broker shows them in `/readyz` and a per-partition gauge) until retention deletes them. The
//! bytes stay as they are: there is no good copy here to put in their place, and the receiving
//! region refuses the copy and fetches the batch from another region (`docs/replication.md`).

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use super::Partition;
use crate::batch::{validate_batch, BatchHeader};
use crate::telemetry;

/// Damaged batches of one partition: first offset to (last offset, why).
#[derive(Debug, Default)]
pub(super) struct Damage(Mutex<BTreeMap<i64, (i64, String)>>);

impl Damage {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<i64, (i64, String)>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One damaged range of offsets, for reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedRange {
    /// First offset of the damaged batch.
    pub first: i64,
    /// Last offset of the damaged batch.
    pub last: i64,
    /// What failed (CRC mismatch, bad magic, ...).
    pub reason: String,
}

impl Partition {
    /// Checks one stored batch (as read, offsets in place) before it leaves this region; a batch
    /// that fails is recorded the first time it is seen. Returns whether it is intact.
    pub fn verify_stored(&self, header: &BatchHeader, batch: &[u8]) -> bool {
        let Err(error) = validate_batch(batch) else {
            return true;
        };
        self.record_damage(header.base_offset, header.last_offset(), error.to_string());
        false
    }

    /// Records offsets `first..=last` as damaged, once per first offset: logged, counted and
    /// listed until retention deletes them.
    pub(super) fn record_damage(&self, first: i64, last: i64, reason: String) {
        let mut damage = self.damage.lock();
        if let Entry::Vacant(slot) = damage.entry(first) {
            tracing::error!(
                dir = %self.dir.display(),
                first_offset = first,
                last_offset = last,
                error = %reason,
                "damaged batch on disk: peers will fetch it from another region; consumers here may fail on it"
            );
            telemetry::corrupt_batch_found();
            slot.insert((last, reason));
        }
    }

    /// Damaged batches found so far that are still on disk, in offset order.
    pub fn damaged_ranges(&self) -> Vec<DamagedRange> {
        let retained = self.retained_start_offset();
        let mut damage = self.damage.lock();
        damage.retain(|_, (last, _)| *last >= retained);
        damage
            .iter()
            .map(|(&first, (last, reason))| DamagedRange {
                first,
                last: *last,
                reason: reason.clone(),
            })
            .collect()
    }
}
