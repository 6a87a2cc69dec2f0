//! `t4 bench`: an etcd v3 load generator on the `etcd-client` crate, so t4 and a real etcd
//! are measured by the same client. Workloads:
//!
//! - `seq-put` / `seq-get`: one client, one request at a time;
//! - `par-put` / `par-get`: `--clients` clients, each with its own connection;
//! - `mixed`: `--clients` clients alternating put and get;
//! - `watch`: `--watchers` watchers on one prefix while one client puts; reports the delay
//!   from the put's send to each watcher's receipt of the event;
//! - `first-ack`: after a fault the caller made at `--since-unix-ns` (e.g. killed a
//!   cluster's leader), puts through each of `--endpoints` in turn until one is
//!   acknowledged; reports the time from the fault to that acknowledgement (failover).
//!
//! Puts write distinct keys of `--key-size` bytes with `--val-size`-byte values; gets read a
//! prepopulated key space of `--key-space` keys (linearizable reads).
#![allow(clippy::disallowed_methods, reason = "a benchmark measures real time")]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use etcd_client::{Client, WatchOptions};
use futures::StreamExt;

use crate::cli::parse_duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    SeqPut,
    ParPut,
    SeqGet,
    ParGet,
    Mixed,
    Watch,
    FirstAck,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// What to run.
    #[arg(value_enum)]
    workload: Workload,
    /// Endpoints, comma-separated.
    #[arg(long, default_value = "127.0.0.1:3379", value_delimiter = ',')]
    endpoints: Vec<String>,
    /// Concurrent clients (one connection each) for par-* and mixed.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Requests to send (default 10000 unless --duration is given).
    #[arg(long)]
    total: Option<u64>,
    /// Run for this long instead of a request count (e.g. 10s).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    #[arg(long, default_value_t = 32)]
    key_size: usize,
    #[arg(long, default_value_t = 256)]
    val_size: usize,
    /// Keys read by get workloads (written before the clock starts).
    #[arg(long, default_value_t = 1000)]
    key_space: u64,
    /// Watchers for the watch workload.
    #[arg(long, default_value_t = 16)]
    watchers: usize,
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
    /// A label printed with the result (e.g. "t4" or "etcd").
    #[arg(long, default_value = "")]
    label: String,
    /// first-ack: when the fault happened (Unix time in ns; default: now).
    #[arg(long)]
    since_unix_ns: Option<u128>,
    /// first-ack: give up after this long (e.g. 30s).
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    give_up_after: Duration,
    /// first-ack: how long one attempt may take before the next endpoint is tried.
    #[arg(long, value_parser = parse_duration, default_value = "500ms")]
    attempt_timeout: Duration,
}

/// When to stop issuing requests.
#[derive(Clone, Copy)]
struct Budget {
    total: Option<u64>,
    deadline: Option<Instant>,
}

impl Budget {
    fn take(&self, issued: &AtomicU64) -> Option<u64> {
        if self.deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            return None;
        }
        let index = issued.fetch_add(1, Ordering::Relaxed);
        if self.total.is_some_and(|total| index >= total) {
            return None;
        }
        Some(index)
    }
}

struct Outcome {
    latencies: Vec<Duration>,
    errors: u64,
}

pub async fn run(args: BenchArgs) -> i32 {
    match execute(&args).await {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("t4 bench: {error}");
            1
        }
    }
}

async fn execute(args: &BenchArgs) -> Result<(), etcd_client::Error> {
    if args.workload == Workload::FirstAck {
        return first_ack(args).await;
    }
    let total = match (args.total, args.duration) {
        (None, None) => Some(10_000),
        (total, _) => total,
    };
    let clients = match args.workload {
        Workload::SeqPut | Workload::SeqGet => 1,
        _ => args.clients.max(1),
    };
    if matches!(args.workload, Workload::SeqGet | Workload::ParGet | Workload::Mixed) {
        populate(args).await?;
    }
    let started = Instant::now();
    let budget = Budget { total, deadline: args.duration.map(|duration| started + duration) };
    let outcome = match args.workload {
        Workload::Watch => watch(args, budget).await?,
        workload => load(args, workload, clients, budget).await?,
    };
    report(args, clients, started.elapsed(), outcome);
    Ok(())
}

