//! Causeway's end-to-end tests. Every test starts its own broker process ([`BrokerProcess`], from
//! the shared `causeway-testkit`) on free loopback ports with its own temporary data directory,
//! then talks to it with real clients: rdkafka (librdkafka), Debian's `kcat`, or the raw protocol
//! client in [`raw`] for inputs no well-behaved client would send. This crate adds what only the
//! tests need: producing and reading records, kcat, topics, proxies, load.

pub mod batch;
pub mod certs;
pub mod load;
pub mod proxy;
pub mod regions;
pub mod security;
pub mod transactions;

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

pub use causeway_testkit::{
    admin_config, broker_binary, consumer_config, free_port, http_get, http_get_within, now_ms,
    producer_config, raw, rss_of, wait_until, BrokerOptions, BrokerProcess, CLIENT_TIMEOUT,
    SHUTDOWN_TIMEOUT, STARTUP_TIMEOUT,
};

/// Runs a future to completion on a fresh current-thread tokio runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build tokio runtime")
        .block_on(f)
}

/// A record to produce with [`produce_all`].
#[derive(Debug, Clone, Default)]
pub struct TestRecord {
    /// Target partition (None = partitioner).
    pub partition: Option<i32>,
    /// Key.
    pub key: Option<Vec<u8>>,
    /// Value.
    pub value: Option<Vec<u8>>,
    /// Headers.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// Explicit CreateTime timestamp.
    pub timestamp: Option<i64>,
}

impl TestRecord {
    /// A record with only a value.
    pub fn value(v: impl Into<Vec<u8>>) -> Self {
        TestRecord {
            value: Some(v.into()),
            ..Default::default()
        }
    }

    /// Sets the key.
    pub fn key(mut self, k: impl Into<Vec<u8>>) -> Self {
        self.key = Some(k.into());
        self
    }

    /// Sets the partition.
    pub fn partition(mut self, p: i32) -> Self {
        self.partition = Some(p);
        self
    }

    /// Sets the timestamp.
    pub fn timestamp(mut self, ts: i64) -> Self {
        self.timestamp = Some(ts);
        self
    }

    /// Adds a header.
    pub fn header(mut self, k: &str, v: Option<&[u8]>) -> Self {
        self.headers.push((k.to_string(), v.map(<[u8]>::to_vec)));
        self
    }
}

/// Sends every record (pipelined), then waits for all delivery reports. Returns (partition,
/// offset) per record, in order, or the first error.
pub fn produce_all(
    producer: &FutureProducer,
    topic: &str,
    records: &[TestRecord],
) -> Result<Vec<(i32, i64)>> {
    use rdkafka::message::{Header, OwnedHeaders};
    block_on(async {
        let mut futures = Vec::with_capacity(records.len());
        for r in records {
            let mut fr: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic);
            if let Some(k) = &r.key {
                fr = fr.key(k.as_slice());
            }
            if let Some(v) = &r.value {
                fr = fr.payload(v.as_slice());
            }
            if let Some(p) = r.partition {
                fr = fr.partition(p);
            }
            if let Some(ts) = r.timestamp {
                fr = fr.timestamp(ts);
            }
            if !r.headers.is_empty() {
                let mut h = OwnedHeaders::new();
                for (k, v) in &r.headers {
                    h = h.insert(Header {
                        key: k,
                        value: v.as_deref(),
                    });
                }
                fr = fr.headers(h);
            }
            let fut = loop {
                match producer.send_result(fr) {
                    Ok(f) => break f,
                    Err((
                        rdkafka::error::KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::QueueFull,
                        ),
                        back,
                    )) => {
                        fr = back;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err((e, _)) => bail!("enqueue failed: {e}"),
                }
            };
            futures.push(fut);
        }
        let mut out = Vec::with_capacity(futures.len());
        for f in futures {
            match f.await.map_err(|_| anyhow!("delivery future cancelled"))? {
                Ok(d) => out.push((d.partition, d.offset)),
                Err((e, _)) => bail!("delivery failed: {e}"),
            }
        }
        Ok(out)
    })
}

