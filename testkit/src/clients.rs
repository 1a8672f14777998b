//! librdkafka settings for test clients: short timeouts and metadata refreshes, so a failure shows
//! within a test's patience instead of behind a client's retries.

use rdkafka::config::ClientConfig;

/// Producer config: idempotence off, no retries hidden behind long timeouts.
pub fn producer_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "false")
        .set("message.timeout.ms", "15000")
        .set("linger.ms", "0")
        .set("api.version.request", "true")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .set("log_level", "6");
    c
}

/// Consumer config for manual assignment (a group.id is required by librdkafka but unused).
pub fn consumer_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("group.id", "causeway-integration-tests")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "100")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .set("log_level", "6");
    c
}

/// Admin client config.
pub fn admin_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap).set("log_level", "6");
    c
}
