//! Decoding a Kafka record (headers and value) into a table operation.
//!
//! [`decode_op`] is the only place that reads `causeway.op`, `causeway.path` and the value, so
//! every refusal is one [`OpError`] with a bounded [`OpError::reason`] for the metric label.

use serde_json::{Map, Number, Value};
use thiserror::Error;

/// Record header naming the operation (`put`, `patch`, `incr`, `add`, `remove`); absent = `put`.
pub const OP_HEADER: &str = "causeway.op";

/// Record header naming the set a `add` / `remove` acts on: a JSON Pointer (RFC 6901) such as
/// `/tags` or `/a/b`, or a bare top-level key such as `tags`; the empty string is the row itself.
pub const PATH_HEADER: &str = "causeway.path";

/// Topic config choosing how records merge (see [`MergeMode`]).
pub const MERGE_CONFIG: &str = "causeway.merge";

/// Deepest JSON nesting accepted in an operation, counting path segments and containers.
/// Bounds the recursion of every tree walk and keeps encoded rows well inside serde_json's
/// parser limit of 128 levels.
pub const DEPTH_MAX: usize = 32;

/// How a table topic merges its records, from the topic config `causeway.merge`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MergeMode {
    /// `crdt` (the default): JSON operations chosen by the `causeway.op` header.
    #[default]
    Crdt,
    /// `lww`: every record is a whole-row last-writer-wins put of its raw bytes, without JSON
    /// parsing, for Avro, Protobuf and other binary values. Headers are ignored.
    Lww,
}

impl MergeMode {
    /// Parses a `causeway.merge` config value; `None` for anything but `crdt` and `lww`, so
    /// the broker can refuse the config rather than guess.
    pub fn parse(value: &str) -> Option<MergeMode> {
        match value {
            "crdt" => Some(MergeMode::Crdt),
            "lww" => Some(MergeMode::Lww),
            _ => None,
        }
    }

    /// The config value that selects this mode.
    pub fn as_str(self) -> &'static str {
        match self {
            MergeMode::Crdt => "crdt",
            MergeMode::Lww => "lww",
        }
    }
}

/// The value of a `put`, and what a row materializes to.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// A JSON document.
    Json(Value),
    /// Opaque bytes: a value that is not JSON, or any value of an `lww` topic.
    Bytes(Vec<u8>),
}

/// The operations a record can carry, already validated.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Replace the whole row; everything stamped below is forgotten.
    Put(Content),
    /// Delete the whole row (a Kafka tombstone): a put of nothing.
    Delete,
    /// RFC 7386 merge patch whose top level is an object (a non-object patch decodes as
    /// [`Op::Put`], as the RFC replaces the target with it).
    Patch(Map<String, Value>),
    /// Add to counters: each entry is a path of object keys and the amount.
    Incr(Vec<(Vec<String>, Number)>),
    /// Add elements to the add-wins set at `path`.
    Add {
        /// Object keys from the row's root to the set.
        path: Vec<String>,
        /// Elements to add.
        elements: Vec<Value>,
    },
    /// Remove, from the set at `path`, the additions of these elements the writer had seen.
    Remove {
        /// Object keys from the row's root to the set.
        path: Vec<String>,
        /// Elements to remove.
        elements: Vec<Value>,
    },
}

/// The operation named by a `causeway.op` header, for error messages and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// `put` (also the default).
    Put,
    /// `patch`.
    Patch,
    /// `incr`.
    Incr,
    /// `add`.
    Add,
    /// `remove`.
    Remove,
}

impl OpKind {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Put => "put",
            OpKind::Patch => "patch",
            OpKind::Incr => "incr",
            OpKind::Add => "add",
            OpKind::Remove => "remove",
        }
    }

    fn parse(header: &[u8]) -> Option<OpKind> {
        match header {
            b"put" => Some(OpKind::Put),
            b"patch" => Some(OpKind::Patch),
            b"incr" => Some(OpKind::Incr),
            b"add" => Some(OpKind::Add),
            b"remove" => Some(OpKind::Remove),
            _ => None,
        }
    }
}

