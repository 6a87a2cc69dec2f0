//! The write pipeline: recovery at open, then a writer task and a syncer task.
//!
//! ```text
//!  callers --Job--> writer: apply batch N+1 to redb (no fsync), encode its WAL batch
//!                      |  (bounded channel: at most one batch waits for the syncer)
//!                      v
//!                   syncer: write + fdatasync batch N, then publish revision, then reply
//! ```
//! The writer fills batch N+1 while the syncer waits on the disk for batch N: one fsync
//! covers every write that queued meanwhile (group commit). Readers only see revisions the
//! syncer has published, so nothing a crash can undo is ever read or acknowledged.
//!
//! With a bucket and sync upload, the syncer hands each batch to an uploader before it
//! writes and fsyncs it, so the object goes up while the disk syncs; the uploader publishes
//! a batch once it is both in the bucket and on disk. The writer gathers a batch only while
//! fewer than [`BATCHES_AHEAD_MAX`] are on their way: the bucket's round trip, not the
//! disk's, sets the group-commit size. The disk still syncs one batch at a time, so only the
//! last batch of the local log can be torn (see wal::recovery); the bucket may hold a batch
//! the disk lost, which recovery reads from the bucket as it does for a stale data dir.
//!
//! Fault model: a failed WAL write or fsync, or any store error, stops the node: the
//! failure is recorded, the store's fence is raised (redb writes nothing more, so its file
//! keeps its last durable commit), every waiting and later write gets `StorageFailure`.
//! Reopening recovers from the WAL. The store is made durable (one redb fsync) only when
//! the WAL holds every record applied to it, then WAL segments below it are removed.

use std::sync::Arc;
use std::time::Duration;

use crate::env::signal;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::durability::TermLog;
use crate::error::{Error, Result};
use crate::mvcc::WriteResponse;
use crate::wal::WalWriter;

use super::checkpointer::{checkpointer, Checkpoints};
use super::syncer::syncer_loop;
use super::uploader::BATCHES_AHEAD_MAX;
use super::writer::{writer_loop, Job};
use super::Shared;

/// Batches that may wait for the syncer while it works on one (pipeline depth).
const SYNC_QUEUE_MAX: usize = 1;

/// Where a write's answer goes.
pub(super) type Answer = oneshot::Sender<Result<WriteResponse>>;
/// A write's answer and where it goes, once its batch is durable.
pub(super) type Reply = (Answer, Result<WriteResponse>);

/// One batch's WAL records, encoded: log indexes `first ..= last()`.
#[derive(Debug, Clone)]
pub(super) struct WalBatch {
    pub bytes: Bytes,
    /// The records the bytes hold (a cluster leader keeps them to send on).
    pub records: Arc<[crate::wal::Record]>,
    pub first: u64,
    pub count: u64,
}

impl WalBatch {
    /// The index of the batch's last record.
    pub fn last(&self) -> u64 {
        self.first + self.count - 1
    }
}

/// Where a batch must be before its writes are acknowledged (docs/design.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Durability {
    /// On the local disk (no bucket): the syncer publishes once the WAL is fsynced.
    Local,
    /// In the bucket and on the local disk: the syncer hands the batch to the uploader
    /// before it fsyncs it, and the uploader publishes once both hold it.
    BucketSync,
    /// On the local disk, with the bucket at most `max_age` behind: the syncer publishes once
    /// the WAL is fsynced, unless the oldest batch not yet uploaded is older than that.
    BucketBackground { max_age: Duration },
}

impl Durability {
    /// The mode of a node that keeps (or does not keep) a log in the bucket.
    fn of(shared: &Shared, bucket_log: bool) -> Self {
        match &shared.config.bucket {
            Some(object) if bucket_log && !sync_upload(shared) => Durability::BucketBackground { max_age: object.segment_max_age },
            Some(_) if bucket_log => Durability::BucketSync,
            _ => Durability::Local,
        }
    }
}

/// Starts the writer, the syncer (and with a bucket log, the uploader and the checkpointer);
/// `stopped` gets the writer's outcome once both have ended.
pub(super) fn start(
    shared: Arc<Shared>,
    wal: WalWriter,
    log: Option<TermLog>,
    jobs: mpsc::Receiver<Job>,
    stopped: oneshot::Sender<Result<()>>,
) {
    let (sync_tx, sync_rx) = mpsc::channel(SYNC_QUEUE_MAX);
    let (synced_tx, synced_rx) = signal::channel(shared.store.applied_index());
    if let (Some(log), Some(durability)) = (&log, &shared.config.bucket) {
        let checkpoints = Checkpoints {
            bucket: log.store.clone(),
            term: log.term,
            retain: durability.checkpoint_retain,
            synced: synced_rx.clone(),
            running: Arc::default(),
        };
        let task = tokio::spawn(checkpointer(
            Arc::downgrade(&shared),
            checkpoints.clone(),
            durability.checkpoint_interval,
            durability.checkpoint_entries,
        ));
        *shared.checkpoints.lock().expect("checkpoints lock") = Some((checkpoints, task));
    }
    let durability = Durability::of(&shared, log.is_some());
    // With sync upload, the bucket's round trip paces the writer: see BATCHES_AHEAD_MAX.
    let ahead = (durability == Durability::BucketSync).then(|| Arc::new(Semaphore::new(BATCHES_AHEAD_MAX)));
    let syncer = tokio::spawn(syncer_loop(shared.clone(), durability, wal, log, sync_rx, synced_tx));
    let writer = tokio::spawn(writer_loop(shared.clone(), jobs, ahead, sync_tx, synced_rx));
    // A writer or syncer that panics stops the node like a storage failure (fail-stop):
    // health and readiness report it, and every later write gets the failure.
    tokio::spawn(async move {
        let result = match writer.await {
            Ok(result) => result,
            Err(died) => Err(shared.fail(Error::StorageFailure(format!("the writer stopped: {died}")))),
        };
        if let Err(died) = syncer.await {
            shared.fail(Error::StorageFailure(format!("the wal syncer stopped: {died}")));
        }
        let _ = stopped.send(result);
    });
}

/// Planted (simulator tests only): the sync mode acknowledges once the batch is local, as
/// the background mode does, before it is in the bucket.
fn ack_before_upload() -> bool {
    #[cfg(feature = "planted-bugs")]
    return crate::planted::planted(crate::planted::Bug::AckBeforeUpload);
    #[cfg(not(feature = "planted-bugs"))]
    false
}

/// Whether a write waits for its batch to be in the bucket (`wal_sync_upload`, unless the
/// planted bug acknowledges before).
fn sync_upload(shared: &Shared) -> bool {
    shared.config.bucket.as_ref().is_some_and(|durability| durability.wal_sync_upload) && !ack_before_upload()
}
