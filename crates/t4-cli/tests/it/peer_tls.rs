//! Mutual TLS between nodes (`--peer-tls-*`): loaded and checked at start; the identities
//! accept and reach only peers of their CA. The peer port that will carry them comes with
//! clustering.

use std::process::{Command, Stdio};

use t4_net::tls::{PeerTls, TlsConnector};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use t4_testkit::pki::Pki;

/// Accepts one peer connection with `tls` and echoes 5 bytes back.
async fn echo_once(tls: PeerTls) -> (std::net::SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (socket, _) = listener.accept().await?;
        let mut stream = tls.acceptor.accept(socket).await?;
        let mut buffer = [0u8; 5];
        stream.read_exact(&mut buffer).await?;
        stream.write_all(&buffer).await?;
        stream.shutdown().await
    });
    (addr, task)
}

async fn exchange(connector: &TlsConnector, addr: std::net::SocketAddr) -> std::io::Result<Vec<u8>> {
    let socket = tokio::net::TcpStream::connect(addr).await?;
    let mut stream = connector.connect("localhost", socket).await?;
    stream.write_all(b"hello").await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    Ok(answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_accept_and_reach_only_peers_signed_by_their_ca() {
    let pki = Pki::new();
    let (a, b) = (pki.server(), pki.client("node-b"));
    let node_a = PeerTls::from_pem_files(&pki.ca_path(), &a.cert, &a.key).unwrap();
    let node_b = PeerTls::from_pem_files(&pki.ca_path(), &b.cert, &b.key).unwrap();

    let (addr, task) = echo_once(node_a.clone()).await;
    assert_eq!(exchange(&node_b.connector, addr).await.unwrap(), b"hello");
    task.await.unwrap().unwrap();

    // A node of another CA: it does not trust node A, and node A would not trust it.
    let other = Pki::new();
    let stranger = other.client("stranger");
    let foreign = PeerTls::from_pem_files(&other.ca_path(), &stranger.cert, &stranger.key).unwrap();
    let (addr, task) = echo_once(node_a.clone()).await;
    assert!(exchange(&foreign.connector, addr).await.is_err(), "node A's certificate is not from the stranger's CA");
    assert!(task.await.unwrap().is_err());
    // Trusting node A's CA is not enough: its own certificate must be from that CA too.
    let impostor = TlsConnector::from_pem_files(&pki.ca_path(), &stranger.cert, &stranger.key, &[b"h2"]).unwrap();
    let (addr, task) = echo_once(node_a).await;
    let answer = exchange(&impostor, addr).await;
    assert!(answer.as_ref().map_or(true, |bytes| bytes.is_empty()), "a foreign client certificate got an answer: {answer:?}");
    assert!(task.await.unwrap().is_err(), "node A refuses the handshake");
}

#[test]
fn t4_run_checks_the_peer_tls_flags_at_start() {
    let pki = Pki::new();
    let identity = pki.server();
    let data = tempfile::tempdir().unwrap();
    let run = |args: &[&std::ffi::OsStr]| {
        Command::new(env!("CARGO_BIN_EXE_t4"))
            .args(["run", "--listen", "127.0.0.1:0", "--metrics-addr", "off", "--log-level", "warn", "--data-dir"])
            .arg(data.path())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .unwrap()
    };
    let ca = pki.ca_path();
    let (ca, cert) = (ca.as_os_str(), identity.cert.as_os_str());
    let alone = run(&["--peer-tls-ca".as_ref(), ca]);
    assert_eq!(alone.status.code(), Some(2), "the three flags go together");
    let stderr = String::from_utf8_lossy(&alone.stderr);
    assert!(stderr.contains("--peer-tls-cert") && stderr.contains("--peer-tls-key"), "{stderr}");
    // A CA file given as the key: refused before anything starts, naming the file.
    let wrong_key = run(&["--peer-tls-ca".as_ref(), ca, "--peer-tls-cert".as_ref(), cert, "--peer-tls-key".as_ref(), ca]);
    assert_eq!(wrong_key.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&wrong_key.stderr);
    assert!(stderr.contains("peer TLS: cannot read a private key from") && stderr.contains("ca.pem"), "{stderr}");
}