impl std::fmt::Display for OpKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a record could not become an operation. The materializer counts these in a metric
/// (label [`OpError::reason`]) and logs them; the record stays in the log untouched.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OpError {
    /// The `causeway.op` header is not one of the known operations.
    #[error("unknown {OP_HEADER} {0:?}")]
    UnknownOp(String),
    /// The value of a JSON operation is not JSON.
    #[error("{op} value is not JSON: {detail}")]
    NotJson {
        /// The operation.
        op: OpKind,
        /// What the JSON parser said.
        detail: String,
    },
    /// The value nests deeper than [`DEPTH_MAX`].
    #[error("{op} nests {depth} levels deep, more than {DEPTH_MAX}")]
    TooDeep {
        /// The operation.
        op: OpKind,
        /// Depth found (path segments plus containers).
        depth: usize,
    },
    /// An `incr` value is not a JSON object.
    #[error("incr value is not a JSON object")]
    IncrNotObject,
    /// An `incr` leaf is not a number.
    #[error("incr value at {path} is not a number")]
    IncrNotNumber {
        /// JSON Pointer to the offending leaf.
        path: String,
    },
    /// An `add` / `remove` value is not a JSON array.
    #[error("{op} value is not a JSON array")]
    SetNotArray {
        /// The operation.
        op: OpKind,
    },
    /// An `add` / `remove` has no `causeway.path` header.
    #[error("{op} needs a {PATH_HEADER} header")]
    MissingPath {
        /// The operation.
        op: OpKind,
    },
    /// The `causeway.path` header is not UTF-8 or not a valid JSON Pointer.
    #[error("{op} has an invalid {PATH_HEADER} {path:?}")]
    BadPath {
        /// The operation.
        op: OpKind,
        /// The header, lossily decoded.
        path: String,
    },
}

impl OpError {
    /// A short fixed label for metrics (`causeway_table_refused_records_total{reason=...}`).
    pub fn reason(&self) -> &'static str {
        match self {
            OpError::UnknownOp(_) => "unknown_op",
            OpError::NotJson { .. } => "not_json",
            OpError::TooDeep { .. } => "too_deep",
            OpError::IncrNotObject => "incr_not_object",
            OpError::IncrNotNumber { .. } => "incr_not_number",
            OpError::SetNotArray { .. } => "set_not_array",
            OpError::MissingPath { .. } => "missing_path",
            OpError::BadPath { .. } => "bad_path",
        }
    }
}

/// Turns one record into an operation: the entry point of the materializer.
///
/// `op_header` and `path_header` are the values of the `causeway.op` and `causeway.path`
/// headers, `value` the record value (`None` for a Kafka tombstone). A tombstone is
/// [`Op::Delete`] whatever the header says, because Kafka's compaction semantics, which
/// consumers of the log rely on, treat it as a deletion of the key.
pub fn decode_op(
    op_header: Option<&[u8]>,
    path_header: Option<&[u8]>,
    value: Option<&[u8]>,
    mode: MergeMode,
) -> Result<Op, OpError> {
    let Some(value) = value else {
        return Ok(Op::Delete);
    };
    if mode == MergeMode::Lww {
        return Ok(Op::Put(Content::Bytes(value.to_vec())));
    }
    let kind = match op_header {
        None => OpKind::Put,
        Some(header) => OpKind::parse(header)
            .ok_or_else(|| OpError::UnknownOp(String::from_utf8_lossy(header).into_owned()))?,
    };
    match kind {
        OpKind::Put => Ok(Op::Put(decode_put(value))),
        OpKind::Patch => {
            let patch = parse_json(kind, value, 0)?;
            match patch {
                Value::Object(map) => Ok(Op::Patch(map)),
                other => Ok(Op::Put(Content::Json(other))),
            }
        }
        OpKind::Incr => match parse_json(kind, value, 0)? {
            Value::Object(map) => {
                let mut increments = Vec::new();
                collect_increments(&map, &mut Vec::new(), &mut increments)?;
                Ok(Op::Incr(increments))
            }
            _ => Err(OpError::IncrNotObject),
        },
        OpKind::Add | OpKind::Remove => {
            let header = path_header.ok_or(OpError::MissingPath { op: kind })?;
            let path = parse_path(kind, header)?;
            let elements = match parse_json(kind, value, path.len())? {
                Value::Array(elements) => elements,
                _ => return Err(OpError::SetNotArray { op: kind }),
            };
            if kind == OpKind::Add {
                Ok(Op::Add { path, elements })
            } else {
                Ok(Op::Remove { path, elements })
            }
        }
    }
}

/// A `put` value is JSON if it parses and fits [`DEPTH_MAX`]; anything else is kept as bytes,
/// so a put never fails.
fn decode_put(value: &[u8]) -> Content {
    match serde_json::from_slice::<Value>(value) {
        Ok(json) if depth(&json) <= DEPTH_MAX => Content::Json(json),
        _ => Content::Bytes(value.to_vec()),
    }
}

