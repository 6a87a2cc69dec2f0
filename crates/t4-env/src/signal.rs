//! A value that changes, and tasks that wait for it to change: the few calls of
//! `tokio::sync::watch` t4 uses, with waiters woken in the order they began to wait.
//!
//! Not `tokio::sync::watch` itself: its receivers wait on one of eight queues picked at
//! random from a per-thread seed that tokio derives from a process-wide counter, so the
//! order in which waiters wake (and with it a simulator seed's run) depended on what the
//! process had run before (docs/robustness.md #26 for the watch hub, #45 for the cluster).
//! Here every waiter waits on one `Notify`, which wakes them in the order they came.
//!
//! The rules are tokio's: a receiver remembers the version it last saw; `changed` waits for
//! a newer one (or fails once every sender is gone and nothing new is left to see);
//! `wait_for` returns as soon as the value, current or future, satisfies a predicate.

use std::fmt;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use tokio::sync::Notify;

/// The value and its version, shared by the senders and receivers of one signal.
struct Shared<T> {
    value: RwLock<T>,
    /// Bumped by every change.
    version: AtomicU64,
    senders: AtomicUsize,
    receivers: AtomicUsize,
    /// Woken at every change and when the last sender goes.
    changed: Notify,
    /// Woken when the last receiver goes.
    unobserved: Notify,
}

impl<T> Shared<T> {
    fn closed(&self) -> bool {
        self.senders.load(Ordering::SeqCst) == 0
    }

    fn read(&self) -> Ref<'_, T> {
        Ref(self.value.read().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// Runs `change` on the value; a change (`true`) makes a new version and wakes waiters.
    fn modify(&self, change: impl FnOnce(&mut T) -> bool) -> bool {
        let changed = {
            let mut value = self.value.write().unwrap_or_else(|poisoned| poisoned.into_inner());
            let changed = change(&mut value);
            if changed {
                self.version.fetch_add(1, Ordering::SeqCst);
            }
            changed
        };
        if changed {
            self.changed.notify_waiters();
        }
        changed
    }
}

/// A borrowed view of the value; other changes wait while it is held.
pub struct Ref<'a, T>(RwLockReadGuard<'a, T>);

impl<T> Deref for Ref<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: fmt::Debug> fmt::Debug for Ref<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}

/// Every sender is gone (`changed`, `wait_for`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the signal's senders are gone")]
pub struct RecvError;

/// No receiver is left (`send`); the value is handed back.
#[derive(PartialEq, Eq, thiserror::Error)]
#[error("the signal has no receivers")]
pub struct SendError<T>(pub T);

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendError(..)")
    }
}

/// A sender and a receiver of `initial`.
pub fn channel<T>(initial: T) -> (Sender<T>, Receiver<T>) {
    let sender = Sender::new(initial);
    let receiver = sender.subscribe();
    (sender, receiver)
}

/// The side that changes the value.
pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Sender<T> {
    /// A signal of `initial` with no receiver yet.
    pub fn new(initial: T) -> Self {
        let shared = Shared {
            value: RwLock::new(initial),
            version: AtomicU64::new(0),
            senders: AtomicUsize::new(1),
            receivers: AtomicUsize::new(0),
            changed: Notify::new(),
            unobserved: Notify::new(),
        };
        Self { shared: Arc::new(shared) }
    }

    /// Sets the value if some receiver is left to see it.
    pub fn send(&self, value: T) -> Result<(), SendError<T>> {
        if self.shared.receivers.load(Ordering::SeqCst) == 0 {
            return Err(SendError(value));
        }
        self.send_replace(value);
        Ok(())
    }

    /// Sets the value whether or not anyone receives it; the previous value.
    pub fn send_replace(&self, value: T) -> T {
        let mut value = Some(value);
        let mut previous = None;
        self.shared.modify(|current| {
            previous = Some(std::mem::replace(current, value.take().expect("set once")));
            true
        });
        previous.expect("replaced")
    }

    /// Changes the value in place (always a new version).
    pub fn send_modify(&self, change: impl FnOnce(&mut T)) {
        self.shared.modify(|value| {
            change(value);
            true
        });
    }

    /// Changes the value in place; a new version only when `change` says it changed it.
    pub fn send_if_modified(&self, change: impl FnOnce(&mut T) -> bool) -> bool {
        self.shared.modify(change)
    }

    pub fn borrow(&self) -> Ref<'_, T> {
        self.shared.read()
    }

    /// A receiver that has seen the current value.
    pub fn subscribe(&self) -> Receiver<T> {
        Receiver::new(self.shared.clone())
    }

    pub fn receiver_count(&self) -> usize {
        self.shared.receivers.load(Ordering::SeqCst)
    }

    /// Whether every receiver is gone.
    pub fn is_closed(&self) -> bool {
        self.receiver_count() == 0
    }

    /// Waits until every receiver is gone.
    pub async fn closed(&self) {
        loop {
            let unobserved = self.shared.unobserved.notified();
            tokio::pin!(unobserved);
            unobserved.as_mut().enable();
            if self.is_closed() {
                return;
            }
            unobserved.await;
        }
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::SeqCst);
        Self { shared: self.shared.clone() }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.shared.changed.notify_waiters();
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender").field("value", &*self.borrow()).finish()
    }
}

/// The side that reads the value and waits for changes.
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
    /// The version this receiver saw last.
    seen: u64,
}

impl<T> Receiver<T> {
    fn new(shared: Arc<Shared<T>>) -> Self {
        shared.receivers.fetch_add(1, Ordering::SeqCst);
        let seen = shared.version.load(Ordering::SeqCst);
        Self { shared, seen }
    }

