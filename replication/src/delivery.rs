//! The per-partition causal delivery state machine (DESIGN.md section 4), written in the raft-rs
//! manner: no sockets, no threads, no wall clock. The edge feeds it local appends, pull requests
//! and pull responses together with the current wall time, and it answers with what to send
//! and what happened. Its only collaborator is the narrow [`BatchLog`] trait, which the broker
//! implements over `storage` and the simulator ([`crate::sim`]) implements in memory.
//!
//! ## Delivery rule
//! For a remote batch `(j, seq, D)` at region `r` with vector clock `V`:
//! - `seq <= V[j]`: a duplicate, dropped, so any redelivery is harmless;
//! - `seq == V[j] + 1` and `D[k] <= V[k]` for every `k != j`: applied (appended to the log, then
//!   `V[j] = seq`, then the HLC observes the stamp), and the pending queues are retried until
//!   none progresses;
//! - otherwise it waits in the per-origin pending queue.
//!
//! ## Bounds and backpressure
//! Each origin's pending queue holds at most [`ReplicaConfig::pending_per_origin_max`] batches.
//! A full queue keeps the *lowest* sequences, since those are the ones that can unblock
//! delivery: a batch below the highest queued one evicts it (reported as
//! [`Outcome::Queued`] with `evicted`), a batch above it is refused with
//! [`Outcome::Backpressure`]. Nothing refused or evicted is lost: pulls ask for "everything
//! after `V[j]`", so it comes again once the queue drains, and the transport backs off meanwhile.
//! A deliverable batch is applied on arrival without entering a queue, and among the batches a
//! region lacks the causally first one is always deliverable, so bounded queues cannot
//! deadlock; keeping the lowest sequences makes queued batches the next to be released.
//!
//! ## Clock skew: refuse, never clamp
//! A remote batch whose HLC stamp is more than [`ReplicaConfig::hlc_skew_ms_max`] ahead of local
//! wall time is refused ([`Refusal::ClockSkew`]), not clamped. Clamping would have to rewrite the
//! stamp (different regions would store different stamps for the same batch and tables would
//! diverge) or leave the stamp as is (and the bad clock still wins every conflict). Refusal is
//! temporary: once local time catches up, the same batch is accepted on a later pull.
//!
//! ## Durability and sequence reuse
//! A region serves its *own* batches only once they are durable ([`PartitionReplica::synced`]),
//! so a crash can lose only an own tail that nobody else has seen, and reusing those sequence
//! numbers after restart can never give two regions different data for the same
//! `(origin, seq)`. Remote batches are served whether synced locally or not: their origin holds
//! them durably. The clock peers learn for the stable cut is the *durable* clock, so retention
//! never deletes a batch that a region might still lose in a crash and need again.
//!
//! ## Layout
//! The public types (batches, the [`BatchLog`] seam and its errors, configuration, refusals,
//! outcomes and pull messages) live in `delivery/types.rs` and are re-exported from here under
//! their usual paths; this file holds [`PartitionReplica`] and the functions over clocks.

use std::collections::BTreeMap;

pub use causeway_causal::BatchId;
use causeway_causal::CausalMeta;

use crate::clock::VectorClock;
use crate::hlc::HybridClock;

mod types;

pub use types::{
    AppendError, Batch, BatchLog, LogError, Outcome, Positioned, PullReport, RecoveredLog, Refusal,
    ReplicaAnswer, ReplicaConfig, ReplicaError, ReplicaPull,
};

/// Batches read from the log per call while serving a pull, so one pull never loads an
/// unbounded slice of the log into memory.
const SERVE_READ_CHUNK: usize = 256;

/// How many log entries one pull may scan per batch it can return; bounds the work of a pull
/// whose requester already has most of the log (progress is still guaranteed: the first entry
/// scanned is always one the requester lacks).
const SERVE_SCAN_FACTOR: usize = 16;

