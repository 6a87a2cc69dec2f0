//! An in-process t4 server on a loopback port, for tests with real clients.

use std::net::SocketAddr;
use std::time::Duration;

use t4_server::{self as server, ServerConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct TestServer {
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), server::BoxError>>>,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a server; `adjust` may change its configuration first.
    pub async fn start_with(adjust: impl FnOnce(&mut ServerConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, adjust).await
    }

    pub async fn start_in(dir: tempfile::TempDir, adjust: impl FnOnce(&mut ServerConfig)) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (addr, metrics_addr) = (listener.local_addr().unwrap(), metrics.local_addr().unwrap());
        let mut config = ServerConfig::new(t4::Config::new(dir.path()), addr);
        adjust(&mut config);
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(server::serve(config, listener, Some(metrics), async move {
            let _ = stop.await;
        }));
        let server = Self { addr, metrics_addr, shutdown: Some(shutdown), task: Some(task), dir };
        server.wait_ready().await;
        server
    }

    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits up to 30 s (a store that replays a large WAL at open takes a while).
    async fn wait_ready(&self) {
        for _ in 0..3000 {
            if http_get(self.metrics_addr, "/readyz").await.is_some_and(|(code, _)| code == 200) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("server at {} never became ready", self.addr);
    }

    pub async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([self.endpoint()], None).await.unwrap()
    }

    /// Stops the server cleanly and returns its data directory.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

pub use t4_testkit::http_get;

/// Waits until an etcd v3 endpoint answers Status; false after ~10 s.
pub async fn await_endpoint(endpoint: &str) -> bool {
    for _ in 0..200 {
        if let Ok(mut client) = etcd_client::Client::connect([endpoint.to_string()], None).await {
            if client.status().await.is_ok() {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// A real `t4 run` process on a loopback port (stderr inherited, so failures show).
pub struct T4Process {
    child: std::process::Child,
    pub endpoint: String,
    _dir: Option<tempfile::TempDir>,
}

impl T4Process {
    /// On its own data dir and a free port, with `extra` flags.
    pub async fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut process = Self::start_in(dir.path(), port, extra).await;
        process._dir = Some(dir);
        process
    }

    /// On `data_dir` and `port` (a restart reuses both).
    pub async fn start_in(data_dir: &std::path::Path, port: u16, extra: &[&str]) -> Self {
        let endpoint = format!("127.0.0.1:{port}");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_t4"))
            .args(["run", "--listen", &endpoint, "--metrics-addr", "off", "--log-level", "warn", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap();
        let process = Self { child, endpoint, _dir: None };
        assert!(await_endpoint(&process.endpoint).await, "t4 did not come up on {}", process.endpoint);
        process
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// How it exited, if it has.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }

    pub fn kill_9(&mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }
}

impl Drop for T4Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
