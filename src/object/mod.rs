//! Object store implementations: [`MemObjectStore`] and, with the `s3` feature,
//! [`S3ObjectStore`] (aws-sdk-s3, against s4 or AWS). The local-directory store, the retry
//! layer and `layout.rs` arrive with durability on object storage.
//! [`conformance`] is the one behaviour suite every implementation must pass.

pub mod conformance;
mod mem;
#[cfg(feature = "s3")]
mod s3;

pub use mem::MemObjectStore;
#[cfg(feature = "s3")]
pub use s3::{S3Config, S3ObjectStore};
