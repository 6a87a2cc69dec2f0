//! The election engine, event by event: exact command lists, no runtime.

use std::time::Duration;

use super::*;

const CHECK: Duration = Duration::from_secs(5);

fn at(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}

fn lock(term: u64, node: &str) -> LockRecord {
    LockRecord { term, node: node.into(), wall_ms: 1_000, ..Default::default() }
}

fn record(term: u64) -> LockRecord {
    LockRecord { term, node: "a".into(), wall_ms: 77, ..Default::default() }
}

fn written() -> WriteOutcome {
    WriteOutcome::Written { etag: "new".into() }
}

/// An engine that took `term` at time 0 (on a lock at `term - 1`, ETag "e").
fn leading(term: u64) -> Election {
    let mut election = Election::new("a", CHECK);
    election.handle(Event::Campaign { now: at(0), wall_ms: 77 });
    election.handle(Event::LockRead { now: at(0), lock: (term > 1).then(|| (lock(term - 1, "b"), "e".into())) });
    assert_eq!(
        election.handle(Event::LockWritten { now: at(0), outcome: written() }),
        vec![Command::Lead { term }, Command::WakeAt(CHECK)]
    );
    election
}

#[test]
fn a_fresh_bucket_gives_term_one_by_create_only_write() {
    let mut election = Election::new("a", CHECK);
    assert_eq!(election.handle(Event::Campaign { now: at(0), wall_ms: 77 }), vec![Command::ReadLock]);
    assert_eq!(
        election.handle(Event::LockRead { now: at(0), lock: None }),
        vec![Command::WriteLock { record: record(1), condition: Condition::IfNoneMatch }]
    );
    assert_eq!(election.term(), None, "not before the write is answered");
    assert_eq!(
        election.handle(Event::LockWritten { now: at(1), outcome: written() }),
        vec![Command::Lead { term: 1 }, Command::WakeAt(at(1) + CHECK)]
    );
    assert_eq!(election.term(), Some(1));
}

#[test]
fn the_next_term_is_taken_on_the_etag_read_and_a_conflict_reads_again() {
    let mut election = Election::new("a", CHECK);
    election.handle(Event::Campaign { now: at(0), wall_ms: 77 });
    assert_eq!(
        election.handle(Event::LockRead { now: at(0), lock: Some((lock(4, "b"), "etag-4".into())) }),
        vec![Command::WriteLock { record: record(5), condition: Condition::IfMatch("etag-4".into()) }]
    );
    // Someone took term 5 first: read again, and go for 6 on the new ETag.
    assert_eq!(election.handle(Event::LockWritten { now: at(0), outcome: WriteOutcome::Conflict }), vec![Command::ReadLock]);
    assert_eq!(
        election.handle(Event::LockRead { now: at(0), lock: Some((lock(5, "c"), "etag-5".into())) }),
        vec![Command::WriteLock { record: record(6), condition: Condition::IfMatch("etag-5".into()) }]
    );
    assert_eq!(
        election.handle(Event::LockWritten { now: at(0), outcome: written() }),
        vec![Command::Lead { term: 6 }, Command::WakeAt(CHECK)]
    );
}

#[test]
fn a_campaign_gives_up_after_its_attempts_or_at_the_first_failure() {
    let mut election = Election::new("a", CHECK);
    election.handle(Event::Campaign { now: at(0), wall_ms: 77 });
    for attempt in 1..=TAKE_TERM_ATTEMPTS as u64 {
        election.handle(Event::LockRead { now: at(0), lock: Some((lock(attempt, "b"), format!("e{attempt}"))) });
        let commands = election.handle(Event::LockWritten { now: at(0), outcome: WriteOutcome::Conflict });
        if attempt < TAKE_TERM_ATTEMPTS as u64 {
            assert_eq!(commands, vec![Command::ReadLock], "attempt {attempt}");
        } else {
            let reason = format!("could not take a term: the lock kept changing over {TAKE_TERM_ATTEMPTS} attempts");
            assert_eq!(commands, vec![Command::GiveUp { reason }]);
        }
    }
    assert_eq!(election.handle(Event::Tick { now: at(9), healthy: true }), Vec::new(), "a node that gave up does nothing more");

    let mut failing = Election::new("a", CHECK);
    failing.handle(Event::Campaign { now: at(0), wall_ms: 77 });
    assert_eq!(failing.handle(Event::LockReadFailed { now: at(0), error: "503".into() }), vec![Command::GiveUp { reason: "503".into() }]);
    let mut refused = Election::new("a", CHECK);
    refused.handle(Event::Campaign { now: at(0), wall_ms: 77 });
    refused.handle(Event::LockRead { now: at(0), lock: None });
    assert_eq!(
        refused.handle(Event::LockWritten { now: at(0), outcome: WriteOutcome::Failed("403".into()) }),
        vec![Command::GiveUp { reason: "403".into() }]
    );
}

