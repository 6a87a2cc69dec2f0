//! The `t4` command line: `t4 run` (the server) and `t4 bench` (an etcd v3 load generator).
//! Every `run` flag can also come from a `T4_*` environment variable; a flag wins.

#[cfg(feature = "bench")]
use crate::bench;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use t4::config::Config;
use t4::durability::BucketDurability;
use t4_server::{Keepalive, ServerConfig};

#[derive(Debug, Parser)]
#[command(
    name = "t4",
    version,
    about = "t4: an etcd v3 compatible key-value store, durable on local disk and on S3-compatible object storage",
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
    Run(Box<RunArgs>),
    /// Load-test an etcd v3 endpoint (t4 or etcd) and report ops/s and latency percentiles.
    Bench(BenchArgs),
    /// Show what a bucket holds (the lock, each term's log, checkpoints), read-only.
    Status(Box<BucketArgs>),
    /// Delete what no retained checkpoint needs from a bucket: the log below the newest
    /// complete checkpoint, older checkpoints, unreferenced chunks. Meant for a bucket no node
    /// is writing to; safe either way (a checkpoint being written meanwhile may be wasted).
    Gc(Box<GcArgs>),
    /// Restore from a bucket into a new data directory.
    #[command(subcommand)]
    Restore(RestoreCommand),
    /// Look into a data directory or a bucket, offline and read-only.
    Inspect(Box<InspectArgs>),
}

#[derive(Debug, Subcommand)]
enum RestoreCommand {
    /// The newest complete checkpoint (or the one at --checkpoint REVISION) into an empty
    /// --data-dir. `t4 run` on it serves that state; with the same bucket it also catches up
    /// with the log after the checkpoint.
    Checkpoint(Box<RestoreArgs>),
}

#[derive(Debug, clap::Args)]
struct RestoreArgs {
    /// The new data directory (must be empty or absent).
    #[arg(long)]
    data_dir: PathBuf,
    /// Revision of the checkpoint to restore (`t4 status` lists them); default: the newest.
    #[arg(long)]
    checkpoint: Option<u64>,
    #[command(flatten)]
    bucket: BucketArgs,
}

#[derive(Debug, clap::Args)]
struct InspectArgs {
    /// Read this data directory (copied into memory; nothing in it changes) instead of a
    /// bucket.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    bucket: BucketArgs,
    #[command(subcommand)]
    what: InspectCommand,
}

