//! The structure-aware store target: random operations on a fresh node, each answer
//! compared with a model of etcd's semantics kept beside it, and the node closed and
//! reopened (recovery) in the middle and at the end, after which every retained revision
//! must read as the model says.

use std::collections::{BTreeMap, BTreeSet};

use t4_proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    request_op, response_op, Compare, DeleteRangeRequest, LeaseGrantRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use t4_proto::mvccpb::KeyValue;

use super::{runtime, Input, Scratch};
use crate::{Error, Node};

/// A key as the model keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    value: Vec<u8>,
    create: i64,
    modified: i64,
    version: i64,
    lease: i64,
}

/// etcd's semantics over a handful of keys: every revision's state is kept, so reads at
/// old revisions can be checked too.
struct Model {
    /// The revision of `states[0]`: the node's revision when it was opened empty.
    base: i64,
    compacted: i64,
    states: Vec<BTreeMap<Vec<u8>, Entry>>,
    leases: BTreeSet<i64>,
}

/// What the node must answer, when not a success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Compacted,
    FutureRevision,
    LeaseNotFound,
}

impl Model {
    fn revision(&self) -> i64 {
        self.base + self.states.len() as i64 - 1
    }

    fn current(&self) -> &BTreeMap<Vec<u8>, Entry> {
        self.states.last().expect("a state")
    }

    fn at(&self, revision: i64) -> &BTreeMap<Vec<u8>, Entry> {
        &self.states[(revision - self.base) as usize]
    }

    /// The refusal a read or compaction at `revision` gets (0: the current one).
    fn check_revision(&self, revision: i64, compaction: bool) -> Option<Refusal> {
        if revision > self.revision() {
            Some(Refusal::FutureRevision)
        } else if revision > 0 && (revision < self.compacted || (compaction && revision <= self.compacted)) {
            Some(Refusal::Compacted)
        } else {
            None
        }
    }

    fn put(state: &mut BTreeMap<Vec<u8>, Entry>, revision: i64, key: &[u8], value: &[u8], lease: i64) {
        let entry = match state.get(key) {
            Some(old) => Entry { value: value.to_vec(), create: old.create, modified: revision, version: old.version + 1, lease },
            None => Entry { value: value.to_vec(), create: revision, modified: revision, version: 1, lease },
        };
        state.insert(key.to_vec(), entry);
    }
}

fn in_span(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    match end {
        [] => key == start,
        [0] => key >= start,
        end => key >= start && key < end,
    }
}

fn kv(key: &[u8], entry: &Entry) -> KeyValue {
    KeyValue {
        key: key.to_vec(),
        create_revision: entry.create,
        mod_revision: entry.modified,
        version: entry.version,
        value: entry.value.clone(),
        lease: entry.lease,
    }
}

fn span_kvs(state: &BTreeMap<Vec<u8>, Entry>, start: &[u8], end: &[u8]) -> Vec<KeyValue> {
    state.iter().filter(|(key, _)| in_span(key, start, end)).map(|(key, entry)| kv(key, entry)).collect()
}

fn refusal(error: &Error) -> Option<Refusal> {
    match error {
        Error::Compacted { .. } => Some(Refusal::Compacted),
        Error::FutureRevision => Some(Refusal::FutureRevision),
        Error::LeaseNotFound => Some(Refusal::LeaseNotFound),
        _ => None,
    }
}

/// A result that must be `expected`: the success value, or `None` after the right refusal.
fn outcome<T: std::fmt::Debug>(what: &str, result: crate::Result<T>, expected: Option<Refusal>) -> Option<T> {
    match (result, expected) {
        (Ok(value), None) => Some(value),
        (Err(error), Some(refused)) if refusal(&error) == Some(refused) => None,
        (result, expected) => panic!("{what}: the node answered {result:?}, the model expected {expected:?}"),
    }
}

/// One of a few keys, so that operations meet: `a`..`f`, some with a suffix.
fn key(input: &mut Input<'_>) -> Vec<u8> {
    let byte = input.byte();
    let mut key = vec![b'a' + byte % 6];
    if byte & 0x80 != 0 {
        key.extend_from_slice(&[b'/', b'0' + (byte >> 4) % 3]);
    }
    key
}

