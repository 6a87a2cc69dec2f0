//! SimS3: the simulator's bucket. A strongly consistent in-memory store with ETags and
//! atomic conditional writes (a [`MemObjectStore`] at its commit point), in front of which
//! seeded faults happen: latency on the Clock seam, 503 SlowDown, and ambiguous outcomes —
//! the request lost before the commit point, or committed and its answer lost. Shared by
//! every incarnation of a node, it outlives their crashes, as a bucket does.
//!
//! Deterministic: its only randomness is the seed it is given.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::env::{Clock, Condition, ObjectError, ObjectInfo, ObjectStore, PutOutcome};
use crate::object::MemObjectStore;

/// Faults, in percent of requests (each drawn on its own).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimS3Faults {
    /// Answered 503 SlowDown, nothing done.
    pub slow_down_percent: u32,
    /// Writes (put, delete) whose request is lost before the commit point: Ambiguous, nothing
    /// done.
    pub lost_request_percent: u32,
    /// Writes committed whose answer is lost: Ambiguous, done.
    pub lost_answer_percent: u32,
}

pub struct SimS3 {
    objects: MemObjectStore,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
}

impl std::fmt::Debug for SimS3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimS3").field("state", &self.state).finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct State {
    random: u64,
    faults: SimS3Faults,
    /// Latency of each request: uniform in this range of microseconds.
    latency_micros: (u64, u64),
    /// Requests answered with an injected fault, for the trace.
    faults_injected: u64,
}

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Normal,
    SlowDown,
    LostRequest,
    LostAnswer,
}

impl SimS3 {
    /// An empty bucket whose faults and latencies are drawn from `seed`; requests take 1-5 ms
    /// of `clock` time.
    pub fn new(seed: u64, clock: Arc<dyn Clock>) -> Self {
        let state = State { random: seed | 1, faults: SimS3Faults::default(), latency_micros: (1_000, 5_000), faults_injected: 0 };
        Self { objects: MemObjectStore::new(), clock, state: Mutex::new(state) }
    }

    pub fn set_faults(&self, faults: SimS3Faults) {
        self.state().faults = faults;
    }

    /// Requests answered with a fault so far.
    pub fn faults_injected(&self) -> u64 {
        self.state().faults_injected
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("sim s3 lock")
    }

    /// Draws the request's latency and fate (`write`: may it be lost or committed blind).
    fn draw(&self, write: bool) -> (Duration, Fate) {
        let mut state = self.state();
        let (low, high) = state.latency_micros;
        let latency = Duration::from_micros(low + next(&mut state.random) % (high - low + 1));
        let faults = state.faults;
        let mut roll = |percent: u32| percent > 0 && next(&mut state.random) % 100 < u64::from(percent);
        let fate = if roll(faults.slow_down_percent) {
            Fate::SlowDown
        } else if write && roll(faults.lost_request_percent) {
            Fate::LostRequest
        } else if write && roll(faults.lost_answer_percent) {
            Fate::LostAnswer
        } else {
            Fate::Normal
        };
        if fate != Fate::Normal {
            state.faults_injected += 1;
        }
        (latency, fate)
    }

    /// Runs a read after its latency, unless it is throttled.
    async fn read<T>(&self, work: impl std::future::Future<Output = Result<T, ObjectError>>) -> Result<T, ObjectError> {
        let (latency, fate) = self.draw(false);
        self.clock.sleep(latency).await;
        if fate == Fate::SlowDown {
            return Err(ObjectError::SlowDown);
        }
        work.await
    }

    /// Runs a write: half the latency to reach the commit point, the rest for the answer.
    async fn write<T>(&self, key: &str, work: impl std::future::Future<Output = Result<T, ObjectError>>) -> Result<T, ObjectError> {
        let (latency, fate) = self.draw(true);
        self.clock.sleep(latency / 2).await;
        match fate {
            Fate::SlowDown => return Err(ObjectError::SlowDown),
            Fate::LostRequest => return Err(ObjectError::Ambiguous(key.to_string(), "request lost (simulated)".into())),
            Fate::Normal | Fate::LostAnswer => {}
        }
        let outcome = work.await;
        self.clock.sleep(latency - latency / 2).await;
        match fate {
            Fate::LostAnswer => Err(ObjectError::Ambiguous(key.to_string(), "answer lost (simulated)".into())),
            _ => outcome,
        }
    }
}

