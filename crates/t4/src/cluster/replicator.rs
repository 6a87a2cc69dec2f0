//! The leader's side of replication (docs/clustering.md "Replication"): one task per
//! follower sends appends from the member log, takes the answers, and moves the commit
//! index by [`quorum::commit_index`] (majority-of-voters, commit-own-term, commit-only-up).
//!
//! - Each follower gets one append at a time: what the log holds past where the follower
//!   stands, up to [`APPEND_BYTES_MAX`], or an empty one every heartbeat interval (it carries
//!   the commit index and the lock's ETag, which the follower's election counts its takeover
//!   wait from). A refusal backs the follower up to where its log stops matching; a lost
//!   answer resends from past what it was known to hold.
//! - An answer with a newer term ends this leadership: the replicator reports the term and
//!   its tasks stop.
//! - The leader counts itself once its own records are fsynced ([`Replicator::own_durable`]).
//! - `healthy` tells the election whether a majority of the voters answered within the
//!   lease (renew-with-quorum).
//!
//! A follower whose next record is no longer in the leader's memory gets the leader's store
//! instead, as of a committed position (`cluster/snapshot.rs`, snapshot-committed), in
//! chunks, and is sent appends from past it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::env::signal;
use bytes::Bytes;
use prost::Message;
use t4_proto::peer::{AppendResponse, SnapshotChunk, SnapshotResponse};

use super::member_log::MemberLog;
use super::members::Members;
use super::progress::Progress;
use super::quorum::{commit_index, WaitMode};
use super::service::cluster_id_text;
use crate::env::{peer_methods, Clock, PeerNet};

/// The most bytes of records one append carries (at least one batch always goes).
pub const APPEND_BYTES_MAX: usize = 4 << 20;
/// Bytes sent to one follower and not yet answered, at most.
const IN_FLIGHT_BYTES_MAX: usize = 16 << 20;
/// Pause before resending after a failed call.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// What one leadership replicates under.
#[derive(Debug, Clone)]
pub struct Leadership {
    pub term: u64,
    /// This node's id (a voter of `members`).
    pub me: String,
    pub members: Members,
    pub mode: WaitMode,
    /// The index of this term's term record: nothing is committed by counting below it.
    pub term_start: u64,
    /// How often an idle follower hears from the leader.
    pub heartbeat: Duration,
}

/// The lock as the leader last renewed it, for its appends to carry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockSeen {
    pub etag: String,
    pub lease_ms: u64,
}

struct Shared {
    leadership: Leadership,
    /// The members counted (a promotion changes them while the leadership runs).
    members: Mutex<Members>,
    /// A learner about to be promoted: nothing more is committed unless it holds it too,
    /// so it holds everything committed before it counts (learner-first).
    required: Mutex<Option<String>>,
    cluster_id: String,
    log: Arc<Mutex<MemberLog>>,
    peers: Arc<dyn PeerNet>,
    clock: Arc<dyn Clock>,
    /// Each voter's durable, matching index as last heard (the leader's own included).
    durable: Mutex<BTreeMap<String, u64>>,
    /// When each follower last answered (monotonic).
    heard: Mutex<BTreeMap<String, Duration>>,
    commit: signal::Sender<u64>,
    /// Set to the newer term that ended this leadership.
    deposed: signal::Sender<Option<u64>>,
    /// The leader's last durable index: followers wake on it.
    appended: signal::Sender<u64>,
    lock: signal::Receiver<LockSeen>,
    /// The store snapshots are taken of (None: no snapshots; a follower that needs records
    /// the log no longer holds waits).
    store: Option<Arc<crate::mvcc::Store>>,
    /// Snapshots that went through, counted for the member's metrics (across terms).
    snapshots_sent: Arc<std::sync::atomic::AtomicU64>,
    /// The store as the leadership began, before the adopted log went into it: committed
    /// history (snapshot-committed) for a follower the term's first commit waits on. Dropped
    /// once the term record is committed (it pins the store's pages while held).
    base: Mutex<Option<Arc<crate::mvcc::Snapshot>>>,
}

