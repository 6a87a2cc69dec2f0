//! The `s4` server: flags and `S4_*` variables, the engine, the S3 service on HTTP/1.1 and
//! HTTP/2 (hyper), unsigned `/health` and `/metrics`, background lifecycle and compaction,
//! and clean shutdown on SIGINT/SIGTERM.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use hyper_util::rt::{TokioExecutor, TokioIo};
use s3s::auth::SimpleAuth;
use s3s::service::{S3Service, S3ServiceBuilder};
use tokio::net::TcpListener;

use super::engine::{Engine, EngineOptions};
use super::service::S4;
use t4_env::{Clock, OsDisk, RealClock};
use t4_net::tls::TlsAcceptor;
use t4_net::Histogram;

#[derive(Debug, Parser)]
#[command(name = "s4", version, about = "s4: an S3-compatible object server with atomic conditional writes, durable before it answers")]
pub struct Args {
    /// Address to serve S3 on (path-style requests).
    #[arg(long, env = "S4_BIND", default_value = "127.0.0.1:9000")]
    pub bind: SocketAddr,
    /// Directory for volumes and metadata.
    #[arg(long, env = "S4_DATA_DIR", default_value = "./s4-data")]
    pub data_dir: PathBuf,
    /// Access key id; generated and printed once when absent.
    #[arg(long, env = "S4_ACCESS_KEY_ID")]
    pub access_key_id: Option<String>,
    /// Secret access key; generated and printed once when absent.
    #[arg(long, env = "S4_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub secret_access_key: Option<String>,
    /// Largest object accepted by PutObject, in bytes.
    #[arg(long, env = "S4_MAX_UPLOAD_SIZE", default_value_t = 5 * 1024 * 1024 * 1024)]
    pub max_upload_size: u64,
    /// TLS certificate chain (PEM, leaf first); with S4_TLS_KEY, s4 serves HTTPS only.
    #[arg(long, env = "S4_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "S4_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve Prometheus metrics on unsigned `GET /metrics`.
    #[arg(long, env = "S4_METRICS_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub metrics_enabled: bool,
    /// Multipart uploads untouched this long are aborted and their parts freed.
    #[arg(long, env = "S4_UPLOAD_EXPIRY_HOURS", default_value_t = 7 * 24)]
    pub upload_expiry_hours: u64,
    /// How often lifecycle rules are applied and volumes compacted.
    #[arg(long, env = "S4_MAINTENANCE_INTERVAL_SEC", default_value_t = 600)]
    pub maintenance_interval_sec: u64,
    /// A sealed volume at least this fraction dead is compacted.
    #[arg(long, env = "S4_COMPACTION_DEAD_FRACTION", default_value_t = 0.5)]
    pub compaction_dead_fraction: f64,
    /// Most client connections served at once; further ones wait to be accepted.
    #[arg(long, env = "S4_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// A connection that sends no complete request head for this long is closed (slow or
    /// idle HTTP/1 clients, TLS handshakes, and the first bytes of any connection).
    #[arg(long, env = "S4_HEADER_READ_TIMEOUT_SEC", default_value_t = 30)]
    pub header_read_timeout_sec: u64,
    /// Request bodies s4 holds in memory at once: a body over 1 MiB with a declared length
    /// is written to disk as it arrives and holds 1 MiB of this; smaller ones, and bodies of
    /// no declared length, are read whole first (and a body of no declared length may not
    /// be larger than this). A body that finds no room within 10 s is answered SlowDown.
    #[arg(long, env = "S4_MAX_BUFFERED_BYTES", default_value_t = BUFFERED_BYTES_MAX_DEFAULT)]
    pub max_buffered_bytes: u64,
    /// Accept AWS Signature Version 2 (header or presigned query). Off by default: a SigV2
    /// signature carries no time bound a server checks, so a captured request replays
    /// forever; AWS itself refuses it on every newer region.
    #[arg(long, env = "S4_ALLOW_SIGV2", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_sigv2: bool,
    #[arg(long, env = "S4_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Measure an S3 server (PUT/GET with N clients) and this disk's fsync rate.
    #[cfg(feature = "bench")]
    Bench(super::bench::BenchArgs),
}

