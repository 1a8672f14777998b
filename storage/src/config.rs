//! Topic configs with Kafka's names, defaults and validation rules, and the `LogConfig` the log
//! actually consults (segment size/age, retention, index density, batch size, timestamp type).

use std::collections::BTreeMap;

/// Which timestamp a batch carries in the log: the producer's, or the broker's append time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    /// Keep the producer's timestamps.
    CreateTime,
    /// Overwrite maxTimestamp with the broker's clock at append.
    LogAppendTime,
}

/// `compression.type`: the codec every produced batch is stored in. Kafka's broker recompresses a
/// batch whose codec differs, so a topic can be kept in one codec whatever its producers send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressionType {
    /// Keep each batch as the producer compressed it (the default).
    Producer,
    /// Store records uncompressed.
    Uncompressed,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl CompressionType {
    /// The codec id (a batch's attributes bits 0-2) batches are stored with, or `None` to keep
    /// the producer's.
    pub fn codec_id(self) -> Option<i16> {
        match self {
            CompressionType::Producer => None,
            CompressionType::Uncompressed => Some(0),
            CompressionType::Gzip => Some(1),
            CompressionType::Snappy => Some(2),
            CompressionType::Lz4 => Some(3),
            CompressionType::Zstd => Some(4),
        }
    }

    fn parse(value: &str) -> Option<CompressionType> {
        Some(match value {
            "producer" => CompressionType::Producer,
            "uncompressed" => CompressionType::Uncompressed,
            "gzip" => CompressionType::Gzip,
            "snappy" => CompressionType::Snappy,
            "lz4" => CompressionType::Lz4,
            "zstd" => CompressionType::Zstd,
            _ => return None,
        })
    }
}

/// The subset of topic configs the partition log obeys.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// segment.bytes: roll when the active segment would exceed this (default 1 GiB).
    pub segment_bytes: u64,
    /// segment.ms: roll when the active segment's first batch is this old (default 7 days).
    pub segment_ms: i64,
    /// retention.ms: delete segments older than this; -1 keeps forever (default 7 days).
    pub retention_ms: i64,
    /// retention.bytes: delete old segments while the log stays above this; -1 = unlimited.
    pub retention_bytes: i64,
    /// index.interval.bytes: bytes between sparse index entries (default 4096).
    pub index_interval_bytes: u32,
    /// max.message.bytes: largest accepted batch (default 1048588).
    pub max_message_bytes: u32,
    /// message.timestamp.type (default CreateTime).
    pub timestamp_type: TimestampType,
    /// compression.type (default `producer`).
    pub compression: CompressionType,
    /// flush.ms: unsynced batches are fsynced once they have waited this long, whatever the
    /// producer's acks (default never: acks=all fsyncs before answering, and with peers the
    /// replication syncer fsyncs within milliseconds).
    pub flush_ms: i64,
    /// message.timestamp.before.max.ms: how far in the past a CreateTime timestamp may be
    /// (default unlimited, as in Kafka).
    pub timestamp_before_max_ms: i64,
    /// message.timestamp.after.max.ms: how far in the future a CreateTime timestamp may be
    /// (default one hour, as in Kafka 4), so no batch can claim a time that keeps its segment
    /// from ever expiring.
    pub timestamp_after_max_ms: i64,
    /// cleanup.policy holds `delete`: retention.ms / retention.bytes delete old segments
    /// (default true; a `compact`-only topic keeps every segment, as in Kafka).
    pub cleanup_delete: bool,
    /// cleanup.policy holds `compact`: the cleaner rewrites closed segments into one record
    /// per key (default false).
    pub cleanup_compact: bool,
    /// delete.retention.ms: how long a compacted tombstone is kept (default one day).
    pub delete_retention_ms: i64,
    /// min.compaction.lag.ms: a closed segment is compacted only once its newest record is this
    /// old, so consumers see every write of the last period uncompacted (default 0).
    pub min_compaction_lag_ms: i64,
    /// max.compaction.lag.ms: on a compacted topic the active segment rolls once its first
    /// record is this old, and a pass is due once a segment not yet cleaned is (whatever the
    /// dirty ratio), so a record stays uncompacted about this long at most (default never).
    pub max_compaction_lag_ms: i64,
    /// min.cleanable.dirty.ratio: a pass is due once the bytes not yet cleaned are more than
    /// this share of the compactable log (default 0.5): a lower ratio compacts sooner and
    /// rewrites the clean part more often.
    pub min_cleanable_dirty_ratio: f64,
    /// The smallest `segment.bytes` a topic override takes effect with; a smaller one is raised
    /// to it (1 MiB, Kafka 4's minimum from KIP-1030), so a topic cannot make a segment per batch
    /// and exhaust file descriptors. A broker setting, not a topic config.
    pub segment_bytes_min: u64,
    /// The smallest `segment.ms` a topic override takes effect with; a smaller one is raised to
    /// it (10 minutes, as Redpanda's `log_segment_ms_min`). A broker setting.
    pub segment_ms_min: i64,
    /// The most producers whose sequence state a partition keeps; a new producer past it makes
    /// the partition forget the one that wrote least recently (with no transaction open), so a
    /// client that asks for producer ids in a loop cannot grow it without bound. A broker
    /// setting (`--max-producers-per-partition`, as Redpanda's `max_concurrent_producer_ids`).
    pub producers_max: usize,
}

