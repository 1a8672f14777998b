//! `GET /v1/tables/{topic}/changes?from=OFFSET`: the table's change feed, one line per applied
//! change, following the table live until the client disconnects or the broker shuts down.
//!
//! Each line is a JSON object: `partition`, `offset` (of the record that made the change),
//! `key`, and either `value` (JSON, or base64 with `"encoding": "base64"`) or `"deleted": true`,
//! plus `version` (the row's newest stamp). Changes are in offset order within a partition;
//! partitions interleave. `from` applies to every partition (offsets are per partition); without
//! it the feed starts at each partition's end, so it shows only new changes. A record the table
//! refuses makes no line; a compacted record (the merged row) makes one line.
//!
//! With `Accept: text/event-stream` the lines are server-sent events (`id: PARTITION:OFFSET`,
//! `data: JSON`); otherwise the response is chunked `application/x-ndjson`. An idle feed sends a
//! keep-alive every 5 s (an empty line, or an SSE comment), so a vanished client is noticed.
//!
//! Each feed follows the log itself from the partition's start with rows of its own (silently
//! below `from`), on a blocking thread, so a line shows the row exactly as it was after that
//! change, whatever the materializer has done meanwhile. Opening a feed costs one read of the
//! table's log (after compaction, one record per key) and memory for its rows.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use bytes::Bytes;
use causeway_replication::crdt::{Content, MergeMode, Row};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use super::records::{for_each_write, skipped, Chunk, WriteReader};
use super::{is_table, merge_mode};
use crate::broker::Broker;
use crate::topics::PartitionHandle;

/// How often an idle feed looks for new records.
const POLL_PERIOD: Duration = Duration::from_millis(20);
/// Keep-alive period of an idle feed.
const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// Log bytes read per step.
const CHUNK_BYTES: usize = 1 << 20;
/// Lines buffered for a slow client before the feed waits for it.
const BUFFERED_LINES: usize = 1024;

/// What the change feed handler needs: the broker and the shutdown signal.
#[derive(Clone)]
pub struct FeedState {
    /// The broker.
    pub broker: Arc<Broker>,
    /// Becomes true when the broker shuts down; feeds end then.
    pub shutdown: watch::Receiver<bool>,
}

/// Query of the change feed.
#[derive(Debug, Deserialize)]
pub struct ChangesQuery {
    from: Option<i64>,
}

/// One change, rendered for the feed.
struct Change {
    partition: i32,
    offset: i64,
    json: Value,
}

/// The feed line of a row after the change at `offset`.
fn change_json(partition: i32, offset: i64, key: &[u8], row: &Row) -> Value {
    let version = row.version().map(|s| {
        json!({"hlc": s.hlc, "region": s.origin_region, "seq": s.origin_seq, "index": s.index_in_batch})
    });
    let key = String::from_utf8_lossy(key);
    match row.materialize() {
        Some(Content::Json(value)) => {
            json!({"partition": partition, "offset": offset, "key": key, "value": value, "version": version})
        }
        Some(Content::Bytes(bytes)) => json!({
            "partition": partition,
            "offset": offset,
            "key": key,
            "value": base64::engine::general_purpose::STANDARD.encode(bytes),
            "encoding": "base64",
            "version": version
        }),
        None => {
            json!({"partition": partition, "offset": offset, "key": key, "deleted": true, "version": version})
        }
    }
}

/// Follows one partition: replays it from its start into private rows, reporting changes at or
/// after `from`.
struct Follower {
    partition: Arc<PartitionHandle>,
    next: i64,
    from: i64,
    rows: HashMap<Bytes, Row>,
}

impl Follower {
    /// Applies the next chunk, if any; returns whether there was one.
    fn step(
        &mut self,
        topic: &str,
        mode: MergeMode,
        emit: &mut impl FnMut(Change),
    ) -> Result<bool, causeway_storage::StorageError> {
        let log = &self.partition.log;
        let start = self.next.max(log.log_start_offset());
        let Some(chunk) = Chunk::read(log, start, CHUNK_BYTES)? else {
            return Ok(false);
        };
        let reader = WriteReader {
            topic,
            mode,
            from: start,
            count_refusals: false,
        };
        let index = self.partition.index;
        for (header, batch) in &chunk.batches {
            if skipped(header, &chunk.aborted) {
                continue;
            }
            let Some(meta) = chunk.metas.get(&header.base_offset) else {
                return Err(causeway_storage::StorageError::Corrupt(format!(
                    "{topic}-{index}: no causal entry for the batch at offset {}",
                    header.base_offset
                )));
            };
            for_each_write(&reader, header, batch, meta, |record| {
                let row = self.rows.entry(record.key.clone()).or_default();
                record.write.apply_to(row);
                if record.offset >= self.from {
                    emit(Change {
                        partition: index,
                        offset: record.offset,
                        json: change_json(index, record.offset, &record.key, row),
                    });
                }
            });
        }
        self.next = chunk.next;
        Ok(true)
    }
}

