//! Membership changes and the rebalances they drive: adding, replacing and removing members,
//! moving to PreparingRebalance, completing the join (evictions, next generation, leader and
//! protocol choice) and emptying the group. Kept apart from `state.rs` so that file reads as the
//! request handlers (JoinGroup, SyncGroup, Heartbeat, LeaveGroup, ticks) that call into this.

use bytes::Bytes;
use kafka_protocol::ResponseError;

use super::{
    Answer, Event, Group, GroupState, JoinRequest, JoinResult, Member, Output, Reply, SyncResult,
    WaiterId, MEMBERS_MAX,
};

impl Group {
    pub(super) fn add_member_and_rebalance(
        &mut self,
        now_ms: i64,
        member_id: String,
        request: JoinRequest,
        waiter: WaiterId,
        out: &mut Output,
    ) -> Answer<JoinResult> {
        if self.members.len() >= MEMBERS_MAX {
            return Answer::Now(JoinResult::error(
                ResponseError::GroupMaxSizeReached,
                &member_id,
            ));
        }
        if self.members.is_empty() {
            self.protocol_type = Some(request.protocol_type.clone());
        }
        let member = Member {
            instance_id: request.instance_id,
            client_id: request.client_id,
            client_host: request.client_host,
            session_timeout_ms: request.session_timeout_ms,
            rebalance_timeout_ms: request.rebalance_timeout_ms,
            protocols: request.protocols,
            assignment: Bytes::new(),
            join_waiter: Some(waiter),
            sync_waiter: None,
            synced: false,
            session_deadline_ms: now_ms + i64::from(request.session_timeout_ms),
        };
        self.members.insert(member_id, member);
        match self.state {
            GroupState::PreparingRebalance => {
                if let Some(until) = self.initial_delay_until_ms.as_mut() {
                    // A new member during the initial delay restarts the delay, bounded by the
                    // rebalance timeout measured from the first join.
                    *until = (now_ms + self.config.initial_rebalance_delay_ms)
                        .min(self.rebalance_deadline_ms);
                }
            }
            _ => self.prepare_rebalance(now_ms, out),
        }
        self.try_complete_join(now_ms, out);
        Answer::Parked
    }

    pub(super) fn replace_static_member(
        &mut self,
        now_ms: i64,
        old_id: &str,
        new_id: String,
        request: JoinRequest,
        waiter: WaiterId,
        out: &mut Output,
    ) -> Answer<JoinResult> {
        let Some(mut member) = self.members.remove(old_id) else {
            // The instance is mapped but its member is gone: treat it as new.
            if let Some(instance_id) = request.instance_id.clone() {
                self.static_members.insert(instance_id, new_id.clone());
            }
            return self.add_member_and_rebalance(now_ms, new_id, request, waiter, out);
        };
        // Fence the old incarnation: whatever it has parked learns it was replaced.
        if let Some(w) = member.join_waiter.take() {
            out.replies.push(Reply::Join(
                w,
                JoinResult::error(ResponseError::FencedInstanceId, old_id),
            ));
        }
        if let Some(w) = member.sync_waiter.take() {
            out.replies.push(Reply::Sync(
                w,
                SyncResult::error(ResponseError::FencedInstanceId),
            ));
        }
        self.membership_version += 1;
        let unchanged = member.rejoined(&request, now_ms);
        member.protocols = request.protocols;
        let was_leader = self.leader.as_deref() == Some(old_id);
        if was_leader {
            self.leader = Some(new_id.clone());
        }
        if let Some(instance_id) = &request.instance_id {
            self.static_members
                .insert(instance_id.clone(), new_id.clone());
        }
        match self.state {
            GroupState::Stable if unchanged => {
                // Restart without rebalance: the member keeps its assignment and gets it again
                // from SyncGroup. A rejoining leader must not recompute the assignment.
                member.synced = true;
                self.members.insert(new_id.clone(), member);
                let mut result = self.current_join_result(&new_id, was_leader);
                result.skip_assignment = was_leader;
                Answer::Now(result)
            }
            GroupState::PreparingRebalance => {
                member.join_waiter = Some(waiter);
                self.members.insert(new_id, member);
                self.try_complete_join(now_ms, out);
                Answer::Parked
            }
            _ => {
                member.join_waiter = Some(waiter);
                self.members.insert(new_id, member);
                self.prepare_rebalance(now_ms, out);
                self.try_complete_join(now_ms, out);
                Answer::Parked
            }
        }
    }

    /// Moves to PreparingRebalance; parked SyncGroups learn that a rebalance started.
    pub(super) fn prepare_rebalance(&mut self, now_ms: i64, out: &mut Output) {
        if self.state == GroupState::CompletingRebalance {
            for m in self.members.values_mut() {
                if let Some(w) = m.sync_waiter.take() {
                    out.replies.push(Reply::Sync(
                        w,
                        SyncResult::error(ResponseError::RebalanceInProgress),
                    ));
                }
            }
        }
        let rebalance_timeout_ms = self.longest_rebalance_timeout_ms();
        if self.state == GroupState::Empty {
            self.initial_delay_until_ms = Some(
                now_ms
                    + self
                        .config
                        .initial_rebalance_delay_ms
                        .min(rebalance_timeout_ms),
            );
        } else {
            self.initial_delay_until_ms = None;
        }
        self.rebalance_deadline_ms = now_ms + rebalance_timeout_ms;
        self.state = GroupState::PreparingRebalance;
    }

