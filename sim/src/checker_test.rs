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
    }
}

fn get(key: &str, times: (u128, u128), revision: i64, found: Option<(&str, i64)>) -> Op {
    Op {
        client: 9,
        kind: OpKind::Get { key: key.into() },
        invoke_ns: times.0,
        complete_ns: times.1,
        outcome: Outcome::Read { revision, found: found.map(|(value, at)| (value.to_string(), at)) },
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