/// The running replication of one leadership; dropping it stops its tasks.
pub struct Replicator {
    shared: Arc<Shared>,
    /// Each follower's task, by name.
    tasks: Mutex<BTreeMap<String, tokio::task::JoinHandle<()>>>,
}

impl Drop for Replicator {
    fn drop(&mut self) {
        for task in self.tasks.lock().expect("tasks lock").values() {
            task.abort();
        }
    }
}

impl Replicator {
    /// Starts one task per other member of `leadership.members` (learners too: they get the
    /// log and count for nothing).
    pub fn start(
        leadership: Leadership,
        log: Arc<Mutex<MemberLog>>,
        peers: Arc<dyn PeerNet>,
        clock: Arc<dyn Clock>,
        lock: signal::Receiver<LockSeen>,
        store: Option<Arc<crate::mvcc::Store>>,
        snapshots_sent: Arc<std::sync::atomic::AtomicU64>,
        base: Option<crate::mvcc::Snapshot>,
    ) -> Self {
        let (last, commit) = {
            let log = log.lock().expect("member log lock");
            (log.last().index, log.commit())
        };
        let cluster_id = cluster_id_text(leadership.members.cluster_id);
        let others: Vec<(String, String)> = leadership
            .members
            .members
            .iter()
            .filter(|member| member.name != leadership.me)
            .map(|member| (member.name.clone(), member.peer_url.clone()))
            .collect();
        let mut durable = BTreeMap::new();
        durable.insert(leadership.me.clone(), last);
        let shared = Arc::new(Shared {
            members: Mutex::new(leadership.members.clone()),
            required: Mutex::new(None),
            leadership,
            cluster_id,
            log,
            peers,
            clock,
            durable: Mutex::new(durable),
            heard: Mutex::new(BTreeMap::new()),
            commit: signal::Sender::new(commit),
            deposed: signal::Sender::new(None),
            appended: signal::Sender::new(last),
            lock,
            store,
            snapshots_sent,
            base: Mutex::new(base.map(Arc::new)),
        });
        shared.recount();
        let tasks = others.into_iter().map(|(name, url)| (name.clone(), tokio::spawn(follow(shared.clone(), name, url, last)))).collect();
        Self { shared, tasks: Mutex::new(tasks) }
    }

    /// Counts under `members` from now on, and starts sending to any member it names that
    /// has no task yet (a node that joined as a learner while this leadership runs).
    pub fn set_members(&self, members: Members) {
        {
            let mut tasks = self.tasks.lock().expect("tasks lock");
            // A removed member is sent nothing more.
            tasks.retain(|name, task| {
                let kept = members.get(name).is_some();
                if !kept {
                    task.abort();
                }
                kept
            });
            let last = self.shared.log.lock().expect("member log lock").last().index;
            for member in members.members.iter().filter(|member| member.name != self.shared.leadership.me) {
                if !tasks.contains_key(&member.name) {
                    let task = tokio::spawn(follow(self.shared.clone(), member.name.clone(), member.peer_url.clone(), last));
                    tasks.insert(member.name.clone(), task);
                }
            }
        }
        *self.shared.members.lock().expect("members lock") = members;
        self.shared.recount();
    }

    /// The leader's own records through `index` are fsynced: it counts itself for them.
    pub fn own_durable(&self, index: u64) {
        self.shared.durable.lock().expect("durable lock").insert(self.shared.leadership.me.clone(), index);
        self.shared.appended.send_replace(index);
        self.shared.recount();
    }

    /// The commit index as it moves.
    pub fn commit(&self) -> signal::Receiver<u64> {
        self.shared.commit.subscribe()
    }

    /// Set once an answer named a newer term.
    pub fn deposed(&self) -> signal::Receiver<Option<u64>> {
        self.shared.deposed.subscribe()
    }

    /// From now on nothing more is committed unless `learner` holds it too (`None`: as
    /// before). Set before a promotion is written, cleared once it is (or failed).
    pub fn require(&self, learner: Option<String>) {
        *self.shared.required.lock().expect("required lock") = learner;
        self.shared.recount();
    }

    /// Every member's durable, matching index as last heard (the leader's own included).
    pub fn durable(&self) -> BTreeMap<String, u64> {
        self.shared.durable.lock().expect("durable lock").clone()
    }

