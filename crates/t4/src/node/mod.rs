//! Node: the embedded API (`t4::Node`), one store with etcd's semantics.
//!
//! ```no_run
//! # async fn demo() -> t4::Result<()> {
//! let node = t4::Node::open(t4::Config::new("/var/lib/myapp/t4")).await?;
//! let revision = node.put("/config/timeout", "30s").await?;
//! let kv = node.get("/config/timeout").await?.expect("just written");
//! assert_eq!(kv.mod_revision, revision);
//! node.close().await?;
//! # Ok(()) }
//! ```
//!
//! Writes go through one writer task and a syncer task (see `pipeline.rs` for the map): a write is
//! acknowledged only after its WAL batch is fsynced. Reads see the *visible* revision: the
//! newest one whose batch is durable, never one that a crash could take back.

mod catch_up;
mod checkpointer;
mod cluster;
mod commit;
mod counters;
mod forwarding;
mod leading;
mod lessor;
mod lock_watch;
mod membership;
mod open;
mod pipeline;
mod syncer;
mod uploader;
mod writer;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use t4_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, LeaseGrantRequest, LeaseGrantResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use t4_proto::mvccpb::KeyValue;
use tokio::sync::{mpsc, oneshot};

use crate::auth::state::{AuthChange, AuthState};
use crate::config::Config;
use crate::durability::BucketDurability;
use crate::env::{Env, StorageFence};
use crate::error::{ClosedReason, Error, Result};
use crate::mvcc::{self, Limits, Store, WriteRequest, WriteResponse};
use crate::object::metered::MeteredStore;
use crate::object::{RetryPolicy, RetryingStore};
use crate::watch::{WatchHub, WatchOptions, WatchStream};

pub use cluster::{ClusterRole, ClusterView, LeaderSeen};

/// A cluster member's numbers, for metrics ([`Node::cluster_gauges`]).
#[derive(Debug, Clone, Default)]
pub struct ClusterGauges {
    /// 0 follower, 1 ascending, 2 leader.
    pub role: u8,
    pub term: u64,
    pub leads_now: bool,
    pub commit_index: u64,
    /// The last record in this member's log.
    pub last_index: u64,
    pub applied_index: u64,
    pub voters: u64,
    pub learners: u64,
    /// Writes this member forwarded to a leader.
    pub forwards: u64,
    /// Snapshots sent as a leader (that went through) and installed as a follower.
    pub snapshots_sent: u64,
    pub snapshots_installed: u64,
    /// While it leads: what each member was last heard to hold.
    pub matched: std::collections::BTreeMap<String, u64>,
}
pub use counters::NodeStats;

/// An open t4 node. Cheap to clone; every clone is the same node.
#[derive(Clone)]
pub struct Node {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("revision", &self.current_revision()).finish_non_exhaustive()
    }
}

struct Shared {
    config: Config,
    env: Env,
    store: Arc<Store>,
    hub: Arc<WatchHub>,
    /// The newest revision whose WAL batch is durable: what reads see.
    visible: AtomicI64,
    fence: StorageFence,
    failure: Mutex<Option<Error>>,
    /// etcd's NOSPACE alarm: raised when the store would pass its quota, cleared only by
    /// disarming it. Kept in memory; an open whose store is already past the quota raises it.
    nospace: std::sync::atomic::AtomicBool,
    /// Turns true (once) when `failure` is set: health reporters wait on it.
    failed: crate::env::signal::Sender<bool>,
    jobs: Mutex<Option<mpsc::Sender<writer::Job>>>,
    stopped: Mutex<Option<oneshot::Receiver<Result<()>>>>,
    stats: counters::Counters,
    /// The term this node writes its bucket log under (`None`: local disk only).
    term: Option<u64>,
    /// Requests to the bucket, per operation.
    object_meters: Arc<crate::object::metered::StoreMeters>,
    /// Checkpoints in the bucket, and the task that takes them when due (stopped before the
    /// store closes).
    checkpoints: Mutex<Option<(checkpointer::Checkpoints, tokio::task::JoinHandle<()>)>>,
    /// When each lease expires (which leases exist is in the store).
    lessor: lessor::Lessor,
    /// The task that revokes expired leases (stopped before the store closes).
    expiry: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Users, roles and whether auth is on, as of the last auth change applied.
    auth: std::sync::RwLock<Arc<AuthState>>,
    /// A cluster member's half (`None`: a single node).
    cluster: Option<cluster::ClusterState>,
}

