//! Self-tests: the checker must fire on each kind of bad history.

use super::*;
use crate::history::{Op, OpKind, Outcome};

fn put(client: usize, key: &str, value: &str, times: (u128, u128), revision: i64) -> Op {
    Op {
        client,
        kind: OpKind::Put { key: key.into(), value: value.into() },
        invoke_ns: times.0,
        complete_ns: times.1,
        outcome: Outcome::Wrote { revision, succeeded: true, deleted: 0 },
        serializable: false,
    }
}

fn get(key: &str, times: (u128, u128), revision: i64, found: Option<(&str, i64)>) -> Op {
    Op {
        client: 9,
        kind: OpKind::Get { key: key.into() },
        invoke_ns: times.0,
        complete_ns: times.1,
        outcome: Outcome::Read { revision, found: found.map(|(value, at)| (value.to_string(), at)) },
        serializable: false,
    }
}

fn put_change(key: &str, value: &str) -> LogChange {
    LogChange::Put { key: key.into(), value: value.into() }
}

fn delete_change(key: &str) -> LogChange {
    LogChange::Delete { key: key.into() }
}

fn log(changes: &[(&str, &str)]) -> Log {
    let revisions = changes.iter().enumerate().map(|(index, (key, value))| (index as i64 + 2, vec![put_change(key, value)])).collect();
    Log { revisions }
}

fn final_state(entries: &[(&str, &str, i64)]) -> State {
    entries.iter().map(|(key, value, at)| (key.to_string(), (value.to_string(), *at))).collect()
}

#[test]
fn a_good_history_passes() {
    let history = vec![put(0, "a", "v1", (0, 10), 2), get("a", (20, 30), 2, Some(("v1", 2))), put(1, "a", "v2", (40, 50), 3)];
    let violations = check(&history, &log(&[("a", "v1"), ("a", "v2")]), 3, &final_state(&[("a", "v2", 3)]));
    assert!(violations.is_empty(), "{violations:?}");
}

#[test]
fn fires_on_a_stale_read() {
    let history = vec![put(0, "a", "v1", (0, 10), 2), put(1, "a", "v2", (20, 30), 3), get("a", (40, 50), 2, Some(("v1", 2)))];
    let violations = check(&history, &log(&[("a", "v1"), ("a", "v2")]), 3, &final_state(&[("a", "v2", 3)]));
    assert!(violations.iter().any(|violation| violation.contains("real-time")), "{violations:?}");
}

#[test]
fn a_serializable_read_may_be_stale_but_not_wrong() {
    let history = |found| {
        let mut stale = get("a", (40, 50), 2, found);
        stale.serializable = true;
        vec![put(0, "a", "v1", (0, 10), 2), put(1, "a", "v2", (20, 30), 3), stale]
    };
    let (log, state) = (log(&[("a", "v1"), ("a", "v2")]), final_state(&[("a", "v2", 3)]));
    let violations = check(&history(Some(("v1", 2))), &log, 3, &state);
    assert!(violations.is_empty(), "{violations:?}");
    // Stale is allowed; a value the log never had at that revision is not.
    let violations = check(&history(Some(("v2", 3))), &log, 3, &state);
    assert!(violations.iter().any(|violation| violation.contains("read saw")), "{violations:?}");
    // A serializable answer that wrote is a write: it must land above what came before.
    let mut late = put(2, "a", "v3", (40, 50), 2);
    late.serializable = true;
    let history = vec![put(0, "a", "v1", (0, 10), 2), put(1, "a", "v2", (20, 30), 3), late];
    let violations = check(&history, &log, 3, &state);
    assert!(violations.iter().any(|violation| violation.contains("real-time")), "{violations:?}");
}

