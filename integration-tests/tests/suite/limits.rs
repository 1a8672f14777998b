//! Listener and creation limits against the real binary: a greedy or idle client is refused or
//! closed, other clients keep their service, memory stays bounded, and a restart works.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use causeway_integration_tests::batch::{fix_crc, simple_batch};
use causeway_integration_tests::raw::RawClient;
use causeway_integration_tests::regions::{
    metric, wait_for_payload, with_mesh, MeshPlan, CONVERGE_TIMEOUT,
};
use causeway_integration_tests::{
    attacked, check_produce_consume, create_topic, ensure_eq, ensure_rss_bounded, now_ms,
    open_change_feed, produce_all, segment_files, still_serving, topic_name, topic_partition_count,
    wait_until, BrokerOptions, BrokerProcess, TestRecord,
};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreateTopicsRequest, InitProducerIdRequest, MetadataRequest,
    ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::producer::FutureProducer;

const INVALID_PARTITIONS: i16 = 37;

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
    attacked(opts, |broker| {
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

/// Partition 3 of a new topic cannot be opened (a file sits where its directory would go, as a
/// descriptor shortage would fail it): the creation is refused and leaves nothing behind, not in
/// the catalog (the broker restarts, the name is free) nor on disk (partitions 0..2 removed).
#[test]
fn a_topic_whose_partitions_cannot_all_be_opened_is_not_created() {
    attacked(BrokerOptions::new(), |broker| {
        let topic = topic_name("unopenable");
        let blocker = broker.partition_dir(&topic, 3);
        std::fs::create_dir_all(blocker.parent().context("topics dir")?)?;
        std::fs::write(&blocker, b"not a directory")?;
        let code = create_topics(broker, &topic, 5)?;
        ensure!(
            code != 0,
            "the creation succeeded over an unopenable partition"
        );
        for index in 0..3 {
            let dir = broker.partition_dir(&topic, index);
            ensure!(!dir.exists(), "{} was left behind", dir.display());
        }
        still_serving(broker)?;
        broker.restart()?;
        ensure_eq!(
            topic_partition_count(&broker.bootstrap(), &topic)?,
            None,
            "the refused topic after a restart"
        );
        std::fs::remove_file(&blocker)?;
        ensure_eq!(create_topics(broker, &topic, 5)?, 0, "the name is free");
        check_produce_consume(broker, &topic)
    });
}

/// A region with a lower `--max-partitions` than its peer does not host what the peer's catalog
/// brings past its limit: it holds the topic back (counted), keeps replicating the topics that
/// fit, and restarts.
#[test]
fn a_peer_catalog_past_max_partitions_is_held_back() {
    let plan = MeshPlan::new(&["roomy", "small"])
        .expect("ports")
        .flag(1, "--max-partitions", 10);
    with_mesh(plan, |mesh| {
        let big = topic_name("big");
        create_topic(mesh.region(0), &big, 20, &[])?;
        let fits = topic_name("fits");
        create_topic(mesh.region(0), &fits, 2, &[])?;
        mesh.wait_all("the small topic everywhere", CONVERGE_TIMEOUT, |r| {
            Ok(topic_partition_count(&r.bootstrap(), &fits)? == Some(2))
        })?;
        let held_back = metric(mesh.region(1), "causeway_topic_partitions_held_back_total")?;
        ensure_eq!(held_back, Some(20.0), "partitions held back");
        ensure_eq!(
            topic_partition_count(&mesh.region(1).bootstrap(), &big)?,
            None,
            "the big topic in the small region"
        );
        produce_all(
            &mesh.region(0).producer(),
            &fits,
            &[TestRecord::value("across").partition(1)],
        )?;
        wait_for_payload(mesh.region(1), &fits, 1, "across", CONVERGE_TIMEOUT)?;
        mesh.region_mut(1).restart()?;
        ensure_eq!(
            topic_partition_count(&mesh.region(1).bootstrap(), &fits)?,
            Some(2),
            "the small topic after a restart"
        );
        still_serving(mesh.region_mut(1))
    });
}

/// Tasks the metadata lane has run so far.
fn metadata_lane_tasks(broker: &BrokerProcess) -> Result<f64> {
    Ok(metric(broker, r#"causeway_blocking_tasks_total{lane="metadata"}"#)?.unwrap_or(0.0))
}

/// Creating topics (CreateTopics, auto-creation by Metadata and by Produce), growing, altering
/// and deleting them write RocksDB and fsync directories: each runs in the metadata lane, never
/// on a runtime worker where a slow disk would stall every connection that worker serves.
#[test]
fn topic_changes_run_in_the_metadata_lane() {
    attacked(BrokerOptions::new(), |broker| {
        let in_lane = |what: &str, change: &mut dyn FnMut() -> Result<()>| -> Result<()> {
            let before = metadata_lane_tasks(broker)?;
            change()?;
            let after = metadata_lane_tasks(broker)?;
            ensure!(after > before, "{what} ran no task in the metadata lane");
            Ok(())
        };
        let created = topic_name("created");
        in_lane("CreateTopics", &mut || {
            ensure_eq!(create_topics(broker, &created, 1)?, 0, "CreateTopics");
            Ok(())
        })?;
        let by_metadata = topic_name("by-metadata");
        in_lane("Metadata with auto-creation", &mut || {
            let request = MetadataRequest::default()
                .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(
                    TopicName(StrBytes::from_string(by_metadata.clone())),
                ))]))
                .with_allow_auto_topic_creation(true);
            let response = broker.raw()?.request(9, &request)?;
            ensure_eq!(
                response.topics.first().map(|t| t.error_code),
                Some(0),
                "Metadata auto-creation"
            );
            Ok(())
        })?;
        let by_produce = topic_name("by-produce");
        in_lane("Produce with auto-creation", &mut || {
            let batch = simple_batch("auto", 2, 1_700_000_000_000);
            let response = broker.raw()?.produce(&by_produce, 0, 1, batch.freeze())?;
            ensure_eq!(response.error_code, 0, "Produce auto-creation");
            Ok(())
        })?;
        in_lane("AlterConfigs", &mut || {
            let (code, message) = broker.raw()?.alter_topic_configs(
                &created,
                &[("retention.ms", "3600000")],
                false,
            )?;
            ensure_eq!(code, 0, "AlterConfigs ({message:?})");
            Ok(())
        })?;
        check_produce_consume(broker, &by_produce)
    });
}

