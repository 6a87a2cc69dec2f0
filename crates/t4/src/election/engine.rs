//! The election engine: what a node does about the bucket's `lock`, as a pure state machine.
//!
//! Events in (what the driver saw: a lock read, the answer to a lock write, the time, a
//! leader's heartbeat), commands out (what the driver must do next). No I/O, no clock, no
//! runtime: the engine's tests feed events and compare the exact command lists.
//!
//! Two modes share the engine (docs/clustering.md "Leadership"):
//! - **solo** ([`Election::new`]): a single node takes the next term at once and then reads
//!   `lock` every `check_interval`, stopping at the first newer term (its uploads' seals
//!   fence it in any case: docs/design.md §5);
//! - **leased** ([`Election::leased`]): cluster members. The holder renews the lock by a
//!   conditional write every L/3 and holds a lease until the *send* time of its last
//!   renewal that landed plus L − D ([`LeaseTiming::holds_until`]); it renews only while the
//!   driver says it is healthy (a majority of voters hears it). Every other member watches
//!   the lock and takes it over only once it has seen one lock version unchanged for longer
//!   than L + D on its own clock ([`LeaseTiming::takeover_after`]). No wall clock is ever
//!   compared with another machine's.
//!
//! Invariants checked before each conditional write on `lock` (each named where it is
//! checked, in `check_lock_write`):
//! - **next-term**: a takeover names exactly one term more than the lock read (term 1 on a
//!   bucket with no lock), so terms run densely from 1 and every term has one taker;
//! - **read-condition**: a takeover is conditioned on the read it follows (`If-Match` of
//!   that read's ETag, or `If-None-Match: *` when there was no lock), so it lands only if
//!   nobody moved the lock since;
//! - **campaigning-only**: only a node that is campaigning takes a term: never one that
//!   holds one (it would take a term from itself) nor one that was fenced or gave up;
//! - **lease-waited**: a leased takeover of a held lock comes only after that lock version
//!   stayed unchanged for the takeover wait;
//! - **renew-own-term**: a renewal rewrites the holder's own term, conditioned on the ETag of
//!   its own last write, and only while it holds that term.

use std::time::Duration;

use crate::env::Condition;

use super::lock::LockRecord;

/// Most attempts to take a term while others race for it (solo mode).
pub const TAKE_TERM_ATTEMPTS: usize = 64;

/// A leased holder's timing: the lease L and the stated bound D on how far two members'
/// monotonic clocks may drift apart over one lease.
///
/// Safe while the clocks' rates differ by less than D / L: the holder stops at most
/// `(L − D)(1 + ρ)` of real time after its renewal was sent, a candidate moves at least
/// `(L + D)(1 − ρ)` after that renewal landed, and the second is later whenever ρ ≤ D / L.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    pub lease: Duration,
    pub drift: Duration,
}

impl LeaseTiming {
    /// The defaults: a 5 s lease and a 500 ms drift bound (a 10% rate bound, orders of
    /// magnitude above what real clocks drift).
    pub const DEFAULT: LeaseTiming = LeaseTiming { lease: Duration::from_secs(5), drift: Duration::from_millis(500) };

    /// How often the holder renews (L/3: two renewals may fail before the lease runs out).
    pub fn renew_every(&self) -> Duration {
        self.lease / 3
    }

    /// How often a member that does not hold the lock reads it (as often as the holder
    /// renews; a leader's heartbeats bring each renewal's ETag sooner).
    pub fn poll_every(&self) -> Duration {
        self.lease / 3
    }

    /// When a renewal (or takeover) sent at `sent` stops holding on the holder's clock:
    /// `sent + L − D`.
    pub fn holds_until(&self, sent: Duration) -> Duration {
        sent + self.lease - self.drift
    }

    /// How long a lock version must stay unchanged before this member takes it over: the
    /// longer of its own lease and the one the holder wrote (`lease_ms`), plus D.
    pub fn takeover_after(&self, holder_lease_ms: u64) -> Duration {
        if takeover_without_waiting() {
            return self.drift;
        }
        self.lease.max(Duration::from_millis(holder_lease_ms)) + self.drift
    }

