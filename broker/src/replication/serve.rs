//! Answers a peer's pull: authenticate it, then for every partition it names, the batches it
//! lacks (from the origins it asked for), in this log's order, up to a byte budget. A partition
//! named with another incarnation (topic id) than the one hosted here is answered with no
//! batches, and the requester's clocks for it are not recorded. A pull with
//! nothing to return waits for news up to its `max_wait_ms` (long poll), so an idle link costs a
//! round trip per wait period and a busy one ships batches as soon as they are servable.

use std::sync::Arc;
use std::time::Duration;

use causeway_replication::delivery::ReplicaPull;
use causeway_replication::wire::{
    Body, PartitionBatches, PartitionPull, PeerRequest, PullError, PullRequest, PullResponse,
    SeedRequest, SeedResponse, TopicId, WireError, PULL_RESPONSE_BYTES_MAX,
};
use causeway_replication::{BatchId, VectorClock};

use super::status::LinkStatus;
use super::Replica;
use crate::broker::Broker;
use crate::metrics;
use crate::topics::PartitionHandle;
use crate::wall_clock::now_ms;

/// Batches served per partition per pull.
const BATCHES_PER_PARTITION_MAX: usize = 256;
/// Longest a pull may wait for news.
const WAIT_MS_MAX: u32 = 30_000;

/// What the connection does after a pull.
pub enum Served {
    /// Send this body.
    Respond(Body),
    /// Send this body, then close: the peer was refused.
    RespondAndClose(Body, String),
}

/// Judges a pull or seed request by the requester's region and secret at the front of its body,
/// before anything else in it is decoded, or read: the connection calls it while the rest of a
/// large frame is still to come. `Ok(None)` admits the request; `Ok(Some(_))` is the refusal to
/// send before closing; `Err(WireError::Truncated)` means the credentials have not all arrived.
pub fn admit(
    broker: &Broker,
    kind: PeerRequest,
    body_front: &[u8],
    certificate: Option<&str>,
) -> Result<Option<Served>, WireError> {
    let (region, secret) = PullRequest::credentials(body_front)?;
    let replication = &broker.replication;
    let refusal = match replication.peer(region) {
        Some((peer, _)) if !replication.admits(peer, secret, certificate) => {
            Some((PullError::AuthenticationFailed, "authentication failed"))
        }
        Some(_) => None,
        None if !replication.authenticates(secret) && certificate.is_none() => {
            Some((PullError::AuthenticationFailed, "authentication failed"))
        }
        None => Some((PullError::UnknownRegion, "unknown region")),
    };
    Ok(refusal.map(|(error, reason)| {
        // A region this mesh knows is named; an unknown one has only the id it claimed.
        match replication.peer(region) {
            Some((peer, _)) => {
                tracing::warn!(peer = %peer.name, reason, ?kind, "refused a replication request");
            }
            None => {
                tracing::warn!(
                    claimed_region_id = region,
                    reason,
                    ?kind,
                    "refused a replication request"
                );
            }
        }
        metrics::replication_refused(reason);
        let body = match kind {
            PeerRequest::Pull => PullResponse {
                error,
                region: replication.region_id,
                catalog: None,
                partitions: Vec::new(),
            }
            .encode(),
            PeerRequest::Seed => SeedResponse::refusal(error, replication.region_id).encode(),
        };
        Served::RespondAndClose(body, format!("replication {kind:?} refused: {reason}"))
    }))
}

/// Decodes and serves one seed request: the next stored batches of the partition from the
/// offset asked, below the durable end of the log (see `seed.rs`). `Err` is a malformed body or
/// a log that cannot be read: the connection is closed.
pub async fn serve_seed(
    broker: &Arc<Broker>,
    body: &[u8],
    certificate: Option<&str>,
) -> Result<Served, String> {
    let malformed = |e: WireError| {
        metrics::replication_refused("malformed_request");
        format!("replication seed: {e}")
    };
    if let Some(refusal) = admit(broker, PeerRequest::Seed, body, certificate).map_err(malformed)? {
        return Ok(refusal);
    }
    let request = SeedRequest::decode(body).map_err(malformed)?;
    let for_blocking = broker.clone();
    let answer = crate::blocking::REPLICATION
        .run(move || seed_answer(&for_blocking, &request))
        .await
        .map_err(|e| format!("replication seed task: {e}"))??;
    Ok(Served::Respond(answer.encode()))
}