#[derive(Debug, Subcommand)]
enum InspectCommand {
    /// One key, at the newest revision or at --revision.
    Get {
        key: String,
        #[arg(long)]
        revision: Option<i64>,
    },
    /// Keys under a prefix (every key without one), with their revisions and value sizes.
    List {
        #[arg(default_value = "")]
        prefix: String,
        #[arg(long)]
        revision: Option<i64>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Every change of one key still held (above the compaction point), oldest first.
    History { key: String },
    /// Where the store stands: revision, compaction point, log index, what was read.
    Meta,
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
    /// Address of the etcd v3 gRPC API. Loopback by default, as etcd's; serving another
    /// address without TLS and auth logs a warning at start.
    #[arg(long, env = "T4_LISTEN", default_value = "127.0.0.1:3379")]
    listen: SocketAddr,
    /// Address of /metrics, /healthz and /readyz ("off" disables it). Loopback by default:
    /// it has no authentication.
    #[arg(long, env = "T4_METRICS_ADDR", default_value = "127.0.0.1:9090")]
    metrics_addr: String,
    /// Log filter: error, warn, info, debug, trace, or a tracing directive.
    #[arg(long, env = "T4_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// What a read that does not ask for `serializable` gets in a cluster: linearizable
    /// (etcd's default; the leader serves it within its lease, a follower answers "not
    /// leader" with the leader's URL) or serializable (every member serves every read from
    /// its own state, which may lag the leader). A single node serves both from its durable
    /// revision: both are linearizable there.
    #[arg(long, env = "T4_READ_CONSISTENCY", value_enum, default_value = "linearizable")]
    read_consistency: ReadConsistency,
    /// Member name reported by MemberList (a cluster member reports its --node-id).
    #[arg(long, env = "T4_NAME", default_value = "default")]
    name: String,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Client URLs reported by MemberList (default: http://<listen>).
    #[arg(long, env = "T4_ADVERTISE_CLIENT_URLS", value_delimiter = ',')]
    advertise_client_urls: Vec<String>,
    /// Largest request accepted, in bytes (etcd's --max-request-bytes).
    #[arg(long, env = "T4_MAX_REQUEST_BYTES", default_value_t = 1536 * 1024)]
    max_request_bytes: usize,
    /// Most operations in one txn (etcd's --max-txn-ops).
    #[arg(long, env = "T4_MAX_TXN_OPS", default_value_t = 128)]
    max_txn_ops: usize,
    /// etcd's space quota: once the store would pass it the NOSPACE alarm is raised and
    /// writes that take space are refused until it is disarmed (0: the default, 8 GiB;
    /// negative: no quota).
    #[arg(long, env = "T4_QUOTA_BACKEND_BYTES", default_value_t = 0, allow_negative_numbers = true)]
    quota_backend_bytes: i64,
    /// Most bytes of keys and values one Range answer may carry; a larger one is refused
    /// (ResourceExhausted): page through it with a limit.
    #[arg(long, env = "T4_MAX_RESPONSE_BYTES", default_value_t = t4::mvcc::RESPONSE_BYTES_MAX)]
    max_response_bytes: usize,
    /// Most concurrent gRPC streams on one client connection (etcd's --max-concurrent-streams).
    #[arg(long, env = "T4_MAX_CONCURRENT_STREAMS", default_value_t = t4_server::DEFAULT_STREAMS_MAX)]
    max_concurrent_streams: u32,
    /// Most client connections at once; further ones wait to be accepted.
    #[arg(long, env = "T4_MAX_CLIENT_CONNECTIONS", default_value_t = t4_server::DEFAULT_CONNECTIONS_MAX)]
    max_client_connections: usize,
    /// Minimum interval a client should wait between pings; a client that pings more
    /// often is sent GOAWAY `too_many_pings` and disconnected, as by etcd (0: any rate).
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
    /// Serve the client port over TLS with this certificate chain (PEM, leaf first).
    #[arg(long, env = "T4_CLIENT_TLS_CERT", requires = "client_tls_key")]
    client_tls_cert: Option<PathBuf>,
    /// The private key of --client-tls-cert (PEM).
    #[arg(long, env = "T4_CLIENT_TLS_KEY", requires = "client_tls_cert")]
    client_tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM): mutual TLS.
    #[arg(long, env = "T4_CLIENT_TLS_CA", requires = "client_tls_cert")]
    client_tls_ca: Option<PathBuf>,
    /// The CA that signs every node's peer certificate (mutual TLS 1.3 on the peer port and
    /// on the calls to peers). The three --peer-tls flags go together; with them the
    /// advertised peer URL is https.
    #[arg(long, env = "T4_PEER_TLS_CA", requires_all = ["peer_tls_cert", "peer_tls_key"])]
    peer_tls_ca: Option<PathBuf>,
    /// This node's peer certificate chain (PEM, leaf first), signed by --peer-tls-ca.
    #[arg(long, env = "T4_PEER_TLS_CERT", requires_all = ["peer_tls_ca", "peer_tls_key"])]
    peer_tls_cert: Option<PathBuf>,
    /// The private key of --peer-tls-cert (PEM).
    #[arg(long, env = "T4_PEER_TLS_KEY", requires_all = ["peer_tls_ca", "peer_tls_cert"])]
    peer_tls_key: Option<PathBuf>,
    /// Turn authentication on at start (as `etcdctl user add root` then `auth enable`):
    /// creates the root user if there is none, with --root-password.
    #[arg(long, env = "T4_AUTH_ENABLED")]
    auth_enabled: bool,
    /// The root user's password, used only to create it (--auth-enabled).
    #[arg(long, env = "T4_ROOT_PASSWORD", hide_env_values = true)]
    root_password: Option<String>,
    /// How long an auth token lives after its last use (etcd's simple tokens: 5 minutes).
    #[arg(long, env = "T4_TOKEN_TTL", default_value = "300s", value_parser = parse_duration)]
    token_ttl: Duration,
    #[command(flatten)]
    bucket: BucketArgs,
    #[command(flatten)]
    log: LogArgs,
}

/// A cluster: several nodes on one bucket and prefix (docs/clustering.md).
#[derive(Debug, clap::Args)]
struct ClusterArgs {
    /// Run as a member of the cluster on --s3-bucket/--s3-prefix (or --object-dir), serving
    /// the peer protocol on this address. Without it the node runs alone.
    #[arg(long, env = "T4_PEER_LISTEN")]
    peer_listen: Option<SocketAddr>,
    /// This node's id in the cluster: unique, kept across restarts (its etcd member id
    /// derives from it). Default: the host name.
    #[arg(long, env = "T4_NODE_ID")]
    node_id: Option<String>,
    /// The address (host:port or URL) peers reach the peer port at. Default: --peer-listen.
    #[arg(long, env = "T4_ADVERTISE_PEER")]
    advertise_peer: Option<String>,
    /// Whose durable copy a write waits for before it is acknowledged: quorum (a majority of
    /// the voters recorded in the bucket, the leader counting itself; loses nothing a
    /// majority survives), all (every voter; one voter down stops writes), none (the leader
    /// alone; a write not yet on a follower is lost with the leader's disk or a takeover).
    #[arg(long, env = "T4_FOLLOWER_WAIT_MODE", default_value = "quorum", value_parser = parse_wait_mode)]
    follower_wait_mode: t4::cluster::WaitMode,
    /// The leader's lease on the bucket's lock, in ms: it renews every third of it and stops
    /// acknowledging writes and serving linearizable reads when the lease, counted from the
    /// last landed renewal's send time, has run out. Another member takes over only after
    /// the lock stayed unchanged for the lease plus --max-clock-drift-ms on its own clock,
    /// so failover takes about 1.1-1.5 leases.
    #[arg(long, env = "T4_LEADER_LEASE_MS", default_value_t = 5000)]
    leader_lease_ms: u64,
    /// The most two members' clocks may run apart in rate over one lease, in ms (below half
    /// the lease). The leader gives up its lease this much early; a taker waits this much
    /// longer.
    #[arg(long, env = "T4_MAX_CLOCK_DRIFT_MS", default_value_t = 500)]
    max_clock_drift_ms: u64,
    /// Accepted for T4's command lines; superseded: a leader here re-reads nothing on a
    /// schedule, it renews the lock every --leader-lease-ms / 3 and stops when a renewal
    /// does not land within the lease.
    #[arg(long, env = "T4_LEADER_WATCH_INTERVAL_SEC", default_value_t = 300)]
    leader_watch_interval_sec: u64,
    /// Accepted for T4's command lines; superseded: a follower takes over after the lease
    /// (--leader-lease-ms plus --max-clock-drift-ms) without counting failed streams.
    #[arg(long, env = "T4_FOLLOWER_MAX_RETRIES", default_value_t = 5)]
    follower_max_retries: u32,
}

fn parse_wait_mode(text: &str) -> Result<t4::cluster::WaitMode, String> {
    text.parse()
}

/// The host name (the default --node-id).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "t4".into())
}

