use super::*;

const TOPIC: Uuid = Uuid::from_u128(7);

fn topics(name: &str) -> Option<(Uuid, i32)> {
    (name == "t").then_some((TOPIC, 4))
}

fn join(group: &mut ConsumerGroup, id: &str, now: i64) -> HeartbeatAnswer {
    group
        .heartbeat(
            Heartbeat {
                member_id: id.into(),
                member_epoch: 0,
                rebalance_timeout_ms: 60_000,
                subscribed: Some(["t".to_string()].into()),
                server_assignor: None,
                owned: Some(Assignment::new()),
                client: ClientIdentity::default(),
                pattern: None,
                instance_id: None,
            },
            &topics,
            now,
        )
        .expect("join")
}

/// A join (epoch 0) of `id` subscribing to nothing or to `subscribed`, asking for `assignor`.
fn joining(id: &str, subscribed: Option<BTreeSet<String>>, assignor: Option<&str>) -> Heartbeat {
    Heartbeat {
        member_id: id.into(),
        member_epoch: 0,
        rebalance_timeout_ms: 1,
        subscribed,
        server_assignor: assignor.map(str::to_string),
        owned: None,
        client: ClientIdentity::default(),
        pattern: None,
        instance_id: None,
    }
}

fn beat(
    group: &mut ConsumerGroup,
    id: &str,
    epoch: i32,
    owned: Option<&[i32]>,
    now: i64,
) -> Result<HeartbeatAnswer, ResponseError> {
    group.heartbeat(
        Heartbeat {
            member_id: id.into(),
            member_epoch: epoch,
            rebalance_timeout_ms: -1,
            subscribed: None,
            server_assignor: None,
            owned: owned.map(|ps| [(TOPIC, ps.iter().copied().collect())].into()),
            client: ClientIdentity::default(),
            pattern: None,
            instance_id: None,
        },
        &topics,
        now,
    )
}

fn partitions(answer: &HeartbeatAnswer) -> Vec<i32> {
    answer
        .assignment
        .as_ref()
        .and_then(|a| a.get(&TOPIC))
        .map(|ps| ps.iter().copied().collect())
        .unwrap_or_default()
}

#[test]
fn a_partition_moves_only_after_its_owner_gives_it_up() {
    let mut group = ConsumerGroup::default();
    let a = join(&mut group, "a", 0);
    assert_eq!(partitions(&a), vec![0, 1, 2, 3]);
    let epoch_a = a.member_epoch;
    assert!(epoch_a > 0);
    assert_eq!(group.state_name(), "Stable");

    // b joins: its target (2, 3) is still a's, so it waits with nothing.
    let b = join(&mut group, "b", 10);
    assert!(partitions(&b).is_empty());
    assert_eq!(group.state_name(), "Reconciling");
    // a is told to give 2 and 3 up, at its old epoch.
    let a = beat(&mut group, "a", epoch_a, None, 20).expect("a");
    assert_eq!(partitions(&a), vec![0, 1]);
    assert_eq!(
        a.member_epoch, epoch_a,
        "the epoch waits for the revocation"
    );
    // Until a stops reporting them, b gets nothing.
    let b = beat(&mut group, "b", b.member_epoch, None, 30).expect("b");
    assert!(partitions(&b).is_empty());
    let a = beat(&mut group, "a", epoch_a, Some(&[0, 1]), 40).expect("a acks");
    assert!(a.member_epoch > epoch_a);
    let b = beat(&mut group, "b", b.member_epoch, Some(&[]), 50).expect("b");
    assert_eq!(partitions(&b), vec![2, 3]);
    assert_eq!(b.member_epoch, a.member_epoch);
    assert_eq!(group.state_name(), "Stable");

    // Commits: at the current epoch only; a client without the group only while it is empty.
    assert_eq!(group.check_commit("a", a.member_epoch), Ok(()));
    assert_eq!(
        group.check_commit("a", epoch_a),
        Err(ResponseError::StaleMemberEpoch)
    );
    assert_eq!(
        group.check_commit("x", 1),
        Err(ResponseError::UnknownMemberId)
    );
    assert_eq!(
        group.check_commit("", -1),
        Err(ResponseError::UnknownMemberId)
    );

    // b leaves: a gets everything back at once.
    let left = beat(&mut group, "b", -1, None, 60).expect("leave");
    assert_eq!(left.member_epoch, -1);
    let a = beat(&mut group, "a", a.member_epoch, Some(&[0, 1]), 70).expect("a");
    assert_eq!(partitions(&a), vec![0, 1, 2, 3]);
}

