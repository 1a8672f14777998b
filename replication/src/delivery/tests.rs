//! Tests of `delivery.rs`, kept apart so the module reads as what it does.

use super::*;
use crate::sim::{CallerLog, LocalWrites, MemoryLog};

const A: u32 = 1;
const B: u32 = 2;
const C: u32 = 3;
const NOW: u64 = 1_000_000;

fn config(region: u32) -> ReplicaConfig {
    ReplicaConfig {
        region,
        regions: vec![A, B, C],
        pending_per_origin_max: 2,
        hlc_skew_ms_max: 100,
    }
}

fn replica(region: u32) -> PartitionReplica<MemoryLog<u64>> {
    PartitionReplica::recover(config(region), MemoryLog::new()).expect("valid config")
}

fn batch(origin: u32, seq: u64, deps: &[(u32, u64)], payload: u64) -> Batch<u64> {
    Batch {
        meta: CausalMeta {
            origin_region: origin,
            origin_seq: seq,
            hlc: NOW << 16,
            deps: deps.to_vec(),
        },
        payload,
    }
}

fn clock(entries: &[(u32, u64)]) -> VectorClock {
    let mut clock = VectorClock::default();
    for &(region, seq) in entries {
        clock.advance(region, seq);
    }
    clock
}

#[test]
fn local_appends_take_the_next_sequence_and_depend_on_the_clock_before() {
    let mut a = replica(A);
    assert_eq!(
        a.receive(batch(B, 1, &[], 7), NOW),
        Ok(Outcome::Applied { released: 0 })
    );
    let first = a.append_local(1, NOW).expect("append");
    assert_eq!((first.origin_seq, first.deps.clone()), (1, vec![(B, 1)]));
    let second = a.append_local(2, NOW).expect("append");
    assert_eq!((second.origin_seq, second.deps), (2, vec![(A, 1), (B, 1)]));
    assert!(second.hlc > first.hlc);
    assert_eq!(a.clock(), &clock(&[(A, 2), (B, 1)]));
}

#[test]
fn a_batch_waits_for_its_dependency_and_is_released_by_it() {
    let mut c = replica(C);
    let b1 = batch(B, 1, &[(A, 1)], 21);
    assert_eq!(c.receive(b1, NOW), Ok(Outcome::Queued { evicted: None }));
    assert_eq!(c.pending_len(), 1);
    assert_eq!(
        c.receive(batch(A, 1, &[], 11), NOW),
        Ok(Outcome::Applied { released: 1 })
    );
    assert_eq!(c.pending_len(), 0);
    let order: Vec<BatchId> = c.log().batches().iter().map(Batch::id).collect();
    assert_eq!(
        order,
        vec![BatchId { origin: A, seq: 1 }, BatchId { origin: B, seq: 1 }]
    );
}

#[test]
fn per_origin_gaps_wait_and_redeliveries_are_dropped() {
    let mut c = replica(C);
    let a2 = batch(A, 2, &[(A, 1)], 12);
    assert_eq!(
        c.receive(a2.clone(), NOW),
        Ok(Outcome::Queued { evicted: None })
    );
    assert_eq!(c.receive(a2, NOW), Ok(Outcome::Duplicate));
    assert_eq!(
        c.receive(batch(A, 1, &[], 11), NOW),
        Ok(Outcome::Applied { released: 1 })
    );
    assert_eq!(c.receive(batch(A, 1, &[], 11), NOW), Ok(Outcome::Duplicate));
    assert_eq!(c.clock(), &clock(&[(A, 2)]));
}

#[test]
fn a_full_queue_keeps_the_lowest_sequences_and_refuses_the_rest() {
    let mut c = replica(C);
    let queued = Outcome::Queued { evicted: None };
    assert_eq!(
        c.receive(batch(A, 5, &[(A, 4)], 5), NOW),
        Ok(queued.clone())
    );
    assert_eq!(c.receive(batch(A, 4, &[(A, 3)], 4), NOW), Ok(queued));
    assert_eq!(
        c.receive(batch(A, 6, &[(A, 5)], 6), NOW),
        Ok(Outcome::Backpressure)
    );
    assert_eq!(
        c.receive(batch(A, 3, &[(A, 2)], 3), NOW),
        Ok(Outcome::Queued {
            evicted: Some(BatchId { origin: A, seq: 5 })
        })
    );
    assert_eq!(c.pending_len(), 2);
}