#[test]
fn a_leader_checks_the_lock_every_interval_and_stops_at_a_newer_term() {
    let mut election = leading(3);
    assert_eq!(election.handle(Event::Tick { now: at(2), healthy: true }), vec![Command::WakeAt(CHECK)], "early: wait on");
    assert_eq!(election.handle(Event::Tick { now: CHECK, healthy: true }), vec![Command::ReadLock]);
    assert_eq!(election.handle(Event::Tick { now: CHECK, healthy: true }), Vec::new(), "one read at a time");
    assert_eq!(election.handle(Event::LockRead { now: at(6), lock: Some((lock(3, "a"), "e3".into())) }), vec![Command::WakeAt(at(11))]);
    assert_eq!(election.handle(Event::Tick { now: at(11), healthy: true }), vec![Command::ReadLock]);
    assert_eq!(
        election.handle(Event::LockReadFailed { now: at(12), error: "timeout".into() }),
        vec![Command::WakeAt(at(17))],
        "a failed read is retried at the next check, never a reason to stop"
    );
    assert_eq!(election.handle(Event::Tick { now: at(17), healthy: true }), vec![Command::ReadLock]);
    assert_eq!(
        election.handle(Event::LockRead { now: at(18), lock: Some((lock(4, "b"), "e4".into())) }),
        vec![Command::Fenced { term: 3, newer_term: 4, holder: "b".into() }]
    );
    assert_eq!(election.term(), None);
    assert_eq!(election.handle(Event::Tick { now: at(30), healthy: true }), Vec::new(), "a fenced node does nothing more");
    assert_eq!(election.handle(Event::Campaign { now: at(30), wall_ms: 1 }), Vec::new(), "nor campaigns again");
}

#[test]
fn late_and_unexpected_answers_change_nothing() {
    let mut election = leading(2);
    // A leader never writes the lock: a write answer now is stale.
    assert_eq!(election.handle(Event::LockWritten { now: at(1), outcome: written() }), Vec::new());
    // A read it did not ask for (none is out) is ignored.
    assert_eq!(election.handle(Event::LockRead { now: at(1), lock: Some((lock(9, "z"), "e9".into())) }), Vec::new());
    assert_eq!(election.term(), Some(2));
    let mut idle = Election::new("a", CHECK);
    assert_eq!(idle.handle(Event::Tick { now: at(1), healthy: true }), Vec::new());
    assert_eq!(idle.handle(Event::LockRead { now: at(1), lock: None }), Vec::new());
}

fn takeover(read: Option<&(LockRecord, String)>) -> Write<'_> {
    Write::Takeover { read, now: at(0), timing: None }
}

#[test]
fn each_lock_write_invariant_refuses_the_write_that_breaks_it() {
    let reading = State::Reading { wall_ms: 1 };
    let read = (lock(4, "b"), "e4".to_string());
    let matching = Condition::IfMatch("e4".into());
    assert_eq!(check_lock_write(&reading, takeover(Some(&read)), &record(5), &matching), Ok(()));
    assert_eq!(check_lock_write(&reading, takeover(None), &record(1), &Condition::IfNoneMatch), Ok(()));

    let refused = |state: &State, read: Option<&(LockRecord, String)>, record: LockRecord, condition: Condition| {
        check_lock_write(state, takeover(read), &record, &condition).expect_err("must be refused")
    };
    let leading = State::Leading { term: 5, check_at: at(1), reading: false };
    assert!(refused(&leading, Some(&read), record(5), matching.clone()).starts_with("invariant campaigning-only"));
    assert!(refused(&State::Fenced, Some(&read), record(5), matching.clone()).starts_with("invariant campaigning-only"));
    assert!(refused(&reading, Some(&read), record(6), matching.clone()).starts_with("invariant next-term"), "skips a term");
    assert!(refused(&reading, Some(&read), record(4), matching.clone()).starts_with("invariant next-term"), "retakes one");
    assert!(refused(&reading, None, record(2), Condition::IfNoneMatch).starts_with("invariant next-term"));
    assert!(refused(&reading, Some(&read), record(5), Condition::Always).starts_with("invariant read-condition"), "a blind write");
    assert!(
        refused(&reading, Some(&read), record(5), Condition::IfMatch("e3".into())).starts_with("invariant read-condition"),
        "another read's ETag"
    );
    assert!(refused(&reading, None, record(1), Condition::Always).starts_with("invariant read-condition"));
}

