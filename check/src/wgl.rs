//! Per-key linearizability by Wing–Gong/Lowe search, independent of the committed log.
//!
//! Each key is a register holding a value or nothing. The history is projected on each key:
//! a put or delete writes it, a get (or one key of a scan) reads it, a compare-and-swap (or
//! one key of a two-key append that succeeded) writes it if it held the value the client
//! compared against (a `mod_revision` is translated to the value written at that revision,
//! which the client learned from a read), and a failed compare-and-swap read something else.
//! An op with unknown outcome may take effect at any point after it began, or never; an op
//! refused took no effect. The search looks for an order of the key's ops, each placed
//! between its invoke and its completion, in which every read sees the register as it is
//! (Lowe's just-in-time linearization with a cache of (ops done, register) pairs).
//!
//! A failed append says only that one of its compares failed, so its keys get no constraint
//! from it; answers of a process that may be fenced (`serializable`) that changed nothing
//! are left out, as the revision-replay checker leaves them out of real-time order.

use std::collections::{BTreeMap, BTreeSet};

use crate::history::{Op, OpKind, Outcome};

/// What one op does to one key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    Write(Option<String>),
    /// A delete that reports whether it removed something (None: outcome unknown).
    Delete {
        removed: Option<bool>,
    },
    Read(Option<String>),
    /// Write `value` if the register holds `expected`.
    CompareAndSet {
        expected: Option<String>,
        value: String,
    },
    /// The register did not hold `expected` (a failed compare-and-swap).
    ReadNot(Option<String>),
}

#[derive(Debug, Clone)]
struct KeyOp {
    invoke: u128,
    /// None: no answer (may take effect any time after `invoke`, or never).
    complete: Option<u128>,
    action: Action,
    /// Index into the history, for the report.
    op: usize,
}

/// Search steps allowed per key before the search gives up (reported, never passed over).
const STEPS_MAX: u64 = 300_000;

/// What the search found.
#[derive(Debug, Default)]
pub struct WglReport {
    pub violations: Vec<String>,
    /// Keys whose search ran out of steps (neither proven nor refuted).
    pub inconclusive: Vec<String>,
}

pub fn check(history: &[Op]) -> WglReport {
    let mut report = WglReport::default();
    let values_at = values_by_revision(history, &mut report.violations);
    let keys: BTreeSet<String> = values_at.keys().map(|(key, _)| key.clone()).collect();
    let mut per_key: BTreeMap<String, Vec<KeyOp>> = BTreeMap::new();
    for (index, op) in history.iter().enumerate() {
        for (key, action) in project(op, &values_at, &keys) {
            let complete = match op.outcome {
                Outcome::Unknown(_) => None,
                _ => Some(op.complete_ns),
            };
            per_key.entry(key).or_default().push(KeyOp { invoke: op.invoke_ns, complete, action, op: index });
        }
    }
    for (key, ops) in per_key {
        match search(&ops) {
            Search::Linearizable => {}
            Search::Exhausted => report.inconclusive.push(key),
            Search::Not { stuck_at } => {
                let op = &history[ops[stuck_at].op];
                report.violations.push(format!(
                    "linearizability (WGL): no order of key {key}'s {} ops explains them; stuck at client {} {:?} -> {:?}",
                    ops.len(),
                    op.client,
                    op.kind,
                    op.outcome
                ));
            }
        }
    }
    report
}

