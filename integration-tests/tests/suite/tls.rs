//! TLS on Kafka listeners, with certificates the tests make (rcgen) and real clients: kcat
//! (the system's librdkafka, with OpenSSL) over SSL and SASL_SSL, kafka-python and librdkafka
//! (`rdkafka`, built with OpenSSL) over SASL_SSL with SCRAM-SHA-512. Several listeners at once, each advertised to its own clients; client
//! certificates naming the principal ACLs judge; a renewed certificate served after SIGHUP
//! without a restart.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use causeway_integration_tests::certs::{kcat_ssl, Authority, Issued};
use causeway_integration_tests::security::{
    causeway_offline, create_user, kafka_python_round_trip,
};
use causeway_integration_tests::{
    assign, consume_n, consumer_config, free_port, hang_up, kcat, produce_all, producer_config,
    topic_name, wait_until, with_broker, BrokerOptions, BrokerProcess, KcatOutput, TestRecord,
};
use rcgen::DnType;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::FutureProducer;
use rdkafka::Offset;
use serde_json::json;
use sha2::Digest;

const KCAT_TIMEOUT: Duration = Duration::from_secs(30);

/// The files a TLS broker and its clients use.
struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    server: Issued,
    authority: Authority,
    dir: PathBuf,
}

fn pki() -> Result<Pki> {
    let dir = tempfile::TempDir::new()?;
    let path = dir.path().to_path_buf();
    let authority = Authority::new("causeway test CA")?;
    let ca = authority.write(&path.join("ca.pem"))?;
    let server = authority.server(&path, "server")?;
    Ok(Pki {
        _dir: dir,
        ca,
        server,
        authority,
        dir: path,
    })
}

/// A broker whose main listener is plaintext, with one more listener `NAME=PROTOCOL` on
/// `port`, serving `pki`'s server certificate.
fn tls_broker(pki: &Pki, name: &str, protocol: &str, port: u16) -> BrokerOptions {
    BrokerOptions::new()
        .flag(
            "--listener",
            format!("{name}={protocol}://127.0.0.1:{port}"),
        )
        .flag("--ssl-certificate-file", pki.server.certificate.display())
        .flag("--ssl-private-key-file", pki.server.key.display())
}

/// A broker with a SASL_SSL listener offering `mechanisms`, on which `user` exists with a
/// SCRAM-SHA-512 credential; `body` gets the listener's address.
fn with_sasl_ssl_broker(
    pki: &Pki,
    user: (&str, &str),
    mechanisms: &str,
    body: impl FnOnce(String) -> Result<()>,
) {
    let port = free_port().expect("port");
    let data = tempfile::TempDir::new().expect("dir");
    let data_dir = data.path().join("data");
    create_user(&data_dir, user, "SCRAM-SHA-512").expect("user");
    let options = tls_broker(pki, "CLIENTS", "sasl_ssl", port)
        .data_dir(&data_dir)
        .flag("--sasl-enabled-mechanisms", mechanisms);
    with_broker(options, |_broker| body(format!("127.0.0.1:{port}")));
}

/// Produces `lines` to `topic` and reads them back over SSL; what was read.
fn ssl_round_trip(
    bootstrap: &str,
    ca: &Path,
    client: Option<&Issued>,
    topic: &str,
    lines: &[&str],
) -> Result<Vec<String>> {
    let input = format!("{}\n", lines.join("\n"));
    let produced = kcat_ssl(
        bootstrap,
        ca,
        client,
        &["-P", "-t", topic],
        input.as_bytes(),
    )?;
    ensure!(
        produced.status.success() && !produced.stderr.contains("ERROR"),
        "kcat -P over SSL: {}",
        produced.stderr
    );
    let count = lines.len().to_string();
    let consumed = kcat_ssl(
        bootstrap,
        ca,
        client,
        &["-C", "-t", topic, "-o", "beginning", "-c", &count, "-e"],
        b"",
    )?;
    ensure!(
        consumed.status.success(),
        "kcat -C over SSL: {}",
        consumed.stderr
    );
    Ok(consumed.stdout.lines().map(str::to_owned).collect())
}

