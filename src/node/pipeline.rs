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

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};

use crate::durable::bucket::UPLOADS_IN_FLIGHT_MAX;
use crate::durable::{BucketRecovery, TermLog};
use crate::env::{Disk, ObjectError, StorageFence};
use crate::error::{Error, Result};
use crate::mvcc::{Applied, RevisionEvents, Store, WriteRequest, WriteResponse};
use crate::wal::{self, encode_batch, Record, WalWriter};

use super::Shared;

/// Batches that may wait for the syncer while it works on one (pipeline depth).
const SYNC_QUEUE_MAX: usize = 1;

pub struct Job {
    pub request: WriteRequest,
    /// The auth revision its permissions were checked at (None: not checked, auth off or
    /// a caller inside the process). If auth changed since, it is refused with etcd's
    /// "revision of auth store is old" and the client checks again.
    pub auth_revision: Option<u64>,
    pub reply: oneshot::Sender<Result<WriteResponse>>,
}

/// Where a write's answer goes.
type Answer = oneshot::Sender<Result<WriteResponse>>;
type Reply = (Answer, Result<WriteResponse>);

enum SyncJob {
    Batch {
        /// Encoded WAL batch with its first index and record count (None: nothing changed).
        wal: Option<(Bytes, u64, u64)>,
        revision: i64,
        events: Option<Vec<RevisionEvents>>,
        replies: Vec<Reply>,
        /// With sync upload: this batch's place among those not yet in the bucket.
        ahead: Option<OwnedSemaphorePermit>,
    },
    /// The store is durable through this index: older segments can go.
    DropThrough(u64),
}

pub struct Opened {
    pub store: Arc<Store>,
    pub wal: WalWriter,
    pub fence: StorageFence,
    /// The term's log in the bucket, when the node keeps one.
    pub log: Option<TermLog>,
}

