//! Prometheus metrics: the recorder behind the `metrics` facade and every metric the broker
//! crate emits, in one place so names stay consistent (`causeway_` prefix, base units,
//! `_total` counters, labels bounded by API key, topic and partition).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kafka_protocol::messages::ApiKey;
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets in seconds: 50 µs to 10 s.
const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// Installs the global recorder; the handle renders `/metrics`.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".to_string()),
            LATENCY_BUCKETS_SECONDS,
        )?
        .install_recorder()?;
    Ok(handle)
}

/// The standard process metrics (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
/// `process_open_fds`, `process_max_fds`, `process_start_time_seconds`, ...), read at each
/// scrape.
static PROCESS: std::sync::OnceLock<metrics_process::Collector> = std::sync::OnceLock::new();

/// Refreshes the process metrics; called before each render.
pub fn collect_process() {
    PROCESS
        .get_or_init(|| {
            let collector = metrics_process::Collector::default();
            collector.describe();
            collector
        })
        .collect();
}

/// Publishes what this process is: `causeway_build_info{version,commit}` and
/// `causeway_region_info{region,region_id}` (both 1), so a dashboard over several regions can
/// join on the region without relabelling.
pub fn publish_identity(region: &str, region_id: u32) {
    gauge!(
        "causeway_build_info",
        "version" => env!("CARGO_PKG_VERSION"),
        "commit" => env!("CAUSEWAY_COMMIT")
    )
    .set(1.0);
    gauge!(
        "causeway_region_info",
        "region" => region.to_owned(),
        "region_id" => region_id.to_string()
    )
    .set(1.0);
}

/// Counts a handled request and records its latency.
pub fn request_handled(api_key: ApiKey, version: i16, elapsed: Duration) {
    let api = api_name(api_key);
    counter!("causeway_requests_total", "api" => api, "version" => version.to_string())
        .increment(1);
    histogram!("causeway_request_duration_seconds", "api" => api).record(elapsed.as_secs_f64());
}

/// Counts a partition-level error answered to a client.
pub fn request_error(api_key: ApiKey, error_code: i16) {
    counter!(
        "causeway_request_errors_total",
        "api" => api_name(api_key),
        "error_code" => error_code.to_string()
    )
    .increment(1);
}

/// Counts a connection closed because its input broke the protocol.
pub fn connection_closed_for_bad_input() {
    counter!("causeway_connections_closed_bad_input_total").increment(1);
}

/// Counts a connection refused or closed by a listener limit (`connection_limit`,
/// `per_ip_limit`, `request_budget`, `idle`).
pub fn connection_refused(reason: &'static str) {
    counter!("causeway_connections_refused_total", "reason" => reason).increment(1);
}

/// Marks a blocking-pool thread busy in a lane (`blocking.rs`) while it lives: a lane that
/// stays at its size is where blocking work queues.
pub struct BlockingBusy {
    lane: &'static str,
}

impl BlockingBusy {
    /// Counts the task and marks its thread busy.
    pub fn enter(lane: &'static str) -> BlockingBusy {
        counter!("causeway_blocking_tasks_total", "lane" => lane).increment(1);
        gauge!("causeway_blocking_busy_threads", "lane" => lane).increment(1.0);
        BlockingBusy { lane }
    }
}

impl Drop for BlockingBusy {
    fn drop(&mut self) {
        gauge!("causeway_blocking_busy_threads", "lane" => self.lane).decrement(1.0);
    }
}

/// Counts a change feed refused because `--max-change-feeds` were open.
pub fn change_feed_refused() {
    counter!("causeway_table_feeds_refused_total").increment(1);
}

/// Counts a change feed ended because its rows would pass `--change-feeds-memory-bytes`.
pub fn change_feed_over_memory() {
    counter!("causeway_table_feeds_over_memory_total").increment(1);
}

/// Counts a change feed opened (`true`) or closed (`false`) in `causeway_table_feeds_open`.
pub fn change_feed_open(opened: bool) {
    let open = gauge!("causeway_table_feeds_open");
    if opened {
        open.increment(1.0);
    } else {
        open.decrement(1.0);
    }
}

/// Counts an HTTP connection closed because its client stopped reading what it was sent.
pub fn http_write_stalled() {
    counter!("causeway_http_connections_closed_total", "reason" => "write_stalled").increment(1);
}

/// Counts what Produce appended to a topic.
pub fn produced(topic: &str, records: u64, bytes: u64) {
    counter!("causeway_produce_records_total", "topic" => topic.to_string()).increment(records);
    counter!("causeway_produce_bytes_total", "topic" => topic.to_string()).increment(bytes);
}

/// Counts a retried idempotent batch answered with its original offsets instead of appended.
pub fn duplicate_batch(topic: &str) {
    counter!("causeway_produce_duplicate_batches_total", "topic" => topic.to_string()).increment(1);
}

