//! The retention decision, kept free of I/O: which leading segments may be deleted.
//!
//! Rules (Kafka's, plus the causal-stability guard from DESIGN.md section 3):
//! - only whole, non-active segments are deleted, oldest first, stopping at the first keeper;
//! - never a segment holding an offset >= `stable_offset` (a lagging region may still need it);
//! - a segment entirely below the log start (after DeleteRecords) goes;
//! - retention.ms and retention.bytes apply only when cleanup.policy holds `delete` (a
//!   `compact`-only topic keeps its compacted segments, as in Kafka);
//! - retention.ms: a segment whose largest timestamp is older than `now - retention.ms` goes;
//! - retention.bytes: a segment goes while the total size minus its size stays >= the limit.

use crate::config::LogConfig;

/// The facts retention needs about one closed segment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SegmentFacts {
    /// Offset after the segment's last batch.
    pub end_offset: i64,
    /// Bytes in its `.log`.
    pub size: u64,
    /// Its largest batch timestamp, if it has batches.
    pub max_timestamp: Option<i64>,
}

/// How many of the leading `closed` segments (oldest first, the active one excluded) to delete.
pub(crate) fn deletable_prefix(
    closed: &[SegmentFacts],
    total_size: u64,
    config: &LogConfig,
    now_ms: i64,
    stable_offset: i64,
    log_start: i64,
) -> usize {
    let mut remaining = total_size;
    let mut count = 0;
    for seg in closed {
        if seg.end_offset > stable_offset {
            break;
        }
        let below_start = seg.end_offset <= log_start;
        let too_old = config.cleanup_delete
            && config.retention_ms >= 0
            && seg.max_timestamp.unwrap_or(-1) < now_ms.saturating_sub(config.retention_ms);
        let too_big = config.cleanup_delete
            && config.retention_bytes >= 0
            && remaining.saturating_sub(seg.size) >= config.retention_bytes as u64;
        if !(below_start || too_old || too_big) {
            break;
        }
        remaining -= seg.size.min(remaining);
        count += 1;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(end_offset: i64, size: u64, ts: i64) -> SegmentFacts {
        SegmentFacts {
            end_offset,
            size,
            max_timestamp: Some(ts),
        }
    }

    #[test]
    fn bytes_retention_keeps_the_log_at_or_above_the_limit() {
        let config = LogConfig {
            retention_ms: -1,
            retention_bytes: 250,
            ..LogConfig::default()
        };
        let closed = [seg(10, 100, 0), seg(20, 100, 0), seg(30, 100, 0)];
        // total 400 (300 closed + 100 active): dropping two leaves 200 < 250, so only one goes.
        assert_eq!(deletable_prefix(&closed, 400, &config, 0, i64::MAX, 0), 1);
    }

    #[test]
    fn nothing_at_or_above_the_stable_offset_is_deleted() {
        let config = LogConfig {
            retention_ms: 10,
            ..LogConfig::default()
        };
        let closed = [seg(10, 1, 0), seg(20, 1, 0)];
        assert_eq!(deletable_prefix(&closed, 3, &config, 1000, 15, 0), 1);
        assert_eq!(deletable_prefix(&closed, 3, &config, 1000, 20, 0), 2);
    }

    #[test]
    fn compact_only_topics_are_not_deleted_by_time_or_size() {
        let config = LogConfig {
            retention_ms: 10,
            retention_bytes: 0,
            cleanup_delete: false,
            cleanup_compact: true,
            ..LogConfig::default()
        };
        let closed = [seg(10, 1, 0), seg(20, 1, 0)];
        assert_eq!(deletable_prefix(&closed, 3, &config, 1000, i64::MAX, 0), 0);
        assert_eq!(deletable_prefix(&closed, 3, &config, 1000, i64::MAX, 10), 1);
    }

    #[test]
    fn young_segments_stop_time_retention() {
        let config = LogConfig {
            retention_ms: 100,
            ..LogConfig::default()
        };
        let closed = [seg(10, 1, 50), seg(20, 1, 950), seg(30, 1, 10)];
        assert_eq!(deletable_prefix(&closed, 4, &config, 1000, i64::MAX, 0), 1);
    }
}
