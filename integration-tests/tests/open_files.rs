//! The broker raises its own soft open-file limit to the hard limit at start: started the way
//! many systems start processes (a low soft limit), it still hosts hundreds of partitions, each
//! of which keeps at least four files open. Its own file, because the soft limit is lowered for
//! this whole test process (the broker inherits it).

use anyhow::{Context, Result};
use causeway_integration_tests::{create_topic, produce_all, BrokerProcess, TestRecord};
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
