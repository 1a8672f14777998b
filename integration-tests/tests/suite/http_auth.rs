//! HTTP authentication and authorization (`--http-auth required`, `--authorization acls`) with
//! the real binary: Basic credentials are checked against the users `causeway user` made, bearer
//! tokens from `--http-bearer-tokens-file` stand for their principals, table rows, scans and the
//! change feed need Read on the topic (a grant made with `causeway acl add` opens them, a super
//! user sees everything), and `/metrics` and the probes stay open unless `--http-auth-probes`.
//!
//! Every test first fills a data dir on a broker without any security (a compacted topic
//! `orders-eu` and one `secret`, each with a row `k`), then stops it and serves the same data dir
//! with security on.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use causeway_integration_tests::regions::{metric, metric_sum};
use causeway_integration_tests::security::{causeway_offline, create_user, Who};
use causeway_integration_tests::{
    create_topic, free_port, hang_up, http_get, produce_all, wait_until, BrokerOptions,
    BrokerProcess, TestRecord, STARTUP_TIMEOUT,
};
use causeway_testkit::{http_get_with, http_head_of, HttpAnswer};
use sha2::{Digest, Sha256};

const ADMIN: Who = ("admin", "admin-pw-2026");
const ALICE: Who = ("alice", "alice-pw-2026");

const TABLE: &str = "orders-eu";
const SECRET: &str = "secret";

/// Patience for one HTTP answer.
const PATIENCE: Duration = Duration::from_secs(10);

