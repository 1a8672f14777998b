//! Multi-region meshes for the replication tests: N `causeway` processes that list each other as
//! peers, on ports allocated before any of them starts (every region must know every peer's
//! address up front), optionally with a link routed through a [`crate::proxy::CuttingProxy`].
//!
//! ```no_run
//! # use causeway_integration_tests::regions::{MeshPlan, with_mesh};
//! with_mesh(MeshPlan::new(&["eu", "us", "ap"]).unwrap(), |mesh| {
//!     let eu = mesh.region(0);
//!     // ... produce in one region, consume in another ...
//!     Ok(())
//! });
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::Offset;
use serde_json::Value;

use crate::{
    assign, consumer_config, free_port, http_get, BrokerOptions, BrokerProcess, STARTUP_TIMEOUT,
};

/// The replication secret meshes share unless a test overrides it.
pub const MESH_SECRET: &str = "causeway-it-shared-secret";

/// How long a test waits for regions to converge after the last write.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);

/// What to start: region names, their pre-allocated ports, secrets, extra flags and per-link
/// peer address overrides.
#[derive(Debug, Clone)]
pub struct MeshPlan {
    names: Vec<String>,
    kafka_ports: Vec<u16>,
    http_ports: Vec<u16>,
    secrets: Vec<String>,
    extra_args: Vec<Vec<String>>,
    routes: BTreeMap<(usize, usize), SocketAddr>,
}

impl MeshPlan {
    /// One region per name, every one a peer of every other, all with [`MESH_SECRET`]; the
    /// Kafka and HTTP ports are allocated now.
    pub fn new(names: &[&str]) -> Result<MeshPlan> {
        let mut kafka_ports = Vec::new();
        let mut http_ports = Vec::new();
        let mut taken = BTreeSet::new();
        while kafka_ports.len() < names.len() {
            let (k, h) = (free_port()?, free_port()?);
            if k != h && taken.insert(k) && taken.insert(h) {
                kafka_ports.push(k);
                http_ports.push(h);
            }
        }
        Ok(MeshPlan {
            names: names.iter().map(|n| n.to_string()).collect(),
            kafka_ports,
            http_ports,
            secrets: vec![MESH_SECRET.to_string(); names.len()],
            extra_args: vec![Vec::new(); names.len()],
            routes: BTreeMap::new(),
        })
    }

    /// The Kafka listener region `i` will bind.
    pub fn kafka_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.kafka_ports[i]))
    }

    /// Region `i` presents (and expects) `secret` instead of the shared one.
    pub fn secret(mut self, i: usize, secret: &str) -> Self {
        self.secrets[i] = secret.to_string();
        self
    }

    /// Appends `--flag value` to region `i`'s command line.
    pub fn flag(mut self, i: usize, flag: &str, value: impl ToString) -> Self {
        self.extra_args[i].push(flag.to_string());
        self.extra_args[i].push(value.to_string());
        self
    }

    /// Region `from` reaches peer `to` at `addr` (a proxy in front of `to`) instead of `to`'s
    /// own Kafka listener.
    pub fn route(mut self, from: usize, to: usize, addr: SocketAddr) -> Self {
        self.routes.insert((from, to), addr);
        self
    }

    /// The broker options of region `i`.
    fn options(&self, i: usize) -> BrokerOptions {
        let mut options = BrokerOptions::new()
            .flag("--region", &self.names[i])
            .flag("--replication-secret", &self.secrets[i]);
        for (j, name) in self.names.iter().enumerate() {
            if j != i {
                let addr = self
                    .routes
                    .get(&(i, j))
                    .copied()
                    .unwrap_or_else(|| self.kafka_addr(j));
                options = options.flag("--peer", format!("{name}@{addr}"));
            }
        }
        options
            .extra_args
            .extend(self.extra_args[i].iter().cloned());
        options
    }

    /// Spawns every region at once, then waits until each is ready.
    pub fn start(self) -> Result<Mesh> {
        let mut regions = Vec::new();
        for i in 0..self.names.len() {
            regions.push(BrokerProcess::spawn_on(
                self.options(i),
                self.kafka_ports[i],
                self.http_ports[i],
            )?);
        }
        let mut mesh = Mesh {
            names: self.names.clone(),
            regions,
        };
        for (i, region) in mesh.regions.iter_mut().enumerate() {
            region
                .wait_ready(STARTUP_TIMEOUT)
                .with_context(|| format!("region {} did not start", self.names[i]))?;
        }
        Ok(mesh)
    }
}