/// Random credentials from the operating system (only when none were configured).
fn generated_secret(bytes: usize) -> std::io::Result<String> {
    Ok(t4_env::os_random(bytes)?.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// Where generated credentials are kept, inside the data dir (readable by its owner only).
pub const CREDENTIALS_FILE: &str = "credentials";

/// With no credentials configured: the ones generated at an earlier start, or new random
/// ones written to `<data dir>/credentials` (mode 0600). The secret is never printed or
/// logged; stderr says where it is.
fn generated_credentials(data_dir: &std::path::Path) -> Result<(String, String), Box<dyn std::error::Error + Send + Sync>> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join(CREDENTIALS_FILE);
    let parse = |text: &str| {
        let value = |name: &str| text.lines().find_map(|line| line.strip_prefix(name)).map(str::to_string);
        value("S4_ACCESS_KEY_ID=").zip(value("S4_SECRET_ACCESS_KEY="))
    };
    if let Ok(text) = std::fs::read_to_string(&path) {
        let credentials = parse(&text).ok_or_else(|| format!("{} is not a credentials file s4 wrote", path.display()))?;
        eprintln!("s4: no credentials configured; using the generated ones in {}", path.display());
        return Ok(credentials);
    }
    std::fs::create_dir_all(data_dir)?;
    let (access, secret) = (generated_secret(10)?, generated_secret(20)?);
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
    std::io::Write::write_all(&mut file, format!("S4_ACCESS_KEY_ID={access}\nS4_SECRET_ACCESS_KEY={secret}\n").as_bytes())?;
    file.sync_all()?;
    eprintln!(
        "s4: WARNING: no credentials configured; generated a key pair and wrote it to {} (set S4_ACCESS_KEY_ID and \
         S4_SECRET_ACCESS_KEY to choose your own)",
        path.display()
    );
    Ok((access, secret))
}

/// Entry point of the `s4` binary; returns the exit code.
pub fn main() -> i32 {
    #[cfg_attr(not(feature = "bench"), allow(unused_mut))]
    let mut args = Args::parse();
    #[cfg(feature = "bench")]
    if let Some(Command::Bench(bench)) = args.command.take() {
        return super::bench::main(bench);
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("s4: cannot start the runtime: {error}");
            return 1;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("s4: {error}");
            1
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (access, secret) = match (args.access_key_id, args.secret_access_key) {
        (Some(access), Some(secret)) => (access, secret),
        (None, None) => generated_credentials(&args.data_dir)?,
        _ => return Err("set both S4_ACCESS_KEY_ID and S4_SECRET_ACCESS_KEY, or neither".into()),
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsAcceptor::from_pem_files(cert, key, None, &[b"h2", b"http/1.1"])?),
        _ => None,
    };
    std::fs::create_dir_all(&args.data_dir)?;
    t4_env::raise_open_files_limit();
    let disk = Arc::new(OsDisk::new(args.data_dir.clone()));
    let _lock = t4_env::Disk::lock_exclusive(disk.as_ref())?;
    let clock = Arc::new(RealClock::new());
    let options = EngineOptions { upload_expiry: Duration::from_secs(args.upload_expiry_hours * 3600), ..EngineOptions::default() };
    let engine = Engine::open_with(disk, clock.clone(), options).await?;
    engine.spawn_maintenance(Duration::from_secs(args.maintenance_interval_sec.max(1)), args.compaction_dead_fraction);
    let listener = TcpListener::bind(args.bind).await?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(bind = %listener.local_addr()?, scheme, data_dir = %args.data_dir.display(), "s4 serving S3");
    let settings = ServeSettings {
        access_key_id: access,
        secret_access_key: secret,
        upload_bytes_max: args.max_upload_size,
        metrics: args.metrics_enabled,
        tls,
        connections_max: args.max_connections.max(1),
        header_read_timeout: Duration::from_secs(args.header_read_timeout_sec.max(1)),
        allow_sigv2: args.allow_sigv2,
        buffered_bytes_max: args.max_buffered_bytes,
    };
    serve(listener, engine, clock, settings, shutdown_signal()).await?;
    tracing::info!("s4 stopped accepting connections");
    Ok(())
}

/// What [`serve`] needs besides the engine.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub upload_bytes_max: u64,
    /// Serve `/metrics`.
    pub metrics: bool,
    /// Serve HTTPS with this identity instead of plain HTTP.
    pub tls: Option<TlsAcceptor>,
    /// Most connections served at once (`--max-connections`).
    pub connections_max: usize,
    /// How long a connection may take to send a complete request head (`--header-read-timeout-sec`).
    pub header_read_timeout: Duration,
    /// Accept Signature Version 2 (`--allow-sigv2`).
    pub allow_sigv2: bool,
    /// Request bodies held in memory at once (`--max-buffered-bytes`).
    pub buffered_bytes_max: u64,
}

