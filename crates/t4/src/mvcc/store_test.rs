//! The store against a plain model: every revision's full state kept in a BTreeMap.

use std::collections::BTreeMap;

use proptest::prelude::*;
use t4_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use t4_proto::etcdserverpb::request_op::Request;
use t4_proto::etcdserverpb::{CompactionRequest, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest};
use t4_proto::mvccpb::KeyValue;

use super::{Store, WriteRequest, WriteResponse};
use crate::env::{SimDisk, StorageFence};
use crate::error::Error;

type State = BTreeMap<Vec<u8>, KeyValue>;

/// A sequential model of etcd's MVCC: the state at every revision.
struct Model {
    states: Vec<State>,
    compact: i64,
}

impl Model {
    fn new() -> Self {
        // Index 0 is unused; revision 1 is the empty store.
        Self { states: vec![State::new(), State::new()], compact: -1 }
    }

    fn revision(&self) -> i64 {
        self.states.len() as i64 - 1
    }

    fn current(&self) -> &State {
        self.states.last().unwrap()
    }

    fn commit(&mut self, next: State) {
        self.states.push(next);
    }

    fn put(state: &mut State, key: &[u8], value: &[u8], revision: i64) {
        let previous = state.get(key);
        let kv = KeyValue {
            key: key.to_vec(),
            create_revision: previous.map_or(revision, |kv| kv.create_revision),
            mod_revision: revision,
            version: previous.map_or(1, |kv| kv.version + 1),
            value: value.to_vec(),
            lease: 0,
        };
        state.insert(key.to_vec(), kv);
    }
}

#[derive(Debug, Clone)]
enum Op {
    Put(u8, u8),
    Delete(u8),
    DeleteRange(u8, u8),
    /// If key's version equals v then put else delete.
    CasPut(u8, i64, u8),
    Compact(u8),
    Get(u8, u8),
    Scan(u8, u8, u8, u8),
}

fn key(k: u8) -> Vec<u8> {
    format!("k{:02}", k % 12).into_bytes()
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<u8>(), any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
        1 => any::<u8>().prop_map(Op::Delete),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Op::DeleteRange(a, b)),
        2 => (any::<u8>(), 0i64..4, any::<u8>()).prop_map(|(k, v, x)| Op::CasPut(k, v, x)),
        1 => any::<u8>().prop_map(Op::Compact),
        3 => (any::<u8>(), any::<u8>()).prop_map(|(k, r)| Op::Get(k, r)),
        2 => (any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>()).prop_map(|(a, b, r, l)| Op::Scan(a, b, r, l)),
    ]
}

fn apply(store: &Store, request: WriteRequest) -> Result<WriteResponse, Error> {
    let mut applied = store.apply_batch(&[request], false).expect("no storage failure");
    applied.pop().unwrap().response
}

fn run(ops: Vec<Op>) {
    let disk = SimDisk::new();
    let store = Store::open(&disk, StorageFence::default()).unwrap();
    let mut model = Model::new();
    for op in ops {
        step(&store, &mut model, op);
        assert_eq!(store.applied_revision(), model.revision(), "revisions must match the model");
    }
}

fn step(store: &Store, model: &mut Model, op: Op) {
    let revision = model.revision();
    match op {
        Op::Put(k, v) => {
            let response = apply(store, WriteRequest::Put(PutRequest { key: key(k), value: vec![v], ..Default::default() })).unwrap();
            let mut next = model.current().clone();
            Model::put(&mut next, &key(k), &[v], revision + 1);
            model.commit(next);
            assert_eq!(response.header_revision(), revision + 1);
        }
        Op::Delete(k) => delete(store, model, key(k), Vec::new()),
        Op::DeleteRange(a, b) => delete(store, model, key(a), key(b)),
        Op::CasPut(k, version, x) => cas(store, model, k, version, x),
        Op::Compact(r) => {
            let target = 1 + r as i64 % revision.max(1);
            let response = apply(store, WriteRequest::Compact(CompactionRequest { revision: target, physical: true }));
            if target <= model.compact {
                assert!(matches!(response, Err(Error::Compacted { .. })), "{response:?}");
            } else {
                response.unwrap();
                model.compact = target;
            }
        }
        Op::Get(k, r) => check_range(store, model, RangeRequest { key: key(k), revision: r as i64 % (revision + 2), ..Default::default() }),
        Op::Scan(a, b, r, limit) => {
            let request = RangeRequest {
                key: key(a),
                range_end: if b % 5 == 0 { vec![0] } else { key(b) },
                revision: r as i64 % (revision + 2),
                limit: (limit % 4) as i64,
                ..Default::default()
            };
            check_range(store, model, request);
        }
    }
}

