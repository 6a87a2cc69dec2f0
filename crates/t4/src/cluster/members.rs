//! The bucket's `members` object: who belongs to the cluster, and who votes
//! (docs/clustering.md "Membership").
//!
//! Bytes: magic `T4MEMB01`, format version (u32), version (u64, one more per change),
//! cluster id (u64, drawn when the cluster is formed), member count (u32), then per member
//! its id (u64), role (u8: 1 voter, 2 learner) and three strings (u32 length, at most 4096,
//! and UTF-8 bytes: node id, peer URL, client URL); then CRC32C of everything before it.
//!
//! Invariants checked before every write of `members` (in [`check_change`]):
//! - **members-next-version**: a change names exactly the version after the one it read,
//!   and keeps the cluster id;
//! - **one-voter-at-a-time**: the voters before and after differ by at most one member, so
//!   any majority of the old voters meets any majority of the new;
//! - **learner-first**: a member becomes a voter only from learner (the leader promotes it
//!   once it holds everything committed), never straight from outside the cluster — except
//!   the first voter of a new cluster.

use crate::durability::bucket::object_error;
use crate::durability::format::{open_record, put_string, seal_with_crc, FORMAT_VERSION};
use crate::durability::layout;
use crate::env::{Condition, ObjectError, ObjectStore};
use crate::error::{Error, Result};

pub(crate) const MEMBERS_MAGIC: &[u8; 8] = b"T4MEMB01";
/// Longest node id or URL a members record carries.
pub const MEMBER_STRING_BYTES_MAX: usize = 4096;
/// Most members a cluster records (voters and learners).
pub const MEMBERS_MAX: usize = 64;

const ROLE_VOTER: u8 = 1;
const ROLE_LEARNER: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Counts toward the quorum, may lead.
    Voter,
    /// Receives the log, counts for nothing, may not lead (until promoted).
    Learner,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// etcd's member id: derived from the node id, so a restarted member keeps it.
    pub id: u64,
    pub role: Role,
    /// `--node-id`.
    pub name: String,
    pub peer_url: String,
    pub client_url: String,
}

impl Member {
    pub fn new(name: impl Into<String>, role: Role, peer_url: impl Into<String>, client_url: impl Into<String>) -> Self {
        let name = name.into();
        Self { id: member_id(&name), role, name, peer_url: peer_url.into(), client_url: client_url.into() }
    }
}

/// The member id of node `name`: the first 8 bytes of its SHA-256, never 0 (etcd's ids are
/// non-zero u64s, printed in hex).
pub fn member_id(name: &str) -> u64 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(name.as_bytes());
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")).max(1)
}

/// The cluster's membership as recorded in the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Members {
    pub version: u64,
    pub cluster_id: u64,
    /// In the order they joined.
    pub members: Vec<Member>,
}

impl Members {
    /// A new cluster of one voter.
    pub fn bootstrap(cluster_id: u64, first: Member) -> Self {
        Self { version: 1, cluster_id, members: vec![Member { role: Role::Voter, ..first }] }
    }

