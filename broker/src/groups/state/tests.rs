//! Deterministic tests of the group state machine: time is a number we choose.

use super::*;

const DELAY_MS: i64 = 3_000;
const SESSION_MS: i32 = 10_000;
const REBALANCE_MS: i32 = 30_000;

fn group() -> Group {
    Group::new(
        GroupConfig {
            initial_rebalance_delay_ms: DELAY_MS,
        },
        0,
    )
}

fn request(member_id: &str, instance_id: Option<&str>) -> JoinRequest {
    JoinRequest {
        member_id: member_id.to_string(),
        instance_id: instance_id.map(str::to_string),
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: REBALANCE_MS,
        protocol_type: "consumer".into(),
        protocols: vec![
            ("range".into(), Bytes::from_static(b"r")),
            ("roundrobin".into(), Bytes::from_static(b"rr")),
        ],
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        require_known_member_id: true,
    }
}

/// Runs a first join (MEMBER_ID_REQUIRED) and the second join; returns the member id.
fn join_dynamic(g: &mut Group, now: i64, waiter: WaiterId, out: &mut Output) -> String {
    let Answer::Now(first) = g.join(now, request("", None), waiter, 7, out) else {
        panic!("first join must answer at once");
    };
    assert_eq!(first.error, ResponseError::MemberIdRequired.code());
    let id = first.member_id.clone();
    assert!(!id.is_empty());
    assert_eq!(
        g.join(now, request(&id, None), waiter, 7, out),
        Answer::Parked
    );
    id
}

fn join_replies(out: &Output) -> Vec<(WaiterId, JoinResult)> {
    out.replies
        .iter()
        .filter_map(|r| match r {
            Reply::Join(w, j) => Some((*w, j.clone())),
            Reply::Sync(..) => None,
        })
        .collect()
}

fn sync_replies(out: &Output) -> Vec<(WaiterId, SyncResult)> {
    out.replies
        .iter()
        .filter_map(|r| match r {
            Reply::Sync(w, s) => Some((*w, s.clone())),
            Reply::Join(..) => None,
        })
        .collect()
}

/// Two members join an empty group; after the initial delay both get generation 1.
fn stable_pair(g: &mut Group) -> (String, String) {
    let mut out = Output::default();
    let a = join_dynamic(g, 0, 1, &mut out);
    let b = join_dynamic(g, 100, 2, &mut out);
    assert!(out.replies.is_empty(), "nothing completes during the delay");
    g.tick(DELAY_MS + 100, &mut out);
    let joins = join_replies(&out);
    assert_eq!(joins.len(), 2);
    let leader = joins[0].1.leader.clone();
    for (_, j) in &joins {
        assert_eq!(j.generation_id, 1);
        assert_eq!(j.protocol_name.as_deref(), Some("range"));
        assert_eq!(j.members.len(), if j.member_id == leader { 2 } else { 0 });
    }
    let mut out = Output::default();
    let follower = if leader == a { &b } else { &a };
    assert_eq!(
        g.sync(
            DELAY_MS + 200,
            sync_request(follower, None, 1, vec![]),
            3,
            &mut out,
        ),
        Answer::Parked
    );
    let assignments = vec![
        (a.clone(), Bytes::from_static(b"A")),
        (b.clone(), Bytes::from_static(b"B")),
    ];
    assert_eq!(
        g.sync(
            DELAY_MS + 200,
            sync_request(&leader, None, 1, assignments),
            4,
            &mut out,
        ),
        Answer::Parked
    );
    let syncs = sync_replies(&out);
    assert_eq!(syncs.len(), 2);
    assert_eq!(g.state(), GroupState::Stable);
    (a, b)
}

#[test]
fn first_join_requires_a_member_id_then_completes_after_the_initial_delay() {
    let mut g = group();
    let mut out = Output::default();
    let a = join_dynamic(&mut g, 0, 1, &mut out);
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    g.tick(DELAY_MS - 1, &mut out);
    assert!(out.replies.is_empty());
    g.tick(DELAY_MS, &mut out);
    let joins = join_replies(&out);
    assert_eq!(joins.len(), 1);
    assert_eq!(joins[0].1.leader, a);
    assert_eq!(g.state(), GroupState::CompletingRebalance);
}

