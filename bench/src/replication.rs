//! `replication`: starts N regions as `causeway` child processes on loopback,
//! each with its own temporary data directory, every region a peer of every
//! other, and measures active-active replication.
//!
//! * `--mode latency` (default 3 regions): creates a topic in region 1, waits
//!   until every region has it, then produces in region 1 at `--rate`
//!   records/s (`linger.ms=0`, `--acks`). A consumer in every region reads the
//!   topic from its end; each payload carries its send time, so a record's
//!   latency is receive time - send time on the same host clock. The consumer
//!   in region 1 itself is the baseline (local end-to-end latency); the other
//!   regions' figures include replication.
//! * `--mode throughput`: produces `--bytes` of `--record-bytes` records
//!   (acks=1) into region 1 only (`--writers one`) or split evenly over every
//!   region in parallel (`--writers all`), then polls every region's
//!   `GET /v1/regions` until its vector clock holds every batch the writers
//!   appended. Reports the wall time to convergence, the bytes each region
//!   applied from its peers (`bytes_applied` of its links) and MB/s, and each
//!   region's CPU seconds (utime + stime from `/proc/PID/stat`) over the run
//!   per GB applied (and, for writers, per GB ingested). Finally checks that
//!   every region's partitions hold exactly the records produced (sum of high
//!   watermarks).
//!
//! The regions are stopped with SIGTERM (SIGKILL after 20 s) and their data is
//! deleted at the end, also when the run fails.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::{json, Map, Value};

use crate::cli::{parse_key_value, CommonArgs, Compression, ProducerTuning};
use crate::http::get_text;
use crate::kafka::{self, BenchContext};
use crate::latency::{self, PacedLoad, Shared};
use crate::payload::{PayloadPool, HEADER_LEN};
use crate::procstat::ProcessMonitor;
use crate::report::LatencySummary;

/// Bytes in a megabyte (10^6) and a gigabyte (10^9).
const MB: f64 = 1e6;
const GB: f64 = 1e9;

/// Interval between convergence polls of `/v1/regions`.
const POLL: Duration = Duration::from_millis(20);

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Replication latency at a fixed rate, against local end-to-end latency.
    Latency,
    /// Time, throughput and CPU cost until every region holds a fixed volume.
    Throughput,
}

/// Which regions produce in `--mode throughput`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Writers {
    /// Region 1 only.
    One,
    /// Every region, an equal share each, in parallel.
    All,
}

/// Options of `replication`.
#[derive(Debug, Clone, Args)]
pub struct ReplicationArgs {
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Mode::Latency)]
    pub mode: Mode,

    /// Number of regions to start (r1 .. rN).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(2..=32))]
    pub regions: u32,

    /// The `causeway` binary [default: `causeway` next to this binary].
    #[arg(long, value_name = "PATH")]
    pub broker_bin: Option<PathBuf>,

    /// Directory in which the regions' data directories are created [default: the system
    /// temporary directory]; use /dev/shm for tmpfs.
    #[arg(long, value_name = "DIR")]
    pub data_parent: Option<PathBuf>,

    /// Extra argument for every region's command line (repeatable), e.g. `--broker-arg=--log-format=json`.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub broker_arg: Vec<String>,

    /// Keep the data directories and logs (their path is printed).
    #[arg(long)]
    pub keep_data: bool,

    /// Topic to create in region 1.
    #[arg(long, default_value = "bench-repl")]
    pub topic: String,

    /// Partitions of the topic [default: latency 1, throughput 6].
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=100_000))]
    pub partitions: Option<i32>,

    /// Payload bytes per record [default: latency 100, throughput 1024].
    #[arg(long, value_parser = clap::value_parser!(u64).range(16..=64 * 1024 * 1024))]
    pub record_bytes: Option<u64>,

    /// Producer linger.ms [default: latency 0, throughput 5].
    #[arg(long)]
    pub linger_ms: Option<u64>,

    /// Producer batch size and acks.
    #[command(flatten)]
    pub producer: ProducerTuning,

    /// Extra librdkafka property for every client, as key=value (repeatable).
    #[arg(short = 'X', long = "rdkafka", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub rdkafka: Vec<(String, String)>,

    /// Latency: send rate in records per second.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub rate: u64,

    /// Latency: measured seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub duration_s: u64,

    /// Latency: seconds of traffic at the same rate before the measurement (not recorded).
    #[arg(long, default_value_t = 2)]
    pub warmup_s: u64,

    /// Throughput: payload volume to produce, e.g. 512MiB, 1GiB, 100MB or a byte count.
    #[arg(long, default_value = "512MiB", value_parser = parse_size)]
    pub bytes: u64,

    /// Throughput: produce in region 1 only, or in every region (equal shares, in parallel).
    #[arg(long, value_enum, default_value_t = Writers::One)]
    pub writers: Writers,

    /// Throughput: seconds of idle mesh (topic created, no traffic) over which each region's
    /// background CPU per second is measured before producing (0 skips it).
    #[arg(long, default_value_t = 3)]
    pub idle_s: u64,

    /// Seconds to wait for start-up, delivery, the last records and convergence (each).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_s: u64,

    /// Also print the results as one JSON line.
    #[arg(long)]
    pub json: bool,
}

