//! The `causeway` binary's command line, run as a process. (Cargo builds the binary for these
//! tests, which is also what puts it in place for `integration-tests/`.)

use std::process::Command;

fn causeway() -> Command {
    Command::new(env!("CARGO_BIN_EXE_causeway"))
}

#[test]
fn help_lists_every_documented_option() {
    let output = causeway().arg("--help").output().expect("runs");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--config",
        "--data-dir",
        "--kafka-listen",
        "--advertised-addr",
        "--http-listen",
        "--region",
        "--peer",
        "--num-partitions",
        "--auto-create-topics",
        "--socket-request-max-bytes",
        "--message-max-bytes",
        "--log-retention-check-interval-ms",
        "--shutdown-timeout-ms",
        "--group-initial-rebalance-delay-ms",
        "--offsets-retention-minutes",
        "--log-format",
    ] {
        assert!(help.contains(flag), "--help does not mention {flag}");
    }
}

#[test]
fn malformed_peer_exits_with_usage_error() {
    let output = causeway()
        .args(["--peer", "not-a-peer"])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("NAME@HOST:PORT"));
}

#[test]
fn occupied_port_fails_with_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let data = tempfile::tempdir().expect("tempdir");
    let output = causeway()
        .arg("--data-dir")
        .arg(data.path())
        .args([
            "--kafka-listen",
            &addr.to_string(),
            "--http-listen",
            "127.0.0.1:0",
        ])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("binding the Kafka listener"));
}
