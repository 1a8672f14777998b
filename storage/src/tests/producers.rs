use super::*;
use crate::batch::test_batch;
use crate::{SequenceError, StorageError};

/// A batch from an idempotent producer: id, epoch and first sequence set, CRC recomputed.
fn idempotent_batch(count: i32, producer_id: i64, epoch: i16, first_seq: i32) -> Vec<u8> {
    let mut b = test_batch(count, 1_000, 10);
    b[43..51].copy_from_slice(&producer_id.to_be_bytes());
    b[51..53].copy_from_slice(&epoch.to_be_bytes());
    b[53..57].copy_from_slice(&first_seq.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

fn append_idempotent(
    p: &Partition,
    count: i32,
    producer_id: i64,
    epoch: i16,
    first_seq: i32,
) -> Result<AppendResult, StorageError> {
    let b = idempotent_batch(count, producer_id, epoch, first_seq);
    p.append(&b, 1_000, &next_meta(p))
}

#[test]
fn retried_batch_is_not_appended_twice_and_gets_its_offsets_back() {
    let dir = tempfile::tempdir().unwrap();
    let p = open(dir.path(), small_config());
    let first = append_idempotent(&p, 3, 42, 0, 0).unwrap();
    append_idempotent(&p, 2, 42, 0, 3).unwrap();
    let retry = append_idempotent(&p, 3, 42, 0, 0).unwrap();
    assert!(retry.duplicate);
    assert_eq!(
        (retry.base_offset, retry.last_offset),
        (first.base_offset, 2)
    );
    assert_eq!(p.log_end_offset(), 5);
}

#[test]
fn sequence_gap_and_fenced_epoch_are_refused_without_appending() {
    let dir = tempfile::tempdir().unwrap();
    let p = open(dir.path(), small_config());
    append_idempotent(&p, 1, 42, 1, 0).unwrap();
    assert!(matches!(
        append_idempotent(&p, 1, 42, 1, 5),
        Err(StorageError::Sequence(SequenceError::OutOfOrder {
            expected: 1,
            got: 5,
            ..
        }))
    ));
    assert!(matches!(
        append_idempotent(&p, 1, 42, 0, 1),
        Err(StorageError::Sequence(SequenceError::InvalidEpoch { .. }))
    ));
    assert_eq!(p.log_end_offset(), 1);
}

#[test]
fn deduplication_survives_clean_reopen_crash_reopen_and_rolls() {
    let dir = tempfile::tempdir().unwrap();
    {
        let p = open(dir.path(), small_config());
        for seq in 0..20 {
            append_idempotent(&p, 1, 7, 0, seq).unwrap();
        }
        p.close().unwrap();
    }
    {
        let p = open(dir.path(), small_config());
        assert!(p.segment_count() > 1, "the small config should have rolled");
        assert!(append_idempotent(&p, 1, 7, 0, 19).unwrap().duplicate);
        append_idempotent(&p, 1, 7, 0, 20).unwrap();
        // dropped without close: a crash
    }
    let p = open(dir.path(), small_config());
    let retry = append_idempotent(&p, 1, 7, 0, 20).unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.base_offset, 20);
    assert!(matches!(
        append_idempotent(&p, 1, 7, 0, 25),
        Err(StorageError::Sequence(SequenceError::OutOfOrder {
            expected: 21,
            ..
        }))
    ));
}

#[test]
fn a_torn_snapshot_is_ignored_and_state_is_rebuilt_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    {
        let p = open(dir.path(), small_config());
        for seq in 0..3 {
            append_idempotent(&p, 1, 7, 0, seq).unwrap();
        }
        p.close().unwrap();
    }
    std::fs::write(
        dir.path().join("producers.snapshot"),
        b"{\"version\":1,\"end_",
    )
    .unwrap();
    let p = open(dir.path(), small_config());
    assert!(append_idempotent(&p, 1, 7, 0, 2).unwrap().duplicate);
}

