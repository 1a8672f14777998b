//! A peer that sends bad replication data: a batch whose CRC is wrong, a batch whose causal
//! metadata is malformed, and a batch stamped far beyond the clock-skew bound. The region pulling
//! from it refuses each one (counted and logged), applies none of them, and keeps serving.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use causeway_integration_tests::batch::{
    encode_batch, fix_crc, simple_batch, zstd_bomb, RawRecord,
};
use causeway_integration_tests::regions::{metric_sum, partition_counts};
use causeway_integration_tests::{
    create_topic, ensure_rss_bounded, free_port, http_get, now_ms, produce_all, topic_name,
    wait_until, BrokerOptions, BrokerProcess, TestRecord,
};
use causeway_replication::delivery::Batch;
use causeway_replication::region::region_id;
use causeway_replication::wire::{
    pull_frame, seed_frame, PartitionBatches, PullError, PullRequest, PullResponse, SeedRequest,
    SeedResponse, PULL_HEADER_BYTES, PULL_RESPONSE_BYTES_MAX,
};
use causeway_replication::{HybridClock, VectorClock};
use causeway_storage::CausalMeta;

const SECRET: &str = "rogue-test";
const TOPIC: &str = "guarded";

/// One batch from the rogue region with the given metadata and bytes.
fn rogue_batch(seq: u64, hlc: u64, payload: Vec<u8>) -> Batch<Bytes> {
    Batch {
        meta: CausalMeta {
            origin_region: region_id("rogue"),
            origin_seq: seq,
            hlc,
            deps: if seq > 1 {
                vec![(region_id("rogue"), seq - 1)]
            } else {
                Vec::new()
            },
        },
        payload: Bytes::from(payload),
    }
}

/// The three bad answers, one per pull that names the guarded partition.
fn bad_batches() -> Vec<(&'static str, Batch<Bytes>)> {
    let mut corrupt = simple_batch("corrupt", 2, now_ms()).to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff; // the CRC no longer matches
    let mut good = simple_batch("skewed", 2, now_ms()).to_vec();
    fix_crc(&mut good);
    let stamp_now = HybridClock::default().tick(now_ms().unsigned_abs());
    let stamp_tomorrow = HybridClock::default().tick(now_ms().unsigned_abs() + 86_400_000);
    vec![
        ("bad CRC", rogue_batch(1, stamp_now, corrupt)),
        ("origin sequence 0", rogue_batch(0, stamp_now, good.clone())),
        ("stamp a day ahead", rogue_batch(1, stamp_tomorrow, good)),
    ]
}

/// The region under test, "home", with one peer: "rogue" at `rogue_port`.
fn home_with_rogue_peer(rogue_port: u16) -> Result<BrokerProcess> {
    BrokerProcess::start(
        BrokerOptions::new()
            .flag("--region", "home")
            .flag("--peer", format!("rogue@127.0.0.1:{rogue_port}"))
            .flag("--replication-secret", SECRET),
    )
}

/// A pull of partition 0 of the guarded topic (any incarnation) as `region` with `secret`.
fn pull_of_guarded(region: &str, secret: &[u8], max_bytes: u32) -> PullRequest {
    PullRequest {
        region: region_id(region),
        secret: secret.to_vec(),
        max_wait_ms: 0,
        max_bytes,
        catalog_digest: 0,
        origins: Vec::new(),
        partitions: vec![causeway_replication::wire::PartitionPull {
            topic: TOPIC.into(),
            topic_id: [0; 16],
            partition: 0,
            have: VectorClock::default(),
            durable: VectorClock::default(),
        }],
    }
}

fn read_frame(stream: &mut TcpStream) -> Result<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let mut frame = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut frame)?;
    Ok(frame)
}

