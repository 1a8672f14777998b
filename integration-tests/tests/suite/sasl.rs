//! SASL on the Kafka listener (`--kafka-security-protocol sasl_plaintext`), with users created
//! offline by `causeway user create`: kafka-python logs in with SCRAM-SHA-256 and SCRAM-SHA-512,
//! kcat and librdkafka (rdkafka) with PLAIN; wrong passwords and unknown users
//! are refused; a client that skips authentication is cut off after ApiVersions.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use causeway_integration_tests::security::{
    create_user, kafka_python_round_trip, plain_login, raw_as,
};
use causeway_integration_tests::{
    http_get, kcat_command, produce_all, producer_config, raw, topic_name, with_broker,
    BrokerOptions, BrokerProcess, TestRecord,
};
use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, ApiVersionsRequest, DescribeUserScramCredentialsRequest,
    MetadataRequest,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::producer::FutureProducer;

const ALICE: (&str, &str) = ("alice", "wonderland-2026");
const BOB: (&str, &str) = ("bob", "builder,=odd name chars");

/// A broker over `data_dir` whose Kafka listener requires SASL with `mechanisms`.
fn sasl_listener(data_dir: &Path, mechanisms: &str) -> BrokerOptions {
    BrokerOptions::new()
        .data_dir(data_dir)
        .flag("--kafka-security-protocol", "sasl_plaintext")
        .flag("--sasl-enabled-mechanisms", mechanisms)
}

fn rdkafka_plain(broker: &BrokerProcess, (user, password): (&str, &str)) -> ClientConfig {
    let mut config = producer_config(&broker.bootstrap());
    config
        .set("security.protocol", "SASL_PLAINTEXT")
        .set("sasl.mechanisms", "PLAIN")
        .set("sasl.username", user)
        .set("sasl.password", password)
        .set("message.timeout.ms", "10000");
    config
}

/// Produces `count` records with librdkafka; `Err` with the first delivery error.
fn produce_plain(config: &ClientConfig, topic: &str, count: usize) -> Result<()> {
    let producer: FutureProducer = config.create()?;
    let records: Vec<TestRecord> = (0..count)
        .map(|i| TestRecord::value(format!("plain-{i}")))
        .collect();
    produce_all(&producer, topic, &records).map(|_| ())
}