fn append_transactional(p: &Partition, producer_id: i64, first_seq: i32) -> AppendResult {
    let mut b = idempotent_batch(1, producer_id, 0, first_seq);
    b[21..23].copy_from_slice(&0x10i16.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    p.append(&b, 1_000, &next_meta(p)).unwrap()
}

fn mark(p: &Partition, kind: crate::ControlType, producer_id: i64) -> AppendResult {
    p.append_control(kind, producer_id, 0, 1_000, &next_meta(p))
        .unwrap()
}

/// A producer id issued by region 1, the region the tests stamp their batches with (only a
/// producer's own region ends whatever it has open).
fn issued(counter: i64) -> i64 {
    (1 << crate::PRODUCER_ID_COUNTER_BITS) | counter
}

#[test]
fn markers_move_the_stable_offset_and_aborts_are_listed_across_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    {
        let p = open(dir.path(), small_config());
        append_transactional(&p, issued(1), 0); // 0
        append_transactional(&p, issued(2), 0); // 1
        assert_eq!(p.last_stable_offset(), 0);
        mark(&p, crate::ControlType::Commit, issued(1)); // 2
        assert_eq!(p.last_stable_offset(), 1);
        mark(&p, crate::ControlType::Abort, issued(2)); // 3
        assert_eq!(p.last_stable_offset(), 4);
        append_transactional(&p, issued(1), 1); // 4, left open by the crash below
    }
    let p = open(dir.path(), small_config());
    assert_eq!(p.last_stable_offset(), 4);
    let aborted = p.aborted_transactions(0, 5);
    assert_eq!(aborted.len(), 1);
    assert_eq!(
        (
            aborted[0].producer_id,
            aborted[0].first_offset,
            aborted[0].last_offset
        ),
        (issued(2), 1, 3)
    );
    mark(&p, crate::ControlType::Commit, issued(1));
    assert_eq!(p.last_stable_offset(), p.log_end_offset());
}

#[test]
fn clients_cannot_append_control_batches() {
    let dir = tempfile::tempdir().unwrap();
    let p = open(dir.path(), small_config());
    let b = crate::control_batch(crate::ControlType::Commit, 1, 0, 0, 0);
    assert!(matches!(
        p.append(&b, 0, &meta(1)),
        Err(StorageError::Batch(_))
    ));
}

#[test]
fn a_read_only_scan_finds_every_producer_id_and_the_open_transactions() {
    let dir = tempfile::tempdir().unwrap();
    {
        let p = open(dir.path(), small_config());
        append_idempotent(&p, 3, 42, 0, 0).unwrap(); // 0..=2
        append_idempotent(&p, 2, 42, 1, 0).unwrap(); // 3..=4, epoch 1
        append_transactional(&p, issued(7), 0); // 5, committed below
        mark(&p, crate::ControlType::Commit, issued(7)); // 6
        append_transactional(&p, issued(9), 0); // 7, aborted below
        mark(&p, crate::ControlType::Abort, issued(9)); // 8
        append_transactional(&p, issued(11), 0); // 9, left open
        append_idempotent(&p, 1, 42, 1, 2).unwrap(); // 10
        p.close().unwrap();
    }
    let before: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let scan = crate::inspect::scan_partition(dir.path(), &mut |_| {}).unwrap();
    assert_eq!(scan.batches, 8);
    assert_eq!(scan.log_end, 11);
    let ids: Vec<_> = scan
        .producer_epochs
        .iter()
        .map(|(&id, &e)| (id, e))
        .collect();
    assert_eq!(
        ids,
        vec![(42, 1), (issued(7), 0), (issued(9), 0), (issued(11), 0)]
    );
    let open: Vec<_> = scan
        .open_transactions
        .iter()
        .map(|t| (t.producer_id, t.epoch, t.first_offset))
        .collect();
    assert_eq!(open, vec![(issued(11), 0, 9)]);
    let after: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(before, after, "the scan changes nothing");
}

#[test]
fn a_scan_replays_another_regions_abort_as_the_log_did() {
    let dir = tempfile::tempdir().unwrap();
    let producer = issued(7);
    {
        let p = open(dir.path(), small_config());
        append_transactional(&p, producer, 0); // 0, region 1's 1st batch
        mark(&p, crate::ControlType::Commit, producer); // 1
        append_transactional(&p, producer, 1); // 2, a new transaction (region 1's 3rd batch)
                                               // Region 2 aborts the transaction it saw open, having seen only region 1's 1st batch:
                                               // the first transaction, long committed here. The new one stays open.
        let takeover = CausalMeta {
            origin_region: 2,
            origin_seq: 1,
            hlc: 1,
            deps: vec![(1, 1)],
        };
        p.append_control(crate::ControlType::Abort, producer, 1, 1_000, &takeover)
            .unwrap();
        assert_eq!(p.last_stable_offset(), 2);
        p.close().unwrap();
    }
    std::fs::remove_file(dir.path().join("producers.snapshot")).unwrap();
    let scan = crate::inspect::scan_partition(dir.path(), &mut |_| {}).unwrap();
    let open: Vec<_> = scan
        .open_transactions
        .iter()
        .map(|t| (t.producer_id, t.first_offset))
        .collect();
    assert_eq!(open, vec![(producer, 2)]);
}
