//! The syncer task: appends and fsyncs each batch to the local WAL, then publishes it, or
//! hands it to the uploader (bucket durability) and publishes once both hold it.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::env::signal;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};

use crate::durability::TermLog;
use crate::error::{ClosedReason, Error, Result};
use crate::mvcc::RevisionEvents;
use crate::wal::WalWriter;

use super::commit::answer;
use super::pipeline::{Durability, Reply, WalBatch};
use super::uploader::{uploader_loop, Upload, UPLOAD_QUEUE_MAX};
use super::Shared;

/// What the writer hands the syncer, in log order.
pub(super) enum SyncJob {
    Batch {
        /// The batch's encoded WAL records (None: it changed nothing).
        wal: Option<WalBatch>,
        revision: i64,
        events: Option<Vec<RevisionEvents>>,
        replies: Vec<Reply>,
        /// With sync upload: this batch's place among those not yet in the bucket.
        ahead: Option<OwnedSemaphorePermit>,
    },
    /// The store is durable through this index: older segments can go.
    DropThrough(u64),
}

/// Writes and fsyncs each batch, then, by `durability`: publishes and answers it (local);
/// hands it to the uploader first, which publishes and answers once the bucket and the disk
/// both hold it, so the object goes up while the disk syncs (sync upload); or publishes and
/// answers it once on disk, as long as the bucket is less than `max_age` behind (background
/// upload). `synced` follows the last index the log (local, or bucket and local) holds.
pub(super) async fn syncer_loop(
    shared: Arc<Shared>,
    durability: Durability,
    wal: WalWriter,
    log: Option<TermLog>,
    mut jobs: mpsc::Receiver<SyncJob>,
    synced: signal::Sender<u64>,
) {
    let mut wal = Some(wal);
    let mut uploaded = synced.subscribe();
    let mut behind: VecDeque<(u64, Duration)> = VecDeque::new();
    let (mut synced, uploads, uploader) = match (durability, log) {
        (Durability::BucketSync | Durability::BucketBackground { .. }, Some(log)) => {
            let (uploads_tx, uploads_rx) = mpsc::channel(UPLOAD_QUEUE_MAX);
            (None, Some(uploads_tx), Some(tokio::spawn(uploader_loop(shared.clone(), log, uploads_rx, synced))))
        }
        _ => (Some(synced), None, None),
    };
    while let Some(job) = jobs.recv().await {
        let (batch, revision, events, replies, ahead) = match job {
            SyncJob::Batch { wal: batch, revision, events, replies, ahead } => (batch, revision, events, replies, ahead),
            SyncJob::DropThrough(index) => {
                let Some(mut writer) = wal.take() else { continue };
                let (writer, removed) = crate::env::blocking(move || {
                    let removed = writer.remove_through(index);
                    (writer, removed)
                })
                .await;
                wal = Some(writer);
                if let Err(error) = removed {
                    tracing::warn!(%error, "wal: could not remove old segments; will retry at the next store sync");
                }
                continue;
            }
        };
        match (durability, &uploads) {
            (Durability::BucketSync, Some(uploads)) => {
                let (on_disk, local) = oneshot::channel();
                let upload = Upload { batch: batch.clone(), revision, events, replies, publish: true, ahead, local: Some(local) };
                if let Err(mpsc::error::SendError(upload)) = uploads.send(upload).await {
                    let failure = shared.fail(Error::StorageFailure("wal uploader stopped".into()));
                    answer(upload.replies, Err(failure));
                    continue;
                }
                let _ = on_disk.send(persist(&shared, &mut wal, batch.as_ref()).await);
            }
            (Durability::BucketBackground { max_age }, Some(uploads)) => {
                let mut outcome = persist(&shared, &mut wal, batch.as_ref()).await;
                if outcome.is_ok() {
                    if let Some(batch) = &batch {
                        behind.push_back((batch.last(), shared.env.clock.monotonic()));
                    }
                    let upload = Upload { batch, revision, events: None, replies: Vec::new(), publish: false, ahead, local: None };
                    outcome = match uploads.send(upload).await {
                        Ok(()) => wait_for_bucket_lag(&shared, &mut behind, &mut uploaded, max_age).await,
                        Err(_) => Err(shared.fail(Error::StorageFailure("wal uploader stopped".into()))),
                    };
                }
                if outcome.is_ok() {
                    shared.commit_visible(revision, events);
                }
                answer(replies, outcome);
            }
            _ => {
                let outcome = persist(&shared, &mut wal, batch.as_ref()).await;
                if outcome.is_ok() {
                    if let (Some(synced), Some(batch)) = (synced.as_mut(), &batch) {
                        synced.send_replace(batch.last());
                    }
                    shared.commit_visible(revision, events);
                }
                answer(replies, outcome);
            }
        }
    }
    drop(uploads);
    if let Some(uploader) = uploader {
        let _ = uploader.await;
    }
}

/// With the upload in the background: waits while the oldest locally durable batch not yet
/// in the bucket is older than `max_age`, so what a lost disk can take stays bounded; a
/// bucket that keeps failing thereby stops the node from acknowledging.
async fn wait_for_bucket_lag(
    shared: &Arc<Shared>,
    behind: &mut VecDeque<(u64, Duration)>,
    uploaded: &mut signal::Receiver<u64>,
    max_age: Duration,
) -> Result<()> {
    let mut warned = false;
    loop {
        if let Some(failure) = shared.failed() {
            return Err(failure);
        }
        let done = *uploaded.borrow_and_update();
        while behind.front().is_some_and(|(last, _)| *last <= done) {
            behind.pop_front();
        }
        let Some(&(_, since)) = behind.front() else { return Ok(()) };
        let age = shared.env.clock.monotonic().saturating_sub(since);
        if age <= max_age {
            if warned {
                tracing::info!("t4: the bucket caught up; writes are acknowledged again");
            }
            return Ok(());
        }
        if !warned {
            warned = true;
            tracing::warn!(
                behind_ms = age.as_millis() as u64,
                "t4: the bucket is more than --segment-max-age-sec behind; writes wait for it"
            );
        }
        tokio::select! {
            biased; // see writer_loop
            changed = uploaded.changed() => {
                if changed.is_err() {
                    return Err(shared.failed().unwrap_or(Error::Closed(ClosedReason::Stopped)));
                }
            }
            _ = shared.env.clock.sleep(Duration::from_millis(100)) => {}
        }
    }
}

/// Appends and fsyncs one batch; on failure the node stops.
async fn persist(shared: &Arc<Shared>, wal: &mut Option<WalWriter>, batch: Option<&WalBatch>) -> Result<()> {
    if let Some(failure) = shared.failed() {
        return Err(failure);
    }
    let Some(batch) = batch else { return Ok(()) };
    let Some(writer) = wal.as_mut() else { return Err(shared.fail(Error::StorageFailure("wal writer lost".into()))) };
    let started = shared.env.clock.monotonic();
    let result = crate::env::inline_io(|| writer.append(&batch.bytes, batch.first, batch.count)).await;
    let elapsed: Duration = shared.env.clock.monotonic().saturating_sub(started);
    shared.stats.wal_syncs.fetch_add(1, Ordering::Relaxed);
    shared.stats.wal_sync_micros.fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    result.map_err(|error| shared.fail(error))
}