/// (key, revision) -> the value the key got at that revision, from every acknowledged write
/// and every read. Two values for one key at one revision, or two writes told the same
/// revision, are violations in themselves.
fn values_by_revision(history: &[Op], violations: &mut Vec<String>) -> BTreeMap<(String, i64), String> {
    let mut writers: BTreeMap<i64, usize> = BTreeMap::new();
    for (index, op) in history.iter().enumerate() {
        if let (true, Some(revision)) = (op.changed(), op.revision()) {
            if let Some(other) = writers.insert(revision, index) {
                violations.push(format!(
                    "linearizability (WGL): two writes were told revision {revision}: {:?} and {:?}",
                    history[other].kind, op.kind
                ));
            }
        }
    }
    let mut values = BTreeMap::new();
    let mut claim = |key: &str, revision: i64, value: &str| {
        if let Some(other) = values.insert((key.to_string(), revision), value.to_string()) {
            if other != value {
                violations.push(format!("linearizability (WGL): key {key} held both {other:?} and {value:?} at revision {revision}"));
            }
        }
    };
    for op in history {
        match (&op.kind, &op.outcome) {
            (OpKind::Put { key, value } | OpKind::Cas { key, value, .. }, Outcome::Wrote { revision, succeeded: true, .. }) => {
                claim(key, *revision, value);
            }
            (OpKind::Append { writes }, Outcome::Wrote { revision, succeeded: true, .. }) => {
                for (key, _, value) in writes {
                    claim(key, *revision, value);
                }
            }
            (OpKind::Get { key }, Outcome::Read { found: Some((value, at)), .. }) => claim(key, *at, value),
            (OpKind::Scan { .. }, Outcome::Scanned { kvs, .. }) => {
                for (key, value, at) in kvs {
                    claim(key, *at, value);
                }
            }
            _ => {}
        }
    }
    values
}

/// The value `key` held when its mod_revision was `expected` (0: absent). None when no op
/// of the history tells (then the op is left out).
fn expected_value(values: &BTreeMap<(String, i64), String>, key: &str, expected: i64) -> Option<Option<String>> {
    if expected == 0 {
        return Some(None);
    }
    values.get(&(key.to_string(), expected)).map(|value| Some(value.clone()))
}

/// `keys`: every key some op of the history saw or wrote (what a scan reads as absent).
fn project(op: &Op, values: &BTreeMap<(String, i64), String>, keys: &BTreeSet<String>) -> Vec<(String, Action)> {
    let unknown = matches!(op.outcome, Outcome::Unknown(_));
    let stale_ok = op.serializable && !op.changed();
    match (&op.kind, &op.outcome) {
        (_, Outcome::Refused(_)) => Vec::new(),
        (OpKind::Put { key, value }, _) => vec![(key.clone(), Action::Write(Some(value.clone())))],
        (OpKind::Delete { key }, Outcome::Wrote { deleted, .. }) if !stale_ok => {
            vec![(key.clone(), Action::Delete { removed: Some(*deleted > 0) })]
        }
        (OpKind::Delete { key }, _) if unknown => vec![(key.clone(), Action::Delete { removed: None })],
        (OpKind::Get { key }, Outcome::Read { found, .. }) if !stale_ok => {
            vec![(key.clone(), Action::Read(found.as_ref().map(|(value, _)| value.clone())))]
        }
        (OpKind::Scan { from, to }, Outcome::Scanned { kvs, .. }) if !stale_ok => {
            // Every key the workload uses that lies in the range: found, or read as absent.
            keys.range::<str, _>((std::ops::Bound::Included(from.as_str()), std::ops::Bound::Excluded(to.as_str())))
                .map(|key| {
                    let found = kvs.iter().find(|(seen, _, _)| seen == key).map(|(_, value, _)| value.clone());
                    (key.clone(), Action::Read(found))
                })
                .collect()
        }
        (OpKind::Cas { key, expected, value }, outcome) => match expected_value(values, key, *expected) {
            None => Vec::new(),
            Some(expected) => match outcome {
                Outcome::Wrote { succeeded: false, .. } if stale_ok => Vec::new(),
                Outcome::Wrote { succeeded: false, .. } => vec![(key.clone(), Action::ReadNot(expected))],
                _ => vec![(key.clone(), Action::CompareAndSet { expected, value: value.clone() })],
            },
        },
        (OpKind::Append { writes }, outcome) if unknown || matches!(outcome, Outcome::Wrote { succeeded: true, .. }) => writes
            .iter()
            .filter_map(|(key, expected, value)| {
                expected_value(values, key, *expected)
                    .map(|expected| (key.clone(), Action::CompareAndSet { expected, value: value.clone() }))
            })
            .collect(),
        _ => Vec::new(),
    }
}

enum Search {
    Linearizable,
    Not { stuck_at: usize },
    Exhausted,
}

/// Applies `action` to `register`: the register after it, or None if the op cannot happen
/// now (a read that would see something else; for a write of unknown outcome, never).
fn apply(register: &Option<String>, action: &Action) -> Option<Option<String>> {
    match action {
        Action::Write(value) => Some(value.clone()),
        Action::Delete { removed } => match removed {
            Some(removed) if *removed != register.is_some() => None,
            _ => Some(None),
        },
        Action::Read(seen) => (seen == register).then(|| register.clone()),
        Action::CompareAndSet { expected, value } => (expected == register).then(|| Some(value.clone())),
        Action::ReadNot(expected) => (expected != register).then(|| register.clone()),
    }
}