/// The batches one seed request asks for, with the removed high water read after them.
fn seed_answer(broker: &Broker, request: &SeedRequest) -> Result<SeedResponse, String> {
    let region = broker.replication.region_id;
    let hosted = broker.topics.get(&request.topic).and_then(|t| {
        let partition = t.partition(i32::try_from(request.partition).ok()?)?;
        Some((*t.id.as_bytes(), partition))
    });
    let Some((_, partition)) = hosted.filter(|(id, _)| *id == request.topic_id) else {
        return Ok(SeedResponse::refusal(PullError::UnknownPartition, region));
    };
    let max_bytes = request.max_bytes.min(PULL_RESPONSE_BYTES_MAX) as usize;
    let chunk = super::seed::read_chunk(partition.log(), request.from_offset, max_bytes)
        .map_err(|e| {
            tracing::error!(topic = %request.topic, partition = request.partition, error = %e, "serving a seed failed");
            format!("replication seed: {e}")
        })?;
    let bytes = chunk.batches.iter().map(|b| b.payload.len()).sum();
    metrics::replication_served(&request.topic, chunk.batches.len(), bytes);
    let requester_durable = partition
        .replica()
        .peer_clock(request.region)
        .cloned()
        .unwrap_or_default();
    Ok(SeedResponse {
        error: PullError::None,
        region,
        end_offset: chunk.end_offset,
        next_offset: chunk.next_offset,
        removed: VectorClock::from_deps(&chunk.removed),
        requester_durable,
        batches: chunk.batches,
    })
}

/// Decodes and serves one pull body. `Err` is a malformed body: the connection is closed.
pub async fn serve(
    broker: &Arc<Broker>,
    body: &[u8],
    certificate: Option<&str>,
) -> Result<Served, String> {
    let malformed = |e: WireError| {
        metrics::replication_refused("malformed_request");
        format!("replication pull: {e}")
    };
    if let Some(refusal) = admit(broker, PeerRequest::Pull, body, certificate).map_err(malformed)? {
        return Ok(refusal);
    }
    let replication = &broker.replication;
    let request = PullRequest::decode(body).map_err(malformed)?;
    let link = replication.peer(request.region).map(|(_, link)| link);
    if let Some(link) = link {
        link.update(|f| f.last_served_ms = now_ms());
    }
    let request = Arc::new(request);
    let own_only =
        !request.origins.is_empty() && request.origins.iter().all(|&o| o == replication.region_id);
    let mut news = replication.watch_data(own_only);
    news.borrow_and_update();
    let deadline = tokio::time::Instant::now()
        + Duration::from_millis(u64::from(request.max_wait_ms.min(WAIT_MS_MAX)));
    loop {
        let (for_blocking, pull) = (broker.clone(), request.clone());
        let response = crate::blocking::REPLICATION
            .run(move || collect(&for_blocking, &pull))
            .await
            .map_err(|e| format!("replication serve task: {e}"))?;
        replication.peer_progressed();
        let catalog_news = response.catalog.is_some()
            && first_offer(link, request.catalog_digest, broker.catalog_digest());
        let has_news = catalog_news || response.partitions.iter().any(|p| !p.batches.is_empty());
        if has_news {
            return Ok(Served::Respond(response.encode()));
        }
        let parked = replication.park_pull();
        let woken = tokio::time::timeout_at(deadline, news.changed()).await;
        drop(parked);
        if woken.is_err() {
            return Ok(Served::Respond(response.encode()));
        }
    }
}

/// Whether offering this region's catalog (digest `ours`) to a peer whose digest is `theirs`
/// is news: not when the same pair was offered last time. A difference merging does not
/// settle (a topic the peer refuses to take in) would otherwise answer every pull at once, and
/// the link would spin; the catalog still rides along with each answer.
fn first_offer(link: Option<&LinkStatus>, theirs: u64, ours: u64) -> bool {
    let Some(link) = link else { return true };
    let mut first = false;
    link.update(|f| {
        first = f.catalog_offered != Some((theirs, ours));
        f.catalog_offered = Some((theirs, ours));
    });
    first
}

/// A partition's answer with no batches: this region's clocks for it, nothing relayed.
fn nothing_served(
    wanted: &PartitionPull,
    topic_id: TopicId,
    partition: &PartitionHandle,
) -> PartitionBatches {
    let replica = partition.replica();
    PartitionBatches {
        topic: wanted.topic.clone(),
        topic_id,
        partition: wanted.partition,
        have: replica.clock().clone(),
        durable: replica.durable_clock().clone(),
        relayed: Vec::new(),
        batches: Vec::new(),
    }
}

/// The first batch of each origin that a puller holding `have` lacks, where this region no
/// longer holds it (see `deleted_for_peer.rs`).
fn deleted_wanted(replica: &Replica, have: &VectorClock) -> Vec<BatchId> {
    replica
        .clock()
        .to_deps()
        .into_iter()
        .filter(|&(origin, seq)| have.get(origin) < seq)
        .map(|(origin, _)| BatchId {
            origin,
            seq: have.get(origin) + 1,
        })
        .filter(|&id| replica.log().no_longer_holds(id))
        .collect()
}

/// Per origin, the batch a puller holding `have` needs next when the first batch `served` of
/// that origin comes after it: this region no longer holds it (compaction merged it away, or
/// retention deleted it), so the puller can never apply what follows. The index may still point
/// into a compacted range, where [`deleted_wanted`] sees nothing missing.
fn skipped_over<P>(
    served: &[causeway_replication::delivery::Batch<P>],
    have: &VectorClock,
) -> Vec<BatchId> {
    let mut first_of = std::collections::BTreeMap::new();
    for batch in served {
        first_of
            .entry(batch.meta.origin_region)
            .or_insert(batch.meta.origin_seq);
    }
    first_of
        .into_iter()
        .map(|(origin, first)| {
            (
                first,
                BatchId {
                    origin,
                    seq: have.get(origin) + 1,
                },
            )
        })
        .filter(|(first, needed)| *first > needed.seq)
        .map(|(_, needed)| needed)
        .collect()
}