/// Connections closed for a request before (or after the expiry of) authentication.
fn refused_unauthenticated(broker: &BrokerProcess) -> Result<f64> {
    let (_, body) = http_get(broker.http_addr(), "/metrics")?;
    Ok(body
        .lines()
        .filter(|l| {
            l.starts_with("causeway_connections_refused_total")
                && l.contains("reason=\"unauthenticated\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

fn authentications(broker: &BrokerProcess, result: &str) -> Result<f64> {
    let (_, body) = http_get(broker.http_addr(), "/metrics")?;
    Ok(body
        .lines()
        .filter(|l| {
            l.starts_with("causeway_sasl_authentications_total")
                && l.contains(&format!("result=\"{result}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

#[test]
fn clients_authenticate_with_scram_and_plain_and_nothing_is_served_before() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let data_dir = dir.path().join("data");
    create_user(&data_dir, ALICE, "SCRAM-SHA-256,SCRAM-SHA-512").expect("alice");
    create_user(&data_dir, BOB, "SCRAM-SHA-512").expect("bob");
    let options = sasl_listener(&data_dir, "SCRAM-SHA-256,SCRAM-SHA-512,PLAIN");
    with_broker(options, |broker| {
        let topic = topic_name("sasl");
        let ok = serde_json::json!({"acknowledged": 20, "consumed": 20});
        let alice =
            kafka_python_round_trip(&broker.bootstrap(), &topic, "SCRAM-SHA-256", ALICE, None)?;
        ensure!(alice == ok, "alice with SCRAM-SHA-256: {alice}");
        let consumed_twice = serde_json::json!({"acknowledged": 20, "consumed": 20});
        let bob = kafka_python_round_trip(&broker.bootstrap(), &topic, "SCRAM-SHA-512", BOB, None)?;
        ensure!(bob == consumed_twice, "bob with SCRAM-SHA-512: {bob}");
        for (mechanism, who) in [
            ("SCRAM-SHA-256", (ALICE.0, "not her password")),
            ("SCRAM-SHA-256", (BOB.0, BOB.1)), // bob has no SHA-256 credential
            ("SCRAM-SHA-512", ("mallory", "guess")),
            ("PLAIN", (ALICE.0, "wrong")),
        ] {
            let refused =
                kafka_python_round_trip(&broker.bootstrap(), &topic, mechanism, who, None)?;
            ensure!(
                refused["error"].as_str().is_some(),
                "{} with {mechanism} and a wrong password got in: {refused}",
                who.0
            );
        }
        ensure!(
            authentications(broker, "failure")? >= 4.0,
            "failures not counted"
        );

        // kcat lists the topic as bob over PLAIN (checked against his SCRAM-SHA-512 credential;
        // kcat's SCRAM is covered over SASL_SSL in operations.rs, run-local).
        let kcat = kcat_command()
            .args(["-b", &broker.bootstrap(), "-L", "-t", &topic, "-m", "10"])
            .args(["-X", "security.protocol=SASL_PLAINTEXT"])
            .args(["-X", "sasl.mechanisms=PLAIN"])
            .args(["-X", &format!("sasl.username={}", BOB.0)])
            .args(["-X", &format!("sasl.password={}", BOB.1)])
            .output()
            .context("kcat")?;
        let listing = String::from_utf8_lossy(&kcat.stdout);
        ensure!(
            kcat.status.success() && listing.contains(&topic),
            "kcat as bob: {listing} {}",
            String::from_utf8_lossy(&kcat.stderr)
        );

        // librdkafka with PLAIN: alice's password works, a wrong one does not.
        produce_plain(&rdkafka_plain(broker, ALICE), &topic, 10)?;
        let mut wrong = rdkafka_plain(broker, (ALICE.0, "nope"));
        wrong.set("message.timeout.ms", "3000");
        ensure!(
            produce_plain(&wrong, &topic, 1).is_err(),
            "PLAIN with a wrong password delivered"
        );

        // Without authenticating: ApiVersions is answered, Metadata closes the connection.
        let mut raw = broker.raw()?;
        raw.request(3, &ApiVersionsRequest::default())?;
        let refused = raw.request(12, &MetadataRequest::default());
        ensure!(
            refused.is_err() && raw.closed_within(Duration::from_secs(5)),
            "Metadata answered before authentication: {refused:?}"
        );
        ensure!(
            authentications(broker, "success")? >= 3.0,
            "successes not counted"
        );
        Ok(())
    });
}

/// An upsertion as Kafka's admin client builds it: the salted password, never the password.
fn upsertion(
    user: &str,
    mechanism: i8,
    iterations: i32,
    password: &str,
) -> ScramCredentialUpsertion {
    let salt = format!("salt-of-{user}").into_bytes();
    let mut salted = vec![0u8; 32];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password.as_bytes(), &salt, iterations as u32, &mut salted);
    let mut upsertion = ScramCredentialUpsertion::default();
    upsertion.name = StrBytes::from_string(user.to_owned());
    upsertion.mechanism = mechanism;
    upsertion.iterations = iterations;
    upsertion.salt = salt.into();
    upsertion.salted_password = salted.into();
    upsertion
}

fn deletion(user: &str, mechanism: i8) -> ScramCredentialDeletion {
    let mut deletion = ScramCredentialDeletion::default();
    deletion.name = StrBytes::from_string(user.to_owned());
    deletion.mechanism = mechanism;
    deletion
}

/// Users created and deleted on a running broker with the Kafka admin APIs (KIP-554), then used
/// (or refused) by kafka-python.
#[test]
fn users_are_managed_on_a_running_broker_with_the_kafka_admin_apis() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let data_dir = dir.path().join("data");
    create_user(&data_dir, ALICE, "SCRAM-SHA-256,SCRAM-SHA-512").expect("alice");
    let options = sasl_listener(&data_dir, "SCRAM-SHA-256,PLAIN");
    with_broker(options, |broker| {
        let topic = topic_name("sasl-admin");
        let mut admin = raw_as(broker, ALICE)?;
        let mut alter = AlterUserScramCredentialsRequest::default();
        alter.upsertions = vec![
            upsertion("carol", 1, 4096, "carol-pw"),
            upsertion("dave", 1, 100, "too few iterations"),
            upsertion("erin", 3, 4096, "no such mechanism"),
        ];
        alter.deletions = vec![deletion("frank", 1)];
        let answer = admin.request(0, &alter)?;
        let codes: Vec<(String, i16)> = answer
            .results
            .iter()
            .map(|r| (r.user.to_string(), r.error_code))
            .collect();
        let expected = [("frank", 91), ("carol", 0), ("dave", 93), ("erin", 33)]
            .map(|(u, c)| (u.to_owned(), c));
        ensure!(codes == expected, "alter results: {codes:?}");

        let all = admin.request(0, &DescribeUserScramCredentialsRequest::default())?;
        let described: Vec<(String, Vec<(i8, i32)>)> = all
            .results
            .iter()
            .map(|r| {
                let infos = r
                    .credential_infos
                    .iter()
                    .map(|c| (c.mechanism, c.iterations));
                (r.user.to_string(), infos.collect())
            })
            .collect();
        let expected = vec![
            ("alice".to_owned(), vec![(1, 8192), (2, 8192)]),
            ("carol".to_owned(), vec![(1, 4096)]),
        ];
        ensure!(described == expected, "described: {described:?}");

        let ok = serde_json::json!({"acknowledged": 20, "consumed": 20});
        let carol = kafka_python_round_trip(
            &broker.bootstrap(),
            &topic,
            "SCRAM-SHA-256",
            ("carol", "carol-pw"),
            None,
        )?;
        ensure!(carol == ok, "carol, created over the admin API: {carol}");

        let mut delete = AlterUserScramCredentialsRequest::default();
        delete.deletions = vec![deletion("carol", 1)];
        let answer = admin.request(0, &delete)?;
        ensure!(
            answer.results.len() == 1 && answer.results[0].error_code == 0,
            "{answer:?}"
        );
        let refused = kafka_python_round_trip(
            &broker.bootstrap(),
            &topic,
            "SCRAM-SHA-256",
            ("carol", "carol-pw"),
            None,
        )?;
        ensure!(
            refused["error"].as_str().is_some(),
            "carol still logs in: {refused}"
        );
        Ok(())
    });
}

/// Sessions that expire (`--connections-max-reauth-ms`, KIP-368): librdkafka re-authenticates
/// on its open connections and keeps producing; a connection that does not is served nothing
/// more; re-authentication renews a session, and must be as the same user.
#[test]
fn sessions_expire_unless_the_client_authenticates_again_as_the_same_user() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let data_dir = dir.path().join("data");
    create_user(&data_dir, ALICE, "SCRAM-SHA-256").expect("alice");
    create_user(&data_dir, BOB, "SCRAM-SHA-256").expect("bob");
    let options = sasl_listener(&data_dir, "PLAIN").flag("--connections-max-reauth-ms", 1_500);
    with_broker(options, |broker| {
        let topic = topic_name("reauth");
        let producer: FutureProducer = rdkafka_plain(broker, ALICE).create()?;
        for round in 0..8 {
            let records = [TestRecord::value(format!("round-{round}"))];
            produce_all(&producer, &topic, &records)
                .with_context(|| format!("round {round}, after {} ms", round * 500))?;
            std::thread::sleep(Duration::from_millis(500));
        }
        drop(producer);
        ensure!(
            refused_unauthenticated(broker)? == 0.0,
            "librdkafka's connection was cut instead of re-authenticating"
        );

        // A connection that lets its session expire gets nothing more.
        let mut idle = raw_as(broker, ALICE)?;
        std::thread::sleep(Duration::from_millis(2_000));
        let late = idle.request(12, &MetadataRequest::default());
        ensure!(
            late.is_err() && idle.closed_within(Duration::from_secs(5)),
            "served after the session expired: {late:?}"
        );

        // Re-authenticating renews the session.
        let mut renewing = raw_as(broker, ALICE)?;
        std::thread::sleep(Duration::from_millis(1_000));
        reauthenticate(&mut renewing, ALICE)?;
        std::thread::sleep(Duration::from_millis(1_000));
        renewing
            .request(12, &MetadataRequest::default())
            .context("served within the renewed session")?;

        // ...but not as somebody else.
        let mut switching = raw_as(broker, ALICE)?;
        ensure!(
            reauthenticate(&mut switching, BOB).is_err(),
            "re-authenticated as another user"
        );
        Ok(())
    });
}

/// Authenticates `raw` again as `who`, checking the session lifetime the broker grants.
fn reauthenticate(raw: &mut raw::RawClient, who: (&str, &str)) -> Result<()> {
    let answer = plain_login(raw, who)?;
    ensure!(answer.session_lifetime_ms == 1_500, "lifetime: {answer:?}");
    Ok(())
}

#[test]
fn a_misspelled_mechanism_stops_the_broker_at_start() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let options = BrokerOptions::new()
        .data_dir(dir.path().join("data"))
        .flag("--kafka-security-protocol", "sasl_plaintext")
        .flag("--sasl-enabled-mechanisms", "SCRAM-SHA256");
    let started = BrokerProcess::start(options);
    let error = format!("{:?}", started.err());
    assert!(
        error.contains("SCRAM-SHA256"),
        "started, or not for the mechanism: {error}"
    );
}
