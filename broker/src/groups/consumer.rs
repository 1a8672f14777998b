//! Consumer groups of the KIP-848 protocol (`group.protocol=consumer`): the coordinator assigns
//! partitions itself and hands them over through ConsumerGroupHeartbeat, one member at a time,
//! never giving a partition to a new owner before its previous owner has stopped reporting it.
//! A pure state machine: time comes in as `now`, topics through a lookup, no I/O.
//!
//! Epochs: the *group epoch* rises whenever the desired assignment may change (a member joins
//! or leaves, a subscription or a subscribed topic's partition count changes); the *target
//! assignment* is recomputed for it (the assignment epoch). A member's own epoch reaches the
//! assignment epoch once it holds its target, or as much of it as other members have released.
//! A member that must give partitions up keeps its epoch (UNREVOKED) until a heartbeat no longer
//! lists them; one waiting for partitions still held elsewhere (UNRELEASED) picks them up on a
//! later heartbeat. Semantics follow Kafka's coordinator; what differs is noted where it is.
//!
//! Membership lives in memory: after a restart every member's next heartbeat is answered
//! UNKNOWN_MEMBER_ID and it joins again with the same member id (committed offsets are kept).
//!
//! Static members (`group.instance.id`): one leaving with epoch -2 keeps its partitions
//! reserved until its session times out; its instance joining again, under a new member id,
//! takes them back with no new group epoch, so a restart of a static consumer moves nothing.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::state::MEMBERS_MAX;

mod saved;
pub use saved::SavedGroup;

/// Partitions by topic id.
pub type Assignment = BTreeMap<Uuid, BTreeSet<i32>>;

/// The epoch with which a static member leaves for now (it may come back as a new member of
/// the same instance and keep its partitions).
const STATIC_LEAVE_EPOCH: i32 = -2;

/// How often members heartbeat (Kafka's `group.consumer.heartbeat.interval.ms` default).
pub const HEARTBEAT_INTERVAL_MS: i32 = 5_000;
/// A member silent this long is removed (Kafka's `group.consumer.session.timeout.ms`).
pub const SESSION_TIMEOUT_MS: i64 = 45_000;
/// The assignors a member may ask for; both assign the same way here (balanced ranges per
/// topic over the members subscribed to it).
const ASSIGNORS: [&str; 2] = ["uniform", "range"];

/// Where a member is in taking its target assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// Holds its target (or all of it there is).
    Stable,
    /// Must give partitions up before it may move on.
    UnrevokedPartitions,
    /// Waits for partitions other members still hold.
    UnreleasedPartitions,
}

/// One member.
#[derive(Debug, Clone)]
pub struct Member {
    /// Its epoch.
    pub epoch: i32,
    previous_epoch: i32,
    /// Where it is in taking its target.
    pub state: MemberState,
    /// The partitions it may consume.
    pub assigned: Assignment,
    /// The partitions it must give up.
    pending_revocation: Assignment,
    /// The topics it subscribes to by name.
    pub subscribed: BTreeSet<String>,
    /// The topics it subscribes to by pattern, if any.
    pub pattern: Option<TopicPattern>,
    rebalance_timeout_ms: i64,
    last_heartbeat_ms: i64,
    revocation_deadline_ms: Option<i64>,
    /// Who it is, as its last heartbeat came (ConsumerGroupDescribe).
    pub client: ClientIdentity,
    /// Its `group.instance.id`: a static member.
    pub instance_id: Option<String>,
    /// A static member that left for now (epoch -2): its partitions wait for its instance to
    /// join again, until its session times out.
    pub departed: bool,
}

/// A subscription by regular expression (KIP-848 `subscribed_topic_regex`, RE2 syntax as
/// Kafka's RE2/J): a topic matches when the whole name does.
#[derive(Debug, Clone)]
pub struct TopicPattern {
    source: String,
    regex: regex::Regex,
}

/// Longest pattern accepted, in bytes.
pub const PATTERN_BYTES_MAX: usize = 4096;
/// Memory one compiled pattern may take, so a hostile one cannot exhaust it.
const PATTERN_COMPILED_BYTES_MAX: usize = 1 << 20;

impl TopicPattern {
    /// Compiles `source`; a pattern too long, too large or malformed is refused.
    pub fn new(source: &str) -> Result<TopicPattern, String> {
        if source.len() > PATTERN_BYTES_MAX {
            return Err(format!("longer than {PATTERN_BYTES_MAX} bytes"));
        }
        let regex = regex::RegexBuilder::new(&format!("^(?:{source})$"))
            .size_limit(PATTERN_COMPILED_BYTES_MAX)
            .dfa_size_limit(PATTERN_COMPILED_BYTES_MAX)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(TopicPattern {
            source: source.to_string(),
            regex,
        })
    }