    /// What `name` was last heard to hold durably and matching (0: nothing known).
    pub fn matched(&self, name: &str) -> u64 {
        self.shared.durable.lock().expect("durable lock").get(name).copied().unwrap_or(0)
    }

    /// Whether a majority of the voters (the leader counted) answered within `within` of
    /// `now` (renew-with-quorum).
    pub fn healthy(&self, now: Duration, within: Duration) -> bool {
        let members = self.shared.members.lock().expect("members lock").clone();
        self.started_enough(&members, now, within)
    }

    /// Whether a majority of `members`' voters (the leader counted if among them) answered
    /// within `within` of `now`: a membership change to `members` keeps the cluster able to
    /// commit (enough-started).
    pub fn started_enough(&self, members: &Members, now: Duration, within: Duration) -> bool {
        let heard = self.shared.heard.lock().expect("heard lock");
        let me = &self.shared.leadership.me;
        let fresh = members
            .voters()
            .filter(|voter| &voter.name == me || heard.get(&voter.name).is_some_and(|at| now.saturating_sub(*at) <= within))
            .count();
        let quorum = members.quorum();
        fresh >= quorum
    }
}

impl Shared {
    /// Moves the commit index if the voters' durable indexes allow it.
    fn recount(&self) {
        let leadership = &self.leadership;
        let previous = *self.commit.borrow();
        let counted = {
            let members = self.members.lock().expect("members lock");
            let durable = self.durable.lock().expect("durable lock");
            let counted = commit_index(&members, &durable, &leadership.me, leadership.mode, leadership.term_start, previous);
            match &*self.required.lock().expect("required lock") {
                Some(learner) => counted.min(durable.get(learner).copied().unwrap_or(0)).max(previous),
                None => counted,
            }
        };
        if counted > previous {
            if counted >= leadership.term_start {
                self.base.lock().expect("base lock").take();
            }
            self.log.lock().expect("member log lock").committed(counted);
            self.commit.send_if_modified(|commit| {
                let moved = counted > *commit;
                *commit = (*commit).max(counted);
                moved
            });
        }
    }
}

