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

fn log(changes: &[(&str, &str)]) -> Log {
    let revisions = changes
        .iter()
        .enumerate()
        .map(|(index, (key, value))| (index as i64 + 2, vec![LogChange::Put { key: key.to_string(), value: value.to_string() }]))
        .collect();
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
    let delete = |key: &str| LogChange::Delete { key: key.into() };
    revisions.push((6, vec![delete("la"), delete("lb")]));
    revisions.push((7, vec![delete("lc")]));
    let pairs = [("la".to_string(), "lb".to_string())];
    assert!(check_lease_pairs(&Log { revisions: revisions.clone() }, &pairs).is_empty(), "one revision: fine");
    let split = [("lc".to_string(), "ld".to_string())];
    let found = check_lease_pairs(&Log { revisions: revisions.clone() }, &split);
    assert_eq!(found.len(), 1, "lc went, ld stayed: {found:?}");
    revisions.push((8, vec![delete("ld")]));
    assert_eq!(check_lease_pairs(&Log { revisions }, &split).len(), 1, "lc at 7, ld at 8");
}

fn watched(received: &[(i64, &str, &str)]) -> WatchRecord {
    let received = received
        .iter()
        .map(|(revision, key, value)| (*revision, vec![LogChange::Put { key: key.to_string(), value: value.to_string() }]))
        .collect();
    WatchRecord { watcher: 1, key: "a".into(), range_end: "b".into(), start: 1, received }
}

/// Revisions 2..=5: a, x (outside the watched range), a, a.
fn watch_log() -> Log {
    log(&[("a", "v1"), ("x", "y1"), ("a", "v2"), ("a", "v3")])
}

#[test]
fn a_watcher_that_saw_everything_in_order_passes() {
    let violations = check_watches(&watch_log(), &[watched(&[(2, "a", "v1"), (4, "a", "v2"), (5, "a", "v3")])]);
    assert!(violations.is_empty(), "{violations:?}");
    // Stopping early is fine: only what was received is judged.
    assert!(check_watches(&watch_log(), &[watched(&[(2, "a", "v1")])]).is_empty());
}

#[test]
fn fires_on_a_reordered_watch_event() {
    let violations = check_watches(&watch_log(), &[watched(&[(2, "a", "v1"), (5, "a", "v3"), (4, "a", "v2")])]);
    assert!(violations.iter().any(|violation| violation.contains("missed revision 4")), "{violations:?}");
    let violations = check_watches(&watch_log(), &[watched(&[(4, "a", "v2"), (2, "a", "v1")])]);
    assert!(!violations.is_empty());
}

#[test]
fn fires_on_a_duplicated_watch_event() {
    let violations = check_watches(&watch_log(), &[watched(&[(2, "a", "v1"), (4, "a", "v2"), (4, "a", "v2")])]);
    assert!(violations.iter().any(|violation| violation.contains("out of order or twice")), "{violations:?}");
}

#[test]
fn fires_on_a_watch_gap_and_a_phantom_revision() {
    // Resumed one revision too late after a restart.
    let violations = check_watches(&watch_log(), &[watched(&[(2, "a", "v1"), (5, "a", "v3")])]);
    assert!(violations.iter().any(|violation| violation.contains("missed revision 4")), "{violations:?}");
    let violations = check_watches(&watch_log(), &[watched(&[(2, "a", "v1"), (3, "a", "ghost")])]);
    assert!(violations.iter().any(|violation| violation.contains("no change in its range")), "{violations:?}");
}

#[test]
fn fires_on_a_split_revision() {
    // Revision 2 changed two keys in the range; the watcher got them as two deliveries.
    let log = Log {
        revisions: vec![(
            2,
            vec![LogChange::Put { key: "a".into(), value: "v1".into() }, LogChange::Put { key: "ab".into(), value: "w1".into() }],
        )],
    };
    let violations = check_watches(&log, &[watched(&[(2, "a", "v1"), (2, "ab", "w1")])]);
    assert!(violations.iter().any(|violation| violation.contains("split or altered")), "{violations:?}");
}

#[test]
fn fires_on_a_wrong_scan_and_a_torn_append() {
    // Revision 2: a=v1; revision 3: an append of a=v2 and b=w2 (one txn, one revision).
    let log = Log {
        revisions: vec![
            (2, vec![LogChange::Put { key: "a".into(), value: "v1".into() }]),
            (3, vec![LogChange::Put { key: "a".into(), value: "v2".into() }, LogChange::Put { key: "b".into(), value: "w2".into() }]),
        ],
    };
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
    let torn = Log {
        revisions: vec![
            (2, vec![LogChange::Put { key: "a".into(), value: "v1".into() }]),
            (3, vec![LogChange::Put { key: "a".into(), value: "v2".into() }]),
            (4, vec![LogChange::Put { key: "b".into(), value: "w2".into() }]),
        ],
    };
    let torn_state = final_state(&[("a", "v2", 3), ("b", "w2", 4)]);
    let violations = check(&[put(0, "a", "v1", (0, 10), 2), append(true, 3)], &torn, 4, &torn_state);
    assert!(violations.iter().any(|violation| violation.contains("txn effect")), "{violations:?}");
}
