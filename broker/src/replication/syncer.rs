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
    let syncing = sync_until_shutdown(broker.clone(), shutdown.clone());
    let reporting = background::every(
        REPORT_PERIOD,
        "replication-report",
        broker,
        shutdown,
        publish,
    );
    tokio::join!(syncing, reporting);
}

/// Fsyncs what is unsynced every [`SYNC_PERIOD`], or at once when an append asks for it while
/// a peer waits ([`super::Replication::own_batches_appended`]); one pass at a time.
async fn sync_until_shutdown(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(SYNC_PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = broker.replication.sync_wanted() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let for_pass = broker.clone();
        if let Err(error) = crate::blocking::MAINTENANCE
            .run(move || sync_unsynced(&for_pass))
            .await
        {
            tracing::error!(%error, "replication fsync pass failed");
        }
    }
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
    let report = status::report(&broker.topics, &broker.replication, broker.started_ms);
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
            metrics::PeerGap {
                lag_batches: peer.lag_batches,
                lag_seconds: peer.lag_seconds,
                peer_behind_batches: peer.peer_behind_batches,
                peer_behind_seconds: peer.peer_behind_seconds,
            },
            peer.link.state == status::LinkState::Connected,
            peer.stale,
        );
        log_behind(&broker.replication, peer);
        if peer.stale && stale_before.insert(peer.id) {
            tracing::warn!(peer = %peer.name, "peer region is stale: no contact for longer than --region-stale-after-ms; it no longer holds back retention and must be re-seeded if it missed deleted data");
        } else if !peer.stale && stale_before.remove(&peer.id) {
            tracing::info!(peer = %peer.name, "peer region is back");
        }
    }
}

/// Logs, by region name, when this region falls behind a peer or the peer behind it (the oldest
/// missing batch older than [`status::BEHIND_AFTER_SECONDS`]) and when it has caught up.
fn log_behind(replication: &super::Replication, peer: &status::PeerReport) {
    let mut reported = replication
        .behind_reported
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let directions = [
        (status::Behind::Here, peer.lag_batches, peer.lag_seconds),
        (
            status::Behind::There,
            peer.peer_behind_batches,
            peer.peer_behind_seconds,
        ),
    ];
    for (direction, batches, seconds) in directions {
        let key = (peer.id, direction);
        let Some(behind) = status::behind_change(reported.contains(&key), batches, seconds) else {
            continue;
        };
        let (region, other) = (replication.region.as_str(), peer.name.as_str());
        let (this_region, peer_region) =
            ("this region".to_string(), format!("peer region {other}"));
        let (who, whom) = match direction {
            status::Behind::Here => (this_region, peer_region),
            status::Behind::There => (peer_region, this_region),
        };
        if behind {
            tracing::warn!(
                region,
                peer = other,
                missing_batches = batches,
                oldest_missing_seconds = seconds,
                "{who} is behind {whom}"
            );
        } else {
            tracing::info!(region, peer = other, "{who} caught up with {whom}");
        }
        if behind {
            reported.insert(key);
        } else {
            reported.remove(&key);
        }
    }
}
