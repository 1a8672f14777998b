//! Compaction mechanics: gap reads, the crash-safe swap, the plan's limits and the origin high
//! water. Which records survive is the broker's decision; here a test keeps chosen batches.

use super::*;
use crate::{CompactionPlan, SegmentSnapshot, StagedSegment};

fn compact_config() -> LogConfig {
    LogConfig {
        cleanup_compact: true,
        cleanup_delete: false,
        ..small_config()
    }
}

/// 20 two-record batches of 161 bytes, timestamps i*100, causal seqs 1..=20: segments
/// [0,12), [12,24), [24,36) and the active [36,40).
fn filled(dir: &Path) -> Partition {
    let p = open(dir, compact_config());
    for i in 0..20 {
        append(&p, 2, i * 100, 100);
    }
    assert_eq!(p.segment_count(), 4);
    p
}

/// Stages a replacement of `segment` holding only the batches whose base offset `keep` accepts.
fn rewrite(p: &Partition, segment: &SegmentSnapshot, keep: impl Fn(i64) -> bool) -> StagedSegment {
    let mut writer = p.segment_writer(segment).unwrap();
    segment
        .for_each_batch(|batch| {
            if keep(batch.header.base_offset) {
                writer.append(&batch.bytes, &batch.meta)?;
            }
            Ok(())
        })
        .unwrap();
    writer.finish().unwrap()
}

fn plan_of(p: &Partition) -> CompactionPlan {
    p.compaction_plan(i64::MAX, i64::MAX).unwrap()
}

/// The base offsets a consumer reading from the start sees.
fn visible(p: &Partition) -> Vec<i64> {
    bases(&read_all(p))
}

#[test]
fn reads_inside_gaps_return_the_next_batch_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let p = filled(dir.path());
    let plan = plan_of(&p);
    assert_eq!(plan.segments.len(), 3);
    assert!(plan.is_due(0));
    // Segment [0,12) keeps 4 only (a gap before, and at its tail up to 12); [12,24) keeps
    // nothing; [24,36) keeps 24 and 34.
    let staged = vec![
        rewrite(&p, &plan.segments[0], |b| b == 4),
        rewrite(&p, &plan.segments[1], |_| false),
        rewrite(&p, &plan.segments[2], |b| b == 24 || b == 34),
    ];
    let report = p.swap_segments(staged, 36, None).unwrap();
    assert_eq!(report.swapped, 3);
    assert_eq!(report.bytes_reclaimed, (18 - 3) * 161);
    let expected = vec![4, 24, 34, 36, 38];
    assert_eq!(visible(&p), expected);
    assert_eq!(bases(&p.read(0, 1).unwrap().records), vec![4]);
    assert_eq!(
        bases(&p.read(5, 1).unwrap().records),
        vec![4],
        "inside batch 4..=5"
    );
    assert_eq!(
        bases(&p.read(6, 1).unwrap().records),
        vec![24],
        "tail gap, empty segment"
    );
    assert_eq!(bases(&p.read(13, 1).unwrap().records), vec![24]);
    assert_eq!(bases(&p.read(35, 1).unwrap().records), vec![34]);
    assert_eq!(p.log_end_offset(), 40);
    // Timestamps: segment [12,24) is empty; the first batch at or after t=500 is 24 (t=1200).
    let at = p.batch_at_timestamp(500).unwrap().unwrap();
    assert_eq!(crate::BatchHeader::parse(&at).unwrap().base_offset, 24);
    let newest = p.max_timestamp_batch().unwrap().unwrap();
    assert_eq!(crate::BatchHeader::parse(&newest).unwrap().base_offset, 38);
    // Causal entries follow the kept batches.
    let causal: Vec<i64> = p
        .causal_entries(0, 40)
        .unwrap()
        .iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(causal, expected);
    // The next plan knows these segments are clean.
    let again = p.compaction_plan(i64::MAX, i64::MAX).unwrap();
    assert!(again.segments.iter().all(|s| s.cleaned) && !again.is_due(0));
    // Unclean reopen (no close): rewritten segments open with gaps, indexes rebuilt.
    drop(p);
    let p = open(dir.path(), compact_config());
    assert_eq!(visible(&p), expected);
    assert_eq!(bases(&p.read(6, 1).unwrap().records), vec![24]);
    let next = append(&p, 1, 5000, 0);
    assert_eq!(next.base_offset, 40);
    // DeleteRecords into a gap: the log start is the gap offset, reads start at the next batch.
    assert_eq!(p.delete_records_before(10).unwrap(), 10);
    assert_eq!(bases(&p.read(10, 1).unwrap().records), vec![24]);
    assert_eq!(p.segment_count(), 4);
    assert_eq!(p.delete_records_before(30).unwrap(), 30);
    p.maintain(5000, i64::MAX).unwrap();
    assert_eq!(p.segment_count(), 2, "segments wholly below the start go");
}