fn value(input: &mut Input<'_>) -> Vec<u8> {
    let len = (input.byte() % 24) as usize;
    input.take(len).to_vec()
}

/// A range end for `start`: none (one key), every key from `start`, or a key past it.
fn range_end(input: &mut Input, start: &[u8]) -> Vec<u8> {
    match input.byte() % 3 {
        0 => Vec::new(),
        1 => vec![0],
        _ => {
            let mut end = start.to_vec();
            *end.last_mut().expect("a key") += 1 + input.byte() % 3;
            end
        }
    }
}

pub fn run(data: &[u8]) {
    runtime().block_on(drive(data));
}

async fn open(scratch: &Scratch) -> Node {
    Node::open(super::node_config(scratch.path())).await.expect("the node opens")
}

async fn drive(data: &[u8]) {
    let scratch = Scratch::new("store-model");
    let mut node = open(&scratch).await;
    let mut model =
        Model { base: node.current_revision(), compacted: node.compact_revision(), states: vec![BTreeMap::new()], leases: BTreeSet::new() };
    let mut input = Input::new(data);
    let mut steps = 0;
    while !input.is_empty() && steps < 64 {
        steps += 1;
        match input.byte() % 8 {
            0 | 1 => put(&node, &mut model, &mut input).await,
            2 => delete_range(&node, &mut model, &mut input).await,
            3 => txn(&node, &mut model, &mut input).await,
            4 => range(&node, &model, &mut input).await,
            5 => compact(&node, &mut model, &mut input).await,
            6 => lease(&node, &mut model, &mut input).await,
            _ => node = reopen(node, &scratch, &model).await,
        }
    }
    let node = reopen(node, &scratch, &model).await;
    node.close().await.expect("the node closes");
}

async fn put(node: &Node, model: &mut Model, input: &mut Input<'_>) {
    let (key, value) = (key(input), value(input));
    // Now and then on a lease, live or not.
    let lease = match input.byte() % 4 {
        0 => model.leases.iter().next().copied().unwrap_or(7),
        1 => 7, // an id picked here: the node may or may not have granted it
        _ => 0,
    };
    let expected = (lease != 0 && !model.leases.contains(&lease)).then_some(Refusal::LeaseNotFound);
    let request = PutRequest { key: key.clone(), value: value.clone(), lease, prev_kv: true, ..Default::default() };
    let Some(response) = outcome("put", node.put_request(request).await, expected) else { return };
    let previous = model.current().get(&key).map(|entry| kv(&key, entry));
    assert_eq!(response.prev_kv, previous, "put {key:?}: prev_kv");
    let revision = model.revision() + 1;
    let mut state = model.current().clone();
    Model::put(&mut state, revision, &key, &value, lease);
    model.states.push(state);
    assert_eq!(response.header.expect("a header").revision, revision, "put {key:?}: revision");
}

async fn delete_range(node: &Node, model: &mut Model, input: &mut Input<'_>) {
    let key = key(input);
    let end = range_end(input, &key);
    let request = DeleteRangeRequest { key: key.clone(), range_end: end.clone(), prev_kv: true };
    let response = node.delete_range(request).await.expect("delete range");
    let victims = span_kvs(model.current(), &key, &end);
    assert_eq!(response.deleted, victims.len() as i64, "delete {key:?}..{end:?}: count");
    assert_eq!(response.prev_kvs, victims, "delete {key:?}..{end:?}: prev_kvs");
    if !victims.is_empty() {
        let mut state = model.current().clone();
        state.retain(|stored, _| !in_span(stored, &key, &end));
        model.states.push(state);
    }
    assert_eq!(response.header.expect("a header").revision, model.revision(), "delete {key:?}..{end:?}: revision");
}