#[test]
fn two_members_get_their_own_assignments_from_the_leader() {
    let mut g = group();
    let (a, b) = stable_pair(&mut g);
    let mut out = Output::default();
    let Answer::Now(again) = g.sync(5_000, sync_request(&a, None, 1, vec![]), 9, &mut out) else {
        panic!("stable sync answers at once");
    };
    assert_eq!(again.assignment, Bytes::from_static(b"A"));
    assert_eq!(g.heartbeat(5_000, &b, None, 1), Ok(()));
}

#[test]
fn stale_generation_and_unknown_member_get_kafka_errors() {
    let mut g = group();
    let (a, _) = stable_pair(&mut g);
    assert_eq!(
        g.heartbeat(5_000, &a, None, 0),
        Err(ResponseError::IllegalGeneration)
    );
    assert_eq!(
        g.heartbeat(5_000, "nobody", None, 1),
        Err(ResponseError::UnknownMemberId)
    );
    let mut out = Output::default();
    assert_eq!(
        g.sync(5_000, sync_request(&a, None, 7, vec![]), 1, &mut out,),
        Answer::Now(SyncResult::error(ResponseError::IllegalGeneration))
    );
    assert_eq!(
        g.check_commit(&a, None, 0),
        Err(ResponseError::IllegalGeneration)
    );
    assert_eq!(
        g.check_commit("x", None, 1),
        Err(ResponseError::UnknownMemberId)
    );
    assert_eq!(g.check_commit(&a, None, 1), Ok(()));
}

#[test]
fn a_new_member_triggers_a_rebalance_that_others_learn_from_heartbeats() {
    let mut g = group();
    let (a, b) = stable_pair(&mut g);
    let mut out = Output::default();
    let c = join_dynamic(&mut g, 5_000, 10, &mut out);
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    assert_eq!(
        g.heartbeat(5_100, &a, None, 1),
        Err(ResponseError::RebalanceInProgress)
    );
    assert_eq!(
        g.join(5_200, request(&a, None), 11, 7, &mut out),
        Answer::Parked
    );
    assert!(join_replies(&out).is_empty());
    assert_eq!(
        g.join(5_300, request(&b, None), 12, 7, &mut out),
        Answer::Parked
    );
    let joins = join_replies(&out);
    assert_eq!(joins.len(), 3, "all rejoined: completes without waiting");
    assert!(joins.iter().all(|(_, j)| j.generation_id == 2));
    assert!(joins.iter().any(|(_, j)| j.member_id == c));
}

#[test]
fn a_member_that_stops_heartbeating_is_evicted_after_its_session_timeout() {
    let mut g = group();
    let (a, b) = stable_pair(&mut g);
    let t = DELAY_MS + 200;
    for step in 1..=4 {
        assert_eq!(g.heartbeat(t + step * 3_000, &a, None, 1), Ok(()));
    }
    let mut out = Output::default();
    g.tick(t + i64::from(SESSION_MS) + 1, &mut out);
    assert!(out
        .events
        .iter()
        .any(|e| matches!(e, Event::Evicted { member_id, .. } if *member_id == b)));
    assert_eq!(g.member_count(), 1);
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    assert_eq!(
        g.join(t + 12_500, request(&a, None), 20, 7, &mut out),
        Answer::Parked
    );
    let joins = join_replies(&out);
    assert_eq!(joins.len(), 1);
    assert_eq!(joins[0].1.generation_id, 2);
    assert_eq!(joins[0].1.leader, a);
}

