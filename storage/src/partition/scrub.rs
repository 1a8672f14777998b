//! The background scrub: reads closed segments a bounded step at a time and checks every batch,
//! so damage done by the medium is found before a peer or a consumer asks for it (recovery only
//! scans the active segment, and a batch nobody reads would otherwise stay damaged unseen until
//! the day it is needed, perhaps when the only other copy is gone too).
//!
//! A batch whose framing holds (length inside the segment, offsets in order and inside the
//! segment) but whose bytes fail their check (CRC, magic, record count) is recorded as one
//! damaged batch and the walk goes on after it. A batch whose framing is broken leaves nothing
//! after it that can be trusted to start a batch: the rest of the segment is recorded as one
//! damaged range and the walk goes on at the next segment. Both are reported through
//! `damage.rs` (log, metric, `/readyz`), exactly as a damaged batch found by a peer's read.

use super::Partition;
use crate::batch::whole_batches;
use crate::error::StorageError;
use crate::segment::Segment;
use crate::telemetry;

/// Where one scrub step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScrubStep {
    /// The offset the next step starts from.
    pub next_offset: i64,
    /// Bytes read by this step.
    pub bytes_read: u64,
    /// True when no closed segment is left at or after the step's start: the pass is over and
    /// the next one starts again from the oldest segment.
    pub pass_complete: bool,
}

impl Partition {
    /// Checks the batches of closed segments from `from` on, reading about `bytes_max` bytes
    /// (at least one batch); damage found is recorded (see `damage.rs`). The log's read lock is
    /// held for this one step only, so a caller paces the scrub by the size of its steps.
    pub fn scrub_closed(&self, from: i64, bytes_max: usize) -> Result<ScrubStep, StorageError> {
        let st = self.read_state();
        let start = from.max(st.retained_start());
        let closed = &st.segments[..st.segments.len() - 1];
        let Some(segment) = closed.iter().find(|s| s.end_offset() > start) else {
            return Ok(ScrubStep {
                next_offset: start,
                bytes_read: 0,
                pass_complete: true,
            });
        };
        let step = self.scrub_segment(segment, start.max(segment.base()), bytes_max)?;
        telemetry::scrubbed(step.bytes_read);
        Ok(step)
    }

    fn scrub_segment(
        &self,
        segment: &Segment,
        start: i64,
        bytes_max: usize,
    ) -> Result<ScrubStep, StorageError> {
        let segment_end = segment.end_offset();
        let rest_of_segment = ScrubStep {
            next_offset: segment_end,
            bytes_read: 0,
            pass_complete: false,
        };
        let records = match segment.read(start, bytes_max) {
            Ok(records) => records,
            Err(StorageError::Corrupt(reason)) => {
                self.record_damage(start, segment_end - 1, reason);
                return Ok(rest_of_segment);
            }
            Err(error) => return Err(error),
        };
        if records.is_empty() {
            // No batch at or after `start`: the rest of the segment is a gap left by compaction.
            return Ok(rest_of_segment);
        }
        let bytes_read = records.len() as u64;
        let (mut floor, mut next) = (segment.base(), start);
        for (header, batch) in whole_batches(&records) {
            let framed = header.base_offset >= floor
                && header.last_offset() >= header.base_offset
                && header.last_offset() >= next
                && header.last_offset() < segment_end;
            if !framed {
                let reason = format!(
                    "batch framing damaged: offsets {}..={} out of place after offset {}",
                    header.base_offset,
                    header.last_offset(),
                    next - 1
                );
                self.record_damage(next, segment_end - 1, reason);
                return Ok(ScrubStep {
                    bytes_read,
                    ..rest_of_segment
                });
            }
            self.verify_stored(&header, &batch);
            next = header.last_offset() + 1;
            floor = next;
        }
        Ok(ScrubStep {
            next_offset: next,
            bytes_read,
            pass_complete: false,
        })
    }
}
