//! Property tests: convergence (any order, duplicates, merges of subsets give byte-identical
//! rows), the merge laws, and the semantics against a sequential model replayed in stamp order.

use std::collections::BTreeMap;

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

use super::number::Sum;
use super::stamp::Observed;
use super::*;

/// One stamped record as the materializer sees it.
#[derive(Debug, Clone)]
struct Write {
    op: Op,
    stamp: Stamp,
    deps: Vec<(u32, u64)>,
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![Just("a"), Just("b"), Just("c")].prop_map(String::from)
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-3i64..4).prop_map(Value::from),
        prop_oneof![Just("x"), Just("y")].prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        vec(-1i64..2, 0..3).prop_map(|items| json!(items)),
    ]
}

/// An object nesting up to `depth` more levels; `nulls` allows null members (patch removals).
fn object(depth: u32, nulls: bool) -> BoxedStrategy<Map<String, Value>> {
    let leaf = if nulls {
        prop_oneof![3 => scalar(), 1 => Just(Value::Null)].boxed()
    } else {
        scalar().boxed()
    };
    let member = if depth == 0 {
        leaf
    } else {
        prop_oneof![3 => leaf, 1 => object(depth - 1, nulls).prop_map(Value::Object)].boxed()
    };
    btree_map(key(), member, 0..3)
        .prop_map(|members| members.into_iter().collect())
        .boxed()
}

fn decoded(op: &str, path: Option<&str>, value: &Value) -> Op {
    let bytes = value.to_string();
    match decode_op(
        Some(op.as_bytes()),
        path.map(str::as_bytes),
        Some(bytes.as_bytes()),
        MergeMode::Crdt,
    ) {
        Ok(op) => op,
        Err(error) => panic!("generated {op} {value} refused: {error}"),
    }
}

fn put() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => object(2, true).prop_map(|map| Op::Put(Content::Json(Value::Object(map)))),
        1 => scalar().prop_map(|value| Op::Put(Content::Json(value))),
        1 => vec(any::<u8>(), 0..4).prop_map(|bytes| Op::Put(Content::Bytes(bytes))),
    ]
}

fn incr() -> impl Strategy<Value = Op> {
    let amount = || (-3i64..4).prop_map(Value::from);
    let member = prop_oneof![
        2 => amount(),
        1 => btree_map(key(), amount(), 1..3)
            .prop_map(|members| Value::Object(members.into_iter().collect())),
    ];
    btree_map(key(), member, 1..3)
        .prop_map(|members| decoded("incr", None, &Value::Object(members.into_iter().collect())))
}

fn set_op() -> impl Strategy<Value = Op> {
    let element = prop_oneof![
        Just(json!("x")),
        Just(json!("y")),
        Just(json!(1)),
        Just(json!([1]))
    ];
    (any::<bool>(), vec(key(), 0..=2), vec(element, 0..3)).prop_map(|(add, path, elements)| {
        let pointer: String = path.iter().map(|key| format!("/{key}")).collect();
        let name = if add { "add" } else { "remove" };
        decoded(name, Some(&pointer), &Value::Array(elements))
    })
}

/// Any operation; `sets` includes `add` / `remove`.
fn op(sets: bool) -> BoxedStrategy<Op> {
    let others = prop_oneof![
        2 => put(),
        1 => Just(Op::Delete),
        3 => object(2, true).prop_map(Op::Patch),
        2 => incr(),
    ];
    if sets {
        prop_oneof![8 => others, 3 => set_op()].boxed()
    } else {
        others.boxed()
    }
}

/// Writes with distinct stamps (the index in batch is the position) in generation order, from
/// two partitions (a key spans partitions after CreatePartitions).
fn writes(sets: bool, len_max: usize) -> impl Strategy<Value = Vec<Write>> {
    let raw = (
        op(sets),
        0u64..10,
        0u32..3,
        0u32..2,
        1u64..5,
        vec((0u32..3, 0u64..5), 0..3),
    );
    vec(raw, 0..len_max).prop_map(|raws| {
        raws.into_iter()
            .enumerate()
            .map(|(index, (op, hlc, region, partition, seq, deps))| Write {
                op,
                stamp: Stamp {
                    hlc,
                    origin_region: region,
                    partition,
                    origin_seq: seq,
                    index_in_batch: u32::try_from(index).unwrap_or(u32::MAX),
                },
                deps: deps
                    .into_iter()
                    .collect::<BTreeMap<_, _>>()
                    .into_iter()
                    .collect(),
            })
            .collect()
    })
}

