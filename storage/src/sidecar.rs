//! The topic sidecar: a copy, next to the data, of what the catalog (`meta/`) says about a topic,
//! so the catalog can be rebuilt from the topic directories if `meta/` is lost or corrupt
//! (`causeway meta rebuild`).
//!
//! ## Where
//! `topics/<name>-0/topic.json`: in the directory of the topic's partition 0. A topic has no
//! directory of its own (each partition is `topics/<name>-<index>/`), and partition 0 is the one
//! every topic has; keeping the file there means it is removed with the data when the topic is
//! deleted, so a sidecar never outlives its topic. Partition logs ignore the file.
//!
//! ## When
//! Written by the broker before the catalog write of every change to the topic (create, config
//! change, added partitions, a peer's catalog change), and at start-up when it is missing or
//! differs from the catalog (data dirs of older versions). Written atomically: temp file, fsync,
//! rename, fsync of the directory, so a crash leaves the old or the new file.
//!
//! ## Format (version 1)
//! JSON: `{"version":1,"topic":"orders","topic_id":"<32 hex digits>","partitions":3,
//! "configs":{"retention.ms":"60000"},"created_ms":1700000000000,"region":"local",
//! "region_id":123,"catalog_state":"<hex>"}`. `region` and `region_id` are the region the data
//! dir is bound to; `catalog_state` is the topic's replicated catalog state (the replication
//! crate's encoding, opaque here), from which the topic id is derived.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::catalog::TopicRecord;
use crate::checkpoint;
use crate::error::{IoContext, StorageError};

/// File name of the sidecar inside partition 0's directory.
pub const SIDECAR_FILE: &str = "topic.json";

/// Version of the sidecar format.
const SIDECAR_VERSION: u32 = 1;

/// What a topic's sidecar holds: its catalog record, the region it was written by, and its
/// replicated catalog state (opaque bytes).
#[derive(Debug, Clone, PartialEq)]
pub struct TopicSidecar {
    /// The topic as the catalog records it.
    pub record: TopicRecord,
    /// Name of the region the data dir is bound to.
    pub region: String,
    /// Id of that region (producer ids and batch stamps carry it).
    pub region_id: u32,
    /// The topic's replicated catalog state, as stored under `topic-state/<name>`.
    pub catalog_state: Vec<u8>,
}

/// The JSON layout (version 1).
#[derive(Serialize, Deserialize)]
struct SidecarJson {
    version: u32,
    topic: String,
    topic_id: String,
    partitions: u32,
    configs: BTreeMap<String, String>,
    created_ms: i64,
    region: String,
    region_id: u32,
    catalog_state: String,
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    let pairs = text.as_bytes().chunks_exact(2);
    if !pairs.remainder().is_empty() {
        return None;
    }
    pairs
        .map(|pair| {
            let high = (pair[0] as char).to_digit(16)?;
            let low = (pair[1] as char).to_digit(16)?;
            u8::try_from(high * 16 + low).ok()
        })
        .collect()
}

impl TopicSidecar {
    /// The sidecar's bytes (format version 1).
    pub fn encode(&self) -> Vec<u8> {
        let json = SidecarJson {
            version: SIDECAR_VERSION,
            topic: self.record.name.clone(),
            topic_id: to_hex(&self.record.id),
            partitions: self.record.partitions,
            configs: self.record.configs.clone(),
            created_ms: self.record.created_ms,
            region: self.region.clone(),
            region_id: self.region_id,
            catalog_state: to_hex(&self.catalog_state),
        };
        let mut bytes = serde_json::to_vec_pretty(&json).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// Parses sidecar bytes; `path` only names the file in the error.
    pub fn decode(bytes: &[u8], path: &Path) -> Result<TopicSidecar, StorageError> {
        let corrupt = |what: String| StorageError::Corrupt(format!("{}: {what}", path.display()));
        let json: SidecarJson =
            serde_json::from_slice(bytes).map_err(|e| corrupt(format!("not a sidecar: {e}")))?;
        if json.version != SIDECAR_VERSION {
            return Err(corrupt(format!("unknown sidecar version {}", json.version)));
        }
        let id: [u8; 16] = from_hex(&json.topic_id)
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| corrupt(format!("topic_id {:?} is not 32 hex digits", json.topic_id)))?;
        let catalog_state = from_hex(&json.catalog_state)
            .ok_or_else(|| corrupt("catalog_state is not hex".to_string()))?;
        Ok(TopicSidecar {
            record: TopicRecord {
                name: json.topic,
                id,
                partitions: json.partitions,
                configs: json.configs,
                created_ms: json.created_ms,
            },
            region: json.region,
            region_id: json.region_id,
            catalog_state,
        })
    }

    /// Reads the sidecar in partition 0's directory `dir`: `None` if there is none, an error if
    /// it cannot be read or parsed.
    pub fn read(dir: &Path) -> Result<Option<TopicSidecar>, StorageError> {
        let path = dir.join(SIDECAR_FILE);
        match checkpoint::read_bytes(dir, SIDECAR_FILE)? {
            Some(bytes) => TopicSidecar::decode(&bytes, &path).map(Some),
            None => Ok(None),
        }
    }

    /// Writes the sidecar into partition 0's directory `dir` (created if absent), atomically and
    /// durably, unless the file already holds exactly these bytes. Returns whether it wrote.
    pub fn write(&self, dir: &Path) -> Result<bool, StorageError> {
        let bytes = self.encode();
        if checkpoint::read_bytes(dir, SIDECAR_FILE)
            .ok()
            .flatten()
            .is_some_and(|current| current == bytes)
        {
            return Ok(false);
        }
        if !dir.exists() {
            std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
            if let Some(parent) = dir.parent() {
                checkpoint::sync_dir(parent)?;
            }
        }
        checkpoint::write_bytes(dir, SIDECAR_FILE, &bytes)?;
        Ok(true)
    }
}

