//! Hardening items of issue 12 driven against the real binary, one attack per test: table scans
//! resuming after keys that are not UTF-8, a Fetch asking for 2 GiB, a Metadata request
//! auto-creating a hundred thousand topics, replication pulls sent to a broker without peers,
//! and a flood of HTTP connections past the listener's cap. Each shows the broker answers
//! correctly (a page, an error code or a closed connection), that a normal client keeps its
//! service while the attack is in place, that the broker's memory stays bounded where the attack
//! aims at it, and that a restart works afterwards.
//!
//! The tests run one at a time (they share two cores with the brokers they start), and nothing
//! waits on a duration: every wait is for a condition, with a generous deadline.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use causeway_integration_tests::batch::{encode_batch, RawRecord};
use causeway_integration_tests::raw::{closed_by_peer, PeerOutcome, RawClient};
use causeway_integration_tests::regions::{metric, metric_sum};
use causeway_integration_tests::{
    create_topic, ensure_eq, http_get, http_get_within, now_ms, open_change_feed, produce_all,
    rss_of, serves, topic_name, wait_until, with_broker, BrokerOptions, BrokerProcess, TestRecord,
};
use causeway_replication::region::region_id;
use causeway_replication::wire::{
    pull_frame, PartitionPull, PullRequest, REPLICATION_API_KEY, REPLICATION_API_VERSION,
};
use causeway_replication::VectorClock;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, MetadataRequest, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use serde_json::Value;

const INVALID_PARTITIONS: i16 = 37;

/// `FETCH_RESPONSE_MAX_BYTES` in `broker/src/handlers/fetch.rs` (55 MiB, Kafka's
/// `fetch.max.bytes`; `docs/security.md`, "Connections").
const FETCH_RESPONSE_MAX_BYTES: usize = 57_671_680;

/// `HTTP_CONNECTIONS_MAX` in `broker/src/http.rs` (`docs/security.md`, "The HTTP listener"); it
/// has no option.
const HTTP_CONNECTIONS_MAX: usize = 1_024;

/// How long one HTTP request or raw Kafka read may take before the test calls it stuck: far
/// longer than any answer takes, so a slow machine never fails a test, while a handler that
/// spins forever still does.
const ANSWER_DEADLINE: Duration = Duration::from_secs(60);

/// The tests of this file one at a time: each starts a broker and loads it, and two cores are
/// all there is.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Samples the broker's resident memory every 20 ms on a thread of its own until
/// [`PeakRss::finish`], which returns the highest sample.
struct PeakRss {
    stop: Arc<AtomicBool>,
    sampler: JoinHandle<Result<u64>>,
}