    /// The timing's own rules: a lease of at least 30 ms and a drift bound under half of it
    /// (so a renewal is due well before the lease runs out).
    pub fn validate(&self) -> Result<(), String> {
        if self.lease < Duration::from_millis(30) {
            return Err(format!("the leader lease must be at least 30ms (got {:?})", self.lease));
        }
        if self.drift.is_zero() || self.drift * 2 >= self.lease {
            return Err(format!(
                "the clock drift bound must be above zero and under half the lease (got {:?} for a {:?} lease)",
                self.drift, self.lease
            ));
        }
        Ok(())
    }

    /// The retry after a renewal or read that failed: soon, but not in a loop.
    fn retry_after(&self) -> Duration {
        (self.lease / 12).max(Duration::from_millis(5))
    }
}

/// Planted (simulator tests only): takeovers wait for the drift bound alone.
fn takeover_without_waiting() -> bool {
    #[cfg(feature = "planted-bugs")]
    return crate::planted::planted(crate::planted::Bug::TakeoverWithoutWaiting);
    #[cfg(not(feature = "planted-bugs"))]
    false
}

/// Who this member is, as written into the lock when it takes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub node: String,
    pub peer_url: String,
    pub client_url: String,
}

/// What the driver saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Solo: take the next term now (the node is opening). `wall_ms` goes into the record,
    /// for humans.
    Campaign { now: Duration, wall_ms: u64 },
    /// Leased: start watching the lock, to follow its holder or take it over.
    Follow { now: Duration, wall_ms: u64 },
    /// `lock` as read: its record and ETag, or none (no term was ever taken).
    LockRead { now: Duration, lock: Option<(LockRecord, String)> },
    /// Reading `lock` failed (the store is down, or the record is damaged).
    LockReadFailed { now: Duration, error: String },
    /// The answer to the last [`Command::WriteLock`].
    LockWritten { now: Duration, outcome: WriteOutcome },
    /// The time asked for by [`Command::WakeAt`] has come (or later). `healthy`: the holder
    /// may renew (a majority of voters hears it) / a watcher may take over (it is a voter
    /// and can serve).
    Tick { now: Duration, healthy: bool },
    /// Leased: a leader's heartbeat, received at `now`, named the lock's ETag after its
    /// last renewal. A version is known to be current no later than when a heartbeat
    /// naming it arrived, so the takeover wait may count from then.
    Heartbeat { now: Duration, term: u64, etag: String, lease_ms: u64, leader: String },
}

/// How a conditional write on `lock` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// It landed; the lock's new ETag.
    Written {
        etag: String,
    },
    /// The condition failed: someone moved the lock since it was read.
    Conflict,
    Failed(String),
}

/// What the driver must do (or learn).
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
    /// Leased: the holder's lease now runs until `until` (monotonic). Past it the node
    /// acknowledges no write and serves no linearizable read until a renewal lands.
    Lease {
        term: u64,
        until: Duration,
    },
    /// Leased: the lock as last read names this holder (whom followers follow).
    Holder {
        record: LockRecord,
    },
    /// Send a [`Event::Tick`] at `at` (monotonic).
    WakeAt(Duration),
    /// A newer term holds the lock: stop acknowledging and serving as leader (a leased
    /// member watches on, as a follower).
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

/// What a leased member last saw of a lock version it does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    etag: String,
    term: u64,
    lease_ms: u64,
    /// When this member first knew the version to be current (its own clock).
    since: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Busy {
    No,
    Reading,
    /// A renewal of `record`, sent at `sent`.
    Renewing {
        sent: Duration,
        record: LockRecord,
    },
}

