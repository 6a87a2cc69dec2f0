//! The peer network's twin: [`PeerNet`] calls and a [`PeerHandler`] over madsim's network,
//! carrying the same prost bytes as the tonic transport (`t4_server::peer`), so the
//! nemesis can cut, delay or lose them per link (`clog_link`) and a killed node simply
//! stops answering.
//!
//! A request is `[method, 1 byte][reply tag, 8 bytes LE][body]` to the node's
//! [`PEER_PORT`]; the answer comes back under the reply tag as `[0][body]`, or `[1][why]`
//! for a refusal. No answer within the caller's timeout is [`PeerError::Timeout`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use madsim::net::Endpoint;
use t4::env::{peer_methods, PeerError, PeerHandler, PeerNet};

/// The port a member serves its peers on.
pub const PEER_PORT: u16 = 3380;
const REQUEST_TAG: u64 = 0;

/// The URL a member at `ip` advertises to its peers.
pub fn peer_url(ip: std::net::IpAddr) -> String {
    format!("http://{}", SocketAddr::new(ip, PEER_PORT))
}

/// Serves `handler` on this madsim node until the node dies.
pub async fn serve_peers(handler: Arc<dyn PeerHandler>) -> std::io::Result<()> {
    let endpoint = Arc::new(Endpoint::bind(("0.0.0.0", PEER_PORT)).await?);
    loop {
        let (payload, from) = endpoint.recv_from_raw(REQUEST_TAG).await?;
        let Ok(request) = payload.downcast::<Vec<u8>>() else { continue };
        let (handler, endpoint) = (handler.clone(), endpoint.clone());
        tokio::spawn(async move {
            let Some(method) = request.first().and_then(|index| peer_methods::ALL.get(*index as usize)) else { return };
            let Some(tag) = request.get(1..9) else { return };
            let reply_tag = u64::from_le_bytes(tag.try_into().expect("8 bytes"));
            let answer = match handler.handle(method, Bytes::copy_from_slice(&request[9..])).await {
                Ok(body) => [&[0u8][..], &body].concat(),
                Err(refusal) => [vec![1], refusal.into_bytes()].concat(),
            };
            let _ = endpoint.send_to_raw(from, reply_tag, Box::new(answer)).await;
        });
    }
}

/// A member's calling side: one endpoint, a reply tag per call.
pub struct SimPeers {
    endpoint: Endpoint,
    next_tag: AtomicU64,
    timeout: Duration,
}

impl std::fmt::Debug for SimPeers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimPeers").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl SimPeers {
    pub async fn new(timeout: Duration) -> std::io::Result<Self> {
        // Tags start at a random place: a restarted member may be given its earlier
        // incarnation's port, and answers to that incarnation's calls still in flight must
        // not meet this one's calls (replicated_3 seed 7020: a forwarded txn was told an
        // answer the leader had given a call made before the restart).
        let first_tag = madsim::rand::random::<u64>() >> 1 | 1;
        Ok(Self { endpoint: Endpoint::bind("0.0.0.0:0").await?, next_tag: AtomicU64::new(first_tag), timeout })
    }
}

#[async_trait::async_trait]
impl PeerNet for SimPeers {
    async fn call(&self, peer: &str, method: &str, request: Bytes) -> Result<Bytes, PeerError> {
        let address: SocketAddr = peer
            .strip_prefix("http://")
            .unwrap_or(peer)
            .parse()
            .map_err(|error| PeerError::Refused(format!("peer URL {peer:?}: {error}")))?;
        let index = peer_methods::ALL
            .iter()
            .position(|known| *known == method)
            .ok_or_else(|| PeerError::Refused(format!("no peer method {method:?}")))?;
        let tag = self.next_tag.fetch_add(1, Ordering::Relaxed);
        let mut bytes = Vec::with_capacity(9 + request.len());
        bytes.push(index as u8);
        bytes.extend_from_slice(&tag.to_le_bytes());
        bytes.extend_from_slice(&request);
        if let Err(error) = self.endpoint.send_to_raw(address, REQUEST_TAG, Box::new(bytes)).await {
            return Err(PeerError::Unreachable(format!("{peer}: {error}")));
        }
        let answer = match madsim::time::timeout(self.timeout, self.endpoint.recv_from_raw(tag)).await {
            Ok(Ok((payload, _))) => payload.downcast::<Vec<u8>>().map_err(|_| PeerError::Unreachable(format!("{peer}: not bytes")))?,
            Ok(Err(error)) => return Err(PeerError::Unreachable(format!("{peer}: {error}"))),
            Err(_) => return Err(PeerError::Timeout),
        };
        match answer.split_first() {
            Some((0, body)) => Ok(Bytes::copy_from_slice(body)),
            Some((_, why)) => Err(PeerError::Refused(String::from_utf8_lossy(why).into_owned())),
            None => Err(PeerError::Unreachable(format!("{peer}: empty answer"))),
        }
    }
}
