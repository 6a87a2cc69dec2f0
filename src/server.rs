//! Wires a node and its servers from configuration: the etcd gRPC API on `listen`, metrics
//! and probes on `metrics_addr`, clean shutdown on a signal.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::TcpIncoming;

use crate::config::Config;
use crate::core::{EtcdCore, MemberInfo};
use crate::env::RealClock;
use crate::etcd::{Service, WatchConfig};
use crate::metrics::Metrics;
use crate::node::Node;
use crate::tls::TlsAcceptor;

/// HTTP/2 keepalive, with etcd's flag names and defaults.
#[derive(Debug, Clone, Copy)]
pub struct Keepalive {
    /// `--grpc-keepalive-min-time`: accepted for compatibility; tonic has no ping
    /// enforcement policy, so it is not applied (docs/compatibility.md).
    pub min_time: Duration,
    /// `--grpc-keepalive-interval`: how often the server pings an idle connection.
    pub interval: Duration,
    /// `--grpc-keepalive-timeout`: how long it waits for the ping's answer.
    pub timeout: Duration,
}

impl Default for Keepalive {
    fn default() -> Self {
        Self { min_time: Duration::from_secs(5), interval: Duration::from_secs(2 * 60 * 60), timeout: Duration::from_secs(20) }
    }
}

/// etcd's default simple-token TTL.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub node: Config,
    pub listen: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub name: String,
    /// Client URLs reported by MemberList (defaults to `http://<listen>`).
    pub advertise_client_urls: Vec<String>,
    pub keepalive: Keepalive,
    pub watch: WatchConfig,
    /// TLS on the client port (`--client-tls-cert/--client-tls-key`); with
    /// `--client-tls-ca`, clients must present a certificate that CA signed (mTLS).
    pub client_tls: Option<TlsAcceptor>,
    /// How long an auth token lives after its last use (`--token-ttl`).
    pub token_ttl: Duration,
    /// Turn auth on at start (`--auth-enabled`), creating the root user with this password
    /// if it does not exist (`--root-password`).
    pub auth_enabled: bool,
    pub root_password: Option<String>,
    /// Mutual TLS between nodes (`--peer-tls-*`), loaded and checked at start; no peer port
    /// uses it until clustering.
    pub peer_tls: Option<crate::tls::PeerTls>,
}

impl ServerConfig {
    pub fn new(node: Config, listen: SocketAddr) -> Self {
        Self {
            node,
            listen,
            metrics_addr: None,
            name: "default".into(),
            advertise_client_urls: Vec::new(),
            keepalive: Keepalive::default(),
            watch: WatchConfig::default(),
            client_tls: None,
            token_ttl: DEFAULT_TOKEN_TTL,
            auth_enabled: false,
            root_password: None,
            peer_tls: None,
        }
    }
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Runs until `shutdown` resolves, then stops accepting, lets in-flight requests finish,
/// and closes the node (its store made durable).
pub async fn run(config: ServerConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), BoxError> {
    let listener = TcpListener::bind(config.listen).await.map_err(|error| format!("listen on {}: {error}", config.listen))?;
    let metrics_listener = match config.metrics_addr {
        Some(addr) => Some(TcpListener::bind(addr).await.map_err(|error| format!("metrics on {addr}: {error}"))?),
        None => None,
    };
    serve(config, listener, metrics_listener, shutdown).await
}

/// Like [`run`] on listeners the caller bound (tests bind port 0).
pub async fn serve(
    config: ServerConfig,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BoxError> {
    let metrics = Arc::new(Metrics::new(Arc::new(RealClock::new())));
    let opened = Arc::new(tokio::sync::OnceCell::new());
    let probes = metrics_listener.map(|listener| tokio::spawn(crate::metrics::http::serve(listener, metrics.clone(), opened.clone())));
    let node = Node::open(config.node.clone()).await?;
    let _ = opened.set(node.clone());
    if config.auth_enabled {
        if let Err(error) = crate::core::bootstrap_auth(&node, config.root_password.clone()).await {
            let _ = node.close().await;
            return Err(format!("--auth-enabled: {error}").into());
        }
    }
    let local = listener.local_addr()?;
    let scheme = if config.client_tls.is_some() { "https" } else { "http" };
    let client_urls =
        if config.advertise_client_urls.is_empty() { vec![format!("{scheme}://{local}")] } else { config.advertise_client_urls.clone() };
    let member = MemberInfo { name: config.name.clone(), client_urls, peer_urls: Vec::new() };
    let service = Service::new(EtcdCore::new(node.clone(), member, config.token_ttl), metrics, config.watch);
    let mut builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(config.keepalive.interval))
        .http2_keepalive_timeout(Some(config.keepalive.timeout));
    let router = service.add_to(&mut builder, config.node.request_bytes_max);
    tracing::info!(listen = %local, scheme, data_dir = %config.node.data_dir.display(), revision = node.current_revision(), "t4 serving the etcd v3 API");
    let served = match config.client_tls.clone() {
        // Without TCP_NODELAY, a response split over two segments waits out the client's
        // delayed ACK (~40 ms) on every small request.
        None => router.serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), shutdown).await,
        Some(acceptor) => router.serve_with_incoming_shutdown(tls_incoming(listener, acceptor), shutdown).await,
    };
    tracing::info!("t4 shutting down: closing the node");
    let closed = node.close().await;
    // The probe server holds a handle on the node; the data directory stays locked until
    // every handle is gone.
    if let Some(probes) = probes {
        probes.abort();
        let _ = probes.await;
    }
    served?;
    closed?;
    Ok(())
}

