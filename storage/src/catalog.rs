//! The RocksDB-backed catalog: topic records and region ids (the broker opens it at
//! `<data-dir>/meta`).
//!
//! ## Keys and values (version 0)
//! - `topic/<name>` -> JSON `TopicRecord`.
//! - `region/<name>` -> JSON `u32` region id. Ids start at 1 (0 means "no region", the
//!   `CausalMeta` default) and are never reused.
//! - `meta/next-region-id` -> JSON `u32`, the next id to hand out.
//!
//! Every write is a synchronous (WAL-fsynced) write, so an acknowledged CreateTopics or a
//! region id handed out survives a crash.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use rocksdb::{Direction, IteratorMode, WriteBatch, DB};
use serde::{Deserialize, Serialize};

use crate::error::StorageError;
use crate::rocks::{self, db_err, sync_writes};

const TOPIC_PREFIX: &str = "topic/";
/// Key prefix of transaction coordinator records (`txn/<transactional id>`).
const TRANSACTION_PREFIX: &str = "txn/";
const REGION_PREFIX: &str = "region/";
/// Key of the next unreserved producer-id counter.
const NEXT_PRODUCER_ID_KEY: &str = "meta/next-producer-id";
const NEXT_REGION_KEY: &str = "meta/next-region-id";
const FIRST_REGION_ID: u32 = 1;

/// A topic as created by CreateTopics: what the broker needs to recreate it on restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicRecord {
    /// Topic name.
    pub name: String,
    /// Kafka topic id (UUID bytes).
    pub id: [u8; 16],
    /// Number of partitions.
    pub partitions: u32,
    /// Topic config overrides.
    pub configs: BTreeMap<String, String>,
    /// Creation time, ms since the epoch.
    pub created_ms: i64,
}

/// Durable broker metadata in RocksDB.
pub struct Catalog {
    db: DB,
    /// Serializes region id assignment (read, then write of the counter).
    counters_lock: Mutex<()>,
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StorageError> {
    serde_json::to_vec(value).map_err(|e| StorageError::Db(format!("encoding value: {e}")))
}

fn decode<T: for<'de> Deserialize<'de>>(key: &[u8], bytes: &[u8]) -> Result<T, StorageError> {
    serde_json::from_slice(bytes).map_err(|e| {
        StorageError::Corrupt(format!("catalog key {}: {e}", String::from_utf8_lossy(key)))
    })
}

impl Catalog {
    /// Opens (creating if absent) the catalog database at `path`.
    pub fn open(path: &Path) -> Result<Catalog, StorageError> {
        let db = rocks::open(path)?;
        Ok(Catalog {
            db,
            counters_lock: Mutex::new(()),
        })
    }

    /// Every stored topic, ordered by name.
    pub fn topics(&self) -> Result<Vec<TopicRecord>, StorageError> {
        let mut out = Vec::new();
        let mode = IteratorMode::From(TOPIC_PREFIX.as_bytes(), Direction::Forward);
        for item in self.db.iterator(mode) {
            let (key, value) = item.map_err(db_err)?;
            if !key.starts_with(TOPIC_PREFIX.as_bytes()) {
                break;
            }
            out.push(decode(&key, &value)?);
        }
        Ok(out)
    }

    /// Every stored transaction record (the coordinator's own JSON), by transactional id.
    pub fn transactions(&self) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        let mut out = Vec::new();
        let mode = IteratorMode::From(TRANSACTION_PREFIX.as_bytes(), Direction::Forward);
        for item in self.db.iterator(mode) {
            let (key, value) = item.map_err(db_err)?;
            let Some(id) = key.strip_prefix(TRANSACTION_PREFIX.as_bytes()) else {
                break;
            };
            out.push((String::from_utf8_lossy(id).into_owned(), value.to_vec()));
        }
        Ok(out)
    }

    /// Stores (or replaces) a transaction record with a synchronous write: the coordinator
    /// answers only after its state change is durable.
    pub fn put_transaction(
        &self,
        transactional_id: &str,
        record: &[u8],
    ) -> Result<(), StorageError> {
        self.db
            .put_opt(
                format!("{TRANSACTION_PREFIX}{transactional_id}"),
                record,
                &sync_writes(),
            )
            .map_err(db_err)
    }

    /// Stores (or replaces) a topic record with a synchronous write.
    pub fn put_topic(&self, topic: &TopicRecord) -> Result<(), StorageError> {
        let key = format!("{TOPIC_PREFIX}{}", topic.name);
        self.db
            .put_opt(key, encode(topic)?, &sync_writes())
            .map_err(db_err)
    }

    /// Deletes a topic record (absent is fine).
    pub fn delete_topic(&self, name: &str) -> Result<(), StorageError> {
        self.db
            .delete_opt(format!("{TOPIC_PREFIX}{name}"), &sync_writes())
            .map_err(db_err)
    }

