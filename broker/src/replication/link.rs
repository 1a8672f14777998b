//! The link that pulls from one peer: connect, then pull in a loop (each pull long-polls at the
//! peer until it has news), apply what arrives through each partition's replica, and on any
//! failure log it, back off and reconnect. Nothing a peer sends can touch applied data: bad
//! batches are dropped before the core sees them, and the core refuses bad metadata.
//!
//! Partitions are independent: one whose batches are refused, or whose log fails, or which the
//! peer answers for another incarnation of the topic (a delete and re-create not yet merged by
//! both regions: nothing of it is applied, the peer's clocks for it are not recorded), is left
//! out of this link's pulls for a pause that doubles while the trouble lasts ([`Holds`]), and is
//! logged at most once per period; the link and the other partitions carry on.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use super::dial::{dial, PeerReader, PeerWriter};
use bytes::{Bytes, BytesMut};
use causeway_replication::delivery::{Batch, Refusal, ReplicaAnswer};
use causeway_replication::wire::{
    pull_frame, response_length_ok, PartitionPull, PullError, PullRequest, PullResponse, TopicId,
    PULL_RESPONSE_BYTES_MAX, RESPONSE_HEADER_BYTES,
};
use causeway_replication::VectorClock;
use causeway_storage::split_batches;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::status::LinkState;
use super::Peer;
use crate::broker::Broker;
use crate::metrics;
use crate::wall_clock::now_ms;

/// How long a pull may wait at the peer for news.
const PULL_WAIT_MS: u32 = 500;
/// Time allowed for connecting and for a response beyond the pull's own wait.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// First and longest pause between failed attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A link with no successful pull for this long counts as down even while connected (a hung
/// peer): its origin's batches are then pulled from the other peers too. A refused or broken
/// connection counts as down at once.
const LINK_DOWN_AFTER_MS: i64 = 10_000;
/// First and longest pause before a partition whose last response did not apply cleanly is
/// pulled again.
const HOLD_MIN_MS: i64 = 100;
const HOLD_MAX_MS: i64 = 5_000;
/// At most one warning per partition and link in this period about batches it did not apply.
const TROUBLE_LOG_PERIOD_MS: i64 = 10_000;

/// A partition as pulls name it.
type PartitionKey = (String, u32);

/// Why a partition's part of a response did not apply cleanly.
#[derive(Debug)]
pub(super) struct Trouble {
    /// What kind of trouble (a refusal reason, `log_failure`), for the log rate limit.
    pub(super) kind: &'static str,
    /// Batches refused (0 if the log failed).
    refused: u64,
    /// The first refusal or the log failure, for the log line.
    pub(super) first: String,
}

/// One held partition.
#[derive(Debug)]
struct Hold {
    until_ms: i64,
    delay_ms: i64,
    last_logged_ms: Option<i64>,
    last_logged_kind: &'static str,
    unlogged: u64,
}

/// Partitions of one link left out of its pulls for a while because their batches were refused
/// or their log failed. Without it a refused batch is pulled again at once, about as fast as
/// the peer can answer (tens of thousands of warnings a second), and a failing partition used to
/// end the link for every partition.
#[derive(Debug, Default)]
struct Holds {
    by_partition: HashMap<PartitionKey, Hold>,
}

impl Holds {
    /// The partitions to leave out of a pull sent at `now`.
    fn held(&self, now: i64) -> HashSet<PartitionKey> {
        self.by_partition
            .iter()
            .filter(|(_, hold)| hold.until_ms > now)
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// Records trouble in a partition: holds it (doubling the pause if it was held already) and
    /// logs it unless the same kind was logged less than a period ago; returns whether it
    /// logged.
    fn trouble(&mut self, peer: &str, key: PartitionKey, trouble: &Trouble, now: i64) -> bool {
        let hold = self.by_partition.entry(key.clone()).or_insert(Hold {
            until_ms: now,
            delay_ms: 0,
            last_logged_ms: None,
            last_logged_kind: "",
            unlogged: 0,
        });
        hold.delay_ms = (hold.delay_ms * 2).clamp(HOLD_MIN_MS, HOLD_MAX_MS);
        hold.until_ms = now + hold.delay_ms;
        hold.unlogged += trouble.refused.max(1);
        if hold.last_logged_kind != trouble.kind
            || hold
                .last_logged_ms
                .is_none_or(|at| now - at >= TROUBLE_LOG_PERIOD_MS)
        {
            tracing::warn!(peer, topic = %key.0, partition = key.1, refused = trouble.refused, first = %trouble.first, not_applied_since_last_warning = hold.unlogged, retry_in_ms = hold.delay_ms, "replicated batches not applied; pulling this partition again after a pause");
            hold.last_logged_ms = Some(now);
            hold.last_logged_kind = trouble.kind;
            hold.unlogged = 0;
            return true;
        }
        false
    }

    /// Records that a partition applied cleanly: its pause starts from the minimum again (the
    /// log rate limit is kept until its period ends).
    fn clean(&mut self, key: &PartitionKey, now: i64) {
        let expired = self.by_partition.get(key).is_some_and(|hold| {
            hold.last_logged_ms
                .is_none_or(|at| now - at >= TROUBLE_LOG_PERIOD_MS)
        });
        if expired {
            self.by_partition.remove(key);
        } else if let Some(hold) = self.by_partition.get_mut(key) {
            hold.delay_ms = 0;
        }
    }
}

/// Why one connection's pull loop ended.
#[derive(Debug, thiserror::Error)]
pub(super) enum LinkError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("timed out")]
    Timeout,
    #[error("peer sent a bad response: {0}")]
    BadResponse(String),
    #[error("peer refused us: {0:?}")]
    Refused(PullError),
    #[error("applying the response failed: {0}")]
    Apply(String),
}

