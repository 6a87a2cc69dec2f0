//! A node as a member of a cluster (docs/clustering.md "The node in a cluster").
//!
//! ```text
//!  election (run_member) --Standing--> roles: follow | ascend -> lead -> step down
//!  peer port --MemberService--> member log (WAL, terms, promise) --commit--> apply loop
//!  writes --router--> leader's writer -> leader syncer -> commit point (leading.rs)
//! ```
//! - A **follower** takes appends into its member log and applies records to its store only
//!   through the commit index the leader sends, so its store never holds a record it might
//!   have to take back. Writes and linearizable reads get etcd's "not leader" (forwarding
//!   and read index are not built yet); serializable reads and watches are served locally.
//! - A member whose election took the lock **ascends** before it serves: it reads
//!   `members`, promises the term to itself, asks every voter for a promise, adopts the best
//!   log of a majority (fetching what it lacks), writes its term record and applies its
//!   log above the store. Its first acknowledgement waits for the term record to be
//!   committed (commit-own-term).
//! - A **leader** applies writes to its store before they are committed (the writer's
//!   pipelining). When its leadership ends (lease run out, a newer term seen, the node
//!   closing) it **steps down**: every write not yet acknowledged gets `LeaderChanged`, and
//!   the store goes back to its last durable commit and re-applies only committed records
//!   (`Store::reset_to_durable`), so nothing a majority may lack stays in it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::env::signal;
use bytes::Bytes;
use prost::Message;
use t4_proto::peer::{AppendRequest, FetchRequest, FetchResponse, PromiseRequest, PromiseResponse};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::cluster::ascension::{Ascension, Step};
use crate::cluster::member_log::MemberLog;
use crate::cluster::members::{member_id, read_members, write_members, Member, Members, Role};
use crate::cluster::replicator::{Leadership, LockSeen, Replicator, APPEND_BYTES_MAX};
use crate::cluster::service::{cluster_id_text, MemberService};
use crate::cluster::wire::receive_append;
use crate::cluster::Position;
use crate::config::ClusterConfig;
use crate::election::member::{run_member, MemberElection, Standing};
use crate::election::{Election, Identity, LockRecord};
use crate::env::{peer_methods, ObjectStore};
use crate::error::{Error, Result};
use crate::wal::{Record, RecordBody};

use super::leading::{leader_syncer_loop, LeaderRun, Pending};
use super::writer::{follow_records, writer_loop, Job};
use super::Shared;

/// What a cluster member is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterRole {
    /// Following; the leader as the bucket's lock names it, when known.
    Follower { leader: Option<LeaderSeen> },
    /// Took the lock for `term` and is adopting the best log before it serves.
    Ascending { term: u64 },
    /// Serving as the leader of `term`.
    Leader { term: u64 },
}

/// A member's view of its cluster ([`super::Node::cluster_view`]).
#[derive(Debug, Clone)]
pub struct ClusterView {
    pub node_id: String,
    pub members: Members,
    pub role: ClusterRole,
}

impl ClusterView {
    /// The term this member last knew of (0 before it heard of any leader).
    pub fn term(&self) -> u64 {
        match &self.role {
            ClusterRole::Leader { term } | ClusterRole::Ascending { term } => *term,
            ClusterRole::Follower { leader } => leader.as_ref().map_or(0, |leader| leader.term),
        }
    }

    /// The leader's node id as this member knows it.
    pub fn leader(&self) -> Option<&str> {
        match &self.role {
            ClusterRole::Leader { .. } => Some(&self.node_id),
            ClusterRole::Follower { leader: Some(leader) } => Some(&leader.node_id),
            _ => None,
        }
    }

    pub fn is_learner(&self) -> bool {
        self.members.get(&self.node_id).is_some_and(|me| me.role == Role::Learner)
    }
}

/// The leader as the lock names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderSeen {
    pub node_id: String,
    pub client_url: String,
    /// Where this member forwards writes and asks for the read index.
    pub peer_url: String,
    pub term: u64,
}

/// The cluster half of a node's shared state.
pub(super) struct ClusterState {
    pub config: ClusterConfig,
    pub log: Arc<Mutex<MemberLog>>,
    pub service: Arc<MemberService>,
    pub standing: signal::Receiver<Standing>,
    pub role: signal::Sender<ClusterRole>,
    pub members: Mutex<Members>,
    /// The bucket (through the retry layer): the lock and `members`.
    pub bucket: Arc<dyn ObjectStore>,
    /// The commit index the leader last sent (the follower's apply loop follows it).
    pub commit: signal::Receiver<u64>,
    /// The writer's queue while this member leads.
    pub leading: Mutex<Option<mpsc::Sender<Job>>>,
    pub replicator: Mutex<Option<Arc<Replicator>>>,
    /// Cleared when the node closes: every cluster task ends.
    pub running: AtomicBool,
    /// The term whose ascension failed (0: none): its holder lets the lease run out.
    pub gave_up: AtomicU64,
    /// The term this member leads and has committed its term record in (0: none).
    pub serving: Arc<AtomicU64>,
    pub tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The store's applied index on a follower, as its apply loop moves it (what a
    /// linearizable read on a follower waits for).
    pub applied: signal::Sender<u64>,
    /// Forwarded writes' ids: `<node id>/<nonce of this open>/<count>`. Not the wall clock:
    /// a clock set back (or a restart within its millisecond) would repeat an earlier open's
    /// ids, and the leader would answer a new write with an old write's answer (the
    /// simulator's replicated_3 seed 7004: its members' wall clocks restart at a crash).
    pub forward_prefix: String,
    pub forwards: AtomicU64,
    /// Snapshots this member sent as a leader (each went through) and installed as a follower.
    pub snapshots_sent: Arc<AtomicU64>,
    pub snapshots_installed: AtomicU64,
    /// Held while committed records are applied to the store, and while a leader's
    /// snapshot replaces it (`node/catch_up.rs`): never both at once.
    pub applying: Arc<Mutex<()>>,
}

