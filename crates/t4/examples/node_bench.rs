//! Store micro-benchmark through the embedded API: puts/s with N concurrent writers.
//!
//! ```text
//! cargo run --release --no-default-features --example node_bench -- --writers 64 --total 100000
//! ```
//! Writes 256-byte values to distinct keys in a fresh temporary data directory (or
//! `--data-dir`), then prints throughput, latency percentiles and how many fsyncs the group
//! commit needed.
#![allow(clippy::disallowed_methods, reason = "a benchmark measures real time")]

use std::time::{Duration, Instant};

struct Args {
    writers: usize,
    total: usize,
    value_bytes: usize,
    data_dir: Option<String>,
}

fn parse() -> Args {
    let mut args = Args { writers: 1, total: 20_000, value_bytes: 256, data_dir: None };
    let mut iter = std::env::args().skip(1);
    while let Some(flag) = iter.next() {
        let value = iter.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--writers" => args.writers = value.parse().expect("--writers takes a number"),
            "--total" => args.total = value.parse().expect("--total takes a number"),
            "--value-bytes" => args.value_bytes = value.parse().expect("--value-bytes takes a number"),
            "--data-dir" => args.data_dir = Some(value),
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    sorted[((sorted.len() as f64 * fraction) as usize).min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = parse();
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = args.data_dir.clone().map_or_else(|| temp.path().to_path_buf(), Into::into);
    let node = t4::Node::open(t4::Config::new(&dir)).await.expect("open node");
    let per_writer = args.total / args.writers;
    let value = vec![b'v'; args.value_bytes];
    let started = Instant::now();
    let mut tasks = Vec::new();
    for writer in 0..args.writers {
        let (node, value) = (node.clone(), value.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_writer);
            for index in 0..per_writer {
                let began = Instant::now();
                node.put(format!("/bench/{writer:04}/{index:08}"), value.clone()).await.expect("put");
                latencies.push(began.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("writer"));
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let stats = node.stats();
    let puts = latencies.len();
    println!(
        "writers {:>3}  puts {:>7}  {:>9.0} puts/s  p50 {:>7.3} ms  p99 {:>7.3} ms  fsyncs {:>6} ({:.1} puts/fsync, {:.0} us avg)",
        args.writers,
        puts,
        puts as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        stats.wal_syncs,
        puts as f64 / stats.wal_syncs.max(1) as f64,
        stats.wal_sync_micros as f64 / stats.wal_syncs.max(1) as f64,
    );
    node.close().await.expect("close");
}
