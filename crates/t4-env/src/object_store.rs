//! ObjectStore: the S3-shaped durable boundary (docs/design.md §2, §5).
//!
//! Only the operations t4 needs, with the conditions its fencing rule relies on. Errors are
//! typed so callers can tell "someone else won" (412/409) from "unknown outcome"
//! (`Ambiguous`: the request may have committed) from plain failure.

use async_trait::async_trait;
use bytes::Bytes;

/// A precondition evaluated atomically with the write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    Always,
    /// Create-only: fails with 412 if the key exists (`If-None-Match: *`).
    IfNoneMatch,
    /// Compare-and-swap: fails with 412 unless the current ETag matches; 404 if absent.
    IfMatch(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOutcome {
    pub etag: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub etag: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    #[error("object store: precondition failed (412) on {0}")]
    PreconditionFailed(String),
    #[error("object store: conflicting concurrent write (409) on {0}")]
    Conflict(String),
    #[error("object store: no such key {0}")]
    NotFound(String),
    #[error("object store: slow down (503)")]
    SlowDown,
    #[error("object store: outcome unknown for {0}: {1}")]
    Ambiguous(String, String),
    /// Refused for good (a 4xx other than 404/409/412: credentials, permissions, a missing
    /// bucket, a malformed request). Retrying the same request cannot succeed.
    #[error("object store refused the request: {0}")]
    Refused(String),
    /// The object's bytes fail their checksum or format check. Never retried, never served.
    #[error("object store: damaged object {0}")]
    Corrupt(String),
    /// A failure that may pass (I/O, connection refused before sending, 5xx on a read).
    #[error("object store: {0}")]
    Other(String),
}

impl ObjectError {
    /// Whether retrying the same request may succeed without changing it.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ObjectError::SlowDown | ObjectError::Other(_))
    }
}

#[async_trait]
pub trait ObjectStore: Send + Sync + std::fmt::Debug + 'static {
    async fn get(&self, key: &str) -> Result<(Bytes, String), ObjectError>;
    /// Bytes `[start, end)` of an object.
    async fn get_range(&self, key: &str, start: u64, end: u64) -> Result<Bytes, ObjectError>;
    async fn head(&self, key: &str) -> Result<ObjectInfo, ObjectError>;
    /// Keys under `prefix` strictly after `start_after`, ascending, at most `limit`.
    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<Vec<ObjectInfo>, ObjectError>;
    async fn put(&self, key: &str, body: Bytes, condition: Condition) -> Result<PutOutcome, ObjectError>;
    /// Deletes `key`, only if its ETag matches when `if_match` is given. Missing key: Ok.
    async fn delete(&self, key: &str, if_match: Option<&str>) -> Result<(), ObjectError>;
    /// Deletes every key of `keys`, unconditionally (missing keys are fine), at most
    /// [`DELETE_MANY_MAX`] of them. A store that can delete many keys in one request (S3's
    /// DeleteObjects) does; otherwise one `delete` per key, a few at a time. On an error some
    /// keys may be gone and others not.
    async fn delete_many(&self, keys: &[String]) -> Result<(), ObjectError> {
        use futures::StreamExt;
        let mut running = futures::stream::FuturesUnordered::new();
        let mut keys = keys.iter();
        loop {
            while running.len() < DELETES_AT_ONCE {
                let Some(key) = keys.next() else { break };
                running.push(self.delete(key, None));
            }
            match running.next().await {
                None => return Ok(()),
                Some(Ok(()) | Err(ObjectError::NotFound(_))) => {}
                Some(Err(error)) => return Err(error),
            }
        }
    }
}

/// Most keys [`ObjectStore::delete_many`] takes (S3's DeleteObjects limit).
pub const DELETE_MANY_MAX: usize = 1000;
/// Single deletes a store without a batch delete runs at once for `delete_many`.
const DELETES_AT_ONCE: usize = 16;
