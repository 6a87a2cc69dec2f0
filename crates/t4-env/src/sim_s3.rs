//! SimS3: the simulator's bucket. A strongly consistent in-memory store with ETags and
//! atomic conditional writes (a [`MemObjectStore`] at its commit point), in front of which
//! seeded faults happen: latency on the Clock seam, 503 SlowDown, and ambiguous outcomes —
//! the request lost before the commit point, committed and its answer lost, or held up in
//! the network and committed long after its sender gave up (a zombie write). Shared by
//! every incarnation of a node, it outlives their crashes, as a bucket does.
//!
//! A write, once sent, is carried to its commit point by the [`Courier`], not by the task
//! that sent it: a request in flight from a process that is killed still commits, as it
//! would in a real network (the simulator's courier runs on a node of its own).
//!
//! Deterministic: its only randomness is the seed it is given.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::MemObjectStore;
use crate::{Clock, Condition, ObjectError, ObjectInfo, ObjectStore, PutOutcome};

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
    /// Writes held up on the way: the sender is told Ambiguous (it timed out) after the
    /// usual latency, and the request reaches its commit point 50-1000 ms later, where it
    /// commits or not by its condition then (a zombie write landing late).
    pub late_commit_percent: u32,
}

impl SimS3Faults {
    /// A bucket that behaves.
    pub const NONE: SimS3Faults =
        SimS3Faults { slow_down_percent: 0, lost_request_percent: 0, lost_answer_percent: 0, late_commit_percent: 0 };
}

/// How long a request waits before it times out while the bucket is unreachable.
const UNREACHABLE_TIMEOUT: Duration = Duration::from_millis(100);

/// Runs a sent request's journey to its commit point, apart from the sender.
pub type Courier = Arc<dyn Fn(Pin<Box<dyn Future<Output = ()> + Send>>) + Send + Sync>;

pub struct SimS3 {
    objects: Arc<MemObjectStore>,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    /// None: requests travel on tasks of the caller's runtime (`tokio::spawn`).
    courier: Mutex<Option<Courier>>,
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
    /// Requests answered with an injected fault (or timed out by a cut network).
    faults_injected: u64,
    /// The network to the bucket is cut: every request times out, nothing commits.
    unreachable: bool,
}

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Normal,
    SlowDown,
    LostRequest,
    LostAnswer,
    LateCommit,
}

impl SimS3 {
    /// An empty bucket whose faults and latencies are drawn from `seed`; requests take 1-5 ms
    /// of `clock` time.
    pub fn new(seed: u64, clock: Arc<dyn Clock>) -> Self {
        let state = State {
            random: seed | 1,
            faults: SimS3Faults::default(),
            latency_micros: (1_000, 5_000),
            faults_injected: 0,
            unreachable: false,
        };
        Self { objects: Arc::new(MemObjectStore::new()), clock, state: Mutex::new(state), courier: Mutex::new(None) }
    }

    /// Sets who carries requests to their commit point (the simulator: a task on a node no
    /// nemesis kills).
    pub fn set_courier(&self, courier: Courier) {
        *self.courier.lock().expect("sim s3 courier") = Some(courier);
    }

    pub fn set_faults(&self, faults: SimS3Faults) {
        self.state().faults = faults;
    }

    /// Each request's delay is drawn from `low..=high` microseconds (default 1–5 ms).
    pub fn set_latency_micros(&self, low: u64, high: u64) {
        self.state().latency_micros = (low, high);
    }

    /// Cuts (or restores) the network between the bucket and everyone: while cut, each
    /// request times out after 100 ms, a write ambiguously, and nothing commits.
    pub fn set_unreachable(&self, unreachable: bool) {
        self.state().unreachable = unreachable;
    }

    /// Requests answered with a fault so far.
    pub fn faults_injected(&self) -> u64 {
        self.state().faults_injected
    }