/// Counts a produced batch stored in its topic's `compression.type` instead of the producer's
/// codec (each costs a decompression and a compression on the produce path).
pub fn recompressed_batch(topic: &str) {
    counter!("causeway_produce_recompressed_batches_total", "topic" => topic.to_string())
        .increment(1);
}

/// Counts fsyncs made because batches waited `flush.ms` unsynced.
pub fn log_flushed(topic: &str) {
    counter!("causeway_log_flushes_total", "topic" => topic.to_string()).increment(1);
}

/// Counts transactional ids forgotten after `--transactional-id-expiration-ms` idle.
pub fn transactional_id_expired() {
    counter!("causeway_transactional_ids_expired_total").increment(1);
}

/// Counts table writes merged into rows.
pub fn table_merged(topic: &str, merges: u64) {
    counter!("causeway_table_merges_total", "topic" => topic.to_string()).increment(merges);
}

/// Counts a record a table could not apply, by reason (never dropped silently).
pub fn table_refused(topic: &str, reason: &'static str) {
    counter!("causeway_table_refused_records_total", "topic" => topic.to_string(), "reason" => reason)
        .increment(1);
}

/// Registers a table's compaction counters at zero, so dashboards show the series before the
/// first pass.
pub fn compaction_registered(topic: &str) {
    counter!("causeway_compaction_bytes_reclaimed_total", "topic" => topic.to_string())
        .increment(0);
    counter!("causeway_compaction_runs_total", "topic" => topic.to_string()).increment(0);
    counter!("causeway_compaction_memory_bound_total", "topic" => topic.to_string()).increment(0);
}

/// Counts a compaction pass cut short because the table's rows outgrew
/// `--log-cleaner-memory-bytes` (part of the table, or none of it, stays uncompacted).
pub fn compaction_memory_bound(topic: &str) {
    counter!("causeway_compaction_memory_bound_total", "topic" => topic.to_string()).increment(1);
}

/// Counts one compaction pass over a table partition: `.log` bytes it reclaimed and how long
/// it took.
pub fn compaction_pass(topic: &str, bytes_reclaimed: u64, elapsed: Duration) {
    counter!("causeway_compaction_bytes_reclaimed_total", "topic" => topic.to_string())
        .increment(bytes_reclaimed);
    counter!("causeway_compaction_runs_total", "topic" => topic.to_string()).increment(1);
    histogram!("causeway_compaction_duration_seconds", "topic" => topic.to_string())
        .record(elapsed.as_secs_f64());
}

/// Counts one completed scrub pass over every partition's closed segments and how long it took.
pub fn scrub_pass(elapsed: Duration) {
    counter!("causeway_scrub_passes_total").increment(1);
    gauge!("causeway_scrub_last_pass_seconds").set(elapsed.as_secs_f64());
}

/// Counts transactions this region aborted because their origin region went stale with them
/// open.
pub fn transaction_abandoned_aborted() {
    counter!("causeway_transactions_abandoned_aborted_total").increment(1);
}

/// Counts commits that another region's abort overruled (the origin was out of reach too long).
pub fn transaction_commit_overruled() {
    counter!("causeway_transactions_commits_overruled_total").increment(1);
}

/// Counts replicated batches applied here, by topic.
pub fn replication_applied(topic: &str, batches: usize, bytes: u64) {
    counter!("causeway_replication_applied_batches_total", "topic" => topic.to_string())
        .increment(batches as u64);
    counter!("causeway_replication_applied_bytes_total", "topic" => topic.to_string())
        .increment(bytes);
}

/// Counts batches served to peers' pulls, by topic.
pub fn replication_served(topic: &str, batches: usize, bytes: usize) {
    if batches > 0 {
        counter!("causeway_replication_served_batches_total", "topic" => topic.to_string())
            .increment(batches as u64);
        counter!("causeway_replication_served_bytes_total", "topic" => topic.to_string())
            .increment(bytes as u64);
    }
}

/// Counts something refused on a replication link (never applied), by reason.
pub fn replication_refused(reason: &'static str) {
    counter!("causeway_replication_refused_total", "reason" => reason).increment(1);
}

/// Counts batches copied from a peer while seeding this region.
pub fn replication_seeded(batches: u64, bytes: u64) {
    counter!("causeway_replication_seed_batches_total").increment(batches);
    counter!("causeway_replication_seed_bytes_total").increment(bytes);
}

/// Publishes how many partitions a seed still has to copy.
pub fn replication_seed_partitions_remaining(partitions: u64) {
    gauge!("causeway_replication_seed_partitions_remaining").set(partitions as f64);
}

/// Counts a pull from `peer` that asked for batches this region deleted.
pub fn replication_deleted_asked(peer: &str) {
    counter!("causeway_replication_deleted_asked_total", "peer" => peer.to_string()).increment(1);
}

