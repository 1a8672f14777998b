//! The group coordinator for Kafka's classic group protocol, local to this region.
//!
//! - [`state`]: one group's pure state machine (no I/O, time passed in), unit-tested
//!   deterministically;
//! - this module: the coordinator that owns every group behind its own mutex (never held across
//!   an await, so no group waits on another), parks JoinGroup / SyncGroup on oneshot channels
//!   that the state machine's replies complete, drives timeouts from a 100 ms ticker, and keeps
//!   committed offsets durable in [`GroupStore`] (RocksDB at `<data-dir>/groups`).
//!
//! Committed offsets are durable, and so is each group's membership as of its last completed
//! rebalance ([`state::SavedMembership`], saved whenever it changes): after a restart the
//! generation in force is restored, so members' heartbeats go on being answered and a static
//! member that restarts rejoins without a rebalance, as after a coordinator move in Kafka.
//! Groups of the consumer protocol are kept the same way ([`consumer::SavedGroup`], whenever
//! their epochs, members or partitions change), so their members' heartbeats after a restart
//! are answered at the epochs they hold and nothing is reassigned.

pub mod consumer;
pub mod state;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use causeway_storage::{CommittedOffset, GroupStore, OffsetEntry, StorageError};
use dashmap::DashMap;
use kafka_protocol::ResponseError;
use tokio::sync::{oneshot, watch};

use self::consumer::{ConsumerGroup, Heartbeat, HeartbeatAnswer, SavedGroup};
use self::state::{
    Answer, Event, Group, GroupConfig, GroupState, JoinRequest, JoinResult, MemberDescription,
    Output, Reply, SavedMembership, SyncRequest, SyncResult, WaiterId,
};
use crate::broker::Broker;
use crate::metrics;
use crate::wall_clock::now_ms;

/// How often group timers (session, rebalance, sync timeouts, initial delay) are checked: the
/// precision of every group timeout.
const TICK_MS: u64 = 100;
/// How often expired offsets are removed (Kafka's `offsets.retention.check.interval.ms` is
/// 10 minutes; we check more often since the scan is cheap).
const RETENTION_CHECK_MS: u64 = 60_000;

/// A parked request's channel.
enum Waiter {
    Join(oneshot::Sender<JoinResult>),
    Sync(oneshot::Sender<SyncResult>),
}

struct Slot {
    group: Group,
    waiters: HashMap<WaiterId, Waiter>,
    /// Deleted: requests that still hold this slot must not use it.
    dead: bool,
    /// The group's membership version last saved to the store.
    saved_version: u64,
}

impl Slot {
    fn holding(group: Group) -> Slot {
        Slot {
            saved_version: group.membership_version(),
            group,
            waiters: HashMap::new(),
            dead: false,
        }
    }
}

/// A group as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct GroupDescription {
    /// Kafka state name.
    pub state: GroupState,
    /// Protocol type ("" for offset-only groups).
    pub protocol_type: String,
    /// Selected assignor ("" when none).
    pub protocol_name: String,
    /// Members.
    pub members: Vec<MemberDescription>,
}

/// A group as ListGroups shows it.
#[derive(Debug, Clone)]
pub struct ListedGroup {
    /// Group id.
    pub group_id: String,
    /// Protocol type ("" for offset-only groups).
    pub protocol_type: String,
    /// Kafka's name of its state.
    pub state: &'static str,
    /// "classic" (JoinGroup/SyncGroup) or "consumer" (KIP-848).
    pub group_type: &'static str,
}

/// One partition's commit request.
#[derive(Debug, Clone)]
pub struct CommitRequest {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Leader epoch (-1 unknown).
    pub leader_epoch: i32,
    /// Metadata.
    pub metadata: Option<String>,
}

/// Owns every group of this region and their committed offsets.
pub struct GroupCoordinator {
    store: Arc<GroupStore>,
    groups: DashMap<String, Arc<Mutex<Slot>>>,
    /// Groups of the consumer protocol (KIP-848), in memory only (`consumer.rs`).
    consumer_groups: DashMap<String, Arc<Mutex<ConsumerGroup>>>,
    /// What was last kept of each consumer-protocol group, to write only what changed.
    consumer_kept: DashMap<String, SavedGroup>,
    config: GroupConfig,
    offsets_retention_ms: i64,
    next_waiter: AtomicU64,
    salt: u64,
}

