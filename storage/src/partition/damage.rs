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
//! Consumers here are served the batches before a damaged one and an error at it
//! ([`Partition::damage_from`]), never its bytes.

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
                "damaged batch on disk: peers will fetch it from another region; consumers here get KAFKA_STORAGE_ERROR at it"
            );
            telemetry::corrupt_batch_found();
            slot.insert((last, reason));
        }
    }

    /// The first damaged batch that ends at or after `offset`, if one is known: Fetch serves
    /// the batches before it and refuses to serve it (a consumer must not be handed bytes that
    /// no longer match their CRC; librdkafka does not check CRCs by default).
    pub fn damage_from(&self, offset: i64) -> Option<DamagedRange> {
        let damage = self.damage.lock();
        if damage.is_empty() {
            return None;
        }
        let containing = damage
            .range(..=offset)
            .next_back()
            .filter(|(_, (last, _))| *last >= offset);
        containing
            .or_else(|| damage.range(offset..).next())
            .map(|(&first, (last, reason))| DamagedRange {
                first,
                last: *last,
                reason: reason.clone(),
            })
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
