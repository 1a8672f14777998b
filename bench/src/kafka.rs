//! librdkafka plumbing shared by the modes: client context, client
//! configurations, broker reachability check and topic creation.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::message::ToBytes;
use rdkafka::metadata::Metadata;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;

use crate::cli::{CommonArgs, Delivery};

/// Client context that remembers client-level errors (for clear error
/// messages) and counts delivery reports.
#[derive(Debug, Default)]
pub struct BenchContext {
    /// First and latest client-level error.
    errors: Mutex<(Option<String>, Option<String>)>,
    delivered: AtomicU64,
    failed: AtomicU64,
    first_failure: Mutex<Option<String>>,
}

impl BenchContext {
    /// The first client-level error reported by librdkafka and, if it
    /// differs, the latest one; `None` if there was none.
    pub fn client_errors(&self) -> Option<String> {
        let errors = self.errors.lock().ok()?;
        match &*errors {
            (Some(first), Some(last)) if first != last => {
                Some(format!("first: {first}; latest: {last}"))
            }
            (Some(first), _) => Some(first.clone()),
            _ => None,
        }
    }

    /// Records successfully delivered so far.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Records whose delivery failed so far.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Error of the first failed delivery, if any.
    pub fn first_failure(&self) -> Option<String> {
        self.first_failure.lock().ok().and_then(|e| e.clone())
    }

    /// Fails if any delivery failed so far.
    pub fn check_deliveries(&self) -> Result<()> {
        let failed = self.failed();
        if failed > 0 {
            bail!(
                "{failed} record(s) failed to be delivered (delivered: {}); first error: {}",
                self.delivered(),
                self.first_failure().unwrap_or_default()
            );
        }
        Ok(())
    }

    /// Appends the last client error to `msg`, if there is one.
    pub fn explain(&self, msg: String) -> String {
        match self.client_errors() {
            Some(e) => format!("{msg}; client errors: {e}"),
            None => msg,
        }
    }
}

impl ClientContext for BenchContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        // Keep the output clean; warnings and errors surface through
        // `error` and delivery reports. Show them only when debugging.
        if debug_enabled() {
            eprintln!("librdkafka {level:?} {fac}: {log_message}");
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let message = format!("{error} ({reason})");
        if let Ok(mut errors) = self.errors.lock() {
            if errors.0.is_none() {
                errors.0 = Some(message.clone());
            }
            errors.1 = Some(message);
        }
    }
}

impl ProducerContext for BenchContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((err, _)) => {
                if self.failed.fetch_add(1, Ordering::Relaxed) == 0 {
                    if let Ok(mut first) = self.first_failure.lock() {
                        *first = Some(err.to_string());
                    }
                }
            }
        }
    }
}

impl ConsumerContext for BenchContext {}

/// Configuration shared by every client: bootstrap servers and `-X` overrides
/// (applied last by [`finish`]).
fn base_config(common: &CommonArgs) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &common.brokers)
        .set("client.id", "causeway-bench");
    if debug_enabled() {
        config.set_log_level(RDKafkaLogLevel::Debug);
    }
    config
}

/// Whether `CAUSEWAY_BENCH_DEBUG` asks for librdkafka's log on stderr
/// (combine with `-X debug=fetch,msg,...` for protocol-level detail).
fn debug_enabled() -> bool {
    std::env::var_os("CAUSEWAY_BENCH_DEBUG").is_some()
}

/// Applies the user's `-X` overrides on top of `config`.
fn finish(mut config: ClientConfig, common: &CommonArgs) -> ClientConfig {
    for (key, value) in &common.rdkafka {
        config.set(key, value);
    }
    config
}

/// Producer configuration from the command line; `linger_ms` is the mode's
/// linger and `timeout` bounds delivery (`message.timeout.ms`).
pub fn producer_config(common: &CommonArgs, linger_ms: u64, timeout: Duration) -> ClientConfig {
    let mut config = base_config(common);
    // librdkafka caps a batch at min(batch.size, message.max.bytes), so raise
    // message.max.bytes when a batch larger than its default is requested.
    let max_message = common
        .producer
        .batch_bytes
        .saturating_add(1024)
        .max(1_000_000);
    config
        .set("linger.ms", linger_ms.to_string())
        .set("batch.size", common.producer.batch_bytes.to_string())
        .set("message.max.bytes", max_message.to_string())
        .set("acks", common.producer.acks.as_config())
        .set("compression.codec", common.compression.as_config())
        .set("message.timeout.ms", timeout.as_millis().to_string())
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576");
    finish(config, common)
}