/// Counts a failed attempt of the link to a peer.
pub fn replication_link_failure(peer: &str) {
    counter!("causeway_replication_link_failures_total", "peer" => peer.to_string()).increment(1);
}

/// Publishes this region's vector clock summed over partitions: batches applied per origin.
pub fn replication_clock(origin: &str, batches: u64) {
    gauge!("causeway_replication_clock_batches", "origin" => origin.to_string())
        .set(batches as f64);
}

/// Publishes how many batches wait in pending queues for their dependencies.
pub fn replication_buffered(batches: usize) {
    gauge!("causeway_replication_buffered_batches").set(batches as f64);
}

/// How far apart this region and one peer are, each way: batches and the age of the oldest.
#[derive(Debug, Clone, Copy)]
pub struct PeerGap {
    /// The peer's own batches this region lacks.
    pub lag_batches: u64,
    /// Age of the oldest of them.
    pub lag_seconds: f64,
    /// This region's own batches the peer lacks.
    pub peer_behind_batches: u64,
    /// Age of the oldest of them.
    pub peer_behind_seconds: f64,
}

/// Publishes one peer link's lag each way and its health.
pub fn replication_peer(peer: &str, gap: PeerGap, up: bool, stale: bool) {
    let label = || ("peer", peer.to_string());
    gauge!("causeway_replication_lag_batches", &[label()]).set(gap.lag_batches as f64);
    gauge!("causeway_replication_lag_seconds", &[label()]).set(gap.lag_seconds);
    gauge!("causeway_replication_peer_behind_batches", &[label()])
        .set(gap.peer_behind_batches as f64);
    gauge!("causeway_replication_peer_behind_seconds", &[label()]).set(gap.peer_behind_seconds);
    gauge!("causeway_replication_link_up", &[label()]).set(f64::from(u8::from(up)));
    gauge!("causeway_replication_peer_stale", &[label()]).set(f64::from(u8::from(stale)));
}

/// Counts what Fetch returned from a topic.
pub fn fetched(topic: &str, records: u64, bytes: u64) {
    counter!("causeway_fetch_records_total", "topic" => topic.to_string()).increment(records);
    counter!("causeway_fetch_bytes_total", "topic" => topic.to_string()).increment(bytes);
}

/// Counts a completed rebalance of a consumer group.
pub fn group_rebalanced(group: &str) {
    counter!("causeway_consumer_group_rebalances_total", "group" => group.to_string()).increment(1);
}

/// Counts committed positions written for other regions (one per partition).
pub fn positions_written(rows: usize) {
    counter!("causeway_group_positions_written_total").increment(rows as u64);
}

/// Counts SASL authentications by mechanism and outcome: failures in bulk are someone guessing.
pub fn sasl_authentication(mechanism: &'static str, succeeded: bool) {
    let result = if succeeded { "success" } else { "failure" };
    counter!("causeway_sasl_authentications_total", "mechanism" => mechanism, "result" => result)
        .increment(1);
}

/// Counts TLS handshakes by listener (`kafka`, `http`) and outcome (`ok`, `failed`,
/// `timeout`): failures are clients with the wrong authority, expired certificates or plaintext
/// on a TLS port.
pub fn tls_handshake(listener: &'static str, result: &'static str) {
    counter!("causeway_tls_handshakes_total", "listener" => listener, "result" => result)
        .increment(1);
}

/// Counts reloads of the TLS certificate and key (SIGHUP) by outcome.
pub fn tls_reload(succeeded: bool) {
    let result = if succeeded { "ok" } else { "failed" };
    counter!("causeway_tls_reloads_total", "result" => result).increment(1);
}

/// When the certificate TLS listeners present expires (Unix seconds), so an alert can fire
/// before it does.
pub fn tls_certificate_expiry(not_after_unix_seconds: i64) {
    gauge!("causeway_tls_certificate_expiry_seconds").set(not_after_unix_seconds as f64);
}

/// Counts HTTP authentications by method (`basic`, `bearer`, or `none` for a request without
/// usable credentials) and outcome: failures in bulk are someone guessing.
pub fn http_authentication(method: &'static str, succeeded: bool) {
    let result = if succeeded { "ok" } else { "failed" };
    counter!("causeway_http_authentications_total", "method" => method, "result" => result)
        .increment(1);
}

/// Lets one log line of a kind through per second; the rest are only counted (by the caller's
/// metric), so a client repeating a refused request cannot flood the log.
pub struct LogLimiter {
    last_logged_ms: AtomicU64,
}

impl LogLimiter {
    /// Least time between two lines.
    const INTERVAL_MS: u64 = 1_000;

    /// A limiter that lets the first line through.
    pub fn new() -> LogLimiter {
        LogLimiter {
            last_logged_ms: AtomicU64::new(0),
        }
    }

