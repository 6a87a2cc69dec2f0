//! The writer task: gathers jobs into a batch, applies it to the store (no fsync), encodes
//! its WAL records and hands the batch to the syncer; makes the store durable when due.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::env::signal;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::error::{ClosedReason, Error, Result};
use crate::mvcc::{Applied, WriteRequest};
use crate::wal::{encode_batch, Record, RecordBody};

use super::pipeline::{Answer, WalBatch};
use super::syncer::SyncJob;
use super::Shared;

/// A write waiting for the writer.
pub(super) struct Job {
    pub request: WriteRequest,
    /// The auth revision its permissions were checked at (None: not checked, auth off or
    /// a caller inside the process). If auth changed since, it is refused with etcd's
    /// "revision of auth store is old" and the client checks again.
    pub auth_revision: Option<u64>,
    pub reply: Answer,
}

/// When the store was last made durable and how much it has applied since.
struct DurableSchedule {
    records_since: u64,
    at: Duration,
}

impl DurableSchedule {
    /// Time left before the store is due, or None when it holds nothing undurable.
    fn due_in(&self, shared: &Shared) -> Option<Duration> {
        let elapsed = shared.env.clock.monotonic().saturating_sub(self.at);
        (self.records_since > 0).then(|| shared.config.store_sync_interval.saturating_sub(elapsed))
    }

    fn is_due(&self, shared: &Shared) -> bool {
        self.records_since >= shared.config.store_sync_records || self.due_in(shared) == Some(Duration::ZERO)
    }

    async fn make_durable(
        &mut self,
        shared: &Arc<Shared>,
        sync_tx: &mpsc::Sender<SyncJob>,
        synced: &mut signal::Receiver<u64>,
    ) -> Result<()> {
        make_store_durable(shared, sync_tx, synced).await?;
        self.records_since = 0;
        self.at = shared.env.clock.monotonic();
        Ok(())
    }
}

/// Gathers jobs into batches, applies them and hands each to the syncer, until the job
/// channel closes; makes the store durable when due and once more at the end. Returns the
/// failure that stopped the node, if one did.
pub(super) async fn writer_loop(
    shared: Arc<Shared>,
    mut jobs: mpsc::Receiver<Job>,
    ahead: Option<Arc<Semaphore>>,
    sync_tx: mpsc::Sender<SyncJob>,
    mut synced: signal::Receiver<u64>,
) -> Result<()> {
    let mut schedule = DurableSchedule { records_since: 0, at: shared.env.clock.monotonic() };
    // Jobs taken from the channel that a batch had no room for (see Store::apply_batch):
    // they go first into the next batch, before anything newer.
    let mut carried: VecDeque<Job> = VecDeque::new();
    loop {
        let first = match carried.pop_front() {
            Some(job) => job,
            None => {
                // While the store holds undurable commits, wake when they are due even if
                // idle: replay after a crash stays bounded, and redb reads stay fast (a long
                // run of non-durable commits slows them: docs/benchmarks.md).
                let next = match schedule.due_in(&shared) {
                    // `biased`: branches in order, no random pick. A random pick draws from
                    // tokio's process-wide seed, which the simulator does not control (the
                    // same seed then ran differently after other seeds in one process). The
                    // timer goes first so a steady stream of jobs cannot starve the store sync.
                    Some(due_in) => tokio::select! {
                        biased;
                        _ = shared.env.clock.sleep(due_in) => {
                            schedule.make_durable(&shared, &sync_tx, &mut synced).await?;
                            continue;
                        }
                        job = jobs.recv() => job,
                    },
                    None => jobs.recv().await,
                };
                let Some(first) = next else { break };
                first
            }
        };
        // Waiting here for the bucket lets the jobs that arrive meanwhile join this batch.
        let permit = match &ahead {
            Some(ahead) => Some(ahead.clone().acquire_owned().await.expect("the semaphore is never closed")),
            None => None,
        };
        let batch = gather(&shared, first, &mut carried, &mut jobs);
        let (records, rest) = apply_and_queue(&shared, batch, permit, &sync_tx).await;
        schedule.records_since += records;
        for job in rest.into_iter().rev() {
            carried.push_front(job);
        }
        if schedule.is_due(&shared) {
            schedule.make_durable(&shared, &sync_tx, &mut synced).await?;
        }
    }
    if shared.failed().is_none() && schedule.records_since > 0 {
        schedule.make_durable(&shared, &sync_tx, &mut synced).await?;
    }
    drop(sync_tx);
    match shared.failed() {
        Some(failure) => Err(failure),
        None => Ok(()),
    }
}