#[test]
fn a_different_batch_under_a_queued_sequence_is_a_conflict() {
    let mut c = replica(C);
    let _ = c.receive(batch(A, 2, &[(A, 1)], 2), NOW);
    assert_eq!(
        c.receive(batch(A, 2, &[(A, 1)], 99), NOW),
        Ok(Outcome::Refused(Refusal::Conflict))
    );
}

#[test]
fn malformed_metadata_is_refused_and_nothing_changes() {
    let mut c = replica(C);
    let cases = [
        batch(A, 0, &[], 1),
        batch(A, 2, &[], 1),
        batch(A, 1, &[(B, 1), (A, 0)], 1),
        batch(A, 1, &[(B, 2), (B, 3)], 1),
        batch(9, 1, &[], 1),
        batch(A, 1, &[(9, 1)], 1),
    ];
    for case in cases {
        assert!(
            matches!(c.receive(case, NOW), Ok(Outcome::Refused(_))),
            "accepted a malformed batch"
        );
    }
    assert_eq!(c.clock(), &VectorClock::default());
    assert_eq!(c.pending_len(), 0);
}

#[test]
fn a_stamp_beyond_the_skew_bound_is_refused_until_local_time_catches_up() {
    let mut c = replica(C);
    let mut ahead = batch(A, 1, &[], 1);
    ahead.meta.hlc = (NOW + 500) << 16;
    assert_eq!(
        c.receive(ahead.clone(), NOW),
        Ok(Outcome::Refused(Refusal::ClockSkew {
            stamp_ms: NOW + 500,
            wall_ms: NOW
        }))
    );
    assert_eq!(
        c.receive(ahead, NOW + 400),
        Ok(Outcome::Applied { released: 0 })
    );
    let local = c.append_local(2, NOW + 400).expect("append");
    assert!(
        local.hlc > (NOW + 500) << 16,
        "the HLC observed the applied stamp"
    );
}

#[test]
fn own_batches_are_served_only_once_durable() {
    let mut a = replica(A);
    a.append_local(1, NOW).expect("append");
    let request = replica(B).pull_request(A);
    assert!(a
        .serve_pull(&request, 10, usize::MAX, |_| 0)
        .expect("serve")
        .batches
        .is_empty());
    a.sync().expect("sync");
    assert_eq!(
        a.serve_pull(&request, 10, usize::MAX, |_| 0)
            .expect("serve")
            .batches
            .len(),
        1
    );
}

#[test]
fn a_declined_local_write_uses_no_sequence() {
    let mut a = replica(A);
    let declined = a.stamp_local(NOW).expect("stamp");
    assert_eq!(declined.origin_seq, 1);
    assert_eq!(a.clock().get(A), 0, "a stamp alone takes no sequence");
    let meta = a.append_local(7, NOW).expect("append");
    assert_eq!(meta.origin_seq, 1);
}

#[test]
fn marking_an_earlier_clock_durable_serves_only_what_it_covers() {
    let mut a = replica(A);
    a.append_local(1, NOW).expect("append");
    let synced = a.clock().clone();
    a.append_local(2, NOW).expect("append");
    a.synced(&synced);
    let request = replica(B).pull_request(A);
    let served = a
        .serve_pull(&request, 10, usize::MAX, |_| 0)
        .expect("serve")
        .batches;
    assert_eq!(served.len(), 1);
    assert_eq!(a.durable_clock().get(A), 1);
}

