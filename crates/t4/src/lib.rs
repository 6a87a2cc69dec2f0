//! t4: an etcd-v3-compatible key-value store, durable on S3-compatible object storage,
//! embeddable as a library (`t4::Node`). This crate is the engine alone: the gRPC server
//! is `t4-server`, the binary `t4-cli`, the S3 server `s4`.
//!
//! The map is `docs/design.md` (how it is built: `docs/architecture.md`): [`env`] holds the
//! seams (crate `t4-env`), [`object`] the bucket backends (crate `t4-object`), `wal` the
//! log, `mvcc` the revisioned store, `watch` the event hub, `durability` the log in the
//! bucket, `election` the lock, and `node` ties them into the embedded API; `api` is
//! etcd's semantics above it without gRPC.

/// Whether the planted bug `$bug` (`planted::Bug`) is planted: always false in a build
/// without the `planted-bugs` feature, which only the simulator's tests turn on.
macro_rules! planted_bug {
    ($bug:ident) => {{
        #[cfg(feature = "planted-bugs")]
        let planted = $crate::planted::planted($crate::planted::Bug::$bug);
        #[cfg(not(feature = "planted-bugs"))]
        let planted = false;
        planted
    }};
}

pub mod api;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod durability;
pub mod election;
pub mod error;
pub mod fuzzing;
pub mod mvcc;
pub mod node;
#[cfg(feature = "planted-bugs")]
pub mod planted;
pub mod wal;
pub mod watch;

pub use config::Config;
pub use error::{ClosedReason, Error, ErrorKind, Result};
pub use node::{LeaseStatus, Node};
pub use t4_env as env;
pub use t4_object as object;
pub use t4_proto as proto;
