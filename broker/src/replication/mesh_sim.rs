//! A seeded simulation of whole regions: several in-process [`Broker`]s over their own data
//! directories, exchanging pulls through the functions the links and the pull server run
//! (`link::build_request`, `serve::collect`, `link::apply`, which merges catalogs), with topics
//! of several partitions created, deleted, re-created under the same name and grown
//! (CreatePartitions) through the replicated catalog, while producers write to every partition.
//!
//! The single-partition simulator (`broker/tests/simulation_on_disk.rs`) covers the causal core
//! over the real log with every storage fault; this one covers what lies between partitions:
//! a pull carrying many partitions under one byte budget, responses that arrive after the topic
//! they describe was deleted or re-created, partitions named by incarnation (topic id), and
//! catalogs that converge while data flows.
//!
//! Faults: responses dropped, or held back and delivered later (after catalogs, topics and
//! clocks changed), links cut and healed, regions killed (`kill -9`: the broker is dropped
//! without closing; what it wrote is in the files, synced or not) and restarted, DeleteRecords.
//! Then every link heals, every region restarts, writes and topic changes stop, and regions pull
//! from each other until they agree.
//!
//! Checks: a region's clock of a partition never moves back across a restart; no
//! `(incarnation, partition, origin, seq)` is given to two writes; at the end every region hosts
//! the same topics (names, ids, partition counts); in every partition every region holds the
//! same batches, each a write produced into exactly that incarnation and partition under the
//! sequence it was given, in causal order; and every write produced into an incarnation that
//! still exists is in every region. Wall time still reaches the brokers (stamps of catalog
//! changes and batches), so a replayed seed repeats the same operations but may settle a
//! concurrent create and delete the other way.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write as _;
use std::path::Path;

use bytes::Bytes;
use causeway_replication::region::region_id;
use causeway_replication::sim::SimRng;
use causeway_replication::wire::{PullResponse, TopicId};
use causeway_replication::{BatchId, VectorClock};
use tempfile::TempDir;

use super::link::{apply, build_request};
use super::log::read_stored;
use super::serve::collect;
use crate::broker::Broker;
use crate::config::parse_cli_from;
use crate::topics::NewTopic;
use crate::wall_clock::now_ms;

const REGIONS: [&str; 3] = ["eu", "us", "ap"];
const TOPICS: [&str; 3] = ["orders", "events", "audit"];
const PARTITIONS_MAX: u32 = 5;
const REPLAY: &str = "cargo test --release -p causeway-broker --lib mesh_sim";

/// One write's identity: where it was produced and the sequence its origin gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Produced {
    topic_id: TopicId,
    partition: i32,
    origin: u32,
    seq: u64,
}

/// A partition incarnation: topic id and index.
type PartitionKey = (TopicId, i32);

struct Region {
    name: &'static str,
    dir: TempDir,
    broker: Option<Broker>,
    /// Bumped at every restart: a response pulled by an earlier process is never applied.
    generation: u64,
    down_until: u64,
    /// Each partition's clock when the region was killed.
    clocks_at_kill: BTreeMap<PartitionKey, VectorClock>,
}

/// A response on its way back to the region that pulled it.
struct InFlight {
    generation: u64,
    deliver_at: u64,
    response: PullResponse,
}

/// What a run did.
#[derive(Debug, Default, Clone, Copy)]
pub struct MeshReport {
    /// Writes produced.
    pub produced: u64,
    /// Topics created, deleted, grown.
    pub created: u64,
    pub deleted: u64,
    pub grown: u64,
    /// Pulls answered, responses dropped, responses delivered late.
    pub pulls: u64,
    pub dropped: u64,
    pub late: u64,
    /// Partitions a response was refused for because the two regions hosted different
    /// incarnations of the topic.
    pub incarnation_mismatches: u64,
    /// Batches of one incarnation offered to another: a response served before a delete and
    /// re-create that reached the puller first.
    pub other_incarnation_batches: u64,
    /// Regions killed and restarted.
    pub kills: u64,
    /// DeleteRecords calls.
    pub delete_records: u64,
    /// Writes checked in every region at the end, and the incarnations they lived in.
    pub checked_writes: u64,
    pub incarnations: u64,
}

