//! The replication core's storage seam ([`BatchLog`]) over one storage partition, plus the
//! in-memory `(origin, seq) -> offset` index that lets a pull start at the first batch a peer
//! lacks.
//!
//! The index is dense per origin (one `i64` per batch: a region's batches of a partition are
//! numbered 1, 2, 3, ... and appear in the log in that order), rebuilt from the `.causal` files
//! when the partition opens. It lives in memory rather than in RocksDB so the produce path pays
//! no extra write; the cost is 8 bytes per retained batch and one scan of the `.causal` files at
//! start-up (about 60 bytes per batch).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use causeway_replication::delivery::{
    stable_cut, AppendError, Batch, BatchId, BatchLog, LogError, Positioned, RecoveredLog,
};
use causeway_replication::horizon::ConcurrencyHorizon;
use causeway_replication::VectorClock;
use causeway_storage::{
    whole_batches, AppendResult, BatchHeader, CausalMeta, Partition, StorageError,
};

use crate::wall_clock::now_ms;

/// Bytes read from the log per step while collecting batches for a pull.
const READ_STEP_BYTES: usize = 1 << 20;
/// Bytes of batches one `read` returns at most (always at least one batch), so serving a pull
/// never holds much of the log in memory whatever `max` asks.
const READ_BYTES_MAX: usize = 8 << 20;

/// One origin's batches: offsets of `first_seq`, `first_seq + 1`, ...
#[derive(Debug, Default)]
struct OriginRun {
    first_seq: u64,
    offsets: Vec<i64>,
}

/// Where each `(origin, seq)` of a partition sits in its log.
#[derive(Debug, Default)]
pub struct OriginIndex {
    runs: BTreeMap<u32, OriginRun>,
    hlc_max: u64,
}

impl OriginIndex {
    /// Records that the batch stamped `meta` starts at `base_offset`.
    pub fn record(&mut self, meta: &CausalMeta, base_offset: i64) {
        self.hlc_max = self.hlc_max.max(meta.hlc);
        let run = self.runs.entry(meta.origin_region).or_default();
        let next = run.first_seq + run.offsets.len() as u64;
        if run.offsets.is_empty() || meta.origin_seq != next {
            if !run.offsets.is_empty() && meta.origin_seq <= next {
                return; // already indexed (an entry seen twice while rebuilding)
            }
            if !run.offsets.is_empty() {
                // Compaction merges batches away, so a compacted log skips sequences; only
                // the batches from here on can start a pull.
                tracing::debug!(
                    origin = meta.origin_region,
                    expected = next,
                    found = meta.origin_seq,
                    "gap in an origin's sequences"
                );
            }
            run.first_seq = meta.origin_seq;
            run.offsets.clear();
        }
        run.offsets.push(base_offset);
    }

    /// The log offset of exactly this batch, if it was indexed (deleted batches included while
    /// the index still has them).
    fn exact_offset(&self, id: BatchId) -> Option<i64> {
        let run = self.runs.get(&id.origin)?;
        let at = usize::try_from(id.seq.checked_sub(run.first_seq)?).ok()?;
        run.offsets.get(at).copied()
    }

    /// The log offset of a batch; a batch that was indexed but lies below the retained run
    /// (deleted by retention) maps to the run's first batch, so a pull that wants it starts at
    /// the oldest data there is instead of failing.
    fn offset_of(&self, id: BatchId) -> Option<i64> {
        let run = self.runs.get(&id.origin)?;
        let first = *run.offsets.first()?;
        if id.seq < run.first_seq {
            return Some(first);
        }
        let at = usize::try_from(id.seq - run.first_seq).ok()?;
        run.offsets.get(at).copied()
    }

    /// Per origin, the highest sequence indexed.
    pub fn clock(&self) -> VectorClock {
        let mut clock = VectorClock::default();
        for (&origin, run) in &self.runs {
            if !run.offsets.is_empty() {
                clock.advance(origin, run.first_seq + run.offsets.len() as u64 - 1);
            }
        }
        clock
    }
}