/// A producer id from InitProducerId (non-transactional), as a client looping on it gets them.
fn issued_producer_id(broker: &BrokerProcess) -> Result<i64> {
    let response = broker.raw()?.request(
        4,
        &InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    )?;
    ensure_eq!(response.error_code, 0, "InitProducerId");
    Ok(response.producer_id.0)
}

/// A client that asks for a new producer id for every batch would grow each partition's producer
/// state without bound; past `--max-producers-per-partition` the partition forgets the producer
/// that wrote least recently. Every batch is still taken, a real idempotent producer keeps
/// working, and the broker restarts over a log naming more producers than the bound.
#[test]
fn producer_state_past_max_producers_per_partition_forgets_the_idlest() {
    let opts = BrokerOptions::new().flag("--max-producers-per-partition", 5);
    attacked(opts, |broker| {
        let topic = topic_name("many-producers");
        create_topic(broker, &topic, 1, &[])?;
        for n in 0..50 {
            let mut batch = simple_batch("churn", 1, now_ms());
            batch[43..51].copy_from_slice(&issued_producer_id(broker)?.to_be_bytes());
            batch[51..53].copy_from_slice(&0i16.to_be_bytes());
            batch[53..57].copy_from_slice(&0i32.to_be_bytes());
            fix_crc(&mut batch);
            let response = broker.raw()?.produce(&topic, 0, -1, batch.freeze())?;
            ensure_eq!(response.error_code, 0, "batch of producer {n}");
        }
        ensure_eq!(
            metric(broker, "causeway_storage_producers_evicted_total")?,
            Some(45.0),
            "producers forgotten"
        );
        let idempotent: FutureProducer = broker
            .producer_config()
            .set("enable.idempotence", "true")
            .create()?;
        produce_all(&idempotent, &topic, &[TestRecord::value("idempotent")])?;
        check_produce_consume(broker, &topic)?;
        broker.restart()?;
        still_serving(broker)
    });
}

/// A flood of idle connections takes every client slot of a region and its reserve for peers
/// too; a reserve connection that sends no request is closed within seconds, so a peer region
/// that reconnects during the flood still gets a slot and replication goes on, while a client
/// past the limits is closed.
#[test]
fn a_connection_flood_leaves_peer_regions_their_reserve() {
    const CLIENT_SLOTS: usize = 8;
    let plan =
        MeshPlan::new(&["east", "west"])
            .expect("ports")
            .flag(1, "--max-connections", CLIENT_SLOTS);
    replication_survives_a_flood(plan, CLIENT_SLOTS)
}

