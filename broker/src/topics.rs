//! The topics this region hosts: the catalog in RocksDB plus, for each topic, its open partition
//! logs. Every change to the set of topics, their partition counts or their configs goes
//! through [`Topics`], which keeps the catalog and the open logs in step.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use causeway_replication::crdt::MERGE_CONFIG;
use causeway_replication::delivery::{ReplicaConfig, ReplicaError};
use causeway_replication::topic_catalog::MAX_TOPIC_NAME_LEN;
use causeway_replication::{CatalogError, CatalogStamp, HybridClock, TopicCatalog, TopicState};
use causeway_storage::{
    log_config_from, remove_partition_dir, validate_topic_config, validate_topic_config_set,
    Catalog, LogConfig, Partition, StorageError, TopicRecord, TopicSidecar,
};
use dashmap::DashMap;
use uuid::Uuid;

use crate::metrics;
pub use crate::partition_handle::PartitionHandle;
use crate::tables::merge_mode;
use crate::wall_clock::now_ms;

/// Why a topic operation was refused; each maps to one Kafka error code.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    /// The name is taken.
    #[error("topic {0} already exists")]
    AlreadyExists(String),
    /// No such topic.
    #[error("topic {0} does not exist")]
    Unknown(String),
    /// The name breaks Kafka's rules.
    #[error("invalid topic name {0:?}: use 1 to {max} of [a-zA-Z0-9._-], not . or ..", max = causeway_replication::topic_catalog::MAX_TOPIC_NAME_LEN)]
    InvalidName(String),
    /// A partition count that is not positive or does not grow.
    #[error("{0}")]
    InvalidPartitions(String),
    /// A replica assignment this region cannot follow (partition indexes out of order, a broker
    /// other than this one).
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    /// Fields of a request that contradict each other.
    #[error("{0}")]
    InvalidRequest(String),
    /// A config name or value we refuse.
    #[error("{0}")]
    InvalidConfig(String),
    /// The request would create more partitions than one request may
    /// (`--max-partitions-per-request`); a later request may.
    #[error("{0}")]
    RequestQuota(String),
    /// The disk or the catalog failed.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// A partition's replica could not start over its log.
    #[error("replica: {0}")]
    Replica(#[from] ReplicaError),
}

/// A topic and its open partitions.
pub struct Topic {
    /// Name.
    pub name: String,
    /// Stable id, given to clients from Metadata v10.
    pub id: Uuid,
    record: RwLock<TopicRecord>,
    config: RwLock<LogConfig>,
    partitions: RwLock<Vec<Arc<PartitionHandle>>>,
}

