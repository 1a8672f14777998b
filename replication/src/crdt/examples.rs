//! Each operation on concrete JSON, as the docs describe it.

use serde_json::{json, Value};

use super::*;

fn at(hlc: u64, region: u32, seq: u64) -> Stamp {
    Stamp {
        hlc,
        origin_region: region,
        partition: 0,
        origin_seq: seq,
        index_in_batch: 0,
    }
}

fn op(name: &str, path: Option<&str>, value: &str) -> Op {
    match decode_op(
        Some(name.as_bytes()),
        path.map(str::as_bytes),
        Some(value.as_bytes()),
        MergeMode::Crdt,
    ) {
        Ok(op) => op,
        Err(error) => panic!("{name} {value}: {error}"),
    }
}

/// A row after `writes`, applied in the order given, none depending on another.
fn row(writes: &[(Op, Stamp)]) -> Row {
    let mut row = Row::new();
    for (op, stamp) in writes {
        row.apply(op, *stamp, &[]);
    }
    row
}

fn shows(row: &Row) -> Option<Value> {
    match row.materialize() {
        Some(Content::Json(value)) => Some(value),
        Some(Content::Bytes(bytes)) => panic!("expected JSON, found bytes {bytes:?}"),
        None => None,
    }
}

#[test]
fn a_put_replaces_the_row() {
    let row = row(&[
        (op("put", None, r#"{"a":1,"b":{"c":2}}"#), at(1, 1, 1)),
        (op("put", None, r#"{"d":3}"#), at(2, 1, 2)),
    ]);
    assert_eq!(shows(&row), Some(json!({"d": 3})));
}

#[test]
fn a_late_older_write_stays_lost_after_a_put() {
    let row = row(&[
        (op("put", None, r#"{"a":1}"#), at(5, 1, 1)),
        (op("patch", None, r#"{"b":2}"#), at(3, 2, 1)),
        (op("incr", None, r#"{"n":1}"#), at(4, 2, 2)),
        (op("add", Some("tags"), r#"["x"]"#), at(2, 2, 3)),
    ]);
    assert_eq!(shows(&row), Some(json!({"a": 1})));
}

#[test]
fn a_patch_sets_removes_and_recurses() {
    let row = row(&[
        (
            op("put", None, r#"{"a":1,"b":{"c":2,"d":3},"f":[0]}"#),
            at(1, 1, 1),
        ),
        (
            op("patch", None, r#"{"b":{"c":null,"e":4},"f":[1,2],"g":{}}"#),
            at(2, 1, 2),
        ),
    ]);
    assert_eq!(
        shows(&row),
        Some(json!({"a": 1, "b": {"d": 3, "e": 4}, "f": [1, 2], "g": {}}))
    );
}

#[test]
fn a_removal_beats_an_older_set_that_arrives_later() {
    let row = row(&[
        (op("patch", None, r#"{"a":null,"b":1}"#), at(3, 1, 1)),
        (op("patch", None, r#"{"a":"old"}"#), at(2, 2, 1)),
    ]);
    assert_eq!(shows(&row), Some(json!({"b": 1})));
}

#[test]
fn a_patch_concurrent_with_a_put_survives_iff_stamped_higher() {
    let put = (op("put", None, r#"{"a":1,"b":1}"#), at(5, 1, 1));
    let lower = (op("patch", None, r#"{"b":2,"c":2}"#), at(4, 2, 1));
    let higher = (op("patch", None, r#"{"b":3,"d":3}"#), at(6, 3, 1));
    let row = row(&[higher, lower, put]);
    assert_eq!(shows(&row), Some(json!({"a": 1, "b": 3, "d": 3})));
}

#[test]
fn a_path_that_stopped_being_an_object_does_not_bring_old_members_back() {
    let row = row(&[
        (op("patch", None, r#"{"a":{"b":1}}"#), at(1, 1, 1)),
        (op("patch", None, r#"{"a":5}"#), at(2, 1, 2)),
        (op("patch", None, r#"{"a":{"c":1}}"#), at(3, 1, 3)),
    ]);
    assert_eq!(shows(&row), Some(json!({"a": {"c": 1}})));
}

#[test]
fn arrays_are_replaced_whole() {
    let row = row(&[
        (op("put", None, r#"{"a":[1,2,3]}"#), at(1, 1, 1)),
        (op("patch", None, r#"{"a":[4]}"#), at(2, 1, 2)),
    ]);
    assert_eq!(shows(&row), Some(json!({"a": [4]})));
}

#[test]
fn a_non_object_patch_replaces_the_row() {
    let row = row(&[
        (op("put", None, r#"{"a":1}"#), at(1, 1, 1)),
        (op("patch", None, r#""text""#), at(2, 1, 2)),
    ]);
    assert_eq!(shows(&row), Some(json!("text")));
}

#[test]
fn increments_from_every_region_add_up_once_each() {
    let one = op("incr", None, r#"{"views":1,"stats":{"clicks":2}}"#);
    let five = op("incr", None, r#"{"views":5}"#);
    let row = row(&[
        (one.clone(), at(1, 1, 1)),
        (one.clone(), at(2, 1, 2)),
        (five.clone(), at(1, 2, 1)),
        (one, at(2, 1, 2)),
        (five, at(1, 2, 1)),
    ]);
    assert_eq!(
        shows(&row),
        Some(json!({"views": 7, "stats": {"clicks": 4}}))
    );
}

#[test]
fn a_counter_starts_from_the_number_the_path_held() {
    let row = row(&[
        (op("put", None, r#"{"views":10,"name":"x"}"#), at(2, 1, 1)),
        (op("incr", None, r#"{"views":2,"name":3}"#), at(3, 2, 1)),
        (op("incr", None, r#"{"views":100}"#), at(1, 2, 2)),
    ]);
    assert_eq!(shows(&row), Some(json!({"views": 12, "name": 3})));
}

#[test]
fn a_put_or_patch_resets_a_counter_it_is_stamped_above() {
    let row = row(&[
        (op("incr", None, r#"{"n":1,"m":1}"#), at(1, 1, 1)),
        (op("put", None, r#"{"n":0,"m":0}"#), at(2, 2, 1)),
        (op("incr", None, r#"{"n":2,"m":2}"#), at(3, 1, 2)),
        (op("patch", None, r#"{"m":40}"#), at(4, 2, 2)),
        (op("incr", None, r#"{"m":2}"#), at(5, 1, 3)),
    ]);
    assert_eq!(shows(&row), Some(json!({"n": 2, "m": 42})));
}

#[test]
fn a_set_adds_and_removes_what_it_saw() {
    let mut row = Row::new();
    row.apply(
        &op("add", Some("tags"), r#"["a","b",{"k":1}]"#),
        at(1, 1, 1),
        &[],
    );
    row.apply(
        &op("remove", Some("/tags"), r#"["a"]"#),
        at(2, 1, 2),
        &[(1, 1)],
    );
    assert_eq!(shows(&row), Some(json!({"tags": ["b", {"k": 1}]})));
}

#[test]
fn an_add_concurrent_with_a_remove_survives() {
    let add = op("add", Some("tags"), r#"["x"]"#);
    let remove = op("remove", Some("tags"), r#"["x"]"#);
    // Region 2 removes "x" at a later clock without having seen region 1's add.
    let mut concurrent = Row::new();
    concurrent.apply(&add, at(5, 1, 1), &[]);
    concurrent.apply(&remove, at(9, 2, 1), &[]);
    assert_eq!(shows(&concurrent), Some(json!({"tags": ["x"]})));
    // Once it had seen the add, the same remove deletes it.
    let mut seen = Row::new();
    seen.apply(&remove, at(9, 2, 1), &[(1, 1)]);
    seen.apply(&add, at(5, 1, 1), &[]);
    assert_eq!(shows(&seen), Some(json!({"tags": []})));
}

#[test]
fn a_set_starts_from_the_array_the_path_held() {
    let mut row = Row::new();
    row.apply(&op("put", None, r#"{"tags":["b","a"]}"#), at(1, 1, 1), &[]);
    row.apply(&op("add", Some("tags"), r#"["c"]"#), at(2, 2, 1), &[]);
    row.apply(
        &op("remove", Some("tags"), r#"["a"]"#),
        at(3, 2, 2),
        &[(1, 1)],
    );
    assert_eq!(shows(&row), Some(json!({"tags": ["b", "c"]})));
}

#[test]
fn a_put_resets_the_set_elements_it_is_stamped_above() {
    let row = row(&[
        (op("add", Some("tags"), r#"["old"]"#), at(1, 1, 1)),
        (op("put", None, r#"{"id":7}"#), at(2, 2, 1)),
        (op("add", Some("tags"), r#"["new"]"#), at(3, 1, 2)),
    ]);
    assert_eq!(shows(&row), Some(json!({"id": 7, "tags": ["new"]})));
}

#[test]
fn kinds_meeting_on_one_path_follow_the_latest_write() {
    let row = row(&[
        (op("incr", None, r#"{"p":1}"#), at(1, 1, 1)),
        (op("add", Some("p"), r#"["x"]"#), at(2, 1, 2)),
        (op("incr", None, r#"{"p":5}"#), at(3, 1, 3)),
    ]);
    assert_eq!(shows(&row), Some(json!({"p": 5})));
}

#[test]
fn a_tombstone_deletes_the_row_until_a_later_write() {
    let delete = decode_op(None, None, None, MergeMode::Crdt);
    assert_eq!(delete, Ok(Op::Delete));
    let mut row = row(&[
        (op("put", None, r#"{"a":1,"b":2}"#), at(1, 1, 1)),
        (Op::Delete, at(2, 1, 2)),
    ]);
    assert_eq!(shows(&row), None);
    assert_eq!(row.version(), Some(at(2, 1, 2)));
    row.apply(&op("patch", None, r#"{"b":3}"#), at(3, 2, 1), &[]);
    assert_eq!(shows(&row), Some(json!({"b": 3})));
}

#[test]
fn a_tombstone_never_removes_a_later_write_that_arrived_first() {
    let row = row(&[
        (op("patch", None, r#"{"a":1}"#), at(3, 2, 1)),
        (op("incr", None, r#"{"n":1}"#), at(4, 2, 2)),
        (Op::Delete, at(2, 1, 1)),
    ]);
    assert_eq!(shows(&row), Some(json!({"a": 1, "n": 1})));
}

#[test]
fn a_put_of_bytes_is_one_register() {
    let bytes = vec![0u8, 159, 146, 150];
    let put = decode_op(None, None, Some(&bytes), MergeMode::Crdt);
    assert_eq!(put, Ok(Op::Put(Content::Bytes(bytes.clone()))));
    let mut row = Row::new();
    if let Ok(put) = put {
        row.apply(&put, at(1, 1, 1), &[]);
    }
    assert_eq!(row.materialize(), Some(Content::Bytes(bytes)));
    let patch = decode_op(Some(b"patch"), None, Some(&[0u8, 1]), MergeMode::Crdt);
    assert_eq!(patch.err().map(|e| e.reason()), Some("not_json"));
    row.apply(&op("patch", None, r#"{"a":1}"#), at(2, 1, 2), &[]);
    assert_eq!(shows(&row), Some(json!({"a": 1})));
}

#[test]
fn lww_mode_keeps_the_bytes_of_the_highest_stamp() {
    let put = |value: &[u8]| match decode_op(None, None, Some(value), MergeMode::Lww) {
        Ok(op) => op,
        Err(error) => panic!("{error}"),
    };
    let row = row(&[
        (put(br#"{"a":1}"#), at(2, 1, 1)),
        (put(b"older"), at(1, 2, 1)),
    ]);
    assert_eq!(
        row.materialize(),
        Some(Content::Bytes(br#"{"a":1}"#.to_vec()))
    );
}

#[test]
fn the_encoding_is_compact_sorted_json() {
    // Set elements are identified by their JSON text: objects must print with sorted keys
    // (serde_json's `preserve_order` feature must stay off in the workspace).
    let element: Value = serde_json::from_str(r#"{"b":1,"a":2}"#).unwrap_or_default();
    assert_eq!(element.to_string(), r#"{"a":2,"b":1}"#);
    let row = row(&[(op("put", None, r#"{"b":1,"a":[2]}"#), at(7, 1, 3))]);
    let text = String::from_utf8(row.to_bytes()).ok();
    assert_eq!(
        text.as_deref(),
        Some(concat!(
            r#"{"v":1,"root":{"r":[[7,1,3,0],"object"],"c":{"#,
            r#""a":{"r":[[7,1,3,0],{"json":[2]}]},"b":{"r":[[7,1,3,0],{"json":1}]}}}}"#
        ))
    );
}

#[test]
fn every_kind_of_state_survives_encoding() {
    let mut row = row(&[
        (op("put", None, r#"{"a":{"b":[1]},"z":null}"#), at(1, 1, 1)),
        (op("patch", None, r#"{"a":{"c":null}}"#), at(2, 1, 2)),
        (op("incr", None, r#"{"n":1.5}"#), at(3, 1, 3)),
        (op("add", Some("/a/s"), r#"["x",2]"#), at(4, 1, 4)),
    ]);
    row.apply(
        &op("remove", Some("/a/s"), r#"["x"]"#),
        at(5, 2, 1),
        &[(1, 2)],
    );
    let decoded = Row::from_bytes(&row.to_bytes());
    assert_eq!(decoded.as_ref().ok(), Some(&row));
    let empty = Row::from_bytes(&Row::new().to_bytes());
    assert_eq!(empty.ok(), Some(Row::new()));
}

#[test]
fn stored_rows_from_elsewhere_are_refused() {
    assert!(matches!(
        Row::from_bytes(br#"{"v":2,"root":{}}"#),
        Err(RowDecodeError::Version { found: 2 })
    ));
    assert!(matches!(
        Row::from_bytes(b"\x00garbage"),
        Err(RowDecodeError::Malformed(_))
    ));
    assert!(matches!(
        Row::from_bytes(br#"{"v":1,"root":{"c":{"a":{"r":[[1,1,1,0],{"bytes":"AA=="}]}}}}"#),
        Err(RowDecodeError::BytesBelowRoot)
    ));
}

#[test]
fn the_version_is_the_highest_stamp_held() {
    let row = row(&[
        (op("patch", None, r#"{"a":1}"#), at(9, 2, 1)),
        (op("patch", None, r#"{"b":1}"#), at(3, 1, 1)),
    ]);
    assert_eq!(row.version(), Some(at(9, 2, 1)));
    assert_eq!(Row::new().version(), None);
}
