//! The embedded API on a real directory: etcd's revision rules end to end.

use t4::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use t4::proto::etcdserverpb::request_op::Request;
use t4::proto::etcdserverpb::{Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest};
use t4::{Error, ErrorKind};

use crate::support::dir_node;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revisions_follow_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let node = dir_node(&dir).await;
    tracing::info!("--- an empty store is at revision 1");
    assert_eq!(node.current_revision(), 1);

    tracing::info!("--- each changing write adds one");
    assert_eq!(node.put("a", "1").await.unwrap(), 2);
    assert_eq!(node.put("a", "2").await.unwrap(), 3);
    let kv = node.get("a").await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));

    tracing::info!("--- deleting nothing spends nothing; deleting a key adds one");
    assert!(!node.delete("missing").await.unwrap());
    assert_eq!(node.current_revision(), 3);
    assert!(node.delete("a").await.unwrap());
    assert_eq!(node.current_revision(), 4);
    assert!(node.get("a").await.unwrap().is_none());

    tracing::info!("--- a recreated key starts a new life");
    node.put("a", "3").await.unwrap();
    let kv = node.get("a").await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.version), (5, 1));

    tracing::info!("--- historical reads, compaction, and its errors");
    let old = node.range(RangeRequest { key: b"a".to_vec(), revision: 3, ..Default::default() }).await.unwrap();
    assert_eq!(old.kvs[0].value, b"2");
    node.compact(4).await.unwrap();
    assert_eq!(node.current_revision(), 5, "compaction spends no revision");
    let compacted = node.range(RangeRequest { key: b"a".to_vec(), revision: 3, ..Default::default() }).await;
    assert_eq!(compacted.unwrap_err().kind(), ErrorKind::Compacted);
    let future = node.range(RangeRequest { key: b"a".to_vec(), revision: 99, ..Default::default() }).await;
    assert_eq!(future.unwrap_err(), Error::FutureRevision);
    assert!(matches!(node.compact(4).await, Err(Error::Compacted { .. })));
    assert_eq!(node.compact(6).await.unwrap_err(), Error::FutureRevision);
    node.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_compare_and_swap() {
    let dir = tempfile::tempdir().unwrap();
    let node = dir_node(&dir).await;
    node.put("lock", "free").await.unwrap();
    let swap = |expect: &str, to: &str| TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Value as i32,
            key: b"lock".to_vec(),
            target_union: Some(TargetUnion::Value(expect.as_bytes().to_vec())),
            range_end: Vec::new(),
        }],
        success: vec![RequestOp {
            request: Some(Request::RequestPut(PutRequest { key: b"lock".to_vec(), value: to.as_bytes().to_vec(), ..Default::default() })),
        }],
        failure: vec![RequestOp { request: Some(Request::RequestRange(RangeRequest { key: b"lock".to_vec(), ..Default::default() })) }],
    };
    let won = node.txn(swap("free", "mine")).await.unwrap();
    assert!(won.succeeded);
    assert_eq!(won.header.unwrap().revision, 3);
    let lost = node.txn(swap("free", "theirs")).await.unwrap();
    assert!(!lost.succeeded);
    assert_eq!(lost.header.unwrap().revision, 3, "a txn that only reads spends no revision");
    assert_eq!(node.get("lock").await.unwrap().unwrap().value, b"mine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_etcd_errors_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = dir_node(&dir).await;
    assert_eq!(node.put("", "x").await.unwrap_err(), Error::EmptyKey);
    let huge = vec![7u8; 1536 * 1024 + 1];
    assert_eq!(node.put(huge, "x").await.unwrap_err(), Error::RequestTooLarge);
    let bad_sort = node.range(RangeRequest { key: b"a".to_vec(), sort_target: 17, ..Default::default() }).await;
    assert_eq!(bad_sort.unwrap_err(), Error::InvalidSortOption);
    let ops: Vec<RequestOp> = (0..129)
        .map(|index| RequestOp {
            request: Some(Request::RequestPut(PutRequest { key: format!("k{index}").into_bytes(), ..Default::default() })),
        })
        .collect();
    assert_eq!(node.txn(TxnRequest { success: ops, ..Default::default() }).await.unwrap_err(), Error::TooManyOps);
    let leased = node.put_request(PutRequest { key: b"k".to_vec(), lease: 5, ..Default::default() }).await;
    assert_eq!(leased.unwrap_err(), Error::LeaseNotFound);
    let range_delete = DeleteRangeRequest { key: b"z".to_vec(), range_end: b"a".to_vec(), prev_kv: false };
    assert_eq!(node.delete_range(range_delete).await.unwrap().deleted, 0, "an inverted range names no key");
    assert_eq!(node.current_revision(), 1, "nothing above changed the store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_get_dense_unique_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let node = dir_node(&dir).await;
    let mut tasks = Vec::new();
    for writer in 0..32 {
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            let mut revisions = Vec::new();
            for index in 0..50 {
                revisions.push(node.put(format!("w{writer}/{index}"), "v").await.unwrap());
            }
            revisions
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (2..2 + 32 * 50).collect::<Vec<i64>>(), "revisions are dense and never reused");
    let stats = node.stats();
    assert!(stats.wal_syncs < 32 * 50, "group commit must share fsyncs: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_cannot_open_the_same_dir() {
    let dir = tempfile::tempdir().unwrap();
    let node = dir_node(&dir).await;
    let second = t4::Node::open(t4::Config::new(dir.path())).await;
    assert_eq!(second.unwrap_err().kind(), ErrorKind::StorageFailure);
    node.close().await.unwrap();
}
