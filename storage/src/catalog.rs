//! The RocksDB-backed catalog: topic records and region ids (the broker opens it at
//! `<data-dir>/meta`).
//!
//! ## Keys and values (version 0)
//! - `topic/<name>` -> JSON `TopicRecord`: the topic as this region hosts it.
//! - `topic-state/<name>` -> the topic's replicated catalog state (the replication crate's
//!   encoding; kept for deleted topics too, so a delete wins over older creates from peers).
//! - `meta/region` -> JSON `{name, id}`: the region this data dir belongs to (ids are derived
//!   from region names by the replication crate, so every region agrees on them).
//! - `security/<key>` -> one register of the replicated security state (the replication
//!   crate's encoding): `scram/<mechanism>/<user>` holds a user's salted SCRAM credential (never
//!   a password), `acl/<binding>` an ACL binding, `quota/<entity>/<key>` a client quota,
//!   `group-config/<name>/<group>` a consumer group's config; a removal is kept as a tombstone.
//! - `scram/<mechanism>/<user>` -> a credential stored before users were replicated; moved into
//!   `security/` at the next start.
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
/// Key prefix of replicated topic-catalog states (`topic-state/<name>`, opaque bytes).
const TOPIC_STATE_PREFIX: &str = "topic-state/";
/// Key prefix of transaction coordinator records (`txn/<transactional id>`).
const TRANSACTION_PREFIX: &str = "txn/";
/// Key of the next unreserved producer-id counter.
const NEXT_PRODUCER_ID_KEY: &str = "meta/next-producer-id";
/// Key of the region this data dir belongs to.
const REGION_KEY: &str = "meta/region";
/// Key prefix of SCRAM credentials stored before the security state was replicated.
const SCRAM_PREFIX: &str = "scram/";
/// Key prefix of the replicated security state's registers (`security/<key>`, the replication
/// crate's entry encoding).
const SECURITY_PREFIX: &str = "security/";