/// A client connection that finished its TLS handshake.
pub struct TlsConnection {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    peer: Option<SocketAddr>,
}

/// What the server knows of a TLS client: its address and, with mTLS, the common name of
/// its certificate (etcd's user name when auth is on).
#[derive(Debug, Clone)]
pub struct TlsConnectInfo {
    pub remote_addr: Option<SocketAddr>,
    pub common_name: Option<String>,
}

impl tonic::transport::server::Connected for TlsConnection {
    type ConnectInfo = TlsConnectInfo;

    fn connect_info(&self) -> TlsConnectInfo {
        let common_name = self.stream.get_ref().1.peer_certificates().and_then(|chain| chain.first()).and_then(|leaf| common_name(leaf));
        TlsConnectInfo { remote_addr: self.peer, common_name }
    }
}

/// The subject's common name of a DER X.509 certificate, if it has one.
pub fn common_name(certificate: &[u8]) -> Option<String> {
    // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serial,
    // signature, issuer, validity, subject, ... }, ... }
    let (_, certificate, _) = der(certificate)?;
    let (_, mut tbs, _) = der(certificate)?;
    let (tag, _, rest) = der(tbs)?;
    if tag == 0xa0 {
        tbs = rest; // the explicit version
    }
    for _ in 0..4 {
        tbs = der(tbs)?.2; // serial, signature, issuer, validity
    }
    let (_, mut subject, _) = der(tbs)?;
    // Name ::= SEQUENCE OF SET OF SEQUENCE { type OID, value }
    while !subject.is_empty() {
        let (_, set, rest) = der(subject)?;
        subject = rest;
        let (_, attribute, _) = der(set)?;
        let (_, oid, value) = der(attribute)?;
        if oid == [0x55, 0x04, 0x03] {
            let (_, name, _) = der(value)?;
            return String::from_utf8(name.to_vec()).ok();
        }
    }
    None
}

/// One DER element at the start of `bytes`: (tag, contents, what follows).
fn der(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = bytes.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let count = (first & 0x7f) as usize;
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        (rest[..count].iter().fold(0usize, |len, byte| (len << 8) | *byte as usize), &rest[count..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

impl tokio::io::AsyncRead for TlsConnection {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Connections from `listener` once their TLS handshake is done. Each handshake runs on its
/// own task (bounded by [`crate::tls::HANDSHAKE_TIMEOUT`]), so a slow or silent client holds
/// up no one; a failed one is logged and dropped. Accepting stops when the server does.
fn tls_incoming(listener: TcpListener, acceptor: TlsAcceptor) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<TlsConnection>> {
    let (connections, incoming) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = connections.closed() => return,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let (acceptor, connections) = (acceptor.clone(), connections.clone());
            tokio::spawn(async move {
                match acceptor.accept(stream).await {
                    Ok(stream) => {
                        let _ = connections.send(Ok(TlsConnection { stream, peer: Some(peer) })).await;
                    }
                    Err(error) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(incoming)
}