/// Lowe's search over one key's ops.
fn search(ops: &[KeyOp]) -> Search {
    // Entries: (time, is_return, op); calls before returns at equal times; unknown returns last.
    let mut entries: Vec<(u128, bool, usize)> = Vec::with_capacity(ops.len() * 2);
    for (index, op) in ops.iter().enumerate() {
        entries.push((op.invoke, false, index));
        entries.push((op.complete.unwrap_or(u128::MAX), true, index));
    }
    entries.sort_by_key(|(time, is_return, index)| (*time, *is_return, *index));
    let mut list = Links::new(entries.len());
    let (mut call_of, mut return_of) = (vec![0; ops.len()], vec![0; ops.len()]);
    for (position, (_, is_return, op)) in entries.iter().enumerate() {
        if *is_return {
            return_of[*op] = position;
        } else {
            call_of[*op] = position;
        }
    }
    // The set of placed ops, as a Zobrist hash (a random word per op, xored in and out):
    // the cache then costs a word per entry, not a bitset.
    let zobrist: Vec<u64> = (0..ops.len() as u64).map(splitmix).collect();
    let mut done = 0u64;
    let mut register: Option<String> = None;
    let mut seen: BTreeSet<(u64, Option<String>)> = BTreeSet::new();
    // Placed ops, each with the register before it.
    let mut stack: Vec<(usize, Option<String>)> = Vec::new();
    let mut cursor = list.first();
    for _ in 0..STEPS_MAX {
        let Some(position) = cursor else { return Search::Linearizable };
        let (time, is_return, op) = entries[position];
        if is_return && time == u128::MAX {
            // Only ops without an answer remain: they may never have taken effect.
            return Search::Linearizable;
        }
        if !is_return {
            if let Some(after) = apply(&register, &ops[op].action) {
                done ^= zobrist[op];
                if seen.insert((done, after.clone())) {
                    stack.push((op, std::mem::replace(&mut register, after)));
                    list.lift(call_of[op]);
                    list.lift(return_of[op]);
                    cursor = list.first();
                    continue;
                }
                done ^= zobrist[op];
            }
            cursor = list.next(position);
            continue;
        }
        // A return whose op is not placed yet: undo the last placement, try further on.
        let Some((last, before)) = stack.pop() else {
            return Search::Not { stuck_at: op };
        };
        register = before;
        done ^= zobrist[last];
        list.restore(return_of[last]);
        list.restore(call_of[last]);
        cursor = list.next(call_of[last]);
    }
    Search::Exhausted
}

/// A well-mixed 64-bit word from `seed` (splitmix64).
fn splitmix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A doubly linked list over entry positions, from which entries are lifted and restored
/// in reverse order (dancing links).
struct Links {
    next: Vec<Option<usize>>,
    /// None: the entry is first.
    prev: Vec<Option<usize>>,
    head: Option<usize>,
}

impl Links {
    fn new(count: usize) -> Self {
        Self {
            next: (0..count).map(|position| (position + 1 < count).then_some(position + 1)).collect(),
            prev: (0..count).map(|position| position.checked_sub(1)).collect(),
            head: (count > 0).then_some(0),
        }
    }

    fn first(&self) -> Option<usize> {
        self.head
    }

    fn next(&self, position: usize) -> Option<usize> {
        self.next[position]
    }

    fn lift(&mut self, position: usize) {
        let (before, after) = (self.prev[position], self.next[position]);
        match before {
            Some(before) => self.next[before] = after,
            None => self.head = after,
        }
        if let Some(after) = after {
            self.prev[after] = before;
        }
    }

    fn restore(&mut self, position: usize) {
        let (before, after) = (self.prev[position], self.next[position]);
        match before {
            Some(before) => self.next[before] = Some(position),
            None => self.head = Some(position),
        }
        if let Some(after) = after {
            self.prev[after] = Some(position);
        }
    }
}

#[cfg(test)]
#[path = "wgl_test.rs"]
mod wgl_test;