/// How often an idle leader's followers hear from it, as a share of the lease.
const HEARTBEATS_PER_LEASE: u32 = 10;
/// The bytes of records a member keeps in memory (to apply, and as a leader to send on) past
/// what its store holds durably; beyond it the oldest go, and a member that far behind
/// would need a snapshot (not built yet).
pub(super) const TAIL_BYTES_KEPT: usize = 64 << 20;
/// How often a follower makes its store durable (then drops the WAL below it).
const FOLLOWER_STORE_SYNC: Duration = Duration::from_secs(2);

impl ClusterState {
    fn leader_seen(holder: &Option<LockRecord>) -> Option<LeaderSeen> {
        holder.as_ref().filter(|record| !record.node.is_empty()).map(|record| LeaderSeen {
            node_id: record.node.clone(),
            client_url: record.client_url.clone(),
            peer_url: record.peer_url.clone(),
            term: record.term,
        })
    }

    /// The error a write or a linearizable read gets on a member that does not lead.
    pub fn not_leader(&self) -> Error {
        match &*self.role.borrow() {
            ClusterRole::Follower { leader: Some(leader) } if leader.node_id != self.config.node_id => {
                Error::NotLeader { leader: Some(leader.client_url.clone()).filter(|url| !url.is_empty()) }
            }
            _ => Error::NoLeader,
        }
    }

    /// The leader while this member follows another that it knows of.
    pub fn leader_elsewhere(&self) -> Option<LeaderSeen> {
        match &*self.role.borrow() {
            ClusterRole::Follower { leader: Some(leader) } if leader.node_id != self.config.node_id && !leader.peer_url.is_empty() => {
                Some(leader.clone())
            }
            _ => None,
        }
    }

    /// Whether this member may serve a linearizable read now (it leads, by its lease).
    pub fn serves_linearizable(&self, now: Duration) -> bool {
        // Planted (simulator tests only): the role alone, past the lease.
        if planted_bug!(ReadPastLease) {
            return matches!(*self.role.borrow(), ClusterRole::Leader { .. });
        }
        matches!(*self.role.borrow(), ClusterRole::Leader { term }
            if self.standing.borrow().leads_at(now) == Some(term) && self.serving.load(Ordering::SeqCst) == term)
    }
}

/// Joins the bucket's `members` record (conditional writes, read again on a conflict): the
/// first member forms the cluster as its only voter, a new one joins as a learner, a known one
/// under new URLs updates them.
///
/// A voter whose data dir is empty (`fresh`: its disk was lost or replaced) joins as a
/// learner again: it forgot what it acknowledged and what it promised, so counting it could
/// let a majority lack an acknowledged record. The leader promotes it once it caught up.
pub(super) async fn join_cluster(config: &ClusterConfig, bucket: &Arc<dyn ObjectStore>, wall_ms: u64, fresh: bool) -> Result<Members> {
    let me = Member::new(&config.node_id, Role::Learner, &config.peer_url, &config.client_url);
    for _ in 0..16 {
        let read = read_members(bucket.as_ref()).await?;
        let next = match &read {
            // The first member forms the cluster, as its only voter.
            None => Members::bootstrap(member_id(&format!("{}/{wall_ms}", config.node_id)), me.clone()),
            Some((members, _)) => match members.get(&config.node_id) {
                Some(known) if fresh && known.role == Role::Voter && members.voter_count() > 1 => {
                    tracing::warn!(node = %config.node_id, "cluster: this voter's data dir is empty; it rejoins as a learner");
                    members.demoted(&known.name)?.with_member(me.clone())?.with_version(members.version + 1)
                }
                Some(known) if known.peer_url == me.peer_url && known.client_url == me.client_url => return Ok(members.clone()),
                // Known under other URLs: the same member moved (its id is its node id).
                Some(known) => Members {
                    version: members.version + 1,
                    members: members
                        .members
                        .iter()
                        .map(|member| if member.name == known.name { Member { role: member.role, ..me.clone() } } else { member.clone() })
                        .collect(),
                    ..members.clone()
                },
                // learner-first: a new node joins as a learner; the leader promotes it.
                None => members.with_member(me.clone())?,
            },
        };
        let read_ref = read.as_ref().map(|(members, etag)| (members, etag.as_str()));
        if write_members(bucket.as_ref(), read_ref, &next).await?.is_some() {
            tracing::info!(node = %config.node_id, version = next.version, voters = next.voter_count(), "cluster: joined");
            return Ok(next);
        }
    }
    Err(Error::StorageFailure("cluster: members kept changing while this node joined".into()))
}

