//! Operations: what an operator scrapes, probes, signals and types. Prometheus text at
//! `/metrics` (checked with a parser, not string matching), health probes, SIGTERM under load,
//! the `causeway topic` CLI against a live broker, the three-region `docker/run-local.sh`, and the
//! Grafana dashboard's queries against a live `/metrics`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use causeway_integration_tests::load::{AcksAllLoad, LoadOutcome};
use causeway_integration_tests::{
    block_on, broker_binary, consume_n, create_topic, ensure_eq, free_port, http_get, payload_str,
    produce_all, produce_values, read_partition, read_to_end, topic_name, wait_until, with_broker,
    BrokerOptions, BrokerProcess, TestRecord,
};
use prometheus_parse::{LineInfo, Scrape, Value};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};

// ---------------------------------------------------------------------------------------------
// Prometheus scraping
// ---------------------------------------------------------------------------------------------

/// One scrape of `/metrics`: every sample line's metric name, and the value of each counter,
/// gauge or untyped sample by (name, sorted labels).
struct Metrics {
    names: BTreeSet<String>,
    values: BTreeMap<(String, Vec<(String, String)>), f64>,
}

impl Metrics {
    /// The value of `name` with exactly these labels (0 when the series does not exist yet:
    /// counters appear on their first increment).
    /// The sum of every series of `name` whose labels include `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.values
            .iter()
            .filter(|((series, series_labels), _)| {
                series == name
                    && labels
                        .iter()
                        .all(|(k, v)| series_labels.iter().any(|(sk, sv)| sk == k && sv == v))
            })
            .map(|(_, value)| value)
            .sum()
    }

    /// Whether `name` has any series.
    fn has(&self, name: &str) -> bool {
        self.names.contains(name)
    }
}

/// Parses Prometheus text format. Every non-empty line must be a comment, a HELP/TYPE line or a
/// sample the parser accepts with a numeric value; anything else fails the scrape.
fn parse_metrics(body: &str) -> Result<Metrics> {
    let mut names = BTreeSet::new();
    for (number, line) in body.lines().enumerate() {
        match LineInfo::parse(line) {
            LineInfo::Empty | LineInfo::Doc { .. } | LineInfo::Type { .. } => {}
            LineInfo::Sample {
                metric_name, value, ..
            } => {
                let numeric =
                    matches!(value, "+Inf" | "-Inf" | "NaN") || value.parse::<f64>().is_ok();
                if !numeric {
                    bail!(
                        "line {}: value {value:?} is not a number: {line:?}",
                        number + 1
                    );
                }
                names.insert(metric_name.to_string());
            }
            LineInfo::Ignored => {
                if !line.trim_start().starts_with('#') {
                    bail!(
                        "line {} is not Prometheus text format: {line:?}",
                        number + 1
                    );
                }
            }
        }
    }
    let scrape = Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .context("prometheus-parse rejected /metrics")?;
    let mut values = BTreeMap::new();
    for sample in scrape.samples {
        let value = match sample.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            Value::Histogram(_) | Value::Summary(_) => continue,
        };
        let mut labels: Vec<(String, String)> = sample
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.sort();
        values.insert((sample.metric, labels), value);
    }
    Ok(Metrics { names, values })
}

fn scrape(broker: &BrokerProcess) -> Result<Metrics> {
    let (code, body) = http_get(broker.http_addr(), "/metrics")?;
    ensure_eq!(code, 200, "GET /metrics");
    parse_metrics(&body)
}

/// Produces `values` to partition 0 and reads them back (a produce and a fetch).
fn produce_and_fetch(broker: &BrokerProcess, topic: &str, values: &[&str]) -> Result<()> {
    let offsets = produce_values(&broker.producer(), topic, 0, values)?;
    let first = offsets.first().copied().unwrap_or(0);
    let messages = read_partition(
        &broker.bootstrap(),
        topic,
        0,
        Offset::Offset(first),
        values.len(),
    )?;
    let read: Vec<String> = messages.iter().map(payload_str).collect();
    ensure_eq!(read, values.to_vec());
    Ok(())
}

#[test]
fn metrics_parse_as_prometheus_text_and_counters_move_after_produce_and_fetch() {
    with_broker(BrokerOptions::new(), |broker| {
        let topic = topic_name("metrics");
        let before = scrape(broker)?;
        let produce = [("api", "produce")];
        let by_topic = [("topic", topic.as_str())];
        ensure_eq!(
            before.value("causeway_produce_records_total", &by_topic),
            0.0
        );

        produce_and_fetch(broker, &topic, &["one", "two", "three"])?;
        let after = scrape(broker)?;

        let requests = after.value("causeway_requests_total", &produce)
            - before.value("causeway_requests_total", &produce);
        if requests < 1.0 {
            bail!("causeway_requests_total{{api=\"produce\"}} did not move: +{requests}");
        }
        ensure_eq!(
            after.value("causeway_produce_records_total", &by_topic),
            3.0,
            "records produced to {topic}"
        );
        if after.value("causeway_produce_bytes_total", &by_topic) <= 0.0 {
            bail!("causeway_produce_bytes_total{{topic={topic:?}}} did not move");
        }
        if after.value("causeway_fetch_bytes_total", &by_topic) <= 0.0 {
            bail!("causeway_fetch_bytes_total{{topic={topic:?}}} did not move");
        }
        let fetches = after.value("causeway_requests_total", &[("api", "fetch")]);
        if fetches < 1.0 {
            bail!("causeway_requests_total{{api=\"fetch\"}} is {fetches}");
        }
        // The latency histogram has its three series, and counted the produce requests.
        for suffix in ["_bucket", "_sum", "_count"] {
            let name = format!("causeway_request_duration_seconds{suffix}");
            if !after.has(&name) {
                bail!("{name} is missing from /metrics");
            }
        }
        if after.value("causeway_request_duration_seconds_count", &produce) < requests {
            bail!("the produce latency histogram counted fewer requests than the counter");
        }
        let end = after.value(
            "causeway_partition_log_end_offset",
            &[("topic", topic.as_str()), ("partition", "0")],
        );
        ensure_eq!(end, 3.0, "causeway_partition_log_end_offset");
        if after.value("causeway_connections_total", &[]) < 1.0 {
            bail!("causeway_connections_total did not count the clients");
        }
        Ok(())
    });
}

/// The standard process metrics and the identity gauges a dashboard over several regions joins
/// on: build version and commit, region name and id.
#[test]
fn process_and_identity_metrics_are_exported() {
    let options = BrokerOptions::new().flag("--region", "eu-west");
    with_broker(options, |broker| {
        let metrics = scrape(broker)?;
        for name in [
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_cpu_seconds_total",
        ] {
            ensure_eq!(metrics.has(name), true, "{name} exported");
        }
        ensure_eq!(
            metrics.value("process_open_fds", &[]) > 0.0,
            true,
            "open fds counted"
        );
        ensure_eq!(
            metrics.value(
                "causeway_build_info",
                &[("version", env!("CARGO_PKG_VERSION"))]
            ),
            1.0,
            "build info"
        );
        // The commit the binary was built from: 12 hex digits, or `unknown` outside a checkout.
        let commits: Vec<&String> = metrics
            .values
            .keys()
            .filter(|(name, _)| name == "causeway_build_info")
            .flat_map(|(_, labels)| labels.iter().filter(|(k, _)| k == "commit").map(|(_, v)| v))
            .collect();
        let well_formed =
            |c: &str| c == "unknown" || (c.len() == 12 && c.bytes().all(|b| b.is_ascii_hexdigit()));
        if commits.len() != 1 || !well_formed(commits[0]) {
            bail!("causeway_build_info commit labels: {commits:?}");
        }
        ensure_eq!(
            metrics.value("causeway_region_info", &[("region", "eu-west")]),
            1.0,
            "region info"
        );
        Ok(())
    });
}