#[test]
fn durable_clocks_relayed_through_a_third_region_advance_the_stable_cut() {
    let mut a = replica(A);
    let mut b = replica(B);
    let mut c = replica(C);
    a.append_local(1, NOW).expect("append");
    a.sync().expect("sync");
    // B and C pull A's batch; A and B never talk directly afterwards.
    for r in [&mut b, &mut c] {
        let response = a
            .serve_pull(&r.pull_request(A), 10, usize::MAX, |_| 0)
            .expect("serve");
        r.receive_response(response, NOW).expect("receive");
        r.sync().expect("sync");
    }
    let from_c = c
        .serve_pull(&a.pull_request(C), 10, usize::MAX, |_| 0)
        .expect("serve");
    a.receive_response(from_c, NOW).expect("receive");
    let to_b = b
        .serve_pull(&c.pull_request(B), 10, usize::MAX, |_| 0)
        .expect("serve");
    c.receive_response(to_b, NOW).expect("receive");
    assert_eq!(
        a.stable_cut().get(A),
        0,
        "B's durable clock is unknown at A"
    );
    for (region, clock) in c.relayable(A) {
        a.note_relayed(region, &clock).expect("relay");
    }
    assert_eq!(a.stable_cut().get(A), 1);
    assert!(c.relayable(B).iter().all(|(region, _)| *region != B));
}

#[test]
fn a_byte_bound_serves_at_least_one_batch_and_stops_at_the_bound() {
    let mut a = replica(A);
    for payload in 0..10 {
        a.append_local(payload, NOW).expect("append");
    }
    a.sync().expect("sync");
    let request = replica(B).pull_request(A);
    let mut served = |bytes_max| {
        a.serve_pull(&request, 100, bytes_max, |_| 4)
            .expect("serve")
            .batches
            .len()
    };
    assert_eq!(served(1), 1);
    assert_eq!(served(12), 3);
    assert_eq!(served(usize::MAX), 10);
}

#[test]
fn a_region_catches_up_on_another_origin_through_any_peer() {
    let mut a = replica(A);
    let mut b = replica(B);
    let mut c = replica(C);
    for payload in 0..5 {
        a.append_local(payload, NOW).expect("append");
    }
    a.sync().expect("sync");
    let from_a = a
        .serve_pull(&b.pull_request(A), 3, usize::MAX, |_| 0)
        .expect("serve");
    assert_eq!(from_a.batches.len(), 3);
    b.receive_response(from_a, NOW).expect("receive");
    b.append_local(100, NOW).expect("append");
    b.sync().expect("sync");
    // C never talks to A: it gets A's batches and B's from B, in an order it can apply.
    let report = c
        .receive_response(
            b.serve_pull(&c.pull_request(B), 10, usize::MAX, |_| 0)
                .expect("serve"),
            NOW,
        )
        .expect("receive");
    assert_eq!((report.applied, report.queued), (4, 0));
    assert_eq!(c.clock(), &clock(&[(A, 3), (B, 1)]));
}

#[test]
fn a_pull_starts_at_the_earliest_missing_batch_and_respects_the_limit() {
    let mut a = replica(A);
    for payload in 0..10 {
        a.append_local(payload, NOW).expect("append");
    }
    a.sync().expect("sync");
    let mut request = replica(B).pull_request(A);
    request.have = clock(&[(A, 6)]);
    let served = a.serve_pull(&request, 2, usize::MAX, |_| 0).expect("serve");
    let seqs: Vec<u64> = served.batches.iter().map(|b| b.meta.origin_seq).collect();
    assert_eq!(seqs, vec![7, 8]);
}

#[test]
fn the_stable_cut_is_the_minimum_of_durable_clocks_and_waits_for_silent_regions() {
    let mut a = replica(A);
    a.append_local(1, NOW).expect("append");
    a.append_local(2, NOW).expect("append");
    a.sync().expect("sync");
    let mut b = replica(B);
    b.receive_response(
        a.serve_pull(&b.pull_request(A), 1, usize::MAX, |_| 0)
            .expect("serve"),
        NOW,
    )
    .expect("receive");
    b.sync().expect("sync");
    a.serve_pull(&b.pull_request(A), 10, usize::MAX, |_| 0)
        .expect("serve");
    assert_eq!(a.stable_cut(), VectorClock::default(), "C never reported");
    let mut c = replica(C);
    c.receive_response(
        a.serve_pull(&c.pull_request(A), 10, usize::MAX, |_| 0)
            .expect("serve"),
        NOW,
    )
    .expect("receive");
    c.sync().expect("sync");
    a.serve_pull(&c.pull_request(A), 0, usize::MAX, |_| 0)
        .expect("serve");
    assert_eq!(a.stable_cut(), clock(&[(A, 1)]), "B durably holds only A:1");
    assert_eq!(
        stable_cut([&clock(&[(A, 2), (B, 1)]), &clock(&[(A, 1), (B, 3)])]),
        clock(&[(A, 1), (B, 1)])
    );
}

