//! s4: an S3-compatible object server (docs/design.md §6), standing alone: it shares the
//! seams (`t4-env`) and the network helpers (`t4-net`) with t4 and nothing else.
//!
//! [`engine::Engine`] is the storage below the S3 API: bodies in append-only volume files,
//! metadata in redb, group-committed fsyncs before any success, conditional writes
//! evaluated and committed in one metadata transaction, versioning, multipart uploads,
//! lifecycle expiry, dedup and compaction. `service` maps the S3 API (through s3s) onto it;
//! `server` is the `s4` binary and `bench` (feature `bench`) its load generator.

#[cfg(feature = "bench")]
pub mod bench;
pub mod engine;
#[doc(hidden)]
pub mod fuzzing;
mod meta;
pub mod server;
pub mod service;
mod volume;