#[test]
fn fires_on_a_lost_write() {
    // The node came back one revision short.
    let history = vec![put(0, "a", "v1", (0, 10), 2), put(1, "a", "v2", (20, 30), 3)];
    let violations = check(&history, &log(&[("a", "v1")]), 2, &final_state(&[("a", "v1", 2)]));
    assert!(violations.iter().any(|violation| violation.contains("beyond the committed log")), "{violations:?}");
    // Another write took the lost one's revision.
    let mut other = put(2, "a", "v3", (25, 40), 0);
    other.outcome = Outcome::Unknown("crash".into());
    let history = vec![put(0, "a", "v1", (0, 10), 2), put(1, "a", "v2", (20, 30), 3), other];
    let violations = check(&history, &log(&[("a", "v1"), ("a", "v3")]), 3, &final_state(&[("a", "v3", 3)]));
    assert!(violations.iter().any(|violation| violation.contains("lost or misplaced")), "{violations:?}");
}

#[test]
fn fires_on_a_duplicated_revision() {
    // Two acknowledged writes told the same revision (a revision reused after a crash).
    let history = vec![put(0, "a", "v1", (0, 10), 2), put(1, "b", "v2", (20, 30), 2)];
    let violations = check(&history, &log(&[("b", "v2")]), 2, &final_state(&[("b", "v2", 2)]));
    assert!(!violations.is_empty());
}

#[test]
fn fires_on_a_read_of_a_value_the_log_never_had() {
    let history = vec![put(0, "a", "v1", (0, 10), 2), get("a", (20, 30), 2, Some(("ghost", 2)))];
    let violations = check(&history, &log(&[("a", "v1")]), 2, &final_state(&[("a", "v1", 2)]));
    assert!(violations.iter().any(|violation| violation.contains("read saw")), "{violations:?}");
}

#[test]
fn fires_on_a_phantom_and_a_hole() {
    let history = vec![put(0, "a", "v1", (0, 10), 2)];
    let mut bad = log(&[("a", "v1"), ("a", "nobody")]);
    let violations = check(&history, &bad, 3, &final_state(&[("a", "nobody", 3)]));
    assert!(violations.iter().any(|violation| violation.contains("no client wrote")), "{violations:?}");
    bad.revisions[1].0 = 4;
    let violations = check(&history, &bad, 4, &final_state(&[("a", "nobody", 4)]));
    assert!(violations.iter().any(|violation| violation.contains("not dense")), "{violations:?}");
}

#[test]
fn fires_on_a_txn_taking_the_wrong_branch() {
    let cas = Op {
        client: 1,
        kind: OpKind::Cas { key: "a".into(), expected: 7, value: "v2".into() },
        invoke_ns: 20,
        complete_ns: 30,
        outcome: Outcome::Wrote { revision: 3, succeeded: true, deleted: 0 },
        serializable: false,
    };
    let history = vec![put(0, "a", "v1", (0, 10), 2), cas];
    let violations = check(&history, &log(&[("a", "v1"), ("a", "v2")]), 3, &final_state(&[("a", "v2", 3)]));
    assert!(violations.iter().any(|violation| violation.contains("wrong branch")), "{violations:?}");
}

#[test]
fn fires_when_a_leases_keys_go_at_different_revisions_or_one_stays() {
    let mut revisions = log(&[("la", "1"), ("lb", "2"), ("lc", "3"), ("ld", "4")]).revisions;
    revisions.push((6, vec![delete_change("la"), delete_change("lb")]));
    revisions.push((7, vec![delete_change("lc")]));
    let pairs = [("la".to_string(), "lb".to_string())];
    assert!(check_lease_pairs(&Log { revisions: revisions.clone() }, &pairs).is_empty(), "one revision: fine");
    let split = [("lc".to_string(), "ld".to_string())];
    let found = check_lease_pairs(&Log { revisions: revisions.clone() }, &split);
    assert_eq!(found.len(), 1, "lc went, ld stayed: {found:?}");
    revisions.push((8, vec![delete_change("ld")]));
    assert_eq!(check_lease_pairs(&Log { revisions }, &split).len(), 1, "lc at 7, ld at 8");
}

