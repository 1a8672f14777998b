//! Results of a run: human-readable line and JSON line.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

use crate::cli::CommonArgs;
use crate::procstat::Memory;

/// Bytes in a megabyte (MB, decimal) and a gigabyte (GB).
const MB: f64 = 1e6;
const GB: f64 = 1e9;
/// Bytes in a mebibyte.
const MIB: f64 = 1024.0 * 1024.0;

/// The broker's resource usage over the measured phase.
#[derive(Debug, Clone, Copy)]
pub struct BrokerUsage {
    /// User + system CPU seconds the broker used during the measured phase.
    pub cpu_seconds: f64,
    /// Broker memory at the end of the run.
    pub memory: Memory,
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencySummary {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Maximum.
    pub max_ms: f64,
    /// Number of latency samples.
    pub samples: u64,
}

impl LatencySummary {
    /// Summarizes a histogram of latencies recorded in microseconds.
    pub fn from_micros(hist: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            p50_ms: ms(hist.value_at_quantile(0.50)),
            p90_ms: ms(hist.value_at_quantile(0.90)),
            p99_ms: ms(hist.value_at_quantile(0.99)),
            p999_ms: ms(hist.value_at_quantile(0.999)),
            max_ms: ms(hist.max()),
            samples: hist.len(),
        }
    }
}

/// End-to-end specific results.
#[derive(Debug, Clone, Copy)]
pub struct E2eResult {
    /// Requested send rate, records/s.
    pub target_rate: u64,
    /// Producer linger.ms used (it adds directly to latency).
    pub linger_ms: u64,
    /// Latency distribution of the measured records.
    pub latency: LatencySummary,
}

/// Everything measured by one run.
#[derive(Debug, Clone)]
pub struct Report {
    /// `produce`, `consume` or `e2e`.
    pub mode: &'static str,
    /// Variant of the mode shown after its name, e.g. `idempotent, acks=all`.
    pub variant: Option<String>,
    /// Records sent or received in the measured phase.
    pub records: u64,
    /// Configured payload size.
    pub record_bytes: u64,
    /// Key + payload bytes sent or received in the measured phase.
    pub bytes: u64,
    /// Duration of the measured phase.
    pub elapsed: Duration,
    /// Broker usage, when `--broker-pid` was given.
    pub broker: Option<BrokerUsage>,
    /// CPU seconds used by this benchmark process during the measured phase.
    pub client_cpu_seconds: Option<f64>,
    /// Latency results of `e2e`.
    pub e2e: Option<E2eResult>,
    /// Run parameters, echoed in the JSON output.
    pub params: Map<String, Value>,
}

/// `amount` per second over `elapsed` (a zero duration counts as a nanosecond, never a division
/// by zero).
pub fn per_second(amount: f64, elapsed: Duration) -> f64 {
    amount / elapsed.as_secs_f64().max(1e-9)
}

impl Report {
    /// Records per second over the measured phase.
    pub fn records_per_second(&self) -> f64 {
        per_second(self.records as f64, self.elapsed)
    }

    /// Megabytes (10^6 bytes) per second over the measured phase.
    pub fn mb_per_second(&self) -> f64 {
        per_second(self.bytes as f64 / MB, self.elapsed)
    }

    /// Broker CPU seconds per GB (10^9 bytes) moved, if known.
    pub fn broker_cpu_per_gb(&self) -> Option<f64> {
        let broker = self.broker?;
        (self.bytes > 0).then(|| broker.cpu_seconds / (self.bytes as f64 / GB))
    }

