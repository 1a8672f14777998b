//! Committed consumer-group offsets in their own RocksDB instance (the broker opens it at
//! `<data-dir>/groups`, apart from the topic catalog at `<data-dir>/meta`, so that offset-commit
//! traffic never competes with catalog writes and the two can evolve separately).
//!
//! ## Keys and values (version 0)
//! - `o` + u16 BE length + group + u16 BE length + topic + i32 BE partition -> JSON
//!   [`CommittedOffset`]. Length prefixes make the key unambiguous for any group or topic name
//!   (group ids are arbitrary strings) and keep one group's offsets contiguous, so a prefix scan
//!   reads a group and a seek skips to the next.
//!
//! - `m` + group -> the group's membership as of its last completed rebalance (bytes the
//!   coordinator encodes), so members keep their generation across a restart.
//!
//! Every offset write is synchronous (WAL fsynced) so an acknowledged OffsetCommit survives a
//! crash; membership writes are not (a membership lost with the page cache only makes members
//! rejoin, as they would without it).

use std::path::Path;

use rocksdb::{Direction, IteratorMode, WriteBatch, DB};
use serde::{Deserialize, Serialize};

use crate::error::StorageError;
use crate::rocks::{self, db_err, sync_writes};

const OFFSET_TAG: u8 = b'o';
const MEMBERSHIP_TAG: u8 = b'm';

/// The longest group id or topic name we store; longer ones are refused before any write.
pub const GROUP_NAME_BYTES_MAX: usize = u16::MAX as usize;

/// One committed offset and what came with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    /// The next offset the group will read.
    pub offset: i64,
    /// Leader epoch the client saw at the committed offset (-1 if unknown).
    pub leader_epoch: i32,
    /// Client-supplied metadata string.
    pub metadata: Option<String>,
    /// When the commit was accepted, ms since the epoch (drives retention).
    pub commit_ms: i64,
}

/// One partition's offset in a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetEntry {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// What is committed.
    pub committed: CommittedOffset,
}

/// Durable committed offsets of every group of this region.
pub struct GroupStore {
    db: DB,
}

fn push_name(key: &mut Vec<u8>, name: &str) -> Result<(), StorageError> {
    let len = u16::try_from(name.len())
        .map_err(|_| StorageError::Db(format!("name of {} bytes is too long", name.len())))?;
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(name.as_bytes());
    Ok(())
}

fn group_prefix(group: &str) -> Result<Vec<u8>, StorageError> {
    let mut key = vec![OFFSET_TAG];
    push_name(&mut key, group)?;
    Ok(key)
}

fn membership_key(group: &str) -> Vec<u8> {
    let mut key = vec![MEMBERSHIP_TAG];
    key.extend_from_slice(group.as_bytes());
    key
}

fn offset_key(group: &str, topic: &str, partition: i32) -> Result<Vec<u8>, StorageError> {
    let mut key = group_prefix(group)?;
    push_name(&mut key, topic)?;
    key.extend_from_slice(&partition.to_be_bytes());
    Ok(key)
}

/// Splits a length-prefixed name off the front of `bytes`.
fn take_name(bytes: &[u8]) -> Option<(String, &[u8])> {
    let len = usize::from(u16::from_be_bytes([*bytes.first()?, *bytes.get(1)?]));
    let name = bytes.get(2..2 + len)?;
    Some((String::from_utf8(name.to_vec()).ok()?, &bytes[2 + len..]))
}

/// `(group, topic, partition)` of an offset key.
fn parse_key(key: &[u8]) -> Result<(String, String, i32), StorageError> {
    let corrupt = || StorageError::Corrupt(format!("group store key {key:?}"));
    let rest = key.strip_prefix(&[OFFSET_TAG]).ok_or_else(corrupt)?;
    let (group, rest) = take_name(rest).ok_or_else(corrupt)?;
    let (topic, rest) = take_name(rest).ok_or_else(corrupt)?;
    let partition: [u8; 4] = rest.try_into().map_err(|_| corrupt())?;
    Ok((group, topic, i32::from_be_bytes(partition)))
}

fn decode(key: &[u8], bytes: &[u8]) -> Result<CommittedOffset, StorageError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StorageError::Corrupt(format!("group store key {key:?}: {e}")))
}