/// Takes `first` and whatever else waits (carried jobs, then the channel's), within the
/// batch bounds.
fn gather(shared: &Shared, first: Job, carried: &mut VecDeque<Job>, jobs: &mut mpsc::Receiver<Job>) -> Vec<Job> {
    let mut bytes = first.request.encoded_len();
    let mut batch = vec![first];
    while batch.len() < shared.config.batch_requests_max && bytes < shared.config.batch_bytes_max {
        let Some(job) = carried.pop_front().or_else(|| jobs.try_recv().ok()) else { break };
        bytes += job.request.encoded_len();
        batch.push(job);
    }
    batch
}

/// Applies one batch to the store and hands its WAL bytes to the syncer. Returns the
/// number of WAL records it produced, and the jobs the batch had no room for (a suffix of
/// `batch`, for the next one).
async fn apply_and_queue(
    shared: &Arc<Shared>,
    batch: Vec<Job>,
    ahead: Option<OwnedSemaphorePermit>,
    sync_tx: &mpsc::Sender<SyncJob>,
) -> (u64, Vec<Job>) {
    let mut batch = refuse_stale_permission_checks(shared, batch);
    if batch.is_empty() {
        return (0, Vec::new());
    }
    if let Some(failure) = shared.failed() {
        answer_jobs(batch, &failure);
        return (0, Vec::new());
    }
    let want_events = shared.hub.has_watchers();
    // Inline, not on the blocking pool: a batch is a few redb page writes into the page
    // cache (no fsync), shorter than the hop to another thread would be.
    let applied = match shared.store.apply_batch(batch.iter().map(|job| &job.request), want_events) {
        Ok(applied) => applied,
        Err(error) => {
            answer_jobs(batch, &shared.fail(error));
            return (0, Vec::new());
        }
    };
    let rest = batch.split_off(applied.len());
    follow_records(shared, applied.iter().filter_map(|outcome| outcome.record.as_ref()));
    let replies = batch.into_iter().map(|job| job.reply).collect();
    let job = match sync_job(shared, applied, replies, want_events, ahead) {
        Ok(job) => job,
        Err((error, senders)) => {
            let failure = shared.fail(error);
            for sender in senders {
                let _ = sender.send(Err(failure.clone()));
            }
            return (0, rest);
        }
    };
    let records = match &job {
        SyncJob::Batch { wal: Some(batch), .. } => batch.count,
        _ => 0,
    };
    shared.stats.batches.fetch_add(1, Ordering::Relaxed);
    shared.stats.records.fetch_add(records, Ordering::Relaxed);
    if sync_tx.send(job).await.is_err() {
        shared.fail(Error::StorageFailure("wal syncer stopped".into()));
    }
    (records, rest)
}

fn answer_jobs(jobs: Vec<Job>, failure: &Error) {
    for job in jobs {
        let _ = job.reply.send(Err(failure.clone()));
    }
}

