//! Lanes for blocking work (reads of old data, fsync, RocksDB writes, background passes), so
//! one kind cannot starve another and none holds a runtime worker.
//!
//! Tokio has one blocking pool. Left alone, whoever calls `spawn_blocking` most takes its
//! threads: 512 idle change feeds once held every one of them, and acks=all produce (whose fsync
//! waits for a blocking thread), replication and shutdown stopped. Each kind of blocking work now
//! runs in its own lane, a semaphore in front of the pool: a task waits for a permit of its lane
//! (asynchronously, holding no thread) before it takes a thread, and the pool is sized to hold
//! every lane at once. A flood in one lane queues in that lane only. The threading model as a
//! whole is described in `docs/design.md` ("Threads").

use tokio::sync::Semaphore;
use tokio::task::JoinError;

use crate::metrics;

/// One kind of blocking work and how many threads it may hold at once.
pub struct Lane {
    name: &'static str,
    permits: Semaphore,
    size: usize,
}

impl Lane {
    const fn new(name: &'static str, size: usize) -> Lane {
        Lane {
            name,
            permits: Semaphore::const_new(size),
            size,
        }
    }

    /// Runs `work` on the blocking pool once this lane has room; the caller waits without
    /// holding a thread. The permit travels with the work, so a caller that stops waiting does
    /// not free the lane before the work ends.
    pub async fn run<T, F>(&'static self, work: F) -> Result<T, JoinError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let permit = self.permits.acquire().await;
        let name = self.name;
        tokio::task::spawn_blocking(move || {
            let _busy = metrics::BlockingBusy::enter(name);
            let _permit = permit;
            work()
        })
        .await
    }

    /// Returns once no work of this lane is running or queued, including work whose caller
    /// stopped waiting for it (a task cancelled at shutdown leaves its blocking work running):
    /// shutdown waits here before it closes the logs that work writes to.
    pub async fn idle(&'static self) {
        let all = u32::try_from(self.size).unwrap_or(u32::MAX);
        // The semaphore is never closed, so acquiring cannot fail; the permits go back at once.
        let _ = self.permits.acquire_many(all).await;
    }
}

/// Waits until every lane is idle (see [`Lane::idle`]).
pub async fn all_idle() {
    for lane in LANES {
        lane.idle().await;
    }
}

/// fsyncs that acknowledge produce requests (acks=all) and the replication syncer's.
pub static FSYNC: Lane = Lane::new("fsync", 64);
/// Replication: collecting the batches a peer pulls, applying what a link received.
pub static REPLICATION: Lane = Lane::new("replication", 32);
/// Metadata writes to RocksDB: committed offsets, groups, transactions and their markers, and
/// topic changes (the catalog, sidecars, new partition directories).
pub static METADATA: Lane = Lane::new("metadata", 32);
/// Change feeds reading a table's log, one step at a time.
pub static FEEDS: Lane = Lane::new("change_feeds", 8);
/// Background passes (retention, compaction, materialization), status reports, opening and
/// closing the logs at start and shutdown.
pub static MAINTENANCE: Lane = Lane::new("maintenance", 16);

/// Fetch reads below the active segment and ListOffsets reads: a read of old data waits on
/// the disk.
pub static READS: Lane = Lane::new("reads", 32);

/// Every lane.
const LANES: [&Lane; 6] = [
    &FSYNC,
    &REPLICATION,
    &METADATA,
    &FEEDS,
    &MAINTENANCE,
    &READS,
];

/// Threads tokio may add beyond the lanes for its own blocking calls (name resolution of peer
/// addresses).
const UNLANED_THREADS: usize = 16;

/// The blocking pool's size: every lane full at once still leaves room for tokio's own calls.
pub fn pool_threads() -> usize {
    LANES.iter().map(|lane| lane.size).sum::<usize>() + UNLANED_THREADS
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    static SMALL: Lane = Lane::new("test_small", 2);
    static ABANDONED: Lane = Lane::new("test_abandoned", 2);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_waits_for_work_whose_caller_stopped_waiting() {
        let finished = Arc::new(AtomicUsize::new(0));
        let done = finished.clone();
        let caller = tokio::spawn(ABANDONED.run(move || {
            std::thread::sleep(Duration::from_millis(300));
            done.fetch_add(1, Ordering::SeqCst);
        }));
        tokio::time::sleep(Duration::from_millis(50)).await;
        caller.abort();
        let _ = caller.await;
        assert_eq!(finished.load(Ordering::SeqCst), 0, "still running");
        ABANDONED.idle().await;
        assert_eq!(
            finished.load(Ordering::SeqCst),
            1,
            "idle returned before the work ended"
        );
        tokio::time::timeout(Duration::from_secs(5), ABANDONED.run(|| ()))
            .await
            .expect("the lane is free again")
            .expect("runs");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_lane_queues_its_own_work_and_leaves_other_lanes_free() {
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = Arc::new(std::sync::Mutex::new(release_rx));
        let mut waiting = Vec::new();
        for _ in 0..6 {
            let (running, most, release_rx) = (running.clone(), most.clone(), release_rx.clone());
            waiting.push(tokio::spawn(SMALL.run(move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                let _ = release_rx
                    .lock()
                    .map(|rx| rx.recv_timeout(Duration::from_secs(10)));
                running.fetch_sub(1, Ordering::SeqCst);
            })));
        }
        // The lane fills to its size.
        let started = tokio::time::Instant::now();
        while running.load(Ordering::SeqCst) < 2 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the lane never filled"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Another lane runs at once although this one is full.
        let other = tokio::time::timeout(Duration::from_secs(5), FSYNC.run(|| 7)).await;
        assert!(matches!(other, Ok(Ok(7))), "the fsync lane waited");
        for _ in 0..6 {
            let _ = release_tx.send(());
        }
        for task in waiting {
            assert!(matches!(task.await, Ok(Ok(()))));
        }
        assert_eq!(most.load(Ordering::SeqCst), 2, "lane size exceeded");
    }
}
