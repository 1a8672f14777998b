//! Transactions left open by a region that went silent. Only a transaction's origin region (the
//! one whose coordinator issued its producer id) writes its markers, so a region that dies
//! mid-transaction would hold the last stable offset of every partition the transaction wrote
//! back in every region, for good: read_committed consumers, tables and compaction stall.
//!
//! Once the origin is stale here and the transaction has taken no write here for longer than the
//! origin could have kept it open (`--transaction-max-timeout-ms`) plus the time its marker
//! would have needed to arrive through any region (`--region-stale-after-ms`), this region
//! aborts it, with the epoch bumped as the origin's own timeout would. The marker replicates like
//! any other, so every region skips the same records, and it fences the origin's producer should
//! the origin come back: its coordinator then turns a commit into an abort (see `end`).

use causeway_storage::{producer_region, ControlType, OpenTransaction};

use super::TxnContext;
use crate::metrics;
use crate::replication::Replication;

/// The name of the region that issued `producer_id`, as operators know it; its numeric id when
/// it is not a peer of this mesh.
fn origin_name(replication: &Replication, producer_id: i64) -> String {
    match producer_region(producer_id) {
        Some(id) => replication
            .peer(id)
            .map_or_else(|| format!("region id {id}"), |(peer, _)| peer.name.clone()),
        None => "unknown".to_string(),
    }
}

/// Whether `open` may be aborted by this region at `now_ms`: its producer id belongs to a stale
/// region and no batch of it arrived here for longer than `wait_ms`.
pub fn is_abandoned(open: &OpenTransaction, stale: &[u32], now_ms: i64, wait_ms: i64) -> bool {
    producer_region(open.producer_id).is_some_and(|origin| stale.contains(&origin))
        && now_ms.saturating_sub(open.last_write_ms) > wait_ms
}

/// Aborts every abandoned transaction in every partition (`stale` lists the stale peers);
/// returns how many markers it wrote.
pub fn abort_abandoned(ctx: &TxnContext<'_>, stale: &[u32], now_ms: i64) -> usize {
    let wait_ms = i64::from(ctx.transaction_max_timeout_ms)
        .saturating_add(i64::try_from(ctx.region_stale_after_ms).unwrap_or(i64::MAX));
    let mut aborted = 0;
    for topic in ctx.topics.all() {
        for partition in topic.partitions() {
            for open in partition.log().open_transactions() {
                if !is_abandoned(&open, stale, now_ms, wait_ms) {
                    continue;
                }
                let epoch = open.epoch.checked_add(1).unwrap_or(open.epoch);
                let written = partition
                    .append_local_control(ControlType::Abort, open.producer_id, epoch, now_ms)
                    .and_then(|_| partition.sync(ctx.replication));
                match written {
                    Ok(()) => {
                        partition.appended().notify_waiters();
                        aborted += 1;
                        metrics::transaction_abandoned_aborted();
                        tracing::warn!(
                            topic = %topic.name,
                            partition = partition.index(),
                            producer_id = open.producer_id,
                            origin = %origin_name(ctx.replication, open.producer_id),
                            first_offset = open.first_offset,
                            "aborted a transaction its stale origin region left open"
                        );
                    }
                    Err(error) => tracing::error!(
                        topic = %topic.name,
                        partition = partition.index(),
                        producer_id = open.producer_id,
                        %error,
                        "could not abort a transaction left open by a stale region"
                    ),
                }
            }
        }
    }
    aborted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_from(region: u32, last_write_ms: i64) -> OpenTransaction {
        OpenTransaction {
            producer_id: (i64::from(region) << 40) | 5,
            epoch: 3,
            first_offset: 10,
            last_write_ms,
        }
    }

    #[test]
    fn only_transactions_of_stale_regions_idle_past_the_wait_are_abandoned() {
        let stale = [7];
        assert!(is_abandoned(&open_from(7, 1_000), &stale, 5_001, 4_000));
        assert!(
            !is_abandoned(&open_from(7, 1_000), &stale, 5_000, 4_000),
            "not before the wait is over"
        );
        assert!(
            !is_abandoned(&open_from(8, 1_000), &stale, 99_000, 4_000),
            "a live region ends its own transactions"
        );
        assert!(!is_abandoned(&open_from(7, 1_000), &[], 99_000, 4_000));
    }
}
