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

use anyhow::{bail, Context};
use causeway_replication::wire::{
    pull_frame, seed_frame, PullError, PullRequest, PullResponse, SeedRequest, SeedResponse,
    TopicId, PULL_RESPONSE_BYTES_MAX,
};
use causeway_replication::VectorClock;
use serde::Serialize;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use super::link::{read_response, well_formed};
use super::Peer;
use crate::broker::Broker;
use crate::metrics;
use crate::partition_handle::PartitionHandle;
use crate::wall_clock::now_ms;

/// Marks a data dir whose seed has not finished.
const INCOMPLETE_MARKER: &str = "seed.incomplete";
/// Time allowed for connecting and for each answer.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// First and longest pause before connecting again after the peer could not be reached.
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);
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
    connection: Option<(OwnedReadHalf, OwnedWriteHalf)>,
    correlation_id: i32,
    last_progress_log_ms: i64,
}

impl<'a> Seeder<'a> {
    fn new(broker: &'a Arc<Broker>, peer: &'a Peer) -> Seeder<'a> {
        Seeder {
            broker,
            peer,
            connection: None,
            correlation_id: 0,
            last_progress_log_ms: now_ms(),
        }
    }

    async fn copy_all(&mut self) -> anyhow::Result<()> {
        self.copy_catalog().await?;
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
        crate::blocking::MAINTENANCE
            .run(move || {
                partition.log().join_removed_high_water(&removed)?;
                partition.log().sync()?;
                partition.reload_replica(config)
            })
            .await
            .context("finishing a seeded partition")?
            .with_context(|| format!("finishing the copy of {topic}-{index}"))?;
        tracing::info!(%topic, partition = index, "seeding: partition copied");
        Ok(())
    }

    /// Appends copied batches as replicated batches, in the peer's order.
    async fn append(
        &mut self,
        topic: &str,
        index: u32,
        partition: &Arc<PartitionHandle>,
        batches: Vec<causeway_replication::delivery::Batch<bytes::Bytes>>,
    ) -> anyhow::Result<()> {
        if let Some(bad) = batches.iter().find(|b| !well_formed(&b.payload)) {
            bail!(
                "peer {} served a damaged batch of {topic}-{index} (origin {} seq {}): \
                 seed from another peer",
                self.peer.name,
                bad.meta.origin_region,
                bad.meta.origin_seq
            );
        }
        let count = batches.len() as u64;
        let bytes: u64 = batches.iter().map(|b| b.payload.len() as u64).sum();
        let log = partition.clone();
        crate::blocking::MAINTENANCE
            .run(move || {
                for batch in batches {
                    let mut payload = batch.payload.to_vec();
                    log.log()
                        .append_replicated(&mut payload, &batch.meta, now_ms())?;
                }
                Ok::<(), causeway_storage::StorageError>(())
            })
            .await
            .context("appending copied batches")?
            .with_context(|| format!("appending copied batches to {topic}-{index}"))?;
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
    ) -> anyhow::Result<Vec<u8>> {
        let mut pause = RETRY_MIN;
        loop {
            match self.try_exchange(frame, body).await {
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

    async fn try_exchange(
        &mut self,
        frame: fn(i32, &[u8]) -> Vec<u8>,
        body: &[u8],
    ) -> anyhow::Result<Vec<u8>> {
        use tokio::io::AsyncWriteExt;
        if self.connection.is_none() {
            let stream = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(&self.peer.addr))
                .await
                .context("connecting timed out")??;
            stream.set_nodelay(true)?;
            self.connection = Some(stream.into_split());
        }
        let Some((reader, writer)) = self.connection.as_mut() else {
            bail!("not connected");
        };
        self.correlation_id = self.correlation_id.wrapping_add(1);
        writer.write_all(&frame(self.correlation_id, body)).await?;
        let answer = tokio::time::timeout(IO_TIMEOUT, read_response(reader, self.correlation_id))
            .await
            .context("the answer timed out")??;
        Ok(answer)
    }
}