/// The broker address `kcat -L` reports (what the listener advertises).
fn advertised_broker(metadata: &KcatOutput) -> Option<String> {
    metadata.stdout.lines().find_map(|line| {
        let line = line.trim();
        line.strip_prefix("broker 0 at ")
            .map(|rest| rest.split_whitespace().next().unwrap_or(rest).to_owned())
    })
}

/// kcat produces and consumes over an SSL listener beside the plaintext one; each listener
/// advertises itself to its own clients (a client of the TLS port is never sent to the
/// plaintext one); plaintext spoken to the TLS port and a client trusting another authority
/// get nowhere.
#[test]
fn kcat_round_trips_over_an_ssl_listener_beside_a_plaintext_one() {
    let pki = pki().expect("certificates");
    let port = free_port().expect("port");
    with_broker(tls_broker(&pki, "SECURE", "ssl", port), |broker| {
        let secure = format!("127.0.0.1:{port}");
        let topic = topic_name("tls");
        let read = ssl_round_trip(&secure, &pki.ca, None, &topic, &["one", "two", "three"])?;
        ensure!(read == ["one", "two", "three"], "read back {read:?}");

        let over_tls = kcat_ssl(&secure, &pki.ca, None, &["-L"], b"")?;
        ensure!(
            advertised_broker(&over_tls).as_deref() == Some(secure.as_str()),
            "the SSL listener advertised {:?}:\n{}",
            advertised_broker(&over_tls),
            over_tls.stdout
        );
        let plain = kcat(&["-b", &broker.bootstrap(), "-L"], b"", KCAT_TIMEOUT)?;
        ensure!(
            advertised_broker(&plain).as_deref() == Some(broker.bootstrap().as_str()),
            "the plaintext listener advertised {:?}",
            advertised_broker(&plain)
        );

        let plaintext_to_tls = kcat(
            &[
                "-b",
                &secure,
                "-L",
                "-m",
                "3",
                "-X",
                "reconnect.backoff.max.ms=100",
            ],
            b"",
            KCAT_TIMEOUT,
        )?;
        ensure!(
            !plaintext_to_tls.status.success(),
            "plaintext on the TLS port was answered: {}",
            plaintext_to_tls.stdout
        );
        let stranger = Authority::new("another CA")?;
        let other_ca = stranger.write(&pki.dir.join("other-ca.pem"))?;
        let untrusted = kcat_ssl(&secure, &other_ca, None, &["-L", "-m", "3"], b"")?;
        ensure!(
            !untrusted.status.success(),
            "a client trusting another CA connected: {}",
            untrusted.stdout
        );
        let metrics = broker_metrics(broker.http_addr())?;
        ensure!(
            metrics.contains("causeway_tls_handshakes_total{listener=\"kafka\",result=\"ok\"}")
                && metrics.contains(
                    "causeway_tls_handshakes_total{listener=\"kafka\",result=\"failed\"}"
                ),
            "handshakes not counted:\n{metrics}"
        );
        Ok(())
    });
}

fn broker_metrics(addr: std::net::SocketAddr) -> Result<String> {
    let (status, body) = causeway_integration_tests::http_get(addr, "/metrics")?;
    ensure!(status == 200, "/metrics answered {status}");
    Ok(body)
}