/// How a node came up: alone (with or without a bucket), or as a cluster member.
#[allow(clippy::large_enum_variant, reason = "one value, for a moment, at open")]
enum Started {
    Single(open::Opened),
    Member(cluster::OpenedMember),
}

/// What [`Node::lease_time_to_live`] reports of a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseStatus {
    /// Whole seconds left (rounded down).
    pub remaining: i64,
    /// The TTL it was granted.
    pub granted: i64,
    /// The keys attached to it, in key order (when asked for).
    pub keys: Vec<Vec<u8>>,
}

/// How often the node looks for expired leases.
const LEASE_EXPIRY_POLL: Duration = Duration::from_millis(250);
/// Expired leases revoked at once (their revokes share group commits).
const LEASE_REVOKES_IN_FLIGHT: usize = 64;

impl Node {
    /// Opens the node in `config.data_dir` on the real clock and disk.
    pub async fn open(config: Config) -> Result<Self> {
        let env = Env::real(config.data_dir.clone());
        Self::open_with_env(config, env).await
    }

    /// Opens the node on the given seams (the simulator's, or a test's).
    pub async fn open_with_env(config: Config, env: Env) -> Result<Self> {
        if config.cluster.is_some() && config.bucket.is_none() {
            return Err(Error::InvalidArgument("a cluster member needs a bucket (the lock and the members record live there)".into()));
        }
        let disk = env.disk.clone();
        let segment_bytes_max = config.wal_segment_bytes_max;
        let mut local = crate::env::blocking(move || open::open_local(&disk)).await?;
        let disk = env.disk.clone();
        let object_meters = Arc::new(crate::object::metered::StoreMeters::default());
        let started = match (&config.bucket, &config.cluster) {
            (None, _) => Started::Single(crate::env::blocking(move || open::finish_local(disk, local, segment_bytes_max)).await?),
            (Some(durability), cluster) => {
                // Ambiguous outcomes must be settled by reading back, never by a blind retry
                // of a create (that would look like a seal): always through the retry layer.
                // A few quick retries for blips; an outage is waited out by the upload loop
                // (which logs and counts it), not hidden in here.
                let policy = RetryPolicy { attempts: 4, first_backoff: Duration::from_millis(50), max_backoff: Duration::from_secs(1) };
                let metered: Arc<dyn crate::env::ObjectStore> =
                    Arc::new(MeteredStore::new(durability.store.clone(), env.clock.clone(), object_meters.clone()));
                let retrying: Arc<dyn crate::env::ObjectStore> = Arc::new(RetryingStore::new(metered, env.clock.clone(), policy));
                match cluster {
                    Some(cluster) => Started::Member(cluster::open_member(&env, cluster, retrying, local, segment_bytes_max).await?),
                    None => {
                        let durability = BucketDurability { store: retrying, ..durability.clone() };
                        let records = std::mem::take(&mut local.recovered.records);
                        let recovery = crate::durability::recover(&durability, &env.disk, &env.clock, &local.store, records).await?;
                        Started::Single(
                            crate::env::blocking(move || open::finish_from_bucket(disk, local, recovery, segment_bytes_max)).await?,
                        )
                    }
                }
            }
        };
        let (store, fence) = match &started {
            Started::Single(opened) => (opened.store.clone(), opened.fence.clone()),
            Started::Member(member) => (member.store.clone(), member.fence.clone()),
        };
        store.set_response_bytes_max(config.response_bytes_max);
        let over_quota = config.quota_backend_bytes.is_some_and(|quota| store.size_bytes() > quota);
        if over_quota {
            tracing::warn!(size = store.size_bytes(), "t4: alarm NOSPACE raised at open: the store is past --quota-backend-bytes");
        }
        let (leases, auth) = {
            let store = store.clone();
            crate::env::blocking(move || Ok::<_, Error>((store.leases()?, store.auth_state()?))).await?
        };
        let lessor = lessor::Lessor::load(&leases, env.clock.monotonic());
        let term = match &started {
            Started::Single(opened) => opened.log.as_ref().map(|log| log.term),
            Started::Member(_) => None,
        };
        let visible = store.applied_revision();
        let hub = Arc::new(WatchHub::new(visible, config.watch_events_buffered_max, config.watch_bytes_buffered_max));
        let (jobs_tx, jobs_rx) = mpsc::channel(config.write_queue_max);
        let (stopped_tx, stopped_rx) = oneshot::channel();
        let (started, cluster_state) = match started {
            Started::Member(member) => {
                let (state, election) = member.into_state();
                (None, Some((state, election)))
            }
            single => (Some(single), None),
        };
        let (cluster, election) = match cluster_state {
            Some((state, election)) => (Some(state), Some(election)),
            None => (None, None),
        };
        let shared = Arc::new(Shared {
            config,
            env,
            store,
            hub,
            visible: AtomicI64::new(visible),
            fence,
            failure: Mutex::new(None),
            failed: crate::env::signal::Sender::new(false),
            nospace: std::sync::atomic::AtomicBool::new(over_quota),
            jobs: Mutex::new(Some(jobs_tx)),
            stopped: Mutex::new(Some(stopped_rx)),
            stats: counters::Counters::default(),
            term,
            checkpoints: Mutex::new(None),
            object_meters,
            lessor,
            expiry: Mutex::new(None),
            auth: std::sync::RwLock::new(Arc::new(auth)),
            cluster,
        });
        match (started, election) {
            (Some(Started::Single(open::Opened { wal, log, election, .. })), _) => {
                if let (Some(log), Some(election)) = (&log, election) {
                    lock_watch::spawn_lock_watch(&shared, log, election);
                }
                pipeline::start(shared.clone(), wal, log, jobs_rx, stopped_tx);
            }
            (_, Some(election)) => cluster::start(&shared, election, jobs_rx, stopped_tx),
            _ => unreachable!("a node is single or a member"),
        }
        let expiry = tokio::spawn(expire_leases(Arc::downgrade(&shared)));
        *shared.expiry.lock().expect("expiry lock") = Some(expiry);
        tracing::info!(revision = visible, term, leases = leases.len(), "t4 node open");
        Ok(Self { shared })
    }