#[test]
fn pulls_from_unknown_regions_are_refused() {
    let mut a = replica(A);
    let mut request = replica(B).pull_request(A);
    request.from = 9;
    assert_eq!(
        a.serve_pull(&request, 10, usize::MAX, |_| 0),
        Err(ReplicaError::UnknownPeer(9))
    );
    request.from = A;
    assert_eq!(
        a.serve_pull(&request, 10, usize::MAX, |_| 0),
        Err(ReplicaError::UnknownPeer(A))
    );
}

#[test]
fn a_restart_keeps_the_log_and_loses_queues() {
    let mut c = replica(C);
    c.receive(batch(A, 1, &[], 1), NOW).expect("receive");
    c.receive(batch(A, 3, &[(A, 2)], 3), NOW).expect("receive");
    c.sync().expect("sync");
    let c = PartitionReplica::recover(config(C), c.into_log()).expect("recover");
    assert_eq!(c.clock(), &clock(&[(A, 1)]));
    assert_eq!(c.durable_clock(), c.clock());
    assert_eq!(c.pending_len(), 0);
}

#[test]
fn a_log_failure_poisons_the_replica() {
    #[derive(Default)]
    struct FailingLog;
    impl BatchLog for FailingLog {
        type Payload = u64;
        fn append(&mut self, _: Batch<u64>) -> Result<(), AppendError> {
            Err(LogError("disk full".into()).into())
        }
        fn position_of(&self, _: BatchId) -> Result<Option<u64>, LogError> {
            Ok(None)
        }
        fn read(&self, _: u64, _: usize) -> Result<Vec<Positioned<u64>>, LogError> {
            Ok(Vec::new())
        }
        fn recover(&self) -> Result<RecoveredLog, LogError> {
            Ok(RecoveredLog::default())
        }
    }
    let mut a = PartitionReplica::recover(config(A), FailingLog).expect("recover");
    assert!(matches!(
        a.receive(batch(B, 1, &[], 1), NOW),
        Err(ReplicaError::Log(_))
    ));
    assert_eq!(a.clock(), &VectorClock::default());
    assert_eq!(a.stamp_local(NOW), Err(ReplicaError::Poisoned));
    assert_eq!(
        a.receive(batch(C, 1, &[], 2), NOW),
        Err(ReplicaError::Poisoned)
    );
}

/// A memory log that refuses payload 666 (as the broker's log refuses a batch it cannot
/// hold) and otherwise appends.
struct PickyLog(MemoryLog<u64>);

impl BatchLog for PickyLog {
    type Payload = u64;
    fn append(&mut self, batch: Batch<u64>) -> Result<(), AppendError> {
        if batch.payload == 666 {
            return Err(AppendError::Refused("not here".into()));
        }
        self.0.append(batch)
    }
    fn position_of(&self, id: BatchId) -> Result<Option<u64>, LogError> {
        self.0.position_of(id)
    }
    fn read(&self, from: u64, max: usize) -> Result<Vec<Positioned<u64>>, LogError> {
        self.0.read(from, max)
    }
    fn recover(&self) -> Result<RecoveredLog, LogError> {
        self.0.recover()
    }
}

impl CallerLog for PickyLog {
    fn append_own(&mut self, batch: Batch<u64>) -> Result<(), AppendError> {
        self.0.append_own(batch)
    }
    fn end(&self) -> u64 {
        self.0.end()
    }
    fn sync_through(&mut self, end: u64) -> Result<(), LogError> {
        CallerLog::sync_through(&mut self.0, end)
    }
}

