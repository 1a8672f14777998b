//! Listener and creation limits against the real binary: a greedy or idle client is refused or
//! closed, other clients keep their service, memory stays bounded, and a restart works.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use causeway_integration_tests::raw::check_api_versions;
use causeway_integration_tests::{
    check_produce_consume, create_topic, ensure_eq, topic_name, with_broker, BrokerOptions,
    BrokerProcess,
};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::{CreateTopicsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

const INVALID_PARTITIONS: i16 = 37;

/// The broker still serves a fresh client end to end.
fn still_serving(broker: &mut BrokerProcess) -> Result<()> {
    if !broker.is_running() {
        bail!("the broker process exited");
    }
    check_api_versions(broker.kafka_addr())?;
    let topic = topic_name("health");
    create_topic(broker, &topic, 1, &[])?;
    check_produce_consume(broker, &topic)
}

/// Resident memory of the broker process, from /proc.
fn rss_bytes(broker: &BrokerProcess) -> Result<u64> {
    let pid = broker.pid().context("broker pid")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS")?;
    Ok(kib * 1024)
}

fn create_topics(broker: &BrokerProcess, name: &str, partitions: i32) -> Result<i16> {
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(name.to_string())))
            .with_num_partitions(partitions)
            .with_replication_factor(-1)]);
    let response = broker.raw()?.request(4, &request)?;
    Ok(response
        .topics
        .first()
        .context("no topic in response")?
        .error_code)
}

#[test]
fn create_topics_past_max_partitions_is_refused_and_the_broker_restarts() {
    let opts = BrokerOptions::new().flag("--max-partitions", 20);
    with_broker(opts, |broker| {
        let huge = topic_name("huge");
        ensure_eq!(
            create_topics(broker, &huge, i32::MAX)?,
            INVALID_PARTITIONS,
            "2^31-1 partitions"
        );
        let fits = topic_name("fits");
        ensure_eq!(create_topics(broker, &fits, 10)?, 0, "10 partitions");
        let over = topic_name("over");
        ensure_eq!(
            create_topics(broker, &over, 15)?,
            INVALID_PARTITIONS,
            "10 + 15 over 20"
        );
        still_serving(broker)?;
        broker.restart()?;
        ensure_eq!(
            create_topics(broker, &huge, 3)?,
            0,
            "the refused name is free"
        );
        Ok(())
    });
}

#[test]
fn idle_connections_are_closed() {
    let opts = BrokerOptions::new().flag("--connections-max-idle-ms", 500);
    with_broker(opts, |broker| {
        let mut idle = broker.raw()?;
        if !idle.closed_within(Duration::from_secs(5)) {
            bail!("an idle connection is still open after 5 s with a 500 ms idle limit");
        }
        still_serving(broker)
    });
}

#[test]
fn connections_past_max_connections_per_ip_are_closed() {
    let opts = BrokerOptions::new().flag("--max-connections-per-ip", 4);
    with_broker(opts, |broker| {
        let held: Vec<_> = (0..4).map(|_| broker.raw()).collect::<Result<_>>()?;
        let mut fifth = broker.raw()?;
        if !fifth.closed_within(Duration::from_secs(5)) {
            bail!("a fifth connection from one address stayed open with a limit of 4");
        }
        drop(held);
        std::thread::sleep(Duration::from_millis(200));
        still_serving(broker)
    });
}

#[test]
fn buffered_requests_stay_within_queued_max_request_bytes() {
    let budget: u64 = 128 << 20;
    let opts = BrokerOptions::new().flag("--queued-max-request-bytes", budget);
    with_broker(opts, |broker| {
        let before = rss_bytes(broker)?;
        // 10 connections each announce a 100 MB frame and send up to 40 MB of it: 400 MB if the
        // broker buffered all of it. Writes that block (the broker stopped reading) give up.
        let chunk = vec![0u8; 1 << 20];
        let mut held = Vec::new();
        for _ in 0..10 {
            let mut raw = broker.raw()?;
            raw.stream()
                .set_write_timeout(Some(Duration::from_millis(300)))?;
            raw.write_all(&100_000_000i32.to_be_bytes())?;
            for _ in 0..40 {
                if std::io::Write::write_all(raw.stream(), &chunk).is_err() {
                    break;
                }
            }
            held.push(raw);
        }
        let during = rss_bytes(broker)?;
        let growth = during.saturating_sub(before);
        if growth > budget + (64 << 20) {
            bail!("RSS grew by {growth} bytes with a request budget of {budget}");
        }
        // Small requests of other clients are still served meanwhile.
        still_serving(broker)?;
        drop(held);
        Ok(())
    });
}

#[test]
fn an_http_client_that_trickles_its_headers_is_closed() {
    use std::io::{Read, Write};
    with_broker(BrokerOptions::new(), |broker| {
        let mut slow = std::net::TcpStream::connect(broker.http_addr())?;
        slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")?;
        slow.set_read_timeout(Some(Duration::from_secs(30)))?;
        let started = std::time::Instant::now();
        let mut buf = [0u8; 512];
        // The header read timeout answers 408 or just closes; either way the read ends.
        loop {
            match slow.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    bail!(
                        "an HTTP connection with unfinished headers is still open after {:?}",
                        started.elapsed()
                    )
                }
                Err(_) => break,
            }
        }
        // Complete requests are still served.
        let (status, _) = causeway_integration_tests::http_get(broker.http_addr(), "/healthz")?;
        ensure_eq!(status, 200, "healthz");
        still_serving(broker)
    });
}
