//! The state tree of a row: one [`Node`] per object path, each holding every kind of write
//! that landed on that path. How the kinds combine is specified in the module docs of
//! [`crate::crdt`]; this file implements it in three steps:
//!
//! - **record** a write (`set_leaf`, `patch`, `descend`, `increment`, `add`, `remove`): each
//!   is a join with the stored state, so a late or repeated write lands where it belongs;
//! - **prune** what can never show again (below a register, covered by a remove, ...), so equal
//!   states are equal trees and encode to equal bytes;
//! - **materialize** the JSON value by the rules of the module docs.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Number, Value};

use super::number::Sum;
use super::ops::Content;
use super::stamp::{remove_covers, remove_implies, Observed, Stamp};

/// What a register holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Leaf {
    /// The path (or, at the root, the row) was removed: `null` in a patch, or a tombstone.
    Removed,
    /// The path became an empty object (a `put` of an object); its children carry the fields.
    Object,
    /// A scalar or an array, atomic.
    Json(Value),
    /// Opaque bytes; only ever at the root.
    Bytes(#[serde(with = "base64_bytes")] Vec<u8>),
}

impl Leaf {
    /// A total order between leaves written with the same stamp, which only a misbehaving
    /// producer of stamps can cause, so that the join stays deterministic even then.
    fn tie_order(&self, other: &Leaf) -> Ordering {
        fn rank(leaf: &Leaf) -> u8 {
            match leaf {
                Leaf::Removed => 0,
                Leaf::Object => 1,
                Leaf::Json(_) => 2,
                Leaf::Bytes(_) => 3,
            }
        }
        match (self, other) {
            (Leaf::Json(a), Leaf::Json(b)) => a.to_string().cmp(&b.to_string()),
            (Leaf::Bytes(a), Leaf::Bytes(b)) => a.cmp(b),
            _ => rank(self).cmp(&rank(other)),
        }
    }
}

/// One element of an add-wins set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Element {
    /// The element itself.
    #[serde(rename = "v")]
    pub(crate) value: Value,
    /// Stamps of the adds of this element not yet removed.
    #[serde(rename = "a", default, skip_serializing_if = "BTreeSet::is_empty")]
    pub(crate) adds: BTreeSet<Stamp>,
    /// Removes of this element and what each had seen; only those not implied by a later one.
    #[serde(
        rename = "x",
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        with = "pairs"
    )]
    pub(crate) removes: BTreeMap<Stamp, Observed>,
}

impl Element {
    fn new(value: Value) -> Element {
        Element {
            value,
            adds: BTreeSet::new(),
            removes: BTreeMap::new(),
        }
    }

    fn join(&mut self, other: &Element) {
        self.adds.extend(other.adds.iter().copied());
        for (stamp, observed) in &other.removes {
            self.removes
                .entry(*stamp)
                .and_modify(|mine| mine.join(observed))
                .or_insert_with(|| observed.clone());
        }
    }

    /// Whether some remove had seen the add stamped `add` (`remove_covers`; requiring the
    /// remove to be stamped above keeps inconsistent metadata from making the prune depend on
    /// the order writes arrived in).
    fn covered(&self, add: &Stamp) -> bool {
        self.removes
            .range(add..)
            .any(|(remove, observed)| remove_covers(remove, observed, add))
    }

    /// Drops removes implied by a later remove that saw at least as much, then adds that some
    /// remove saw: neither can change the set again.
    fn normalize(&mut self) {
        let implied: Vec<Stamp> = self
            .removes
            .iter()
            .filter(|(stamp, observed)| {
                self.removes
                    .range(**stamp..)
                    .any(|(later, seen)| remove_implies(later, seen, stamp, observed))
            })
            .map(|(stamp, _)| *stamp)
            .collect();
        for stamp in implied {
            self.removes.remove(&stamp);
        }
        let covered: Vec<Stamp> = self
            .adds
            .iter()
            .filter(|add| self.covered(add))
            .copied()
            .collect();
        for add in covered {
            self.adds.remove(&add);
        }
    }

    fn max_stamp(&self) -> Option<Stamp> {
        let add = self.adds.last().copied();
        let remove = self.removes.keys().next_back().copied();
        add.max(remove)
    }
}