/// Configuration of the `produce` producer: [`producer_config`] plus the
/// delivery mode. Idempotence and transactions require `acks=all`, so they
/// override `--acks`; `-X` overrides are still applied last.
pub fn delivery_producer_config(
    common: &CommonArgs,
    delivery: &Delivery,
    linger_ms: u64,
    timeout: Duration,
) -> ClientConfig {
    let mut config = producer_config(common, linger_ms, timeout);
    match delivery {
        Delivery::Plain => {}
        Delivery::Idempotent => {
            config.set("enable.idempotence", "true").set("acks", "all");
        }
        Delivery::Transactional { id, .. } => {
            // librdkafka requires message.timeout.ms <= transaction.timeout.ms.
            let txn_timeout = timeout.as_millis().max(60_000);
            config
                .set("enable.idempotence", "true")
                .set("acks", "all")
                .set("transactional.id", id)
                .set("transaction.timeout.ms", txn_timeout.to_string());
        }
    }
    finish(config, common)
}

/// Consumer configuration: a unique group that never commits, generous
/// fetch sizes, and manual assignment by the caller.
pub fn consumer_config(common: &CommonArgs) -> ClientConfig {
    let mut config = base_config(common);
    config
        .set("group.id", unique_group_id())
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.max.bytes", (64 * 1024 * 1024).to_string())
        .set("max.partition.fetch.bytes", (8 * 1024 * 1024).to_string())
        // One fetch response can carry several MB per partition; with the
        // default local queue limits librdkafka would then pause fetching
        // for fetch.queue.backoff.ms (1 s), measuring the client, not the
        // broker.
        .set("queued.min.messages", "1000000")
        .set("queued.max.messages.kbytes", "1048576")
        .set("fetch.queue.backoff.ms", "10");
    finish(config, common)
}

/// A group id no other client uses.
fn unique_group_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("causeway-bench-{}-{nanos}", std::process::id())
}

/// Creates a producer with the counting [`BenchContext`].
pub fn create_producer(config: &ClientConfig) -> Result<BaseProducer<BenchContext>> {
    config
        .create_with_context(BenchContext::default())
        .context("cannot create the librdkafka producer (check -X properties)")
}

/// Waits until the cluster answers a metadata request, or fails after
/// `timeout` with the reason librdkafka gives (e.g. connection refused).
pub fn wait_for_cluster(
    producer: &BaseProducer<BenchContext>,
    brokers: &str,
    timeout: Duration,
) -> Result<Metadata> {
    let deadline = Instant::now() + timeout;
    loop {
        let attempt = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_secs(1))
            .max(Duration::from_millis(10));
        let result = producer.client().fetch_metadata(None, attempt);
        // Serve error events so the context learns why connecting fails.
        producer.poll(Duration::from_millis(10));
        match result {
            Ok(metadata) if !metadata.brokers().is_empty() => return Ok(metadata),
            Ok(_) => std::thread::sleep(Duration::from_millis(100)),
            Err(err) if Instant::now() >= deadline => {
                let msg = format!(
                    "cannot reach Kafka broker(s) at {brokers} within {} s: {err}",
                    timeout.as_secs()
                );
                bail!(producer.context().explain(msg));
            }
            Err(_) => {}
        }
        if Instant::now() >= deadline {
            bail!("broker(s) at {brokers} returned metadata without any broker");
        }
    }
}

/// Makes sure `topic` exists, creating it with `partitions` partitions if
/// needed, waits until every partition has a leader and returns the
/// partition count (which may differ from `partitions` for an existing topic).
pub fn ensure_topic(
    producer: &BaseProducer<BenchContext>,
    common: &CommonArgs,
    create: bool,
) -> Result<i32> {
    ensure_topic_with_config(producer, common, create, &[])
}

