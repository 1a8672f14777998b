//! The link that pulls from one peer: connect, then pull in a loop (each pull long-polls at the
//! peer until it has news), apply what arrives through each partition's replica, and on any
//! failure log it, back off and reconnect. Nothing a peer sends can touch applied data: bad
//! batches are dropped before the core sees them, and the core refuses bad metadata.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use causeway_replication::delivery::{Batch, PullResponse as CoreResponse};
use causeway_replication::wire::{
    PartitionPull, PullError, PullRequest, PullResponse, REPLICATION_API_KEY,
    REPLICATION_API_VERSION,
};
use causeway_replication::VectorClock;
use causeway_storage::split_batches;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::status::LinkState;
use super::Peer;
use crate::broker::Broker;
use crate::clock::now_ms;
use crate::metrics;

/// How long a pull may wait at the peer for news.
const PULL_WAIT_MS: u32 = 500;
/// Soft bound on one response's batch bytes.
const PULL_BYTES_MAX: u32 = 8 << 20;
/// Largest response frame accepted.
const RESPONSE_BYTES_MAX: usize = 256 << 20;
/// Time allowed for connecting and for a response beyond the pull's own wait.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// First and longest pause between failed attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A link with no successful pull for this long counts as down even while connected (a hung
/// peer): its origin's batches are then pulled from the other peers too. A refused or broken
/// connection counts as down at once.
const LINK_DOWN_AFTER_MS: i64 = 10_000;

/// Why one connection's pull loop ended.
#[derive(Debug, thiserror::Error)]
enum LinkError {
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
    tracing::info!(peer = %peer.name, addr = %peer.addr, "replication link starting");
    loop {
        let attempt_started = now_ms();
        let outcome = tokio::select! {
            outcome = pull_until_error(&broker, &peer, index) => outcome,
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

/// Per partition, the highest sequence per origin a response carries.
type Ahead = HashMap<(String, u32), VectorClock>;

/// One connection: pull and apply until something fails. Pulls are pipelined: as soon as a
/// response arrives the next pull goes out, asking for what follows that response, so the peer
/// serves the next batches while this region applies the previous ones.
async fn pull_until_error(
    broker: &Arc<Broker>,
    peer: &Peer,
    index: usize,
) -> Result<(), LinkError> {
    let link = &broker.replication.links[index];
    let stream = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(&peer.addr))
        .await
        .map_err(|_| LinkError::Timeout)??;
    stream.set_nodelay(true)?;
    let (mut reader, mut writer) = stream.into_split();
    let mut correlation_id = 1i32;
    let mut resync = false;
    let first = request_after(broker, peer.id, None).await?;
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
        let next = request_after(broker, peer.id, ahead).await?;
        correlation_id = correlation_id.wrapping_add(1);
        send_pull(&mut writer, correlation_id, &next.encode()).await?;
        let for_blocking = broker.clone();
        let peer_id = peer.id;
        let applied = tokio::task::spawn_blocking(move || apply(&for_blocking, peer_id, response))
            .await
            .map_err(|e| LinkError::Apply(e.to_string()))??;
        link.update(|f| {
            f.state = LinkState::Connected;
            f.last_error = None;
            f.last_pull_ms = now_ms();
            f.batches_applied += applied.batches;
            f.bytes_applied += applied.bytes;
            f.duplicates += applied.duplicates;
            f.refused += applied.refused;
        });
        resync = applied.incomplete();
        if applied.backpressured {
            tokio::time::sleep(BACKOFF_MIN).await;
        }
    }
}

/// Per partition, the highest sequence per origin among a response's batches.
fn tops(response: &PullResponse) -> Ahead {
    let mut ahead = Ahead::new();
    for part in &response.partitions {
        for batch in &part.batches {
            ahead
                .entry((part.topic.clone(), part.partition))
                .or_default()
                .advance(batch.meta.origin_region, batch.meta.origin_seq);
        }
    }
    ahead
}

/// Builds the next pull on the blocking pool (it locks every partition's replica).
async fn request_after(
    broker: &Arc<Broker>,
    peer: u32,
    ahead: Option<Ahead>,
) -> Result<PullRequest, LinkError> {
    let for_blocking = broker.clone();
    tokio::task::spawn_blocking(move || build_request(&for_blocking, peer, ahead.as_ref()))
        .await
        .map_err(|e| LinkError::Apply(e.to_string()))
}

/// Sends one pull frame.
async fn send_pull(
    writer: &mut OwnedWriteHalf,
    correlation_id: i32,
    body: &[u8],
) -> Result<(), LinkError> {
    let mut frame = Vec::with_capacity(12 + body.len());
    let len = u32::try_from(8 + body.len())
        .map_err(|_| LinkError::BadResponse("pull request too large".into()))?;
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&REPLICATION_API_KEY.to_be_bytes());
    frame.extend_from_slice(&REPLICATION_API_VERSION.to_be_bytes());
    frame.extend_from_slice(&correlation_id.to_be_bytes());
    frame.extend_from_slice(body);
    writer.write_all(&frame).await?;
    Ok(())
}