/// A storage partition as the replication core sees it.
pub struct ReplicaLog {
    log: Arc<Partition>,
    index: OriginIndex,
    /// Per origin, the highest sequence the log ever held, compacted batches included.
    high_water: VectorClock,
}

fn log_error(error: StorageError) -> LogError {
    LogError(error.to_string())
}

/// Whole batches read from a log as they travel between regions: base offset 0 and partition
/// leader epoch 0 (both are the storing region's own, and outside the CRC), so copies of one
/// batch served by different regions (stored at different offsets, in different epochs there)
/// compare equal. `sizes` are the batches' lengths, in order from the start of `records`. A
/// read this code alone holds is rewritten in place; a shared one is copied first.
fn normalized(records: Bytes, sizes: impl Iterator<Item = usize>) -> Bytes {
    let mut bytes = records
        .try_into_mut()
        .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
    let mut at = 0;
    for size in sizes {
        if let Some(header) = bytes.get_mut(at..at + 16) {
            header[..8].copy_from_slice(&0i64.to_be_bytes());
            header[12..16].copy_from_slice(&0i32.to_be_bytes());
        }
        at += size;
    }
    bytes.freeze()
}

impl ReplicaLog {
    /// Wraps an opened partition, indexing every causal entry it holds.
    pub fn open(log: Arc<Partition>) -> Result<ReplicaLog, StorageError> {
        let mut index = OriginIndex::default();
        let retained = log.retained_start_offset();
        for (base_offset, meta) in log.causal_entries(retained, i64::MAX)? {
            if base_offset >= retained {
                index.record(&meta, base_offset);
            }
        }
        let high_water = VectorClock::from_deps(&log.origin_high_water()?);
        Ok(ReplicaLog {
            log,
            index,
            high_water,
        })
    }

    /// The log offset of a batch this log holds (`None` if it does not).
    pub fn first_offset_of(&self, id: BatchId) -> Option<i64> {
        self.index.offset_of(id)
    }

    /// The log offset of exactly this batch, if this log holds it and has indexed it.
    pub fn exact_offset_of(&self, id: BatchId) -> Option<i64> {
        self.index
            .exact_offset(id)
            .filter(|&offset| offset >= self.log.retained_start_offset())
    }

    /// The first offset at or after `from` whose batch `covered` does not cover, or the log
    /// end: where a reader that cannot go below `from` (a log start DeleteRecords moved) finds
    /// the first batch outside `covered`. With `from` at the retained start this is
    /// [`ReplicaLog::offset_below_cut`].
    pub fn first_outside_from(&self, clock: &VectorClock, covered: &VectorClock, from: i64) -> i64 {
        clock
            .to_deps()
            .into_iter()
            .filter(|&(origin, seq)| covered.get(origin) < seq)
            .filter_map(|(origin, _)| {
                let run = self.index.runs.get(&origin)?;
                let outside =
                    usize::try_from((covered.get(origin) + 1).saturating_sub(run.first_seq))
                        .unwrap_or(usize::MAX);
                let visible = run.offsets.partition_point(|&at| at < from);
                run.offsets.get(outside.max(visible)).copied()
            })
            .min()
            .unwrap_or_else(|| self.log.log_end_offset())
    }

    /// Base offsets, in log order, of the indexed batches at or after `from` that `covered`
    /// covers: when a consumer group resumes here at `from` from a position committed in
    /// another region, these are the batches it consumed there and may see again.
    pub fn covered_from(&self, from: i64, covered: &VectorClock) -> Vec<i64> {
        let mut out = Vec::new();
        for (&origin, run) in &self.index.runs {
            let limit = covered.get(origin);
            if limit < run.first_seq {
                continue;
            }
            let count = usize::try_from(limit - run.first_seq + 1)
                .unwrap_or(usize::MAX)
                .min(run.offsets.len());
            let held = &run.offsets[..count];
            out.extend_from_slice(&held[held.partition_point(|&at| at < from)..]);
        }
        out.sort_unstable();
        out
    }