fn delete(store: &Store, model: &mut Model, from: Vec<u8>, to: Vec<u8>) {
    let revision = model.revision();
    let span = super::KeySpan::new(&from, &to);
    let request = DeleteRangeRequest { key: from, range_end: to, prev_kv: true };
    let response = match apply(store, WriteRequest::DeleteRange(request)).unwrap() {
        WriteResponse::DeleteRange(response) => response,
        other => panic!("{other:?}"),
    };
    let mut next = model.current().clone();
    let victims: Vec<KeyValue> = next.values().filter(|kv| span.contains(&kv.key)).cloned().collect();
    assert_eq!(response.prev_kvs, victims, "prev_kvs of a delete");
    if victims.is_empty() {
        assert_eq!(response.header.unwrap().revision, revision, "an empty delete spends no revision");
        return;
    }
    for kv in &victims {
        next.remove(&kv.key);
    }
    model.commit(next);
}

/// Compare: key `k`'s version equals `version`.
fn version_is(k: u8, version: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Version as i32,
        key: key(k),
        target_union: Some(TargetUnion::Version(version)),
        range_end: Vec::new(),
    }
}

fn cas(store: &Store, model: &mut Model, k: u8, version: i64, x: u8) {
    let revision = model.revision();
    let compare = version_is(k, version);
    let put = RequestOp { request: Some(Request::RequestPut(PutRequest { key: key(k), value: vec![x], ..Default::default() })) };
    let read = RequestOp { request: Some(Request::RequestRange(RangeRequest { key: key(k), ..Default::default() })) };
    let request = TxnRequest { compare: vec![compare], success: vec![put, read.clone()], failure: vec![read] };
    let response = match apply(store, WriteRequest::Txn(request)).unwrap() {
        WriteResponse::Txn(response) => response,
        other => panic!("{other:?}"),
    };
    let current_version = model.current().get(&key(k)).map_or(0, |kv| kv.version);
    assert_eq!(response.succeeded, current_version == version, "compare outcome");
    if response.succeeded {
        let mut next = model.current().clone();
        Model::put(&mut next, &key(k), &[x], revision + 1);
        model.commit(next);
    }
    // The txn's read sees its own put.
    let Some(t4_proto::etcdserverpb::response_op::Response::ResponseRange(range)) = &response.responses.last().unwrap().response else {
        panic!("last response is a range");
    };
    assert_eq!(range.kvs.first(), model.current().get(&key(k)), "read inside txn");
    assert_eq!(response.header.unwrap().revision, model.revision());
}

