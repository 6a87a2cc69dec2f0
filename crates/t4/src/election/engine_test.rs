//! The election engine, event by event: exact command lists, no runtime.

use std::time::Duration;

use super::*;

const CHECK: Duration = Duration::from_secs(5);

fn at(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}

fn lock(term: u64, node: &str) -> LockRecord {
    LockRecord { term, node: node.into(), wall_ms: 1_000 }
}

fn record(term: u64) -> LockRecord {
    LockRecord { term, node: "a".into(), wall_ms: 77 }
}

/// An engine that took `term` at time 0 (on a lock at `term - 1`, ETag "e").
fn leading(term: u64) -> Election {
    let mut election = Election::new("a", CHECK);
    election.handle(Event::Campaign { now: at(0), wall_ms: 77 });
    election.handle(Event::LockRead { now: at(0), lock: (term > 1).then(|| (lock(term - 1, "b"), "e".into())) });
    assert_eq!(
        election.handle(Event::LockWritten { now: at(0), outcome: WriteOutcome::Written }),
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
        election.handle(Event::LockWritten { now: at(1), outcome: WriteOutcome::Written }),
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
        election.handle(Event::LockWritten { now: at(0), outcome: WriteOutcome::Written }),
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
    assert_eq!(election.handle(Event::Tick { now: at(9) }), Vec::new(), "a node that gave up does nothing more");

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
    assert_eq!(election.handle(Event::Tick { now: at(2) }), vec![Command::WakeAt(CHECK)], "early: wait on");
    assert_eq!(election.handle(Event::Tick { now: CHECK }), vec![Command::ReadLock]);
    assert_eq!(election.handle(Event::Tick { now: CHECK }), Vec::new(), "one read at a time");
    assert_eq!(election.handle(Event::LockRead { now: at(6), lock: Some((lock(3, "a"), "e3".into())) }), vec![Command::WakeAt(at(11))]);
    assert_eq!(election.handle(Event::Tick { now: at(11) }), vec![Command::ReadLock]);
    assert_eq!(
        election.handle(Event::LockReadFailed { now: at(12), error: "timeout".into() }),
        vec![Command::WakeAt(at(17))],
        "a failed read is retried at the next check, never a reason to stop"
    );
    assert_eq!(election.handle(Event::Tick { now: at(17) }), vec![Command::ReadLock]);
    assert_eq!(
        election.handle(Event::LockRead { now: at(18), lock: Some((lock(4, "b"), "e4".into())) }),
        vec![Command::Fenced { term: 3, newer_term: 4, holder: "b".into() }]
    );
    assert_eq!(election.term(), None);
    assert_eq!(election.handle(Event::Tick { now: at(30) }), Vec::new(), "a fenced node does nothing more");
    assert_eq!(election.handle(Event::Campaign { now: at(30), wall_ms: 1 }), Vec::new(), "nor campaigns again");
}

#[test]
fn late_and_unexpected_answers_change_nothing() {
    let mut election = leading(2);
    // A leader never writes the lock: a write answer now is stale.
    assert_eq!(election.handle(Event::LockWritten { now: at(1), outcome: WriteOutcome::Written }), Vec::new());
    // A read it did not ask for (none is out) is ignored.
    assert_eq!(election.handle(Event::LockRead { now: at(1), lock: Some((lock(9, "z"), "e9".into())) }), Vec::new());
    assert_eq!(election.term(), Some(2));
    let mut idle = Election::new("a", CHECK);
    assert_eq!(idle.handle(Event::Tick { now: at(1) }), Vec::new());
    assert_eq!(idle.handle(Event::LockRead { now: at(1), lock: None }), Vec::new());
}

#[test]
fn each_lock_write_invariant_refuses_the_write_that_breaks_it() {
    let reading = State::Reading { wall_ms: 1 };
    let read = (lock(4, "b"), "e4".to_string());
    let matching = Condition::IfMatch("e4".into());
    assert_eq!(check_lock_write(&reading, Some(&read), &record(5), &matching), Ok(()));
    assert_eq!(check_lock_write(&reading, None, &record(1), &Condition::IfNoneMatch), Ok(()));

    let refused = |state: &State, read: Option<&(LockRecord, String)>, record: LockRecord, condition: Condition| {
        check_lock_write(state, read, &record, &condition).expect_err("must be refused")
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
