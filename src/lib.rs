//! t4: an etcd-v3-compatible key-value store, durable on S3-compatible object storage,
//! embeddable as a library (`t4::Node`).
//!
//! The map is `docs/design.md` (how it is built: `docs/architecture.md`): `env` holds the
//! seams, `wal` the log, `mvcc` the revisioned store, `watch` the event hub, and `node`
//! ties them into the embedded API.

pub mod auth;
#[cfg(feature = "cli")]
pub mod cli;
pub mod config;
#[path = "core/mod.rs"]
pub mod core;
pub mod durability;
pub mod election;
pub mod env;
pub mod error;
#[cfg(feature = "server")]
pub mod etcd;
pub mod fuzzing;
#[cfg(any(feature = "server", feature = "s4"))]
pub mod listen;
pub mod metrics;
pub mod mvcc;
pub mod node;
pub mod object;
#[cfg(feature = "planted-bugs")]
pub mod planted;
#[cfg(feature = "s4")]
pub mod s4;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "tls")]
pub mod tls;
pub mod wal;
pub mod watch;

pub use config::Config;
pub use error::{ClosedReason, Error, ErrorKind, Result};
pub use node::{LeaseStatus, Node};
pub use t4_proto as proto;
