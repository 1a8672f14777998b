//! What each peer link is doing, for `/v1/regions`, `causeway region status` and the metrics.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use causeway_replication::{BatchId, HybridClock};

use serde::Serialize;

use super::Replication;
use crate::topics::Topics;
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
    /// When this region learned that the peer held each of its batches this region lacks.
    learned: Mutex<Learned>,
}

/// Per partition, when this region learned (from the durable clocks the peer reports) that the
/// peer held its own batches up to a sequence: `(seq, ms)` pairs in learning order, those this
/// region has applied dropped. The first pair above what is applied dates the oldest batch this
/// region lacks, at most one report period late (the peer does not send its batches' times).
#[derive(Debug, Default)]
struct Learned(BTreeMap<(String, i32), VecDeque<(u64, i64)>>);

/// Pairs kept per partition at most: learning is recorded at most once a second, so this covers
/// an hour of lag at full resolution; beyond it the oldest pair stays and later ones thin out.
const LEARNED_PER_PARTITION_MAX: usize = 3_600;

impl Learned {
    /// Records that the peer holds its batches through `available` while this region applied
    /// them through `applied`; returns when this region learned of the oldest one it lacks.
    fn observe(
        &mut self,
        key: (String, i32),
        available: u64,
        applied: u64,
        now: i64,
    ) -> Option<i64> {
        if available <= applied {
            self.0.remove(&key);
            return None;
        }
        let pairs = self.0.entry(key).or_default();
        while pairs.front().is_some_and(|&(seq, _)| seq <= applied) {
            pairs.pop_front();
        }
        if pairs
            .back()
            .is_none_or(|&(seq, ms)| seq < available && now - ms >= 1_000)
        {
            if pairs.len() >= LEARNED_PER_PARTITION_MAX {
                pairs.remove(1);
            }
            pairs.push_back((available, now));
        }
        pairs.front().map(|&(_, ms)| ms)
    }
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

    /// Records what the peer holds of its own batches in one partition and what this region
    /// applied; returns when this region learned of the oldest batch it lacks there.
    fn learned(&self, key: (String, i32), available: u64, applied: u64, now: i64) -> Option<i64> {
        self.learned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .observe(key, available, applied, now)
    }