#[test]
fn epochs_are_fenced_and_a_lost_response_is_forgiven() {
    let mut group = ConsumerGroup::default();
    let a = join(&mut group, "a", 0);
    assert_eq!(
        beat(&mut group, "a", a.member_epoch + 1, None, 1),
        Err(ResponseError::FencedMemberEpoch)
    );
    assert_eq!(
        beat(&mut group, "nobody", 3, None, 1),
        Err(ResponseError::UnknownMemberId)
    );
    // b joins and leaves: a moves on to a later epoch; a heartbeat at the previous one is
    // forgiven when it holds no more than it was given.
    join(&mut group, "b", 2);
    beat(&mut group, "b", -1, None, 3).expect("leave");
    let moved = beat(&mut group, "a", a.member_epoch, Some(&[0, 1, 2, 3]), 4).expect("a");
    assert!(moved.member_epoch > a.member_epoch);
    assert!(beat(&mut group, "a", a.member_epoch, Some(&[0, 1]), 5).is_ok());
    assert_eq!(
        beat(&mut group, "a", a.member_epoch, None, 6),
        Err(ResponseError::FencedMemberEpoch)
    );
}

#[test]
fn a_silent_member_is_removed_and_its_partitions_freed() {
    let mut group = ConsumerGroup::default();
    let a = join(&mut group, "a", 0);
    let b = join(&mut group, "b", 0);
    let a = beat(&mut group, "a", a.member_epoch, Some(&[0, 1]), 1).expect("a");
    assert_eq!(partitions(&a), vec![0, 1]);
    assert!(group
        .expire(SESSION_TIMEOUT_MS, SESSION_TIMEOUT_MS)
        .is_empty());
    // a heartbeats on; b falls silent.
    let a = beat(
        &mut group,
        "a",
        a.member_epoch,
        Some(&[0, 1]),
        SESSION_TIMEOUT_MS,
    )
    .expect("a");
    // The session timeout is the group's: a longer one keeps b a while yet.
    assert!(group.expire(SESSION_TIMEOUT_MS + 2, 60_000).is_empty());
    assert_eq!(
        group.expire(SESSION_TIMEOUT_MS + 2, SESSION_TIMEOUT_MS),
        vec!["b".to_string()]
    );
    let a = beat(
        &mut group,
        "a",
        a.member_epoch,
        Some(&[0, 1]),
        SESSION_TIMEOUT_MS + 3,
    )
    .expect("a");
    assert_eq!(partitions(&a), vec![0, 1, 2, 3]);
    assert_eq!(
        beat(
            &mut group,
            "b",
            b.member_epoch,
            None,
            SESSION_TIMEOUT_MS + 4
        ),
        Err(ResponseError::UnknownMemberId)
    );
}

#[test]
fn a_rejoin_under_the_same_id_starts_afresh_and_bad_requests_are_refused() {
    let mut group = ConsumerGroup::default();
    join(&mut group, "a", 0);
    let again = join(&mut group, "a", 1);
    assert_eq!(partitions(&again), vec![0, 1, 2, 3]);
    assert_eq!(group.members().len(), 1);
    let unknown_assignor = group.heartbeat(
        joining("c", Some(BTreeSet::new()), Some("sticky")),
        &topics,
        2,
    );
    assert_eq!(unknown_assignor, Err(ResponseError::UnsupportedAssignor));
    let no_subscription = group.heartbeat(joining("c", None, None), &topics, 2);
    assert_eq!(no_subscription, Err(ResponseError::InvalidRequest));
}