/// Pulls from peer number `index` until shutdown.
pub async fn run(broker: Arc<Broker>, index: usize, mut shutdown: watch::Receiver<bool>) {
    let peer = broker.replication.peers[index].clone();
    let link = &broker.replication.links[index];
    let mut backoff = BACKOFF_MIN;
    let mut holds = Holds::default();
    tracing::info!(peer = %peer.name, addr = %peer.addr, "replication link starting");
    loop {
        let attempt_started = now_ms();
        let outcome = tokio::select! {
            outcome = pull_until_error(&broker, &peer, index, &mut holds) => outcome,
            _ = shutdown.changed() => return,
        };
        let error = match outcome {
            Ok(()) => return,
            Err(error) => error,
        };
        if link.facts().last_pull_ms >= attempt_started {
            backoff = BACKOFF_MIN; // the connection worked for a while: retry promptly
        }
        let state = if matches!(error, LinkError::Refused(_)) {
            backoff = BACKOFF_MAX;
            LinkState::Refused
        } else {
            LinkState::Failing
        };
        tracing::warn!(peer = %peer.name, %error, retry_in_ms = backoff.as_millis() as u64, "replication link failed");
        metrics::replication_link_failure(&peer.name);
        link.update(|f| {
            f.state = state;
            f.last_error = Some(error.to_string());
        });
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Per partition, the incarnation a response answered for and the highest sequence per origin
/// among its batches.
type Ahead = HashMap<PartitionKey, (TopicId, VectorClock)>;

/// One connection: pull and apply until something fails. Pulls are pipelined: as soon as a
/// response arrives the next pull goes out, asking for what follows that response, so the peer
/// serves the next batches while this region applies the previous ones.
async fn pull_until_error(
    broker: &Arc<Broker>,
    peer: &Peer,
    index: usize,
    holds: &mut Holds,
) -> Result<(), LinkError> {
    let link = &broker.replication.links[index];
    let (mut reader, mut writer) = tokio::time::timeout(IO_TIMEOUT, dial(broker, &peer.addr))
        .await
        .map_err(|_| LinkError::Timeout)??;
    let mut correlation_id = 1i32;
    let mut resync = false;
    let first = request_after(broker, peer.id, None, holds.held(now_ms()), None).await?;
    send_pull(&mut writer, correlation_id, &first.encode()).await?;
    loop {
        let body = tokio::time::timeout(
            IO_TIMEOUT + Duration::from_millis(u64::from(PULL_WAIT_MS)),
            read_response(&mut reader, correlation_id),
        )
        .await
        .map_err(|_| LinkError::Timeout)??;
        let response = PullResponse::decode(&body).map_err(|e| {
            metrics::replication_refused("malformed_response");
            LinkError::BadResponse(e.to_string())
        })?;
        if response.error != PullError::None {
            return Err(LinkError::Refused(response.error));
        }
        if response.region != peer.id {
            return Err(LinkError::BadResponse(format!(
                "answered as region {}, expected {} ({})",
                response.region, peer.id, peer.name
            )));
        }
        // After an incomplete apply the pull in flight may have skipped batches that did not
        // apply; the next one then starts from the clock itself.
        let ahead = (!resync).then(|| tops(&response));
        let next = request_after(
            broker,
            peer.id,
            ahead,
            holds.held(now_ms()),
            last_served(&response),
        )
        .await?;
        correlation_id = correlation_id.wrapping_add(1);
        send_pull(&mut writer, correlation_id, &next.encode()).await?;
        let for_blocking = broker.clone();
        let peer_id = peer.id;
        let mut applied = crate::blocking::REPLICATION
            .run(move || apply(&for_blocking, peer_id, response))
            .await
            .map_err(|e| LinkError::Apply(e.to_string()))??;
        let now = now_ms();
        for key in &applied.clean {
            holds.clean(key, now);
        }
        let mut last_trouble = None;
        for (key, trouble) in applied.troubles.drain(..) {
            holds.trouble(&peer.name, key.clone(), &trouble, now);
            last_trouble = Some(format!("{}/{}: {}", key.0, key.1, trouble.first));
        }
        let mut came_up = false;
        link.update(|f| {
            came_up = f.state != LinkState::Connected;
            f.state = LinkState::Connected;
            f.last_error = last_trouble;
            f.last_pull_ms = now;
            f.batches_applied += applied.batches;
            f.bytes_applied += applied.bytes;
            f.duplicates += applied.duplicates;
            f.refused += applied.refused;
        });
        if came_up {
            tracing::info!(peer = %peer.name, addr = %peer.addr, "replication link up");
        }
        resync = applied.incomplete();
        if applied.backpressured {
            tokio::time::sleep(BACKOFF_MIN).await;
        }
    }
}

/// The last partition in a response that carried batches: where the server's budget ran out.
fn last_served(response: &PullResponse) -> Option<PartitionKey> {
    response
        .partitions
        .iter()
        .rev()
        .find(|p| !p.batches.is_empty())
        .map(|p| (p.topic.clone(), p.partition))
}

/// Per partition, the incarnation and the highest sequence per origin among a response's
/// batches.
fn tops(response: &PullResponse) -> Ahead {
    let mut ahead = Ahead::new();
    for part in &response.partitions {
        for batch in &part.batches {
            ahead
                .entry((part.topic.clone(), part.partition))
                .or_insert_with(|| (part.topic_id, VectorClock::default()))
                .1
                .advance(batch.meta.origin_region, batch.meta.origin_seq);
        }
    }
    ahead
}

/// `have` advanced past the batches of a response being applied (`ahead`), unless they belong
/// to another incarnation than `topic_id` (the one hosted here): those are not applied, so the
/// next pull must not claim them.
fn have_after(
    mut have: VectorClock,
    topic_id: &TopicId,
    ahead: Option<&(TopicId, VectorClock)>,
) -> VectorClock {
    if let Some((_, tops)) = ahead.filter(|(id, _)| id == topic_id) {
        for (origin, seq) in tops.to_deps() {
            have.advance(origin, seq);
        }
    }
    have
}

/// Builds the next pull on the blocking pool (it locks every partition's replica), leaving out
/// the `held` partitions and starting after `resume_after`.
async fn request_after(
    broker: &Arc<Broker>,
    peer: u32,
    ahead: Option<Ahead>,
    held: HashSet<PartitionKey>,
    resume_after: Option<PartitionKey>,
) -> Result<PullRequest, LinkError> {
    let for_blocking = broker.clone();
    crate::blocking::REPLICATION
        .run(move || {
            build_request(
                &for_blocking,
                peer,
                ahead.as_ref(),
                &held,
                resume_after.as_ref(),
            )
        })
        .await
        .map_err(|e| LinkError::Apply(e.to_string()))
}

/// Sends one pull frame.
async fn send_pull(
    writer: &mut PeerWriter,
    correlation_id: i32,
    body: &[u8],
) -> Result<(), LinkError> {
    let frame = pull_frame(correlation_id, body);
    writer.write_all(&frame).await?;
    Ok(())
}

/// Reads the response body to pull `correlation_id`, into a buffer not zeroed first (the read
/// fills it), which the decoded batches then share.
pub(super) async fn read_response(
    reader: &mut PeerReader,
    correlation_id: i32,
) -> Result<Bytes, LinkError> {
    let len = reader.read_u32().await? as usize;
    if !response_length_ok(len) {
        return Err(LinkError::BadResponse(format!("frame of {len} bytes")));
    }
    let answered = reader.read_i32().await?;
    if answered != correlation_id {
        return Err(LinkError::BadResponse(format!(
            "correlation id {answered}, expected {correlation_id}"
        )));
    }
    let wanted = len - RESPONSE_HEADER_BYTES;
    let mut body = BytesMut::with_capacity(wanted);
    while body.len() < wanted {
        let rest = (wanted - body.len()) as u64;
        if (&mut *reader).take(rest).read_buf(&mut body).await? == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
    }
    Ok(body.freeze())
}

/// This region's clocks for every partition but the `held` ones (advanced by `ahead`, what a
/// response being applied carries), and which origins to ask peer `peer` for.
pub(super) fn build_request(
    broker: &Broker,
    peer: u32,
    ahead: Option<&Ahead>,
    held: &HashSet<PartitionKey>,
    resume_after: Option<&PartitionKey>,
) -> PullRequest {
    let replication = &broker.replication;
    let now = now_ms();
    let mut partitions = Vec::new();
    for topic in broker.topics.all() {
        let topic_id = *topic.id.as_bytes();
        for partition in topic.partitions() {
            let index = u32::try_from(partition.index()).unwrap_or(0);
            let key = (topic.name.clone(), index);
            if !held.is_empty() && held.contains(&key) {
                continue;
            }
            let replica = partition.replica();
            let have = have_after(
                replica.clock().clone(),
                &topic_id,
                ahead.and_then(|a| a.get(&key)),
            );
            partitions.push(PartitionPull {
                topic: topic.name.clone(),
                topic_id,
                partition: index,
                have,
                durable: replica.durable_clock().clone(),
            });
        }
    }
    if let Some(last) = resume_after {
        // The server fills the response budget in request order, so one partition with a long
        // backlog would take it every time and the partitions behind it would wait until it
        // caught up. Starting after the last partition served rotates the budget among all.
        if let Some(at) = partitions
            .iter()
            .position(|p| p.topic == last.0 && p.partition == last.1)
        {
            partitions.rotate_left(at + 1);
        }
    }
    PullRequest {
        region: replication.region_id,
        secret: replication.secret().to_vec(),
        max_wait_ms: PULL_WAIT_MS,
        max_bytes: PULL_RESPONSE_BYTES_MAX,
        catalog_digest: broker.catalog_digest(),
        origins: wanted_origins(broker, peer, now),
        partitions,
    }
}

/// The origins to ask `peer` for: its own batches, plus those of every origin whose own link is
/// down (anti-entropy routes around a broken link through any other peer) or that a peer served
/// damaged (`detour.rs`). Asking every peer for everything would carry each batch once per peer,
/// so while the mesh is healthy each origin's batches come from the origin itself. This
/// region's own batches are never asked for: only batches durable here ever left it.
fn wanted_origins(broker: &Broker, peer: u32, now: i64) -> Vec<u32> {
    let replication = &broker.replication;
    replication
        .peers
        .iter()
        .zip(&replication.links)
        .filter(|(p, link)| {
            let facts = link.facts();
            p.id == peer
                || facts.state != LinkState::Connected
                || now - facts.last_pull_ms > LINK_DOWN_AFTER_MS
                || replication.detours.active(p.id, now)
        })
        .map(|(p, _)| p.id)
        .collect()
}

/// What one response did here.
#[derive(Debug, Default)]
pub(super) struct Applied {
    batches: u64,
    bytes: u64,
    duplicates: u64,
    refused: u64,
    queued: u64,
    backpressured: bool,
    /// Partitions that applied batches without refusal or failure.
    clean: Vec<PartitionKey>,
    /// Partitions that did not.
    pub(super) troubles: Vec<(PartitionKey, Trouble)>,
}

impl Applied {
    /// Whether some batches of the response are not in the log yet (refused, queued, or
    /// pushed back).
    fn incomplete(&self) -> bool {
        self.refused > 0 || self.queued > 0 || self.backpressured
    }
}

/// A refusal's reason as a short name (for the log rate limit).
fn refusal_kind(refusal: &Refusal) -> &'static str {
    match refusal {
        Refusal::ClockSkew { .. } => "clock_skew",
        Refusal::Malformed(_) => "malformed",
        Refusal::UnknownOrigin(_) => "unknown_origin",
        Refusal::OwnBatchAhead { .. } => "own_batch_ahead",
        Refusal::Conflict => "conflict",
        Refusal::LogRefused(_) => "log_refused",
    }
}

/// Whether a replicated payload is exactly one well-formed record batch (length, magic, CRC):
/// anything else is dropped before it reaches the log.
pub(super) fn well_formed(payload: &Bytes) -> bool {
    split_batches(payload, usize::MAX).is_ok_and(|ranges| ranges.len() == 1)
}

/// Merges the peer's catalog, then runs each partition's batches through its replica. A
/// partition whose batches are refused or whose log fails is reported in `troubles` and the
/// others still apply.
pub(super) fn apply(
    broker: &Broker,
    peer: u32,
    response: PullResponse,
) -> Result<Applied, LinkError> {
    if let Some(catalog) = &response.catalog {
        broker
            .merge_peer_catalog(catalog)
            .map_err(|e| LinkError::BadResponse(format!("catalog: {e}")))?;
    }
    let replication = &broker.replication;
    let mut applied = Applied::default();
    let mut clocks_noted = false;
    let wall = u64::try_from(now_ms()).unwrap_or(0);
    for part in response.partitions {
        let Some((topic_id, partition)) = broker.topics.get(&part.topic).and_then(|t| {
            let partition = t.partition(i32::try_from(part.partition).ok()?)?;
            Some((t.id, partition))
        }) else {
            continue;
        };
        let key = (part.topic.clone(), part.partition);
        if !part.same_incarnation(topic_id.as_bytes()) {
            // The peer hosts another incarnation of the name: one of the two regions has not
            // merged a delete and re-create yet. Its batches and clocks describe that one, so
            // nothing of it is applied or recorded here until the catalogs agree.
            metrics::replication_refused("incarnation_mismatch");
            applied.troubles.push((
                key,
                Trouble {
                    kind: "incarnation_mismatch",
                    refused: part.batches.len() as u64,
                    first: format!(
                        "the peer answered for topic id {}, this region hosts {topic_id} (a delete and re-create not yet merged by both regions)",
                        uuid::Uuid::from_bytes(part.topic_id)
                    ),
                },
            ));
            continue;
        }
        let mut batches: Vec<Batch<Bytes>> = Vec::with_capacity(part.batches.len());
        let mut trouble: Option<Trouble> = None;
        for batch in part.batches {
            if well_formed(&batch.payload) {
                batches.push(batch);
            } else {
                applied.refused += 1;
                metrics::replication_refused("bad_batch");
                replication
                    .detours
                    .damaged_copy(batch.meta.origin_region, now_ms());
                let first = || {
                    format!(
                        "batch {}:{} is not one well-formed record batch",
                        batch.meta.origin_region, batch.meta.origin_seq
                    )
                };
                let t = trouble.get_or_insert_with(|| Trouble {
                    kind: "bad_batch",
                    refused: 0,
                    first: first(),
                });
                t.refused += 1;
            }
        }
        let core = ReplicaAnswer {
            from: peer,
            to: replication.region_id,
            have: part.have,
            durable: part.durable,
            batches,
        };
        let (report, bytes) = {
            let mut replica = partition.replica();
            for (region, durable) in &part.relayed {
                if *region != replication.region_id {
                    // A region this one does not know is the peer's business, not an error.
                    let _ = replica.note_relayed(*region, durable);
                }
            }
            // Local appends wait for this lock, so the log grows here only by what applies.
            let size_before = partition.log().size_bytes();
            let report = replica.receive_response(core, wall);
            clocks_noted = true;
            (
                report,
                partition.log().size_bytes().saturating_sub(size_before),
            )
        };
        let report = match report {
            Ok(report) => report,
            Err(error) => {
                // The replica is poisoned (a log failure): this partition applies nothing until
                // it is reopened, the others go on.
                applied.troubles.push((
                    key,
                    Trouble {
                        kind: "log_failure",
                        refused: 0,
                        first: format!("applying failed: {error}"),
                    },
                ));
                continue;
            }
        };
        for (id, refusal) in &report.refused {
            metrics::replication_refused(match refusal {
                Refusal::LogRefused(_) => "log_refused",
                _ => "batch_metadata",
            });
            let t = trouble.get_or_insert_with(|| Trouble {
                kind: refusal_kind(refusal),
                refused: 0,
                first: format!("batch {}:{} refused: {refusal:?}", id.origin, id.seq),
            });
            t.refused += 1;
        }
        match trouble {
            Some(trouble) => applied.troubles.push((key, trouble)),
            // Only progress resets a pause: an empty answer from a pull sent before the trouble
            // was known says nothing.
            None if report.applied > 0 => applied.clean.push(key),
            None => {}
        }
        if report.applied > 0 {
            partition.appended().notify_waiters();
            metrics::replication_applied(&part.topic, report.applied, bytes);
        }
        applied.batches += report.applied as u64;
        applied.bytes += bytes;
        applied.duplicates += report.duplicates as u64;
        applied.refused += report.refused.len() as u64;
        applied.queued += report.queued as u64;
        applied.backpressured |= report.backpressured > 0;
    }
    if applied.batches > 0 {
        replication.data_progressed(false);
    }
    if clocks_noted {
        // The peer's durable clocks (and those it relayed) were recorded: produces waiting for
        // `causeway.min.regions` re-check, even when no pull from that peer ever reaches here
        // (its link to this region is down and its clocks arrive only relayed).
        replication.peer_progressed();
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use causeway_storage::ControlType;
    use tempfile::TempDir;

    use super::*;
    use crate::config::parse_cli_from;
    use crate::replication::serve::collect;
    use crate::topics::NewTopic;

    fn refused(kind: &'static str) -> Trouble {
        Trouble {
            kind,
            refused: 1,
            first: "batch 1:1 refused".into(),
        }
    }

    #[test]
    fn a_troubled_partition_is_held_with_a_doubling_pause_and_logged_at_most_once_a_period() {
        let mut holds = Holds::default();
        let key: PartitionKey = ("t".into(), 0);
        let other: PartitionKey = ("t".into(), 1);
        let mut now = 1_000_000;
        let mut logged = 0;
        let mut pauses = Vec::new();
        // A batch refused on every retry for a minute.
        while now < 1_060_000 {
            if holds.held(now).contains(&key) {
                now += 10;
                continue;
            }
            logged += usize::from(holds.trouble("p", key.clone(), &refused("log_refused"), now));
            pauses.push(holds.by_partition[&key].delay_ms);
            assert!(!holds.held(now).contains(&other), "other partitions go on");
        }
        assert_eq!(&pauses[..7], &[100, 200, 400, 800, 1600, 3200, 5000]);
        assert!(pauses.len() < 25, "{} retries in a minute", pauses.len());
        assert!((6..=7).contains(&logged), "{logged} warnings in a minute");
        // A new kind of trouble is logged at once; a clean apply resets the pause.
        assert!(holds.trouble("p", key.clone(), &refused("clock_skew"), now));
        holds.clean(&key, now);
        assert_eq!(
            holds.by_partition[&key].delay_ms, 0,
            "the current pause still ends"
        );
        holds.trouble("p", key.clone(), &refused("clock_skew"), now);
        assert_eq!(holds.by_partition[&key].delay_ms, HOLD_MIN_MS);
        holds.clean(&key, now + TROUBLE_LOG_PERIOD_MS);
        assert!(holds.by_partition.is_empty());
    }

    #[test]
    fn a_pull_claims_the_batches_in_flight_only_for_the_same_incarnation() {
        let (old, new) = ([1; 16], [2; 16]);
        let have = VectorClock::from_deps(&[(7, 3)]);
        let in_flight = (new, VectorClock::from_deps(&[(7, 5), (9, 2)]));
        let after = |ahead| have_after(have.clone(), &new, ahead).to_deps();
        assert_eq!(after(Some(&in_flight)), vec![(7, 5), (9, 2)]);
        assert_eq!(after(None), vec![(7, 3)]);
        let of_old = (old, in_flight.1.clone());
        assert_eq!(
            after(Some(&of_old)),
            vec![(7, 3)],
            "not applied, so not claimed"
        );
    }

    /// A region's broker over `dir`, with `peer` as its only peer (no link or server runs: the
    /// tests hand pulls and responses over themselves).
    fn region(dir: &Path, name: &str, peer: &str) -> Broker {
        let dir = dir.to_str().expect("UTF-8 temp dir");
        let peer = format!("{peer}@127.0.0.1:9");
        let args = [
            "causeway",
            "--data-dir",
            dir,
            "--region",
            name,
            "--peer",
            &peer,
            "--replication-secret",
            "s",
        ];
        Broker::open(parse_cli_from(args).expect("options").serve).expect("broker opens")
    }

    const TOPIC: &str = "orders";

    fn topic_id(broker: &Broker) -> TopicId {
        *broker
            .topics
            .get(TOPIC)
            .expect("topic hosted")
            .id
            .as_bytes()
    }

    fn clock(broker: &Broker) -> Vec<(u32, u64)> {
        let topic = broker.topics.get(TOPIC).expect("topic hosted");
        let partition = topic.partition(0).expect("partition 0");
        let deps = partition.replica().clock().to_deps();
        deps
    }

    /// What `broker`'s replica of the topic last recorded of `peer`'s durable clock, for `origin`.
    fn recorded(broker: &Broker, peer: u32, origin: u32) -> u64 {
        let topic = broker.topics.get(TOPIC).expect("topic hosted");
        let partition = topic.partition(0).expect("partition 0");
        let replica = partition.replica();
        replica.peer_clock(peer).map_or(0, |c| c.get(origin))
    }

    /// Appends one durable batch (a transaction marker, which needs no producer state) made
    /// here.
    fn write(broker: &Broker) {
        write_to(broker, 0);
    }

    /// [`write`] to partition `index`.
    fn write_to(broker: &Broker, index: i32) {
        let topic = broker.topics.get(TOPIC).expect("topic hosted");
        let partition = topic.partition(index).expect("partition");
        partition
            .append_local_control(ControlType::Abort, 1, 0, now_ms())
            .expect("append");
        partition.sync(&broker.replication).expect("sync");
    }

    /// Two regions hosting `TOPIC` with `partitions` partitions, created in the first.
    fn two_regions(dirs: &[TempDir; 2], partitions: u32) -> (Broker, Broker) {
        let eu = region(dirs[0].path(), "eu", "us");
        let us = region(dirs[1].path(), "us", "eu");
        eu.topics
            .create(NewTopic {
                name: TOPIC.into(),
                partitions,
                configs: BTreeMap::new(),
            })
            .expect("create");
        apply(&us, eu.replication.region_id, pull(&us, &eu)).expect("us learns the topic");
        (eu, us)
    }

    #[test]
    fn a_partition_with_a_long_backlog_does_not_take_every_responses_budget() {
        let dirs = [TempDir::new().expect("dir"), TempDir::new().expect("dir")];
        let (eu, us) = two_regions(&dirs, 2);
        let eu_id = eu.replication.region_id;
        for _ in 0..20 {
            write_to(&eu, 0);
        }
        write_to(&eu, 1);
        let batches_in = |index: i32| {
            let topic = us.topics.get(TOPIC).expect("topic");
            let partition = topic.partition(index).expect("partition");
            let replica = partition.replica();
            replica.clock().get(eu_id)
        };
        // A budget that two markers exhaust: partition 0 alone could fill ten responses.
        let small = |mut request: PullRequest| {
            request.max_bytes = 100;
            request
        };
        let first = collect(
            &eu,
            &small(build_request(&us, eu_id, None, &HashSet::new(), None)),
        );
        let resume = last_served(&first);
        assert_eq!(resume, Some((TOPIC.to_owned(), 0)));
        apply(&us, eu_id, first).expect("apply");
        assert_eq!((batches_in(0), batches_in(1)), (2, 0));
        let second = small(build_request(
            &us,
            eu_id,
            None,
            &HashSet::new(),
            resume.as_ref(),
        ));
        assert_eq!(
            second.partitions[0].partition, 1,
            "starts after partition 0"
        );
        apply(&us, eu_id, collect(&eu, &second)).expect("apply");
        assert_eq!(
            batches_in(1),
            1,
            "partition 1 served before partition 0 caught up"
        );
    }

    #[test]
    fn durable_clocks_in_a_pull_response_wake_produces_waiting_for_min_regions() {
        let dirs = [TempDir::new().expect("dir"), TempDir::new().expect("dir")];
        let (eu, us) = two_regions(&dirs, 1);
        let (eu_id, us_id) = (eu.replication.region_id, us.replication.region_id);
        write(&eu);
        let topic = eu.topics.get(TOPIC).expect("topic");
        let partition = topic.partition(0).expect("partition 0");
        assert_eq!(partition.regions_holding(&eu.replication, 1), 1);
        apply(&us, eu_id, pull(&us, &eu)).expect("us applies eu's batch");
        partition_sync(&us);
        // eu learns that us holds its batch from us's answer to eu's own pull (us never pulls
        // eu again here, as when us's link to eu is down): a waiting produce must wake.
        let mut waiting = eu.replication.watch_peers();
        waiting.borrow_and_update();
        apply(&eu, us_id, pull(&eu, &us)).expect("apply");
        assert!(waiting.has_changed().expect("watch open"), "not woken");
        assert_eq!(partition.regions_holding(&eu.replication, 1), 2);
    }

    /// A tombstone may only go once every write concurrent with it has arrived: eu's batch is
    /// stable (us holds it) while us's own earlier batch, concurrent with it, has not reached
    /// eu yet; the settled offset stays below eu's batch until it has.
    #[test]
    fn the_settled_offset_waits_for_writes_concurrent_with_a_stable_batch() {
        let dirs = [TempDir::new().expect("dir"), TempDir::new().expect("dir")];
        let (eu, us) = two_regions(&dirs, 1);
        let (eu_id, us_id) = (eu.replication.region_id, us.replication.region_id);
        let partition = eu
            .topics
            .get(TOPIC)
            .and_then(|t| t.partition(0))
            .expect("partition");
        write(&us); // concurrent with eu's batch below, and not pulled by eu yet
        let eu_batch = partition.log().log_end_offset();
        write(&eu);
        apply(&us, eu_id, pull(&us, &eu)).expect("us applies eu's batch");
        partition_sync(&us);
        pull(&us, &eu); // eu learns that us durably holds its batch
                        // A pass that merges everything below the stable offset samples the horizon.
        let pass = || {
            let mut bounds = partition.clean_bounds(&eu.replication, &[]);
            let stable = bounds.stable_offset;
            (stable, (bounds.settled_offset)(stable))
        };
        let (stable, _) = pass();
        assert!(stable > eu_batch, "eu's batch is stable");
        let (_, settled) = pass();
        assert!(
            settled <= eu_batch,
            "settled past eu's batch while us's concurrent batch is missing: {settled}"
        );
        apply(&eu, us_id, pull(&eu, &us)).expect("eu applies us's batch");
        partition_sync(&eu);
        pass();
        let (_, settled) = pass();
        assert!(
            settled > eu_batch,
            "settles once us's batch is here and merged: {settled}"
        );
    }

    /// A catalog difference that merging does not settle (a topic the peer refuses to take
    /// in) is offered at once the first time, then only with each long poll, never in a spin.
    #[test]
    fn a_catalog_difference_that_does_not_settle_waits_for_the_long_poll() {
        let dirs = [TempDir::new().expect("dir"), TempDir::new().expect("dir")];
        let (eu, us) = two_regions(&dirs, 1);
        let eu = Arc::new(eu);
        let mut request = build_request(&us, eu.replication.region_id, None, &HashSet::new(), None);
        request.catalog_digest = eu.catalog_digest() ^ 1;
        request.max_wait_ms = 2_000;
        let body = request.encode();
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let answer = |body: &[u8]| {
            let started = std::time::Instant::now();
            let served = runtime
                .block_on(crate::replication::serve::serve(&eu, body, None))
                .expect("served");
            let crate::replication::serve::Served::Respond(body) = served else {
                panic!("refused");
            };
            let response = PullResponse::decode(&body.into_bytes()).expect("a response");
            (started.elapsed(), response.catalog.is_some())
        };
        let (first, with_catalog) = answer(&body);
        assert!(
            with_catalog && first < std::time::Duration::from_millis(1_500),
            "{first:?}"
        );
        let (second, with_catalog) = answer(&body);
        assert!(with_catalog, "the catalog still rides along");
        assert!(
            second >= std::time::Duration::from_millis(1_900),
            "answered at once again ({second:?}): the link would spin"
        );
    }

    /// Syncs `broker`'s partition 0, as the background fsync does for applied remote batches.
    fn partition_sync(broker: &Broker) {
        let topic = broker.topics.get(TOPIC).expect("topic");
        let partition = topic.partition(0).expect("partition 0");
        partition.sync(&broker.replication).expect("sync");
    }

    /// `puller`'s next pull, as `server` answers it.
    fn pull(puller: &Broker, server: &Broker) -> PullResponse {
        let request = build_request(
            puller,
            server.replication.region_id,
            None,
            &HashSet::new(),
            None,
        );
        collect(server, &request)
    }

    #[test]
    fn a_pull_and_a_response_apply_only_to_the_same_incarnation() {
        let dirs = [TempDir::new().expect("dir"), TempDir::new().expect("dir")];
        let eu = region(dirs[0].path(), "eu", "us");
        let us = region(dirs[1].path(), "us", "eu");
        let (eu_id, us_id) = (eu.replication.region_id, us.replication.region_id);
        eu.topics
            .create(NewTopic {
                name: TOPIC.into(),
                partitions: 1,
                configs: BTreeMap::new(),
            })
            .expect("create");
        apply(&us, eu_id, pull(&us, &eu)).expect("us learns the topic");
        let old = topic_id(&us);
        assert_eq!(old, topic_id(&eu));

        // eu deletes and re-creates the topic and writes to it; us, not knowing, writes to the old one.
        eu.topics.delete(TOPIC).expect("delete");
        eu.topics
            .create(NewTopic {
                name: TOPIC.into(),
                partitions: 1,
                configs: BTreeMap::new(),
            })
            .expect("re-create");
        let new = topic_id(&eu);
        assert_ne!(old, new);
        write(&eu);
        write(&us);
        write(&us);

        // eu pulls us: us serves its old topic nothing and does not record eu's clocks in it; eu
        // applies nothing of it and records nothing of us's.
        let answer = pull(&eu, &us);
        let part = &answer.partitions[0];
        assert_eq!((part.topic_id, part.batches.len()), (old, 0));
        assert_eq!(
            recorded(&us, eu_id, eu_id),
            0,
            "eu's clock of another incarnation"
        );
        let applied = apply(&eu, us_id, answer).expect("apply");
        assert_eq!(applied.troubles.len(), 1);
        assert_eq!(applied.troubles[0].1.kind, "incarnation_mismatch");
        assert_eq!(clock(&eu), vec![(eu_id, 1)]);
        assert_eq!(recorded(&eu, us_id, us_id), 0);

        // Even batches served under the old id (a server that judged otherwise) are not applied,
        // and the next pull does not claim them.
        let mut forged = build_request(&eu, us_id, None, &HashSet::new(), None);
        forged.partitions[0].topic_id = old;
        let answer = collect(&us, &forged);
        assert_eq!(answer.partitions[0].batches.len(), 2);
        let ahead = tops(&answer);
        let next = build_request(&eu, us_id, Some(&ahead), &HashSet::new(), None);
        assert_eq!(next.partitions[0].have.get(us_id), 0);
        let applied = apply(&eu, us_id, answer).expect("apply");
        assert_eq!((applied.batches, applied.troubles[0].1.refused), (0, 2));
        assert_eq!(clock(&eu), vec![(eu_id, 1)]);
        assert_eq!(recorded(&eu, us_id, us_id), 0);

        // us pulls eu: eu serves the new topic nothing and records nothing of us's old clocks;
        // the catalog in the answer makes us drop its old topic for the new one, whose clocks it
        // then takes.
        let answer = pull(&us, &eu);
        let part = &answer.partitions[0];
        assert_eq!((part.topic_id, part.batches.len()), (new, 0));
        assert!(answer.catalog.is_some());
        assert_eq!(
            recorded(&eu, us_id, us_id),
            0,
            "us's clock of another incarnation"
        );
        let applied = apply(&us, eu_id, answer).expect("apply");
        assert!(applied.troubles.is_empty(), "{:?}", applied.troubles);
        assert_eq!(topic_id(&us), new);
        assert!(
            clock(&us).is_empty(),
            "the old incarnation's batches went with it"
        );
        assert_eq!(recorded(&us, eu_id, eu_id), 1);

        // From now on the new incarnation replicates both ways.
        let applied = apply(&us, eu_id, pull(&us, &eu)).expect("apply");
        assert_eq!(applied.batches, 1);
        write(&us);
        let applied = apply(&eu, us_id, pull(&eu, &us)).expect("apply");
        assert_eq!((applied.batches, applied.troubles.len()), (1, 0));
        assert_eq!(clock(&eu), clock(&us));
        let both = VectorClock::from_deps(&[(eu_id, 1), (us_id, 1)]);
        assert_eq!(clock(&eu), both.to_deps());
    }
}
