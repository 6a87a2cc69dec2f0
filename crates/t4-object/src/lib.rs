//! Object store implementations: [`MemObjectStore`], [`FsObjectStore`] (a local or shared
//! directory) and, with the `s3` feature, [`S3ObjectStore`] (aws-sdk-s3, against s4 or
//! AWS); [`RetryingStore`] wraps any of them with backoff and read-back resolution of
//! ambiguous outcomes.
//! [`conformance`] is the one behaviour suite every implementation must pass.

pub mod conformance;
pub mod credentials;
#[cfg(not(madsim))]
mod fs;
pub mod metered;
mod retry;
#[cfg(feature = "s3")]
mod s3;

pub use credentials::S3Credentials;
#[cfg(not(madsim))]
pub use fs::FsObjectStore;
pub use retry::{RetryPolicy, RetryingStore};
#[cfg(feature = "s3")]
pub use s3::{S3Config, S3ObjectStore};
/// The in-memory store lives with the seams (the simulated S3 is built on it).
pub use t4_env::MemObjectStore;