fn check_range(store: &Store, model: &Model, request: RangeRequest) {
    let revision = model.revision();
    let at = if request.revision <= 0 { revision } else { request.revision };
    let response = store.range(&request, revision);
    if at > revision {
        assert_eq!(response.unwrap_err(), Error::FutureRevision);
        return;
    }
    if at < model.compact {
        assert!(matches!(response, Err(Error::Compacted { .. })), "{response:?}");
        return;
    }
    let response = response.unwrap();
    let span = super::KeySpan::new(&request.key, &request.range_end);
    let expected: Vec<KeyValue> = model.states[at as usize].values().filter(|kv| span.contains(&kv.key)).cloned().collect();
    assert_eq!(response.count, expected.len() as i64, "count at {at}");
    let shown = if request.limit > 0 { expected.len().min(request.limit as usize) } else { expected.len() };
    assert_eq!(response.kvs, expected[..shown], "kvs at {at} for {request:?}");
    assert_eq!(response.more, shown < expected.len());
    assert_eq!(response.header.unwrap().revision, revision);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn store_matches_model(ops in proptest::collection::vec(op_strategy(), 1..120)) {
        run(ops);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    /// What a follower will do: the records one store logged, applied to another, give the
    /// same watch events in the same order and the same state, leases and position.
    #[test]
    fn records_applied_elsewhere_give_the_same_events_and_state(
        ops in proptest::collection::vec((op_strategy(), 0u8..4), 1..100),
        cut in proptest::collection::vec(1usize..9, 1..40),
    ) {
        records_replayed_elsewhere(ops, cut);
    }
}

/// Applies `ops` (each with a lease choice: none, grant, revoke, put on a lease) to one store
/// in batches of sizes taken from `cut`, then that store's records to another.
fn records_replayed_elsewhere(ops: Vec<(Op, u8)>, cut: Vec<usize>) {
    use t4_proto::etcdserverpb::{LeaseGrantRequest, LeaseRevokeRequest};
    let requests: Vec<WriteRequest> = ops
        .into_iter()
        .filter_map(|(op, lease)| {
            let lease_id = 1 + (lease as i64 % 3);
            Some(match (op, lease) {
                (Op::Put(k, _), 1) => WriteRequest::LeaseGrant(LeaseGrantRequest { id: lease_id + k as i64 % 2, ttl: 60 }),
                (Op::Delete(k), 2) => WriteRequest::LeaseRevoke(LeaseRevokeRequest { id: 1 + k as i64 % 3 }),
                (Op::Put(k, v), 3) => {
                    WriteRequest::Put(PutRequest { key: key(k), value: vec![v], lease: 1 + v as i64 % 3, ..Default::default() })
                }
                (Op::Put(k, v), _) => WriteRequest::Put(PutRequest { key: key(k), value: vec![v], ..Default::default() }),
                (Op::Delete(k), _) => WriteRequest::DeleteRange(DeleteRangeRequest { key: key(k), prev_kv: true, ..Default::default() }),
                (Op::DeleteRange(a, b), _) => {
                    WriteRequest::DeleteRange(DeleteRangeRequest { key: key(a), range_end: key(b), ..Default::default() })
                }
                (Op::CasPut(k, version, x), _) => {
                    let compare = version_is(k, version);
                    let put =
                        RequestOp { request: Some(Request::RequestPut(PutRequest { key: key(k), value: vec![x], ..Default::default() })) };
                    let delete =
                        RequestOp { request: Some(Request::RequestDeleteRange(DeleteRangeRequest { key: key(x), ..Default::default() })) };
                    WriteRequest::Txn(TxnRequest { compare: vec![compare], success: vec![put, delete.clone()], failure: vec![delete] })
                }
                (Op::Compact(r), _) => WriteRequest::Compact(CompactionRequest { revision: 1 + r as i64 % 8, physical: false }),
                (Op::Get(..) | Op::Scan(..), _) => return None,
            })
        })
        .collect();
    let leader_disk = SimDisk::new();
    let leader = Store::open(&leader_disk, StorageFence::default()).unwrap();
    let (mut records, mut events) = (Vec::new(), Vec::new());
    let mut rest = requests.as_slice();
    for size in cut.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let batch = &rest[..(*size).min(rest.len())];
        let applied = leader.apply_batch(batch, true).expect("no storage failure");
        rest = &rest[applied.len()..];
        for outcome in applied {
            records.extend(outcome.record);
            events.extend(outcome.events);
        }
    }
    let follower_disk = SimDisk::new();
    let follower = Store::open(&follower_disk, StorageFence::default()).unwrap();
    let mut replayed = Vec::new();
    let mut rest = records.as_slice();
    for size in cut.iter().rev().cycle() {
        if rest.is_empty() {
            break;
        }
        let (now, later) = rest.split_at((*size).min(rest.len()));
        replayed.extend(follower.apply_records(now).expect("the leader's records apply"));
        rest = later;
    }
    assert_eq!(replayed, events, "watch events of the applied records");
    let position = |store: &Store| (store.applied_revision(), store.applied_index(), store.compact_revision());
    assert_eq!(position(&follower), position(&leader));
    assert_eq!(follower.leases().unwrap(), leader.leases().unwrap());
    let all = RangeRequest { key: vec![0], range_end: vec![0], ..Default::default() };
    let revision = leader.applied_revision();
    assert_eq!(follower.range(&all, revision).unwrap().kvs, leader.range(&all, revision).unwrap().kvs);
}