    /// The pattern as the member sent it.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the whole of `topic` matches.
    pub fn matches(&self, topic: &str) -> bool {
        self.regex.is_match(topic)
    }
}

impl PartialEq for TopicPattern {
    fn eq(&self, other: &TopicPattern) -> bool {
        self.source == other.source
    }
}

impl Member {
    /// Whether the member subscribes to `topic`, by name or by pattern.
    fn subscribes_to(&self, topic: &str) -> bool {
        self.subscribed.contains(topic) || self.pattern.as_ref().is_some_and(|p| p.matches(topic))
    }
}

/// The topics a group's heartbeat sees: one by name, and every name for patterns.
pub trait TopicLookup {
    /// A topic's id and partition count.
    fn find(&self, name: &str) -> Option<(Uuid, i32)>;
    /// Every topic a pattern may match (internal ones left out).
    fn names(&self) -> Vec<String> {
        Vec::new()
    }
}

impl<F: Fn(&str) -> Option<(Uuid, i32)>> TopicLookup for F {
    fn find(&self, name: &str) -> Option<(Uuid, i32)> {
        self(name)
    }
}

/// The client behind a member, as its requests come.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The request header's client id.
    pub client_id: String,
    /// The address it connects from, as Kafka reports it (`/127.0.0.1`).
    pub host: String,
    /// The rack it says it is in, if any.
    pub rack: Option<String>,
}

/// A heartbeat, as the coordinator needs it (`None` fields are unchanged).
#[derive(Debug, Clone)]
pub struct Heartbeat {
    /// The client's member id (clients generate it from version 1 on).
    pub member_id: String,
    /// 0 joins, -1 leaves, -2 leaves for now (static members), above 0 heartbeats.
    pub member_epoch: i32,
    /// `rebalance_timeout_ms`, -1 when unchanged.
    pub rebalance_timeout_ms: i32,
    /// Subscribed topic names.
    pub subscribed: Option<BTreeSet<String>>,
    /// The subscription pattern: `Some(None)` for none (librdkafka sends ""), `None` unchanged.
    pub pattern: Option<Option<TopicPattern>>,
    /// The server assignor asked for.
    pub server_assignor: Option<String>,
    /// The partitions the member reports holding.
    pub owned: Option<Assignment>,
    /// The client sending it.
    pub client: ClientIdentity,
    /// The member's `group.instance.id`, if it is static (sent when joining).
    pub instance_id: Option<String>,
}

/// What a heartbeat is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatAnswer {
    /// The member's epoch now.
    pub member_epoch: i32,
    /// The partitions it may consume now (`None` after a leave).
    pub assignment: Option<Assignment>,
}

/// A consumer group.
#[derive(Debug, Clone, Default)]
pub struct ConsumerGroup {
    group_epoch: i32,
    assignment_epoch: i32,
    members: BTreeMap<String, Member>,
    target: BTreeMap<String, Assignment>,
    /// The subscribed topics as last assigned: id and partition count by name.
    topics: BTreeMap<String, (Uuid, i32)>,
    /// The server assignor members asked for last (they all assign alike).
    assignor: Option<String>,
}

impl ConsumerGroup {
    /// Whether no member is in the group.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The members, by id.
    pub fn members(&self) -> &BTreeMap<String, Member> {
        &self.members
    }

    /// The group's epoch.
    pub fn epoch(&self) -> i32 {
        self.group_epoch
    }

    /// The epoch of the target assignment.
    pub fn assignment_epoch(&self) -> i32 {
        self.assignment_epoch
    }

    /// The assignor's name, as members asked for it (Kafka's default, `uniform`, otherwise).
    pub fn assignor(&self) -> &str {
        self.assignor.as_deref().unwrap_or(ASSIGNORS[0])
    }

    /// What a member should end up holding, once others release it.
    pub fn target_of(&self, member_id: &str) -> Assignment {
        self.target.get(member_id).cloned().unwrap_or_default()
    }

    /// The name of a subscribed topic, by id (as last assigned).
    pub fn topic_name(&self, id: Uuid) -> Option<&str> {
        self.topics
            .iter()
            .find(|(_, (topic_id, _))| *topic_id == id)
            .map(|(name, _)| name.as_str())
    }

