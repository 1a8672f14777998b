//! A transactional id's durable record and the rules for moving it between states, free of I/O
//! so they can be tested alone. The coordinator (`mod.rs`) persists the record before it answers
//! and writes the markers the record asks for.
//!
//! States follow Kafka: `Empty` -> `Ongoing` (partitions or offsets added) -> `PrepareCommit` /
//! `PrepareAbort` (persisted before any marker is written, so a crash in the middle of a commit
//! is finished on restart) -> `CompleteCommit` / `CompleteAbort` -> `Ongoing` again on the next
//! transaction.

use std::collections::BTreeSet;

use kafka_protocol::ResponseError;
use serde::{Deserialize, Serialize};

/// Where a transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnState {
    /// No transaction since the producer id was handed out.
    Empty,
    /// Partitions or offsets were added; neither committed nor aborted yet.
    Ongoing,
    /// Commit decided; markers may be partly written.
    PrepareCommit,
    /// Abort decided; markers may be partly written.
    PrepareAbort,
    /// The last transaction committed.
    CompleteCommit,
    /// The last transaction aborted.
    CompleteAbort,
}

impl TxnState {
    /// Kafka's name, as DescribeTransactions and ListTransactions report it.
    pub fn kafka_name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
        }
    }
}

/// An offset staged by TxnOffsetCommit, applied to its group only if the transaction commits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingOffset {
    /// Consumer group.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Next offset to read.
    pub offset: i64,
    /// Leader epoch the client saw.
    pub leader_epoch: i32,
    /// Client metadata.
    pub metadata: Option<String>,
}

/// The durable record of one transactional id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnRecord {
    /// The producer id bound to the transactional id.
    pub producer_id: i64,
    /// Its current epoch; older epochs are fenced.
    pub epoch: i16,
    /// Where the current transaction stands.
    pub state: TxnState,
    /// Aborted when older than this.
    pub timeout_ms: i32,
    /// Partitions written in the current transaction.
    pub partitions: BTreeSet<(String, i32)>,
    /// Groups whose offsets the transaction commits.
    pub groups: BTreeSet<String>,
    /// Offsets staged for commit.
    pub pending_offsets: Vec<PendingOffset>,
    /// When the current transaction started (ms), -1 if none.
    pub started_ms: i64,
    /// Last change (ms).
    pub updated_ms: i64,
}

impl TxnRecord {
    /// A fresh record for a new producer id.
    pub fn new(producer_id: i64, timeout_ms: i32, now_ms: i64) -> TxnRecord {
        TxnRecord {
            producer_id,
            epoch: 0,
            state: TxnState::Empty,
            timeout_ms,
            partitions: BTreeSet::new(),
            groups: BTreeSet::new(),
            pending_offsets: Vec::new(),
            started_ms: -1,
            updated_ms: now_ms,
        }
    }

    /// Checks that a request comes from the current incarnation of the producer.
    pub fn check_producer(&self, producer_id: i64, epoch: i16) -> Result<(), ResponseError> {
        if producer_id != self.producer_id {
            return Err(ResponseError::InvalidProducerIdMapping);
        }
        if epoch < self.epoch {
            return Err(ResponseError::ProducerFenced);
        }
        if epoch > self.epoch {
            return Err(ResponseError::InvalidProducerEpoch);
        }
        Ok(())
    }