impl ServeSettings {
    /// Settings with the defaults of the binary's flags.
    pub fn new(access_key_id: String, secret_access_key: String, upload_bytes_max: u64) -> Self {
        Self {
            access_key_id,
            secret_access_key,
            upload_bytes_max,
            metrics: true,
            tls: None,
            connections_max: 4096,
            header_read_timeout: Duration::from_secs(30),
            allow_sigv2: false,
            buffered_bytes_max: BUFFERED_BYTES_MAX_DEFAULT,
        }
    }
}

/// Default of `--max-buffered-bytes`.
pub const BUFFERED_BYTES_MAX_DEFAULT: u64 = 2 << 30;

/// HTTP/2 pings on idle connections, and how long an answer may take before the
/// connection is closed.
const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Concurrent streams one HTTP/2 connection may open.
const H2_STREAMS_MAX: u32 = 256;

/// Serves S3 (and `/health`, `/metrics`) on `listener` until `shutdown` completes. Used by
/// the binary and by in-process tests.
pub async fn serve(
    listener: TcpListener,
    engine: Engine,
    clock: Arc<dyn Clock>,
    settings: ServeSettings,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let mut builder = S3ServiceBuilder::new(S4::new(engine.clone(), settings.upload_bytes_max, settings.buffered_bytes_max));
    builder.set_auth(SimpleAuth::from_single(settings.access_key_id, settings.secret_access_key));
    let router = Arc::new(Router {
        s3: builder.build(),
        engine,
        metrics: S4Metrics::new(clock),
        metrics_enabled: settings.metrics,
        allow_sigv2: settings.allow_sigv2,
    });
    let connections = Arc::new(tokio::sync::Semaphore::new(settings.connections_max));
    let timeout = settings.header_read_timeout;
    tokio::pin!(shutdown);
    loop {
        // Past `connections_max`, new connections wait in the listen backlog.
        let (socket, _, place) = tokio::select! {
            accepted = t4_net::listen::accept_placed(&listener, &connections, "s4") => accepted,
            _ = &mut shutdown => return Ok(()),
        };
        let router = router.clone();
        let tls = settings.tls.clone();
        tokio::spawn(async move {
            let _place = place;
            match tls {
                None => {
                    if let Some(version) = plain_version(&socket, timeout).await {
                        serve_connection(socket, router, version, timeout).await;
                    }
                }
                // The acceptor bounds the handshake's time itself.
                Some(tls) => match tls.accept(socket).await {
                    Ok(stream) => {
                        let version = if stream.get_ref().1.alpn_protocol() == Some(b"h2") { Version::H2 } else { Version::H1 };
                        serve_connection(stream, router, version, timeout).await;
                    }
                    Err(error) => tracing::debug!(%error, "s4: TLS handshake failed"),
                },
            }
        });
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    H1,
    H2,
}

/// HTTP/1 or HTTP/2 (prior knowledge), from the connection's first bytes, read within
/// `timeout`: a client that sends nothing, or dribbles the preface, is dropped.
async fn plain_version(socket: &tokio::net::TcpStream, timeout: Duration) -> Option<Version> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let peek = async {
        let mut buffer = [0u8; PREFACE.len()];
        loop {
            let seen = socket.peek(&mut buffer).await.ok()?;
            if seen == 0 {
                return None;
            }
            if buffer[..seen] != PREFACE[..seen] {
                return Some(Version::H1);
            }
            if seen == PREFACE.len() {
                return Some(Version::H2);
            }
            // A partial preface: wait a little for the rest (peek returns at once).
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(timeout, peek).await.ok().flatten()
}

async fn serve_connection<I>(io: I, router: Arc<Router>, version: Version, header_read_timeout: Duration)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request| {
        let router = router.clone();
        async move { router.handle(request).await }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let mut builder = match version {
        Version::H1 => builder.http1_only(),
        Version::H2 => builder.http2_only(),
    };
    builder.http1().timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(header_read_timeout);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(H2_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(H2_KEEPALIVE_TIMEOUT)
        .max_concurrent_streams(H2_STREAMS_MAX);
    if let Err(error) = builder.serve_connection(TokioIo::new(io), service).await {
        tracing::debug!(%error, "s4: connection ended with an error");
    }
}

/// Sends unsigned `GET /health` and `GET /metrics` to s4 itself and everything else to S3.
/// A signed request for a bucket named `health` or `metrics` still reaches S3.
struct Router {
    s3: S3Service,
    engine: Engine,
    metrics: S4Metrics,
    metrics_enabled: bool,
    allow_sigv2: bool,
}

/// A request signed with Signature Version 2: `Authorization: AWS <key>:<signature>`, or a
/// presigned URL with `AWSAccessKeyId` and `Signature` (v4 presigned URLs use `X-Amz-*`).
fn signed_v2(request: &hyper::Request<hyper::body::Incoming>) -> bool {
    let header = request.headers().get(hyper::header::AUTHORIZATION).and_then(|value| value.to_str().ok());
    let query = request.uri().query().unwrap_or("");
    let has = |name: &str| query.split('&').any(|pair| pair.split('=').next() == Some(name));
    header.is_some_and(|value| value.starts_with("AWS ")) || (has("AWSAccessKeyId") && has("Signature"))
}

/// S3's answer to a signature mechanism it does not take.
fn sigv2_refused() -> hyper::Response<s3s::Body> {
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InvalidRequest</Code><Message>The authorization \
                mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.</Message></Error>";
    let mut response = hyper::Response::new(s3s::Body::from(body.to_string()));
    *response.status_mut() = hyper::StatusCode::BAD_REQUEST;
    response.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/xml"));
    response
}

fn unsigned(request: &hyper::Request<hyper::body::Incoming>) -> bool {
    !request.headers().contains_key(hyper::header::AUTHORIZATION)
        && !request.uri().query().is_some_and(|query| query.contains("X-Amz-Signature"))
}

impl Router {
    async fn handle(&self, request: hyper::Request<hyper::body::Incoming>) -> Result<hyper::Response<s3s::Body>, s3s::HttpError> {
        if request.method() == hyper::Method::GET && unsigned(&request) {
            match request.uri().path() {
                "/health" => return Ok(self.health()),
                "/metrics" if self.metrics_enabled => return Ok(self.render_metrics()),
                _ => {}
            }
        }
        if !self.allow_sigv2 && signed_v2(&request) {
            return Ok(sigv2_refused());
        }
        let method = request.method().clone();
        let timer = self.metrics.start();
        let mut response = hyper::service::Service::call(&self.s3, request).await;
        let status = response.as_ref().map_or(500, |response| response.status().as_u16());
        self.metrics.finish(timer, &method, status);
        if method == hyper::Method::HEAD {
            // An error reply carries an XML body even for HEAD. HTTP/1.1 drops it on the
            // wire, but on HTTP/2 DATA frames after a HEAD are a protocol error to clients.
            if let Ok(response) = &mut response {
                *response.body_mut() = s3s::Body::empty();
            }
        }
        response
    }

    fn health(&self) -> hyper::Response<s3s::Body> {
        let (status, text) = match self.engine.health().and_then(|()| self.engine.list_buckets()) {
            Ok(_) => (200, "ok\n".to_string()),
            Err(error) => (503, format!("unhealthy: {error}\n")),
        };
        let mut response = hyper::Response::new(s3s::Body::from(text));
        *response.status_mut() = hyper::StatusCode::from_u16(status).expect("valid status");
        response
    }

    fn render_metrics(&self) -> hyper::Response<s3s::Body> {
        let mut text = self.metrics.render();
        if let Ok(stats) = self.engine.stats() {
            use std::fmt::Write;
            let _ = writeln!(text, "# TYPE s4_commits_total counter\ns4_commits_total {}", stats.commits);
            let _ = writeln!(text, "# TYPE s4_commit_batches_total counter\ns4_commit_batches_total {}", stats.batches);
            let _ = writeln!(text, "# TYPE s4_volumes gauge\ns4_volumes {}", stats.volumes);
            let _ = writeln!(text, "# TYPE s4_volume_bytes gauge\ns4_volume_bytes {}", stats.volume_bytes);
            let _ = writeln!(text, "# TYPE s4_live_bytes gauge\ns4_live_bytes {}", stats.live_bytes);
            let _ = writeln!(text, "# TYPE s4_bodies gauge\ns4_bodies {}", stats.bodies);
        }
        let mut response = hyper::Response::new(s3s::Body::from(text));
        response.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"));
        response
    }
}

/// Request latency by HTTP method and responses by status class.
struct S4Metrics {
    clock: Arc<dyn Clock>,
    latency: BTreeMap<&'static str, Histogram>,
    statuses: BTreeMap<(&'static str, &'static str), AtomicU64>,
}

const METHODS: [&str; 5] = ["GET", "HEAD", "PUT", "POST", "DELETE"];
const CLASSES: [&str; 4] = ["2xx", "3xx", "4xx", "5xx"];

impl S4Metrics {
    fn new(clock: Arc<dyn Clock>) -> Self {
        let latency = METHODS.iter().map(|method| (*method, Histogram::default())).collect();
        let statuses = METHODS.iter().flat_map(|method| CLASSES.iter().map(move |class| ((*method, *class), AtomicU64::new(0)))).collect();
        Self { clock, latency, statuses }
    }

    fn start(&self) -> Duration {
        self.clock.monotonic()
    }

    fn finish(&self, started: Duration, method: &hyper::Method, status: u16) {
        let Some(method) = METHODS.iter().find(|known| **known == method.as_str()) else { return };
        self.latency[method].observe(self.clock.monotonic().saturating_sub(started));
        let class = CLASSES[usize::from((status / 100).clamp(2, 5) - 2)];
        self.statuses[&(*method, class)].fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::from("# TYPE s4_request_duration_seconds histogram\n");
        for (method, histogram) in &self.latency {
            histogram.render("s4_request_duration_seconds", &format!("method=\"{method}\""), &mut out);
        }
        out.push_str("# TYPE s4_responses_total counter\n");
        for ((method, class), count) in &self.statuses {
            let _ = writeln!(out, "s4_responses_total{{method=\"{method}\",status=\"{class}\"}} {}", count.load(Ordering::Relaxed));
        }
        out
    }
}

async fn shutdown_signal() {
    let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(terminate) => terminate,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