/// A peer URL from --advertise-peer (or --peer-listen): an address gets the scheme the peer
/// port speaks.
fn peer_url(advertised: &str, tls: bool) -> String {
    if advertised.contains("://") {
        advertised.to_string()
    } else {
        format!("{}://{advertised}", if tls { "https" } else { "http" })
    }
}

/// The log's segments, its upload in the background, checkpoints and what GC keeps.
#[derive(Debug, clap::Args)]
struct LogArgs {
    /// Take a checkpoint this many minutes after the last one, if anything was written
    /// since (0: never by time).
    #[arg(long = "checkpoint-interval-min", env = "T4_CHECKPOINT_INTERVAL_MIN", default_value_t = 15)]
    checkpoint_interval_minutes: u64,
    /// Also take one after this many log records since the last one (0: never by count).
    #[arg(long, env = "T4_CHECKPOINT_ENTRIES", default_value_t = 0)]
    checkpoint_entries: u64,
    /// Complete checkpoints GC keeps (at least 1); the log below the newest one and chunks
    /// no kept checkpoint lists are deleted.
    #[arg(long, env = "T4_CHECKPOINT_RETAIN", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    checkpoint_retain: u64,
    /// Size at which the local WAL starts a new segment file.
    #[arg(long, env = "T4_SEGMENT_MAX_SIZE_MB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    segment_max_size_mb: u64,
    /// With --wal-sync-upload=false: the most acknowledged history (in seconds of writes)
    /// the bucket may lack; writes wait when the upload falls further behind.
    #[arg(long, env = "T4_SEGMENT_MAX_AGE_SEC", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    segment_max_age_sec: u64,
}

