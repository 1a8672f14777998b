//! The replicated topic catalog: a state-based CRDT (DESIGN.md section 4, "Catalog").
//!
//! Every region accepts CreateTopics, DeleteTopics, CreatePartitions and AlterConfigs locally,
//! stamps each write with its hybrid logical clock, and regions exchange whole catalog states and
//! [`TopicCatalog::merge`] them. Merge is commutative, associative and idempotent, so regions that
//! have seen the same writes hold byte-identical catalogs (compare [`TopicCatalog::digest`]).
//! Everything here is pure: no I/O, no clock is read; the caller passes the stamps.
//!
//! # Semantics, per topic name
//! - **Life.** A topic keeps the stamps of its creates and the highest delete stamp. Every entry
//!   stamped at or below the delete is pruned. The topic is *alive* iff a create survives. So a
//!   delete and a create are last-writer-wins, and two regions creating the same name
//!   concurrently create the *same* topic (one set of partitions, no data split).
//! - **Incarnation.** Everything stamped below the oldest surviving create belongs to an earlier
//!   incarnation (for example a CreatePartitions that raced with the delete that ended it) and is
//!   ignored, though it is kept until the next delete: dropping it earlier would make merge depend
//!   on the order, since a concurrent older create may still arrive and lower that floor. A
//!   re-created topic therefore starts afresh. A write stamped above both a delete and a re-create
//!   (possible only when it was concurrent with both) applies to the new incarnation.
//! - **Partitions.** Each create and CreatePartitions records `(stamp, count)`; the partition
//!   count is the highest count of the current incarnation, so it only grows within one
//!   incarnation, and concurrent creates converge to the largest count. Only the entries no other
//!   entry dominates (higher-or-equal stamp *and* count) are kept: dropping a dominated entry never
//!   changes the count for any future delete or create floor, so the kept set is a function of
//!   the union of all writes and merge stays associative (property-tested below).
//! - **Configs.** One last-writer-wins register per key; `None` resets the key to its default.
//! - **Topic id.** Derived from the name and the delete stamp ([`topic_id`]), so every region
//!   reports the same Kafka topic id and a re-created topic gets a new one. A merge that changes
//!   the delete stamp of a topic alive before and after is a [`CatalogChange::Recreated`].
//! - **Tombstones.** A deleted topic keeps its delete stamp (a few bytes) so a late copy of its
//!   create cannot revive it; collecting them below the stable cut is future work.
//!
//! # Local writes
//! A local write must carry a stamp above every stamp already in that topic's state, otherwise it
//! is refused with [`CatalogError::StaleStamp`]: fold [`TopicCatalog::max_stamp`] into the
//! region's [`crate::HybridClock`] after every merge (as DESIGN.md asks for every applied remote
//! stamp) and a fresh tick always qualifies. Names, partition counts and config values are
//! validated by the caller; the catalog only enforces the length bounds its encoding relies on.
//!
//! # Encoding
//! [`TopicCatalog::encode`] / [`TopicState::encode`] are canonical: equal states give equal bytes,
//! and the decoders accept only canonical input (sorted, pruned, no overlong varint, no trailing
//! bytes), so `encode(decode(b)) == b` whenever decoding succeeds. Layout (integers are unsigned
//! LEB128 varints, strings are a varint byte length then UTF-8):
//! ```text
//! catalog := version=1, topic_count, { name, topic_body }*        (names strictly increasing)
//! topic   := version=1, topic_body                                  (stored per topic)
//! topic_body := deleted: (0 | 1 stamp),
//!               creates: count, stamp*                              (strictly increasing)
//!               partitions: count, { stamp, partition_count }*     (stamps up, counts down)
//!               configs: count, { key, stamp, (0 | 1 value) }*      (keys strictly increasing)
//! stamp := hlc, region
//! ```
//! Every length is checked against the bytes that remain before anything is allocated, so
//! malformed input is refused with an error, never a panic or a huge allocation.
//!
//! The encoders and decoders live in `topic_catalog/codec.rs`.

use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;

pub(crate) mod codec;

use codec::put_str;