/// Starts the member's tasks: the election, the roles, the follower's apply loop and the
/// job router.
pub(super) fn start(shared: &Arc<Shared>, election: MemberElection, jobs: mpsc::Receiver<Job>, stopped: oneshot::Sender<Result<()>>) {
    let state = shared.cluster.as_ref().expect("a cluster member");
    let weak = Arc::downgrade(shared);
    state.service.serve_leads(Arc::new(super::forwarding::LeaderSide::new(weak.clone())));
    let (healthy, going) = (weak.clone(), weak.clone());
    let election_task = tokio::spawn(run_member(
        election,
        move || healthy.upgrade().is_some_and(|shared| member_healthy(&shared)),
        move || going.upgrade().is_some_and(|shared| shared.cluster.as_ref().expect("member").running.load(Ordering::SeqCst)),
    ));
    let roles = tokio::spawn(roles(weak.clone()));
    let applier = tokio::spawn(apply_commits(weak.clone()));
    let router = tokio::spawn(route_jobs(weak, jobs, stopped));
    state.tasks.lock().expect("tasks lock").extend([election_task, roles, applier, router]);
}

/// The election's `healthy`: a holder renews while a majority answered within the lease
/// (or while it ascends); a watcher may take over while it is a voter.
fn member_healthy(shared: &Shared) -> bool {
    let state = shared.cluster.as_ref().expect("member");
    let gave_up = state.gave_up.load(Ordering::SeqCst);
    if shared.failed().is_some() || (gave_up != 0 && state.standing.borrow().term == Some(gave_up)) {
        return false;
    }
    if let Some(replicator) = state.replicator.lock().expect("replicator lock").as_ref() {
        return replicator.healthy(shared.env.clock.monotonic(), state.config.timing.lease);
    }
    state.members.lock().expect("members lock").is_voter(&state.config.node_id)
}

/// Stops every cluster task (the node is closing): a leadership ends first, its writes
/// answered, before the election and the apply loop are stopped.
pub(super) async fn stop(shared: &Arc<Shared>) {
    let state = shared.cluster.as_ref().expect("member");
    state.running.store(false, Ordering::SeqCst);
    state.leading.lock().expect("leading lock").take();
    let tasks: Vec<_> = state.tasks.lock().expect("tasks lock").drain(..).collect();
    let mut tasks = tasks.into_iter();
    let (election, roles) = (tasks.next(), tasks.next());
    if let Some(mut roles) = roles {
        // The roles task sees `running` within its 100 ms poll and ends its leadership.
        let ended = tokio::select! {
            biased; // see writer.rs
            _ = &mut roles => true,
            _ = shared.env.clock.sleep(Duration::from_secs(10)) => false,
        };
        if !ended {
            tracing::warn!("cluster: the leadership did not end within 10 s of closing");
            roles.abort();
        }
    }
    for task in election.into_iter().chain(tasks) {
        task.abort();
        let _ = task.await;
    }
    state.replicator.lock().expect("replicator lock").take();
}

/// Hands each write to the leadership's writer, or refuses it with who leads.
async fn route_jobs(shared: Weak<Shared>, mut jobs: mpsc::Receiver<Job>, stopped: oneshot::Sender<Result<()>>) {
    while let Some(job) = jobs.recv().await {
        let Some(shared) = shared.upgrade() else { break };
        let state = shared.cluster.as_ref().expect("member");
        let writer = state.leading.lock().expect("leading lock").clone();
        let refused = match writer {
            Some(writer) => writer.send(job).await.err().map(|mpsc::error::SendError(job)| job),
            None => Some(job),
        };
        if let Some(job) = refused {
            match state.leader_elsewhere() {
                // forward-once: the leader applies it, this member answers as it would.
                Some(leader) => {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let answer = super::forwarding::forward(&shared, &leader, &job.request, job.auth_revision).await;
                        let _ = job.reply.send(answer);
                    });
                }
                None => {
                    let _ = job.reply.send(Err(state.not_leader()));
                }
            }
        }
    }
    let _ = stopped.send(Ok(()));
}

