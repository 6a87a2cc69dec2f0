//! Checkers: the revision-replay oracle for strict serializability of a single node.
//!
//! The committed log (read back from the recovered node from revision 1) is replayed on a
//! sequential model, giving the state at every revision. The history is then judged:
//! - the log is dense (every revision from 2 to the last changed something) and holds no
//!   value no client wrote, and no value twice;
//! - every acknowledged write is in the log at the revision it was told, with its content;
//! - every acknowledged read and scan equals the model at its revision; every txn's branch
//!   matches its compares against the model, and its effect is all or nothing;
//! - real time (serializable answers that changed nothing excepted): an op never observes
//!   or writes a revision below one some op had observed or written before it was invoked,
//!   and a write lands strictly above all of them;
//! - writes with unknown outcome may appear in the log or not, but only after they began.
//!
//! Watches are checked against the same log ([`check_watches`]).
//!
//! Every rule has a self-test on a hand-made bad history (`checker_test.rs`).

use std::collections::{BTreeMap, BTreeSet};

use t4::mvcc::RevisionEvents;
use t4::proto::mvccpb::event::EventType;

use crate::history::{Op, OpKind, Outcome};

/// Key -> (value, mod_revision).
pub type State = BTreeMap<String, (String, i64)>;

/// A change in the committed log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogChange {
    Put { key: String, value: String },
    Delete { key: String },
}

/// The committed log: changes per revision, revision 2 first.
#[derive(Debug, Clone, Default)]
pub struct Log {
    pub revisions: Vec<(i64, Vec<LogChange>)>,
}

impl Log {
    pub fn from_events(events: &[RevisionEvents]) -> Self {
        let revisions = events
            .iter()
            .map(|revision| {
                let changes = revision
                    .events
                    .iter()
                    .map(|event| {
                        let kv = event.kv.clone().unwrap_or_default();
                        let key = String::from_utf8_lossy(&kv.key).into_owned();
                        if event.r#type == EventType::Delete as i32 {
                            LogChange::Delete { key }
                        } else {
                            LogChange::Put { key, value: String::from_utf8_lossy(&kv.value).into_owned() }
                        }
                    })
                    .collect();
                (revision.revision, changes)
            })
            .collect();
        Self { revisions }
    }
}

/// Judges `history` against the committed `log` and the recovered node's `final_state` at
/// `final_revision`. Returns every violation found.
pub fn check(history: &[Op], log: &Log, final_revision: i64, final_state: &State) -> Vec<String> {
    let mut violations = Vec::new();
    let states = replay(log, final_revision, &mut violations);
    if let Some(last) = states.last() {
        if last != final_state {
            violations.push(format!("recovered state differs from the replayed log at revision {final_revision}"));
        }
    }
    let placed = place_values(history, log, &mut violations);
    for op in history {
        check_op(op, &states, &placed, &mut violations);
    }
    check_real_time(history, &placed, &mut violations);
    violations
}

/// A lease's keys go in one revision: for each pair of keys attached to one lease (and
/// deleted by nothing else), if either is deleted, both are, at the same revision.
pub fn check_lease_pairs(log: &Log, pairs: &[(String, String)]) -> Vec<String> {
    let mut deleted: BTreeMap<&str, i64> = BTreeMap::new();
    for (revision, changes) in &log.revisions {
        for change in changes {
            if let LogChange::Delete { key } = change {
                deleted.insert(key.as_str(), *revision);
            }
        }
    }
    pairs
        .iter()
        .filter_map(|(a, b)| {
            let (at_a, at_b) = (deleted.get(a.as_str()), deleted.get(b.as_str()));
            (at_a != at_b).then(|| format!("lease atomicity: keys of one lease went apart: {a} at {at_a:?}, {b} at {at_b:?}"))
        })
        .collect()
}

/// What one watcher received over the whole run: it watched `[key, range_end)` from revision
/// `start` and, whenever its stream ended (the node died, or it was fenced), watched again
/// from one past the last revision it had received — or, when told its next revision was
/// compacted, from one past the compaction point.
#[derive(Debug, Clone, Default)]
pub struct WatchRecord {
    pub watcher: usize,
    pub key: String,
    pub range_end: String,
    pub start: i64,
    /// Revisions received, in order, with their changes in the watched range.
    pub received: Vec<(i64, Vec<LogChange>)>,
    /// Each time the node answered "compacted", in order.
    pub compactions: Vec<CompactionSeen>,
    /// Each (re)start of its stream: how many revisions it had received, and the revision
    /// it asked to watch from.
    pub resumed: Vec<(usize, i64)>,
}

