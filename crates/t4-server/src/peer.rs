//! The peer port: `t4.peer.Peer` (proto/proto/peer.proto) over tonic, both sides.
//!
//! [`serve_peers`] answers calls with a [`PeerHandler`]; [`TonicPeers`] is the calling side,
//! a [`PeerNet`] over one HTTP/2 channel per peer URL. Messages cross as the bytes prost
//! made of them (a pass-through codec), so the handler decodes exactly what the simulator's
//! twin hands it. Every call is unary with a deadline; both sides send HTTP/2 keepalive
//! pings, so a connection whose other end vanished without a FIN (a half-open connection:
//! a crashed host, a dropped route) is closed within interval + timeout and the next call
//! reconnects instead of waiting on a dead socket.
//!
//! With `--peer-tls-*` both sides speak TLS 1.3 only and each proves itself with a
//! certificate the cluster's CA signed (`t4_net::tls::PeerTls`); a peer URL's scheme must
//! agree (`https` with TLS, `http` without), or the call is refused with what is wrong.
//!
//! A caller names its protocol version in the [`PROTOCOL_HEADER`]; a node that speaks
//! another answers `FailedPrecondition` naming both, so a mixed-version cluster says so
//! instead of misreading messages.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use t4::env::{peer_methods, PeerError, PeerHandler, PeerNet};
use t4_net::tls::{TlsAcceptor, TlsConnector};
use tokio::net::TcpListener;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::pings::PingPoliced;
use crate::{incoming, plain_handshake, BoxError, PlainConnection, TlsConnection};

/// The peer protocol this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// The request header that carries it.
pub const PROTOCOL_HEADER: &str = "t4-peer-protocol";
/// The largest peer message either way. Appends are bounded far below it by the leader
/// (`cluster/progress.rs`); a larger one is refused with `ResourceExhausted`.
pub const MESSAGE_BYTES_MAX: usize = 64 << 20;
/// Connections the peer port holds at once (a cluster has a handful of members).
const CONNECTIONS_MAX: usize = 256;
const SERVICE: &str = "t4.peer.Peer";

/// Deadlines and keepalives of the peer transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerTiming {
    /// How long a call may take, connecting included.
    pub call_timeout: Duration,
    pub connect_timeout: Duration,
    /// How often each side pings a connection, idle or not.
    pub keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed.
    pub keepalive_timeout: Duration,
}

impl PeerTiming {
    /// Keepalives noticing a dead connection within 2 s, well inside the default 5 s lease.
    pub const DEFAULT: PeerTiming = PeerTiming {
        call_timeout: Duration::from_secs(3),
        connect_timeout: Duration::from_secs(1),
        keepalive_interval: Duration::from_secs(1),
        keepalive_timeout: Duration::from_secs(1),
    };
}