/// Builds the response from every named partition's replica.
pub(super) fn collect(broker: &Broker, request: &PullRequest) -> PullResponse {
    let replication = &broker.replication;
    let mut budget = request.max_bytes.min(PULL_RESPONSE_BYTES_MAX) as usize;
    let mut partitions = Vec::with_capacity(request.partitions.len());
    for wanted in &request.partitions {
        let Some((topic_id, partition)) = broker.topics.get(&wanted.topic).and_then(|t| {
            let partition = t.partition(i32::try_from(wanted.partition).ok()?)?;
            Some((*t.id.as_bytes(), partition))
        }) else {
            continue;
        };
        if !wanted.same_incarnation(&topic_id) {
            // The requester hosts another incarnation of the name (one of the two regions has
            // not merged a delete and re-create yet): nothing of this one is served to it, and
            // its clocks, which describe the other one, are not recorded (they would count
            // towards `causeway.min.regions` and the stable cut). The answer carries this
            // incarnation's id and clocks; the catalog in the same response settles it.
            metrics::replication_refused("incarnation_mismatch");
            tracing::debug!(topic = %wanted.topic, partition = wanted.partition, region = request.region, "pull names another incarnation of the topic; serving it nothing");
            partitions.push(nothing_served(wanted, topic_id, &partition));
            continue;
        }
        let mut have = wanted.have.clone();
        if !request.origins.is_empty() {
            // Origins not asked for look fully held, so none of their batches are served.
            let replica = partition.replica();
            for (origin, _) in replica.clock().to_deps() {
                if !request.origins.contains(&origin) {
                    have.advance(origin, u64::MAX / 2);
                }
            }
        }
        let core = ReplicaPull {
            from: request.region,
            to: replication.region_id,
            have,
            durable: wanted.durable.clone(),
        };
        let limit = if budget == 0 {
            0
        } else {
            BATCHES_PER_PARTITION_MAX
        };
        let (served, mut deleted) = {
            let mut replica = partition.replica();
            let deleted = deleted_wanted(&replica, &core.have);
            let served = replica
                .serve_pull(&core, limit, budget, |payload| payload.len())
                .map(|served| (served, replica.relayable(request.region)));
            (served, deleted)
        };
        if let Ok((served, _)) = &served {
            for skipped in skipped_over(&served.batches, &core.have) {
                if !deleted.iter().any(|d| d.origin == skipped.origin) {
                    deleted.push(skipped);
                }
            }
        }
        if !deleted.is_empty() {
            if let Some((peer, _)) = replication.peer(request.region) {
                replication.deleted_for_peer.asked(
                    (peer.id, &peer.name),
                    (&wanted.topic, wanted.partition),
                    &deleted,
                    now_ms(),
                );
            }
        }
        match served {
            Ok((served, relayed)) => {
                let bytes: usize = served.batches.iter().map(|b| b.payload.len()).sum();
                budget = budget.saturating_sub(bytes);
                metrics::replication_served(&wanted.topic, served.batches.len(), bytes);
                partitions.push(PartitionBatches {
                    topic: wanted.topic.clone(),
                    topic_id,
                    partition: wanted.partition,
                    have: served.have,
                    durable: served.durable,
                    relayed,
                    batches: served.batches,
                });
            }
            Err(error) => {
                tracing::error!(topic = %wanted.topic, partition = wanted.partition, %error, "serving a pull failed");
                partitions.push(nothing_served(wanted, topic_id, &partition));
            }
        }
    }
    let catalog = broker.catalog_for_peer(request.catalog_digest);
    PullResponse {
        error: PullError::None,
        region: replication.region_id,
        catalog,
        partitions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_replication::delivery::Batch;
    use causeway_storage::CausalMeta;

    fn batch(origin: u32, seq: u64) -> Batch<()> {
        Batch {
            meta: CausalMeta {
                origin_region: origin,
                origin_seq: seq,
                hlc: 0,
                deps: Vec::new(),
            },
            payload: (),
        }
    }

    #[test]
    fn a_served_origin_that_starts_past_what_the_puller_needs_was_skipped_over() {
        let have = VectorClock::from_deps(&[(1, 4), (2, 9)]);
        let served = [batch(2, 10), batch(1, 7), batch(1, 8), batch(3, 1)];
        assert_eq!(
            skipped_over(&served, &have),
            vec![BatchId { origin: 1, seq: 5 }],
            "origin 1 needs 5 and gets 7; origins 2 and 3 go on where the puller stands"
        );
        assert!(skipped_over::<()>(&[], &have).is_empty());
    }
}