/// Version byte that starts [`TopicCatalog::encode`] and [`TopicState::encode`] output; bump it
/// when the layout changes so an old broker refuses a newer state instead of misreading it.
pub const CATALOG_ENCODING_VERSION: u8 = 1;

/// Kafka's limit on a topic name's length; enforced so every catalog written can be read back.
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// Bound on a config key's length, checked on write and on decode.
pub const MAX_CONFIG_KEY_LEN: usize = 255;

/// Bound on a config value's length, checked on write and on decode.
pub const MAX_CONFIG_VALUE_LEN: usize = 64 * 1024;

/// Kafka carries partition counts as `int32`, so a count above this could not be reported.
pub const MAX_PARTITIONS: u32 = i32::MAX as u32;

/// The identity and order of one catalog write: compared by `(hlc, region)`.
///
/// HLC stamps of one region are strictly increasing, so the pair is unique per write and the
/// order is total; it roughly follows real time, which is what last-writer-wins should mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct CatalogStamp {
    /// Hybrid logical clock of the write at its origin region (see [`crate::hlc`]).
    pub hlc: u64,
    /// Region that accepted the write; breaks ties between equal clocks of different regions.
    pub region: u32,
}

impl CatalogStamp {
    /// The stamp of a write taken at `hlc` in `region`.
    pub fn new(hlc: u64, region: u32) -> CatalogStamp {
        CatalogStamp { hlc, region }
    }
}

/// Why a catalog write or decode was refused; the first three map to Kafka error codes.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CatalogError {
    /// CreateTopics of a name that is alive (Kafka `TOPIC_ALREADY_EXISTS`).
    #[error("topic {0:?} already exists")]
    AlreadyExists(String),
    /// A write to a name that is not alive (Kafka `UNKNOWN_TOPIC_OR_PARTITION`).
    #[error("topic {0:?} does not exist")]
    UnknownTopic(String),
    /// A partition count of zero, above [`MAX_PARTITIONS`], or not above the current count
    /// (Kafka `INVALID_PARTITIONS`).
    #[error("invalid partition count {requested} (current {current})")]
    InvalidPartitions {
        /// The count asked for.
        requested: u32,
        /// The current count (0 for a create).
        current: u32,
    },
    /// The write's stamp is not above every stamp the topic already holds; the caller's clock
    /// has not observed the catalog (see the module docs) and should observe and retry.
    #[error("stamp {stamp:?} is not above the topic's newest stamp {newest:?}")]
    StaleStamp {
        /// The stamp offered.
        stamp: CatalogStamp,
        /// The newest stamp already in the topic's state.
        newest: CatalogStamp,
    },
    /// A name, config key or config value longer than its bound.
    #[error("{what} is {len} bytes, above the limit of {max}")]
    TooLong {
        /// Which field.
        what: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// Encoded state written by an unknown version of the layout.
    #[error("unsupported catalog encoding version {0}")]
    UnsupportedVersion(u8),
    /// Encoded state that is truncated, corrupt or not canonical.
    #[error("malformed catalog encoding at byte {offset}: {reason}")]
    Malformed {
        /// Where decoding stopped.
        offset: usize,
        /// What was wrong there.
        reason: &'static str,
    },
}

/// What a merge changed in the set of alive topics, so the broker can act on it.
///
/// At most one of `Created` / `Deleted` / `Recreated` per topic per merge, or else any of
/// `PartitionsAdded` and `ConfigsChanged`; read the rest from [`TopicCatalog::get`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogChange {
    /// The topic was not alive here and now is: create its partitions.
    Created {
        /// Topic name.
        name: String,
        /// Its partition count.
        partitions: u32,
    },
    /// The topic was alive here and no longer is: delete its data.
    Deleted {
        /// Topic name.
        name: String,
    },
    /// The topic is alive before and after, but a delete came in between (its topic id changed):
    /// wipe its data and create it again.
    Recreated {
        /// Topic name.
        name: String,
        /// The new incarnation's partition count.
        partitions: u32,
    },
    /// Same incarnation, more partitions: create the new ones.
    PartitionsAdded {
        /// Topic name.
        name: String,
        /// The partition count now.
        total: u32,
    },
    /// Same incarnation, different effective configs: reload them.
    ConfigsChanged {
        /// Topic name.
        name: String,
    },
}