    /// The stable small integer id of a region, assigned on first use and persisted.
    pub fn region_id(&self, region: &str) -> Result<u32, StorageError> {
        let key = format!("{REGION_PREFIX}{region}");
        let _guard = self.counters_lock.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bytes) = self.db.get(&key).map_err(db_err)? {
            return decode(key.as_bytes(), &bytes);
        }
        let id: u32 = match self.db.get(NEXT_REGION_KEY).map_err(db_err)? {
            Some(bytes) => decode(NEXT_REGION_KEY.as_bytes(), &bytes)?,
            None => FIRST_REGION_ID,
        };
        let next = id
            .checked_add(1)
            .ok_or_else(|| StorageError::Db("region ids exhausted".into()))?;
        let mut batch = WriteBatch::default();
        batch.put(&key, encode(&id)?);
        batch.put(NEXT_REGION_KEY, encode(&next)?);
        self.db.write_opt(batch, &sync_writes()).map_err(db_err)?;
        Ok(id)
    }

    /// Reserves the next `count` producer-id counters and returns the first. The counter is
    /// persisted before the ids are handed out, so no id is given twice across restarts (ids
    /// lost in a crash are skipped, never reused).
    pub fn reserve_producer_ids(&self, count: u64) -> Result<u64, StorageError> {
        let _guard = self.counters_lock.lock().unwrap_or_else(|e| e.into_inner());
        let first: u64 = match self.db.get(NEXT_PRODUCER_ID_KEY).map_err(db_err)? {
            Some(bytes) => decode(NEXT_PRODUCER_ID_KEY.as_bytes(), &bytes)?,
            None => 0,
        };
        let next = first
            .checked_add(count)
            .ok_or_else(|| StorageError::Db("producer ids exhausted".into()))?;
        self.db
            .put_opt(NEXT_PRODUCER_ID_KEY, encode(&next)?, &sync_writes())
            .map_err(db_err)?;
        Ok(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transactions_round_trip_through_reopen_apart_from_topics() {
        let dir = tempfile::tempdir().unwrap();
        {
            let catalog = Catalog::open(dir.path()).unwrap();
            catalog.put_transaction("app-1", b"{\"a\":1}").unwrap();
            catalog.put_transaction("app-1", b"{\"a\":2}").unwrap();
            catalog.put_transaction("b", b"{}").unwrap();
        }
        let catalog = Catalog::open(dir.path()).unwrap();
        assert_eq!(
            catalog.transactions().unwrap(),
            vec![
                ("app-1".to_string(), b"{\"a\":2}".to_vec()),
                ("b".to_string(), b"{}".to_vec())
            ]
        );
        assert!(catalog.topics().unwrap().is_empty());
    }

    #[test]
    fn producer_id_reservations_never_overlap_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let first = Catalog::open(dir.path())
            .unwrap()
            .reserve_producer_ids(10)
            .unwrap();
        let catalog = Catalog::open(dir.path()).unwrap();
        let second = catalog.reserve_producer_ids(10).unwrap();
        assert_eq!(first, 0);
        assert_eq!(second, 10);
        assert_eq!(catalog.reserve_producer_ids(1).unwrap(), 20);
    }

    #[test]
    fn topics_round_trip_through_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut configs = BTreeMap::new();
        configs.insert("retention.ms".to_string(), "1000".to_string());
        let a = TopicRecord {
            name: "a".into(),
            id: [7; 16],
            partitions: 3,
            configs,
            created_ms: 42,
        };
        let b = TopicRecord {
            name: "b".into(),
            id: [8; 16],
            partitions: 1,
            configs: BTreeMap::new(),
            created_ms: 43,
        };
        {
            let catalog = Catalog::open(dir.path()).unwrap();
            catalog.put_topic(&a).unwrap();
            catalog.put_topic(&b).unwrap();
            catalog.region_id("zzz").unwrap();
            catalog.delete_topic("b").unwrap();
        }
        let catalog = Catalog::open(dir.path()).unwrap();
        assert_eq!(catalog.topics().unwrap(), vec![a]);
    }

    #[test]
    fn region_ids_are_stable_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (east, west) = {
            let catalog = Catalog::open(dir.path()).unwrap();
            let east = catalog.region_id("east").unwrap();
            let west = catalog.region_id("west").unwrap();
            assert_eq!(catalog.region_id("east").unwrap(), east);
            (east, west)
        };
        assert_ne!(east, west);
        assert!(east >= 1 && west >= 1);
        let catalog = Catalog::open(dir.path()).unwrap();
        assert_eq!(catalog.region_id("west").unwrap(), west);
        assert_eq!(catalog.region_id("east").unwrap(), east);
        let south = catalog.region_id("south").unwrap();
        assert!(south != east && south != west);
    }
}