impl GroupCoordinator {
    /// Opens the offsets store at `path`.
    pub fn open(
        path: &Path,
        initial_rebalance_delay_ms: u64,
        offsets_retention_minutes: u64,
    ) -> Result<GroupCoordinator, StorageError> {
        let store = GroupStore::open(path)?;
        let config = GroupConfig {
            initial_rebalance_delay_ms: i64::try_from(initial_rebalance_delay_ms)
                .unwrap_or(i64::MAX),
        };
        let groups = DashMap::new();
        let (consumer_groups, consumer_kept) = (DashMap::new(), DashMap::new());
        for (group_id, bytes) in store.memberships()? {
            if let Some(saved) = SavedGroup::decode(&bytes) {
                match saved.and_then(|saved| {
                    ConsumerGroup::restored(saved.clone(), now_ms()).map(|g| (saved, g))
                }) {
                    Ok((saved, group)) => {
                        tracing::info!(
                            group = %group_id,
                            group_epoch = group.epoch(),
                            members = group.members().len(),
                            "consumer group membership restored"
                        );
                        consumer_kept.insert(group_id.clone(), saved);
                        consumer_groups.insert(group_id, Arc::new(Mutex::new(group)));
                    }
                    Err(error) => {
                        tracing::warn!(group = %group_id, %error, "kept consumer group unreadable; its members join again");
                    }
                }
                continue;
            }
            match SavedMembership::decode(&bytes) {
                Ok(saved) => {
                    let group = Group::restored(config, saved, now_ms());
                    tracing::info!(
                        group = %group_id,
                        generation_id = group.generation_id(),
                        members = group.member_count(),
                        "group membership restored"
                    );
                    groups.insert(group_id, Arc::new(Mutex::new(Slot::holding(group))));
                }
                Err(error) => {
                    tracing::warn!(group = %group_id, %error, "kept group membership unreadable; its members rejoin");
                }
            }
        }
        Ok(GroupCoordinator {
            store: Arc::new(store),
            groups,
            consumer_groups,
            consumer_kept,
            config,
            offsets_retention_ms: i64::try_from(offsets_retention_minutes.saturating_mul(60_000))
                .unwrap_or(i64::MAX),
            next_waiter: AtomicU64::new(1),
            salt: uuid::Uuid::new_v4().as_u64_pair().0,
        })
    }

    fn slot(&self, group_id: &str, create: bool) -> Option<Arc<Mutex<Slot>>> {
        if let Some(slot) = self.groups.get(group_id) {
            return Some(slot.clone());
        }
        if !create {
            return None;
        }
        let config = self.config;
        Some(
            self.groups
                .entry(group_id.to_string())
                .or_insert_with(|| {
                    Arc::new(Mutex::new(Slot::holding(Group::new(config, now_ms()))))
                })
                .clone(),
        )
    }

    fn waiter_id(&self) -> WaiterId {
        self.next_waiter.fetch_add(1, Ordering::Relaxed)
    }

    /// Under the group's lock, after a call into it: completes parked requests, reports events
    /// and saves the membership if it changed.
    fn settle(&self, group_id: &str, slot: &mut Slot, out: Output) {
        Self::dispatch(group_id, slot, out);
        let version = slot.group.membership_version();
        if version == slot.saved_version {
            return;
        }
        let saved = match slot.group.saved_membership() {
            Some(membership) => membership
                .encode()
                .map_err(|e| StorageError::Db(format!("encoding group membership: {e}")))
                .and_then(|bytes| self.store.save_membership(group_id, &bytes)),
            None => self.store.delete_membership(group_id),
        };
        match saved {
            Ok(()) => slot.saved_version = version,
            Err(error) => {
                tracing::warn!(group = group_id, %error, "saving group membership failed; after a restart its members rejoin");
            }
        }
    }