/// A deleted topic's partition gauges and its groups' lag leave `/metrics` with it (they used
/// to be exported for the life of the process).
#[test]
fn a_deleted_topics_gauges_leave_the_scrape() {
    with_broker(BrokerOptions::new(), |broker| {
        let topic = topic_name("gone-gauges");
        produce_and_fetch(broker, &topic, &["a", "b"])?;
        let labels = [("topic", topic.as_str()), ("partition", "0")];
        let present = |metrics: &Metrics| {
            metrics.values.keys().any(|(name, series)| {
                name.starts_with("causeway_partition_")
                    && series.iter().any(|(k, v)| k == "topic" && *v == topic)
            })
        };
        let before = scrape(broker)?;
        ensure_eq!(
            before.value("causeway_partition_log_end_offset", &labels),
            2.0,
            "log end before the delete"
        );
        ensure_eq!(present(&before), true, "partition gauges before the delete");
        let admin = broker.admin();
        let deleted =
            block_on(admin.delete_topics(&[topic.as_str()], &rdkafka::admin::AdminOptions::new()))?;
        if let Some(Err(error)) = deleted.first() {
            bail!("delete failed: {error:?}");
        }
        let after = scrape(broker)?;
        ensure_eq!(present(&after), false, "partition gauges after the delete");
        Ok(())
    });
}