fn key(args: &BenchArgs, prefix: &str, index: u64) -> Vec<u8> {
    let mut key = format!("{prefix}{index:020}").into_bytes();
    key.resize(args.key_size.max(prefix.len() + 20), b'_');
    key
}

async fn populate(args: &BenchArgs) -> Result<(), etcd_client::Error> {
    let mut client = Client::connect(&args.endpoints, None).await?;
    for index in 0..args.key_space {
        client.put(key(args, "bench/get/", index), vec![b'v'; args.val_size], None).await?;
    }
    Ok(())
}

async fn load(args: &BenchArgs, workload: Workload, clients: usize, budget: Budget) -> Result<Outcome, etcd_client::Error> {
    let issued = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let mut client = Client::connect(&args.endpoints, None).await?;
        let issued = issued.clone();
        let (value, key_space) = (vec![b'v'; args.val_size], args.key_space.max(1));
        let put_keys: Vec<u8> = key(args, "bench/put/", 0);
        let key_size = put_keys.len();
        tasks.push(tokio::spawn(async move {
            let mut outcome = Outcome { latencies: Vec::new(), errors: 0 };
            while let Some(index) = budget.take(&issued) {
                let put = match workload {
                    Workload::SeqPut | Workload::ParPut => true,
                    Workload::Mixed => index % 2 == 0,
                    _ => false,
                };
                let began = Instant::now();
                let result = if put {
                    let mut key = format!("bench/put/{index:020}").into_bytes();
                    key.resize(key_size, b'_');
                    client.put(key, value.clone(), None).await.map(|_| ())
                } else {
                    let mut key = format!("bench/get/{:020}", index % key_space).into_bytes();
                    key.resize(key_size, b'_');
                    client.get(key, None).await.map(|_| ())
                };
                match result {
                    Ok(()) => outcome.latencies.push(began.elapsed()),
                    Err(_) => outcome.errors += 1,
                }
            }
            outcome
        }));
    }
    let mut merged = Outcome { latencies: Vec::new(), errors: 0 };
    for task in tasks {
        let outcome = task.await.expect("bench worker panicked");
        merged.latencies.extend(outcome.latencies);
        merged.errors += outcome.errors;
    }
    Ok(merged)
}

/// One writer, many watchers: latency from the put's send to each watcher's receipt.
async fn watch(args: &BenchArgs, budget: Budget) -> Result<Outcome, etcd_client::Error> {
    let origin = Instant::now();
    let prefix = format!("bench/watch/{}/", origin.elapsed().as_nanos());
    let mut receivers = Vec::new();
    let mut watchers = Vec::new();
    for _ in 0..args.watchers.max(1) {
        let mut client = Client::connect(&args.endpoints, None).await?;
        let (watcher, mut stream) = client.watch(prefix.clone(), Some(WatchOptions::new().with_prefix())).await?;
        watchers.push((client, watcher));
        receivers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while let Some(Ok(response)) = stream.next().await {
                for event in response.events() {
                    let Some(kv) = event.kv() else { continue };
                    let value = kv.value();
                    if value.len() < 9 {
                        continue;
                    }
                    let sent = u64::from_le_bytes(value[..8].try_into().expect("8 bytes"));
                    latencies.push(origin.elapsed().saturating_sub(Duration::from_nanos(sent)));
                    if value[8] == b'!' {
                        return latencies;
                    }
                }
            }
            latencies
        }));
    }
    let mut writer = Client::connect(&args.endpoints, None).await?;
    let issued = AtomicU64::new(0);
    let mut errors = 0;
    let mut last = None;
    while let Some(index) = budget.take(&issued) {
        last = Some(index);
        errors += u64::from(writer.put(key(args, &prefix, index), watch_value(args, origin, false), None).await.is_err());
    }
    // A last event tells watchers to stop.
    writer.put(key(args, &prefix, last.map_or(0, |last| last + 1)), watch_value(args, origin, true), None).await?;
    let mut latencies = Vec::new();
    for receiver in receivers {
        latencies.extend(receiver.await.expect("watch receiver panicked"));
    }
    drop(watchers);
    Ok(Outcome { latencies, errors })
}

