//! RedbBackend: redb's storage on a [`DiskFile`], with a fence.
//!
//! redb makes a pending non-durable commit durable when the database is closed. After the
//! WAL failed to persist, that would write state the log never recorded. The node raises
//! the [`StorageFence`] at that moment: every later write or sync fails, redb latches the
//! I/O error, and the file on disk keeps its last durable commit for recovery to replay
//! the WAL onto.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::disk::DiskFile;

/// Once raised, no byte reaches the store's file again in this process.
#[derive(Debug, Default, Clone)]
pub struct StorageFence {
    raised: Arc<AtomicBool>,
}

impl StorageFence {
    pub fn raise(&self) {
        self.raised.store(true, Ordering::SeqCst);
    }

    pub fn is_raised(&self) -> bool {
        self.raised.load(Ordering::SeqCst)
    }

    fn check(&self) -> io::Result<()> {
        if self.is_raised() {
            return Err(io::Error::other("t4: store fenced after a log persistence failure"));
        }
        Ok(())
    }
}

#[derive(Debug)]
pub struct RedbBackend {
    file: Box<dyn DiskFile>,
    fence: StorageFence,
    /// The file's length as redb last set it (a gauge the store reads for its quota).
    size: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl RedbBackend {
    pub fn new(file: Box<dyn DiskFile>, fence: StorageFence) -> Self {
        let size = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(file.len().unwrap_or(0)));
        Self { file, fence, size }
    }

    /// As [`RedbBackend::new`], keeping its length in an existing gauge (a store reopened in
    /// place keeps the gauge its readers hold).
    pub fn with_gauge(file: Box<dyn DiskFile>, fence: StorageFence, size: std::sync::Arc<std::sync::atomic::AtomicU64>) -> Self {
        size.store(file.len().unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
        Self { file, fence, size }
    }

    /// The file's length, kept current as redb grows or shrinks it.
    pub fn size_gauge(&self) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
        self.size.clone()
    }
}

impl redb::StorageBackend for RedbBackend {
    fn len(&self) -> Result<u64, io::Error> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.file.read_at(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.fence.check()?;
        self.file.set_len(len)?;
        self.size.store(len, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.fence.check()?;
        self.file.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.fence.check()?;
        self.file.write_at(offset, data)
    }
}
