//! A committed offset in causal terms, and back.
//!
//! Each region's log is a causal order of the same batches, so an offset means nothing in
//! another region, but the batches below it do: the prefix below an offset is causally closed,
//! and per origin it holds sequences `1..=n` (those still retained, and those retention or
//! compaction removed). Its *frontier*, per origin the highest sequence in it, names that set of
//! batches in every region. [`position_at`] turns a committed offset into a frontier (plus the
//! batch the consumer stopped inside, if it did); [`resume_at`] finds where the same group
//! resumes in another region's log: the first offset whose batch the frontier does not cover.
//! Everything before it was consumed; batches after it that the frontier covers are the only
//! possible repeats, and [`Resume`] counts them.

use causeway_replication::delivery::BatchId;
use causeway_replication::VectorClock;
use causeway_storage::{whole_batches, BatchHeader, Partition, StorageError};
use serde::{Deserialize, Serialize};

use crate::partition_handle::PartitionHandle;
use crate::replication::log::ReplicaLog;

/// The batch a group stopped inside: it consumed the first `consumed` records of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialBatch {
    /// Region that produced the batch.
    pub origin: u32,
    /// Its sequence among that region's batches of the partition.
    pub seq: u64,
    /// Records of the batch consumed (its first offsets, the same in every copy of the batch).
    pub consumed: i64,
}

/// A committed offset as every region can read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Per origin, the highest sequence of the batches consumed whole, as `[origin, seq]` pairs.
    pub frontier: Vec<(u32, u64)>,
    /// The batch the committed offset lies inside, if it does not fall between batches.
    pub partial: Option<PartialBatch>,
}

/// Where a group resumes in this region, and what it may see again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resume {
    /// The first offset the group has not consumed (inside the batch it stopped in, when that
    /// batch comes first here).
    pub offset: i64,
    /// Batches at or after `offset` the group consumed in the committing region.
    pub repeat_batches: usize,
    /// Their records, plus the consumed records of the batch it stopped inside when that batch
    /// is not the first here.
    pub repeat_records: i64,
    /// Batches the group consumed that this region does not hold yet: each will arrive after
    /// `offset` and be seen again.
    pub missing_batches: u64,
}

/// Where a frontier stands in one region's log index: what [`resume_at`] needs from the
/// replica, read under its lock.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Coverage {
    /// The first offset whose batch the frontier does not cover.
    pub first_uncovered: i64,
    /// Where the batch the group stopped inside sits here, if this region holds it.
    pub partial_at: Option<i64>,
    /// Base offsets of covered batches at or after `first_uncovered`.
    pub covered_after: Vec<i64>,
    /// Covered batches this region does not hold yet.
    pub missing: u64,
}

/// The [`Coverage`] of `frontier` (and of the batch stopped inside, `partial`) in `log`, whose
/// replica's clock is `clock`, for a reader whose first batch starts at `visible_from`
/// (DeleteRecords may have moved the log start above batches still held for peers).
pub fn coverage(
    log: &ReplicaLog,
    clock: &VectorClock,
    frontier: &VectorClock,
    partial: Option<BatchId>,
    visible_from: i64,
) -> Coverage {
    let first_uncovered = log.first_outside_from(clock, frontier, visible_from);
    Coverage {
        first_uncovered,
        partial_at: partial.and_then(|id| log.exact_offset_of(id)),
        covered_after: log.covered_from(first_uncovered, frontier),
        missing: frontier
            .to_deps()
            .into_iter()
            .map(|(origin, seq)| seq.saturating_sub(clock.get(origin)))
            .sum(),
    }
}

/// The first batch at or after `offset`, with its header, or `None` past the log end.
fn batch_from(log: &Partition, offset: i64) -> Result<Option<BatchHeader>, StorageError> {
    let read = log.read(offset, 1)?;
    Ok(whole_batches(&read.records)
        .next()
        .and_then(|(header, _)| Some(header).filter(|h| h.last_offset() >= offset)))
}

/// The position of `committed` (the next offset the group would consume) in this region's
/// `log`; `clock_below(offset)` is the clock of the log's prefix below `offset`
/// ([`ReplicaLog::clock_below`] under the replica's lock).
pub fn position_at(
    log: &Partition,
    committed: i64,
    clock_below: impl FnOnce(i64) -> VectorClock,
) -> Result<Position, StorageError> {
    // The batch holding `committed - 1` may straddle a log start DeleteRecords moved: read what
    // is still on disk (what retention deleted went in whole segments, so whole batches).
    let inside = if committed > log.retained_start_offset() && committed < log.log_end_offset() {
        let read = log.read_retained(committed - 1, 1)?;
        whole_batches(&read.records)
            .next()
            .map(|(header, _)| header)
            .filter(|h| h.base_offset < committed && h.last_offset() >= committed)
    } else {
        None
    };
    // The consumed prefix ends before the batch the offset lies inside: that batch was not
    // consumed whole.
    let (below, partial) = match inside {
        Some(header) => {
            let meta = log
                .causal_entries(header.base_offset, header.base_offset + 1)?
                .into_iter()
                .find(|(base, _)| *base == header.base_offset)
                .map(|(_, meta)| meta);
            let partial = meta.map(|meta| PartialBatch {
                origin: meta.origin_region,
                seq: meta.origin_seq,
                consumed: committed - header.base_offset,
            });
            (header.base_offset, partial)
        }
        None => (committed, None),
    };
    Ok(Position {
        frontier: clock_below(below).to_deps(),
        partial,
    })
}

/// Where a group whose committed position is `position` resumes in this region's `log`;
/// `cover(frontier, partial, visible_from)` gives the position's [`coverage`] under the
/// replica's lock.
pub fn resume_at(
    log: &Partition,
    position: &Position,
    cover: impl FnOnce(&VectorClock, Option<BatchId>, i64) -> Coverage,
) -> Result<Resume, StorageError> {
    let frontier = VectorClock::from_deps(&position.frontier);
    let partial = position.partial.map(|p| BatchId {
        origin: p.origin,
        seq: p.seq,
    });
    // A reader starts at the log start, possibly inside the batch that holds it.
    let log_start = log.log_start_offset();
    let visible_from = batch_from(log, log_start)?.map_or(log_start, |h| h.base_offset);
    let coverage = cover(&frontier, partial, visible_from);
    let mut offset = coverage.first_uncovered;
    let mut repeat_records = 0;
    if let Some(partial) = position.partial {
        if coverage.partial_at == Some(offset) {
            // The batch it stopped inside comes first here too: resume inside it, as there.
            offset += partial.consumed;
        } else {
            repeat_records += partial.consumed;
        }
    }
    let offset = offset.max(log_start);
    for &base in &coverage.covered_after {
        if let Some(header) = batch_from(log, base)? {
            repeat_records += i64::from(header.last_offset_delta) + 1;
        }
    }
    Ok(Resume {
        offset,
        repeat_batches: coverage.covered_after.len(),
        repeat_records,
        missing_batches: coverage.missing,
    })
}

impl PartitionHandle {
    /// [`position_at`] in this partition.
    pub fn position_at(&self, committed: i64) -> Result<Position, StorageError> {
        position_at(self.log(), committed, |below| {
            let replica = self.replica();
            replica.log().clock_below(below, replica.clock())
        })
    }

    /// [`resume_at`] in this partition.
    pub fn resume_at(&self, position: &Position) -> Result<Resume, StorageError> {
        resume_at(self.log(), position, |frontier, partial, visible_from| {
            let replica = self.replica();
            coverage(
                replica.log(),
                replica.clock(),
                frontier,
                partial,
                visible_from,
            )
        })
    }
}