/// Reads the response body to pull `correlation_id`.
async fn read_response(
    reader: &mut OwnedReadHalf,
    correlation_id: i32,
) -> Result<Vec<u8>, LinkError> {
    let len = reader.read_u32().await? as usize;
    if !(4..=RESPONSE_BYTES_MAX).contains(&len) {
        return Err(LinkError::BadResponse(format!("frame of {len} bytes")));
    }
    let answered = reader.read_i32().await?;
    if answered != correlation_id {
        return Err(LinkError::BadResponse(format!(
            "correlation id {answered}, expected {correlation_id}"
        )));
    }
    let mut body = vec![0; len - 4];
    reader.read_exact(&mut body).await?;
    Ok(body)
}

/// This region's clocks for every partition (advanced by `ahead`, what a response being applied
/// carries), and which origins to ask peer `peer` for.
fn build_request(broker: &Broker, peer: u32, ahead: Option<&Ahead>) -> PullRequest {
    let replication = &broker.replication;
    let now = now_ms();
    let mut partitions = Vec::new();
    for topic in broker.topics.all() {
        for partition in topic.partitions() {
            let replica = partition.replica();
            let index = u32::try_from(partition.index).unwrap_or(0);
            let mut have = replica.clock().clone();
            if let Some(tops) = ahead.and_then(|a| a.get(&(topic.name.clone(), index))) {
                for (origin, seq) in tops.to_deps() {
                    have.advance(origin, seq);
                }
            }
            partitions.push(PartitionPull {
                topic: topic.name.clone(),
                partition: index,
                have,
                durable: replica.durable_clock().clone(),
            });
        }
    }
    PullRequest {
        region: replication.region_id,
        secret: replication.secret().to_vec(),
        max_wait_ms: PULL_WAIT_MS,
        max_bytes: PULL_BYTES_MAX,
        catalog_digest: broker.catalog_digest(),
        origins: wanted_origins(broker, peer, now),
        partitions,
    }
}

/// The origins to ask `peer` for: its own batches, plus those of every origin whose own link is
/// down (anti-entropy routes around a broken link through any other peer). Asking every peer
/// for everything would carry each batch once per peer, so while the mesh is healthy each
/// origin's batches come from the origin itself. This region's own batches are never asked for:
/// only batches durable here ever left it.
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
        })
        .map(|(p, _)| p.id)
        .collect()
}

/// What one response did here.
#[derive(Debug, Default)]
struct Applied {
    batches: u64,
    bytes: u64,
    duplicates: u64,
    refused: u64,
    queued: u64,
    backpressured: bool,
}

impl Applied {
    /// Whether some batches of the response are not in the log yet (refused, queued, or
    /// pushed back).
    fn incomplete(&self) -> bool {
        self.refused > 0 || self.queued > 0 || self.backpressured
    }
}

/// Whether a replicated payload is exactly one well-formed record batch (length, magic, CRC):
/// anything else is dropped before it reaches the log.
fn well_formed(payload: &Bytes) -> bool {
    split_batches(payload, usize::MAX).is_ok_and(|ranges| ranges.len() == 1)
}

/// Merges the peer's catalog, then runs each partition's batches through its replica.
fn apply(broker: &Broker, peer: u32, response: PullResponse) -> Result<Applied, LinkError> {
    if let Some(catalog) = &response.catalog {
        broker
            .merge_peer_catalog(catalog)
            .map_err(|e| LinkError::BadResponse(format!("catalog: {e}")))?;
    }
    let replication = &broker.replication;
    let mut applied = Applied::default();
    let wall = u64::try_from(now_ms()).unwrap_or(0);
    for part in response.partitions {
        let Some(partition) = broker
            .topics
            .get(&part.topic)
            .and_then(|t| t.partition(i32::try_from(part.partition).ok()?))
        else {
            continue;
        };
        let mut batches: Vec<Batch<Bytes>> = Vec::with_capacity(part.batches.len());
        for batch in part.batches {
            if well_formed(&batch.payload) {
                batches.push(batch);
            } else {
                applied.refused += 1;
                metrics::replication_refused("bad_batch");
                tracing::warn!(topic = %part.topic, partition = part.partition, origin = batch.meta.origin_region, seq = batch.meta.origin_seq, "dropped a replicated batch that is not one well-formed record batch");
            }
        }
        let core = CoreResponse {
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
            let size_before = partition.log.size_bytes();
            let report = replica.receive_response(core, wall);
            (
                report,
                partition.log.size_bytes().saturating_sub(size_before),
            )
        };
        let report = report
            .map_err(|e| LinkError::Apply(format!("{}/{}: {e}", part.topic, part.partition)))?;
        for (id, refusal) in &report.refused {
            tracing::warn!(topic = %part.topic, partition = part.partition, origin = id.origin, seq = id.seq, ?refusal, "refused a replicated batch");
            metrics::replication_refused("batch_metadata");
        }
        if report.applied > 0 {
            partition.appended.notify_waiters();
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
    Ok(applied)
}
