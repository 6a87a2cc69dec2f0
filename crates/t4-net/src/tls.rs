//! TLS from PEM files (rustls with ring), shared by the servers and the peer transport.
//!
//! A certificate chain and its private key make a plain TLS server; a CA bundle as well
//! makes it require and verify client certificates (mTLS). Accepting a connection runs the
//! handshake under a time limit, so a client that opens a socket and says nothing cannot
//! hold a task forever. [`PeerTls`] is both sides of mutual TLS between nodes, from one CA.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};

/// How long a client has to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a TLS configuration could not be built; the message names the file.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsConfigError(String);

/// A TLS server configuration ready to accept connections.
#[derive(Clone)]
pub struct TlsAcceptor {
    inner: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsAcceptor")
    }
}

impl TlsAcceptor {
    /// Reads `cert` (a PEM chain, leaf first) and `key` (a PEM private key: PKCS#8, PKCS#1
    /// or SEC1). With `client_ca`, clients must present a certificate signed by it.
    /// `alpn` lists the protocols offered, most preferred first (e.g. `h2`, `http/1.1`).
    pub fn from_pem_files(cert: &Path, key: &Path, client_ca: Option<&Path>, alpn: &[&[u8]]) -> Result<Self, TlsConfigError> {
        Self::with_versions(cert, key, client_ca, alpn, rustls::DEFAULT_VERSIONS)
    }

    fn with_versions(
        cert: &Path,
        key: &Path,
        client_ca: Option<&Path>,
        alpn: &[&[u8]],
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Result<Self, TlsConfigError> {
        let chain = read_certificates(cert)?;
        let key = read_key(key)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|error| TlsConfigError(format!("TLS protocol versions: {error}")))?;
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(read_roots(ca)?), provider)
                    .build()
                    .map_err(|error| TlsConfigError(format!("client CA {}: {error}", ca.display())))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|error| TlsConfigError(format!("certificate {} and its key do not make a TLS identity: {error}", cert.display())))?;
        config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
        Ok(Self { inner: tokio_rustls::TlsAcceptor::from(Arc::new(config)) })
    }

    /// Runs the server side of the handshake on `stream`, within [`HANDSHAKE_TIMEOUT`].
    pub async fn accept<S>(&self, stream: S) -> std::io::Result<tokio_rustls::server::TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.inner.accept(stream)).await {
            Ok(result) => result,
            Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")),
        }
    }
}

/// A TLS client configuration: trusts one CA bundle, presents a certificate.
#[derive(Clone)]
pub struct TlsConnector {
    inner: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsConnector")
    }
}

impl TlsConnector {
    /// Trusts the CAs in `ca` only and presents `cert`/`key` to servers that ask.
    pub fn from_pem_files(ca: &Path, cert: &Path, key: &Path, alpn: &[&[u8]]) -> Result<Self, TlsConfigError> {
        Self::with_versions(ca, cert, key, alpn, rustls::DEFAULT_VERSIONS)
    }

    fn with_versions(
        ca: &Path,
        cert: &Path,
        key: &Path,
        alpn: &[&[u8]],
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Result<Self, TlsConfigError> {
        let chain = read_certificates(cert)?;
        let key = read_key(key)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(|error| TlsConfigError(format!("TLS protocol versions: {error}")))?
            .with_root_certificates(read_roots(ca)?)
            .with_client_auth_cert(chain, key)
            .map_err(|error| TlsConfigError(format!("certificate {} and its key do not make a TLS identity: {error}", cert.display())))?;
        config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
        Ok(Self { inner: tokio_rustls::TlsConnector::from(Arc::new(config)) })
    }

    /// Runs the client side of the handshake on `stream` with a server that must prove it
    /// is `server_name` (a DNS name or an IP address), within [`HANDSHAKE_TIMEOUT`].
    pub async fn connect<S>(&self, server_name: &str, stream: S) -> std::io::Result<tokio_rustls::client::TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let name = rustls_pki_types::ServerName::try_from(server_name.to_string())
            .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("server name {server_name:?}: {error}")))?;
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.inner.connect(name, stream)).await {
            Ok(result) => result,
            Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")),
        }
    }
}

/// Mutual TLS between nodes (`--peer-tls-ca/--peer-tls-cert/--peer-tls-key`), TLS 1.3 only:
/// each node accepts only peers whose certificate the CA signed and connects only to such
/// peers, presenting its own. Loaded and checked at start; `t4_server::peer` uses it on the
/// peer port.
#[derive(Debug, Clone)]
pub struct PeerTls {
    pub acceptor: TlsAcceptor,
    pub connector: TlsConnector,
}

impl PeerTls {
    pub fn from_pem_files(ca: &Path, cert: &Path, key: &Path) -> Result<Self, TlsConfigError> {
        Ok(Self {
            acceptor: TlsAcceptor::with_versions(cert, key, Some(ca), &[b"h2"], &[&rustls::version::TLS13])?,
            connector: TlsConnector::with_versions(ca, cert, key, &[b"h2"], &[&rustls::version::TLS13])?,
        })
    }
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|error| TlsConfigError(format!("cannot read a private key from {}: {error}", path.display())))
}

fn read_roots(ca: &Path) -> Result<rustls::RootCertStore, TlsConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in read_certificates(ca)? {
        roots.add(certificate).map_err(|error| TlsConfigError(format!("bad CA certificate in {}: {error}", ca.display())))?;
    }
    Ok(roots)
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|error| TlsConfigError(format!("cannot read certificates from {}: {error}", path.display())))?;
    if certificates.is_empty() {
        return Err(TlsConfigError(format!("{} holds no PEM certificate", path.display())));
    }
    Ok(certificates)
}
