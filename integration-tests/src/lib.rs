//! Harness for Causeway's end-to-end tests.
//!
//! Every test starts its own broker process ([`BrokerProcess`]) on free loopback ports with its
//! own temporary data directory, then talks to it with real clients: rdkafka (librdkafka), Debian's
//! `kcat`, or the raw protocol client in [`raw`] for inputs no well-behaved client would send.

pub mod batch;
pub mod load;
pub mod ports;
pub mod proxy;
pub mod raw;
pub mod regions;
pub mod transactions;

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tempfile::TempDir;

pub use ports::free_port;

/// How long a broker may take to answer `GET /readyz` with 200 after it was spawned.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a broker may take to exit after SIGTERM.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);
/// Default timeout for client operations in tests.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);

/// Options for starting a broker.
#[derive(Debug, Clone, Default)]
pub struct BrokerOptions {
    /// Extra command-line arguments appended after the harness's own flags.
    pub extra_args: Vec<String>,
    /// Use this data directory instead of a fresh temporary one.
    pub data_dir: Option<PathBuf>,
}

impl BrokerOptions {
    /// Default options: fresh data directory, no extra flags.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `--flag value` to the command line.
    pub fn flag(mut self, flag: &str, value: impl ToString) -> Self {
        self.extra_args.push(flag.to_string());
        self.extra_args.push(value.to_string());
        self
    }

    /// Starts the broker without auto-creation of topics.
    pub fn no_auto_create(self) -> Self {
        self.flag("--auto-create-topics", "false")
    }

    /// Uses an existing data directory.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }
}

/// Locates the `causeway` binary: `$CAUSEWAY_BIN`, else `causeway` in the cargo profile directory
/// that holds this test executable (`target/release/deps/xxx` -> `target/release/causeway`).
pub fn broker_binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("CAUSEWAY_BIN") {
        let bin = PathBuf::from(bin);
        if !bin.is_file() {
            bail!("CAUSEWAY_BIN={} does not exist", bin.display());
        }
        return Ok(bin);
    }
    let exe = std::env::current_exe().context("current_exe")?;
    let mut dir = exe.parent();
    while let Some(d) = dir {
        let candidate = d.join(format!("causeway{}", std::env::consts::EXE_SUFFIX));
        if candidate.is_file() {
            return Ok(candidate);
        }
        // Stop at the profile directory (the parent of `deps`).
        if d.file_name().is_some_and(|n| n == "deps") {
            let profile = d.parent().map(|p| p.join("causeway"));
            if let Some(p) = profile.filter(|p| p.is_file()) {
                return Ok(p);
            }
            break;
        }
        dir = d.parent();
    }
    bail!(
        "the causeway binary was not found next to {} (or in $CAUSEWAY_BIN): \
         build it with cargo build --release -p causeway-broker",
        exe.display()
    )
}

/// A running (or stopped) `causeway` process owned by a test. Dropping it kills the process.
#[derive(Debug)]
pub struct BrokerProcess {
    binary: PathBuf,
    child: Option<Child>,
    kafka_port: u16,
    http_port: u16,
    data_dir: PathBuf,
    log_path: PathBuf,
    extra_args: Vec<String>,
    // Keeps the temporary directory (log file, default data directory) alive.
    _workdir: TempDir,
}