/// SASL_SSL: kafka-python logs in with SCRAM-SHA-512 inside TLS (checking the server's name
/// against its certificate) and round-trips records; a wrong password is refused; kcat logs in
/// with PLAIN on the same listener.
#[test]
fn kafka_python_and_kcat_authenticate_over_sasl_ssl() {
    let pki = pki().expect("certificates");
    with_sasl_ssl_broker(
        &pki,
        ("alice", "alice-pw-2026"),
        "SCRAM-SHA-512,PLAIN",
        |secure| {
            let topic = topic_name("sasl-ssl");
            let ok = kafka_python_round_trip(
                &secure,
                &topic,
                "SCRAM-SHA-512",
                ("alice", "alice-pw-2026"),
                Some(&pki.ca),
            )?;
            ensure!(
                ok == json!({"acknowledged": 20, "consumed": 20}),
                "kafka-python over SASL_SSL: {ok}"
            );
            let refused = kafka_python_round_trip(
                &secure,
                &topic,
                "SCRAM-SHA-512",
                ("alice", "wrong"),
                Some(&pki.ca),
            )?;
            ensure!(
                refused.get("error").is_some(),
                "a wrong password was let in: {refused}"
            );
            let ca = format!("ssl.ca.location={}", pki.ca.display());
            let login = [
                "-b",
                &secure,
                "-X",
                "security.protocol=SASL_SSL",
                "-X",
                &ca,
                "-X",
                "sasl.mechanisms=PLAIN",
                "-X",
                "sasl.username=alice",
            ];
            let mut right = login.to_vec();
            right.extend(["-X", "sasl.password=alice-pw-2026", "-C", "-t", &topic]);
            right.extend(["-o", "beginning", "-c", "20", "-e"]);
            let consumed = kcat(&right, b"", KCAT_TIMEOUT)?;
            ensure!(
                consumed.status.success() && consumed.stdout.lines().count() == 20,
                "kcat over SASL_SSL read {} lines: {}",
                consumed.stdout.lines().count(),
                consumed.stderr
            );
            let mut wrong = login.to_vec();
            wrong.extend(["-X", "sasl.password=wrong", "-L", "-m", "3"]);
            let refused = kcat(&wrong, b"", KCAT_TIMEOUT)?;
            ensure!(
                !refused.status.success() && refused.stderr.contains("Authentication failed"),
                "kcat with a wrong password: {} / {}",
                refused.stdout,
                refused.stderr
            );
            Ok(())
        },
    );
}

/// With `--ssl-client-auth required` a client must present a certificate the configured
/// authority signed, and its subject is its principal: ACL bindings for `User:CN=alice,O=acme`
/// let alice's certificate produce and consume, bob's certificate gets
/// TOPIC_AUTHORIZATION_FAILED, and a client without a certificate fails the handshake.
#[test]
fn client_certificates_name_the_principal_acls_judge() {
    let pki = pki().expect("certificates");
    let alice = pki
        .authority
        .client(
            &pki.dir,
            "alice",
            &[
                (DnType::OrganizationName, "acme"),
                (DnType::CommonName, "alice"),
            ],
        )
        .expect("alice's certificate");
    let bob = pki
        .authority
        .client(&pki.dir, "bob", &[(DnType::CommonName, "bob")])
        .expect("bob's certificate");
    let port = free_port().expect("port");
    let data = tempfile::TempDir::new().expect("dir");
    let data_dir = data.path().join("data");
    causeway_offline(
        &[
            "acl",
            "add",
            "--principal",
            "User:CN=alice,O=acme",
            "--allow",
            "--operation",
            "all",
            "--topic",
            "mtls-",
            "--prefixed",
        ],
        &data_dir,
        "",
    )
    .expect("acl add");
    let options = tls_broker(&pki, "MTLS", "ssl", port)
        .data_dir(&data_dir)
        .flag("--ssl-client-auth", "required")
        .flag("--ssl-client-ca-file", pki.ca.display())
        .flag("--authorization", "acls");
    with_broker(options, |_broker| {
        let secure = format!("127.0.0.1:{port}");
        let topic = topic_name("mtls-");
        let read = ssl_round_trip(&secure, &pki.ca, Some(&alice), &topic, &["a1", "a2"])?;
        ensure!(read == ["a1", "a2"], "alice read back {read:?}");

        let denied = kcat_ssl(
            &secure,
            &pki.ca,
            Some(&bob),
            &["-P", "-t", &topic],
            b"from bob\n",
        )?;
        ensure!(
            denied.stderr.contains("Topic authorization failed")
                || denied.stderr.contains("TOPIC_AUTHORIZATION_FAILED"),
            "bob's produce: {} / {}",
            denied.stdout,
            denied.stderr
        );
        let anonymous = kcat_ssl(&secure, &pki.ca, None, &["-L", "-m", "3"], b"")?;
        ensure!(
            !anonymous.status.success(),
            "a client without a certificate connected: {}",
            anonymous.stdout
        );
        let read = ssl_round_trip(&secure, &pki.ca, Some(&alice), &topic, &["a1", "a2"])
            .context("alice again")?;
        ensure!(read.len() == 2, "bob's record got in: {read:?}");
        Ok(())
    });
}

