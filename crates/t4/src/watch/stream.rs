//! WatchStream: one watcher's cursor over the committed log.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use t4_proto::mvccpb::event::EventType;
use t4_proto::mvccpb::Event;

use crate::error::{Error, Result};
use crate::mvcc::{KeySpan, RevisionEvents, Store};

use super::hub::WatchHub;

/// Revisions read from the store in one step when catching up.
const CATCHUP_REVISIONS_MAX: i64 = 1000;

/// What to watch, etcd's WatchCreateRequest minus the transport's fields.
#[derive(Debug, Clone, Default)]
pub struct WatchOptions {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    /// First revision to deliver; 0 = the next one to be committed.
    pub start_revision: i64,
    pub prev_kv: bool,
    pub filter_puts: bool,
    pub filter_deletes: bool,
}

pub struct WatchStream {
    hub: Arc<WatchHub>,
    store: Arc<Store>,
    span: KeySpan,
    options: WatchOptions,
    /// Next revision to look at.
    cursor: i64,
    ready: VecDeque<RevisionEvents>,
    /// Every matching event below this revision has been handed out by `next` and the
    /// caller has come back for more (so it has dealt with them). Shared so a transport can
    /// tell, while `next` is pending, whether a progress notification would be truthful.
    delivered: Arc<AtomicI64>,
}

impl std::fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchStream").field("span", &self.span).field("cursor", &self.cursor).finish()
    }
}

impl WatchStream {
    pub(crate) fn new(hub: Arc<WatchHub>, store: Arc<Store>, options: WatchOptions) -> Result<Self> {
        if options.key.is_empty() {
            return Err(Error::EmptyKey);
        }
        let current = hub.visible();
        let cursor = if options.start_revision > 0 { options.start_revision } else { current + 1 };
        hub.add_watcher();
        let span = KeySpan::new(&options.key, &options.range_end);
        let delivered = Arc::new(AtomicI64::new(cursor));
        Ok(Self { hub, store, span, options, cursor, ready: VecDeque::new(), delivered })
    }

    /// The next revision this watcher has not yet delivered: everything below it that
    /// matched has been returned (what a progress notification reports, minus one).
    pub fn next_revision(&self) -> i64 {
        self.ready.front().map_or(self.cursor, |ready| ready.revision)
    }

    /// A shared view of [`WatchStream::next_revision`] as of the last call to `next`,
    /// kept current while `next` waits.
    pub fn delivered(&self) -> Arc<AtomicI64> {
        self.delivered.clone()
    }

    /// The next revision's matching events, waiting until there is one (never `None` today:
    /// a watch ends when its owner drops it; the type leaves room for an end).
    /// `Err(Compacted)` when the history it needs was compacted; the watch is then over.
    pub async fn next(&mut self) -> Option<Result<RevisionEvents>> {
        loop {
            self.delivered.store(self.next_revision(), Ordering::SeqCst);
            if let Some(ready) = self.ready.pop_front() {
                return Some(Ok(ready));
            }
            let visible = self.hub.visible();
            if self.cursor > visible {
                self.hub.visible_above(visible).await;
                continue;
            }
            let upto = visible.min(self.cursor + CATCHUP_REVISIONS_MAX - 1);
            if let Err(error) = self.fill(upto).await {
                return Some(Err(error));
            }
            self.cursor = upto + 1;
        }
    }

    /// Like [`WatchStream::next`] but returns at once with what is ready (or None).
    pub fn try_next(&mut self) -> Option<RevisionEvents> {
        self.ready.pop_front()
    }

    /// Gives back the revision the last `try_next` returned, undelivered: the next call
    /// returns it again.
    pub fn put_back(&mut self, revision: RevisionEvents) {
        self.ready.push_front(revision);
    }

    async fn fill(&mut self, upto: i64) -> Result<()> {
        // The ring may still hold revisions below the compaction point; as in etcd, a watcher
        // that needs them is told they are compacted, wherever they would come from.
        let compact = self.store.compact_revision();
        if self.cursor < compact {
            return Err(Error::Compacted { compact_revision: compact });
        }
        if let Some(shared) = self.hub.read(self.cursor, upto) {
            for revision in &shared {
                self.take(revision.revision, revision.events.iter());
            }
            return Ok(());
        }
        let (store, span, from, prev_kv) = (self.store.clone(), self.span.clone(), self.cursor, self.options.prev_kv);
        let revisions = crate::env::blocking(move || store.events(&span, from, upto, prev_kv)).await?;
        for revision in &revisions {
            self.take(revision.revision, revision.events.iter());
        }
        Ok(())
    }

    /// Queues the events of one revision this watcher wants, whole.
    fn take<'a>(&mut self, revision: i64, events: impl Iterator<Item = &'a Event>) {
        let events: Vec<Event> = events.filter(|event| self.wants(event)).map(|event| self.shape(event)).collect();
        if !events.is_empty() {
            self.ready.push_back(RevisionEvents { revision, events });
        }
    }

    fn wants(&self, event: &Event) -> bool {
        let key = event.kv.as_ref().map_or(&[][..], |kv| kv.key.as_slice());
        let is_put = event.r#type == EventType::Put as i32;
        let filtered = if is_put { self.options.filter_puts } else { self.options.filter_deletes };
        self.span.contains(key) && !filtered
    }

    fn shape(&self, event: &Event) -> Event {
        Event { r#type: event.r#type, kv: event.kv.clone(), prev_kv: if self.options.prev_kv { event.prev_kv.clone() } else { None } }
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        self.hub.remove_watcher();
    }
}
