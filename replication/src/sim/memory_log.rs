//! An in-memory [`BatchLog`] that checks the causal contract on every append and models a crash
//! as losing everything after the last sync.

use std::collections::BTreeMap;

use crate::clock::VectorClock;
use crate::delivery::{AppendError, Batch, BatchId, BatchLog, LogError, Positioned, RecoveredLog};

/// A partition log held in a `Vec`: the simulator's stand-in for storage. Every append is checked
/// against the log's own clock (per-origin order, dependencies already present), so a replica
/// that ever applies a batch too early fails at that very append.
#[derive(Debug, Clone)]
pub struct MemoryLog<P> {
    batches: Vec<Batch<P>>,
    synced_len: usize,
    index: BTreeMap<BatchId, u64>,
    clock: VectorClock,
    durable: VectorClock,
}

impl<P> Default for MemoryLog<P> {
    fn default() -> Self {
        MemoryLog {
            batches: Vec::new(),
            synced_len: 0,
            index: BTreeMap::new(),
            clock: VectorClock::default(),
            durable: VectorClock::default(),
        }
    }
}

impl<P: Clone + PartialEq> MemoryLog<P> {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every batch in log order (the local apply order).
    pub fn batches(&self) -> &[Batch<P>] {
        &self.batches
    }

    /// How many leading batches survive a crash.
    pub fn synced_len(&self) -> usize {
        self.synced_len
    }

    /// The clock of the whole log (per origin, the highest sequence held).
    pub fn clock(&self) -> &VectorClock {
        &self.clock
    }

    /// The clock of the part that survives a crash.
    pub fn durable_clock(&self) -> &VectorClock {
        &self.durable
    }

    /// How many batches the log holds (the end a group commit syncs through).
    pub fn len(&self) -> usize {
        self.batches.len()
    }

    /// Whether the log holds no batch.
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Makes the first `len` batches survive a crash (a group commit that covers what was
    /// appended before it started, not what came in meanwhile).
    pub fn sync_through(&mut self, len: usize) {
        let len = len.min(self.batches.len());
        for batch in self.batches.iter().take(len).skip(self.synced_len) {
            self.durable
                .advance(batch.meta.origin_region, batch.meta.origin_seq);
        }
        self.synced_len = self.synced_len.max(len);
    }

    /// A power loss: everything after the last sync is gone. Returns how many batches were lost.
    pub fn crash(&mut self) -> usize {
        let lost = self.batches.len() - self.synced_len;
        self.batches.truncate(self.synced_len);
        self.index = self
            .batches
            .iter()
            .enumerate()
            .map(|(position, batch)| (batch.id(), position as u64))
            .collect();
        self.clock = clock_of(&self.batches);
        self.durable = self.clock.clone();
        lost
    }
}

fn clock_of<P>(batches: &[Batch<P>]) -> VectorClock {
    let mut clock = VectorClock::default();
    for batch in batches {
        clock.advance(batch.meta.origin_region, batch.meta.origin_seq);
    }
    clock
}

impl<P: Clone + PartialEq> BatchLog for MemoryLog<P> {
    type Payload = P;

    fn append(&mut self, batch: Batch<P>) -> Result<(), AppendError> {
        let id = batch.id();
        let expected = self.clock.get(id.origin) + 1;
        if id.seq != expected {
            return Err(LogError(format!(
                "causal contract: batch {}:{} appended where {}:{} was due",
                id.origin, id.seq, id.origin, expected
            ))
            .into());
        }
        for &(region, seq) in &batch.meta.deps {
            if seq > self.clock.get(region) {
                return Err(LogError(format!(
                    "causal contract: batch {}:{} depends on {}:{} which the log lacks",
                    id.origin, id.seq, region, seq
                ))
                .into());
            }
        }
        self.index.insert(id, self.batches.len() as u64);
        self.clock.advance(id.origin, id.seq);
        self.batches.push(batch);
        Ok(())
    }

    fn position_of(&self, id: BatchId) -> Result<Option<u64>, LogError> {
        Ok(self.index.get(&id).copied())
    }

    fn read(&self, from: u64, max: usize) -> Result<Vec<Positioned<P>>, LogError> {
        let start = usize::try_from(from).unwrap_or(usize::MAX);
        Ok(self
            .batches
            .iter()
            .enumerate()
            .skip(start)
            .take(max)
            .map(|(position, batch)| (position as u64, batch.clone()))
            .collect())
    }

    fn recover(&self) -> Result<RecoveredLog, LogError> {
        Ok(RecoveredLog {
            clock: self.clock.clone(),
            hlc_max: self.batches.iter().map(|b| b.meta.hlc).max().unwrap_or(0),
        })
    }
}
