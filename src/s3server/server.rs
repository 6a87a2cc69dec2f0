//! The `s4` server: flags and `S4_*` variables, the engine, the S3 service on HTTP/1.1 and
//! HTTP/2 (hyper), `/health`, and clean shutdown on SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use hyper_util::rt::{TokioExecutor, TokioIo};
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;

use super::engine::Engine;
use super::service::S4;
use crate::env::{OsDisk, RealClock};

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
    /// TLS certificate (PEM). TLS is not built yet: setting it is refused.
    #[arg(long, env = "S4_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// TLS key (PEM). TLS is not built yet: setting it is refused.
    #[arg(long, env = "S4_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    #[arg(long, env = "S4_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

/// Random credentials from the operating system (only when none were configured).
fn generated_secret(bytes: usize) -> std::io::Result<String> {
    Ok(crate::env::os_random(bytes)?.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// Entry point of the `s4` binary; returns the exit code.
pub fn main() -> i32 {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).init();
    if args.tls_cert.is_some() || args.tls_key.is_some() {
        eprintln!("s4: TLS is not built yet (S4_TLS_CERT/S4_TLS_KEY); serve plain HTTP on loopback or behind a TLS proxy");
        return 2;
    }
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
        (None, None) => {
            let (access, secret) = (generated_secret(10)?, generated_secret(20)?);
            println!("s4: generated credentials (set S4_ACCESS_KEY_ID and S4_SECRET_ACCESS_KEY to choose your own):");
            println!("S4_ACCESS_KEY_ID={access}\nS4_SECRET_ACCESS_KEY={secret}");
            (access, secret)
        }
        _ => return Err("set both S4_ACCESS_KEY_ID and S4_SECRET_ACCESS_KEY, or neither".into()),
    };
    std::fs::create_dir_all(&args.data_dir)?;
    let disk = Arc::new(OsDisk::new(args.data_dir.clone()));
    let _lock = crate::env::Disk::lock_exclusive(disk.as_ref())?;
    let engine = Engine::open(disk, Arc::new(RealClock::new())).await?;
    let mut builder = S3ServiceBuilder::new(S4::new(engine, args.max_upload_size));
    builder.set_auth(SimpleAuth::from_single(access, secret));
    let service = builder.build();
    let listener = TcpListener::bind(args.bind).await?;
    tracing::info!(bind = %listener.local_addr()?, data_dir = %args.data_dir.display(), "s4 serving S3");
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let (socket, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = &mut shutdown => break,
        };
        let _ = socket.set_nodelay(true);
        let service = service.clone();
        tokio::spawn(async move {
            let connection = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(error) = connection.serve_connection(TokioIo::new(socket), service).await {
                tracing::debug!(%error, "s4: connection ended with an error");
            }
        });
    }
    tracing::info!("s4 stopped accepting connections");
    Ok(())
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