#[derive(Debug, clap::Args)]
struct GcArgs {
    #[command(flatten)]
    bucket: BucketArgs,
    /// Complete checkpoints to keep (at least 1).
    #[arg(long, env = "T4_CHECKPOINT_RETAIN", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    checkpoint_retain: u64,
}

/// Where the log is kept besides the local disk.
#[derive(Debug, clap::Args)]
struct BucketArgs {
    /// Keep the log in this S3 bucket (a write is acknowledged once it is there).
    #[arg(long, env = "T4_S3_BUCKET", conflicts_with = "object_dir")]
    s3_bucket: Option<String>,
    /// Prefix of every object t4 writes (e.g. `t4/`); several nodes or clusters can share a
    /// bucket under different prefixes.
    #[arg(long, env = "T4_S3_PREFIX", default_value = "")]
    s3_prefix: String,
    /// S3 endpoint (e.g. http://127.0.0.1:9000 for s4); default: AWS for --s3-region.
    #[arg(long, env = "T4_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    #[arg(long, env = "T4_S3_REGION", default_value = "us-east-1")]
    s3_region: String,
    /// Static access key (with the secret key; else the credential chain, see --s3-profile).
    #[arg(long, env = "T4_S3_ACCESS_KEY_ID")]
    s3_access_key_id: Option<String>,
    /// Static secret key.
    #[arg(long, env = "T4_S3_SECRET_ACCESS_KEY", hide_env_values = true)]
    s3_secret_access_key: Option<String>,
    /// Use only this profile of ~/.aws/config and ~/.aws/credentials (keys, role_arn,
    /// credential_process, SSO, web identity). Without keys or a profile: the AWS credential
    /// chain (environment, AWS_PROFILE or `default`, web identity, container, EC2 metadata).
    #[arg(long, env = "T4_S3_PROFILE")]
    s3_profile: Option<String>,
    /// An extra CA certificate (PEM) to trust for an https:// endpoint (an s4 with a
    /// private certificate).
    #[arg(long, env = "T4_S3_CA_FILE")]
    s3_ca_file: Option<PathBuf>,
    /// Keep the log in a directory instead (local or shared storage; conditional writes
    /// need a filesystem that honours flock and link).
    #[arg(long, env = "T4_OBJECT_DIR")]
    object_dir: Option<PathBuf>,
    /// Acknowledge a write only once its batch is in the bucket. `false`: once it is fsynced
    /// locally; the upload follows in the background (see --segment-max-age-sec, and
    /// docs/durability.md for what a lost disk can then take).
    #[arg(long, env = "T4_WAL_SYNC_UPLOAD", default_value_t = true, action = clap::ArgAction::Set)]
    wal_sync_upload: bool,
}

impl BucketArgs {
    /// The object store the flags name, or `None` for local disk only.
    async fn object_store(&self) -> Result<Option<std::sync::Arc<dyn t4::env::ObjectStore>>, String> {
        if let Some(dir) = &self.object_dir {
            let store = t4::object::FsObjectStore::new(dir).map_err(|error| format!("--object-dir {}: {error}", dir.display()))?;
            return Ok(Some(std::sync::Arc::new(store)));
        }
        let Some(bucket) = &self.s3_bucket else { return Ok(None) };
        self.s3_store(bucket).await.map(Some)
    }

