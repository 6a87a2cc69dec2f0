//! A follower's writes and linearizable reads, served through the leader
//! (docs/clustering.md "Forwarding", "Reads").
//!
//! - **forward-once** — a follower hands a client write to the leader with an id of its
//!   own (`<node id>/<nonce of its open>/<count>`); the leader's ledger (`cluster/ledger.rs`)
//!   applies an id once: a retry while the first runs waits for it, a retry after it gets
//!   the first answer. The follower retries only a call whose answer was lost, only to the
//!   same leader, and only once; then the outcome is unknown and the client is told so
//!   ("leader changed").
//! - **read-index-in-lease** — a linearizable read on a follower asks the leader for its
//!   commit index; the leader answers only while it serves linearizable reads itself (in
//!   its lease, its term record committed), and the follower serves the read once it has
//!   applied through that index. Every write acknowledged before the read was sent was
//!   committed at or below it.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use t4_proto::etcdserverpb::{LeaseKeepAliveRequest, LeaseKeepAliveResponse};
use t4_proto::peer::{
    ForwardRequest, ForwardResponse, MemberChangeRequest, MemberChangeResponse, ReadIndexRequest, ReadIndexResponse, SnapshotResponse,
};
use tokio::sync::oneshot;

use super::cluster::{ClusterState, LeaderSeen};
use super::writer::Job;
use super::Shared;
use crate::cluster::forward::{decode_error, decode_request, decode_response, encode_error, encode_request, encode_response};
use crate::cluster::ledger::{Admit, Ledger};
use crate::cluster::service::{cluster_id_text, Leads};
use crate::env::{peer_methods, PeerError};
use crate::error::{Error, Result};
use crate::mvcc::{WriteRequest, WriteResponse};

/// Forwarded answers the leader remembers: enough for every retry within a call deadline
/// at tens of thousands of writes a second.
const LEDGER_ENTRIES_MAX: usize = 65_536;
const LEDGER_BYTES_MAX: usize = 32 << 20;
/// How often a retried forward looks whether its first attempt finished.
const RUNNING_POLL: Duration = Duration::from_millis(5);
/// The forwarded method of a lease keepalive.
const KEEP_ALIVE: &str = "LeaseKeepAlive";
/// A lost forward is retried once, after this pause.
const RETRY_AFTER: Duration = Duration::from_millis(50);

/// The leader's side: forwards and read-index questions from the followers.
pub(super) struct LeaderSide {
    shared: Weak<Shared>,
    ledger: Mutex<Ledger>,
}

impl LeaderSide {
    pub fn new(shared: Weak<Shared>) -> Self {
        Self { shared, ledger: Mutex::new(Ledger::new(LEDGER_ENTRIES_MAX, LEDGER_BYTES_MAX)) }
    }

    fn refused(error: &Error) -> ForwardResponse {
        let (error_code, error_message) = encode_error(error);
        ForwardResponse { response: Vec::new(), error_code, error_message }
    }

    /// Applies a forward admitted as new; `None` when it never reached the writer.
    async fn apply(state: &ClusterState, request: WriteRequest, auth_revision: Option<u64>) -> Option<Result<WriteResponse>> {
        let writer = state.leading.lock().expect("leading lock").clone()?;
        let (reply, answer) = oneshot::channel();
        writer.send(Job { request, auth_revision, reply }).await.ok()?;
        Some(answer.await.unwrap_or(Err(Error::LeaderChanged)))
    }
}