/// Keeps one follower up with the log until the leadership ends.
async fn follow(shared: Arc<Shared>, name: String, url: String, last: u64) {
    let leadership = &shared.leadership;
    let mut progress = Progress::new(last, IN_FLIGHT_BYTES_MAX);
    let mut appended = shared.appended.subscribe();
    let mut commit = shared.commit.subscribe();
    let mut warned_behind = false;
    loop {
        if shared.deposed.borrow().is_some() {
            return;
        }
        let request = {
            let log = shared.log.lock().expect("member log lock");
            log.append_request(leadership.term, &leadership.me, progress.next(), APPEND_BYTES_MAX)
        };
        let mut request = match request {
            Ok(Some(request)) => request,
            Ok(None) => {
                match send_snapshot(&shared, &name, &url).await {
                    // The last chunk's answer was lost (a large install outlasts the call):
                    // appends from past the snapshot find out whether it landed.
                    Err(SnapshotLost::Unanswered { at }) => {
                        progress = Progress::new(at, IN_FLIGHT_BYTES_MAX);
                    }
                    Ok(Some(durable)) => {
                        shared.snapshots_sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        warned_behind = false;
                        shared.heard.lock().expect("heard lock").insert(name.clone(), shared.clock.monotonic());
                        progress = Progress::new(durable, IN_FLIGHT_BYTES_MAX);
                        shared.durable.lock().expect("durable lock").insert(name.clone(), durable);
                        shared.recount();
                    }
                    Ok(None) => return,
                    Err(SnapshotLost::Failed(error)) => {
                        if !warned_behind {
                            warned_behind = true;
                            tracing::warn!(follower = %name, next = progress.next(), %error, "cluster: a follower needs records this leader no longer holds, and its snapshot did not go through; retrying");
                        }
                        shared.clock.sleep(leadership.heartbeat).await;
                        progress.lost();
                    }
                }
                continue;
            }
            Err(error) => {
                tracing::error!(%error, "cluster: could not build an append");
                shared.clock.sleep(RETRY_PAUSE).await;
                continue;
            }
        };
        request.cluster_id = shared.cluster_id.clone();
        let request_prev = request.prev.as_ref().map_or(0, |prev| prev.index);
        let lock = shared.lock.borrow().clone();
        (request.lock_etag, request.lease_ms) = (lock.etag, lock.lease_ms);
        let through = request.batches.last().map_or(progress.next() - 1, |batch| batch.first_index + batch.count - 1);
        let commit_sent = request.commit_index;
        let bytes: usize = request.batches.iter().map(|batch| batch.wal_bytes.len()).sum();
        progress.sent(through, bytes);
        let answer = shared.peers.call(&url, peer_methods::APPEND, Bytes::from(request.encode_to_vec())).await;
        let answer = answer
            .map_err(|error| error.to_string())
            .and_then(|bytes| AppendResponse::decode(bytes).map_err(|error| format!("an append answer that does not decode: {error}")));
        match answer {
            Ok(response) => {
                shared.heard.lock().expect("heard lock").insert(name.clone(), shared.clock.monotonic());
                if response.term > leadership.term {
                    tracing::info!(term = leadership.term, newer = response.term, follower = %name, "cluster: a follower follows a newer term");
                    shared.deposed.send_replace(Some(response.term));
                    return;
                }
                if response.accepted {
                    let durable = response.durable.map_or(0, |position| position.index);
                    progress.taken(durable);
                    warned_behind = false;
                    shared.durable.lock().expect("durable lock").insert(name.clone(), progress.matched());
                    shared.recount();
                } else {
                    // Back up to where the follower's log stops matching, and at least over
                    // the whole run of the term that wrote `prev` here: a follower holding a
                    // deposed leader's tail names its term's start, which may be long before
                    // this leader's records of that term end.
                    let prev = request_prev;
                    let run_start = shared.log.lock().expect("member log lock").terms().run_start(prev);
                    let held = progress.matched();
                    progress.refused(response.mismatch_index.max(run_start));
                    if progress.matched() < held {
                        tracing::info!(follower = %name, held, now = progress.matched(), "cluster: a follower lost its log");
                        shared.durable.lock().expect("durable lock").insert(name.clone(), progress.matched());
                    }
                    continue;
                }
            }
            Err(error) => {
                tracing::debug!(follower = %name, %error, "cluster: append lost");
                progress.lost();
                shared.clock.sleep(RETRY_PAUSE).await;
                continue;
            }
        }
        // Caught up: wait for more records, a commit index to pass on, or the heartbeat.
        // Records appended while this call was out (whether it carried records or only a
        // commit index) go at once: the wait below would not see them as new.
        if progress.next() <= *appended.borrow() {
            continue;
        }
        // The commit index usually moved on this very answer (`recount` above): the
        // follower is told at once, not at the next heartbeat (its read index waits on it).
        if *commit.borrow_and_update() > commit_sent {
            continue;
        }
        let _ = appended.borrow_and_update();
        tokio::select! {
            biased; // see node/writer.rs: no random pick in the simulator
            _ = appended.changed() => {}
            _ = commit.wait_for(|index| *index > commit_sent) => {}
            _ = shared.clock.sleep(leadership.heartbeat) => {}
        }
    }
}

/// Why a snapshot did not go through.
enum SnapshotLost {
    Failed(String),
    /// The last chunk went, its answer did not come.
    Unanswered {
        at: u64,
    },
}

impl From<String> for SnapshotLost {
    fn from(error: String) -> Self {
        SnapshotLost::Failed(error)
    }
}

impl From<&str> for SnapshotLost {
    fn from(error: &str) -> Self {
        SnapshotLost::Failed(error.to_string())
    }
}