    /// Completes parked requests and reports events, under the group's lock.
    fn dispatch(group_id: &str, slot: &mut Slot, out: Output) {
        for reply in out.replies {
            match reply {
                Reply::Join(id, result) => {
                    if let Some(Waiter::Join(tx)) = slot.waiters.remove(&id) {
                        let _ = tx.send(result);
                    }
                }
                Reply::Sync(id, result) => {
                    if let Some(Waiter::Sync(tx)) = slot.waiters.remove(&id) {
                        let _ = tx.send(result);
                    }
                }
            }
        }
        for event in out.events {
            match event {
                Event::Rebalanced {
                    generation_id,
                    members,
                } => {
                    tracing::info!(group = group_id, generation_id, members, "group rebalanced");
                    metrics::group_rebalanced(group_id);
                }
                Event::Evicted { member_id, reason } => {
                    tracing::info!(group = group_id, member_id, reason, "member removed");
                }
            }
        }
    }

    /// A copy of a KIP-848 group's state (ConsumerGroupDescribe), if the group is one.
    pub fn consumer_group(&self, group_id: &str) -> Option<ConsumerGroup> {
        let group = self.consumer_groups.get(group_id).map(|g| g.clone())?;
        let group = group.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Some(group)
    }

    /// ConsumerGroupHeartbeat (KIP-848) at `now`; `topic` gives a topic's id and partition
    /// count by name. A group id has one protocol: a classic group with members is not a
    /// consumer group (GROUP_ID_NOT_FOUND); an empty one gives way.
    pub fn consumer_heartbeat(
        &self,
        group_id: &str,
        request: Heartbeat,
        topic: &dyn consumer::TopicLookup,
        now: i64,
    ) -> Result<HeartbeatAnswer, ResponseError> {
        if group_id.is_empty() {
            return Err(ResponseError::InvalidGroupId);
        }
        if let Some(slot) = self.slot(group_id, false) {
            let slot = slot.lock().unwrap_or_else(|e| e.into_inner());
            if !slot.dead && !slot.group.is_empty() {
                return Err(ResponseError::GroupIdNotFound);
            }
        }
        // No map guard is held while a group's lock is taken (an emptied group is removed from
        // the map under its lock); a group removed meanwhile is looked up again.
        loop {
            let shared = self.consumer_groups.get(group_id).map(|g| g.clone());
            let shared = match shared {
                Some(group) => group,
                // Without its group (after a restart) a member joins again.
                None if request.member_epoch != 0 => return Err(ResponseError::UnknownMemberId),
                None => self
                    .consumer_groups
                    .entry(group_id.to_string())
                    .or_default()
                    .clone(),
            };
            let mut group = shared.lock().unwrap_or_else(|e| e.into_inner());
            let current = self
                .consumer_groups
                .get(group_id)
                .is_some_and(|g| Arc::ptr_eq(&g, &shared));
            if !current {
                continue;
            }
            let (member_id, before) = (request.member_id.clone(), group.epoch());
            let answer = group.heartbeat(request, topic, now);
            if group.is_empty() {
                // Nothing to keep of an empty group but its offsets, which the store keeps.
                self.consumer_groups
                    .remove_if(group_id, |_, g| Arc::ptr_eq(g, &shared));
            }
            self.keep_consumer_group(group_id, &group);
            if group.epoch() != before {
                tracing::info!(
                    group = group_id,
                    member_id,
                    group_epoch = group.epoch(),
                    members = group.members().len(),
                    "consumer group assignment changes"
                );
                metrics::group_rebalanced(group_id);
            }
            return answer;
        }
    }

    /// JoinGroup: parks until the rebalance completes (or answers at once).
    pub async fn join(&self, group_id: &str, request: JoinRequest) -> JoinResult {
        let consumer_group = self.consumer_groups.get(group_id).map(|g| g.clone());
        if consumer_group
            .is_some_and(|group| !group.lock().unwrap_or_else(|e| e.into_inner()).is_empty())
        {
            return JoinResult::error(ResponseError::InconsistentGroupProtocol, &request.member_id);
        }
        let member_id = request.member_id.clone();
        let salt = self.salt;
        self.park(
            group_id,
            member_id.is_empty(),
            Waiter::Join,
            |group, id, out| group.join(now_ms(), request, id, salt, out),
            |error| JoinResult::error(error, &member_id),
        )
        .await
    }

