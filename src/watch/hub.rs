//! WatchHub: the ring of recent revisions' events and the visible-revision signal.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::mvcc::RevisionEvents;

#[derive(Debug)]
pub struct WatchHub {
    ring: Mutex<Ring>,
    /// The visible revision, and a wake-up for every watcher waiting past it. Not a
    /// `tokio::sync::watch`: its receivers wait on one of eight queues picked at random
    /// (from a process-wide seed), so the order watchers woke in, and with it a simulator
    /// seed's run, changed with what ran before in the process (robustness #26). `Notify`
    /// wakes its waiters in the order they came.
    visible: AtomicI64,
    changed: Notify,
    watchers: AtomicUsize,
}

#[derive(Debug)]
struct Ring {
    /// Events of every revision in `covered_from..=visible` that changed something.
    revisions: VecDeque<Arc<RevisionEvents>>,
    covered_from: i64,
    /// Events kept at most (whole revisions are dropped from the front past it).
    events_max: usize,
    events: usize,
}

impl WatchHub {
    pub fn new(visible: i64, events_max: usize) -> Self {
        let ring = Ring { revisions: VecDeque::new(), covered_from: visible + 1, events_max, events: 0 };
        Self { ring: Mutex::new(ring), visible: AtomicI64::new(visible), changed: Notify::new(), watchers: AtomicUsize::new(0) }
    }

    pub fn visible(&self) -> i64 {
        self.visible.load(Ordering::SeqCst)
    }

    /// Waits until the visible revision is above `seen`, and returns it.
    pub async fn visible_above(&self, seen: i64) -> i64 {
        loop {
            // Registered before the check, so a publish in between still wakes us.
            let mut changed = std::pin::pin!(self.changed.notified());
            changed.as_mut().enable();
            let visible = self.visible();
            if visible > seen {
                return visible;
            }
            changed.await;
        }
    }

    pub fn has_watchers(&self) -> bool {
        self.watchers.load(Ordering::SeqCst) > 0
    }

    pub(super) fn add_watcher(&self) {
        self.watchers.fetch_add(1, Ordering::SeqCst);
    }

    pub(super) fn remove_watcher(&self) {
        self.watchers.fetch_sub(1, Ordering::SeqCst);
    }

    pub fn watcher_count(&self) -> usize {
        self.watchers.load(Ordering::SeqCst)
    }

    /// Makes `visible` readable. `events` holds every changed revision up to it when the
    /// batch built them; `None` (nobody was watching) empties the ring, and later readers
    /// of those revisions go to the store.
    pub fn publish(&self, visible: i64, events: Option<Vec<RevisionEvents>>) {
        {
            let mut ring = self.ring.lock().expect("watch ring lock");
            match events {
                Some(events) => {
                    for revision in events {
                        assert!(revision.revision >= ring.covered_from, "ring revisions only grow");
                        ring.events += revision.events.len();
                        ring.revisions.push_back(Arc::new(revision));
                    }
                    ring.trim();
                }
                None => {
                    ring.revisions.clear();
                    ring.events = 0;
                    ring.covered_from = visible + 1;
                }
            }
        }
        let previous = self.visible.swap(visible, Ordering::SeqCst);
        assert!(visible >= previous, "the visible revision never goes back");
        self.changed.notify_waiters();
    }

    /// Revisions `from..=to` from the ring, or None when the ring does not reach back to
    /// `from` (the caller reads the store).
    pub fn read(&self, from: i64, to: i64) -> Option<Vec<Arc<RevisionEvents>>> {
        let ring = self.ring.lock().expect("watch ring lock");
        if from < ring.covered_from {
            return None;
        }
        let start = ring.revisions.partition_point(|revision| revision.revision < from);
        Some(ring.revisions.iter().skip(start).take_while(|revision| revision.revision <= to).cloned().collect())
    }
}

impl Ring {
    fn trim(&mut self) {
        while self.events > self.events_max {
            let Some(front) = self.revisions.pop_front() else { break };
            self.events -= front.events.len();
            self.covered_from = front.revision + 1;
        }
    }
}
