//! Small checkpoint files in a partition directory, written atomically (temp file, fsync,
//! rename, fsync of the directory) so a crash leaves either the old or the new value.
//!
//! ## `log-start-offset.checkpoint` (version 0)
//! Text: `0\n<log_start_offset>\n`. Written by DeleteRecords and retention. On open the log start
//! is the larger of this value and the first segment's base offset.
//!
//! ## `clean-shutdown.checkpoint` (version 0)
//! Text: `0\n<log_end_offset>\n<active_segment_base>\n<active_segment_log_bytes>\n`. Written by
//! `Partition::close` after everything is fsynced. If it is present and agrees with the files,
//! open skips the recovery scan; open deletes it right away so a crash later forces a scan.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use crate::error::{IoContext, StorageError};

/// File name of the log start offset checkpoint.
pub(crate) const LOG_START_FILE: &str = "log-start-offset.checkpoint";
/// File name of the idempotent-producer snapshot (format in `producers.rs`).
pub(crate) const PRODUCERS_FILE: &str = "producers.snapshot";
/// File name of the clean-shutdown marker.
pub(crate) const CLEAN_SHUTDOWN_FILE: &str = "clean-shutdown.checkpoint";
const VERSION: &str = "0";

/// Atomically replaces `dir/name` with `values`, one per line after the version line.
pub(crate) fn write(dir: &Path, name: &str, values: &[i64]) -> Result<(), StorageError> {
    let mut text = format!("{VERSION}\n");
    for v in values {
        text.push_str(&format!("{v}\n"));
    }
    write_bytes(dir, name, text.as_bytes())
}

/// Atomically replaces `dir/name` with `bytes` (files that carry their own format version).
pub(crate) fn write_bytes(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    {
        let mut f = File::create(&tmp).ctx(|| format!("creating {}", tmp.display()))?;
        f.write_all(bytes)
            .ctx(|| format!("writing {}", tmp.display()))?;
        f.sync_all().ctx(|| format!("fsyncing {}", tmp.display()))?;
    }
    std::fs::rename(&tmp, &path).ctx(|| format!("renaming {}", tmp.display()))?;
    sync_dir(dir)
}

/// Reads `dir/name`; `None` if absent or unparsable (a torn checkpoint is treated as absent).
pub(crate) fn read(dir: &Path, name: &str) -> Result<Option<Vec<i64>>, StorageError> {
    let path = dir.join(name);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => return Ok(None),
        Err(e) => return Err(StorageError::io(format!("reading {}", path.display()), e)),
    };
    let mut lines = text.lines();
    if lines.next() != Some(VERSION) {
        return Ok(None);
    }
    let values: Result<Vec<i64>, _> = lines.map(str::parse).collect();
    Ok(values.ok())
}

/// Reads `dir/name` whole; `None` if absent.
pub(crate) fn read_bytes(dir: &Path, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
    let path = dir.join(name);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StorageError::io(format!("reading {}", path.display()), e)),
    }
}

/// Removes `dir/name` if present.
pub(crate) fn remove(dir: &Path, name: &str) -> Result<(), StorageError> {
    let path = dir.join(name);
    match std::fs::remove_file(&path) {
        Ok(()) => sync_dir(dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::io(format!("removing {}", path.display()), e)),
    }
}

/// fsyncs a directory so renames and deletions in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx(|| format!("fsyncing directory {}", dir.display()))
}