/// A watch refused because the history it asked for was compacted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionSeen {
    /// How many revisions the watcher had received when it was told.
    pub after: usize,
    /// The revision it asked to watch from.
    pub requested: i64,
    /// The compaction point the node reported.
    pub compact_revision: i64,
}

/// Watch guarantees, per watcher: what it received is exactly the committed log's revisions
/// that touch its range, from its start to the last revision it received: in order, none
/// twice, none missed (across resumptions too), none split or altered, none that is not in
/// the log. The only revisions a watcher may miss are ones it was told were compacted, and
/// it may be told so only for a revision below a compaction someone asked for (`compacted`,
/// every revision one was asked at). As in etcd, a watch from exactly a compaction point
/// gets that revision without its deletes (the compaction removed their tombstones).
pub fn check_watches(log: &Log, watchers: &[WatchRecord], compacted: &BTreeSet<i64>) -> Vec<String> {
    let compacted_max = compacted.last().copied().unwrap_or(0);
    let mut violations = Vec::new();
    for record in watchers {
        let watcher = record.watcher;
        let mut bad_compaction = |seen: &CompactionSeen| {
            if seen.requested >= seen.compact_revision {
                Some(format!(
                    "watch: watcher {watcher} was told revision {} was compacted, but the compaction point it was given is {}",
                    seen.requested, seen.compact_revision
                ))
            } else if seen.compact_revision > compacted_max {
                Some(format!(
                    "watch: watcher {watcher} was told of a compaction at {}, but none was asked for above {compacted_max}",
                    seen.compact_revision
                ))
            } else {
                None
            }
        };
        if let Some(violation) = record.compactions.iter().find_map(&mut bad_compaction) {
            violations.push(violation);
            continue;
        }
        let in_range = |key: &str| key >= record.key.as_str() && key < record.range_end.as_str();
        let Some(last) = record.received.last().map(|(revision, _)| *revision) else { continue };
        let expected: Vec<(i64, Vec<LogChange>)> = log
            .revisions
            .iter()
            .filter(|(revision, _)| *revision >= record.start && *revision <= last)
            .map(|(revision, changes)| {
                let touching = changes.iter().filter(|change| in_range(change_key(change))).cloned().collect::<Vec<_>>();
                (*revision, touching)
            })
            .filter(|(_, changes)| !changes.is_empty())
            .collect();
        let mut due = expected.iter().peekable();
        let mut previous = record.start - 1;
        // The revision a stream started at, if a compaction was asked for exactly there.
        let mut lossy = None;
        for (index, (revision, changes)) in record.received.iter().enumerate() {
            if let Some((_, from)) = record.resumed.iter().rev().find(|(after, _)| *after == index) {
                lossy = compacted.contains(from).then_some(*from);
            }
            // Told that history below a compaction point is gone, the watcher resumed just
            // past it (the point's own revision may have lost its deletes): skipping up to
            // it is allowed.
            for seen in record.compactions.iter().filter(|seen| seen.after == index) {
                while due.next_if(|(due, _)| *due <= seen.compact_revision).is_some() {}
                previous = previous.max(seen.compact_revision);
            }
            if *revision <= previous {
                violations.push(format!("watch: watcher {watcher} received revision {revision} after {previous} (out of order or twice)"));
                break;
            }
            let without_deletes = |changes: &[LogChange]| -> Vec<LogChange> {
                changes.iter().filter(|change| matches!(change, LogChange::Put { .. })).cloned().collect()
            };
            if let Some(point) = lossy {
                // Nothing but deletes at the compaction point: the stream may start after it.
                due.next_if(|(due, due_changes)| *due == point && *due < *revision && without_deletes(due_changes).is_empty());
            }
            match due.next() {
                Some((due, _)) if due < revision => {
                    violations.push(format!("watch: watcher {watcher} missed revision {due} (received {revision} next)"));
                    break;
                }
                Some((due, due_changes)) if due == revision => {
                    let compacted_point = lossy == Some(*due) && without_deletes(due_changes) == *changes;
                    if due_changes != changes && !compacted_point {
                        violations.push(format!(
                            "watch: watcher {watcher} received revision {revision} split or altered: {changes:?}, the log has {due_changes:?}"
                        ));
                        break;
                    }
                }
                _ => {
                    violations.push(format!(
                        "watch: watcher {watcher} received revision {revision}, which the log has no change in its range at"
                    ));
                    break;
                }
            }
            previous = *revision;
        }
    }
    violations
}

