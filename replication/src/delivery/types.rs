//! The public types of the delivery state machine: batches, the [`BatchLog`] seam and its
//! errors, configuration, refusals and outcomes, and the pull messages exchanged between regions.
//! They live apart from `delivery.rs` so that file reads as the replica's logic; `delivery`
//! re-exports every one of them, so their paths are unchanged.

use causeway_causal::{BatchId, CausalMeta};

use crate::clock::VectorClock;

/// A replicated batch: the causal metadata stamped at its origin and an opaque payload (the Kafka
/// record batch in the broker, a digest in the simulator), so this core never parses records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch<P> {
    /// Causal metadata as stamped by the origin; never changed by replication.
    pub meta: CausalMeta,
    /// The batch's bytes or a stand-in for them.
    pub payload: P,
}

impl<P> Batch<P> {
    /// The batch's `(origin, seq)`.
    pub fn id(&self) -> BatchId {
        self.meta.id()
    }
}

/// A batch read from a log with its position there (an offset in the broker, an index in memory).
pub type Positioned<P> = (u64, Batch<P>);

/// A failure of the log behind a replica (disk error, broken contract); the text is for logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("partition log: {0}")]
pub struct LogError(pub String);

/// Why a log did not append a remote batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// The log will not hold this batch (it breaks one of the log's own rules, say a batch that
    /// does not parse as the log expects) and is unchanged: the batch is refused like bad remote
    /// input and the replica carries on. Only for rules about the batch itself; a local limit
    /// that a batch accepted at its origin might exceed must not refuse it, or the regions could
    /// never converge.
    #[error("the log refused the batch: {0}")]
    Refused(String),
    /// The log failed and may or may not hold the batch: the replica is poisoned.
    #[error(transparent)]
    Failed(#[from] LogError),
}

/// What a log knows about itself after it was opened, from which a replica restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveredLog {
    /// Per origin, the highest sequence in the log (the log holds every lower one too).
    pub clock: VectorClock,
    /// The newest HLC stamp in the log, so the clock resumes after it.
    pub hlc_max: u64,
}

/// The narrow storage seam of a partition replica. The broker implements it over a storage
/// partition and its `(origin, seq) -> offset` index; the simulator over a `Vec`.
///
/// Contract: appends arrive in an order where every batch's dependencies and its predecessor
/// from the same origin come first (the replica guarantees it for remote batches, and its stamp
/// for own ones); a crash keeps a prefix of the appended batches that includes everything before
/// the last sync the caller reported with [`PartitionReplica::synced`](super::PartitionReplica::synced). Syncing is the caller's
/// business, not the replica's: the broker syncs by group commit outside the replica's lock.
pub trait BatchLog {
    /// The payload stored with each batch; compared only to detect conflicting copies.
    type Payload: Clone + PartialEq;

    /// Appends one batch at the end of the log (page cache; the caller syncs and reports it).
    /// [`AppendError::Refused`] must leave the log unchanged.
    fn append(&mut self, batch: Batch<Self::Payload>) -> Result<(), AppendError>;

    /// Log position of a batch, or `None` if the log does not hold it.
    fn position_of(&self, id: BatchId) -> Result<Option<u64>, LogError>;

    /// Up to `max` batches from position `from` on, in log order, each with its position.
    fn read(&self, from: u64, max: usize) -> Result<Vec<Positioned<Self::Payload>>, LogError>;

    /// The clock and newest stamp of the log as it is now (called once, right after opening).
    fn recover(&self) -> Result<RecoveredLog, LogError>;

    /// The payload of a batch about to wait in a pending queue, as the queue should keep it
    /// (equal to `payload`): a log whose payloads share the buffer they arrived in gives the
    /// queue a copy of its own, so a batch that waits never keeps a whole response in memory.
    fn detached(&self, payload: Self::Payload) -> Self::Payload {
        payload
    }
}

/// Static settings of one replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// This region's id.
    pub region: u32,
    /// Every region of the deployment, this one included: batches and peers from any other id
    /// are refused, and the stable cut waits for all of them.
    pub regions: Vec<u32>,
    /// Bound of each origin's pending queue, in batches (at least 1).
    pub pending_per_origin_max: usize,
    /// How far ahead of local wall time a remote HLC stamp may be, in milliseconds.
    pub hlc_skew_ms_max: u64,
}

