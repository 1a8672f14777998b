//! Peers that ask for batches this region no longer holds.
//!
//! Retention, DeleteRecords and compaction never go above the stable cut, but a peer reported
//! stale (silent for longer than `--region-stale-after-ms`) is left out of that cut so that a
//! region gone for good does not stop retention everywhere. When such a peer comes back, the
//! batches it lacks may be deleted here (and, if every other region moved on too, everywhere):
//! it would be served the batches after them and queue them for ever, waiting for predecessors
//! nobody can send. That must not be silent. Each pull asking for a deleted batch is counted
//! (`causeway_replication_deleted_asked_total{peer}`), and logged once a minute per peer and
//! partition, by name, with what to do: re-seed the region from a peer.

use std::collections::HashMap;
use std::sync::Mutex;

use causeway_replication::BatchId;

use crate::metrics;

/// How often the same peer and partition are logged at most.
const LOG_EVERY_MS: i64 = 60_000;

/// When each (peer, topic, partition) was last logged.
#[derive(Debug, Default)]
pub struct DeletedForPeer(Mutex<HashMap<(u32, String, u32), i64>>);

impl DeletedForPeer {
    /// Reports that `peer` (named `peer_name`) asked for the `deleted` batches of a partition,
    /// which this region no longer holds.
    pub fn asked(
        &self,
        (peer, peer_name): (u32, &str),
        (topic, partition): (&str, u32),
        deleted: &[BatchId],
        now_ms: i64,
    ) {
        metrics::replication_deleted_asked(peer_name);
        let mut logged = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let last = logged
            .entry((peer, topic.to_owned(), partition))
            .or_insert(i64::MIN);
        if now_ms.saturating_sub(*last) < LOG_EVERY_MS {
            return;
        }
        *last = now_ms;
        let first: Vec<String> = deleted
            .iter()
            .map(|id| format!("{}:{}", id.origin, id.seq))
            .collect();
        tracing::error!(
            peer = peer_name,
            topic,
            partition,
            first_missing = %first.join(", "),
            "region {peer_name} asks for batches this region deleted (retention, DeleteRecords or compaction ran while it was stale); it cannot catch up from here: re-seed it from a peer"
        );
    }
}