#[test]
fn a_batch_the_log_refuses_is_refused_without_poisoning_the_replica() {
    let mut a = PartitionReplica::recover(config(A), PickyLog(MemoryLog::new())).expect("recover");
    let refused = BatchId { origin: B, seq: 1 };
    let response = ReplicaAnswer {
        from: B,
        to: A,
        have: clock(&[(B, 1), (C, 1)]),
        durable: clock(&[(B, 1), (C, 1)]),
        batches: vec![batch(B, 1, &[], 666), batch(C, 1, &[], 3)],
    };
    let report = a
        .receive_response(response, NOW)
        .expect("not a log failure");
    assert_eq!(report.applied, 1, "the next batch still applies");
    assert_eq!(
        report.refused,
        vec![(refused, Refusal::LogRefused("not here".into()))]
    );
    assert_eq!(a.clock(), &clock(&[(C, 1)]));
    a.append_local(1, NOW).expect("local appends go on");
    // A queued batch the log refuses once it becomes deliverable is reported too.
    let mut q = PartitionReplica::recover(config(A), PickyLog(MemoryLog::new())).expect("recover");
    let response = ReplicaAnswer {
        from: B,
        to: A,
        have: clock(&[(B, 1), (C, 1)]),
        durable: clock(&[(B, 1), (C, 1)]),
        batches: vec![batch(B, 1, &[(C, 1)], 666), batch(C, 1, &[], 3)],
    };
    let report = q
        .receive_response(response, NOW)
        .expect("not a log failure");
    assert_eq!((report.queued, report.applied), (1, 1));
    assert_eq!(
        report.refused,
        vec![(refused, Refusal::LogRefused("not here".into()))]
    );
    assert_eq!(q.pending_len(), 0);
    q.stamp_local(NOW).expect("not poisoned");
}

#[test]
fn configs_without_this_region_or_with_repeats_are_refused() {
    let mut bad = config(A);
    bad.regions = vec![B, C];
    assert!(PartitionReplica::recover(bad, MemoryLog::<u64>::new()).is_err());
    let mut bad = config(A);
    bad.regions = vec![A, A, B];
    assert!(PartitionReplica::recover(bad, MemoryLog::<u64>::new()).is_err());
}

#[test]
fn the_memory_log_refuses_an_append_out_of_causal_order() {
    let mut log = MemoryLog::new();
    assert!(log.append(batch(A, 2, &[(A, 1)], 1)).is_err());
    assert!(log.append(batch(A, 1, &[(B, 1)], 1)).is_err());
    assert!(log.append(batch(A, 1, &[], 1)).is_ok());
}

/// A memory log that notes each payload the replica detaches before queueing it.
struct DetachingLog {
    log: MemoryLog<u64>,
    detached: std::cell::RefCell<Vec<u64>>,
}

impl BatchLog for DetachingLog {
    type Payload = u64;
    fn append(&mut self, batch: Batch<u64>) -> Result<(), AppendError> {
        self.log.append(batch)
    }
    fn position_of(&self, id: BatchId) -> Result<Option<u64>, LogError> {
        self.log.position_of(id)
    }
    fn read(&self, from: u64, max: usize) -> Result<Vec<Positioned<u64>>, LogError> {
        self.log.read(from, max)
    }
    fn recover(&self) -> Result<RecoveredLog, LogError> {
        self.log.recover()
    }
    fn detached(&self, payload: u64) -> u64 {
        self.detached.borrow_mut().push(payload);
        payload
    }
}

#[test]
fn only_a_batch_that_waits_is_detached_from_the_buffer_it_came_in() {
    let log = DetachingLog {
        log: MemoryLog::new(),
        detached: Default::default(),
    };
    let mut c = PartitionReplica::recover(config(C), log).expect("recover");
    assert_eq!(
        c.receive(batch(B, 1, &[(A, 1)], 21), NOW),
        Ok(Outcome::Queued { evicted: None })
    );
    assert_eq!(
        c.receive(batch(A, 1, &[], 11), NOW),
        Ok(Outcome::Applied { released: 1 })
    );
    assert_eq!(
        *c.log().detached.borrow(),
        vec![21],
        "only the one that waited"
    );
    let stored: Vec<u64> = c.log().log.batches().iter().map(|b| b.payload).collect();
    assert_eq!(stored, vec![11, 21]);
}