impl Default for PeerTiming {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Serves `handler` on `listener` (with mutual TLS when `tls` is given) until `shutdown`.
pub async fn serve_peers(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    handler: Arc<dyn PeerHandler>,
    timing: PeerTiming,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BoxError> {
    let router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(timing.keepalive_interval))
        .http2_keepalive_timeout(Some(timing.keepalive_timeout))
        .initial_stream_window_size(Some(4 << 20))
        .initial_connection_window_size(Some(16 << 20))
        .add_service(PeerRoutes { handler });
    let places = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
    // Our own callers ping every keepalive interval: held to half of it, never refused.
    let min_time = timing.keepalive_interval / 2;
    match tls {
        None => {
            let handshake = move |stream, _, place| plain_handshake(stream, place, min_time);
            router.serve_with_incoming_shutdown(incoming::<PlainConnection, _, _>(listener, places, handshake), shutdown).await?
        }
        Some(acceptor) => {
            let handshake = move |stream, peer, place| {
                let acceptor = acceptor.clone();
                async move {
                    let stream = PingPoliced::new(acceptor.accept(stream).await?, min_time);
                    Ok(TlsConnection { stream, peer: Some(peer), _place: place })
                }
            };
            router.serve_with_incoming_shutdown(incoming(listener, places, handshake), shutdown).await?
        }
    }
    Ok(())
}

/// Routes `/t4.peer.Peer/<method>` to the handler, refusing other versions and methods.
#[derive(Clone)]
struct PeerRoutes {
    handler: Arc<dyn PeerHandler>,
}

impl tonic::server::NamedService for PeerRoutes {
    const NAME: &'static str = SERVICE;
}

type Routed = Pin<Box<dyn Future<Output = Result<http::Response<tonic::body::Body>, Infallible>> + Send>>;

impl tower::Service<http::Request<tonic::body::Body>> for PeerRoutes {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Routed;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Routed {
        let handler = self.handler.clone();
        Box::pin(async move {
            let path = request.uri().path();
            let named = path.strip_prefix("/t4.peer.Peer/");
            let Some(method) = peer_methods::ALL.iter().copied().find(|method| Some(*method) == named) else {
                return Ok(Status::unimplemented(format!("t4 peer port: no method {path}")).into_http());
            };
            if let Err(status) = check_version(request.headers()) {
                return Ok(status.into_http());
            }
            let answer = tower::service_fn(move |call: tonic::Request<Bytes>| {
                let handler = handler.clone();
                async move {
                    match handler.handle(method, call.into_inner()).await {
                        Ok(response) => Ok(tonic::Response::new(response)),
                        Err(refusal) => Err(Status::aborted(refusal)),
                    }
                }
            });
            let mut grpc = tonic::server::Grpc::new(PassThrough)
                .max_decoding_message_size(MESSAGE_BYTES_MAX)
                .max_encoding_message_size(MESSAGE_BYTES_MAX);
            Ok(grpc.unary(answer, request).await)
        })
    }
}

fn check_version(headers: &http::HeaderMap) -> Result<(), Status> {
    let theirs = headers.get(PROTOCOL_HEADER).and_then(|value| value.to_str().ok());
    match theirs {
        Some(version) if version == PROTOCOL_VERSION.to_string() => Ok(()),
        Some(version) => Err(Status::failed_precondition(format!(
            "t4 peer protocol {version} is not this node's ({PROTOCOL_VERSION}): run one t4 version across the cluster"
        ))),
        None => Err(Status::failed_precondition(format!(
            "not a t4 peer: no {PROTOCOL_HEADER} header (this node speaks peer protocol {PROTOCOL_VERSION})"
        ))),
    }
}

/// The calling side: one lazily connected channel per peer URL, kept while it works.
pub struct TonicPeers {
    tls: Option<TlsConnector>,
    timing: PeerTiming,
    channels: Mutex<BTreeMap<String, Channel>>,
}

impl std::fmt::Debug for TonicPeers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TonicPeers").field("tls", &self.tls.is_some()).field("timing", &self.timing).finish_non_exhaustive()
    }
}

impl TonicPeers {
    pub fn new(tls: Option<TlsConnector>, timing: PeerTiming) -> Self {
        Self { tls, timing, channels: Mutex::new(BTreeMap::new()) }
    }

