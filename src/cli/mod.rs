//! The `t4` command line: `t4 run` (the server) and `t4 bench` (an etcd v3 load generator).
//! Every `run` flag can also come from a `T4_*` environment variable; a flag wins.

#[cfg(feature = "bench")]
mod bench;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::Config;
use crate::server::{self, Keepalive, ServerConfig};

#[derive(Debug, Parser)]
#[command(
    name = "t4",
    version,
    about = "t4: an etcd v3 compatible key-value store, durable on local disk (object storage to come)",
    long_about = None,
    after_help = "Run a node:   t4 run --data-dir ./t4-data --listen 127.0.0.1:3379\nThen:         ETCDCTL_API=3 etcdctl --endpoints=127.0.0.1:3379 put /hello world"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a t4 node serving the etcd v3 gRPC API.
    Run(RunArgs),
    /// Load-test an etcd v3 endpoint (t4 or etcd) and report ops/s and latency percentiles.
    Bench(BenchArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ReadConsistency {
    Linearizable,
    Serializable,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Directory for the WAL and the store.
    #[arg(long, env = "T4_DATA_DIR", default_value = "/var/lib/t4")]
    data_dir: PathBuf,
    /// Address of the etcd v3 gRPC API.
    #[arg(long, env = "T4_LISTEN", default_value = "0.0.0.0:3379")]
    listen: SocketAddr,
    /// Address of /metrics, /healthz and /readyz ("off" disables it).
    #[arg(long, env = "T4_METRICS_ADDR", default_value = "0.0.0.0:9090")]
    metrics_addr: String,
    /// Log filter: error, warn, info, debug, trace, or a tracing directive.
    #[arg(long, env = "T4_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Default read consistency. A single node serves both from its durable revision, so
    /// both are linearizable today; the flag matters once followers serve reads.
    #[arg(long, env = "T4_READ_CONSISTENCY", value_enum, default_value = "linearizable")]
    read_consistency: ReadConsistency,
    /// Member name reported by MemberList.
    #[arg(long, env = "T4_NAME", default_value = "default")]
    name: String,
    /// Client URLs reported by MemberList (default: http://<listen>).
    #[arg(long, env = "T4_ADVERTISE_CLIENT_URLS", value_delimiter = ',')]
    advertise_client_urls: Vec<String>,
    /// Largest request accepted, in bytes (etcd's --max-request-bytes).
    #[arg(long, env = "T4_MAX_REQUEST_BYTES", default_value_t = 1536 * 1024)]
    max_request_bytes: usize,
    /// Most operations in one txn (etcd's --max-txn-ops).
    #[arg(long, env = "T4_MAX_TXN_OPS", default_value_t = 128)]
    max_txn_ops: usize,
    /// Minimum interval a client should wait before pinging (accepted for etcd
    /// compatibility; not enforced).
    #[arg(long, env = "T4_GRPC_KEEPALIVE_MIN_TIME", default_value = "5s", value_parser = parse_duration)]
    grpc_keepalive_min_time: Duration,
    /// How often the server pings an idle client connection.
    #[arg(long, env = "T4_GRPC_KEEPALIVE_INTERVAL", default_value = "2h", value_parser = parse_duration)]
    grpc_keepalive_interval: Duration,
    /// How long the server waits for a ping's answer before closing the connection.
    #[arg(long, env = "T4_GRPC_KEEPALIVE_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    grpc_keepalive_timeout: Duration,
    /// Interval of progress notifications for watches that ask for them.
    #[arg(long, env = "T4_WATCH_PROGRESS_NOTIFY_INTERVAL", default_value = "10m", value_parser = parse_duration)]
    watch_progress_notify_interval: Duration,
}

#[cfg(feature = "bench")]
pub use bench::BenchArgs;

/// `t4 bench` needs the `bench` feature (its client library builds with `protoc`).
#[cfg(not(feature = "bench"))]
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    rest: Vec<String>,
}

/// Parses `250ms`, `5s`, `10m`, `2h` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("not a duration: {text:?}"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("unknown unit in {text:?} (use ms, s, m or h)")),
    };
    Ok(Duration::from_secs_f64(seconds))
}

/// Entry point of the `t4` binary; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("t4: cannot start the runtime: {error}");
            return 1;
        }
    };
    match cli.command {
        Command::Run(args) => runtime.block_on(run(args)),
        Command::Bench(args) => runtime.block_on(bench(args)),
    }
}

#[cfg(feature = "bench")]
async fn bench(args: BenchArgs) -> i32 {
    bench::run(args).await
}

#[cfg(not(feature = "bench"))]
async fn bench(_args: BenchArgs) -> i32 {
    eprintln!("t4 bench is not in this build: rebuild with `--features bench` (needs protoc: apt-get install protobuf-compiler)");
    2
}

async fn run(args: RunArgs) -> i32 {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).init();
    let metrics_addr = match args.metrics_addr.as_str() {
        "" | "off" | "none" => None,
        addr => match addr.parse() {
            Ok(addr) => Some(addr),
            Err(error) => {
                eprintln!("t4: --metrics-addr {addr:?}: {error}");
                return 2;
            }
        },
    };
    let mut node = Config::new(&args.data_dir);
    node.request_bytes_max = args.max_request_bytes;
    node.txn_ops_max = args.max_txn_ops;
    let mut config = ServerConfig::new(node, args.listen);
    config.metrics_addr = metrics_addr;
    config.name = args.name;
    config.advertise_client_urls = args.advertise_client_urls;
    config.keepalive =
        Keepalive { min_time: args.grpc_keepalive_min_time, interval: args.grpc_keepalive_interval, timeout: args.grpc_keepalive_timeout };
    config.watch.progress_notify_interval = args.watch_progress_notify_interval;
    tracing::debug!(read_consistency = ?args.read_consistency, "configuration");
    match server::run(config, shutdown_signal()).await {
        Ok(()) => 0,
        Err(error) => {
            tracing::error!(%error, "t4 stopped");
            eprintln!("t4: {error}");
            1
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(terminate) => terminate,
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops t4");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = terminate.recv() => tracing::info!("SIGTERM received"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_etcd_flags() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn the_cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
