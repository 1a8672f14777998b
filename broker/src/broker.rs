//! The broker's shared state: options, this region's identity, topics and clocks. One value,
//! shared by every connection and background task.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context};
use causeway_storage::{
    partition_dirs, Catalog, DataDirLock, LogConfig, TableStore, TimestampType,
};

use crate::acl::store::Acls;
use crate::config::Authorization;
use crate::config::BrokerOptions;
use crate::groups::GroupCoordinator;
use crate::producer_ids::ProducerIds;
use crate::replication::Replication;
use crate::security_state::{
    SecurityStore, ACL_KEY_PREFIX, GROUP_CONFIG_KEY_PREFIX, QUOTA_KEY_PREFIX, SCRAM_KEY_PREFIX,
};
use crate::topics::{PartitionLimits, Topics};
use crate::transactions::TransactionCoordinator;
use crate::users::Users;
use crate::wall_clock::now_ms;
use causeway_replication::wire::{catalogs_digest, decode_catalogs, encode_catalogs};

/// Node id of this broker in Metadata: every region is the single broker of its own cluster.
pub const NODE_ID: i32 = 0;

/// Everything a request handler may need.
pub struct Broker {
    /// The options the broker was started with.
    pub(crate) options: BrokerOptions,
    /// This region's id (derived from its name, the same in every region).
    pub(crate) region_id: u32,
    /// Peers, links and replication progress.
    pub(crate) replication: Replication,
    /// Topics and their logs.
    pub(crate) topics: Topics,
    /// Cluster id reported to clients: stable per data dir.
    pub(crate) cluster_id: String,
    /// Ids for idempotent producers.
    pub(crate) producer_ids: ProducerIds,
    /// Transactional ids and their transactions.
    pub(crate) transactions: TransactionCoordinator,
    /// Rows of the tables (compacted topics), `<data-dir>/tables`.
    pub(crate) tables: TableStore,
    /// Consumer groups and their committed offsets (`<data-dir>/groups`).
    pub(crate) groups: GroupCoordinator,
    /// When this process opened the broker (ms since the epoch).
    pub(crate) started_ms: i64,
    /// The users SASL clients authenticate as.
    pub(crate) users: Users,
    /// The ACL bindings requests are authorized against.
    pub(crate) acls: Acls,
    /// How HTTP requests authenticate (`--http-auth`, the bearer tokens).
    pub(crate) http_auth: crate::http_auth::HttpAuth,
    /// Client quotas (a view of the security state) and the sensors measuring clients.
    pub(crate) quotas: crate::quota::Quotas,
    /// Consumer groups' own configs (a view of the security state).
    pub(crate) group_configs: crate::group_configs::GroupConfigs,
    /// The replicated security state `users`, `acls`, `quotas` and `group_configs` are views of.
    pub(crate) security: SecurityStore,
    /// TLS for listeners and links to peers, when a certificate is configured.
    pub(crate) tls: Option<std::sync::Arc<crate::tls::Tls>>,
    ready: AtomicBool,
    /// Held for the broker's life: no other broker, and no `causeway meta rebuild`, works on
    /// the data dir meanwhile.
    _data_dir_lock: DataDirLock,
}

impl Broker {
    /// Opens the data directory: catalog, region id, every topic's logs (recovering them).
    pub fn open(options: BrokerOptions) -> anyhow::Result<Broker> {
        let mechanisms =
            crate::handlers::sasl::enabled_mechanisms(&options.sasl_enabled_mechanisms)?;
        let http_auth = crate::http_auth::HttpAuth::load(&options.http_auth)?;
        let tls = crate::tls::Tls::from_options(&options)?;
        let sasl_listener = crate::listeners::listeners(&options)?
            .into_iter()
            .find(|listener| listener.protocol.uses_sasl());
        if let (Some(listener), true) = (sasl_listener, mechanisms.is_empty()) {
            anyhow::bail!(
                "the SASL listener {} needs --sasl-enabled-mechanisms",
                listener.name
            );
        }
        std::fs::create_dir_all(&options.data_dir).map_err(|source| {
            causeway_storage::StorageError::Io {
                context: format!("creating {}", options.data_dir.display()),
                source,
            }
        })?;
        let data_dir_lock = DataDirLock::acquire(&options.data_dir)?;
        let catalog = open_catalog(&options.data_dir, &options.region)?;
        let replication = Replication::from_options(&options)?;
        let region_id = replication.region_id;
        catalog.bind_region(&options.region, region_id)?;
        tracing::info!(region = %options.region, region_id, peers = replication.peers.len(), "region identity");
        let cluster_id = format!("causeway-{}", options.region);
        let base_config = LogConfig {
            max_message_bytes: options.message_max_bytes,
            timestamp_type: TimestampType::CreateTime,
            segment_bytes_min: options.log_segment_bytes_min,
            segment_ms_min: i64::try_from(options.log_segment_ms_min).unwrap_or(i64::MAX),
            producers_max: usize::try_from(options.max_producers_per_partition)
                .unwrap_or(usize::MAX),
            ..LogConfig::default()
        };
        let topics = Topics::open(
            catalog,
            &options.data_dir,
            &options.region,
            base_config,
            replication.replica_config(),
            PartitionLimits {
                broker: options.max_partitions,
                topic: options.max_partitions_per_topic,
                request: options.max_partitions_per_request,
            },
        )?;
        let transactions = TransactionCoordinator::load(topics.catalog())?;
        let security = SecurityStore::load(
            topics.catalog(),
            region_id,
            replication.replica_config().hlc_skew_ms_max,
        )?;
        let users = Users::load(&security)?;
        let acls = Acls::load(
            &security,
            options.authorization == Authorization::Acls,
            &options.super_users,
            options.allow_everyone_if_no_acl_found,
        )?;
        let quotas = crate::quota::Quotas::load(&security);
        let group_configs = crate::group_configs::GroupConfigs::load(
            &security,
            options.group_consumer_heartbeat_interval_ms,
        );
        let tables = TableStore::open(&options.data_dir.join("tables"))?;
        let groups = GroupCoordinator::open(
            &options.data_dir.join("groups"),
            options.group_initial_rebalance_delay_ms,
            options.offsets_retention_minutes,
        )?;
        Ok(Broker {
            options,
            region_id,
            replication,
            topics,
            cluster_id,
            groups,
            producer_ids: ProducerIds::new(region_id),
            transactions,
            tables,
            started_ms: now_ms(),
            users,
            acls,
            quotas,
            group_configs,
            http_auth,
            security,
            tls,
            ready: AtomicBool::new(false),
            _data_dir_lock: data_dir_lock,
        })
    }