    /// The HLC stamp of a batch this log holds, from its causal entry (`None` if it is not
    /// indexed or cannot be read): dates the oldest batch a peer lacks.
    pub fn stamp_of(&self, id: BatchId) -> Option<u64> {
        let offset = self.index.exact_offset(id)?;
        self.log
            .causal_entries(offset, offset + 1)
            .ok()?
            .into_iter()
            .find(|(base, meta)| *base == offset && meta.origin_seq == id.seq)
            .map(|(_, meta)| meta.hlc)
    }

    /// Whether this log held `id` once and does not any more: deleted by retention or
    /// DeleteRecords (below the retained start), or left out of the index after compaction or a
    /// restart (below the first indexed batch of its origin, at or below the high water).
    pub fn no_longer_holds(&self, id: BatchId) -> bool {
        match self.index.exact_offset(id) {
            Some(offset) => offset < self.log.retained_start_offset(),
            None => {
                let first_indexed = self
                    .index
                    .runs
                    .get(&id.origin)
                    .filter(|run| !run.offsets.is_empty())
                    .map(|run| run.first_seq);
                let held_once = id.seq <= self.high_water.get(id.origin);
                match first_indexed {
                    Some(first) => id.seq < first,
                    None => held_once,
                }
            }
        }
    }

    /// The clock of the log's prefix below `offset`, given the replica's `clock`: per origin,
    /// the highest sequence at a lower offset. Batches of an origin before its first indexed one
    /// (deleted, or merged away by compaction) count as below, so `offset` must not lie inside
    /// the compacted part of the log.
    pub fn clock_below(&self, offset: i64, clock: &VectorClock) -> VectorClock {
        let mut below = VectorClock::default();
        for (origin, seq) in clock.to_deps() {
            let seq = match self.index.runs.get(&origin) {
                Some(run) if !run.offsets.is_empty() => {
                    let indexed_below = run.offsets.partition_point(|&at| at < offset) as u64;
                    seq.min(run.first_seq - 1 + indexed_below)
                }
                _ => seq,
            };
            below.advance(origin, seq);
        }
        below
    }

    /// Samples `horizon` for a compaction pass that merges everything below `merged_end`, with
    /// the replica's `clock` and the stable `cut` and `frontier` it read together; returns the
    /// offset below which that pass may drop tombstones. The sample is what the pass merges
    /// within the cut, not the cut: a write concurrent with a tombstone may be inside the cut
    /// and still above the stable offset in this log's order, outside the pass, where the
    /// dropped tombstone would no longer hide it; and what the log merged before a restart may
    /// lie outside the cut read since (the frontier bounds only what is concurrent with the cut).
    pub fn settled_offset(
        &self,
        horizon: &mut ConcurrencyHorizon,
        (clock, cut, frontier): (&VectorClock, &VectorClock, VectorClock),
        merged_end: i64,
    ) -> i64 {
        let merged = self.clock_below(merged_end, clock);
        let sample = stable_cut([&merged, cut]);
        let settled = horizon.advance(sample, frontier);
        self.offset_below_exactly(clock, &settled)
    }

    /// The offset below which every batch is covered by `covered`, counting a batch this log
    /// has not indexed (kept before a gap compaction left, whose offset is forgotten after a
    /// restart) as at the log start. Unlike [`ReplicaLog::offset_below_cut`], whose cut only
    /// grows and covered those batches when compaction merged the batches after them, a settled
    /// clock may still lag them (it starts empty at every restart).
    fn offset_below_exactly(&self, clock: &VectorClock, covered: &VectorClock) -> i64 {
        let start = self.log.log_start_offset();
        clock
            .to_deps()
            .into_iter()
            .filter(|&(origin, seq)| covered.get(origin) < seq)
            .map(|(origin, _)| {
                let first_outside = BatchId {
                    origin,
                    seq: covered.get(origin) + 1,
                };
                self.index.exact_offset(first_outside).unwrap_or(start)
            })
            .min()
            .unwrap_or_else(|| self.log.log_end_offset())
    }