/// All writes that landed on one path of a row.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Node {
    /// Last-writer-wins register: the highest-stamped put, patch value or removal of this path.
    #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
    pub(crate) register: Option<(Stamp, Leaf)>,
    /// Highest stamp of a write below this path, which needs it to be an object.
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    pub(crate) object: Option<Stamp>,
    /// Counter increments, one per `incr` record, by stamp.
    #[serde(
        rename = "n",
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        with = "pairs"
    )]
    pub(crate) counter: BTreeMap<Stamp, Number>,
    /// Highest stamp of an `add` or `remove` at this path.
    #[serde(rename = "l", default, skip_serializing_if = "Option::is_none")]
    pub(crate) set_latest: Option<Stamp>,
    /// Set elements by canonical JSON text.
    #[serde(
        rename = "s",
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        with = "elements"
    )]
    pub(crate) set: BTreeMap<String, Element>,
    /// Object members.
    #[serde(rename = "c", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) children: BTreeMap<String, Node>,
}

/// Which kind of write decides what a path shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Object,
    Counter,
    Set,
}

/// `floor` as an inclusive lower bound: `None` lets everything through.
fn at_or_above(stamp: &Stamp, floor: Option<Stamp>) -> bool {
    floor.is_none_or(|floor| *stamp >= floor)
}

impl Node {
    /// Nothing stored: the node can be dropped from its parent.
    pub(crate) fn is_empty(&self) -> bool {
        self.register.is_none()
            && self.object.is_none()
            && self.counter.is_empty()
            && self.set_latest.is_none()
            && self.set.is_empty()
            && self.children.is_empty()
    }

    /// Joins a register write: the higher stamp wins.
    pub(crate) fn set_leaf(&mut self, stamp: Stamp, leaf: Leaf) {
        let replace = match &self.register {
            None => true,
            Some((current, held)) => {
                stamp > *current || (stamp == *current && leaf.tie_order(held) == Ordering::Greater)
            }
        };
        if replace {
            self.register = Some((stamp, leaf));
        }
    }

    /// A `put` of `value` at this path: objects become an `Object` register plus children, all
    /// stamped alike, so that the put's own fields sit exactly on its watermark.
    pub(crate) fn put(&mut self, stamp: Stamp, value: &Value) {
        match value {
            Value::Object(map) => {
                self.set_leaf(stamp, Leaf::Object);
                for (key, child) in map {
                    self.children
                        .entry(key.clone())
                        .or_default()
                        .put(stamp, child);
                }
            }
            other => self.set_leaf(stamp, Leaf::Json(other.clone())),
        }
    }

    fn mark_object(&mut self, stamp: Stamp) {
        self.object = self.object.max(Some(stamp));
    }

    /// An RFC 7386 merge patch applied at this path.
    pub(crate) fn patch(&mut self, stamp: Stamp, patch: &Map<String, Value>) {
        self.mark_object(stamp);
        for (key, value) in patch {
            let child = self.children.entry(key.clone()).or_default();
            match value {
                Value::Null => child.set_leaf(stamp, Leaf::Removed),
                Value::Object(inner) => child.patch(stamp, inner),
                other => child.set_leaf(stamp, Leaf::Json(other.clone())),
            }
        }
    }

    /// The node at `path`, marking every node on the way as needing to be an object.
    pub(crate) fn descend(&mut self, stamp: Stamp, path: &[String]) -> &mut Node {
        let mut node = self;
        for key in path {
            node.mark_object(stamp);
            node = node.children.entry(key.clone()).or_default();
        }
        node
    }

    /// Records the increment of one `incr` record.
    pub(crate) fn increment(&mut self, stamp: Stamp, amount: &Number) {
        join_increment(&mut self.counter, stamp, amount);
    }

    /// Records an `add` of `elements`.
    pub(crate) fn add(&mut self, stamp: Stamp, elements: &[Value]) {
        self.set_latest = self.set_latest.max(Some(stamp));
        for value in elements {
            self.element(value).adds.insert(stamp);
        }
    }

    /// Records a `remove` of `elements` that had seen `observed`.
    pub(crate) fn remove(&mut self, stamp: Stamp, observed: &Observed, elements: &[Value]) {
        self.set_latest = self.set_latest.max(Some(stamp));
        for value in elements {
            self.element(value)
                .removes
                .entry(stamp)
                .and_modify(|mine| mine.join(observed))
                .or_insert_with(|| observed.clone());
        }
    }

