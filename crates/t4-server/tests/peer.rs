//! The peer transport over real sockets: calls and refusals cross intact; only this
//! protocol version and only peers with the cluster CA's certificate (TLS 1.3) are served;
//! a link that goes silent is a timeout, keepalives close it, and the next call after it
//! heals reconnects.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use t4::env::{peer_methods, PeerError, PeerHandler, PeerNet};
use t4_net::tls::{PeerTls, TlsAcceptor};
use t4_server::peer::{serve_peers, PeerTiming, TonicPeers, PROTOCOL_HEADER, PROTOCOL_VERSION};
use t4_testkit::pki::Pki;
use t4_testkit::proxy::Proxy;

/// Answers Append with the request reversed and refuses Forward; counts calls.
#[derive(Default)]
struct Echo {
    calls: AtomicUsize,
}

#[async_trait::async_trait]
impl PeerHandler for Echo {
    async fn handle(&self, method: &str, request: Bytes) -> Result<Bytes, String> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match method {
            peer_methods::APPEND => Ok(request.iter().rev().copied().collect::<Vec<u8>>().into()),
            other => Err(format!("{other}: this node is not the leader")),
        }
    }
}

const QUICK: PeerTiming = PeerTiming {
    call_timeout: Duration::from_millis(800),
    connect_timeout: Duration::from_millis(300),
    keepalive_interval: Duration::from_millis(200),
    keepalive_timeout: Duration::from_millis(200),
};

