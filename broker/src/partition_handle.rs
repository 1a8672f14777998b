//! One partition as the broker serves it: its log, its replica, and the signal that wakes
//! fetches waiting for its next append. Fields are private: reads go to the log
//! ([`PartitionHandle::log`]), and the broker appends only through the replica here, which
//! stamps each batch with the causal clock (local produce and markers: `append_local`,
//! `append_local_control`; replicated batches: the replica's `receive`), so no path writes a
//! batch the clock does not know.
//!
//! What the produce path, the transaction coordinator and maintenance do through the replica:
//! local appends get their causal stamp from the replica's clock, syncs make own batches
//! servable to peers, and retention stops at the causally stable offset.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use causeway_replication::delivery::{ReplicaConfig, ReplicaError};
use causeway_replication::horizon::ConcurrencyHorizon;
use causeway_storage::{AppendResult, ControlType, Partition, StorageError};
use tokio::sync::Notify;

use crate::replication::log::ReplicaLog;
use crate::replication::{Replica, Replication};
use crate::tables::CleanBounds;
use crate::topics::TopicError;

/// One partition's log, its replica and the signal that wakes fetches waiting for its next
/// append.
pub struct PartitionHandle {
    topic: String,
    index: i32,
    /// The durable log; appends reach it only through `replica`.
    log: Arc<Partition>,
    /// The causal-delivery state of the partition, which owns the append path.
    replica: Mutex<Replica>,
    /// Notified after every append.
    appended: Notify,
    /// Stable cuts of past maintenance passes, to know when tombstones may go.
    horizon: Mutex<ConcurrencyHorizon>,
    /// When the flusher first saw unsynced batches here (ms since the epoch; -1: none seen).
    unsynced_since_ms: AtomicI64,
}

/// A local append's outcome and this region's sequence after it, which `causeway.min.regions`
/// waits for peers to hold.
#[derive(Debug, Clone, Copy)]
pub struct LocalAppend {
    /// Offsets, as for Produce.
    pub result: AppendResult,
    /// This region's own sequence in the partition once the batch is in.
    pub own_seq: u64,
}

fn storage_error(error: ReplicaError) -> StorageError {
    match error {
        ReplicaError::Poisoned => StorageError::Poisoned,
        other => StorageError::Db(format!("replica: {other}")),
    }
}

impl PartitionHandle {
    /// Starts serving partition `index` of `topic` over its opened `log`: a tail recovered after
    /// an unclean stop is made durable first (the replica counts everything in the log as durable,
    /// and peers may rely on it for the stable cut), then the replica recovers its clocks.
    pub fn open(
        topic: &str,
        index: i32,
        log: Arc<Partition>,
        replica_config: ReplicaConfig,
    ) -> Result<PartitionHandle, TopicError> {
        if !log.opened_cleanly() {
            log.sync()?;
        }
        let replica = Replica::recover(replica_config, ReplicaLog::open(log.clone())?)?;
        Ok(PartitionHandle {
            topic: topic.to_string(),
            index,
            log,
            replica: Mutex::new(replica),
            appended: Notify::new(),
            horizon: Mutex::new(ConcurrencyHorizon::default()),
            unsynced_since_ms: AtomicI64::new(-1),
        })
    }

    /// Recovers the replica again from the log, after the log was filled from outside the
    /// replica (a seed copies a peer's batches before replication starts): its clocks and index
    /// then describe what the log holds.
    pub fn reload_replica(&self, replica_config: ReplicaConfig) -> Result<(), TopicError> {
        let replica = Replica::recover(replica_config, ReplicaLog::open(self.log.clone())?)?;
        *self.replica() = replica;
        Ok(())
    }

    /// The topic this partition belongs to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The partition's index in its topic.
    pub fn index(&self) -> i32 {
        self.index
    }

    /// The partition's log, for reads, offsets and maintenance; appends go through the replica.
    pub fn log(&self) -> &Arc<Partition> {
        &self.log
    }

    /// Wakes fetches (and feeds) waiting for this partition's next append.
    pub fn appended(&self) -> &Notify {
        &self.appended
    }

    /// The partition's replica, locked. Appends serialize on this lock (the log's own lock is
    /// taken inside it), so a clock read here always matches the log.
    pub fn replica(&self) -> MutexGuard<'_, Replica> {
        self.replica.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn append_stamped(
        &self,
        now_ms: i64,
        write: impl FnOnce(
            &mut ReplicaLog,
            &causeway_storage::CausalMeta,
        ) -> (bool, Result<AppendResult, StorageError>),
    ) -> Result<LocalAppend, StorageError> {
        let mut replica = self.replica();
        let wall = u64::try_from(now_ms).unwrap_or(0);
        let meta = replica.stamp_local(wall).map_err(storage_error)?;
        let (appended, result) = write(replica.log_mut(), &meta);
        if appended {
            replica.local_appended(&meta);
        }
        let result = result?;
        let own_seq = replica.clock().get(replica.region());
        drop(replica);
        self.appended.notify_waiters();
        Ok(LocalAppend { result, own_seq })
    }

