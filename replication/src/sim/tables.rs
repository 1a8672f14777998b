//! Table writes for the simulator: every batch payload stands for one record of a table topic,
//! and at the end of a run the rows materialized from each region's log must be byte-identical.
//!
//! [`table_record`] derives the record (key, `causeway.op` and `causeway.path` headers, value)
//! from the payload alone, so every region sees the same write for the same batch, and
//! [`table_write`] decodes it with the same [`decode_op`] the broker's materializer uses. The
//! writes are concentrated on [`KEYS`] keys and a few shared paths so that puts, tombstones,
//! patches, counters and sets keep meeting on the same rows and paths.
//!
//! [`Tables`] applies batches the way `broker/src/tables/materializer.rs` does:
//! `Row::apply(&op, Stamp::of_record(&meta, 0, index), &meta.deps)`, with one record (index 0) per
//! simulated batch.

use serde_json::{json, Map, Value};

use super::{Payload, SimRng};
use crate::crdt::{decode_op, MergeMode, Op, OpError, Row, Stamp};
use crate::delivery::Batch;

/// Number of distinct table keys; few, so that writes to one key are often concurrent.
pub const KEYS: usize = 5;

/// Salt mixed into the payload so table writes do not correlate with other uses of the number.
const SALT: u64 = 0x7AB1_E5C0_FFEE_0042;

/// Set elements: strings, a number and an object, identified by their canonical JSON text.
const ELEMENTS: [&str; 5] = ["\"a\"", "\"b\"", "\"c\"", "7", "{\"x\":1}"];

/// Paths that `add` / `remove` act on: mostly `tags`, which puts and patches also write, and now
/// and then the counter path, so that kinds meet on one path.
const SET_PATHS: [&str; 5] = ["tags", "tags", "/tags", "/meta/set", "count"];

/// One record of a table topic, as a producer would send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRecord {
    /// The key, in `0..KEYS`.
    pub key: usize,
    /// The `causeway.op` header (`None` is a put).
    pub op: Option<&'static str>,
    /// The `causeway.path` header.
    pub path: Option<String>,
    /// The value; `None` is a tombstone.
    pub value: Option<Vec<u8>>,
}

/// The table record that batch `payload` carries. Pure: the same payload always gives the same
/// record. Over many payloads every kind appears: put (JSON objects, scalars, arrays and now and
/// then a non-JSON value), tombstone, patch (setting and removing paths), incr (integers and a
/// few fractions), add and remove.
pub fn table_record(payload: Payload) -> TableRecord {
    let mut rng = SimRng::new(payload.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ SALT);
    let key = rng.below(KEYS as u64) as usize;
    let small = |rng: &mut SimRng| rng.range(0, 9) as i64 - 3;
    let element = |rng: &mut SimRng| ELEMENTS[rng.below(ELEMENTS.len() as u64) as usize];
    let elements = |rng: &mut SimRng| {
        let count = rng.range(1, 2);
        let items: Vec<&str> = (0..count).map(|_| element(rng)).collect();
        format!("[{}]", items.join(","))
    };
    let (op, path, value) = match rng.below(100) {
        0..=14 => {
            let value = match rng.below(10) {
                0 => format!("raw-{payload}").into_bytes(),
                1 => json!(small(&mut rng)).to_string().into_bytes(),
                2 => json!(["p", payload]).to_string().into_bytes(),
                _ => {
                    let tags: Value = serde_json::from_str(&elements(&mut rng)).unwrap_or_default();
                    json!({
                        "name": format!("p{payload}"),
                        "n": small(&mut rng),
                        "tags": tags,
                        "meta": {"a": small(&mut rng)},
                    })
                    .to_string()
                    .into_bytes()
                }
            };
            let op = if rng.chance(500_000) {
                Some("put")
            } else {
                None
            };
            (op, None, Some(value))
        }
        15..=22 => {
            // A tombstone deletes whatever the header says.
            let op = [None, Some("put"), Some("incr")][rng.below(3) as usize];
            (op, None, None)
        }
        23..=44 => {
            let mut patch = Map::new();
            for _ in 0..rng.range(1, 3) {
                let (name, value) = match rng.below(6) {
                    0 => ("name", json!(format!("q{payload}"))),
                    1 => ("n", json!(small(&mut rng))),
                    2 => {
                        let a = if rng.chance(300_000) {
                            Value::Null
                        } else {
                            json!(small(&mut rng))
                        };
                        ("meta", json!({"a": a, "b": format!("b{payload}")}))
                    }
                    3 => (
                        "tags",
                        if rng.chance(400_000) {
                            Value::Null
                        } else {
                            serde_json::from_str(&elements(&mut rng)).unwrap_or_default()
                        },
                    ),
                    4 => (
                        "count",
                        if rng.chance(500_000) {
                            Value::Null
                        } else {
                            json!(small(&mut rng))
                        },
                    ),
                    _ => ("meta", Value::Null),
                };
                patch.insert(name.to_owned(), value);
            }
            let value = Value::Object(patch).to_string().into_bytes();
            (Some("patch"), None, Some(value))
        }
        45..=64 => {
            let amount = if rng.chance(100_000) {
                json!(0.25)
            } else {
                json!(small(&mut rng))
            };
            let value = match rng.below(4) {
                0 => json!({"meta": {"hits": amount}}),
                1 => json!({"count": amount, "meta": {"hits": 1}}),
                _ => json!({ "count": amount }),
            };
            (Some("incr"), None, Some(value.to_string().into_bytes()))
        }
        draw => {
            let op = if draw < 85 { "add" } else { "remove" };
            let path = SET_PATHS[rng.below(SET_PATHS.len() as u64) as usize];
            let value = elements(&mut rng).into_bytes();
            (Some(op), Some(path.to_owned()), Some(value))
        }
    };
    TableRecord {
        key,
        op,
        path,
        value,
    }
}

