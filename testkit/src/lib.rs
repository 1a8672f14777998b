//! The harness shared by Causeway's end-to-end tests and its benchmarks: `causeway` processes on
//! free loopback ports ([`BrokerProcess`]), meshes of regions that list each other as peers
//! ([`mesh`]), the librdkafka settings tests use, and a raw protocol client ([`raw`]) for inputs
//! no well-behaved client would send.

pub mod clients;
pub mod http;
pub mod mesh;
pub mod ports;
pub mod process;
pub mod raw;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use clients::{admin_config, consumer_config, producer_config};
pub use http::{http_get, http_get_with, http_get_within, http_head_of, HttpAnswer};
pub use ports::free_port;
pub use process::{
    broker_binary, rss_of, BrokerOptions, BrokerProcess, CLIENT_TIMEOUT, SHUTDOWN_TIMEOUT,
    STARTUP_TIMEOUT,
};

/// Polls `cond` every 50 ms until it returns true or `timeout` passes; returns whether it did.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Milliseconds since the Unix epoch by the wall clock, for record timestamps.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