struct Mesh {
    seed: u64,
    rng: SimRng,
    step: u64,
    regions: Vec<Region>,
    cut: [[bool; 3]; 3],
    in_flight: BTreeMap<(usize, usize), InFlight>,
    next_payload: u64,
    produced: BTreeMap<u64, Produced>,
    sequences: BTreeMap<(TopicId, i32, u32, u64), u64>,
    /// The highest durable clock each region ever had of each partition incarnation, by
    /// region id: what any other region may have recorded of it.
    durable_ever: BTreeMap<(u32, PartitionKey), VectorClock>,
    report: MeshReport,
}

fn open_region(dir: &Path, name: &str) -> Broker {
    let dir = dir.to_str().expect("UTF-8 temp dir");
    let mut args = vec![
        "causeway".to_string(),
        "--data-dir".into(),
        dir.into(),
        "--region".into(),
        name.into(),
        "--replication-secret".into(),
        "s".into(),
    ];
    for peer in REGIONS.iter().filter(|p| **p != name) {
        args.push("--peer".into());
        args.push(format!("{peer}@127.0.0.1:9"));
    }
    Broker::open(parse_cli_from(args).expect("options").serve).expect("broker opens")
}

fn payload_of(batch: &Bytes) -> Result<u64, String> {
    let mut bytes = batch.clone();
    let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes)
        .map_err(|e| format!("batch does not decode: {e}"))?;
    let value = set
        .records
        .first()
        .and_then(|r| r.value.clone())
        .ok_or("batch without a record value")?;
    std::str::from_utf8(&value)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("record value {value:?} is not a write number"))
}

impl Mesh {
    fn new(seed: u64) -> Mesh {
        let regions = REGIONS
            .iter()
            .map(|name| {
                let dir = TempDir::new().expect("temp dir");
                let broker = open_region(dir.path(), name);
                Region {
                    name,
                    dir,
                    broker: Some(broker),
                    generation: 0,
                    down_until: 0,
                    clocks_at_kill: BTreeMap::new(),
                }
            })
            .collect();
        Mesh {
            seed,
            rng: SimRng::new(seed),
            step: 0,
            regions,
            cut: [[false; 3]; 3],
            in_flight: BTreeMap::new(),
            next_payload: 1,
            produced: BTreeMap::new(),
            sequences: BTreeMap::new(),
            durable_ever: BTreeMap::new(),
            report: MeshReport::default(),
        }
    }

    fn violation(&self, message: impl AsRef<str>) -> String {
        format!(
            "mesh seed {} at step {}: {} (replay: CAUSEWAY_MESH_SEED={} {REPLAY})",
            self.seed,
            self.step,
            message.as_ref(),
            self.seed
        )
    }

    fn pick(&mut self, n: usize) -> usize {
        self.rng.below(n as u64) as usize
    }

    fn up(&self) -> Vec<usize> {
        (0..self.regions.len())
            .filter(|&i| self.regions[i].broker.is_some())
            .collect()
    }

    fn run(mut self, steps: u64) -> Result<MeshReport, String> {
        for _ in 0..steps {
            self.step += 1;
            self.fault_step()?;
            self.check_recorded_clocks()?;
        }
        self.quiesce()?;
        self.final_checks()?;
        Ok(self.report)
    }

    fn fault_step(&mut self) -> Result<(), String> {
        for i in 0..self.regions.len() {
            if self.regions[i].broker.is_none() && self.step >= self.regions[i].down_until {
                self.restart(i)?;
            }
        }
        self.deliver_due()?;
        let roll = self.rng.below(1_000);
        let up = self.up();
        if up.is_empty() {
            return Ok(());
        }
        let region = up[self.pick(up.len())];
        match roll {
            0..=399 => self.produce(region),
            400..=549 => self.sync_some(region),
            550..=899 => self.pull(region, true),
            900..=929 => self.change_topics(region),
            930..=949 => self.delete_records(region),
            950..=979 => {
                self.toggle_link();
                Ok(())
            }
            980..=989 if up.len() > 1 => self.kill(region),
            _ => Ok(()),
        }
    }

