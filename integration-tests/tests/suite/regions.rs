//! Regions: several `causeway` processes replicating every partition active-active, driven with
//! real clients. Produce in every region at once and every region ends with every record, in an
//! order that keeps each origin's order and causality; a cut link is routed around through the
//! third region; a topic re-created while a region is cut off never mixes with its old
//! incarnation; a region killed with `kill -9` under load comes back without losing anything
//! acknowledged; topics and table rows replicate; bad peers and bad frames are refused.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use causeway_integration_tests::batch::batch_spans;
use causeway_integration_tests::load::AcksAllLoad;
use causeway_integration_tests::regions::{
    metric, metric_sum, partition_counts, peer_status, read_all, regions_status, through_proxy,
    wait_for_payload, with_mesh, Mesh, MeshPlan, CONVERGE_TIMEOUT,
};
use causeway_integration_tests::{
    block_on, check_produce_consume, create_topic, ensure_eq, http_get, payload_str, produce_all,
    segment_files, topic_name, topic_partition_count, wait_until, BrokerProcess, TestRecord,
    CLIENT_TIMEOUT,
};
use causeway_replication::wire::REPLICATION_API_VERSION;
use rdkafka::admin::{AdminOptions, NewPartitions};
use rdkafka::message::Message;
use rdkafka::producer::FutureProducer;
use serde_json::Value;

const NAMES: [&str; 3] = ["eu", "us", "ap"];

fn acks_all_producer(broker: &BrokerProcess) -> Result<FutureProducer> {
    Ok(broker
        .producer_config()
        .set("acks", "all")
        .set("linger.ms", "2")
        .create()?)
}

/// Waits until `topic` shows `partitions` partitions in the metadata of every region.
fn wait_topic_everywhere(mesh: &Mesh, topic: &str, partitions: usize) -> Result<()> {
    mesh.wait_all(
        &format!("topic {topic} with {partitions} partitions"),
        Duration::from_secs(20),
        |r| Ok(topic_partition_count(&r.bootstrap(), topic)? == Some(partitions)),
    )
}

/// Waits until every region holds exactly `total` records in `topic` (summed over partitions).
fn wait_count_everywhere(mesh: &Mesh, topic: &str, partitions: i32, total: i64) -> Result<()> {
    let mut last = BTreeMap::new();
    let waited = mesh.wait_all(
        &format!("{total} records in {topic}"),
        CONVERGE_TIMEOUT,
        |r| {
            let counts = partition_counts(r, topic, partitions)?;
            let sum: i64 = counts.iter().sum();
            last.insert(r.bootstrap(), counts);
            if sum > total {
                bail!(
                    "{} holds {sum} records, more than the {total} produced",
                    r.bootstrap()
                );
            }
            Ok(sum == total)
        },
    );
    waited.with_context(|| format!("per-region partition counts: {last:?}"))
}