/// The compare etcd evaluates, on the model's current state.
fn compare_holds(state: &BTreeMap<Vec<u8>, Entry>, compare: &Compare) -> bool {
    let entry = state.get(&compare.key);
    let ordering = match (&compare.target_union, entry) {
        // etcd: a value compare on a missing key is always false.
        (Some(TargetUnion::Value(_)), None) => return false,
        (Some(TargetUnion::Value(operand)), Some(entry)) => entry.value.as_slice().cmp(operand.as_slice()),
        (Some(TargetUnion::Version(operand)), entry) => entry.map_or(0, |entry| entry.version).cmp(operand),
        (Some(TargetUnion::CreateRevision(operand)), entry) => entry.map_or(0, |entry| entry.create).cmp(operand),
        (Some(TargetUnion::ModRevision(operand)), entry) => entry.map_or(0, |entry| entry.modified).cmp(operand),
        other => unreachable!("the target generates no {other:?}"),
    };
    match CompareResult::try_from(compare.result).expect("a result") {
        CompareResult::Equal => ordering.is_eq(),
        CompareResult::Greater => ordering.is_gt(),
        CompareResult::Less => ordering.is_lt(),
        CompareResult::NotEqual => ordering.is_ne(),
    }
}

/// One branch of a txn: a range of one key, then a put or a delete of another.
struct Branch {
    read: Vec<u8>,
    write: Vec<u8>,
    put: Option<Vec<u8>>,
}

impl Branch {
    fn generate(input: &mut Input<'_>) -> Self {
        let read = key(input);
        let write = key(input);
        let put = input.byte().is_multiple_of(2).then(|| value(input));
        Self { read, write, put }
    }

    fn ops(&self) -> Vec<RequestOp> {
        let read = request_op::Request::RequestRange(RangeRequest { key: self.read.clone(), ..Default::default() });
        let write = match &self.put {
            Some(value) => {
                request_op::Request::RequestPut(PutRequest { key: self.write.clone(), value: value.clone(), ..Default::default() })
            }
            None => request_op::Request::RequestDeleteRange(DeleteRangeRequest { key: self.write.clone(), ..Default::default() }),
        };
        vec![RequestOp { request: Some(read) }, RequestOp { request: Some(write) }]
    }
}

async fn txn(node: &Node, model: &mut Model, input: &mut Input<'_>) {
    let key = key(input);
    let result = [CompareResult::Equal, CompareResult::Greater, CompareResult::Less, CompareResult::NotEqual][input.byte() as usize % 4];
    let (target, operand) = match input.byte() % 4 {
        0 => (CompareTarget::Version, TargetUnion::Version((input.byte() % 4) as i64)),
        1 => (CompareTarget::Create, TargetUnion::CreateRevision(model.revision() - (input.byte() % 4) as i64)),
        2 => (CompareTarget::Mod, TargetUnion::ModRevision(model.revision() - (input.byte() % 4) as i64)),
        _ => (CompareTarget::Value, TargetUnion::Value(value(input))),
    };
    let compare = Compare { result: result as i32, target: target as i32, key, range_end: Vec::new(), target_union: Some(operand) };
    let (success, failure) = (Branch::generate(input), Branch::generate(input));
    let request = TxnRequest { compare: vec![compare.clone()], success: success.ops(), failure: failure.ops() };
    let response = node.txn(request).await.expect("txn");
    let holds = compare_holds(model.current(), &compare);
    assert_eq!(response.succeeded, holds, "txn {compare:?}: succeeded");
    let branch = if holds { &success } else { &failure };
    let [read, write] = <[_; 2]>::try_from(response.responses).expect("two answers");
    match read.response {
        Some(response_op::Response::ResponseRange(range)) => {
            assert_eq!(range.kvs, span_kvs(model.current(), &branch.read, &[]), "txn range {:?}", branch.read)
        }
        other => panic!("txn: a range answered with {other:?}"),
    }
    let revision = model.revision() + 1;
    let mut state = model.current().clone();
    match (&branch.put, write.response) {
        (Some(value), Some(response_op::Response::ResponsePut(_))) => {
            Model::put(&mut state, revision, &branch.write, value, 0);
            model.states.push(state);
        }
        (None, Some(response_op::Response::ResponseDeleteRange(deleted))) => {
            let existed = state.remove(&branch.write).is_some();
            assert_eq!(deleted.deleted, existed as i64, "txn delete {:?}", branch.write);
            if existed {
                model.states.push(state);
            }
        }
        (_, other) => panic!("txn: a write answered with {other:?}"),
    }
    assert_eq!(response.header.expect("a header").revision, model.revision(), "txn revision");
}

