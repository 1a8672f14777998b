//! Region join (`--seed-from NAME`): a three-region mesh under load, a fourth region joins and
//! ends with byte-identical tables and every batch still retained.
//!
//! Why: a region that joins late cannot get, batch by batch, what its peers' compaction merged
//! away or their retention deleted while it was absent (it was stale, so nothing waited for it):
//! the batches after them depend on them, so its links would stay behind forever. (Started
//! without `--seed-from`, d in the main test below serves no table row and buffers batches it
//! can never apply: the test fails at the first row.)
//! `--seed-from` makes the new region copy a peer's catalog and retained logs (compacted segments
//! with their causal metadata, plus the per-origin high water of what the peer removed) before it
//! serves clients or starts its links, then pull the rest like any region.
//!
//! What the main test checks, end to end with the real binary and librdkafka:
//! - regions a, b and c (configured with d as a fourth peer that never shows up, reported stale
//!   after `--region-stale-after-ms`) take concurrent writes to a CRDT table (keys incremented and
//!   patched over and over, plus rows put and deleted) and to a plain topic (unique values), and
//!   each of them compacts the table, so batches exist that no region can serve individually;
//! - d starts with `--seed-from a` while the writes go on: `/readyz` never answers 200 while
//!   `/v1/regions` says the seed is `copying`, and the seed ends `done` with every partition copied;
//! - after the writes stop, every table row is byte-identical in all four regions and holds every
//!   increment and the last patch of every writer, deleted rows are absent everywhere, whole scans
//!   are identical, and every plain record produced anywhere is in every region exactly once, in
//!   the partition it was written to;
//! - the regions settle (same clock, nothing buffered, every link connected with no lag, no batch
//!   refused), and d's seed counters and gauge report the copy.
//!
//! A second test checks that `--seed-from` on a data dir that already holds topics copies nothing
//! and leaves the region's own log as it was.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use causeway_integration_tests::regions::{
    metric, metric_sum, partition_counts, read_all, regions_status, through_proxy, with_mesh, Mesh,
    MeshPlan, CONVERGE_TIMEOUT, MESH_SECRET,
};
use causeway_integration_tests::{
    create_topic, free_port, http_get, payload_str, produce_all, topic_name, topic_partition_count,
    wait_until, BrokerOptions, BrokerProcess, TestRecord, STARTUP_TIMEOUT,
};
use rdkafka::message::Message;
use serde_json::Value;

/// The mesh: a, b and c run from the start, d joins later.
const NAMES: [&str; 4] = ["a", "b", "c", "d"];
/// The regions that run from the start and take writes.
const WRITERS: usize = 3;
/// Index of the joining region in [`NAMES`].
const JOINER: usize = 3;
/// The region d seeds from.
const SEED_SOURCE: usize = 0;
/// A peer silent this long is stale (d, absent, goes stale this long after a, b and c start);
/// well above any pause of a live link on a busy two-core machine.
const STALE_AFTER_MS: u64 = 3_000;
const TABLE_PARTITIONS: i32 = 3;
const PLAIN_PARTITIONS: i32 = 3;
/// Table rows every writer increments and patches each round.
const KEYS: usize = 8;
/// Table rows put and then deleted (by a) before the load.
const GONE_KEYS: usize = 3;
/// Plain records each writer produces each round.
const PLAIN_PER_ROUND: usize = 6;
/// Rounds (over all writers) still written once d is serving, so some writes reach d only by
/// its links.
const ROUNDS_AFTER_JOIN: u64 = 90;