    /// SyncGroup: parks until the leader's assignment arrives (or answers at once).
    pub async fn sync(&self, group_id: &str, request: SyncRequest) -> SyncResult {
        self.park(
            group_id,
            false,
            Waiter::Sync,
            |group, id, out| group.sync(now_ms(), request, id, out),
            SyncResult::error,
        )
        .await
    }

    /// Runs `call` on the group under its lock with a waiter registered for it (`waiter` wraps
    /// the reply channel), then answers at once or waits for the reply a later event sends.
    /// `failed` answers when the group does not exist (created only if `create`), was deleted,
    /// or the coordinator stops before replying.
    async fn park<T>(
        &self,
        group_id: &str,
        create: bool,
        waiter: fn(oneshot::Sender<T>) -> Waiter,
        call: impl FnOnce(&mut Group, WaiterId, &mut Output) -> Answer<T>,
        failed: impl Fn(ResponseError) -> T,
    ) -> T {
        let Some(slot) = self.slot(group_id, create) else {
            return failed(ResponseError::UnknownMemberId);
        };
        let rx = {
            let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
            if slot.dead {
                return failed(ResponseError::CoordinatorNotAvailable);
            }
            let id = self.waiter_id();
            let (tx, rx) = oneshot::channel();
            slot.waiters.insert(id, waiter(tx));
            let mut out = Output::default();
            let answer = call(&mut slot.group, id, &mut out);
            self.settle(group_id, &mut slot, out);
            match answer {
                Answer::Now(result) => {
                    slot.waiters.remove(&id);
                    return result;
                }
                Answer::Parked => rx,
            }
        };
        rx.await
            .unwrap_or_else(|_| failed(ResponseError::CoordinatorNotAvailable))
    }

