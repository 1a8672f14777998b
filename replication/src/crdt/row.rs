//! [`Row`]: the merged state of one table key, and its stored encoding.
//!
//! # Encoding (version 1)
//!
//! `to_bytes` writes compact JSON: `{"v":1,"root":NODE}` where a node is an object with only
//! the non-empty fields among
//! - `"r"`: register `[STAMP, LEAF]`, LEAF = `"removed"` | `"object"` | `{"json":VALUE}` |
//!   `{"bytes":"BASE64"}` (bytes only at the root);
//! - `"e"`: STAMP of the latest write below this path (which made it an object);
//! - `"n"`: counter increments `[[STAMP, NUMBER], ...]` sorted by stamp;
//! - `"l"`: STAMP of the latest `add` / `remove` here;
//! - `"s"`: set elements `[{"v":VALUE,"a":[STAMP...],"x":[[STAMP,[[REGION,SEQ,INDEX]...]]...]}]`
//!   (adds not removed; removes with what they had seen in their own partition) sorted by the
//!   element's JSON text;
//! - `"c"`: members `{"key": NODE}`;
//!
//! and STAMP = `[hlc, origin_region, origin_seq, index_in_batch]`, with the partition as a fifth
//! number when it is not 0 (rows written before stamps carried it read as partition 0). Every
//! collection is sorted
//! and the state is pruned to a canonical form before encoding, and serde_json writes object
//! keys in sorted order (the `preserve_order` feature is off; a test checks it), so two
//! regions holding the same state store byte-identical rows. `from_bytes` refuses other
//! versions and malformed input with [`RowDecodeError`]; the materializer then rebuilds the row
//! from the log.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::node::{Leaf, Node};
use super::ops::{Content, Op};
use super::stamp::{Observed, Stamp};

/// Version written by [`Row::to_bytes`].
pub const ROW_ENCODING_VERSION: u32 = 1;

/// The convergent state of one table row: every write to the key that can still show.
///
/// Apply writes in any order, any number of times, or merge rows built from any subsets of the
/// writes: the result, and its encoding, is the same.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Row {
    root: Node,
}

/// Why stored row bytes could not be read back.
#[derive(Debug, Error)]
pub enum RowDecodeError {
    /// Not the JSON structure of a row.
    #[error("row is malformed: {0}")]
    Malformed(#[from] serde_json::Error),
    /// Written by a different encoding version.
    #[error("row encoding version {found} is not {ROW_ENCODING_VERSION}")]
    Version {
        /// The version found.
        found: u32,
    },
    /// A bytes register below the root, which no operation produces.
    #[error("row holds bytes below its root")]
    BytesBelowRoot,
}

#[derive(Serialize)]
struct EncodeRow<'a> {
    v: u32,
    root: &'a Node,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecodeRow {
    v: u32,
    root: Node,
}

impl Row {
    /// A row no write has touched.
    pub fn new() -> Row {
        Row::default()
    }

    /// Applies one operation stamped `stamp`, from a batch whose dependency vector was `deps`
    /// (`CausalMeta::deps`: what its origin region had applied; only `remove` uses it, to know
    /// which adds it had seen). Applying the same operation again changes nothing.
    pub fn apply(&mut self, op: &Op, stamp: Stamp, deps: &[(u32, u64)]) {
        match op {
            Op::Put(Content::Json(value)) => self.root.put(stamp, value),
            Op::Put(Content::Bytes(bytes)) => self.root.set_leaf(stamp, Leaf::Bytes(bytes.clone())),
            Op::Delete => self.root.set_leaf(stamp, Leaf::Removed),
            Op::Patch(patch) => self.root.patch(stamp, patch),
            Op::Incr(increments) => {
                for (path, amount) in increments {
                    self.root.descend(stamp, path).increment(stamp, amount);
                }
            }
            Op::Add { path, elements } => self.root.descend(stamp, path).add(stamp, elements),
            Op::Remove { path, elements } => {
                let observed = Observed::of_write(&stamp, deps);
                self.root
                    .descend(stamp, path)
                    .remove(stamp, &observed, elements);
            }
        }
        self.root.prune(None);
    }

    /// The state holding every write of `a` and of `b` (the join of the two).
    pub fn merge(a: &Row, b: &Row) -> Row {
        let mut merged = a.clone();
        merged.merge_from(b);
        merged
    }

    /// In place: `self` becomes the merge of `self` and `other`.
    pub fn merge_from(&mut self, other: &Row) {
        self.root.join(&other.root);
        self.root.prune(None);
    }

    /// The value the table shows for this key; `None` when the row is deleted or was never
    /// written.
    pub fn materialize(&self) -> Option<Content> {
        self.root.materialize(None)
    }

    /// The highest stamp of any write the row still holds: the row's version for the HTTP API,
    /// and, for a deleted row, the stamp of the tombstone compaction ages out.
    pub fn version(&self) -> Option<Stamp> {
        self.root.max_stamp()
    }

    /// Whether the row holds nothing at all (not even a tombstone).
    pub fn is_empty(&self) -> bool {
        self.root.is_empty()
    }

    /// The canonical encoding (see the module docs): equal states give equal bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let row = EncodeRow {
            v: ROW_ENCODING_VERSION,
            root: &self.root,
        };
        // Every map key in a row is a string, so serializing to memory cannot fail.
        #[allow(clippy::expect_used)]
        serde_json::to_vec(&row).expect("a row always serializes")
    }

    /// Reads a row written by [`Row::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Row, RowDecodeError> {
        let decoded: DecodeRow = serde_json::from_slice(bytes)?;
        if decoded.v != ROW_ENCODING_VERSION {
            return Err(RowDecodeError::Version { found: decoded.v });
        }
        if decoded.root.has_bytes_below() {
            return Err(RowDecodeError::BytesBelowRoot);
        }
        let mut root = decoded.root;
        root.prune(None);
        Ok(Row { root })
    }
}