/// One region's replica of one partition: its vector clock, durable clock, hybrid logical clock,
/// bounded per-origin pending queues and the latest durable clocks heard from peers, over a
/// [`BatchLog`]. The log is the durable part; everything else is rebuilt or refilled after a
/// crash by [`PartitionReplica::recover`].
#[derive(Debug)]
pub struct PartitionReplica<L: BatchLog> {
    config: ReplicaConfig,
    log: L,
    clock: VectorClock,
    durable: VectorClock,
    hlc: HybridClock,
    pending: BTreeMap<u32, BTreeMap<u64, Batch<L::Payload>>>,
    peer_durable: BTreeMap<u32, VectorClock>,
    poisoned: bool,
}

impl<L: BatchLog> PartitionReplica<L> {
    /// Opens a replica over a log just opened (after a crash or a clean stop): the clock is the
    /// log's, everything in it counts as durable, queues start empty.
    pub fn recover(config: ReplicaConfig, log: L) -> Result<Self, ReplicaError> {
        if !config.regions.contains(&config.region) {
            return Err(ReplicaError::Config("regions must include this region"));
        }
        let mut sorted = config.regions.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != config.regions.len() {
            return Err(ReplicaError::Config("regions must not repeat"));
        }
        if config.pending_per_origin_max == 0 {
            return Err(ReplicaError::Config(
                "pending_per_origin_max must be at least 1",
            ));
        }
        let state = log.recover()?;
        Ok(PartitionReplica {
            config,
            log,
            durable: state.clock.clone(),
            clock: state.clock,
            hlc: HybridClock::resume(state.hlc_max),
            pending: BTreeMap::new(),
            peer_durable: BTreeMap::new(),
            poisoned: false,
        })
    }

    /// This region's id.
    pub fn region(&self) -> u32 {
        self.config.region
    }

    /// The vector clock: per origin, the highest sequence applied here.
    pub fn clock(&self) -> &VectorClock {
        &self.clock
    }

    /// The clock as of the last successful sync: what survives a crash.
    pub fn durable_clock(&self) -> &VectorClock {
        &self.durable
    }

    /// The latest durable clock heard from `peer`, if any.
    pub fn peer_clock(&self, peer: u32) -> Option<&VectorClock> {
        self.peer_durable.get(&peer)
    }

    /// Batches waiting in pending queues (the "buffered batches" of `/v1/regions`).
    pub fn pending_len(&self) -> usize {
        self.pending.values().map(BTreeMap::len).sum()
    }

    /// The log, for reads outside replication (fetch, tables, checks).
    pub fn log(&self) -> &L {
        &self.log
    }

    /// Gives the log back, e.g. to simulate a crash and reopen.
    pub fn into_log(self) -> L {
        self.log
    }

    fn check_poisoned(&self) -> Result<(), ReplicaError> {
        if self.poisoned {
            Err(ReplicaError::Poisoned)
        } else {
            Ok(())
        }
    }

    /// Appends a deliverable remote batch; `Ok(Some(refusal))` if the log refused it (nothing
    /// changed).
    fn append_to_log(&mut self, batch: Batch<L::Payload>) -> Result<Option<Refusal>, ReplicaError> {
        let id = batch.id();
        match self.log.append(batch) {
            Ok(()) => {
                self.clock.advance(id.origin, id.seq);
                Ok(None)
            }
            Err(AppendError::Refused(reason)) => Ok(Some(Refusal::LogRefused(reason))),
            Err(AppendError::Failed(error)) => {
                // The log may or may not hold the batch now; only a reopen knows.
                self.poisoned = true;
                Err(error.into())
            }
        }
    }

    /// The log, for the caller's own appends: a batch produced here is stamped by
    /// [`PartitionReplica::stamp_local`], appended by the caller (which alone knows what else
    /// the log checks, such as an idempotent producer's retry) and reported with
    /// [`PartitionReplica::local_appended`]; the caller holds the replica across the three so
    /// no other stamp comes between.
    pub fn log_mut(&mut self) -> &mut L {
        &mut self.log
    }