    async fn s3_store(&self, bucket: &str) -> Result<std::sync::Arc<dyn t4::env::ObjectStore>, String> {
        let credentials = t4::object::S3Credentials::from_flags(
            self.s3_access_key_id.clone(),
            self.s3_secret_access_key.clone(),
            self.s3_profile.clone(),
        )?;
        let ca_certificate_pem = match &self.s3_ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|error| format!("--s3-ca-file {}: {error}", path.display()))?),
            None => None,
        };
        let config = t4::object::S3Config {
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            bucket: bucket.to_string(),
            prefix: self.s3_prefix.clone(),
            credentials,
            ca_certificate_pem,
        };
        let store = t4::object::S3ObjectStore::connect(config).await.map_err(|error| error.to_string())?;
        Ok(std::sync::Arc::new(store))
    }
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
        Command::Run(args) => runtime.block_on(run(*args)),
        Command::Bench(args) => runtime.block_on(bench(args)),
        Command::Status(args) => runtime.block_on(status(*args)),
        Command::Gc(args) => runtime.block_on(gc(*args)),
        Command::Restore(RestoreCommand::Checkpoint(args)) => runtime.block_on(restore_checkpoint(*args)),
        Command::Inspect(args) => runtime.block_on(inspect(*args)),
    }
}

async fn restore_checkpoint(args: RestoreArgs) -> i32 {
    let store = match required_bucket(&args.bucket, "t4 restore checkpoint").await {
        Ok(store) => store,
        Err(code) => return code,
    };
    match t4::durability::inspect::restore_checkpoint(&store, &args.data_dir, args.checkpoint).await {
        Ok(manifest) => {
            println!(
                "restored the checkpoint at revision {} (log index {}, {} entries, compacted at {}) into {}",
                manifest.position.revision,
                manifest.position.index,
                manifest.entries,
                manifest.position.compact_revision,
                args.data_dir.display()
            );
            0
        }
        Err(error) => {
            eprintln!("t4 restore checkpoint: {error}");
            1
        }
    }
}

fn show_kv(kv: &t4_proto::mvccpb::KeyValue) -> String {
    let value = String::from_utf8(kv.value.clone()).unwrap_or_else(|_| format!("<{} bytes, not UTF-8>", kv.value.len()));
    format!(
        "{}\n  value: {value}\n  create_revision: {}  mod_revision: {}  version: {}  lease: {}",
        String::from_utf8_lossy(&kv.key),
        kv.create_revision,
        kv.mod_revision,
        kv.version,
        kv.lease
    )
}

async fn inspect(args: InspectArgs) -> i32 {
    let opened = match &args.data_dir {
        Some(dir) => {
            let dir = dir.clone();
            t4::env::blocking(move || t4::durability::inspect::open_data_dir(&dir)).await
        }
        None => match required_bucket(&args.bucket, "t4 inspect (without --data-dir)").await {
            Ok(store) => t4::durability::inspect::open_bucket(&store).await,
            Err(code) => return code,
        },
    };
    let inspected = match opened {
        Ok(inspected) => inspected,
        Err(error) => {
            eprintln!("t4 inspect: {error}");
            return 1;
        }
    };
    let outcome = match args.what {
        InspectCommand::Get { key, revision } => inspected.get(key.as_bytes(), revision).map(|kv| match kv {
            Some(kv) => println!("{}", show_kv(&kv)),
            None => println!("{key}: not found"),
        }),
        InspectCommand::List { prefix, revision, limit } => inspected.list(prefix.as_bytes(), revision, limit).map(|(kvs, count)| {
            for kv in &kvs {
                println!("{}  mod_revision {}  {} bytes", String::from_utf8_lossy(&kv.key), kv.mod_revision, kv.value.len());
            }
            println!("{} of {count} key(s)", kvs.len());
        }),
        InspectCommand::History { key } => inspected.history(key.as_bytes()).map(|changes| {
            for kv in &changes {
                if kv.version == 0 {
                    println!("revision {}: deleted", kv.mod_revision);
                } else {
                    println!("revision {}: {}", kv.mod_revision, show_kv(kv));
                }
            }
            println!("{} change(s) held for {key}", changes.len());
        }),
        InspectCommand::Meta => {
            let position = inspected.position();
            println!("source: {}", inspected.source);
            println!("revision: {}", position.revision);
            println!("compact revision: {}", position.compact_revision);
            println!("log index: {}", position.index);
            Ok(())
        }
    };
    match outcome {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("t4 inspect: {error}");
            1
        }
    }
}

