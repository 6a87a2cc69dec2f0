//! Watches through the embedded API: live, from the past, filtered, across compaction.

use t4::proto::mvccpb::event::EventType;
use t4::watch::WatchOptions;
use t4::ErrorKind;

use crate::support::dir_node;

fn prefix(key: &str) -> WatchOptions {
    let mut end = key.as_bytes().to_vec();
    *end.last_mut().unwrap() += 1;
    WatchOptions { key: key.as_bytes().to_vec(), range_end: end, ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_and_historical_watches_see_the_same_log() {
    let dir = tempfile::tempdir().unwrap();
    let node = dir_node(&dir).await;
    let mut live = node.watch(WatchOptions { prev_kv: true, ..prefix("/a/") }).unwrap();
    node.put("/a/1", "x").await.unwrap();
    node.put("/b/1", "other").await.unwrap();
    node.put("/a/1", "y").await.unwrap();
    node.delete("/a/1").await.unwrap();

    tracing::info!("--- the live watcher sees its prefix only, in order, with prev_kv");
    let first = live.next().await.unwrap().unwrap();
    assert_eq!(first.revision, 2);
    let second = live.next().await.unwrap().unwrap();
    assert_eq!(second.revision, 4);
    assert_eq!(second.events[0].prev_kv.as_ref().unwrap().value, b"x");
    let third = live.next().await.unwrap().unwrap();
    assert_eq!(third.events[0].r#type, EventType::Delete as i32);
    assert_eq!(third.events[0].kv.as_ref().unwrap().mod_revision, 5);

    tracing::info!("--- a watch from revision 1 replays the same events from the store");
    let mut replay = node.watch(WatchOptions { start_revision: 1, prev_kv: true, ..prefix("/a/") }).unwrap();
    for expected in [&first, &second, &third] {
        assert_eq!(&replay.next().await.unwrap().unwrap(), expected);
    }

    tracing::info!("--- filters drop puts");
    let mut deletes = node.watch(WatchOptions { start_revision: 1, filter_puts: true, ..prefix("/a/") }).unwrap();
    assert_eq!(deletes.next().await.unwrap().unwrap().revision, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_key_txn_is_one_revision_never_split() {
    use t4::proto::etcdserverpb::{request_op::Request, PutRequest, RequestOp, TxnRequest};
    let dir = tempfile::tempdir().unwrap();
    let node = dir_node(&dir).await;
    let mut watch = node.watch(prefix("/t/")).unwrap();
    let ops = (0..5)
        .map(|index| RequestOp {
            request: Some(Request::RequestPut(PutRequest { key: format!("/t/{index}").into_bytes(), ..Default::default() })),
        })
        .collect();
    node.txn(TxnRequest { success: ops, ..Default::default() }).await.unwrap();
    let revision = watch.next().await.unwrap().unwrap();
    assert_eq!(revision.events.len(), 5);
    let keys: Vec<_> = revision.events.iter().map(|event| event.kv.as_ref().unwrap().key.clone()).collect();
    assert_eq!(keys[0], b"/t/0", "events keep op order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_into_compacted_history_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = dir_node(&dir).await;
    for index in 0..5 {
        node.put("/c/key", format!("{index}")).await.unwrap();
    }
    node.compact(4).await.unwrap();
    let mut stale = node.watch(WatchOptions { start_revision: 2, ..prefix("/c/") }).unwrap();
    let error = stale.next().await.unwrap().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Compacted);
    let mut fresh = node.watch(WatchOptions { start_revision: 4, ..prefix("/c/") }).unwrap();
    assert_eq!(fresh.next().await.unwrap().unwrap().revision, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_into_compacted_history_is_refused_even_while_recent_events_are_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let node = dir_node(&dir).await;
    // A live watcher makes the node keep recent revisions in memory for catch-up.
    let mut live = node.watch(prefix("/c/")).unwrap();
    for index in 0..5 {
        node.put("/c/key", format!("{index}")).await.unwrap();
    }
    assert_eq!(live.next().await.unwrap().unwrap().revision, 2);
    node.compact(4).await.unwrap();
    let mut stale = node.watch(WatchOptions { start_revision: 2, ..prefix("/c/") }).unwrap();
    let error = stale.next().await.unwrap().unwrap_err();
    assert!(matches!(error, t4::Error::Compacted { compact_revision: 4 }), "{error:?}");
    // The watcher that was already past it goes on.
    assert_eq!(live.next().await.unwrap().unwrap().revision, 3);
}
