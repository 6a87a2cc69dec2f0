//! `s4 bench`: an S3 load generator on `aws-sdk-s3`, and the disk's fsync rate to judge it by.
//!
//! - `put`: `--clients` clients each PUT distinct keys of `--size` bytes;
//! - `get`: `--clients` clients GET a prepopulated set of `--key-space` objects;
//! - `fsync`: one writer appends `--size` bytes and `fdatasync`s, in `--dir`: the rate of
//!   one fsync per PUT, which group commit must beat.
//!
//! Every client has its own SDK client (its own connections). SDK retries are off, so an
//! error is counted, not hidden.
#![allow(clippy::disallowed_methods, reason = "a benchmark measures real time")]

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use bytes::Bytes;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Operation {
    Put,
    Get,
    Fsync,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[arg(value_enum)]
    operation: Operation,
    #[arg(long, default_value = "http://127.0.0.1:9000")]
    endpoint: String,
    #[arg(long, env = "S4_ACCESS_KEY_ID")]
    access_key_id: Option<String>,
    #[arg(long, env = "S4_SECRET_ACCESS_KEY", hide_env_values = true)]
    secret_access_key: Option<String>,
    /// Created if missing.
    #[arg(long, default_value = "s4-bench")]
    bucket: String,
    /// Object (or fsync write) size: bytes, or with a KiB/MiB suffix.
    #[arg(long, default_value = "4KiB", value_parser = parse_size)]
    size: usize,
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Requests to send.
    #[arg(long, default_value_t = 2000)]
    total: u64,
    /// Objects read by `get` (written before the clock starts).
    #[arg(long, default_value_t = 100)]
    key_space: u64,
    /// Directory for `fsync` (use the s4 data dir's filesystem).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
    #[arg(long, default_value = "")]
    label: String,
}

fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, ""),
    };
    let number: usize = digits.parse().map_err(|_| format!("not a size: {text:?}"))?;
    let unit = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        _ => return Err(format!("unknown unit in {text:?} (use KiB or MiB)")),
    };
    Ok(number * unit)
}

type BenchError = Box<dyn std::error::Error + Send + Sync>;

/// Runs the benchmark on a fresh runtime; returns the exit code.
pub fn main(args: BenchArgs) -> i32 {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("s4 bench: cannot start the runtime: {error}");
            return 1;
        }
    };
    match runtime.block_on(execute(&args)) {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("s4 bench: {error}");
            1
        }
    }
}

struct Outcome {
    latencies: Vec<Duration>,
    errors: u64,
    first_error: Option<String>,
}

async fn execute(args: &BenchArgs) -> Result<(), BenchError> {
    let clients = if args.operation == Operation::Fsync { 1 } else { args.clients.max(1) };
    let body = Bytes::from(vec![b'x'; args.size]);
    if args.operation == Operation::Fsync {
        let started = Instant::now();
        let outcome = fsync_loop(args, &body)?;
        report(args, clients, started.elapsed(), outcome);
        return Ok(());
    }
    let sdk = client(args)?;
    match sdk.create_bucket().bucket(&args.bucket).send().await {
        Ok(_) => {}
        Err(error) if error.as_service_error().is_some_and(|error| error.is_bucket_already_owned_by_you()) => {}
        Err(error) => return Err(format!("create bucket {}: {}", args.bucket, aws_sdk_s3::error::DisplayErrorContext(error)).into()),
    }
    if args.operation == Operation::Get {
        for index in 0..args.key_space.max(1) {
            sdk.put_object().bucket(&args.bucket).key(get_key(index)).body(ByteStream::from(unique(&body, index))).send().await?;
        }
    }
    // Distinct keys per run, so runs against one bucket do not overwrite each other.
    let run = format!("{:x}", std::process::id());
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (sdk, issued, body, run) = (client(args)?, issued.clone(), body.clone(), run.clone());
        let (operation, bucket, total, key_space) = (args.operation, args.bucket.clone(), args.total, args.key_space.max(1));
        tasks.push(tokio::spawn(async move {
            let mut outcome = Outcome { latencies: Vec::new(), errors: 0, first_error: None };
            loop {
                let index = issued.fetch_add(1, Ordering::Relaxed);
                if index >= total {
                    break;
                }
                let began = Instant::now();
                let result = match operation {
                    Operation::Put => {
                        let key = format!("put/{run}/{index:012}");
                        sdk.put_object()
                            .bucket(&bucket)
                            .key(key)
                            .body(ByteStream::from(unique(&body, index)))
                            .send()
                            .await
                            .map(|_| 0)
                            .map_err(|error| aws_sdk_s3::error::DisplayErrorContext(error).to_string())
                    }
                    _ => match sdk.get_object().bucket(&bucket).key(get_key(index % key_space)).send().await {
                        Ok(output) => output.body.collect().await.map(|bytes| bytes.into_bytes().len()).map_err(|error| error.to_string()),
                        Err(error) => Err(aws_sdk_s3::error::DisplayErrorContext(error).to_string()),
                    },
                };
                match result {
                    Ok(read) if operation == Operation::Get && read != body.len() => {
                        outcome.errors += 1;
                        outcome.first_error.get_or_insert(format!("GET returned {read} bytes, expected {}", body.len()));
                    }
                    Ok(_) => outcome.latencies.push(began.elapsed()),
                    Err(error) => {
                        outcome.errors += 1;
                        outcome.first_error.get_or_insert(error);
                    }
                }
            }
            outcome
        }));
    }
    let mut merged = Outcome { latencies: Vec::new(), errors: 0, first_error: None };
    for task in tasks {
        let outcome = task.await?;
        merged.latencies.extend(outcome.latencies);
        merged.errors += outcome.errors;
        merged.first_error = merged.first_error.or(outcome.first_error);
    }
    report(args, clients, started.elapsed(), merged);
    Ok(())
}

