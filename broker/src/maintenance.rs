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
use crate::tables::{
    clean_partition, is_table, merge_mode, partition_number, store_name, PassBudget,
};
use crate::topics::{PartitionHandle, Topic};
use crate::wall_clock::now_ms;

/// Runs until shutdown.
pub async fn run(broker: Arc<Broker>, shutdown: watch::Receiver<bool>) {
    let period = Duration::from_millis(broker.options.log_retention_check_interval_ms.max(10));
    background::every(period, "maintenance", broker, shutdown, maintain_all).await;
}

fn maintain_all(broker: &Broker) {
    let now = now_ms();
    let stale = stale_peers(&broker.replication, broker.started_ms);
    for topic in broker.topics.all() {
        for partition in topic.partitions() {
            let stable_offset = partition.stable_offset(&broker.replication, &stale);
            let deletable_below = retention_bound(broker, &topic, &partition, stable_offset);
            match partition.log().maintain(now, deletable_below) {
                Ok(report) if report.segments_deleted > 0 => tracing::info!(
                    topic = %topic.name,
                    partition = partition.index(),
                    segments = report.segments_deleted,
                    bytes = report.bytes_deleted,
                    "retention deleted segments"
                ),
                Ok(_) => {}
                Err(error) => tracing::error!(
                    topic = %topic.name,
                    partition = partition.index(),
                    %error,
                    "maintenance failed"
                ),
            }
            compact(broker, &topic, &partition, &stale, now);
        }
    }
}

/// How far retention may delete: below the stable offset, and on a table (`compact,delete`)
/// also below what its rows have applied, so a materializer that lags (after a restart, a
/// rebuild of the rows) never misses records in one region that every other region applied.
fn retention_bound(
    broker: &Broker,
    topic: &Topic,
    partition: &PartitionHandle,
    stable_offset: i64,
) -> i64 {
    if !is_table(&topic.overrides()) {
        return stable_offset;
    }
    match broker.tables.applied(&store_name(topic), partition.index()) {
        Ok(applied) => stable_offset.min(applied),
        Err(error) => {
            tracing::error!(topic = %topic.name, partition = partition.index(), %error, "reading the table's applied offset failed; retention waits");
            partition.log().log_start_offset()
        }
    }
}

/// Runs a compaction pass on a table partition if one is due, paced by the cleaner's I/O rate.
fn compact(broker: &Broker, topic: &Topic, partition: &PartitionHandle, stale: &[u32], now: i64) {
    let overrides = topic.overrides();
    if !is_table(&overrides) {
        return;
    }
    let bounds = partition.clean_bounds(&broker.replication, stale);
    let started = std::time::Instant::now();
    let mut budget = PassBudget::new(broker.options.log_cleaner_io_bytes_per_sec)
        .with_rows_memory(broker.options.log_cleaner_memory_bytes);
    match clean_partition(
        &topic.name,
        partition_number(partition),
        partition.log(),
        merge_mode(&overrides),
        bounds,
        now,
        &mut budget,
    ) {
        Ok(Some(report)) => {
            if report.stopped_at_rows_memory {
                metrics::compaction_memory_bound(&topic.name);
                tracing::warn!(
                    topic = %topic.name,
                    partition = partition.index(),
                    memory_bytes = broker.options.log_cleaner_memory_bytes,
                    segments_rewritten = report.swap.swapped,
                    "compaction stopped short: the table's rows outgrew --log-cleaner-memory-bytes; the rest stays uncompacted until it is raised"
                );
            }
            metrics::compaction_pass(&topic.name, report.swap.bytes_reclaimed, started.elapsed());
            tracing::info!(
                topic = %topic.name,
                partition = partition.index(),
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
            partition = partition.index(),
            %error,
            "compaction failed"
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use causeway_storage::ControlType;
    use tempfile::TempDir;

    use super::*;
    use crate::config::parse_cli_from;
    use crate::topics::NewTopic;

    /// A one-region broker over `dir` whose topics may have tiny segments.
    fn broker(dir: &TempDir) -> Broker {
        let dir = dir.path().to_str().expect("UTF-8 temp dir");
        let args = [
            "causeway",
            "--data-dir",
            dir,
            "--log-segment-bytes-min",
            "1",
        ];
        Broker::open(parse_cli_from(args).expect("options").serve).expect("broker opens")
    }

    #[test]
    fn retention_on_a_table_never_deletes_what_its_rows_have_not_applied() {
        let dir = TempDir::new().expect("dir");
        let broker = broker(&dir);
        let configs: BTreeMap<String, String> = [
            ("cleanup.policy", "compact,delete"),
            ("retention.ms", "1"),
            ("segment.bytes", "100"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let topic = broker
            .topics
            .create(NewTopic {
                name: "rows".into(),
                partitions: 1,
                configs,
            })
            .expect("create");
        let partition = topic.partition(0).expect("partition 0");
        for _ in 0..6 {
            // One batch per segment; a marker needs no producer state.
            partition
                .append_local_control(ControlType::Abort, 1, 0, now_ms() - 1_000)
                .expect("append");
        }
        partition.sync(&broker.replication).expect("sync");
        maintain_all(&broker);
        assert_eq!(
            partition.log().log_start_offset(),
            0,
            "nothing applied to the rows yet, nothing deleted"
        );
        broker
            .tables
            .commit(&store_name(&topic), 0, 3, &[], 0)
            .expect("applied offset");
        maintain_all(&broker);
        assert_eq!(
            partition.log().log_start_offset(),
            3,
            "deleted up to what the rows applied"
        );
    }
}