// ---- Leased mode (cluster members): L = 6 s, D = 1 s. ----

const TIMING: LeaseTiming = LeaseTiming { lease: Duration::from_secs(6), drift: Duration::from_secs(1) };

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

fn identity() -> Identity {
    Identity { node: "a".into(), peer_url: "http://127.0.0.1:3380".into(), client_url: "http://127.0.0.1:3379".into() }
}

/// The record member "a" writes for `term` after `renewal` renewals.
fn ours(term: u64, renewal: u64) -> LockRecord {
    LockRecord {
        term,
        node: "a".into(),
        wall_ms: 77,
        lease_ms: 6_000,
        renewal,
        peer_url: "http://127.0.0.1:3380".into(),
        client_url: "http://127.0.0.1:3379".into(),
    }
}

/// Member "b"'s lock at `term`, renewal `renewal`, with a lease of `lease_ms`.
fn theirs(term: u64, renewal: u64, lease_ms: u64) -> LockRecord {
    LockRecord { term, node: "b".into(), wall_ms: 5, lease_ms, renewal, ..Default::default() }
}

fn watching() -> Election {
    let mut election = Election::leased(identity(), TIMING);
    assert_eq!(election.handle(Event::Follow { now: at(0), wall_ms: 77 }), vec![Command::ReadLock]);
    election
}

/// Member "a" holding term 1 of a fresh bucket, its take-over write sent at 0 (ETag "e0").
fn holding() -> Election {
    let mut election = watching();
    election.handle(Event::LockRead { now: at(0), lock: None });
    let commands = election.handle(Event::LockWritten { now: ms(300), outcome: WriteOutcome::Written { etag: "e0".into() } });
    assert_eq!(
        commands,
        vec![
            Command::Lead { term: 1 },
            Command::Lease { term: 1, until: at(5) },
            Command::Holder { record: ours(1, 0) },
            Command::WakeAt(at(2))
        ]
    );
    election
}

#[test]
fn lease_timing_is_the_stated_formulas_and_refuses_timings_that_cannot_be_safe() {
    assert_eq!(TIMING.renew_every(), at(2));
    assert_eq!(TIMING.holds_until(at(10)), at(15), "send + L - D");
    assert_eq!(TIMING.takeover_after(0), at(7), "L + D");
    assert_eq!(TIMING.takeover_after(9_000), at(10), "a holder's longer lease is waited for");
    assert_eq!(TIMING.validate(), Ok(()));
    assert_eq!(LeaseTiming::DEFAULT.validate(), Ok(()));
    assert!(LeaseTiming { lease: at(6), drift: at(3) }.validate().is_err(), "drift of half the lease");
    assert!(LeaseTiming { lease: at(6), drift: Duration::ZERO }.validate().is_err(), "no drift bound at all");
    assert!(LeaseTiming { lease: ms(10), drift: ms(1) }.validate().is_err(), "a lease no store can renew");
}

#[test]
fn a_fresh_bucket_goes_to_the_first_member_to_create_the_lock_with_the_lease_from_the_send() {
    let mut election = watching();
    assert_eq!(
        election.handle(Event::LockRead { now: ms(100), lock: None }),
        vec![Command::WriteLock { record: ours(1, 0), condition: Condition::IfNoneMatch }]
    );
    // The write was sent at 0.1 s: the lease counts from there, not from the answer at 0.9 s.
    assert_eq!(
        election.handle(Event::LockWritten { now: ms(900), outcome: WriteOutcome::Written { etag: "e1".into() } }),
        vec![
            Command::Lead { term: 1 },
            Command::Lease { term: 1, until: ms(5_100) },
            Command::Holder { record: ours(1, 0) },
            Command::WakeAt(ms(2_100))
        ]
    );
    assert_eq!((election.term(), election.lease_until()), (Some(1), Some(ms(5_100))));
}

