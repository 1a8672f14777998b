//! `causeway meta rebuild`: rebuilds the metadata database (`<data-dir>/meta`, RocksDB) of a
//! stopped broker from what lies next to the data, when `meta/` is lost or corrupt.
//!
//! It works offline and refuses to run while a process holds the data dir lock
//! (`broker.lock`, `causeway_storage::data_dir`). It builds the new catalog in `meta.rebuilding`
//! and only then moves the old `meta/` aside to `meta.damaged-<unix ms>` (never deleting it) and
//! the new one into place, so an interrupted rebuild leaves the old `meta/` where it was (or no
//! `meta/`, which a broker refuses to start on; run the rebuild again).
//!
//! What it restores, and from where:
//! - every topic with a directory under `topics/`: from its sidecar (`topic.json` in partition
//!   0: topic id, partition count, configs, creation time, replicated catalog state); a topic
//!   without a readable sidecar (written by an older version, or damaged) gets the partition
//!   count found on disk, default configs and a new topic id, and is reported as such;
//! - the region binding: `--region`, which must agree with the sidecars, else the sidecars'
//!   region, else the old catalog's if it still opens read-only, else `local` (the default);
//! - the producer-id counter: past every producer id of this region found in any partition's
//!   batches or producer snapshot, plus [`PRODUCER_ID_MARGIN`] for ids handed out but never
//!   written, and never below what the old catalog still says if it opens read-only;
//! - open transactions: the coordinator records (keyed by transactional id, which no log holds)
//!   are lost. For each producer whose transaction is still open in some partition, a record
//!   `causeway-rebuild-<producer id>` is written in state Ongoing with a 1 ms timeout, so the
//!   broker's own timeout check aborts it (epoch bumped, abort markers written) within a second
//!   of the next start; otherwise those partitions' last stable offset would stay stuck and
//!   read_committed consumers would wait forever.
//!
//! Committed offsets live in `groups/` and table rows in `tables/`, not in `meta/`: they are
//! untouched.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use causeway_replication::region::region_id;
use causeway_replication::{CatalogStamp, HybridClock, TopicCatalog, TopicState};
use causeway_storage::{
    partition_dirs, scan_partition, Catalog, DataDirLock, PartitionDir, PartitionScan, TopicRecord,
    TopicSidecar,
};
use clap::Subcommand;

use crate::producer_ids::{counter_of, BLOCK};
use crate::topics::validate_topic_name;
use crate::transactions::{TxnRecord, TxnState};
use crate::wall_clock::now_ms;

/// Producer-id counters skipped past the highest one found in the logs: ids handed out to
/// producers that never wrote (or whose batches retention already deleted) are not in any log,
/// and a rebuilt broker must not hand them out again. A thousand reservation blocks; the counter
/// space of a region is 2^40.
pub const PRODUCER_ID_MARGIN: u64 = 1_000 * BLOCK;

/// Timeout given to the transaction records written for open transactions: the broker aborts
/// them at its first timeout check after the start.
const REBUILT_TRANSACTION_TIMEOUT_MS: i32 = 1;

/// Region a data dir is bound to when nothing says otherwise (the broker's `--region` default).
const DEFAULT_REGION: &str = "local";

/// Offline maintenance of the metadata database.
#[derive(Debug, Subcommand)]
pub enum MetaCommand {
    /// Rebuild `<data-dir>/meta` from the topic directories of a STOPPED broker; the old
    /// `meta/` is moved to `meta.damaged-<unix ms>`, never deleted.
    Rebuild {
        /// The broker's data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// The region the data dir belongs to (the broker's `--region`); read from the topic
        /// sidecars when omitted.
        #[arg(long)]
        region: Option<String>,
    },
}