    /// Heartbeat.
    pub fn heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation_id: i32,
    ) -> Result<(), ResponseError> {
        let Some(slot) = self.slot(group_id, false) else {
            return Err(ResponseError::UnknownMemberId);
        };
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        if slot.dead {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        slot.group
            .heartbeat(now_ms(), member_id, instance_id, generation_id)
    }

    /// LeaveGroup for each `(member_id, instance_id)`; one error per member.
    pub fn leave(
        &self,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Vec<Result<(), ResponseError>> {
        let Some(slot) = self.slot(group_id, false) else {
            return vec![Err(ResponseError::UnknownMemberId); members.len()];
        };
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        if slot.dead {
            return vec![Err(ResponseError::CoordinatorNotAvailable); members.len()];
        }
        let now = now_ms();
        let mut out = Output::default();
        let errors = members
            .iter()
            .map(|(member_id, instance_id)| {
                slot.group
                    .leave(now, member_id, instance_id.as_deref(), &mut out)
            })
            .collect();
        self.settle(group_id, &mut slot, out);
        errors
    }

    /// Stores offsets committed by a transaction (already validated when they were staged);
    /// blocking, called by the transaction coordinator off the async threads.
    pub fn commit_transactional(
        &self,
        group_id: &str,
        entries: &[OffsetEntry],
    ) -> Result<(), StorageError> {
        self.store.commit(group_id, entries)
    }

    /// Validates and durably stores a commit; one error per partition, in request order, and
    /// the entries stored. `known_partition` says whether a topic-partition exists.
    pub async fn commit_offsets(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation_id: i32,
        commits: Vec<CommitRequest>,
        known_partition: impl Fn(&str, i32) -> bool,
    ) -> (Vec<Result<(), ResponseError>>, Vec<OffsetEntry>) {
        if group_id.is_empty() {
            return (
                vec![Err(ResponseError::InvalidGroupId); commits.len()],
                Vec::new(),
            );
        }
        let consumer_group = self.consumer_groups.get(group_id).map(|g| g.clone());
        let group_check = match (consumer_group, self.slot(group_id, false)) {
            (Some(group), _) => group
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .check_commit(member_id, generation_id),
            (None, Some(slot)) => {
                let slot = slot.lock().unwrap_or_else(|e| e.into_inner());
                if slot.dead {
                    Err(ResponseError::CoordinatorNotAvailable)
                } else {
                    slot.group
                        .check_commit(member_id, instance_id, generation_id)
                }
            }
            // No group in memory: only a consumer that manages its own partitions (generation
            // -1) may commit; a group member from an older incarnation must rejoin.
            (None, None) if generation_id < 0 => Ok(()),
            (None, None) => Err(ResponseError::IllegalGeneration),
        };
        if let Err(error) = group_check {
            return (vec![Err(error); commits.len()], Vec::new());
        }
        let now = now_ms();
        let mut errors = Vec::with_capacity(commits.len());
        let mut entries = Vec::with_capacity(commits.len());
        for c in commits {
            let error = if !known_partition(&c.topic, c.partition) {
                Err(ResponseError::UnknownTopicOrPartition)
            } else if c
                .metadata
                .as_ref()
                .is_some_and(|m| m.len() > OFFSET_METADATA_BYTES_MAX)
            {
                Err(ResponseError::OffsetMetadataTooLarge)
            } else {
                entries.push(OffsetEntry {
                    topic: c.topic,
                    partition: c.partition,
                    committed: CommittedOffset {
                        offset: c.offset,
                        leader_epoch: c.leader_epoch,
                        metadata: c.metadata,
                        commit_ms: now,
                    },
                });
                Ok(())
            };
            errors.push(error);
        }
        if entries.is_empty() {
            return (errors, entries);
        }
        let store = self.store.clone();
        let group = group_id.to_string();
        let written = crate::blocking::METADATA
            .run(move || store.commit(&group, &entries).map(|()| entries))
            .await;
        let (failed, stored) = match written {
            Ok(Ok(entries)) => (None, entries),
            Ok(Err(error)) => (Some(error.to_string()), Vec::new()),
            Err(error) => (Some(error.to_string()), Vec::new()),
        };
        if let Some(error) = failed {
            tracing::error!(group = group_id, %error, "offset commit failed");
            // Kafka's coordinator answers NOT_COORDINATOR when its offsets log cannot be written:
            // every client finds the coordinator again and retries, where the Java consumer
            // would give the commit up on KAFKA_STORAGE_ERROR.
            for e in errors.iter_mut() {
                if e.is_ok() {
                    *e = Err(ResponseError::NotCoordinator);
                }
            }
        }
        (errors, stored)
    }

    /// Committed offsets of a group, keyed by (topic, partition).
    pub fn fetch_offsets(
        &self,
        group_id: &str,
    ) -> Result<BTreeMap<(String, i32), CommittedOffset>, StorageError> {
        Ok(self
            .store
            .fetch(group_id)?
            .into_iter()
            .map(|e| ((e.topic, e.partition), e.committed))
            .collect())
    }

    /// Every group: those with members or state in memory, and those with only offsets.
    pub fn list(&self) -> Result<Vec<ListedGroup>, StorageError> {
        let mut out: BTreeMap<String, ListedGroup> = BTreeMap::new();
        for group_id in self.store.groups()? {
            out.insert(
                group_id.clone(),
                ListedGroup {
                    group_id,
                    protocol_type: String::new(),
                    state: GroupState::Empty.name(),
                    group_type: "classic",
                },
            );
        }
        for (group_id, slot) in self.snapshot() {
            let slot = slot.lock().unwrap_or_else(|e| e.into_inner());
            if slot.dead {
                continue;
            }
            // An empty group that never had a member and has no offsets is not a group.
            if slot.group.is_empty()
                && slot.group.protocol_type().is_none()
                && !out.contains_key(&group_id)
            {
                continue;
            }
            out.insert(
                group_id.clone(),
                ListedGroup {
                    group_id,
                    protocol_type: slot.group.protocol_type().unwrap_or_default().to_string(),
                    state: slot.group.state().name(),
                    group_type: "classic",
                },
            );
        }
        for (group_id, group) in self.consumer_snapshot() {
            let group = group.lock().unwrap_or_else(|e| e.into_inner());
            out.insert(
                group_id.clone(),
                ListedGroup {
                    group_id,
                    protocol_type: "consumer".into(),
                    state: group.state_name(),
                    group_type: "consumer",
                },
            );
        }
        Ok(out.into_values().collect())
    }

    /// DescribeGroups for one group; unknown groups are Dead, as Kafka reports them.
    pub fn describe(&self, group_id: &str) -> Result<GroupDescription, StorageError> {
        if let Some(slot) = self.slot(group_id, false) {
            let slot = slot.lock().unwrap_or_else(|e| e.into_inner());
            if !slot.dead {
                return Ok(GroupDescription {
                    state: slot.group.state(),
                    protocol_type: slot.group.protocol_type().unwrap_or_default().to_string(),
                    protocol_name: slot.group.protocol_name().unwrap_or_default().to_string(),
                    members: slot.group.describe_members(),
                });
            }
        }
        let state = if self.store.fetch(group_id)?.is_empty() {
            GroupState::Dead
        } else {
            GroupState::Empty
        };
        Ok(GroupDescription {
            state,
            protocol_type: String::new(),
            protocol_name: String::new(),
            members: Vec::new(),
        })
    }

    /// DeleteGroups for one group.
    pub async fn delete_group(&self, group_id: &str) -> Result<(), ResponseError> {
        if group_id.is_empty() {
            return Err(ResponseError::InvalidGroupId);
        }
        let mut in_memory = false;
        if let Some(group) = self.consumer_groups.get(group_id).map(|g| g.clone()) {
            if !group.lock().unwrap_or_else(|e| e.into_inner()).is_empty() {
                return Err(ResponseError::NonEmptyGroup);
            }
            self.consumer_groups.remove(group_id);
            in_memory = true;
        }
        if let Some(slot) = self.slot(group_id, false) {
            let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
            if !slot.dead {
                if !slot.group.is_empty() {
                    return Err(ResponseError::NonEmptyGroup);
                }
                slot.dead = true;
                in_memory = slot.group.protocol_type().is_some();
            }
            self.groups.remove(group_id);
        }
        let store = self.store.clone();
        let group = group_id.to_string();
        match crate::blocking::METADATA
            .run(move || store.delete_group(&group))
            .await
        {
            Ok(Ok(0)) if !in_memory => Err(ResponseError::GroupIdNotFound),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => {
                tracing::error!(group = group_id, %error, "deleting group offsets failed");
                Err(ResponseError::KafkaStorageError)
            }
            Err(_) => Err(ResponseError::KafkaStorageError),
        }
    }

    /// OffsetDelete: the group-level error, or per-partition errors. Offsets of topics that a
    /// live member subscribes to are kept (GROUP_SUBSCRIBED_TO_TOPIC).
    pub async fn delete_offsets(
        &self,
        group_id: &str,
        partitions: Vec<(String, i32)>,
    ) -> Result<Vec<Result<(), ResponseError>>, ResponseError> {
        if group_id.is_empty() {
            return Err(ResponseError::InvalidGroupId);
        }
        let subscribed: BTreeSet<String> = match self.slot(group_id, false) {
            Some(slot) => {
                let slot = slot.lock().unwrap_or_else(|e| e.into_inner());
                if slot.group.is_empty() {
                    BTreeSet::new()
                } else if slot.group.protocol_type() != Some("consumer") {
                    return Err(ResponseError::NonEmptyGroup);
                } else {
                    slot.group
                        .member_subscriptions()
                        .iter()
                        .flat_map(subscribed_topics)
                        .collect()
                }
            }
            None => BTreeSet::new(),
        };
        let existing = self.fetch_offsets(group_id).map_err(|error| {
            tracing::error!(group = group_id, %error, "reading offsets failed");
            ResponseError::KafkaStorageError
        })?;
        if existing.is_empty() && self.slot(group_id, false).is_none() {
            return Err(ResponseError::GroupIdNotFound);
        }
        let mut errors = Vec::with_capacity(partitions.len());
        let mut delete = Vec::new();
        for (topic, partition) in partitions {
            if subscribed.contains(&topic) {
                errors.push(Err(ResponseError::GroupSubscribedToTopic));
            } else {
                delete.push((topic, partition));
                errors.push(Ok(()));
            }
        }
        let store = self.store.clone();
        let group = group_id.to_string();
        match crate::blocking::METADATA
            .run(move || store.delete_offsets(&group, &delete))
            .await
        {
            Ok(Ok(())) => Ok(errors),
            _ => Err(ResponseError::KafkaStorageError),
        }
    }

    /// Keeps what changed of a consumer-protocol group (called under its lock, so writes land
    /// in the order of the changes); an empty group is forgotten. A failed write is logged: its
    /// members would only join again after a restart.
    fn keep_consumer_group(&self, group_id: &str, group: &ConsumerGroup) {
        let written = if group.is_empty() {
            if self.consumer_kept.remove(group_id).is_none() {
                return;
            }
            self.store.delete_membership(group_id)
        } else {
            let saved = group.saved();
            if self
                .consumer_kept
                .get(group_id)
                .is_some_and(|kept| *kept == saved)
            {
                return;
            }
            let written = self.store.save_membership(group_id, &saved.encode());
            self.consumer_kept.insert(group_id.to_string(), saved);
            written
        };
        if let Err(error) = written {
            tracing::warn!(group = group_id, %error, "keeping the consumer group's membership failed");
        }
    }

    /// The consumer-protocol groups, so that no map guard is held while one is locked.
    fn consumer_snapshot(&self) -> Vec<(String, Arc<Mutex<ConsumerGroup>>)> {
        self.consumer_groups
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect()
    }

    fn snapshot(&self) -> Vec<(String, Arc<Mutex<Slot>>)> {
        self.groups
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect()
    }

    /// Advances every group's timers to `now`.
    pub fn tick_all(&self, now: i64, session_timeout_ms: impl Fn(&str) -> i64) {
        for (group_id, slot) in self.snapshot() {
            let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
            let mut out = Output::default();
            slot.group.tick(now, &mut out);
            self.settle(&group_id, &mut slot, out);
        }
        for (group_id, shared) in self.consumer_snapshot() {
            let mut group = shared.lock().unwrap_or_else(|e| e.into_inner());
            let expired = group.expire(now, session_timeout_ms(&group_id));
            if group.is_empty() {
                self.consumer_groups
                    .remove_if(&group_id, |_, g| Arc::ptr_eq(g, &shared));
            }
            if !expired.is_empty() {
                self.keep_consumer_group(&group_id, &group);
            }
            for member_id in expired {
                tracing::info!(
                    group = group_id,
                    member_id,
                    "member removed: no heartbeat within the session timeout, or revoked partitions held past its rebalance timeout"
                );
            }
        }
    }

    /// Removes offsets past `offsets.retention.minutes`: for an empty group, measured from the
    /// later of the commit and the moment the group became empty; groups with members keep
    /// theirs. Empty groups left without offsets are forgotten.
    pub fn expire_offsets(&self, now: i64) -> Result<usize, StorageError> {
        let mut removed = 0;
        for group_id in self.store.groups()? {
            let empty_since = match self.slot(&group_id, false) {
                Some(slot) => {
                    let slot = slot.lock().unwrap_or_else(|e| e.into_inner());
                    if !slot.group.is_empty() {
                        continue;
                    }
                    slot.group.empty_since_ms()
                }
                None => i64::MIN,
            };
            if empty_since.saturating_add(self.offsets_retention_ms) > now {
                continue;
            }
            let expired = self
                .store
                .expire(&group_id, now.saturating_sub(self.offsets_retention_ms))?;
            if !expired.is_empty() {
                tracing::info!(
                    group = group_id,
                    partitions = expired.len(),
                    "offsets expired"
                );
            }
            removed += expired.len();
        }
        let with_offsets: BTreeSet<String> = self.store.groups()?.into_iter().collect();
        for (group_id, slot) in self.snapshot() {
            let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
            if slot.group.is_empty()
                && !with_offsets.contains(&group_id)
                && slot
                    .group
                    .empty_since_ms()
                    .saturating_add(self.offsets_retention_ms)
                    <= now
            {
                slot.dead = true;
                self.groups.remove(&group_id);
            }
        }
        Ok(removed)
    }

    /// Answers every parked request with NOT_COORDINATOR so shutdown does not wait on them.
    pub fn shutdown(&self) {
        for (group_id, slot) in self.snapshot() {
            let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
            let out = Output {
                replies: slot.group.parked_waiters(),
                events: Vec::new(),
            };
            Self::dispatch(&group_id, &mut slot, out);
        }
    }

    /// Group count per Kafka state name, for the `causeway_consumer_groups` gauge.
    pub fn state_counts(&self) -> Result<HashMap<&'static str, usize>, StorageError> {
        let mut counts: HashMap<&'static str, usize> = HashMap::new();
        for group in self.list()? {
            *counts.entry(group.state).or_default() += 1;
        }
        Ok(counts)
    }

    /// Every committed offset of every group, for the lag gauge.
    pub fn all_offsets(&self) -> Result<Vec<(String, OffsetEntry)>, StorageError> {
        let mut out = Vec::new();
        for group_id in self.store.groups()? {
            for entry in self.store.fetch(&group_id)? {
                out.push((group_id.clone(), entry));
            }
        }
        Ok(out)
    }
}