/// What the broker sees of an alive topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicView {
    /// Kafka topic id, the same in every region (see [`topic_id`]).
    pub topic_id: [u8; 16],
    /// Number of partitions.
    pub partitions: u32,
    /// Configs set on the topic (keys reset to default are absent).
    pub configs: BTreeMap<String, String>,
}

/// A config register: the stamp of its last write and the value (`None` = reset to default).
type ConfigRegister = (CatalogStamp, Option<String>);

/// The replicated state of one topic name, kept canonical (pruned, dominated entries dropped)
/// after every operation so equal states have equal encodings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TopicState {
    /// Stamps of the creates above `deleted`; alive iff non-empty.
    creates: BTreeSet<CatalogStamp>,
    /// The highest delete stamp seen.
    deleted: Option<CatalogStamp>,
    /// `(stamp, count)` of creates and CreatePartitions above `deleted`, none dominated: stamps
    /// increase while counts strictly decrease.
    partitions: BTreeSet<(CatalogStamp, u32)>,
    /// Per key last-writer-wins register, only entries above `deleted`.
    configs: BTreeMap<String, ConfigRegister>,
}

impl TopicState {
    /// Whether the topic exists: some create is stamped above the last delete.
    pub fn is_alive(&self) -> bool {
        !self.creates.is_empty()
    }

    /// The highest delete stamp seen, which (with the name) identifies the incarnation.
    pub fn deleted(&self) -> Option<CatalogStamp> {
        self.deleted
    }

    /// The surviving create stamps (more than one after concurrent creates of the name).
    pub fn creates(&self) -> &BTreeSet<CatalogStamp> {
        &self.creates
    }

    /// The oldest surviving create: writes stamped below it belong to an earlier incarnation.
    fn floor(&self) -> Option<CatalogStamp> {
        self.creates.first().copied()
    }

    /// The partition count, if alive: the highest count of the current incarnation.
    pub fn partition_count(&self) -> Option<u32> {
        let floor = self.floor()?;
        // Counts decrease as stamps increase, so the first entry at or above the floor is the max.
        self.partitions
            .range((floor, 0)..)
            .next()
            .map(|&(_, count)| count)
    }

    /// The configs set on the current incarnation (empty if not alive).
    pub fn effective_configs(&self) -> BTreeMap<String, String> {
        let Some(floor) = self.floor() else {
            return BTreeMap::new();
        };
        self.configs
            .iter()
            .filter(|(_, (stamp, _))| *stamp >= floor)
            .filter_map(|(key, (_, value))| Some((key.clone(), value.clone()?)))
            .collect()
    }

    /// The Kafka topic id of this state under `name` (see [`topic_id`]).
    pub fn topic_id(&self, name: &str) -> [u8; 16] {
        topic_id(name, self.deleted)
    }

    /// What the broker sees of the topic, if alive.
    pub fn view(&self, name: &str) -> Option<TopicView> {
        Some(TopicView {
            topic_id: self.topic_id(name),
            partitions: self.partition_count()?,
            configs: self.effective_configs(),
        })
    }

    /// The newest stamp in the state, which a local write must exceed.
    pub fn max_stamp(&self) -> Option<CatalogStamp> {
        let stamps = [
            self.deleted,
            self.creates.last().copied(),
            self.partitions.last().map(|&(stamp, _)| stamp),
            self.configs.values().map(|(stamp, _)| *stamp).max(),
        ];
        stamps.into_iter().flatten().max()
    }

    /// Refuses a local write whose stamp does not exceed everything already known.
    fn check_fresh(&self, stamp: CatalogStamp) -> Result<(), CatalogError> {
        match self.max_stamp() {
            Some(newest) if stamp <= newest => Err(CatalogError::StaleStamp { stamp, newest }),
            _ => Ok(()),
        }
    }

