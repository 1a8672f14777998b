//! The crate's error type: everything the disk, the caller or the catalog can do wrong.

use crate::batch::BatchError;
use crate::config::ConfigError;
use crate::producers::SequenceError;

/// Why a storage operation failed; callers map these to Kafka error codes.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An operating-system I/O call failed; `context` names the file and operation.
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What we were doing (operation and path).
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Data on disk does not match its documented format.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// The requested offset is outside `[log_start, log_end]`.
    #[error("offset {offset} out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        /// The offset asked for.
        offset: i64,
        /// The first readable offset.
        log_start: i64,
        /// The next offset to be assigned.
        log_end: i64,
    },
    /// An earlier fsync failed, so nothing further is acknowledged for this partition.
    #[error("partition is poisoned by an earlier fsync failure")]
    Poisoned,
    /// A record batch failed validation.
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// An idempotent producer's batch is out of order or from a fenced epoch.
    #[error(transparent)]
    Sequence(#[from] SequenceError),
    /// A topic config failed validation.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A RocksDB store (the catalog in `meta/`, `groups/`, `tables/`) failed, or a value could
    /// not be encoded for it.
    #[error("database error: {0}")]
    Db(String),
}

impl StorageError {
    /// Wraps an I/O error with what we were doing, so the log line is actionable.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> StorageError {
        StorageError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Adds context to an `io::Result` in one call at each I/O site.
pub(crate) trait IoContext<T> {
    /// Maps the error to `StorageError::Io` with the given context.
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, StorageError>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, StorageError> {
        self.map_err(|e| StorageError::io(context(), e))
    }
}