impl GroupStore {
    /// Opens (creating if absent) the offsets database at `path`.
    pub fn open(path: &Path) -> Result<GroupStore, StorageError> {
        let db = rocks::open(path)?;
        Ok(GroupStore { db })
    }

    /// Stores every entry of one commit atomically, with a synchronous write.
    pub fn commit(&self, group: &str, entries: &[OffsetEntry]) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        for entry in entries {
            let value = serde_json::to_vec(&entry.committed)
                .map_err(|e| StorageError::Db(format!("encoding offset: {e}")))?;
            batch.put(offset_key(group, &entry.topic, entry.partition)?, value);
        }
        self.db.write_opt(batch, &sync_writes()).map_err(db_err)
    }

    /// Every committed offset of `group`, ordered by topic then partition.
    pub fn fetch(&self, group: &str) -> Result<Vec<OffsetEntry>, StorageError> {
        let prefix = group_prefix(group)?;
        let mut out = Vec::new();
        let mode = IteratorMode::From(&prefix, Direction::Forward);
        for item in self.db.iterator(mode) {
            let (key, value) = item.map_err(db_err)?;
            if !key.starts_with(&prefix) {
                break;
            }
            let (_, topic, partition) = parse_key(&key)?;
            out.push(OffsetEntry {
                topic,
                partition,
                committed: decode(&key, &value)?,
            });
        }
        Ok(out)
    }

    /// The committed offset of one partition, if any.
    pub fn fetch_one(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
    ) -> Result<Option<CommittedOffset>, StorageError> {
        let key = offset_key(group, topic, partition)?;
        match self.db.get(&key).map_err(db_err)? {
            Some(bytes) => decode(&key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Removes every offset of `group` and its membership; returns how many offsets there were.
    pub fn delete_group(&self, group: &str) -> Result<usize, StorageError> {
        let entries = self.fetch(group)?;
        let pairs: Vec<(String, i32)> = entries
            .into_iter()
            .map(|e| (e.topic, e.partition))
            .collect();
        self.delete_offsets(group, &pairs)?;
        self.delete_membership(group)?;
        Ok(pairs.len())
    }

    /// Removes the offsets of the given partitions (absent ones are fine).
    pub fn delete_offsets(
        &self,
        group: &str,
        partitions: &[(String, i32)],
    ) -> Result<(), StorageError> {
        if partitions.is_empty() {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        for (topic, partition) in partitions {
            batch.delete(offset_key(group, topic, *partition)?);
        }
        self.db.write_opt(batch, &sync_writes()).map_err(db_err)
    }

    /// Keeps `group`'s membership (replacing what was kept).
    pub fn save_membership(&self, group: &str, membership: &[u8]) -> Result<(), StorageError> {
        self.db
            .put(membership_key(group), membership)
            .map_err(db_err)
    }

    /// Forgets `group`'s membership (absent is fine).
    pub fn delete_membership(&self, group: &str) -> Result<(), StorageError> {
        self.db.delete(membership_key(group)).map_err(db_err)
    }

    /// Every kept membership, by group id.
    pub fn memberships(&self) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        let mut out = Vec::new();
        let start = [MEMBERSHIP_TAG];
        for item in self
            .db
            .iterator(IteratorMode::From(&start, Direction::Forward))
        {
            let (key, value) = item.map_err(db_err)?;
            let Some(group) = key.strip_prefix(&[MEMBERSHIP_TAG]) else {
                break;
            };
            let group = String::from_utf8(group.to_vec())
                .map_err(|_| StorageError::Corrupt(format!("group store key {key:?}")))?;
            out.push((group, value.to_vec()));
        }
        Ok(out)
    }

    /// Every group that has at least one committed offset, in key order.
    pub fn groups(&self) -> Result<Vec<String>, StorageError> {
        let mut out: Vec<String> = Vec::new();
        let mut start = vec![OFFSET_TAG];
        loop {
            let mut iter = self
                .db
                .iterator(IteratorMode::From(&start, Direction::Forward));
            let Some(item) = iter.next() else { break };
            let (key, _) = item.map_err(db_err)?;
            if key.first() != Some(&OFFSET_TAG) {
                break;
            }
            let (group, _, _) = parse_key(&key)?;
            // Seek past this group's keys: its prefix followed by 0xFF sorts after all of them.
            start = group_prefix(&group)?;
            start.push(0xFF);
            start.push(0xFF);
            out.push(group);
        }
        Ok(out)
    }

    /// Removes the offsets of `group` committed before `cutoff_ms`; returns the partitions removed.
    pub fn expire(&self, group: &str, cutoff_ms: i64) -> Result<Vec<(String, i32)>, StorageError> {
        let expired: Vec<(String, i32)> = self
            .fetch(group)?
            .into_iter()
            .filter(|e| e.committed.commit_ms < cutoff_ms)
            .map(|e| (e.topic, e.partition))
            .collect();
        self.delete_offsets(group, &expired)?;
        Ok(expired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(topic: &str, partition: i32, offset: i64, commit_ms: i64) -> OffsetEntry {
        OffsetEntry {
            topic: topic.into(),
            partition,
            committed: CommittedOffset {
                offset,
                leader_epoch: -1,
                metadata: Some(format!("m{offset}")),
                commit_ms,
            },
        }
    }

    #[test]
    fn committed_offsets_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = GroupStore::open(dir.path()).unwrap();
            store
                .commit("g", &[entry("t", 0, 5, 1), entry("t", 1, 7, 1)])
                .unwrap();
            store.commit("g", &[entry("t", 0, 9, 2)]).unwrap();
        }
        let store = GroupStore::open(dir.path()).unwrap();
        assert_eq!(
            store.fetch("g").unwrap(),
            vec![entry("t", 0, 9, 2), entry("t", 1, 7, 1)]
        );
        assert_eq!(
            store.fetch_one("g", "t", 1).unwrap(),
            Some(entry("t", 1, 7, 1).committed)
        );
        assert_eq!(store.fetch_one("g", "t", 2).unwrap(), None);
    }

    #[test]
    fn memberships_survive_reopen_apart_from_offsets() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = GroupStore::open(dir.path()).unwrap();
            store.commit("g", &[entry("t", 0, 5, 1)]).unwrap();
            store.save_membership("g", b"first").unwrap();
            store.save_membership("g", b"second").unwrap();
            store.save_membership("h", b"other").unwrap();
            store.save_membership("gone", b"x").unwrap();
            store.delete_membership("gone").unwrap();
        }
        let store = GroupStore::open(dir.path()).unwrap();
        assert_eq!(
            store.memberships().unwrap(),
            vec![
                ("g".into(), b"second".to_vec()),
                ("h".into(), b"other".to_vec())
            ]
        );
        assert_eq!(store.groups().unwrap(), vec!["g".to_string()]);
        store.delete_group("g").unwrap();
        assert_eq!(
            store.memberships().unwrap(),
            vec![("h".into(), b"other".to_vec())]
        );
    }

    #[test]
    fn groups_whose_names_are_prefixes_of_each_other_stay_apart() {
        let dir = tempfile::tempdir().unwrap();
        let store = GroupStore::open(dir.path()).unwrap();
        store.commit("a", &[entry("t", 0, 1, 1)]).unwrap();
        store.commit("ab", &[entry("t", 0, 2, 1)]).unwrap();
        store.commit("a\u{0}", &[entry("x", 3, 3, 1)]).unwrap();
        assert_eq!(store.fetch("a").unwrap(), vec![entry("t", 0, 1, 1)]);
        assert_eq!(store.fetch("ab").unwrap(), vec![entry("t", 0, 2, 1)]);
        let mut groups = store.groups().unwrap();
        groups.sort();
        assert_eq!(groups, vec!["a", "a\u{0}", "ab"]);
    }

    #[test]
    fn delete_and_expire_remove_exactly_what_they_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = GroupStore::open(dir.path()).unwrap();
        store
            .commit(
                "g",
                &[
                    entry("t", 0, 1, 100),
                    entry("t", 1, 1, 200),
                    entry("u", 0, 1, 300),
                ],
            )
            .unwrap();
        store.commit("h", &[entry("t", 0, 1, 1)]).unwrap();
        assert_eq!(store.expire("g", 201).unwrap().len(), 2);
        assert_eq!(store.fetch("g").unwrap(), vec![entry("u", 0, 1, 300)]);
        store.delete_offsets("g", &[("u".into(), 0)]).unwrap();
        assert!(store.fetch("g").unwrap().is_empty());
        assert_eq!(store.groups().unwrap(), vec!["h"]);
        assert_eq!(store.delete_group("h").unwrap(), 1);
        assert!(store.groups().unwrap().is_empty());
    }
}