/// Running regions. Dropping it kills them; during a panic it first prints every region's
/// `/v1/regions` (each broker then prints its stderr tail).
pub struct Mesh {
    names: Vec<String>,
    regions: Vec<BrokerProcess>,
}

impl Mesh {
    /// Region `i`.
    pub fn region(&self, i: usize) -> &BrokerProcess {
        &self.regions[i]
    }

    /// Region `i`, to kill or restart it.
    pub fn region_mut(&mut self, i: usize) -> &mut BrokerProcess {
        &mut self.regions[i]
    }

    /// Name of region `i`.
    pub fn name(&self, i: usize) -> &str {
        &self.names[i]
    }

    /// Number of regions.
    pub fn len(&self) -> usize {
        self.regions.len()
    }

    /// Whether the mesh has no region.
    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    /// Every region's `/v1/regions` (or why it could not be read), one block per region.
    pub fn diagnostics(&self) -> String {
        let mut out = String::new();
        for (name, region) in self.names.iter().zip(&self.regions) {
            let status = match http_get(region.http_addr(), "/v1/regions") {
                Ok((code, body)) => format!("{code} {body}"),
                Err(e) => format!("unreadable: {e:#}"),
            };
            out.push_str(&format!(
                "----- region {name} (kafka {}, log {}): /v1/regions -----\n{status}\n",
                region.bootstrap(),
                region.log_path().display()
            ));
        }
        out
    }

    /// Lines of every region's stderr that contain `needle`, prefixed with the region's name.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.names
            .iter()
            .zip(&self.regions)
            .flat_map(|(name, region)| {
                region
                    .stderr()
                    .lines()
                    .filter(|l| l.contains(needle))
                    .map(|l| format!("{name}: {l}"))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Fails if any region refused or dropped a replicated batch (bad metadata, a malformed
    /// batch, or one its log would not hold): with sane clocks and honest peers that never
    /// happens.
    pub fn ensure_no_batch_refusals(&self) -> Result<()> {
        for (name, region) in self.names.iter().zip(&self.regions) {
            for reason in [
                "batch_metadata",
                "bad_batch",
                "log_refused",
                "malformed_response",
            ] {
                let n = metric_sum(
                    region,
                    "causeway_replication_refused_total",
                    &format!("reason=\"{reason}\""),
                )?;
                if n != 0.0 {
                    bail!(
                        "{name} counted {n} replication refusals for {reason}:\n{}",
                        self.log_lines("replicated batches not applied").join("\n")
                    );
                }
            }
        }
        Ok(())
    }

    /// Waits until `cond` holds in every region (checked region by region, each with the time
    /// left); fails naming the first region where it did not.
    pub fn wait_all(
        &self,
        what: &str,
        timeout: Duration,
        mut cond: impl FnMut(&BrokerProcess) -> Result<bool>,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        for (name, region) in self.names.iter().zip(&self.regions) {
            loop {
                let last = match cond(region) {
                    Ok(true) => break,
                    Ok(false) => None,
                    Err(e) => Some(e),
                };
                if Instant::now() > deadline {
                    bail!(
                        "{what}: not true in region {name} within {timeout:?}{}",
                        last.map(|e| format!(" (last error: {e:#})"))
                            .unwrap_or_default()
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.diagnostics());
        }
    }
}

/// Starts `plan`, runs `body` against the mesh, and panics with the error if the body fails
/// (every region's `/v1/regions` and stderr tail are printed while the mesh is dropped).
pub fn with_mesh(plan: MeshPlan, body: impl FnOnce(&mut Mesh) -> Result<()>) {
    let mut mesh = match plan.start() {
        Ok(m) => m,
        Err(e) => panic!("mesh failed to start: {e:#}"),
    };
    if let Err(e) = body(&mut mesh) {
        panic!("{e:#}");
    }
}

/// `GET /v1/regions` of a region, parsed.
pub fn regions_status(broker: &BrokerProcess) -> Result<Value> {
    let (code, body) = http_get(broker.http_addr(), "/v1/regions")?;
    if code != 200 {
        bail!("/v1/regions answered {code}: {body}");
    }
    serde_json::from_str(&body).with_context(|| format!("/v1/regions body {body:?}"))
}

/// The peer named `name` in a `/v1/regions` report.
pub fn peer_status<'a>(status: &'a Value, name: &str) -> Option<&'a Value> {
    status["peers"]
        .as_array()?
        .iter()
        .find(|p| p["name"].as_str() == Some(name))
}

/// The value of one sample of `/metrics`, e.g.
/// `causeway_replication_link_up{peer="us"}` (labels exactly as the broker prints them), or
/// `None` if the series is absent.
pub fn metric(broker: &BrokerProcess, series: &str) -> Result<Option<f64>> {
    let (code, body) = http_get(broker.http_addr(), "/metrics")?;
    if code != 200 {
        bail!("/metrics answered {code}");
    }
    Ok(body.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    }))
}

/// Sum of every sample of a metric family whose labels contain `label` (e.g. `reason="x"`; empty
/// matches all).
pub fn metric_sum(broker: &BrokerProcess, family: &str, label: &str) -> Result<f64> {
    let (code, body) = http_get(broker.http_addr(), "/metrics")?;
    if code != 200 {
        bail!("/metrics answered {code}");
    }
    Ok(body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let rest = series.strip_prefix(family)?;
            if !(rest.is_empty() || rest.starts_with('{')) || !rest.contains(label) {
                return None;
            }
            value.parse::<f64>().ok()
        })
        .sum())
}

