use std::sync::Arc;

use super::*;

#[test]
fn concurrent_sync_through_callers_all_return_durable() {
    let dir = tempfile::tempdir().unwrap();
    let p = Arc::new(open(dir.path(), small_config()));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let p = Arc::clone(&p);
            std::thread::spawn(move || {
                for _ in 0..25 {
                    let r = append(&p, 1, 1, 50);
                    p.sync_through(r.last_offset + 1).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(p.log_end_offset(), 100);
    p.sync_through(100).unwrap();
    p.sync().unwrap();
    assert_eq!(bases(&read_all(&p)), (0..100).collect::<Vec<_>>());
}

#[test]
fn clean_close_skips_recovery_and_a_later_crash_does_not() {
    let dir = tempfile::tempdir().unwrap();
    {
        let p = open(dir.path(), small_config());
        append(&p, 2, 1, 10);
        assert!(!p.opened_cleanly());
        p.close().unwrap();
    }
    {
        let p = open(dir.path(), small_config());
        assert!(p.opened_cleanly());
        assert_eq!(p.log_end_offset(), 2);
        assert_eq!(p.last_causal(), Some(meta(1)));
        append(&p, 1, 1, 10);
        // dropped without close: a crash
    }
    let p = open(dir.path(), small_config());
    assert!(!p.opened_cleanly());
    assert_eq!(p.log_end_offset(), 3);
}

#[test]
fn last_causal_survives_reopen_even_after_a_roll_and_retention() {
    let dir = tempfile::tempdir().unwrap();
    {
        let p = open(dir.path(), small_config());
        append(&p, 1, 1, 10);
        append(&p, 1, 1, 10);
        assert_eq!(p.last_causal(), Some(meta(2)));
    }
    {
        let p = open(dir.path(), small_config());
        assert_eq!(p.last_causal(), Some(meta(2)));
        let config = LogConfig {
            segment_ms: 10,
            retention_ms: 10,
            ..small_config()
        };
        p.set_config(config);
        let report = p.maintain(1_000, i64::MAX).unwrap();
        assert!(report.rolled);
        assert_eq!(report.segments_deleted, 1);
        assert_eq!(p.log_start_offset(), 2);
        assert_eq!(p.last_causal(), Some(meta(2)));
    }
    let p = open(dir.path(), small_config());
    assert_eq!((p.log_start_offset(), p.log_end_offset()), (2, 2));
    assert_eq!(p.last_causal(), Some(meta(2)));
    assert_eq!(append(&p, 1, 1, 10).base_offset, 2);
    assert_eq!(p.last_causal(), Some(meta(3)));
}

#[test]
fn removing_a_partition_dir_deletes_everything() {
    let dir = tempfile::tempdir().unwrap();
    let pdir = dir.path().join("t-0");
    {
        let p = open(&pdir, small_config());
        append(&p, 1, 1, 10);
    }
    crate::remove_partition_dir(&pdir).unwrap();
    assert!(!pdir.exists());
    crate::remove_partition_dir(&pdir).unwrap();
}

/// Open trusts every segment but the last after an unclean stop, so a roll must leave nothing
/// of the closed segment to a power loss, even when nobody asked for a sync (acks=0/1 writes).
#[test]
fn a_rolled_segment_is_durable_without_any_sync() {
    let dir = tempfile::tempdir().unwrap();
    let p = open(dir.path(), small_config());
    for i in 0..30 {
        append(&p, 2, 1_000 + i, 100);
    }
    assert!(p.segment_count() > 3, "the appends rolled several segments");
    assert_eq!(p.unsynced_closed_segments(), 0);
    assert!(
        p.has_unsynced(),
        "the active segment waits for the group commit as before"
    );
}