    fn element(&mut self, value: &Value) -> &mut Element {
        self.set
            .entry(value.to_string())
            .or_insert_with(|| Element::new(value.clone()))
    }

    /// The union of two states (to be followed by [`Node::prune`]).
    pub(crate) fn join(&mut self, other: &Node) {
        if let Some((stamp, leaf)) = &other.register {
            self.set_leaf(*stamp, leaf.clone());
        }
        self.object = self.object.max(other.object);
        for (stamp, amount) in &other.counter {
            join_increment(&mut self.counter, *stamp, amount);
        }
        self.set_latest = self.set_latest.max(other.set_latest);
        for (key, element) in &other.set {
            match self.set.get_mut(key) {
                Some(mine) => mine.join(element),
                None => {
                    self.set.insert(key.clone(), element.clone());
                }
            }
        }
        for (key, child) in &other.children {
            match self.children.get_mut(key) {
                Some(mine) => mine.join(child),
                None => {
                    self.children.insert(key.clone(), child.clone());
                }
            }
        }
    }

    /// Forgets everything that can no longer show, given `inherited`, the highest register
    /// stamp of the ancestors (a put or a clobbering patch above this path). Afterwards the tree
    /// depends only on which writes were applied, not on their order.
    pub(crate) fn prune(&mut self, inherited: Option<Stamp>) {
        if let Some((stamp, _)) = &self.register {
            if !at_or_above(stamp, inherited) {
                self.register = None;
            }
        }
        let floor = inherited.max(self.register.as_ref().map(|(stamp, _)| *stamp));
        if let Some(floor) = floor {
            self.object = self.object.filter(|stamp| *stamp >= floor);
            self.set_latest = self.set_latest.filter(|stamp| *stamp >= floor);
            self.counter = self.counter.split_off(&floor);
            for element in self.set.values_mut() {
                element.adds = element.adds.split_off(&floor);
                element.removes = element.removes.split_off(&floor);
            }
        }
        for element in self.set.values_mut() {
            element.normalize();
        }
        self.set
            .retain(|_, element| !element.adds.is_empty() || !element.removes.is_empty());
        for child in self.children.values_mut() {
            child.prune(floor);
        }
        self.children.retain(|_, child| !child.is_empty());
    }

    /// The highest stamp stored here or below.
    pub(crate) fn max_stamp(&self) -> Option<Stamp> {
        let mut max = self.register.as_ref().map(|(stamp, _)| *stamp);
        max = max.max(self.object);
        max = max.max(self.counter.keys().next_back().copied());
        max = max.max(self.set_latest);
        for element in self.set.values() {
            max = max.max(element.max_stamp());
        }
        for child in self.children.values() {
            max = max.max(child.max_stamp());
        }
        max
    }

    /// Whether a register holding bytes sits anywhere below this node (never produced by an
    /// operation; refused when decoding a stored row).
    pub(crate) fn has_bytes_below(&self) -> bool {
        self.children.values().any(|child| {
            matches!(child.register, Some((_, Leaf::Bytes(_)))) || child.has_bytes_below()
        })
    }