    /// The causal metadata for the next batch produced here: `seq = V[self] + 1`, dependencies
    /// `V` as it is now, a fresh HLC stamp at `wall_ms`. Nothing else changes until the caller
    /// reports the append with [`PartitionReplica::local_appended`]; a stamp never reported
    /// (the log declined or failed the append) is simply handed out again.
    pub fn stamp_local(&mut self, wall_ms: u64) -> Result<CausalMeta, ReplicaError> {
        self.check_poisoned()?;
        let region = self.config.region;
        Ok(CausalMeta {
            origin_region: region,
            origin_seq: self.clock.get(region) + 1,
            hlc: self.hlc.tick(wall_ms),
            deps: self.clock.to_deps(),
        })
    }

    /// Records that the log now holds the batch stamped `meta` by the last
    /// [`PartitionReplica::stamp_local`]. The batch is replicated once a later
    /// [`PartitionReplica::synced`] covers it (acks=all is answered then, too). A stamp that is
    /// not the next own sequence (stale, or never handed out) changes nothing.
    pub fn local_appended(&mut self, meta: &CausalMeta) {
        let region = self.config.region;
        if meta.origin_region == region && meta.origin_seq == self.clock.get(region) + 1 {
            self.clock.advance(region, meta.origin_seq);
        }
    }

    /// Records that everything up to `synced` (a [`PartitionReplica::clock`] read before the
    /// caller made the log durable) survives a crash: own batches up to it become servable and
    /// the durable clock (what peers use for the stable cut) advances. Reading the clock first
    /// and syncing outside the replica lets appends continue while the fsync runs (group commit).
    pub fn synced(&mut self, synced: &VectorClock) {
        for (region, seq) in synced.to_deps() {
            self.durable
                .advance(region, seq.min(self.clock.get(region)));
        }
    }

    /// Checks a remote batch's metadata against the configuration and itself.
    fn validate(&self, meta: &CausalMeta) -> Result<(), Refusal> {
        let known = |region: u32| self.config.regions.contains(&region);
        if !known(meta.origin_region) {
            return Err(Refusal::UnknownOrigin(meta.origin_region));
        }
        if meta.origin_seq == 0 {
            return Err(Refusal::Malformed("origin sequence 0"));
        }
        let mut previous: Option<u32> = None;
        for &(region, seq) in &meta.deps {
            if previous.is_some_and(|p| p >= region) {
                return Err(Refusal::Malformed("dependencies not sorted by region"));
            }
            previous = Some(region);
            if !known(region) {
                return Err(Refusal::UnknownOrigin(region));
            }
            if seq == 0 {
                return Err(Refusal::Malformed("zero dependency entry"));
            }
        }
        if dep(&meta.deps, meta.origin_region) != meta.origin_seq - 1 {
            return Err(Refusal::Malformed(
                "dependency on own origin is not seq - 1",
            ));
        }
        let own = self.config.region;
        let local_seq = self.clock.get(own);
        let own_dep = dep(&meta.deps, own);
        if own_dep > local_seq {
            return Err(Refusal::OwnBatchAhead {
                seq: own_dep,
                local_seq,
            });
        }
        Ok(())
    }

    fn deliverable(&self, meta: &CausalMeta) -> bool {
        meta.origin_seq == self.clock.get(meta.origin_region) + 1
            && meta
                .deps
                .iter()
                .all(|&(region, seq)| region == meta.origin_region || seq <= self.clock.get(region))
    }

    /// Receives one remote batch at local wall time `wall_ms` and applies the delivery rule.
    /// `Err` only for log failures (the replica is then poisoned); bad input, and a batch the
    /// log refuses, is an [`Outcome::Refused`]. A queued batch the log refuses when it becomes
    /// deliverable is dropped (it is pulled again); [`PartitionReplica::receive_response`]
    /// reports those too.
    pub fn receive(
        &mut self,
        batch: Batch<L::Payload>,
        wall_ms: u64,
    ) -> Result<Outcome, ReplicaError> {
        self.receive_reporting(batch, wall_ms, &mut Vec::new())
    }

