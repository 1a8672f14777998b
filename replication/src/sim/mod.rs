//! A deterministic simulator for [`crate::delivery`]: several regions replicating one partition
//! over a simulated network, driven by one seeded generator and a simulated millisecond clock.
//! No sockets, no threads, no wall clock: a seed replays the same run bit for bit.
//!
//! ## Fault model
//! While the *fault phase* lasts (`SimConfig::fault_ms`):
//! - local appends at random regions; syncs (fsync) at random times, and an append counts as
//!   acknowledged (acks=all) once a sync covers it;
//! - every message (pull request or response) gets a random delay, hence reordering; it may be
//!   dropped or duplicated; the batches inside a response may arrive shuffled or with some lost
//!   (a pipelined stream whose frames overtake each other or go missing), which is what makes
//!   batches wait in pending queues;
//! - links are cut and healed at random (a cut link drops everything in both directions, also
//!   what was already in flight), so two regions often converge only through a third;
//! - regions crash and restart: the replica's volatile state (queues, peer clocks, HLC) is gone
//!   and the log loses everything after its last sync (a power loss);
//! - every region's wall clock has a fixed offset; with `bad_clock`, one region runs further ahead
//!   than the skew bound, and its batches are refused until the others' time catches up.
//!
//! Then the *quiescence phase*: every link heals, every region restarts, no more appends, drops
//! or crashes (delays and duplicates go on), pulls continue until every region holds the same
//! clock with empty queues.
//!
//! ## Invariants
//! Checked as the run goes: every append to a log is causal (the [`MemoryLog`] refuses a batch
//! whose predecessor or dependencies are missing, which fails the run); no sequence number leaves
//! its origin with two different payloads; a crash loses no acknowledged append; no refusal other
//! than clock skew (and only with a bad clock); the stable cut at every region is at or below the
//! durable clock of every region. At the end: every region holds the same batches, per-origin
//! order holds in every log, and every acknowledged append is in every region.
//!
//! Tables end byte-identical: every payload stands for one table write ([`table_record`]: a put,
//! tombstone, patch, incr, add or remove on one of a few keys). At the end, each region
//! materializes rows from its own log in log order the way the broker's materializer does, and
//! every region's rows must encode ([`crate::crdt::Row::to_bytes`]) to the same bytes; so must
//! the rows obtained by applying the same batches sorted by `(origin, seq)` (ignoring causality
//! across origins), and the merge of two tables each built from half of the batches, one half
//! applied backwards and the other with every write applied twice.

mod local_writes;
mod memory_log;
mod rng;
mod storage;
mod tables;

use std::collections::BTreeMap;
use std::fmt;

pub use local_writes::{CallerLog, LocalWrites, PendingSync};
pub use memory_log::MemoryLog;
pub use rng::SimRng;
pub use storage::{LogPayload, MaintenanceBounds, MemoryStorage, SimStorage};
pub use tables::{table_record, table_write, TableRecord, TableStats, Tables, KEYS};

use crate::clock::VectorClock;
use crate::crdt::Op;
use crate::delivery::{
    dominated_by, Batch, BatchId, BatchLog, PartitionReplica, Refusal, ReplicaAnswer,
    ReplicaConfig, ReplicaPull,
};

/// Wall time at which simulated clocks start, so negative offsets stay positive.
const EPOCH_MS: u64 = 1_700_000_000_000;

/// How often (simulated ms) the quiescence phase checks for convergence.
const QUIESCE_CHECK_MS: u64 = 10;

/// The payload type of simulated batches: a unique number per append, standing in for the
/// batch's content hash.
pub type Payload = u64;

/// The size a simulated batch counts for in a pull response's byte budget: 1 to 64 bytes, so
/// budgets cut responses after a varying number of batches as real batch sizes do.
pub fn payload_bytes(payload: &Payload) -> usize {
    (payload % 64 + 1) as usize
}

