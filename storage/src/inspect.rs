//! A read-only walk over one partition directory, for tools that work on a stopped broker's
//! data dir (`causeway meta rebuild`): which producer ids its batches carry, which transactions
//! are still open, how far the log goes. It writes nothing (unlike `Partition::open`, it neither
//! truncates a torn tail nor removes temp files) and reads batch headers only, plus the body of
//! each control batch to learn its marker type.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use crate::batch::{BatchHeader, BATCH_HEADER_BYTES};
use crate::causal::{decode_prefix, CausalEntry};
use crate::checkpoint::{self, PRODUCERS_FILE};
use crate::control::control_type;
use crate::error::{IoContext, StorageError};
use crate::producers::{OpenTransaction, ProducerStates};

/// Bytes walked between two progress calls.
const PROGRESS_EVERY_BYTES: u64 = 256 * 1024 * 1024;

/// What one partition directory holds, as far as rebuilding the catalog needs to know.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionScan {
    /// Segments walked.
    pub segments: usize,
    /// Batches walked.
    pub batches: u64,
    /// Bytes of `.log` walked.
    pub bytes: u64,
    /// The offset after the last readable batch (0 for an empty log).
    pub log_end: i64,
    /// Every producer id found in a batch header or the producer snapshot, with the highest
    /// epoch seen for it.
    pub producer_epochs: BTreeMap<i64, i16>,
    /// Transactions still open at the end of the log.
    pub open_transactions: Vec<OpenTransaction>,
}

/// Walks the partition directory `dir` without changing it. `progress` is called with the
/// bytes walked so far every 256 MiB, so a caller can report long scans. A segment is read up
/// to its first unreadable batch header (a torn tail), as recovery would keep at most that.
pub fn scan_partition(
    dir: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<PartitionScan, StorageError> {
    let mut scan = PartitionScan::default();
    let snapshot = checkpoint::read_bytes(dir, PRODUCERS_FILE)?
        .and_then(|bytes| ProducerStates::decode_snapshot(&bytes));
    let snapshot_end = snapshot.as_ref().map(|(end, _)| *end);
    // Two replays: from the snapshot (what the broker itself would do), and from the first
    // retained batch, used when the snapshot turns out not to fit the log.
    let (mut from_snapshot, mut full) = (
        snapshot.map(|(_, states)| states).unwrap_or_default(),
        ProducerStates::default(),
    );
    for (id, epoch) in from_snapshot.producer_epochs() {
        note_producer(&mut scan, id, epoch);
    }
    let mut next_progress = PROGRESS_EVERY_BYTES;
    let mut body = Vec::new();
    for base in segment_bases(dir)? {
        scan.segments += 1;
        let path = dir.join(format!("{base:020}.log"));
        let file = File::open(&path).ctx(|| format!("opening {}", path.display()))?;
        let size = file
            .metadata()
            .ctx(|| format!("stat {}", path.display()))?
            .len();
        let mut reader = BufReader::with_capacity(1 << 20, file);
        // Markers written by another region end only the transaction their writer saw open,
        // which their causal entries say (`ProducerStates::record`).
        let causal = segment_causal_entries(dir, base)?;
        let mut causal = causal.iter().peekable();
        let mut pos = 0u64;
        let mut head = [0u8; BATCH_HEADER_BYTES];
        while pos + BATCH_HEADER_BYTES as u64 <= size {
            reader
                .read_exact(&mut head)
                .ctx(|| format!("reading {}", path.display()))?;
            let Ok(header) = BatchHeader::parse(&head) else {
                break;
            };
            let total = header.total_bytes() as u64;
            if total < BATCH_HEADER_BYTES as u64 || pos + total > size || header.magic != 2 {
                break;
            }
            let rest = total - BATCH_HEADER_BYTES as u64;
            let control = if header.is_control() {
                body.clear();
                body.extend_from_slice(&head);
                body.resize(total as usize, 0);
                reader
                    .read_exact(&mut body[BATCH_HEADER_BYTES..])
                    .ctx(|| format!("reading {}", path.display()))?;
                control_type(&header, &body)
            } else {
                let skip = i64::try_from(rest).unwrap_or(i64::MAX);
                reader
                    .seek_relative(skip)
                    .ctx(|| format!("reading {}", path.display()))?;
                None
            };
            if header.producer_id >= 0 {
                note_producer(&mut scan, header.producer_id, header.producer_epoch);
            }
            while causal
                .next_if(|e| e.base_offset < header.base_offset)
                .is_some()
            {}
            let meta = causal
                .peek()
                .filter(|e| e.base_offset == header.base_offset)
                .map(|e| &e.meta);
            full.record(&header, control, meta, header.max_timestamp, usize::MAX);
            if snapshot_end.is_some_and(|end| header.base_offset >= end) {
                from_snapshot.record(&header, control, meta, header.max_timestamp, usize::MAX);
            }
            scan.batches += 1;
            scan.bytes += total;
            scan.log_end = header.last_offset() + 1;
            pos += total;
            if scan.bytes >= next_progress {
                progress(scan.bytes);
                next_progress += PROGRESS_EVERY_BYTES;
            }
        }
    }
    let states = match snapshot_end {
        Some(end) if end <= scan.log_end => from_snapshot,
        _ => full,
    };
    scan.open_transactions = states.open_transactions().collect();
    Ok(scan)
}

fn note_producer(scan: &mut PartitionScan, id: i64, epoch: i16) {
    let seen = scan.producer_epochs.entry(id).or_insert(epoch);
    *seen = (*seen).max(epoch);
}

/// Base offsets of the segments in `dir` (`<20 digits>.log`), ascending.
fn segment_bases(dir: &Path) -> Result<Vec<i64>, StorageError> {
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir).ctx(|| format!("listing {}", dir.display()))? {
        let entry = entry.ctx(|| format!("listing {}", dir.display()))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".log")) else {
            continue;
        };
        if stem.len() == 20 {
            if let Ok(base) = stem.parse::<i64>() {
                bases.push(base);
            }
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// The intact entries of segment `base`'s `.causal` file, by offset (none if it is missing).
fn segment_causal_entries(dir: &Path, base: i64) -> Result<Vec<CausalEntry>, StorageError> {
    let path = dir.join(format!("{base:020}.causal"));
    match std::fs::read(&path) {
        Ok(bytes) => Ok(decode_prefix(&bytes).into_iter().map(|(e, _)| e).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(StorageError::io(format!("reading {}", path.display()), e)),
    }
}