    /// [`PartitionReplica::receive`], adding queued batches the log refused to `refused`.
    fn receive_reporting(
        &mut self,
        batch: Batch<L::Payload>,
        wall_ms: u64,
        refused: &mut Vec<(BatchId, Refusal)>,
    ) -> Result<Outcome, ReplicaError> {
        self.check_poisoned()?;
        if let Err(refusal) = self.validate(&batch.meta) {
            return Ok(Outcome::Refused(refusal));
        }
        let id = batch.id();
        let applied = self.clock.get(id.origin);
        if id.seq <= applied {
            return Ok(Outcome::Duplicate);
        }
        if id.origin == self.config.region {
            return Ok(Outcome::Refused(Refusal::OwnBatchAhead {
                seq: id.seq,
                local_seq: applied,
            }));
        }
        let stamp_ms = HybridClock::physical_ms(batch.meta.hlc);
        if stamp_ms > wall_ms.saturating_add(self.config.hlc_skew_ms_max) {
            return Ok(Outcome::Refused(Refusal::ClockSkew { stamp_ms, wall_ms }));
        }
        if self.deliverable(&batch.meta) {
            let hlc = batch.meta.hlc;
            if let Some(refusal) = self.append_to_log(batch)? {
                return Ok(Outcome::Refused(refusal));
            }
            self.hlc.observe(hlc);
            let released = self.drain(refused)?;
            return Ok(Outcome::Applied { released });
        }
        self.enqueue(batch)
    }

    fn enqueue(&mut self, batch: Batch<L::Payload>) -> Result<Outcome, ReplicaError> {
        let id = batch.id();
        let max = self.config.pending_per_origin_max;
        let queue = self.pending.entry(id.origin).or_default();
        if let Some(queued) = queue.get(&id.seq) {
            return Ok(if *queued == batch {
                Outcome::Duplicate
            } else {
                Outcome::Refused(Refusal::Conflict)
            });
        }
        let mut evicted = None;
        if queue.len() >= max {
            match queue.last_key_value() {
                Some((&highest, _)) if id.seq < highest => {
                    queue.pop_last();
                    evicted = Some(BatchId {
                        origin: id.origin,
                        seq: highest,
                    });
                }
                _ => return Ok(Outcome::Backpressure),
            }
        }
        let batch = Batch {
            payload: self.log.detached(batch.payload),
            meta: batch.meta,
        };
        queue.insert(id.seq, batch);
        Ok(Outcome::Queued { evicted })
    }

    /// Applies queued batches until no queue progresses; returns how many were applied. Each
    /// pass removes at least one entry or stops, so it is bounded by the queued count. A batch
    /// the log refuses is dropped and added to `refused`; its origin's later batches stay queued.
    fn drain(&mut self, refused: &mut Vec<(BatchId, Refusal)>) -> Result<usize, ReplicaError> {
        let mut released = 0;
        loop {
            let mut progressed = false;
            let origins: Vec<u32> = self.pending.keys().copied().collect();
            for origin in origins {
                loop {
                    let next = {
                        let Some(queue) = self.pending.get(&origin) else {
                            break;
                        };
                        let Some((&seq, batch)) = queue.first_key_value() else {
                            break;
                        };
                        if seq <= self.clock.get(origin) {
                            Some(false) // stale: applied meanwhile through another copy
                        } else if self.deliverable(&batch.meta) {
                            Some(true)
                        } else {
                            None
                        }
                    };
                    let Some(apply) = next else { break };
                    let Some((_, batch)) =
                        self.pending.get_mut(&origin).and_then(BTreeMap::pop_first)
                    else {
                        break;
                    };
                    if apply {
                        let (id, hlc) = (batch.id(), batch.meta.hlc);
                        if let Some(refusal) = self.append_to_log(batch)? {
                            refused.push((id, refusal));
                            break;
                        }
                        self.hlc.observe(hlc);
                        released += 1;
                        progressed = true;
                    }
                }
            }
            if !progressed {
                break;
            }
        }
        self.pending.retain(|_, queue| !queue.is_empty());
        Ok(released)
    }

