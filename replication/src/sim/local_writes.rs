//! The caller's side of local writes and syncs, done as the broker's partition handle does
//! them (`broker/src/partition_handle.rs`): the replica stamps, the caller appends and reports;
//! the caller reads the clock, syncs the log through its end, and reports the clock it synced.
//! The simulator and the unit tests write through here, so they take the broker's path.

use causeway_causal::CausalMeta;

use super::MemoryLog;
use crate::delivery::{AppendError, Batch, BatchLog, LogError, PartitionReplica, ReplicaError};

/// What the caller, not the replica, does to a log: append batches produced here (with the
/// replica's stamp) and make an appended prefix durable, as storage's group commit does.
pub trait CallerLog: BatchLog {
    /// Appends a batch produced here; the broker's log also checks producer state here.
    fn append_own(&mut self, batch: Batch<Self::Payload>) -> Result<(), AppendError>;
    /// Where the log ends now, in whatever unit [`CallerLog::sync_through`] takes.
    fn end(&self) -> u64;
    /// Makes everything before `end` survive a crash.
    fn sync_through(&mut self, end: u64) -> Result<(), LogError>;
}

impl<P: Clone + PartialEq> CallerLog for MemoryLog<P> {
    fn append_own(&mut self, batch: Batch<P>) -> Result<(), AppendError> {
        self.append(batch)
    }

    fn end(&self) -> u64 {
        self.len() as u64
    }

    fn sync_through(&mut self, end: u64) -> Result<(), LogError> {
        MemoryLog::sync_through(self, usize::try_from(end).unwrap_or(usize::MAX));
        Ok(())
    }
}

/// Local appends and group-commit syncs on a replica whose log the caller owns.
pub trait LocalWrites<P> {
    /// Stamps `payload` as this region's next batch, appends it, reports it; the metadata it got.
    fn append_local(&mut self, payload: P, wall_ms: u64) -> Result<CausalMeta, ReplicaError>;

    /// What a group commit started now covers: the clock and the log end, to finish later with
    /// [`LocalWrites::finish_sync`] (appends may come in between, as they do in the broker).
    fn start_sync(&self) -> PendingSync;

    /// Makes the log durable through the started sync's end and reports its clock.
    fn finish_sync(&mut self, started: PendingSync) -> Result<(), ReplicaError>;

    /// A sync with nothing in between.
    fn sync(&mut self) -> Result<(), ReplicaError> {
        let started = self.start_sync();
        self.finish_sync(started)
    }
}

/// A group commit in flight: the replica clock and log end read when it started.
#[derive(Debug, Clone)]
pub struct PendingSync {
    clock: crate::VectorClock,
    end: u64,
}

impl PendingSync {
    /// The clock this sync will report durable.
    pub fn clock(&self) -> &crate::VectorClock {
        &self.clock
    }
}

impl<L: CallerLog> LocalWrites<L::Payload> for PartitionReplica<L> {
    fn append_local(
        &mut self,
        payload: L::Payload,
        wall_ms: u64,
    ) -> Result<CausalMeta, ReplicaError> {
        let meta = self.stamp_local(wall_ms)?;
        let batch = Batch {
            meta: meta.clone(),
            payload,
        };
        self.log_mut()
            .append_own(batch)
            .map_err(|error| match error {
                AppendError::Failed(error) => ReplicaError::Log(error),
                AppendError::Refused(reason) => {
                    ReplicaError::Log(LogError(format!("refused a local batch: {reason}")))
                }
            })?;
        self.local_appended(&meta);
        Ok(meta)
    }

    fn start_sync(&self) -> PendingSync {
        PendingSync {
            clock: self.clock().clone(),
            end: self.log().end(),
        }
    }

    fn finish_sync(&mut self, started: PendingSync) -> Result<(), ReplicaError> {
        self.log_mut().sync_through(started.end)?;
        self.synced(&started.clock);
        Ok(())
    }
}