    /// One human-readable line.
    pub fn text(&self) -> String {
        let mode = match &self.variant {
            Some(variant) => format!("{} ({variant})", self.mode),
            None => self.mode.to_string(),
        };
        let mut out = format!(
            "{}: {} records x {} B in {:.2} s = {:.0} records/s, {:.1} MB/s ({:.1} MiB/s)",
            mode,
            self.records,
            self.record_bytes,
            self.elapsed.as_secs_f64(),
            self.records_per_second(),
            self.mb_per_second(),
            per_second(self.bytes as f64 / MIB, self.elapsed),
        );
        if let Some(e2e) = &self.e2e {
            let l = &e2e.latency;
            out.push_str(&format!(
                " (target {} records/s, linger.ms {}); latency p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, \
                 p99.9 {:.3} ms, max {:.3} ms ({} samples)",
                e2e.target_rate, e2e.linger_ms, l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.samples
            ));
        }
        if let Some(broker) = &self.broker {
            out.push_str(&format!("; broker CPU {:.2} s", broker.cpu_seconds));
            if let Some(per_gb) = self.broker_cpu_per_gb() {
                out.push_str(&format!(" ({per_gb:.2} s/GB)"));
            }
            out.push_str(&format!(
                ", broker peak RSS {:.1} MB (current {:.1} MB)",
                broker.memory.peak_rss as f64 / MB,
                broker.memory.rss as f64 / MB
            ));
        }
        out
    }

    /// One JSON object with every result and parameter.
    pub fn json(&self) -> Value {
        let mut obj = Map::new();
        obj.insert("mode".into(), json!(self.mode));
        for (k, v) in &self.params {
            obj.insert(k.clone(), v.clone());
        }
        obj.insert("records".into(), json!(self.records));
        obj.insert("record_bytes".into(), json!(self.record_bytes));
        obj.insert("bytes".into(), json!(self.bytes));
        obj.insert("elapsed_s".into(), json!(self.elapsed.as_secs_f64()));
        obj.insert("records_per_s".into(), json!(self.records_per_second()));
        obj.insert("mb_per_s".into(), json!(self.mb_per_second()));
        if let Some(e2e) = &self.e2e {
            let l = &e2e.latency;
            obj.insert("target_rate".into(), json!(e2e.target_rate));
            obj.insert(
                "latency_ms".into(),
                json!({
                    "p50": l.p50_ms,
                    "p90": l.p90_ms,
                    "p99": l.p99_ms,
                    "p99_9": l.p999_ms,
                    "max": l.max_ms,
                    "samples": l.samples,
                }),
            );
        }
        if let Some(broker) = &self.broker {
            obj.insert("broker_cpu_s".into(), json!(broker.cpu_seconds));
            obj.insert(
                "broker_cpu_s_per_gb".into(),
                json!(self.broker_cpu_per_gb()),
            );
            obj.insert(
                "broker_peak_rss_bytes".into(),
                json!(broker.memory.peak_rss),
            );
            obj.insert("broker_rss_bytes".into(), json!(broker.memory.rss));
        }
        if let Some(cpu) = self.client_cpu_seconds {
            obj.insert("client_cpu_s".into(), json!(cpu));
        }
        Value::Object(obj)
    }
}