    /// Whether the network is cut; a request that meets the cut counts as a fault.
    fn cut(&self) -> bool {
        let mut state = self.state();
        state.faults_injected += u64::from(state.unreachable);
        state.unreachable
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("sim s3 lock")
    }

    /// Draws the request's latency and fate (`write`: may it be lost or committed blind), and
    /// for a late commit, how late.
    fn draw(&self, write: bool) -> (Duration, Fate, Duration) {
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
        } else if write && roll(faults.late_commit_percent) {
            Fate::LateCommit
        } else {
            Fate::Normal
        };
        if fate != Fate::Normal {
            state.faults_injected += 1;
        }
        let late = Duration::from_millis(50 + next(&mut state.random) % 951);
        (latency, fate, late)
    }

    /// Runs a read after its latency, unless it is throttled.
    async fn read<T>(&self, work: impl std::future::Future<Output = Result<T, ObjectError>>) -> Result<T, ObjectError> {
        let (latency, fate, _) = self.draw(false);
        if self.cut() {
            self.clock.sleep(UNREACHABLE_TIMEOUT).await;
            return Err(ObjectError::Other("connection timed out (simulated partition)".into()));
        }
        self.clock.sleep(latency).await;
        if fate == Fate::SlowDown {
            return Err(ObjectError::SlowDown);
        }
        work.await
    }

    /// Sends a write: the courier carries it to its commit point (half the latency, or much
    /// later for a late commit) and brings the answer back (the other half). The caller
    /// waits for the answer; if it is killed meanwhile, the write still commits.
    async fn write<T, W, F>(&self, key: &str, work: W) -> Result<T, ObjectError>
    where
        T: Send + 'static,
        W: FnOnce(Arc<MemObjectStore>) -> F + Send + 'static,
        F: Future<Output = Result<T, ObjectError>> + Send + 'static,
    {
        let (latency, fate, late) = self.draw(true);
        if self.cut() {
            self.clock.sleep(UNREACHABLE_TIMEOUT).await;
            return Err(ObjectError::Ambiguous(key.to_string(), "connection timed out (simulated partition)".into()));
        }
        match fate {
            Fate::SlowDown => {
                self.clock.sleep(latency / 2).await;
                return Err(ObjectError::SlowDown);
            }
            Fate::LostRequest => {
                self.clock.sleep(latency / 2).await;
                return Err(ObjectError::Ambiguous(key.to_string(), "request lost (simulated)".into()));
            }
            Fate::Normal | Fate::LostAnswer | Fate::LateCommit => {}
        }
        let (answer_tx, answer) = tokio::sync::oneshot::channel();
        let (objects, clock) = (self.objects.clone(), self.clock.clone());
        let to_commit = if fate == Fate::LateCommit { late } else { latency / 2 };
        let back = latency - latency / 2;
        self.send(Box::pin(async move {
            clock.sleep(to_commit).await;
            let outcome = work(objects).await;
            clock.sleep(back).await;
            let _ = answer_tx.send(outcome);
        }));
        match fate {
            Fate::LateCommit => {
                self.clock.sleep(latency).await;
                Err(ObjectError::Ambiguous(key.to_string(), "timed out, the request still on its way (simulated)".into()))
            }
            Fate::LostAnswer => {
                let _ = answer.await;
                Err(ObjectError::Ambiguous(key.to_string(), "answer lost (simulated)".into()))
            }
            _ => answer.await.unwrap_or_else(|_| Err(ObjectError::Ambiguous(key.to_string(), "courier dropped the request".into()))),
        }
    }

    fn send(&self, journey: Pin<Box<dyn Future<Output = ()> + Send>>) {
        let courier = self.courier.lock().expect("sim s3 courier").clone();
        match courier {
            Some(courier) => courier(journey),
            None => {
                tokio::spawn(journey);
            }
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
        let owned = key.to_string();
        self.write(key, move |objects| async move { objects.put(&owned, body, condition).await }).await
    }

    async fn delete(&self, key: &str, if_match: Option<&str>) -> Result<(), ObjectError> {
        let (owned, if_match) = (key.to_string(), if_match.map(str::to_string));
        self.write(key, move |objects| async move { objects.delete(&owned, if_match.as_deref()).await }).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RealClock;

    fn fast(seed: u64) -> SimS3 {
        let store = SimS3::new(seed, Arc::new(RealClock::new()));
        store.set_latency_micros(0, 10);
        store
    }

    #[tokio::test]
    async fn faults_are_what_they_claim_to_be() {
        let store = fast(11);
        store.set_faults(SimS3Faults { lost_request_percent: 50, ..Default::default() });
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
        store.set_faults(SimS3Faults { lost_answer_percent: 100, ..Default::default() });
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
            store.set_faults(SimS3Faults {
                slow_down_percent: 30,
                lost_request_percent: 30,
                lost_answer_percent: 30,
                late_commit_percent: 0,
            });
        }
        for index in 0..50 {
            let key = format!("k{index}");
            let (left, right) = (a.put(&key, Bytes::new(), Condition::Always).await, b.put(&key, Bytes::new(), Condition::Always).await);
            assert_eq!(left.is_ok(), right.is_ok());
        }
    }

    #[tokio::test]
    async fn a_late_write_commits_after_its_sender_gave_up_and_by_its_condition_then() {
        let store = fast(13);
        store.set_faults(SimS3Faults { late_commit_percent: 100, ..Default::default() });
        let late = store.put("k", Bytes::from_static(b"zombie"), Condition::IfNoneMatch).await;
        assert!(matches!(late, Err(ObjectError::Ambiguous(..))), "{late:?}");
        assert!(store.objects.head("k").await.is_err(), "not there yet when the sender gives up");
        store.set_faults(SimS3Faults::default());
        // Written meanwhile by someone else: the zombie's condition fails when it lands.
        let other = store.put("k", Bytes::from_static(b"newer"), Condition::IfNoneMatch).await.unwrap();
        store.set_faults(SimS3Faults { late_commit_percent: 100, ..Default::default() });
        let late = store.put("j", Bytes::from_static(b"zombie"), Condition::Always).await;
        assert!(matches!(late, Err(ObjectError::Ambiguous(..))), "{late:?}");
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        assert_eq!(store.objects.get("k").await.unwrap(), (Bytes::from_static(b"newer"), other.etag));
        assert_eq!(store.objects.get("j").await.unwrap().0, Bytes::from_static(b"zombie"), "it landed late");
    }

    #[tokio::test]
    async fn a_sent_write_commits_even_if_its_sender_is_gone() {
        let store = Arc::new(fast(17));
        let sender = {
            let store = store.clone();
            tokio::spawn(async move { store.put("k", Bytes::from_static(b"v"), Condition::IfNoneMatch).await })
        };
        // Let the request leave, then kill the sender.
        tokio::task::yield_now().await;
        sender.abort();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(store.objects.head("k").await.is_ok());
    }

    #[tokio::test]
    async fn a_cut_network_times_everything_out_and_commits_nothing() {
        let store = fast(19);
        store.put("there", Bytes::from_static(b"v"), Condition::IfNoneMatch).await.unwrap();
        store.set_unreachable(true);
        assert!(matches!(store.put("k", Bytes::from_static(b"v"), Condition::IfNoneMatch).await, Err(ObjectError::Ambiguous(..))));
        assert!(matches!(store.get("there").await, Err(ObjectError::Other(_))));
        assert!(matches!(store.delete("there", None).await, Err(ObjectError::Ambiguous(..))));
        store.set_unreachable(false);
        assert_eq!(store.faults_injected(), 3, "each request that met the cut counts");
        assert!(store.objects.head("k").await.is_err(), "nothing sent through a cut commits");
        assert!(store.get("there").await.is_ok());
    }
}