/// Counters for metrics and benchmarks.
#[derive(Debug, Default)]
pub struct Counters {
    batches: AtomicU64,
    records: AtomicU64,
    wal_syncs: AtomicU64,
    wal_sync_micros: AtomicU64,
    store_syncs: AtomicU64,
    wal_uploads: AtomicU64,
    wal_upload_bytes: AtomicU64,
    wal_upload_micros: AtomicU64,
    wal_upload_failures: AtomicU64,
    checkpoints: AtomicU64,
    checkpoint_failures: AtomicU64,
    checkpoint_bytes: AtomicU64,
    checkpoint_bytes_uploaded: AtomicU64,
    checkpoint_micros: AtomicU64,
    checkpoint_revision: AtomicU64,
    gc_objects_deleted: AtomicU64,
    pub(super) leases_expired: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeStats {
    pub batches: u64,
    pub records: u64,
    pub wal_syncs: u64,
    pub wal_sync_micros: u64,
    pub store_syncs: u64,
    /// WAL objects created in the bucket, their bytes, the time spent (retries included)
    /// and the attempts that failed.
    pub wal_uploads: u64,
    pub wal_upload_bytes: u64,
    pub wal_upload_micros: u64,
    pub wal_upload_failures: u64,
    /// Checkpoints written, those that failed, their payload bytes, the bytes actually
    /// uploaded (new chunks and manifests), the time spent, and the newest one's revision.
    pub checkpoints: u64,
    pub checkpoint_failures: u64,
    pub checkpoint_bytes: u64,
    pub checkpoint_bytes_uploaded: u64,
    pub checkpoint_micros: u64,
    pub checkpoint_revision: u64,
    /// Objects GC deleted from the bucket (WAL objects, chunks, manifests).
    pub gc_objects_deleted: u64,
    /// Leases revoked because their time ran out.
    pub leases_expired: u64,
}

impl Counters {
    pub fn snapshot(&self) -> NodeStats {
        NodeStats {
            batches: self.batches.load(Ordering::Relaxed),
            records: self.records.load(Ordering::Relaxed),
            wal_syncs: self.wal_syncs.load(Ordering::Relaxed),
            wal_sync_micros: self.wal_sync_micros.load(Ordering::Relaxed),
            store_syncs: self.store_syncs.load(Ordering::Relaxed),
            wal_uploads: self.wal_uploads.load(Ordering::Relaxed),
            wal_upload_bytes: self.wal_upload_bytes.load(Ordering::Relaxed),
            wal_upload_micros: self.wal_upload_micros.load(Ordering::Relaxed),
            wal_upload_failures: self.wal_upload_failures.load(Ordering::Relaxed),
            checkpoints: self.checkpoints.load(Ordering::Relaxed),
            checkpoint_failures: self.checkpoint_failures.load(Ordering::Relaxed),
            checkpoint_bytes: self.checkpoint_bytes.load(Ordering::Relaxed),
            checkpoint_bytes_uploaded: self.checkpoint_bytes_uploaded.load(Ordering::Relaxed),
            checkpoint_micros: self.checkpoint_micros.load(Ordering::Relaxed),
            checkpoint_revision: self.checkpoint_revision.load(Ordering::Relaxed),
            gc_objects_deleted: self.gc_objects_deleted.load(Ordering::Relaxed),
            leases_expired: self.leases_expired.load(Ordering::Relaxed),
        }
    }
}

/// The store and the local WAL as found at open, before anything is replayed.
pub struct Local {
    pub store: Arc<Store>,
    pub recovered: wal::Recovered,
    pub fence: StorageFence,
}

/// Opens the store (which locks the data dir) and reads the local WAL (cutting a torn tail).
/// Blocking.
pub fn open_local(disk: &Arc<dyn Disk>) -> Result<Local> {
    let fence = StorageFence::default();
    let store = Arc::new(Store::open(disk.as_ref(), fence.clone())?);
    let recovered = wal::recover(disk, store.applied_index())?;
    if recovered.torn_bytes > 0 {
        tracing::warn!(bytes = recovered.torn_bytes, "wal: cut a torn tail left by a crash");
    }
    Ok(Local { store, recovered, fence })
}

/// Local-only durability: replays the local WAL above what the store holds durably and
/// returns a writer positioned after the last valid record. Blocking.
pub fn finish_local(disk: Arc<dyn Disk>, local: Local, segment_bytes_max: u64) -> Result<Opened> {
    let Local { store, recovered, fence } = local;
    let applied = store.applied_index();
    if recovered.end_index > 0 && recovered.end_index <= applied {
        return Err(Error::Corrupt(format!(
            "wal ends at index {} but the store holds through {applied}: the log lost durable records",
            recovered.end_index - 1
        )));
    }
    store.replay(&recovered.records)?;
    if !recovered.records.is_empty() {
        store.sync_durable()?;
        tracing::info!(records = recovered.records.len(), revision = store.applied_revision(), "wal: replayed");
    }
    let next_index = store.applied_index() + 1;
    let wal = WalWriter::open(disk, recovered.segments, recovered.last_len, next_index, segment_bytes_max)?;
    Ok(Opened { store, wal, fence, log: None })
}

/// Durability in a bucket: replays what [`crate::durable::recover`] decided, makes the
/// store durable, and restarts the local WAL after it (the bucket holds everything the old
/// segments did). Blocking.
pub fn finish_from_bucket(disk: Arc<dyn Disk>, local: Local, recovery: BucketRecovery, segment_bytes_max: u64) -> Result<Opened> {
    let Local { store, recovered, fence } = local;
    store.replay(&recovery.records)?;
    store.sync_durable()?;
    if !recovery.records.is_empty() {
        tracing::info!(records = recovery.records.len(), revision = store.applied_revision(), "bucket: replayed");
    }
    for first in &recovered.segments {
        disk.remove(&wal::segment_name(*first)).map_err(|error| Error::storage("remove wal segment", error))?;
    }
    if !recovered.segments.is_empty() {
        disk.sync_dir(wal::WAL_DIR).map_err(|error| Error::storage("sync wal dir", error))?;
    }
    crate::durable::write_term_file(disk.as_ref(), recovery.log.term)?;
    let next_index = store.applied_index() + 1;
    let wal = WalWriter::open(disk, Vec::new(), 0, next_index, segment_bytes_max)?;
    Ok(Opened { store, wal, fence, log: Some(recovery.log) })
}

pub fn start(shared: Arc<Shared>, wal: WalWriter, log: Option<TermLog>, jobs: mpsc::Receiver<Job>, stopped: oneshot::Sender<Result<()>>) {
    let (sync_tx, sync_rx) = mpsc::channel(SYNC_QUEUE_MAX);
    let (synced_tx, synced_rx) = watch::channel(shared.store.applied_index());
    if let (Some(log), Some(durability)) = (&log, &shared.config.object_store) {
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
    // With sync upload, the bucket's round trip paces the writer: see BATCHES_AHEAD_MAX.
    let ahead = (log.is_some() && sync_upload(&shared)).then(|| Arc::new(Semaphore::new(BATCHES_AHEAD_MAX)));
    let syncer = tokio::spawn(syncer_loop(shared.clone(), wal, log, sync_rx, synced_tx));
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

impl Shared {
    fn failed(&self) -> Option<Error> {
        self.failure.lock().expect("failure lock").clone()
    }

    /// Stops the node from acknowledging anything more.
    /// The one place a batch becomes visible, once it is durable at the node's level: reads
    /// see up to `revision` from here on, and its events go to watchers (with clustering,
    /// this is where followers are told too). Revisions never go back; a batch that spent
    /// none (leases, auth) leaves the revision where it was. A batch out of order would be
    /// a pipeline bug: the assert stops the syncer, and so the node (fail-stop).
    fn commit_visible(&self, revision: i64, events: Option<Vec<crate::mvcc::RevisionEvents>>) {
        let previous = self.visible.swap(revision, Ordering::SeqCst);
        assert!(revision >= previous, "t4: a batch at revision {revision} was committed after one at {previous}");
        self.hub.publish(revision, events);
    }

    fn fail(&self, error: Error) -> Error {
        self.fence.raise();
        let mut failure = self.failure.lock().expect("failure lock");
        if failure.is_none() {
            tracing::error!(%error, "t4: this node stops acknowledging writes until reopened");
            // Fencing keeps its kind (callers match on it); anything else is reported as the
            // storage failure it stopped the node for.
            *failure = Some(match error {
                Error::StorageFailure(_) | Error::Fenced(_) => error,
                other => Error::StorageFailure(other.to_string()),
            });
            self.failed.send_replace(true);
        }
        failure.clone().expect("just set")
    }
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
        synced: &mut watch::Receiver<u64>,
    ) -> Result<()> {
        make_store_durable(shared, sync_tx, synced).await?;
        self.records_since = 0;
        self.at = shared.env.clock.monotonic();
        Ok(())
    }
}

async fn writer_loop(
    shared: Arc<Shared>,
    mut jobs: mpsc::Receiver<Job>,
    ahead: Option<Arc<Semaphore>>,
    sync_tx: mpsc::Sender<SyncJob>,
    mut synced: watch::Receiver<u64>,
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
    track_leases(shared, &batch, &applied);
    track_auth(shared, &batch, &applied);
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
        SyncJob::Batch { wal: Some((_, _, count)), .. } => *count,
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

/// Lease expiry times follow grants and revokes in log order, as the writer applies them:
/// a revoke racing the grant of the same id cannot leave in memory a lease the store does
/// not have. A lease's time starts here, before its grant is durable, so never after the
/// client sent it.
fn track_leases(shared: &Shared, jobs: &[Job], applied: &[Applied]) {
    let now = shared.env.clock.monotonic();
    for (job, outcome) in jobs.iter().zip(applied) {
        match (&job.request, &outcome.response) {
            (WriteRequest::LeaseGrant(_), Ok(WriteResponse::LeaseGrant(grant))) => shared.lessor.granted(grant.id, grant.ttl, now),
            (WriteRequest::LeaseRevoke(revoke), Ok(_) | Err(Error::LeaseNotFound)) => shared.lessor.revoked(revoke.id),
            _ => {}
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

/// The node's copy of the auth state follows auth changes in log order, as the writer
/// applies them (the same change applied to the same state gives the same state).
fn track_auth(shared: &Shared, jobs: &[Job], applied: &[Applied]) {
    for (job, outcome) in jobs.iter().zip(applied) {
        if let (WriteRequest::Auth(change), Some(_)) = (&job.request, &outcome.record) {
            let mut auth = shared.auth.write().expect("auth lock");
            let mut next = (**auth).clone();
            next.apply(change).expect("the writer applied this change to the same state");
            *auth = Arc::new(next);
        }
    }
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
            Ok(bytes) => Some((Bytes::from(bytes), first.index, records.len() as u64)),
            Err(error) => return Err((error, replies.into_iter().map(|(sender, _)| sender).collect())),
        },
    };
    Ok(SyncJob::Batch { wal, revision: shared.store.applied_revision(), events, replies, ahead })
}

/// Waits until the WAL holds every record the store applied, then makes the store durable
/// and lets the syncer drop the segments below.
async fn make_store_durable(shared: &Arc<Shared>, sync_tx: &mpsc::Sender<SyncJob>, synced: &mut watch::Receiver<u64>) -> Result<()> {
    let target = shared.store.applied_index();
    let caught_up = synced.wait_for(|index| *index >= target).await.is_ok();
    if !caught_up || shared.failed().is_some() {
        return Err(shared.failed().unwrap_or(Error::Closed));
    }
    let store = shared.store.clone();
    if let Err(error) = crate::env::blocking(move || store.sync_durable()).await {
        return Err(shared.fail(error));
    }
    shared.stats.store_syncs.fetch_add(1, Ordering::Relaxed);
    let _ = sync_tx.send(SyncJob::DropThrough(target)).await;
    Ok(())
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
    shared.config.object_store.as_ref().is_some_and(|durability| durability.wal_sync_upload) && !ack_before_upload()
}

async fn syncer_loop(
    shared: Arc<Shared>,
    wal: WalWriter,
    log: Option<TermLog>,
    mut jobs: mpsc::Receiver<SyncJob>,
    synced: watch::Sender<u64>,
) {
    let mut wal = Some(wal);
    // With a bucket and sync upload, a batch goes to the uploader before the syncer writes
    // and fsyncs it: the object goes up while the disk syncs, and the uploader publishes and
    // answers once both hold it. Without a bucket, the syncer publishes. With the upload in
    // the background (`wal_sync_upload == false`) the syncer publishes too, once the batch
    // is on disk and as long as the bucket is less than `segment_max_age` behind.
    let background = shared.config.object_store.as_ref().filter(|_| !sync_upload(&shared)).map(|d| d.segment_max_age);
    let mut uploaded = synced.subscribe();
    let mut behind: std::collections::VecDeque<(u64, Duration)> = std::collections::VecDeque::new();
    let (mut synced, uploads, uploader) = match log {
        Some(log) => {
            let (uploads_tx, uploads_rx) = mpsc::channel(UPLOAD_QUEUE_MAX);
            (None, Some(uploads_tx), Some(tokio::spawn(uploader_loop(shared.clone(), log, uploads_rx, synced))))
        }
        None => (Some(synced), None, None),
    };
    while let Some(job) = jobs.recv().await {
        match job {
            SyncJob::Batch { wal: batch, revision, events, replies, ahead } => {
                if let (Some(uploads), None) = (&uploads, background) {
                    let (on_disk, local) = oneshot::channel();
                    let upload = Upload { batch: batch.clone(), revision, events, replies, publish: true, ahead, local: Some(local) };
                    if let Err(mpsc::error::SendError(upload)) = uploads.send(upload).await {
                        let failure = shared.fail(Error::StorageFailure("wal uploader stopped".into()));
                        answer(upload.replies, Err(failure));
                        continue;
                    }
                    let _ = on_disk.send(persist(&shared, &mut wal, batch.as_ref()).await);
                    continue;
                }
                let outcome = persist(&shared, &mut wal, batch.as_ref()).await;
                match (&uploads, outcome) {
                    (Some(uploads), Ok(())) => {
                        let max_age = background.expect("sync upload handled above");
                        if let Some((_, first, count)) = &batch {
                            behind.push_back((first + count - 1, shared.env.clock.monotonic()));
                        }
                        let upload = Upload { batch, revision, events: None, replies: Vec::new(), publish: false, ahead, local: None };
                        let outcome = match uploads.send(upload).await {
                            Ok(()) => wait_for_bucket_lag(&shared, &mut behind, &mut uploaded, max_age).await,
                            Err(_) => Err(shared.fail(Error::StorageFailure("wal uploader stopped".into()))),
                        };
                        if outcome.is_ok() {
                            shared.commit_visible(revision, events);
                        }
                        answer(replies, outcome);
                    }
                    (_, outcome) => {
                        if outcome.is_ok() {
                            if let (Some(synced), Some((_, first, count))) = (synced.as_mut(), &batch) {
                                synced.send_replace(first + count - 1);
                            }
                            shared.commit_visible(revision, events);
                        }
                        answer(replies, outcome);
                    }
                }
            }
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
    behind: &mut std::collections::VecDeque<(u64, Duration)>,
    uploaded: &mut watch::Receiver<u64>,
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
                    return Err(shared.failed().unwrap_or(Error::Closed));
                }
            }
            _ = shared.env.clock.sleep(Duration::from_millis(100)) => {}
        }
    }
}

fn answer(replies: Vec<Reply>, outcome: Result<()>) {
    for (sender, response) in replies {
        let _ = sender.send(match &outcome {
            Ok(()) => response,
            Err(failure) => Err(failure.clone()),
        });
    }
}

/// Batches waiting for the uploader (the syncer waits beyond this).
const UPLOAD_QUEUE_MAX: usize = 1024;
/// With sync upload: most batches applied but not yet answered from the bucket, one per
/// upload that may be in flight. The writer waits for a place before it gathers a batch, so
/// the jobs arriving during a bucket round trip go up together in the next object. Without
/// the bound the writer ran ahead: batches of ~5 puts (one fsync and one store commit each)
/// went up in objects of ~15. With it, on this CPU-bound machine, one batch of ~20 per object
/// and a fifth more par-put on s4 (docs/benchmarks.md); a slow bucket still has two objects
/// in flight.
const BATCHES_AHEAD_MAX: usize = UPLOADS_IN_FLIGHT_MAX as usize;
/// Most bytes of batches the uploader puts in one object when it has fallen behind.
const UPLOAD_OBJECT_BYTES_MAX: usize = 16 << 20;

/// A batch on its way to the bucket (already on disk, unless `local` is to tell).
struct Upload {
    batch: Option<(Bytes, u64, u64)>,
    revision: i64,
    events: Option<Vec<RevisionEvents>>,
    replies: Vec<Reply>,
    /// Made visible (and answered) once in the bucket; `false` when the syncer already did
    /// (upload in the background).
    publish: bool,
    /// Released once answered: the writer may then apply another batch.
    #[allow(dead_code)]
    ahead: Option<OwnedSemaphorePermit>,
    /// With sync upload: the syncer's outcome of writing and fsyncing the batch locally,
    /// which it does while the object goes up.
    local: Option<oneshot::Receiver<Result<()>>>,
}

/// Uploads batches in log order, up to [`UPLOADS_IN_FLIGHT_MAX`] objects at once; batches
/// that queued together go up in one object. Batches are published (made visible, sent to
/// watchers, answered) only once their object and every earlier one are in the bucket and,
/// with sync upload, the syncer has them on disk too; `synced` follows, so the store is never
/// made durable past what the bucket and the local log both hold.
async fn uploader_loop(shared: Arc<Shared>, mut log: TermLog, mut uploads: mpsc::Receiver<Upload>, synced: watch::Sender<u64>) {
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
                for (batch, first, records) in group.iter().filter_map(|upload| upload.batch.as_ref()) {
                    body.extend_from_slice(batch);
                    first_index.get_or_insert(*first);
                    count += records;
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
    let mut bytes = first.batch.as_ref().map_or(0, |(batch, _, _)| batch.len());
    let mut group = vec![first];
    while bytes < UPLOAD_OBJECT_BYTES_MAX {
        let Ok(next) = uploads.try_recv() else { break };
        bytes += next.batch.as_ref().map_or(0, |(batch, _, _)| batch.len());
        group.push(next);
    }
    group
}

/// Appends and fsyncs one batch; on failure the node stops.
async fn persist(shared: &Arc<Shared>, wal: &mut Option<WalWriter>, batch: Option<&(Bytes, u64, u64)>) -> Result<()> {
    if let Some(failure) = shared.failed() {
        return Err(failure);
    }
    let Some((bytes, first, count)) = batch else { return Ok(()) };
    let Some(writer) = wal.as_mut() else { return Err(shared.fail(Error::StorageFailure("wal writer lost".into()))) };
    let started = shared.env.clock.monotonic();
    let result = crate::env::inline_io(|| writer.append(bytes, *first, *count)).await;
    let elapsed: Duration = shared.env.clock.monotonic().saturating_sub(started);
    shared.stats.wal_syncs.fetch_add(1, Ordering::Relaxed);
    shared.stats.wal_sync_micros.fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    result.map_err(|error| shared.fail(error))
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
                let object = crate::object::layout::wal_object(log.term, seq);
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

/// Reads `lock` every `interval` while the node is open; a newer term there means this node
/// was fenced, so it stops (an idle node would otherwise only learn at its next upload).
pub fn spawn_lock_watch(shared: &Arc<Shared>, log: &TermLog, interval: Duration) {
    let (weak, store, term, clock) = (Arc::downgrade(shared), log.store.clone(), log.term, shared.env.clock.clone());
    tokio::spawn(async move {
        loop {
            clock.sleep(interval).await;
            let Some(shared) = weak.upgrade() else { return };
            if shared.failed().is_some() || shared.jobs.lock().expect("jobs lock").is_none() {
                return;
            }
            match crate::durable::bucket::read_lock(store.as_ref()).await {
                Ok(Some((lock, _))) if lock.term > term => {
                    tracing::error!(term, newer_term = lock.term, node = %lock.node, "t4: fenced: a newer term holds the bucket's lock");
                    shared.fail(Error::Fenced(format!(
                        "term {} was taken by {} after this node's term {term}; this node stops serving",
                        lock.term, lock.node
                    )));
                    return;
                }
                Ok(_) => {}
                Err(error) => tracing::debug!(%error, "t4: could not read the bucket's lock; will try again"),
            }
        }
    });
}

/// How often the checkpointer looks whether a checkpoint is due.
const CHECKPOINT_POLL: Duration = Duration::from_secs(1);
/// After a failed checkpoint, the wait before the next attempt.
const CHECKPOINT_RETRY: Duration = Duration::from_secs(30);

/// The checkpoint task's handle on the bucket.
#[derive(Clone)]
pub struct Checkpoints {
    pub bucket: Arc<dyn crate::env::ObjectStore>,
    pub term: u64,
    pub retain: usize,
    pub synced: watch::Receiver<u64>,
    /// One checkpoint at a time (the task's and any asked for through the API).
    pub running: Arc<tokio::sync::Mutex<()>>,
}

/// Takes a checkpoint of everything applied so far, then collects garbage. The snapshot is
/// read while writes go on; its manifest is written only once every record it holds is in
/// the bucket, so a checkpoint never holds anything but history.
pub async fn take_checkpoint(shared: &Arc<Shared>, checkpoints: &Checkpoints) -> Result<crate::durable::checkpoint::CheckpointReport> {
    let _one = checkpoints.running.lock().await;
    let store = shared.store.clone();
    let snapshot = Arc::new(crate::env::blocking(move || store.snapshot()).await?);
    let target = snapshot.position.index;
    let mut synced = checkpoints.synced.clone();
    loop {
        if let Some(failure) = shared.failed() {
            return Err(failure);
        }
        tokio::select! {
            biased; // see writer_loop
            reached = synced.wait_for(|synced| *synced >= target) => match reached {
                Ok(_) => break,
                Err(_) => return Err(shared.failed().unwrap_or(Error::Closed)),
            },
            _ = shared.env.clock.sleep(CHECKPOINT_POLL) => {}
        }
    }
    let clock = shared.env.clock.clone();
    let chunks =
        crate::durable::bucket::list_all(checkpoints.bucket.as_ref(), crate::object::layout::CHUNK_DIR).await?.into_iter().collect();
    let previous = crate::durable::checkpoint::complete(checkpoints.bucket.as_ref(), &chunks)
        .await?
        .into_iter()
        .find(|manifest| manifest.position.revision <= snapshot.position.revision);
    let outcome = crate::durable::checkpoint::write(&checkpoints.bucket, snapshot, checkpoints.term, &clock, &chunks, previous).await;
    let stats = &shared.stats;
    let report = match outcome {
        Ok(report) => report,
        Err(error) => {
            stats.checkpoint_failures.fetch_add(1, Ordering::Relaxed);
            return Err(error);
        }
    };
    stats.checkpoints.fetch_add(1, Ordering::Relaxed);
    stats.checkpoint_bytes.fetch_add(report.bytes, Ordering::Relaxed);
    stats.checkpoint_bytes_uploaded.fetch_add(report.bytes_uploaded, Ordering::Relaxed);
    stats.checkpoint_micros.fetch_add(report.elapsed.as_micros() as u64, Ordering::Relaxed);
    stats.checkpoint_revision.store(report.revision as u64, Ordering::Relaxed);
    tracing::info!(
        revision = report.revision,
        index = report.index,
        entries = report.entries,
        chunks = report.chunks,
        bytes = report.bytes,
        chunks_uploaded = report.chunks_uploaded,
        chunks_reused = report.chunks_reused,
        bytes_uploaded = report.bytes_uploaded,
        elapsed_ms = report.elapsed.as_millis() as u64,
        "checkpoint: written"
    );
    match crate::durable::gc::collect(&checkpoints.bucket, checkpoints.retain, Some(checkpoints.term)).await {
        Ok(gc) => {
            let deleted = gc.wal_objects_deleted + gc.chunks_deleted + gc.manifests_deleted;
            stats.gc_objects_deleted.fetch_add(deleted, Ordering::Relaxed);
            if deleted > 0 {
                tracing::info!(
                    wal_objects = gc.wal_objects_deleted,
                    chunks = gc.chunks_deleted,
                    manifests = gc.manifests_deleted,
                    below_index = gc.below_index,
                    "gc: deleted what no retained checkpoint needs"
                );
            }
        }
        Err(error) => tracing::warn!(%error, "gc: failed; will try after the next checkpoint"),
    }
    Ok(report)
}

/// Takes a checkpoint whenever one is due, by time or by records written since the last.
async fn checkpointer(shared: std::sync::Weak<Shared>, checkpoints: Checkpoints, interval: Duration, entries: u64) {
    let Some(clock) = shared.upgrade().map(|shared| shared.env.clock.clone()) else { return };
    let mut last_index = shared.upgrade().map_or(0, |shared| shared.store.applied_index());
    let mut last_at = clock.monotonic();
    let mut failed_at: Option<Duration> = None;
    loop {
        clock.sleep(CHECKPOINT_POLL).await;
        let Some(node) = shared.upgrade() else { return };
        if node.failed().is_some() || node.jobs.lock().expect("jobs lock").is_none() {
            return;
        }
        if failed_at.is_some_and(|at| clock.monotonic().saturating_sub(at) < CHECKPOINT_RETRY) {
            continue;
        }
        let applied = node.store.applied_index();
        let by_count = entries > 0 && applied.saturating_sub(last_index) >= entries;
        let by_time = !interval.is_zero() && clock.monotonic().saturating_sub(last_at) >= interval;
        let newest = node.stats.checkpoint_revision.load(Ordering::Relaxed);
        if applied <= last_index || !(by_count || by_time) {
            continue;
        }
        match take_checkpoint(&node, &checkpoints).await {
            Ok(report) => {
                last_index = report.index;
                failed_at = None;
            }
            Err(error) => {
                tracing::warn!(%error, newest, "checkpoint: failed; will try again in 30 s");
                failed_at = Some(clock.monotonic());
            }
        }
        last_at = clock.monotonic();
    }
}
