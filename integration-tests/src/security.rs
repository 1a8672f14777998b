//! Helpers of the security tests (SASL, ACLs, users replicated between regions): the offline
//! `causeway user` / `causeway acl` commands, and SASL/PLAIN logins for raw connections and
//! librdkafka.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{ensure, Context, Result};
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;

use rdkafka::producer::FutureProducer;

use crate::{broker_binary, produce_all, producer_config, raw, BrokerProcess, TestRecord};

/// A user name and password.
pub type Who = (&'static str, &'static str);

/// Runs an offline `causeway` subcommand (`user`, `acl`) over `data_dir` with `stdin`; its
/// standard output.
pub fn causeway_offline(args: &[&str], data_dir: &Path, stdin: &str) -> Result<String> {
    let mut child = Command::new(broker_binary()?)
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("causeway {args:?}"))?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(stdin.as_bytes())?;
    let output = child.wait_with_output()?;
    ensure!(
        output.status.success(),
        "causeway {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `causeway user create` of `name` with `mechanisms` (comma-separated) in a stopped broker's
/// `data_dir`.
pub fn create_user(
    data_dir: &Path,
    (name, password): (&str, &str),
    mechanisms: &str,
) -> Result<()> {
    causeway_offline(
        &["user", "create", name, "--mechanism", mechanisms],
        data_dir,
        &format!("{password}\n"),
    )
    .map(drop)
}

/// SaslHandshake and SaslAuthenticate with PLAIN on `raw` (again, if it has authenticated);
/// the SaslAuthenticate answer.
pub fn plain_login(
    raw: &mut raw::RawClient,
    (user, password): (&str, &str),
) -> Result<SaslAuthenticateResponse> {
    let handshake =
        SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN"));
    let answer = raw.request(1, &handshake)?;
    ensure!(answer.error_code == 0, "SaslHandshake: {answer:?}");
    let authenticate = SaslAuthenticateRequest::default()
        .with_auth_bytes(format!("\0{user}\0{password}").into_bytes().into());
    let answer = raw.request(2, &authenticate)?;
    ensure!(
        answer.error_code == 0,
        "SaslAuthenticate as {user}: {answer:?}"
    );
    Ok(answer)
}

/// A raw protocol connection logged in as `who` with SASL/PLAIN, for requests librdkafka would
/// not send.
pub fn raw_as(broker: &BrokerProcess, who: (&str, &str)) -> Result<raw::RawClient> {
    let mut raw = broker.raw()?;
    plain_login(&mut raw, who)?;
    Ok(raw)
}

/// `config` logging in as `who` with SASL/PLAIN (Debian's kcat and librdkafka builds without
/// SCRAM still have PLAIN).
pub fn as_user(mut config: ClientConfig, (user, password): (&str, &str)) -> ClientConfig {
    config
        .set("security.protocol", "SASL_PLAINTEXT")
        .set("sasl.mechanisms", "PLAIN")
        .set("sasl.username", user)
        .set("sasl.password", password);
    config
}

/// Produces `count` records to `topic` as `who` with librdkafka; the first delivery error.
pub fn produce_as(
    broker: &BrokerProcess,
    who: (&str, &str),
    topic: &str,
    count: usize,
) -> Result<()> {
    let mut config = as_user(producer_config(&broker.bootstrap()), who);
    config.set("message.timeout.ms", "10000");
    let producer: FutureProducer = config.create()?;
    let records: Vec<TestRecord> = (0..count)
        .map(|i| TestRecord::value(format!("{}-{topic}-{i}", who.0)))
        .collect();
    produce_all(&producer, topic, &records).map(|_| ())
}

/// kafka-python's round trip (`clients/kafka_python_sasl.py`: 20 records produced, then
/// consumed) as `user` with `mechanism`, over SASL_PLAINTEXT, or SASL_SSL trusting `ca_file`;
/// its JSON line (`{"acknowledged": n, "consumed": n}` or `{"error": class}`).
pub fn kafka_python_round_trip(
    bootstrap: &str,
    topic: &str,
    mechanism: &str,
    (user, password): (&str, &str),
    ca_file: Option<&Path>,
) -> Result<serde_json::Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("clients")
        .join("kafka_python_sasl.py");
    let mut command = Command::new("python3");
    command
        .arg(script)
        .args([bootstrap, topic, mechanism, user, password]);
    if let Some(ca_file) = ca_file {
        command.arg(ca_file);
    }
    let output = command
        .output()
        .context("python3 kafka_python_sasl.py (installed by .ci/run)")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().with_context(|| {
        format!(
            "no output; stderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })?;
    serde_json::from_str(line).with_context(|| format!("parsing {line:?}"))
}
