//! What a simulated region stores its log on: [`MemoryStorage`] here, or the broker's real
//! adapter over segment files (its tests implement [`SimStorage`] for that), so the same
//! scenarios and checks run over the code the broker runs.

use super::{CallerLog, MemoryLog, Payload};
use crate::clock::VectorClock;
use crate::delivery::{Batch, BatchLog};

/// The payload type of a storage's logs.
pub type LogPayload<S> = <<S as SimStorage>::Log as BatchLog>::Payload;

/// What a region's replica reports to its log maintenance, as the broker's `PartitionHandle`
/// reads it before a pass.
#[derive(Debug, Clone)]
pub struct MaintenanceBounds {
    /// The replica's clock.
    pub clock: VectorClock,
    /// Its stable cut over the regions not stale: retention and compaction stay below it.
    pub cut: VectorClock,
    /// Its frontier over the same regions, for the tombstone horizon.
    pub frontier: VectorClock,
}

/// The storage simulated regions run on. Errors are texts: any of them fails the run.
pub trait SimStorage {
    /// One region's log.
    type Log: CallerLog;

    /// The test command that runs the simulation over this storage, for replaying a seed.
    const REPLAY: &'static str;

    /// Whether [`SimStorage::seed`] copies logs: the simulator re-seeds down regions only then.
    const SEEDS: bool = false;

    /// The region at `index`, stopped, loses its log `old` and gets a copy of `from`, the live
    /// log of the region at `from_index`, made the way a region joining the mesh copies a peer's
    /// (`--seed-from`); `choice` is a random number for the copy's own decisions.
    fn seed(
        &mut self,
        _index: usize,
        _old: Self::Log,
        _from_index: usize,
        _from: &Self::Log,
        _choice: u64,
    ) -> Result<Self::Log, String> {
        Err("this storage cannot seed".into())
    }

    /// A new, empty log for the region at `index`.
    fn create(&mut self, index: usize) -> Result<Self::Log, String>;

    /// The region at `index` stops abruptly: its log as a restart finds it, and how many
    /// batches the stop took (a power loss takes what no sync covered; a killed process
    /// loses nothing the kernel holds).
    fn crash(&mut self, index: usize, log: Self::Log) -> Result<(Self::Log, u64), String>;

    /// The payload that stands for the simulated write `number`, made by the region at `index`
    /// (whose id is `region`).
    fn payload(&mut self, index: usize, region: u32, number: Payload) -> LogPayload<Self>;

    /// The simulated write `payload` stands for.
    fn number(&self, payload: &LogPayload<Self>) -> Result<Payload, String>;

    /// Every batch the log of the region at `index` ever held, in log order, with payloads as
    /// numbers: what maintenance deleted, then what `log` holds now.
    fn batches(&self, index: usize, log: &Self::Log) -> Result<Vec<Batch<Payload>>, String>;

    /// Runs the broker's log maintenance (retention, DeleteRecords, table compaction) on the
    /// region at `index`, within what its replica reports in `bounds`; `choice` is a random
    /// number for the storage's own decisions. Returns how many batches it removed. Logs in
    /// memory keep everything.
    fn maintain(
        &mut self,
        _index: usize,
        _log: &mut Self::Log,
        _bounds: &MaintenanceBounds,
        _choice: u64,
    ) -> Result<u64, String> {
        Ok(0)
    }

    /// The clock of what `log` keeps through [`SimStorage::crash`].
    fn durable_clock(&self, log: &Self::Log) -> VectorClock;

    /// The storage's own checks on every region's final log (by region index), once every
    /// region holds the same batches.
    fn check_final(&self, _logs: &[&Self::Log]) -> Result<(), String> {
        Ok(())
    }
}

/// Logs in memory that lose everything after their last sync on a crash (a power loss).
#[derive(Debug, Default, Clone, Copy)]
pub struct MemoryStorage;

impl SimStorage for MemoryStorage {
    type Log = MemoryLog<Payload>;

    const REPLAY: &'static str = "cargo test --release -p causeway-replication --test simulation";

    fn create(&mut self, _index: usize) -> Result<Self::Log, String> {
        Ok(MemoryLog::new())
    }

    fn crash(&mut self, _index: usize, mut log: Self::Log) -> Result<(Self::Log, u64), String> {
        let lost = log.crash() as u64;
        Ok((log, lost))
    }

    fn payload(&mut self, _index: usize, _region: u32, number: Payload) -> Payload {
        number
    }

    fn number(&self, payload: &Payload) -> Result<Payload, String> {
        Ok(*payload)
    }

    fn batches(&self, _index: usize, log: &Self::Log) -> Result<Vec<Batch<Payload>>, String> {
        Ok(log.batches().to_vec())
    }

    fn durable_clock(&self, log: &Self::Log) -> VectorClock {
        log.durable_clock().clone()
    }
}
