//! What a member answers on its peer port about its log: a leader's appends and snapshots
//! and a new leader's promise requests, over the member log (`member_log.rs`), for either transport
//! (`crate::env::PeerHandler`). Every request is checked before it is believed: it must name
//! this cluster, decode, and pass `wire::receive_append`. After a storage failure the
//! member answers nothing more (fail-stop: what it holds is no longer known to be durable).
//!
//! Each append taken tells the election that the leader was heard (its lock's ETag and
//! lease: the takeover wait counts from here) and publishes the commit index, which the
//! node applies up to.

use std::sync::{Arc, Mutex};

use crate::env::signal;
use bytes::Bytes;
use prost::Message;
use t4_proto::peer::{
    AppendRequest, FetchRequest, FetchResponse, ForwardRequest, ForwardResponse, MemberChangeRequest, MemberChangeResponse, PromiseRequest,
    ReadIndexRequest, ReadIndexResponse, SnapshotChunk, SnapshotResponse,
};

use super::member_log::MemberLog;
use super::wire::receive_append;
use crate::election::member::HeartbeatSeen;
use crate::env::{peer_methods, Clock, PeerHandler};
use crate::error::Error;

/// The text form of a cluster id on the wire.
pub fn cluster_id_text(cluster_id: u64) -> String {
    format!("{cluster_id:016x}")
}

/// What a member's node answers: forwarded writes and read-index questions, which it serves
/// only while it leads (`node/forwarding.rs`), and the install of a leader's snapshot once
/// its chunks are staged (`node/catch_up.rs`), which needs the node's store.
#[async_trait::async_trait]
pub trait Leads: Send + Sync {
    async fn forward(&self, request: ForwardRequest) -> ForwardResponse;
    async fn read_index(&self) -> Result<ReadIndexResponse, String>;
    async fn install_snapshot(&self, term: u64, snapshot_id: u64, manifest: Vec<u8>) -> Result<SnapshotResponse, String>;
    async fn change_members(&self, request: MemberChangeRequest) -> MemberChangeResponse;
}

pub struct MemberService {
    /// Set once the node is open.
    leads: std::sync::OnceLock<Arc<dyn Leads>>,
    cluster_id: String,
    log: Arc<Mutex<MemberLog>>,
    clock: Arc<dyn Clock>,
    heartbeats: signal::Sender<Option<HeartbeatSeen>>,
    commit: signal::Sender<u64>,
    failed: Mutex<Option<Error>>,
    /// Set while this member leads (or ascends): it takes no appends or promises of
    /// another term meanwhile, whose records would interleave with its own; the other
    /// leader retries once this one's lease ran out and it stepped down.
    leading: std::sync::atomic::AtomicBool,
    /// Why the last call was refused (for diagnostics).
    last_refusal: Mutex<Option<String>>,
}

impl MemberService {
    pub fn new(
        cluster_id: u64,
        log: Arc<Mutex<MemberLog>>,
        clock: Arc<dyn Clock>,
        heartbeats: signal::Sender<Option<HeartbeatSeen>>,
        commit: signal::Sender<u64>,
    ) -> Self {
        Self {
            leads: std::sync::OnceLock::new(),
            cluster_id: cluster_id_text(cluster_id),
            log,
            clock,
            heartbeats,
            commit,
            failed: Mutex::new(None),
            leading: std::sync::atomic::AtomicBool::new(false),
            last_refusal: Mutex::new(None),
        }
    }

    /// From now on forwards and read-index questions go to `leads`.
    pub fn serve_leads(&self, leads: Arc<dyn Leads>) {
        let _ = self.leads.set(leads);
    }

    fn leads(&self) -> Result<&Arc<dyn Leads>, String> {
        self.leads.get().ok_or_else(|| "this member is still opening".to_string())
    }

    async fn forward(&self, request: Bytes) -> Result<Bytes, String> {
        let request = ForwardRequest::decode(request).map_err(|error| format!("a forward that does not decode: {error}"))?;
        self.check_cluster(&request.cluster_id)?;
        Ok(self.leads()?.forward(request).await.encode_to_vec().into())
    }

    async fn read_index(&self, request: Bytes) -> Result<Bytes, String> {
        let request = ReadIndexRequest::decode(request).map_err(|error| format!("a read index request that does not decode: {error}"))?;
        self.check_cluster(&request.cluster_id)?;
        Ok(self.leads()?.read_index().await?.encode_to_vec().into())
    }

    async fn member_change(&self, request: Bytes) -> Result<Bytes, String> {
        let request = MemberChangeRequest::decode(request).map_err(|error| format!("a membership change that does not decode: {error}"))?;
        self.check_cluster(&request.cluster_id)?;
        Ok(self.leads()?.change_members(request).await.encode_to_vec().into())
    }

    /// This member starts (`true`) or stops leading.
    pub fn set_leading(&self, leading: bool) {
        self.leading.store(leading, std::sync::atomic::Ordering::SeqCst);
    }

    fn check_not_leading(&self) -> Result<(), String> {
        if self.leading.load(std::sync::atomic::Ordering::SeqCst) {
            return Err("this member leads its own term until its lease runs out".into());
        }
        Ok(())
    }

    /// Why this member last refused a peer's call, and whether it refuses other terms now.
    pub fn last_refusal(&self) -> Option<String> {
        let leading = self.leading.load(std::sync::atomic::Ordering::SeqCst);
        self.last_refusal.lock().expect("refusal lock").clone().map(|refusal| format!("{refusal} (leading now: {leading})"))
    }

