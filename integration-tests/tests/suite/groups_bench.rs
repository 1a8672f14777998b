//! Rebalance timing with real librdkafka consumers (one thread each), recorded in
//! `docs/benchmarks.md`. Ignored by default; run with
//! `cargo test --release --workspace --test suite groups_bench:: -- --ignored --nocapture`.
//!
//! - join to first record: N consumers subscribe at once to a 20-partition topic that already
//!   holds records; the time until every one of them has received a record;
//! - leave to rebalanced: in a stable group of N, one member closes (LeaveGroup); the time until
//!   the others own every partition again.
//!
//! The broker runs with `--group-initial-rebalance-delay-ms 0` and the clients with
//! `heartbeat.interval.ms=100`, so the figures are the broker's and the protocol's, not the
//! clients' configured delays.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use causeway_integration_tests::{
    create_topic, produce_all, topic_name, with_broker, BrokerOptions, BrokerProcess, TestRecord,
};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

const PARTITIONS: i32 = 20;

#[derive(Default)]
struct MemberState {
    first_record: Option<Instant>,
    assigned: usize,
    left_at: Option<Instant>,
}

struct Member {
    state: Arc<Mutex<MemberState>>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

fn spawn_member(bootstrap: &str, group: &str, topic: &str) -> Member {
    let state = Arc::new(Mutex::new(MemberState::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let (bootstrap, group, topic) = (bootstrap.to_string(), group.to_string(), topic.to_string());
    let (s, st) = (state.clone(), stop.clone());
    let thread = std::thread::spawn(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "100")
            .set("fetch.wait.max.ms", "50")
            .create()
            .expect("consumer");
        consumer.subscribe(&[&topic]).expect("subscribe");
        while !st.load(Ordering::Relaxed) {
            let got = matches!(consumer.poll(Duration::from_millis(10)), Some(Ok(_)));
            let assigned = consumer.assignment().map(|a| a.count()).unwrap_or(0);
            let mut state = s.lock().unwrap_or_else(|e| e.into_inner());
            if got && state.first_record.is_none() {
                state.first_record = Some(Instant::now());
            }
            state.assigned = assigned;
        }
        s.lock().unwrap_or_else(|e| e.into_inner()).left_at = Some(Instant::now());
        drop(consumer); // close: LeaveGroup
    });
    Member {
        state,
        stop,
        thread,
    }
}

fn total_assigned(members: &[Member]) -> (usize, bool) {
    let sizes: Vec<usize> = members
        .iter()
        .map(|m| m.state.lock().unwrap_or_else(|e| e.into_inner()).assigned)
        .collect();
    (sizes.iter().sum(), sizes.iter().all(|s| *s > 0))
}

fn wait_balanced(members: &[Member], timeout: Duration) -> Result<Instant> {
    let started = Instant::now();
    loop {
        let (total, all) = total_assigned(members);
        if total == PARTITIONS as usize && all {
            return Ok(Instant::now());
        }
        if started.elapsed() > timeout {
            bail!("not balanced within {timeout:?}: {total} partitions assigned");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn measure(broker: &BrokerProcess, topic: &str, n: usize) -> Result<(Duration, Option<Duration>)> {
    let group = topic_name(&format!("bench-{n}"));
    let started = Instant::now();
    let mut members: Vec<Member> = (0..n)
        .map(|_| spawn_member(&broker.bootstrap(), &group, topic))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let join_to_first = loop {
        let firsts: Vec<Option<Instant>> = members
            .iter()
            .map(|m| {
                m.state
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .first_record
            })
            .collect();
        if firsts.iter().all(Option::is_some) {
            break firsts.into_iter().flatten().max().unwrap_or(started) - started;
        }
        if Instant::now() > deadline {
            bail!("not every member got a record within 60 s");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let mut leave = None;
    if n >= 2 {
        wait_balanced(&members, Duration::from_secs(30))?;
        // Let joins that were still in flight settle, so the group is stable before the leave.
        std::thread::sleep(Duration::from_secs(2));
        wait_balanced(&members, Duration::from_secs(30))?;
        let leaver = members.remove(0);
        leaver.stop.store(true, Ordering::Relaxed);
        let _ = leaver.thread.join();
        let left_at = leaver
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .left_at
            .unwrap_or_else(Instant::now);
        // The others hold all but the leaver's partitions until the new assignment arrives.
        let balanced_at = wait_balanced(&members, Duration::from_secs(30))?;
        leave = Some(balanced_at - left_at);
    }
    for m in &members {
        m.stop.store(true, Ordering::Relaxed);
    }
    for m in members {
        let _ = m.thread.join();
    }
    Ok((join_to_first, leave))
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn rebalance_time_for_1_to_20_members() {
    let options = BrokerOptions::new().flag("--group-initial-rebalance-delay-ms", 0);
    with_broker(options, |broker| {
        let topic = topic_name("rebalance-bench");
        create_topic(broker, &topic, PARTITIONS, &[])?;
        let records: Vec<TestRecord> = (0..PARTITIONS)
            .flat_map(|p| (0..10).map(move |i| TestRecord::value(format!("{i}")).partition(p)))
            .collect();
        produce_all(&broker.producer(), &topic, &records)?;
        println!(
            "| members | join to first record (ms) | one leaves: others own every partition (ms) |"
        );
        println!("|---|---|---|");
        for n in [1, 2, 5, 10, 15, 20] {
            let (join, leave) = measure(broker, &topic, n)?;
            println!(
                "| {n} | {} | {} |",
                join.as_millis(),
                leave.map_or("-".to_string(), |l| l.as_millis().to_string())
            );
        }
        Ok(())
    });
}