/// A deleted table's `causeway_table_rows` and `causeway_table_lag_*` leave `/metrics` with it,
/// like its partition gauges.
#[test]
fn a_deleted_tables_row_gauge_leaves_the_scrape() {
    with_broker(BrokerOptions::new(), |broker| {
        let table = topic_name("gone-table");
        create_topic(broker, &table, 1, &[("cleanup.policy", "compact")])?;
        produce_all(
            &broker.producer(),
            &table,
            &[TestRecord::value(r#"{"n":1}"#).key("k")],
        )?;
        let labels = [("topic", table.as_str())];
        let materialized = wait_until(Duration::from_secs(15), || {
            scrape(broker).is_ok_and(|m| m.value("causeway_table_rows", &labels) == 1.0)
        });
        if !materialized {
            bail!("causeway_table_rows of {table} never reached 1");
        }
        let table_gauges = [
            "causeway_table_rows",
            "causeway_table_lag_records",
            "causeway_table_lag_seconds",
        ];
        let present = |metrics: &Metrics, gauge: &str| {
            metrics.values.keys().any(|(name, series)| {
                name == gauge && series.iter().any(|(k, v)| k == "topic" && *v == table)
            })
        };
        let before = scrape(broker)?;
        let lag = [("topic", table.as_str()), ("partition", "0")];
        ensure_eq!(
            before.value("causeway_table_lag_records", &lag),
            0.0,
            "table lag once the row is in"
        );
        for gauge in table_gauges {
            ensure_eq!(present(&before, gauge), true, "{gauge} before the delete");
        }
        let admin = broker.admin();
        let deleted =
            block_on(admin.delete_topics(&[table.as_str()], &rdkafka::admin::AdminOptions::new()))?;
        if let Some(Err(error)) = deleted.first() {
            bail!("delete failed: {error:?}");
        }
        let after = scrape(broker)?;
        for gauge in table_gauges {
            ensure_eq!(present(&after, gauge), false, "{gauge} after the delete");
        }
        Ok(())
    });
}

#[test]
fn readyz_and_healthz_answer_200_once_started_and_a_fresh_start_recovers_nothing() {
    with_broker(BrokerOptions::new(), |broker| {
        let (code, body) = http_get(broker.http_addr(), "/healthz")?;
        ensure_eq!(code, 200, "/healthz");
        ensure_eq!(body.trim(), "ok");
        let (code, body) = http_get(broker.http_addr(), "/readyz")?;
        ensure_eq!(code, 200, "/readyz");
        ensure_eq!(body.trim(), "ready");
        let metrics = scrape(broker)?;
        if !metrics.has("causeway_storage_partitions_recovered") {
            bail!("causeway_storage_partitions_recovered is not exported");
        }
        ensure_eq!(
            metrics.value("causeway_storage_partitions_recovered", &[]),
            0.0
        );
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// SIGTERM under load
// ---------------------------------------------------------------------------------------------

/// The last "opened N partitions, M needed a recovery scan" line's M.
fn last_recovery_count(stderr: &str) -> Option<u64> {
    stderr
        .lines()
        .rev()
        .find(|l| l.contains("needed a recovery scan"))
        .and_then(|l| l.split(" needed a recovery scan").next())
        .and_then(|head| head.rsplit(", ").next())
        .and_then(|n| n.trim().parse().ok())
}

#[test]
fn sigterm_during_acks_all_load_exits_0_keeps_every_acknowledged_record_and_restarts_clean() {
    with_broker(BrokerOptions::new(), |broker| {
        let topic = topic_name("sigterm-load");
        produce_values(&broker.producer(), &topic, 0, &["first"])?;
        let load = AcksAllLoad::start(&broker.bootstrap(), &topic, "load", 64, 3_000)?;
        let loaded = wait_until(Duration::from_secs(30), || load.acknowledged() >= 1_000);
        let status = broker.terminate();
        let LoadOutcome { sent, mut acked } = load.stop()?;
        acked.insert(0, ("first".to_string(), 0));
        let status = status?;
        if !loaded {
            bail!("only {} records acknowledged within 30 s", acked.len() - 1);
        }
        ensure_eq!(status.code(), Some(0), "exit code after SIGTERM under load");
        if !broker.stderr().contains("shutdown complete") {
            bail!("the broker did not log \"shutdown complete\"");
        }

        broker.restart()?;
        ensure_eq!(
            last_recovery_count(&broker.stderr()),
            Some(0),
            "the start after SIGTERM reports partitions that needed a recovery scan"
        );
        ensure_eq!(
            scrape(broker)?.value("causeway_storage_partitions_recovered", &[]),
            0.0,
            "causeway_storage_partitions_recovered after a clean shutdown"
        );
        let log = read_to_end(&broker.bootstrap(), &topic, 0, Offset::Beginning)?;
        for (payload, offset) in &acked {
            let stored = usize::try_from(*offset)
                .ok()
                .and_then(|i| log.get(i))
                .map(payload_str);
            if stored.as_deref() != Some(payload.as_str()) {
                bail!(
                    "acknowledged {payload} at offset {offset} lost: the log holds {stored:?} \
                     ({} records after restart, {sent} sent, {} acknowledged)",
                    log.len(),
                    acked.len()
                );
            }
        }
        eprintln!(
            "SIGTERM under load: {sent} sent, {} acknowledged, {} in the log after restart",
            acked.len(),
            log.len()
        );
        Ok(())
    });
}

#[test]
fn kill_9_makes_the_next_start_report_a_recovery_scan_before_it_turns_ready() {
    with_broker(BrokerOptions::new(), |broker| {
        let topic = topic_name("kill9-scan");
        produce_values(&broker.producer(), &topic, 0, &["a", "b"])?;
        broker.kill9();
        broker.restart()?;
        let stderr = broker.stderr();
        ensure_eq!(last_recovery_count(&stderr), Some(1));
        // /readyz cannot answer before recovery: the HTTP listener comes up after it.
        let restart = stderr.rfind("===== harness: starting").unwrap_or(0);
        let run = &stderr[restart..];
        let scanned = run.find("needed a recovery scan");
        let http_up = run.find("HTTP listener up");
        let ready = run.find("server: ready");
        if !(scanned < http_up && http_up.is_some() && scanned.is_some() && ready > http_up) {
            bail!("the restart did not recover, then open HTTP, then become ready:\n{run}");
        }
        ensure_eq!(
            scrape(broker)?.value("causeway_storage_partitions_recovered", &[]),
            1.0
        );
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// The CLI
// ---------------------------------------------------------------------------------------------

/// Runs `causeway ARGS` with a 60 s limit.
fn causeway(args: &[&str]) -> Result<Output> {
    let mut child = Command::new(broker_binary()?)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawn causeway")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("causeway {args:?} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child.wait_with_output()?)
}

/// Runs `causeway topic -b BOOTSTRAP ARGS`; checks the exit code; returns (stdout, stderr).
fn topic_cli(bootstrap: &str, args: &[&str], expected_code: i32) -> Result<(String, String)> {
    let mut all = vec!["topic", "-b", bootstrap];
    all.extend_from_slice(args);
    let output = causeway(&all)?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if output.status.code() != Some(expected_code) {
        bail!(
            "causeway {all:?} exited with {} instead of {expected_code}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            output.status
        );
    }
    Ok((stdout, stderr))
}

fn expect_contains(text: &str, needle: &str, what: &str) -> Result<()> {
    if !text.contains(needle) {
        bail!("{what} lacks {needle:?}:\n{text}");
    }
    Ok(())
}

/// The `describe` line of config `name`: (value, source).
fn described_config(describe: &str, name: &str) -> Option<(String, String)> {
    describe.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [n, value, source] if *n == name => Some((value.to_string(), source.to_string())),
            _ => None,
        }
    })
}

#[test]
fn topic_cli_commands_work_against_a_running_broker_with_exit_codes_0_1_2() {
    with_broker(BrokerOptions::new().no_auto_create(), |broker| {
        let b = broker.bootstrap();
        let topic = topic_name("cli");

        // create: 0, then 1 for a duplicate.
        let (out, _) = topic_cli(
            &b,
            &["create", &topic, "-p", "3", "-c", "retention.ms=3600000"],
            0,
        )?;
        expect_contains(
            &out,
            &format!("created topic {topic} with 3 partitions"),
            "create",
        )?;
        let (_, err) = topic_cli(&b, &["create", &topic], 1)?;
        expect_contains(&err, "TopicAlreadyExists", "duplicate create")?;
        let (_, err) = topic_cli(&b, &["create", "bad/name"], 1)?;
        expect_contains(&err, "error:", "invalid name")?;

        // list: the topic with its partition count.
        let (out, _) = topic_cli(&b, &["list"], 0)?;
        let row = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(topic.as_str()))
            .with_context(|| format!("list does not show {topic}:\n{out}"))?;
        ensure_eq!(row.split_whitespace().nth(1), Some("3"), "list row {row:?}");

        // describe: partitions, offsets after a produce, configs with their source.
        produce_values(&broker.producer(), &topic, 0, &["a", "b"])?;
        let (out, _) = topic_cli(&b, &["describe", &topic], 0)?;
        expect_contains(&out, "partitions 3", "describe")?;
        let partition0: Vec<&str> = out
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.len() == 5 && f[0] == "0")
            .with_context(|| format!("describe has no partition 0 row:\n{out}"))?;
        ensure_eq!(
            partition0[..4].to_vec(),
            vec!["0", "0", "2", "2"],
            "partition 0: start, end, records"
        );
        // Two small records: at least one 61-byte batch header on disk, far less than a KiB.
        let size: i64 = partition0[4].parse().context("partition 0 size")?;
        if !(61 + 2 * 7..1024).contains(&size) {
            bail!("partition 0 holds two small records in {size} bytes:\n{out}");
        }
        ensure_eq!(
            described_config(&out, "retention.ms"),
            Some(("3600000".to_string(), "topic".to_string()))
        );
        ensure_eq!(
            described_config(&out, "segment.bytes"),
            Some(("1073741824".to_string(), "default".to_string()))
        );
        let (_, err) = topic_cli(&b, &["describe", "no-such-topic"], 1)?;
        expect_contains(&err, "no-such-topic", "describe of a missing topic")?;

        // alter-config: set, delete back to the default, refuse bad values and no-ops.
        let (out, _) = topic_cli(
            &b,
            &["alter-config", &topic, "--set", "retention.ms=7200000"],
            0,
        )?;
        expect_contains(&out, &format!("altered configs of {topic}"), "alter-config")?;
        let (out, _) = topic_cli(&b, &["describe", &topic], 0)?;
        ensure_eq!(
            described_config(&out, "retention.ms"),
            Some(("7200000".to_string(), "topic".to_string()))
        );
        topic_cli(&b, &["alter-config", &topic, "--delete", "retention.ms"], 0)?;
        let (out, _) = topic_cli(&b, &["describe", &topic], 0)?;
        ensure_eq!(
            described_config(&out, "retention.ms"),
            Some(("604800000".to_string(), "default".to_string()))
        );
        let (_, err) = topic_cli(
            &b,
            &["alter-config", &topic, "--set", "retention.ms=soon"],
            1,
        )?;
        expect_contains(&err, "InvalidConfig", "invalid config value")?;
        let (_, err) = topic_cli(&b, &["alter-config", &topic], 1)?;
        expect_contains(&err, "nothing to change", "alter-config without changes")?;

        // delete: 0, gone from list, 1 the second time.
        let (out, _) = topic_cli(&b, &["delete", &topic], 0)?;
        expect_contains(&out, &format!("deleted topic {topic}"), "delete")?;
        let (out, _) = topic_cli(&b, &["list"], 0)?;
        if out
            .lines()
            .any(|l| l.split_whitespace().next() == Some(topic.as_str()))
        {
            bail!("list still shows {topic} after delete:\n{out}");
        }
        let (_, err) = topic_cli(&b, &["delete", &topic], 1)?;
        expect_contains(&err, "UnknownTopicOrPartition", "second delete")?;

        // Usage errors exit 2 without contacting anybody.
        topic_cli(&b, &["create"], 2)?;
        topic_cli(&b, &["frobnicate"], 2)?;
        topic_cli(&b, &["create", "x", "-c", "no-equals-sign"], 2)?;
        topic_cli(&b, &["delete"], 2)?;
        // --help on every command exits 0.
        for command in ["create", "list", "describe", "delete", "alter-config"] {
            let (out, _) = topic_cli(&b, &[command, "--help"], 0)?;
            expect_contains(&out, "Usage:", &format!("topic {command} --help"))?;
        }
        Ok(())
    });
}

#[test]
fn topic_cli_exits_1_with_a_clear_message_when_no_broker_listens() -> Result<()> {
    let nobody = format!("127.0.0.1:{}", free_port()?);
    let (_, err) = topic_cli(&nobody, &["list"], 1)?;
    expect_contains(
        &err,
        &format!("connecting to {nobody}"),
        "unreachable broker",
    )?;
    Ok(())
}

/// `topic add-partitions` grows a topic (and refuses to shrink it); `topic delete-records`
/// moves a partition's start (and refuses an offset past the end); `group delete` removes a
/// group with its offsets (and exits 1 for a group that does not exist).
#[test]
fn topic_add_partitions_and_group_delete_cli() {
    with_broker(BrokerOptions::new().no_auto_create(), |broker| {
        let bootstrap = broker.bootstrap();
        let topic = topic_name("grow-cli");
        topic_cli(&bootstrap, &["create", &topic, "-p", "1"], 0)?;
        let (out, _) = topic_cli(&bootstrap, &["add-partitions", &topic, "-p", "3"], 0)?;
        expect_contains(&out, "now has 3 partitions", "add-partitions")?;
        let (out, _) = topic_cli(&bootstrap, &["describe", &topic], 0)?;
        expect_contains(&out, "partitions 3", "describe after add-partitions")?;
        let (_, err) = topic_cli(&bootstrap, &["add-partitions", &topic, "-p", "2"], 1)?;
        expect_contains(&err, "InvalidPartitions", "shrinking")?;

        produce_values(&broker.producer(), &topic, 0, &["a", "b"])?;
        let (out, _) = topic_cli(
            &bootstrap,
            &["delete-records", &topic, "-p", "0", "--before", "1"],
            0,
        )?;
        expect_contains(&out, "now starts at offset 1", "delete-records")?;
        let (_, err) = topic_cli(
            &bootstrap,
            &["delete-records", &topic, "-p", "0", "--before", "9"],
            1,
        )?;
        expect_contains(&err, "OffsetOutOfRange", "delete-records past the end")?;
        let consumer: BaseConsumer = broker
            .consumer_config()
            .set("group.id", "cli-delete")
            .create()?;
        let mut position = TopicPartitionList::new();
        position.add_partition_offset(&topic, 0, Offset::Offset(2))?;
        consumer.commit(&position, CommitMode::Sync)?;
        drop(consumer);
        let group = |args: &[&str]| {
            let mut all = vec!["group", "-b", bootstrap.as_str()];
            all.extend_from_slice(args);
            causeway(&all)
        };
        ensure_eq!(group(&["describe", "cli-delete"])?.status.code(), Some(0));
        let deleted = group(&["delete", "cli-delete"])?;
        ensure_eq!(deleted.status.code(), Some(0), "group delete: {deleted:?}");
        expect_contains(
            &String::from_utf8_lossy(&deleted.stdout),
            "deleted group cli-delete",
            "group delete",
        )?;
        ensure_eq!(
            group(&["describe", "cli-delete"])?.status.code(),
            Some(1),
            "the deleted group is gone"
        );
        let missing = group(&["delete", "never-was"])?;
        ensure_eq!(missing.status.code(), Some(1), "deleting an unknown group");
        expect_contains(
            &String::from_utf8_lossy(&missing.stderr),
            "GroupIdNotFound",
            "deleting an unknown group",
        )?;
        Ok(())
    });
}

/// Errors that say what went wrong: the CLI pointed at the HTTP port, an HTTP request on the
/// Kafka port (logged by the broker by name, without `Some(...)` around the address), and a
/// group that does not exist.
#[test]
fn cli_and_broker_errors_name_the_mistake() {
    with_broker(BrokerOptions::new(), |broker| {
        let http = broker.http_addr().to_string();
        let (_, err) = topic_cli(&http, &["list"], 1)?;
        expect_contains(&err, "looks like an HTTP listener", "CLI at the HTTP port")?;

        let mut stream = std::net::TcpStream::connect(broker.bootstrap())?;
        std::io::Write::write_all(&mut stream, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")?;
        let closed = wait_until(Duration::from_secs(10), || {
            broker
                .stderr()
                .contains("an HTTP request (\"GET \"...) on the Kafka port")
        });
        if !closed {
            bail!("no clear log line:\n{}", broker.stderr_tail(10));
        }
        ensure_eq!(
            broker.stderr().contains("peer=Some("),
            false,
            "addresses logged without Some(...)"
        );

        let output = causeway(&["group", "-b", &broker.bootstrap(), "describe", "nosuch"])?;
        ensure_eq!(
            output.status.code(),
            Some(1),
            "describe of an unknown group"
        );
        expect_contains(
            &String::from_utf8_lossy(&output.stderr),
            "group nosuch does not exist",
            "describe of an unknown group",
        )?;
        Ok(())
    });
}

/// `causeway region status` against a region with one peer that never answers: the table names
/// the region and the peer (not connected), `--json` is the `/v1/regions` document, and an
/// unreachable broker exits 1.
#[test]
fn region_status_cli_shows_the_clock_and_each_peer_link() {
    let ghost = free_port().expect("a free port");
    let options = BrokerOptions::new()
        .flag("--region", "north")
        .flag("--peer", format!("south@127.0.0.1:{ghost}"))
        .flag("--replication-secret", "cli");
    with_broker(options, |broker| {
        let topic = topic_name("region-cli");
        produce_and_fetch(broker, &topic, &["a"])?;
        let http = broker.http_addr().to_string();
        let output = causeway(&["region", "--http", &http, "status"])?;
        ensure_eq!(output.status.code(), Some(0), "region status exit code");
        let table = String::from_utf8_lossy(&output.stdout).into_owned();
        expect_contains(&table, "REGION north", "region status")?;
        expect_contains(&table, "south", "region status")?;
        expect_contains(&table, &format!("127.0.0.1:{ghost}"), "region status")?;
        expect_contains(
            &table,
            "north            1",
            "the clock (one batch from north)",
        )?;
        let output = causeway(&["region", "--http", &http, "status", "--json"])?;
        ensure_eq!(
            output.status.code(),
            Some(0),
            "region status --json exit code"
        );
        let json: serde_json::Value = serde_json::from_slice(&output.stdout)?;
        ensure_eq!(json["region"].as_str(), Some("north"));
        ensure_eq!(json["peers"][0]["name"].as_str(), Some("south"));
        let state = json["peers"][0]["state"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if state == "connected" {
            bail!("a peer nobody listens for shows as connected");
        }
        let nobody = format!("127.0.0.1:{}", free_port()?);
        let output = causeway(&["region", "--http", &nobody, "status"])?;
        ensure_eq!(
            output.status.code(),
            Some(1),
            "region status without a broker"
        );
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// docker/: the three-region script and the Grafana dashboard
// ---------------------------------------------------------------------------------------------

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// Every PromQL expression in a Grafana dashboard (`targets[].expr` of every panel, nested rows
/// included).
fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<String> {
    fn walk(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::Array(targets)) = map.get("targets") {
                    for target in targets {
                        if let Some(expr) = target.get("expr").and_then(|e| e.as_str()) {
                            out.push(expr.to_string());
                        }
                    }
                }
                for (key, child) in map {
                    if key != "targets" {
                        walk(child, out);
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dashboard, &mut out);
    out
}

/// The metric names a PromQL expression selects: identifiers starting with `causeway_`.
fn metric_names_in(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(start) = rest.find("causeway_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn grafana_dashboard_is_valid_json_whose_queries_name_only_exported_metrics() {
    let path = repo_root().join("docker/grafana/causeway.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let dashboard: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    let panels = dashboard
        .get("panels")
        .and_then(|p| p.as_array())
        .map(Vec::len)
        .unwrap_or(0);
    assert!(panels >= 6, "the dashboard has {panels} panels");
    let queries = dashboard_queries(&dashboard);
    assert!(!queries.is_empty(), "the dashboard has no queries");
    // A peer that never answers gives the per-peer replication series (lag, link state).
    let ghost = free_port().expect("a free port");
    let options = BrokerOptions::new()
        .flag("--group-initial-rebalance-delay-ms", 0)
        .flag("--peer", format!("ghost@127.0.0.1:{ghost}"))
        .flag("--replication-secret", "dashboard");
    with_broker(options, |broker| {
        let topic = topic_name("grafana");
        produce_and_fetch(broker, &topic, &["x", "y"])?;
        // Series that appear on their first event: a request error (a fetch past the end, which
        // the consumer answers by resetting to the earliest offset) and a connection closed for
        // bad input (a negative frame length).
        read_partition(&broker.bootstrap(), &topic, 0, Offset::Offset(1_000), 2)?;
        let mut raw = broker.raw()?;
        raw.write_all(&[0xff, 0xff, 0xff, 0xff])?;
        if !raw.closed_within(Duration::from_secs(10)) {
            bail!("a negative frame length did not close the connection");
        }
        // Consumer group series: a subscribed consumer joins (a rebalance), reads and commits.
        let consumer: BaseConsumer = broker
            .consumer_config()
            .set("group.id", "dashboard-check")
            .set("session.timeout.ms", "10000")
            .create()?;
        consumer.subscribe(&[topic.as_str()])?;
        let messages = consume_n(&consumer, 2, Duration::from_secs(30))?;
        ensure_eq!(messages.len(), 2, "messages read by the group consumer");
        let mut commit = TopicPartitionList::new();
        commit.add_partition_offset(&topic, 0, Offset::Offset(messages[1].offset() + 1))?;
        consumer.commit(&commit, CommitMode::Sync)?;
        // Table series: a compacted topic with one keyed record, once the materializer ran.
        let table = topic_name("grafana-table");
        create_topic(broker, &table, 1, &[("cleanup.policy", "compact")])?;
        produce_all(
            &broker.producer(),
            &table,
            &[TestRecord::value("{}").key("k")],
        )?;
        let materialized = wait_until(Duration::from_secs(15), || {
            scrape(broker).is_ok_and(|s| {
                s.has("causeway_table_rows") && s.has("causeway_replication_link_up")
            })
        });
        if !materialized {
            bail!("the table or replication metrics never appeared");
        }
        let exported = scrape(broker)?;
        for query in &queries {
            let names = metric_names_in(query);
            if names.is_empty() {
                bail!("query {query:?} names no causeway_ metric");
            }
            for name in names {
                if !exported.has(&name) {
                    bail!("query {query:?} names {name}, which /metrics does not export");
                }
            }
        }
        Ok(())
    });
}

/// Stops the processes `run-local.sh` started, from the pid files it wrote.
struct LocalRegions {
    dir: PathBuf,
}

impl LocalRegions {
    fn pids(&self) -> Vec<u32> {
        ["eu", "us", "ap"]
            .iter()
            .filter_map(|r| std::fs::read_to_string(self.dir.join(format!("{r}.pid"))).ok())
            .filter_map(|p| p.trim().parse().ok())
            .collect()
    }
}

impl Drop for LocalRegions {
    fn drop(&mut self) {
        for pid in self.pids().into_iter().filter(|pid| running(*pid)) {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
        }
    }
}

/// Whether process `pid` exists and is not a zombie (a process whose parent exited is reaped by
/// whatever runs as pid 1, which in a container may never happen).
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// Runs `docker/run-local.sh ARGS` with `envs` (and the test's binary); its standard output,
/// or an error with both outputs.
fn run_local(args: &[&str], envs: &BTreeMap<String, String>) -> Result<String> {
    let output = Command::new("bash")
        .arg(repo_root().join("docker/run-local.sh"))
        .args(args)
        .env("CAUSEWAY_BIN", broker_binary()?)
        .env_remove("CAUSEWAY_REPLICATION_SECRET")
        .env_remove("CAUSEWAY_LOCAL_SECURITY")
        .env_remove("CAUSEWAY_ADMIN_PASSWORD")
        .envs(envs)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running docker/run-local.sh {args:?}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "run-local.sh {args:?} failed ({}):\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(stdout)
}

/// Free ports for run-local.sh's regions: `CAUSEWAY_{EU,US,AP}_{KAFKA,HTTP,LOCAL}_PORT`.
fn run_local_ports() -> Result<BTreeMap<String, String>> {
    let mut ports = BTreeMap::new();
    for region in ["EU", "US", "AP"] {
        for kind in ["KAFKA", "HTTP", "LOCAL"] {
            ports.insert(
                format!("CAUSEWAY_{region}_{kind}_PORT"),
                free_port()?.to_string(),
            );
        }
    }
    Ok(ports)
}

/// `127.0.0.1:PORT` of a region's (`EU`, `US`, `AP`) `KAFKA`, `HTTP` or `LOCAL` port.
fn local_addr(ports: &BTreeMap<String, String>, region: &str, kind: &str) -> String {
    let port = ports
        .get(&format!("CAUSEWAY_{region}_{kind}_PORT"))
        .map_or("0", String::as_str);
    format!("127.0.0.1:{port}")
}

fn socket(addr: &str) -> Result<std::net::SocketAddr> {
    addr.parse().with_context(|| format!("address {addr}"))
}

/// Fails if `needle` is on the command line of any of `pids`.
fn not_on_a_command_line(pids: &[u32], needle: &str, what: &str) -> Result<()> {
    for pid in pids {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))?;
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            bail!("the {what} is on the command line of pid {pid}");
        }
    }
    Ok(())
}

#[cfg(unix)]
fn mode_of(path: &Path) -> Result<u32> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::metadata(path)
        .with_context(|| format!("{}", path.display()))?
        .permissions()
        .mode()
        & 0o777)
}

/// kcat over SASL_SSL with SCRAM-SHA-512 as `admin`, trusting run-local.sh's authority.
fn kcat_scram(
    dir: &Path,
    bootstrap: &str,
    password: &str,
    args: &[&str],
    stdin: &[u8],
) -> Result<causeway_integration_tests::KcatOutput> {
    let ca = format!("ssl.ca.location={}", dir.join("certs/ca.pem").display());
    let password = format!("sasl.password={password}");
    let mut all = vec![
        "-b",
        bootstrap,
        "-X",
        "security.protocol=SASL_SSL",
        "-X",
        &ca,
        "-X",
        "sasl.mechanisms=SCRAM-SHA-512",
        "-X",
        "sasl.username=admin",
        "-X",
        &password,
        "-m",
        "10",
    ];
    all.extend_from_slice(args);
    causeway_integration_tests::kcat(&all, stdin, Duration::from_secs(30))
}

/// The default topology: SASL_SSL for clients (kcat logs in with SCRAM-SHA-512 as the admin
/// user made at the first start), mutual TLS between regions with certificates from
/// `causeway certs init`, a plaintext listener on loopback for the admin CLI; regions
/// stop and restart alone and catch up.
#[test]
fn run_local_script_starts_three_secured_regions_that_answer_readyz_and_stop_cleanly() -> Result<()>
{
    let dir = tempfile::Builder::new()
        .prefix("causeway-run-local-")
        .tempdir()?;
    let dir_arg = dir.path().to_str().context("a UTF-8 temporary dir")?;
    let ports = run_local_ports()?;
    let regions = LocalRegions {
        dir: dir.path().to_path_buf(),
    };
    let stdout = run_local(&["start", dir_arg], &ports)?;
    expect_contains(
        &stdout,
        "run-local.sh stop",
        "the start message (how to stop)",
    )?;
    expect_contains(&stdout, "(sasl_ssl)", "the start message (the security)")?;
    expect_contains(&stdout, "sasl.mechanisms=SCRAM-SHA-512", "how to connect")?;
    ensure_eq!(regions.pids().len(), 3, "pid files");
    ensure_eq!(
        std::fs::read_to_string(dir.path().join("security"))?.trim(),
        "sasl_ssl",
        "DIR/security"
    );
    for file in [
        "ca.pem", "ca.key", "eu.pem", "eu.key", "us.pem", "us.key", "ap.pem", "ap.key",
    ] {
        ensure_eq!(
            dir.path().join("certs").join(file).is_file(),
            true,
            "certs/{file}"
        );
    }
    ensure_eq!(
        dir.path().join("secret").exists(),
        false,
        "no replication secret"
    );
    let password = std::fs::read_to_string(dir.path().join("admin-password"))?
        .trim()
        .to_string();
    ensure_eq!(
        password.len() >= 16,
        true,
        "a real password in DIR/admin-password"
    );
    #[cfg(unix)]
    for file in [
        "admin-password",
        "client.properties",
        "certs/eu.key",
        "certs/ca.key",
    ] {
        ensure_eq!(mode_of(&dir.path().join(file))?, 0o600, "mode of {file}");
    }
    expect_contains(
        &std::fs::read_to_string(dir.path().join("client.properties"))?,
        &format!("sasl.password={password}"),
        "client.properties",
    )?;

    let mut targets = Vec::new();
    for region in ["EU", "US", "AP"] {
        let http = local_addr(&ports, region, "HTTP");
        let ready = wait_until(Duration::from_secs(60), || {
            socket(&http).is_ok_and(|addr| matches!(http_get(addr, "/readyz"), Ok((200, _))))
        });
        if !ready {
            bail!("region {region} (HTTP {http}) did not answer /readyz with 200");
        }
        targets.push(http);
        // The loopback plaintext listener (the admin CLI's) serves clients without credentials.
        let topic = topic_name("three-regions");
        let bootstrap = local_addr(&ports, region, "LOCAL");
        let producer: FutureProducer =
            causeway_integration_tests::producer_config(&bootstrap).create()?;
        produce_values(&producer, &topic, 0, &[region])?;
        let read = read_partition(&bootstrap, &topic, 0, Offset::Beginning, 1)?;
        ensure_eq!(payload_str(&read[0]), region.to_string());
    }

    // kcat logs in with SCRAM-SHA-512 over TLS in eu; the record reaches us (read there the
    // same way) and ap (read on its plaintext listener), replicated over mutual TLS.
    let shared = topic_name("replicated");
    let produced = kcat_scram(
        dir.path(),
        &local_addr(&ports, "EU", "KAFKA"),
        &password,
        &["-P", "-t", &shared, "-p", "0"],
        b"from-eu\n",
    )?;
    ensure_eq!(
        produced.status.success(),
        true,
        "kcat -P over SASL_SSL in eu: {}",
        produced.stderr
    );
    let refused = kcat_scram(
        dir.path(),
        &local_addr(&ports, "EU", "KAFKA"),
        "not-the-password",
        &["-L", "-t", &shared],
        b"",
    )?;
    ensure_eq!(
        refused.status.success(),
        false,
        "kcat with a wrong password: {}",
        refused.stdout
    );
    let in_us = wait_until(Duration::from_secs(30), || {
        kcat_scram(
            dir.path(),
            &local_addr(&ports, "US", "KAFKA"),
            &password,
            &[
                "-C",
                "-t",
                &shared,
                "-p",
                "0",
                "-o",
                "beginning",
                "-e",
                "-c",
                "1",
            ],
            b"",
        )
        .is_ok_and(|out| out.status.success() && out.stdout.trim() == "from-eu")
    });
    if !in_us {
        bail!("the record produced with kcat in eu never reached us (read with kcat)");
    }
    let bootstrap = |region: &str| local_addr(&ports, region, "LOCAL");
    let in_ap = wait_until(Duration::from_secs(30), || {
        read_partition(&bootstrap("AP"), &shared, 0, Offset::Beginning, 1)
            .is_ok_and(|read| read.first().is_some_and(|m| payload_str(m) == "from-eu"))
    });
    if !in_ap {
        bail!("the record produced with kcat in eu never reached ap");
    }
    // No secret: the links are TLS, every region took its peers' handshakes.
    for region in ["EU", "US", "AP"] {
        let (code, body) = http_get(socket(&local_addr(&ports, region, "HTTP"))?, "/metrics")?;
        ensure_eq!(code, 200, "/metrics of {region}");
        let handshakes = parse_metrics(&body)?.value(
            "causeway_tls_handshakes_total",
            &[("listener", "kafka"), ("result", "ok")],
        );
        if handshakes < 2.0 {
            bail!("{region} counted {handshakes} TLS handshakes; its two peers dial it over TLS");
        }
    }
    let scrape_config = std::fs::read_to_string(dir.path().join("prometheus.yml"))
        .context("run-local.sh wrote no prometheus.yml")?;
    for target in &targets {
        expect_contains(&scrape_config, target, "the scrape config")?;
    }
    not_on_a_command_line(&regions.pids(), &password, "admin password")?;

    // One region at a time, without repeating the ports: they are remembered in DIR/ports.env.
    let none = BTreeMap::new();
    let http_addr = |region: &str| socket(&local_addr(&ports, region, "HTTP"));
    let ready = |region: &str| {
        http_addr(region).is_ok_and(|addr| matches!(http_get(addr, "/readyz"), Ok((200, _))))
    };
    let clock = |region: &str, origin: &str| -> Option<u64> {
        let (code, body) = http_get(http_addr(region).ok()?, "/v1/regions").ok()?;
        let status: serde_json::Value = serde_json::from_str(&body).ok().filter(|_| code == 200)?;
        status["clock"][origin].as_u64()
    };
    let status = run_local(&["status", dir_arg], &none)?;
    for region in ["EU", "US", "AP"] {
        expect_contains(
            &status,
            &format!("{}: running", region.to_lowercase()),
            "status",
        )?;
        expect_contains(
            &status,
            &local_addr(&ports, region, "KAFKA"),
            "status (ports)",
        )?;
        expect_contains(
            &status,
            &format!("local {}", local_addr(&ports, region, "LOCAL")),
            "status (the plaintext listener)",
        )?;
    }

    let us_pid = std::fs::read_to_string(dir.path().join("us.pid"))?
        .trim()
        .parse::<u32>()?;
    let stopped = run_local(&["stop", dir_arg, "us"], &none)?;
    expect_contains(&stopped, "stopped us", "stop of us")?;
    ensure_eq!(running(us_pid), false, "us stopped alone");
    ensure_eq!(ready("EU") && ready("AP"), true, "eu and ap answer /readyz");
    expect_contains(
        &run_local(&["status", dir_arg], &none)?,
        "us: stopped",
        "status",
    )?;
    // Written while us is away; us catches up once back.
    let producer: FutureProducer =
        causeway_integration_tests::producer_config(&bootstrap("EU")).create()?;
    produce_values(&producer, &shared, 0, &["while-us-away"])?;
    let eu_batches = wait_until(Duration::from_secs(10), || clock("EU", "eu").is_some())
        .then(|| clock("EU", "eu"))
        .flatten()
        .context("eu's own clock")?;
    let restarted = run_local(&["restart", dir_arg, "us"], &none)?;
    expect_contains(&restarted, "us  kafka", "restart of us")?;
    ensure_eq!(ready("US"), true, "us answers /readyz after its restart");
    let caught_up = wait_until(Duration::from_secs(30), || {
        clock("US", "eu").is_some_and(|n| n >= eu_batches)
    });
    if !caught_up {
        bail!(
            "us did not catch up with eu ({eu_batches} batches): its clock says {:?}",
            clock("US", "eu")
        );
    }
    let read = read_partition(&bootstrap("US"), &shared, 0, Offset::Beginning, 2)?;
    ensure_eq!(
        read.iter().map(payload_str).collect::<Vec<_>>(),
        vec!["from-eu".to_string(), "while-us-away".to_string()],
        "us after its restart"
    );
    // Restarting a running region alone: a new process, the others untouched.
    let ap_pid = std::fs::read_to_string(dir.path().join("ap.pid"))?
        .trim()
        .parse::<u32>()?;
    let eu_pid = std::fs::read_to_string(dir.path().join("eu.pid"))?
        .trim()
        .parse::<u32>()?;
    run_local(&["restart", dir_arg, "ap"], &none)?;
    ensure_eq!(running(ap_pid), false, "the old ap exited");
    ensure_eq!(ready("AP") && ready("EU"), true, "ap back, eu still up");
    ensure_eq!(running(eu_pid), true, "eu was not restarted");
    ensure_eq!(regions.pids().len(), 3, "pid files");
    not_on_a_command_line(&regions.pids(), &password, "admin password")?;

    run_local(&["stop", dir_arg], &none)?;
    let pids = regions.pids();
    let stopped = wait_until(Duration::from_secs(30), || {
        pids.iter().all(|pid| !running(*pid))
    });
    if !stopped {
        bail!("regions still running after run-local.sh stop: {pids:?}");
    }
    for region in ["eu", "us", "ap"] {
        let log = std::fs::read_to_string(dir.path().join(format!("{region}.log")))
            .with_context(|| format!("no log for {region}"))?;
        expect_contains(&log, "shutdown complete", &format!("{region}'s log"))?;
    }
    Ok(())
}

/// `CAUSEWAY_LOCAL_SECURITY=plaintext`: the earlier topology, plaintext clients and a shared
/// replication secret handed to the brokers in their environment.
#[test]
fn run_local_script_keeps_the_plaintext_topology_on_request() -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("causeway-run-local-plain-")
        .tempdir()?;
    let dir_arg = dir.path().to_str().context("a UTF-8 temporary dir")?;
    let mut env = run_local_ports()?;
    let ports = env.clone();
    env.insert("CAUSEWAY_LOCAL_SECURITY".into(), "plaintext".into());
    let regions = LocalRegions {
        dir: dir.path().to_path_buf(),
    };
    let stdout = run_local(&["start", dir_arg], &env)?;
    expect_contains(&stdout, "(plaintext)", "the start message (the security)")?;
    ensure_eq!(regions.pids().len(), 3, "pid files");
    ensure_eq!(dir.path().join("certs").exists(), false, "no certificates");
    let secret = std::fs::read_to_string(dir.path().join("secret"))?
        .trim()
        .to_string();
    ensure_eq!(secret.len() >= 16, true, "a real secret in DIR/secret");
    #[cfg(unix)]
    ensure_eq!(
        mode_of(&dir.path().join("secret"))?,
        0o600,
        "mode of DIR/secret"
    );
    not_on_a_command_line(&regions.pids(), &secret, "secret")?;
    let bootstrap = |region: &str| local_addr(&ports, region, "KAFKA");
    let topic = topic_name("replicated-plain");
    let producer: FutureProducer =
        causeway_integration_tests::producer_config(&bootstrap("EU")).create()?;
    produce_values(&producer, &topic, 0, &["from-eu"])?;
    let replicated = wait_until(Duration::from_secs(30), || {
        read_partition(&bootstrap("US"), &topic, 0, Offset::Beginning, 1)
            .is_ok_and(|read| read.first().is_some_and(|m| payload_str(m) == "from-eu"))
    });
    if !replicated {
        bail!("the record produced in eu never reached us");
    }
    // The choice is kept: a later start without the variable runs the same topology.
    let status = run_local(&["status", dir_arg], &BTreeMap::new())?;
    expect_contains(&status, "plaintext", "status")?;
    expect_contains(&status, "eu: running", "status")?;
    run_local(&["restart", dir_arg, "us"], &BTreeMap::new())?;
    not_on_a_command_line(&regions.pids(), &secret, "secret")?;
    run_local(&["stop", dir_arg], &BTreeMap::new())?;
    let pids = regions.pids();
    if !wait_until(Duration::from_secs(30), || {
        pids.iter().all(|pid| !running(*pid))
    }) {
        bail!("regions still running after run-local.sh stop: {pids:?}");
    }
    Ok(())
}

/// The group's committed offsets of partitions 0 and 1 of `topic`, read by librdkafka.
fn committed_pair(broker: &BrokerProcess, group: &str, topic: &str) -> Result<(i64, i64)> {
    let consumer: BaseConsumer = broker.consumer_config().set("group.id", group).create()?;
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition(topic, 0);
    wanted.add_partition(topic, 1);
    let committed = consumer.committed_offsets(wanted, Duration::from_secs(10))?;
    let offset = |p| match committed.find_partition(topic, p).map(|e| e.offset()) {
        Some(Offset::Offset(o)) => o,
        _ => -1,
    };
    Ok((offset(0), offset(1)))
}

/// `causeway group reset-offsets`, as `kafka-consumer-groups --reset-offsets`: a dry run commits
/// nothing; `--execute` moves an inactive group's offsets to the log start, an offset (held
/// within the log), a time, or the log end, for all or some partitions; an active group is
/// refused.
#[test]
fn group_reset_offsets_moves_an_inactive_groups_positions() {
    let options = BrokerOptions::new().flag("--group-initial-rebalance-delay-ms", 0);
    with_broker(options, |broker| {
        let bootstrap = broker.bootstrap();
        let topic = topic_name("reset");
        create_topic(broker, &topic, 2, &[])?;
        let t0 = 1_700_000_000_000i64;
        let records: Vec<TestRecord> = (0..20)
            .map(|i| {
                TestRecord::value(format!("r{i}"))
                    .partition(i % 2)
                    .timestamp(t0 + i64::from(i / 2) * 1_000)
            })
            .collect();
        produce_all(&broker.producer(), &topic, &records)?;
        let consumer: BaseConsumer = broker
            .consumer_config()
            .set("group.id", "resetting")
            .create()?;
        let mut positions = TopicPartitionList::new();
        positions.add_partition_offset(&topic, 0, Offset::Offset(7))?;
        positions.add_partition_offset(&topic, 1, Offset::Offset(3))?;
        consumer.commit(&positions, CommitMode::Sync)?;
        drop(consumer);

        let reset = |args: &[&str]| -> Result<Output> {
            let mut all = vec!["group", "-b", &bootstrap, "reset-offsets", "resetting"];
            all.extend_from_slice(&["--topic", &topic]);
            all.extend_from_slice(args);
            let output = causeway(&all)?;
            ensure_eq!(
                output.status.code(),
                Some(0),
                "reset-offsets {args:?}: {output:?}"
            );
            Ok(output)
        };
        let dry = reset(&["--to-earliest"])?;
        expect_contains(
            &String::from_utf8_lossy(&dry.stdout),
            "dry run",
            "a dry run",
        )?;
        ensure_eq!(
            committed_pair(broker, "resetting", &topic)?,
            (7, 3),
            "after a dry run"
        );
        reset(&["--to-earliest", "--execute"])?;
        ensure_eq!(
            committed_pair(broker, "resetting", &topic)?,
            (0, 0),
            "to earliest"
        );
        reset(&["--to-offset", "99", "--execute"])?;
        ensure_eq!(
            committed_pair(broker, "resetting", &topic)?,
            (10, 10),
            "held at the end"
        );
        reset(&["--to-offset", "4", "--partitions", "1", "--execute"])?;
        ensure_eq!(
            committed_pair(broker, "resetting", &topic)?,
            (10, 4),
            "one partition"
        );
        let at = (t0 + 6_000).to_string();
        reset(&["--to-timestamp", &at, "--partitions", "0", "--execute"])?;
        ensure_eq!(
            committed_pair(broker, "resetting", &topic)?,
            (6, 4),
            "to a time"
        );
        reset(&["--to-latest", "--execute"])?;
        ensure_eq!(
            committed_pair(broker, "resetting", &topic)?,
            (10, 10),
            "to latest"
        );

        let member: BaseConsumer = broker.consumer_config().set("group.id", "busy").create()?;
        member.subscribe(&[&topic])?;
        let joined = wait_until(Duration::from_secs(30), || {
            let _ = member.poll(Duration::from_millis(100));
            member.assignment().is_ok_and(|a| a.count() > 0)
        });
        ensure_eq!(joined, true, "the member joined");
        let refused = causeway(&[
            "group",
            "-b",
            &bootstrap,
            "reset-offsets",
            "busy",
            "--topic",
            &topic,
            "--to-earliest",
            "--execute",
        ])?;
        ensure_eq!(refused.status.code(), Some(1), "reset of an active group");
        expect_contains(
            &String::from_utf8_lossy(&refused.stderr),
            "stop its consumers first",
            "reset of an active group",
        )?;
        Ok(())
    });
}

/// Runs `causeway ARGS`, expects exit 0, and parses its standard output as one JSON document.
fn causeway_json(args: &[&str]) -> Result<serde_json::Value> {
    let output = causeway(args)?;
    ensure_eq!(
        output.status.code(),
        Some(0),
        "causeway {args:?}: {output:?}"
    );
    serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "causeway {args:?} printed no JSON document:\n{}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// `--json` on every command that shows state: `topic list`, `topic describe`, `group list`,
/// `group describe` and the `group reset-offsets` plan each print one JSON document holding what
/// the table shows, with the real offsets, members and lag of a live broker.
#[test]
fn state_commands_print_json_with_the_tables_facts() {
    let options = BrokerOptions::new()
        .no_auto_create()
        .flag("--group-initial-rebalance-delay-ms", 0);
    with_broker(options, |broker| {
        let b = broker.bootstrap();
        let topic = topic_name("json-cli");
        topic_cli(
            &b,
            &["create", &topic, "-p", "3", "-c", "retention.ms=3600000"],
            0,
        )?;
        let producer = broker.producer();
        produce_values(&producer, &topic, 0, &["a", "b"])?;
        produce_values(&producer, &topic, 1, &["c", "d", "e"])?;

        let listed = causeway_json(&["topic", "-b", &b, "list", "--json"])?;
        let entry = listed["topics"]
            .as_array()
            .and_then(|topics| topics.iter().find(|t| t["name"] == topic.as_str()))
            .with_context(|| format!("topic list --json lacks {topic}: {listed}"))?;
        ensure_eq!(entry["partitions"].as_i64(), Some(3), "{listed}");

        let described = causeway_json(&["topic", "-b", &b, "describe", &topic, "--json"])?;
        ensure_eq!(described["name"].as_str(), Some(topic.as_str()));
        let (table, _) = topic_cli(&b, &["describe", &topic], 0)?;
        let id = described["id"].as_str().unwrap_or_default().to_string();
        expect_contains(
            &table,
            &format!("id         {id}\n"),
            "the table's topic id",
        )?;
        let partitions: Vec<(i64, i64, i64, i64)> = described["partitions"]
            .as_array()
            .context("partitions")?
            .iter()
            .map(|p| {
                (
                    p["partition"].as_i64().unwrap_or(-9),
                    p["log_start_offset"].as_i64().unwrap_or(-9),
                    p["log_end_offset"].as_i64().unwrap_or(-9),
                    p["records"].as_i64().unwrap_or(-9),
                )
            })
            .collect();
        let sizes: Vec<i64> = described["partitions"]
            .as_array()
            .context("partitions")?
            .iter()
            .map(|p| p["size_bytes"].as_i64().unwrap_or(-9))
            .collect();
        if !(sizes[0] > 0 && sizes[1] > sizes[0] && sizes[2] == 0) {
            bail!("sizes of partitions holding 2, 3 and 0 records: {sizes:?}");
        }
        ensure_eq!(
            partitions,
            vec![(0, 0, 2, 2), (1, 0, 3, 3), (2, 0, 0, 0)],
            "partition, log start, log end, records: {described}"
        );
        let config = |name: &str| {
            described["configs"]
                .as_array()
                .and_then(|configs| configs.iter().find(|c| c["name"] == name))
                .map(|c| (c["value"].clone(), c["source"].clone()))
        };
        ensure_eq!(
            config("retention.ms"),
            Some((serde_json::json!("3600000"), serde_json::json!("topic")))
        );
        ensure_eq!(
            config("segment.bytes"),
            Some((
                serde_json::json!("1073741824"),
                serde_json::json!("default")
            ))
        );

        // A group with one active member that committed 1 in partition 0 and 3 in partition 1.
        let group = "json-cli-group";
        let member: BaseConsumer = broker
            .consumer_config()
            .set("group.id", group)
            .set("client.id", "json-cli-client")
            .create()?;
        member.subscribe(&[&topic])?;
        let joined = wait_until(Duration::from_secs(30), || {
            let _ = member.poll(Duration::from_millis(100));
            member.assignment().is_ok_and(|a| a.count() == 3)
        });
        ensure_eq!(joined, true, "the member was assigned the three partitions");
        let mut positions = TopicPartitionList::new();
        positions.add_partition_offset(&topic, 0, Offset::Offset(1))?;
        positions.add_partition_offset(&topic, 1, Offset::Offset(3))?;
        member.commit(&positions, CommitMode::Sync)?;

        let groups = causeway_json(&["group", "-b", &b, "list", "--json"])?;
        let listed = groups["groups"]
            .as_array()
            .and_then(|groups| groups.iter().find(|g| g["group"] == group))
            .with_context(|| format!("group list --json lacks {group}: {groups}"))?;
        ensure_eq!(listed["state"].as_str(), Some("Stable"), "{groups}");

        let described = causeway_json(&["group", "-b", &b, "describe", group, "--json"])?;
        ensure_eq!(described["group"].as_str(), Some(group));
        ensure_eq!(described["state"].as_str(), Some("Stable"), "{described}");
        ensure_eq!(described["protocol_type"].as_str(), Some("consumer"));
        ensure_eq!(
            described["protocol"]
                .as_str()
                .is_some_and(|p| !p.is_empty()),
            true,
            "the assignor: {described}"
        );
        let members = described["members"].as_array().context("members")?;
        ensure_eq!(members.len(), 1, "{described}");
        ensure_eq!(members[0]["client_id"].as_str(), Some("json-cli-client"));
        ensure_eq!(
            members[0]["client_host"]
                .as_str()
                .is_some_and(|h| h.contains("127.0.0.1")),
            true,
            "the member's host: {described}"
        );
        ensure_eq!(
            members[0]["assignment"],
            serde_json::json!([{"topic": topic, "partitions": [0, 1, 2]}]),
            "{described}"
        );
        ensure_eq!(
            described["offsets"],
            serde_json::json!([
                {"topic": topic, "partition": 0, "committed_offset": 1, "log_end_offset": 2, "lag": 1},
                {"topic": topic, "partition": 1, "committed_offset": 3, "log_end_offset": 3, "lag": 0},
            ]),
            "committed offsets and lag: {described}"
        );

        // The member leaves; the reset plan as JSON, then executed.
        drop(member);
        let empty = wait_until(Duration::from_secs(30), || {
            causeway_json(&["group", "-b", &b, "describe", group, "--json"])
                .is_ok_and(|d| d["state"] == "Empty")
        });
        ensure_eq!(empty, true, "the group is empty once its member left");
        let reset = |execute: bool| {
            let mut args = vec!["group", "-b", &b, "reset-offsets", group, "--topic", &topic];
            args.extend_from_slice(&["--to-earliest", "--json"]);
            if execute {
                args.push("--execute");
            }
            causeway_json(&args)
        };
        let plan = reset(false)?;
        ensure_eq!(
            plan,
            serde_json::json!({
                "group": group,
                "topic": topic,
                "executed": false,
                "partitions": [
                    {"partition": 0, "current_offset": 1, "new_offset": 0},
                    {"partition": 1, "current_offset": 3, "new_offset": 0},
                    {"partition": 2, "current_offset": null, "new_offset": 0},
                ],
            })
        );
        ensure_eq!(
            committed_pair(broker, group, &topic)?,
            (1, 3),
            "after a dry run"
        );
        let executed = reset(true)?;
        ensure_eq!(executed["executed"].as_bool(), Some(true), "{executed}");
        ensure_eq!(committed_pair(broker, group, &topic)?, (0, 0), "executed");
        Ok(())
    });
}

/// Runs `causeway` with `input` on its standard input.
fn causeway_with_input(args: &[&str], input: &str) -> Result<Output> {
    let mut child = Command::new(broker_binary()?)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawn causeway")?;
    std::io::Write::write_all(&mut child.stdin.take().context("stdin")?, input.as_bytes())?;
    Ok(child.wait_with_output()?)
}

/// `causeway produce` writes one record per line (keys split off at a separator) that librdkafka
/// reads back, and `causeway consume` prints them, from an offset, as many as asked, or as JSON.
#[test]
fn the_cli_produces_and_consumes_records() {
    with_broker(BrokerOptions::new(), |broker| {
        let bootstrap = broker.bootstrap();
        let topic = topic_name("cli-records");
        create_topic(broker, &topic, 1, &[])?;
        let produced = causeway_with_input(
            &["produce", "-b", &bootstrap, &topic, "-K", ":"],
            "k1:first\nk2:second\nthird\n",
        )?;
        ensure_eq!(produced.status.code(), Some(0), "produce: {produced:?}");
        expect_contains(
            &String::from_utf8_lossy(&produced.stdout),
            "offsets 0..=2",
            "produce",
        )?;
        let read = read_partition(&bootstrap, &topic, 0, Offset::Beginning, 3)?;
        let keys: Vec<Option<String>> = read
            .iter()
            .map(|m| m.key().map(|k| String::from_utf8_lossy(k).into_owned()))
            .collect();
        ensure_eq!(
            keys,
            vec![Some("k1".into()), Some("k2".into()), None],
            "keys librdkafka reads"
        );
        let values: Vec<String> = read.iter().map(payload_str).collect();
        ensure_eq!(values, vec!["first", "second", "third"], "values");

        let all = causeway(&["consume", "-b", &bootstrap, &topic])?;
        ensure_eq!(all.status.code(), Some(0), "consume: {all:?}");
        ensure_eq!(
            String::from_utf8_lossy(&all.stdout),
            "first\nsecond\nthird\n",
            "consume to the end"
        );
        let one = causeway(&[
            "consume", "-b", &bootstrap, &topic, "-o", "1", "-n", "1", "--json",
        ])?;
        let line: serde_json::Value = serde_json::from_slice(&one.stdout)?;
        ensure_eq!(
            (
                line["offset"].as_i64(),
                line["key"].as_str(),
                line["value"].as_str()
            ),
            (Some(1), Some("k2"), Some("second")),
            "one record as JSON"
        );
        let missing = causeway(&["consume", "-b", &bootstrap, "no-such-topic"])?;
        ensure_eq!(
            missing.status.code(),
            Some(1),
            "consume of an unknown topic"
        );
        Ok(())
    });
}
