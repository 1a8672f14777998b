use super::*;

/// 20 two-record batches of 161 bytes with timestamps i*100: segments of 6 batches
/// ([0,12), [12,24), [24,36), [36,40)).
fn filled(dir: &Path, config: LogConfig) -> Partition {
    let p = open(dir, config);
    for i in 0..20 {
        append(&p, 2, i * 100, 100);
    }
    assert_eq!(p.segment_count(), 4);
    p
}

#[test]
fn retention_by_bytes_deletes_only_old_whole_segments() {
    let dir = tempfile::tempdir().unwrap();
    let p = filled(dir.path(), small_config());
    p.set_config(LogConfig {
        retention_bytes: 1500,
        ..small_config()
    });
    // Total 3220 bytes; dropping 966 leaves 2254, dropping another leaves 1288 < 1500.
    let report = p.maintain(0, i64::MAX).unwrap();
    assert_eq!((report.segments_deleted, report.bytes_deleted), (1, 966));
    assert!(!report.rolled);
    assert_eq!(p.log_start_offset(), 12);
    assert_eq!(p.size_bytes(), 3220 - 966);
    assert_eq!(bases(&read_all(&p))[0], 12);
    assert!(matches!(
        p.read(11, 10),
        Err(crate::StorageError::OffsetOutOfRange { .. })
    ));
}

#[test]
fn retention_by_time_deletes_only_expired_segments() {
    let dir = tempfile::tempdir().unwrap();
    let p = filled(dir.path(), small_config());
    p.set_config(LogConfig {
        retention_ms: 1000,
        ..small_config()
    });
    // Segment max timestamps: 500, 1100, 1700, 1900. At now=2150 the cutoff is 1150.
    let report = p.maintain(2150, i64::MAX).unwrap();
    assert_eq!(report.segments_deleted, 2);
    assert_eq!(p.log_start_offset(), 24);
    assert_eq!(p.segment_count(), 2);
}

#[test]
fn retention_never_deletes_at_or_above_the_stable_offset() {
    let dir = tempfile::tempdir().unwrap();
    let p = filled(dir.path(), small_config());
    p.set_config(LogConfig {
        retention_ms: 0,
        ..small_config()
    });
    assert_eq!(p.maintain(1_000_000, 11).unwrap().segments_deleted, 0);
    assert_eq!(p.maintain(1_000_000, 23).unwrap().segments_deleted, 1);
    assert_eq!(p.maintain(1_000_000, 40).unwrap().segments_deleted, 2);
    // The active segment is never deleted.
    assert_eq!(p.segment_count(), 1);
    assert_eq!(p.log_start_offset(), 36);
    assert_eq!(p.log_end_offset(), 40);
}

#[test]
fn delete_records_deletes_segments_only_below_the_stable_offset_and_replication_still_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let p = filled(dir.path(), small_config());
    let end = p.log_end_offset();
    assert_eq!(p.delete_records_before(end).unwrap(), end);
    // Clients see nothing below the new start; replication still reads what is on disk.
    assert!(p.read(0, 1).is_err());
    assert_eq!(p.retained_start_offset(), 0);
    assert_eq!(bases(&p.read_retained(0, 1).unwrap().records), vec![0]);
    // Another region lacks everything from offset 12: only the segment below it may go.
    assert_eq!(p.maintain(0, 12).unwrap().segments_deleted, 1);
    assert_eq!(p.retained_start_offset(), 12);
    assert_eq!(p.log_start_offset(), end);
    assert_eq!(bases(&p.read_retained(12, 1).unwrap().records), vec![12]);
    assert!(p.read_retained(11, 1).is_err());
    // Once every region holds everything, the rest below the start goes too (not the active
    // segment, [36, 40)).
    assert_eq!(p.maintain(0, i64::MAX).unwrap().segments_deleted, 2);
    assert_eq!(p.segment_count(), 1);
    assert_eq!(p.retained_start_offset(), 36);
}

#[test]
fn delete_records_before_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let p = filled(dir.path(), small_config());
        assert_eq!(p.delete_records_before(13).unwrap(), 13);
        assert_eq!(p.segment_count(), 4, "segments go at the next maintenance");
        p.maintain(0, i64::MAX).unwrap();
        assert_eq!(p.segment_count(), 3);
        assert_eq!(p.delete_records_before(5).unwrap(), 13);
        assert!(matches!(
            p.delete_records_before(41),
            Err(crate::StorageError::OffsetOutOfRange { .. })
        ));
        // Offset 13 lies inside the batch at 12, which is returned whole.
        assert_eq!(bases(&p.read(13, 1).unwrap().records), vec![12]);
        assert!(p.read(12, 1).is_err());
    }
    let p = open(dir.path(), small_config());
    assert_eq!(p.log_start_offset(), 13);
    assert_eq!(p.segment_count(), 3);
    let at = p.batch_at_timestamp(0).unwrap().unwrap();
    assert_eq!(crate::BatchHeader::parse(&at).unwrap().base_offset, 12);
}

/// `filled` (origin 1, seqs 1..=20), then 13 batches from origin 7 (seqs 1..=13): the active
/// segment and its carry entry then hold only origin 7, so origin 1's newest sequence lives
/// only in closed segments.
fn filled_then_remote(dir: &Path) -> Partition {
    let p = filled(dir, small_config());
    for seq in 1..=13u64 {
        let b = crate::batch::test_batch(2, 3000 + seq as i64, 100);
        p.append(
            &b,
            3000,
            &CausalMeta {
                origin_region: 7,
                origin_seq: seq,
                hlc: 5000 + seq,
                deps: vec![(1, 20), (7, seq)],
            },
        )
        .unwrap();
    }
    assert_eq!(p.origin_high_water().unwrap(), vec![(1, 20), (7, 13)]);
    p
}

#[test]
fn retention_never_lowers_the_origin_high_water_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let p = filled_then_remote(dir.path());
    p.set_config(LogConfig {
        retention_ms: 0,
        ..small_config()
    });
    let deleted = p.maintain(1_000_000, i64::MAX).unwrap().segments_deleted;
    assert!(deleted >= 5, "deleted {deleted} segments");
    assert_eq!(p.segment_count(), 1);
    assert!(p
        .causal_entries(0, i64::MAX)
        .unwrap()
        .iter()
        .all(|e| e.1.origin_region == 7));
    assert_eq!(p.origin_high_water().unwrap(), vec![(1, 20), (7, 13)]);
    drop(p);
    let p = open(dir.path(), small_config());
    assert_eq!(p.origin_high_water().unwrap(), vec![(1, 20), (7, 13)]);
}

#[test]
fn delete_records_never_lowers_the_origin_high_water_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let p = filled_then_remote(dir.path());
    let end = p.log_end_offset();
    assert_eq!(p.delete_records_before(end).unwrap(), end);
    p.maintain(0, i64::MAX).unwrap();
    assert_eq!(p.segment_count(), 1);
    assert_eq!(p.origin_high_water().unwrap(), vec![(1, 20), (7, 13)]);
    drop(p);
    let p = open(dir.path(), small_config());
    assert_eq!(p.origin_high_water().unwrap(), vec![(1, 20), (7, 13)]);
}