/// Parses a size: a byte count with an optional unit (B, KB, MB, GB, KiB, MiB, GiB).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("invalid size '{s}': expected e.g. 512MiB"))?;
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "mb" | "m" => 1e6,
        "gb" | "g" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("invalid size unit '{other}' in '{s}'")),
    };
    let bytes = (number * factor).round();
    if !(1.0..=1e15).contains(&bytes) {
        return Err(format!("size '{s}' out of range"));
    }
    Ok(bytes as u64)
}

/// Result of a run: text lines and a JSON object.
pub struct ReplicationReport {
    lines: Vec<String>,
    json: Value,
}

impl ReplicationReport {
    /// Human-readable lines.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }

    /// One JSON object with every result and parameter.
    pub fn json(&self) -> &Value {
        &self.json
    }
}

/// Runs the `replication` benchmark.
pub fn run(args: &ReplicationArgs) -> Result<ReplicationReport> {
    let mut mesh = Mesh::start(args)?;
    let result = match args.mode {
        Mode::Latency => run_latency(args, &mesh),
        Mode::Throughput => run_throughput(args, &mesh),
    };
    if let Err(err) = &result {
        eprintln!("causeway-bench: run failed ({err:#}); region state before stopping:");
        eprintln!("{}", mesh.diagnostics());
    }
    let stopped = mesh.stop();
    let mut report = result?;
    for line in stopped {
        report.lines.push(line);
    }
    Ok(report)
}

// ---------------------------------------------------------------------------
// Regions

/// One running region.
struct Region {
    name: String,
    kafka: String,
    http: String,
    child: Child,
    log: PathBuf,
}