const HOUR_MS: i64 = 60 * 60 * 1000;
const DAY_MS: i64 = 24 * HOUR_MS;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * DAY_MS,
            retention_ms: 7 * DAY_MS,
            retention_bytes: -1,
            index_interval_bytes: 4096,
            max_message_bytes: 1_048_588,
            timestamp_type: TimestampType::CreateTime,
            compression: CompressionType::Producer,
            flush_ms: i64::MAX,
            timestamp_before_max_ms: i64::MAX,
            timestamp_after_max_ms: HOUR_MS,
            cleanup_delete: true,
            cleanup_compact: false,
            delete_retention_ms: DAY_MS,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            min_cleanable_dirty_ratio: 0.5,
            segment_bytes_min: SEGMENT_BYTES_MIN,
            segment_ms_min: SEGMENT_MS_MIN,
            producers_max: PRODUCERS_MAX,
        }
    }
}

impl LogConfig {
    /// How old the active segment's first record may grow before it rolls: `segment.ms`, or on
    /// a compacted topic `max.compaction.lag.ms` if sooner (as Kafka does, so the record can be
    /// compacted in time), never below the broker's `segment_ms_min` (a segment per batch
    /// would exhaust file descriptors).
    pub fn roll_ms(&self) -> i64 {
        if self.cleanup_compact && self.max_compaction_lag_ms < self.segment_ms {
            self.max_compaction_lag_ms.max(self.segment_ms_min)
        } else {
            self.segment_ms
        }
    }
}

/// Default of [`LogConfig::segment_bytes_min`]: 1 MiB.
pub const SEGMENT_BYTES_MIN: u64 = 1 << 20;
/// Default of [`LogConfig::segment_ms_min`]: 10 minutes.
pub const SEGMENT_MS_MIN: i64 = 10 * 60 * 1000;
/// Default of [`LogConfig::producers_max`].
pub const PRODUCERS_MAX: usize = 10_000;

/// One accepted topic config, for DescribeConfigs and validation.
pub struct TopicConfigDef {
    /// Kafka's config name.
    pub name: &'static str,
    /// Kafka's default value, as text.
    pub default: &'static str,
    /// One-line description.
    pub doc: &'static str,
}

const LONG_MAX: &str = "9223372036854775807";