    /// The newest revision reads see (every write at or below it is durable).
    pub fn current_revision(&self) -> i64 {
        self.shared.visible.load(Ordering::SeqCst)
    }

    /// The revision below which history has been compacted (-1: never compacted).
    pub fn compact_revision(&self) -> i64 {
        self.shared.store.compact_revision()
    }

    /// Writes `value` at `key`; returns the revision of the write.
    pub async fn put(&self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Result<i64> {
        let request = PutRequest { key: key.into(), value: value.into(), ..Default::default() };
        Ok(header_revision(&self.put_request(request).await?.header))
    }

    /// The live key-value at `key`, if any.
    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<Option<KeyValue>> {
        let response = self.range(RangeRequest { key: key.into(), ..Default::default() }).await?;
        Ok(response.kvs.into_iter().next())
    }

    /// Deletes `key`; returns whether it existed.
    pub async fn delete(&self, key: impl Into<Vec<u8>>) -> Result<bool> {
        let response = self.delete_range(DeleteRangeRequest { key: key.into(), ..Default::default() }).await?;
        Ok(response.deleted > 0)
    }

    /// etcd's Range (every field of RangeRequest is honoured).
    pub async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
        mvcc::validate_range(&request)?;
        // A node that failed (or was fenced by a newer term) serves no reads either: its
        // data may be stale.
        if let Some(failure) = self.shared.failure.lock().expect("failure lock").clone() {
            return Err(failure);
        }
        if prost::Message::encoded_len(&request) > self.shared.config.request_bytes_max {
            return Err(Error::RequestTooLarge);
        }
        // A linearizable read in a cluster is served by the leader while its lease holds,
        // by a follower once it applied through the leader's commit index
        // (read-index-in-lease, node/forwarding.rs).
        if let Some(cluster) = &self.shared.cluster {
            let serializable = request.serializable || cluster.config.reads == crate::config::ReadConsistency::Serializable;
            if !serializable && !cluster.serves_linearizable(self.shared.env.clock.monotonic()) {
                forwarding::read_index(&self.shared).await?;
            }
        }
        let shared = self.shared.clone();
        crate::env::blocking(move || {
            let visible = shared.visible.load(Ordering::SeqCst);
            shared.store.range(&request, visible)
        })
        .await
    }