/// The same with `--max-connections-per-ip`: the flood comes from the address the peer region
/// connects from (both on 127.0.0.1, as regions behind one NAT address would be), so the
/// per-address limit alone would lock the peer out; past it, the peer reserve takes over.
#[test]
fn a_flood_from_the_peers_own_address_leaves_it_the_reserve() {
    const PER_ADDRESS: usize = 8;
    let plan = MeshPlan::new(&["east", "west"]).expect("ports").flag(
        1,
        "--max-connections-per-ip",
        PER_ADDRESS,
    );
    replication_survives_a_flood(plan, PER_ADDRESS)
}

/// East is killed, west takes a record, `slots` connections plus the whole peer reserve (and
/// more) flood west from 127.0.0.1, then east restarts and must pull the record through the
/// flood; a client past every limit is closed, and west serves clients once the flood is gone.
fn replication_survives_a_flood(plan: MeshPlan, slots: usize) {
    const PEER_RESERVE: usize = 64;
    with_mesh(plan, |mesh| {
        let topic = topic_name("flooded");
        create_topic(mesh.region(1), &topic, 1, &[])?;
        mesh.wait_all("the topic everywhere", CONVERGE_TIMEOUT, |r| {
            Ok(topic_partition_count(&r.bootstrap(), &topic)? == Some(1))
        })?;
        // East goes away, and west takes a record east must pull through west's listener.
        mesh.region_mut(0).kill9();
        produce_all(
            &mesh.region(1).producer(),
            &topic,
            &[TestRecord::value("through-the-flood").partition(0)],
        )?;
        // The producer's connections must be gone first, or closing them frees client slots.
        let quiet = wait_until(CONVERGE_TIMEOUT, || {
            metric(mesh.region(1), "causeway_connections_active").is_ok_and(|n| n == Some(0.0))
        });
        ensure!(
            quiet,
            "west kept client connections open after the producer closed"
        );
        let west = mesh.region(1).kafka_addr();
        let rss_before = mesh.region(1).rss_bytes()?;
        let flood: Vec<TcpStream> = (0..slots + PEER_RESERVE + 16)
            .map(|_| TcpStream::connect(west))
            .collect::<std::io::Result<_>>()?;
        // East's link connects into the flood.
        mesh.region_mut(0).restart()?;
        wait_for_payload(
            mesh.region(0),
            &topic,
            0,
            "through-the-flood",
            CONVERGE_TIMEOUT,
        )?;
        let mut late = mesh.region(1).raw()?;
        ensure!(
            late.closed_within(Duration::from_secs(15)),
            "a client past every limit stayed connected"
        );
        ensure_rss_bounded(mesh.region(1), rss_before, "the flood")?;
        drop(flood);
        still_serving(mesh.region_mut(1))
    });
}

/// Error codes of a Metadata request naming `names` with auto-creation, in order.
fn auto_create(broker: &BrokerProcess, names: &[String]) -> Result<Vec<i16>> {
    let request = MetadataRequest::default()
        .with_topics(Some(
            names
                .iter()
                .map(|name| {
                    MetadataRequestTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(name.clone()))))
                })
                .collect(),
        ))
        .with_allow_auto_topic_creation(true);
    let response = broker.raw()?.request(9, &request)?;
    Ok(response.topics.iter().map(|t| t.error_code).collect())
}

/// One topic may not have more than `--max-partitions-per-topic` partitions, created or grown.
#[test]
fn a_topic_past_max_partitions_per_topic_is_refused() {
    let opts = BrokerOptions::new().flag("--max-partitions-per-topic", 5);
    attacked(opts, |broker| {
        let topic = topic_name("wide");
        ensure_eq!(
            create_topics(broker, &topic, 6)?,
            INVALID_PARTITIONS,
            "6 of 5"
        );
        ensure_eq!(create_topics(broker, &topic, 5)?, 0, "5 of 5");
        let response = broker.raw()?.request(
            3,
            &CreatePartitionsRequest::default()
                .with_timeout_ms(10_000)
                .with_topics(vec![CreatePartitionsTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.clone())))
                    .with_count(6)]),
        )?;
        ensure_eq!(
            response.results.first().map(|r| r.error_code),
            Some(INVALID_PARTITIONS),
            "growing to 6 of 5"
        );
        check_produce_consume(broker, &topic)
    });
}

