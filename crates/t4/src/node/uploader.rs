//! The uploader task: creates the term's WAL objects in the bucket, in log order, and
//! publishes the batches they hold.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::env::signal;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};

use crate::durability::bucket::UPLOADS_IN_FLIGHT_MAX;
use crate::durability::TermLog;
use crate::env::ObjectError;
use crate::error::{Error, Result};
use crate::mvcc::RevisionEvents;

use super::commit::answer;
use super::pipeline::{Reply, WalBatch};
use super::Shared;

/// Batches waiting for the uploader (the syncer waits beyond this).
pub(super) const UPLOAD_QUEUE_MAX: usize = 1024;
/// With sync upload: most batches applied but not yet answered from the bucket, one per
/// upload that may be in flight. The writer waits for a place before it gathers a batch, so
/// the jobs arriving during a bucket round trip go up together in the next object. Without
/// the bound the writer ran ahead: batches of ~5 puts (one fsync and one store commit each)
/// went up in objects of ~15. With it, on this CPU-bound machine, one batch of ~20 per object
/// and a fifth more par-put on s4 (docs/benchmarks.md); a slow bucket still has two objects
/// in flight.
pub(super) const BATCHES_AHEAD_MAX: usize = UPLOADS_IN_FLIGHT_MAX as usize;
/// Most bytes of batches the uploader puts in one object when it has fallen behind.
const UPLOAD_OBJECT_BYTES_MAX: usize = 16 << 20;

/// A batch on its way to the bucket (already on disk, unless `local` is to tell).
pub(super) struct Upload {
    pub batch: Option<WalBatch>,
    pub revision: i64,
    pub events: Option<Vec<RevisionEvents>>,
    pub replies: Vec<Reply>,
    /// Made visible (and answered) once in the bucket; `false` when the syncer already did
    /// (upload in the background).
    pub publish: bool,
    /// Released once answered: the writer may then apply another batch.
    #[allow(dead_code)]
    pub ahead: Option<OwnedSemaphorePermit>,
    /// With sync upload: the syncer's outcome of writing and fsyncing the batch locally,
    /// which it does while the object goes up.
    pub local: Option<oneshot::Receiver<Result<()>>>,
}

/// Uploads batches in log order, up to [`UPLOADS_IN_FLIGHT_MAX`] objects at once; batches
/// that queued together go up in one object. Batches are published (made visible, sent to
/// watchers, answered) only once their object and every earlier one are in the bucket and,
/// with sync upload, the syncer has them on disk too; `synced` follows, so the store is never
/// made durable past what the bucket and the local log both hold.
pub(super) async fn uploader_loop(shared: Arc<Shared>, mut log: TermLog, mut uploads: mpsc::Receiver<Upload>, synced: signal::Sender<u64>) {
    use futures::stream::{FuturesOrdered, StreamExt};
    let mut in_flight = FuturesOrdered::new();
    let mut open = true;
    while open || !in_flight.is_empty() {
        tokio::select! {
            biased; // see writer_loop
            received = uploads.recv(), if open && (in_flight.len() as u64) < UPLOADS_IN_FLIGHT_MAX => {
                let Some(first) = received else {
                    open = false;
                    continue;
                };
                let mut group = gather_uploads(first, &mut uploads);
                let on_disk: Vec<_> = group.iter_mut().filter_map(|upload| upload.local.take()).collect();
                let mut body = Vec::new();
                let (mut first_index, mut count) = (None, 0);
                for batch in group.iter().filter_map(|upload| upload.batch.as_ref()) {
                    body.extend_from_slice(&batch.bytes);
                    first_index.get_or_insert(batch.first);
                    count += batch.count;
                }
                let seq = first_index.map(|_| {
                    log.next_seq += 1;
                    log.next_seq - 1
                });
                let (shared, log) = (shared.clone(), log.clone());
                in_flight.push_back(async move {
                    let outcome = match (seq, first_index) {
                        (Some(seq), Some(first)) => upload(&shared, &log, seq, &body, first, count).await.map(|()| Some(first + count - 1)),
                        _ => Ok(None),
                    };
                    let outcome = match outcome {
                        Ok(last) => locally_durable(&shared, on_disk).await.map(|()| last),
                        Err(failure) => Err(failure),
                    };
                    (group, outcome)
                });
            }
            Some((group, outcome)) = in_flight.next(), if !in_flight.is_empty() => {
                // In log order: an earlier object's failure stops the node, and then no later
                // batch is answered as a success even if its own object landed.
                let outcome = match (shared.failed(), outcome) {
                    (Some(failure), _) => Err(failure),
                    (None, outcome) => outcome,
                };
                if let Ok(Some(last)) = outcome {
                    synced.send_replace(last);
                }
                let outcome = outcome.map(|_| ());
                for upload in group {
                    if outcome.is_ok() && upload.publish {
                        shared.commit_visible(upload.revision, upload.events);
                    }
                    answer(upload.replies, outcome.clone());
                }
            }
        }
    }
}

