use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;

use super::*;

fn active_log(dir: &Path) -> PathBuf {
    let mut logs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs.pop().unwrap()
}

/// Writes five 3-record batches (offsets 0..15) and returns their stored bytes.
fn five_batches(dir: &Path) -> Vec<u8> {
    let p = open(dir, LogConfig::default());
    let mut expected = Vec::new();
    for i in 0..5 {
        append(&p, 3, i, 50);
        expected.extend_from_slice(&stored(3, i, 50, i * 3));
    }
    expected
}

fn assert_prefix_survives(dir: &Path, expected: &[u8], batches: usize) {
    let p = open(dir, LogConfig::default());
    assert!(!p.opened_cleanly());
    let keep = batches * 111;
    assert_eq!(read_all(&p), &expected[..keep]);
    assert_eq!(p.log_end_offset(), batches as i64 * 3);
    assert_eq!(p.last_causal(), Some(meta(batches as u64)));
    assert_eq!(
        std::fs::metadata(active_log(dir)).unwrap().len(),
        keep as u64
    );
    let next = append(&p, 1, 9, 0);
    assert_eq!(next.base_offset, batches as i64 * 3);
    assert_eq!(next.last_offset, batches as i64 * 3);
}

#[test]
fn reopen_keeps_every_batch_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = Vec::new();
    {
        let p = open(dir.path(), small_config());
        for i in 0..20 {
            append(&p, 2, i, 100);
            expected.extend_from_slice(&stored(2, i, 100, i * 2));
        }
    }
    let p = open(dir.path(), small_config());
    assert_eq!(p.segment_count(), 4);
    assert_eq!(read_all(&p), expected);
    assert_eq!(p.last_causal(), Some(meta(20)));
    assert_eq!(append(&p, 1, 1, 1).base_offset, 40);
}

#[test]
fn torn_tail_is_truncated_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let expected = five_batches(dir.path());
    let log = active_log(dir.path());
    let len = std::fs::metadata(&log).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(len - 40)
        .unwrap();
    assert_prefix_survives(dir.path(), &expected, 4);
}

#[test]
fn appended_garbage_is_truncated_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let expected = five_batches(dir.path());
    let mut f = OpenOptions::new()
        .append(true)
        .open(active_log(dir.path()))
        .unwrap();
    f.write_all(&[0xAB; 300]).unwrap();
    drop(f);
    assert_prefix_survives(dir.path(), &expected, 5);
}

#[test]
fn flipped_bit_in_the_last_batch_is_truncated_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let expected = five_batches(dir.path());
    let log = active_log(dir.path());
    let mut bytes = std::fs::read(&log).unwrap();
    let at = bytes.len() - 20;
    bytes[at] ^= 0x04;
    std::fs::write(&log, bytes).unwrap();
    assert_prefix_survives(dir.path(), &expected, 4);
}

#[test]
fn batch_without_a_causal_entry_is_truncated_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let expected = five_batches(dir.path());
    let causal = active_log(dir.path()).with_extension("causal");
    let len = std::fs::metadata(&causal).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&causal)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    assert_prefix_survives(dir.path(), &expected, 4);
}

#[test]
fn deleted_index_files_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = Vec::new();
    {
        let p = open(dir.path(), small_config());
        for i in 0..20 {
            append(&p, 2, i * 10, 100);
            expected.extend_from_slice(&stored(2, i * 10, 100, i * 2));
        }
        p.close().unwrap();
    }
    let mut removed = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path
            .extension()
            .is_some_and(|e| e == "index" || e == "timeindex")
        {
            std::fs::remove_file(path).unwrap();
            removed += 1;
        }
    }
    assert_eq!(removed, 8);
    let p = open(dir.path(), small_config());
    assert!(p.opened_cleanly());
    let index_files = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            let path = e.as_ref().unwrap().path();
            path.extension()
                .is_some_and(|e| e == "index" || e == "timeindex")
        })
        .count();
    assert_eq!(index_files, 8);
    assert_eq!(read_all(&p), expected);
    for offset in 0..40 {
        assert_eq!(
            bases(&p.read(offset, 1).unwrap().records),
            vec![offset - offset % 2]
        );
    }
    let at = p.batch_at_timestamp(95).unwrap().unwrap();
    assert_eq!(crate::BatchHeader::parse(&at).unwrap().base_offset, 20);
    let max = p.max_timestamp_batch().unwrap().unwrap();
    assert_eq!(crate::BatchHeader::parse(&max).unwrap().base_offset, 38);
}

#[test]
fn corrupt_index_files_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    {
        let p = open(dir.path(), small_config());
        for i in 0..20 {
            append(&p, 2, i * 10, 100);
        }
    }
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "index") {
            std::fs::write(path, [0xFF; 13]).unwrap();
        }
    }
    let p = open(dir.path(), small_config());
    for offset in 0..40 {
        assert_eq!(
            bases(&p.read(offset, 1).unwrap().records),
            vec![offset - offset % 2]
        );
    }
}
