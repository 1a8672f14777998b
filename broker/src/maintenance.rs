//! Background housekeeping: roll segments by age, apply retention and compact tables on every
//! partition at the `log.retention.check.interval.ms` cadence, never above the causally stable
//! offset (what every region holds durably; the log end in one region; stale peers left out).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::background;
use crate::broker::Broker;
use crate::metrics;
use crate::replication::status::stale_peers;
use crate::tables::{clean_partition, is_table, merge_mode, IoBudget};
use crate::topics::{PartitionHandle, Topic};
use crate::wall_clock::now_ms;

/// Runs until shutdown.
pub async fn run(broker: Arc<Broker>, shutdown: watch::Receiver<bool>) {
    let period = Duration::from_millis(broker.options.log_retention_check_interval_ms.max(10));
    background::every(period, "maintenance", broker, shutdown, maintain_all).await;
}

fn maintain_all(broker: &Broker) {
    let now = now_ms();
    let stale = stale_peers(broker);
    for topic in broker.topics.all() {
        for partition in topic.partitions() {
            let stable_offset = partition.stable_offset(&broker.replication, &stale);
            match partition.log.maintain(now, stable_offset) {
                Ok(report) if report.segments_deleted > 0 => tracing::info!(
                    topic = %topic.name,
                    partition = partition.index,
                    segments = report.segments_deleted,
                    bytes = report.bytes_deleted,
                    "retention deleted segments"
                ),
                Ok(_) => {}
                Err(error) => tracing::error!(
                    topic = %topic.name,
                    partition = partition.index,
                    %error,
                    "maintenance failed"
                ),
            }
            compact(broker, &topic, &partition, stable_offset, now);
        }
    }
}

/// Runs a compaction pass on a table partition if one is due, paced by the cleaner's I/O rate.
fn compact(
    broker: &Broker,
    topic: &Topic,
    partition: &PartitionHandle,
    stable_offset: i64,
    now: i64,
) {
    let overrides = topic.overrides();
    if !is_table(&overrides) {
        return;
    }
    let started = std::time::Instant::now();
    let mut budget = IoBudget::new(broker.options.log_cleaner_io_bytes_per_sec);
    match clean_partition(
        &topic.name,
        &partition.log,
        merge_mode(&overrides),
        stable_offset,
        now,
        &mut budget,
    ) {
        Ok(Some(report)) => {
            metrics::compaction_pass(&topic.name, report.swap.bytes_reclaimed, started.elapsed());
            tracing::info!(
                topic = %topic.name,
                partition = partition.index,
                segments_read = report.segments_read,
                segments_rewritten = report.swap.swapped,
                bytes_read = report.bytes_read,
                records_written = report.records_written,
                bytes_reclaimed = report.swap.bytes_reclaimed,
                seconds = started.elapsed().as_secs_f64(),
                "compacted table partition"
            );
        }
        Ok(None) => {}
        Err(error) => tracing::error!(
            topic = %topic.name,
            partition = partition.index,
            %error,
            "compaction failed"
        ),
    }
}