fn next(state: &mut u64) -> u64 {
    // xorshift64*
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

#[async_trait]
impl ObjectStore for SimS3 {
    async fn get(&self, key: &str) -> Result<(Bytes, String), ObjectError> {
        self.read(self.objects.get(key)).await
    }

    async fn get_range(&self, key: &str, start: u64, end: u64) -> Result<Bytes, ObjectError> {
        self.read(self.objects.get_range(key, start, end)).await
    }

    async fn head(&self, key: &str) -> Result<ObjectInfo, ObjectError> {
        self.read(self.objects.head(key)).await
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<Vec<ObjectInfo>, ObjectError> {
        self.read(self.objects.list(prefix, start_after, limit)).await
    }

    async fn put(&self, key: &str, body: Bytes, condition: Condition) -> Result<PutOutcome, ObjectError> {
        self.write(key, self.objects.put(key, body, condition)).await
    }

    async fn delete(&self, key: &str, if_match: Option<&str>) -> Result<(), ObjectError> {
        self.write(key, self.objects.delete(key, if_match)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::RealClock;

    fn fast(seed: u64) -> SimS3 {
        let store = SimS3::new(seed, Arc::new(RealClock::new()));
        store.state().latency_micros = (0, 10);
        store
    }

    #[tokio::test]
    async fn passes_the_conformance_suite() {
        crate::object::conformance::run(&fast(7), "conformance/").await;
    }

    #[tokio::test]
    async fn faults_are_what_they_claim_to_be() {
        let store = fast(11);
        store.set_faults(SimS3Faults { slow_down_percent: 0, lost_request_percent: 50, lost_answer_percent: 0 });
        let (mut lost, mut written) = (0, 0);
        for index in 0..200 {
            let key = format!("k{index}");
            match store.put(&key, Bytes::from_static(b"v"), Condition::IfNoneMatch).await {
                Err(ObjectError::Ambiguous(..)) => {
                    lost += 1;
                    assert!(store.objects.head(&key).await.is_err(), "a lost request commits nothing");
                }
                outcome => {
                    outcome.unwrap();
                    written += 1;
                }
            }
        }
        assert!((60..140).contains(&lost) && lost + written == 200, "{lost} lost");
        store.set_faults(SimS3Faults { slow_down_percent: 0, lost_request_percent: 0, lost_answer_percent: 100 });
        assert!(matches!(store.put("late", Bytes::from_static(b"v"), Condition::IfNoneMatch).await, Err(ObjectError::Ambiguous(..))));
        assert!(store.objects.head("late").await.is_ok(), "a lost answer came after the commit point");
        store.set_faults(SimS3Faults { slow_down_percent: 100, ..Default::default() });
        assert_eq!(store.get("late").await, Err(ObjectError::SlowDown));
        assert_eq!(store.put("x", Bytes::new(), Condition::Always).await, Err(ObjectError::SlowDown));
        assert!(store.objects.head("x").await.is_err(), "a throttled write did nothing");
        assert_eq!(store.faults_injected(), lost + 3);
        // Same seed, same fates.
        let (a, b) = (fast(5), fast(5));
        for store in [&a, &b] {
            store.set_faults(SimS3Faults { slow_down_percent: 30, lost_request_percent: 30, lost_answer_percent: 30 });
        }
        for index in 0..50 {
            let key = format!("k{index}");
            let (left, right) = (a.put(&key, Bytes::new(), Condition::Always).await, b.put(&key, Bytes::new(), Condition::Always).await);
            assert_eq!(left.is_ok(), right.is_ok());
        }
    }
}