/// Errors that stop an operation; refusals of bad remote input are [`Refusal`]s instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplicaError {
    /// The log failed; the replica is poisoned and must be rebuilt from the log.
    #[error(transparent)]
    Log(#[from] LogError),
    /// An earlier log failure poisoned the replica: its clock may be ahead of the log.
    #[error("replica poisoned by an earlier log failure; reopen it from the log")]
    Poisoned,
    /// A pull request or response came from a region outside the configuration.
    #[error("unknown or invalid peer region {0}")]
    UnknownPeer(u32),
    /// The configuration is unusable.
    #[error("invalid replica config: {0}")]
    Config(&'static str),
}

/// Why a remote batch was refused. Refused batches are not kept; the link should be logged and
/// retried with backoff, and nothing already applied is touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The HLC stamp is further ahead of local wall time than the skew bound.
    ClockSkew {
        /// Physical milliseconds of the stamp.
        stamp_ms: u64,
        /// Local wall time when it arrived.
        wall_ms: u64,
    },
    /// The metadata is inconsistent (bad sequence, unsorted or unknown dependencies, ...).
    Malformed(&'static str),
    /// The origin region is not part of the configuration.
    UnknownOrigin(u32),
    /// A batch of ours, or a dependency on one, beyond our own clock: our own tail escaped
    /// before it was durable. Must never happen; reported loudly rather than applied.
    OwnBatchAhead {
        /// Our sequence the batch carries or depends on.
        seq: u64,
        /// Our own clock entry.
        local_seq: u64,
    },
    /// A different batch with the same `(origin, seq)` is already queued: a sequence was
    /// reused for different data somewhere.
    Conflict,
    /// The log refused the batch ([`AppendError::Refused`]); the text says why. Nothing
    /// changed, so it is pulled again later; the transport should back off the partition.
    LogRefused(String),
}

/// What happened to one received batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Applied, and then `released` queued batches became deliverable and were applied too.
    Applied {
        /// Queued batches applied after this one.
        released: usize,
    },
    /// Already applied (or already queued with the same content): dropped.
    Duplicate,
    /// Waiting for its predecessors or dependencies.
    Queued {
        /// A higher queued batch of the same origin pushed out to keep the queue bounded; it
        /// will be pulled again.
        evicted: Option<BatchId>,
    },
    /// The origin's queue is full of lower sequences: not kept. Back off pulling this origin.
    Backpressure,
    /// Refused as bad input; see [`Refusal`].
    Refused(Refusal),
}

/// "Send me what you have that I lack": my clock (`seq > have[j]` for every origin `j`) and my
/// durable clock (for the stable cut). The same request can go to any peer, which is what lets
/// batches route around a broken link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaPull {
    /// Requesting region.
    pub from: u32,
    /// Region asked.
    pub to: u32,
    /// The requester's clock: send batches above it.
    pub have: VectorClock,
    /// The requester's durable clock: what it keeps through a crash.
    pub durable: VectorClock,
}

/// The answer to a [`ReplicaPull`]: batches in the server's log order (a causal order), so a
/// requester that receives them in order applies each one at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaAnswer<P> {
    /// Serving region.
    pub from: u32,
    /// Requesting region.
    pub to: u32,
    /// The server's clock, for lag reporting.
    pub have: VectorClock,
    /// The server's durable clock, for the stable cut.
    pub durable: VectorClock,
    /// Batches the requester lacks, at most the server's limit.
    pub batches: Vec<Batch<P>>,
}

/// Totals of receiving one [`ReplicaAnswer`], for metrics and backoff decisions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullReport {
    /// Batches applied, including queued ones released by them.
    pub applied: usize,
    /// Duplicates dropped.
    pub duplicates: usize,
    /// Batches queued.
    pub queued: usize,
    /// Queued batches evicted to keep queues bounded.
    pub evicted: usize,
    /// Batches refused because their origin's queue was full: back off.
    pub backpressured: usize,
    /// Refused batches and why.
    pub refused: Vec<(BatchId, Refusal)>,
}
