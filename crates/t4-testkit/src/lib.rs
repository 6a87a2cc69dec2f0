//! What the integration tests of several crates share: a throwaway certificate authority
//! ([`pki`]), s4 processes ([`s4`]), plain HTTP GETs, a process's memory, fuzz corpus
//! replay, and where the workspace's binaries are.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub mod pki;
pub mod proxy;
pub mod s4;

/// A binary of the workspace (`t4`, `s4`), next to the test binary's directory
/// (`target/<profile>/`). A package's own binary is `env!("CARGO_BIN_EXE_…")`; another
/// package's is built by `cargo test --workspace` (and `cargo nextest run --workspace`),
/// which builds every member's binaries before any test runs.
pub fn binary(name: &str) -> PathBuf {
    let test = std::env::current_exe().expect("the test binary's path");
    let profile = test.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps/<test>");
    let path = profile.join(name);
    assert!(
        path.is_file(),
        "{} is not built: test the workspace (`cargo test --workspace`) or run `cargo build -p {name}` first",
        path.display()
    );
    path
}

/// A plain HTTP GET: (status code, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(addr).await.ok()?;
    socket.write_all(format!("GET {path} HTTP/1.1\r\nHost: t4\r\nConnection: close\r\n\r\n").as_bytes()).await.ok()?;
    let mut response = String::new();
    socket.read_to_string(&mut response).await.ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Some((code, body))
}

/// A process's resident memory, from `/proc/<pid>/status`.
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// Replays every committed input of a fuzz target's corpus (`fuzz/corpus/<target>`)
/// through its body on the stable toolchain; the corpus must hold seeds.
pub fn replay_corpus(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target);
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|error| panic!("{}: {error}", dir.display())) {
        let path = entry.unwrap().path();
        run(&std::fs::read(&path).unwrap());
        inputs += 1;
    }
    assert!(inputs >= 3, "the {target} corpus must hold seed inputs, found {inputs}");
}

/// SIGTERM to a child process (a server then exits cleanly, flushing its output).
pub fn terminate(child: &std::process::Child) {
    let status = std::process::Command::new("kill").arg(child.id().to_string()).status().unwrap();
    assert!(status.success());
}

/// Samples a process's resident memory every `every` until [`RssPeak::grown`] ends it.
pub struct RssPeak {
    baseline: u64,
    peak: std::sync::Arc<std::sync::atomic::AtomicU64>,
    sampler: tokio::task::JoinHandle<()>,
}

impl RssPeak {
    pub fn sample(pid: u32, every: std::time::Duration) -> Self {
        let baseline = rss_bytes(pid);
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(baseline));
        let sampler = tokio::spawn({
            let peak = peak.clone();
            async move {
                loop {
                    peak.fetch_max(rss_bytes(pid), std::sync::atomic::Ordering::Relaxed);
                    tokio::time::sleep(every).await;
                }
            }
        });
        Self { baseline, peak, sampler }
    }

    /// Stops sampling; how far the peak rose above the memory at the start.
    pub fn grown(self) -> u64 {
        self.sampler.abort();
        self.peak.load(std::sync::atomic::Ordering::Relaxed).saturating_sub(self.baseline)
    }
}
