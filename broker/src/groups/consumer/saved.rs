//! A consumer-protocol group as kept across a broker restart: epochs, members (their epochs,
//! partitions, targets, subscriptions, instance ids) and the assigned topics, so members'
//! heartbeats after a restart are answered as before it and nothing is reassigned. Heartbeat
//! times and client identities are not kept: a restored member has a full session from the
//! restart to heartbeat again.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Assignment, ConsumerGroup, Member, MemberState, TopicPattern};

/// What is kept of a group (JSON, behind [`SAVED_PREFIX`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedGroup {
    group_epoch: i32,
    assignment_epoch: i32,
    assignor: Option<String>,
    /// Assigned topics: name, id, partition count.
    topics: Vec<(String, String, i32)>,
    members: Vec<SavedMember>,
}

/// What is kept of a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SavedMember {
    id: String,
    epoch: i32,
    previous_epoch: i32,
    state: String,
    assigned: Vec<(String, Vec<i32>)>,
    pending_revocation: Vec<(String, Vec<i32>)>,
    target: Vec<(String, Vec<i32>)>,
    subscribed: Vec<String>,
    pattern: Option<String>,
    rebalance_timeout_ms: i64,
    instance_id: Option<String>,
    departed: bool,
}

/// Marks a kept consumer-protocol group in the group store (classic memberships share it).
pub const SAVED_PREFIX: &[u8] = b"kip848:";

fn assignment_out(assignment: &Assignment) -> Vec<(String, Vec<i32>)> {
    assignment
        .iter()
        .map(|(id, partitions)| (id.to_string(), partitions.iter().copied().collect()))
        .collect()
}

fn assignment_in(saved: &[(String, Vec<i32>)]) -> Result<Assignment, String> {
    saved
        .iter()
        .map(|(id, partitions)| {
            let id = Uuid::parse_str(id).map_err(|e| e.to_string())?;
            Ok((id, partitions.iter().copied().collect::<BTreeSet<i32>>()))
        })
        .collect()
}

fn state_name(state: MemberState) -> &'static str {
    match state {
        MemberState::Stable => "stable",
        MemberState::UnrevokedPartitions => "unrevoked",
        MemberState::UnreleasedPartitions => "unreleased",
    }
}

fn state_of(name: &str) -> Result<MemberState, String> {
    match name {
        "stable" => Ok(MemberState::Stable),
        "unrevoked" => Ok(MemberState::UnrevokedPartitions),
        "unreleased" => Ok(MemberState::UnreleasedPartitions),
        other => Err(format!("unknown member state {other:?}")),
    }
}

impl ConsumerGroup {
    /// What is kept of this group.
    pub fn saved(&self) -> SavedGroup {
        SavedGroup {
            group_epoch: self.group_epoch,
            assignment_epoch: self.assignment_epoch,
            assignor: self.assignor.clone(),
            topics: self
                .topics
                .iter()
                .map(|(name, (id, count))| (name.clone(), id.to_string(), *count))
                .collect(),
            members: self
                .members
                .iter()
                .map(|(id, m)| SavedMember {
                    id: id.clone(),
                    epoch: m.epoch,
                    previous_epoch: m.previous_epoch,
                    state: state_name(m.state).to_string(),
                    assigned: assignment_out(&m.assigned),
                    pending_revocation: assignment_out(&m.pending_revocation),
                    target: assignment_out(&self.target_of(id)),
                    subscribed: m.subscribed.iter().cloned().collect(),
                    pattern: m.pattern.as_ref().map(|p| p.source().to_string()),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    instance_id: m.instance_id.clone(),
                    departed: m.departed,
                })
                .collect(),
        }
    }

    /// The group kept as `saved`, its members heard from at `now`.
    pub fn restored(saved: SavedGroup, now: i64) -> Result<ConsumerGroup, String> {
        let mut members = BTreeMap::new();
        let mut target = BTreeMap::new();
        for m in saved.members {
            target.insert(m.id.clone(), assignment_in(&m.target)?);
            let pattern = m.pattern.as_deref().map(TopicPattern::new).transpose()?;
            members.insert(
                m.id,
                Member {
                    epoch: m.epoch,
                    previous_epoch: m.previous_epoch,
                    state: state_of(&m.state)?,
                    assigned: assignment_in(&m.assigned)?,
                    pending_revocation: assignment_in(&m.pending_revocation)?,
                    subscribed: m.subscribed.into_iter().collect(),
                    pattern,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    last_heartbeat_ms: now,
                    revocation_deadline_ms: None,
                    client: Default::default(),
                    instance_id: m.instance_id,
                    departed: m.departed,
                },
            );
        }
        let topics = saved
            .topics
            .into_iter()
            .map(|(name, id, count)| {
                Uuid::parse_str(&id)
                    .map(|id| (name, (id, count)))
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<_, String>>()?;
        Ok(ConsumerGroup {
            group_epoch: saved.group_epoch,
            assignment_epoch: saved.assignment_epoch,
            members,
            target,
            topics,
            assignor: saved.assignor,
        })
    }
}

impl SavedGroup {
    /// The bytes kept in the group store.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = SAVED_PREFIX.to_vec();
        out.extend(serde_json::to_vec(self).unwrap_or_default());
        out
    }

    /// Reads bytes [`SavedGroup::encode`] wrote; `None` if they are not a consumer group's.
    pub fn decode(bytes: &[u8]) -> Option<Result<SavedGroup, String>> {
        let json = bytes.strip_prefix(SAVED_PREFIX)?;
        Some(serde_json::from_slice(json).map_err(|e| e.to_string()))
    }
}
