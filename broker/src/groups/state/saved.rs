//! A Stable group's membership as it is kept across a broker restart: its generation, leader,
//! members and their assignments. Kafka writes the same to `__consumer_offsets` when a
//! rebalance completes, so a restarted coordinator answers heartbeats of the generation in force
//! and a static member that restarts with it rejoins without a rebalance. A group caught
//! mid-rebalance by the restart comes back as the last Stable generation; members that moved on
//! rejoin, as they would after a coordinator move in Kafka.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{Group, GroupConfig, GroupState, Member};

/// A Stable group's membership (JSON in the group store).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedMembership {
    generation_id: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    leader: Option<String>,
    members: Vec<SavedMember>,
    next_member_seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SavedMember {
    member_id: String,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    protocols: Vec<(String, Vec<u8>)>,
    assignment: Vec<u8>,
}

impl SavedMembership {
    /// The bytes stored for it.
    pub fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// Reads stored bytes back.
    pub fn decode(bytes: &[u8]) -> Result<SavedMembership, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

impl Group {
    /// The membership to keep across a restart: `Some` while the group is Stable.
    pub fn saved_membership(&self) -> Option<SavedMembership> {
        if self.state != GroupState::Stable {
            return None;
        }
        Some(SavedMembership {
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone(),
            members: self
                .members
                .iter()
                .map(|(id, m)| SavedMember {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    protocols: m
                        .protocols
                        .iter()
                        .map(|(name, metadata)| (name.clone(), metadata.to_vec()))
                        .collect(),
                    assignment: m.assignment.to_vec(),
                })
                .collect(),
            next_member_seq: self.next_member_seq,
        })
    }

    /// The group a restart finds: Stable at the saved generation, every member synced and given
    /// a full session from `now_ms` to heartbeat again (one that does not is removed then, and
    /// the group rebalances as usual).
    pub fn restored(config: GroupConfig, saved: SavedMembership, now_ms: i64) -> Group {
        let mut group = Group::new(config, now_ms);
        if saved.members.is_empty() {
            return group;
        }
        let mut members = BTreeMap::new();
        let mut static_members = HashMap::new();
        for m in saved.members {
            if let Some(instance_id) = &m.instance_id {
                static_members.insert(instance_id.clone(), m.member_id.clone());
            }
            members.insert(
                m.member_id,
                Member {
                    instance_id: m.instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    protocols: m
                        .protocols
                        .into_iter()
                        .map(|(name, metadata)| (name, Bytes::from(metadata)))
                        .collect(),
                    assignment: Bytes::from(m.assignment),
                    join_waiter: None,
                    sync_waiter: None,
                    synced: true,
                    session_deadline_ms: now_ms + i64::from(m.session_timeout_ms),
                },
            );
        }
        group.state = GroupState::Stable;
        group.generation_id = saved.generation_id;
        group.protocol_type = saved.protocol_type;
        group.protocol_name = saved.protocol_name;
        group.leader = saved.leader;
        group.members = members;
        group.static_members = static_members;
        group.next_member_seq = saved.next_member_seq;
        group
    }
}