impl BrokerProcess {
    /// Starts a broker with `options` and waits until `GET /readyz` answers 200.
    pub fn start(options: BrokerOptions) -> Result<Self> {
        let mut broker = Self::unspawned(options, 0, 0)?;
        // The free ports are only free until somebody else binds them: another test running in
        // parallel may take one between our probe and the broker's bind. Retry with new ports if
        // the process dies during startup.
        let mut last_err = None;
        for _ in 0..3 {
            broker.kafka_port = free_port()?;
            broker.http_port = free_port()?;
            match broker.spawn_and_wait() {
                Ok(()) => return Ok(broker),
                Err(e) => {
                    let exited = broker
                        .child
                        .as_mut()
                        .map(|c| matches!(c.try_wait(), Ok(Some(_))));
                    let in_use = broker.stderr_tail(50).to_lowercase().contains("in use");
                    broker.kill9();
                    if exited == Some(true) && in_use {
                        last_err = Some(e);
                        continue;
                    }
                    return Err(e);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("broker failed to start")))
    }

    /// Starts a broker with default options.
    pub fn start_default() -> Result<Self> {
        Self::start(BrokerOptions::new())
    }

    /// Spawns a broker on the given Kafka and HTTP ports without waiting for it to be ready
    /// (call [`BrokerProcess::wait_ready`]): regions of a mesh must know each other's ports
    /// before any of them starts, so they are allocated by the caller and all spawned at once.
    pub fn spawn_on(options: BrokerOptions, kafka_port: u16, http_port: u16) -> Result<Self> {
        let mut broker = Self::unspawned(options, kafka_port, http_port)?;
        broker.spawn()?;
        Ok(broker)
    }

    /// A broker on the given ports with its own working directory, not spawned yet.
    fn unspawned(options: BrokerOptions, kafka_port: u16, http_port: u16) -> Result<Self> {
        let binary = broker_binary()?;
        let workdir = tempfile::Builder::new()
            .prefix("causeway-it-")
            .tempdir()
            .context("create temp dir")?;
        let data_dir = match &options.data_dir {
            Some(d) => d.clone(),
            None => workdir.path().join("data"),
        };
        let log_path = workdir.path().join("broker.stderr.log");
        Ok(BrokerProcess {
            binary,
            child: None,
            kafka_port,
            http_port,
            data_dir,
            log_path,
            extra_args: options.extra_args,
            _workdir: workdir,
        })
    }

    fn spawn_and_wait(&mut self) -> Result<()> {
        self.spawn()?;
        self.wait_ready(STARTUP_TIMEOUT)
    }

    fn spawn(&mut self) -> Result<()> {
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .context("open broker log")?;
        writeln!(
            log,
            "===== harness: starting {} (kafka port {}, http port {}) =====",
            self.binary.display(),
            self.kafka_port,
            self.http_port
        )?;
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--kafka-listen")
            .arg(format!("127.0.0.1:{}", self.kafka_port));
        // A test may advertise another address (a proxy in front of the broker).
        if !self.extra_args.iter().any(|a| a == "--advertised-addr") {
            cmd.arg("--advertised-addr")
                .arg(format!("127.0.0.1:{}", self.kafka_port));
        }
        cmd.arg("--http-listen")
            .arg(format!("127.0.0.1:{}", self.http_port))
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        let child = cmd
            .spawn()
            .with_context(|| format!("spawn {}", self.binary.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until `GET /readyz` answers 200; fails early if the process exits.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "broker exited during startup with {status}; stderr tail:\n{}",
                        self.stderr_tail(60)
                    );
                }
            } else {
                bail!("broker is not running");
            }
            if let Ok((200, _)) = http_get(self.http_addr(), "/readyz") {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "broker did not become ready within {timeout:?}; stderr tail:\n{}",
                    self.stderr_tail(60)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:PORT` of the Kafka listener, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.kafka_port)
    }

    /// Address of the Kafka listener.
    pub fn kafka_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.kafka_port))
    }

    /// Address of the HTTP listener.
    pub fn http_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.http_port))
    }

    /// The broker's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Directory of one partition's log: `<data-dir>/topics/<topic>-<partition>`.
    pub fn partition_dir(&self, topic: &str, partition: i32) -> PathBuf {
        self.data_dir
            .join("topics")
            .join(format!("{topic}-{partition}"))
    }

    /// Process id of the running broker.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the broker with SIGKILL and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits (bounded) for the process to exit; returns its exit status.
    pub fn terminate(&mut self) -> Result<ExitStatus> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("broker not running"))?;
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .context("run kill -TERM")?;
        if !status.success() {
            bail!("kill -TERM {} failed: {status}", child.id());
        }
        let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "broker did not exit within {SHUTDOWN_TIMEOUT:?} of SIGTERM; stderr tail:\n{}",
                    self.stderr_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the broker again with the same ports, flags and data directory. A running broker is
    /// first stopped with SIGTERM.
    pub fn restart(&mut self) -> Result<()> {
        if self.child.is_some() {
            self.terminate()?;
        }
        self.spawn_and_wait()
    }

    /// The broker's stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last `lines` lines of the broker's stderr.
    pub fn stderr_tail(&self, lines: usize) -> String {
        let all = self.stderr();
        let v: Vec<&str> = all.lines().collect();
        v[v.len().saturating_sub(lines)..].join("\n")
    }

    /// Path of the file that collects the broker's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Producer config with idempotence off (the broker has no InitProducerId yet).
    pub fn producer_config(&self) -> ClientConfig {
        producer_config(&self.bootstrap())
    }

    /// Consumer config for manual `assign()` (no group APIs).
    pub fn consumer_config(&self) -> ClientConfig {
        consumer_config(&self.bootstrap())
    }

    /// Admin client config.
    pub fn admin_config(&self) -> ClientConfig {
        admin_config(&self.bootstrap())
    }

    /// A `FutureProducer` with default test settings.
    pub fn producer(&self) -> FutureProducer {
        self.producer_config()
            .create()
            .expect("create rdkafka producer")
    }

    /// A `BaseConsumer` with default test settings.
    pub fn consumer(&self) -> BaseConsumer {
        self.consumer_config()
            .create()
            .expect("create rdkafka consumer")
    }

    /// An `AdminClient` with default test settings.
    pub fn admin(&self) -> rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> {
        self.admin_config().create().expect("create admin client")
    }

    /// A raw protocol connection to the Kafka listener.
    pub fn raw(&self) -> Result<raw::RawClient> {
        raw::RawClient::connect(self.kafka_addr())
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- causeway stderr ({}), last 80 lines -----\n{}\n-----",
                self.log_path.display(),
                self.stderr_tail(80)
            );
        }
        self.kill9();
    }
}

/// Minimal HTTP/1.0 GET; returns (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let status_line = text.lines().next().unwrap_or_default();
    let code = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("bad HTTP status line {status_line:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// Producer config: idempotence off, no retries hidden behind long timeouts.
pub fn producer_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "false")
        .set("message.timeout.ms", "15000")
        .set("linger.ms", "0")
        .set("api.version.request", "true")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .set("log_level", "6");
    c
}

/// Consumer config for manual assignment (a group.id is required by librdkafka but unused).
pub fn consumer_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("group.id", "causeway-integration-tests")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "100")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .set("log_level", "6");
    c
}

/// Admin client config.
pub fn admin_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap).set("log_level", "6");
    c
}

/// Runs a future to completion on a fresh current-thread tokio runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build tokio runtime")
        .block_on(f)
}

/// Polls `cond` every 50 ms until it returns true or `timeout` passes; returns whether it did.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
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

/// Path of the kcat binary: `$KCAT`, else `/usr/bin/kcat` if present, else `kcat` from PATH.
pub fn kcat_binary() -> PathBuf {
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
    let mut child = Command::new(kcat_binary())
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