/// Waits for the syncer to have written and fsynced these batches (sync upload).
async fn locally_durable(shared: &Shared, on_disk: Vec<oneshot::Receiver<Result<()>>>) -> Result<()> {
    for outcome in on_disk {
        match outcome.await {
            Ok(outcome) => outcome?,
            Err(_) => return Err(shared.failed().unwrap_or_else(|| Error::StorageFailure("wal syncer stopped".into()))),
        }
    }
    Ok(())
}

/// `first` and the uploads queued behind it, up to [`UPLOAD_OBJECT_BYTES_MAX`].
fn gather_uploads(first: Upload, uploads: &mut mpsc::Receiver<Upload>) -> Vec<Upload> {
    let mut bytes = first.batch.as_ref().map_or(0, |batch| batch.bytes.len());
    let mut group = vec![first];
    while bytes < UPLOAD_OBJECT_BYTES_MAX {
        let Ok(next) = uploads.try_recv() else { break };
        bytes += next.batch.as_ref().map_or(0, |batch| batch.bytes.len());
        group.push(next);
    }
    group
}

/// How long a closing node keeps retrying an upload before it gives up.
const CLOSE_UPLOAD_PATIENCE: Duration = Duration::from_secs(30);
/// Longest wait between two attempts of a failing upload.
const UPLOAD_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Creates the batch's WAL object. A store that is down or throttling is waited out (the
/// batch's writers wait, and the ones behind them queue: the node stops acknowledging,
/// then resumes); an object that already exists means a newer term sealed this one, and a
/// refusal (credentials, a missing bucket) or damage will not pass: both stop the node.
async fn upload(shared: &Arc<Shared>, log: &TermLog, seq: u64, bytes: &[u8], first: u64, count: u64) -> Result<()> {
    let started = shared.env.clock.monotonic();
    let mut failures: u32 = 0;
    loop {
        // Once the node failed (fenced by a newer term, above all) it creates nothing more:
        // object k + UPLOADS_IN_FLIGHT_MAX is sent only after k landed, and a seal at k means
        // k never will, so a later object would land past the seal (robustness #22).
        if let Some(failure) = shared.failed() {
            return Err(failure);
        }
        match log.create(seq, first, count, bytes).await {
            Ok(true) => break,
            Ok(false) => {
                let object = crate::durability::layout::wal_object(log.term, seq);
                tracing::error!(term = log.term, %object, "t4: fenced: a newer term sealed this node's log in the bucket");
                return Err(shared.fail(Error::Fenced(format!(
                    "{object} already exists, so a newer term sealed term {} in the bucket; this node stops acknowledging writes",
                    log.term
                ))));
            }
            Err(error @ (ObjectError::Refused(_) | ObjectError::Corrupt(_))) => {
                return Err(shared.fail(Error::StorageFailure(format!("WAL upload refused: {error}"))));
            }
            Err(error) => {
                failures += 1;
                shared.stats.wal_upload_failures.fetch_add(1, Ordering::Relaxed);
                if failures == 1 || failures.is_multiple_of(10) {
                    tracing::warn!(%error, failures, first_index = first, "t4: WAL upload failing; writes wait until the bucket answers");
                }
                // A node being closed does not wait for the bucket forever: its waiting
                // writes are answered with the failure (never acknowledged).
                let closing = shared.jobs.lock().expect("jobs lock").is_none();
                if closing && shared.env.clock.monotonic().saturating_sub(started) > CLOSE_UPLOAD_PATIENCE {
                    return Err(shared.fail(Error::StorageFailure(format!("closing with the bucket unreachable: {error}"))));
                }
                let backoff = Duration::from_millis(200).saturating_mul(failures).min(UPLOAD_BACKOFF_MAX);
                shared.env.clock.sleep(backoff).await;
            }
        }
    }
    if failures > 0 {
        tracing::info!(failures, first_index = first, "t4: WAL upload succeeded again; writes resume");
    }
    let elapsed = shared.env.clock.monotonic().saturating_sub(started);
    shared.stats.wal_uploads.fetch_add(1, Ordering::Relaxed);
    shared.stats.wal_upload_bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
    shared.stats.wal_upload_micros.fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    Ok(())
}