/// Parses a JSON operation value that will sit `prefix` levels below the row's root.
fn parse_json(op: OpKind, value: &[u8], prefix: usize) -> Result<Value, OpError> {
    let json: Value = serde_json::from_slice(value).map_err(|error| OpError::NotJson {
        op,
        detail: error.to_string(),
    })?;
    let depth = prefix + depth(&json);
    if depth > DEPTH_MAX {
        return Err(OpError::TooDeep { op, depth });
    }
    Ok(json)
}

/// Containers nested in `value` (a scalar is 0). Iterative so hostile input cannot overflow
/// the stack.
pub(crate) fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((value, level)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        deepest = deepest.max(level + 1);
        stack.extend(children.map(|child| (child, level + 1)));
    }
    deepest
}

fn collect_increments(
    map: &Map<String, Value>,
    prefix: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, Number)>,
) -> Result<(), OpError> {
    for (key, value) in map {
        prefix.push(key.clone());
        match value {
            Value::Number(number) => out.push((prefix.clone(), number.clone())),
            Value::Object(inner) => collect_increments(inner, prefix, out)?,
            _ => {
                return Err(OpError::IncrNotNumber {
                    path: to_pointer(prefix),
                })
            }
        }
        prefix.pop();
    }
    Ok(())
}

/// Parses a `causeway.path` header: a JSON Pointer (`/a/b`, with `~1` for `/` and `~0` for
/// `~`), a bare key (`tags`), or the empty string for the row itself.
fn parse_path(op: OpKind, header: &[u8]) -> Result<Vec<String>, OpError> {
    let bad = || OpError::BadPath {
        op,
        path: String::from_utf8_lossy(header).into_owned(),
    };
    let text = std::str::from_utf8(header).map_err(|_| bad())?;
    let path: Vec<String> = if text.is_empty() {
        Vec::new()
    } else if let Some(pointer) = text.strip_prefix('/') {
        pointer
            .split('/')
            .map(|segment| unescape_segment(segment).ok_or_else(bad))
            .collect::<Result<_, _>>()?
    } else {
        vec![text.to_owned()]
    };
    if path.len() > DEPTH_MAX {
        return Err(OpError::TooDeep {
            op,
            depth: path.len(),
        });
    }
    Ok(path)
}

