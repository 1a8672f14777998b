//! The transaction coordinator: every transactional id is coordinated by this region's broker.
//! Records live in the catalog (`txn/<id>`) and every change is durable before it is answered.
//! Ending a transaction persists the Prepare* state, writes a commit or abort marker into every
//! partition the transaction touched (fsynced), applies staged offsets on commit, then persists
//! the Complete* state; a crash in between is finished when the broker starts again.

mod abandoned;
mod context;
mod state;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use causeway_storage::{CommittedOffset, ControlType, OffsetEntry, SequenceError, StorageError};
use dashmap::DashMap;
use kafka_protocol::ResponseError;
use tokio::sync::watch;

pub use context::TxnContext;
pub use state::{PendingOffset, TxnRecord, TxnState};

use crate::broker::Broker;
use crate::metrics;
use crate::replication::status::stale_peers;
use crate::topics::Topics;
use crate::wall_clock::now_ms;

/// How often ongoing transactions are checked against their timeouts.
const TIMEOUT_CHECK_PERIOD: Duration = Duration::from_millis(500);
/// How often the markers of a transaction whose end failed to write them are tried again.
const MARKER_RETRY_PERIOD: Duration = Duration::from_secs(2);

/// Transaction records and the per-id locks that serialize changes to each.
#[derive(Default)]
pub struct TransactionCoordinator {
    records: DashMap<String, TxnRecord>,
    locks: DashMap<String, Arc<tokio::sync::Mutex<()>>>,
}

/// What a coordinator operation failed with: a Kafka error for the client.
pub type TxnResult<T> = Result<T, ResponseError>;

impl TransactionCoordinator {
    /// Loads every record from the catalog.
    pub fn load(broker_catalog: &causeway_storage::Catalog) -> Result<Self, StorageError> {
        let coordinator = TransactionCoordinator::default();
        for (id, bytes) in broker_catalog.transactions()? {
            match serde_json::from_slice::<TxnRecord>(&bytes) {
                Ok(record) => {
                    coordinator.records.insert(id, record);
                }
                Err(error) => {
                    return Err(StorageError::Corrupt(format!(
                        "transaction record {id}: {error}"
                    )))
                }
            }
        }
        Ok(coordinator)
    }

    /// A copy of one record.
    pub fn get(&self, transactional_id: &str) -> Option<TxnRecord> {
        self.records.get(transactional_id).map(|r| r.clone())
    }

