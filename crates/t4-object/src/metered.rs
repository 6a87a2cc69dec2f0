//! MeteredStore: counts every request to an object store, its failures and its time, per
//! operation, for `/metrics` (`t4_object_store_*`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use t4_env::{Clock, Condition, ObjectError, ObjectInfo, ObjectStore, PutOutcome};

/// The operations counted, in the order [`StoreMeters::snapshot`] lists them.
pub const OPERATIONS: [&str; 7] = ["get", "get_range", "head", "list", "put", "delete", "delete_many"];

#[derive(Debug, Default)]
struct Meter {
    requests: AtomicU64,
    errors: AtomicU64,
    micros: AtomicU64,
}

/// Counters shared by a [`MeteredStore`] and whoever renders them.
#[derive(Debug, Default)]
pub struct StoreMeters {
    meters: [Meter; OPERATIONS.len()],
}

/// One operation's totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OperationTotals {
    pub requests: u64,
    /// Answers other than success, 404 on a read and 412 (expected outcomes).
    pub errors: u64,
    pub micros: u64,
}

impl StoreMeters {
    pub fn snapshot(&self) -> [OperationTotals; OPERATIONS.len()] {
        std::array::from_fn(|index| {
            let meter = &self.meters[index];
            OperationTotals {
                requests: meter.requests.load(Ordering::Relaxed),
                errors: meter.errors.load(Ordering::Relaxed),
                micros: meter.micros.load(Ordering::Relaxed),
            }
        })
    }
}

pub struct MeteredStore {
    inner: Arc<dyn ObjectStore>,
    clock: Arc<dyn Clock>,
    meters: Arc<StoreMeters>,
}

impl std::fmt::Debug for MeteredStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeteredStore").field("inner", &self.inner).finish_non_exhaustive()
    }
}

impl MeteredStore {
    pub fn new(inner: Arc<dyn ObjectStore>, clock: Arc<dyn Clock>, meters: Arc<StoreMeters>) -> Self {
        Self { inner, clock, meters }
    }

    async fn time<T>(&self, operation: usize, work: impl std::future::Future<Output = Result<T, ObjectError>>) -> Result<T, ObjectError> {
        let started = self.clock.monotonic();
        let outcome = work.await;
        let elapsed: Duration = self.clock.monotonic().saturating_sub(started);
        let meter = &self.meters.meters[operation];
        meter.requests.fetch_add(1, Ordering::Relaxed);
        meter.micros.fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        if matches!(&outcome, Err(error) if !matches!(error, ObjectError::NotFound(_) | ObjectError::PreconditionFailed(_))) {
            meter.errors.fetch_add(1, Ordering::Relaxed);
        }
        outcome
    }
}

#[async_trait]
impl ObjectStore for MeteredStore {
    async fn get(&self, key: &str) -> Result<(Bytes, String), ObjectError> {
        self.time(0, self.inner.get(key)).await
    }
    async fn get_range(&self, key: &str, start: u64, end: u64) -> Result<Bytes, ObjectError> {
        self.time(1, self.inner.get_range(key, start, end)).await
    }
    async fn head(&self, key: &str) -> Result<ObjectInfo, ObjectError> {
        self.time(2, self.inner.head(key)).await
    }
    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<Vec<ObjectInfo>, ObjectError> {
        self.time(3, self.inner.list(prefix, start_after, limit)).await
    }
    async fn put(&self, key: &str, body: Bytes, condition: Condition) -> Result<PutOutcome, ObjectError> {
        self.time(4, self.inner.put(key, body, condition)).await
    }
    async fn delete(&self, key: &str, if_match: Option<&str>) -> Result<(), ObjectError> {
        self.time(5, self.inner.delete(key, if_match)).await
    }
    async fn delete_many(&self, keys: &[String]) -> Result<(), ObjectError> {
        self.time(6, self.inner.delete_many(keys)).await
    }
}
