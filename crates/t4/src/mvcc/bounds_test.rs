//! The write bounds (`txn/bounds.rs`): a request that would touch too much is refused whole,
//! a lease cannot hold more than a revoke may delete, and a batch closes at its record bound.

use t4_proto::etcdserverpb::request_op::Request;
use t4_proto::etcdserverpb::{DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest};

use super::writer::{BATCH_RECORD_BYTES_MAX, LEASE_ENTRY_BYTES_MAX, RECORD_BYTES_MAX, REQUEST_TOUCH_BYTES_MAX};
use super::{Applied, Store, WriteRequest, WriteResponse};
use crate::env::{SimDisk, StorageFence};
use crate::error::Error;

/// A value a little under etcd's default request bound (1.5 MiB).
const VALUE_BYTES: usize = 1_400_000;

fn open() -> Store {
    Store::open(&SimDisk::new(), StorageFence::default()).unwrap()
}

fn apply_one(store: &Store, request: WriteRequest) -> Applied {
    let mut applied = store.apply_batch(&[request], false).expect("no storage failure");
    assert_eq!(applied.len(), 1);
    applied.pop().unwrap()
}

fn put(key: String, lease: i64) -> WriteRequest {
    WriteRequest::Put(PutRequest { key: key.into_bytes(), value: vec![7; VALUE_BYTES], lease, ..Default::default() })
}

fn delete_prefix(prefix: &str) -> DeleteRangeRequest {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().unwrap() += 1;
    DeleteRangeRequest { key: prefix.as_bytes().to_vec(), range_end: end, ..Default::default() }
}

fn count(store: &Store, prefix: &str) -> i64 {
    let DeleteRangeRequest { key, range_end, .. } = delete_prefix(prefix);
    let range = RangeRequest { key, range_end, count_only: true, ..Default::default() };
    store.range(&range, store.applied_revision()).unwrap().count
}

/// Keys `{prefix}00..` with large values: `n` of them weigh about n * 1.4 MB.
fn fill(store: &Store, prefix: &str, n: usize, lease: i64) {
    for i in 0..n {
        apply_one(store, put(format!("{prefix}{i:02}"), lease)).response.unwrap();
    }
}

#[test]
fn a_delete_range_past_the_touch_bound_is_refused_whole() {
    let store = open();
    let n = (REQUEST_TOUCH_BYTES_MAX as usize / VALUE_BYTES) + 2;
    fill(&store, "/big/", n, 0);
    let revision = store.applied_revision();

    tracing::info!("--- the whole range is over the bound: refused, nothing deleted, no revision");
    let refused = apply_one(&store, WriteRequest::DeleteRange(delete_prefix("/big/")));
    assert!(matches!(refused.response, Err(Error::RequestTooLarge)), "{:?}", refused.response.map(|_| ()));
    assert!(refused.record.is_none());
    assert_eq!(store.applied_revision(), revision);
    assert_eq!(count(&store, "/big/"), n as i64);

    tracing::info!("--- a part of it is within the bound: deleted at one revision");
    let half = apply_one(&store, WriteRequest::DeleteRange(delete_prefix("/big/0")));
    let Ok(WriteResponse::DeleteRange(deleted)) = half.response else { panic!("a delete within the bound succeeds") };
    assert_eq!(deleted.deleted, 10);
    assert_eq!(store.applied_revision(), revision + 1);
}

#[test]
fn a_txn_whose_deletes_together_pass_the_bound_is_refused_whole() {
    let store = open();
    let n = (REQUEST_TOUCH_BYTES_MAX as usize / VALUE_BYTES) / 2 + 2;
    fill(&store, "/a/", n, 0);
    fill(&store, "/b/", n, 0);
    let revision = store.applied_revision();
    let op = |request| RequestOp { request: Some(request) };
    let txn = TxnRequest {
        success: vec![
            op(Request::RequestPut(PutRequest { key: b"/new".to_vec(), value: b"x".to_vec(), ..Default::default() })),
            op(Request::RequestDeleteRange(delete_prefix("/a/"))),
            op(Request::RequestDeleteRange(delete_prefix("/b/"))),
        ],
        ..Default::default()
    };
    let refused = apply_one(&store, WriteRequest::Txn(txn.clone()));
    assert!(matches!(refused.response, Err(Error::RequestTooLarge)));
    assert_eq!(store.applied_revision(), revision, "no trace: not even the put before the deletes");
    assert_eq!(count(&store, "/new"), 0);

    tracing::info!("--- each delete alone is within the bound");
    let one = TxnRequest { success: txn.success[..2].to_vec(), ..Default::default() };
    assert!(apply_one(&store, WriteRequest::Txn(one)).response.is_ok());
    assert_eq!((count(&store, "/a/"), count(&store, "/new")), (0, 1));
}

