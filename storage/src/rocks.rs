//! What every RocksDB-backed store in this crate shares: opening a database and mapping its
//! errors, and the write options of writes that must be durable before they are acknowledged.

use std::path::Path;

use rocksdb::{Options, WriteOptions, DB};

use crate::error::StorageError;

/// Wraps a RocksDB error.
pub(crate) fn db_err(e: rocksdb::Error) -> StorageError {
    StorageError::Db(e.to_string())
}

/// Writes whose WAL is fsynced before they return.
pub(crate) fn sync_writes() -> WriteOptions {
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    opts
}

/// Opens (creating if absent) the database at `path`; an error names the directory, so an
/// operator knows which store to recover.
pub(crate) fn open(path: &Path) -> Result<DB, StorageError> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    DB::open(&opts, path).map_err(|e| StorageError::Db(format!("opening {}: {e}", path.display())))
}