fn watched(received: &[(i64, &str, &str)]) -> WatchRecord {
    let received = received.iter().map(|(revision, key, value)| (*revision, vec![put_change(key, value)])).collect();
    WatchRecord { watcher: 1, key: "a".into(), range_end: "b".into(), start: 1, received, ..Default::default() }
}

/// `watched`, told after `after` revisions that `requested` was compacted at `compact_revision`.
fn watched_across_compaction(received: &[(i64, &str, &str)], after: usize, requested: i64, compact_revision: i64) -> WatchRecord {
    WatchRecord { compactions: vec![CompactionSeen { after, requested, compact_revision }], ..watched(received) }
}

/// Revisions 2..=5: a, x (outside the watched range), a, a.
fn watch_log() -> Log {
    log(&[("a", "v1"), ("x", "y1"), ("a", "v2"), ("a", "v3")])
}

#[test]
fn a_watcher_that_saw_everything_in_order_passes() {
    let violations = check_watches(&watch_log(), &[watched(&[(2, "a", "v1"), (4, "a", "v2"), (5, "a", "v3")])], &BTreeSet::new());
    assert!(violations.is_empty(), "{violations:?}");
    // Stopping early is fine: only what was received is judged.
    assert!(check_watches(&watch_log(), &[watched(&[(2, "a", "v1")])], &BTreeSet::new()).is_empty());
}

#[test]
fn fires_on_a_reordered_watch_event() {
    let violations = check_watches(&watch_log(), &[watched(&[(2, "a", "v1"), (5, "a", "v3"), (4, "a", "v2")])], &BTreeSet::new());
    assert!(violations.iter().any(|violation| violation.contains("missed revision 4")), "{violations:?}");
    let violations = check_watches(&watch_log(), &[watched(&[(4, "a", "v2"), (2, "a", "v1")])], &BTreeSet::new());
    assert!(!violations.is_empty());
}

#[test]
fn fires_on_a_duplicated_watch_event() {
    let violations = check_watches(&watch_log(), &[watched(&[(2, "a", "v1"), (4, "a", "v2"), (4, "a", "v2")])], &BTreeSet::new());
    assert!(violations.iter().any(|violation| violation.contains("out of order or twice")), "{violations:?}");
}

#[test]
fn fires_on_a_watch_gap_and_a_phantom_revision() {
    // Resumed one revision too late after a restart.
    let violations = check_watches(&watch_log(), &[watched(&[(2, "a", "v1"), (5, "a", "v3")])], &BTreeSet::new());
    assert!(violations.iter().any(|violation| violation.contains("missed revision 4")), "{violations:?}");
    let violations = check_watches(&watch_log(), &[watched(&[(2, "a", "v1"), (3, "a", "ghost")])], &BTreeSet::new());
    assert!(violations.iter().any(|violation| violation.contains("no change in its range")), "{violations:?}");
}

#[test]
fn fires_on_a_split_revision() {
    // Revision 2 changed two keys in the range; the watcher got them as two deliveries.
    let log = Log { revisions: vec![(2, vec![put_change("a", "v1"), put_change("ab", "w1")])] };
    let violations = check_watches(&log, &[watched(&[(2, "a", "v1"), (2, "ab", "w1")])], &BTreeSet::new());
    assert!(violations.iter().any(|violation| violation.contains("split or altered")), "{violations:?}");
}

