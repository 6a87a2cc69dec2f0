//! A cluster member's election, running: the leased engine driven against the bucket and the
//! clock, fed the leader's heartbeats, and publishing the member's [`Standing`] for the node
//! to check at every acknowledgement and linearizable read (docs/clustering.md
//! "Leadership").

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use crate::env::signal;

use super::engine::{Command, Election, Event, WriteOutcome};
use super::lock::{read_lock, write_lock, LockRecord};
use crate::env::{Clock, ObjectStore};

/// What a member's election says at the moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Standing {
    /// The term this member holds (`None`: it follows, or has not learnt yet).
    pub term: Option<u64>,
    /// Until when (monotonic, this member's clock) the held term's lease holds.
    pub until: Duration,
    /// The lock's holder as last read (whom a follower forwards to).
    pub holder: Option<LockRecord>,
    /// Set when the election stopped for good (the store broke its conditions).
    pub stopped: Option<String>,
    /// While it holds a term: the lock's ETag after its last write that landed (what its
    /// heartbeats tell followers).
    pub lock_etag: Option<String>,
}

impl Standing {
    /// The term this member may act as leader for at `now`: it holds it and its lease has
    /// not run out (lease-from-send).
    pub fn leads_at(&self, now: Duration) -> Option<u64> {
        self.term.filter(|_| now < self.until)
    }
}

/// A leader's heartbeat as a follower received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatSeen {
    /// When it arrived (the receiver's monotonic clock).
    pub received: Duration,
    pub term: u64,
    pub lock_etag: String,
    pub lease_ms: u64,
    pub leader: String,
}

/// What the member's election runs against.
pub struct MemberElection {
    pub election: Election,
    pub store: Arc<dyn ObjectStore>,
    pub clock: Arc<dyn Clock>,
    /// The newest heartbeat received from a leader.
    pub heartbeats: signal::Receiver<Option<HeartbeatSeen>>,
    /// Where the standing goes.
    pub standing: signal::Sender<Standing>,
}

/// Runs the member's election until `keep_going` turns false. `healthy` is asked at each
/// tick: a holder that is not healthy (no majority answered it within the lease) lets its
/// lease run out, a watcher that is not (a learner, or a node that cannot serve) never takes
/// over.
pub async fn run_member(mut member: MemberElection, healthy: impl Fn() -> bool, keep_going: impl Fn() -> bool) {
    let clock = member.clock.clone();
    let mut pending: VecDeque<Command> = member.election.handle(Event::Follow { now: clock.monotonic(), wall_ms: clock.wall_ms() }).into();
    let mut wake = clock.monotonic();
    let mut heartbeats_open = true;
    loop {
        while let Some(command) = pending.pop_front() {
            let event = match command {
                Command::ReadLock => Some(match read_lock(member.store.as_ref()).await {
                    Ok(lock) => Event::LockRead { now: clock.monotonic(), lock },
                    Err(error) => {
                        tracing::debug!(%error, "election: could not read the bucket's lock");
                        Event::LockReadFailed { now: clock.monotonic(), error: error.to_string() }
                    }
                }),
                Command::WriteLock { record, condition } => {
                    let outcome = match write_lock(member.store.as_ref(), &record, condition).await {
                        Ok(Some(etag)) => WriteOutcome::Written { etag },
                        Ok(None) => WriteOutcome::Conflict,
                        Err(error) => WriteOutcome::Failed(error.to_string()),
                    };
                    Some(Event::LockWritten { now: clock.monotonic(), outcome })
                }
                Command::Lead { term } => {
                    tracing::info!(term, "election: this member took the lock");
                    member.standing.send_modify(|standing| {
                        standing.term = Some(term);
                        standing.until = Duration::ZERO;
                    });
                    None
                }
                Command::Lease { term, until } => {
                    member.standing.send_modify(|standing| {
                        if standing.term == Some(term) {
                            standing.until = until;
                        }
                    });
                    None
                }
                Command::Holder { record } => {
                    tracing::info!(term = record.term, holder = %record.node, "election: the lock's holder");
                    member.standing.send_modify(|standing| standing.holder = Some(record));
                    None
                }
                Command::Fenced { term, newer_term, holder } => {
                    tracing::warn!(term, newer_term, %holder, "election: deposed by a newer term");
                    member.standing.send_modify(|standing| {
                        standing.term = None;
                        standing.until = Duration::ZERO;
                    });
                    None
                }
                Command::WakeAt(at) => {
                    wake = at;
                    None
                }
                Command::GiveUp { reason } => {
                    tracing::error!(%reason, "election: stopped");
                    member.standing.send_modify(|standing| {
                        standing.term = None;
                        standing.until = Duration::ZERO;
                        standing.stopped = Some(reason);
                    });
                    return;
                }
            };
            if let Some(event) = event {
                pending.extend(member.election.handle(event));
            }
        }
        let etag = member.election.lock_etag().map(str::to_string);
        if member.standing.borrow().lock_etag != etag {
            member.standing.send_modify(|standing| standing.lock_etag = etag);
        }
        if !keep_going() {
            return;
        }
        let sleep = clock.sleep(wake.saturating_sub(clock.monotonic()));
        let event = tokio::select! {
            // In order (tokio's random pick would be the one draw the simulator cannot
            // seed): the tick first, so heartbeats never hold one up.
            biased;
            () = sleep => Event::Tick { now: clock.monotonic(), healthy: healthy() },
            changed = member.heartbeats.changed(), if heartbeats_open => {
                let beat = member.heartbeats.borrow_and_update().clone();
                match (changed, beat) {
                    (Ok(()), Some(beat)) => Event::Heartbeat {
                        now: beat.received,
                        term: beat.term,
                        etag: beat.lock_etag,
                        lease_ms: beat.lease_ms,
                        leader: beat.leader,
                    },
                    // No heartbeats will come (the sender is gone): ticks only.
                    _ => {
                        heartbeats_open = false;
                        continue;
                    }
                }
            }
        };
        pending.extend(member.election.handle(event));
    }
}

#[cfg(test)]
#[path = "member_test.rs"]
mod member_test;