/// Runs a meta command: exit 0 on success, 1 on failure, 2 on a usage error.
pub fn run(command: MetaCommand) -> ExitCode {
    let MetaCommand::Rebuild { data_dir, region } = command;
    if !data_dir.is_dir() {
        eprintln!(
            "error: --data-dir {}: not a directory (pass the broker's data dir)",
            data_dir.display()
        );
        return ExitCode::from(2);
    }
    match rebuild(&data_dir, region.as_deref(), &mut |line| {
        eprintln!("{line}")
    }) {
        Ok(report) => {
            print!("{}", report.render());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// How one topic came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicSource {
    /// From its sidecar: same id, configs and partition count.
    Sidecar,
    /// No readable sidecar (the reason): new id, default configs, partitions found on disk.
    NoSidecar(String),
}

/// One rebuilt topic.
#[derive(Debug, Clone)]
pub struct RebuiltTopic {
    /// The record written to the new catalog.
    pub record: TopicRecord,
    /// Where it came from.
    pub source: TopicSource,
    /// Partition indexes below the partition count with no directory on disk (the broker
    /// creates them empty).
    pub missing_partitions: Vec<u32>,
    /// Batches found in its partitions.
    pub batches: u64,
}

/// What a rebuild did, for the operator.
#[derive(Debug, Clone, Default)]
pub struct RebuildReport {
    /// Where the old `meta/` went, if there was one.
    pub moved_aside: Option<PathBuf>,
    /// The region bound, `(name, id)`.
    pub region: (String, u32),
    /// Every topic, by name.
    pub topics: Vec<RebuiltTopic>,
    /// Entries under `topics/` that are not partition directories, or whose name is not a
    /// valid topic name: left alone.
    pub ignored: Vec<String>,
    /// The producer-id counter set (the next id handed out is this counter in this region).
    pub producer_id_counter: u64,
    /// The highest producer-id counter of this region found in the logs.
    pub highest_counter_in_logs: Option<u64>,
    /// What the old catalog still said of the counter, if it opened read-only.
    pub salvaged_counter: Option<u64>,
    /// Transaction records written for open transactions: (record key, producer id, partitions).
    pub open_transactions: Vec<(String, i64, usize)>,
    /// Producer ids of other regions with open transactions here (their own coordinators end
    /// them).
    pub foreign_open_transactions: usize,
    /// Partitions and bytes scanned, and how long it took.
    pub partitions_scanned: usize,
    /// Bytes of log scanned.
    pub bytes_scanned: u64,
    /// Wall time of the scan and rebuild.
    pub elapsed_ms: u128,
}

impl RebuildReport {
    /// The report as printed on stdout.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "meta/ rebuilt for region {} (id {})",
            self.region.0, self.region.1
        );
        match &self.moved_aside {
            Some(path) => {
                let _ = writeln!(out, "old meta/ moved to {} (not deleted)", path.display());
            }
            None => {
                let _ = writeln!(out, "there was no old meta/");
            }
        }
        let _ = writeln!(
            out,
            "scanned {} partitions, {} bytes of log in {} ms",
            self.partitions_scanned, self.bytes_scanned, self.elapsed_ms
        );
        let _ = writeln!(
            out,
            "\n{:<32} {:>10} {:>10}  {:<32} SOURCE",
            "TOPIC", "PARTITIONS", "BATCHES", "TOPIC ID"
        );
        for topic in &self.topics {
            let source = match &topic.source {
                TopicSource::Sidecar => "sidecar".to_string(),
                TopicSource::NoSidecar(why) => {
                    format!("NO SIDECAR ({why}): new topic id, default configs")
                }
            };
            let _ = writeln!(
                out,
                "{:<32} {:>10} {:>10}  {:<32} {source}",
                topic.record.name,
                topic.record.partitions,
                topic.batches,
                uuid::Uuid::from_bytes(topic.record.id).simple()
            );
            if !topic.record.configs.is_empty() {
                let configs: Vec<String> = topic
                    .record
                    .configs
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                let _ = writeln!(out, "    configs: {}", configs.join(", "));
            }
            if !topic.missing_partitions.is_empty() {
                let _ = writeln!(
                    out,
                    "    partitions {:?} have no directory: the broker creates them empty",
                    topic.missing_partitions
                );
            }
        }
        for name in &self.ignored {
            let _ = writeln!(
                out,
                "ignored topics/{name}: not a partition directory of a valid topic"
            );
        }
        let _ = writeln!(
            out,
            "\nproducer ids: counter set to {} (highest in the logs: {}; old catalog: {}; margin {})",
            self.producer_id_counter,
            self.highest_counter_in_logs
                .map_or_else(|| "none".to_string(), |c| c.to_string()),
            self.salvaged_counter
                .map_or_else(|| "unreadable".to_string(), |c| c.to_string()),
            PRODUCER_ID_MARGIN
        );
        let _ = writeln!(
            out,
            "\nNOT RECOVERED: transaction coordinator records (transactional id -> producer id \
             and epoch). Transactional producers must call initTransactions again; they get new \
             producer ids."
        );
        for (key, producer_id, partitions) in &self.open_transactions {
            let _ = writeln!(
                out,
                "  open transaction of producer {producer_id} in {partitions} partition(s): \
                 recorded as {key}, aborted by the broker at its next start"
            );
        }
        if self.foreign_open_transactions > 0 {
            let _ = writeln!(
                out,
                "  {} open transaction(s) of other regions' producers are left to their regions",
                self.foreign_open_transactions
            );
        }
        let _ = writeln!(
            out,
            "Untouched: committed offsets (groups/) and table rows (tables/) do not live in meta/."
        );
        out
    }
}