/// Follows the standing: ascends when the election took a term, leads, steps down.
async fn roles(weak: Weak<Shared>) {
    let Some((mut standing, clock)) = weak.upgrade().map(|shared| {
        let state = shared.cluster.as_ref().expect("member");
        (state.standing.clone(), shared.env.clock.clone())
    }) else {
        return;
    };
    let mut members_read_at = Duration::ZERO;
    let joined = weak.upgrade().map(|shared| shared.cluster.as_ref().expect("member").members.lock().expect("members lock").clone());
    let Some(joined) = joined else { return };
    loop {
        let term = loop {
            let Some(shared) = weak.upgrade() else { return };
            let state = shared.cluster.as_ref().expect("member");
            if !state.running.load(Ordering::SeqCst) {
                return;
            }
            // The peer service stopped on a storage failure or a broken invariant: so does
            // the node (fail-stop, visible in its health).
            if let Some(failure) = state.service.failure() {
                if shared.failed().is_none() {
                    shared.fail(failure);
                }
            }
            let now = clock.monotonic();
            // A follower learns of its promotion (and of other members) from the bucket: a
            // voter may take over, a learner never does.
            if now >= members_read_at {
                members_read_at = now + state.config.timing.lease / 2;
                if let Ok(Some((members, _))) = read_members(state.bucket.as_ref()).await {
                    // removed-stops (node/membership.rs): gone from a newer record than the
                    // one it joined under.
                    let me = &state.config.node_id;
                    let removed = members.cluster_id == joined.cluster_id && members.version > joined.version && members.get(me).is_none();
                    *state.members.lock().expect("members lock") = members;
                    if removed && shared.failed().is_none() {
                        shared.fail(Error::Fenced(format!(
                            "this member ({me}) was removed from the cluster; it serves nothing more (started again, it joins anew as a learner)"
                        )));
                    }
                }
            }
            let seen = standing.borrow_and_update().clone();
            if let Some(term) = seen.leads_at(now).filter(|term| *term != state.gave_up.load(Ordering::SeqCst)) {
                break term;
            }
            let role = ClusterRole::Follower { leader: ClusterState::leader_seen(&seen.holder) };
            state.role.send_if_modified(|current| {
                let changed = *current != role;
                *current = role.clone();
                changed
            });
            drop(shared);
            tokio::select! {
                biased; // see writer.rs
                _ = standing.changed() => {}
                _ = clock.sleep(Duration::from_millis(100)) => {}
            }
        };
        let Some(shared) = weak.upgrade() else { return };
        let state = shared.cluster.as_ref().expect("member");
        state.role.send_replace(ClusterRole::Ascending { term });
        // A member's own promise is the first it gives for its term: before asking others,
        // it stops taking appends of other terms.
        state.service.set_leading(true);
        match ascend(&shared, term).await {
            Ok(ascended) => {
                lead(&shared, term, ascended).await;
                step_down(&shared).await;
            }
            Err(error) => {
                tracing::warn!(term, %error, "cluster: could not take up leadership; letting the lease run out");
                state.gave_up.store(term, Ordering::SeqCst);
                // Nothing was served: the store holds nothing of this term.
                state.service.set_leading(false);
            }
        }
    }
}

/// What an ascension leaves: the members it led under and the index of its term record.
struct Ascended {
    members: Members,
    term_start: u64,
}

/// adopt-best-log: promises from a majority of the voters, the best log fetched, the term
/// record written. Within one lease, or it fails.
async fn ascend(shared: &Arc<Shared>, term: u64) -> Result<Ascended> {
    let state = shared.cluster.as_ref().expect("member");
    let me = state.config.node_id.clone();
    let members = match read_members(state.bucket.as_ref()).await? {
        Some((members, _)) => members,
        None => return Err(Error::StorageFailure("cluster: the bucket's members record is gone".into())),
    };
    *state.members.lock().expect("members lock") = members.clone();
    if !members.is_voter(&me) {
        return Err(Error::InvalidArgument("a learner does not lead".into()));
    }
    let log = state.log.clone();
    let own = crate::env::blocking(move || log.lock().expect("member log lock").promise(term)).await?;
    if !own.promised {
        return Err(Error::LeaderChanged);
    }
    let (last, commit) = (own.last.map(Position::from).unwrap_or_default(), own.commit_index);
    let mut ascension = Ascension::new(term, me.clone(), members.clone(), last, commit);
    let mut step = ascension.answered(&me, Ok(last));
    let cluster_id = cluster_id_text(members.cluster_id);
    let request = Bytes::from(PromiseRequest { term, leader_id: me.clone(), cluster_id: cluster_id.clone() }.encode_to_vec());
    let mut asks = futures::stream::FuturesUnordered::new();
    for voter in ascension.to_ask() {
        let url = members.get(&voter).map(|member| member.peer_url.clone()).unwrap_or_default();
        let (peers, request) = (state.config.peers.clone(), request.clone());
        asks.push(async move { (voter, peers.call(&url, peer_methods::PROMISE, request).await) });
    }
    let deadline = shared.env.clock.monotonic() + state.config.timing.lease;
    while step == Step::Wait {
        use futures::StreamExt;
        let left = deadline.saturating_sub(shared.env.clock.monotonic());
        let answer = tokio::select! {
            biased; // see writer.rs
            answer = asks.next() => answer,
            _ = shared.env.clock.sleep(left) => None,
        };
        let Some((voter, answer)) = answer else {
            return Err(Error::NoLeader);
        };
        let Ok(bytes) = answer else { continue };
        let Ok(answer) = PromiseResponse::decode(bytes) else { continue };
        let outcome = if answer.promised { Ok(answer.last.map(Position::from).unwrap_or_default()) } else { Err(answer.term) };
        step = ascension.answered(&voter, outcome);
    }
    match step {
        Step::Deposed { newer_term } => {
            tracing::info!(term, newer_term, "cluster: a voter follows a newer term");
            return Err(Error::LeaderChanged);
        }
        Step::Fetch { voter, after, through } => {
            let url = members.get(&voter).map(|member| member.peer_url.clone()).unwrap_or_default();
            fetch(shared, term, &cluster_id, &url, after, through).await?;
        }
        Step::Ready { .. } | Step::Wait => {}
    }
    let log = state.log.clone();
    let term_start = crate::env::blocking(move || {
        let mut log = log.lock().expect("member log lock");
        let start = log.last().index + 1;
        log.append_own(term, vec![Record { index: start, body: RecordBody::Term { term } }].into())?;
        Ok::<_, Error>(start)
    })
    .await?;
    tracing::info!(term, term_start, voters = members.voter_count(), "cluster: ascended; serving once the term record is committed");
    Ok(Ascended { members, term_start })
}