impl PeakRss {
    fn start(broker: &BrokerProcess) -> Result<PeakRss> {
        let pid = broker.pid().context("broker pid")?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let sampler = std::thread::spawn(move || {
            let mut peak = rss_of(pid)?;
            while !stopped.load(Ordering::Acquire) {
                peak = peak.max(rss_of(pid)?);
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(peak)
        });
        Ok(PeakRss { stop, sampler })
    }

    fn finish(self) -> Result<u64> {
        self.stop.store(true, Ordering::Release);
        join(self.sampler, "the RSS sampler")
    }
}

/// Joins a helper thread, turning its panic into an error.
fn join<T>(handle: JoinHandle<Result<T>>, what: &str) -> Result<T> {
    handle
        .join()
        .map_err(|_| anyhow!("{what}: the thread panicked"))?
        .with_context(|| what.to_string())
}

/// Standard base64 with padding (the encoding `after_base64` takes).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Percent-encodes every byte that is not unreserved in a URL query.
fn percent(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Keys of the table scan test: live keys that are text, tombstoned keys that are not UTF-8 and
/// sort after them, and live keys that are not UTF-8 and sort after those.
struct ScanKeys {
    live_text: Vec<Vec<u8>>,
    dead: Vec<Vec<u8>>,
    live_binary: Vec<Vec<u8>>,
}

impl ScanKeys {
    fn new() -> Self {
        ScanKeys {
            live_text: (0..5).map(|i| format!("text-{i}").into_bytes()).collect(),
            dead: (0..40)
                .map(|i| [&b"\xff\xfe dead-"[..], format!("{i:03}").as_bytes()].concat())
                .collect(),
            live_binary: (0..5)
                .map(|i| [&b"\xff\xff live-"[..], format!("{i}").as_bytes()].concat())
                .collect(),
        }
    }

    /// The live keys in key order, as the scan renders them (lossy UTF-8).
    fn expected(&self) -> Vec<String> {
        self.live_text
            .iter()
            .chain(&self.live_binary)
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect()
    }
}

/// One scan page: (status, parsed body).
fn scan_page(addr: SocketAddr, table: &str, query: &str) -> Result<(u16, Value)> {
    let (status, body) = http_get_within(
        addr,
        &format!("/v1/tables/{table}/rows?{query}"),
        ANSWER_DEADLINE,
    )?;
    let value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    Ok((status, value))
}

/// Pages through the whole table `limit` rows at a time, resuming with `next_base64`, and
/// returns the keys seen. A scan that repeats a page forever fails after `max_pages`.
fn scan_all(addr: SocketAddr, table: &str, limit: usize, max_pages: usize) -> Result<Vec<String>> {
    let mut keys = Vec::new();
    let mut query = format!("limit={limit}");
    for _ in 0..max_pages {
        let (status, page) = scan_page(addr, table, &query)?;
        if status != 200 {
            bail!("scan {query:?} answered {status}: {page}");
        }
        let rows = page["rows"].as_array().context("rows")?;
        for row in rows {
            keys.push(row["key"].as_str().context("row key")?.to_string());
        }
        match page["next_base64"].as_str() {
            None => return Ok(keys),
            Some(next) => {
                query = format!("limit={limit}&after_base64={}", percent(next.as_bytes()));
            }
        }
    }
    bail!("scanning with limit {limit} did not end within {max_pages} pages; keys so far: {keys:?}")
}

/// The hostile scans: resume keys that are not UTF-8, given as text (percent-encoded bytes
/// that are not UTF-8, which the query decoder turns into U+FFFD, the lossy form the broker
/// used to page from and so repeat a page of tombstones forever), as base64 of arbitrary bytes,
/// and as something that is not base64. Each is answered with the right page (or 400 for what
/// is not base64): the first live key after the resume point, past the 40 tombstones between.
fn hostile_scans(addr: SocketAddr, table: &str, keys: &ScanKeys) -> Result<()> {
    let dead = &keys.dead[3];
    let lossy = String::from_utf8_lossy(dead).into_owned();
    let first_text = Some(String::from_utf8_lossy(&keys.live_text[0]).into_owned());
    let first_binary = Some(String::from_utf8_lossy(&keys.live_binary[0]).into_owned());
    // (query, expected status, expected first key of the page)
    let cases: [(String, u16, Option<String>); 11] = [
        ("limit=1".into(), 200, first_text),
        // From the last text key, one row at a time: the scan pages through every tombstone.
        ("limit=1&after=text-4".into(), 200, first_binary.clone()),
        (
            format!("limit=1&after={}", percent(dead)),
            200,
            first_binary.clone(),
        ),
        (
            format!("limit=1&after={}", percent(lossy.as_bytes())),
            200,
            first_binary.clone(),
        ),
        (
            format!("limit=3&after={}", percent("\u{FFFD}".as_bytes())),
            200,
            first_binary.clone(),
        ),
        (
            format!("limit=1&after_base64={}", percent(base64(dead).as_bytes())),
            200,
            first_binary.clone(),
        ),
        (
            format!(
                "limit=1&after_base64={}",
                percent(base64(&[0xff, 0x00, 0x80, 0xc3, 0x28, 0xfe]).as_bytes())
            ),
            200,
            first_binary,
        ),
        (
            format!(
                "limit=1&after_base64={}",
                percent(base64(&[0xff; 64]).as_bytes())
            ),
            200,
            None,
        ),
        (
            "limit=1&after_base64=%21%21not-base64%21%21".into(),
            400,
            None,
        ),
        (
            format!("limit=2&prefix={}", percent(b"\xff\xfe")),
            200,
            None,
        ),
        (
            format!("limit=1&prefix=text-&after={}", percent(b"\xfftext")),
            200,
            None,
        ),
    ];
    for (query, status, first) in &cases {
        let (answered, page) = scan_page(addr, table, query)?;
        if answered != *status {
            bail!("scan {query:?} answered {answered}, expected {status}: {page}");
        }
        if answered == 200 {
            let rows = page["rows"].as_array().context("rows")?;
            let got = rows
                .first()
                .and_then(|r| r["key"].as_str())
                .map(str::to_string);
            if got != *first {
                bail!("scan {query:?} started at {got:?}, expected {first:?}: {page}");
            }
        }
    }
    Ok(())
}

/// A scan of a table whose resume key is not UTF-8 used to repeat the same page forever on a
/// runtime worker (a page of tombstones whose last key is not UTF-8 resumed from its lossy
/// form, which sorts before it), and a few such scans froze the whole broker, Kafka included.
/// Now every scan, with any resume key, ends: paging with `next_base64` visits each live row
/// once, and eight clients scanning with hostile resume keys at once leave produce and consume
/// working.
#[test]
fn table_scans_resuming_after_keys_that_are_not_utf8_end_and_leave_kafka_serving() {
    const SCANNERS: usize = 8;
    let _serial = one_at_a_time();
    with_broker(BrokerOptions::new(), |broker| {
        let health = topic_name("health");
        create_topic(broker, &health, 1, &[])?;
        let table = topic_name("binary-keys");
        create_topic(broker, &table, 1, &[("cleanup.policy", "compact")])?;
        let keys = ScanKeys::new();
        let mut records = Vec::new();
        for key in &keys.dead {
            records.push(
                TestRecord::value(r#"{"doomed":true}"#)
                    .key(key.clone())
                    .partition(0),
            );
        }
        for key in &keys.dead {
            records.push(TestRecord {
                key: Some(key.clone()),
                partition: Some(0),
                ..Default::default()
            });
        }
        for (i, key) in keys.live_text.iter().chain(&keys.live_binary).enumerate() {
            records.push(
                TestRecord::value(format!("{{\"i\":{i}}}"))
                    .key(key.clone())
                    .partition(0),
            );
        }
        produce_all(&broker.producer(), &table, &records)?;
        let expected = keys.expected();
        let addr = broker.http_addr();
        // The materializer runs behind the log: wait for the last live row (written last, after
        // every tombstone). One page of 1,000 holds the whole table, so this scan never pages.
        let materialized = wait_until(ANSWER_DEADLINE, || {
            scan_page(addr, &table, "limit=1000").is_ok_and(|(status, page)| {
                status == 200
                    && page["rows"]
                        .as_array()
                        .is_some_and(|r| r.len() == expected.len())
            })
        });
        if !materialized {
            bail!("the table never showed its {} live rows", expected.len());
        }
        hostile_scans(addr, &table, &keys)?;
        // Paging visits every live row once, in key order, whatever the page size.
        for limit in [1, 2, 3, 5, 7] {
            let seen = scan_all(addr, &table, limit, expected.len() + 2)?;
            ensure_eq!(seen, expected, "keys paged {limit} at a time");
        }
        // Eight clients scan at once, with hostile resume keys and by paging, while a Kafka
        // client produces and consumes.
        let scanners: Vec<JoinHandle<Result<()>>> = (0..SCANNERS)
            .map(|_| {
                let table = table.clone();
                let expected = expected.clone();
                std::thread::spawn(move || {
                    let keys = ScanKeys::new();
                    for round in 0..5 {
                        hostile_scans(addr, &table, &keys)?;
                        let seen = scan_all(addr, &table, 1 + round % 3, expected.len() + 2)?;
                        ensure_eq!(seen, expected, "keys paged in round {round}");
                    }
                    Ok(())
                })
            })
            .collect();
        serves(broker, &health).context("Kafka while the scans run")?;
        for (i, scanner) in scanners.into_iter().enumerate() {
            join(scanner, &format!("scanner {i}"))?;
        }
        let (status, _) = http_get(addr, "/healthz")?;
        ensure_eq!(status, 200, "/healthz after the scans");
        serves(broker, &health)?;
        broker.restart()?;
        let addr = broker.http_addr();
        let seen = scan_all(addr, &table, 2, expected.len() + 2)?;
        ensure_eq!(seen, expected, "keys paged after the restart");
        serves(broker, &health)
    });
}

/// Sends a Fetch v12 of `partitions` of `topic` (in that order, each from offset 0) asking for
/// `i32::MAX` bytes in total and per partition; returns the response frame's length and the
/// record bytes per partition.
fn fetch_everything(
    raw: &mut RawClient,
    topic: &str,
    partitions: &[i32],
) -> Result<(usize, Vec<(i32, usize)>)> {
    const VERSION: i16 = 12;
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(i32::MAX)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(
                partitions
                    .iter()
                    .map(|&p| {
                        FetchPartition::default()
                            .with_partition(p)
                            .with_current_leader_epoch(-1)
                            .with_fetch_offset(0)
                            .with_last_fetched_epoch(-1)
                            .with_log_start_offset(-1)
                            .with_partition_max_bytes(i32::MAX)
                    })
                    .collect(),
            )]);
    let (correlation_id, frame) = raw.encode_request(VERSION, &request)?;
    raw.write_all(&frame)?;
    let mut response = raw.read_frame().context("the Fetch response")?;
    let frame_bytes = response.len();
    let header = ResponseHeader::decode(
        &mut response,
        ApiKey::Fetch.response_header_version(VERSION),
    )?;
    ensure_eq!(header.correlation_id, correlation_id, "correlation id");
    let response = FetchResponse::decode(&mut response, VERSION)?;
    ensure_eq!(response.error_code, 0, "Fetch top-level error");
    let mut sizes = Vec::new();
    for t in &response.responses {
        for p in &t.partitions {
            ensure_eq!(
                p.error_code,
                0,
                "Fetch error of partition {}",
                p.partition_index
            );
            sizes.push((p.partition_index, p.records.as_ref().map_or(0, Bytes::len)));
        }
    }
    Ok((frame_bytes, sizes))
}

/// A Fetch asking for `max_bytes = i32::MAX` used to make the broker build a response of
/// whatever the partitions held. Over 120 MB in one partition, the response carries at most
/// `FETCH_RESPONSE_MAX_BYTES` of records (and its frame only a little more), also spread over
/// two partitions; three clients fetching that way at once keep the broker's memory bounded and
/// leave produce and consume working.
#[test]
fn a_fetch_asking_for_i32_max_bytes_is_capped_at_the_response_limit() {
    const BATCH_VALUE_BYTES: usize = 1_000_000;
    const BIG_BATCHES: usize = 120;
    const SMALL_BATCHES: usize = 8;
    const FETCHERS: usize = 3;
    let _serial = one_at_a_time();
    with_broker(BrokerOptions::new(), |broker| {
        let health = topic_name("health");
        create_topic(broker, &health, 1, &[])?;
        let topic = topic_name("big");
        create_topic(broker, &topic, 2, &[])?;
        let mut raw = broker.raw()?;
        let value = vec![b'x'; BATCH_VALUE_BYTES];
        for (partition, batches) in [(0, BIG_BATCHES), (1, SMALL_BATCHES)] {
            for _ in 0..batches {
                let batch = encode_batch(&[RawRecord::value(value.clone())], now_ms());
                let produced = raw.produce(&topic, partition, 1, batch.freeze())?;
                ensure_eq!(produced.error_code, 0, "producing a 1 MB batch");
            }
        }
        let big = BIG_BATCHES * BATCH_VALUE_BYTES;
        let small = SMALL_BATCHES * BATCH_VALUE_BYTES;
        raw.stream().set_read_timeout(Some(ANSWER_DEADLINE))?;
        // One partition holding twice the cap.
        let (frame, sizes) = fetch_everything(&mut raw, &topic, &[0])?;
        eprintln!("fetch of partition 0 ({big} B): frame {frame} B, records {sizes:?}");
        let records: usize = sizes.iter().map(|(_, n)| n).sum();
        if records > FETCH_RESPONSE_MAX_BYTES {
            bail!(
                "a Fetch carried {records} record bytes, over the cap {FETCH_RESPONSE_MAX_BYTES}"
            );
        }
        // Capped, not empty: within a batch of the cap.
        if records + 2 * BATCH_VALUE_BYTES < FETCH_RESPONSE_MAX_BYTES {
            bail!("a Fetch of a {big} B partition carried only {records} B");
        }
        if frame > FETCH_RESPONSE_MAX_BYTES + 64 * 1024 {
            bail!("the Fetch response frame is {frame} B, over the cap {FETCH_RESPONSE_MAX_BYTES}");
        }
        // Two partitions: the small one whole first, then the big one up to what is left.
        let (frame, sizes) = fetch_everything(&mut raw, &topic, &[1, 0])?;
        eprintln!("fetch of partitions 1, 0: frame {frame} B, records {sizes:?}");
        let records: usize = sizes.iter().map(|(_, n)| n).sum();
        if records > FETCH_RESPONSE_MAX_BYTES || frame > FETCH_RESPONSE_MAX_BYTES + 64 * 1024 {
            bail!("a Fetch of two partitions carried {records} B in a frame of {frame} B");
        }
        let first = sizes.first().map_or(0, |&(_, n)| n);
        if first < small {
            bail!("the small partition ({small} B) came back with only {first} B");
        }
        // Three clients fetching everything at once, twice each, while rdkafka produces and
        // consumes; the broker's memory is sampled meanwhile.
        let before = broker.rss_bytes()?;
        let sampler = PeakRss::start(broker)?;
        let addr = broker.kafka_addr();
        let fetchers: Vec<JoinHandle<Result<()>>> = (0..FETCHERS)
            .map(|_| {
                let topic = topic.clone();
                std::thread::spawn(move || {
                    let mut raw = RawClient::connect(addr)?;
                    raw.stream().set_read_timeout(Some(ANSWER_DEADLINE))?;
                    for _ in 0..2 {
                        let (frame, _) = fetch_everything(&mut raw, &topic, &[0, 1])?;
                        if frame > FETCH_RESPONSE_MAX_BYTES + 64 * 1024 {
                            bail!("a concurrent Fetch response frame is {frame} B");
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        serves(broker, &health).context("Kafka while the fetches run")?;
        for (i, fetcher) in fetchers.into_iter().enumerate() {
            join(fetcher, &format!("fetcher {i}"))?;
        }
        let peak = sampler.finish()?;
        let growth = peak.saturating_sub(before);
        eprintln!("RSS {before} B before the fetches, peak {peak} B");
        // Each fetch holds its records and the encoded response: 2 copies of the cap, with
        // room to spare; uncapped, each would hold twice the 128 MB asked for.
        let bound = (FETCHERS * 3 * FETCH_RESPONSE_MAX_BYTES) as u64 + (128 << 20);
        if growth > bound {
            bail!("RSS grew by {growth} B during {FETCHERS} capped fetches (bound {bound} B)");
        }
        // rdkafka reads the big partition from the start (several capped responses).
        let consumed = causeway_integration_tests::read_partition(
            &broker.bootstrap(),
            &topic,
            0,
            rdkafka::Offset::Beginning,
            BIG_BATCHES,
        )?;
        ensure_eq!(consumed.len(), BIG_BATCHES, "records read back");
        broker.restart()?;
        let mut raw = broker.raw()?;
        raw.stream().set_read_timeout(Some(ANSWER_DEADLINE))?;
        let (frame, _) = fetch_everything(&mut raw, &topic, &[0])?;
        if frame > FETCH_RESPONSE_MAX_BYTES + 64 * 1024 {
            bail!("after the restart a Fetch response frame is {frame} B");
        }
        serves(broker, &health)
    });
}

/// Metadata v12 naming `names`, allowing auto-creation; returns each topic's error code.
fn metadata_creating(raw: &mut RawClient, names: &[String]) -> Result<Vec<(String, i16)>> {
    let request = MetadataRequest::default()
        .with_allow_auto_topic_creation(true)
        .with_topics(Some(
            names
                .iter()
                .map(|n| {
                    MetadataRequestTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(n.clone()))))
                })
                .collect(),
        ));
    let response = raw.request(12, &request)?;
    Ok(response
        .topics
        .into_iter()
        .map(|t| {
            (
                t.name.map(|n| n.0.as_str().to_string()).unwrap_or_default(),
                t.error_code,
            )
        })
        .collect())
}

/// Partitions over all topics, by Metadata of every topic.
fn hosted_partitions(broker: &BrokerProcess) -> Result<(usize, usize)> {
    let all = MetadataRequest::default().with_topics(None);
    let response = broker.raw()?.request(12, &all)?;
    let partitions = response.topics.iter().map(|t| t.partitions.len()).sum();
    Ok((response.topics.len(), partitions))
}

/// Metadata with auto-creation used to create every name it was given (300,000 in one request),
/// saving each topic before opening its partitions, until the broker ran out of file
/// descriptors and could not restart. With `--max-partitions 50`, two clients each naming
/// 100,000 new topics at once get 49 topics created between them (one partition is already
/// taken) and INVALID_PARTITIONS for every other name; nothing past the limit reaches the disk,
/// memory stays bounded, produce and consume keep working meanwhile, the broker restarts with
/// the same 50 partitions, and the limit still holds after it.
#[test]
fn metadata_auto_creating_a_hundred_thousand_topics_stops_at_max_partitions() {
    const MAX_PARTITIONS: usize = 50;
    const NAMES: usize = 100_000;
    const CLIENTS: usize = 2;
    let _serial = one_at_a_time();
    let opts = BrokerOptions::new().flag("--max-partitions", MAX_PARTITIONS);
    with_broker(opts, |broker| {
        let health = topic_name("health");
        create_topic(broker, &health, 1, &[])?;
        let before = broker.rss_bytes()?;
        let sampler = PeakRss::start(broker)?;
        let addr = broker.kafka_addr();
        let flood_prefix = topic_name("flood");
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let names: Vec<String> = (0..NAMES)
                    .map(|i| format!("{flood_prefix}-{c}-{i:06}"))
                    .collect();
                std::thread::spawn(move || {
                    let mut raw = RawClient::connect(addr)?;
                    raw.stream().set_read_timeout(Some(ANSWER_DEADLINE))?;
                    let answered = metadata_creating(&mut raw, &names)?;
                    ensure_eq!(
                        answered.len(),
                        names.len(),
                        "topics in the Metadata response"
                    );
                    Ok(answered)
                })
            })
            .collect();
        serves(broker, &health).context("Kafka while the Metadata flood runs")?;
        let mut created = 0;
        for (i, client) in clients.into_iter().enumerate() {
            for (name, code) in join(client, &format!("Metadata client {i}"))? {
                match code {
                    0 => created += 1,
                    INVALID_PARTITIONS => {}
                    other => bail!("topic {name} answered error {other}"),
                }
            }
        }
        let peak = sampler.finish()?;
        ensure_eq!(created, MAX_PARTITIONS - 1, "topics auto-created");
        let growth = peak.saturating_sub(before);
        eprintln!("RSS {before} B before the flood, peak {peak} B");
        if growth > 512 << 20 {
            bail!("RSS grew by {growth} B during the Metadata flood");
        }
        ensure_eq!(
            hosted_partitions(broker)?,
            (MAX_PARTITIONS, MAX_PARTITIONS),
            "(topics, partitions) hosted"
        );
        let on_disk = std::fs::read_dir(broker.data_dir().join("topics"))?.count();
        if on_disk > MAX_PARTITIONS {
            bail!("{on_disk} partition directories on disk with --max-partitions {MAX_PARTITIONS}");
        }
        serves(broker, &health)?;
        broker.restart()?;
        ensure_eq!(
            hosted_partitions(broker)?,
            (MAX_PARTITIONS, MAX_PARTITIONS),
            "(topics, partitions) hosted after the restart"
        );
        let mut raw = broker.raw()?;
        let again = metadata_creating(&mut raw, &[topic_name("one-more")])?;
        ensure_eq!(
            again.first().map(|(_, code)| *code),
            Some(INVALID_PARTITIONS),
            "auto-creating one more topic after the restart"
        );
        serves(broker, &health)
    });
}

/// Writes `frame` on a new connection and reads until the broker closes it (or the deadline
/// passes); returns whether it closed and what it sent before.
fn send_and_wait_for_close(addr: SocketAddr, frame: &[u8]) -> Result<(bool, Vec<u8>)> {
    let mut raw = RawClient::connect(addr)?;
    raw.stream().set_write_timeout(Some(ANSWER_DEADLINE))?;
    // The broker may close while a large frame is still being written.
    let written = raw.stream().write_all(frame);
    let mut got = Vec::new();
    loop {
        match raw.wait_for_peer(ANSWER_DEADLINE) {
            PeerOutcome::Closed => return Ok((true, got)),
            PeerOutcome::Data(bytes) => got.extend_from_slice(&bytes),
            PeerOutcome::StillOpen => {
                if let Err(e) = written {
                    bail!("writing the frame failed ({e}) and the connection stayed open");
                }
                return Ok((false, got));
            }
        }
    }
}

/// Replication pulls (private API key 32000) used to be decoded in full before the secret was
/// checked, also on a broker with no peers. On such a broker every pull, well-formed or not,
/// small or 8 MB, is refused by closing its connection without a byte of answer, counted as
/// `not_configured` and never as malformed (its body was not decoded); a flood of them leaves
/// memory bounded and Kafka clients served, and the broker restarts.
#[test]
fn replication_pulls_to_a_broker_without_peers_are_closed_before_decoding() {
    const FLOODERS: usize = 8;
    const PULLS_EACH: usize = 25;
    let _serial = one_at_a_time();
    with_broker(BrokerOptions::new(), |broker| {
        let health = topic_name("health");
        create_topic(broker, &health, 1, &[])?;
        let well_formed = PullRequest {
            region: region_id("intruder"),
            secret: b"guessed".to_vec(),
            max_wait_ms: 30_000,
            max_bytes: u32::MAX,
            catalog_digest: 1,
            origins: Vec::new(),
            partitions: (0..2_000)
                .map(|i| PartitionPull {
                    topic: format!("{health}-{i}"),
                    topic_id: [7; 16],
                    partition: i,
                    have: VectorClock::default(),
                    durable: VectorClock::default(),
                })
                .collect(),
        }
        .encode();
        // A secret claiming 200 MB, then nothing; counts claiming a million partitions.
        let mut huge_claims = vec![0x01];
        huge_claims.extend_from_slice(&[0x80, 0x80, 0x80, 0x64]);
        let frames: Vec<(&str, Vec<u8>)> = vec![
            (
                "a well-formed pull naming 2,000 partitions",
                pull_frame(1, &well_formed),
            ),
            ("an empty body", pull_frame(2, &[])),
            (
                "a body claiming a 200 MB secret",
                pull_frame(3, &huge_claims),
            ),
            ("8 MB of 0xff", pull_frame(4, &vec![0xff; 8 << 20])),
            ("a header alone", {
                let mut f = (8u32).to_be_bytes().to_vec();
                f.extend_from_slice(&REPLICATION_API_KEY.to_be_bytes());
                f.extend_from_slice(&REPLICATION_API_VERSION.to_be_bytes());
                f.extend_from_slice(&5i32.to_be_bytes());
                f
            }),
            ("an unknown version", {
                let mut f = pull_frame(6, &well_formed);
                f[6..8].copy_from_slice(&99i16.to_be_bytes());
                f
            }),
        ];
        let addr = broker.kafka_addr();
        for (what, frame) in &frames {
            let (closed, got) = send_and_wait_for_close(addr, frame)?;
            if !closed {
                bail!("{what}: the connection is still open");
            }
            if !got.is_empty() {
                bail!(
                    "{what}: the broker answered {} bytes before closing",
                    got.len()
                );
            }
        }
        let refused = metric_sum(
            broker,
            "causeway_replication_refused_total",
            "reason=\"not_configured\"",
        )?;
        ensure_eq!(
            refused,
            frames.len() as f64,
            "pulls refused as not configured"
        );
        let malformed = metric_sum(
            broker,
            "causeway_replication_refused_total",
            "reason=\"malformed_request\"",
        )?;
        ensure_eq!(malformed, 0.0, "pulls decoded and found malformed");
        // A flood of pulls from several clients while rdkafka produces and consumes.
        let before = broker.rss_bytes()?;
        let sampler = PeakRss::start(broker)?;
        let frames = Arc::new(frames);
        let flooders: Vec<JoinHandle<Result<()>>> = (0..FLOODERS)
            .map(|f| {
                let frames = frames.clone();
                std::thread::spawn(move || {
                    for i in 0..PULLS_EACH {
                        let (what, frame) = &frames[(f + i) % frames.len()];
                        let (closed, got) = send_and_wait_for_close(addr, frame)?;
                        if !closed || !got.is_empty() {
                            bail!("{what}: closed {closed}, {} bytes answered", got.len());
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        serves(broker, &health).context("Kafka during the pull flood")?;
        for (i, flooder) in flooders.into_iter().enumerate() {
            join(flooder, &format!("flooder {i}"))?;
        }
        let peak = sampler.finish()?;
        let growth = peak.saturating_sub(before);
        eprintln!("RSS {before} B before the flood, peak {peak} B");
        if growth > 256 << 20 {
            bail!("RSS grew by {growth} B during the replication pull flood");
        }
        let refused = metric_sum(
            broker,
            "causeway_replication_refused_total",
            "reason=\"not_configured\"",
        )?;
        ensure_eq!(
            refused,
            (frames.len() + FLOODERS * PULLS_EACH) as f64,
            "pulls refused as not configured after the flood"
        );
        serves(broker, &health)?;
        broker.restart()?;
        let (closed, got) = send_and_wait_for_close(broker.kafka_addr(), &frames[0].1)?;
        if !closed || !got.is_empty() {
            bail!("after the restart a pull left the connection open ({closed}) or was answered ({} bytes)", got.len());
        }
        serves(broker, &health)
    });
}

/// Whether the broker closes `stream` (EOF or reset) before sending anything.
fn closed_without_answer(stream: &mut TcpStream) -> Result<bool> {
    stream.set_read_timeout(Some(ANSWER_DEADLINE))?;
    let mut buf = [0u8; 256];
    match stream.read(&mut buf) {
        Ok(0) => Ok(true),
        Ok(_) => Ok(false),
        Err(e) if closed_by_peer(&e) => Ok(true),
        Err(e) => Err(e).context("waiting for the broker to close a connection"),
    }
}

/// The HTTP listener used to accept any number of connections. It serves at most
/// `HTTP_CONNECTIONS_MAX` (1,024, no option) at once and closes the rest on accept: with every
/// slot held by a change feed (the only HTTP connection that lasts; an idle one is closed by
/// the 10 s header timeout, which would make the flood depend on timing), a further change
/// feed, 100 idle connections and /healthz are all closed without an answer and counted, the
/// Kafka listener keeps serving, and once the flood closes /healthz answers again and the broker
/// restarts.
#[test]
fn http_connections_past_the_cap_are_closed_while_kafka_keeps_serving() {
    const EXCESS: usize = 100;
    let _serial = one_at_a_time();
    let wanted = (HTTP_CONNECTIONS_MAX + EXCESS + 512) as u64;
    let (soft, hard) =
        rlimit::getrlimit(rlimit::Resource::NOFILE).expect("read the open-file limit");
    if soft < wanted {
        if hard < wanted {
            eprintln!(
                "skipped: the hard open-file limit ({hard}) is below the {wanted} files this \
                 test holds"
            );
            return;
        }
        rlimit::setrlimit(rlimit::Resource::NOFILE, wanted, hard)
            .expect("raise the open-file limit");
    }
    // Room for a feed on every HTTP slot: the feed cap must not be what refuses them.
    let opts = BrokerOptions::new().flag("--max-change-feeds", HTTP_CONNECTIONS_MAX + EXCESS);
    with_broker(opts, |broker| {
        let health = topic_name("health");
        create_topic(broker, &health, 1, &[])?;
        let table = topic_name("feeds");
        create_topic(broker, &table, 1, &[("cleanup.policy", "compact")])?;
        let addr = broker.http_addr();
        let before = broker.rss_bytes()?;
        let mut feeds = Vec::new();
        for i in 0..HTTP_CONNECTIONS_MAX {
            match open_change_feed(addr, &table, "")? {
                Some((200, stream)) => feeds.push(stream),
                Some((status, _)) => bail!("change feed {i} answered {status}"),
                None => bail!("change feed {i} was closed with {i} connections open"),
            }
        }
        // Every slot is held: one more feed is closed unanswered.
        if let Some((status, _)) = open_change_feed(addr, &table, "")? {
            bail!("a change feed past {HTTP_CONNECTIONS_MAX} connections answered {status}");
        }
        let mut idle = Vec::new();
        for _ in 0..EXCESS {
            idle.push(TcpStream::connect_timeout(&addr, Duration::from_secs(10))?);
        }
        for (i, stream) in idle.iter_mut().enumerate() {
            if !closed_without_answer(stream)? {
                bail!("idle connection {i} past the cap got an answer");
            }
        }
        if http_get(addr, "/healthz").is_ok() {
            bail!("/healthz was answered with every HTTP slot taken");
        }
        // The Kafka listener is another listener: it keeps serving.
        serves(broker, &health).context("Kafka during the HTTP flood")?;
        let during = broker.rss_bytes()?;
        let growth = during.saturating_sub(before);
        eprintln!("RSS {before} B before the flood, {during} B with {HTTP_CONNECTIONS_MAX} feeds");
        if growth > 512 << 20 {
            bail!("RSS grew by {growth} B with {HTTP_CONNECTIONS_MAX} HTTP connections");
        }
        drop(idle);
        drop(feeds);
        // Closed feeds give their slots back (a feed notices its client left at its next
        // keep-alive at the latest).
        if !wait_until(ANSWER_DEADLINE, || {
            http_get(addr, "/healthz").is_ok_and(|(status, _)| status == 200)
        }) {
            bail!("/healthz did not answer again after the flood closed");
        }
        let refused = metric_sum(
            broker,
            "causeway_connections_refused_total",
            "reason=\"http_connection_limit\"",
        )?;
        // The extra feed, the idle connections and the /healthz attempt; maybe more /healthz
        // attempts while the slots came back.
        if refused < (EXCESS + 2) as f64 {
            bail!(
                "only {refused} HTTP connections counted as refused, expected at least {}",
                EXCESS + 2
            );
        }
        if !wait_until(ANSWER_DEADLINE, || {
            metric(broker, "causeway_table_feeds_open").is_ok_and(|v| v == Some(0.0))
        }) {
            bail!("causeway_table_feeds_open did not return to 0 after the feeds closed");
        }
        serves(broker, &health)?;
        broker.restart()?;
        let (status, _) = http_get(broker.http_addr(), "/healthz")?;
        ensure_eq!(status, 200, "/healthz after the restart");
        serves(broker, &health)
    });
}