/// One request creates at most `--max-partitions-per-request` new partitions; the topics past it
/// are answered THROTTLING_QUOTA_EXCEEDED and a later request creates them.
#[test]
fn one_request_creates_at_most_max_partitions_per_request() {
    const THROTTLING_QUOTA_EXCEEDED: i16 = 89;
    let opts = BrokerOptions::new().flag("--max-partitions-per-request", 10);
    attacked(opts, |broker| {
        let names: Vec<String> = (0..30).map(|i| topic_name(&format!("auto{i}"))).collect();
        let codes = auto_create(broker, &names)?;
        let created = codes.iter().filter(|&&c| c == 0).count();
        let throttled = codes
            .iter()
            .filter(|&&c| c == THROTTLING_QUOTA_EXCEEDED)
            .count();
        ensure_eq!((created, throttled), (10, 20), "codes {codes:?}");
        let codes = auto_create(broker, &names)?;
        let created = codes.iter().filter(|&&c| c == 0).count();
        ensure_eq!(created, 20, "topics after a second request");
        let big = topic_name("big");
        ensure_eq!(
            create_topics(broker, &big, 11)?,
            THROTTLING_QUOTA_EXCEEDED,
            "11 partitions in one request"
        );
        still_serving(broker)
    });
}

#[test]
fn idle_connections_are_closed() {
    let opts = BrokerOptions::new().flag("--connections-max-idle-ms", 500);
    attacked(opts, |broker| {
        let mut idle = broker.raw()?;
        // Clients that talk are served meanwhile.
        check_produce_consume(broker, &topic_name("meanwhile"))?;
        if !idle.closed_within(Duration::from_secs(5)) {
            bail!("an idle connection is still open after 5 s with a 500 ms idle limit");
        }
        still_serving(broker)
    });
}