#[test]
fn fires_on_a_wrong_scan_and_a_torn_append() {
    // Revision 2: a=v1; revision 3: an append of a=v2 and b=w2 (one txn, one revision).
    let log = Log { revisions: vec![(2, vec![put_change("a", "v1")]), (3, vec![put_change("a", "v2"), put_change("b", "w2")])] };
    let state = final_state(&[("a", "v2", 3), ("b", "w2", 3)]);
    let append = |succeeded, revision| Op {
        client: 1,
        kind: OpKind::Append { writes: vec![("a".into(), 2, "v2".into()), ("b".into(), 0, "w2".into())] },
        invoke_ns: 20,
        complete_ns: 30,
        outcome: Outcome::Wrote { revision, succeeded, deleted: 0 },
        serializable: false,
    };
    let scan = |kvs: Vec<(&str, &str, i64)>| Op {
        client: 2,
        kind: OpKind::Scan { from: "a".into(), to: "c".into() },
        invoke_ns: 40,
        complete_ns: 50,
        outcome: Outcome::Scanned { revision: 3, kvs: kvs.into_iter().map(|(k, v, at)| (k.into(), v.into(), at)).collect() },
        serializable: false,
    };
    let good = vec![put(0, "a", "v1", (0, 10), 2), append(true, 3), scan(vec![("a", "v2", 3), ("b", "w2", 3)])];
    let violations = check(&good, &log, 3, &state);
    assert!(violations.is_empty(), "{violations:?}");
    // A scan that saw half of the append.
    let half = vec![put(0, "a", "v1", (0, 10), 2), append(true, 3), scan(vec![("a", "v2", 3)])];
    assert!(check(&half, &log, 3, &state).iter().any(|violation| violation.contains("scan saw")));
    // An append told it failed, whose values are in the log anyway.
    let lied = vec![put(0, "a", "v1", (0, 10), 2), append(false, 3)];
    assert!(check(&lied, &log, 3, &state).iter().any(|violation| violation.contains("txn")));
    // An append applied in two revisions.
    let torn =
        Log { revisions: vec![(2, vec![put_change("a", "v1")]), (3, vec![put_change("a", "v2")]), (4, vec![put_change("b", "w2")])] };
    let torn_state = final_state(&[("a", "v2", 3), ("b", "w2", 4)]);
    let violations = check(&[put(0, "a", "v1", (0, 10), 2), append(true, 3)], &torn, 4, &torn_state);
    assert!(violations.iter().any(|violation| violation.contains("txn effect")), "{violations:?}");
}

fn term(term: u64, indexes: Option<(u64, u64)>, sealed: bool) -> t4::durability::status::TermStatus {
    t4::durability::status::TermStatus { term, first_seq: 1, objects: 1, indexes, sealed_at: sealed.then_some(2), stray: 0 }
}

fn bucket(lock_term: u64, terms: Vec<t4::durability::status::TermStatus>) -> t4::durability::status::Status {
    let lock = t4::election::LockRecord { term: lock_term, node: "n".into(), ..Default::default() };
    t4::durability::status::Status { lock: Some(lock), terms, checkpoints: Vec::new(), chunks: 0 }
}

#[test]
fn the_fencing_check_passes_a_log_handed_from_term_to_term() {
    let status =
        bucket(4, vec![term(1, Some((1, 10)), true), term(2, None, true), term(3, Some((11, 20)), true), term(4, Some((21, 22)), false)]);
    assert_eq!(check_terms(&status), Vec::<String>::new());
}

#[test]
fn the_fencing_check_fires_on_a_term_that_wrote_over_an_older_one() {
    // Split brain: term 2 started at index 5 while term 1 went on to 10.
    let status = bucket(2, vec![term(1, Some((1, 10)), true), term(2, Some((5, 12)), false)]);
    let violations = check_terms(&status);
    assert!(violations.iter().any(|v| v.contains("older term 1 had written up to 10")), "{violations:?}");
}

#[test]
fn the_fencing_check_fires_on_an_unsealed_older_term_and_a_term_past_the_lock() {
    let status = bucket(2, vec![term(1, Some((1, 10)), false), term(3, Some((11, 12)), false)]);
    let violations = check_terms(&status);
    assert!(violations.iter().any(|v| v.contains("term 1 is not sealed")), "{violations:?}");
    assert!(violations.iter().any(|v| v.contains("lock was only ever taken up to term 2")), "{violations:?}");
}