    fn channel(&self, peer: &str) -> Result<Channel, PeerError> {
        let mut channels = self.channels.lock().expect("channels lock");
        if let Some(channel) = channels.get(peer) {
            return Ok(channel.clone());
        }
        let endpoint = tonic::transport::Endpoint::from_shared(peer.to_string())
            .map_err(|error| PeerError::Refused(format!("peer URL {peer:?}: {error}")))?
            .connect_timeout(self.timing.connect_timeout)
            .timeout(self.timing.call_timeout)
            .http2_keep_alive_interval(self.timing.keepalive_interval)
            .keep_alive_timeout(self.timing.keepalive_timeout)
            .keep_alive_while_idle(true)
            .tcp_nodelay(true)
            .initial_stream_window_size(Some(4 << 20))
            .initial_connection_window_size(Some(16 << 20));
        let scheme = endpoint.uri().scheme_str().unwrap_or_default().to_string();
        let channel = match (scheme.as_str(), &self.tls) {
            ("http", None) => endpoint.connect_lazy(),
            ("https", Some(tls)) => endpoint.connect_with_connector_lazy(TlsDialer(tls.clone())),
            ("https", None) => {
                return Err(PeerError::Refused(format!("peer URL {peer} wants TLS: start this node with --peer-tls-ca/cert/key")))
            }
            ("http", Some(_)) => {
                return Err(PeerError::Refused(format!("peer URL {peer} is plain http, and this node speaks only TLS to peers")))
            }
            (other, _) => return Err(PeerError::Refused(format!("peer URL {peer}: scheme {other:?} is neither http nor https"))),
        };
        channels.insert(peer.to_string(), channel.clone());
        Ok(channel)
    }
}

#[async_trait::async_trait]
impl PeerNet for TonicPeers {
    async fn call(&self, peer: &str, method: &str, request: Bytes) -> Result<Bytes, PeerError> {
        let path = http::uri::PathAndQuery::try_from(format!("/{SERVICE}/{method}"))
            .map_err(|error| PeerError::Refused(format!("peer method {method:?}: {error}")))?;
        let mut grpc = tonic::client::Grpc::new(self.channel(peer)?)
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(MESSAGE_BYTES_MAX);
        grpc.ready().await.map_err(|error| PeerError::Unreachable(format!("{peer}: {error}")))?;
        let mut call = tonic::Request::new(request);
        call.metadata_mut().insert(PROTOCOL_HEADER, PROTOCOL_VERSION.into());
        call.set_timeout(self.timing.call_timeout);
        // The whole call, connecting included, within the deadline (the channel's own
        // timeout covers the request once it is sent).
        match tokio::time::timeout(self.timing.call_timeout, grpc.unary(call, path, PassThrough)).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(classify(peer, status)),
            Err(_) => Err(PeerError::Timeout),
        }
    }
}

/// What a failed call means to the caller.
fn classify(peer: &str, status: Status) -> PeerError {
    match status.code() {
        Code::Unavailable | Code::Unknown => PeerError::Unreachable(format!("{peer}: {}", status.message())),
        Code::DeadlineExceeded | Code::Cancelled => PeerError::Timeout,
        _ => PeerError::Refused(status.message().to_string()),
    }
}

/// Dials a peer and runs the TLS handshake (the server must prove the URL's host).
#[derive(Clone)]
struct TlsDialer(TlsConnector);

type TlsIo = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;
type Dialing = Pin<Box<dyn Future<Output = std::io::Result<TlsIo>> + Send>>;

impl tower::Service<http::Uri> for TlsDialer {
    type Response = TlsIo;
    type Error = std::io::Error;
    type Future = Dialing;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Dialing {
        let tls = self.0.clone();
        Box::pin(async move {
            let invalid = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("peer URL {uri}: {what}"));
            let host = uri.host().ok_or_else(|| invalid("no host"))?.trim_start_matches('[').trim_end_matches(']').to_string();
            let port = uri.port_u16().ok_or_else(|| invalid("no port"))?;
            let stream = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            stream.set_nodelay(true)?;
            Ok(hyper_util::rt::TokioIo::new(tls.connect(&host, stream).await?))
        })
    }
}

/// Messages cross as the bytes prost made of them: the handler decodes them itself.
#[derive(Debug, Clone, Copy, Default)]
struct PassThrough;

impl Codec for PassThrough {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = PassThrough;
    type Decoder = PassThrough;

    fn encoder(&mut self) -> PassThrough {
        PassThrough
    }

    fn decoder(&mut self) -> PassThrough {
        PassThrough
    }
}

impl Encoder for PassThrough {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for PassThrough {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
