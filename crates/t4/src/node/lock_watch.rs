//! Watching the bucket's lock while the node serves: the election engine, run on by its
//! driver; a newer term there fences this node (an idle node would otherwise only learn at
//! its next upload).

use std::sync::Arc;

use crate::durability::TermLog;
use crate::election::driver::{self, Ended};
use crate::election::Election;
use crate::error::Error;

use super::Shared;

/// Runs `election` (which leads) on the term log's bucket until the node stops, fails or is
/// fenced.
pub(super) fn spawn_lock_watch(shared: &Arc<Shared>, log: &TermLog, mut election: Election) {
    let (weak, store, clock) = (Arc::downgrade(shared), log.store.clone(), shared.env.clock.clone());
    tokio::spawn(async move {
        let serving = || weak.upgrade().is_some_and(|shared| shared.failed().is_none() && shared.jobs.lock().expect("jobs lock").is_some());
        let Some(Ended::Fenced { term, newer_term, holder }) = driver::watch(&mut election, store.as_ref(), &clock, serving).await else {
            return;
        };
        let Some(shared) = weak.upgrade() else { return };
        tracing::error!(term, newer_term, node = %holder, "t4: fenced: a newer term holds the bucket's lock");
        shared
            .fail(Error::Fenced(format!("term {newer_term} was taken by {holder} after this node's term {term}; this node stops serving")));
    });
}