/// A topic as found on disk before it is rebuilt.
struct FoundTopic {
    partitions: Vec<PartitionDir>,
    sidecar: Result<TopicSidecar, String>,
}

/// Rebuilds `data_dir/meta`; `progress` gets one line per step and per long scan.
pub fn rebuild(
    data_dir: &Path,
    region: Option<&str>,
    progress: &mut dyn FnMut(String),
) -> anyhow::Result<RebuildReport> {
    let started = Instant::now();
    let _lock = DataDirLock::acquire(data_dir).context(
        "the data dir is in use: stop the broker (or the other rebuild) before rebuilding meta/",
    )?;
    let mut report = RebuildReport::default();
    let meta = data_dir.join("meta");
    let (dirs, ignored) = partition_dirs(&data_dir.join("topics"))?;
    report.ignored = ignored;
    let mut found: BTreeMap<String, FoundTopic> = BTreeMap::new();
    for dir in dirs {
        if validate_topic_name(&dir.topic).is_err() {
            report.ignored.push(dir.path.display().to_string());
            continue;
        }
        found
            .entry(dir.topic.clone())
            .or_insert_with(|| FoundTopic {
                partitions: Vec::new(),
                sidecar: Err("no partition 0 directory".into()),
            })
            .partitions
            .push(dir);
    }
    for (name, topic) in &mut found {
        if let Some(zero) = topic.partitions.iter().find(|p| p.index == 0) {
            topic.sidecar = match TopicSidecar::read(&zero.path) {
                Ok(Some(sidecar)) if sidecar.record.name == *name => Ok(sidecar),
                Ok(Some(sidecar)) => Err(format!("sidecar names topic {:?}", sidecar.record.name)),
                Ok(None) => Err("none written".into()),
                Err(error) => Err(error.to_string()),
            };
        }
    }
    progress(format!(
        "found {} topics in {} partition directories",
        found.len(),
        found.values().map(|t| t.partitions.len()).sum::<usize>()
    ));

    let old = meta
        .join("CURRENT")
        .exists()
        .then(|| Catalog::open_read_only(&meta));
    let (salvaged_region, salvaged_counter) = match old {
        Some(Ok(catalog)) => (
            catalog.region().ok().flatten(),
            catalog.producer_ids_reserved().ok(),
        ),
        Some(Err(error)) => {
            progress(format!("the old meta/ does not open read-only: {error}"));
            (None, None)
        }
        None => (None, None),
    };
    report.salvaged_counter = salvaged_counter;
    report.region = choose_region(region, &found, salvaged_region)?;
    let (region_name, region) = report.region.clone();

    // Scan every partition: producer ids and open transactions.
    let total: usize = found.values().map(|t| t.partitions.len()).sum();
    let mut highest: Option<u64> = None;
    let mut open: BTreeMap<i64, (i16, BTreeSet<(String, i32)>)> = BTreeMap::new();
    let mut batches: BTreeMap<String, u64> = BTreeMap::new();
    let mut done = 0;
    for (name, topic) in &found {
        for partition in &topic.partitions {
            done += 1;
            let label = format!("{name}-{}", partition.index);
            let scan: PartitionScan = scan_partition(&partition.path, &mut |bytes| {
                progress(format!("  scanning {label}: {} MiB so far", bytes >> 20))
            })
            .with_context(|| format!("scanning {}", partition.path.display()))?;
            progress(format!(
                "[{done}/{total}] scanned {label}: {} segments, {} batches, {} bytes, {} producers",
                scan.segments,
                scan.batches,
                scan.bytes,
                scan.producer_epochs.len()
            ));
            report.partitions_scanned += 1;
            report.bytes_scanned += scan.bytes;
            *batches.entry(name.clone()).or_default() += scan.batches;
            for &id in scan.producer_epochs.keys() {
                if let Some(counter) = counter_of(region, id) {
                    highest = highest.max(Some(counter));
                }
            }
            for txn in &scan.open_transactions {
                if counter_of(region, txn.producer_id).is_none() {
                    report.foreign_open_transactions += 1;
                    continue;
                }
                let entry = open.entry(txn.producer_id).or_default();
                entry.0 = entry.0.max(txn.epoch);
                let index = i32::try_from(partition.index).unwrap_or(i32::MAX);
                entry.1.insert((name.clone(), index));
            }
        }
    }
    report.highest_counter_in_logs = highest;
    let past_logs = highest.map_or(0, |c| (c / BLOCK + 1) * BLOCK) + PRODUCER_ID_MARGIN;
    report.producer_id_counter = past_logs.max(salvaged_counter.unwrap_or(0));

    // Build the new catalog beside the old one.
    let building = data_dir.join("meta.rebuilding");
    if building.exists() {
        std::fs::remove_dir_all(&building)
            .with_context(|| format!("removing an earlier attempt's {}", building.display()))?;
    }
    {
        let catalog = Catalog::open(&building)?;
        catalog.bind_region(&region_name, region)?;
        let newest = found
            .values()
            .filter_map(|t| t.sidecar.as_ref().ok())
            .filter_map(|s| TopicState::decode(&s.catalog_state).ok())
            .filter_map(|s| s.max_stamp())
            .map(|s| s.hlc)
            .max()
            .unwrap_or(0);
        let mut clock = HybridClock::resume(newest);
        for (name, topic) in found {
            let on_disk = topic
                .partitions
                .iter()
                .map(|p| p.index + 1)
                .max()
                .unwrap_or(1);
            let wall = u64::try_from(now_ms()).unwrap_or(0);
            let mut stamp = || CatalogStamp::new(clock.tick(wall), region);
            let (state, created_ms, source) = match topic.sidecar {
                Ok(sidecar) => match restore_state(&name, &sidecar, on_disk, &mut stamp) {
                    Ok(state) => (state, sidecar.record.created_ms, TopicSource::Sidecar),
                    Err(why) => {
                        let state = fresh_state(&name, on_disk, &mut stamp)?;
                        (
                            state,
                            sidecar.record.created_ms,
                            TopicSource::NoSidecar(why),
                        )
                    }
                },
                Err(why) => (
                    fresh_state(&name, on_disk, &mut stamp)?,
                    now_ms(),
                    TopicSource::NoSidecar(why),
                ),
            };
            let Some(view) = state.view(&name) else {
                bail!("topic {name}: the rebuilt catalog state is not alive");
            };
            let record = TopicRecord {
                name: name.clone(),
                id: view.topic_id,
                partitions: view.partitions,
                configs: view.configs,
                created_ms,
            };
            let encoded = state.encode();
            let sidecar = TopicSidecar {
                record: record.clone(),
                region: region_name.clone(),
                region_id: region,
                catalog_state: encoded.clone(),
            };
            let zero = data_dir.join("topics").join(format!("{name}-0"));
            sidecar.write(&zero)?;
            catalog.put_topic_state(&name, &encoded, Some(&record))?;
            let present: BTreeSet<u32> = topic.partitions.iter().map(|p| p.index).collect();
            report.topics.push(RebuiltTopic {
                missing_partitions: (0..record.partitions)
                    .filter(|i| !present.contains(i))
                    .collect(),
                batches: batches.get(&name).copied().unwrap_or(0),
                record,
                source,
            });
        }
        catalog.reserve_producer_ids_below(report.producer_id_counter)?;
        let now = now_ms();
        for (producer_id, (epoch, partitions)) in open {
            let key = format!("causeway-rebuild-{producer_id}");
            let mut record = TxnRecord::new(producer_id, REBUILT_TRANSACTION_TIMEOUT_MS, now);
            record.epoch = epoch;
            record.state = TxnState::Ongoing;
            record.started_ms = now;
            report
                .open_transactions
                .push((key.clone(), producer_id, partitions.len()));
            record.partitions = partitions;
            let bytes = serde_json::to_vec(&record).context("encoding a transaction record")?;
            catalog.put_transaction(&key, &bytes)?;
        }
    }

    // Swap: the old meta/ aside, the new one in.
    if meta.exists() {
        let aside = data_dir.join(format!("meta.damaged-{}", now_ms()));
        std::fs::rename(&meta, &aside)
            .with_context(|| format!("moving {} to {}", meta.display(), aside.display()))?;
        report.moved_aside = Some(aside);
    }
    std::fs::rename(&building, &meta)
        .with_context(|| format!("moving {} to {}", building.display(), meta.display()))?;
    std::fs::File::open(data_dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("fsyncing {}", data_dir.display()))?;
    report.elapsed_ms = started.elapsed().as_millis();
    Ok(report)
}