/// Kafka's `offset.metadata.max.bytes`.
pub const OFFSET_METADATA_BYTES_MAX: usize = 4096;

/// Topics named in a consumer-protocol subscription (empty if it does not decode).
fn subscribed_topics(metadata: &Bytes) -> Vec<String> {
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    use kafka_protocol::protocol::Decodable;
    let mut buf = metadata.clone();
    if buf.len() < 2 {
        return Vec::new();
    }
    let version = i16::from_be_bytes([buf[0], buf[1]]);
    let _ = bytes::Buf::get_i16(&mut buf);
    // Newer clients may send a version we do not know; its prefix is still the v3 layout.
    let version = version.clamp(0, 3);
    ConsumerProtocolSubscription::decode(&mut buf, version)
        .map(|s| s.topics.into_iter().map(|t| t.to_string()).collect())
        .unwrap_or_default()
}

/// Runs group timers and offset retention until shutdown.
pub async fn run(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(Duration::from_millis(TICK_MS));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_retention_check = now_ms();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => {
                broker.groups.shutdown();
                return;
            }
        }
        let now = now_ms();
        broker.groups.tick_all(now, |group| {
            let key = crate::group_configs::GroupConfigKey::SessionTimeoutMs;
            i64::from(broker.group_configs.value(group, key))
        });
        if now - last_retention_check >= RETENTION_CHECK_MS as i64 {
            last_retention_check = now;
            let broker = broker.clone();
            let expired = crate::blocking::METADATA
                .run(move || broker.groups.expire_offsets(now))
                .await;
            match expired {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => tracing::error!(%error, "offset retention failed"),
                Err(error) => tracing::error!(%error, "offset retention task failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_emptied_consumer_group_leaves_memory_and_its_members_must_join_again() {
        let dir = tempfile::tempdir().expect("dir");
        let groups = GroupCoordinator::open(dir.path(), 0, 60).expect("open");
        let topic = |name: &str| (name == "t").then_some((uuid::Uuid::from_u128(1), 2));
        let request = |epoch: i32| Heartbeat {
            member_id: "a".into(),
            member_epoch: epoch,
            rebalance_timeout_ms: if epoch == 0 { 1_000 } else { -1 },
            subscribed: (epoch == 0).then(|| ["t".to_string()].into()),
            server_assignor: None,
            owned: None,
            client: consumer::ClientIdentity::default(),
            pattern: None,
            instance_id: None,
        };
        let joined = groups
            .consumer_heartbeat("g", request(0), &topic, 0)
            .expect("join");
        let listed = groups.list().expect("list");
        assert_eq!(
            listed
                .iter()
                .map(|g| (g.group_id.as_str(), g.group_type))
                .collect::<Vec<_>>(),
            vec![("g", "consumer")]
        );
        groups
            .consumer_heartbeat("g", request(-1), &topic, 1)
            .expect("leave");
        assert!(
            groups.consumer_groups.is_empty(),
            "the empty group is forgotten"
        );
        assert!(groups.list().expect("list").is_empty());
        assert_eq!(
            groups.consumer_heartbeat("g", request(joined.member_epoch), &topic, 2),
            Err(ResponseError::UnknownMemberId),
            "a member of the forgotten group joins again"
        );
        // A member whose session expired empties the group too.
        groups
            .consumer_heartbeat("g", request(0), &topic, 3)
            .expect("join");
        groups.tick_all(3 + consumer::SESSION_TIMEOUT_MS + 1, |_| {
            consumer::SESSION_TIMEOUT_MS
        });
        assert!(groups.consumer_groups.is_empty());
    }
}