fn watch_value(args: &BenchArgs, origin: Instant, last: bool) -> Vec<u8> {
    let mut value = (origin.elapsed().as_nanos() as u64).to_le_bytes().to_vec();
    value.push(if last { b'!' } else { b'.' });
    value.resize(args.val_size.max(9), b'w');
    value
}

/// Puts through each endpoint in turn (a connection of its own per endpoint, each attempt
/// bounded) until one is acknowledged; prints the time since the fault.
async fn first_ack(args: &BenchArgs) -> Result<(), etcd_client::Error> {
    let now_ns = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_nanos();
    let since = args.since_unix_ns.unwrap_or_else(now_ns);
    let started = Instant::now();
    let options = || etcd_client::ConnectOptions::new().with_connect_timeout(args.attempt_timeout).with_timeout(args.attempt_timeout);
    let mut clients: Vec<Option<Client>> = args.endpoints.iter().map(|_| None).collect();
    let (mut attempts, mut through) = (0u64, None);
    'trying: while started.elapsed() < args.give_up_after {
        for (endpoint, client) in args.endpoints.iter().zip(clients.iter_mut()) {
            attempts += 1;
            if client.is_none() {
                *client = Client::connect([endpoint.as_str()], Some(options())).await.ok();
            }
            let Some(connected) = client else { continue };
            let key = format!("bench/first-ack/{since}");
            if connected.put(key, vec![b'v'; args.val_size], None).await.is_ok() {
                through = Some(endpoint.clone());
                break 'trying;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let Some(endpoint) = through else {
        return Err(etcd_client::Error::InvalidArgs(format!("no put acknowledged within {:?}", args.give_up_after)));
    };
    let ms = now_ns().saturating_sub(since) as f64 / 1e6;
    match args.output {
        Output::Text => println!("{:<6} first-ack {ms:.1}ms attempts={attempts} through={endpoint}", args.label),
        Output::Json => println!(
            "{{\"label\":\"{}\",\"workload\":\"first-ack\",\"first_ack_ms\":{ms:.1},\"attempts\":{attempts},\"through\":\"{endpoint}\"}}",
            args.label
        ),
    }
    Ok(())
}

fn percentile(sorted: &[Duration], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 * fraction) as usize).min(sorted.len() - 1)].as_secs_f64() * 1e3
}

fn report(args: &BenchArgs, clients: usize, elapsed: Duration, mut outcome: Outcome) {
    outcome.latencies.sort_unstable();
    let ops = outcome.latencies.len();
    let rate = ops as f64 / elapsed.as_secs_f64().max(1e-9);
    let workload = args.workload.to_possible_value().map(|value| value.get_name().to_string()).unwrap_or_default();
    let (p50, p99, p999) =
        (percentile(&outcome.latencies, 0.5), percentile(&outcome.latencies, 0.99), percentile(&outcome.latencies, 0.999));
    let endpoints = args.endpoints.join(",");
    match args.output {
        Output::Text => println!(
            "{:<6} {workload:<8} clients={clients:<3} ops={ops:<7} errors={} secs={:.2} ops/s={rate:.0} p50={p50:.3}ms p99={p99:.3}ms p999={p999:.3}ms endpoints={endpoints}",
            args.label, outcome.errors, elapsed.as_secs_f64()
        ),
        Output::Json => println!(
            "{{\"label\":\"{}\",\"workload\":\"{workload}\",\"clients\":{clients},\"watchers\":{},\"ops\":{ops},\"errors\":{},\"seconds\":{:.3},\"ops_per_sec\":{rate:.1},\"p50_ms\":{p50:.3},\"p99_ms\":{p99:.3},\"p999_ms\":{p999:.3},\"endpoints\":\"{endpoints}\"}}",
            args.label,
            if args.workload == Workload::Watch { args.watchers } else { 0 },
            outcome.errors,
            elapsed.as_secs_f64()
        ),
    }
}