#[async_trait::async_trait]
impl Leads for LeaderSide {
    async fn forward(&self, request: ForwardRequest) -> ForwardResponse {
        let Some(shared) = self.shared.upgrade() else { return Self::refused(&Error::NoLeader) };
        let state = shared.cluster.as_ref().expect("member");
        if request.method == KEEP_ALIVE {
            // Idempotent: no ledger.
            let Ok(keep_alive) = LeaseKeepAliveRequest::decode(request.request.as_slice()) else {
                return Self::refused(&Error::InvalidArgument("a forwarded keepalive that does not decode".into()));
            };
            if !state.serves_linearizable(shared.env.clock.monotonic()) {
                return Self::refused(&state.not_leader());
            }
            let ttl = shared.lessor.keep_alive(keep_alive.id, shared.env.clock.monotonic()).unwrap_or(0);
            let answer = LeaseKeepAliveResponse { header: None, id: keep_alive.id, ttl };
            return ForwardResponse { response: answer.encode_to_vec(), error_code: 0, error_message: String::new() };
        }
        let write = match decode_request(&request.method, &request.request) {
            Ok(write) => write,
            Err(error) => return Self::refused(&Error::InvalidArgument(error)),
        };
        // The ledger's key names the request's bytes too: an id that came back with another
        // request (a follower that repeated an earlier open's ids) is a new request, never
        // answered with the first one's outcome.
        let digest = crc32c::crc32c_append(crc32c::crc32c(request.method.as_bytes()), &request.request);
        let id = format!("{}#{digest:08x}", request.request_id);
        let waited_until = shared.env.clock.monotonic() + state.config.timing.lease;
        loop {
            let admitted = self.ledger.lock().expect("ledger lock").admit(&id);
            match admitted {
                Admit::New => break,
                Admit::Done(answer) => {
                    tracing::debug!(%id, "cluster: a forward answered from the ledger");
                    return ForwardResponse::decode(answer.as_slice()).unwrap_or_else(|_| Self::refused(&Error::LeaderChanged));
                }
                Admit::Running if shared.env.clock.monotonic() < waited_until => shared.env.clock.sleep(RUNNING_POLL).await,
                Admit::Running => return Self::refused(&Error::LeaderChanged),
            }
        }
        let auth_revision = request.auth_checked.then_some(request.auth_revision);
        match Self::apply(state, write, auth_revision).await {
            // It never reached the writer: nothing of it was logged, a retry may apply it.
            None => {
                self.ledger.lock().expect("ledger lock").abandon(&id);
                Self::refused(&state.not_leader())
            }
            Some(answer) => {
                let response = match answer {
                    Ok(response) => ForwardResponse { response: encode_response(&response), error_code: 0, error_message: String::new() },
                    Err(error) => Self::refused(&error),
                };
                self.ledger.lock().expect("ledger lock").finish(&id, response.encode_to_vec());
                response
            }
        }
    }

    async fn install_snapshot(&self, term: u64, snapshot_id: u64, manifest: Vec<u8>) -> std::result::Result<SnapshotResponse, String> {
        let shared = self.shared.upgrade().ok_or_else(|| "this member closed".to_string())?;
        super::catch_up::install(&shared, term, snapshot_id, &manifest).await.map_err(|error| {
            tracing::warn!(%error, "cluster: could not install the leader's snapshot");
            if matches!(error, Error::StorageFailure(_) | Error::Corrupt(_)) {
                shared.fail(error.clone());
            }
            error.to_string()
        })
    }

    async fn change_members(&self, request: MemberChangeRequest) -> MemberChangeResponse {
        let Some(shared) = self.shared.upgrade() else {
            let (code, reason) = encode_error(&Error::NoLeader);
            return MemberChangeResponse { members: Vec::new(), refused: code as u32, reason };
        };
        super::membership::serve(&shared, request).await
    }

    async fn read_index(&self) -> std::result::Result<ReadIndexResponse, String> {
        let shared = self.shared.upgrade().ok_or_else(|| "this member closed".to_string())?;
        let state = shared.cluster.as_ref().expect("member");
        // The commit index is read after the lease check: both hold at this instant.
        if !state.serves_linearizable(shared.env.clock.monotonic()) {
            return Err("not the leader in its lease".into());
        }
        let commit_index = state.log.lock().expect("member log lock").commit();
        Ok(ReadIndexResponse { term: state.serving.load(Ordering::SeqCst), commit_index })
    }
}

/// A follower's write, applied by `leader`; the answer is the leader's.
pub(super) async fn forward(
    shared: &Arc<Shared>,
    leader: &LeaderSeen,
    request: &WriteRequest,
    auth_revision: Option<u64>,
) -> Result<WriteResponse> {
    let (method, bytes) = encode_request(request);
    let answer = call_leader(shared, leader, method, bytes, auth_revision).await?;
    decode_response(method, &answer).map_err(|error| {
        tracing::warn!(%error, "cluster: a forwarded write's answer does not decode");
        Error::LeaderChanged
    })
}