/// Parameters of one simulated run; [`SimConfig::random`] draws them from the seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConfig {
    /// Number of regions.
    pub regions: usize,
    /// Length of the phase with appends and faults, in simulated ms.
    pub fault_ms: u64,
    /// Give up (and fail) if the regions have not converged this long after faults stop.
    pub quiesce_ms_max: u64,
    /// Chance per region per ms of a local append, per million.
    pub append_per_million: u32,
    /// Chance per region per ms of a sync, per million.
    pub sync_per_million: u32,
    /// Each region pulls from every peer this often, in ms.
    pub pull_interval_ms: u64,
    /// Most batches one pull response carries.
    pub pull_limit: usize,
    /// Bytes of batches (as [`payload_bytes`] sizes them) after which a response stops.
    pub pull_bytes_max: usize,
    /// Largest one-way message delay, in ms (at least 1).
    pub delay_ms_max: u64,
    /// Chance that a message is lost, per million.
    pub drop_per_million: u32,
    /// Chance that a message is delivered twice, per million.
    pub dup_per_million: u32,
    /// Chance that a response's batches arrive shuffled (a pipelined stream split over frames
    /// that overtake each other), per million. This is what fills pending queues.
    pub shuffle_per_million: u32,
    /// Chance that one batch inside a response is lost (a lost frame), per million.
    pub batch_drop_per_million: u32,
    /// Chance per link per ms that a healthy link is cut, per million.
    pub cut_per_million: u32,
    /// Chance per link per ms that a cut link heals, per million.
    pub heal_per_million: u32,
    /// Chance per region per ms of a crash, per million.
    pub crash_per_million: u32,
    /// Longest time a crashed region stays down, in ms.
    pub down_ms_max: u64,
    /// Largest clock offset of a region (either way), in ms.
    pub clock_offset_ms_max: u64,
    /// The replicas' HLC skew bound, in ms.
    pub hlc_skew_ms_max: u64,
    /// Whether region 0's clock runs ahead by more than the skew bound.
    pub bad_clock: bool,
    /// The replicas' pending queue bound per origin.
    pub pending_per_origin_max: usize,
    /// Chance per region per ms of a log maintenance pass (retention, DeleteRecords), per
    /// million; storage that keeps everything ignores it.
    pub maintain_per_million: u32,
    /// A link (by region index) cut for the whole run, quiescence included: its two ends must
    /// converge through a third region.
    pub permanent_cut: Option<(usize, usize)>,
    /// Chance per down region per ms that it loses its data and is seeded again from a live
    /// region (`--seed-from`), per million; only over storage that can seed.
    pub reseed_per_million: u32,
    /// A region down for longer than this is stale: the others leave it out of their stable cuts
    /// (`--region-stale-after-ms`), so their maintenance may remove what it lacks. Back, a region
    /// some maintenance left out is handled as an operator would: taken out of service (no
    /// writes, no maintenance) until a region that stayed in the mesh holds everything it
    /// holds, then re-seeded from it. Only over storage that can seed.
    pub stale_after_ms: Option<u64>,
}

impl SimConfig {
    /// A scenario drawn from `rng`: 3 to 5 regions, a short fault phase, and fault rates from
    /// none to harsh, so thousands of seeds cover calm and stormy runs alike.
    pub fn random(rng: &mut SimRng) -> SimConfig {
        let clock_offset_ms_max = rng.range(0, 200);
        SimConfig {
            regions: rng.range(3, 5) as usize,
            fault_ms: rng.range(300, 1500),
            quiesce_ms_max: 60_000,
            append_per_million: rng.range(5_000, 40_000) as u32,
            sync_per_million: rng.range(20_000, 300_000) as u32,
            pull_interval_ms: rng.range(1, 20),
            pull_limit: rng.range(1, 64) as usize,
            pull_bytes_max: rng.range(1, 2_000) as usize,
            delay_ms_max: rng.range(1, 50),
            drop_per_million: rng.range(0, 300_000) as u32,
            dup_per_million: rng.range(0, 200_000) as u32,
            shuffle_per_million: rng.range(0, 500_000) as u32,
            batch_drop_per_million: rng.range(0, 100_000) as u32,
            cut_per_million: rng.range(0, 3_000) as u32,
            heal_per_million: rng.range(1_000, 20_000) as u32,
            crash_per_million: rng.range(0, 1_500) as u32,
            down_ms_max: rng.range(1, 400),
            clock_offset_ms_max,
            hlc_skew_ms_max: 2 * clock_offset_ms_max + rng.range(1, 100),
            bad_clock: rng.chance(125_000),
            pending_per_origin_max: rng.range(1, 16) as usize,
            maintain_per_million: rng.range(0, 20_000) as u32,
            permanent_cut: None,
            reseed_per_million: rng.range(0, 5_000) as u32,
            stale_after_ms: rng.chance(500_000).then(|| rng.range(20, 300)),
        }
    }
}

/// What a run did, for the test's summary and for measurements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimReport {
    /// Local appends.
    pub appends: u64,
    /// Appends acknowledged (covered by a sync).
    pub acknowledged: u64,
    /// Region crashes.
    pub crashes: u64,
    /// Unsynced batches lost in crashes (never acknowledged, never served).
    pub lost_unsynced: u64,
    /// Batches log maintenance deleted (retention, DeleteRecords).
    pub deleted: u64,
    /// Down regions that lost their data and were seeded again from a live one.
    pub reseeded: u64,
    /// Regions back after being stale, re-seeded once a live region held everything they held.
    pub stale_reseeded: u64,
    /// Messages sent.
    pub messages: u64,
    /// Messages dropped by faults or cut links.
    pub dropped: u64,
    /// Messages duplicated.
    pub duplicated: u64,
    /// Batches refused for clock skew.
    pub skew_refusals: u64,
    /// Batches a region waiting to be re-seeded refused as conflicting with the copy it had
    /// queued: the same write, in the form a peer's table compaction gave it meanwhile.
    pub reseed_conflicts: u64,
    /// Batches refused for backpressure.
    pub backpressured: u64,
    /// Queued batches evicted.
    pub evicted: u64,
    /// Simulated ms from the end of faults to convergence.
    pub quiesce_ms: u64,
    /// The converged log of the first region, in its order (identical sets everywhere).
    pub final_log: Vec<Batch<Payload>>,
    /// Table writes in the converged log, by kind, and the rows they left.
    pub tables: TableStats,
}

