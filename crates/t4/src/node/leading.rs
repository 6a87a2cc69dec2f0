//! A cluster leader's syncer and commit point (docs/clustering.md "Replication").
//!
//! The writer is the single node's (it applies each batch to the store and encodes it); the
//! syncer here puts each batch in the member log (WAL, fsynced, and the tail the replicator
//! sends from), counts the leader's own copy, and queues the batch for the commit point.
//! The commit point takes batches in log order and acknowledges one only when
//! - **majority-of-voters**: the replicator's commit index reached its last record, and
//! - **lease-from-send**: this member still leads at that instant by its own lease;
//!
//! otherwise the batch's writers get `LeaderChanged` (the next leader decides whether it
//! took effect) and so does every batch after it. Only the commit point moves the visible
//! revision and tells watchers; `synced` follows the committed index, so the writer makes
//! the store durable only through records a majority holds.

use std::sync::{Arc, Mutex};

use crate::env::signal;
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use crate::cluster::member_log::{MemberLog, TailBatch};
use crate::cluster::replicator::Replicator;
use crate::election::member::Standing;
use crate::error::Error;
use crate::mvcc::RevisionEvents;

use super::commit::answer;
use super::pipeline::Reply;
use super::syncer::SyncJob;
use super::Shared;

/// One leadership as its syncer and commit point see it.
pub(super) struct LeaderRun {
    pub term: u64,
    pub log: Arc<Mutex<MemberLog>>,
    pub replicator: Arc<Replicator>,
    pub standing: signal::Receiver<Standing>,
    /// Turns true when the leadership ends.
    pub ended: signal::Receiver<bool>,
    /// Set to the term once its first batch (the adopted log and the term record) is
    /// committed and visible: only then does this leader serve linearizable reads (what an
    /// older leader acknowledged is visible here from that moment).
    pub serving: Arc<std::sync::atomic::AtomicU64>,
}

impl LeaderRun {
    /// Whether this member may acknowledge now (lease-from-send).
    pub fn leads_now(&self, shared: &Shared) -> bool {
        !*self.ended.borrow() && self.standing.borrow().leads_at(shared.env.clock.monotonic()) == Some(self.term)
    }
}

/// A batch in the log waiting to be committed.
pub(super) struct Pending {
    /// Its last index (None: it changed nothing; it waits for the batches before it).
    pub through: Option<u64>,
    pub revision: i64,
    pub events: Option<Vec<RevisionEvents>>,
    pub replies: Vec<Reply>,
    pub ahead: Option<OwnedSemaphorePermit>,
}

/// Puts each batch in the member log, then hands it to the commit point; `first` is what
/// the leadership itself wrote before serving (the adopted log and its term record).
pub(super) async fn leader_syncer_loop(
    shared: Arc<Shared>,
    run: Arc<LeaderRun>,
    first: Pending,
    mut jobs: mpsc::Receiver<SyncJob>,
    synced: signal::Sender<u64>,
) {
    let (pending_tx, pending_rx) = mpsc::unbounded_channel();
    let committer = tokio::spawn(commit_in_order(shared.clone(), run.clone(), pending_rx, synced));
    let _ = pending_tx.send(first);
    while let Some(job) = jobs.recv().await {
        match job {
            SyncJob::Batch { wal, revision, events, replies, ahead } => {
                let through = wal.as_ref().map(|batch| batch.last());
                if let Some(batch) = wal {
                    let tail = TailBatch { term: run.term, records: batch.records, bytes: batch.bytes };
                    let log = run.log.clone();
                    let persisted = crate::env::inline_io(move || log.lock().expect("member log lock").append_own_batch(tail)).await;
                    if let Err(error) = persisted {
                        answer(replies, Err(shared.fail(error)));
                        continue;
                    }
                    run.replicator.own_durable(batch.first + batch.count - 1);
                }
                let _ = pending_tx.send(Pending { through, revision, events, replies, ahead });
            }
            SyncJob::DropThrough(index) => {
                // The store holds everything through `index` durably: the WAL below it can
                // go. The records in memory stay while they fit the bound: a member that
                // joins or falls behind later is sent them (past the bound it would need a
                // snapshot, not built yet: docs/clustering.md "Status").
                let log = run.log.clone();
                let removed = crate::env::blocking(move || {
                    let mut log = log.lock().expect("member log lock");
                    if log.tail_bytes() > super::cluster::TAIL_BYTES_KEPT {
                        log.release_through(index);
                    }
                    log.remove_through(index)
                })
                .await;
                if let Err(error) = removed {
                    tracing::warn!(%error, "wal: could not remove old segments; will retry at the next store sync");
                }
            }
        }
    }
    drop(pending_tx);
    let _ = committer.await;
}

/// Acknowledges batches in log order once committed while the lease holds. Once the
/// leadership ends it lets go of `synced`, so a writer waiting to make the store durable
/// stops waiting.
async fn commit_in_order(
    shared: Arc<Shared>,
    run: Arc<LeaderRun>,
    mut pending: mpsc::UnboundedReceiver<Pending>,
    synced: signal::Sender<u64>,
) {
    let mut commit = run.replicator.commit();
    let mut ended = run.ended.clone();
    let mut through_so_far = *synced.borrow();
    let mut synced = Some(synced);
    loop {
        let batch = tokio::select! {
            biased; // see writer.rs: no random pick in the simulator
            batch = pending.recv() => batch,
            _ = ended.wait_for(|ended| *ended), if synced.is_some() => {
                synced = None;
                continue;
            }
        };
        let Some(batch) = batch else { break };
        let through = batch.through.unwrap_or(through_so_far).max(through_so_far);
        through_so_far = through;
        // Planted (simulator tests only): acknowledged once in this leader's own log.
        let planted = synced.is_some() && planted_bug!(AckBeforeMajority) && run.leads_now(&shared);
        let committed = planted
            || synced.is_some() && {
                tokio::select! {
                    biased;
                    reached = commit.wait_for(|index| *index >= through) => reached.is_ok(),
                    _ = ended.wait_for(|ended| *ended) => false,
                }
            };
        match synced.as_ref().filter(|_| committed) {
            Some(synced) => {
                // Committed: a majority holds it, so every later leader does. It is history
                // whatever the lease says, and is published in order (watchers must not
                // miss it). Acknowledged only while the lease holds at this instant; in a
                // lapse (a renewal late, then landing: nobody took over) its writers are told
                // the outcome is unknown, and the term goes on (robustness #51: once, a
                // lapse stopped this term's commits for good while it kept its lock).
                let leads = run.leads_now(&shared);
                shared.commit_visible(batch.revision, batch.events);
                // The term record is committed (reads still need the lease, apart).
                run.serving.store(run.term, std::sync::atomic::Ordering::SeqCst);
                synced.send_replace(through);
                drop(batch.ahead);
                answer(batch.replies, if leads { Ok(()) } else { Err(Error::LeaderChanged) });
            }
            None => {
                synced = None;
                answer(batch.replies, Err(Error::LeaderChanged));
            }
        }
    }
}
