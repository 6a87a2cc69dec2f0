//! Watching the bucket's lock: a newer term there fences this node.

use std::sync::Arc;
use std::time::Duration;

use crate::durable::TermLog;
use crate::error::Error;

use super::Shared;

/// Reads `lock` every `interval` while the node is open; a newer term there means this node
/// was fenced, so it stops (an idle node would otherwise only learn at its next upload).
pub(super) fn spawn_lock_watch(shared: &Arc<Shared>, log: &TermLog, interval: Duration) {
    let (weak, store, term, clock) = (Arc::downgrade(shared), log.store.clone(), log.term, shared.env.clock.clone());
    tokio::spawn(async move {
        loop {
            clock.sleep(interval).await;
            let Some(shared) = weak.upgrade() else { return };
            if shared.failed().is_some() || shared.jobs.lock().expect("jobs lock").is_none() {
                return;
            }
            match crate::durable::bucket::read_lock(store.as_ref()).await {
                Ok(Some((lock, _))) if lock.term > term => {
                    tracing::error!(term, newer_term = lock.term, node = %lock.node, "t4: fenced: a newer term holds the bucket's lock");
                    shared.fail(Error::Fenced(format!(
                        "term {} was taken by {} after this node's term {term}; this node stops serving",
                        lock.term, lock.node
                    )));
                    return;
                }
                Ok(_) => {}
                Err(error) => tracing::debug!(%error, "t4: could not read the bucket's lock; will try again"),
            }
        }
    });
}
