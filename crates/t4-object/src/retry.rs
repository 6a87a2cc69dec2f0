//! RetryingStore: retries what may pass, with exponential backoff on the Clock seam, and
//! resolves ambiguous writes by reading back instead of retrying them blindly.
//!
//! Permanent answers (412, 409 on a delete, 404, refusals, damage) are returned at once. A
//! conditional PUT whose outcome is unknown is resolved by reading the key: if it holds
//! exactly our body, the write landed (callers make bodies unique: t4's carry the writer's
//! term and position, docs/design.md §5); if the condition still holds, it did not, and the PUT is
//! sent again; otherwise someone else won and the answer is 412. A 409 (a concurrent
//! conditional write in progress, S3's `ConditionalRequestConflict`) is retried like a
//! throttle: the next attempt evaluates the condition afresh.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use t4_env::{Clock, Condition, ObjectError, ObjectInfo, ObjectStore, PutOutcome};

/// How many times, and how long to wait between them.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all (the first included); at least 1.
    pub attempts: u32,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { attempts: 8, first_backoff: Duration::from_millis(50), max_backoff: Duration::from_secs(2) }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt` (1-based, so the wait after the first failure is
    /// `first_backoff`), doubled each time up to `max_backoff`, with up to 25% jitter drawn
    /// from `salt` (deterministic, so the simulator replays it).
    fn backoff(&self, attempt: u32, salt: u64) -> Duration {
        let base = self.first_backoff.saturating_mul(1 << attempt.saturating_sub(1).min(20)).min(self.max_backoff);
        let mixed = (salt ^ u64::from(attempt)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        base + base.mul_f64((mixed >> 11) as f64 / (1u64 << 53) as f64 * 0.25)
    }
}

#[derive(Clone)]
pub struct RetryingStore {
    inner: Arc<dyn ObjectStore>,
    clock: Arc<dyn Clock>,
    policy: RetryPolicy,
}

impl std::fmt::Debug for RetryingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryingStore").field("inner", &self.inner).field("policy", &self.policy).finish()
    }
}

/// What a failed attempt means for the next one.
enum Next {
    Retry,
    Fail(ObjectError),
}

fn transient(error: &ObjectError) -> bool {
    matches!(error, ObjectError::SlowDown | ObjectError::Other(_) | ObjectError::Conflict(_))
}

fn salt(key: &str) -> u64 {
    u64::from(crc32c::crc32c(key.as_bytes()))
}

impl RetryingStore {
    pub fn new(inner: Arc<dyn ObjectStore>, clock: Arc<dyn Clock>, policy: RetryPolicy) -> Self {
        Self { inner, clock, policy: RetryPolicy { attempts: policy.attempts.max(1), ..policy } }
    }

    /// Reads `key` back after an ambiguous PUT of `body` under `condition`.
    async fn resolve_put(&self, key: &str, body: &Bytes, condition: &Condition) -> Result<Option<PutOutcome>, Next> {
        match self.inner.get(key).await {
            Ok((current, etag)) if current == *body => Ok(Some(PutOutcome { etag })),
            Ok((_, etag)) => match condition {
                Condition::Always => Err(Next::Retry),
                Condition::IfMatch(expected) if *expected == etag => Err(Next::Retry),
                _ => Err(Next::Fail(ObjectError::PreconditionFailed(key.to_string()))),
            },
            Err(ObjectError::NotFound(_)) => match condition {
                Condition::IfMatch(_) => Err(Next::Fail(ObjectError::NotFound(key.to_string()))),
                _ => Err(Next::Retry),
            },
            // Could not read back: try the read again on the next round.
            Err(error) if transient(&error) || matches!(error, ObjectError::Ambiguous(..)) => Ok(None),
            Err(error) => Err(Next::Fail(error)),
        }
    }

    /// Retries an idempotent request (a read, an unconditional delete of many keys): an
    /// ambiguous one is simply sent again.
    async fn idempotent<T, F, Fut>(&self, key: &str, mut attempt: F) -> Result<T, ObjectError>
    where
        F: FnMut() -> Fut + Send,
        Fut: std::future::Future<Output = Result<T, ObjectError>> + Send,
        T: Send,
    {
        let mut tried = 0;
        loop {
            tried += 1;
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(error) if (transient(&error) || matches!(error, ObjectError::Ambiguous(..))) && tried < self.policy.attempts => {
                    self.clock.sleep(self.policy.backoff(tried, salt(key))).await;
                }
                Err(error) => return Err(error),
            }
        }
    }
}

#[async_trait]
impl ObjectStore for RetryingStore {
    async fn get(&self, key: &str) -> Result<(Bytes, String), ObjectError> {
        self.idempotent(key, || self.inner.get(key)).await
    }

    async fn get_range(&self, key: &str, start: u64, end: u64) -> Result<Bytes, ObjectError> {
        self.idempotent(key, || self.inner.get_range(key, start, end)).await
    }

    async fn head(&self, key: &str) -> Result<ObjectInfo, ObjectError> {
        self.idempotent(key, || self.inner.head(key)).await
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<Vec<ObjectInfo>, ObjectError> {
        self.idempotent(prefix, || self.inner.list(prefix, start_after, limit)).await
    }

    async fn put(&self, key: &str, body: Bytes, condition: Condition) -> Result<PutOutcome, ObjectError> {
        let attempts = self.policy.attempts;
        let mut tried = 0;
        loop {
            tried += 1;
            let error = match self.inner.put(key, body.clone(), condition.clone()).await {
                Ok(outcome) => return Ok(outcome),
                Err(error @ ObjectError::Ambiguous(..)) => {
                    // Resolve by reading back, retrying the read itself if it fails.
                    let mut reads = 0;
                    loop {
                        reads += 1;
                        match self.resolve_put(key, &body, &condition).await {
                            Ok(Some(landed)) => return Ok(landed),
                            Err(Next::Fail(error)) => return Err(error),
                            Err(Next::Retry) => break,
                            Ok(None) if reads < attempts => self.clock.sleep(self.policy.backoff(reads, salt(key))).await,
                            Ok(None) => return Err(error),
                        }
                    }
                    error
                }
                Err(error) if transient(&error) => error,
                Err(error) => return Err(error),
            };
            if tried >= attempts {
                return Err(error);
            }
            self.clock.sleep(self.policy.backoff(tried, salt(key))).await;
        }
    }

    async fn delete(&self, key: &str, if_match: Option<&str>) -> Result<(), ObjectError> {
        let attempts = self.policy.attempts;
        let mut tried = 0;
        loop {
            tried += 1;
            let error = match self.inner.delete(key, if_match).await {
                Ok(()) => return Ok(()),
                // Unconditional deletes are idempotent. A conditional one is settled by
                // looking: gone means done (by us or by someone else, the object is gone);
                // still at the expected ETag means it did not happen.
                Err(error @ ObjectError::Ambiguous(..)) => match if_match {
                    None => error,
                    Some(expected) => match self.inner.head(key).await {
                        Err(ObjectError::NotFound(_)) => return Ok(()),
                        Ok(info) if info.etag != expected => return Err(ObjectError::PreconditionFailed(key.to_string())),
                        _ => error,
                    },
                },
                Err(error) if transient(&error) => error,
                Err(error) => return Err(error),
            };
            if tried >= attempts {
                return Err(error);
            }
            self.clock.sleep(self.policy.backoff(tried, salt(key))).await;
        }
    }

    /// Unconditional deletes: deleting again does no harm, so they retry like reads.
    async fn delete_many(&self, keys: &[String]) -> Result<(), ObjectError> {
        self.idempotent(keys.first().map_or("", String::as_str), || self.inner.delete_many(keys)).await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use futures::future::BoxFuture;

    use super::*;
    use crate::MemObjectStore;

    /// A clock whose sleeps return at once and are recorded.
    #[derive(Debug, Default)]
    struct InstantClock {
        slept: Mutex<Vec<Duration>>,
    }

    impl Clock for InstantClock {
        fn monotonic(&self) -> Duration {
            self.slept.lock().unwrap().iter().sum()
        }
        fn wall_ms(&self) -> u64 {
            0
        }
        fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
            self.slept.lock().unwrap().push(duration);
            Box::pin(async {})
        }
    }

    /// What the next write does.
    #[derive(Debug, Clone)]
    enum Fault {
        /// Apply it, then lose the answer.
        LandThenLose,
        /// Lose it before it is applied.
        LoseBefore,
        /// Fail with this error without applying it.
        Fail(ObjectError),
    }

    #[derive(Debug, Default)]
    struct Faulty {
        inner: MemObjectStore,
        faults: Mutex<VecDeque<Fault>>,
        calls: Mutex<Vec<&'static str>>,
    }

    impl Faulty {
        fn next(&self, call: &'static str) -> Option<Fault> {
            self.calls.lock().unwrap().push(call);
            self.faults.lock().unwrap().pop_front()
        }
    }

    #[async_trait]
    impl ObjectStore for Faulty {
        async fn get(&self, key: &str) -> Result<(Bytes, String), ObjectError> {
            match self.next("get") {
                Some(Fault::Fail(error)) => Err(error),
                _ => self.inner.get(key).await,
            }
        }
        async fn get_range(&self, key: &str, start: u64, end: u64) -> Result<Bytes, ObjectError> {
            self.inner.get_range(key, start, end).await
        }
        async fn head(&self, key: &str) -> Result<ObjectInfo, ObjectError> {
            self.calls.lock().unwrap().push("head");
            self.inner.head(key).await
        }
        async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<Vec<ObjectInfo>, ObjectError> {
            match self.next("list") {
                Some(Fault::Fail(error)) => Err(error),
                _ => self.inner.list(prefix, start_after, limit).await,
            }
        }
        async fn put(&self, key: &str, body: Bytes, condition: Condition) -> Result<PutOutcome, ObjectError> {
            match self.next("put") {
                None => self.inner.put(key, body, condition).await,
                Some(Fault::LandThenLose) => {
                    let _ = self.inner.put(key, body, condition).await;
                    Err(ObjectError::Ambiguous(key.into(), "answer lost".into()))
                }
                Some(Fault::LoseBefore) => Err(ObjectError::Ambiguous(key.into(), "request lost".into())),
                Some(Fault::Fail(error)) => Err(error),
            }
        }
        async fn delete(&self, key: &str, if_match: Option<&str>) -> Result<(), ObjectError> {
            match self.next("delete") {
                None => self.inner.delete(key, if_match).await,
                Some(Fault::LandThenLose) => {
                    let _ = self.inner.delete(key, if_match).await;
                    Err(ObjectError::Ambiguous(key.into(), "answer lost".into()))
                }
                Some(Fault::LoseBefore) => Err(ObjectError::Ambiguous(key.into(), "request lost".into())),
                Some(Fault::Fail(error)) => Err(error),
            }
        }
    }

    fn store(faults: &[Fault]) -> (RetryingStore, Arc<Faulty>, Arc<InstantClock>) {
        let faulty = Arc::new(Faulty { faults: Mutex::new(faults.iter().cloned().collect()), ..Faulty::default() });
        let clock = Arc::new(InstantClock::default());
        let policy = RetryPolicy { attempts: 4, first_backoff: Duration::from_millis(10), max_backoff: Duration::from_millis(40) };
        (RetryingStore::new(faulty.clone(), clock.clone(), policy), faulty, clock)
    }

    fn body(text: &'static str) -> Bytes {
        Bytes::from_static(text.as_bytes())
    }

    #[tokio::test]
    async fn passes_the_conformance_suite() {
        let (retrying, _, _) = store(&[]);
        crate::conformance::run(&retrying, "conformance/").await;
    }

    #[tokio::test]
    async fn a_create_only_put_whose_answer_was_lost_is_found_to_have_landed() {
        let (retrying, faulty, _) = store(&[Fault::LandThenLose]);
        let outcome = retrying.put("wal/1/1", body("term 1 batch 1"), Condition::IfNoneMatch).await.unwrap();
        assert_eq!(faulty.inner.get("wal/1/1").await.unwrap().1, outcome.etag);
        assert_eq!(*faulty.calls.lock().unwrap(), ["put", "get"], "resolved by reading back, not by a second create");
    }

    #[tokio::test]
    async fn a_create_only_put_lost_before_landing_is_sent_again() {
        let (retrying, faulty, clock) = store(&[Fault::LoseBefore]);
        retrying.put("wal/1/1", body("mine"), Condition::IfNoneMatch).await.unwrap();
        assert_eq!(&faulty.inner.get("wal/1/1").await.unwrap().0[..], b"mine");
        assert_eq!(*faulty.calls.lock().unwrap(), ["put", "get", "put"]);
        assert_eq!(clock.slept.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn an_ambiguous_create_only_put_that_lost_the_race_is_412() {
        let (retrying, faulty, _) = store(&[Fault::LoseBefore]);
        faulty.inner.put("wal/1/1", body("someone else's"), Condition::IfNoneMatch).await.unwrap();
        let result = retrying.put("wal/1/1", body("mine"), Condition::IfNoneMatch).await;
        assert!(matches!(result, Err(ObjectError::PreconditionFailed(_))), "{result:?}");
    }

    #[tokio::test]
    async fn an_ambiguous_cas_is_settled_by_the_current_etag() {
        // Landed: our body is there.
        let (retrying, faulty, _) = store(&[Fault::LandThenLose]);
        let first = faulty.inner.put("lock", body("term 1"), Condition::Always).await.unwrap();
        let outcome = retrying.put("lock", body("term 2"), Condition::IfMatch(first.etag.clone())).await.unwrap();
        assert_eq!(faulty.inner.get("lock").await.unwrap(), (body("term 2"), outcome.etag));
        // Not landed: the ETag we expected is still current, so the CAS is sent again.
        let (retrying, faulty, _) = store(&[Fault::LoseBefore]);
        let first = faulty.inner.put("lock", body("term 1"), Condition::Always).await.unwrap();
        retrying.put("lock", body("term 2"), Condition::IfMatch(first.etag)).await.unwrap();
        assert_eq!(*faulty.calls.lock().unwrap(), ["put", "get", "put"]);
        // Someone else moved it: 412.
        let (retrying, faulty, _) = store(&[Fault::LoseBefore]);
        let first = faulty.inner.put("lock", body("term 1"), Condition::Always).await.unwrap();
        faulty.inner.put("lock", body("term 3"), Condition::IfMatch(first.etag.clone())).await.unwrap();
        let result = retrying.put("lock", body("term 2"), Condition::IfMatch(first.etag)).await;
        assert!(matches!(result, Err(ObjectError::PreconditionFailed(_))), "{result:?}");
    }

    #[tokio::test]
    async fn throttles_back_off_and_permanent_errors_do_not_retry() {
        let slow = Fault::Fail(ObjectError::SlowDown);
        let (retrying, faulty, clock) = store(&[slow.clone(), slow.clone(), slow]);
        retrying.put("k", body("v"), Condition::Always).await.unwrap();
        assert_eq!(faulty.calls.lock().unwrap().len(), 4);
        let slept = clock.slept.lock().unwrap().clone();
        assert_eq!(slept.len(), 3);
        assert!(slept[0] >= Duration::from_millis(10) && slept[1] >= Duration::from_millis(20), "{slept:?}");
        assert!(slept.iter().all(|wait| *wait <= Duration::from_millis(50)), "capped at max_backoff plus jitter: {slept:?}");

        let (retrying, faulty, _) = store(&[Fault::Fail(ObjectError::Refused("403 AccessDenied".into()))]);
        assert!(matches!(retrying.put("k", body("v"), Condition::Always).await, Err(ObjectError::Refused(_))));
        assert_eq!(faulty.calls.lock().unwrap().len(), 1, "a refusal is not retried");

        let other = Fault::Fail(ObjectError::Other("connection refused".into()));
        let (retrying, faulty, _) = store(&[other.clone(), other.clone(), other.clone(), other]);
        assert!(matches!(retrying.list("", None, 10).await, Err(ObjectError::Other(_))), "attempts run out");
        assert_eq!(faulty.calls.lock().unwrap().len(), 4);
    }

    #[tokio::test]
    async fn ambiguous_deletes_are_settled() {
        let (retrying, faulty, _) = store(&[Fault::LandThenLose]);
        let put = faulty.inner.put("old", body("x"), Condition::Always).await.unwrap();
        retrying.delete("old", Some(&put.etag)).await.unwrap();
        assert!(matches!(faulty.inner.head("old").await, Err(ObjectError::NotFound(_))));
        let (retrying, faulty, _) = store(&[Fault::LoseBefore]);
        let put = faulty.inner.put("old", body("x"), Condition::Always).await.unwrap();
        retrying.delete("old", Some(&put.etag)).await.unwrap();
        assert_eq!(*faulty.calls.lock().unwrap(), ["delete", "head", "delete"]);
    }
}
