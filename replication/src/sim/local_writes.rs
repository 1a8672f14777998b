//! The caller's side of local writes and syncs, done as the broker's partition handle does
//! them (`broker/src/replication/handle.rs`): the replica stamps, the caller appends and reports;
//! the caller reads the clock, syncs the log through its end, and reports the clock it synced.
//! The simulator and the unit tests write through here, so they take the broker's path.

use causeway_causal::CausalMeta;

use super::MemoryLog;
use crate::delivery::{AppendError, Batch, BatchLog, LogError, PartitionReplica, ReplicaError};

/// A log whose appended prefix the caller can make durable, as storage's group commit does.
pub trait SyncableLog: BatchLog {
    /// How many batches the log holds now.
    fn end(&self) -> usize;
    /// Makes the first `end` batches survive a crash.
    fn sync_through(&mut self, end: usize);
}

impl<P: Clone + PartialEq> SyncableLog for MemoryLog<P> {
    fn end(&self) -> usize {
        self.len()
    }

    fn sync_through(&mut self, end: usize) {
        MemoryLog::sync_through(self, end);
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
    fn finish_sync(&mut self, started: PendingSync);

    /// A sync with nothing in between.
    fn sync(&mut self) {
        let started = self.start_sync();
        self.finish_sync(started);
    }
}

/// A group commit in flight: the replica clock and log end read when it started.
#[derive(Debug, Clone)]
pub struct PendingSync {
    clock: crate::VectorClock,
    end: usize,
}

impl PendingSync {
    /// The clock this sync will report durable.
    pub fn clock(&self) -> &crate::VectorClock {
        &self.clock
    }
}

impl<L: SyncableLog> LocalWrites<L::Payload> for PartitionReplica<L> {
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
        self.log_mut().append(batch).map_err(|error| match error {
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

    fn finish_sync(&mut self, started: PendingSync) {
        self.log_mut().sync_through(started.end);
        self.synced(&started.clock);
    }
}
