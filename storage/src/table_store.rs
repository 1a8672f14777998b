//! Table rows and the materializer's progress, in their own RocksDB instance (the broker opens
//! it at `<data-dir>/tables`). Everything here is derived from the log: losing the directory
//! loses nothing, the materializer rebuilds it from offset 0.
//!
//! ## Keys and values (version 0)
//! - `r` + topic + `0x00` + record key -> the row's canonical bytes (the CRDT's own encoding).
//!   Topic names never contain `0x00`, so one topic's rows are contiguous and sorted by key,
//!   and a prefix scan is a seek.
//! - `a` + topic + `0x00` + i32 BE partition -> i64 BE: the next offset to apply.
//! - `c` + topic + `0x00` -> i64 BE: how many rows are live (written and not deleted).
//!
//! Rows and the applied offset of a partition are written in one batch, so after a crash the
//! two agree: either a chunk of records was applied and its offset recorded, or neither. The
//! WAL is not fsynced: a lost write only means re-applying records, which CRDT merges absorb
//! (applying a write twice changes nothing).

use std::path::Path;

use rocksdb::{Direction, IteratorMode, WriteBatch, DB};

use crate::error::StorageError;
use crate::rocks::{self, db_err};

const ROW_TAG: u8 = b'r';

/// A row as stored: its key and its encoded state.
pub type StoredRow = (Vec<u8>, Vec<u8>);
const APPLIED_TAG: u8 = b'a';
const LIVE_ROWS_TAG: u8 = b'c';

/// Rows of every table of this region.
pub struct TableStore {
    db: DB,
}

fn topic_prefix(tag: u8, topic: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(topic.len() + 2);
    key.push(tag);
    key.extend_from_slice(topic.as_bytes());
    key.push(0);
    key
}

fn row_key(topic: &str, key: &[u8]) -> Vec<u8> {
    let mut full = topic_prefix(ROW_TAG, topic);
    full.extend_from_slice(key);
    full
}

fn applied_key(topic: &str, partition: i32) -> Vec<u8> {
    let mut full = topic_prefix(APPLIED_TAG, topic);
    full.extend_from_slice(&partition.to_be_bytes());
    full
}

impl TableStore {
    /// Opens (creating if absent) the store at `path`.
    pub fn open(path: &Path) -> Result<TableStore, StorageError> {
        Ok(TableStore {
            db: rocks::open(path)?,
        })
    }

    /// The next offset of `topic`/`partition` to apply (0 when nothing was applied).
    pub fn applied(&self, topic: &str, partition: i32) -> Result<i64, StorageError> {
        match self.db.get(applied_key(topic, partition)).map_err(db_err)? {
            None => Ok(0),
            Some(bytes) => bytes
                .as_slice()
                .try_into()
                .map(i64::from_be_bytes)
                .map_err(|_| {
                    StorageError::Corrupt(format!("applied offset of {topic}-{partition}"))
                }),
        }
    }

    /// The stored bytes of one row.
    pub fn row(&self, topic: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.db.get(row_key(topic, key)).map_err(db_err)
    }