    /// Appends one validated batch produced by a client of this region.
    pub fn append_local(&self, batch: &[u8], now_ms: i64) -> Result<LocalAppend, StorageError> {
        self.append_stamped(now_ms, |log, meta| log.append_own(batch, meta, now_ms))
    }

    /// Appends a transaction marker written by this region's coordinator.
    pub fn append_local_control(
        &self,
        kind: ControlType,
        producer_id: i64,
        epoch: i16,
        now_ms: i64,
    ) -> Result<LocalAppend, StorageError> {
        self.append_stamped(now_ms, |log, meta| {
            log.append_own_control(kind, producer_id, epoch, meta, now_ms)
        })
    }

    /// Group commit, then marks what it covered durable for replication: own batches become
    /// servable to peers and the durable clock peers see advances.
    pub fn sync(&self, replication: &Replication) -> Result<(), StorageError> {
        let (clock, end) = {
            let replica = self.replica();
            (replica.clock().clone(), self.log.log_end_offset())
        };
        self.log.sync_through(end)?;
        let mut replica = self.replica();
        let me = replica.region();
        let advanced = replica.durable_clock() != &clock;
        let own_advanced = replica.durable_clock().get(me) < clock.get(me);
        replica.synced(&clock);
        drop(replica);
        if advanced {
            replication.data_progressed(own_advanced);
        }
        Ok(())
    }

    /// For `flush.ms`: fsyncs the partition when batches have waited unsynced for `flush_ms`
    /// since the flusher first saw them at a pass (so they wait at most `flush_ms` plus one
    /// pass); returns whether it synced.
    pub fn flush_if_due(
        &self,
        replication: &Replication,
        flush_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StorageError> {
        if !self.log.has_unsynced() {
            self.unsynced_since_ms.store(-1, Ordering::Relaxed);
            return Ok(false);
        }
        let since = match self.unsynced_since_ms.load(Ordering::Relaxed) {
            -1 => {
                self.unsynced_since_ms.store(now_ms, Ordering::Relaxed);
                now_ms
            }
            since => since,
        };
        if now_ms.saturating_sub(since) < flush_ms {
            return Ok(false);
        }
        self.sync(replication)?;
        self.unsynced_since_ms.store(-1, Ordering::Relaxed);
        Ok(true)
    }

    /// The offset below which every region holds every batch durably (the causally stable
    /// point): retention and compaction never go above it. Peers reported stale are left out,
    /// so a region gone for good does not stop retention forever. In one region, the log end.
    pub fn stable_offset(&self, replication: &Replication, stale: &[u32]) -> i64 {
        if !replication.enabled() {
            return self.log.log_end_offset();
        }
        let replica = self.replica();
        let cut = replica.stable_cut_without(stale);
        replica.log().offset_below_cut(replica.clock(), &cut)
    }

    /// The bounds of a table compaction pass: the stable offset, and for the pass's tombstones
    /// the settled offset (`ReplicaLog::settled_offset`), which samples the horizon when the
    /// pass calls it. In one region, both are the log end.
    pub fn clean_bounds(&self, replication: &Replication, stale: &[u32]) -> CleanBounds<'_> {
        if !replication.enabled() {
            return CleanBounds::alone(self.log.log_end_offset());
        }
        let (stable_offset, cut, frontier) = {
            let replica = self.replica();
            let cut = replica.stable_cut_without(stale);
            (
                replica.log().offset_below_cut(replica.clock(), &cut),
                cut,
                replica.frontier_without(stale),
            )
        };
        CleanBounds {
            stable_offset,
            settled_offset: Box::new(move |merged_end| {
                let replica = self.replica();
                let mut horizon = self.horizon.lock().unwrap_or_else(|e| e.into_inner());
                replica.log().settled_offset(
                    &mut horizon,
                    (replica.clock(), &cut, frontier.clone()),
                    merged_end,
                )
            }),
        }
    }

    /// How many of this region's peers durably hold its own batches up to `own_seq`.
    pub fn regions_holding(&self, replication: &Replication, own_seq: u64) -> usize {
        let replica = self.replica();
        let me = replica.region();
        1 + replication
            .peers
            .iter()
            .filter(|p| {
                replica
                    .peer_clock(p.id)
                    .is_some_and(|clock| clock.get(me) >= own_seq)
            })
            .count()
    }
}
