//! Known bugs the simulator's own tests plant, to show that its checkers catch them within
//! the CI seed budget (docs/simulation.md). Compiled only with the `planted-bugs` feature,
//! which only the simulator's tests turn on; even then nothing is planted until a test calls
//! [`plant`]. No build that ships has this module.

use std::cell::Cell;

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
    /// A cluster member takes the lock over after the drift bound alone, without waiting
    /// for the holder's lease to run out.
    TakeoverWithoutWaiting = 4,
    /// A cluster leader acknowledges a batch once it is in its own log, before a majority
    /// of the voters holds it.
    AckBeforeMajority = 5,
    /// A cluster leader serves linearizable reads by its role alone, past its lease.
    ReadPastLease = 6,
    /// A follower takes an append without checking that its log holds the append's `prev`.
    AppendWithoutMatching = 7,
}

thread_local! {
    /// The bug planted on this thread. A simulated world runs wholly on one thread (madsim
    /// runs every task, blocking ones included, on the thread that runs the world), so this
    /// is one world's: tests running side by side in one process do not see each other's.
    static PLANTED: Cell<u8> = const { Cell::new(0) };
}

/// Plants `bug` (or none) for what runs on this thread after: call it on the world's thread
/// (the simulator's `run_seed_with` does) before the world starts.
pub fn plant(bug: Option<Bug>) {
    PLANTED.with(|planted| planted.set(bug.map_or(0, |bug| bug as u8)));
}

/// Whether `bug` is planted in the world running on this thread.
pub fn planted(bug: Bug) -> bool {
    PLANTED.with(|planted| planted.get()) == bug as u8
}