#[test]
fn revision_one_is_the_empty_store() {
    let disk = SimDisk::new();
    let store = Store::open(&disk, StorageFence::default()).unwrap();
    assert_eq!(store.applied_revision(), 1);
    let response = store.range(&RangeRequest { key: vec![0], range_end: vec![0], ..Default::default() }, 1).unwrap();
    assert_eq!(response.count, 0);
    assert_eq!(response.header.unwrap().revision, 1);
}

#[test]
fn sort_and_filters_follow_etcd() {
    use t4_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
    let disk = SimDisk::new();
    let store = Store::open(&disk, StorageFence::default()).unwrap();
    for (k, v) in [("a", "3"), ("b", "1"), ("c", "2"), ("a", "4")] {
        apply(&store, WriteRequest::Put(PutRequest { key: k.into(), value: v.into(), ..Default::default() })).unwrap();
    }
    let all = |extra: RangeRequest| RangeRequest { key: b"a".to_vec(), range_end: b"z".to_vec(), ..extra };
    let by_value = store
        .range(&all(RangeRequest { sort_target: SortTarget::Value as i32, sort_order: SortOrder::Descend as i32, ..Default::default() }), 5)
        .unwrap();
    let keys: Vec<_> = by_value.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(keys, [b"a".to_vec(), b"c".to_vec(), b"b".to_vec()]);
    let recent = store.range(&all(RangeRequest { min_mod_revision: 4, ..Default::default() }), 5).unwrap();
    assert_eq!(recent.kvs.len(), 2, "a@5 and c@4");
    assert_eq!(recent.count, 3, "count ignores the revision filters, as etcd's does");
    let limited = store.range(&all(RangeRequest { limit: 1, sort_target: SortTarget::Mod as i32, ..Default::default() }), 5).unwrap();
    assert_eq!(limited.kvs[0].key, b"b".to_vec(), "sort by mod, ascending by default");
    assert!(limited.more);
}

#[test]
fn txn_rules() {
    let disk = SimDisk::new();
    let store = Store::open(&disk, StorageFence::default()).unwrap();
    let put = |k: &str| RequestOp { request: Some(Request::RequestPut(PutRequest { key: k.into(), ..Default::default() })) };
    let limits = super::Limits { request_bytes_max: 1 << 20, txn_ops_max: 3 };
    let duplicate = WriteRequest::Txn(TxnRequest { success: vec![put("a"), put("a")], ..Default::default() });
    assert_eq!(super::validate_write(&duplicate, limits), Err(Error::DuplicateKey));
    let too_many = WriteRequest::Txn(TxnRequest { success: vec![put("a"), put("b"), put("c"), put("d")], ..Default::default() });
    assert_eq!(super::validate_write(&too_many, limits), Err(Error::TooManyOps));
    let delete = |range_end: &[u8]| RequestOp {
        request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
            key: b"a".to_vec(),
            range_end: range_end.to_vec(),
            prev_kv: false,
        })),
    };
    let put_in_deleted = WriteRequest::Txn(TxnRequest { success: vec![delete(b"c"), put("b")], ..Default::default() });
    assert_eq!(super::validate_write(&put_in_deleted, limits), Err(Error::DuplicateKey));
    // etcd's check reads a from-key delete ("\0") literally: it overlaps no put.
    let put_after_from_key = WriteRequest::Txn(TxnRequest { success: vec![delete(&[0]), put("b")], ..Default::default() });
    assert_eq!(super::validate_write(&put_after_from_key, limits), Ok(()));
    let nested = RequestOp {
        request: Some(Request::RequestTxn(TxnRequest { success: vec![put("x")], failure: vec![put("x")], ..Default::default() })),
    };
    let exclusive_branches = WriteRequest::Txn(TxnRequest { success: vec![nested], ..Default::default() });
    assert_eq!(super::validate_write(&exclusive_branches, limits), Ok(()), "a key in both branches of a nested txn is fine");
    // ignore_value on a missing key fails whole and spends nothing.
    let ignore = WriteRequest::Put(PutRequest { key: b"missing".to_vec(), ignore_value: true, ..Default::default() });
    assert_eq!(apply(&store, ignore), Err(Error::KeyNotFound));
    assert_eq!(store.applied_revision(), 1);
}