    /// Whether a line may be logged now (and, if so, the next one only a second later).
    pub fn allow(&self) -> bool {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let last = self.last_logged_ms.load(Ordering::Relaxed);
        now_ms.saturating_sub(last) >= Self::INTERVAL_MS
            && self
                .last_logged_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

impl Default for LogLimiter {
    fn default() -> LogLimiter {
        LogLimiter::new()
    }
}

/// Counts responses throttled by a client quota and the throttle time they carried, by the
/// quota exceeded (`produce`, `fetch`, `request`).
pub fn quota_throttled(kind: &'static str, throttle_ms: u64) {
    counter!("causeway_quota_throttled_responses_total", "kind" => kind).increment(1);
    counter!("causeway_quota_throttle_time_ms_total", "kind" => kind).increment(throttle_ms);
}

/// Counts requests (or parts of them) refused by the ACLs, by what was asked of which kind of
/// resource: an operator sees a client misconfigured or probing.
pub fn authorization_denied(resource_type: &'static str, operation: &'static str) {
    counter!(
        "causeway_authorization_denials_total",
        "resource_type" => resource_type,
        "operation" => operation
    )
    .increment(1);
}

/// Counts commits whose positions could not be written for other regions.
pub fn positions_write_failed() {
    counter!("causeway_group_positions_write_failures_total").increment(1);
}

/// Publishes where a group resumed here from a position another region committed: what it
/// may see again (records held here, batches still to arrive).
pub fn position_translated(
    group: &str,
    topic: &str,
    partition: i32,
    repeat_records: i64,
    missing_batches: u64,
) {
    counter!("causeway_group_positions_translated_total").increment(1);
    let labels = [
        ("group", group.to_string()),
        ("topic", topic.to_string()),
        ("partition", partition.to_string()),
    ];
    gauge!("causeway_group_failover_repeat_records", &labels).set(repeat_records as f64);
    gauge!("causeway_group_failover_missing_batches", &labels).set(missing_batches as f64);
}

/// Publishes how many partitions the last start had to scan for torn writes (0 after a clean
/// shutdown).
pub fn storage_partitions_recovered(count: usize) {
    gauge!("causeway_storage_partitions_recovered").set(count as f64);
}

/// Counts partitions a peer's catalog asked this broker to host that `--max-partitions` had no
/// room for: the topic exists in the mesh, but not (or not whole) here.
pub fn topic_partitions_held_back(count: u32) {
    counter!("causeway_topic_partitions_held_back_total").increment(u64::from(count));
}

/// Counts topic configs a merged catalog carries that this broker refuses (a peer with other
/// limits or another version set them): each is left out here and its default applies.
pub fn topic_configs_not_applied(count: usize) {
    counter!("causeway_topic_configs_not_applied_total").increment(count as u64);
}

/// Holds the active-connections gauge up while a connection lives.
pub struct ConnectionGauge(());

impl ConnectionGauge {
    /// Counts one more open connection until dropped.
    pub fn open() -> ConnectionGauge {
        gauge!("causeway_connections_active").increment(1.0);
        counter!("causeway_connections_total").increment(1);
        ConnectionGauge(())
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        gauge!("causeway_connections_active").decrement(1.0);
    }
}

fn api_name(api_key: ApiKey) -> &'static str {
    match api_key {
        ApiKey::Produce => "produce",
        ApiKey::Fetch => "fetch",
        ApiKey::ListOffsets => "list_offsets",
        ApiKey::Metadata => "metadata",
        ApiKey::ApiVersions => "api_versions",
        ApiKey::CreateTopics => "create_topics",
        ApiKey::DeleteTopics => "delete_topics",
        ApiKey::DeleteRecords => "delete_records",
        ApiKey::OffsetForLeaderEpoch => "offset_for_leader_epoch",
        ApiKey::DescribeConfigs => "describe_configs",
        ApiKey::AlterConfigs => "alter_configs",
        ApiKey::CreatePartitions => "create_partitions",
        ApiKey::IncrementalAlterConfigs => "incremental_alter_configs",
        ApiKey::DescribeCluster => "describe_cluster",
        ApiKey::FindCoordinator => "find_coordinator",
        ApiKey::JoinGroup => "join_group",
        ApiKey::SyncGroup => "sync_group",
        ApiKey::Heartbeat => "heartbeat",
        ApiKey::LeaveGroup => "leave_group",
        ApiKey::OffsetCommit => "offset_commit",
        ApiKey::OffsetFetch => "offset_fetch",
        ApiKey::ListGroups => "list_groups",
        ApiKey::DescribeGroups => "describe_groups",
        ApiKey::DeleteGroups => "delete_groups",
        ApiKey::OffsetDelete => "offset_delete",
        _ => "other",
    }
}
