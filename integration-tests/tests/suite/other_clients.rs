//! Clients other than librdkafka: KafkaJS 2.x (Node.js) and kafka-python 3.x, each running a
//! round trip of admin, producer (idempotent by default) and consumer group against the broker.
//! `.ci/run` installs them (`npm ci` in `integration-tests/clients`, `pip install kafka-python`).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};
use causeway_integration_tests::{topic_name, with_broker, BrokerOptions, BrokerProcess};

fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients")
}

/// Runs a client script and parses the JSON line it prints.
fn run_client(
    program: &str,
    script: &str,
    broker: &BrokerProcess,
    topic: &str,
) -> Result<serde_json::Value> {
    let output = Command::new(program)
        .arg(clients_dir().join(script))
        .args([broker.bootstrap(), topic.to_string()])
        .current_dir(clients_dir())
        .output()
        .with_context(|| format!("running {program} {script} (installed by .ci/run)"))?;
    if !output.status.success() {
        bail!(
            "{script} failed: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().context("no output")?;
    serde_json::from_str(line).with_context(|| format!("parsing {line:?}"))
}

fn options() -> BrokerOptions {
    BrokerOptions::new().flag("--group-initial-rebalance-delay-ms", 0)
}

#[test]
fn kafkajs_produces_consumes_in_a_group_and_reads_committed_offsets() {
    with_broker(options(), |broker| {
        let topic = topic_name("kafkajs");
        let result = run_client("node", "kafkajs_roundtrip.js", broker, &topic)?;
        let expected = serde_json::json!({"consumed": 50, "distinct": 50, "consistent": true, "committed": 50});
        if result != expected {
            bail!("KafkaJS round trip: {result}, expected {expected}");
        }
        Ok(())
    });
}

#[test]
fn kafka_python_creates_configures_produces_and_consumes_in_a_group() {
    with_broker(options(), |broker| {
        let topic = topic_name("kafka-python");
        let result = run_client("python3", "kafka_python_roundtrip.py", broker, &topic)?;
        let expected = serde_json::json!({
            "retention_ms": "3600000",
            "acknowledged": 50,
            "consumed": 50,
            "distinct": 50,
            "group_listed": true
        });
        if result != expected {
            bail!("kafka-python round trip: {result}, expected {expected}");
        }
        Ok(())
    });
}
