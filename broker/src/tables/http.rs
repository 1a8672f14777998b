//! `GET /v1/tables/{topic}/rows/{key}` and `GET /v1/tables/{topic}/rows?prefix=&after=&limit=`,
//! and the routes of the change feed (`feed.rs`).
//! Keys in paths and query parameters are percent-encoded UTF-8. A row answers with its key, its
//! value (JSON as JSON; other bytes as base64 with `"encoding": "base64"`) and its version (the
//! stamp of the newest write it holds).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use causeway_replication::crdt::{Content, Row};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::{is_table, store_name, version_json};
use crate::acl::{Operation, ResourceType};
use crate::broker::Broker;
use crate::http_auth::{guarded, Access};

/// Most rows one scan page returns.
const SCAN_LIMIT_MAX: usize = 1_000;
/// Rows per page when the client does not say.
const SCAN_LIMIT_DEFAULT: usize = 100;

/// The table routes, ready to merge into the HTTP listener's router; change feeds end when
/// `shutdown` becomes true.
/// Every route needs Read on the table's topic.
pub fn routes(broker: Arc<Broker>, shutdown: watch::Receiver<bool>) -> Router {
    let read = Access::Named(ResourceType::Topic, Operation::Read, "topic");
    let feed = Router::new()
        .route(
            "/v1/tables/{topic}/changes",
            guarded(&broker, read, get(super::feed::changes)),
        )
        .with_state(super::feed::FeedState::new(broker.clone(), shutdown));
    Router::new()
        .route(
            "/v1/tables/{topic}/rows/{key}",
            guarded(&broker, read, get(get_row)),
        )
        .route(
            "/v1/tables/{topic}/rows",
            guarded(&broker, read, get(scan_rows)),
        )
        .with_state(broker)
        .merge(feed)
}

/// An HTTP refusal, boxed so results that carry one stay small.
type Refusal = Box<Response>;

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

fn refuse(status: StatusCode, message: String) -> Refusal {
    Box::new(error(status, message))
}

/// The name a table's rows are stored under; refuses topics that are not tables.
fn check_table(broker: &Broker, topic: &str) -> Result<String, Refusal> {
    match broker.topics.get(topic) {
        None => Err(refuse(
            StatusCode::NOT_FOUND,
            format!("topic {topic} does not exist"),
        )),
        Some(t) if !is_table(&t.overrides()) => Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("topic {topic} is not a table: set cleanup.policy=compact to make it one"),
        )),
        Some(t) => Ok(store_name(&t)),
    }
}

/// The JSON of one live row, or `None` if it is deleted or was never written.
fn render(key: &[u8], bytes: &[u8]) -> Result<Option<Value>, Refusal> {
    let row = Row::from_bytes(bytes).map_err(|e| {
        tracing::error!(error = %e, "stored row does not decode");
        refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "stored row does not decode".into(),
        )
    })?;
    let Some(content) = row.materialize() else {
        return Ok(None);
    };
    let version = row.version().as_ref().map(version_json);
    let key = String::from_utf8_lossy(key);
    Ok(Some(match content {
        Content::Json(value) => json!({"key": key, "value": value, "version": version}),
        Content::Bytes(bytes) => json!({
            "key": key,
            "value": base64::engine::general_purpose::STANDARD.encode(bytes),
            "encoding": "base64",
            "version": version
        }),
    }))
}

async fn get_row(
    State(broker): State<Arc<Broker>>,
    Path((topic, key)): Path<(String, String)>,
) -> Response {
    let table = match check_table(&broker, &topic) {
        Ok(table) => table,
        Err(refusal) => return *refusal,
    };
    let stored = match broker.tables.row(&table, key.as_bytes()) {
        Ok(stored) => stored,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let rendered = match stored {
        Some(bytes) => render(key.as_bytes(), &bytes),
        None => Ok(None),
    };
    match rendered {
        Ok(Some(row)) => Json(row).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no row {key:?} in {topic}")),
        Err(refusal) => *refusal,
    }
}

/// Query of a scan. `after` resumes after a key given as text; `after_base64` after exact key
/// bytes (what `next_base64` answers), for keys that are not UTF-8.
#[derive(Debug, Deserialize)]
struct ScanQuery {
    #[serde(default)]
    prefix: String,
    after: Option<String>,
    after_base64: Option<String>,
    limit: Option<usize>,
}

async fn scan_rows(
    State(broker): State<Arc<Broker>>,
    Path(topic): Path<String>,
    Query(query): Query<ScanQuery>,
) -> Response {
    let table = match check_table(&broker, &topic) {
        Ok(table) => table,
        Err(refusal) => return *refusal,
    };
    let limit = query.limit.unwrap_or(SCAN_LIMIT_DEFAULT);
    if limit == 0 || limit > SCAN_LIMIT_MAX {
        return error(
            StatusCode::BAD_REQUEST,
            format!("limit must be between 1 and {SCAN_LIMIT_MAX}"),
        );
    }
    let base64 = base64::engine::general_purpose::STANDARD;
    // Resume keys are exact bytes: a lossy conversion of a key that is not UTF-8 sorts before
    // it, and paging from there would return the same page forever.
    let mut after: Option<Vec<u8>> = match (&query.after_base64, &query.after) {
        (Some(encoded), _) => match base64.decode(encoded) {
            Ok(bytes) => Some(bytes),
            Err(_) => return error(StatusCode::BAD_REQUEST, "after_base64 is not base64".into()),
        },
        (None, after) => after.as_ref().map(|a| a.as_bytes().to_vec()),
    };
    let mut rows = Vec::new();
    let mut last_key: Option<Vec<u8>> = None;
    // Deleted rows are stored too (their tombstones matter for merging): page past them,
    // yielding between pages so a table of tombstones cannot hold a runtime worker.
    loop {
        let page =
            match broker
                .tables
                .scan(&table, query.prefix.as_bytes(), after.as_deref(), limit)
            {
                Ok(page) => page,
                Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            };
        let exhausted = page.len() < limit;
        for (key, bytes) in &page {
            match render(key, bytes) {
                Ok(Some(row)) if rows.len() < limit => {
                    rows.push(row);
                    last_key = Some(key.to_vec());
                }
                Ok(_) => {}
                Err(refusal) => return *refusal,
            }
        }
        match page.last() {
            Some((key, _)) if after.as_deref() != Some(&key[..]) => after = Some(key.to_vec()),
            _ => break,
        }
        if exhausted || rows.len() >= limit {
            break;
        }
        tokio::task::yield_now().await;
    }
    let next = last_key.filter(|_| rows.len() >= limit);
    let next_text = next
        .as_ref()
        .and_then(|k| std::str::from_utf8(k).ok().map(str::to_string));
    let next_base64 = next.map(|k| base64.encode(k));
    Json(json!({"rows": rows, "next": next_text, "next_base64": next_base64})).into_response()
}