async fn range(node: &Node, model: &Model, input: &mut Input<'_>) {
    let key = key(input);
    let end = range_end(input, &key);
    let span = model.revision() - model.base + 2;
    let revision = match input.byte() {
        byte if byte % 3 == 0 => 0,
        byte => model.revision() + 1 - (byte as i64 % span),
    };
    if revision != 0 && revision < model.base {
        return;
    }
    let limit = (input.byte() % 4) as i64;
    let count_only = input.byte().is_multiple_of(5);
    let request = RangeRequest { key: key.clone(), range_end: end.clone(), revision, limit, count_only, ..Default::default() };
    let Some(response) = outcome("range", node.range(request).await, model.check_revision(revision, false)) else { return };
    let state = if revision == 0 { model.current() } else { model.at(revision) };
    let all = span_kvs(state, &key, &end);
    assert_eq!(response.count, all.len() as i64, "range {key:?}..{end:?}@{revision}: count");
    let shown = if limit > 0 { all.len().min(limit as usize) } else { all.len() };
    // etcd: a count-only answer never says `more` (it collects no keys to cut).
    assert_eq!(response.more, !count_only && shown < all.len(), "range {key:?}..{end:?}@{revision}: more");
    let expected: Vec<KeyValue> = if count_only { Vec::new() } else { all[..shown].to_vec() };
    assert_eq!(response.kvs, expected, "range {key:?}..{end:?}@{revision}: kvs");
    assert_eq!(response.header.expect("a header").revision, model.revision(), "range: header revision");
}

async fn compact(node: &Node, model: &mut Model, input: &mut Input<'_>) {
    let span = model.revision() - model.base + 2;
    let revision = model.revision() + 1 - (input.byte() as i64 % span);
    if revision < 1 {
        return;
    }
    if outcome("compact", node.compact(revision).await, model.check_revision(revision, true)).is_some() {
        model.compacted = revision;
    }
}

async fn lease(node: &Node, model: &mut Model, input: &mut Input<'_>) {
    if input.byte().is_multiple_of(2) || model.leases.is_empty() {
        let response = node.lease_grant(LeaseGrantRequest { ttl: 1000, id: 0 }).await.expect("lease grant");
        assert!(response.id > 0 && model.leases.insert(response.id), "lease grant: a new id, got {}", response.id);
        return;
    }
    let live: Vec<i64> = model.leases.iter().copied().collect();
    // Now and then an id picked here, granted or not.
    let id = if input.byte().is_multiple_of(4) { 7 } else { live[input.byte() as usize % live.len()] };
    let expected = (!model.leases.contains(&id)).then_some(Refusal::LeaseNotFound);
    if outcome("lease revoke", node.lease_revoke(id).await, expected).is_none() {
        return;
    }
    model.leases.remove(&id);
    let mut state = model.current().clone();
    let before = state.len();
    state.retain(|_, entry| entry.lease != id);
    if state.len() != before {
        model.states.push(state);
    }
    assert_eq!(node.current_revision(), model.revision(), "lease revoke {id}: revision");
}

/// Closes the node, opens it again on the same directory and checks that it holds what
/// the model says at every retained revision.
async fn reopen(node: Node, scratch: &Scratch, model: &Model) -> Node {
    node.close().await.expect("the node closes");
    drop(node);
    let node = open(scratch).await;
    assert_eq!(node.current_revision(), model.revision(), "revision after reopening");
    assert_eq!(node.compact_revision(), model.compacted, "compacted revision after reopening");
    let leases: BTreeSet<i64> = node.leases().expect("leases").into_iter().collect();
    assert_eq!(leases, model.leases, "leases after reopening");
    let oldest = model.base.max(model.compacted);
    for revision in oldest..=model.revision() {
        let request = RangeRequest { key: vec![0], range_end: vec![0], revision, ..Default::default() };
        let response = node.range(request).await.expect("a full range after reopening");
        assert_eq!(response.kvs, span_kvs(model.at(revision), &[0], &[0]), "everything at {revision} after reopening");
    }
    node
}