/// A follower's lease keepalive, served by the leader: the lease's TTL (0: no such lease).
pub(super) async fn keep_alive(shared: &Arc<Shared>, id: i64) -> Result<i64> {
    let state = shared.cluster.as_ref().expect("member");
    let Some(leader) = state.leader_elsewhere() else { return Err(state.not_leader()) };
    let request = LeaseKeepAliveRequest { id }.encode_to_vec();
    let answer = call_leader(shared, &leader, KEEP_ALIVE, request, None).await?;
    Ok(LeaseKeepAliveResponse::decode(answer.as_slice()).map_err(|_| Error::NoLeader)?.ttl)
}

/// Forwards one request to `leader`: the leader's answer bytes, or the error it gave.
async fn call_leader(
    shared: &Arc<Shared>,
    leader: &LeaderSeen,
    method: &str,
    bytes: Vec<u8>,
    auth_revision: Option<u64>,
) -> Result<Vec<u8>> {
    let state = shared.cluster.as_ref().expect("member");
    let forward = ForwardRequest {
        method: method.to_string(),
        request: bytes,
        auth_checked: auth_revision.is_some(),
        auth_revision: auth_revision.unwrap_or(0),
        request_id: format!("{}/{}", state.forward_prefix, state.forwards.fetch_add(1, Ordering::SeqCst)),
        cluster_id: cluster_id_text(state.members.lock().expect("members lock").cluster_id),
    };
    let message: Bytes = forward.encode_to_vec().into();
    let mut attempts = 0;
    let answer = loop {
        attempts += 1;
        match state.config.peers.call(&leader.peer_url, peer_methods::FORWARD, message.clone()).await {
            Ok(answer) => break answer,
            // It answered and did nothing (another cluster, still opening, ...) — but after a
            // lost attempt, the one that answers may be a new incarnation of the leader that
            // never heard of the first, which may have been applied: unknown.
            Err(PeerError::Refused(why)) => {
                tracing::debug!(leader = %leader.node_id, %why, attempts, "cluster: forward refused");
                return Err(if attempts == 1 { Error::NoLeader } else { Error::LeaderChanged });
            }
            // Lost: perhaps applied. The same id to the same leader is applied once.
            Err(_) if attempts == 1 => shared.env.clock.sleep(RETRY_AFTER).await,
            Err(_) => return Err(Error::LeaderChanged),
        }
    };
    let answer = ForwardResponse::decode(answer).map_err(|_| Error::LeaderChanged)?;
    if answer.error_code != 0 {
        let error = decode_error(answer.error_code, &answer.error_message);
        // "Not the leader" to a retry: the first attempt's fate is unknown (robustness #54).
        if attempts > 1 && matches!(error, Error::NoLeader | Error::NotLeader { .. }) {
            return Err(Error::LeaderChanged);
        }
        return Err(error);
    }
    Ok(answer.response)
}

/// Waits until this follower may serve a linearizable read: the leader's commit index,
/// asked now, applied here. Fails with the error the client would get from a follower
/// that cannot (no leader known, the leader out of its lease, too slow).
pub(super) async fn read_index(shared: &Arc<Shared>) -> Result<()> {
    let state = shared.cluster.as_ref().expect("member");
    let Some(leader) = state.leader_elsewhere() else { return Err(state.not_leader()) };
    let request = ReadIndexRequest { cluster_id: cluster_id_text(state.members.lock().expect("members lock").cluster_id) };
    let answer = match state.config.peers.call(&leader.peer_url, peer_methods::READ_INDEX, request.encode_to_vec().into()).await {
        Ok(answer) => ReadIndexResponse::decode(answer).map_err(|_| Error::NoLeader)?,
        Err(PeerError::Refused(_)) => return Err(Error::NoLeader),
        Err(_) => return Err(Error::NoLeader),
    };
    let mut applied = state.applied.subscribe();
    tokio::select! {
        biased; // see writer.rs
        caught_up = applied.wait_for(|index| *index >= answer.commit_index) => caught_up.map(|_| ()).map_err(|_| Error::NoLeader),
        () = shared.env.clock.sleep(state.config.timing.lease) => Err(Error::NoLeader),
    }
}