/// Takes `voter`'s records after `after` through `through` as a follower takes an append.
async fn fetch(shared: &Arc<Shared>, term: u64, cluster_id: &str, url: &str, after: u64, through: Position) -> Result<()> {
    let state = shared.cluster.as_ref().expect("member");
    let mut next = after + 1;
    while next <= through.index {
        let request = FetchRequest { term, from_index: next, max_bytes: APPEND_BYTES_MAX as u64, cluster_id: cluster_id.to_string() };
        let answer = state.config.peers.call(url, peer_methods::FETCH, request.encode_to_vec().into()).await;
        let answer = answer.map_err(|error| Error::StorageFailure(format!("cluster: fetching the best log: {error}")))?;
        let FetchResponse { batches } = FetchResponse::decode(answer)
            .map_err(|error| Error::InvalidArgument(format!("a fetch answer that does not decode: {error}")))?;
        if batches.is_empty() {
            return Err(Error::StorageFailure(format!("cluster: the best log has nothing from {next}")));
        }
        let log = state.log.clone();
        let me = state.config.node_id.clone();
        next = crate::env::blocking(move || {
            let mut log = log.lock().expect("member log lock");
            let prev_term = log.terms().term_at(next - 1).unwrap_or(0);
            let request = AppendRequest {
                term,
                leader_id: me,
                prev: Some(Position { index: next - 1, term: prev_term }.into()),
                batches,
                ..Default::default()
            };
            let response = log.append(&receive_append(request)?)?;
            if !response.accepted {
                return Err(Error::StorageFailure(format!("cluster: the fetched records do not follow this log at {next}")));
            }
            Ok(log.last().index + 1)
        })
        .await?;
    }
    Ok(())
}

