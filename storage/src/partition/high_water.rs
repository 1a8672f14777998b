//! The per-origin high water of sequences a partition's log ever held, so the vector clock
//! replication rebuilds at start-up never goes backwards when batches leave the log.
//!
//! `Partition::origin_high_water` is every causal entry still in the log joined with this file.
//! Whatever removes batches records their per-origin maximum here first: compaction before it
//! swaps rewritten segments in, retention and DeleteRecords before they delete whole segments.
//! Without it a region would, after a restart, reuse its own sequences that peers already hold
//! (they drop the new batches as duplicates, and batches depending on them wait forever), and
//! would count remote batches it deleted as missing.
//!
//! ## `origin-high-water.checkpoint` (version 0)
//! Text, after the version line: pairs of lines `<origin_region>` `<origin_seq>`. Replaced
//! atomically (temp file, fsync, rename, fsync of the directory, see `checkpoint.rs`) with the
//! per-origin maximum of itself and the batches about to go, BEFORE any of their files is
//! changed: a crash in between leaves a high water at or above the truth, never below.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use crate::causal;
use crate::checkpoint;
use crate::error::StorageError;

/// The file's name in the partition directory.
const HIGH_WATER_FILE: &str = "origin-high-water.checkpoint";

/// Per origin region, the highest sequence seen.
pub(super) type HighWater = BTreeMap<u32, u64>;

/// Raises `region`'s entry of `into` to `seq`.
pub(super) fn join(into: &mut HighWater, region: u32, seq: u64) {
    let slot = into.entry(region).or_insert(seq);
    *slot = (*slot).max(seq);
}

/// The per-origin maxima stored in the file (empty if absent).
pub(super) fn read(dir: &Path) -> Result<HighWater, StorageError> {
    let mut out = BTreeMap::new();
    let values = checkpoint::read(dir, HIGH_WATER_FILE)?.unwrap_or_default();
    for pair in values.chunks_exact(2) {
        if let (Ok(region), Ok(seq)) = (u32::try_from(pair[0]), u64::try_from(pair[1])) {
            join(&mut out, region, seq);
        }
    }
    Ok(out)
}

/// Joins `more` into the file and makes the result durable before returning; writes nothing
/// when the file already covers `more`.
pub(super) fn persist_join(dir: &Path, more: &HighWater) -> Result<(), StorageError> {
    let mut high_water = read(dir)?;
    let before = high_water.clone();
    for (&region, &seq) in more {
        join(&mut high_water, region, seq);
    }
    if high_water == before {
        return Ok(());
    }
    let mut values = Vec::with_capacity(high_water.len() * 2);
    for (&region, &seq) in &high_water {
        values.push(i64::from(region));
        values.push(i64::try_from(seq).unwrap_or(i64::MAX));
    }
    checkpoint::write(dir, HIGH_WATER_FILE, &values)
}

/// Per origin, the highest sequence in the `.causal` files behind `handles` (each a file and
/// its valid size, as `Segment::read_handles` gives them, so callers need not hold the log lock
/// while reading); carry entries included.
pub(super) fn of_causal_files(
    dir: &Path,
    handles: impl IntoIterator<Item = (Arc<File>, u64)>,
) -> Result<HighWater, StorageError> {
    let mut high_water = HighWater::new();
    for (causal_file, causal_size) in handles {
        let what = || format!("reading causal index in {}", dir.display());
        for entry in causal::read_entries(&causal_file, causal_size, &what)? {
            join(
                &mut high_water,
                entry.meta.origin_region,
                entry.meta.origin_seq,
            );
        }
    }
    Ok(high_water)
}

impl super::Partition {
    /// Per origin, the highest sequence this log removed (retention, DeleteRecords,
    /// compaction): what a region seeded from this log must count as held without holding it.
    pub fn removed_high_water(&self) -> Result<Vec<(u32, u64)>, StorageError> {
        Ok(read(&self.dir)?.into_iter().collect())
    }

    /// Joins `removed` (another region's [`Self::removed_high_water`]) into this log's, durably:
    /// a log seeded from a copy then rebuilds the copy's vector clock at every start.
    pub fn join_removed_high_water(&self, removed: &[(u32, u64)]) -> Result<(), StorageError> {
        let mut more = HighWater::new();
        for &(region, seq) in removed {
            join(&mut more, region, seq);
        }
        persist_join(&self.dir, &more)
    }
}