/// The region to bind: `--region` if given (it must match the sidecars), else the one the
/// sidecars name, else the old catalog's, else the broker's default.
fn choose_region(
    given: Option<&str>,
    found: &BTreeMap<String, FoundTopic>,
    salvaged: Option<(String, u32)>,
) -> anyhow::Result<(String, u32)> {
    let named: BTreeSet<(String, u32)> = found
        .values()
        .filter_map(|t| t.sidecar.as_ref().ok())
        .map(|s| (s.region.clone(), s.region_id))
        .collect();
    if named.len() > 1 {
        bail!("the topic sidecars name more than one region ({named:?}): this data dir was served as several regions; rebuild refused");
    }
    let from_data = named.into_iter().next().or(salvaged);
    match (given, from_data) {
        (Some(name), Some((bound, id))) if name != bound || region_id(name) != id => bail!(
            "--region {name}, but this data dir belongs to region {bound:?} (id {id}): pass --region {bound}"
        ),
        (Some(name), _) => Ok((name.to_string(), region_id(name))),
        (None, Some(bound)) => Ok(bound),
        (None, None) => Ok((DEFAULT_REGION.to_string(), region_id(DEFAULT_REGION))),
    }
}

/// The sidecar's catalog state, checked against the sidecar's topic id and grown to the
/// partitions found on disk; `Err` says why it cannot be used.
fn restore_state(
    name: &str,
    sidecar: &TopicSidecar,
    on_disk: u32,
    stamp: &mut dyn FnMut() -> CatalogStamp,
) -> Result<TopicState, String> {
    let state = TopicState::decode(&sidecar.catalog_state)
        .map_err(|e| format!("sidecar catalog state unreadable: {e}"))?;
    let view = state
        .view(name)
        .ok_or_else(|| "sidecar catalog state says the topic is deleted".to_string())?;
    if view.topic_id != sidecar.record.id {
        return Err("sidecar catalog state disagrees with its topic id".into());
    }
    if view.partitions >= on_disk {
        return Ok(state);
    }
    let mut catalog = TopicCatalog::new();
    catalog.merge_topic(name, &state);
    catalog
        .add_partitions(name, on_disk, stamp())
        .map_err(|e| format!("growing to the {on_disk} partitions on disk: {e}"))?;
    catalog
        .topic(name)
        .cloned()
        .ok_or_else(|| "catalog state vanished".to_string())
}

/// A new create of `name` with `partitions` partitions and default configs.
fn fresh_state(
    name: &str,
    partitions: u32,
    stamp: &mut dyn FnMut() -> CatalogStamp,
) -> anyhow::Result<TopicState> {
    let mut catalog = TopicCatalog::new();
    catalog
        .create(name, partitions, BTreeMap::new(), stamp())
        .with_context(|| format!("entering topic {name}"))?;
    catalog
        .topic(name)
        .cloned()
        .with_context(|| format!("topic {name} missing from its own catalog"))
}
