//! What each peer link is doing, for `/v1/regions`, `causeway region status` and the metrics.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

use super::Replication;
use crate::broker::Broker;
use crate::wall_clock::now_ms;

/// State of the link that pulls from one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// Not connected yet, or reconnecting.
    #[default]
    Connecting,
    /// Pulling.
    Connected,
    /// The last attempt failed; retrying with backoff.
    Failing,
    /// The peer refused us (authentication or unknown region); retrying slowly.
    Refused,
}

/// Live facts about one link, updated by the link task and the pull server.
#[derive(Debug, Default)]
pub struct LinkStatus {
    inner: Mutex<LinkFacts>,
}

/// A snapshot of [`LinkStatus`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct LinkFacts {
    /// What the link is doing.
    pub state: LinkState,
    /// The last error, if the link is not connected.
    pub last_error: Option<String>,
    /// When a pull from the peer last succeeded (ms since the epoch; 0 never).
    pub last_pull_ms: i64,
    /// When the peer last pulled from us (ms since the epoch; 0 never).
    pub last_served_ms: i64,
    /// Batches from this link applied here.
    pub batches_applied: u64,
    /// Bytes of those batches.
    pub bytes_applied: u64,
    /// Batches the link delivered that were already here.
    pub duplicates: u64,
    /// Batches refused (bad metadata, clock skew, backpressure) on this link.
    pub refused: u64,
    /// When this region last held everything the peer had durably (ms since the epoch).
    pub caught_up_ms: i64,
    /// The catalog digests (the peer's, ours) when this region last offered the peer its
    /// catalog: offering it again for the same pair is no news (see `serve`).
    #[serde(skip)]
    pub catalog_offered: Option<(u64, u64)>,
}

impl LinkStatus {
    /// Applies a change to the facts.
    pub fn update(&self, change: impl FnOnce(&mut LinkFacts)) {
        change(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// The facts now.
    pub fn facts(&self) -> LinkFacts {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// One peer in `/v1/regions`.
#[derive(Debug, Clone, Serialize)]
pub struct PeerReport {
    /// Region name.
    pub name: String,
    /// Region id.
    pub id: u32,
    /// Its Kafka address.
    pub addr: String,
    /// The link's facts.
    #[serde(flatten)]
    pub link: LinkFacts,
    /// Batches the peer holds durably that this region lacks, over all partitions.
    pub lag_batches: u64,
    /// How long this region has lagged the peer (0 when caught up).
    pub lag_seconds: f64,
    /// Batches this region holds that the peer has not confirmed durably.
    pub peer_behind_batches: u64,
    /// No contact for longer than `--region-stale-after-ms`.
    pub stale: bool,
}

/// The body of `GET /v1/regions`.
#[derive(Debug, Clone, Serialize)]
pub struct RegionsReport {
    /// This region's name.
    pub region: String,
    /// This region's id.
    pub region_id: u32,
    /// This region's vector clock summed over partitions: per origin region name, the batches
    /// of that origin applied here.
    pub clock: BTreeMap<String, u64>,
    /// Batches waiting in pending queues for their dependencies, over all partitions.
    pub buffered_batches: usize,
    /// The peers.
    pub peers: Vec<PeerReport>,
    /// The copy of a peer's data this region started from, when `--seed-from` seeded it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<super::seed::SeedReport>,
}

/// The name of a region id (its own id as text if not configured).
fn region_name(replication: &Replication, id: u32) -> String {
    if id == replication.region_id {
        return replication.region.clone();
    }
    replication
        .peers
        .iter()
        .find(|p| p.id == id)
        .map_or_else(|| id.to_string(), |p| p.name.clone())
}

/// Whether a peer has been silent for longer than the stale bound (counting from `started_ms`
/// for a peer never heard from).
pub fn is_stale(replication: &Replication, facts: &LinkFacts, started_ms: i64) -> bool {
    let last = facts.last_pull_ms.max(facts.last_served_ms).max(started_ms);
    let bound = i64::try_from(replication.stale_after.as_millis()).unwrap_or(i64::MAX);
    now_ms().saturating_sub(last) > bound
}

/// Ids of the peers currently stale.
pub fn stale_peers(broker: &Broker) -> Vec<u32> {
    let replication = &broker.replication;
    replication
        .peers
        .iter()
        .zip(&replication.links)
        .filter(|(_, link)| is_stale(replication, &link.facts(), broker.started_ms))
        .map(|(peer, _)| peer.id)
        .collect()
}

/// Builds the regions report from every partition's replica.
pub fn report(broker: &Broker) -> RegionsReport {
    let replication = &broker.replication;
    let mut clock: BTreeMap<u32, u64> = BTreeMap::new();
    let mut buffered = 0;
    let mut lag = vec![0u64; replication.peers.len()];
    let mut behind = vec![0u64; replication.peers.len()];
    for topic in broker.topics.all() {
        for partition in topic.partitions() {
            let replica = partition.replica();
            let mine = replica.clock();
            for (origin, seq) in mine.to_deps() {
                *clock.entry(origin).or_default() += seq;
            }
            buffered += replica.pending_len();
            for (i, peer) in replication.peers.iter().enumerate() {
                let Some(theirs) = replica.peer_clock(peer.id) else {
                    behind[i] += mine.to_deps().iter().map(|(_, s)| s).sum::<u64>();
                    continue;
                };
                for (origin, seq) in theirs.to_deps() {
                    lag[i] += seq.saturating_sub(mine.get(origin));
                }
                for (origin, seq) in mine.to_deps() {
                    behind[i] += seq.saturating_sub(theirs.get(origin));
                }
            }
        }
    }
    let now = now_ms();
    let peers = replication
        .peers
        .iter()
        .zip(&replication.links)
        .enumerate()
        .map(|(i, (peer, link))| {
            if lag[i] == 0 {
                link.update(|f| f.caught_up_ms = now);
            }
            let facts = link.facts();
            let lag_seconds = if lag[i] == 0 || facts.caught_up_ms == 0 {
                0.0
            } else {
                (now - facts.caught_up_ms).max(0) as f64 / 1000.0
            };
            PeerReport {
                name: peer.name.clone(),
                id: peer.id,
                addr: peer.addr.clone(),
                stale: is_stale(replication, &facts, broker.started_ms),
                link: facts,
                lag_batches: lag[i],
                lag_seconds,
                peer_behind_batches: behind[i],
            }
        })
        .collect();
    RegionsReport {
        region: replication.region.clone(),
        region_id: replication.region_id,
        clock: clock
            .into_iter()
            .map(|(id, seq)| (region_name(replication, id), seq))
            .collect(),
        buffered_batches: buffered,
        peers,
        seed: replication.seed.report(),
    }
}