    /// Kafka's name for the group's state (ListGroups).
    pub fn state_name(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.group_epoch > self.assignment_epoch {
            "Assigning"
        } else if self
            .members
            .values()
            .any(|m| m.state != MemberState::Stable || m.epoch != self.assignment_epoch)
        {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    /// Handles one heartbeat at `now`; `topic` gives a topic's id and partition count by name.
    pub fn heartbeat(
        &mut self,
        request: Heartbeat,
        topic: &dyn TopicLookup,
        now: i64,
    ) -> Result<HeartbeatAnswer, ResponseError> {
        if request
            .server_assignor
            .as_deref()
            .is_some_and(|name| !ASSIGNORS.contains(&name))
        {
            return Err(ResponseError::UnsupportedAssignor);
        }
        if request.member_epoch < 0 {
            return self.leave(&request.member_id, request.member_epoch);
        }
        if request.member_epoch == 0 {
            let subscribes = request.subscribed.is_some()
                || request.pattern.as_ref().is_some_and(Option::is_some);
            if request.rebalance_timeout_ms < 0 || !subscribes {
                return Err(ResponseError::InvalidRequest);
            }
            // A member that joins again under its id (after UNKNOWN_MEMBER_ID or
            // FENCED_MEMBER_EPOCH, as librdkafka does) starts afresh: its partitions are freed.
            // (Kafka fences it until its session expires; librdkafka's mock broker does this.)
            self.remove(&request.member_id);
            let rejoined = match &request.instance_id {
                Some(instance_id) => self.rejoin_static(instance_id, &request.member_id)?,
                None => false,
            };
            if rejoined {
                return self.heartbeat_member(request, topic, now);
            }
            if self.members.len() >= MEMBERS_MAX {
                return Err(ResponseError::GroupMaxSizeReached);
            }
            self.members.insert(
                request.member_id.clone(),
                Member {
                    epoch: 0,
                    previous_epoch: 0,
                    state: MemberState::Stable,
                    assigned: Assignment::new(),
                    pending_revocation: Assignment::new(),
                    subscribed: BTreeSet::new(),
                    pattern: None,
                    rebalance_timeout_ms: 0,
                    last_heartbeat_ms: now,
                    revocation_deadline_ms: None,
                    client: ClientIdentity::default(),
                    instance_id: request.instance_id.clone(),
                    departed: false,
                },
            );
            self.group_epoch += 1;
        }
        let member = self
            .members
            .get_mut(&request.member_id)
            .ok_or(ResponseError::UnknownMemberId)?;
        if request.member_epoch > member.epoch {
            return Err(ResponseError::FencedMemberEpoch);
        }
        if request.member_epoch < member.epoch {
            // A lost response: the member may still be at its previous epoch, holding no more
            // than it was given.
            let holds_no_more = request
                .owned
                .as_ref()
                .is_some_and(|owned| is_subset(owned, &member.assigned));
            if request.member_epoch != member.previous_epoch || !holds_no_more {
                return Err(ResponseError::FencedMemberEpoch);
            }
        }
        self.heartbeat_member(request, topic, now)
    }

    /// The part of a heartbeat after the member is known and its epoch checked.
    fn heartbeat_member(
        &mut self,
        request: Heartbeat,
        topic: &dyn TopicLookup,
        now: i64,
    ) -> Result<HeartbeatAnswer, ResponseError> {
        let member = self
            .members
            .get_mut(&request.member_id)
            .ok_or(ResponseError::UnknownMemberId)?;
        member.last_heartbeat_ms = now;
        member.departed = false;
        member.client = request.client;
        if let Some(assignor) = request.server_assignor {
            self.assignor = Some(assignor);
        }
        if request.rebalance_timeout_ms >= 0 {
            member.rebalance_timeout_ms = i64::from(request.rebalance_timeout_ms);
        }
        if let Some(subscribed) = request.subscribed {
            if subscribed != member.subscribed {
                member.subscribed = subscribed;
                self.group_epoch += 1;
            }
        }
        if let Some(pattern) = request.pattern {
            if pattern != member.pattern {
                member.pattern = pattern;
                self.group_epoch += 1;
            }
        }
        let subscribed_topics = self.subscribed_topics(topic);
        if subscribed_topics != self.topics {
            self.topics = subscribed_topics;
            self.group_epoch += 1;
        }
        if self.group_epoch > self.assignment_epoch {
            self.target = assign(&self.members, &self.topics);
            self.assignment_epoch = self.group_epoch;
        }
        self.reconcile(&request.member_id, request.owned.as_ref(), now);
        let member = self
            .members
            .get(&request.member_id)
            .ok_or(ResponseError::UnknownMemberId)?;
        Ok(HeartbeatAnswer {
            member_epoch: member.epoch,
            assignment: Some(member.assigned.clone()),
        })
    }

    /// Removes members whose session (`session_timeout_ms`, the group's) expired or who held
    /// revoked partitions past their rebalance timeout; returns their ids.
    pub fn expire(&mut self, now: i64, session_timeout_ms: i64) -> Vec<String> {
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| {
                now.saturating_sub(m.last_heartbeat_ms) > session_timeout_ms
                    || m.revocation_deadline_ms
                        .is_some_and(|deadline| now > deadline)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            self.remove(id);
        }
        expired
    }

    /// Checks an offset commit (or a fetch naming its member): a member must commit at its
    /// current epoch; a client that manages its own partitions (epoch below 0) may commit only
    /// while the group has no members.
    pub fn check_commit(&self, member_id: &str, member_epoch: i32) -> Result<(), ResponseError> {
        if member_epoch < 0 && self.members.is_empty() {
            return Ok(());
        }
        let member = self
            .members
            .get(member_id)
            .ok_or(ResponseError::UnknownMemberId)?;
        if member.epoch != member_epoch {
            return Err(ResponseError::StaleMemberEpoch);
        }
        Ok(())
    }

    fn leave(&mut self, member_id: &str, epoch: i32) -> Result<HeartbeatAnswer, ResponseError> {
        let member = self
            .members
            .get_mut(member_id)
            .ok_or(ResponseError::UnknownMemberId)?;
        if epoch == STATIC_LEAVE_EPOCH && member.instance_id.is_some() {
            // Its partitions stay reserved for its instance: no rebalance if it comes back
            // within its session.
            member.departed = true;
        } else {
            self.remove(member_id);
        }
        Ok(HeartbeatAnswer {
            member_epoch: epoch,
            assignment: None,
        })
    }

    /// A static member joining as `member_id` with `instance_id`: when the instance's previous
    /// member left for now, the new one takes its place, epoch and partitions with no new group
    /// epoch (`Ok(true)`); while that member is still in the group, UNRELEASED_INSTANCE_ID.
    fn rejoin_static(&mut self, instance_id: &str, member_id: &str) -> Result<bool, ResponseError> {
        let Some(previous) = self
            .members
            .iter()
            .find(|(_, m)| m.instance_id.as_deref() == Some(instance_id))
            .map(|(id, _)| id.clone())
        else {
            return Ok(false);
        };
        let Some(mut member) = self.members.remove(&previous) else {
            return Ok(false);
        };
        if !member.departed {
            self.members.insert(previous, member);
            return Err(ResponseError::UnreleasedInstanceId);
        }
        member.departed = false;
        if let Some(target) = self.target.remove(&previous) {
            self.target.insert(member_id.to_string(), target);
        }
        self.members.insert(member_id.to_string(), member);
        Ok(true)
    }

    /// Takes a member out, freeing what it held; the others are assigned again.
    fn remove(&mut self, member_id: &str) {
        if self.members.remove(member_id).is_some() {
            self.target.remove(member_id);
            self.group_epoch += 1;
        }
    }

    /// Every topic some member subscribes to that exists, with its id and partition count.
    fn subscribed_topics(&self, topic: &dyn TopicLookup) -> BTreeMap<String, (Uuid, i32)> {
        let mut names: BTreeSet<String> = self
            .members
            .values()
            .flat_map(|m| m.subscribed.iter().cloned())
            .collect();
        let patterns: Vec<&TopicPattern> = self
            .members
            .values()
            .filter_map(|m| m.pattern.as_ref())
            .collect();
        if !patterns.is_empty() {
            names.extend(
                topic
                    .names()
                    .into_iter()
                    .filter(|name| patterns.iter().any(|p| p.matches(name))),
            );
        }
        names
            .into_iter()
            .filter_map(|name| topic.find(&name).map(|found| (name, found)))
            .collect()
    }

    /// Moves `member_id` toward its target (Kafka's CurrentAssignmentBuilder).
    fn reconcile(&mut self, member_id: &str, owned: Option<&Assignment>, now: i64) {
        let held_elsewhere = self.held_by_others(member_id);
        let assignment_epoch = self.assignment_epoch;
        let target = self.target.get(member_id).cloned().unwrap_or_default();
        let Some(member) = self.members.get_mut(member_id) else {
            return;
        };
        let still_owns = |set: &Assignment| match owned {
            None => true,
            Some(owned) => intersects(owned, set),
        };
        match member.state {
            MemberState::Stable if member.epoch == assignment_epoch => return,
            MemberState::UnrevokedPartitions if still_owns(&member.pending_revocation) => return,
            _ => {}
        }
        member.pending_revocation.clear();
        let keep = intersection(&member.assigned, &target);
        let revoke = difference(&member.assigned, &keep);
        let wanted = difference(&target, &keep);
        let mut add = Assignment::new();
        let mut unreleased = false;
        for (topic, partitions) in &wanted {
            for &p in partitions {
                if held_elsewhere.contains(&(*topic, p)) {
                    unreleased = true;
                } else {
                    add.entry(*topic).or_default().insert(p);
                }
            }
        }
        if !revoke.is_empty() && still_owns(&revoke) {
            member.state = MemberState::UnrevokedPartitions;
            member.assigned = keep;
            member.pending_revocation = revoke;
            member.revocation_deadline_ms = Some(now.saturating_add(member.rebalance_timeout_ms));
            return;
        }
        member.assigned = union(&keep, &add);
        member.state = if unreleased {
            MemberState::UnreleasedPartitions
        } else {
            MemberState::Stable
        };
        member.revocation_deadline_ms = None;
        if member.epoch != assignment_epoch {
            member.previous_epoch = member.epoch;
            member.epoch = assignment_epoch;
        }
    }

    /// Partitions other members hold: assigned to them or still to be revoked from them.
    fn held_by_others(&self, member_id: &str) -> BTreeSet<(Uuid, i32)> {
        self.members
            .iter()
            .filter(|(id, _)| id.as_str() != member_id)
            .flat_map(|(_, m)| m.assigned.iter().chain(m.pending_revocation.iter()))
            .flat_map(|(topic, partitions)| partitions.iter().map(|&p| (*topic, p)))
            .collect()
    }
}

/// The target assignment: for each topic, its partitions in balanced contiguous ranges over the
/// members subscribed to it, ordered by member id (the first `count % members` get one more).
fn assign(
    members: &BTreeMap<String, Member>,
    topics: &BTreeMap<String, (Uuid, i32)>,
) -> BTreeMap<String, Assignment> {
    let mut target: BTreeMap<String, Assignment> = BTreeMap::new();
    for (name, &(id, count)) in topics {
        let subscribers: Vec<&String> = members
            .iter()
            .filter(|(_, m)| m.subscribes_to(name))
            .map(|(member_id, _)| member_id)
            .collect();
        if subscribers.is_empty() || count <= 0 {
            continue;
        }
        let n = subscribers.len() as i32;
        let (share, extra) = (count / n, count % n);
        let mut next = 0;
        for (i, member_id) in subscribers.into_iter().enumerate() {
            let take = share + i32::from((i as i32) < extra);
            let partitions: BTreeSet<i32> = (next..next + take).collect();
            next += take;
            if !partitions.is_empty() {
                target
                    .entry(member_id.clone())
                    .or_default()
                    .insert(id, partitions);
            }
        }
    }
    target
}

fn intersects(a: &Assignment, b: &Assignment) -> bool {
    a.iter()
        .any(|(topic, ps)| b.get(topic).is_some_and(|qs| !ps.is_disjoint(qs)))
}

fn is_subset(a: &Assignment, b: &Assignment) -> bool {
    a.iter()
        .all(|(topic, ps)| ps.is_empty() || b.get(topic).is_some_and(|qs| ps.is_subset(qs)))
}

fn intersection(a: &Assignment, b: &Assignment) -> Assignment {
    combine(a, |topic, ps| {
        b.get(topic)
            .map(|qs| ps.intersection(qs).copied().collect())
            .unwrap_or_default()
    })
}

fn difference(a: &Assignment, b: &Assignment) -> Assignment {
    combine(a, |topic, ps| match b.get(topic) {
        Some(qs) => ps.difference(qs).copied().collect(),
        None => ps.clone(),
    })
}

fn union(a: &Assignment, b: &Assignment) -> Assignment {
    let mut out = a.clone();
    for (topic, ps) in b {
        out.entry(*topic).or_default().extend(ps);
    }
    out
}

/// `a` with each topic's partitions replaced by `f`, empty topics left out.
fn combine(a: &Assignment, f: impl Fn(&Uuid, &BTreeSet<i32>) -> BTreeSet<i32>) -> Assignment {
    a.iter()
        .map(|(topic, ps)| (*topic, f(topic, ps)))
        .filter(|(_, ps)| !ps.is_empty())
        .collect()
}

#[cfg(test)]
#[path = "consumer/tests.rs"]
mod tests;