/// Flags every region gets: maintenance (retention, compaction, segment rolls) five times a
/// second, topic overrides for tiny segments honoured, and a short stale bound.
fn common_flags() -> Vec<String> {
    [
        "--log-retention-check-interval-ms",
        "200",
        "--log-segment-bytes-min",
        "1",
        "--log-segment-ms-min",
        "0",
        "--region-stale-after-ms",
        &STALE_AFTER_MS.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Region a, b and c started now; each also lists d (at `joiner_kafka`) as a peer.
fn first_three(joiner_kafka: u16) -> MeshPlan {
    let mut plan = MeshPlan::new(&NAMES[..WRITERS]).expect("allocate ports");
    for i in 0..WRITERS {
        plan = plan.args(i, &common_flags()).flag(
            i,
            "--peer",
            format!("{}@127.0.0.1:{joiner_kafka}", NAMES[JOINER]),
        );
    }
    plan
}

/// What the plan would give region d (its name, the secret, a, b and c as peers, the common
/// flags), plus `extra`.
fn joiner_options(mesh: &Mesh, extra: &[&str]) -> BrokerOptions {
    let mut options = BrokerOptions::new()
        .flag("--region", NAMES[JOINER])
        .flag("--replication-secret", MESH_SECRET);
    for i in 0..mesh.len() {
        options = options.flag(
            "--peer",
            format!("{}@{}", mesh.name(i), mesh.region(i).kafka_addr()),
        );
    }
    options.extra_args.extend(common_flags());
    options
        .extra_args
        .extend(extra.iter().map(|s| s.to_string()));
    options
}

fn row_key(k: usize) -> String {
    format!("row{k}")
}

fn gone_key(k: usize) -> String {
    format!("gone{k}")
}

fn table_record(key: &str, value: Option<&str>, op: &str) -> TestRecord {
    let mut record = TestRecord {
        value: value.map(|v| v.as_bytes().to_vec()),
        ..Default::default()
    }
    .key(key);
    if value.is_some() {
        record = record.header("causeway.op", Some(op.as_bytes()));
    }
    record
}

/// `GET /v1/tables/{topic}/rows/{key}`: status and body as served.
fn row(broker: &BrokerProcess, topic: &str, key: &str) -> Result<(u16, String)> {
    http_get(
        broker.http_addr(),
        &format!("/v1/tables/{topic}/rows/{key}"),
    )
}

/// Every region of the run: a, b and c from the mesh, then d once it was started.
fn all_regions<'a>(mesh: &'a Mesh, joiner: &'a BrokerProcess) -> Vec<(&'a str, &'a BrokerProcess)> {
    (0..mesh.len())
        .map(|i| (mesh.name(i), mesh.region(i)))
        .chain([(NAMES[JOINER], joiner)])
        .collect()
}

/// Waits until `cond` holds in every one of `regions` (each with the time left).
fn wait_each(
    regions: &[(&str, &BrokerProcess)],
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut(&str, &BrokerProcess) -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    for (name, region) in regions {
        let mut last_error = None;
        let held = wait_until(
            deadline.saturating_duration_since(Instant::now()),
            || match cond(name, region) {
                Ok(held) => held,
                Err(e) => {
                    last_error = Some(e);
                    false
                }
            },
        );
        if !held {
            bail!(
                "{what}: not true in region {name} within {timeout:?}{}",
                last_error
                    .map(|e| format!(" (last error: {e:#})"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// What one writer wrote before it was stopped.
#[derive(Debug, Default)]
struct Written {
    /// Whole rounds written and acknowledged.
    rounds: u64,
    /// Every plain record acknowledged: (partition, value).
    plain: Vec<(i32, String)>,
}

/// Shared state of the writer threads.
#[derive(Default)]
struct Load {
    stop: AtomicBool,
    failed: AtomicBool,
    rounds: AtomicU64,
}

impl Load {
    /// Fails if a writer failed (the others are stopped then).
    fn check(&self) -> Result<()> {
        if self.failed.load(Ordering::SeqCst) {
            bail!("a writer failed (its error follows when the writers are joined)");
        }
        Ok(())
    }
}

/// Runs `during` while each of the first [`WRITERS`] regions writes rounds ([`write_rounds`]),
/// then stops the writers and returns what each wrote. A writer that fails stops the others; its
/// error is returned after `during`'s own.
fn with_writers<'m>(
    mesh: &'m Mesh,
    table: &str,
    plain: &str,
    load: &Load,
    during: impl FnOnce() -> Result<()>,
) -> Result<BTreeMap<&'m str, Written>> {
    std::thread::scope(|scope| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|i| {
                let (region, name) = (mesh.region(i), mesh.name(i));
                scope.spawn(move || {
                    let outcome = write_rounds(region, name, table, plain, load);
                    if outcome.is_err() {
                        load.failed.store(true, Ordering::SeqCst);
                        load.stop.store(true, Ordering::SeqCst);
                    }
                    (name, outcome)
                })
            })
            .collect();
        let outcome = during();
        load.stop.store(true, Ordering::SeqCst);
        let mut written = BTreeMap::new();
        let mut errors = Vec::new();
        for writer in writers {
            match writer.join() {
                Ok((name, Ok(w))) => {
                    written.insert(name, w);
                }
                Ok((name, Err(e))) => errors.push(format!("writer {name}: {e:#}")),
                Err(_) => errors.push("a writer thread panicked".to_string()),
            }
        }
        outcome?;
        if !errors.is_empty() {
            bail!("{}", errors.join("\n"));
        }
        Ok(written)
    })
}

/// Writes rounds to region `name` until stopped: per round, one increment and one patch of every
/// table row, and [`PLAIN_PER_ROUND`] unique plain records spread over the partitions.
fn write_rounds(
    region: &BrokerProcess,
    name: &str,
    table: &str,
    plain: &str,
    load: &Load,
) -> Result<Written> {
    let producer = region
        .producer_config()
        .set("acks", "all")
        .set("linger.ms", "2")
        .create()?;
    let mut written = Written::default();
    while !load.stop.load(Ordering::SeqCst) {
        let round = written.rounds;
        let mut rows = Vec::with_capacity(2 * KEYS);
        for k in 0..KEYS {
            let key = row_key(k);
            rows.push(table_record(
                &key,
                Some(&format!(r#"{{"hits":1,"per_region":{{"{name}":1}}}}"#)),
                "incr",
            ));
            rows.push(table_record(
                &key,
                Some(&format!(
                    r#"{{"by_{name}":{round},"last":"{name}-{round}"}}"#
                )),
                "patch",
            ));
        }
        produce_all(&producer, table, &rows)
            .with_context(|| format!("{name}: table writes of round {round}"))?;
        let values: Vec<(i32, String)> = (0..PLAIN_PER_ROUND)
            .map(|j| {
                (
                    i32::try_from(j).unwrap_or(0) % PLAIN_PARTITIONS,
                    format!("{name}-{round:06}-{j}"),
                )
            })
            .collect();
        let records: Vec<TestRecord> = values
            .iter()
            .map(|(p, v)| TestRecord::value(v.as_str()).partition(*p))
            .collect();
        produce_all(&producer, plain, &records)
            .with_context(|| format!("{name}: plain records of round {round}"))?;
        written.plain.extend(values);
        written.rounds += 1;
        load.rounds.fetch_add(1, Ordering::SeqCst);
        // Pace the writers so four brokers and their clients share two cores.
        std::thread::sleep(Duration::from_millis(25));
    }
    Ok(written)
}

/// Creates the table and plain topics in a, waits for them in b and c, puts every row that will
/// be written and puts then deletes the gone rows, and waits until a, b and c serve the rows.
fn prepare(mesh: &Mesh, table: &str, plain: &str) -> Result<()> {
    let a = mesh.region(0);
    create_topic(
        a,
        table,
        TABLE_PARTITIONS,
        &[
            ("cleanup.policy", "compact"),
            ("segment.bytes", "32768"),
            ("segment.ms", "1000"),
            ("delete.retention.ms", "2000"),
        ],
    )?;
    create_topic(a, plain, PLAIN_PARTITIONS, &[("segment.bytes", "8192")])?;
    for (topic, partitions) in [(table, TABLE_PARTITIONS), (plain, PLAIN_PARTITIONS)] {
        let want = usize::try_from(partitions)?;
        mesh.wait_all(
            &format!("topic {topic} with {want} partitions"),
            Duration::from_secs(20),
            |r| Ok(topic_partition_count(&r.bootstrap(), topic)? == Some(want)),
        )?;
    }
    let producer = a.producer_config().set("acks", "all").create()?;
    let mut first = Vec::new();
    for k in 0..KEYS {
        let key = row_key(k);
        first.push(table_record(
            &key,
            Some(&format!(r#"{{"name":"{key}"}}"#)),
            "put",
        ));
    }
    for k in 0..GONE_KEYS {
        first.push(table_record(
            &gone_key(k),
            Some(r#"{"soon":"deleted"}"#),
            "put",
        ));
    }
    produce_all(&producer, table, &first)?;
    let tombstones: Vec<TestRecord> = (0..GONE_KEYS)
        .map(|k| table_record(&gone_key(k), None, "put"))
        .collect();
    produce_all(&producer, table, &tombstones)?;
    // The puts come first everywhere, so no put races the increments and patches.
    mesh.wait_all("the first rows", Duration::from_secs(20), |r| {
        Ok(
            (0..KEYS).all(|k| row(r, table, &row_key(k)).is_ok_and(|(s, _)| s == 200))
                && (0..GONE_KEYS).all(|k| row(r, table, &gone_key(k)).is_ok_and(|(s, _)| s == 404)),
        )
    })
}

/// Waits until d is stale in a, b and c and each of them compacted the table (reclaimed bytes):
/// from then on batches exist that no region can serve d one by one.
fn wait_compacted_without_d(mesh: &Mesh, table: &str, load: &Load) -> Result<()> {
    let stale = format!(
        "causeway_replication_peer_stale{{peer=\"{}\"}}",
        NAMES[JOINER]
    );
    let topic_label = format!("topic=\"{table}\"");
    mesh.wait_all(
        "d reported stale and the table compacted",
        Duration::from_secs(40),
        |r| {
            load.check()?;
            let d_stale = metric(r, &stale)? == Some(1.0);
            let reclaimed =
                metric_sum(r, "causeway_compaction_bytes_reclaimed_total", &topic_label)?;
            Ok(d_stale && reclaimed > 0.0)
        },
    )
}

/// What was seen of d while it started.
struct JoinWatch {
    /// `/v1/regions` said `copying` at least once.
    saw_copying: bool,
}

/// Waits until d answers `/readyz` with 200, reading `/readyz` then `/v1/regions` in turn: once
/// ready, the seed must be over, so a 200 followed by a `copying` seed is a failure.
fn watch_the_join(d: &mut BrokerProcess, load: &Load) -> Result<JoinWatch> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    let mut saw_copying = false;
    let mut last_seed = Value::Null;
    loop {
        load.check()?;
        if !d.is_running() {
            bail!("d exited while it joined");
        }
        let ready = matches!(http_get(d.http_addr(), "/readyz"), Ok((200, _)));
        if let Ok((200, body)) = http_get(d.http_addr(), "/v1/regions") {
            let status: Value =
                serde_json::from_str(&body).with_context(|| format!("/v1/regions {body:?}"))?;
            if status["seed"]["state"] == "copying" {
                saw_copying = true;
                if ready {
                    bail!("d answered /readyz 200 while its seed was still copying: {body}");
                }
            }
            last_seed = status["seed"].clone();
        }
        if ready {
            return Ok(JoinWatch { saw_copying });
        }
        if Instant::now() > deadline {
            bail!("d was not ready within {STARTUP_TIMEOUT:?}; last seed report: {last_seed}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The row every region must end with for `key`, given each writer's rounds: every increment and
/// every writer's last patch.
fn row_is_complete(key: &str, value: &Value, rounds: &BTreeMap<&str, u64>) -> bool {
    let hits: u64 = rounds.values().sum();
    value["name"].as_str() == Some(key)
        && value["hits"].as_u64() == Some(hits)
        && rounds.iter().all(|(name, n)| {
            value["per_region"][*name].as_u64() == Some(*n)
                && value[format!("by_{name}")].as_u64() == Some(n - 1)
        })
        && rounds
            .iter()
            .any(|(name, n)| value["last"].as_str() == Some(&format!("{name}-{}", n - 1)))
}

/// Every row byte-identical in every region and complete, deleted rows absent everywhere, and
/// whole scans identical.
fn wait_tables_identical(
    regions: &[(&str, &BrokerProcess)],
    table: &str,
    rounds: &BTreeMap<&str, u64>,
) -> Result<()> {
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    for k in 0..KEYS {
        let key = row_key(k);
        loop {
            let answers: Vec<(u16, String)> = regions
                .iter()
                .map(|(_, r)| row(r, table, &key))
                .collect::<Result<_>>()?;
            let same = answers.iter().all(|a| a == &answers[0]);
            if same && answers[0].0 == 200 {
                let v: Value = serde_json::from_str(&answers[0].1)
                    .with_context(|| format!("row {key}: {}", answers[0].1))?;
                if row_is_complete(&key, &v["value"], rounds) {
                    break;
                }
            }
            if Instant::now() > deadline {
                let shown: Vec<String> = regions
                    .iter()
                    .zip(&answers)
                    .map(|((name, _), (status, body))| format!("{name}: {status} {body}"))
                    .collect();
                bail!(
                    "row {key} is not the same complete row everywhere (rounds written {rounds:?}):\n{}",
                    shown.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    for k in 0..GONE_KEYS {
        let key = gone_key(k);
        for (name, r) in regions {
            let (status, body) = row(r, table, &key)?;
            if status != 404 {
                bail!("deleted row {key} is back in {name}: {status} {body}");
            }
        }
    }
    for query in ["?limit=1000", "?prefix=row&limit=1000"] {
        let scans: Vec<(u16, String)> = regions
            .iter()
            .map(|(_, r)| http_get(r.http_addr(), &format!("/v1/tables/{table}/rows{query}")))
            .collect::<Result<_>>()?;
        if scans[0].0 != 200 || scans.iter().any(|s| s != &scans[0]) {
            let shown: Vec<String> = regions
                .iter()
                .zip(&scans)
                .map(|((name, _), (status, body))| format!("{name}: {status} {body}"))
                .collect();
            bail!("scans {query} differ:\n{}", shown.join("\n"));
        }
        let page: Value = serde_json::from_str(&scans[0].1)?;
        let rows = page["rows"].as_array().map_or(0, Vec::len);
        if rows != KEYS {
            bail!(
                "scan {query} holds {rows} rows, expected {KEYS}: {}",
                scans[0].1
            );
        }
    }
    Ok(())
}

/// Every plain record acknowledged anywhere is in every region exactly once, in its partition.
fn wait_plain_identical(
    regions: &[(&str, &BrokerProcess)],
    plain: &str,
    written: &[(i32, String)],
) -> Result<()> {
    let mut expected: BTreeMap<i32, Vec<&str>> = BTreeMap::new();
    for (p, v) in written {
        expected.entry(*p).or_default().push(v.as_str());
    }
    let counts: Vec<i64> = (0..PLAIN_PARTITIONS)
        .map(|p| expected.get(&p).map_or(0, |v| v.len() as i64))
        .collect();
    let mut last: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    wait_each(
        regions,
        &format!("every plain record in {plain}"),
        CONVERGE_TIMEOUT,
        |name, r| {
            let got = partition_counts(r, plain, PLAIN_PARTITIONS)?;
            if got.iter().zip(&counts).any(|(g, c)| g > c) {
                bail!(
                    "{name} holds {got:?} records per partition, more than the {counts:?} produced"
                );
            }
            last.insert(name.to_string(), got.clone());
            Ok(got == counts)
        },
    )
    .with_context(|| format!("records per partition produced {counts:?}, held {last:?}"))?;
    for (name, r) in regions {
        for p in 0..PLAIN_PARTITIONS {
            let mut held: Vec<String> = read_all(r, plain, p)?.iter().map(payload_str).collect();
            held.sort_unstable();
            let mut want: Vec<&str> = expected.get(&p).cloned().unwrap_or_default();
            want.sort_unstable();
            if held != want {
                let held_set: BTreeSet<&str> = held.iter().map(String::as_str).collect();
                let want_set: BTreeSet<&str> = want.iter().copied().collect();
                let missing: Vec<&&str> = want_set.difference(&held_set).take(10).collect();
                let extra: Vec<&&str> = held_set.difference(&want_set).take(10).collect();
                bail!(
                    "{name} {plain}-{p}: {} records, {} produced; missing (first 10) {missing:?}, \
                     unexpected (first 10) {extra:?}",
                    held.len(),
                    want.len()
                );
            }
        }
    }
    Ok(())
}

/// Every region shows the same clock, nothing buffered, and every link connected with no lag.
fn wait_settled(regions: &[(&str, &BrokerProcess)]) -> Result<()> {
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    loop {
        let statuses: Vec<Value> = regions
            .iter()
            .map(|(_, r)| regions_status(r))
            .collect::<Result<_>>()?;
        let mut problems = Vec::new();
        for ((name, _), s) in regions.iter().zip(&statuses) {
            if s["clock"] != statuses[0]["clock"] {
                problems.push(format!(
                    "{name}'s clock {} differs from {}'s {}",
                    s["clock"], regions[0].0, statuses[0]["clock"]
                ));
            }
            if s["buffered_batches"].as_u64() != Some(0) {
                problems.push(format!("{name} buffers {}", s["buffered_batches"]));
            }
            for p in s["peers"].as_array().into_iter().flatten() {
                if p["state"] != "connected" || p["lag_batches"].as_u64() != Some(0) {
                    problems.push(format!("{name}'s link to {}: {p}", p["name"]));
                }
            }
        }
        if problems.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the regions did not settle:\n{}", problems.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// No region refused or dropped a replicated batch.
fn ensure_no_refusals(regions: &[(&str, &BrokerProcess)]) -> Result<()> {
    for (name, r) in regions {
        let refused = metric_sum(r, "causeway_replication_refused_total", "")?;
        if refused != 0.0 {
            let (_, metrics) = http_get(r.http_addr(), "/metrics")?;
            let lines: Vec<&str> = metrics
                .lines()
                .filter(|l| l.starts_with("causeway_replication_refused_total"))
                .collect();
            bail!("{name} refused replicated batches:\n{}", lines.join("\n"));
        }
    }
    Ok(())
}

/// d's `/v1/regions` reports a finished seed from a covering at least the test's partitions, and
/// its seed metrics agree.
fn check_seed_report(d: &BrokerProcess) -> Result<()> {
    let status = regions_status(d)?;
    let seed = &status["seed"];
    let from = NAMES[SEED_SOURCE];
    let total = seed["partitions_total"].as_u64().unwrap_or(0);
    let done = seed["partitions_done"].as_u64();
    let batches = seed["batches"].as_u64().unwrap_or(0);
    let bytes = seed["bytes"].as_u64().unwrap_or(0);
    let ours = u64::try_from(TABLE_PARTITIONS + PLAIN_PARTITIONS)?;
    if seed["from"] != from
        || seed["state"] != "done"
        || total < ours
        || done != Some(total)
        || batches == 0
        || bytes == 0
    {
        bail!("d's seed report is not a finished copy of {ours} partitions or more from {from}: {seed}");
    }
    let seed_batches = metric_sum(d, "causeway_replication_seed_batches_total", "")?;
    let seed_bytes = metric_sum(d, "causeway_replication_seed_bytes_total", "")?;
    let remaining = metric_sum(d, "causeway_replication_seed_partitions_remaining", "")?;
    if seed_batches <= 0.0 || seed_bytes <= 0.0 {
        bail!("d's seed metrics: {seed_batches} batches, {seed_bytes} bytes");
    }
    if seed_batches != batches as f64 || seed_bytes != bytes as f64 {
        bail!(
            "d's seed metrics ({seed_batches} batches, {seed_bytes} bytes) differ from /v1/regions: {seed}"
        );
    }
    if remaining != 0.0 {
        bail!(
            "causeway_replication_seed_partitions_remaining is {remaining} after the seed: {seed}"
        );
    }
    Ok(())
}

/// Pulls each region counted from d for batches it no longer holds (diagnostics only: another
/// region may serve what one of them compacted).
fn deleted_asked_by_d(mesh: &Mesh) -> String {
    (0..mesh.len())
        .map(|i| {
            let n = metric(
                mesh.region(i),
                &format!(
                    "causeway_replication_deleted_asked_total{{peer=\"{}\"}}",
                    NAMES[JOINER]
                ),
            );
            let n = match n {
                Ok(Some(n)) => n.to_string(),
                Ok(None) => "none".to_string(),
                Err(e) => format!("unreadable ({e:#})"),
            };
            format!("{}: {n}", mesh.name(i))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Appends the `/v1/regions` and stderr tail of a region started outside the mesh to a failure
/// (the mesh prints its own regions itself).
fn with_joiner_diagnostics(
    outcome: Result<()>,
    name: &str,
    joiner: Option<&BrokerProcess>,
) -> Result<()> {
    outcome.map_err(|e| match joiner {
        Some(d) => {
            let status = http_get(d.http_addr(), "/v1/regions")
                .map(|(code, body)| format!("{code} {body}"))
                .unwrap_or_else(|e| format!("unreadable: {e:#}"));
            anyhow!(
                "{e:#}\n----- region {name} (log {}): /v1/regions -----\n{status}\n----- {name}'s stderr, last 80 lines -----\n{}",
                d.log_path().display(),
                d.stderr_tail(80)
            )
        }
        None => e,
    })
}

#[test]
fn a_fourth_region_joins_a_loaded_mesh_and_converges() {
    let started = Instant::now();
    let joiner_kafka = free_port().expect("a port for d");
    let joiner_http = free_port().expect("a port for d");
    with_mesh(first_three(joiner_kafka), |mesh| {
        let table = topic_name("join-table");
        let plain = topic_name("join-plain");
        prepare(mesh, &table, &plain)?;
        if !regions_status(mesh.region(SEED_SOURCE))?["seed"].is_null() {
            bail!("a, started without --seed-from, reports a seed");
        }
        let load = Load::default();
        let mut joiner: Option<BrokerProcess> = None;
        let outcome = with_writers(mesh, &table, &plain, &load, || {
            wait_compacted_without_d(mesh, &table, &load)?;
            eprintln!(
                "{:?}: d is stale and a, b and c compacted {table} after {} rounds; d joins",
                started.elapsed(),
                load.rounds.load(Ordering::SeqCst)
            );
            let options = joiner_options(mesh, &["--seed-from", NAMES[SEED_SOURCE]]);
            let d = joiner.insert(BrokerProcess::spawn_on(options, joiner_kafka, joiner_http)?);
            let watch = watch_the_join(d, &load)?;
            eprintln!(
                "{:?}: d is ready (seed seen copying: {})",
                started.elapsed(),
                watch.saw_copying
            );
            let mut last_seed = Value::Null;
            let done = wait_until(Duration::from_secs(10), || {
                regions_status(d).is_ok_and(|s| {
                    last_seed = s["seed"].clone();
                    last_seed["state"] == "done"
                })
            });
            if !done {
                bail!("d is ready but its seed is not done: {last_seed}");
            }
            // Writes go on once d serves, so some reach it only through its links.
            let at_join = load.rounds.load(Ordering::SeqCst);
            let more = wait_until(Duration::from_secs(30), || {
                load.failed.load(Ordering::SeqCst)
                    || load.rounds.load(Ordering::SeqCst) >= at_join + ROUNDS_AFTER_JOIN
            });
            load.check()?;
            if !more {
                bail!("the writers did not write {ROUNDS_AFTER_JOIN} rounds after d joined");
            }
            Ok(())
        });
        let outcome = outcome.and_then(|written| {
            let d = joiner
                .as_ref()
                .ok_or_else(|| anyhow!("d was not started"))?;
            let rounds: BTreeMap<&str, u64> = written.iter().map(|(n, w)| (*n, w.rounds)).collect();
            eprintln!(
                "{:?}: writers stopped after rounds {rounds:?}; checking convergence",
                started.elapsed()
            );
            if rounds.values().any(|&n| n == 0) {
                bail!("a writer wrote no round: {rounds:?}");
            }
            let regions = all_regions(mesh, d);
            wait_tables_identical(&regions, &table, &rounds)?;
            let plain_written: Vec<(i32, String)> =
                written.values().flat_map(|w| w.plain.clone()).collect();
            wait_plain_identical(&regions, &plain, &plain_written)?;
            wait_settled(&regions)?;
            ensure_no_refusals(&regions)?;
            check_seed_report(d)?;
            eprintln!(
                "{:?}: converged; pulls from d for batches no longer held: {}",
                started.elapsed(),
                deleted_asked_by_d(mesh)
            );
            Ok(())
        });
        with_joiner_diagnostics(outcome, NAMES[JOINER], joiner.as_ref()).with_context(|| {
            format!(
                "pulls from d for batches no longer held: {}",
                deleted_asked_by_d(mesh)
            )
        })
    });
}

/// `--seed-from` on a data dir that already holds topics copies nothing: the region's own log
/// keeps its records at their offsets, and it catches up by its links like any restarted region.
#[test]
fn seeding_a_data_dir_that_already_holds_topics_does_nothing() {
    let plan = MeshPlan::new(&["x", "y"]).expect("allocate ports");
    with_mesh(plan, |mesh| {
        let topic = topic_name("seeded-twice");
        create_topic(mesh.region(0), &topic, 1, &[])?;
        mesh.wait_all("the topic", Duration::from_secs(20), |r| {
            Ok(topic_partition_count(&r.bootstrap(), &topic)? == Some(1))
        })?;
        let before: Vec<String> = (0..5).map(|i| format!("x-before-{i}")).collect();
        let records: Vec<TestRecord> = before
            .iter()
            .map(|v| TestRecord::value(v.as_str()))
            .collect();
        produce_all(&mesh.region(0).producer(), &topic, &records)?;
        mesh.wait_all("x's records", Duration::from_secs(20), |r| {
            Ok(partition_counts(r, &topic, 1)? == [5])
        })?;
        let x_log = |r: &BrokerProcess| -> Result<Vec<(i64, String)>> {
            Ok(read_all(r, &topic, 0)?
                .iter()
                .map(|m| (m.offset(), payload_str(m)))
                .collect())
        };
        let x_before = x_log(mesh.region(0))?;

        // x stops; y takes writes x lacks; x starts again on its own data dir, told to seed.
        let (kafka_port, http_port) = (
            mesh.region(0).kafka_addr().port(),
            mesh.region(0).http_addr().port(),
        );
        let data_dir = mesh.region(0).data_dir().to_path_buf();
        mesh.region_mut(0).terminate()?;
        let later: Vec<String> = (0..3).map(|i| format!("y-while-x-away-{i}")).collect();
        let records: Vec<TestRecord> = later
            .iter()
            .map(|v| TestRecord::value(v.as_str()))
            .collect();
        produce_all(&mesh.region(1).producer(), &topic, &records)?;
        let options = BrokerOptions::new()
            .flag("--region", "x")
            .flag("--replication-secret", MESH_SECRET)
            .flag("--peer", format!("y@{}", mesh.region(1).kafka_addr()))
            .flag("--seed-from", "y")
            .data_dir(&data_dir);
        let mut x = BrokerProcess::spawn_on(options, kafka_port, http_port)?;
        let outcome = (|| -> Result<()> {
            x.wait_ready(STARTUP_TIMEOUT)?;
            let caught_up = wait_until(CONVERGE_TIMEOUT, || {
                partition_counts(&x, &topic, 1).is_ok_and(|c| c == [8])
            });
            if !caught_up {
                bail!(
                    "x holds {:?} records after restarting, expected 8",
                    partition_counts(&x, &topic, 1)
                );
            }
            let x_after = x_log(&x)?;
            if x_after[..x_before.len()] != x_before[..] {
                bail!("x's log changed under --seed-from: before {x_before:?}, after {x_after:?}");
            }
            let mut tail: Vec<String> = x_after[x_before.len()..]
                .iter()
                .map(|(_, v)| v.clone())
                .collect();
            tail.sort_unstable();
            if tail != later {
                bail!("x's log after its own records: {tail:?}, expected {later:?}");
            }
            let seed_batches = metric_sum(&x, "causeway_replication_seed_batches_total", "")?;
            let seed = regions_status(&x)?["seed"].clone();
            if seed_batches != 0.0 || seed["batches"].as_u64().is_some_and(|n| n > 0) {
                bail!("x copied batches into a data dir that held topics: {seed_batches} counted, seed report {seed}");
            }
            // The seed that was asked for and not done is logged.
            if !x.stderr().contains("not seeding") {
                bail!("x did not log that it skipped the seed");
            }
            Ok(())
        })();
        with_joiner_diagnostics(outcome, "x", Some(&x))
    });
}

/// Without `--seed-from`, a region joining a mesh that compacted what it lacks cannot catch up by
/// pulls; the regions it pulls from must say so loudly (metric and error log, by name), not let
/// it wait silently.
#[test]
fn a_region_joining_a_compacted_mesh_without_a_seed_is_reported() {
    let joiner_kafka = free_port().expect("a port for d");
    let joiner_http = free_port().expect("a port for d");
    with_mesh(first_three(joiner_kafka), |mesh| {
        let table = topic_name("unseeded-table");
        let plain = topic_name("unseeded-plain");
        prepare(mesh, &table, &plain)?;
        let load = Load::default();
        with_writers(mesh, &table, &plain, &load, || {
            wait_compacted_without_d(mesh, &table, &load)
        })?;
        let d = BrokerProcess::spawn_on(joiner_options(mesh, &[]), joiner_kafka, joiner_http)?;
        let deleted_asked = format!(
            "causeway_replication_deleted_asked_total{{peer=\"{}\"}}",
            NAMES[JOINER]
        );
        let reported = wait_until(Duration::from_secs(30), || {
            (0..WRITERS).any(|i| {
                metric(mesh.region(i), &deleted_asked).is_ok_and(|v| v.unwrap_or(0.0) > 0.0)
            })
        });
        drop(d);
        if !reported {
            bail!("no region reported that d asks for batches it compacted away");
        }
        let logged = mesh.log_lines("re-seed");
        if logged.is_empty() {
            bail!("the report names no re-seed in the logs");
        }
        Ok(())
    });
}

/// A region wiped and seeded again from a peer that lacks some of its batches (the peer last
/// heard it hold them durably) is refused: seeding would renumber its own batches the peer lacks
/// or lose others. The seed stops with the reason, and the partial copy is never served.
#[test]
fn seeding_from_a_peer_that_lacks_what_the_region_held_is_refused() {
    let plan = MeshPlan::new(&["x", "y"]).expect("a plan");
    let (plan, proxy) = through_proxy(plan, 1, 0).expect("a proxy towards x");
    with_mesh(plan, |mesh| {
        let topic = topic_name("reseed");
        let producer = mesh
            .region(0)
            .producer_config()
            .set("acks", "all")
            .create()?;
        produce_all(&producer, &topic, &[TestRecord::value("first")])?;
        mesh.wait_all("x's first record in y", Duration::from_secs(20), |r| {
            Ok(regions_status(r)?["clock"]["x"].as_u64() == Some(1))
        })?;
        // y can no longer pull from x, while x still pulls from y and tells it what x holds.
        proxy.cut_until_restored();
        produce_all(&producer, &topic, &[TestRecord::value("second")])?;
        let y_knows = wait_until(Duration::from_secs(20), || {
            regions_status(mesh.region(1)).is_ok_and(|s| {
                s["peers"][0]["lag_batches"]
                    .as_u64()
                    .is_some_and(|lag| lag > 0)
            })
        });
        if !y_knows {
            bail!("y never heard that x holds a batch it lacks");
        }
        let (kafka, http) = (
            mesh.region(0).kafka_addr().port(),
            mesh.region(0).http_addr().port(),
        );
        mesh.region_mut(0).kill9();
        let wiped = tempfile::tempdir()?;
        let options = BrokerOptions::new()
            .flag("--region", "x")
            .flag("--replication-secret", MESH_SECRET)
            .flag("--peer", format!("y@{}", mesh.region(1).kafka_addr()))
            .flag("--seed-from", "y")
            .data_dir(wiped.path().join("data"));
        let mut x = BrokerProcess::spawn_on(options, kafka, http)?;
        let stopped = wait_until(STARTUP_TIMEOUT, || !x.is_running());
        let said = x.stderr();
        if !stopped || !said.contains("held batches the peer lacks") {
            bail!(
                "x seeded from y although y lacks its second record (stopped: {stopped}):\n{said}"
            );
        }
        if !wiped.path().join("data").join("seed.incomplete").exists() {
            bail!("the refused copy is not marked incomplete");
        }
        Ok(())
    });
}