    /// The failure that stopped this member from answering, if one did.
    pub fn failure(&self) -> Option<Error> {
        self.failed.lock().expect("failed lock").clone()
    }

    fn check_cluster(&self, theirs: &str) -> Result<(), String> {
        if theirs != self.cluster_id {
            return Err(format!("this member belongs to cluster {}, not {theirs:?}", self.cluster_id));
        }
        if let Some(failure) = self.failure() {
            return Err(format!("this member stopped: {failure}"));
        }
        Ok(())
    }

    /// Runs `work` on the log off the async workers; a storage failure stops the member.
    async fn on_log<R: Send + 'static>(&self, work: impl FnOnce(&mut MemberLog) -> crate::Result<R> + Send + 'static) -> Result<R, String> {
        let log = self.log.clone();
        let done = crate::env::blocking(move || work(&mut log.lock().expect("member log lock"))).await;
        done.map_err(|error| {
            if matches!(error, Error::StorageFailure(_) | Error::Corrupt(_)) {
                tracing::error!(%error, "cluster: this member stops answering its peers");
                self.failed.lock().expect("failed lock").get_or_insert(error.clone());
            }
            error.to_string()
        })
    }

    async fn append(&self, request: Bytes) -> Result<Bytes, String> {
        let request = AppendRequest::decode(request).map_err(|error| format!("an append that does not decode: {error}"))?;
        self.check_cluster(&request.cluster_id)?;
        let (term, leader, lock_etag, lease_ms) = (request.term, request.leader_id.clone(), request.lock_etag.clone(), request.lease_ms);
        self.check_not_leading()?;
        let received = receive_append(request).map_err(|error| error.to_string())?;
        let (response, commit) = self
            .on_log(move |log| {
                let response = log.append(&received)?;
                Ok((response, log.commit()))
            })
            .await?;
        if response.accepted {
            self.commit.send_if_modified(|current| {
                let moved = commit > *current;
                *current = (*current).max(commit);
                moved
            });
            if !lock_etag.is_empty() {
                let received = self.clock.monotonic();
                self.heartbeats.send_replace(Some(HeartbeatSeen { received, term, lock_etag, lease_ms, leader }));
            }
        }
        Ok(response.encode_to_vec().into())
    }

    async fn promise(&self, request: Bytes) -> Result<Bytes, String> {
        let request = PromiseRequest::decode(request).map_err(|error| format!("a promise request that does not decode: {error}"))?;
        self.check_cluster(&request.cluster_id)?;
        self.check_not_leading()?;
        let term = request.term;
        let response = self.on_log(move |log| log.promise(term)).await?;
        Ok(response.encode_to_vec().into())
    }

    /// A new leader fetches the records it lacks from the member with the best log.
    async fn fetch(&self, request: Bytes) -> Result<Bytes, String> {
        let request = FetchRequest::decode(request).map_err(|error| format!("a fetch request that does not decode: {error}"))?;
        self.check_cluster(&request.cluster_id)?;
        let from = request.from_index.max(1);
        let bytes_max = if request.max_bytes == 0 { super::replicator::APPEND_BYTES_MAX } else { request.max_bytes as usize };
        let response = self
            .on_log(move |log| match log.append_request(0, "", from, bytes_max)? {
                Some(append) => Ok(FetchResponse { batches: append.batches }),
                None => Err(Error::InvalidArgument(format!("records from {from} are no longer held here"))),
            })
            .await?;
        Ok(response.encode_to_vec().into())
    }
}

impl MemberService {
    /// A chunk of a leader's snapshot: staged; on the last one, installed by the node.
    async fn snapshot(&self, request: Bytes) -> Result<Bytes, String> {
        let chunk = SnapshotChunk::decode(request).map_err(|error| format!("a snapshot chunk that does not decode: {error}"))?;
        self.check_cluster(&chunk.cluster_id)?;
        self.check_not_leading()?;
        let SnapshotChunk { term, snapshot_id, seq, entries, entries_crc, done, manifest, .. } = chunk;
        let promised = self
            .on_log(move |log| {
                let promised = log.promised();
                if term >= promised {
                    log.stage_snapshot(snapshot_id, seq, &entries, entries_crc)?;
                }
                Ok(promised)
            })
            .await?;
        if term < promised {
            return Ok(SnapshotResponse { term: promised, accepted: false, durable: None }.encode_to_vec().into());
        }
        let response = match done {
            false => SnapshotResponse { term: term.max(promised), accepted: true, durable: None },
            true => self.leads()?.install_snapshot(term, snapshot_id, manifest).await?,
        };
        Ok(response.encode_to_vec().into())
    }
}

#[async_trait::async_trait]
impl PeerHandler for MemberService {
    async fn handle(&self, method: &str, request: Bytes) -> Result<Bytes, String> {
        let answer = match method {
            peer_methods::APPEND => self.append(request).await,
            peer_methods::PROMISE => self.promise(request).await,
            peer_methods::FETCH => self.fetch(request).await,
            peer_methods::FORWARD => self.forward(request).await,
            peer_methods::READ_INDEX => self.read_index(request).await,
            peer_methods::SNAPSHOT => self.snapshot(request).await,
            peer_methods::MEMBER_CHANGE => self.member_change(request).await,
            other => Err(format!("{other}: not served by this member")),
        };
        if let Err(refusal) = &answer {
            *self.last_refusal.lock().expect("refusal lock") = Some(format!("{method}: {refusal}"));
        }
        answer
    }
}
