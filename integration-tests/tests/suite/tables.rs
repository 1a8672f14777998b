//! Tables: records produced with rdkafka and kcat into a compacted topic become CRDT rows served
//! over HTTP; rows survive a restart and are rebuilt identically when their store is lost.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use causeway_integration_tests::{
    create_topic, ensure_eq, http_get, kcat, produce_all, topic_name, wait_until, with_broker,
    BrokerOptions, BrokerProcess, TestRecord,
};
use serde_json::{json, Value};

fn record(key: &str, value: Option<&str>, headers: &[(&str, &str)]) -> TestRecord {
    let mut r = TestRecord {
        value: value.map(|v| v.as_bytes().to_vec()),
        ..Default::default()
    }
    .key(key);
    for (k, v) in headers {
        r = r.header(k, Some(v.as_bytes()));
    }
    r
}

/// Polls a row until `want` says it is what the test waits for (the materializer runs behind
/// the log).
fn wait_for_row(
    broker: &BrokerProcess,
    topic: &str,
    key: &str,
    want: impl Fn(u16, &Value) -> bool,
) -> Result<(u16, Value)> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = http_get(
            broker.http_addr(),
            &format!("/v1/tables/{topic}/rows/{key}"),
        )?;
        let value: Value = serde_json::from_str(&body).with_context(|| format!("body {body:?}"))?;
        if want(status, &value) {
            return Ok((status, value));
        }
        if Instant::now() > deadline {
            bail!("row {key} of {topic} is still {status} {value}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn scan(broker: &BrokerProcess, topic: &str) -> Result<Value> {
    let (status, body) = http_get(
        broker.http_addr(),
        &format!("/v1/tables/{topic}/rows?limit=1000"),
    )?;
    if status != 200 {
        bail!("scan answered {status}: {body}");
    }
    Ok(serde_json::from_str(&body)?)
}

/// Stops the broker, deletes its RocksDB rows, restarts it and waits until the rows rebuilt from
/// the log equal `before`.
fn rebuild_rows_from_the_log(
    broker: &mut BrokerProcess,
    topic: &str,
    before: &Value,
) -> Result<()> {
    broker.terminate()?;
    std::fs::remove_dir_all(broker.data_dir().join("tables"))?;
    broker.restart()?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let rebuilt = scan(broker, topic)?;
        if &rebuilt == before {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("rows rebuilt from the log differ: {rebuilt} vs {before}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn write_operations(broker: &BrokerProcess, topic: &str) -> Result<()> {
    let records = vec![
        record("alice", Some(r#"{"name":"Alice","age":30}"#), &[]),
        record(
            "alice",
            Some(r#"{"age":31,"address":{"city":"Oslo"}}"#),
            &[("causeway.op", "patch")],
        ),
        record("alice", Some(r#"{"visits":2}"#), &[("causeway.op", "incr")]),
        record("alice", Some(r#"{"visits":5}"#), &[("causeway.op", "incr")]),
        record(
            "alice",
            Some(r#"["admin","dev"]"#),
            &[("causeway.op", "add"), ("causeway.path", "/roles")],
        ),
        record(
            "alice",
            Some(r#"["dev"]"#),
            &[("causeway.op", "remove"), ("causeway.path", "/roles")],
        ),
        record("bob", Some(r#"{"name":"Bob"}"#), &[]),
        record("bob", None, &[]),
        // Pinned to partition 1 so the test knows which partition its refusal names.
        TestRecord {
            partition: Some(1),
            ..record("carol", Some("not json"), &[("causeway.op", "patch")])
        },
    ];
    produce_all(&broker.producer(), topic, &records)?;
    let bootstrap = broker.bootstrap();
    let out = kcat(
        &[
            "-b",
            &bootstrap,
            "-P",
            "-t",
            topic,
            "-K:",
            "-H",
            "causeway.op=patch",
        ],
        b"dave:{\"team\":\"blue\"}\n",
        Duration::from_secs(20),
    )?;
    if !out.status.success() {
        bail!("kcat failed: {}", out.stderr);
    }
    Ok(())
}

#[test]
fn patches_counters_sets_and_tombstones_become_rows_that_survive_restart_and_rebuild() {
    with_broker(BrokerOptions::new(), |broker| {
        let topic = topic_name("table");
        create_topic(broker, &topic, 2, &[("cleanup.policy", "compact")])?;
        write_operations(broker, &topic)?;
        let (_, alice) = wait_for_row(broker, &topic, "alice", |s, v| {
            s == 200 && v["value"]["roles"].is_array()
        })?;
        let expected =
            json!({"name":"Alice","age":31,"address":{"city":"Oslo"},"visits":7,"roles":["admin"]});
        if alice["value"] != expected {
            bail!("alice is {}, expected {expected}", alice["value"]);
        }
        if !alice["version"]["hlc"].is_u64() {
            bail!("alice has no version: {alice}");
        }
        wait_for_row(broker, &topic, "dave", |s, _| s == 200)?;
        // Every record applied (alice 6, bob 2, dave 1) or refused (carol): then check the rest.
        let merged = format!("causeway_table_merges_total{{topic=\"{topic}\"}} 9");
        let refused = format!(
            "causeway_table_refused_records_total{{topic=\"{topic}\",reason=\"not_json\"}} 1"
        );
        // alice and dave are live; bob was deleted and carol never written.
        let live = format!("causeway_table_rows{{topic=\"{topic}\"}} 2");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (_, metrics) = http_get(broker.http_addr(), "/metrics")?;
            if metrics.contains(&merged) && metrics.contains(&refused) && metrics.contains(&live) {
                break;
            }
            if Instant::now() > deadline {
                bail!("not every record was applied or refused:\n{metrics}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // The refusal is logged with its partition and key, so an operator can find the record.
        let logged = wait_until(Duration::from_secs(10), || {
            broker.stderr().lines().any(|line| {
                line.contains("record refused by the table")
                    && line.contains(&topic)
                    && line.contains("partition=1")
                    && line.contains("key=\"carol\"")
            })
        });
        if !logged {
            bail!(
                "no refusal line names partition 1 and key carol:\n{}",
                broker.stderr_tail(20)
            );
        }
        for key in ["bob", "carol"] {
            let (status, body) = http_get(
                broker.http_addr(),
                &format!("/v1/tables/{topic}/rows/{key}"),
            )?;
            if status != 404 {
                bail!("{key} should be absent: {status} {body}");
            }
        }
        let cli = |args: &[&str]| -> Result<(i32, String)> {
            let output = std::process::Command::new(causeway_integration_tests::broker_binary()?)
                .arg("table")
                .args(args)
                .args(["--http", &broker.http_addr().to_string()])
                .output()?;
            Ok((
                output.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&output.stdout).into_owned(),
            ))
        };
        let (code, got) = cli(&["get", &topic, "alice"])?;
        let got: Value = serde_json::from_str(got.trim())?;
        if code != 0 || got["value"] != expected {
            bail!("causeway table get answered {code}: {got}");
        }
        let (code, scanned) = cli(&["scan", &topic, "--page", "1"])?;
        let keys: Vec<String> = scanned
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| v["key"].as_str().map(str::to_string))
            .collect();
        if code != 0 || keys != ["alice", "dave"] {
            bail!("causeway table scan answered {code}: {keys:?}");
        }
        let (code, _) = cli(&["get", &topic, "bob"])?;
        if code != 1 {
            bail!("causeway table get of a deleted row exited {code}");
        }
        let before = scan(broker, &topic)?;
        broker.restart()?;
        if scan(broker, &topic)? != before {
            bail!("rows changed across a restart");
        }
        rebuild_rows_from_the_log(broker, &topic, &before)
    });
}

#[test]
fn topics_that_are_not_tables_and_unknown_topics_get_clear_errors() {
    with_broker(BrokerOptions::new(), |broker| {
        let topic = topic_name("plain");
        create_topic(broker, &topic, 1, &[])?;
        let (status, body) = http_get(broker.http_addr(), &format!("/v1/tables/{topic}/rows/k"))?;
        if status != 400 || !body.contains("not a table") {
            bail!("plain topic answered {status} {body}");
        }
        let (status, _) = http_get(broker.http_addr(), "/v1/tables/no-such-topic/rows/k")?;
        if status != 404 {
            bail!("unknown topic answered {status}");
        }
        let table = topic_name("t");
        create_topic(broker, &table, 1, &[("cleanup.policy", "compact")])?;
        let (status, body) = http_get(
            broker.http_addr(),
            &format!("/v1/tables/{table}/rows?limit=0"),
        )?;
        if status != 400 {
            bail!("limit=0 answered {status} {body}");
        }
        Ok(())
    });
}

#[test]
fn a_table_deleted_and_created_again_starts_without_rows() {
    with_broker(BrokerOptions::new(), |broker| {
        let topic = topic_name("reborn");
        create_topic(broker, &topic, 1, &[("cleanup.policy", "compact")])?;
        produce_all(
            &broker.producer(),
            &topic,
            &[record("k", Some(r#"{"v":1}"#), &[])],
        )?;
        wait_for_row(broker, &topic, "k", |s, _| s == 200)?;
        let admin = broker.admin();
        let deleted = causeway_integration_tests::block_on(
            admin.delete_topics(&[&topic], &rdkafka::admin::AdminOptions::new()),
        )?;
        if !deleted.iter().all(|r| r.is_ok()) {
            bail!("delete failed: {deleted:?}");
        }
        create_topic(broker, &topic, 1, &[("cleanup.policy", "compact")])?;
        let (status, body) = http_get(broker.http_addr(), &format!("/v1/tables/{topic}/rows/k"))?;
        if status != 404 {
            bail!("the recreated table shows the old row: {status} {body}");
        }
        Ok(())
    });
}

/// Reads partition 0 of `topic` from offset 0 to its end: (key, value, has the row header).
fn read_log(broker: &BrokerProcess, topic: &str) -> Result<Vec<(String, Option<String>, bool)>> {
    use rdkafka::message::{Headers, Message};
    let messages = causeway_integration_tests::read_to_end(
        &broker.bootstrap(),
        topic,
        0,
        rdkafka::Offset::Beginning,
    )?;
    Ok(messages
        .iter()
        .map(|m| {
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
            let value = m.payload().map(|v| String::from_utf8_lossy(v).into_owned());
            let has_row = m
                .headers()
                .is_some_and(|h| h.iter().any(|h| h.key == "causeway.row"));
            (key, value, has_row)
        })
        .collect())
}

fn metric_value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|rest| rest.trim().parse().ok())
}

/// A broker that runs maintenance every 200 ms and lets topics roll tiny segments, so a test's
/// few records fill closed segments the cleaner compacts within a second.
fn compacting_often() -> BrokerOptions {
    BrokerOptions::new()
        .flag("--log-retention-check-interval-ms", 200)
        .flag("--log-segment-bytes-min", 1)
        .flag("--log-segment-ms-min", 0)
}

#[test]
fn compaction_keeps_one_merged_record_per_key_drops_old_tombstones_and_rows_rebuild_identically() {
    let options = compacting_often();
    with_broker(options, |broker| {
        let topic = topic_name("compacted");
        create_topic(
            broker,
            &topic,
            1,
            &[
                ("cleanup.policy", "compact"),
                ("segment.bytes", "300"),
                ("segment.ms", "300"),
                ("delete.retention.ms", "3000"),
            ],
        )?;
        let producer = broker.producer();
        produce_all(
            &producer,
            &topic,
            &[
                record("gone", Some(r#"{"soon":"deleted"}"#), &[]),
                record("doc", Some(r#"{"title":"draft","tags":[]}"#), &[]),
            ],
        )?;
        for i in 0..25 {
            produce_all(
                &producer,
                &topic,
                &[
                    record("plain", Some(&format!(r#"{{"v":{i}}}"#)), &[]),
                    record("views", Some(r#"{"n":1}"#), &[("causeway.op", "incr")]),
                    record(
                        "doc",
                        Some(&format!(r#"{{"title":"rev {i}"}}"#)),
                        &[("causeway.op", "patch")],
                    ),
                ],
            )?;
            if i == 3 {
                produce_all(&producer, &topic, &[record("gone", None, &[])])?;
            }
            if i == 10 {
                produce_all(
                    &producer,
                    &topic,
                    &[record(
                        "doc",
                        Some(r#"["a","b"]"#),
                        &[("causeway.op", "add"), ("causeway.path", "/tags")],
                    )],
                )?;
            }
        }
        produce_all(&producer, &topic, &[record("end", Some("{}"), &[])])?;
        // The newest closed segment waits while the active one is empty (segment.ms rolls it
        // in the background), as Kafka never compacts the segment holding the newest data: a
        // later write lets everything up to `end` be compacted.
        std::thread::sleep(Duration::from_millis(700));
        produce_all(&producer, &topic, &[record("tail", Some("{}"), &[])])?;
        wait_for_row(broker, &topic, "tail", |s, _| s == 200)?;
        let before = scan(broker, &topic)?;
        let expected = json!({"plain": {"v": 24}, "views": {"n": 25}});
        for (key, value) in expected.as_object().into_iter().flatten() {
            let (_, row) = wait_for_row(broker, &topic, key, |s, _| s == 200)?;
            if &row["value"] != value {
                bail!(
                    "{key} is {} before compaction, expected {value}",
                    row["value"]
                );
            }
        }
        let records_before = read_log(broker, &topic)?.len();
        // Wait until a consumer from offset 0 sees one record per key and no tombstone (after
        // delete.retention.ms): the cleaner ran at least twice.
        let reclaimed = format!("causeway_compaction_bytes_reclaimed_total{{topic=\"{topic}\"}}");
        let deadline = Instant::now() + Duration::from_secs(40);
        let log = loop {
            let log = read_log(broker, &topic)?;
            let mut keys: Vec<&str> = log.iter().map(|(k, _, _)| k.as_str()).collect();
            keys.sort_unstable();
            if keys == ["doc", "end", "plain", "tail", "views"] {
                break log;
            }
            if Instant::now() > deadline {
                let files =
                    causeway_integration_tests::segment_files(&broker.partition_dir(&topic, 0))?;
                bail!(
                    "the log still reads {log:?} ({records_before} records before compaction); files {files:?}"
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        for (key, value, has_row) in &log {
            if key == "tail" {
                continue;
            }
            if !has_row {
                bail!("compacted record of {key} has no causeway.row header");
            }
            let (_, row) = wait_for_row(broker, &topic, key, |s, _| s == 200)?;
            let value: Value = serde_json::from_str(value.as_deref().unwrap_or("null"))?;
            if value != row["value"] {
                bail!(
                    "compacted record of {key} holds {value}, the row is {}",
                    row["value"]
                );
            }
        }
        let (_, metrics) = http_get(broker.http_addr(), "/metrics")?;
        if metric_value(&metrics, &reclaimed).is_none_or(|v| v <= 0.0) {
            bail!("no bytes reclaimed reported:\n{metrics}");
        }
        // kcat reads the same keys.
        let out = kcat(
            &[
                "-b",
                &broker.bootstrap(),
                "-C",
                "-t",
                &topic,
                "-o",
                "beginning",
                "-e",
                "-f",
                "%k\n",
            ],
            b"",
            Duration::from_secs(20),
        )?;
        let mut kcat_keys: Vec<&str> = out.stdout.lines().collect();
        kcat_keys.sort_unstable();
        if kcat_keys != ["doc", "end", "plain", "tail", "views"] {
            bail!("kcat reads {kcat_keys:?}: {}", out.stderr);
        }
        if scan(broker, &topic)? != before {
            bail!("rows changed by compaction");
        }
        rebuild_rows_from_the_log(broker, &topic, &before)
    });
}

/// Opens the change feed of `topic` with a real HTTP client (ureq) and forwards its non-empty
/// lines over a channel until the stream ends (the channel then closes).
fn open_feed(
    broker: &BrokerProcess,
    topic: &str,
    query: &str,
    accept: &str,
) -> Result<std::sync::mpsc::Receiver<String>> {
    use std::io::BufRead;
    let url = format!(
        "http://{}/v1/tables/{topic}/changes{query}",
        broker.http_addr()
    );
    let response = ureq::get(&url).header("Accept", accept).call()?;
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let wanted = if accept == "text/event-stream" {
        "text/event-stream"
    } else {
        "application/x-ndjson"
    };
    if content_type != wanted {
        bail!("the feed answered content type {content_type:?}");
    }
    let reader = std::io::BufReader::new(response.into_body().into_reader());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in reader.lines() {
            let Ok(line) = line else { return };
            if !line.is_empty() && tx.send(line).is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

fn next_lines(feed: &std::sync::mpsc::Receiver<String>, n: usize) -> Result<Vec<String>> {
    (0..n)
        .map(|i| {
            feed.recv_timeout(Duration::from_secs(15))
                .with_context(|| format!("feed line {i} of {n} never came"))
        })
        .collect()
}

#[test]
fn the_change_feed_replays_from_an_offset_follows_live_writes_and_ends_at_shutdown() {
    with_broker(BrokerOptions::new(), |broker| {
        let topic = topic_name("feed");
        create_topic(broker, &topic, 1, &[("cleanup.policy", "compact")])?;
        let producer = broker.producer();
        produce_all(
            &producer,
            &topic,
            &[
                record("skipped", Some(r#"{"old":true}"#), &[]),
                record("a", Some(r#"{"x":1}"#), &[]),
                record("b", Some(r#"{"n":1}"#), &[("causeway.op", "incr")]),
            ],
        )?;
        // From offset 1: the history after the first record, then live writes.
        let feed = open_feed(broker, &topic, "?from=1", "*/*")?;
        let live = open_feed(broker, &topic, "", "text/event-stream")?;
        produce_all(
            &producer,
            &topic,
            &[
                record("a", Some(r#"{"y":2}"#), &[("causeway.op", "patch")]),
                record("b", Some(r#"{"n":4}"#), &[("causeway.op", "incr")]),
                record("b", None, &[]),
            ],
        )?;
        let lines: Vec<Value> = next_lines(&feed, 5)?
            .iter()
            .map(|l| serde_json::from_str(l).with_context(|| format!("line {l:?}")))
            .collect::<Result<_>>()?;
        let summary: Vec<(i64, String, Value)> = lines
            .iter()
            .map(|l| {
                let state = if l["deleted"] == json!(true) {
                    json!("deleted")
                } else {
                    l["value"].clone()
                };
                (
                    l["offset"].as_i64().unwrap_or(-1),
                    l["key"].as_str().unwrap_or_default().to_string(),
                    state,
                )
            })
            .collect();
        let expected = vec![
            (1, "a".to_string(), json!({"x":1})),
            (2, "b".to_string(), json!({"n":1})),
            (3, "a".to_string(), json!({"x":1,"y":2})),
            (4, "b".to_string(), json!({"n":5})),
            (5, "b".to_string(), json!("deleted")),
        ];
        if summary != expected {
            bail!("the feed read {summary:?}");
        }
        if lines
            .iter()
            .any(|l| l["partition"] != json!(0) || !l["version"]["hlc"].is_u64())
        {
            bail!("feed lines lack partition or version: {lines:?}");
        }
        // The live SSE feed started at the end: it sees only the three new writes.
        let events = next_lines(&live, 6)?;
        let ids: Vec<&str> = events
            .iter()
            .filter_map(|l| l.strip_prefix("id: "))
            .collect();
        if ids != ["0:3", "0:4", "0:5"] {
            bail!("the live feed read {events:?}");
        }
        let last: Value = serde_json::from_str(
            events[5]
                .strip_prefix("data: ")
                .context("an SSE data line")?,
        )?;
        if last["key"] != "b" || last["deleted"] != json!(true) {
            bail!("the live feed's last event is {last}");
        }
        // Errors are plain HTTP answers.
        let (status, _) = http_get(
            broker.http_addr(),
            &format!("/v1/tables/{topic}/changes?from=-1"),
        )?;
        if status != 400 {
            bail!("from=-1 answered {status}");
        }
        // Shutdown ends open feeds, and the broker still stops gracefully.
        let status = broker.terminate()?;
        if !status.success() {
            bail!("the broker exited with {status} while feeds were open");
        }
        let ended = |rx: &std::sync::mpsc::Receiver<String>| {
            matches!(
                rx.recv_timeout(Duration::from_secs(10)),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
            )
        };
        if !ended(&feed) || !ended(&live) {
            bail!("a feed did not end when the broker shut down");
        }
        broker.restart()?;
        Ok(())
    });
}

/// Writes `count` versions of one key's row, each in its own batch (so small segments roll
/// between them).
fn update_one_key(
    producer: &rdkafka::producer::FutureProducer,
    topic: &str,
    count: usize,
) -> Result<()> {
    for i in 0..count {
        produce_all(
            producer,
            topic,
            &[record("plain", Some(&format!(r#"{{"v":{i}}}"#)), &[])],
        )?;
    }
    Ok(())
}

/// `min.compaction.lag.ms` keeps records uncompacted for at least that long: a table whose
/// records are all older than its lag once written is compacted no earlier than the lag after
/// its first write (without the setting, the same writes are compacted within a second or two).
#[test]
fn min_compaction_lag_keeps_records_uncompacted_for_the_lag() {
    const LAG_MS: u64 = 4_000;
    let options = compacting_often();
    with_broker(options, |broker| {
        let topic = topic_name("patient");
        create_topic(
            broker,
            &topic,
            1,
            &[
                ("cleanup.policy", "compact"),
                ("segment.bytes", "300"),
                ("segment.ms", "300"),
                ("min.compaction.lag.ms", &LAG_MS.to_string()),
            ],
        )?;
        let producer = broker.producer();
        let first_write = Instant::now();
        update_one_key(&producer, &topic, 20)?;
        let reclaimed = format!("causeway_compaction_bytes_reclaimed_total{{topic=\"{topic}\"}}");
        let mut tail = 0;
        let compacted = loop {
            // Later writes roll the segments before them, so they can be compacted.
            tail += 1;
            produce_all(
                &producer,
                &topic,
                &[record("tail", Some(&format!("{tail}")), &[])],
            )?;
            let (_, metrics) = http_get(broker.http_addr(), "/metrics")?;
            if metric_value(&metrics, &reclaimed).is_some_and(|bytes| bytes > 0.0) {
                break first_write.elapsed();
            }
            if first_write.elapsed() > Duration::from_secs(30) {
                bail!("nothing compacted within 30 s");
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        if compacted < Duration::from_millis(LAG_MS) {
            bail!("compacted {compacted:?} after the first write, under min.compaction.lag.ms={LAG_MS}");
        }
        Ok(())
    });
}

/// `min.cleanable.dirty.ratio` holds compaction back (a ratio of 1 never compacts by ratio)
/// until `max.compaction.lag.ms` forces it: the closed segments of a burst of writes are
/// compacted no earlier than the lag after the first write, and without another write; a
/// `min.compaction.lag.ms` above the max is refused, as Kafka refuses it.
#[test]
fn max_compaction_lag_compacts_what_the_dirty_ratio_holds_back() {
    const LAG_MS: u64 = 3_000;
    with_broker(compacting_often(), |broker| {
        let topic = topic_name("lagging");
        let lag = LAG_MS.to_string();
        let refused = create_topic(
            broker,
            &topic,
            1,
            &[
                ("cleanup.policy", "compact"),
                ("min.compaction.lag.ms", "5000"),
                ("max.compaction.lag.ms", &lag),
            ],
        );
        ensure!(
            refused
                .as_ref()
                .is_err_and(|e| format!("{e:#}").contains("InvalidConfig")),
            "min.compaction.lag.ms above the max: {refused:?}"
        );
        create_topic(
            broker,
            &topic,
            1,
            &[
                ("cleanup.policy", "compact"),
                ("segment.bytes", "300"),
                ("min.cleanable.dirty.ratio", "1.0"),
                ("max.compaction.lag.ms", &lag),
            ],
        )?;
        let producer = broker.producer();
        let first_write = Instant::now();
        update_one_key(&producer, &topic, 20)?;
        let reclaimed = format!("causeway_compaction_bytes_reclaimed_total{{topic=\"{topic}\"}}");
        let compacted = wait_until(Duration::from_secs(30), || {
            http_get(broker.http_addr(), "/metrics").is_ok_and(|(_, metrics)| {
                metric_value(&metrics, &reclaimed).is_some_and(|b| b > 0.0)
            })
        });
        let elapsed = first_write.elapsed();
        ensure!(
            compacted,
            "nothing compacted within 30 s of a {LAG_MS} ms max lag"
        );
        ensure!(
            elapsed >= Duration::from_millis(LAG_MS),
            "compacted {elapsed:?} after the first write, though the dirty ratio of 1 holds it back until max.compaction.lag.ms={LAG_MS}"
        );
        Ok(())
    });
}

/// A client writing more distinct keys than `--log-cleaner-memory-bytes` holds rows for cannot
/// exhaust the broker's memory through compaction: passes stop at the bound (counted), and
/// nothing is lost: a consumer reading from the start sees every key's latest value, and the
/// table holds every row.
#[test]
fn a_table_with_more_rows_than_the_cleaners_memory_is_compacted_in_part_and_loses_nothing() {
    const KEYS: usize = 300;
    let options = compacting_often().flag("--log-cleaner-memory-bytes", 48 * 1024);
    with_broker(options, |broker| {
        let topic = topic_name("crowded");
        create_topic(
            broker,
            &topic,
            1,
            &[("cleanup.policy", "compact"), ("segment.bytes", "2000")],
        )?;
        let producer = broker.producer();
        for round in 0..2 {
            let value = format!(r#"{{"round":{round}}}"#);
            let records: Vec<TestRecord> = (0..KEYS)
                .map(|i| record(&format!("k{i:03}"), Some(&value), &[]))
                .collect();
            // Ten records a batch: about five batches to a segment.
            for chunk in records.chunks(10) {
                produce_all(&producer, &topic, chunk)?;
            }
        }
        let bound = format!("causeway_compaction_memory_bound_total{{topic=\"{topic}\"}}");
        ensure!(
            wait_until(Duration::from_secs(30), || {
                http_get(broker.http_addr(), "/metrics").is_ok_and(|(_, metrics)| {
                    metric_value(&metrics, &bound).is_some_and(|n| n > 0.0)
                })
            }),
            "no compaction pass stopped at the rows bound"
        );
        let mut latest = std::collections::BTreeMap::new();
        for (key, value, _) in read_log(broker, &topic)? {
            latest.insert(key, value);
        }
        ensure_eq!(latest.len(), KEYS);
        let last_round = Some(r#"{"round":1}"#.to_string());
        ensure!(
            latest.values().all(|v| *v == last_round),
            "a key lost its latest value: {latest:?}"
        );
        let rows = scan(broker, &topic)?;
        let count = rows["rows"].as_array().map_or(0, Vec::len);
        ensure_eq!(count, KEYS, "rows in the table: {rows}");
        Ok(())
    });
}

/// Each open change feed keeps its own copy of its table's rows, so a few hundred feeds on a
/// large table could exhaust memory: the rows of all open feeds share
/// `--change-feeds-memory-bytes`. A feed that would pass it ends with an error line and gives
/// its share back; the other feeds go on, and a new one opens.
#[test]
fn change_feeds_share_a_memory_budget_and_one_past_it_ends_with_an_error() {
    let options = BrokerOptions::new().flag("--change-feeds-memory-bytes", 64 * 1024);
    with_broker(options, |broker| {
        let producer = broker.producer();
        let row = |i: usize, pad: &str| {
            TestRecord::value(format!("{{\"i\":{i},\"pad\":\"{pad}\"}}"))
                .key(format!("key-{i:04}"))
                .partition(0)
        };
        let small = topic_name("feed-small");
        create_topic(broker, &small, 1, &[("cleanup.policy", "compact")])?;
        produce_all(&producer, &small, &[row(0, ""), row(1, "")])?;
        let small_feed = open_feed(broker, &small, "?from=0", "application/x-ndjson")?;
        next_lines(&small_feed, 2)?;

        // 200 rows of about 1 KiB: more than the whole budget.
        let big = topic_name("feed-big");
        create_topic(broker, &big, 1, &[("cleanup.policy", "compact")])?;
        let pad = "p".repeat(1024);
        let rows: Vec<TestRecord> = (0..200).map(|i| row(i, &pad)).collect();
        produce_all(&producer, &big, &rows)?;
        let big_feed = open_feed(broker, &big, "?from=0", "application/x-ndjson")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut lines = Vec::new();
        loop {
            match big_feed.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => lines.push(line),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
                Err(_) => bail!("the feed past the budget did not end within 30 s"),
            }
        }
        let last = lines.last().context("the feed sent no line")?;
        if !last.contains("\"error\"") || !last.contains("--change-feeds-memory-bytes") {
            bail!("the feed's last line is not the budget error: {last}");
        }
        if lines.len() > 100 {
            bail!("{} lines sent before the budget error", lines.len() - 1);
        }
        let (_, metrics) = http_get(broker.http_addr(), "/metrics")?;
        if metric_value(&metrics, "causeway_table_feeds_over_memory_total") != Some(1.0) {
            bail!("causeway_table_feeds_over_memory_total is not 1");
        }

        // The first feed goes on, and the ended feed's share is back for a new one.
        produce_all(&producer, &small, &[row(2, "")])?;
        let next = next_lines(&small_feed, 1)?;
        if !next[0].contains("key-0002") {
            bail!("the small feed's next line is {}", next[0]);
        }
        let again = open_feed(broker, &small, "?from=0", "application/x-ndjson")?;
        next_lines(&again, 3)?;
        Ok(())
    });
}