    /// The current value, leaving it unseen if it is new.
    pub fn borrow(&self) -> Ref<'_, T> {
        self.shared.read()
    }

    /// The current value, now seen.
    pub fn borrow_and_update(&mut self) -> Ref<'_, T> {
        let value = self.shared.read();
        // Read under the value's lock: no change slips between the two.
        self.seen = self.shared.version.load(Ordering::SeqCst);
        value
    }

    /// Whether a version this receiver has not seen is there; an error once every sender
    /// is gone.
    pub fn has_changed(&self) -> Result<bool, RecvError> {
        if self.shared.closed() {
            return Err(RecvError);
        }
        Ok(self.shared.version.load(Ordering::SeqCst) != self.seen)
    }

    /// Waits for a version this receiver has not seen, and marks it seen. An error once
    /// every sender is gone with nothing new left to see.
    pub async fn changed(&mut self) -> Result<(), RecvError> {
        loop {
            // Registered before the version is read: a change in between still wakes it.
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let version = self.shared.version.load(Ordering::SeqCst);
            if version != self.seen {
                self.seen = version;
                return Ok(());
            }
            if self.shared.closed() {
                return Err(RecvError);
            }
            changed.await;
        }
    }

    /// Waits until the value satisfies `ready` (checked at once, then at every change) and
    /// returns it, seen. An error once every sender is gone and the value never did.
    pub async fn wait_for(&mut self, mut ready: impl FnMut(&T) -> bool) -> Result<Ref<'_, T>, RecvError> {
        loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let value = self.shared.read();
                let version = self.shared.version.load(Ordering::SeqCst);
                if ready(&value) {
                    self.seen = version;
                    break;
                }
                self.seen = version;
            }
            if self.shared.closed() {
                return Err(RecvError);
            }
            changed.await;
        }
        Ok(self.shared.read())
    }
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        let mut receiver = Receiver::new(self.shared.clone());
        receiver.seen = self.seen;
        receiver
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        if self.shared.receivers.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.shared.unobserved.notify_waiters();
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver").field("value", &*self.borrow()).field("seen", &self.seen).finish()
    }
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
    }

    #[test]
    fn a_receiver_sees_each_change_once_and_the_end_of_its_senders() {
        runtime().block_on(async {
            let (sender, mut receiver) = channel(0u64);
            assert_eq!(receiver.has_changed(), Ok(false));
            sender.send_replace(1);
            sender.send_replace(2);
            assert_eq!(receiver.has_changed(), Ok(true));
            receiver.changed().await.expect("a change");
            assert_eq!(*receiver.borrow(), 2, "changed marks the newest value seen");
            assert!(!sender.send_if_modified(|_| false), "an unchanged value is no new version");
            assert_eq!(receiver.has_changed(), Ok(false));
            sender.send_modify(|value| *value += 1);
            drop(sender);
            // What was sent before the last sender went is still seen, then the end.
            receiver.changed().await.expect("the last change");
            assert_eq!(*receiver.borrow_and_update(), 3);
            assert_eq!(receiver.changed().await, Err(RecvError));
            assert_eq!(receiver.has_changed(), Err(RecvError));
        });
    }

    #[test]
    fn waiters_wake_in_the_order_they_began_to_wait() {
        runtime().block_on(async {
            let (sender, receiver) = channel(0u64);
            let order = Arc::new(std::sync::Mutex::new(Vec::new()));
            let mut waiting = Vec::new();
            for waiter in 0..6 {
                let (mut receiver, order) = (receiver.clone(), order.clone());
                waiting.push(tokio::spawn(async move {
                    receiver.wait_for(|value| *value >= 5).await.expect("reached");
                    order.lock().expect("order lock").push(waiter);
                }));
                // Each waiter is parked before the next one starts.
                tokio::task::yield_now().await;
            }
            for value in 1..=5 {
                sender.send_replace(value);
                tokio::task::yield_now().await;
            }
            for waiter in waiting {
                waiter.await.expect("waiter");
            }
            assert_eq!(*order.lock().expect("order lock"), vec![0, 1, 2, 3, 4, 5]);
        });
    }

    #[test]
    fn send_needs_a_receiver_and_closed_waits_for_the_last() {
        runtime().block_on(async {
            let (sender, receiver) = channel("a");
            let second = receiver.clone();
            assert_eq!(sender.receiver_count(), 2);
            assert_eq!(sender.send("b"), Ok(()));
            drop(receiver);
            let closed = tokio::spawn({
                let sender = sender.clone();
                async move { sender.closed().await }
            });
            tokio::task::yield_now().await;
            assert!(!closed.is_finished());
            drop(second);
            closed.await.expect("closed");
            assert!(sender.is_closed());
            assert_eq!(sender.send("c"), Err(SendError("c")));
            assert_eq!(*sender.borrow(), "b", "a refused send leaves the value");
            let late = sender.subscribe();
            assert_eq!(*late.borrow(), "b");
        });
    }

    #[test]
    fn wait_for_returns_at_once_when_the_value_is_ready_and_fails_when_it_never_is() {
        runtime().block_on(async {
            let (sender, mut receiver) = channel(7u64);
            assert_eq!(*receiver.wait_for(|value| *value == 7).await.expect("ready now"), 7);
            let waiter = tokio::spawn(async move { receiver.wait_for(|value| *value == 100).await.map(|value| *value) });
            tokio::task::yield_now().await;
            sender.send_replace(8);
            drop(sender);
            assert_eq!(waiter.await.expect("waiter"), Err(RecvError));
        });
    }
}