#[test]
fn a_crash_before_the_commit_point_keeps_the_old_segment() {
    let dir = tempfile::tempdir().unwrap();
    let p = filled(dir.path());
    let before = read_all(&p);
    let plan = plan_of(&p);
    let staged = rewrite(&p, &plan.segments[0], |b| b == 10);
    // Crash with temp files only, or with the causal half renamed but not the log.
    let name = |ext: &str| dir.path().join(format!("{:020}.{ext}", 0));
    std::fs::rename(name("causal.tmp"), name("causal.swap")).unwrap();
    drop(staged);
    drop(p);
    let p = open(dir.path(), compact_config());
    assert_eq!(read_all(&p), before);
    for ext in ["log.tmp", "causal.swap"] {
        assert!(!name(ext).exists(), "{ext} left behind");
    }
}

#[test]
fn a_crash_after_the_commit_point_completes_the_swap_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let p = filled(dir.path());
    let plan = plan_of(&p);
    let _staged = rewrite(&p, &plan.segments[0], |b| b == 10);
    let name = |ext: &str| dir.path().join(format!("{:020}.{ext}", 0));
    // Step 2 done (the log renamed: committed), step 3 half done (causal already in place).
    std::fs::rename(name("causal.tmp"), name("causal.swap")).unwrap();
    std::fs::rename(name("log.tmp"), name("log.swap")).unwrap();
    std::fs::rename(name("causal.swap"), name("causal")).unwrap();
    drop(p);
    let p = open(dir.path(), compact_config());
    let seen = visible(&p);
    assert_eq!(&seen[..2], &[10, 12]);
    assert_eq!(seen.len(), 1 + 14);
    assert_eq!(p.causal_entries(0, 12).unwrap().len(), 1);
    assert!(!name("log.swap").exists());
    // A swap interrupted just after the commit point, before anything of step 3.
    let plan = p.compaction_plan(i64::MAX, i64::MAX).unwrap();
    let _staged = rewrite(&p, &plan.segments[1], |b| b == 22);
    let name = |ext: &str| dir.path().join(format!("{:020}.{ext}", 12));
    std::fs::rename(name("causal.tmp"), name("causal.swap")).unwrap();
    std::fs::rename(name("log.tmp"), name("log.swap")).unwrap();
    drop(p);
    let p = open(dir.path(), compact_config());
    assert_eq!(&visible(&p)[..3], &[10, 22, 24]);
    assert_eq!(p.causal_entries(12, 24).unwrap()[0].0, 22);
}

#[test]
fn compaction_never_lowers_the_origin_high_water() {
    let dir = tempfile::tempdir().unwrap();
    let p = filled(dir.path());
    assert_eq!(p.origin_high_water().unwrap(), vec![(1, 20)]);
    // Drop the newest batches of every closed segment: seqs 6, 12 and 18 go. Then make the
    // active segment's batches vanish from view by compacting everything but the first batch.
    let plan = plan_of(&p);
    let staged = plan
        .segments
        .iter()
        .map(|s| rewrite(&p, s, |b| b == 0))
        .collect();
    p.swap_segments(staged, 36, None).unwrap();
    assert_eq!(visible(&p), vec![0, 36, 38]);
    assert_eq!(p.origin_high_water().unwrap(), vec![(1, 20)]);
    // A batch from another origin (the helper then stamps region 1 from its seq: 100..=107),
    // then its segment compacted away entirely.
    let b = crate::batch::test_batch(1, 5000, 10);
    p.append(
        &b,
        5000,
        &CausalMeta {
            origin_region: 7,
            origin_seq: 99,
            hlc: 1,
            deps: vec![],
        },
    )
    .unwrap();
    for i in 0..8 {
        append(&p, 2, 6000 + i, 100);
    }
    let second = plan_of(&p);
    let staged = second
        .segments
        .iter()
        .map(|s| rewrite(&p, s, |_| false))
        .collect();
    p.swap_segments(staged, i64::MAX, None).unwrap();
    let high = p.origin_high_water().unwrap();
    assert_eq!(high, vec![(1, 107), (7, 99)]);
    assert!(p
        .causal_entries(0, i64::MAX)
        .unwrap()
        .iter()
        .all(|e| e.1.origin_region == 1));
    drop(p);
    let p = open(dir.path(), compact_config());
    assert_eq!(p.origin_high_water().unwrap(), high);
}