/// Run parameters common to every mode, for the JSON output.
pub fn common_params(common: &CommonArgs, partitions: i32, linger_ms: u64) -> Map<String, Value> {
    let mut params = Map::new();
    params.insert("brokers".into(), json!(common.brokers));
    params.insert("topic".into(), json!(common.topic));
    params.insert("partitions".into(), json!(partitions));
    params.insert("linger_ms".into(), json!(linger_ms));
    params.insert("batch_bytes".into(), json!(common.producer.batch_bytes));
    params.insert("acks".into(), json!(common.producer.acks.as_config()));
    params.insert("compression".into(), json!(common.compression.as_config()));
    if let Some(pid) = common.broker_pid {
        params.insert("broker_pid".into(), json!(pid));
    }
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    fn produce_report() -> Report {
        Report {
            mode: "produce",
            variant: None,
            records: 1_000_000,
            record_bytes: 100,
            bytes: 100_000_000,
            elapsed: Duration::from_millis(1230),
            broker: Some(BrokerUsage {
                cpu_seconds: 0.093,
                memory: Memory {
                    peak_rss: 42_100_000,
                    rss: 40_000_000,
                },
            }),
            client_cpu_seconds: Some(1.5),
            e2e: None,
            params: Map::new(),
        }
    }

    #[test]
    fn produce_text() {
        assert_eq!(
            produce_report().text(),
            "produce: 1000000 records x 100 B in 1.23 s = 813008 records/s, 81.3 MB/s \
             (77.5 MiB/s); broker CPU 0.09 s (0.93 s/GB), broker peak RSS 42.1 MB \
             (current 40.0 MB)"
        );
    }

    #[test]
    fn text_without_broker() {
        let mut r = produce_report();
        r.broker = None;
        r.mode = "consume";
        assert_eq!(
            r.text(),
            "consume: 1000000 records x 100 B in 1.23 s = 813008 records/s, 81.3 MB/s (77.5 MiB/s)"
        );
    }

    #[test]
    fn variant_follows_the_mode() {
        let mut r = produce_report();
        r.broker = None;
        r.variant = Some("idempotent, acks=all".into());
        assert_eq!(
            r.text(),
            "produce (idempotent, acks=all): 1000000 records x 100 B in 1.23 s = 813008 records/s, \
             81.3 MB/s (77.5 MiB/s)"
        );
    }

    #[test]
    fn produce_json() {
        let mut r = produce_report();
        r.params.insert("topic".into(), json!("bench"));
        let v = r.json();
        assert_eq!(v["mode"], "produce");
        assert_eq!(v["topic"], "bench");
        assert_eq!(v["records"], 1_000_000);
        assert_eq!(v["bytes"], 100_000_000);
        assert!((v["broker_cpu_s_per_gb"].as_f64().expect("f64") - 0.93).abs() < 1e-9);
        assert_eq!(v["broker_peak_rss_bytes"], 42_100_000);
        assert!(v.get("latency_ms").is_none());
        // One line.
        assert!(!v.to_string().contains('\n'));
    }

    #[test]
    fn latency_percentiles() {
        let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
        // 1..=1000 µs, one sample each.
        for us in 1..=1000 {
            hist.record(us).expect("record");
        }
        let l = LatencySummary::from_micros(&hist);
        assert_eq!(l.samples, 1000);
        assert!((l.p50_ms - 0.5).abs() < 0.001, "{l:?}");
        assert!((l.p90_ms - 0.9).abs() < 0.001, "{l:?}");
        assert!((l.p99_ms - 0.99).abs() < 0.001, "{l:?}");
        assert!((l.p999_ms - 0.999).abs() < 0.001, "{l:?}");
        assert!((l.max_ms - 1.0).abs() < 0.001, "{l:?}");
    }

    #[test]
    fn e2e_text_and_json() {
        let mut r = produce_report();
        r.mode = "e2e";
        r.records = 200_000;
        r.bytes = 20_000_000;
        r.elapsed = Duration::from_secs(10);
        r.broker = None;
        r.e2e = Some(E2eResult {
            target_rate: 20_000,
            linger_ms: 0,
            latency: LatencySummary {
                p50_ms: 0.8,
                p90_ms: 1.2,
                p99_ms: 2.5,
                p999_ms: 4.0,
                max_ms: 7.25,
                samples: 200_000,
            },
        });
        assert_eq!(
            r.text(),
            "e2e: 200000 records x 100 B in 10.00 s = 20000 records/s, 2.0 MB/s (1.9 MiB/s) \
             (target 20000 records/s, linger.ms 0); latency p50 0.800 ms, p90 1.200 ms, p99 2.500 ms, \
             p99.9 4.000 ms, max 7.250 ms (200000 samples)"
        );
        let v = r.json();
        assert_eq!(v["latency_ms"]["p99"], 2.5);
        assert_eq!(v["latency_ms"]["p99_9"], 4.0);
        assert_eq!(v["target_rate"], 20_000);
    }
}