/// `body` with `index` in its first bytes, so that no two PUTs share a body (s4 would
/// store identical bodies once, which would flatter the figures).
/// The process id goes in too, so that runs against one server differ from each other.
fn unique(body: &Bytes, index: u64) -> Bytes {
    let mut bytes = body.to_vec();
    let stamp = [index.to_le_bytes(), u64::from(std::process::id()).to_le_bytes()].concat();
    let n = stamp.len().min(bytes.len());
    bytes[..n].copy_from_slice(&stamp[..n]);
    Bytes::from(bytes)
}

fn get_key(index: u64) -> String {
    format!("get/{index:012}")
}

fn client(args: &BenchArgs) -> Result<Client, BenchError> {
    let (Some(access), Some(secret)) = (&args.access_key_id, &args.secret_access_key) else {
        return Err("set --access-key-id and --secret-access-key (or S4_ACCESS_KEY_ID / S4_SECRET_ACCESS_KEY)".into());
    };
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(access, secret, None, None, "s4-bench"))
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .endpoint_url(&args.endpoint)
        .force_path_style(true)
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
        .build();
    Ok(Client::from_conf(config))
}

/// Appends `body` and syncs its data, `total` times: one fsync per write.
fn fsync_loop(args: &BenchArgs, body: &[u8]) -> Result<Outcome, BenchError> {
    let path = args.dir.join(format!(".s4-bench-fsync-{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new().create_new(true).append(true).open(&path)?;
    let mut outcome = Outcome { latencies: Vec::new(), errors: 0, first_error: None };
    let result = (|| -> std::io::Result<()> {
        for _ in 0..args.total {
            let began = Instant::now();
            file.write_all(body)?;
            file.sync_data()?;
            outcome.latencies.push(began.elapsed());
        }
        Ok(())
    })();
    std::fs::remove_file(&path)?;
    result?;
    Ok(outcome)
}

fn report(args: &BenchArgs, clients: usize, elapsed: Duration, mut outcome: Outcome) {
    outcome.latencies.sort_unstable();
    let done = outcome.latencies.len();
    let percentile = |p: f64| -> f64 {
        if done == 0 {
            return 0.0;
        }
        let at = ((done as f64 * p).ceil() as usize).clamp(1, done) - 1;
        outcome.latencies[at].as_secs_f64() * 1000.0
    };
    let seconds = elapsed.as_secs_f64().max(f64::EPSILON);
    let ops = done as f64 / seconds;
    let mib = ops * args.size as f64 / (1 << 20) as f64;
    let operation = format!("{:?}", args.operation).to_lowercase();
    let (p50, p99) = (percentile(0.50), percentile(0.99));
    match args.output {
        Output::Json => println!(
            "{{\"label\":\"{}\",\"operation\":\"{operation}\",\"size\":{},\"clients\":{clients},\"ops\":{done},\"errors\":{},\"seconds\":{seconds:.3},\"ops_per_sec\":{ops:.1},\"mib_per_sec\":{mib:.1},\"p50_ms\":{p50:.3},\"p99_ms\":{p99:.3}}}",
            args.label, args.size, outcome.errors
        ),
        Output::Text => {
            println!("{operation} {} B x {clients} clients: {done} ok, {} errors in {seconds:.2} s", args.size, outcome.errors);
            println!("  {ops:.0} ops/s, {mib:.1} MiB/s, p50 {p50:.2} ms, p99 {p99:.2} ms");
        }
    }
    if let Some(error) = outcome.first_error {
        eprintln!("s4 bench: first error: {error}");
    }
}