fn build<'a>(writes: impl IntoIterator<Item = &'a Write>) -> Row {
    let mut row = Row::new();
    for write in writes {
        row.apply(&write.op, write.stamp, &write.deps);
    }
    row
}

/// Writes and the same writes shuffled.
fn shuffled(sets: bool) -> impl Strategy<Value = (Vec<Write>, Vec<Write>)> {
    writes(sets, 14).prop_flat_map(|writes| (Just(writes.clone()), Just(writes).prop_shuffle()))
}

// ---- The sequential model: replay in stamp order (no sets; they are add-wins, not sequential).

fn merge_patch(target: &mut Value, patch: &Map<String, Value>) {
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(members) = target {
        for (key, value) in patch {
            match value {
                Value::Null => {
                    members.remove(key);
                }
                Value::Object(inner) => {
                    merge_patch(members.entry(key.clone()).or_insert(Value::Null), inner)
                }
                other => {
                    members.insert(key.clone(), other.clone());
                }
            }
        }
    }
}

fn increment(target: &mut Value, path: &[String], amount: &serde_json::Number) {
    let Some((first, rest)) = path.split_first() else {
        *target = match target {
            Value::Number(current) => Value::Number(Sum::of(current).add(amount).to_number()),
            _ => Value::Number(amount.clone()),
        };
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(members) = target {
        increment(
            members.entry(first.clone()).or_insert(Value::Null),
            rest,
            amount,
        );
    }
}

fn replay(writes: &[Write]) -> Option<Content> {
    let mut ordered: Vec<&Write> = writes.iter().collect();
    ordered.sort_by_key(|write| write.stamp);
    let mut row: Option<Content> = None;
    for write in ordered {
        let json = |row: Option<Content>| match row {
            Some(Content::Json(value)) => value,
            _ => Value::Null,
        };
        row = match &write.op {
            Op::Put(content) => Some(content.clone()),
            Op::Delete => None,
            Op::Patch(patch) => {
                let mut value = json(row);
                merge_patch(&mut value, patch);
                Some(Content::Json(value))
            }
            Op::Incr(increments) => {
                let mut value = json(row);
                if !value.is_object() {
                    value = Value::Object(Map::new());
                }
                for (path, amount) in increments {
                    increment(&mut value, path, amount);
                }
                Some(Content::Json(value))
            }
            Op::Add { .. } | Op::Remove { .. } => row,
        };
    }
    row
}

/// The members a patch sets to a scalar or array, by path.
fn patched_leaves(
    patch: &Map<String, Value>,
    prefix: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, Value)>,
) {
    for (key, value) in patch {
        prefix.push(key.clone());
        match value {
            Value::Object(inner) => patched_leaves(inner, prefix, out),
            other => out.push((prefix.clone(), other.clone())),
        }
        prefix.pop();
    }
}

fn lookup<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |value, key| value.get(key))
}