// One per node, cloned once per event: a boxed variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Idle,
    /// Solo: waiting for a lock read, to write the next term after it.
    Reading {
        wall_ms: u64,
    },
    /// Waiting for the answer to taking `term`, sent at `sent`.
    Writing {
        term: u64,
        wall_ms: u64,
        sent: Duration,
    },
    /// Solo: holding `term`; the next check is due at `check_at` (or a read is out).
    Leading {
        term: u64,
        check_at: Duration,
        reading: bool,
    },
    /// Leased: holding `term` through `record` (ETag `etag`), with a lease until `until`.
    Holding {
        term: u64,
        record: LockRecord,
        etag: String,
        until: Duration,
        next_at: Duration,
        busy: Busy,
    },
    /// Leased: watching a lock this member does not hold.
    Watching {
        seen: Option<Seen>,
        next_at: Duration,
        reading: bool,
        wall_ms: u64,
    },
    Fenced,
    GaveUp,
}

/// One node's view of the election.
#[derive(Debug, Clone)]
pub struct Election {
    identity: Identity,
    /// Solo mode's check interval.
    check_interval: Duration,
    /// Leased mode's timing (`None`: solo).
    timing: Option<LeaseTiming>,
    state: State,
    attempts: usize,
    /// The holder last announced with [`Command::Holder`] (term, node).
    announced: Option<(u64, String)>,
    /// Leased: whether the last tick said this member may take the lock over.
    may_lead: bool,
}

impl Election {
    /// Solo: a node named `node` (written into the lock for humans) that checks the lock
    /// every `check_interval` once it leads.
    pub fn new(node: impl Into<String>, check_interval: Duration) -> Self {
        let identity = Identity { node: node.into(), ..Default::default() };
        Self { identity, check_interval, timing: None, state: State::Idle, attempts: 0, announced: None, may_lead: true }
    }

    /// Leased: a cluster member with this identity and timing.
    pub fn leased(identity: Identity, timing: LeaseTiming) -> Self {
        Self {
            identity,
            check_interval: timing.poll_every(),
            timing: Some(timing),
            state: State::Idle,
            attempts: 0,
            announced: None,
            may_lead: true,
        }
    }

    /// The term this node holds, if it leads.
    pub fn term(&self) -> Option<u64> {
        match self.state {
            State::Leading { term, .. } | State::Holding { term, .. } => Some(term),
            _ => None,
        }
    }

    /// Leased: when the held lease runs out (`None` if this node holds no term).
    pub fn lease_until(&self) -> Option<Duration> {
        match self.state {
            State::Holding { until, .. } => Some(until),
            _ => None,
        }
    }

    /// Leased: the lock's ETag after this holder's last write that landed (what its
    /// heartbeats name); `None` unless it holds a term.
    pub fn lock_etag(&self) -> Option<&str> {
        match &self.state {
            State::Holding { etag, .. } => Some(etag),
            _ => None,
        }
    }

    /// Feeds one event; returns what to do, in order. An event the state does not expect (a
    /// late answer) changes nothing and asks for nothing.
    pub fn handle(&mut self, event: Event) -> Vec<Command> {
        match self.timing {
            None => self.handle_solo(event),
            Some(timing) => self.handle_leased(timing, event),
        }
    }

