//! A TCP proxy a test owns, for faults on a link: forwarding, or a black hole that reads
//! and drops every byte both ways while keeping both sockets open (a half-open link: no
//! FIN, no reset, nothing arrives). It counts connections its clients closed, so a test
//! can see keepalives notice a dead link.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct Proxy {
    pub addr: SocketAddr,
    blackhole: Arc<AtomicBool>,
    client_closes: Arc<AtomicUsize>,
    accepting: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards each connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let blackhole = Arc::new(AtomicBool::new(false));
        let client_closes = Arc::new(AtomicUsize::new(0));
        let (hole, closes) = (blackhole.clone(), client_closes.clone());
        let accepting = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else { continue };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                let (hole_up, hole_down, closes) = (hole.clone(), hole.clone(), closes.clone());
                tokio::spawn(async move {
                    pump(client_read, server_write, hole_up).await;
                    closes.fetch_add(1, Ordering::SeqCst);
                });
                tokio::spawn(pump(server_read, client_write, hole_down));
            }
        });
        Self { addr, blackhole, client_closes, accepting }
    }

    /// Drops every byte from now on (`true`), or forwards again (`false`).
    pub fn blackhole(&self, on: bool) {
        self.blackhole.store(on, Ordering::SeqCst);
    }

    /// Connections whose client side has closed (or failed) so far.
    pub fn client_closes(&self) -> usize {
        self.client_closes.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// Copies until the source ends; while the hole is open, reads and drops.
async fn pump(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, blackhole: Arc<AtomicBool>) {
    let mut buffer = vec![0u8; 64 << 10];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if !blackhole.load(Ordering::SeqCst) && to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