#[test]
fn power_failing_at_any_sync_while_the_store_is_created_leaves_a_disk_that_opens() {
    use crate::env::{CrashMode, SimDiskFaults};
    for mode in [CrashMode::LoseUnsynced, CrashMode::Torn { seed: 3 }] {
        for sync in 0..12 {
            let disk = SimDisk::new();
            disk.set_faults(SimDiskFaults { crash_on_sync: Some((sync, mode)), ..Default::default() });
            let first = Store::open(&disk, StorageFence::default());
            drop(first);
            disk.set_faults(SimDiskFaults::default());
            let store =
                Store::open(&disk, StorageFence::default()).unwrap_or_else(|error| panic!("{mode:?}, crash at sync {sync}: {error}"));
            assert_eq!(store.applied_revision(), 1);
            apply(&store, WriteRequest::Put(PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), ..Default::default() })).unwrap();
        }
    }
}

#[test]
fn leases_attach_detach_revoke_at_one_revision_and_replay_the_same() {
    use t4_proto::etcdserverpb::{LeaseGrantRequest, LeaseRevokeRequest};
    let disk = SimDisk::new();
    let store = Store::open(&disk, StorageFence::default()).unwrap();
    let mut records = Vec::new();
    let mut run = |store: &Store, request: WriteRequest| {
        let mut applied = store.apply_batch(&[request], true).expect("no storage failure");
        let applied = applied.pop().unwrap();
        records.extend(applied.record.clone());
        applied
    };
    let grant = |id: i64, ttl: i64| WriteRequest::LeaseGrant(LeaseGrantRequest { id, ttl });
    let put = |key: &str, lease: i64| WriteRequest::Put(PutRequest { key: key.into(), value: b"v".to_vec(), lease, ..Default::default() });
    let granted = |applied: super::Applied| match applied.response.unwrap() {
        WriteResponse::LeaseGrant(response) => (response.id, response.ttl),
        other => panic!("{other:?}"),
    };

    let (chosen, ttl) = granted(run(&store, grant(0, 1)));
    assert!(chosen > 0 && ttl == super::writer::LEASE_TTL_MIN, "{chosen} {ttl}");
    assert_eq!(granted(run(&store, grant(7, 60))), (7, 60));
    assert_eq!(store.applied_revision(), 1, "grants spend no revision");
    assert_eq!(run(&store, grant(7, 10)).response.unwrap_err(), Error::LeaseExists);
    assert_eq!(run(&store, grant(8, super::writer::LEASE_TTL_MAX + 1)).response.unwrap_err(), Error::LeaseTtlTooLarge);
    assert_eq!(run(&store, put("x", 99)).response.unwrap_err(), Error::LeaseNotFound);
    assert_eq!(store.applied_revision(), 1, "refused requests leave no trace");

    for key in ["a", "b", "c"] {
        run(&store, put(key, 7));
    }
    run(&store, put("b", 0)); // detached by a put without the lease
    run(&store, put("d", chosen));
    let keep = PutRequest { key: b"a".to_vec(), value: b"w".to_vec(), ignore_lease: true, ..Default::default() };
    run(&store, WriteRequest::Put(keep)); // keeps lease 7
    run(&store, WriteRequest::DeleteRange(DeleteRangeRequest { key: b"c".to_vec(), ..Default::default() }));
    assert_eq!(store.lease_keys(7).unwrap(), Some(vec![b"a".to_vec()]));
    assert_eq!(store.lease_keys(chosen).unwrap(), Some(vec![b"d".to_vec()]));
    let before = store.applied_revision();

    let revoked = run(&store, WriteRequest::LeaseRevoke(LeaseRevokeRequest { id: 7 }));
    assert_eq!(store.applied_revision(), before + 1, "one revision for the revoke");
    let events = revoked.events.expect("events were asked for");
    assert_eq!((events.revision, events.events.len()), (before + 1, 1));
    assert_eq!(events.events[0].kv.as_ref().unwrap().key, b"a".to_vec());
    assert_eq!(store.lease_keys(7).unwrap(), None);
    assert_eq!(run(&store, WriteRequest::LeaseRevoke(LeaseRevokeRequest { id: 7 })).response.unwrap_err(), Error::LeaseNotFound);
    let (empty, _) = granted(run(&store, grant(0, 5)));
    let index = store.applied_index();
    run(&store, WriteRequest::LeaseRevoke(LeaseRevokeRequest { id: empty }));
    assert_eq!((store.applied_revision(), store.applied_index()), (before + 1, index + 1), "a revoke without keys spends no revision");
    assert_eq!(store.leases().unwrap(), vec![(chosen, 2)]);

    // The log replayed into a fresh store gives the same leases and keys.
    let other_disk = SimDisk::new();
    let replayed = Store::open(&other_disk, StorageFence::default()).unwrap();
    replayed.replay(&records).unwrap();
    assert_eq!(replayed.leases().unwrap(), store.leases().unwrap());
    assert_eq!(replayed.lease_keys(chosen).unwrap(), Some(vec![b"d".to_vec()]));
    let all = RangeRequest { key: vec![0], range_end: vec![0], ..Default::default() };
    let revision = store.applied_revision();
    assert_eq!(replayed.range(&all, revision).unwrap().kvs, store.range(&all, revision).unwrap().kvs);

    // So does a restore from a snapshot (the lease index is rebuilt from the live keys).
    let snapshot = store.snapshot().unwrap();
    let (entries, _) = snapshot.entries_after(None, usize::MAX).unwrap();
    let restored_disk = SimDisk::new();
    let restored = Store::open(&restored_disk, StorageFence::default()).unwrap();
    restored
        .restore(
            snapshot.position,
            &mut entries.into_iter().map(Ok),
            false,
            &snapshot.leases().unwrap(),
            &snapshot.auth_state().unwrap(),
            None,
        )
        .unwrap();
    assert_eq!(restored.leases().unwrap(), store.leases().unwrap());
    assert_eq!(restored.lease_keys(chosen).unwrap(), Some(vec![b"d".to_vec()]));
}

