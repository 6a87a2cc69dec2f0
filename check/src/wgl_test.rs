//! Self-tests: the WGL search accepts linearizable histories and fires on bad ones.

use super::*;
use crate::history::{Op, OpKind, Outcome};

fn op(kind: OpKind, times: (u128, u128), outcome: Outcome) -> Op {
    Op { client: 0, kind, invoke_ns: times.0, complete_ns: times.1, outcome, serializable: false }
}

fn put(value: &str, times: (u128, u128), revision: i64) -> Op {
    op(OpKind::Put { key: "a".into(), value: value.into() }, times, Outcome::Wrote { revision, succeeded: true, deleted: 0 })
}

fn get(times: (u128, u128), found: Option<(&str, i64)>) -> Op {
    op(OpKind::Get { key: "a".into() }, times, Outcome::Read { revision: 0, found: found.map(|(value, at)| (value.into(), at)) })
}

#[test]
fn concurrent_ops_may_take_either_order() {
    // The read overlaps both writes: it may see either.
    let history = vec![put("v1", (0, 10), 2), put("v2", (5, 30), 3), get((6, 40), Some(("v1", 2)))];
    let report = check(&history);
    assert!(report.violations.is_empty() && report.inconclusive.is_empty(), "{report:?}");
}

#[test]
fn fires_on_a_stale_read() {
    let history = vec![put("v1", (0, 10), 2), put("v2", (20, 30), 3), get((40, 50), Some(("v1", 2)))];
    assert_eq!(check(&history).violations.len(), 1);
}

#[test]
fn fires_on_a_lost_write() {
    // Acknowledged, then never seen: the read after it sees nothing.
    let history = vec![put("v1", (0, 10), 2), get((20, 30), None)];
    assert_eq!(check(&history).violations.len(), 1);
}

#[test]
fn fires_on_a_duplicated_revision() {
    // Two writes claiming one revision: a CAS against v1's revision 2 succeeds when v2
    // (also "revision 2") is what the register holds.
    let cas = op(
        OpKind::Cas { key: "a".into(), expected: 2, value: "v3".into() },
        (40, 50),
        Outcome::Wrote { revision: 4, succeeded: true, deleted: 0 },
    );
    let history = vec![put("v1", (0, 10), 2), put("v2", (20, 30), 2), cas];
    let report = check(&history);
    assert!(!report.violations.is_empty(), "{report:?}");
}

#[test]
fn a_write_with_unknown_outcome_may_land_late_or_never() {
    let unknown = op(OpKind::Put { key: "a".into(), value: "u".into() }, (5, 6), Outcome::Unknown("crash".into()));
    let landed = vec![put("v1", (0, 10), 2), unknown.clone(), get((50, 60), Some(("u", 3)))];
    assert!(check(&landed).violations.is_empty());
    let never = vec![put("v1", (0, 10), 2), unknown.clone(), get((50, 60), Some(("v1", 2)))];
    assert!(check(&never).violations.is_empty());
    // But not before it began.
    let early = vec![get((0, 1), Some(("u", 3))), unknown];
    assert_eq!(check(&early).violations.len(), 1);
}

#[test]
fn compare_and_swap_and_delete_answers_must_fit() {
    let failed_cas = |expected| {
        op(
            OpKind::Cas { key: "a".into(), expected, value: "x".into() },
            (20, 30),
            Outcome::Wrote { revision: 2, succeeded: false, deleted: 0 },
        )
    };
    // The register holds v1 (revision 2): a CAS against revision 2 cannot fail.
    assert_eq!(check(&[put("v1", (0, 10), 2), failed_cas(2)]).violations.len(), 1);
    assert!(check(&[put("v1", (0, 10), 2), failed_cas(0)]).violations.is_empty());
    let delete = |deleted| op(OpKind::Delete { key: "a".into() }, (20, 30), Outcome::Wrote { revision: 3, succeeded: true, deleted });
    assert!(check(&[put("v1", (0, 10), 2), delete(1)]).violations.is_empty());
    assert_eq!(check(&[put("v1", (0, 10), 2), delete(0)]).violations.len(), 1, "it said it removed nothing");
}