impl Topic {
    /// The log config in force (overrides applied to the broker defaults).
    pub fn log_config(&self) -> LogConfig {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Partition `index`, if it exists.
    pub fn partition(&self, index: i32) -> Option<Arc<PartitionHandle>> {
        let partitions = self.partitions.read().unwrap_or_else(|e| e.into_inner());
        usize::try_from(index)
            .ok()
            .and_then(|i| partitions.get(i).cloned())
    }

    /// Every partition, in index order.
    pub fn partitions(&self) -> Vec<Arc<PartitionHandle>> {
        self.partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Number of partitions.
    pub fn partition_count(&self) -> usize {
        self.partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// A copy of the topic's catalog record, to edit and store.
    fn record(&self) -> TopicRecord {
        self.record
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The topic's config overrides (configs not listed take their defaults).
    pub fn overrides(&self) -> BTreeMap<String, String> {
        self.record
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .configs
            .clone()
    }
}

/// What a new topic looks like.
#[derive(Debug, Clone)]
pub struct NewTopic {
    /// Name.
    pub name: String,
    /// Partition count (at least 1).
    pub partitions: u32,
    /// Config overrides.
    pub configs: BTreeMap<String, String>,
}

/// All topics of this region.
pub struct Topics {
    catalog: Catalog,
    topics_dir: PathBuf,
    /// This region's name, written into every topic sidecar.
    region_name: String,
    base_config: LogConfig,
    replica_config: ReplicaConfig,
    /// Bounds on partitions: per broker, per topic, per request.
    limits: PartitionLimits,
    by_name: DashMap<String, Arc<Topic>>,
    /// The replicated catalog; its lock serialises changes so that the catalog, the stored
    /// records and the open logs never disagree.
    changes: Mutex<Replicated>,
}

/// The replicated topic catalog (DESIGN.md: the catalog is replicated as CRDT operations) and
/// the clock that stamps this region's changes to it.
struct Replicated {
    catalog: TopicCatalog,
    clock: HybridClock,
    region: u32,
}

impl Replicated {
    fn stamp(&mut self) -> CatalogStamp {
        let wall = u64::try_from(now_ms()).unwrap_or(0);
        CatalogStamp::new(self.clock.tick(wall), self.region)
    }
}

fn catalog_error(error: CatalogError) -> TopicError {
    match error {
        CatalogError::AlreadyExists(name) => TopicError::AlreadyExists(name),
        CatalogError::UnknownTopic(name) => TopicError::Unknown(name),
        CatalogError::InvalidPartitions { requested, current } => TopicError::InvalidPartitions(
            format!("partition count {requested} is invalid (current {current}); it must grow"),
        ),
        CatalogError::TooLong { .. } => TopicError::InvalidConfig(error.to_string()),
        other => TopicError::Storage(StorageError::Corrupt(format!("topic catalog: {other}"))),
    }
}

impl Topics {
    /// Opens the catalog and every partition it lists, recovering each log, and writes each
    /// topic's sidecar if it is missing or out of date. `region_name` is the region the data dir
    /// is bound to.
    pub fn open(
        catalog: Catalog,
        data_dir: &Path,
        region_name: &str,
        base_config: LogConfig,
        replica_config: ReplicaConfig,
        limits: PartitionLimits,
    ) -> Result<Topics, TopicError> {
        let topics_dir = data_dir.join("topics");
        std::fs::create_dir_all(&topics_dir).map_err(|source| StorageError::Io {
            context: format!("creating {}", topics_dir.display()),
            source,
        })?;
        let mut replicated = Replicated {
            catalog: TopicCatalog::new(),
            clock: HybridClock::resume(0),
            region: replica_config.region,
        };
        for (name, bytes) in catalog.topic_states()? {
            let state = TopicState::decode(&bytes).map_err(catalog_error)?;
            replicated.catalog.merge_topic(&name, &state);
        }
        let newest = replicated.catalog.max_stamp().map_or(0, |s| s.hlc);
        replicated.clock = HybridClock::resume(newest);
        let records = catalog.topics()?;
        let topics = Topics {
            catalog,
            topics_dir,
            region_name: region_name.to_string(),
            base_config,
            replica_config,
            limits,
            by_name: DashMap::new(),
            changes: Mutex::new(replicated),
        };
        let mut replicated = topics.lock_changes();
        for record in &records {
            if replicated.catalog.topic(&record.name).is_none() {
                // Hosted before the catalog was replicated: enter it as a create made here.
                let stamp = replicated.stamp();
                replicated
                    .catalog
                    .create(
                        &record.name,
                        record.partitions,
                        record.configs.clone(),
                        stamp,
                    )
                    .map_err(catalog_error)?;
            }
        }
        let mut names: Vec<String> = records.iter().map(|r| r.name.clone()).collect();
        names.extend(replicated.catalog.alive().map(|(name, _)| name.to_string()));
        names.sort();
        names.dedup();
        let total = names.len();
        for (done, name) in names.iter().enumerate() {
            topics.reconcile(&replicated.catalog, name)?;
            if let Some(topic) = topics.get(name) {
                tracing::info!(
                    topic = %topic.name,
                    partitions = topic.partition_count(),
                    progress = format!("{}/{}", done + 1, total),
                    "opened topic"
                );
            }
        }
        drop(replicated);
        let partitions: Vec<_> = topics.by_name.iter().flat_map(|t| t.partitions()).collect();
        let recovered = partitions
            .iter()
            .filter(|p| !p.log().opened_cleanly())
            .count();
        tracing::info!(
            partitions = partitions.len(),
            recovered,
            "opened {} partitions, {recovered} needed a recovery scan",
            partitions.len()
        );
        crate::metrics::storage_partitions_recovered(recovered);
        Ok(topics)
    }

    /// The catalog, for other stores that share the metadata database.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Topic by name.
    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.by_name.get(name).map(|t| t.clone())
    }

    /// Topic by name, or `TopicError::Unknown`.
    fn existing(&self, name: &str) -> Result<Arc<Topic>, TopicError> {
        self.get(name)
            .ok_or_else(|| TopicError::Unknown(name.to_string()))
    }

    /// Topic by id.
    pub fn get_by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        self.by_name.iter().find(|t| t.id == id).map(|t| t.clone())
    }

    /// Every topic, sorted by name.
    pub fn all(&self) -> Vec<Arc<Topic>> {
        let mut all: Vec<_> = self.by_name.iter().map(|t| t.clone()).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// The log config a topic with these overrides gets.
    pub fn log_config(&self, overrides: &BTreeMap<String, String>) -> LogConfig {
        log_config_from(overrides, &self.base_config)
    }

    /// Refuses `more` partitions that would take the broker past `--max-partitions`: every
    /// partition holds open files and memory, and a catalog that cannot be opened again would
    /// keep the broker (and every peer that merges it) from restarting.
    fn check_room_for(&self, more: u32) -> Result<(), TopicError> {
        let hosted: usize = self.by_name.iter().map(|t| t.partition_count()).sum();
        let after = hosted as u64 + u64::from(more);
        if after > u64::from(self.limits.broker) {
            return Err(TopicError::InvalidPartitions(format!(
                "{more} more partitions would make {after}, over this broker's limit of {} (--max-partitions)",
                self.limits.broker
            )));
        }
        Ok(())
    }

    /// Refuses a topic of `partitions` past `--max-partitions-per-topic`.
    fn check_topic_size(&self, partitions: u32) -> Result<(), TopicError> {
        if partitions > self.limits.topic {
            return Err(TopicError::InvalidPartitions(format!(
                "{partitions} partitions is over the limit of {} for one topic (--max-partitions-per-topic)",
                self.limits.topic
            )));
        }
        Ok(())
    }

    /// What one request may create: each request that can create or grow topics takes new
    /// partitions from its own allowance of `--max-partitions-per-request`.
    pub fn allowance(&self) -> PartitionAllowance {
        PartitionAllowance(Cell::new(self.limits.request))
    }

    /// Checks a new topic without creating it (CreateTopics validate_only).
    pub fn validate_new(&self, new: &NewTopic) -> Result<(), TopicError> {
        validate_topic_name(&new.name)?;
        if new.partitions == 0 {
            return Err(TopicError::InvalidPartitions(
                "number of partitions must be at least 1".into(),
            ));
        }
        self.check_topic_size(new.partitions)?;
        self.check_room_for(new.partitions)?;
        validate_configs(&new.configs, self.replica_config.regions.len())?;
        if self.by_name.contains_key(&new.name) {
            return Err(TopicError::AlreadyExists(new.name.clone()));
        }
        Ok(())
    }

    /// Creates a topic: catalog first, then its partition directories. Peers learn of it through
    /// the replicated catalog.
    pub fn create(&self, new: NewTopic) -> Result<Arc<Topic>, TopicError> {
        let mut replicated = self.lock_changes();
        self.validate_new(&new)?;
        self.apply(&mut replicated, &new.name, |r| {
            let stamp = r.stamp();
            r.catalog
                .create(&new.name, new.partitions, new.configs, stamp)
                .map_err(catalog_error)?;
            Ok(true)
        })?;
        let topic = self.existing(&new.name)?;
        tracing::info!(topic = %topic.name, partitions = topic.partition_count(), "created topic");
        Ok(topic)
    }

    /// Returns the topic, creating it with `partitions` (taken from a request's `allowance`) if
    /// it does not exist yet: auto-creation by Metadata and Produce.
    pub fn create_within(
        &self,
        name: &str,
        partitions: u32,
        allowance: &PartitionAllowance,
    ) -> Result<Arc<Topic>, TopicError> {
        if let Some(topic) = self.get(name) {
            return Ok(topic);
        }
        let new = NewTopic {
            name: name.to_string(),
            partitions,
            configs: BTreeMap::new(),
        };
        let created = self
            .validate_new(&new)
            .and_then(|()| allowance.take(partitions))
            .and_then(|()| self.create(new));
        match created {
            Err(TopicError::AlreadyExists(_)) => self.existing(name),
            other => other,
        }
    }

    /// Deletes a topic: out of the catalog, then its logs off the disk.
    pub fn delete(&self, name: &str) -> Result<Arc<Topic>, TopicError> {
        let mut replicated = self.lock_changes();
        let topic = self.existing(name)?;
        self.apply(&mut replicated, name, |r| {
            let stamp = r.stamp();
            r.catalog.delete(name, stamp).map_err(catalog_error)?;
            Ok(true)
        })?;
        tracing::info!(topic = name, "deleted topic");
        Ok(topic)
    }

    /// Grows a topic to `count` partitions; partitions never shrink.
    pub fn add_partitions(
        &self,
        name: &str,
        count: u32,
        validate_only: bool,
    ) -> Result<(), TopicError> {
        let mut replicated = self.lock_changes();
        let topic = self.existing(name)?;
        let current = topic.partition_count();
        if (count as usize) <= current {
            return Err(TopicError::InvalidPartitions(format!(
                "topic {name} has {current} partitions; the new count {count} must be larger"
            )));
        }
        self.check_topic_size(count)?;
        self.check_room_for(count - current as u32)?;
        if validate_only {
            return Ok(());
        }
        self.apply(&mut replicated, name, |r| {
            let stamp = r.stamp();
            r.catalog
                .add_partitions(name, count, stamp)
                .map_err(catalog_error)?;
            Ok(true)
        })?;
        tracing::info!(topic = name, partitions = count, "added partitions");
        Ok(())
    }

    /// Replaces a topic's config overrides and applies them to its open logs.
    pub fn set_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<(), TopicError> {
        let mut replicated = self.lock_changes();
        let topic = self.existing(name)?;
        validate_configs(&configs, self.replica_config.regions.len())?;
        if merge_mode(&configs) != merge_mode(&topic.overrides()) {
            return Err(TopicError::InvalidConfig(format!(
                "{MERGE_CONFIG} cannot change once the topic exists: each region would build its rows partly under one mode and partly under the other, at different records"
            )));
        }
        if validate_only {
            return Ok(());
        }
        // Every config the catalog holds goes, also those this broker does not apply.
        let mut changes: BTreeMap<String, Option<String>> = replicated
            .catalog
            .get(name)
            .map(|view| view.configs)
            .unwrap_or_default()
            .into_keys()
            .map(|key| (key, None))
            .collect();
        changes.extend(configs.into_iter().map(|(k, v)| (k, Some(v))));
        self.apply(&mut replicated, name, |r| {
            let stamp = r.stamp();
            r.catalog
                .alter_configs(name, changes, stamp)
                .map_err(catalog_error)?;
            Ok(true)
        })?;
        tracing::info!(topic = name, "changed topic configs");
        Ok(())
    }

    /// Folds a peer's encoded catalog into this region's and makes the hosted topics follow:
    /// topics created elsewhere are created here, deleted ones deleted, grown ones grown.
    /// Returns how many topics changed.
    pub fn merge_peer_catalog(&self, bytes: &[u8]) -> Result<usize, TopicError> {
        let theirs = TopicCatalog::decode(bytes).map_err(catalog_error)?;
        let mut replicated = self.lock_changes();
        if let Some(newest) = theirs.max_stamp() {
            // A change stamped beyond the skew bound would win every later conflict (and a stamp
            // near u64::MAX would stop this region's clock): the catalog waits, as a batch
            // stamped that far ahead does, until local time catches up. Batches still apply.
            let stamp_ms = HybridClock::physical_ms(newest.hlc);
            let wall_ms = u64::try_from(now_ms()).unwrap_or(0);
            if stamp_ms > wall_ms.saturating_add(self.replica_config.hlc_skew_ms_max) {
                metrics::replication_refused("catalog clock skew");
                tracing::debug!(
                    stamp_ms,
                    wall_ms,
                    "a peer's catalog is stamped beyond the clock skew bound; not merged yet"
                );
                return Ok(0);
            }
            replicated.clock.observe(newest.hlc);
        }
        let mut changed = 0;
        for (name, state) in theirs.topics() {
            if validate_topic_name(name).is_err() {
                tracing::warn!(topic = name, "ignoring a peer's topic with an invalid name");
                continue;
            }
            let before = self.get(name);
            if self.apply(&mut replicated, name, |r| {
                Ok(r.catalog.merge_topic(name, state).state_changed)
            })? {
                changed += 1;
                log_merged_change(name, before.as_deref(), self.get(name).as_deref());
            }
        }
        if changed > 0 {
            tracing::info!(topics = changed, "merged a peer's topic catalog");
        }
        Ok(changed)
    }

    /// A digest of the replicated catalog: peers exchange catalogs only when digests differ.
    pub fn catalog_digest(&self) -> u64 {
        self.lock_changes().catalog.digest()
    }

    /// The replicated catalog, encoded for a peer.
    pub fn encoded_catalog(&self) -> Vec<u8> {
        self.lock_changes().catalog.encode()
    }

    /// Applies `edit` to `name` in the replicated catalog and, if it changed the state (`edit`
    /// says so), makes what this region hosts follow. If following fails, `name`'s state is put
    /// back, so a change this region could not carry out is neither replicated to peers nor met
    /// again at the next start. Returns whether the state changed.
    fn apply(
        &self,
        replicated: &mut Replicated,
        name: &str,
        edit: impl FnOnce(&mut Replicated) -> Result<bool, TopicError>,
    ) -> Result<bool, TopicError> {
        let previous = replicated.catalog.topic(name).cloned();
        let result = edit(replicated).and_then(|changed| {
            if changed {
                self.reconcile(&replicated.catalog, name)?;
            }
            Ok(changed)
        });
        if result.is_err() {
            replicated.catalog.restore(name, previous);
        }
        result
    }

    fn lock_changes(&self) -> std::sync::MutexGuard<'_, Replicated> {
        self.changes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores `name`'s replicated state and makes what this region hosts match it: creates,
    /// deletes, re-creates (new topic id), grows, or reconfigures the topic. Called with the
    /// change lock held, after every local change and every merge that changed the state.
    /// A hosted topic's sidecar (`storage::sidecar`) is written before its catalog record, so
    /// every acknowledged change is also next to the data, for `causeway meta rebuild`.
    fn reconcile(&self, catalog: &TopicCatalog, name: &str) -> Result<(), TopicError> {
        let state = catalog
            .topic(name)
            .map(TopicState::encode)
            .unwrap_or_default();
        let view = catalog.get(name);
        let hosted = self.get(name);
        if let Some(topic) = &hosted {
            let same_incarnation = view
                .as_ref()
                .is_some_and(|v| Uuid::from_bytes(v.topic_id) == topic.id);
            if !same_incarnation {
                self.catalog.put_topic_state(name, &state, None)?;
                self.by_name.remove(name);
                for partition in topic.partitions() {
                    remove_partition_dir(&self.partition_dir(name, partition.index()))?;
                    partition.appended().notify_waiters();
                }
            }
        }
        let Some(view) = view else {
            return Ok(self.catalog.put_topic_state(name, &state, None)?);
        };
        // This incarnation's record as stored at the last change (none before it was hosted).
        let stored = self
            .catalog
            .topic(name)?
            .filter(|stored| stored.id == view.topic_id);
        let hosted = self.get(name);
        // The incarnation's creation time: the hosted topic's, else the stored record's (at
        // start-up nothing is hosted yet), else now.
        let created_ms = match (&hosted, &stored) {
            (Some(topic), _) => topic.record().created_ms,
            (None, Some(stored)) => stored.created_ms,
            (None, None) => now_ms(),
        };
        let already = hosted.as_ref().map_or(0, |t| t.partition_count()) as u32;
        let partitions = self.partitions_to_host(
            name,
            view.partitions,
            already,
            stored.as_ref().map_or(0, |s| s.partitions),
        );
        if partitions == 0 {
            return Ok(self.catalog.put_topic_state(name, &state, None)?);
        }
        let record = TopicRecord {
            name: name.to_string(),
            id: view.topic_id,
            partitions,
            configs: configs_in_force(name, view.configs, self.replica_config.regions.len()),
            created_ms,
        };
        let config = self.log_config(&record.configs);
        // Opened before anything is stored: partitions that cannot be opened (no file
        // descriptors, a bad directory) fail the change while it can still be undone.
        let opened = self.open_partitions(name, already..partitions, &config)?;
        let sidecar = TopicSidecar {
            record: record.clone(),
            region: self.region_name.clone(),
            region_id: self.replica_config.region,
            catalog_state: state.clone(),
        };
        let stored = sidecar
            .write(&self.partition_dir(name, 0))
            .and_then(|_| self.catalog.put_topic_state(name, &state, Some(&record)));
        if let Err(error) = stored {
            opened.discard();
            return Err(error.into());
        }
        match hosted {
            Some(topic) => self.follow(&topic, record, config, opened.partitions),
            None => {
                let topic = Arc::new(Topic {
                    name: record.name.clone(),
                    id: Uuid::from_bytes(record.id),
                    record: RwLock::new(record),
                    config: RwLock::new(config),
                    partitions: RwLock::new(opened.partitions),
                });
                self.by_name.insert(name.to_string(), topic);
            }
        }
        Ok(())
    }

    /// How many of a topic's `wanted` partitions this broker hosts: those it hosts `already` or
    /// hosted before its last start (`stored`) always, the rest only within `--max-partitions`
    /// and `--max-partitions-per-topic`. A peer's catalog is bounded by the peer's limit, not this broker's, so a growth that
    /// does not fit is held back whole (logged, counted) and taken up again at the next start.
    fn partitions_to_host(&self, name: &str, wanted: u32, already: u32, stored: u32) -> u32 {
        let floor = already.max(stored).min(wanted);
        if floor == wanted {
            return wanted;
        }
        let fits = self
            .check_topic_size(wanted)
            .and_then(|()| self.check_room_for(wanted - already));
        match fits {
            Ok(()) => wanted,
            Err(error) => {
                tracing::warn!(
                    topic = name,
                    wanted,
                    hosted = floor,
                    %error,
                    "holding back partitions the topic catalog asks for: no room on this broker"
                );
                metrics::topic_partitions_held_back(wanted - floor);
                floor
            }
        }
    }

    /// Opens partitions `indices` of `topic`. On failure it removes the partition directories
    /// it created, so a change that fails leaves the disk as it found it.
    fn open_partitions(
        &self,
        topic: &str,
        indices: std::ops::Range<u32>,
        config: &LogConfig,
    ) -> Result<Opened, TopicError> {
        let mut opened = Opened::default();
        for index in indices {
            let index = i32::try_from(index).map_err(|_| {
                TopicError::InvalidPartitions(format!("partition index {index} is out of range"))
            })?;
            let dir = self.partition_dir(topic, index);
            if !dir.exists() {
                opened.created.push(dir);
            }
            match self.open_partition(topic, index, config) {
                Ok(partition) => opened.partitions.push(partition),
                Err(error) => {
                    opened.discard();
                    return Err(error);
                }
            }
        }
        Ok(opened)
    }

    /// Applies `record`'s configs to a hosted topic and adds the partitions just `opened` for it.
    fn follow(
        &self,
        topic: &Topic,
        record: TopicRecord,
        config: LogConfig,
        opened: Vec<Arc<PartitionHandle>>,
    ) {
        if record.configs != topic.overrides() {
            for partition in topic.partitions() {
                partition.log().set_config(config.clone());
            }
            *topic.config.write().unwrap_or_else(|e| e.into_inner()) = config;
        }
        topic
            .partitions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .extend(opened);
        *topic.record.write().unwrap_or_else(|e| e.into_inner()) = record;
    }

    /// Fsyncs and closes every log (graceful shutdown).
    pub fn close_all(&self) {
        for topic in self.all() {
            for partition in topic.partitions() {
                if let Err(error) = partition.log().close() {
                    tracing::error!(topic = %topic.name, partition = partition.index(), %error, "closing partition failed");
                }
            }
        }
    }

    fn open_partition(
        &self,
        topic: &str,
        index: i32,
        config: &LogConfig,
    ) -> Result<Arc<PartitionHandle>, TopicError> {
        let log = Arc::new(Partition::open(
            &self.partition_dir(topic, index),
            config.clone(),
            now_ms(),
        )?);
        Ok(Arc::new(PartitionHandle::open(
            topic,
            index,
            log,
            self.replica_config.clone(),
        )?))
    }

    fn partition_dir(&self, topic: &str, index: i32) -> PathBuf {
        self.topics_dir.join(format!("{topic}-{index}"))
    }
}

/// Bounds on the partitions a broker hosts, each a named option.
#[derive(Debug, Clone, Copy)]
pub struct PartitionLimits {
    /// Over all topics (`--max-partitions`).
    pub broker: u32,
    /// In one topic (`--max-partitions-per-topic`).
    pub topic: u32,
    /// Created or added by one request (`--max-partitions-per-request`).
    pub request: u32,
}

/// New partitions one request may still create. A request naming thousands of new topics
/// (Metadata or Produce with auto-creation, CreateTopics) is refused past it with
/// THROTTLING_QUOTA_EXCEEDED, as Kafka answers a request over its controller mutation quota, so
/// the client may retry later; one request cannot fill the broker's whole limit at once.
pub struct PartitionAllowance(Cell<u32>);

impl PartitionAllowance {
    /// Takes `partitions` from the allowance, or refuses if fewer are left.
    pub fn take(&self, partitions: u32) -> Result<(), TopicError> {
        let left = self.0.get();
        if partitions > left {
            return Err(TopicError::RequestQuota(format!(
                "this request may create {left} more partitions, not {partitions} (--max-partitions-per-request); retry in another request"
            )));
        }
        self.0.set(left - partitions);
        Ok(())
    }
}

/// Partitions opened for a change that is not stored yet, with the directories opening them
/// created.
#[derive(Default)]
struct Opened {
    partitions: Vec<Arc<PartitionHandle>>,
    created: Vec<PathBuf>,
}

impl Opened {
    /// Closes the partitions and removes the directories they were created in: the change they
    /// were opened for failed.
    fn discard(self) {
        drop(self.partitions);
        for dir in self.created {
            if let Err(error) = remove_partition_dir(&dir) {
                tracing::warn!(dir = %dir.display(), %error, "could not remove the directory of a partition whose topic change failed");
            }
        }
    }
}

/// Kafka's topic naming rules.
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    let legal = !name.is_empty()
        && name.len() <= MAX_TOPIC_NAME_LEN
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if legal {
        Ok(())
    } else {
        Err(TopicError::InvalidName(name.to_string()))
    }
}

/// The topic config naming how many regions must hold a batch before acks=all answers.
pub const MIN_REGIONS_CONFIG: &str = "causeway.min.regions";

/// Says by name what a peer's catalog changed here: operators of every region see a delete,
/// re-create or growth that came from another region in their own logs.
fn log_merged_change(name: &str, before: Option<&Topic>, after: Option<&Topic>) {
    match (before, after) {
        (Some(_), None) => tracing::info!(topic = name, "deleted topic (merged from a peer)"),
        (None, Some(topic)) => tracing::info!(
            topic = name,
            partitions = topic.partition_count(),
            "created topic (merged from a peer)"
        ),
        (Some(old), Some(new)) if old.id != new.id => tracing::info!(
            topic = name,
            partitions = new.partition_count(),
            "re-created topic, a new incarnation (merged from a peer)"
        ),
        (Some(old), Some(new)) if old.partition_count() != new.partition_count() => {
            tracing::info!(
                topic = name,
                partitions = new.partition_count(),
                "added partitions (merged from a peer)"
            )
        }
        (Some(_), Some(_)) => {
            tracing::info!(topic = name, "changed topic configs (merged from a peer)")
        }
        (None, None) => {}
    }
}

/// The configs of `name`'s catalog entry a broker in a mesh of `regions` applies. Local changes are validated
/// before they enter the catalog, but a peer's catalog was validated by the peer, whose
/// mesh, limits or version may differ (a `cleanup.policy` this broker does not know would
/// turn retention off). A config this broker refuses is left out, so its default applies
/// (logged, counted); the catalog keeps it, so regions still converge. A
/// `causeway.min.regions` above this mesh's size is the one exception: it is lowered to
/// every region of the mesh, the strongest promise this region can keep.
fn configs_in_force(
    name: &str,
    configs: BTreeMap<String, String>,
    regions: usize,
) -> BTreeMap<String, String> {
    let mut refused = 0;
    let mut in_force = BTreeMap::new();
    for (key, value) in configs {
        let Err(error) = validate_config(&key, &value, regions) else {
            in_force.insert(key, value);
            continue;
        };
        refused += 1;
        let above_the_mesh =
            key == MIN_REGIONS_CONFIG && value.trim().parse::<usize>().is_ok_and(|n| n > regions);
        let applied = above_the_mesh.then(|| regions.to_string());
        tracing::warn!(
            topic = name,
            config = %key,
            value = %value,
            applied = applied.as_deref().unwrap_or("the default"),
            %error,
            "not applying a topic config the catalog carries: this broker refuses it"
        );
        if let Some(applied) = applied {
            in_force.insert(key, applied);
        }
    }
    if refused > 0 {
        metrics::topic_configs_not_applied(refused);
    }
    in_force
}

/// Checks each config's type and range (see `validate_config`), then what the configs must
/// agree on together.
fn validate_configs(configs: &BTreeMap<String, String>, regions: usize) -> Result<(), TopicError> {
    configs
        .iter()
        .try_for_each(|(name, value)| validate_config(name, value, regions))?;
    validate_topic_config_set(configs).map_err(|e| TopicError::InvalidConfig(e.to_string()))
}

/// Checks a config's type and range, and that `causeway.min.regions` is at most the number of
/// regions in the mesh (`regions`): more could never be satisfied, and every acks=all produce
/// would wait for its timeout.
fn validate_config(name: &str, value: &str, regions: usize) -> Result<(), TopicError> {
    validate_topic_config(name, value).map_err(|e| TopicError::InvalidConfig(e.to_string()))?;
    let min_regions = (name == MIN_REGIONS_CONFIG)
        .then(|| value.trim().parse::<usize>().ok())
        .flatten();
    if let Some(min_regions) = min_regions.filter(|&n| n > regions) {
        return Err(TopicError::InvalidConfig(format!(
            "{MIN_REGIONS_CONFIG}={min_regions} is more than the {regions} region(s) of this mesh (this one and its --peer regions): acks=all produce could never be answered"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer's catalog stamped beyond the clock skew bound is not merged (its stamp would win
    /// every later change and could stop this region's clock); the same change stamped now is.
    #[test]
    fn a_peer_catalog_stamped_beyond_the_skew_bound_waits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let catalog = Catalog::open(&dir.path().join("meta")).expect("catalog");
        let replica_config = ReplicaConfig {
            region: 1,
            regions: vec![1, 2],
            pending_per_origin_max: 16,
            hlc_skew_ms_max: 10_000,
        };
        let limits = PartitionLimits {
            broker: 100,
            topic: 10,
            request: 10,
        };
        let topics = Topics::open(
            catalog,
            dir.path(),
            "one",
            LogConfig::default(),
            replica_config,
            limits,
        )
        .expect("topics");
        let peer_catalog = |wall_ms: u64| {
            let mut theirs = TopicCatalog::new();
            let stamp = CatalogStamp::new(wall_ms << 16, 2);
            theirs
                .create("orders", 1, BTreeMap::new(), stamp)
                .expect("create");
            theirs.encode()
        };
        let now = u64::try_from(now_ms()).expect("time");
        let ahead = topics
            .merge_peer_catalog(&peer_catalog(now + 3_600_000))
            .expect("merge");
        assert_eq!(ahead, 0);
        assert!(topics.get("orders").is_none());
        let current = topics
            .merge_peer_catalog(&peer_catalog(now))
            .expect("merge");
        assert_eq!(current, 1);
        assert!(topics.get("orders").is_some());
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_eu-west").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("a/b").is_err());
        assert!(validate_topic_name(&"x".repeat(250)).is_err());
    }

    #[test]
    fn a_merged_config_this_broker_refuses_is_not_applied() {
        let carried = BTreeMap::from([
            ("cleanup.policy".to_string(), "shred".to_string()),
            ("retention.ms".to_string(), "60000".to_string()),
            ("causeway.min.regions".to_string(), "5".to_string()),
            ("no.such.config".to_string(), "1".to_string()),
        ]);
        let applied = configs_in_force("orders", carried, 3);
        let unreadable = BTreeMap::from([("causeway.min.regions".to_string(), "0".to_string())]);
        assert!(configs_in_force("orders", unreadable, 3).is_empty());
        assert_eq!(
            applied,
            BTreeMap::from([
                ("causeway.min.regions".to_string(), "3".to_string()),
                ("retention.ms".to_string(), "60000".to_string()),
            ])
        );
        let config = log_config_from(&applied, &LogConfig::default());
        assert!(config.cleanup_delete, "retention stays on");
    }
}