#[test]
fn a_term_record_moves_the_index_and_the_term_and_nothing_else() {
    use crate::wal::{Record, RecordBody};
    let disk = SimDisk::new();
    let store = Store::open(&disk, StorageFence::default()).unwrap();
    let put = Record {
        index: 2,
        body: RecordBody::Txn {
            revision: 2,
            changes: vec![crate::wal::Change { key: b"k".to_vec(), kind: crate::wal::ChangeKind::Put { value: b"v".to_vec(), lease: 0 } }],
        },
    };
    let records = [Record { index: 1, body: RecordBody::Term { term: 3 } }, put, Record { index: 3, body: RecordBody::Term { term: 4 } }];
    let events = store.apply_records(&records).unwrap();
    assert_eq!((store.applied_index(), store.applied_revision()), (3, 2));
    assert_eq!(events.len(), 1, "only the put made an event");
    let all = RangeRequest { key: vec![0], range_end: vec![0], ..Default::default() };
    assert_eq!(store.range(&all, 2).unwrap().kvs.len(), 1);
    assert_eq!(store.applied_term(), 4, "the store keeps the term of its last record");
    store.sync_durable().unwrap();
    store.close();
    let store = Store::open(&disk, StorageFence::default()).unwrap();
    assert_eq!((store.applied_index(), store.applied_term()), (3, 4), "and finds it again at open");
    let older = [Record { index: 4, body: RecordBody::Term { term: 2 } }];
    let refused = store.apply_records(&older).unwrap_err();
    assert!(refused.to_string().contains("invariant terms-only-up"), "{refused}");
}