#[test]
fn ranges_are_balanced_per_topic_over_its_subscribers() {
    let member = |topics: &[&str]| Member {
        epoch: 0,
        previous_epoch: 0,
        state: MemberState::Stable,
        assigned: Assignment::new(),
        pending_revocation: Assignment::new(),
        subscribed: topics.iter().map(|t| t.to_string()).collect(),
        rebalance_timeout_ms: 0,
        last_heartbeat_ms: 0,
        revocation_deadline_ms: None,
        client: ClientIdentity::default(),
        pattern: None,
        instance_id: None,
        departed: false,
    };
    let (x, y) = (Uuid::from_u128(1), Uuid::from_u128(2));
    let members: BTreeMap<String, Member> = [
        ("m1".to_string(), member(&["x", "y"])),
        ("m2".to_string(), member(&["x"])),
        ("m3".to_string(), member(&["x"])),
    ]
    .into();
    let topics: BTreeMap<String, (Uuid, i32)> =
        [("x".to_string(), (x, 5)), ("y".to_string(), (y, 2))].into();
    let target = assign(&members, &topics);
    let get = |m: &str, t: Uuid| -> Vec<i32> {
        target
            .get(m)
            .and_then(|a| a.get(&t))
            .map(|ps| ps.iter().copied().collect())
            .unwrap_or_default()
    };
    assert_eq!(get("m1", x), vec![0, 1]);
    assert_eq!(get("m2", x), vec![2, 3]);
    assert_eq!(get("m3", x), vec![4]);
    assert_eq!(get("m1", y), vec![0, 1]);
    assert!(get("m2", y).is_empty());
}

#[test]
fn a_full_group_refuses_another_member() {
    let mut group = ConsumerGroup::default();
    join(&mut group, "a", 0);
    let template = group.members()["a"].clone();
    for i in 1..MEMBERS_MAX {
        group.members.insert(format!("m{i}"), template.clone());
    }
    let refused = group.heartbeat(
        joining("one-too-many", Some(BTreeSet::new()), None),
        &topics,
        1,
    );
    assert_eq!(refused, Err(ResponseError::GroupMaxSizeReached));
    // A member already in may join again.
    assert!(group
        .heartbeat(joining("a", Some(BTreeSet::new()), None), &topics, 2)
        .is_ok());
}

/// Topics held in a map, listed for patterns.
struct Listed(BTreeMap<String, (Uuid, i32)>);

impl TopicLookup for Listed {
    fn find(&self, name: &str) -> Option<(Uuid, i32)> {
        self.0.get(name).copied()
    }

    fn names(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }
}

#[test]
fn a_pattern_subscribes_to_every_matching_topic_and_to_new_ones() {
    let (t1, t2, other, t3) = (
        Uuid::from_u128(1),
        Uuid::from_u128(2),
        Uuid::from_u128(3),
        Uuid::from_u128(4),
    );
    let mut listed = Listed(BTreeMap::from([
        ("orders-eu".to_string(), (t1, 2)),
        ("orders-us".to_string(), (t2, 1)),
        ("payments".to_string(), (other, 3)),
    ]));
    let mut group = ConsumerGroup::default();
    let pattern = TopicPattern::new("orders-.*").expect("compiles");
    let joined = group
        .heartbeat(
            Heartbeat {
                pattern: Some(Some(pattern)),
                ..joining("a", None, None)
            },
            &listed,
            0,
        )
        .expect("join by pattern");
    let assigned = joined.assignment.expect("assignment");
    assert_eq!(
        assigned,
        Assignment::from([(t1, [0, 1].into()), (t2, [0].into())]),
        "every partition of the matching topics, nothing of the others"
    );
    // A topic created later that matches joins the subscription at the next heartbeat.
    listed.0.insert("orders-ap".to_string(), (t3, 1));
    let epoch = group.epoch();
    let next = group
        .heartbeat(
            Heartbeat {
                member_epoch: joined.member_epoch,
                rebalance_timeout_ms: -1,
                owned: Some(assigned),
                ..joining("a", None, None)
            },
            &listed,
            1,
        )
        .expect("heartbeat");
    assert!(
        group.epoch() > epoch,
        "a new matching topic bumps the group epoch"
    );
    assert!(next.assignment.expect("assignment").contains_key(&t3));
    // The whole name must match, as in Kafka's RE2/J `matches`.
    let partial = TopicPattern::new("orders").expect("compiles");
    assert!(!partial.matches("orders-eu") && partial.matches("orders"));
    assert!(TopicPattern::new("(unclosed").is_err());
    assert!(TopicPattern::new(&"a".repeat(PATTERN_BYTES_MAX + 1)).is_err());
    // A pattern whose compiled form is too large is refused, not built.
    assert!(TopicPattern::new("(a{1000}){1000}").is_err());
}

/// A join of `id`, static as `instance`, subscribing to "t".
fn static_join(id: &str, instance: &str) -> Heartbeat {
    Heartbeat {
        instance_id: Some(instance.to_string()),
        owned: Some(Assignment::new()),
        ..joining(id, Some(["t".to_string()].into()), None)
    }
}