/// Sends `name` the leader's store as of a committed position: the follower's durable
/// index after it (`Ok(None)`: this leadership ended meanwhile).
async fn send_snapshot(shared: &Arc<Shared>, name: &str, url: &str) -> Result<Option<u64>, SnapshotLost> {
    use super::snapshot::{encode_entries, CHUNK_BYTES_MAX};
    let leadership = &shared.leadership;
    let store = shared.store.clone().ok_or("this leader sends no snapshots")?;
    let mut snapshot = Arc::new(crate::env::blocking(move || store.snapshot()).await.map_err(|error| error.to_string())?);
    // The store runs ahead of the commit index by what is not committed yet. When that is
    // the adopted log and the term record, the commit may wait on this very follower (a
    // majority of two, say): the store as the term began is committed history, and the
    // log holds everything after it.
    let committed = *shared.commit.borrow();
    if snapshot.position.index > committed {
        let base = shared.base.lock().expect("base lock").clone();
        if let Some(base) = base.filter(|base| base.position.index <= committed) {
            snapshot = base;
        }
    }
    let at = snapshot.position.index;
    // snapshot-committed: only history goes.
    let mut commit = shared.commit.subscribe();
    let mut deposed = shared.deposed.subscribe();
    tokio::select! {
        biased; // see node/writer.rs
        _ = deposed.wait_for(|deposed| deposed.is_some()) => return Ok(None),
        reached = commit.wait_for(|commit| *commit >= at) => if reached.is_err() { return Ok(None) },
    }
    let term_at = shared.log.lock().expect("member log lock").terms().term_at(at).ok_or(format!("no term known for index {at}"))?;
    let read = snapshot.clone();
    let (leases, auth) = crate::env::blocking(move || Ok::<_, crate::Error>((read.leases()?, read.auth_state()?)))
        .await
        .map_err(|error| error.to_string())?;
    let snapshot_id = crate::env::nonce();
    tracing::info!(follower = %name, index = at, revision = snapshot.position.revision, "cluster: sending a snapshot");
    let (mut cursor, mut seq, mut entries_sent, mut bytes_sent) = (None, 0u64, 0u64, 0u64);
    loop {
        if shared.deposed.borrow().is_some() {
            return Ok(None);
        }
        let step = snapshot.clone();
        let (entries, last) =
            crate::env::blocking(move || step.entries_after(cursor, CHUNK_BYTES_MAX)).await.map_err(|error| error.to_string())?;
        let done = entries.is_empty();
        let payload = encode_entries(&entries);
        entries_sent += entries.len() as u64;
        bytes_sent += payload.len() as u64;
        let manifest = done.then(|| {
            crate::durability::checkpoint::Manifest {
                term: term_at,
                position: snapshot.position,
                wall_ms: shared.clock.wall_ms(),
                entries: entries_sent,
                live_entries: entries_sent,
                bytes: bytes_sent,
                chunks: Vec::new(),
                leases: leases.clone(),
                auth: auth.clone(),
            }
            .encode()
        });
        let chunk = SnapshotChunk {
            term: leadership.term,
            leader_id: leadership.me.clone(),
            cluster_id: shared.cluster_id.clone(),
            snapshot_id,
            seq,
            entries_crc: crc32c::crc32c(&payload),
            entries: payload,
            done,
            manifest: manifest.unwrap_or_default(),
        };
        let answer = match shared.peers.call(url, peer_methods::SNAPSHOT, Bytes::from(chunk.encode_to_vec())).await {
            Ok(answer) => answer,
            Err(crate::env::PeerError::Refused(why)) => return Err(SnapshotLost::Failed(why)),
            Err(_) if done => return Err(SnapshotLost::Unanswered { at }),
            Err(error) => return Err(SnapshotLost::Failed(error.to_string())),
        };
        let answer = SnapshotResponse::decode(answer).map_err(|error| format!("a snapshot answer that does not decode: {error}"))?;
        shared.heard.lock().expect("heard lock").insert(name.to_string(), shared.clock.monotonic());
        if answer.term > leadership.term {
            tracing::info!(term = leadership.term, newer = answer.term, follower = %name, "cluster: a follower follows a newer term");
            shared.deposed.send_replace(Some(answer.term));
            return Ok(None);
        }
        if !answer.accepted {
            return Err("the follower refused the snapshot".into());
        }
        if done {
            let durable = answer.durable.map_or(0, |position| position.index);
            tracing::info!(follower = %name, index = at, durable, entries = entries_sent, bytes = bytes_sent, "cluster: snapshot installed");
            return Ok(Some(durable));
        }
        cursor = last;
        seq += 1;
    }
}

#[cfg(test)]
#[path = "replicator_test.rs"]
mod replicator_test;
