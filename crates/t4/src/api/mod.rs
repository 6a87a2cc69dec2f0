//! EtcdCore: etcd's semantics over the prost request and response types, transport-free.
//!
//! The gRPC adapter (`crates/t4-server/src/etcd/`) is a thin shell over this: it decodes, calls a method
//! here, and maps the error through one table. Everything an etcd client can observe
//! beyond the store itself lives here: response headers (cluster and member id, raft term),
//! member and status reporting, hashing.

use std::sync::Arc;
use std::time::Duration;

use t4_proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, CompactionRequest, CompactionResponse, DefragmentResponse, DeleteRangeRequest, DeleteRangeResponse,
    HashKvRequest, HashKvResponse, LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse, Member,
    MemberListResponse, MemberRemoveResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, ResponseHeader, StatusResponse,
    TxnRequest, TxnResponse,
};

use crate::auth::gate::{Caller, Credentials, Gate};
use crate::auth::permissions::Access;
use crate::error::Result;
use crate::mvcc::{WriteRequest, WriteResponse};
use crate::node::Node;

mod auth;

pub use auth::bootstrap_auth;

/// The etcd API version t4 speaks, reported by Status (with t4's own version as build
/// metadata, which semver parsers ignore).
pub const ETCD_API_VERSION: &str = "3.4.0";

/// How this member presents itself.
#[derive(Debug, Clone)]
pub struct MemberInfo {
    pub name: String,
    pub client_urls: Vec<String>,
    pub peer_urls: Vec<String>,
}

impl MemberInfo {
    /// Stable ids derived from the member's name (etcd derives them from its URLs and
    /// cluster token; any stable, distinct number serves the clients).
    pub fn member_id(&self) -> u64 {
        stable_id(&format!("t4-member/{}", self.name))
    }

    pub fn cluster_id(&self) -> u64 {
        stable_id("t4-cluster/default")
    }
}

fn stable_id(text: &str) -> u64 {
    // FNV-1a: stable across builds and platforms.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash.max(1)
}

/// The raft term reported to clients: single-node t4 has one term. Clustering replaces it
/// with the leadership term from the bucket.
const SINGLE_NODE_TERM: u64 = 1;

#[derive(Debug, Clone)]
pub struct EtcdCore {
    node: Node,
    member: MemberInfo,
    /// etcd's member and cluster ids: a cluster member's from the bucket's `members`
    /// record, a single node's derived from its name.
    member_id: u64,
    cluster_id: u64,
    gate: Arc<Gate>,
}

impl EtcdCore {
    /// Tokens from Authenticate live `token_ttl` after their last use.
    pub fn new(node: Node, member: MemberInfo, token_ttl: Duration) -> Self {
        let (member_id, cluster_id) = match node.cluster_view() {
            Some(view) => (crate::cluster::members::member_id(&view.node_id), view.members.cluster_id),
            None => (member.member_id(), member.cluster_id()),
        };
        Self { node, member, member_id, cluster_id, gate: Arc::new(Gate::new(token_ttl)) }
    }