#[test]
fn a_member_that_does_not_rejoin_is_dropped_at_the_rebalance_timeout() {
    let mut g = group();
    let (a, b) = stable_pair(&mut g);
    let mut out = Output::default();
    // `a` changes its subscription: rebalance; `b` keeps heartbeating but never rejoins.
    let mut changed = request(&a, None);
    changed.protocols = vec![("range".into(), Bytes::from_static(b"r2"))];
    assert_eq!(g.join(10_000, changed, 30, 7, &mut out), Answer::Parked);
    for t in (15_000..40_000).step_by(5_000) {
        assert_eq!(
            g.heartbeat(t, &b, None, 1),
            Err(ResponseError::RebalanceInProgress)
        );
        g.tick(t, &mut out);
    }
    g.tick(10_000 + i64::from(REBALANCE_MS) - 1, &mut out);
    assert!(join_replies(&out).is_empty());
    g.tick(10_000 + i64::from(REBALANCE_MS), &mut out);
    let joins = join_replies(&out);
    assert_eq!(joins.len(), 1);
    assert_eq!(joins[0].1.members.len(), 1);
    assert_eq!(
        g.heartbeat(41_000, &b, None, 2),
        Err(ResponseError::UnknownMemberId)
    );
}

#[test]
fn leaving_rebalances_the_rest_at_once_and_the_last_leaving_empties_the_group() {
    let mut g = group();
    let (a, b) = stable_pair(&mut g);
    let mut out = Output::default();
    assert_eq!(g.leave(6_000, &a, None, &mut out), Ok(()));
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    assert_eq!(
        g.join(6_100, request(&b, None), 40, 7, &mut out),
        Answer::Parked
    );
    assert_eq!(join_replies(&out).len(), 1);
    assert_eq!(g.state(), GroupState::CompletingRebalance);
    assert_eq!(g.leave(6_200, &b, None, &mut out), Ok(()));
    assert_eq!(g.state(), GroupState::Empty);
    assert_eq!(
        g.leave(6_300, &b, None, &mut out),
        Err(ResponseError::UnknownMemberId)
    );
    assert_eq!(g.check_commit("", None, -1), Ok(()));
}

#[test]
fn static_member_restart_keeps_its_assignment_without_rebalance() {
    let mut g = group();
    let mut out = Output::default();
    assert_eq!(
        g.join(0, request("", Some("i1")), 1, 7, &mut out),
        Answer::Parked
    );
    assert_eq!(
        g.join(0, request("", Some("i2")), 2, 7, &mut out),
        Answer::Parked
    );
    g.tick(DELAY_MS, &mut out);
    let joins = join_replies(&out);
    assert_eq!(joins.len(), 2);
    let leader = joins[0].1.leader.clone();
    let ids: Vec<String> = joins.iter().map(|(_, j)| j.member_id.clone()).collect();
    let assignments = vec![
        (ids[0].clone(), Bytes::from_static(b"P0")),
        (ids[1].clone(), Bytes::from_static(b"P1")),
    ];
    let mut out = Output::default();
    g.sync(
        DELAY_MS,
        sync_request(&leader, None, 1, assignments),
        3,
        &mut out,
    );
    let other = ids
        .iter()
        .find(|id| **id != leader)
        .cloned()
        .unwrap_or_default();
    g.sync(DELAY_MS, sync_request(&other, None, 1, vec![]), 4, &mut out);
    assert_eq!(g.state(), GroupState::Stable);
    let i2_old = joins
        .iter()
        .find(|(w, _)| *w == 2)
        .map(|(_, j)| j.member_id.clone())
        .unwrap_or_default();
    // i2 restarts: it has lost its member id and joins as unknown with the same instance id.
    let Answer::Now(rejoin) = g.join(8_000, request("", Some("i2")), 5, 9, &mut out) else {
        panic!("a static rejoin of a stable group answers at once");
    };
    assert_eq!(rejoin.error, 0);
    assert_eq!(rejoin.generation_id, 1, "no new generation");
    assert_ne!(rejoin.member_id, i2_old);
    assert_eq!(g.state(), GroupState::Stable);
    let Answer::Now(sync) = g.sync(
        8_000,
        sync_request(&rejoin.member_id, Some(String::from("i2")), 1, vec![]),
        6,
        &mut out,
    ) else {
        panic!("stable sync answers at once");
    };
    let expected = if i2_old == ids[0] { "P0" } else { "P1" };
    assert_eq!(sync.assignment, Bytes::from(expected));
    // The old incarnation is fenced.
    assert_eq!(
        g.heartbeat(8_100, &i2_old, Some("i2"), 1),
        Err(ResponseError::FencedInstanceId)
    );
    assert_eq!(
        g.check_commit(&i2_old, Some("i2"), 1),
        Err(ResponseError::FencedInstanceId)
    );
}