/// The node's in-memory copies follow the log, record by record, as the writer applies it
/// (a follower will call this with the records it receives, so it holds what the leader
/// does): lease expiry times follow grants and revokes in log order, so a revoke racing the
/// grant of the same id cannot leave in memory a lease the store does not have, and a
/// lease's time starts here, before its grant is durable, so never after the client sent
/// it; the auth state follows auth changes (the same change applied to the same state gives
/// the same state).
pub(super) fn follow_records<'r>(shared: &Shared, records: impl IntoIterator<Item = &'r Record>) {
    let now = shared.env.clock.monotonic();
    for record in records {
        match &record.body {
            RecordBody::LeaseGrant { id, ttl } => shared.lessor.granted(*id, *ttl, now),
            RecordBody::LeaseRevoke { id, .. } => shared.lessor.revoked(*id),
            RecordBody::Auth { change } => {
                let mut auth = shared.auth.write().expect("auth lock");
                let mut next = (**auth).clone();
                next.apply(change).expect("the writer applied this change to the same state");
                *auth = Arc::new(next);
            }
            RecordBody::Txn { .. } | RecordBody::Compact { .. } | RecordBody::Term { .. } => {}
        }
    }
}

/// A write whose permissions were checked under auth rules that changed before it would be
/// applied is refused with etcd's "revision of auth store is old" (clients check again):
/// with auth on, any auth change since its check (the revision differs, or an auth change
/// comes before it in this batch); checked with auth off, auth having been enabled since.
fn refuse_stale_permission_checks(shared: &Shared, batch: Vec<Job>) -> Vec<Job> {
    let state = shared.auth.read().expect("auth lock").clone();
    let (mut changed, mut enabling) = (false, false);
    let mut kept = Vec::with_capacity(batch.len());
    for job in batch {
        let stale = match job.auth_revision {
            None => false,
            Some(crate::auth::gate::AUTH_OFF) => state.enabled || enabling,
            Some(revision) => changed || revision != state.revision,
        };
        if stale {
            let _ = job.reply.send(Err(Error::Auth(crate::error::AuthError::OldRevision)));
            continue;
        }
        if let WriteRequest::Auth(change) = &job.request {
            changed = true;
            enabling |= matches!(change, crate::auth::state::AuthChange::Enable);
        }
        kept.push(job);
    }
    kept
}

/// The syncer's job for an applied batch; when its WAL batch cannot be encoded (past its
/// bound), the error and the callers to answer.
fn sync_job(
    shared: &Shared,
    applied: Vec<Applied>,
    senders: Vec<Answer>,
    want_events: bool,
    ahead: Option<OwnedSemaphorePermit>,
) -> std::result::Result<SyncJob, (Error, Vec<Answer>)> {
    let mut records: Vec<Record> = Vec::new();
    let mut events = want_events.then(Vec::new);
    let mut replies = Vec::with_capacity(senders.len());
    for (outcome, sender) in applied.into_iter().zip(senders) {
        records.extend(outcome.record);
        if let (Some(all), Some(revision)) = (events.as_mut(), outcome.events) {
            all.push(revision);
        }
        replies.push((sender, outcome.response));
    }
    let wal = match records.first() {
        None => None,
        Some(first) => match encode_batch(&records) {
            Ok(bytes) => {
                let (first, count) = (first.index, records.len() as u64);
                Some(WalBatch { bytes: bytes.into(), records: records.into(), first, count })
            }
            Err(error) => return Err((error, replies.into_iter().map(|(sender, _)| sender).collect())),
        },
    };
    Ok(SyncJob::Batch { wal, revision: shared.store.applied_revision(), events, replies, ahead })
}

/// Waits until the WAL holds every record the store applied, then makes the store durable
/// and lets the syncer drop the segments below.
async fn make_store_durable(shared: &Arc<Shared>, sync_tx: &mpsc::Sender<SyncJob>, synced: &mut signal::Receiver<u64>) -> Result<()> {
    let target = shared.store.applied_index();
    let caught_up = synced.wait_for(|index| *index >= target).await.is_ok();
    if !caught_up || shared.failed().is_some() {
        return Err(shared.failed().unwrap_or(Error::Closed(ClosedReason::Stopped)));
    }
    let store = shared.store.clone();
    if let Err(error) = crate::env::blocking(move || store.sync_durable()).await {
        return Err(shared.fail(error));
    }
    shared.stats.store_syncs.fetch_add(1, Ordering::Relaxed);
    let _ = sync_tx.send(SyncJob::DropThrough(target)).await;
    Ok(())
}
