//! Periodic blocking work (retention, table materialization): run on the blocking pool at a
//! fixed cadence until shutdown, one pass at a time, so a slow pass delays the next instead of
//! piling up.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::broker::Broker;

/// Calls `pass` every `period` on the blocking pool until shutdown; `name` labels failures.
pub async fn every(
    period: Duration,
    name: &'static str,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
    pass: fn(&Broker),
) {
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let broker = broker.clone();
        if let Err(error) = crate::blocking::MAINTENANCE
            .run(move || pass(&broker))
            .await
        {
            tracing::error!(task = name, %error, "background pass failed");
        }
    }
}
