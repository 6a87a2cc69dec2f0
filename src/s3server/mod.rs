//! s4's storage engine and (to come) its S3 protocol layer.
//!
//! Built so far: [`engine::Engine`], the storage below the S3 API: bodies in append-only
//! volume files, metadata in redb, group-committed fsyncs before any success, and
//! conditional writes (`If-None-Match: *`, `If-Match`) evaluated and committed in one
//! metadata transaction. Not built yet: the `s4` binary, the S3 protocol (s3s), SigV4,
//! multipart, versioning, lifecycle and compaction (README, "Not built yet").

pub mod engine;
#[cfg(feature = "s4")]
pub mod server;
#[cfg(feature = "s4")]
pub mod service;
mod volume;
