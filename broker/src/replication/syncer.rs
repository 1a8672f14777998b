//! Background replication duties: fsync partitions that hold unsynced batches (so own batches
//! produced with acks=0/1 become servable, and remote batches count toward the stable cut), and
//! publish the regions report as metrics, warning once when a peer turns stale.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::status;
use crate::background;
use crate::broker::Broker;
use crate::metrics;

/// How often partitions with unsynced batches are fsynced (bounds replication latency of
/// acks=0/1 writes).
const SYNC_PERIOD: Duration = Duration::from_millis(5);
/// How often the regions report is published as metrics.
const REPORT_PERIOD: Duration = Duration::from_secs(1);

/// Runs until shutdown.
pub async fn run(broker: Arc<Broker>, shutdown: watch::Receiver<bool>) {
    let syncing = background::every(
        SYNC_PERIOD,
        "replication-sync",
        broker.clone(),
        shutdown.clone(),
        sync_unsynced,
    );
    let reporting = background::every(
        REPORT_PERIOD,
        "replication-report",
        broker,
        shutdown,
        publish,
    );
    tokio::join!(syncing, reporting);
}

fn sync_unsynced(broker: &Broker) {
    for topic in broker.topics.all() {
        for partition in topic.partitions() {
            if !partition.log().has_unsynced() {
                continue;
            }
            if let Err(error) = partition.sync(&broker.replication) {
                tracing::error!(topic = %topic.name, partition = partition.index(), %error, "replication fsync failed");
            }
        }
    }
}

fn publish(broker: &Broker) {
    let report = status::report(broker);
    let mut stale_before = broker
        .replication
        .stale_reported
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    for (origin, batches) in &report.clock {
        metrics::replication_clock(origin, *batches);
    }
    metrics::replication_buffered(report.buffered_batches);
    for peer in &report.peers {
        metrics::replication_peer(
            &peer.name,
            peer.lag_batches,
            peer.lag_seconds,
            peer.link.state == status::LinkState::Connected,
            peer.stale,
        );
        if peer.stale && stale_before.insert(peer.id) {
            tracing::warn!(peer = %peer.name, "peer region is stale: no contact for longer than --region-stale-after-ms; it no longer holds back retention and must be re-seeded if it missed deleted data");
        } else if !peer.stale && stale_before.remove(&peer.id) {
            tracing::info!(peer = %peer.name, "peer region is back");
        }
    }
}
