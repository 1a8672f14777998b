//! Open files: the broker raises its own soft open-file limit to the hard limit at start, so,
//! started the way many systems start processes (a low soft limit), it still hosts hundreds of
//! partitions, each of which keeps its active segment's four files open; closed segments share
//! a bounded cache of read handles, so the files held open do not grow with the data retained.
//! Its own file, because the soft limit is lowered for this whole test process (the broker
//! inherits it).

use anyhow::{ensure, Context, Result};
use causeway_integration_tests::regions::metric;
use causeway_integration_tests::{
    create_topic, ensure_rss_bounded, produce_all, read_to_end, segment_files, BrokerOptions,
    BrokerProcess, TestRecord,
};
use rdkafka::Offset;
use rlimit::Resource;

/// The soft limit the broker is started under; 120 partitions need about 500 files.
const LOW_SOFT_LIMIT: u64 = 256;

fn soft_limit_of(pid: u32) -> Result<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .context("no open-files line")?;
    let soft = line
        .split_whitespace()
        .nth(3)
        .context("no soft limit column")?;
    Ok(soft.parse()?)
}

#[test]
fn a_broker_started_under_a_low_soft_file_limit_hosts_hundreds_of_partitions() -> Result<()> {
    let (_, hard) = rlimit::getrlimit(Resource::NOFILE)?;
    if hard < 4 * LOW_SOFT_LIMIT {
        eprintln!("skipped: the hard open-file limit ({hard}) leaves nothing to raise to");
        return Ok(());
    }
    rlimit::setrlimit(Resource::NOFILE, LOW_SOFT_LIMIT, hard)?;
    let broker = BrokerProcess::start_default()?;
    let pid = broker.pid().context("broker pid")?;
    assert_eq!(
        soft_limit_of(pid)?,
        hard,
        "the broker raised its soft limit"
    );
    create_topic(&broker, "many", 120, &[])?;
    let records: Vec<TestRecord> = (0..120)
        .map(|p| TestRecord::value(format!("to {p}").as_bytes()).partition(p))
        .collect();
    let placed = produce_all(&broker.producer(), "many", &records)?;
    assert_eq!(placed.len(), 120);
    assert!(placed.iter().all(|&(_, offset)| offset == 0));
    Ok(())
}

fn open_files_of(pid: u32) -> Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// Hundreds of closed segments, all read by a consumer from the start and again after a
/// restart, leave the broker holding a few more files than when it held none (before, every
/// segment kept its four files open for good, and a restart opened them all again).
#[test]
fn files_held_open_stay_bounded_however_many_segments_are_read() -> Result<()> {
    const CACHED: usize = 8;
    let mut broker = BrokerProcess::start(
        BrokerOptions::new()
            .flag("--log-segment-bytes-min", 4096)
            .flag("--max-open-segment-files", CACHED),
    )?;
    create_topic(&broker, "segments", 1, &[("segment.bytes", "4096")])?;
    let baseline = open_files_of(broker.pid().context("broker pid")?)?;
    let rss_before = broker.rss_bytes()?;
    let records: Vec<TestRecord> = (0..600)
        .map(|i| TestRecord::value(format!("{i:05} {}", "s".repeat(1000))))
        .collect();
    let producer = broker.producer();
    for chunk in records.chunks(4) {
        produce_all(&producer, "segments", chunk)?;
    }
    let segments = segment_files(&broker.partition_dir("segments", 0))?.len();
    ensure!(segments >= 100, "{segments} segments");
    for round in ["before", "after"] {
        let read = read_to_end(&broker.bootstrap(), "segments", 0, Offset::Beginning)?;
        ensure!(
            read.len() == records.len(),
            "{round} a restart: {} read",
            read.len()
        );
        let open = open_files_of(broker.pid().context("broker pid")?)?;
        ensure!(
            open <= baseline + CACHED + 32,
            "{round} a restart: {open} files open with {segments} segments (baseline {baseline})"
        );
        ensure_rss_bounded(
            &broker,
            rss_before,
            &format!("reading every segment {round} a restart"),
        )?;
        let cached = metric(&broker, "causeway_storage_segment_files_open")?;
        ensure!(
            cached.is_some_and(|files| files <= CACHED as f64),
            "{round} a restart: cache holds {cached:?}"
        );
        broker.restart()?;
    }
    Ok(())
}
