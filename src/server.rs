//! Wires a node and its servers from configuration: the etcd gRPC API on `listen`, metrics
//! and probes on `metrics_addr`, clean shutdown on a signal.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

use crate::config::Config;
use crate::core::{EtcdCore, MemberInfo};
use crate::env::RealClock;
use crate::etcd::{Service, WatchConfig};
use crate::metrics::Metrics;
use crate::node::Node;

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
    let local = listener.local_addr()?;
    let client_urls =
        if config.advertise_client_urls.is_empty() { vec![format!("http://{local}")] } else { config.advertise_client_urls.clone() };
    let member = MemberInfo { name: config.name.clone(), client_urls, peer_urls: Vec::new() };
    let service = Service::new(EtcdCore::new(node.clone(), member), metrics, config.watch);
    let mut builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(config.keepalive.interval))
        .http2_keepalive_timeout(Some(config.keepalive.timeout));
    let router = service.add_to(&mut builder, config.node.request_bytes_max);
    tracing::info!(listen = %local, data_dir = %config.node.data_dir.display(), revision = node.current_revision(), "t4 serving the etcd v3 API");
    // Without TCP_NODELAY, a response split over two segments waits out the client's
    // delayed ACK (~40 ms) on every small request.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let served = router.serve_with_incoming_shutdown(incoming, shutdown).await;
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