/// A certificate renewed on disk is served to new connections after SIGHUP, without a
/// restart: clients trusting only the new authority connect, clients trusting only the old one
/// no longer do. A broken file on a later SIGHUP leaves the certificate in use.
#[test]
fn a_renewed_certificate_is_served_after_sighup() {
    let pki = pki().expect("certificates");
    let port = free_port().expect("port");
    with_broker(tls_broker(&pki, "SECURE", "ssl", port), |broker| {
        let secure = format!("127.0.0.1:{port}");
        let metadata = |ca: &Path| kcat_ssl(&secure, ca, None, &["-L", "-m", "3"], b"");
        ensure!(metadata(&pki.ca)?.status.success(), "first certificate");

        let renewed = Authority::new("renewed CA")?;
        let renewed_ca = renewed.write(&pki.dir.join("renewed-ca.pem"))?;
        let fresh = renewed.server(&pki.dir, "renewed")?;
        std::fs::copy(&fresh.certificate, &pki.server.certificate)?;
        std::fs::copy(&fresh.key, &pki.server.key)?;
        hang_up(broker)?;
        ensure!(
            wait_until(Duration::from_secs(10), || {
                metadata(&renewed_ca).is_ok_and(|m| m.status.success())
            }),
            "the renewed certificate was not served after SIGHUP"
        );
        ensure!(
            !metadata(&pki.ca)?.status.success(),
            "the old certificate is still served"
        );

        std::fs::write(&pki.server.key, "not a key")?;
        hang_up(broker)?;
        ensure!(
            wait_until(Duration::from_secs(10), || {
                broker_metrics(broker.http_addr())
                    .is_ok_and(|m| m.contains("causeway_tls_reloads_total{result=\"failed\"} 1"))
            }),
            "the failed reload was not counted"
        );
        ensure!(
            metadata(&renewed_ca)?.status.success(),
            "a broken key file replaced the certificate in use"
        );
        Ok(())
    });
}

/// `GET https://127.0.0.1:PORT/PATH` with Python's TLS client trusting only `ca` (and checking
/// the server's name): its status, or `None` when no TLS connection could be made.
fn https_get(port: u16, path: &str, ca: &Path) -> Option<u16> {
    let script = "import ssl, sys, urllib.request, urllib.error\n\
        context = ssl.create_default_context(cafile=sys.argv[2])\n\
        try:\n    print(urllib.request.urlopen(sys.argv[1], context=context, timeout=5).status)\n\
        except urllib.error.HTTPError as e:\n    print(e.code)\n\
        except Exception as e:\n    print('none')\n";
    let url = format!("https://127.0.0.1:{port}{path}");
    let output = Command::new("python3")
        .args(["-c", script, &url])
        .arg(ca)
        .output()
        .ok()?;
    String::from_utf8_lossy(&output.stdout).trim().parse().ok()
}

/// A broker with `options` whose HTTP listener speaks HTTPS with `pki`'s server certificate,
/// once it answers `/readyz` there; and that listener's port.
fn https_broker(pki: &Pki, options: BrokerOptions) -> (BrokerProcess, u16) {
    let (kafka_port, http_port) = (free_port().expect("port"), free_port().expect("port"));
    let options = options
        .flag("--http-tls", "true")
        .flag("--ssl-certificate-file", pki.server.certificate.display())
        .flag("--ssl-private-key-file", pki.server.key.display());
    let broker = BrokerProcess::spawn_on(options, kafka_port, http_port).expect("spawn");
    let ready = wait_until(Duration::from_secs(30), || {
        https_get(http_port, "/readyz", &pki.ca) == Some(200)
    });
    assert!(ready, "no HTTPS /readyz: {}", broker.stderr_tail(30));
    (broker, http_port)
}

/// With `--http-tls true` the HTTP listener (metrics, probes, tables) speaks HTTPS with the
/// listeners' certificate: a client trusting the authority gets `/readyz` and `/metrics`,
/// plain HTTP gets no answer.
#[test]
fn the_http_listener_serves_https_with_the_same_certificate() {
    let pki = pki().expect("certificates");
    let (broker, http_port) = https_broker(&pki, BrokerOptions::new());
    assert_eq!(https_get(http_port, "/metrics", &pki.ca), Some(200));
    let plain = causeway_integration_tests::http_get(broker.http_addr(), "/readyz");
    assert!(
        !matches!(plain, Ok((200, _))),
        "plain HTTP was answered: {plain:?}"
    );
}

