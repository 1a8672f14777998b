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
//! below `from`), so a line shows the row exactly as it was after that change, whatever the
//! materializer has done meanwhile. Opening a feed costs one read of the table's log (after
//! compaction, one record per key) and memory for its rows, so at most `--max-change-feeds` are
//! open at once (more are answered 503), and the rows of all open feeds together stay within
//! `--change-feeds-memory-bytes`: a feed whose rows would pass it ends with an error line
//! (`{"error": ...}`, or an SSE `event: error`). A feed is a task: its reads run a step at a
//! time in the change-feed lane of the blocking pool (`blocking.rs`), and between steps it holds
//! no thread.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
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
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use super::records::{for_each_write, skipped, Chunk, WriteReader};
use super::{is_table, merge_mode, partition_number, row_bytes, version_json};
use crate::broker::Broker;
use crate::topics::PartitionHandle;
use crate::{blocking, metrics};

/// How often an idle feed looks for new records.
const POLL_PERIOD: Duration = Duration::from_millis(20);
/// Keep-alive period of an idle feed.
const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// Log bytes read per step.
const CHUNK_BYTES: usize = 1 << 20;
/// Lines buffered for a slow client before the feed waits for it (a client that stops reading
/// is closed by the HTTP listener's write timeout).
const BUFFERED_LINES: usize = 1024;

/// What the change feed handler needs: the broker, the shutdown signal and the feeds' slots.
#[derive(Clone)]
pub struct FeedState {
    broker: Arc<Broker>,
    shutdown: watch::Receiver<bool>,
    /// One permit per feed that may be open (`--max-change-feeds`): each open feed holds a
    /// table's rows in memory and polls its log.
    slots: Arc<Semaphore>,
    slots_max: usize,
    /// The bytes of rows the open feeds hold, under `--change-feeds-memory-bytes`.
    memory: Arc<RowsMemory>,
}

impl FeedState {
    /// Feed state for the HTTP listener; feeds end when `shutdown` becomes true.
    pub fn new(broker: Arc<Broker>, shutdown: watch::Receiver<bool>) -> FeedState {
        let slots_max = broker.options.max_change_feeds as usize;
        let memory = Arc::new(RowsMemory {
            held: AtomicU64::new(0),
            max: broker.options.change_feeds_memory_bytes,
        });
        FeedState {
            broker,
            shutdown,
            slots: Arc::new(Semaphore::new(slots_max)),
            slots_max,
            memory,
        }
    }
}

/// The memory every open feed's rows share.
struct RowsMemory {
    held: AtomicU64,
    max: u64,
}

/// What one feed holds of [`RowsMemory`]; given back when the feed ends.
struct RowsReservation {
    memory: Arc<RowsMemory>,
    held: u64,
}

impl RowsReservation {
    /// Moves this feed's share from `old` to `new` bytes for one row; false (nothing changed)
    /// when the growth does not fit.
    fn resize(&mut self, old: u64, new: u64) -> bool {
        if new <= old {
            let freed = old - new;
            self.memory.held.fetch_sub(freed, Ordering::Relaxed);
            self.held -= freed;
            return true;
        }
        let more = new - old;
        let max = self.memory.max;
        let taken = self
            .memory
            .held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                held.checked_add(more).filter(|&total| total <= max)
            });
        if taken.is_err() {
            return false;
        }
        self.held += more;
        true
    }
}

impl Drop for RowsReservation {
    fn drop(&mut self) {
        self.memory.held.fetch_sub(self.held, Ordering::Relaxed);
    }
}

/// Why a feed stopped.
enum FeedError {
    Storage(causeway_storage::StorageError),
    /// Its rows would pass `--change-feeds-memory-bytes` (the limit).
    OverMemory(u64),
}

/// A feed's place under `--max-change-feeds`, counted in `causeway_table_feeds_open` while held.
struct FeedSlot {
    _permit: OwnedSemaphorePermit,
}

impl FeedSlot {
    fn take(state: &FeedState) -> Option<FeedSlot> {
        let permit = state.slots.clone().try_acquire_owned().ok()?;
        metrics::change_feed_open(true);
        Some(FeedSlot { _permit: permit })
    }
}

impl Drop for FeedSlot {
    fn drop(&mut self) {
        metrics::change_feed_open(false);
    }
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
    let version = row.version().as_ref().map(version_json);
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
    /// Each key's row and the bytes it is counted for.
    rows: HashMap<Bytes, (Row, u64)>,
}

