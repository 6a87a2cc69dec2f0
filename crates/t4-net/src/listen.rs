//! Accepting client connections under a cap: the etcd port, the metrics port and s4 all
//! take a place among their connections before they accept, and wait out a failed accept
//! (out of file descriptors, most often) instead of ending.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Longest pause after a failed accept before the next attempt.
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The next connection, once one of `places` is free (past the cap, new connections wait in
/// the listen backlog); the place is held until the returned permit is dropped. TCP_NODELAY
/// is set: without it a response split over two segments waits out the client's delayed
/// ACK (~40 ms) on every small request. `what` names the port in the warning.
pub async fn accept_placed(listener: &TcpListener, places: &Arc<Semaphore>, what: &str) -> (TcpStream, SocketAddr, OwnedSemaphorePermit) {
    let place = places.clone().acquire_owned().await.expect("the semaphore is never closed");
    let mut failures: u32 = 0;
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                return (stream, peer, place);
            }
            Err(error) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(100) {
                    tracing::warn!(%error, failures, "{what}: accept failed; waiting for connections to close");
                }
                tokio::time::sleep(Duration::from_millis(10).saturating_mul(failures).min(ACCEPT_BACKOFF_MAX)).await;
            }
        }
    }
}
