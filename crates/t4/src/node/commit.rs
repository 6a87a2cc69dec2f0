//! The commit point and the fail-stop: where a batch becomes visible and where the node stops.

use std::sync::atomic::Ordering;

use crate::error::{Error, Result};
use crate::mvcc::RevisionEvents;

use super::pipeline::Reply;
use super::Shared;

impl Shared {
    /// The failure that stopped the node, if one did.
    pub(super) fn failed(&self) -> Option<Error> {
        self.failure.lock().expect("failure lock").clone()
    }

    /// The one place a batch becomes visible, once it is durable at the node's level: reads
    /// see up to `revision` from here on, and its events go to watchers (with clustering,
    /// this is where followers are told too). Revisions never go back; a batch that spent
    /// none (leases, auth) leaves the revision where it was. A batch out of order would be
    /// a pipeline bug: the assert stops the syncer, and so the node (fail-stop).
    pub(super) fn commit_visible(&self, revision: i64, events: Option<Vec<RevisionEvents>>) {
        let previous = self.visible.swap(revision, Ordering::SeqCst);
        assert!(revision >= previous, "t4: a batch at revision {revision} was committed after one at {previous}");
        self.hub.publish(revision, events);
    }

    /// Stops the node from acknowledging anything more; returns the failure it stopped for
    /// (the first one, if it had already stopped).
    pub(super) fn fail(&self, error: Error) -> Error {
        self.fence.raise();
        self.store.raise_fence();
        let mut failure = self.failure.lock().expect("failure lock");
        if failure.is_none() {
            tracing::error!(%error, "t4: this node stops acknowledging writes until reopened");
            // Fencing keeps its kind (callers match on it); anything else is reported as the
            // storage failure it stopped the node for.
            *failure = Some(match error {
                Error::StorageFailure(_) | Error::Fenced(_) => error,
                other => Error::StorageFailure(other.to_string()),
            });
            self.failed.send_replace(true);
        }
        failure.clone().expect("just set")
    }
}

/// Answers each write with its response, or every one with the failure.
pub(super) fn answer(replies: Vec<Reply>, outcome: Result<()>) {
    for (sender, response) in replies {
        let _ = sender.send(match &outcome {
            Ok(()) => response,
            Err(failure) => Err(failure.clone()),
        });
    }
}
