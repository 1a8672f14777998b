//! Committed positions translated between regions (`causeway_broker::positions::frontier`),
//! checked over random causal histories written to real partitions through the broker's
//! replication adapter ([`ReplicaLog`]): region A's log and region B's log hold the same batches
//! (B possibly only a causally closed part of them) in two different causal orders, a group
//! commits a random offset in A (between batches or inside one), and the position must resume
//! in B exactly at the first record A did not consume (so nothing is lost and no earlier offset
//! would do), and count exactly the records of B it will see again.
//!
//! `CAUSEWAY_POSITION_CASES=N` runs N histories (default 300).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use causeway_broker::positions::frontier::{coverage, position_at, resume_at};
use causeway_broker::replication::log::ReplicaLog;
use causeway_broker::wall_clock::now_ms;
use causeway_protocol::plain_batch::encode_plain_batch;
use causeway_replication::delivery::{Batch, BatchId, BatchLog};
use causeway_replication::sim::SimRng;
use causeway_replication::VectorClock;
use causeway_storage::{CausalMeta, LogConfig, Partition};
use tempfile::TempDir;

/// One batch of the history: its metadata and how many records it holds.
#[derive(Clone)]
struct HistoryBatch {
    meta: CausalMeta,
    records: u32,
}

/// A random causal history: regions write batches with what they have seen as dependencies,
/// and now and then learn what another region has seen.
fn history(rng: &mut SimRng) -> Vec<HistoryBatch> {
    let regions = rng.range(2, 4) as u32;
    let mut known = vec![VectorClock::default(); regions as usize];
    let mut out = Vec::new();
    let batches = rng.range(1, 60);
    while (out.len() as u64) < batches {
        let region = rng.range(0, u64::from(regions) - 1) as usize;
        if rng.chance(300_000) {
            let other = rng.range(0, u64::from(regions) - 1) as usize;
            for (origin, seq) in known[other].to_deps() {
                known[region].advance(origin, seq);
            }
            continue;
        }
        let origin = region as u32 + 1;
        let seq = known[region].get(origin) + 1;
        let meta = CausalMeta {
            origin_region: origin,
            origin_seq: seq,
            hlc: out.len() as u64 + 1,
            deps: known[region]
                .to_deps()
                .into_iter()
                .filter(|&(o, _)| o != origin)
                .collect(),
        };
        known[region].advance(origin, seq);
        out.push(HistoryBatch {
            meta,
            records: rng.range(1, 4) as u32,
        });
    }
    out
}

/// A random causal order of the history, cut after a random causally closed part when `partial`.
fn causal_order(rng: &mut SimRng, history: &[HistoryBatch], partial: bool) -> Vec<HistoryBatch> {
    let mut placed = VectorClock::default();
    let mut left: Vec<&HistoryBatch> = history.iter().collect();
    let mut out = Vec::new();
    let keep = if partial {
        rng.range(0, history.len() as u64) as usize
    } else {
        history.len()
    };
    while out.len() < keep {
        let ready: Vec<usize> = (0..left.len())
            .filter(|&i| {
                let meta = &left[i].meta;
                placed.get(meta.origin_region) + 1 == meta.origin_seq
                    && meta.deps.iter().all(|&(o, s)| placed.get(o) >= s)
            })
            .collect();
        let pick = ready[rng.range(0, ready.len() as u64 - 1) as usize];
        let batch = left.remove(pick);
        placed.advance(batch.meta.origin_region, batch.meta.origin_seq);
        out.push(batch.clone());
    }
    out
}

fn encoded(batch: &HistoryBatch) -> Bytes {
    let records: Vec<(Option<Bytes>, Option<Bytes>)> = (0..batch.records)
        .map(|i| {
            let value = format!("{}-{}-{i}", batch.meta.origin_region, batch.meta.origin_seq);
            (None, Some(Bytes::from(value)))
        })
        .collect();
    encode_plain_batch(&records, 1)
        .expect("a batch encodes")
        .freeze()
}

/// One region's log: the partition, the adapter, its clock, and per offset the record there
/// as `(batch, index in batch)`.
struct RegionLog {
    partition: Arc<Partition>,
    log: ReplicaLog,
    clock: VectorClock,
    records: Vec<(BatchId, u32)>,
}

