//! A real etcd 3.4 process on loopback ports with its own data directory.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};

use crate::server::await_endpoint;

pub struct EtcdProcess {
    child: Child,
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl EtcdProcess {
    /// Starts etcd; panics (a failing test, never a skip) when it is not installed.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts etcd with extra flags.
    pub async fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (client, peer) = (free_port(), free_port());
        let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
        let child = Command::new("etcd")
            .args(["--name", "diff", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &format!("http://127.0.0.1:{client}")])
            .args(["--advertise-client-urls", &format!("http://127.0.0.1:{client}")])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args(["--initial-cluster", &format!("diff=http://127.0.0.1:{peer}")])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start etcd ({error}): scripts/test.sh installs etcd-server 3.4"));
        let process = Self { child, endpoint: format!("127.0.0.1:{client}"), _dir: dir };
        assert!(await_endpoint(&process.endpoint).await, "etcd at {} did not come up", process.endpoint);
        process
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.endpoint)
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
