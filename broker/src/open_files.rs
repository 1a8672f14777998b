//! The process's open-file limit. Every partition keeps its active segment's four files open
//! (log, causal entries, offset index and time index), closed segments share a cache of at
//! most `--max-open-segment-files` read handles (`storage/src/file_cache.rs`), and every
//! connection holds one, so the soft limit many systems start processes with (1,024) runs out
//! long before `--max-partitions` (4,000 by default), and running out fails appends, rolls and
//! topic creation. Kafka's and
//! Redpanda's guides ask operators to raise it; the broker raises its own soft limit to the hard
//! limit at start, and says so when even the hard limit is below what its options allow.

use crate::config::BrokerOptions;

/// Files each hosted partition keeps open (its active segment's four files).
const FILES_PER_PARTITION: u64 = 4;

/// Files the broker opens besides partitions and connections (RocksDB, listeners, logs).
const FILES_BESIDES: u64 = 1_024;

/// How many files the options let the broker hold open at once.
pub fn files_needed(options: &BrokerOptions) -> u64 {
    u64::from(options.max_partitions) * FILES_PER_PARTITION
        + u64::from(options.max_open_segment_files)
        + u64::from(options.max_connections)
        + FILES_BESIDES
}

/// Raises the soft open-file limit to the hard limit and logs the outcome.
pub fn raise_limit(options: &BrokerOptions) {
    let needed = files_needed(options);
    let before = rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft);
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < needed => tracing::warn!(
            open_files_limit = limit,
            needed,
            "the open-file limit is below what --max-partitions, --max-open-segment-files and --max-connections allow; raise the hard limit (ulimit -Hn, LimitNOFILE=) or lower those options"
        ),
        Ok(limit) => tracing::info!(
            open_files_limit = limit,
            was = before.unwrap_or(limit),
            "open-file limit"
        ),
        Err(error) => tracing::warn!(%error, "cannot read or raise the open-file limit"),
    }
}
