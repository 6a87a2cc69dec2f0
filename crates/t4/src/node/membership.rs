//! Membership changes a client asks for (etcd's MemberRemove; docs/clustering.md
//! "Membership"): made by the leader alone, by a conditional write of the members record's
//! next version while its lease holds; a follower passes the request to the leader.
//!
//! - **one-voter-at-a-time** — a change removes one member, so any majority of the voters
//!   before it meets any majority of the voters after it: what was committed under the old
//!   voters is held by every majority of the new ones.
//! - **count-after-landing** — the leader counts commits under the new voters only once the
//!   write landed; until then (and when its answer was lost) under the old ones, which is
//!   safe whichever record the next leader reads.
//! - **enough-started** — a change that would leave fewer voters heard within the lease
//!   than a majority of the new voters is refused (etcd's strict reconfiguration check):
//!   removing a running voter while another is down would stop the cluster.
//! - **removed-stops** — a member that finds itself gone from a newer record than the one
//!   it joined under stops serving (`node/cluster.rs` `roles`); started again, it joins
//!   anew as a learner.

use std::sync::Arc;

use prost::Message;
use t4_proto::peer::{MemberChangeRequest, MemberChangeResponse};

use super::Shared;
use crate::cluster::forward::{decode_error, encode_error};
use crate::cluster::members::{read_members, write_members, Members, Role};
use crate::cluster::service::cluster_id_text;
use crate::env::{peer_methods, PeerError};
use crate::error::{Error, Result};

/// Removes the member with etcd id `id`, through the leader; answers the members record
/// after the change.
pub(super) async fn remove(shared: &Arc<Shared>, id: u64) -> Result<Members> {
    let state = shared.cluster.as_ref().expect("member");
    if state.serves_linearizable(shared.env.clock.monotonic()) {
        return remove_as_leader(shared, id).await;
    }
    let Some(leader) = state.leader_elsewhere() else { return Err(state.not_leader()) };
    let cluster_id = cluster_id_text(state.members.lock().expect("members lock").cluster_id);
    let request = MemberChangeRequest { cluster_id, remove_id: id };
    let answer = match state.config.peers.call(&leader.peer_url, peer_methods::MEMBER_CHANGE, request.encode_to_vec().into()).await {
        Ok(answer) => MemberChangeResponse::decode(answer).map_err(|_| Error::LeaderChanged)?,
        // The leader refused before acting (another cluster, not leading): nothing changed.
        Err(PeerError::Refused(_)) => return Err(Error::NoLeader),
        // It may have acted: the outcome is unknown.
        Err(_) => return Err(Error::LeaderChanged),
    };
    answered(answer)
}

/// The leader's answer to a follower's request, as it crosses the peer port.
pub(super) async fn serve(shared: &Arc<Shared>, request: MemberChangeRequest) -> MemberChangeResponse {
    match remove_as_leader(shared, request.remove_id).await {
        Ok(members) => MemberChangeResponse { members: members.encode(), refused: 0, reason: String::new() },
        Err(error) => {
            let (code, reason) = encode_error(&error);
            MemberChangeResponse { members: Vec::new(), refused: code as u32, reason }
        }
    }
}

fn answered(answer: MemberChangeResponse) -> Result<Members> {
    if answer.refused != 0 {
        return Err(decode_error(answer.refused as i32, &answer.reason));
    }
    Members::decode(&answer.members)
}

async fn remove_as_leader(shared: &Arc<Shared>, id: u64) -> Result<Members> {
    let state = shared.cluster.as_ref().expect("member");
    let replicator = state.replicator.lock().expect("replicator lock").clone();
    let Some(replicator) = replicator.filter(|_| state.serves_linearizable(shared.env.clock.monotonic())) else {
        return Err(state.not_leader());
    };
    let (read, etag) = read_members(state.bucket.as_ref()).await.map_err(unknown)?.ok_or(Error::NoLeader)?;
    let next = read.without(id)?;
    // enough-started: the voters left that answered within the lease (this one included).
    let removed = read.members.iter().find(|member| member.id == id).expect("`without` found it");
    if removed.role == Role::Voter && !replicator.started_enough(&next, shared.env.clock.monotonic(), state.config.timing.lease) {
        return Err(Error::MemberNotEnoughStarted);
    }
    // The record may change under the lease's end: checked again just before the write.
    if !state.serves_linearizable(shared.env.clock.monotonic()) {
        return Err(state.not_leader());
    }
    match write_members(state.bucket.as_ref(), Some((&read, &etag)), &next).await.map_err(unknown)? {
        Some(_) => {
            tracing::info!(member = %removed.name, version = next.version, voters = next.voter_count(), "cluster: removed a member");
            // count-after-landing
            *state.members.lock().expect("members lock") = next.clone();
            replicator.set_members(next.clone());
            Ok(next)
        }
        // Another change landed first (a join, a promotion): the client may retry.
        None => Err(Error::LeaderChanged),
    }
}

/// The bucket did not answer: the change may or may not have landed (the leader reads the
/// record back at its next upkeep); the client is told the outcome is unknown.
fn unknown(error: Error) -> Error {
    tracing::warn!(%error, "cluster: a membership change met a bucket error");
    Error::LeaderChanged
}