#[test]
fn a_watcher_takes_over_only_after_one_version_stayed_unchanged_for_lease_plus_drift() {
    let mut election = watching();
    let lock = theirs(3, 10, 6_000);
    assert_eq!(
        election.handle(Event::LockRead { now: at(0), lock: Some((lock.clone(), "e10".into())) }),
        vec![Command::Holder { record: lock.clone() }, Command::WakeAt(at(2))]
    );
    assert_eq!(election.handle(Event::Tick { now: ms(1_000), healthy: true }), vec![Command::WakeAt(at(2))], "early");
    assert_eq!(election.handle(Event::Tick { now: at(2), healthy: true }), vec![Command::ReadLock]);
    // Renewed at some point before 3 s: the wait starts again from this sighting.
    let renewed = theirs(3, 11, 6_000);
    assert_eq!(election.handle(Event::LockRead { now: at(3), lock: Some((renewed.clone(), "e11".into())) }), vec![Command::WakeAt(at(5))]);
    for now in [5, 7, 9] {
        election.handle(Event::Tick { now: at(now), healthy: true });
        let next = election.handle(Event::LockRead { now: at(now), lock: Some((renewed.clone(), "e11".into())) });
        assert_eq!(next, vec![Command::WakeAt(at(now + 2).min(at(10)))], "at {now} s: not yet (due at 3 + 7 = 10 s)");
    }
    election.handle(Event::Tick { now: at(10), healthy: true });
    assert_eq!(
        election.handle(Event::LockRead { now: at(10), lock: Some((renewed, "e11".into())) }),
        vec![Command::WriteLock { record: ours(4, 0), condition: Condition::IfMatch("e11".into()) }]
    );
    assert_eq!(
        election.handle(Event::LockWritten { now: ms(10_200), outcome: WriteOutcome::Written { etag: "e12".into() } }),
        vec![
            Command::Lead { term: 4 },
            Command::Lease { term: 4, until: at(15) },
            Command::Holder { record: ours(4, 0) },
            Command::WakeAt(at(12))
        ]
    );
}

#[test]
fn a_holder_with_a_longer_lease_is_waited_for_by_its_own_lease() {
    let mut election = watching();
    let lock = theirs(2, 0, 20_000);
    election.handle(Event::LockRead { now: at(0), lock: Some((lock.clone(), "e".into())) });
    for now in [2, 4, 6, 8, 10, 12, 14, 16, 18, 20] {
        election.handle(Event::Tick { now: at(now), healthy: true });
        let next = election.handle(Event::LockRead { now: at(now), lock: Some((lock.clone(), "e".into())) });
        assert!(matches!(next[..], [Command::WakeAt(_)]), "at {now} s: {next:?}");
    }
    election.handle(Event::Tick { now: at(21), healthy: true });
    let next = election.handle(Event::LockRead { now: at(21), lock: Some((lock, "e".into())) });
    assert!(matches!(&next[..], [Command::WriteLock { record, .. }] if record.term == 3), "20 s + 1 s: {next:?}");
}

#[test]
fn heartbeats_restart_the_wait_when_they_bring_news_and_old_news_changes_nothing() {
    let mut election = watching();
    let lock = theirs(3, 10, 6_000);
    election.handle(Event::LockRead { now: at(0), lock: Some((lock.clone(), "e10".into())) });
    let beat = |now, term, etag: &str| Event::Heartbeat { now, term, etag: etag.into(), lease_ms: 6_000, leader: "b".into() };
    assert_eq!(election.handle(beat(at(1), 3, "e10")), Vec::new(), "same version: it was current from 0 s already");
    assert_eq!(election.handle(beat(at(4), 3, "e11")), Vec::new());
    assert_eq!(election.handle(beat(at(5), 2, "e-old")), Vec::new(), "an older term's heartbeat");
    // The lock still reads as e11 at 10 s: the wait counts from the heartbeat at 4 s (due 11 s).
    let renewed = theirs(3, 11, 6_000);
    election.handle(Event::Tick { now: at(10), healthy: true });
    assert_eq!(
        election.handle(Event::LockRead { now: at(10), lock: Some((renewed.clone(), "e11".into())) }),
        vec![Command::WakeAt(at(11))]
    );
    election.handle(Event::Tick { now: at(11), healthy: true });
    let next = election.handle(Event::LockRead { now: at(11), lock: Some((renewed, "e11".into())) });
    assert!(matches!(&next[..], [Command::WriteLock { record, .. }] if record.term == 4), "{next:?}");
}

#[test]
fn a_member_that_may_not_lead_follows_but_never_takes_over() {
    let mut election = watching();
    let lock = theirs(3, 0, 6_000);
    election.handle(Event::LockRead { now: at(0), lock: Some((lock.clone(), "e".into())) });
    for now in (2..40).step_by(2) {
        election.handle(Event::Tick { now: at(now), healthy: false });
        let next = election.handle(Event::LockRead { now: at(now), lock: Some((lock.clone(), "e".into())) });
        assert!(matches!(next[..], [Command::WakeAt(_)]), "at {now} s: {next:?}");
    }
    assert_eq!(election.term(), None);
}