    /// Folds `other` in (union, max delete, per-key last writer) and returns whether `self`
    /// changed. Commutative, associative and idempotent.
    pub fn merge(&mut self, other: &TopicState) -> bool {
        let before = self.clone();
        self.creates.extend(other.creates.iter().copied());
        self.deleted = self.deleted.max(other.deleted);
        self.partitions.extend(other.partitions.iter().copied());
        for (key, register) in &other.configs {
            put_register(&mut self.configs, key, register.clone());
        }
        self.normalize();
        *self != before
    }

    /// Restores the canonical form: prune at or below the delete, drop dominated partition
    /// entries. A function of the union of all writes seen, which is what makes merge a join.
    fn normalize(&mut self) {
        if let Some(deleted) = self.deleted {
            self.creates.retain(|stamp| *stamp > deleted);
            self.partitions.retain(|(stamp, _)| *stamp > deleted);
            self.configs.retain(|_, (stamp, _)| *stamp > deleted);
        }
        // Walking from the newest stamp down, keep an entry only if its count beats every newer
        // one (an entry with the same stamp and a higher count comes first, so it wins too).
        let mut best: Option<u32> = None;
        let mut kept = BTreeSet::new();
        for &(stamp, count) in self.partitions.iter().rev() {
            if best.is_none_or(|best| count > best) {
                best = Some(count);
                kept.insert((stamp, count));
            }
        }
        self.partitions = kept;
    }

    /// Whether the state holds nothing (never the case for a state reachable by operations).
    fn is_empty(&self) -> bool {
        self.creates.is_empty() && self.deleted.is_none()
    }
}

/// Keeps the higher of the current register for `key` and `register` (ties on the stamp, which
/// real writes never produce, go to the greater value so merge stays commutative).
fn put_register(
    configs: &mut BTreeMap<String, ConfigRegister>,
    key: &str,
    register: ConfigRegister,
) {
    match configs.get_mut(key) {
        Some(current) => {
            if register > *current {
                *current = register;
            }
        }
        None => {
            configs.insert(key.to_owned(), register);
        }
    }
}

/// Outcome of [`TopicCatalog::merge_topic`]: whether the stored state must be rewritten, and what
/// the broker must do.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TopicMerge {
    /// The topic's state changed (persist it), even if nothing visible did.
    pub state_changed: bool,
    /// Visible changes, as listed for [`CatalogChange`].
    pub changes: Vec<CatalogChange>,
}

/// The whole replicated catalog: every topic name ever created, dead ones as tombstones.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TopicCatalog {
    topics: BTreeMap<String, TopicState>,
}

impl TopicCatalog {
    /// An empty catalog.
    pub fn new() -> TopicCatalog {
        TopicCatalog::default()
    }

    /// CreateTopics accepted locally: `partitions` partitions and the given configs, stamped `stamp`.
    pub fn create(
        &mut self,
        name: &str,
        partitions: u32,
        configs: BTreeMap<String, String>,
        stamp: CatalogStamp,
    ) -> Result<(), CatalogError> {
        check_len("topic name", name, MAX_TOPIC_NAME_LEN)?;
        if partitions == 0 || partitions > MAX_PARTITIONS {
            return Err(CatalogError::InvalidPartitions {
                requested: partitions,
                current: 0,
            });
        }
        for (key, value) in &configs {
            check_len("config key", key, MAX_CONFIG_KEY_LEN)?;
            check_len("config value", value, MAX_CONFIG_VALUE_LEN)?;
        }
        if let Some(state) = self.topics.get(name) {
            if state.is_alive() {
                return Err(CatalogError::AlreadyExists(name.to_owned()));
            }
            state.check_fresh(stamp)?;
        }
        let state = self.topics.entry(name.to_owned()).or_default();
        state.creates.insert(stamp);
        state.partitions.insert((stamp, partitions));
        for (key, value) in configs {
            state.configs.insert(key, (stamp, Some(value)));
        }
        state.normalize();
        Ok(())
    }

    /// DeleteTopics accepted locally: the topic dies everywhere once this is merged, unless a
    /// create stamped later arrives.
    pub fn delete(&mut self, name: &str, stamp: CatalogStamp) -> Result<(), CatalogError> {
        let state = self.alive_state_mut(name, stamp)?;
        state.deleted = Some(stamp);
        state.normalize();
        Ok(())
    }

