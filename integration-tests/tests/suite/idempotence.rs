//! Idempotent producers: retries after a lost connection or a broker crash never duplicate or
//! reorder records.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use anyhow::{bail, Result};
use causeway_integration_tests::proxy::CuttingProxy;
use causeway_integration_tests::{
    block_on, create_topic, http_get, payload_str, read_to_end, topic_name, with_broker,
    BrokerOptions, BrokerProcess,
};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Offset;

const RECORDS: usize = 20_000;
/// Connection cuts while the producer sends.
const CUTS: usize = 8;

fn idempotent_producer(bootstrap: &str) -> Result<FutureProducer> {
    Ok(causeway_integration_tests::producer_config(bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("batch.num.messages", "200")
        .set("max.in.flight.requests.per.connection", "5")
        .set("message.timeout.ms", "60000")
        .set("retry.backoff.ms", "50")
        .set("reconnect.backoff.ms", "20")
        .set("reconnect.backoff.max.ms", "200")
        .create()?)
}

/// Sends `0..RECORDS` to partition 0 and waits for every delivery report; fails on any error.
fn send_all(producer: &FutureProducer, topic: &str) -> Result<()> {
    let values: Vec<String> = (0..RECORDS).map(|i| i.to_string()).collect();
    let deliveries: Vec<_> = values
        .iter()
        .map(|value| {
            let record: FutureRecord<'_, (), String> =
                FutureRecord::to(topic).partition(0).payload(value);
            producer
                .send_result(record)
                .map_err(|(e, _)| anyhow::anyhow!("enqueue failed: {e}"))
        })
        .collect::<Result<_>>()?;
    for delivery in deliveries {
        match block_on(delivery) {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => bail!("delivery failed: {e}"),
            Err(_) => bail!("delivery report channel closed"),
        }
    }
    Ok(())
}

/// Checks that partition 0 holds exactly `0..RECORDS`, each once, in order.
fn assert_exactly_once_in_order(broker: &BrokerProcess, topic: &str) -> Result<()> {
    let messages = read_to_end(&broker.bootstrap(), topic, 0, Offset::Beginning)?;
    let values: Vec<String> = messages.iter().map(payload_str).collect();
    let expected: Vec<String> = (0..RECORDS).map(|i| i.to_string()).collect();
    if values != expected {
        let first_bad = values
            .iter()
            .zip(&expected)
            .position(|(a, b)| a != b)
            .unwrap_or(values.len().min(expected.len()));
        bail!(
            "partition holds {} records, expected {}; first difference at index {first_bad}: {:?}",
            values.len(),
            expected.len(),
            values.get(first_bad)
        );
    }
    Ok(())
}

#[test]
fn idempotent_producer_survives_connection_cuts_without_duplicates_or_reordering() {
    // Clients learn the proxy's address from Metadata, so the broker advertises it.
    let proxy = Arc::new(CuttingProxy::bind().expect("proxy binds"));
    let options = BrokerOptions::new().flag("--advertised-addr", proxy.addr());
    with_broker(options, |broker| {
        proxy.forward_to(broker.kafka_addr())?;
        let topic = topic_name("idem-cut");
        create_topic(broker, &topic, 1, &[])?;
        let producer = idempotent_producer(&proxy.addr().to_string())?;
        let done = Arc::new(AtomicBool::new(false));
        let cutter = {
            let (proxy, done) = (proxy.clone(), done.clone());
            thread::spawn(move || {
                for _ in 0..CUTS {
                    thread::sleep(Duration::from_millis(100));
                    if done.load(Ordering::Acquire) {
                        break;
                    }
                    proxy.cut_all();
                }
            })
        };
        let sent = send_all(&producer, &topic);
        done.store(true, Ordering::Release);
        let _ = cutter.join();
        sent?;
        if proxy.cuts() == 0 {
            bail!("the proxy never cut a connection: the test proved nothing");
        }
        let (_, metrics) = http_get(broker.http_addr(), "/metrics")?;
        let retried = metrics
            .lines()
            .filter(|l| l.starts_with("causeway_produce_duplicate_batches_total"))
            .collect::<Vec<_>>();
        eprintln!(
            "connections cut: {}; duplicates answered: {retried:?}",
            proxy.cuts()
        );
        assert_exactly_once_in_order(broker, &topic)
    });
}

#[test]
fn idempotent_producer_across_kill_9_and_restart_yields_every_record_once() {
    with_broker(BrokerOptions::new(), |broker| {
        let topic = topic_name("idem-kill");
        create_topic(broker, &topic, 1, &[])?;
        let producer = idempotent_producer(&broker.bootstrap())?;
        let sender = {
            let producer = producer.clone();
            let topic = topic.clone();
            thread::spawn(move || send_all(&producer, &topic))
        };
        thread::sleep(Duration::from_millis(300));
        broker.kill9();
        thread::sleep(Duration::from_millis(500));
        broker.restart()?;
        match sender.join() {
            Ok(result) => result?,
            Err(_) => bail!("sender thread panicked"),
        }
        assert_exactly_once_in_order(broker, &topic)
    });
}