/// [`ensure_topic`] that creates a missing topic with the topic configs
/// `configs` (e.g. `cleanup.policy=compact`). An existing topic keeps its
/// configuration.
pub fn ensure_topic_with_config(
    producer: &BaseProducer<BenchContext>,
    common: &CommonArgs,
    create: bool,
    configs: &[(&str, &str)],
) -> Result<i32> {
    let timeout = Duration::from_secs(common.connect_timeout_s);
    if create {
        create_topic(common, timeout, configs)?;
    }
    let deadline = Instant::now() + timeout;
    loop {
        let metadata = producer
            .client()
            .fetch_metadata(None, timeout)
            .map_err(|e| {
                anyhow!(producer
                    .context()
                    .explain(format!("metadata request failed: {e}")))
            })?;
        let topic = metadata.topics().iter().find(|t| t.name() == common.topic);
        let ready = topic.and_then(|t| {
            let parts = t.partitions();
            let ok = t.error().is_none()
                && !parts.is_empty()
                && parts.iter().all(|p| p.error().is_none() && p.leader() >= 0);
            ok.then_some(parts.len())
        });
        if let Some(count) = ready {
            let count = i32::try_from(count).context("too many partitions")?;
            if count != common.partitions {
                eprintln!(
                    "note: topic '{}' already exists with {count} partitions (requested {}); using {count}",
                    common.topic, common.partitions
                );
            }
            return Ok(count);
        }
        if Instant::now() >= deadline {
            match topic {
                None if !create => bail!(
                    "topic '{}' does not exist at {}; run `causeway-bench produce` first",
                    common.topic,
                    common.brokers
                ),
                None => bail!(
                    "topic '{}' was created but does not appear in metadata after {} s",
                    common.topic,
                    timeout.as_secs()
                ),
                Some(_) => bail!(
                    "topic '{}' has partitions without a leader after {} s",
                    common.topic,
                    timeout.as_secs()
                ),
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Issues CreateTopics; an already existing topic is not an error.
fn create_topic(common: &CommonArgs, timeout: Duration, configs: &[(&str, &str)]) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = finish(base_config(common), common)
        .create()
        .context("cannot create the librdkafka admin client")?;
    let mut topic = NewTopic::new(
        &common.topic,
        common.partitions,
        TopicReplication::Fixed(common.replication_factor),
    );
    for (key, value) in configs {
        topic = topic.set(key, value);
    }
    let options = AdminOptions::new()
        .operation_timeout(Some(timeout))
        .request_timeout(Some(timeout));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .context("cannot start the async runtime")?;
    let results = runtime
        .block_on(async {
            tokio::time::timeout(
                timeout + Duration::from_secs(1),
                admin.create_topics([&topic], &options),
            )
            .await
        })
        .map_err(|_| anyhow!("CreateTopics for '{}' timed out", common.topic))?
        .with_context(|| format!("CreateTopics for '{}' failed", common.topic))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => bail!("cannot create topic '{name}': {code}"),
        }
    }
    Ok(())
}

/// Enqueues one record, serving delivery reports while librdkafka's local queue is full, for
/// at most `timeout` (a broker that stops accepting records fails the run instead of hanging).
pub fn send_waiting_for_room<K: ToBytes + ?Sized>(
    producer: &BaseProducer<BenchContext>,
    mut record: BaseRecord<'_, K, [u8]>,
    timeout: Duration,
) -> Result<()> {
    let mut stalled_since: Option<Instant> = None;
    while let Err((err, returned)) = producer.send(record) {
        match err {
            KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) => {
                let since = *stalled_since.get_or_insert_with(Instant::now);
                if since.elapsed() > timeout {
                    bail!(producer.context().explain(format!(
                        "producer queue stayed full for {} s (broker not accepting records?)",
                        timeout.as_secs()
                    )));
                }
                producer.poll(Duration::from_millis(1));
                producer.context().check_deliveries()?;
                record = returned;
            }
            other => bail!("cannot enqueue a record: {other}"),
        }
    }
    Ok(())
}