/// The bucket the flags name, for the commands that need one; else the message and the exit
/// code (2).
async fn required_bucket(args: &BucketArgs, command: &str) -> Result<std::sync::Arc<dyn t4::env::ObjectStore>, i32> {
    match args.object_store().await {
        Ok(Some(store)) => Ok(store),
        Ok(None) => {
            eprintln!("{command}: name a bucket (--s3-bucket ...) or a directory (--object-dir)");
            Err(2)
        }
        Err(error) => {
            eprintln!("{command}: {error}");
            Err(2)
        }
    }
}

async fn gc(args: GcArgs) -> i32 {
    let store = match required_bucket(&args.bucket, "t4 gc").await {
        Ok(store) => store,
        Err(code) => return code,
    };
    match t4::durability::gc::collect(&store, args.checkpoint_retain as usize, None).await {
        Ok(report) => {
            match report.below_revision {
                None => println!("no complete checkpoint in the bucket: nothing to collect"),
                Some(revision) => println!(
                    "kept {} checkpoint(s), the newest at revision {revision} (log index {}); deleted {} WAL object(s), {} chunk(s), {} manifest(s)",
                    report.checkpoints_kept, report.below_index, report.wal_objects_deleted, report.chunks_deleted, report.manifests_deleted
                ),
            }
            0
        }
        Err(error) => {
            eprintln!("t4 gc: {error}");
            1
        }
    }
}

