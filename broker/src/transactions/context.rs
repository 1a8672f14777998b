//! What the transaction coordinator may touch of the broker: its own records, the topics it
//! writes markers into, the groups whose offsets a commit applies, replication (fsync, stale
//! peers), producer ids and the few options it obeys. Nothing else of the broker is reachable
//! from the coordinator's functions.

use std::sync::Arc;

use tokio::task::JoinError;

use super::TransactionCoordinator;
use crate::blocking::Lane;
use crate::broker::Broker;
use crate::groups::GroupCoordinator;
use crate::producer_ids::ProducerIds;
use crate::replication::Replication;
use crate::topics::Topics;

/// The handles the transaction coordinator works with, built once per request or task from the
/// broker with [`TxnContext::of`], so the coordinator depends on these and not on all of
/// `Broker`.
#[derive(Clone, Copy)]
pub struct TxnContext<'a> {
    /// Transaction records and their locks.
    pub(super) coordinator: &'a TransactionCoordinator,
    /// Partitions that receive markers; the catalog that keeps the records.
    pub(super) topics: &'a Topics,
    /// Where a commit applies its staged offsets.
    pub(super) groups: &'a GroupCoordinator,
    /// fsyncs markers; tells which peers are stale.
    pub(super) replication: &'a Replication,
    /// Issues producer ids to new transactional ids.
    pub(super) producer_ids: &'a ProducerIds,
    /// When the broker started: a peer never heard from counts as silent since then.
    pub(super) started_ms: i64,
    /// `--transaction-max-timeout-ms`.
    pub(super) transaction_max_timeout_ms: u32,
    /// `--transactional-id-expiration-ms`.
    pub(super) transactional_id_expiration_ms: u64,
    /// `--region-stale-after-ms`.
    pub(super) region_stale_after_ms: u64,
    /// Never read for a field: blocking lanes take only work that owns what it uses, so
    /// [`TxnContext::on_lane`] moves a clone of it there and rebuilds the context; and
    /// [`crate::positions::record_commits`] takes the whole broker.
    owner: &'a Arc<Broker>,
}

impl<'a> TxnContext<'a> {
    /// The coordinator's view of `broker`: the one place the coordinator meets the broker.
    pub fn of(broker: &'a Arc<Broker>) -> Self {
        TxnContext {
            coordinator: &broker.transactions,
            topics: &broker.topics,
            groups: &broker.groups,
            replication: &broker.replication,
            producer_ids: &broker.producer_ids,
            started_ms: broker.started_ms,
            transaction_max_timeout_ms: broker.options.transaction_max_timeout_ms,
            transactional_id_expiration_ms: broker.options.transactional_id_expiration_ms,
            region_stale_after_ms: broker.options.region_stale_after_ms,
            owner: broker,
        }
    }

    /// Runs blocking `work` on `lane` with a context of its own, as the lane needs work that
    /// owns its data; the caller waits without holding a runtime worker.
    pub(super) async fn on_lane<T, F>(&self, lane: &'static Lane, work: F) -> Result<T, JoinError>
    where
        F: FnOnce(TxnContext<'_>) -> T + Send + 'static,
        T: Send + 'static,
    {
        let owner = Arc::clone(self.owner);
        lane.run(move || work(TxnContext::of(&owner))).await
    }

    /// Writes the positions of offsets a transaction committed for `group`, for other regions
    /// (see [`crate::positions::record_commits`]). Blocking.
    pub(super) fn record_positions(&self, group: &str, entries: &[causeway_storage::OffsetEntry]) {
        crate::positions::record_commits(self.owner, group, entries);
    }
}