/// Number of records in each of a topic's partitions (high watermark minus low watermark).
pub fn partition_counts(broker: &BrokerProcess, topic: &str, partitions: i32) -> Result<Vec<i64>> {
    let consumer: BaseConsumer = consumer_config(&broker.bootstrap()).create()?;
    (0..partitions)
        .map(|p| {
            let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(5))?;
            Ok(high - low)
        })
        .collect()
}

/// Reads every record of one partition from the beginning up to the high watermark read first
/// (so records arriving meanwhile may be missed, never waited for).
pub fn read_all(broker: &BrokerProcess, topic: &str, partition: i32) -> Result<Vec<OwnedMessage>> {
    let consumer: BaseConsumer = consumer_config(&broker.bootstrap())
        .set("enable.partition.eof", "true")
        .create()?;
    let (low, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
    let mut out = Vec::new();
    if high <= low {
        return Ok(out);
    }
    assign(&consumer, &[(topic, partition, Offset::Beginning)])?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while out
        .last()
        .is_none_or(|m: &OwnedMessage| m.offset() < high - 1)
    {
        if Instant::now() > deadline {
            bail!(
                "{topic}-{partition}: read {} of {} records within 30 s",
                out.len(),
                high - low
            );
        }
        match consumer.poll(Duration::from_millis(100)) {
            None | Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => {}
            Some(Ok(m)) => out.push(m.detach()),
            Some(Err(e)) => bail!(
                "{topic}-{partition}: consumer error after {} records: {e}",
                out.len()
            ),
        }
    }
    Ok(out)
}

/// Polls a partition of one region until a record with payload `payload` shows up; returns its
/// offset.
pub fn wait_for_payload(
    broker: &BrokerProcess,
    topic: &str,
    partition: i32,
    payload: &str,
    timeout: Duration,
) -> Result<i64> {
    let consumer: BaseConsumer = consumer_config(&broker.bootstrap()).create()?;
    assign(&consumer, &[(topic, partition, Offset::Beginning)])?;
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            None | Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => {}
            Some(Ok(m)) => {
                if m.payload() == Some(payload.as_bytes()) {
                    return Ok(m.offset());
                }
            }
            Some(Err(e)) => bail!("{topic}-{partition}: consumer error: {e}"),
        }
    }
    Err(anyhow!(
        "{payload:?} did not show up in {topic}-{partition} at {} within {timeout:?}",
        broker.bootstrap()
    ))
}
