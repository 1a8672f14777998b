//! Tables: every topic with `cleanup.policy` including `compact` is also a table whose rows are
//! the CRDT merge of every record with the same key (`replication::crdt`, semantics in
//! `docs/tables.md`). The materializer follows each table partition's log up to its last stable
//! offset and stores rows in `<data-dir>/tables`, with the applied offset in the same write, so
//! a restart resumes where it stopped and a lost directory is rebuilt from the log.

mod cleaner;
mod feed;
mod http;
mod materializer;
pub mod records;
mod survivors;

pub use cleaner::{clean_partition, CleanBounds, PassBudget};
pub use http::routes;
pub use materializer::{lag, run};

use std::collections::BTreeMap;

use causeway_replication::crdt::{MergeMode, Stamp, MERGE_CONFIG};
use serde_json::{json, Value};

use crate::topics::PartitionHandle;

/// Bytes a row is counted for in a memory bound (change feeds, compaction passes): its key and
/// its stored encoding.
fn row_bytes(key: &[u8], row: &causeway_replication::crdt::Row) -> u64 {
    (key.len() + row.to_bytes().len()) as u64
}

/// The name a table's rows are stored under: the topic's id, not its name, so a topic deleted
/// and created again under the same name starts with no rows (and a late write of the old
/// topic's materializer can never show through).
pub fn store_name(topic: &crate::topics::Topic) -> String {
    topic.id.simple().to_string()
}

/// The partition's number as stamps carry it (indexes are never negative).
pub fn partition_number(partition: &PartitionHandle) -> u32 {
    u32::try_from(partition.index()).unwrap_or_default()
}

/// A row's version (the stamp of the newest write it holds) as the HTTP API and the change
/// feed show it.
pub fn version_json(stamp: &Stamp) -> Value {
    json!({
        "hlc": stamp.hlc,
        "region": stamp.origin_region,
        "partition": stamp.partition,
        "seq": stamp.origin_seq,
        "index": stamp.index_in_batch,
    })
}

/// Whether a topic with these config overrides is a table.
pub fn is_table(overrides: &BTreeMap<String, String>) -> bool {
    overrides
        .get("cleanup.policy")
        .is_some_and(|policy| policy.split(',').any(|p| p.trim() == "compact"))
}

/// How a table merges its records (`causeway.merge`, default `crdt`).
pub fn merge_mode(overrides: &BTreeMap<String, String>) -> MergeMode {
    overrides
        .get(MERGE_CONFIG)
        .and_then(|mode| MergeMode::parse(mode))
        .unwrap_or(MergeMode::Crdt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn compacted_topics_are_tables() {
        assert!(is_table(&configs(&[("cleanup.policy", "compact")])));
        assert!(is_table(&configs(&[("cleanup.policy", "delete,compact")])));
        assert!(!is_table(&configs(&[("cleanup.policy", "delete")])));
        assert!(!is_table(&configs(&[])));
    }

    #[test]
    fn merge_mode_defaults_to_crdt() {
        assert_eq!(merge_mode(&configs(&[])), MergeMode::Crdt);
        assert_eq!(
            merge_mode(&configs(&[("causeway.merge", "lww")])),
            MergeMode::Lww
        );
    }
}