    /// The offset below which every batch is covered by `cut` (a stable cut), given the
    /// replica's `clock`: the first batch above the cut of any origin, or the log end. Retention,
    /// DeleteRecords and compaction never delete at or above it.
    pub fn offset_below_cut(&self, clock: &VectorClock, cut: &VectorClock) -> i64 {
        clock
            .to_deps()
            .into_iter()
            .filter(|&(origin, seq)| cut.get(origin) < seq)
            .filter_map(|(origin, _)| {
                self.first_offset_of(BatchId {
                    origin,
                    seq: cut.get(origin) + 1,
                })
            })
            .min()
            .unwrap_or_else(|| self.log.log_end_offset())
    }

    /// Appends a batch produced here with the metadata the replica stamped; returns whether it
    /// was written (an idempotent retry is answered from the log without writing) and the
    /// outcome. Request errors (bad batch, sequence errors) are outcomes, not log failures.
    pub fn append_own(
        &mut self,
        batch: &[u8],
        meta: &CausalMeta,
        now_ms: i64,
    ) -> (bool, Result<AppendResult, StorageError>) {
        let result = self.log.append(batch, now_ms, meta);
        self.note(meta, result)
    }

    /// Appends a transaction marker produced here.
    pub fn append_own_control(
        &mut self,
        kind: causeway_storage::ControlType,
        producer_id: i64,
        epoch: i16,
        meta: &CausalMeta,
        now_ms: i64,
    ) -> (bool, Result<AppendResult, StorageError>) {
        let result = self
            .log
            .append_control(kind, producer_id, epoch, now_ms, meta);
        self.note(meta, result)
    }

    fn note(
        &mut self,
        meta: &CausalMeta,
        result: Result<AppendResult, StorageError>,
    ) -> (bool, Result<AppendResult, StorageError>) {
        match &result {
            Ok(appended) if !appended.duplicate => {
                self.index.record(meta, appended.base_offset);
                (true, result)
            }
            _ => (false, result),
        }
    }
}

impl BatchLog for ReplicaLog {
    type Payload = Bytes;

    /// A batch the log judges unfit (it does not parse as a record batch, a control batch
    /// without a marker) is refused with the log unchanged; anything else is a log failure.
    fn append(&mut self, batch: Batch<Bytes>) -> Result<(), AppendError> {
        let appended = self
            .log
            .append_replicated(&batch.payload, &batch.meta, now_ms())
            .map_err(|error| match error {
                StorageError::Batch(_) | StorageError::Sequence(_) => {
                    AppendError::Refused(error.to_string())
                }
                other => AppendError::Failed(log_error(other)),
            })?;
        self.index.record(&batch.meta, appended.base_offset);
        Ok(())
    }

    fn position_of(&self, id: BatchId) -> Result<Option<u64>, LogError> {
        let offset = match self.index.offset_of(id) {
            Some(offset) => offset.max(self.log.retained_start_offset()),
            // Compacted away (below the stable cut, so every region had it): nothing to serve.
            None if id.seq <= self.high_water.get(id.origin) => self.log.log_end_offset(),
            None => return Ok(None),
        };
        Ok(Some(offset as u64))
    }

    fn read(&self, from: u64, max: usize) -> Result<Vec<Positioned<Bytes>>, LogError> {
        read_stored(
            &self.log,
            from,
            max,
            READ_BYTES_MAX,
            self.log.log_end_offset(),
        )
    }

    /// A pull response's batches are slices of the whole response; one that waits for its
    /// dependencies is copied out, so the response's buffer is freed once the others are applied.
    fn detached(&self, payload: Bytes) -> Bytes {
        Bytes::copy_from_slice(&payload)
    }

