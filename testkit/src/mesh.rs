//! Meshes of regions: N `causeway` processes that list each other as peers, on ports allocated
//! before any of them starts (every region must know every peer's address up front), optionally
//! with a link routed through a proxy.
//!
//! ```no_run
//! # use causeway_testkit::mesh::{MeshPlan, with_mesh};
//! with_mesh(MeshPlan::new(&["eu", "us", "ap"]).unwrap(), |mesh| {
//!     let eu = mesh.region(0);
//!     // ... produce in one region, consume in another ...
//!     Ok(())
//! });
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{free_port, http_get, BrokerOptions, BrokerProcess, STARTUP_TIMEOUT};

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
    binary: Option<PathBuf>,
    work_root: Option<PathBuf>,
}

impl MeshPlan {
    /// One region per name, every one a peer of every other, all with [`MESH_SECRET`]; the
    /// Kafka and HTTP ports are allocated now.
    pub fn new(names: &[&str]) -> Result<MeshPlan> {
        // `free_port` never hands out a port twice, so the regions' ports are distinct.
        let kafka_ports = names.iter().map(|_| free_port()).collect::<Result<_>>()?;
        let http_ports = names.iter().map(|_| free_port()).collect::<Result<_>>()?;
        Ok(MeshPlan {
            names: names.iter().map(|n| n.to_string()).collect(),
            kafka_ports,
            http_ports,
            secrets: vec![MESH_SECRET.to_string(); names.len()],
            extra_args: vec![Vec::new(); names.len()],
            routes: BTreeMap::new(),
            binary: None,
            work_root: None,
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

    /// Appends `args` as they are to region `i`'s command line.
    pub fn args(mut self, i: usize, args: &[String]) -> Self {
        self.extra_args[i].extend(args.iter().cloned());
        self
    }

    /// Every region runs `binary` instead of the one next to the running executable.
    pub fn binary(mut self, binary: impl Into<PathBuf>) -> Self {
        self.binary = Some(binary.into());
        self
    }

    /// Region `i` keeps its log and data in `root/<name>`, which outlives the mesh, instead of a
    /// temporary directory.
    pub fn work_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.work_root = Some(root.into());
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
        if let Some(binary) = &self.binary {
            options = options.binary(binary);
        }
        if let Some(root) = &self.work_root {
            options = options.work_dir(root.join(&self.names[i]));
        }
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

    /// Waits until every region reports every link `connected` in `/v1/regions`.
    pub fn wait_links_connected(&self, timeout: Duration) -> Result<()> {
        self.wait_all("every link connected", timeout, |region| {
            let status = regions_status(region)?;
            Ok(status["peers"]
                .as_array()
                .is_some_and(|peers| peers.iter().all(|p| p["state"] == "connected")))
        })
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
