use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::*;

/// A byte flipped inside a closed segment is invisible to recovery (closed segments are
/// trusted) and found by the check every batch leaving for a peer goes through.
#[test]
fn a_damaged_batch_in_a_closed_segment_is_found_when_read_and_recorded_once() {
    let dir = tempfile::tempdir().unwrap();
    let p = thirty_batches(dir.path());
    assert!(p.segment_count() > 2, "the batches span several segments");
    // The second batch of the first segment: 111 bytes each, its records start 61 bytes in.
    flip(dir.path(), 0, 111 + 70, b"X");

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
    // Fetch asks which damaged batch comes next from where it reads.
    let next_damage = |offset| p.damage_from(offset).map(|d| (d.first, d.last));
    assert_eq!(next_damage(0), Some((3, 5)), "ahead of the read");
    assert_eq!(next_damage(4), Some((3, 5)), "the read starts inside it");
    assert_eq!(next_damage(6), None, "behind the read");
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

/// A partition of 30 batches of 3 records (111 bytes each) over several small segments.
fn thirty_batches(dir: &Path) -> Partition {
    let p = open(dir, small_config());
    for i in 0..30 {
        append(&p, 3, i, 50);
    }
    p
}

/// Runs scrub steps of `step_bytes` from the start until a pass completes; returns the bytes read.
fn scrub_pass(p: &Partition, step_bytes: usize) -> u64 {
    let (mut from, mut total) = (0, 0);
    for _ in 0..10_000 {
        let step = p.scrub_closed(from, step_bytes).unwrap();
        total += step.bytes_read;
        if step.pass_complete {
            return total;
        }
        assert!(
            step.next_offset > from || step.bytes_read > 0,
            "no progress at {from}"
        );
        from = step.next_offset;
    }
    panic!("the pass never completed");
}

/// Base offsets of the segments on disk, in order.
fn segment_bases(dir: &Path) -> Vec<i64> {
    let mut bases: Vec<i64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|entry| {
            let name = entry.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".log").map(|base| base.parse().unwrap())
        })
        .collect();
    bases.sort_unstable();
    bases
}

fn flip(dir: &Path, segment_base: i64, at: u64, byte: &[u8]) {
    let log = dir.join(format!("{segment_base:020}.log"));
    let file = OpenOptions::new().write(true).open(log).unwrap();
    file.write_all_at(byte, at).unwrap();
}

/// The scrub reads every closed segment, and only those, in small steps.
#[test]
fn a_scrub_pass_reads_every_closed_segment_and_finds_nothing_in_a_sound_log() {
    let dir = tempfile::tempdir().unwrap();
    let p = thirty_batches(dir.path());
    let bases = segment_bases(dir.path());
    let active = std::fs::metadata(
        dir.path()
            .join(format!("{:020}.log", bases[bases.len() - 1])),
    )
    .unwrap()
    .len();
    let closed_bytes = p.size_bytes() - active;
    assert!(closed_bytes > 0 && active > 0);
    assert_eq!(scrub_pass(&p, 1), closed_bytes, "one batch per step");
    assert_eq!(scrub_pass(&p, 1 << 20), closed_bytes, "a segment per step");
    assert!(p.damaged_ranges().is_empty());
}

/// A byte flipped in a batch's records is found by the scrub without any reader asking; a
/// broken length field condemns the rest of its segment, and the scrub goes on at the next.
#[test]
fn the_scrub_finds_damage_in_closed_segments_before_anyone_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = thirty_batches(dir.path());
    let bases = segment_bases(dir.path());
    assert!(bases.len() >= 3, "{bases:?}");
    // Batches are 111 bytes of 3 records: the second batch's records in the first segment.
    flip(dir.path(), bases[0], 111 + 70, b"X");
    // The third batch's length in the second segment: far past the segment's end.
    flip(dir.path(), bases[1], 2 * 111 + 8, &[0x7f]);
    scrub_pass(&p, 150);
    let damaged: Vec<(i64, i64)> = p
        .damaged_ranges()
        .iter()
        .map(|range| (range.first, range.last))
        .collect();
    let second_end = bases[2] - 1;
    assert_eq!(
        damaged,
        vec![(3, 5), (bases[1] + 6, second_end)],
        "{:?}",
        p.damaged_ranges()
    );
    // Recorded once, however many passes run.
    scrub_pass(&p, 1 << 20);
    assert_eq!(p.damaged_ranges().len(), 2);
}
