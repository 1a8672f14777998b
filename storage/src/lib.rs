//! Causeway's storage: the partitioned segment log and the RocksDB catalog. No sockets and no
//! Kafka request types: record batches are opaque bytes behind a header view.
//!
//! Modules and what each owns:
//! - [`batch`] owns the v2 record batch header view, produce-side validation (`split_batches`) and
//!   the in-place edits (offset assignment, LogAppendTime).
//! - [`causal`] owns `CausalMeta` and the `.causal` per-batch index format.
//! - [`control`] owns transaction control batches (commit/abort markers).
//! - [`config`] owns topic configs (Kafka names, defaults, validation) and `LogConfig`.
//! - `index` owns the sparse `.index` / `.timeindex` formats and in-memory lookups.
//! - `segment` owns one segment's files: append, positioned reads, recovery scan, index rebuild.
//! - `checkpoint` owns atomic checkpoint files (log start offset, clean-shutdown marker).
//! - `retention` owns the pure decision of which old segments to delete.
//! - [`partition`] owns one partition's log: locking, group commit, recovery on open, reads,
//!   timestamp lookups, DeleteRecords, retention, clean shutdown; `partition::compaction` owns
//!   the cleaner's segment rewrite and crash-safe swap (which records survive is the caller's).
//! - [`producers`] owns idempotent-producer state (sequence checks, deduplication) and its
//!   snapshot format.
//! - [`catalog`] owns topic records and region ids in RocksDB.
//! - [`sidecar`] owns the topic sidecar (`topic.json`, a copy of the topic's catalog entry next
//!   to its data) and the partition directory names under `topics/`.
//! - [`data_dir`] owns the data dir lock (`broker.lock`).
//! - [`inspect`] owns the read-only walk over a partition directory (producer ids, open
//!   transactions) that `causeway meta rebuild` uses.
//! - [`table_store`] owns table rows and the materializer's applied offsets in RocksDB.
//! - `rocks` owns what the RocksDB stores share (opening, error mapping, durable writes).
//! - [`error`] owns `StorageError`, the one error type.
//! - [`telemetry`] owns the metric names this crate emits.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod batch;
pub mod catalog;
pub mod causal;
mod checkpoint;
pub mod config;
pub mod control;
pub mod data_dir;
pub mod error;
mod file_cache;
pub mod group_store;
mod index;
pub mod inspect;
pub mod partition;
pub mod producers;
mod retention;
mod rocks;
mod segment;
pub mod sidecar;
pub mod table_store;
pub mod telemetry;

#[cfg(test)]
mod tests;

pub use batch::{
    assign_offsets, mark_cleaned, split_batches, stamp_log_append_time, whole_batches,
    with_records, BatchError, BatchHeader, WholeBatches, BATCH_HEADER_BYTES,
};
pub use catalog::{Catalog, TopicRecord};
pub use causal::CausalMeta;
pub use config::{
    log_config_from, validate_topic_config, validate_topic_config_set, CompressionType,
    ConfigError, LogConfig, TimestampType, TopicConfigDef, TOPIC_CONFIGS,
};
pub use control::{control_batch, control_type, ControlType};
pub use data_dir::{disk_space, DataDirLock};
pub use error::StorageError;
pub use file_cache::set_open_segment_files_max;
pub use group_store::{CommittedOffset, GroupStore, OffsetEntry};
pub use inspect::{scan_partition, PartitionScan};
pub use partition::compaction::{
    CompactionPlan, SegmentSnapshot, SegmentWriter, StagedSegment, StoredBatch, SwapReport,
};
pub use partition::{
    remove_partition_dir, AppendResult, DamagedRange, MaintenanceReport, Partition, ReadResult,
    ScrubStep,
};
pub use producers::{
    producer_region, AbortedTransaction, ActiveProducer, OpenTransaction, ProducerStates,
    SequenceError, PRODUCER_ID_COUNTER_BITS,
};
pub use sidecar::{partition_dirs, PartitionDir, TopicSidecar};
pub use table_store::TableStore;