/// Serves pulls like a region would, answering partition 0 of `topic` (for the incarnation the
/// region names, so the batches are judged and not ignored) with one of `bad` per pull until the
/// list is used up, then with nothing.
fn serve_rogue(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    topic: &str,
    bad: Vec<(&'static str, Batch<Bytes>)>,
) -> Result<()> {
    listener.set_nonblocking(false)?;
    let (mut stream, _) = listener.accept()?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut bad = bad.into_iter();
    while !stop.load(Ordering::Acquire) {
        let frame = read_frame(&mut stream)?;
        let correlation: [u8; 4] = frame.get(4..8).context("short header")?.try_into()?;
        let request = PullRequest::decode(&frame[8..]).context("decoding the region's pull")?;
        if request.secret != SECRET.as_bytes() || request.region != region_id("home") {
            bail!(
                "the region pulled with secret {:?} as {}",
                request.secret,
                request.region
            );
        }
        let guarded = request
            .partitions
            .iter()
            .find(|p| p.topic == topic && p.partition == 0)
            .map(|p| p.topic_id);
        let next_bad = if guarded.is_some() { bad.next() } else { None };
        let batches = match next_bad {
            Some((what, batch)) => {
                eprintln!("rogue: sending a batch with {what}");
                vec![batch]
            }
            None => {
                std::thread::sleep(Duration::from_millis(50));
                Vec::new()
            }
        };
        let response = PullResponse {
            error: PullError::None,
            region: region_id("rogue"),
            catalog: None,
            partitions: match guarded {
                Some(topic_id) => vec![PartitionBatches {
                    topic: topic.into(),
                    topic_id,
                    partition: 0,
                    have: VectorClock::default(),
                    durable: VectorClock::default(),
                    relayed: Vec::new(),
                    batches,
                }],
                None => Vec::new(),
            },
        };
        let frame = response
            .encode()
            .into_response_frame(i32::from_be_bytes(correlation));
        stream.write_all(&frame.concat())?;
    }
    Ok(())
}

#[test]
fn bad_batches_from_a_peer_are_refused_and_nothing_is_applied() -> Result<()> {
    let rogue_port = free_port()?;
    let listener = TcpListener::bind(("127.0.0.1", rogue_port))?;
    let stop = Arc::new(AtomicBool::new(false));
    let rogue = {
        let stop = stop.clone();
        std::thread::spawn(move || serve_rogue(listener, stop, TOPIC, bad_batches()))
    };
    let home = home_with_rogue_peer(rogue_port)?;
    produce_all(
        &home.producer(),
        TOPIC,
        &[TestRecord::value("mine").partition(0)],
    )?;
    let refused = |reason: &str| {
        metric_sum(
            &home,
            "causeway_replication_refused_total",
            &format!("reason=\"{reason}\""),
        )
        .unwrap_or(0.0)
    };
    let all_refused = wait_until(Duration::from_secs(30), || {
        refused("bad_batch") >= 1.0 && refused("batch_metadata") >= 2.0
    });
    stop.store(true, Ordering::Release);
    if !all_refused {
        bail!(
            "refusals: bad_batch {}, batch_metadata {}\n{}",
            refused("bad_batch"),
            refused("batch_metadata"),
            home.stderr_tail(40)
        );
    }
    let log = home.stderr();
    for expected in ["not one well-formed record batch", "Malformed", "ClockSkew"] {
        if !log.contains(expected) {
            bail!(
                "no log line mentions {expected:?}:\n{}",
                home.stderr_tail(40)
            );
        }
    }
    if partition_counts(&home, TOPIC, 1)? != vec![1] {
        bail!(
            "a refused batch was applied: {:?}",
            partition_counts(&home, TOPIC, 1)?
        );
    }
    produce_all(
        &home.producer(),
        TOPIC,
        &[TestRecord::value("still serving").partition(0)],
    )?;
    if partition_counts(&home, TOPIC, 1)? != vec![2] {
        bail!("the region stopped accepting writes");
    }
    drop(home);
    let _ = rogue.join();
    Ok(())
}

/// A pull with the right secret from a region that is not a configured peer is answered with
/// "unknown region", then the connection is closed; nothing of the region's data is served.
#[test]
fn a_pull_from_an_unknown_region_is_refused() -> Result<()> {
    let home = home_with_rogue_peer(free_port()?)?;
    produce_all(
        &home.producer(),
        TOPIC,
        &[TestRecord::value("private").partition(0)],
    )?;
    let pull = pull_of_guarded("stranger", SECRET.as_bytes(), 1 << 20);
    let (response, mut stream) = send_pull(&home, &pull)?;
    if response.error != PullError::UnknownRegion || !response.partitions.is_empty() {
        bail!("an unknown region got {response:?}");
    }
    let mut rest = [0u8; 1];
    match stream.read(&mut rest) {
        Ok(0) => Ok(()),
        other => bail!("the connection stayed open after the refusal: {other:?}"),
    }
}

/// Sends `pull` on a new connection to `broker`; returns the decoded answer and the connection.
fn send_pull(broker: &BrokerProcess, pull: &PullRequest) -> Result<(PullResponse, TcpStream)> {
    let (answer, stream) = exchange(broker, &pull_frame(7, &pull.encode()))?;
    let response = PullResponse::decode(&answer).context("decoding the pull response")?;
    Ok((response, stream))
}

/// Sends `frame` on a new connection and returns the answer's body (after the correlation id)
/// with the connection.
fn exchange(broker: &BrokerProcess, frame: &[u8]) -> Result<(Bytes, TcpStream)> {
    let mut stream = TcpStream::connect(broker.kafka_addr())?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(frame)?;
    let answer = read_frame(&mut stream)?;
    ensure!(answer.len() >= 4, "an answer without a correlation id");
    Ok((Bytes::from(answer).slice(4..), stream))
}

/// Sends a seed request for partition 0 of the guarded topic on a new connection.
fn send_seed(
    broker: &BrokerProcess,
    secret: &[u8],
    topic_id: [u8; 16],
) -> Result<(SeedResponse, TcpStream)> {
    let request = SeedRequest {
        region: region_id("rogue"),
        secret: secret.to_vec(),
        topic: TOPIC.into(),
        topic_id,
        partition: 0,
        from_offset: 0,
        max_bytes: u32::MAX,
    };
    let (answer, stream) = exchange(broker, &seed_frame(9, &request.encode()))?;
    let response = SeedResponse::decode(&answer).context("decoding the seed answer")?;
    Ok((response, stream))
}

/// A seed request (what a joining region copies a partition with) is authenticated like a
/// pull, and serves only the incarnation the broker hosts.
#[test]
fn seed_requests_are_authenticated_and_serve_only_the_hosted_incarnation() -> Result<()> {
    let home = home_with_rogue_peer(free_port()?)?;
    produce_all(
        &home.producer(),
        TOPIC,
        &[TestRecord::value("private").partition(0)],
    )?;
    let (refused, mut stream) = send_seed(&home, b"not-the-secret", [0; 16])?;
    if refused.error != PullError::AuthenticationFailed || !refused.batches.is_empty() {
        bail!("a wrong secret got {refused:?}");
    }
    let mut rest = [0u8; 1];
    if !matches!(stream.read(&mut rest), Ok(0)) {
        bail!("the connection stayed open after the refusal");
    }
    let (other, _) = send_seed(&home, SECRET.as_bytes(), [0; 16])?;
    if other.error != PullError::UnknownPartition || !other.batches.is_empty() {
        bail!("a seed of another incarnation got {other:?}");
    }
    let incarnation = send_pull(&home, &pull_of_guarded("rogue", SECRET.as_bytes(), 0))?
        .0
        .partitions
        .first()
        .map(|p| p.topic_id)
        .context("the partition in the pull's answer")?;
    let (copy, _) = send_seed(&home, SECRET.as_bytes(), incarnation)?;
    if copy.error != PullError::None
        || copy.batches.len() != 1
        || copy.end_offset != 1
        || copy.next_offset != 1
    {
        bail!("the seed of the hosted incarnation got {copy:?}");
    }
    Ok(())
}

/// A peer that asks for `u32::MAX` bytes in one pull gets at most the response bound of batches
/// (plus the one batch that crosses it), as Kafka bounds a follower's fetch whatever it asks:
/// one greedy peer cannot make the broker gather its whole log into one response.
#[test]
fn a_pull_asking_for_u32_max_bytes_is_capped() -> Result<()> {
    const BATCH_BYTES: usize = 900_000;
    let home = home_with_rogue_peer(free_port()?)?;
    let mut producer = home.raw()?;
    for n in 0..24 {
        let record = RawRecord::value(vec![b'x'; BATCH_BYTES]);
        let answer = producer.produce(TOPIC, 0, 1, encode_batch(&[record], now_ms()).freeze())?;
        if answer.error_code != 0 {
            bail!("batch {n} refused with {}", answer.error_code);
        }
    }
    let mut pull = pull_of_guarded("rogue", SECRET.as_bytes(), 0);
    // The first answer names the incarnation hosted; batches are served only for it.
    let incarnation = send_pull(&home, &pull)?
        .0
        .partitions
        .first()
        .map(|p| p.topic_id)
        .context("the partition in the first answer")?;
    pull.partitions[0].topic_id = incarnation;
    pull.max_bytes = u32::MAX;
    let greedy = send_pull(&home, &pull)?.0;
    if greedy.error != PullError::None {
        bail!("the pull was refused: {:?}", greedy.error);
    }
    let served: usize = greedy
        .partitions
        .iter()
        .flat_map(|p| &p.batches)
        .map(|b| b.payload.len())
        .sum();
    let bound = PULL_RESPONSE_BYTES_MAX as usize + BATCH_BYTES + 1_000;
    if served > bound || served < BATCH_BYTES {
        bail!("a pull for u32::MAX bytes was served {served} bytes of 24 x {BATCH_BYTES} (bound {bound})");
    }
    Ok(())
}

/// A pull with a wrong secret is judged by the front of its frame: the broker refuses it and
/// closes after the first chunk, without waiting for (or buffering) the 50 MB the frame claims.
#[test]
fn a_pull_with_a_wrong_secret_is_refused_before_its_body_is_read() -> Result<()> {
    const CLAIMED_BODY_BYTES: usize = 50 << 20;
    let home = home_with_rogue_peer(free_port()?)?;
    let pull = pull_of_guarded("rogue", b"not-the-secret", 1 << 20);
    let mut frame = pull_frame(7, &pull.encode());
    let claimed = u32::try_from(PULL_HEADER_BYTES + CLAIMED_BODY_BYTES)?;
    frame[..4].copy_from_slice(&claimed.to_be_bytes());
    frame.resize(frame.len() + 200_000, 0);
    let mut stream = TcpStream::connect(home.kafka_addr())?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    stream.write_all(&frame)?;
    // The refusal arrives although the frame is far from complete; a reset that overtakes it
    // (the broker closes with our bytes unread) shows the same thing.
    match read_frame(&mut stream) {
        Ok(answer) => {
            let response = PullResponse::decode(&Bytes::from(answer).slice(4..))
                .context("decoding the refusal")?;
            if response.error != PullError::AuthenticationFailed {
                bail!("a wrong secret got {response:?}");
            }
        }
        Err(error) => {
            let closed = error.downcast_ref::<std::io::Error>().is_some_and(|e| {
                matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof
                )
            });
            if !closed {
                bail!("no refusal and no close while the frame was incomplete: {error:#}");
            }
        }
    }
    let refused = metric_sum(
        &home,
        "causeway_replication_refused_total",
        r#"reason="authentication failed""#,
    )?;
    if refused != 1.0 {
        bail!("{refused} pulls counted as failing authentication");
    }
    Ok(())
}