impl Region {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// N regions, stopped (and their data deleted) on drop.
struct Mesh {
    regions: Vec<Region>,
    root: PathBuf,
    keep_data: bool,
    agent: ureq::Agent,
    stopped: bool,
}

/// Distinct free loopback ports.
fn free_ports(count: usize) -> Result<Vec<u16>> {
    // Hold every listener until all ports are picked, so none is handed out twice.
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").context("cannot bind a loopback port"))
        .collect::<Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

fn broker_bin(args: &ReplicationArgs) -> Result<PathBuf> {
    if let Some(bin) = &args.broker_bin {
        return Ok(bin.clone());
    }
    let exe = std::env::current_exe().context("cannot locate this binary")?;
    let bin = exe.with_file_name("causeway");
    if !bin.exists() {
        bail!(
            "{} does not exist: build it (cargo build --release -p causeway-broker) or pass --broker-bin",
            bin.display()
        );
    }
    Ok(bin)
}

fn http_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// The last `max` bytes of a file, for error messages.
fn tail(path: &Path, max: u64) -> String {
    let Ok(mut file) = fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut buf = Vec::new();
    let _ = file.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

impl Mesh {
    /// Spawns every region, then waits until each answers `/readyz` with 200 and every link is
    /// connected.
    fn start(args: &ReplicationArgs) -> Result<Mesh> {
        let bin = broker_bin(args)?;
        let n = usize::try_from(args.regions)?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let parent = args.data_parent.clone().unwrap_or_else(std::env::temp_dir);
        let root = parent.join(format!(
            "causeway-bench-repl-{}-{nanos}",
            std::process::id()
        ));
        fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
        let ports = free_ports(2 * n)?;
        let names: Vec<String> = (1..=n).map(|i| format!("r{i}")).collect();
        let kafka: Vec<String> = (0..n).map(|i| format!("127.0.0.1:{}", ports[i])).collect();
        let http: Vec<String> = (0..n)
            .map(|i| format!("127.0.0.1:{}", ports[n + i]))
            .collect();
        let secret = format!("bench-secret-{nanos}");
        let mut mesh = Mesh {
            regions: Vec::new(),
            root: root.clone(),
            keep_data: args.keep_data,
            agent: http_agent(),
            stopped: false,
        };
        for i in 0..n {
            let data = root.join(&names[i]);
            let log = root.join(format!("{}.log", names[i]));
            let log_file = fs::File::create(&log)
                .with_context(|| format!("cannot create {}", log.display()))?;
            let mut cmd = Command::new(&bin);
            cmd.arg("--region")
                .arg(&names[i])
                .arg("--data-dir")
                .arg(&data)
                .arg("--kafka-listen")
                .arg(&kafka[i])
                .arg("--http-listen")
                .arg(&http[i])
                .arg("--replication-secret")
                .arg(&secret);
            for j in (0..n).filter(|&j| j != i) {
                cmd.arg("--peer").arg(format!("{}@{}", names[j], kafka[j]));
            }
            cmd.args(&args.broker_arg)
                .stdin(Stdio::null())
                .stdout(log_file.try_clone()?)
                .stderr(log_file);
            let child = cmd
                .spawn()
                .with_context(|| format!("cannot start {}", bin.display()))?;
            mesh.regions.push(Region {
                name: names[i].clone(),
                kafka: kafka[i].clone(),
                http: http[i].clone(),
                child,
                log,
            });
        }
        let timeout = Duration::from_secs(args.timeout_s.min(120));
        mesh.wait_ready(timeout)?;
        mesh.wait_links(timeout)?;
        Ok(mesh)
    }

    fn check_alive(&mut self) -> Result<()> {
        for r in &mut self.regions {
            if let Some(status) = r.child.try_wait()? {
                bail!(
                    "region {} exited ({status}); end of its log {}:\n{}",
                    r.name,
                    r.log.display(),
                    tail(&r.log, 4000)
                );
            }
        }
        Ok(())
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        for i in 0..self.regions.len() {
            loop {
                self.check_alive()?;
                let url = format!("http://{}/readyz", self.regions[i].http);
                if matches!(get_text(&self.agent, &url), Ok((200, _))) {
                    break;
                }
                if Instant::now() >= deadline {
                    bail!(
                        "region {} not ready after {} s; end of its log:\n{}",
                        self.regions[i].name,
                        timeout.as_secs(),
                        tail(&self.regions[i].log, 4000)
                    );
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// `/v1/regions` of region `i`.
    fn status(&self, i: usize) -> Result<Value> {
        let url = format!("http://{}/v1/regions", self.regions[i].http);
        let (code, body) = get_text(&self.agent, &url)?;
        if code != 200 {
            bail!("GET {url}: HTTP {code}: {body}");
        }
        serde_json::from_str(&body).with_context(|| format!("GET {url}: not JSON: {body}"))
    }

    /// Waits until every region reports every link `connected`.
    fn wait_links(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive()?;
            let mut waiting = Vec::new();
            for i in 0..self.regions.len() {
                let status = self.status(i)?;
                for peer in status["peers"].as_array().into_iter().flatten() {
                    if peer["state"] != "connected" {
                        waiting.push(format!(
                            "{}->{} {}",
                            self.regions[i].name, peer["name"], peer["state"]
                        ));
                    }
                }
            }
            if waiting.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "links not connected after {} s: {}",
                    timeout.as_secs(),
                    waiting.join(", ")
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every region's `/v1/regions`, for a failure report.
    fn diagnostics(&self) -> String {
        let mut out = String::new();
        for (i, r) in self.regions.iter().enumerate() {
            let status = match self.status(i) {
                Ok(v) => v.to_string(),
                Err(e) => format!("unreadable: {e:#}"),
            };
            out.push_str(&format!("region {} (pid {}): {status}\n", r.name, r.pid()));
        }
        out
    }

    /// SIGTERM to every region, then waits (SIGKILL after 20 s); deletes the data unless
    /// `--keep-data`. Returns notes about anything unusual.
    fn stop(&mut self) -> Vec<String> {
        if self.stopped {
            return Vec::new();
        }
        self.stopped = true;
        let mut notes = Vec::new();
        for r in &self.regions {
            // No libc dependency: the kill(1) utility sends the signal.
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(r.pid().to_string())
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        for r in &mut self.regions {
            loop {
                match r.child.try_wait() {
                    Ok(Some(status)) => {
                        if !status.success() {
                            notes.push(format!(
                                "note: region {} exited with {status} after SIGTERM (log {})",
                                r.name,
                                r.log.display()
                            ));
                        }
                        break;
                    }
                    Ok(None) if Instant::now() < deadline => {
                        thread::sleep(Duration::from_millis(20));
                    }
                    _ => {
                        let _ = r.child.kill();
                        let _ = r.child.wait();
                        notes.push(format!(
                            "note: region {} did not exit within 20 s of SIGTERM; killed",
                            r.name
                        ));
                        break;
                    }
                }
            }
        }
        if self.keep_data {
            notes.push(format!("data and logs kept in {}", self.root.display()));
        } else if let Err(e) = fs::remove_dir_all(&self.root) {
            notes.push(format!("note: cannot delete {}: {e}", self.root.display()));
        }
        notes
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        for note in self.stop() {
            eprintln!("{note}");
        }
    }
}

// ---------------------------------------------------------------------------
// Clients

/// The client options of the other modes, aimed at one region.
fn common_for(
    args: &ReplicationArgs,
    brokers: &str,
    partitions: i32,
    record_bytes: u64,
) -> CommonArgs {
    CommonArgs {
        brokers: brokers.to_string(),
        topic: args.topic.clone(),
        partitions,
        replication_factor: 1,
        record_bytes,
        linger_ms: args.linger_ms,
        producer: args.producer.clone(),
        compression: Compression::None,
        rdkafka: args.rdkafka.clone(),
        broker_pid: None,
        connect_timeout_s: args.timeout_s.min(120),
        json: args.json,
    }
}

fn create_consumer(common: &CommonArgs) -> Result<BaseConsumer<BenchContext>> {
    kafka::consumer_config(common)
        .create_with_context(BenchContext::default())
        .context("cannot create the librdkafka consumer (check -X properties)")
}

/// Creates the topic in region 1 and waits until every region's metadata shows it with
/// `partitions` partitions, each with a leader.
fn create_topic_everywhere(
    args: &ReplicationArgs,
    mesh: &Mesh,
    partitions: i32,
    record_bytes: u64,
) -> Result<()> {
    let first = common_for(args, &mesh.regions[0].kafka, partitions, record_bytes);
    let admin_producer =
        kafka::create_producer(&kafka::producer_config(&first, 0, Duration::from_secs(30)))?;
    kafka::wait_for_cluster(&admin_producer, &first.brokers, Duration::from_secs(30))?;
    let count = kafka::ensure_topic(&admin_producer, &first, true)?;
    if count != partitions {
        bail!(
            "topic '{}' has {count} partitions in {}, expected {partitions} (use a fresh topic name)",
            args.topic,
            mesh.regions[0].name
        );
    }
    let deadline = Instant::now() + Duration::from_secs(args.timeout_s.min(120));
    for r in &mesh.regions[1..] {
        let common = common_for(args, &r.kafka, partitions, record_bytes);
        let consumer = create_consumer(&common)?;
        loop {
            // Metadata for all topics: asking for this one could auto-create it.
            let seen = consumer
                .fetch_metadata(None, Duration::from_secs(5))
                .ok()
                .and_then(|m| {
                    m.topics().iter().find(|t| t.name() == args.topic).map(|t| {
                        (
                            t.partitions().len(),
                            t.partitions()
                                .iter()
                                .all(|p| p.error().is_none() && p.leader() >= 0),
                        )
                    })
                });
            match seen {
                Some((n, true)) if n == usize::try_from(partitions)? => break,
                _ if Instant::now() >= deadline => bail!(
                    "topic '{}' not visible with {partitions} partitions in region {} (saw {seen:?})",
                    args.topic,
                    r.name
                ),
                _ => thread::sleep(Duration::from_millis(50)),
            }
        }
    }
    Ok(())
}

/// Median of a list (the mean of the two middle values for an even count).
fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    })
}

// ---------------------------------------------------------------------------
// Latency

/// What one region's consumer saw.
struct Consumed {
    histogram: Histogram<u64>,
    received: u64,
    duplicates: u64,
}

fn run_latency(args: &ReplicationArgs, mesh: &Mesh) -> Result<ReplicationReport> {
    let partitions = args.partitions.unwrap_or(1);
    let record_bytes = args.record_bytes.unwrap_or(100).max(HEADER_LEN as u64);
    let linger_ms = args.linger_ms.unwrap_or(0);
    let timeout = Duration::from_secs(args.timeout_s);
    create_topic_everywhere(args, mesh, partitions, record_bytes)?;

    let first = common_for(args, &mesh.regions[0].kafka, partitions, record_bytes);
    let producer = kafka::create_producer(&kafka::producer_config(&first, linger_ms, timeout))?;
    kafka::wait_for_cluster(&producer, &first.brokers, Duration::from_secs(30))?;

    let mut consumers = Vec::new();
    for r in &mesh.regions {
        let common = common_for(args, &r.kafka, partitions, record_bytes);
        let consumer = create_consumer(&common)?;
        latency::assign_at_end(&consumer, &args.topic, partitions, Duration::from_secs(30))
            .with_context(|| format!("in region {}", r.name))?;
        consumers.push(consumer);
    }

    let shared = Shared::new(timeout);
    let (sent, elapsed, consumed) = thread::scope(|scope| {
        let readers: Vec<_> = consumers
            .iter()
            .map(|c| scope.spawn(|| consume(c, &shared)))
            .collect();
        thread::sleep(latency::SETTLE + Duration::from_millis(100));
        let produced = produce_paced(&producer, args, partitions, record_bytes, &shared);
        shared.producer_done(produced.as_ref().ok().map(|(total, _)| *total));
        let consumed = readers
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow!("a consumer thread panicked"))?
            })
            .collect::<Result<Vec<_>>>();
        let (total, elapsed) = produced?;
        Ok::<_, anyhow::Error>((total, elapsed, consumed?))
    })?;

    let warmup = args.rate.saturating_mul(args.warmup_s);
    let measured = sent - warmup;
    let mut lines = vec![format!(
        "replication latency: {} regions, produce in {} at {} records/s for {} s (+{} s warm-up), \
         {} B records, {} partition(s), linger.ms {linger_ms}, acks={}; {measured} measured records \
         sent in {:.2} s",
        mesh.regions.len(),
        mesh.regions[0].name,
        args.rate,
        args.duration_s,
        args.warmup_s,
        record_bytes,
        partitions,
        args.producer.acks,
        elapsed.as_secs_f64()
    )];
    let mut per_region = Vec::new();
    let mut missing = Vec::new();
    let local_p99 = LatencySummary::from_micros(&consumed[0].histogram).p99_ms;
    for (i, (r, c)) in mesh.regions.iter().zip(&consumed).enumerate() {
        let l = LatencySummary::from_micros(&c.histogram);
        let role = if i == 0 {
            "local (baseline)"
        } else {
            "replicated"
        };
        let mut line = format!(
            "  {} {role}: p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms ({} samples, {} received of {sent})",
            r.name, l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.samples, c.received
        );
        if i > 0 {
            line.push_str(&format!(
                "; p99 - local p99 = {:.3} ms",
                l.p99_ms - local_p99
            ));
        }
        if c.duplicates > 0 {
            line.push_str(&format!("; {} DUPLICATE records", c.duplicates));
        }
        lines.push(line);
        if c.received < sent {
            missing.push(format!("{} received {} of {sent}", r.name, c.received));
        }
        per_region.push(json!({
            "region": r.name,
            "local": i == 0,
            "received": c.received,
            "duplicates": c.duplicates,
            "latency_ms": {
                "p50": l.p50_ms, "p90": l.p90_ms, "p99": l.p99_ms,
                "p99_9": l.p999_ms, "max": l.max_ms, "samples": l.samples,
            },
            "p99_minus_local_ms": l.p99_ms - local_p99,
        }));
    }
    if !missing.is_empty() {
        bail!(
            "records missing within {} s after the last send: {}\n{}",
            args.timeout_s,
            missing.join(", "),
            lines.join("\n")
        );
    }
    let json = json!({
        "mode": "replication-latency",
        "regions": mesh.regions.len(),
        "topic": args.topic,
        "partitions": partitions,
        "record_bytes": record_bytes,
        "linger_ms": linger_ms,
        "acks": args.producer.acks.as_config(),
        "rate": args.rate,
        "duration_s": args.duration_s,
        "warmup_s": args.warmup_s,
        "sent": sent,
        "measured": measured,
        "send_elapsed_s": elapsed.as_secs_f64(),
        "per_region": per_region,
    });
    Ok(ReplicationReport { lines, json })
}

/// Consumer thread: settles, then records latencies until every record is received, the drain
/// timeout expires or the producer aborts.
fn consume(consumer: &BaseConsumer<BenchContext>, shared: &Shared) -> Result<Consumed> {
    let mut histogram = latency::histogram()?;
    latency::settle(consumer, |_| {});
    let mut received = 0u64;
    let mut duplicates = 0u64;
    let mut last_seen_ns = 0u64;
    latency::poll_until_drained(consumer, shared, |polled| {
        if let Some(Ok(msg)) = polled {
            let now_ns = shared.now_ns();
            if let Some(sent_ns) = shared.sent_ns(&msg) {
                // One partition per default: send times only grow, so a repeat is a duplicate.
                if sent_ns <= last_seen_ns && msg.partition() == 0 && received > 0 {
                    duplicates += 1;
                } else {
                    received += 1;
                    shared.record(&mut histogram, sent_ns, now_ns);
                }
                if msg.partition() == 0 {
                    last_seen_ns = last_seen_ns.max(sent_ns);
                }
            }
        }
        received
    });
    Ok(Consumed {
        histogram,
        received,
        duplicates,
    })
}

/// Sends `--rate` records per second in per-tick bursts for the warm-up and the measured
/// duration, then flushes; returns the records sent and the measured sending time.
fn produce_paced(
    producer: &BaseProducer<BenchContext>,
    args: &ReplicationArgs,
    partitions: i32,
    record_bytes: u64,
    shared: &Shared,
) -> Result<(u64, Duration)> {
    let timeout = Duration::from_secs(args.timeout_s);
    let load = PacedLoad {
        topic: &args.topic,
        partitions,
        record_bytes,
        rate: args.rate,
        warmup_s: args.warmup_s,
        duration_s: args.duration_s,
        timeout,
    };
    let paced = latency::produce_paced(producer, &load, shared, || Ok(()))?;
    flush(producer, timeout)?;
    Ok((paced.total, paced.elapsed))
}

/// Flushes in 1 ms polls (see the note on transactions in docs/benchmarks.md) and fails on any
/// failed delivery.
fn flush(producer: &BaseProducer<BenchContext>, timeout: Duration) -> Result<()> {
    kafka::poll_until(
        producer,
        timeout,
        || producer.in_flight_count() == 0,
        || {
            format!(
                "{} record(s) not acknowledged within {} s",
                producer.in_flight_count(),
                timeout.as_secs()
            )
        },
    )?;
    producer.context().check_deliveries()
}

// ---------------------------------------------------------------------------
// Throughput

/// A region's counters at one moment.
#[derive(Debug, Clone)]
struct Snapshot {
    /// Per origin region name: batches of that origin held (summed over partitions).
    clock: Map<String, Value>,
    /// Bytes applied from every link.
    applied_bytes: u64,
    /// Batches applied from every link.
    applied_batches: u64,
    /// Batches waiting in pending queues.
    buffered: u64,
    /// Duplicates and refusals over every link.
    duplicates: u64,
    refused: u64,
}

fn snapshot(mesh: &Mesh, i: usize) -> Result<Snapshot> {
    let status = mesh.status(i)?;
    let clock = status["clock"].as_object().cloned().unwrap_or_default();
    let peers = status["peers"].as_array().cloned().unwrap_or_default();
    let sum = |key: &str| peers.iter().map(|p| p[key].as_u64().unwrap_or(0)).sum();
    Ok(Snapshot {
        clock,
        applied_bytes: sum("bytes_applied"),
        applied_batches: sum("batches_applied"),
        buffered: status["buffered_batches"].as_u64().unwrap_or(0),
        duplicates: sum("duplicates"),
        refused: sum("refused"),
    })
}

fn clock_of(s: &Snapshot, origin: &str) -> u64 {
    s.clock.get(origin).and_then(Value::as_u64).unwrap_or(0)
}

/// What happened at one region during a throughput run.
struct RegionResult {
    name: String,
    writer: bool,
    ingested_bytes: u64,
    converged: Duration,
    cpu_s: f64,
    /// Payload bytes of the records this region had to receive from others (exact).
    applied_bytes: u64,
    /// What the region's links report as `bytes_applied` (batch bytes; over-counts when a
    /// response mixes duplicates with new batches).
    counted_applied_bytes: u64,
    applied_batches: u64,
    duplicates: u64,
    refused: u64,
    metrics_applied_bytes: Option<f64>,
    metrics_served_bytes: Option<f64>,
    records_held: i64,
    peak_rss: u64,
    idle_cpu_per_s: Option<f64>,
}

fn run_throughput(args: &ReplicationArgs, mesh: &Mesh) -> Result<ReplicationReport> {
    let n = mesh.regions.len();
    let partitions = args.partitions.unwrap_or(6);
    let record_bytes = args.record_bytes.unwrap_or(1024);
    let linger_ms = args.linger_ms.unwrap_or(5);
    let timeout = Duration::from_secs(args.timeout_s);
    let total_records = (args.bytes / record_bytes).max(1);
    let writers: Vec<usize> = match args.writers {
        Writers::One => vec![0],
        Writers::All => (0..n).collect(),
    };
    create_topic_everywhere(args, mesh, partitions, record_bytes)?;

    // Producers connected before the clock starts.
    let share = total_records / writers.len() as u64;
    let mut producers = Vec::new();
    for (k, &w) in writers.iter().enumerate() {
        let common = common_for(args, &mesh.regions[w].kafka, partitions, record_bytes);
        let producer =
            kafka::create_producer(&kafka::producer_config(&common, linger_ms, timeout))?;
        kafka::wait_for_cluster(&producer, &common.brokers, Duration::from_secs(30))?;
        let records = if k == 0 {
            total_records - share * (writers.len() as u64 - 1)
        } else {
            share
        };
        producers.push((w, records, producer));
    }
    let monitors = mesh
        .regions
        .iter()
        .map(|r| ProcessMonitor::new(r.pid()))
        .collect::<Result<Vec<_>>>()?;
    // Background CPU of an idle mesh (long-poll heartbeats, the 5 ms syncer, timers).
    let idle_rates: Vec<Option<f64>> = if args.idle_s > 0 {
        let before = monitors
            .iter()
            .map(ProcessMonitor::cpu_seconds)
            .collect::<Result<Vec<_>>>()?;
        let idle_start = Instant::now();
        thread::sleep(Duration::from_secs(args.idle_s));
        let secs = idle_start.elapsed().as_secs_f64();
        monitors
            .iter()
            .zip(before)
            .map(|(m, b)| Ok(Some((m.cpu_seconds()? - b) / secs)))
            .collect::<Result<Vec<_>>>()?
    } else {
        vec![None; n]
    };
    let before = (0..n)
        .map(|i| snapshot(mesh, i))
        .collect::<Result<Vec<_>>>()?;
    let client = ProcessMonitor::new(std::process::id())?;
    let client_cpu_before = client.cpu_seconds()?;
    let cpu_before = monitors
        .iter()
        .map(ProcessMonitor::cpu_seconds)
        .collect::<Result<Vec<_>>>()?;

    let start = Instant::now();
    let produce_times = thread::scope(|scope| {
        let handles: Vec<_> = producers
            .iter()
            .map(|(_, records, producer)| {
                scope.spawn(move || {
                    produce_volume(
                        producer,
                        &args.topic,
                        partitions,
                        record_bytes,
                        *records,
                        timeout,
                    )
                    .map(|()| start.elapsed())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow!("a producer thread panicked"))?
            })
            .collect::<Result<Vec<_>>>()
    })?;
    let produced = produce_times.iter().copied().max().unwrap_or_default();

    // What every region must hold: each writer's own batches as its own clock shows them.
    let mut expected = Vec::new();
    for &w in &writers {
        let name = &mesh.regions[w].name;
        let now = snapshot(mesh, w)?;
        expected.push((name.clone(), clock_of(&now, name)));
    }
    let mut converged: Vec<Option<Duration>> = vec![None; n];
    let deadline = Instant::now() + timeout;
    loop {
        for (i, done) in converged.iter_mut().enumerate() {
            if done.is_some() {
                continue;
            }
            let s = snapshot(mesh, i)?;
            if expected.iter().all(|(o, seq)| clock_of(&s, o) >= *seq) {
                *done = Some(start.elapsed());
            }
        }
        if converged.iter().all(Option::is_some) {
            break;
        }
        if Instant::now() >= deadline {
            let mut state = Vec::new();
            for i in 0..n {
                let s = snapshot(mesh, i)?;
                state.push(format!(
                    "{}: clock {:?}, buffered {}",
                    mesh.regions[i].name, s.clock, s.buffered
                ));
            }
            bail!(
                "not converged {} s after producing ended; expected {:?}; {}",
                args.timeout_s,
                expected,
                state.join("; ")
            );
        }
        thread::sleep(POLL);
    }
    let wall = start.elapsed();
    let cpu_after = monitors
        .iter()
        .map(ProcessMonitor::cpu_seconds)
        .collect::<Result<Vec<_>>>()?;
    let client_cpu = client.cpu_seconds()? - client_cpu_before;
    let after = (0..n)
        .map(|i| snapshot(mesh, i))
        .collect::<Result<Vec<_>>>()?;

    // Exact-count check: every region's partitions hold every record produced.
    let mut results = Vec::new();
    for (i, r) in mesh.regions.iter().enumerate() {
        let common = common_for(args, &r.kafka, partitions, record_bytes);
        let consumer = create_consumer(&common)?;
        let mut held = 0i64;
        for p in 0..partitions {
            let (low, high) = consumer
                .fetch_watermarks(&args.topic, p, Duration::from_secs(30))
                .with_context(|| {
                    format!(
                        "cannot read the watermarks of {}/{p} in {}",
                        args.topic, r.name
                    )
                })?;
            held += high - low;
        }
        let metrics = get_text(&mesh.agent, &format!("http://{}/metrics", r.http))
            .ok()
            .map(|(_, body)| body);
        let metric = |name: &str| {
            metrics
                .as_deref()
                .and_then(|m| crate::table::metric_for_topic(m, name, &args.topic))
        };
        let writer_share = producers
            .iter()
            .find(|(w, _, _)| *w == i)
            .map_or(0, |(_, records, _)| *records);
        results.push(RegionResult {
            name: r.name.clone(),
            writer: writers.contains(&i),
            ingested_bytes: writer_share * record_bytes,
            converged: converged[i].unwrap_or_default(),
            cpu_s: cpu_after[i] - cpu_before[i],
            applied_bytes: (total_records - writer_share) * record_bytes,
            counted_applied_bytes: after[i].applied_bytes - before[i].applied_bytes,
            applied_batches: after[i].applied_batches - before[i].applied_batches,
            duplicates: after[i].duplicates - before[i].duplicates,
            refused: after[i].refused - before[i].refused,
            metrics_applied_bytes: metric("causeway_replication_applied_bytes_total"),
            metrics_served_bytes: metric("causeway_replication_served_bytes_total"),
            records_held: held,
            peak_rss: monitors[i].memory().map(|m| m.peak_rss).unwrap_or(0),
            idle_cpu_per_s: idle_rates[i],
        });
    }

    let total_payload = total_records * record_bytes;
    let writer_names: Vec<&str> = writers
        .iter()
        .map(|&w| mesh.regions[w].name.as_str())
        .collect();
    let mut lines = vec![format!(
        "replication throughput: {n} regions, writers {} ({}), {total_records} records x {record_bytes} B = {:.1} MB, \
         {partitions} partitions, linger.ms {linger_ms}, acks={}; produced (all acks) in {:.2} s, \
         every region converged in {:.2} s ({:.1} MB/s of payload end to end); client CPU {:.2} s",
        match args.writers { Writers::One => "one", Writers::All => "all" },
        writer_names.join(","),
        total_payload as f64 / MB,
        args.producer.acks,
        produced.as_secs_f64(),
        wall.as_secs_f64(),
        total_payload as f64 / MB / wall.as_secs_f64().max(1e-9),
        client_cpu,
    )];
    let mut per_region = Vec::new();
    let mut wrong = Vec::new();
    let per_gb = |cpu: f64, bytes: u64| (bytes > 0).then(|| cpu / (bytes as f64 / GB));
    let mut apply_costs = Vec::new();
    for r in &results {
        let applied_cost = per_gb(r.cpu_s, r.applied_bytes);
        let ingest_cost = per_gb(r.cpu_s, r.ingested_bytes);
        let both_cost = per_gb(r.cpu_s, r.applied_bytes + r.ingested_bytes);
        // CPU above what the region would have used idle over the same wall time.
        let net_cpu = r
            .idle_cpu_per_s
            .map(|rate| r.cpu_s - rate * wall.as_secs_f64());
        let net_applied_cost = net_cpu.and_then(|c| per_gb(c, r.applied_bytes));
        if !r.writer || args.writers == Writers::All {
            apply_costs.extend(applied_cost);
        }
        let fmt = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.2}"));
        lines.push(format!(
            "  {} {}: converged {:.2} s, applied {:.1} MB payload in {} batches ({:.1} MB/s; links count {:.1} MB), CPU {:.2} s = {} s/GB applied{}, \
             idle CPU {} cores (net of idle: {} s/GB applied), peak RSS {:.0} MB, records held {}{}{}",
            r.name,
            if r.writer { "writer" } else { "applier" },
            r.converged.as_secs_f64(),
            r.applied_bytes as f64 / MB,
            r.applied_batches,
            r.applied_bytes as f64 / MB / r.converged.as_secs_f64().max(1e-9),
            r.counted_applied_bytes as f64 / MB,
            r.cpu_s,
            fmt(applied_cost),
            if r.writer {
                format!(", {} s/GB ingested, {} s/GB ingested+applied", fmt(ingest_cost), fmt(both_cost))
            } else {
                String::new()
            },
            r.idle_cpu_per_s.map_or("-".to_string(), |v| format!("{v:.3}")),
            fmt(net_applied_cost),
            r.peak_rss as f64 / MB,
            r.records_held,
            if r.duplicates > 0 { format!(", {} duplicates", r.duplicates) } else { String::new() },
            if r.refused > 0 { format!(", {} REFUSED", r.refused) } else { String::new() },
        ));
        if r.records_held != i64::try_from(total_records)? {
            wrong.push(format!(
                "{} holds {} records, expected {total_records}",
                r.name, r.records_held
            ));
        }
        per_region.push(json!({
            "region": r.name,
            "writer": r.writer,
            "ingested_bytes": r.ingested_bytes,
            "converged_s": r.converged.as_secs_f64(),
            "applied_payload_bytes": r.applied_bytes,
            "links_bytes_applied": r.counted_applied_bytes,
            "applied_batches": r.applied_batches,
            "applied_mb_per_s": r.applied_bytes as f64 / MB / r.converged.as_secs_f64().max(1e-9),
            "cpu_s": r.cpu_s,
            "cpu_s_per_gb_applied": applied_cost,
            "cpu_s_per_gb_ingested": ingest_cost,
            "cpu_s_per_gb_ingested_and_applied": both_cost,
            "idle_cpu_s_per_s": r.idle_cpu_per_s,
            "cpu_s_per_gb_applied_net_of_idle": net_applied_cost,
            "duplicates": r.duplicates,
            "refused": r.refused,
            "metrics_applied_bytes": r.metrics_applied_bytes,
            "metrics_served_bytes": r.metrics_served_bytes,
            "records_held": r.records_held,
            "peak_rss_bytes": r.peak_rss,
        }));
    }
    let total_cpu: f64 = results.iter().map(|r| r.cpu_s).sum();
    let total_applied: u64 = results.iter().map(|r| r.applied_bytes).sum();
    let median_apply = median(&apply_costs);
    lines.push(format!(
        "  summary: median CPU per GB applied at {} {} s/GB; all regions together {:.2} CPU-s for {:.1} MB applied \
         ({:.2} s/GB applied, {:.2} s/GB counting ingest too)",
        if args.writers == Writers::One { "the appliers" } else { "a region" },
        median_apply.map_or("-".into(), |v| format!("{v:.2}")),
        total_cpu,
        total_applied as f64 / MB,
        total_cpu / (total_applied as f64 / GB).max(1e-12),
        total_cpu / ((total_applied + total_payload) as f64 / GB).max(1e-12),
    ));
    if !wrong.is_empty() {
        bail!(
            "regions converged by their clocks but hold the wrong number of records: {}\n{}",
            wrong.join("; "),
            lines.join("\n")
        );
    }
    let json = json!({
        "mode": "replication-throughput",
        "regions": n,
        "writers": match args.writers { Writers::One => "one", Writers::All => "all" },
        "topic": args.topic,
        "partitions": partitions,
        "record_bytes": record_bytes,
        "records": total_records,
        "payload_bytes": total_payload,
        "linger_ms": linger_ms,
        "acks": args.producer.acks.as_config(),
        "produce_s": produced.as_secs_f64(),
        "converged_s": wall.as_secs_f64(),
        "idle_s": args.idle_s,
        "client_cpu_s": client_cpu,
        "expected_clock": expected.iter().map(|(o, s)| (o.clone(), json!(s))).collect::<Map<_, _>>(),
        "median_cpu_s_per_gb_applied": median_apply,
        "total_cpu_s": total_cpu,
        "total_applied_bytes": total_applied,
        "per_region": per_region,
    });
    Ok(ReplicationReport { lines, json })
}

/// Sends `records` records round-robin over the partitions as fast as librdkafka allows and
/// waits for every delivery report.
fn produce_volume(
    producer: &BaseProducer<BenchContext>,
    topic: &str,
    partitions: i32,
    record_bytes: u64,
    records: u64,
    timeout: Duration,
) -> Result<()> {
    let pool = PayloadPool::new(usize::try_from(record_bytes)?);
    let partitions = u64::try_from(partitions)?;
    for i in 0..records {
        let partition = i32::try_from(i % partitions)?;
        kafka::send_waiting_for_room::<()>(
            producer,
            BaseRecord::to(topic)
                .partition(partition)
                .payload(pool.get(i)),
            timeout,
        )?;
        if i % 256 == 0 {
            producer.poll(Duration::ZERO);
            producer.context().check_deliveries()?;
        }
    }
    flush(producer, timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512MiB"), Ok(512 * 1024 * 1024));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("100MB"), Ok(100_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1.5k"), Ok(1500));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("0").is_err());
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }
}