/// Fencing, as the bucket shows it after healing: along the log, terms never decrease (each
/// term's records lie after every older term's), every term but the newest is sealed, and
/// no term that wrote is newer than the lock (each term had one writer: the one that took it).
pub fn check_terms(status: &t4::durability::status::Status) -> Vec<String> {
    let mut violations = Vec::new();
    let mut before: Option<(u64, u64)> = None;
    for term in &status.terms {
        if let (Some((older, older_last)), Some((first, _))) = (before, term.indexes) {
            if first <= older_last {
                violations.push(format!(
                    "fencing: term {} wrote records from index {first}, but older term {older} had written up to {older_last}",
                    term.term
                ));
            }
        }
        if let Some((_, last)) = term.indexes {
            before = Some((term.term, last));
        }
    }
    let newest = status.terms.last().map(|term| term.term);
    for term in status.terms.iter().filter(|term| Some(term.term) != newest && term.sealed_at.is_none()) {
        violations.push(format!("fencing: term {} is not sealed, though term {} came after it", term.term, newest.unwrap_or(0)));
    }
    match (&status.lock, newest) {
        (Some(lock), Some(newest)) if newest > lock.term => {
            violations.push(format!("fencing: term {newest} wrote to the log, but the lock was only ever taken up to term {}", lock.term))
        }
        (None, Some(newest)) => violations.push(format!("fencing: term {newest} wrote to the log, but no lock was ever taken")),
        _ => {}
    }
    violations
}

fn change_key(change: &LogChange) -> &str {
    match change {
        LogChange::Put { key, .. } | LogChange::Delete { key } => key,
    }
}

/// State at every revision: index r is the state at revision r (index 0 unused).
fn replay(log: &Log, final_revision: i64, violations: &mut Vec<String>) -> Vec<State> {
    let mut states = vec![State::new(), State::new()];
    for (expected, (revision, changes)) in (2..).zip(&log.revisions) {
        if *revision != expected {
            violations.push(format!("log is not dense: revision {revision} where {expected} was due"));
            return states;
        }
        if changes.is_empty() {
            violations.push(format!("revision {revision} changed nothing"));
        }
        let mut next = states.last().expect("non-empty").clone();
        for change in changes {
            match change {
                LogChange::Put { key, value } => {
                    next.insert(key.clone(), (value.clone(), *revision));
                }
                LogChange::Delete { key } => {
                    if next.remove(key).is_none() {
                        violations.push(format!("revision {revision} deletes {key}, which did not exist"));
                    }
                }
            }
        }
        states.push(next);
    }
    if states.len() as i64 - 1 != final_revision.max(1) {
        violations.push(format!("log ends at revision {} but the node is at {final_revision}", states.len() - 1));
    }
    states
}

/// Where each written value landed in the log; flags phantoms and duplicates.
fn place_values(history: &[Op], log: &Log, violations: &mut Vec<String>) -> BTreeMap<String, i64> {
    let written: BTreeSet<&str> = history.iter().flat_map(|op| op.kind.values()).collect();
    let mut placed = BTreeMap::new();
    for (revision, changes) in &log.revisions {
        for change in changes {
            if let LogChange::Put { value, .. } = change {
                if !written.contains(value.as_str()) {
                    violations.push(format!("revision {revision} holds {value:?}, which no client wrote"));
                }
                if placed.insert(value.clone(), *revision).is_some() {
                    violations.push(format!("{value:?} was applied twice (again at revision {revision})"));
                }
            }
        }
    }
    placed
}

fn state_at(states: &[State], revision: i64) -> Option<&State> {
    usize::try_from(revision).ok().and_then(|index| states.get(index)).filter(|_| revision >= 1)
}

fn mod_of(state: &State, key: &str) -> i64 {
    state.get(key).map_or(0, |(_, mod_revision)| *mod_revision)
}