/// A static member's leave for now (epoch -2).
fn static_leave(id: &str) -> Heartbeat {
    Heartbeat {
        member_epoch: STATIC_LEAVE_EPOCH,
        ..joining(id, None, None)
    }
}

#[test]
fn a_static_member_that_leaves_for_now_gets_its_partitions_back_without_a_rebalance() {
    let mut group = ConsumerGroup::default();
    group
        .heartbeat(static_join("a1", "instance-a"), &topics, 0)
        .expect("a joins");
    join(&mut group, "b", 0);
    // Settle: each member reports what it holds until both hold their targets.
    for now in 1..10 {
        for id in ["a1", "b"] {
            let member = &group.members()[id];
            let (epoch, held): (i32, Vec<i32>) = (
                member.epoch,
                member
                    .assigned
                    .get(&TOPIC)
                    .map(|p| p.iter().copied().collect())
                    .unwrap_or_default(),
            );
            beat(&mut group, id, epoch, Some(&held), now).expect("beat");
        }
    }
    assert_eq!(group.state_name(), "Stable");
    let (epoch, a_holds) = (group.epoch(), group.members()["a1"].assigned.clone());
    assert_eq!(a_holds.get(&TOPIC).map(BTreeSet::len), Some(2));

    // a leaves for now: nothing moves, the group epoch stays.
    let left = group
        .heartbeat(static_leave("a1"), &topics, 20)
        .expect("a leaves for now");
    assert_eq!(left.member_epoch, STATIC_LEAVE_EPOCH);
    assert_eq!(group.epoch(), epoch, "no rebalance");
    assert_eq!(
        group.members()["b"].assigned.get(&TOPIC).map(BTreeSet::len),
        Some(2)
    );

    // a's instance joining again under a new member id takes a's place, epoch and partitions.
    let back = group
        .heartbeat(static_join("a2", "instance-a"), &topics, 30)
        .expect("a's instance joins again");
    assert_eq!(
        back.assignment.as_ref(),
        Some(&a_holds),
        "the same partitions"
    );
    assert_eq!(group.epoch(), epoch, "still no rebalance");
    assert!(!group.members().contains_key("a1"));
    // While a2 is in the group, another member with the same instance id is refused.
    assert_eq!(
        group.heartbeat(static_join("a3", "instance-a"), &topics, 31),
        Err(ResponseError::UnreleasedInstanceId)
    );
    // A static member that leaves for now and never comes back goes with its session.
    group
        .heartbeat(static_leave("a2"), &topics, 40)
        .expect("a2 leaves for now");
    let expired = group.expire(40 + SESSION_TIMEOUT_MS + 1, SESSION_TIMEOUT_MS);
    assert!(expired.contains(&"a2".to_string()), "{expired:?}");
    assert!(group.epoch() > epoch, "its partitions are assigned again");
}

#[test]
fn a_kept_group_is_restored_with_its_epochs_and_partitions() {
    let mut group = ConsumerGroup::default();
    group
        .heartbeat(static_join("a1", "instance-a"), &topics, 0)
        .expect("a joins");
    join(&mut group, "b", 0);
    group
        .heartbeat(
            Heartbeat {
                pattern: Some(Some(TopicPattern::new("t.*").expect("compiles"))),
                ..joining("c", None, None)
            },
            &topics,
            0,
        )
        .expect("c joins by pattern");
    let saved = group.saved();
    let decoded = SavedGroup::decode(&saved.encode())
        .expect("a consumer group's bytes")
        .expect("decodes");
    let mut restored = ConsumerGroup::restored(decoded, 100).expect("restores");
    assert_eq!(restored.saved(), saved, "the same state");
    assert_eq!(restored.epoch(), group.epoch());
    // A member's heartbeat at the epoch it holds is answered as before the restart.
    let b = &group.members()["b"];
    let (b_epoch, held): (i32, Vec<i32>) = (
        b.epoch,
        b.assigned
            .get(&TOPIC)
            .map(|p| p.iter().copied().collect())
            .unwrap_or_default(),
    );
    let before = beat(&mut group, "b", b_epoch, Some(&held), 1).expect("b before");
    let after = beat(&mut restored, "b", b_epoch, Some(&held), 101).expect("b after");
    assert_eq!(after, before);
    assert_eq!(restored.epoch(), group.epoch(), "no new group epoch");
    // Bytes that are not a consumer group's (a classic membership) are left alone.
    assert!(SavedGroup::decode(b"\x00\x01classic").is_none());
}