#[test]
fn a_reset_drops_what_is_not_durable_and_applies_what_it_is_given() {
    use crate::wal::{Change, ChangeKind, Record, RecordBody};
    let put = |index: u64, revision: i64, key: &str| Record {
        index,
        body: RecordBody::Txn {
            revision,
            changes: vec![Change { key: key.as_bytes().to_vec(), kind: ChangeKind::Put { value: b"v".to_vec(), lease: 0 } }],
        },
    };
    let disk = SimDisk::new();
    let store = Store::open(&disk, StorageFence::default()).unwrap();
    store.apply_records(&[Record { index: 1, body: RecordBody::Term { term: 1 } }, put(2, 2, "kept")]).unwrap();
    store.sync_durable().unwrap();
    store.apply_records(&[Record { index: 3, body: RecordBody::Term { term: 2 } }, put(4, 3, "deposed")]).unwrap();
    assert_eq!((store.applied_index(), store.applied_term()), (4, 2));
    store
        .reset_to_durable(&disk, |durable| {
            assert_eq!(durable, 2, "back to the last durable commit");
            vec![put(3, 3, "committed")]
        })
        .unwrap();
    assert_eq!((store.applied_index(), store.applied_revision(), store.applied_term()), (3, 3, 1));
    let all = RangeRequest { key: vec![0], range_end: vec![0], ..Default::default() };
    let keys: Vec<Vec<u8>> = store.range(&all, 3).unwrap().kvs.into_iter().map(|kv| kv.key).collect();
    assert_eq!(keys, vec![b"committed".to_vec(), b"kept".to_vec()]);
    // The reset store goes on as any other, across a reopen.
    store.apply_records(&[put(4, 4, "after")]).unwrap();
    store.sync_durable().unwrap();
    store.close();
    let store = Store::open(&disk, StorageFence::default()).unwrap();
    assert_eq!(store.applied_index(), 4);
    assert_eq!(store.range(&all, 4).unwrap().kvs.len(), 3);
}

#[test]
fn a_read_that_starts_on_a_restored_store_sees_at_least_the_snapshot() {
    let disk = SimDisk::new();
    let store = Store::open(&disk, StorageFence::default()).unwrap();
    for value in 0..10u8 {
        apply(&store, WriteRequest::Put(PutRequest { key: b"k".to_vec(), value: vec![value], ..Default::default() })).unwrap();
    }
    apply(&store, WriteRequest::Compact(CompactionRequest { revision: 8, physical: true })).unwrap();
    let snapshot = store.snapshot().unwrap();
    let (entries, _) = snapshot.entries_after(None, usize::MAX).unwrap();
    let restored = Store::open(&SimDisk::new(), StorageFence::default()).unwrap();
    let current = RangeRequest { key: b"k".to_vec(), ..Default::default() };
    assert_eq!(restored.range(&current, 1).unwrap().kvs.len(), 0, "before: the empty store");
    restored.restore(snapshot.position, &mut entries.into_iter().map(Ok), true, &[], &Default::default(), Some(3)).unwrap();
    // The node still publishes revision 1: the read is at the snapshot's revision, never
    // below its compaction.
    let read = restored.range(&current, 1).unwrap();
    assert_eq!((read.header.unwrap().revision, read.kvs[0].value.clone()), (11, vec![9]));
    let old = RangeRequest { key: b"k".to_vec(), revision: 5, ..Default::default() };
    assert!(matches!(restored.range(&old, 1), Err(Error::Compacted { compact_revision: 8 })));
}