    /// What a region records of a peer's durable clock (for `causeway.min.regions` and the
    /// stable cut, hence retention and compaction) must be true of the same incarnation: never
    /// above what that peer ever held durably of it.
    fn check_recorded_clocks(&mut self) -> Result<(), String> {
        for region in self.regions.iter().filter_map(|r| r.broker.as_ref()) {
            let me = region.replication.region_id;
            for topic in region.topics.all() {
                for partition in topic.partitions() {
                    let key = (*topic.id.as_bytes(), partition.index());
                    let durable = partition.replica().durable_clock().to_deps();
                    let ever = self.durable_ever.entry((me, key)).or_default();
                    for (origin, seq) in durable {
                        ever.advance(origin, seq);
                    }
                }
            }
        }
        for (i, region) in self.regions.iter().enumerate() {
            let Some(broker) = region.broker.as_ref() else {
                continue;
            };
            for topic in broker.topics.all() {
                for partition in topic.partitions() {
                    let key = (*topic.id.as_bytes(), partition.index());
                    let replica = partition.replica();
                    for peer in &broker.replication.peers {
                        let Some(recorded) = replica.peer_clock(peer.id) else {
                            continue;
                        };
                        let held = self
                            .durable_ever
                            .get(&(peer.id, key))
                            .cloned()
                            .unwrap_or_default();
                        if !causeway_replication::delivery::dominated_by(recorded, &held) {
                            return Err(self.violation(format!(
                                "{} recorded {:?} as {}'s durable clock of {}/{}, which only ever held {:?} of that incarnation",
                                self.regions[i].name,
                                recorded.to_deps(),
                                peer.name,
                                topic.name,
                                partition.index(),
                                held.to_deps()
                            )));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn broker(&self, i: usize) -> &Broker {
        self.regions[i].broker.as_ref().expect("region up")
    }

    /// Topics a client may write to (the broker's own internal topics left out).
    fn user_topics(&self, i: usize) -> Vec<std::sync::Arc<crate::topics::Topic>> {
        let mut topics = self.broker(i).topics.all();
        topics.retain(|t| !t.name.starts_with("__"));
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        topics
    }

    /// A random partition of a random user topic of region `i`, if it hosts any.
    fn random_partition(
        &mut self,
        i: usize,
    ) -> Option<(
        std::sync::Arc<crate::topics::Topic>,
        i32,
        std::sync::Arc<crate::partition_handle::PartitionHandle>,
    )> {
        let topics = self.user_topics(i);
        if topics.is_empty() {
            return None;
        }
        let topic = topics[self.pick(topics.len())].clone();
        let index = self.pick(topic.partition_count()) as i32;
        let partition = topic.partition(index)?;
        Some((topic, index, partition))
    }

    fn produce(&mut self, i: usize) -> Result<(), String> {
        let Some((topic, index, partition)) = self.random_partition(i) else {
            return Ok(());
        };
        let payload = self.next_payload;
        self.next_payload += 1;
        let value = Bytes::from(payload.to_string());
        let records = [(Some(Bytes::from_static(b"k")), Some(value))];
        let batch = causeway_protocol::plain_batch::encode_plain_batch(&records, now_ms())
            .map_err(|e| self.violation(e))?;
        let appended = partition
            .append_local(&batch, now_ms())
            .map_err(|e| self.violation(format!("local append: {e}")))?;
        let produced = Produced {
            topic_id: *topic.id.as_bytes(),
            partition: index,
            origin: self.broker(i).replication.region_id,
            seq: appended.own_seq,
        };
        let key = (produced.topic_id, index, produced.origin, appended.own_seq);
        if let Some(earlier) = self.sequences.insert(key, payload) {
            return Err(self.violation(format!(
                "{} gave sequence {} of {}/{index} to write {payload} and to write {earlier}",
                self.regions[i].name, appended.own_seq, topic.name
            )));
        }
        self.produced.insert(payload, produced);
        self.report.produced += 1;
        Ok(())
    }

    /// Syncs one partition or, a third of the time, all of them (the flusher and the syncer).
    fn sync_some(&mut self, i: usize) -> Result<(), String> {
        let all = self.rng.chance(333_333);
        let choice = self.rng.next_u64();
        let broker = self.broker(i);
        let partitions: Vec<_> = broker
            .topics
            .all()
            .iter()
            .flat_map(|t| t.partitions())
            .collect();
        if partitions.is_empty() {
            return Ok(());
        }
        let chosen: Vec<_> = if all {
            partitions
        } else {
            vec![partitions[(choice % partitions.len() as u64) as usize].clone()]
        };
        for partition in chosen {
            partition
                .sync(&broker.replication)
                .map_err(|e| self.violation(format!("sync: {e}")))?;
        }
        Ok(())
    }

    /// Region `i` pulls from another region; the response is applied at once, or (while faults
    /// last) dropped or held back to arrive later.
    fn pull(&mut self, i: usize, faults: bool) -> Result<(), String> {
        let others: Vec<usize> = self
            .up()
            .into_iter()
            .filter(|&j| j != i && !self.cut[i][j] && !self.in_flight.contains_key(&(i, j)))
            .collect();
        if others.is_empty() {
            return Ok(());
        }
        let server = others[self.pick(others.len())];
        self.pull_from(i, server, faults)
    }

    fn pull_from(&mut self, i: usize, server: usize, faults: bool) -> Result<(), String> {
        let server_id = self.broker(server).replication.region_id;
        let request = build_request(self.broker(i), server_id, None, &HashSet::new(), None);
        let response = collect(self.broker(server), &request);
        self.report.pulls += 1;
        if faults {
            match self.rng.below(100) {
                0..=14 => {
                    self.report.dropped += 1;
                    return Ok(());
                }
                15..=44 => {
                    let deliver_at = self.step + self.rng.range(1, 40);
                    let generation = self.regions[i].generation;
                    self.in_flight.insert(
                        (i, server),
                        InFlight {
                            generation,
                            deliver_at,
                            response,
                        },
                    );
                    return Ok(());
                }
                _ => {}
            }
        }
        self.apply_response(i, server, response)
    }

    fn apply_response(
        &mut self,
        i: usize,
        server: usize,
        response: PullResponse,
    ) -> Result<(), String> {
        let server_id = region_id(self.regions[server].name);
        let hosted: BTreeMap<String, TopicId> = self
            .broker(i)
            .topics
            .all()
            .iter()
            .map(|t| (t.name.clone(), *t.id.as_bytes()))
            .collect();
        for part in &response.partitions {
            if hosted
                .get(&part.topic)
                .is_some_and(|id| *id != part.topic_id)
            {
                self.report.other_incarnation_batches += part.batches.len() as u64;
            }
        }
        let applied = apply(self.broker(i), server_id, response).map_err(|e| {
            self.violation(format!(
                "{} applying {}'s response: {e:?}",
                self.regions[i].name, self.regions[server].name
            ))
        })?;
        for (key, trouble) in &applied.troubles {
            if trouble.kind == "incarnation_mismatch" {
                self.report.incarnation_mismatches += 1;
            } else {
                return Err(self.violation(format!(
                    "{} refused {}'s batches of {}/{}: {} ({})",
                    self.regions[i].name,
                    self.regions[server].name,
                    key.0,
                    key.1,
                    trouble.kind,
                    trouble.first
                )));
            }
        }
        Ok(())
    }

    fn deliver_due(&mut self) -> Result<(), String> {
        let due: Vec<(usize, usize)> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.deliver_at <= self.step)
            .map(|(k, _)| *k)
            .collect();
        for (i, server) in due {
            let Some(flight) = self.in_flight.remove(&(i, server)) else {
                continue;
            };
            let region = &self.regions[i];
            if region.broker.is_none() || region.generation != flight.generation {
                continue; // the connection it would arrive on is gone
            }
            self.report.late += 1;
            self.apply_response(i, server, flight.response)?;
        }
        Ok(())
    }

    /// Creates a topic this region does not host; or deletes one, re-creates it at once (a new
    /// incarnation under the same name), or grows it.
    fn change_topics(&mut self, i: usize) -> Result<(), String> {
        let name = TOPICS[self.pick(TOPICS.len())];
        let partitions = self.rng.range(1, 3) as u32;
        let change = self.rng.below(3);
        let broker = self.regions[i].broker.as_ref().expect("region up");
        let create = |broker: &Broker| {
            let new = NewTopic {
                name: name.into(),
                partitions,
                configs: BTreeMap::new(),
            };
            broker.topics.create(new).map(|_| ())
        };
        let hosted = broker.topics.get(name);
        let result = match (hosted, change) {
            (None, _) => {
                self.report.created += 1;
                create(broker)
            }
            (Some(_), 0 | 1) => {
                self.report.deleted += 1;
                let deleted = broker.topics.delete(name).map(|_| ());
                if change == 1 {
                    self.report.created += 1;
                    deleted.and_then(|()| create(broker))
                } else {
                    deleted
                }
            }
            (Some(topic), _) => {
                let count = topic.partition_count() as u32 + partitions;
                if count > PARTITIONS_MAX {
                    return Ok(());
                }
                self.report.grown += 1;
                broker.topics.add_partitions(name, count, false)
            }
        };
        result.map_err(|e| self.violation(format!("changing topic {name}: {e}")))
    }

    /// DeleteRecords on one partition, to an offset at or below its end: the log start moves
    /// in this region only.
    fn delete_records(&mut self, i: usize) -> Result<(), String> {
        let Some((_, _, partition)) = self.random_partition(i) else {
            return Ok(());
        };
        let end = partition.log().log_end_offset();
        let to = self.rng.range(0, end.max(0) as u64) as i64;
        partition
            .log()
            .delete_records_before(to)
            .map_err(|e| self.violation(format!("DeleteRecords: {e}")))?;
        self.report.delete_records += 1;
        Ok(())
    }

    fn toggle_link(&mut self) {
        let a = self.pick(3);
        let b = (a + 1 + self.pick(2)) % 3;
        let cut = !self.cut[a][b];
        self.cut[a][b] = cut;
        self.cut[b][a] = cut;
        if cut {
            self.in_flight.remove(&(a, b));
            self.in_flight.remove(&(b, a));
        }
    }

    fn clocks(broker: &Broker) -> BTreeMap<PartitionKey, VectorClock> {
        let mut clocks = BTreeMap::new();
        for topic in broker.topics.all() {
            for partition in topic.partitions() {
                let clock = partition.replica().clock().clone();
                clocks.insert((*topic.id.as_bytes(), partition.index()), clock);
            }
        }
        clocks
    }

    /// `kill -9`: the broker goes without closing anything.
    fn kill(&mut self, i: usize) -> Result<(), String> {
        let broker = self.regions[i].broker.take().expect("region up");
        self.regions[i].clocks_at_kill = Self::clocks(&broker);
        drop(broker);
        self.regions[i].down_until = self.step + self.rng.range(1, 60);
        self.in_flight.retain(|(a, b), _| *a != i && *b != i);
        self.report.kills += 1;
        Ok(())
    }

    fn restart(&mut self, i: usize) -> Result<(), String> {
        let region = &mut self.regions[i];
        let broker = open_region(region.dir.path(), region.name);
        region.generation += 1;
        let before = std::mem::take(&mut region.clocks_at_kill);
        let after = Self::clocks(&broker);
        region.broker = Some(broker);
        for (key, clock) in before {
            if let Some(now) = after.get(&key) {
                if !causeway_replication::delivery::dominated_by(&clock, now) {
                    return Err(self.violation(format!(
                        "{} restarted with clock {:?} of partition {}, below {:?} before the kill",
                        self.regions[i].name,
                        now.to_deps(),
                        key.1,
                        clock.to_deps()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Heals every link, restarts every region and pulls until every region agrees.
    fn quiesce(&mut self) -> Result<(), String> {
        self.cut = [[false; 3]; 3];
        self.in_flight.clear();
        for i in 0..self.regions.len() {
            if self.regions[i].broker.is_none() {
                self.restart(i)?;
            }
        }
        for _ in 0..200 {
            self.step += 1;
            for i in 0..self.regions.len() {
                for server in 0..self.regions.len() {
                    if i != server {
                        self.pull_from(i, server, false)?;
                    }
                }
            }
            for i in 0..self.regions.len() {
                let broker = self.broker(i);
                for topic in broker.topics.all() {
                    for partition in topic.partitions() {
                        partition
                            .sync(&broker.replication)
                            .map_err(|e| self.violation(format!("sync: {e}")))?;
                    }
                }
            }
            if self.converged() {
                return Ok(());
            }
        }
        let mut state = String::new();
        for region in &self.regions {
            let broker = region.broker.as_ref().expect("up");
            let _ = write!(
                state,
                "{}: {:?}; ",
                region.name,
                Self::clocks(broker)
                    .iter()
                    .map(|(k, c)| (k.1, c.to_deps()))
                    .collect::<Vec<_>>()
            );
        }
        Err(self.violation(format!("no convergence after 200 rounds: {state}")))
    }

    /// Every topic's name, id and partition count.
    fn catalog(broker: &Broker) -> BTreeSet<(String, TopicId, usize)> {
        broker
            .topics
            .all()
            .iter()
            .map(|t| (t.name.clone(), *t.id.as_bytes(), t.partition_count()))
            .collect()
    }

    fn converged(&self) -> bool {
        let brokers: Vec<&Broker> = self
            .regions
            .iter()
            .filter_map(|r| r.broker.as_ref())
            .collect();
        let first = brokers[0];
        let settled = |b: &Broker| {
            b.topics.all().iter().flat_map(|t| t.partitions()).all(|p| {
                let replica = p.replica();
                replica.pending_len() == 0 && replica.durable_clock() == replica.clock()
            })
        };
        brokers.iter().all(|b| {
            b.catalog_digest() == first.catalog_digest()
                && Self::catalog(b) == Self::catalog(first)
                && Self::clocks(b) == Self::clocks(first)
                && settled(b)
        })
    }

    fn final_checks(&mut self) -> Result<(), String> {
        let first = Self::catalog(self.broker(0));
        for i in 1..self.regions.len() {
            if Self::catalog(self.broker(i)) != first {
                return Err(self.violation(format!(
                    "{} and {} host different topics",
                    self.regions[0].name, self.regions[i].name
                )));
            }
        }
        let mut expected: BTreeMap<PartitionKey, BTreeMap<BatchId, u64>> = BTreeMap::new();
        let live: BTreeSet<TopicId> = first.iter().map(|(_, id, _)| *id).collect();
        for (&payload, p) in &self.produced {
            if live.contains(&p.topic_id) {
                let id = BatchId {
                    origin: p.origin,
                    seq: p.seq,
                };
                expected
                    .entry((p.topic_id, p.partition))
                    .or_default()
                    .insert(id, payload);
            }
        }
        self.report.incarnations = live.len() as u64;
        for i in 0..self.regions.len() {
            let broker = self.broker(i);
            for topic in broker.topics.all() {
                let topic_id = *topic.id.as_bytes();
                for partition in topic.partitions() {
                    let key = (topic_id, partition.index());
                    let held = self.held(i, &topic, &partition)?;
                    let want = expected.remove(&key).unwrap_or_default();
                    if topic.name.starts_with("__") {
                        continue;
                    }
                    if held != want {
                        let missing: Vec<_> =
                            want.keys().filter(|k| !held.contains_key(k)).collect();
                        let extra: Vec<_> = held.keys().filter(|k| !want.contains_key(k)).collect();
                        return Err(self.violation(format!(
                            "{} holds other writes in {}/{} than were produced there: missing {missing:?}, extra {extra:?}",
                            self.regions[i].name,
                            topic.name,
                            partition.index()
                        )));
                    }
                    self.report.checked_writes += held.len() as u64;
                    expected.insert(key, want);
                }
            }
        }
        Ok(())
    }

    /// The writes region `i` holds in `partition`, by `(origin, seq)`, checking each against
    /// the write produced under that number and the log's causal order.
    fn held(
        &self,
        i: usize,
        topic: &crate::topics::Topic,
        partition: &crate::partition_handle::PartitionHandle,
    ) -> Result<BTreeMap<BatchId, u64>, String> {
        let log = partition.log();
        let batches = read_stored(log, 0, usize::MAX, usize::MAX, log.log_end_offset())
            .map_err(|e| self.violation(format!("read: {e}")))?;
        let mut clock = VectorClock::default();
        let mut held = BTreeMap::new();
        for (offset, batch) in batches {
            let meta = &batch.meta;
            let id = BatchId {
                origin: meta.origin_region,
                seq: meta.origin_seq,
            };
            let where_ = format!(
                "{} {}/{} offset {offset} ({}:{})",
                self.regions[i].name,
                topic.name,
                partition.index(),
                id.origin,
                id.seq
            );
            if clock.get(id.origin) + 1 != id.seq
                || meta.deps.iter().any(|&(o, s)| clock.get(o) < s)
            {
                return Err(self.violation(format!("{where_}: out of causal order")));
            }
            clock.advance(id.origin, id.seq);
            if topic.name.starts_with("__") {
                continue;
            }
            let payload =
                payload_of(&batch.payload).map_err(|e| self.violation(format!("{where_}: {e}")))?;
            let produced = self.produced.get(&payload);
            let here = Produced {
                topic_id: *topic.id.as_bytes(),
                partition: partition.index(),
                origin: id.origin,
                seq: id.seq,
            };
            if produced != Some(&here) {
                return Err(self.violation(format!(
                    "{where_}: write {payload} was produced as {produced:?}"
                )));
            }
            held.insert(id, payload);
        }
        Ok(held)
    }
}

/// Steps of faults per seed.
const STEPS: u64 = 400;

fn seeds() -> std::ops::Range<u64> {
    if let Some(seed) = std::env::var("CAUSEWAY_MESH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return seed..seed + 1;
    }
    let count = std::env::var("CAUSEWAY_MESH_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let from = std::env::var("CAUSEWAY_MESH_SEEDS_FROM")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    from..from + count
}

#[test]
fn regions_agree_on_every_partition_of_every_incarnation_through_topic_changes() {
    let mut total = MeshReport::default();
    let started = std::time::Instant::now();
    for seed in seeds() {
        let report = Mesh::new(seed).run(STEPS).unwrap_or_else(|v| panic!("{v}"));
        total.produced += report.produced;
        total.created += report.created;
        total.deleted += report.deleted;
        total.grown += report.grown;
        total.pulls += report.pulls;
        total.dropped += report.dropped;
        total.late += report.late;
        total.incarnation_mismatches += report.incarnation_mismatches;
        total.other_incarnation_batches += report.other_incarnation_batches;
        total.kills += report.kills;
        total.delete_records += report.delete_records;
        total.checked_writes += report.checked_writes;
        total.incarnations += report.incarnations;
    }
    eprintln!(
        "mesh simulation: {seeds:?} in {:?}: {total:?}",
        started.elapsed(),
        seeds = seeds()
    );
    assert!(
        total.deleted > 0
            && total.grown > 0
            && total.incarnation_mismatches > 0
            && total.other_incarnation_batches > 0
            && total.late > 0
            && total.kills > 0,
        "a fault never ran: {total:?}"
    );
}