#[test]
fn connections_past_max_connections_per_ip_are_closed() {
    let opts = BrokerOptions::new().flag("--max-connections-per-ip", 4);
    attacked(opts, |broker| {
        let topic = topic_name("other-address");
        create_topic(broker, &topic, 1, &[])?;
        let held: Vec<_> = (0..4).map(|_| broker.raw()).collect::<Result<_>>()?;
        // A client on another address is served while 127.0.0.1 is at its limit.
        let mut other = RawClient::connect_from([127, 0, 0, 2].into(), broker.kafka_addr())?;
        let batch = simple_batch("other", 3, now_ms()).freeze();
        ensure_eq!(
            other.produce(&topic, 0, 1, batch)?.error_code,
            0,
            "produce from 127.0.0.2"
        );
        let fetched = other.fetch(&topic, 0, 0, 1 << 20, 100)?;
        ensure!(
            fetched.records.is_some_and(|r| !r.is_empty()),
            "127.0.0.2 read nothing back"
        );
        // Past the limit a connection may only take the peer reserve, which closes it within
        // 5 s when its first request is not a replication pull.
        let mut fifth = broker.raw()?;
        if !fifth.closed_within(Duration::from_secs(10)) {
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
    attacked(opts, |broker| {
        let before = broker.rss_bytes()?;
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
        let during = broker.rss_bytes()?;
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
    attacked(BrokerOptions::new(), |broker| {
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

/// 600 idle change feeds used to take a blocking thread each, until acks=all produce (whose
/// fsync waits for one) and shutdown stopped. Feeds past `--max-change-feeds` are refused, the
/// open ones hold no thread, and everything else keeps its service.
#[test]
fn idle_change_feeds_are_capped_and_starve_nothing() {
    const FEEDS: usize = 600;
    const CAP: usize = 256;
    attacked(BrokerOptions::new(), |broker| {
        let table = topic_name("feeds");
        create_topic(broker, &table, 1, &[("cleanup.policy", "compact")])?;
        let mut open = Vec::new();
        let mut refused = 0;
        for _ in 0..FEEDS {
            match open_change_feed(broker.http_addr(), &table, "")?
                .context("the feed closed before its headers")?
            {
                (200, stream) => open.push(stream),
                (503, _) => refused += 1,
                (status, _) => bail!("a change feed answered {status}"),
            }
        }
        ensure_eq!(
            open.len(),
            CAP,
            "feeds served (the default --max-change-feeds)"
        );
        ensure_eq!(refused, FEEDS - CAP, "feeds refused with 503");
        // acks=all produce needs an fsync thread; the open feeds must not hold them.
        still_serving(broker)?;
        // A closed feed frees its slot.
        drop(open.pop());
        let reopened = wait_until(Duration::from_secs(15), || {
            open_change_feed(broker.http_addr(), &table, "").is_ok_and(|feed| {
                feed.is_some_and(|(status, stream)| {
                    let served = status == 200;
                    if served {
                        open.push(stream);
                    }
                    served
                })
            })
        });
        if !reopened {
            bail!("no change feed was served again after one of {CAP} closed");
        }
        let started = Instant::now();
        let status = broker.terminate()?;
        if !status.success() {
            bail!("the broker exited with {status} with {CAP} feeds open");
        }
        eprintln!("shut down in {:?} with {CAP} feeds open", started.elapsed());
        broker.restart()?;
        still_serving(broker)
    });
}

/// A change feed whose client stops reading used to keep its connection and buffers forever; the
/// HTTP write timeout closes it, and other clients keep their service.
#[test]
fn a_change_feed_client_that_stops_reading_is_closed() {
    const RECORDS: usize = 4_000;
    attacked(BrokerOptions::new(), |broker| {
        let table = topic_name("stall");
        create_topic(broker, &table, 1, &[("cleanup.policy", "compact")])?;
        let value = "v".repeat(8 * 1024);
        let records: Vec<TestRecord> = (0..RECORDS)
            .map(|i| {
                TestRecord::value(format!("{{\"i\":{i},\"pad\":\"{value}\"}}"))
                    .key(format!("key-{i:05}"))
                    .partition(0)
            })
            .collect();
        produce_all(&broker.producer(), &table, &records)?;
        let (status, mut stalled) = open_change_feed(broker.http_addr(), &table, "?from=0")?
            .context("the feed closed before its headers")?;
        ensure_eq!(status, 200, "the feed's status");
        // Read nothing: the broker fills the socket and the feed's buffer, then gives up.
        let closed = wait_until(Duration::from_secs(60), || {
            metric_value(
                broker,
                "causeway_http_connections_closed_total{reason=\"write_stalled\"}",
            )
            .is_ok_and(|v| v >= 1.0)
        });
        if !closed {
            bail!("a change feed nobody reads was not closed within 60 s");
        }
        still_serving(broker)?;
        // What was already in the socket buffers can be read; then the connection ends short of
        // the whole table.
        let mut received = Vec::new();
        stalled.set_read_timeout(Some(Duration::from_secs(10)))?;
        let ended = loop {
            let mut buf = [0u8; 64 * 1024];
            match stalled.read(&mut buf) {
                Ok(0) => break true,
                Ok(n) => received.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break false
                }
                // Reset by the broker: closed too.
                Err(_) => break true,
            }
        };
        if !ended {
            bail!("the stalled feed's connection is still open");
        }
        let lines = received
            .split(|b| *b == b'\n')
            .filter(|l| l.starts_with(b"{"))
            .count();
        if lines >= RECORDS {
            bail!("the stalled feed delivered all {lines} lines; it was never stalled");
        }
        let open = wait_until(Duration::from_secs(10), || {
            metric_value(broker, "causeway_table_feeds_open").is_ok_and(|v| v == 0.0)
        });
        if !open {
            bail!("causeway_table_feeds_open did not return to 0");
        }
        Ok(())
    });
}

/// One sample of `/metrics` by its exact series name (labels as the broker prints them); an
/// absent series is an error, not 0.
fn metric_value(broker: &BrokerProcess, series: &str) -> Result<f64> {
    causeway_integration_tests::regions::metric(broker, series)?
        .with_context(|| format!("{series} is not in /metrics"))
}

/// `segment.bytes=14` and `segment.ms=1` used to make a segment (and its open files) per batch;
/// they now take effect as the floors (`--log-segment-bytes-min`, `--log-segment-ms-min`).
#[test]
fn tiny_segment_settings_do_not_make_a_segment_per_batch() {
    const BATCHES: usize = 30;
    attacked(BrokerOptions::new(), |broker| {
        let topic = topic_name("tiny-segments");
        create_topic(
            broker,
            &topic,
            1,
            &[("segment.bytes", "14"), ("segment.ms", "1")],
        )?;
        let producer = broker.producer();
        for i in 0..BATCHES {
            // One at a time, so every record is its own batch.
            produce_all(
                &producer,
                &topic,
                &[TestRecord::value(format!("record-{i}")).partition(0)],
            )?;
            std::thread::sleep(Duration::from_millis(5));
        }
        let segments = segment_files(&broker.partition_dir(&topic, 0))?;
        ensure_eq!(
            segments.len(),
            1,
            "segments after {BATCHES} one-record batches"
        );
        broker.restart()?;
        still_serving(broker)
    });
}