    /// What to ask `peer`: everything above this region's clock, from every origin (anti-entropy
    /// by clock exchange: any peer can fill in any origin's batches). Sent periodically even
    /// when idle, it is also the heartbeat that tells peers this region's durable clock.
    pub fn pull_request(&self, peer: u32) -> ReplicaPull {
        ReplicaPull {
            from: self.config.region,
            to: peer,
            have: self.clock.clone(),
            durable: self.durable.clone(),
        }
    }

    fn note_peer(&mut self, peer: u32, durable: &VectorClock) -> Result<(), ReplicaError> {
        if peer == self.config.region || !self.config.regions.contains(&peer) {
            return Err(ReplicaError::UnknownPeer(peer));
        }
        // Messages may be reordered: keep the pointwise maximum (durable clocks only grow).
        let known = self.peer_durable.entry(peer).or_default();
        for (region, seq) in durable.to_deps() {
            known.advance(region, seq);
        }
        Ok(())
    }

    /// Records a durable clock of `region` heard through another peer (relayed in its pull
    /// responses). Durable clocks only grow, so a relayed one is as good as a direct one, and the
    /// stable cut keeps advancing while the direct link to `region` is down.
    pub fn note_relayed(&mut self, region: u32, durable: &VectorClock) -> Result<(), ReplicaError> {
        self.note_peer(region, durable)
    }

    /// The durable clocks heard from every other region, for relaying to `to`.
    pub fn relayable(&self, to: u32) -> Vec<(u32, VectorClock)> {
        self.peer_durable
            .iter()
            .filter(|(&region, _)| region != to)
            .map(|(&region, clock)| (region, clock.clone()))
            .collect()
    }

