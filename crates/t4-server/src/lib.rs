//! t4's etcd v3 server: the gRPC adapter over `t4::api::EtcdCore` ([`etcd`], with the one
//! error table), HTTP/2 ping policing ([`pings`]), the metrics and probe endpoint
//! ([`metrics`]); this module wires a node and its servers from configuration: the etcd gRPC
//! API on `listen`, metrics and probes on `metrics_addr`, clean shutdown on a signal.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use crate::etcd::{Service, WatchConfig};
use crate::metrics::Metrics;
use t4::api::{EtcdCore, MemberInfo};
use t4::config::Config;
use t4::env::RealClock;
use t4::node::Node;
use t4_net::tls::TlsAcceptor;

pub mod etcd;
#[doc(hidden)]
pub mod fuzzing;
pub mod metrics;
pub mod peer;
pub mod pings;
use pings::PingPoliced;

/// HTTP/2 keepalive, with etcd's flag names and defaults.
#[derive(Debug, Clone, Copy)]
pub struct Keepalive {
    /// `--grpc-keepalive-min-time`: a client pinging more often gets GOAWAY
    /// `too_many_pings` on its third early ping, as from etcd ([`pings`]).
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

/// Default of `--max-client-connections`.
pub const DEFAULT_CONNECTIONS_MAX: usize = 4096;
/// Default of `--max-concurrent-streams` (etcd's is unbounded; a client multiplexes any
/// number of watches over one stream, so this bounds only misbehaving clients).
pub const DEFAULT_STREAMS_MAX: u32 = 4096;

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
    /// Most client connections at once (`--max-client-connections`); further ones wait in the
    /// listen backlog until one closes.
    pub connections_max: usize,
    /// Most concurrent HTTP/2 streams per connection (`--max-concurrent-streams`).
    pub streams_max: u32,
    /// Turn auth on at start (`--auth-enabled`), creating the root user with this password
    /// if it does not exist (`--root-password`).
    pub auth_enabled: bool,
    pub root_password: Option<String>,
    /// Mutual TLS between nodes (`--peer-tls-*`): the peer port accepts only peers with a
    /// certificate the CA signed (and `node.cluster`'s calls present this node's).
    pub peer_tls: Option<t4_net::tls::PeerTls>,
    /// The peer port (`--peer-listen`); a cluster member (`node.cluster`) needs one.
    pub peer_listen: Option<SocketAddr>,
    pub peer_timing: peer::PeerTiming,
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
            connections_max: DEFAULT_CONNECTIONS_MAX,
            streams_max: DEFAULT_STREAMS_MAX,
            auth_enabled: false,
            root_password: None,
            peer_tls: None,
            peer_listen: None,
            peer_timing: peer::PeerTiming::DEFAULT,
        }
    }
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Runs until `shutdown` resolves, then stops accepting, lets in-flight requests finish,
/// and closes the node (its store made durable). Every port is bound before the node opens,
/// so a port in use fails the start at once.
pub async fn run(config: ServerConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), BoxError> {
    let listener = TcpListener::bind(config.listen).await.map_err(|error| format!("listen on {}: {error}", config.listen))?;
    let metrics_listener = match config.metrics_addr {
        Some(addr) => Some(TcpListener::bind(addr).await.map_err(|error| format!("metrics on {addr}: {error}"))?),
        None => None,
    };
    let peer_listener = match config.peer_listen {
        Some(addr) => Some(TcpListener::bind(addr).await.map_err(|error| format!("peer port on {addr}: {error}"))?),
        None => None,
    };
    serve_member(config, listener, metrics_listener, peer_listener, shutdown).await
}