    /// The longest rebalance timeout of any member: how long a rebalance phase waits.
    fn longest_rebalance_timeout_ms(&self) -> i64 {
        self.members
            .values()
            .map(|m| i64::from(m.rebalance_timeout_ms.max(0)))
            .max()
            .unwrap_or(0)
    }

    fn all_members_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.values().all(|m| m.join_waiter.is_some())
    }

    pub(super) fn try_complete_join(&mut self, now_ms: i64, out: &mut Output) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        if self
            .initial_delay_until_ms
            .is_some_and(|until| now_ms < until)
        {
            return;
        }
        if self.all_members_joined() || now_ms >= self.rebalance_deadline_ms {
            self.complete_join(now_ms, out);
        }
    }

    /// Ends PreparingRebalance: drops dynamic members that did not rejoin, starts the next
    /// generation and answers every parked JoinGroup.
    fn complete_join(&mut self, now_ms: i64, out: &mut Output) {
        let missing: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.join_waiter.is_none() && m.instance_id.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in missing {
            self.remove_member(&id);
            out.events.push(Event::Evicted {
                member_id: id,
                reason: "rebalance timeout",
            });
        }
        self.initial_delay_until_ms = None;
        self.generation_id = self.generation_id.wrapping_add(1).max(1);
        if self.members.is_empty() {
            self.become_empty(now_ms);
            return;
        }
        self.protocol_name = self.select_protocol();
        if self
            .leader
            .as_ref()
            .is_none_or(|l| self.members.get(l).is_none_or(|m| m.join_waiter.is_none()))
        {
            self.leader = self
                .members
                .iter()
                .find(|(_, m)| m.join_waiter.is_some())
                .or_else(|| self.members.iter().next())
                .map(|(id, _)| id.clone());
        }
        self.state = GroupState::CompletingRebalance;
        let rebalance_timeout_ms = self.longest_rebalance_timeout_ms();
        self.sync_deadline_ms = now_ms + rebalance_timeout_ms;
        let all = self.joined_members();
        let leader = self.leader.clone().unwrap_or_default();
        for (id, m) in self.members.iter_mut() {
            m.synced = false;
            m.assignment = Bytes::new();
            m.session_deadline_ms = now_ms + i64::from(m.session_timeout_ms);
            if let Some(w) = m.join_waiter.take() {
                out.replies.push(Reply::Join(
                    w,
                    JoinResult {
                        error: 0,
                        generation_id: self.generation_id,
                        protocol_type: self.protocol_type.clone(),
                        protocol_name: self.protocol_name.clone(),
                        leader: leader.clone(),
                        member_id: id.clone(),
                        members: if *id == leader {
                            all.clone()
                        } else {
                            Vec::new()
                        },
                        skip_assignment: false,
                    },
                ));
            }
        }
        out.events.push(Event::Rebalanced {
            generation_id: self.generation_id,
            members: self.members.len(),
        });
    }

    fn become_empty(&mut self, now_ms: i64) {
        self.membership_version += 1;
        self.state = GroupState::Empty;
        self.protocol_name = None;
        self.leader = None;
        self.empty_since_ms = now_ms;
    }

    /// Kafka's vote: every member votes for its most preferred protocol among those all support.
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(name, _)| name)
            .filter(|name| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == *name))
            })
            .collect();
        let mut votes: Vec<(&String, usize)> = candidates.iter().map(|c| (*c, 0)).collect();
        for m in self.members.values() {
            if let Some((name, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(&n)) {
                if let Some(v) = votes.iter_mut().find(|(c, _)| *c == name) {
                    v.1 += 1;
                }
            }
        }
        // Ties go to the first member's earlier preference (max_by_key keeps the last maximum,
        // so iterate reversed).
        votes
            .iter()
            .rev()
            .max_by_key(|(_, count)| *count)
            .map(|(name, _)| (*name).clone())
    }

    pub(super) fn remove_member(&mut self, member_id: &str) -> Option<Member> {
        let member = self.members.remove(member_id)?;
        if let Some(instance_id) = &member.instance_id {
            if self.static_members.get(instance_id).map(String::as_str) == Some(member_id) {
                self.static_members.remove(instance_id);
            }
        }
        if self.leader.as_deref() == Some(member_id) {
            self.leader = None;
        }
        Some(member)
    }

    /// Removes a member and rebalances the rest; parked requests of the member are answered
    /// with `error`.
    pub(super) fn remove_member_and_rebalance(
        &mut self,
        now_ms: i64,
        member_id: &str,
        error: ResponseError,
        out: &mut Output,
    ) {
        let Some(member) = self.remove_member(member_id) else {
            return;
        };
        if let Some(w) = member.join_waiter {
            out.replies
                .push(Reply::Join(w, JoinResult::error(error, member_id)));
        }
        if let Some(w) = member.sync_waiter {
            out.replies.push(Reply::Sync(w, SyncResult::error(error)));
        }
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now_ms, out);
                self.try_complete_join(now_ms, out);
            }
            GroupState::PreparingRebalance => self.try_complete_join(now_ms, out),
            GroupState::Empty | GroupState::Dead => {}
        }
    }
}