/// A broken invariant, with the seed that replays it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Seed of the run.
    pub seed: u64,
    /// Simulated ms since the start.
    pub at_ms: u64,
    /// What broke.
    pub message: String,
    /// The test command that replays the seed (with `CAUSEWAY_SIM_SEED` set).
    pub replay: &'static str,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {} at {} ms: {} (replay: CAUSEWAY_SIM_SEED={} {})",
            self.seed, self.at_ms, self.message, self.seed, self.replay
        )
    }
}

impl std::error::Error for Violation {}

/// A region's id and its final log, payloads as numbers.
type RegionLog = (u32, Vec<Batch<Payload>>);

enum Message<P> {
    Pull(ReplicaPull),
    Response(ReplicaAnswer<P>),
}

struct InFlight<P> {
    from: usize,
    to: usize,
    message: Message<P>,
}

struct Node<L: CallerLog> {
    id: u32,
    offset_ms: i64,
    replica: Option<PartitionReplica<L>>,
    /// The log while the region is down.
    parked: Option<L>,
    down_until_ms: u64,
    next_pull_ms: u64,
    /// Own appends not yet covered by a sync.
    unacked: Vec<(u64, Payload)>,
    /// A group commit started and not finished: appends may come in before it finishes, and
    /// it covers only what was appended before it started.
    syncing: Option<PendingSync>,
    /// The clock of what the region's log held when it last went down (what a restart would
    /// find): what a region seeding it must hold.
    held_when_down: VectorClock,
    /// When the region last went down.
    down_since_ms: u64,
    /// Left out of another region's stable cut by a maintenance pass while it was down.
    excluded: bool,
    /// Back after maintenance elsewhere left it out: to be re-seeded once a live region holds
    /// everything it holds. Meanwhile it takes no writes and runs no maintenance (an operator
    /// has taken it out of service).
    needs_reseed: bool,
}

/// One simulated run.
struct Sim<S: SimStorage> {
    storage: S,
    seed: u64,
    config: SimConfig,
    rng: SimRng,
    now_ms: u64,
    nodes: Vec<Node<S::Log>>,
    ids: Vec<u32>,
    cut: Vec<Vec<bool>>,
    network: BTreeMap<(u64, u64), InFlight<LogPayload<S>>>,
    send_order: u64,
    faults: bool,
    next_payload: Payload,
    /// Every batch that ever left its origin: `(origin, seq) -> payload`.
    escaped: BTreeMap<BatchId, Payload>,
    acknowledged: BTreeMap<BatchId, Payload>,
    report: SimReport,
}

/// Runs the scenario [`SimConfig::random`] draws from `seed`.
pub fn run(seed: u64) -> Result<SimReport, Violation> {
    let mut rng = SimRng::new(seed);
    let config = SimConfig::random(&mut rng);
    run_with(seed, config)
}

/// Runs `config` with randomness from `seed`, over logs in memory.
pub fn run_with(seed: u64, config: SimConfig) -> Result<SimReport, Violation> {
    run_on(seed, config, MemoryStorage)
}

/// Runs `config` with randomness from `seed`, over logs kept by `storage`.
pub fn run_on<S: SimStorage>(
    seed: u64,
    config: SimConfig,
    storage: S,
) -> Result<SimReport, Violation> {
    let mut sim = Sim::new(seed, config, storage)?;
    sim.run()?;
    Ok(sim.report)
}

