//! Seeding a region from a peer (`--seed-from NAME`): a region joining a running mesh, or one
//! started again on an empty data dir, copies the peer's topic catalog and every partition's
//! retained log before it serves anyone or starts its links. Plain pulls cannot bring such a
//! region up to date once retention or compaction removed batches at every peer: the batches
//! after them depend on them and would wait forever.
//!
//! ## What a copy is
//! Per partition, the peer answers [`SeedRequest`]s with its stored batches in its log order
//! (compacted segments' merged rows included), each with its causal metadata, never past what it
//! has fsynced, and the per-origin high water of what it removed from the log. The copy appends
//! each batch as a replicated batch, joins the removed high water into its own, fsyncs, and
//! recovers the partition's replica from the result. The peer's log below its durable end is a
//! causally closed prefix, so the copy's vector clock (its batches' sequences joined with the
//! removed high water) names exactly the batches it holds or that the peer removed; the links
//! then pull everything after it from every peer, as for any region. The removed high water is
//! read after the batches of each answer, so whatever the peer removes while the copy runs is
//! covered too (it can only remove below its stable offset, which is below its durable end).
//!
//! ## Crash safety
//! `seed.incomplete` is written in the data dir before the first byte is copied and removed after
//! the last partition is complete. A broker finding it refuses to start: the partial copy's
//! clocks would claim nothing is missing past what it got. Remove the data dir and start again.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::dial::{dial, PeerReader, PeerWriter};
use anyhow::{bail, Context};
use bytes::Bytes;
use causeway_replication::delivery::{dominated_by, Batch};
use causeway_replication::wire::{
    pull_frame, seed_frame, PartitionPull, PullError, PullRequest, PullResponse, SeedRequest,
    SeedResponse, TopicId, PULL_RESPONSE_BYTES_MAX,
};
use causeway_replication::VectorClock;
use causeway_storage::{BatchHeader, Partition, StorageError};
use serde::Serialize;

use super::link::{read_response, well_formed};
use super::log::read_stored;
use super::Peer;
use crate::broker::Broker;
use crate::metrics;
use crate::partition_handle::PartitionHandle;
use crate::wall_clock::now_ms;

/// One answer's worth of a partition's copy, as the serving region reads it.
#[derive(Debug, Clone)]
pub struct SeedChunk {
    /// The log's fsynced offset when the chunk was read: the copy is complete once
    /// `next_offset` reaches it.
    pub end_offset: u64,
    /// Where the next chunk starts.
    pub next_offset: u64,
    /// Per origin, the highest sequence the log removed, read after the batches.
    pub removed: Vec<(u32, u64)>,
    /// The stored batches from the offset asked, in log order, below `end_offset`.
    pub batches: Vec<Batch<Bytes>>,
}

/// Reads the chunk of `log` a seed request from `from` gets: the log is fsynced first, then
/// about `max_bytes` of stored batches (at least one) are read below the fsynced offset, then the
/// removed high water. Copying only what is fsynced keeps this region's own batches that a
/// power loss could take back (and renumber) out of the copy; fsyncing first makes the copy hold
/// everything this region held, so a region re-seeded from here continues its own sequences
/// after every one of its batches this region had.
pub fn read_chunk(log: &Partition, from: u64, max_bytes: usize) -> Result<SeedChunk, String> {
    if log.has_unsynced() {
        log.sync().map_err(|e| e.to_string())?;
    }
    let end = log.synced_offset();
    let read = read_stored(log, from, usize::MAX, max_bytes, end).map_err(|e| e.0)?;
    let next_offset = match read.last() {
        Some((base, batch)) => {
            let header = BatchHeader::parse(&batch.payload).map_err(|e| e.to_string())?;
            base + u64::try_from(header.last_offset_delta).unwrap_or(0) + 1
        }
        None => u64::try_from(end).unwrap_or(0).max(from),
    };
    let removed = log.removed_high_water().map_err(|e| e.to_string())?;
    Ok(SeedChunk {
        end_offset: u64::try_from(end).unwrap_or(0),
        next_offset,
        removed,
        batches: read.into_iter().map(|(_, batch)| batch).collect(),
    })
}