    fn recover(&self) -> Result<RecoveredLog, LogError> {
        let mut clock = self.index.clock();
        for (origin, seq) in self.high_water.to_deps() {
            clock.advance(origin, seq);
        }
        Ok(RecoveredLog {
            clock,
            hlc_max: self.index.hlc_max,
        })
    }
}

/// Up to `max` stored batches (and about `max_bytes`, always at least one) from offset `from`
/// (clamped to the retained start) and below `end`, each with its causal metadata and its bytes
/// as they travel ([`normalized`]), positioned at its offset here. What pulls and seeds serve.
pub fn read_stored(
    log: &Partition,
    from: u64,
    max: usize,
    max_bytes: usize,
    end: i64,
) -> Result<Vec<Positioned<Bytes>>, LogError> {
    let mut out = Vec::new();
    let mut offset = i64::try_from(from).map_err(|_| LogError("position beyond i64".into()))?;
    offset = offset.max(log.retained_start_offset());
    let end = end.min(log.log_end_offset());
    let mut bytes = 0usize;
    while out.len() < max && bytes < max_bytes && offset < end {
        let read = log
            .read_retained(offset, READ_STEP_BYTES)
            .map_err(log_error)?;
        if read.records.is_empty() {
            break;
        }
        let mut walk = whole_batches(&read.records);
        let headers: Vec<BatchHeader> = walk.by_ref().map(|(header, _)| header).collect();
        if walk.consumed() < read.records.len() {
            return Err(LogError(format!(
                "a stored batch after offset {offset} does not parse or runs past the read"
            )));
        }
        let (Some(first), Some(last)) = (headers.first(), headers.last()) else {
            break;
        };
        let metas: BTreeMap<i64, CausalMeta> = log
            .causal_entries(first.base_offset, last.last_offset() + 1)
            .map_err(log_error)?
            .into_iter()
            .collect();
        let records = normalized(read.records, headers.iter().map(BatchHeader::total_bytes));
        let mut at = 0;
        for header in &headers {
            let batch_bytes = records.slice(at..at + header.total_bytes());
            at += header.total_bytes();
            offset = header.last_offset() + 1;
            if header.base_offset < i64::try_from(from).unwrap_or(i64::MAX) {
                continue; // the batch holding `from` started before it
            }
            if header.base_offset >= end {
                return Ok(out);
            }
            let meta = metas.get(&header.base_offset).cloned().ok_or_else(|| {
                LogError(format!(
                    "no causal entry for the batch at offset {}",
                    header.base_offset
                ))
            })?;
            // A damaged copy is still served: the peer refuses it and fetches the batch
            // from another region (`replication/detour.rs`).
            log.verify_stored(header, &batch_bytes);
            bytes += batch_bytes.len();
            out.push((
                header.base_offset as u64,
                Batch {
                    meta,
                    payload: batch_bytes,
                },
            ));
            if out.len() >= max || bytes >= max_bytes {
                break;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(origin: u32, seq: u64) -> CausalMeta {
        CausalMeta {
            origin_region: origin,
            origin_seq: seq,
            hlc: seq,
            deps: Vec::new(),
        }
    }

    #[test]
    fn the_index_finds_each_origins_batches_and_clamps_below_retention() {
        let mut index = OriginIndex::default();
        index.record(&meta(1, 4), 10);
        index.record(&meta(2, 1), 11);
        index.record(&meta(1, 5), 12);
        index.record(&meta(1, 5), 12);
        let at = |origin, seq| index.offset_of(BatchId { origin, seq });
        assert_eq!(at(1, 4), Some(10));
        assert_eq!(at(1, 5), Some(12));
        assert_eq!(at(2, 1), Some(11));
        assert_eq!(
            at(1, 2),
            Some(10),
            "deleted by retention: start at the oldest"
        );
        assert_eq!(at(1, 6), None);
        assert_eq!(at(3, 1), None);
        assert_eq!(index.clock().to_deps(), vec![(1, 5), (2, 1)]);
    }
}