/// How lines are framed.
#[derive(Clone, Copy)]
enum Framing {
    JsonLines,
    EventStream,
}

impl Framing {
    fn frame(self, change: &Change) -> Bytes {
        match self {
            Framing::JsonLines => Bytes::from(format!("{}\n", change.json)),
            Framing::EventStream => Bytes::from(format!(
                "id: {}:{}\ndata: {}\n\n",
                change.partition, change.offset, change.json
            )),
        }
    }

    fn keep_alive(self) -> Bytes {
        match self {
            Framing::JsonLines => Bytes::from_static(b"\n"),
            Framing::EventStream => Bytes::from_static(b": keep-alive\n\n"),
        }
    }
}

/// The feed's loop, on a blocking thread: steps every follower, sends lines, sleeps when idle;
/// ends when the client is gone or the broker shuts down.
fn follow(
    topic: String,
    mode: MergeMode,
    mut followers: Vec<Follower>,
    framing: Framing,
    tx: mpsc::Sender<Bytes>,
    shutdown: watch::Receiver<bool>,
) {
    let mut last_sent = Instant::now();
    loop {
        if *shutdown.borrow() || tx.is_closed() {
            return;
        }
        let mut progressed = false;
        let mut lines = Vec::new();
        for follower in &mut followers {
            match follower.step(&topic, mode, &mut |change| {
                lines.push(framing.frame(&change))
            }) {
                Ok(stepped) => progressed |= stepped,
                Err(error) => {
                    tracing::warn!(topic, %error, "change feed stopped");
                    return;
                }
            }
        }
        for line in lines {
            if tx.blocking_send(line).is_err() {
                return;
            }
            last_sent = Instant::now();
        }
        if !progressed {
            if last_sent.elapsed() >= KEEP_ALIVE {
                if tx.blocking_send(framing.keep_alive()).is_err() {
                    return;
                }
                last_sent = Instant::now();
            }
            std::thread::sleep(POLL_PERIOD);
        }
    }
}

fn refuse(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// `GET /v1/tables/{topic}/changes?from=OFFSET`.
pub async fn changes(
    State(state): State<FeedState>,
    Path(topic_name): Path<String>,
    Query(query): Query<ChangesQuery>,
    headers: HeaderMap,
) -> Response {
    let Some(topic) = state.broker.topics.get(&topic_name) else {
        return refuse(
            StatusCode::NOT_FOUND,
            format!("topic {topic_name} does not exist"),
        );
    };
    let overrides = topic.overrides();
    if !is_table(&overrides) {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!("topic {topic_name} is not a table: set cleanup.policy=compact to make it one"),
        );
    }
    if query.from.is_some_and(|from| from < 0) {
        return refuse(StatusCode::BAD_REQUEST, "from must be at least 0".into());
    }
    let followers: Vec<Follower> = topic
        .partitions()
        .into_iter()
        .map(|partition| Follower {
            from: query.from.unwrap_or_else(|| partition.log.log_end_offset()),
            next: 0,
            partition,
            rows: HashMap::new(),
        })
        .collect();
    let framing = match headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) {
        Some(accept) if accept.contains("text/event-stream") => Framing::EventStream,
        _ => Framing::JsonLines,
    };
    let (tx, rx) = mpsc::channel::<Bytes>(BUFFERED_LINES);
    let mode = merge_mode(&overrides);
    let shutdown = state.shutdown.clone();
    tokio::task::spawn_blocking(move || follow(topic_name, mode, followers, framing, tx, shutdown));
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|line| (Ok::<_, Infallible>(line), rx))
    });
    let content_type = match framing {
        Framing::JsonLines => "application/x-ndjson",
        Framing::EventStream => "text/event-stream",
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}