    pub fn voters(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|member| member.role == Role::Voter)
    }

    pub fn voter_count(&self) -> usize {
        self.voters().count()
    }

    /// How many voters make a majority.
    pub fn quorum(&self) -> usize {
        self.voter_count() / 2 + 1
    }

    pub fn get(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|member| member.name == name)
    }

    pub fn is_voter(&self, name: &str) -> bool {
        self.get(name).is_some_and(|member| member.role == Role::Voter)
    }

    /// The next version with `member` added as a learner, or its URLs updated if it is
    /// already a member (a node restarted on another address keeps its role).
    pub fn with_member(&self, member: Member) -> Result<Self> {
        let mut next = self.next();
        let full = next.members.len() >= MEMBERS_MAX;
        match next.members.iter_mut().find(|known| known.name == member.name) {
            Some(known) => {
                known.peer_url = member.peer_url;
                known.client_url = member.client_url;
            }
            None if full => {
                return Err(Error::InvalidArgument(format!("etcdserver: too many members (at most {MEMBERS_MAX})")));
            }
            None => next.members.push(Member { role: Role::Learner, ..member }),
        }
        Ok(next)
    }

    /// The next version with learner `name` a voter.
    pub fn promoted(&self, name: &str) -> Result<Self> {
        let mut next = self.next();
        match next.members.iter_mut().find(|member| member.name == name) {
            Some(member) if member.role == Role::Learner => member.role = Role::Voter,
            Some(_) => return Err(Error::InvalidArgument("etcdserver: can only promote a learner member".into())),
            None => return Err(Error::InvalidArgument("etcdserver: member not found".into())),
        }
        Ok(next)
    }

    /// The next version with voter `name` a learner again (a voter that lost its disk: it
    /// holds nothing of what it acknowledged, so it must not count until it caught up). The
    /// last voter stays one.
    pub fn demoted(&self, name: &str) -> Result<Self> {
        let mut next = self.next();
        if self.voter_count() == 1 {
            return Err(Error::InvalidArgument("etcdserver: the last voting member cannot be demoted".into()));
        }
        match next.members.iter_mut().find(|member| member.name == name) {
            Some(member) if member.role == Role::Voter => member.role = Role::Learner,
            Some(_) => return Err(Error::InvalidArgument("etcdserver: the member is not a voter".into())),
            None => return Err(Error::InvalidArgument("etcdserver: member not found".into())),
        }
        Ok(next)
    }

    /// The next version without member `id`. The last voter cannot be removed.
    pub fn without(&self, id: u64) -> Result<Self> {
        let mut next = self.next();
        let Some(at) = next.members.iter().position(|member| member.id == id) else {
            return Err(Error::MemberNotFound);
        };
        if next.members[at].role == Role::Voter && self.voter_count() == 1 {
            return Err(Error::MemberNotEnoughStarted);
        }
        next.members.remove(at);
        Ok(next)
    }

    /// This record at `version` (two changes folded into one write).
    pub fn with_version(mut self, version: u64) -> Self {
        self.version = version;
        self
    }

    fn next(&self) -> Self {
        Self { version: self.version + 1, ..self.clone() }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.members.len() * 64);
        out.extend_from_slice(MEMBERS_MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.cluster_id.to_le_bytes());
        out.extend_from_slice(&(self.members.len() as u32).to_le_bytes());
        for member in &self.members {
            out.extend_from_slice(&member.id.to_le_bytes());
            out.push(match member.role {
                Role::Voter => ROLE_VOTER,
                Role::Learner => ROLE_LEARNER,
            });
            for string in [&member.name, &member.peer_url, &member.client_url] {
                put_string(&mut out, string);
            }
        }
        seal_with_crc(out)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let corrupt = |what: &str| Error::Corrupt(format!("bucket object members: {what}"));
        let (_, mut reader) = open_record(bytes, &[MEMBERS_MAGIC], 36).map_err(|what| match what.as_str() {
            "bad magic" => corrupt("not a t4 members record (bad magic)"),
            other => corrupt(other),
        })?;
        let version = reader.u64().map_err(corrupt)?;
        let cluster_id = reader.u64().map_err(corrupt)?;
        let count = reader.u32().map_err(corrupt)? as usize;
        if count == 0 || count > MEMBERS_MAX {
            return Err(corrupt(&format!("{count} members (a cluster has 1 to {MEMBERS_MAX})")));
        }
        let mut members = Vec::with_capacity(count);
        for _ in 0..count {
            let id = reader.u64().map_err(corrupt)?;
            let role = match reader.u8().map_err(corrupt)? {
                ROLE_VOTER => Role::Voter,
                ROLE_LEARNER => Role::Learner,
                other => return Err(corrupt(&format!("unknown member role {other}"))),
            };
            let name = reader.string(MEMBER_STRING_BYTES_MAX).map_err(corrupt)?;
            let peer_url = reader.string(MEMBER_STRING_BYTES_MAX).map_err(corrupt)?;
            let client_url = reader.string(MEMBER_STRING_BYTES_MAX).map_err(corrupt)?;
            members.push(Member { id, role, name, peer_url, client_url });
        }
        if !reader.done() {
            return Err(corrupt("bytes after the last member"));
        }
        let decoded = Self { version, cluster_id, members };
        if decoded.voter_count() == 0 {
            return Err(corrupt("no voting member"));
        }
        for (at, member) in decoded.members.iter().enumerate() {
            if decoded.members[..at].iter().any(|other| other.name == member.name || other.id == member.id) {
                return Err(corrupt(&format!("member {:?} appears twice", member.name)));
            }
        }
        Ok(decoded)
    }
}

/// Checks a write of `next` over `read` (none: a new cluster); the first invariant it
/// breaks, by name.
pub fn check_change(read: Option<&Members>, next: &Members) -> std::result::Result<(), String> {
    let Some(read) = read else {
        // A new cluster: one voter, version 1.
        if next.version != 1 || next.members.len() != 1 || next.voter_count() != 1 {
            return Err(format!("invariant learner-first: a new cluster of {:?} at version {}", next.members, next.version));
        }
        return Ok(());
    };
    // members-next-version
    if next.version != read.version + 1 || next.cluster_id != read.cluster_id {
        return Err(format!(
            "invariant members-next-version: version {} of cluster {:x} written over version {} of cluster {:x}",
            next.version, next.cluster_id, read.version, read.cluster_id
        ));
    }
    // one-voter-at-a-time
    let voters = |members: &Members| members.voters().map(|member| member.name.clone()).collect::<std::collections::BTreeSet<_>>();
    let (before, after) = (voters(read), voters(next));
    let changed = before.symmetric_difference(&after).count();
    if changed > 1 {
        return Err(format!("invariant one-voter-at-a-time: voters {before:?} would become {after:?}"));
    }
    // learner-first
    if let Some(added) = after.difference(&before).next() {
        if read.get(added).is_none_or(|member| member.role != Role::Learner) {
            return Err(format!("invariant learner-first: {added:?} would vote without having been a learner"));
        }
    }
    Ok(())
}

/// The members record and its ETag, if the cluster was formed.
pub async fn read_members(store: &dyn ObjectStore) -> Result<Option<(Members, String)>> {
    match store.get(layout::MEMBERS).await {
        Ok((bytes, etag)) => Ok(Some((Members::decode(&bytes)?, etag))),
        Err(ObjectError::NotFound(_)) => Ok(None),
        Err(error) => Err(object_error("read members", error)),
    }
}

/// Writes `next` over the version read (`read`, with its ETag; none: a new cluster), once
/// its invariants hold. `Ok(None)`: someone changed `members` since it was read (read it
/// again); `Ok(Some(etag))`: written.
pub async fn write_members(store: &dyn ObjectStore, read: Option<(&Members, &str)>, next: &Members) -> Result<Option<String>> {
    check_change(read.map(|(members, _)| members), next).map_err(Error::StorageFailure)?;
    let condition = match read {
        None => Condition::IfNoneMatch,
        Some((_, etag)) => Condition::IfMatch(etag.to_string()),
    };
    match store.put(layout::MEMBERS, bytes::Bytes::from(next.encode()), condition).await {
        Ok(written) => Ok(Some(written.etag)),
        Err(ObjectError::PreconditionFailed(_) | ObjectError::NotFound(_)) => Ok(None),
        Err(error) => Err(object_error("write members", error)),
    }
}

#[cfg(test)]
#[path = "members_test.rs"]
mod members_test;