#[test]
fn a_lost_takeover_race_follows_the_winner() {
    let mut election = watching();
    election.handle(Event::LockRead { now: at(0), lock: None });
    assert_eq!(election.handle(Event::LockWritten { now: at(0), outcome: WriteOutcome::Conflict }), vec![Command::ReadLock]);
    let winner = theirs(1, 0, 6_000);
    assert_eq!(
        election.handle(Event::LockRead { now: at(0), lock: Some((winner.clone(), "w".into())) }),
        vec![Command::Holder { record: winner }, Command::WakeAt(at(2))]
    );
    assert_eq!(election.term(), None);
}

#[test]
fn renewals_lengthen_the_lease_from_their_send_and_a_failed_one_does_not() {
    let mut election = holding();
    assert_eq!(election.handle(Event::Tick { now: ms(1_500), healthy: true }), vec![Command::WakeAt(at(2))], "early");
    assert_eq!(
        election.handle(Event::Tick { now: at(2), healthy: true }),
        vec![Command::WriteLock { record: ours(1, 1), condition: Condition::IfMatch("e0".into()) }]
    );
    assert_eq!(election.handle(Event::Tick { now: ms(2_100), healthy: true }), Vec::new(), "one renewal at a time");
    assert_eq!(
        election.handle(Event::LockWritten { now: ms(2_500), outcome: WriteOutcome::Written { etag: "e1".into() } }),
        vec![Command::Lease { term: 1, until: at(7) }, Command::WakeAt(at(4))]
    );
    assert_eq!(
        election.handle(Event::Tick { now: at(4), healthy: true }),
        vec![Command::WriteLock { record: ours(1, 2), condition: Condition::IfMatch("e1".into()) }]
    );
    // Failed: no new lease; the same renewal is tried again soon.
    assert_eq!(
        election.handle(Event::LockWritten { now: ms(4_200), outcome: WriteOutcome::Failed("503".into()) }),
        vec![Command::WakeAt(ms(4_700))]
    );
    assert_eq!(election.lease_until(), Some(at(7)));
    assert_eq!(
        election.handle(Event::Tick { now: ms(4_700), healthy: true }),
        vec![Command::WriteLock { record: ours(1, 2), condition: Condition::IfMatch("e1".into()) }]
    );
    assert_eq!(
        election.handle(Event::LockWritten { now: at(9), outcome: WriteOutcome::Written { etag: "e2".into() } }),
        vec![Command::Lease { term: 1, until: ms(9_700) }, Command::WakeAt(at(9))],
        "a slow answer: the lease counts from the send at 4.7 s; the next renewal is due at once"
    );
}

#[test]
fn a_holder_not_heard_by_a_majority_stops_renewing_and_its_lease_runs_out() {
    let mut election = holding();
    assert_eq!(election.handle(Event::Tick { now: at(2), healthy: false }), vec![Command::ReadLock], "reads, to learn of a newer term");
    assert_eq!(election.handle(Event::LockRead { now: at(2), lock: Some((ours(1, 0), "e0".into())) }), vec![Command::WakeAt(ms(2_500))]);
    assert_eq!(election.handle(Event::Tick { now: ms(2_500), healthy: false }), vec![Command::ReadLock]);
    assert_eq!(election.lease_until(), Some(at(5)), "never lengthened while unhealthy");
    // Heard again: the next tick renews (the lock is unchanged, so nobody took over).
    election.handle(Event::LockRead { now: ms(2_500), lock: Some((ours(1, 0), "e0".into())) });
    assert_eq!(
        election.handle(Event::Tick { now: at(6), healthy: true }),
        vec![Command::WriteLock { record: ours(1, 1), condition: Condition::IfMatch("e0".into()) }]
    );
}

