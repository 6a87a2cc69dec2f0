//! s4 as a process: [`S4Process`] (plain or TLS, kill -9 and restart on the same data) and
//! [`LimitedS4`] (a low open-files limit and a short header timeout).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct S4Process {
    child: Child,
    pub endpoint: String,
    dir: tempfile::TempDir,
}

pub const ACCESS: &str = "s4-test-access";
pub const SECRET: &str = "s4-test-secret-key";

impl S4Process {
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Self::start_on(tempfile::tempdir().unwrap(), port).await
    }

    pub async fn start_on(dir: tempfile::TempDir, port: u16) -> Self {
        Self::start_with(dir, port, None).await
    }

    /// With `tls`, s4 serves HTTPS with that certificate.
    pub async fn start_with(dir: tempfile::TempDir, port: u16, tls: Option<&crate::pki::Identity>) -> Self {
        let mut command = s4_command(dir.path(), port);
        if let Some(identity) = tls {
            command.env("S4_TLS_CERT", &identity.cert).env("S4_TLS_KEY", &identity.key);
        }
        let child = command.stdout(Stdio::null()).spawn().unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let process = Self { child, endpoint: format!("{scheme}://127.0.0.1:{port}"), dir };
        process.await_up().await;
        process
    }

    async fn await_up(&self) {
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port())).await.is_ok() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("s4 did not come up on {}", self.endpoint);
    }

    /// kill -9, then nothing listens until [`S4Process::restart`].
    pub fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts s4 again on the same port and data dir (plain HTTP).
    pub async fn restart(&mut self) {
        self.kill_9();
        self.child = s4_command(self.dir.path(), self.port()).stdout(Stdio::null()).spawn().unwrap();
        self.await_up().await;
    }

    pub fn port(&self) -> u16 {
        self.endpoint.rsplit(':').next().unwrap().parse().unwrap()
    }
}

/// The `s4` command on `dir` and a loopback port, with the test credentials.
pub fn s4_command(dir: &std::path::Path, port: u16) -> Command {
    let mut command = Command::new(crate::binary("s4"));
    command
        .args(["--bind", &format!("127.0.0.1:{port}"), "--log-level", "warn", "--data-dir"])
        .arg(dir)
        .env("S4_ACCESS_KEY_ID", ACCESS)
        .env("S4_SECRET_ACCESS_KEY", SECRET);
    command
}

impl Drop for S4Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `s4` with a low open-files limit and a short header timeout, on a free port.
pub struct LimitedS4 {
    child: std::process::Child,
    pub addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl LimitedS4 {
    pub async fn start(open_files: u32, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let script = format!(
            "ulimit -n {open_files} && exec {} --bind {addr} --data-dir {} --log-level error --header-read-timeout-sec 2 {extra}",
            crate::binary("s4").display(),
            dir.path().display()
        );
        let child = std::process::Command::new("sh")
            .args(["-c", &script])
            .env("S4_ACCESS_KEY_ID", ACCESS)
            .env("S4_SECRET_ACCESS_KEY", SECRET)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let server = Self { child, addr, _dir: dir };
        for _ in 0..100 {
            if crate::http_get(addr, "/health").await.is_some_and(|(code, _)| code == 200) {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("s4 did not come up on {addr}");
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// The s4 process (the shell `exec`s it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Opens `count` connections that send nothing (as many as the client side can).
    pub async fn idle_connections(&self, count: usize) -> Vec<tokio::net::TcpStream> {
        let mut held = Vec::new();
        for _ in 0..count {
            match tokio::time::timeout(Duration::from_millis(200), tokio::net::TcpStream::connect(self.addr)).await {
                Ok(Ok(stream)) => held.push(stream),
                _ => break,
            }
        }
        held
    }

    /// Waits up to `within` for `/health` to answer 200.
    pub async fn answers_within(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            let attempt = tokio::time::timeout(Duration::from_secs(1), crate::http_get(self.addr, "/health")).await;
            if attempt.ok().flatten().is_some_and(|(code, _)| code == 200) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }
}

impl Drop for LimitedS4 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