/// Appends a chunk's batches to the copy as replicated batches, in the serving region's order;
/// refuses a batch that is not exactly one well-formed record batch (length, magic, CRC).
pub fn append_chunk(log: &Partition, batches: Vec<Batch<Bytes>>) -> Result<(), String> {
    if let Some(bad) = batches.iter().find(|b| !well_formed(&b.payload)) {
        return Err(format!(
            "a damaged batch (origin {} seq {})",
            bad.meta.origin_region, bad.meta.origin_seq
        ));
    }
    for batch in batches {
        log.append_replicated(&batch.payload, &batch.meta, now_ms())
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Completes a copy: what the serving region removed counts as held here too, and everything is
/// fsynced before a replica counts it as durable.
pub fn finish_copy(log: &Partition, removed: &[(u32, u64)]) -> Result<(), StorageError> {
    log.join_removed_high_water(removed)?;
    log.mark_gaps_below(log.log_end_offset())?;
    log.sync()
}

/// Marks a data dir whose seed has not finished.
const INCOMPLETE_MARKER: &str = "seed.incomplete";
/// Time allowed for connecting and for each answer.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// First and longest pause before connecting again after the peer could not be reached.
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// How often the peers are told again what this region holds while it copies (well below any
/// sensible `--region-stale-after-ms`).
const HOLD_PERIOD: Duration = Duration::from_secs(2);
/// At most one progress line per this period.
const PROGRESS_LOG_PERIOD_MS: i64 = 5_000;

/// Where a seed is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SeedState {
    /// Copying partitions; nothing is served yet.
    Copying,
    /// Every partition copied; the region runs as any other.
    Done,
}

/// A seed's progress, as `/v1/regions` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SeedReport {
    /// The peer copied from.
    pub from: String,
    /// Copying or done.
    pub state: SeedState,
    /// Partitions to copy.
    pub partitions_total: u64,
    /// Partitions copied.
    pub partitions_done: u64,
    /// Batches copied.
    pub batches: u64,
    /// Batch bytes copied.
    pub bytes: u64,
}

/// The seed's progress, shared with the status report.
#[derive(Debug, Default)]
pub struct SeedProgress(Mutex<Option<SeedReport>>);

impl SeedProgress {
    /// The report, if this region was seeded since it started.
    pub fn report(&self) -> Option<SeedReport> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<SeedReport>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, change: impl FnOnce(&mut SeedReport)) {
        if let Some(report) = self.lock().as_mut() {
            change(report);
        }
    }
}

/// Refuses a data dir whose seed did not finish; seeds it when `--seed-from` asks and it holds
/// no topics. Runs before the links start and before Kafka clients are served.
pub async fn run(broker: &Arc<Broker>) -> anyhow::Result<()> {
    let data_dir = broker.options.data_dir.clone();
    let marker = data_dir.join(INCOMPLETE_MARKER);
    if marker.exists() {
        bail!(
            "{} says an earlier seed did not finish, so this data dir holds a partial copy: \
             stop, remove {} and start again with --seed-from",
            marker.display(),
            data_dir.display()
        );
    }
    let Some(from) = broker.options.seed_from.clone() else {
        return Ok(());
    };
    if !broker.topics.all().is_empty() {
        tracing::info!(peer = %from, "the data dir holds topics; not seeding");
        return Ok(());
    }
    let peer = broker
        .replication
        .peers
        .iter()
        .find(|p| p.name == from)
        .cloned()
        .with_context(|| format!("--seed-from {from:?} names no --peer"))?;
    write_marker(&data_dir, &marker, &from)?;
    *broker.replication.seed.lock() = Some(SeedReport {
        from: from.clone(),
        state: SeedState::Copying,
        partitions_total: 0,
        partitions_done: 0,
        batches: 0,
        bytes: 0,
    });
    let started = std::time::Instant::now();
    tracing::info!(peer = %from, "seeding: copying the peer's catalog and partitions");
    Seeder::new(broker, &peer).copy_all().await?;
    std::fs::remove_file(&marker).with_context(|| format!("removing {}", marker.display()))?;
    sync_dir(&data_dir)?;
    broker
        .replication
        .seed
        .update(|r| r.state = SeedState::Done);
    let report = broker.replication.seed.report();
    tracing::info!(
        peer = %from,
        partitions = report.as_ref().map_or(0, |r| r.partitions_done),
        batches = report.as_ref().map_or(0, |r| r.batches),
        bytes = report.as_ref().map_or(0, |r| r.bytes),
        seconds = started.elapsed().as_secs_f64(),
        "seeding done"
    );
    Ok(())
}