    /// CreatePartitions accepted locally: raises the partition count to `total`.
    pub fn add_partitions(
        &mut self,
        name: &str,
        total: u32,
        stamp: CatalogStamp,
    ) -> Result<(), CatalogError> {
        let state = self.alive_state_mut(name, stamp)?;
        let current = state.partition_count().unwrap_or(0);
        if total <= current || total > MAX_PARTITIONS {
            return Err(CatalogError::InvalidPartitions {
                requested: total,
                current,
            });
        }
        state.partitions.insert((stamp, total));
        state.normalize();
        Ok(())
    }

    /// AlterConfigs accepted locally: sets (`Some`) or resets (`None`) each key, all under one stamp.
    pub fn alter_configs(
        &mut self,
        name: &str,
        changes: BTreeMap<String, Option<String>>,
        stamp: CatalogStamp,
    ) -> Result<(), CatalogError> {
        for (key, value) in &changes {
            check_len("config key", key, MAX_CONFIG_KEY_LEN)?;
            if let Some(value) = value {
                check_len("config value", value, MAX_CONFIG_VALUE_LEN)?;
            }
        }
        let state = self.alive_state_mut(name, stamp)?;
        for (key, value) in changes {
            state.configs.insert(key, (stamp, value));
        }
        Ok(())
    }

    /// One-key [`TopicCatalog::alter_configs`].
    pub fn set_config(
        &mut self,
        name: &str,
        key: &str,
        value: Option<String>,
        stamp: CatalogStamp,
    ) -> Result<(), CatalogError> {
        self.alter_configs(name, BTreeMap::from([(key.to_owned(), value)]), stamp)
    }

    fn alive_state_mut(
        &mut self,
        name: &str,
        stamp: CatalogStamp,
    ) -> Result<&mut TopicState, CatalogError> {
        let state = self
            .topics
            .get_mut(name)
            .filter(|state| state.is_alive())
            .ok_or_else(|| CatalogError::UnknownTopic(name.to_owned()))?;
        state.check_fresh(stamp)?;
        Ok(state)
    }

    /// Folds in another region's catalog; returns what changed here, in name order.
    pub fn merge(&mut self, other: &TopicCatalog) -> Vec<CatalogChange> {
        let mut changes = Vec::new();
        for (name, state) in &other.topics {
            changes.extend(self.merge_topic(name, state).changes);
        }
        changes
    }

    /// Folds in another region's state of one topic (also how a catalog is loaded topic by
    /// topic from storage into an empty one).
    pub fn merge_topic(&mut self, name: &str, other: &TopicState) -> TopicMerge {
        if other.is_empty() {
            return TopicMerge::default();
        }
        let Some(state) = self.topics.get_mut(name) else {
            self.topics.insert(name.to_owned(), other.clone());
            let changes = other
                .view(name)
                .map(|view| CatalogChange::Created {
                    name: name.to_owned(),
                    partitions: view.partitions,
                })
                .into_iter()
                .collect();
            return TopicMerge {
                state_changed: true,
                changes,
            };
        };
        let before = state.view(name);
        if !state.merge(other) {
            return TopicMerge::default();
        }
        TopicMerge {
            state_changed: true,
            changes: diff(name, before, state.view(name)),
        }
    }

    /// Puts `name`'s state back to `previous` (`None`: unknown) after a change this region could
    /// not carry out (its partitions would not open, or would not be stored). Not a CRDT
    /// operation: it is only sound for a state no peer has read, which holds while the caller
    /// keeps the catalog locked from the change to the restore.
    pub fn restore(&mut self, name: &str, previous: Option<TopicState>) {
        match previous {
            Some(state) => self.topics.insert(name.to_owned(), state),
            None => self.topics.remove(name),
        };
    }