/// The region a data dir was first started as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct RegionBinding {
    name: String,
    id: u32,
}

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
    /// Serializes producer-id reservations (read, then write of the counter).
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

    /// Opens an existing catalog read-only, to salvage what a damaged one still holds (the
    /// rebuild reads its producer-id counter); fails if it is missing or cannot be opened.
    pub fn open_read_only(path: &Path) -> Result<Catalog, StorageError> {
        let db =
            DB::open_for_read_only(&rocksdb::Options::default(), path, false).map_err(db_err)?;
        Ok(Catalog {
            db,
            counters_lock: Mutex::new(()),
        })
    }

    /// The stored record of topic `name`, if this region hosts it.
    pub fn topic(&self, name: &str) -> Result<Option<TopicRecord>, StorageError> {
        let key = format!("{TOPIC_PREFIX}{name}");
        match self.db.get(&key).map_err(db_err)? {
            Some(bytes) => decode(key.as_bytes(), &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Whether the catalog knows no topic at all, hosted or deleted: true of a fresh catalog,
    /// which is how a broker notices that `meta/` was lost while topic data is still on disk.
    pub fn knows_no_topics(&self) -> Result<bool, StorageError> {
        for prefix in [TOPIC_PREFIX, TOPIC_STATE_PREFIX] {
            let mode = IteratorMode::From(prefix.as_bytes(), Direction::Forward);
            if let Some(item) = self.db.iterator(mode).next() {
                let (key, _) = item.map_err(db_err)?;
                if key.starts_with(prefix.as_bytes()) {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// The region the data dir is bound to, `(name, id)`, if it was bound.
    pub fn region(&self) -> Result<Option<(String, u32)>, StorageError> {
        match self.db.get(REGION_KEY).map_err(db_err)? {
            Some(bytes) => {
                let bound: RegionBinding = decode(REGION_KEY.as_bytes(), &bytes)?;
                Ok(Some((bound.name, bound.id)))
            }
            None => Ok(None),
        }
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
        self.under(TRANSACTION_PREFIX)
    }

    /// Every `(key without the prefix, value)` whose key starts with `prefix`, in key order.
    fn under(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        let mut out = Vec::new();
        let mode = IteratorMode::From(prefix.as_bytes(), Direction::Forward);
        for item in self.db.iterator(mode) {
            let (key, value) = item.map_err(db_err)?;
            let Some(rest) = key.strip_prefix(prefix.as_bytes()) else {
                break;
            };
            out.push((String::from_utf8_lossy(rest).into_owned(), value.to_vec()));
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

    /// Removes a transaction record (an expired transactional id).
    pub fn delete_transaction(&self, transactional_id: &str) -> Result<(), StorageError> {
        self.db
            .delete_opt(
                format!("{TRANSACTION_PREFIX}{transactional_id}"),
                &sync_writes(),
            )
            .map_err(db_err)
    }

    /// Every SCRAM credential stored before users were replicated (`scram/<mechanism>/<user>`),
    /// keyed `<mechanism>/<user>`: what the broker moves into the security state once.
    pub fn legacy_scram_credentials(&self) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        self.under(SCRAM_PREFIX)
    }

    /// Removes the credentials [`Catalog::legacy_scram_credentials`] listed, once moved.
    pub fn drop_legacy_scram_credentials(&self, keys: &[String]) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        for key in keys {
            batch.delete(format!("{SCRAM_PREFIX}{key}"));
        }
        self.db.write_opt(batch, &sync_writes()).map_err(db_err)
    }

    /// Every stored register of the replicated security state (users' credentials and ACL
    /// bindings), by key.
    pub fn security_entries(&self) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        self.under(SECURITY_PREFIX)
    }

    /// Stores registers of the security state with one synchronous write, so a user or grant
    /// the broker reported changed stays changed after a crash, and one request's changes (or
    /// one peer's merge) land together.
    pub fn put_security_entries(&self, entries: &[(String, Vec<u8>)]) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        for (key, entry) in entries {
            batch.put(format!("{SECURITY_PREFIX}{key}"), entry);
        }
        self.db.write_opt(batch, &sync_writes()).map_err(db_err)
    }

    /// Every stored replicated topic state, by name.
    pub fn topic_states(&self) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        self.under(TOPIC_STATE_PREFIX)
    }

    /// Stores a topic's replicated state and, atomically with it, its hosted record (`Some`) or
    /// the removal of its record (`None`), with one synchronous write.
    pub fn put_topic_state(
        &self,
        name: &str,
        state: &[u8],
        record: Option<&TopicRecord>,
    ) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.put(format!("{TOPIC_STATE_PREFIX}{name}"), state);
        match record {
            Some(record) => batch.put(format!("{TOPIC_PREFIX}{name}"), encode(record)?),
            None => batch.delete(format!("{TOPIC_PREFIX}{name}")),
        }
        self.db.write_opt(batch, &sync_writes()).map_err(db_err)
    }

    /// Binds the data directory to the region `name` with id `id` on first start, and refuses a
    /// later start under another name or id: a data dir holds one region's batches, stamped with
    /// its id, and must never be served as another region's.
    pub fn bind_region(&self, name: &str, id: u32) -> Result<(), StorageError> {
        let wanted = RegionBinding {
            name: name.to_string(),
            id,
        };
        if let Some(bytes) = self.db.get(REGION_KEY).map_err(db_err)? {
            let bound: RegionBinding = decode(REGION_KEY.as_bytes(), &bytes)?;
            if bound != wanted {
                return Err(StorageError::Corrupt(format!(
                    "this data dir belongs to region {:?} (id {}), not {name:?} (id {id})",
                    bound.name, bound.id
                )));
            }
            return Ok(());
        }
        self.db
            .put_opt(REGION_KEY, encode(&wanted)?, &sync_writes())
            .map_err(db_err)
    }

    /// The first producer id counter not reserved yet: every counter below it was handed out
    /// (or reserved to be) by this region, in this run or an earlier one.
    pub fn producer_ids_reserved(&self) -> Result<u64, StorageError> {
        match self.db.get(NEXT_PRODUCER_ID_KEY).map_err(db_err)? {
            Some(bytes) => decode(NEXT_PRODUCER_ID_KEY.as_bytes(), &bytes),
            None => Ok(0),
        }
    }

    /// Raises the producer-id counter to at least `next` (never lowers it), with a synchronous
    /// write: the metadata rebuild moves it past every producer id the logs hold.
    pub fn reserve_producer_ids_below(&self, next: u64) -> Result<u64, StorageError> {
        let _guard = self.counters_lock.lock().unwrap_or_else(|e| e.into_inner());
        let current: u64 = match self.db.get(NEXT_PRODUCER_ID_KEY).map_err(db_err)? {
            Some(bytes) => decode(NEXT_PRODUCER_ID_KEY.as_bytes(), &bytes)?,
            None => 0,
        };
        let next = current.max(next);
        self.db
            .put_opt(NEXT_PRODUCER_ID_KEY, encode(&next)?, &sync_writes())
            .map_err(db_err)?;
        Ok(next)
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
        assert_eq!(catalog.reserve_producer_ids_below(5_000).unwrap(), 5_000);
        assert_eq!(catalog.reserve_producer_ids_below(7).unwrap(), 5_000);
        assert_eq!(catalog.reserve_producer_ids(1).unwrap(), 5_000);
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
            catalog.put_topic_state("a", b"state-a", Some(&a)).unwrap();
            catalog.put_topic_state("b", b"state-b", Some(&b)).unwrap();
            catalog.bind_region("zzz", 9).unwrap();
            catalog.put_topic_state("b", b"deleted-b", None).unwrap();
        }
        let catalog = Catalog::open(dir.path()).unwrap();
        assert_eq!(catalog.topic("a").unwrap(), Some(a.clone()));
        assert_eq!(catalog.topic("b").unwrap(), None);
        assert!(!catalog.knows_no_topics().unwrap());
        assert_eq!(catalog.region().unwrap(), Some(("zzz".to_string(), 9)));
        assert_eq!(catalog.topics().unwrap(), vec![a]);
        assert_eq!(
            catalog.topic_states().unwrap(),
            vec![
                ("a".to_string(), b"state-a".to_vec()),
                ("b".to_string(), b"deleted-b".to_vec())
            ]
        );
    }

    #[test]
    fn a_data_dir_stays_bound_to_its_region() {
        let dir = tempfile::tempdir().unwrap();
        Catalog::open(dir.path())
            .unwrap()
            .bind_region("east", 7)
            .unwrap();
        let catalog = Catalog::open(dir.path()).unwrap();
        assert!(catalog.knows_no_topics().unwrap());
        catalog.bind_region("east", 7).unwrap();
        assert!(catalog.bind_region("west", 8).is_err());
        assert!(catalog.bind_region("east", 8).is_err());
    }
}