    /// Stores changed rows, the partition's new applied offset and the change in live rows
    /// atomically. One writer per table (the materializer) keeps the count exact.
    pub fn commit(
        &self,
        topic: &str,
        partition: i32,
        next_offset: i64,
        rows: &[StoredRow],
        live_rows_delta: i64,
    ) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        for (key, row) in rows {
            batch.put(row_key(topic, key), row);
        }
        batch.put(applied_key(topic, partition), next_offset.to_be_bytes());
        if live_rows_delta != 0 {
            let live = self.live_rows(topic)? + live_rows_delta;
            batch.put(topic_prefix(LIVE_ROWS_TAG, topic), live.to_be_bytes());
        }
        self.db.write(batch).map_err(db_err)
    }

    /// How many rows of `topic` are live.
    pub fn live_rows(&self, topic: &str) -> Result<i64, StorageError> {
        match self
            .db
            .get(topic_prefix(LIVE_ROWS_TAG, topic))
            .map_err(db_err)?
        {
            None => Ok(0),
            Some(bytes) => bytes
                .as_slice()
                .try_into()
                .map(i64::from_be_bytes)
                .map_err(|_| StorageError::Corrupt(format!("live row count of {topic}"))),
        }
    }

    /// Up to `limit` rows of `topic` whose keys start with `prefix`, in key order, starting
    /// after `after` when given (pagination).
    pub fn scan(
        &self,
        topic: &str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<StoredRow>, StorageError> {
        let table = topic_prefix(ROW_TAG, topic);
        let wanted = row_key(topic, prefix);
        let start = match after {
            Some(after) if row_key(topic, after) >= wanted => {
                let mut start = row_key(topic, after);
                start.push(0);
                start
            }
            _ => wanted.clone(),
        };
        let mut out = Vec::new();
        for item in self
            .db
            .iterator(IteratorMode::From(&start, Direction::Forward))
        {
            let (key, value) = item.map_err(db_err)?;
            if !key.starts_with(&wanted) || out.len() >= limit {
                break;
            }
            out.push((key[table.len()..].to_vec(), value.to_vec()));
        }
        Ok(out)
    }

    /// Forgets a table (its topic was deleted or stopped being compacted).
    pub fn drop_table(&self, topic: &str) -> Result<(), StorageError> {
        for tag in [ROW_TAG, APPLIED_TAG, LIVE_ROWS_TAG] {
            let from = topic_prefix(tag, topic);
            let mut to = from.clone();
            if let Some(last) = to.last_mut() {
                *last = 1;
            }
            let mut batch = WriteBatch::default();
            batch.delete_range(&from, &to);
            self.db.write(batch).map_err(db_err)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_and_applied_offsets_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = TableStore::open(dir.path()).unwrap();
            store
                .commit("t", 0, 7, &[(b"a".to_vec(), b"row-a".to_vec())], 0)
                .unwrap();
        }
        let store = TableStore::open(dir.path()).unwrap();
        assert_eq!(store.applied("t", 0).unwrap(), 7);
        assert_eq!(store.applied("t", 1).unwrap(), 0);
        assert_eq!(store.row("t", b"a").unwrap(), Some(b"row-a".to_vec()));
    }

    #[test]
    fn scans_page_through_one_table_by_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let store = TableStore::open(dir.path()).unwrap();
        let rows: Vec<(Vec<u8>, Vec<u8>)> = ["user:1", "user:2", "user:3", "other"]
            .iter()
            .map(|k| (k.as_bytes().to_vec(), b"x".to_vec()))
            .collect();
        store.commit("t", 0, 4, &rows, 0).unwrap();
        store
            .commit("t2", 0, 1, &[(b"user:9".to_vec(), b"y".to_vec())], 0)
            .unwrap();
        let page = store.scan("t", b"user:", None, 2).unwrap();
        let keys: Vec<&[u8]> = page.iter().map(|(k, _)| k.as_slice()).collect();
        assert_eq!(keys, vec![b"user:1".as_slice(), b"user:2"]);
        let next = store.scan("t", b"user:", Some(b"user:2"), 2).unwrap();
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].0, b"user:3");
        assert_eq!(store.scan("t", b"", None, 10).unwrap().len(), 4);
    }

    #[test]
    fn live_row_counts_add_up_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = TableStore::open(dir.path()).unwrap();
            store.commit("t", 0, 1, &[], 3).unwrap();
            store.commit("t", 1, 1, &[], -1).unwrap();
        }
        let store = TableStore::open(dir.path()).unwrap();
        assert_eq!(store.live_rows("t").unwrap(), 2);
        assert_eq!(store.live_rows("other").unwrap(), 0);
    }

    #[test]
    fn dropping_a_table_leaves_others() {
        let dir = tempfile::tempdir().unwrap();
        let store = TableStore::open(dir.path()).unwrap();
        store
            .commit("t", 0, 1, &[(b"a".to_vec(), b"1".to_vec())], 0)
            .unwrap();
        store
            .commit("t2", 0, 1, &[(b"a".to_vec(), b"2".to_vec())], 0)
            .unwrap();
        store.drop_table("t").unwrap();
        assert_eq!(store.row("t", b"a").unwrap(), None);
        assert_eq!(store.applied("t", 0).unwrap(), 0);
        assert_eq!(store.row("t2", b"a").unwrap(), Some(b"2".to_vec()));
    }
}
