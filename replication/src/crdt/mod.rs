//! Table rows as conflict-free replicated data (DESIGN.md section 5). Pure: no I/O, no clock.
//!
//! The materializer turns each record of a table topic into an [`Op`] with [`decode_op`],
//! stamps it with [`Stamp::of_record`] and calls [`Row::apply`]; rows travel between replicas
//! (or compaction) as [`Row::to_bytes`] and combine with [`Row::merge`]. Modules:
//! `stamp` (ordering and what a remove had seen), `ops` (record to operation), `node` (the
//! state tree), `number` (counter sums), `row` (the public row and its encoding).
//!
//! # Semantics
//!
//! The specification is sequential: **a row shows what replaying its writes one by one in
//! stamp order would give**, with the rules below. Stamp order extends causality, so a write
//! always wins over what its writer had seen, and truly concurrent writes are ordered by stamp
//! alone. The one exception is the set, which is add-wins (see `remove`). The state kept is the
//! smallest one that answers the replay whatever order the writes arrive in.
//!
//! - `put v`: the row becomes `v` (JSON, or bytes if the value is not JSON). A put is a
//!   **row-level watermark**: every write stamped below it, of any kind (fields, counter
//!   increments, set adds and removes), is forgotten, and one arriving late stays lost. Writes
//!   stamped above it apply on top of `v`.
//! - tombstone (null value): a put of nothing. The row shows as deleted until a write stamped
//!   above the tombstone arrives; such a write applies to an empty row (a patch or incr
//!   recreates an object holding only what it sets). A tombstone never removes a write stamped
//!   above it, even one that arrives first.
//! - `patch p` (RFC 7386): for every member of `p`: `null` removes the path, an object recurses
//!   (turning the path into an object first if it was not one), anything else (scalar, array)
//!   replaces the path atomically. Each path is a last-writer-wins register; a removal is a
//!   stamped register too, so an older concurrent set of the same path does not come back. A
//!   patch concurrent with a put survives iff it is stamped above the put, and then wins on
//!   every path it sets. A patch that is not an object replaces the whole row (a put).
//! - `incr {path: n}`: at each path, if it holds a number, add `n`; otherwise it becomes `n`.
//!   Each increment is kept once, keyed by its stamp (which names its region), so duplicate
//!   delivery counts once and any order gives the same sum; the counter's value is the number
//!   it started from plus the increments stamped after it, summed in stamp order. A put,
//!   tombstone or patch that sets the path (or an ancestor) **resets** it: increments stamped
//!   below that write no longer count, those stamped above do.
//! - `add [e...]` / `remove [e...]` at `causeway.path`: an add-wins observed-remove set. A
//!   remove deletes only the adds of its elements its writer had seen: those covered by its
//!   batch's dependency vector or earlier in its own batch, and stamped below it (which
//!   causality implies anyway; checking it keeps bad metadata from breaking convergence). An
//!   add concurrent with a remove survives whatever the stamps. Elements are any JSON values, identified by their canonical
//!   JSON text, and show sorted by it. If the path held an array, the set starts from its
//!   elements (as adds stamped with that array); otherwise it starts empty. Like counters, a
//!   put, tombstone or patch of the path or an ancestor stamped above an add or remove resets
//!   it: the set then holds only adds stamped above the reset.
//! - **Kinds meeting on one path.** In the replay, a write of another kind replaces the path:
//!   an incr on a string makes it a number, an add on a counter makes it a set, a write below
//!   a path makes it an object. So a path shows the kind of its latest write since its latest
//!   register write, and only the writes of that kind since the last change of kind count.
//! - Non-JSON values: `put` stores bytes as the row's one register; `patch`, `incr`, `add` and
//!   `remove` with a non-JSON value are refused with an [`OpError`]. With the topic config
//!   `causeway.merge=lww` ([`MergeMode::Lww`]) every record is a put of its raw bytes.
//! - Limits: operations nest at most [`DEPTH_MAX`] levels (a deeper put is kept as bytes).
//!
//! Two writes with equal stamps cannot happen (the stamp names the record); should a broken
//! stamp source produce them, the merge still converges by a fixed tie-break.
//!
//! Growth: a row keeps one entry per counter increment and per live set add, and a remove per
//! element until a later remove that saw more replaces it. Puts and resets free everything
//! below them. Folding increments below the causally stable cut is future work.

mod node;
mod number;
mod ops;
mod row;
mod stamp;

#[cfg(test)]
mod examples;
#[cfg(test)]
mod properties;

pub use ops::{
    decode_op, Content, MergeMode, Op, OpError, OpKind, DEPTH_MAX, MERGE_CONFIG, OP_HEADER,
    PATH_HEADER,
};
pub use row::{Row, RowDecodeError, ROW_ENCODING_VERSION};
pub use stamp::Stamp;