async fn status(args: BucketArgs) -> i32 {
    let store = match required_bucket(&args, "t4 status").await {
        Ok(store) => store,
        Err(code) => return code,
    };
    match t4::durability::status::status(store.as_ref()).await {
        Ok(status) => {
            print!("{status}");
            0
        }
        Err(error) => {
            eprintln!("t4 status: {error}");
            1
        }
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
    node.response_bytes_max = args.max_response_bytes;
    node.quota_backend_bytes = match args.quota_backend_bytes {
        0 => Some(t4::config::QUOTA_BACKEND_BYTES_DEFAULT),
        bytes if bytes < 0 => None,
        bytes => Some(bytes as u64),
    };
    node.wal_segment_bytes_max = args.log.segment_max_size_mb << 20;
    match args.bucket.object_store().await {
        Ok(None) => {}
        Ok(Some(store)) => {
            let node_name = format!("{}@{}", args.name, args.listen);
            node.bucket = Some(BucketDurability {
                wal_sync_upload: args.bucket.wal_sync_upload,
                checkpoint_interval: Duration::from_secs(args.log.checkpoint_interval_minutes.saturating_mul(60)),
                checkpoint_entries: args.log.checkpoint_entries,
                checkpoint_retain: args.log.checkpoint_retain as usize,
                segment_max_age: Duration::from_secs(args.log.segment_max_age_sec),
                ..BucketDurability::new(store, node_name)
            });
        }
        Err(error) => {
            eprintln!("t4: {error}");
            return 2;
        }
    }
    let mut config = ServerConfig::new(node, args.listen);
    config.metrics_addr = metrics_addr;
    config.name = args.name;
    config.advertise_client_urls = args.advertise_client_urls;
    config.keepalive =
        Keepalive { min_time: args.grpc_keepalive_min_time, interval: args.grpc_keepalive_interval, timeout: args.grpc_keepalive_timeout };
    config.watch.progress_notify_interval = args.watch_progress_notify_interval;
    config.auth_enabled = args.auth_enabled;
    config.root_password = args.root_password;
    config.token_ttl = args.token_ttl;
    config.streams_max = args.max_concurrent_streams;
    config.connections_max = args.max_client_connections;
    if let (Some(cert), Some(key)) = (&args.client_tls_cert, &args.client_tls_key) {
        // gRPC needs HTTP/2: ALPN offers h2 only.
        match t4_net::tls::TlsAcceptor::from_pem_files(cert, key, args.client_tls_ca.as_deref(), &[b"h2"]) {
            Ok(acceptor) => config.client_tls = Some(acceptor),
            Err(error) => {
                eprintln!("t4: client TLS: {error}");
                return 2;
            }
        }
    }
    if let (Some(ca), Some(cert), Some(key)) = (&args.peer_tls_ca, &args.peer_tls_cert, &args.peer_tls_key) {
        match t4_net::tls::PeerTls::from_pem_files(ca, cert, key) {
            Ok(peer_tls) => config.peer_tls = Some(peer_tls),
            Err(error) => {
                eprintln!("t4: peer TLS: {error}");
                return 2;
            }
        }
    }
    if let Some(peer_listen) = args.cluster.peer_listen {
        match cluster_config(&args.cluster, args.listen, args.read_consistency, peer_listen, &config) {
            Ok(cluster) => {
                tracing::info!(node_id = %cluster.node_id, peer_url = %cluster.peer_url, wait_mode = ?cluster.wait_mode,
                    lease = ?cluster.timing.lease, drift = ?cluster.timing.drift, "cluster member");
                config.node.cluster = Some(cluster);
                config.peer_listen = Some(peer_listen);
            }
            Err(error) => {
                eprintln!("t4: {error}");
                return 2;
            }
        }
    } else if args.read_consistency == ReadConsistency::Serializable {
        tracing::info!("--read-consistency serializable: a single node serves every read linearizably anyway");
    }
    warn_if_exposed(&config);
    t4::env::raise_open_files_limit();
    match t4_server::run(config, shutdown_signal()).await {
        Ok(()) => 0,
        Err(error) => {
            tracing::error!(%error, "t4 stopped");
            eprintln!("t4: {error}");
            1
        }
    }
}

/// The cluster half of the node's configuration, from the cluster flags.
fn cluster_config(
    cluster: &ClusterArgs,
    listen: SocketAddr,
    reads: ReadConsistency,
    peer_listen: SocketAddr,
    config: &ServerConfig,
) -> Result<t4::config::ClusterConfig, String> {
    if config.node.bucket.is_none() {
        return Err(
            "--peer-listen: a cluster member needs --s3-bucket (or --object-dir): the lock and the members record live there".into()
        );
    }
    let timing = t4::election::LeaseTiming {
        lease: Duration::from_millis(cluster.leader_lease_ms),
        drift: Duration::from_millis(cluster.max_clock_drift_ms),
    };
    timing.validate().map_err(|error| format!("--leader-lease-ms/--max-clock-drift-ms: {error}"))?;
    let tls = config.peer_tls.is_some();
    let advertised = cluster.advertise_peer.clone().unwrap_or_else(|| peer_listen.to_string());
    if advertised.starts_with("0.0.0.0") || advertised.starts_with("[::]") {
        return Err(format!("the peer URL would be {advertised}, which peers cannot reach: give --advertise-peer"));
    }
    let client_scheme = if config.client_tls.is_some() { "https" } else { "http" };
    let client_url = config.advertise_client_urls.first().cloned().unwrap_or_else(|| format!("{client_scheme}://{listen}"));
    let peer_timing = config.peer_timing;
    let connector = config.peer_tls.as_ref().map(|tls| tls.connector.clone());
    Ok(t4::config::ClusterConfig {
        node_id: cluster.node_id.clone().unwrap_or_else(host_name),
        peer_url: peer_url(&advertised, tls),
        client_url,
        peers: std::sync::Arc::new(t4_server::peer::TonicPeers::new(connector, peer_timing)),
        wait_mode: cluster.follower_wait_mode,
        timing,
        reads: match reads {
            ReadConsistency::Linearizable => t4::config::ReadConsistency::Linearizable,
            ReadConsistency::Serializable => t4::config::ReadConsistency::Serializable,
        },
    })
}

/// Warns at start when a port other than loopback is served without protection: the client
/// port without TLS or without auth, the metrics port at all (it has no authentication).
fn warn_if_exposed(config: &ServerConfig) {
    let listen = config.listen.ip();
    if !listen.is_loopback() && (config.client_tls.is_none() || !config.auth_enabled) {
        tracing::warn!(
            listen = %config.listen,
            tls = config.client_tls.is_some(),
            auth = config.auth_enabled,
            "t4: serving the etcd API on a non-loopback address without both TLS (--client-tls-cert) and auth \
             (--auth-enabled): anyone who can reach it can read and write every key"
        );
    }
    if let Some(metrics) = config.metrics_addr.filter(|addr| !addr.ip().is_loopback()) {
        tracing::warn!(metrics_addr = %metrics, "t4: serving /metrics on a non-loopback address; it has no authentication");
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