    fn handle_solo(&mut self, event: Event) -> Vec<Command> {
        match (self.state.clone(), event) {
            (State::Idle, Event::Campaign { wall_ms, .. }) => {
                self.state = State::Reading { wall_ms };
                self.attempts = 1;
                vec![Command::ReadLock]
            }
            (State::Reading { wall_ms }, Event::LockRead { now, lock }) => self.take_over(lock, wall_ms, now),
            (State::Reading { .. } | State::Writing { .. }, Event::LockReadFailed { error, .. }) => self.give_up(error),
            (State::Writing { term, wall_ms, .. }, Event::LockWritten { now, outcome }) => match outcome {
                WriteOutcome::Written { .. } => {
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
            (State::Leading { term, check_at, reading: false }, Event::Tick { now, .. }) => {
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

    fn handle_leased(&mut self, timing: LeaseTiming, event: Event) -> Vec<Command> {
        match (self.state.clone(), event) {
            (State::Idle, Event::Follow { now, wall_ms }) => {
                self.state = State::Watching { seen: None, next_at: now, reading: true, wall_ms };
                vec![Command::ReadLock]
            }
            (State::Watching { seen, reading: true, wall_ms, .. }, Event::LockRead { now, lock }) => {
                let Some((record, etag)) = lock else {
                    // No term was ever taken: the first member to create the lock leads.
                    return self.take_over(None, wall_ms, now);
                };
                let seen = match seen {
                    Some(seen) if seen.etag == etag => seen,
                    _ => Seen { etag: etag.clone(), term: record.term, lease_ms: record.lease_ms, since: now },
                };
                let mut commands = self.announce(&record);
                let due = seen.since + timing.takeover_after(seen.lease_ms);
                if self.may_lead && now >= due && seen.term == record.term {
                    self.state = State::Watching { seen: Some(seen), next_at: now, reading: true, wall_ms };
                    commands.extend(self.take_over(Some((record, etag)), wall_ms, now));
                    return commands;
                }
                let next_at = (now + timing.poll_every()).min(due);
                self.state = State::Watching { seen: Some(seen), next_at, reading: false, wall_ms };
                commands.push(Command::WakeAt(next_at));
                commands
            }
            (State::Watching { seen, reading: true, wall_ms, .. }, Event::LockReadFailed { now, .. }) => {
                let next_at = now + timing.retry_after();
                self.state = State::Watching { seen, next_at, reading: false, wall_ms };
                vec![Command::WakeAt(next_at)]
            }
            (State::Watching { seen, next_at, reading: false, wall_ms }, Event::Tick { now, healthy }) => {
                if now < next_at {
                    return vec![Command::WakeAt(next_at)];
                }
                // A member that may not lead (not a voter, or not able to serve) reads on,
                // only to follow, at the polling pace.
                self.may_lead = healthy;
                self.state = State::Watching { seen, next_at, reading: true, wall_ms };
                vec![Command::ReadLock]
            }
            (State::Watching { seen, next_at, reading, wall_ms }, Event::Heartbeat { now, term, etag, lease_ms, .. }) => {
                // Only news moves the clock: a version already seen keeps its first sighting,
                // and an older term's heartbeat says nothing about the lock today.
                let newer = match &seen {
                    Some(seen) => seen.etag != etag && term >= seen.term,
                    None => true,
                };
                if newer {
                    let seen = Some(Seen { etag, term, lease_ms, since: now });
                    self.state = State::Watching { seen, next_at, reading, wall_ms };
                }
                Vec::new()
            }
            (State::Writing { term, wall_ms, sent }, Event::LockWritten { now, outcome }) => match outcome {
                WriteOutcome::Written { etag } => {
                    let record = self.record(term, wall_ms, timing, 0);
                    let until = timing.holds_until(sent);
                    let next_at = (sent + timing.renew_every()).max(now);
                    self.announced = Some((term, self.identity.node.clone()));
                    let holder = Command::Holder { record: record.clone() };
                    self.state = State::Holding { term, record, etag, until, next_at, busy: Busy::No };
                    vec![Command::Lead { term }, Command::Lease { term, until }, holder, Command::WakeAt(next_at)]
                }
                // Another member took it first (or renewed): read who, and follow.
                WriteOutcome::Conflict => {
                    self.state = State::Watching { seen: None, next_at: now, reading: true, wall_ms };
                    vec![Command::ReadLock]
                }
                WriteOutcome::Failed(_) => {
                    let next_at = now + timing.retry_after();
                    self.state = State::Watching { seen: None, next_at, reading: false, wall_ms };
                    vec![Command::WakeAt(next_at)]
                }
            },
            (State::Holding { term, record, etag, until, next_at, busy: Busy::No }, Event::Tick { now, healthy }) => {
                self.may_lead = healthy;
                if now < next_at {
                    return vec![Command::WakeAt(next_at)];
                }
                if !healthy {
                    // Not heard by a majority: let the lease run out (so a member that is
                    // heard can take over), and read the lock to learn of a newer term.
                    self.state = State::Holding { term, record, etag, until, next_at, busy: Busy::Reading };
                    return vec![Command::ReadLock];
                }
                let renewed = LockRecord { renewal: record.renewal + 1, ..record.clone() };
                let condition = Condition::IfMatch(etag.clone());
                if let Err(broken) = check_lock_write(&self.state, Write::Renewal { etag: &etag }, &renewed, &condition) {
                    return self.give_up(broken);
                }
                let busy = Busy::Renewing { sent: now, record: renewed.clone() };
                self.state = State::Holding { term, record, etag, until, next_at, busy };
                vec![Command::WriteLock { record: renewed, condition }]
            }
            (State::Holding { term, until, busy: Busy::Renewing { sent, record }, etag, .. }, Event::LockWritten { now, outcome }) => {
                match outcome {
                    WriteOutcome::Written { etag } => {
                        // Counted from the send: the write landed at some moment after it.
                        let until = timing.holds_until(sent).max(until);
                        let next_at = (sent + timing.renew_every()).max(now);
                        self.state = State::Holding { term, record, etag, until, next_at, busy: Busy::No };
                        vec![Command::Lease { term, until }, Command::WakeAt(next_at)]
                    }
                    WriteOutcome::Conflict => {
                        let held = LockRecord { renewal: record.renewal - 1, ..record };
                        self.state = State::Holding { term, record: held, etag, until, next_at: now, busy: Busy::Reading };
                        vec![Command::ReadLock]
                    }
                    WriteOutcome::Failed(_) => {
                        let held = LockRecord { renewal: record.renewal - 1, ..record };
                        let next_at = now + timing.retry_after();
                        self.state = State::Holding { term, record: held, etag, until, next_at, busy: Busy::No };
                        vec![Command::WakeAt(next_at)]
                    }
                }
            }
            (State::Holding { term, record, etag, until, busy: Busy::Reading, .. }, Event::LockRead { now, lock }) => match lock {
                Some((lock, current)) if lock.term > term => self.deposed(term, lock, current, now, record.wall_ms),
                Some((lock, current)) if lock.term == term && lock.node == self.identity.node => {
                    // Ours still: a renewal that landed although its answer said otherwise
                    // leaves a newer ETag (the lease is not lengthened on that: its send time
                    // is not known here).
                    let next_at = now + if current == etag { timing.retry_after() } else { Duration::ZERO };
                    self.state = State::Holding { term, record: lock, etag: current, until, next_at, busy: Busy::No };
                    vec![Command::WakeAt(next_at)]
                }
                // Gone, or an older term or another node at ours: the store broke its
                // conditions. Stop holding (uploads and seals still fence whoever is wrong).
                other => {
                    self.state = State::GaveUp;
                    let found = other.map_or("no lock".to_string(), |(lock, _)| format!("term {} held by {:?}", lock.term, lock.node));
                    vec![Command::GiveUp {
                        reason: format!("the bucket's lock changed under term {term} without a newer term ({found}): the store broke its conditional writes"),
                    }]
                }
            },
            (State::Holding { term, record, etag, until, busy: Busy::Reading, .. }, Event::LockReadFailed { now, .. }) => {
                let next_at = now + timing.retry_after();
                self.state = State::Holding { term, record, etag, until, next_at, busy: Busy::No };
                vec![Command::WakeAt(next_at)]
            }
            (State::Holding { term, record, etag, until, next_at, busy: Busy::No }, Event::Heartbeat { term: other, .. })
                if other > term =>
            {
                // Someone leads a newer term: read the lock now to learn it for sure.
                self.state = State::Holding { term, record, etag, until, next_at, busy: Busy::Reading };
                vec![Command::ReadLock]
            }
            _ => Vec::new(),
        }
    }

    /// A newer term holds the lock: stop holding ours, and watch the new holder.
    fn deposed(&mut self, term: u64, lock: LockRecord, etag: String, now: Duration, wall_ms: u64) -> Vec<Command> {
        let timing = self.timing.expect("leased");
        let seen = Seen { etag, term: lock.term, lease_ms: lock.lease_ms, since: now };
        let mut commands = vec![Command::Fenced { term, newer_term: lock.term, holder: lock.node.clone() }];
        commands.extend(self.announce(&lock));
        let next_at = now + timing.poll_every();
        self.state = State::Watching { seen: Some(seen), next_at, reading: false, wall_ms };
        commands.push(Command::WakeAt(next_at));
        commands
    }

    /// [`Command::Holder`] when the lock names a holder not announced before.
    fn announce(&mut self, record: &LockRecord) -> Vec<Command> {
        let holder = (record.term, record.node.clone());
        if self.announced.as_ref() == Some(&holder) {
            return Vec::new();
        }
        self.announced = Some(holder);
        vec![Command::Holder { record: record.clone() }]
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

    fn record(&self, term: u64, wall_ms: u64, timing: LeaseTiming, renewal: u64) -> LockRecord {
        LockRecord {
            term,
            node: self.identity.node.clone(),
            wall_ms,
            lease_ms: timing.lease.as_millis() as u64,
            renewal,
            peer_url: self.identity.peer_url.clone(),
            client_url: self.identity.client_url.clone(),
        }
    }

    /// The conditional write that takes the term after `read`, once its invariants hold.
    fn take_over(&mut self, read: Option<(LockRecord, String)>, wall_ms: u64, now: Duration) -> Vec<Command> {
        let (term, condition) = match &read {
            None => (1, Condition::IfNoneMatch),
            Some((lock, etag)) => (lock.term + 1, Condition::IfMatch(etag.clone())),
        };
        let record = match self.timing {
            None => LockRecord { term, node: self.identity.node.clone(), wall_ms, ..Default::default() },
            Some(timing) => self.record(term, wall_ms, timing, 0),
        };
        let write = Write::Takeover { read: read.as_ref(), now, timing: self.timing };
        if let Err(broken) = check_lock_write(&self.state, write, &record, &condition) {
            return self.give_up(broken);
        }
        self.state = State::Writing { term, wall_ms, sent: now };
        vec![Command::WriteLock { record, condition }]
    }
}

/// Which kind of write on `lock` is being checked.
#[derive(Debug, Clone, Copy)]
enum Write<'a> {
    /// Taking the term after `read`, at `now` (`timing`: leased mode's).
    Takeover { read: Option<&'a (LockRecord, String)>, now: Duration, timing: Option<LeaseTiming> },
    /// Renewing the held term over its own last write, `etag`.
    Renewal { etag: &'a str },
}

/// Checks a write of `record` on `lock`, conditioned on `condition`, against the engine's
/// state and what it follows; the first invariant it breaks, by name.
fn check_lock_write(state: &State, write: Write<'_>, record: &LockRecord, condition: &Condition) -> Result<(), String> {
    match write {
        Write::Takeover { read, now, timing } => {
            // campaigning-only
            if !matches!(state, State::Reading { .. } | State::Watching { reading: true, .. }) {
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
            // lease-waited (leased mode, over a lock someone holds)
            if let (Some(timing), State::Watching { seen, .. }, Some((_, etag))) = (timing, state, read) {
                let seen = seen.as_ref().filter(|seen| seen.etag == *etag);
                let waited = seen.map(|seen| now.saturating_sub(seen.since));
                let wait = seen.map(|seen| timing.takeover_after(seen.lease_ms));
                if !matches!((waited, wait), (Some(waited), Some(wait)) if waited >= wait) {
                    return Err(format!("invariant lease-waited: a takeover of {etag} after watching it for {waited:?} (needs {wait:?})"));
                }
            }
            Ok(())
        }
        Write::Renewal { etag } => {
            // renew-own-term
            match state {
                State::Holding { term, record: held, busy: Busy::No, .. }
                    if record.term == *term && record.node == held.node && *condition == Condition::IfMatch(etag.to_string()) =>
                {
                    Ok(())
                }
                _ => Err(format!("invariant renew-own-term: a renewal of term {} on {condition:?} while {state:?}", record.term)),
            }
        }
    }
}

#[cfg(test)]
#[path = "engine_test.rs"]
mod engine_test;
