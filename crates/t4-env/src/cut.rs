//! CutStore: one node's way to a bucket, which a test or the simulator's nemesis can cut.
//! While cut, every request waits its timeout and fails as ambiguous (a request that timed
//! out may or may not have reached the bucket; here none does), as a partition between the
//! node and the bucket looks to the node.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::{Condition, ObjectError, ObjectInfo, ObjectStore, PutOutcome};

#[derive(Debug)]
pub struct CutStore {
    inner: Arc<dyn ObjectStore>,
    cut: Arc<AtomicBool>,
    timeout: Duration,
}

impl CutStore {
    /// `inner` reached through a link that `cut` severs; a cut request fails after
    /// `timeout` (zero: at once).
    pub fn new(inner: Arc<dyn ObjectStore>, cut: Arc<AtomicBool>, timeout: Duration) -> Self {
        Self { inner, cut, timeout }
    }

    async fn check(&self, key: &str) -> Result<(), ObjectError> {
        if !self.cut.load(Ordering::SeqCst) {
            return Ok(());
        }
        if !self.timeout.is_zero() {
            tokio::time::sleep(self.timeout).await;
        }
        Err(ObjectError::Ambiguous(key.to_string(), "connection timed out (cut off from the bucket)".into()))
    }
}

#[async_trait]
impl ObjectStore for CutStore {
    async fn get(&self, key: &str) -> Result<(Bytes, String), ObjectError> {
        self.check(key).await?;
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, start: u64, end: u64) -> Result<Bytes, ObjectError> {
        self.check(key).await?;
        self.inner.get_range(key, start, end).await
    }
    async fn head(&self, key: &str) -> Result<ObjectInfo, ObjectError> {
        self.check(key).await?;
        self.inner.head(key).await
    }
    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<Vec<ObjectInfo>, ObjectError> {
        self.check(prefix).await?;
        self.inner.list(prefix, start_after, limit).await
    }
    async fn put(&self, key: &str, body: Bytes, condition: Condition) -> Result<PutOutcome, ObjectError> {
        self.check(key).await?;
        self.inner.put(key, body, condition).await
    }
    async fn delete(&self, key: &str, if_match: Option<&str>) -> Result<(), ObjectError> {
        self.check(key).await?;
        self.inner.delete(key, if_match).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemObjectStore;

    #[tokio::test]
    async fn a_cut_link_fails_every_request_and_reaches_nothing() {
        let bucket = Arc::new(MemObjectStore::new());
        let cut = Arc::new(AtomicBool::new(false));
        let store = CutStore::new(bucket.clone(), cut.clone(), Duration::ZERO);
        store.put("a", Bytes::from_static(b"1"), Condition::Always).await.unwrap();
        cut.store(true, Ordering::SeqCst);
        assert!(matches!(store.get("a").await, Err(ObjectError::Ambiguous(..))));
        assert!(matches!(store.put("b", Bytes::from_static(b"2"), Condition::Always).await, Err(ObjectError::Ambiguous(..))));
        assert!(matches!(bucket.get("b").await, Err(ObjectError::NotFound(_))), "a cut request never lands");
        cut.store(false, Ordering::SeqCst);
        assert_eq!(store.get("a").await.unwrap().0, Bytes::from_static(b"1"));
    }
}