/// Every topic config we accept, with Kafka's defaults (plus Causeway's own `causeway.*`).
pub const TOPIC_CONFIGS: &[TopicConfigDef] = &[
    def(
        "cleanup.policy",
        "delete",
        "delete and/or compact old segments",
    ),
    def(
        "compression.type",
        "producer",
        "final compression of the topic's batches",
    ),
    def(
        "delete.retention.ms",
        "86400000",
        "how long delete tombstones are kept",
    ),
    def(
        "file.delete.delay.ms",
        "60000",
        "delay before a deleted file is removed",
    ),
    def(
        "flush.messages",
        LONG_MAX,
        "force fsync after this many messages",
    ),
    def("flush.ms", LONG_MAX, "force fsync after this long"),
    def(
        "index.interval.bytes",
        "4096",
        "bytes between offset index entries",
    ),
    def(
        "max.compaction.lag.ms",
        LONG_MAX,
        "longest a message stays uncompacted",
    ),
    def(
        "max.message.bytes",
        "1048588",
        "largest record batch accepted",
    ),
    def(
        "message.timestamp.type",
        "CreateTime",
        "CreateTime or LogAppendTime",
    ),
    def(
        "message.timestamp.before.max.ms",
        LONG_MAX,
        "max allowed age of a record timestamp",
    ),
    def(
        "message.timestamp.after.max.ms",
        "3600000",
        "max allowed future skew of a timestamp",
    ),
    def(
        "min.cleanable.dirty.ratio",
        "0.5",
        "dirty ratio that triggers compaction",
    ),
    def(
        "min.compaction.lag.ms",
        "0",
        "shortest a message stays uncompacted",
    ),
    def("min.insync.replicas", "1", "replicas needed for acks=all"),
    def("preallocate", "false", "preallocate segment files"),
    def(
        "retention.bytes",
        "-1",
        "max log size before old segments are deleted",
    ),
    def(
        "retention.ms",
        "604800000",
        "max segment age before deletion",
    ),
    def("segment.bytes", "1073741824", "segment file size"),
    def("segment.index.bytes", "10485760", "offset index file size"),
    def(
        "segment.jitter.ms",
        "0",
        "random jitter subtracted from segment.ms",
    ),
    def(
        "segment.ms",
        "604800000",
        "time after which a segment is rolled",
    ),
    def(
        "unclean.leader.election.enable",
        "false",
        "allow out-of-sync leaders",
    ),
    def(
        "message.downconversion.enable",
        "true",
        "allow down-conversion for old consumers",
    ),
    def(
        "message.format.version",
        "3.0-IV1",
        "deprecated: record format version; every batch is format v2",
    ),
    def(
        "causeway.min.regions",
        "1",
        "regions that must hold a batch before acks=all",
    ),
    def(
        "causeway.merge",
        "crdt",
        "table merge strategy: crdt or lww",
    ),
];

const fn def(name: &'static str, default: &'static str, doc: &'static str) -> TopicConfigDef {
    TopicConfigDef { name, default, doc }
}

/// Why a topic config was rejected; maps to Kafka's INVALID_CONFIG.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The name is not a config we know.
    #[error("unknown topic config {0}")]
    Unknown(String),
    /// The value does not parse or is out of range.
    #[error("invalid value {value} for {name}: {reason}")]
    Invalid {
        /// Config name.
        name: String,
        /// Offending value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A valid Kafka value asking for behaviour Causeway does not have: refused rather than
    /// stored and silently ignored.
    #[error("{name}={value} is not supported by Causeway: {reason}")]
    Unsupported {
        /// Config name.
        name: String,
        /// Refused value.
        value: String,
        /// What Causeway does instead, and what to use.
        reason: &'static str,
    },
}

/// The value type and range of each config.
enum Kind {
    Long(i64),
    Int(i32),
    Ratio,
    Bool,
    OneOf(&'static [&'static str]),
    CleanupPolicy,
    /// A Kafka release such as `0.10.0`, `2.8` or `3.0-IV1`.
    Version,
}

fn kind_of(name: &str) -> Option<Kind> {
    Some(match name {
        "cleanup.policy" => Kind::CleanupPolicy,
        "compression.type" => {
            Kind::OneOf(&["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"])
        }
        "delete.retention.ms" | "file.delete.delay.ms" | "flush.ms" | "min.compaction.lag.ms" => {
            Kind::Long(0)
        }
        "segment.jitter.ms" => Kind::Long(0),
        "message.timestamp.before.max.ms" | "message.timestamp.after.max.ms" => Kind::Long(0),
        "flush.messages" | "max.compaction.lag.ms" | "segment.ms" => Kind::Long(1),
        "retention.ms" | "retention.bytes" => Kind::Long(-1),
        "index.interval.bytes" | "max.message.bytes" => Kind::Int(0),
        "min.insync.replicas" | "causeway.min.regions" => Kind::Int(1),
        "segment.bytes" => Kind::Int(14),
        "segment.index.bytes" => Kind::Int(4),
        "min.cleanable.dirty.ratio" => Kind::Ratio,
        "preallocate" | "unclean.leader.election.enable" | "message.downconversion.enable" => {
            Kind::Bool
        }
        "message.timestamp.type" => Kind::OneOf(&["CreateTime", "LogAppendTime"]),
        "causeway.merge" => Kind::OneOf(&["crdt", "lww"]),
        "message.format.version" => Kind::Version,
        _ => return None,
    })
}