/// 512 cases unless `PROPTEST_CASES` asks for another number (for long soak runs).
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(512)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn any_order_of_the_same_writes_gives_byte_identical_rows((writes, shuffled) in shuffled(true)) {
        prop_assert_eq!(build(&writes).to_bytes(), build(&shuffled).to_bytes());
    }

    #[test]
    fn duplicate_delivery_changes_nothing(
        (writes, shuffled) in shuffled(true),
        repeats in vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let mut again = shuffled.clone();
        if !writes.is_empty() {
            again.extend(repeats.iter().map(|index| writes[index.index(writes.len())].clone()));
        }
        prop_assert_eq!(build(&writes).to_bytes(), build(&again).to_bytes());
    }

    #[test]
    fn merging_rows_of_any_subsets_equals_applying_every_write(
        writes in writes(true, 14),
        sides in vec(0u8..3, 14),
    ) {
        // Each write goes to the left row, the right row, or both.
        let left = writes.iter().zip(&sides).filter(|(_, side)| **side != 1).map(|(w, _)| w);
        let right = writes.iter().zip(&sides).filter(|(_, side)| **side != 0).map(|(w, _)| w);
        let merged = Row::merge(&build(left), &build(right));
        prop_assert_eq!(merged.to_bytes(), build(&writes).to_bytes());
    }

    #[test]
    fn merge_is_commutative(a in writes(true, 8), b in writes(true, 8)) {
        let (a, b) = (build(&a), build(&b));
        prop_assert_eq!(Row::merge(&a, &b).to_bytes(), Row::merge(&b, &a).to_bytes());
    }

    #[test]
    fn merge_is_associative(a in writes(true, 6), b in writes(true, 6), c in writes(true, 6)) {
        let (a, b, c) = (build(&a), build(&b), build(&c));
        let left = Row::merge(&Row::merge(&a, &b), &c);
        let right = Row::merge(&a, &Row::merge(&b, &c));
        prop_assert_eq!(left.to_bytes(), right.to_bytes());
    }

    #[test]
    fn merge_is_idempotent(writes in writes(true, 10)) {
        let row = build(&writes);
        prop_assert_eq!(Row::merge(&row, &row).to_bytes(), row.to_bytes());
    }

    #[test]
    fn rows_survive_encoding(writes in writes(true, 12)) {
        let row = build(&writes);
        let decoded = Row::from_bytes(&row.to_bytes());
        prop_assert_eq!(decoded.ok(), Some(row));
    }

    #[test]
    fn a_row_shows_the_replay_of_its_writes_in_stamp_order((writes, shuffled) in shuffled(false)) {
        prop_assert_eq!(build(&shuffled).materialize(), replay(&writes));
    }

    #[test]
    fn a_put_stamped_above_everything_it_saw_wins(writes in writes(true, 12), put in put()) {
        let mut row = build(&writes);
        let above = Stamp { hlc: 100, ..Stamp::default() };
        row.apply(&put, above, &[]);
        let Op::Put(content) = put else { unreachable!("put() makes puts") };
        prop_assert_eq!(row.materialize(), Some(content));
    }

    #[test]
    fn a_patch_stamped_above_everything_it_saw_wins_on_every_path_it_sets(
        writes in writes(true, 12),
        patch in object(2, true),
    ) {
        let mut row = build(&writes);
        row.apply(&Op::Patch(patch.clone()), Stamp { hlc: 100, ..Stamp::default() }, &[]);
        let mut leaves = Vec::new();
        patched_leaves(&patch, &mut Vec::new(), &mut leaves);
        let Some(Content::Json(shown)) = row.materialize() else {
            return Err(TestCaseError::fail("a patched row shows JSON"));
        };
        for (path, value) in leaves {
            let expected = if value.is_null() { None } else { Some(&value) };
            prop_assert_eq!(lookup(&shown, &path), expected, "at {:?}", path);
        }
    }

    #[test]
    fn a_tombstone_never_removes_a_write_stamped_above_it(
        writes in writes(true, 14),
        hlc in 0u64..10,
    ) {
        let tombstone = Write {
            op: Op::Delete,
            stamp: Stamp { hlc, origin_region: 7, partition: 0, origin_seq: 1, index_in_batch: 0 },
            deps: Vec::new(),
        };
        let everything = build(writes.iter().chain([&tombstone]));
        let later = writes.iter().filter(|write| write.stamp > tombstone.stamp);
        let only_later = build([&tombstone].into_iter().chain(later));
        prop_assert_eq!(everything.to_bytes(), only_later.to_bytes());
    }

    #[test]
    fn counters_sum_every_increment_once_whatever_the_order_and_duplicates(
        increments in vec((0u64..20, 0u32..4, 1u64..20, -5i64..6), 1..20),
        order in vec(any::<prop::sample::Index>(), 0..40),
    ) {
        let writes: Vec<Write> = increments
            .iter()
            .enumerate()
            .map(|(index, (hlc, region, seq, amount))| Write {
                op: decoded("incr", None, &json!({"hits": amount})),
                stamp: Stamp {
                    hlc: *hlc,
                    origin_region: *region,
                    partition: 0,
                    origin_seq: *seq,
                    index_in_batch: u32::try_from(index).unwrap_or(u32::MAX),
                },
                deps: Vec::new(),
            })
            .collect();
        // Deliver in the order drawn, with repeats, then everything once more.
        let deliveries = order.iter().map(|index| &writes[index.index(writes.len())]).chain(&writes);
        let row = build(deliveries);
        let total: i64 = increments.iter().map(|(_, _, _, amount)| amount).sum();
        prop_assert_eq!(row.materialize(), Some(Content::Json(json!({"hits": total}))));
    }

    #[test]
    fn an_element_shows_iff_some_add_of_it_was_seen_by_no_remove(
        ops in vec((any::<bool>(), 0u64..10, 0u32..3, 0u32..2, 1u64..5, vec((0u32..3, 0u64..5), 0..3), vec(0usize..3, 1..3)), 1..14),
    ) {
        let pool = [json!("x"), json!("y"), json!(2)];
        let mut adds: Vec<(Value, Stamp)> = Vec::new();
        let mut removes: Vec<(Value, Stamp, Observed)> = Vec::new();
        let mut row = Row::new();
        for (index, (add, hlc, region, partition, seq, deps, picks)) in ops.iter().enumerate() {
            let stamp = Stamp {
                hlc: *hlc,
                origin_region: *region,
                partition: *partition,
                origin_seq: *seq,
                index_in_batch: u32::try_from(index).unwrap_or(u32::MAX),
            };
            let deps: Vec<(u32, u64)> = deps.iter().copied().collect::<BTreeMap<_, _>>().into_iter().collect();
            let elements: Vec<Value> = picks.iter().map(|pick| pool[*pick].clone()).collect();
            let op = if *add {
                adds.extend(elements.iter().map(|e| (e.clone(), stamp)));
                Op::Add { path: vec!["s".into()], elements }
            } else {
                let observed = Observed::of_write(&stamp, &deps);
                removes.extend(elements.iter().map(|e| (e.clone(), stamp, observed.clone())));
                Op::Remove { path: vec!["s".into()], elements }
            };
            row.apply(&op, stamp, &deps);
        }
        let mut expected: Vec<Value> = pool
            .iter()
            .filter(|element| {
                adds.iter().any(|(added, stamp)| {
                    added == *element
                        && !removes.iter().any(|(removed, at, seen)| {
                            // Within a partition a remove removes what its dependencies saw;
                            // of another partition, every add stamped below it.
                            removed == *element
                                && at > stamp
                                && (at.partition != stamp.partition || seen.covers(stamp))
                        })
                })
            })
            .cloned()
            .collect();
        expected.sort_by_key(|element| element.to_string());
        prop_assert_eq!(row.materialize(), Some(Content::Json(json!({"s": expected}))));
    }

    #[test]
    fn an_add_concurrent_with_a_remove_survives_whatever_the_stamps(
        add_hlc in 0u64..10,
        remove_hlc in 0u64..10,
        add_seq in 1u64..5,
        seen in 0u64..5,
        remove_first in any::<bool>(),
    ) {
        // Region 2's remove depended on region 1 only up to `seen`; region 1's add is later.
        let add_seq = add_seq.max(seen + 1);
        let add = Write {
            op: Op::Add { path: vec!["s".into()], elements: vec![json!("x")] },
            stamp: Stamp { hlc: add_hlc, origin_region: 1, partition: 0, origin_seq: add_seq, index_in_batch: 0 },
            deps: Vec::new(),
        };
        let remove = Write {
            op: Op::Remove { path: vec!["s".into()], elements: vec![json!("x")] },
            stamp: Stamp { hlc: remove_hlc, origin_region: 2, partition: 0, origin_seq: 1, index_in_batch: 0 },
            deps: vec![(1, seen)],
        };
        let row = if remove_first { build([&remove, &add]) } else { build([&add, &remove]) };
        prop_assert_eq!(row.materialize(), Some(Content::Json(json!({"s": ["x"]}))));
    }
}