    /// Removes the member with etcd id `id` from the cluster (etcd's MemberRemove), through
    /// the leader (node/membership.rs); answers the members record after the change.
    /// A single node has no other member: [`Error::InvalidArgument`].
    pub async fn member_remove(&self, id: u64) -> Result<crate::cluster::members::Members> {
        if self.shared.cluster.is_none() {
            return Err(Error::InvalidArgument("a single node has no members to remove".into()));
        }
        membership::remove(&self.shared, id).await
    }

    /// A cluster member's role now (`None`: a single node).
    pub fn cluster_role(&self) -> Option<ClusterRole> {
        self.shared.cluster.as_ref().map(|cluster| cluster.role.borrow().clone())
    }

    /// The cluster as this member sees it: the members record it last read or wrote, and its
    /// role (`None`: a single node).
    pub fn cluster_view(&self) -> Option<ClusterView> {
        let cluster = self.shared.cluster.as_ref()?;
        let members = cluster.members.lock().expect("members lock").clone();
        let role = cluster.role.borrow().clone();
        Some(ClusterView { node_id: cluster.config.node_id.clone(), members, role })
    }

    /// The term a cluster member last knew of (`None`: a single node); cheaper than the view.
    pub fn cluster_term(&self) -> Option<u64> {
        let cluster = self.shared.cluster.as_ref()?;
        let term = match &*cluster.role.borrow() {
            ClusterRole::Leader { term } | ClusterRole::Ascending { term } => *term,
            ClusterRole::Follower { leader } => leader.as_ref().map_or(0, |leader| leader.term),
        };
        Some(term)
    }

    /// A cluster member's role as it changes (`None`: a single node).
    pub fn cluster_roles(&self) -> Option<crate::env::signal::Receiver<ClusterRole>> {
        self.shared.cluster.as_ref().map(|cluster| cluster.role.subscribe())
    }

    /// What a cluster member answers on its peer port (serve it with the transport:
    /// `t4_server::peer` or the simulator's twin). `None`: a single node.
    pub fn peer_handler(&self) -> Option<Arc<dyn crate::env::PeerHandler>> {
        self.shared.cluster.as_ref().map(|cluster| cluster.service.clone() as Arc<dyn crate::env::PeerHandler>)
    }

    /// While this member leads: what each member was last heard to hold (diagnostics,
    /// follower lag).
    pub fn replication(&self) -> Option<std::collections::BTreeMap<String, u64>> {
        let cluster = self.shared.cluster.as_ref()?;
        let replicator = cluster.replicator.lock().expect("replicator lock").clone()?;
        Some(replicator.durable())
    }

    /// Why a cluster member last refused a peer's call (diagnostics).
    pub fn last_peer_refusal(&self) -> Option<String> {
        self.shared.cluster.as_ref().and_then(|cluster| cluster.service.last_refusal())
    }

    /// Whether this node may acknowledge writes and serve linearizable reads itself at this
    /// instant: a single node that serves, or a cluster member that leads in its lease with
    /// its term record committed (`/healthz/leader`).
    pub fn leads_now(&self) -> bool {
        if self.health().is_err() {
            return false;
        }
        match &self.shared.cluster {
            Some(cluster) => cluster.serves_linearizable(self.shared.env.clock.monotonic()),
            None => true,
        }
    }

    /// A cluster member's numbers for metrics (`None`: a single node).
    pub fn cluster_gauges(&self) -> Option<ClusterGauges> {
        let cluster = self.shared.cluster.as_ref()?;
        let view = self.cluster_view()?;
        let (commit_index, last_index) = {
            let log = cluster.log.lock().expect("member log lock");
            (log.commit(), log.last().index)
        };
        Some(ClusterGauges {
            role: match view.role {
                ClusterRole::Follower { .. } => 0,
                ClusterRole::Ascending { .. } => 1,
                ClusterRole::Leader { .. } => 2,
            },
            term: view.term(),
            leads_now: self.leads_now(),
            commit_index,
            last_index,
            applied_index: self.shared.store.applied_index(),
            voters: view.members.voter_count() as u64,
            learners: (view.members.members.len() - view.members.voter_count()) as u64,
            forwards: cluster.forwards.load(Ordering::Relaxed),
            snapshots_sent: cluster.snapshots_sent.load(Ordering::Relaxed),
            snapshots_installed: cluster.snapshots_installed.load(Ordering::Relaxed),
            matched: self.replication().unwrap_or_default(),
        })
    }

