use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use super::*;

/// A byte flipped inside a closed segment is invisible to recovery (closed segments are
/// trusted) and found by the check every batch leaving for a peer goes through.
#[test]
fn a_damaged_batch_in_a_closed_segment_is_found_when_read_and_recorded_once() {
    let dir = tempfile::tempdir().unwrap();
    let p = open(dir.path(), small_config());
    for i in 0..30 {
        append(&p, 3, i, 50);
    }
    assert!(p.segment_count() > 2, "the batches span several segments");
    // The second batch of the first segment: 111 bytes each, its records start 61 bytes in.
    let first_log = dir.path().join("00000000000000000000.log");
    let file = OpenOptions::new().write(true).open(&first_log).unwrap();
    file.write_all_at(b"X", 111 + 70).unwrap();

    let check = |p: &Partition| -> Vec<(i64, bool)> {
        let records = p.read_retained(0, 1 << 20).unwrap().records;
        let mut verdicts = Vec::new();
        let mut at = 0;
        while at < records.len() {
            let header = crate::BatchHeader::parse(&records[at..]).unwrap();
            let end = at + header.total_bytes();
            verdicts.push((
                header.base_offset,
                p.verify_stored(&header, &records[at..end]),
            ));
            at = end;
        }
        verdicts
    };
    let verdicts = check(&p);
    assert!(verdicts.len() >= 3);
    for (base, intact) in &verdicts {
        assert_eq!(*intact, *base != 3, "batch at {base}");
    }
    let damaged = p.damaged_ranges();
    assert_eq!(damaged.len(), 1);
    assert_eq!((damaged[0].first, damaged[0].last), (3, 5));
    assert!(damaged[0].reason.contains("CRC"), "{}", damaged[0].reason);
    // Found again: still one range.
    check(&p);
    assert_eq!(p.damaged_ranges().len(), 1);
    // Once retention deletes the segment, nothing damaged is left to report.
    p.delete_records_before(60).unwrap();
    p.maintain(i64::MAX, i64::MAX).unwrap();
    assert!(p.retained_start_offset() > 5);
    assert!(p.damaged_ranges().is_empty());
}