/// Waits until every region's `/v1/regions` shows the same clock, nothing buffered, and every
/// peer link connected with no lag; and `causeway_replication_lag_batches` is 0 for every peer.
fn wait_regions_settled(mesh: &Mesh) -> Result<()> {
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    loop {
        let statuses: Vec<Value> = (0..mesh.len())
            .map(|i| regions_status(mesh.region(i)))
            .collect::<Result<_>>()?;
        let mut problems = Vec::new();
        for (i, s) in statuses.iter().enumerate() {
            let name = mesh.name(i);
            if s["clock"] != statuses[0]["clock"] {
                problems.push(format!(
                    "{name}'s clock {} differs from {}'s",
                    s["clock"],
                    mesh.name(0)
                ));
            }
            if s["buffered_batches"].as_u64() != Some(0) {
                problems.push(format!("{name} buffers {}", s["buffered_batches"]));
            }
            for p in s["peers"].as_array().into_iter().flatten() {
                if p["state"] != "connected" || p["lag_batches"].as_u64() != Some(0) {
                    problems.push(format!("{name}'s link to {}: {p}", p["name"]));
                }
                let peer = p["name"].as_str().unwrap_or_default();
                let lag = metric_sum(
                    mesh.region(i),
                    "causeway_replication_lag_batches",
                    &format!("peer=\"{peer}\""),
                )?;
                if lag != 0.0 {
                    problems.push(format!(
                        "{name}: causeway_replication_lag_batches for {peer} is {lag}"
                    ));
                }
            }
        }
        if problems.is_empty() {
            return mesh.ensure_no_batch_refusals();
        }
        if Instant::now() > deadline {
            bail!("/v1/regions did not settle:\n{}", problems.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The low and high watermarks of partition 0 of `topic` in one region.
fn watermarks(broker: &BrokerProcess, topic: &str) -> Result<(i64, i64)> {
    let consumer: rdkafka::consumer::BaseConsumer = broker.consumer_config().create()?;
    Ok(rdkafka::consumer::Consumer::fetch_watermarks(
        &consumer,
        topic,
        0,
        CLIENT_TIMEOUT,
    )?)
}

/// Splits `origin:partition:counter` payloads; anything else (markers) is `None`.
fn parse_load(payload: &str) -> Option<(String, i32, u64)> {
    let mut parts = payload.split(':');
    let (origin, p, n) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Some((origin.to_string(), p.parse().ok()?, n.parse().ok()?))
}

/// Test 1: three regions take produce for every partition at once; every region gets every
/// record exactly once, keeps each origin's order, and never delivers a record before one its
/// producer had already seen.
#[test]
fn concurrent_produce_in_every_region_converges_in_causal_order() {
    const PARTITIONS: i32 = 4;
    const PER_REGION: usize = 3000;
    with_mesh(MeshPlan::new(&NAMES).expect("allocate ports"), |mesh| {
        let topic = topic_name("mesh");
        create_topic(mesh.region(0), &topic, PARTITIONS, &[])?;
        wait_topic_everywhere(mesh, &topic, PARTITIONS as usize)?;

        // The marker chain: eu writes marker:eu:p; us reads it (in us), then writes after:us:p;
        // ap reads that (in ap), then writes after:ap:p. All while every region is loaded.
        let chain = |i: usize| -> String {
            match i {
                0 => "marker:eu",
                1 => "after:us",
                _ => "after:ap",
            }
            .to_string()
        };
        let started = Instant::now();
        std::thread::scope(|scope| -> Result<()> {
            let handles: Vec<_> = (0..3)
                .map(|i| {
                    let (region, name, topic) = (mesh.region(i), NAMES[i], topic.as_str());
                    scope.spawn(move || -> Result<()> {
                        let producer = acks_all_producer(region)?;
                        let records: Vec<TestRecord> = (0..PER_REGION)
                            .map(|k| {
                                let p = (k % PARTITIONS as usize) as i32;
                                let n = k / PARTITIONS as usize;
                                TestRecord::value(format!("{name}:{p}:{n:06}"))
                                    .key(format!("{name}-{k}"))
                                    .partition(p)
                            })
                            .collect();
                        let (first, second) = records.split_at(PER_REGION / 2);
                        produce_all(&producer, topic, first)
                            .with_context(|| format!("{name}: first half"))?;
                        for p in 0..PARTITIONS {
                            if i > 0 {
                                let before = format!("{}:{p}", chain(i - 1));
                                wait_for_payload(
                                    region,
                                    topic,
                                    p,
                                    &before,
                                    Duration::from_secs(30),
                                )
                                .with_context(|| format!("{name} waiting for {before}"))?;
                            }
                            produce_all(
                                &producer,
                                topic,
                                &[TestRecord::value(format!("{}:{p}", chain(i))).partition(p)],
                            )?;
                        }
                        produce_all(&producer, topic, second)
                            .with_context(|| format!("{name}: second half"))?;
                        Ok(())
                    })
                })
                .collect();
            for h in handles {
                h.join()
                    .map_err(|_| anyhow!("a producer thread panicked"))??;
            }
            Ok(())
        })?;
        let produced_in = started.elapsed();
        let total = (3 * PER_REGION) as i64 + 3 * i64::from(PARTITIONS);
        wait_count_everywhere(mesh, &topic, PARTITIONS, total)?;
        eprintln!(
            "produced {total} records in 3 regions in {produced_in:?}, converged after {:?}",
            started.elapsed()
        );
        wait_regions_settled(mesh)?;
        for i in 0..3 {
            let applied = metric_sum(
                mesh.region(i),
                "causeway_replication_applied_batches_total",
                &format!("topic=\"{topic}\""),
            )?;
            if applied < 2.0 {
                bail!(
                    "{}: causeway_replication_applied_batches_total for {topic} is {applied}",
                    mesh.name(i)
                );
            }
        }

        // Each origin's order per partition, as its own region logged it.
        let mut reference: BTreeMap<(String, i32), Vec<u64>> = BTreeMap::new();
        for (i, name) in NAMES.iter().enumerate() {
            for p in 0..PARTITIONS {
                let seq: Vec<u64> = read_all(mesh.region(i), &topic, p)?
                    .iter()
                    .filter_map(|m| parse_load(&payload_str(m)))
                    .filter(|(o, _, _)| o == name)
                    .map(|(_, _, n)| n)
                    .collect();
                let want: BTreeSet<u64> = (0..PER_REGION)
                    .filter(|k| (k % PARTITIONS as usize) as i32 == p)
                    .map(|k| (k / PARTITIONS as usize) as u64)
                    .collect();
                ensure_eq!(
                    seq.iter().copied().collect::<BTreeSet<_>>(),
                    want,
                    "{name}'s own records in {name}, partition {p}"
                );
                ensure_eq!(seq.len(), want.len(), "{name}'s own records are unique");
                reference.insert((name.to_string(), p), seq);
            }
        }
        for (i, region_name) in NAMES.iter().enumerate() {
            for p in 0..PARTITIONS {
                let msgs = read_all(mesh.region(i), &topic, p)?;
                let mut per_origin: BTreeMap<String, Vec<u64>> = BTreeMap::new();
                let mut markers = BTreeMap::new();
                for m in &msgs {
                    let payload = payload_str(m);
                    match parse_load(&payload) {
                        Some((origin, part, n)) => {
                            ensure_eq!(part, p, "{payload} landed in partition {p}");
                            per_origin.entry(origin).or_default().push(n);
                        }
                        None => {
                            if markers.insert(payload.clone(), m.offset()).is_some() {
                                bail!("{payload} twice in {region_name} partition {p}");
                            }
                        }
                    }
                }
                for origin in NAMES {
                    let got = per_origin.remove(origin).unwrap_or_default();
                    let want = &reference[&(origin.to_string(), p)];
                    if &got != want {
                        let first_diff = got.iter().zip(want).position(|(a, b)| a != b);
                        bail!(
                            "{region_name} partition {p}: {origin}'s records are not in {origin}'s \
                             order ({} vs {} records, first difference at index {first_diff:?})",
                            got.len(),
                            want.len()
                        );
                    }
                }
                let offset_of = |i: usize| -> Result<i64> {
                    let marker = format!("{}:{p}", chain(i));
                    markers
                        .get(&marker)
                        .copied()
                        .ok_or_else(|| anyhow!("{marker} missing in {region_name}"))
                };
                let (m0, m1, m2) = (offset_of(0)?, offset_of(1)?, offset_of(2)?);
                if !(m0 < m1 && m1 < m2) {
                    bail!(
                        "causal order broken in {region_name} partition {p}: marker:eu at {m0}, \
                         after:us at {m1}, after:ap at {m2}"
                    );
                }
            }
        }
        Ok(())
    });
}

/// Test 2: with the eu<->us link cut for good, batches of eu reach us (and back) through ap.
#[test]
fn a_permanently_cut_link_converges_through_the_third_region() {
    const PARTITIONS: i32 = 2;
    let plan = MeshPlan::new(&NAMES).expect("allocate ports");
    let (plan, eu_to_us) = through_proxy(plan, 0, 1).expect("a proxy");
    let (plan, us_to_eu) = through_proxy(plan, 1, 0).expect("a proxy");
    let mut proxies = Some((eu_to_us, us_to_eu));
    with_mesh(plan, |mesh| {
        let topic = topic_name("cut");
        create_topic(mesh.region(0), &topic, PARTITIONS, &[])?;
        wait_topic_everywhere(mesh, &topic, PARTITIONS as usize)?;
        let batch = |name: &str, phase: &str, n: usize| -> Vec<TestRecord> {
            (0..n)
                .map(|k| {
                    TestRecord::value(format!("{name}:{phase}:{k:05}"))
                        .partition((k % PARTITIONS as usize) as i32)
                })
                .collect()
        };
        // The proxied links work: eu's records reach us directly (and us's reach eu).
        produce_all(
            &acks_all_producer(mesh.region(0))?,
            &topic,
            &batch("eu", "1pre", 100),
        )?;
        produce_all(
            &acks_all_producer(mesh.region(1))?,
            &topic,
            &batch("us", "1pre", 100),
        )?;
        wait_count_everywhere(mesh, &topic, PARTITIONS, 200)?;

        // Cut eu<->us for good: the proxies stop listening, so reconnects are refused.
        let (a, b) = proxies.take().expect("proxies");
        drop((a, b));
        let down = wait_until(Duration::from_secs(15), || {
            regions_status(mesh.region(1))
                .is_ok_and(|s| peer_status(&s, "eu").is_some_and(|p| p["state"] != "connected"))
        });
        if !down {
            bail!("us still reports its link to eu as connected after the cut");
        }
        // `None` until the report loop first publishes the gauge: absent is not 0.
        let link_up = |peer: &str| {
            metric(
                mesh.region(1),
                &format!("causeway_replication_link_up{{peer=\"{peer}\"}}"),
            )
        };
        if !wait_until(Duration::from_secs(15), || {
            link_up("eu").is_ok_and(|v| v == Some(0.0))
                && link_up("ap").is_ok_and(|v| v == Some(1.0))
        }) {
            bail!(
                "after the cut, us reports causeway_replication_link_up {:?} for eu and {:?} for ap",
                link_up("eu"),
                link_up("ap")
            );
        }
        // ap produces nothing, so whatever us applies from its link to ap is relayed.
        let relayed = |m: &Mesh| -> Result<u64> {
            let status = regions_status(m.region(1))?;
            peer_status(&status, "ap")
                .and_then(|p| p["batches_applied"].as_u64())
                .ok_or_else(|| anyhow!("no batches_applied for ap in us's /v1/regions: {status}"))
        };
        let relayed_before = relayed(mesh)?;
        let cut_at = Instant::now();
        produce_all(
            &acks_all_producer(mesh.region(0))?,
            &topic,
            &batch("eu", "2post", 500),
        )?;
        produce_all(
            &acks_all_producer(mesh.region(1))?,
            &topic,
            &batch("us", "2post", 500),
        )?;
        wait_count_everywhere(mesh, &topic, PARTITIONS, 1200)?;
        eprintln!("converged {:?} after the cut", cut_at.elapsed());
        for i in 0..3 {
            for p in 0..PARTITIONS {
                let mut per_origin: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for m in read_all(mesh.region(i), &topic, p)? {
                    let payload = payload_str(&m);
                    let origin = payload.split(':').next().unwrap_or_default().to_string();
                    per_origin.entry(origin).or_default().push(payload);
                }
                for (origin, payloads) in &per_origin {
                    let mut sorted = payloads.clone();
                    sorted.sort();
                    sorted.dedup();
                    if &sorted != payloads {
                        bail!(
                            "{} partition {p}: {origin}'s records out of order or duplicated",
                            mesh.name(i)
                        );
                    }
                }
                ensure_eq!(per_origin.get("eu").map(Vec::len), Some(300));
                ensure_eq!(per_origin.get("us").map(Vec::len), Some(300));
            }
        }
        // us learned eu's post-cut batches from ap.
        mesh.ensure_no_batch_refusals()?;
        let relayed_after = relayed(mesh)?;
        if relayed_after <= relayed_before {
            bail!("us applied nothing from ap after the cut ({relayed_before} -> {relayed_after})");
        }
        // Durable clocks are relayed too: eu learns through ap that us holds all of eu's
        // batches, so the stable cut (retention, compaction) advances despite the cut link.
        let eu_sees_us_current = wait_until(Duration::from_secs(15), || {
            regions_status(mesh.region(0)).is_ok_and(|status| {
                peer_status(&status, "us").and_then(|p| p["peer_behind_batches"].as_u64())
                    == Some(0)
            })
        });
        if !eu_sees_us_current {
            bail!(
                "eu never learned us's durable clock through ap: {:?}",
                regions_status(mesh.region(0))
            );
        }
        Ok(())
    });
}

/// Test 2b: eu deletes and re-creates a topic while its links to us are down, and us, which has
/// not seen the delete, goes on writing the old incarnation. Replication names partitions by
/// incarnation (topic id), not by name alone: when eu's pulls reach us again, eu's new topic
/// takes in none of us's old records; when us's pulls reach eu, us learns the delete, drops its
/// old topic and takes the new one; both end with exactly the new incarnation's records and the
/// same clocks.
#[test]
fn a_topic_recreated_while_a_region_is_cut_off_never_takes_in_the_old_incarnation() {
    const PARTITIONS: i32 = 2;
    let plan = MeshPlan::new(&NAMES[..2]).expect("allocate ports");
    let (plan, eu_to_us) = through_proxy(plan, 0, 1).expect("a proxy");
    let (plan, us_to_eu) = through_proxy(plan, 1, 0).expect("a proxy");
    // Topics come only from CreateTopics and the catalog, never from a client's metadata request.
    let plan =
        plan.flag(0, "--auto-create-topics", "false")
            .flag(1, "--auto-create-topics", "false");
    with_mesh(plan, |mesh| {
        let topic = topic_name("reborn");
        // `origin:phase:counter`, one record per partition in turn.
        let records = |origin: &str, phase: &str, from: usize, to: usize| -> Vec<TestRecord> {
            (from..to)
                .map(|k| {
                    TestRecord::value(format!("{origin}:{phase}:{k:05}"))
                        .partition((k % PARTITIONS as usize) as i32)
                })
                .collect()
        };
        let values = |records: &[TestRecord]| -> Vec<String> {
            records
                .iter()
                .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into())
                .collect()
        };
        let payloads = |i: usize| -> Result<Vec<String>> {
            let mut all = Vec::new();
            for p in 0..PARTITIONS {
                all.extend(read_all(mesh.region(i), &topic, p)?.iter().map(payload_str));
            }
            all.sort();
            Ok(all)
        };
        let link_state = |i: usize, peer: &str| -> Option<(String, i64)> {
            let status = regions_status(mesh.region(i)).ok()?;
            let link = peer_status(&status, peer)?;
            Some((
                link["state"].as_str()?.to_string(),
                link["last_pull_ms"].as_i64()?,
            ))
        };

        // The first incarnation, written in both regions, replicates both ways. eu writes one
        // batch per partition, so every dependency of us's old batches on eu is covered by eu's
        // own batches in the new incarnation too: a broker that mixed incarnations would apply
        // us's old batches there, not refuse them.
        create_topic(mesh.region(0), &topic, PARTITIONS, &[])?;
        wait_topic_everywhere(mesh, &topic, PARTITIONS as usize)?;
        produce_all(
            &acks_all_producer(mesh.region(0))?,
            &topic,
            &records("eu", "old", 0, PARTITIONS as usize),
        )?;
        produce_all(
            &acks_all_producer(mesh.region(1))?,
            &topic,
            &records("us", "old", 0, 40),
        )?;
        wait_count_everywhere(mesh, &topic, PARTITIONS, 40 + i64::from(PARTITIONS))?;

        // Partition the regions.
        eu_to_us.cut_until_restored();
        us_to_eu.cut_until_restored();
        let apart = wait_until(Duration::from_secs(15), || {
            [(0, "us"), (1, "eu")]
                .iter()
                .all(|&(i, peer)| link_state(i, peer).is_some_and(|(s, _)| s != "connected"))
        });
        if !apart {
            bail!(
                "the links still report connected after the cut: eu->us {:?}, us->eu {:?}",
                link_state(0, "us"),
                link_state(1, "eu")
            );
        }

        // us, cut off, goes on writing the old incarnation; eu deletes the topic, re-creates it
        // and writes the new incarnation.
        produce_all(
            &acks_all_producer(mesh.region(1))?,
            &topic,
            &records("us", "old", 40, 80),
        )?;
        let deleted = block_on(mesh.region(0).admin().delete_topics(
            &[&topic],
            &AdminOptions::new().operation_timeout(Some(CLIENT_TIMEOUT)),
        ))?;
        if !deleted.iter().all(|r| r.is_ok()) {
            bail!("DeleteTopics in eu: {deleted:?}");
        }
        ensure_eq!(
            topic_partition_count(&mesh.region(0).bootstrap(), &topic)?,
            None,
            "the deleted topic is still in eu's metadata"
        );
        create_topic(mesh.region(0), &topic, PARTITIONS, &[])?;
        let eu_new = records("eu", "new", 0, 20);
        produce_all(&acks_all_producer(mesh.region(0))?, &topic, &eu_new)?;

        // eu's pulls reach us again, us's pulls do not yet: us still serves the old incarnation
        // under the same name. Let eu pull for a while, then check that it took in nothing old.
        eu_to_us.restore();
        let mut first_pull = None;
        let pulled = wait_until(CONVERGE_TIMEOUT, || match link_state(0, "us") {
            Some((state, last)) if state == "connected" => {
                let first = *first_pull.get_or_insert(last);
                last >= first + 2_000
            }
            _ => false,
        });
        if !pulled {
            bail!(
                "eu did not pull from us for 2 s after the link came back: {:?}",
                link_state(0, "us")
            );
        }
        let in_eu = payloads(0)?;
        let mixed: Vec<&String> = in_eu.iter().filter(|p| !p.contains(":new:")).collect();
        if !mixed.is_empty() {
            bail!(
                "eu's re-created topic took in {} records of the old incarnation from us, e.g. {:?}",
                mixed.len(),
                &mixed[..mixed.len().min(5)]
            );
        }

        // us's pulls reach eu: us learns the delete, drops its old topic, takes the new one.
        us_to_eu.restore();
        let mut expected: Vec<String> = values(&eu_new);
        expected.sort();
        wait_count_everywhere(mesh, &topic, PARTITIONS, expected.len() as i64)?;
        let said = mesh.region(1).stderr();
        let named = said.lines().any(|line| {
            line.contains("re-created topic, a new incarnation (merged from a peer)")
                && line.contains(&topic)
        });
        ensure_eq!(named, true, "us logs the merged re-create by topic name");
        for i in 0..mesh.len() {
            ensure_eq!(payloads(i)?, expected, "records of {}", mesh.name(i));
        }

        // The new incarnation replicates both ways and the regions settle with equal clocks.
        let us_new = records("us", "new", 0, 20);
        produce_all(&acks_all_producer(mesh.region(1))?, &topic, &us_new)?;
        expected.extend(values(&us_new));
        expected.sort();
        wait_count_everywhere(mesh, &topic, PARTITIONS, expected.len() as i64)?;
        for i in 0..mesh.len() {
            ensure_eq!(payloads(i)?, expected, "records of {}", mesh.name(i));
        }
        wait_regions_settled(mesh)?;
        let mismatches: f64 = (0..mesh.len())
            .map(|i| {
                metric_sum(
                    mesh.region(i),
                    "causeway_replication_refused_total",
                    "reason=\"incarnation_mismatch\"",
                )
            })
            .sum::<Result<f64>>()?;
        if mismatches < 1.0 {
            bail!("no region counted an incarnation mismatch: the scenario did not happen");
        }
        Ok(())
    });
}

/// Test 3: a region killed with `kill -9` under load (to it and to the others) restarts on the
/// same ports and data directory; every record any region acknowledged ends in every region
/// exactly once, and all regions hold the same records.
#[test]
fn a_region_killed_under_load_restarts_and_every_acknowledged_record_converges() {
    with_mesh(MeshPlan::new(&NAMES).expect("allocate ports"), |mesh| {
        let topic = topic_name("crash");
        create_topic(mesh.region(0), &topic, 1, &[])?;
        wait_topic_everywhere(mesh, &topic, 1)?;
        let loads: Vec<AcksAllLoad> = (0..3)
            .map(|i| AcksAllLoad::start(&mesh.region(i).bootstrap(), &topic, NAMES[i], 16, 5000))
            .collect::<Result<_>>()?;
        let acks = |loads: &[AcksAllLoad]| {
            loads
                .iter()
                .map(AcksAllLoad::acknowledged)
                .collect::<Vec<_>>()
        };
        if !wait_until(Duration::from_secs(20), || {
            acks(&loads).iter().all(|&n| n >= 300)
        }) {
            bail!("loads did not get going: {:?} acknowledged", acks(&loads));
        }
        mesh.region_mut(1).kill9();
        let at_kill = acks(&loads);
        eprintln!("killed us with {at_kill:?} acknowledged");
        if !wait_until(Duration::from_secs(20), || {
            let now = acks(&loads);
            now[0] >= at_kill[0] + 1000 && now[2] >= at_kill[2] + 1000
        }) {
            bail!("eu and ap stalled while us was down: {:?}", acks(&loads));
        }
        mesh.region_mut(1).restart().context("restart us")?;
        let at_restart = acks(&loads);
        if !wait_until(Duration::from_secs(30), || {
            acks(&loads)
                .iter()
                .zip(&at_restart)
                .all(|(now, then)| *now >= then + 300)
        }) {
            bail!(
                "the loads did not resume after the restart: {at_restart:?} -> {:?}",
                acks(&loads)
            );
        }
        let mut acked = BTreeSet::new();
        for load in loads {
            let outcome = load.stop()?;
            eprintln!(
                "load sent {}, acknowledged {}",
                outcome.sent,
                outcome.acked.len()
            );
            acked.extend(outcome.acked.into_iter().map(|(payload, _)| payload));
        }

        // Converged: every region holds the same records, each once, with every acknowledged one.
        let deadline = Instant::now() + CONVERGE_TIMEOUT;
        loop {
            let counts: Vec<i64> = (0..3)
                .map(|i| partition_counts(mesh.region(i), &topic, 1).map(|c| c[0]))
                .collect::<Result<_>>()?;
            let settled = counts
                .iter()
                .all(|&c| c == counts[0] && c >= acked.len() as i64);
            if settled {
                let mut sets = Vec::new();
                for i in 0..3 {
                    let payloads: Vec<String> = read_all(mesh.region(i), &topic, 0)?
                        .iter()
                        .map(payload_str)
                        .collect();
                    let set: BTreeSet<String> = payloads.iter().cloned().collect();
                    if set.len() != payloads.len() {
                        bail!(
                            "{} holds {} records but only {} distinct ones",
                            mesh.name(i),
                            payloads.len(),
                            set.len()
                        );
                    }
                    for origin in NAMES {
                        let own: Vec<&String> =
                            payloads.iter().filter(|p| p.starts_with(origin)).collect();
                        if own.windows(2).any(|w| w[0] >= w[1]) {
                            bail!("{}: {origin}'s records are out of order", mesh.name(i));
                        }
                    }
                    sets.push(set);
                }
                let missing: Vec<(&str, usize)> = sets
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (NAMES[i], acked.difference(s).count()))
                    .filter(|(_, n)| *n > 0)
                    .collect();
                if sets.iter().all(|s| s == &sets[0]) && missing.is_empty() {
                    eprintln!(
                        "{} acknowledged, {} records in every region",
                        acked.len(),
                        sets[0].len()
                    );
                    let failures = metric_sum(
                        mesh.region(0),
                        "causeway_replication_link_failures_total",
                        "peer=\"us\"",
                    )?;
                    if failures < 1.0 {
                        bail!("eu counted no failure of its link to us while us was down");
                    }
                    let warnings = mesh.log_lines("WARN");
                    eprintln!(
                        "{} warnings logged, first ones:\n{}",
                        warnings.len(),
                        warnings
                            .iter()
                            .take(12)
                            .cloned()
                            .collect::<Vec<_>>()
                            .join("\n")
                    );
                    return wait_regions_settled(mesh);
                }
                if Instant::now() > deadline {
                    bail!(
                        "regions hold different records; acknowledged records missing: {missing:?}"
                    );
                }
            } else if Instant::now() > deadline {
                bail!(
                    "regions did not converge: counts {counts:?}, {} acknowledged",
                    acked.len()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
}

/// Test 4: a topic created with CreateTopics in one region shows up with its partitions in the
/// others (auto-creation is off, so only the replicated catalog can create it there), takes
/// produce there, and those records replicate back; deleted in one region, it leaves them all, and
/// each peer logs the delete by the topic's name.
#[test]
fn a_topic_created_in_one_region_is_usable_in_every_region() {
    // Only us creates topics on first use; eu and ap can learn them only from the catalog.
    let mut plan = MeshPlan::new(&NAMES).expect("allocate ports");
    for i in [0, 2] {
        plan = plan.flag(i, "--auto-create-topics", "false");
    }
    with_mesh(plan, |mesh| {
        let topic = topic_name("catalog");
        create_topic(mesh.region(0), &topic, 3, &[])?;
        wait_topic_everywhere(mesh, &topic, 3)?;
        for (i, p) in [(1usize, 2), (2, 1), (0, 0)] {
            let value = format!("from-{}", mesh.name(i));
            produce_all(
                &acks_all_producer(mesh.region(i))?,
                &topic,
                &[TestRecord::value(value.clone()).partition(p)],
            )
            .with_context(|| format!("produce in {}", mesh.name(i)))?;
            for j in 0..3 {
                wait_for_payload(mesh.region(j), &topic, p, &value, Duration::from_secs(15))
                    .with_context(|| format!("{value} in {}", mesh.name(j)))?;
            }
        }

        // Partitions added in ap reach the others, and the new partition replicates.
        let admin = mesh.region(2).admin();
        let grown = block_on(admin.create_partitions(
            [&NewPartitions::new(&topic, 5)],
            &AdminOptions::new().operation_timeout(Some(CLIENT_TIMEOUT)),
        ))?;
        if !grown.iter().all(|r| r.is_ok()) {
            bail!("CreatePartitions in ap: {grown:?}");
        }
        wait_topic_everywhere(mesh, &topic, 5)?;
        produce_all(
            &acks_all_producer(mesh.region(0))?,
            &topic,
            &[TestRecord::value("eu-in-partition-4").partition(4)],
        )?;
        for j in 0..3 {
            wait_for_payload(
                mesh.region(j),
                &topic,
                4,
                "eu-in-partition-4",
                Duration::from_secs(15),
            )
            .with_context(|| format!("partition 4 in {}", mesh.name(j)))?;
        }

        // A topic us creates on first produce appears in eu and ap.
        let auto = topic_name("auto");
        produce_all(
            &acks_all_producer(mesh.region(1))?,
            &auto,
            &[TestRecord::value("auto-from-us").partition(0)],
        )
        .context("produce to an auto-created topic in us")?;
        let partitions = topic_partition_count(&mesh.region(1).bootstrap(), &auto)?
            .ok_or_else(|| anyhow!("{auto} missing in us"))?;
        wait_topic_everywhere(mesh, &auto, partitions)?;
        for j in [0, 2] {
            wait_for_payload(
                mesh.region(j),
                &auto,
                0,
                "auto-from-us",
                Duration::from_secs(15),
            )
            .with_context(|| format!("auto-created topic in {}", mesh.name(j)))?;
        }

        // A topic deleted in eu leaves every region, and each peer logs the delete by name.
        let deleted = block_on(mesh.region(0).admin().delete_topics(
            &[topic.as_str()],
            &AdminOptions::new().operation_timeout(Some(CLIENT_TIMEOUT)),
        ))?;
        if !deleted.iter().all(|r| r.is_ok()) {
            bail!("DeleteTopics in eu: {deleted:?}");
        }
        mesh.wait_all(
            &format!("topic {topic} deleted"),
            Duration::from_secs(20),
            |r| Ok(topic_partition_count(&r.bootstrap(), &topic)?.is_none()),
        )?;
        for j in [1, 2] {
            let logged = wait_until(Duration::from_secs(10), || {
                mesh.region(j).stderr().lines().any(|line| {
                    line.contains("deleted topic (merged from a peer)") && line.contains(&topic)
                })
            });
            if !logged {
                bail!(
                    "{} did not log the merged delete of {topic}:\n{}",
                    mesh.name(j),
                    mesh.region(j).stderr_tail(20)
                );
            }
        }
        Ok(())
    });
}

fn table_record(key: &str, value: &str, op: &str) -> TestRecord {
    TestRecord::value(value)
        .key(key)
        .header("causeway.op", Some(op.as_bytes()))
}

fn row(broker: &BrokerProcess, topic: &str, key: &str) -> Result<(u16, String)> {
    http_get(
        broker.http_addr(),
        &format!("/v1/tables/{topic}/rows/{key}"),
    )
}

/// Test 5: the same rows patched and incremented from all three regions at once end
/// byte-identical in every region, with counters equal to the sum of every increment.
#[test]
fn a_table_written_concurrently_in_every_region_converges_to_identical_rows() {
    const ROUNDS: usize = 20;
    let keys: Vec<String> = (0..6).map(|k| format!("row{k}")).collect();
    with_mesh(MeshPlan::new(&NAMES).expect("allocate ports"), |mesh| {
        let topic = topic_name("table");
        create_topic(mesh.region(0), &topic, 2, &[("cleanup.policy", "compact")])?;
        wait_topic_everywhere(mesh, &topic, 2)?;
        // A put first, everywhere, so no put races the counters below.
        let puts: Vec<TestRecord> = keys
            .iter()
            .map(|k| table_record(k, &format!(r#"{{"name":"{k}"}}"#), "put"))
            .collect();
        produce_all(&acks_all_producer(mesh.region(0))?, &topic, &puts)?;
        mesh.wait_all("the initial rows", Duration::from_secs(20), |r| {
            Ok(keys
                .iter()
                .all(|k| row(r, &topic, k).is_ok_and(|(s, _)| s == 200)))
        })?;

        std::thread::scope(|scope| -> Result<()> {
            let handles: Vec<_> = (0..3)
                .map(|i| {
                    let (region, name, topic, keys) = (mesh.region(i), NAMES[i], &topic, &keys);
                    scope.spawn(move || -> Result<()> {
                        let producer = acks_all_producer(region)?;
                        for round in 0..ROUNDS {
                            let mut records = Vec::new();
                            for k in keys {
                                records.push(table_record(
                                    k,
                                    &format!(r#"{{"hits":{},"per_region":{{"{name}":1}}}}"#, i + 1),
                                    "incr",
                                ));
                                records.push(table_record(
                                    k,
                                    &format!(r#"{{"by_{name}":{round},"last":"{name}-{round}"}}"#),
                                    "patch",
                                ));
                            }
                            produce_all(&producer, topic, &records)
                                .with_context(|| format!("{name} round {round}"))?;
                        }
                        Ok(())
                    })
                })
                .collect();
            for h in handles {
                h.join()
                    .map_err(|_| anyhow!("a writer thread panicked"))??;
            }
            Ok(())
        })?;

        let want_hits = ROUNDS as u64 * (1 + 2 + 3);
        let last_round = ROUNDS as u64 - 1;
        let check = |key: &str| -> Result<Option<String>> {
            let mut bodies = Vec::new();
            for i in 0..3 {
                let (status, body) = row(mesh.region(i), &topic, key)?;
                if status != 200 {
                    return Ok(None);
                }
                bodies.push(body);
            }
            if bodies.iter().any(|b| b != &bodies[0]) {
                return Ok(None);
            }
            let v: Value = serde_json::from_str(&bodies[0])?;
            let value = &v["value"];
            let complete = value["hits"].as_u64() == Some(want_hits)
                && NAMES.iter().all(|n| {
                    value[format!("by_{n}")].as_u64() == Some(last_round)
                        && value["per_region"][n].as_u64() == Some(ROUNDS as u64)
                });
            Ok(complete.then(|| bodies[0].clone()))
        };
        let deadline = Instant::now() + CONVERGE_TIMEOUT;
        for key in &keys {
            loop {
                if let Some(body) = check(key)? {
                    let v: Value = serde_json::from_str(&body)?;
                    ensure_eq!(
                        v["value"]["name"].as_str(),
                        Some(key.as_str()),
                        "{key}: {body}"
                    );
                    let last = v["value"]["last"].as_str().unwrap_or_default().to_string();
                    if !NAMES.iter().any(|n| last == format!("{n}-{last_round}")) {
                        bail!("{key}: the last-writer-wins field is {last:?}, not a final write");
                    }
                    break;
                }
                if Instant::now() > deadline {
                    let rows: Vec<String> = (0..3)
                        .map(|i| {
                            let got = row(mesh.region(i), &topic, key)
                                .map(|(s, b)| format!("{s} {b}"))
                                .unwrap_or_else(|e| e.to_string());
                            format!("{}: {got}", mesh.name(i))
                        })
                        .collect();
                    bail!(
                        "row {key} did not converge to {want_hits} hits:\n{}",
                        rows.join("\n")
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        // Whole tables are identical too.
        let scans: Vec<String> = (0..3)
            .map(|i| {
                http_get(
                    mesh.region(i).http_addr(),
                    &format!("/v1/tables/{topic}/rows?limit=1000"),
                )
                .map(|(_, b)| b)
            })
            .collect::<Result<_>>()?;
        if scans.iter().any(|s| s != &scans[0]) {
            bail!("table scans differ across regions:\n{}", scans.join("\n"));
        }
        wait_regions_settled(mesh)?;
        Ok(())
    });
}

/// Test 6a: a region started with the wrong secret is refused by the others, none of its data
/// reaches them, and they keep replicating between themselves.
#[test]
fn a_region_with_the_wrong_secret_is_refused_and_its_data_stays_out() {
    let plan = MeshPlan::new(&NAMES)
        .expect("allocate ports")
        .secret(2, "not-the-secret");
    with_mesh(plan, |mesh| {
        let (shared, intruder) = (topic_name("shared"), topic_name("intruder"));
        create_topic(mesh.region(2), &intruder, 1, &[])?;
        produce_all(
            &acks_all_producer(mesh.region(2))?,
            &intruder,
            &[TestRecord::value("from-ap").partition(0)],
        )?;
        // ap's pulls are refused by eu and us, and theirs by ap.
        let refused_everywhere = |i: usize, peers: &[&str]| -> bool {
            regions_status(mesh.region(i)).is_ok_and(|s| {
                peers
                    .iter()
                    .all(|p| peer_status(&s, p).is_some_and(|p| p["state"] == "refused"))
            })
        };
        if !wait_until(Duration::from_secs(20), || {
            refused_everywhere(2, &["eu", "us"])
        }) {
            bail!("ap does not report eu and us as refused");
        }
        // ap says so in /readyz (still 200 unless --readyz-fails-on-degraded-replication);
        // eu and us, with one working link, do not.
        let (code, body) = http_get(mesh.region(2).http_addr(), "/readyz")?;
        ensure_eq!(code, 200, "ap's /readyz with every link refused: {body}");
        expect_line(
            &body,
            "replication degraded: every peer refuses this region",
        )?;
        for i in 0..2 {
            if !wait_until(Duration::from_secs(20), || refused_everywhere(i, &["ap"])) {
                bail!("{} does not report ap as refused", mesh.name(i));
            }
            let refusals = metric_sum(
                mesh.region(i),
                "causeway_replication_refused_total",
                "authentication",
            )?;
            if refusals < 1.0 {
                bail!(
                    "{} counted no authentication refusal in causeway_replication_refused_total",
                    mesh.name(i)
                );
            }
        }
        for i in 0..2 {
            let (code, body) = http_get(mesh.region(i).http_addr(), "/readyz")?;
            ensure_eq!(code, 200, "{}'s /readyz: {body}", mesh.name(i));
            ensure_eq!(
                body.contains("replication degraded"),
                false,
                "{} has a working link: {body}",
                mesh.name(i)
            );
        }
        // eu and us keep working with each other.
        create_topic(mesh.region(0), &shared, 1, &[])?;
        produce_all(
            &acks_all_producer(mesh.region(0))?,
            &shared,
            &[TestRecord::value("from-eu").partition(0)],
        )?;
        wait_for_payload(
            mesh.region(1),
            &shared,
            0,
            "from-eu",
            Duration::from_secs(15),
        )?;
        // By now eu and us have pulled from each other many times; nothing of ap's is there.
        for i in 0..2 {
            let status = regions_status(mesh.region(i))?;
            let from_ap = status["clock"]["ap"].as_u64().unwrap_or(0);
            ensure_eq!(
                from_ap,
                0,
                "{}'s clock entry for ap: {status}",
                mesh.name(i)
            );
            let consumer_md = topic_partition_count(&mesh.region(i).bootstrap(), &intruder)?;
            ensure_eq!(
                consumer_md,
                None,
                "ap's topic {intruder} in {}",
                mesh.name(i)
            );
        }
        // And ap never got the topic created in eu.
        ensure_eq!(
            topic_partition_count(&mesh.region(2).bootstrap(), &shared)?,
            None,
            "eu's topic {shared} in ap"
        );
        Ok(())
    });
}

/// Sends one raw frame on a fresh connection and reports whether the broker closed it (EOF or
/// reset) within `timeout`; bytes the broker sent before closing are returned too.
fn frame_closes_connection(broker: &BrokerProcess, frame: &[u8]) -> Result<(bool, Vec<u8>)> {
    let mut s = TcpStream::connect(broker.kafka_addr())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(frame)?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok((true, got)),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok((true, got)),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Ok((false, got))
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn replication_frame(version: i16, correlation_id: i32, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend_from_slice(&(8 + body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&32_000i16.to_be_bytes());
    frame.extend_from_slice(&version.to_be_bytes());
    frame.extend_from_slice(&correlation_id.to_be_bytes());
    frame.extend_from_slice(body);
    frame
}

/// Test 6b: a raw client sending a malformed replication frame on the private API key gets its
/// connection closed, while the region keeps serving Kafka clients and replicating.
#[test]
fn a_malformed_replication_frame_closes_the_connection_and_the_region_keeps_serving() {
    with_mesh(
        MeshPlan::new(&NAMES[..2]).expect("allocate ports"),
        |mesh| {
            let eu = mesh.region(0);
            let version = REPLICATION_API_VERSION;
            let garbage: Vec<u8> = (0..64u8).map(|b| b.wrapping_mul(37) | 0x80).collect();
            let frames = [
                ("garbage body", replication_frame(version, 7, &garbage)),
                ("empty body", replication_frame(version, 8, &[])),
                ("all 0xff body", replication_frame(version, 9, &[0xff; 300])),
                ("body of version 0", replication_frame(0, 11, &garbage)),
                ("unknown version", replication_frame(99, 10, &garbage)),
            ];
            for (what, frame) in &frames {
                let (closed, got) = frame_closes_connection(eu, frame)?;
                if !closed {
                    bail!(
                        "a replication frame with {what} left the connection open (got {} bytes)",
                        got.len()
                    );
                }
                eprintln!("{what}: closed after {} response bytes", got.len());
            }
            let malformed = metric_sum(eu, "causeway_replication_refused_total", "malformed")?;
            if malformed < 1.0 {
                eprintln!("note: no malformed refusal in causeway_replication_refused_total");
            }
            let topic = topic_name("after-garbage");
            create_topic(eu, &topic, 1, &[])?;
            check_produce_consume(eu, &topic)?;
            // Replication still flows both ways.
            for (from, to) in [(0usize, 1usize), (1, 0)] {
                let value = format!("after-garbage-from-{}", mesh.name(from));
                produce_all(
                    &acks_all_producer(mesh.region(from))?,
                    &topic,
                    &[TestRecord::value(value.clone()).partition(0)],
                )?;
                wait_for_payload(mesh.region(to), &topic, 0, &value, Duration::from_secs(15))?;
            }
            let _ = http_get(eu.http_addr(), "/healthz")?;
            Ok(())
        },
    );
}

/// `causeway.min.regions=2`: acks=all is answered once a second region holds the batch; with the
/// other region down it fails with NOT_ENOUGH_REPLICAS_AFTER_APPEND at the request timeout (the
/// record stays appended, as in Kafka), and succeeds again once the region is back.
#[test]
fn min_regions_makes_acks_all_wait_for_another_region() {
    let plan = MeshPlan::new(&["north", "south"]).expect("plan");
    with_mesh(plan, |mesh| {
        let topic = topic_name("min-regions");
        create_topic(mesh.region(0), &topic, 1, &[("causeway.min.regions", "2")])?;
        wait_topic_everywhere(mesh, &topic, 1)?;
        let records: Vec<TestRecord> = (0..20)
            .map(|i| TestRecord::value(format!("held-{i}")))
            .collect();
        produce_all(&acks_all_producer(mesh.region(0))?, &topic, &records)?;
        mesh.region_mut(1).kill9();
        let impatient: FutureProducer = mesh
            .region(0)
            .producer_config()
            .set("acks", "all")
            .set("enable.idempotence", "false")
            .set("retries", "0")
            .set("request.timeout.ms", "1500")
            .set("message.timeout.ms", "5000")
            .create()?;
        let alone = produce_all(&impatient, &topic, &[TestRecord::value("alone")]);
        match alone {
            Err(error) if error.to_string().contains("NotEnoughReplicasAfterAppend") => {}
            other => bail!("acks=all with the other region down answered {other:?}"),
        }
        ensure_eq!(partition_counts(mesh.region(0), &topic, 1)?, vec![21]);
        mesh.region_mut(1).restart()?;
        produce_all(
            &acks_all_producer(mesh.region(0))?,
            &topic,
            &[TestRecord::value("together again")],
        )?;
        wait_count_everywhere(mesh, &topic, 1, 22)?;
        Ok(())
    });
}

/// A peer's catalog is validated by the peer: a region whose mesh is smaller re-validates it.
/// North counts a third region (never up), so `causeway.min.regions=3` is valid there; south
/// knows two regions, where 3 could never be met: it lowers the value to its whole mesh and says
/// so, and acks=all on south is answered once north holds the batch (before, it timed out).
#[test]
fn a_merged_min_regions_above_this_mesh_is_lowered_to_every_region() {
    let plan = MeshPlan::new(&["north", "south"])
        .expect("plan")
        .args(0, &["--peer".to_string(), "ghost@127.0.0.1:1".to_string()]);
    with_mesh(plan, |mesh| {
        let topic = topic_name("min-regions-merged");
        create_topic(mesh.region(0), &topic, 1, &[("causeway.min.regions", "3")])?;
        wait_topic_everywhere(mesh, &topic, 1)?;
        let producer: FutureProducer = mesh
            .region(1)
            .producer_config()
            .set("acks", "all")
            .set("enable.idempotence", "false")
            .set("retries", "0")
            .set("request.timeout.ms", "5000")
            .set("message.timeout.ms", "10000")
            .create()?;
        produce_all(&producer, &topic, &[TestRecord::value("held by both")])?;
        wait_count_everywhere(mesh, &topic, 1, 1)?;
        let said = mesh.log_lines("not applying a topic config the catalog carries");
        ensure!(
            said.iter()
                .any(|line| line.starts_with("south:") && line.contains("causeway.min.regions")),
            "south did not say it lowered min.regions: {said:?}"
        );
        ensure_eq!(
            metric(mesh.region(1), "causeway_topic_configs_not_applied_total")?,
            Some(1.0)
        );
        Ok(())
    });
}

/// Creates `topic` (2 KiB segments, `retention.bytes` 4 KiB) in the first region of a two-region
/// mesh, kills the second, and writes 300 records of about 100 bytes (far over retention) to
/// the first.
fn write_far_over_retention_while_the_second_region_is_down(
    mesh: &mut Mesh,
    topic: &str,
) -> Result<()> {
    create_topic(
        mesh.region(0),
        topic,
        1,
        &[("segment.bytes", "2048"), ("retention.bytes", "4096")],
    )?;
    wait_topic_everywhere(mesh, topic, 1)?;
    mesh.region_mut(1).kill9();
    let records: Vec<TestRecord> = (0..300)
        .map(|i| TestRecord::value(format!("{i:04}-{}", "x".repeat(100))))
        .collect();
    let producer = acks_all_producer(mesh.region(0))?;
    for chunk in records.chunks(10) {
        produce_all(&producer, topic, chunk)?;
    }
    Ok(())
}

/// Retention never deletes what another region has not got: with the other region down, a
/// topic far over its `retention.bytes` keeps every record; once the region is back and holds
/// them, retention deletes segments as usual, and the returning region received everything.
#[test]
fn retention_waits_for_every_region_to_hold_the_batches() {
    let plan = MeshPlan::new(&["east", "west"])
        .expect("plan")
        .flag(0, "--log-retention-check-interval-ms", 100)
        .flag(1, "--log-retention-check-interval-ms", 100)
        .flag(0, "--log-segment-bytes-min", 1)
        .flag(1, "--log-segment-bytes-min", 1);
    with_mesh(plan, |mesh| {
        let topic = topic_name("held");
        write_far_over_retention_while_the_second_region_is_down(mesh, &topic)?;
        let watermarks = |broker: &BrokerProcess| watermarks(broker, &topic);
        // Many maintenance passes run while west is away: nothing may be deleted.
        std::thread::sleep(Duration::from_millis(1500));
        ensure_eq!(
            watermarks(mesh.region(0))?,
            (0, 300),
            "east's log while west is down"
        );
        mesh.region_mut(1).restart()?;
        // West appends every record (its offsets are its own, so a high watermark of 300 means
        // all 300 arrived; west may already have applied retention itself).
        let caught_up = wait_until(CONVERGE_TIMEOUT, || {
            watermarks(mesh.region(1)).is_ok_and(|(_, high)| high == 300)
        });
        if !caught_up {
            bail!(
                "west holds {:?} after restarting",
                watermarks(mesh.region(1))
            );
        }
        let deleted = wait_until(Duration::from_secs(20), || {
            watermarks(mesh.region(0)).is_ok_and(|(low, _)| low > 0)
        });
        if !deleted {
            bail!("east never applied retention after west caught up");
        }
        Ok(())
    });
}

fn expect_line(body: &str, needle: &str) -> Result<()> {
    if body.contains(needle) {
        Ok(())
    } else {
        bail!("{needle:?} missing from:\n{body}")
    }
}

/// Issue 11: a region away longer than `--region-stale-after-ms` is left out of the stable cut,
/// so retention deletes batches it never received; when it comes back it cannot catch up from
/// that region, and that must not be silent: the serving region logs it by name, once a minute,
/// and counts every such pull.
#[test]
fn a_region_back_after_retention_deleted_what_it_lacks_is_reported_loudly() {
    let plan = MeshPlan::new(&["east", "west"])
        .expect("plan")
        .flag(0, "--log-retention-check-interval-ms", 100)
        .flag(0, "--log-segment-bytes-min", 1)
        .flag(0, "--region-stale-after-ms", 300);
    with_mesh(plan, |mesh| {
        let topic = topic_name("gone");
        write_far_over_retention_while_the_second_region_is_down(mesh, &topic)?;
        let deleted = wait_until(Duration::from_secs(20), || {
            watermarks(mesh.region(0), &topic).is_ok_and(|(low, _)| low > 0)
        });
        if !deleted {
            bail!("east never applied retention with west stale");
        }
        mesh.region_mut(1).restart()?;
        let reported = wait_until(Duration::from_secs(20), || {
            mesh.region(0)
                .stderr()
                .contains("region west asks for batches this region deleted")
        });
        if !reported {
            bail!(
                "east never reported west's unservable pull:\n{}",
                mesh.region(0).stderr_tail(20)
            );
        }
        let asked = metric(
            mesh.region(0),
            "causeway_replication_deleted_asked_total{peer=\"west\"}",
        )?;
        ensure_eq!(
            asked.is_some_and(|n| n > 0.0),
            true,
            "counted pulls asking for deleted batches"
        );
        Ok(())
    });
}

/// Issue 11: retention deletes every segment that holds a region's own batches (its log then
/// ends with the other region's batches), the region restarts, and its vector clock must not
/// go backwards: new records in either region still reach the other. Before the fix the
/// restarted region reused its own sequences (dropped by the peer as duplicates) and refused
/// the peer's new batches, which depend on the forgotten ones.
#[test]
fn a_region_restarted_after_retention_deleted_its_own_batches_keeps_replicating() {
    let plan = MeshPlan::new(&["east", "west"])
        .expect("plan")
        .flag(0, "--log-retention-check-interval-ms", 100)
        .flag(0, "--log-segment-bytes-min", 1)
        .flag(1, "--log-segment-bytes-min", 1);
    with_mesh(plan, |mesh| {
        let topic = topic_name("retained");
        // One batch per segment; retention a second after the records' timestamps.
        create_topic(
            mesh.region(0),
            &topic,
            1,
            &[("segment.bytes", "100"), ("retention.ms", "1000")],
        )?;
        wait_topic_everywhere(mesh, &topic, 1)?;
        let (east, west) = (
            acks_all_producer(mesh.region(0))?,
            acks_all_producer(mesh.region(1))?,
        );
        for i in 0..5 {
            produce_all(&east, &topic, &[TestRecord::value(format!("east-{i}"))])?;
        }
        wait_for_payload(mesh.region(1), &topic, 0, "east-4", CONVERGE_TIMEOUT)?;
        for i in 0..3 {
            produce_all(&west, &topic, &[TestRecord::value(format!("west-{i}"))])?;
        }
        wait_for_payload(mesh.region(0), &topic, 0, "west-2", CONVERGE_TIMEOUT)?;
        // East deletes every closed segment: only the active one (west's last batch) is left.
        let deleted = wait_until(CONVERGE_TIMEOUT, || {
            watermarks(mesh.region(0), &topic).is_ok_and(|(low, high)| high == 8 && low == 7)
        });
        if !deleted {
            bail!(
                "east's retention did not delete down to the last batch: {:?}",
                watermarks(mesh.region(0), &topic)
            );
        }
        drop((east, west));
        mesh.region_mut(0).restart()?;
        produce_all(
            &acks_all_producer(mesh.region(0))?,
            &topic,
            &[TestRecord::value("east-after-restart")],
        )?;
        produce_all(
            &acks_all_producer(mesh.region(1))?,
            &topic,
            &[TestRecord::value("west-after-restart")],
        )?;
        wait_for_payload(
            mesh.region(1),
            &topic,
            0,
            "east-after-restart",
            Duration::from_secs(15),
        )
        .context("west never got east's record written after the restart")?;
        wait_for_payload(
            mesh.region(0),
            &topic,
            0,
            "west-after-restart",
            Duration::from_secs(15),
        )
        .context("east never got west's record written after the restart")?;
        ensure_eq!(watermarks(mesh.region(1), &topic)?.1, 10, "west's log end");
        mesh.ensure_no_batch_refusals()
    });
}

/// Issue 11: regions run with different `--message-max-bytes`, so a record east accepts is
/// larger than west's default `max.message.bytes`. West must apply it anyway (size limits judge
/// produce from clients, not batches already accepted at their origin), and nothing else may
/// stall: another partition on the same link, later records of the same partition, local
/// produce in west and replication back to east. Before the fix west's log refused the batch,
/// which stopped the link for every partition and made local produce fail.
#[test]
fn a_record_over_the_peers_size_limit_replicates_and_stalls_nothing() {
    const BIG: usize = 2 << 20;
    let plan =
        MeshPlan::new(&["east", "west"])
            .expect("plan")
            .flag(0, "--message-max-bytes", 4 << 20);
    with_mesh(plan, |mesh| {
        let topic = topic_name("large");
        create_topic(mesh.region(0), &topic, 2, &[])?;
        wait_topic_everywhere(mesh, &topic, 2)?;
        let big_producer: FutureProducer = mesh
            .region(0)
            .producer_config()
            .set("acks", "all")
            .set("message.max.bytes", (4 << 20).to_string())
            .create()?;
        produce_all(
            &big_producer,
            &topic,
            &[TestRecord::value(vec![b'b'; BIG]).partition(0)],
        )?;
        produce_all(
            &acks_all_producer(mesh.region(0))?,
            &topic,
            &[
                TestRecord::value("east-small-0").partition(0),
                TestRecord::value("east-small-1").partition(1),
            ],
        )?;
        let west = mesh.region(1);
        wait_for_payload(west, &topic, 1, "east-small-1", Duration::from_secs(15))
            .context("the other partition stalled behind the large batch")?;
        wait_for_payload(west, &topic, 0, "east-small-0", Duration::from_secs(15))
            .context("the partition stalled at the large batch")?;
        produce_all(
            &acks_all_producer(west)?,
            &topic,
            &[TestRecord::value("west-local").partition(0)],
        )
        .context("local produce in west after the large batch")?;
        wait_for_payload(
            mesh.region(0),
            &topic,
            0,
            "west-local",
            Duration::from_secs(15),
        )?;
        let sizes: Vec<usize> = read_all(west, &topic, 0)?
            .iter()
            .map(|m| m.payload().map_or(0, <[u8]>::len))
            .collect();
        ensure_eq!(sizes.first(), Some(&BIG), "west's copy of the large record");
        ensure_eq!(sizes.len(), 3);
        mesh.ensure_no_batch_refusals()
    });
}

/// Issue 11: DeleteRecords is a region's own (offsets are per region) and, like retention,
/// never deletes what another region has not got. Before the fix east deleted the segments at
/// once; west, down meanwhile, then received only the later batches, which depend on the
/// deleted ones, queued them forever and never showed another record of the partition.
#[test]
fn delete_records_in_one_region_leaves_every_batch_for_a_region_that_lacks_it() {
    use rdkafka::TopicPartitionList;
    let plan = MeshPlan::new(&["east", "west"])
        .expect("plan")
        .flag(0, "--log-retention-check-interval-ms", 100)
        .flag(0, "--log-segment-bytes-min", 1);
    with_mesh(plan, |mesh| {
        let topic = topic_name("delrec");
        create_topic(mesh.region(0), &topic, 1, &[("segment.bytes", "2048")])?;
        wait_topic_everywhere(mesh, &topic, 1)?;
        mesh.region_mut(1).kill9();
        let producer = acks_all_producer(mesh.region(0))?;
        let records = |phase: &str, n: usize| -> Vec<TestRecord> {
            (0..n)
                .map(|i| TestRecord::value(format!("{phase}-{i:04}-{}", "x".repeat(100))))
                .collect()
        };
        for chunk in records("before", 300).chunks(10) {
            produce_all(&producer, &topic, chunk)?;
        }
        let admin = mesh.region(0).admin();
        let mut deleted = TopicPartitionList::new();
        deleted.add_partition_offset(&topic, 0, rdkafka::Offset::Offset(300))?;
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let result = block_on(admin.delete_records(&deleted, &options))?;
        let partition = result
            .find_partition(&topic, 0)
            .context("no partition in the DeleteRecords result")?;
        partition.error().context("DeleteRecords")?;
        // Many maintenance passes run while west is away.
        std::thread::sleep(Duration::from_millis(1500));
        ensure_eq!(
            watermarks(mesh.region(0), &topic)?,
            (300, 300),
            "east's watermarks after DeleteRecords"
        );
        produce_all(&producer, &topic, &records("after", 10))?;
        mesh.region_mut(1).restart()?;
        // West receives every batch east held when it went down, then the new ones.
        let caught_up = wait_until(CONVERGE_TIMEOUT, || {
            watermarks(mesh.region(1), &topic).is_ok_and(|(_, high)| high == 310)
        });
        if !caught_up {
            bail!(
                "west holds {:?} of east's 310 records after restarting",
                watermarks(mesh.region(1), &topic)
            );
        }
        // West's own log is untouched by east's DeleteRecords.
        ensure_eq!(watermarks(mesh.region(1), &topic)?.0, 0, "west's log start");
        // Once west holds everything, east deletes the segments below its log start.
        let dir = mesh.region(0).partition_dir(&topic, 0);
        let removed = wait_until(Duration::from_secs(20), || {
            segment_files(&dir).is_ok_and(|files| files.len() <= 2)
        });
        if !removed {
            bail!(
                "east still holds {:?} segments below its log start",
                segment_files(&dir).map(|f| f.len())
            );
        }
        mesh.ensure_no_batch_refusals()
    });
}

#[test]
fn a_batch_damaged_on_one_regions_disk_reaches_a_lagging_region_from_another() {
    let plan = MeshPlan::new(&NAMES).expect("allocate ports");
    let (plan, us_to_eu) = through_proxy(plan, 1, 0).expect("a proxy");
    let (plan, us_to_ap) = through_proxy(plan, 1, 2).expect("a proxy");
    with_mesh(plan, |mesh| {
        let topic = topic_name("damaged");
        create_topic(mesh.region(0), &topic, 1, &[])?;
        wait_topic_everywhere(mesh, &topic, 1)?;
        // us hears from nobody while eu writes and ap copies.
        us_to_eu.cut_until_restored();
        us_to_ap.cut_until_restored();
        let producer = acks_all_producer(mesh.region(0))?;
        let sent: Vec<TestRecord> = (0..50)
            .map(|i| TestRecord::value(format!("eu-{i:03}")))
            .collect();
        for chunk in sent.chunks(5) {
            produce_all(&producer, &topic, chunk)?;
        }
        let copied = wait_until(CONVERGE_TIMEOUT, || {
            watermarks(mesh.region(2), &topic).is_ok_and(|(_, high)| high == 50)
        });
        if !copied {
            bail!(
                "ap holds {:?} of eu's 50 records",
                watermarks(mesh.region(2), &topic)
            );
        }

        // eu's disk damages its third batch (page cache included: the broker reads the change).
        let log_path = mesh
            .region(0)
            .partition_dir(&topic, 0)
            .join("00000000000000000000.log");
        let log = std::fs::read(&log_path)?;
        let spans = batch_spans(&log);
        ensure_eq!(spans.len() >= 4, true, "eu's log holds several batches");
        let last_byte = spans[2].0 + spans[2].1 - 1;
        std::os::unix::fs::FileExt::write_all_at(
            &std::fs::OpenOptions::new().write(true).open(&log_path)?,
            &[log[last_byte] ^ 0xFF],
            last_byte as u64,
        )?;

        // us reaches eu only: it gets the damaged copy, refuses it, and stays short.
        us_to_eu.restore();
        let found = wait_until(CONVERGE_TIMEOUT, || {
            metric(mesh.region(0), "causeway_storage_corrupt_batches_total")
                .is_ok_and(|v| v.unwrap_or(0.0) >= 1.0)
        });
        if !found {
            bail!(
                "eu never reported its damaged batch:\n{}",
                mesh.diagnostics()
            );
        }
        std::thread::sleep(Duration::from_secs(2));
        let (_, short) = watermarks(mesh.region(1), &topic)?;
        ensure_eq!(
            short < 50,
            true,
            "us holds {short} records before reaching ap"
        );
        let (_, readyz) = http_get(mesh.region(0).http_addr(), "/readyz")?;
        ensure_eq!(
            readyz.contains(&format!("damaged batch: {topic}-0")),
            true,
            "eu's /readyz: {readyz}"
        );

        // Once ap is reachable, us fetches eu's batch from ap's intact copy.
        us_to_ap.restore();
        let healed = wait_until(CONVERGE_TIMEOUT, || {
            watermarks(mesh.region(1), &topic).is_ok_and(|(_, high)| high == 50)
        });
        if !healed {
            bail!(
                "us holds {:?} of 50 records after reaching ap:\n{}",
                watermarks(mesh.region(1), &topic),
                mesh.diagnostics()
            );
        }
        let got: Vec<String> = read_all(mesh.region(1), &topic, 0)?
            .iter()
            .map(payload_str)
            .collect();
        let want: Vec<String> = sent
            .iter()
            .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into())
            .collect();
        ensure_eq!(got, want, "us's copy of eu's records");
        Ok(())
    });
}