    /// The digest of this region's topic catalog, sent with every pull.
    pub fn catalog_digest(&self) -> u64 {
        catalogs_digest(self.topics.catalog_digest(), self.security.digest())
    }

    /// The encoded catalogs (topics and security state) for a peer whose digest differs from
    /// ours (`None` if equal).
    pub fn catalog_for_peer(&self, peer_digest: u64) -> Option<Vec<u8>> {
        (peer_digest != self.catalog_digest())
            .then(|| encode_catalogs(&self.topics.encoded_catalog(), &self.security.encode()))
    }

    /// Merges a peer's catalogs into ours: topics (creating, deleting, growing them here), then
    /// users and ACL bindings.
    pub fn merge_peer_catalog(&self, bytes: &[u8]) -> Result<usize, crate::topics::TopicError> {
        let (topics, security) = decode_catalogs(bytes)
            .map_err(|e| crate::topics::TopicError::InvalidRequest(e.to_string()))?;
        let mut changed = self.topics.merge_peer_catalog(topics)?;
        let security_changes = self
            .security
            .merge_peer(self.topics.catalog(), security)
            .map_err(crate::topics::TopicError::InvalidRequest)?;
        for (key, value) in &security_changes {
            if let Some(rest) = key.strip_prefix(SCRAM_KEY_PREFIX) {
                self.users.apply(rest, value.as_deref());
            } else if let Some(rest) = key.strip_prefix(ACL_KEY_PREFIX) {
                self.acls.apply(rest, value.is_some());
            } else if let Some(rest) = key.strip_prefix(QUOTA_KEY_PREFIX) {
                self.quotas.apply(rest, value.as_deref());
            } else if let Some(rest) = key.strip_prefix(GROUP_CONFIG_KEY_PREFIX) {
                self.group_configs.apply(rest, value.as_deref());
            }
        }
        if !security_changes.is_empty() {
            tracing::info!(
                changes = security_changes.len(),
                "merged a peer's users, ACL bindings, quotas and group configs"
            );
        }
        changed += security_changes.len();
        if changed > 0 {
            self.replication.data_progressed(true);
        }
        Ok(changed)
    }

    /// Whether storage is recovered and the listeners are up (`/readyz`).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Marks the broker ready or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// The default partition count for auto-created topics.
    pub fn default_partitions(&self) -> u32 {
        self.options.num_partitions
    }
}

/// Opens `<data_dir>/meta`, refusing to start over topic data the catalog does not know: a lost
/// `meta/` would otherwise come back empty, leave every topic unreachable and hand out producer
/// ids the logs already hold. Both refusals name the command that rebuilds `meta/`.
fn open_catalog(data_dir: &std::path::Path, region: &str) -> anyhow::Result<Catalog> {
    let meta = data_dir.join("meta");
    let rebuild = format!(
        "stop here and rebuild it from the topic directories with `causeway meta rebuild --data-dir {} --region {region}` (docs/operations.md, \"Rebuilding meta/\")",
        data_dir.display()
    );
    let (partitions, _) = partition_dirs(&data_dir.join("topics"))?;
    if !partitions.is_empty() && !meta.join("CURRENT").exists() {
        bail!(
            "the metadata database {} is missing but {} partition directories are on disk: {rebuild}",
            meta.display(),
            partitions.len()
        );
    }
    let catalog = Catalog::open(&meta).with_context(|| {
        format!(
            "opening the metadata database {}; if it is damaged, {rebuild}",
            meta.display()
        )
    })?;
    if !partitions.is_empty() && catalog.knows_no_topics()? {
        bail!(
            "the metadata database {} knows no topics but {} partition directories are on disk: {rebuild}",
            meta.display(),
            partitions.len()
        );
    }
    Ok(catalog)
}