    /// The alive topics in name order, with what the broker needs of each.
    pub fn alive(&self) -> impl Iterator<Item = (&str, TopicView)> + '_ {
        self.topics
            .iter()
            .filter_map(|(name, state)| Some((name.as_str(), state.view(name)?)))
    }

    /// The view of `name` if it is alive.
    pub fn get(&self, name: &str) -> Option<TopicView> {
        self.topics.get(name)?.view(name)
    }

    /// The replicated state of `name`, alive or tombstone, e.g. to persist it.
    pub fn topic(&self, name: &str) -> Option<&TopicState> {
        self.topics.get(name)
    }

    /// Every topic state, tombstones included, in name order.
    pub fn topics(&self) -> impl Iterator<Item = (&str, &TopicState)> + '_ {
        self.topics
            .iter()
            .map(|(name, state)| (name.as_str(), state))
    }

    /// The newest stamp anywhere in the catalog: the region's clock must observe it so its next
    /// local write is accepted.
    pub fn max_stamp(&self) -> Option<CatalogStamp> {
        self.topics.values().filter_map(TopicState::max_stamp).max()
    }

    /// FNV-1a 64 of [`TopicCatalog::encode`]: equal digests mean (with overwhelming likelihood)
    /// equal catalogs, so regions compare digests before exchanging states.
    pub fn digest(&self) -> u64 {
        fnv1a_64(&self.encode())
    }
}

/// The changes between the views of one topic before and after a merge.
fn diff(name: &str, before: Option<TopicView>, after: Option<TopicView>) -> Vec<CatalogChange> {
    let name = name.to_owned();
    match (before, after) {
        (None, None) => Vec::new(),
        (None, Some(after)) => vec![CatalogChange::Created {
            name,
            partitions: after.partitions,
        }],
        (Some(_), None) => vec![CatalogChange::Deleted { name }],
        (Some(before), Some(after)) if before.topic_id != after.topic_id => {
            vec![CatalogChange::Recreated {
                name,
                partitions: after.partitions,
            }]
        }
        (Some(before), Some(after)) => {
            let mut changes = Vec::new();
            if after.partitions != before.partitions {
                changes.push(CatalogChange::PartitionsAdded {
                    name: name.clone(),
                    total: after.partitions,
                });
            }
            if after.configs != before.configs {
                changes.push(CatalogChange::ConfigsChanged { name });
            }
            changes
        }
    }
}

/// The Kafka topic id of incarnation `deleted` of `name`: FNV-1a 128 over a domain tag, the
/// name and the delete stamp, shaped as an RFC 9562 version-8 UUID.
///
/// Every region computes the same id; a re-created topic (new delete stamp) gets a new one. The
/// version bits make it never the nil UUID nor Kafka's reserved metadata topic id `0…01`, and
/// the first byte is adjusted so Kafka's base64 form never starts with `-` (Kafka avoids those).
/// Changing this function changes every topic's id: never do it without a migration.
pub fn topic_id(name: &str, deleted: Option<CatalogStamp>) -> [u8; 16] {
    let mut input = b"causeway.topic_id.v1\0".to_vec();
    put_str(&mut input, name);
    match deleted {
        None => input.push(0),
        Some(stamp) => {
            input.push(1);
            input.extend_from_slice(&stamp.hlc.to_be_bytes());
            input.extend_from_slice(&stamp.region.to_be_bytes());
        }
    }
    let mut id = fnv1a_128(&input).to_be_bytes();
    id[6] = (id[6] & 0x0f) | 0x80;
    id[8] = (id[8] & 0x3f) | 0x80;
    if id[0] >> 2 == 62 {
        id[0] &= 0x7f;
    }
    id
}

fn check_len(what: &'static str, value: &str, max: usize) -> Result<(), CatalogError> {
    if value.len() > max {
        return Err(CatalogError::TooLong {
            what,
            len: value.len(),
            max,
        });
    }
    Ok(())
}

/// FNV-1a, 64-bit: a well-known, dependency-free hash, stable across versions and platforms.
pub(crate) fn fnv1a_64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// FNV-1a, 128-bit (same family as [`fnv1a_64`]), for the 16-byte topic id.
fn fnv1a_128(bytes: &[u8]) -> u128 {
    bytes
        .iter()
        .fold(0x6c62_272e_07bb_0142_62b8_2175_6295_c58d, |hash, &byte| {
            (hash ^ u128::from(byte)).wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b)
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