struct Served {
    addr: SocketAddr,
    echo: Arc<Echo>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn serve(tls: Option<TlsAcceptor>) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let echo = Arc::new(Echo::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handler: Arc<dyn PeerHandler> = echo.clone();
    tokio::spawn(serve_peers(listener, tls, handler, QUICK, async move {
        let _ = stopped.await;
    }));
    Served { addr, echo, _stop: stop }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_and_refusals_cross_intact() {
    let served = serve(None).await;
    let peers = TonicPeers::new(None, QUICK);
    let url = format!("http://{}", served.addr);
    let big: Vec<u8> = (0..5 << 20).map(|i| (i % 251) as u8).collect();
    let answer = peers.call(&url, peer_methods::APPEND, Bytes::from(big.clone())).await.unwrap();
    assert!(answer.iter().eq(big.iter().rev()), "a 5 MiB message crosses byte for byte");
    assert_eq!(
        peers.call(&url, peer_methods::FORWARD, Bytes::new()).await,
        Err(PeerError::Refused("Forward: this node is not the leader".into()))
    );
    let nobody = format!("http://127.0.0.1:{}", free_port());
    assert!(matches!(peers.call(&nobody, peer_methods::APPEND, Bytes::new()).await, Err(PeerError::Unreachable(_))));
    assert!(matches!(peers.call("not a url", peer_methods::APPEND, Bytes::new()).await, Err(PeerError::Refused(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_protocol_version_or_a_stranger_is_refused_by_name() {
    use t4_proto::peer::peer_client::PeerClient;
    use t4_proto::peer::ReadIndexRequest;
    let served = serve(None).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", served.addr)).unwrap().connect().await.unwrap();
    let mut client = PeerClient::new(channel);
    let stranger = client.read_index(ReadIndexRequest::default()).await.unwrap_err();
    assert_eq!(stranger.code(), tonic::Code::FailedPrecondition);
    assert_eq!(stranger.message(), "not a t4 peer: no t4-peer-protocol header (this node speaks peer protocol 1)");
    let mut newer = tonic::Request::new(ReadIndexRequest::default());
    newer.metadata_mut().insert(PROTOCOL_HEADER, (PROTOCOL_VERSION + 1).into());
    let newer = client.read_index(newer).await.unwrap_err();
    assert_eq!(newer.code(), tonic::Code::FailedPrecondition);
    assert_eq!(newer.message(), "t4 peer protocol 2 is not this node's (1): run one t4 version across the cluster");
    assert_eq!(served.echo.calls.load(Ordering::SeqCst), 0, "the handler saw neither");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_1_3_with_the_cluster_ca_only() {
    let pki = Pki::new();
    let node = pki.server();
    let tls = PeerTls::from_pem_files(&pki.ca_path(), &node.cert, &node.key).unwrap();
    let served = serve(Some(tls.acceptor.clone())).await;
    let url = format!("https://127.0.0.1:{}", served.addr.port());

    let member = TonicPeers::new(Some(tls.connector.clone()), QUICK);
    assert_eq!(&member.call(&url, peer_methods::APPEND, Bytes::from_static(b"ab")).await.unwrap()[..], b"ba");
    let calls = served.echo.calls.load(Ordering::SeqCst);

    // A certificate another CA signed (and that trusts only its own CA).
    let other = Pki::new();
    let stranger = other.server();
    let stranger = PeerTls::from_pem_files(&other.ca_path(), &stranger.cert, &stranger.key).unwrap();
    let outsider = TonicPeers::new(Some(stranger.connector), QUICK);
    let refused = outsider.call(&url, peer_methods::APPEND, Bytes::from_static(b"ab")).await;
    assert!(matches!(refused, Err(PeerError::Unreachable(_))), "{refused:?}");
    // No certificate at all: plain HTTP/2 to the TLS port.
    let plain = TonicPeers::new(None, QUICK);
    let refused = plain.call(&format!("http://127.0.0.1:{}", served.addr.port()), peer_methods::APPEND, Bytes::new()).await;
    assert!(refused.is_err(), "{refused:?}");
    // The schemes must agree with the node's TLS settings.
    let refused = member.call(&format!("http://127.0.0.1:{}", served.addr.port()), peer_methods::APPEND, Bytes::new()).await;
    assert!(matches!(&refused, Err(PeerError::Refused(why)) if why.contains("only TLS")), "{refused:?}");
    let refused = plain.call(&url, peer_methods::APPEND, Bytes::new()).await;
    assert!(matches!(&refused, Err(PeerError::Refused(why)) if why.contains("--peer-tls")), "{refused:?}");
    assert_eq!(served.echo.calls.load(Ordering::SeqCst), calls, "no refused caller reached the handler");

    // A client offering only TLS 1.2, with the right certificate, fails the handshake.
    assert!(tls12_handshake(&pki, &node, served.addr).await.is_err(), "the peer port speaks TLS 1.3 only");
}

async fn tls12_handshake(pki: &Pki, node: &t4_testkit::pki::Identity, addr: SocketAddr) -> std::io::Result<()> {
    use rustls_pki_types::pem::PemObject;
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls_pki_types::CertificateDer::pem_file_iter(pki.ca_path()).unwrap() {
        roots.add(ca.unwrap()).unwrap();
    }
    let chain = rustls_pki_types::CertificateDer::pem_file_iter(&node.cert).unwrap().map(Result::unwrap).collect();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(&node.key).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, stream).await.map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_link_times_out_keepalives_close_it_and_calls_reconnect_after() {
    let served = serve(None).await;
    let proxy = Proxy::start(served.addr).await;
    let peers = TonicPeers::new(None, QUICK);
    let url = format!("http://{}", proxy.addr);
    assert_eq!(&peers.call(&url, peer_methods::APPEND, Bytes::from_static(b"12")).await.unwrap()[..], b"21");

    proxy.blackhole(true);
    let started = tokio::time::Instant::now();
    // The deadline ends it, or the keepalive does first (interval + timeout is 400 ms here):
    // no answer either way, never a wait on the dead socket.
    let silent = peers.call(&url, peer_methods::APPEND, Bytes::from_static(b"x")).await;
    assert!(matches!(silent, Err(PeerError::Timeout | PeerError::Unreachable(_))), "{silent:?}");
    assert!(started.elapsed() < QUICK.call_timeout + Duration::from_millis(300), "took {:?}", started.elapsed());
    // Keepalive pings go unanswered: the client closes the dead connection by itself.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while proxy.client_closes() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "keepalives never closed the silent connection");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    proxy.blackhole(false);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match peers.call(&url, peer_methods::APPEND, Bytes::from_static(b"34")).await {
            Ok(answer) => break assert_eq!(&answer[..], b"43"),
            Err(error) => assert!(tokio::time::Instant::now() < deadline, "no reconnect after the link healed: {error}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
