//! The broker's shared state: options, this region's identity, topics and clocks. One value,
//! shared by every connection and background task.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use causeway_replication::{stamp_local_append, HybridClock};
use causeway_storage::{Catalog, CausalMeta, LogConfig, TableStore, TimestampType};

use crate::clock::now_ms;
use crate::config::BrokerOptions;
use crate::groups::GroupCoordinator;
use crate::producer_ids::ProducerIds;
use crate::topics::{TopicError, Topics};
use crate::transactions::TransactionCoordinator;

/// Node id of this broker in Metadata: every region is the single broker of its own cluster.
pub const NODE_ID: i32 = 0;

/// Everything a request handler may need.
pub struct Broker {
    /// The options the broker was started with.
    pub options: BrokerOptions,
    /// This region's stable small id.
    pub region_id: u32,
    /// Topics and their logs.
    pub topics: Topics,
    /// Cluster id reported to clients: stable per data dir.
    pub cluster_id: String,
    /// Ids for idempotent producers.
    pub producer_ids: ProducerIds,
    /// Transactional ids and their transactions.
    pub transactions: TransactionCoordinator,
    /// Rows of the tables (compacted topics), `<data-dir>/tables`.
    pub tables: TableStore,
    /// Consumer groups and their committed offsets (`<data-dir>/groups`).
    pub groups: GroupCoordinator,
    hlc: Mutex<HybridClock>,
    ready: AtomicBool,
}

impl Broker {
    /// Opens the data directory: catalog, region id, every topic's logs (recovering them).
    pub fn open(options: BrokerOptions) -> Result<Broker, TopicError> {
        std::fs::create_dir_all(&options.data_dir).map_err(|source| {
            causeway_storage::StorageError::Io {
                context: format!("creating {}", options.data_dir.display()),
                source,
            }
        })?;
        let catalog = Catalog::open(&options.data_dir.join("meta"))?;
        let region_id = catalog.region_id(&options.region)?;
        tracing::info!(region = %options.region, region_id, "region identity");
        let cluster_id = format!("causeway-{}", options.region);
        let base_config = LogConfig {
            max_message_bytes: options.message_max_bytes,
            timestamp_type: TimestampType::CreateTime,
            ..LogConfig::default()
        };
        let topics = Topics::open(catalog, &options.data_dir, base_config)?;
        let transactions = TransactionCoordinator::load(topics.catalog())?;
        let tables = TableStore::open(&options.data_dir.join("tables"))?;
        let groups = GroupCoordinator::open(
            &options.data_dir.join("groups"),
            options.group_initial_rebalance_delay_ms,
            options.offsets_retention_minutes,
        )?;
        let newest_stamp = topics
            .all()
            .iter()
            .flat_map(|t| t.partitions())
            .filter_map(|p| p.log.last_causal())
            .map(|meta| meta.hlc)
            .max()
            .unwrap_or(0);
        Ok(Broker {
            options,
            region_id,
            topics,
            cluster_id,
            groups,
            producer_ids: ProducerIds::new(region_id),
            transactions,
            tables,
            hlc: Mutex::new(HybridClock::resume(newest_stamp)),
            ready: AtomicBool::new(false),
        })
    }

    /// Causal metadata for a batch this region is about to append locally, given the
    /// partition's previous batch.
    pub fn stamp_local(&self, previous: Option<&CausalMeta>) -> CausalMeta {
        let wall = u64::try_from(now_ms()).unwrap_or(0);
        let hlc = self
            .hlc
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .tick(wall);
        stamp_local_append(previous, self.region_id, hlc)
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
