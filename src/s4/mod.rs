//! s4: an S3-compatible object server (docs/design.md §6).
//!
//! [`engine::Engine`] is the storage below the S3 API: bodies in append-only volume files,
//! metadata in redb, group-committed fsyncs before any success, conditional writes
//! evaluated and committed in one metadata transaction, versioning, multipart uploads,
//! lifecycle expiry, dedup and compaction. `service` maps the S3 API (through s3s) onto it;
//! `server` is the `s4` binary and `bench` its load generator.

#[cfg(all(feature = "s4", feature = "s3"))]
pub mod bench;
pub mod engine;
mod meta;
#[doc(hidden)]
pub use meta::fuzz_records as fuzz_metadata_records;
#[cfg(feature = "s4")]
pub mod server;
#[cfg(feature = "s4")]
pub mod service;
mod volume;