/// Serves delivery reports in 1 ms polls until `done` holds. Past `timeout` it fails with the
/// first failed delivery, if any, else with `what()` explained.
pub fn poll_until(
    producer: &BaseProducer<BenchContext>,
    timeout: Duration,
    mut done: impl FnMut() -> bool,
    what: impl FnOnce() -> String,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let context = producer.context();
    while !done() {
        if Instant::now() >= deadline {
            context.check_deliveries()?;
            bail!(context.explain(what()));
        }
        producer.poll(Duration::from_millis(1));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_keeps_first_and_latest_error() {
        let ctx = BenchContext::default();
        assert_eq!(ctx.client_errors(), None);
        assert_eq!(ctx.explain("boom".into()), "boom");
        ctx.error(
            KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure),
            "refused",
        );
        let one = ctx.client_errors().expect("one error");
        assert!(one.contains("refused"), "{one}");
        ctx.error(KafkaError::Global(RDKafkaErrorCode::AllBrokersDown), "down");
        ctx.error(KafkaError::Global(RDKafkaErrorCode::AllBrokersDown), "down");
        let both = ctx.client_errors().expect("errors");
        assert!(
            both.starts_with("first: ") && both.contains("refused"),
            "{both}"
        );
        assert!(both.contains("latest: ") && both.contains("down"), "{both}");
        assert!(ctx
            .explain("boom".into())
            .starts_with("boom; client errors: first: "));
    }

    #[test]
    fn no_delivery_failure_is_ok() {
        let ctx = BenchContext::default();
        assert!(ctx.check_deliveries().is_ok());
        assert_eq!(ctx.delivered(), 0);
        assert_eq!(ctx.failed(), 0);
        assert_eq!(ctx.first_failure(), None);
    }

    #[test]
    fn configs_carry_the_options() {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from([
            "causeway-bench",
            "produce",
            "--acks",
            "all",
            "--compression",
            "zstd",
            "--batch-bytes",
            "2097152",
            "-X",
            "linger.ms=7",
        ])
        .expect("parse");
        let crate::cli::Command::Produce(args) = cli.command else {
            panic!("expected produce");
        };
        let config = producer_config(&args.common, 5, Duration::from_secs(30));
        assert_eq!(config.get("acks"), Some("all"));
        assert_eq!(config.get("compression.codec"), Some("zstd"));
        assert_eq!(config.get("batch.size"), Some("2097152"));
        assert_eq!(config.get("message.max.bytes"), Some("2098176"));
        assert_eq!(config.get("message.timeout.ms"), Some("30000"));
        // -X overrides win.
        assert_eq!(config.get("linger.ms"), Some("7"));
        let consumer = consumer_config(&args.common);
        assert_eq!(consumer.get("enable.auto.commit"), Some("false"));
        assert!(consumer
            .get("group.id")
            .is_some_and(|g| g.starts_with("causeway-bench-")));
        // librdkafka accepts both configurations.
        let _: BaseProducer<BenchContext> = config
            .create_with_context(BenchContext::default())
            .expect("producer");
        let _: rdkafka::consumer::BaseConsumer<BenchContext> = consumer
            .create_with_context(BenchContext::default())
            .expect("consumer");
    }

    #[test]
    fn delivery_modes_map_to_librdkafka_properties() {
        use clap::Parser;
        let parse = |extra: &[&str]| {
            let mut argv = vec!["causeway-bench", "produce", "--acks", "1"];
            argv.extend_from_slice(extra);
            let cli = crate::cli::Cli::try_parse_from(argv).expect("parse");
            let crate::cli::Command::Produce(args) = cli.command else {
                panic!("expected produce");
            };
            args
        };
        let timeout = Duration::from_secs(30);

        let plain = parse(&[]);
        let config = delivery_producer_config(&plain.common, &plain.delivery(), 5, timeout);
        assert_eq!(config.get("acks"), Some("1"));
        assert_eq!(config.get("enable.idempotence"), None);
        assert_eq!(config.get("transactional.id"), None);

        let idem = parse(&["--idempotent"]);
        let config = delivery_producer_config(&idem.common, &idem.delivery(), 5, timeout);
        assert_eq!(config.get("enable.idempotence"), Some("true"));
        assert_eq!(
            config.get("acks"),
            Some("all"),
            "idempotence forces acks=all"
        );
        assert_eq!(config.get("transactional.id"), None);
        assert_eq!(config.get("linger.ms"), Some("5"));
        let _: BaseProducer<BenchContext> = config
            .create_with_context(BenchContext::default())
            .expect("idempotent producer");

        let txn = parse(&["--transactional-id", "bench-txn", "--txn-records", "100"]);
        let config = delivery_producer_config(&txn.common, &txn.delivery(), 5, timeout);
        assert_eq!(config.get("transactional.id"), Some("bench-txn"));
        assert_eq!(config.get("enable.idempotence"), Some("true"));
        assert_eq!(config.get("acks"), Some("all"));
        assert_eq!(config.get("transaction.timeout.ms"), Some("60000"));
        let _: BaseProducer<BenchContext> = config
            .create_with_context(BenchContext::default())
            .expect("transactional producer");
        // A delivery timeout above 60 s raises the transaction timeout with it.
        let config =
            delivery_producer_config(&txn.common, &txn.delivery(), 5, Duration::from_secs(90));
        assert_eq!(config.get("transaction.timeout.ms"), Some("90000"));

        // -X still wins.
        let x = parse(&["--idempotent", "-X", "max.in.flight=3"]);
        let config = delivery_producer_config(&x.common, &x.delivery(), 5, timeout);
        assert_eq!(config.get("max.in.flight"), Some("3"));
    }
}