/// The admin commands that read the HTTP listener speak HTTPS and log in: `causeway region
/// status` with `--http-ca-file` and `--http-username` (the password in
/// `CAUSEWAY_HTTP_PASSWORD`), or with a token in `CAUSEWAY_HTTP_BEARER_TOKEN`, reads a listener
/// with `--http-tls` and `--http-auth required`; a wrong password is refused 401, and without
/// the authority the command fails to connect.
#[test]
fn the_http_admin_commands_speak_https_and_log_in() {
    let pki = pki().expect("certificates");
    let dir = tempfile::TempDir::new().expect("dir");
    let data_dir = dir.path().join("data");
    create_user(&data_dir, ("admin", "admin-pw-2026"), "SCRAM-SHA-256").expect("user");
    let token = "ops-token-5b1e";
    let tokens_file = dir.path().join("tokens");
    let hash = format!("{:x}", sha2::Sha256::digest(token.as_bytes()));
    std::fs::write(&tokens_file, format!("User:ops {hash}\n")).expect("tokens file");
    let options = BrokerOptions::new()
        .data_dir(&data_dir)
        .flag("--http-bearer-tokens-file", tokens_file.display())
        .flag("--http-auth", "required");
    let (_broker, http_port) = https_broker(&pki, options);

    let http = format!("127.0.0.1:{http_port}");
    let ca = pki.ca.display().to_string();
    let status = |args: &[&str], secret: (&str, &str)| -> (bool, String, String) {
        let output = Command::new(causeway_integration_tests::broker_binary().expect("binary"))
            .args(["region", "status", "--json", "--http", &http])
            .args(args)
            .env(secret.0, secret.1)
            .output()
            .expect("causeway region status");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let logged_in = ["--http-ca-file", &ca, "--http-username", "admin"];
    let password = |p| ("CAUSEWAY_HTTP_PASSWORD", p);
    let (ok, stdout, stderr) = status(&logged_in, password("admin-pw-2026"));
    let answer: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_default();
    assert!(
        ok && answer["region"] == "local",
        "region status over HTTPS as admin: {stdout} {stderr}"
    );
    let (ok, _, stderr) = status(&logged_in, password("wrong"));
    assert!(!ok && stderr.contains("401"), "a wrong password: {stderr}");
    let bearer = ("CAUSEWAY_HTTP_BEARER_TOKEN", token);
    let (ok, stdout, stderr) = status(&["--http-ca-file", &ca], bearer);
    assert!(
        ok && stdout.contains("local"),
        "region status with a bearer token: {stderr}"
    );
    let (ok, _, stderr) = status(&["--http-username", "admin"], password("admin-pw-2026"));
    assert!(
        !ok && stderr.contains("GET http://"),
        "plain HTTP to an HTTPS listener: {stderr}"
    );
}

/// librdkafka through the `rdkafka` crate (built with OpenSSL) over SASL_SSL with
/// SCRAM-SHA-512: a producer and a consumer as alice round-trip records; a wrong password gets
/// an authentication error, not records.
#[test]
fn librdkafka_round_trips_over_sasl_ssl_with_scram() {
    let pki = pki().expect("certificates");
    with_sasl_ssl_broker(
        &pki,
        ("alice", "alice-pw-2026"),
        "SCRAM-SHA-512",
        |secure| {
            let login = |config: &mut ClientConfig, password: &str| {
                config
                    .set("security.protocol", "SASL_SSL")
                    .set("ssl.ca.location", pki.ca.display().to_string())
                    .set("sasl.mechanisms", "SCRAM-SHA-512")
                    .set("sasl.username", "alice")
                    .set("sasl.password", password)
                    .set("message.timeout.ms", "10000");
            };
            let topic = topic_name("rdkafka-tls");
            let mut config = producer_config(&secure);
            login(&mut config, "alice-pw-2026");
            let producer: FutureProducer = config.create()?;
            let records: Vec<TestRecord> = (0..10)
                .map(|i| TestRecord::value(format!("r{i}")).partition(0))
                .collect();
            produce_all(&producer, &topic, &records)?;
            let mut config = consumer_config(&secure);
            login(&mut config, "alice-pw-2026");
            let consumer: BaseConsumer = config.create()?;
            assign(&consumer, &[(&topic, 0, Offset::Beginning)])?;
            let read = consume_n(&consumer, 10, Duration::from_secs(20))?;
            ensure!(read.len() == 10, "read {} of 10 over SASL_SSL", read.len());

            let mut config = producer_config(&secure);
            login(&mut config, "wrong");
            let refused: FutureProducer = config.create()?;
            let outcome = produce_all(&refused, &topic, &records[..1]);
            ensure!(outcome.is_err(), "a wrong password produced: {outcome:?}");
            Ok(())
        },
    );
}

/// Runs `causeway ARGS` with `password` in `CAUSEWAY_SASL_PASSWORD`; (success, stdout, stderr).
fn causeway_cli(args: &[&str], password: &str) -> Result<(bool, String, String)> {
    let output = Command::new(causeway_integration_tests::broker_binary()?)
        .args(args)
        .env("CAUSEWAY_SASL_PASSWORD", password)
        .output()
        .context("causeway")?;
    Ok((
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

/// The admin commands reach a SASL_SSL listener: `causeway topic create` and `list` log in with
/// SCRAM-SHA-512 (checking the broker's signature) and with PLAIN, inside TLS checked against
/// `--ssl-ca-file`; a wrong password is an authentication failure; an untrusted authority fails
/// before any password is sent.
#[test]
fn admin_commands_log_in_over_sasl_ssl() {
    let pki = pki().expect("certificates");
    with_sasl_ssl_broker(
        &pki,
        ("admin", "admin-pw-2026"),
        "SCRAM-SHA-512,PLAIN",
        |secure| {
            let ca = pki.ca.display().to_string();
            let topic = topic_name("cli-tls");
            let over_tls = |mechanism: &'static str| {
                vec![
                    "--bootstrap".to_owned(),
                    secure.clone(),
                    "--security-protocol".to_owned(),
                    "sasl_ssl".to_owned(),
                    "--ssl-ca-file".to_owned(),
                    ca.clone(),
                    "--sasl-mechanism".to_owned(),
                    mechanism.to_owned(),
                    "--sasl-username".to_owned(),
                    "admin".to_owned(),
                ]
            };
            let command = |words: &[&str], connection: &[String]| -> Vec<String> {
                let mut all: Vec<String> = words.iter().map(|w| (*w).to_owned()).collect();
                all.extend(connection.iter().cloned());
                all
            };
            let create = command(
                &["topic", "create", &topic, "-p", "2"],
                &over_tls("SCRAM-SHA-512"),
            );
            let create: Vec<&str> = create.iter().map(String::as_str).collect();
            let (ok, _, stderr) = causeway_cli(&create, "admin-pw-2026")?;
            ensure!(ok, "topic create over SASL_SSL with SCRAM: {stderr}");
            let list = command(&["topic", "list"], &over_tls("PLAIN"));
            let list: Vec<&str> = list.iter().map(String::as_str).collect();
            let (ok, stdout, stderr) = causeway_cli(&list, "admin-pw-2026")?;
            ensure!(
                ok && stdout.contains(&topic),
                "topic list with PLAIN: {stdout} {stderr}"
            );
            let (ok, _, stderr) = causeway_cli(&list, "wrong")?;
            ensure!(
                !ok && stderr.contains("authentication failed"),
                "a wrong password: {stderr}"
            );
            let stranger = Authority::new("another CA")?;
            let other_ca = stranger.write(&pki.dir.join("other-ca.pem"))?;
            let mut untrusted = list.clone();
            let position = untrusted
                .iter()
                .position(|a| *a == ca)
                .context("the CA argument")?;
            let other = other_ca.display().to_string();
            untrusted[position] = &other;
            let (ok, _, stderr) = causeway_cli(&untrusted, "admin-pw-2026")?;
            ensure!(
                !ok,
                "a broker signed by an untrusted authority was used: {stderr}"
            );
            Ok(())
        },
    );
}