/// Produces plain values to one partition and returns their offsets.
pub fn produce_values(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    values: &[&str],
) -> Result<Vec<i64>> {
    let recs: Vec<TestRecord> = values
        .iter()
        .map(|v| TestRecord::value(v.as_bytes()).partition(partition))
        .collect();
    Ok(produce_all(producer, topic, &recs)?
        .into_iter()
        .map(|(_, o)| o)
        .collect())
}

/// Assigns `consumer` to the given (topic, partition, offset) triples.
pub fn assign(consumer: &BaseConsumer, parts: &[(&str, i32, Offset)]) -> Result<()> {
    let mut tpl = TopicPartitionList::new();
    for (t, p, o) in parts {
        tpl.add_partition_offset(t, *p, *o)?;
    }
    consumer.assign(&tpl)?;
    Ok(())
}

/// Polls until `n` messages arrived or `timeout` passed; returns what arrived. Consumer errors
/// other than partition EOF fail the call.
pub fn consume_n(
    consumer: &BaseConsumer,
    n: usize,
    timeout: Duration,
) -> Result<Vec<OwnedMessage>> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => out.push(m.detach()),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => bail!("consumer error after {} messages: {e}", out.len()),
        }
    }
    Ok(out)
}

/// Assigns one partition at `offset` with a fresh consumer and reads exactly `n` messages
/// (fails if fewer arrive within [`CLIENT_TIMEOUT`]).
pub fn read_partition(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    offset: Offset,
    n: usize,
) -> Result<Vec<OwnedMessage>> {
    let consumer: BaseConsumer = consumer_config(bootstrap).create()?;
    assign(&consumer, &[(topic, partition, offset)])?;
    let msgs = consume_n(&consumer, n, CLIENT_TIMEOUT)?;
    if msgs.len() != n {
        bail!(
            "expected {n} messages from {topic}-{partition}, got {}",
            msgs.len()
        );
    }
    Ok(msgs)
}

/// Reads a partition from `offset` until the end (partition EOF with `enable.partition.eof`).
pub fn read_to_end(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    offset: Offset,
) -> Result<Vec<OwnedMessage>> {
    let consumer: BaseConsumer = consumer_config(bootstrap)
        .set("enable.partition.eof", "true")
        .create()?;
    assign(&consumer, &[(topic, partition, offset)])?;
    let deadline = Instant::now() + CLIENT_TIMEOUT * 2;
    let mut out = Vec::new();
    loop {
        if Instant::now() > deadline {
            bail!(
                "no partition EOF within timeout after {} messages",
                out.len()
            );
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => out.push(m.detach()),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => return Ok(out),
            Some(Err(e)) => bail!("consumer error after {} messages: {e}", out.len()),
        }
    }
}

/// The payload of a message as UTF-8 (lossy), empty for a null payload.
pub fn payload_str(m: &OwnedMessage) -> String {
    String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned()
}

/// Creates a topic with the admin client and waits for the result; fails on error.
pub fn create_topic(
    broker: &BrokerProcess,
    name: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> Result<()> {
    use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
    let admin = broker.admin();
    let mut nt = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        nt = nt.set(k, v);
    }
    let opts = AdminOptions::new().operation_timeout(Some(CLIENT_TIMEOUT));
    let res = block_on(admin.create_topics([&nt], &opts))?;
    for r in res {
        if let Err((t, e)) = r {
            bail!("create topic {t}: {e:?}");
        }
    }
    Ok(())
}

/// Fetches metadata for one topic: its partition count, or None if the broker reports an error.
pub fn topic_partition_count(bootstrap: &str, topic: &str) -> Result<Option<usize>> {
    let consumer: BaseConsumer = consumer_config(bootstrap)
        .set("allow.auto.create.topics", "false")
        .create()?;
    let md = consumer.fetch_metadata(Some(topic), CLIENT_TIMEOUT)?;
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .filter(|t| t.error().is_none())
        .map(|t| t.partitions().len()))
}

/// Lists the `.log` segment files of a partition directory, sorted by name (= base offset).
pub fn segment_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("read_dir {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    Ok(v)
}