/// Validates one name/value pair (type, range, allowed values) before it is stored in the catalog.
pub fn validate_topic_config(name: &str, value: &str) -> Result<(), ConfigError> {
    let kind = kind_of(name).ok_or_else(|| ConfigError::Unknown(name.to_string()))?;
    let invalid = |reason: String| ConfigError::Invalid {
        name: name.to_string(),
        value: value.to_string(),
        reason,
    };
    match kind {
        Kind::Long(min) => {
            let v: i64 = value
                .trim()
                .parse()
                .map_err(|_| invalid("not a long".into()))?;
            if v < min {
                return Err(invalid(format!("must be at least {min}")));
            }
        }
        Kind::Int(min) => {
            let v: i32 = value
                .trim()
                .parse()
                .map_err(|_| invalid("not an int".into()))?;
            if v < min {
                return Err(invalid(format!("must be at least {min}")));
            }
        }
        Kind::Ratio => {
            let v: f64 = value
                .trim()
                .parse()
                .map_err(|_| invalid("not a double".into()))?;
            if !(0.0..=1.0).contains(&v) {
                return Err(invalid("must be between 0 and 1".into()));
            }
        }
        Kind::Bool => {
            let v = value.trim().to_ascii_lowercase();
            if v != "true" && v != "false" {
                return Err(invalid("must be true or false".into()));
            }
        }
        Kind::OneOf(allowed) => {
            if !allowed.contains(&value) {
                return Err(invalid(format!("must be one of {}", allowed.join(", "))));
            }
        }
        Kind::CleanupPolicy => {
            let parts: Vec<&str> = value.split(',').map(str::trim).collect();
            let ok = !parts.is_empty()
                && parts.len() <= 2
                && parts.iter().all(|p| *p == "delete" || *p == "compact")
                && !(parts.len() == 2 && parts[0] == parts[1]);
            if !ok {
                return Err(invalid(
                    "must be delete, compact, or compact,delete".to_string(),
                ));
            }
        }
        Kind::Version => {
            if !is_kafka_version(value.trim()) {
                return Err(invalid("must be a Kafka version such as 3.0-IV1".into()));
            }
        }
    }
    if let Some(reason) = unsupported(name, value.trim()) {
        return Err(ConfigError::Unsupported {
            name: name.to_string(),
            value: value.to_string(),
            reason,
        });
    }
    Ok(())
}

/// Checks what no single config can: `min.compaction.lag.ms` may not exceed
/// `max.compaction.lag.ms` (Kafka refuses the pair the same way).
pub fn validate_topic_config_set(configs: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    let long = |name: &str| configs.get(name).and_then(|v| v.trim().parse::<i64>().ok());
    let (Some(min), Some(max)) = (long("min.compaction.lag.ms"), long("max.compaction.lag.ms"))
    else {
        return Ok(());
    };
    if min > max {
        return Err(ConfigError::Invalid {
            name: "min.compaction.lag.ms".into(),
            value: min.to_string(),
            reason: format!("must not exceed max.compaction.lag.ms ({max})"),
        });
    }
    Ok(())
}

/// `major.minor[.patch[.build]][-IVn]`, as Kafka's release versions are written.
fn is_kafka_version(value: &str) -> bool {
    let (release, iv) = match value.split_once("-IV") {
        Some((release, iv)) => (release, Some(iv)),
        None => (value, None),
    };
    let parts: Vec<&str> = release.split('.').collect();
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (2..=4).contains(&parts.len()) && parts.iter().all(|p| numeric(p)) && iv.is_none_or(numeric)
}