#[test]
fn a_restored_stable_group_answers_its_generation_and_keeps_static_members_assignments() {
    let mut g = group();
    let mut out = Output::default();
    assert_eq!(g.saved_membership(), None, "an empty group keeps nothing");
    g.join(0, request("", Some("i1")), 1, 7, &mut out);
    g.join(0, request("", Some("i2")), 2, 7, &mut out);
    let before = g.membership_version();
    g.tick(DELAY_MS, &mut out);
    let joins = join_replies(&out);
    let leader = joins[0].1.leader.clone();
    let ids: Vec<String> = joins.iter().map(|(_, j)| j.member_id.clone()).collect();
    assert_eq!(g.saved_membership(), None, "nothing is kept mid-rebalance");
    let assignments = vec![
        (ids[0].clone(), Bytes::from_static(b"P0")),
        (ids[1].clone(), Bytes::from_static(b"P1")),
    ];
    g.sync(
        DELAY_MS,
        sync_request(&leader, None, 1, assignments),
        3,
        &mut out,
    );
    assert_ne!(
        g.membership_version(),
        before,
        "a completed rebalance is a change to keep"
    );
    let saved = g.saved_membership().expect("a stable group is kept");
    let bytes = saved.encode().expect("encode");
    let saved = SavedMembership::decode(&bytes).expect("decode");

    // The broker restarts 60 s later.
    let now = 60_000;
    let mut restored = Group::restored(g.config, saved, now);
    assert_eq!(restored.state(), GroupState::Stable);
    assert_eq!(restored.generation_id(), 1);
    for id in &ids {
        assert_eq!(restored.heartbeat(now + 100, id, None, 1), Ok(()), "{id}");
    }
    assert_eq!(
        restored.heartbeat(now + 100, &ids[0], None, 2),
        Err(ResponseError::IllegalGeneration)
    );
    // A static member restarting with its instance id rejoins without a rebalance and gets
    // its assignment back.
    let i1_old = joins
        .iter()
        .find(|(w, _)| *w == 1)
        .map(|(_, j)| j.member_id.clone())
        .unwrap_or_default();
    let mut out = Output::default();
    let Answer::Now(rejoin) = restored.join(now + 200, request("", Some("i1")), 5, 9, &mut out)
    else {
        panic!("a static rejoin of a restored stable group answers at once");
    };
    assert_eq!((rejoin.error, rejoin.generation_id), (0, 1));
    let Answer::Now(sync) = restored.sync(
        now + 200,
        sync_request(&rejoin.member_id, Some(String::from("i1")), 1, vec![]),
        6,
        &mut out,
    ) else {
        panic!("stable sync answers at once");
    };
    let expected = if i1_old == ids[0] { "P0" } else { "P1" };
    assert_eq!(sync.assignment, Bytes::from(expected));
    assert!(out.events.is_empty(), "no rebalance: {:?}", out.events);
    // A member that never comes back is removed after its session, as before the restart.
    let session = i64::from(SESSION_MS);
    assert_eq!(
        restored.heartbeat(now + session, &rejoin.member_id, Some("i1"), 1),
        Ok(())
    );
    let mut out = Output::default();
    restored.tick(now + session + 101, &mut out);
    assert_eq!(restored.state(), GroupState::PreparingRebalance);
    assert_eq!(restored.member_count(), 1);
}