/// A data dir (in `dir`) holding the users admin and alice and the tables `orders-eu` and
/// `secret`, each with the row `k`.
fn seeded_data_dir(dir: &tempfile::TempDir) -> Result<PathBuf> {
    let data_dir = dir.path().join("data");
    let mut seeder = BrokerProcess::start(BrokerOptions::new().data_dir(&data_dir))?;
    for topic in [TABLE, SECRET] {
        create_topic(&seeder, topic, 1, &[("cleanup.policy", "compact")])?;
        let row = TestRecord::value(format!(r#"{{"table":"{topic}"}}"#)).key("k");
        produce_all(&seeder.producer(), topic, &[row])?;
        let path = format!("/v1/tables/{topic}/rows/k");
        let seeded = wait_until(PATIENCE, || {
            matches!(http_get(seeder.http_addr(), &path), Ok((200, _)))
        });
        ensure!(seeded, "row k of {topic} never appeared");
    }
    seeder.terminate()?;
    for who in [ADMIN, ALICE] {
        create_user(&data_dir, who, "SCRAM-SHA-256")?;
    }
    Ok(data_dir)
}

/// Options of a broker over `data_dir` with HTTP authentication required and ACLs on,
/// `User:admin` a super user.
fn secured(data_dir: &Path) -> BrokerOptions {
    BrokerOptions::new()
        .data_dir(data_dir)
        .flag("--http-auth", "required")
        .flag("--authorization", "acls")
        .flag("--super-users", "User:admin")
}

/// `Authorization` of HTTP Basic as `who`.
fn basic((user, password): Who) -> String {
    format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
}

/// Standard base64 with padding (RFC 4648), which is all Basic credentials need.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let group = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                let index = (group >> (18 - 6 * i)) & 63;
                out.push(char::from(ALPHABET[index as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// GET `path` with `authorization` (none when `None`).
fn get(broker: &BrokerProcess, path: &str, authorization: Option<&str>) -> Result<HttpAnswer> {
    let headers: Vec<(&str, &str)> = authorization
        .map(|value| ("Authorization", value))
        .into_iter()
        .collect();
    if path.contains("/changes") {
        // The feed streams until the client goes: its head says whether it was served.
        return http_head_of(broker.http_addr(), path, &headers, PATIENCE);
    }
    http_get_with(broker.http_addr(), path, &headers, PATIENCE)
}

/// Fails unless GET `path` with `authorization` answers `status`.
fn expect(
    broker: &BrokerProcess,
    path: &str,
    authorization: Option<&str>,
    status: u16,
) -> Result<HttpAnswer> {
    let answer = get(broker, path, authorization)?;
    ensure!(
        answer.status == status,
        "GET {path} as {authorization:?}: {} (expected {status}): {}",
        answer.status,
        answer.body
    );
    Ok(answer)
}

/// The table routes of `topic`: a row, a scan, the change feed.
fn table_paths(topic: &str) -> [String; 3] {
    [
        format!("/v1/tables/{topic}/rows/k"),
        format!("/v1/tables/{topic}/rows?prefix=k"),
        format!("/v1/tables/{topic}/changes?from=0"),
    ]
}

fn run(body: impl FnOnce(&Path) -> Result<()>) {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let data_dir = seeded_data_dir(&dir).expect("seeding the data dir");
    if let Err(error) = body(&data_dir) {
        panic!("{error:#}");
    }
}

/// Without credentials, with a wrong password or as a user that does not exist: 401 with a
/// `WWW-Authenticate` challenge and the same body; with the right password the row. Failures
/// and successes are counted by method.
#[test]
fn basic_auth_is_required_and_checked_against_the_users_credentials() {
    run(|data_dir| {
        let broker = BrokerProcess::start(secured(data_dir))?;
        let row = format!("/v1/tables/{TABLE}/rows/k");
        let anonymous = expect(&broker, &row, None, 401)?;
        ensure!(
            anonymous
                .header("www-authenticate")
                .iter()
                .any(|challenge| challenge.starts_with(r#"Basic realm="causeway""#)),
            "no Basic challenge: {:?}",
            anonymous.headers
        );
        let wrong = expect(&broker, &row, Some(&basic(("admin", "wrong"))), 401)?;
        let nobody = expect(&broker, &row, Some(&basic(("nobody", "wrong"))), 401)?;
        ensure!(
            wrong.body == nobody.body && wrong.body == anonymous.body,
            "the refusals differ: {:?} {:?} {:?}",
            anonymous.body,
            wrong.body,
            nobody.body
        );
        expect(&broker, &row, Some("Digest username=admin"), 401)?;
        let served = expect(&broker, &row, Some(&basic(ADMIN)), 200)?;
        ensure!(
            served.body.contains(r#""table":"orders-eu""#),
            "{}",
            served.body
        );
        // Again: remembered, still the row.
        expect(&broker, &row, Some(&basic(ADMIN)), 200)?;
        let failed = metric(
            &broker,
            r#"causeway_http_authentications_total{method="basic",result="failed"}"#,
        )?;
        ensure!(failed == Some(2.0), "basic failures counted {failed:?}");
        let ok = metric(
            &broker,
            r#"causeway_http_authentications_total{method="basic",result="ok"}"#,
        )?;
        ensure!(ok == Some(2.0), "basic successes counted {ok:?}");
        ensure!(
            broker.stderr().contains("HTTP authentication failed"),
            "the failure was not logged"
        );
        Ok(())
    });
}

/// alice, authenticated but granted nothing, gets 403 on rows, scans, the change feed, the
/// partition's batches and the regions report; the super user admin gets 200 on all of them.
/// After `causeway acl add` grants alice Read on topics starting `orders-`, she reads
/// `orders-eu` (and its feed) but still not `secret`. Denials are counted where Kafka's are.
#[test]
fn table_reads_and_the_change_feed_follow_the_acls() {
    run(|data_dir| {
        let mut broker = BrokerProcess::start(secured(data_dir))?;
        let alice = basic(ALICE);
        let admin = basic(ADMIN);
        let batches = format!("/v1/topics/{TABLE}/partitions/0/batches");
        let others = [batches.as_str(), "/v1/regions", "/v1/groups/g/positions"];
        for path in table_paths(TABLE).iter().map(String::as_str).chain(others) {
            let refused = expect(&broker, path, Some(&alice), 403)?;
            // Of a feed only the head is read.
            let body_read = !path.contains("/changes");
            ensure!(
                !body_read || refused.body.contains("not authorized"),
                "GET {path} as alice: {}",
                refused.body
            );
            expect(&broker, path, Some(&admin), 200)?;
        }
        let denials = metric_sum(&broker, "causeway_authorization_denials_total", "")?;
        ensure!(denials >= 6.0, "denials counted: {denials}");
        ensure!(
            broker.stderr().contains("authorization denied"),
            "the denial was not logged"
        );
        broker.terminate()?;
        causeway_offline(
            &[
                "acl",
                "add",
                "--principal",
                "User:alice",
                "--allow",
                "--operation",
                "read",
                "--topic",
                "orders-",
                "--prefixed",
            ],
            data_dir,
            "",
        )?;
        broker.restart()?;
        for path in table_paths(TABLE) {
            expect(&broker, &path, Some(&alice), 200)?;
        }
        for path in table_paths(SECRET) {
            expect(&broker, &path, Some(&alice), 403)?;
            expect(&broker, &path, Some(&admin), 200)?;
        }
        Ok(())
    });
}

/// A bearer token listed in `--http-bearer-tokens-file` (by its SHA-256) is its principal:
/// `User:reader`, granted Read on `orders-eu`, reads it and not `secret`; a token the file does
/// not list, or the listed hash sent as a token, is 401 with both challenges. After SIGHUP the
/// file as rewritten holds: a new token opens, the dropped one is 401, and a file broken later
/// keeps the tokens in use.
#[test]
fn bearer_tokens_stand_for_their_principals() {
    run(|data_dir| {
        let token = "reader-token-7f3a9c";
        let tokens_file = data_dir.with_file_name("tokens");
        let hash = format!("{:x}", Sha256::digest(token.as_bytes()));
        std::fs::write(&tokens_file, format!("# readers\nUser:reader {hash}\n"))?;
        causeway_offline(
            &[
                "acl",
                "add",
                "--principal",
                "User:reader",
                "--allow",
                "--operation",
                "read",
                "--topic",
                TABLE,
            ],
            data_dir,
            "",
        )?;
        let options = secured(data_dir).flag("--http-bearer-tokens-file", tokens_file.display());
        let broker = BrokerProcess::start(options)?;
        let bearer = format!("Bearer {token}");
        for path in table_paths(TABLE) {
            expect(&broker, &path, Some(&bearer), 200)?;
        }
        for path in table_paths(SECRET) {
            expect(&broker, &path, Some(&bearer), 403)?;
        }
        let row = format!("/v1/tables/{TABLE}/rows/k");
        for wrong in ["Bearer not-a-token".to_string(), format!("Bearer {hash}")] {
            let refused = expect(&broker, &row, Some(&wrong), 401)?;
            let challenges = refused.header("www-authenticate");
            ensure!(
                challenges.iter().any(|c| c.starts_with("Bearer"))
                    && challenges.iter().any(|c| c.starts_with("Basic")),
                "challenges: {challenges:?}"
            );
        }
        let failed = metric(
            &broker,
            r#"causeway_http_authentications_total{method="bearer",result="failed"}"#,
        )?;
        ensure!(failed == Some(2.0), "bearer failures counted {failed:?}");
        // SIGHUP reads the file again: the token it now lists opens, the one it dropped is
        // revoked; a file that no longer parses keeps the tokens in use.
        let renewed = "reader-token-renewed-41c2";
        let renewed_hash = format!("{:x}", Sha256::digest(renewed.as_bytes()));
        std::fs::write(&tokens_file, format!("User:reader {renewed_hash}\n"))?;
        hang_up(&broker)?;
        let renewed_bearer = format!("Bearer {renewed}");
        let reloaded = wait_until(Duration::from_secs(10), || {
            get(&broker, &row, Some(&renewed_bearer)).is_ok_and(|answer| answer.status == 200)
        });
        ensure!(reloaded, "the renewed token was not accepted after SIGHUP");
        expect(&broker, &row, Some(&bearer), 401)?;
        std::fs::write(&tokens_file, "User:reader not-a-hash\n")?;
        hang_up(&broker)?;
        let logged = wait_until(Duration::from_secs(10), || {
            broker
                .stderr_tail(20)
                .contains("HTTP bearer tokens reload failed")
        });
        ensure!(logged, "the failed reload was not logged");
        expect(&broker, &row, Some(&renewed_bearer), 200)?;
        Ok(())
    });
}

/// A malformed tokens file stops the start with a message naming the file and the line.
#[test]
fn a_malformed_bearer_tokens_file_stops_the_start() {
    run(|data_dir| {
        let tokens_file = data_dir.with_file_name("tokens");
        std::fs::write(&tokens_file, "User:reader 1234\n")?;
        let options = secured(data_dir).flag("--http-bearer-tokens-file", tokens_file.display());
        let Err(refused) = BrokerProcess::start(options) else {
            anyhow::bail!("the broker started with a malformed tokens file");
        };
        let message = format!("{refused:#}");
        ensure!(
            message.contains("--http-bearer-tokens-file")
                && message.contains("line 1")
                && message.contains("not 64 hex digits"),
            "{message}"
        );
        Ok(())
    });
}

/// `/metrics`, `/healthz` and `/readyz` answer without credentials while other routes need
/// them; with `--http-auth-probes true` they answer 401 without credentials and 200 to any
/// authenticated principal (alice, granted nothing).
#[test]
fn probes_and_metrics_are_open_unless_http_auth_probes() {
    run(|data_dir| {
        let probes = ["/metrics", "/healthz", "/readyz"];
        let mut open = BrokerProcess::start(secured(data_dir))?;
        for path in probes {
            expect(&open, path, None, 200)?;
        }
        expect(&open, "/v1/regions", None, 401)?;
        open.terminate()?;
        drop(open);

        let options = secured(data_dir).flag("--http-auth-probes", "true");
        // The harness waits for `/readyz` without credentials, which now answers 401.
        let mut closed = BrokerProcess::spawn_on(options, free_port()?, free_port()?)?;
        let alice = basic(ALICE);
        let ready = wait_until(
            STARTUP_TIMEOUT,
            || matches!(get(&closed, "/readyz", Some(&alice)), Ok(a) if a.status == 200),
        );
        ensure!(ready, "never ready: {}", closed.stderr_tail(30));
        for path in probes {
            expect(&closed, path, None, 401)?;
            expect(&closed, path, Some(&basic(("alice", "wrong"))), 401)?;
            expect(&closed, path, Some(&alice), 200)?;
        }
        closed.terminate().context("stopping")?;
        Ok(())
    });
}