/// Serves as the leader of `term` until the lease runs out, a newer term is seen or the
/// node closes.
async fn lead(shared: &Arc<Shared>, term: u64, ascended: Ascended) {
    let state = shared.cluster.as_ref().expect("member");
    let clock = shared.env.clock.clone();
    // The adopted log above the store (the term record included) goes into the store now;
    // it becomes visible once the term record is committed.
    // The store before that is committed history (a follower applies only what is
    // committed): kept as the base a follower behind the log may be sent.
    let (log, store, applied) = (state.log.clone(), shared.store.clone(), shared.store.applied_index());
    let adopted = crate::env::blocking(move || {
        let base = store.snapshot()?;
        let records = log.lock().expect("member log lock").records_after(applied);
        let events = store.apply_records(&records)?;
        Ok::<_, Error>((base, records, events))
    })
    .await;
    let (base, records, events) = match adopted {
        Ok(adopted) => adopted,
        Err(error) => {
            shared.fail(error);
            return;
        }
    };
    follow_records(shared, &records);
    let (lock_tx, lock_rx) = signal::channel(LockSeen::default());
    let leadership = Leadership {
        term,
        me: state.config.node_id.clone(),
        members: ascended.members.clone(),
        mode: state.config.wait_mode,
        term_start: ascended.term_start,
        heartbeat: state.config.timing.lease / HEARTBEATS_PER_LEASE,
    };
    let replicator = Arc::new(Replicator::start(
        leadership,
        state.log.clone(),
        state.config.peers.clone(),
        clock.clone(),
        lock_rx,
        Some(shared.store.clone()),
        state.snapshots_sent.clone(),
        Some(base),
    ));
    replicator.own_durable(ascended.term_start);
    *state.replicator.lock().expect("replicator lock") = Some(replicator.clone());

    let (ended_tx, ended) = signal::channel(false);
    let run = Arc::new(LeaderRun {
        term,
        log: state.log.clone(),
        replicator: replicator.clone(),
        standing: state.standing.clone(),
        ended,
        serving: state.serving.clone(),
    });
    let first = Pending {
        through: Some(ascended.term_start),
        revision: shared.store.applied_revision(),
        events: Some(events),
        replies: Vec::new(),
        ahead: None,
    };
    let (jobs_tx, jobs_rx) = mpsc::channel(shared.config.write_queue_max);
    let (sync_tx, sync_rx) = mpsc::channel(1);
    let commit = state.log.lock().expect("member log lock").commit();
    let (synced_tx, synced_rx) = signal::channel(commit);
    let ahead = Some(Arc::new(Semaphore::new(super::uploader::BATCHES_AHEAD_MAX)));
    let syncer = tokio::spawn(leader_syncer_loop(shared.clone(), run.clone(), first, sync_rx, synced_tx));
    let writer = tokio::spawn(writer_loop(shared.clone(), jobs_rx, ahead, sync_tx, synced_rx));
    *state.leading.lock().expect("leading lock") = Some(jobs_tx);
    state.role.send_replace(ClusterRole::Leader { term });
    tracing::info!(term, node = %state.config.node_id, "cluster: leading");

    let mut standing = state.standing.clone();
    let mut deposed = replicator.deposed();
    let upkeep_every = state.config.timing.lease / 3;
    let mut upkeep_at = clock.monotonic();
    let mut commit_seen = 0;
    loop {
        if clock.monotonic() >= upkeep_at {
            upkeep_at = clock.monotonic() + upkeep_every;
            keep_members(shared, &replicator, ascended.term_start, commit_seen).await;
            commit_seen = *replicator.commit().borrow();
        }
        let seen = standing.borrow_and_update().clone();
        lock_tx.send_if_modified(|lock| {
            let next =
                LockSeen { etag: seen.lock_etag.clone().unwrap_or_default(), lease_ms: state.config.timing.lease.as_millis() as u64 };
            let changed = *lock != next;
            *lock = next;
            changed
        });
        let now = clock.monotonic();
        let leads = seen.leads_at(now) == Some(term);
        // A term whose writer or commit point stopped ends too: a holder that renews its
        // lock but commits nothing would keep every other member from taking over.
        let stopped = writer.is_finished() || syncer.is_finished();
        // A leader removed from the members record leads no more (removed-stops).
        let removed = state.members.lock().expect("members lock").get(&state.config.node_id).is_none();
        let deposed_by = *deposed.borrow();
        if !leads || stopped || removed || deposed_by.is_some() || !state.running.load(Ordering::SeqCst) || shared.failed().is_some() {
            tracing::info!(term, leads, stopped, removed, deposed = ?deposed_by, failed = shared.failed().is_some(), "cluster: leadership ends");
            break;
        }
        let until_lease_end = seen.until.saturating_sub(now).max(Duration::from_millis(1));
        tokio::select! {
            biased; // see writer.rs
            _ = standing.changed() => {}
            _ = deposed.changed() => {}
            _ = clock.sleep(until_lease_end.min(Duration::from_millis(100))) => {}
        }
    }
    state.leading.lock().expect("leading lock").take();
    state.serving.store(0, Ordering::SeqCst);
    ended_tx.send_replace(true);
    let _ = writer.await;
    let _ = syncer.await;
    state.replicator.lock().expect("replicator lock").take();
}

/// The leader's care of `members`: it follows joins (new learners get the log) and promotes
/// one learner at a time once it caught up, by a conditional write of the next version while
/// its lease holds. learner-first: from the moment it decides until the write landed,
/// nothing more is committed unless the learner holds it too, so the new voter holds every
/// record committed under the old voters before it counts. `caught_up_to` is the commit index
/// at the previous call: a learner that holds it is a round trip behind at most.
async fn keep_members(shared: &Arc<Shared>, replicator: &Replicator, term_start: u64, caught_up_to: u64) {
    let state = shared.cluster.as_ref().expect("member");
    let Ok(Some((read, etag))) = read_members(state.bucket.as_ref()).await else { return };
    let known = state.members.lock().expect("members lock").clone();
    if read.version != known.version {
        *state.members.lock().expect("members lock") = read.clone();
        replicator.set_members(read.clone());
    }
    // Whether an earlier promotion's write landed or not, the record read says which voters
    // count now.
    replicator.require(None);
    if caught_up_to < term_start {
        return;
    }
    let caught_up = read.members.iter().find(|member| member.role == Role::Learner && replicator.matched(&member.name) >= caught_up_to);
    let Some(learner) = caught_up else { return };
    let Ok(next) = read.promoted(&learner.name) else { return };
    if !state.serves_linearizable(shared.env.clock.monotonic()) {
        return;
    }
    replicator.require(Some(learner.name.clone()));
    match write_members(state.bucket.as_ref(), Some((&read, &etag)), &next).await {
        Ok(Some(_)) => {
            tracing::info!(member = %learner.name, version = next.version, voters = next.voter_count(), "cluster: promoted a learner to voter");
            *state.members.lock().expect("members lock") = next.clone();
            replicator.set_members(next);
            replicator.require(None);
        }
        Ok(None) => replicator.require(None),
        // It may have landed: the learner stays required until the next read says.
        Err(error) => tracing::warn!(%error, "cluster: could not write the members record"),
    }
}

