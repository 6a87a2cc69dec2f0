//! Known bugs the simulator's own tests plant, to show that its checkers catch them within
//! the CI seed budget (docs/simulation.md). Compiled only with the `planted-bugs` feature,
//! which only the simulator's tests turn on; even then nothing is planted until a test calls
//! [`plant`]. No build that ships has this module.

use std::sync::atomic::{AtomicU8, Ordering};

/// A bug that can be planted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Bug {
    /// The WAL acknowledges a batch before its fdatasync: each batch is synced only when the
    /// next one is written, after the first was already answered.
    AckBeforeFsync = 1,
    /// With `wal_sync_upload`, a write is acknowledged once its batch is fsynced locally,
    /// before it is in the bucket.
    AckBeforeUpload = 2,
    /// A WAL object is created without its condition (If-None-Match): a writer whose term
    /// was sealed overwrites the seal and goes on acknowledging.
    SkipTermCheck = 3,
}

static PLANTED: AtomicU8 = AtomicU8::new(0);

/// Plants `bug` (or none) for everything that runs after, process-wide.
pub fn plant(bug: Option<Bug>) {
    PLANTED.store(bug.map_or(0, |bug| bug as u8), Ordering::SeqCst);
}

/// Whether `bug` is planted.
pub fn planted(bug: Bug) -> bool {
    PLANTED.load(Ordering::SeqCst) == bug as u8
}
