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
    /// Bytes of those events kept at most, likewise.
    bytes_max: usize,
    bytes: usize,
}

/// Default bound on the bytes of events the ring keeps: with values of up to 1.5 MiB,
/// 65,536 events could otherwise hold ~96 GiB. Older revisions are read from the store.
pub const RING_BYTES_MAX: usize = 256 << 20;

/// What one revision's events take in the ring (keys and values, and prev values).
fn revision_bytes(revision: &RevisionEvents) -> usize {
    revision.events.iter().map(prost::Message::encoded_len).sum()
}

impl WatchHub {
    /// A hub keeping at most `events_max` events of at most `bytes_max` bytes in memory.
    pub fn new(visible: i64, events_max: usize, bytes_max: usize) -> Self {
        let ring = Ring { revisions: VecDeque::new(), covered_from: visible + 1, events_max, events: 0, bytes_max, bytes: 0 };
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
                        ring.bytes += revision_bytes(&revision);
                        ring.revisions.push_back(Arc::new(revision));
                    }
                    ring.trim();
                }
                None => {
                    ring.revisions.clear();
                    ring.events = 0;
                    ring.bytes = 0;
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
        while self.events > self.events_max || self.bytes > self.bytes_max {
            let Some(front) = self.revisions.pop_front() else { break };
            self.events -= front.events.len();
            self.bytes -= revision_bytes(&front);
            self.covered_from = front.revision + 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use t4_proto::mvccpb::{Event, KeyValue};

    use super::*;

    fn revision(revision: i64, value_bytes: usize) -> RevisionEvents {
        let kv = KeyValue { key: b"k".to_vec(), value: vec![1; value_bytes], mod_revision: revision, ..Default::default() };
        RevisionEvents { revision, events: vec![Event { kv: Some(kv), ..Default::default() }] }
    }

    #[test]
    fn the_ring_keeps_at_most_its_bytes_and_readers_fall_back_past_it() {
        let hub = WatchHub::new(1, 65_536, 10_000);
        for at in 2..=11 {
            hub.publish(at, Some(vec![revision(at, 2_000)]));
        }
        let ring = hub.ring.lock().unwrap();
        assert!(ring.bytes <= 10_000, "{} bytes kept", ring.bytes);
        assert_eq!(ring.revisions.len(), 4, "four revisions of ~2 KB fit in 10 KB");
        drop(ring);
        assert!(hub.read(2, 11).is_none(), "revisions dropped for their bytes are read from the store");
        assert_eq!(hub.read(8, 11).map(|revisions| revisions.len()), Some(4));
    }
}