#[test]
fn a_lease_holds_no_more_than_a_revoke_may_delete() {
    let store = open();
    let grant = apply_one(&store, WriteRequest::LeaseGrant(LeaseGrantRequest { ttl: 60, id: 5 }));
    assert!(grant.response.is_ok());

    tracing::info!("--- puts on the lease are refused once it would pass its bound");
    let mut attached = 0;
    let refused = loop {
        let outcome = apply_one(&store, put(format!("/l/{attached:03}"), 5));
        match outcome.response {
            Ok(_) => attached += 1,
            Err(error) => break error,
        }
        assert!(attached < 1000, "the lease bound never refused a put");
    };
    assert!(matches!(refused, Error::RequestTooLarge));
    assert_eq!(attached, LEASE_ENTRY_BYTES_MAX as usize / (VALUE_BYTES + 100));
    let elsewhere = apply_one(&store, put("/free".into(), 0));
    assert!(elsewhere.response.is_ok(), "other writes go on");

    tracing::info!("--- a key taken off the lease makes room again; growing a key in place with ignore_lease is bounded too");
    let off = WriteRequest::DeleteRange(DeleteRangeRequest { key: b"/l/000".to_vec(), ..Default::default() });
    assert!(apply_one(&store, off).response.is_ok());
    assert!(apply_one(&store, put("/l/again".into(), 5)).response.is_ok());
    let grow = WriteRequest::Put(PutRequest {
        key: b"/l/again".to_vec(),
        value: vec![1; 2 * VALUE_BYTES],
        ignore_lease: true,
        ..Default::default()
    });
    assert!(matches!(apply_one(&store, grow).response, Err(Error::RequestTooLarge)));

    tracing::info!("--- the revoke deletes all of them at one revision, in a record within its bound");
    let revision = store.applied_revision();
    let revoke = apply_one(&store, WriteRequest::LeaseRevoke(LeaseRevokeRequest { id: 5 }));
    assert!(revoke.response.is_ok());
    assert_eq!(store.applied_revision(), revision + 1);
    let record = revoke.record.expect("a revoke that deletes keys writes a record");
    assert!(record.encoded_len() as u64 <= LEASE_ENTRY_BYTES_MAX);
    assert_eq!(count(&store, "/l/"), 0);
    assert_eq!(count(&store, "/free"), 1);
}

#[test]
fn live_leases_are_bounded_and_a_revoke_makes_room() {
    let store = open();
    store.set_leases_max(3);
    let grant = |id| apply_one(&store, WriteRequest::LeaseGrant(LeaseGrantRequest { ttl: 60, id })).response;
    for id in 1..=3 {
        assert!(grant(id).is_ok());
    }
    assert!(matches!(grant(4), Err(Error::TooManyLeases { max: 3 })));
    apply_one(&store, WriteRequest::LeaseRevoke(LeaseRevokeRequest { id: 2 })).response.unwrap();
    assert!(grant(4).is_ok());
    assert_eq!(super::writer::LEASES_MAX, 1_000_000);
}

#[test]
fn the_lease_bound_survives_a_reopen() {
    let disk = SimDisk::new();
    let store = Store::open(&disk, StorageFence::default()).unwrap();
    apply_one(&store, WriteRequest::LeaseGrant(LeaseGrantRequest { ttl: 60, id: 9 })).response.unwrap();
    let n = LEASE_ENTRY_BYTES_MAX as usize / (VALUE_BYTES + 100);
    fill(&store, "/l/", n, 9);
    store.sync_durable().unwrap();
    store.close();
    let store = Store::open(&disk, StorageFence::default()).unwrap();
    assert!(matches!(apply_one(&store, put("/l/more".into(), 9)).response, Err(Error::RequestTooLarge)));
}

#[test]
fn a_batch_closes_at_its_record_bound_and_the_rest_waits() {
    let store = open();
    let requests: Vec<WriteRequest> = (0..52).map(|i| put(format!("/k/{i:02}"), 0)).collect();
    let applied = store.apply_batch(&requests, false).unwrap();
    let expected = (BATCH_RECORD_BYTES_MAX as usize).div_ceil(VALUE_BYTES + 20);
    assert_eq!(applied.len(), expected, "the batch stops at the first record past its bound");
    let bytes: usize = applied.iter().filter_map(|applied| applied.record.as_ref()).map(|record| record.encoded_len()).sum();
    assert!(bytes as u64 <= BATCH_RECORD_BYTES_MAX + RECORD_BYTES_MAX);
    let rest = store.apply_batch(&requests[applied.len()..], false).unwrap();
    assert_eq!(applied.len() + rest.len(), 52);
    assert_eq!(count(&store, "/k/"), 52);
}

#[test]
fn a_range_answer_past_its_byte_bound_is_refused_and_a_limit_pages_through() {
    let store = open();
    fill(&store, "/r/", 10, 0);
    store.set_response_bytes_max(6 * VALUE_BYTES);
    let DeleteRangeRequest { key, range_end, .. } = delete_prefix("/r/");
    let all = RangeRequest { key: key.clone(), range_end: range_end.clone(), ..Default::default() };
    let refused = store.range(&all, store.applied_revision()).unwrap_err();
    assert!(matches!(refused, Error::ResponseTooLarge { bytes_max } if bytes_max == 6 * VALUE_BYTES as u64), "{refused:?}");
    tracing::info!("--- within the bound: a limit, keys only, a count");
    let page = RangeRequest { limit: 4, ..all.clone() };
    let answer = store.range(&page, store.applied_revision()).unwrap();
    assert_eq!((answer.kvs.len(), answer.more, answer.count), (4, true, 10));
    let keys = RangeRequest { keys_only: true, ..all.clone() };
    assert_eq!(store.range(&keys, store.applied_revision()).unwrap().kvs.len(), 10);
    tracing::info!("--- a txn's range is bounded the same way, checked before its puts change anything");
    let revision = store.applied_revision();
    let put =
        RequestOp { request: Some(Request::RequestPut(PutRequest { key: b"/new".to_vec(), value: b"v".to_vec(), ..Default::default() })) };
    let range = RequestOp { request: Some(Request::RequestRange(all)) };
    let txn = apply_one(&store, WriteRequest::Txn(TxnRequest { success: vec![put, range], ..Default::default() }));
    assert!(matches!(txn.response, Err(Error::ResponseTooLarge { .. })));
    assert_eq!(store.applied_revision(), revision, "the put before the range left no trace");
}