#[test]
fn the_plan_stops_at_the_stable_offset_and_skips_a_segment_before_an_empty_active_one() {
    let dir = tempfile::tempdir().unwrap();
    let p = filled(dir.path());
    assert_eq!(p.compaction_plan(23, i64::MAX).unwrap().segments.len(), 1);
    assert_eq!(p.compaction_plan(24, i64::MAX).unwrap().segments.len(), 2);
    p.set_config(small_config());
    assert!(plan_of(&p).segments.is_empty(), "not a compacted topic");
    p.set_config(compact_config());
    // Roll by age: the active segment is now empty, so [36,40) waits.
    p.maintain(1_000_000_000, i64::MAX).unwrap();
    assert_eq!(p.segment_count(), 5);
    assert_eq!(plan_of(&p).segments.len(), 3);
    append(&p, 1, 1_000_000_000, 10);
    assert_eq!(plan_of(&p).segments.len(), 4);
}

#[test]
fn a_segment_changed_meanwhile_is_not_swapped() {
    let dir = tempfile::tempdir().unwrap();
    let p = filled(dir.path());
    let plan = plan_of(&p);
    let staged = rewrite(&p, &plan.segments[0], |_| false);
    p.delete_records_before(12).unwrap();
    p.maintain(0, i64::MAX).unwrap();
    let report = p.swap_segments(vec![staged], 12, None).unwrap();
    assert_eq!(report.swapped, 0);
    assert_eq!(visible(&p)[0], 12);
    let leftovers = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".tmp")
        })
        .count();
    assert_eq!(leftovers, 0);
}

#[test]
fn producers_cannot_append_batches_marked_as_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let p = open(dir.path(), compact_config());
    let mut b = crate::batch::test_batch(1, 0, 10);
    crate::mark_cleaned(&mut b);
    assert!(p.append(&b, 0, &meta(1)).is_err());
    assert_eq!(p.log_end_offset(), 0);
}

#[test]
fn compact_only_topics_keep_old_segments_despite_retention_ms() {
    let dir = tempfile::tempdir().unwrap();
    let p = filled(dir.path());
    p.set_config(LogConfig {
        retention_ms: 1,
        ..compact_config()
    });
    assert_eq!(p.maintain(1_000_000, i64::MAX).unwrap().segments_deleted, 0);
    p.set_config(LogConfig {
        retention_ms: 1,
        cleanup_delete: true,
        ..compact_config()
    });
    assert_eq!(p.maintain(1_000_000, i64::MAX).unwrap().segments_deleted, 3);
}

#[test]
fn the_plan_stops_at_the_first_segment_younger_than_min_compaction_lag() {
    let dir = tempfile::tempdir().unwrap();
    let p = filled(dir.path());
    p.set_config(LogConfig {
        min_compaction_lag_ms: 1_000,
        ..compact_config()
    });
    // Newest records: [0,12) at most 600, [12,24) at least 1,100, [24,36) at most 1,800.
    assert_eq!(
        p.compaction_plan(i64::MAX, 1_650).unwrap().segments.len(),
        1
    );
    assert_eq!(
        p.compaction_plan(i64::MAX, 3_000).unwrap().segments.len(),
        3
    );
    p.set_config(compact_config());
    assert_eq!(p.compaction_plan(i64::MAX, 0).unwrap().segments.len(), 3);
}

