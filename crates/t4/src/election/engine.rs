//! The election engine: what a node does about the bucket's `lock`, as a pure state machine.
//!
//! Events in (what the driver saw: a lock read, the answer to a lock write, the time),
//! commands out (what the driver must do next). No I/O, no clock, no runtime: the engine's
//! tests feed events and compare the exact command lists. Today's rules are the single-node
//! ones (docs/design.md §5): take the next term by a conditional write on `lock`, then read
//! `lock` every `check_interval` while leading and stop at the first newer term. Clustering
//! (issue 17) adds the lease timing to this engine, not to the code around it.
//!
//! Invariants checked before each conditional write on `lock` (each named where it is
//! checked, in `check_lock_write`):
//! - **next-term**: the record names exactly one term more than the lock read (term 1 on a
//!   bucket with no lock), so terms run densely from 1 and every term has one taker;
//! - **read-condition**: the write is conditioned on the read it follows (`If-Match` of
//!   that read's ETag, or `If-None-Match: *` when there was no lock), so it lands only if
//!   nobody moved the lock since;
//! - **campaigning-only**: only a node that is campaigning writes the lock: never one that
//!   leads (it would take a term from itself) nor one that was fenced or gave up.

use std::time::Duration;

use crate::env::Condition;

use super::lock::LockRecord;

/// Most attempts to take a term while others race for it.
pub const TAKE_TERM_ATTEMPTS: usize = 64;

/// What the driver saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Take the next term (the node is opening). `wall_ms` goes into the record, for humans.
    Campaign { now: Duration, wall_ms: u64 },
    /// `lock` as read: its record and ETag, or none (no term was ever taken).
    LockRead { now: Duration, lock: Option<(LockRecord, String)> },
    /// Reading `lock` failed (the store is down, or the record is damaged).
    LockReadFailed { now: Duration, error: String },
    /// The answer to the last [`Command::WriteLock`].
    LockWritten { now: Duration, outcome: WriteOutcome },
    /// The time asked for by [`Command::WakeAt`] has come.
    Tick { now: Duration },
}

/// How a conditional write on `lock` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    Written,
    /// The condition failed: someone moved the lock since it was read.
    Conflict,
    Failed(String),
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    ReadLock,
    WriteLock {
        record: LockRecord,
        condition: Condition,
    },
    /// This node holds `term`: it may seal older terms, recover and serve.
    Lead {
        term: u64,
    },
    /// Send a [`Event::Tick`] at `at` (monotonic).
    WakeAt(Duration),
    /// A newer term holds the lock: stop acknowledging and serving.
    Fenced {
        term: u64,
        newer_term: u64,
        holder: String,
    },
    /// The campaign failed; the node cannot open.
    GiveUp {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Idle,
    /// Waiting for a lock read, to write the next term after it.
    Reading {
        wall_ms: u64,
    },
    /// Waiting for the answer to writing `term`.
    Writing {
        term: u64,
        wall_ms: u64,
    },
    /// Holding `term`; the next check is due at `check_at` (or a read is out, `reading`).
    Leading {
        term: u64,
        check_at: Duration,
        reading: bool,
    },
    Fenced,
    GaveUp,
}

/// One node's view of the election.
#[derive(Debug, Clone)]
pub struct Election {
    node: String,
    check_interval: Duration,
    state: State,
    attempts: usize,
}

impl Election {
    /// A node named `node` (written into the lock for humans) that checks the lock every
    /// `check_interval` once it leads.
    pub fn new(node: impl Into<String>, check_interval: Duration) -> Self {
        Self { node: node.into(), check_interval, state: State::Idle, attempts: 0 }
    }

    /// The term this node holds, if it leads.
    pub fn term(&self) -> Option<u64> {
        match self.state {
            State::Leading { term, .. } => Some(term),
            _ => None,
        }
    }

