//! The background scrub: every `--scrub-interval-ms` at most, one pass reads the closed
//! segments of every partition and checks each batch (`storage::Partition::scrub_closed`), paced
//! to `--scrub-bytes-per-sec` so it never competes with produce and fetch for the disk. Damage
//! it finds is reported like damage a peer's read finds: error log, `causeway_storage_corrupt_batches_total`,
//! `causeway_partition_damaged_batches` and a `/readyz` line, and peer regions fetch those batches
//! from another region.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::blocking;
use crate::broker::Broker;
use crate::metrics;

/// Bytes one step reads at most: small enough that the log's read lock and a maintenance
/// thread are held for about a millisecond.
const STEP_BYTES: usize = 1 << 20;

/// How often a long pass logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(60);

/// Runs passes until shutdown; does nothing when `--scrub-bytes-per-sec` is 0.
pub async fn run(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let rate = broker.options.scrub_bytes_per_sec;
    if rate == 0 {
        return;
    }
    let interval = Duration::from_millis(broker.options.scrub_interval_ms);
    loop {
        let started = Instant::now();
        let Some(pass) = scrub_all(&broker, rate, &mut shutdown).await else {
            return;
        };
        metrics::scrub_pass(started.elapsed());
        tracing::info!(
            partitions = pass.partitions,
            bytes = pass.bytes,
            seconds = started.elapsed().as_secs_f64(),
            "scrub pass over closed segments complete"
        );
        let rest = interval.saturating_sub(started.elapsed());
        if stopped_within(&mut shutdown, rest).await {
            return;
        }
    }
}

/// What one pass read.
#[derive(Default)]
struct Pass {
    partitions: usize,
    bytes: u64,
}

/// One pass over every partition that exists when it starts; `None` on shutdown.
async fn scrub_all(
    broker: &Arc<Broker>,
    rate: u64,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Pass> {
    let mut pass = Pass::default();
    let topics = broker.topics.all();
    let total: usize = topics.iter().map(|topic| topic.partition_count()).sum();
    let mut reported = Instant::now();
    for topic in topics {
        for partition in topic.partitions() {
            if reported.elapsed() >= PROGRESS_EVERY {
                reported = Instant::now();
                tracing::info!(
                    partitions_done = pass.partitions,
                    partitions = total,
                    bytes = pass.bytes,
                    "scrub pass in progress"
                );
            }
            let mut from = i64::MIN;
            loop {
                let log = partition.log().clone();
                let step = blocking::MAINTENANCE
                    .run(move || log.scrub_closed(from, STEP_BYTES))
                    .await;
                let step = match step {
                    Ok(Ok(step)) => step,
                    Ok(Err(error)) => {
                        // A partition deleted or failed meanwhile: the next pass tries again.
                        tracing::warn!(topic = %topic.name, partition = partition.index(), %error, "scrub step failed");
                        break;
                    }
                    Err(error) => {
                        tracing::error!(%error, "scrub step panicked");
                        break;
                    }
                };
                pass.bytes += step.bytes_read;
                let pause = Duration::from_secs_f64(step.bytes_read as f64 / rate as f64);
                if stopped_within(shutdown, pause).await {
                    return None;
                }
                if step.pass_complete {
                    break;
                }
                from = step.next_offset;
            }
            pass.partitions += 1;
        }
    }
    Some(pass)
}

/// Waits `pause`; true if shutdown began meanwhile (or had begun).
async fn stopped_within(shutdown: &mut watch::Receiver<bool>, pause: Duration) -> bool {
    if *shutdown.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(pause) => false,
        _ = shutdown.wait_for(|stop| *stop) => true,
    }
}