    /// The facts now.
    pub fn facts(&self) -> LinkFacts {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Which of two regions lacks the other's batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Behind {
    /// This region lacks the peer's batches.
    Here,
    /// The peer lacks this region's batches.
    There,
}

/// The oldest missing batch must be this old before a region is logged as behind, so the
/// ordinary flow of batches under load (missing for milliseconds) is never reported.
pub const BEHIND_AFTER_SECONDS: f64 = 5.0;

/// Whether a region missing `batches`, the oldest `seconds` old, is to be reported behind, given
/// whether it is reported behind now: behind from [`BEHIND_AFTER_SECONDS`], caught up only once
/// nothing is missing. `None` when nothing changes.
pub fn behind_change(reported: bool, batches: u64, seconds: f64) -> Option<bool> {
    match (reported, batches, seconds >= BEHIND_AFTER_SECONDS) {
        (false, 1.., true) => Some(true),
        (true, 0, _) => Some(false),
        _ => None,
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
    /// Batches written in the peer region (its own) and durable there that this region has not
    /// applied, over all partitions. Each batch counts at its origin only, so the sum over peers
    /// is everything this region lacks.
    pub lag_batches: u64,
    /// Age of the oldest of those batches: how long ago this region learned the peer held it
    /// (0 when none is missing; never 0 while one is).
    pub lag_seconds: f64,
    /// Batches written in this region and durable here that the peer has not reported holding.
    pub peer_behind_batches: u64,
    /// Age of the oldest of those batches, from its stamp (0 when none is missing).
    pub peer_behind_seconds: f64,
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

/// Whether a peer has been silent for longer than the stale bound (counting from `started_ms`
/// for a peer never heard from).
pub fn is_stale(replication: &Replication, facts: &LinkFacts, started_ms: i64) -> bool {
    let last = facts.last_pull_ms.max(facts.last_served_ms).max(started_ms);
    let bound = i64::try_from(replication.stale_after.as_millis()).unwrap_or(i64::MAX);
    now_ms().saturating_sub(last) > bound
}

/// Ids of the peers currently stale (`started_ms`: when the broker started, see [`is_stale`]).
pub fn stale_peers(replication: &Replication, started_ms: i64) -> Vec<u32> {
    replication
        .peers
        .iter()
        .zip(&replication.links)
        .filter(|(_, link)| is_stale(replication, &link.facts(), started_ms))
        .map(|(peer, _)| peer.id)
        .collect()
}

/// Builds the regions report from every partition's replica (`started_ms`: when the broker
/// started, see [`is_stale`]).
pub fn report(topics: &Topics, replication: &Replication, started_ms: i64) -> RegionsReport {
    let mut clock: BTreeMap<u32, u64> = BTreeMap::new();
    let mut buffered = 0;
    let me = replication.region_id;
    let now = now_ms();
    let peers = replication.peers.len();
    let (mut lag, mut behind) = (vec![0u64; peers], vec![0u64; peers]);
    let (mut lag_since, mut behind_since) = (vec![now; peers], vec![now; peers]);
    for topic in topics.all() {
        for partition in topic.partitions() {
            let replica = partition.replica();
            let mine = replica.clock();
            for (origin, seq) in mine.to_deps() {
                *clock.entry(origin).or_default() += seq;
            }
            buffered += replica.pending_len();
            let own_durable = replica.durable_clock().get(me);
            for (i, peer) in replication.peers.iter().enumerate() {
                let theirs = replica.peer_clock(peer.id);
                let (available, applied) =
                    (theirs.map_or(0, |c| c.get(peer.id)), mine.get(peer.id));
                lag[i] += available.saturating_sub(applied);
                let key = (topic.name.clone(), partition.index());
                if let Some(learned) = replication.links[i].learned(key, available, applied, now) {
                    lag_since[i] = lag_since[i].min(learned);
                }
                let held = theirs.map_or(0, |c| c.get(me));
                behind[i] += own_durable.saturating_sub(held);
                if own_durable > held {
                    let oldest = BatchId {
                        origin: me,
                        seq: held + 1,
                    };
                    if let Some(stamp) = replica.log().stamp_of(oldest) {
                        let ms = i64::try_from(HybridClock::physical_ms(stamp)).unwrap_or(now);
                        behind_since[i] = behind_since[i].min(ms);
                    }
                }
            }
        }
    }
    let seconds_since = |ms: i64| (now - ms).max(0) as f64 / 1000.0;
    let peers = replication
        .peers
        .iter()
        .zip(&replication.links)
        .enumerate()
        .map(|(i, (peer, link))| {
            let facts = link.facts();
            PeerReport {
                name: peer.name.clone(),
                id: peer.id,
                addr: peer.addr.clone(),
                stale: is_stale(replication, &facts, started_ms),
                link: facts,
                lag_batches: lag[i],
                lag_seconds: seconds_since(lag_since[i]),
                peer_behind_batches: behind[i],
                peer_behind_seconds: seconds_since(behind_since[i]),
            }
        })
        .collect();
    RegionsReport {
        region: replication.region.clone(),
        region_id: replication.region_id,
        clock: clock
            .into_iter()
            .map(|(id, seq)| (replication.region_name(id), seq))
            .collect(),
        buffered_batches: buffered,
        peers,
        seed: replication.seed.report(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_missing_batch_is_dated_from_when_it_was_first_learned() {
        let mut learned = Learned::default();
        let key = || ("t".to_string(), 0);
        assert_eq!(learned.observe(key(), 5, 5, 1_000), None, "nothing missing");
        assert_eq!(learned.observe(key(), 8, 5, 2_000), Some(2_000));
        assert_eq!(
            learned.observe(key(), 12, 6, 3_500),
            Some(2_000),
            "6..=8 still missing"
        );
        assert_eq!(
            learned.observe(key(), 12, 8, 4_000),
            Some(3_500),
            "what was learned at 2 s is applied; 9..=12 were learned at 3.5 s"
        );
        assert_eq!(learned.observe(key(), 12, 12, 5_000), None, "caught up");
        assert_eq!(
            learned.observe(key(), 13, 12, 6_000),
            Some(6_000),
            "dated afresh"
        );
    }

    #[test]
    fn a_region_is_reported_behind_once_the_oldest_gap_is_old_and_caught_up_at_zero() {
        assert_eq!(behind_change(false, 10, 1.0), None, "batches in flight");
        assert_eq!(behind_change(false, 10, BEHIND_AFTER_SECONDS), Some(true));
        assert_eq!(behind_change(true, 3, 0.5), None, "still missing some");
        assert_eq!(behind_change(true, 0, 0.0), Some(false));
        assert_eq!(behind_change(false, 0, 0.0), None);
    }
}