/// While the leader computes the next assignment, a commit of the previous generation is stale
/// (ILLEGAL_GENERATION, as Kafka answers); one of the new generation waits for the assignment
/// (REBALANCE_IN_PROGRESS).
#[test]
fn a_commit_during_completing_rebalance_is_judged_by_its_generation_first() {
    let mut g = group();
    let (a, b) = stable_pair(&mut g);
    let mut out = Output::default();
    let now = DELAY_MS + 1_000;
    let c = join_dynamic(&mut g, now, 10, &mut out);
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    for (member, waiter) in [(&a, 11), (&b, 12)] {
        g.join(now, request(member, None), waiter, 7, &mut out);
    }
    assert_eq!(g.state(), GroupState::CompletingRebalance);
    assert_eq!(g.generation_id(), 2);
    assert_eq!(
        g.check_commit(&a, None, 1),
        Err(ResponseError::IllegalGeneration)
    );
    assert_eq!(
        g.check_commit(&c, None, 2),
        Err(ResponseError::RebalanceInProgress)
    );
    assert_eq!(
        g.check_commit("stranger", None, 2),
        Err(ResponseError::UnknownMemberId)
    );
}

#[test]
fn protocol_selection_picks_one_every_member_supports() {
    let mut g = group();
    let mut out = Output::default();
    let mut a = request("", Some("a"));
    a.protocols = vec![
        ("cooperative-sticky".into(), Bytes::new()),
        ("range".into(), Bytes::new()),
    ];
    let mut b = request("", Some("b"));
    b.protocols = vec![("range".into(), Bytes::new())];
    g.join(0, a, 1, 7, &mut out);
    g.join(0, b, 2, 7, &mut out);
    g.tick(DELAY_MS, &mut out);
    assert_eq!(g.protocol_name(), Some("range"));
    let mut c = request("", Some("c"));
    c.protocols = vec![("roundrobin".into(), Bytes::new())];
    assert_eq!(
        g.join(DELAY_MS, c, 3, 7, &mut out),
        Answer::Now(JoinResult::error(
            ResponseError::InconsistentGroupProtocol,
            ""
        ))
    );
}

#[test]
fn invalid_session_timeout_is_refused() {
    let mut g = group();
    let mut out = Output::default();
    let mut r = request("", None);
    r.session_timeout_ms = 10;
    assert_eq!(
        g.join(0, r, 1, 7, &mut out),
        Answer::Now(JoinResult::error(ResponseError::InvalidSessionTimeout, ""))
    );
}

#[test]
fn a_leader_that_never_syncs_is_removed_at_the_sync_timeout() {
    let mut g = group();
    let mut out = Output::default();
    let a = join_dynamic(&mut g, 0, 1, &mut out);
    let b = join_dynamic(&mut g, 0, 2, &mut out);
    g.tick(DELAY_MS, &mut out);
    let leader = join_replies(&out)[0].1.leader.clone();
    let follower = if leader == a { b } else { a };
    let mut out = Output::default();
    assert_eq!(
        g.sync(
            DELAY_MS,
            sync_request(&follower, None, 1, vec![]),
            3,
            &mut out,
        ),
        Answer::Parked
    );
    g.tick(DELAY_MS + i64::from(REBALANCE_MS), &mut out);
    // The follower's parked sync learns of the new rebalance; the leader is gone.
    assert_eq!(
        sync_replies(&out),
        vec![(3, SyncResult::error(ResponseError::RebalanceInProgress))]
    );
    assert_eq!(g.member_count(), 1);
    assert_eq!(
        g.heartbeat(DELAY_MS + 30_001, &leader, None, 1),
        Err(ResponseError::UnknownMemberId)
    );
}

/// A SyncGroup of `member` in `generation` with the leader's `assignments` (empty from a
/// follower) and no protocol check.
fn sync_request(
    member: &str,
    instance_id: Option<String>,
    generation_id: i32,
    assignments: Vec<(String, Bytes)>,
) -> SyncRequest {
    SyncRequest {
        member_id: member.to_string(),
        instance_id,
        generation_id,
        assignments,
        ..SyncRequest::default()
    }
}
