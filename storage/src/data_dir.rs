//! The data directory as a whole: the lock that keeps two processes (two brokers, or a broker
//! and `causeway meta rebuild`) from using one data dir at the same time, and the space left on
//! its file system.
//!
//! ## `broker.lock`
//! An empty file at the top of the data dir. A broker holds an exclusive `flock` on it for its
//! whole run, and so does `causeway meta rebuild`; the kernel drops the lock when the process
//! exits, however it exits, so a stale file never blocks a restart. (RocksDB's own `LOCK` files
//! in `meta/`, `groups/` and `tables/` already kept two brokers apart, but not a tool working on
//! a data dir whose `meta/` is gone.)

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

use crate::error::StorageError;

/// The size of the file system holding `path` and the bytes an unprivileged writer may still
/// use there (`statvfs`), for DescribeLogDirs; `None` when the file system cannot say.
pub fn disk_space(path: &Path) -> Option<(u64, u64)> {
    let stats = rustix::fs::statvfs(path).ok()?;
    let total = stats.f_blocks.checked_mul(stats.f_frsize)?;
    let usable = stats.f_bavail.checked_mul(stats.f_frsize)?;
    Some((total, usable))
}

/// File name of the data dir lock.
pub const LOCK_FILE: &str = "broker.lock";

/// An exclusive hold on a data directory, released when dropped (or when the process ends).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Takes the lock of `data_dir` (which must exist) without waiting: an error names the
    /// file if another process holds it.
    pub fn acquire(data_dir: &Path) -> Result<DataDirLock, StorageError> {
        let path = data_dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| StorageError::io(format!("opening {}", path.display()), e))?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(DataDirLock { _file: file, path }),
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => Err(StorageError::Io {
                context: format!(
                    "locking {}: another process (a running broker?) holds it",
                    path.display()
                ),
                source: std::io::Error::from(e),
            }),
            Err(e) => Err(StorageError::io(
                format!("locking {}", path.display()),
                std::io::Error::from(e),
            )),
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_dir_is_locked_once_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let held = DataDirLock::acquire(dir.path()).unwrap();
        let refused = DataDirLock::acquire(dir.path()).unwrap_err();
        assert!(refused.to_string().contains("another process"), "{refused}");
        drop(held);
        DataDirLock::acquire(dir.path()).unwrap();
    }
}