    /// The commit index of a cluster member's log (the leader's, or the last it sent here).
    pub fn commit_index(&self) -> Option<u64> {
        self.shared.cluster.as_ref().map(|cluster| cluster.log.lock().expect("member log lock").commit())
    }

    pub async fn put_request(&self, request: PutRequest) -> Result<PutResponse> {
        match self.write(WriteRequest::Put(request)).await? {
            WriteResponse::Put(response) => Ok(response),
            other => unreachable!("put answered with {other:?}"),
        }
    }

    pub async fn delete_range(&self, request: DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        match self.write(WriteRequest::DeleteRange(request)).await? {
            WriteResponse::DeleteRange(response) => Ok(response),
            other => unreachable!("delete answered with {other:?}"),
        }
    }

    pub async fn txn(&self, request: TxnRequest) -> Result<TxnResponse> {
        match self.write(WriteRequest::Txn(request)).await? {
            WriteResponse::Txn(response) => Ok(response),
            other => unreachable!("txn answered with {other:?}"),
        }
    }

    /// Compacts history below `revision` (spends no revision).
    pub async fn compact(&self, revision: i64) -> Result<CompactionResponse> {
        match self.write(WriteRequest::Compact(CompactionRequest { revision, physical: true })).await? {
            WriteResponse::Compact(response) => Ok(response),
            other => unreachable!("compact answered with {other:?}"),
        }
    }

    /// Grants a lease of `request.ttl` seconds (at least [`mvcc::LEASE_TTL_MIN`]) with the
    /// id asked for, or a new one for id 0. Spends no revision.
    pub async fn lease_grant(&self, request: LeaseGrantRequest) -> Result<LeaseGrantResponse> {
        match self.write(WriteRequest::LeaseGrant(request)).await? {
            WriteResponse::LeaseGrant(response) => Ok(response),
            other => unreachable!("lease grant answered with {other:?}"),
        }
    }

    /// Revokes a lease: its keys are deleted at one revision (none spent without keys).
    pub async fn lease_revoke(&self, id: i64) -> Result<LeaseRevokeResponse> {
        match self.write(WriteRequest::LeaseRevoke(LeaseRevokeRequest { id })).await? {
            WriteResponse::LeaseRevoke(response) => Ok(response),
            other => unreachable!("lease revoke answered with {other:?}"),
        }
    }

    /// Renews a lease for its whole TTL; returns that TTL, or 0 if the lease does not
    /// exist (or has expired), as etcd's keepalive answers. Writes nothing.
    pub async fn lease_keep_alive(&self, id: i64) -> Result<i64> {
        self.check_open()?;
        // Leases expire by the leader's decision only: a follower hands keepalives to the
        // leader (node/forwarding.rs).
        if let Some(cluster) = &self.shared.cluster {
            if !cluster.serves_linearizable(self.shared.env.clock.monotonic()) {
                return forwarding::keep_alive(&self.shared, id).await;
            }
        }
        Ok(self.keep_alive_here(id))
    }

    /// A keepalive this node serves itself (a single node, or the leader in its lease).
    fn keep_alive_here(&self, id: i64) -> i64 {
        self.shared.lessor.keep_alive(id, self.shared.env.clock.monotonic()).unwrap_or(0)
    }

    /// A lease's time left and granted TTL, with its keys if `keys`; `None` if it does not
    /// exist.
    pub async fn lease_time_to_live(&self, id: i64, keys: bool) -> Result<Option<LeaseStatus>> {
        self.check_open()?;
        let Some((granted, remaining)) = self.shared.lessor.remaining(id, self.shared.env.clock.monotonic()) else { return Ok(None) };
        let attached = if keys {
            let store = self.shared.store.clone();
            match crate::env::blocking(move || store.lease_keys(id)).await? {
                Some(attached) => attached,
                None => return Ok(None),
            }
        } else {
            Vec::new()
        };
        Ok(Some(LeaseStatus { remaining, granted, keys: attached }))
    }

    /// The keys attached to lease `id`, in key order (`None` if there is no such lease).
    pub async fn lease_keys(&self, id: i64) -> Result<Option<Vec<Vec<u8>>>> {
        self.check_open()?;
        let store = self.shared.store.clone();
        crate::env::blocking(move || store.lease_keys(id)).await
    }

