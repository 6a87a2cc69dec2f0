//! Helpers shared by the integration tests.

use std::sync::Arc;

use t4::env::{Env, RealClock, SimDisk};
use t4::{Config, Node};

/// A node on an in-memory crashable disk (the test keeps the disk to crash it).
pub async fn sim_node(disk: &SimDisk) -> t4::Result<Node> {
    let env = Env { clock: Arc::new(RealClock::new()), disk: Arc::new(disk.clone()) };
    Node::open_with_env(Config::new("/unused"), env).await
}

/// A node on a real temporary directory.
pub async fn dir_node(dir: &tempfile::TempDir) -> Node {
    Node::open(Config::new(dir.path())).await.expect("open node")
}