    /// Checks that partitions or offsets may be added now, and marks the transaction ongoing.
    pub fn begin_or_continue(&mut self, now_ms: i64) -> Result<(), ResponseError> {
        match self.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                Err(ResponseError::ConcurrentTransactions)
            }
            TxnState::Ongoing => {
                self.updated_ms = now_ms;
                Ok(())
            }
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                self.state = TxnState::Ongoing;
                self.started_ms = now_ms;
                self.updated_ms = now_ms;
                Ok(())
            }
        }
    }

    /// Decides the end of the transaction. `Ok(true)` means markers must be written (the state
    /// is now Prepare*); `Ok(false)` means the request repeats an end already completed.
    pub fn prepare_end(&mut self, commit: bool, now_ms: i64) -> Result<bool, ResponseError> {
        match (self.state, commit) {
            (TxnState::Ongoing, true) => self.state = TxnState::PrepareCommit,
            (TxnState::Ongoing, false) => self.state = TxnState::PrepareAbort,
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => {
                return Ok(false)
            }
            (TxnState::PrepareCommit | TxnState::PrepareAbort, _) => {
                return Err(ResponseError::ConcurrentTransactions)
            }
            _ => return Err(ResponseError::InvalidTxnState),
        }
        self.updated_ms = now_ms;
        Ok(true)
    }

    /// Records that every marker of a Prepare* state is written.
    pub fn complete(&mut self, now_ms: i64) {
        self.state = match self.state {
            TxnState::PrepareCommit => TxnState::CompleteCommit,
            TxnState::PrepareAbort => TxnState::CompleteAbort,
            other => other,
        };
        self.partitions.clear();
        self.groups.clear();
        self.pending_offsets.clear();
        self.started_ms = -1;
        self.updated_ms = now_ms;
    }

    /// Whether the transactional id may be forgotten: no transaction open or being ended, and
    /// no change for `expiration_ms` (`transactional.id.expiration.ms`).
    pub fn idle_past(&self, now_ms: i64, expiration_ms: u64) -> bool {
        let settled = matches!(
            self.state,
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
        );
        let idle_ms = u64::try_from(now_ms.saturating_sub(self.updated_ms)).unwrap_or(0);
        settled && idle_ms > expiration_ms
    }

    /// Whether an ongoing transaction has outlived its timeout.
    pub fn expired(&self, now_ms: i64) -> bool {
        self.state == TxnState::Ongoing
            && self.started_ms >= 0
            && now_ms.saturating_sub(self.started_ms) > i64::from(self.timeout_ms)
    }

    /// Fences the current producer: the next epoch, or `None` when the epoch space is used up
    /// (the caller then binds a new producer id).
    pub fn bump_epoch(&mut self) -> Option<i16> {
        let next = self.epoch.checked_add(1).filter(|e| *e < i16::MAX)?;
        self.epoch = next;
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transaction_goes_ongoing_prepare_complete() {
        let mut r = TxnRecord::new(5, 60_000, 0);
        r.begin_or_continue(1).expect("begin");
        assert_eq!(r.state, TxnState::Ongoing);
        assert_eq!(r.prepare_end(true, 2), Ok(true));
        assert_eq!(r.state, TxnState::PrepareCommit);
        r.complete(3);
        assert_eq!(r.state, TxnState::CompleteCommit);
        assert_eq!(
            r.prepare_end(true, 4),
            Ok(false),
            "a retried commit is answered again"
        );
        assert_eq!(r.prepare_end(false, 4), Err(ResponseError::InvalidTxnState));
    }

    #[test]
    fn only_a_settled_id_idle_past_the_expiration_may_be_forgotten() {
        let mut r = TxnRecord::new(5, 60_000, 0);
        assert!(!r.idle_past(1_000, 1_000), "idle exactly the expiration");
        assert!(r.idle_past(1_001, 1_000), "empty and idle past it");
        r.begin_or_continue(2_000).expect("begin");
        assert!(!r.idle_past(10_000, 1_000), "a transaction is open");
        r.prepare_end(true, 3_000).expect("prepare");
        assert!(!r.idle_past(10_000, 1_000), "its markers are being written");
        r.complete(4_000);
        assert!(!r.idle_past(5_000, 1_000), "changed 1 s ago");
        assert!(r.idle_past(5_001, 1_000), "committed and idle past it");
    }

    #[test]
    fn ending_without_a_transaction_is_an_invalid_state() {
        let mut r = TxnRecord::new(5, 60_000, 0);
        assert_eq!(r.prepare_end(true, 1), Err(ResponseError::InvalidTxnState));
    }

    #[test]
    fn nothing_is_added_while_markers_are_being_written() {
        let mut r = TxnRecord::new(5, 60_000, 0);
        r.begin_or_continue(1).expect("begin");
        r.prepare_end(false, 2).expect("prepare");
        assert_eq!(
            r.begin_or_continue(3),
            Err(ResponseError::ConcurrentTransactions)
        );
    }

    #[test]
    fn stale_epochs_are_fenced_and_foreign_ids_refused() {
        let mut r = TxnRecord::new(5, 60_000, 0);
        r.bump_epoch();
        assert_eq!(r.check_producer(5, 0), Err(ResponseError::ProducerFenced));
        assert_eq!(
            r.check_producer(6, 1),
            Err(ResponseError::InvalidProducerIdMapping)
        );
        assert_eq!(r.check_producer(5, 1), Ok(()));
    }

    #[test]
    fn transactions_expire_only_while_ongoing() {
        let mut r = TxnRecord::new(5, 1_000, 0);
        assert!(!r.expired(10_000));
        r.begin_or_continue(100).expect("begin");
        assert!(!r.expired(1_000));
        assert!(r.expired(1_101));
    }
}