/// The key and decoded operation of batch `payload`'s record, through [`decode_op`] as the
/// materializer decodes it. An error means the generator produced a record the table refuses,
/// which would leave that write untested, so the simulator reports it as a violation.
pub fn table_write(payload: Payload) -> Result<(usize, Op), OpError> {
    let record = table_record(payload);
    let op = decode_op(
        record.op.map(str::as_bytes),
        record.path.as_deref().map(str::as_bytes),
        record.value.as_deref(),
        MergeMode::Crdt,
    )?;
    Ok((record.key, op))
}

/// Counts of the table writes in a converged log and of the rows they left, so the test can
/// show that every kind of operation ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Puts of a JSON value.
    pub puts: u64,
    /// Puts of bytes that are not JSON.
    pub byte_puts: u64,
    /// Tombstones.
    pub deletes: u64,
    /// Merge patches.
    pub patches: u64,
    /// Counter increments.
    pub incrs: u64,
    /// Set adds.
    pub adds: u64,
    /// Set removes.
    pub removes: u64,
    /// Rows that show a value at the end.
    pub live_rows: u64,
    /// Rows written but deleted at the end.
    pub deleted_rows: u64,
}

impl TableStats {
    /// Counts one write.
    pub fn count(&mut self, op: &Op) {
        let counter = match op {
            Op::Put(crate::crdt::Content::Json(_)) => &mut self.puts,
            Op::Put(crate::crdt::Content::Bytes(_)) => &mut self.byte_puts,
            Op::Delete => &mut self.deletes,
            Op::Patch(_) => &mut self.patches,
            Op::Incr(_) => &mut self.incrs,
            Op::Add { .. } => &mut self.adds,
            Op::Remove { .. } => &mut self.removes,
        };
        *counter += 1;
    }

    /// Adds `other` to these totals.
    pub fn add(&mut self, other: &TableStats) {
        self.puts += other.puts;
        self.byte_puts += other.byte_puts;
        self.deletes += other.deletes;
        self.patches += other.patches;
        self.incrs += other.incrs;
        self.adds += other.adds;
        self.removes += other.removes;
        self.live_rows += other.live_rows;
        self.deleted_rows += other.deleted_rows;
    }
}

/// The rows of the simulated table, one per key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tables {
    rows: Vec<Row>,
}

impl Tables {
    /// A table no write has touched.
    pub fn new() -> Tables {
        Tables {
            rows: vec![Row::new(); KEYS],
        }
    }

    /// Applies the write `(key, op)` of `batch` as the materializer does: stamped with
    /// `Stamp::of_record(&meta, 0, 0)` (one record per simulated batch) and the batch's deps.
    pub fn apply(&mut self, batch: &Batch<Payload>, key: usize, op: &Op) {
        if let Some(row) = self.rows.get_mut(key) {
            row.apply(op, Stamp::of_record(&batch.meta, 0, 0), &batch.meta.deps);
        }
    }

    /// `self` becomes the merge of `self` and `other`, row by row.
    pub fn merge_from(&mut self, other: &Tables) {
        for (row, theirs) in self.rows.iter_mut().zip(&other.rows) {
            row.merge_from(theirs);
        }
    }

    /// Each row's stored encoding ([`Row::to_bytes`]), by key.
    pub fn to_bytes(&self) -> Vec<Vec<u8>> {
        self.rows.iter().map(Row::to_bytes).collect()
    }

    /// Records in `stats` how many rows show a value and how many are deleted.
    pub fn count_rows(&self, stats: &mut TableStats) {
        for row in &self.rows {
            if row.materialize().is_some() {
                stats.live_rows += 1;
            } else if !row.is_empty() {
                stats.deleted_rows += 1;
            }
        }
    }
}

/// The first key whose rows differ between `a` and `b`, with both encodings.
pub fn first_difference<'a>(
    a: &'a [Vec<u8>],
    b: &'a [Vec<u8>],
) -> Option<(usize, &'a [u8], &'a [u8])> {
    a.iter()
        .zip(b)
        .enumerate()
        .find(|(_, (x, y))| x != y)
        .map(|(key, (x, y))| (key, x.as_slice(), y.as_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_generated_record_decodes_and_every_kind_appears() {
        let mut stats = TableStats::default();
        let mut keys = [0u64; KEYS];
        for payload in 1..=2_000 {
            let (key, op) = table_write(payload).unwrap_or_else(|e| panic!("{payload}: {e}"));
            keys[key] += 1;
            stats.count(&op);
        }
        assert!(keys.iter().all(|&n| n > 0), "{keys:?}");
        let kinds = [
            stats.puts,
            stats.byte_puts,
            stats.deletes,
            stats.patches,
            stats.incrs,
            stats.adds,
            stats.removes,
        ];
        assert!(kinds.iter().all(|&n| n > 0), "{stats:?}");
    }

    #[test]
    fn a_payload_always_gives_the_same_record() {
        for payload in [1, 2, 77, u64::MAX] {
            assert_eq!(table_record(payload), table_record(payload));
        }
    }
}