fn write_marker(data_dir: &Path, marker: &Path, from: &str) -> anyhow::Result<()> {
    std::fs::write(marker, format!("{from}\n"))
        .with_context(|| format!("writing {}", marker.display()))?;
    std::fs::File::open(marker)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("fsyncing {}", marker.display()))?;
    sync_dir(data_dir)
}

fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("fsyncing {}", dir.display()))
}

/// One connection to the peer, opened again after it breaks.
struct Seeder<'a> {
    broker: &'a Arc<Broker>,
    peer: &'a Peer,
    connection: Option<PeerConnection>,
    last_progress_log_ms: i64,
}

impl<'a> Seeder<'a> {
    fn new(broker: &'a Arc<Broker>, peer: &'a Peer) -> Seeder<'a> {
        Seeder {
            broker,
            peer,
            connection: None,
            last_progress_log_ms: now_ms(),
        }
    }

    async fn copy_all(&mut self) -> anyhow::Result<()> {
        self.copy_catalog().await?;
        let silent = hold_peers(self.broker).await;
        if !silent.is_empty() {
            tracing::warn!(?silent, "seeding: peers that did not answer may delete or compact batches this region lacks before its links reach them");
        }
        let _holding = Holding::start(self.broker);
        let partitions: Vec<(String, TopicId, Arc<PartitionHandle>)> = self
            .broker
            .topics
            .all()
            .iter()
            .flat_map(|topic| {
                let id = *topic.id.as_bytes();
                topic
                    .partitions()
                    .into_iter()
                    .map(move |p| (topic.name.clone(), id, p))
            })
            .collect();
        let total = partitions.len() as u64;
        self.broker
            .replication
            .seed
            .update(|r| r.partitions_total = total);
        metrics::replication_seed_partitions_remaining(total);
        for (done, (topic, topic_id, partition)) in partitions.into_iter().enumerate() {
            self.copy_partition(&topic, topic_id, partition).await?;
            let done = done as u64 + 1;
            self.broker
                .replication
                .seed
                .update(|r| r.partitions_done = done);
            metrics::replication_seed_partitions_remaining(total - done);
        }
        Ok(())
    }

    /// A pull naming no partitions: the answer carries the peer's catalog, merged here like any
    /// peer's (creating the topics and their empty partitions).
    async fn copy_catalog(&mut self) -> anyhow::Result<()> {
        let replication = &self.broker.replication;
        let pull = PullRequest {
            region: replication.region_id,
            secret: replication.secret().to_vec(),
            max_wait_ms: 0,
            max_bytes: 0,
            catalog_digest: self.broker.catalog_digest(),
            origins: Vec::new(),
            partitions: Vec::new(),
        };
        let body = self.exchange(pull_frame, &pull.encode()).await?;
        let response = PullResponse::decode(&body).context("the peer's catalog answer")?;
        self.check_answer(response.error, response.region)?;
        if let Some(catalog) = response.catalog {
            let broker = self.broker.clone();
            crate::blocking::METADATA
                .run(move || broker.merge_peer_catalog(&catalog))
                .await
                .context("merging the peer's catalog")?
                .context("merging the peer's catalog")?;
        }
        Ok(())
    }

    /// Copies one partition's retained log, then makes its replica recover from the copy.
    async fn copy_partition(
        &mut self,
        topic: &str,
        topic_id: TopicId,
        partition: Arc<PartitionHandle>,
    ) -> anyhow::Result<()> {
        let replication = &self.broker.replication;
        let index = u32::try_from(partition.index()).context("partition index")?;
        let mut removed = VectorClock::default();
        let mut held_before = VectorClock::default();
        let mut from = 0u64;
        loop {
            let request = SeedRequest {
                region: replication.region_id,
                secret: replication.secret().to_vec(),
                topic: topic.to_string(),
                topic_id,
                partition: index,
                from_offset: from,
                max_bytes: PULL_RESPONSE_BYTES_MAX,
            };
            let body = self.exchange(seed_frame, &request.encode()).await?;
            let answer = SeedResponse::decode(&body).context("the peer's seed answer")?;
            if answer.error == PullError::UnknownPartition {
                bail!(
                    "peer {} does not host {topic}-{index} as its catalog said \
                     (deleted or re-created meanwhile): start the seed again",
                    self.peer.name
                );
            }
            self.check_answer(answer.error, answer.region)?;
            for (origin, seq) in answer.removed.to_deps() {
                removed.advance(origin, seq);
            }
            for (origin, seq) in answer.requester_durable.to_deps() {
                held_before.advance(origin, seq);
            }
            if answer.next_offset < answer.end_offset && answer.next_offset <= from {
                bail!(
                    "peer {} answered {topic}-{index} from {from} with no progress",
                    self.peer.name
                );
            }
            self.append(topic, index, &partition, answer.batches)
                .await?;
            if answer.next_offset >= answer.end_offset {
                break;
            }
            from = answer.next_offset;
        }
        let config = replication.replica_config();
        let removed = removed.to_deps();
        let finishing = partition.clone();
        crate::blocking::MAINTENANCE
            .run(move || {
                finish_copy(finishing.log(), &removed)?;
                finishing.reload_replica(config)
            })
            .await
            .context("finishing a seeded partition")?
            .with_context(|| format!("finishing the copy of {topic}-{index}"))?;
        let copied = partition.replica().clock().clone();
        if !dominated_by(&held_before, &copied) {
            bail!(
                "peer {} last heard this region durably hold {:?} of {topic}-{index}, more than \
                 the copy holds ({:?}): this region held batches the peer lacks, and seeding \
                 from it would renumber or lose them. Seed from a region that holds everything \
                 this region held, or start it under a new region name",
                self.peer.name,
                held_before.to_deps(),
                copied.to_deps()
            );
        }
        tracing::info!(%topic, partition = index, "seeding: partition copied");
        Ok(())
    }

    /// Appends copied batches as replicated batches, in the peer's order.
    async fn append(
        &mut self,
        topic: &str,
        index: u32,
        partition: &Arc<PartitionHandle>,
        batches: Vec<Batch<Bytes>>,
    ) -> anyhow::Result<()> {
        let count = batches.len() as u64;
        let bytes: u64 = batches.iter().map(|b| b.payload.len() as u64).sum();
        let log = partition.clone();
        crate::blocking::MAINTENANCE
            .run(move || append_chunk(log.log(), batches))
            .await
            .context("appending copied batches")?
            .map_err(|e| {
                anyhow::anyhow!(
                    "copying {topic}-{index} from peer {}: {e} (seed from another peer if it is damaged there)",
                    self.peer.name
                )
            })?;
        metrics::replication_seeded(count, bytes);
        let seed = &self.broker.replication.seed;
        seed.update(|r| {
            r.batches += count;
            r.bytes += bytes;
        });
        let now = now_ms();
        if now - self.last_progress_log_ms >= PROGRESS_LOG_PERIOD_MS {
            self.last_progress_log_ms = now;
            if let Some(r) = seed.report() {
                tracing::info!(
                    peer = %r.from,
                    partitions_done = r.partitions_done,
                    partitions_total = r.partitions_total,
                    batches = r.batches,
                    bytes = r.bytes,
                    "seeding: progress"
                );
            }
        }
        Ok(())
    }

    fn check_answer(&self, error: PullError, region: u32) -> anyhow::Result<()> {
        if error != PullError::None {
            bail!("peer {} refused the seed: {error:?}", self.peer.name);
        }
        if region != self.peer.id {
            bail!(
                "{} answered as region {region}, expected {} ({})",
                self.peer.addr,
                self.peer.id,
                self.peer.name
            );
        }
        Ok(())
    }

    /// Sends one request and reads its answer, connecting first (again after a broken
    /// connection, with backoff, until the peer answers). Only transport failures are retried.
    async fn exchange(
        &mut self,
        frame: fn(i32, &[u8]) -> Vec<u8>,
        body: &[u8],
    ) -> anyhow::Result<Bytes> {
        let mut pause = RETRY_MIN;
        loop {
            let answer = match self.connection.as_mut() {
                Some(connection) => connection.exchange(frame, body).await,
                None => match PeerConnection::open(self.broker, &self.peer.addr).await {
                    Ok(connection) => {
                        self.connection = Some(connection);
                        continue;
                    }
                    Err(error) => Err(error),
                },
            };
            match answer {
                Ok(answer) => return Ok(answer),
                Err(error) => {
                    self.connection = None;
                    tracing::warn!(peer = %self.peer.name, addr = %self.peer.addr, %error, ?pause, "seeding: the peer did not answer; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RETRY_MAX);
                }
            }
        }
    }
}