/// One partition directory found under `topics/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionDir {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub index: u32,
    /// The directory.
    pub path: PathBuf,
}

/// The partition directories under `topics_dir` (`<topic>-<index>`), sorted by topic then
/// index, and the names of entries that are not partition directories (for the caller to
/// report). An absent `topics_dir` holds none.
pub fn partition_dirs(topics_dir: &Path) -> Result<(Vec<PartitionDir>, Vec<String>), StorageError> {
    let mut found = Vec::new();
    let mut other = Vec::new();
    let entries = match std::fs::read_dir(topics_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((found, other)),
        Err(e) => {
            return Err(StorageError::io(
                format!("listing {}", topics_dir.display()),
                e,
            ))
        }
    };
    for entry in entries {
        let entry = entry.ctx(|| format!("listing {}", topics_dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_dir = entry
            .file_type()
            .ctx(|| format!("reading the type of {}", entry.path().display()))?
            .is_dir();
        match parse_partition_dir_name(&name) {
            Some((topic, index)) if is_dir => found.push(PartitionDir {
                topic: topic.to_string(),
                index,
                path: entry.path(),
            }),
            _ => other.push(name),
        }
    }
    found.sort_by(|a, b| (&a.topic, a.index).cmp(&(&b.topic, b.index)));
    other.sort();
    Ok((found, other))
}

/// Splits `<topic>-<index>` at its last `-`; the index must be canonical decimal (`0`, `12`,
/// never `012`) so every directory maps back to exactly one name.
pub fn parse_partition_dir_name(name: &str) -> Option<(&str, u32)> {
    let (topic, index) = name.rsplit_once('-')?;
    if topic.is_empty()
        || index.is_empty()
        || !index.bytes().all(|b| b.is_ascii_digit())
        || (index.len() > 1 && index.starts_with('0'))
    {
        return None;
    }
    Some((topic, index.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sidecar() -> TopicSidecar {
        let mut configs = BTreeMap::new();
        configs.insert("retention.ms".to_string(), "60000".to_string());
        configs.insert("cleanup.policy".to_string(), "compact".to_string());
        TopicSidecar {
            record: TopicRecord {
                name: "orders.v1-eu".into(),
                id: [0xab, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 0xff],
                partitions: 3,
                configs,
                created_ms: 1_700_000_000_123,
            },
            region: "eu".into(),
            region_id: 77,
            catalog_state: vec![1, 0, 1, 0x9c, 0x80, 7, 0],
        }
    }

    #[test]
    fn a_sidecar_round_trips_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let partition0 = dir.path().join("topics").join("orders.v1-eu-0");
        let written = sidecar();
        assert!(written.write(&partition0).unwrap());
        assert!(!written.write(&partition0).unwrap(), "same bytes: no write");
        assert_eq!(
            TopicSidecar::read(&partition0).unwrap(),
            Some(written.clone())
        );
        let text = std::fs::read_to_string(partition0.join(SIDECAR_FILE)).unwrap();
        assert!(
            text.contains("\"topic_id\": \"ab0102030405060708090a0b0c0d0eff\""),
            "{text}"
        );
        assert!(text.contains("\"retention.ms\": \"60000\""), "{text}");
        let mut changed = written.clone();
        changed.record.partitions = 5;
        assert!(changed.write(&partition0).unwrap());
        assert_eq!(TopicSidecar::read(&partition0).unwrap(), Some(changed));
        assert!(!partition0.join("topic.json.tmp").exists());
    }

    #[test]
    fn a_missing_sidecar_is_none_and_a_damaged_one_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(TopicSidecar::read(dir.path()).unwrap(), None);
        std::fs::write(dir.path().join(SIDECAR_FILE), b"{\"version\":1,").unwrap();
        assert!(TopicSidecar::read(dir.path()).is_err());
        let mut bytes = sidecar().encode();
        let at = bytes.iter().position(|&b| b == b'1').unwrap();
        bytes[at] = b'9'; // "version": 9
        std::fs::write(dir.path().join(SIDECAR_FILE), &bytes).unwrap();
        assert!(TopicSidecar::read(dir.path()).is_err());
    }

    #[test]
    fn partition_directory_names_map_back_to_one_topic_and_index() {
        assert_eq!(parse_partition_dir_name("a-0"), Some(("a", 0)));
        assert_eq!(parse_partition_dir_name("a-1-12"), Some(("a-1", 12)));
        assert_eq!(parse_partition_dir_name("a-01"), None);
        assert_eq!(parse_partition_dir_name("a-"), None);
        assert_eq!(parse_partition_dir_name("-3"), None);
        assert_eq!(parse_partition_dir_name("a-x"), None);
        let dir = tempfile::tempdir().unwrap();
        for name in ["b-1", "b-0", "a-1-0", "stray"] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
        }
        std::fs::write(dir.path().join("c-0"), b"a file").unwrap();
        let (found, other) = partition_dirs(dir.path()).unwrap();
        let names: Vec<_> = found.iter().map(|p| (p.topic.as_str(), p.index)).collect();
        assert_eq!(names, vec![("a-1", 0), ("b", 0), ("b", 1)]);
        assert_eq!(other, vec!["c-0".to_string(), "stray".to_string()]);
    }
}
