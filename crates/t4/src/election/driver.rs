//! The election's driver: carries out the engine's commands against the bucket and the
//! clock, and feeds it what happened. All the deciding is in [`super::engine`].

use std::sync::Arc;
use std::time::Duration;

use super::engine::{Command, Election, Event, WriteOutcome};
use super::lock::{read_lock, write_lock};
use crate::env::{Clock, ObjectStore};
use crate::error::{Error, Result};

/// How a run of the engine ended.
#[derive(Debug)]
pub enum Ended {
    /// This node holds `term`. The engine leads: to watch the lock, run it again from a
    /// [`Event::Tick`].
    Leads { term: u64 },
    /// A newer term holds the lock.
    Fenced { term: u64, newer_term: u64, holder: String },
}

/// Runs `election` on `store` from `first` until it leads, is fenced, or gives up (the error
/// that made it give up; a condition it gave up on as a storage failure). `keep_going` is
/// asked before each wait: `false` stops the run with `None` (the node is closing).
pub async fn run(
    election: &mut Election,
    store: &dyn ObjectStore,
    clock: &Arc<dyn Clock>,
    first: Event,
    keep_going: impl Fn() -> bool,
) -> Result<Option<Ended>> {
    let mut pending = election.handle(first);
    // The error behind the last failed read or write: what a give-up reports.
    let mut last_error: Option<Error> = None;
    while !pending.is_empty() {
        let mut next = Vec::new();
        for command in pending {
            let event = match command {
                Command::ReadLock => match read_lock(store).await {
                    Ok(lock) => Event::LockRead { now: clock.monotonic(), lock },
                    Err(error) => {
                        tracing::debug!(%error, "election: could not read the bucket's lock");
                        let text = error.to_string();
                        last_error = Some(error);
                        Event::LockReadFailed { now: clock.monotonic(), error: text }
                    }
                },
                Command::WriteLock { record, condition } => {
                    let outcome = match write_lock(store, &record, condition).await {
                        Ok(Some(etag)) => WriteOutcome::Written { etag },
                        Ok(None) => WriteOutcome::Conflict,
                        Err(error) => {
                            let text = error.to_string();
                            last_error = Some(error);
                            WriteOutcome::Failed(text)
                        }
                    };
                    Event::LockWritten { now: clock.monotonic(), outcome }
                }
                Command::WakeAt(at) => {
                    if !keep_going() {
                        return Ok(None);
                    }
                    clock.sleep(at.saturating_sub(clock.monotonic())).await;
                    if !keep_going() {
                        return Ok(None);
                    }
                    Event::Tick { now: clock.monotonic(), healthy: true }
                }
                Command::Lead { term } => return Ok(Some(Ended::Leads { term })),
                Command::Fenced { term, newer_term, holder } => return Ok(Some(Ended::Fenced { term, newer_term, holder })),
                Command::GiveUp { reason } => return Err(last_error.unwrap_or(Error::StorageFailure(reason))),
                // Leased mode only (run by the member driver, not here).
                Command::Lease { .. } | Command::Holder { .. } => continue,
            };
            next.extend(election.handle(event));
        }
        pending = next;
    }
    Ok(None)
}

/// Takes the next term on `store` for `node`: the engine's campaign, run to its end.
pub async fn take_term(store: &dyn ObjectStore, node: &str, clock: &Arc<dyn Clock>, check_interval: Duration) -> Result<(u64, Election)> {
    let mut election = Election::new(node, check_interval);
    let campaign = Event::Campaign { now: clock.monotonic(), wall_ms: clock.wall_ms() };
    match run(&mut election, store, clock, campaign, || true).await? {
        Some(Ended::Leads { term }) => Ok((term, election)),
        other => Err(Error::StorageFailure(format!("the campaign for a term ended without one: {other:?}"))),
    }
}

/// Watches the lock for a node that leads: reads it every check until a newer term holds it
/// (returned) or `keep_going` turns false (`None`). Failed reads are retried at the next check.
pub async fn watch(
    election: &mut Election,
    store: &dyn ObjectStore,
    clock: &Arc<dyn Clock>,
    keep_going: impl Fn() -> bool,
) -> Option<Ended> {
    let tick = Event::Tick { now: clock.monotonic(), healthy: true };
    match run(election, store, clock, tick, keep_going).await {
        Ok(ended) => ended,
        // A leading engine never gives up (it retries failed reads); kept for completeness.
        Err(error) => {
            tracing::warn!(%error, "t4: the lock watch stopped");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::durability::layout;
    use crate::env::RealClock;
    use crate::object::MemObjectStore;

    #[tokio::test]
    async fn terms_run_densely_and_a_watch_ends_at_the_next_taker() {
        let store = MemObjectStore::new();
        let clock: Arc<dyn Clock> = Arc::new(RealClock::new());
        let check = Duration::from_millis(20);
        let (first, mut election) = take_term(&store, "a", &clock, check).await.unwrap();
        assert_eq!(first, 1);
        assert_eq!(read_lock(&store).await.unwrap().unwrap().0.node, "a");
        let (second, _) = take_term(&store, "b", &clock, check).await.unwrap();
        assert_eq!(second, 2);
        match watch(&mut election, &store, &clock, || true).await {
            Some(Ended::Fenced { term: 1, newer_term: 2, holder }) => assert_eq!(holder, "b"),
            other => panic!("{other:?}"),
        }
        // A closing node's watch ends without a verdict.
        let (_, mut third) = take_term(&store, "c", &clock, check).await.unwrap();
        assert!(watch(&mut third, &store, &clock, || false).await.is_none());
    }

    #[tokio::test]
    async fn a_damaged_lock_stops_the_campaign_with_its_error() {
        let store = MemObjectStore::new();
        store.put(layout::LOCK, Bytes::from_static(b"not a lock"), crate::env::Condition::Always).await.unwrap();
        let clock: Arc<dyn Clock> = Arc::new(RealClock::new());
        let error = take_term(&store, "a", &clock, Duration::from_secs(1)).await.unwrap_err();
        assert!(matches!(error, Error::Corrupt(_)), "{error:?}");
    }
}
