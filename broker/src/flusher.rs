//! `flush.ms`: batches of a topic that sets it are fsynced once they have waited that long,
//! whatever the producer's `acks`. Without it an acks=0/1 batch reaches the disk when the
//! kernel writes it back (or, with peers, when the replication syncer fsyncs within
//! milliseconds); acks=all is fsynced before it is answered either way.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::background;
use crate::broker::Broker;
use crate::metrics;
use crate::wall_clock::now_ms;

/// How often partitions are checked: a batch waits at most `flush.ms` plus this.
const FLUSH_CHECK_PERIOD: Duration = Duration::from_millis(100);

/// Runs until shutdown.
pub async fn run(broker: Arc<Broker>, shutdown: watch::Receiver<bool>) {
    background::every(FLUSH_CHECK_PERIOD, "flush", broker, shutdown, flush_due).await;
}

fn flush_due(broker: &Broker) {
    let now = now_ms();
    for topic in broker.topics.all() {
        let flush_ms = topic.log_config().flush_ms;
        if flush_ms == i64::MAX {
            continue;
        }
        for partition in topic.partitions() {
            match partition.flush_if_due(&broker.replication, flush_ms, now) {
                Ok(true) => metrics::log_flushed(&topic.name),
                Ok(false) => {}
                Err(error) => {
                    tracing::error!(topic = %topic.name, partition = partition.index(), %error, "flush.ms fsync failed");
                }
            }
        }
    }
}