#[test]
fn gaps_below_covers_every_swapped_segment_a_seed_copy_and_old_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let p = filled(dir.path());
    assert_eq!(plan_of(&p).gaps_below, -1, "nothing merged away yet");
    let plan = plan_of(&p);
    let staged = vec![rewrite(&p, &plan.segments[0], |b| b == 4)];
    p.swap_segments(staged, 12, None).unwrap();
    assert_eq!(plan_of(&p).gaps_below, 12);
    // A seed's copy: merged rows anywhere below its end.
    p.mark_gaps_below(30).unwrap();
    assert_eq!(plan_of(&p).gaps_below, 30);
    p.mark_gaps_below(20).unwrap();
    assert_eq!(plan_of(&p).gaps_below, 30, "never lowered");
    // A checkpoint written before gaps_below existed: the cleaned-through offset.
    std::fs::write(dir.path().join("cleaner-offset.checkpoint"), "0\n24\n-1\n").unwrap();
    drop(p);
    let p = open(dir.path(), compact_config());
    assert_eq!(plan_of(&p).gaps_below, 24);
}

/// A pass waits until the segments no pass has cleaned are more than min.cleanable.dirty.ratio
/// of the compactable bytes, unless one of them holds a record older than max.compaction.lag.ms.
#[test]
fn a_pass_waits_for_the_dirty_ratio_unless_a_record_outlives_max_compaction_lag() {
    let dir = tempfile::tempdir().unwrap();
    let p = filled(dir.path());
    assert!(plan_of(&p).is_due(0), "all dirty: ratio 1");
    // The first two segments cleaned (kept whole): one dirty segment of three, same sizes.
    let plan = plan_of(&p);
    let staged = vec![
        rewrite(&p, &plan.segments[0], |_| true),
        rewrite(&p, &plan.segments[1], |_| true),
    ];
    p.swap_segments(staged, 24, None).unwrap();
    let plan = plan_of(&p);
    assert_eq!(
        plan.segments.iter().map(|s| s.cleaned).collect::<Vec<_>>(),
        [true, true, false]
    );
    // Segment [24,36)'s first record was appended at 1,200.
    let due = |ratio: f64, lag: i64, now: i64| {
        p.set_config(LogConfig {
            min_cleanable_dirty_ratio: ratio,
            max_compaction_lag_ms: lag,
            ..compact_config()
        });
        p.compaction_plan(i64::MAX, now).unwrap().is_due(now)
    };
    assert!(
        !due(0.5, i64::MAX, 10_000),
        "a third dirty, at Kafka's default ratio"
    );
    assert!(due(0.3, i64::MAX, 10_000), "a third dirty is more than 0.3");
    assert!(!due(0.5, 1_000, 2_199), "its first record is 999 ms old");
    assert!(due(0.5, 1_000, 2_200), "its first record is 1,000 ms old");
    // Nothing dirty: nothing due, whatever the lag.
    let plan = plan_of(&p);
    let staged = vec![rewrite(&p, &plan.segments[2], |_| true)];
    p.swap_segments(staged, 36, None).unwrap();
    assert!(!due(0.0, 0, 10_000));
}

/// On a compacted topic the active segment rolls once its first record is
/// max.compaction.lag.ms old (so the cleaner can reach it), not at segment.ms.
#[test]
fn the_active_segment_of_a_compacted_topic_rolls_at_max_compaction_lag() {
    let dir = tempfile::tempdir().unwrap();
    let p = open(
        dir.path(),
        LogConfig {
            max_compaction_lag_ms: 1_000,
            segment_ms_min: 0,
            ..compact_config()
        },
    );
    append(&p, 2, 100, 100);
    assert!(!p.maintain(1_099, i64::MAX).unwrap().rolled);
    assert!(p.maintain(1_100, i64::MAX).unwrap().rolled);
    assert_eq!(p.segment_count(), 2);
    // The same setting on a topic that is not compacted does not roll it.
    p.set_config(LogConfig {
        max_compaction_lag_ms: 1_000,
        segment_ms_min: 0,
        ..small_config()
    });
    append(&p, 2, 2_000, 100);
    assert!(!p.maintain(5_000, i64::MAX).unwrap().rolled);
}