/// Why a valid value of a config Causeway does not apply is refused: Kafka's default (and any
/// value whose promise Causeway already keeps) is accepted, any other would be stored and do
/// nothing the operator expects. `value` has passed its type check. `docs/configuration.md`
/// says the same per config.
fn unsupported(name: &str, value: &str) -> Option<&'static str> {
    let long = || value.parse::<i64>().ok();
    let accepted = match name {
        "file.delete.delay.ms" => long() == Some(60_000),
        "flush.messages" => long() == Some(i64::MAX),
        "segment.jitter.ms" => long() == Some(0),
        "min.insync.replicas" => long() == Some(1),
        "segment.index.bytes" => long() == Some(10_485_760),
        "preallocate" | "unclean.leader.election.enable" => value.eq_ignore_ascii_case("false"),
        _ => true,
    };
    if accepted {
        return None;
    }
    Some(match name {
        "file.delete.delay.ms" => {
            "a segment dropped by retention or compaction is removed without a delay (only the default 60000)"
        }
        "flush.messages" => {
            "a batch is fsynced before a produce with acks=all is answered (group commit), never by count; produce with acks=all for durability, or set flush.ms for a time bound"
        }
        "segment.jitter.ms" => "segments roll at exactly segment.ms (only 0)",
        "min.insync.replicas" => {
            "Causeway has no in-region replicas (only 1); use causeway.min.regions to make acks=all wait for other regions"
        }
        "segment.index.bytes" => {
            "the offset index grows with its segment, which rolls on segment.bytes and segment.ms only (only the default 10485760)"
        }
        "preallocate" => "segment files are not preallocated (only false)",
        "unclean.leader.election.enable" => {
            "Causeway has no partition leaders to elect: every region accepts writes to every partition (only false)"
        }
        _ => "not applied",
    })
}

/// Builds a topic's `LogConfig` from its overrides; missing or unparsable keys take `base`
/// (the broker-level defaults).
pub fn log_config_from(overrides: &BTreeMap<String, String>, base: &LogConfig) -> LogConfig {
    fn get<T: std::str::FromStr>(o: &BTreeMap<String, String>, key: &str) -> Option<T> {
        o.get(key).and_then(|v| v.trim().parse().ok())
    }
    LogConfig {
        segment_bytes: get::<i64>(overrides, "segment.bytes")
            .and_then(|v| u64::try_from(v).ok())
            .map_or(base.segment_bytes, |v| v.max(base.segment_bytes_min)),
        segment_ms: get::<i64>(overrides, "segment.ms")
            .map_or(base.segment_ms, |v| v.max(base.segment_ms_min)),
        retention_ms: get(overrides, "retention.ms").unwrap_or(base.retention_ms),
        retention_bytes: get(overrides, "retention.bytes").unwrap_or(base.retention_bytes),
        index_interval_bytes: get(overrides, "index.interval.bytes")
            .unwrap_or(base.index_interval_bytes),
        max_message_bytes: get(overrides, "max.message.bytes").unwrap_or(base.max_message_bytes),
        timestamp_type: match overrides.get("message.timestamp.type").map(String::as_str) {
            Some("LogAppendTime") => TimestampType::LogAppendTime,
            Some("CreateTime") => TimestampType::CreateTime,
            _ => base.timestamp_type,
        },
        flush_ms: get(overrides, "flush.ms").unwrap_or(base.flush_ms),
        compression: overrides
            .get("compression.type")
            .and_then(|v| CompressionType::parse(v))
            .unwrap_or(base.compression),
        timestamp_before_max_ms: get(overrides, "message.timestamp.before.max.ms")
            .unwrap_or(base.timestamp_before_max_ms),
        timestamp_after_max_ms: get(overrides, "message.timestamp.after.max.ms")
            .unwrap_or(base.timestamp_after_max_ms),
        cleanup_delete: overrides
            .get("cleanup.policy")
            .map_or(base.cleanup_delete, |p| has_policy(p, "delete")),
        cleanup_compact: overrides
            .get("cleanup.policy")
            .map_or(base.cleanup_compact, |p| has_policy(p, "compact")),
        delete_retention_ms: get(overrides, "delete.retention.ms")
            .unwrap_or(base.delete_retention_ms),
        min_compaction_lag_ms: get(overrides, "min.compaction.lag.ms")
            .unwrap_or(base.min_compaction_lag_ms),
        max_compaction_lag_ms: get(overrides, "max.compaction.lag.ms")
            .unwrap_or(base.max_compaction_lag_ms),
        min_cleanable_dirty_ratio: get(overrides, "min.cleanable.dirty.ratio")
            .unwrap_or(base.min_cleanable_dirty_ratio),
        segment_bytes_min: base.segment_bytes_min,
        segment_ms_min: base.segment_ms_min,
        producers_max: base.producers_max,
    }
}