    /// Answers a peer's pull with up to `limit` batches it lacks, in this log's order, starting
    /// at the earliest missing one (found through the `(origin, seq)` index), and stopping once
    /// the batches served reach `bytes_max` as measured by `size` (always at least one batch
    /// when one is servable), so a response stays bounded in memory whatever the batch sizes.
    /// Own batches are served only up to the durable clock. Records the peer's durable clock.
    pub fn serve_pull(
        &mut self,
        request: &ReplicaPull,
        limit: usize,
        bytes_max: usize,
        size: impl Fn(&L::Payload) -> usize,
    ) -> Result<ReplicaAnswer<L::Payload>, ReplicaError> {
        self.check_poisoned()?;
        self.note_peer(request.from, &request.durable)?;
        let own = self.config.region;
        let servable = |origin: u32, seq: u64, clock: &VectorClock, durable: &VectorClock| {
            let top = if origin == own {
                durable.get(own)
            } else {
                clock.get(origin)
            };
            seq > request.have.get(origin) && seq <= top
        };
        let mut start: Option<u64> = None;
        for (origin, _) in self.clock.to_deps() {
            let first = BatchId {
                origin,
                seq: request.have.get(origin) + 1,
            };
            if !servable(first.origin, first.seq, &self.clock, &self.durable) {
                continue;
            }
            match self.log.position_of(first)? {
                Some(position) => start = Some(start.map_or(position, |s| s.min(position))),
                None => {
                    return Err(LogError(format!(
                        "index has no position for batch {}:{} the clock covers",
                        first.origin, first.seq
                    ))
                    .into())
                }
            }
        }
        let mut batches = Vec::new();
        let mut bytes = 0usize;
        if let Some(mut position) = start {
            let scan_max = limit.saturating_mul(SERVE_SCAN_FACTOR);
            let mut scanned = 0usize;
            'scan: while batches.len() < limit && scanned < scan_max {
                let chunk = self.log.read(position, limit.clamp(1, SERVE_READ_CHUNK))?;
                if chunk.is_empty() {
                    break;
                }
                for (at, batch) in chunk {
                    position = at + 1;
                    scanned += 1;
                    let id = batch.id();
                    if servable(id.origin, id.seq, &self.clock, &self.durable) {
                        bytes = bytes.saturating_add(size(&batch.payload));
                        batches.push(batch);
                        if batches.len() >= limit || bytes >= bytes_max {
                            break 'scan;
                        }
                    }
                    if scanned >= scan_max {
                        break 'scan;
                    }
                }
            }
        }
        Ok(ReplicaAnswer {
            from: own,
            to: request.from,
            have: self.clock.clone(),
            durable: self.durable.clone(),
            batches,
        })
    }

    /// Receives a peer's [`ReplicaAnswer`] at local wall time `wall_ms`: records its durable
    /// clock and runs every batch through [`PartitionReplica::receive`].
    pub fn receive_response(
        &mut self,
        response: ReplicaAnswer<L::Payload>,
        wall_ms: u64,
    ) -> Result<PullReport, ReplicaError> {
        self.check_poisoned()?;
        self.note_peer(response.from, &response.durable)?;
        let mut report = PullReport::default();
        for batch in response.batches {
            let id = batch.id();
            match self.receive_reporting(batch, wall_ms, &mut report.refused)? {
                Outcome::Applied { released } => report.applied += 1 + released,
                Outcome::Duplicate => report.duplicates += 1,
                Outcome::Queued { evicted } => {
                    report.queued += 1;
                    report.evicted += usize::from(evicted.is_some());
                }
                Outcome::Backpressure => report.backpressured += 1,
                Outcome::Refused(refusal) => report.refused.push((id, refusal)),
            }
        }
        Ok(report)
    }

    /// The causally stable cut for retention: the pointwise minimum of this region's durable
    /// clock and the latest durable clock heard from every other configured region (a region
    /// never heard from counts as zero). Every region holds, durably, every batch at or below it.
    pub fn stable_cut(&self) -> VectorClock {
        self.stable_cut_without(&[])
    }

    /// The stable cut over this region and every peer but the `stale` ones (silent for longer
    /// than the stale bound): a region gone for good no longer holds retention and compaction
    /// back, and must be re-seeded if it returns having missed what they removed.
    pub fn stable_cut_without(&self, stale: &[u32]) -> VectorClock {
        let empty = VectorClock::default();
        let clocks = self
            .config
            .regions
            .iter()
            .filter(|region| !stale.contains(region))
            .map(|&region| {
                if region == self.config.region {
                    &self.durable
                } else {
                    self.peer_durable.get(&region).unwrap_or(&empty)
                }
            });
        stable_cut(clocks)
    }

    /// Per region but the `stale` ones, its own position in the durable clock it last reported
    /// (this region's from its own): the frontier a table compaction samples with each stable
    /// cut ([`crate::horizon::ConcurrencyHorizon`]) to know when tombstones may go.
    pub fn frontier_without(&self, stale: &[u32]) -> VectorClock {
        let mut frontier = VectorClock::default();
        for &region in self.config.regions.iter().filter(|r| !stale.contains(r)) {
            let clock = if region == self.config.region {
                Some(&self.durable)
            } else {
                self.peer_durable.get(&region)
            };
            if let Some(clock) = clock {
                frontier.advance(region, clock.get(region));
            }
        }
        frontier
    }
}

/// The pointwise minimum of `clocks` (empty input gives the empty clock): the batches every one
/// of those regions has applied.
pub fn stable_cut<'a>(clocks: impl IntoIterator<Item = &'a VectorClock>) -> VectorClock {
    let mut clocks = clocks.into_iter();
    let Some(first) = clocks.next() else {
        return VectorClock::default();
    };
    let mut cut = first.to_deps();
    for clock in clocks {
        for entry in &mut cut {
            entry.1 = entry.1.min(clock.get(entry.0));
        }
    }
    let mut result = VectorClock::default();
    for (region, seq) in cut.into_iter().filter(|&(_, seq)| seq > 0) {
        result.advance(region, seq);
    }
    result
}

/// Whether `a <= b` pointwise: every batch `a` covers, `b` covers too.
pub fn dominated_by(a: &VectorClock, b: &VectorClock) -> bool {
    a.to_deps()
        .iter()
        .all(|&(region, seq)| seq <= b.get(region))
}

/// The dependency entry for `region` in a sorted dependency list (0 when absent).
fn dep(deps: &[(u32, u64)], region: u32) -> u64 {
    deps.binary_search_by_key(&region, |&(r, _)| r)
        .map_or(0, |i| deps[i].1)
}

#[cfg(test)]
mod tests;