/// A peer (a broken or hostile region with the secret) sends a zstd batch that expands to 80 MiB
/// into a table. The region takes it into its log as it came (every region keeps the same bytes),
/// but its table decodes batches with a bound: the batch is refused as a record (counted, logged),
/// rows written after it still apply, and a restart does not decode it again (no crash loop).
#[test]
fn a_decompression_bomb_from_a_peer_is_refused_by_the_table_not_retried() -> Result<()> {
    let rogue_port = free_port()?;
    let listener = TcpListener::bind(("127.0.0.1", rogue_port))?;
    let topic = topic_name("bombed");
    let mut home = home_with_rogue_peer(rogue_port)?;
    create_topic(&home, &topic, 1, &[("cleanup.policy", "compact")])?;
    let keyed = |key: &str| TestRecord::value(r#"{"n":1}"#).key(key).partition(0);
    produce_all(&home.producer(), &topic, &[keyed("before")])?;
    let stamp = HybridClock::default().tick(now_ms().unsigned_abs());
    // Stamped a second ahead, so a ListOffsets by that time must look inside the bomb.
    let bomb_time = now_ms() + 1_000;
    let bomb = rogue_batch(1, stamp, zstd_bomb(80, bomb_time)?.to_vec());
    let rss_before = home.rss_bytes()?;
    let stop = Arc::new(AtomicBool::new(false));
    let rogue = {
        let (stop, topic) = (stop.clone(), topic.clone());
        std::thread::spawn(move || serve_rogue(listener, stop, &topic, vec![("a bomb", bomb)]))
    };
    let refused = |home: &BrokerProcess| {
        metric_sum(
            home,
            "causeway_table_refused_records_total",
            r#"reason="oversized_batch""#,
        )
        .unwrap_or(0.0)
    };
    let taken = wait_until(Duration::from_secs(30), || {
        partition_counts(&home, &topic, 1).is_ok_and(|c| c == vec![81]) && refused(&home) == 1.0
    });
    stop.store(true, Ordering::Release);
    if !taken {
        bail!(
            "the bomb was not taken in and refused by the table once: {:?} records, {} refused\n{}",
            partition_counts(&home, &topic, 1),
            refused(&home),
            home.stderr_tail(40)
        );
    }
    // ListOffsets by a time inside the bomb decodes it within the bound: an error for that
    // partition, never a crash or gigabytes.
    let consumer: BaseConsumer = home.consumer_config().create()?;
    let mut at = TopicPartitionList::new();
    at.add_partition_offset(&topic, 0, Offset::Offset(bomb_time))?;
    let answered = consumer.offsets_for_times(at, Duration::from_secs(10));
    if let Ok(found) = &answered {
        let offset = found.find_partition(&topic, 0).map(|p| p.offset());
        if offset == Some(Offset::Offset(1)) {
            bail!("ListOffsets found a record inside the bomb it cannot have decoded");
        }
    }
    let looked = wait_until(Duration::from_secs(10), || {
        home.stderr().contains("stored batch does not decode")
    });
    if !looked {
        bail!(
            "ListOffsets by time never looked inside the bomb ({answered:?})\n{}",
            home.stderr_tail(20)
        );
    }
    ensure_rss_bounded(&home, rss_before, "taking in and refusing an 80 MiB bomb")?;
    produce_all(&home.producer(), &topic, &[keyed("after")])?;
    let row = |home: &BrokerProcess, key: &str| {
        http_get(home.http_addr(), &format!("/v1/tables/{topic}/rows/{key}"))
            .map(|(status, _)| status)
            .unwrap_or(0)
    };
    if !wait_until(Duration::from_secs(30), || row(&home, "after") == 200) {
        bail!("rows written after the bomb never applied");
    }
    home.restart()?;
    if row(&home, "after") != 200 || row(&home, "before") != 200 {
        bail!("rows lost over the restart");
    }
    produce_all(&home.producer(), &topic, &[keyed("after-restart")])?;
    if !wait_until(Duration::from_secs(30), || {
        row(&home, "after-restart") == 200
    }) {
        bail!("the table stopped applying after the restart");
    }
    if refused(&home) != 0.0 {
        bail!("the bomb was decoded again after the restart");
    }
    drop(home);
    let _ = rogue.join();
    Ok(())
}
