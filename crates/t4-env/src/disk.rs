//! Disk: the files one node keeps under its data directory.
//!
//! Paths are relative to the node's data directory and use `/`. The contract follows
//! POSIX as a careful storage engine reads it: a write is durable only after `sync_data`
//! on its file returns Ok; a created or removed file is durable only after `sync_dir` on
//! its directory; a failed `sync_data` may have dropped any unsynced write, so the caller
//! must treat the file as lost from the last successful sync on (no retry-and-hope).

use std::fmt::Debug;
use std::io;

/// A directory tree of files.
pub trait Disk: Send + Sync + Debug + 'static {
    /// Opens `path`, creating an empty file when `create` is set and it does not exist.
    fn open(&self, path: &str, create: bool) -> io::Result<Box<dyn DiskFile>>;
    /// Names (not paths) of the entries directly under `dir`, sorted. Missing dir: empty.
    fn list(&self, dir: &str) -> io::Result<Vec<String>>;
    /// Removes a file. Removing a missing file is Ok.
    fn remove(&self, path: &str) -> io::Result<()>;
    /// Creates `dir` and its parents.
    fn create_dir_all(&self, dir: &str) -> io::Result<()>;
    /// Makes creations and removals under `dir` durable.
    fn sync_dir(&self, dir: &str) -> io::Result<()>;
    /// Whether `path` exists.
    fn exists(&self, path: &str) -> io::Result<bool>;
    /// Takes the data directory for this process alone; held until the guard drops.
    /// A second holder gets `WouldBlock`.
    fn lock_exclusive(&self) -> io::Result<Box<dyn Send + Sync + Debug>>;
}

/// One open file, addressed by offset.
pub trait DiskFile: Send + Sync + Debug + 'static {
    fn len(&self) -> io::Result<u64>;
    /// Fills `out` from `offset`; reading past the end is an error.
    fn read_at(&self, offset: u64, out: &mut [u8]) -> io::Result<()>;
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Truncates or extends (with zeros).
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes every write so far durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;

    /// Reserves space up to `len` bytes (reading as zeros) so later writes below it change
    /// no file metadata and `fdatasync` has less to flush. Never shrinks the file.
    fn allocate(&self, len: u64) -> io::Result<()>;

    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
}
