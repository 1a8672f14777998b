//! Origins to fetch from every peer for a while because some peer served a damaged copy of one
//! of their batches.
//!
//! While the mesh is healthy each origin's batches come from the origin itself (see
//! `link::wanted_origins`). A region whose disk damaged a batch keeps serving the damaged copy
//! (it has no other), and the receiver refuses it; without a detour the receiver would ask the
//! same region forever. So a refused copy of origin `o` makes this region ask every peer for
//! `o`'s batches for [`DETOUR_MS`]: any region holding an intact copy serves it, and duplicates
//! are dropped as usual. Each new damaged copy extends the detour.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// How long one damaged copy widens the pulls for its origin.
pub const DETOUR_MS: i64 = 60_000;

/// Per origin, until when its batches are asked of every peer.
#[derive(Debug, Default)]
pub struct Detours(Mutex<BTreeMap<u32, i64>>);

impl Detours {
    /// Records that a peer served a damaged copy of a batch of `origin` at `now_ms`.
    pub fn damaged_copy(&self, origin: u32, now_ms: i64) {
        let until = now_ms.saturating_add(DETOUR_MS);
        let mut detours = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let slot = detours.entry(origin).or_insert(until);
        *slot = (*slot).max(until);
    }

    /// Whether `origin`'s batches are to be asked of every peer at `now_ms`.
    pub fn active(&self, origin: u32, now_ms: i64) -> bool {
        let mut detours = self.0.lock().unwrap_or_else(|p| p.into_inner());
        detours.retain(|_, until| *until > now_ms);
        detours.contains_key(&origin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_copy_widens_pulls_for_its_origin_until_the_detour_expires() {
        let detours = Detours::default();
        assert!(!detours.active(7, 0));
        detours.damaged_copy(7, 1_000);
        assert!(detours.active(7, 1_000));
        assert!(!detours.active(8, 1_000), "other origins are untouched");
        detours.damaged_copy(7, 30_000);
        assert!(
            detours.active(7, 1_000 + DETOUR_MS),
            "a new damaged copy extends it"
        );
        assert!(!detours.active(7, 30_000 + DETOUR_MS));
    }
}