    /// The node clock's monotonic reading (what lease and token lifetimes count on).
    pub fn monotonic_now(&self) -> Duration {
        self.shared.env.clock.monotonic()
    }

    /// How many leases exist.
    pub fn lease_count(&self) -> usize {
        self.shared.lessor.len()
    }

    /// The ids of every lease, ascending.
    pub fn leases(&self) -> Result<Vec<i64>> {
        self.check_open()?;
        Ok(self.shared.lessor.ids())
    }

    /// Changes users, roles or whether auth is on (etcd's rules; see
    /// [`AuthState::apply`]). Passwords in the change are hashes ([`crate::auth::password`]).
    pub async fn auth_change(&self, change: AuthChange) -> Result<mvcc::AuthApplied> {
        match self.write(WriteRequest::Auth(change)).await? {
            WriteResponse::Auth(response) => Ok(response),
            other => unreachable!("auth change answered with {other:?}"),
        }
    }

    /// The auth state as of the last auth change applied.
    pub fn auth_state(&self) -> Arc<AuthState> {
        self.shared.auth.read().expect("auth lock").clone()
    }

    /// Any write, refused with etcd's "revision of auth store is old" if the auth rules it
    /// was checked under (`auth_revision`: the auth revision, or
    /// [`crate::auth::gate::AUTH_OFF`]) changed before it is applied.
    pub async fn write_checked(&self, request: WriteRequest, auth_revision: Option<u64>) -> Result<WriteResponse> {
        self.write_with(request, auth_revision).await
    }

    /// Watches a key span from `options.start_revision` (0 = from now on).
    pub fn watch(&self, options: WatchOptions) -> Result<WatchStream> {
        self.check_open()?;
        WatchStream::new(self.shared.hub.clone(), self.shared.store.clone(), options)
    }

    /// The last WAL record the store has applied (reported as etcd's raft index).
    pub fn applied_index(&self) -> u64 {
        self.shared.store.applied_index()
    }

    /// Watchers open on this node.
    pub fn watcher_count(&self) -> usize {
        self.shared.hub.watcher_count()
    }

    /// A CRC32C over every stored change at or below `revision` (0 = current), and the
    /// revision it covers. Equal stores give equal hashes.
    pub async fn hash_kv(&self, revision: i64) -> Result<(u32, i64)> {
        let visible = self.current_revision();
        let revision = if revision <= 0 { visible } else { revision };
        if revision > visible {
            return Err(Error::FutureRevision);
        }
        let store = self.shared.store.clone();
        let hash = crate::env::blocking(move || store.hash_through(revision)).await?;
        Ok((hash, revision))
    }

    /// Ok while the node serves; the failure that stopped it otherwise (a health check).
    pub fn health(&self) -> Result<()> {
        match self.shared.failure.lock().expect("failure lock").clone() {
            Some(failure) => Err(failure),
            None => Ok(()),
        }
    }

    /// etcd's space quota. A write that takes space (a put, a txn with a put, a lease grant)
    /// and would take the store past `quota_backend_bytes` raises the NOSPACE alarm; while
    /// it is raised, puts, lease grants and every txn that is not read-only are refused with
    /// etcd's `mvcc: database space exceeded`, and deletes, compaction, revokes and reads go
    /// on (so an operator can compact, defragment and disarm, as with etcd).
    fn check_space(&self, request: &WriteRequest) -> Result<()> {
        let (takes_space, refused_under_alarm) = match request {
            WriteRequest::Put(_) | WriteRequest::LeaseGrant(_) => (true, true),
            WriteRequest::Txn(txn) => (txn_puts(txn), !txn_read_only(txn)),
            _ => (false, false),
        };
        if refused_under_alarm && self.shared.nospace.load(Ordering::SeqCst) {
            return Err(Error::NoSpace);
        }
        let Some(quota) = self.shared.config.quota_backend_bytes else { return Ok(()) };
        if takes_space && self.shared.store.size_bytes() + request.encoded_len() as u64 > quota {
            self.raise_nospace(quota);
            return Err(Error::NoSpace);
        }
        Ok(())
    }

    fn raise_nospace(&self, quota: u64) {
        if !self.shared.nospace.swap(true, Ordering::SeqCst) {
            tracing::warn!(
                quota,
                size = self.shared.store.size_bytes(),
                "t4: alarm NOSPACE raised: the store reached --quota-backend-bytes"
            );
        }
    }