impl<S: SimStorage> Sim<S> {
    fn new(seed: u64, config: SimConfig, mut storage: S) -> Result<Self, Violation> {
        // A different stream from the one that drew the config.
        let mut rng = SimRng::new(seed ^ 0x5EED_CA05_E3A7_0001);
        // Sparse, unordered ids: nothing may assume ids are 0..n.
        let ids: Vec<u32> = (0..config.regions)
            .map(|i| (i as u32 * 7 + 3) % 31)
            .collect();
        let mut nodes = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            let max = config.clock_offset_ms_max as i64;
            let mut offset_ms = rng.range(0, 2 * max as u64) as i64 - max;
            if config.bad_clock && i == 0 {
                offset_ms = max + config.hlc_skew_ms_max as i64 + rng.range(1, 300) as i64;
            }
            nodes.push(Node {
                id,
                offset_ms,
                replica: None,
                parked: Some(storage.create(i).map_err(|e| Violation {
                    seed,
                    at_ms: 0,
                    message: format!("creating the log of {id}: {e}"),
                    replay: S::REPLAY,
                })?),
                down_until_ms: 0,
                next_pull_ms: rng.below(config.pull_interval_ms),
                unacked: Vec::new(),
                syncing: None,
                held_when_down: VectorClock::default(),
                down_since_ms: 0,
                excluded: false,
                needs_reseed: false,
            });
        }
        let n = config.regions;
        let mut sim = Sim {
            storage,
            seed,
            config,
            rng,
            now_ms: 0,
            nodes,
            ids,
            cut: vec![vec![false; n]; n],
            network: BTreeMap::new(),
            send_order: 0,
            faults: true,
            next_payload: 1,
            escaped: BTreeMap::new(),
            acknowledged: BTreeMap::new(),
            report: SimReport::default(),
        };
        for i in 0..n {
            sim.restart(i)?;
        }
        sim.apply_permanent_cut();
        Ok(sim)
    }

    fn apply_permanent_cut(&mut self) {
        if let Some((a, b)) = self.config.permanent_cut {
            if a < self.cut.len() && b < self.cut.len() && a != b {
                self.cut[a][b] = true;
                self.cut[b][a] = true;
            }
        }
    }

    fn violation(&self, message: impl Into<String>) -> Violation {
        Violation {
            seed: self.seed,
            at_ms: self.now_ms,
            message: message.into(),
            replay: S::REPLAY,
        }
    }

    fn replica_config(&self, i: usize) -> ReplicaConfig {
        ReplicaConfig {
            region: self.ids[i],
            regions: self.ids.clone(),
            pending_per_origin_max: self.config.pending_per_origin_max,
            hlc_skew_ms_max: self.config.hlc_skew_ms_max,
        }
    }

    fn wall_ms(&self, i: usize) -> u64 {
        EPOCH_MS
            .saturating_add(self.now_ms)
            .saturating_add_signed(self.nodes[i].offset_ms)
    }

    fn run(&mut self) -> Result<(), Violation> {
        while self.now_ms < self.config.fault_ms {
            self.step()?;
        }
        self.faults = false;
        for row in &mut self.cut {
            row.iter_mut().for_each(|c| *c = false);
        }
        self.apply_permanent_cut();
        for i in 0..self.nodes.len() {
            if self.nodes[i].replica.is_none() {
                self.restart(i)?;
            }
        }
        let quiesce_start = self.now_ms;
        let mut next_check_ms = self.now_ms;
        loop {
            self.step()?;
            if self.now_ms >= next_check_ms {
                next_check_ms = self.now_ms + QUIESCE_CHECK_MS;
                if self.converged() {
                    break;
                }
            }
            if self.now_ms - quiesce_start > self.config.quiesce_ms_max {
                let clocks: Vec<String> = self
                    .nodes
                    .iter()
                    .filter_map(|n| n.replica.as_ref())
                    .map(|r| format!("{:?} pending {}", r.clock().to_deps(), r.pending_len()))
                    .collect();
                return Err(self.violation(format!("no convergence: {clocks:?}")));
            }
        }
        self.report.quiesce_ms = self.now_ms - quiesce_start;
        self.final_checks()
    }

    fn converged(&self) -> bool {
        let mut clocks = self.nodes.iter().map(|n| n.replica.as_ref());
        let Some(Some(first)) = clocks.next() else {
            return false;
        };
        first.pending_len() == 0
            && first.durable_clock() == first.clock()
            && clocks.all(|r| {
                r.is_some_and(|r| {
                    r.clock() == first.clock()
                        && r.durable_clock() == r.clock()
                        && r.pending_len() == 0
                })
            })
    }

    fn step(&mut self) -> Result<(), Violation> {
        self.now_ms += 1;
        let n = self.nodes.len();
        if self.faults {
            for a in 0..n {
                for b in (a + 1)..n {
                    let flip = if self.cut[a][b] {
                        self.rng.chance(self.config.heal_per_million)
                    } else {
                        self.rng.chance(self.config.cut_per_million)
                    };
                    if flip {
                        self.cut[a][b] = !self.cut[a][b];
                        self.cut[b][a] = self.cut[a][b];
                    }
                }
            }
            self.apply_permanent_cut();
            for i in 0..n {
                if self.nodes[i].replica.is_some() {
                    if self.rng.chance(self.config.crash_per_million) {
                        self.crash(i)?;
                    }
                } else if self.now_ms >= self.nodes[i].down_until_ms {
                    self.restart(i)?;
                } else if S::SEEDS && self.rng.chance(self.config.reseed_per_million) {
                    self.reseed(i)?;
                }
            }
            for i in 0..n {
                if self.nodes[i].replica.is_some()
                    && !self.nodes[i].needs_reseed
                    && self.rng.chance(self.config.append_per_million)
                {
                    self.append(i)?;
                }
            }
        }
        for i in 0..n {
            if self.nodes[i].replica.is_some() && self.rng.chance(self.config.sync_per_million) {
                self.sync(i)?;
            }
            if self.nodes[i].replica.is_some()
                && !self.nodes[i].needs_reseed
                && self.rng.chance(self.config.maintain_per_million)
            {
                self.maintain(i)?;
            }
        }
        for i in 0..n {
            if self.nodes[i].needs_reseed && self.nodes[i].replica.is_some() {
                self.reseed_returned(i)?;
            }
        }
        for i in 0..n {
            if self.nodes[i].replica.is_some() && self.now_ms >= self.nodes[i].next_pull_ms {
                self.nodes[i].next_pull_ms = self.now_ms + self.config.pull_interval_ms;
                for peer in 0..n {
                    if peer == i {
                        continue;
                    }
                    let request = match &self.nodes[i].replica {
                        Some(replica) => replica.pull_request(self.ids[peer]),
                        None => continue,
                    };
                    self.send(i, peer, Message::Pull(request));
                }
            }
        }
        while let Some(entry) = self.network.first_entry() {
            if entry.key().0 > self.now_ms {
                break;
            }
            let message = entry.remove();
            self.deliver(message)?;
        }
        self.check_stable_cuts()
    }

    fn append(&mut self, i: usize) -> Result<(), Violation> {
        let payload = self.next_payload;
        self.next_payload += 1;
        let wall = self.wall_ms(i);
        let id = self.ids[i];
        let stored = self.storage.payload(i, id, payload);
        let result = match self.nodes[i].replica.as_mut() {
            Some(replica) => replica.append_local(stored, wall),
            None => return Ok(()),
        };
        let meta = result.map_err(|e| self.violation(format!("append at {id}: {e}")))?;
        let key = BatchId {
            origin: id,
            seq: meta.origin_seq,
        };
        if let Some(other) = self.escaped.get(&key) {
            return Err(self.violation(format!(
                "sequence {}:{} reused: payload {payload}, but {other} already left the region",
                key.origin, key.seq
            )));
        }
        self.nodes[i].unacked.push((meta.origin_seq, payload));
        self.report.appends += 1;
        Ok(())
    }

    /// One step of the broker's group commit: finish the sync in flight, or start one (which
    /// half the time finishes at once, half the time lets appends in before it finishes).
    fn sync(&mut self, i: usize) -> Result<(), Violation> {
        let id = self.ids[i];
        let finish_now = self.rng.chance(500_000);
        let node = &mut self.nodes[i];
        let Some(replica) = node.replica.as_mut() else {
            return Ok(());
        };
        let started = match node.syncing.take() {
            Some(started) => started,
            None if finish_now => replica.start_sync(),
            None => {
                node.syncing = Some(replica.start_sync());
                return Ok(());
            }
        };
        let covered = started.clock().get(id);
        if let Err(e) = replica.finish_sync(started) {
            return Err(self.violation(format!("sync at {id}: {e}")));
        }
        let node = &mut self.nodes[i];
        let (acked, unacked): (Vec<_>, Vec<_>) = std::mem::take(&mut node.unacked)
            .into_iter()
            .partition(|&(seq, _)| seq <= covered);
        node.unacked = unacked;
        for (seq, payload) in acked {
            self.acknowledged
                .insert(BatchId { origin: id, seq }, payload);
            self.report.acknowledged += 1;
        }
        Ok(())
    }

    /// A maintenance pass over region `i`'s log, bounded by its replica's stable cut over the
    /// regions not stale.
    fn maintain(&mut self, i: usize) -> Result<(), Violation> {
        let choice = self.rng.next_u64();
        let id = self.ids[i];
        let stale: Vec<usize> = (0..self.nodes.len())
            .filter(|&j| j != i && self.is_stale(j))
            .collect();
        for &j in &stale {
            self.nodes[j].excluded = true;
        }
        let stale: Vec<u32> = stale.into_iter().map(|j| self.ids[j]).collect();
        let Some(replica) = self.nodes[i].replica.as_mut() else {
            return Ok(());
        };
        let bounds = MaintenanceBounds {
            clock: replica.clock().clone(),
            cut: replica.stable_cut_without(&stale),
            frontier: replica.frontier_without(&stale),
        };
        let deleted = self
            .storage
            .maintain(i, replica.log_mut(), &bounds, choice)
            .map_err(|e| self.violation(format!("maintenance at {id}: {e}")))?;
        self.report.deleted += deleted;
        Ok(())
    }

    fn crash(&mut self, i: usize) -> Result<(), Violation> {
        let Some(replica) = self.nodes[i].replica.take() else {
            return Ok(());
        };
        let id = self.ids[i];
        let durable_before = replica.durable_clock().clone();
        let (log, lost) = self
            .storage
            .crash(i, replica.into_log())
            .map_err(|e| self.violation(format!("crash of {id}: {e}")))?;
        self.report.lost_unsynced += lost;
        self.report.crashes += 1;
        self.nodes[i].unacked.clear();
        self.nodes[i].syncing = None;
        let recovered = log
            .recover()
            .map_err(|e| self.violation(format!("reopening {id}: {e}")))?
            .clock;
        if !dominated_by(&durable_before, &recovered) {
            return Err(self.violation(format!(
                "the clock of {id} went backwards across a restart: durable {:?} before, {:?} after",
                durable_before.to_deps(),
                recovered.to_deps()
            )));
        }
        let kept = recovered.get(id);
        let acked = self
            .acknowledged
            .range(
                BatchId { origin: id, seq: 0 }..=BatchId {
                    origin: id,
                    seq: u64::MAX,
                },
            )
            .next_back()
            .map_or(0, |(key, _)| key.seq);
        if kept < acked {
            return Err(self.violation(format!(
                "crash of {id} lost acknowledged batches {}..={acked}",
                kept + 1
            )));
        }
        self.nodes[i].parked = Some(log);
        self.nodes[i].held_when_down = recovered;
        self.nodes[i].down_since_ms = self.now_ms;
        self.nodes[i].down_until_ms = self.now_ms + self.rng.range(1, self.config.down_ms_max);
        Ok(())
    }

    /// Whether region `i` is down and has been for longer than the stale bound.
    fn is_stale(&self, i: usize) -> bool {
        S::SEEDS
            && self.nodes[i].replica.is_none()
            && self
                .config
                .stale_after_ms
                .is_some_and(|bound| self.now_ms - self.nodes[i].down_since_ms > bound)
    }

    /// The operator's part for a region back after being stale: once a live region that was
    /// never stale meanwhile (a returned one may lack what was removed too) holds everything it
    /// holds (its own batches have been pulled from it), stop it, seed it from that region and
    /// start it again.
    fn reseed_returned(&mut self, i: usize) -> Result<(), Violation> {
        let Some(replica) = self.nodes[i].replica.as_ref() else {
            return Ok(());
        };
        let held = replica.clock().clone();
        let donor_holds_all = (0..self.nodes.len()).any(|p| {
            p != i
                && !self.nodes[p].needs_reseed
                && self.nodes[p]
                    .replica
                    .as_ref()
                    .is_some_and(|r| dominated_by(&held, r.clock()))
        });
        if !donor_holds_all {
            return Ok(());
        }
        self.crash(i)?;
        let before = self.report.reseeded;
        self.reseed(i)?;
        if self.report.reseeded == before {
            return Err(self.violation(format!(
                "{} could not be re-seeded although a region held everything it held",
                self.ids[i]
            )));
        }
        self.nodes[i].needs_reseed = false;
        self.report.stale_reseeded += 1;
        self.restart(i)
    }

    /// Region `i`, down, loses its log and is seeded from a live region holding everything `i`
    /// held (the rule `docs/replication.md` gives for re-seeding). The copy's clock must
    /// be the donor's: it holds everything the donor held (the donor fsyncs before it is
    /// copied), and claims nothing the donor lacks.
    fn reseed(&mut self, i: usize) -> Result<(), Violation> {
        let held = &self.nodes[i].held_when_down;
        let donors: Vec<usize> = (0..self.nodes.len())
            .filter(|&p| {
                p != i
                    && !self.nodes[p].needs_reseed
                    && self.nodes[p]
                        .replica
                        .as_ref()
                        .is_some_and(|r| dominated_by(held, r.clock()))
            })
            .collect();
        if donors.is_empty() || self.nodes[i].parked.is_none() {
            return Ok(());
        }
        let p = donors[self.rng.below(donors.len() as u64) as usize];
        let choice = self.rng.next_u64();
        let (id, donor_id) = (self.ids[i], self.ids[p]);
        let (Some(old), Some(donor)) =
            (self.nodes[i].parked.take(), self.nodes[p].replica.as_ref())
        else {
            return Ok(());
        };
        let (donor_durable, donor_clock) = (donor.durable_clock().clone(), donor.clock().clone());
        let copy = self
            .storage
            .seed(i, old, p, donor.log(), choice)
            .map_err(|e| self.violation(format!("seeding {id} from {donor_id}: {e}")))?;
        let copied = copy
            .recover()
            .map_err(|e| self.violation(format!("opening {id}'s copy: {e}")))?
            .clock;
        if copied != donor_clock {
            return Err(self.violation(format!(
                "{id} seeded from {donor_id} has clock {:?}, the donor {:?} (durable {:?})",
                copied.to_deps(),
                donor_clock.to_deps(),
                donor_durable.to_deps()
            )));
        }
        self.nodes[i].parked = Some(copy);
        self.report.reseeded += 1;
        Ok(())
    }

    fn restart(&mut self, i: usize) -> Result<(), Violation> {
        let Some(log) = self.nodes[i].parked.take() else {
            return Ok(());
        };
        if std::mem::take(&mut self.nodes[i].excluded) {
            self.nodes[i].needs_reseed = true;
        }
        let replica = PartitionReplica::recover(self.replica_config(i), log)
            .map_err(|e| self.violation(format!("restart of {}: {e}", self.ids[i])))?;
        self.nodes[i].replica = Some(replica);
        Ok(())
    }

    fn send(&mut self, from: usize, to: usize, message: Message<LogPayload<S>>) {
        self.report.messages += 1;
        if self.cut[from][to] || (self.faults && self.rng.chance(self.config.drop_per_million)) {
            self.report.dropped += 1;
            return;
        }
        let copies = if self.rng.chance(self.config.dup_per_million) {
            self.report.duplicated += 1;
            2
        } else {
            1
        };
        let mut message = Some(message);
        for copy in 0..copies {
            let at = self.now_ms + self.rng.range(1, self.config.delay_ms_max.max(1));
            let body = if copy + 1 == copies {
                message.take()
            } else {
                message.as_ref().map(|m| match m {
                    Message::Pull(r) => Message::Pull(r.clone()),
                    Message::Response(r) => Message::Response(r.clone()),
                })
            };
            if let Some(body) = body {
                self.send_order += 1;
                self.network.insert(
                    (at, self.send_order),
                    InFlight {
                        from,
                        to,
                        message: body,
                    },
                );
            }
        }
    }

    fn deliver(&mut self, flight: InFlight<LogPayload<S>>) -> Result<(), Violation> {
        let InFlight { from, to, message } = flight;
        if self.cut[from][to] || self.nodes[to].replica.is_none() {
            self.report.dropped += 1;
            return Ok(());
        }
        let wall = self.wall_ms(to);
        let limit = self.config.pull_limit;
        let bytes_max = self.config.pull_bytes_max;
        match message {
            Message::Pull(request) => {
                let storage = &self.storage;
                let size = |payload: &LogPayload<S>| {
                    storage.number(payload).map_or(1, |n| payload_bytes(&n))
                };
                let result = match self.nodes[to].replica.as_mut() {
                    Some(replica) => replica.serve_pull(&request, limit, bytes_max, size),
                    None => return Ok(()),
                };
                let response = result.map_err(|e| {
                    self.violation(format!(
                        "serve at {} for {}: {e}",
                        self.ids[to], self.ids[from]
                    ))
                })?;
                for batch in &response.batches {
                    let id = batch.id();
                    let number = self.storage.number(&batch.payload).map_err(|e| {
                        self.violation(format!(
                            "{} served {}:{}: {e}",
                            self.ids[to], id.origin, id.seq
                        ))
                    })?;
                    let known = *self.escaped.entry(id).or_insert(number);
                    if known != number {
                        return Err(self.violation(format!(
                            "{} served {}:{} with payload {number}, but {known} left earlier",
                            self.ids[to], id.origin, id.seq
                        )));
                    }
                }
                self.send(to, from, Message::Response(response));
            }
            Message::Response(mut response) => {
                if self.faults && self.rng.chance(self.config.shuffle_per_million) {
                    for k in (1..response.batches.len()).rev() {
                        let other = self.rng.below(k as u64 + 1) as usize;
                        response.batches.swap(k, other);
                    }
                }
                if self.faults && self.config.batch_drop_per_million > 0 {
                    let rate = self.config.batch_drop_per_million;
                    let rng = &mut self.rng;
                    response.batches.retain(|_| !rng.chance(rate));
                }
                let result = match self.nodes[to].replica.as_mut() {
                    Some(replica) => replica.receive_response(response, wall),
                    None => return Ok(()),
                };
                let report = result.map_err(|e| {
                    self.violation(format!(
                        "receive at {} from {}: {e}",
                        self.ids[to], self.ids[from]
                    ))
                })?;
                self.report.backpressured += report.backpressured as u64;
                self.report.evicted += report.evicted as u64;
                for (id, refusal) in report.refused {
                    match refusal {
                        Refusal::ClockSkew { .. } if self.config.bad_clock => {
                            self.report.skew_refusals += 1;
                        }
                        // Back after being left out of the stable cuts, it may be served the
                        // merged form of a batch it holds in its original form (the serving
                        // side checked it is the same write); a re-seed replaces its log.
                        Refusal::Conflict if self.nodes[to].needs_reseed => {
                            self.report.reseed_conflicts += 1;
                        }
                        other => {
                            return Err(self.violation(format!(
                                "{} refused {}:{} from {}: {other:?}",
                                self.ids[to], id.origin, id.seq, self.ids[from]
                            )))
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Each region's stable cut is at or below every region's durable log, so retention acting
    /// on it could never delete a batch some region may still need after a crash.
    fn check_stable_cuts(&self) -> Result<(), Violation> {
        let durable: Vec<VectorClock> = self
            .nodes
            .iter()
            .filter_map(|n| n.replica.as_ref().map(|r| r.log()).or(n.parked.as_ref()))
            .map(|log| self.storage.durable_clock(log))
            .collect();
        for node in &self.nodes {
            let Some(replica) = &node.replica else {
                continue;
            };
            let cut = replica.stable_cut();
            if let Some(lower) = durable.iter().find(|d| !dominated_by(&cut, d)) {
                return Err(self.violation(format!(
                    "stable cut {:?} at {} is above a durable clock {:?}",
                    cut.to_deps(),
                    node.id,
                    lower.to_deps()
                )));
            }
        }
        Ok(())
    }

    /// Every region's final log, payloads as numbers.
    fn final_logs(&self) -> Result<Vec<RegionLog>, Violation> {
        let mut logs = Vec::new();
        for (index, node) in self.nodes.iter().enumerate() {
            let Some(replica) = &node.replica else {
                return Err(self.violation(format!("{} is down at the end", node.id)));
            };
            let batches = self
                .storage
                .batches(index, replica.log())
                .map_err(|e| self.violation(format!("reading the log of {}: {e}", node.id)))?;
            logs.push((node.id, batches));
        }
        Ok(logs)
    }

    fn final_checks(&mut self) -> Result<(), Violation> {
        let logs = self.final_logs()?;
        let mut reference: Option<Vec<(BatchId, Payload)>> = None;
        for (node_id, log) in &logs {
            let node_id = *node_id;
            // Per-origin order and causality, re-checked on the final log.
            let mut clock = VectorClock::default();
            for batch in log {
                let id = batch.id();
                if id.seq != clock.get(id.origin) + 1
                    || batch.meta.deps.iter().any(|&(r, s)| s > clock.get(r))
                {
                    return Err(self.violation(format!(
                        "log of {} holds {}:{} out of causal order",
                        node_id, id.origin, id.seq
                    )));
                }
                clock.advance(id.origin, id.seq);
                if let Some(&escaped) = self.escaped.get(&id) {
                    if escaped != batch.payload {
                        return Err(self.violation(format!(
                            "{} holds {}:{} with payload {}, others have {escaped}",
                            node_id, id.origin, id.seq, batch.payload
                        )));
                    }
                }
            }
            let mut set: Vec<(BatchId, Payload)> =
                log.iter().map(|b| (b.id(), b.payload)).collect();
            set.sort_unstable();
            for (id, payload) in &self.acknowledged {
                if set.binary_search(&(*id, *payload)).is_err() {
                    return Err(self.violation(format!(
                        "acknowledged {}:{} (payload {payload}) missing at {}",
                        id.origin, id.seq, node_id
                    )));
                }
            }
            match &reference {
                None => reference = Some(set),
                Some(first) if *first != set => {
                    return Err(self.violation(format!(
                        "{} ends with {} batches, the first region with {}, or different ones",
                        node_id,
                        set.len(),
                        first.len()
                    )))
                }
                Some(_) => {}
            }
        }
        let region_logs: Vec<&S::Log> = self
            .nodes
            .iter()
            .filter_map(|node| node.replica.as_ref().map(|replica| replica.log()))
            .collect();
        self.storage
            .check_final(&region_logs)
            .map_err(|e| self.violation(e))?;
        self.check_tables(&logs)?;
        if let Some((_, first)) = logs.into_iter().next() {
            self.report.final_log = first;
        }
        Ok(())
    }

    /// Tables end byte-identical: the rows each region materializes from its own log, in its
    /// log order, encode to the same bytes everywhere, and to the same bytes as two other
    /// application orders of the same writes. Runs after `final_checks` has established that
    /// every region holds the same batches.
    fn check_tables(&mut self, logs: &[RegionLog]) -> Result<(), Violation> {
        let Some((first_id, first_log)) = logs.first() else {
            return Ok(());
        };
        let first_id = *first_id;
        let mut writes: BTreeMap<Payload, (usize, Op)> = BTreeMap::new();
        let mut stats = TableStats::default();
        for batch in first_log {
            let write = table_write(batch.payload).map_err(|e| {
                self.violation(format!(
                    "table write of payload {} does not decode: {e}",
                    batch.payload
                ))
            })?;
            stats.count(&write.1);
            writes.insert(batch.payload, write);
        }
        let materialize = |batches: &mut dyn Iterator<Item = &Batch<Payload>>, twice: bool| {
            let mut tables = Tables::new();
            for batch in batches {
                if let Some((key, op)) = writes.get(&batch.payload) {
                    tables.apply(batch, *key, op);
                    if twice {
                        tables.apply(batch, *key, op);
                    }
                }
            }
            tables
        };
        let reference = materialize(&mut first_log.iter(), false);
        reference.count_rows(&mut stats);
        let expected = reference.to_bytes();
        let mut others: Vec<(String, Vec<Vec<u8>>)> = Vec::new();
        for (id, log) in &logs[1..] {
            let rows = materialize(&mut log.iter(), false).to_bytes();
            others.push((format!("region {id} (its log order)"), rows));
        }
        let mut by_origin: Vec<&Batch<Payload>> = first_log.iter().collect();
        by_origin.sort_by_key(|b| b.id());
        others.push((
            "the batches sorted by (origin, seq)".to_owned(),
            materialize(&mut by_origin.into_iter(), false).to_bytes(),
        ));
        let mut halves = materialize(
            &mut first_log.iter().rev().filter(|b| b.payload % 2 == 0),
            false,
        );
        halves.merge_from(&materialize(
            &mut first_log.iter().filter(|b| b.payload % 2 == 1),
            true,
        ));
        others.push((
            "the merge of two halves (one backwards, one applied twice)".to_owned(),
            halves.to_bytes(),
        ));
        for (what, rows) in &others {
            if let Some((key, theirs, ours)) = tables::first_difference(rows, &expected) {
                return Err(self.violation(format!(
                    "tables differ: key {key} materializes to {} from {what} but to {} at \
                     region {first_id} (its log order)",
                    shorten(theirs),
                    shorten(ours)
                )));
            }
        }
        self.report.tables = stats;
        Ok(())
    }
}

/// A row encoding for a message: lossy UTF-8 (rows are JSON), cut to a readable length.
fn shorten(bytes: &[u8]) -> String {
    const MAX: usize = 400;
    let text = String::from_utf8_lossy(bytes);
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.into_owned(),
    }
}