/// After a leadership: the store back to its last durable commit plus committed records,
/// the in-memory leases and auth rebuilt from it.
async fn step_down(shared: &Arc<Shared>) {
    let state = shared.cluster.as_ref().expect("member");
    let (log, store, disk) = (state.log.clone(), shared.store.clone(), shared.env.disk.clone());
    let reset = crate::env::blocking(move || {
        store.reset_to_durable(disk.as_ref(), |durable| log.lock().expect("member log lock").committed_after(durable))?;
        Ok::<_, Error>((store.leases()?, store.auth_state()?))
    })
    .await;
    match reset {
        Ok((leases, auth)) => {
            shared.lessor.reload(&leases, shared.env.clock.monotonic());
            *shared.auth.write().expect("auth lock") = Arc::new(auth);
            let revision = shared.store.applied_revision();
            let visible = shared.visible.load(Ordering::SeqCst);
            if revision < visible {
                // It acknowledged (made visible) a revision that was not committed: only a
                // broken invariant gets here. Stop rather than serve history twice.
                shared.fail(Error::Corrupt(format!(
                    "cluster: revision {visible} was visible here but the committed log ends at revision {revision}"
                )));
            } else if revision > visible {
                // Committed here though not acknowledged by this member: visible now, and
                // watchers read those revisions from the store.
                shared.commit_visible(revision, None);
            }
        }
        Err(error) => {
            shared.fail(error);
        }
    }
    state.role.send_replace(ClusterRole::Follower { leader: None });
    state.service.set_leading(false);
}

/// A follower applies what the leader says is committed, in order, and makes its store
/// durable now and then (dropping the WAL and the kept records below it).
async fn apply_commits(weak: Weak<Shared>) {
    let Some((mut commit, clock)) =
        weak.upgrade().map(|shared| (shared.cluster.as_ref().expect("member").commit.clone(), shared.env.clock.clone()))
    else {
        return;
    };
    let mut synced_at = clock.monotonic();
    let mut durable_through = 0;
    loop {
        tokio::select! {
            biased; // see writer.rs
            changed = commit.changed() => if changed.is_err() { return },
            _ = clock.sleep(FOLLOWER_STORE_SYNC) => {}
        }
        let Some(shared) = weak.upgrade() else { return };
        let state = shared.cluster.as_ref().expect("member");
        if shared.failed().is_some() || !matches!(*state.role.borrow(), ClusterRole::Follower { .. }) {
            continue;
        }
        let (log, store, applying) = (state.log.clone(), shared.store.clone(), state.applying.clone());
        let due = clock.monotonic().saturating_sub(synced_at) >= FOLLOWER_STORE_SYNC;
        let applied = crate::env::blocking(move || {
            let _applying = applying.lock().expect("applying lock");
            let records = log.lock().expect("member log lock").committed_after(store.applied_index());
            let events = store.apply_records(&records)?;
            let durable = store.applied_index();
            if due && durable > durable_through {
                store.sync_durable()?;
                let mut log = log.lock().expect("member log lock");
                log.remove_through(durable)?;
                if log.tail_bytes() > TAIL_BYTES_KEPT {
                    log.release_through(durable);
                }
            }
            Ok::<_, Error>((records, events, if due { durable } else { durable_through }))
        })
        .await;
        if due {
            synced_at = clock.monotonic();
        }
        match applied {
            Ok((records, events, durable)) => {
                durable_through = durable;
                let revision = shared.store.applied_revision();
                if revision < shared.visible.load(Ordering::SeqCst) {
                    // This member made visible a revision that was not committed (only a
                    // broken invariant gets here): it stops rather than serve history twice.
                    shared.fail(Error::Corrupt(format!(
                        "cluster: revision {} was visible here but the committed log is at {revision}",
                        shared.visible.load(Ordering::SeqCst)
                    )));
                } else if !records.is_empty() {
                    follow_records(&shared, &records);
                    shared.commit_visible(revision, Some(events));
                    state.applied.send_replace(shared.store.applied_index());
                }
            }
            Err(error) => {
                shared.fail(error);
            }
        }
    }
}

/// Where a member's data dir records the cluster it belongs to (the cluster id in hex).
const CLUSTER_ID_FILE: &str = "cluster-id";

/// The cluster this data dir belongs to (`None`: it never joined one, or the file is torn:
/// written whole and synced before the member serves, so a torn one was never relied on).
fn read_cluster_id(disk: &dyn crate::env::Disk) -> Result<Option<u64>> {
    if !disk.exists(CLUSTER_ID_FILE).map_err(|error| Error::storage("stat cluster-id", error))? {
        return Ok(None);
    }
    let file = disk.open(CLUSTER_ID_FILE, false).map_err(|error| Error::storage("open cluster-id", error))?;
    let len = file.len().map_err(|error| Error::storage("stat cluster-id", error))?;
    let mut bytes = vec![0u8; len.min(64) as usize];
    file.read_at(0, &mut bytes).map_err(|error| Error::storage("read cluster-id", error))?;
    Ok(std::str::from_utf8(&bytes).ok().and_then(|text| u64::from_str_radix(text.trim(), 16).ok()))
}