/// Appends bytes to a file.
pub fn append_to_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = OpenOptions::new().append(true).open(path)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// Reads a whole file.
pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    let mut f = File::open(path)?;
    let mut v = Vec::new();
    f.seek(SeekFrom::Start(0))?;
    f.read_to_end(&mut v)?;
    Ok(v)
}

/// Output of a `kcat` run.
#[derive(Debug)]
pub struct KcatOutput {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// A command running kcat (`$KCAT`, else `/usr/bin/kcat` if present, else `kcat` from PATH)
/// with the system's librdkafka, as a user runs it: `cargo test` puts the directory of the
/// librdkafka that `rdkafka-sys` builds on `LD_LIBRARY_PATH`, and kcat would load that one.
pub fn kcat_command() -> Command {
    let mut command = Command::new(kcat_binary());
    command.env_remove("LD_LIBRARY_PATH");
    command
}

/// Path of the kcat binary: `$KCAT`, else `/usr/bin/kcat` if present, else `kcat` from PATH.
fn kcat_binary() -> PathBuf {
    if let Some(k) = std::env::var_os("KCAT") {
        return PathBuf::from(k);
    }
    let deb = PathBuf::from("/usr/bin/kcat");
    if deb.is_file() {
        deb
    } else {
        PathBuf::from("kcat")
    }
}

/// Runs `kcat args...` with `stdin` as input; kills it and fails after `timeout`.
pub fn kcat(args: &[&str], stdin: &[u8], timeout: Duration) -> Result<KcatOutput> {
    let mut child = kcat_command()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawn kcat (apt-get install kcat)")?;
    let mut sin = child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?;
    let input = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = sin.write_all(&input);
        // Dropping closes stdin: kcat -P then flushes and exits.
    });
    let mut sout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let mut serr = child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?;
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = sout.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = serr.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = err_reader.join().unwrap_or_default();
            bail!(
                "kcat {args:?} did not finish within {timeout:?}; stderr:\n{}",
                String::from_utf8_lossy(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = writer.join();
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    Ok(KcatOutput {
        status,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

/// A unique-enough topic name for a test.
pub fn topic_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{prefix}-{nanos:08x}")
}

/// Starts a broker with `options`, runs `body` against it, and panics with the error if the body
/// fails (the broker's stderr tail is printed while the broker is dropped during the panic).
pub fn with_broker(options: BrokerOptions, body: impl FnOnce(&mut BrokerProcess) -> Result<()>) {
    let mut broker = match BrokerProcess::start(options) {
        Ok(b) => b,
        Err(e) => panic!("broker failed to start: {e:#}"),
    };
    if let Err(e) = body(&mut broker) {
        panic!("{e:#}");
    }
}

/// Fails with `msg` unless `cond` holds (an `assert!` that returns an error instead).
#[macro_export]
macro_rules! ensure_eq {
    ($left:expr, $right:expr $(,)?) => {
        match (&$left, &$right) {
            (l, r) => {
                if l != r {
                    anyhow::bail!(
                        "{} != {}: {:?} != {:?} (at {}:{})",
                        stringify!($left),
                        stringify!($right),
                        l,
                        r,
                        file!(),
                        line!()
                    );
                }
            }
        }
    };
    ($left:expr, $right:expr, $($arg:tt)+) => {
        match (&$left, &$right) {
            (l, r) => {
                if l != r {
                    anyhow::bail!(
                        "{}: {:?} != {:?} (at {}:{})",
                        format!($($arg)+),
                        l,
                        r,
                        file!(),
                        line!()
                    );
                }
            }
        }
    };
}

/// The broker is running, a new connection gets ApiVersions answered, and rdkafka produces to
/// and consumes from `topic` (which must exist: during an attack that fills the partition limit,
/// no new topic can be created).
pub fn serves(broker: &mut BrokerProcess, topic: &str) -> Result<()> {
    if !broker.is_running() {
        bail!(
            "the broker process exited; stderr tail:\n{}",
            broker.stderr_tail(40)
        );
    }
    raw::check_api_versions(broker.kafka_addr()).context("ApiVersions on a new connection")?;
    check_produce_consume(broker, topic)
}

/// The broker still serves (see [`serves`]) a topic created now.
pub fn still_serving(broker: &mut BrokerProcess) -> Result<()> {
    let topic = topic_name("health");
    create_topic(broker, &topic, 1, &[])?;
    serves(broker, &topic)
}

/// How much a broker's resident memory may grow over one attack: bounded decoding keeps a
/// request's work within 64 MiB, and the allocator may keep what it freed.
pub const RSS_GROWTH_MAX: u64 = 256 << 20;

/// Runs `attack` against a fresh broker started with `options`, then shows what every hardening
/// test must: the broker's resident memory grew by at most [`RSS_GROWTH_MAX`], it still serves a
/// new client, and it starts again over whatever the attack left on disk.
pub fn attacked(options: BrokerOptions, attack: impl FnOnce(&mut BrokerProcess) -> Result<()>) {
    with_broker(options, |broker| {
        let before = broker.rss_bytes()?;
        attack(broker)?;
        ensure_rss_bounded(broker, before, "the attack")?;
        broker.restart()?;
        still_serving(broker)
    });
}

/// Fails if `broker`'s resident memory grew by more than [`RSS_GROWTH_MAX`] since it read
/// `before` bytes (`what` names what happened meanwhile).
pub fn ensure_rss_bounded(broker: &BrokerProcess, before: u64, what: &str) -> Result<()> {
    let grown = broker.rss_bytes()?.saturating_sub(before);
    if grown > RSS_GROWTH_MAX {
        bail!("the broker's RSS grew by {} MiB over {what}", grown >> 20);
    }
    Ok(())
}

/// Produces one record with rdkafka to `topic` (created with the admin client if `create`),
/// reads it back, and checks it: a quick "the broker still works" check.
pub fn check_produce_consume(broker: &BrokerProcess, topic: &str) -> Result<()> {
    let producer = broker.producer();
    let value = format!("health-{}", topic_name("v"));
    let delivered = produce_all(
        &producer,
        topic,
        &[TestRecord::value(value.as_bytes()).partition(0)],
    )
    .context("health-check produce")?;
    let (_, offset) = delivered[0];
    let msgs = read_partition(&broker.bootstrap(), topic, 0, Offset::Offset(offset), 1)
        .context("health-check consume")?;
    if payload_str(&msgs[0]) != value {
        bail!(
            "health check read {:?}, expected {value:?}",
            payload_str(&msgs[0])
        );
    }
    Ok(())
}

/// Opens a change feed (`query` is appended to its path, e.g. `?from=0`) over a raw socket and reads its status line and headers; the socket is
/// left open and unread. `None` if the broker closed the connection before answering.
pub fn open_change_feed(
    addr: SocketAddr,
    table: &str,
    query: &str,
) -> Result<Option<(u16, TcpStream)>> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let request =
        format!("GET /v1/tables/{table}/changes{query} HTTP/1.1\r\nHost: causeway\r\n\r\n");
    // A connection closed on accept may already be reset when the request is written.
    match stream.write_all(request.as_bytes()) {
        Ok(()) => {}
        Err(e) if raw::closed_by_peer(&e) => return Ok(None),
        Err(e) => return Err(e).context("writing a change feed request"),
    }
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(0) => return Ok(None),
            Ok(_) => head.push(byte[0]),
            Err(e) if raw::closed_by_peer(&e) => return Ok(None),
            Err(e) => return Err(e).context("reading a change feed's headers"),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("bad status line in {head:?}"))?;
    Ok(Some((status, stream)))
}

/// Sends SIGHUP to the broker, which reloads its TLS certificates and HTTP bearer tokens.
pub fn hang_up(broker: &BrokerProcess) -> Result<()> {
    let pid = broker.pid().context("the broker's pid")?;
    let status = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .context("kill -HUP")?;
    if !status.success() {
        bail!("kill -HUP {pid}: {status}");
    }
    Ok(())
}