    /// Whether the NOSPACE alarm is raised.
    pub fn nospace_alarm(&self) -> bool {
        self.shared.nospace.load(Ordering::SeqCst)
    }

    /// Raises (`true`) or disarms (`false`) the NOSPACE alarm, as etcd's Alarm RPC does;
    /// returns whether it was raised before.
    pub fn set_nospace_alarm(&self, raised: bool) -> bool {
        let before = self.shared.nospace.swap(raised, Ordering::SeqCst);
        if before && !raised {
            tracing::info!("t4: alarm NOSPACE disarmed");
        }
        before
    }

    /// Rewrites the store file without its free pages (etcd's Defragment): after a
    /// compaction it shrinks to what the live data needs. Reads and writes wait meanwhile.
    pub async fn defragment(&self) -> Result<()> {
        self.check_open()?;
        let store = self.shared.store.clone();
        crate::env::blocking(move || store.defragment()).await
    }

    /// Resolves once the node has stopped serving: a storage failure, a fence, a writer that
    /// died (then [`Node::health`] says which), or every handle on the node dropped. Holds no
    /// handle on the node itself.
    pub fn stopped_serving(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut failed = self.shared.failed.subscribe();
        async move {
            let _ = failed.wait_for(|failed| *failed).await;
        }
    }

    /// The term this node writes its log under in the bucket (`None`: local disk only).
    pub fn term(&self) -> Option<u64> {
        self.shared.term
    }

    /// Counters for metrics and benchmarks.
    pub fn stats(&self) -> NodeStats {
        self.shared.stats.snapshot()
    }

    /// Bytes the store file occupies. Reads the file's length: it never waits for the
    /// writer (a redb write transaction would).
    pub async fn store_size_bytes(&self) -> Result<u64> {
        let disk = self.shared.env.disk.clone();
        crate::env::blocking(move || {
            let file = disk.open(crate::mvcc::STORE_FILE, false).map_err(|error| Error::storage("open store", error))?;
            file.len().map_err(|error| Error::storage("stat store", error))
        })
        .await
    }

    /// Requests to the bucket so far, per operation ([`crate::object::metered::OPERATIONS`]);
    /// `None` on local disk only.
    pub fn object_store_totals(&self) -> Option<[crate::object::metered::OperationTotals; crate::object::metered::OPERATIONS.len()]> {
        self.shared.config.bucket.as_ref().map(|_| self.shared.object_meters.snapshot())
    }

    /// Takes a checkpoint now (with a bucket): everything applied so far, once it is all in
    /// the bucket's log; then collects garbage. Writes go on meanwhile.
    pub async fn checkpoint(&self) -> Result<crate::durability::checkpoint::CheckpointReport> {
        self.check_open()?;
        let checkpoints = self.shared.checkpoints.lock().expect("checkpoints lock").as_ref().map(|(checkpoints, _)| checkpoints.clone());
        let checkpoints = checkpoints.ok_or_else(|| Error::InvalidArgument("checkpoints need a bucket (an object store)".into()))?;
        checkpointer::take_checkpoint(&self.shared, &checkpoints).await
    }

    /// Stops accepting writes, lets queued ones finish, makes the store durable and drops
    /// WAL segments it no longer needs, then closes the store and unlocks the data dir. Every
    /// clone of this node is closed.
    pub async fn close(&self) -> Result<()> {
        self.shared.jobs.lock().expect("jobs lock").take();
        let stopped = self.shared.stopped.lock().expect("stopped lock").take();
        let outcome = match stopped {
            Some(stopped) => stopped.await.unwrap_or(Err(Error::Closed(ClosedReason::Stopped))),
            None => Ok(()),
        };
        // Tasks may still hold the node for a moment (a lock check, a watch stream): the
        // store is closed and the data dir unlocked here, not whenever the last one lets go,
        // so the caller can reopen the dir at once.
        let expiry = self.shared.expiry.lock().expect("expiry lock").take();
        if let Some(task) = expiry {
            task.abort();
            let _ = task.await;
        }
        if self.shared.cluster.is_some() {
            cluster::stop(&self.shared).await;
        }
        let checkpoints = self.shared.checkpoints.lock().expect("checkpoints lock").take();
        if let Some((checkpoints, task)) = checkpoints {
            task.abort();
            let _ = task.await;
            // A checkpoint asked for through the API finishes first.
            let _ = checkpoints.running.lock().await;
        }
        let store = self.shared.store.clone();
        crate::env::blocking(move || store.close()).await;
        outcome
    }

