//! Partition-level tests, one file per area; shared helpers live here.

mod append_read;
mod compaction;
mod damage;
mod durability;
mod producers;
mod properties;
mod recovery;
mod retention;

use std::path::Path;

use crate::batch::test_batch;
use crate::{AppendResult, CausalMeta, LogConfig, Partition};

/// Small segments and dense indexes so a few batches exercise rolls and index lookups.
fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 1000,
        index_interval_bytes: 150,
        retention_ms: -1,
        ..LogConfig::default()
    }
}

fn open(dir: &Path, config: LogConfig) -> Partition {
    Partition::open(dir, config, 0).unwrap()
}

fn meta(seq: u64) -> CausalMeta {
    CausalMeta {
        origin_region: 1,
        origin_seq: seq,
        hlc: seq * 10,
        deps: vec![(1, seq)],
    }
}

/// The stamp of the next batch of region 1 after whatever `p` holds.
fn next_meta(p: &Partition) -> CausalMeta {
    meta(p.last_causal().map_or(1, |m| m.origin_seq + 1))
}

/// Appends a `count`-record batch with `payload` bytes and timestamp `ts`, stamping the causal
/// meta with the previous sequence + 1.
fn append(p: &Partition, count: i32, ts: i64, payload: usize) -> AppendResult {
    let b = test_batch(count, ts, payload);
    p.append(&b, ts, &next_meta(p)).unwrap()
}

/// The expected stored bytes of a batch appended at `base` (offsets assigned, epoch 0).
fn stored(count: i32, ts: i64, payload: usize, base: i64) -> Vec<u8> {
    let mut b = test_batch(count, ts, payload);
    crate::assign_offsets(&mut b, base, 0);
    b
}

/// Base offsets of every batch in `records`.
fn bases(records: &[u8]) -> Vec<i64> {
    let ranges = crate::split_batches(records, usize::MAX).unwrap();
    ranges
        .into_iter()
        .map(|r| crate::BatchHeader::parse(&records[r]).unwrap().base_offset)
        .collect()
}

/// Reads the whole log from its start, one read per call, following the offsets.
fn read_all(p: &Partition) -> Vec<u8> {
    let mut out = Vec::new();
    let mut offset = p.log_start_offset();
    while offset < p.log_end_offset() {
        let r = p.read(offset, 1 << 20).unwrap();
        assert!(!r.records.is_empty());
        let ranges = crate::split_batches(&r.records, usize::MAX).unwrap();
        let last = &r.records[ranges[ranges.len() - 1].clone()];
        offset = crate::BatchHeader::parse(last).unwrap().last_offset() + 1;
        out.extend_from_slice(&r.records);
    }
    out
}