fn unescape_segment(segment: &str) -> Option<String> {
    let mut out = String::with_capacity(segment.len());
    let mut chars = segment.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// The JSON Pointer of a path, for messages.
pub(crate) fn to_pointer(path: &[String]) -> String {
    path.iter()
        .map(|segment| format!("/{}", segment.replace('~', "~0").replace('/', "~1")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decode(op: Option<&str>, path: Option<&str>, value: &str) -> Result<Op, OpError> {
        decode_op(
            op.map(str::as_bytes),
            path.map(str::as_bytes),
            Some(value.as_bytes()),
            MergeMode::Crdt,
        )
    }

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    #[test]
    fn no_header_is_a_put_of_json() {
        assert_eq!(
            decode(None, None, r#"{"a":1}"#),
            Ok(Op::Put(Content::Json(json!({"a": 1}))))
        );
    }

    #[test]
    fn a_put_of_non_json_keeps_the_bytes() {
        assert_eq!(
            decode(Some("put"), None, "not json"),
            Ok(Op::Put(Content::Bytes(b"not json".to_vec())))
        );
    }

    #[test]
    fn a_put_nested_too_deep_is_kept_as_bytes() {
        let deep = format!("{}{}", "[".repeat(DEPTH_MAX + 1), "]".repeat(DEPTH_MAX + 1));
        assert_eq!(
            decode(None, None, &deep),
            Ok(Op::Put(Content::Bytes(deep.clone().into_bytes())))
        );
    }

    #[test]
    fn a_null_value_deletes_whatever_the_header_says() {
        for mode in [MergeMode::Crdt, MergeMode::Lww] {
            assert_eq!(decode_op(Some(b"incr"), None, None, mode), Ok(Op::Delete));
        }
    }

    #[test]
    fn lww_mode_never_parses_json() {
        assert_eq!(
            decode_op(Some(b"patch"), None, Some(br#"{"a":1}"#), MergeMode::Lww),
            Ok(Op::Put(Content::Bytes(br#"{"a":1}"#.to_vec())))
        );
    }

    #[test]
    fn a_patch_must_be_json() {
        let error = decode(Some("patch"), None, "{oops");
        assert!(matches!(
            error,
            Err(OpError::NotJson {
                op: OpKind::Patch,
                ..
            })
        ));
        assert_eq!(error.err().map(|e| e.reason()), Some("not_json"));
    }

    #[test]
    fn a_non_object_patch_replaces_the_row() {
        assert_eq!(
            decode(Some("patch"), None, "[1,2]"),
            Ok(Op::Put(Content::Json(json!([1, 2]))))
        );
        assert_eq!(
            decode(Some("patch"), None, r#"{"a":null}"#),
            Ok(Op::Patch(object(json!({"a": null}))))
        );
    }

    #[test]
    fn incr_flattens_nested_objects_into_paths() {
        let op = decode(Some("incr"), None, r#"{"views":1,"stats":{"clicks":-2.5}}"#);
        let clicks = Number::from_f64(-2.5).unwrap_or_else(|| Number::from(0));
        assert_eq!(
            op,
            Ok(Op::Incr(vec![
                (vec!["stats".into(), "clicks".into()], clicks),
                (vec!["views".into()], Number::from(1)),
            ]))
        );
    }

    #[test]
    fn incr_refuses_non_numbers() {
        assert_eq!(
            decode(Some("incr"), None, r#"{"a":{"b":"x"}}"#),
            Err(OpError::IncrNotNumber {
                path: "/a/b".into()
            })
        );
        assert_eq!(decode(Some("incr"), None, "3"), Err(OpError::IncrNotObject));
    }

    #[test]
    fn set_paths_are_json_pointers_or_bare_keys() {
        let add = |path| decode(Some("add"), Some(path), r#"["x"]"#);
        let expect = |path: &[&str]| {
            Ok(Op::Add {
                path: path.iter().map(|s| s.to_string()).collect(),
                elements: vec![json!("x")],
            })
        };
        assert_eq!(add("tags"), expect(&["tags"]));
        assert_eq!(add("/a/b"), expect(&["a", "b"]));
        assert_eq!(add("/a~1b/c~0d"), expect(&["a/b", "c~d"]));
        assert_eq!(add(""), expect(&[]));
        assert!(matches!(add("/a~2"), Err(OpError::BadPath { .. })));
    }

    #[test]
    fn sets_need_a_path_and_an_array() {
        assert_eq!(
            decode(Some("remove"), None, r#"["x"]"#),
            Err(OpError::MissingPath { op: OpKind::Remove })
        );
        assert_eq!(
            decode(Some("add"), Some("tags"), r#""x""#),
            Err(OpError::SetNotArray { op: OpKind::Add })
        );
    }

    #[test]
    fn unknown_operations_are_refused() {
        assert_eq!(
            decode(Some("upsert"), None, "{}"),
            Err(OpError::UnknownOp("upsert".into()))
        );
    }

    #[test]
    fn every_refusal_reason_is_documented() {
        let docs = include_str!("../../../docs/tables.md");
        let errors = [
            OpError::UnknownOp(String::new()),
            OpError::NotJson {
                op: OpKind::Patch,
                detail: String::new(),
            },
            OpError::TooDeep {
                op: OpKind::Patch,
                depth: 0,
            },
            OpError::IncrNotObject,
            OpError::IncrNotNumber {
                path: String::new(),
            },
            OpError::SetNotArray { op: OpKind::Add },
            OpError::MissingPath { op: OpKind::Add },
            OpError::BadPath {
                op: OpKind::Add,
                path: String::new(),
            },
        ];
        for error in errors {
            let row = format!("| `{}` |", error.reason());
            assert!(docs.contains(&row), "docs/tables.md lacks {row}");
        }
    }

    #[test]
    fn depth_counts_path_segments_and_containers() {
        let too_deep = format!(
            "[{}]",
            "[".repeat(DEPTH_MAX - 1) + &"]".repeat(DEPTH_MAX - 1)
        );
        assert!(matches!(
            decode(Some("add"), Some("/a"), &too_deep),
            Err(OpError::TooDeep {
                op: OpKind::Add,
                depth
            }) if depth == DEPTH_MAX + 1
        ));
        assert_eq!(depth(&json!(1)), 0);
        assert_eq!(depth(&json!({"a": [1, {"b": []}]})), 4);
    }
}