#[test]
fn a_watcher_told_of_a_compaction_may_skip_to_past_it_and_no_further() {
    // Watched revision 2, was told at resumption that 3 was compacted at 4 (compaction asked
    // for at 4), resumed at 5.
    let told = watched_across_compaction(&[(2, "a", "v1"), (5, "a", "v3")], 1, 3, 4);
    assert_eq!(check_watches(&watch_log(), &[told], &BTreeSet::from([4])), Vec::<String>::new());
    // Without being told, the same skip is a gap.
    assert!(!check_watches(&watch_log(), &[watched(&[(2, "a", "v1"), (5, "a", "v3")])], &BTreeSet::from([4])).is_empty());
    // Told at the start of a compaction at 3 only: revision 4 is still owed.
    let short = watched_across_compaction(&[(5, "a", "v3")], 0, 1, 3);
    let violations = check_watches(&watch_log(), &[short], &BTreeSet::from([4]));
    assert!(violations.iter().any(|violation| violation.contains("missed revision 4")), "{violations:?}");
}

#[test]
fn fires_on_a_compaction_nobody_asked_for_or_that_did_not_cover_the_request() {
    let told = watched_across_compaction(&[(2, "a", "v1"), (5, "a", "v3")], 1, 3, 4);
    let violations = check_watches(&watch_log(), &[told], &BTreeSet::from([3]));
    assert!(violations.iter().any(|violation| violation.contains("none was asked for above 3")), "{violations:?}");
    // Asked from 4 and told compacted at 4: revision 4 was still there to serve.
    let wrong = watched_across_compaction(&[(2, "a", "v1"), (5, "a", "v3")], 1, 4, 4);
    let violations = check_watches(&watch_log(), &[wrong], &BTreeSet::from([4]));
    assert!(violations.iter().any(|violation| violation.contains("compaction point it was given is 4")), "{violations:?}");
}

#[test]
fn a_watch_from_exactly_the_compaction_point_may_lack_that_revisions_deletes_only() {
    // Revision 3 deletes a and puts ab; revision 4 deletes a only; revision 5 puts a.
    let log = Log {
        revisions: vec![
            (2, vec![put_change("a", "v1")]),
            (3, vec![delete_change("a"), put_change("ab", "w1")]),
            (4, vec![delete_change("ab")]),
            (5, vec![put_change("a", "v2")]),
        ],
    };
    // Resumed at 3 after a compaction at 3: revision 3 without its delete is etcd's answer.
    let from_three = WatchRecord { resumed: vec![(0, 1), (1, 3)], ..watched(&[(2, "a", "v1"), (3, "ab", "w1"), (5, "a", "v2")]) };
    let violations = check_watches(&log, std::slice::from_ref(&from_three), &BTreeSet::from([3]));
    assert!(violations.iter().any(|v| v.contains("missed revision 4")), "4 is owed whole: {violations:?}");
    let mut whole = from_three;
    whole.received.insert(2, (4, vec![delete_change("ab")]));
    assert_eq!(check_watches(&log, std::slice::from_ref(&whole), &BTreeSet::from([3])), Vec::<String>::new());
    // Without a compaction at 3, the missing delete is an altered revision.
    let violations = check_watches(&log, &[whole], &BTreeSet::from([2]));
    assert!(violations.iter().any(|v| v.contains("split or altered")), "{violations:?}");
    // Resumed at 4 after a compaction at 4: revision 4 was deletes only, it may be absent.
    let mut with_three = watched(&[(2, "a", "v1"), (5, "a", "v2")]);
    with_three.received.insert(1, (3, vec![delete_change("a"), put_change("ab", "w1")]));
    with_three.resumed = vec![(0, 1), (2, 4)];
    assert_eq!(check_watches(&log, &[with_three], &BTreeSet::from([4])), Vec::<String>::new());
}