    /// Feeds one event; returns what to do, in order. An event the state does not expect (a
    /// late answer) changes nothing and asks for nothing.
    pub fn handle(&mut self, event: Event) -> Vec<Command> {
        match (self.state.clone(), event) {
            (State::Idle, Event::Campaign { wall_ms, .. }) => {
                self.state = State::Reading { wall_ms };
                self.attempts = 1;
                vec![Command::ReadLock]
            }
            (State::Reading { wall_ms }, Event::LockRead { lock, .. }) => self.write_lock(lock, wall_ms),
            (State::Reading { .. } | State::Writing { .. }, Event::LockReadFailed { error, .. }) => self.give_up(error),
            (State::Writing { term, wall_ms }, Event::LockWritten { now, outcome }) => match outcome {
                WriteOutcome::Written => {
                    let check_at = now + self.check_interval;
                    self.state = State::Leading { term, check_at, reading: false };
                    vec![Command::Lead { term }, Command::WakeAt(check_at)]
                }
                // Someone else moved the lock first: read it again.
                WriteOutcome::Conflict if self.attempts < TAKE_TERM_ATTEMPTS => {
                    self.attempts += 1;
                    self.state = State::Reading { wall_ms };
                    vec![Command::ReadLock]
                }
                WriteOutcome::Conflict => {
                    self.give_up(format!("could not take a term: the lock kept changing over {TAKE_TERM_ATTEMPTS} attempts"))
                }
                WriteOutcome::Failed(error) => self.give_up(error),
            },
            (State::Leading { term, check_at, reading: false }, Event::Tick { now }) => {
                if now < check_at {
                    // Early (a driver resuming the watch): wait on.
                    return vec![Command::WakeAt(check_at)];
                }
                self.state = State::Leading { term, check_at, reading: true };
                vec![Command::ReadLock]
            }
            (State::Leading { term, reading: true, .. }, Event::LockRead { now, lock }) => match lock {
                Some((lock, _)) if lock.term > term => {
                    self.state = State::Fenced;
                    vec![Command::Fenced { term, newer_term: lock.term, holder: lock.node }]
                }
                // Our own term (or, on a store that broke its conditions, an older one: the
                // uploads' create-only writes still fence this node if a newer term sealed it).
                _ => self.next_check(term, now),
            },
            // The store did not answer: try again at the next check.
            (State::Leading { term, reading: true, .. }, Event::LockReadFailed { now, .. }) => self.next_check(term, now),
            _ => Vec::new(),
        }
    }

    fn next_check(&mut self, term: u64, now: Duration) -> Vec<Command> {
        let check_at = now + self.check_interval;
        self.state = State::Leading { term, check_at, reading: false };
        vec![Command::WakeAt(check_at)]
    }

    fn give_up(&mut self, reason: String) -> Vec<Command> {
        self.state = State::GaveUp;
        vec![Command::GiveUp { reason }]
    }

    /// The conditional write that takes the term after `read`, once its invariants hold.
    fn write_lock(&mut self, read: Option<(LockRecord, String)>, wall_ms: u64) -> Vec<Command> {
        let (term, condition) = match &read {
            None => (1, Condition::IfNoneMatch),
            Some((lock, etag)) => (lock.term + 1, Condition::IfMatch(etag.clone())),
        };
        let record = LockRecord { term, node: self.node.clone(), wall_ms };
        if let Err(broken) = check_lock_write(&self.state, read.as_ref(), &record, &condition) {
            return self.give_up(broken);
        }
        self.state = State::Writing { term, wall_ms };
        vec![Command::WriteLock { record, condition }]
    }
}

/// Checks a write of `record` on `lock`, conditioned on `condition`, against the engine's
/// state and the read it follows; the first invariant it breaks, by name.
fn check_lock_write(state: &State, read: Option<&(LockRecord, String)>, record: &LockRecord, condition: &Condition) -> Result<(), String> {
    // campaigning-only
    if !matches!(state, State::Reading { .. }) {
        return Err(format!("invariant campaigning-only: a lock write while {state:?}"));
    }
    // next-term
    let read_term = read.map_or(0, |(lock, _)| lock.term);
    if record.term != read_term + 1 {
        return Err(format!("invariant next-term: a lock write of term {} after reading term {read_term}", record.term));
    }
    // read-condition
    let read_condition = read.map_or(Condition::IfNoneMatch, |(_, etag)| Condition::IfMatch(etag.clone()));
    if *condition != read_condition {
        return Err(format!("invariant read-condition: a lock write on {condition:?} after a read that gives {read_condition:?}"));
    }
    Ok(())
}

#[cfg(test)]
#[path = "engine_test.rs"]
mod engine_test;