    /// etcd's id of this member.
    pub fn member_id(&self) -> u64 {
        self.member_id
    }

    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// The raft term clients see: a cluster's leadership term, 1 on a single node.
    fn raft_term(&self) -> u64 {
        self.node.cluster_term().unwrap_or(SINGLE_NODE_TERM)
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    pub fn member(&self) -> &MemberInfo {
        &self.member
    }

    /// A header for `revision`, with this member's identity.
    pub fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader { cluster_id: self.cluster_id, member_id: self.member_id, revision, raft_term: self.raft_term() })
    }

    fn fill(&self, header: &mut Option<ResponseHeader>) {
        let revision = header.as_ref().map_or_else(|| self.node.current_revision(), |header| header.revision);
        *header = self.header(revision);
    }

    /// Who `credentials` identify, against the auth state of this moment.
    pub fn caller(&self, credentials: &Credentials) -> Result<Caller> {
        self.gate.caller(self.node.auth_state(), credentials, self.node.monotonic_now())
    }

    pub async fn range(&self, credentials: &Credentials, request: RangeRequest) -> Result<RangeResponse> {
        crate::mvcc::validate_range(&request)?;
        self.caller(credentials)?.require(Access::Read, &request.key, &request.range_end)?;
        let mut response = self.node.range(request).await?;
        self.fill(&mut response.header);
        Ok(response)
    }

    pub async fn put(&self, credentials: &Credentials, request: PutRequest) -> Result<PutResponse> {
        let write = WriteRequest::Put(request);
        self.node.validate_write(&write)?;
        let WriteRequest::Put(put) = &write else { unreachable!("a put") };
        let caller = self.caller(credentials)?;
        caller.require(Access::Write, &put.key, b"")?;
        if put.prev_kv {
            caller.require(Access::Read, &put.key, b"")?;
        }
        if put.lease != 0 {
            // Attaching a key to a lease whose keys the user may not all write would let it
            // delete them by revoking the lease (etcd's rule).
            self.require_lease_keys(&caller, Access::Write, put.lease).await?;
        }
        match self.node.write_checked(write, caller.auth_revision()).await? {
            WriteResponse::Put(mut response) => {
                self.fill(&mut response.header);
                Ok(response)
            }
            other => unreachable!("put answered with {other:?}"),
        }
    }

    pub async fn delete_range(&self, credentials: &Credentials, request: DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        let write = WriteRequest::DeleteRange(request);
        self.node.validate_write(&write)?;
        let WriteRequest::DeleteRange(delete) = &write else { unreachable!("a delete") };
        let caller = self.caller(credentials)?;
        caller.require(Access::Write, &delete.key, &delete.range_end)?;
        if delete.prev_kv {
            caller.require(Access::Read, &delete.key, &delete.range_end)?;
        }
        match self.node.write_checked(write, caller.auth_revision()).await? {
            WriteResponse::DeleteRange(mut response) => {
                self.fill(&mut response.header);
                Ok(response)
            }
            other => unreachable!("delete answered with {other:?}"),
        }
    }

    /// Only the outer header carries member identity; nested headers carry a revision, as
    /// etcd's do.
    pub async fn txn(&self, credentials: &Credentials, request: TxnRequest) -> Result<TxnResponse> {
        let write = WriteRequest::Txn(request);
        self.node.validate_write(&write)?;
        let WriteRequest::Txn(txn) = &write else { unreachable!("a txn") };
        let caller = self.caller(credentials)?;
        caller.require_txn(txn)?;
        // A put with a lease inside a txn, in either branch, is checked as a plain one is.
        let mut leases = std::collections::BTreeSet::new();
        leases_of_puts(txn, &mut leases);
        for lease in leases {
            self.require_lease_keys(&caller, Access::Write, lease).await?;
        }
        match self.node.write_checked(write, caller.auth_revision()).await? {
            WriteResponse::Txn(mut response) => {
                self.fill(&mut response.header);
                Ok(response)
            }
            other => unreachable!("txn answered with {other:?}"),
        }
    }

    /// Compaction drops every key's history: with auth on, only root may (etcd lets any
    /// user; see docs/auth.md).
    pub async fn compact(&self, credentials: &Credentials, request: CompactionRequest) -> Result<CompactionResponse> {
        let caller = self.caller(credentials)?;
        caller.require_root()?;
        let request = CompactionRequest { revision: request.revision, physical: true };
        match self.node.write_checked(WriteRequest::Compact(request), caller.auth_revision()).await? {
            WriteResponse::Compact(mut response) => {
                self.fill(&mut response.header);
                Ok(response)
            }
            other => unreachable!("compact answered with {other:?}"),
        }
    }

    pub async fn lease_grant(&self, credentials: &Credentials, request: LeaseGrantRequest) -> Result<LeaseGrantResponse> {
        self.caller(credentials)?.require_user()?;
        let mut response = self.node.lease_grant(request).await?;
        self.fill(&mut response.header);
        Ok(response)
    }

    /// Revoking deletes the lease's keys: the user must be allowed to write every one.
    pub async fn lease_revoke(&self, credentials: &Credentials, request: LeaseRevokeRequest) -> Result<LeaseRevokeResponse> {
        let caller = self.caller(credentials)?;
        caller.require_user()?;
        self.require_lease_keys(&caller, Access::Write, request.id).await?;
        match self.node.write_checked(WriteRequest::LeaseRevoke(request), caller.auth_revision()).await? {
            WriteResponse::LeaseRevoke(mut response) => {
                self.fill(&mut response.header);
                Ok(response)
            }
            other => unreachable!("lease revoke answered with {other:?}"),
        }
    }

    /// TTL 0 for a lease that does not exist, as etcd answers (not an error).
    pub async fn lease_keep_alive(&self, credentials: &Credentials, request: LeaseKeepAliveRequest) -> Result<LeaseKeepAliveResponse> {
        self.caller(credentials)?.require_user()?;
        let ttl = self.node.lease_keep_alive(request.id).await?;
        Ok(LeaseKeepAliveResponse { header: self.header(self.node.current_revision()), id: request.id, ttl })
    }

    /// TTL -1 for a lease that does not exist, as etcd answers (not an error). With keys,
    /// the user must be allowed to read every key listed.
    pub async fn lease_time_to_live(&self, credentials: &Credentials, request: LeaseTimeToLiveRequest) -> Result<LeaseTimeToLiveResponse> {
        let caller = self.caller(credentials)?;
        caller.require_user()?;
        let status = self.node.lease_time_to_live(request.id, request.keys).await?;
        let header = self.header(self.node.current_revision());
        Ok(match status {
            Some(status) => {
                for key in &status.keys {
                    caller.require(Access::Read, key, b"")?;
                }
                LeaseTimeToLiveResponse { header, id: request.id, ttl: status.remaining, granted_ttl: status.granted, keys: status.keys }
            }
            None => LeaseTimeToLiveResponse { header, id: request.id, ttl: -1, granted_ttl: 0, keys: Vec::new() },
        })
    }

    pub fn lease_leases(&self, credentials: &Credentials) -> Result<LeaseLeasesResponse> {
        self.caller(credentials)?.require_user()?;
        let leases = self.node.leases()?.into_iter().map(|id| LeaseStatus { id }).collect();
        Ok(LeaseLeasesResponse { header: self.header(self.node.current_revision()), leases })
    }

    /// `access` to every key attached to lease `id` (nothing to check without auth, for
    /// root, or for a lease that does not exist).
    async fn require_lease_keys(&self, caller: &Caller, access: Access, id: i64) -> Result<()> {
        if !caller.auth_enabled() || caller.require_root().is_ok() {
            return Ok(());
        }
        for key in self.node.lease_keys(id).await?.unwrap_or_default() {
            caller.require(access, &key, b"")?;
        }
        Ok(())
    }

    pub async fn status(&self) -> Result<StatusResponse> {
        let db_size = self.node.store_size_bytes().await? as i64;
        let index = self.node.applied_index();
        // A cluster member: the leader as it knows it (0: none known, etcd's "no leader"),
        // the commit index it knows of.
        let (leader, raft_index, is_learner) = match self.node.cluster_view() {
            Some(view) => (
                view.leader().map_or(0, crate::cluster::members::member_id),
                self.node.commit_index().unwrap_or(index).max(index),
                view.is_learner(),
            ),
            None => (self.member_id, index, false),
        };
        let mut errors = match self.node.health() {
            Ok(()) => Vec::new(),
            Err(error) => vec![error.to_string()],
        };
        if self.node.nospace_alarm() {
            // etcd lists raised alarms among the errors, in AlarmMember's text form.
            errors.push(format!("memberID:{} alarm:NOSPACE ", self.member_id));
        }
        Ok(StatusResponse {
            header: self.header(self.node.current_revision()),
            version: format!("{ETCD_API_VERSION}+t4.{}", env!("CARGO_PKG_VERSION")),
            db_size,
            leader,
            raft_index,
            raft_term: self.raft_term(),
            raft_applied_index: index,
            errors,
            db_size_in_use: db_size,
            is_learner,
        })
    }

    /// Every member: a cluster's from its `members` record (peer and client URLs as each
    /// member registered them), a single node's itself.
    pub fn member_list(&self) -> MemberListResponse {
        let members = match self.node.cluster_view() {
            Some(view) => etcd_members(&view.members),
            None => vec![Member {
                id: self.member_id,
                name: self.member.name.clone(),
                peer_ur_ls: self.member.peer_urls.clone(),
                client_ur_ls: self.member.client_urls.clone(),
                is_learner: false,
            }],
        };
        MemberListResponse { header: self.header(self.node.current_revision()), members }
    }

    /// etcd's MemberRemove: a cluster member passes it to the leader, which removes one
    /// member by a conditional write of the members record (docs/clustering.md
    /// "Membership"); the answer lists the members left. Root only with auth on (etcd's rule).
    pub async fn member_remove(&self, credentials: &Credentials, id: u64) -> Result<MemberRemoveResponse> {
        self.caller(credentials)?.require_root()?;
        if self.node.cluster_view().is_none() {
            // A single node: its one member cannot go, and there is no other.
            return Err(if id == self.member_id {
                crate::error::Error::MemberNotEnoughStarted
            } else {
                crate::error::Error::MemberNotFound
            });
        }
        let members = self.node.member_remove(id).await?;
        Ok(MemberRemoveResponse { header: self.header(self.node.current_revision()), members: etcd_members(&members) })
    }

    /// A hash of every key's history at or below `revision` (0 = current), for comparing
    /// members; not comparable with etcd's own hash. Root only with auth on (etcd's rule).
    pub async fn hash_kv(&self, credentials: &Credentials, request: HashKvRequest) -> Result<HashKvResponse> {
        self.caller(credentials)?.require_root()?;
        let (hash, revision) = self.node.hash_kv(request.revision).await?;
        Ok(HashKvResponse {
            header: self.header(self.node.current_revision()),
            hash,
            compact_revision: self.node.compact_revision().max(0),
            hash_revision: revision,
        })
    }

    /// Rewrites the store file without its free pages, so that after a compaction it
    /// shrinks (what lets a store past its quota get under it again). Root only with auth on
    /// (etcd's rule).
    pub async fn defragment(&self, credentials: &Credentials) -> Result<DefragmentResponse> {
        self.caller(credentials)?.require_root()?;
        self.node.defragment().await?;
        Ok(DefragmentResponse { header: self.header(self.node.current_revision()) })
    }

    /// etcd's alarms: NOSPACE is the one t4 raises (`--quota-backend-bytes`). GET lists the
    /// raised ones; ACTIVATE raises one, DEACTIVATE disarms it and answers what it disarmed.
    /// With auth on, only root may raise or disarm (etcd 3.4 lets anyone).
    pub fn alarm(&self, credentials: &Credentials, request: AlarmRequest) -> Result<AlarmResponse> {
        use t4_proto::etcdserverpb::alarm_request::AlarmAction;
        use t4_proto::etcdserverpb::{AlarmMember, AlarmType};
        let member_id = self.member_id;
        let nospace = || AlarmMember { member_id, alarm: AlarmType::Nospace as i32 };
        let mine = request.member_id == 0 || request.member_id == member_id;
        let alarms = match AlarmAction::try_from(request.action) {
            Ok(AlarmAction::Get) => self.node.nospace_alarm().then(nospace).into_iter().collect(),
            Ok(action) => {
                self.caller(credentials)?.require_root()?;
                let is_nospace = request.alarm == AlarmType::Nospace as i32 && mine;
                match action {
                    AlarmAction::Activate if is_nospace => {
                        self.node.set_nospace_alarm(true);
                        vec![nospace()]
                    }
                    AlarmAction::Deactivate if is_nospace => {
                        if self.node.set_nospace_alarm(false) {
                            vec![nospace()]
                        } else {
                            Vec::new()
                        }
                    }
                    _ => Vec::new(),
                }
            }
            Err(_) => return Err(crate::Error::InvalidArgument(format!("unknown alarm action {}", request.action))),
        };
        Ok(AlarmResponse { header: self.header(self.node.current_revision()), alarms })
    }
}

/// The leases the puts of `txn` attach keys to, in both branches and nested txns.
fn leases_of_puts(txn: &TxnRequest, leases: &mut std::collections::BTreeSet<i64>) {
    use t4_proto::etcdserverpb::request_op::Request;
    for op in txn.success.iter().chain(&txn.failure) {
        match &op.request {
            Some(Request::RequestPut(put)) if put.lease != 0 => {
                leases.insert(put.lease);
            }
            Some(Request::RequestTxn(nested)) => leases_of_puts(nested, leases),
            _ => {}
        }
    }
}

/// A members record as etcd lists it.
fn etcd_members(members: &crate::cluster::members::Members) -> Vec<Member> {
    members
        .members
        .iter()
        .map(|member| Member {
            id: member.id,
            name: member.name.clone(),
            peer_ur_ls: vec![member.peer_url.clone()],
            client_ur_ls: vec![member.client_url.clone()],
            is_learner: member.role == crate::cluster::members::Role::Learner,
        })
        .collect()
}
