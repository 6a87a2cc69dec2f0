//! Object store implementations. Today: [`MemObjectStore`]. The S3 and local-directory
//! stores, the retry layer and `layout.rs` arrive with durability on object storage.
//! [`conformance`] is the one behaviour suite every implementation must pass.

pub mod conformance;
mod mem;

pub use mem::MemObjectStore;