fn check_op(op: &Op, states: &[State], placed: &BTreeMap<String, i64>, violations: &mut Vec<String>) {
    let describe = || format!("client {} {:?} -> {:?}", op.client, op.kind, op.outcome);
    let revision = match &op.outcome {
        Outcome::Refused(_) => {
            if op.kind.values().iter().any(|value| placed.contains_key(*value)) {
                violations.push(format!("refused write took effect: {}", describe()));
            }
            return;
        }
        Outcome::Unknown(_) => return,
        Outcome::Wrote { revision, .. } | Outcome::Read { revision, .. } | Outcome::Scanned { revision, .. } => *revision,
    };
    let Some(state) = state_at(states, revision) else {
        violations.push(format!("revision {revision} is beyond the committed log: {}", describe()));
        return;
    };
    let before = state_at(states, revision - 1);
    match (&op.kind, &op.outcome) {
        (OpKind::Put { value, .. }, Outcome::Wrote { .. }) => {
            if placed.get(value) != Some(&revision) {
                violations.push(format!("acknowledged write lost or misplaced (log has it at {:?}): {}", placed.get(value), describe()));
            }
        }
        (OpKind::Cas { key, expected, value }, Outcome::Wrote { succeeded, .. }) => {
            let compared = if *succeeded { before } else { Some(state) };
            let matched = compared.is_some_and(|compared| mod_of(compared, key) == *expected);
            if matched != *succeeded {
                violations.push(format!("txn took the wrong branch: {}", describe()));
            }
            let landed = placed.get(value).copied();
            if *succeeded && landed != Some(revision) || !*succeeded && landed.is_some() {
                violations.push(format!("txn effect does not match its answer (log: {landed:?}): {}", describe()));
            }
        }
        (OpKind::Append { writes }, Outcome::Wrote { succeeded, .. }) => {
            let compared = if *succeeded { before } else { Some(state) };
            let matched = compared.is_some_and(|compared| writes.iter().all(|(key, expected, _)| mod_of(compared, key) == *expected));
            if matched != *succeeded {
                violations.push(format!("txn took the wrong branch: {}", describe()));
            }
            for (_, _, value) in writes {
                let landed = placed.get(value).copied();
                if *succeeded && landed != Some(revision) || !*succeeded && landed.is_some() {
                    violations.push(format!("txn effect does not match its answer ({value:?} in the log: {landed:?}): {}", describe()));
                }
            }
        }
        (OpKind::Scan { from, to }, Outcome::Scanned { kvs, .. }) => {
            let expected: Vec<(String, String, i64)> = state
                .range::<str, _>((std::ops::Bound::Included(from.as_str()), std::ops::Bound::Excluded(to.as_str())))
                .map(|(key, (value, at))| (key.clone(), value.clone(), *at))
                .collect();
            if &expected != kvs {
                violations.push(format!("scan saw {kvs:?} but the log has {expected:?} at {revision}: {}", describe()));
            }
        }
        (OpKind::Delete { key }, Outcome::Wrote { deleted, .. }) => {
            let existed_before = before.is_some_and(|before| before.contains_key(key));
            let ok = if *deleted > 0 { existed_before && !state.contains_key(key) } else { !state.contains_key(key) };
            if !ok {
                violations.push(format!("delete does not match the log: {}", describe()));
            }
        }
        (OpKind::Get { key }, Outcome::Read { found, .. }) => {
            let expected = state.get(key).cloned();
            if &expected != found {
                violations.push(format!("read saw {found:?} but the log has {expected:?} at {revision}: {}", describe()));
            }
        }
        _ => violations.push(format!("outcome does not fit the op: {}", describe())),
    }
}

/// Real-time order: nothing an op observes or writes may lie below what was observed or
/// written before the op began; a write lands strictly above it. Serializable answers that
/// changed nothing may lag (they still bound what later ops may see: what they saw was
/// committed).
fn check_real_time(history: &[Op], placed: &BTreeMap<String, i64>, violations: &mut Vec<String>) {
    let mut done: Vec<(u128, i64)> = history.iter().filter_map(|op| op.revision().map(|revision| (op.complete_ns, revision))).collect();
    done.sort_unstable();
    let mut prefix_max = Vec::with_capacity(done.len());
    let mut highest = 0;
    for (_, revision) in &done {
        highest = highest.max(*revision);
        prefix_max.push(highest);
    }
    let floor = |invoke_ns: u128| {
        let before = done.partition_point(|(complete_ns, _)| *complete_ns < invoke_ns);
        if before == 0 {
            0
        } else {
            prefix_max[before - 1]
        }
    };
    for op in history {
        let floor = floor(op.invoke_ns);
        let landed = match &op.outcome {
            Outcome::Unknown(_) => op.kind.values().iter().find_map(|value| placed.get(*value).copied()),
            _ => None,
        };
        if let Some(landed) = landed {
            if landed <= floor {
                violations.push(format!(
                    "a write with unknown outcome landed at {landed}, before it began (floor {floor}): client {} {:?}",
                    op.client, op.kind
                ));
            }
        }
        let Some(revision) = op.revision() else { continue };
        if op.serializable && !op.changed() {
            continue;
        }
        let too_low = if op.changed() { revision <= floor } else { revision < floor };
        if too_low {
            violations.push(format!(
                "real-time order broken: revision {revision} after {floor} was already seen: client {} {:?} -> {:?}",
                op.client, op.kind, op.outcome
            ));
        }
    }
}

#[cfg(test)]
#[path = "checker_test.rs"]
mod checker_test;