#[test]
fn a_conflicting_renewal_reads_the_lock_and_a_newer_term_deposes_the_holder() {
    let mut election = holding();
    election.handle(Event::Tick { now: at(2), healthy: true });
    assert_eq!(election.handle(Event::LockWritten { now: at(2), outcome: WriteOutcome::Conflict }), vec![Command::ReadLock]);
    let newer = theirs(2, 0, 6_000);
    assert_eq!(
        election.handle(Event::LockRead { now: at(3), lock: Some((newer.clone(), "n".into())) }),
        vec![
            Command::Fenced { term: 1, newer_term: 2, holder: "b".into() },
            Command::Holder { record: newer.clone() },
            Command::WakeAt(at(5))
        ]
    );
    assert_eq!((election.term(), election.lease_until()), (None, None));
    // It watches on as a follower of term 2, and could take term 3 after L + D.
    election.handle(Event::Tick { now: at(10), healthy: true });
    let next = election.handle(Event::LockRead { now: at(10), lock: Some((newer, "n".into())) });
    assert!(matches!(&next[..], [Command::WriteLock { record, .. }] if record.term == 3), "{next:?}");
}

#[test]
fn a_renewal_that_landed_though_its_answer_said_otherwise_keeps_the_term() {
    let mut election = holding();
    election.handle(Event::Tick { now: at(2), healthy: true });
    election.handle(Event::LockWritten { now: at(2), outcome: WriteOutcome::Conflict });
    assert_eq!(election.handle(Event::LockRead { now: at(3), lock: Some((ours(1, 1), "e1".into())) }), vec![Command::WakeAt(at(3))]);
    assert_eq!(election.lease_until(), Some(at(5)), "not lengthened: when it landed is not known");
    assert_eq!(
        election.handle(Event::Tick { now: at(3), healthy: true }),
        vec![Command::WriteLock { record: ours(1, 2), condition: Condition::IfMatch("e1".into()) }]
    );
}

#[test]
fn a_lock_that_changed_without_a_newer_term_stops_the_holder() {
    for found in [None, Some((theirs(1, 0, 6_000), "x".to_string())), Some((theirs(0, 0, 0), "y".to_string()))] {
        let mut election = holding();
        election.handle(Event::Tick { now: at(2), healthy: false });
        let next = election.handle(Event::LockRead { now: at(2), lock: found.clone() });
        assert!(
            matches!(&next[..], [Command::GiveUp { reason }] if reason.contains("broke its conditional writes")),
            "{found:?}: {next:?}"
        );
        assert_eq!(election.term(), None);
    }
}

#[test]
fn a_newer_terms_heartbeat_makes_the_holder_read_the_lock_at_once() {
    let mut election = holding();
    let beat = |term| Event::Heartbeat { now: at(1), term, etag: "z".into(), leader: "b".into(), lease_ms: 6_000 };
    assert_eq!(election.handle(beat(1)), Vec::new());
    assert_eq!(election.handle(beat(2)), vec![Command::ReadLock]);
}

#[test]
fn leased_write_invariants_refuse_an_early_takeover_and_a_renewal_of_another_term() {
    let lock = (theirs(3, 0, 6_000), "e".to_string());
    let seen = |since| Some(Seen { etag: "e".into(), term: 3, lease_ms: 6_000, since });
    let watching = |since| State::Watching { seen: seen(since), next_at: at(0), reading: true, wall_ms: 77 };
    let takeover = |now| Write::Takeover { read: Some(&lock), now, timing: Some(TIMING) };
    let condition = Condition::IfMatch("e".into());
    assert_eq!(check_lock_write(&watching(at(0)), takeover(at(7)), &ours(4, 0), &condition), Ok(()));
    let early = check_lock_write(&watching(at(0)), takeover(ms(6_999)), &ours(4, 0), &condition).unwrap_err();
    assert!(early.starts_with("invariant lease-waited"), "{early}");
    let unseen = State::Watching { seen: None, next_at: at(0), reading: true, wall_ms: 77 };
    assert!(check_lock_write(&unseen, takeover(at(100)), &ours(4, 0), &condition).unwrap_err().starts_with("invariant lease-waited"));

    let holding = State::Holding { term: 4, record: ours(4, 0), etag: "h".into(), until: at(5), next_at: at(2), busy: Busy::No };
    let renewal = Write::Renewal { etag: "h" };
    let on_own = Condition::IfMatch("h".into());
    assert_eq!(check_lock_write(&holding, renewal, &ours(4, 1), &on_own), Ok(()));
    for (record, condition) in [(ours(5, 1), on_own.clone()), (ours(4, 1), Condition::Always), (theirs(4, 1, 0), on_own.clone())] {
        let broken = check_lock_write(&holding, renewal, &record, &condition).unwrap_err();
        assert!(broken.starts_with("invariant renew-own-term"), "{record:?} {condition:?}: {broken}");
    }
    assert!(check_lock_write(&watching(at(0)), renewal, &ours(4, 1), &on_own).unwrap_err().starts_with("invariant renew-own-term"));
}
