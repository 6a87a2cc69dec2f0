//! PeerNet: how nodes reach each other (replication, write forwarding, read index).
//!
//! A call names a peer (its advertised peer URL), a method of `t4.peer.Peer` and carries
//! prost-encoded bytes both ways, so the simulator's network and production's tonic
//! transport exercise the same codec and the same handler: [`PeerNet`] is the calling side,
//! [`PeerHandler`] the answering side. The transports are `t4_server::peer` (tonic, with
//! mutual TLS and keepalives) and the simulator's twin over madsim's network.

use async_trait::async_trait;
use bytes::Bytes;

/// The methods of `t4.peer.Peer` (proto/proto/peer.proto), as they travel.
pub mod methods {
    pub const APPEND: &str = "Append";
    pub const FORWARD: &str = "Forward";
    pub const READ_INDEX: &str = "ReadIndex";
    pub const PROMISE: &str = "Promise";
    pub const FETCH: &str = "Fetch";
    pub const SNAPSHOT: &str = "Snapshot";
    pub const MEMBER_CHANGE: &str = "MemberChange";
    /// Every method, for transports that route by name.
    pub const ALL: [&str; 7] = [APPEND, FORWARD, READ_INDEX, PROMISE, FETCH, SNAPSHOT, MEMBER_CHANGE];
}

/// Why a call has no answer. `Unreachable` and `Timeout` leave the outcome unknown (the
/// peer may have acted on it); `Refused` means it answered and did nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    #[error("peer {0} unreachable")]
    Unreachable(String),
    #[error("peer call timed out")]
    Timeout,
    #[error("peer refused: {0}")]
    Refused(String),
}

#[async_trait]
pub trait PeerNet: Send + Sync + std::fmt::Debug + 'static {
    async fn call(&self, peer: &str, method: &str, request: Bytes) -> Result<Bytes, PeerError>;
}

/// What a node answers on its peer port. An `Err` reaches the caller as
/// [`PeerError::Refused`] with its message.
#[async_trait]
pub trait PeerHandler: Send + Sync + 'static {
    async fn handle(&self, method: &str, request: Bytes) -> Result<Bytes, String>;
}
