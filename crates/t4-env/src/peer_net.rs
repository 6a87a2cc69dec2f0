//! PeerNet: how nodes reach each other (replication, write forwarding, read index).
//!
//! A call carries a method name and prost-encoded bytes both ways, so the simulator's
//! network and production's tonic transport exercise the same codec. Clustering is not
//! built yet (README): this trait is the seam it will plug into, and no implementation
//! ships today.

use async_trait::async_trait;
use bytes::Bytes;

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