    /// Every record, by transactional id.
    pub fn all(&self) -> Vec<(String, TxnRecord)> {
        let mut all: Vec<_> = self
            .records
            .iter()
            .map(|r| (r.key().clone(), r.value().clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    fn lock(&self, transactional_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .entry(transactional_id.to_string())
            .or_default()
            .clone()
    }
}

/// Persists `record` and makes it the current one.
async fn save(ctx: &TxnContext<'_>, id: &str, record: TxnRecord) -> TxnResult<()> {
    let bytes = serde_json::to_vec(&record).map_err(|_| ResponseError::KafkaStorageError)?;
    let key = id.to_string();
    let written = ctx
        .on_lane(&crate::blocking::METADATA, move |writer| {
            writer.topics.catalog().put_transaction(&key, &bytes)
        })
        .await;
    match written {
        Ok(Ok(())) => {
            ctx.coordinator.records.insert(id.to_string(), record);
            Ok(())
        }
        Ok(Err(error)) => {
            tracing::error!(transactional_id = id, %error, "persisting transaction state failed");
            Err(ResponseError::KafkaStorageError)
        }
        Err(_) => Err(ResponseError::KafkaStorageError),
    }
}

/// Binds `transactional_id` to a producer id and a new epoch, fencing earlier producers and
/// finishing or aborting what they left open.
pub async fn init_producer_id(
    ctx: &TxnContext<'_>,
    transactional_id: &str,
    timeout_ms: i32,
    expected: Option<(i64, i16)>,
) -> TxnResult<(i64, i16)> {
    if transactional_id.is_empty() {
        return Err(ResponseError::InvalidRequest);
    }
    let timeout_ms_max = i64::from(ctx.transaction_max_timeout_ms);
    if timeout_ms <= 0 || i64::from(timeout_ms) > timeout_ms_max {
        return Err(ResponseError::InvalidTransactionTimeout);
    }
    let lock = ctx.coordinator.lock(transactional_id);
    let _guard = lock.lock().await;
    let now = now_ms();
    let record = match ctx.coordinator.get(transactional_id) {
        None => {
            let producer_id = new_producer_id(ctx)?;
            TxnRecord::new(producer_id, timeout_ms, now)
        }
        Some(mut record) => {
            if let Some((producer_id, epoch)) = expected {
                if producer_id != record.producer_id || epoch != record.epoch {
                    return Err(ResponseError::ProducerFenced);
                }
            }
            if matches!(
                record.state,
                TxnState::PrepareCommit | TxnState::PrepareAbort
            ) {
                record = finish(ctx, transactional_id, record).await?;
            }
            if record.state == TxnState::Ongoing {
                record = abort_fencing(ctx, transactional_id, record).await?;
            }
            if record.bump_epoch().is_none() {
                record = TxnRecord::new(new_producer_id(ctx)?, timeout_ms, now);
            }
            record.state = TxnState::Empty;
            record.timeout_ms = timeout_ms;
            record.updated_ms = now;
            record
        }
    };
    let answer = (record.producer_id, record.epoch);
    save(ctx, transactional_id, record).await?;
    tracing::info!(
        transactional_id,
        producer_id = answer.0,
        epoch = answer.1,
        "transactional producer initialized"
    );
    Ok(answer)
}

fn new_producer_id(ctx: &TxnContext<'_>) -> TxnResult<i64> {
    ctx.producer_ids
        .next(ctx.topics.catalog())
        .map_err(|_| ResponseError::CoordinatorNotAvailable)
}

/// Adds partitions to the ongoing transaction (starting one if needed).
pub async fn add_partitions(
    ctx: &TxnContext<'_>,
    transactional_id: &str,
    producer_id: i64,
    epoch: i16,
    partitions: &[(String, i32)],
) -> TxnResult<()> {
    change(ctx, transactional_id, producer_id, epoch, |record, now| {
        record.begin_or_continue(now)?;
        record.partitions.extend(partitions.iter().cloned());
        Ok(())
    })
    .await
}

/// Adds a consumer group whose offsets the transaction will commit.
pub async fn add_offsets(
    ctx: &TxnContext<'_>,
    transactional_id: &str,
    producer_id: i64,
    epoch: i16,
    group: &str,
) -> TxnResult<()> {
    change(ctx, transactional_id, producer_id, epoch, |record, now| {
        record.begin_or_continue(now)?;
        record.groups.insert(group.to_string());
        Ok(())
    })
    .await
}

/// Stages offsets of a group added with [`add_offsets`]; they are committed with the
/// transaction.
pub async fn stage_offsets(
    ctx: &TxnContext<'_>,
    transactional_id: &str,
    producer_id: i64,
    epoch: i16,
    offsets: Vec<PendingOffset>,
) -> TxnResult<()> {
    change(ctx, transactional_id, producer_id, epoch, |record, _| {
        if record.state != TxnState::Ongoing
            || offsets.iter().any(|o| !record.groups.contains(&o.group))
        {
            return Err(ResponseError::InvalidTxnState);
        }
        for offset in offsets {
            record.pending_offsets.retain(|o| {
                (&o.group, &o.topic, o.partition)
                    != (&offset.group, &offset.topic, offset.partition)
            });
            record.pending_offsets.push(offset);
        }
        Ok(())
    })
    .await
}

/// Commits or aborts the ongoing transaction.
pub async fn end(
    ctx: &TxnContext<'_>,
    transactional_id: &str,
    producer_id: i64,
    epoch: i16,
    commit: bool,
) -> TxnResult<()> {
    let (_guard, mut record) = current(ctx, transactional_id, producer_id, epoch).await?;
    if commit && record.state == TxnState::Ongoing && aborted_elsewhere(ctx.topics, &record) {
        tracing::warn!(
            transactional_id,
            producer_id,
            "another region aborted this transaction while this region was out of reach; the commit becomes an abort"
        );
        metrics::transaction_commit_overruled();
        abort_fencing(ctx, transactional_id, record).await?;
        return Err(ResponseError::ProducerFenced);
    }
    if !record.prepare_end(commit, now_ms())? {
        return Ok(());
    }
    save(ctx, transactional_id, record.clone()).await?;
    finish(ctx, transactional_id, record).await?;
    Ok(())
}

/// Whether a marker with a newer epoch than the coordinator's reached one of the transaction's
/// partitions: another region aborted it, taking this region for gone (`abandoned`).
fn aborted_elsewhere(topics: &Topics, record: &TxnRecord) -> bool {
    record.partitions.iter().any(|(topic, index)| {
        topics
            .get(topic)
            .and_then(|t| t.partition(*index))
            .and_then(|p| p.log().producer_epoch(record.producer_id))
            .is_some_and(|seen| seen > record.epoch)
    })
}

/// Locks `transactional_id` and returns its record once the request is shown to come from the
/// current producer; the guard keeps other changes out until dropped.
async fn current(
    ctx: &TxnContext<'_>,
    transactional_id: &str,
    producer_id: i64,
    epoch: i16,
) -> TxnResult<(tokio::sync::OwnedMutexGuard<()>, TxnRecord)> {
    let guard = ctx.coordinator.lock(transactional_id).lock_owned().await;
    let record = ctx
        .coordinator
        .get(transactional_id)
        .ok_or(ResponseError::InvalidProducerIdMapping)?;
    record.check_producer(producer_id, epoch)?;
    Ok((guard, record))
}

/// Validates the producer and applies `edit` to the record under its lock, then persists it.
async fn change(
    ctx: &TxnContext<'_>,
    transactional_id: &str,
    producer_id: i64,
    epoch: i16,
    edit: impl FnOnce(&mut TxnRecord, i64) -> TxnResult<()>,
) -> TxnResult<()> {
    let (_guard, mut record) = current(ctx, transactional_id, producer_id, epoch).await?;
    edit(&mut record, now_ms())?;
    save(ctx, transactional_id, record).await
}

/// Aborts an ongoing transaction on behalf of a newer producer or a timeout: the epoch is
/// bumped first, so the old producer is fenced and the markers carry the new epoch.
async fn abort_fencing(
    ctx: &TxnContext<'_>,
    transactional_id: &str,
    mut record: TxnRecord,
) -> TxnResult<TxnRecord> {
    if record.bump_epoch().is_none() {
        tracing::warn!(
            transactional_id,
            "epoch space exhausted while aborting; markers keep the old epoch"
        );
    }
    record.prepare_end(false, now_ms())?;
    save(ctx, transactional_id, record.clone()).await?;
    finish(ctx, transactional_id, record).await
}

/// Writes the markers of a Prepare* record, applies staged offsets on commit, persists Complete*.
async fn finish(
    ctx: &TxnContext<'_>,
    transactional_id: &str,
    mut record: TxnRecord,
) -> TxnResult<TxnRecord> {
    let kind = match record.state {
        TxnState::PrepareCommit => ControlType::Commit,
        TxnState::PrepareAbort => ControlType::Abort,
        _ => return Ok(record),
    };
    let marking = record.clone();
    let written = ctx
        .on_lane(&crate::blocking::METADATA, move |writer| {
            write_markers(&writer, &marking, kind)
        })
        .await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::error!(transactional_id, %error, "writing transaction markers failed");
            return Err(ResponseError::KafkaStorageError);
        }
        Err(_) => return Err(ResponseError::KafkaStorageError),
    }
    record.complete(now_ms());
    save(ctx, transactional_id, record.clone()).await?;
    tracing::info!(transactional_id, producer_id = record.producer_id, epoch = record.epoch, outcome = ?kind, "transaction ended");
    Ok(record)
}

/// Appends and fsyncs a marker in every partition of the transaction, then commits staged
/// offsets if it is a commit. Repeating it after a crash is harmless: a marker for a producer
/// with no open transaction changes nothing, and offsets are idempotent.
fn write_markers(
    ctx: &TxnContext<'_>,
    record: &TxnRecord,
    kind: ControlType,
) -> Result<(), StorageError> {
    let now = now_ms();
    let mut marked = Vec::with_capacity(record.partitions.len());
    for (topic, index) in &record.partitions {
        let Some(partition) = ctx.topics.get(topic).and_then(|t| t.partition(*index)) else {
            continue;
        };
        match partition.append_local_control(kind, record.producer_id, record.epoch, now) {
            Ok(_) => marked.push(partition),
            // Another region's abort with a newer epoch got here first (`abandoned`): the
            // transaction is decided in this partition. Only a commit racing it can get here,
            // as `end` turns a commit into an abort when it sees such a marker.
            Err(StorageError::Sequence(SequenceError::InvalidEpoch { .. })) => {
                tracing::error!(
                    topic = %topic,
                    partition = index,
                    producer_id = record.producer_id,
                    outcome = ?kind,
                    "another region aborted this transaction here first; its marker stands"
                );
                if kind == ControlType::Commit {
                    metrics::transaction_commit_overruled();
                }
            }
            Err(error) => return Err(error),
        }
    }
    // One fsync per partition, all at once: a transaction's end costs one fsync's latency, not
    // one per partition.
    std::thread::scope(|scope| {
        let syncs: Vec<_> = marked
            .iter()
            .map(|partition| scope.spawn(move || partition.sync(ctx.replication)))
            .collect();
        syncs.into_iter().try_for_each(|sync| {
            sync.join().unwrap_or_else(|_| {
                Err(StorageError::Io {
                    context: "fsyncing a transaction marker".into(),
                    source: std::io::Error::other("the fsync thread panicked"),
                })
            })
        })
    })?;
    for partition in &marked {
        partition.appended().notify_waiters();
    }
    if kind == ControlType::Commit {
        let mut by_group: HashMap<&str, Vec<OffsetEntry>> = HashMap::new();
        for offset in &record.pending_offsets {
            by_group
                .entry(&offset.group)
                .or_default()
                .push(OffsetEntry {
                    topic: offset.topic.clone(),
                    partition: offset.partition,
                    committed: CommittedOffset {
                        offset: offset.offset,
                        leader_epoch: offset.leader_epoch,
                        metadata: offset.metadata.clone(),
                        commit_ms: now,
                    },
                });
        }
        for (group, entries) in by_group {
            ctx.groups.commit_transactional(group, &entries)?;
            ctx.record_positions(group, &entries);
        }
    }
    Ok(())
}

/// Aborts, off the runtime workers, the transactions stale regions left open here.
async fn abort_abandoned(ctx: &TxnContext<'_>, now: i64) {
    if !ctx.replication.enabled() {
        return;
    }
    let stale = stale_peers(ctx.replication, ctx.started_ms);
    if stale.is_empty() {
        return;
    }
    let aborting = move |ctx: TxnContext<'_>| abandoned::abort_abandoned(&ctx, &stale, now);
    if ctx
        .on_lane(&crate::blocking::MAINTENANCE, aborting)
        .await
        .is_err()
    {
        tracing::error!("the check for transactions left open by stale regions did not run");
    }
}

/// Forgets transactional ids idle past `--transactional-id-expiration-ms` (Kafka's
/// `transactional.id.expiration.ms`): their records leave the catalog and memory. A producer
/// that comes back with such an id is given a new producer id, as in Kafka.
async fn expire_idle_ids(ctx: &TxnContext<'_>, now: i64) {
    let expiration_ms = ctx.transactional_id_expiration_ms;
    for (id, record) in ctx.coordinator.all() {
        if !record.idle_past(now, expiration_ms) {
            continue;
        }
        let lock = ctx.coordinator.lock(&id);
        let _guard = lock.lock().await;
        if ctx
            .coordinator
            .get(&id)
            .is_none_or(|current| !current.idle_past(now, expiration_ms))
        {
            continue;
        }
        let key = id.clone();
        let deleted = ctx
            .on_lane(&crate::blocking::METADATA, move |deleter| {
                deleter.topics.catalog().delete_transaction(&key)
            })
            .await;
        match deleted {
            Ok(Ok(())) => {
                ctx.coordinator.records.remove(&id);
                ctx.coordinator.locks.remove(&id);
                metrics::transactional_id_expired();
                tracing::info!(transactional_id = %id, "transactional id expired");
            }
            Ok(Err(error)) => {
                tracing::warn!(transactional_id = %id, %error, "removing an expired transactional id failed");
            }
            Err(_) => {
                tracing::warn!(transactional_id = %id, "removing an expired transactional id did not run")
            }
        }
    }
}

/// Finishes transactions a crash left half-ended, then until shutdown retries the markers of
/// ends that failed (a full disk) and aborts timed-out transactions. A task of its own, so it
/// owns the broker and builds its [`TxnContext`] here.
pub async fn run(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let ctx = TxnContext::of(&broker);
    finish_prepared(&ctx, "finishing a transaction interrupted by a crash").await;
    let mut ticker = tokio::time::interval(TIMEOUT_CHECK_PERIOD);
    let mut markers_retried = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let now = now_ms();
        abort_abandoned(&ctx, now).await;
        expire_idle_ids(&ctx, now).await;
        if markers_retried.elapsed() >= MARKER_RETRY_PERIOD {
            markers_retried = tokio::time::Instant::now();
            finish_prepared(&ctx, "writing the markers of an ended transaction again").await;
        }
        for (id, record) in ctx.coordinator.all() {
            if !record.expired(now) {
                continue;
            }
            let lock = ctx.coordinator.lock(&id);
            let _guard = lock.lock().await;
            let Some(current) = ctx.coordinator.get(&id).filter(|r| r.expired(now)) else {
                continue;
            };
            tracing::info!(transactional_id = %id, timeout_ms = current.timeout_ms, "aborting a transaction that timed out");
            if let Err(error) = abort_fencing(&ctx, &id, current).await {
                tracing::error!(transactional_id = %id, %error, "could not abort timed-out transaction");
            }
        }
    }
}

/// Writes the markers of every transaction whose end is decided (Prepare*) but not written:
/// after a crash, or after an end whose markers failed. A prepared commit stays a commit; until
/// its markers are in, it holds back the last stable offset of its partitions.
async fn finish_prepared(ctx: &TxnContext<'_>, why: &str) {
    let prepared = |record: &TxnRecord| {
        matches!(
            record.state,
            TxnState::PrepareCommit | TxnState::PrepareAbort
        )
    };
    for (id, record) in ctx.coordinator.all() {
        if !prepared(&record) {
            continue;
        }
        let lock = ctx.coordinator.lock(&id);
        let _guard = lock.lock().await;
        let Some(current) = ctx.coordinator.get(&id).filter(prepared) else {
            continue;
        };
        tracing::info!(transactional_id = %id, state = current.state.kafka_name(), "{why}");
        if let Err(error) = finish(ctx, &id, current).await {
            tracing::error!(transactional_id = %id, %error, "could not finish transaction");
        }
    }
}
