//! One `causeway` process owned by a test or a benchmark: spawned on free loopback ports with
//! its own working directory, its output in a log file, stopped with SIGTERM or SIGKILL.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::FutureProducer;
use tempfile::TempDir;

use crate::{admin_config, consumer_config, free_port, http_get, producer_config, raw};

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
    /// Run this binary instead of [`broker_binary`]'s.
    pub binary: Option<PathBuf>,
    /// Keep the log (and the data, unless `data_dir` says otherwise) in this directory, left in
    /// place when the process is dropped, instead of a temporary one.
    pub work_dir: Option<PathBuf>,
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

    /// Runs `binary` instead of the one next to the running executable.
    pub fn binary(mut self, binary: impl Into<PathBuf>) -> Self {
        self.binary = Some(binary.into());
        self
    }

    /// Keeps the log and the default data directory in `dir` (created if missing), which
    /// outlives the process.
    pub fn work_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.work_dir = Some(dir.into());
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
    // Keeps a temporary working directory (log file, default data directory) alive; `None` when
    // the options named a directory to keep.
    _temporary: Option<TempDir>,
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
        let binary = match options.binary {
            Some(binary) => binary,
            None => broker_binary()?,
        };
        let (work_dir, temporary) = match options.work_dir {
            Some(dir) => {
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("create {}", dir.display()))?;
                (dir, None)
            }
            None => {
                let temporary = tempfile::Builder::new()
                    .prefix("causeway-it-")
                    .tempdir()
                    .context("create temp dir")?;
                (temporary.path().to_path_buf(), Some(temporary))
            }
        };
        let data_dir = options.data_dir.unwrap_or_else(|| work_dir.join("data"));
        let log_path = work_dir.join("broker.stderr.log");
        Ok(BrokerProcess {
            binary,
            child: None,
            kafka_port,
            http_port,
            data_dir,
            log_path,
            extra_args: options.extra_args,
            _temporary: temporary,
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

    /// Resident memory of the running broker, from /proc.
    pub fn rss_bytes(&self) -> Result<u64> {
        rss_of(self.pid().context("the broker is not running")?)
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

/// Resident memory of process `pid`, from /proc (`VmRSS`).
pub fn rss_of(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS")?;
    Ok(kib * 1024)
}