/// Whether a `cleanup.policy` value (`delete`, `compact` or both, comma-separated) names `policy`.
fn has_policy(value: &str, policy: &str) -> bool {
    value.split(',').any(|p| p.trim() == policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_config_accepts_its_default() {
        for d in TOPIC_CONFIGS {
            assert!(
                validate_topic_config(d.name, d.default).is_ok(),
                "{}",
                d.name
            );
        }
    }

    #[test]
    fn bad_values_and_unknown_names_are_rejected() {
        assert!(matches!(
            validate_topic_config("nope", "1"),
            Err(ConfigError::Unknown(_))
        ));
        for (k, v) in [
            ("segment.bytes", "13"),
            ("cleanup.policy", "remove"),
            ("retention.ms", "-2"),
            ("preallocate", "yes"),
            ("causeway.merge", "max"),
            ("min.cleanable.dirty.ratio", "1.5"),
        ] {
            assert!(
                matches!(
                    validate_topic_config(k, v),
                    Err(ConfigError::Invalid { .. })
                ),
                "{k}"
            );
        }
        for v in ["delete", "compact", "compact,delete", "delete,compact"] {
            assert!(validate_topic_config("cleanup.policy", v).is_ok());
        }
    }

    #[test]
    fn flush_ms_is_applied_and_defaults_to_never() {
        let base = LogConfig::default();
        assert_eq!(base.flush_ms, i64::MAX);
        assert!(validate_topic_config("flush.ms", "12345678").is_ok());
        let overrides = BTreeMap::from([("flush.ms".to_string(), "1000".to_string())]);
        assert_eq!(log_config_from(&overrides, &base).flush_ms, 1000);
    }

    #[test]
    fn every_compression_type_is_accepted_and_names_its_codec() {
        let base = LogConfig::default();
        assert_eq!(base.compression.codec_id(), None);
        for (value, id) in [
            ("producer", None),
            ("uncompressed", Some(0)),
            ("gzip", Some(1)),
            ("snappy", Some(2)),
            ("lz4", Some(3)),
            ("zstd", Some(4)),
        ] {
            assert!(
                validate_topic_config("compression.type", value).is_ok(),
                "{value}"
            );
            let overrides = BTreeMap::from([("compression.type".to_string(), value.to_string())]);
            assert_eq!(
                log_config_from(&overrides, &base).compression.codec_id(),
                id,
                "{value}"
            );
        }
        assert!(validate_topic_config("compression.type", "brotli").is_err());
    }

    #[test]
    fn values_asking_for_what_causeway_does_not_do_are_refused_by_name() {
        for (k, v) in [
            ("min.insync.replicas", "2"),
            ("flush.messages", "1"),
            ("file.delete.delay.ms", "0"),
            ("preallocate", "true"),
            ("segment.index.bytes", "4096"),
            ("segment.jitter.ms", "1000"),
            ("unclean.leader.election.enable", "TRUE"),
        ] {
            match validate_topic_config(k, v) {
                Err(e @ ConfigError::Unsupported { .. }) => {
                    let text = e.to_string();
                    assert!(
                        text.starts_with(&format!("{k}={v} is not supported by Causeway: ")),
                        "{text}"
                    );
                }
                other => panic!("{k}={v}: {other:?}"),
            }
        }
        for (k, v) in [
            ("min.insync.replicas", "1"),
            ("min.insync.replicas", " 1"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("min.cleanable.dirty.ratio", "0.50"),
            ("min.cleanable.dirty.ratio", "0.9"),
            ("max.compaction.lag.ms", "3600000"),
            ("preallocate", "False"),
            ("message.downconversion.enable", "false"),
            ("message.format.version", "0.10.0.0"),
            ("message.format.version", "2.8"),
            ("message.format.version", "3.0-IV1"),
        ] {
            assert!(validate_topic_config(k, v).is_ok(), "{k}={v}");
        }
        for v in ["", "v2", "3", "3.0-IV", "3.x"] {
            assert!(
                matches!(
                    validate_topic_config("message.format.version", v),
                    Err(ConfigError::Invalid { .. })
                ),
                "{v:?}"
            );
        }
    }

    #[test]
    fn overrides_replace_defaults_and_missing_keys_keep_base() {
        let mut o = BTreeMap::new();
        o.insert("segment.bytes".to_string(), "1000".to_string());
        o.insert(
            "message.timestamp.type".to_string(),
            "LogAppendTime".to_string(),
        );
        let c = log_config_from(&o, &LogConfig::default());
        assert_eq!(c.segment_bytes, SEGMENT_BYTES_MIN, "raised to the floor");
        assert_eq!(c.timestamp_type, TimestampType::LogAppendTime);
        assert_eq!(c.retention_ms, 604_800_000);
        assert!(c.cleanup_delete && !c.cleanup_compact);
        o.insert("cleanup.policy".to_string(), "compact".to_string());
        o.insert("delete.retention.ms".to_string(), "5".to_string());
        let c = log_config_from(&o, &LogConfig::default());
        assert!(!c.cleanup_delete && c.cleanup_compact);
        assert_eq!(c.delete_retention_ms, 5);
        o.insert("cleanup.policy".to_string(), "compact, delete".to_string());
        let c = log_config_from(&o, &LogConfig::default());
        assert!(c.cleanup_delete && c.cleanup_compact);
    }

    #[test]
    fn segment_overrides_below_the_floors_take_effect_as_the_floors() {
        let mut o = BTreeMap::new();
        o.insert("segment.bytes".to_string(), "14".to_string());
        o.insert("segment.ms".to_string(), "1".to_string());
        let c = log_config_from(&o, &LogConfig::default());
        assert_eq!(
            (c.segment_bytes, c.segment_ms),
            (SEGMENT_BYTES_MIN, SEGMENT_MS_MIN)
        );
        let lowered = LogConfig {
            segment_bytes_min: 1,
            segment_ms_min: 0,
            ..LogConfig::default()
        };
        let c = log_config_from(&o, &lowered);
        assert_eq!((c.segment_bytes, c.segment_ms), (14, 1));
        o.insert("segment.bytes".to_string(), "5000000".to_string());
        let c = log_config_from(&o, &LogConfig::default());
        assert_eq!(c.segment_bytes, 5_000_000, "above the floor: as set");
    }

    /// A compacted topic rolls at max.compaction.lag.ms when that is sooner than segment.ms,
    /// never below the segment.ms floor; a topic that is not compacted ignores it.
    #[test]
    fn a_compacted_topic_rolls_by_max_compaction_lag_within_the_floor() {
        let mut o = BTreeMap::from([
            ("cleanup.policy".to_string(), "compact".to_string()),
            ("max.compaction.lag.ms".to_string(), "1000".to_string()),
        ]);
        let c = log_config_from(&o, &LogConfig::default());
        assert_eq!(c.roll_ms(), SEGMENT_MS_MIN, "raised to the floor");
        let lowered = LogConfig {
            segment_ms_min: 0,
            ..LogConfig::default()
        };
        assert_eq!(log_config_from(&o, &lowered).roll_ms(), 1000);
        o.insert("segment.ms".to_string(), "500".to_string());
        assert_eq!(
            log_config_from(&o, &lowered).roll_ms(),
            500,
            "segment.ms sooner"
        );
        o.insert("cleanup.policy".to_string(), "delete".to_string());
        o.remove("segment.ms");
        assert_eq!(
            log_config_from(&o, &lowered).roll_ms(),
            LogConfig::default().segment_ms
        );
    }

    #[test]
    fn min_compaction_lag_may_not_exceed_max_compaction_lag() {
        let set = |min: &str, max: Option<&str>| {
            let mut o = BTreeMap::from([("min.compaction.lag.ms".to_string(), min.to_string())]);
            if let Some(max) = max {
                o.insert("max.compaction.lag.ms".to_string(), max.to_string());
            }
            validate_topic_config_set(&o)
        };
        assert!(set("5000", None).is_ok(), "max defaults to never");
        assert!(set("1000", Some("1000")).is_ok());
        let refused = set("1001", Some("1000")).unwrap_err().to_string();
        assert!(
            refused.contains("min.compaction.lag.ms") && refused.contains("max.compaction.lag.ms"),
            "{refused}"
        );
    }
}
