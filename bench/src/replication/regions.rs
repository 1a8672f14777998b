//! The regions a replication run measures: a mesh from `causeway-testkit` (N `causeway`
//! processes on loopback, every region a peer of every other), started with the run's binary and
//! flags under one data directory, stopped with SIGTERM and deleted at the end (unless
//! `--keep-data`), also when the run fails.

use std::fs;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use causeway_testkit::mesh::{regions_status, Mesh, MeshPlan};
use causeway_testkit::{http_get, BrokerProcess};
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::Value;

use super::ReplicationArgs;
use crate::cli::{CommonArgs, Compression};
use crate::kafka::{self, BenchContext};

/// N running regions, stopped (and their data deleted) on drop.
pub struct Regions {
    mesh: Mesh,
    root: PathBuf,
    keep_data: bool,
    stopped: bool,
}

impl Regions {
    /// Spawns every region, then waits until each is ready and every link is connected.
    pub fn start(args: &ReplicationArgs) -> Result<Regions> {
        let n = usize::try_from(args.regions)?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let parent = args.data_parent.clone().unwrap_or_else(std::env::temp_dir);
        let root = parent.join(format!(
            "causeway-bench-repl-{}-{nanos}",
            std::process::id()
        ));
        fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
        let names: Vec<String> = (1..=n).map(|i| format!("r{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut plan = MeshPlan::new(&names)?.work_root(&root);
        if let Some(binary) = &args.broker_bin {
            plan = plan.binary(binary);
        }
        for i in 0..n {
            plan = plan.args(i, &args.broker_arg);
        }
        let mesh = plan.start()?;
        let regions = Regions {
            mesh,
            root,
            keep_data: args.keep_data,
            stopped: false,
        };
        regions
            .mesh
            .wait_links_connected(Duration::from_secs(args.timeout_s.min(120)))?;
        Ok(regions)
    }

    /// How many regions run.
    pub fn len(&self) -> usize {
        self.mesh.len()
    }

    /// Name of region `i` (`r1` for 0).
    pub fn name(&self, i: usize) -> &str {
        self.mesh.name(i)
    }

    /// Region `i`'s process.
    pub fn region(&self, i: usize) -> &BrokerProcess {
        self.mesh.region(i)
    }

    /// Process id of region `i`, for its CPU and memory figures.
    pub fn pid(&self, i: usize) -> Result<u32> {
        self.region(i)
            .pid()
            .ok_or_else(|| anyhow!("region {} is not running", self.name(i)))
    }

    /// `/v1/regions` of region `i`.
    pub fn status(&self, i: usize) -> Result<Value> {
        regions_status(self.region(i))
    }

    /// `/metrics` of region `i`, if it answers.
    pub fn metrics(&self, i: usize) -> Option<String> {
        match http_get(self.region(i).http_addr(), "/metrics") {
            Ok((200, body)) => Some(body),
            _ => None,
        }
    }

    /// Every region's `/v1/regions`, for a failure report.
    pub fn diagnostics(&self) -> String {
        self.mesh.diagnostics()
    }

    /// SIGTERM to every region, waiting for each (SIGKILL after the harness's shutdown timeout);
    /// deletes the data unless `--keep-data`. Returns notes about anything unusual.
    pub fn stop(&mut self) -> Vec<String> {
        if self.stopped {
            return Vec::new();
        }
        self.stopped = true;
        let mut notes = Vec::new();
        for i in 0..self.mesh.len() {
            let name = self.mesh.name(i).to_string();
            let region = self.mesh.region_mut(i);
            match region.terminate() {
                Ok(status) if status.success() => {}
                Ok(status) => notes.push(format!(
                    "note: region {name} exited with {status} after SIGTERM (log {})",
                    region.log_path().display()
                )),
                Err(e) => notes.push(format!("note: region {name}: {e:#}")),
            }
        }
        if self.keep_data {
            notes.push(format!("data and logs kept in {}", self.root.display()));
        } else if let Err(e) = fs::remove_dir_all(&self.root) {
            notes.push(format!("note: cannot delete {}: {e}", self.root.display()));
        }
        notes
    }
}

impl Drop for Regions {
    fn drop(&mut self) {
        for note in self.stop() {
            eprintln!("{note}");
        }
    }
}

/// The client options of the other modes, aimed at region `i`.
pub fn common_for(
    args: &ReplicationArgs,
    regions: &Regions,
    i: usize,
    partitions: i32,
    record_bytes: u64,
) -> CommonArgs {
    CommonArgs {
        brokers: regions.region(i).bootstrap(),
        topic: args.topic.clone(),
        partitions,
        replication_factor: 1,
        record_bytes,
        linger_ms: args.linger_ms,
        producer: args.producer.clone(),
        compression: Compression::None,
        rdkafka: args.rdkafka.clone(),
        broker_pid: None,
        connect_timeout_s: args.timeout_s.min(120),
        json: args.json,
    }
}

/// A librdkafka consumer of region `i`.
pub fn consumer_in(
    args: &ReplicationArgs,
    regions: &Regions,
    i: usize,
    partitions: i32,
    record_bytes: u64,
) -> Result<BaseConsumer<BenchContext>> {
    kafka::consumer_config(&common_for(args, regions, i, partitions, record_bytes))
        .create_with_context(BenchContext::default())
        .context("cannot create the librdkafka consumer (check -X properties)")
}

/// Creates the topic in region 1 and waits until every region's metadata shows it with
/// `partitions` partitions, each with a leader.
pub fn create_topic_everywhere(
    args: &ReplicationArgs,
    regions: &Regions,
    partitions: i32,
    record_bytes: u64,
) -> Result<()> {
    let first = common_for(args, regions, 0, partitions, record_bytes);
    let admin_producer =
        kafka::create_producer(&kafka::producer_config(&first, 0, Duration::from_secs(30)))?;
    kafka::wait_for_cluster(&admin_producer, &first.brokers, Duration::from_secs(30))?;
    let count = kafka::ensure_topic(&admin_producer, &first, true)?;
    if count != partitions {
        bail!(
            "topic '{}' has {count} partitions in {}, expected {partitions} (use a fresh topic name)",
            args.topic,
            regions.name(0)
        );
    }
    let deadline = Instant::now() + Duration::from_secs(args.timeout_s.min(120));
    for i in 1..regions.len() {
        let consumer = consumer_in(args, regions, i, partitions, record_bytes)?;
        loop {
            // Metadata for all topics: asking for this one could auto-create it.
            let seen = consumer
                .fetch_metadata(None, Duration::from_secs(5))
                .ok()
                .and_then(|m| {
                    m.topics().iter().find(|t| t.name() == args.topic).map(|t| {
                        (
                            t.partitions().len(),
                            t.partitions()
                                .iter()
                                .all(|p| p.error().is_none() && p.leader() >= 0),
                        )
                    })
                });
            match seen {
                Some((n, true)) if n == usize::try_from(partitions)? => break,
                _ if Instant::now() >= deadline => bail!(
                    "topic '{}' not visible with {partitions} partitions in region {} (saw {seen:?})",
                    args.topic,
                    regions.name(i)
                ),
                _ => thread::sleep(Duration::from_millis(50)),
            }
        }
    }
    Ok(())
}
