//! A background `acks=all` load for durability tests: numbered records go to partition 0 with a
//! window of deliveries in flight until the test stops it, and every acknowledgement is kept, so
//! the test can check after a crash or a stop that each acknowledged record is where its
//! delivery report said.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, Result};
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::{block_on, producer_config};

/// A running load.
pub struct AcksAllLoad {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(String, i64)>>>,
    acked_count: Arc<AtomicUsize>,
    thread: JoinHandle<Result<u64>>,
}

/// What a stopped load did.
#[derive(Debug)]
pub struct LoadOutcome {
    /// Records handed to the producer.
    pub sent: u64,
    /// Acknowledged `(payload, offset)` pairs, in acknowledgement order.
    pub acked: Vec<(String, i64)>,
}

impl AcksAllLoad {
    /// Starts sending `"{prefix}-{n:010}"` to `topic` partition 0 with `in_flight` deliveries
    /// outstanding; retries are off and deliveries time out after `timeout_ms`, so records
    /// lost with the broker are counted as unacknowledged, never resent.
    pub fn start(
        bootstrap: &str,
        topic: &str,
        prefix: &str,
        in_flight: usize,
        timeout_ms: u32,
    ) -> Result<AcksAllLoad> {
        let producer: FutureProducer = producer_config(bootstrap)
            .set("acks", "all")
            .set("linger.ms", "1")
            .set("message.send.max.retries", "0")
            .set("message.timeout.ms", timeout_ms.to_string())
            .set("socket.timeout.ms", timeout_ms.to_string())
            .create()?;
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let acked_count = Arc::new(AtomicUsize::new(0));
        let (topic, prefix) = (topic.to_string(), prefix.to_string());
        let (thread_stop, thread_acked, thread_count) =
            (stop.clone(), acked.clone(), acked_count.clone());
        let thread = std::thread::spawn(move || {
            run(
                &producer,
                &topic,
                &prefix,
                in_flight,
                &thread_stop,
                &thread_acked,
                &thread_count,
            )
        });
        Ok(AcksAllLoad {
            stop,
            acked,
            acked_count,
            thread,
        })
    }

    /// Acknowledgements so far.
    pub fn acknowledged(&self) -> usize {
        self.acked_count.load(Ordering::SeqCst)
    }

    /// Stops sending, waits for the outstanding deliveries and returns what happened.
    pub fn stop(self) -> Result<LoadOutcome> {
        self.stop.store(true, Ordering::SeqCst);
        let sent = self
            .thread
            .join()
            .map_err(|_| anyhow!("the load thread panicked"))??;
        let acked = self
            .acked
            .lock()
            .map_err(|_| anyhow!("the acknowledgement list is poisoned"))?
            .clone();
        Ok(LoadOutcome { sent, acked })
    }
}

fn run(
    producer: &FutureProducer,
    topic: &str,
    prefix: &str,
    in_flight: usize,
    stop: &AtomicBool,
    acked: &Mutex<Vec<(String, i64)>>,
    acked_count: &AtomicUsize,
) -> Result<u64> {
    let settle = |result: OwnedDeliveryResult, payload: String| {
        if let Ok(delivery) = result {
            if let Ok(mut acked) = acked.lock() {
                acked.push((payload, delivery.offset));
            }
            acked_count.fetch_add(1, Ordering::SeqCst);
        }
    };
    block_on(async {
        let mut window = VecDeque::new();
        let mut sent = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let payload = format!("{prefix}-{sent:010}");
            let record: FutureRecord<'_, (), str> = FutureRecord::to(topic)
                .payload(payload.as_str())
                .partition(0);
            match producer.send_result(record) {
                Ok(delivery) => {
                    window.push_back((payload, delivery));
                    sent += 1;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
            if window.len() >= in_flight {
                if let Some((payload, delivery)) = window.pop_front() {
                    if let Ok(result) = delivery.await {
                        settle(result, payload);
                    }
                }
            }
        }
        while let Some((payload, delivery)) = window.pop_front() {
            if let Ok(result) = delivery.await {
                settle(result, payload);
            }
        }
        Ok(sent)
    })
}