impl Follower {
    /// Applies the next chunk, if any; returns whether there was one.
    fn step(
        &mut self,
        topic: &str,
        mode: MergeMode,
        memory: &mut RowsReservation,
        emit: &mut impl FnMut(Change),
    ) -> Result<bool, FeedError> {
        let log = &self.partition.log();
        let start = self.next.max(log.log_start_offset());
        let Some(chunk) = Chunk::read(log, start, CHUNK_BYTES).map_err(FeedError::Storage)? else {
            return Ok(false);
        };
        let reader = WriteReader {
            topic,
            partition: partition_number(&self.partition),
            mode,
            from: start,
            count_refusals: false,
        };
        let index = self.partition.index();
        for (header, batch) in &chunk.batches {
            if skipped(header, &chunk.aborted) {
                continue;
            }
            let Some(meta) = chunk.metas.get(&header.base_offset) else {
                return Err(FeedError::Storage(causeway_storage::StorageError::Corrupt(
                    format!(
                        "{topic}-{index}: no causal entry for the batch at offset {}",
                        header.base_offset
                    ),
                )));
            };
            let mut over_memory = false;
            for_each_write(&reader, header, batch, meta, |record| {
                if over_memory {
                    return;
                }
                let (row, counted) = self.rows.entry(record.key.clone()).or_default();
                record.write.apply_to(row);
                let size = row_bytes(&record.key, row);
                if !memory.resize(*counted, size) {
                    over_memory = true;
                    return;
                }
                *counted = size;
                if record.offset >= self.from {
                    emit(Change {
                        partition: index,
                        offset: record.offset,
                        json: change_json(index, record.offset, &record.key, row),
                    });
                }
            });
            if over_memory {
                return Err(FeedError::OverMemory(memory.memory.max));
            }
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

    /// The last line of a feed that ends on an error.
    fn error(self, message: &str) -> Bytes {
        let json = json!({ "error": message });
        match self {
            Framing::JsonLines => Bytes::from(format!("{json}\n")),
            Framing::EventStream => Bytes::from(format!("event: error\ndata: {json}\n\n")),
        }
    }
}

/// A feed's state between steps: what it follows and how it frames lines.
struct Feed {
    topic: String,
    mode: MergeMode,
    followers: Vec<Follower>,
    framing: Framing,
    memory: RowsReservation,
}

impl Feed {
    /// Steps every follower once (blocking reads), returning the framed lines and whether any
    /// follower found new records.
    fn step(mut self) -> (Feed, Result<(Vec<Bytes>, bool), FeedError>) {
        let mut progressed = false;
        let mut lines = Vec::new();
        let framing = self.framing;
        for follower in &mut self.followers {
            match follower.step(&self.topic, self.mode, &mut self.memory, &mut |change| {
                lines.push(framing.frame(&change))
            }) {
                Ok(stepped) => progressed |= stepped,
                Err(error) => return (self, Err(error)),
            }
        }
        (self, Ok((lines, progressed)))
    }
}

/// The feed's loop, a task that holds no thread between steps: each step's reads run in the
/// change-feed lane; lines go out through a bounded channel (a client that stops reading stalls
/// its connection until the HTTP write timeout closes it); idle, it sleeps and keeps the
/// connection alive. Ends when the client is gone or the broker shuts down; `_slot` is the
/// feed's place under `--max-change-feeds`.
async fn follow(
    mut feed: Feed,
    tx: mpsc::Sender<Bytes>,
    mut shutdown: watch::Receiver<bool>,
    _slot: FeedSlot,
) {
    let mut last_sent = Instant::now();
    loop {
        if *shutdown.borrow() || tx.is_closed() {
            return;
        }
        let stepped = match blocking::FEEDS.run(move || feed.step()).await {
            Ok(stepped) => stepped,
            Err(error) => {
                tracing::warn!(%error, "change feed step failed");
                return;
            }
        };
        let lines;
        let progressed;
        (feed, (lines, progressed)) = match stepped {
            (feed, Ok(step)) => (feed, step),
            (feed, Err(FeedError::Storage(error))) => {
                tracing::warn!(topic = feed.topic, %error, "change feed stopped");
                return;
            }
            (feed, Err(FeedError::OverMemory(max))) => {
                metrics::change_feed_over_memory();
                tracing::warn!(
                    topic = feed.topic,
                    memory_bytes = max,
                    "change feed ended: the rows of the open feeds would pass --change-feeds-memory-bytes"
                );
                let message = format!(
                    "the rows of the open change feeds would pass {max} bytes (--change-feeds-memory-bytes); read the table (GET /v1/tables/{}) or open the feed again later",
                    feed.topic
                );
                let _ = tx.send(feed.framing.error(&message)).await;
                return;
            }
        };
        for line in lines {
            tokio::select! {
                sent = tx.send(line) => if sent.is_err() { return },
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            last_sent = Instant::now();
        }
        if !progressed {
            if last_sent.elapsed() >= KEEP_ALIVE {
                if tx.send(feed.framing.keep_alive()).await.is_err() {
                    return;
                }
                last_sent = Instant::now();
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL_PERIOD) => {}
                _ = tx.closed() => return,
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
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
    let Some(slot) = FeedSlot::take(&state) else {
        metrics::change_feed_refused();
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} change feeds are open (--max-change-feeds); try again later",
                state.slots_max
            ),
        );
    };
    let followers: Vec<Follower> = topic
        .partitions()
        .into_iter()
        .map(|partition| Follower {
            from: query
                .from
                .unwrap_or_else(|| partition.log().log_end_offset()),
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
    let feed = Feed {
        mode: merge_mode(&overrides),
        topic: topic_name,
        followers,
        framing,
        memory: RowsReservation {
            memory: state.memory.clone(),
            held: 0,
        },
    };
    tokio::spawn(follow(feed, tx, state.shutdown.clone(), slot));
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