/// One connection to a peer's Kafka port for requests on the private keys.
struct PeerConnection {
    reader: PeerReader,
    writer: PeerWriter,
    correlation_id: i32,
}

impl PeerConnection {
    async fn open(broker: &Broker, addr: &str) -> anyhow::Result<PeerConnection> {
        let (reader, writer) = tokio::time::timeout(IO_TIMEOUT, dial(broker, addr))
            .await
            .context("connecting timed out")??;
        Ok(PeerConnection {
            reader,
            writer,
            correlation_id: 0,
        })
    }

    async fn exchange(
        &mut self,
        frame: fn(i32, &[u8]) -> Vec<u8>,
        body: &[u8],
    ) -> anyhow::Result<Bytes> {
        use tokio::io::AsyncWriteExt;
        self.correlation_id = self.correlation_id.wrapping_add(1);
        self.writer
            .write_all(&frame(self.correlation_id, body))
            .await?;
        let answer = tokio::time::timeout(
            IO_TIMEOUT,
            read_response(&mut self.reader, self.correlation_id),
        )
        .await
        .context("the answer timed out")??;
        Ok(answer)
    }
}

/// Tells every peer what this region holds (nothing yet of a partition not copied) with a pull
/// that takes no batches, so each counts the region in its stable cut again: without it the
/// peers, to which a joining region is stale, go on deleting and compacting what the region
/// lacks between the copy and its links' first pulls, and the region could never catch up.
/// Returns the peers that did not answer.
async fn hold_peers(broker: &Arc<Broker>) -> Vec<String> {
    let replication = &broker.replication;
    let mut partitions = Vec::new();
    for topic in broker.topics.all() {
        for partition in topic.partitions() {
            let replica = partition.replica();
            partitions.push(PartitionPull {
                topic: topic.name.clone(),
                topic_id: *topic.id.as_bytes(),
                partition: u32::try_from(partition.index()).unwrap_or(0),
                have: replica.clock().clone(),
                durable: replica.durable_clock().clone(),
            });
        }
    }
    let pull = PullRequest {
        region: replication.region_id,
        secret: replication.secret().to_vec(),
        max_wait_ms: 0,
        max_bytes: 0,
        catalog_digest: broker.catalog_digest(),
        // Only this region's own batches, of which a peer holds what this region made durable:
        // the pull asks for nothing the peers may have deleted.
        origins: vec![replication.region_id],
        partitions,
    }
    .encode();
    let mut silent = Vec::new();
    for peer in &replication.peers {
        let answered = async {
            PeerConnection::open(broker, &peer.addr)
                .await?
                .exchange(pull_frame, &pull)
                .await
        }
        .await;
        if let Err(error) = answered {
            tracing::warn!(peer = %peer.name, %error, "seeding: could not tell the peer to hold what this region lacks");
            silent.push(peer.name.clone());
        }
    }
    silent
}

/// Runs [`hold_peers`] every [`HOLD_PERIOD`] until dropped.
struct Holding(tokio::task::JoinHandle<()>);

impl Holding {
    fn start(broker: &Arc<Broker>) -> Holding {
        let broker = broker.clone();
        Holding(tokio::spawn(async move {
            loop {
                tokio::time::sleep(HOLD_PERIOD).await;
                hold_peers(&broker).await;
            }
        }))
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        self.0.abort();
    }
}