    /// What this path shows, given the highest register stamp of its ancestors.
    pub(crate) fn materialize(&self, inherited: Option<Stamp>) -> Option<Content> {
        let register = self
            .register
            .as_ref()
            .filter(|(stamp, _)| at_or_above(stamp, inherited));
        let floor = inherited.max(register.map(|(stamp, _)| *stamp));
        let live = |stamp: &Stamp| at_or_above(stamp, floor);
        let kinds = [
            (self.object.filter(live), Kind::Object),
            (
                self.counter.keys().next_back().copied().filter(live),
                Kind::Counter,
            ),
            (self.set_latest.filter(live), Kind::Set),
        ];
        let winner = kinds
            .iter()
            .filter_map(|(stamp, kind)| stamp.map(|stamp| (stamp, *kind)))
            .max();
        let Some((_, kind)) = winner else {
            return match register.map(|(_, leaf)| leaf) {
                None | Some(Leaf::Removed) => None,
                Some(Leaf::Object) => Some(Content::Json(Value::Object(self.members(floor)))),
                Some(Leaf::Json(value)) => Some(Content::Json(value.clone())),
                Some(Leaf::Bytes(bytes)) => Some(Content::Bytes(bytes.clone())),
            };
        };
        // The last change of kind: the latest write of any other kind, or the register.
        let others = kinds
            .iter()
            .filter(|(_, other)| *other != kind)
            .filter_map(|(stamp, _)| *stamp)
            .max();
        let kind_floor = floor.max(others);
        // The register is the starting value only if no other kind intervened.
        let base = match others {
            None => register,
            Some(_) => None,
        };
        let value = match kind {
            Kind::Object => Value::Object(self.members(kind_floor)),
            Kind::Counter => {
                let start = match base {
                    Some((_, Leaf::Json(Value::Number(number)))) => Sum::of(number),
                    _ => Sum::Int(0),
                };
                let sum = self
                    .counter
                    .iter()
                    .filter(|(stamp, _)| at_or_above(stamp, kind_floor))
                    .fold(start, |sum, (_, amount)| sum.add(amount));
                Value::Number(sum.to_number())
            }
            Kind::Set => Value::Array(self.elements(base, kind_floor)),
        };
        Some(Content::Json(value))
    }

    fn members(&self, floor: Option<Stamp>) -> Map<String, Value> {
        let mut members = Map::new();
        for (key, child) in &self.children {
            // Bytes never sit below the root (decoding refuses them), so only JSON shows.
            if let Some(Content::Json(value)) = child.materialize(floor) {
                members.insert(key.clone(), value);
            }
        }
        members
    }

    /// Live elements in canonical order. An array register the set started from counts as
    /// adds stamped with the register.
    fn elements(&self, base: Option<&(Stamp, Leaf)>, floor: Option<Stamp>) -> Vec<Value> {
        let mut live: BTreeMap<String, &Value> = BTreeMap::new();
        if let Some((stamp, Leaf::Json(Value::Array(items)))) = base {
            for item in items {
                let key = item.to_string();
                let removed = self
                    .set
                    .get(&key)
                    .is_some_and(|element| element.covered(stamp));
                if !removed {
                    live.insert(key, item);
                }
            }
        }
        for (key, element) in &self.set {
            let added = element
                .adds
                .iter()
                .any(|add| at_or_above(add, floor) && !element.covered(add));
            if added {
                live.insert(key.clone(), &element.value);
            }
        }
        live.into_values().cloned().collect()
    }
}

fn join_increment(counter: &mut BTreeMap<Stamp, Number>, stamp: Stamp, amount: &Number) {
    match counter.get_mut(&stamp) {
        // Two amounts under one stamp only come from a misbehaving stamp source; keep the
        // larger text so the join stays deterministic.
        Some(mine) => {
            if amount.to_string() > mine.to_string() {
                *mine = amount.clone();
            }
        }
        None => {
            counter.insert(stamp, amount.clone());
        }
    }
}

/// A map encoded as an array of `[key, value]` pairs (JSON object keys must be strings).
mod pairs {
    use super::*;

    pub(crate) fn serialize<K: Serialize, V: Serialize, S: Serializer>(
        map: &BTreeMap<K, V>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(map.iter())
    }

    pub(crate) fn deserialize<'de, K, V, D>(deserializer: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        let pairs: Vec<(K, V)> = Vec::deserialize(deserializer)?;
        Ok(pairs.into_iter().collect())
    }
}

/// Set elements encoded as an array; the map key (canonical text) is recomputed on decoding.
mod elements {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(
        set: &BTreeMap<String, Element>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(set.values())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<String, Element>, D::Error> {
        let elements: Vec<Element> = Vec::deserialize(deserializer)?;
        let mut set: BTreeMap<String, Element> = BTreeMap::new();
        for element in elements {
            match set.get_mut(&element.value.to_string()) {
                Some(mine) => mine.join(&element),
                None => {
                    set.insert(element.value.to_string(), element);
                }
            }
        }
        Ok(set)
    }
}

/// Bytes as a base64 string.
mod base64_bytes {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        STANDARD.decode(text).map_err(D::Error::custom)
    }
}
