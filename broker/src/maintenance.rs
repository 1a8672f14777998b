//! Background housekeeping: roll segments by age and apply retention on every partition at the
//! `log.retention.check.interval.ms` cadence, never above the causally stable offset (what every
//! region holds durably; the log end in one region; stale peers left out).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::background;
use crate::broker::Broker;
use crate::clock::now_ms;
use crate::replication::status::stale_peers;

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
        }
    }
}