fn write_cluster_id(disk: &dyn crate::env::Disk, cluster_id: u64) -> Result<()> {
    let file = disk.open(CLUSTER_ID_FILE, true).map_err(|error| Error::storage("create cluster-id", error))?;
    file.set_len(0).map_err(|error| Error::storage("truncate cluster-id", error))?;
    file.write_at(0, format!("{}\n", cluster_id_text(cluster_id)).as_bytes()).map_err(|error| Error::storage("write cluster-id", error))?;
    file.sync_data().map_err(|error| Error::storage("sync cluster-id", error))?;
    disk.sync_dir("").map_err(|error| Error::storage("sync data dir", error))
}

/// A member as opened: its store (nothing of the local WAL applied above it yet), its
/// cluster state and its election, before the node's shared state exists.
pub(super) struct OpenedMember {
    pub store: Arc<crate::mvcc::Store>,
    pub fence: crate::env::StorageFence,
    state: ClusterState,
    election: MemberElection,
}

impl OpenedMember {
    pub fn into_state(self) -> (ClusterState, MemberElection) {
        (self.state, self.election)
    }
}

/// Opens a member: the member log over the local WAL (the records above the store stay
/// unapplied until a leader says they are committed), the `members` record joined, the
/// election and the peer service readied.
pub(super) async fn open_member(
    env: &crate::env::Env,
    config: &ClusterConfig,
    bucket: Arc<dyn ObjectStore>,
    local: super::open::Local,
    segment_bytes_max: u64,
) -> Result<OpenedMember> {
    if let Err(error) = config.timing.validate() {
        return Err(Error::InvalidArgument(format!("cluster lease timing: {error}")));
    }
    let super::open::Local { store, recovered, fence } = local;
    let applied = store.applied_index();
    if recovered.end_index > 0 && recovered.end_index <= applied {
        return Err(Error::Corrupt(format!(
            "wal ends at index {} but the store holds through {applied}: the log lost durable records",
            recovered.end_index - 1
        )));
    }
    let floor = Position { index: applied, term: store.applied_term() };
    let fresh = applied == 0
        && recovered.records.is_empty()
        && !env.disk.exists(crate::cluster::promise::PROMISE_FILE).map_err(|error| Error::storage("stat promise file", error))?;
    let disk = env.disk.clone();
    let log = crate::env::blocking(move || {
        let next = recovered.records.last().map_or(floor.index + 1, |record| record.index + 1);
        let wal = crate::wal::WalWriter::open(disk.clone(), recovered.segments, recovered.last_len, next, segment_bytes_max)?;
        MemberLog::open(disk, floor, recovered.records, wal)
    })
    .await?;
    tracing::info!(node = %config.node_id, last = ?log.last(), promised = log.promised(), store = applied, "cluster: member log open");
    // same-cluster: a data dir that served one cluster never joins another (its log and
    // store are another history), nor forms a new one on a bucket that lost its record.
    let recorded = read_cluster_id(env.disk.as_ref())?;
    if let Some(recorded) = recorded {
        let theirs = read_members(bucket.as_ref()).await?.map(|(members, _)| members.cluster_id);
        if theirs != Some(recorded) {
            let found = theirs.map_or("no members record".to_string(), |id| format!("cluster {}", cluster_id_text(id)));
            return Err(Error::InvalidArgument(format!(
                "this data dir belongs to cluster {} but the bucket holds {found}: point it at its own bucket and prefix, or empty the data dir to join as a new member",
                cluster_id_text(recorded)
            )));
        }
    }
    let members = join_cluster(config, &bucket, env.clock.wall_ms(), fresh).await?;
    if recorded.is_none() {
        write_cluster_id(env.disk.as_ref(), members.cluster_id)?;
    }
    let log = Arc::new(Mutex::new(log));
    let identity = Identity { node: config.node_id.clone(), peer_url: config.peer_url.clone(), client_url: config.client_url.clone() };
    let (standing_tx, standing) = signal::channel(Standing::default());
    let (heartbeats_tx, heartbeats) = signal::channel(None);
    let election = MemberElection {
        election: Election::leased(identity, config.timing),
        store: bucket.clone(),
        clock: env.clock.clone(),
        heartbeats,
        standing: standing_tx,
    };
    let (commit_tx, commit) = signal::channel(applied);
    let service = Arc::new(MemberService::new(members.cluster_id, log.clone(), env.clock.clone(), heartbeats_tx, commit_tx));
    let state = ClusterState {
        config: config.clone(),
        log,
        service,
        standing,
        role: signal::Sender::new(ClusterRole::Follower { leader: None }),
        members: Mutex::new(members),
        bucket,
        commit,
        leading: Mutex::new(None),
        replicator: Mutex::new(None),
        running: AtomicBool::new(true),
        gave_up: AtomicU64::new(0),
        serving: Arc::new(AtomicU64::new(0)),
        tasks: Mutex::new(Vec::new()),
        applied: signal::Sender::new(applied),
        forward_prefix: format!("{}/{:016x}", config.node_id, crate::env::nonce()),
        forwards: AtomicU64::new(0),
        snapshots_sent: Arc::default(),
        snapshots_installed: AtomicU64::new(0),
        applying: Arc::new(Mutex::new(())),
    };
    Ok(OpenedMember { store, fence, state, election })
}