/// Like [`run`] on listeners the caller bound (tests bind port 0), for a single node.
pub async fn serve(
    config: ServerConfig,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BoxError> {
    serve_member(config, listener, metrics_listener, None, shutdown).await
}

/// Like [`run`] on listeners the caller bound, with the peer port of a cluster member.
///
/// A member serves its peer port from the moment its node is open until it has closed: the
/// others may need its promise or its log while it steps down.
pub async fn serve_member(
    config: ServerConfig,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    peer_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BoxError> {
    if config.node.cluster.is_some() != peer_listener.is_some() {
        return Err(if peer_listener.is_some() {
            "a peer port without cluster configuration".into()
        } else {
            "a cluster member needs a peer port (--peer-listen)".into()
        });
    }
    let metrics = Arc::new(Metrics::new(Arc::new(RealClock::new())));
    let opened = Arc::new(tokio::sync::OnceCell::new());
    let probes = metrics_listener.map(|listener| tokio::spawn(crate::metrics::http::serve(listener, metrics.clone(), opened.clone())));
    let node = Node::open(config.node.clone()).await?;
    let _ = opened.set(node.clone());
    let (peers_stop, peers_stopped) = tokio::sync::oneshot::channel::<()>();
    let peer_server = match (peer_listener, node.peer_handler()) {
        (Some(peer_listener), Some(handler)) => {
            let acceptor = config.peer_tls.as_ref().map(|tls| tls.acceptor.clone());
            let peer_addr = peer_listener.local_addr()?;
            tracing::info!(peer_listen = %peer_addr, tls = acceptor.is_some(), "t4 serving the peer port");
            let stopped = async move {
                let _ = peers_stopped.await;
            };
            Some(tokio::spawn(peer::serve_peers(peer_listener, acceptor, handler, config.peer_timing, stopped)))
        }
        _ => None,
    };
    if config.auth_enabled {
        if let Err(error) = t4::api::bootstrap_auth(&node, config.root_password.clone()).await {
            let _ = node.close().await;
            return Err(format!("--auth-enabled: {error}").into());
        }
    }
    let local = listener.local_addr()?;
    let scheme = if config.client_tls.is_some() { "https" } else { "http" };
    let client_urls =
        if config.advertise_client_urls.is_empty() { vec![format!("{scheme}://{local}")] } else { config.advertise_client_urls.clone() };
    let member = match &config.node.cluster {
        Some(cluster) => MemberInfo { name: cluster.node_id.clone(), client_urls, peer_urls: vec![cluster.peer_url.clone()] },
        None => MemberInfo { name: config.name.clone(), client_urls, peer_urls: Vec::new() },
    };
    let service = Service::new(EtcdCore::new(node.clone(), member, config.token_ttl), metrics, config.watch);
    let mut builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(config.keepalive.interval))
        .http2_keepalive_timeout(Some(config.keepalive.timeout))
        .max_concurrent_streams(Some(config.streams_max.max(1)));
    let router = service.add_to(&mut builder, config.node.request_bytes_max);
    tracing::info!(listen = %local, scheme, data_dir = %config.node.data_dir.display(), revision = node.current_revision(), "t4 serving the etcd v3 API");
    let places = Arc::new(tokio::sync::Semaphore::new(config.connections_max.max(1)));
    let served = match config.client_tls.clone() {
        None => {
            let min_time = config.keepalive.min_time;
            let handshake = move |stream, _, place| plain_handshake(stream, place, min_time);
            router.serve_with_incoming_shutdown(incoming(listener, places, handshake), shutdown).await
        }
        Some(acceptor) => {
            let min_time = config.keepalive.min_time;
            let handshake = move |stream, peer, place| {
                let acceptor = acceptor.clone();
                async move {
                    let stream = PingPoliced::new(acceptor.accept(stream).await?, min_time);
                    Ok(TlsConnection { stream, peer: Some(peer), _place: place })
                }
            };
            router.serve_with_incoming_shutdown(incoming(listener, places, handshake), shutdown).await
        }
    };
    tracing::info!("t4 shutting down: closing the node");
    let closed = node.close().await;
    let _ = peers_stop.send(());
    if let Some(peer_server) = peer_server {
        match peer_server.await {
            Ok(Err(error)) => tracing::warn!(%error, "peer port"),
            Err(error) => tracing::warn!(%error, "peer port task"),
            Ok(Ok(())) => {}
        }
    }
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
    stream: PingPoliced<tokio_rustls::server::TlsStream<TcpStream>>,
    peer: Option<SocketAddr>,
    /// Its place among `connections_max`, given back when the connection is dropped.
    _place: tokio::sync::OwnedSemaphorePermit,
}

/// A plain client connection, holding its place among `connections_max`.
pub struct PlainConnection {
    stream: PingPoliced<TcpStream>,
    _place: tokio::sync::OwnedSemaphorePermit,
}

impl tonic::transport::server::Connected for PlainConnection {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.get_ref().connect_info()
    }
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
        let common_name =
            self.stream.get_ref().get_ref().1.peer_certificates().and_then(|chain| chain.first()).and_then(|leaf| common_name(leaf));
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

/// Reads and writes of a connection type go to its `stream` field.
macro_rules! delegate_io {
    ($connection:ty) => {
        impl tokio::io::AsyncRead for $connection {
            fn poll_read(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
            }
        }

        impl tokio::io::AsyncWrite for $connection {
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
    };
}

delegate_io!(TlsConnection);
delegate_io!(PlainConnection);

/// Connections from `listener` once their handshake is done: for TLS, the TLS handshake
/// (bounded by [`t4_net::tls::HANDSHAKE_TIMEOUT`]); for plain gRPC, the HTTP/2 preface, which
/// must arrive within that time too. Each handshake runs on its own task, so a slow or
/// silent client holds up no one; a failed one is logged and dropped. Every connection,
/// handshaking or not, holds a place among `connections_max`. Accepting stops when the
/// server does.
fn incoming<C, H, F>(
    listener: TcpListener,
    places: Arc<tokio::sync::Semaphore>,
    handshake: H,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<C>>
where
    C: Send + 'static,
    H: Fn(TcpStream, SocketAddr, tokio::sync::OwnedSemaphorePermit) -> F + Send + 'static,
    F: Future<Output = std::io::Result<C>> + Send + 'static,
{
    let (connections, incoming) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (stream, peer, place) = tokio::select! {
                accepted = t4_net::listen::accept_placed(&listener, &places, "t4") => accepted,
                () = connections.closed() => return,
            };
            let (shaking, connections) = (handshake(stream, peer, place), connections.clone());
            tokio::spawn(async move {
                match shaking.await {
                    Ok(connection) => {
                        let _ = connections.send(Ok(connection)).await;
                    }
                    Err(error) => tracing::debug!(%peer, %error, "client handshake failed"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(incoming)
}

/// A plain gRPC connection once the client's HTTP/2 preface has arrived (peeked, not read).
async fn plain_handshake(
    stream: TcpStream,
    place: tokio::sync::OwnedSemaphorePermit,
    ping_min_time: Duration,
) -> std::io::Result<PlainConnection> {
    const PREFACE_BYTES: usize = 24;
    let waited = tokio::time::timeout(t4_net::tls::HANDSHAKE_TIMEOUT, async {
        let mut buffer = [0u8; PREFACE_BYTES];
        loop {
            match stream.peek(&mut buffer).await? {
                0 => return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)),
                PREFACE_BYTES => return Ok(()),
                // Part of it: wait a little for the rest (peek returns at once).
                _ => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    })
    .await;
    match waited {
        Ok(Ok(())) => Ok(PlainConnection { stream: PingPoliced::new(stream, ping_min_time), _place: place }),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no HTTP/2 preface in time")),
    }
}