    fn check_open(&self) -> Result<()> {
        if let Some(failure) = self.shared.failure.lock().expect("failure lock").clone() {
            return Err(failure);
        }
        if self.shared.jobs.lock().expect("jobs lock").is_none() {
            return Err(Error::Closed(ClosedReason::Closed));
        }
        Ok(())
    }

    /// The checks a write gets before anything else (etcd's order: a malformed request is
    /// refused before its permissions are looked at).
    pub fn validate_write(&self, request: &WriteRequest) -> Result<()> {
        let limits = Limits { request_bytes_max: self.shared.config.request_bytes_max, txn_ops_max: self.shared.config.txn_ops_max };
        mvcc::validate_write(request, limits)
    }

    /// Validates, queues for the writer and waits for the durable answer.
    async fn write(&self, request: WriteRequest) -> Result<WriteResponse> {
        self.write_with(request, None).await
    }

    async fn write_with(&self, request: WriteRequest, auth_revision: Option<u64>) -> Result<WriteResponse> {
        self.validate_write(&request)?;
        self.check_open()?;
        self.check_space(&request)?;
        let sender = self.shared.jobs.lock().expect("jobs lock").clone().ok_or(Error::Closed(ClosedReason::Closed))?;
        let (reply, answer) = oneshot::channel();
        sender.send(writer::Job { request, auth_revision, reply }).await.map_err(|_| Error::Closed(ClosedReason::Stopped))?;
        answer.await.unwrap_or(Err(Error::Closed(ClosedReason::Stopped)))
    }
}

/// Whether a txn puts anything, in either branch or a nested txn.
fn txn_puts(txn: &t4_proto::etcdserverpb::TxnRequest) -> bool {
    use t4_proto::etcdserverpb::request_op::Request;
    txn.success.iter().chain(&txn.failure).any(|op| match &op.request {
        Some(Request::RequestPut(_)) => true,
        Some(Request::RequestTxn(nested)) => txn_puts(nested),
        _ => false,
    })
}

/// Whether a txn only reads, as etcd's `isTxnReadonly` decides: every op of both branches
/// is a range (a nested txn, even one that only reads, is not).
fn txn_read_only(txn: &t4_proto::etcdserverpb::TxnRequest) -> bool {
    use t4_proto::etcdserverpb::request_op::Request;
    txn.success.iter().chain(&txn.failure).all(|op| matches!(op.request, Some(Request::RequestRange(_))))
}

/// Revokes leases whose time is up, through the write path like any revoke (a single node
/// is its own leader; clustering will run this on the leader only).
async fn expire_leases(shared: std::sync::Weak<Shared>) {
    let Some(clock) = shared.upgrade().map(|shared| shared.env.clock.clone()) else { return };
    loop {
        clock.sleep(LEASE_EXPIRY_POLL).await;
        let Some(shared) = shared.upgrade() else { return };
        // In a cluster only the leader, while its lease holds, revokes expired leases.
        if shared.cluster.as_ref().is_some_and(|cluster| !cluster.serves_linearizable(clock.monotonic())) {
            continue;
        }
        let node = Node { shared };
        let expired = node.shared.lessor.expired(clock.monotonic());
        for ids in expired.chunks(LEASE_REVOKES_IN_FLIGHT) {
            let outcomes = futures::future::join_all(ids.iter().map(|&id| node.lease_revoke(id))).await;
            for (id, outcome) in ids.iter().zip(outcomes) {
                match outcome {
                    Ok(_) => {
                        node.shared.stats.leases_expired.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(lease = id, "lease expired and revoked");
                    }
                    // The store has no such lease: the copy drops it too (they follow one log,
                    // so this only undoes a difference that should not exist).
                    Err(Error::LeaseNotFound) => node.shared.lessor.revoked(*id),
                    Err(error) => {
                        tracing::debug!(%error, lease = id, "lease expiry stops: the node is closing or failed");
                        return;
                    }
                }
            }
        }
    }
}

fn header_revision(header: &Option<t4_proto::etcdserverpb::ResponseHeader>) -> i64 {
    header.as_ref().map_or(0, |header| header.revision)
}