fn write(dir: &std::path::Path, order: &[HistoryBatch]) -> RegionLog {
    let config = LogConfig {
        segment_bytes: 1_024,
        index_interval_bytes: 128,
        ..LogConfig::default()
    };
    let partition = Arc::new(Partition::open(dir, config, now_ms()).expect("partition opens"));
    let mut log = ReplicaLog::open(Arc::clone(&partition)).expect("adapter opens");
    let mut clock = VectorClock::default();
    let mut records = Vec::new();
    for batch in order {
        log.append(Batch {
            meta: batch.meta.clone(),
            payload: encoded(batch),
        })
        .expect("a causal batch appends");
        clock.advance(batch.meta.origin_region, batch.meta.origin_seq);
        records.extend((0..batch.records).map(|i| (batch.meta.id(), i)));
    }
    RegionLog {
        partition,
        log,
        clock,
        records,
    }
}

#[test]
fn a_position_committed_in_one_region_resumes_in_another_at_the_first_record_not_consumed() {
    let cases: u64 = std::env::var("CAUSEWAY_POSITION_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let root = TempDir::new().expect("temp dir");
    let (mut partial_resumes, mut repeats_seen, mut missing_seen) = (0, 0, 0);
    for case in 0..cases {
        let mut rng = SimRng::new(case);
        let history = history(&mut rng);
        let a_order = causal_order(&mut rng, &history, false);
        let b_lags = rng.chance(300_000);
        let b_order = causal_order(&mut rng, &history, b_lags);
        let a = write(&root.path().join(format!("{case}-a")), &a_order);
        let b = write(&root.path().join(format!("{case}-b")), &b_order);
        let sizes: BTreeMap<BatchId, u32> =
            history.iter().map(|h| (h.meta.id(), h.records)).collect();
        for committed in 0..=a.records.len() as i64 {
            let context = format!("case {case}, committed {committed} in A");
            let position = position_at(&a.partition, committed, |below| {
                a.log.clock_below(below, &a.clock)
            })
            .expect("position in A");
            let resume = resume_at(&b.partition, &position, |frontier, partial, from| {
                coverage(&b.log, &b.clock, frontier, partial, from)
            })
            .expect("resume in B");
            let consumed: HashSet<(BatchId, u32)> =
                a.records[..committed as usize].iter().copied().collect();
            // Exactly where B must resume: its first record A did not consume.
            let expected = b
                .records
                .iter()
                .position(|r| !consumed.contains(r))
                .unwrap_or(b.records.len()) as i64;
            assert_eq!(resume.offset, expected, "{context}");
            // The records B holds at or after it that A consumed are exactly the repeats; the
            // consumed records of the batch A stopped inside count even while B lacks it.
            let after: usize = b.records[expected as usize..]
                .iter()
                .filter(|r| consumed.contains(r))
                .count();
            let partial_unheld = position.partial.map_or(0, |p| {
                let id = BatchId {
                    origin: p.origin,
                    seq: p.seq,
                };
                let held = b.records.iter().any(|r| r.0 == id);
                if held {
                    0
                } else {
                    p.consumed
                }
            });
            assert_eq!(
                resume.repeat_records,
                after as i64 + partial_unheld,
                "{context}"
            );
            // Whole batches A consumed that B does not hold yet will arrive later.
            let held: HashSet<BatchId> = b.records.iter().map(|r| r.0).collect();
            let whole_consumed: HashSet<BatchId> = consumed
                .iter()
                .map(|r| r.0)
                .filter(|id| (0..sizes[id]).all(|i| consumed.contains(&(*id, i))))
                .collect();
            let missing = whole_consumed.difference(&held).count() as u64;
            assert_eq!(resume.missing_batches, missing, "{context}");
            partial_resumes += u64::from(position.partial.is_some());
            repeats_seen += u64::from(after > 0);
            missing_seen += u64::from(missing > 0);
        }
    }
    println!(
        "{cases} histories: {partial_resumes} commits inside a batch, {repeats_seen} with \
         repeats, {missing_seen} with batches B lacks"
    );
    // The cases must exercise what they check.
    assert!(partial_resumes > 0 && repeats_seen > 0 && missing_seen > 0);
}
